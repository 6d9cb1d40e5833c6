"""The committer's schedule, driven by a fake clock and a fake Hub client: no server, no real sleeps."""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from hf_summary.events.records import frame_record
from hf_summary.upload.committer import Committer, CommitterStopped, PushError
from hf_summary.upload.hub import RepoTarget
from hf_summary.upload.retry import RetriesExhausted, RetryPolicy
from hf_summary.upload.spec import UploadSpec
from hf_summary.upload.uploader import Uploader


class FakeClock:
    """A monotonic clock that a wait moves forward instead of sleeping; it records every wait."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.waits: list[float] = []

    def __call__(self) -> float:
        return self.now

    def wait(self, event: threading.Event, timeout: float) -> bool:
        if event.is_set():
            return True
        self.waits.append(timeout)
        self.now += timeout
        return event.is_set()


@dataclass
class _Info:
    oid: str


class _Response:
    def __init__(self, status_code: int, headers: dict[str, str]) -> None:
        self.status_code = status_code
        self.headers = headers


class HubError(Exception):
    def __init__(self, status: int, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"HTTP {status}")
        self.response = _Response(status, headers or {})


@dataclass
class FakeClient:
    """Stands in for `HubClient`: counts commits, and fails the next ones with the errors in `failures`."""

    target: RepoTarget = field(default_factory=lambda: RepoTarget("me/run"))
    repo_ready: bool = False
    failures: list[BaseException] = field(default_factory=list)
    commits: list[list[str]] = field(default_factory=list)

    card_pending: bool = False
    history: list[float] = field(default_factory=list)  # ages of the branch's recent commits, as the Hub shows them

    def commit_ages(self, window: float) -> list[float]:
        return [age for age in self.history if age <= window]

    def ensure_repo(self) -> str:
        self.repo_ready = True
        return self.target.repo_id

    def commit(self, operations: list, message: str) -> _Info:
        if self.failures:
            raise self.failures.pop(0)
        self.commits.append([op.path_in_repo for op in operations])
        return _Info(f"commit{len(self.commits)}")

    def squash(self) -> None:
        raise AssertionError("not asked for")


def _log(logdir: Path, n: int) -> None:
    """Append `n` records to the logdir's event file, as a writer would."""
    logdir.mkdir(parents=True, exist_ok=True)
    with open(logdir / "events.out.tfevents.1700000000.host.1.000", "ab") as f:
        for i in range(n):
            f.write(frame_record(f"record {i}".encode()))


def _committer(tmp_path: Path, client: FakeClient, clock: FakeClock, *, every: float = 1.0,
               policy: RetryPolicy | None = None) -> tuple[Committer, Path]:
    logdir = tmp_path / "run"
    _log(logdir, 3)
    committer = Committer(client, every=every, clock=clock, wait=clock.wait,  # type: ignore[arg-type]
                          retry=policy or RetryPolicy(attempts=3, base=1.0, cap=8.0, rng=random.Random(0)))
    committer.join(Uploader(logdir, UploadSpec("me/run")), every=every)
    assert committer.run_once() and clock.waits == [] and client.commits == []  # the join's wake-up: a re-plan
    return committer, logdir


def test_pushes_every_interval_and_only_what_changed(tmp_path: Path) -> None:
    clock, client = FakeClock(), FakeClient()
    committer, logdir = _committer(tmp_path, client, clock, every=2.0)
    assert committer.run_once()
    assert clock.waits == [120.0] and len(client.commits) == 1
    assert committer.run_once()  # nothing new: no commit, and the next wait is a whole interval again
    assert clock.waits == [120.0, 120.0] and len(client.commits) == 1
    assert committer.last_future is not None and committer.last_future.result() is None
    _log(logdir, 1)
    committer.run_once()
    assert len(client.commits) == 2


def test_triggers_before_a_push_share_it(tmp_path: Path) -> None:
    clock, client = FakeClock(), FakeClient()
    committer, _ = _committer(tmp_path, client, clock)
    futures = [committer.trigger() for _ in range(5)]
    assert len({id(f) for f in futures}) == 1
    committer.run_once()
    assert clock.waits == []  # a trigger pushes at once
    assert futures[0].result().oid == "commit1" and len(client.commits) == 1
    assert committer.trigger() is not futures[0]  # a trigger after the push asks for a new one


