"""The schedule and the pusher, driven by a fake clock and a fake Hub client: no server, no real sleeps.

The fake client stands in for `HubClient` behind the real `RepoTarget` (it satisfies `targets.repo.RepoClient`), so
that the repo's budget, pacing and chunking are tested with the schedule that uses them.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from hf_summary.events.records import frame_record
from hf_summary.upload.errors import PushError, RetriesExhausted, SchedulerStopped
from hf_summary.upload.hub import RepoRef
from hf_summary.upload.pusher import Pusher
from hf_summary.upload.retry import RetryPolicy
from hf_summary.upload.schedule import Schedule
from hf_summary.upload.spec import UploadSpec
from hf_summary.upload.targets import RepoTarget
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

    repo: RepoRef = field(default_factory=lambda: RepoRef("me/run"))
    repo_ready: bool = False
    failures: list[BaseException] = field(default_factory=list)
    commits: list[list[str]] = field(default_factory=list)
    refuse: str | None = None  # a folder whose files the Hub refuses for good (a 400, as for too many entries)
    fail_on: dict[int, BaseException] = field(default_factory=dict)  # errors by commit call, counted from 1
    calls: int = 0

    card_pending: bool = False
    history: list[float] = field(default_factory=list)  # ages of the branch's recent commits, as the Hub shows them

    history_reads: int = 0

    def commit_ages(self, window: float) -> list[float]:
        self.history_reads += 1
        return [age for age in self.history if age <= window]

    def ensure_repo(self) -> str:
        self.repo_ready = True
        return self.repo.repo_id

    def commit(self, operations: list, message: str) -> _Info:
        self.calls += 1
        if self.calls in self.fail_on:
            raise self.fail_on[self.calls]
        if self.failures:
            raise self.failures.pop(0)
        if self.refuse and any(op.path_in_repo.startswith(self.refuse) for op in operations):
            raise HubError(400)
        self.commits.append([op.path_in_repo for op in operations])
        return _Info(f"commit{len(self.commits)}")

    def commit_count(self) -> int:
        return len(self.commits)

    def squash(self) -> None:
        raise AssertionError("not asked for")


def _log(logdir: Path, n: int) -> None:
    """Append `n` records to the logdir's event file, as a writer would."""
    logdir.mkdir(parents=True, exist_ok=True)
    with open(logdir / "events.out.tfevents.1700000000.host.1.000", "ab") as f:
        for i in range(n):
            f.write(frame_record(f"record {i}".encode()))


def _schedule(client: FakeClient, clock: FakeClock | None = None, *, every: float = 5.0,
              policy: RetryPolicy | None = None, budget: int | None = None, max_files: int = 100) -> Schedule:
    """A schedule of the fake client's repo; on real time when `clock` is None."""
    now = clock or time.monotonic
    target = RepoTarget(client, max_commits_per_hour=budget, max_files_per_commit=max_files, clock=now)
    retry = policy or RetryPolicy(attempts=3, base=1.0, cap=8.0, rng=random.Random(0))
    pusher = Pusher(target, clock=now, retry=retry, wait=clock.wait) if clock else Pusher(target, retry=retry)
    return Schedule(pusher, every=every)


def _committer(tmp_path: Path, client: FakeClient, clock: FakeClock, *, every: float = 1.0,
               policy: RetryPolicy | None = None, budget: int | None = None) -> tuple[Schedule, Path]:
    logdir = tmp_path / "run"
    _log(logdir, 3)
    committer = _schedule(client, clock, every=every, policy=policy, budget=budget)
    committer.join(Uploader(logdir, UploadSpec("me/run")), every=every)
    assert committer.step() and clock.waits == [] and client.commits == []  # the join's wake-up: a re-plan
    return committer, logdir


