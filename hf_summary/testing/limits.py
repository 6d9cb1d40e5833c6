"""Limits of the real Hub the local Hub can enforce, on request: commits per repository in a sliding window, file
operations per commit and entries per folder.

What the real Hub answers (and where that is known from):

- Commit quota: HTTP 429, "You have exceeded our hourly quotas for action: commit. We invite you to retry later."
  (huggingface/datasets#6257, huggingface_hub#3186, #2587). The quota is per repository, 128 commits per hour
  (huggingface_hub#3010; braindecode/braindecode#947 quotes a newer wording, "You have exceeded the rate limit for
  repository commits (128 per hour)").
- Files per commit: no hard limit; the Hub advises < 100 files per commit over HTTP because larger commits run into the
  60 s request timeout (hub-docs, storage-limits.md). Historically an oversized commit payload got 413 Payload Too
  Large (huggingface_hub#918, #1085), the only "too big" answer the commit endpoint is known to have given.
- Entries per folder: 10 000 (hub-docs, storage-limits.md); a commit going above is refused with HTTP 400 and
  "Your push was rejected because it contains too many files per directory. ..." (huggingface/datasets#7956).
- Per-user API rate limit (Hub docs, https://huggingface.co/docs/hub/rate-limits): requests are counted per user in
  fixed 5-minute windows, in three buckets; "Hub APIs" (every `/api/...` endpoint, commits and bucket batches
  included) allows 1 000 requests per window to a free user, 2 500 to a PRO user. Every answer carries
  `RateLimit: "api";r=<remaining>;t=<seconds until the reset>` and `RateLimit-Policy: "fixed window";"api";q=<quota>;
  w=300`; past the quota the answer is 429. huggingface_hub parses exactly this syntax
  (`utils/_http.py` `parse_ratelimit_headers`, regexes `_RATELIMIT_REGEX`, `_RATELIMIT_POLICY_REGEX`), reports a 429
  whose `r` is 0 as "you have reached your 'api' rate limit" (`hf_raise_for_status`) and, in `http_backoff`, sleeps
  `t` + 1 seconds before retrying such a 429.
"""

from __future__ import annotations

import bisect
import math
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from .errors import HubError
from .storage import FileEntry, RepoKey

# The real Hub's values, for `LocalHub(commit_limit=HUB_COMMIT_LIMIT, ...)`.
HUB_COMMIT_LIMIT: tuple[int, float] = (128, 3600.0)
HUB_MAX_FOLDER_ENTRIES = 10_000
HUB_RECOMMENDED_FILES_PER_COMMIT = 100
HUB_API_LIMIT: tuple[int, float] = (1000, 300.0)  # a free user's "api" quota (Hub docs, rate-limits)

COMMIT_QUOTA_MESSAGE = "You have exceeded our hourly quotas for action: commit. We invite you to retry later."
# Name of the quota in the RateLimit headers; huggingface_hub shows it as "you have reached your 'commit' rate limit".
RATELIMIT_RESOURCE = "commit"
API_RATELIMIT_RESOURCE = "api"
API_QUOTA_MESSAGE = "You have exceeded our rate limit for API requests ('api')."


class LimitExceeded(HubError):
    """A commit refused by one of the limits set with `LocalHub.set_limits` (counted in `HubStats`)."""


class CommitRateLimited(LimitExceeded):
    """The repository's commit quota is used up (HTTP 429)."""


class ApiRateLimited(HubError):
    """The caller's API quota for the current window is used up (HTTP 429, counted in `HubStats.api_rate_limited`)."""


@dataclass(frozen=True)
class HubLimits:
    """The limits in force; None disables a limit. See `LocalHub.set_limits` for the meaning of each field.

    Raises:
        ValueError: a count below 1 or a window that is not a positive number of seconds.
    """

    commit_limit: tuple[int, float] | None = None
    max_files_per_commit: int | None = None
    max_folder_entries: int | None = None
    api_limit: tuple[int, float] | None = None

    def __post_init__(self) -> None:
        for name in ("commit_limit", "api_limit"):
            limit = getattr(self, name)
            if limit is not None:
                count, window = limit
                if int(count) != count or count < 1 or not window > 0 or math.isinf(window):
                    raise ValueError(f"{name} must be (count >= 1, window > 0 seconds), got {limit}")
                object.__setattr__(self, name, (int(count), float(window)))
        for name in ("max_files_per_commit", "max_folder_entries"):
            value = getattr(self, name)
            if value is not None and (int(value) != value or value < 1):
                raise ValueError(f"{name} must be an integer >= 1 or None, got {value}")


