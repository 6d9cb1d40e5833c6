"""Where a run goes and what of it: the upload spec shared by the writer, the CLI, `init()` and the integrations."""

from __future__ import annotations

import os
import shlex
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .. import defaults
from ..validation import (
    BUCKET_HANDLE,
    validate_path_in_repo,
    validate_patterns,
    validate_repo_id,
    validate_repo_type,
    validate_squash,
)
from .hub import RepoRef


def _as_tuple(patterns: list[str] | tuple[str, ...] | str | None) -> tuple[str, ...] | None:
    if patterns is None:
        return None
    return (patterns,) if isinstance(patterns, str) else tuple(patterns)


@dataclass(frozen=True)
class UploadSpec:
    """A destination on the Hub and the files that go there.

    The writer's huggingface_hub-style names map to these fields (`repo_revision` → `revision`, `repo_private` →
    `private`, `repo_allow_patterns` → `allow_patterns`, `repo_ignore_patterns` → `ignore_patterns`,
    `squash_history` → `squash`), and `cli_args()` to the command line's flags; the README has the whole table.

    Args:
        repo_id: the repo, `namespace/name` (or `name`, for your own namespace).
        repo_type: "model", "dataset" or "space".
        revision: the branch; created if missing.
        path_in_repo: the repo folder for the logs; a logdir lands in `<path_in_repo>/<logdir name>/`. None or ""
            puts it at the repo's root.
        allow_patterns: only files matching one of these are pushed; None pushes every file.
        ignore_patterns: files matching one of these are not pushed.
        squash: True squashes the branch to one commit after each push; an int N squashes it when it has more than
            N commits (keeping the history short without rewriting it at every push); False never.
        private: create the repo private; ignored if it exists.

    Raises:
        ValueError: a malformed repo id, repo type, folder or pattern.

    Example:
        ```py
        >>> spec = UploadSpec("me/my-run", path_in_repo="logs")
        >>> spec.sync_command("runs/exp1")
        'hf-summary sync runs/exp1 me/my-run --path-in-repo logs'
        ```
    """

    repo_id: str
    repo_type: str = defaults.REPO_TYPE
    revision: str = defaults.REVISION
    path_in_repo: str | None = defaults.PATH_IN_REPO
    allow_patterns: tuple[str, ...] | None = (defaults.ALLOW_PATTERNS,)
    ignore_patterns: tuple[str, ...] = ()
    squash: bool | int = False
    private: bool | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        validate_repo_id(self.repo_id)
        validate_repo_type(self.repo_type)
        validate_path_in_repo(self.path_in_repo)
        validate_patterns("allow_patterns", self.allow_patterns)
        validate_patterns("ignore_patterns", self.ignore_patterns)
        validate_squash(self.squash)
        if self.repo_type == "bucket" and self.squash:
            raise ValueError("squash_history applies to a repo's history, and a bucket keeps none: drop it, or push "
                             "to a repo.")
        if self.repo_type == "bucket" and self.revision != defaults.REVISION:
            raise ValueError(f"A bucket has no branches (revision {self.revision!r}): drop the revision.")
        # Lists are accepted, as huggingface_hub accepts them; stored as tuples so that the spec stays hashable.
        object.__setattr__(self, "allow_patterns", _as_tuple(self.allow_patterns))
        object.__setattr__(self, "ignore_patterns", _as_tuple(self.ignore_patterns) or ())

    @classmethod
    def create(
        cls,
        repo_id: str,
        *,
        repo_type: str | None = None,
        revision: str | None = None,
        path_in_repo: str | None = defaults.PATH_IN_REPO,
        allow_patterns: list[str] | tuple[str, ...] | str | None = defaults.ALLOW_PATTERNS,
        ignore_patterns: list[str] | tuple[str, ...] | str | None = None,
        squash: bool | int = False,
        private: bool | None = None,
    ) -> UploadSpec:
        """A spec from huggingface_hub-style arguments, where None means the default repo type and branch."""
        return cls(
            repo_id,
            repo_type=repo_type or defaults.REPO_TYPE,
            revision=revision or defaults.REVISION,
            path_in_repo=path_in_repo,
            allow_patterns=_as_tuple(allow_patterns),
            ignore_patterns=_as_tuple(ignore_patterns) or (),
            squash=squash,
            private=private,
        )

    def to_json(self) -> dict[str, Any]:
        """The spec as JSON values: the form the companion's messages and the machine registry store."""
        fields = asdict(self)
        for key in ("allow_patterns", "ignore_patterns"):
            if fields[key] is not None:
                fields[key] = list(fields[key])
        return fields

    @classmethod
    def from_json(cls, fields: dict[str, Any]) -> UploadSpec:
        """The spec `to_json` gave.

        Raises:
            TypeError, ValueError: not a spec's fields (another version's, or a broken entry).
        """
        return cls(**fields)

    def repo(self) -> RepoRef:
        """The repo part of the spec, for a `HubClient`."""
        return RepoRef(self.repo_id, self.repo_type, self.revision, self.private)

    def folder_for(self, logdir: str | os.PathLike[str]) -> str:
        """The repo folder a logdir goes to: `<path_in_repo>/<logdir name>`, as huggingface_hub's writer does."""
        name = Path(logdir).resolve().name
        base = (self.path_in_repo or "").strip("/")
        return f"{base}/{name}" if base else name

    def cli_args(self) -> list[str]:
        """The `hf-summary sync` / `watch` options that select this spec (defaults left out)."""
        words: list[str] = []
        if self.path_in_repo != defaults.PATH_IN_REPO:
            words += ["--path-in-repo", self.path_in_repo or ""]
        if self.repo_type != defaults.REPO_TYPE and self.repo_type != "bucket":
            words += ["--repo-type", self.repo_type]
        if self.revision != defaults.REVISION:
            words += ["--revision", self.revision]
        if self.allow_patterns != (defaults.ALLOW_PATTERNS,):
            words += ["--include", *(self.allow_patterns or ("*",))]
        if self.ignore_patterns:
            words += ["--exclude", *self.ignore_patterns]
        if self.private:
            words += ["--private"]
        if self.squash is True:
            words += ["--squash"]
        elif self.squash:
            words += ["--squash", str(self.squash)]
        return words

    def sync_command(self, logdir: str | os.PathLike[str]) -> str:
        """The shell command that uploads whatever of `logdir` is not on the Hub yet."""
        return shlex.join(["hf-summary", "sync", str(logdir), self.handle, *self.cli_args()])

    @property
    def handle(self) -> str:
        """The destination as the command line takes it: the repo id, or `hf://buckets/ns/name`."""
        return f"{BUCKET_HANDLE}{self.repo_id}" if self.repo_type == "bucket" else self.repo_id
