"""One way to name where runs are: a local folder, a repo, or a Storage Bucket, as every command takes it.

`show`, `export`, `read_scalars` and `notebook` read a source; `sync` and `watch` push a logdir to a target and
`status` reads a logdir. All of them parse what they are given here, resolve it the same way and say the same thing
when it is not there:

- a folder that exists is a local folder (a file is refused: TensorBoard reads folders);
- `hf://buckets/ns/name` is a bucket, `hf://datasets/ns/name` a dataset (`hf://spaces/`, `hf://models/` alike),
  `hf://ns/name` and a plain `ns/name` a repo of `repo_type` (a model by default);
- a name without a namespace (`hf://buckets/logs`, `my-run`) is in the namespace of the token's user, as the writer
  and `sync` create it (the Hub's "me" namespace there, `whoami` here; offline, the one mirror of that name);
- a path that can only be a path (`/tmp/x`, `./runs`, `a/b/c`) and is not there is "no such folder"; a missing
  repo or bucket is "no such ... (or your token cannot read it)"; a folder of the source without event files says
  which folders hold them.

Every error is a `ReadError` whose message says what to do; the command line prints it and exits with code 2.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from . import defaults
from .validation import (
    HF_PROTOCOL,
    REPO_TYPES,
    split_handle,
    validate_path_in_repo,
    validate_repo_id,
    validate_token,
)

if TYPE_CHECKING:
    from huggingface_hub import HfApi

MIRROR_DIR = ("hf_summary", "show")  # under $HF_HOME: the local copies of what was read from the Hub
MAX_LISTED = 10  # folders named in a "no event files" message


class ReadError(Exception):
    """Why the runs cannot be read or shown, or their output written, in words the user can act on."""


def is_event_file(name: str) -> bool:
    """Whether TensorBoard reads a file of this name as an event file (`io_wrapper.IsSummaryEventsFile`)."""
    return "tfevents" in name and not name.endswith(".profile-empty")


@dataclass(frozen=True)
class LocalSource:
    """A local folder of runs (or a run's own folder).

    Attributes:
        path: the folder, as given.
        text: what named it.
    """

    path: Path
    text: str

    @property
    def name(self) -> str:
        """The folder's own name: a run at its root is named after it."""
        return self.path.resolve().name or "."

    def describe(self) -> str:
        return self.text


@dataclass(frozen=True)
class HubSource:
    """A repo's or a bucket's folder of runs.

    Attributes:
        text: what named it: a repo id or an `hf://` handle.
        kind: "bucket", or the repo's type ("model", "dataset", "space").
        ident: `ns/name`; only `name` until resolved (`resolve`), when it was given without a namespace.
        folder: the folder of runs inside it ("" for the whole repo or bucket).
        revision: a repo's branch, tag or commit (None: main); None for a bucket.
    """

    text: str
    kind: str
    ident: str
    folder: str
    revision: str | None = None

    @property
    def bucket_id(self) -> str | None:
        return self.ident if self.kind == "bucket" else None

    @property
    def repo_id(self) -> str | None:
        return None if self.kind == "bucket" else self.ident

    @property
    def repo_type(self) -> str:
        return defaults.REPO_TYPE if self.kind == "bucket" else self.kind

    @property
    def what(self) -> str:
        """`bucket 'ns/logs'`, `model repo 'ns/run'`."""
        return f"bucket '{self.ident}'" if self.kind == "bucket" else f"{self.kind} repo '{self.ident}'"

    @property
    def handle(self) -> str:
        """The `hf://` path of the repo or bucket: `hf://buckets/ns/name`, `hf://datasets/ns/name`, `hf://ns/name`."""
        return f"{HF_PROTOCOL}{self.prefix}"

    @property
    def prefix(self) -> str:
        """Its `HfFileSystem` path: `buckets/ns/name`, `datasets/ns/name`, `ns/name` for a model."""
        return self.ident if self.kind == "model" else f"{self.kind}s/{self.ident}"

    @property
    def has_namespace(self) -> bool:
        return "/" in self.ident

    @property
    def mirror(self) -> Path:
        """The local folder keeping what was read of it (`$HF_HOME/hf_summary/show/<kind>s--ns--name/<folder>`)."""
        return mirror_root() / self.slug / self.folder

    @property
    def slug(self) -> str:
        return "--".join([f"{self.kind}s", *self.ident.split("/")]) + (f"@{self.revision}" if self.revision else "")

    @property
    def name(self) -> str:
        """The folder's own name (the repo's or bucket's name for its root): a run at the root is named after it."""
        return self.folder.rsplit("/", 1)[-1] if self.folder else self.ident.rsplit("/", 1)[-1]

    def describe(self) -> str:
        """The source in words: `ns/name (tensorboard/)`."""
        shown = self.handle if self.kind != "model" or self.text.startswith(HF_PROTOCOL) else self.ident
        return f"{shown} ({self.folder + '/' if self.folder else '/'})"


Source = LocalSource | HubSource


def mirror_root() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HOME).joinpath(*MIRROR_DIR)


