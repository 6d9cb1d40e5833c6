"""The event files of one writer: a file per run folder, rolled at a size, appended with framed records.

Used by whichever side writes the files: the companion process (`drain.py`), or the training process itself when
there is no companion (`queue.py`). It imports neither tensorboardX nor protobuf, so the companion stays small.
"""

from __future__ import annotations

import errno
import os
import struct
import time
from collections.abc import Iterable
from pathlib import Path

from .records import EventFileNamer, frame_record

# The one call that touches the disk, a module attribute so that tests can stand in a slow or full disk.
_os_write = os.write

# The Hub refuses a folder of more than 10 000 entries. Each time a run folder holds this many more files, the size at
# which its event file rolls doubles: the file count grows with the logarithm of the bytes logged, not with them.
FILES_PER_ROLL_DOUBLING = 1000
# File descriptors kept open at once; the files of runs written least recently are closed and reopened when written
# again, so that thousands of `add_scalars` series do not run into the process's open-file limit.
MAX_OPEN_FILES = 64

_VERSION = b"brain.Event:2"


def header_record(wall_time: float) -> bytes:
    """The framed first record of an event file: `Event(wall_time=..., file_version="brain.Event:2")`, by hand."""
    # Event: field 1 wall_time (double, tag 0x09), field 3 file_version (string, tag 0x1a).
    data = struct.pack("<Bd", 0x09, wall_time) + bytes((0x1A, len(_VERSION))) + _VERSION
    return frame_record(data)


class RunFile:
    """The event file currently written for one run folder; replaced by a new one when rolled."""

    def __init__(self, name: str, folder: Path, namer: EventFileNamer) -> None:
        self.name = name  # the run: its folder relative to the logdir
        self.folder = folder
        self.namer = namer
        self.path: Path | None = None
        self.fd: int | None = None
        self.size = 0  # bytes written to the current file
        self.pending: list[bytes] = []
        self.files_in_folder = 0  # entries of the folder, counted when this writer first opens a file there
        self.current = False  # the run's file until it rolls, even while its descriptor is closed to save one
        self.last_write = 0

    def roll_size(self, base: int) -> int:
        """The size at which this run's file rolls: `base`, doubled for every FILES_PER_ROLL_DOUBLING files."""
        return base << min(self.files_in_folder // FILES_PER_ROLL_DOUBLING, 32)

    def open(self) -> None:
        """Create the run's next file, with its header record pending."""
        self.folder.mkdir(parents=True, exist_ok=True)
        if self.path is None:
            with os.scandir(self.folder) as entries:
                self.files_in_folder = sum(1 for _ in entries)
        while True:
            self.path = self.folder / self.namer.next_name()
            try:
                # Exclusive: a file that exists (another writer, same second) is never appended to.
                # Unbuffered: a forked child inherits no half-filled buffer that it could write into our file.
                self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
                break
            except FileExistsError:
                continue
        self.files_in_folder += 1
        self.current = True
        self.size = 0
        self.pending.insert(0, header_record(time.time()))

    def ready(self) -> None:
        """Have a file to append to: the current one (reopened if its descriptor was closed), or a new one."""
        if self.fd is None and self.current and self.path is not None:
            self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        elif self.fd is None:
            self.open()

    def write_pending(self) -> None:
        """Append what is pending. All or nothing: a write the disk refuses (full, failing) is cut back, so that the
        file ends with a whole record, and what was pending stays pending; so does a write into a file that was
        removed meanwhile (the logdir deleted under the run), which would be lost with it.

        Raises:
            OSError: the disk refused; a file that could not be cut back is closed (the next write starts a new one).
            FileNotFoundError: the file was removed; it is closed, and the next write starts a new one.
        """
        if not self.pending:
            return
        self.ready()
        fd = self.fd
        assert fd is not None
        data = memoryview(b"".join(self.pending))
        start = self.size
        try:
            while data:
                written = _os_write(fd, data)
                self.size += written
                data = data[written:]
        except OSError:
            if self.size != start:
                try:
                    os.ftruncate(fd, start)
                except OSError:
                    self.close()  # its torn end stays last in it: readers stop there, and nothing follows it
                self.size = start
            raise
        if os.fstat(fd).st_nlink == 0:  # checked after the write: what was written before the removal went with it
            self.close()
            raise FileNotFoundError(errno.ENOENT, "the event file was removed", str(self.path))
        self.pending.clear()

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


class RunFiles:
    """The run files of one writer: its own folder ("") and its `add_scalars` sub-runs.

    Args:
        logdir: the writer's folder; runs are folders relative to it.
        suffix: appended to each event file name, as tensorboardX's `filename_suffix`.
        pid: the process id in the file names: the training process's, also when another process writes for it.
    """

    def __init__(self, logdir: Path, suffix: str = "", pid: int | None = None) -> None:
        self.logdir = logdir
        self._suffix = suffix
        self._pid = pid
        self.runs: dict[str, RunFile] = {}
        self._writes = 0

    def run(self, name: str) -> RunFile:
        file = self.runs.get(name)
        if file is None:
            file = self.runs[name] = RunFile(name, self.logdir / name, EventFileNamer(self._suffix, self._pid))
        return file

    def append(self, run: str, record: bytes) -> None:
        """Queue one framed record for a run; written by the next `write()`."""
        file = self.runs.get(run) or self.run(run)
        file.pending.append(record)

    def write(self, runs: Iterable[RunFile] | None = None) -> list[tuple[RunFile, Exception]]:
        """Write what is pending; one run folder that cannot be written does not stop the others.

        Returns:
            The runs that failed, with their errors (their data stays pending).
        """
        failed = []
        for run in list(self.runs.values()) if runs is None else runs:
            if not run.pending:
                continue
            try:
                if run.fd is None:
                    self.make_room()
                self._writes += 1
                run.last_write = self._writes
                run.write_pending()
            except Exception as e:
                failed.append((run, e))
        return failed

    def take_back(self, run: RunFile) -> list[bytes]:
        """The records a failed `write()` left pending for `run`, taken out of it; a file made for them is removed
        (the next write makes it again, with its header record)."""
        records, run.pending = run.pending, []
        if run.current and run.size == 0 and run.path is not None:
            records = records[1:]  # the header record `open()` put first
            run.close()
            run.path.unlink(missing_ok=True)
        return records

    def roll(self, roll_size: int) -> None:
        """Close each run's file that has reached its roll size: the next event starts a new file."""
        for run in self.runs.values():
            if run.current and run.size >= run.roll_size(roll_size):
                run.close()

    def open_files(self) -> list[Path]:
        """The event files still open for appending; every other event file of this writer is final."""
        return [run.path for run in list(self.runs.values()) if run.current and run.path is not None]

    def close(self) -> list[tuple[RunFile, OSError]]:
        """Close every file, fsynced; returns those that failed."""
        failed = []
        for run in self.runs.values():
            try:
                run.close(fsync=True)
            except OSError as e:
                failed.append((run, e))
        return failed

    def make_room(self) -> None:
        """Keep fewer than MAX_OPEN_FILES descriptors open: close the one written least recently."""
        open_runs = [run for run in self.runs.values() if run.fd is not None]
        if len(open_runs) >= MAX_OPEN_FILES:
            min(open_runs, key=lambda run: run.last_write).suspend()
