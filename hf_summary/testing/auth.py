"""Access tokens of the local Hub and the permission rules applied to them."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from .errors import HubError, RepoNotFound
from .storage import RepoInfo


@dataclass(frozen=True)
class Identity:
    """The user behind a token, and whether the token may write."""

    token: str
    user: str
    write: bool


class TokenRegistry:
    """Maps access tokens to users. Thread-safe.

    Args:
        users: token -> user name; these tokens can write.
    """

    def __init__(self, users: dict[str, str]):
        if not users:
            raise ValueError("at least one token is required")
        self._lock = threading.Lock()
        self._tokens = {token: Identity(token, user, True) for token, user in users.items()}

    def add(self, token: str, user: str, *, write: bool = True) -> None:
        """Register (or replace) a token."""
        with self._lock:
            self._tokens[token] = Identity(token, user, write)

    def lookup(self, token: str) -> Identity | None:
        """The identity of a token, or None if the token is unknown."""
        with self._lock:
            return self._tokens.get(token)

    def first(self) -> Identity:
        """The first registered token."""
        with self._lock:
            return next(iter(self._tokens.values()))


def authenticate(registry: TokenRegistry, authorization: str | None) -> Identity | None:
    """The caller of a request from its `Authorization` header; None for anonymous calls.

    Raises:
        HubError: 401 for a header carrying an unknown token, on every endpoint, like the Hub.
    """
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    identity = registry.lookup(token.strip()) if scheme.lower() == "bearer" else None
    if identity is None:
        raise HubError(401, "Invalid credentials in Authorization header")
    return identity


def can_read(repo: RepoInfo, identity: Identity | None) -> bool:
    """Public repositories are readable by anyone, private ones by their owner only."""
    return not repo.private or (identity is not None and identity.user == repo.owner)


def require_read(repo: RepoInfo | None, identity: Identity | None) -> RepoInfo:
    """The repository if the caller may read it.

    Raises:
        RepoNotFound: the repository is missing or private to someone else (the Hub hides which one).
    """
    if repo is None or not can_read(repo, identity):
        raise RepoNotFound(anonymous=identity is None)
    return repo


def require_write(repo: RepoInfo | None, identity: Identity | None) -> tuple[RepoInfo, Identity]:
    """The repository and caller if the caller may write to it.

    Raises:
        RepoNotFound: the caller cannot even see the repository.
        HubError: 401 for anonymous callers, 403 for read-only tokens and other users' repositories.
    """
    repo = require_read(repo, identity)
    if identity is None:
        raise HubError(401, "You must be authenticated to write to this repository")
    if identity.user != repo.owner:
        raise HubError(403, f"You don't have the rights to write to {repo.key.repo_type} repo {repo.key.repo_id}")
    if not identity.write:
        raise HubError(403, "This token has read-only access; a token with write access is required")
    return repo, identity


def require_namespace_write(namespace: str, identity: Identity | None, repo_type: str) -> Identity:
    """The caller if it may create repositories under `namespace`.

    Raises:
        HubError: 401 for anonymous callers, 403 for read-only tokens and other namespaces.
    """
    if identity is None:
        raise HubError(401, "You must be authenticated to create a repository")
    if identity.user != namespace:
        raise HubError(403, f'You don\'t have the rights to create a {repo_type} under the namespace "{namespace}"')
    if not identity.write:
        raise HubError(403, "This token has read-only access; a token with write access is required")
    return identity
