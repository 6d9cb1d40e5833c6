"""The shared ring: memory mapped by the training process and its companion, through which every event is handed off.

The training process writes; the companion (or, after the companion died, the training process itself) reads. The
layout, in one mapped file:

    header    magic, slot count, data size, the reader's committed positions, the reader's journal (`drain.py`)
    slots     `slots` fixed slots of 64 bytes, slot `seq % slots` for the record of sequence number `seq`: scalars
              (one slot each) and no-ops (flush marks)
    data      a byte ring of variable records, in sequence order: key definitions (run, tag), serialized events,
              references to spill files for events too large for the ring

Every record carries its sequence number and a check over all its fields, sequence number included: a reader accepts
the record of sequence number `n` only when both match, so a slot that is half written, or still holds the record of
an earlier lap, is never read as an event, whatever order the machine makes the writer's stores visible in. Variable
records are checked by a CRC32 over their bytes. Slots are checked by the hash of their fields (`slot_check`),
which costs the training loop a third of a CRC over packed bytes: Python hashes integers, floats and tuples of them
alike in every process of one interpreter (PYTHONHASHSEED seeds only str and bytes), and the writer's companion runs
the writer's interpreter. A torn slot whose fields all hash alike to the record's would be read as it, so only a
value of 0.0 read for -0.0 (or the reverse) with every other field equal, wall time included, could pass: never, in
practice. The writer never laps the reader: before it writes sequence number `n`, the reader's committed position is
past `n - slots` (and likewise in the data ring), else the writer waits.

Scalars take no lock: `next()` on an `itertools.count` hands out sequence numbers atomically under the GIL, and each
number has its own slot. Variable records are written under a lock, in sequence order, so the data ring is read in
order. A sequence number whose record is never written (its thread was killed in the middle of a call) is skipped
by a reader that knows no writer is left (`final`).

The module imports only the standard library: the companion reads it without tensorboardX or protobuf.
"""

from __future__ import annotations

import itertools
import mmap
import os
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

MAGIC = b"HFSRING\x02"
SLOT_SIZE = 64
HEADER_SIZE = 64 * 1024
_JOURNAL_START = 4096
JOURNAL_MAX = HEADER_SIZE - _JOURNAL_START - 8

# Record kinds.
SCALAR = 1
NOP = 2
KEY = 3  # defines a key: run (and tag, for scalars) in the payload, "run\0tag"
EVENT = 4  # a serialized Event of a run
SPILL = 5  # the name of a file holding a serialized Event of a run
WRAP = 6  # the data ring continues at its start

_HEAD = struct.Struct("<8sIIQ")  # magic, slots, slot size, data size
_POSITIONS = struct.Struct("<QQ")  # next sequence number to read, data ring position: committed by the reader
_POSITIONS_AT = _HEAD.size
_SLOT = struct.Struct("<qQB3xIqdd")  # check (slot_check), seq, kind, key, step, wall time, value
_SEQ_OF_SLOT = struct.Struct(f"<8xQ{SLOT_SIZE - 16}x")  # a slot's sequence number alone
_DATA = struct.Struct("<IQB3xI")  # payload length, seq, kind, key (after the CRC)
_CRC = struct.Struct("<I")
_DATA_HEADER = _CRC.size + _DATA.size
_JOURNAL = struct.Struct("<II")  # length, CRC

# Sequence numbers a final reader looks past a missing record for the next one: more than the threads that can be
# in the middle of a call at once.
_SKIP_LOOKAHEAD = 4096
# Sequence numbers `has_more` looks past a missing record: calls that may be under way at once (threads held up).
_UNDER_WAY = 16


def slot_check(seq: int, kind: int, key: int, step: int, wall_time: float, value: float) -> int:
    """The check of a slot's fields: their hash, with a NaN hashed as its bits (Python hashes a NaN by identity)."""
    if value != value or wall_time != wall_time:
        return hash((seq, kind, key, step, _bits(wall_time), _bits(value)))
    return hash((seq, kind, key, step, wall_time, value))


def _bits(number: float) -> float | tuple[int]:
    return _BITS.unpack(_FLOAT.pack(number)) if number != number else number


_FLOAT, _BITS = struct.Struct("<d"), struct.Struct("<q")


def _align(size: int) -> int:
    return (size + 7) & ~7


class Record(NamedTuple):
    """One record read from the ring (a tuple: the reader makes thousands a second)."""

    seq: int
    kind: int
    key: int
    step: int = 0
    wall_time: float = 0.0
    value: float = 0.0
    payload: bytes = b""


