"""Reliability and security: faults, outages, crashes, signals, load, secrets and boundaries."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from hf_summary import HFSummaryWriter
from hf_summary.events.records import scan_records
from hf_summary.testing import LocalHub

from .helpers import download_run, scalars, wait_until

# The companion process's own life is checked here: no companion shared by the module (conftest.py).
OWN_COMPANION = True


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hf_summary.cli", *args], capture_output=True, text=True,
                          timeout=300)


def test_faulty_hub_loses_nothing_and_never_reaches_the_loop(hub: LocalHub, repo_id: str, logdir: Path,
                                                              tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="hf_summary")  # retries are logged at INFO and DEBUG, never printed
    writer = HFSummaryWriter(repo_id, logdir=str(logdir), commit_every=60, max_file_size=20_000)
    hub.set_faults(0.3, latency=0.005, kinds=("500", "503", "429", "drop"), retry_after=1, seed=7)
    futures, steps = [], 6000
    for step in range(steps):
        writer.add_scalar("loss", float(step), step)  # an exception here fails the test
        if step % 1000 == 999:
            futures.append(writer.scheduler.trigger())
    for future in futures:
        future.exception(timeout=300)  # waited on; a failed push leaves its files pending, it does not raise here
    assert hub.stats.faults_injected > 0
    hub.clear_faults()
    assert writer.scheduler.trigger().exception(timeout=120) is None
    writer.close()
    run = download_run(hub, repo_id, f"tensorboard/{logdir.name}", tmp_path / "dl")
    assert [s for s, _ in scalars(run, "loss")] == list(range(steps))
    # huggingface_hub retries most failed requests itself (dozens of requests, 30 % of them fail): its warnings
    # about our threads' requests come to our log, on our Hub client's logger at DEBUG, and go nowhere else.
    routed = [r for r in caplog.records if r.getMessage().startswith("huggingface_hub: ")]
    assert routed
    assert {(r.name, r.levelname) for r in routed} == {("hf_summary.upload.hooks", "DEBUG")}
    assert [r.getMessage() for r in caplog.records
            if r.name.startswith("huggingface_hub") and r.levelno < logging.ERROR] == []  # none printed
    # What huggingface_hub gives up on, our retry policy retries: at INFO on its own logger, bounded.
    ours = [r for r in caplog.records if r.name == "hf_summary.upload.retry"]
    assert all(r.levelname == "INFO" and "; retry " in r.getMessage() for r in ours), [r.getMessage() for r in ours]
    assert len(ours) <= 6 * (len(futures) + 1)  # at most `attempts` per push


def test_outage_at_the_end_close_returns_and_sync_completes(hub: LocalHub, repo_id: str, logdir: Path,
                                                            tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    writer = HFSummaryWriter(repo_id, logdir=str(logdir), commit_every=60, close_timeout=2)
    for step in range(200):
        writer.add_scalar("loss", float(step), step)
    hub.set_faults(1.0, kinds=("503",))
    closing = threading.Thread(target=writer.close)
    closing.start()
    closing.join(timeout=120)  # a bound for a loaded machine: close_timeout (2 s) is what makes it return
    assert not closing.is_alive()  # close() returned while the Hub still refused, and raised nothing
    assert any("hf-summary sync" in r.getMessage() for r in caplog.records)  # it gave up, and said how to finish
    files = list(logdir.glob("*tfevents*"))
    assert files and all(scan_records(p).valid_size == p.stat().st_size for p in files)
    hub.clear_faults()
    result = _cli("sync", str(logdir), repo_id)
    assert result.returncode == 0, result.stderr
    run = download_run(hub, repo_id, f"tensorboard/{logdir.name}", tmp_path / "dl")
    assert [s for s, _ in scalars(run, "loss")] == list(range(200))


def test_user_exception_is_not_hidden_by_a_failed_final_push(hub: LocalHub, repo_id: str, logdir: Path) -> None:
    hub.pause()
    with pytest.raises(KeyError, match="the user's own"):
        with HFSummaryWriter(repo_id, logdir=str(logdir), close_timeout=1, hub_timeout=1) as writer:
            writer.add_scalar("x", 1.0, 0)
            raise KeyError("the user's own")


_SCRIPT = textwrap.dedent("""
    import sys, time
    from hf_summary import HFSummaryWriter
    writer = HFSummaryWriter(sys.argv[1], logdir=sys.argv[2], commit_every=60, push_on_sigterm=sys.argv[3] == "1")
    for step in range(500):
        writer.add_scalar("loss", float(step), step)
    if sys.argv[4] == "wait":
        print("ready", flush=True)
        # A training loop's main thread runs Python code again and again; one blocked for good in a read() would
        # never run a handler for a SIGTERM that the kernel hands to another thread (numpy's BLAS threads do not
        # block signals, ours do), so the test waits as a loop does.
        while True:
            time.sleep(0.05)
