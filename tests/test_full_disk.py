"""A full disk: logging never waits on it, what is logged meanwhile is held and written once space returns, and what
cannot be held is counted, in the log and in the run.

The disk is a real file system that fills up: a tmpfs of 1 MiB mounted for each test (root may mount one; elsewhere
the tests are skipped), filled by a file that takes its last byte, and freed by removing that file.
"""

from __future__ import annotations

import errno
import logging
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hf_summary import HFSummaryWriter, LocalSummaryWriter
from hf_summary.events.held import DROPPED_TAG, Held
from hf_summary.testing import LocalHub

from .helpers import download_run, scalars, wait_until

# Seconds a call may take before the test calls it stuck: a bound for a machine under load, never a measure. On a
# disk that refuses writes, the old code never returned at all.
_BOUND = 120.0
_VALUES = 10_000  # five times what the smallest ring holds: the companion must read it while the disk is full
_SMALL_RING = 256 * 1024
_PATHS = {"companion": _SMALL_RING, "in-process": None}


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    """A file system of 1 MiB, mounted for the test."""
    mount = tmp_path / "disk"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True,
                            text=True)
    if result.returncode != 0:
        pytest.skip(f"a small tmpfs to fill up cannot be mounted here (needs root): {result.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(disk: Path) -> Path:
    """Take every byte left on the disk with one file; removing it gives the space back."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as f:
        while True:
            try:
                f.write(b"\0" * 4096)
            except OSError as error:
                assert error.errno == errno.ENOSPC
                return filler


def _within_bound(call: Callable[[], object], what: str) -> object:
    """Run `call` in a thread and return its result; fail the test if it has not returned within _BOUND seconds."""
    done = threading.Event()
    result: list[object] = []

    def run() -> None:
        result.append(call())
        done.set()

    threading.Thread(target=run, daemon=True).start()
    assert done.wait(_BOUND), f"{what} did not return within {_BOUND:g} s: it waits on the full disk"
    return result[0]


def _log(writer: LocalSummaryWriter, steps: range) -> None:
    def log() -> None:
        for step in steps:
            writer.add_scalar("x", float(step), step)

    _within_bound(log, f"{len(steps)} add_scalar calls")


def _flushed(writer: LocalSummaryWriter) -> bool:
    events = writer._events
    assert events is not None
    return bool(_within_bound(events.flush, "flush()"))


def _warnings(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)


@pytest.mark.parametrize("ring_size", _PATHS.values(), ids=_PATHS.keys())
def test_logging_goes_on_while_full_and_every_value_lands_once_when_space_returns(
        disk: Path, ring_size: int | None, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="hf_summary")
    writer = LocalSummaryWriter(str(disk / "run"), ring_size=ring_size)
    filler = _fill(disk)
    _log(writer, range(_VALUES))
    assert _flushed(writer) is False  # held in memory: not on disk, and no error raised into the training loop
    said = _warnings(caplog)
    assert f"the file system at {disk} is full" in said and "held in memory (up to 64.0 MiB)" in said
    assert f"free space there ({disk})" in said
    assert said.count("Cannot write the TensorBoard events") == 1

    filler.unlink()
    wait_until(lambda: _flushed(writer), timeout=_BOUND, what="the held values written once space returned")
    _log(writer, range(_VALUES, _VALUES + 100))
    _within_bound(writer.close, "close()")
    assert [step for step, _ in scalars(disk / "run", "x")] == list(range(_VALUES + 100))
    said = _warnings(caplog)
    assert f"Writing the TensorBoard events of {disk / 'run'} again: the {_VALUES} values held" in said
    assert "lost" not in said


@pytest.mark.parametrize("ring_size", _PATHS.values(), ids=_PATHS.keys())
def test_past_the_bound_values_are_counted_in_the_log_and_in_the_run(
        disk: Path, ring_size: int | None, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="hf_summary")
    writer = LocalSummaryWriter(str(disk / "run"), ring_size=ring_size, hold_size=64 * 1024)
    filler = _fill(disk)
    _log(writer, range(_VALUES))
    assert _flushed(writer) is False
    filler.unlink()
    wait_until(lambda: _flushed(writer), timeout=_BOUND, what="the held values written once space returned")
    _within_bound(writer.close, "close()")

    kept = [step for step, _ in scalars(disk / "run", "x")]
    assert kept == list(range(len(kept))) and 0 < len(kept) < _VALUES  # the first values, in order, once
    counted = scalars(disk / "run", DROPPED_TAG)
    assert counted == [(len(kept), 0.0), (_VALUES - 1, float(_VALUES - len(kept)))]
    said = _warnings(caplog)
    assert "reached 0.1 MiB: values logged from now on are dropped, and counted" in said
    assert (f"{_VALUES - len(kept)} values logged between steps {len(kept)} and {_VALUES - 1} could not be held and "
            f"are lost; the run shows their count as the scalar '{DROPPED_TAG}'") in said


@pytest.mark.parametrize("ring_size", _PATHS.values(), ids=_PATHS.keys())
def test_space_never_returns_and_close_returns_with_the_loss_counted(
        disk: Path, ring_size: int | None, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="hf_summary")
    writer = LocalSummaryWriter(str(disk / "run"), ring_size=ring_size, hold_size=64 * 1024)
    _fill(disk)
    _log(writer, range(_VALUES))
    _within_bound(writer.close, "close()")
    said = _warnings(caplog)
    assert (f"Closing the writer of {disk / 'run'} while the file system at {disk} is full (0.0 MiB free) ([Errno "
            f"28] No space left on device): {_VALUES} values logged between steps 0 and {_VALUES - 1} were never "
            "written") in said


def test_held_values_reach_the_hub_once_after_space_returns(hub: LocalHub, repo_id: str, disk: Path,
                                                            tmp_path: Path) -> None:
    writer = HFSummaryWriter(repo_id, logdir=str(disk / "run"), commit_every=60, ring_size=_SMALL_RING)
    filler = _fill(disk)
    _log(writer, range(_VALUES))
    filler.unlink()
    wait_until(lambda: _flushed(writer), timeout=_BOUND, what="the held values written once space returned")
    writer.scheduler.trigger().result(timeout=_BOUND)
    _within_bound(writer.close, "close()")
    run = download_run(hub, repo_id, "tensorboard/run", tmp_path / "downloaded")
    assert [step for step, _ in scalars(run, "x")] == list(range(_VALUES))


@pytest.mark.parametrize(("code", "words"), [
    (errno.EDQUOT, "your disk quota on the file system at"),
    (errno.EROFS, "is read-only"),
    (errno.EIO, "refuses writes"),
    (errno.ENOENT, "was removed"),
])
def test_the_log_names_the_cause(tmp_path: Path, code: int, words: str) -> None:
    said: list[str] = []
    held = Held(tmp_path / "gone" / "run", 1024, said.append)
    held.hold(OSError(code, "refused"))
    assert len(said) == 1 and words in said[0] and "refused" in said[0]


@pytest.mark.parametrize("ring_size", _PATHS.values(), ids=_PATHS.keys())
def test_a_logdir_removed_under_the_run_is_made_again_with_the_values_logged_since(
        tmp_path: Path, ring_size: int | None, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="hf_summary")
    logdir = tmp_path / "run"
    writer = LocalSummaryWriter(str(logdir), ring_size=ring_size)
    _log(writer, range(100))
    assert _flushed(writer)
    shutil.rmtree(logdir)
    _log(writer, range(100, 200))
    wait_until(lambda: _flushed(writer), timeout=_BOUND, what="the values written into the folder made again")
    _within_bound(writer.close, "close()")
    assert [step for step, _ in scalars(logdir, "x")] == list(range(100, 200))  # the first 100 went with the folder
    assert f"the folder {logdir} was removed" in _warnings(caplog)
