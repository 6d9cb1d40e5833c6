"""`HubTensorBoardLogger` end to end: a real `Trainer.fit` on CPU, read back from the local Hub server.

Lightning logs the same values to our logger and to its own `TensorBoardLogger` in the same run (a Trainer takes
several loggers), so what the Hub holds is compared with what Lightning's own logger wrote, tag by tag, step by step.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from hf_summary import HFSummaryWriter
from hf_summary.testing import LocalHub

from .helpers import accumulate, download_run

pl = pytest.importorskip("lightning.pytorch")

HPARAMS = {"lr": 0.05, "hidden": 4, "optimizer": "sgd", "model": {"layers": 2}}


class TinyModel(pl.LightningModule):
    """A linear regression that logs per step, per epoch and in validation, as Lightning users do."""

    def __init__(self, lr: float, hidden: int, optimizer: str, model: dict[str, int]) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = torch.nn.Sequential(torch.nn.Linear(3, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 1))
        self.example_input_array = torch.zeros(2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = torch.nn.functional.mse_loss(self(x), y)
        self.log("train/loss", loss, on_step=True, on_epoch=True)
        self.log("train/weight_norm", self.net[0].weight.norm())
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        self.log("val/loss", torch.nn.functional.mse_loss(self(x), y))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


def _loader(seed: int) -> torch.utils.data.DataLoader[Any]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(16, 3, generator=generator)
    y = x.sum(dim=1, keepdim=True)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=4)


def _trainer(loggers: list[Any], **kwargs: Any) -> Any:
    return pl.Trainer(logger=loggers, accelerator="cpu", devices=1, log_every_n_steps=1, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, **kwargs)


def _all_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    acc = accumulate(run_dir)
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _hparams(run_dir: Path) -> dict[str, object]:
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = accumulate(run_dir).PluginTagToContent("hparams")["_hparams_/session_start_info"]
    values = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    return {name: getattr(value, value.WhichOneof("kind")) for name, value in values.items()}


def test_fit_pushes_what_lightning_logged(hub: LocalHub, repo_id: str, tmp_path: Path) -> None:
    from hf_summary.integrations import HubTensorBoardLogger

    ours = HubTensorBoardLogger(tmp_path / "logs", name="run", repo_id=repo_id, log_graph=True, commit_every=60)
    theirs = pl.loggers.TensorBoardLogger(tmp_path / "plain", name="run", log_graph=True)
    writers: list[HFSummaryWriter] = []
    pushed_during_fit: list[list[str]] = []

    class Spy(pl.Callback):
        def on_train_end(self, trainer: Any, pl_module: Any) -> None:
            writers.append(ours.experiment)
            pushed_during_fit.append([f for f in hub.repo_files(repo_id) if "tfevents" in f])

    pl.seed_everything(0)
    trainer = _trainer([ours, theirs], max_steps=6, limit_val_batches=2, val_check_interval=2, callbacks=[Spy()])
    trainer.fit(TinyModel(**HPARAMS), _loader(1), _loader(2))

    writer, = writers
    assert isinstance(writer, HFSummaryWriter) and Path(writer.logdir) == tmp_path / "logs" / "run" / "version_0"
    assert pushed_during_fit == [[]], "with commit_every=60, nothing is pushed before the end of fit"
    assert writer.scheduler.stopped and not writer.scheduler.alive, "finalize closed the writer: final push made"

    run = download_run(hub, repo_id, "tensorboard/run/version_0", tmp_path / "dl")
    expected = _all_scalars(Path(theirs.log_dir))
    assert {"train/loss_step", "train/loss_epoch", "train/weight_norm", "val/loss", "epoch", "hp_metric"} <= set(
        expected)
    assert len(expected["train/loss_step"]) == 6 and len(expected["val/loss"]) == 3
    # Exactly what Lightning logged: the same tags, steps and float32 values as its own logger wrote.
    assert _all_scalars(run) == expected

    assert _hparams(run) == _hparams(Path(theirs.log_dir)) == {
        "lr": pytest.approx(0.05), "hidden": 4.0, "optimizer": "sgd", "model/layers": 2.0}
    assert yaml.safe_load((run / "hparams.yaml").read_text()) == HPARAMS
    assert (run / "hparams.yaml").read_text() == (Path(theirs.log_dir) / "hparams.yaml").read_text()
    graph = accumulate(run).Graph()
    assert any(node.op == "aten::linear" for node in graph.node)
    assert sorted(p.name for p in run.iterdir() if "tfevents" not in p.name) == ["hparams.yaml"], (
        "only the events and hparams.yaml are pushed")


@pytest.mark.filterwarnings("ignore:You defined a `validation_step` but have no `val_dataloader`")
def test_a_later_stage_pushes_with_a_new_writer(hub: LocalHub, repo_id: str, tmp_path: Path) -> None:
    from hf_summary.integrations import HubTensorBoardLogger

    logger = HubTensorBoardLogger(tmp_path / "logs", name="", version="exp-a", sub_dir="train", repo_id=repo_id,
                                  path_in_repo="lightning", commit_every=60, default_hp_metric=False)
    pl.seed_everything(0)
    model = TinyModel(**HPARAMS)
    trainer = _trainer([logger], max_steps=2, limit_val_batches=2)
    first = logger.experiment  # started before fit, as Lightning's setup does
    trainer.fit(model, _loader(1))  # no validation data: fit does not validate
    assert not first.scheduler.alive and logger._experiment is None, "fit's end closed its writer"
    trainer.validate(model, _loader(2), verbose=False)  # opens a new writer in the same folder, closed at the end

    assert logger._experiment is None
    run = download_run(hub, repo_id, "lightning/exp-a/train", tmp_path / "dl")
    scalars = _all_scalars(run)
    assert [step for step, _ in scalars["train/loss_step"]] == [0, 1]
    assert [step for step, _ in scalars["val/loss"]] == [2], "the validate stage's values reached the Hub"
    assert "hp_metric" not in scalars
    assert (run / "hparams.yaml").is_file()


def test_other_ranks_log_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lightning.pytorch.utilities.rank_zero import rank_zero_only

    from hf_summary.integrations import HubTensorBoardLogger

    monkeypatch.setattr(rank_zero_only, "rank", 1)
    logger = HubTensorBoardLogger(tmp_path / "logs", name="run", repo_id="user/never-created")
    assert not isinstance(logger.experiment, HFSummaryWriter)
    logger.log_hyperparams({"lr": 0.1})
    logger.log_metrics({"loss": 1.0}, step=0)
    logger.save()
    logger.finalize("success")
    assert not (tmp_path / "logs").exists()


def test_a_bad_repo_id_is_refused_at_once(tmp_path: Path) -> None:
    from hf_summary.integrations import HubTensorBoardLogger

    with pytest.raises(ValueError, match="username/my-run"):
        HubTensorBoardLogger(tmp_path, repo_id="not a repo id")


def test_importing_the_integrations_does_not_import_lightning() -> None:
    code = ("import sys, hf_summary.integrations as i; assert 'HubTensorBoardLogger' in i.__all__; "
            "print([m for m in ('lightning', 'torch', 'accelerate') if m in sys.modules])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