""")


def test_forgotten_close_is_pushed_by_the_exit_hook(hub: LocalHub, repo_id: str, logdir: Path,
                                                    tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-c", _SCRIPT, repo_id, str(logdir), "0", "exit"], check=True, timeout=120)
    run = download_run(hub, repo_id, f"tensorboard/{logdir.name}", tmp_path / "dl")
    assert [s for s, _ in scalars(run, "loss")] == list(range(500))


def test_sigterm_makes_the_final_push(hub: LocalHub, repo_id: str, logdir: Path, tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", _SCRIPT, repo_id, str(logdir), "1", "wait"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == -signal.SIGTERM  # still ends the way a pre-empted job should
    run = download_run(hub, repo_id, f"tensorboard/{logdir.name}", tmp_path / "dl")
    assert [s for s, _ in scalars(run, "loss")] == list(range(500))


_SOAK = textwrap.dedent("""
    import json, sys, threading, time
    import numpy as np, psutil
    from hf_summary import HFSummaryWriter
    process = psutil.Process()
    writer = HFSummaryWriter(sys.argv[1], logdir=sys.argv[2], commit_every=0.02, max_file_size=256 * 1024)
    samples, step, batches, commits = [], 0, 0, 0
    for turn in range(int(sys.argv[3])):
        push = writer.scheduler.next_push()  # the interval's push
        while not push.done():  # the training loop goes on while it runs
            for _ in range(50):
                writer.add_scalar("loss", float(step), step)
                step += 1
            batches += 1
            if batches % 100 == 0:
                writer.add_histogram("h", np.random.default_rng(step).normal(size=100), step)
            time.sleep(0.005)  # a training step
        commits += push.result() is not None
        samples.append((process.memory_info().rss, threading.active_count()))
    writer.close()
    print(json.dumps({"steps": step, "samples": samples, "commits": commits}))
