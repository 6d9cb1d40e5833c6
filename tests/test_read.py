"""`read_scalars`, `export` and `notebook`: the values TensorBoard's `EventMultiplexer` (size_guidance 0) reads, value
for value, from a logdir, a repo and a bucket; incremental and offline reads from the Hub; the command line."""

from __future__ import annotations

import math
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pd = pytest.importorskip("pandas")

import hf_summary  # noqa: E402
from hf_summary.events.records import frame_record  # noqa: E402
from hf_summary.read import frame as frame_module  # noqa: E402
from hf_summary.show import Shown  # noqa: E402
from hf_summary.source import HubSource  # noqa: E402
from hf_summary.testing import LocalHub  # noqa: E402

from .helpers import SIZE_GUIDANCE  # noqa: E402

WALL = 1_700_000_000.0
Values = dict[tuple[str, str], list[tuple[int, float, bytes]]]  # (run, tag) -> (step, wall_time, value's bits)


def _event(**fields: Any) -> bytes:
    from tensorboard.compat.proto.event_pb2 import Event

    return frame_record(Event(**fields).SerializeToString())


def _tensor_value(tag: str, number: float, *, dtype: int = 1, metadata: str | None = None, node_name: str = "") -> Any:
    from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
    from tensorboard.compat.proto.tensor_pb2 import TensorProto

    tensor = TensorProto(dtype=dtype, float_val=[number]) if dtype == 1 else TensorProto(dtype=dtype,
                                                                                          double_val=[number])
    value = Summary.Value(tag=tag, node_name=node_name, tensor=tensor)
    if metadata is not None:
        value.metadata.CopyFrom(SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name=metadata)))
    return value


def _summary(*values: Any) -> Any:
    from tensorboard.compat.proto.summary_pb2 import Summary

    return Summary(value=list(values))


def _simple(tag: str, number: float) -> Any:
    from tensorboard.compat.proto.summary_pb2 import Summary

    return Summary.Value(tag=tag, simple_value=number)


