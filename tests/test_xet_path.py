"""Xet on, as every user's client runs it: our pushes go through the real hf_xet client, silently, and survive faults.

huggingface_hub reads HF_HUB_DISABLE_XET and HF_ENDPOINT at import, and this session's own client may run with Xet
off: every Xet client here is a subprocess with its own HF_HOME and HF_XET_CACHE (hf_xet's shard cache is keyed by
the server's address: a cache shared with another server would make it skip chunks this one never received). Every
test starts its own LocalHub (Xet on whatever the session's setting), so the traffic counters it checks are its own.
Waits are on process ends, pipes and Futures, with generous bounds; where only the server's state can tell,
`wait_until` polls it.
"""

from __future__ import annotations

import json
import os
import pty
import select
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from hf_summary import companion
from hf_summary.events.records import scan_records
from hf_summary.testing import LocalHub

from .helpers import SIZE_GUIDANCE, download_run, wait_until

# The companion process's own life is checked here: no companion shared by the module (conftest.py).
OWN_COMPANION = True

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="Xet clients run as POSIX subprocesses here")

CAS = r"^/xet-cas/"  # the CAS routes of LocalHub (xorbs, shards, reconstructions, fetches)
COMMIT = r"^/api/[a-z]+s/[^?]+/commit/"  # the commit endpoint

# A training process driven line by line on stdin; it answers each command with one JSON line on stdout. Values are
# exact in float32 (TensorBoard's storage), so a run read back compares equal.
_DRIVER = textwrap.dedent("""
    import json, sys
    import numpy as np
    from hf_summary import HFSummaryWriter

    repo_id, logdir, options = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    writer = HFSummaryWriter(repo_id, logdir=logdir, commit_every=60, **options)
    out = sys.__stdout__
    step = 0

    def reply(**fields):
        out.write(json.dumps(fields) + "\\n")
        out.flush()

    for line in sys.stdin:
        command, *args = line.split()
        if command == "log":  # log <steps> <histogram size>
            for _ in range(int(args[0])):
                writer.add_scalar("loss", step * 0.5 + 0.25, step)
                if int(args[1]):
                    writer.add_histogram("weights", np.random.default_rng(step).normal(size=int(args[1])), step)
                step += 1
            writer.flush()
            reply(step=step)
        elif command == "push":  # push <timeout>
            try:
                info = writer.scheduler.trigger(timeout=float(args[0])).result()
            except Exception as error:
                reply(ok=False, error=repr(error))
            else:
                reply(ok=True, commit=info is not None)
        elif command == "close":
            writer.close()
            reply(closed=True)
            break
""")


@pytest.fixture
def xet_hub(tmp_path: Path) -> Iterator[LocalHub]:
    with LocalHub(tmp_path / "hub", xet=True) as hub:
        yield hub


def xet_env(hub: LocalHub, home: Path, **extra: str) -> dict[str, str]:
    """A user's environment with Xet on, pointed at `hub`, with its own HF_HOME and Xet cache under `home`.

    Progress bars are NOT switched off: whatever huggingface_hub or hf_xet would draw, they draw.
    """
    drop = {"HF_HUB_DISABLE_XET", "HF_HUB_DISABLE_PROGRESS_BARS", "HF_HUB_OFFLINE", "TQDM_DISABLE"}
    env = {name: value for name, value in os.environ.items() if name not in drop}
    env.update(hub.env(xet=True))
    env.update(HF_HOME=str(home / "hf_home"), HF_XET_CACHE=str(home / "xet_cache"), **extra)
    return env