def test_pushes_every_interval_and_only_what_changed(tmp_path: Path) -> None:
    clock, client = FakeClock(), FakeClient()
    committer, logdir = _committer(tmp_path, client, clock, every=2.0)
    assert committer.step()
    assert clock.waits == [120.0] and len(client.commits) == 1
    assert committer.step()  # nothing new: no commit, and the next wait is a whole interval again
    assert clock.waits == [120.0, 120.0] and len(client.commits) == 1
    assert committer.last_future is not None and committer.last_future.result() is None
    _log(logdir, 1)
    committer.step()
    assert len(client.commits) == 2


def test_triggers_before_a_push_share_it(tmp_path: Path) -> None:
    clock, client = FakeClock(), FakeClient()
    committer, _ = _committer(tmp_path, client, clock)
    futures = [committer.trigger() for _ in range(5)]
    assert len({id(f) for f in futures}) == 1
    committer.step()
    assert clock.waits == []  # a trigger pushes at once
    assert futures[0].result().oid == "commit1" and len(client.commits) == 1
    assert committer.trigger() is not futures[0]  # a trigger after the push asks for a new one


def test_failed_push_retries_inside_then_backs_off_below_the_interval(tmp_path: Path) -> None:
    clock, client = FakeClock(), FakeClient()
    policy = RetryPolicy(attempts=3, base=1.0, cap=8.0, rng=random.Random(0))
    committer, _ = _committer(tmp_path, client, clock, every=10.0, policy=policy)
    client.failures = [HubError(503) for _ in range(3)]  # every attempt of the first push fails
    future = committer.trigger()
    committer.step()
    with pytest.raises(PushError, match="HubError: HTTP 503.*hf-summary sync") as failed:
        future.result()
    assert isinstance(failed.value.__cause__, HubError)
    assert len(clock.waits) == 2 and all(0.5 <= w <= 8.0 for w in clock.waits)  # two retries, jittered
    clock.waits.clear()
    committer.step()  # the next push comes after the policy's delay, not after the 600 s interval
    assert clock.waits == [policy.next_push_delay(1, 600.0)] == [8.0]
    assert len(client.commits) == 1
    clock.waits.clear()
    committer.step()  # success resets the schedule to the interval
    assert clock.waits == [pytest.approx(600.0)]


def test_retry_after_is_honoured_between_pushes(tmp_path: Path) -> None:
    clock, client = FakeClock(), FakeClient()
    committer, _ = _committer(tmp_path, client, clock, every=10.0,
                              policy=RetryPolicy(attempts=1, base=1.0, cap=8.0))
    client.failures = [HubError(429, {"Retry-After": "42"})]
    committer.step()
    clock.waits.clear()
    committer.step()
    assert clock.waits == [42.0] and len(client.commits) == 1


def test_a_permanent_error_is_not_retried(tmp_path: Path) -> None:
    clock, client = FakeClock(), FakeClient()
    committer, _ = _committer(tmp_path, client, clock)
    client.failures = [HubError(404)]
    future = committer.trigger()
    committer.step()
    error = future.exception()
    assert isinstance(error, PushError) and isinstance(error.__cause__, HubError) and clock.waits == []


def test_a_push_stops_retrying_at_its_deadline(tmp_path: Path) -> None:
    clock, client = FakeClock(), FakeClient()
    committer, _ = _committer(tmp_path, client, clock)
    client.failures = [HubError(503) for _ in range(3)]
    future = committer.trigger(deadline=clock() + 0.1)  # no time for even one retry
    committer.trigger(deadline=None)  # a trigger without a deadline shares the push and keeps the earliest
    committer.step()
    error = future.exception()
    assert isinstance(error, PushError) and isinstance(error.__cause__, RetriesExhausted) and clock.waits == []


def test_a_member_asking_for_a_shorter_interval_shortens_the_wait(tmp_path: Path) -> None:
    clock, client = FakeClock(), FakeClient()
    committer, _ = _committer(tmp_path, client, clock, every=10.0)
    other = tmp_path / "other"
    _log(other, 1)
    committer.join(Uploader(other, UploadSpec("me/run")), every=1.0)
    assert committer.every == 1.0
    committer.step()  # the join woke the thread to re-plan: no push, no wait
    assert clock.waits == [] and client.commits == []
    committer.step()
    assert clock.waits == [60.0] and len(client.commits) == 1 and len(client.commits[0]) == 2