def parse_source(
    text: str | os.PathLike[str],
    *,
    repo_type: str | None = defaults.REPO_TYPE,
    revision: str | None = None,
    path_in_repo: str | None = defaults.PATH_IN_REPO,
) -> Source:
    """What `text` names: a local folder (when one exists there), or a repo's or bucket's folder of runs. Nothing is
    asked of the Hub: a name without a namespace stays one until `resolve`.

    Args:
        text: a folder, a repo id (`ns/name`), or an `hf://` handle (`hf://buckets/ns/name`, `hf://datasets/ns/name`).
        repo_type: the repo's type for a plain repo id; "model" (the default) also lets a handle name its own.
        revision: a repo's branch, tag or commit (None: main).
        path_in_repo: the repo's or bucket's folder of runs; ignored for a local folder.

    Raises:
        ReadError: a folder that is not there, a file, or a name that is neither (the message says which).

    Example:
        ```py
        >>> parse_source("hf://buckets/me/logs").prefix
        'buckets/me/logs'
        ```
    """
    text = os.fspath(text)
    if not isinstance(text, str) or not text:
        raise ReadError(f"expected a folder, a repo id or an hf:// handle, got {text!r}.")
    if repo_type is not None and repo_type not in REPO_TYPES:
        raise ReadError(f"repo_type must be one of {', '.join(REPO_TYPES)}, got {repo_type!r}.")
    if not text.startswith(HF_PROTOCOL):
        local = Path(text).expanduser()
        if local.is_dir():
            return LocalSource(local, text)
        if local.exists():
            raise ReadError(f"'{text}' is a file, not a folder of runs: pass the folder that holds it "
                            f"('{local.parent}').")
        if _only_a_path(text):
            raise ReadError(f"no such folder: '{text}'.")
    asked = None if repo_type in (None, defaults.REPO_TYPE) else repo_type
    try:
        ident, kind = split_handle(text, asked)
    except ValueError as error:
        raise ReadError(str(error).replace("repo_type=", "--repo-type / repo_type=")) from None
    kind = kind or repo_type or defaults.REPO_TYPE
    if not text.startswith(HF_PROTOCOL) and ident.count("/") > 1:
        raise ReadError(f"no such folder: '{text}'.")
    try:
        validate_repo_id(ident)
    except ValueError as error:
        if text.startswith(HF_PROTOCOL):
            raise ReadError(f"'{text}' does not name a repo or a bucket: {error}") from None
        raise ReadError(f"no such folder: '{text}' (and it is not a repo id either: {error})") from None
    if kind == "bucket" and revision is not None:
        raise ReadError("A bucket has no revisions: drop the revision (--revision).")
    try:
        validate_path_in_repo(path_in_repo)
    except ValueError as error:
        raise ReadError(str(error)) from None
    folder = PurePosixPath((path_in_repo or "").replace("\\", "/").strip("/")).as_posix()
    return HubSource(text, kind, ident, "" if folder == "." else folder, revision)


def _only_a_path(text: str) -> bool:
    """Whether `text` can only be a path, never a repo id: absolute, relative to `.`, `..` or `~`, or with a
    separator a repo id does not have."""
    return os.path.isabs(text) or text.startswith((".", "~")) or "\\" in text or text.endswith("/")


