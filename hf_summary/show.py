"""`hf-summary show`: TensorBoard on a local logdir, or live on a repo's or a bucket's logs read from the Hub.

On the Hub, TensorBoard reads the event files through `hf://` (huggingface_hub's `HfFileSystem`, TensorBoard's
Python loader), not from a snapshot downloaded first, so new values appear while it runs:

- a bucket (`hf://buckets/ns/name`): the file system follows the bucket's change feed (`live_follow=True`); a
  change drops the cached listing of the folders above the changed file, and TensorBoard's next reload (every
  `--reload-interval` seconds) sees the new sizes and reads the new records. Nothing is asked of the Hub while
  nothing changes.
- a repo (`ns/name`): a repo has no change feed. Before each reload the branch's head commit is asked for (one
  request, `HfApi.repo_info`), and every read is pinned to that commit (`ns/name@<sha>/...`): listings and sizes of
  a commit never change, so they are cached for as long as it is the head, and a new commit gets fresh ones.

One `HfFileSystem` of our own serves every `hf://` path TensorBoard reads (registered in TensorBoard's gfile for
the `hf` prefix): fsspec's shared instances are per thread, and TensorBoard reloads from new threads, each of which
would start with an empty cache or an old one.

Offline: every byte TensorBoard reads from the Hub is also written, at its offset, into a local mirror of the
folder (under `$HF_HOME/hf_summary/show/`). `HF_HUB_OFFLINE=1 hf-summary show ...` serves that mirror: what was
last read, never anything TensorBoard did not see.

Runs are named after their folder: `show runs/mlp` lists `mlp`; a folder of runs lists each by its path below it.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from . import defaults
from .source import HubSource, LocalSource, ReadError, check_exists, open_source
from .validation import REPO_TYPES

logger = logging.getLogger(__name__)

RELOAD_INTERVAL = 5.0  # seconds between TensorBoard reloads (TensorBoard's own default)


ShowError = ReadError  # why the runs cannot be shown, in words the user can act on


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of `hf-summary show`."""
    parser.add_argument("target", metavar="LOGDIR_OR_REPO_OR_BUCKET",
                        help="a local folder of runs, a repo id, or a bucket (hf://buckets/ns/name), read live")
    parser.add_argument("--port", type=int, default=0, help="port to serve on (default: 0, a free one)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="interface to serve on (default: 127.0.0.1; 0.0.0.0 shows the runs to your network)")
    parser.add_argument("--repo-type", default=defaults.REPO_TYPE, choices=REPO_TYPES,
                        help="the kind of repo (default: %(default)s)")
    parser.add_argument("--revision", default=None, help="branch, tag or commit to show (default: main)")
    parser.add_argument("--path-in-repo", default=defaults.PATH_IN_REPO,
                        help=f"repo or bucket folder holding the runs (default: {defaults.PATH_IN_REPO})")
    parser.add_argument("--reload-interval", type=float, default=RELOAD_INTERVAL,
                        help="seconds between TensorBoard's reloads, and (for a repo) between checks for a new "
                             "commit (default: %(default)s)")
    parser.add_argument("--token", default=None, help="Hub token, for a private repo (default: HF_TOKEN or "
                                                      "`hf auth login`)")


def main(args: argparse.Namespace) -> None:
    """Start TensorBoard for `args.target`, print its URL and serve until SIGINT or SIGTERM.

    SIGTERM does what Ctrl-C does: while serving, TensorBoard stops and this returns; before that (while the Hub is
    asked), KeyboardInterrupt.

    Raises:
        ShowError: the runs cannot be shown (the error says why).
        KeyboardInterrupt: Ctrl-C or SIGTERM before TensorBoard serves.

    Example:
        ```sh
        $ hf-summary show hf://buckets/me/logs
        TensorBoard for hf://buckets/me/logs (tensorboard/, live) at http://127.0.0.1:40117/  (Ctrl-C to stop)
        ```
    """
    stopped = threading.Event()

    def stop(signum: int, frame: object) -> None:
        if serving.is_set():
            stopped.set()
        else:
            raise KeyboardInterrupt

    serving = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stop)
    if args.reload_interval <= 0:
        raise ShowError(f"--reload-interval must be a positive number of seconds, got {args.reload_interval}.")
    runs = open_runs(args.target, repo_type=args.repo_type, revision=args.revision, path_in_repo=args.path_in_repo,
                     token=args.token)
    url = start_tensorboard(runs, host=args.host, port=args.port, reload_interval=args.reload_interval)
    serving.set()
    print(f"TensorBoard for {runs.describe()} at {url}  (Ctrl-C to stop)", flush=True)
    stopped.wait()


