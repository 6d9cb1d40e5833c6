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
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .. import defaults
from .retry import RetryPolicy

if TYPE_CHECKING:
    from huggingface_hub import CommitInfo

    from .hub import HubClient
    from .uploader import Uploader

logger = logging.getLogger(__name__)

Clock = Callable[[], float]
# Waits on an event for at most `timeout` seconds; returns whether it was set (threading.Event.wait's contract).
Wait = Callable[[threading.Event, float], bool]


def _wait(event: threading.Event, timeout: float) -> bool:
    return event.wait(timeout)


class CommitterStopped(RuntimeError):
    """The committer was stopped: nothing more is pushed by it. `hf-summary sync` pushes what is left."""


@dataclass(eq=False)
class _Member:
    uploader: Uploader
    every: float  # minutes
    before_push: Callable[[], None]


@dataclass
class _Request:
    """A push asked for by `trigger()`; triggers that arrive before it starts share it."""

    future: Future = field(default_factory=Future)
    deadline: float | None = None  # a clock() value after which the push stops retrying


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
        clock: Clock = time.monotonic,
        wait: Wait = _wait,
    ) -> None:
        self.client = client
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

    # Members -----------------------------------------------------------------------------------------------------

    def join(self, uploader: Uploader, *, every: float | None = None,
             before_push: Callable[[], None] = lambda: None) -> CommitterMember:
        """Add a logdir to push; `every` minutes is the interval it asks for, `before_push` runs before each push."""
        member = _Member(uploader, self._default_every if every is None else every, before_push)
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
            if last:
                self.stop(timeout)

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
        self._thread = threading.Thread(target=self._run, name="hf_summary-committer", daemon=True)
        self._thread.start()
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
            deadline: a `clock()` value after which the push stops retrying; the earliest deadline wins when
                triggers share a push.
        """
        with self._lock:
            if self._stop.is_set():
                future: Future = Future()
                future.set_exception(CommitterStopped("The committer is stopped; use `hf-summary sync` to push."))
                return future
            if self._request is None:
                self._request = _Request(self._take_next(), deadline)
            elif deadline is not None:
                current = self._request.deadline
                self._request.deadline = deadline if current is None else min(current, deadline)
            future = self._request.future
        self._wake.set()
        return future

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
        self._wake.set()
        _forget(self)
        for future in waiting:
            if future.set_running_or_notify_cancel():
                future.set_result(None)
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
            request = request or _Request(self._take_next())
        self.last_future = request.future
        if request.future.set_running_or_notify_cancel():
            try:
                request.future.set_result(self.push(request.deadline))
            except BaseException as error:  # noqa: B036 - the Future carries it to whoever waits
                request.future.set_exception(error)
        return True

    def _run(self) -> None:
        self._connect()
        while self.run_once():
            pass

    def _connect(self) -> None:
        """Create the repo once at start, so that a writer learns early whether the Hub takes its token."""
        if not self.connected.set_running_or_notify_cancel():
            return
        if not self.enabled:
            self.connected.set_result(None)
            return
        try:
            self.connected.set_result(self.client.ensure_repo())
        except BaseException as error:  # noqa: B036 - the Future carries it to the writer's constructor
            self.connected.set_exception(error)

    def _next_push_at(self) -> float:
        interval = self.every * 60
        if self._failures:
            return self._last_push + self._retry.next_push_delay(self._failures, interval, self._last_error)
        return self._last_push + interval

    # Pushing -----------------------------------------------------------------------------------------------------

    def push(self, deadline: float | None = None) -> CommitInfo | None:
        """Push on the caller's thread, retrying transient failures until `deadline` (a `clock()` value).

        Returns:
            The commit, or None when nothing had changed (or the committer is disabled).

        Raises:
            HubAuthError: the token was rejected.
            RetriesExhausted: the deadline passed, or the committer was stopped, before a retry succeeded.
            Exception: what the Hub client raised last; nothing is recorded as committed then.
        """
        repo_id = self.client.target.repo_id
        try:
            info = self._retry.call(self._upload_once, what=f"Push to {repo_id}", deadline=deadline,
                                    clock=self.clock, sleep=lambda seconds: self._wait(self._stop, seconds))
        except BaseException as error:
            self._failures += 1
            self._last_error = error
            logger.error("Push to %s failed; the files stay pending for the next push: %s", repo_id, error)
            raise
        else:
            self._failures = 0
            self._last_error = None
            return info
        finally:
            self._last_push = self.clock()

    def _upload_once(self) -> CommitInfo | None:
        """Flush the writers, plan each logdir under its lock, make one commit, record it, squash if asked."""
        with self._lock:
            members = list(self._members)
        for member in members:
            member.before_push()
        if not self.enabled or not members:
            return None
        self.client.ensure_repo()
        with ExitStack() as stack:
            # Locks are taken in one order, so that processes sharing logdirs cannot deadlock.
            uploaders = sorted((m.uploader for m in members), key=lambda u: str(u.logdir.resolve()))
            batches = [batch for u in uploaders if (batch := u.begin(stack)) is not None]
            if not batches:
                return None
            operations = [op for batch in batches for op in batch.operations]
            files, size = sum(len(b.planned) for b in batches), sum(b.size for b in batches)
            info = self.client.commit(operations, f"Upload TensorBoard logs: {files} file(s), {size} bytes")
            for batch in batches:
                batch.record(info)
        logger.info("Committed %d file(s) to %s (%s)", files, self.client.target.repo_id, info.oid)
        if any(u.spec.squash for u in uploaders):
            self.client.squash()
        return info


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

    def trigger(self) -> Future:
        """Push now; the Future resolves to the commit info, or None if nothing had changed.

        Everything logged before this call is in that commit. If a push is already waiting to start, its Future is
        returned instead of queueing another.

        Example:
            ```py
            >>> writer.scheduler.trigger().result()   # push now and wait for the commit
            ```
        """
        if self._left:
            future: Future = Future()
            future.set_exception(CommitterStopped("This writer's pushes are stopped; use `hf-summary sync` to push."))
            return future
        return self.committer.trigger()

    def stop(self, timeout: float | None = 5.0) -> None:
        """Stop pushing this writer's logdir; the thread ends at once when no other writer shares it."""
        if not self._left:
            self._left = True
            self.committer.leave(self._member, timeout)

    def close(self, timeout: float) -> CommitInfo | None:
        """Final push, waiting at most `timeout` seconds, then stop. Raises what the push raised."""
        if self.stopped:
            return None
        try:
            return self.committer.trigger(deadline=self.committer.clock() + timeout).result(timeout)
        finally:
            self.stop(timeout=1.0)


_registry: dict[tuple[Any, ...], Committer] = {}
_registry_lock = threading.RLock()


def join_committer(key: tuple[Any, ...], make: Callable[[], Committer], uploader: Uploader, *, every: float,
                   before_push: Callable[[], None] = lambda: None) -> CommitterMember:
    """Join the running committer for `key` (endpoint, repo, branch, token, ...), started from `make()` if none."""
    with _registry_lock:
        committer = _registry.get(key)
        if committer is None or committer.stopped:
            committer = _registry[key] = make().start()
        return committer.join(uploader, every=every, before_push=before_push)


def _forget(committer: Committer) -> None:
    with _registry_lock:
        for key, value in list(_registry.items()):
            if value is committer:
                del _registry[key]
