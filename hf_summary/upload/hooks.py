"""Our hooks into huggingface_hub: what its calls made by our threads do differently, and only those calls.

Its warnings about our background pushes go to our debug log (`_FromOurThreads`); its Xet progress bars are not
drawn for our uploads, and they go through our Xet session once we have one (`our_calls`, `xet.py`); a file we
upload draws no bar (`quiet_operation`). The user's own calls and settings are untouched.
"""

from __future__ import annotations

import functools
import io
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, BinaryIO, cast

from .xet import OWN_SESSION

if TYPE_CHECKING:
    from huggingface_hub import CommitOperationAdd

logger = logging.getLogger(__name__)

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
def quiet_client_logs() -> None:
    for name in _CLIENT_LOGGERS:
        logging.getLogger(name).addFilter(_FromOurThreads())


_OURS = threading.local()  # what this thread's Hub calls are: `quiet` (no bars), `own_session` (our Xet session)


@functools.cache
def _install_hooks() -> None:
    """Two answers of huggingface_hub that our own calls change, and only they: its Xet bars, and its Xet session.

    `_commit_api._upload_xet_files` (huggingface_hub 2.4.0, lines 552-684) looks both up at each call:
    - `huggingface_hub.utils.are_progress_bars_disabled()` (lines 652-655): unless it says bars are off, it draws
      "Processing Files", "New Data Upload" and "Validating" bars on stderr, on a terminal or not, through
      `XetUploadProgressReporter`. Without the reporter hf_xet gets no progress callback and draws nothing itself.
    - `huggingface_hub.utils._xet.get_xet_session()` (line 643): the process's one `hf_xet.XetSession`, whose shard
      cache (under HF_XET_CACHE) may promise chunks a CAS no longer has (`_OwnXetSession`), and whose upload
      commits ask the Hub for a write token each time (`_SeededSession`).
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
            if not getattr(_OURS, "own_session", False):
                return get_session()
            own = OWN_SESSION.get()
            return _SeededSession(own if own is not None else get_session())

        get_xet_session._hf_summary = True  # type: ignore[attr-defined]
        _xet.get_xet_session = get_xet_session


class _SeededSession:
    """A Xet session whose upload commits start with a write token that is still valid, where huggingface_hub would
    have hf_xet ask the Hub for a new one.

    `HfApi._batch_bucket_files` (huggingface_hub 2.4.0) opens each batch's upload with only `token_refresh_url`, so
    hf_xet requests a write token (`GET /api/buckets/{id}/xet-write-token`) at every push: half of a live bucket
    run's requests to the Hub. hf_xet takes a token to start with (`XetSession.new_upload_commit(endpoint, token,
    token_expiry_unix_secs, ...)`, its docstring) and still refreshes it through the URL when it nears expiry;
    huggingface_hub's own cache of write tokens (`utils._xet._fetch_xet_connection_info_with_url`: by URL and
    authorization, renewed 60 s before expiry) supplies it, with one request per token's life.
    """

    def __init__(self, session: Any) -> None:
        self._session = session

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)

    def new_upload_commit(self, **kwargs: Any) -> Any:
        url = kwargs.get("token_refresh_url")
        if url and kwargs.get("token") is None and kwargs.get("endpoint") is None:
            from huggingface_hub.utils._xet import _fetch_xet_connection_info_with_url

            try:
                info = _fetch_xet_connection_info_with_url(url, dict(kwargs.get("token_refresh_headers") or {}))
            except Exception as error:  # hf_xet asks for its own token, as without us
                logger.debug("No Xet write token to start the upload with: %s", error)
            else:
                kwargs.update(endpoint=info.endpoint, token=info.access_token,
                              token_expiry_unix_secs=info.expiration_unix_epoch)
        return self._session.new_upload_commit(**kwargs)


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
