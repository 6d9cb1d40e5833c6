"""Argument checks, done before anything is created so that bad input leaves no file or thread behind."""

from __future__ import annotations

import numbers
import os
from pathlib import PurePosixPath
from types import MappingProxyType

REPO_TYPES = ("model", "dataset", "space")
TARGET_TYPES = (*REPO_TYPES, "bucket")  # a Storage Bucket is a destination too, though not a repo
BUCKET_HANDLE = "hf://buckets/"  # how huggingface_hub (HfFileSystem) names a bucket
HF_PROTOCOL = "hf://"
# The first segment of an `hf://` path that names the kind of place (HfFileSystem's paths); none: a model repo.
HANDLE_KINDS = MappingProxyType({"buckets": "bucket", "datasets": "dataset", "spaces": "space", "models": "model"})


def split_handle(repo_id: str, repo_type: str | None) -> tuple[str, str | None]:
    """An `hf://` handle as (`ns/name`, its kind): `hf://buckets/ns/name` is a bucket, `hf://datasets/ns/name` a
    dataset (`spaces/`, `models/` alike), `hf://ns/name` a model; any other repo id as given. A name without a
    namespace (`hf://buckets/logs`) stays one: the Hub puts it in the namespace of the token's user.

    Raises:
        ValueError: a handle with another repo type, or one naming a folder inside the repo or bucket.
    """
    if not isinstance(repo_id, str) or not repo_id.startswith(HF_PROTOCOL):
        return repo_id, repo_type
    rest = repo_id[len(HF_PROTOCOL):].strip("/")
    first, _, tail = rest.partition("/")
    kind = HANDLE_KINDS.get(first)
    if kind is None:
        kind, first, tail = "model", "", rest
    if repo_type not in (None, kind):
        raise ValueError(f"{repo_id!r} is a {kind}, but repo_type={repo_type!r} was given: drop repo_type.")
    if tail.count("/") > 1:
        ident = "/".join(tail.split("/")[:2])
        folder = tail.split("/", 2)[2]
        what = "bucket" if kind == "bucket" else "repo"
        raise ValueError(f"{repo_id!r} names a folder inside the {what}: pass the {what}, "
                         f"{HF_PROTOCOL}{first + '/' if first else ''}{ident}, and the folder as path_in_repo "
                         f"(--path-in-repo {folder}).")
    return tail, kind


def validate_repo_id(repo_id: object) -> None:
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id as hf_validate

    if not isinstance(repo_id, str) or not repo_id:
        raise ValueError(f"repo_id must be a non-empty string like 'username/my-run', got {repo_id!r}.")
    try:
        hf_validate(split_handle(repo_id, None)[0])  # a bucket's name follows a repo's rules
    except HFValidationError as error:
        raise ValueError(f"Invalid repo_id {repo_id!r}: {error} Use the form 'username/my-run'.") from None


def validate_repo_type(repo_type: object) -> None:
    if repo_type not in TARGET_TYPES:
        raise ValueError(f"repo_type must be one of {', '.join(TARGET_TYPES)}, got {repo_type!r}.")


def validate_path_in_repo(path_in_repo: object) -> None:
    if path_in_repo is None:
        return
    if not isinstance(path_in_repo, str):
        raise ValueError(f"path_in_repo must be a string like 'tensorboard', got {path_in_repo!r}.")
    parts = PurePosixPath(path_in_repo.replace("\\", "/")).parts
    if ".." in parts or "\x00" in path_in_repo:
        raise ValueError(f"path_in_repo {path_in_repo!r} may not contain '..': use a folder inside the repo, "
                         "like 'tensorboard'.")
    if ".git" in parts:
        raise ValueError(f"path_in_repo {path_in_repo!r} is inside a .git folder, which the Hub refuses: use a folder "
                         "like 'tensorboard'.")


