"""The fast event path: in-process queue, batched writes, flush/close semantics, backpressure, fork safety."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from tensorboardX.proto.event_pb2 import Event

from hf_summary import HFSummaryWriter
from hf_summary.events import files as event_files_module
from hf_summary.events.records import iter_records, scan_records
from hf_summary.testing import LocalHub

from .helpers import accumulate, download_run, scalars


def _events(folder: Path) -> list[Event]:
    events = []
    for path in sorted(folder.glob("*tfevents*")):
        events += [Event.FromString(r) for r in iter_records(path)]
    return events


def _writer(repo_id: str, logdir: Path, **kwargs) -> HFSummaryWriter:
    return HFSummaryWriter(repo_id, logdir=str(logdir), commit_every=60, **kwargs)


def test_threads_logging_at_once_keep_steps_and_wall_times(hub: LocalHub, repo_id: str, logdir: Path) -> None:
    writer = _writer(repo_id, logdir)
    start = time.time()
    barrier = threading.Barrier(4)

    def log(thread: int) -> None:
        barrier.wait()
        for step in range(2000):
            writer.add_scalar(f"thread{thread}", float(step * thread), step)

    threads = [threading.Thread(target=log, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    writer.flush()  # after flush, everything is on disk: no close needed to read it
    end = time.time()
    acc = accumulate(logdir)
    for thread in range(4):
        events = acc.Scalars(f"thread{thread}")
        assert [(e.step, e.value) for e in events] == [(s, float(s * thread)) for s in range(2000)]
        walls = [e.wall_time for e in events]
        assert walls == sorted(walls) and start <= walls[0] and walls[-1] <= end
    writer.close()


def test_methods_keep_their_relative_order(hub: LocalHub, repo_id: str, logdir: Path) -> None:
    with _writer(repo_id, logdir) as writer:
        writer.add_scalar("a", 1.0, 1)
        writer.add_histogram("h", np.arange(10.0), 2)
        writer.add_scalar("a", 3.0, 3)
        writer.add_text("t", "x", 4)
        writer.add_scalar("a", 5.0, 5)
    kinds = [(e.step, e.summary.value[0].tag) for e in _events(logdir) if e.HasField("summary")]
    assert kinds == [(1, "a"), (2, "h"), (3, "a"), (4, "t/text_summary"), (5, "a")]


def test_add_scalars_takes_the_fast_path_and_reads_back(hub: LocalHub, repo_id: str, logdir: Path) -> None:
    with _writer(repo_id, logdir) as writer:
        for step in range(100):
            writer.add_scalars("metrics", {"train": float(step), "eval": float(-step)}, step)
        assert set(writer.all_writers) >= {str(logdir / "metrics" / "train"), str(logdir / "metrics" / "eval")}
    assert scalars(logdir / "metrics" / "train", "metrics") == [(s, float(s)) for s in range(100)]
    assert scalars(logdir / "metrics" / "eval", "metrics") == [(s, float(-s)) for s in range(100)]


def test_flush_then_read_and_close_then_read(hub: LocalHub, repo_id: str, logdir: Path) -> None:
    writer = _writer(repo_id, logdir)
    for step in range(5000):
        writer.add_scalar("x", float(step), step)
    writer.flush()
    assert len(scalars(logdir, "x")) == 5000
    for step in range(5000, 7000):
        writer.add_scalar("x", float(step), step)
    writer.close()
    assert [s for s, _ in scalars(logdir, "x")] == list(range(7000))


def test_slow_disk_blocks_logging_briefly_and_loses_nothing(hub: LocalHub, repo_id: str, logdir: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    writes = []

    def slow_write(fd: int, data: memoryview) -> int:
        time.sleep(0.02)
        writes.append(len(data))
        return os.write(fd, data)

    writer = _writer(repo_id, logdir, queue_size=50, ring_size=None)  # written in-process, where the test's disk is
    monkeypatch.setattr(event_files_module, "_os_write", slow_write)
    high_water = 0
    for step in range(3000):
        writer.add_scalar("slow", float(step), step)
        high_water = max(high_water, writer._events.pending)
    writer.close()
    assert high_water <= 50  # bounded: the logging thread waited instead of growing the queue
    assert len(writes) > 1
    assert [s for s, _ in scalars(logdir, "slow")] == list(range(3000))


def test_full_disk_fails_the_flush_and_keeps_the_events(hub: LocalHub, repo_id: str, logdir: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    writer = _writer(repo_id, logdir, ring_size=None)  # written in-process, where the test's disk is

    def full(fd: int, data: memoryview) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(event_files_module, "_os_write", full)
    for step in range(10):
        writer.add_scalar("d", float(step), step)  # logging itself never fails
    assert writer._events is not None and writer._events.flush() is False  # held in memory, not on disk; no raise
    monkeypatch.setattr(event_files_module, "_os_write", os.write)
    writer.close()
    assert [s for s, _ in scalars(logdir, "d")] == list(range(10))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_logs_to_its_own_valid_file(hub: LocalHub, repo_id: str, logdir: Path) -> None:
    writer = _writer(repo_id, logdir)
    for step in range(500):
        writer.add_scalar("parent", float(step), step)  # some of these are still queued at fork time
    pid = os.fork()
    if pid == 0:  # the child: log, flush, leave without running the parent's exit hooks
        code = 1
        try:
            for step in range(300):
                writer.add_scalar("child", float(step), step)
            writer.flush()
            code = 0
        finally:
            os._exit(code)
    for step in range(500, 1000):
        writer.add_scalar("parent", float(step), step)
    _, status = os.waitpid(pid, 0)
    writer.close()
    assert os.waitstatus_to_exitcode(status) == 0
    files = sorted(logdir.glob("*tfevents*"))
    assert all(scan_records(p).valid_size == p.stat().st_size for p in files)
    by_pid: dict[str, list[tuple[str, int]]] = {}
    for path in files:
        owner = path.name.split(".")[-2]
        events = map(Event.FromString, iter_records(path))
        by_pid.setdefault(owner, []).extend((e.summary.value[0].tag, e.step) for e in events if e.HasField("summary"))
    assert by_pid[str(pid)] == [("child", s) for s in range(300)]
    assert by_pid[str(os.getpid())] == [("parent", s) for s in range(1000)]


def test_import_does_not_pull_heavy_modules() -> None:
    code = ("import sys, hf_summary; heavy = [m for m in ('torch', 'tensorboard', 'accelerate', 'tensorboardX', "
            "'huggingface_hub') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_non_numeric_scalar_fails_at_the_call(hub: LocalHub, repo_id: str, logdir: Path) -> None:
    with _writer(repo_id, logdir) as writer:
        with pytest.raises(TypeError, match="expects a number"):
            writer.add_scalar("bad", "not a number", 0)
        with pytest.raises(AssertionError, match="one-element"):  # tensorboardX's type for a non-scalar array
            writer.add_scalar("bad", np.arange(3.0), 0)
        writer.add_scalar("good", np.float32(1.5), 1)
    assert scalars(logdir, "good") == [(1, 1.5)]


def test_a_bad_tag_fails_at_the_call_and_the_writer_keeps_working(hub: LocalHub, repo_id: str,
                                                                  logdir: Path) -> None:
    with _writer(repo_id, logdir) as writer:
        with pytest.raises(TypeError, match="string tag"):
            writer.add_scalar(123, 1.0, 0)
        writer.add_scalar("ok", 2.0, 1)
        assert writer._events.flush(timeout=30)
    assert scalars(logdir, "ok") == [(1, 2.0)]


def test_hand_encoded_scalars_are_the_bytes_protobuf_makes() -> None:
    import random

    from tensorboardX.proto.summary_pb2 import Summary
    from tensorboardX.summary import _clean_tag

    from hf_summary.events.encoding import ScalarEncoder

    encoder = ScalarEncoder(_clean_tag)
    rng = random.Random(0)
    cases = [("loss", 0.5, 0, 1.7e9), ("a/b c", -1e-30, 1, 0.0), ("big", 1e39, -5, 1.0), ("neg", -1e39, None, 2.5),
             ("/lead", float("inf"), 2**40, 3.0), ("é", 3.0, 2**63 - 1, 1.7e9)]
    cases += [(f"t{rng.randrange(50)}" * rng.randrange(1, 40), rng.uniform(-1e6, 1e6), rng.randrange(-10, 10**12),
               rng.uniform(0, 2e9)) for _ in range(500)]
    for tag, value, step, walltime in cases:
        expected = Event(wall_time=walltime, summary=Summary(value=[Summary.Value(tag=_clean_tag(tag),
                                                                                  simple_value=value)]))
        if step is not None:
            expected.step = step
        assert encoder.encode(tag, value, step, walltime) == expected.SerializeToString(), (tag, value, step)


def test_local_writer_is_the_same_fast_path_without_a_hub(tmp_path: Path) -> None:
    import tensorboardX

    from hf_summary import HFSummaryWriter, LocalSummaryWriter

    assert issubclass(HFSummaryWriter, LocalSummaryWriter)
    assert issubclass(LocalSummaryWriter, tensorboardX.SummaryWriter)
    with LocalSummaryWriter(str(tmp_path / "local")) as writer:
        for step in range(100):
            writer.add_scalar("x", float(step), step)
        writer.flush()
        assert len(scalars(tmp_path / "local", "x")) == 100  # flush waits for the writer thread
        assert not hasattr(writer, "scheduler")
    (path,) = (tmp_path / "local").glob("*tfevents*")
    assert f".{os.getpid()}." in path.name


def test_a_full_run_folder_rolls_its_files_less_often(tmp_path: Path) -> None:
    from hf_summary.events.files import FILES_PER_ROLL_DOUBLING
    from hf_summary.events.queue import EventQueue

    def files_made(existing: int) -> int:
        folder = tmp_path / f"run-{existing}"
        folder.mkdir()
        for n in range(existing):  # a long run's earlier files (names sort before ours)
            (folder / f"events.out.tfevents.0000000000.old.{n:05d}").touch()
        queue = EventQueue(folder)
        for step in range(400):
            queue.put_scalar("", "loss", 1.0, step, 1.0)
            queue.flush(roll_size=2_000)  # a push after every event: the worst case for the file count
        queue.close()
        return len(list(folder.iterdir())) - existing

    fresh, full = files_made(0), files_made(2 * FILES_PER_ROLL_DOUBLING)
    assert fresh >= 8 and full <= fresh // 4 + 1, (fresh, full)  # the roll size doubled twice
    for folder in tmp_path.iterdir():
        assert all(scan_records(p).valid_size == p.stat().st_size for p in folder.glob("*tfevents*"))


_MANY_SERIES = """
import resource, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (96, 96))  # a low open-file limit: fewer than the series below
from hf_summary import HFSummaryWriter
with HFSummaryWriter(sys.argv[1], logdir=sys.argv[2], commit_every=60) as writer:
    for step in range(3):
        writer.add_scalars("layer", {f"unit{i:03d}": float(i + step) for i in range(150)}, step)
        writer.flush()
    writer.scheduler.trigger().result(timeout=120)
