"""The training process's side of the companion: the link (one per process, in `process.STATE`), the crash watch of a
logdir (`watch`), and a writer's handle on a schedule the companion runs (`RemoteMember`).

The link starts the companion with the first writer, sends it JSON lines (protocol.py), and reads its answers on a
thread of its own, which settles the Future of each request. The companion runs in a session of its own (a Jupyter
kernel restart kills the kernel's process group, a terminal's Ctrl-C its foreground group), its stdout and stderr go
to /dev/null, and this process reaps it (a thread parked in `waitpid`) so that it is never a zombie while this
process lives. Forked children (DataLoader workers) close their copy of the socket at once, so the companion still
sees end-of-file when the training process dies, and never start or talk to a companion.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import json
import logging
import os
import site
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import defaults
from ..process import STATE
from ..threads import start_thread
from ..upload.member import failed
from .protocol import NOSIGNAL, NUDGE, TOKEN_VARIABLES, encode, error_of, future_outcome

if TYPE_CHECKING:
    from ..upload.member import ScheduleMember
    from ..upload.spec import UploadSpec

logger = logging.getLogger(__name__)

_EXIT_WAIT = 5.0  # seconds the last release waits for the companion to exit
_ATTACH_TIMEOUT = 30.0  # seconds a new writer waits for the companion to take its ring, else writes in-process
_ANSWER_WAIT = 30.0  # seconds a trigger waits for the companion to name the push (it answers at once)
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


class CompanionGone(Exception):
    """The companion process is not there to write the events: the writer writes them itself."""


class NoCompanionInChild(CompanionGone):
    """A forked child writes its events itself, by design: the companion is its parent's."""


class Watch:
    """One logdir this process's companion pushes if the process dies before `release()`; returned by `watch()`."""

    def __init__(self, watch_id: int | None) -> None:
        self._id = watch_id

    @property
    def active(self) -> bool:
        """Whether the companion was told about the logdir and it is not released yet."""
        return self._id is not None

    def release(self) -> None:
        """The writer closed and its final push ran: the companion forgets the logdir (it exits after the last one).

        Idempotent, and a no-op in a forked child.

        Example:
            ```py
            >>> handle = watch("runs/exp1", UploadSpec("me/my-run"))
            >>> handle.release()
            ```
        """
        watch_id, self._id = self._id, None
        if watch_id is not None:
            _link().release(watch_id)


def _watch_message(logdir: str | os.PathLike[str], spec: UploadSpec, token: str | None, timeout: float,
                   max_commits_per_hour: int | None) -> dict[str, Any]:
    from huggingface_hub import constants

    environ = {name: os.environ[name] for name in (*TOKEN_VARIABLES, "HF_XET_CACHE") if name in os.environ}
    return {"logdir": os.path.abspath(logdir), "spec": spec.to_json(), "token": token, "timeout": timeout,
            "max_commits_per_hour": max_commits_per_hour, "environ": {**environ, "HF_ENDPOINT": constants.ENDPOINT}}


def watch(logdir: str | os.PathLike[str], spec: UploadSpec, token: str | None = None, *,
          timeout: float = defaults.CRASH_UPLOAD_TIMEOUT,
          max_commits_per_hour: int | None = defaults.MAX_COMMITS_PER_HOUR) -> Watch:
    """Have this process's companion push `logdir` to `spec` if the process ends before the handle is released.

    Starts the companion process on first use; one serves every writer of the process. Never raises: a companion
    that cannot be started (or a forked child, whose parent's companion it is) gives an inactive handle, logged at
    debug level, and the run goes on as before.

    Args:
        logdir: the folder the writer logs to.
        spec: where it goes, and which of its files.
        token: the writer's `token` argument; None uses the one huggingface_hub finds (HF_TOKEN, `hf auth login`).
        timeout: seconds the companion keeps retrying the push after the process died (once the budget lets it).
        max_commits_per_hour: the writer's commit budget, which the companion's push keeps too.

    Returns:
        The handle whose `release()` tells the companion the writer closed.

    Example:
        ```py
        >>> from hf_summary import UploadSpec, companion
        >>> handle = companion.watch("runs/exp1", UploadSpec("me/my-run"))
        >>> companion.current_pid()   # the companion process
        4242
        >>> handle.release()          # after the final push
        ```
    """
    try:
        return _link().watch(_watch_message(logdir, spec, token, timeout, max_commits_per_hour))
    except Exception as error:
        logger.debug("No companion process for %s (a crash will not push it): %s", logdir, error)
        return Watch(None)


