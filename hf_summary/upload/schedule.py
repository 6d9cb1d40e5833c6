"""Time: when a push happens. One schedule per target in a process, pushing the logdirs of its members.

Writers of one process that push to the same repo and branch share a schedule (through `process.STATE`), so a sweep
of N writers makes one commit per interval instead of N. Each writer holds a `ScheduleMember`: `writer.scheduler`.

A push happens every interval (the shortest any member asked for, widened by the target while it answers 429), at
once on `trigger()`, sooner than the interval after a failed push (the retry policy's backoff), and not before the
target's budget allows. Its clock and its way of waiting are passed in, so that tests drive the schedule without a
server and without real sleeps. One loop serves a live run (`run()`, on the schedule's thread) and a one-off push
that retries until it lands or its deadline passes (`run(once=True)`: `hf-summary sync`, the companion's last push).
"""

from __future__ import annotations

import logging
import math
import os
import threading
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from typing import Any

from .. import defaults
from ..process import STATE
from ..threads import Timer, start_thread
from .budget import BudgetGate
from .errors import BudgetSpent, HubAuthError, PushError, SchedulerStopped, describe, root_cause
from .hooks import THREAD_PREFIX
from .machine import MachineRegistry
from .member import Kind, Member, ScheduleMember, failed, forked_child_error
from .pusher import Clock, Pusher, PushResult, Wait
from .quota import Quota
from .retry import RetryPolicy
from .spec import UploadSpec
from .uploader import Uploader

logger = logging.getLogger(__name__)


_SKIP_WITHIN = 0.9  # a scheduled push skips its turn when the machine pushed less than this many intervals ago


def _settle(future: Future, result: Any = None, error: BaseException | None = None) -> None:
    """Resolve `future` unless it already is: a push and its deadline race to settle it, and the first wins."""
    try:
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)
    except InvalidStateError:
        pass


@dataclass(eq=False)
class _Request:
    """A push asked for; triggers that arrive before it starts share it."""

    kind: Kind
    future: Future = field(default_factory=Future)
    deadline: float | None = None  # a clock() value after which the push stops retrying and its Future fails
    timer: threading.Timer | None = None  # fails the Future at the deadline, even if the Hub never answers


