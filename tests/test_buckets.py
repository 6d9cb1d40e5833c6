"""Runs pushed to a Storage Bucket, end to end: the real huggingface_hub and hf_xet clients against LocalHub.

Bucket uploads always go through Xet, and huggingface_hub reads HF_HUB_DISABLE_XET at import: each run happens in a
child process with Xet on, its own HF_HOME and HF_XET_CACHE, against a LocalHub started by the test.
"""

from __future__ import annotations

import struct
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from hf_summary import HFSummaryWriter
from hf_summary.testing import LocalHub

from .helpers import scalars, wait_until, xet_client_env

BUCKET = "local-user/live-logs"


@pytest.fixture
def bucket_hub(tmp_path: Path) -> Iterator[LocalHub]:
    with LocalHub(tmp_path / "hub", xet=True) as hub:
        yield hub


def _run(hub: LocalHub, home: Path, args: list[str]) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, *args], env=xet_client_env(hub, home), capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


_RUN = textwrap.dedent("""
    import sys
    from hf_summary import HFSummaryWriter
    handle, logdir, pushes = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with HFSummaryWriter(handle, logdir=logdir, crash_upload=False) as writer:
        for push in range(pushes):
            for step in range(push * 100, push * 100 + 100):
                writer.add_scalar("loss", step / 7, step)
            writer.scheduler.trigger().result(timeout=120)
""")


def _f32(value: float) -> float:
    return struct.unpack("<f", struct.pack("<f", value))[0]  # TensorBoard keeps scalars as float32


def _read_back(hub: LocalHub, folder: str, dest: Path) -> Path:
    for path, data in hub.bucket_files(BUCKET).items():
        if path.startswith(folder + "/"):
            target = dest / path[len(folder) + 1:]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
    return dest


def test_a_bucket_run_reads_back_whole_through_xet_without_commits(bucket_hub: LocalHub, tmp_path: Path) -> None:
    child = _run(bucket_hub, tmp_path, ["-c", _RUN, f"hf://buckets/{BUCKET}", str(tmp_path / "mlp"), "3"])
    assert (child.stdout, child.stderr) == ("", "")  # background pushes draw no Xet bars, print nothing
    run = _read_back(bucket_hub, "tensorboard/mlp", tmp_path / "dl")
    assert scalars(run, "loss") == [(step, _f32(step / 7)) for step in range(300)]
    stats = bucket_hub.stats
    assert stats.bucket_batches >= 3 and stats.lfs_uploads == 0 and stats.xet_xorbs > 0 and stats.commits == 0


def test_sync_to_a_bucket_twice_sends_nothing_the_second_time(bucket_hub: LocalHub, tmp_path: Path) -> None:
    from tensorboardX import SummaryWriter

    logdir = tmp_path / "offline"
    with SummaryWriter(str(logdir)) as writer:
        for step in range(50):
            writer.add_scalar("acc", step / 50, step)
    sync = ["-m", "hf_summary.cli", "sync", str(logdir), f"hf://buckets/{BUCKET}"]
    first = _run(bucket_hub, tmp_path, sync)
    assert "Uploaded 1 file(s)" in first.stdout and f"buckets/{BUCKET}" in first.stdout
    batches = bucket_hub.stats.bucket_batches
    second = _run(bucket_hub, tmp_path, sync)
    assert "Nothing to upload" in second.stdout and bucket_hub.stats.bucket_batches == batches
    assert scalars(_read_back(bucket_hub, "tensorboard/offline", tmp_path / "dl"), "acc") == [
        (step, _f32(step / 50)) for step in range(50)]


