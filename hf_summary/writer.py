"""`HFSummaryWriter`: a tensorboardX `SummaryWriter` whose logdir is pushed to the Hub in the background."""

from __future__ import annotations

import atexit
import concurrent.futures
import logging
import os
import signal
import sys
import threading
import weakref
from pathlib import Path
from types import TracebackType
from typing import Any

from huggingface_hub import constants

from . import companion, defaults
from .companion import RemoteMember
from .defaults import RING_SIZE
from .events.handoff import SharedEventQueue
from .local_writer import LocalSummaryWriter, default_logdir
from .process import STATE
from .upload.errors import BudgetSpent, HubAuthError, describe
from .upload.hub import is_offline
from .upload.member import ScheduleMember
from .upload.schedule import open_schedule
from .upload.spec import UploadSpec
from .upload.uploader import Uploader, default_roll_size
from .validation import split_handle, validate_arguments

logger = logging.getLogger(__name__)


class HFSummaryWriter(LocalSummaryWriter):
    """A `tensorboardX.SummaryWriter` that also pushes its logdir to a Hub repo (or a Storage Bucket) every
    `commit_every` minutes.

    Each event is handed to the companion process (started with the first writer), which writes the event files and
    pushes them; where none can run (`ring_size=None`, a forked child), threads of this process do. The training
    loop never waits for the Hub and never sees its errors: if the Hub cannot be reached, logging goes on locally and
    the repo is created and filled once it answers. Only complete records are uploaded, and each closed event file
    only once.

    Args:
        repo_id: the repo to push to, `namespace/name` (or `name`, for your own namespace).
        logdir: where event files are written; defaults to `runs/<date>_<host><comment>` like tensorboardX.
        commit_every: minutes between pushes. Defaults to 5 for a repo, 2 seconds for a bucket (no commits there:
            a push is a batch, made only when something is new).
        squash_history: True squashes the branch to a single commit after each push; an int N squashes it when it
            has more than N commits. Defaults to False.
        repo_type: "model" (default), "dataset", "space", or "bucket" for a Storage Bucket (live to the second, no
            history; `repo_id="hf://buckets/me/logs"` says the same).
        repo_revision: the branch to push to; created if missing. Defaults to "main".
        repo_private: create the repo private. Ignored if the repo exists.
        path_in_repo: the repo folder for the logs; files land in `<path_in_repo>/<logdir name>/`.
            Defaults to "tensorboard".
        repo_allow_patterns: only files matching these are pushed. Defaults to `"*.tfevents.*"`.
        repo_ignore_patterns: files matching these are not pushed.
        token: the Hub token; defaults to the one huggingface_hub finds (HF_TOKEN, `hf auth login`).
        max_file_size: an event file that reaches this size (bytes) is closed at the next push and a new one
            started, so each closed file is uploaded once. None (the default): the upload path's own size, 8 MiB
            with Xet (huggingface_hub's default: a push sends only the new chunks of the file still growing), 1 MiB
            with Xet off (`HF_HUB_DISABLE_XET=1`: a push re-sends that file whole, so at most this much).
        queue_size: with events written in-process (`ring_size=None`, or no companion process): events that may wait
            in memory before logging blocks. Defaults to 10 000.
        close_timeout: seconds `close()` waits for the final push. Defaults to 60.
        hub_timeout: seconds the constructor waits for the Hub to answer before going on offline. Defaults to 5.
        push_timeout: seconds after which a `scheduler.trigger()` Future fails with `hf_summary.PushError` if its
            push has not finished, even when the Hub accepts connections and never answers. Defaults to 120.
        max_commits_per_hour: the commits that all writers of the repo (on every machine) make together in an hour.
            Before a scheduled push, the writer reads the repo's recent history (one request); when the budget is
            spent, it waits and carries more in its next commit. None for no budget. Defaults to 60.
        crash_upload: if this process ends without closing the writer (SIGKILL, a crash, `os._exit`, a dead
            notebook kernel), the companion process pushes what is on disk, as `hf-summary sync` would. Not
            started offline or on ranks other than 0. Defaults to True.
        kwargs: passed to `LocalSummaryWriter` (`ring_size`: bytes of memory shared with the companion process that
            writes the event files, 4 MiB by default; None writes them in a thread of this process) and on to
            `tensorboardX.SummaryWriter` (comment, purge_step, filename_suffix, ...). Its `max_queue` and
            `flush_secs` have no use here: events are on disk within 50 ms, and at `flush()`.

    Raises:
        ValueError: a malformed argument (repo id, interval, logdir, path_in_repo, patterns).
        HubAuthError: the Hub answered and refused the token.

    Example:
        ```py
        >>> from hf_summary import HFSummaryWriter
        >>> with HFSummaryWriter(repo_id="me/my-run", commit_every=5) as writer:
        ...     for step in range(100):
        ...         writer.add_scalar("loss", 1 / (step + 1), step)
        ...     writer.scheduler.trigger().result()   # push now
        ```
    """

    def __init__(
        self,
        repo_id: str,
        *,
        logdir: str | None = None,
        commit_every: int | float | None = None,
        squash_history: bool | int = False,
        repo_type: str | None = None,
        repo_revision: str | None = None,
        repo_private: bool | None = None,
        path_in_repo: str | None = defaults.PATH_IN_REPO,
        repo_allow_patterns: list[str] | str | None = defaults.ALLOW_PATTERNS,
        repo_ignore_patterns: list[str] | str | None = None,
        token: str | None = None,
        max_file_size: int | None = None,
        queue_size: int = defaults.QUEUE_SIZE,
        close_timeout: float = defaults.CLOSE_TIMEOUT,
        hub_timeout: float = defaults.HUB_TIMEOUT,
        push_timeout: float = defaults.PUSH_TIMEOUT,
        max_commits_per_hour: int | None = defaults.MAX_COMMITS_PER_HOUR,
        push_on_sigterm: bool = False,
        other_ranks: str = "skip",
        crash_upload: bool = True,
        **kwargs: Any,
    ) -> None:
        logdir = logdir or kwargs.pop("log_dir", None) or default_logdir(kwargs.get("comment") or "")
        repo_id, repo_type = split_handle(repo_id, repo_type)
        validate_arguments(
            repo_id=repo_id, logdir=logdir, commit_every=commit_every, repo_type=repo_type,
            path_in_repo=path_in_repo, allow_patterns=repo_allow_patterns, ignore_patterns=repo_ignore_patterns,
            max_file_size=max_file_size, close_timeout=close_timeout, push_timeout=push_timeout,
            max_commits_per_hour=max_commits_per_hour, token=token,
        )
        if other_ranks not in ("skip", "local"):
            raise ValueError(f"other_ranks must be 'skip' or 'local', got {other_ranks!r}.")
        self.spec = UploadSpec.create(
            repo_id, repo_type=repo_type, revision=repo_revision, path_in_repo=path_in_repo,
            allow_patterns=repo_allow_patterns, ignore_patterns=repo_ignore_patterns, squash=squash_history,
            private=repo_private,
        )
        if commit_every is None:
            commit_every = defaults.BUCKET_PUSH_EVERY if self.spec.repo_type == "bucket" else defaults.COMMIT_EVERY
        self._closing = False
        self.max_file_size = max_file_size
        self.close_timeout = close_timeout
        self._events = None  # before anything that may push: a push writes what was logged through it

        self.rank = _global_rank()
        if self.rank != 0:
            if other_ranks == "skip":
                kwargs["write_to_disk"] = False
            else:
                logdir = f"{logdir}-rank{self.rank}"
        # Only global rank 0 uploads; the others write locally (or not at all), as offline mode does.
        uploads = not is_offline() and self.rank == 0
        spec = self.spec
        # Writers of one process pushing to one repo and branch share a schedule, visible in process.STATE.
        key = (constants.ENDPOINT, spec.repo_type, spec.repo_id, spec.revision, token, uploads)
        live = _Live(self)
        uploader = Uploader(Path(logdir), spec, live=live)

        def join_here() -> ScheduleMember:
            with STATE.lock:
                schedule = STATE.shared(key, lambda: open_schedule(
                    spec, token=token, every=commit_every, enabled=uploads,
                    max_commits_per_hour=max_commits_per_hour, membership=STATE.lock).start())
                return schedule.join(uploader, every=commit_every, push_timeout=push_timeout)

        # The companion process pushes where one writes the events: this process then only hands them off. Where
        # none can (`ring_size=None`, a forked child), or once it ended, the schedule runs in a thread here.
        in_companion = uploads and kwargs.get("ring_size", RING_SIZE) is not None

        def join() -> ScheduleMember | RemoteMember:
            member = companion.join(
                logdir, spec, token, every=commit_every, push_timeout=push_timeout, max_file_size=max_file_size,
                max_commits_per_hour=max_commits_per_hour, crash=crash_upload, mark=live.push_mark,
                take_over=join_here) if in_companion else None
            return member or join_here()

        self._join = join  # again when logged to after close(), as tensorboardX reopens its files
        self.scheduler: ScheduleMember | RemoteMember = join()
        if uploads:
            self._wait_for_hub(hub_timeout)  # raises on a rejected token, before any file is created
        try:
            super().__init__(logdir, queue_size=queue_size, **kwargs)
        except BaseException:
            self._abandon()  # a writer that could not start leaves no thread or watch behind
            raise
        if isinstance(self.scheduler, RemoteMember) and not isinstance(self._events, SharedEventQueue):
            self.scheduler.take_over()  # its events are written here: so are its pushes
        self._owner_pid = os.getpid()
        STATE.open_writers.add(self)
        # A run whose process dies before close() is pushed by this process's companion.
        self._crash_upload = crash_upload and uploads and self.writes_to_disk

        def guard() -> companion.Watch | None:
            if isinstance(self.scheduler, RemoteMember):
                return self.scheduler.watch  # the companion that pushes the logdir watches it
            if not self._crash_upload:
                return None
            return companion.watch(self.logdir, spec, token, max_commits_per_hour=max_commits_per_hour)

        self._guard = guard
        self._watch = self._guard()
        if push_on_sigterm:
            _push_on_sigterm(weakref.ref(self))

    # Where the logs go -----------------------------------------------------------------------------------------------

    @property
    def repo_id(self) -> str:
        """The repo, as `namespace/name` once the Hub has answered."""
        return self.scheduler.name

    @property
    def repo_type(self) -> str:
        return self.spec.repo_type

    @property
    def repo_revision(self) -> str:
        return self.spec.revision

    @property
    def path_in_repo(self) -> str:
        """The repo folder that receives this writer's files."""
        return self.spec.folder_for(self.logdir)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(repo_id={self.repo_id!r}, repo_type={self.repo_type!r}, "
                f"repo_revision={self.repo_revision!r}, path_in_repo={self.path_in_repo!r}, logdir={self.logdir!r})")

    def sync_command(self) -> str:
        """The shell command that uploads whatever this writer could not push."""
        return self.spec.sync_command(self.logdir)

    def close(self) -> None:
        """Write everything, close the event files and make a final push (waiting at most `close_timeout`).

        A push that fails or runs out of time is logged with the command that completes it later; it is never
        raised, so it cannot hide an exception of the training script or fail a good run at its end.
        """
        if self._closing:
            return
        self._closing = True
        try:
            super().close()
            if os.getpid() == self._owner_pid:
                done = self._final_push()
                STATE.open_writers.discard(self)
                if self._watch is not None and done:
                    # A final push the budget held back stays watched: the companion pushes it when this process
                    # ends. Any other outcome is reported by the log, with the sync command.
                    self._watch.release()
        finally:
            self._closing = False

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # Internals -------------------------------------------------------------------------------------------------------

    def _final_push(self) -> bool:
        """Push what is left; False when the companion is to push it (the commit budget had no slot in time)."""
        if not self.scheduler.enabled:
            if not self.scheduler.stopped:
                self.scheduler.stop()
                if self.rank == 0 and self.writes_to_disk:
                    logger.warning("HF_HUB_OFFLINE is set: nothing was pushed. Upload the run later with:\n  %s",
                                   self.sync_command())
            return True
        try:
            self.scheduler.close(self.close_timeout)
        except BudgetSpent as error:
            guarded = self._crash_upload and self._watch is not None and self._watch.active
            logger.warning("%s. Your logs are safe in '%s'; %supload them with:\n  %s", error.reason, self.logdir,
                           "the companion process pushes them once this process ends, or " if guarded else "",
                           self.sync_command())
            return not guarded
        except Exception as error:
            logger.error("The final push of %s to %s did not complete (%s). Your logs are safe in '%s'; upload "
                         "them with:\n  %s", self.logdir, self.repo_id, getattr(error, "reason", None) or
                         describe(error), self.logdir, self.sync_command())
        except KeyboardInterrupt:
            # Ctrl-C while the final push runs: the interrupt goes on to the user, with what completes the upload.
            logger.error("The final push of %s was interrupted. Your logs are safe in '%s'; upload them with:\n  %s",
                         self.logdir, self.logdir, self.sync_command())
            raise
        return True

    def _open_file_writer(self) -> Any:
        writer = super()._open_file_writer()
        if self.scheduler.stopped and not self._closing and os.getpid() == getattr(self, "_owner_pid", None):
            # Logged to after close(): tensorboardX reopens its event files, and the upload resumes with them, so
            # that the next close() pushes what was logged meanwhile.
            self.scheduler = self._join()
            self._watch = self._guard()
            STATE.open_writers.add(self)
        return writer

    def _wait_for_hub(self, timeout: float) -> None:
        """Wait up to `timeout` for the schedule's first contact with the Hub; only a rejected token is an error."""
        try:
            self.scheduler.connected.result(timeout)
        except concurrent.futures.TimeoutError:
            logger.warning("The Hub did not answer within %.0fs; logging locally, the push will retry.", timeout)
        except HubAuthError:
            self._abandon()
            raise
        except Exception as error:
            logger.warning("The Hub cannot be reached (%s); logging locally, the push will retry.", error)

    def _abandon(self) -> None:
        """Stop the pushes of a writer that could not start, and the companion's watch of its logdir."""
        self.scheduler.stop()
        if isinstance(self.scheduler, RemoteMember):
            self.scheduler.watch.release()