def join(logdir: str | os.PathLike[str], spec: UploadSpec, token: str | None, *, every: float,
         push_timeout: float | None, max_file_size: int | None, max_commits_per_hour: int | None, crash: bool,
         mark: Callable[[], tuple[int, int] | None], take_over: Callable[[], ScheduleMember]) -> RemoteMember | None:
    """Have this process's companion push `logdir` on the schedule of its target (the crash watch comes with it).

    Args:
        logdir, spec, token, max_commits_per_hour: as `watch`'s.
        every: minutes between pushes.
        push_timeout: seconds after which a `trigger()` Future fails with `PushError`.
        max_file_size: the writer's roll size; None for the default of the upload path.
        crash: whether the companion pushes the logdir if this process ends before closing the writer.
        mark: the writer's ring and a mark in it below which everything logged so far lies (None: its events are
            written by this process, which a push in the companion cannot flush).
        take_over: joins the logdir to a schedule in this process, should the companion end.

    Returns:
        The writer's handle, or None when no companion can run the schedule (a forked child, a companion that
        could not be started or refused): the caller runs it in this process.
    """
    try:
        link = _link()
        message = {**_watch_message(logdir, spec, token, defaults.CRASH_UPLOAD_TIMEOUT, max_commits_per_hour),
                   "crash": crash, "log_level": logging.getLogger("hf_summary").getEffectiveLevel(),
                   "live": {"every": every, "push_timeout": push_timeout, "max_file_size": max_file_size}}
        joined = link.join(message)
    except Exception as error:
        logger.debug("The companion process cannot push %s (this process does): %s", logdir, error)
        return None
    if joined is None:
        return None
    watch_id, connected = joined
    return RemoteMember(link, watch_id, spec.repo_id, connected, push_timeout=push_timeout, mark=mark,
                        take_over=take_over)


def companion() -> _Client:
    """This process's companion: it writes the event files of the process's writers and pushes them."""
    return _link()


def current_pid() -> int | None:
    """The pid of this process's companion, or None when none is running (nothing watched, or a forked child).

    Example:
        ```py
        >>> from hf_summary import companion
        >>> companion.current_pid() is None   # before any writer, and after the last one closed
        True
        ```
    """
    link = STATE.companion
    return link.pid() if isinstance(link, _Client) else None


def _link() -> _Client:
    """This process's link to its companion, kept in the process's shared state (one per process)."""
    with STATE.lock:
        if not isinstance(STATE.companion, _Client):
            STATE.companion = _Client()
        return STATE.companion