def test_failed_push_retries_inside_then_backs_off_below_the_interval(tmp_path: Path) -> None:
    clock, client = FakeClock(), FakeClient()
    policy = RetryPolicy(attempts=3, base=1.0, cap=8.0, rng=random.Random(0))
    committer, _ = _committer(tmp_path, client, clock, every=10.0, policy=policy)
    client.failures = [HubError(503) for _ in range(3)]  # every attempt of the first push fails
    future = committer.trigger()
    committer.run_once()
    with pytest.raises(PushError, match="HubError: HTTP 503.*hf-summary sync") as failed:
        future.result()
    assert isinstance(failed.value.__cause__, HubError)
    assert len(clock.waits) == 2 and all(0.5 <= w <= 8.0 for w in clock.waits)  # two retries, jittered
    clock.waits.clear()
    committer.run_once()  # the next push comes after the policy's delay, not after the 600 s interval
    assert clock.waits == [policy.next_push_delay(1, 600.0)] == [8.0]
    assert len(client.commits) == 1
    clock.waits.clear()
    committer.run_once()  # success resets the schedule to the interval
    assert clock.waits == [pytest.approx(600.0)]


def test_retry_after_is_honoured_between_pushes(tmp_path: Path) -> None:
    clock, client = FakeClock(), FakeClient()
    committer, _ = _committer(tmp_path, client, clock, every=10.0,
                              policy=RetryPolicy(attempts=1, base=1.0, cap=8.0))
    client.failures = [HubError(429, {"Retry-After": "42"})]
    committer.run_once()
    clock.waits.clear()
    committer.run_once()
    assert clock.waits == [42.0] and len(client.commits) == 1


def test_a_permanent_error_is_not_retried(tmp_path: Path) -> None:
    clock, client = FakeClock(), FakeClient()
    committer, _ = _committer(tmp_path, client, clock)
    client.failures = [HubError(400)]
    future = committer.trigger()
    committer.run_once()
    error = future.exception()
    assert isinstance(error, PushError) and isinstance(error.__cause__, HubError) and clock.waits == []


def test_a_push_stops_retrying_at_its_deadline(tmp_path: Path) -> None:
    clock, client = FakeClock(), FakeClient()
    committer, _ = _committer(tmp_path, client, clock)
    client.failures = [HubError(503) for _ in range(3)]
    future = committer.trigger(deadline=clock() + 0.1)  # no time for even one retry
    committer.trigger(deadline=None)  # a trigger without a deadline shares the push and keeps the earliest
    committer.run_once()
    error = future.exception()
    assert isinstance(error, PushError) and isinstance(error.__cause__, RetriesExhausted) and clock.waits == []


def test_a_member_asking_for_a_shorter_interval_shortens_the_wait(tmp_path: Path) -> None:
    clock, client = FakeClock(), FakeClient()
    committer, _ = _committer(tmp_path, client, clock, every=10.0)
    other = tmp_path / "other"
    _log(other, 1)
    committer.join(Uploader(other, UploadSpec("me/run")), every=1.0)
    assert committer.every == 1.0
    committer.run_once()  # the join woke the thread to re-plan: no push, no wait
    assert clock.waits == [] and client.commits == []
    committer.run_once()
    assert clock.waits == [60.0] and len(client.commits) == 1 and len(client.commits[0]) == 2


def test_stop_ends_the_real_thread_and_refuses_new_pushes(tmp_path: Path) -> None:
    client = FakeClient()
    committer = Committer(client, every=60.0).start()  # type: ignore[arg-type]
    assert committer.connected.result(timeout=30) == "me/run"
    assert committer.alive
    committer.stop(timeout=30)
    assert not committer.alive and committer.stopped
    assert isinstance(committer.trigger().exception(timeout=1), CommitterStopped)
    assert committer.run_once() is False


def test_next_push_resolves_with_the_scheduled_push(tmp_path: Path) -> None:
    clock, client = FakeClock(), FakeClient()
    committer, _ = _committer(tmp_path, client, clock)
    future = committer.next_push()
    assert committer.next_push() is future and not future.done()
    committer.run_once()  # the interval's push, nobody triggered it
    assert clock.waits == [60.0] and future.result().oid == "commit1"
    later = committer.next_push()
    assert committer.trigger() is later  # a trigger takes the Future already handed out
    committer.stop()
    assert later.result() is None