def test_stop_ends_the_real_thread_and_refuses_new_pushes(tmp_path: Path) -> None:
    client = FakeClient()
    committer = _schedule(client, every=60.0).start()
    assert committer.connected.result(timeout=30) == "me/run"
    assert committer.alive
    committer.stop(timeout=30)
    assert not committer.alive and committer.stopped
    assert isinstance(committer.trigger().exception(timeout=1), SchedulerStopped)
    assert committer.step() is False


def test_next_push_resolves_with_the_scheduled_push(tmp_path: Path) -> None:
    clock, client = FakeClock(), FakeClient()
    committer, _ = _committer(tmp_path, client, clock)
    future = committer.next_push()
    assert committer.next_push() is future and not future.done()
    committer.step()  # the interval's push, nobody triggered it
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
    committer = _schedule(HungClient(), every=60.0).start()
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


def test_ctrl_c_given_to_another_thread_ends_the_wait_for_a_final_push_at_once() -> None:
    import signal
    from concurrent.futures import Future

    from hf_summary.upload.progress import FinalPushProgress

    class CtrlC(Exception):
        pass

    def on_sigint(signum: int, frame: object) -> None:  # runs in the main thread, like Python's own handler
        raise CtrlC

    previous = signal.signal(signal.SIGINT, on_sigint)
    push: Future = Future()
    busy = threading.Event()
    other = threading.Thread(target=busy.wait, args=(60,))  # a thread that does not block SIGINT (tqdm's, say)
    other.start()
    try:
        threading.Timer(10, push.set_result, ("pushed",)).start()
        # Ctrl-C while the main thread waits, given to the other thread (the kernel may pick any that does not block
        # it): the main thread's wait is not cut short.
        threading.Timer(0.5, signal.pthread_kill, (other.ident, signal.SIGINT)).start()
        with pytest.raises(CtrlC):
            FinalPushProgress("Final push", quiet_for=0.05).wait(push, timeout=60)
        assert not push.done()  # seen within a slice of the wait, not when the push ended
    finally:
        busy.set()
        other.join()
        signal.signal(signal.SIGINT, previous)


def test_a_backlog_goes_up_in_bounded_commits_in_name_order_and_resumes(tmp_path: Path) -> None:
    logdir = tmp_path / "week-offline"
    logdir.mkdir()
    for n in range(250):  # a week offline: many closed event files
        (logdir / f"events.out.tfevents.{1700000000 + n}.host.1.000").write_bytes(frame_record(b"r%d" % n))
    clock, client = FakeClock(), FakeClient()
    committer = _schedule(client, clock, policy=RetryPolicy(attempts=1), max_files=100)
    committer.join(Uploader(logdir, UploadSpec("me/run")))
    client.fail_on[2] = HubError(503)  # interrupted between the first and the second commit
    with pytest.raises(HubError):
        committer.push()
    assert [len(c) for c in client.commits] == [100]
    committer.push()
    assert [len(c) for c in client.commits] == [100, 100, 50]  # the rest, nothing twice
    sent = [path for commit in client.commits for path in commit]
    assert sent == sorted(sent) and len(set(sent)) == 250


def test_a_spent_commit_budget_delays_scheduled_pushes_not_triggered_ones(tmp_path: Path) -> None:
    clock, client = FakeClock(), FakeClient()
    committer, logdir = _committer(tmp_path, client, clock, every=1.0, budget=2)
    client.repo_ready = True
    client.history = [100.0, 200.0]  # other machines' commits, read from the repo's history
    committer.step()
    assert clock.waits == [60.0] and client.commits == []  # scheduled push held back: the budget is spent
    clock.waits.clear()
    client.history = []  # the hour of those commits is over
    committer.step()
    assert clock.waits == [pytest.approx(3400.0)] and len(client.commits) == 1  # waited for the free slot
    client.history = [10.0, 20.0]
    _log(logdir, 1)
    asked = committer.trigger()  # a trigger is not held back
    committer.step()
    assert asked.result().oid == "commit2" and len(client.commits) == 2


