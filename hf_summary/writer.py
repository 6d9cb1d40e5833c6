"""`HFSummaryWriter`: a tensorboardX `SummaryWriter` whose logdir is pushed to the Hub in the background."""

from __future__ import annotations

import atexit
import logging
import os
import shlex
import signal
import sys
import threading
import weakref
from pathlib import Path
from typing import Any

from huggingface_hub import constants

from .event_writer import DEFAULT_FILE_SIZE, DEFAULT_MAX_QUEUE
from .hub import HubAuthError, HubClient, RepoTarget, is_offline
from .local_writer import LocalSummaryWriter, default_logdir
from .scheduler import CommitScheduler, join_shared, shared_client
from .uploader import Uploader, default_ignore_patterns, repo_folder
from .validation import validate_arguments

logger = logging.getLogger(__name__)


class HFSummaryWriter(LocalSummaryWriter):
    """A `tensorboardX.SummaryWriter` that also commits its logdir to a Hub repo every `commit_every` minutes.

    Events are written locally first, by a background thread, and pushed by another. The training loop never waits
    for the Hub and never sees its errors: if the Hub cannot be reached, logging goes on locally and the repo is
    created and filled once it answers. Only complete records are uploaded, and each closed event file only once.

    Args:
        repo_id: the repo to push to, `namespace/name` (or `name`, for your own namespace).
        logdir: where event files are written; defaults to `runs/<date>_<host><comment>` like tensorboardX.
        commit_every: minutes between pushes. Defaults to 5.
        squash_history: squash the branch to a single commit after each push. Defaults to False.
        repo_type: "model" (default), "dataset" or "space".
        repo_revision: the branch to push to; created if missing. Defaults to "main".
        repo_private: create the repo private. Ignored if the repo exists.
        path_in_repo: the repo folder for the logs; files land in `<path_in_repo>/<logdir name>/`.
            Defaults to "tensorboard".
        repo_allow_patterns: only files matching these are pushed. Defaults to `"*.tfevents.*"`.
        repo_ignore_patterns: files matching these are not pushed.
        token: the Hub token; defaults to the one huggingface_hub finds (HF_TOKEN, `hf auth login`).
        max_file_size: an event file that reaches this size (bytes) is closed at the next push and a new one
            started, so each closed file is uploaded once and a push re-sends at most this much. Defaults to 1 MiB.
        queue_size: events that may wait in memory before logging blocks. Defaults to 10 000.
        close_timeout: seconds `close()` waits for the final push. Defaults to 60.
        hub_timeout: seconds the constructor waits for the Hub to answer before going on offline. Defaults to 5.
        kwargs: passed to `tensorboardX.SummaryWriter` (comment, purge_step, filename_suffix, ...). Its
            `max_queue` and `flush_secs` have no use here: events are written every second, and at `flush()`.

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
        commit_every: int | float = 5,
        squash_history: bool = False,
        repo_type: str | None = None,
        repo_revision: str | None = None,
        repo_private: bool | None = None,
        path_in_repo: str | None = "tensorboard",
        repo_allow_patterns: list[str] | str | None = "*.tfevents.*",
        repo_ignore_patterns: list[str] | str | None = None,
        token: str | None = None,
        max_file_size: int = DEFAULT_FILE_SIZE,
        queue_size: int = DEFAULT_MAX_QUEUE,
        close_timeout: float = 60.0,
        hub_timeout: float = 5.0,
        push_on_sigterm: bool = False,
        other_ranks: str = "skip",
        **kwargs: Any,
    ) -> None:
        logdir = logdir or kwargs.pop("log_dir", None) or default_logdir(kwargs.get("comment") or "")
        validate_arguments(
            repo_id=repo_id, logdir=logdir, commit_every=commit_every, repo_type=repo_type,
            path_in_repo=path_in_repo, allow_patterns=repo_allow_patterns, ignore_patterns=repo_ignore_patterns,
            max_file_size=max_file_size, close_timeout=close_timeout,
        )
        self._closing = False
        self.max_file_size = max_file_size
        self.close_timeout = close_timeout
        self._path_in_repo_arg = path_in_repo
        self._ignore_patterns_arg = repo_ignore_patterns

        if other_ranks not in ("skip", "local"):
            raise ValueError(f"other_ranks must be 'skip' or 'local', got {other_ranks!r}.")
        self.rank = _global_rank()
        if self.rank != 0:
            if other_ranks == "skip":
                kwargs["write_to_disk"] = False
            else:
                logdir = f"{logdir}-rank{self.rank}"
        offline = is_offline() or self.rank != 0
        # Writers of one process pushing to one repo and branch share a client and a committer (see scheduler.py).
        key = (constants.ENDPOINT, repo_type or "model", repo_id, repo_revision or "main", token, offline)
        client = shared_client(key) or HubClient(
            RepoTarget(repo_id, repo_type or "model", repo_revision or "main", repo_private), token=token
        )
        if not offline and not client.repo_ready:
            _check_hub(client, hub_timeout)  # raises on a rejected token, before anything is created

        super().__init__(logdir, queue_size=queue_size, **kwargs)
        self._hub = client
        self._uploader = Uploader(
            Path(self.logdir),
            client,
            repo_folder(path_in_repo, Path(self.logdir)),
            allow_patterns=repo_allow_patterns,
            ignore_patterns=default_ignore_patterns(repo_ignore_patterns),
            squash_history=squash_history,
            open_files=self._open_event_files,
        )
        self.scheduler = join_shared(
            key, lambda: CommitScheduler(client, enabled=not offline),
            self._uploader, every=commit_every, before_push=self._flush_for_push,
        )
        self._owner_pid = os.getpid()
        _open_writers.add(self)
        if push_on_sigterm:
            _push_on_sigterm(weakref.ref(self))

    # Where the logs go -----------------------------------------------------------------------------------------------

    @property
    def repo_id(self) -> str:
        return self._hub.target.repo_id

    @property
    def repo_type(self) -> str:
        return self._hub.target.repo_type

    @property
    def repo_revision(self) -> str:
        return self._hub.target.revision

    @property
    def path_in_repo(self) -> str:
        """The repo folder that receives this writer's files."""
        return self._uploader.path_in_repo

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(repo_id={self.repo_id!r}, repo_type={self.repo_type!r}, "
                f"repo_revision={self.repo_revision!r}, path_in_repo={self.path_in_repo!r}, logdir={self.logdir!r})")

    def sync_command(self) -> str:
        """The shell command that uploads whatever this writer could not push."""
        words = ["hf-summary", "sync", str(self.logdir), self.repo_id]
        if self._path_in_repo_arg != "tensorboard":
            words += ["--path-in-repo", self._path_in_repo_arg or ""]
        if self.repo_type != "model":
            words += ["--repo-type", self.repo_type]
        if self.repo_revision != "main":
            words += ["--revision", self.repo_revision]
        if self._uploader.planner.allow_patterns != "*.tfevents.*":
            allow = self._uploader.planner.allow_patterns
            words += ["--include", *([allow] if isinstance(allow, str) else allow or ["*"])]
        if self._ignore_patterns_arg:
            ignore = self._ignore_patterns_arg
            words += ["--exclude", *([ignore] if isinstance(ignore, str) else ignore)]
        return shlex.join(words)

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
                self._final_push()
                _open_writers.discard(self)
        finally:
            self._closing = False

    def __exit__(self, exc_type, exc_val, exc_tb) -> None:
        self.close()

    # Internals -------------------------------------------------------------------------------------------------------

    def _final_push(self) -> None:
        if not self.scheduler.enabled:
            if not self.scheduler.stopped:
                self.scheduler.stop()
                if self.rank == 0 and self._write_to_disk:
                    logger.warning("HF_HUB_OFFLINE is set: nothing was pushed. Upload the run later with:\n  %s",
                                   self.sync_command())
            return
        try:
            self.scheduler.close(self.close_timeout)
        except Exception as error:
            logger.error("The final push of %s to %s did not complete (%s). Your logs are safe in '%s'; upload "
                         "them with:\n  %s", self.logdir, self.repo_id, error or type(error).__name__, self.logdir,
                         self.sync_command())

    def _flush_for_push(self) -> None:
        events = self._events
        if events is not None and not events.closed:
            events.flush(roll_size=self.max_file_size)


