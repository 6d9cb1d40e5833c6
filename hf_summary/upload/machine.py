"""The writers of one machine that push to one repo and branch make one commit per interval between them.

A sweep launched as separate processes (one per GPU) would otherwise make one commit per interval per process, and
the Hub rate-limits commits per repo. Each process's committer records its logdirs in a small registry beside a
lock, in huggingface_hub's cache folder. A scheduled push takes the lock without waiting: if another process holds it
(it is pushing) or pushed less than an interval ago, this one skips its turn, since that process's commit carries
every logdir of the registry, this process's included. A trial that ended or died stays in the registry until its
files are on the Hub, so the others push its leftovers too.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from .spec import UploadSpec


def _registry_folder() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE) / "hf_summary"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True


class MachineRegistry:
    """The logdirs that the processes of this machine push to one repo and branch, and when they last pushed.

    Args:
        repo_key: the endpoint, repo type, repo id and branch, as one string.
        folder: where the registry and its lock live; defaults to `<HF_HUB_CACHE>/hf_summary`.

    Example:
        ```py
        >>> registry = MachineRegistry("https://huggingface.co model me/run main")
        >>> registry.register(Path("runs/trial-3"), spec)
        >>> with registry.turn(interval=300) as entries:
        ...     if entries is not None:   # our turn: push these logdirs, ours and the others'
        ...         ...
        ```
    """

    def __init__(self, repo_key: str, folder: Path | None = None) -> None:
        name = hashlib.sha256(repo_key.encode()).hexdigest()[:24]
        self.folder = folder or _registry_folder()
        self._path = self.folder / f"{name}.json"
        self._lock = FileLock(str(self.folder / f"{name}.lock"))

    def register(self, logdir: Path, spec: UploadSpec) -> None:
        """Add a logdir this process pushes."""
        with self._locked():
            data = self._read()
            data["logdirs"][str(logdir.resolve())] = {"pid": os.getpid(), "spec": spec.to_json()}
            self._write(data)

    def unregister(self, logdir: Path) -> None:
        """Remove a logdir whose writer closed after its final push."""
        with self._locked():
            data = self._read()
            data["logdirs"].pop(str(logdir.resolve()), None)
            self._write(data)

    @contextmanager
    def turn(self, interval: float | None, timeout: float = 0.0) -> Iterator[dict[Path, UploadSpec] | None]:
        """Hold the machine's push lock while a push runs; yield the logdirs to push, or None to skip the turn.

        Args:
            interval: seconds; a push less than this after the machine's last one skips its turn. None never skips
                (a triggered push, a sync).
            timeout: seconds to wait for the lock; past that, a scheduled turn is skipped (0: do not wait).

        Raises:
            filelock.Timeout: a push that may not skip (`interval` None) did not get the lock in time.
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire(timeout=timeout)
        except Timeout:
            if interval is None:
                raise
            yield None  # another process is pushing, and its commit carries our logdirs
            return
        try:
            data = self._read()
            started = time.time()
            # Only another process's recent push skips our turn: our own schedule already spaces our pushes.
            if (interval is not None and data.get("last_pid") != os.getpid()
                    and started - data.get("last_push", 0.0) < interval):
                yield None
                return
            yield self._entries(data)
            data = self._read()
            if data.get("last_pid") == os.getpid() and all(
                    entry.get("pid") == os.getpid() for entry in data["logdirs"].values()):
                return  # alone on the machine: nobody reads when we pushed, and the write costs a push's CPU
            data["last_push"], data["last_pid"] = started, os.getpid()  # when it started: intervals run from there
            self._write(data)
        finally:
            self._lock.release()

    def forget_finished(self, finished: set[Path]) -> None:
        """Drop the logdirs of processes that are gone and whose files are all on the Hub."""
        with self._locked():
            data = self._read()
            for logdir, entry in list(data["logdirs"].items()):
                if Path(logdir) in finished and not _alive(int(entry.get("pid", 0))):
                    del data["logdirs"][logdir]
            self._write(data)

    def _entries(self, data: dict[str, Any]) -> dict[Path, UploadSpec]:
        entries = {}
        for logdir, entry in data["logdirs"].items():
            try:
                entries[Path(logdir)] = UploadSpec.from_json(entry["spec"])
            except (TypeError, ValueError, KeyError):
                continue  # an entry of another version, or a broken one: it costs itself only
        return entries

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.folder.mkdir(parents=True, exist_ok=True)
        with self._lock.acquire(timeout=30):
            yield

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self._path.read_text())
        except (OSError, ValueError):
            data = {}
        if not isinstance(data, dict) or not isinstance(data.get("logdirs"), dict):
            data = {"logdirs": {}}
        return data

    def _write(self, data: dict[str, Any]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".registry-", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(data, f)
        os.replace(tmp, self._path)