def _write_runs(logdir: Path) -> Path:
    """Runs covering what TensorBoard's reader does with scalars; each run's name says what it holds."""
    from tensorboardX import SummaryWriter

    def tbx(run: str, steps: range, suffix: str, **kwargs: Any) -> None:
        with SummaryWriter(str(logdir / run), filename_suffix=suffix, **kwargs) as writer:
            for step in steps:
                writer.add_scalar("loss", 1.0 / (step + 1), step)
                writer.add_scalar("acc", step / 7, step)
                if step % 20 == 0:
                    writer.add_histogram("weights", np.arange(5.0) * step, step)
                    writer.add_text("note", f"step {step} " * 300, step)  # longer than a test's chunk

    tbx(".", range(3), ".root")  # a run in the logdir itself: "."
    tbx("two_files", range(0, 40), ".0")
    tbx("two_files", range(40, 70), ".1")
    tbx("restart_purge", range(0, 50), ".0")
    tbx("restart_purge", range(30, 60), ".1", purge_step=30)  # TensorBoard drops the first run's steps 30..49
    tbx("restart_kept", range(0, 50), ".0")
    tbx("restart_kept", range(30, 60), ".1")  # no purge_step: TensorBoard keeps both
    with SummaryWriter(str(logdir / "sub")) as writer:
        for step in range(25):
            writer.add_scalars("group/loss", {"train": step * 0.5, "val": step * 0.25}, step)
    with SummaryWriter(str(logdir / "tags")) as writer:  # tags tensorboardX rewrites, and ones it keeps
        for step in [0, -3, 2**40, 7]:
            for tag in ("with space", "/leading", "ünïcödé/ß", "x" * 150, "dots.and-dashes", ""):
                writer.add_scalar(tag, step * 1.5, step)
        writer.add_scalar("specials", math.nan, 1)
        writer.add_scalar("specials", math.inf, 2)
        writer.add_scalar("specials", -0.0, 3)
        writer.add_scalar("specials", 3e38 * 10, 4, walltime=0.0)
    tbx("torn", range(30), ".0")
    torn = next((logdir / "torn").glob("*tfevents*"))
    torn.write_bytes(torn.read_bytes()[:-7])  # a last record still being written
    tbx("corrupt", range(30), ".0")
    tbx("corrupt", range(30, 40), ".1")
    first = sorted((logdir / "corrupt").glob("*tfevents*"))[0]
    data = bytearray(first.read_bytes())
    data[len(data) // 2] ^= 0x40  # TensorBoard reads the file up to this record, then the next file
    first.write_bytes(bytes(data))
    _torch_run(logdir / "torch")
    (logdir / "tensors").mkdir()
    (logdir / "tensors" / "events.out.tfevents.1.tf").write_bytes(b"".join([
        _event(wall_time=WALL, file_version="brain.Event:2"),
        _event(wall_time=WALL + 1, step=0, summary=_summary(_tensor_value("tf/loss", 0.5, metadata="scalars"))),
        _event(wall_time=WALL + 2, step=1, summary=_summary(_tensor_value("tf/loss", 0.25),
                                                            _simple("plain", 2.0))),
        _event(wall_time=WALL + 3, step=1, summary=_summary(_tensor_value("tf/double", 0.1, dtype=2,
                                                                          metadata="scalars"))),
        _event(wall_time=WALL + 4, step=2, summary=_summary(_tensor_value("", 4.0, metadata="scalars",
                                                                          node_name="legacy_node"))),
        _event(wall_time=WALL + 5, step=2, summary=_summary(_tensor_value("tf/text", 1.0, metadata="text"))),
        _event(wall_time=0.0, step=3, summary=_summary(_simple("plain", 3.0))),  # no wall_time field at all
    ]))
    (logdir / "legacy").mkdir()  # no file_version: TensorBoard purges a tag's values when its step goes back
    events = [_event(wall_time=WALL + step, step=step, summary=_summary(_simple("a", step), _simple("b", -step)))
              for step in range(10)]
    events.append(_event(wall_time=WALL + 20, step=5, summary=_summary(_simple("a", 50.0))))  # purges a's 5..9
    events.append(_event(wall_time=WALL + 21, step=3))  # no summary: the last step becomes 3
    events.append(_event(wall_time=WALL + 22, step=4, summary=_summary(_simple("b", 40.0))))  # 4 >= 3: kept
    events.append(_event(wall_time=WALL + 23, step=1, summary=_summary(_simple("b", 10.0))))  # purges b's 1..
    (logdir / "legacy" / "events.out.tfevents.1.old").write_bytes(b"".join(events))
    (logdir / "legacy" / "events.out.tfevents.0.profile-empty").write_bytes(b"")  # not an event file
    return logdir


def _torch_run(folder: Path) -> None:
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(folder)) as writer:
        for step in range(12):
            writer.add_scalar("torch/plain", step * 0.1, step)
            writer.add_scalar("torch/new_style", step * 0.2, step, new_style=True)
            writer.add_scalar("torch/double", step / 3, step, new_style=True, double_precision=True)


def _bits(number: float) -> bytes:
    return struct.pack("<d", number)  # NaN equals NaN, -0.0 differs from 0.0


def _tensorboard(logdir: Path) -> Values:
    """Every scalar TensorBoard's multiplexer reads: simple values, and tensors of tags of the scalars plugin."""
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer
    from tensorboard.util import tensor_util

    multiplexer = EventMultiplexer(size_guidance=SIZE_GUIDANCE)
    multiplexer.AddRunsFromDirectory(str(logdir))
    multiplexer.Reload()
    found = {}
    for run in multiplexer.Runs():
        accumulator = multiplexer.GetAccumulator(run)
        tags = accumulator.Tags()
        for tag in tags["scalars"]:
            found[run, tag] = [(e.step, e.wall_time, _bits(e.value)) for e in accumulator.Scalars(tag)]
        for tag in tags["tensors"]:
            metadata = accumulator.summary_metadata.get(tag)  # a tensor named by its node_name has none
            if metadata is not None and metadata.plugin_data.plugin_name == "scalars":
                found[run, tag] = [(e.step, e.wall_time, _bits(tensor_util.make_ndarray(e.tensor_proto).item()))
                                   for e in accumulator.Tensors(tag)]
    return found


