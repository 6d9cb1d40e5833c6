"""HTTP front of the local Hub: routing, request handlers and the threaded server.

The URL shapes, JSON bodies and headers follow what `huggingface_hub` sends and reads; the handlers translate them
into `Storage` operations and permission checks.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import html
import json
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

from . import buckets, cas, spaces
from .auth import Identity, authenticate, require_namespace_write, require_read, require_write
from .errors import BadRequest, EntryNotFound, HubError
from .limits import ApiRateLimited, CommitRateLimited, LimitExceeded, check_files_per_commit, check_folder_entries
from .rules import REGULAR_FILE_MAX_SIZE, is_gitignored, lfs_pointer, upload_mode
from .state import HubState
from .storage import DEFAULT_BRANCH, AddFile, Commit, DeletePath, FileEntry, Operation, RepoKey, make_entry

logger = logging.getLogger("hf_summary.testing")

_PLURAL_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
_TREE_PAGE_SIZE = 1000
_TREE_EXPAND_PAGE_SIZE = 50  # the Hub pages expanded listings (last commit, security status) much smaller
_COMMITS_PAGE_SIZE = 50
_UPLOAD_URL_TTL = 24 * 3600
_BODY_CHUNK = 1024 * 1024
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_RANGE_RE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)


class HubHTTPServer(ThreadingHTTPServer):
    """Threaded HTTP server that keeps track of its open connections, so `pause` can cut them."""

    daemon_threads = True
    allow_reuse_address = True  # resume() binds the same port again while old connections linger in TIME_WAIT
    request_queue_size = 128  # clients open several connections at once (parallel LFS uploads, downloads)

    def __init__(self, address: tuple[str, int], state: HubState):
        self.state = state
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        self.closing = threading.Event()  # set when the server closes: long-lived streams (bucket feeds) end
        super().__init__(address, HubRequestHandler)

    def process_request(self, request: Any, client_address: Any) -> None:
        """Remember the connection before handing it to a worker thread."""
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        """Forget the connection once its worker is done with it."""
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Cut every open connection, including idle keep-alive ones held in clients' pools."""
        self.closing.set()
        if self.state.buckets is not None:
            self.state.buckets.wake_all()
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed by the peer