""")


def test_soak_memory_and_threads_stay_flat(hub: LocalHub, repo_id: str, logdir: Path, tmp_path: Path) -> None:
    import json

    hub.reset_stats()
    # A process of its own, so that the RSS measured is the writer's, not the in-process server's; measured after
    # each of ten pushes of the interval (every 1.2 s), the training loop logging all along.
    child = subprocess.run([sys.executable, "-c", _SOAK, repo_id, str(logdir), "10"], capture_output=True, text=True,
                           timeout=600)
    assert child.returncode == 0, child.stderr
    result = json.loads(child.stdout.strip().splitlines()[-1])
    samples = result["samples"]
    assert len(samples) == 10 and result["commits"] == 10  # each push had new steps, and committed them
    assert hub.stats.commits >= 10
    warm, end = samples[len(samples) // 3], samples[-1]
    assert end[0] <= warm[0] * 1.10, samples
    assert end[1] == warm[1], samples
    run = download_run(hub, repo_id, f"tensorboard/{logdir.name}", tmp_path / "dl")
    assert [s for s, _ in scalars(run, "loss")] == list(range(result["steps"]))


def test_token_never_leaks(hub: LocalHub, repo_id: str, logdir: Path, caplog: pytest.LogCaptureFixture,
                           capfd: pytest.CaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    secret = "hf_secret_token_for_leak_test_0987654321"
    hub.add_token(secret, hub.user)
    writer = HFSummaryWriter(repo_id, logdir=str(logdir), token=secret, repo_private=True, close_timeout=3)
    writer.add_scalar("a", 1.0, 0)
    writer.scheduler.trigger().result(timeout=60)
    hub.set_faults(1.0, kinds=("500",))
    error = writer.scheduler.trigger().exception(timeout=120)
    writer.close()
    hub.clear_faults()
    texts = [repr(writer), str(error), writer.sync_command(), caplog.text, *capfd.readouterr()]
    texts += [p.read_bytes().decode("latin-1") for p in logdir.rglob("*") if p.is_file()]
    assert all(secret not in text for text in texts)
    assert hub.is_private(repo_id)


def test_boundaries_symlinks_state_and_ignored_files(hub: LocalHub, repo_id: str, logdir: Path,
                                                     tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.tfevents.1").write_bytes(b"not for the hub")
    logdir.mkdir()
    os.symlink(outside / "secret.tfevents.1", logdir / "link.tfevents.1")
    os.symlink(outside, logdir / "linkdir")
    (logdir / "skip.tfevents.1.tmp").write_bytes(b"temporary")
    with HFSummaryWriter(repo_id, logdir=str(logdir), repo_ignore_patterns=["*.tmp"]) as writer:
        writer.add_scalar("a", 1.0, 0)
    files = [p for p in hub.repo_files(repo_id) if p.startswith("tensorboard/")]
    assert files and all(".hf_summary" not in p and "link" not in p and ".tmp" not in p for p in files)
    assert all(b"not for the hub" not in data for data in hub.repo_files(repo_id).values())


def test_unwritable_logdir_is_a_clear_error(hub: LocalHub, repo_id: str, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    before = set(threading.enumerate())  # an earlier test's writer may still be ending its own threads
    with pytest.raises(OSError, match="Pass a logdir you can write to"):
        HFSummaryWriter(repo_id, logdir=str(blocker / "run"))
    # None of ours left behind (the local Hub's own request threads may still be finishing an answer).
    assert [t.name for t in set(threading.enumerate()) - before if t.name.startswith("hf_summary-")] == []


def test_a_hub_that_never_answers_bounds_trigger_and_close(hub: LocalHub, repo_id: str, logdir: Path,
                                                           tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from hf_summary import PushError

    writer = HFSummaryWriter(repo_id, logdir=str(logdir), commit_every=60, push_timeout=2, close_timeout=2)
    for step in range(100):
        writer.add_scalar("loss", float(step), step)
    hub.set_faults(1.0, kinds=("hang",))  # connections are accepted, requests never answered
    try:
        error = writer.scheduler.trigger().exception(timeout=60)
        assert isinstance(error, PushError) and writer.sync_command() in error.sync_command
        closing = threading.Thread(target=writer.close)
        closing.start()
        closing.join(timeout=60)
        assert not closing.is_alive()  # close() returned within its bound, and raised nothing (the thread ended)
        assert any("hf-summary sync" in r.getMessage() for r in caplog.records)
    finally:
        hub.clear_faults()
    result = _cli("sync", str(logdir), repo_id)
    assert result.returncode == 0, result.stderr
    run = download_run(hub, repo_id, f"tensorboard/{logdir.name}", tmp_path / "dl")
    assert [s for s, _ in scalars(run, "loss")] == list(range(100))


_QUIET_TRAINING = textwrap.dedent("""
    import sys
    import numpy as np
    from hf_summary import HFSummaryWriter
    with HFSummaryWriter(sys.argv[1], logdir=sys.argv[2], commit_every=0.01) as writer:
        for push in range(4):
            for step in range(push * 50, push * 50 + 50):
                writer.add_scalar("loss", 1.0 / (step + 1), step)
                writer.add_scalars("lr", {"encoder": 0.1, "head": 0.2}, step)  # several files in one commit
            writer.add_histogram("weights", np.arange(100.0), push)
            writer.scheduler.next_push().exception(timeout=120)  # a periodic push (failed or not), not a trigger
