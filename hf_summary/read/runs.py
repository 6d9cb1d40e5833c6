"""The scalars of a run, exactly as TensorBoard's `EventAccumulator` (with `size_guidance` 0) holds them.

What TensorBoard does, and so what this does (tensorboard 2.21, `backend/event_processing`):

- Runs: every folder holding an event file (a name containing "tfevents", not ending in ".profile-empty") is a run,
  named by its path below the logdir, "." for the logdir itself. Each run reads its folder's event files in name
  order, each once, from start to end.
- A file ends at its first record that is incomplete (still being written) or whose CRC does not match.
- Scalars: `simple_value` values (tensorboardX, torch), in the order written; and tensor values of tags whose first
  metadata names the "scalars" plugin (TensorFlow 2's `tf.summary.scalar`; torch and tensorboardX with
  `new_style=True`), widened to float64. A tensor value without a tag takes its `node_name`.
- Restarts, in files with a `file_version` of 2 or more (every writer today): a `SessionLog.START` event at step S
  (written by `SummaryWriter(purge_step=S)`) drops every value read before it whose step is S or more, whatever its
  tag. Without it, a restarted run keeps both: the steps it logged again appear twice, in the order written.
- In older files (no `file_version`, or below 2), an event whose step is below the last step seen instead drops,
  for the event's own tags only, the values read before it at that step or later.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..events.records import FOOTER_SIZE, HEADER_SIZE
from .scan import Scanned, scan

CHUNK_SIZE = 1024 * 1024  # bytes of a file scanned at once: its arrays stay in the CPU's caches, and small
SCALARS_PLUGIN = "scalars"
_LENGTH = struct.Struct("<Q")  # a record's length, first in its header
_RESTART_VERSION = 2.0  # file versions from which a SessionLog.START, not a step going back, marks a restart


def is_event_file(name: str) -> bool:
    """Whether TensorBoard reads a file of this name as an event file (`io_wrapper.IsSummaryEventsFile`)."""
    return "tfevents" in name and not name.endswith(".profile-empty")


def find_runs(logdir: Path) -> list[tuple[str, list[Path]]]:
    """The runs below `logdir`, as TensorBoard names them, each with its event files in reading order.

    Example:
        ```py
        >>> find_runs(Path("runs"))
        [('.', [PosixPath('runs/events.out.tfevents.1')]), ('mlp', [PosixPath('runs/mlp/events.out.tfevents.2')])]
        ```
    """
    runs = []
    for folder, _, names in os.walk(logdir):
        files = sorted(name for name in names if is_event_file(name))
        if files:
            name = Path(folder).relative_to(logdir).as_posix()
            runs.append((name, [Path(folder) / file for file in files]))
    return sorted(runs)


MIN_SCALAR_RECORD = 36  # bytes of the shortest record holding a value (16 of framing, 20 of event)
# Values reserved at most (24 bytes each: 1.5 GiB of address space, not of memory): a logdir of large images must not
# reserve more address space than a small machine lets a process have.
MAX_RESERVED = 1 << 26


class Columns:
    """The values read, in columns allocated once for all runs: `tag` (each run's own codes), `step`, `wall_time`,
    `value`. Memory is reserved for as many values as the event files' bytes could hold; pages never written are
    never resident, so the columns cost what they hold, and the DataFrame takes them without a copy.

    Args:
        capacity: values to reserve room for; more are taken by growing (a copy).
    """

    def __init__(self, capacity: int) -> None:
        self.size = 0
        self.tag = np.empty(capacity, dtype=np.int32)
        self.step = np.empty(capacity, dtype=np.int64)
        self.wall_time = np.empty(capacity, dtype=np.float64)
        self.value = np.empty(capacity, dtype=np.float64)

    @classmethod
    def for_files(cls, files: list[Path]) -> Columns:
        """Columns with room for every value of `files` if all are plain scalars, up to `MAX_RESERVED` values (past
        that, or for events of several values each, they grow)."""
        return cls(min(sum(path.stat().st_size for path in files) // MIN_SCALAR_RECORD + 1, MAX_RESERVED))

    def append(self, tag: np.ndarray, step: np.ndarray, wall_time: np.ndarray, value: np.ndarray) -> None:
        end = self.size + tag.size
        if end > self.tag.size:  # events of several values each: more values than the bytes' guess
            for name in ("tag", "step", "wall_time", "value"):
                column = getattr(self, name)
                grown = np.empty(max(end, 2 * column.size), dtype=column.dtype)
                grown[:self.size] = column[:self.size]
                setattr(self, name, grown)
        self.tag[self.size:end] = tag
        self.step[self.size:end] = step
        self.wall_time[self.size:end] = wall_time
        self.value[self.size:end] = value
        self.size = end

    def keep(self, start: int, keep: np.ndarray) -> None:
        """Keep only the values from `start` on that `keep` selects, in place."""
        end = start + int(np.count_nonzero(keep))
        for column in (self.tag, self.step, self.wall_time, self.value):
            column[start:end] = column[start:self.size][keep]
        self.size = end


def read_run(files: list[Path], out: Columns, tags: set[str] | None = None) -> list[str]:
    """Read a run's event files (in the order given: TensorBoard's is name order) as `EventAccumulator` would,
    appending its values to `out`.

    Args:
        files: the run's event files.
        out: where the values go; their `tag` codes index the list returned.
        tags: only these tags (None: all).

    Returns:
        The run's tags.

    Example:
        ```py
        >>> out = Columns(1000)
        >>> tags = read_run(sorted(Path("runs/mlp").glob("*tfevents*")), out)
        >>> tags[out.tag[0]], out.step[0], out.value[0]
        ('loss', 0, 0.6931471824645996)
        ```
    """
    reader = _RunReader(out)
    for path in files:
        for scanned in _scan_file(path):
            reader.add(scanned)
    return reader.finish(tags)


def _scan_file(path: Path) -> Iterator[Scanned]:
    """The file's records, a chunk at a time, up to its first incomplete or corrupt record."""
    with open(path, "rb") as file:
        pending, wanted = b"", CHUNK_SIZE
        while True:
            block = file.read(wanted)
            if not block:
                return  # what is pending is a record not complete yet: TensorBoard waits for the rest
            buffer = pending + block if pending else block
            found = scan(buffer)
            yield found
            if found.corrupt:
                return
            pending = buffer[found.end:]
            # A record longer than a chunk (its header was checked) is read whole next, not rescanned chunk by chunk.
            missing = _LENGTH.unpack_from(pending)[0] + HEADER_SIZE + FOOTER_SIZE - len(pending) if len(
                pending) >= _LENGTH.size else 0
            wanted = max(CHUNK_SIZE, missing)