class Schedule:
    """Pushes the logdirs of its members to one target, one push at a time, on time.

    Triggers that arrive while a push runs share one follow-up push, so a burst of triggers makes at most two.
    A failed push leaves its files pending for the next one, which comes sooner than the interval.

    Args:
        pusher: pushes to the target; the schedule owns it.
        every: minutes between pushes when no member asks for a shorter interval.
        enabled: False makes no network call at all (offline mode): pushes resolve to None.
        The clock and the way of waiting are the pusher's: a test passes a fake clock that a wait moves forward.
        membership: held while writers join and leave; the process passes the lock of its table of schedules.
        quota: what the Hub's answers say of the user's request quota: scheduled pushes are spaced to last within
            it. None: not watched.

    Example:
        ```py
        >>> schedule = Schedule(Pusher(RepoTarget(HubClient(spec.repo())))).start()
        >>> member = schedule.join(Uploader(logdir, spec), every=5)
        >>> member.trigger().result()   # push now
        >>> member.stop()               # the last member to leave ends the thread
        ```
    """

    def __init__(self, pusher: Pusher, *, every: float = defaults.COMMIT_EVERY, enabled: bool = True,
                 membership: threading.RLock | None = None, quota: Quota | None = None) -> None:
        self.pusher = pusher
        self.quota = quota
        self._push_cost = 2.0  # requests a push makes, learnt from the quota's count of our answers
        self.membership = membership or threading.RLock()
        self.enabled = enabled
        self.clock: Clock = pusher.clock
        self.deadline: float | None = None  # of a one-off push (`run(once=True, deadline=...)`; `hurry`)
        self._default_every = every
        self._retry: RetryPolicy = pusher.retry
        self._wait: Wait = pusher.wait  # the pusher's: a test's fake clock moves for both
        self._members: list[Member] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = pusher.stop  # a stop also ends the retries of a push in progress
        self._request: _Request | None = None
        self._next: Future | None = None  # handed out by next_push() before any push was asked for
        self._failures = 0
        self._last_error: BaseException | None = None
        self._last_push = self.clock()
        self.budget = BudgetGate(pusher.target, self.clock)
        self._once = False
        self.last_future: Future | None = None
        self.connected: Future = Future()  # the first contact with the Hub, made when the loop starts
        self._thread: threading.Thread | None = None
        self._owner = os.getpid()  # a forked child inherits this object, not its thread

    @property
    def machine(self) -> MachineRegistry | None:
        return self.pusher.machine

    @property
    def name(self) -> str:
        return self.pusher.target.name

    # Members -----------------------------------------------------------------------------------------------------

    def join(self, uploader: Uploader, *, every: float | None = None,
             push_timeout: float | None = None) -> ScheduleMember:
        """Add a logdir to push; each push first has its writer (`uploader.live`) write what was logged.

        Args:
            uploader: the logdir and where it goes.
            every: the interval it asks for, in minutes; the schedule's default if None.
            push_timeout: seconds after which the member's `trigger()` Futures fail with `PushError`.
        """
        member = Member(uploader, self._default_every if every is None else every, push_timeout)
        if self.machine is not None:
            self.machine.register(uploader.logdir, uploader.spec)
        with self._lock:
            self._members.append(member)
        self._wake.set()  # re-plan the next push: the interval may be shorter now
        return ScheduleMember(self, member)

    def leave(self, member: Member) -> bool:
        """Stop pushing a member's logdir; True when it was the last member (the caller stops the schedule)."""
        with self._lock:
            if member in self._members:
                self._members.remove(member)
            last = not self._members
        if self.machine is not None:
            try:
                if not member.uploader.pending():
                    self.machine.unregister(member.uploader.logdir)
                # else: it stays registered, and the next push of any process of this machine carries what is left
            except Exception as error:  # the registry is a courtesy: a writer's close never fails because of it
                logger.debug("Could not update the machine registry: %s", error)
        return last

    @property
    def uploaders(self) -> list[Uploader]:
        with self._lock:
            return [member.uploader for member in self._members]

    @property
    def every(self) -> float:
        """Minutes between pushes: the shortest interval a member asked for (one push carries them all)."""
        with self._lock:
            return min((m.every for m in self._members), default=self._default_every)

    def sync_command(self) -> str:
        """The shell command that uploads what this schedule's members have pending."""
        commands = [u.spec.sync_command(u.logdir) for u in self.uploaders]
        return " && ".join(commands) or "hf-summary sync LOGDIR REPO_ID"

    # Asking for pushes -------------------------------------------------------------------------------------------

    def trigger(self, deadline: float | None = None, kind: Kind = "asked") -> Future:
        """Ask for a push now; the Future resolves to the commit info, or None if nothing had changed.

        Args:
            deadline: a `clock()` value. The push stops retrying then, and its Future fails with `PushError` then
                at the latest, even if the Hub never answers. Triggers that share a push keep the earliest.
            kind: "final" waits for the target's budget (up to the deadline); "asked" pushes at once.
        """
        with self._lock:
            if self._owner != os.getpid():
                return failed(forked_child_error(self._owner))
            if self._stop.is_set():
                return failed(SchedulerStopped("The writer's pushes are stopped; use `hf-summary sync` to push."))
            if self._request is None:
                self._request = _Request(kind, self._take_next())
            request = self._request
            if kind == "final":
                request.kind = "final"  # pushed with a closing writer's: within the budget
            if deadline is not None and (request.deadline is None or deadline < request.deadline):
                request.deadline = deadline
                self._arm(request)
        self._wake.set()
        return request.future

    def next_push(self) -> Future:
        """The Future of the next push, scheduled or triggered, without asking for one.

        Example:
            ```py
            >>> writer.scheduler.next_push().result(timeout=600)   # wait for the interval's push
            ```
        """
        with self._lock:
            if self._request is not None:
                return self._request.future
            if self._next is None:
                self._next = Future()
            return self._next

    def _take_next(self) -> Future:
        future, self._next = self._next or Future(), None
        return future

    def _arm(self, request: _Request) -> None:
        if request.timer is not None:
            request.timer.cancel()
        assert request.deadline is not None
        request.timer = Timer(max(0.0, request.deadline - self.clock()), self._expire, (request,),
                              name=f"{THREAD_PREFIX}push-deadline")
        request.timer.start()

    def _expire(self, request: _Request) -> None:
        _settle(request.future, error=PushError(
            f"The push to {self.name} did not finish within its time limit (the Hub is slow or does not answer); it "
            "goes on in the background", self.sync_command()))

    # The loop ----------------------------------------------------------------------------------------------------

    def start(self) -> Schedule:
        """Start the thread that pushes on schedule; returns the schedule."""
        self._thread = start_thread(self.run, f"{THREAD_PREFIX}committer")
        return self

    @property
    def alive(self) -> bool:
        """Whether the schedule's thread is running."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def stop(self, timeout: float | None = 5.0) -> None:
        """End the loop: it stops waiting at once, and a push in progress gives up its retries."""
        with self._lock:
            self._stop.set()
            request, self._request = self._request, None
            waiting = [f for f in (request.future if request else None, self._take_next()) if f is not None]
        if request is not None and request.timer is not None:
            request.timer.cancel()
        self._wake.set()
        for future in waiting:
            _settle(future, None)
        if self._thread is not None and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def run(self, *, once: bool = False, deadline: float | None = None) -> Any:
        """Push on schedule until stopped; with `once`, push now and after each failure until one lands.

        With `once`, failed pushes are tried again after the retry policy's backoff until `deadline` (a `clock()`
        value; None: a single push; `hurry` may bring it closer), and the budget is waited for however long it
        takes (logged).

        Returns:
            With `once`: the commit info of the push, or None if nothing had changed.

        Raises:
            PushError: with `once`, the last push failed and no time was left to try again; its cause is the Hub's.
        """
        self._connect()
        self._once = once
        if deadline is not None:
            self.deadline = deadline if self.deadline is None else min(self.deadline, deadline)
        if not once:
            while self.step():
                pass
            return None
        while True:
            future = self.trigger(kind="final")
            while not future.done() and self.step():
                pass
            error = future.exception()
            if error is None:
                return future.result()
            if isinstance(root_cause(error), HubAuthError) or self.stopped:
                raise error
            delay = self._retry.next_push_delay(max(1, self._failures), math.inf, root_cause(error))
            if self.deadline is None or self.clock() + delay >= self.deadline:
                raise error
            self._wait(self._wake, delay)
            self._wake.clear()

    def step(self) -> bool:
        """One turn of the loop: wait until a push is due or asked for, then push. False once stopped."""
        if self._stop.is_set():
            return False
        self._wait(self._wake, max(0.0, self._due() - self.clock()))
        if self._stop.is_set():
            return False
        self._wake.clear()
        with self._lock:
            request = self._request
        if request is None and self.clock() < self._due():
            return True  # woken to re-plan (a member joined), not to push
        kind: Kind = request.kind if request is not None else "scheduled"
        if kind != "asked" and self._held_back(request):
            return True
        with self._lock:
            request, self._request = self._request, None
            request = request or _Request("scheduled", self._take_next())
        self.last_future = request.future
        try:
            result = self.push(request.deadline, scheduled=request.kind == "scheduled")
        except BaseException as error:  # noqa: B036 - the Future carries it to whoever waits
            failure = PushError(f"The push to {self.name} failed ({describe(error)})", self.sync_command())
            failure.__cause__ = error
            _settle(request.future, error=failure)
        else:
            if result.refused:
                failure = PushError("; ".join(str(refused) for refused in result.refused), self.sync_command())
                failure.__cause__ = result.refused[0]
                _settle(request.future, error=failure)
            else:
                _settle(request.future, result.info)
        finally:
            if request.timer is not None:
                request.timer.cancel()
        return True

    def _due(self) -> float:
        """The clock() value at which the next push starts, unless a trigger comes first."""
        request = self._request
        backoff = (self._last_push + self._retry.next_push_delay(self._failures, self._interval(), self._last_error)
                   if self._failures else -math.inf)
        if request is not None:
            if request.kind != "final":
                return -math.inf
            return max(self.budget.not_before, backoff) if self._once else self.budget.not_before
        if self._failures:
            return backoff
        return max(self._last_push + self._interval(), self.budget.not_before)

    def _interval(self) -> float:
        interval = self.pusher.target.paced(self.every * 60)
        return max(interval, self.quota.spacing(self._push_cost)) if self.quota is not None else interval

    def hurry(self, deadline: float) -> None:
        """Make a one-off push go now, whatever the budget, retrying until `deadline` at the latest.

        Safe in a signal handler (the companion's SIGTERM: the process is about to be killed, and what it holds is
        worth more than the budget); the handler's wake-up of the loop's wait is the caller's.
        """
        self.deadline = deadline if self.deadline is None else min(self.deadline, deadline)
        self.budget.hurry()

    def _held_back(self, request: _Request | None) -> bool:
        """Whether the target's budget holds this push back; a final push that cannot wait for it fails."""
        hold = self.budget.hold(once=self._once) if self.enabled else 0.0
        if hold <= 0:
            return False
        if self._once:
            if self.deadline is not None:
                self.deadline += hold  # the time to retry starts once a slot frees
            return True
        if request is None:
            return True  # a scheduled push waits for the budget and carries more
        if request.deadline is not None and self.budget.not_before > request.deadline:
            with self._lock:
                if self._request is request:
                    self._request = None
            _settle(request.future, error=BudgetSpent(
                f"The commit budget of {self.name} is spent for {hold:.0f}s more, past this push's time limit; the "
                "companion process pushes what is left when a slot frees", self.sync_command()))
        return True

    def _connect(self) -> None:
        """Create the target once at start, so that a writer learns early whether the Hub takes its token."""
        if not self.enabled:
            _settle(self.connected, None)
            return
        try:
            _settle(self.connected, self.pusher.target.connect())
        except BaseException as error:  # noqa: B036 - the Future carries it to the writer's constructor
            _settle(self.connected, error=error)

    # Pushing -----------------------------------------------------------------------------------------------------

    def _count_answers(self) -> int:
        if self.quota is None or not self.enabled:
            return 0
        self.quota.install()
        return self.quota.requests

    def push(self, deadline: float | None = None, *, scheduled: bool = False) -> PushResult:
        """Push on the caller's thread, retrying transient failures until `deadline` (a `clock()` value).

        A scheduled push skips its turn when another process of the machine pushed this target less than an
        interval ago, or is pushing it now: that push carries this schedule's logdirs too.

        Raises:
            HubAuthError: the token was rejected.
            RetriesExhausted: the deadline passed, or the schedule was stopped, before a retry succeeded.
            Exception: what the Hub client raised last; nothing is recorded as sent then.
        """
        started = self.clock()  # the interval runs from the start of a push: pushes come every interval, no drift
        with self._lock:
            members = list(self._members)
        for member in members:
            member.uploader.prepare()
        if not self.enabled or not members:
            return PushResult()
        skip_within = self.every * 60 * _SKIP_WITHIN if scheduled else None
        answers = self._count_answers()
        try:
            result = self.pusher.push([m.uploader for m in members], deadline=deadline, skip_within=skip_within)
        except BaseException as error:
            self._failures += 1
            self._last_error = error
            self.pusher.target.settle(error)
            # Not a warning: the training log stays clean, the next push retries, and close() reports what is left.
            logger.info("Push to %s failed; the files stay pending for the next push: %s", self.name, describe(error))
            raise
        else:
            self._failures = 0
            self._last_error = None
            self.pusher.target.settle(None)
            cost = self._count_answers() - answers
            if result.info is not None and cost > 0:
                self._push_cost = 0.7 * self._push_cost + 0.3 * cost
            return result
        finally:
            # A success counts the interval from its start; a failure its backoff from its end.
            self._last_push = started if self._failures == 0 else self.clock()