class RemoteMember:
    """A writer's handle on its schedule when the companion runs it (`writer.scheduler`): the same API as a
    `ScheduleMember`, each call a message to the companion, each Future settled by its answer.

    If the companion ends, the schedule moves to this process (`take_over`): the requests it had not answered are
    asked again there, and every call is served there from then on.
    """

    def __init__(self, link: _Client, watch_id: int, name: str, connected: Future, *, push_timeout: float | None,
                 mark: Callable[[], tuple[int, int] | None], take_over: Callable[[], ScheduleMember]) -> None:
        self.watch = Watch(watch_id)
        self._link = link
        self._id = watch_id
        self._name = name
        self._push_timeout = push_timeout
        self._mark = mark
        self._take_over = take_over
        self._local: ScheduleMember | None = None
        self._lock = threading.Lock()
        self._left = False
        self._outcomes: dict[int, Future] = {}  # the companion's pushes this writer waits for, by their id
        self._owner = os.getpid()  # a forked child inherits this handle, not the companion
        self.last_future: Future | None = None
        self.connected: Future = Future()  # the target's full name once the companion reached the Hub
        connected.add_done_callback(self._on_connected)
        link.on_exit(watch_id, self.take_over)

    def _on_connected(self, answer: Future) -> None:
        error = answer.exception()
        refused = False
        if error is None:
            reply = answer.result()
            if "name" in reply:
                self._name = reply["name"]
                self.connected.set_result(reply["name"])
                return
            # Refused: this companion cannot push for this writer (it pushes to another endpoint).
            refused = "refused" in reply
            error = error_of(reply.get("error") or "no answer")
        if refused or isinstance(error, CompanionGone):
            self.take_over()
            self._here(lambda local: local.connected).add_done_callback(lambda f: _copy(f, self.connected))
        else:
            self.connected.set_exception(error)

    @property
    def name(self) -> str:
        """The target, as `namespace/name` once the Hub has answered."""
        return self._local.name if self._local is not None else self._name

    @property
    def enabled(self) -> bool:
        return True  # a companion runs only schedules that push

    @property
    def stopped(self) -> bool:
        return self._left or (self._local is not None and self._local.stopped)

    @property
    def alive(self) -> bool:
        if self._local is not None:
            return self._local.alive
        return not self._left and self._link.alive()

    def take_over(self) -> None:
        """Run the schedule in this process from now on (the companion ended, or cannot flush the writer's
        events); idempotent."""
        with self._lock:
            if self._local is not None or self._left:
                return  # a stopped writer's pushes stay stopped
            self._local = self._take_over()
        self._link.leave(self._id)

    def trigger(self, timeout: float | None = None) -> Future:
        """Push now; the Future resolves to the commit info (or a bucket's receipt), or None if nothing had
        changed (see `ScheduleMember.trigger`)."""
        if self._left or self._local is not None or self._owner != os.getpid():
            return self._here(lambda local: local.trigger(timeout))
        timeout = self._push_timeout if timeout is None else timeout
        mark = self._mark()
        where = {"ring": mark[0], "upto": mark[1]} if mark is not None else {}
        future = self._ask_push({"op": "trigger", "timeout": timeout, **where}, lambda local: local.trigger(timeout))
        self.last_future = future
        return future

    def next_push(self) -> Future:
        """The Future of the next push, scheduled or triggered, without asking for one."""
        if self._left or self._local is not None or self._owner != os.getpid():
            return self._here(lambda local: local.next_push())
        return self._ask_push({"op": "next_push"}, lambda local: local.next_push())

    def _ask_push(self, message: dict[str, Any], again: Callable[[ScheduleMember], Future]) -> Future:
        """The Future of the push the companion names in its answer (waited for: a moment); if the companion ends
        first, the same request made in this process."""
        try:
            reply = self._link.ask({**message, "watch": self._id}).result(_ANSWER_WAIT)
        except CompanionGone:
            self.take_over()
            return self._here(again)
        except concurrent.futures.TimeoutError:
            return failed(_push_error(f"The companion process did not answer within {_ANSWER_WAIT:.0f}s"))
        if "push" not in reply:
            return failed(error_of(reply.get("error") or "no answer"))
        push_id = int(reply["push"])
        with self._lock:
            outer = self._outcomes.get(push_id)
            if outer is None:
                outer = self._outcomes[push_id] = Future()
                reply["future"].add_done_callback(lambda done: self._settle(outer, done, again))
                outer.add_done_callback(lambda _: self._outcomes.pop(push_id, None))
        return outer

    def _settle(self, outer: Future, done: Future, again: Callable[[ScheduleMember], Future]) -> None:
        error = done.exception()
        if isinstance(error, CompanionGone):
            self.take_over()  # the push is made again here: what it had not recorded is pending still
            self._here(again).add_done_callback(lambda f: _copy(f, outer))
        else:
            _copy(done, outer)

    def stop(self, timeout: float | None = 5.0) -> None:
        """Stop pushing this writer's logdir."""
        if self._left:
            return
        self._left = True
        if self._local is not None:
            self._local.stop(timeout)
        else:
            self._link.send({"op": "stop", "watch": self._id})

    def close(self, timeout: float) -> Any:
        """Final push, waiting at most `timeout` seconds (and for the target's budget within it), then stop.

        Raises:
            PushError: the push failed, or the budget or the Hub did not let it finish in time.
        """
        from ..upload.progress import FinalPushProgress

        if self.stopped:
            return None
        if self._local is not None:
            return self._local.close(timeout)

        def here(local: ScheduleMember) -> Future:
            return local.schedule.trigger(deadline=local.schedule.clock() + timeout, kind="final")

        future = self._ask({"op": "close", "timeout": timeout}, here)
        try:
            # The companion fails the push at its deadline; waiting a little longer lets that error arrive first.
            return FinalPushProgress(f"Final push to {self.name}").wait(future, timeout + 5)
        finally:
            self._left = True
            if self._local is not None:
                self._local.stop(timeout=1.0)

    def _here(self, call: Callable[[ScheduleMember], Future]) -> Future:
        """`call` on the schedule in this process; failed when there is none (stopped, or a forked child)."""
        from ..upload.errors import SchedulerStopped
        from ..upload.member import forked_child_error

        if self._owner != os.getpid():
            return failed(forked_child_error(self._owner))
        if self._local is None:
            return failed(SchedulerStopped("This writer's pushes are stopped; use `hf-summary sync` to push."))
        return call(self._local)

    def _ask(self, message: dict[str, Any], again: Callable[[ScheduleMember], Future]) -> Future:
        """Send a push request; the Future settles with the companion's answer, or, if the companion ends first,
        with the same request made in this process."""
        outcome: Future = Future()

        def answered(reply: Future) -> None:
            error = reply.exception()
            if error is None:
                future_outcome(outcome, reply.result())
                return
            if not isinstance(error, CompanionGone):
                outcome.set_exception(error)
                return
            self.take_over()
            self._here(again).add_done_callback(lambda f: _copy(f, outcome))

        self._link.ask({**message, "watch": self._id}).add_done_callback(answered)
        return outcome


