"""Integrations end to end against the local Hub: accelerate's tracker API, init/log/finish, transformers' Trainer."""

from __future__ import annotations

import json
import logging
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorboardX
import torch

import hf_summary
from hf_summary import HFSummaryWriter
from hf_summary.testing import LocalHub

from .helpers import accumulate, download_run, scalars


def _hparams(run_dir: Path) -> dict[str, object]:
    """The hparams session stored in a run, as name -> number or string."""
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = accumulate(run_dir).PluginTagToContent("hparams")["_hparams_/session_start_info"]
    values = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    return {name: getattr(value, value.WhichOneof("kind")) for name, value in values.items()}


def _text(run_dir: Path, tag: str) -> list[tuple[int, str]]:
    return [(e.step, e.tensor_proto.string_val[0].decode()) for e in accumulate(run_dir).Tensors(f"{tag}/text_summary")]


def test_accelerate_tracker(hub: LocalHub, repo_id: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from accelerate import Accelerator

    from hf_summary.integrations import HubTensorBoardTracker

    tracker = HubTensorBoardTracker("run-a", tmp_path / "logs", repo_id=repo_id, commit_every=60)
    accelerator = Accelerator(log_with=tracker)
    config = {"lr": 1e-3, "optimizer": "adamw", "model": {"layers": 2}, "betas": [0.9, 0.99]}
    accelerator.init_trackers("my-project", config=config)
    writer = accelerator.get_tracker("hf_tensorboard", unwrap=True)
    assert isinstance(writer, HFSummaryWriter) and Path(writer.logdir) == tmp_path / "logs" / "run-a"

    flushes = []
    flush = writer.flush
    writer.flush = lambda: (flushes.append(1), flush())[1]
    for step in range(5):
        accelerator.log({"loss": torch.tensor(1.0 / (step + 1)), "acc": step / 10,
                         "lr": {"encoder": 0.1 * step, "head": np.float32(0.5)}}, step=step)
    with caplog.at_level(logging.WARNING, logger="hf_summary"):
        accelerator.log({"note": "hello hub", "ignored": [1, 2]}, step=5)
    accelerator.get_tracker("hf_tensorboard").log_images({"samples": np.zeros((2, 3, 4, 4))}, step=6)
    assert flushes == [], "log() must leave disk writes to the writer's thread"
    assert "'ignored'" in caplog.text
    assert not [f for f in hub.repo_files(repo_id) if "tfevents" in f], "nothing is pushed before end_training"

    accelerator.end_training()
    assert not writer.scheduler.alive
    run = download_run(hub, repo_id, "tensorboard/run-a", tmp_path / "dl")
    assert scalars(run, "loss") == [(s, pytest.approx(1.0 / (s + 1))) for s in range(5)]
    assert scalars(run, "acc") == [(s, pytest.approx(s / 10)) for s in range(5)]
    assert scalars(run / "lr" / "encoder", "lr") == [(s, pytest.approx(0.1 * s)) for s in range(5)]
    assert scalars(run / "lr" / "head", "lr") == [(s, 0.5) for s in range(5)]
    assert _text(run, "note") == [(5, "hello hub")]
    assert [i.step for i in accumulate(run).Images("samples")] == [6]
    assert "ignored" not in str(accumulate(run).Tags())
    assert json.loads((run / "config.json").read_text()) == config
    assert _hparams(run) == {"lr": pytest.approx(1e-3), "optimizer": "adamw", "model/layers": 2.0,
                             "betas": "[0.9, 0.99]"}


def test_accelerate_tracker_rejects_a_bad_repo_id_at_once(tmp_path: Path) -> None:
    from hf_summary.integrations import HubTensorBoardTracker

    with pytest.raises(ValueError, match="username/my-run"):
        HubTensorBoardTracker("run", tmp_path, repo_id="not a repo id")
    assert not tmp_path.joinpath("run").exists()


def test_init_log_finish_pushes_runs_in_project_group_name_folders(hub: LocalHub, repo_id: str, tmp_path: Path) -> None:
    root = tmp_path / "runs"
    # ring_size=None: the schedule in this process, where the test can see its members.
    first = hf_summary.init("proj", name="baseline", group="sweep", config={"lr": 0.1, "opt": {"name": "sgd"}},
                            repo_id=repo_id, logdir_root=root, commit_every=60, ring_size=None)
    assert first.logdir == root / "proj" / "sweep" / "baseline"
    hf_summary.log({"loss": 0.5, "eval": {"acc": 0.25}, "phase": "warmup"})
    hf_summary.log({"loss": torch.tensor(0.4)})
    hf_summary.log({"loss": 0.3}, step=10)
    hf_summary.log({"loss": 0.2})

    # A new init finishes the current run (as wandb does): its final push happens here.
    second = hf_summary.init("proj", name="other", repo_id=repo_id, logdir_root=root, commit_every=60,
                             ring_size=None)
    # The second run shares the first's committer (same repo): it stays alive for the second run only.
    assert first.finished and first.writer.scheduler.stopped and not second.writer.scheduler.stopped
    assert [u.logdir for u in second.writer.scheduler.schedule.uploaders] == [Path(second.writer.logdir)]
    hf_summary.log({"loss": 1.0})
    hf_summary.finish()
    assert second.finished and not second.writer.scheduler.alive
    with pytest.raises(RuntimeError, match="init"):
        hf_summary.log({"loss": 0.0})

    run = download_run(hub, repo_id, "tensorboard/proj/sweep/baseline", tmp_path / "dl1")
    assert scalars(run, "loss") == [(0, 0.5), (1, pytest.approx(0.4)), (10, pytest.approx(0.3)),
                                    (11, pytest.approx(0.2))]
    assert scalars(run, "eval/acc") == [(0, 0.25)]
    assert _text(run, "phase") == [(0, "warmup")]
    assert json.loads((run / "config.json").read_text()) == {"lr": 0.1, "opt": {"name": "sgd"}}
    assert _hparams(run) == {"lr": pytest.approx(0.1), "opt/name": "sgd"}
    other = download_run(hub, repo_id, "tensorboard/proj/other", tmp_path / "dl2")
    assert scalars(other, "loss") == [(0, 1.0)]


def test_local_run_then_the_printed_sync_command_uploads_it(hub: LocalHub, repo_id: str, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    project = repo_id.split("/")[1]  # unique: the printed command pushes to the repo named after the project
    with hf_summary.init(project, name="local", config={"lr": 0.1}, logdir_root=tmp_path / "runs") as run:
        printed = [line.strip() for line in capsys.readouterr().err.splitlines() if "hf-summary sync" in line]
        for loss in (1.0, 0.5, 0.25):
            hf_summary.log({"loss": loss})
    assert run.finished and isinstance(run.writer, tensorboardX.SummaryWriter)
    assert not isinstance(run.writer, HFSummaryWriter)
    assert printed == [run.sync_command()]
    assert not hub.repo_exists(f"{hub.user}/{project}"), "a local run makes no Hub call"

    words = shlex.split(printed[0])
    assert words[:2] == ["hf-summary", "sync"]
    result = subprocess.run([sys.executable, "-m", "hf_summary.cli", *words[1:]], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    pushed = download_run(hub, f"{hub.user}/{project}", f"tensorboard/{project}/local", tmp_path / "dl")
    assert scalars(pushed, "loss") == [(0, 1.0), (1, 0.5), (2, 0.25)]
    assert json.loads((pushed / "config.json").read_text()) == {"lr": 0.1}


def test_run_api_errors_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="plain folder name"):
        hf_summary.init("a/b", logdir_root=tmp_path)
    with pytest.raises(ValueError, match="plain folder name"):
        hf_summary.init("proj", name="..", logdir_root=tmp_path)
    with pytest.raises(TypeError, match="commit_every only apply to a run pushed to the Hub"):
        hf_summary.init("proj", logdir_root=tmp_path, commit_every=1)
    assert not any(tmp_path.iterdir()), "a rejected init creates nothing"

    with hf_summary.init("proj", name="r", logdir_root=tmp_path) as run:
        with pytest.raises(TypeError, match="'bad' is a list"):
            run.log({"ok": 1.0, "bad": [1, 2]})
        run.log({"ok": 2.0})
    assert scalars(run.logdir, "ok") == [(0, 2.0)], "a rejected call logs nothing, and does not advance the step"
    with pytest.raises(RuntimeError, match="finished"):
        run.log({"ok": 3.0})


def test_import_stays_light() -> None:
    code = ("import sys; from hf_summary import init, log, finish; from hf_summary.integrations import common; "
            "print([m for m in ('torch', 'tensorboard', 'tensorboardX', 'accelerate') if m in sys.modules])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_transformers_trainer_logs_through_our_writer(hub: LocalHub, repo_id: str, tmp_path: Path) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments
    from transformers.integrations import TensorBoardCallback

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=32, n_positions=16, n_embd=16, n_layer=2, n_head=2,
                                       bos_token_id=0, eos_token_id=0))
    rows = torch.randint(0, 32, (8, 12))
    data = [{"input_ids": row, "labels": row} for row in rows]
    args = TrainingArguments(output_dir=str(tmp_path / "out"), max_steps=4, logging_steps=1,
                             per_device_train_batch_size=2, report_to="none", save_strategy="no", disable_tqdm=True,
                             use_cpu=True)
    writer = HFSummaryWriter(repo_id, logdir=str(tmp_path / "trainer-run"), commit_every=60)
    trainer = Trainer(model=model, args=args, train_dataset=data, callbacks=[TensorBoardCallback(tb_writer=writer)])
    trainer.train()  # the callback closes the writer at the end of training: the final push

    assert not writer.scheduler.alive
    logged = [(entry["step"], entry["loss"]) for entry in trainer.state.log_history if "loss" in entry]
    assert [step for step, _ in logged] == [1, 2, 3, 4]
    run = download_run(hub, repo_id, "tensorboard/trainer-run", tmp_path / "dl")
    assert scalars(run, "train/loss") == [(step, pytest.approx(loss, rel=1e-6)) for step, loss in logged]
    assert [step for step, _ in scalars(run, "train/learning_rate")] == [1, 2, 3, 4]
    assert json.loads(_text(run, "args")[0][1])["max_steps"] == 4
