"""The guardian: the training process's companion, which writes its writers' event files and pushes a run whose
training process died before closing its writers.

Each writer hands its events to the companion through shared memory (`{"op": "attach"}`, with the ring's file
descriptor; events/handoff.py); the companion reads the rings every `_POLL` seconds, at each `flush` or `detach`
request, which it answers on the same socket, and at each `nudge` (a writer found its ring full, and waits); at
end-of-file it writes everything the dead process handed off before it pushes.

SIGKILL, a segfault, `os._exit`, SIGTERM without `push_on_sigterm`, a notebook kernel dying: none of them runs
`close()` or the exit hook, so the final push never happens. The first `HFSummaryWriter` of a process starts one
guardian (`watch()`); it blocks reading a socket of which only the training process holds the other end, and does
nothing else while that process lives. The protocol is JSON lines, training process to guardian:

- `{"op": "watch", "id": N, "logdir": ..., "spec": {...}, "token": ..., "timeout": ..., "environ": {...}}` when a
  writer starts. The token travels only here: never in the guardian's argv, environment, logs or files.
- `{"op": "release", "id": N}` when a writer closed and its final push landed. After the last release the training
  process closes its end, and the guardian, seeing end-of-file with nothing watched, exits. A writer whose final
  push did not land (the Hub was down, the commit budget spent) keeps its logdir watched: the guardian pushes it
  when the process ends.

End-of-file with logdirs still watched means the training process died: the guardian pushes them with the code of
`hf-summary sync` (the same schedule, pusher, plan, state and lock, so nothing is sent twice and a later sync finds
nothing left), waiting for the repo's commit budget if it is spent, then retrying for `timeout` seconds; it writes
the outcome and the `hf-summary sync` command to `<logdir>/.hf_summary/guardian.log`, and exits. SIGTERM (a
cluster ending the job signals every process of it) makes it push at once, within `SIGTERM_GRACE` seconds.

Process hygiene: the guardian runs in a session of its own (a Jupyter kernel restart kills the kernel's process
group, a terminal's Ctrl-C its foreground group), its stdout and stderr go to /dev/null, and the training process
reaps it (a thread parked in `waitpid`) so that it is never a zombie while that process lives. Forked children of
the training process (DataLoader workers) close their copy of the socket at once, so the guardian still sees
end-of-file when the training process dies, and never start or talk to a guardian.

While waiting, this module (the guardian's entry point, `python -m hf_summary.upload.guardian`) imports only the
standard library: huggingface_hub and the upload code are imported once there is something to push.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import select
import signal
import site
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from .. import defaults
from ..process import STATE
from ..threads import start_thread

if TYPE_CHECKING:
    from .schedule import Schedule
    from .spec import UploadSpec

# Named, not __name__: run as `python -m`, this module is __main__, and its records must reach the package's handlers.
logger = logging.getLogger("hf_summary.upload.guardian")

# Slurm's default KillWait and Kubernetes' default terminationGracePeriodSeconds are 30 s: SIGKILL follows SIGTERM
# after that, so a push started on SIGTERM stops retrying a little before.
SIGTERM_GRACE = 25.0
# The push is also bounded by SIGALRM's default action, this long after its deadline: a request or a lock that hangs
# past every timeout cannot keep the guardian alive.
_HARD_STOP_MARGIN = 60
LOG_NAME = "guardian.log"
_EXIT_WAIT = 5.0  # seconds the last release waits for the guardian to exit
_ATTACH_TIMEOUT = 30.0  # seconds a new writer waits for the companion to take its ring, else writes in-process
# Seconds between the companion's reads of the rings: how long an event may sit in shared memory before it is on disk
# (a flush, a push and the end of the training process do not wait for it).
_POLL = 0.05

# Variables the guardian's environment leaves out (environments of processes can be listed); they are passed over
# the socket instead, with the endpoint the training process's huggingface_hub actually uses.
_TOKEN_VARIABLES = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
# A send to a guardian that died must fail with an error, not kill the training process with SIGPIPE (a program may
# have restored SIGPIPE's default action). macOS has no MSG_NOSIGNAL; Python ignores SIGPIPE there by default.
_NOSIGNAL = getattr(socket, "MSG_NOSIGNAL", 0)
_NUDGE = b'{"op": "nudge"}\n'
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


# The training process's side -----------------------------------------------------------------------------------------


class Watch:
    """One logdir this process's guardian pushes if the process dies before `release()`; returned by `watch()`."""

    def __init__(self, watch_id: int | None) -> None:
        self._id = watch_id

    @property
    def active(self) -> bool:
        """Whether the guardian was told about the logdir and it is not released yet."""
        return self._id is not None

    def release(self) -> None:
        """The writer closed and its final push ran: the guardian forgets the logdir (it exits after the last one).

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


def watch(logdir: str | os.PathLike[str], spec: UploadSpec, token: str | None = None, *,
          timeout: float = defaults.CRASH_UPLOAD_TIMEOUT,
          max_commits_per_hour: int | None = defaults.MAX_COMMITS_PER_HOUR) -> Watch:
    """Have this process's guardian push `logdir` to `spec` if the process ends before the handle is released.

    Starts the guardian process on first use; one serves every writer of the process. Never raises: a guardian
    that cannot be started (or a forked child, whose parent's guardian it is) gives an inactive handle, logged at
    debug level, and the run goes on as before.

    Args:
        logdir: the folder the writer logs to.
        spec: where it goes, and which of its files.
        token: the writer's `token` argument; None uses the one huggingface_hub finds (HF_TOKEN, `hf auth login`).
        timeout: seconds the guardian keeps retrying the push after the process died (once the budget lets it).
        max_commits_per_hour: the writer's commit budget, which the guardian's push keeps too.

    Returns:
        The handle whose `release()` tells the guardian the writer closed.

    Example:
        ```py
        >>> from hf_summary import UploadSpec
        >>> from hf_summary.upload import guardian
        >>> handle = guardian.watch("runs/exp1", UploadSpec("me/my-run"))
        >>> guardian.current_pid()   # the guardian process
        4242
        >>> handle.release()         # after the final push
        ```
    """
    try:
        from huggingface_hub import constants

        environ = {name: os.environ[name] for name in _TOKEN_VARIABLES if name in os.environ}
        return _link().watch({
            "logdir": os.path.abspath(logdir), "spec": spec.to_json(), "token": token, "timeout": timeout,
            "max_commits_per_hour": max_commits_per_hour,
            "environ": {**environ, "HF_ENDPOINT": constants.ENDPOINT},
        })
    except Exception as error:
        logger.debug("No guardian process for %s (a crash will not push it): %s", logdir, error)
        return Watch(None)


class CompanionGone(Exception):
    """The companion process is not there to write the events: the writer writes them itself."""


class NoCompanionInChild(CompanionGone):
    """A forked child writes its events itself, by design: the companion is its parent's."""


def companion() -> _Client:
    """This process's companion (the guardian): it also writes the event files of the process's writers."""
    return _link()


def current_pid() -> int | None:
    """The pid of this process's guardian, or None when none is running (nothing watched, or a forked child).

    Example:
        ```py
        >>> from hf_summary.upload import guardian
        >>> guardian.current_pid() is None   # before any writer, and after the last one closed
        True
        ```
    """
    link = STATE.guardian
    return link.pid() if isinstance(link, _Client) else None


def _encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def _link() -> _Client:
    """This process's link to its guardian, kept in the process's shared state (one per process)."""
    with STATE.lock:
        if not isinstance(STATE.guardian, _Client):
            STATE.guardian = _Client()
        return STATE.guardian


class _Client:
    """The guardian of this process: started on the first watch, sent JSON lines, closed after the last release."""

    def __init__(self) -> None:
        # Reentrant: the fork hook takes it, and a fork may come from a thread that holds it.
        self._lock = threading.RLock()
        self._sock: socket.socket | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._reaper: threading.Thread | None = None
        self._watches: dict[int, bytes] = {}  # id -> its watch message, sent again to a replacement guardian
        # id -> the companion that has the ring, and what to call if it ends before the ring is detached
        self._rings: dict[int, tuple[subprocess.Popen[bytes], Callable[[], None]]] = {}
        self._ids = itertools.count(1)
        self._forked = False
        self._replies = b""  # what was read of the companion's answers, past the last whole line

    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and proc.returncode is None and not self._forked else None

    def watch(self, message: dict[str, Any]) -> Watch:
        if self._forked:
            return Watch(None)
        with self._lock:
            watch_id = next(self._ids)
            data = _encode({"op": "watch", "id": watch_id, **message})
            self._watches[watch_id] = data
            try:
                if not self._send(data):
                    # None yet, or it died (killed, or pushed on SIGTERM): a new one, told every logdir still watched.
                    self._start()
                    for pending in self._watches.values():
                        self._send(pending, replace=False)
            except BaseException:
                del self._watches[watch_id]
                if not self._watches:
                    self._close()
                raise
        return Watch(watch_id)

    def release(self, watch_id: int) -> None:
        if self._forked:
            return
        with self._lock:
            if self._watches.pop(watch_id, None) is None:
                return
            self._send(_encode({"op": "release", "id": watch_id}))
        self._close_if_idle()

    def _close_if_idle(self) -> None:
        with self._lock:
            if self._watches or self._rings:
                return
            reaper = self._reaper
            self._close()  # end-of-file with nothing watched: the guardian exits
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
        with self._lock:
            ring_id = next(self._ids)
            answer: dict[str, Any] = {"error": "no answer"}
            try:
                self._send_ring(_encode({"op": "attach", "id": ring_id, "req": ring_id, **message}), fd, ring_id,
                                on_exit)
                answer = self._answer(ring_id, timeout)
            finally:
                if answer.get("error"):
                    self._rings.pop(ring_id, None)
        if answer.get("error"):
            self._close_if_idle()  # the companion did not take the ring: it exits if nothing else is there
        return ring_id, answer

    def _send_ring(self, data: bytes, fd: int, ring_id: int, on_exit: Callable[[], None]) -> None:
        """Send a ring's descriptor, to a new companion if there is none or the one there died (killed, say, before
        its reaper closed its socket: the send then fails, and is made once more to a new one)."""
        for attempt in range(2):
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
                socket.send_fds(self._sock, [data], [fd], 0, None)
                return
            except OSError as error:
                self._rings.pop(ring_id, None)
                self._close()
                if attempt:
                    raise CompanionGone(f"the companion process could not take the ring: {error}") from error

    def request(self, message: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        """Send a request about a ring and wait for its answer.

        Raises:
            CompanionGone: the companion ended (or was never there).
            TimeoutError: no answer within `timeout` seconds.
        """
        with self._lock:
            req = next(self._ids)
            ring = self._rings.get(message["ring"]) if "ring" in message else None
            if "ring" in message and (ring is None or ring[0] is not self._proc):
                # Its companion ended (a new one may be running: it never had this ring); the writer takes over.
                raise CompanionGone("the companion process that had this ring is gone")
            if self._sock is None or not self._send(_encode({**message, "req": req}), replace=True):
                raise CompanionGone("the companion process is gone")
            return self._answer(req, timeout)

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
        a request holds the link, the companion is reading anyway."""
        if self._lock.acquire(blocking=False):
            try:
                self._send(_NUDGE)
            finally:
                self._lock.release()

    def alive(self) -> bool:
        proc = self._proc
        return proc is not None and proc.poll() is None and not self._forked

    def _answer(self, req: int, timeout: float | None) -> dict[str, Any]:
        """Read the companion's answers until the one to `req` (earlier ones were for requests that timed out)."""
        sock = self._sock
        assert sock is not None
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            line, sep, rest = self._replies.partition(b"\n")
            if sep:
                self._replies = rest
                try:
                    answer = json.loads(line)
                except ValueError:
                    continue
                if answer.get("req") == req:
                    return dict(answer)
                continue
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise TimeoutError("the companion process did not answer in time")
            readable, _, _ = select.select([sock], [], [], min(left, 1.0) if left is not None else 1.0)
            if not readable:
                if self._proc is None or self._proc.poll() is not None:
                    raise CompanionGone("the companion process ended")
                continue
            try:
                data = sock.recv(1 << 16)
            except OSError:
                data = b""
            if not data:
                raise CompanionGone("the companion process ended")
            self._replies += data

    def _exited(self, proc: subprocess.Popen[bytes]) -> None:
        """The reaper's: the companion ended; the rings it served are taken over by their writers."""
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
                logger.exception("Could not take over the events of a writer")

    def _send(self, data: bytes, *, replace: bool = True) -> bool:
        """Send one line; False if there is no guardian to send to (a dead one is dropped).

        Raises:
            OSError: the send failed and `replace` is False (a guardian just started died at once).
        """
        if self._sock is None:
            return False
        try:
            self._sock.sendall(data, _NOSIGNAL)
        except OSError:
            self._close()
            if not replace:
                raise
            return False
        return True

    def _start(self) -> None:
        ours, theirs = socket.socketpair()
        env = {name: value for name, value in os.environ.items() if name not in _TOKEN_VARIABLES}
        if _PACKAGE_ROOT not in {*site.getsitepackages(), site.getusersitepackages()}:
            # A source checkout: the guardian must import this very package. A site-packages folder is left out:
            # put first on the path, it could shadow the standard library.
            env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "hf_summary.upload.guardian"], stdin=theirs.fileno(), stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, env=env, close_fds=True, start_new_session=True,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self._sock, self._proc, self._replies = ours, proc, b""
        # Reaped the moment it exits, whenever that is: a guardian that ended never lingers as a zombie.
        self._reaper = start_thread(self._exited, name="hf_summary-guardian-reaper", args=(proc,))

    def _close(self) -> None:
        if self._sock is not None:
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
        # training process's death from the guardian. close(), never shutdown(): the socket is shared with the parent.
        if self._sock is not None:
            self._sock.close()
        self._sock = self._proc = self._reaper = None
        self._watches = {}
        self._rings = {}
        self._forked = True
        self._lock = threading.RLock()  # the parent's may have been held by one of its other threads


# The guardian's side -------------------------------------------------------------------------------------------------


class _Guardian:
    """Waits for end-of-file (or SIGTERM) on `fd`, then pushes every logdir still watched."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._sock = socket.socket(fileno=os.dup(fd))  # to receive the rings' file descriptors and to answer
        self._watches: dict[int, dict[str, Any]] = {}
        self._rings: dict[int, _Ring] = {}
        self._fds: list[int] = []  # descriptors received, in order: each attach message takes the first
        self._buffer = b""
        self._parent = os.getppid()
        self._terminated = False
        self._deadline = math.inf  # a time.monotonic() value; SIGTERM brings it closer
        self._schedule: Schedule | None = None  # the push in progress, whose deadline SIGTERM brings closer
        # SIGTERM wakes the select() of the wait and of the backoff through this pipe: no polling, no exception
        # raised into the middle of a push.
        self._wake, wake_w = os.pipe()
        os.set_blocking(self._wake, False)
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGTERM, self._on_sigterm)

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        self._terminated = True
        self._deadline = min(self._deadline, time.monotonic() + SIGTERM_GRACE)
        if self._schedule is not None:
            self._schedule.hurry(self._deadline)  # the wake-up pipe ends the wait it may be in

    def run(self) -> int:
        """Write the rings' events while the training process lives, then push what is watched; the exit status is
        0 unless a push failed."""
        while not self._terminated:
            waiting = any(ring.requests for ring in self._rings.values())
            timeout = (0.001 if waiting else _POLL) if self._rings else None
            readable, _, _ = select.select([self._fd, self._wake], [], [], timeout)
            if self._fd in readable and not self._receive():
                break
            for ring in self._rings.values():
                ring.serve(self._answer)
            self._rings = {key: ring for key, ring in self._rings.items() if not ring.detached}
        for ring in self._rings.values():
            # The training process ended (or SIGTERM): what it handed off is written, up to its last whole record.
            ring.finish(final=not self._terminated)
        if not self._watches:
            return 0
        if self._terminated:
            reason = "The guardian received SIGTERM"
        else:
            reason = f"The training process (pid {self._parent}) ended without closing its writer"
        return 0 if self._push_all(reason) else 1

    def _receive(self) -> bool:
        """Read what the training process sent; False at end-of-file."""
        try:
            data, fds, _, _ = socket.recv_fds(self._sock, 1 << 16, 64)
        except OSError:
            data, fds = b"", []
        self._fds.extend(fds)
        if not data:
            return False
        *lines, self._buffer = (self._buffer + data).split(b"\n")
        for line in lines:
            try:
                message = json.loads(line)
                op = message["op"]
                if op == "watch":
                    self._watches[message["id"]] = message
                elif op == "nudge":
                    pass  # a writer waits for room: the rings are read below, now
                elif op == "release":
                    self._watches.pop(message["id"], None)
                elif op == "attach":
                    self._attach(message)
                elif op in ("flush", "detach"):
                    ring = self._rings.get(message["ring"])
                    if ring is None:
                        self._answer({"req": message["req"], "error": "unknown ring", "open": []})
                    else:
                        ring.requests.append(message)
            except (ValueError, KeyError, TypeError):
                continue  # not ours; the next line may be
        return True

    def _attach(self, message: dict[str, Any]) -> None:
        fd = self._fds.pop(0)
        try:
            ring = _Ring(fd, message)
        except Exception as error:
            self._answer({"req": message["req"], "error": f"{type(error).__name__}: {error}"})
            return
        finally:
            os.close(fd)
        self._rings[message["id"]] = ring
        self._answer({"req": message["req"], "open": ring.open_files()})

    def _answer(self, answer: dict[str, Any]) -> None:
        try:
            self._sock.sendall(_encode(answer), _NOSIGNAL)
        except OSError:
            pass  # the training process is gone: it was not waiting

    def _push_all(self, reason: str) -> bool:
        watches = list(self._watches.values())
        budget = max(float(w["timeout"]) for w in watches)
        self._deadline = min(self._deadline, time.monotonic() + budget)
        signal.alarm(math.ceil(self._deadline - time.monotonic()) + _HARD_STOP_MARGIN)
        # Before huggingface_hub is imported: it reads the endpoint once, at import. Nobody sees progress bars here.
        os.environ.update(watches[0]["environ"])
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        groups: dict[tuple[Any, ...], dict[str, dict[str, Any]]] = {}
        for w in watches:
            if not os.path.isdir(w["logdir"]):
                continue  # deleted since: pushing would create it again (for its state folder)
            spec = w["spec"]
            key = (spec["repo_type"], spec["repo_id"], spec["revision"], w["token"])
            # One member per logdir and spec: two uploaders of one logdir would wait on each other's lock.
            groups.setdefault(key, {})[json.dumps([w["logdir"], spec], sort_keys=True)] = w
        results = [self._push_group(reason, list(members.values())) for members in groups.values()]
        return all(results)

    def _push_group(self, reason: str, watches: list[dict[str, Any]]) -> bool:
        """Push the logdirs bound for one repo and branch in one commit, as `hf-summary sync` does, until the
        deadline; log the outcome to each logdir's guardian.log."""
        from .errors import describe
        from .schedule import open_schedule
        from .spec import UploadSpec
        from .uploader import Uploader

        members = [(Path(w["logdir"]), UploadSpec.from_json(w["spec"])) for w in watches]
        spec = members[0][1]
        names = ", ".join(str(logdir) for logdir, _ in members)
        commands = "\n".join(f"  {s.sync_command(logdir)}" for logdir, s in members)
        with _logging_to([logdir / ".hf_summary" / LOG_NAME for logdir, _ in members]):
            logger.info("%s: pushing %s to %s. If no line below says it was pushed, upload what is left "
                           "with:\n%s", reason, names, spec.repo_id, commands)
            try:
                # Batched uploads (interactive): the fastest, and their progress bar goes to /dev/null with the rest
                # of our output. No machine turns: this is the last push of these logdirs, and it may not skip.
                schedule = open_schedule(spec, token=watches[0]["token"], interactive=True, machine=False,
                                         max_commits_per_hour=watches[0].get("max_commits_per_hour"), wait=self._wait)
                for logdir, member_spec in members:
                    schedule.join(Uploader(logdir, member_spec))
                schedule.deadline = self._deadline
                self._schedule = schedule
                if self._terminated:
                    schedule.hurry(self._deadline)
                info = schedule.run(once=True)
            except Exception as error:
                logger.error("Could not push %s to %s (%s). Your logs are safe on disk; upload them with:\n%s",
                             names, spec.repo_id, describe(error), commands)
                return False
            if info is None:
                logger.info("Nothing was left to push: %s is already on the Hub.", names)
            else:
                logger.info("Pushed %s to %s (commit %s).", names, spec.repo_id, info.oid[:12])
            return True

    def _wait(self, event: threading.Event, seconds: float) -> bool:
        """The schedule's wait (for the commit budget, or between failed pushes): SIGTERM cuts it short, and the
        hard stop moves past it, so that a wait for the budget is not mistaken for a hang."""
        if event.is_set():
            return True
        deadline = self._schedule.deadline if self._schedule is not None else None
        end = max(seconds, (deadline or 0.0) - time.monotonic())
        signal.alarm(math.ceil(end) + _HARD_STOP_MARGIN)
        select.select([self._wake], [], [], seconds)
        try:
            os.read(self._wake, 64)
        except BlockingIOError:
            pass
        return event.is_set()


class _Ring:
    """One writer's ring, in the companion: drained into the writer's event files."""

    def __init__(self, fd: int, message: dict[str, Any]) -> None:
        from ..events.drain import RingDrain
        from ..events.ring import RingReader, open_ring

        self.drain = RingDrain(RingReader(open_ring(fd)), Path(message["logdir"]), message.get("suffix") or "",
                               message.get("pid"), hold_size=message.get("hold_size"))
        self.requests: list[dict[str, Any]] = []  # flushes and the detach, waiting for their records
        self.detached = False
        # Like tensorboardX, the writer's first file exists, with its header record, as soon as the writer does.
        main = self.drain.files.run("")
        main.open()
        main.write_pending()

    def open_files(self) -> list[str]:
        return [str(path) for path in self.drain.files.open_files()]

    def serve(self, answer: Callable[[dict[str, Any]], None]) -> None:
        """Write what the ring holds; answer the requests whose records are all written."""
        self.drain.drain()
        done = self.drain.reader.committed()[0]
        error = self.drain.error
        for request in list(self.requests):
            if request["upto"] >= done and error is None:
                continue  # a record before the mark is still being written by its thread
            self.requests.remove(request)
            message = f"{type(error).__name__}: {error}" if error is not None else None
            read: dict[str, Any] = {}
            if request["op"] == "detach":
                message = self.finish(final=True, waited=True) or message
                # What the last reading read: a write that came after it is logged again by the writer (landed).
                read = {"read_below": self.drain.reader.seq, "skipped": sorted(self.drain.reader.skipped)}
            elif request.get("roll_size") and error is None:
                self.drain.files.roll(int(request["roll_size"]))
            answer({"req": request["req"], "error": message, "open": self.open_files(), **read, **self.drain.report()})

    def finish(self, *, final: bool, waited: bool = False) -> str | None:
        """Write everything the ring holds; if `final` (the writer closed, or its process ended), close the files,
        fsynced, and the ring. Returns what went wrong, if anything.

        Args:
            waited: every record the writer put was read already (its detach waited for them): a missing one is
                not looked past, which costs a scan of the ring.
        """
        if self.detached:
            return None
        self.drain.drain(final=final and not waited)
        if not final:
            return None
        failures = self.drain.close()
        self.detached = True
        self.drain.reader.memory.close()
        if self.drain.error is not None:
            return f"{type(self.drain.error).__name__}: {self.drain.error}"
        return "; ".join(f"could not close {run.path}: {failure}" for run, failure in failures) or None


@contextmanager
def _logging_to(paths: list[Path]) -> Iterator[None]:
    """Send the package's log records (ours, the committer's, the retries') to `paths` while the block runs."""
    package = logging.getLogger("hf_summary")
    handlers = []
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handlers.append(handler)
        package.addHandler(handler)
    package.setLevel(logging.INFO)
    try:
        yield
    finally:
        for handler in handlers:
            package.removeHandler(handler)
            handler.close()


def main() -> int:
    """The guardian process: its socket to the training process is its stdin."""
    os.chdir("/")  # hold no mount busy; every path it is sent is absolute
    return _Guardian(sys.stdin.fileno()).run()


if __name__ == "__main__":
    sys.exit(main())