class LocalRuns:
    """The runs of a local folder: each folder holding event files, named by its path below `root`, or by the root's
    own name for the root itself."""

    def __init__(self, root: Path, *, name: str | None = None, what: str | None = None) -> None:
        self.root = root.resolve()
        self.logdir = str(self.root)
        self.name = name or self.root.name or "."
        self._what = what or str(root)

    def describe(self) -> str:
        return self._what

    def refresh(self) -> None:
        """Nothing to refresh: TensorBoard lists a local folder itself at each reload."""

    def runs(self) -> list[tuple[str, str]]:
        folders = sorted({path.parent for path in self.root.rglob(defaults.ALLOW_PATTERNS) if path.is_file()})
        return [(str(folder), _run_name(folder.relative_to(self.root).as_posix(), self.name)) for folder in folders]

    def register(self) -> None:
        """Nothing to register: TensorBoard reads local paths itself."""


def _run_name(relpath: str, root_name: str) -> str:
    return root_name if relpath in ("", ".") else relpath


class HubRuns:
    """A repo's or a bucket's folder of runs, read by TensorBoard through `hf://` and kept fresh.

    Args:
        prefix: the `hf://` path of the repo or bucket without the protocol: `buckets/ns/name`, `ns/name`,
            `datasets/ns/name`.
        folder: the folder of runs inside it ("" for the whole repo or bucket).
        revision: a repo's branch, tag or commit (None: main); None for a bucket.
        mirror: the local folder every byte read is copied to, for offline viewing.
    """

    def __init__(self, source: HubSource, *, token: str | None) -> None:
        from huggingface_hub import HfApi, HfFileSystem

        self.source = source
        self.token = token
        self.prefix = source.prefix
        self.folder = source.folder
        self.bucket_id = source.bucket_id
        self.repo_id = source.repo_id
        self.repo_type = source.repo_type
        self.revision = source.revision
        self.mirror = source.mirror
        self.name = source.name
        self.logdir = f"hf://{self.prefix}/{self.folder}".rstrip("/")
        self.api = HfApi(token=token)
        # Our own instance (not fsspec's per-thread ones); a bucket's listings follow its change feed.
        self.fs = HfFileSystem(token=token, live_follow=self.bucket_id is not None, skip_instance_cache=True)
        self.sha: str | None = None  # a repo's commit every read is pinned to (set by the reload thread only)

    def describe(self) -> str:
        return f"{self.source.describe()[:-1]}, live)"

    def check(self) -> None:
        """Ask the Hub whether the repo or bucket exists and holds event files.

        Raises:
            ShowError: it does not, or cannot be read (the message says which).
        """
        from .read.fetch import list_event_files

        self.sha = check_exists(self.source, token=self.token)
        list_event_files(self.source, token=self.token, sha=self.sha)

    def refresh(self) -> None:
        """A repo: pin the reads to the revision's head commit, if it moved. A bucket: its change feed does it."""
        if self.bucket_id is not None:
            return
        info = self.api.repo_info(self.repo_id or "", repo_type=self.repo_type, revision=self.revision)
        old, self.sha = self.sha, info.sha
        if old is not None and old != self.sha:
            stale = f"{self.prefix}@{old}"
            for path in [path for path in self.fs.dircache if path == stale or path.startswith(stale + "/")]:
                self.fs.dircache.pop(path, None)
            logger.info("%s: new commit %s", self.repo_id, self.sha)

    def fs_path(self, path: str) -> str:
        """The file-system path that reads TensorBoard's `hf://` path now (a repo's pinned to the head commit)."""
        if path.startswith("hf://"):
            path = path[len("hf://"):]
        if self.bucket_id is None and self.sha and (path == self.prefix or path.startswith(self.prefix + "/")):
            return f"{self.prefix}@{self.sha}{path[len(self.prefix):]}"
        return path

    def _event_files(self) -> list[str]:
        from fnmatch import fnmatch

        root = self.fs_path(self.logdir)
        try:
            found = self.fs.find(root)
        except FileNotFoundError:
            return []
        return [path[len(root):].lstrip("/") for path in found
                if isinstance(path, str) and fnmatch(path.rsplit("/", 1)[-1], defaults.ALLOW_PATTERNS)]

    def runs(self) -> list[tuple[str, str]]:
        folders = sorted({path.rsplit("/", 1)[0] if "/" in path else "" for path in self._event_files()})
        return [(f"{self.logdir}/{folder}".rstrip("/"), _run_name(folder, self.name)) for folder in folders]

    def mirror_read(self, path: str, offset: int, data: bytes) -> None:
        """Copy bytes TensorBoard read from `path` (an `hf://` path under the logdir) into the mirror, at `offset`."""
        relpath = path[len(self.logdir):].lstrip("/")
        if not data or not relpath or ".." in relpath.split("/"):
            return
        target = self.mirror / relpath
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "r+b" if target.exists() else "wb") as file:
                file.seek(offset)
                file.write(data)
        except OSError as error:  # a full disk costs the offline copy, not the live view
            logger.warning("Could not keep %s for offline viewing: %s", target, error)

    def register(self) -> None:
        """Make TensorBoard read `hf://` paths through this object's file system."""
        from tensorboard.compat.tensorflow_stub.io import gfile

        gfile.register_filesystem("hf", _hub_gfile(self))