class RingFull(Exception):
    """The reader did not make room within the time given."""


def create(path: Path | None = None, *, slots: int, data_size: int) -> tuple[int, mmap.mmap]:
    """A new ring: its file descriptor (to pass to the reader) and the writer's mapping.

    Args:
        path: where to create the file; None for an anonymous one (deleted at once: it lives while mapped or open).
        slots: fixed slots; a power of two.
        data_size: bytes of the data ring; a multiple of 8.
    """
    if slots & (slots - 1) or data_size % 8:
        raise ValueError("slots must be a power of two and data_size a multiple of 8")
    size = HEADER_SIZE + slots * SLOT_SIZE + data_size
    if path is None:
        fd = _anonymous_fd()
    else:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.ftruncate(fd, size)
        memory = mmap.mmap(fd, size)
    except BaseException:
        os.close(fd)
        raise
    _HEAD.pack_into(memory, 0, MAGIC, slots, SLOT_SIZE, data_size)
    _POSITIONS.pack_into(memory, _POSITIONS_AT, 1, 0)
    return fd, memory


def _anonymous_fd() -> int:
    memfd_create = getattr(os, "memfd_create", None)
    if memfd_create is not None:
        try:
            return int(memfd_create("hf_summary-ring", getattr(os, "MFD_CLOEXEC", 0)))
        except OSError:
            pass
    import tempfile

    folder = "/dev/shm" if os.path.isdir("/dev/shm") else None
    return os.dup(tempfile.TemporaryFile(dir=folder).fileno())


def open_ring(fd: int) -> mmap.mmap:
    """Map a ring made by `create` (the reader's side)."""
    size = os.fstat(fd).st_size
    memory = mmap.mmap(fd, size)
    magic, slots, slot_size, data_size = _HEAD.unpack_from(memory, 0)
    if magic != MAGIC or slot_size != SLOT_SIZE or HEADER_SIZE + slots * SLOT_SIZE + data_size != size:
        memory.close()
        raise ValueError("not an hf_summary event ring")
    return memory


# The training loop's straight way into the ring (`RingWriter.scalar_slots`): tag -> key of its run, the sequence
# counter, the ring writer, `_SLOT.pack_into`, the mapping, the slot mask, the first slot's offset. A plain tuple: one
# of a subclass, a NamedTuple's, is unpacked through an iterator (7 % more instructions on the hot path).
ScalarSlots = tuple[dict[str | None, int], Iterator[int], "RingWriter", Callable[..., None], mmap.mmap, int, int]


def put_in_slot(slots: ScalarSlots, key: int, step: int, wall_time: float, value: float) -> bool:
    """Write one scalar the training loop's way (see `RingWriter.scalar_slots`); False if it did not land: the
    reader is gone (nothing written), or the ring was closed under the call and its last reading missed it."""
    _, counter, ring, write, memory, mask, first_slot = slots
    seq = next(counter)
    if seq < ring.free_below or ring.has_slot(seq):
        write(memory, first_slot + (seq & mask) * SLOT_SIZE, hash((seq, SCALAR, key, step, wall_time, value)),
              seq, SCALAR, key, step, wall_time, value)
        return not ring.closing or ring.landed(seq)
    return False