class _Live:
    """What a push asks of the writer of its logdir (`uploader.LiveLogdir`); holds no reference that would keep a
    dropped writer alive."""

    def __init__(self, writer: HFSummaryWriter) -> None:
        self._writer = weakref.ref(writer)

    def write_for_push(self) -> None:
        writer = self._writer()
        events = writer._events if writer is not None else None
        if writer is not None and events is not None and not events.closed:
            try:
                events.flush(roll_size=writer.max_file_size or default_roll_size())
            except OSError as error:
                # One run folder that cannot be written (the writer thread logged which) must not keep the others,
                # and what was logged before, from the Hub.
                logger.debug("Pushing what is on disk; a run folder could not be written: %s", error)

    def open_event_files(self) -> list[Path]:
        writer = self._writer()
        return writer._open_event_files() if writer is not None else []

    def push_mark(self) -> tuple[int, int] | None:
        """The writer's ring and a mark below which everything logged so far lies, for a push that the companion
        makes; None when this process writes the events (or the writer is gone)."""
        writer = self._writer()
        events = writer._events if writer is not None else None
        return events.push_mark() if isinstance(events, SharedEventQueue) else None


def _global_rank() -> int:
    """This process's global rank under torch.distributed or a launcher (torchrun, accelerate), else 0."""
    dist = sys.modules.get("torch.distributed")  # never import torch just to ask
    if dist is not None and dist.is_available() and dist.is_initialized():
        return int(dist.get_rank())
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def _push_on_sigterm(ref: weakref.ref[HFSummaryWriter]) -> None:
    if threading.current_thread() is not threading.main_thread():
        logger.warning("push_on_sigterm needs the writer to be created in the main thread; not installed.")
        return
    previous = signal.getsignal(signal.SIGTERM)
    if previous == signal.SIG_IGN:
        # The launcher asked this process to outlive SIGTERM: a handler that ends it would break that promise, and
        # one that returns after the push would leave the run half-closed.
        logger.warning("push_on_sigterm: SIGTERM is ignored in this process; not installed.")
        return

    def on_sigterm(signum: int, frame: Any) -> None:
        writer = ref()
        if writer is not None:
            _close_if_ours(writer)
        if callable(previous):
            previous(signum, frame)
        else:
            # Let the default action end the process, with the exit status schedulers expect from SIGTERM.
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_sigterm)


def _close_if_ours(writer: HFSummaryWriter) -> None:
    # A forked child inherits the writer but not its threads: the final push is the parent's job.
    if os.getpid() == writer._owner_pid and not writer.scheduler.stopped:
        writer.close()


@atexit.register
def _close_open_writers() -> None:
    # Writers not closed yet (a weak set: a dropped writer is not kept alive): their final pushes, each bounded by
    # its close_timeout.
    for writer in list(STATE.open_writers):
        _close_if_ours(writer)
