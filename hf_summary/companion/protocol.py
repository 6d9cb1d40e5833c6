"""What the training process and its companion say to each other: JSON lines on a Unix socket (and, with `attach`, a
ring's file descriptor).

Training process → companion; each request carries `req`, echoed by its answer (`answer`), which may come at once
or, for a push, when it ends:

- `watch` (`Watch`): a logdir to push if the training process ends before `release`. With `live` (`Live`), the
  companion also runs its schedule: it joins the logdir to the schedule of its target (one per repo and branch, as
  writers of one process share one) and answers once it has reached the Hub (`connected`: the target's full name),
  or with the error that stopped it.
- `release`: the writer closed and its final push ran; the companion forgets the logdir (no answer).
- `attach` (`Attach`, with the ring's descriptor), `flush`, `detach`: a writer's ring (events/handoff.py), written
  to event files by the companion; `nudge`: a writer waits for room, read the rings now (no answer).
- `trigger`, `next_push`, `close`, `stop` (`Push`): a live logdir's push, asked for by the writer's handle
  (`client.RemoteMember`): `trigger` first has everything the ring holds below `upto` written; the answer carries
  the push's outcome (`result` or `error`, see `outcome_of` / `future_outcome`).

The token travels only in `watch`: never in the companion's argv, environment, logs or files.

This module imports only the standard library and the package's own error classes (no huggingface_hub): the
companion reads it while it waits.
"""

from __future__ import annotations

import json
import socket
from concurrent.futures import Future
from typing import Any, Literal, TypedDict

# A send to a companion that died must fail with an error, not kill the training process with SIGPIPE (a program may
# have restored SIGPIPE's default action). macOS has no MSG_NOSIGNAL; Python ignores SIGPIPE there by default.
NOSIGNAL = getattr(socket, "MSG_NOSIGNAL", 0)
# Variables the companion's environment leaves out (environments of processes can be listed); `watch` carries them.
TOKEN_VARIABLES = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")


class Live(TypedDict):
    """What a writer asked of its schedule (`watch`'s `live`)."""

    every: float  # minutes between pushes
    push_timeout: float | None
    max_file_size: int | None  # the roll size; None for the default of the upload path


class _WatchFields(TypedDict):
    op: Literal["watch"]
    id: int
    logdir: str
    spec: dict[str, Any]
    token: str | None
    timeout: float
    max_commits_per_hour: int | None
    environ: dict[str, str]


class Watch(_WatchFields, total=False):
    req: int  # with `live`: answered once the schedule reached the Hub
    live: Live


class Attach(TypedDict):
    op: Literal["attach"]
    id: int
    req: int
    logdir: str
    suffix: str
    pid: int


class _PushFields(TypedDict):
    op: Literal["trigger", "next_push", "close", "stop"]
    req: int
    watch: int


class Push(_PushFields, total=False):
    timeout: float | None  # seconds before the push's answer is a `PushError`
    ring: int  # `trigger`: the writer's ring, and the mark below which everything it holds is in the push
    upto: int


def encode(message: Any) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


NUDGE = encode({"op": "nudge"})


# A push's outcome, across the socket ---------------------------------------------------------------------------------


def outcome_of(future: Future) -> dict[str, Any]:
    """A settled push Future as the fields of an answer: `result` (a receipt's fields, or None) or `error`."""
    error = future.exception()
    if error is None:
        result = future.result()
        if result is None:
            return {"result": None}
        fields = {name: getattr(result, name, None) for name in _RECEIPT_FIELDS}
        return {"result": {"kind": type(result).__name__, **fields}}
    from ..upload.errors import describe, root_cause

    cause = root_cause(error)
    return {"error": {
        "type": type(error).__name__, "message": str(error), "reason": getattr(error, "reason", None),
        "sync_command": getattr(error, "sync_command", None), "cause": describe(error),
        "cause_type": type(cause).__name__, "status": getattr(getattr(cause, "response", None), "status_code", None),
    }}


def future_outcome(future: Future, answer: dict[str, Any]) -> None:
    """Settle `future` as the companion's `answer` says: a receipt like the one the push returned, or its error."""
    if future.done():
        return
    error = answer.get("error")
    if error is None:
        future.set_result(_receipt(answer.get("result")))
    else:
        future.set_exception(error_of(error))


def error_of(error: dict[str, Any] | str) -> BaseException:
    """The exception a push raised in the companion, as the same class here; its cause is told in its text and as
    a `CompanionCause` (the Hub's error object stays in the companion)."""
    from ..upload import errors

    if isinstance(error, str):
        return errors.PushError(f"The companion process could not push ({error})", "hf-summary sync LOGDIR REPO_ID")
    kind = error.get("type")
    made: BaseException
    if kind in ("PushError", "BudgetSpent") and error.get("reason") is not None:
        made = getattr(errors, kind)(error["reason"], error.get("sync_command") or "")
    elif kind in ("SchedulerStopped", "HubAuthError"):
        made = getattr(errors, kind)(error.get("message", ""))
    else:
        made = errors.PushError(f"The push failed ({error.get('cause')})", error.get("sync_command") or "")
    made.__cause__ = CompanionCause(error.get("cause_type") or "", error.get("cause") or "", error.get("status"))
    return made


class CompanionCause(Exception):
    """What the Hub answered to a push the companion made, told across the process boundary.

    Attributes:
        type_name: the class name of the error in the companion (`HfHubHTTPError`, `ConnectError`, ...).
        status: its HTTP status, if it had one.
    """

    def __init__(self, type_name: str, text: str, status: int | None) -> None:
        super().__init__(text)
        self.type_name = type_name
        self.status = status
        self.response = _Response(status) if status is not None else None


class _Response:
    """Enough of an HTTP response for `errors.http_status` to read the status of a `CompanionCause`."""

    def __init__(self, status_code: int) -> None:
        self.status_code = status_code


_RECEIPT_FIELDS = ("oid", "commit_url", "commit_message", "commit_description", "pr_url")


def _receipt(fields: dict[str, Any] | None) -> Any:
    if fields is None:
        return None
    if fields.get("kind") == "CommitInfo":
        from huggingface_hub import CommitInfo

        return CommitInfo(commit_url=fields["commit_url"], commit_message=fields["commit_message"],
                          commit_description=fields["commit_description"] or "", oid=fields["oid"],
                          pr_url=fields.get("pr_url"))
    from ..upload.targets.bucket import BatchReceipt

    return BatchReceipt(fields["oid"])