@dataclass
class _Purge:
    """Values to drop: those read before `position` with a step of `step` or more (of `tags` only, unless None)."""

    position: int
    step: int
    tags: np.ndarray | None = None


class _RunReader:
    """A run's state as `EventAccumulator` keeps it, fed with scanned chunks in reading order."""

    def __init__(self, out: Columns) -> None:
        self.out = out
        self.start = out.size
        self.file_version: float | None = None
        self.most_recent_step = -1
        self.plugins: dict[str, str] = {}  # tag -> plugin of its first metadata
        self.tag_codes: dict[str, int] = {}
        self.tensors: list[int] = []  # where tensor values are: they count only if their tag is a scalar's
        self.purges: list[_Purge] = []

    @property
    def size(self) -> int:
        """Values of the run read so far."""
        return self.out.size - self.start

    def _legacy(self) -> bool:
        return not (self.file_version and self.file_version >= _RESTART_VERSION)

    def add(self, scanned: Scanned) -> None:
        codes = np.array([self._code(tag) for tag in scanned.tags] or [0], dtype=np.int32)[scanned.tag]
        record = 0
        while record < scanned.records:
            if self._legacy():
                record = self._one_by_one(scanned, codes, record)
            else:
                record = self._in_bulk(scanned, codes, record)

    def _code(self, tag: str) -> int:
        return self.tag_codes.setdefault(tag, len(self.tag_codes))

    def _in_bulk(self, scanned: Scanned, codes: np.ndarray, first: int) -> int:
        """Take the records from `first` on, all plain scalars at once; return where a legacy file version (below
        2) starts, if one does."""
        ordinal = scanned.ordinal
        begin = int(np.searchsorted(ordinal, first))
        stop = scanned.records
        extra: list[tuple[int, int, int, float, float, bool]] = []  # (record, tag, step, wall_time, value, tensor)
        for record, data in scanned.others:
            if record < first:
                continue
            event = _parse(data)
            if event.HasField("file_version"):
                self.file_version = _file_version(event.file_version)
                if self._legacy():  # the event itself is taken one by one
                    stop = record
                    break
            position = self.size + int(np.searchsorted(ordinal, record)) - begin + len(extra)
            if _is_start(event):
                self.purges.append(_Purge(position, event.step))
            extra.extend((record, *item) for item in self._values(event))
        end = int(np.searchsorted(ordinal, stop))
        if not extra:
            self.out.append(codes[begin:end], scanned.step[begin:end], scanned.wall_time[begin:end],
                            scanned.value[begin:end])
            return stop
        records = np.concatenate([ordinal[begin:end], np.array([item[0] for item in extra], dtype=np.int64)])
        order = np.argsort(records, kind="stable")  # the other events' values in their records' places
        columns = list(zip(*(item[1:] for item in extra), strict=True))
        tensor = np.concatenate([np.zeros(end - begin, dtype=bool), np.array(columns[4], dtype=bool)])[order]
        self.tensors.extend((self.size + np.flatnonzero(tensor)).tolist())
        self.out.append(
            np.concatenate([codes[begin:end], np.array(columns[0], dtype=np.int32)])[order],
            np.concatenate([scanned.step[begin:end], np.array(columns[1], dtype=np.int64)])[order],
            np.concatenate([scanned.wall_time[begin:end], np.array(columns[2], dtype=np.float64)])[order],
            np.concatenate([scanned.value[begin:end], np.array(columns[3], dtype=np.float64)])[order])
        return stop

    def _one_by_one(self, scanned: Scanned, codes: np.ndarray, first: int) -> int:
        """Take records from `first` on, one at a time, while the run's file version is a legacy one; return where
        it stops being one."""
        others = dict(scanned.others)
        for record in range(first, scanned.records):
            items: list[tuple[int, int, float, float, bool]]
            if record in others:
                event = _parse(others[record])
                if event.HasField("file_version"):
                    self.file_version = _file_version(event.file_version)
                step, has_summary = event.step, event.HasField("summary")
                event_tags = [self._code(value.tag) for value in event.summary.value]
                restart = _is_start(event)
                items = self._values(event)
            else:
                index = int(np.searchsorted(scanned.ordinal, record))
                step, has_summary, restart = int(scanned.step[index]), True, False
                event_tags = [int(codes[index])]
                items = [(event_tags[0], step, float(scanned.wall_time[index]), float(scanned.value[index]), False)]
            if self._legacy():
                if step < self.most_recent_step and has_summary:
                    self.purges.append(_Purge(self.size, step, np.array(event_tags, dtype=np.int32)))
                else:
                    self.most_recent_step = step
            elif restart:
                self.purges.append(_Purge(self.size, step))
            if items:
                columns = list(zip(*items, strict=True))
                self.tensors.extend(self.size + index for index, tensor in enumerate(columns[4]) if tensor)
                self.out.append(np.array(columns[0], dtype=np.int32), np.array(columns[1], dtype=np.int64),
                                np.array(columns[2], dtype=np.float64), np.array(columns[3], dtype=np.float64))
            if not self._legacy():
                return record + 1
        return scanned.records

    def _values(self, event: Any) -> list[tuple[int, int, float, float, bool]]:
        """The values of an event parsed with protobuf: (tag code, step, wall_time, value, is a tensor's)."""
        items = []
        for value in event.summary.value:
            if value.HasField("metadata") and value.tag not in self.plugins:
                self.plugins[value.tag] = value.metadata.plugin_data.plugin_name
            if value.HasField("simple_value"):
                items.append((self._code(value.tag), event.step, event.wall_time, float(value.simple_value), False))
            elif value.HasField("tensor"):
                tag = value.tag or value.node_name
                # Histograms, images, text are tensors too: a tag known to be another plugin's is not converted.
                number = _scalar_of(value.tensor) if self.plugins.get(tag, SCALARS_PLUGIN) == SCALARS_PLUGIN else None
                if number is not None:
                    items.append((self._code(tag), event.step, event.wall_time, number, True))
        return items

    def finish(self, tags: set[str] | None) -> list[str]:
        """Drop the values TensorBoard drops (restarts, tensors of tags that are not scalars) and the tags not
        asked for; return the run's tags."""
        out, start = self.out, self.start
        tag, step = out.tag[start:out.size], out.step[start:out.size]
        keep = np.ones(tag.size, dtype=bool)
        _apply_restarts(keep, step, [purge for purge in self.purges if purge.tags is None])
        for purge in self.purges:
            if purge.tags is not None:
                head = slice(0, purge.position)
                keep[head] &= ~(np.isin(tag[head], purge.tags) & (step[head] >= purge.step))
        names = list(self.tag_codes)
        if self.tensors:
            scalar_tags = np.array([self.plugins.get(name) == SCALARS_PLUGIN for name in names])
            tensors = np.array(self.tensors, dtype=np.int64)
            keep[tensors] &= scalar_tags[tag[tensors]]
        if tags is not None:
            keep &= np.isin(tag, [code for name, code in self.tag_codes.items() if name in tags])
        if not keep.all():
            out.keep(start, keep)
        return names