def validate_token(token: object, name: str = "token") -> None:
    """A token must be one word of visible ASCII: anything else would end up in an HTTP header (and its errors)."""
    if token is None:
        return
    if not isinstance(token, str) or not token:
        raise ValueError(f"{name} must be a non-empty string (a Hub token), got a {type(token).__name__}.")
    for position, char in enumerate(token):
        if not "\x21" <= char <= "\x7e":
            what = ("a newline" if char in "\r\n" else "a space" if char.isspace()
                    else f"the character U+{ord(char):04X}")
            raise ValueError(f"{name} contains {what} at position {position}: pass the token alone (a token read "
                             "from a file needs .strip()).")


def validate_squash(squash: object) -> None:
    if isinstance(squash, bool) or (isinstance(squash, int) and squash >= 1):
        return
    raise ValueError(f"squash_history must be True, False or a number of commits >= 1 (squash when the branch has "
                     f"more), got {squash!r}.")


def validate_patterns(name: str, patterns: object) -> None:
    if patterns is None or isinstance(patterns, str):
        return
    if not isinstance(patterns, list | tuple) or not all(isinstance(p, str) for p in patterns):
        raise ValueError(f"{name} must be a glob pattern or a list of them, like '*.tfevents.*', got {patterns!r}.")


def validate_arguments(
    *,
    repo_id: object,
    logdir: str | os.PathLike[str],
    commit_every: object,
    repo_type: object,
    path_in_repo: object,
    allow_patterns: object,
    ignore_patterns: object,
    max_file_size: object,
    close_timeout: object,
    push_timeout: object,
    max_commits_per_hour: object,
    token: object,
) -> None:
    """Check the writer's arguments.

    Raises:
        ValueError: the first bad argument, with what to pass instead.
    """
    validate_repo_id(repo_id)
    if commit_every is not None and (isinstance(commit_every, bool) or not isinstance(commit_every, numbers.Real)
                                     or not float(commit_every) > 0):
        raise ValueError(f"commit_every must be a positive number of minutes (e.g. 5), got {commit_every!r}.")
    if repo_type is not None:
        validate_repo_type(repo_type)
    if "://" in str(logdir):
        raise ValueError(f"logdir {str(logdir)!r} is a remote store; the writer uploads from a local folder: pass a "
                         "local logdir (LocalSummaryWriter and tensorboardX write to s3:// and gs://).")
    if os.path.basename(os.path.normpath(str(logdir))) == ".git":
        raise ValueError(f"logdir {str(logdir)!r} is named .git: its repo folder would be refused by the Hub; pass a "
                         "folder with another name, like 'runs/exp1'.")
    if os.path.isfile(logdir):
        raise ValueError(f"logdir {str(logdir)!r} is a file; pass a folder (it is created if missing).")
    validate_path_in_repo(path_in_repo)
    validate_patterns("repo_allow_patterns", allow_patterns)
    validate_patterns("repo_ignore_patterns", ignore_patterns)
    if max_file_size is not None and (isinstance(max_file_size, bool) or not isinstance(max_file_size, int)
                                      or max_file_size <= 0):
        raise ValueError(f"max_file_size must be a positive number of bytes (or None: the upload path's default), "
                         f"got {max_file_size!r}.")
    if isinstance(close_timeout, bool) or not isinstance(close_timeout, numbers.Real) or float(close_timeout) < 0:
        raise ValueError(f"close_timeout must be a number of seconds >= 0, got {close_timeout!r}.")
    if isinstance(push_timeout, bool) or not isinstance(push_timeout, numbers.Real) or not float(push_timeout) > 0:
        raise ValueError(f"push_timeout must be a positive number of seconds, got {push_timeout!r}.")
    validate_token(token)
    if max_commits_per_hour is not None and (isinstance(max_commits_per_hour, bool) or
                                             not isinstance(max_commits_per_hour, int) or max_commits_per_hour < 1):
        raise ValueError(f"max_commits_per_hour must be a number of commits >= 1, or None for no budget, got "
                         f"{max_commits_per_hour!r}.")
