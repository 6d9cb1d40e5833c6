"""The companion process: runs whose process dies without closing its writer still reach the Hub, with no command.

Every case runs a real training process (a child of the test) against the session's local Hub, and waits on the
server for a condition, with a generous bound, never on a fixed sleep. This sandbox's PID 1 does not reap orphans:
a companion that outlived its training process ends as a zombie of PID 1 here, which is why those cases accept a
zombie as "exited". While the training process lives, it reaps the companion itself, and that is checked strictly.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from hf_summary import HFSummaryWriter, LocalSummaryWriter, UploadSpec, companion
from hf_summary.events.records import scan_records
from hf_summary.testing import LocalHub
from hf_summary.upload.uploader import Uploader

from .helpers import accumulate, download_run, wait_until

# The companion process's own life is checked here: no companion shared by the module (conftest.py).
OWN_COMPANION = True

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the companion needs POSIX processes")

_TRAINING = textwrap.dedent("""
    import os, resource, signal, sys, time
    import numpy as np
    from hf_summary import HFSummaryWriter
    from hf_summary import companion

    repo_id, logdir, end = sys.argv[1:4]
    writer = HFSummaryWriter(repo_id, logdir=logdir, commit_every=60, max_file_size=20_000)
    rng = np.random.default_rng(0)
    step = 0

    def log(n):
        global step
        for _ in range(n):
            writer.add_scalar("loss", float(step), step)
            if step % 100 == 0:
                writer.add_histogram("weights", rng.normal(size=50), step)
            step += 1

    log(1000)
    writer.scheduler.trigger().result()  # the live run's only push: commit_every is an hour
    log(1000)
    forked = 0
    if end == "fork-exits":
        pid = os.fork()
        if pid == 0:
            writer.close()  # an inherited writer: its final push and its release are the parent's
            ok = not companion.watch(logdir, writer.spec).active and companion.current_pid() is None
            sys.exit(0 if ok else 3)  # a normal exit: the exit hooks run
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
        log(1000)
    elif end == "fork-lives":
        forked = os.fork()
        if forked == 0:
            time.sleep(600)  # a DataLoader worker that outlives its parent for a while
            os._exit(0)
    writer.flush()
    print("ready", companion.current_pid(), forked, flush=True)
    if end == "segv":
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        os.kill(os.getpid(), signal.SIGSEGV)
    elif end == "exit":
        os._exit(1)
    elif end == "kill":
        while True:  # killed while logging: the last record on disk may be half-written
            log(100)
            time.sleep(0.001)
    sys.stdin.read()
    writer.close()