""")


@pytest.mark.parametrize("failure_rate", [0.0, 0.15])
def test_periodic_pushes_print_nothing_in_the_training_log(hub: LocalHub, repo_id: str, logdir: Path,
                                                           tmp_path: Path, failure_rate: float) -> None:
    # With faults, requests are retried (by huggingface_hub and by us): still nothing printed.
    hub.set_faults(failure_rate, kinds=("500", "503", "429"), seed=5)
    result = subprocess.run([sys.executable, "-c", _QUIET_TRAINING, repo_id, str(logdir)], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert (result.stdout, result.stderr) == ("", "")
    assert failure_rate == 0 or hub.stats.faults_injected > 0
    hub.clear_faults()
    assert len([c for c in hub.commits(repo_id) if any("tensorboard/" in f for f in c.get("files", []))]) >= 4
    run = download_run(hub, repo_id, f"tensorboard/{logdir.name}", tmp_path / "dl")
    assert [s for s, _ in scalars(run, "loss")] == list(range(200))


def _blocked_signals(thread: threading.Thread) -> int:
    status = Path(f"/proc/self/task/{thread.native_id}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigBlk:")), 16)


@pytest.mark.parametrize("host", ["companion", "in-process"])
def test_background_threads_leave_signals_to_the_main_thread(hub: LocalHub, repo_id: str, logdir: Path,
                                                             host: str) -> None:
    # A SIGTERM the kernel hands to one of our threads would never wake a main thread blocked in a read, and
    # push_on_sigterm (or the user's own handler) would not run: our threads block the asynchronous signals. The
    # companion runs the pushes; without it (ring_size=None) the schedule's threads are this process's.
    ring_size = {} if host == "companion" else {"ring_size": None}
    with HFSummaryWriter(repo_id, logdir=str(logdir), commit_every=60, push_timeout=60, **ring_size) as writer:
        hub.set_faults(latency=1.0)
        pending = writer.scheduler.trigger()  # starts the push's deadline timer thread, where the push runs
        ours = [t for t in threading.enumerate() if t.name.startswith("hf_summary-")]
        names = {t.name for t in ours}
        expected = {"hf_summary-companion-reader", "hf_summary-companion-reaper"} if host == "companion" else \
            {"hf_summary-committer", "hf_summary-push-deadline"}
        assert expected <= names
        for thread in ours:
            mask = _blocked_signals(thread)
            assert all(mask >> (sig - 1) & 1 for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)), thread.name
        assert not _blocked_signals(threading.main_thread()) >> (signal.SIGTERM - 1) & 1
        hub.clear_faults()
        pending.exception(timeout=60)


def test_a_commit_quota_spent_for_a_minute_is_waited_for_not_hammered(hub: LocalHub, repo_id: str, logdir: Path,
                                                                        tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # A quota spent for longer than the retry policy's cap (30 s: a minute, say) is not retried within the push: the
    # next push waits for it. The cap is 3 s here, so that a window of 10 s is such a quota (the test took a minute).
    import functools

    from hf_summary.upload import pusher
    from hf_summary.upload.retry import RetryPolicy

    monkeypatch.setattr(pusher, "RetryPolicy", functools.partial(RetryPolicy, cap=3.0))
    window = 10.0  # a Hub answering 429 for longer than the cap
    # The schedule in this process (ring_size=None), where the patched policy is.
    writer = HFSummaryWriter(repo_id, logdir=str(logdir), commit_every=0.02, close_timeout=120,  # every 1.2 s
                             ring_size=None)
    assert writer.scheduler.schedule.pusher.retry.cap == 3.0
    try:
        writer.add_scalar("loss", 0.0, 0)
        writer.scheduler.trigger().result(timeout=60)
        hub.reset_stats()
        hub.set_limits(commit_limit=(1, window))  # the next commits get a 429 until the window has passed
        for step in range(1, 200):
            writer.add_scalar("loss", float(step), step)
            if hub.stats.commits:  # the quota freed a slot and the writer used it
                break
            writer.scheduler.next_push().exception(timeout=window + 60)
        assert hub.stats.commits >= 1
        # No busy retry: during the window the commit endpoint was asked a handful of times, not every 1.2 s (8 times).
        assert hub.stats.rate_limited <= 3, hub.stats
    finally:
        hub.set_limits()
        writer.close()
    run = download_run(hub, repo_id, f"tensorboard/{logdir.name}", tmp_path / "dl")
    assert [s for s, _ in scalars(run, "loss")] == list(range(step + 1))


@pytest.mark.parametrize("token", ["hf_secret_token_with_newline_0987654321\n", "hf secret", "hf_tøken"])
def test_a_malformed_token_is_refused_at_the_call_and_never_printed(hub: LocalHub, repo_id: str, logdir: Path,
                                                                     token: str, capfd: pytest.CaptureFixture) -> None:
    with pytest.raises(ValueError, match="token contains .* at position") as refused:
        HFSummaryWriter(repo_id, logdir=str(logdir), token=token)
    assert token.strip() not in str(refused.value) and not logdir.exists()
    result = _cli("sync", str(logdir.parent), repo_id, "--token", token)
    assert result.returncode == 2 and "--token contains" in result.stderr
    assert token.strip() not in result.stderr + result.stdout + "".join(capfd.readouterr())


def test_token_looking_text_is_redacted_from_what_we_log() -> None:
    from hf_summary.upload.errors import redact

    text = "Illegal header value b'Bearer hf_abcdefghijklmnop\\n' sent with hf_zyxwvutsrqponmlk"
    assert redact(text) == "Illegal header value b'Bearer ***' sent with ***"


_INTERRUPTED_CLOSE = textwrap.dedent("""
    import signal, sys
    # Python's own Ctrl-C handler, as in a terminal: a command started in the background by a shell without job
    # control (a CI script's `&`) inherits SIGINT ignored, and Python then installs no handler.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from hf_summary import HFSummaryWriter
    writer = HFSummaryWriter(sys.argv[1], logdir=sys.argv[2], commit_every=60, close_timeout=60)
    writer.add_scalar("loss", 1.0, 0)
    print("ready", flush=True)
    sys.stdin.readline()  # the test makes the Hub hang, then lets us close
    try:
        writer.close()  # the test sends Ctrl-C once the final push waits for the Hub
    except KeyboardInterrupt:
        print("interrupted", flush=True)
""")


def test_ctrl_c_during_the_final_push_says_how_to_finish_it(hub: LocalHub, repo_id: str, logdir: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", _INTERRUPTED_CLOSE, repo_id, str(logdir)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        hub.set_faults(1.0, kinds=("hang",))
        held = hub.stats.faults_injected
        proc.stdin.write("close\n")
        proc.stdin.flush()
        # A timer in the child could fire before the push starts (a loaded machine), or after: the test waits.
        wait_until(lambda: hub.stats.faults_injected > held, timeout=60, what="the final push to reach the Hub")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        hub.clear_faults()
        if proc.poll() is None:
            proc.kill()
    assert "interrupted" in out, err  # the KeyboardInterrupt reached the user
    assert "was interrupted" in err and f"hf-summary sync {logdir}" in err
