"""The commit scheduler: one thread per repo and branch that pushes every N minutes and on `trigger()`.

Writers of one process that push to the same repo and branch share that thread, so a sweep of N writers makes one
commit per interval instead of N (the Hub rate-limits commits per repo). Each writer holds a `WriterScheduler`, its
own view of the shared thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .retry import Backoff, call_with_retries
from .uploader import push_together

if TYPE_CHECKING:
    from huggingface_hub import CommitInfo

    from .hub import HubClient
    from .uploader import Uploader

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class _Member:
    uploader: Uploader
    before_push: Callable[[], None]
    every: float


class CommitScheduler:
    """The thread that pushes the logdirs of its members to one repo and branch, one commit at a time.

    Triggers that arrive while a commit runs share one follow-up commit, so a burst of triggers makes at most two
    commits. Transient Hub failures are retried with backoff inside a push; a push that still fails leaves its
    files pending for the next one, which comes sooner than the interval.

    Args:
        client: the Hub client of the repo.
        backoff: retry policy for one push.
        enabled: False makes no network call at all (offline mode): futures resolve to None.
    """

    def __init__(self, client: HubClient, *, backoff: Backoff | None = None, enabled: bool = True) -> None:
        self.client = client
        self.backoff = backoff or Backoff()
        self.enabled = enabled
        self._members: list[_Member] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._pending: Future | None = None
        self._deadline: float | None = None
        self._failures = 0
        self.last_future: Future | None = None
        self._thread = threading.Thread(target=self._run, name="hf_summary-scheduler", daemon=True)
        self._thread.start()

    def join(self, uploader: Uploader, *, every: float, before_push: Callable[[], None] = lambda: None
             ) -> WriterScheduler:
        """Add a logdir to push; `every` minutes is its interval (the shared thread uses the shortest)."""
        member = _Member(uploader, before_push, every)
        with self._lock:
            self._members.append(member)
        self._wake.set()  # re-plan the next push with the new interval
        return WriterScheduler(self, member)

    def leave(self, member: _Member, timeout: float | None = 5.0) -> None:
        """Stop pushing a member's logdir; the thread ends when the last member leaves."""
        with _registry_lock:  # no writer may join a scheduler that is about to stop
            with self._lock:
                if member in self._members:
                    self._members.remove(member)
                last = not self._members
            if last:
                self.stop(timeout)

    @property
    def every(self) -> float:
        with self._lock:
            return min((m.every for m in self._members), default=5.0)

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def trigger(self) -> Future:
        """Push now; the Future resolves to the commit info, or None if nothing had changed."""
        with self._lock:
            if self._stop.is_set():
                future: Future = Future()
                future.set_exception(RuntimeError("The scheduler is stopped; use `hf-summary sync` to push."))
                return future
            if self._pending is None:
                self._pending = Future()
            future = self._pending
        self._wake.set()
        return future

    def stop(self, timeout: float | None = 5.0) -> None:
        """End the thread: it stops waiting at once, and a push in progress gives up its retries."""
        with self._lock:
            self._stop.set()
            pending, self._pending = self._pending, None
        self._wake.set()
        _forget(self)
        if pending is not None and pending.set_running_or_notify_cancel():
            pending.set_result(None)
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def _run(self) -> None:
        last_push = time.monotonic()
        while not self._stop.is_set():
            retry_in = min(self.backoff.cap * 2 ** min(self._failures, 6), self.every * 60) if self._failures else None
            next_push = last_push + (retry_in if retry_in is not None else self.every * 60)
            self._wake.wait(max(0.0, next_push - time.monotonic()))
            if self._stop.is_set():
                return
            self._wake.clear()
            with self._lock:
                future, self._pending = self._pending, None
            if future is None and time.monotonic() < next_push:
                continue  # woken to re-plan (a member joined), not to push
            future = future or Future()
            self.last_future = future
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(self._push())
                self._failures = 0
            except BaseException as error:  # noqa: B036 - the Future carries it to whoever waits
                self._failures += 1
                logger.error("Push to %s failed; the files stay pending for the next push: %s",
                             self.client.target.repo_id, error)
                future.set_exception(error)
            last_push = time.monotonic()

    def _push(self) -> CommitInfo | None:
        with self._lock:
            members = list(self._members)
        for member in members:
            member.before_push()
        if not self.enabled or not members:
            return None
        uploaders = [m.uploader for m in members]
        return call_with_retries(lambda: push_together(uploaders), self.backoff, what="Push to the Hub",
                                 stop=self._stop, deadline=self._deadline)


class WriterScheduler:
    """One writer's view of its repo's scheduler: `trigger()`, `stop()`, and the final push at close."""

    def __init__(self, shared: CommitScheduler, member: _Member) -> None:
        self._shared = shared
        self._member = member
        self._stopped = False

    @property
    def uploader(self) -> Uploader:
        return self._member.uploader

    @property
    def every(self) -> float:
        return self._member.every

    @property
    def enabled(self) -> bool:
        return self._shared.enabled

    @property
    def stopped(self) -> bool:
        return self._stopped or self._shared.stopped

    @property
    def alive(self) -> bool:
        """Whether a thread still pushes this writer's logdir."""
        return not self.stopped and self._shared.alive

    @property
    def last_future(self) -> Future | None:
        return self._shared.last_future

    def trigger(self) -> Future:
        """Push now; the Future resolves to the commit info, or None if nothing had changed.

        Everything logged before this call is in that commit. If a push is already waiting to start, its Future is
        returned instead of queueing another.

        Example:
            ```py
            >>> writer.scheduler.trigger().result()   # push now and wait for the commit
            ```
        """
        if self._stopped:
            future: Future = Future()
            future.set_exception(RuntimeError("The scheduler is stopped; use `hf-summary sync` to push."))
            return future
        return self._shared.trigger()

    def stop(self, timeout: float | None = 5.0) -> None:
        """Stop pushing this writer's logdir; the thread ends at once when no other writer shares it."""
        if not self._stopped:
            self._stopped = True
            self._shared.leave(self._member, timeout)

    def close(self, timeout: float) -> CommitInfo | None:
        """Final push, waiting at most `timeout` seconds, then stop. Raises what the push raised."""
        if self.stopped:
            return None
        self._shared._deadline = time.monotonic() + timeout
        try:
            return self.trigger().result(timeout)
        finally:
            self._shared._deadline = None
            self.stop(timeout=1.0)


_registry: dict[tuple, CommitScheduler] = {}
_registry_lock = threading.RLock()


def shared_client(key: tuple) -> HubClient | None:
    """The Hub client of the running scheduler for `key`, so that writers of one repo share its state."""
    with _registry_lock:
        scheduler = _registry.get(key)
        return scheduler.client if scheduler is not None and not scheduler.stopped else None


def join_shared(key: tuple, make: Callable[[], CommitScheduler], uploader: Uploader, *, every: float,
                before_push: Callable[[], None] = lambda: None) -> WriterScheduler:
    """Join the running scheduler for `key` (endpoint, repo, branch, token), made with `make()` if there is none."""
    with _registry_lock:
        scheduler = _registry.get(key)
        if scheduler is None or scheduler.stopped:
            scheduler = _registry[key] = make()
        return scheduler.join(uploader, every=every, before_push=before_push)


def _forget(scheduler: CommitScheduler) -> None:
    with _registry_lock:
        for key, value in list(_registry.items()):
            if value is scheduler:
                del _registry[key]