def test_a_429_widens_the_interval_and_successes_narrow_it_back(tmp_path: Path) -> None:
    clock, client = FakeClock(), FakeClient()
    committer, logdir = _committer(tmp_path, client, clock, every=1.0,
                                   policy=RetryPolicy(attempts=1, base=1.0, cap=8.0))
    client.failures = [HubError(429, {"Retry-After": "5"})]
    committer.step()
    clock.waits.clear()
    committer.step()  # retried after Retry-After, succeeded
    assert clock.waits == [8.0] and len(client.commits) == 1
    widened = []
    for _ in range(6):
        _log(logdir, 1)
        clock.waits.clear()
        committer.step()
        widened.append(clock.waits[0])
    assert widened[0] > 60.0 and widened == sorted(widened, reverse=True) and widened[-1] < widened[0]


def test_a_refused_run_costs_only_itself_and_is_not_sent_again(tmp_path: Path) -> None:
    clock, client = FakeClock(), FakeClient(refuse="tensorboard/crowded")
    committer, good = _committer(tmp_path, client, clock)
    crowded = tmp_path / "crowded"
    _log(crowded, 2)
    committer.join(Uploader(crowded, UploadSpec("me/run")))
    future = committer.trigger()
    committer.step()
    error = future.exception()
    assert isinstance(error, PushError) and "'tensorboard/crowded'" in error.reason and "max_file_size" in error.reason
    assert isinstance(error.__cause__.__cause__, HubError)  # the Hub's own answer stays reachable
    # The other run's files went up, alone, after the refused commit that held both.
    assert client.calls == 3 and client.commits == [["tensorboard/run/events.out.tfevents.1700000000.host.1.000"]]
    _log(good, 1)
    _log(crowded, 1)
    committer.trigger()
    committer.step()
    assert client.calls == 4 and len(client.commits) == 2  # the refused run is not sent again: one request
    assert all(not path.startswith("tensorboard/crowded") for commit in client.commits for path in commit)


def test_a_final_push_waits_for_the_budget_within_its_deadline(tmp_path: Path) -> None:
    clock, client = FakeClock(), FakeClient()
    committer, _ = _committer(tmp_path, client, clock, every=1.0, budget=2)
    client.repo_ready = True
    client.history = [100.0, 200.0]
    final = committer.trigger(deadline=clock() + 4000, kind="final")
    committer.step()
    assert client.commits == [] and not final.done()  # held back: the budget has no slot for 3400 s
    client.history = []
    committer.step()
    assert clock.waits == [pytest.approx(3400.0)] and final.result().oid == "commit1"


def test_a_final_push_the_budget_cannot_take_in_time_is_left_to_the_companion(tmp_path: Path) -> None:
    clock, client = FakeClock(), FakeClient()
    committer, _ = _committer(tmp_path, client, clock, every=1.0, budget=2)
    client.repo_ready = True
    client.history = [100.0, 200.0]
    final = committer.trigger(deadline=clock() + 60, kind="final")
    committer.step()
    error = final.exception(timeout=0)
    assert isinstance(error, PushError) and "budget" in error.reason and "companion" in error.reason
    assert client.commits == [] and error.sync_command.startswith("hf-summary sync")


