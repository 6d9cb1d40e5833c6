"""Upload only complete records, roll files, resume after a crash, and the hf-summary command line."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import IO

import pytest
from tensorboardX import SummaryWriter

from hf_summary import HFSummaryWriter
from hf_summary.events.records import frame_record, iter_records, scan_records
from hf_summary.testing import LocalHub

from .helpers import download_run, scalars, wait_until


def _cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hf_summary.cli", *args], capture_output=True, text=True,
                          timeout=300, **kwargs)


def _tbx_run(logdir: Path, steps: range, tag: str = "loss") -> Path:
    writer = SummaryWriter(str(logdir))
    for step in steps:
        writer.add_scalar(tag, float(step), step)
    writer.close()
    (path,) = [p for p in logdir.iterdir() if "tfevents" in p.name]
    return path


def test_torn_and_corrupt_tails_are_never_uploaded(hub: LocalHub, repo_id: str, tmp_path: Path) -> None:
    logdir = tmp_path / "torn"
    torn = _tbx_run(logdir / "a", range(10))
    corrupt = _tbx_run(logdir / "b", range(10))
    torn_valid, corrupt_valid = torn.stat().st_size, corrupt.stat().st_size
    with open(torn, "ab") as f:
        f.write(frame_record(b"x" * 40)[:25])
    bad = bytearray(frame_record(b"y" * 40))
    bad[-2] ^= 0x55
    with open(corrupt, "ab") as f:
        f.write(bytes(bad))

    result = _cli("sync", str(logdir), repo_id)
    assert result.returncode == 0, result.stderr
    files = hub.repo_files(repo_id)
    assert files[f"tensorboard/torn/a/{torn.name}"] == torn.read_bytes()[:torn_valid]
    assert files[f"tensorboard/torn/b/{corrupt.name}"] == corrupt.read_bytes()[:corrupt_valid]
    run = download_run(hub, repo_id, "tensorboard/torn", tmp_path / "dl")
    assert scalars(run / "a", "loss") == [(s, float(s)) for s in range(10)]

    # Completing the torn record makes it valid: the next sync sends it, and only then.
    with open(torn, "ab") as f:
        f.write(frame_record(b"x" * 40)[25:])
    assert _cli("sync", str(logdir), repo_id).returncode == 0
    assert hub.repo_files(repo_id)[f"tensorboard/torn/a/{torn.name}"] == torn.read_bytes()


def test_rolling_files_upload_each_closed_file_once(hub: LocalHub, repo_id: str, logdir: Path,
                                                    tmp_path: Path) -> None:
    hub.reset_stats()
    with HFSummaryWriter(repo_id, logdir=str(logdir), max_file_size=4096) as writer:
        for round_ in range(6):
            for i in range(100):
                step = round_ * 100 + i
                writer.add_scalar("loss", float(step), step)
            writer.scheduler.trigger().result(timeout=60)
    names = sorted(p.name for p in logdir.iterdir() if "tfevents" in p.name)
    assert len(names) >= 4
    uploads = hub.stats.per_path_uploads
    prefix = f"tensorboard/{logdir.name}/"
    for name in names[:-1]:
        assert uploads[prefix + name] == 1, (name, uploads)
    run = download_run(hub, repo_id, prefix.rstrip("/"), tmp_path / "dl")
    assert scalars(run, "loss") == [(s, float(s)) for s in range(600)]


def test_restarted_writer_resumes_without_resending(hub: LocalHub, repo_id: str, logdir: Path) -> None:
    with HFSummaryWriter(repo_id, logdir=str(logdir)) as writer:
        writer.add_scalar("a", 1.0, 0)
    first = set(hub.repo_files(repo_id))
    hub.reset_stats()
    with HFSummaryWriter(repo_id, logdir=str(logdir)) as writer:
        writer.add_scalar("a", 2.0, 1)
    uploaded = set(hub.stats.per_path_uploads)
    assert uploaded and not (uploaded & first)


_CRASHING_WRITER = textwrap.dedent("""
    import sys
    from hf_summary import HFSummaryWriter
    writer = HFSummaryWriter(sys.argv[1], logdir=sys.argv[2], commit_every=60, max_file_size=20_000,
                           crash_upload=False)  # `hf-summary sync` alone completes the run
    step = 0
    while True:
        for _ in range(200):
            writer.add_scalar("loss", float(step), step)
            step += 1
        if step % 1000 == 0:
            writer.scheduler.trigger().result()
        print(step, flush=True)  # the test kills the process once it has read the step of its case