def _apply_restarts(keep: np.ndarray, step: np.ndarray, purges: list[_Purge]) -> None:
    """Drop each value read before a restart whose step is the restart's or more: a value survives every restart
    after it only if its step is below the smallest of their steps."""
    if not purges:
        return
    positions = np.array([purge.position for purge in purges], dtype=np.int64)
    steps = np.array([purge.step for purge in purges], dtype=np.int64)
    smallest_after = np.minimum.accumulate(steps[::-1])[::-1]
    next_purge = np.searchsorted(positions, np.arange(step.size), side="right")
    bound = np.append(smallest_after, np.iinfo(np.int64).max)[next_purge]
    keep &= (step < bound) | (next_purge == positions.size)


def _parse(data: bytes) -> Any:
    # TensorBoard's protos, not tensorboardX's: importing tensorboardX imports torch, seconds for one event.
    from tensorboard.compat.proto.event_pb2 import Event

    return Event.FromString(data)


def _is_start(event: Any) -> bool:
    from tensorboard.compat.proto.event_pb2 import SessionLog

    return bool(event.HasField("session_log") and event.session_log.status == SessionLog.START)


def _file_version(text: str) -> float:
    """`event_util.ParseFileVersion`: the number after "brain.Event:", -1 if there is none."""
    try:
        return float(text.split("brain.Event:")[-1])
    except ValueError:
        return -1.0


def _scalar_of(tensor: Any) -> float | None:
    """The number a one-element numeric tensor holds (as `tensor_util.make_ndarray(...).item()`), else None."""
    from tensorboard.util import tensor_util

    try:
        array = tensor_util.make_ndarray(tensor)
    except (TypeError, ValueError):
        return None
    if array.size != 1 or array.dtype.kind not in "fiub":
        return None
    return float(array.item())
