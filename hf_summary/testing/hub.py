"""`LocalHub`: start, stop, pause and inspect a local Hugging Face Hub server."""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
import threading
from collections.abc import Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

from .auth import TokenRegistry
from .bucket_store import BucketStore
from .errors import HubError
from .faults import DEFAULT_FAULT_KINDS, FaultInjector, HubStats, StatsRecorder
from .limits import CommitLimiter, HubLimits
from .server import HubHTTPServer
from .spaces import SpaceRunError, SpaceStore, run_command
from .state import HubState
from .storage import DEFAULT_BRANCH, RepoKey, Storage
from .xet import XetStore

DEFAULT_TOKEN = "hf_local_token"
DEFAULT_USER = "local-user"


class LocalHub:
    """A real HTTP server on the local machine that speaks enough of the Hugging Face Hub API for `huggingface_hub`.

    Point the client at it with `HF_ENDPOINT=hub.endpoint`, set before `huggingface_hub` is imported (see `env()`);
    repositories, uploads, downloads, commit history, squashing, permissions and error responses then behave like on
    the Hub. State is kept on disk under `root`.

    Like the Hub, it speaks Xet: Xet tokens, a CAS (xorbs, shards, reconstructions) under `/xet-cas` on the same
    port, and Xet headers and hashes for files uploaded through it, so the real `hf_xet` client uploads and
    downloads through it. Legacy LFS uploads are accepted too, and every file downloads as plain bytes as well.
    With Xet on, it also has the Hub's Storage Buckets (`hf://buckets/...`: create, batch, tree, paths-info,
    downloads, the live change feed; see `buckets.py`), kept under `root` like repositories. Spaces have the settings
    huggingface_hub sets and reads (SDK, secrets, variables, runtime; see `spaces.py`), and `run_space` runs a Docker
    Space's command as the Hub would, without a container.

    Args:
        root: Folder holding repositories and blobs. A server started again on the same folder sees the same
            repositories. None uses a temporary folder, removed by `stop()`.
        host: Interface to listen on.
        port: Port to listen on; 0 picks a free one (kept across `pause()`/`resume()`).
        users: Access tokens, as token -> user name; all of them can write. Defaults to
            `{"hf_local_token": "local-user"}`. Every user owns the namespace named after it.
        commit_limit: Enforce the Hub's commit quota: at most `(count, window_seconds)` commits per repository in any
            sliding window of that length (the Hub allows `HUB_COMMIT_LIMIT`, 128 per hour). None: no quota.
        max_files_per_commit: Refuse commits with more file operations than this. None: no limit.
        max_folder_entries: Refuse commits leaving more entries (files and subfolders) than this in one folder (the
            Hub refuses more than `HUB_MAX_FOLDER_ENTRIES`, 10 000). None: no limit. See `set_limits()` for the
            responses; all three can be changed at runtime with it.
        xet: Speak Xet. None (the default): on unless the `HF_HUB_DISABLE_XET` environment variable is set (as
            huggingface_hub reads it), so that a client and a server started from the same environment agree. Off,
            the server answers exactly as before Xet: no token routes, no CAS, no Xet headers or `xetHash`.
        xet_token_ttl: Seconds a Xet access token is valid; None: an hour, as on the Hub. A CAS request with an
            expired token is refused with 401 (counted in `stats.xet_expired_tokens`), and the client asks for a new
            one (`stats.xet_tokens`): shorten it to see tokens expire during a run.

    Example:
        ```python
        import os, subprocess, sys
        from hf_summary.testing import LocalHub

        with LocalHub() as hub:
            code = "from huggingface_hub import HfApi; HfApi().create_repo('local-user/demo')"
            subprocess.run([sys.executable, "-c", code], env={**os.environ, **hub.env()}, check=True)
            assert hub.repo_exists("local-user/demo")
            assert ".gitattributes" in hub.repo_files("local-user/demo")
        ```
    """

    def __init__(
        self,
        root: str | Path | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        users: Mapping[str, str] | None = None,
        commit_limit: tuple[int, float] | None = None,
        max_files_per_commit: int | None = None,
        max_folder_entries: int | None = None,
        xet: bool | None = None,
        xet_token_ttl: float | None = None,
    ):
        self._xet = not _env_flag("HF_HUB_DISABLE_XET") if xet is None else xet
        self._owns_root = root is None
        self._root = Path(tempfile.mkdtemp(prefix="local-hub-")) if root is None else Path(root)
        self._host = host
        self._port = port
        self._tokens = TokenRegistry(dict(users) if users else {DEFAULT_TOKEN: DEFAULT_USER})
        self._default_identity = self._tokens.first()
        self._state = HubState(
            storage=Storage(self._root),
            tokens=self._tokens,
            faults=FaultInjector(),
            stats=StatsRecorder(),
            signing_key=_signing_key(self._root),
            xet=XetStore(self._root / "xet") if self._xet else None,
            buckets=BucketStore(self._root),
            spaces=SpaceStore(self._root),
            limiter=CommitLimiter(
                HubLimits(
                    commit_limit=commit_limit,
                    max_files_per_commit=max_files_per_commit,
                    max_folder_entries=max_folder_entries,
                )
            ),
        )
        if xet_token_ttl is not None:
            if xet_token_ttl <= 0:
                raise ValueError(f"xet_token_ttl must be > 0, got {xet_token_ttl}")
            self._state.xet_token_ttl = xet_token_ttl
        self._lifecycle = threading.Lock()
        self._server: HubHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._started = False

    def __repr__(self) -> str:
        status = "stopped" if not self._started else ("paused" if self._server is None else "running")
        return f"LocalHub(root={str(self._root)!r}, port={self._port}, {status})"

    def __enter__(self) -> LocalHub:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> LocalHub:
        """Start listening (no-op if already started) and return self."""
        with self._lifecycle:
            if self._started:
                return self
            if not self._root.exists():
                # A temporary root removed by a previous stop(): start afresh.
                self._root.mkdir(parents=True)
                self._state.storage = Storage(self._root)
                self._state.signing_key = _signing_key(self._root)
                self._state.xet = XetStore(self._root / "xet") if self._xet else None
                self._state.buckets = BucketStore(self._root)
                self._state.spaces = SpaceStore(self._root)
            self._listen()
            self._started = True
            return self

    def stop(self) -> None:
        """Stop the server, cut open connections and remove the root if it is a temporary folder. Idempotent."""
        with self._lifecycle:
            self._state.faults.clear()  # releases requests held by a "hang" fault
            self._close()
            self._started = False
            if self._owns_root:
                shutil.rmtree(self._root, ignore_errors=True)

    def pause(self) -> None:
        """Make the Hub unreachable: the listening socket and open connections are closed, so new connections are
        refused. Idempotent; no-op when not started."""
        with self._lifecycle:
            self._close()

    def resume(self) -> None:
        """Listen again, on the same port, after `pause()`. Idempotent; no-op when not started."""
        with self._lifecycle:
            if self._started and self._server is None:
                self._listen()

    def _listen(self) -> None:
        server = HubHTTPServer((self._host, self._port), self._state)
        self._port = server.server_address[1]
        self._state.endpoint = self.endpoint
        self._server = server
        # A short poll interval keeps pause()/stop() fast; serve_forever only polls to notice shutdown requests.
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name=f"local-hub-{self._port}", daemon=True
        )
        self._thread.start()

    def _close(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._server.close_connections()
        if self._thread is not None:
            self._thread.join()
        self._server = None
        self._thread = None

    # ---------------------------------------------------------------- connection details

    @property
    def root(self) -> Path:
        """Folder holding the state of the Hub."""
        return self._root

    @property
    def endpoint(self) -> str:
        """Base URL of the server, e.g. "http://127.0.0.1:43210".

        Raises:
            RuntimeError: the port is not known yet (port 0 and never started).
        """
        if self._port == 0:
            raise RuntimeError("The LocalHub has not been started yet")
        return f"http://{self._host}:{self._port}"

    @property
    def token(self) -> str:
        """The first token given in `users` (or the default token)."""
        return self._default_identity.token

    @property
    def user(self) -> str:
        """The user behind `token`."""
        return self._default_identity.user

    def add_token(self, token: str, user: str, *, write: bool = True) -> None:
        """Register an access token for `user`; `write=False` makes a read-only token."""
        self._tokens.add(token, user, write=write)

    @property
    def xet(self) -> bool:
        """Whether the server speaks Xet (see the `xet` argument)."""
        return self._xet

    def env(self, *, xet: bool = False) -> dict[str, str]:
        """Environment variables pointing `huggingface_hub` (in a subprocess) at this server with `token`.

        Args:
            xet: Let the client use Xet. By default the client is told `HF_HUB_DISABLE_XET=1` and uploads through
                legacy LFS, which this server also accepts.

        Raises:
            ValueError: `xet=True` on a server that does not speak Xet.
        """
        if xet and not self._xet:
            raise ValueError("This LocalHub does not speak Xet (xet=False, or HF_HUB_DISABLE_XET was set)")
        env = {"HF_ENDPOINT": self.endpoint, "HF_TOKEN": self.token}
        if not xet:
            env["HF_HUB_DISABLE_XET"] = "1"
        return env

    # ---------------------------------------------------------------- faults and statistics

    def set_faults(
        self,
        failure_rate: float = 0.0,
        *,
        latency: float = 0.0,
        kinds: Iterable[str] = DEFAULT_FAULT_KINDS,
        retry_after: int = 1,
        seed: int | None = None,
        methods: Collection[str] | None = None,
        paths: Iterable[str] | None = None,
    ) -> None:
        """Make requests fail at random, and/or slow every request down.

        Args:
            failure_rate: Probability, in [0, 1], that a request fails.
            latency: Seconds added to every request.
            kinds: Faults to pick from at random: "500", "503", "429" (with a `Retry-After` header), "drop" (the
                connection is closed without a response, before processing) and "drop_after" (the request is
                processed, then the connection is closed without a response: a lost response) and "hang" (the
                request is accepted and never answered, until `clear_faults()`).
            retry_after: Seconds announced in the `Retry-After` header of 429 responses.
            seed: Seed of the random generator, for reproducible fault sequences.
            methods: Only requests with these HTTP methods (e.g. {"POST"}) can fail; None means all.
            paths: Only requests whose path (query included) matches one of these regular expressions (searched,
                e.g. `r"^/xet-cas/"` for the Xet CAS, `r"/commit/"` for commits) can fail; None means all.

        Raises:
            ValueError: invalid rate, latency or kinds.
        """
        self._state.faults.configure(
            failure_rate, latency=latency, kinds=kinds, retry_after=retry_after, seed=seed, methods=methods,
            paths=paths,
        )

    def clear_faults(self) -> None:
        """Stop injecting faults and latency, and stop lying about commits."""
        self._state.faults.clear()
        self._state.fake_commits = 0

    def fake_commits(self, count: int) -> None:
        """Answer the next `count` commits with 200 and a commit id that does not exist, committing nothing.

        A lying server (or a broken proxy): a client must not record such a commit as made.
        """
        self._state.fake_commits = count

    # ---------------------------------------------------------------- limits of the real Hub

    def set_limits(
        self,
        *,
        commit_limit: tuple[int, float] | None = None,
        max_files_per_commit: int | None = None,
        max_folder_entries: int | None = None,
        api_limit: tuple[int, float] | None = None,
    ) -> None:
        """Enforce (or, with no arguments, stop enforcing) the Hub's limits on commits and API calls. Replaces all
        four settings.

        Args:
            commit_limit: `(count, window_seconds)`: a repository accepts at most `count` commits in any sliding
                window of `window_seconds` (the Hub: `HUB_COMMIT_LIMIT`, 128 per hour). Only commits made through
                the commit endpoint count, including those made before this call; super-squashes and the initial
                commit of a new repository do not, nor do refused commits. Above it the commit endpoint answers 429
                with the Hub's message ("You have exceeded our hourly quotas for action: commit. ..."), a
                `Retry-After` header (whole seconds until a slot frees) and `RateLimit: "commit";r=0;t=<same>` /
                `RateLimit-Policy: "sliding window";"commit";q=<count>;w=<window>`, which
                `huggingface_hub.utils.parse_ratelimit_headers` reads. Accepted commits carry the same two headers,
                with the slots left in `r`. None: no quota.
            max_files_per_commit: Maximum file operations (additions, deletions, copies) in one commit; above it the
                commit is refused with 413 Payload Too Large (the Hub advises < 100 files per commit over HTTP; it has
                no hard limit, but its oversized commits time out). None: no limit.
            max_folder_entries: Maximum entries (files and subfolders) directly inside one folder, the root included;
                a commit making a folder bigger than that is refused with 400 and the Hub's message ("Your push was
                rejected because it contains too many files per directory. ..."). The Hub refuses more than
                `HUB_MAX_FOLDER_ENTRIES` (10 000). None: no limit.
            api_limit: `(quota, window_seconds)`: the Hub's per-user "api" rate limit (Hub docs, rate-limits: fixed
                5-minute windows, `HUB_API_LIMIT` = 1 000 calls for a free user). Every `/api/...` call counts
                (commits and bucket batches included; downloads at `/resolve/` and the Xet CAS do not), per user
                (anonymous calls per address), in fixed windows that open with a caller's first call; every answer
                to an `/api/...` call then carries `RateLimit: "api";r=<remaining>;t=<seconds to reset>` and
                `RateLimit-Policy: "fixed window";"api";q=<quota>;w=<window>` (a commit's `commit_limit` headers
                replace them on the commit's answer). Past the quota: 429 with `r=0`, the same `t` in
                `Retry-After`, counted in `stats.api_rate_limited`. Each call of `set_limits` starts new windows.
                None: no limit, no headers.

        Raises:
            ValueError: a count below 1, or a window that is not a positive number of seconds.
        """
        self._state.limiter.configure(
            HubLimits(
                commit_limit=commit_limit,
                max_files_per_commit=max_files_per_commit,
                max_folder_entries=max_folder_entries,
                api_limit=api_limit,
            )
        )

    @property
    def limits(self) -> HubLimits:
        """The limits in force (see `set_limits`)."""
        return self._state.limiter.limits

    def commit_times(self, repo_id: str, *, repo_type: str = "model") -> list[float]:
        """When the repository's commits were accepted by the commit endpoint, as `time.time()` values, oldest first.

        Unlike the dates in `commits()`, this covers every branch and pull request and survives super-squashes: it is
        what the commit quota counts. Kept since this `LocalHub` was created (not cleared by `reset_stats`).
        """
        return self._state.limiter.commit_times(RepoKey.parse(repo_type, repo_id))

    @property
    def stats(self) -> HubStats:
        """A snapshot of the traffic counters."""
        return self._state.stats.snapshot()

    def reset_stats(self) -> None:
        """Set all traffic counters back to zero."""
        self._state.stats.reset()

    # ---------------------------------------------------------------- direct inspection (no HTTP)

    def repo_exists(self, repo_id: str, repo_type: str = "model") -> bool:
        """Whether the repository exists (private or not)."""
        return self._state.storage.repo(RepoKey.parse(repo_type, repo_id)) is not None

    def is_private(self, repo_id: str, repo_type: str = "model") -> bool:
        """Whether the repository is private.

        Raises:
            KeyError: the repository does not exist.
        """
        repo = self._state.storage.repo(RepoKey.parse(repo_type, repo_id))
        if repo is None:
            raise KeyError(f"{repo_type} repository {repo_id!r} does not exist")
        return repo.private

    def bucket_files(self, bucket_id: str) -> dict[str, bytes]:
        """Every file of a Storage Bucket, with its content.

        Raises:
            KeyError: the bucket does not exist.
        """
        buckets = self._state.buckets
        bucket = buckets.get(bucket_id) if buckets is not None else None
        if bucket is None:
            raise KeyError(f"bucket {bucket_id!r} does not exist")
        storage = self._state.storage
        return {path: storage.read_blob(obj.sha256) for path, obj in bucket.files.items()}

    def repo_files(self, repo_id: str, *, repo_type: str = "model", revision: str = DEFAULT_BRANCH) -> dict[str, bytes]:
        """Every file of the repository at a revision (branch, tag or commit id), with its content.

        Raises:
            KeyError: the repository or revision does not exist.
        """
        key, commit_id = self._resolve(repo_id, repo_type, revision)
        storage = self._state.storage
        return {path: storage.read_blob(entry.sha256) for path, entry in storage.commit(key, commit_id).files.items()}

    def xet_hash(
        self, repo_id: str, path: str, *, repo_type: str = "model", revision: str = DEFAULT_BRANCH
    ) -> str | None:
        """The Xet hash of a file at a revision, or None if its content was not uploaded through Xet.

        Raises:
            KeyError: the repository, revision or file does not exist.
        """
        key, commit_id = self._resolve(repo_id, repo_type, revision)
        entry = self._state.storage.commit(key, commit_id).files[path]
        return self._state.xet_hash(entry)

    def commits(self, repo_id: str, *, repo_type: str = "model", revision: str = DEFAULT_BRANCH) -> list[dict]:
        """History of a revision, newest first.

        Returns:
            One dict per commit with "id", "title", "message", "author", "date", "parents" and "files" (the paths
            the commit added, modified or deleted, compared to its parent).

        Raises:
            KeyError: the repository or revision does not exist.
        """
        key, commit_id = self._resolve(repo_id, repo_type, revision)
        return [
            {
                "id": commit.id,
                "title": commit.title,
                "message": commit.message,
                "author": commit.author,
                "date": commit.date,
                "parents": list(commit.parents),
                "files": list(commit.changed),
            }
            for commit in self._state.storage.history(key, commit_id)
        ]

    # ---------------------------------------------------------------- Spaces

    def space_settings(self, space_id: str) -> dict[str, Any]:
        """A Space's SDK, secrets and variables, values included: `{"sdk", "secrets", "variables"}`, the last two
        as `{key: {"value", "description", "updatedAt"}}`."""
        assert self._state.spaces is not None
        return self._state.spaces.settings(space_id)

    @contextmanager
    def run_space(self, space_id: str, *, env: Mapping[str, str] | None = None, timeout: float = 120.0
                  ) -> Iterator[str]:
        """Run a Docker Space's command the way the Hub runs its container, without one; yield the app's URL.

        The `CMD` of the Space's `Dockerfile` (exec form) runs in a fresh folder holding the Space's files, with a
        fresh `HOME` and an environment of its own, as a container has: the Space's variables and secrets,
        `HF_ENDPOINT` pointing at this server (the Hub the Space lives on), `SPACE_ID`, `SPACE_AUTHOR_NAME`,
        `SPACE_REPO_NAME`, `SYSTEM=spaces`, and `PORT`, a free port (no container maps the `app_port` here: the
        app reads `PORT`). `PATH` is this process's, so the command runs with what is installed here instead of
        what the Dockerfile's `RUN` lines would install. The Space's runtime stage is `RUNNING` meanwhile.

        Args:
            space_id: The Space, `ns/name`.
            env: More environment variables (e.g. `PYTHONPATH`, `PATH`), over the rest.
            timeout: Seconds the command has to listen on `PORT`.

        Raises:
            KeyError: the Space does not exist.
            RuntimeError (`SpaceRunError`): not a Docker Space, no `CMD` in exec form, or the command exited (or
                did not listen) before `timeout`: the message holds the end of its output.

        Example:
            ```python
            with hub.run_space("local-user/logs-tensorboard") as url:
                urllib.request.urlopen(f"{url}/data/runs")
            ```
        """
        files = self.repo_files(space_id, repo_type="space")
        spaces = self._state.spaces
        assert spaces is not None
        if "Dockerfile" not in files:
            raise SpaceRunError(f"the Space {space_id} has no Dockerfile")
        settings = spaces.settings(space_id)
        namespace, name = space_id.split("/")
        environment = {
            "PATH": os.environ.get("PATH", os.defpath),
            "HF_ENDPOINT": self.endpoint,
            "SPACE_ID": space_id,
            "SPACE_AUTHOR_NAME": namespace,
            "SPACE_REPO_NAME": name,
            "SYSTEM": "spaces",
            **({} if self._xet else {"HF_HUB_DISABLE_XET": "1"}),
            **{key: entry["value"] for key, entry in settings["variables"].items()},
            **{key: entry["value"] for key, entry in settings["secrets"].items()},
            **(env or {}),
        }
        with run_command(files, environment, timeout=timeout,
                         on_stage=lambda stage, error: spaces.set_stage(space_id, stage, error)) as (host, port):
            yield f"http://{host}:{port}"

    def _resolve(self, repo_id: str, repo_type: str, revision: str) -> tuple[RepoKey, str]:
        key = RepoKey.parse(repo_type, repo_id)
        if self._state.storage.repo(key) is None:
            raise KeyError(f"{repo_type} repository {repo_id!r} does not exist")
        try:
            return key, self._state.storage.resolve(key, revision)
        except HubError as err:
            raise KeyError(f"revision {revision!r} does not exist in {repo_type} repository {repo_id!r}") from err


def _env_flag(name: str) -> bool:
    """Whether an environment flag is set to true, read the way huggingface_hub reads its flags."""
    return os.environ.get(name, "").upper() in {"1", "ON", "YES", "TRUE"}


def _signing_key(root: Path) -> bytes:
    """The key signing LFS upload URLs, Xet tokens and fetch URLs, kept in the root so they survive a restart."""
    path = root / "upload-signing.key"
    if not path.exists():
        path.write_bytes(secrets.token_bytes(32))
    return path.read_bytes()
