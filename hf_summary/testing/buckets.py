"""HTTP routes of Storage Buckets: what the real huggingface_hub 2.4.0 client calls, and answers it reads.

Where each fact comes from (huggingface_hub 2.4.0, installed; Hub docs found through the `search` tool):

- What a bucket is: "S3-like object storage, powered by the Xet storage backend", "non-versioned and mutable",
  handle `hf://buckets/{namespace}/{name}` (https://huggingface.co/docs/hub/storage-buckets, and the launch post
  https://huggingface.co/blog/storage-buckets).
- `POST /api/buckets/{ns}/{name}` with `{"visibility": "private"|"public"}` creates (`hf_api.py` `create_bucket`;
  namespace "me" is the caller). Answer `{"url": "{endpoint}/buckets/{id}"}` (parsed by `_buckets.py` `BucketUrl`);
  409 if it exists, which `exist_ok=True` swallows.
- `GET /api/buckets/{id}` (`bucket_info`): `BucketInfo` reads `id, private, createdAt, size, totalFiles`;
  `_bucket_live_follow.BucketFollower._fetch_updated_at` reads `updatedAt` (where to resume after a reconcile).
  `DELETE` deletes (`delete_bucket`), `PUT .../settings {"private": bool}` (`update_bucket_settings`),
  `GET /api/buckets/{ns}` lists (`list_buckets`, paginated).
- `GET /api/buckets/{id}/tree[/{prefix}]?recursive=` (`list_bucket_tree`, through `utils/_pagination.paginate`, which
  follows `Link: <...>; rel="next"`). Items `{type: "file", path, size, xetHash, mtime, uploadedAt}` (`BucketFile`)
  and, when not recursive, `{type: "directory", path, uploadedAt}` (`BucketFolder`; `hf_file_system.py`
  `_list_bucket_tree_with_folders`: "If recursive=False, both files and folders are returned by the server";
  recursive listings carry files only and the client rebuilds folders). The prefix is matched lexically ("listing
  "logs" also returns "logs_existing/..."", same function), and a prefix naming a file lists that file.
- `POST /api/buckets/{id}/paths-info {"paths": [...]}` (`get_bucket_paths_info`, batches of
  `_BUCKET_PATHS_INFO_BATCH_SIZE` = 1000): the files among them, missing ones left out.
- `GET /api/buckets/{id}/xet-{read|write}-token`, no revision (`utils/_xet.py` `xet_connection_info_refresh_url`):
  the same token answer as for repositories (see `cas.py`).
- `POST /api/buckets/{id}/batch`, NDJSON, one operation a line (`_batch_bucket_files` `_payload_as_ndjson`):
  `{"type": "addFile", path, xetHash, mtime (ms), contentType?}`, `{"type": "copyFile", path, xetHash, mtime,
  sourceRepoType, sourceRepoId}`, `{"type": "deleteFile", path}`; at most `_BUCKET_BATCH_ADD_CHUNK_SIZE` = 1000
  operations a request. Non-transactional (its docstring): "Failed operations are listed in the body of a 200
  (partial failure) or a 422 (all failed)" as `{"failed": [{path, error}]}`, raised as `BucketBatchError`.
- `GET|HEAD /buckets/{id}/resolve/{path}` (`get_bucket_file_metadata`; `hf_file_system.py` `url()` and
  `HfFileSystemFile._fetch_range`): `X-Xet-Hash` with a `Link: <.../xet-read-token>; rel="xet-auth"`
  (`utils/_xet.py` `parse_xet_file_data_from_response`), size in `X-Linked-Size`; GET serves the bytes, with ranges.
- `GET /api/buckets/{id}/events?cursor=|since=` (`_bucket_live_follow.py`): `text/event-stream`; events `changes`
  `{cursor, changes: [{path, op: add|update|delete, size, xetHash, uploadedAt, mtime}]}` (replayed ones before
  `ready {cursor?}`), `reset {reason}` when the resume point is older than the replay buffer; keep-alive comments
  ("the server pings every ~30s", `STREAM_READ_TIMEOUT`). A malformed cursor is a 400, on which the client steps
  back to `since=`, then to a bare live request.

Bucket routes exist only when the server speaks Xet (buckets are "powered by Xet"); otherwise they are 404.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from email.message import Message
from io import BufferedIOBase
from pathlib import PurePosixPath
from typing import Any, Protocol
from urllib.parse import quote

from . import cas
from .auth import Identity, require_namespace_write, require_read, require_write
from .bucket_store import (
    BUCKET_TYPE,
    Bucket,
    BucketAction,
    BucketObject,
    BucketStore,
    PutObject,
    RemoveObject,
    iso_time,
    parse_iso_time,
    path_error,
    validate_bucket_id,
)
from .errors import BadRequest, EntryNotFound, HubError
from .state import HubState
from .storage import DEFAULT_BRANCH, REPO_TYPES, RepoInfo, RepoKey

TREE_PAGE_SIZE = 1000  # entries per `tree` page; tests may lower it to see pagination
MAX_BATCH_OPERATIONS = 1000  # huggingface_hub `_BUCKET_BATCH_ADD_CHUNK_SIZE` / `_BUCKET_BATCH_DELETE_CHUNK_SIZE`
MAX_PATHS_INFO = 1000  # huggingface_hub `_BUCKET_PATHS_INFO_BATCH_SIZE`
EVENTS_PING_INTERVAL = 30.0  # seconds between keep-alive comments of the change feed
_WAIT_SLICE = 1.0  # a feed stream checks this often whether the server is closing


class BucketRequest(Protocol):
    """What the bucket routes use of the request being served (the server's `HubRequestHandler`)."""

    _identity: Identity | None

    @property
    def state(self) -> HubState: ...

    @property
    def headers(self) -> Message: ...

    @property
    def command(self) -> str: ...

    @property
    def wfile(self) -> BufferedIOBase: ...

    @property
    def closing(self) -> threading.Event: ...

    def _body(self) -> bytes: ...

    def _json_body(self) -> dict: ...

    def _query_values(self, name: str) -> list[str]: ...

    def _query_flag(self, name: str) -> bool: ...

    def _next_link(self, **params: str) -> str: ...

    def _send_json(self, status: int, data: Any, *, headers: dict[str, str] | None = ...) -> None: ...

    def _send_content(self, sha256: str, size: int, headers: dict[str, str]) -> None: ...

    def _start_stream(self, status: int, content_type: str, headers: dict[str, str]) -> bool: ...


def _store(handler: BucketRequest) -> BucketStore:
    state = handler.state
    if state.xet is None or state.buckets is None:
        raise HubError(404, "Not Found")  # without Xet there are no buckets, as before them
    return state.buckets


def _info(bucket: Bucket) -> RepoInfo:
    """The bucket as the permission rules of `auth.py` see repositories (owner, visibility)."""
    return RepoInfo(RepoKey(BUCKET_TYPE, bucket.bucket_id), bucket.owner, bucket.private, bucket.created_at)


def _readable(handler: BucketRequest, bucket_id: str) -> Bucket:
    bucket = _store(handler).get(validate_bucket_id(bucket_id))
    require_read(_info(bucket) if bucket is not None else None, handler._identity)
    assert bucket is not None
    return bucket


def _writable(handler: BucketRequest, bucket_id: str) -> Bucket:
    bucket = _store(handler).get(validate_bucket_id(bucket_id))
    require_write(_info(bucket) if bucket is not None else None, handler._identity)
    assert bucket is not None
    return bucket


# -------------------------------------------------------------------- routing


def route_api(handler: BucketRequest, method: str, segments: list[str]) -> None:
    """Serve `/api/buckets/...`; `segments` come after "buckets"."""
    _store(handler)
    match method, segments:
        case "GET", [namespace]:
            _list(handler, namespace)
        case "POST", [namespace, name]:
            _create(handler, namespace, name)
        case "GET", [namespace, name]:
            _bucket_info(handler, f"{namespace}/{name}")
        case "DELETE", [namespace, name]:
            _writable(handler, f"{namespace}/{name}")
            _store(handler).delete(f"{namespace}/{name}")
            handler._send_json(200, {})
        case "PUT", [namespace, name, "settings"]:
            _settings(handler, f"{namespace}/{name}")
        case "GET", [namespace, name, "tree", *prefix]:
            _tree(handler, f"{namespace}/{name}", "/".join(prefix).strip("/"))
        case "POST", [namespace, name, "paths-info"]:
            _paths_info(handler, f"{namespace}/{name}")
        case "POST", [namespace, name, "batch"]:
            _batch(handler, f"{namespace}/{name}")
        case "GET", [namespace, name, "xet-read-token" | "xet-write-token" as route, *_]:
            _xet_token(handler, f"{namespace}/{name}", write=route == "xet-write-token")
        case "GET", [namespace, name, "events"]:
            _events(handler, f"{namespace}/{name}")
        case _:
            raise HubError(404, "Not Found")


def resolve(handler: BucketRequest, bucket_id: str, path: str) -> None:
    """Serve `GET|HEAD /buckets/{id}/resolve/{path}`: Xet headers, and the bytes on GET (ranges too)."""
    bucket = _readable(handler, bucket_id)
    obj = bucket.files.get(path)
    if obj is None:
        raise EntryNotFound(f"Entry not found: {path} does not exist in bucket {bucket_id}")
    token_url = f"{handler.state.endpoint}/api/buckets/{bucket_id}/xet-read-token"
    headers = {
        "ETag": f'"{obj.xet_hash}"',
        "X-Linked-Etag": f'"{obj.xet_hash}"',
        "X-Linked-Size": str(obj.size),
        "X-Xet-Hash": obj.xet_hash,
        "Link": f'<{token_url}>; rel="xet-auth"',
        "Accept-Ranges": "bytes",
        "Content-Disposition": f"inline; filename*=UTF-8''{quote(PurePosixPath(path).name)}",
    }
    if obj.content_type:
        headers["X-Content-Type"] = obj.content_type
    handler._send_content(obj.sha256, obj.size, headers)


# -------------------------------------------------------------------- buckets


def _bucket_json(bucket: Bucket) -> dict[str, Any]:
    return {
        "_id": hashlib.sha1(f"bucket/{bucket.bucket_id}".encode()).hexdigest()[:24],
        "id": bucket.bucket_id,
        "author": bucket.bucket_id.split("/")[0],
        "private": bucket.private,
        "createdAt": bucket.created_at,
        "updatedAt": bucket.updated_at,
        "size": bucket.size,
        "totalFiles": len(bucket.files),
    }


def _namespace(handler: BucketRequest, namespace: str) -> str:
    if namespace != "me":
        return namespace
    if handler._identity is None:
        raise HubError(401, "You must be authenticated")
    return handler._identity.user


def _list(handler: BucketRequest, namespace: str) -> None:
    namespace = _namespace(handler, namespace)
    identity = handler._identity
    search = (handler._query_values("search") or [""])[-1]
    buckets = [
        _bucket_json(b)
        for b in _store(handler).in_namespace(namespace)
        if (not b.private or (identity is not None and identity.user == b.owner)) and search in b.bucket_id
    ]
    handler._send_json(200, buckets)


def _create(handler: BucketRequest, namespace: str, name: str) -> None:
    body = handler._json_body()
    namespace = _namespace(handler, namespace)
    identity = require_namespace_write(namespace, handler._identity, "bucket")
    bucket_id = validate_bucket_id(f"{namespace}/{name}")
    private = body.get("visibility") == "private" if "visibility" in body else bool(body.get("private"))
    url = f"{handler.state.endpoint}/buckets/{bucket_id}"
    try:
        bucket = _store(handler).create(bucket_id, owner=identity.user, private=private)
    except HubError as err:
        if err.status != 409:
            raise
        handler._send_json(409, {"error": err.message, "url": url}, headers={"X-Error-Message": err.message})
        return
    handler._send_json(200, {"url": url, "name": bucket_id, "id": _bucket_json(bucket)["_id"]})


def _bucket_info(handler: BucketRequest, bucket_id: str) -> None:
    handler._send_json(200, _bucket_json(_readable(handler, bucket_id)))


def _settings(handler: BucketRequest, bucket_id: str) -> None:
    body = handler._json_body()
    _writable(handler, bucket_id)
    if "visibility" in body or "private" in body:
        private = body["visibility"] == "private" if "visibility" in body else bool(body["private"])
        _store(handler).set_private(bucket_id, private)
    handler._send_json(200, {})


# -------------------------------------------------------------------- listings


def _tree(handler: BucketRequest, bucket_id: str, prefix: str) -> None:
    bucket = _readable(handler, bucket_id)
    recursive = handler._query_flag("recursive")
    entries: dict[str, dict[str, Any]] = {}
    for path, obj in sorted(bucket.files.items()):
        if not path.startswith(prefix):
            continue  # lexical, as on the Hub: "logs" matches "logs/a" and "logs.json" alike
        if recursive or path == prefix:
            entries[path] = obj.to_api()
            continue
        # One level below the folder the prefix names ("logs" or "logs/": "logs/"), or, for a lexical match
        # ("logs.json", "logs_backup/x"), one level below the prefix's parent folder.
        inside = prefix and path[len(prefix)] == "/"
        base = f"{prefix}/" if inside else prefix[: prefix.rfind("/") + 1]
        rest = path[len(base) :]
        if "/" not in rest:
            entries[path] = obj.to_api()
            continue
        folder = base + rest.split("/")[0]
        entry = entries.setdefault(folder, {"type": "directory", "path": folder, "uploadedAt": obj.uploaded_at})
        entry["uploadedAt"] = max(entry["uploadedAt"], obj.uploaded_at)  # ISO dates of one format sort in time
    listing = [entries[p] for p in sorted(entries)]
    try:
        offset = int((handler._query_values("cursor") or ["0"])[-1])
    except ValueError as err:
        raise BadRequest("Invalid cursor") from err
    page = listing[offset : offset + TREE_PAGE_SIZE]
    headers = {}
    if offset + TREE_PAGE_SIZE < len(listing):
        headers["Link"] = handler._next_link(cursor=str(offset + TREE_PAGE_SIZE))
    handler._send_json(200, page, headers=headers)


def _paths_info(handler: BucketRequest, bucket_id: str) -> None:
    body = handler._json_body()
    bucket = _readable(handler, bucket_id)
    paths = body.get("paths")
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        raise BadRequest("'paths' must be a list of strings")
    if len(paths) > MAX_PATHS_INFO:
        raise BadRequest(f"At most {MAX_PATHS_INFO} paths per request, got {len(paths)}")
    infos = [bucket.files[p].to_api() for p in dict.fromkeys(paths) if p in bucket.files]
    handler._send_json(200, infos)


# -------------------------------------------------------------------- uploads


def _xet_token(handler: BucketRequest, bucket_id: str, *, write: bool) -> None:
    if write:
        _writable(handler, bucket_id)
    else:
        _readable(handler, bucket_id)
    token = cas.issue_token(handler.state, RepoKey(BUCKET_TYPE, bucket_id), write=write)
    headers = {
        "X-Xet-Cas-Url": token["casUrl"],
        "X-Xet-Access-Token": token["accessToken"],
        "X-Xet-Token-Expiration": str(token["exp"]),
    }
    handler._send_json(200, token, headers=headers)


def _batch(handler: BucketRequest, bucket_id: str) -> None:
    lines = [line for line in handler._body().splitlines() if line.strip()]
    _writable(handler, bucket_id)
    if len(lines) > MAX_BATCH_OPERATIONS:
        raise BadRequest(f"At most {MAX_BATCH_OPERATIONS} operations per batch, got {len(lines)}")
    operations = []
    for line in lines:
        try:
            operation = json.loads(line)
        except ValueError as err:
            raise BadRequest(f"Invalid NDJSON line: {line[:200]!r}") from err
        if not isinstance(operation, dict):
            raise BadRequest(f"Invalid NDJSON line: {line[:200]!r}")
        operations.append(operation)
    now = time.time()
    actions: list[BucketAction] = []
    failed: list[dict[str, str]] = []
    for operation in operations:
        try:
            actions.append(_action(handler, operation, now))
        except _OperationFailed as err:
            failed.append({"path": str(operation.get("path")), "error": str(err)})
    _store(handler).apply(bucket_id, actions)
    stats = handler.state.stats
    stats.add("bucket_batches")
    stats.add("bucket_operations", len(operations))
    stats.add("bucket_failed_operations", len(failed))
    handler._send_json(422 if failed and not actions else 200, {"failed": failed})


class _OperationFailed(Exception):
    """One operation of a batch cannot be applied; the others still are."""


def _action(handler: BucketRequest, operation: dict[str, Any], now: float) -> BucketAction:
    path = operation.get("path")
    error = path_error(path)
    if error is not None:
        raise _OperationFailed(error)
    assert isinstance(path, str)
    kind = operation.get("type")
    if kind == "deleteFile":
        return RemoveObject(path)
    if kind not in ("addFile", "copyFile"):
        raise _OperationFailed(f"Unknown operation type: {kind!r}")
    xet_hash = operation.get("xetHash")
    store = handler.state.xet
    known = store.file(xet_hash) if store is not None and isinstance(xet_hash, str) else None
    if known is None or known.sha256 is None:
        raise _OperationFailed(f"Xet file {xet_hash!r} not found: upload it through Xet first")
    if kind == "copyFile":
        _check_copy_source(handler, operation, known.file_hash)
    mtime = operation.get("mtime")
    content_type = operation.get("contentType")
    obj = BucketObject(
        path=path,
        xet_hash=known.file_hash,
        size=known.size,
        sha256=known.sha256,
        mtime=iso_time(mtime / 1000) if isinstance(mtime, int | float) and mtime > 0 else iso_time(now),
        uploaded_at=iso_time(now),
        content_type=content_type if isinstance(content_type, str) else None,
    )
    return PutObject(obj)


def _check_copy_source(handler: BucketRequest, operation: dict[str, Any], xet_hash: str) -> None:
    """A copy needs read access to its source, and the source must hold a file with that Xet hash."""
    source_type, source_id = operation.get("sourceRepoType"), operation.get("sourceRepoId")
    if not isinstance(source_id, str):
        raise _OperationFailed("copyFile needs a sourceRepoId")
    try:
        if source_type == BUCKET_TYPE:
            source = _readable(handler, source_id)
            held = any(f.xet_hash == xet_hash for f in source.files.values())
        elif source_type in REPO_TYPES:
            storage = handler.state.storage
            key = RepoKey.parse(str(source_type), source_id)
            require_read(storage.repo(key), handler._identity)
            head = storage.commit(key, storage.resolve(key, DEFAULT_BRANCH))
            held = any(handler.state.xet_hash(entry) == xet_hash for entry in head.files.values())
        else:
            raise _OperationFailed(f"Invalid sourceRepoType: {source_type!r}")
    except HubError as err:
        raise _OperationFailed(f"Cannot read {source_type} {source_id}: {err.message}") from err
    if not held:
        raise _OperationFailed(f"{source_type} {source_id} has no file with Xet hash {xet_hash}")


# -------------------------------------------------------------------- change feed


def _events(handler: BucketRequest, bucket_id: str) -> None:
    _readable(handler, bucket_id)
    store = _store(handler)
    cursors = handler._query_values("cursor")
    cursor = cursors[-1] if cursors else None
    since_text = (handler._query_values("since") or [""])[-1]
    since = parse_iso_time(since_text) if since_text and cursor is None else None
    replay = store.replay(bucket_id, cursor=cursor, since=since)
    if not handler._start_stream(200, "text/event-stream", {"Cache-Control": "no-cache"}):
        return

    def send(event: str, data: dict[str, Any]) -> None:
        handler.wfile.write(f"event: {event}\ndata: {json.dumps(data)}\n\n".encode())
        handler.wfile.flush()

    if replay is None:
        send("reset", {"reason": "The resume point is older than the replay buffer"})
        return
    batches, after = replay
    for batch in batches:
        send("changes", {"cursor": store.cursor(batch.seq), "changes": list(batch.changes)})
    send("ready", {"cursor": store.cursor(after)} if after else {})
    next_ping = time.monotonic() + EVENTS_PING_INTERVAL
    while not handler.closing.is_set():
        news = store.wait(bucket_id, after, timeout=max(0.0, min(_WAIT_SLICE, next_ping - time.monotonic())))
        if news is None:
            send("reset", {"reason": "The bucket's change log no longer reaches back to this stream's position"})
            return
        for batch in news:
            send("changes", {"cursor": store.cursor(batch.seq), "changes": list(batch.changes)})
            after = batch.seq
        if time.monotonic() >= next_ping:
            handler.wfile.write(b": ping\n\n")
            handler.wfile.flush()
            next_ping = time.monotonic() + EVENTS_PING_INTERVAL
