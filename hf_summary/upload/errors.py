"""The upload side's errors, and the one way they are told to a user: without tokens, first line first.

Every module of the upload side may import this one; it imports none of them, so that the Hub client, the retry
policy and the pusher share their errors without importing each other.
"""

from __future__ import annotations

import re
from typing import Any

_SECRETS = re.compile(r"(Bearer\s+)[^\s'\",}]+|\bhf_[A-Za-z0-9]{8,}")


def redact(text: str) -> str:
    """`text` with anything that looks like a token replaced: error texts of the HTTP layer may quote headers."""
    return _SECRETS.sub(lambda m: (m.group(1) or "") + "***", text)


def http_status(error: BaseException) -> int | None:
    """The HTTP status carried by a huggingface_hub error, if any."""
    response = getattr(error, "response", None)
    return getattr(response, "status_code", None)


def root_cause(error: BaseException) -> BaseException:
    """What the Hub answered last, looking through the errors that only say the retries ended."""
    while isinstance(error, RetriesExhausted | PushError) and error.__cause__ is not None:
        error = error.__cause__
    return error


def describe(error: BaseException) -> str:
    """One line for a log or a message: the error's type and the first line of its text, tokens redacted."""
    cause = root_cause(error)
    text = redact(str(cause)).strip().splitlines()
    return f"{type(cause).__name__}: {text[0]}" if text else type(cause).__name__


class HubAuthError(PermissionError):
    """The Hub rejected the token (401/403). The message names where the token came from, never the token."""


class CommitNotConfirmed(ConnectionError):
    """The Hub answered a commit, but its branch does not hold the files: nothing is recorded, the push retries."""


class RetriesExhausted(Exception):
    """A deadline or a stop request ended the retries; the last error is the cause."""


class SchedulerStopped(RuntimeError):
    """The writer's pushes are stopped: nothing more is pushed by it. `hf-summary sync` pushes what is left."""


class PushError(Exception):
    """A push that gave up: it failed, or found no answer from the Hub within its time limit.

    Nothing is lost: the files stay on disk and pending, for the next push or for `sync_command`. The cause (the
    Hub's error, when there was one) is the exception's `__cause__`.

    Attributes:
        reason: what went wrong, in one sentence.
        sync_command: the shell command that uploads what is pending.

    Example:
        ```py
        >>> try:
        ...     writer.scheduler.trigger().result()
        ... except hf_summary.PushError as error:
        ...     print("pushed later; or now with:", error.sync_command)
        ```
    """

    def __init__(self, reason: str, sync_command: str) -> None:
        super().__init__(f"{reason}. Nothing is lost: the files stay pending on disk for the next push, or upload "
                         f"them with: {sync_command}")
        self.reason = reason
        self.sync_command = sync_command


class BudgetSpent(PushError):
    """A final push the commit budget could not take within its time limit: the companion process pushes it later."""


class PartlySent(ConnectionError):
    """A request the destination took only in part (a bucket's batch is not transactional): the files it took are
    recorded, the others stay pending and the push tries them again.

    Attributes:
        receipt: what the files it took are recorded as.
        failed: the destination paths it did not take.
    """

    def __init__(self, receipt: Any, failed: set[str], cause: BaseException) -> None:
        super().__init__(f"{len(failed)} file(s) were not taken: {describe(cause)}")
        self.receipt = receipt
        self.failed = failed


class Refused(Exception):
    """The Hub refused a run's files for good (a 4xx that no retry fixes): that run is not sent again this process.

    Attributes:
        folder: the destination folder the Hub refused.
    """

    def __init__(self, folder: str, error: BaseException) -> None:
        super().__init__(
            f"The Hub refused the files of '{folder}' ({describe(error)}). They stay on disk and are not sent again by "
            "this process; fix the cause (for too many files in one folder: a larger max_file_size, or another "
            "path_in_repo), then upload them with `hf-summary sync`")
        self.folder = folder
