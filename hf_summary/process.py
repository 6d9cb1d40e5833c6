"""What one process shares, in one visible object: `STATE`.

- the schedules by target (writers of one process pushing to one repo and branch share one, so a sweep makes one
  commit per interval; the sharing is automatic, but here for anyone to see and for tests to reset);
- the open writers (the exit hook closes them), the live event queues, the companion link, the current `init()` run,
  the user's request quota as the Hub's answers tell it;
- the one at-fork hook: a forked child (a data-loader worker) inherits these objects but none of their threads.

This module imports nothing of the package: every side registers here, so no import cycle goes through it.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable
from typing import Any, Protocol, TypeVar, cast


class Shared(Protocol):
    """Something the writers of one process share under a key (a schedule)."""

    @property
    def stopped(self) -> bool: ...


class ForkAware(Protocol):
    """Something holding threads, locks or descriptors that a forked child must not use as its parent does."""

    def after_fork_in_child(self) -> None: ...


class CompanionLink(ForkAware, Protocol):
    """The link to this process's companion: its lock is held across fork()."""

    def before_fork(self) -> None: ...

    def after_fork_in_parent(self) -> None: ...


S = TypeVar("S", bound=Shared)


class ProcessState:
    """The process's shared objects; `STATE` is the one instance.

    Example:
        ```py
        >>> from hf_summary.process import STATE
        >>> len(STATE.schedules)   # one per repo and branch that this process's writers push to
        1
        ```
    """

    def __init__(self) -> None:
        # Reentrant: a writer that joins a schedule may stop another one of the same key under it.
        self.lock = threading.RLock()
        self.schedules: dict[tuple[Any, ...], Shared] = {}
        self.open_writers: weakref.WeakSet[Any] = weakref.WeakSet()  # not closed yet: the exit hook closes them
        self.live_queues: weakref.WeakSet[Any] = weakref.WeakSet()  # event queues whose files a child writes apart
        self.companion: CompanionLink | None = None  # started with the first writer that a crash must not lose
        self.run: Any = None  # the run of `hf_summary.init()`, which `log()` and `finish()` act on
        self.quota: Any = None  # what the Hub's answers said of the user's request quota (upload/quota.py)
        self.said: set[str] = set()  # notices given once per process

    def shared(self, key: tuple[Any, ...], make: Callable[[], S]) -> S:
        """The object shared under `key`, made by `make()` if there is none or it stopped.

        Hold `lock` while using it: a shared object stops when its last user leaves, under that lock.
        """
        for other, value in list(self.schedules.items()):
            if value.stopped:
                del self.schedules[other]
        found = self.schedules.get(key)
        if found is None:
            made = self.schedules[key] = make()
            return made
        return cast(S, found)

    def _before_fork(self) -> None:
        if self.companion is not None:
            self.companion.before_fork()

    def _after_fork_in_parent(self) -> None:
        if self.companion is not None:
            self.companion.after_fork_in_parent()

    def _after_fork_in_child(self) -> None:
        self.lock = threading.RLock()  # the parent's may have been held by one of its other threads
        self.schedules.clear()  # the parent's have no thread here: new writers of the child start their own
        for queue in list(self.live_queues):
            queue.after_fork_in_child()
        if self.companion is not None:
            self.companion.after_fork_in_child()


STATE = ProcessState()
os.register_at_fork(before=STATE._before_fork, after_in_parent=STATE._after_fork_in_parent,
                    after_in_child=STATE._after_fork_in_child)
