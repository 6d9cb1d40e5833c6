"""The event queue: the typed hand-off from logging threads, and the one thread that writes event files in batches.

tensorboardX hands every event through a `multiprocessing.Queue`; here the logging thread only appends a tuple to a
deque (`put_scalar`, `put_event`) and the writer thread builds, frames and writes events in batches, waking once a
second (or when a flush or a full queue calls it) so that it does not take the GIL from the training loop at every
event.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..defaults import HOLD_SIZE, QUEUE_SIZE
from ..threads import start_thread
from .encoding import ScalarEncoder
from .files import RunFiles
from .held import Held
from .records import frame_record
from .tbx import Event, WriterClosed, clean_tag

if TYPE_CHECKING:
    from .ring import ScalarSlots

logger = logging.getLogger(__name__)

# What the deque holds. Tuples, not objects, keep the logging thread's share of the work small; only this module
# builds or reads them.
_SCALAR = 0  # (_SCALAR, run, tag, value, step, walltime)
_EVENT = 1  # (_EVENT, run, event)
_FLUSH = 2  # (_FLUSH, request)
_RAW = 3  # (_RAW, run, serialized event)

# Seconds between batches when nobody waits for a flush. Each wake-up takes the GIL from the training loop; measured
# on a 0.5 ms CPU step, waking every 0.05 s cost more than every 1 s. tensorboardX flushes every 120 s by default.
_WAKE_INTERVAL = 1.0
_WAKE_EVERY = 512  # items handled between wake-ups of loggers blocked on a full queue


class _FlushRequest:
    """A flush marker: set once everything queued before it is written, or failed to be."""

    def __init__(self, roll_size: int | None) -> None:
        self.roll_size = roll_size
        self.done = threading.Event()
        self.written = False  # everything before it is on disk, not held in memory


class EventQueue:
    """One writer thread for all the run folders of a `SummaryWriter` (its own and the `add_scalars` sub-runs).

    Args:
        logdir: the writer's folder; runs are folders relative to it ("" is the logdir itself).
        max_queue: events that may wait in memory; past that, logging blocks until the thread catches up.
        filename_suffix: appended to each event file name, as in tensorboardX.
        hold_size: bytes of events held in memory while the disk refuses them (events/held.py); logging never waits
            on the disk.
    """

    def __init__(self, logdir: str | os.PathLike[str], *, max_queue: int = QUEUE_SIZE,
                 filename_suffix: str = "", synchronous: bool = False, hold_size: int = HOLD_SIZE) -> None:
        self.logdir = Path(logdir)
        self.max_queue = max(1, max_queue)
        self._suffix = filename_suffix
        self._hold_size = hold_size
        self._reset()
        if synchronous:
            self._go_synchronous()
            return
        # Like tensorboardX, the run's first file exists, with its header record, as soon as the writer does.
        main = self._files.run("")
        main.open()
        main.write_pending()
        self._thread = start_thread(self._run, "hf_summary-event-writer")

    def _reset(self) -> None:
        self._queue: deque[tuple[Any, ...]] = deque()
        self._cond = threading.Condition(threading.Lock())
        self._files = RunFiles(self.logdir, self._suffix)
        self._held = Held(self.logdir, self._hold_size, logger.warning)
        self._scalars = ScalarEncoder(clean_tag)
        self.closed = False  # an attribute, not a property: add_scalar reads it at every call
        self.slots: ScalarSlots | None = None  # no ring to write into: every scalar is put (handoff.SharedEventQueue)
        self._synchronous = False

    def _go_synchronous(self) -> None:
        # A forked worker often ends with os._exit, which no writer thread would outlive: each event is written at
        # the call.
        self._synchronous = True
        self.max_queue = 1  # every put then reaches _wait_for_room, which writes it

    def after_fork_in_child(self) -> None:
        """In a forked child: forget the parent's queue and files, and write each event at the call from now on."""
        if self.closed:
            return
        # The parent's queued events are the parent's to write, and its files stay its own: the child starts with
        # a new queue and new files (named with its own pid).
        for run in self._files.runs.values():
            if run.fd is not None:
                os.close(run.fd)
        self._reset()
        self._go_synchronous()

    # Logging threads -------------------------------------------------------------------------------------------------

    def put_scalar(self, run: str, tag: str, value: Any, step: int | None, walltime: float) -> None:
        """Queue one scalar, already checked by the caller; blocks while `max_queue` items are waiting.

        Args:
            run: the run folder, relative to the logdir ("" for the logdir itself).
            tag: the tag as given; cleaned the way tensorboardX does when encoded.
            value: the value: a Python float, or a one-element tensor of the caller's own (a copy), read here.
            step: the step, an int in int64's range, or None for none.
            walltime: seconds since the epoch.

        Raises:
            WriterClosed: the queue is closed (a ValueError).
        """
        queue = self._queue
        item = (_SCALAR, run, tag, value, step, walltime)
        queue.append(item)
        if self.closed:  # checked after the append: see _take_back
            self._take_back(item)
        if len(queue) >= self.max_queue:
            self._wait_for_room()

    def put_event(self, run: str, event: Event) -> None:
        """Queue one `Event` for a run folder; blocks while `max_queue` items are waiting.

        Raises:
            WriterClosed: the queue is closed (a ValueError).
        """
        queue = self._queue
        item = (_EVENT, run, event)
        queue.append(item)
        if self.closed:
            self._take_back(item)
        if len(queue) >= self.max_queue:
            self._wait_for_room()

    def put_raw(self, run: str, data: bytes) -> None:
        """Queue one event already serialized (what another writer of the events left to write).

        Raises:
            WriterClosed: the queue is closed (a ValueError).
        """
        item = (_RAW, run, data)
        self._queue.append(item)
        if self.closed:
            self._take_back(item)
        if len(self._queue) >= self.max_queue:
            self._wait_for_room()

    def _take_back(self, item: tuple[Any, ...]) -> None:
        """An item put while the queue closed. Checked after the append, `closed` rules out the race with another
        thread's close(): had it been false, the writer thread, which ends only on an empty queue once closed, would
        write the item. True, the item was put too late for that thread, unless its last batch took it: still queued,
        it is taken back and the caller told (a writer then sends it to its reopened queue); gone, it is written.

        Raises:
            WriterClosed: the item was taken back.
        """
        try:
            self._queue.remove(item)
        except ValueError:
            return
        raise WriterClosed()

    def _wait_for_room(self) -> None:
        """Backpressure: block until the writer thread has taken the queue below `max_queue`."""
        queue = self._queue
        if self._synchronous:
            self._write_batch(queue)
            return
        with self._cond:
            self._cond.notify_all()
            while len(queue) >= self.max_queue and self._thread.is_alive():
                self._cond.wait(_WAKE_INTERVAL)

    def flush(self, roll_size: int | None = None, timeout: float | None = None) -> bool:
        """Write everything queued so far to disk and return once it is there.

        Args:
            roll_size: if given, close each run's event file that has reached this size, so that the next event
                starts a new file (done at commit boundaries so that closed files are uploaded once).
            timeout: seconds to wait at most; None waits until written.

        Returns:
            True if everything was written within `timeout`; False too while the disk refuses the events (full,
            read-only: the log says why), which are held in memory and written once it takes them.
        """
        request = _FlushRequest(roll_size)
        if self._synchronous:
            self._queue.append((_FLUSH, request))
            self._write_batch(self._queue)
        elif not self._thread.is_alive():
            return self.closed
        else:
            self._queue.append((_FLUSH, request))
        with self._cond:
            self._cond.notify_all()
        deadline = None if timeout is None else time.monotonic() + timeout
        # Wait in slices: a flush must not hang forever on a thread that is gone.
        while not request.done.wait(_WAKE_INTERVAL):
            if not self._thread.is_alive() or (deadline is not None and time.monotonic() >= deadline):
                return False
        return request.written

    def close(self, timeout: float | None = None) -> None:
        """Write everything, close the files (fsynced) and end the thread; what the disk still refuses is lost, and
        said so."""
        if self.closed:
            return
        try:
            self.flush(timeout=timeout)
        finally:
            self.closed = True
            with self._cond:
                self._cond.notify_all()
            if not self._synchronous:
                self._thread.join(timeout)
            if not self._thread_running():
                self._held.lose()
            for run, e in self._files.close():
                logger.error("Could not close event file %s: %s", run.path, e)

    def open_files(self) -> list[Path]:
        """The event files still open for appending; every other event file of this writer is final."""
        return self._files.open_files()

    def _thread_running(self) -> bool:
        return not self._synchronous and self._thread.is_alive()

    @property
    def alive(self) -> bool:
        """Whether events are still written: the writer thread runs (a forked child writes at each call)."""
        return self._synchronous or self._thread.is_alive()

    @property
    def pending(self) -> int:
        """Items queued and not yet written."""
        return len(self._queue)

    # Writer thread ---------------------------------------------------------------------------------------------------

    def _run(self) -> None:
        queue = self._queue
        while True:
            with self._cond:
                if not queue and not self.closed:
                    self._cond.wait(_WAKE_INTERVAL)
            closing = self.closed  # read before the queue: what was put before it was set is written (_take_back)
            if queue:
                self._write_batch(queue)
            elif closing:
                return
            elif self._held:
                self._write_files()  # nothing logged for a while: what is held is tried again all the same

    def _write_batch(self, queue: deque[tuple[Any, ...]]) -> None:
        # Drain what is there now; items appended meanwhile wait for the next batch.
        encode, runs, popleft = self._scalars.encode, self._files.runs, queue.popleft
        for count in range(1, len(queue) + 1):
            item = popleft()
            try:
                if item[0] == _SCALAR:  # most items: handled inline, this loop is the writer thread's hot path
                    _, run, tag, value, step, walltime = item
                    if type(value) is not float:
                        value = float(value.item())  # a tensor taken at the call: read here, off the training thread
                    file = runs.get(run) or self._files.run(run)
                    file.pending.append(frame_record(encode(tag, value, step, walltime)))
                else:
                    self._handle(item)
            except Exception:
                # Only an event that cannot be serialized gets here: it is lost, but nothing else is.
                logger.exception("Could not write an event to %s; it is skipped", self.logdir)
            if count % _WAKE_EVERY == 0:
                self._wake_loggers()  # a logger blocked on a full queue need not wait for the whole batch
        self._wake_loggers()
        self._write_files()

    def _wake_loggers(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def _handle(self, item: tuple[Any, ...]) -> None:
        kind = item[0]
        if kind == _EVENT:
            self._files.append(item[1], frame_record(item[2].SerializeToString()))
        elif kind == _RAW:
            self._files.append(item[1], frame_record(item[2]))
        else:
            self._complete_flush(item[1])

    def _write_files(self, force: bool = False) -> bool:
        """Write what is pending, after what is held; what the disk refuses is held (`held.py`), so that the queue
        is emptied whatever the disk does. True if nothing is held."""
        held, files = self._held, self._files
        if not held.write(self._write_run, force):
            for run in files.runs.values():  # behind what is held, in order
                for record in run.pending:
                    held.add(run.name, record)
                run.pending.clear()
            return False
        failed = files.write()
        for run, error in failed:
            held.hold(error if isinstance(error, OSError) else OSError(str(error)))
            for record in files.take_back(run):
                held.add(run.name, record)
        return not failed

    def _write_run(self, run: str, data: bytes) -> Exception | None:
        file = self._files.run(run)
        file.pending.append(data)
        failed = self._files.write([file])
        if failed:
            self._files.take_back(file)
            return failed[0][1]
        return None

    def _complete_flush(self, request: _FlushRequest) -> None:
        request.written = self._write_files(force=True)
        if request.written and request.roll_size is not None:
            self._files.roll(request.roll_size)
        request.done.set()