""")


class _Training:
    """A training process logging scalars and histograms to `logdir`; `end` says how it ends."""

    def __init__(self, repo_id: str, logdir: Path, end: str, tmp_path: Path) -> None:
        self.logdir = logdir
        self.stderr = tmp_path / "training.stderr"
        with open(self.stderr, "w") as err:
            self.proc = subprocess.Popen([sys.executable, "-c", _TRAINING, repo_id, str(logdir), end],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True,
                                         env={**os.environ, "HF_HUB_DISABLE_PROGRESS_BARS": "1"})
        assert self.proc.stdout is not None
        words = self.proc.stdout.readline().split()
        assert words and words[0] == "ready", self.stderr.read_text()
        self.companion_pid, self.forked_pid = int(words[1]), int(words[2])

    def stop(self) -> None:
        for pid in (self.proc.pid, self.forked_pid):
            if pid:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.proc.wait(timeout=30)


@pytest.fixture
def training(repo_id: str, logdir: Path, tmp_path: Path) -> Iterator[Callable[[str], _Training]]:
    started: list[_Training] = []

    def start(end: str) -> _Training:
        started.append(_Training(repo_id, logdir, end, tmp_path))
        return started[-1]

    yield start
    for run in started:
        run.stop()


def _disk_is_on_hub(hub: LocalHub, repo_id: str, logdir: Path) -> bool:
    """Whether every event file holds on the Hub exactly its complete records on disk (no more, none twice)."""
    files = hub.repo_files(repo_id)
    for path in logdir.glob("*tfevents*"):
        valid = path.read_bytes()[: scan_records(path).valid_size]
        if files.get(f"tensorboard/{logdir.name}/{path.name}") != valid:
            return False
    return True


def _exited(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE  # of a PID 1 that does not reap
    except psutil.NoSuchProcess:
        return True


def _our_commits(hub: LocalHub, repo_id: str) -> int:
    return len([c for c in hub.commits(repo_id) if any(f.startswith("tensorboard/") for f in c["files"])])


def _check_run_complete(hub: LocalHub, repo_id: str, logdir: Path, tmp_path: Path) -> int:
    """Check the run read back from the Hub; return its number of steps."""
    log_file = logdir / ".hf_summary" / companion.LOG_NAME
    # The commit is visible before the companion has confirmed it on the branch, recorded it and said so.
    wait_until(lambda: log_file.exists() and "Pushed" in log_file.read_text(),
               timeout=60, what="the companion's push recorded")
    acc = accumulate(download_run(hub, repo_id, f"tensorboard/{logdir.name}", tmp_path / "dl"))
    steps = [e.step for e in acc.Scalars("loss")]
    assert steps == list(range(len(steps))) and len(steps) >= 2000  # every step once, in order
    histograms, expected = [e.step for e in acc.Histograms("weights")], list(range(0, len(steps), 100))
    # A kill may fall between the last step's scalar and its histogram, logged just after it.
    assert histograms == expected or (histograms == expected[:-1] and expected[-1] == steps[-1])
    assert Uploader(logdir, UploadSpec(repo_id)).pending() == []  # what `hf-summary status` reads: nothing left
    log = (logdir / ".hf_summary" / companion.LOG_NAME).read_text()
    assert "Pushed" in log and f"hf-summary sync {logdir} {repo_id}" in log and hub.token not in log
    assert _our_commits(hub, repo_id) == 2  # the live run's one push, then the companion's
    return len(steps)


@pytest.mark.parametrize("end", ["kill", "segv", "exit"])
def test_a_dead_training_process_is_pushed_by_its_companion(hub: LocalHub, repo_id: str, logdir: Path,
                                                           tmp_path: Path, training: Callable[[str], _Training],
                                                           end: str) -> None:
    run = training(end)
    if end == "kill":
        run.proc.send_signal(signal.SIGKILL)
    expected = {"kill": -signal.SIGKILL, "segv": -signal.SIGSEGV, "exit": 1}[end]
    assert run.proc.wait(timeout=30) == expected
    wait_until(lambda: _disk_is_on_hub(hub, repo_id, logdir),
               timeout=60, what="the records on disk at the death on the Hub")
    _check_run_complete(hub, repo_id, logdir, tmp_path)
    wait_until(lambda: _exited(run.companion_pid), timeout=30, what="the companion exits after its push")


def test_a_forked_child_exiting_does_not_end_the_watch(hub: LocalHub, repo_id: str, logdir: Path, tmp_path: Path,
                                                       training: Callable[[str], _Training]) -> None:
    run = training("fork-exits")  # the child closed its inherited writer and exited before `ready`
    assert not _exited(run.companion_pid)
    run.proc.send_signal(signal.SIGKILL)
    run.proc.wait(timeout=30)
    # Steps logged after the child exited are there: the companion still watched, and had not pushed early.
    wait_until(lambda: _disk_is_on_hub(hub, repo_id, logdir),
               timeout=60, what="the records on disk at the death on the Hub")
    assert _check_run_complete(hub, repo_id, logdir, tmp_path) == 3000


def test_the_parent_dying_while_a_forked_child_lives_is_pushed(hub: LocalHub, repo_id: str, logdir: Path,
                                                               tmp_path: Path,
                                                               training: Callable[[str], _Training]) -> None:
    run = training("fork-lives")
    run.proc.send_signal(signal.SIGKILL)
    run.proc.wait(timeout=30)
    wait_until(lambda: _disk_is_on_hub(hub, repo_id, logdir),
               timeout=60, what="the records on disk at the death on the Hub")
    assert not _exited(run.forked_pid)  # the forked child does not hold the companion's socket open
    _check_run_complete(hub, repo_id, logdir, tmp_path)


def test_sigterm_to_the_companion_pushes_at_once(hub: LocalHub, repo_id: str, logdir: Path, tmp_path: Path,
                                                training: Callable[[str], _Training]) -> None:
    run = training("wait")
    os.kill(run.companion_pid, signal.SIGTERM)
    # The training process lives (it waits on its stdin): the push it does not see is SIGTERM's.
    wait_until(lambda: _disk_is_on_hub(hub, repo_id, logdir), timeout=60, what="the push made on SIGTERM")
    # The training process lives on, and reaps its companion: gone, not a zombie.
    wait_until(lambda: not psutil.pid_exists(run.companion_pid), timeout=30, what="the companion exits and is reaped")
    assert run.proc.poll() is None
    assert "received SIGTERM" in (logdir / ".hf_summary" / companion.LOG_NAME).read_text()
    assert run.proc.stdin is not None
    run.proc.stdin.close()  # the training process closes its writer: nothing left to push, no error
    assert run.proc.wait(timeout=60) == 0
    assert "Traceback" not in run.stderr.read_text()


_UNFINISHED = textwrap.dedent("""
    import os, sys
    from hf_summary import LocalSummaryWriter, UploadSpec
    from hf_summary import companion
    with LocalSummaryWriter(sys.argv[2]) as writer:
        for step in range(100):
            writer.add_scalar("loss", float(step), step)
    companion.watch(sys.argv[2], UploadSpec(sys.argv[1]), timeout=3)
    print(companion.current_pid(), flush=True)
    os._exit(1)
