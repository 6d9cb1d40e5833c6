"""The committer: one per repo and branch in a process, pushing the logdirs of its members in one commit at a time.

Writers of one process that push to the same repo and branch share a committer, so a sweep of N writers makes one
commit per interval instead of N (the Hub rate-limits commits per repo). Each writer holds a `CommitterMember`, its
handle on the shared committer: `writer.scheduler`.

The schedule is the committer's own: a push every interval (the shortest any member asked for), at once on
`trigger()`, sooner than the interval after a failed push (the retry policy's backoff). Its clock and its way of
waiting are passed in, so that tests drive the schedule without a server and without real sleeps.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import defaults
from ..threads import Timer, start_thread
from .hub import THREAD_PREFIX, CommitNotConfirmed, redact
from .machine import MachineRegistry
from .progress import FinalPushProgress
from .retry import RetriesExhausted, RetryPolicy, http_status
from .uploader import Uploader

if TYPE_CHECKING:
    from huggingface_hub import CommitInfo

    from .hub import HubClient

logger = logging.getLogger(__name__)

Clock = Callable[[], float]
# Waits on an event for at most `timeout` seconds; returns whether it was set (threading.Event.wait's contract).
Wait = Callable[[threading.Event, float], bool]


def _wait(event: threading.Event, timeout: float) -> bool:
    return event.wait(timeout)


class CommitterStopped(RuntimeError):
    """The committer was stopped: nothing more is pushed by it. `hf-summary sync` pushes what is left."""


class PushError(Exception):
    """A push that gave up: it failed, or found no answer from the Hub within its time limit.

    Nothing is lost: the files stay on disk and pending, for the next push or for `sync_command`. The cause (the
    Hub's error, when there was one) is the exception's `__cause__`.

    Attributes:
        sync_command: the shell command that uploads what is pending.

    Example:
        ```py
        >>> try:
        ...     writer.scheduler.trigger().result()
        ... except hf_summary.PushError as error:
        ...     print("pushed later; or now with:", error.sync_command)
        ```
    """

    def __init__(self, reason: str, sync_command: str) -> None:
        super().__init__(f"{reason}. Nothing is lost: the files stay pending on disk for the next push, or upload "
                         f"them with: {sync_command}")
        self.reason = reason
        self.sync_command = sync_command


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
class _Member:
    uploader: Uploader
    every: float  # minutes
    before_push: Callable[[], None]
    push_timeout: float | None  # seconds a trigger() of this member waits at most; None for no limit


@dataclass
class _Request:
    """A push asked for by `trigger()`; triggers that arrive before it starts share it."""

    future: Future = field(default_factory=Future)
    deadline: float | None = None  # a clock() value after which the push stops retrying and its Future fails
    timer: threading.Timer | None = None  # fails the Future at the deadline, even if the Hub never answers
    asked: bool = False  # by trigger(); a scheduled push is not, and may skip its turn or wait for the budget


class Committer:
    """Pushes the logdirs of its members to one repo and branch, one commit at a time.

    Triggers that arrive while a commit runs share one follow-up commit, so a burst of triggers makes at most two
    commits. Transient Hub failures are retried inside a push; a push that still fails leaves its files pending
    for the next one, which comes sooner than the interval.

    Args:
        client: the Hub client of the repo; the committer owns it.
        every: minutes between pushes when no member asks for a shorter interval.
        retry: the retry policy, inside a push and between failed pushes.
        enabled: False makes no network call at all (offline mode): pushes resolve to None.
        max_files_per_commit: a push with more files than this goes up in several commits, each recorded as it
            lands.
        machine: the registry that the committers of this machine's processes share for this repo, so that they
            make one commit per interval between them; None pushes only this committer's members.
        max_commits_per_hour: the commits all writers of the repo make together in an hour, read from the repo's
            history before each scheduled push (one request); when spent, the push waits and carries more. None
            for no budget. Triggered pushes (`trigger()`, the final push) are not held back.
        clock: seconds on a monotonic clock.
        wait: how the thread waits for the next push; a test passes one that moves a fake clock instead.

    Example:
        ```py
        >>> committer = Committer(HubClient(spec.target())).start()
        >>> member = committer.join(Uploader(logdir, spec), every=5)
        >>> member.trigger().result()   # push now
        >>> member.stop()               # the last member to leave ends the thread
        ```
    """

    def __init__(
        self,
        client: HubClient,
        *,
        every: float = defaults.COMMIT_EVERY,
        retry: RetryPolicy | None = None,
        enabled: bool = True,
        max_files_per_commit: int = defaults.MAX_FILES_PER_COMMIT,
        max_commits_per_hour: int | None = defaults.MAX_COMMITS_PER_HOUR,
        machine: MachineRegistry | None = None,
        clock: Clock = time.monotonic,
        wait: Wait = _wait,
    ) -> None:
        self.client = client
        self.max_files_per_commit = max_files_per_commit
        self.max_commits_per_hour = max_commits_per_hour
        self.machine = machine
        self._pace = 1.0  # the interval's multiplier: widened by 429s, narrowed back slowly by successes
        self._not_before = 0.0  # a clock() value before which no scheduled push starts (the budget is spent)
        self._own_commits: list[float] = []  # clock() values of our commits: squashed ones leave the history
        self.enabled = enabled
        self.clock = clock
        self._default_every = every
        self._retry = retry or RetryPolicy()
        self._wait = wait
        self._members: list[_Member] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._request: _Request | None = None
        self._next: Future | None = None  # handed out by next_push() before any push was asked for
        self._failures = 0
        self._last_error: BaseException | None = None
        self._last_push = clock()
        self.last_future: Future | None = None
        self.connected: Future = Future()  # the first contact with the Hub, made when the thread starts
        self._thread: threading.Thread | None = None
        self._owner = os.getpid()  # a forked child inherits this object, not its thread

    # Members -----------------------------------------------------------------------------------------------------

    def join(self, uploader: Uploader, *, every: float | None = None, before_push: Callable[[], None] = lambda: None,
             push_timeout: float | None = None) -> CommitterMember:
        """Add a logdir to push.

        Args:
            uploader: the logdir and where it goes.
            every: the interval it asks for, in minutes; the committer's default if None.
            before_push: called before each push (a writer flushes its events there).
            push_timeout: seconds after which the member's `trigger()` Futures fail with `PushError`.
        """
        member = _Member(uploader, self._default_every if every is None else every, before_push, push_timeout)
        if self.machine is not None:
            self.machine.register(uploader.logdir, uploader.spec)
        with self._lock:
            self._members.append(member)
        self._wake.set()  # re-plan the next push: the interval may be shorter now
        return CommitterMember(self, member)

    def leave(self, member: _Member, timeout: float | None = 5.0) -> None:
        """Stop pushing a member's logdir; the committer stops when its last member leaves."""
        with _registry_lock:  # no writer may join a committer that is about to stop
            with self._lock:
                if member in self._members:
                    self._members.remove(member)
                last = not self._members
            if self.machine is not None:
                self._unregister(member.uploader)
            if last:
                self.stop(timeout)

    def _unregister(self, uploader: Uploader) -> None:
        try:
            if not uploader.pending():
                self.machine.unregister(uploader.logdir)  # type: ignore[union-attr]
            # else: it stays registered, and the next push of any process of this machine carries what is left
        except Exception as error:  # the registry is a courtesy: a writer's close never fails because of it
            logger.debug("Could not update the machine registry: %s", error)

    @property
    def uploaders(self) -> list[Uploader]:
        with self._lock:
            return [member.uploader for member in self._members]

    @property
    def every(self) -> float:
        """Minutes between pushes: the shortest interval a member asked for (one commit carries them all)."""
        with self._lock:
            return min((m.every for m in self._members), default=self._default_every)

    # The thread --------------------------------------------------------------------------------------------------

    def start(self) -> Committer:
        """Start the thread that pushes on schedule; returns the committer."""
        self._thread = start_thread(self._run, f"{THREAD_PREFIX}committer")
        return self

    @property
    def alive(self) -> bool:
        """Whether the committer's thread is running."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def trigger(self, deadline: float | None = None) -> Future:
        """Ask for a push now; the Future resolves to the commit info, or None if nothing had changed.

        Args:
            deadline: a `clock()` value. The push stops retrying then, and its Future fails with `PushError` then
                at the latest, even if the Hub never answers. Triggers that share a push keep the earliest.
        """
        with self._lock:
            if self._owner != os.getpid():
                future: Future = Future()
                future.set_exception(CommitterStopped(
                    f"This writer's uploads belong to process {self._owner}, and this is a forked child of it: the "
                    "parent pushes what this process logs to its files; or create a new HFSummaryWriter here."))
                return future
            if self._stop.is_set():
                future = Future()
                future.set_exception(CommitterStopped("The committer is stopped; use `hf-summary sync` to push."))
                return future
            if self._request is None:
                self._request = _Request(self._take_next(), asked=True)
            request = self._request
            if deadline is not None and (request.deadline is None or deadline < request.deadline):
                request.deadline = deadline
                self._arm(request)
        self._wake.set()
        return request.future

    def _arm(self, request: _Request) -> None:
        if request.timer is not None:
            request.timer.cancel()
        assert request.deadline is not None
        request.timer = Timer(max(0.0, request.deadline - self.clock()), self._expire, (request,),
                              name=f"{THREAD_PREFIX}push-deadline")
        request.timer.start()

    def _expire(self, request: _Request) -> None:
        _settle(request.future, error=PushError(
            f"The push to {self.client.target.repo_id} did not finish within its time limit (the Hub is slow or does "
            "not answer); it goes on in the background", self.sync_command()))

    def sync_command(self) -> str:
        """The shell command that uploads what this committer's members have pending."""
        commands = [u.spec.sync_command(u.logdir) for u in self.uploaders]
        return " && ".join(commands) or "hf-summary sync LOGDIR REPO_ID"

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

    def stop(self, timeout: float | None = 5.0) -> None:
        """End the thread: it stops waiting at once, and a push in progress gives up its retries."""
        with self._lock:
            self._stop.set()
            request, self._request = self._request, None
            waiting = [f for f in (request.future if request else None, self._take_next()) if f is not None]
        if request is not None and request.timer is not None:
            request.timer.cancel()
        self._wake.set()
        _forget(self)
        for future in waiting:
            _settle(future, None)
        if self._thread is not None and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def run_once(self) -> bool:
        """One turn of the thread: wait until a push is due or asked for, then push. False once stopped."""
        if self._stop.is_set():
            return False
        due = self._next_push_at()
        self._wait(self._wake, max(0.0, due - self.clock()))
        if self._stop.is_set():
            return False
        self._wake.clear()
        with self._lock:
            request, self._request = self._request, None
            if request is None and self.clock() < due:
                return True  # woken to re-plan (a member joined), not to push
        if request is None and self._budget_spent():
            return True  # a scheduled push waits for the budget and carries more; a triggered one goes now
        with self._lock:
            request = request or _Request(self._take_next())
        self.last_future = request.future
        try:
            _settle(request.future, self.push(request.deadline, scheduled=not request.asked))
        except BaseException as error:  # noqa: B036 - the Future carries it to whoever waits
            failure = PushError(f"The push to {self.client.target.repo_id} failed ({_reason(error)})",
                                self.sync_command())
            failure.__cause__ = error
            _settle(request.future, error=failure)
        finally:
            if request.timer is not None:
                request.timer.cancel()
        return True

    def _run(self) -> None:
        self._connect()
        while self.run_once():
            pass

    def _connect(self) -> None:
        """Create the repo once at start, so that a writer learns early whether the Hub takes its token."""
        if not self.enabled:
            _settle(self.connected, None)
            return
        try:
            _settle(self.connected, self.client.ensure_repo())
        except BaseException as error:  # noqa: B036 - the Future carries it to the writer's constructor
            _settle(self.connected, error=error)

    def _next_push_at(self) -> float:
        interval = self.every * 60 * self._pace
        if self._failures:
            return self._last_push + self._retry.next_push_delay(self._failures, interval, self._last_error)
        return max(self._last_push + interval, self._not_before)

    def _budget_spent(self) -> bool:
        """Whether the repo made its `max_commits_per_hour` in the last hour; if so, when the next slot frees."""
        if not self.max_commits_per_hour or not self.enabled or not self.client.repo_ready:
            return False
        now = self.clock()
        self._own_commits = [t for t in self._own_commits if now - t < 3600]
        try:
            ages = self.client.commit_ages(3600)
        except Exception as error:  # the history unreadable: push anyway, the Hub's own 429 still paces us
            logger.info("Could not read the history of %s (%s); pushing anyway", self.client.target.repo_id, error)
            return False
        own = [now - t for t in self._own_commits]
        ages = ages if len(ages) >= len(own) else own  # a squashed history no longer shows our own commits
        if len(ages) < self.max_commits_per_hour:
            return False
        oldest = sorted(ages)[:self.max_commits_per_hour][-1]  # the commit whose hour ends first frees a slot
        self._not_before = now + max(1.0, 3600 - oldest)
        logger.info("%s made %d commits in the last hour (budget %d): next push in %.0fs", self.client.target.repo_id,
                    len(ages), self.max_commits_per_hour, self._not_before - now)
        return True

    # Pushing -----------------------------------------------------------------------------------------------------

    def push(self, deadline: float | None = None, *, scheduled: bool = False) -> CommitInfo | None:
        """Push on the caller's thread, retrying transient failures until `deadline` (a `clock()` value).

        A scheduled push skips its turn (returns None) when another process of the machine pushed this repo less
        than an interval ago, or is pushing it now: that commit carries this committer's logdirs too.

        Returns:
            The commit, or None when nothing had changed (or the committer is disabled).

        Raises:
            HubAuthError: the token was rejected.
            RetriesExhausted: the deadline passed, or the committer was stopped, before a retry succeeded.
            Exception: what the Hub client raised last; nothing is recorded as committed then.
        """
        repo_id = self.client.target.repo_id
        started = self.clock()  # the interval runs from the start of a push: pushes come every interval, no drift
        try:
            info = self._retry.call(lambda: self._upload_once(scheduled), what=f"Push to {repo_id}", deadline=deadline,
                                    clock=self.clock, sleep=lambda seconds: self._wait(self._stop, seconds))
        except BaseException as error:
            self._failures += 1
            self._last_error = error
            if _status(error) == 429:
                self._pace = min(self._pace * 2, _MAX_PACE)
            # Not a warning: the training log stays clean, the next push retries, and close() reports what is left.
            logger.info("Push to %s failed; the files stay pending for the next push: %s", repo_id, redact(str(error)))
            raise
        else:
            self._failures = 0
            self._last_error = None
            self._pace = max(1.0, self._pace * 0.8)
            return info
        finally:
            # A success counts the interval from its start; a failure its backoff from its end.
            self._last_push = started if self._failures == 0 else self.clock()

    def _upload_once(self, scheduled: bool = False) -> CommitInfo | None:
        """Flush the writers, take the machine's turn, plan each logdir under its lock, commit (in chunks), record."""
        with self._lock:
            members = list(self._members)
        for member in members:
            member.before_push()
        if not self.enabled or not members:
            return None
        self.client.ensure_repo()
        own = [m.uploader for m in members]
        if self.machine is None:
            return self._commit(own)
        interval = self.every * 60 * _SKIP_WITHIN if scheduled else None
        with self.machine.turn(interval, timeout=0.0 if scheduled else _LOCK_WAIT) as entries:
            if entries is None:
                return None  # another process of this machine pushed this repo just now, our logdirs with it
            mine = {u.logdir.resolve() for u in own}
            others = [Uploader(path, spec) for path, spec in entries.items() if path not in mine and path.is_dir()]
            info = self._commit(own + others)
        if others:
            self.machine.forget_finished({u.logdir for u in others if not u.pending()})
        return info

    def _commit(self, members: list[Uploader]) -> CommitInfo | None:
        with ExitStack() as stack:
            # Two writers of this process on one logdir (a notebook cell run twice) upload it once, under one lock:
            # with the files that either may still append to.
            unique: dict[tuple[str, str, str], Uploader] = {}
            also_open: dict[tuple[str, str, str], list[Path]] = {}
            for uploader in members:
                if uploader.key in unique:
                    also_open.setdefault(uploader.key, []).extend(uploader.open_files())
                else:
                    unique[uploader.key] = uploader
            # Locks are taken in one order, so that processes sharing logdirs cannot deadlock.
            uploaders = sorted(unique.values(), key=lambda u: u.key)
            batches = [batch for u in uploaders
                       if (batch := u.begin(stack, also_open=also_open.get(u.key))) is not None]
            if not batches:
                return None
            # In logdir order, then name order: TensorBoard never sees a later event file of a run without the
            # earlier ones, even when a backlog goes up in several commits.
            items = [(batch, i) for batch in batches for i in range(len(batch.planned))]
            info = None
            while items:
                room = self.max_files_per_commit - (1 if self.client.card_pending else 0)
                chunk, items = items[:room], items[room:]
                size = sum(batch.planned[i].size for batch, i in chunk)
                try:
                    info = self.client.commit([batch.operations[i] for batch, i in chunk],
                                              f"Upload TensorBoard logs: {len(chunk)} file(s), {size} bytes")
                except CommitNotConfirmed:
                    for batch in batches:
                        batch.abandon()  # huggingface_hub will not send an operation it believes committed again
                    raise
                self._own_commits.append(self.clock())
                for batch in batches:
                    indices = [i for b, i in chunk if b is batch]
                    if indices:
                        batch.record(info, indices)
                logger.info("Committed %d file(s) to %s (%s)", len(chunk), self.client.target.repo_id, info.oid)
        self._squash_if_asked([u.spec.squash for u in uploaders])
        return info


    def _squash_if_asked(self, policies: list[bool | int]) -> None:
        if any(policy is True for policy in policies):
            self.client.squash()
            return
        limits = [policy for policy in policies if policy]
        if limits and self.client.commit_count() > min(limits):
            self.client.squash()


class CommitterMember:
    """One writer's handle on its repo's committer: `trigger()`, `stop()`, and the final push at close."""

    def __init__(self, committer: Committer, member: _Member) -> None:
        self.committer = committer
        self._member = member
        self._left = False

    @property
    def enabled(self) -> bool:
        return self.committer.enabled

    @property
    def stopped(self) -> bool:
        """Whether this writer's logdir is no longer pushed (it left, or the committer stopped)."""
        return self._left or self.committer.stopped

    @property
    def alive(self) -> bool:
        """Whether the committer's thread is running (it may still serve other writers after this one left)."""
        return self.committer.alive

    @property
    def last_future(self) -> Future | None:
        """The Future of the committer's latest push, scheduled or triggered."""
        return self.committer.last_future

    def next_push(self) -> Future:
        """The Future of the committer's next push, scheduled or triggered, without asking for one."""
        return self.committer.next_push()

    def trigger(self, timeout: float | None = None) -> Future:
        """Push now; the Future resolves to the commit info, or None if nothing had changed.

        Everything logged before this call is in that commit. If a push is already waiting to start, its Future is
        returned instead of queueing another. A push that fails, or has not finished after `timeout` seconds (the
        writer's `push_timeout` by default), fails the Future with `PushError`; its files stay pending.

        Args:
            timeout: seconds before the Future fails with `PushError` if the push has not finished.

        Example:
            ```py
            >>> writer.scheduler.trigger().result()   # push now and wait for the commit
            ```
        """
        if self._left:
            future: Future = Future()
            future.set_exception(CommitterStopped("This writer's pushes are stopped; use `hf-summary sync` to push."))
            return future
        timeout = self._member.push_timeout if timeout is None else timeout
        return self.committer.trigger(None if timeout is None else self.committer.clock() + timeout)

    def stop(self, timeout: float | None = 5.0) -> None:
        """Stop pushing this writer's logdir; the thread ends at once when no other writer shares it."""
        if not self._left:
            self._left = True
            self.committer.leave(self._member, timeout)

    def close(self, timeout: float) -> CommitInfo | None:
        """Final push, waiting at most `timeout` seconds, then stop. Raises what the push raised."""
        if self.stopped:
            return None
        future = self.committer.trigger(deadline=self.committer.clock() + timeout)
        progress = FinalPushProgress(f"Final push to {self.committer.client.target.repo_id}")
        try:
            # The Future fails with PushError at the deadline; waiting a little longer lets that error arrive first.
            return progress.wait(future, timeout + 5)
        finally:
            self.stop(timeout=1.0)


_SKIP_WITHIN = 0.9  # a scheduled push skips its turn when the machine pushed less than this many intervals ago
_LOCK_WAIT = 60.0  # seconds a triggered push waits for another process's push of the same repo to end
_MAX_PACE = 16.0  # a repo over its quota pushes at most every 16 intervals until successes narrow it back


def _status(error: BaseException) -> int | None:
    """The HTTP status of a push's failure, looking through RetriesExhausted."""
    cause = error.__cause__ if isinstance(error, RetriesExhausted) and error.__cause__ else error
    return http_status(cause)


def _reason(error: BaseException) -> str:
    cause = error.__cause__ if isinstance(error, RetriesExhausted) and error.__cause__ else error
    text = redact(str(cause)).strip().splitlines()
    return f"{type(cause).__name__}: {text[0]}" if text else type(cause).__name__


_registry: dict[tuple[Any, ...], Committer] = {}
_registry_lock = threading.RLock()


def join_committer(key: tuple[Any, ...], make: Callable[[], Committer], uploader: Uploader, *, every: float,
                   before_push: Callable[[], None] = lambda: None,
                   push_timeout: float | None = None) -> CommitterMember:
    """Join the running committer for `key` (endpoint, repo, branch, token, ...), started from `make()` if none."""
    with _registry_lock:
        committer = _registry.get(key)
        if committer is None or committer.stopped:
            committer = _registry[key] = make().start()
        return committer.join(uploader, every=every, before_push=before_push, push_timeout=push_timeout)


def _after_fork_in_child() -> None:
    # The parent's committers have no thread here: new writers of the child start their own.
    _registry.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _forget(committer: Committer) -> None:
    with _registry_lock:
        for key, value in list(_registry.items()):
            if value is committer:
                del _registry[key]
