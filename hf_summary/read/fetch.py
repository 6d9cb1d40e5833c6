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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..source import (
    HubSource,
    ReadError,
    check_exists,
    hub_errors,
    hub_folders_with_events,
    is_event_file,
    no_event_files,
)

logger = logging.getLogger(__name__)

FETCH_SIZE = 16 * 1024 * 1024  # bytes asked in one range request

__all__ = ["ReadError", "RemoteFile", "list_event_files", "sync_mirror"]


@dataclass(frozen=True)
class RemoteFile:
    """An event file of a repo or bucket.

    Attributes:
        path: its path relative to the source's folder.
        size: its size in bytes.
        version: what changes whenever its content does (a bucket file's Xet hash, a repo file's blob id).
    """

    path: str
    size: int
    version: str | None = None


def list_event_files(source: HubSource, *, token: str | None = None, sha: str | None = None) -> dict[str, RemoteFile]:
    """The event files under `source`'s folder (a repo's at commit `sha`), by path relative to it.

    Raises:
        ReadError: there are none ("no event files under ..., found these folders: ..."), or the Hub refused.
    """
    files = _list(source, source.folder, token, sha)
    events = {relpath: file for relpath, file in files.items() if is_event_file(relpath.rsplit("/", 1)[-1])}
    if not events:
        everything = list(_list(source, "", token, sha)) if source.folder else list(files)
        raise no_event_files(f"'{source.folder or '/'}' in the {source.what}", hub_folders_with_events(everything),
                             hub=True)
    return events


def _list(source: HubSource, folder: str, token: str | None, sha: str | None) -> dict[str, RemoteFile]:
    """Every file under `folder` of the repo or bucket, by path relative to it (one listing, paginated)."""
    from huggingface_hub import BucketFile, HfApi
    from huggingface_hub.errors import EntryNotFoundError
    from huggingface_hub.hf_api import RepoFile

    api = HfApi(token=token)
    found: dict[str, RemoteFile] = {}
    start = len(folder) + 1 if folder else 0
    with hub_errors(source):
        try:
            if source.bucket_id is not None:
                for entry in api.list_bucket_tree(source.bucket_id, prefix=folder or None, recursive=True):
                    if isinstance(entry, BucketFile) and (not folder or entry.path.startswith(folder + "/")):
                        found[entry.path[start:]] = RemoteFile(entry.path[start:], entry.size, entry.xet_hash)
            else:
                for item in api.list_repo_tree(source.ident, path_in_repo=folder or None, recursive=True,
                                               revision=sha or source.revision, repo_type=source.kind):
                    if isinstance(item, RepoFile) and (not folder or item.path.startswith(folder + "/")):
                        found[item.path[start:]] = RemoteFile(item.path[start:], item.size, item.blob_id)
        except EntryNotFoundError:  # the folder is not there
            return {}
    return found


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

    sha = check_exists(source, token=token)
    events = list_event_files(source, token=token, sha=sha)
    fs = HfFileSystem(token=token, skip_instance_cache=True)
    root = f"{source.prefix}@{sha}/{source.folder}" if sha else f"{source.prefix}/{source.folder}"
    with hub_errors(source):
        for relpath, remote in sorted(events.items()):
            _fetch_new_bytes(fs, f"{root.rstrip('/')}/{relpath}", remote.size, source.mirror / relpath)
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