""")


def test_a_push_that_cannot_finish_leaves_the_sync_command(hub: LocalHub, repo_id: str, logdir: Path) -> None:
    hub.set_faults(1.0, kinds=("503",))
    out = subprocess.run([sys.executable, "-c", _UNFINISHED, repo_id, str(logdir)], capture_output=True, text=True,
                         timeout=120).stdout
    log = logdir / ".hf_summary" / companion.LOG_NAME
    wait_until(lambda: log.exists() and "Could not push" in log.read_text(),
               timeout=60, what="the companion gives up, bounded")
    wait_until(lambda: _exited(int(out)), timeout=30, what="the companion exits after giving up")
    command = f"hf-summary sync {logdir} {repo_id}"
    assert command in log.read_text().split("Could not push")[1]
    hub.clear_faults()
    sync = subprocess.run([sys.executable, "-m", "hf_summary.cli", *command.split()[1:]], capture_output=True,
                          text=True, timeout=120)
    assert sync.returncode == 0, sync.stderr
    assert _disk_is_on_hub(hub, repo_id, logdir)


def _our_companions() -> list[psutil.Process]:
    return [p for p in psutil.Process().children() if "hf_summary.companion" in " ".join(p.cmdline())]


def test_one_companion_per_process_gone_after_a_clean_close(hub: LocalHub, repo_id: str, logdir: Path,
                                                           tmp_path: Path) -> None:
    assert companion.current_pid() is None
    first = HFSummaryWriter(repo_id, logdir=str(logdir), commit_every=60)
    pid = companion.current_pid()
    assert pid is not None and [p.pid for p in _our_companions()] == [pid]
    process = psutil.Process(pid)
    assert os.getsid(pid) == pid  # a session of its own: a kernel restart's killpg does not reach it
    assert process.memory_info().rss < 100 * 1024 * 1024  # it runs the pushes: huggingface_hub is loaded
    # The token went over the socket: not in its command line, nor in its environment.
    assert all(hub.token not in text for text in [*process.cmdline(), *process.environ().values()])
    second = HFSummaryWriter(repo_id, logdir=str(tmp_path / "run2"), commit_every=60)
    assert companion.current_pid() == pid  # one companion whatever the number of writers
    second.close()
    assert companion.current_pid() == pid and process.status() != psutil.STATUS_ZOMBIE
    first.add_scalar("loss", 1.0, 0)
    first.close()
    assert companion.current_pid() is None
    assert not psutil.pid_exists(pid)  # exited and reaped before close() returned: gone, not a zombie
    assert not (logdir / ".hf_summary" / companion.LOG_NAME).exists()  # it had nothing to do


@pytest.mark.parametrize("case", ["no-crash-upload", "rank-1"])
def test_no_companion_when_not_asked_or_not_rank_0(hub: LocalHub, repo_id: str, logdir: Path, case: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    if case == "rank-1":
        monkeypatch.setenv("RANK", "1")
    with HFSummaryWriter(repo_id, logdir=str(logdir), crash_upload=case != "no-crash-upload") as writer:
        writer.add_scalar("loss", 1.0, 0)
        assert not writer._crash_upload  # a crash pushes nothing
        # The companion writes the events; rank 1 writes none (other_ranks="skip"): no process at all.
        assert [p.pid for p in _our_companions()] == ([] if case == "rank-1" else [companion.current_pid()])
    with HFSummaryWriter(repo_id, logdir=str(logdir), crash_upload=case != "no-crash-upload",
                         ring_size=None) as writer:  # events written in-process: no process at all
        writer.add_scalar("loss", 1.0, 1)
        assert companion.current_pid() is None and _our_companions() == []


def test_no_companion_offline(hub: LocalHub, repo_id: str, logdir: Path) -> None:
    script = textwrap.dedent("""
        import sys, psutil
        from hf_summary import HFSummaryWriter
        from hf_summary import companion
        with HFSummaryWriter(sys.argv[1], logdir=sys.argv[2], ring_size=None) as writer:
            writer.add_scalar("loss", 1.0, 0)
            print(companion.current_pid(), len(psutil.Process().children()))
        with HFSummaryWriter(sys.argv[1], logdir=sys.argv[2]) as writer:  # the companion writes the events
            writer.add_scalar("loss", 1.0, 1)
            print(writer._watch is None, len(psutil.Process().children()))
    """)
    result = subprocess.run([sys.executable, "-c", script, repo_id, str(logdir)], capture_output=True, text=True,
                            timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"}, check=True)
    assert result.stdout.split() == ["None", "0", "True", "1"]


# Loaded in every Python process started with its folder first on PYTHONPATH (the companion inherits the training
# process's PYTHONPATH): records the top-level modules the process holds each time it waits in select(), and at exit.
_MODULES_REPORT = textwrap.dedent("""
    import atexit, json, os, select, sys
    _path = os.path.join(os.environ["HF_SUMMARY_TEST_REPORT"], f"{os.getpid()}.jsonl")
    _select = select.select

    def _report(event):
        modules = sorted({name.split(".")[0] for name in list(sys.modules)})
        with open(_path, "a") as f:
            f.write(json.dumps({"event": event, "modules": modules}) + "\\n")

    def _reporting_select(*args, **kwargs):
        _report("wait")
        return _select(*args, **kwargs)

    select.select = _reporting_select
    atexit.register(_report, "exit")
