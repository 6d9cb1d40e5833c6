"""The Hub client: repo creation, commits, squashing and the model card tag, through huggingface_hub."""

from __future__ import annotations

import functools
import io
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar, cast

if TYPE_CHECKING:
    from huggingface_hub import CommitInfo, CommitOperationAdd

from .errors import CommitNotConfirmed, HubAuthError, http_status

logger = logging.getLogger(__name__)

CARD_TAG = "hf-summary-writer"

THREAD_PREFIX = "hf_summary-"  # the names of our threads; huggingface_hub's log records from them are ours to route
# The huggingface_hub modules that log while a commit is made (each retried request is a warning on stderr).
_CLIENT_LOGGERS = ("huggingface_hub.utils._http", "huggingface_hub._commit_api", "huggingface_hub.lfs",
                   "huggingface_hub.hf_api")


class _FromOurThreads(logging.Filter):
    """Routes huggingface_hub's warnings about our background pushes to our debug log instead of stderr.

    A retried request is routine for a push; printed, it would land in the training log at every hiccup. Records
    from the user's own threads are untouched, and so are huggingface_hub's settings.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR or not (record.threadName or "").startswith(THREAD_PREFIX):
            return True
        logger.debug("huggingface_hub: %s", record.getMessage())
        return False


@functools.cache
def _quiet_client_logs() -> None:
    for name in _CLIENT_LOGGERS:
        logging.getLogger(name).addFilter(_FromOurThreads())


T = TypeVar("T")

_OURS = threading.local()  # what this thread's Hub calls are: `quiet` (no bars), `own_session` (our Xet session)


@functools.cache
def _install_hooks() -> None:
    """Two answers of huggingface_hub that our own calls change, and only they: its Xet bars, and its Xet session.

    `_commit_api._upload_xet_files` (huggingface_hub 2.4.0, lines 552-684) looks both up at each call:
    - `huggingface_hub.utils.are_progress_bars_disabled()` (lines 652-655): unless it says bars are off, it draws
      "Processing Files", "New Data Upload" and "Validating" bars on stderr, on a terminal or not, through
      `XetUploadProgressReporter`. Without the reporter hf_xet gets no progress callback and draws nothing itself.
    - `huggingface_hub.utils._xet.get_xet_session()` (line 643): the process's one `hf_xet.XetSession`, whose shard
      cache (under HF_XET_CACHE) may promise chunks a CAS no longer has (`_OwnXetSession`).
    Each answer changes only in a thread inside one of our calls (`our_calls`); every other call, in any thread,
    gets huggingface_hub's own (HF_HUB_DISABLE_PROGRESS_BARS, `disable_progress_bars()`, its session), and the
    user's settings are left as they are.
    """
    from huggingface_hub import utils
    from huggingface_hub.utils import _xet

    disabled = utils.are_progress_bars_disabled
    if not getattr(disabled, "_hf_summary", False):  # not installed already (a module reloaded)
        @functools.wraps(disabled)
        def are_progress_bars_disabled(name: str | None = None) -> bool:
            return bool(getattr(_OURS, "quiet", False)) or disabled(name)

        are_progress_bars_disabled._hf_summary = True  # type: ignore[attr-defined]
        utils.are_progress_bars_disabled = are_progress_bars_disabled

    get_session = _xet.get_xet_session
    if not getattr(get_session, "_hf_summary", False):
        @functools.wraps(get_session)
        def get_xet_session() -> Any:
            own = _OWN_SESSION.get() if getattr(_OURS, "own_session", False) else None
            return own if own is not None else get_session()

        get_xet_session._hf_summary = True  # type: ignore[attr-defined]
        _xet.get_xet_session = get_xet_session


@contextmanager
def our_calls(*, quiet: bool) -> Iterator[None]:
    """The Hub calls this thread makes in this block are ours: no bar if `quiet`, our Xet session if we have one."""
    _install_hooks()
    before = (getattr(_OURS, "quiet", False), getattr(_OURS, "own_session", False))
    _OURS.quiet, _OURS.own_session = quiet, True
    try:
        yield
    finally:
        _OURS.quiet, _OURS.own_session = before


class _OwnXetSession:
    """A Xet session of ours, with a shard cache of its own, for when the shared one promised chunks the CAS lacks.

    hf_xet remembers in its shard cache (HF_XET_CACHE, by CAS address) the chunks it uploaded, and sends only a
    shard for a file whose chunks it remembers. If the CAS lost them (restored, or restarted empty at the same
    address), the CAS refuses that shard (400), and every later push of this content is refused the same way: the
    cache never forgets. Once a refusal is seen, our calls in this process go through a session whose shard cache
    starts empty, in a folder of ours removed at exit; the user's own calls keep huggingface_hub's session.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._session: Any = None
        self._pid: int | None = None
        self._folders: list[str] = []

    def get(self) -> Any:
        with self._lock:
            return self._session if self._pid == os.getpid() else None  # not a parent's, after a fork

    def _remove_folders(self) -> None:
        import shutil

        for folder in self._folders:
            shutil.rmtree(folder, ignore_errors=True)

    def renew(self) -> None:
        import atexit
        import tempfile

        import hf_xet  # type: ignore[import-untyped]
        from huggingface_hub import constants

        with self._lock:
            os.makedirs(constants.HF_XET_CACHE, exist_ok=True)
            folder = tempfile.mkdtemp(prefix="hf_summary-shards-", dir=constants.HF_XET_CACHE)
            if not self._folders:
                atexit.register(self._remove_folders)
            self._folders.append(folder)
            config = hf_xet.XetConfig().with_config({
                "shard.cache_subdir": os.path.join(folder, "shard-cache"),  # absolute: replaces the shared one
                "session.dir_name": os.path.join(folder, "shard-session"),
            })
            self._session, self._pid = hf_xet.XetSession(config), os.getpid()