class HubRequestHandler(BaseHTTPRequestHandler):
    """Serves one connection; every request goes through `_handle`."""

    protocol_version = "HTTP/1.1"  # keep-alive, so every response carries a Content-Length
    server_version = "LocalHub/1.0"
    timeout = 300  # idle keep-alive connections are closed eventually
    server: HubHTTPServer

    def do_GET(self) -> None:
        self._handle()

    def do_HEAD(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s - %s", self.address_string(), format % args)

    # ---------------------------------------------------------------- request plumbing

    @property
    def state(self) -> HubState:
        """The Hub state shared by all connections."""
        return self.server.state

    @property
    def closing(self) -> threading.Event:
        """Set when the server is closing (`pause`, `stop`): a response streaming for long must end."""
        return self.server.closing

    def _handle(self) -> None:
        self._start_body()
        self._lose_response = False
        self._responded = False
        self._identity: Identity | None = None
        self._ratelimit: dict[str, str] = {}  # RateLimit headers of every answer to an /api/ call (api_limit)
        state = self.state
        state.stats.add("requests")
        try:
            config = state.faults.config
            if config.latency > 0:
                time.sleep(config.latency)
            fault = state.faults.pick(self.command, self.path)
            if fault is not None and fault != "drop_after":
                self._drain_body()
                state.stats.add("faults_injected")
                self._inject(fault, config.retry_after)
                return
            self._lose_response = fault == "drop_after"
            try:
                if state.xet is None or not cas.is_cas_path(self.path):  # the CAS takes Xet tokens, not these
                    self._identity = authenticate(state.tokens, self.headers.get("Authorization"))
                if self.path.startswith("/api/"):
                    self._take_api_call()
                self._route()
            except HubError as err:
                self._send_error(err)
        except (ConnectionError, TimeoutError):
            self.close_connection = True
        except Exception:
            logger.exception("Internal error while serving %s %s", self.command, self.path)
            if self._responded:
                self.close_connection = True  # the response is half written: only closing can signal the failure
            else:
                self._send_error(HubError(500, "Internal Error"))

    def _take_api_call(self) -> None:
        """Count the call against its caller's API quota (`LocalHub.set_limits(api_limit=...)`; see limits.py)."""
        identity = self._identity
        caller = identity.user if identity is not None else f"anonymous@{self.client_address[0]}"
        try:
            self._ratelimit = self.state.limiter.take_api_call(caller)
        except ApiRateLimited:
            self.state.stats.add("api_rate_limited")
            raise

    def _inject(self, fault: str, retry_after: int) -> None:
        if fault == "hang":
            self.state.faults.hang()
            self.close_connection = True
        elif fault == "drop":
            self.close_connection = True  # closing without a word: the client sees a disconnection
        elif fault == "429":
            self._send_error(HubError(429, "Too Many Requests", headers={"Retry-After": str(retry_after)}))
        else:
            self._send_error(HubError(int(fault), "Injected fault"))

    def _start_body(self) -> None:
        self._chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
        try:
            self._body_left = 0 if self._chunked else int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self._body_left = 0
            self.close_connection = True  # the body boundary is unknown: the connection cannot be reused
        self._body_started = False
        self._body_complete = False

    def _iter_body(self) -> Iterator[bytes]:
        """The request body, streamed (handles both Content-Length and chunked transfer encoding)."""
        if self._body_started:
            return
        self._body_started = True
        chunks = self._iter_chunked() if self._chunked else self._iter_sized()
        for chunk in chunks:
            self.state.stats.add("bytes_received", len(chunk))
            yield chunk
        self._body_complete = True

    def _iter_sized(self) -> Iterator[bytes]:
        while self._body_left > 0:
            data = self.rfile.read(min(self._body_left, _BODY_CHUNK))
            if not data:
                raise ConnectionError("client closed the connection in the middle of the body")
            self._body_left -= len(data)
            yield data

    def _iter_chunked(self) -> Iterator[bytes]:
        while True:
            try:
                size = int(self.rfile.readline(1024).split(b";")[0].strip() or b"0", 16)
            except ValueError as err:
                raise ConnectionError("malformed chunked body") from err
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return
            data = self.rfile.read(size)
            if len(data) != size:
                raise ConnectionError("client closed the connection in the middle of the body")
            self.rfile.readline(1024)
            yield data

    def _body(self) -> bytes:
        return b"".join(self._iter_body())

    def _drain_body(self) -> None:
        for _ in self._iter_body():
            pass

    def _json_body(self) -> dict:
        try:
            data = json.loads(self._body() or b"{}")
        except (ValueError, UnicodeDecodeError) as err:
            raise BadRequest(f"Invalid JSON body: {err}") from err
        if not isinstance(data, dict):
            raise BadRequest("JSON body must be an object")
        return data

    def _send(
        self,
        status: int,
        body: bytes = b"",
        *,
        content_type: str = "application/json; charset=utf-8",
        headers: dict[str, str] | None = None,
        content_length: int | None = None,
    ) -> bool:
        """Send status and headers, then `body` unless it is a HEAD request.

        Returns:
            False if the response was withheld (an injected "drop_after" fault); the caller must not write more.
        """
        if not self._may_answer():
            return False
        if not self._body_complete:
            # A handler stopped reading the body half way: the next request's start is unknown.
            self.close_connection = True
            headers = {**(headers or {}), "Connection": "close"}
        self._responded = True
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body) if content_length is None else content_length))
        self._send_common_headers(headers)
        if self.command != "HEAD" and body:
            self.wfile.write(body)
            self.state.stats.add("bytes_sent", len(body))
        return True

    def _may_answer(self) -> bool:
        """Consume the rest of the request's body (else it would be read as the next request); False when an
        injected "drop_after" fault withholds the answer."""
        self._drain_body()
        if self._lose_response:
            self.state.stats.add("faults_injected")
            self.close_connection = True
            return False
        return True

    def _send_common_headers(self, headers: dict[str, str] | None) -> None:
        request_id = self.headers.get("X-Amzn-Trace-Id")
        if request_id:
            self.send_header("X-Request-Id", request_id)
        # The API quota's headers first: a commit's own quota headers (commit_limit) take their place.
        for name, value in {**self._ratelimit, **(headers or {})}.items():
            self.send_header(name, value)
        self.end_headers()

    def _start_stream(self, status: int, content_type: str, headers: dict[str, str]) -> bool:
        """Send status and headers of a response of unknown length (server-sent events): the body is written by the
        caller until it ends the stream, and the connection is closed after it.

        Returns:
            False if the response was withheld (an injected "drop_after" fault); the caller must not write more.
        """
        if not self._may_answer():
            return False
        self._responded = True
        self.close_connection = True
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Connection", "close")
        self._send_common_headers(headers)
        self.wfile.flush()
        return True

    def _send_json(self, status: int, data: Any, *, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(data).encode(), headers=headers)

    def _send_error(self, err: HubError) -> None:
        headers = {"X-Error-Message": err.message.encode("ascii", "replace").decode(), **err.headers}
        if err.code:
            headers["X-Error-Code"] = err.code
        self._send_json(err.status, {"error": err.message}, headers=headers)

    def _query_values(self, name: str) -> list[str]:
        return self._query.get(name, [])

    def _query_flag(self, name: str) -> bool:
        values = self._query_values(name)
        return bool(values) and values[-1].lower() in ("1", "true")

    def _next_link(self, **params: str) -> str:
        query = {key: values[-1] for key, values in self._query.items()}
        query.update(params)
        return f'<{self.state.endpoint}{self._url_path}?{urlencode(query)}>; rel="next"'

    # ---------------------------------------------------------------- routing

    def _route(self) -> None:
        url = urlsplit(self.path)
        self._url_path = url.path
        self._query = parse_qs(url.query, keep_blank_values=True)
        # Segments are decoded one by one: the client encodes "/" inside revisions ("refs%2Fpr%2F1").
        segments = [unquote(s) for s in url.path.split("/")[1:]]
        method = self.command
        if segments[:1] == ["api"]:
            self._route_api(method, segments[1:])
        elif self.state.xet is not None and cas.is_cas_path(url.path):
            cas.route(self, self.state.xet, method, url.path)
        elif segments[:2] == ["_lfs", "upload"] and len(segments) == 6 and method == "PUT":
            self._lfs_upload(segments[2], f"{segments[3]}/{segments[4]}", segments[5])
        elif len(segments) >= 6 and segments[-4:-1] == ["info", "lfs", "objects"] and segments[-5].endswith(".git"):
            key = _repo_key_from_web_path([*segments[:-5], segments[-5].removesuffix(".git")])
            if method == "POST" and segments[-1] == "batch":
                self._lfs_batch(key)
            elif method == "POST" and segments[-1] == "verify":
                self._lfs_verify(key)
            else:
                raise HubError(404, "Not Found")
        elif method in ("GET", "HEAD") and len(segments) > 4 and segments[0] == "buckets" and segments[3] == "resolve":
            buckets.resolve(self, f"{segments[1]}/{segments[2]}", "/".join(segments[4:]))
        elif method in ("GET", "HEAD") and (resolve := _split_resolve_path(segments)) is not None:
            key, revision, path = resolve
            self._resolve(key, revision, path)
        else:
            raise HubError(404, "Not Found")

    def _route_api(self, method: str, segments: list[str]) -> None:
        match method, segments:
            case "GET", ["whoami-v2"]:
                self._whoami()
            case "POST", ["repos", "create"]:
                self._create_repo()
            case "DELETE", ["repos", "delete"]:
                self._delete_repo()
            case "GET", ["agent-harnesses"]:
                # Fetched (and cached for a day in HF_HOME) by the client to fill its user-agent.
                self._send_json(200, {"standardEnvVars": ["AI_AGENT", "AGENT"], "harnesses": {}})
            case "POST", ["validate-yaml"]:
                # Called before any commit touching README.md; metadata is not validated here.
                self._send_json(200, {"errors": [], "warnings": []})
            case _, ["buckets", *rest]:
                buckets.route_api(self, method, rest)
            case _, ["spaces", namespace, name, "secrets" | "variables" | "runtime" as what]:
                self._space_settings(method, RepoKey.parse("space", f"{namespace}/{name}"), what)
            case _, [plural, namespace, name, *rest] if plural in _PLURAL_TYPES:
                self._route_repo(method, RepoKey.parse(_PLURAL_TYPES[plural], f"{namespace}/{name}"), rest)
            case _:
                raise HubError(404, "Not Found")

    def _route_repo(self, method: str, key: RepoKey, rest: list[str]) -> None:
        match method, rest:
            case "GET", []:
                self._repo_info(key, DEFAULT_BRANCH)
            case "GET", ["revision", revision]:
                self._repo_info(key, revision)
            case "GET", ["tree", revision, *path]:
                self._tree(key, revision, "/".join(path).strip("/"))
            case "POST", ["paths-info", revision]:
                self._paths_info(key, revision)
            case "GET", ["refs"]:
                self._refs(key)
            case "GET", ["commits", revision]:
                self._commits(key, revision)
            case "GET", ["xet-read-token" | "xet-write-token" as route, revision]:
                self._xet_token(key, revision, write=route == "xet-write-token")
            case "POST", ["preupload", revision]:
                self._preupload(key, revision)
            case "POST", ["commit", revision]:
                self._commit(key, revision)
            case "POST", ["super-squash", branch]:
                self._super_squash(key, branch)
            case "POST" | "DELETE", ["branch", branch]:
                self._branch(method, key, branch)
            case "POST" | "DELETE", ["tag", name]:
                self._tag(method, key, name)
            case "PUT", ["settings"]:
                self._settings(key)
            case _:
                raise HubError(404, "Not Found")

    # ---------------------------------------------------------------- account and repositories

    def _whoami(self) -> None:
        identity = self._identity
        if identity is None:
            raise HubError(401, "You must be authenticated")
        self._send_json(
            200,
            {
                "type": "user",
                "id": hashlib.sha1(identity.user.encode()).hexdigest()[:24],
                "name": identity.user,
                "fullname": identity.user,
                "email": f"{identity.user}@localhost",
                "emailVerified": True,
                "isPro": False,
                "orgs": [],
                "auth": {
                    "type": "access_token",
                    "accessToken": {"displayName": "local", "role": "write" if identity.write else "read"},
                },
            },
        )

    def _create_repo(self) -> None:
        body = self._json_body()
        repo_type = body.get("type") or "model"
        name = body.get("name")
        if not isinstance(name, str) or not name:
            raise BadRequest("Missing repository name")
        namespace = body.get("organization") or (self._identity.user if self._identity else None)
        if namespace is None:
            raise HubError(401, "You must be authenticated to create a repository")
        key = RepoKey.parse(repo_type, f"{namespace}/{name}")
        identity = require_namespace_write(namespace, self._identity, repo_type)
        private = body.get("visibility") == "private" if "visibility" in body else bool(body.get("private"))
        url = f"{self.state.endpoint}/{key.url_prefix}{key.repo_id}"
        settings = spaces.settings_from_body(body) if repo_type == "space" else None
        try:
            self.state.storage.create_repo(key, owner=identity.user, private=private)
        except HubError as err:
            if err.status != 409:
                raise
            self._send_json(409, {"error": err.message, "url": url}, headers={"X-Error-Message": err.message})
            return
        if settings is not None:
            self._spaces.create(key.repo_id, settings)
        self._send_json(200, {"url": url, "name": key.repo_id, "id": _object_id(key)})

    def _delete_repo(self) -> None:
        body = self._json_body()
        namespace = body.get("organization") or (self._identity.user if self._identity else "")
        key = RepoKey.parse(body.get("type") or "model", f"{namespace}/{body.get('name')}")
        require_write(self.state.storage.repo(key), self._identity)
        self.state.storage.delete_repo(key)
        if key.repo_type == "space":
            self._spaces.forget(key.repo_id)
        self._send_json(200, {})

    @property
    def _spaces(self) -> spaces.SpaceStore:
        if self.state.spaces is None:
            raise HubError(404, "Not Found")
        return self.state.spaces

    def _space_settings(self, method: str, key: RepoKey, what: str) -> None:
        """A Space's secrets, variables (read, set, deleted) and runtime: see `spaces.py` for the shapes."""
        repo = self.state.storage.repo(key)
        store = self._spaces
        if method == "GET" and what == "runtime":
            require_read(repo, self._identity)
            head = self.state.storage.commit(key, self.state.storage.resolve(key, DEFAULT_BRANCH))
            self._send_json(200, store.runtime(key.repo_id, "Dockerfile" in head.files))
        elif method == "GET" and what in ("secrets", "variables"):
            require_write(repo, self._identity)  # the Hub shows a Space's settings to those who can change them
            listed = store.settings(key.repo_id)[what]
            self._send_json(200, spaces.public_secrets(listed) if what == "secrets" else listed)
        elif method in ("POST", "DELETE") and what in ("secrets", "variables"):
            require_write(repo, self._identity)
            body = self._json_body()
            left = store.set(key.repo_id, what, body) if method == "POST" else store.remove(key.repo_id, what, body)
            self._send_json(200, spaces.public_secrets(left) if what == "secrets" else left)
        else:
            raise HubError(404, "Not Found")

    def _settings(self, key: RepoKey) -> None:
        body = self._json_body()
        require_write(self.state.storage.repo(key), self._identity)
        if "visibility" in body or "private" in body:
            private = body["visibility"] == "private" if "visibility" in body else bool(body["private"])
            self.state.storage.set_private(key, private)
        self._send_json(200, {})

    def _repo_info(self, key: RepoKey, revision: str) -> None:
        storage = self.state.storage
        repo = require_read(storage.repo(key), self._identity)
        commit = storage.commit(key, storage.resolve(key, revision))
        with_blobs = self._query_flag("blobs")
        siblings = []
        for path, entry in sorted(commit.files.items()):
            sibling: dict[str, Any] = {"rfilename": path}
            if with_blobs:
                sibling.update(size=entry.size, blobId=entry.oid)
                if entry.lfs:
                    pointer_size = len(lfs_pointer(entry.sha256, entry.size))
                    sibling["lfs"] = {"size": entry.size, "sha256": entry.sha256, "pointerSize": pointer_size}
            siblings.append(sibling)
        data: dict[str, Any] = {
            "_id": _object_id(key),
            "id": key.repo_id,
            "author": key.namespace,
            "sha": commit.id,
            "lastModified": commit.date,
            "createdAt": repo.created_at,
            "private": repo.private,
            "gated": False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": siblings,
            "usedStorage": sum(entry.size for entry in commit.files.values()),
        }
        if key.repo_type == "model":
            data["modelId"] = key.repo_id
        if key.repo_type == "space" and self.state.spaces is not None:
            data["sdk"] = self.state.spaces.settings(key.repo_id)["sdk"]
            data["runtime"] = self.state.spaces.runtime(key.repo_id, "Dockerfile" in commit.files)
        expand = self._query_values("expand") + self._query_values("expand[]")
        if expand:
            data = {name: value for name, value in data.items() if name in ("_id", "id") or name in expand}
        self._send_json(200, data)

    def _refs(self, key: RepoKey) -> None:
        storage = self.state.storage
        require_read(storage.repo(key), self._identity)
        groups: dict[str, list[dict[str, str]]] = {"branches": [], "converts": [], "tags": [], "pullRequests": []}
        for ref, target in sorted(storage.refs(key).items()):
            for prefix, group in (("refs/heads/", "branches"), ("refs/tags/", "tags"), ("refs/pr/", "pullRequests")):
                if ref.startswith(prefix):
                    name = ref if group == "pullRequests" else ref[len(prefix) :]
                    groups[group].append({"name": name, "ref": ref, "targetCommit": target})
        if not self._query_flag("include_prs"):
            del groups["pullRequests"]
        self._send_json(200, groups)

    def _branch(self, method: str, key: RepoKey, branch: str) -> None:
        storage = self.state.storage
        body = self._json_body()
        require_write(storage.repo(key), self._identity)
        if branch.startswith("refs/") or not branch or branch.strip("/") != branch:
            raise BadRequest(f"Invalid reference for a branch: {branch}")
        if method == "DELETE":
            if branch == DEFAULT_BRANCH:
                raise BadRequest("Cannot delete the default branch")
            storage.set_ref(key, f"refs/heads/{branch}", None)
        else:
            target = storage.resolve(key, body.get("startingPoint") or DEFAULT_BRANCH)
            storage.set_ref(key, f"refs/heads/{branch}", target, create=True)
        self._send_json(200, {})

    def _tag(self, method: str, key: RepoKey, name: str) -> None:
        storage = self.state.storage
        body = self._json_body()
        require_write(storage.repo(key), self._identity)
        if method == "DELETE":
            storage.set_ref(key, f"refs/tags/{name}", None)
        else:
            # For creation, the URL carries the revision to tag and the body the tag name.
            tag = body.get("tag")
            if not isinstance(tag, str) or not tag or tag.startswith("refs/"):
                raise BadRequest(f"Invalid tag name: {tag!r}")
            storage.set_ref(key, f"refs/tags/{tag}", storage.resolve(key, name), create=True)
        self._send_json(200, {})

    # ---------------------------------------------------------------- listings

    def _tree(self, key: RepoKey, revision: str, path: str) -> None:
        storage = self.state.storage
        require_read(storage.repo(key), self._identity)
        commit = storage.commit(key, storage.resolve(key, revision))
        prefix = f"{path}/" if path else ""
        under = {p: e for p, e in commit.files.items() if p.startswith(prefix)}
        if path and not under:
            raise EntryNotFound(f'{path} does not exist on "{revision}"', commit=commit.id)
        recursive = self._query_flag("recursive")
        entries: dict[str, dict[str, Any]] = {}
        for file_path, entry in under.items():
            parts = file_path[len(prefix) :].split("/")
            for depth in range(1, len(parts)):
                folder = prefix + "/".join(parts[:depth])
                if folder not in entries:
                    entries[folder] = _folder_json(folder, commit.files)
                if not recursive:
                    break
            if recursive or len(parts) == 1:
                entries[file_path] = _file_json(file_path, entry, self.state.xet_hash(entry))
        listing = [entries[p] for p in sorted(entries)]
        expand = self._query_flag("expand")
        page_size = _TREE_EXPAND_PAGE_SIZE if expand else _TREE_PAGE_SIZE
        offset = _parse_cursor(self._query_values("cursor"))
        page = listing[offset : offset + page_size]
        if expand:
            self._expand(key, commit, page)
        headers = {}
        if offset + page_size < len(listing):
            headers["Link"] = self._next_link(cursor=_make_cursor(offset + page_size))
        self._send_json(200, page, headers=headers)

    def _paths_info(self, key: RepoKey, revision: str) -> None:
        storage = self.state.storage
        if self.headers.get("Content-Type", "").startswith("application/json"):
            body = self._json_body()
            paths, expand = body.get("paths") or [], bool(body.get("expand"))
        else:
            form = parse_qs(self._body().decode(errors="replace"), keep_blank_values=True)
            paths, expand = form.get("paths", []), form.get("expand", ["false"])[-1].lower() in ("1", "true")
        require_read(storage.repo(key), self._identity)
        commit = storage.commit(key, storage.resolve(key, revision))
        infos = []
        for path in dict.fromkeys(p.strip("/") for p in paths):
            if path in commit.files:
                infos.append(_file_json(path, commit.files[path], self.state.xet_hash(commit.files[path])))
            elif path and any(p.startswith(f"{path}/") for p in commit.files):
                infos.append(_folder_json(path, commit.files))
        if expand:
            self._expand(key, commit, infos)
        self._send_json(200, infos)

    def _expand(self, key: RepoKey, head: Commit, infos: list[dict[str, Any]]) -> None:
        """Add the last commit touching each path (and a security status for files), like `expand=True`."""
        history = self.state.storage.history(key, head.id)
        for info in infos:
            path = info["path"]
            last = next(
                (c for c in history if any(p == path or p.startswith(f"{path}/") for p in c.changed)),
                history[-1],
            )
            info["lastCommit"] = {"id": last.id, "title": last.title, "date": last.date}
            if info["type"] == "file":
                info["securityFileStatus"] = {
                    "status": "unscanned",
                    "avScan": {"virusFound": False, "virusNames": None},
                    "pickleImportScan": None,
                }

    def _commits(self, key: RepoKey, revision: str) -> None:
        storage = self.state.storage
        require_read(storage.repo(key), self._identity)
        history = storage.history(key, storage.resolve(key, revision))
        page_number = _parse_int(self._query_values("p"), default=0)
        page_size = max(1, _parse_int(self._query_values("limit"), default=_COMMITS_PAGE_SIZE))
        page = history[page_number * page_size : (page_number + 1) * page_size]
        formatted = "formatted" in self._query_values("expand[]") + self._query_values("expand")
        items = []
        for commit in page:
            item: dict[str, Any] = {
                "id": commit.id,
                "title": commit.title,
                "message": commit.message,
                "authors": [{"user": commit.author, "avatar": None}],
                "date": commit.date,
            }
            if formatted:
                item["formatted"] = {"title": html.escape(commit.title), "message": html.escape(commit.message)}
            items.append(item)
        headers = {"X-Total-Count": str(len(history))}
        if (page_number + 1) * page_size < len(history):
            headers["Link"] = self._next_link(p=str(page_number + 1))
        self._send_json(200, items, headers=headers)

    # ---------------------------------------------------------------- uploads and commits

    def _xet_token(self, key: RepoKey, revision: str, *, write: bool) -> None:
        """A Xet access token for the repository, in the body (for hf_xet) and headers (for huggingface_hub)."""
        storage = self.state.storage
        if self.state.xet is None:
            raise HubError(404, "Not Found")  # Xet is off: the routes do not exist, as before Xet
        if write:
            require_write(storage.repo(key), self._identity)
        else:
            require_read(storage.repo(key), self._identity)
        if revision != "None":  # huggingface_hub asks with "None" when the commit opens a pull request
            storage.resolve(key, revision)
        token = cas.issue_token(self.state, key, write=write)
        headers = {
            "X-Xet-Cas-Url": token["casUrl"],
            "X-Xet-Access-Token": token["accessToken"],
            "X-Xet-Token-Expiration": str(token["exp"]),
        }
        self._send_json(200, token, headers=headers)

    def _preupload(self, key: RepoKey, revision: str) -> None:
        storage = self.state.storage
        body = self._json_body()
        require_write(storage.repo(key), self._identity)
        commit = storage.commit(key, storage.resolve(key, revision))
        gitattributes = storage.read_file(key, commit.id, ".gitattributes")
        gitignore = body.get("gitIgnore")
        if gitignore is None:
            stored_gitignore = storage.read_file(key, commit.id, ".gitignore")
            gitignore = stored_gitignore.decode(errors="replace") if stored_gitignore is not None else None
        files = body.get("files")
        if not isinstance(files, list):
            raise BadRequest("Missing 'files' list")
        answers = []
        for item in files:
            try:
                path = _validate_path(item["path"])
                size = int(item["size"])
                sample = base64.b64decode(item.get("sample") or "", validate=True)
            except (KeyError, TypeError, ValueError, binascii.Error) as err:
                raise BadRequest(f"Invalid file description: {item!r}") from err
            mode = upload_mode(path, size, sample, gitattributes.decode(errors="replace") if gitattributes else None)
            existing = commit.files.get(path)
            answers.append(
                {
                    "path": path,
                    "uploadMode": mode,
                    "shouldIgnore": is_gitignored(path, gitignore),
                    # The client skips unchanged files by comparing this with the sha256 (LFS) or git blob id.
                    "oid": None if existing is None else (existing.sha256 if existing.lfs else existing.oid),
                }
            )
        self._send_json(200, {"files": answers, "commitOid": commit.id})

    def _lfs_batch(self, key: RepoKey) -> None:
        storage = self.state.storage
        body = self._json_body()
        require_write(storage.repo(key), self._identity)
        if body.get("operation") != "upload":
            raise BadRequest("Only the 'upload' operation is supported")
        expires = int(time.time()) + _UPLOAD_URL_TTL
        answers = []
        for item in body.get("objects") or []:
            oid, size = item.get("oid"), item.get("size")
            if not isinstance(oid, str) or not _SHA256_RE.match(oid) or not isinstance(size, int) or size < 0:
                # Per-object errors, as in the git LFS batch API, rather than failing the whole batch.
                error = {"code": 422, "message": "Invalid object: oid must be a sha256 and size a non-negative int"}
                answers.append({"oid": str(oid), "size": size if isinstance(size, int) else 0, "error": error})
                continue
            if storage.has_lfs_object(key, oid) and storage.blob_path(oid).stat().st_size == size:
                answers.append({"oid": oid, "size": size})  # already there: no action, the client skips it
                continue
            signature = self.state.sign_upload(key, oid, size, expires)
            query = urlencode({"size": size, "expires": expires, "signature": signature})
            upload_href = f"{self.state.endpoint}/_lfs/upload/{key.repo_type}/{key.repo_id}/{oid}?{query}"
            verify_href = f"{self.state.endpoint}/{key.url_prefix}{key.repo_id}.git/info/lfs/objects/verify"
            answers.append(
                {
                    "oid": oid,
                    "size": size,
                    "authenticated": True,
                    "actions": {
                        "upload": {"href": upload_href, "expires_in": _UPLOAD_URL_TTL},
                        "verify": {"href": verify_href, "expires_in": _UPLOAD_URL_TTL},
                    },
                }
            )
        self._send(
            200,
            json.dumps({"transfer": "basic", "objects": answers, "hash_algo": "sha256"}).encode(),
            content_type="application/vnd.git-lfs+json",
        )

    def _lfs_upload(self, repo_type: str, repo_id: str, oid: str) -> None:
        key = RepoKey.parse(repo_type, repo_id)
        size = _parse_int(self._query_values("size"), default=-1)
        expires = _parse_int(self._query_values("expires"), default=0)
        signature = (self._query_values("signature") or [""])[-1]
        expected = self.state.sign_upload(key, oid, size, expires)
        if not hmac.compare_digest(signature, expected) or expires < time.time():
            raise HubError(403, "Invalid or expired upload signature")
        storage = self.state.storage
        if storage.repo(key) is None:
            raise HubError(404, "Repository not found", "RepoNotFound")

        def counted() -> Iterator[bytes]:
            for chunk in self._iter_body():
                self.state.stats.add("upload_bytes", len(chunk))
                yield chunk

        storage.put_stream(counted(), expected_sha256=oid, expected_size=size)
        storage.add_lfs_object(key, oid)
        self.state.stats.add("lfs_uploads")
        self._send(200, headers={"ETag": f'"{oid}"'})

    def _lfs_verify(self, key: RepoKey) -> None:
        storage = self.state.storage
        body = self._json_body()
        require_write(storage.repo(key), self._identity)
        oid, size = body.get("oid"), body.get("size")
        if not isinstance(oid, str) or not storage.has_lfs_object(key, oid):
            raise HubError(404, f"Object {oid} not found")
        if storage.blob_path(oid).stat().st_size != size:
            raise HubError(422, f"Object {oid} has a different size")
        self._send_json(200, {"success": True})

    def _commit(self, key: RepoKey, revision: str) -> None:
        storage = self.state.storage
        lines = self._body().splitlines()
        repo, identity = require_write(storage.repo(key), self._identity)
        if self.state.fake_commits > 0:
            self.state.fake_commits -= 1
            oid = hashlib.sha1(os.urandom(20)).hexdigest()
            url = f"{self.state.endpoint}/{key.url_prefix}{repo.key.repo_id}/commit/{oid}"
            self._send_json(200, {"success": True, "commitOid": oid, "commitUrl": url, "hookOutput": "",
                                  "pullRequestUrl": None})
            return
        ref = storage.branch_ref(key, revision)
        limiter = self.state.limiter
        try:
            # The quota is checked before the operations are read, so a refused commit stores no content.
            slot = limiter.acquire(key)
        except CommitRateLimited:
            self.state.stats.add("rate_limited")
            raise
        try:
            commit, pr_number = self._create_commit(key, ref, lines, identity.user)
        except BaseException as err:
            limiter.release(slot)  # only commits that were created count against the quota
            if isinstance(err, LimitExceeded):
                self.state.stats.add("limit_rejections")
            raise
        repo_url = f"{self.state.endpoint}/{key.url_prefix}{repo.key.repo_id}"
        self._send_json(
            200,
            {
                "success": True,
                "commitOid": commit.id,
                "commitUrl": f"{repo_url}/commit/{commit.id}",
                "hookOutput": "",
                "pullRequestUrl": f"{repo_url}/discussions/{pr_number}" if pr_number is not None else None,
            },
            headers=slot.headers,
        )

    def _create_commit(self, key: RepoKey, ref: str, lines: list[bytes], author: str) -> tuple[Commit, int | None]:
        """Parse the NDJSON commit payload, check the limits and create the commit.

        Returns:
            The new commit and the number of the pull request it opened (None without `create_pr`).
        """
        storage = self.state.storage
        limits = self.state.limiter.limits
        header: dict[str, Any] | None = None
        operations: list[Operation] = []
        for line in lines:
            if not line.strip():
                continue
            try:
                item = json.loads(line)
                op_key, value = item["key"], item["value"]
            except (ValueError, KeyError, TypeError) as err:
                raise BadRequest(f"Invalid NDJSON line: {line[:200]!r}") from err
            if op_key == "header":
                header = value
            else:
                operations.append(self._commit_operation(key, op_key, value))
        if not header or not isinstance(header.get("summary"), str) or not header["summary"].strip():
            raise BadRequest("The commit header with a non-empty summary is required")
        check_files_per_commit(len(operations), limits)
        parent_commit = header.get("parentCommit")
        pr_number = None
        if self._query_flag("create_pr"):
            ref, pr_number = storage.open_pull_request(key, ref, parent_commit=parent_commit)
            parent_commit = None
        target = ref

        def check(before: dict[str, FileEntry], after: dict[str, FileEntry]) -> None:
            check_folder_entries(before, after, ref=target, limits=limits)

        commit = storage.create_commit(
            key,
            ref,
            operations,
            title=header["summary"].strip(),
            message=header.get("description") or "",
            author=author,
            parent_commit=parent_commit,
            check=check,
        )
        self.state.stats.record_commit(op.path for op in operations if isinstance(op, AddFile))
        return commit, pr_number

    def _commit_operation(self, key: RepoKey, op_key: str, value: Any) -> Operation:
        if not isinstance(value, dict):
            raise BadRequest(f"Invalid value for operation {op_key!r}")
        path = _validate_path(value.get("path"))
        storage = self.state.storage
        if op_key == "file":
            content = _decode_inline(value)
            self.state.stats.add("upload_bytes", len(content))
            if len(content) > REGULAR_FILE_MAX_SIZE:
                raise BadRequest(f"{path} is larger than 10 MiB: it must be uploaded with LFS")
            sha256 = storage.put_bytes(content)
            return AddFile(path, make_entry(sha256, len(content), lfs=False, content=content))
        if op_key == "lfsFile":
            oid = value.get("oid")
            if (
                value.get("algo", "sha256") != "sha256"
                or not isinstance(oid, str)
                or not storage.has_lfs_object(key, oid)
            ):
                raise HubError(
                    422,
                    "Your push was rejected because an LFS pointer pointed to a file that does not exist. "
                    f"Offending file: {path}",
                )
            size = storage.blob_path(oid).stat().st_size
            if value.get("size") is not None and value["size"] != size:
                raise BadRequest(f"Size mismatch for LFS file {path}: {value['size']} != {size}")
            return AddFile(path, make_entry(oid, size, lfs=True))
        if op_key in ("deletedFile", "deletedFolder"):
            return DeletePath(path, folder=op_key == "deletedFolder")
        raise BadRequest(f"Unsupported commit operation: {op_key!r}")

    def _super_squash(self, key: RepoKey, branch: str) -> None:
        storage = self.state.storage
        body = self._json_body()
        _, identity = require_write(storage.repo(key), self._identity)
        ref = storage.branch_ref(key, branch)
        message = body.get("message") or f"Super-squash branch '{branch}'"
        commit = storage.squash(key, ref, title=message, author=identity.user)
        self._send_json(200, {"commitId": commit.id})

    # ---------------------------------------------------------------- downloads

    def _resolve(self, key: RepoKey, revision: str, path: str) -> None:
        storage = self.state.storage
        require_read(storage.repo(key), self._identity)
        commit = storage.commit(key, storage.resolve(key, revision))
        entry = commit.files.get(path)
        if entry is None:
            raise EntryNotFound(f'Entry not found: {path} does not exist on "{revision}"', commit=commit.id)
        name = PurePosixPath(path).name
        headers = {
            "ETag": f'"{entry.sha256 if entry.lfs else entry.oid}"',
            "X-Repo-Commit": commit.id,
            "Accept-Ranges": "bytes",
            "Content-Disposition": f"inline; filename*=UTF-8''{quote(name)}",
        }
        if entry.lfs:
            headers.update({"X-Linked-Etag": f'"{entry.sha256}"', "X-Linked-Size": str(entry.size)})
        xet_hash = self.state.xet_hash(entry)
        if xet_hash is not None:
            # huggingface_hub downloads through Xet when both are present (utils/_xet.py
            # parse_xet_file_data_from_response), asking the linked URL for a read token. GET still serves the bytes.
            token_url = f"{self.state.endpoint}/api/{key.repo_type}s/{key.repo_id}/xet-read-token/{commit.id}"
            headers.update({"X-Xet-Hash": xet_hash, "Link": f'<{token_url}>; rel="xet-auth"'})
        self._send_content(entry.sha256, entry.size, headers)

    def _send_content(self, sha256: str, size: int, headers: dict[str, str]) -> None:
        """Answer a download with the stored blob: the whole of it, or the single range asked (206); HEAD: headers."""
        start, length, status = 0, size, 200
        byte_range = _parse_range(self.headers.get("Range"), size)
        if byte_range == "unsatisfiable":
            raise HubError(416, "Requested range not satisfiable", headers={"Content-Range": f"bytes */{size}"})
        headers = dict(headers)
        if isinstance(byte_range, tuple):
            start, length = byte_range
            status = 206
            headers["Content-Range"] = f"bytes {start}-{start + length - 1}/{size}"
        if not self._send(status, content_type="application/octet-stream", headers=headers, content_length=length):
            return
        if self.command == "HEAD":
            return
        with self.state.storage.blob_path(sha256).open("rb") as blob:
            blob.seek(start)
            remaining = length
            while remaining > 0:
                data = blob.read(min(remaining, _BODY_CHUNK))
                if not data:
                    raise ConnectionError("blob shorter than expected")
                self.wfile.write(data)
                self.state.stats.add("bytes_sent", len(data))
                remaining -= len(data)