def test_a_push_the_hub_never_answers_fails_its_future_at_the_deadline(tmp_path: Path) -> None:
    answer = threading.Event()

    class HungClient(FakeClient):
        def commit(self, operations: list, message: str) -> _Info:
            answer.wait(60)  # a Hub that accepts the request and never answers
            return super().commit(operations, message)

    logdir = tmp_path / "run"
    _log(logdir, 1)
    committer = Committer(HungClient(), every=60.0).start()  # type: ignore[arg-type]
    member = committer.join(Uploader(logdir, UploadSpec("me/run")), push_timeout=0.5)
    try:
        error = member.trigger().exception(timeout=30)  # the bound is the Future's, not the HTTP call's
        assert isinstance(error, PushError) and "did not finish within its time limit" in str(error)
        assert error.sync_command == f"hf-summary sync {logdir} me/run"
        assert isinstance(member.trigger(timeout=0.2).exception(timeout=30), PushError)  # still bounded while hung
    finally:
        answer.set()
        committer.stop(timeout=30)
    assert not committer.alive


def test_final_push_progress_appears_only_for_a_slow_push() -> None:
    from concurrent.futures import Future

    from hf_summary.upload.progress import FinalPushProgress

    done: Future = Future()
    done.set_result("fast")
    quick = FinalPushProgress("Final push", quiet_for=30)
    assert quick.wait(done, timeout=60) == "fast" and not quick.shown

    slow: Future = Future()
    threading.Timer(0.3, slow.set_result, ("slow",)).start()
    waited = FinalPushProgress("Final push", quiet_for=0.05)
    assert waited.wait(slow, timeout=60) == "slow" and waited.shown


def test_a_backlog_goes_up_in_bounded_commits_in_name_order_and_resumes(tmp_path: Path) -> None:
    logdir = tmp_path / "week-offline"
    logdir.mkdir()
    for n in range(250):  # a week offline: many closed event files
        (logdir / f"events.out.tfevents.{1700000000 + n}.host.1.000").write_bytes(frame_record(b"r%d" % n))
    clock, client = FakeClock(), FakeClient()
    committer = Committer(client, clock=clock, wait=clock.wait, max_files_per_commit=100,  # type: ignore[arg-type]
                          retry=RetryPolicy(attempts=1))
    committer.join(Uploader(logdir, UploadSpec("me/run")))
    real_commit = client.commit
    calls = {"n": 0}

    def commit_then_fail_the_second(operations: list, message: str) -> _Info:
        calls["n"] += 1
        if calls["n"] == 2:
            raise HubError(400)  # interrupted between the first and the second commit
        return real_commit(operations, message)

    client.commit = commit_then_fail_the_second  # type: ignore[method-assign]
    with pytest.raises(HubError):
        committer.push()
    assert [len(c) for c in client.commits] == [100]
    client.commit = real_commit  # type: ignore[method-assign]
    committer.push()
    assert [len(c) for c in client.commits] == [100, 100, 50]  # the rest, nothing twice
    sent = [path for commit in client.commits for path in commit]
    assert sent == sorted(sent) and len(set(sent)) == 250


def test_a_spent_commit_budget_delays_scheduled_pushes_not_triggered_ones(tmp_path: Path) -> None:
    clock, client = FakeClock(), FakeClient()
    committer, logdir = _committer(tmp_path, client, clock, every=1.0)
    committer.max_commits_per_hour = 2
    client.repo_ready = True
    client.history = [100.0, 200.0]  # other machines' commits, read from the repo's history
    committer.run_once()
    assert clock.waits == [60.0] and client.commits == []  # scheduled push held back: the budget is spent
    clock.waits.clear()
    client.history = []  # the hour of those commits is over
    committer.run_once()
    assert clock.waits == [pytest.approx(3400.0)] and len(client.commits) == 1  # waited for the free slot
    client.history = [10.0, 20.0]
    _log(logdir, 1)
    assert committer.trigger()  # a trigger is not held back
    committer.run_once()
    assert len(client.commits) == 2


def test_a_429_widens_the_interval_and_successes_narrow_it_back(tmp_path: Path) -> None:
    clock, client = FakeClock(), FakeClient()
    committer, logdir = _committer(tmp_path, client, clock, every=1.0,
                                   policy=RetryPolicy(attempts=1, base=1.0, cap=8.0))
    client.failures = [HubError(429, {"Retry-After": "5"})]
    committer.run_once()
    clock.waits.clear()
    committer.run_once()  # retried after Retry-After, succeeded
    assert clock.waits == [8.0] and len(client.commits) == 1
    widened = []
    for _ in range(6):
        _log(logdir, 1)
        clock.waits.clear()
        committer.run_once()
        widened.append(clock.waits[0])
    assert widened[0] > 60.0 and widened == sorted(widened, reverse=True) and widened[-1] < widened[0]