""")


def _read_lines(stream: IO[str]) -> queue.Queue[str | None]:
    """The lines of `stream` as they come (None at its end), read by a thread: a test waits on them with a bound."""
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        for line in stream:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    return lines


# Two points of the run: just after a push returned (nothing pending), and 600 steps after it (a backlog on disk and
# in the writer's queue, the writer thread perhaps in the middle of a record).
@pytest.mark.parametrize("kill_at", [2000, 2600])
def test_sigkill_then_sync_has_every_record_once(hub: LocalHub, repo_id: str, logdir: Path, kill_at: int) -> None:
    proc = subprocess.Popen([sys.executable, "-c", _CRASHING_WRITER, repo_id, str(logdir)], stdout=subprocess.PIPE,
                            text=True)
    try:
        lines = _read_lines(proc.stdout)
        while True:
            try:
                line = lines.get(timeout=120)
            except queue.Empty:
                pytest.fail(f"the writer printed no step within 120 s (waiting for step {kill_at})")
            assert line is not None, f"the writer exited ({proc.wait()}) before step {kill_at}"
            if int(line) >= kill_at:
                break
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert int(line) == kill_at  # it printed every 200 steps: killed at the point of its case

    result = _cli("sync", str(logdir), repo_id)
    assert result.returncode == 0, result.stderr
    files = hub.repo_files(repo_id)
    steps: list[int] = []
    for path in sorted(logdir.glob("*tfevents*")):
        local_valid = path.read_bytes()[: scan_records(path).valid_size]
        remote = files[f"tensorboard/{logdir.name}/{path.name}"]
        assert remote == local_valid
        steps += _steps(path)
    assert len(steps) == len(set(steps)) and steps == sorted(steps) and len(steps) >= 2000  # pushed at 2000
    assert _cli("status", str(logdir)).returncode == 0


def _steps(path: Path) -> list[int]:
    from tensorboardX.proto.event_pb2 import Event

    events = [Event.FromString(r) for r in iter_records(path)]
    return [e.step for e in events if e.HasField("summary")]


def test_two_processes_syncing_one_logdir(hub: LocalHub, repo_id: str, tmp_path: Path) -> None:
    logdir = tmp_path / "shared"
    total = sum(_tbx_run(logdir / f"run{i}", range(2000)).stat().st_size for i in range(4))
    _cli("sync", str(logdir), repo_id, "--include", "nothing-matches")  # creates the repo first
    hub.reset_stats()
    procs = [subprocess.Popen([sys.executable, "-m", "hf_summary.cli", "sync", str(logdir), repo_id],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    uploads = hub.stats.per_path_uploads
    assert all(count == 1 for count in uploads.values())
    assert len([p for p in uploads if "tfevents" in p]) == 4
    card = len(hub.repo_files(repo_id)["README.md"]) if "README.md" in uploads else 0
    if hub.xet:  # xorbs carry new chunks compressed; one shard per upload: nothing uploaded was left uncommitted
        assert 0 < hub.stats.xet_xorb_bytes <= total and hub.stats.xet_shards == hub.stats.commits
    else:
        assert hub.stats.upload_bytes == total + card


def test_status_reports_pending_and_committed(hub: LocalHub, repo_id: str, tmp_path: Path) -> None:
    logdir = tmp_path / "st"
    path = _tbx_run(logdir, range(5))
    before = _cli("status", str(logdir))
    assert before.returncode == 1 and path.name in before.stdout
    assert _cli("sync", str(logdir), repo_id).returncode == 0
    after = _cli("status", str(logdir))
    assert after.returncode == 0 and str(path.stat().st_size) in after.stdout


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["sync", "/definitely/not/here", "user/repo"], 2, "no such folder"),
        (["sync", "{logdir}", "bad repo id"], 2, "repo_id"),
        (["status", "/definitely/not/here"], 2, "no such folder"),
    ],
)
def test_cli_bad_input(hub: LocalHub, tmp_path: Path, args: list[str], code: int, message: str) -> None:
    tmp_path.joinpath("run").mkdir()
    result = _cli(*[a.format(logdir=tmp_path / "run") for a in args])
    assert result.returncode == code and message in result.stderr


def test_cli_rejected_token(hub: LocalHub, repo_id: str, tmp_path: Path) -> None:
    _tbx_run(tmp_path / "run", range(3))
    result = _cli("sync", str(tmp_path / "run"), repo_id, env={**os.environ, "HF_TOKEN": "hf_wrong_token_123456"})
    assert result.returncode == 3
    assert "HF_TOKEN" in result.stderr and "hf_wrong_token_123456" not in result.stderr + result.stdout
    named = _cli("sync", str(tmp_path / "run"), repo_id, "--token", "hf_wrong_token_123456")
    assert named.returncode == 3 and "passed with --token" in named.stderr and "token=" not in named.stderr
    anonymous = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")}
    anonymous["HF_HOME"] = str(tmp_path / "no-login")
    nobody = _cli("sync", str(tmp_path / "run"), repo_id, env=anonymous)
    assert nobody.returncode == 3 and "you are not logged in" in nobody.stderr and "this token" not in nobody.stderr


def test_watch_uploads_a_torch_tensorboard_logdir(hub: LocalHub, repo_id: str, tmp_path: Path) -> None:
    from torch.utils.tensorboard import SummaryWriter as TorchWriter

    logdir = tmp_path / "torchrun"
    writer = TorchWriter(str(logdir))
    for step in range(50):
        writer.add_scalar("acc", step / 100, step)
    writer.flush()
    proc = subprocess.Popen([sys.executable, "-m", "hf_summary.cli", "watch", str(logdir), repo_id, "--every",
                             "0.01"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert "Watching" in proc.stdout.readline()
        wait_until(lambda: hub.repo_exists(repo_id) and any(p.startswith("tensorboard/torchrun/")
                                                             for p in hub.repo_files(repo_id)),
                   timeout=120, what="the first push of hf-summary watch")
        for step in range(50, 100):
            writer.add_scalar("acc", step / 100, step)
        writer.close()
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    run = download_run(hub, repo_id, "tensorboard/torchrun", tmp_path / "dl")
    assert [s for s, _ in scalars(run, "acc")] == list(range(100))


def test_offline_mode_makes_no_call_and_prints_the_sync_command(hub: LocalHub, repo_id: str, logdir: Path,
                                                                tmp_path: Path) -> None:
    import shlex

    script = ("import sys\nfrom hf_summary import HFSummaryWriter\n"
              "with HFSummaryWriter(sys.argv[1], logdir=sys.argv[2]) as w:\n"
              "    [w.add_scalar('loss', float(s), s) for s in range(100)]\n")
    hub.reset_stats()
    result = subprocess.run([sys.executable, "-c", script, repo_id, str(logdir)], capture_output=True, text=True,
                            timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr
    assert hub.stats.requests == 0 and not hub.repo_exists(repo_id)
    (line,) = [ln.strip() for ln in result.stderr.splitlines() if ln.strip().startswith("hf-summary sync")]
    words = shlex.split(line)
    offline = subprocess.run([sys.executable, "-m", "hf_summary.cli", *words[1:]], capture_output=True, text=True,
                             timeout=60, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert offline.returncode == 2 and "HF_HUB_OFFLINE is set" in offline.stderr  # at once, not after retries
    assert hub.stats.requests == 0
    assert _cli(*words[1:]).returncode == 0
    run = download_run(hub, repo_id, f"tensorboard/{logdir.name}", tmp_path / "dl")
    assert [s for s, _ in scalars(run, "loss")] == list(range(100))


def test_a_backlog_syncs_in_commits_of_at_most_100_files_and_resumes(hub: LocalHub, repo_id: str,
                                                                     tmp_path: Path) -> None:
    from tensorboardX.proto.event_pb2 import Event
    from tensorboardX.proto.summary_pb2 import Summary

    logdir = tmp_path / "offline-week"
    logdir.mkdir()
    for n in range(250):  # what an offline week with hourly rolls leaves behind
        header = Event(wall_time=1.0 + n, file_version="brain.Event:2").SerializeToString()
        value = Event(wall_time=1.0 + n, step=n, summary=Summary(value=[Summary.Value(tag="x", simple_value=n)]))
        (logdir / f"events.out.tfevents.{1700000000 + n:010d}.host.1.000").write_bytes(
            frame_record(header) + frame_record(value.SerializeToString()))
    hub.reset_stats()
    hub.set_limits(max_files_per_commit=100, commit_limit=(2, 3600))  # the Hub's advice; a quota that runs out
    first = _cli("sync", str(logdir), repo_id)
    assert first.returncode == 1 and "run the same command again" in first.stderr  # interrupted by the quota
    hub.set_limits(max_files_per_commit=100)
    second = _cli("sync", str(logdir), repo_id)
    assert second.returncode == 0, second.stderr
    ours = [c for c in hub.commits(repo_id) if any(f.startswith("tensorboard/") for f in c.get("files", []))]
    sizes = [len(c["files"]) for c in reversed(ours)]  # oldest first; the first commit also carries the card
    assert sizes == [100, 100, 51] and all(len(c["files"]) <= 100 for c in ours)
    assert hub.stats.limit_rejections == 0
    uploads = {p: n for p, n in hub.stats.per_path_uploads.items() if p.startswith("tensorboard/")}
    assert len(uploads) == 250 and set(uploads.values()) == {1}  # the second sync sent the rest, nothing twice
    run = download_run(hub, repo_id, f"tensorboard/{logdir.name}", tmp_path / "dl")
    assert [s for s, _ in scalars(run, "x")] == list(range(250))


def test_a_growing_file_is_sent_in_place_without_a_copy(hub: LocalHub, repo_id: str, logdir: Path,
                                                         tmp_path: Path) -> None:
    with HFSummaryWriter(repo_id, logdir=str(logdir), commit_every=60, push_timeout=3) as writer:
        for step in range(100):
            writer.add_scalar("loss", float(step), step)
        hub.set_faults(1.0, kinds=("hang",))  # the push is under way, and stays so
        assert writer.scheduler.trigger().exception(timeout=60) is not None
        # Nothing copied: no disk space needed for the newest file, and no second copy TensorBoard would read.
        assert [p for p in logdir.rglob("*") if p.is_file() and "tfevents" in p.name and ".hf_summary" in p.parts] == []
        hub.clear_faults()
        assert writer.scheduler.trigger(timeout=60).exception(timeout=90) is None
        for step in range(100, 150):
            writer.add_scalar("loss", float(step), step)
    assert not (logdir / ".hf_summary" / "snapshots").exists()
    run = download_run(hub, repo_id, f"tensorboard/{logdir.name}", tmp_path / "dl")
    assert [s for s, _ in scalars(run, "loss")] == list(range(150))


@pytest.mark.parametrize("damage", ["truncated", "garbled", "wrong-shape", "unreadable"])
def test_a_broken_upload_state_is_set_aside_and_the_run_goes_on(hub: LocalHub, repo_id: str, logdir: Path,
                                                                 tmp_path: Path, damage: str,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    with HFSummaryWriter(repo_id, logdir=str(logdir), commit_every=60) as writer:
        for step in range(50):
            writer.add_scalar("loss", float(step), step)
        writer.scheduler.trigger().result(timeout=60)
        state = logdir / ".hf_summary" / "state.json"
        text = state.read_text()
        if damage == "truncated":
            state.write_text(text[: len(text) // 2])
        elif damage == "garbled":
            state.write_bytes(b"\xff\xfe" + bytes(range(256)))
        elif damage == "wrong-shape":
            state.write_text('{"targets": {"x": ["not", "a", "table"]}}')
        else:
            state.unlink()
            state.mkdir()  # cannot be read as a file, whoever we are
        for step in range(50, 100):
            writer.add_scalar("loss", float(step), step)
        assert writer.scheduler.trigger().result(timeout=60) is not None
    assert any("could not be read" in r.getMessage() for r in caplog.records)
    run = download_run(hub, repo_id, f"tensorboard/{logdir.name}", tmp_path / "dl")
    assert [s for s, _ in scalars(run, "loss")] == list(range(100))
    assert _cli("sync", str(logdir), repo_id).returncode == 0
    assert _cli("status", str(logdir)).returncode == 0


def test_a_commit_the_server_did_not_make_is_not_recorded(hub: LocalHub, repo_id: str, logdir: Path,
                                                          tmp_path: Path) -> None:
    with HFSummaryWriter(repo_id, logdir=str(logdir), commit_every=60) as writer:
        for step in range(20):
            writer.add_scalar("loss", float(step), step)
        writer.scheduler.trigger().result(timeout=60)
        for step in range(20, 40):
            writer.add_scalar("loss", float(step), step)
        hub.fake_commits(1)  # the next commit is answered "200, committed", and nothing is committed
        assert writer.scheduler.trigger().result(timeout=120) is not None  # confirmed on the branch, after a retry
    run = download_run(hub, repo_id, f"tensorboard/{logdir.name}", tmp_path / "dl")
    assert [s for s, _ in scalars(run, "loss")] == list(range(40))
    assert _cli("sync", str(logdir), repo_id).stdout.startswith("Nothing to upload")


def test_status_asks_the_hub_and_reports_each_run_of_a_parent_folder(hub: LocalHub, repo_id: str,
                                                                     tmp_path: Path) -> None:
    from huggingface_hub import HfApi

    runs = tmp_path / "runs"
    paths = [_tbx_run(runs / name, range(5)) for name in ("a", "b")]
    for name in ("a", "b"):
        assert _cli("sync", str(runs / name), repo_id).returncode == 0
    both = _cli("status", str(runs))
    assert both.returncode == 0, both.stdout + both.stderr
    assert "never uploaded" not in both.stdout and all(p.name in both.stdout for p in paths)
    assert "last commit" in both.stdout
    # The Hub loses a file that the upload state says is there: only asking the Hub shows the gap.
    HfApi().delete_file(f"tensorboard/b/{paths[1].name}", repo_id)
    assert _cli("status", str(runs), "--local").returncode == 0
    gap = _cli("status", str(runs))
    assert gap.returncode == 1 and "pending: yes" in gap.stdout


def test_the_command_line_a_newcomer_expects() -> None:
    import argparse

    import hf_summary
    from hf_summary.cli import _parser

    version = _cli("--version")
    assert version.returncode == 0 and version.stdout.strip() == f"hf-summary {hf_summary.__version__}"
    parser = _parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in commands.choices.items():
        for action in sub._actions:
            assert action.help, f"hf-summary {name} {action.option_strings or action.dest} has no help text"


def test_a_rewrite_that_keeps_a_files_size_and_mtime_still_reaches_the_hub(hub: LocalHub, repo_id: str, logdir: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A file that is not an event file is known unchanged by its size and mtime; a rewrite of the same size within
    the filesystem's timestamp granularity keeps the mtime, so a push that read the file just before such a rewrite
    would leave its old bytes on the Hub for good. A file planned while its mtime is that recent is checked by its
    content at the next push. Recent kernels give ext4 a fine-grained mtime for each write after a stat, so the
    race cannot be timed here: the rewrite puts the old mtime back itself, and the granularity is a minute."""
    from hf_summary.upload import plan

    monkeypatch.setattr(plan, "RACY_NS", 60 * 10**9)
    notes = logdir / "notes.txt"
    path_in_repo = f"tensorboard/{logdir.name}/notes.txt"
    with HFSummaryWriter(repo_id, logdir=str(logdir), commit_every=60,
                         repo_allow_patterns=["*.tfevents.*", "notes.txt"]) as writer:
        writer.add_scalar("loss", 0.0, 0)
        notes.write_bytes(b"first version")
        writer.scheduler.trigger().result(timeout=60)
        assert hub.repo_files(repo_id)[path_in_repo] == b"first version"
        stat = notes.stat()
        notes.write_bytes(b"later version")  # the same size, within the same tick of the clock
        os.utime(notes, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        writer.add_scalar("loss", 1.0, 1)
        assert writer.scheduler.trigger().result(timeout=60) is not None
        assert hub.repo_files(repo_id)[path_in_repo] == b"later version"
        writer.add_scalar("loss", 2.0, 2)
        assert writer.scheduler.trigger().result(timeout=60) is not None
        # Checked by its content, not sent again: only the event file went up.
        assert hub.commits(repo_id)[0]["title"].startswith("Upload TensorBoard logs: 1 file(s)")