def _ours(frame: Any) -> Values:
    found: Values = {}
    for run, tag, step, wall_time, value in frame.itertuples(index=False):
        found.setdefault((run, tag), []).append((step, wall_time, _bits(value)))
    return found


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Values]:
    logdir = _write_runs(tmp_path_factory.mktemp("read") / "logs")
    return logdir, _tensorboard(logdir)


def test_a_logdir_reads_exactly_as_tensorboard_reads_it(runs: tuple[Path, Values]) -> None:
    logdir, expected = runs
    frame = hf_summary.read_scalars(logdir)
    assert list(frame.columns) == ["run", "tag", "step", "wall_time", "value"]
    assert [str(dtype) for dtype in frame.dtypes] == ["category", "category", "int64", "float64", "float64"]
    assert _ours(frame) == expected
    # The cases are there, and TensorBoard did what the documentation says.
    steps = dict(expected)
    assert [s for s, _, _ in steps["restart_purge", "loss"]] == [*range(30), *range(30, 60)]
    assert [s for s, _, _ in steps["restart_kept", "loss"]] == [*range(50), *range(30, 60)]
    assert [s for s, _, _ in steps["legacy", "a"]] == [0, 1, 2, 3, 4, 5]
    assert [s for s, _, _ in steps["legacy", "b"]] == [0, 1]
    assert len(steps["torn", "loss"]) == 30 and len(steps["torn", "acc"]) == 29  # its last record is torn
    assert 30 < len(steps["corrupt", "loss"]) < 40  # some of the first file, all of the second
    assert {("sub/group/loss/train", "group/loss"), ("tensors", "tf/loss"), ("tensors", "tf/double"),
            ("torch", "torch/double"), ("torch", "torch/new_style"), (".", "loss")} <= set(expected)
    assert ("tensors", "tf/text") not in expected and ("tensors", "legacy_node") not in expected


