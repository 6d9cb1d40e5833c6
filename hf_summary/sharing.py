"""`hf-summary share`: a live TensorBoard on the Hub, in a Docker Space that runs `hf-summary show` over a repo or a
bucket.

The Space holds three files: a README whose front matter says `sdk: docker` and its `app_port`, a Dockerfile whose
`RUN` lines only install and whose `CMD` (exec form) runs `hf-summary show SOURCE --host 0.0.0.0` on `$PORT`, and
the package itself: a wheel of the installed hf_summary, built from its source tree (hf_summary is not necessarily
published), or else the published version pinned. The Space reads the source through the Hub's API as `show` does
on a laptop; a private source needs a read token stored as the Space's `HF_TOKEN` secret, never in a file.

Sharing again commits only what changed: huggingface_hub leaves out the files the Space already has
(`create_commit` skips unchanged files, and makes no commit when none changed), so an unchanged Space is not
rebuilt. The wheel is built reproducibly (`SOURCE_DATE_EPOCH`), so the same code gives the same bytes.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__, defaults
from .source import HubSource, ReadError, hub_errors, parse_source, resolve, whoami
from .validation import validate_repo_id, validate_token

if TYPE_CHECKING:
    from huggingface_hub import HfApi

APP_PORT = 7860  # the Hub's default app_port for Docker Spaces
SPACE_SUFFIX = "-tensorboard"
MADE_BY = "# Made by `hf-summary share`"  # the Dockerfile's first line: how share knows a Space is its own
logger = logging.getLogger(__name__)

TOKEN_SECRET = "HF_TOKEN"  # huggingface_hub reads it in the Space: `show` needs no --token there
WHEEL_EPOCH = "315532800"  # 1980-01-01, the oldest date a zip holds: the same sources make the same wheel bytes
_SOURCE_FILES = ("pyproject.toml", "setup.cfg", "setup.py", "README.md")


class ShareError(Exception):
    """Why the runs cannot be shared, in words that say what to do."""


@dataclass(frozen=True)
class Shared:
    """What `share` did.

    Attributes:
        space_id: The Space, `ns/name`.
        url: The Space's page on the Hub.
        private: Whether only its owner (and an organization's members) can see it.
        commit: The commit that changed the Space's files, or None when it already had them (no rebuild).
        needs_token: The source is private and the Space has no read token: it cannot show the runs yet.
        secret_can_write: The token given for the Space can write, where reading is all the Space needs.
    """

    space_id: str
    url: str
    private: bool
    commit: str | None
    needs_token: bool
    secret_can_write: bool = False

    def describe(self) -> str:
        """What the command prints: where the runs are, who can see them, what happens next."""
        who = (f"private: only you (and the members of '{self.space_id.split('/')[0]}', if it is an organization) "
               "can see it" if self.private else "public: anyone with the link can see the runs")
        change = (f"Updated its files (commit {self.commit[:12]}): the Hub rebuilds it, which takes a few minutes."
                  if self.commit else "Its files were already up to date: nothing to rebuild.")
        lines = [f"Live TensorBoard at {self.url} ({who}).", change]
        if self.needs_token:
            lines.append(f"The source is private and the Space has no read token: run again with --token-secret "
                         f"TOKEN (a read token, kept as the Space's {TOKEN_SECRET} secret), or the Space cannot "
                         "read the runs.")
        if self.secret_can_write:
            lines.append(f"The token kept as the Space's {TOKEN_SECRET} secret can write: the Space only reads, so a "
                         "read-only token is safer (make one in your Hub settings, and share again with it).")
        lines.append("A free CPU Space sleeps when unused and wakes when opened. Stop sharing: the same command "
                     "with --delete, or delete the Space.")
        return "\n".join(lines)


def share(
    source: str,
    space_id: str | None = None,
    *,
    repo_type: str = defaults.REPO_TYPE,
    path_in_repo: str = defaults.PATH_IN_REPO,
    private: bool | None = None,
    token_secret: str | None = None,
    token: str | None = None,
) -> Shared:
    """Create or update a Docker Space that serves a live TensorBoard over a repo's or a bucket's runs.

    Args:
        source: A repo id or an `hf://` handle (`hf://buckets/ns/name`). A local folder cannot be shared: push it
            first (`hf-summary sync`).
        space_id: The Space, `ns/name`; None: `<your name>/<source name>-tensorboard`.
        repo_type: The repo's type, for a plain repo id.
        path_in_repo: The repo's or bucket's folder of runs.
        private: The Space's visibility; None: a new Space is as private as the source, an existing one keeps its own.
        token_secret: A read token the Space keeps as its `HF_TOKEN` secret, to read a private source. Never
            written into a file of the Space.
        token: Your token, to create and update the Space (default: HF_TOKEN or `hf auth login`).

    Returns:
        What was done (`Shared.describe()` says it in words).

    Raises:
        ReadError: the source is not there, or cannot be read with `token`.
        ShareError: the Space cannot be created or updated: a name taken by a Space of another SDK, a namespace
            you cannot write to, a local folder as source.

    Example:
        ```python
        shared = hf_summary.share("hf://buckets/me/logs")
        print(shared.describe())
        ```
    """
    for value, name in ((token, "token"), (token_secret, "token_secret (--token-secret)")):
        try:
            validate_token(value, name)
        except ValueError as error:
            raise ShareError(str(error)) from None
    secret_can_write = token_secret is not None and _can_write(token_secret)
    hub_source = _hub_source(source, repo_type, path_in_repo, token)
    source_private = _is_private(hub_source, token)
    space_id = _space_id(space_id, hub_source, token)
    api = _api(token)
    existing = _space_info(api, space_id)
    if existing is None:
        private = source_private if private is None else private
    _create_or_update(api, space_id, existing, private)
    if token_secret is not None:
        with _space_errors(space_id):
            api.add_space_secret(space_id, TOKEN_SECRET, token_secret, description="read token for the shared runs")
    head = str(api.repo_info(space_id, repo_type="space").sha)
    commit = _commit_files(api, space_id, space_files(hub_source), head)
    info = api.repo_info(space_id, repo_type="space")
    needs_token = source_private and TOKEN_SECRET not in api.get_space_secrets(space_id)
    return Shared(space_id, _space_url(api, space_id), bool(info.private), commit, needs_token, secret_can_write)


def share_when_pushed(writer: Any, space_id: str | None = None, *, token: str | None = None) -> Future:
    """Share a writer's runs once its first push landed (a Space over a source without event files would have
    nothing to show), from a thread: the training run goes on meanwhile, and a failure is a warning, never raised
    into it.

    Args:
        writer: the `HFSummaryWriter` whose repo or bucket (its folder of runs) is shared.
        space_id: as `share`'s.
        token: the writer's token.

    Returns:
        A Future of what `share` did (its URL is also printed on stderr, once the Space is there).
    """
    from .threads import start_thread
    from .upload.errors import PushError
    from .upload.hooks import our_calls

    shared: Future = Future()

    def when_pushed() -> None:
        try:
            while True:
                try:
                    if writer.scheduler.next_push().result() is not None:
                        break  # the source holds event files now
                except PushError:
                    continue  # the next push tries again
            spec = writer.spec
            source = f"hf://buckets/{writer.repo_id}" if spec.repo_type == "bucket" else writer.repo_id
            with our_calls(quiet=True):  # the training log gets the URL, not huggingface_hub's upload bars
                done = share(source, space_id, repo_type=spec.repo_type if spec.repo_type != "bucket" else "model",
                             path_in_repo=spec.path_in_repo or "", token=token)
        except Exception as error:  # the run goes on; the user is told why there is no Space
            logger.warning("The run was not shared: %s", error)
            shared.set_exception(error)
            return
        print(f"hf_summary: {done.describe()}", file=sys.stderr, flush=True)
        shared.set_result(done)

    start_thread(when_pushed, "hf_summary-share")
    return shared


def unshare(
    source: str,
    space_id: str | None = None,
    *,
    repo_type: str = defaults.REPO_TYPE,
    path_in_repo: str = defaults.PATH_IN_REPO,
    token: str | None = None,
) -> str | None:
    """Delete the Space that `share` made for `source` (or `space_id`); return its id, or None if there was none.

    Raises:
        ShareError: the Space is not a Docker Space (not deleted), or cannot be deleted with `token`.
    """
    hub_source = _hub_source(source, repo_type, path_in_repo, token)
    space_id = _space_id(space_id, hub_source, token)
    api = _api(token)
    if _space_info(api, space_id) is None:
        return None
    with _space_errors(space_id):
        api.delete_repo(space_id, repo_type="space")
    return space_id


def space_files(source: HubSource) -> dict[str, bytes]:
    """The Space's files for `source`: README.md, Dockerfile, and the wheel when hf_summary is not a published
    version (see `_package`)."""
    wheel = _package()
    if wheel is None:
        copy, requirement = "", f"hf-summary[tensorboard]=={__version__}"
    else:
        copy, requirement = f"COPY --chown=user {wheel[0]} ./\n", f"./{wheel[0]}[tensorboard]"
    shown = source.describe()
    command = ["hf-summary", "show", source.handle, "--path-in-repo", source.folder, "--host", "0.0.0.0"]
    if source.revision is not None:
        command += ["--revision", source.revision]
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    title = source.ident.split("/")[-1]
    readme = (f"---\ntitle: {title} TensorBoard\nemoji: 📈\ncolorFrom: yellow\ncolorTo: red\nsdk: docker\n"
              f"app_port: {APP_PORT}\npinned: false\n---\n\nA live TensorBoard over {shown}, made by "
              f"`hf-summary share` (hf_summary {__version__}).\n")
    dockerfile = (
        f"{MADE_BY}: TensorBoard, live, over {shown}.\n"
        "# The RUN lines only install; the CMD starts the view on $PORT, the app_port of README.md.\n"
        f"FROM python:{python}-slim\n"
        "RUN useradd -m -u 1000 user\n"  # the Hub's Docker Spaces run as user 1000
        "USER user\n"
        f"ENV HOME=/home/user PATH=/home/user/.local/bin:$PATH PORT={APP_PORT}\n"
        "WORKDIR /home/user/app\n"
        f"{copy}"
        f'RUN pip install --no-cache-dir --user "{requirement}"\n'
        f"CMD {json.dumps(command)}\n"
    )
    files = {"README.md": readme.encode(), "Dockerfile": dockerfile.encode()}
    if wheel is not None:
        files[wheel[0]] = wheel[1]
    return files


@functools.cache
def _package() -> tuple[str, bytes] | None:
    """A wheel of the installed hf_summary (name, bytes), built from the source tree it runs from; None when it runs
    from an installed wheel, which is then a published version.

    Raises:
        ShareError: the wheel could not be built.
    """
    root = Path(__file__).resolve().parent.parent
    if not (root / "setup.cfg").is_file():
        return None
    with tempfile.TemporaryDirectory(prefix="hf_summary-wheel-") as tmp:
        tree, out = Path(tmp) / "src", Path(tmp) / "out"
        # A copy: setuptools builds in the tree, and stale files of an earlier build there would end up in the wheel.
        shutil.copytree(root / "hf_summary", tree / "hf_summary", ignore=shutil.ignore_patterns("__pycache__"))
        for name in _SOURCE_FILES:
            if (root / name).is_file():
                shutil.copy2(root / name, tree / name)
        result = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
             str(tree)], capture_output=True, text=True, env={**os.environ, "SOURCE_DATE_EPOCH": WHEEL_EPOCH})
        wheels = sorted(out.glob("*.whl"))
        if result.returncode != 0 or len(wheels) != 1:
            raise ShareError(f"could not build a wheel of hf_summary from {root} for the Space "
                             f"({result.stderr.strip()}): check that `pip wheel --no-deps --no-build-isolation` "
                             "works there.")
        return wheels[0].name, wheels[0].read_bytes()


def _hub_source(text: str, repo_type: str, path_in_repo: str, token: str | None) -> HubSource:
    source = resolve(parse_source(text, repo_type=repo_type, path_in_repo=path_in_repo), token=token)
    if not isinstance(source, HubSource):
        raise ShareError(f"'{text}' is a local folder: a Space reads runs from the Hub. Push them first "
                         f"(`hf-summary sync {text} ns/name`), then share the repo or bucket.")
    return source


def _is_private(source: HubSource, token: str | None) -> bool:
    """Whether the source is private; checks that it is there.

    Raises:
        ReadError: it is not there, or `token` cannot read it.
    """
    api = _api(token)
    with hub_errors(source):
        if source.bucket_id is not None:
            return bool(api.bucket_info(source.bucket_id).private)
        return bool(api.repo_info(source.ident, repo_type=source.kind, revision=source.revision).private)


def _can_write(token_secret: str) -> bool:
    """Whether the token given for the Space can write; checks that the Hub knows it before it is stored.

    Raises:
        ShareError: the Hub refuses the token.
    """
    from huggingface_hub.errors import HfHubHTTPError

    from .upload.errors import http_status

    try:
        auth = _api(None).whoami(token=token_secret).get("auth") or {}
    except HfHubHTTPError as error:
        raise ShareError(f"the Hub refused the token given with --token-secret (token_secret=) (HTTP "
                         f"{http_status(error)}): pass a valid read token, made in your Hub settings.") from None
    return bool((auth.get("accessToken") or {}).get("role") == "write")


def _space_id(space_id: str | None, source: HubSource, token: str | None) -> str:
    if space_id is None:
        return f"{whoami(token)}/{source.ident.split('/')[-1]}{SPACE_SUFFIX}"
    try:
        validate_repo_id(space_id)
    except ValueError as error:
        raise ShareError(f"--space / space_id: {error}") from None
    if "/" not in space_id:
        return f"{whoami(token)}/{space_id}"
    return space_id


@functools.lru_cache(maxsize=4)
def _api(token: str | None) -> HfApi:
    from huggingface_hub import HfApi

    return HfApi(token=token)


def _space_info(api: HfApi, space_id: str) -> Any:
    """The Space's info, or None if it does not exist (or `token` cannot see it).

    Raises:
        ShareError: a Space of that name runs another app (another SDK, or a Dockerfile `share` did not write):
            sharing would replace it.
    """
    from huggingface_hub.errors import RepositoryNotFoundError

    try:
        info = api.space_info(space_id)
    except RepositoryNotFoundError:
        return None
    if info.sdk != "docker" or not _made_by_share(api, space_id, info):
        kind = f"a {info.sdk} Space" if info.sdk != "docker" else "a Docker Space that `hf-summary share` did not make"
        raise ShareError(f"the Space {space_id} exists and is {kind}: pass another name with --space (space_id=), "
                         "or delete that Space first.")
    return info


def _made_by_share(api: HfApi, space_id: str, info: Any) -> bool:
    """Whether a Docker Space is empty or runs what `share` writes: another app there is not ours to replace."""
    if "Dockerfile" not in {sibling.rfilename for sibling in info.siblings or ()}:
        return True
    return Path(api.hf_hub_download(space_id, "Dockerfile", repo_type="space")).read_text().startswith(MADE_BY)


def _create_or_update(api: HfApi, space_id: str, existing: Any, private: bool | None) -> None:
    with _space_errors(space_id):
        if existing is None:
            api.create_repo(space_id, repo_type="space", space_sdk="docker", private=private, exist_ok=True)
        elif private is not None and bool(existing.private) != private:
            api.update_repo_settings(space_id, repo_type="space", private=private)


def _commit_files(api: HfApi, space_id: str, files: dict[str, bytes], head: str) -> str | None:
    """Commit the Space's files, and delete those of an earlier share (an older wheel); return the new commit, or
    None when nothing changed (huggingface_hub then makes no commit)."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete

    kept = {".gitattributes", *files}
    stale = [path for path in api.list_repo_files(space_id, repo_type="space") if path not in kept]
    operations: list[Any] = [CommitOperationAdd(path, content) for path, content in files.items()]
    operations += [CommitOperationDelete(path) for path in stale]
    with _space_errors(space_id):
        info = api.create_commit(space_id, operations, repo_type="space",
                                 commit_message=f"hf-summary share ({__version__})")
    return None if info.oid == head else str(info.oid)


def _space_url(api: HfApi, space_id: str) -> str:
    return f"{api.endpoint}/spaces/{space_id}"


class _space_errors:  # noqa: N801 - used as `with _space_errors(space_id):`
    """Turn the Hub's refusals about the Space into ShareErrors that say what to do."""

    def __init__(self, space_id: str) -> None:
        self.space_id = space_id

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, traceback: Any) -> None:
        from huggingface_hub.errors import HfHubHTTPError

        from .upload.errors import http_status

        if isinstance(error, HfHubHTTPError) and http_status(error) in (401, 403):
            namespace = self.space_id.split("/")[0]
            raise ShareError(f"the Hub refused to create or change the Space {self.space_id}: your token cannot "
                             f"write to '{namespace}'. Pass a Space in your own namespace with --space (space_id=), "
                             "or log in with a write token (`hf auth login`).") from None


__all__ = ["ReadError", "ShareError", "Shared", "share", "space_files", "unshare"]
