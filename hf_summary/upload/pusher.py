"""One push, no thread: plan → send → record, for a set of logdirs, retrying until a deadline.

Every front door pushes through a `Pusher`: the writer's schedule, `hf-summary sync`, `watch` and the companion. It
knows nothing of time between pushes (that is the schedule's) nor of what a destination allows (that is the
target's): it locks each logdir's upload state, plans what changed, sends it in requests the target has room for,
and records each request as it lands, so that an interruption resumes after the last one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from .errors import CommitNotConfirmed, PartlySent, Refused, http_status
from .machine import MachineRegistry
from .retry import RetryPolicy
from .targets import Receipt, Target
from .uploader import Batch, Uploader

logger = logging.getLogger(__name__)

Clock = Callable[[], float]
# Waits on an event for at most `timeout` seconds; returns whether it was set (threading.Event.wait's contract).
Wait = Callable[[threading.Event, float], bool]


def _wait(event: threading.Event, timeout: float) -> bool:
    return event.wait(timeout)

_LOCK_WAIT = 60.0  # seconds a push that may not skip waits for another process's push of the same repo to end
# A refusal that no retry fixes: a folder over its entry limit, a path the Hub will not take, a commit too large.
_REFUSED_FOR_GOOD = frozenset({400, 413, 422})


@dataclass
class PushResult:
    """What one push did.

    Attributes:
        info: the last request's receipt (a commit's info), or None when nothing was sent.
        files: files sent.
        size: bytes sent.
        skipped: another process of the machine pushed just now, carrying our logdirs: nothing to do.
        refused: the logdirs whose files the Hub refused for good in this push.
    """

    info: Receipt | None = None
    files: int = 0
    size: int = 0
    skipped: bool = False
    refused: list[Refused] = field(default_factory=list)


class Pusher:
    """Pushes logdirs to one target: plan → send → record, retrying transient failures until a deadline.

    Args:
        target: the destination (a repo branch).
        retry: the retry policy between attempts of one push.
        machine: the registry that the processes of this machine share for this target, so that one push carries
            the logdirs of all of them; None pushes only the logdirs it is given.
        clock: seconds on a monotonic clock; deadlines are read on it.
        wait: how to wait between attempts (on `stop`); a test passes one that moves a fake clock instead.
        stop: set to give up the retries of a push in progress.

    Example:
        ```py
        >>> pusher = Pusher(RepoTarget(HubClient(spec.repo())))
        >>> pusher.push([Uploader(Path("runs/exp1"), spec)]).info.oid
        'a1b2c3...'
        ```
    """

    def __init__(self, target: Target, *, retry: RetryPolicy | None = None, machine: MachineRegistry | None = None,
                 clock: Clock = time.monotonic, wait: Wait | None = None, stop: threading.Event | None = None) -> None:
        self.target = target
        self.retry = retry or RetryPolicy()
        self.machine = machine
        self.clock = clock
        self.wait = wait or _wait
        self.stop = stop or threading.Event()
        # Logdirs the Hub refused for good, by uploader key: this process does not send them again.
        self.refused: dict[tuple[str, str, str], Refused] = {}

    def push(self, uploaders: list[Uploader], *, deadline: float | None = None,
             skip_within: float | None = None) -> PushResult:
        """Push what changed in `uploaders` (and the machine's other logdirs of this target), until `deadline`.

        Args:
            uploaders: the logdirs to push.
            deadline: a `clock()` value after which no retry starts.
            skip_within: seconds; when another process of the machine pushed less than this ago (or is pushing
                now), this push is skipped, since that push carries our logdirs too. None never skips.

        Raises:
            HubAuthError: the token was rejected.
            RetriesExhausted: the deadline passed, or `stop` was set, before a retry succeeded.
            Exception: what the Hub answered last; nothing is recorded as sent then.
        """
        return self.retry.call(lambda: self._upload_once(uploaders, skip_within), what=f"Push to {self.target.name}",
                               deadline=deadline, clock=self.clock,
                               sleep=lambda seconds: self.wait(self.stop, seconds))

    def _upload_once(self, uploaders: list[Uploader], skip_within: float | None) -> PushResult:
        self.target.connect()
        with self._machine_turn(skip_within) as others:
            if others is None:
                return PushResult(skipped=True)
            with ExitStack() as locks:
                batches = self._plan([*uploaders, *others], locks)
                result = self._send(batches)
        if result.info is not None:
            self.target.finish([batch.uploader.spec.squash for batch in batches])
        if self.machine is not None and others:
            self.machine.forget_finished({u.logdir for u in others if not u.pending()})
        return result

    @contextmanager
    def _machine_turn(self, skip_within: float | None) -> Iterator[list[Uploader] | None]:
        """The logdirs other processes of this machine registered for the target, under the machine's push lock;
        None when this turn is skipped."""
        if self.machine is None:
            yield []
            return
        with self.machine.turn(skip_within, timeout=0.0 if skip_within is not None else _LOCK_WAIT) as entries:
            if entries is None:
                yield None
                return
            yield [Uploader(path, spec) for path, spec in entries.items() if path.is_dir()]

    def _plan(self, uploaders: list[Uploader], locks: ExitStack) -> list[Batch]:
        """Each logdir's part of the push, under its upload lock (held by `locks`); none for a logdir without news."""
        # Two writers of this process on one logdir (a notebook cell run twice) upload it once, under one lock, with
        # the files that either may still append to. A logdir of ours wins over the machine registry's copy.
        unique: dict[tuple[str, str, str], Uploader] = {}
        also_open: dict[tuple[str, str, str], list[Path]] = {}
        for uploader in uploaders:
            if uploader.key in unique:
                also_open.setdefault(uploader.key, []).extend(uploader.open_files())
            elif uploader.key not in self.refused:
                unique[uploader.key] = uploader
        # Locks are taken in one order, so that processes sharing logdirs cannot deadlock.
        ordered = sorted(unique.values(), key=lambda u: u.key)
        return [batch for u in ordered
                if (batch := u.begin(locks, self.target.operation, also_open=also_open.get(u.key))) is not None]

    def _send(self, batches: list[Batch]) -> PushResult:
        """Send the batches in requests the target has room for, in logdir then name order, recording each."""
        result = PushResult()
        # TensorBoard never sees a later event file of a run without the earlier ones, even when a backlog goes up
        # in several requests.
        items = [(batch, i) for batch in batches for i in range(len(batch.planned))]
        while items:
            room = self.target.room()
            chunk, items = items[:room], items[room:]
            try:
                self._send_chunk(chunk, result)
            except CommitNotConfirmed:
                for batch in batches:
                    batch.abandon()  # huggingface_hub will not send an operation it believes committed again
                raise
            except Exception as error:
                if http_status(error) not in _REFUSED_FOR_GOOD:
                    raise
                # Refused for good: each logdir's part goes alone, so that one run's refusal costs only that run.
                refused = self._send_apart(chunk, error, result)
                items = [(batch, i) for batch, i in items if batch.uploader.key not in refused]
        return result

    def _send_apart(self, chunk: list[tuple[Batch, int]], error: Exception, result: PushResult
                    ) -> set[tuple[str, str, str]]:
        """Send each logdir's part of a refused request alone; return the keys of those refused again."""
        parts = list(dict.fromkeys(batch for batch, _ in chunk))
        refused: set[tuple[str, str, str]] = set()
        for batch in parts:
            cause: Exception = error
            if len(parts) > 1:
                try:
                    self._send_chunk([(b, i) for b, i in chunk if b is batch], result)
                    continue
                except Exception as again:
                    if http_status(again) not in _REFUSED_FOR_GOOD:
                        raise
                    cause = again
            key = batch.uploader.key
            self.refused[key] = Refused(batch.uploader.path_in_repo, cause)
            self.refused[key].__cause__ = cause
            result.refused.append(self.refused[key])
            refused.add(key)
            # A warning, once per logdir: it is not sent again by this process, and only the user can act on it.
            logger.warning("%s", self.refused[key])
        return refused

    def _send_chunk(self, chunk: list[tuple[Batch, int]], result: PushResult) -> None:
        size = sum(batch.planned[i].size for batch, i in chunk)
        try:
            info = self.target.send([batch.operations[i] for batch, i in chunk],
                                    f"Upload TensorBoard logs: {len(chunk)} file(s), {size} bytes")
        except PartlySent as partly:
            # What the destination took is recorded; the rest stays pending, and the retry sends only that.
            taken = [(b, i) for b, i in chunk if b.operations[i].path_in_repo not in partly.failed]
            for batch in dict.fromkeys(batch for batch, _ in taken):
                batch.record(partly.receipt.oid, [i for b, i in taken if b is batch])
            raise
        for batch in dict.fromkeys(batch for batch, _ in chunk):
            batch.record(info.oid, [i for b, i in chunk if b is batch])
        result.info, result.files, result.size = info, result.files + len(chunk), result.size + size
        logger.info("Committed %d file(s) to %s (%s)", len(chunk), self.target.name, info.oid)