_OWN_SESSION = _OwnXetSession()
# hf_xet's error for a refused shard upload, e.g. "Network error: Request error: HTTP status client error (400 Bad
# Request), domain: https://cas.example/v1/shards"
_SHARD_REFUSED = re.compile(r"client error \((4\d\d)\b[^)]*\).*/shards\b", re.DOTALL)


def _shard_refused(error: BaseException) -> bool:
    """Whether an upload failed because the CAS refused a shard for good (not for the token, or a rate limit)."""
    cause: BaseException | None = error
    for _ in range(8):  # the error and its causes
        if cause is None:
            break
        match = _SHARD_REFUSED.search(str(cause))
        if match and int(match.group(1)) not in (401, 403, 408, 429):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def recovering_xet(upload: Callable[[], T], *, what: str) -> T:
    """Make an upload of ours; if the CAS lacks chunks the Xet shard cache says it has, again at once with a shard
    cache of our own (`_OwnXetSession`)."""
    try:
        return upload()
    except Exception as error:
        if not _shard_refused(error):
            raise
        logger.info("The Xet storage refused an upload to %s (%s): uploading again without the shard cache", what,
                    error)
        _OWN_SESSION.renew()
        return upload()


def _xet_path(operations: list[CommitOperationAdd]) -> bool:
    """Whether huggingface_hub uploads these operations through Xet (what `_commit_api._upload_files` decides)."""
    from huggingface_hub.utils._runtime import is_xet_available

    return is_xet_available() and not any(isinstance(op.path_or_fileobj, io.BufferedIOBase) for op in operations)


def token_source(token: str | None, option: str = "`token=`") -> str | None:
    """Where huggingface_hub takes the token from, in words a user can act on; None when there is no token."""
    if token:
        return f"the token passed with {option}"
    if os.environ.get("HF_TOKEN"):
        return "the HF_TOKEN environment variable"
    if os.environ.get("HUGGING_FACE_HUB_TOKEN"):
        return "the HUGGING_FACE_HUB_TOKEN environment variable"
    from huggingface_hub import constants

    if os.path.exists(constants.HF_TOKEN_PATH):
        return f"the token saved by `hf auth login` in {constants.HF_TOKEN_PATH}"
    return None


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
        _quiet_client_logs()
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
            one_batch = self._batch_uploads or _xet_path(operations)
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

    def _auth_errors(self, action: str) -> _AuthErrors:
        return _AuthErrors(action, self._token, self._token_option)


def quiet_operation(path_in_repo: str, path: str | bytes | io.BufferedIOBase) -> CommitOperationAdd:
    """A `CommitOperationAdd` of a file (a path, its bytes, or an open file) that uploads without drawing a bar.

    huggingface_hub shows a bar for every file it uploads from a path, on stderr, whatever the terminal: in a training
    log, one per file and per push. Only this operation opts out; the user's own progress-bar settings are untouched.
    """
    return _quiet_class()(path_in_repo=path_in_repo, path_or_fileobj=cast(BinaryIO, path))


@functools.cache
def _quiet_class() -> type[CommitOperationAdd]:
    from huggingface_hub import CommitOperationAdd

    class QuietCommitOperationAdd(CommitOperationAdd):
        def as_file(self, with_tqdm: bool = False) -> Any:
            return super().as_file(with_tqdm=False)

    return QuietCommitOperationAdd


class _AuthErrors:
    """Turns 401/403 into a HubAuthError that says which token was used and what to do."""

    def __init__(self, action: str, token: str | None, option: str) -> None:
        self._action = action
        self._token = token
        self._option = option

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
                 ) -> None:
        if exc is not None and http_status(exc) in (401, 403):
            source = token_source(self._token, self._option)
            if source is None:
                raise HubAuthError(
                    f"The Hub refused to {self._action} (HTTP {http_status(exc)}): you are not logged in. Run "
                    f"`hf auth login`, set HF_TOKEN, or pass a token with {self._option}."
                ) from None
            raise HubAuthError(
                f"The Hub refused to {self._action} (HTTP {http_status(exc)}) with {source}. Check that this token "
                "exists and has write access to the repo's namespace, or pass another one with "
                f"{self._option} / `hf auth login`."
            ) from None