class Driver:
    """A training process with an `HFSummaryWriter` (Xet on), driven command by command."""

    def __init__(self, hub: LocalHub, repo_id: str, logdir: Path, home: Path, env: dict[str, str] | None = None,
                 **options: Any) -> None:
        self.logdir = logdir
        self.stderr_path = home / "driver.stderr"
        home.mkdir(parents=True, exist_ok=True)
        options.setdefault("crash_upload", False)
        with open(self.stderr_path, "w") as stderr:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _DRIVER, repo_id, str(logdir), json.dumps(options)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, text=True,
                env=xet_env(hub, home, **(env or {})))

    def ask(self, command: str, timeout: float = 180) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        assert ready, f"no answer to {command!r} in {timeout} s; stderr: {self.stderr()[-3000:]}"
        line = self.proc.stdout.readline()
        assert line, f"the driver ended on {command!r}; stderr: {self.stderr()[-3000:]}"
        return json.loads(line)

    def log(self, steps: int, histogram: int = 0) -> int:
        return int(self.ask(f"log {steps} {histogram}")["step"])

    def push(self, timeout: float = 120) -> dict[str, Any]:
        return self.ask(f"push {timeout}", timeout=timeout + 60)

    def close(self) -> None:
        assert self.ask("close", timeout=180) == {"closed": True}
        assert self.proc.wait(timeout=60) == 0, self.stderr()[-3000:]

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def printed(self) -> list[str]:
        """What the run printed, less the one notice that logging waited for a full shared ring: a burst of 10 KB
        histograms with no training between them can fill it on a loaded machine, and that is about logging, not
        the Hub (the run must print nothing because of the Hub)."""
        return [line for line in self.stderr().splitlines() if not line.startswith("Logging waits: the shared memory")]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)


@pytest.fixture
def drivers() -> Iterator[list[Driver]]:
    started: list[Driver] = []
    yield started
    for driver in started:
        driver.kill()


def read_back(hub: LocalHub, repo_id: str, logdir: Path, dest: Path) -> EventAccumulator:
    """The run as TensorBoard reads it from the Hub, every event kept (no purge: a value sent twice shows twice)."""
    acc = EventAccumulator(str(download_run(hub, repo_id, f"tensorboard/{logdir.name}", dest)),
                           size_guidance=SIZE_GUIDANCE, purge_orphaned_data=False)
    acc.Reload()
    return acc


def assert_every_value_once(acc: EventAccumulator, steps: int) -> None:
    assert [(e.step, e.value) for e in acc.Scalars("loss")] == [(s, s * 0.5 + 0.25) for s in range(steps)]


def assert_disk_is_on_hub(hub: LocalHub, repo_id: str, logdir: Path) -> None:
    files = hub.repo_files(repo_id)
    for path in sorted(logdir.glob("*tfevents*")):
        valid = path.read_bytes()[: scan_records(path).valid_size]
        assert files.get(f"tensorboard/{logdir.name}/{path.name}") == valid, path.name


def assert_xet_only(hub: LocalHub) -> None:
    stats = hub.stats
    assert stats.lfs_uploads == 0, stats
    assert stats.xet_xorbs > 0 and stats.xet_shards > 0, stats


# ---------------------------------------------------------------------------------------------------- (a) the path


def test_a_run_with_several_pushes_reaches_the_hub_through_xet_only(xet_hub: LocalHub, tmp_path: Path,
                                                                    drivers: list[Driver]) -> None:
    repo_id, logdir = f"{xet_hub.user}/xet-several", tmp_path / "run1"
    run = Driver(xet_hub, repo_id, logdir, tmp_path / "proc", max_file_size=300_000)
    drivers.append(run)
    commits = []
    for _ in range(4):
        steps = run.log(400, histogram=100)  # about 200 KB a push: the file rolls, and grows between pushes
        answer = run.push()
        assert answer["ok"], answer
        commits.append(answer["commit"])
        assert_disk_is_on_hub(xet_hub, repo_id, logdir)  # what the push returned for is on the branch
    steps = run.log(100, histogram=100)  # left for the final push
    run.close()

    assert commits == [True] * 4
    assert_xet_only(xet_hub)
    assert_disk_is_on_hub(xet_hub, repo_id, logdir)
    acc = read_back(xet_hub, repo_id, logdir, tmp_path / "dl")
    assert_every_value_once(acc, steps)
    assert [e.step for e in acc.Histograms("weights")] == list(range(steps))
    for path in logdir.glob("*tfevents*"):  # every event file went up as a Xet file, not as legacy LFS
        assert xet_hub.xet_hash(repo_id, f"tensorboard/{logdir.name}/{path.name}") is not None
    assert run.printed() == []


# ---------------------------------------------------------------------------------------------------- (b) silence

