"""The companion process's main loop: it serves the rings, runs the live logdirs' schedules, and when the training
process ends without closing (end-of-file on the socket) or SIGTERM comes, writes what is left and pushes what is
still watched.

End-of-file with logdirs still watched means the training process died: the companion stops the live schedules
(a push under way gives up its retries), writes everything the rings hold, and pushes the watched logdirs with the
code of `hf-summary sync` (the same schedule, pusher, plan, state and lock, so nothing is sent twice and a later sync
finds nothing left), waiting for the repo's commit budget if it is spent, then retrying for `timeout` seconds; it
writes the outcome and the `hf-summary sync` command to `<logdir>/.hf_summary/companion.log`, and exits. SIGTERM (a
cluster ending the job signals every process of it) makes it push at once, within `SIGTERM_GRACE` seconds.

While nothing is live, the loop imports only the standard library: huggingface_hub and the upload code are imported
once there is something to push.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import queue
import select
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from .protocol import NOSIGNAL, encode, outcome_of
from .pushes import Pushes
from .rings import POLL, Ring

if TYPE_CHECKING:
    from ..upload.schedule import Schedule

# Named, not __name__: run as `python -m`, the entry module is __main__, and its records must reach the package's
# handlers.
logger = logging.getLogger("hf_summary.companion")

# Slurm's default KillWait and Kubernetes' default terminationGracePeriodSeconds are 30 s: SIGKILL follows SIGTERM
# after that, so a push started on SIGTERM stops retrying a little before.
SIGTERM_GRACE = 25.0
# The push is also bounded by SIGALRM's default action, this long after its deadline: a request or a lock that hangs
# past every timeout cannot keep the companion alive.
_HARD_STOP_MARGIN = 60
LOG_NAME = "companion.log"


class Companion:
    """Serves the training process on `fd` until end-of-file (or SIGTERM), then pushes every logdir still watched."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._sock = socket.socket(fileno=os.dup(fd))  # to receive the rings' file descriptors and to answer
        self._send_lock = threading.Lock()  # answers come from the loop and from the schedules' threads
        self._watches: dict[int, dict[str, Any]] = {}
        self._rings: dict[int, Ring] = {}
        self._pushes = Pushes(lambda: list(self._rings.values()))
        self._forward = _Forward(self._answer)
        self._forward.listen(logging.WARNING)  # what goes wrong here (a full disk, say) is told there
        self._push_ids: dict[Future, int] = {}  # the pushes the training process waits for, by their Future
        self._push_numbers = itertools.count(1)
        self._fds: list[int] = []  # descriptors received, in order: each attach message takes the first
        self._buffer = b""
        self._parent = os.getppid()
        self._terminated = False
        self._deadline = math.inf  # a time.monotonic() value; SIGTERM brings it closer
        self._schedule: Schedule | None = None  # the final push in progress, whose deadline SIGTERM brings closer
        # Work the schedules' threads hand to the loop (a logdir leaving its schedule after its final push).
        self._soon: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        # SIGTERM wakes the select() of the wait and of the backoff through this pipe: no polling, no exception
        # raised into the middle of a push. The schedules' threads wake the loop through it too.
        self._wake, self._wake_w = os.pipe()
        os.set_blocking(self._wake, False)
        os.set_blocking(self._wake_w, False)
        signal.set_wakeup_fd(self._wake_w)
        signal.signal(signal.SIGTERM, self._on_sigterm)

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        self._terminated = True
        self._deadline = min(self._deadline, time.monotonic() + SIGTERM_GRACE)
        if self._schedule is not None:
            self._schedule.hurry(self._deadline)  # the wake-up pipe ends the wait it may be in

    def run(self) -> int:
        """Serve while the training process lives, then push what is watched; the exit status is 0 unless a push
        failed."""
        while not self._terminated:
            waiting = any(ring.requests for ring in self._rings.values())
            timeout = (0.001 if waiting else POLL) if self._rings else None
            readable, _, _ = select.select([self._fd, self._wake], [], [], timeout)
            if self._wake in readable:
                self._drain_wake()
            while not self._soon.empty():
                self._soon.get()()
            if self._fd in readable and not self._receive():
                break
            for ring in self._rings.values():
                ring.serve(self._answer)
            self._rings = {key: ring for key, ring in self._rings.items() if not ring.detached}
        self._pushes.stop()
        self._forward.close()
        for ring in self._rings.values():
            # The training process ended (or SIGTERM): what it handed off is written, up to its last whole record.
            ring.finish(final=not self._terminated)
        watches = [w for w in self._watches.values() if w.get("crash", True)]
        if not watches:
            return 0
        if self._terminated:
            reason = "The companion received SIGTERM"
        else:
            reason = f"The training process (pid {self._parent}) ended without closing its writer"
        return 0 if self._push_all(reason, watches) else 1

    def _drain_wake(self) -> None:
        try:
            os.read(self._wake, 4096)
        except BlockingIOError:
            pass

    def _call_soon(self, call: Callable[[], None]) -> None:
        """Run `call` on the loop (from a schedule's thread)."""
        self._soon.put(call)
        try:
            os.write(self._wake_w, b"\0")
        except BlockingIOError:
            pass  # the pipe is full of wake-ups already

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
                self._handle(message["op"], message)
            except (ValueError, KeyError, TypeError):
                continue  # not ours; the next line may be
        return True

    def _handle(self, op: str, message: dict[str, Any]) -> None:
        if op == "watch":
            self._watches[message["id"]] = message
            if "live" in message:
                self._join(message)
        elif op == "nudge":
            pass  # a writer waits for room: the rings are read below, now
        elif op == "release":
            self._watches.pop(message["id"], None)
            self._pushes.leave(message["id"])
        elif op == "attach":
            self._attach(message)
        elif op in ("flush", "detach"):
            ring = self._rings.get(message["ring"])
            if ring is None:
                self._answer({"req": message["req"], "error": "unknown ring", "open": []})
            else:
                ring.requests.append(message)
        elif op in ("trigger", "next_push", "close", "stop"):
            self._push_request(op, message)

    def _join(self, message: dict[str, Any]) -> None:
        req = message["req"]
        self._forward.listen(int(message.get("log_level", logging.WARNING)))
        try:
            connected = self._pushes.join(message)  # type: ignore[arg-type]
        except Exception as error:
            self._answer({"req": req, "refused": f"{type(error).__name__}: {error}"})
            return

        def answer(future: Future) -> None:
            error = future.exception()
            self._answer({"req": req, "name": future.result()} if error is None else {"req": req, **outcome_of(future)})

        connected.add_done_callback(answer)

    def _push_request(self, op: str, message: dict[str, Any]) -> None:
        req, watch_id = message["req"], message["watch"]
        member = self._pushes.member(watch_id)
        if member is None:
            self._answer({"req": req, "error": {"type": "SchedulerStopped",
                                                "message": "This writer's pushes are stopped in the companion."}})
            return
        if op == "stop":
            self._pushes.leave(watch_id)
            self._answer({"req": req, "result": None})
            return

        if op == "close":
            future = self._pushes.close(watch_id, float(message["timeout"]))
            future.add_done_callback(lambda f: self._answer({"req": req, **outcome_of(f)}))
            future.add_done_callback(lambda _: self._call_soon(lambda: self._pushes.leave(watch_id)))
            return
        ring = self._rings.get(message.get("ring", -1))
        if ring is not None and message.get("upto") is not None:
            ring.want(int(message["upto"]))  # everything logged before the trigger is in its push
        future = member.next_push() if op == "next_push" else member.trigger(message.get("timeout"))
        # Triggers that share a push share its Future in the training process too: the answer names the push, and
        # its outcome follows, once.
        push_id = self._push_ids.get(future)
        if push_id is None:
            push_id = self._push_ids[future] = next(self._push_numbers)

            def settled(done: Future) -> None:
                self._answer({"push": push_id, **outcome_of(done)})

                def forget() -> None:
                    self._push_ids.pop(done, None)

                self._call_soon(forget)

            future.add_done_callback(settled)
        self._answer({"req": req, "push": push_id})

    def _attach(self, message: dict[str, Any]) -> None:
        fd = self._fds.pop(0)
        try:
            ring = Ring(fd, message)
        except Exception as error:
            self._answer({"req": message["req"], "error": f"{type(error).__name__}: {error}"})
            return
        finally:
            os.close(fd)
        self._rings[message["id"]] = ring
        self._answer({"req": message["req"], "open": ring.open_files()})

    def _answer(self, answer: dict[str, Any]) -> None:
        try:
            with self._send_lock:
                self._sock.sendall(encode(answer), NOSIGNAL)
        except OSError:
            pass  # the training process is gone: it was not waiting

    def _push_all(self, reason: str, watches: list[dict[str, Any]]) -> bool:
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
        deadline; log the outcome to each logdir's companion.log."""
        from ..upload.errors import describe
        from ..upload.schedule import open_schedule
        from ..upload.spec import UploadSpec
        from ..upload.uploader import Uploader

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
                self._schedule = schedule
                if self._terminated:
                    schedule.hurry(self._deadline)
                info = schedule.run(once=True, deadline=self._deadline)
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
        """The final push's wait (for the commit budget, or between failed pushes): SIGTERM cuts it short, and the
        hard stop moves past it, so that a wait for the budget is not mistaken for a hang."""
        if event.is_set():
            return True
        deadline = self._schedule.deadline if self._schedule is not None else None
        end = max(seconds, (deadline or 0.0) - time.monotonic())
        signal.alarm(math.ceil(end) + _HARD_STOP_MARGIN)
        select.select([self._wake], [], [], seconds)
        self._drain_wake()
        return event.is_set()


class _Forward(logging.Handler):
    """The package's log records, sent to the training process, which logs them as its own (client.py): the
    warnings of a push or of the disk reach the user's log wherever they happen. Warnings and above, and the lower
    levels a live logdir's writer logs at."""

    def __init__(self, send: Callable[[dict[str, Any]], None]) -> None:
        super().__init__(logging.CRITICAL + 1)
        self._send = send

    def listen(self, level: int) -> None:
        package = logging.getLogger("hf_summary")
        if self not in package.handlers:
            package.addHandler(self)
        self.setLevel(min(self.level, level))
        package.setLevel(self.level)

    def close(self) -> None:
        logging.getLogger("hf_summary").removeHandler(self)
        super().close()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
            if record.exc_info:
                text += "\n" + logging.Formatter().formatException(record.exc_info)
            self._send({"log": {"name": record.name, "level": record.levelno, "message": text}})
        except Exception:
            self.handleError(record)


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
    """The companion process: its socket to the training process is its stdin."""
    os.chdir("/")  # hold no mount busy; every path it is sent is absolute
    return Companion(sys.stdin.fileno()).run()
