"""A writer's handle on the schedule of its target (`writer.scheduler`), when the schedule runs in this process."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

from .errors import SchedulerStopped
from .progress import FinalPushProgress

if TYPE_CHECKING:  # the companion imports this module while it waits: no filelock, no huggingface_hub then
    from .uploader import Uploader

# scheduled: the interval's push, which may skip a turn or wait for the budget and carry more; asked: trigger(),
# pushed at once; final: a writer's close() or a one-off push, which waits for the budget up to its deadline.
Kind = Literal["scheduled", "asked", "final"]


@dataclass(eq=False)
class Member:
    """One logdir the schedule pushes, and what its writer asked for."""

    uploader: Uploader
    every: float  # minutes
    push_timeout: float | None  # seconds a trigger() of this member waits at most; None for no limit


class Shared(Protocol):
    """What a writer's handle asks of the schedule it shares with the other writers of its target
    (`schedule.Schedule`)."""

    enabled: bool
    membership: threading.RLock
    clock: Callable[[], float]
    connected: Future
    last_future: Future | None

    @property
    def name(self) -> str: ...

    @property
    def stopped(self) -> bool: ...

    @property
    def alive(self) -> bool: ...

    def next_push(self) -> Future: ...

    def trigger(self, deadline: float | None = None, kind: Kind = "asked") -> Future: ...

    def leave(self, member: Member) -> bool: ...

    def stop(self, timeout: float | None = 5.0) -> None: ...


class ScheduleMember:
    """One writer's handle on its target's schedule (`writer.scheduler`): `trigger()`, `next_push()`, `stop()`,
    and the final push at close."""

    def __init__(self, schedule: Shared, member: Member) -> None:
        self.schedule = schedule
        self._member = member
        self._left = False

    @property
    def enabled(self) -> bool:
        """False offline (HF_HUB_OFFLINE): nothing is pushed, and `trigger()` resolves to None at once."""
        return self.schedule.enabled

    @property
    def stopped(self) -> bool:
        """Whether this writer's logdir is no longer pushed (it left, or the schedule stopped)."""
        return self._left or self.schedule.stopped

    @property
    def alive(self) -> bool:
        """Whether the schedule's thread is running (it may still serve other writers after this one left)."""
        return self.schedule.alive

    @property
    def name(self) -> str:
        """The target, as `namespace/name` once the Hub has answered."""
        return self.schedule.name

    @property
    def connected(self) -> Future:
        """The schedule's first contact with the Hub: the target's full name, or what stopped it."""
        return self.schedule.connected

    @property
    def last_future(self) -> Future | None:
        """The Future of the schedule's latest push, scheduled or triggered."""
        return self.schedule.last_future

    def next_push(self) -> Future:
        """The Future of the next push, scheduled or triggered, without asking for one."""
        return self.schedule.next_push()

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
            return failed(SchedulerStopped("This writer's pushes are stopped; use `hf-summary sync` to push."))
        timeout = self._member.push_timeout if timeout is None else timeout
        return self.schedule.trigger(None if timeout is None else self.schedule.clock() + timeout)

    def stop(self, timeout: float | None = 5.0) -> None:
        """Stop pushing this writer's logdir; the thread ends at once when no other writer shares it."""
        if self._left:
            return
        self._left = True
        with self.schedule.membership:  # no writer may join a schedule that is about to stop
            if self.schedule.leave(self._member):
                self.schedule.stop(timeout)

    def close(self, timeout: float) -> Any:
        """Final push, waiting at most `timeout` seconds (and for the target's budget within it), then stop.

        Raises:
            PushError: the push failed, or the budget or the Hub did not let it finish in time.
        """
        if self.stopped:
            return None
        future = self.schedule.trigger(deadline=self.schedule.clock() + timeout, kind="final")
        progress = FinalPushProgress(f"Final push to {self.schedule.name}")
        try:
            # The Future fails with PushError at the deadline; waiting a little longer lets that error arrive first.
            return progress.wait(future, timeout + 5)
        finally:
            self.stop(timeout=1.0)


def forked_child_error(owner: int) -> SchedulerStopped:
    """What a push asked for in a forked child of the process that runs the writer's pushes is answered with."""
    return SchedulerStopped(
        f"This writer's uploads belong to process {owner}, and this is a forked child of it: the parent pushes what "
        "this process logs to its files; or create a new HFSummaryWriter here.")


def failed(error: BaseException) -> Future:
    """A Future that failed with `error`."""
    future: Future = Future()
    future.set_exception(error)
    return future