_SILENT_RUN = textwrap.dedent("""
    import json, sys
    from hf_summary import HFSummaryWriter

    repo_id, logdir, report, user_upload = sys.argv[1:5]
    results = []
    writer = HFSummaryWriter(repo_id, logdir=logdir, commit_every=60, crash_upload=False, max_file_size=100_000)
    for push in range(3):
        for step in range(push * 2000, (push + 1) * 2000):
            writer.add_scalar("loss", step * 0.5 + 0.25, step)
        results.append(writer.scheduler.trigger().result() is not None)
    results.append(writer.scheduler.trigger().result() is None)  # nothing new: nothing sent
    writer.close()
    with open(report, "w") as f:
        json.dump(results, f)
    if user_upload:  # the user's own upload, in the main thread, after ours: huggingface_hub draws its bars
        sys.stderr.write("USER-UPLOAD\\n")
        sys.stderr.flush()
        from huggingface_hub import HfApi
        HfApi().upload_file(path_or_fileobj=user_upload, path_in_repo="user/file.bin", repo_id=repo_id)
""")


def _run_on_pty(argv: list[str], env: dict[str, str], timeout: float) -> tuple[int, bytes]:
    """Run `argv` with a pseudo-terminal as its stdout and stderr (what a person's terminal is); its output."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=env, close_fds=True)
    os.close(slave)
    output = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], deadline - time.monotonic())
            if not ready:
                break
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every copy of the slave side is closed, the child is gone
                break
            if not data:
                break
            output += data
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    return proc.wait(timeout=30), output


@pytest.mark.parametrize("terminal", ["pipes", "pty"])
def test_background_pushes_print_nothing(xet_hub: LocalHub, tmp_path: Path, terminal: str) -> None:
    repo_id, logdir, report = f"{xet_hub.user}/xet-silent-{terminal}", tmp_path / "run1", tmp_path / "report.json"
    user_file = tmp_path / "user.bin"
    user_file.write_bytes(os.urandom(300_000))
    env = xet_env(xet_hub, tmp_path / "proc")
    argv = [sys.executable, "-c", _SILENT_RUN, repo_id, str(logdir), str(report), str(user_file)]
    if terminal == "pty":
        code, raw = _run_on_pty(argv, env, timeout=300)
    else:
        proc = subprocess.run(argv, env=env, capture_output=True, timeout=300)
        code, raw = proc.returncode, proc.stdout + proc.stderr
    output = raw.decode(errors="replace")
    assert code == 0, output[-3000:]
    assert json.loads(report.read_text()) == [True, True, True, True]

    ours, marker, user = output.partition("USER-UPLOAD")
    assert marker, output[-3000:]
    assert ours == "", ours[-3000:]  # three pushes and a final one, through Xet: not a character
    # The harness sees bars where there are some: the user's own upload, in the same process, draws them.
    assert "Processing Files" in user, user[-3000:]
    assert_xet_only(xet_hub)
    assert xet_hub.stats.commits >= 4  # three pushes (the final push had nothing) and the user's upload


# ---------------------------------------------------------------------------------------------------- (c) companion

_KILLED = textwrap.dedent("""
    import sys, time
    from hf_summary import HFSummaryWriter
    from hf_summary import companion

    repo_id, logdir = sys.argv[1:3]
    writer = HFSummaryWriter(repo_id, logdir=logdir, commit_every=60, max_file_size=50_000)
    step = 0

    def log(n):
        global step
        for _ in range(n):
            writer.add_scalar("loss", step * 0.5 + 0.25, step)
            step += 1

    log(2000)
    writer.scheduler.trigger().result()  # the live run's only push: commit_every is an hour
    log(2000)
    writer.flush()
    print("ready", companion.current_pid(), flush=True)
    while True:  # killed while logging: the last record on disk may be half-written
        log(100)
        time.sleep(0.001)
