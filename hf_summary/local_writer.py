"""`LocalSummaryWriter`: tensorboardX's `SummaryWriter` with hf_summary's fast event path, and no Hub.

Every `add_*` call keeps tensorboardX's behaviour and file format; events are handed off at the call, through shared
memory, to the process's companion, which writes them (events/handoff.py), instead of a `multiprocessing.Queue` per
run folder (where there is no companion: one writer thread, events/queue.py). `HFSummaryWriter` builds on it; on its
own it serves runs that stay local until `hf-summary sync` pushes them. tensorboardX's private state is reached only
through `events/tbx.py`.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from .defaults import HOLD_SIZE, QUEUE_SIZE, RING_SIZE
from .events.handoff import SharedEventQueue
from .events.queue import EventQueue
from .events.ring import SCALAR, SLOT_SIZE
from .events.tbx import Event, RunFileWriter, SummaryWriterBase, WriterClosed, file_writer, scalar_value
from .process import STATE

logger = logging.getLogger(__name__)

# The range of an Event's int64 step: tensorboardX refuses anything outside it (protobuf raises ValueError).
_MIN_STEP, _MAX_STEP = -(2**63), 2**63 - 1
_NO_NUMPY_DTYPES = ("torch.bfloat16", "torch.float8")
_TORCH_INTEGERS = frozenset(f"torch.{name}" for name in ("int8", "int16", "int32", "int64", "uint8", "bool"))


class LocalSummaryWriter(SummaryWriterBase):
    """A `tensorboardX.SummaryWriter` whose events are written by one background thread, in batches.

    `add_scalar` puts the event into memory shared with a companion process, which encodes and writes the event
    files: the training process does nothing else with it, and a value logged is safe from then on, even if the
    process is killed. `flush()` returns once everything logged is on disk; event files are named with the process
    id so that processes sharing a logdir never collide. Where no companion process can be started (and in forked
    children), a thread of this process writes the events instead.

    Args:
        logdir: where event files are written; defaults to `runs/<date>_<host><comment>` like tensorboardX.
        ring_size: bytes of memory shared with the companion process; logging waits while it is full. None writes
            the events in a thread of this process instead. Defaults to 4 MiB.
        queue_size: events that may wait in memory before logging blocks, when they are written in-process.
            Defaults to 10 000.
        hold_size: bytes of events held in memory while the disk refuses them (full, a quota, read-only, failing):
            logging never waits on the disk; they are written in order once it takes them again, and past this
            bound values are dropped and counted (in the log, and as the run's scalar `hf_summary/values_dropped`).
            Held by the companion process where one runs. Defaults to 64 MiB.
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

    def __init__(self, logdir: str | None = None, *, queue_size: int = QUEUE_SIZE, ring_size: int | None = RING_SIZE,
                 hold_size: int = HOLD_SIZE, **kwargs: Any) -> None:
        logdir = logdir or kwargs.pop("log_dir", None) or default_logdir(kwargs.get("comment") or "")
        if ring_size is not None and (type(ring_size) is not int or ring_size < 256 * 1024):
            raise ValueError(f"ring_size={ring_size!r}: pass a number of bytes of at least 262144 (256 KiB), or None "
                             "to write the events in this process.")
        if type(hold_size) is not int or hold_size < 0:
            raise ValueError(f"hold_size={hold_size!r}: pass a number of bytes (0 holds nothing: while the disk "
                             "refuses events, they are dropped and counted).")
        self._hold_size = hold_size
        self._events: EventQueue | SharedEventQueue | None = None
        self._queue_size = queue_size
        self._ring_size = ring_size
        self._comet_on = not (kwargs.get("comet_config") or {"disabled": True}).get("disabled", False)
        self.metadata_override = 0  # an instance's own attribute: add_scalar reads it at every call
        try:
            super().__init__(logdir=logdir, **kwargs)
        except OSError as error:
            raise OSError(error.errno, f"Cannot write TensorBoard events in logdir '{logdir}': {error.strerror}. "
                          "Pass a logdir you can write to.", error.filename) from None

    def _open_file_writer(self) -> RunFileWriter:
        if self._events is None or self._events.closed:
            self._events = self._open_events()
            STATE.live_queues.add(self._events)  # a forked child writes its events apart (process.py)
        return RunFileWriter(self._events, self.logdir, "", self._reopened_events)

    def _reopened_events(self) -> EventQueue | SharedEventQueue:
        """The event queue, reopened if closed: where an event goes that a file writer got before another thread
        closed this writer."""
        file_writer(self)  # tensorboardX's way back after close(): a new file writer, on a new queue
        assert self._events is not None
        return self._events

    def _open_events(self) -> EventQueue | SharedEventQueue:
        """The hand-off to the companion process; where there can be none, the in-process queue (said once)."""
        reason: Exception | None = None
        if self._ring_size is not None:
            from . import companion

            try:
                return SharedEventQueue(self.logdir, companion.companion(), ring_size=self._ring_size,
                                        max_queue=self._queue_size, filename_suffix=self.filename_suffix,
                                        hold_size=self._hold_size)
            except companion.NoCompanionInChild:
                pass  # a writer made in a forked child (a data-loader worker): in-process, as its inherited ones
            except Exception as error:
                reason = error
        # A logdir that cannot be written fails here, with its own error.
        queue = EventQueue(self.logdir, max_queue=self._queue_size, filename_suffix=self.filename_suffix,
                           hold_size=self._hold_size)
        if reason is not None:
            with STATE.lock:
                first = "no companion" not in STATE.said
                STATE.said.add("no companion")
            (logger.warning if first else logger.debug)(
                "Event files are written by this process: no companion process could write them (%s).", reason)
        return queue

    def add_scalar(
        self,
        tag: str,
        scalar_value: Any,
        global_step: int | None = None,
        walltime: float | None = None,
        display_name: str | None = "",
        summary_description: str | None = "",
    ) -> None:
        """Add a scalar, as tensorboardX does: handed off to the process's companion, which writes it.

        This is the hot path of a training loop: a float at an int step, with nothing else asked, is checked in one
        condition and, once its tag is known, written straight into the ring's slot, in this frame: after a training
        step has evicted the interpreter's caches, each further call shows in the step time.
        """
        events = self._events
        if (type(tag) is str and type(scalar_value) is float and type(global_step) is int and walltime is None
                and not display_name and not summary_description and events is not None
                and not self._comet_on and not self.metadata_override
                and -0x8000000000000000 <= global_step <= 0x7FFFFFFFFFFFFFFF):  # _MIN_STEP, _MAX_STEP, as constants
            slots = events.slots  # None once closed
            if slots is not None and scalar_value == scalar_value:  # a NaN is hashed by identity (scalar_slots)
                keys, counter, ring, write, memory, mask, first_slot = slots
                key = keys.get(tag)
                if key is not None:
                    seq = next(counter)
                    try:
                        if seq < ring.free_below or ring.has_slot(seq):
                            wall = time.time()
                            write(memory, first_slot + (seq & mask) * SLOT_SIZE,
                                  hash((seq, SCALAR, key, global_step, wall, scalar_value)),
                                  seq, SCALAR, key, global_step, wall, scalar_value)
                            if not ring.closing or ring.landed(seq):
                                return
                            # Written after the last reading of a ring that another thread closed meanwhile.
                    except (TypeError, ValueError):  # what an unmapped memory raises
                        if not memory.closed:
                            raise
                        # Another thread closed the writer since this call read `slots`: the value goes where a call
                        # made after close() goes, into a reopened writer.
            if not events.closed:
                try:
                    events.put_scalar("", tag, scalar_value, global_step, time.time())
                    return
                except WriterClosed:
                    pass  # closed by another thread during this call: as a call made after close()
        self._add_scalar(tag, scalar_value, global_step, walltime, display_name, summary_description)

    def _add_scalar(self, tag: Any, scalar_value: Any, global_step: Any, walltime: Any, display_name: str | None,
                    summary_description: str | None) -> None:
        """`add_scalar` of anything else: values to convert, steps and wall times to check, tensorboardX's options."""
        if type(tag) is not str and tag is not None and not isinstance(tag, str):
            # tensorboardX refuses it too (TypeError), with a message about regular expressions.
            raise TypeError(f"add_scalar expects a string tag, got {type(tag).__name__}: {_short_repr(tag)}.")
        events = self._events
        if (events is None or events.closed or display_name or summary_description or self._comet_on
                or self.metadata_override or type(tag) is not str):
            # Everything off the fast path is tensorboardX's own code: its conversions, its errors.
            super().add_scalar(tag, scalar_value, global_step, walltime, display_name, summary_description)
            return
        # In tensorboardX's order (value, walltime, step), so that a call with several bad arguments raises its error.
        value = scalar_value if type(scalar_value) is float else _as_value(tag, scalar_value)
        wall = time.time() if walltime is None else walltime if type(walltime) is float else _as_walltime(walltime)
        step = (global_step if type(global_step) is int and _MIN_STEP <= global_step <= _MAX_STEP
                else _as_step(global_step))
        try:
            events.put_scalar("", tag, value, step, wall)
        except WriterClosed:  # by another thread, during this call: tensorboardX's way reopens the writer
            super().add_scalar(tag, scalar_value, global_step, wall, display_name, summary_description)

    def add_scalars(
        self,
        main_tag: str,
        tag_scalar_dict: dict[str, Any],
        global_step: int | None = None,
        walltime: float | None = None,
    ) -> None:
        """Add several scalars under one chart, one sub-run folder per key, as tensorboardX does.

        Unlike tensorboardX, a main tag or key that would put the sub-run outside the logdir (`..`, an absolute
        path) or into a `.git` folder is refused.

        Raises:
            ValueError: such a main tag or key.
        """
        _check_sub_run(main_tag, tag_scalar_dict)
        if self.writes_to_disk and not self._comet_on:
            file_writer(self)  # opens the event queue if needed
        events = self._events
        if events is None or events.closed or self._comet_on:
            super().add_scalars(main_tag, tag_scalar_dict, global_step, walltime)
            return
        walltime = time.time() if walltime is None else walltime  # kept as given for scalar_dict, as tensorboardX
        # Checked in tensorboardX's order, key by key: folder, value, walltime, step (what it raises, we raise).
        items = list(tag_scalar_dict.items())
        for i, (tag, value) in enumerate(items):
            run = os.path.join(main_tag, tag)
            fw_tag = os.path.join(str(self.logdir), run)
            if not self._has_sub_run(fw_tag):
                # Created now, as tensorboardX does: a name the file system refuses fails here, not in the thread.
                os.makedirs(fw_tag, exist_ok=True)
                self._add_sub_run(fw_tag, RunFileWriter(events, fw_tag, run, self._reopened_events))
            number = _as_float(main_tag, value)
            event_walltime = _as_walltime(walltime)
            try:
                events.put_scalar(run, main_tag, number, _as_step(global_step), event_walltime)
            except WriterClosed:
                # Closed by another thread during this call: this key and the ones after it go where a call made
                # after close() goes.
                self.add_scalars(main_tag, dict(items[i:]), global_step, walltime)
                return
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
        return events.open_files() if events is not None and not events.closed else []


def _check_sub_run(main_tag: Any, tag_scalar_dict: Any) -> None:
    names = [main_tag, *tag_scalar_dict] if isinstance(tag_scalar_dict, dict) else [main_tag]
    for name in names:
        if not isinstance(name, str):
            continue  # tensorboardX refuses it, with its own error
        parts = name.replace("\\", "/").split("/")
        if os.path.isabs(name) or name.startswith(("/", "\\")) or ".." in parts or ".git" in parts:
            raise ValueError(f"add_scalars({main_tag!r}, ...): {name!r} would make a run folder outside the logdir "
                             "or inside a .git folder, which cannot be uploaded; use a plain name like 'loss/train'.")


def _fast_float(value: Any) -> float | None:
    """A number, numpy scalar or one-element tensor/array as a float; None for what tensorboardX must convert.

    The types a training loop logs are converted here; anything else goes through tensorboardX's own conversion, so
    that what it accepts, refuses and stores stays exactly its own.
    """
    kind = type(value)
    if kind is int:
        return float(value) if _MIN_STEP <= value <= _MAX_STEP else None
    if kind is float or kind is bool:
        return float(value)
    item = getattr(value, "item", None)
    if item is None or isinstance(value, str | bytes):
        return None
    if str(getattr(value, "dtype", "")).startswith(_NO_NUMPY_DTYPES):
        return None  # tensorboardX converts through numpy, which has no such type: it refuses them, and so do we
    try:
        number = item()
    except Exception:  # more than one element, or not a number: tensorboardX says why
        return None
    return float(number) if type(number) in (float, int, bool) else None


def _as_value(tag: str, value: Any) -> Any:
    """What add_scalar queues: a float, or for a one-element tensor on an accelerator a copy of it, read later.

    Reading a tensor (`.item()`) waits for its device: on a GPU, the training loop would wait at every logged loss.
    A copy, taken at the call, is queued instead (an asynchronous device copy: the loop does not wait) and the
    writer thread reads it, so the value is the one of the moment of the call even if the caller changes the tensor
    in place afterwards, and no autograd graph is kept alive. A CPU tensor has no device to wait for: it is read at
    once, which costs less than a copy.
    """
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(value, torch.Tensor) and not value.is_cpu and value.numel() == 1:
        kind = str(value.dtype)
        if (value.dtype.is_floating_point or kind in _TORCH_INTEGERS) and not kind.startswith(_NO_NUMPY_DTYPES):
            return value.detach().clone()
    return _as_float(tag, value)


def _as_float(tag: str, value: Any) -> float:
    """`value` as the float tensorboardX stores; what it refuses is refused with its exception type, and a message."""
    number = _fast_float(value)
    if number is not None:
        return number
    try:
        return scalar_value(value)
    except Exception as error:
        message = (f"add_scalar({tag!r}) expects a number or a one-element tensor/array, got "
                   f"{type(value).__name__} {_short_repr(value)} ({error or type(error).__name__})")
        try:
            clear = type(error)(message)
        except Exception:  # an exception type that needs more than a message: raise it as tensorboardX did
            raise error from None
        raise clear from None


def _short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _as_step(step: Any) -> int | None:
    """The step as tensorboardX stores it: `int(step)`, refused outside int64's range as protobuf refuses it."""
    if step is None:
        return None
    return Event(step=int(step)).step


def _as_walltime(walltime: Any) -> float:
    """The walltime as tensorboardX stores it (protobuf's double field decides what is a number), or now."""
    if walltime is None:
        return time.time()
    return Event(wall_time=walltime).wall_time


def default_logdir(comment: str) -> str:
    # The same default as tensorboardX, computed here because the Hub check runs before the base constructor.
    return os.path.join("runs", datetime.now().strftime("%b%d_%H-%M-%S") + "_" + socket.gethostname() + comment)
