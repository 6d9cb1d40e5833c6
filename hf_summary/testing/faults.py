"""Fault injection and traffic statistics of the local Hub."""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

# "drop" closes the connection before the request is processed; "drop_after" processes it (e.g. the commit is
# created) and then closes the connection without answering, like a response lost on the way back.
FAULT_KINDS = ("500", "503", "429", "drop", "drop_after")
DEFAULT_FAULT_KINDS = ("500", "503", "429", "drop")


@dataclass(frozen=True)
class FaultConfig:
    """Current fault settings. See `LocalHub.set_faults` for the meaning of each field."""

    failure_rate: float = 0.0
    latency: float = 0.0
    kinds: tuple[str, ...] = DEFAULT_FAULT_KINDS
    retry_after: int = 1
    methods: frozenset[str] | None = None


class FaultInjector:
    """Decides, request by request, whether to inject a fault. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._config = FaultConfig()
        self._random = random.Random()

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
            )
            self._random = random.Random(seed)

    def clear(self) -> None:
        """Stop injecting faults and latency."""
        with self._lock:
            self._config = FaultConfig()

    def pick(self, method: str) -> str | None:
        """The fault to inject into a request with this HTTP method, or None to serve it normally."""
        with self._lock:
            config = self._config
            if config.failure_rate <= 0 or (config.methods is not None and method.upper() not in config.methods):
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
        upload_bytes: File content bytes received: LFS upload bodies plus decoded inline files of commits.
        faults_injected: Requests answered with an injected fault.
        per_path_uploads: For each path in a repository, how many commits wrote it.
    """

    requests: int = 0
    commits: int = 0
    bytes_received: int = 0
    upload_bytes: int = 0
    faults_injected: int = 0
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
                upload_bytes=self._counters["upload_bytes"],
                faults_injected=self._counters["faults_injected"],
                per_path_uploads=dict(self._per_path),
            )

    def reset(self) -> None:
        """Set every counter back to zero."""
        with self._lock:
            self._counters.clear()
            self._per_path.clear()