def test_a_bucket_file_is_never_replaced_by_a_shorter_one(bucket_hub: LocalHub, tmp_path: Path) -> None:
    logdir = tmp_path / "restarted"
    _run(bucket_hub, tmp_path, ["-c", _RUN, f"hf://buckets/{BUCKET}", str(logdir), "2"])
    (event_file,) = [p for p in logdir.iterdir() if "tfevents" in p.name]
    longer = bucket_hub.bucket_files(BUCKET)[f"tensorboard/restarted/{event_file.name}"]
    # The run restarted on its logdir without its upload state, its file rewritten shorter.
    for path in (logdir / ".hf_summary").iterdir():
        path.unlink()
    event_file.write_bytes(longer[: len(longer) // 2])
    _run(bucket_hub, tmp_path, ["-m", "hf_summary.cli", "sync", str(logdir), f"hf://buckets/{BUCKET}"])
    assert bucket_hub.bucket_files(BUCKET)[f"tensorboard/restarted/{event_file.name}"] == longer


def test_a_bucket_refuses_what_only_a_repo_has(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="bucket keeps none"):
        HFSummaryWriter("me/logs", repo_type="bucket", squash_history=True, logdir=str(tmp_path / "a"))
    with pytest.raises(ValueError, match="no branches"):
        HFSummaryWriter("hf://buckets/me/logs", repo_revision="dev", logdir=str(tmp_path / "b"))
    with pytest.raises(ValueError, match="drop repo_type"):
        HFSummaryWriter("hf://buckets/me/logs", repo_type="dataset", logdir=str(tmp_path / "c"))
    assert not (tmp_path / "a").exists()  # refused at the call, before anything is created


_STEADY = textwrap.dedent("""
    import sys, time
    from hf_summary import HFSummaryWriter
    handle, logdir, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with HFSummaryWriter(handle, logdir=logdir, commit_every=0.5 / 60, crash_upload=False) as writer:
        for step in range(steps):
            writer.add_scalar("loss", step / 7, step)
            time.sleep(0.01)  # a training step
""")


def test_bucket_pushes_stay_within_the_request_quota(bucket_hub: LocalHub, tmp_path: Path) -> None:
    # A push every 0.5 s costs about 2 requests: 30 in 7.5 s, for a quota of 20 in 30 s. Spaced by what the Hub's
    # answers say remains, the run meets no 429 and loses nothing.
    bucket_hub.set_limits(api_limit=(20, 30))
    _run(bucket_hub, tmp_path, ["-c", _STEADY, f"hf://buckets/{BUCKET}", str(tmp_path / "steady"), "750"])
    stats = bucket_hub.stats
    assert stats.api_rate_limited == 0 and stats.bucket_batches >= 2
    run = _read_back(bucket_hub, "tensorboard/steady", tmp_path / "dl")
    assert scalars(run, "loss") == [(step, _f32(step / 7)) for step in range(750)]


_KILLED = textwrap.dedent("""
    import os, signal, sys
    from hf_summary import HFSummaryWriter
    handle, logdir = sys.argv[1], sys.argv[2]
    writer = HFSummaryWriter(handle, logdir=logdir, commit_every=60)  # no scheduled push before the kill
    for step in range(500):
        writer.add_scalar("loss", step / 7, step)
    writer.flush()
    os.kill(os.getpid(), signal.SIGKILL)
""")


def test_a_killed_runs_tail_reaches_the_bucket_through_its_companion(bucket_hub: LocalHub, tmp_path: Path) -> None:
    child = subprocess.run([sys.executable, "-c", _KILLED, f"hf://buckets/{BUCKET}", str(tmp_path / "killed")],
                           env=xet_client_env(bucket_hub, tmp_path), capture_output=True, text=True, timeout=300)
    assert child.returncode == -9, child.stderr[-3000:]
    log = tmp_path / "killed" / ".hf_summary" / "companion.log"
    wait_until(lambda: log.exists() and "Pushed" in log.read_text(), timeout=240,
               what="the companion to push the killed run to the bucket")
    run = _read_back(bucket_hub, "tensorboard/killed", tmp_path / "dl")
    assert scalars(run, "loss") == [(step, _f32(step / 7)) for step in range(500)]


def test_every_value_reaches_the_bucket_once_through_30_percent_faults(bucket_hub: LocalHub, tmp_path: Path) -> None:
    # 500s, 503s and lost answers (processed, then the connection closed) on every route: the CAS, the batch.
    bucket_hub.set_faults(0.3, seed=7, kinds=("500", "503", "drop_after"))
    _run(bucket_hub, tmp_path, ["-c", _RUN, f"hf://buckets/{BUCKET}", str(tmp_path / "faulty"), "3"])
    bucket_hub.clear_faults()
    assert bucket_hub.stats.faults_injected > 0
    run = _read_back(bucket_hub, "tensorboard/faulty", tmp_path / "dl")
    assert scalars(run, "loss") == [(step, _f32(step / 7)) for step in range(300)]


def test_the_integrations_take_a_bucket_handle(tmp_path: Path) -> None:
    from hf_summary.integrations import HubTensorBoardLogger, HubTensorBoardTracker

    assert HubTensorBoardTracker("run", str(tmp_path), repo_id=f"hf://buckets/{BUCKET}").repo_id.endswith(BUCKET)
    assert HubTensorBoardLogger(str(tmp_path), repo_id=f"hf://buckets/{BUCKET}").repo_id.endswith(BUCKET)
    with pytest.raises(ValueError, match="Invalid repo_id"):
        HubTensorBoardTracker("run", str(tmp_path), repo_id="hf://buckets/not a name")
