"""Fault injection and traffic statistics of the local Hub."""

from __future__ import annotations

import random
import re
import threading
from collections import Counter
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

# "drop" closes the connection before the request is processed; "drop_after" processes it (e.g. the commit is
# created) and then closes the connection without answering, like a response lost on the way back; "hang" accepts the
# request and never answers, until the faults are cleared (a Hub behind a stuck proxy).
FAULT_KINDS = ("500", "503", "429", "drop", "drop_after", "hang")
_HANG_LIMIT = 600.0  # seconds a hung request is held at most, so that a forgotten fault cannot hang a test run
DEFAULT_FAULT_KINDS = ("500", "503", "429", "drop")


@dataclass(frozen=True)
class FaultConfig:
    """Current fault settings. See `LocalHub.set_faults` for the meaning of each field."""

    failure_rate: float = 0.0
    latency: float = 0.0
    kinds: tuple[str, ...] = DEFAULT_FAULT_KINDS
    retry_after: int = 1
    methods: frozenset[str] | None = None
    paths: tuple[re.Pattern[str], ...] | None = None


class FaultInjector:
    """Decides, request by request, whether to inject a fault. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._config = FaultConfig()
        self._random = random.Random()
        self._released = threading.Event()

    @property
    def config(self) -> FaultConfig:
        """The current settings."""
        return self._config

    def configure(
        self,
        failure_rate: float,
        *,
        latency: float,
        kinds: Iterable[str],
        retry_after: int,
        seed: int | None,
        methods: Collection[str] | None,
        paths: Iterable[str] | None = None,
    ) -> None:
        """Replace the settings.

        Raises:
            ValueError: a rate outside [0, 1], a negative latency, or an unknown or empty list of kinds.
        """
        kinds = tuple(kinds)
        if not 0.0 <= failure_rate <= 1.0:
            raise ValueError(f"failure_rate must be in [0, 1], got {failure_rate}")
        if latency < 0:
            raise ValueError(f"latency must be >= 0, got {latency}")
        unknown = set(kinds) - set(FAULT_KINDS)
        if unknown or not kinds:
            raise ValueError(f"kinds must be a non-empty subset of {FAULT_KINDS}, got {kinds}")
        with self._lock:
            self._config = FaultConfig(
                failure_rate=failure_rate,
                latency=latency,
                kinds=kinds,
                retry_after=retry_after,
                methods=frozenset(m.upper() for m in methods) if methods is not None else None,
                paths=tuple(re.compile(p) for p in paths) if paths is not None else None,
            )
            self._random = random.Random(seed)
            self._released.clear()

    def clear(self) -> None:
        """Stop injecting faults and latency."""
        with self._lock:
            self._config = FaultConfig()
            self._released.set()

    def hang(self) -> None:
        """Hold a request without answering until the faults are cleared (or `_HANG_LIMIT` passes)."""
        self._released.wait(_HANG_LIMIT)

    def pick(self, method: str, path: str = "") -> str | None:
        """The fault to inject into a request with this HTTP method and path, or None to serve it normally."""
        with self._lock:
            config = self._config
            if config.failure_rate <= 0 or (config.methods is not None and method.upper() not in config.methods):
                return None
            if config.paths is not None and not any(p.search(path) for p in config.paths):
                return None
            if self._random.random() >= config.failure_rate:
                return None
            return self._random.choice(config.kinds)


@dataclass(frozen=True)
class HubStats:
    """A snapshot of the traffic seen by the local Hub since start (or the last `reset_stats`).

    Attributes:
        requests: HTTP requests received, including those answered with an injected fault.
        commits: Commits created through the commit endpoint (super-squash rewrites are not counted).
        bytes_received: Request body bytes, all endpoints together.
        bytes_sent: Response body bytes, all endpoints together (downloads, listings and every other answer).
        upload_bytes: File content bytes received: LFS upload bodies, decoded inline files of commits and Xet xorb
            bodies (compressed chunks, as sent).
        lfs_uploads: Objects uploaded through the legacy LFS protocol (one per upload PUT).
        xet_xorbs: Xorbs uploaded to the Xet CAS (including ones it already had).
        xet_xorb_bytes: Bytes of those xorbs, as sent (only new chunks, compressed): what dedup saves shows here.
        xet_shards: Shards uploaded to the Xet CAS (each describes the files of one upload).
        xet_reconstructions: Reconstruction requests to the Xet CAS: downloads through Xet (one per range asked).
        xet_tokens: Xet access tokens issued (read and write): a client refreshing its token asks again.
        xet_expired_tokens: CAS requests refused with 401 because their Xet token had expired.
        faults_injected: Requests answered with an injected fault.
        rate_limited: Commits refused with 429 because the repository's commit quota (`commit_limit`) was used up.
            Injected "429" faults are counted in `faults_injected`, not here.
        limit_rejections: Commits refused for breaking `max_files_per_commit` (413) or `max_folder_entries` (400).
        api_rate_limited: `/api/...` calls refused with 429 because the caller's API quota (`api_limit`) was used up.
        bucket_batches: Storage Bucket batch requests applied (`POST /api/buckets/{id}/batch`), partial ones included.
        bucket_operations: Operations (addFile, copyFile, deleteFile) in those batches, failed ones included.
        bucket_failed_operations: Those operations reported back in the batch's `failed` list.
        per_path_uploads: For each path in a repository, how many commits wrote it.
    """

    requests: int = 0
    commits: int = 0
    bytes_received: int = 0
    bytes_sent: int = 0
    upload_bytes: int = 0
    lfs_uploads: int = 0
    xet_xorbs: int = 0
    xet_xorb_bytes: int = 0
    xet_shards: int = 0
    xet_reconstructions: int = 0
    xet_tokens: int = 0
    xet_expired_tokens: int = 0
    faults_injected: int = 0
    rate_limited: int = 0
    limit_rejections: int = 0
    api_rate_limited: int = 0
    bucket_batches: int = 0
    bucket_operations: int = 0
    bucket_failed_operations: int = 0
    per_path_uploads: dict[str, int] = field(default_factory=dict)


class StatsRecorder:
    """Thread-safe counters behind `HubStats`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: Counter[str] = Counter()
        self._per_path: Counter[str] = Counter()

    def add(self, counter: str, amount: int = 1) -> None:
        """Increase one of the integer fields of `HubStats`."""
        with self._lock:
            self._counters[counter] += amount

    def record_commit(self, paths: Iterable[str]) -> None:
        """Count a commit and the paths it wrote."""
        with self._lock:
            self._counters["commits"] += 1
            self._per_path.update(paths)

    def snapshot(self) -> HubStats:
        """A consistent copy of all counters."""
        with self._lock:
            return HubStats(
                requests=self._counters["requests"],
                commits=self._counters["commits"],
                bytes_received=self._counters["bytes_received"],
                bytes_sent=self._counters["bytes_sent"],
                upload_bytes=self._counters["upload_bytes"],
                lfs_uploads=self._counters["lfs_uploads"],
                xet_xorbs=self._counters["xet_xorbs"],
                xet_xorb_bytes=self._counters["xet_xorb_bytes"],
                xet_shards=self._counters["xet_shards"],
                xet_reconstructions=self._counters["xet_reconstructions"],
                xet_tokens=self._counters["xet_tokens"],
                xet_expired_tokens=self._counters["xet_expired_tokens"],
                faults_injected=self._counters["faults_injected"],
                rate_limited=self._counters["rate_limited"],
                limit_rejections=self._counters["limit_rejections"],
                api_rate_limited=self._counters["api_rate_limited"],
                bucket_batches=self._counters["bucket_batches"],
                bucket_operations=self._counters["bucket_operations"],
                bucket_failed_operations=self._counters["bucket_failed_operations"],
                per_path_uploads=dict(self._per_path),
            )

    def reset(self) -> None:
        """Set every counter back to zero."""
        with self._lock:
            self._counters.clear()
            self._per_path.clear()
