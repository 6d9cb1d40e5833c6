"""Errors raised by the local Hub, each carrying the HTTP status and Hub error code it maps to."""

from __future__ import annotations


class HubError(Exception):
    """An error the local Hub reports to the client as an HTTP error response.

    Args:
        status: HTTP status code of the response.
        message: Human readable message, sent as `{"error": message}` and in `X-Error-Message`.
        code: Value of the `X-Error-Code` header; `huggingface_hub` maps some codes to typed exceptions.
        headers: Extra response headers (e.g. `X-Repo-Commit` on a missing entry).
    """

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = dict(headers or {})


class RepoNotFound(HubError):
    """The repository does not exist, or the caller may not see it (private)."""

    def __init__(self, *, anonymous: bool = False):
        # The Hub answers 401 to anonymous callers and 404 to authenticated ones, both with the same error code,
        # so that a private repo is indistinguishable from a missing one.
        super().__init__(401 if anonymous else 404, "Repository not found", "RepoNotFound")


class RevisionNotFound(HubError):
    """The branch, tag or commit does not exist in the repository."""

    def __init__(self, revision: str):
        super().__init__(404, f"Invalid rev id: {revision}", "RevisionNotFound")


class EntryNotFound(HubError):
    """The file or folder does not exist at the given revision."""

    def __init__(self, message: str, *, commit: str | None = None):
        super().__init__(404, message, "EntryNotFound", {"X-Repo-Commit": commit} if commit else None)


class BadRequest(HubError):
    """The request is malformed or asks for something the Hub refuses."""

    def __init__(self, message: str):
        super().__init__(400, message)