""")


def test_waiting_companion_imports_nothing_heavy(hub: LocalHub, repo_id: str, logdir: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub.utils import get_session

    http_stack = type(get_session()).__module__.split(".")[0]  # what huggingface_hub sends requests with (httpx2)
    heavy = {"huggingface_hub", http_stack, "tensorboardX", "torch", "numpy", "filelock"}
    with LocalSummaryWriter(str(logdir)) as writer:
        writer.add_scalar("loss", 1.0, 0)
    site_dir, reports = tmp_path / "site", tmp_path / "reports"
    site_dir.mkdir()
    reports.mkdir()
    (site_dir / "sitecustomize.py").write_text(_MODULES_REPORT)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(site_dir), os.environ.get("PYTHONPATH")) if p))
    monkeypatch.setenv("HF_SUMMARY_TEST_REPORT", str(reports))
    assert companion.current_pid() is None
    handle = companion.watch(logdir, UploadSpec(repo_id))  # the way a writer starts its companion, told one logdir
    try:
        pid = companion.current_pid()
        assert handle.active and pid is not None
        report = reports / f"{pid}.jsonl"

        def entries() -> list[dict]:
            return [json.loads(line) for line in report.read_text().splitlines()] if report.exists() else []

        # select() is called once before anything is read, and again after each read: the second call is the
        # companion waiting with the logdir watched (and the training process alive: it is this one).
        waits = wait_until(lambda: [e for e in entries() if e["event"] == "wait"][1:], timeout=60,
                           what="the companion waiting again after reading the watch")
        assert all(e["event"] == "wait" for e in entries())  # it only waited: no push, no exit yet
        for entry in waits:
            assert "hf_summary" in entry["modules"]  # the report sees the companion's own imports
            assert not heavy & set(entry["modules"]), sorted(heavy & set(entry["modules"]))
        # The names checked are the ones a push loads: SIGTERM makes it push now, and it exits after the push.
        os.kill(pid, signal.SIGTERM)
        wait_until(lambda: any(e["event"] == "exit" for e in entries()), timeout=120, what="the companion's exit")
        assert _disk_is_on_hub(hub, repo_id, logdir)
        (at_exit,) = [e["modules"] for e in entries() if e["event"] == "exit"]
        assert {"huggingface_hub", http_stack} <= set(at_exit), at_exit
    finally:
        handle.release()  # the companion is gone: nothing to tell, no error
    assert companion.current_pid() is None
