"""Xet uploads that recover: when the CAS refuses a shard that the shared shard cache promised, our uploads go
through a session of our own, with a cache that starts empty."""

from __future__ import annotations

import io
import logging
import os
import re
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from huggingface_hub import CommitOperationAdd

logger = logging.getLogger(__name__)

T = TypeVar("T")


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


OWN_SESSION = _OwnXetSession()
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
        OWN_SESSION.renew()
        return upload()


def xet_path(operations: list[CommitOperationAdd]) -> bool:
    """Whether huggingface_hub uploads these operations through Xet (what `_commit_api._upload_files` decides)."""
    from huggingface_hub.utils._runtime import is_xet_available

    return is_xet_available() and not any(isinstance(op.path_or_fileobj, io.BufferedIOBase) for op in operations)