def open_schedule(spec: UploadSpec, *, token: str | None = None, every: float = defaults.COMMIT_EVERY,
                  enabled: bool = True, interactive: bool = False, token_option: str = "`token=`",
                  max_commits_per_hour: int | None = defaults.MAX_COMMITS_PER_HOUR, machine: bool = True,
                  retry: RetryPolicy | None = None, membership: threading.RLock | None = None,
                  wait: Wait | None = None) -> Schedule:
    """The schedule of a spec's repo or bucket, as every front door builds it (its thread not started).

    Args:
        spec: the repo and branch (its folder and patterns belong to the members).
        token: the token, or None for the one huggingface_hub finds.
        every: minutes between pushes when no member asks for another interval.
        enabled: False for offline mode: no network call at all.
        interactive: a person waits for the push (`hf-summary sync`): huggingface_hub's one upload bar shows.
        token_option: how the user passes a token here (`token=`, `--token`), for error messages.
        max_commits_per_hour: the repo's commit budget, shared by every writer of it; None for none.
        machine: take turns with the other processes of this machine that push to the repo.
        retry: the retry policy; the default one if None.
        membership: the lock under which writers join and leave (the process's).
        wait: how the loop waits (the companion's wakes on SIGTERM).
    """
    from huggingface_hub import constants

    from .hub import HubClient
    from .targets import BucketTarget, RepoTarget, Target

    target: Target
    if spec.repo_type == "bucket":
        target = BucketTarget(spec.repo_id, token=token, private=spec.private, interactive=interactive,
                              token_option=token_option)
    else:
        client = HubClient(spec.repo(), token=token, batch_uploads=interactive, token_option=token_option)
        target = RepoTarget(client, max_commits_per_hour=max_commits_per_hour)
    registry = MachineRegistry(f"{constants.ENDPOINT} {spec.repo_type} {spec.repo_id} {spec.revision}") \
        if machine and enabled else None
    pusher = Pusher(target, retry=retry, machine=registry, wait=wait)
    with STATE.lock:
        if not isinstance(STATE.quota, Quota):
            STATE.quota = Quota()
    return Schedule(pusher, every=every, enabled=enabled, membership=membership, quota=STATE.quota)
