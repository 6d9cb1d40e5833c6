"""What has been committed, kept on disk in the logdir so that any later writer or `hf-summary sync` resumes from it.

The state lives in `<logdir>/.hf_summary/`, which is never uploaded. A `filelock` lock around "plan, commit, record"
keeps two processes uploading one logdir from committing the same bytes twice.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from filelock import FileLock

STATE_DIR = ".hf_summary"
_STATE_FILE = "state.json"
_VERSION = 1


@dataclass
class FileRecord:
    """One file as last committed.

    Attributes:
        size: bytes committed (for event files, the end of the last complete record).
        sha256: hash of the committed bytes.
        commit: the commit that holds them.
        mtime_ns: the file's modification time then, to notice rewrites of non-event files of the same size.
    """

    size: int
    sha256: str
    commit: str
    mtime_ns: int = 0


def target_key(repo_type: str, repo_id: str, revision: str, prefix: str) -> str:
    """State is kept per destination: the same logdir may be synced to several repos or folders."""
    return f"{repo_type}:{repo_id}@{revision}:{prefix}"


class UploadState:
    """The committed files of one logdir for one destination.

    Args:
        logdir: the folder being uploaded.
        key: the destination, from `target_key`.

    Example:
        ```py
        >>> state = UploadState("runs/exp", target_key("model", "me/run", "main", "tensorboard/exp"))
        >>> with state.lock():
        ...     files = state.load()
        ...     files["events.out.tfevents..."] = FileRecord(size=123, sha256="...", commit="abc")
        ...     state.save(files)
        ```
    """

    def __init__(self, logdir: str | os.PathLike[str], key: str) -> None:
        self.folder = Path(logdir) / STATE_DIR
        self.key = key
        self._lock = FileLock(str(self.folder / "upload.lock"))

    def lock(self, timeout: float = -1) -> FileLock:
        """The inter-process lock to hold while planning, committing and recording a commit."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock.timeout = timeout
        return self._lock

    def load(self) -> dict[str, FileRecord]:
        data = self._read()
        files = data.get("targets", {}).get(self.key, {})
        return {path: FileRecord(**record) for path, record in files.items()}

    def save(self, files: dict[str, FileRecord]) -> None:
        data = self._read()
        data.setdefault("targets", {})[self.key] = {path: asdict(record) for path, record in sorted(files.items())}
        data["version"] = _VERSION
        self.folder.mkdir(parents=True, exist_ok=True)
        # Write then rename: a crash mid-write leaves the previous state, never a torn one.
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".state-", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1)
        os.replace(tmp, self.folder / _STATE_FILE)

    def all_targets(self) -> dict[str, dict[str, FileRecord]]:
        """Every destination recorded for this logdir (used by `hf-summary status`)."""
        return {
            key: {path: FileRecord(**record) for path, record in files.items()}
            for key, files in self._read().get("targets", {}).items()
        }

    def _read(self) -> dict:
        try:
            with open(self.folder / _STATE_FILE) as f:
                return json.load(f)
        except FileNotFoundError:
            return {"version": _VERSION, "targets": {}}
