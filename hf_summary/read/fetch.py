"""A repo's or bucket's event files, brought up to date in a local mirror: only what is new, by byte range.

The mirror is `show`'s (`$HF_HOME/hf_summary/show/<repo or bucket>/<folder>/`): what `read_scalars` fetched,
`hf-summary show` serves offline, and the other way round. Event files only grow (every writer appends, and
TensorBoard's readers assume it), so a file the mirror holds `n` bytes of is fetched from byte `n` on: a re-read
after a run grew fetches the new bytes, and a listing. A file that got shorter was replaced: it is fetched again; a
file no longer on the Hub leaves the mirror.

A repo is read at one commit (its revision's head when the read starts), so its listing and its files agree; a
bucket as it is.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..show import HubSource
from ..upload.errors import http_status
from .runs import is_event_file

logger = logging.getLogger(__name__)

FETCH_SIZE = 16 * 1024 * 1024  # bytes asked in one range request


class ReadError(Exception):
    """Why the runs cannot be read, in words the user can act on."""


def sync_mirror(source: HubSource, *, token: str | None = None) -> Path:
    """Bring the mirror of `source`'s event files up to date and return its folder; offline, return it as it is.

    Raises:
        ReadError: the repo, revision or bucket does not exist or cannot be read, or it holds no event files;
            offline, nothing of it was read before.

    Example:
        ```py
        >>> sync_mirror(parse_source("me/my-run"))
        PosixPath('/home/me/.cache/huggingface/hf_summary/show/models--me--my-run/tensorboard')
        ```
    """
    from ..upload.hub import is_offline  # imports huggingface_hub: not for a local logdir

    if is_offline():
        if not any(is_event_file(path.name) for path in source.mirror.rglob("*") if path.is_file()):
            raise ReadError(f"HF_HUB_OFFLINE is set and nothing of {source.describe()} was read before: read it once "
                            "online (unset HF_HUB_OFFLINE).")
        return source.mirror
    from huggingface_hub import HfFileSystem

    fs = HfFileSystem(token=token, skip_instance_cache=True)
    root = f"{source.prefix}/{source.folder}".rstrip("/")
    with _Errors(source):
        if source.bucket_id is None:
            from huggingface_hub import HfApi

            info = HfApi(token=token).repo_info(source.repo_id or "", repo_type=source.repo_type,
                                                revision=source.revision)
            root = f"{source.prefix}@{info.sha}/{source.folder}".rstrip("/")
        try:
            found = fs.find(root, detail=True)
        except FileNotFoundError:
            found = {}
        assert isinstance(found, dict)  # detail=True: entries by path
        events = {path[len(root):].lstrip("/"): int(entry["size"]) for path, entry in found.items()
                  if entry.get("type") == "file" and is_event_file(path.rsplit("/", 1)[-1])}
        if not events:
            raise ReadError(f"{source.describe()} holds no event files: pass the folder the writer used with "
                            "path_in_repo (--path-in-repo).")
        for relpath, size in sorted(events.items()):
            _fetch_new_bytes(fs, f"{root}/{relpath}", size, source.mirror / relpath)
    for path in source.mirror.rglob("*"):  # files deleted from the Hub since they were fetched
        if is_event_file(path.name) and path.is_file() and path.relative_to(source.mirror).as_posix() not in events:
            path.unlink()
    return source.mirror


def _fetch_new_bytes(fs: Any, path: str, size: int, target: Path) -> None:
    """Append to `target` the bytes of the Hub's file `path` (of `size` bytes) it does not hold yet."""
    have = target.stat().st_size if target.exists() else 0
    if have > size:
        logger.info("%s is shorter on the Hub than in the mirror: it was replaced, fetching it again", path)
        have = 0
    if have == size:
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    with fs.open(path, "rb", cache_type="none") as remote, open(target, "r+b" if target.exists() else "wb") as local:
        remote.seek(have)
        local.seek(have)
        local.truncate()
        while have < size:
            data = remote.read(min(FETCH_SIZE, size - have))
            if not data:
                raise ReadError(f"The Hub gave {have} bytes of {path} instead of {size}: read again.")
            local.write(data)
            have += len(data)


class _Errors:
    """Turn the Hub's errors into ReadErrors that say what to check."""

    def __init__(self, source: HubSource) -> None:
        self.source = source

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, traceback: Any) -> None:
        from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

        source = self.source
        what = "bucket" if source.bucket_id else f"{source.repo_type} repo"
        ident = source.bucket_id or source.repo_id
        if isinstance(error, RevisionNotFoundError):
            raise ReadError(f"The {what} '{ident}' has no revision '{source.revision}'.") from None
        if isinstance(error, RepositoryNotFoundError) or (
                isinstance(error, HfHubHTTPError) and http_status(error) in (401, 403, 404)):
            check = "bucket name" if source.bucket_id else "repo id and repo_type"
            raise ReadError(f"'{source.target}' is not a local folder, and no {what} '{ident}' was found (or your "
                            f"token cannot read it): check the path or the {check}; if it is private, log in with "
                            "`hf auth login` or pass a token.") from None
        if isinstance(error, HfHubHTTPError | OSError) and not isinstance(error, FileNotFoundError):
            raise ReadError(f"Could not read the logs of '{ident}': {error}") from None