def _global_rank() -> int:
    """This process's global rank under torch.distributed or a launcher (torchrun, accelerate), else 0."""
    dist = sys.modules.get("torch.distributed")  # never import torch just to ask
    if dist is not None and dist.is_available() and dist.is_initialized():
        return int(dist.get_rank())
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def _check_hub(client: HubClient, timeout: float) -> None:
    """Create the repo now if the Hub answers within `timeout`; only a rejected token is an error here."""
    outcome: list[BaseException | None] = []

    def check() -> None:
        try:
            client.ensure_repo()
            outcome.append(None)
        except BaseException as error:  # noqa: B036 - handed to the constructor's thread
            outcome.append(error)

    thread = threading.Thread(target=check, name="hf_summary-hub-check", daemon=True)
    thread.start()
    thread.join(timeout)
    if not outcome:
        logger.warning("The Hub did not answer within %.0fs; logging locally, the push will retry.", timeout)
    elif isinstance(outcome[0], HubAuthError):
        raise outcome[0]
    elif outcome[0] is not None:
        logger.warning("The Hub cannot be reached (%s); logging locally, the push will retry.", outcome[0])


def _push_on_sigterm(ref: weakref.ref[HFSummaryWriter]) -> None:
    if threading.current_thread() is not threading.main_thread():
        logger.warning("push_on_sigterm needs the writer to be created in the main thread; not installed.")
        return
    previous = signal.getsignal(signal.SIGTERM)

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


# Writers not closed yet: one exit hook makes their final pushes (bounded by each close_timeout), and holds no
# reference that would keep a dropped writer alive.
_open_writers: weakref.WeakSet[HFSummaryWriter] = weakref.WeakSet()


@atexit.register
def _close_open_writers() -> None:
    for writer in list(_open_writers):
        _close_if_ours(writer)
