"""The hand-off: the training process puts each event into memory it shares with its companion process, and that is
all it does with it.

The companion process (companion/) reads the ring (ring.py), encodes, frames and writes the
event files (drain.py). A value is safe the moment the call returns: if the training process is killed, the
companion still reads it from the shared memory, writes it and pushes it. `flush()` puts a mark in the ring and asks
the companion to write everything before it; the answer lists the files it still appends to.

Where no companion can be started, and in forked children, events are written in-process by `queue.EventQueue`, as
before. If the companion dies, the writer takes over: it undoes the companion's unfinished batch (its journal in the
ring), hands what is left in the ring to an `EventQueue`, and logs through that from then on; a call that was under
way meanwhile still writes into the ring, and the next call takes that record over before its own.
"""

from __future__ import annotations

import itertools
import logging
import mmap
import os
import threading
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

from ..defaults import HOLD_SIZE
from .drain import RingDrain
from .queue import EventQueue
from .ring import EVENT, KEY, RingFull, RingReader, RingWriter, ScalarSlots, create
from .tbx import Event, WriterClosed, clean_tag

logger = logging.getLogger(__name__)


class CompanionLink(Protocol):
    """The companion process, as the hand-off sees it (`companion.client._Client`)."""

    def attach(self, fd: int, message: dict[str, Any], on_exit: Any, timeout: float = ...) -> tuple[int, dict]: ...

    def request(self, message: dict[str, Any], timeout: float | None = None) -> dict[str, Any]: ...

    def detach(self, ring_id: int, upto: int, timeout: float | None = None) -> dict[str, Any]: ...

    def alive(self) -> bool: ...

    def nudge(self) -> None: ...


