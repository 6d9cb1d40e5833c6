"""One logdir bound for one repo folder: what to send from it, and recording what was sent.

A push is planned, sent and recorded under the logdir's upload lock, so that two processes uploading one logdir
never send the same bytes twice; the pusher (pusher.py) puts the logdirs of several writers in one commit.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from .plan import PlannedFile, UploadPlanner
from .spec import UploadSpec
from .state import STATE_DIR, FileRecord, UploadState, target_key

if TYPE_CHECKING:
    from huggingface_hub import CommitOperationAdd

MakeOperation = Callable[[str, PlannedFile], "CommitOperationAdd"]


class LiveLogdir(Protocol):
    """What a push asks of the writer of a logdir it pushes: the one interface between the events side and the
    upload side (which otherwise meet only at the files on disk and the upload state)."""

    def write_for_push(self) -> None:
        """Write what was logged up to now, and close the event files past their roll size."""

    def open_event_files(self) -> list[Path]:
        """The event files the writer may still append to; every other file of the logdir is final."""
        return []


class Uploader:
    """Uploads one logdir into one repo folder, resumably.

    Args:
        logdir: the folder to upload.
        spec: where it goes, and which of its files.
        live: the writer of this process that logs to it, if any.
    """

    def __init__(self, logdir: Path, spec: UploadSpec, *, live: LiveLogdir | None = None) -> None:
        self.logdir = logdir
        self.spec = spec
        self.path_in_repo = spec.folder_for(logdir)
        self._target_key = target_key(spec.repo_type, spec.repo_id, spec.revision, self.path_in_repo)
        self._key = (str(logdir.resolve()), self._target_key, self.path_in_repo)  # asked at every push
        allow = list(spec.allow_patterns) if spec.allow_patterns is not None else None
        self.planner = UploadPlanner(logdir, allow, default_ignore_patterns(spec.ignore_patterns))
        self.live = live
        # The operations of a commit that failed, kept for the retry: what they uploaded is not sent again (and
        # huggingface_hub does not draw an "Upload 0 LFS files" bar for content the Hub already has).
        self._pending_operations: dict[str, tuple[PlannedFile, CommitOperationAdd]] = {}

    def state(self) -> UploadState:
        return UploadState(self.logdir, self._target_key)

    def pending(self) -> list[PlannedFile]:
        """Files whose valid content is not on the Hub yet, according to the upload state."""
        return self.planner.plan(self.state().load(), self.open_files())

    @property
    def key(self) -> tuple[str, str, str]:
        """The logdir and its destination: two uploaders with one key upload the same files under one lock."""
        return self._key

    def open_files(self) -> list[Path]:
        """The event files a writer of this process may still append to."""
        return self.live.open_event_files() if self.live is not None else []

    def prepare(self) -> None:
        """Have the writer of this logdir (if it is in this process) write what was logged up to now."""
        if self.live is not None:
            self.live.write_for_push()

    def begin(self, stack: ExitStack, make: MakeOperation, lock_timeout: float = -1,
              also_open: list[Path] | None = None) -> Batch | None:
        """Lock the logdir's upload state (until `stack` closes) and plan its part of a push; None if nothing changed.

        Args:
            stack: holds the lock until the push is recorded.
            make: builds the operation that sends a file to a path of the destination.
            lock_timeout: seconds to wait for another process's push of this logdir.
            also_open: files other writers of this process (on the same logdir) may still append to.

        Raises:
            filelock.Timeout: another process held the lock for `lock_timeout` seconds.
        """
        state = self.state()
        stack.enter_context(state.lock(lock_timeout))
        committed = state.load()  # read inside the lock: another process may have committed since we last looked
        planned = self.planner.plan(committed, [*self.open_files(), *(also_open or [])])
        if not planned:
            return None
        return Batch(self, state, committed, planned, self._operations(planned, make))

    def _operations(self, planned: list[PlannedFile], make: MakeOperation) -> list[CommitOperationAdd]:
        operations = []
        for file in planned:
            kept = self._pending_operations.get(file.relpath)
            if kept is None or not _same(kept[0], file) or file.racy:  # racy: read it again, it may have changed
                operation = make(f"{self.path_in_repo}/{file.relpath}", file)
                kept = self._pending_operations[file.relpath] = (file, operation)
            operations.append(kept[1])
        return operations

    def _committed(self) -> None:
        self._pending_operations.clear()


def _same(a: PlannedFile, b: PlannedFile) -> bool:
    return (a.size, a.mtime_ns, a.final) == (b.size, b.mtime_ns, b.final)


class Batch:
    """One logdir's part of a commit: what is sent, and how to record it once the commit is made."""

    def __init__(self, uploader: Uploader, state: UploadState, committed: dict[str, FileRecord],
                 planned: list[PlannedFile], operations: list[CommitOperationAdd]) -> None:
        self.uploader = uploader
        self._recorded: set[int] = set()
        self.state = state
        self.committed = committed
        self.planned = planned
        self.operations = operations

    @property
    def size(self) -> int:
        return sum(file.size for file in self.planned)

    def abandon(self) -> None:
        """Forget the operations of this batch: the next push builds new ones."""
        self.uploader._committed()

    def record(self, oid: str, indices: list[int] | None = None) -> None:
        """Save in the upload state that the commit `oid` holds these files (all of them, or those at `indices`)."""
        chosen = list(range(len(self.planned))) if indices is None else indices
        for i in chosen:
            file, operation = self.planned[i], self.operations[i]
            sha = operation.upload_info.sha256.hex() if operation.upload_info.is_hashed else ""
            self.committed[file.relpath] = FileRecord(file.size, sha, oid, file.mtime_ns, file.racy)
        self.state.save(self.committed)  # at each commit: an interruption between commits resumes after this one
        self._recorded.update(chosen)
        if len(self._recorded) == len(self.planned):
            self.uploader._committed()


def default_roll_size() -> int:
    """The roll size of a writer given no `max_file_size`: the default of the path huggingface_hub uploads through."""
    from huggingface_hub.utils._runtime import is_xet_available  # what `_upload_files` asks; the push imported it

    from .. import defaults

    return defaults.MAX_FILE_SIZE_XET if is_xet_available() else defaults.MAX_FILE_SIZE


def default_ignore_patterns(extra: tuple[str, ...] | list[str] | str | None) -> list[str]:
    """The user's ignore patterns plus huggingface_hub's defaults and our state folder."""
    from huggingface_hub.hf_api import DEFAULT_IGNORE_PATTERNS

    user = [extra] if isinstance(extra, str) else list(extra or [])
    return [*user, *DEFAULT_IGNORE_PATTERNS, STATE_DIR, f"{STATE_DIR}/*", "*.tmp", "*.lock"]
