"""The Hub's per-user request quota, as its answers tell it, and the push spacing that keeps within it.

Every answer of the Hub's API carries `RateLimit: "api";r=<remaining>;t=<seconds to reset>` (Hub docs: rate-limits;
huggingface_hub 2.4 `utils/_http.parse_ratelimit_headers`), for fixed 5-minute windows per user: 1 000 requests for
a free account. A sweep pushing to a bucket every few seconds from many processes would spend it and meet 429s. So
the answers to our pushes are read as they arrive (a response hook on huggingface_hub's shared client that only
reads headers, and only of requests made by our threads), and the schedule spaces pushes so that the requests a
push costs fit in what remains of the window once the user's other processes and machines have spent theirs (their
pace is read from how fast the remaining count falls), with a reserve left for the user's own calls. Near the end
of the quota freshness degrades; nothing is dropped.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from .hooks import THREAD_PREFIX

RESERVE = 0.1  # of the window's quota, left to the user's own calls and to the final pushes


class Quota:
    """What the Hub's answers to our requests said of the user's request quota.

    Args:
        clock: seconds on a monotonic clock.

    Example:
        ```py
        >>> quota = Quota()
        >>> quota.install()                      # our threads' answers are read from now on
        >>> quota.spacing(requests_per_push=2)   # seconds between pushes that the quota allows
        0.0
        ```
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self.requests = 0  # answers our threads received: the schedule counts a push's cost with it
        self.remaining: int | None = None
        self.limit: int | None = None
        self.reset_at = 0.0  # a clock() value: when the window's quota comes back
        # Requests a second that the user's other processes and machines spend from the same quota: what the
        # remaining count fell by between two of our answers, less our own requests meanwhile.
        self.others_rate = 0.0
        self._last: tuple[float, int, int] | None = None  # clock(), remaining, our requests: at the last reading

    def observe(self, response: Any) -> None:
        """Read one answer's RateLimit headers, if the request was ours (a response hook of huggingface_hub's)."""
        if not threading.current_thread().name.startswith(THREAD_PREFIX):
            return
        from huggingface_hub.utils import parse_ratelimit_headers

        info = parse_ratelimit_headers(response.headers)
        with self._lock:
            self.requests += 1
            if info is None or info.resource_type != "api":
                return
            now = self._clock()
            if self._last is not None and info.remaining <= self._last[1] and now > self._last[0]:
                at, remaining, ours = self._last
                others = max(0, remaining - info.remaining - (self.requests - ours)) / (now - at)
                self.others_rate = 0.7 * self.others_rate + 0.3 * others
            # else: the first reading, or a new window (more remains than before): nothing to compare
            self._last = (now, info.remaining, self.requests)
            self.remaining, self.limit = info.remaining, info.limit
            self.reset_at = now + info.reset_in_seconds

    def install(self) -> None:
        """Read the answers of huggingface_hub's shared client (again, if the user replaced it)."""
        from huggingface_hub.utils import get_session

        hooks = get_session().event_hooks["response"]
        if self.observe not in hooks:
            hooks.append(self.observe)

    def spacing(self, requests_per_push: float) -> float:
        """Seconds between two pushes so that pushes costing `requests_per_push` last until the window resets."""
        with self._lock:
            remaining, limit, left = self.remaining, self.limit, self.reset_at - self._clock()
            others = self.others_rate
        if remaining is None or left <= 0:
            return 0.0
        # What the others will spend until the reset is not ours to spend: each machine leaves the others their pace.
        usable = remaining - RESERVE * (limit or 0) - others * left
        if usable < requests_per_push:
            return left  # the window's quota is spent for us: the next push waits for its reset
        return left / (usable / max(requests_per_push, 1.0))
