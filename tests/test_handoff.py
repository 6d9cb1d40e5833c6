"""The hand-off: events put into memory shared with the companion process, which writes the event files."""

from __future__ import annotations

import logging
import math
import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest

from hf_summary import LocalSummaryWriter, companion
from hf_summary.events import files as event_files
from hf_summary.events.drain import RingDrain
from hf_summary.events.handoff import SharedEventQueue
from hf_summary.events.queue import EventQueue
from hf_summary.events.ring import (
    _SLOT,
    HEADER_SIZE,
    KEY,
    SCALAR,
    SLOT_SIZE,
    RingReader,
    RingWriter,
    ScalarSlots,
    create,
    put_in_slot,
    slot_check,
)
from hf_summary.process import STATE
from hf_summary.testing import LocalHub

from .helpers import accumulate, download_run, scalars

# The companion process's own life is checked here: no companion shared by the module (conftest.py).
OWN_COMPANION = True


def _steps(run_dir: Path, tag: str) -> list[int]:
    return [step for step, _ in scalars(run_dir, tag)]


def test_a_value_logged_just_before_sigkill_reaches_the_hub(hub: LocalHub, repo_id: str, logdir: Path,
                                                            tmp_path: Path) -> None:
    script = textwrap.dedent("""
        import os, signal, sys, time
        from hf_summary import HFSummaryWriter
        from hf_summary import companion
        writer = HFSummaryWriter(sys.argv[1], logdir=sys.argv[2], commit_every=60)
        print(companion.current_pid(), flush=True)
        for step in range(1500):
            writer.add_scalar("v", float(step), step)
            if step == 1499:
                os.kill(os.getpid(), signal.SIGKILL)  # right after the call: no flush, no writer thread
            time.sleep(0.001)
    """)
    result = subprocess.run([sys.executable, "-c", script, repo_id, str(logdir)], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == -signal.SIGKILL, result.stderr
    process = psutil.Process(int(result.stdout.split()[0]))
    process.wait(timeout=300)  # it writes what was handed off, pushes it, and exits
    run = download_run(hub, repo_id, f"tensorboard/{logdir.name}", tmp_path / "dl")
    assert scalars(run, "v") == [(step, float(step)) for step in range(1500)]


def test_threads_and_a_forked_child_log_at_once(tmp_path: Path) -> None:
    logdir = tmp_path / "run"
    writer = LocalSummaryWriter(str(logdir))
    assert isinstance(writer._events, SharedEventQueue)

    def log(thread: int) -> None:
        for step in range(2000):
            writer.add_scalar(f"t{thread}", float(step), step)
            if step % 500 == 0:
                writer.add_text(f"text{thread}", f"step {step}", step)

    threads = [threading.Thread(target=log, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    pid = os.fork()
    if pid == 0:  # a data-loader worker: writes its own file, in-process
        try:
            for step in range(100):
                writer.add_scalar("child", float(step), step)
            writer.flush()
        finally:
            os._exit(0)
    for thread in threads:
        thread.join()
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    writer.close()
    acc = accumulate(logdir)
    for n in range(4):
        assert [e.step for e in acc.Scalars(f"t{n}")] == list(range(2000))
        assert [e.step for e in acc.Tensors(f"text{n}/text_summary")] == [0, 500, 1000, 1500]
    assert _steps(logdir, "child") == list(range(100))
    assert len({p.name.split(".")[5] for p in logdir.glob("*tfevents*")}) == 2  # the parent's pid, the child's


def test_a_full_ring_blocks_the_caller_says_so_once_and_loses_nothing(tmp_path: Path,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    logdir = tmp_path / "run"
    with caplog.at_level(logging.WARNING, logger="hf_summary"):
        with LocalSummaryWriter(str(logdir), ring_size=256 * 1024) as writer:  # 2 048 slots
            for step in range(30_000):
                writer.add_scalar("x", float(step), step)
    full = [r for r in caplog.records if "is full" in r.getMessage()]
    assert len(full) == 1
    assert _steps(logdir, "x") == list(range(30_000))


def test_a_writer_that_finds_the_ring_full_wakes_its_reader(tmp_path: Path) -> None:
    fd, memory = create(slots=64, data_size=64 * 1024)
    os.close(fd)
    woken = threading.Event()
    writer = RingWriter(memory, tmp_path / "spill", wake=woken.set)
    reader = RingReader(memory)
    values: list[float] = []

    def read_when_woken() -> None:  # a reader with no interval of its own: without a wake-up, the writer waits forever
        while len(values) < 1000 and woken.wait(60):
            woken.clear()
            values.extend(record.value for record in reader.read(4096))
            reader.commit()

    thread = threading.Thread(target=read_when_woken)
    thread.start()
    for step in range(1000):  # 15 times the ring's 64 slots
        writer.put_scalar(1, float(step), step, 1.0)
    woken.set()  # the last values did not fill the ring: a flush asks for them
    thread.join(60)
    assert values == [float(step) for step in range(1000)]


def test_both_paths_give_tensorboard_the_same_values(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np

    def log(writer: LocalSummaryWriter) -> None:
        for step in range(50):
            writer.add_scalar("loss/train", 1.0 / (step + 1), step, walltime=1000.0 + step)
            writer.add_scalars("pair", {"a": float(step), "b": -float(step)}, step, walltime=1000.0 + step)
        writer.add_histogram("w", np.arange(100.0), 3, walltime=1.0)
        writer.add_image("img", np.zeros((3, 8, 8)), 4, walltime=2.0)
        writer.add_text("note", "hello", 5, walltime=3.0)
        writer.add_scalar("big", 1e39, 6, walltime=4.0)  # beyond float32: an infinity, as protobuf stores it

    with LocalSummaryWriter(str(tmp_path / "ring")) as ring:
        assert isinstance(ring._events, SharedEventQueue)
        log(ring)

    def no_companion() -> None:
        raise OSError("processes are forbidden here")

    monkeypatch.setattr(companion, "companion", no_companion)
    monkeypatch.setattr(STATE, "said", set())
    with caplog.at_level(logging.WARNING, logger="hf_summary"):
        for name in ("fallback", "fallback-again"):
            with LocalSummaryWriter(str(tmp_path / name)) as fallback:
                assert not isinstance(fallback._events, SharedEventQueue)
                log(fallback)
    said = [r for r in caplog.records if "written by this process" in r.getMessage()]
    assert len(said) == 1  # said once, not once per writer

    def content(run_dir: Path) -> dict:
        acc = accumulate(run_dir)
        return {
            "scalars": {t: [(e.wall_time, e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]},
            "histograms": {t: [(e.step, e.histogram_value) for e in acc.Histograms(t)]
                           for t in acc.Tags()["histograms"]},
            "images": {t: [(e.step, e.encoded_image_string) for e in acc.Images(t)] for t in acc.Tags()["images"]},
            "tensors": {t: [(e.step, e.tensor_proto) for e in acc.Tensors(t)] for t in acc.Tags()["tensors"]},
        }

    for run in (".", "pair/a", "pair/b"):
        ours, theirs = content(tmp_path / "ring" / run), content(tmp_path / "fallback" / run)
        assert ours == theirs and ours["scalars"], run
    assert content(tmp_path / "ring")["scalars"]["big"][0][2] == float("inf")


def test_a_companion_killed_mid_run_is_taken_over_without_loss_or_repeat(tmp_path: Path) -> None:
    logdir = tmp_path / "run"
    with LocalSummaryWriter(str(logdir)) as writer:
        for step in range(1000):
            writer.add_scalar("x", float(step), step)
        process = psutil.Process(companion.current_pid())
        process.kill()
        process.wait(timeout=60)
        for step in range(1000, 2000):
            writer.add_scalar("x", float(step), step)
        writer.flush()
        assert not isinstance(writer._events._local, type(None))  # this process writes the events now
    assert _steps(logdir, "x") == list(range(2000))


def _companion_dies_with_a_call_under_way(writer: LocalSummaryWriter,
                                          *tags: str) -> tuple[SharedEventQueue, ScalarSlots]:
    """Log 0.0 at step 0 to each tag, read the ring's `slots` as a thread in the middle of a call would, kill the
    companion and let the writer take over; returns the writer's events and those slots."""
    events = writer._events
    assert isinstance(events, SharedEventQueue)
    for tag in tags:
        writer.add_scalar(tag, 0.0, 0)
    held_up = events.slots  # a thread read the ring's slots; then the interpreter ran other threads
    assert held_up is not None
    process = psutil.Process(companion.current_pid())
    process.kill()
    process.wait(timeout=60)
    events.take_over()  # (or its reaper did, just before: the same)
    return events, held_up


def test_a_call_under_way_when_the_companion_died_keeps_its_place(tmp_path: Path) -> None:
    logdir = tmp_path / "run"
    with LocalSummaryWriter(str(logdir)) as writer:
        _, held_up = _companion_dies_with_a_call_under_way(writer, "x")
        put_in_slot(held_up, held_up[0]["x"], 1, 1.0, 1.0)  # the thread goes on: into the ring, after the take-over
        writer.add_scalar("x", 2.0, 2)  # its next call, in-process
    assert scalars(logdir, "x") == [(0, 0.0), (1, 1.0), (2, 2.0)]


def test_two_calls_under_way_when_the_companion_died_land_in_any_order_and_keep_their_places(tmp_path: Path) -> None:
    logdir = tmp_path / "run"
    with LocalSummaryWriter(str(logdir)) as writer:
        events, held_up = _companion_dies_with_a_call_under_way(writer, "a", "b")
        first = next(events._writer._counter)  # thread 1 took its sequence number and was held up before writing
        put_in_slot(held_up, held_up[0]["b"], 2, 1.0, 2.0)  # thread 2 took the next one and wrote
        writer.add_scalar("b", 3.0, 3)  # thread 2's next call: its record, past the missing one, goes first
        memory, at = events._memory, HEADER_SIZE + (first & (events._writer.slots - 1)) * SLOT_SIZE
        key = events._keys[""]["a"]
        _SLOT.pack_into(memory, at, slot_check(first, SCALAR, key, 1, 1.0, 1.0), first, SCALAR, key, 1, 1.0, 1.0)
        writer.add_scalar("a", 4.0, 4)  # thread 1 wrote at last; its next call
    assert scalars(logdir, "a") == [(0, 0.0), (1, 1.0), (4, 4.0)]
    assert scalars(logdir, "b") == [(0, 0.0), (2, 2.0), (3, 3.0)]


def test_a_writer_made_after_its_companion_died_gets_a_new_one(tmp_path: Path) -> None:
    first = LocalSummaryWriter(str(tmp_path / "first"))
    first.add_scalar("x", 0.0, 0)
    link = companion.companion()
    dead = psutil.Process(companion.current_pid())
    # Holding the link's lock keeps the companion's reaper from noticing its end: the window in which a writer
    # made at once still finds the dead companion's socket.
    with link._lock:
        dead.kill()
        psutil.wait_procs([dead], timeout=60)
        with LocalSummaryWriter(str(tmp_path / "second")) as second:
            assert isinstance(second._events, SharedEventQueue)  # not the in-process fallback
            second.add_scalar("y", 1.0, 1)
        assert companion.current_pid() not in (None, dead.pid)
    first.close()  # taken over by then: its values were in the ring
    assert scalars(tmp_path / "second", "y") == [(1, 1.0)]
    assert scalars(tmp_path / "first", "x") == [(0, 0.0)]


def _ring(tmp_path: Path, values: int) -> tuple[RingWriter, RingReader]:
    fd, memory = create(slots=1024, data_size=64 * 1024)
    os.close(fd)
    writer = RingWriter(memory, tmp_path / "spill")
    writer.put_data(KEY, 1, b"\0loss")
    for step in range(values):
        writer.put_scalar(1, float(step), step, 1.0)
    return writer, RingReader(memory)


def test_a_reader_dying_after_its_batch_was_written_is_not_repeated(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    logdir = tmp_path / "run"
    _, reader = _ring(tmp_path, 100)
    dying = RingDrain(reader, logdir)
    monkeypatch.setattr(reader, "commit", lambda: None)  # dies between its write and its commit
    dying.drain()
    dying.files.close()
    taker = RingDrain(RingReader(reader.memory), logdir, keys={1: ("", "loss")})
    taker.recover()
    taker.drain(final=True)
    taker.files.close()
    assert _steps(logdir, "loss") == list(range(100))


def test_a_reader_dying_in_the_middle_of_a_write_is_cut_back_and_read_again(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    logdir = tmp_path / "run"
    writer, reader = _ring(tmp_path, 10)
    first = RingDrain(reader, logdir)
    first.drain()  # a batch written and committed
    for step in range(10, 100):
        writer.put_scalar(1, float(step), step, 1.0)

    def half_then_die(fd: int, data: memoryview) -> int:
        os.write(fd, data[: len(data) // 2])
        raise KeyboardInterrupt  # stands for the process dying: nothing below runs

    monkeypatch.setattr(event_files, "_os_write", half_then_die)
    with pytest.raises(KeyboardInterrupt):
        first.drain()
    monkeypatch.setattr(event_files, "_os_write", os.write)
    first.files.close()
    taker = RingDrain(RingReader(reader.memory), logdir, keys={1: ("", "loss")})  # the keys its writer knows
    taker.recover()
    taker.drain(final=True)
    taker.files.close()
    assert _steps(logdir, "loss") == list(range(100))


def test_a_torn_slot_is_never_read(tmp_path: Path) -> None:
    writer, reader = _ring(tmp_path, 3)
    at = HEADER_SIZE + (3 & 1023) * SLOT_SIZE  # the slot of sequence number 3 (the third scalar; 1 was the key)
    writer.memory[at + 44] ^= 0xFF  # a byte of its value not yet written, or not yet visible
    records = reader.read(10)
    assert [(r.kind, r.seq) for r in records] == [(KEY, 1), (SCALAR, 2)]  # stops at the torn one, waits for it
    final = RingReader(writer.memory).read(10, final=True)
    assert [r.seq for r in final] == [1, 2, 4]  # no writer left: skipped, never read as an event


def test_a_slot_written_by_the_training_loop_and_torn_at_any_byte_is_never_read(tmp_path: Path) -> None:
    fd, memory = create(slots=64, data_size=64 * 1024)
    os.close(fd)
    writer = RingWriter(memory, tmp_path / "spill")
    writer.put_data(KEY, 1, b"\0x")
    assert put_in_slot(writer.scalar_slots({"x": 1}), 1, 7, 1000.25, 0.5)  # sequence number 2: the training loop's way
    at = HEADER_SIZE + 2 * SLOT_SIZE
    assert [(r.seq, r.step, r.wall_time, r.value) for r in RingReader(memory).read(10)][1:] == [(2, 7, 1000.25, 0.5)]
    padding = range(17, 20)  # after the kind: never written, always zero
    for byte in (b for b in range(48) if b not in padding):  # check, seq, kind, key, step, wall time, value
        memory[at + byte] ^= 0x01  # one bit of the record, not yet visible to the reader
        assert [r.seq for r in RingReader(memory).read(10, final=True)] == [1], byte
        memory[at + byte] ^= 0x01
    # A NaN is hashed by identity, which differs between processes: the other way checks its bits.
    writer.put_scalar(1, float("nan"), 8, 1000.5)
    writer.put_scalar(1, 1.0, 9, float("nan"))
    read = [(r.step, repr(r.value), repr(r.wall_time)) for r in RingReader(memory).read(10)][2:]
    assert read == [(8, "nan", "1000.5"), (9, "1.0", "nan")]


def _close_during_a_call(writer: LocalSummaryWriter, log: Callable[[], None], where: str, *,
                         after_last_reading: bool = False) -> list[BaseException]:
    """Run `log` in a thread held up at its first lookup in `where` ("slots": the keys of the training loop's way,
    after it read `slots`; "runs": the keys of `put_scalar` and `put_event`, after their closed check) and close the
    writer from this thread. The call goes on once the shared memory is unmapped, or, `after_last_reading`, once the
    companion has read the ring for the last time and before the unmap (close() then waits until the call has
    written). Then close again (the call reopened the writer, as any call after close() does). Returns what the call
    raised."""
    events = writer._events
    assert isinstance(events, SharedEventQueue) and events.slots is not None
    held, go_on, written = threading.Event(), threading.Event(), threading.Event()

    class HeldUp(dict[Any, Any]):
        def get(self, key: Any, default: Any = None) -> Any:
            if not held.is_set():  # the interpreter runs the closing thread before this one goes on
                held.set()
                assert go_on.wait(60)
            return super().get(key, default)

    if where == "slots":
        keys, *rest = events.slots
        events.slots = (HeldUp(keys), *rest)  # type: ignore[assignment]
    else:
        events._keys = HeldUp(events._keys)
    if after_last_reading:
        link, ring = events._link, events._writer
        if hasattr(ring, "landed"):  # the call has written once it asks whether its record was read
            landed = ring.landed

            def asks(seq: int) -> bool:
                written.set()
                return landed(seq)

            ring.landed = asks  # type: ignore[method-assign]

        class AfterLastReading:
            def __getattr__(self, name: str) -> Any:
                return getattr(link, name)

            def detach(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
                answer = link.detach(*args, **kwargs)
                go_on.set()
                assert written.wait(60)
                return answer

        events._link = AfterLastReading()  # type: ignore[assignment]
    errors: list[BaseException] = []

    def run() -> None:
        try:
            log()
        except BaseException as error:  # noqa: BLE001 (returned to the test)
            errors.append(error)
        finally:
            written.set()

    thread = threading.Thread(target=run)
    thread.start()
    assert held.wait(60)
    writer.close()
    go_on.set()
    thread.join(60)
    assert not thread.is_alive()
    writer.close()
    return errors


def test_a_call_under_way_while_another_thread_closes_the_writer_lands_after_it(tmp_path: Path) -> None:
    logdir = tmp_path / "run"
    writer = LocalSummaryWriter(str(logdir))
    writer.add_scalar("x", 0.0, 0)
    assert _close_during_a_call(writer, lambda: writer.add_scalar("x", 1.0, 1), "slots") == []
    assert scalars(logdir, "x") == [(0, 0.0), (1, 1.0)]


def test_calls_off_the_training_loops_way_under_way_while_another_thread_closes_the_writer_land_after_it(
        tmp_path: Path) -> None:
    logdir = tmp_path / "run"
    calls: dict[str, Callable[[LocalSummaryWriter], None]] = {
        "a new tag": lambda writer: writer.add_scalar("y", 1.0, 1),
        "an event": lambda writer: writer.add_histogram("h", np.arange(10.0), 1),
        "add_scalars": lambda writer: writer.add_scalars("m", {"a": 1.0, "b": 2.0}, 1),
    }
    errors = {}
    for name, call in calls.items():
        writer = LocalSummaryWriter(str(logdir / name))
        writer.add_scalar("x", 0.0, 0)
        errors[name] = _close_during_a_call(writer, lambda: call(writer), "runs")  # noqa: B023 (run at once)
    assert errors == {name: [] for name in calls}
    assert scalars(logdir / "a new tag", "y") == [(1, 1.0)]
    histograms = accumulate(logdir / "an event").Histograms("h")
    assert [(h.step, h.histogram_value.num, h.histogram_value.sum) for h in histograms] == [(1, 10, 45.0)]
    assert scalars(logdir / "add_scalars" / "m" / "a", "m") == [(1, 1.0)]
    assert scalars(logdir / "add_scalars" / "m" / "b", "m") == [(1, 2.0)]


def test_a_call_that_writes_after_the_companions_last_reading_at_close_lands_after_it(tmp_path: Path) -> None:
    calls: dict[str, tuple[str, Callable[[LocalSummaryWriter], None]]] = {
        "a known tag": ("slots", lambda writer: writer.add_scalar("x", 1.0, 1)),
        "a new tag": ("runs", lambda writer: writer.add_scalar("y", 1.0, 1)),
        "an event": ("runs", lambda writer: writer.add_histogram("h", np.arange(10.0), 1)),
    }
    errors = {}
    for name, (where, call) in calls.items():
        writer = LocalSummaryWriter(str(tmp_path / name))
        writer.add_scalar("x", 0.0, 0)
        errors[name] = _close_during_a_call(writer, lambda: call(writer), where,  # noqa: B023 (run at once)
                                            after_last_reading=True)
    assert errors == {name: [] for name in calls}
    logged = {name: accumulate(tmp_path / name).Tags() for name in calls}
    assert scalars(tmp_path / "a known tag", "x") == [(0, 0.0), (1, 1.0)]
    assert "y" in logged["a new tag"]["scalars"] and scalars(tmp_path / "a new tag", "y") == [(1, 1.0)]
    assert "h" in logged["an event"]["histograms"]
    assert [h.step for h in accumulate(tmp_path / "an event").Histograms("h")] == [1]


def test_a_value_put_in_process_while_another_thread_closes_the_writer_lands_after_it(tmp_path: Path) -> None:
    logdir = tmp_path / "run"
    writer = LocalSummaryWriter(str(logdir), ring_size=None)  # the in-process queue: the fallback's path
    writer.add_scalar("x", 0.0, 0)
    events = writer._events
    assert isinstance(events, EventQueue)
    logging_thread: list[threading.Thread] = []
    held, go_on = threading.Event(), threading.Event()

    class HeldUpQueue(EventQueue):
        @property  # type: ignore[misc]
        def _queue(self) -> Any:
            # The logging thread is about to append: the interpreter runs the closing thread to its end first.
            if threading.current_thread() in logging_thread and not held.is_set():
                held.set()
                assert go_on.wait(60)
            return self.__dict__["_queue"]

    events.__class__ = HeldUpQueue
    errors: list[BaseException] = []

    def log() -> None:
        try:
            writer.add_scalar("x", 1.0, 1)
        except BaseException as error:  # noqa: BLE001 (shown by the assertion below)
            errors.append(error)

    logging_thread.append(threading.Thread(target=log))
    logging_thread[0].start()
    assert held.wait(60)
    writer.close()  # its writer thread has ended: an item appended now would never be written
    go_on.set()
    logging_thread[0].join(60)
    writer.close()  # the value reopened the writer, as any call after close() does
    assert errors == []
    assert scalars(logdir, "x") == [(0, 0.0), (1, 1.0)]


def test_add_scalar_writes_a_float_of_a_known_tag_into_its_slot_and_puts_the_rest(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    logdir = tmp_path / "run"
    with LocalSummaryWriter(str(logdir)) as writer:
        writer.add_scalar("x", 0.0, 0)  # a new tag: defined, then put
        events = writer._events
        assert isinstance(events, SharedEventQueue)
        put: list[tuple[Any, ...]] = []

        def put_scalar(*call: Any) -> None:
            put.append(call)
            SharedEventQueue.put_scalar(events, *call)

        monkeypatch.setattr(events, "put_scalar", put_scalar)
        writer.add_scalar("x", 0.5, 1)  # the training loop's way: no call
        writer.add_scalar("x", float("nan"), 2)  # hashed by identity: put, which checks its bits
        writer.add_scalar("y", 1.5, 3)  # a new tag
        writer.add_scalar("y", 2.5, 4)
    assert [call[1:2] + call[3:4] for call in put] == [("x", 2), ("y", 3)]
    assert scalars(logdir, "x")[:2] == [(0, 0.0), (1, 0.5)] and scalars(logdir, "y") == [(3, 1.5), (4, 2.5)]
    assert math.isnan(scalars(logdir, "x")[2][1])


def test_nan_infinities_and_signed_zeros_reach_tensorboard_as_logged(tmp_path: Path) -> None:
    values = [float("nan"), float("inf"), float("-inf"), -0.0, 0.0, -1.5]
    logdir = tmp_path / "run"
    with LocalSummaryWriter(str(logdir)) as writer:
        assert isinstance(writer._events, SharedEventQueue)
        writer.add_scalar("x", 0.25, 0)  # the tag known: the values below may go straight to the ring
        for step, value in enumerate(values, 1):
            writer.add_scalar("x", value, step)
        writer.add_scalar("late", 2.0, 3, walltime=float("nan"))
    assert [(step, repr(value)) for step, value in scalars(logdir, "x")] == [
        (step, repr(value)) for step, value in enumerate([0.25, *values])]
    assert repr(accumulate(logdir).Scalars("late")[0].wall_time) == "nan"


def test_an_event_larger_than_the_ring_goes_through_a_spill_file(tmp_path: Path) -> None:
    import numpy as np

    logdir = tmp_path / "run"
    image = np.random.default_rng(0).random((3, 256, 256))  # a PNG of about 190 KB: more than the data ring holds
    with LocalSummaryWriter(str(logdir), ring_size=256 * 1024) as writer:
        for step in range(3):
            writer.add_scalar("x", float(step), step)
            writer.add_image("noise", image, step)
        writer.flush()
        spill = logdir / ".hf_summary" / "spill"
        assert spill.is_dir() and not any(spill.iterdir())  # each spill file is gone once its event is written
    acc = accumulate(logdir)
    images = acc.Images("noise")
    assert [e.step for e in images] == [0, 1, 2] and len(images[0].encoded_image_string) > 128 * 1024
    assert _steps(logdir, "x") == [0, 1, 2]


class _DeviceValue:
    """A value on an accelerator, as the hand-off sees one: not a float, read by `.item()`, which waits here."""

    def __init__(self, value: float, ready: threading.Event) -> None:
        self.value, self.ready = value, ready

    def item(self) -> float:
        assert self.ready.wait(60)
        return self.value


def test_floats_logged_after_a_value_on_an_accelerator_follow_it(tmp_path: Path) -> None:
    logdir = tmp_path / "run"
    ready = threading.Event()
    with LocalSummaryWriter(str(logdir)) as writer:
        writer.add_scalar("x", 0.0, 0)  # the tag is known: later floats could go straight to the ring
        writer.flush()
        events = writer._events
        assert isinstance(events, SharedEventQueue)
        events.put_scalar("", "x", _DeviceValue(1.0, ready), 1, 1.0)
        for step in range(2, 50):
            writer.add_scalar("x", float(step), step)
        ready.set()
        writer.flush()
        for step in range(50, 60):  # once the device's values are handed off, floats take the short way again
            writer.add_scalar("x", float(step), step)
        assert events.slots is events._slots
    assert scalars(logdir, "x") == [(step, float(step)) for step in range(60)]