def resolve(source: Source, *, token: str | None = None, offline: bool | None = None) -> Source:
    """`source` with its namespace, if it was given without one: the token's user's, as the writer and `sync`
    create it; offline, the one mirror of that name.

    Raises:
        ReadError: no token tells whose it is, the token was refused, or offline no mirror (or several) has the name.
    """
    if isinstance(source, LocalSource) or source.has_namespace:
        return source
    if offline is None:
        offline = _offline()
    if offline:
        pattern = f"{source.kind}s--*--{source.ident}" + (f"@{source.revision}" if source.revision else "")
        found = sorted(path.name for path in mirror_root().glob(pattern) if path.is_dir())
        if len(found) != 1:
            seen = f"mirrors of several: {', '.join(found)}" if found else "no mirror of it"
            raise ReadError(f"'{source.text}' names no namespace, and offline (HF_HUB_OFFLINE) there is {seen}: "
                            f"name it with its namespace ('ns/{source.ident}').")
        return replace(source, ident="/".join(found[0].split("@")[0].split("--")[1:]))
    return replace(source, ident=f"{whoami(token, source)}/{source.ident}")


def whoami(token: str | None, source: HubSource | None = None) -> str:
    """The name of the token's user (one request a process, cached).

    Raises:
        ReadError: there is no token, or the Hub refused it.
    """
    from huggingface_hub.errors import HfHubHTTPError, LocalTokenNotFoundError

    named = f"'{source.text}' names no namespace, so it is in yours" if source else "Your namespace is needed"
    try:
        validate_token(token, "token")
        return str(_api(token).whoami(cache=True)["name"])
    except LocalTokenNotFoundError:
        raise ReadError(f"{named}, and no token says who you are: log in with `hf auth login`, pass a token, or "
                        "name it with its namespace (ns/name).") from None
    except (HfHubHTTPError, ValueError) as error:
        raise ReadError(f"{named}, and the Hub did not say who you are ({error}): check the token, or name it with "
                        "its namespace (ns/name).") from None


@functools.lru_cache(maxsize=16)
def _api(token: str | None) -> HfApi:
    """One `HfApi` per token: its whoami cache lives as long as the process."""
    from huggingface_hub import HfApi

    return HfApi(token=token)


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.is_offline_mode())


def check_exists(source: HubSource, *, token: str | None = None) -> str | None:
    """Ask the Hub whether the repo or bucket is there; return a repo's head commit (None for a bucket).

    Raises:
        ReadError: it is not there (or the token cannot read it), or the revision is not.
    """
    api = _api(token)
    with hub_errors(source):
        if source.bucket_id is not None:
            api.bucket_info(source.bucket_id)
            return None
        return str(api.repo_info(source.ident, repo_type=source.kind, revision=source.revision).sha)


class hub_errors:  # noqa: N801 - used as `with hub_errors(source):`
    """Turn the Hub's errors about `source` into ReadErrors that say what to check."""

    def __init__(self, source: HubSource) -> None:
        self.source = source

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, traceback: Any) -> None:
        from huggingface_hub.errors import (
            EntryNotFoundError,
            HfHubHTTPError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )

        from .upload.errors import http_status

        if error is None or isinstance(error, EntryNotFoundError):  # a file or folder: the caller's to handle
            return
        source = self.source
        if isinstance(error, RevisionNotFoundError):
            raise ReadError(f"The {source.what} has no revision '{source.revision}'.") from None
        if isinstance(error, RepositoryNotFoundError | _bucket_not_found()) or (
                isinstance(error, HfHubHTTPError) and http_status(error) in (401, 403, 404)):
            raise ReadError(not_found(source)) from None
        if isinstance(error, HfHubHTTPError | OSError) and not isinstance(error, FileNotFoundError):
            raise ReadError(f"Could not read {source.what}: {error}") from None


def _bucket_not_found() -> type[Exception]:
    from huggingface_hub.errors import BucketNotFoundError

    return BucketNotFoundError


def not_found(source: HubSource) -> str:
    """The message for a repo or bucket the Hub does not show us."""
    check = "the bucket's name" if source.kind == "bucket" else "the repo id and the repo type (--repo-type)"
    head = "" if source.text.startswith(HF_PROTOCOL) else f"no such folder '{source.text}', and "
    return (f"{head}no such {source.what} (or your token cannot read it): check {check}; if it is private, log in "
            "with `hf auth login` or pass a token.")


