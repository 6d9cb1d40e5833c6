"""A repo's or bucket's event files, brought up to date in a local mirror: only what is new, by byte range.

The mirror is `show`'s (`$HF_HOME/hf_summary/show/<repo or bucket>/<folder>/`): what `read_scalars` fetched,
`hf-summary show` serves (TensorBoard reads it), and the other way round. Event files only grow (every writer
appends, and TensorBoard's readers assume it), so a file the mirror holds `n` bytes of is fetched from byte `n` on,
in one range request that starts `OVERLAP` bytes earlier: if those bytes are not the mirror's, the file was replaced,
and it is fetched again whole, as is a file that got shorter. A file fetched again is written beside its name and
renamed over it: a reader of the mirror sees the old file or the new one, never a mix. A file no longer on the Hub
leaves the mirror.

A repo is read at one commit (its revision's head when the read starts), so its listing and its files agree; a
bucket as it is.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote

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

CHUNK_SIZE = 1024 * 1024  # bytes of a response written at once: a fetch holds no more than this in memory
OVERLAP = 64  # bytes before the mirror's end asked again: if they differ from the mirror's, the file was replaced
FETCH_WORKERS = 8  # files fetched at once (a sweep's runs): each is a request and a response to wait on
UNCHANGED, NEW, GREW, REPLACED, GONE = "unchanged", "new", "grew", "replaced", "gone"

__all__ = ["ReadError", "RemoteFile", "fetch_file", "list_event_files", "remove_stale", "sync_mirror"]


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
    sha = check_exists(source, token=token)
    events = list_event_files(source, token=token, sha=sha)
    remove_stale(source, events)
    with ThreadPoolExecutor(FETCH_WORKERS, thread_name_prefix="hf_summary-fetch") as pool:
        for _ in pool.map(lambda remote: fetch_file(source, remote, token=token, sha=sha), events.values()):
            pass  # a failed fetch raises here
    return source.mirror


def remove_stale(source: HubSource, events: dict[str, RemoteFile]) -> list[str]:
    """Remove from the mirror the event files not in `events` (deleted from the Hub since they were fetched); return
    their paths."""
    removed = []
    for path in source.mirror.rglob("*"):
        relpath = path.relative_to(source.mirror).as_posix()
        if is_event_file(path.name) and relpath not in events and path.is_file():
            path.unlink(missing_ok=True)
            removed.append(relpath)
    return removed


def file_url(source: HubSource, relpath: str, sha: str | None) -> str:
    """The URL serving a file of the source's folder (a repo's at commit `sha`), as `HfFileSystem` reads it."""
    from huggingface_hub import constants, hf_hub_url

    path = f"{source.folder}/{relpath}" if source.folder else relpath
    if source.bucket_id is not None:
        return f"{constants.ENDPOINT}/buckets/{source.bucket_id}/resolve/{quote(path)}"
    return hf_hub_url(source.ident, path, repo_type=source.kind, revision=sha or source.revision)


def fetch_file(source: HubSource, remote: RemoteFile, *, token: str | None = None, sha: str | None = None,
               whole: bool = False) -> str:
    """Bring the mirror's copy of `remote` up to date: only its new bytes, unless it was replaced.

    Args:
        source: the repo or bucket.
        remote: the file as listed: it is fetched up to its size.
        token: the Hub token.
        sha: a repo's commit the listing was made at.
        whole: fetch it whole (its content is known to have changed at the same size).

    Returns:
        `UNCHANGED`, `NEW`, `GREW`, `REPLACED` (fetched again whole: it got shorter, or its bytes before the mirror's
        end changed) or `GONE` (not on the Hub any more).

    Raises:
        ReadError: the Hub refused, or gave fewer bytes than listed (the mirror keeps what came: read again).
    """
    from huggingface_hub.errors import EntryNotFoundError

    target = source.mirror / remote.path
    have = target.stat().st_size if target.is_file() else 0
    if have == remote.size and not whole:
        return UNCHANGED
    url = file_url(source, remote.path, sha)
    try:
        with hub_errors(source):
            if whole or remote.size < have or not _append(url, remote, target, have, token):
                _fetch_whole(url, remote, target, token)
                return REPLACED
    except EntryNotFoundError:  # deleted since it was listed
        return GONE
    return GREW if have else NEW


def _append(url: str, remote: RemoteFile, target: Path, have: int, token: str | None) -> bool:
    """Append to `target` (holding `have` bytes) the file's bytes from `have` on; False, with nothing written, if the
    `OVERLAP` bytes before `have` are not the mirror's (the file was replaced)."""
    start = max(0, have - OVERLAP)
    with _ranges(url, start, remote.size, token) as stream:
        if have:
            with open(target, "rb") as local:
                local.seek(start)
                if stream.read(have - start) != local.read(have - start):
                    logger.info("%s was replaced on the Hub: fetching it again", remote.path)
                    return False
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "r+b" if have else "wb") as local:
            local.seek(have)
            _copy(stream, local, remote, have)
    return True


def _fetch_whole(url: str, remote: RemoteFile, target: Path, token: str | None) -> None:
    """Fetch the file whole beside `target` (under a name TensorBoard does not read), then rename it over `target`."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".partial-{os.getpid()}-{threading.get_ident()}")
    try:
        with _ranges(url, 0, remote.size, token) as stream, open(partial, "wb") as local:
            _copy(stream, local, remote, 0)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def _copy(stream: _Stream, local: BinaryIO, remote: RemoteFile, have: int) -> None:
    while chunk := stream.read(CHUNK_SIZE):
        local.write(chunk)
        have += len(chunk)
    if have < remote.size:
        raise ReadError(f"The Hub gave {have} bytes of {remote.path} instead of {remote.size}: read again.")


class _Stream:
    """The bytes of a response from `start` to `end` of the file, read in pieces of any size."""

    def __init__(self, chunks: Iterator[bytes], skip: int, size: int) -> None:
        self._chunks = chunks
        self._skip = skip  # a server that ignored the range sent the file from its first byte
        self._left = size
        self._buffer = b""

    def read(self, size: int) -> bytes:
        while len(self._buffer) < size and self._left > 0:
            chunk = next(self._chunks, b"")
            if not chunk:
                break
            if self._skip:
                cut = min(self._skip, len(chunk))
                chunk, self._skip = chunk[cut:], self._skip - cut
            chunk = chunk[:self._left]
            self._left -= len(chunk)
            self._buffer += chunk
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data


@contextmanager
def _ranges(url: str, start: int, end: int, token: str | None) -> Iterator[_Stream]:
    """Bytes `start` to `end` of the file at `url`: one streamed range request, retried as huggingface_hub retries a
    download."""
    from huggingface_hub import constants
    from huggingface_hub.utils import build_hf_headers, hf_raise_for_status, http_stream_backoff

    if end <= start:
        yield _Stream(iter(()), 0, 0)
        return
    headers = {**build_hf_headers(token=token), "range": f"bytes={start}-{end - 1}"}
    with http_stream_backoff("GET", url, headers=headers, timeout=constants.HF_HUB_DOWNLOAD_TIMEOUT) as response:
        hf_raise_for_status(response)
        yield _Stream(response.iter_bytes(CHUNK_SIZE), start if response.status_code == 200 else 0, end - start)