# -------------------------------------------------------------------- helpers


def _object_id(key: RepoKey) -> str:
    """A stable 24-hex id, the shape of the Hub's database ids."""
    return hashlib.sha1(f"{key.repo_type}/{key.repo_id}".encode()).hexdigest()[:24]


def _repo_key_from_web_path(segments: list[str]) -> RepoKey:
    """RepoKey from `[datasets|spaces,] namespace, name` as found in web and git URLs."""
    if len(segments) == 3 and segments[0] in ("datasets", "spaces"):
        return RepoKey.parse(_PLURAL_TYPES[segments[0]], f"{segments[1]}/{segments[2]}")
    if len(segments) == 2:
        return RepoKey.parse("model", f"{segments[0]}/{segments[1]}")
    raise HubError(404, "Not Found")


def _split_resolve_path(segments: list[str]) -> tuple[RepoKey, str, str] | None:
    """(repo, revision, path) of a `[type/]ns/name/resolve/revision/path` URL, or None for other URLs."""
    for repo_len in (3, 2):
        if len(segments) > repo_len + 2 and segments[repo_len] == "resolve":
            if repo_len == 3 and segments[0] not in ("datasets", "spaces"):
                continue
            key = _repo_key_from_web_path(segments[:repo_len])
            return key, segments[repo_len + 1], "/".join(segments[repo_len + 2 :])
    return None


