"""The Xet CAS of the local Hub: Xet access tokens and the CAS routes, served by the Hub's own HTTP server.

The CAS lives under `CAS_PREFIX` on the same host and port; the `casUrl` of every token points there. What the real
client (hf_xet 1.8.0, driven by huggingface_hub 2.4.0) calls and expects, with where each fact comes from:

- Token: `GET /api/{type}s/{repo}/xet-{read|write}-token/{revision}` (huggingface_hub `utils/_xet.py`
  `xet_connection_info_refresh_url`; revision "None" when opening a pull request). hf_xet reads the JSON body
  `{accessToken, exp, casUrl}` (xet-core `spec/auth.md`; the strings `"accessToken"`, `"casUrl"` in
  `hf_xet.abi3.so`); huggingface_hub reads the headers `X-Xet-Cas-Url`, `X-Xet-Access-Token`,
  `X-Xet-Token-Expiration` (`constants.py`, `utils/_xet.py` `parse_xet_connection_info_from_headers`) and treats a
  token expiring within 60 s as expired. CAS calls then carry `Authorization: Bearer <accessToken>`.
- Xorb upload: hf_xet first asks `POST /v1/xorb-grants/{prefix}/{hash}`; a 404 makes it upload every xorb directly
  with `POST /v1/xorbs/{prefix}/{hash}` (xet-core `api_changes/update_261006_xorb_upload_grants.md`), answered
  `{"was_inserted": bool}` (`spec/api.md`).
- Shard upload: `POST /v2/shards` first; a 404 makes it use `POST /v1/shards` ("V2 shard upload not available,
  falling back to V1" in `hf_xet.abi3.so`), answered `{"result": 1}` (1 = registered, `spec/api.md`).
- Dedup query: `GET /v1/chunks/{prefix}/{chunk hash}`; 404 means "not known" and is normal (`spec/api.md`).
- Reconstruction: `GET /v2/reconstructions/{file hash}`, V1 on 404 (`api_changes/
  update_260316_v2_reconstruction_multirange.md`), with a `Range: bytes=a-b` (inclusive end); 416 when the start is
  past the end of the file (`spec/api.md`). V1 answers `{offset_into_first_range, terms, fetch_info}`, V2
  `{offset_into_first_range, terms, xorbs}` where each xorb maps to `[{url, ranges: [{chunks, bytes}]}]`; chunk
  ranges are [start, end), byte ranges inclusive (`spec/download_protocol.md`). We give one byte range per entry,
  so the client never needs `multipart/byteranges`, and per xorb disjoint chunk ranges, each term inside one (a file
  may reuse the same chunks several times: see `_fetch_ranges`).
- Fetch URLs: GET with the `Range` from `url_range`/`bytes`, answered 206 (`spec/download_protocol.md`); presigned,
  so they carry their own signature instead of the CAS token.
- Buckets: the same CAS, with tokens from `GET /api/buckets/{id}/xet-{read|write}-token` (no revision: huggingface_hub
  `utils/_xet.py` `xet_connection_info_refresh_url`); a bucket upload's shard carries no sha256 (the client passes
  `sha256=SKIP_SHA256`, `hf_api.py` `_batch_bucket_files`), so the CAS computes it from the rebuilt content.
- Telemetry: `POST /v1/telemetry` at the root of the CAS host, not under `casUrl`'s path (seen from hf_xet 1.8.0
  against this server): accepted and dropped, whatever its credentials.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import time
from email.message import Message
from typing import Any, Protocol
from urllib.parse import unquote, urlencode

from .bucket_store import BUCKET_TYPE
from .errors import BadRequest, HubError
from .state import HubState
from .storage import RepoKey
from .xet import FileReconstruction, Term, XetStore, is_hash, parse_shard

CAS_PREFIX = "/xet-cas"
XET_TOKEN_TTL = 3600  # the default of `LocalHub(xet_token_ttl=...)`
_FETCH_URL_TTL = 3600
_RANGE_RE = re.compile(r"^\s*bytes\s*=\s*(\d+)\s*-\s*(\d*)\s*$", re.IGNORECASE)


_TELEMETRY_PATH = "/v1/telemetry"


def is_cas_path(path: str) -> bool:
    """Whether a request path (query included or not) is for the CAS, which takes Xet tokens, not Hub tokens."""
    path = path.partition("?")[0]
    return path == _TELEMETRY_PATH or path.startswith(f"{CAS_PREFIX}/")


# -------------------------------------------------------------------- tokens


def issue_token(state: HubState, key: RepoKey, *, write: bool) -> dict[str, Any]:
    """A Xet access token for one repository: `{accessToken, exp, casUrl}`.

    The token is signed rather than remembered, so it stays valid across a restart on the same root.
    """
    exp = int(time.time() + state.xet_token_ttl)
    state.stats.add("xet_tokens")
    claims = json.dumps({"t": key.repo_type, "r": key.repo_id, "w": write, "exp": exp}, separators=(",", ":"))
    payload = base64.urlsafe_b64encode(claims.encode()).decode()
    signature = hmac.new(state.signing_key, payload.encode(), hashlib.sha256).hexdigest()
    return {"accessToken": f"xet_{payload}.{signature}", "exp": exp, "casUrl": f"{state.endpoint}{CAS_PREFIX}"}


def _check_token(state: HubState, authorization: str | None, *, write: bool) -> RepoKey:
    """The repository a CAS request's Xet token was issued for.

    Raises:
        HubError: 401 for a missing, forged or expired token (the client then asks for a new one), 403 for a read
            token on a write route.
    """
    scheme, _, token = (authorization or "").partition(" ")
    payload, _, signature = token.strip().removeprefix("xet_").partition(".")
    expected = hmac.new(state.signing_key, payload.encode(), hashlib.sha256).hexdigest()
    if scheme.lower() != "bearer" or not hmac.compare_digest(signature, expected):
        raise HubError(401, "Invalid Xet token")
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload.encode()))
    except (ValueError, binascii.Error) as err:
        raise HubError(401, "Invalid Xet token") from err
    if claims["exp"] < time.time():
        state.stats.add("xet_expired_tokens")
        raise HubError(401, "Expired Xet token")
    if write and not claims["w"]:
        raise HubError(403, "This Xet token is read-only")
    return RepoKey(claims["t"], claims["r"])


# -------------------------------------------------------------------- routes


class CasRequest(Protocol):
    """What the CAS routes use of the request being served (the server's `HubRequestHandler`)."""

    @property
    def state(self) -> HubState: ...

    @property
    def headers(self) -> Message: ...

    def _body(self) -> bytes: ...

    def _query_values(self, name: str) -> list[str]: ...

    def _send(
        self, status: int, body: bytes = ..., *, content_type: str = ..., headers: dict[str, str] | None = ...
    ) -> bool: ...

    def _send_json(self, status: int, data: Any, *, headers: dict[str, str] | None = ...) -> None: ...


def route(handler: CasRequest, store: XetStore, method: str, path: str) -> None:
    """Serve a CAS request (`is_cas_path(path)` is true; `path` has no query)."""
    state = handler.state
    segments = [unquote(s) for s in path.removeprefix(CAS_PREFIX).split("/")[1:]]
    match method, segments:
        case "POST", ["v1", "xorbs", _, xorb_hash]:
            _check_token(state, handler.headers.get("Authorization"), write=True)
            _upload_xorb(handler, store, xorb_hash)
        case "POST", ["v1", "shards"]:
            key = _check_token(state, handler.headers.get("Authorization"), write=True)
            _upload_shard(handler, store, key)
        case "GET", ["v1" | "v2" as version, "reconstructions", file_hash]:
            _check_token(state, handler.headers.get("Authorization"), write=False)
            _reconstruction(handler, store, file_hash, v2=version == "v2")
        case "GET" | "HEAD", ["fetch", xorb_hash]:
            _fetch(handler, store, xorb_hash)
        case "POST", ["v1", "telemetry"]:
            handler._send_json(200, {})
        case _:
            # Among them, on purpose: xorb grants and V2 shards (the client falls back to the direct routes) and
            # the dedup query (nothing is known to other uploaders; the client's own shard cache still dedups).
            raise HubError(404, "Not Found")


def _upload_xorb(handler: CasRequest, store: XetStore, xorb_hash: str) -> None:
    if not is_hash(xorb_hash):
        raise BadRequest(f"Invalid xorb hash: {xorb_hash!r}")
    data = handler._body()
    stats = handler.state.stats
    inserted = store.put_xorb(xorb_hash, data)
    stats.add("xet_xorbs")
    stats.add("xet_xorb_bytes", len(data))
    stats.add("upload_bytes", len(data))
    handler._send_json(200, {"was_inserted": inserted})


def _upload_shard(handler: CasRequest, store: XetStore, key: RepoKey) -> None:
    state = handler.state
    storage = state.storage
    bucket = key.repo_type == BUCKET_TYPE
    if bucket:
        if state.buckets is None or state.buckets.get(key.repo_id) is None:
            raise HubError(404, "Bucket not found", "RepoNotFound")
    elif storage.repo(key) is None:
        raise HubError(404, "Repository not found", "RepoNotFound")
    files = parse_shard(handler._body())
    for file in files:
        known = store.file(file.file_hash)
        sha256 = file.sha256
        if sha256 is None:
            # Bucket uploads skip the sha256 (huggingface_hub `_batch_bucket_files`: `sha256=SKIP_SHA256`), so the
            # shard has no metadata extension: we compute it, to keep plain bytes under it for GET downloads.
            if not bucket:
                raise BadRequest(f"File {file.file_hash} has no sha256 in the shard")  # required for uploads
            sha256 = known.sha256 if known is not None and known.sha256 else _sha256_of(store, file)
        elif known is not None and known.sha256 and known.sha256 != sha256:
            # The sha256 of a known file was computed from its content when it was first stored: a shard naming it
            # with another one would give this repository, by that sha256, a file uploaded to another.
            raise BadRequest(f"File {file.file_hash} has sha256 {known.sha256}, not {sha256}")
        # The content is rebuilt now, once: its sha256 is checked and the plain bytes are ready for git downloads.
        if known is None or not storage.has_blob(sha256):
            storage.put_stream(store.iter_content(file.terms), expected_sha256=sha256, expected_size=file.size)
            store.add_file(file, sha256)
        if not bucket:
            # The commit that follows refers to the file by sha256, like an LFS object uploaded to this repository.
            storage.add_lfs_object(key, sha256)
    state.stats.add("xet_shards")
    handler._send_json(200, {"result": 1})


def _sha256_of(store: XetStore, file: FileReconstruction) -> str:
    digest = hashlib.sha256()
    for content in store.iter_content(file.terms):
        digest.update(content)
    return digest.hexdigest()


def _reconstruction(handler: CasRequest, store: XetStore, file_hash: str, *, v2: bool) -> None:
    file = store.file(file_hash)
    if file is None:
        raise HubError(404, f"File {file_hash} not found")
    first, last = 0, file.size - 1
    match = _RANGE_RE.match(handler.headers.get("Range") or "")
    if match is not None:
        first = int(match.group(1))
        if match.group(2):
            last = min(last, int(match.group(2)))
    if first > last:
        raise HubError(416, "Requested range not satisfiable", headers={"Content-Range": f"bytes */{file.size}"})
    terms, offset = _terms_for_range(store, file, first, last)
    handler.state.stats.add("xet_reconstructions")
    entries: dict[str, list[dict[str, Any]]] = {}
    for xorb, (start, end) in _fetch_ranges(terms):
        chunks = store.chunks(xorb)
        byte_range = {"start": chunks[start].start, "end": chunks[end - 1].end - 1}
        chunk_range = {"start": start, "end": end}
        url = f"{handler.state.endpoint}{CAS_PREFIX}/fetch/{xorb}?{_sign_fetch(handler.state, xorb)}"
        entry: dict[str, Any]
        if v2:
            entry = {"url": url, "ranges": [{"chunks": chunk_range, "bytes": byte_range}]}
        else:
            entry = {"range": chunk_range, "url": url, "url_range": byte_range}
        entries.setdefault(xorb, []).append(entry)
    body: dict[str, Any] = {
        "offset_into_first_range": offset,
        "terms": [
            {"hash": t.xorb, "unpacked_length": t.size, "range": {"start": t.chunk_start, "end": t.chunk_end}}
            for t in terms
        ],
        "xorbs" if v2 else "fetch_info": entries,
    }
    handler._send_json(200, body)


def _fetch_ranges(terms: list[Term]) -> list[tuple[str, tuple[int, int]]]:
    """The chunk ranges to fetch for these terms: per xorb, disjoint and sorted, each term inside exactly one.

    A file may use the same chunks of a xorb several times, or overlapping runs of them: a repetitive file dedups
    against itself (300 KB of one byte is xorb X chunks [0, 1) then [0, 2)), a file repeats an earlier one. One fetch
    entry per term would then give the client overlapping chunk ranges of one xorb, which hf_xet 1.8.0 does not take:
    it cut the [0, 2) term out of the [0, 1) block and panicked ("range end out of bounds: 168928 <= 131072"). The
    spec's fetch info is a set of disjoint ranges per xorb (`api_changes/
    update_260316_v2_reconstruction_multirange.md`: "disjoint chunk ranges") that terms are matched into by
    containment (`spec/download_protocol.md`), so overlapping and adjacent ranges are merged into one.
    """
    by_xorb: dict[str, list[tuple[int, int]]] = {}
    for term in terms:
        by_xorb.setdefault(term.xorb, []).append((term.chunk_start, term.chunk_end))
    merged: list[tuple[str, tuple[int, int]]] = []
    for xorb, ranges in by_xorb.items():
        ranges.sort()
        start, end = ranges[0]
        for next_start, next_end in ranges[1:]:
            if next_start <= end:
                end = max(end, next_end)
            else:
                merged.append((xorb, (start, end)))
                start, end = next_start, next_end
        merged.append((xorb, (start, end)))
    return merged


def _terms_for_range(store: XetStore, file: FileReconstruction, first: int, last: int) -> tuple[list[Term], int]:
    """The terms covering bytes [first, last] of a file, cut to whole chunks, and where `first` is in the first one."""
    terms: list[Term] = []
    offset = 0
    position = 0
    for term in file.terms:
        if position > last:
            break
        if position + term.size <= first:
            position += term.size
            continue
        selected: list[tuple[int, int, int]] = []  # (chunk index, chunk size, file position of the chunk)
        for index in range(term.chunk_start, term.chunk_end):
            size = store.chunks(term.xorb)[index].size
            if position + size > first and position <= last:
                selected.append((index, size, position))
            position += size
        if not terms:
            offset = first - selected[0][2]
        terms.append(Term(term.xorb, selected[0][0], selected[-1][0] + 1, sum(size for _, size, _ in selected)))
    return terms, offset


def _sign_fetch(state: HubState, xorb_hash: str) -> str:
    expires = int(time.time()) + _FETCH_URL_TTL
    signature = hmac.new(state.signing_key, f"fetch/{xorb_hash}/{expires}".encode(), hashlib.sha256).hexdigest()
    return urlencode({"expires": expires, "signature": signature})


def _fetch(handler: CasRequest, store: XetStore, xorb_hash: str) -> None:
    """A byte range of a stored xorb, through a presigned URL from a reconstruction."""
    expires = int((handler._query_values("expires") or ["0"])[-1] or 0)
    signature = (handler._query_values("signature") or [""])[-1]
    expected = hmac.new(handler.state.signing_key, f"fetch/{xorb_hash}/{expires}".encode(), hashlib.sha256)
    if not hmac.compare_digest(signature, expected.hexdigest()) or expires < time.time():
        raise HubError(403, "Invalid or expired fetch signature")
    path = store.xorb_path(xorb_hash)
    if not path.is_file():
        raise HubError(404, f"Xorb {xorb_hash} not found")
    size = path.stat().st_size
    start, end = 0, size - 1
    match = _RANGE_RE.match(handler.headers.get("Range") or "")
    if match is not None:
        start = int(match.group(1))
        end = min(end, int(match.group(2))) if match.group(2) else end
    if start > end:
        raise HubError(416, "Requested range not satisfiable", headers={"Content-Range": f"bytes */{size}"})
    with path.open("rb") as xorb:
        xorb.seek(start)
        data = xorb.read(end - start + 1)
    status = 206 if match is not None else 200
    headers = {"Content-Range": f"bytes {start}-{end}/{size}"} if match is not None else {}
    handler._send(status, data, content_type="application/octet-stream", headers=headers)