def _log(record: dict[str, Any]) -> None:
    """A record the companion logged while pushing, logged here under the same name and level."""
    try:
        logging.getLogger(str(record["name"])).log(int(record["level"]), "%s", record["message"])
    except (KeyError, TypeError, ValueError):
        pass


def _push_error(reason: str) -> BaseException:
    from ..upload.errors import PushError

    return PushError(reason, "hf-summary sync LOGDIR REPO_ID")


def _copy(source: Future, target: Future) -> None:
    if target.done():
        return
    error = source.exception()
    if error is None:
        target.set_result(source.result())
    else:
        target.set_exception(error)


class _Answers:
    """What one companion process is asked and has not answered yet: the Futures its answers settle. Its own lock,
    not the link's: a reader must settle them while a writer holds the link (replacing a companion that died)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pending: dict[int, Future] = {}  # req -> the Future its answer settles
        self.pushes: dict[int, Future] = {}  # a push in the companion -> the Future its outcome settles
        self.ended = False

    def add(self, req: int, future: Future) -> bool:
        """Expect the answer to `req`; False if this companion's answers ended already."""
        with self.lock:
            if not self.ended:
                self.pending[req] = future
            return not self.ended

    def forget(self, req: int) -> None:
        with self.lock:
            self.pending.pop(req, None)

    def settle(self, answer: dict[str, Any]) -> None:
        with self.lock:
            if "push" in answer:
                # A push asked for: triggers that share it share one Future, which its outcome settles.
                push = self.pushes.setdefault(answer["push"], Future())
                if "req" not in answer:
                    del self.pushes[answer["push"]]
                    future_outcome(push, answer)
                    return
                answer["future"] = push  # held here: its outcome may come before the asker reads this
            future = self.pending.pop(int(answer.get("req", 0)), None)
        if future is not None and not future.done():
            future.set_result(answer)

    def end(self) -> None:
        with self.lock:
            self.ended = True
            left = [*self.pending.values(), *self.pushes.values()]
            self.pending, self.pushes = {}, {}
        for future in left:
            if not future.done():
                future.set_exception(CompanionGone("the companion process ended"))


