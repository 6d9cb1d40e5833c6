"""Events held in memory while their event files cannot be written: a full disk, a spent quota, a read-only or failing
file system, a logdir removed under the run.

Whoever writes the event files (the companion process, `drain.py`; the writer thread, `queue.py`) keeps taking
events, so that logging never waits on the disk: the framed records go here, in order, run by run, up to a bound in
bytes. Each later attempt writes them first, in order, once; the first attempt after a failure writes one segment
only, so that a disk still full costs little to ask. Past the bound, values are dropped and counted, with the
earliest and latest step among them; once writing resumes, their count goes into the run itself as the scalar
`hf_summary/values_dropped`, where TensorBoard shows it. What happened is said once, with its cause, and once more
when writing resumes (or when the writer closes with values never written).

Like `drain.py`, this imports neither tensorboardX nor protobuf.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from .encoding import ScalarEncoder
from .records import HEADER_SIZE, frame_record

logger = logging.getLogger(__name__)

DROPPED_TAG = "hf_summary/values_dropped"
# Bytes of one segment: the most that an attempt on a disk still refusing writes (and copies).
_SEGMENT = 256 * 1024
_BATCH = 4 * 1024 * 1024  # bytes of a run written in one go once the disk takes writes again
RETRY_INTERVAL = 0.05  # seconds between attempts to write what is held, unless a flush or a close asks



class _Segment:
    """Framed records of one run, in order, with their count and the earliest and latest step among them."""

    __slots__ = ("data", "values", "first", "last")

    def __init__(self) -> None:
        self.data = bytearray()
        self.values = 0
        self.first = self.last = 0


class Held:
    """The records of one writer that the disk refused, in order, up to `limit` bytes; past it, counted and dropped.

    Args:
        logdir: the writer's folder (for the messages, and to find its file system).
        limit: bytes of framed records held at most (`defaults.HOLD_SIZE`).
        say: where a message goes (the log; the companion passes it on to the training process).
    """

    def __init__(self, logdir: Path, limit: int, say: Callable[[str], None]) -> None:
        self.logdir = logdir
        self.limit = limit
        self._say = say
        self._runs: dict[str, deque[_Segment]] = {}
        self.size = 0  # bytes held
        self.values = 0  # values held
        self.error: OSError | None = None  # why the records are held; None once written
        self._probing = False  # the last attempt failed: the next one writes one segment
        self._last_try = 0.0
        self._dropped = 0  # values dropped since the disk refused, and their earliest and latest step
        self._steps = (0, 0)
        self._dropped_before = 0  # values dropped in earlier episodes: the scalar counts the run's total
        self._held_in_episode = 0  # values that went through here since the disk refused
        self._counted = False  # the dropped values' count is held, to be written last

    def __bool__(self) -> bool:
        return bool(self._runs)

    def hold(self, error: OSError) -> None:
        """The disk refused a write: from now on records are held; said once, with the cause."""
        self._probing, self._last_try = True, time.monotonic()
        if self.error is None:
            self.error = error
            self._say(f"Cannot write the TensorBoard events of {self.logdir}: {self.cause()}. Logging goes on: the "
                      f"events are held in memory (up to {_mib(self.limit)}) and written in order once the disk takes "
                      f"them again; past that, values are dropped and counted. To keep them all, {self.remedy()}.")
        self.error = error

    def add(self, run: str, record: bytes) -> None:
        """Hold one framed record of `run`, or count it as dropped once `limit` bytes are held."""
        step = _step(record)
        if self.size + len(record) <= self.limit:
            self._append(run, record, step)
            self.values += 1
            self._held_in_episode += 1
            return
        if not self._dropped:
            self._say(f"The events held in memory for {self.logdir} reached {_mib(self.limit)}: values logged from "
                      f"now on are dropped, and counted, until the disk takes writes again ({self.cause()}).")
            self._steps = (step, step)
        self._dropped += 1
        self._steps = (min(self._steps[0], step), max(self._steps[1], step))

    def _append(self, run: str, record: bytes, step: int, value: bool = True) -> None:
        """Hold one record; `value` is False for the dropped values' count, which is no value logged."""
        segments = self._runs.get(run)
        if segments is None:
            segments = self._runs[run] = deque()
        if not segments or len(segments[-1].data) >= _SEGMENT:
            segments.append(_Segment())
        segment = segments[-1]
        segment.data += record
        self.size += len(record)
        if value:
            if not segment.values:
                segment.first = segment.last = step
            segment.values += 1
            segment.first, segment.last = min(segment.first, step), max(segment.last, step)

    def write(self, write: Callable[[str, bytes], Exception | None], force: bool = False) -> bool:
        """Write what is held through `write` (a run and its bytes; the error, or None once all are on disk), run by
        run, oldest first. Returns False while something stays held: the disk refused again, or the last attempt
        was less than RETRY_INTERVAL ago and `force` is False."""
        if not self._runs:
            return True
        if not force and time.monotonic() - self._last_try < RETRY_INTERVAL:
            return False
        while self._runs:
            run, segments = next(iter(self._runs.items()))
            count, size = 0, 0
            for segment in segments:
                if count and (self._probing or size + len(segment.data) > _BATCH):
                    break
                count, size = count + 1, size + len(segment.data)
            data = b"".join(segments[i].data for i in range(count))
            error = write(run, data)
            if error is not None:
                self.hold(error if isinstance(error, OSError) else OSError(str(error)))
                return False
            self._probing = False
            for _ in range(count):
                segment = segments.popleft()
                self.size -= len(segment.data)
                self.values -= segment.values
            if not segments:
                del self._runs[run]
            if not self._runs:
                self._resumed()
        return True

    def _resumed(self) -> None:
        """Everything held is written: the dropped values' count goes last, then writing resumed is said."""
        if self._dropped and not self._counted:
            self._counted = True
            total = self._dropped_before + self._dropped
            first, last = self._steps
            points = [(first, self._dropped_before), (last, total)] if first != last else [(last, total)]
            encode, now = ScalarEncoder(str).encode, time.time()
            for step, value in points:  # beyond the bound: it is what tells of what the bound cost
                self._append("", frame_record(encode(DROPPED_TAG, float(value), step, now)), step, value=False)
            return
        message = (f"Writing the TensorBoard events of {self.logdir} again: the {self._held_in_episode} values held "
                   "in memory are written.")
        if self._dropped:
            first, last = self._steps
            message += (f" {self._dropped} values logged between steps {first} and {last} could not be held and are "
                        f"lost; the run shows their count as the scalar '{DROPPED_TAG}'.")
        self._say(message)
        self._dropped_before += self._dropped
        self._dropped, self._held_in_episode, self._counted, self.error = 0, 0, False, None

    def lose(self) -> None:
        """The writer closes with values never written (the disk still refuses): they are counted and said."""
        if not self._runs and not self._dropped:
            return
        segments = [segment for run in self._runs.values() for segment in run if segment.values]
        steps = [step for segment in segments for step in (segment.first, segment.last)]
        if self._dropped:
            steps += self._steps
        lost = self.values + self._dropped
        self._say(f"Closing the writer of {self.logdir} while {self.cause()}: {lost} values logged between steps "
                  f"{min(steps)} and {max(steps)} were never written ({self.values} held in memory, "
                  f"{self._dropped} dropped past the bound of {_mib(self.limit)}).")
        self._runs.clear()
        self.size = self.values = self._dropped = self._held_in_episode = 0
        self._counted, self.error = False, None

    def cause(self) -> str:
        """What refuses the writes, in words: the error, and the file system it comes from."""
        error = self.error
        code = error.errno if error is not None else None
        mount = mount_point(self.logdir)
        if code == errno.ENOENT:
            where = f"the folder {self.logdir} was removed"
        elif code == errno.ENOSPC:
            where = f"the file system at {mount} is full ({_mib(_free(mount))} free)"
        elif code == errno.EDQUOT:
            where = f"your disk quota on the file system at {mount} is spent"
        elif code == errno.EROFS:
            where = f"the file system at {mount} is read-only"
        else:
            where = f"the file system at {mount} refuses writes"
        return f"{where} ({error})"

    def remedy(self) -> str:
        code = self.error.errno if self.error is not None else None
        if code == errno.ENOENT:
            return "let it be: the next attempt makes the folder again"
        what = {
            errno.ENOSPC: "free space there",
            errno.EDQUOT: "free space within your quota there (or have it raised)",
            errno.EROFS: "make it writable again",
            errno.EIO: "check the disk and the mount",
        }.get(code or 0, "fix what refuses the writes")
        return f"{what} ({mount_point(self.logdir)})"


def mount_point(path: Path) -> Path:
    """The mount point of the file system `path` is on (of its nearest existing parent, if it was removed)."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    while not os.path.ismount(path):
        path = path.parent
    return path


def _free(path: Path) -> int:
    try:
        stat = os.statvfs(path)
    except OSError:
        return 0
    return stat.f_bavail * stat.f_frsize


def _mib(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MiB"


def _step(record: bytes) -> int:
    """The step of a framed Event record: field 2, after the optional wall time (field 1, a double); 0 if absent,
    as protobuf omits a step of 0."""
    end = HEADER_SIZE + int.from_bytes(record[:8], "little")
    at = HEADER_SIZE + 9 if end > HEADER_SIZE and record[HEADER_SIZE] == 0x09 else HEADER_SIZE
    if at >= end or record[at] != 0x10:
        return 0
    step, shift = 0, 0
    for byte in record[at + 1:end]:
        step |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            break
    return step - (1 << 64) if step >= 1 << 63 else step
