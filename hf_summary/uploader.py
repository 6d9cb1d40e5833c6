"""One push: plan what changed in a logdir, commit it to the repo folder, record it in the upload state."""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING

from .hub import HubClient
from .upload_plan import PlannedFile, UploadPlanner, clear_snapshots, snapshot
from .upload_state import STATE_DIR, FileRecord, UploadState, target_key

if TYPE_CHECKING:
    from huggingface_hub import CommitInfo, CommitOperationAdd

logger = logging.getLogger(__name__)


def repo_folder(path_in_repo: str | None, logdir: Path) -> str:
    """The repo folder a logdir goes to: `<path_in_repo>/<logdir name>`, as huggingface_hub's HFSummaryWriter does."""
    name = logdir.resolve().name
    return f"{path_in_repo.strip('/')}/{name}" if path_in_repo else name


class Uploader:
    """Uploads one logdir into one repo folder, resumably.

    Args:
        logdir: the folder to upload.
        client: the Hub client of the target repo.
        path_in_repo: the repo folder that receives the logdir's files.
        allow_patterns: patterns a file must match to be uploaded.
        ignore_patterns: patterns that exclude a file.
        squash_history: squash the branch to one commit after each commit.
        open_files: returns the event files a writer of this process may still append to.
    """

    def __init__(
        self,
        logdir: Path,
        client: HubClient,
        path_in_repo: str,
        *,
        allow_patterns: list[str] | str | None,
        ignore_patterns: list[str],
        squash_history: bool = False,
        open_files: Callable[[], list[Path]] = list,
    ) -> None:
        self.logdir = logdir
        self.client = client
        self.path_in_repo = path_in_repo
        self.squash_history = squash_history
        self.planner = UploadPlanner(logdir, allow_patterns, ignore_patterns)
        self._open_files = open_files

    def state(self) -> UploadState:
        t = self.client.target
        return UploadState(self.logdir, target_key(t.repo_type, t.repo_id, t.revision, self.path_in_repo))

    def pending(self) -> list[PlannedFile]:
        """Files whose valid content is not on the Hub yet, according to the upload state."""
        return self.planner.plan(self.state().load(), self._open_files())

    def push(self, lock_timeout: float = -1) -> CommitInfo | None:
        """Commit what changed; return the commit, or None when there was nothing to send.

        Raises:
            HubAuthError: the token was rejected.
            filelock.Timeout: another process held the logdir's upload lock for `lock_timeout` seconds.
            Exception: whatever the Hub client raised; nothing is recorded as committed then.
        """
        return push_together([self], lock_timeout)

    def _operations(self, planned: list[PlannedFile], snapshots: Path) -> list[CommitOperationAdd]:
        from huggingface_hub import CommitOperationAdd

        return [
            CommitOperationAdd(
                path_in_repo=f"{self.path_in_repo}/{file.relpath}",
                path_or_fileobj=str(file.local_path if file.final else snapshot(file, snapshots)),
            )
            for file in planned
        ]


def push_together(uploaders: list[Uploader], lock_timeout: float = -1) -> CommitInfo | None:
    """Commit what changed in several logdirs bound for the same repo and branch, in one commit.

    The Hub rate-limits commits per repo, so a sweep of many writers makes one commit per push, not one each.
    Each logdir's state is read and written under its own lock, taken in a fixed order so that processes sharing
    logdirs cannot deadlock.
    """
    client = uploaders[0].client
    client.ensure_repo()
    with ExitStack() as stack:
        batches: list[tuple[Uploader, UploadState, dict[str, FileRecord], list[PlannedFile], list]] = []
        for uploader in sorted(uploaders, key=lambda u: str(u.logdir.resolve())):
            state = uploader.state()
            stack.enter_context(state.lock(lock_timeout))
            # Read inside the lock: another process may have committed since we last looked.
            committed = state.load()
            planned = uploader.planner.plan(committed, uploader._open_files())
            if planned:
                snapshots = state.folder / "snapshots"
                stack.callback(clear_snapshots, snapshots)
                batches.append((uploader, state, committed, planned, uploader._operations(planned, snapshots)))
        if not batches:
            return None
        operations = [op for *_, ops in batches for op in ops]
        files = [file for _, _, _, planned, _ in batches for file in planned]
        card = client.card_operation() if not client.card_checked else None
        message = f"Upload TensorBoard logs: {len(files)} file(s), {sum(f.size for f in files)} bytes"
        info = client.commit(operations + ([card] if card else []), message)
        client.card_checked = True
        for _, state, committed, planned, ops in batches:
            for file, operation in zip(planned, ops, strict=True):
                sha = operation.upload_info.sha256.hex() if operation.upload_info.is_hashed else ""
                committed[file.relpath] = FileRecord(file.size, sha, info.oid, file.mtime_ns)
            state.save(committed)
    logger.info("Committed %d file(s) to %s (%s)", len(files), client.target.repo_id, info.oid)
    if any(u.squash_history for u in uploaders):
        client.squash()
    return info


def default_ignore_patterns(extra: list[str] | str | None) -> list[str]:
    """The user's ignore patterns plus huggingface_hub's defaults and our state folder."""
    from huggingface_hub.hf_api import DEFAULT_IGNORE_PATTERNS

    user = [extra] if isinstance(extra, str) else list(extra or [])
    return [*user, *DEFAULT_IGNORE_PATTERNS, STATE_DIR, f"{STATE_DIR}/*", "*.tmp", "*.lock"]