class _Client:
    """The companion of this process: started on the first watch or ring, sent JSON lines, closed after the last
    release and detach."""

    def __init__(self) -> None:
        # Reentrant: the fork hook takes it, and a fork may come from a thread that holds it.
        self._lock = threading.RLock()
        self._sock: socket.socket | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._reaper: threading.Thread | None = None
        self._watches: dict[int, bytes] = {}  # id -> its watch message, sent again to a replacement companion
        # id -> the companion that has the ring (or runs the live logdir's schedule), and what to call if it ends
        # before the ring is detached (or the logdir released)
        self._rings: dict[int, tuple[subprocess.Popen[bytes], Callable[[], None]]] = {}
        self._answers = _Answers()  # the current companion's
        self._ids = itertools.count(1)
        self._forked = False

    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and proc.returncode is None and not self._forked else None

    def watch(self, message: dict[str, Any]) -> Watch:
        if self._forked:
            return Watch(None)
        with self._lock:
            watch_id = next(self._ids)
            self._watch(watch_id, message)
        return Watch(watch_id)

    def _watch(self, watch_id: int, message: dict[str, Any], live: bytes | None = None,
               expect: tuple[int, Future] | None = None) -> None:
        """Send a watch (its `live` form, if given, the first time: a replacement companion is told the plain one),
        whose answer settles `expect` (req, Future); the caller holds the lock."""
        data = encode({"op": "watch", "id": watch_id, **{k: v for k, v in message.items() if k != "live"}})
        self._watches[watch_id] = data
        try:
            if self._sock is None or not self._sent(live or data, expect):
                # None yet, or it died (killed, or pushed on SIGTERM): a new one, told every logdir still watched.
                self._start()
                if expect is not None:
                    self._answers.add(*expect)
                for watch_id_, pending in self._watches.items():
                    self._send(live if live is not None and watch_id_ == watch_id else pending, replace=False)
        except BaseException:
            del self._watches[watch_id]
            if not self._watches:
                self._close()
            raise

    def _sent(self, data: bytes, expect: tuple[int, Future] | None) -> bool:
        """Send to the companion there, expecting an answer if asked; False if it is gone."""
        answers = self._answers
        if expect is not None and not answers.add(*expect):
            self._close()
            return False
        if self._send(data):
            return True
        if expect is not None:
            answers.forget(expect[0])
        return False

    def join(self, message: dict[str, Any]) -> tuple[int, Future] | None:
        """Send a live watch; returns its id and the Future of the companion's answer (the target's name, once it
        reached the Hub), or None in a forked child."""
        if self._forked:
            return None
        with self._lock:
            watch_id = next(self._ids)
            req = next(self._ids)
            answer: Future = Future()
            self._watch(watch_id, message, encode({"op": "watch", "id": watch_id, "req": req, **message}),
                        (req, answer))
            assert self._proc is not None
            self._rings[watch_id] = (self._proc, lambda: None)  # on_exit() names what to call
        return watch_id, answer

    def on_exit(self, watch_id: int, call: Callable[[], None]) -> None:
        """Call `call` if the companion running a live logdir's schedule ends before the logdir is released."""
        with self._lock:
            entry = self._rings.get(watch_id)
            if entry is not None:
                self._rings[watch_id] = (entry[0], call)
                return
        call()  # it ended already

    def leave(self, watch_id: int) -> None:
        """The live logdir's schedule runs in this process now: the companion's end concerns it no more."""
        with self._lock:
            self._rings.pop(watch_id, None)

    def release(self, watch_id: int) -> None:
        if self._forked:
            return
        with self._lock:
            self._rings.pop(watch_id, None)
            if self._watches.pop(watch_id, None) is None:
                return
            self._send(encode({"op": "release", "id": watch_id}))
        self._close_if_idle()

    def _close_if_idle(self) -> None:
        with self._lock:
            if self._watches or self._rings:
                return
            reaper = self._reaper
            self._close()  # end-of-file with nothing watched: the companion exits
        if reaper is not None:
            # It exits within milliseconds; waiting for it makes a clean close leave no process or thread behind.
            reaper.join(_EXIT_WAIT)

    # The event rings (events/handoff.py): the companion writes the event files of this process's writers.

    def attach(self, fd: int, message: dict[str, Any], on_exit: Callable[[], None],
               timeout: float = _ATTACH_TIMEOUT) -> tuple[int, dict[str, Any]]:
        """Hand a ring's file descriptor to the companion (started if needed); returns its id and the answer.

        Raises:
            CompanionGone: no companion could take it (a forked child, a platform that forbids it, it died).
        """
        if self._forked:
            raise NoCompanionInChild("a forked child has no companion of its own")
        answer: dict[str, Any] = {"error": "no answer"}
        future: Future = Future()
        with self._lock:
            ring_id = next(self._ids)
            self._send_ring(encode({"op": "attach", "id": ring_id, "req": ring_id, **message}), fd, ring_id,
                            on_exit, future)
            answers = self._answers
        try:
            answer = self._wait(answers, ring_id, future, timeout)
        finally:
            if answer.get("error"):
                with self._lock:
                    self._rings.pop(ring_id, None)
        if answer.get("error"):
            self._close_if_idle()  # the companion did not take the ring: it exits if nothing else is there
        return ring_id, answer

    def _send_ring(self, data: bytes, fd: int, ring_id: int, on_exit: Callable[[], None], future: Future) -> None:
        """Send a ring's descriptor, to a new companion if there is none or the one there died (killed, say, before
        its reaper closed its socket: the send then fails, and is made once more to a new one)."""
        for attempt in range(2):
            if self._sock is not None and self._answers.ended:
                self._close()  # its reader saw it end: its reaper is about to say so
            if self._sock is None:
                try:
                    self._start()
                    for pending in self._watches.values():
                        self._send(pending, replace=False)
                except OSError as error:
                    raise CompanionGone(f"the companion process could not be started: {error}") from error
            assert self._sock is not None and self._proc is not None
            self._rings[ring_id] = (self._proc, on_exit)  # before the send: if it ends after, the ring is taken over
            try:
                if not self._answers.add(ring_id, future):
                    raise OSError("the companion process ended")
                socket.send_fds(self._sock, [data], [fd], 0, None)
                return
            except OSError as error:
                self._answers.forget(ring_id)
                self._rings.pop(ring_id, None)
                self._close()
                if attempt:
                    raise CompanionGone(f"the companion process could not take the ring: {error}") from error

    def ask(self, message: dict[str, Any]) -> Future:
        """Send a request; the Future settles with the companion's answer, or fails with `CompanionGone` if it
        ends first."""
        return self._ask(message)[2]

    def _ask(self, message: dict[str, Any]) -> tuple[_Answers, int, Future]:
        future: Future = Future()
        with self._lock:
            req = next(self._ids)
            answers = self._answers
            if not answers.add(req, future) or self._sock is None \
                    or not self._send(encode({**message, "req": req}), replace=True):
                answers.forget(req)
                if not future.done():
                    future.set_exception(CompanionGone("the companion process is gone"))
        return answers, req, future

    def send(self, message: dict[str, Any]) -> None:
        """Send a message whose answer nobody waits for."""
        self.ask(message)

    def request(self, message: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        """Send a request about a ring and wait for its answer.

        Raises:
            CompanionGone: the companion ended (or was never there).
            TimeoutError: no answer within `timeout` seconds.
        """
        with self._lock:
            ring = self._rings.get(message["ring"]) if "ring" in message else None
            if "ring" in message and (ring is None or ring[0] is not self._proc):
                # Its companion ended (a new one may be running: it never had this ring); the writer takes over.
                raise CompanionGone("the companion process that had this ring is gone")
            answers, req, future = self._ask(message)
        return self._wait(answers, req, future, timeout)

    @staticmethod
    def _wait(answers: _Answers, req: int, future: Future, timeout: float | None) -> dict[str, Any]:
        try:
            return dict(future.result(timeout))
        except concurrent.futures.TimeoutError:
            answers.forget(req)
            raise TimeoutError("the companion process did not answer in time") from None

    def detach(self, ring_id: int, upto: int, timeout: float | None = None) -> dict[str, Any]:
        """Have the companion write a ring's records up to `upto` and close its files; then forget the ring."""
        try:
            return self.request({"op": "detach", "ring": ring_id, "upto": upto}, timeout)
        finally:
            with self._lock:
                self._rings.pop(ring_id, None)
            self._close_if_idle()

    def nudge(self) -> None:
        """Have the companion read the rings now: a writer waits for room. Nothing is awaited, nothing raised; while
        the link is busy, the companion is reading anyway."""
        if self._lock.acquire(blocking=False):
            try:
                self._send(NUDGE)
            finally:
                self._lock.release()

    def alive(self) -> bool:
        proc = self._proc
        return proc is not None and proc.poll() is None and not self._forked

    def _read(self, sock: socket.socket, answers: _Answers) -> None:
        """The reader's: settle each request's Future with its answer, until the companion's end of the socket
        closes; then fail the requests left."""
        replies = b""
        while True:
            try:
                data = sock.recv(1 << 16)
            except OSError:
                data = b""
            if not data:
                break
            *lines, replies = (replies + data).split(b"\n")
            for line in lines:
                try:
                    answer = json.loads(line)
                except ValueError:
                    continue
                if "log" in answer:
                    _log(answer["log"])
                else:
                    answers.settle(answer)
        answers.end()

    def _exited(self, proc: subprocess.Popen[bytes]) -> None:
        """The reaper's: the companion ended; the rings it served are taken over by their writers, and the
        schedules it ran move to this process."""
        proc.wait()
        with self._lock:
            if self._proc is proc:
                self._close()  # the next writer or watch starts a new one
            rings = [ring_id for ring_id, (served_by, _) in self._rings.items() if served_by is proc]
            callbacks = [self._rings.pop(ring_id)[1] for ring_id in rings]
        for on_exit in callbacks:
            try:
                on_exit()
            except Exception:
                logger.exception("Could not take over the events or the pushes of a writer")

    def _send(self, data: bytes, *, replace: bool = True) -> bool:
        """Send one line; False if there is no companion to send to (a dead one is dropped).

        Raises:
            OSError: the send failed and `replace` is False (a companion just started died at once).
        """
        if self._sock is None:
            return False
        try:
            self._sock.sendall(data, NOSIGNAL)
        except OSError:
            self._close()
            if not replace:
                raise
            return False
        return True

    def _start(self) -> None:
        ours, theirs = socket.socketpair()
        env = {name: value for name, value in os.environ.items() if name not in TOKEN_VARIABLES}
        if _PACKAGE_ROOT not in {*site.getsitepackages(), site.getusersitepackages()}:
            # A source checkout: the companion must import this very package. A site-packages folder is left out:
            # put first on the path, it could shadow the standard library.
            env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "hf_summary.companion"], stdin=theirs.fileno(), stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, env=env, close_fds=True, start_new_session=True,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self._sock, self._proc, self._answers = ours, proc, _Answers()
        start_thread(self._read, name="hf_summary-companion-reader", args=(ours, self._answers))
        # Reaped the moment it exits, whenever that is: a companion that ended never lingers as a zombie.
        self._reaper = start_thread(self._exited, name="hf_summary-companion-reaper", args=(proc,))

    def _close(self) -> None:
        if self._sock is not None:
            try:
                # Not close() alone: the reader's recv() holds the socket open until it returns, and the companion
                # would not see end-of-file. (A forked child never gets here: it closes its copy alone.)
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._sock.close()
        self._sock = self._proc = self._reaper = None

    # Holding the lock across fork() keeps a fork from landing between the socket's creation and its record in
    # self._sock, where the child could not find it to close it. process.STATE calls these three.
    def before_fork(self) -> None:
        self._lock.acquire()

    def after_fork_in_parent(self) -> None:
        self._lock.release()

    def after_fork_in_child(self) -> None:
        # Only the training process may hold its end of the socket: a forked worker keeping it open would hide the
        # training process's death from the companion. close(), never shutdown(): the socket is shared with the
        # parent.
        if self._sock is not None:
            self._sock.close()
        self._sock = self._proc = self._reaper = None
        self._watches = {}
        self._rings = {}
        self._answers = _Answers()
        self._forked = True
        self._lock = threading.RLock()  # the parent's may have been held by one of its other threads