""")


def test_a_killed_runs_tail_arrives_through_xet(xet_hub: LocalHub, tmp_path: Path) -> None:
    repo_id, logdir = f"{xet_hub.user}/xet-killed", tmp_path / "run1"
    stderr = tmp_path / "training.stderr"
    with open(stderr, "w") as err:
        proc = subprocess.Popen([sys.executable, "-c", _KILLED, repo_id, str(logdir)], stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=err, text=True, env=xet_env(xet_hub, tmp_path / "proc"))
    try:
        assert proc.stdout is not None
        words = proc.stdout.readline().split()
        assert words and words[0] == "ready", stderr.read_text()
        companion_pid = int(words[1])
        before_kill = xet_hub.stats
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    log_file = logdir / ".hf_summary" / companion.LOG_NAME
    wait_until(lambda: log_file.exists() and "Pushed" in log_file.read_text(), timeout=120,
               what="the companion's push recorded")
    assert_disk_is_on_hub(xet_hub, repo_id, logdir)
    after = xet_hub.stats
    assert after.lfs_uploads == 0, after
    assert after.xet_shards > before_kill.xet_shards and after.xet_xorbs > before_kill.xet_xorbs  # the tail: Xet
    acc = read_back(xet_hub, repo_id, logdir, tmp_path / "dl")
    steps = [e.step for e in acc.Scalars("loss")]
    assert steps == list(range(len(steps))) and len(steps) >= 4000  # every step once, in order
    assert stderr.read_text() == ""
    wait_until(lambda: _exited(companion_pid), timeout=60, what="the companion exits after its push")


def _exited(pid: int) -> bool:
    import psutil

    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)  # of a PID 1 that does not reap
    except psutil.NoSuchProcess:
        return True


# ---------------------------------------------------------------------------------------------------- (d) sync

_OFFLINE_RUN = textwrap.dedent("""
    import sys
    from hf_summary import LocalSummaryWriter

    with LocalSummaryWriter(sys.argv[1]) as writer:
        for step in range(int(sys.argv[2]), int(sys.argv[3])):
            writer.add_scalar("loss", step * 0.5 + 0.25, step)
