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
from typing import Any

from ..defaults import QUEUE_SIZE
from ..threads import start_thread
from .encoding import ScalarEncoder
from .records import EventFileNamer, frame_record
from .tbx import Event

logger = logging.getLogger(__name__)

# What the deque holds. Tuples, not objects, keep the logging thread's share of the work small; only this module
# builds or reads them.
_SCALAR = 0  # (_SCALAR, run, tag, value, step, walltime)
_EVENT = 1  # (_EVENT, run, event)
_FLUSH = 2  # (_FLUSH, request)

# The one call that touches the disk, a module attribute so that tests can stand in a slow or full disk.
_os_write = os.write

# Seconds between batches when nobody waits for a flush. Each wake-up takes the GIL from the training loop; measured
# on a 0.5 ms CPU step, waking every 0.05 s cost more than every 1 s. tensorboardX flushes every 120 s by default.
_WAKE_INTERVAL = 1.0
_WAKE_EVERY = 512  # items handled between wake-ups of loggers blocked on a full queue
# The Hub refuses a folder of more than 10 000 entries. Each time a run folder holds this many more files, the size at
# which its event file rolls doubles: the file count grows with the logarithm of the bytes logged, not with them.
FILES_PER_ROLL_DOUBLING = 1000
# File descriptors kept open at once; the files of runs written least recently are closed and reopened when written
# again, so that thousands of `add_scalars` series do not run into the process's open-file limit.
MAX_OPEN_FILES = 64


class _FlushRequest:
    """A flush marker: set once everything queued before it is written, or failed to be."""

    def __init__(self, roll_size: int | None) -> None:
        self.roll_size = roll_size
        self.done = threading.Event()
        self.error: BaseException | None = None