def no_event_files(where: str, folders: list[str], *, hub: bool) -> ReadError:
    """The error for a folder without event files (`where`: `'runs'`, `'tensorboard' in the bucket 'me/logs'`),
    naming the folders that were found instead."""
    if not folders:
        return ReadError(f"no event files under {where}, and no folders in it either.")
    shown = ", ".join(folders[:MAX_LISTED]) + (f" and {len(folders) - MAX_LISTED} more" if
                                               len(folders) > MAX_LISTED else "")
    hint = ": pass the folder the writer used with path_in_repo (--path-in-repo)" if hub else \
        ": pass the folder holding the runs"
    return ReadError(f"no event files under {where}, found these folders: {shown}{hint}.")


def local_event_folders(root: Path) -> list[Path]:
    """The folders below `root` (itself included) that hold event files, as TensorBoard finds runs."""
    return sorted({Path(folder) for folder, _, names in os.walk(root) if any(is_event_file(name) for name in names)})


def check_local(source: LocalSource) -> None:
    """Raise if the folder holds no event file anywhere below it.

    Raises:
        ReadError: "no event files under ..., found these folders: ...".
    """
    if local_event_folders(source.path):
        return
    folders = sorted(entry.name + "/" for entry in source.path.iterdir() if entry.is_dir())
    raise no_event_files(f"'{source.path}'", folders, hub=False)


def hub_folders_with_events(paths: list[str]) -> list[str]:
    """The folders (relative to the repo or bucket) holding event files among `paths`, or, if none does, the
    top-level folders: what a "no event files" message offers instead."""
    with_events = sorted({path.rsplit("/", 1)[0] + "/" if "/" in path else "/" for path in paths
                          if is_event_file(path.rsplit("/", 1)[-1])})
    if with_events:
        return with_events
    return sorted({path.split("/", 1)[0] + "/" for path in paths if "/" in path})


def open_source(
    text: str | os.PathLike[str],
    *,
    repo_type: str | None = defaults.REPO_TYPE,
    revision: str | None = None,
    path_in_repo: str | None = defaults.PATH_IN_REPO,
    token: str | None = None,
) -> Source:
    """Parse and resolve `text`, and check that it is there: a local folder holding event files, or a repo or bucket
    the token can read (offline: one with a mirror). Whether the Hub's folder holds event files is told by its
    first listing (`read.fetch.list_event_files`).

    Raises:
        ReadError: it is not there; the message says what to check.
    """
    try:
        validate_token(token, "token")
    except ValueError as error:
        raise ReadError(str(error)) from None
    source = resolve(parse_source(text, repo_type=repo_type, revision=revision, path_in_repo=path_in_repo),
                     token=token)
    if isinstance(source, LocalSource):
        check_local(source)
    return source


def parse_target(repo_id: str, repo_type: str | None = None) -> tuple[str, str | None]:
    """A destination for `sync` and `watch`, as the writer takes it: (`ns/name`, its kind or None for the default).

    Raises:
        ReadError: not a repo id or a handle, or a handle of another type.
    """
    try:
        ident, kind = split_handle(repo_id, None if repo_type == defaults.REPO_TYPE else repo_type)
        validate_repo_id(ident)
    except ValueError as error:
        raise ReadError(str(error)) from None
    return ident, kind


def local_folder(path: str | os.PathLike[str], role: str = "logdir") -> Path:
    """A local folder that must be there (`sync`'s, `watch`'s and `status`'s logdir).

    Raises:
        ReadError: "no such folder", or a file.
    """
    folder = Path(path).expanduser()
    if folder.is_dir():
        return folder
    if folder.exists():
        raise ReadError(f"{role} '{path}' is a file, not a folder: pass the folder the writer logged to.")
    raise ReadError(f"no such folder: '{path}' (the {role}).")


def check_output(path: str | os.PathLike[str]) -> Path:
    """A file that can be written: its folder is there and takes a new file (checked by creating it, before the work
    that fills it).

    Raises:
        ReadError: its folder is missing, or it cannot be written there.
    """
    target = Path(path).expanduser()
    folder = target.parent
    if not folder.is_dir():
        raise ReadError(f"cannot write '{path}': no such folder: '{folder}'.")
    if target.is_dir():
        raise ReadError(f"cannot write '{path}': it is a folder; name a file in it.")
    existed = target.exists()
    try:
        with open(target, "ab"):
            pass
    except OSError as error:
        raise ReadError(f"cannot write '{path}': {error.strerror or error}.") from None
    if not existed:
        target.unlink(missing_ok=True)
    return target

