"""Code written for `torch.utils.tensorboard.SummaryWriter` runs unchanged with `HFSummaryWriter` swapped in.

`log_like_the_tutorial` makes the calls of PyTorch's TensorBoard tutorials, with the writer class as a parameter. It
runs once with torch's writer (read from disk) and once with ours (read back from the local Hub server), and what
TensorBoard reads from the two is compared run folder by run folder, tag by tag, value by value. Where they differ,
the difference is asserted exactly (and documented in the README, "Coming from torch.utils.tensorboard"): our writer
is tensorboardX's, and these are tensorboardX's choices.
"""

from __future__ import annotations

import functools
import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.tensorboard import SummaryWriter as TorchSummaryWriter

from hf_summary import HFSummaryWriter
from hf_summary.events.tbx import clean_tag
from hf_summary.testing import LocalHub

from .helpers import accumulate, download_run

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  # after choosing the backend

# What add_embedding writes beside the events; not pushed with the default repo_allow_patterns ("*.tfevents.*").
PROJECTOR_PATTERNS = ["*.tfevents.*", "projector_config.pbtxt", "*/tensors.tsv", "*/metadata.tsv", "*/sprite.png"]
CLASSES = ("plane", "car", "bird")


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 2, 3)
        self.fc = torch.nn.Linear(2 * 6 * 6, len(CLASSES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def log_like_the_tutorial(writer_class: Callable[..., Any], log_dir: str) -> None:
    """The calls of PyTorch's TensorBoard tutorials, written against `torch.utils.tensorboard.SummaryWriter`."""
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    net = Net()
    images = torch.rand(4, 1, 8, 8, generator=generator)

    writer = writer_class(log_dir=log_dir)
    writer.add_images("four_fashion_mnist_images", images, 0)
    writer.add_graph(net, images)
    features = torch.rand(12, 5, generator=generator)
    writer.add_embedding(features, metadata=[CLASSES[i % 3] for i in range(12)],
                         label_img=torch.rand(12, 1, 8, 8, generator=generator))
    for step in range(5):
        writer.add_scalar("training loss", 1.0 / (step + 1), step)
        writer.add_scalar("Loss/train", np.float32(0.5 ** step), step)
        writer.add_scalars("run_14h", {"xsinx": step * np.sin(step / 2), "xcosx": step * np.cos(step / 2),
                                       "tanx": np.tan(step / 2)}, step)
        writer.add_histogram("fc.weight", net.fc.weight * (step + 1), step)
    figure = plt.figure(figsize=(2, 2), dpi=50)
    plt.plot([0, 1, 2], [2, 0, 1])
    plt.title(f"{CLASSES[0]}, 42.0%\n(label: {CLASSES[1]})")
    writer.add_figure("predictions vs. actuals", figure, global_step=3)
    probs = torch.rand(40, generator=generator)
    truth = probs + 0.3 * torch.rand(40, generator=generator) > 0.6
    writer.add_pr_curve(CLASSES[0], truth, probs, global_step=0)
    for i in range(2):
        writer.add_hparams({"lr": 0.1 * (i + 1), "bsize": i, "optimizer": "sgd", "shuffle": True},
                           {"hparam/accuracy": 10 * i, "hparam/loss": 10 * i})
    writer.close()


# Reading a logdir as TensorBoard does -------------------------------------------------------------------------------

def _runs(logdir: Path) -> dict[str, Any]:
    """Every run folder of a logdir (a folder holding event files), by path relative to it, with its accumulator."""
    runs = {}
    for folder, _, files in os.walk(logdir):
        if any("tfevents" in name for name in files):
            runs[Path(folder).relative_to(logdir).as_posix()] = accumulate(Path(folder))
    return runs


def _scalars(acc: Any) -> dict[str, list[tuple[int, float]]]:
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _histograms(acc: Any) -> dict[str, list[tuple[int, Any]]]:
    return {tag: [(e.step, e.histogram_value) for e in acc.Histograms(tag)] for tag in acc.Tags()["histograms"]}


def _images(acc: Any) -> dict[str, list[tuple[int, int, int, bytes]]]:
    """tag -> (step, width, height, decoded RGB(A) pixels) of each image."""
    return {tag: [(e.step, e.width, e.height, np.asarray(Image.open(io.BytesIO(e.encoded_image_string))).tobytes())
                  for e in acc.Images(tag)] for tag in acc.Tags()["images"]}


def _tensors(acc: Any) -> dict[str, list[tuple[int, Any]]]:
    from tensorboard.util import tensor_util

    return {tag: [(e.step, tensor_util.make_ndarray(e.tensor_proto)) for e in acc.Tensors(tag)]
            for tag in acc.Tags()["tensors"]}


def _hparams(acc: Any) -> tuple[Any, Any]:
    """The hparams plugin's experiment and session start info of a run."""
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = acc.PluginTagToContent("hparams")
    parse = plugin_data_pb2.HParamsPluginData.FromString
    return (parse(content["_hparams_/experiment"]).experiment,
            parse(content["_hparams_/session_start_info"]).session_start_info)


def _projector(logdir: Path) -> tuple[Any, dict[str, bytes]]:
    from google.protobuf import text_format
    from tensorboard.plugins.projector.projector_config_pb2 import ProjectorConfig

    config = text_format.Parse((logdir / "projector_config.pbtxt").read_text(), ProjectorConfig())
    files = {path: (logdir / path).read_bytes() for embedding in config.embeddings
             for path in (embedding.tensor_path, embedding.metadata_path, embedding.sprite.image_path)}
    return config, files


@pytest.fixture
def two_runs(hub: LocalHub, repo_id: str, tmp_path: Path) -> tuple[Path, Path]:
    """The tutorial logged by torch's writer (its logdir) and by ours (downloaded from the Hub)."""
    torch_dir = tmp_path / "torch" / "tutorial"
    log_like_the_tutorial(TorchSummaryWriter, str(torch_dir))
    ours = functools.partial(HFSummaryWriter, repo_id, commit_every=60, repo_allow_patterns=PROJECTOR_PATTERNS)
    log_like_the_tutorial(ours, str(tmp_path / "ours" / "tutorial"))  # close() made the final push
    return torch_dir, download_run(hub, repo_id, "tensorboard/tutorial", tmp_path / "downloaded")


def test_the_same_calls_give_the_same_runs(two_runs: tuple[Path, Path]) -> None:
    torch_dir, our_dir = two_runs
    theirs, ours = _runs(torch_dir), _runs(our_dir)

    # add_scalars: torch names a sub-run `<main_tag>_<key>` (one folder), tensorboardX `<main_tag>/<key>` (nested).
    # add_hparams: both make a sub-run named after time.time() for each call; paired here in the order of the calls.
    keys = ("xsinx", "xcosx", "tanx")
    hparam_runs = [sorted((r for r in runs if r[0].isdigit()), key=float) for runs in (theirs, ours)]
    assert len(hparam_runs[0]) == len(hparam_runs[1]) == 2
    pairs = {".": ".", **{f"run_14h_{key}": f"run_14h/{key}" for key in keys}, **dict(zip(*hparam_runs, strict=True))}
    assert set(theirs) == set(pairs) and set(ours) == set(pairs.values())

    for torch_run, our_run in pairs.items():
        mine, reference = ours[our_run], theirs[torch_run]
        # tensorboardX replaces the characters TensorBoard's tag rules refuse ("training loss" -> "training_loss");
        # torch keeps the tag as given.
        assert _scalars(mine) == {clean_tag(tag): values for tag, values in _scalars(reference).items()}, torch_run
        assert _histograms(mine) == {clean_tag(tag): v for tag, v in _histograms(reference).items()}, torch_run
        assert _images(mine) == {clean_tag(tag): v for tag, v in _images(reference).items()}, torch_run
        assert {tag: [(s, v.tolist()) for s, v in values] for tag, values in _tensors(mine).items()} == {
            clean_tag(tag): [(s, v.tolist()) for s, v in values] for tag, values in _tensors(reference).items()}
    assert clean_tag("training loss") == "training_loss" and "training_loss" in ours["."].Tags()["scalars"]
    assert "predictions_vs._actuals" in ours["."].Tags()["images"]
    assert "predictions vs. actuals" in theirs["."].Tags()["images"]

    root, reference = ours["."], theirs["."]
    assert len(_scalars(root)["Loss/train"]) == 5 and len(_histograms(root)["fc.weight"]) == 5
    # Encoded the same way too (PIL, same settings): the PNG bytes are identical, not only the pixels.
    assert [e.encoded_image_string for e in root.Images("four_fashion_mnist_images")] == [
        e.encoded_image_string for e in reference.Images("four_fashion_mnist_images")]
    assert root.PluginTagToContent("pr_curves") == reference.PluginTagToContent("pr_curves")
    # add_graph: the same GraphDef; the step stats that go with it are tagged "profiler" (tensorboardX), not "step1".
    assert root.Graph() == reference.Graph() and any(node.op == "aten::linear" for node in root.Graph().node)
    assert root.Tags()["run_metadata"] == ["profiler"] and reference.Tags()["run_metadata"] == ["step1"]
    assert root.RunMetadata("profiler") == reference.RunMetadata("step1")

    for torch_run, our_run in zip(*hparam_runs, strict=True):
        (our_exp, our_session), (torch_exp, torch_session) = _hparams(ours[our_run]), _hparams(theirs[torch_run])
        assert our_exp.metric_infos == torch_exp.metric_infos
        assert [info.name for info in our_exp.hparam_infos] == [info.name for info in torch_exp.hparam_infos]
        ours_hp = {name: value.WhichOneof("kind") for name, value in our_session.hparams.items()}
        torch_hp = {name: value.WhichOneof("kind") for name, value in torch_session.hparams.items()}
        # A bool hparam: torch stores it as a number (bool is an int to its isinstance check), tensorboardX as a
        # bool; the other values are stored alike.
        assert torch_hp.pop("shuffle") == "number_value" and torch_session.hparams["shuffle"].number_value == 1.0
        assert ours_hp.pop("shuffle") == "bool_value" and our_session.hparams["shuffle"].bool_value is True
        assert ours_hp == torch_hp
        for name in ours_hp:
            assert our_session.hparams[name] == torch_session.hparams[name], name

    # add_embedding: the same projector config (only its text layout differs), and the Hub holds byte for byte the
    # files our writer put on disk.
    our_config, our_files = _projector(our_dir)
    torch_config, torch_files = _projector(torch_dir)
    _, written = _projector(our_dir.parent / "ours" / "tutorial")
    assert our_config == torch_config and len(our_config.embeddings) == 1
    assert set(our_files) == set(torch_files) == {
        "00000/default/tensors.tsv", "00000/default/metadata.tsv", "00000/default/sprite.png"}
    assert our_files == written
    sprite = "00000/default/sprite.png"
    assert {k: v for k, v in our_files.items() if k != sprite} == {k: v for k, v in torch_files.items() if k != sprite}
    # The sprite: the 12 images in a 4 x 3 grid of 8 px cells, in a 32 px square. The cells are the same pixels; the
    # 8 rows of padding below them are zeros in torch's, and in tensorboardX's whatever the heap held (its make_sprite
    # pads with `np.ndarray`, uninitialized memory), so their bytes differ after a long session (README).
    ours_px, torch_px = (np.asarray(Image.open(io.BytesIO(files[sprite]))) for files in (our_files, torch_files))
    assert ours_px.shape == torch_px.shape == (32, 32, 3)
    assert (ours_px[:24] == torch_px[:24]).all() and not torch_px[24:].any()


def test_torch_only_keywords_are_refused(hub: LocalHub, repo_id: str, tmp_path: Path) -> None:
    """The few keywords of torch's writer that tensorboardX's (so ours) does not have: a TypeError at the call."""
    calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [
        ("add_hparams", ({"lr": 0.1}, {"acc": 1.0}), {"run_name": "trial-1"}),
        ("add_hparams", ({"lr": 0.1}, {"acc": 1.0}), {"hparam_domain_discrete": {"lr": [0.1, 0.2]}}),
        ("add_scalar", ("loss", 1.0, 0), {"new_style": True}),
        ("add_scalar", ("loss", 1.0, 0), {"double_precision": True}),
    ]
    with TorchSummaryWriter(log_dir=str(tmp_path / "torch")) as reference:
        for method, args, kwargs in calls:
            getattr(reference, method)(*args, **kwargs)
    with HFSummaryWriter(repo_id, logdir=str(tmp_path / "ours"), commit_every=60) as writer:
        for method, args, kwargs in calls:
            with pytest.raises(TypeError, match=f"unexpected keyword argument '{next(iter(kwargs))}'"):
                getattr(writer, method)(*args, **kwargs)
        # tensorboardX's keyword for the sub-run's name; its third positional argument (torch's
        # hparam_domain_discrete) too.
        writer.add_hparams({"lr": 0.1}, {"acc": 1.0}, name="trial-1")
    assert _scalars(_runs(tmp_path / "ours")["."]) == {}, "a refused call logs nothing"
    assert _scalars(_runs(tmp_path / "ours")["trial-1"]) == {"acc": [(0, 1.0)]}


def test_embeddings_stay_local_with_the_default_patterns(hub: LocalHub, repo_id: str, tmp_path: Path) -> None:
    with HFSummaryWriter(repo_id, logdir=str(tmp_path / "emb"), commit_every=60) as writer:
        writer.add_embedding(torch.eye(4), metadata=["a", "b", "c", "d"])
        writer.add_scalar("loss", 1.0, 0)
    pushed = sorted(path for path in hub.repo_files(repo_id) if path.startswith("tensorboard/"))
    assert len(pushed) == 1 and "tfevents" in pushed[0], pushed
    assert (tmp_path / "emb" / "projector_config.pbtxt").is_file()
    assert (tmp_path / "emb" / "00000" / "default" / "tensors.tsv").is_file()
