"""Retrying transient Hub failures: which errors are transient, and exponential backoff with jitter."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")

_TRANSIENT_STATUS = {408, 409, 423, 429, 500, 502, 503, 504}


def http_status(error: BaseException) -> int | None:
    """The HTTP status carried by a huggingface_hub error, if any."""
    response = getattr(error, "response", None)
    return getattr(response, "status_code", None)


def is_transient(error: BaseException) -> bool:
    """Whether trying again later may succeed: network errors, timeouts, 408/429/5xx, and commit races (409/412)."""
    import httpx2

    if isinstance(error, httpx2.TransportError | TimeoutError | ConnectionError):
        return True
    status = http_status(error)
    if status is not None:
        return status in _TRANSIENT_STATUS or status == 412
    # The client wraps some network failures in its own exceptions; their cause tells.
    cause = error.__cause__ or error.__context__
    return cause is not None and cause is not error and is_transient(cause)


def retry_after(error: BaseException) -> float | None:
    """Seconds the server asked us to wait (a 429's or 503's Retry-After header)."""
    response = getattr(error, "response", None)
    value = getattr(response, "headers", {}).get("Retry-After") if response is not None else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter, honouring Retry-After.

    Args:
        attempts: tries in all, the first included.
        base: the first delay's upper bound, in seconds; doubled at each retry.
        cap: no delay is longer than this.
    """

    attempts: int = 6
    base: float = 0.5
    cap: float = 30.0

    def delay(self, retry: int, error: BaseException | None = None) -> float:
        wait = random.uniform(self.base / 2, min(self.cap, self.base * 2**retry))
        asked = retry_after(error) if error is not None else None
        return min(self.cap, max(wait, asked)) if asked is not None else wait


class RetriesExhausted(Exception):
    """Raised when a deadline or a stop request ends the retries; the last error is the cause."""


def call_with_retries(
    fn: Callable[[], T],
    backoff: Backoff,
    *,
    what: str,
    stop: threading.Event | None = None,
    deadline: float | None = None,
    on_retry: Callable[[BaseException], None] | None = None,
) -> T:
    """Call `fn`, retrying transient errors with backoff until it succeeds, attempts run out, `stop` is set or
    `deadline` (a `time.monotonic()` value) passes. Permanent errors are raised at once.
    """
    for retry in range(backoff.attempts):
        try:
            return fn()
        except Exception as error:
            if not is_transient(error) or retry == backoff.attempts - 1:
                raise
            delay = backoff.delay(retry, error)
            if deadline is not None and time.monotonic() + delay > deadline:
                raise RetriesExhausted(f"{what}: no time left to retry before the deadline") from error
            logger.warning("%s failed (%s); retry %d/%d in %.1fs", what, _short(error), retry + 1,
                           backoff.attempts - 1, delay)
            if on_retry is not None:
                on_retry(error)
            if stop is not None:
                if stop.wait(delay):
                    raise RetriesExhausted(f"{what}: stopped while waiting to retry") from error
            else:
                time.sleep(delay)
    raise AssertionError("unreachable")


def _short(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"
