"""What to send in the next commit: the files that changed, cut at their last complete record.

Closed event files never change, so they are sent once, straight from disk. A file that may still grow is sent as its
valid prefix, read in place (`FilePrefix`), so that the bytes hashed and the bytes uploaded are the same, no torn
record leaves the machine, and no copy needs disk space.
"""

from __future__ import annotations

import hashlib
import io
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from stat import S_ISREG

from ..events.records import is_event_file, scan_records
from .state import STATE_DIR, FileRecord

# A file that is not an event file is known unchanged by its size and mtime. A rewrite keeps the mtime when it falls
# in the same tick of the filesystem's clock as the mtime seen (ext4 without fine-grained timestamps: a few ms; FAT:
# 2 s), so a file whose mtime is this recent when planned may be rewritten, with the same size, after its bytes are
# read and still look unchanged: its record is marked racy, and the next plan compares its content (git's "racily
# clean" entries).
RACY_NS = 2_000_000_000


@dataclass
class PlannedFile:
    """One file of the next commit.

    Attributes:
        relpath: path relative to the logdir, with forward slashes.
        local_path: the file on disk.
        size: bytes to send (the file's valid prefix).
        mtime_ns: the file's modification time when planned.
        final: the file will not change any more and can be sent straight from disk.
        racy: its mtime was too recent to tell a later rewrite of the same size (`RACY_NS`).
    """

    relpath: str
    local_path: Path
    size: int
    mtime_ns: int
    final: bool
    racy: bool = False


def list_files(logdir: Path, allow_patterns: list[str] | str | None, ignore_patterns: list[str]) -> list[str]:
    """The logdir's files that match the patterns, as sorted relative paths.

    Our state folder is never listed, and neither are symlinks that lead outside the logdir: a link must not let
    the upload read files the user did not put in the run.
    """
    from huggingface_hub.utils import filter_repo_objects

    resolved: list[Path] = []  # the logdir resolved, once a symlink needs it

    def root() -> Path:
        if not resolved:
            resolved.append(logdir.resolve())
        return resolved[0]

    found = []
    for dirpath, dirnames, filenames in os.walk(logdir):
        dirnames[:] = sorted(d for d in dirnames if d != STATE_DIR and _inside(Path(dirpath, d), root))
        for name in filenames:
            path = Path(dirpath, name)
            try:
                regular = S_ISREG(os.lstat(path).st_mode)  # a plain file: no symlink to follow or check
            except OSError:
                regular = False
            if regular or (path.is_file() and _inside(path, root)):
                found.append(path.relative_to(logdir).as_posix())
    return sorted(filter_repo_objects(found, allow_patterns=allow_patterns, ignore_patterns=ignore_patterns))


def _inside(path: Path, root: Callable[[], Path]) -> bool:
    if not path.is_symlink():
        return True
    try:
        path.resolve().relative_to(root())
    except ValueError:
        return False
    return True


