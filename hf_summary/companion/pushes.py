"""The pushes of a training process's live logdirs, run in its companion: the same schedules, pusher and targets as
in a training process (upload/), on this process's threads.

Each live `watch` joins its logdir to the schedule of its target, shared by the logdirs bound for one repo and
branch (`process.STATE`, as in a training process). A push first writes the logdir's rings up to now and rolls their
files (`RingsOf`, what a push asks of a writer), then plans, sends and records as everywhere else.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..process import STATE
from .rings import Ring

if TYPE_CHECKING:
    from ..upload.member import ScheduleMember
    from .protocol import Watch


class RingsOf:
    """A live logdir's writers, as a push in the companion sees them (`uploader.LiveLogdir`): the rings attached for
    it (one per writer of the logdir in the training process)."""

    def __init__(self, logdir: Path, rings: Callable[[], Iterable[Ring]], max_file_size: int | None) -> None:
        self._logdir = logdir
        self._rings = rings
        self._max_file_size = max_file_size

    def _mine(self) -> list[Ring]:
        return [ring for ring in self._rings() if ring.logdir == self._logdir]

    def write_for_push(self) -> None:
        from ..upload.uploader import default_roll_size

        roll_size = self._max_file_size or default_roll_size()
        for ring in self._mine():
            ring.write_for_push(roll_size)

    def open_event_files(self) -> list[Path]:
        return [path for ring in self._mine() for path in ring.open_paths()]


class Pushes:
    """The live logdirs' schedules, by watch id.

    Args:
        rings: the rings the companion serves now.
    """

    def __init__(self, rings: Callable[[], Iterable[Ring]]) -> None:
        self._rings = rings
        self._members: dict[int, ScheduleMember] = {}
        self._endpoint: str | None = None

    def join(self, message: Watch) -> Future:
        """Push a live logdir on its schedule; the Future resolves to the target's full name once it reached the Hub,
        or fails with what stopped it.

        Raises:
            ValueError: the writer's Hub is not the one this companion's huggingface_hub was imported for.
        """
        environ = message["environ"]
        if self._endpoint is None:
            os.environ.update(environ)  # before huggingface_hub is imported: it reads the endpoint once, at import
            os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
            from huggingface_hub import constants

            self._endpoint = constants.ENDPOINT
        if environ.get("HF_ENDPOINT", self._endpoint) != self._endpoint:
            raise ValueError(f"this companion pushes to {self._endpoint}, not {environ['HF_ENDPOINT']}")
        if "HF_XET_CACHE" in environ:
            os.environ["HF_XET_CACHE"] = environ["HF_XET_CACHE"]  # hf_xet reads it at each upload
        from ..upload.schedule import open_schedule
        from ..upload.spec import UploadSpec
        from ..upload.uploader import Uploader

        live = message["live"]
        spec = UploadSpec.from_json(message["spec"])
        logdir = Path(message["logdir"])
        key = (spec.repo_type, spec.repo_id, spec.revision, message["token"])
        with STATE.lock:
            schedule = STATE.shared(key, lambda: open_schedule(
                spec, token=message["token"], every=live["every"], membership=STATE.lock,
                max_commits_per_hour=message["max_commits_per_hour"]).start())
            self._members[message["id"]] = schedule.join(
                Uploader(logdir, spec, live=RingsOf(logdir, self._rings, live["max_file_size"])),
                every=live["every"], push_timeout=live["push_timeout"])
        return schedule.connected

    def member(self, watch_id: int) -> ScheduleMember | None:
        return self._members.get(watch_id)

    def close(self, watch_id: int, timeout: float) -> Future:
        """The final push of a closed writer's logdir, within `timeout` seconds (and the budget); the logdir then
        leaves its schedule (`leave`, once the Future is settled)."""
        member = self._members[watch_id]
        schedule = member.schedule
        return schedule.trigger(deadline=schedule.clock() + timeout, kind="final")

    def leave(self, watch_id: int, timeout: float | None = 1.0) -> None:
        """Stop pushing a logdir on its schedule (its thread ends with its last logdir)."""
        member = self._members.pop(watch_id, None)
        if member is not None:
            member.stop(timeout)

    def stop(self) -> list[Any]:
        """Stop every schedule (the training process ended): a push under way gives up its retries. Returns the
        members stopped."""
        members = list(self._members.values())
        for watch_id in list(self._members):
            self.leave(watch_id, timeout=5.0)
        return members