def _validate_path(path: Any) -> str:
    if not isinstance(path, str) or not path or path.startswith("/") or path.endswith("/"):
        raise BadRequest(f"Invalid path in repo: {path!r}")
    parts = path.split("/")
    if any(part in ("", ".", "..") for part in parts) or parts[0] == ".git":
        raise BadRequest(f"Invalid path in repo: {path!r}")
    return path


def _decode_inline(value: dict) -> bytes:
    content = value.get("content")
    if not isinstance(content, str):
        raise BadRequest(f"Missing content for {value.get('path')!r}")
    encoding = value.get("encoding", "utf-8")
    if encoding == "base64":
        try:
            return base64.b64decode(content, validate=True)
        except (ValueError, binascii.Error) as err:
            raise BadRequest(f"Invalid base64 content for {value.get('path')!r}") from err
    if encoding == "utf-8":
        return content.encode()
    raise BadRequest(f"Unsupported encoding: {encoding!r}")


def _file_json(path: str, entry: FileEntry, xet_hash: str | None) -> dict[str, Any]:
    info: dict[str, Any] = {"type": "file", "oid": entry.oid, "size": entry.size, "path": path}
    if entry.lfs:
        pointer_size = len(lfs_pointer(entry.sha256, entry.size))
        info["lfs"] = {"oid": entry.sha256, "size": entry.size, "pointerSize": pointer_size}
    if xet_hash is not None:
        info["xetHash"] = xet_hash  # read by huggingface_hub's RepoFile (hf_api.py) and its tree cache
    return info