class UploadPlanner:
    """Decides what changed since the last commit, remembering how far each event file has been checked.

    Args:
        logdir: the folder to upload.
        allow_patterns: patterns a file must match (huggingface_hub's `allow_patterns`).
        ignore_patterns: patterns that exclude a file.
    """

    def __init__(self, logdir: Path, allow_patterns: list[str] | str | None, ignore_patterns: list[str]) -> None:
        self.logdir = logdir
        self.allow_patterns = allow_patterns
        self.ignore_patterns = ignore_patterns
        self._checked: dict[str, int] = {}  # relpath -> a record boundary up to which the file is known valid

    def plan(self, committed: dict[str, FileRecord], open_files: Iterable[Path] = ()) -> list[PlannedFile]:
        """The files whose valid content differs from what `committed` says is on the Hub.

        Args:
            committed: the upload state.
            open_files: files a writer of this process may still append to.
        """
        opened = list(open_files)
        resolved: list[set[Path]] = []  # resolved once, if a file that may be final needs it

        def still_open(path: Path) -> bool:
            if not resolved:
                resolved.append({Path(p).resolve() for p in opened})
            return path.resolve() in resolved[0]

        racy_after = time.time_ns() - RACY_NS  # before any stat: a later one only makes fewer files racy
        relpaths = list_files(self.logdir, self.allow_patterns, self.ignore_patterns)
        newest_per_folder = {}
        for relpath in relpaths:
            if is_event_file(relpath):
                newest_per_folder[os.path.dirname(relpath)] = relpath  # sorted: the last one wins
        planned = []
        for relpath in relpaths:
            path = self.logdir / relpath
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            record = committed.get(relpath)
            if is_event_file(relpath):
                size = self._valid_size(relpath, path, stat.st_size, record)
                if size == 0 or (record is not None and record.size == size):
                    continue
                # Another program may still append to the newest file of a folder; ours tells us what it has open.
                final = (size == stat.st_size and newest_per_folder.get(os.path.dirname(relpath)) != relpath
                         and not still_open(path))
            else:
                size = stat.st_size
                racy = stat.st_mtime_ns >= racy_after
                if record is not None and record.size == size and record.mtime_ns == stat.st_mtime_ns:
                    if not record.racy:
                        continue
                    if record.sha256 and _sha256_of_prefix(path, size) == record.sha256:
                        record.racy = racy  # saved with the next record: checked once its mtime is old enough
                        continue
                planned.append(PlannedFile(relpath, path, size, stat.st_mtime_ns, False, racy))
                continue
            planned.append(PlannedFile(relpath, path, size, stat.st_mtime_ns, final))
        return planned

    def _valid_size(self, relpath: str, path: Path, file_size: int, record: FileRecord | None) -> int:
        start = self._checked.get(relpath, 0)
        if record is not None and record.size <= file_size:
            start = max(start, record.size)  # committed bytes were checked before they were sent
        if start > file_size:
            start = 0  # the file was replaced by a shorter one: check it all again
        if start == file_size:
            return start
        result = scan_records(path, start)
        self._checked[relpath] = result.valid_size
        return result.valid_size


def _sha256_of_prefix(path: Path, size: int) -> str | None:
    """The sha256 of a file's first `size` bytes; None if it has fewer now."""
    digest = hashlib.sha256()
    left = size
    try:
        with open(path, "rb") as f:
            while left:
                block = f.read(min(left, 1 << 20))
                if not block:
                    return None
                digest.update(block)
                left -= len(block)
    except OSError:
        return None
    return digest.hexdigest()


def read_prefix(path: Path, size: int) -> bytes:
    """The first `size` bytes of a file that may still grow: what Xet uploads of it (Xet takes paths and bytes only).

    Raises:
        OSError: the file is shorter than `size` (it was replaced or truncated since it was planned).
    """
    with open(path, "rb") as f:
        data = f.read(size)
    if len(data) != size:
        raise OSError(f"{path} shrank while it was being uploaded")
    return data


class FilePrefix(io.BufferedIOBase):
    """The first `size` bytes of a file that may still grow, read in place: no copy on disk (the legacy LFS path).

    The client hashes and sends exactly these bytes, however much the writer appends meanwhile. It holds no file
    descriptor between reads (a commit of hundreds of growing files must not reach the open-file limit), and has no
    `fileno()`, so that nothing measures the whole file with `fstat` instead of the prefix.

    Args:
        path: the file.
        size: bytes of it to expose (its valid prefix when planned).
    """

    def __init__(self, path: Path, size: int) -> None:
        super().__init__()
        self._path = path
        self._size = size
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        left = self._size - self._pos
        if left <= 0:
            return b""
        with open(self._path, "rb") as f:
            f.seek(self._pos)
            data = f.read(left if size is None or size < 0 else min(size, left))
        if not data:
            raise OSError(f"{self._path} shrank while it was being uploaded")
        self._pos += len(data)
        return data

    read1 = read  # type: ignore[assignment]

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, min(self._size, base + offset))
        return self._pos

    def tell(self) -> int:
        return self._pos

    def __repr__(self) -> str:
        return f"FilePrefix({str(self._path)!r}, size={self._size})"
