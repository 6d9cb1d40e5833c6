"""The one retry policy: which Hub errors are transient, and how long to wait before trying again.

It answers two questions with one backoff: the delay between attempts inside a push, and the delay before the next
push after a push that failed. Every push uses it: the schedule of a live run, `hf-summary sync`, `watch` and the
companion.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from .errors import RetriesExhausted, describe, http_status

logger = logging.getLogger(__name__)

T = TypeVar("T")

_TRANSIENT_STATUS = frozenset({408, 409, 412, 423, 429, 500, 502, 503, 504})


def is_transient(error: BaseException) -> bool:
    """Whether trying again later may succeed: network errors, timeouts, 408/429/5xx, and commit races (409/412)."""
    import httpx2

    if isinstance(error, httpx2.LocalProtocolError):
        return False  # a request we cannot even send (a header value it refuses): the same each time
    if isinstance(error, httpx2.TransportError | TimeoutError | ConnectionError):
        return True
    status = http_status(error)
    if status is not None:
        return status in _TRANSIENT_STATUS
    # The client wraps some network failures in its own exceptions; their cause tells.
    cause = error.__cause__ or error.__context__
    return cause is not None and cause is not error and is_transient(cause)


def retry_after(error: BaseException | None) -> float | None:
    """Seconds the server asked us to wait: a 429's or 503's `Retry-After`, or its `RateLimit` reset when spent."""
    response = getattr(error, "response", None)
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    asked: float | None = None
    value = headers.get("Retry-After")
    try:
        asked = max(0.0, float(value)) if value is not None else None
    except ValueError:
        pass
    from huggingface_hub.utils import parse_ratelimit_headers

    limit = parse_ratelimit_headers(headers)
    if limit is not None and limit.remaining == 0:
        asked = max(asked or 0.0, float(limit.reset_in_seconds))
    return asked


def _sleep(seconds: float) -> bool:
    time.sleep(seconds)
    return False


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter, honouring Retry-After.

    Args:
        attempts: tries in one push, the first included.
        base: the first delay's upper bound, in seconds; doubled at each retry.
        cap: no delay inside a push is longer than this.
        rng: the source of jitter (a `random.Random`), for tests that need the same delays each time.

    Example:
        ```py
        >>> policy = RetryPolicy(attempts=3)
        >>> policy.call(lambda: api.create_commit(...), what="Commit")   # retries 5xx, 429 and dropped connections
        ```
    """

    attempts: int = 6
    base: float = 0.5
    cap: float = 30.0
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def delay(self, retry: int, error: BaseException | None = None) -> float:
        """Seconds to wait before retry number `retry` (0 for the first) inside one push."""
        wait = self.rng.uniform(self.base / 2, min(self.cap, self.base * 2**retry))
        asked = retry_after(error)
        return min(self.cap, max(wait, asked)) if asked is not None else wait

    def next_push_delay(self, failures: int, interval: float, error: BaseException | None = None) -> float:
        """Seconds from a failed push to the next one, after `failures` failed pushes in a row (>= 1).

        The same backoff as inside a push, from `cap` on: sooner than the interval, so pending files do not wait a
        whole interval, and never sooner than the server asked.
        """
        wait = min(interval, self.cap * 2 ** min(failures - 1, 16))
        asked = retry_after(error)
        return max(wait, asked) if asked is not None else wait

    def call(
        self,
        fn: Callable[[], T],
        *,
        what: str,
        deadline: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], bool] = _sleep,
    ) -> T:
        """Call `fn`, retrying transient errors until it succeeds, the attempts run out or `deadline` passes.

        Args:
            fn: the call to make.
            what: what the call does, for the log.
            deadline: a `clock()` value after which no retry starts.
            clock: the clock `deadline` is read on.
            sleep: waits the given seconds; returns True to stop retrying (a stop request came).

        Raises:
            RetriesExhausted: the deadline passed or `sleep` reported a stop; the last error is the cause.
            Exception: a permanent error at once, or the last transient one when the attempts ran out.
        """
        for retry in range(self.attempts):
            try:
                return fn()
            except Exception as error:
                if not is_transient(error) or retry == self.attempts - 1:
                    raise
                asked = retry_after(error)
                if asked is not None and asked > self.cap:
                    raise  # a quota spent for minutes: the next push waits for it, no retry hammers it meanwhile
                delay = self.delay(retry, error)
                if deadline is not None and clock() + delay > deadline:
                    raise RetriesExhausted(f"{what}: no time left to retry before the deadline") from error
                # Info, not a warning: a transient error retried is routine, and the training log stays clean.
                logger.info("%s failed (%s); retry %d/%d in %.1fs", what, describe(error), retry + 1,
                               self.attempts - 1, delay)
                if sleep(delay):
                    raise RetriesExhausted(f"{what}: stopped while waiting to retry") from error
        raise AssertionError("unreachable")