def _folder_json(path: str, files: dict[str, FileEntry]) -> dict[str, Any]:
    # Not git's tree hash, but likewise derived from the folder's content, so it changes exactly when git's would.
    prefix = f"{path}/"
    listing = sorted((p, e.oid) for p, e in files.items() if p.startswith(prefix))
    oid = hashlib.sha1(json.dumps(listing).encode()).hexdigest()
    return {"type": "directory", "oid": oid, "size": 0, "path": path}


def _parse_int(values: list[str], *, default: int) -> int:
    try:
        return int(values[-1]) if values else default
    except ValueError as err:
        raise BadRequest(f"Invalid integer: {values[-1]!r}") from err


def _make_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"offset": offset}).encode()).decode()


def _parse_cursor(values: list[str]) -> int:
    if not values:
        return 0
    try:
        return int(json.loads(base64.urlsafe_b64decode(values[-1].encode()))["offset"])
    except (ValueError, KeyError, TypeError, binascii.Error) as err:
        raise BadRequest("Invalid cursor") from err


def _parse_range(header: str | None, size: int) -> tuple[int, int] | str | None:
    """(start, length) of a single `bytes=` range, "unsatisfiable", or None to serve the whole file."""
    match = _RANGE_RE.match(header or "")
    if match is None or size == 0:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:
        length = min(int(last), size)
        return (size - length, length) if length > 0 else "unsatisfiable"
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or end < start:
        return "unsatisfiable"
    return start, end - start + 1
