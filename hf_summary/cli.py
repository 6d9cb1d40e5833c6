"""The `hf-summary` command line: push a logdir (`sync`), keep pushing it (`watch`), see what is pending (`status`),
or look at the runs in TensorBoard (`show`).

Exit codes: 0 success (for `status`: nothing pending), 1 upload failed or (for `status`) something pending,
2 bad input, 3 token rejected.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from . import defaults
from .upload.committer import Committer
from .upload.hub import HubAuthError, HubClient, is_offline, redact
from .upload.spec import UploadSpec
from .upload.state import UploadState
from .upload.uploader import Uploader, default_ignore_patterns
from .validation import REPO_TYPES, validate_token

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_AUTH = 0, 1, 2, 3
EXIT_INTERRUPTED = 130  # the shell's code for a command ended by Ctrl-C

logger = logging.getLogger("hf_summary")


class CliError(Exception):
    """A problem with the command's input: printed without a traceback, exit code 2."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.command(args)
    except CliError as error:
        print(f"hf-summary: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except HubAuthError as error:
        print(f"hf-summary: error: {error}", file=sys.stderr)
        return EXIT_AUTH


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hf-summary", description="TensorBoard logs on the Hugging Face Hub.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what is done")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    sync = commands.add_parser("sync", help="upload what is pending in a logdir, resumably")
    _target_arguments(sync)
    sync.add_argument("--private", action="store_true", help="create the repo private (if it does not exist)")
    sync.add_argument("--squash", nargs="?", const=True, default=False, type=_squash, metavar="N",
                      help="squash the branch history to one commit afterwards (with N: only if it has more than N "
                           "commits)")
    sync.set_defaults(command=_sync)

    watch = commands.add_parser("watch", help="upload a logdir written by any program, until interrupted")
    _target_arguments(watch)
    watch.add_argument("--every", type=float, default=5.0, help="minutes between pushes (default: 5)")
    watch.add_argument("--private", action="store_true", help="create the repo private (if it does not exist)")
    watch.add_argument("--squash", nargs="?", const=True, default=False, type=_squash, metavar="N",
                       help="squash the branch history after each push (with N: when it has more than N commits)")
    watch.set_defaults(command=_watch)

    status = commands.add_parser("status", help="bytes committed and pending, per file")
    status.add_argument("logdir", type=Path)
    status.add_argument("--include", nargs="*", default=[defaults.ALLOW_PATTERNS], help="patterns of files to upload")
    status.add_argument("--exclude", nargs="*", default=None, help="patterns of files not to upload")
    status.set_defaults(command=_status)

    from . import show  # imported here: `hf-summary show` needs TensorBoard, the other commands do not

    show_parser = commands.add_parser("show", help="start TensorBoard on a logdir, or on a repo's logs (downloaded)")
    show.add_arguments(show_parser)
    show_parser.set_defaults(command=_show)
    return parser


def _squash(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a number of commits >= 1, got {value!r}")
    return number


def _target_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("logdir", type=Path, help="the folder the writer logged to")
    parser.add_argument("repo_id", help="the repo, e.g. username/my-run")
    parser.add_argument("--path-in-repo", default=defaults.PATH_IN_REPO,
                        help="repo folder; files land in <path-in-repo>/<logdir name>/ (default: %(default)s)")
    parser.add_argument("--repo-type", default=defaults.REPO_TYPE, choices=REPO_TYPES)
    parser.add_argument("--revision", default=defaults.REVISION, help="branch to push to (default: %(default)s)")
    parser.add_argument("--include", nargs="*", default=[defaults.ALLOW_PATTERNS], help="patterns of files to upload")
    parser.add_argument("--exclude", nargs="*", default=None, help="patterns of files not to upload")
    parser.add_argument("--token", default=None, help="Hub token (default: HF_TOKEN or `hf auth login`)")


def _committer(args: argparse.Namespace, every: float = defaults.COMMIT_EVERY, *, batch: bool = False) -> Committer:
    """The committer of the command's repo, with the logdir as its one member (its thread not started)."""
    if is_offline():
        raise CliError("HF_HUB_OFFLINE is set, and this command needs the Hub: unset HF_HUB_OFFLINE (or set it to 0) "
                       "and run it again. Nothing was sent; the logs stay on disk.")
    if not args.logdir.is_dir():
        raise CliError(f"logdir '{args.logdir}' does not exist or is not a folder.")
    try:
        validate_token(args.token, "--token")
        spec = UploadSpec(args.repo_id, repo_type=args.repo_type, revision=args.revision,
                          path_in_repo=args.path_in_repo, allow_patterns=args.include,
                          ignore_patterns=args.exclude or (), squash=args.squash, private=args.private or None)
    except ValueError as error:
        raise CliError(str(error)) from None
    committer = Committer(HubClient(spec.target(), token=args.token, batch_uploads=batch), every=every)
    committer.join(Uploader(args.logdir, spec), every=every)
    return committer


def _sync(args: argparse.Namespace) -> int:
    committer = _committer(args, batch=True)  # a person waits: huggingface_hub's one upload bar is the progress
    (uploader,) = committer.uploaders
    pending = uploader.pending()
    if pending:
        print(f"Uploading {len(pending)} file(s), {sum(file.size for file in pending)} bytes, to {args.repo_id}...",
              flush=True)
    try:
        info = committer.push()
    except HubAuthError:
        raise
    except Exception as error:
        print(f"hf-summary: upload failed, nothing is lost; run the same command again to resume: {redact(str(error))}",
              file=sys.stderr)
        return EXIT_FAILED
    left = uploader.pending()
    if left:
        print(f"hf-summary: {len(left)} file(s) changed during the upload; run again to send them.", file=sys.stderr)
        return EXIT_FAILED
    target = committer.client.target
    if info is None:
        print(f"Nothing to upload: {args.logdir} is already in {target.url()}/tree/{target.revision}")
    else:
        print(f"Uploaded {len(pending)} file(s) to {target.url()}/tree/{target.revision}/{uploader.path_in_repo} "
              f"(commit {info.oid[:12]})")
    return EXIT_OK


def _watch(args: argparse.Namespace) -> int:
    if not args.every > 0:
        raise CliError(f"--every must be a positive number of minutes, got {args.every}.")
    committer = _committer(args, every=args.every).start()
    try:
        committer.connected.result(timeout=60)
    except HubAuthError:
        committer.stop()
        raise
    except Exception as error:
        print(f"hf-summary: the Hub cannot be reached yet ({error}); watching, the push will retry.", file=sys.stderr)
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    print(f"Watching {args.logdir}: pushing to {committer.client.target.url()} every {args.every:g} min. "
          "Ctrl-C makes a final push and stops.", flush=True)
    done.wait()
    print("Final push...", flush=True)
    try:
        committer.trigger(deadline=committer.clock() + 300).result(timeout=300)
    except Exception as error:
        print(f"hf-summary: final push failed ({error}); run `hf-summary sync` with the same arguments.",
              file=sys.stderr)
        return EXIT_FAILED
    finally:
        committer.stop()
    return EXIT_OK


def _show(args: argparse.Namespace) -> int:
    from . import show

    try:
        show.main(args)
    except show.ShowError as error:
        raise CliError(str(error)) from None
    except KeyboardInterrupt:
        print("hf-summary: interrupted; files already downloaded stay in the cache.", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_OK


def _status(args: argparse.Namespace) -> int:
    from .upload.plan import UploadPlanner

    if not args.logdir.is_dir():
        raise CliError(f"logdir '{args.logdir}' does not exist or is not a folder.")
    planner = UploadPlanner(args.logdir, args.include, default_ignore_patterns(args.exclude))
    targets = UploadState(args.logdir, "").all_targets() or {"(never uploaded)": {}}
    anything_pending = False
    for key, committed in targets.items():
        pending = {file.relpath: file.size for file in planner.plan(committed)}
        print(key)
        print(f"  {'file':<64} {'committed':>12} {'pending':>12}")
        for relpath in sorted(set(committed) | set(pending)):
            done = committed[relpath].size if relpath in committed else 0
            todo = max(0, pending[relpath] - done) if relpath in pending else 0
            print(f"  {relpath:<64} {done:>12} {todo:>12}")
        anything_pending = anything_pending or bool(pending)
    print("pending: yes" if anything_pending else "pending: nothing")
    return EXIT_FAILED if anything_pending else EXIT_OK


if __name__ == "__main__":
    # Run the importable module's main, not this __main__ copy: other modules import hf_summary.cli, and its
    # exception classes must be the ones main() catches.
    from hf_summary.cli import main as _main

    sys.exit(_main())
