"""The Hub refusing a token: which token it was, in words a user can act on, and what to do."""

from __future__ import annotations

import os
from types import TracebackType

from .errors import HubAuthError, http_status


def token_source(token: str | None, option: str = "`token=`") -> str | None:
    """Where huggingface_hub takes the token from, in words a user can act on; None when there is no token."""
    if token:
        return f"the token passed with {option}"
    if os.environ.get("HF_TOKEN"):
        return "the HF_TOKEN environment variable"
    if os.environ.get("HUGGING_FACE_HUB_TOKEN"):
        return "the HUGGING_FACE_HUB_TOKEN environment variable"
    from huggingface_hub import constants

    if os.path.exists(constants.HF_TOKEN_PATH):
        return f"the token saved by `hf auth login` in {constants.HF_TOKEN_PATH}"
    return None


class AuthErrors:
    """Turns 401/403 into a HubAuthError that says which token was used and what to do."""

    def __init__(self, action: str, token: str | None, option: str) -> None:
        self._action = action
        self._token = token
        self._option = option

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
                 ) -> None:
        if exc is not None and http_status(exc) in (401, 403):
            source = token_source(self._token, self._option)
            if source is None:
                raise HubAuthError(
                    f"The Hub refused to {self._action} (HTTP {http_status(exc)}): you are not logged in. Run "
                    f"`hf auth login`, set HF_TOKEN, or pass a token with {self._option}."
                ) from None
            raise HubAuthError(
                f"The Hub refused to {self._action} (HTTP {http_status(exc)}) with {source}. Check that this token "
                "exists and has write access to the repo's namespace, or pass another one with "
                f"{self._option} / `hf auth login`."
            ) from None
