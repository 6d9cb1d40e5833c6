"""The `hf-summary` command line: push a logdir (`sync`), keep pushing it (`watch`), see what is pending (`status`),
look at the runs in TensorBoard (`show`), share them in a live TensorBoard on the Hub (`share`), or write their scalars
to a file (`export`).

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
from .source import ReadError, check_output, local_folder, parse_target
from .upload.errors import HubAuthError, describe
from .upload.hub import HubClient, RepoRef, is_offline
from .upload.schedule import Schedule, open_schedule
from .upload.spec import UploadSpec
from .upload.state import STATE_DIR, UploadState, split_target_key
from .upload.uploader import Uploader, default_ignore_patterns
from .validation import REPO_TYPES, TARGET_TYPES, validate_token

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
    except (CliError, ReadError) as error:
        print(f"hf-summary: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except HubAuthError as error:
        print(f"hf-summary: error: {error}", file=sys.stderr)
        return EXIT_AUTH


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hf-summary", description="TensorBoard logs on the Hugging Face Hub.")
    from . import __version__

    parser.add_argument("-v", "--verbose", action="store_true", help="log what is done")
    parser.add_argument("--version", action="version", version=f"hf-summary {__version__}")
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

    status = commands.add_parser("status", help="per file, bytes on disk and on the Hub; exit 1 if the Hub lacks any")
    status.add_argument("logdir", type=Path, help="a run's folder, or a folder of runs (each is reported)")
    status.add_argument("--include", nargs="*", default=[defaults.ALLOW_PATTERNS], help="patterns of files to upload")
    status.add_argument("--exclude", nargs="*", default=None, help="patterns of files not to upload")
    status.add_argument("--local", action="store_true",
                        help="compare with the local upload state instead of asking the Hub (works offline)")
    status.add_argument("--token", default=None, help="Hub token (default: HF_TOKEN or `hf auth login`)")
    status.set_defaults(command=_status)

    from . import show  # imported here: `hf-summary show` needs TensorBoard, the other commands do not

    show_parser = commands.add_parser("show", help="TensorBoard on a logdir, or live on a repo's or bucket's logs")
    show.add_arguments(show_parser)
    show_parser.set_defaults(command=_show)

    share = commands.add_parser("share", help="a live TensorBoard on the Hub: a Docker Space showing a repo's or "
                                              "bucket's runs")
    share.add_argument("source", metavar="REPO_OR_BUCKET", help="a repo id, or a bucket (hf://buckets/ns/name)")
    share.add_argument("--space", default=None, metavar="NS/NAME",
                       help="the Space to create or update (default: <your name>/<source name>-tensorboard)")
    share.add_argument("--path-in-repo", default=defaults.PATH_IN_REPO,
                       help="repo or bucket folder holding the runs (default: %(default)s)")
    share.add_argument("--repo-type", default=defaults.REPO_TYPE, choices=REPO_TYPES,
                       help="the kind of repo (default: %(default)s)")
    visibility = share.add_mutually_exclusive_group()
    visibility.add_argument("--public", dest="private", action="store_false", default=None,
                            help="anyone with the link sees the runs (default: as private as the source)")
    visibility.add_argument("--private", dest="private", action="store_true", help="only you see the runs")
    share.add_argument("--token-secret", default=None, metavar="TOKEN",
                       help="a read token the Space keeps as its HF_TOKEN secret, to read a private source")
    share.add_argument("--delete", action="store_true", help="stop sharing: delete the Space")
    share.add_argument("--token", default=None, help="your Hub token, to create the Space (default: HF_TOKEN or "
                                                     "`hf auth login`)")
    share.set_defaults(command=_share)

    export = commands.add_parser("export", help="write the scalars of a logdir, repo or bucket to CSV or Parquet")
    export.add_argument("source", metavar="LOGDIR_OR_REPO_OR_BUCKET",
                        help="a local folder of runs, a repo id, or a bucket (hf://buckets/ns/name)")
    export.add_argument("-o", "--output", required=True, type=Path, metavar="FILE",
                        help="the file to write: FILE.csv, FILE.csv.gz or FILE.parquet")
    export.add_argument("--tags", nargs="*", default=None, help="only these tags (default: all)")
    export.add_argument("--runs", nargs="*", default=None, help="only these runs (default: all)")
    export.add_argument("--path-in-repo", default=defaults.PATH_IN_REPO,
                        help="repo or bucket folder holding the runs (default: %(default)s)")
    export.add_argument("--repo-type", default=defaults.REPO_TYPE, choices=REPO_TYPES,
                        help="the kind of repo (default: %(default)s)")
    export.add_argument("--revision", default=None, help="branch, tag or commit to read (default: main)")
    export.add_argument("--token", default=None, help="Hub token (default: HF_TOKEN or `hf auth login`)")
    export.set_defaults(command=_export)
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
    parser.add_argument("repo_id", help="the repo, e.g. username/my-run, or a bucket: hf://buckets/username/logs")
    parser.add_argument("--path-in-repo", default=defaults.PATH_IN_REPO,
                        help="repo folder; files land in <path-in-repo>/<logdir name>/ (default: %(default)s)")
    parser.add_argument("--repo-type", default=defaults.REPO_TYPE, choices=TARGET_TYPES,
                        help="the kind of repo (default: %(default)s)")
    parser.add_argument("--revision", default=defaults.REVISION, help="branch to push to (default: %(default)s)")
    parser.add_argument("--include", nargs="*", default=[defaults.ALLOW_PATTERNS], help="patterns of files to upload")
    parser.add_argument("--exclude", nargs="*", default=None, help="patterns of files not to upload")
    parser.add_argument("--token", default=None, help="Hub token (default: HF_TOKEN or `hf auth login`)")


def _schedule(args: argparse.Namespace, every: float = defaults.COMMIT_EVERY, *, interactive: bool = False,
              budget: int | None = None) -> Schedule:
    """The schedule of the command's repo, with the logdir as its one member (its thread not started).

    `sync` pushes at once (a person asked for it); `watch` keeps the repo's commit budget, as a writer does.
    """
    if is_offline():
        raise CliError("HF_HUB_OFFLINE is set, and this command needs the Hub: unset HF_HUB_OFFLINE (or set it to 0) "
                       "and run it again. Nothing was sent; the logs stay on disk.")
    local_folder(args.logdir)
    try:
        validate_token(args.token, "--token")
        repo_id, repo_type = parse_target(args.repo_id, args.repo_type)
        spec = UploadSpec(repo_id, repo_type=repo_type or defaults.REPO_TYPE, revision=args.revision,
                          path_in_repo=args.path_in_repo, allow_patterns=args.include,
                          ignore_patterns=args.exclude or (), squash=args.squash, private=args.private or None)
    except ValueError as error:
        raise CliError(str(error)) from None
    # No machine turns: a person asked for this push, and it may not skip.
    schedule = open_schedule(spec, token=args.token, every=every, interactive=interactive, token_option="--token",
                             max_commits_per_hour=budget, machine=False)
    schedule.join(Uploader(args.logdir, spec), every=every)
    return schedule


def _sync(args: argparse.Namespace) -> int:
    schedule = _schedule(args, interactive=True)  # a person waits: huggingface_hub's one upload bar is the progress
    (uploader,) = schedule.uploaders
    pending = uploader.pending()
    if pending:
        print(f"Uploading {len(pending)} file(s), {sum(file.size for file in pending)} bytes, to {args.repo_id}...",
              flush=True)
    try:
        info = schedule.run(once=True)
    except Exception as error:
        if isinstance(error.__cause__, HubAuthError):
            raise error.__cause__ from None
        print(f"hf-summary: upload failed, nothing is lost; run the same command again to resume: {describe(error)}",
              file=sys.stderr)
        return EXIT_FAILED
    left = uploader.pending()
    if left:
        print(f"hf-summary: {len(left)} file(s) changed during the upload; run again to send them.", file=sys.stderr)
        return EXIT_FAILED
    target = schedule.pusher.target
    if info is None:
        print(f"Nothing to upload: {args.logdir} is already in {target.web_url()}")
    else:
        print(f"Uploaded {len(pending)} file(s) to {target.web_url(uploader.path_in_repo)} "
              f"(commit {info.oid[:12]})")
    return EXIT_OK


def _watch(args: argparse.Namespace) -> int:
    if not args.every > 0:
        raise CliError(f"--every must be a positive number of minutes, got {args.every}.")
    schedule = _schedule(args, every=args.every, budget=defaults.MAX_COMMITS_PER_HOUR).start()
    try:
        schedule.connected.result(timeout=60)
    except HubAuthError:
        schedule.stop()
        raise
    except Exception as error:
        print(f"hf-summary: the Hub cannot be reached yet ({error}); watching, the push will retry.", file=sys.stderr)
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    print(f"Watching {args.logdir}: pushing to {schedule.pusher.target.web_url()} every {args.every:g} min. "
          "Ctrl-C makes a final push and stops.", flush=True)
    done.wait()
    print("Final push...", flush=True)
    try:
        schedule.trigger(deadline=schedule.clock() + 300).result(timeout=300)
    except Exception as error:
        print(f"hf-summary: final push failed ({error}); run `hf-summary sync` with the same arguments.",
              file=sys.stderr)
        return EXIT_FAILED
    finally:
        schedule.stop()
    return EXIT_OK


def _show(args: argparse.Namespace) -> int:
    from . import show

    try:
        show.main(args)
    except ReadError as error:
        raise CliError(str(error)) from None
    except KeyboardInterrupt:
        print("hf-summary: interrupted.", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_OK


def _share(args: argparse.Namespace) -> int:
    from .sharing import ShareError, share, unshare

    try:
        if args.delete:
            deleted = unshare(args.source, args.space, repo_type=args.repo_type, path_in_repo=args.path_in_repo,
                              token=args.token)
            print(f"Deleted the Space {deleted}: the runs are no longer shared." if deleted else
                  "There is no such Space: nothing is shared.")
            return EXIT_OK
        print(share(args.source, args.space, repo_type=args.repo_type, path_in_repo=args.path_in_repo,
                    private=args.private, token_secret=args.token_secret, token=args.token).describe())
    except ShareError as error:
        raise CliError(str(error)) from None
    return EXIT_OK


def _export(args: argparse.Namespace) -> int:
    from .read.frame import export, output_format, read_scalars

    try:
        output_format(args.output)
        check_output(args.output)  # before the read: a folder that is not there fails at once
        frame = read_scalars(args.source, args.tags, args.runs, path_in_repo=args.path_in_repo,
                             repo_type=args.repo_type, revision=args.revision, token=args.token)
        export(frame, args.output)
    except (ReadError, ValueError, ImportError) as error:
        raise CliError(str(error)) from None
    print(f"Wrote {len(frame)} values of {frame['run'].nunique()} run(s) to {args.output}")
    return EXIT_OK


def _status(args: argparse.Namespace) -> int:
    local_folder(args.logdir)
    try:
        validate_token(args.token, "--token")
    except ValueError as error:
        raise CliError(str(error)) from None
    if not args.local and is_offline():
        raise CliError("HF_HUB_OFFLINE is set: pass --local to compare with the upload state instead of the Hub.")
    # A parent folder of several runs reports each of them (each has its own upload state).
    runs = sorted({path.parent.parent for path in args.logdir.rglob(f"{STATE_DIR}/state.json")}) or [args.logdir]
    missing = [_run_status(run, args) for run in runs]
    print("pending: yes" if any(missing) else "pending: nothing")
    return EXIT_FAILED if any(missing) else EXIT_OK


def _run_status(logdir: Path, args: argparse.Namespace) -> bool:
    """Print one run's files, on disk and on the Hub; True if the Hub lacks any of their valid bytes."""
    from .upload.plan import UploadPlanner

    on_disk = {file.relpath: file.size
               for file in UploadPlanner(logdir, args.include, default_ignore_patterns(args.exclude)).plan({})}
    targets = UploadState(logdir, "").all_targets()
    if not targets:
        print(f"{logdir}: never uploaded")
        for relpath, size in sorted(on_disk.items()):
            print(f"  {relpath:<64} {size:>12} {0:>12}")
        return bool(on_disk)
    missing = False
    for key, committed in targets.items():
        if args.local:
            remote, where = {relpath: record.size for relpath, record in committed.items()}, "recorded"
        else:
            remote, where = _on_the_hub(key, args.token)
        print(f"{logdir} -> {key} ({where})")
        print(f"  {'file':<64} {'on disk':>12} {'on the Hub' if not args.local else 'recorded':>12}")
        for relpath in sorted(set(on_disk) | set(remote)):
            print(f"  {relpath:<64} {on_disk.get(relpath, 0):>12} {remote.get(relpath, 0):>12}")
        missing = missing or any(remote.get(relpath) != size for relpath, size in on_disk.items())
    return missing