def test_records_across_chunk_boundaries_read_the_same(runs: tuple[Path, Values],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from hf_summary.read import runs as runs_module

    logdir, expected = runs
    for size in (97, 1000, 4099):  # records cut anywhere, and records longer than a chunk
        monkeypatch.setattr(runs_module, "CHUNK_SIZE", size)
        assert _ours(hf_summary.read_scalars(logdir)) == expected


def test_tags_and_runs_select(runs: tuple[Path, Values]) -> None:
    logdir, expected = runs
    frame = hf_summary.read_scalars(logdir, tags=["loss", "a"], runs=["two_files", "legacy", "nope"])
    assert _ours(frame) == {key: expected[key] for key in [("two_files", "loss"), ("legacy", "a")]}
    assert list(frame["run"].cat.categories) == ["legacy", "two_files"]  # only what has values
    assert list(frame["tag"].cat.categories) == ["a", "loss"]
    # Two values an event: more values than the file's bytes could hold as plain scalars, and the columns grow.
    legacy = hf_summary.read_scalars(logdir, runs=["legacy"])
    assert _ours(legacy) == {key: values for key, values in expected.items() if key[0] == "legacy"}


def test_a_repo_and_a_bucket_read_as_the_logdir_and_a_re_read_fetches_only_the_new_bytes(
        runs: tuple[Path, Values], hub: LocalHub, repo_id: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import HfApi, constants

    logdir, expected = runs
    event_bytes = sum(path.stat().st_size for path in logdir.rglob("*tfevents*"))
    api = HfApi()
    api.create_repo(repo_id)
    api.upload_folder(repo_id=repo_id, folder_path=str(logdir), path_in_repo="tensorboard")
    api.upload_file(repo_id=repo_id, path_or_fileobj=bytes(500_000), path_in_repo="tensorboard/weights.bin")
    targets = [(repo_id, "tensorboard", lambda data, path: api.upload_file(
        repo_id=repo_id, path_or_fileobj=data, path_in_repo=f"tensorboard/{path}"),
        lambda path: api.delete_file(f"tensorboard/{path}", repo_id=repo_id))]
    if hub.xet:  # buckets are made of Xet
        bucket = f"{hub.user}/read-{repo_id.rsplit('-', 1)[1]}"
        api.create_bucket(bucket)
        api.batch_bucket_files(bucket, add=[(str(path), f"logs/{path.relative_to(logdir).as_posix()}")
                                            for path in logdir.rglob("*") if path.is_file()]
                               + [(bytes(500_000), "logs/weights.bin")])
        targets.append((f"hf://buckets/{bucket}", "logs",
                        lambda data, path: api.batch_bucket_files(bucket, add=[(data, f"logs/{path}")]),
                        lambda path: api.batch_bucket_files(bucket, delete=[f"logs/{path}"])))
    for number, (source, folder, upload, delete) in enumerate(targets):
        grow = tmp_path / str(number) / "grow"
        first = _grow(grow, 0)
        upload(first, "grow/events.out.tfevents.1")
        hub.reset_stats()
        assert _ours(hf_summary.read_scalars(source, path_in_repo=folder)) == {**expected, **_tensorboard(grow.parent)}
        assert event_bytes < hub.stats.bytes_sent < event_bytes + 100_000  # event files only

        second = _grow(grow, 1)
        upload(second, "grow/events.out.tfevents.1")
        added = len(second) - len(first)
        hub.reset_stats()
        frame = hf_summary.read_scalars(source, path_in_repo=folder, runs=["grow"])
        assert added <= hub.stats.bytes_sent <= added + 20_000  # the new bytes, a listing, the repo's head
        assert _ours(frame) == _tensorboard(grow.parent) != {}

        hub.pause()  # offline, what was fetched reads without the Hub
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
        try:
            assert _ours(hf_summary.read_scalars(source, path_in_repo=folder, runs=["grow"])) == _ours(frame)
            with pytest.raises(hf_summary.ReadError, match="HF_HUB_OFFLINE is set and nothing of"):
                hf_summary.read_scalars(source, path_in_repo="elsewhere")
        finally:
            monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
            hub.resume()

        delete("grow/events.out.tfevents.1")  # a run deleted from the Hub is not read from the mirror either
        assert "grow" not in set(hf_summary.read_scalars(source, path_in_repo=folder)["run"])


def _grow(folder: Path, parts: int) -> bytes:
    """The bytes of a run's event file after `parts` + 1 parts of 500 values; also written to `folder`."""
    records = [_event(wall_time=WALL, file_version="brain.Event:2")]
    records += [_event(wall_time=WALL + step, step=step, summary=_summary(_simple("grow", step / 3)))
                for step in range(500 * (parts + 1))]
    data = b"".join(records)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "events.out.tfevents.1").write_bytes(data)
    return data


def test_unknown_sources_say_what_to_check(hub: LocalHub, repo_id: str, tmp_path: Path) -> None:
    with pytest.raises(hf_summary.ReadError, match=r"no such model repo .* \(or your token cannot read it\)"):
        hf_summary.read_scalars(repo_id)
    with pytest.raises(hf_summary.ReadError, match="no such folder: '.*still'"):
        hf_summary.read_scalars(str(tmp_path / "missing" / "deeper" / "still"))


def test_export_round_trips_through_csv_and_parquet(runs: tuple[Path, Values], tmp_path: Path) -> None:
    logdir, _ = runs
    frame = hf_summary.read_scalars(logdir, runs=["two_files", "tags"])
    for name in ("scalars.csv", "scalars.parquet"):
        result = subprocess.run([sys.executable, "-m", "hf_summary.cli", "export", str(logdir), "-o",
                                 str(tmp_path / name), "--runs", "two_files", "tags"],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        assert f"Wrote {len(frame)} values of 2 run(s)" in result.stdout
        if name.endswith(".csv"):  # "" is an empty tag, or a NaN value
            back = pd.read_csv(tmp_path / name, keep_default_na=False, na_values={"value": [""]})
        else:
            back = pd.read_parquet(tmp_path / name)
        for column in ("run", "tag"):
            back[column] = back[column].astype(str)
        expected = frame.astype({"run": str, "tag": str})
        pd.testing.assert_frame_equal(back, expected, check_exact=name.endswith(".parquet"), rtol=0, atol=0)
    with pytest.raises(ValueError, match="name it .csv"):
        frame_module.export(frame, tmp_path / "scalars.xlsx")
    wrong = subprocess.run([sys.executable, "-m", "hf_summary.cli", "export", str(logdir), "-o", "scalars.xlsx"],
                           capture_output=True, text=True, timeout=120)
    assert wrong.returncode == 2 and "name it .csv, .csv.gz or .parquet" in wrong.stderr


def test_without_pandas_or_pyarrow_the_error_names_the_extra(runs: tuple[Path, Values], tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    frame = hf_summary.read_scalars(runs[0], runs=["."])
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # importing it now fails
    with pytest.raises(ImportError, match=r"writing Parquet needs pyarrow: pip install 'hf-summary\[data\]'"):
        frame_module.export(frame, tmp_path / "scalars.parquet")
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match=r"read_scalars needs pandas: pip install 'hf-summary\[data\]'"):
        hf_summary.read_scalars(".")


def test_notebook_serves_tensorboard_on_the_source_and_shows_its_frame(
        runs: tuple[Path, Values], monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    logdir, _ = runs
    started, shown = [], []
    monkeypatch.setattr(Shown, "start", lambda self, **kwargs: started.append((self, kwargs)) or
                        "http://127.0.0.1:6123/")
    display = importlib.import_module("tensorboard.notebook")
    monkeypatch.setattr(display, "display", lambda **kwargs: shown.append(kwargs))
    assert hf_summary.notebook(logdir, height=600) == "http://127.0.0.1:6123/"
    ((served, options),) = started
    assert served.folder == logdir and options == {"port": 0, "reload_interval": 5.0}
    assert shown == [{"port": 6123, "height": 600}]


def test_the_mirror_fetches_new_bytes_only_and_a_replaced_file_again_whole(hub: LocalHub, repo_id: str,
                                                                           tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import HfApi

    from hf_summary.read import fetch
    from hf_summary.source import check_exists, parse_source

    monkeypatch.setattr("huggingface_hub.constants.HF_HOME", str(tmp_path / "home"))
    api = HfApi()
    api.create_repo(repo_id)
    source = parse_source(repo_id)
    assert isinstance(source, HubSource)
    path = "run/events.out.tfevents.1"
    first, grown = _grow(tmp_path / "a", 0), _grow(tmp_path / "a", 1)  # the first is the start of the second
    replaced = bytearray(grown)
    replaced[100] ^= 1  # the same size, a byte changed: only its version tells
    longer = bytearray(_grow(tmp_path / "b", 2))
    longer[len(grown) - 10] ^= 1  # longer, and its bytes just before the mirror's end are not the mirror's
    versions = [("first", first, fetch.NEW), ("grown", grown, fetch.GREW),
                ("replaced", bytes(replaced), fetch.REPLACED), ("longer", bytes(longer), fetch.REPLACED)]
    previous = 0
    for name, data, expected in versions:
        api.upload_file(repo_id=repo_id, path_or_fileobj=data, path_in_repo=f"tensorboard/{path}")
        sha = check_exists(source)
        (remote,) = fetch.list_event_files(source, sha=sha).values()
        hub.reset_stats()
        assert fetch.fetch_file(source, remote, sha=sha, whole=name == "replaced") == expected, name
        assert (source.mirror / path).read_bytes() == data, name
        if name == "grown":  # the new bytes, and the few before them that check the mirror's end
            assert len(data) - previous <= hub.stats.bytes_sent <= len(data) - previous + fetch.OVERLAP + 2_000
        assert fetch.fetch_file(source, remote, sha=sha) == fetch.UNCHANGED
        previous = len(data)
    assert [path.name for path in (source.mirror / "run").iterdir()] == ["events.out.tfevents.1"]  # no partial copy
