"""The reading side of the shared ring: records turned into events, and event files written from them.

The companion process drains each writer's ring into that writer's event files (`RingDrain.drain`), a batch at a
time, and commits its read position only once the batch is on disk. Before writing a batch it records in the ring
which files it appends to and their sizes before and after (the journal). If it dies while writing, the training
process takes over (`RingDrain.recover`): a file that has the whole batch keeps it, a file with part of it is cut
back, and the records not on disk are read again: nothing lost, nothing written twice.

Like `ring.py`, this imports neither tensorboardX nor protobuf.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..defaults import HOLD_SIZE
from .encoding import ScalarEncoder
from .files import RunFile, RunFiles
from .held import Held
from .records import frame_record
from .ring import EVENT, KEY, SCALAR, SPILL, Record, RingReader

logger = logging.getLogger(__name__)

BATCH = 4096  # records per batch: the companion's memory stays small however far behind it is
_JOURNAL_FULL = Exception("too many files for the journal")


class RingDrain:
    """Turns the records of one writer's ring into events.

    Args:
        reader: the ring's reader.
        logdir: the writer's folder (runs are folders in it).
        suffix: the writer's `filename_suffix`.
        pid: the training process's id, for the file names.
        keys: the keys defined so far (key -> run, tag), for a reader that starts after their definitions were read
            (the training process taking over from its companion).
        hold_size: bytes of events held in memory while the disk refuses them (`defaults.HOLD_SIZE` if None).
    """

    def __init__(self, reader: RingReader, logdir: Path, suffix: str = "", pid: int | None = None,
                 keys: dict[int, tuple[str, str]] | None = None, hold_size: int | None = None) -> None:
        self.reader = reader
        self.files = RunFiles(logdir, suffix, pid)
        self.error: Exception | None = None  # the last batch's, None once one was written
        # Its warnings reach the training process as every record of the companion does (companion/main.py).
        self.held = Held(logdir, HOLD_SIZE if hold_size is None else hold_size, logger.warning)
        self._encoder = ScalarEncoder(str)  # tags arrive cleaned
        self._keys: dict[int, tuple[str, str]] = dict(keys or {})
        self._skip: tuple[int, set[str]] = (0, set())  # (end, runs): records below `end` of these runs are on disk

    def events(self, records: list[Record], spilled: list[Path]) -> Iterator[tuple[str, bytes]]:
        """(run, serialized event) for each record that is an event; key definitions are learned on the way."""
        encode, keys = self._encoder.encode, self._keys
        skip_end, skip_runs = self._skip
        for record in records:
            kind = record.kind
            if kind == SCALAR:
                run, tag = keys[record.key]
                if record.seq < skip_end and run in skip_runs:
                    continue
                yield run, encode(tag, record.value, record.step, record.wall_time)
            elif kind == KEY:
                run, _, tag = record.payload.decode().partition("\0")
                keys[record.key] = (run, tag)
            elif kind in (EVENT, SPILL):
                run = keys[record.key][0]
                if kind == SPILL:
                    path = Path(record.payload.decode())
                    spilled.append(path)
                    if record.seq < skip_end and run in skip_runs:
                        continue
                    yield run, path.read_bytes()
                elif not (record.seq < skip_end and run in skip_runs):
                    yield run, record.payload

    def drain(self, *, final: bool = False) -> int:
        """Write what the ring holds to the event files; returns the records written.

        The ring is read whatever the disk does, so that the writer never waits on it: a batch that the disk refuses
        (full, a quota, read-only, failing, the logdir removed) is undone and its records are held in memory
        (`held`), in order, and written first by a later call once the disk takes them; past the bound they are
        counted. A batch that fails otherwise stays in the ring for the next call, `error` says why.

        Args:
            final: no writer is left: a missing record is skipped, and what is held is written without waiting
                for the next attempt's turn.
        """
        if not self.held.write(self._write_run, force=final):
            self._hold(final)
            return 0
        written = 0
        limit = BATCH
        while True:
            records = self.reader.read(limit, final=final)
            if not records:
                return written
            spilled: list[Path] = []
            for run, data in self.events(records, spilled):
                self.files.append(run, frame_record(data))
            error = self._write(self.reader.seq)
            if error is _JOURNAL_FULL:
                limit = max(1, len(records) // 2)  # too many files for the journal: a smaller batch
                continue
            if isinstance(error, OSError):
                self.held.hold(error)
                self._hold(final)  # the records of the batch undone first: they are read again
                return written
            if error is not None:
                self.error = error
                return written
            self.reader.commit()
            self.error = None
            written += len(records)
            for path in spilled:
                path.unlink(missing_ok=True)

    def _hold(self, final: bool) -> None:
        """Read the ring into `held`: its room is the writer's again."""
        while True:
            records = self.reader.read(BATCH, final=final)
            if not records:
                return
            spilled: list[Path] = []
            for run, data in self.events(records, spilled):
                self.held.add(run, frame_record(data))
            self.reader.commit()
            for path in spilled:
                path.unlink(missing_ok=True)

    def _write_run(self, run: str, data: bytes) -> Exception | None:
        """Write records that were held, as one batch: the journal covers them, as it covers a batch of the ring."""
        self.files.append(run, data)
        return self._write(self.reader.seq)

    def _write(self, end: int) -> Exception | None:
        """Write what is pending, journaled, the ring read up to `end`; undone if it fails. Returns the error."""
        runs = [file for file in self.files.runs.values() if file.pending]
        opened = []
        try:
            for file in runs:
                if not file.current:  # its new file is named in the journal before anything is written to it
                    self.files.make_room()
                    file.open()
                    opened.append([file.name, str(file.path), 0, 0])
        except OSError as error:
            self._undo(runs, opened)
            return error
        journal = json.dumps({
            "seq": self.reader.committed()[0], "end": end,
            "files": [[f.name, str(f.path), f.size, f.size + sum(map(len, f.pending))] for f in runs],
        }).encode()
        if not self.reader.write_journal(journal):
            self._undo(runs, opened)
            return _JOURNAL_FULL
        failed = self.files.write(runs)
        if failed:
            self._undo(runs, json.loads(journal)["files"])
            return failed[-1][1]
        return None

    def report(self) -> dict[str, Any]:
        """For the training process, in the companion's answers: whether events are held in memory (a flush did
        not put them on disk)."""
        return {"held": bool(self.held)}

    def close(self) -> list[tuple[RunFile, OSError]]:
        """Close the files, fsynced (those that failed are returned); values still held after a last attempt are
        lost, and said so."""
        if not self.held.write(self._write_run, force=True):
            self.held.lose()
        return self.files.close()

    def _undo(self, runs: list[RunFile], entries: list[list]) -> None:
        """Take a batch back: files cut to their sizes before it, the ring read again from the committed position."""
        for run, path, before, _ in entries:
            _cut(Path(path), before)
            file = self.files.runs[run]
            file.size = before
            if before == 0:  # made for this batch: gone, and made again with the next one
                file.close()
        for file in runs:
            file.pending.clear()
        self.reader.rewind()

    def recover(self) -> None:
        """After the reader died (the training process's side): undo its unfinished batch, as the journal tells."""
        raw = self.reader.journal()
        if raw is None:
            return
        journal = json.loads(raw)
        if journal["seq"] != self.reader.committed()[0]:
            return  # that batch was committed
        done = set()
        for run, path, before, after in journal["files"]:
            try:
                size = os.path.getsize(path)
            except OSError:
                continue
            if size == after:
                done.add(run)
            else:
                _cut(Path(path), before)
        self._skip = (journal["end"], done)


def _cut(path: Path, size: int) -> None:
    """Cut a file back to `size` bytes; a file cut to nothing is removed."""
    try:
        if size == 0:
            path.unlink()
        else:
            os.truncate(path, size)
    except FileNotFoundError:
        pass
    except OSError as error:
        logger.error("Could not undo a partial write to %s: %s", path, error)