class _RunFile:
    """The event file currently written for one run folder; replaced by a new one when rolled."""

    def __init__(self, folder: Path, namer: EventFileNamer) -> None:
        self.folder = folder
        self.namer = namer
        self.path: Path | None = None
        self.fd: int | None = None
        self.size = 0
        self.pending: list[bytes] = []
        self.files_in_folder = 0  # entries of the folder, counted when this writer first opens a file there
        self.current = False  # the run's file until it rolls, even while its descriptor is closed to save one
        self.last_write = 0

    def roll_size(self, base: int) -> int:
        """The size at which this run's file rolls: `base`, doubled for every FILES_PER_ROLL_DOUBLING files."""
        return base << min(self.files_in_folder // FILES_PER_ROLL_DOUBLING, 32)

    def open(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        if self.path is None:
            with os.scandir(self.folder) as entries:
                self.files_in_folder = sum(1 for _ in entries)
        while True:
            self.path = self.folder / self.namer.next_name()
            try:
                # Exclusive: a file that exists (another writer of this process, same second) is never appended to.
                # Unbuffered: a forked child inherits no half-filled buffer that it could write into our file.
                self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
                break
            except FileExistsError:
                continue
        self.files_in_folder += 1
        self.current = True
        self.size = 0
        header = Event(wall_time=time.time(), file_version="brain.Event:2")
        self.pending.insert(0, frame_record(header.SerializeToString()))

    def write_pending(self) -> None:
        if not self.pending:
            return
        if self.fd is None and self.current and self.path is not None:
            self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)  # its descriptor was closed to save one
        elif self.fd is None:
            self.open()
        fd = self.fd
        assert fd is not None
        data = memoryview(b"".join(self.pending))
        self.pending.clear()
        while data:
            try:
                written = _os_write(fd, data)
            except OSError:
                self.pending.append(bytes(data))  # kept for the next attempt: nothing logged is dropped
                raise
            self.size += written
            data = data[written:]

    def suspend(self) -> None:
        """Close the descriptor and keep the file current: the next write reopens it for appending."""
        if self.fd is not None:
            os.close(self.fd)
        self.fd = None

    def close(self, fsync: bool = False) -> None:
        if self.fd is not None:
            if fsync:
                os.fsync(self.fd)
            os.close(self.fd)
        self.fd = None
        self.current = False


class EventQueue:
    """One writer thread for all the run folders of a `SummaryWriter` (its own and the `add_scalars` sub-runs).

    Args:
        logdir: the writer's folder; runs are folders relative to it ("" is the logdir itself).
        max_queue: events that may wait in memory; past that, logging blocks until the thread catches up.
        filename_suffix: appended to each event file name, as in tensorboardX.
    """

    def __init__(self, logdir: str | os.PathLike[str], *, max_queue: int = QUEUE_SIZE,
                 filename_suffix: str = "") -> None:
        self.logdir = Path(logdir)
        self.max_queue = max(1, max_queue)
        self._suffix = filename_suffix
        self._reset()
        # Like tensorboardX, the run's first file exists, with its header record, as soon as the writer does.
        main = self._run_file("")
        main.open()
        main.write_pending()
        self._start()

    def _reset(self) -> None:
        self._queue: deque[tuple[Any, ...]] = deque()
        self._cond = threading.Condition(threading.Lock())
        self._runs: dict[str, _RunFile] = {}
        self._scalars = ScalarEncoder()
        self._writes = 0
        self.closed = False  # an attribute, not a property: add_scalar reads it at every call
        self._synchronous = False

    def _start(self) -> None:
        self._thread = start_thread(self._run, "hf_summary-event-writer")

    def after_fork_in_child(self) -> None:
        """In a forked child: forget the parent's queue and files, and write each event at the call from now on."""
        if self.closed:
            return
        # The parent's queued events are the parent's to write, and its files stay its own: the child starts with
        # a new queue and new files (named with its own pid). It writes each event at the call: a forked worker
        # often ends with os._exit, which no writer thread would outlive.
        for run in self._runs.values():
            if run.fd is not None:
                os.close(run.fd)
        self._reset()
        self._synchronous = True
        self.max_queue = 1  # every put then reaches _wait_for_room, which writes it

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
            ValueError: the queue is closed.
        """
        if self.closed:
            raise ValueError("This event writer is closed; reopen the SummaryWriter to log again.")
        queue = self._queue
        queue.append((_SCALAR, run, tag, value, step, walltime))
        if len(queue) >= self.max_queue:
            self._wait_for_room()

    def put_event(self, run: str, event: Event) -> None:
        """Queue one `Event` for a run folder; blocks while `max_queue` items are waiting.

        Raises:
            ValueError: the queue is closed.
        """
        if self.closed:
            raise ValueError("This event writer is closed; reopen the SummaryWriter to log again.")
        queue = self._queue
        queue.append((_EVENT, run, event))
        if len(queue) >= self.max_queue:
            self._wait_for_room()

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
            True if everything was written within `timeout`.

        Raises:
            OSError: the disk refused the data (full, read-only); the data stays queued for the next flush.
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
        if request.error is not None:
            raise request.error
        return True

    def close(self, timeout: float | None = None) -> None:
        """Write everything, close the files (fsynced) and end the thread."""
        if self.closed:
            return
        try:
            self.flush(timeout=timeout)
        finally:
            self.closed = True
            with self._cond:
                self._cond.notify_all()
            self._thread.join(timeout)
            for run in self._runs.values():
                try:
                    run.close(fsync=True)
                except OSError as e:
                    logger.error("Could not close event file %s: %s", run.path, e)

    def open_files(self) -> list[Path]:
        """The event files still open for appending; every other event file of this writer is final."""
        return [run.path for run in list(self._runs.values()) if run.current and run.path is not None]

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
            if queue:
                self._write_batch(queue)
            elif self.closed:
                return

    def _write_batch(self, queue: deque[tuple[Any, ...]]) -> None:
        # Drain what is there now; items appended meanwhile wait for the next batch.
        encode, runs, popleft = self._scalars.encode, self._runs, queue.popleft
        for count in range(1, len(queue) + 1):
            item = popleft()
            try:
                if item[0] == _SCALAR:  # most items: handled inline, this loop is the writer thread's hot path
                    _, run, tag, value, step, walltime = item
                    if type(value) is not float:
                        value = float(value.item())  # a tensor taken at the call: read here, off the training thread
                    file = runs.get(run) or self._run_file(run)
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
            self._run_file(item[1]).pending.append(frame_record(item[2].SerializeToString()))
        else:
            self._complete_flush(item[1])

    def _run_file(self, run: str) -> _RunFile:
        file = self._runs.get(run)
        if file is None:
            file = self._runs[run] = _RunFile(self.logdir / run, EventFileNamer(self._suffix))
        return file

    def _write_files(self) -> Exception | None:
        error = None
        for run in self._runs.values():
            if not run.pending:
                continue
            try:
                if run.fd is None:
                    self._make_room()
                self._writes += 1
                run.last_write = self._writes
                run.write_pending()
            except Exception as e:  # one run folder that cannot be written must not stop the others, or the thread
                error = e
                logger.error("Could not write event file %s (the events stay queued in memory): %s",
                             run.path or run.folder, e)
        return error

    def _make_room(self) -> None:
        """Keep fewer than MAX_OPEN_FILES descriptors open: close the one written least recently."""
        open_runs = [run for run in self._runs.values() if run.fd is not None]
        if len(open_runs) >= MAX_OPEN_FILES:
            min(open_runs, key=lambda run: run.last_write).suspend()

    def _complete_flush(self, request: _FlushRequest) -> None:
        error = self._write_files()
        if error is not None:
            request.error = OSError(
                f"Could not write TensorBoard events to '{self.logdir}': {error}. The events stay in memory and are "
                "written at the next flush; free disk space or fix the folder's permissions."
            )
        elif request.roll_size is not None:
            for run in self._runs.values():
                if run.current and run.size >= run.roll_size(request.roll_size):
                    run.close()
        request.done.set()