"""


def test_more_add_scalars_series_than_the_open_file_limit(hub: LocalHub, repo_id: str, logdir: Path,
                                                          tmp_path: Path) -> None:
    import subprocess
    import sys

    child = subprocess.run([sys.executable, "-c", _MANY_SERIES, repo_id, str(logdir)], capture_output=True,
                           text=True, timeout=300)
    assert child.returncode == 0, child.stderr
    run = download_run(hub, repo_id, f"tensorboard/{logdir.name}", tmp_path / "dl")
    for i in (0, 75, 149):
        assert scalars(run / "layer" / f"unit{i:03d}", "layer") == [(s, float(i + s)) for s in range(3)]
    assert len(list((run / "layer").iterdir())) == 150


def test_a_forked_child_loses_nothing_and_its_trigger_answers_at_once(hub: LocalHub, repo_id: str, logdir: Path,
                                                                      tmp_path: Path) -> None:
    writer = _writer(repo_id, logdir)
    writer.add_scalar("parent", 0.0, 0)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: log, ask for a push, leave at once (no flush, no close), as a data-loader worker does
        code = 1
        try:
            for step in range(100):
                writer.add_scalar("child", float(step), step)
            error = writer.scheduler.trigger().exception(timeout=30)  # answered, never left hanging
            os.write(write, type(error).__name__.encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    answer = os.read(read, 100).decode()
    os.close(read)
    assert os.waitstatus_to_exitcode(status) == 0 and answer == "SchedulerStopped"
    writer.add_scalar("parent", 1.0, 1)
    writer.close()  # the parent's push carries the child's file too
    run = download_run(hub, repo_id, f"tensorboard/{logdir.name}", tmp_path / "dl")
    assert [s for s, _ in scalars(run, "child")] == list(range(100))
    assert [s for s, _ in scalars(run, "parent")] == [0, 1]


def test_tensors_are_read_by_the_writer_thread_as_they_were_at_the_call(hub: LocalHub, repo_id: str,
                                                                        logdir: Path) -> None:
    import threading

    import torch

    readers: list[str] = []

    class RecordingTensor(torch.Tensor):
        """Stands in for a CUDA tensor: reading it (`.item()`) would wait for the device."""

        @property
        def is_cpu(self) -> bool:  # type: ignore[override]
            return False

        def item(self) -> float:  # type: ignore[override]
            readers.append(threading.current_thread().name)
            return super().item()

    loss = torch.tensor(2.5, requires_grad=True) * 1.0  # part of an autograd graph
    tracked = torch.tensor([0.5]).as_subclass(RecordingTensor)
    with _writer(repo_id, logdir) as writer:
        writer.add_scalar("loss", loss, 0)
        writer.add_scalar("tracked", tracked, 1)
        with torch.no_grad():
            tracked.add_(10.0)  # changed in place after the call: the value logged is the one of the call
        assert threading.current_thread().name not in readers  # nothing read on the training thread
        writer.flush()
        assert readers == ["hf_summary-device-values"]  # the one thread that hands such values off
        with pytest.raises(AssertionError):  # a tensor of several elements is refused at the call, as tensorboardX
            writer.add_scalar("bad", torch.ones(3), 2)
    assert scalars(logdir, "loss") == [(0, 2.5)]
    assert scalars(logdir, "tracked") == [(1, 0.5)]
