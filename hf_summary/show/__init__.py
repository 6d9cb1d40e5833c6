"""`hf-summary show`: TensorBoard on a local logdir, or live on a repo's or a bucket's logs, with its fast loader.

TensorBoard's fast loader (RustBoard, `--load_fast=true`) reads local folders only. So a repo or a bucket is served
from a local mirror of its event files (`$HF_HOME/hf_summary/show/<repo or bucket>/<folder>/`, the one
`read_scalars` keeps), which a thread keeps fresh (`mirror.py`): it follows the bucket's change feed, or the repo's
head commit, and fetches only the new bytes of each event file; a file that got shorter or was replaced is fetched
again whole and the loader starts over. TensorBoard reads the mirror (`server.py`); where its fast loader cannot run,
`show` says so once and uses its Python loader on the mirror.

Offline (`HF_HUB_OFFLINE=1`), the mirror is served as it is: what was last fetched.

Runs are named after their folder: `show runs/mlp` lists `mlp`; a folder of runs lists each by its path below it.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
from pathlib import Path

from .. import defaults
from ..read.fetch import RemoteFile, list_event_files, remove_stale
from ..source import HubSource, LocalSource, ReadError, Source, check_exists, open_source
from ..validation import REPO_TYPES
from .mirror import Mirror
from .server import RELOAD_INTERVAL, Board, preload

logger = logging.getLogger(__name__)

ShowError = ReadError  # why the runs cannot be shown, in words the user can act on
FIRST_FETCH_WAIT = 1.0  # seconds the data server waits for the mirror's first fetch before it reads it

__all__ = ["RELOAD_INTERVAL", "ShowError", "Shown", "add_arguments", "main", "open_show"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of `hf-summary show`."""
    parser.add_argument("target", metavar="LOGDIR_OR_REPO_OR_BUCKET",
                        help="a local folder of runs, a repo id, or a bucket (hf://buckets/ns/name), read live")
    # A string default goes through `type`: a bad PORT is reported as a bad --port, and only by `show`.
    parser.add_argument("--port", type=int, default=os.environ.get("PORT") or "0",
                        help="port to serve on (default: $PORT, as in a Space or a container; else 0, a free one)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="interface to serve on (default: 127.0.0.1; 0.0.0.0 shows the runs to your network)")
    parser.add_argument("--repo-type", default=defaults.REPO_TYPE, choices=REPO_TYPES,
                        help="the kind of repo (default: %(default)s)")
    parser.add_argument("--revision", default=None, help="branch, tag or commit to show (default: main)")
    parser.add_argument("--path-in-repo", default=defaults.PATH_IN_REPO,
                        help=f"repo or bucket folder holding the runs (default: {defaults.PATH_IN_REPO})")
    parser.add_argument("--reload-interval", type=float, default=RELOAD_INTERVAL,
                        help="seconds between checks of a repo's head commit (a bucket's change feed tells at once), "
                             "and between reloads of TensorBoard's Python loader where the fast one cannot run "
                             "(default: %(default)s)")
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
    serving = threading.Event()

    def stop(signum: int, frame: object) -> None:
        if serving.is_set():
            stopped.set()
        else:
            raise KeyboardInterrupt

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stop)
    if args.reload_interval <= 0:
        raise ShowError(f"--reload-interval must be a positive number of seconds, got {args.reload_interval}.")
    preload()  # TensorBoard's imports, while the Hub is asked
    shown = open_show(args.target, repo_type=args.repo_type, revision=args.revision, path_in_repo=args.path_in_repo,
                      token=args.token)
    try:
        url = shown.start(host=args.host, port=args.port, reload_interval=args.reload_interval)
        serving.set()
        print(f"TensorBoard for {shown.describe()} at {url}  (Ctrl-C to stop)", flush=True)
        stopped.wait()
    finally:
        shown.stop()


class Shown:
    """What `show` serves: a local folder, or the mirror of a repo's or bucket's folder (kept fresh online).

    Made by `open_show`, which checks the source; nothing runs until `start`.
    """

    def __init__(self, source: Source, folder: Path, *, token: str | None = None,
                 listing: dict[str, RemoteFile] | None = None, sha: str | None = None) -> None:
        self.source = source
        self.folder = folder
        self.token = token
        self.listing = listing  # a repo's or bucket's event files, online; None: local, or offline
        self.sha = sha
        self.board: Board | None = None
        self.mirror: Mirror | None = None

    def describe(self) -> str:
        if isinstance(self.source, LocalSource):
            return self.source.describe()
        if self.listing is None:
            return f"{self.source.describe()[:-1]}, offline: what was last read, from {self.folder})"
        return f"{self.source.describe()[:-1]}, live)"

    def start(self, *, host: str = "127.0.0.1", port: int = 0, reload_interval: float = RELOAD_INTERVAL,
              fast: bool | None = None) -> str:
        """Start the mirror's thread (online) and TensorBoard; return TensorBoard's URL.

        Raises:
            ShowError: TensorBoard is not installed, or cannot listen on `host:port`.
        """
        name = self.source.name
        board = self.board = Board(self.folder, name=name, host=host, port=port, reload_interval=reload_interval,
                                   fast=fast)
        root_is_run = None
        if self.listing is not None:
            assert isinstance(self.source, HubSource)
            self.folder.mkdir(parents=True, exist_ok=True)
            remove_stale(self.source, self.listing)
            root_is_run = any("/" not in relpath for relpath in self.listing)
            self.mirror = Mirror(self.source, self.listing, self.sha, token=self.token, interval=reload_interval,
                                 on_change=board.changed).start()
            # The data server reads the mirror at once, then every second: started once the first fetch is done
            # (or has taken a while), it finds the whole run in its first read.
            self.mirror.synced.wait(FIRST_FETCH_WAIT)
        try:
            board.spawn_loader(root_is_run=root_is_run)  # it reads while TensorBoard starts
            return board.start(root_is_run=root_is_run)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self.mirror is not None:
            self.mirror.stop()
        if self.board is not None:
            self.board.stop()


def open_show(
    target: str,
    *,
    repo_type: str = defaults.REPO_TYPE,
    revision: str | None = None,
    path_in_repo: str | None = defaults.PATH_IN_REPO,
    token: str | None = None,
) -> Shown:
    """What `show` serves for `target`: a local folder, a repo's or bucket's mirror (after checking that it holds
    event files), or, offline, the mirror as it is.

    Raises:
        ShowError: the target is not there, cannot be read, holds no event files, or (offline) was never read.
    """
    from ..upload.hub import is_offline

    source = open_source(target, repo_type=repo_type, revision=revision, path_in_repo=path_in_repo, token=token)
    if isinstance(source, LocalSource):
        return Shown(source, source.path)
    if is_offline():
        if not any(path.is_file() for path in source.mirror.rglob(defaults.ALLOW_PATTERNS)):
            raise ShowError(f"HF_HUB_OFFLINE is set and nothing of {source.describe()} was read before: run "
                            "`hf-summary show` on it once online (unset HF_HUB_OFFLINE).")
        return Shown(source, source.mirror)
    sha = check_exists(source, token=token)
    return Shown(source, source.mirror, token=token, listing=list_event_files(source, token=token, sha=sha), sha=sha)