class RingWriter:
    """The training process's side: puts records into the ring.

    Args:
        memory: the mapping from `create`.
        spill_dir: where events too large for the data ring are written, as files the reader deletes.
        on_full: called once, the first time the ring is full (to say so in the log).
        alive: whether the reader is still there; a full ring whose reader is gone raises `RingFull`.
        wake: asks the reader to read now, called each time the ring is found full (a reader that reads at
            intervals would otherwise keep the writer waiting until its next one).
    """

    def __init__(self, memory: mmap.mmap, spill_dir: Path, *, on_full: Callable[[], None] | None = None,
                 alive: Callable[[], bool] = lambda: True, wake: Callable[[], None] = lambda: None) -> None:
        self.memory = memory
        _, self.slots, _, self.data_size = _HEAD.unpack_from(memory, 0)
        self._slots_at = HEADER_SIZE
        self._data_at = HEADER_SIZE + self.slots * SLOT_SIZE
        self._counter = itertools.count(1)
        self.free_below = self.slots  # sequence numbers below this have a free slot, as of the last reading
        self._data_lock = threading.Lock()
        self._data_pos = 0
        self._spill_dir = spill_dir
        self._on_full = on_full
        self._alive = alive
        self._wake = wake
        self._said_full = False
        # Set by the writer's close() before its last mark: a record written since may come after the last reading
        # of the ring, so each write checks it after writing (see `landed`).
        self.closing = False
        self._read_below: int | None = None
        self._skipped: frozenset[int] = frozenset()
        self._last_read = threading.Event()

    def scalar_slots(self, keys: dict[str | None, int]) -> ScalarSlots:
        """What a training loop needs to write a float of a tag of `keys` (tag -> key, a dict the caller keeps
        filling) straight into a slot, with no lock and no call in between: for a value and a wall time that are not
        NaN and an int64 step, what `put_in_slot` does.

        A writer's `add_scalar` spells `put_in_slot` out rather than calling it: after a training step has evicted
        the interpreter's caches, each further call, lookup or object made shows in the step time. The hash is
        `slot_check`'s, whose NaN case those values never meet. When `has_slot` says no (the reader is gone), the
        sequence number stays unwritten, as a thread killed in the middle of a call leaves one, and the value must
        take the slow way (`put_scalar`, which raises `RingFull`). After the write, a set `closing` asks `landed`.
        """
        return keys, self._counter, self, _SLOT.pack_into, self.memory, self.slots - 1, self._slots_at

    def after_fork_in_child(self) -> None:
        """In a forked child, which writes its own events apart: locks a parent's thread held at the fork are let
        go."""
        self._data_lock = threading.Lock()
        self._last_read = threading.Event()

    def put_scalar(self, key: int, value: float, step: int, wall_time: float) -> int:
        """Write one scalar of a defined key, NaN included (off the training loop's path: see `scalar_slots`);
        returns its sequence number."""
        return self._put_slot(SCALAR, key, step, wall_time, value)

    def landed(self, seq: int) -> bool:
        """Whether the record of `seq` was read, for a write that found `closing` set after writing; waits for the
        last reading to end.

        Checked after the write, `closing` rules out the race with the close: unset, the write came before the last
        reading, which reads it. Set, the write may have come after it: then this says whether it did not (False:
        the caller logs the value again, elsewhere).
        """
        self._last_read.wait()
        return self._read_below is not None and seq < self._read_below and seq not in self._skipped

    def last_read(self, read_below: int | None, skipped: Iterable[int] = ()) -> None:
        """The ring's last reading ended: every record below `read_below` was read but those `skipped` (None: not
        known, and no record counts as read)."""
        self._read_below, self._skipped = read_below, frozenset(skipped)
        self._last_read.set()

    def mark(self) -> int:
        """Write a no-op and return its sequence number: everything put before it has a smaller one."""
        return self._put_slot(NOP, 0, 0, 0.0, 0.0)

    def _put_slot(self, kind: int, key: int, step: int, wall_time: float, value: float) -> int:
        seq = next(self._counter)
        if seq >= self.free_below:
            self._wait_for_slot(seq)
        _SLOT.pack_into(self.memory, self._slots_at + (seq & (self.slots - 1)) * SLOT_SIZE,
                        slot_check(seq, kind, key, step, wall_time, value), seq, kind, key, step, wall_time, value)
        return seq

    def put_data(self, kind: int, key: int, payload: bytes) -> int:
        """Write a variable record (KEY or EVENT), and return its sequence number; an event too large for the data
        ring goes through a spill file."""
        size = _align(_DATA_HEADER + len(payload))
        if kind == EVENT and size > self.data_size // 2:
            payload = self._spill(payload)
            kind, size = SPILL, _align(_DATA_HEADER + len(payload))
        with self._data_lock:
            pos = self._data_pos
            gap = self.data_size - pos % self.data_size
            if gap < size:
                self._wait_for_data(pos + gap + size)
                seq = next(self._counter)
                if gap >= _DATA_HEADER:
                    self._write_data(pos, seq, WRAP, 0, b"")
                pos += gap
            else:
                self._wait_for_data(pos + size)
                seq = next(self._counter)
            if seq >= self.free_below:
                self._wait_for_slot(seq)
            self._write_data(pos, seq, kind, key, payload)
            self._data_pos = pos + size
            return seq

    def _write_data(self, pos: int, seq: int, kind: int, key: int, payload: bytes) -> None:
        at = self._data_at + pos % self.data_size
        body = _DATA.pack(len(payload), seq, kind, key) + payload
        self.memory[at + 4:at + 4 + len(body)] = body
        _CRC.pack_into(self.memory, at, zlib.crc32(body))

    def _spill(self, payload: bytes) -> bytes:
        self._spill_dir.mkdir(parents=True, exist_ok=True)
        import tempfile

        fd, tmp = tempfile.mkstemp(dir=self._spill_dir, prefix=".tmp-")
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
        name = Path(tmp).name.removeprefix(".tmp-") + ".event"
        os.replace(tmp, self._spill_dir / name)  # the record names a whole file, never one still being written
        return str(self._spill_dir / name).encode()

    def _positions(self) -> tuple[int, int]:
        return _POSITIONS.unpack_from(self.memory, _POSITIONS_AT)

    def has_slot(self, seq: int) -> bool:
        """Wait for the slot of `seq` (see `_wait_for_slot`); False if the reader is gone."""
        try:
            self._wait_for_slot(seq)
        except RingFull:
            return False
        return True

    def _wait_for_slot(self, seq: int) -> None:
        pause = 0.0
        while True:
            tail, _ = self._positions()
            if seq < tail + self.slots:
                self.free_below = tail + self.slots
                return
            pause = self._full(pause)

    def _wait_for_data(self, end: int) -> None:
        pause = 0.0
        while end - self._positions()[1] > self.data_size:
            pause = self._full(pause)

    def _full(self, pause: float) -> float:
        """One wait for room, `pause` seconds (0 at the first: the reader is woken, and said so once)."""
        if not self._alive():
            raise RingFull("the reader of the ring is gone")
        if not pause:
            if not self._said_full and self._on_full is not None:
                self._said_full = True
                self._on_full()
            self._wake()
            pause = 0.0001
        time.sleep(pause)
        return min(pause * 2, 0.01)


