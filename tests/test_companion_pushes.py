"""Pushes run in the companion process: the training process hands events off and does nothing else with them.

Each case reads what the training process holds from the operating system (its sockets, from /proc through psutil)
and what reached the local Hub, never our own bookkeeping. Waits are on the server's state or on a child's output,
with generous bounds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest

from hf_summary import HFSummaryWriter, companion
from hf_summary.companion import RemoteMember
from hf_summary.testing import LocalHub
from hf_summary.upload.member import ScheduleMember

from .helpers import download_run, scalars, wait_until

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the companion needs POSIX processes")

# A training process that logs and asks for pushes, and after each one reads from /proc whether it holds a
# connection to the Hub, and whether hf_xet was ever imported into it.
_LIVE = textwrap.dedent("""
    import json, sys
    from urllib.parse import urlparse
    import psutil
    from huggingface_hub import constants
    from hf_summary import HFSummaryWriter

    handle, logdir = sys.argv[1:3]
    port = urlparse(constants.ENDPOINT).port
    seen, receipts = [], []
    with HFSummaryWriter(handle, logdir=logdir, commit_every=60) as writer:
        for push in range(3):
            for step in range(push * 100, push * 100 + 100):
                writer.add_scalar("loss", float(step), step)
            receipts.append(writer.scheduler.trigger().result(timeout=120).oid)
            seen += [str(c.raddr) for c in psutil.Process().net_connections("inet") if c.raddr and c.raddr.port == port]
        kind = type(writer.scheduler).__name__
    print(json.dumps({"seen": seen, "receipts": receipts, "xet": "hf_xet" in sys.modules, "kind": kind}))
""")


@pytest.mark.parametrize("kind", ["bucket", "repo"])
def test_a_live_run_is_pushed_by_the_companion_alone(hub: LocalHub, repo_id: str, tmp_path: Path, kind: str) -> None:
    handle = f"hf://buckets/{repo_id}" if kind == "bucket" else repo_id
    logdir = tmp_path / "live"
    result = subprocess.run([sys.executable, "-c", _LIVE, handle, str(logdir)], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert report["kind"] == "RemoteMember"
    assert report["seen"] == []  # no connection to the Hub, after any of the pushes
    assert not report["xet"]  # no Xet work in the training process: chunking and hashing ran in the companion
    assert len(set(report["receipts"])) == 3  # each trigger() answered with its own push's receipt
    if kind == "bucket":
        files = hub.bucket_files(repo_id)
        run = tmp_path / "dl"
        for path, data in files.items():
            if path.startswith("tensorboard/live/"):
                (run / Path(path).name).parent.mkdir(parents=True, exist_ok=True)
                (run / Path(path).name).write_bytes(data)
    else:
        run = download_run(hub, repo_id, "tensorboard/live", tmp_path / "dl")
    assert scalars(run, "loss") == [(step, float(step)) for step in range(300)]


def test_the_schedule_runs_in_this_process_without_a_ring(hub: LocalHub, repo_id: str, logdir: Path,
                                                          tmp_path: Path) -> None:
    with HFSummaryWriter(repo_id, logdir=str(logdir), commit_every=60, ring_size=None) as writer:
        assert isinstance(writer.scheduler, ScheduleMember)
        writer.add_scalar("loss", 1.0, 0)
        assert writer.scheduler.trigger().result(timeout=60) is not None
    with HFSummaryWriter(repo_id, logdir=str(logdir), commit_every=60) as writer:
        assert isinstance(writer.scheduler, RemoteMember)
        writer.add_scalar("loss", 2.0, 1)
    run = download_run(hub, repo_id, f"tensorboard/{logdir.name}", tmp_path / "dl")
    assert scalars(run, "loss") == [(0, 1.0), (1, 2.0)]


def test_the_companion_killed_mid_push_loses_nothing_and_sends_nothing_twice(hub: LocalHub, repo_id: str,
                                                                              logdir: Path, tmp_path: Path) -> None:
    writer = HFSummaryWriter(repo_id, logdir=str(logdir), commit_every=60, push_timeout=120)
    try:
        for step in range(100):
            writer.add_scalar("loss", float(step), step)
        writer.scheduler.trigger().result(timeout=60)
        for step in range(100, 200):
            writer.add_scalar("loss", float(step), step)
        hub.reset_stats()
        hub.set_faults(1.0, kinds=("hang",), paths=[r"/commit/"])  # the push's commit is held by the Hub
        pending = writer.scheduler.trigger()
        wait_until(lambda: hub.stats.faults_injected > 0, timeout=60, what="the companion's commit held by the Hub")
        process = psutil.Process(companion.current_pid())
        process.kill()
        process.wait(timeout=60)
        hub.clear_faults()
        # This process takes the drain and the schedule over, and makes the push the companion could not finish.
        assert pending.result(timeout=120) is not None
        for step in range(200, 300):
            writer.add_scalar("loss", float(step), step)
        assert writer.scheduler.trigger().result(timeout=60) is not None
        assert not writer.scheduler.stopped and writer.scheduler.alive
    finally:
        writer.close()
    run = download_run(hub, repo_id, f"tensorboard/{logdir.name}", tmp_path / "dl")
    assert scalars(run, "loss") == [(step, float(step)) for step in range(300)]  # each value once, in order


_KILLED = textwrap.dedent("""
    import sys
    from hf_summary import HFSummaryWriter, companion

    repo_id, logdir = sys.argv[1:3]
    writer = HFSummaryWriter(repo_id, logdir=logdir, commit_every=60)
    for step in range(500):
        writer.add_scalar("loss", float(step), step)
    writer.scheduler.trigger()  # not waited for: the process is killed while the companion pushes
    print(companion.current_pid(), flush=True)
    sys.stdin.read()  # until the test kills it
""")


def test_the_training_process_killed_mid_push_is_pushed_by_its_companion(hub: LocalHub, repo_id: str,
                                                                          logdir: Path, tmp_path: Path) -> None:
    hub.reset_stats()
    hub.set_faults(1.0, kinds=("hang",), paths=[r"/commit/"])
    child = subprocess.Popen([sys.executable, "-c", _KILLED, repo_id, str(logdir)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        pid = int(child.stdout.readline())
        wait_until(lambda: hub.stats.faults_injected > 0, timeout=60, what="the companion's commit held by the Hub")
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=60)
    finally:
        hub.clear_faults()
        if child.poll() is None:
            child.kill()
    wait_until(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE,
               timeout=180, what="the companion's last push and exit")
    run = download_run(hub, repo_id, f"tensorboard/{logdir.name}", tmp_path / "dl")
    assert scalars(run, "loss") == [(step, float(step)) for step in range(500)]


def test_a_live_bucket_run_asks_for_one_write_token_not_one_a_push(hub: LocalHub, repo_id: str,
                                                                    logdir: Path) -> None:
    with HFSummaryWriter(f"hf://buckets/{repo_id}", logdir=str(logdir), commit_every=60) as writer:
        writer.add_scalar("loss", 0.0, 0)
        writer.scheduler.trigger().result(timeout=60)  # the bucket is created, the first token fetched
        before = hub.stats
        for step in range(1, 5):
            writer.add_scalar("loss", float(step), step)
            writer.scheduler.trigger().result(timeout=60)
        after = hub.stats
    assert after.bucket_batches - before.bucket_batches == 4
    assert after.xet_tokens == before.xet_tokens  # the token of the first push serves the next four (on the old
    # code: one a push, asked by hf_xet at each batch)