@dataclass(frozen=True)
class CommitSlot:
    """A place in a repository's commit window, taken by a commit in progress.

    Attributes:
        key: The repository.
        stamp: `time.monotonic()` when the commit was accepted; identifies the slot.
        headers: `RateLimit` headers for the success response (empty when no commit limit is set).
    """

    key: RepoKey
    stamp: float
    headers: dict[str, str] = field(default_factory=dict)


class CommitLimiter:
    """Counts commits per repository and enforces `HubLimits.commit_limit` over a sliding window; counts API calls per
    caller and enforces `HubLimits.api_limit` over fixed windows. Thread-safe.

    Every commit made through the commit endpoint is recorded, limit or not, so that a limit set at runtime counts the
    commits made just before, and so that tests can read when each commit happened (`commit_times`). API calls are
    only counted while an API limit is set; `configure` starts every caller's window afresh.
    """

    def __init__(self, limits: HubLimits | None = None) -> None:
        self._lock = threading.Lock()
        self._limits = limits or HubLimits()
        # Per repository, in acceptance order: monotonic stamps (for the window) and wall-clock times (for reports).
        self._stamps: dict[RepoKey, list[float]] = {}
        self._times: dict[RepoKey, list[float]] = {}
        # Per caller: (monotonic start of its current window, calls counted in it).
        self._api_windows: dict[str, tuple[float, int]] = {}

    @property
    def limits(self) -> HubLimits:
        """The limits in force."""
        return self._limits

    def configure(self, limits: HubLimits) -> None:
        """Replace the limits; commits already recorded keep counting against the new window, API windows restart."""
        with self._lock:
            self._limits = limits
            self._api_windows.clear()

    def take_api_call(self, caller: str) -> dict[str, str]:
        """Count one `/api/...` call of `caller` (a user name, or an address for anonymous calls).

        Windows are fixed, per caller, as on the Hub: a caller's window opens with its first call and its quota comes
        back whole when the window ends (`t` counts down to that instant).

        Returns:
            The `RateLimit` / `RateLimit-Policy` headers of the answer; empty when no API limit is set.

        Raises:
            ApiRateLimited: the quota of the current window is used up; the error carries the same headers (`r=0`)
                and `Retry-After`.
        """
        with self._lock:
            limit = self._limits.api_limit
            if limit is None:
                return {}
            quota, window = limit
            now = time.monotonic()
            start, used = self._api_windows.get(caller, (now, 0))
            if now >= start + window:
                start, used = now, 0
            # Bounded by the window: `start + window - now` is a hair over `window` at the window's first call (floats).
            reset = min(math.ceil(window), max(1, math.ceil(start + window - now)))
            if used >= quota:
                self._api_windows[caller] = (start, used)
                headers = {"Retry-After": str(reset), **_api_headers(0, reset, quota, window)}
                raise ApiRateLimited(429, f"{API_QUOTA_MESSAGE} Retry after {reset} seconds.", headers=headers)
            self._api_windows[caller] = (start, used + 1)
            return _api_headers(quota - used - 1, reset, quota, window)

    def acquire(self, key: RepoKey) -> CommitSlot:
        """Take a slot in the repository's window for a commit about to be created.

        Raises:
            CommitRateLimited: the window is full; the error carries `Retry-After` and `RateLimit` headers.
        """
        with self._lock:
            now = time.monotonic()
            stamps = self._stamps.setdefault(key, [])
            limit = self._limits.commit_limit
            if limit is None:
                stamps.append(now)
                self._times.setdefault(key, []).append(time.time())
                return CommitSlot(key, now)
            count, window = limit
            recent = stamps[bisect.bisect_right(stamps, now - window) :]
            if len(recent) >= count:
                # A slot frees when enough of the recent commits leave the window for one more to fit; after a limit
                # lowered at runtime that can be more than the oldest one.
                frees_at = recent[len(recent) - count] + window
                retry_after = max(1, math.ceil(frees_at - now))
                headers = {"Retry-After": str(retry_after), **_ratelimit_headers(0, retry_after, count, window)}
                raise CommitRateLimited(429, COMMIT_QUOTA_MESSAGE, headers=headers)
            stamps.append(now)
            self._times.setdefault(key, []).append(time.time())
            # The oldest commit still in the window is the next to leave it, giving back one slot.
            reset = min(math.ceil(window), max(1, math.ceil(recent[0] + window - now))) if recent else math.ceil(window)
            return CommitSlot(key, now, _ratelimit_headers(count - len(recent) - 1, reset, count, window))

    def release(self, slot: CommitSlot) -> None:
        """Give the slot back: the commit was not created (refused or failed), so it does not count."""
        with self._lock:
            stamps = self._stamps.get(slot.key, [])
            index = bisect.bisect_left(stamps, slot.stamp)
            if index < len(stamps) and stamps[index] == slot.stamp:
                del stamps[index]
                del self._times[slot.key][index]

    def commit_times(self, key: RepoKey) -> list[float]:
        """Wall-clock times (`time.time()`) at which the repository's commits were accepted, oldest first."""
        with self._lock:
            return list(self._times.get(key, []))


