"""`hf-summary show`: TensorBoard on a local logdir, or on a repo's logs downloaded from the Hub.

Given a repo id, the event files under `--path-in-repo` are downloaded into huggingface_hub's cache first (only what
changed since the last time), so the run can be looked at offline afterwards (with `HF_HUB_OFFLINE=1`).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from . import defaults
from .validation import REPO_TYPES, validate_path_in_repo, validate_repo_id


class ShowError(Exception):
    """Why the runs cannot be shown, in words the user can act on."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of `hf-summary show`."""
    parser.add_argument("target", metavar="LOGDIR_OR_REPO_ID",
                        help="a local folder of runs, or a repo id whose logs are downloaded and shown")
    parser.add_argument("--port", type=int, default=0, help="port to serve on (default: 0, a free one)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="interface to serve on (default: 127.0.0.1; 0.0.0.0 shows the runs to your network)")
    parser.add_argument("--repo-type", default=defaults.REPO_TYPE, choices=REPO_TYPES,
                        help="the kind of repo (default: %(default)s)")
    parser.add_argument("--revision", default=None, help="branch, tag or commit to show (default: main)")
    parser.add_argument("--path-in-repo", default=defaults.PATH_IN_REPO,
                        help=f"repo folder holding the runs (default: {defaults.PATH_IN_REPO})")
    parser.add_argument("--token", default=None, help="Hub token, for a private repo (default: HF_TOKEN or "
                                                      "`hf auth login`)")


def main(args: argparse.Namespace) -> None:
    """Start TensorBoard for `args.target`, print its URL and serve until SIGINT or SIGTERM.

    Raises:
        ShowError: the runs cannot be shown (the error says why).
        KeyboardInterrupt: Ctrl-C during the download.

    Example:
        ```sh
        $ hf-summary show me/my-experiment --path-in-repo tensorboard
        TensorBoard for me/my-experiment (tensorboard/) at http://127.0.0.1:40117/  (Ctrl-C to stop)
        ```
    """
    local = Path(args.target)
    if local.is_dir():
        logdir, what = local, str(local)
    else:
        logdir = download_logs(args.target, repo_type=args.repo_type, revision=args.revision,
                               path_in_repo=args.path_in_repo, token=args.token)
        what = f"{args.target} ({args.path_in_repo.strip('/')}/)" if args.path_in_repo else args.target
    stopped = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopped.set())
    url = start_tensorboard(logdir, host=args.host, port=args.port)
    print(f"TensorBoard for {what} at {url}  (Ctrl-C to stop)", flush=True)
    stopped.wait()


def download_logs(
    repo_id: str,
    *,
    repo_type: str = defaults.REPO_TYPE,
    revision: str | None = None,
    path_in_repo: str | None = defaults.PATH_IN_REPO,
    token: str | None = None,
) -> Path:
    """Download a repo's event files into huggingface_hub's cache and return the folder holding the runs.

    Args:
        repo_id: the repo, `namespace/name`.
        repo_type: "model", "dataset" or "space".
        revision: branch, tag or commit; None is the default branch.
        path_in_repo: the repo folder holding the runs; None or "" for the whole repo.
        token: the Hub token; defaults to the one huggingface_hub finds.

    Raises:
        ShowError: the argument is neither a folder nor a repo id; the repo cannot be read; it has no event files
            under `path_in_repo`.

    Example:
        ```py
        >>> download_logs("me/my-experiment")
        PosixPath('/home/me/.cache/huggingface/hub/models--me--my-experiment/snapshots/3f2a.../tensorboard')
        ```
    """
    try:
        validate_repo_id(repo_id)
        validate_path_in_repo(path_in_repo)
    except ValueError as error:
        raise ShowError(f"'{repo_id}' is not a local folder, and not a repo id either: {error}") from None
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    folder = (path_in_repo or "").strip("/")
    pattern = defaults.ALLOW_PATTERNS
    try:
        snapshot = Path(snapshot_download(repo_id, repo_type=repo_type, revision=revision, token=token,
                                          allow_patterns=[f"{folder}/{pattern}" if folder else pattern]))
    except RepositoryNotFoundError:
        raise ShowError(f"'{repo_id}' is not a local folder, and no {repo_type} repo '{repo_id}' was found (or your "
                        "token cannot read it): check the path, or the repo id and --repo-type; for a private repo "
                        "log in with `hf auth login` or pass --token.") from None
    except (HfHubHTTPError, LocalEntryNotFoundError) as error:
        raise ShowError(f"Could not download the logs of '{repo_id}': {error}") from None
    logdir = snapshot / folder
    if not any(logdir.rglob(defaults.ALLOW_PATTERNS)):
        raise ShowError(f"'{repo_id}' has no event files under '{folder or '/'}': pass the folder the writer used "
                        "with --path-in-repo.")
    return logdir


def start_tensorboard(logdir: Path, *, host: str = "127.0.0.1", port: int = 0) -> str:
    """Serve TensorBoard on `logdir` from a thread of this process and return its URL.

    Args:
        logdir: the folder of runs.
        host: the interface to listen on.
        port: the port; 0 picks a free one.

    Raises:
        ShowError: TensorBoard is not installed, or cannot listen on `host:port`.
    """
    try:
        from tensorboard import program
    except ImportError:
        raise ShowError("`hf-summary show` needs TensorBoard: pip install 'hf-summary[tensorboard]'.") from None
    board = program.TensorBoard()
    board.configure(argv=[sys.argv[0], "--logdir", str(logdir), "--host", host, "--port", str(port)])
    try:
        return board.launch()
    except program.TensorBoardServerException as error:
        raise ShowError(f"TensorBoard could not start on {host}:{port}: {error.msg}") from None
