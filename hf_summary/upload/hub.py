"""The Hub client: repo creation, commits, squashing and the model card tag, through huggingface_hub.

What our calls do differently from the user's is in `hooks.py`, the Xet recovery in `xet.py`, the token's
refusals in `auth.py`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from huggingface_hub import CommitInfo, CommitOperationAdd

from .auth import AuthErrors
from .errors import CommitNotConfirmed, http_status
from .hooks import our_calls, quiet_client_logs
from .xet import recovering_xet, xet_path

logger = logging.getLogger(__name__)

CARD_TAG = "hf-summary-writer"

def is_offline() -> bool:
    """Whether HF_HUB_OFFLINE asks us to make no network call at all."""
    from huggingface_hub import constants

    return bool(constants.is_offline_mode())


@dataclass
class RepoRef:
    """A repo, its type and branch: where a run goes."""

    repo_id: str
    repo_type: str = "model"
    revision: str = "main"
    private: bool | None = None

    def url(self) -> str:
        from huggingface_hub import constants

        prefix = "" if self.repo_type == "model" else f"{self.repo_type}s/"
        return f"{constants.ENDPOINT}/{prefix}{self.repo_id}"


class HubClient:
    """The Hub calls made for one target repo.

    Args:
        repo: the repo. `repo.repo_id` is replaced by its full `namespace/name` form once the repo exists.
        token: the token, or None to use the one huggingface_hub finds (HF_TOKEN, then `hf auth login`).
        batch_uploads: upload a commit's files in one batch, with huggingface_hub's progress bar: for a command
            a person waits on. False (background pushes) uploads them one by one, which draws no bar.
        token_option: how the user passes a token where this client is used (`token=`, `--token`).
    """

    def __init__(self, repo: RepoRef, token: str | None = None, *, batch_uploads: bool = False,
                 token_option: str = "`token=`") -> None:
        from huggingface_hub import HfApi

        from .. import __version__

        self.repo = repo
        self._token = token
        self._batch_uploads = batch_uploads
        self._token_option = token_option  # how the user gives a token here: error messages name it
        self.api = HfApi(token=token, library_name="hf_summary", library_version=__version__)
        quiet_client_logs()
        self.repo_ready = False
        self._card_checked = False  # the tag goes into our first commit, once per client

    def __repr__(self) -> str:
        return f"HubClient(repo_id={self.repo.repo_id!r}, repo_type={self.repo.repo_type!r})"

    def ensure_repo(self) -> str:
        """Create the repo (and branch) if needed; return the full repo id.

        Raises:
            HubAuthError: the token was rejected.
        """
        if self.repo_ready:
            return self.repo.repo_id
        t = self.repo
        with self._auth_errors("create the repo"):
            url = self.api.create_repo(t.repo_id, repo_type=t.repo_type, private=t.private, exist_ok=True)
            t.repo_id = url.repo_id
            if t.revision != "main":
                self.api.create_branch(t.repo_id, branch=t.revision, repo_type=t.repo_type, exist_ok=True)
        self.repo_ready = True
        return t.repo_id

    def _card_operation(self) -> CommitOperationAdd | None:
        """A README.md update adding our tag, or None if the card already has it."""
        from huggingface_hub import CommitOperationAdd, DatasetCard, ModelCard, RepoCard
        from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

        t = self.repo
        card_class = DatasetCard if t.repo_type == "dataset" else ModelCard if t.repo_type == "model" else RepoCard
        try:
            card = card_class.load(t.repo_id, repo_type=t.repo_type, token=self._token)
        except (EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError):
            card = card_class(f"---\ntags:\n- {CARD_TAG}\n---\n")
        else:
            tags = card.data.get("tags") or []
            if CARD_TAG in tags:
                return None
            card.data["tags"] = [*tags, CARD_TAG]
        return CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=str(card).encode())

    @property
    def card_pending(self) -> bool:
        """Whether this client's next commit also carries the model card (one more file in it)."""
        return not self._card_checked

    def commit(self, operations: list[CommitOperationAdd], message: str) -> CommitInfo:
        """Commit `operations` to the branch; this client's first commit also adds our tag to the model card.

        Raises:
            HubAuthError: the token was rejected.
        """
        t = self.repo
        card = None if self._card_checked else self._card_operation()
        operations = [*operations, *([card] if card else [])]
        with self._auth_errors("commit"), our_calls(quiet=not self._batch_uploads):
            # Legacy LFS: one file per upload call, as huggingface_hub draws a bar on stderr for a batch of several
            # LFS files, and that would land in the training log at every push. Xet: one upload of all the files
            # (one token, one shard), its bars switched off for this thread by `our_calls`.
            one_batch = self._batch_uploads or xet_path(operations)
            for batch in [operations] if one_batch else [[operation] for operation in operations]:
                self._upload(batch)
            info = self.api.create_commit(
                t.repo_id, operations=operations, commit_message=message, repo_type=t.repo_type, revision=t.revision
            )
            try:
                # The check is retried on its own: a commit made must not be made again because one request of the
                # check failed (and huggingface_hub would draw a bar for the content it already has).
                from .retry import RetryPolicy

                RetryPolicy(attempts=4, base=0.5, cap=4.0).call(lambda: self._confirm(operations, info),
                                                                  what="Confirm the commit")
            except CommitNotConfirmed:
                raise
            except Exception as error:  # the check itself failed: as unsure as a check that failed
                if http_status(error) in (401, 403):
                    raise
                raise CommitNotConfirmed(f"Could not confirm commit {info.oid} on {t.revision}: {error}") from error
        self._card_checked = True
        return info

    def _upload(self, operations: list[CommitOperationAdd]) -> None:
        """Upload the content of `operations` (once per content: the Hub, or its CAS, may have it already)."""
        t = self.repo
        recovering_xet(lambda: self.api.preupload_lfs_files(t.repo_id, additions=operations, repo_type=t.repo_type,
                                                            revision=t.revision), what=t.repo_id)

    def _confirm(self, operations: list[CommitOperationAdd], info: CommitInfo) -> None:
        """Check that the branch holds what the commit sent, before anything is recorded as committed.

        A server (or a proxy) that answers 200 without committing would otherwise have the files recorded as on
        the Hub, and never sent again. One request: the sizes, and the LFS hashes, of the committed paths.
        """
        t = self.repo
        found = {entry.path: entry for entry in self.api.get_paths_info(
            t.repo_id, [op.path_in_repo for op in operations], repo_type=t.repo_type, revision=t.revision)}
        for operation in operations:
            entry = found.get(operation.path_in_repo)
            lfs = getattr(entry, "lfs", None)
            if (entry is None or getattr(entry, "size", None) != operation.upload_info.size
                    or (lfs is not None and lfs.sha256 != operation.upload_info.sha256.hex())):
                raise CommitNotConfirmed(
                    f"The Hub answered commit {info.oid} but {t.revision} does not hold {operation.path_in_repo} as "
                    "sent; nothing is recorded, the push tries again.")

    def commit_ages(self, window: float, limit: int | None = None) -> list[float]:
        """Seconds since each commit of the branch made in the last `window` seconds, newest first.

        Reads the history newest first and stops at the first older commit: one request in most cases.
        """
        from huggingface_hub.utils import build_hf_headers, paginate, parse_datetime

        t = self.repo
        url = f"{self.api.endpoint}/api/{t.repo_type}s/{t.repo_id}/commits/{t.revision}"
        headers = build_hf_headers(token=self._token, library_name="hf_summary")
        now = time.time()
        ages = []
        with self._auth_errors("read the history"):
            for item in paginate(url, params={}, headers=headers):
                age = now - parse_datetime(item["date"]).timestamp()
                if age > window:
                    break
                ages.append(max(0.0, age))
                if limit is not None and len(ages) >= limit:
                    break
        return ages

    def file_sizes(self, folder: str) -> dict[str, int]:
        """The size of each file below `folder` on the branch, by path relative to it.

        Raises:
            HubAuthError: the token was rejected.
        """
        from huggingface_hub.errors import EntryNotFoundError
        from huggingface_hub.hf_api import RepoFile

        t = self.repo
        with self._auth_errors("read the repo"):
            try:
                entries = list(self.api.list_repo_tree(t.repo_id, path_in_repo=folder, recursive=True,
                                                       repo_type=t.repo_type, revision=t.revision))
            except EntryNotFoundError:
                return {}  # the folder is not on the branch (yet, or any more)
            return {entry.path[len(folder) + 1:]: entry.size for entry in entries if isinstance(entry, RepoFile)}

    def last_commit_age(self) -> float | None:
        """Seconds since the branch's newest commit (one request), or None for a branch without commits."""
        ages = self.commit_ages(float("inf"), limit=1)
        return ages[0] if ages else None

    def commit_count(self) -> int:
        """The number of commits on the branch."""
        t = self.repo
        return len(self.api.list_repo_commits(t.repo_id, repo_type=t.repo_type, revision=t.revision))

    def squash(self) -> None:
        t = self.repo
        self.api.super_squash_history(t.repo_id, branch=t.revision, repo_type=t.repo_type,
                                      commit_message="Squash TensorBoard logs")

    def _auth_errors(self, action: str) -> AuthErrors:
        return AuthErrors(action, self._token, self._token_option)