class RingReader:
    """The reading side: records in sequence order, from the committed position; `commit()` moves it.

    Args:
        memory: the mapping (`open_ring`, or the writer's own after the companion died).
    """

    def __init__(self, memory: mmap.mmap) -> None:
        self.memory = memory
        _, self.slots, _, self.data_size = _HEAD.unpack_from(memory, 0)
        self._slots_at = HEADER_SIZE
        self._data_at = HEADER_SIZE + self.slots * SLOT_SIZE
        self.seq, self.data_pos = _POSITIONS.unpack_from(memory, _POSITIONS_AT)
        self.skipped: set[int] = set()  # sequence numbers a final read went past, in case a writer still comes

    def committed(self) -> tuple[int, int]:
        return _POSITIONS.unpack_from(self.memory, _POSITIONS_AT)

    def read(self, limit: int, *, final: bool = False) -> list[Record]:
        """Up to `limit` records from the read position on (which moves; `rewind()` goes back to the committed one).

        Args:
            final: no writer is left (or none is to be waited for): a missing record is skipped, not waited for.
        """
        records: list[Record] = []
        for seq in sorted(self.skipped):  # a writer that was only slow, not dead: its record comes late
            record = self._slot(seq)
            if record is not None:
                self.skipped.discard(seq)
                records.append(record)
        while len(records) < limit:
            self._slots_in_a_row(records, limit)
            if len(records) >= limit:
                break
            record = self._slot(self.seq) or self._data(self.seq)
            if record is None:
                if not final or not self._skip():
                    break
                continue
            records.append(record)
            self.seq += 1
        return records

    def _slots_in_a_row(self, records: list[Record], limit: int) -> None:
        """Read the slot records that follow one another from the read position, from one copy of their slots."""
        first = self.seq & (self.slots - 1)
        count = min(limit - len(records), self.slots - first)
        at = self._slots_at + first * SLOT_SIZE
        block = self.memory[at:at + count * SLOT_SIZE]
        unpack, seq, new = _SLOT.unpack_from, self.seq, Record._make
        for offset in range(0, count * SLOT_SIZE, SLOT_SIZE):
            check, found, kind, key, step, wall_time, value = unpack(block, offset)
            if found != seq or (check != hash((seq, kind, key, step, wall_time, value))
                                and check != slot_check(seq, kind, key, step, wall_time, value)):
                break
            records.append(new((seq, kind, key, step, wall_time, value, b"")))
            seq += 1
        self.seq = seq

    def _skip(self) -> bool:
        """Go past a missing record if a later one exists; False when nothing follows."""
        later = self._later(min(_SKIP_LOOKAHEAD, self.slots))
        if not later:
            return False
        self.skipped.update(range(self.seq, min(later)))
        self.seq = min(later)
        return True

    def _later(self, ahead: int) -> list[int]:
        """The sequence numbers of the whole records after the read position: in the next `ahead` slots, and the next
        variable record."""
        first = (self.seq + 1) & (self.slots - 1)
        end = min(first + ahead, self.slots)
        block = self.memory[self._slots_at + first * SLOT_SIZE:self._slots_at + end * SLOT_SIZE]
        if first + ahead > self.slots:  # the look ahead wraps round to the first slots
            block += self.memory[self._slots_at:self._slots_at + (first + ahead - self.slots) * SLOT_SIZE]
        later = [seq for (seq,) in _SEQ_OF_SLOT.iter_unpack(block)
                 if self.seq < seq <= self.seq + ahead and self._slot(seq) is not None]
        offset = self.data_pos % self.data_size
        if self.data_size - offset >= _DATA_HEADER:  # the next variable record, if it is whole
            _, found, _, _ = _DATA.unpack_from(self.memory, self._data_at + offset + 4)
            if self.seq < found < self.seq + _SKIP_LOOKAHEAD and self._data(found, peek=True) is not None:
                later.append(found)
        return later

    def has_more(self) -> bool:
        """Whether a record can be read now: the next one, one of the next few (threads write their slots in any
        order), or one a final read went past. Changes nothing."""
        seq = self.seq
        if self._slot(seq) is not None or self._data(seq, peek=True) is not None or self._later(_UNDER_WAY):
            return True
        return any(self._slot(skipped) is not None for skipped in self.skipped)

    def commit(self) -> None:
        """Give the records read so far up: the writer may reuse their room."""
        _POSITIONS.pack_into(self.memory, _POSITIONS_AT, self.seq, self.data_pos)

    def rewind(self) -> None:
        self.seq, self.data_pos = self.committed()

    def _slot(self, seq: int) -> Record | None:
        at = self._slots_at + (seq & (self.slots - 1)) * SLOT_SIZE
        check, found, kind, key, step, wall_time, value = _SLOT.unpack_from(self.memory, at)
        if found != seq or check != slot_check(seq, kind, key, step, wall_time, value):
            return None
        return Record(seq, kind, key, step, wall_time, value)

    def _data(self, seq: int, *, peek: bool = False) -> Record | None:
        """The variable record `seq` if it is next in the data ring; the position moves past it unless `peek`."""
        start = self.data_pos
        record = self._next_data(seq)
        if peek:
            self.data_pos = start
        return record

    def _next_data(self, seq: int) -> Record | None:
        for _ in range(2):  # at most one wrap before the record
            offset = self.data_pos % self.data_size
            gap = self.data_size - offset
            if gap < _DATA_HEADER:
                self.data_pos += gap  # too little room for a record header: the writer went on at the start
                continue
            at = self._data_at + offset
            length, found, kind, key = _DATA.unpack_from(self.memory, at + 4)
            if found != seq or length > gap - _DATA_HEADER:
                return None
            body = self.memory[at + 4:at + _DATA_HEADER + length]
            if _CRC.unpack_from(self.memory, at)[0] != zlib.crc32(body):
                return None
            if kind == WRAP:
                self.data_pos += gap
                continue
            self.data_pos += _align(_DATA_HEADER + length)
            return Record(seq, kind, key, payload=bytes(body[_DATA.size:]))
        return None

    # The journal: what the reader is writing to disk, for whoever takes over if it dies meanwhile (drain.py).

    def write_journal(self, data: bytes) -> bool:
        """Record the batch being written; False if it does not fit (the batch must be made smaller)."""
        if len(data) > JOURNAL_MAX:
            return False
        self.memory[_JOURNAL_START + _JOURNAL.size:_JOURNAL_START + _JOURNAL.size + len(data)] = data
        _JOURNAL.pack_into(self.memory, _JOURNAL_START, len(data), zlib.crc32(data))
        return True

    def journal(self) -> bytes | None:
        """The last batch recorded, or None if none was, or its record is torn."""
        length, crc = _JOURNAL.unpack_from(self.memory, _JOURNAL_START)
        if not length or length > JOURNAL_MAX:
            return None
        data = self.memory[_JOURNAL_START + _JOURNAL.size:_JOURNAL_START + _JOURNAL.size + length]
        return data if zlib.crc32(data) == crc else None