def ring_shape(ring_size: int) -> tuple[int, int]:
    """Slots and data bytes for a ring of about `ring_size` bytes: half of it slots (64 bytes, a power of two)."""
    slots = 1 << max(6, (max(ring_size // 2, 64) // 64).bit_length() - 1)
    return slots, max(64 * 1024, (ring_size - slots * 64) // 8 * 8)


class SharedEventQueue:
    """The writer's event sink: the same interface as `queue.EventQueue`, through the companion process.

    Args:
        logdir: the writer's folder.
        link: the companion.
        ring_size: bytes of shared memory (`defaults.RING_SIZE`); a full ring blocks logging until the companion
            makes room.
        max_queue: the in-process queue's size, should the writer take over.
        filename_suffix: as tensorboardX's.
        hold_size: bytes of events the companion holds in memory while the disk refuses them (events/held.py).

    Raises:
        OSError: the ring could not be made, or the companion could not take it (the caller writes in-process).
    """

    def __init__(self, logdir: str | os.PathLike[str], link: CompanionLink, *, ring_size: int, max_queue: int,
                 filename_suffix: str = "", hold_size: int = HOLD_SIZE) -> None:
        self.logdir = Path(logdir)
        self.closed = False  # an attribute, not a property: add_scalar reads it at every call
        self._link = link
        self._max_queue = max_queue
        self._suffix = filename_suffix
        self._hold_size = hold_size  # bytes the companion (or this process) holds while the disk refuses events
        self._local: EventQueue | None = None  # set when this process writes the events itself
        self._lock = threading.RLock()  # key definitions, the take-over
        self._keys: dict[str, dict[str | None, int]] = {}  # run -> tag (None for the run itself) -> key of the ring
        self._names: dict[int, tuple[str, str]] = {}  # key -> run, tag as stored
        self._key_ids = itertools.count(1)
        # Values on accelerators, read by a thread, and what was logged after them: (key, value, step, wall time)
        self._deferred: deque[tuple[int, Any, int, float]] = deque()
        self._deferred_lock = threading.Lock()
        self._deferred_wake = threading.Condition(self._deferred_lock)
        self._deferred_thread: threading.Thread | None = None
        self._drain: RingDrain | None = None  # once this process writes the events: what reads the ring for it
        slots, data_size = ring_shape(ring_size)
        fd, memory = create(slots=slots, data_size=data_size)
        self._memory: mmap.mmap = memory
        self._writer = RingWriter(memory, self.logdir / ".hf_summary" / "spill", on_full=self._say_full,
                                  alive=link.alive, wake=link.nudge)
        # The writer's `add_scalar` writes a float of a known tag straight into a slot through `slots`, but not
        # while values on accelerators wait to be handed off before it, nor once closed or taken over: then `slots`
        # is None and every scalar takes `put_scalar`, which knows where it goes. Changed under `_deferred_lock`.
        self._slots = self._writer.scalar_slots(self._keys.setdefault("", {}))
        self.slots: ScalarSlots | None = self._slots
        try:
            self._ring_id, answer = link.attach(
                fd, {"logdir": str(self.logdir.resolve()), "suffix": filename_suffix, "pid": os.getpid(),
                     "hold_size": hold_size},
                self.take_over)
        except BaseException:
            memory.close()
            raise
        finally:
            os.close(fd)
        if answer.get("error"):
            memory.close()
            raise OSError(f"the companion process could not write to '{logdir}': {answer['error']}")
        self._open = [Path(p) for p in answer.get("open", [])]

    # Logging threads -------------------------------------------------------------------------------------------------

    def put_scalar(self, run: str, tag: str, value: Any, step: int | None, walltime: float) -> None:
        """Hand one scalar off (see `queue.EventQueue.put_scalar`): all but the training loop's floats of known
        tags, which `add_scalar` writes through `slots`: a new tag, another run, a value to convert or read from an
        accelerator, a NaN, a full ring whose reader is gone, a writer taken over or closed."""
        local = self._local
        if local is not None:
            self._drain_late()
            local.put_scalar(run, tag, value, step, walltime)
            return
        if self.closed:
            raise WriterClosed()
        try:
            keys = self._keys.get(run)
            known = keys.get(tag) if keys is not None else None
            key = self._define(run, tag) if known is None else known
            if type(value) is not float or self._deferred:
                self._defer(key, value, step or 0, walltime)
                return
            seq = self._hand_off_scalar(key, value, step or 0, walltime)
        except (TypeError, ValueError):
            self._raise_if_unmapped()
            raise
        if seq is not None and self._writer.closing and not self._writer.landed(seq):
            raise WriterClosed()  # written after the last reading of the ring another thread closed meanwhile

    def put_event(self, run: str, event: Event) -> None:
        """Hand one `Event` off, serialized at the call."""
        local = self._local
        if local is not None:
            self._drain_late()
            local.put_event(run, event)
            return
        if self.closed:
            raise WriterClosed()
        try:
            data = event.SerializeToString()
        except Exception:
            # As the in-process writer thread does: tensorboardX serializes in its own thread, so the call succeeds.
            logger.exception("Could not write an event to %s; it is skipped", self.logdir)
            return
        try:
            key = self._run_key(run)
            if self._deferred:
                self._defer(key, data, 0, 0.0)
                return
            seq = self._hand_off_event(key, data)
        except (TypeError, ValueError):
            self._raise_if_unmapped()
            raise
        if seq is not None and self._writer.closing and not self._writer.landed(seq):
            raise WriterClosed()

    def _raise_if_unmapped(self) -> None:
        """What a write into the ring raised, if another thread's close() unmapped it under the call (a race that
        `closed` alone cannot rule out without a lock on every call), is the closed sink's error."""
        if self._memory.closed:
            raise WriterClosed() from None

    def _define(self, run: str, tag: str) -> int:
        with self._lock:
            key = next(self._key_ids)
            self._names[key] = (run, clean_tag(tag))
            self._writer.put_data(KEY, key, f"{run}\0{self._names[key][1]}".encode())
            self._keys.setdefault(run, {})[tag] = key
            return key

    def _run_key(self, run: str) -> int:
        keys = self._keys.get(run)
        key = keys.get(None) if keys is not None else None
        if key is None:
            with self._lock:
                key = next(self._key_ids)
                self._names[key] = (run, "")
                self._writer.put_data(KEY, key, f"{run}\0".encode())
                self._keys.setdefault(run, {})[None] = key
        return key

    def _defer(self, key: int, value: Any, step: int, walltime: float) -> None:
        """A tensor on an accelerator: reading it would make the caller wait for the device. A thread reads it and
        hands it off; what is logged after it follows it, so that each tag's values keep their order."""
        with self._deferred_wake:
            self._deferred.append((key, value, step, walltime))
            self.slots = None
            if self._deferred_thread is None:
                from ..threads import start_thread

                self._deferred_thread = start_thread(self._read_deferred, "hf_summary-device-values")
            self._deferred_wake.notify_all()

    def _read_deferred(self) -> None:
        while not self.closed:
            with self._deferred_wake:
                if not self._deferred:
                    self._deferred_wake.wait(1.0)
                    continue
                key, value, step, walltime = self._deferred[0]
            try:
                if type(value) is bytes:
                    self._hand_off_event(key, value)
                else:
                    self._hand_off_scalar(key, value if type(value) is float else float(value.item()), step,
                                          walltime)
            except Exception:
                logger.exception("Could not hand off a value logged from an accelerator; it is skipped")
            with self._deferred_wake:
                self._deferred.popleft()
                if not self._deferred and self._local is None and not self.closed:
                    self.slots = self._slots
                self._deferred_wake.notify_all()

    def _wait_deferred(self) -> None:
        """Wait until the values on accelerators logged so far are handed off."""
        with self._deferred_wake:
            while self._deferred and self._deferred_thread is not None and self._deferred_thread.is_alive():
                self._deferred_wake.wait(1.0)

    def _hand_off_scalar(self, key: int, number: float, step: int, walltime: float) -> int | None:
        """Returns the sequence number of the record in the ring; None if this process wrote it."""
        if self._local is None:
            try:
                return self._writer.put_scalar(key, number, step, walltime)
            except RingFull:
                self.take_over()
        run, tag = self._key_names(key)
        assert self._local is not None
        self._local.put_scalar(run, tag, number, step, walltime)
        return None

    def _hand_off_event(self, key: int, data: bytes) -> int | None:
        if self._local is None:
            try:
                return self._writer.put_data(EVENT, key, data)
            except RingFull:
                self.take_over()
        run, _ = self._key_names(key)
        assert self._local is not None
        self._local.put_raw(run, data)
        return None

    def _leave_ring(self) -> None:
        """From now on every scalar takes `put_scalar`, which knows where it goes."""
        with self._deferred_lock:
            self.slots = None

    def _key_names(self, key: int) -> tuple[str, str]:
        return self._names[key]

    def _say_full(self) -> None:
        logger.warning("Logging waits: the shared memory of %s is full (the companion process writes more slowly "
                       "than the training loop logs). Pass a larger ring_size to the writer to wait less.",
                       self.logdir)

    # Flush and close -------------------------------------------------------------------------------------------------

    def flush(self, roll_size: int | None = None, timeout: float | None = None) -> bool:
        """Write everything handed off so far to disk and return once it is there (see `EventQueue.flush`): False
        while the disk refuses the events, which the companion holds in memory.

        Raises:
            OSError: the companion could not write the events for another cause; they stay in shared memory.
        """
        if self._local is None:
            self._wait_deferred()
            try:
                upto = self._writer.mark()
                answer = self._link.request({"op": "flush", "ring": self._ring_id, "upto": upto,
                                             "roll_size": roll_size}, timeout)
            except TimeoutError:
                return False
            except Exception as error:
                logger.debug("The companion process is gone (%s): writing the events in this process", error)
                self.take_over()
            else:
                self._open = [Path(p) for p in answer.get("open", [])]
                if answer.get("error"):
                    raise OSError(f"Could not write TensorBoard events to '{self.logdir}': {answer['error']}. The "
                                  "events stay in memory and are written at the next flush; free disk space or fix "
                                  "the folder's permissions.")
                return not answer.get("held")  # held in the companion's memory while the disk refuses them
        local = self._local
        assert local is not None
        self._drain_ring()
        return local.flush(roll_size, timeout)

    def push_mark(self) -> tuple[int, int] | None:
        """The ring and a mark in it below which lies everything logged so far, for a push that the companion makes
        (it writes them first); None when this process writes the events."""
        if self._local is not None or self.closed:
            return None
        self._wait_deferred()
        return self._ring_id, self._writer.mark()

    def close(self, timeout: float | None = None) -> None:
        """Write everything, close the files (fsynced) and let the companion go."""
        if self.closed:
            return
        self._leave_ring()
        self._writer.closing = True
        read: tuple[int | None, Iterable[int]] = (None, ())  # what the ring's last reading read (RingWriter.landed)
        try:
            if self._local is None:
                self._wait_deferred()
                try:
                    answer = self._link.detach(self._ring_id, self._writer.mark(), timeout)
                except Exception as error:
                    logger.debug("The companion process is gone (%s): writing the events in this process", error)
                    self.take_over()
                else:
                    self.closed = True
                    read = answer.get("read_below"), answer.get("skipped", ())
                    if answer.get("error"):
                        logger.error("Could not write TensorBoard events to '%s': %s", self.logdir, answer["error"])
                    return
            self.closed = True
            local = self._local
            assert local is not None
            self._drain_ring()
            if self._drain is not None:  # None in a forked child, which never writes into the ring
                read = self._drain.reader.seq, self._drain.reader.skipped
            local.close(timeout)
        finally:
            # `closed` is set first: a write that missed the last reading goes where a call after close() goes.
            self._writer.last_read(*read)
            self._memory.close()

    def open_files(self) -> list[Path]:
        """The event files still open for appending (as of the last flush); every other one is final."""
        local = self._local
        if local is not None:
            return local.open_files()
        return list(self._open)

    @property
    def alive(self) -> bool:
        """Whether something still writes the events: the companion, or this process's writer thread."""
        local = self._local
        return local.alive if local is not None else self._link.alive()

    @property
    def pending(self) -> int:
        local = self._local
        return local.pending if local is not None else 0

    # The companion gone, or a forked child ---------------------------------------------------------------------------

    def take_over(self) -> None:
        """Write the events in this process from now on: first what the companion left in the ring, in order.

        Called by whoever notices the companion is gone (its reaper thread, a flush, a full ring); idempotent.
        """
        with self._lock:
            if self._local is not None or self.closed:
                return
            local = EventQueue(self.logdir, max_queue=self._max_queue, filename_suffix=self._suffix,
                               hold_size=self._hold_size)
            self._drain = RingDrain(RingReader(self._memory), self.logdir, self._suffix, keys=self._names)
            self._drain.recover()  # what its last batch left half written is cut back, and read again
            self._drain_ring(local)
            self._leave_ring()
            self._local = local
            self._drain_ring(local)  # a call that was under way while the writer changed
            logger.warning("The companion process that wrote the events of %s ended; this process writes them "
                           "from now on, starting with what it left in shared memory.", self.logdir)

    def _drain_late(self) -> None:
        """Before a call logs in-process: a record that a call under way at the take-over wrote into the ring after
        its last read (its thread was held up between reading `slots` and writing) goes first, so that the calls of
        one thread keep their order."""
        if self._drain is not None:
            with self._lock:
                if not self._memory.closed and self._drain.reader.has_more():
                    self._drain_ring()

    def _drain_ring(self, local: EventQueue | None = None) -> None:
        with self._lock:  # logging threads, a flush, the take-over: one reader at a time
            local = local or self._local
            drain = self._drain
            if drain is None or local is None or self._memory.closed:
                return
            while True:
                records = drain.reader.read(4096, final=True)
                if not records:
                    return
                spilled: list[Path] = []
                for run, data in drain.events(records, spilled):
                    local.put_raw(run, data)
                drain.reader.commit()
                for path in spilled:
                    path.unlink(missing_ok=True)

    def after_fork_in_child(self) -> None:
        """In a forked child: the ring is the parent's; the child writes its own events at the call, in its own
        files."""
        if self.closed:
            return
        local = EventQueue(self.logdir, max_queue=self._max_queue, filename_suffix=self._suffix, synchronous=True,
                           hold_size=self._hold_size)
        self.slots = None
        self._local = local
        self._writer.after_fork_in_child()
        self._lock = threading.RLock()
        self._deferred = deque()
        self._deferred_lock = threading.Lock()
        self._deferred_wake = threading.Condition(self._deferred_lock)
        self._deferred_thread = None
        self._drain = None