def test_once_pushes_again_after_each_failure_until_its_deadline(tmp_path: Path) -> None:
    clock, client = FakeClock(), FakeClient()
    policy = RetryPolicy(attempts=1, base=1.0, cap=8.0)
    committer, _ = _committer(tmp_path, client, clock, policy=policy)
    client.failures = [HubError(503) for _ in range(3)]
    info = committer.run(once=True, deadline=clock() + 1000)
    assert info.oid == "commit1" and client.calls == 4
    assert clock.waits == [policy.next_push_delay(n, float("inf")) for n in (1, 2, 3)] == [8.0, 16.0, 32.0]

    _log(tmp_path / "run", 1)
    client.failures = [HubError(503) for _ in range(3)]
    with pytest.raises(PushError, match="HTTP 503"):
        committer.run(once=True, deadline=clock() + 20)  # room for one more push only
    assert client.calls == 6 and len(client.commits) == 1


def test_once_waits_for_the_budget_however_long_and_says_so(tmp_path: Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()

    class SpentClient(FakeClient):
        def commit_ages(self, window: float) -> list[float]:
            return [100.0, 200.0] if clock.now < 4000 else []  # a slot frees 3400 s from now

    client = SpentClient()
    committer, _ = _committer(tmp_path, client, clock, budget=2)
    with caplog.at_level("INFO", logger="hf_summary.upload.budget"):
        # The deadline is the retry time left once a slot frees, not a limit on the wait for it.
        info = committer.run(once=True, deadline=clock() + 60)
    assert info.oid == "commit1" and clock.now >= 4000
    assert "budget of me/run is spent: pushing in 3400s" in caplog.text


def test_hurry_pushes_a_waiting_one_off_push_whatever_the_budget(tmp_path: Path) -> None:
    clock = FakeClock()
    client = FakeClient(history=[100.0, 200.0])  # spent for the next hour
    committer, _ = _committer(tmp_path, client, clock, budget=2)
    waits = committer._wait

    def sigterm_during_the_wait(event: threading.Event, timeout: float) -> bool:
        if client.repo_ready and not client.commits:
            committer.hurry(clock() + 25)  # what the companion's SIGTERM handler does
        return waits(event, min(timeout, 1.0))

    committer._wait = sigterm_during_the_wait
    assert committer.run(once=True, deadline=clock() + 60).oid == "commit1"
    assert clock.now - 1000 < 60  # it did not wait for the hour's slot


@dataclass
class FakeBucket:
    """Stands in for a bucket target (`targets.Target`): takes files in batches, failing the paths in `refuse_once`
    the first time they are sent, as a bucket's non-transactional batch does."""

    refuse_once: set[str] = field(default_factory=set)
    batches: list[list[str]] = field(default_factory=list)
    name: str = "me/logs"
    ready: bool = True

    def web_url(self, path: str = "") -> str:
        return f"https://hub/buckets/me/logs/{path}"

    def connect(self) -> str:
        return self.name

    def room(self) -> int:
        return 1000

    def operation(self, path_in_repo: str, file: object) -> _Op:
        return _Op(path_in_repo)

    def send(self, operations: list, message: str) -> _Info:
        from hf_summary.upload.errors import PartlySent

        paths = [op.path_in_repo for op in operations]
        failed, self.refuse_once = self.refuse_once & set(paths), self.refuse_once - set(paths)
        self.batches.append([p for p in paths if p not in failed])
        receipt = _Info(f"batch{len(self.batches)}")
        if failed:
            raise PartlySent(receipt, failed, HubError(422))
        return receipt

    def finish(self, squash: list) -> None:
        pass

    def holdback(self) -> float:
        return 0.0

    def paced(self, interval: float) -> float:
        return interval

    def settle(self, error: BaseException | None) -> None:
        pass


@dataclass
class _Op:
    path_in_repo: str

    @property
    def upload_info(self) -> object:
        return type("Info", (), {"is_hashed": False})()


def test_a_batch_taken_in_part_is_recorded_in_part_and_only_the_rest_sent_again(tmp_path: Path) -> None:
    for name in ("a", "b"):
        _log(tmp_path / name, 2)
    bucket = FakeBucket(refuse_once={"tensorboard/b/events.out.tfevents.1700000000.host.1.000"})
    clock = FakeClock()
    pusher = Pusher(bucket, clock=clock, wait=clock.wait, retry=RetryPolicy(attempts=3, base=1.0, cap=8.0))
    result = pusher.push([Uploader(tmp_path / name, UploadSpec("me/logs", repo_type="bucket")) for name in "ab"])
    assert bucket.batches == [["tensorboard/a/events.out.tfevents.1700000000.host.1.000"],
                              ["tensorboard/b/events.out.tfevents.1700000000.host.1.000"]]  # the retry: b only
    assert result.files == 1 and len(clock.waits) == 1
    assert pusher.push([Uploader(tmp_path / name, UploadSpec("me/logs", repo_type="bucket")) for name in "ab"]
                       ).info is None  # both recorded: nothing to send


def test_the_quota_spaces_pushes_to_last_until_the_window_resets() -> None:
    from hf_summary.upload.quota import Quota

    clock = FakeClock()
    quota = Quota(clock=clock)
    answer = _Response(200, {"RateLimit": '"api";r=500;t=300', "RateLimit-Policy": '"fixed window";"api";q=1000;w=300'})
    quota.observe(answer)  # the user's own thread: not ours, not counted
    assert quota.requests == 0 and quota.spacing(2) == 0.0
    ours = threading.Thread(target=quota.observe, args=(answer,), name="hf_summary-committer")
    ours.start()
    ours.join()
    assert quota.requests == 1
    assert quota.spacing(2) == pytest.approx(300 / ((500 - 100) / 2))  # 1.5 s: 200 pushes left in 300 s
    clock.now += 150
    assert quota.spacing(2) == pytest.approx(150 / 200)
    quota.remaining = 101  # within the reserve kept for the user's own calls
    assert quota.spacing(2) == pytest.approx(150)  # the next push waits for the window to reset
    clock.now += 151
    assert quota.spacing(2) == 0.0  # a new window: nothing known of it yet


def test_scheduled_pushes_widen_to_what_the_quota_allows(tmp_path: Path) -> None:
    from hf_summary.upload.quota import Quota

    clock, client = FakeClock(), FakeClient()
    committer, logdir = _committer(tmp_path, client, clock, every=0.05)  # every 3 s
    committer.quota = Quota(clock=clock)
    committer.quota.remaining, committer.quota.limit, committer.quota.reset_at = 140, 1000, clock() + 300
    committer.step()
    # 140 left, 100 kept in reserve: 20 pushes of 2 requests in 300 s, one every 15 s instead of 3.
    assert clock.waits == [pytest.approx(15.0)] and len(client.commits) == 1


def test_the_quota_leaves_the_other_machines_their_pace() -> None:
    from hf_summary.upload.quota import Quota

    clock = FakeClock()
    quota = Quota(clock=clock)

    def answer(remaining: int, reset_in: int) -> None:
        headers = {"RateLimit": f'"api";r={remaining};t={reset_in}',
                   "RateLimit-Policy": '"fixed window";"api";q=1000;w=300'}
        ours = threading.Thread(target=quota.observe, args=(_Response(200, headers),), name="hf_summary-committer")
        ours.start()
        ours.join()

    answer(900, 300)
    alone = quota.spacing(2)
    clock.now += 10
    answer(849, 290)  # 51 fewer for our one request: the others spent 50 in 10 s
    assert quota.others_rate == pytest.approx(0.3 * 5.0)
    # 849 - 100 reserved - 1.5/s x 290 s for the others: 314 left for pushes of 2 requests in 290 s.
    assert quota.spacing(2) == pytest.approx(290 / ((849 - 100 - 1.5 * 290) / 2)) and quota.spacing(2) > alone
    clock.now += 300
    answer(1000, 300)  # a new window: nothing to compare with the last reading
    assert quota.others_rate == pytest.approx(1.5) and quota.remaining == 1000