def _hub_gfile(runs: HubRuns) -> Any:
    """TensorBoard's gfile file system for `hf://`: fsspec's, through `runs.fs`, every read mirrored."""
    from tensorboard.compat.tensorflow_stub.io import gfile

    class HubGFile(gfile.FSSpecFileSystem):  # type: ignore[misc]
        def _fs_path(self, filename: str | bytes) -> tuple[Any, str]:
            if isinstance(filename, bytes):
                filename = filename.decode("utf-8")
            return runs.fs, runs.fs_path(filename)

        def read(self, filename: str | bytes, binary_mode: bool = False, size: int | None = None,
                 continue_from: dict[str, int] | None = None) -> tuple[Any, dict[str, int]]:
            data, token = super().read(filename, binary_mode, size, continue_from)
            if binary_mode:
                name = filename.decode("utf-8") if isinstance(filename, bytes) else filename
                offset = (continue_from or {}).get("opaque_offset") or 0
                runs.mirror_read(name, offset, data)
            return data, token

        def glob(self, filename: str | bytes) -> list[str]:
            name = filename.decode("utf-8") if isinstance(filename, bytes) else filename
            fs, path = self._fs_path(name)
            pinned = runs.fs_path(runs.logdir)
            return [runs.logdir + found[len(pinned):] if found.startswith(pinned) else "hf://" + found
                    for found in fs.glob(path)]

    return HubGFile()


def open_runs(
    target: str,
    *,
    repo_type: str = defaults.REPO_TYPE,
    revision: str | None = None,
    path_in_repo: str | None = defaults.PATH_IN_REPO,
    token: str | None = None,
) -> LocalRuns | HubRuns:
    """The runs `show` serves: a local folder, a repo or bucket read live, or (offline) the mirror of what was read.

    Raises:
        ShowError: the target is neither a folder nor a repo id or bucket; it cannot be read; it has no event files;
            offline, nothing of it was read before.
    """
    from huggingface_hub import constants

    source = open_source(target, repo_type=repo_type, revision=revision, path_in_repo=path_in_repo, token=token)
    if isinstance(source, LocalSource):
        return LocalRuns(source.path)
    if constants.HF_HUB_OFFLINE:
        if not any(path.is_file() for path in source.mirror.rglob(defaults.ALLOW_PATTERNS)):
            raise ShowError(f"HF_HUB_OFFLINE is set and nothing of {source.describe()} was shown before: run "
                            "`hf-summary show` on it once online.")
        return LocalRuns(source.mirror, name=source.name,
                         what=f"{source.describe()[:-1]}, offline: what was last read, from {source.mirror})")
    runs = HubRuns(source, token=token)
    runs.check()
    return runs


def start_tensorboard(runs: LocalRuns | HubRuns | Path, *, host: str = "127.0.0.1", port: int = 0,
                      reload_interval: float = RELOAD_INTERVAL) -> str:
    """Serve TensorBoard on `runs` from threads of this process and return its URL.

    Before each reload the runs are refreshed (a repo's head commit) and listed, each named after its folder.

    Raises:
        ShowError: TensorBoard is not installed, or cannot listen on `host:port`.
    """
    try:
        from tensorboard import program
        from tensorboard.backend.event_processing import data_ingester
    except ImportError:
        raise ShowError("`hf-summary show` needs TensorBoard: pip install 'hf-summary[tensorboard]'.") from None
    if isinstance(runs, Path):
        runs = LocalRuns(runs)
    source = runs
    source.register()

    class Ingester(data_ingester.LocalDataIngester):  # type: ignore[misc]
        """TensorBoard's Python loader, reloading our runs (named after their folders) after a refresh."""

        def start(self) -> None:
            threading.Thread(target=self._reload_forever, name="Reloader", daemon=True).start()

        def _reload_forever(self) -> None:
            wake = threading.Event()
            while True:
                try:
                    source.refresh()
                    for path, name in source.runs():
                        self._multiplexer.AddRun(path, name)
                    self._multiplexer.Reload()
                except Exception as error:  # the Hub may fail a moment: what was read stays served
                    logger.warning("Reloading the runs failed, trying again in %g s: %s", reload_interval, error)
                wake.wait(reload_interval)

    class Board(program.TensorBoard):  # type: ignore[misc]
        def _make_data_ingester(self) -> Any:
            ingester = Ingester(self.flags)
            ingester.start()
            return ingester

    board = Board()
    board.configure(argv=[sys.argv[0], "--logdir", source.logdir, "--host", host, "--port", str(port),
                          "--load_fast", "false", "--reload_interval", f"{reload_interval:g}"])
    try:
        return str(board.launch())
    except program.TensorBoardServerException as error:
        raise ShowError(f"TensorBoard could not start on {host}:{port}: {error.msg}") from None