""")


def test_sync_of_an_offline_run_goes_through_xet(xet_hub: LocalHub, tmp_path: Path) -> None:
    repo_id, logdir, steps = f"{xet_hub.user}/xet-sync", tmp_path / "run1", 12_000
    env = xet_env(xet_hub, tmp_path / "proc")
    for first, end in ((0, steps // 2), (steps // 2, steps)):  # a run resumed: two processes, two files
        subprocess.run([sys.executable, "-c", _OFFLINE_RUN, str(logdir), str(first), str(end)], env=env, check=True,
                       timeout=120)
    assert len(list(logdir.glob("*tfevents*"))) == 2  # one commit of several Xet files
    assert xet_hub.stats.requests == 0  # offline: the Hub never heard of it

    sync = subprocess.run([sys.executable, "-m", "hf_summary.cli", "sync", str(logdir), repo_id], env=env,
                          capture_output=True, text=True, timeout=300)
    assert sync.returncode == 0, sync.stderr[-3000:]
    assert_xet_only(xet_hub)
    assert_disk_is_on_hub(xet_hub, repo_id, logdir)
    assert_every_value_once(read_back(xet_hub, repo_id, logdir, tmp_path / "dl"), steps)

    again = subprocess.run([sys.executable, "-m", "hf_summary.cli", "sync", str(logdir), repo_id], env=env,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert xet_hub.stats.xet_shards == 1 and xet_hub.stats.commits == 1  # nothing pending: nothing sent again


# ---------------------------------------------------------------------------------------------------- (e) faults


def test_faults_on_the_xet_path_lose_nothing_and_send_nothing_twice(xet_hub: LocalHub, tmp_path: Path,
                                                                    drivers: list[Driver]) -> None:
    repo_id, logdir = f"{xet_hub.user}/xet-faults", tmp_path / "run1"
    # hf_xet retries a failed request after 3 s, then 6, 12...: a tenth of that keeps the test short.
    run = Driver(xet_hub, repo_id, logdir, tmp_path / "proc", env={"HF_XET_CLIENT_RETRY_BASE_DELAY": "300ms"},
                 max_file_size=100_000)
    drivers.append(run)
    assert run.push()["ok"]  # the repo exists before the faults (creating it is not what is tested)
    xet_hub.set_faults(0.3, kinds=("500", "503", "429", "drop", "drop_after"), paths=[CAS, COMMIT], seed=7)
    outcomes, rounds = [], 3
    for _ in range(rounds):
        steps = run.log(1500, histogram=20)
        outcomes.append(run.push(timeout=120)["ok"])  # a push may fail: the next one sends what it did not
    faults = xet_hub.stats.faults_injected
    xet_hub.clear_faults()
    steps = run.log(100)
    assert run.push()["ok"]
    run.close()

    assert faults >= 5, xet_hub.stats  # the faults were there, on the Xet path and on commits
    assert_xet_only(xet_hub)
    assert_disk_is_on_hub(xet_hub, repo_id, logdir)
    acc = read_back(xet_hub, repo_id, logdir, tmp_path / "dl")
    assert_every_value_once(acc, steps)
    assert [e.step for e in acc.Histograms("weights")] == list(range(1500 * rounds))
    assert run.printed() == []
    print(f"pushes under faults: {outcomes}, faults injected: {faults}")


# ---------------------------------------------------------------------------------------------------- (f) lost CAS


def _restart_with_an_empty_cas(hub: LocalHub, tmp_path: Path) -> LocalHub:
    """The same Hub (repos, history) at the same address, its CAS back on an empty data folder."""
    port = int(hub.endpoint.rsplit(":", 1)[1])
    hub.stop()
    shutil.rmtree(hub.root / "xet")
    return LocalHub(hub.root, port=port, xet=True).start()


def test_a_cas_that_lost_its_data_is_recovered_from_by_the_next_push(xet_hub: LocalHub, tmp_path: Path,
                                                                     drivers: list[Driver]) -> None:
    repo_id, logdir = f"{xet_hub.user}/xet-lost-cas", tmp_path / "run1"
    run = Driver(xet_hub, repo_id, logdir, tmp_path / "proc", max_file_size=100_000_000)
    drivers.append(run)
    run.log(1000, histogram=200)  # about 3 MB: many chunks, in the CAS and in the client's shard cache once sent
    assert run.push()["ok"]
    (events,) = logdir.glob("*tfevents*")  # the file still growing: its next push re-sends its prefix
    first = xet_hub.stats.xet_xorb_bytes
    hub = _restart_with_an_empty_cas(xet_hub, tmp_path)
    try:
        steps = run.log(100, histogram=200)
        # The client remembers the chunks of the file's first megabytes: as is, it sends a shard naming xorbs the CAS
        # no longer has, which the CAS refuses, at this push and every later one.
        answer = run.push(timeout=120)
        assert answer["ok"], answer
        assert list(logdir.glob("*tfevents*")) == [events]  # the same file, grown: the case dedup applies to
        assert_disk_is_on_hub(hub, repo_id, logdir)
        assert hub.stats.xet_xorb_bytes > first, (first, hub.stats)  # the content went again, whole
        steps = run.log(100)
        assert run.push()["ok"]
        run.close()
        assert_xet_only(hub)
        assert_every_value_once(read_back(hub, repo_id, logdir, tmp_path / "dl"), steps)
        assert run.printed() == []
    finally:
        hub.stop()


# ---------------------------------------------------------------------------------------------------- (g) token


def test_an_expiring_xet_token_is_refreshed_during_a_run(tmp_path: Path, drivers: list[Driver]) -> None:
    with LocalHub(tmp_path / "hub", xet=True, xet_token_ttl=2.0) as hub:
        # Every CAS request waits: a push's uploads outlive its token.
        hub.set_faults(latency=0.25, paths=[CAS])
        repo_id, logdir = f"{hub.user}/xet-token", tmp_path / "run1"
        run = Driver(hub, repo_id, logdir, tmp_path / "proc", max_file_size=10_000_000)
        drivers.append(run)
        for _ in range(2):
            steps = run.log(600, histogram=200)
            started = time.monotonic()
            answer = run.push()
            assert answer["ok"] and answer["commit"], answer
            assert time.monotonic() - started > 2.0  # the push outlived the token it started with
        hub.clear_faults()  # the final push (at close) is not what is tested: it need not wait
        run.close()
        stats = hub.stats
        assert stats.xet_tokens > stats.commits, stats  # refreshed within pushes, not only one per push
        assert_xet_only(hub)
        assert_every_value_once(read_back(hub, repo_id, logdir, tmp_path / "dl"), steps)
        assert run.printed() == []
