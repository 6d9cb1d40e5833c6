"""The one adapter for tensorboardX internals: every private name of tensorboardX that hf_summary uses is here.

`LocalSummaryWriter` keeps tensorboardX's whole `add_*` API by subclassing its `SummaryWriter`, and replaces only how
events reach the disk. That needs a few of tensorboardX's private attributes (`_get_file_writer`, `all_writers`,
`_write_to_disk`, `_filename_suffix`, a `FileWriter` whose `__init__` is skipped, `_clean_tag`); they are read and
written here, under names that say what they are, and the installed version is checked at import so that a
tensorboardX that changed them fails loudly instead of writing wrong files.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import tensorboardX
from tensorboardX.proto.event_pb2 import Event, SessionLog
from tensorboardX.summary import _clean_tag, hparams
from tensorboardX.writer import FileWriter
from tensorboardX.x2num import make_np


class WriterClosed(ValueError):
    """The event sink was closed, maybe by another thread during the call: a `SummaryWriter` reopens on its next call,
    as tensorboardX's does, and the writer's own calls send the value there (a ValueError, as it always was)."""

    def __init__(self) -> None:
        super().__init__("This event writer is closed; reopen the SummaryWriter to log again.")


class EventSink(Protocol):
    """What the file writers of this adapter send events to: `queue.EventQueue` (declared here, so that the queue
    imports this adapter and not the other way round)."""

    def put_event(self, run: str, event: Event) -> None: ...

    def flush(self) -> object: ...

__all__ = ["Event", "RunFileWriter", "SummaryWriterBase", "WriterClosed", "clean_tag", "file_writer", "hparams",
           "is_remote", "scalar_value"]

# The releases the test suite ran with; setup.cfg bounds the dependency to them.
TESTED_MAJOR, TESTED_MINOR = 2, 6


def _check_version(version: str) -> None:
    try:
        major, minor = (int(part) for part in version.split(".")[:2])
    except ValueError:
        return  # a development build: nothing to compare
    if (major, minor) != (TESTED_MAJOR, TESTED_MINOR):
        raise ImportError(
            f"hf_summary works with tensorboardX {TESTED_MAJOR}.{TESTED_MINOR}.x and found {version}, whose internals "
            f"it was not tested with. Install a tested release: pip install 'tensorboardX>={TESTED_MAJOR}."
            f"{TESTED_MINOR},<{TESTED_MAJOR}.{TESTED_MINOR + 1}'"
        )


_check_version(tensorboardX.__version__)


def clean_tag(tag: str) -> str:
    """The tag as tensorboardX stores it (characters TensorBoard does not allow replaced)."""
    return _clean_tag(tag)


def scalar_value(value: Any) -> float:
    """A value as tensorboardX's `add_scalar` converts it, raising what it raises for what it refuses."""
    array = make_np(value)
    assert array.squeeze().ndim == 0, "scalar should be 0D"
    return float(array.squeeze())


def is_remote(logdir: str | os.PathLike[str]) -> bool:
    """Whether tensorboardX writes this logdir to a remote store (`s3://`, `gs://`) rather than a local folder."""
    return "://" in str(logdir)


def file_writer(writer: tensorboardX.SummaryWriter) -> FileWriter:
    """The `FileWriter` of a writer's own run folder, opened if needed (what `add_*` calls write through)."""
    return writer._get_file_writer()


class SummaryWriterBase(tensorboardX.SummaryWriter):
    """tensorboardX's `SummaryWriter`, with the file writers it makes chosen by `_open_file_writer()`.

    Subclasses implement `_open_file_writer()` and `_sub_run_writer()`; what tensorboardX does around them (the purge
    events, the table of writers that `flush()` and `close()` walk) stays tensorboardX's.
    """

    file_writer: Any
    all_writers: dict[str, Any] | None
    # How many `use_metadata` blocks are open: their step and walltime apply to every `add_*` call inside.
    metadata_override = 0

    def _open_file_writer(self) -> FileWriter:
        raise NotImplementedError

    def _get_file_writer(self) -> Any:
        if not self._write_to_disk or is_remote(self.logdir):  # remote stores: tensorboardX's own writers
            return super()._get_file_writer()
        if self.all_writers is None or self.file_writer is None:
            self.file_writer = self._open_file_writer()
            if self.purge_step is not None:
                self.file_writer.add_event(Event(step=self.purge_step, file_version="brain.Event:2"))
                self.file_writer.add_event(
                    Event(step=self.purge_step, session_log=SessionLog(status=SessionLog.START)))
            self.all_writers = {self.logdir: self.file_writer}
        return self.file_writer

    @property
    def writes_to_disk(self) -> bool:
        """False for tensorboardX's `write_to_disk=False` (the writer then writes nothing)."""
        return bool(self._write_to_disk)

    @property
    def filename_suffix(self) -> str:
        return self._filename_suffix or ""

    @contextlib.contextmanager
    def use_metadata(self, *, global_step: int | None = None, walltime: float | None = None) -> Iterator[Any]:
        """tensorboardX's `use_metadata`; while the block runs, `metadata_override` is true."""
        self.metadata_override += 1
        try:
            with super().use_metadata(global_step=global_step, walltime=walltime) as writer:
                yield writer
        finally:
            self.metadata_override -= 1

    def _has_sub_run(self, path: str) -> bool:
        return self.all_writers is not None and path in self.all_writers

    def _add_sub_run(self, path: str, writer: FileWriter) -> None:
        """Record the writer of an `add_scalars` sub-run folder, so that `flush()` and `close()` reach it."""
        assert self.all_writers is not None, "the writer's own file writer is opened first"
        self.all_writers[path] = writer


class RunFileWriter(FileWriter):
    """tensorboardX's `FileWriter` interface for one run folder, backed by the shared event queue.

    Inheriting keeps `add_summary`, `add_graph` and `use_metadata` exactly as tensorboardX has them; only the
    event sink differs.
    """

    def __init__(self, queue: EventSink, logdir: str | os.PathLike[str], run: str,
                 reopen: Callable[[], EventSink] | None = None) -> None:
        # tensorboardX's __init__ would start its own queue, thread and event file: not called on purpose.
        self.event_writer = _RunSink(queue, str(logdir), run, reopen)
        self._default_metadata: dict[str, Any] = {}


class _RunSink:
    """What `FileWriter` calls its `event_writer`: routes the events of one run into the shared queue."""

    def __init__(self, queue: EventSink, logdir: str, run: str, reopen: Callable[[], EventSink] | None) -> None:
        self._queue = queue
        self._logdir = logdir
        self._run = run
        self._reopen = reopen  # the writer's sink, reopened if closed

    def get_logdir(self) -> str:
        return self._logdir

    def add_event(self, event: Event) -> None:
        try:
            self._queue.put_event(self._run, event)
        except WriterClosed:
            if self._reopen is None:
                raise
            # Closed under this call (tensorboardX's `add_*` had got this file writer before): the event goes where
            # a call made after close() goes.
            self._reopen().put_event(self._run, event)

    def flush(self) -> None:
        self._queue.flush()

    def close(self) -> None:
        self._queue.flush()

    def reopen(self) -> None:
        """Nothing to do: the shared queue reopens files as events arrive."""