def _ratelimit_headers(remaining: int, reset: int, count: int, window: float) -> dict[str, str]:
    """The IETF draft headers, in the Hub's syntax (hub-docs, rate-limits.md): `RateLimit: "<bucket>";r=..;t=..` and
    `RateLimit-Policy: "<policy>";"<bucket>";q=..;w=..`, parsed by `huggingface_hub.utils.parse_ratelimit_headers`.

    The Hub's own buckets ("api", "resolvers", "pages") are fixed 5-minute windows; this quota is a sliding window, and
    says so, so `t` is the time until one slot frees rather than until a reset of the whole quota.
    """
    return {
        "RateLimit": f'"{RATELIMIT_RESOURCE}";r={remaining};t={reset}',
        "RateLimit-Policy": f'"sliding window";"{RATELIMIT_RESOURCE}";q={count};w={math.ceil(window)}',
    }


def _api_headers(remaining: int, reset: int, quota: int, window: float) -> dict[str, str]:
    """The Hub's "api" headers (hub-docs, rate-limits.md), in the form `parse_ratelimit_headers` reads."""
    return {
        "RateLimit": f'"{API_RATELIMIT_RESOURCE}";r={remaining};t={reset}',
        "RateLimit-Policy": f'"fixed window";"{API_RATELIMIT_RESOURCE}";q={quota};w={math.ceil(window)}',
    }


def check_files_per_commit(operations: int, limits: HubLimits) -> None:
    """Refuse a commit with more file operations than `limits.max_files_per_commit`.

    Raises:
        LimitExceeded: 413, the status the commit endpoint gave to oversized commits; the real Hub has no hard count
            limit, its oversized commits time out instead, which a test cannot wait for.
    """
    limit = limits.max_files_per_commit
    if limit is not None and operations > limit:
        raise LimitExceeded(
            413,
            f"Payload Too Large: this commit has {operations} file operations, more than the {limit} this Hub accepts "
            f"in one commit (max_files_per_commit). The Hub recommends fewer than {HUB_RECOMMENDED_FILES_PER_COMMIT} "
            "files per commit over HTTP: split the upload into several commits.",
        )


def check_folder_entries(
    before: dict[str, FileEntry], after: dict[str, FileEntry], *, ref: str, limits: HubLimits
) -> None:
    """Refuse a commit that leaves a folder with more entries (files and subfolders) than `limits.max_folder_entries`.

    Only folders the commit made bigger are checked, so that a limit lowered at runtime still lets a commit shrink (or
    leave alone) a folder that is already above it.

    Args:
        before: File table at the parent commit.
        after: File table the commit would create.
        ref: Full name of the ref receiving the commit, quoted in the message like the Hub does.
        limits: The limits in force.

    Raises:
        LimitExceeded: 400 with the Hub's message.
    """
    limit = limits.max_folder_entries
    if limit is None:
        return
    old, new = _entries_per_folder(before), _entries_per_folder(after)
    offending = sorted(
        folder for folder, entries in new.items() if len(entries) > limit and len(entries) > len(old.get(folder, ()))
    )
    if offending:
        folders = ", ".join(f"/{folder}/" if folder else "/" for folder in offending)
        raise LimitExceeded(
            400,
            "Your push was rejected because it contains too many files per directory. Each directory in your git "
            f"repo can only contain up to {limit} files. Offending reference: {ref} Offending directories: {folders}",
        )


def _entries_per_folder(paths: Iterable[str]) -> dict[str, set[str]]:
    """Names directly inside each folder ("" is the root), git tree style: files and subfolders alike."""
    entries: dict[str, set[str]] = {}
    for path in paths:
        parts = PurePosixPath(path).parts
        for depth, name in enumerate(parts):
            entries.setdefault("/".join(parts[:depth]), set()).add(name)
    return entries
