"""The commit scheduler: one thread that pushes every N minutes and on `trigger()`, one commit at a time."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING

from .retry import Backoff, call_with_retries

if TYPE_CHECKING:
    from huggingface_hub import CommitInfo

    from .uploader import Uploader

logger = logging.getLogger(__name__)


class CommitScheduler:
    """Pushes a logdir to the Hub every `every` minutes, and when asked.

    Triggers that arrive while a commit runs share one follow-up commit, so a burst of triggers makes at most two
    commits. Transient Hub failures are retried with backoff inside a push; a push that still fails leaves its
    files pending for the next one, sooner than the interval.

    Args:
        uploader: does one push.
        every: minutes between pushes.
        before_push: called on the scheduler thread first (the writer's flush), so a push holds everything logged
            before the trigger that caused it.
        backoff: retry policy for one push.
        enabled: False makes no network call at all (offline mode): futures resolve to None.

    Example:
        ```py
        >>> writer.scheduler.trigger().result()   # push now and wait for the commit
        ```
    """

    def __init__(
        self,
        uploader: Uploader,
        *,
        every: float,
        before_push: Callable[[], None] = lambda: None,
        backoff: Backoff | None = None,
        enabled: bool = True,
    ) -> None:
        self.uploader = uploader
        self.every = every
        self.backoff = backoff or Backoff()
        self.enabled = enabled
        self._before_push = before_push
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._pending: Future | None = None
        self._deadline: float | None = None
        self._failures = 0
        self.last_future: Future | None = None
        self._thread = threading.Thread(target=self._run, name="hf_summary-scheduler", daemon=True)
        self._thread.start()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def trigger(self) -> Future:
        """Push now; the Future resolves to the commit info, or None if nothing had changed.

        Everything logged before this call is in that commit. If a push is already waiting to start, its Future is
        returned instead of queueing another.
        """
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
        if pending is not None and pending.set_running_or_notify_cancel():
            pending.set_result(None)
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def close(self, timeout: float) -> CommitInfo | None:
        """Final push, waiting at most `timeout` seconds, then stop. Raises what the push raised."""
        if self._stop.is_set():
            return None
        self._deadline = time.monotonic() + timeout
        future = self.trigger()
        try:
            return future.result(timeout)
        finally:
            self.stop(timeout=1.0)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        next_push = time.monotonic() + self.every * 60
        while not self._stop.is_set():
            self._wake.wait(max(0.0, next_push - time.monotonic()))
            if self._stop.is_set():
                return
            self._wake.clear()
            with self._lock:
                future, self._pending = self._pending, None
            future = future or Future()
            self.last_future = future
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(self._push())
                self._failures = 0
                next_push = time.monotonic() + self.every * 60
            except BaseException as error:  # noqa: B036 - the Future carries it to whoever waits
                self._failures += 1
                logger.error("Push to %s failed; the files stay pending for the next push: %s",
                             self.uploader.client.target.repo_id, error)
                future.set_exception(error)
                retry_in = min(self.every * 60, self.backoff.cap * 2 ** min(self._failures, 6))
                next_push = time.monotonic() + retry_in

    def _push(self) -> CommitInfo | None:
        if not self.enabled:
            self._before_push()
            return None
        self._before_push()
        return call_with_retries(
            self.uploader.push, self.backoff, what="Push to the Hub", stop=self._stop, deadline=self._deadline
        )
