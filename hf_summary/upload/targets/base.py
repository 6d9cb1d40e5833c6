"""The interface of a destination, as the pusher and the schedule use it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from huggingface_hub import CommitOperationAdd

    from ..plan import PlannedFile


class Pace:
    """How much a destination that answers 429 widens the interval between pushes: doubled at each 429 (up to 16
    times), narrowed back by a fifth at each push that lands."""

    MAX = 16.0

    def __init__(self) -> None:
        self.factor = 1.0

    def settle(self, error: BaseException | None) -> None:
        """Learn from a push's outcome (None: it landed)."""
        from ..errors import http_status, root_cause

        if error is None:
            self.factor = max(1.0, self.factor * 0.8)
        elif http_status(root_cause(error)) == 429:
            self.factor = min(self.factor * 2, self.MAX)


class Receipt(Protocol):
    """What a destination answers to a request that landed (a repo's `CommitInfo`)."""

    @property
    def oid(self) -> str: ...


class Target(Protocol):
    """Where the pusher sends files: a repo branch (commits), later a Storage Bucket (batches).

    The pusher plans, locks and records; a target only knows how its destination takes files and what it allows.
    """

    @property
    def name(self) -> str:
        """The destination in words a user recognises (the repo id), for messages."""
        ...

    def web_url(self, path: str = "") -> str:
        """Where a person sees `path` of the destination in a browser."""
        ...

    @property
    def ready(self) -> bool:
        """Whether `connect()` succeeded: the destination exists and took the token."""
        ...

    def connect(self) -> str:
        """Create the destination if missing (once); return its full id.

        Raises:
            HubAuthError: the token was rejected.
        """
        ...

    def room(self) -> int:
        """How many files the next request may carry."""
        ...

    def operation(self, path_in_repo: str, file: PlannedFile) -> CommitOperationAdd:
        """The operation that sends `file` (its valid prefix when it may still grow) to `path_in_repo`."""
        ...

    def send(self, operations: list[CommitOperationAdd], message: str) -> Receipt:
        """Send the files of one request; return its receipt (a commit's info) once the destination holds them.

        Raises:
            CommitNotConfirmed: the destination answered, but does not hold the files as sent.
            Exception: what the Hub answered; the pusher retries transient errors.
        """
        ...

    def finish(self, squash: list[bool | int]) -> None:
        """After a push that sent something: what the destination needs then (a repo squashes when asked)."""
        ...

    def holdback(self) -> float:
        """Seconds before the destination takes another request within its budget (0: now)."""
        ...

    def paced(self, interval: float) -> float:
        """The interval between scheduled pushes, widened while the destination answers 429."""
        ...

    def settle(self, error: BaseException | None) -> None:
        """Learn from a push's outcome (None: it succeeded), for `paced`."""
        ...
