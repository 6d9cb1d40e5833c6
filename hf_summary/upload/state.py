"""What has been committed, kept on disk in the logdir so that any later writer or `hf-summary sync` resumes from it.

The state lives in `<logdir>/.hf_summary/`, which is never uploaded. A `filelock` lock around "plan, commit, record"
keeps two processes uploading one logdir from committing the same bytes twice.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock

logger = logging.getLogger(__name__)

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
        racy: the mtime was too recent to rule out a rewrite of the same size in the same tick of the clock after
            the bytes were read (`plan.RACY_NS`): the next plan compares the file's content with `sha256`.
    """

    size: int
    sha256: str
    commit: str
    mtime_ns: int = 0
    racy: bool = False


def target_key(repo_type: str, repo_id: str, revision: str, prefix: str) -> str:
    """State is kept per destination: the same logdir may be synced to several repos or folders."""
    return f"{repo_type}:{repo_id}@{revision}:{prefix}"


def split_target_key(key: str) -> tuple[str, str, str, str]:
    """The repo type, repo id, revision and folder of a `target_key`."""
    repo_type, rest = key.split(":", 1)
    repo_and_revision, prefix = rest.split(":", 1)
    repo_id, revision = repo_and_revision.rsplit("@", 1)
    return repo_type, repo_id, revision, prefix


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
        self._lock: FileLock | None = None  # made by lock(): a state built for its key or a read needs none

    def lock(self, timeout: float = -1) -> FileLock:
        """The inter-process lock to hold while planning, committing and recording a commit."""
        self.folder.mkdir(parents=True, exist_ok=True)
        if self._lock is None:
            self._lock = FileLock(str(self.folder / "upload.lock"))
        self._lock.timeout = timeout
        return self._lock

    def load(self) -> dict[str, FileRecord]:
        return self._read()["targets"].get(self.key, {})

    def save(self, files: dict[str, FileRecord]) -> None:
        targets = self._read()["targets"]
        targets[self.key] = files
        data = {"version": _VERSION, "targets": {
            key: {path: asdict(record) for path, record in sorted(records.items())} for key, records in targets.items()
        }}
        self.folder.mkdir(parents=True, exist_ok=True)
        # Write then rename: a crash mid-write leaves the previous state, never a torn one.
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".state-", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1)
        os.replace(tmp, self.folder / _STATE_FILE)

    def all_targets(self) -> dict[str, dict[str, FileRecord]]:
        """Every destination recorded for this logdir (used by `hf-summary status`)."""
        return self._read()["targets"]

    def _read(self) -> dict[str, Any]:
        """The state as {"targets": {key: {relpath: FileRecord}}}; a broken state file is set aside, never fatal.

        A truncated, garbled, wrongly shaped or unreadable state would otherwise stop every push, sync and status
        for good. Starting again from nothing costs little: files the Hub already holds are recognised by their
        hash when planned again, and their bytes are not sent twice.
        """
        path = self.folder / _STATE_FILE
        try:
            with open(path, encoding="utf-8") as f:
                return {"targets": _parse(json.load(f))}
        except FileNotFoundError:
            return {"targets": {}}
        except (OSError, ValueError, TypeError, KeyError) as error:
            aside = path.with_name(f"{_STATE_FILE}.broken")
            try:
                os.replace(path, aside)
            except OSError:
                aside = path
            logger.warning("The upload state %s could not be read (%s: %s); starting it again from nothing (the old "
                           "file is kept as %s). Files already on the Hub are not sent twice.", path,
                           type(error).__name__, error, aside)
            return {"targets": {}}


def _parse(data: Any) -> dict[str, dict[str, FileRecord]]:
    if not isinstance(data, dict) or not isinstance(data.get("targets"), dict):
        raise ValueError("not an upload state")
    targets = {}
    for key, files in data["targets"].items():
        if not isinstance(files, dict):
            raise ValueError(f"target {key!r} is not a table of files")
        records = {}
        for relpath, record in files.items():
            parsed = FileRecord(**record)
            if not isinstance(parsed.size, int) or parsed.size < 0 or not isinstance(parsed.commit, str):
                raise ValueError(f"bad record for {relpath!r}")
            records[relpath] = parsed
        targets[key] = records
    return targets