def _on_the_hub(key: str, token: str | None) -> tuple[dict[str, int], str]:
    """The sizes of a target's files on the Hub, by path relative to the run folder, and where and how fresh they are:
    a repo's last commit, or (a bucket keeps no commits) when the run's newest file was uploaded to the bucket."""
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    repo_type, repo_id, revision, prefix = split_target_key(key)
    if repo_type == "bucket":
        return _in_the_bucket(repo_id, prefix, token)
    client = HubClient(RepoRef(repo_id, repo_type, revision), token=token, token_option="--token")
    try:
        sizes, age = client.file_sizes(prefix), client.last_commit_age()
    except (RepositoryNotFoundError, RevisionNotFoundError):
        return {}, "on the Hub: no such repo or branch"
    return sizes, "on the Hub" + (f", last commit {_ago(age)} ago" if age is not None else "")


def _in_the_bucket(bucket_id: str, prefix: str, token: str | None) -> tuple[dict[str, int], str]:
    """The sizes of the files under `prefix` in a bucket (one listing), and when the newest of them was uploaded."""
    import time

    from huggingface_hub import BucketFile, HfApi
    from huggingface_hub.errors import BucketNotFoundError, EntryNotFoundError

    from .upload.auth import AuthErrors

    folder = prefix.strip("/")
    with AuthErrors("list the bucket", token, "--token"):
        try:
            entries = list(HfApi(token=token).list_bucket_tree(bucket_id, prefix=folder or None, recursive=True))
        except BucketNotFoundError:
            return {}, "in the bucket: no such bucket"
        except EntryNotFoundError:
            entries = []
    files = [entry for entry in entries
             if isinstance(entry, BucketFile) and (not folder or entry.path.startswith(folder + "/"))]
    sizes = {entry.path[len(folder) + 1 if folder else 0:]: entry.size for entry in files}
    uploaded = [entry.uploaded_at.timestamp() for entry in files if entry.uploaded_at is not None]
    if not uploaded:
        return sizes, "in the bucket" + (", nothing uploaded yet" if not files else "")
    return sizes, f"in the bucket, newest file uploaded {_ago(max(0.0, time.time() - max(uploaded)))} ago"


def _ago(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds:.0f} s"


if __name__ == "__main__":
    # Run the importable module's main, not this __main__ copy: other modules import hf_summary.cli, and its
    # exception classes must be the ones main() catches.
    from hf_summary.cli import main as _main

    sys.exit(_main())
