"""`LocalSummaryWriter`: tensorboardX's `SummaryWriter` with hf_summary's fast event path, and no Hub.

Every `add_*` call keeps tensorboardX's behaviour and file format; events go through one in-process queue to one
writer thread (see event_writer.py) instead of a `multiprocessing.Queue` per run folder. `HFSummaryWriter` builds on
it; on its own it serves runs that stay local until `hf-summary sync` pushes them.
"""

from __future__ import annotations

import os
import socket
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from tensorboardX import SummaryWriter

from .event_writer import DEFAULT_MAX_QUEUE, SCALAR, EventWriter, RunFileWriter


class LocalSummaryWriter(SummaryWriter):
    """A `tensorboardX.SummaryWriter` whose events are written by one background thread, in batches.

    `add_scalar` costs a fraction of a microsecond; `flush()` returns once everything logged is on disk; event
    files are named with the process id so that processes sharing a logdir never collide.

    Args:
        logdir: where event files are written; defaults to `runs/<date>_<host><comment>` like tensorboardX.
        queue_size: events that may wait in memory before logging blocks. Defaults to 10 000.
        kwargs: passed to `tensorboardX.SummaryWriter` (comment, purge_step, filename_suffix, ...). Its
            `max_queue` and `flush_secs` have no use here: events are written every second, and at `flush()`.

    Raises:
        OSError: the logdir cannot be written to.

    Example:
        ```py
        >>> from hf_summary import LocalSummaryWriter
        >>> with LocalSummaryWriter("runs/exp1") as writer:
        ...     writer.add_scalar("loss", 0.5, 0)
        ```
    """

    def __init__(self, logdir: str | None = None, *, queue_size: int = DEFAULT_MAX_QUEUE, **kwargs: Any) -> None:
        logdir = logdir or kwargs.pop("log_dir", None) or default_logdir(kwargs.get("comment") or "")
        self._events: EventWriter | None = None
        self._queue_size = queue_size
        self._comet_on = not (kwargs.get("comet_config") or {"disabled": True}).get("disabled", False)
        try:
            super().__init__(logdir=logdir, **kwargs)
        except OSError as error:
            raise OSError(error.errno, f"Cannot write TensorBoard events in logdir '{logdir}': {error.strerror}. "
                          "Pass a logdir you can write to.", error.filename) from None

    def _get_file_writer(self) -> Any:
        if not self._write_to_disk:
            return super()._get_file_writer()
        if self.all_writers is None or self.file_writer is None:
            if self._events is None or self._events.closed:
                self._events = EventWriter(self.logdir, max_queue=self._queue_size,
                                           filename_suffix=self._filename_suffix or "")
            self.file_writer = RunFileWriter(self._events, self.logdir, "")
            if self.purge_step is not None:
                from tensorboardX.proto.event_pb2 import Event, SessionLog

                self.file_writer.add_event(Event(step=self.purge_step, file_version="brain.Event:2"))
                self.file_writer.add_event(
                    Event(step=self.purge_step, session_log=SessionLog(status=SessionLog.START)))
            self.all_writers = {self.logdir: self.file_writer}
        return self.file_writer

    def add_scalar(
        self,
        tag: str,
        scalar_value: Any,
        global_step: int | None = None,
        walltime: float | None = None,
        display_name: str | None = "",
        summary_description: str | None = "",
    ) -> None:
        """Add a scalar, as tensorboardX does; the event is built and written by the writer thread.

        This is the hot path of a training loop: checks are ordered cheapest first, and the hand-off is one append.
        """
        events = self._events
        if (events is None or events.closed or display_name or summary_description or self._comet_on
                or self.file_writer._default_metadata):
            super().add_scalar(tag, scalar_value, global_step, walltime, display_name, summary_description)
            return
        if type(tag) is not str:
            raise TypeError(f"add_scalar expects a string tag, got {type(tag).__name__}: {tag!r}.")
        queue = events.queue
        queue.append((
            SCALAR, "", tag,
            scalar_value if type(scalar_value) is float else _as_float(tag, scalar_value),
            global_step if global_step is None or type(global_step) is int else int(global_step),
            time.time() if walltime is None else walltime,
        ))
        if len(queue) >= events.max_queue:
            events.wait_for_room()

    def add_scalars(
        self,
        main_tag: str,
        tag_scalar_dict: dict[str, Any],
        global_step: int | None = None,
        walltime: float | None = None,
    ) -> None:
        """Add several scalars under one chart, one sub-run folder per key, as tensorboardX does."""
        if not self._write_to_disk or self._comet_on:
            super().add_scalars(main_tag, tag_scalar_dict, global_step, walltime)
            return
        walltime = time.time() if walltime is None else walltime
        step = None if global_step is None else int(global_step)
        self._get_file_writer()
        events = self._events
        for tag, value in tag_scalar_dict.items():
            run = os.path.join(main_tag, tag)
            fw_tag = os.path.join(str(self.logdir), run)
            if fw_tag not in self.all_writers:
                self.all_writers[fw_tag] = RunFileWriter(events, fw_tag, run)
            number = _as_float(main_tag, value)
            events.add_scalar(run, main_tag, number, step, walltime)
            self.scalar_dict.setdefault(fw_tag, []).append([walltime, global_step, number])

    def flush(self) -> None:
        """Write everything logged so far to disk; returns once it is there."""
        if self._events is not None and not self._events.closed:
            self._events.flush()  # one writer thread serves every run folder: one round-trip flushes them all
        else:
            super().flush()

    def close(self) -> None:
        """Write everything and close the event files (fsynced)."""
        super().close()
        if self._events is not None:
            self._events.close()

    def _open_event_files(self) -> list[Path]:
        """The event files still open for appending; every other file of this writer is final."""
        events = self._events
        return events.current_files() if events is not None and not events.closed else []


def _as_float(tag: str, value: Any) -> float:
    """A scalar as a Python float; tensors and arrays become numbers here, on the caller's thread."""
    if type(value) is float:
        return value
    if isinstance(value, str | bytes):
        raise TypeError(f"add_scalar('{tag}') expects a number, got the string {value!r}.")
    try:
        return float(value.item() if hasattr(value, "item") else value)
    except (TypeError, ValueError, RuntimeError) as error:
        raise TypeError(
            f"add_scalar('{tag}') expects a number or a one-element tensor/array, got {type(value).__name__}: {error}"
        ) from None


def default_logdir(comment: str) -> str:
    # The same default as tensorboardX, computed here because the Hub check runs before the base constructor.
    return os.path.join("runs", datetime.now().strftime("%b%d_%H-%M-%S") + "_" + socket.gethostname() + comment)
