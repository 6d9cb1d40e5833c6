"""The writers' rings, in the companion: each drained into its writer's event files (events/drain.py).

The companion's loop serves the rings (reads them every `POLL` seconds, and at each request); a push, on the
schedule's thread, writes a logdir's rings up to now and rolls their files first (`write_for_push`). One lock per
ring keeps the two apart.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Seconds between the companion's reads of the rings: how long an event may sit in shared memory before it is on disk
# (a flush, a push and the end of the training process do not wait for it).
POLL = 0.05
# Seconds a push waits for a record below a trigger's mark that its thread is still writing (microseconds, unless
# the thread was stopped in the middle of the call): then it pushes what is there, and the rest goes next time.
_MARK_WAIT = 2.0


class Ring:
    """One writer's ring, in the companion: drained into the writer's event files."""

    def __init__(self, fd: int, message: dict[str, Any]) -> None:
        from ..events.drain import RingDrain
        from ..events.ring import RingReader, open_ring

        self.logdir = Path(message["logdir"])
        self.drain = RingDrain(RingReader(open_ring(fd)), self.logdir, message.get("suffix") or "",
                               message.get("pid"), hold_size=message.get("hold_size"))
        # Flushes and the detach, waiting for their records.
        self.requests: list[dict[str, Any]] = []
        self.detached = False
        self._wanted = 0  # a trigger's mark: the next push writes every record below it first
        self.lock = threading.Lock()  # the loop's reads, a push's (write_for_push), the detach
        # Like tensorboardX, the writer's first file exists, with its header record, as soon as the writer does.
        main = self.drain.files.run("")
        main.open()
        main.write_pending()

    def open_files(self) -> list[str]:
        return [str(path) for path in self.drain.files.open_files()]

    def serve(self, answer: Callable[[dict[str, Any]], None]) -> None:
        """Write what the ring holds; answer the requests whose records are all written."""
        with self.lock:
            if self.detached:
                return
            self.drain.drain()
            done = self.drain.reader.committed()[0]
            error = self.drain.error
            for request in list(self.requests):
                if request["upto"] >= done and error is None:
                    continue  # a record before the mark is still being written by its thread
                self.requests.remove(request)
                message = f"{type(error).__name__}: {error}" if error is not None else None
                read: dict[str, Any] = {}
                if request["op"] == "detach":
                    message = self._finish(final=True, waited=True) or message
                    # What the last reading read: a write that came after it is logged again by the writer (landed).
                    read = {"read_below": self.drain.reader.seq, "skipped": sorted(self.drain.reader.skipped)}
                elif request.get("roll_size") and error is None:
                    self.drain.files.roll(int(request["roll_size"]))
                answer({"req": request["req"], "error": message, "open": self.open_files(), **read,
                        **self.drain.report()})

    def want(self, upto: int) -> None:
        """The next push writes every record below `upto` first (a trigger's mark)."""
        self._wanted = max(self._wanted, upto)

    def write_for_push(self, roll_size: int) -> None:
        """A push's first step (on the schedule's thread): write what the ring holds, past the last trigger's mark
        (a record before it may still be being written by its thread: waited for, a moment at most), and close the
        files past `roll_size`."""
        deadline = time.monotonic() + _MARK_WAIT
        while True:
            with self.lock:
                if self.detached:
                    return
                self.drain.drain()
                if self.drain.reader.committed()[0] > self._wanted or self.drain.error is not None \
                        or time.monotonic() > deadline:
                    if self.drain.error is None:
                        self.drain.files.roll(roll_size)
                    return
            time.sleep(0.001)

    def open_paths(self) -> list[Path]:
        with self.lock:
            return [] if self.detached else list(self.drain.files.open_files())

    def finish(self, *, final: bool, waited: bool = False) -> str | None:
        """Write everything the ring holds; if `final` (the writer closed, or its process ended), close the files,
        fsynced, and the ring. Returns what went wrong, if anything.

        Args:
            waited: every record the writer put was read already (its detach waited for them): a missing one is
                not looked past, which costs a scan of the ring.
        """
        with self.lock:
            return self._finish(final=final, waited=waited)

    def _finish(self, *, final: bool, waited: bool) -> str | None:
        if self.detached:
            return None
        self.drain.drain(final=final and not waited)
        if not final:
            return None
        failures = self.drain.close()
        self.detached = True
        self.drain.reader.memory.close()
        if self.drain.error is not None:
            return f"{type(self.drain.error).__name__}: {self.drain.error}"
        return "; ".join(f"could not close {run.path}: {failure}" for run, failure in failures) or None
