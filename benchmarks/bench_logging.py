"""Issue 5: what logging costs the training loop, ours vs tensorboardX, torch and huggingface_hub.

Seven parts (select with `--parts`; the default is abcdeg):

a. `add_scalar` latency (one `perf_counter_ns` pair around each call; calls back to back, then in bursts separated
   by short sleeps like a training loop's) and back-to-back throughput, one fresh child process per contestant and
   round, rounds interleaved. The writers that upload (ours and huggingface_hub's) have a side thread triggering
   commits back to back against a local Hub during the whole measurement.
   Target: our median latency >= 20x lower than tensorboardX's, in both patterns.
b. A small torch MLP trained on the CPU (one thread, ~0.5 ms a step) logging four scalars a step, as a user would:
   the loss, accuracy and gradient-norm tensors and the learning rate float, with no `.item()` in the loop. Runs
   without logging, with our writer committing every `--commit-interval` s from a side thread, with our writer
   making no commit during the run, and with tensorboardX alternate; each round gives one ratio per writer against
   the no-logging run of the same round (mean step times). Target: the median ratio for our committing writer
   <= 1.05.
c. `add_histogram` and `add_image` cost per call, ours vs tensorboardX (no target: information).
d. Import time: wall time of `python -c "import X"` minus that of `python -c "pass"`, medians of interleaved
   fresh processes (no target: information).
e. The hand-off (issue 21): a smaller MLP (a CPU step of about 0.2 ms) logging four Python floats a step (read in
   every block, with a writer or without), in one process, every writer open throughout and idle apart from the
   loop (no push): no writer, ours (events handed off to the companion process through shared memory), ours with
   `ring_size=None` (events written by a thread of the training process, the path before), tensorboardX, and two
   floors: an `add_scalar` that does nothing, and one that does only the work a hand-off in Python cannot skip (a
   clock reading, a sequence number, the tag's key, the slot's check and its write). The run is
   cut into short blocks, one per writer in random order, many times over, each writer flushed (untimed) after its
   block; each cycle gives one ratio per writer against the no-writer block of the same cycle, of the blocks'
   median steps and of their means. Rounds of thousands of steps (part b's way) swing by 10 % on a shared machine;
   neighbouring blocks see the same machine. Target: ours <= 1.01x the loop without a writer (the ratio of medians,
   the top of its 95 % interval). Then `add_scalar` per call (a Python float, bursts of 1 000 calls) for both of our
   paths. The time from SIGKILL to the last value on the Hub, with values logged up to the kill, is
   `bench_crash.py`'s.
f. What an `add_scalar` of a Python float costs the training process in instructions, all its threads included
   (run only when asked: `--parts f`; needs valgrind): each writer in a child under callgrind, once with no call and
   once with `--counted-calls` calls then a flush; the difference, per call, less that of a method that does
   nothing. Counted, not timed: the machine's noise does not move it, caches and their misses are not in it. No
   target: the same ours/in-process/tensorboardX comparison as part e, as a number that a change moves reliably.

g. Who pays for a live push (issue 30): part e's MLP logging four Python floats a step, one fresh child per writer
   and round (rounds interleaved): no writer; ours idle (a bucket, `commit_every=60`: no push during the run); ours
   pushing live to a bucket every 2 s (the default; the companion pushes); the same with the schedule in the training
   process (`ring_size=None`). The training process's cost by accounting: the time inside the four calls plus the
   CPU of its other threads, over the run's step time without them; and the companion's CPU per push (psutil).
   Target: pushing live adds at most 0.3 % to the idle writer's cost.

    .venv/bin/python benchmarks/bench_logging.py
    .venv/bin/python benchmarks/bench_logging.py --parts b --train-rounds 15
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import (
    Verdicts,
    child_env,
    emit_result,
    format_table,
    median,
    parse_args_or_run_child,
    percentile,
    run_child,
)

from hf_summary.testing import LocalHub

LATENCY_TARGET = 20.0  # tensorboardX median / ours median
OVERHEAD_TARGET = 1.05  # step time with our writer / without logging
WRITERS = {
    "ours": "hf_summary.HFSummaryWriter",
    "tensorboardX": "tensorboardX.SummaryWriter",
    "torch": "torch.utils.tensorboard.SummaryWriter",
    "peer": "huggingface_hub.HFSummaryWriter",
}
# Part b's runs: name -> writer kind. "ours" commits from a side thread during the run; "ours-idle" is the same
# writer with a one-hour schedule, which makes no commit during the run: the difference is the commits' cost.
TRAIN_MODES = {"none": None, "ours": "ours", "ours-idle": "ours", "tensorboardX": "tensorboardX"}
# Part e's runs: the writer otherwise idle, our two event paths.
# Two floors: "nothing", an add_scalar that does nothing (the call alone), and "slot-only", the work a hand-off in
# Python cannot skip and nothing else (_SlotOnly).
HANDOFF_MODES = {"none": None, "nothing": "nothing", "slot-only": "slot-only", "ours": "ours",
                 "ours-inprocess": "ours-inprocess", "tensorboardX": "tensorboardX"}
HANDOFF_TARGET = 1.01
IMPORTS = {
    "hf_summary": "import hf_summary",
    "hf_summary.HFSummaryWriter": "from hf_summary import HFSummaryWriter",
    "tensorboardX": "import tensorboardX",
}


# Child side ---------------------------------------------------------------------------------------------------------


def make_writer(kind: str, logdir: str, repo_id: str) -> Any:
    """A writer of the given kind; the uploading ones get a long interval so that only our triggers commit."""
    if kind in ("ours", "ours-inprocess"):
        from hf_summary import HFSummaryWriter

        ring = {} if kind == "ours" else {"ring_size": None}
        return HFSummaryWriter(repo_id, logdir=logdir, commit_every=60, **ring)
    if kind == "nothing":
        return _NoWriter()
    if kind == "slot-only":
        return _SlotOnly()
    if kind == "tensorboardX":
        from tensorboardX import SummaryWriter

        return SummaryWriter(logdir)
    if kind == "torch":
        from torch.utils.tensorboard import SummaryWriter as TorchWriter

        return TorchWriter(logdir)
    if kind == "peer":
        from huggingface_hub import HFSummaryWriter as PeerWriter

        return PeerWriter(repo_id, logdir=logdir, commit_every=60)
    raise ValueError(f"unknown writer {kind!r}")


class Committer:
    """Triggers commits from a side thread, waiting `interval` seconds between them (0: back to back).

    This is what an uploading writer does in the background anyway, only more often, so that the measurement sees
    the cost of commits happening while the loop logs. A writer without a scheduler (or None) gets no thread, so the
    same code times every contestant.
    """

    def __init__(self, writer: Any, interval: float) -> None:
        self.commits = 0
        self._scheduler = getattr(writer, "scheduler", None)
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-committer", daemon=True)

    def __enter__(self) -> Committer:
        if self._scheduler is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            if self._scheduler.trigger().result() is not None:
                self.commits += 1


def scalar_latency(params: dict[str, Any]) -> None:
    """Part a, one contestant: per-call latency back to back and in paced bursts, then back-to-back throughput."""
    writer = make_writer(params["writer"], params["logdir"], params["repo_id"])
    pc = time.perf_counter_ns
    timer = []
    for _ in range(10_000):
        t0 = pc()
        timer.append(pc() - t0)
    for i in range(params["warmup"]):
        writer.add_scalar("warmup", 0.5 + i * 1e-6, i)

    def timed_calls(tag: str, steps: range) -> list[int]:
        latencies = []
        for step in steps:
            t0 = pc()
            writer.add_scalar(tag, 0.5 + step * 1e-6, step)
            latencies.append(pc() - t0)
        return latencies

    calls, burst, pause = params["calls"], params["burst"], params["pause_ms"] / 1000
    with Committer(writer, 0.0) as committer:
        back_to_back = timed_calls("train/loss", range(calls))
        # Bursts separated by a sleep, like logging between training steps: the writers' threads get the time they
        # would get in a real loop, and the measurement spans several commits.
        paced: list[int] = []
        for start in range(0, calls, burst):
            paced += timed_calls("train/acc", range(start, start + burst))
            time.sleep(pause)
        n = params["throughput_calls"]
        t0 = pc()
        for step in range(n):
            writer.add_scalar("train/throughput", 0.5 + step * 1e-6, step)
        throughput = n / (pc() - t0) * 1e9
    writer.close()
    emit_result({
        "median_us": median(back_to_back) / 1000, "p99_us": percentile(back_to_back, 99) / 1000,
        "max_us": max(back_to_back) / 1000, "paced_median_us": median(paced) / 1000,
        "paced_p99_us": percentile(paced, 99) / 1000, "paced_max_us": max(paced) / 1000,
        "throughput": throughput, "commits": committer.commits, "timer_us": median(timer) / 1000,
    })


def _our_threads_cpu() -> float:
    """CPU seconds used so far by hf_summary's threads in this process (its committer and its event writer)."""
    import threading

    import psutil

    ours = {t.native_id for t in threading.enumerate() if t.name.startswith("hf_summary-")}
    return sum(t.user_time + t.system_time for t in psutil.Process().threads() if t.id in ours)


def mlp_loop(params: dict[str, Any]) -> Callable[..., list[int]]:
    """`run(writer, steps, calls=None)`: train the MLP of `params` for `steps` steps, logging four scalars a step to
    `writer` (or nothing to None); returns each step's time in ns, and appends to `calls` the time of each step's
    four calls (the same two clock readings are taken without a writer)."""
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(0)
    width, batch = params["width"], params["batch"]
    model = torch.nn.Sequential(torch.nn.Linear(width, width), torch.nn.ReLU(), torch.nn.Linear(width, width),
                                torch.nn.ReLU(), torch.nn.Linear(width, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()
    x = torch.randn(4096, width)
    y = torch.randint(0, 10, (4096,))
    step_counter = iter(range(10**9))
    floats = params.get("floats", False)

    def run(writer: Any, steps: int, calls: list[int] | None = None) -> list[int]:
        times = []
        for _ in range(steps):
            t0 = time.perf_counter_ns()
            step = next(step_counter)
            idx = torch.randint(0, len(x), (batch,))
            logits = model(x[idx])
            loss = loss_fn(logits, y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            accuracy = (logits.argmax(1) == y[idx]).float().mean()
            values = ((loss.item(), accuracy.item(), grad_norm.item()) if floats  # read in every mode, writer or not
                      else (loss, accuracy, grad_norm))
            t1 = time.perf_counter_ns()
            if writer is not None:
                writer.add_scalar("train/loss", values[0], step)
                writer.add_scalar("train/accuracy", values[1], step)
                writer.add_scalar("train/grad_norm", values[2], step)
                writer.add_scalar("train/lr", optimizer.param_groups[0]["lr"], step)
            t2 = time.perf_counter_ns()
            times.append(t2 - t0)
            if calls is not None:
                calls.append(t2 - t1)
        return times

    return run


def _other_threads_cpu() -> float:
    """CPU seconds used so far by the threads of this process other than the calling one (clock ticks: summed over
    many blocks, not read block by block)."""
    import psutil

    me = threading.get_native_id()
    return sum(t.user_time + t.system_time for t in psutil.Process().threads() if t.id != me)


def training_loop(params: dict[str, Any]) -> None:
    """Part b: interleaved runs of the same MLP without logging, with our writer and with tensorboardX."""
    run = mlp_loop(params)
    run(None, params["warmup_steps"])  # first calls of torch ops allocate and dispatch slowly
    rounds = []
    train_modes = params.get("modes", TRAIN_MODES)
    for r in range(params["rounds"]):
        result: dict[str, Any] = {}
        modes = list(train_modes)
        for mode in modes[r % 4:] + modes[:r % 4]:  # rotate the order: no mode always runs first
            kind = train_modes[mode]
            writer = None
            if kind is not None:
                writer = make_writer(kind, f"{params['logdir']}/{mode}-{r}", f"{params['repo_prefix']}-{mode}-{r}")
            run(writer, params["warmup_steps"])
            if kind in ("ours", "ours-inprocess"):
                # The first push of a writer also checks the model card: make it before timing, so that the timed
                # commits are ordinary ones and both of our runs start from the same state.
                writer.scheduler.trigger().result()
            ours_before = _our_threads_cpu()
            with Committer(writer if mode == "ours" else None, params["commit_interval"]) as committer:
                times = run(writer, params["steps"])
            ours_cpu = _our_threads_cpu() - ours_before
            if writer is not None:
                writer.close()  # outside the timed part, like the end of training
            result[mode] = {"mean_us": sum(times) / len(times) / 1000, "median_us": median(times) / 1000,
                            "commits": committer.commits, "threads_cpu_s": ours_cpu}
        rounds.append(result)
    emit_result({"rounds": rounds})


def histogram_image_cost(params: dict[str, Any]) -> None:
    """Part c: per-call cost of add_histogram, add_image and add_scalar of a 0-d tensor, ours vs tensorboardX."""
    import torch

    torch.manual_seed(0)
    kinds = ("ours", "tensorboardX")
    writers = {kind: make_writer(kind, f"{params['logdir']}/{kind}", params["repo_id"]) for kind in kinds}
    weights = torch.randn(params["hist_side"], params["hist_side"])
    image = torch.rand(3, params["image_side"], params["image_side"])
    loss = torch.tensor(0.25)
    per_round: dict[str, dict[str, list[float]]] = {k: {"histogram": [], "image": [], "tensor scalar": []}
                                                    for k in writers}
    step = 0
    for r in range(params["rounds"]):
        order = list(writers) if r % 2 == 0 else list(reversed(writers))
        for kind in order:
            writer = writers[kind]
            for what, call in (("histogram", lambda w, s: w.add_histogram("weights", weights, s)),
                               ("image", lambda w, s: w.add_image("sample", image, s)),
                               ("tensor scalar", lambda w, s: w.add_scalar("loss", loss, s))):
                times = []
                for _ in range(params["calls"]):
                    t0 = time.perf_counter_ns()
                    call(writer, step)
                    times.append(time.perf_counter_ns() - t0)
                    step += 1
                per_round[kind][what].append(median(times) / 1000)
    for writer in writers.values():
        writer.close()
    emit_result({kind: {what: median(values) for what, values in d.items()} for kind, d in per_round.items()})


def handoff_blocks(params: dict[str, Any]) -> None:
    """Part e: the same MLP in short blocks of steps, one block per writer in turn, many times over.

    A round of a few thousand steps per writer (part b's way) swings by 10 % on a shared machine, ten times the
    difference to be shown; blocks of a hundred steps, each compared with the no-writer block next to it, see the
    same machine. Every writer is flushed after its block, outside the timed part, so that no writer's work spills
    into the next block. A writer thread in the training process does much of its work in that flush, and in a
    real run it would take the interpreter from the loop meanwhile: the CPU time of the process's other threads
    over the block and its flush is charged to the writer (its companion process is not the training process).
    """
    run = mlp_loop(params)
    run(None, params["warmup_steps"])
    writers = {mode: make_writer(kind, f"{params['logdir']}/{mode}", f"{params['repo_prefix']}-{mode}")
               if kind is not None else None for mode, kind in params["modes"].items()}
    for writer in writers.values():
        if writer is not None:
            run(writer, params["warmup_steps"])
            writer.flush()
    order = random.Random(0)
    cycles = []
    for _ in range(params["cycles"]):
        cycle = {}
        modes = list(writers)
        order.shuffle(modes)  # no mode always runs after the same one, or first
        for mode in modes:
            threads_before = _other_threads_cpu()
            calls: list[int] = []
            times = run(writers[mode], params["block_steps"], calls)
            if writers[mode] is not None:
                writers[mode].flush()
            cycle[mode] = {"mean_us": sum(times) / len(times) / 1000, "median_us": median(times) / 1000,
                           "threads_us": (_other_threads_cpu() - threads_before) * 1e6 / len(times),
                           "calls_us": median(calls) / 1000}
        cycles.append(cycle)
    for writer in writers.values():
        if writer is not None:
            writer.close()
    emit_result({"cycles": cycles})


def handoff_calls(params: dict[str, Any]) -> None:
    """Part e, per call: add_scalar of a Python float through each of our two event paths, in bursts of 1 000 calls
    with a flush (untimed) after each, so that what is timed is the call, not a full ring or queue waiting for the
    side that writes the files."""
    pc = time.perf_counter_ns
    result = {}
    for kind in ("ours", "ours-inprocess"):
        writer = make_writer(kind, f"{params['logdir']}/{kind}", f"{params['repo_id']}-{kind}")
        for i in range(2_000):
            writer.add_scalar("warmup", 0.5, i)
        writer.flush()
        bursts = []
        for start in range(0, params["calls"], 1_000):
            t0 = pc()
            for step in range(start, start + 1_000):
                writer.add_scalar("x", 0.5 + step * 1e-6, step)
            bursts.append((pc() - t0) / 1_000 / 1000)
            writer.flush()
        result[kind] = median(bursts)
        writer.close()
    emit_result(result)


class _NoWriter:
    """The same calls, to a method that does nothing, with tensorboardX's signature: part f's baseline, and part e's
    floor."""

    def add_scalar(self, tag: str, scalar_value: Any, global_step: int | None = None, walltime: float | None = None,
                   display_name: str | None = "", summary_description: str | None = "") -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


class _SlotOnly(_NoWriter):
    """Part e's second floor: what a hand-off written in Python cannot skip, and nothing else. A clock reading, a
    sequence number, the tag's key, the slot's check and the slot's write into shared memory, as hf_summary's ring
    does them; no check of the arguments, of the writer's state, or of room in the ring (no reader frees it)."""

    def __init__(self) -> None:
        import os

        from hf_summary.events.ring import RingWriter, create

        fd, memory = create(slots=8192, data_size=64 * 1024)
        os.close(fd)
        self.keys = {"train/loss": 1, "train/accuracy": 2, "train/grad_norm": 3, "train/lr": 4}
        _, self.counter, _, self.write, self.memory, self.mask, self.first_slot = RingWriter(
            memory, Path(tempfile.gettempdir())).scalar_slots(self.keys)

    def add_scalar(self, tag: str, scalar_value: Any, global_step: int | None = None, walltime: float | None = None,
                   display_name: str | None = "", summary_description: str | None = "") -> None:
        seq = next(self.counter)
        wall = time.time()
        key = self.keys[tag]
        self.write(self.memory, self.first_slot + (seq & self.mask) * 64,
                   hash((seq, 1, key, global_step, wall, scalar_value)), seq, 1, key, global_step, wall, scalar_value)


def counted_calls(params: dict[str, Any]) -> None:
    """Part f, one writer under callgrind: warm up, then `calls` add_scalar calls of a Python float and a flush."""
    import os

    kind = params["kind"]
    writer = _NoWriter() if kind == "none" else make_writer(kind, params["logdir"], params["repo_id"])
    for step in range(1_000):
        writer.add_scalar("warmup", 0.5, step)
    writer.flush()
    for step in range(params["calls"]):
        writer.add_scalar("x", 0.5 + step * 1e-6, step)
    writer.flush()
    emit_result({})
    os._exit(0)  # closing is the same with calls or without: not counted


def live_push_run(params: dict[str, Any]) -> None:
    """Part g, one writer: the MLP for `steps` steps, with the time inside the calls, the CPU of this process's
    other threads, and the companion's CPU (where it runs the pushes) over the timed steps."""
    import psutil

    run = mlp_loop(params)
    run(None, params["warmup_steps"])
    mode, writer, pusher = params["mode"], None, None
    if mode != "none":
        from hf_summary import HFSummaryWriter, companion

        ring = {"ring_size": None} if mode == "live-inprocess" else {}
        every = {"commit_every": 60} if mode == "idle" else {}
        writer = HFSummaryWriter(f"hf://buckets/{params['bucket']}", logdir=params["logdir"], **every, **ring)
        run(writer, params["warmup_steps"])
        writer.scheduler.trigger().result()  # the bucket exists and the first batch is made before timing
        pid = companion.current_pid()
        pusher = psutil.Process(pid) if pid is not None and mode != "live-inprocess" else None
    companion_before = sum(pusher.cpu_times()[:2]) if pusher is not None else 0.0
    threads_before = _other_threads_cpu()
    calls: list[int] = []
    times = run(writer, params["steps"], calls)
    threads_cpu = _other_threads_cpu() - threads_before
    companion_cpu = sum(pusher.cpu_times()[:2]) - companion_before if pusher is not None else 0.0
    if writer is not None:
        writer.close()
    emit_result({"loop_s": sum(times) / 1e9, "calls_s": sum(calls) / 1e9, "threads_s": threads_cpu,
                 "companion_s": companion_cpu})


def child(params: dict[str, Any]) -> None:
    {"a": scalar_latency, "b": training_loop, "c": histogram_image_cost, "e": handoff_calls,
     "e-loop": handoff_blocks, "f": counted_calls, "g": live_push_run}[params["part"]](params)


# Parent side --------------------------------------------------------------------------------------------------------


def part_a(args: argparse.Namespace, hub: LocalHub, work: Path, verdicts: Verdicts) -> None:
    kinds = list(WRITERS)
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in kinds}
    print(f"\n(a) add_scalar with Python float values, after {args.warmup} warm-up calls: {args.calls} timed calls "
          f"back to back, then {args.calls} timed calls in bursts of {args.burst} separated by {args.pause_ms} ms "
          f"sleeps (paced), then {args.throughput_calls} untimed calls back to back (throughput). "
          f"{args.rounds} rounds, one fresh process per run; the uploading writers commit back to back from a side "
          "thread meanwhile.",
          flush=True)
    for r in range(args.rounds):
        for kind in kinds[r % len(kinds):] + kinds[:r % len(kinds)]:
            params = {"part": "a", "writer": kind, "logdir": str(work / f"a-{kind}-{r}"),
                      "repo_id": f"{hub.user}/bench-scalar-{kind}-{r}", "calls": args.calls, "burst": args.burst,
                      "pause_ms": args.pause_ms, "warmup": args.warmup, "throughput_calls": args.throughput_calls}
            runs[kind].append(run_child(__file__, params, child_env(hub, work / "hf_home"), timeout=600))

    def agg(kind: str, key: str) -> float:
        return median([run[key] for run in runs[kind]])

    ours = agg("ours", "median_us")
    rows = [[WRITERS[k], f"{agg(k, 'median_us'):.2f}", f"{agg(k, 'p99_us'):.1f}", f"{agg(k, 'max_us'):.0f}",
             f"{agg(k, 'paced_median_us'):.2f}", f"{agg(k, 'paced_p99_us'):.1f}", f"{agg(k, 'paced_max_us'):.0f}",
             f"{agg(k, 'throughput'):,.0f}", f"{agg(k, 'commits'):.0f}", f"{agg(k, 'median_us') / ours:.1f}x",
             f"{agg(k, 'paced_median_us') / agg('ours', 'paced_median_us'):.1f}x"] for k in kinds]
    print(format_table(["writer", "median us", "p99 us", "max us", "paced med us", "paced p99 us", "paced max us",
                        "calls/s", "commits", "median/ours", "paced med/ours"], rows))
    print(f"Medians over rounds of each run's figure; the perf_counter_ns pair itself costs "
          f"{agg('ours', 'timer_us'):.2f} us (not subtracted).")
    for key, label in (("median_us", "back to back"), ("paced_median_us", "paced")):
        theirs, mine = agg("tensorboardX", key), agg("ours", key)
        verdicts.check(f"(a) ours add_scalar median ({label}) >= {LATENCY_TARGET:g}x faster than tensorboardX's",
                       theirs / mine >= LATENCY_TARGET, f"{theirs / mine:.1f}x ({mine:.2f} us vs {theirs:.2f} us)")


def part_b(args: argparse.Namespace, hub: LocalHub, work: Path, verdicts: Verdicts) -> None:
    print(f"\n(b) Training loop: MLP {args.width}-{args.width}-{args.width}-10, batch {args.batch}, SGD, "
          f"torch.set_num_threads(1); {args.steps} timed steps per run after {args.warmup_steps} warm-up steps; "
          f"{args.train_rounds} rounds of {'/'.join(TRAIN_MODES)} in rotating order, one process. Logged per step: "
          f"loss, accuracy, grad-norm (tensors), lr (float). 'ours' commits every {args.commit_interval} s from a side "
          "thread; 'ours-idle' makes no commit during the run. Each of our writers commits once before its timed "
          "steps.", flush=True)
    params = {"part": "b", "logdir": str(work / "b"), "repo_prefix": f"{hub.user}/bench-train", "width": args.width,
              "batch": args.batch, "steps": args.steps, "warmup_steps": args.warmup_steps, "rounds": args.train_rounds,
              "commit_interval": args.commit_interval}
    server_cpu = time.process_time()  # the local Hub runs in this process: its CPU time is not the child's
    rounds = run_child(__file__, params, child_env(hub, work / "hf_home"), timeout=1800)["rounds"]
    server_cpu = time.process_time() - server_cpu
    writers = [mode for mode in TRAIN_MODES if mode != "none"]

    def ratios(r: dict[str, Any], key: str = "mean_us") -> list[str]:
        return [f"{r[m][key] / r['none'][key]:.3f}" for m in writers]

    rows = [[f"round {i + 1}", *(f"{r[m]['mean_us']:.0f}" for m in TRAIN_MODES), *ratios(r), r["ours"]["commits"]]
            for i, r in enumerate(rounds)]
    ratio = {m: median([r[m]["mean_us"] / r["none"]["mean_us"] for r in rounds]) for m in writers}
    med_ratio = {m: median([r[m]["median_us"] / r["none"]["median_us"] for r in rounds]) for m in writers}
    rows.append(["median", *(f"{median([r[m]['mean_us'] for r in rounds]):.0f}" for m in TRAIN_MODES),
                 *(f"{ratio[m]:.3f}" for m in writers), ""])
    print(format_table(["", *(f"{m} us" for m in TRAIN_MODES), *(f"{m}/none" for m in writers), "our commits"],
                       rows))
    print("us is the mean step time of the run (what throughput sees); the ratios compare runs of the same round. "
          "Median of the ratios of median step times: "
          + ", ".join(f"{m} {med_ratio[m]:.3f}" for m in writers) + ".")
    commits = sum(r["ours"]["commits"] for r in rounds)
    lost_ms = median([(r["ours"]["mean_us"] - r["ours-idle"]["mean_us"]) * args.steps / 1000
                      / max(r["ours"]["commits"], 1) for r in rounds])
    client_ms = median([(r["ours"]["threads_cpu_s"] - r["ours-idle"]["threads_cpu_s"]) * 1000
                        / max(r["ours"]["commits"], 1) for r in rounds])
    print(f"Training time lost per commit: {lost_ms:.0f} ms (median over rounds of (ours - ours-idle) x steps / "
          f"commits). Apart from it: our own threads in the training process used {client_ms:.1f} ms of CPU per "
          f"commit (committer and writer threads, ours minus ours-idle); the local Hub server, which shares this "
          f"machine's cores but is not part of the training process, used {server_cpu * 1000 / max(commits, 1):.0f} "
          "ms of CPU per commit.")
    verdicts.check(f"(b) training step with our writer (committing every {args.commit_interval:g} s) <= "
                   f"{OVERHEAD_TARGET:g}x the step without logging", ratio["ours"] <= OVERHEAD_TARGET,
                   f"{ratio['ours']:.3f}x (no commit during the run: {ratio['ours-idle']:.3f}x; tensorboardX: "
                   f"{ratio['tensorboardX']:.3f}x)")


def part_e(args: argparse.Namespace, hub: LocalHub, work: Path, verdicts: Verdicts) -> None:
    print(f"\n(e) The hand-off: MLP {args.width_e}-{args.width_e}-{args.width_e}-10, batch {args.batch_e}, one thread; "
          f"{args.cycles} cycles of one {args.block_steps}-step block per writer ({'/'.join(HANDOFF_MODES)}, in "
          "random order; two floors: 'nothing', an add_scalar that does nothing, and 'slot-only', the work a "
          "hand-off in Python cannot skip (clock, sequence number, key, the slot's check and write) with no check of "
          "anything), one process, every writer open throughout and flushed after its block (untimed); four "
          "Python floats a step (read in every block); no push during the run. Each cycle gives one ratio per "
          "writer against the no-writer block of the same cycle: of the blocks' median step times (what a step pays "
          "as a rule: the hand-off), and of their mean step times (which also count the rare slow step: a thread "
          "holding the interpreter, a collection, the machine's other tenants). The CPU time of the training "
          "process's other threads over a block and its flush is charged to the block's writer.",
          flush=True)
    params = {"part": "e-loop", "logdir": str(work / "e"), "repo_prefix": f"{hub.user}/bench-handoff",
              "width": args.width_e, "batch": args.batch_e, "block_steps": args.block_steps, "cycles": args.cycles,
              "warmup_steps": args.warmup_steps, "modes": HANDOFF_MODES, "floats": True}
    cycles = run_child(__file__, params, child_env(hub, work / "hf_home"), timeout=3600)["cycles"]
    writers = [mode for mode in HANDOFF_MODES if mode != "none"]
    # The median's 95 % interval: the order statistics n/2 -+ 0.98 sqrt(n) of the sorted ratios (a sign test's).
    half = int(0.98 * len(cycles) ** 0.5) + 1
    low, high = max(len(cycles) // 2 - half, 0), min((len(cycles) - 1) // 2 + half, len(cycles) - 1)
    # Other threads' CPU per step, averaged over all blocks (a single block's is below the clock tick's resolution).
    charge = {m: sum(c[m]["threads_us"] for c in cycles) / len(cycles) for m in HANDOFF_MODES}
    ratio: dict[str, dict[str, tuple[float, float, float]]] = {}
    rows = [["none", *(f"{median([c['none'][s] for c in cycles]):.1f}" for s in ("median_us", "mean_us")),
             f"{charge['none']:.1f}", "", ""]]
    for m in writers:
        ratio[m] = {}
        for stat in ("median_us", "mean_us"):
            ordered = sorted((c[m][stat] + charge[m]) / (c["none"][stat] + charge["none"]) for c in cycles)
            ratio[m][stat] = (median(ordered), ordered[low], ordered[high])
        rows.append([m, *(f"{median([c[m][s] for c in cycles]):.1f}" for s in ("median_us", "mean_us")),
                     f"{charge[m]:.1f}",
                     *("{:.4f} ({:.4f}-{:.4f})".format(*ratio[m][s]) for s in ("median_us", "mean_us"))])
    print(format_table(["", "median step us", "mean step us", "other threads' CPU us/step",
                        "ratio of medians (95 %)", "ratio of means (95 %)"], rows))
    print("Each ratio adds the other threads' CPU per step to both its steps.")
    # The same cost by accounting, with far less noise: what the training thread spent in the four calls (median
    # step of each block, less the no-writer block's two clock readings), plus the other threads' CPU, over the step.
    base = median([c["none"]["median_us"] for c in cycles])
    accounted = {m: median([c[m]["calls_us"] - c["none"]["calls_us"] for c in cycles]) + charge[m] - charge["none"]
                 for m in writers}
    print("By accounting (the four calls, median per block, plus other threads' CPU, over the no-writer step): "
          + ", ".join(f"{m} {accounted[m]:.1f} us = {1 + accounted[m] / base:.4f}x" for m in writers) + ".")
    calls = run_child(__file__, {"part": "e", "logdir": str(work / "e-calls"), "repo_id": f"{hub.user}/bench-calls",
                                 "calls": args.throughput_calls}, child_env(hub, work / "hf_home"), timeout=600)
    print(f"add_scalar per call, median of bursts of 1 000 calls ({args.throughput_calls} calls): "
          f"hand-off {calls['ours']:.2f} us, "
          f"in-process queue {calls['ours-inprocess']:.2f} us.")
    ours, means = ratio["ours"]["median_us"], ratio["ours"]["mean_us"]
    verdicts.check(f"(e) training step with our writer (hand-off) <= {HANDOFF_TARGET:g}x the step without a writer "
                   "(ratio of the blocks' median steps; its 95 % interval's top end)",
                   ours[2] <= HANDOFF_TARGET,
                   f"{ours[0]:.4f}x ({ours[1]:.4f}-{ours[2]:.4f}); of the means {means[0]:.4f}x ({means[1]:.4f}-"
                   f"{means[2]:.4f}); in-process {ratio['ours-inprocess']['median_us'][0]:.4f}x, tensorboardX "
                   f"{ratio['tensorboardX']['median_us'][0]:.3f}x")


def part_f(args: argparse.Namespace, hub: LocalHub, work: Path) -> None:
    import os
    import shutil
    from concurrent.futures import ThreadPoolExecutor

    if shutil.which("valgrind") is None:
        print("\n(f) skipped: valgrind is not installed.")
        return
    calls = args.counted_calls
    print(f"\n(f) Instructions per add_scalar of a Python float, every thread of the training process (callgrind; a "
          f"child with {calls} calls then a flush, less one with none; less a method that does nothing). Offline: no "
          "push.", flush=True)
    env = {**child_env(hub, work / "hf_home"), "HF_HUB_OFFLINE": "1", "PYTHONHASHSEED": "0"}
    kinds = ("none", "ours", "ours-inprocess", "tensorboardX")

    def count(job: tuple[str, int]) -> tuple[int, int]:
        """The child's instructions: in its main thread (the caller's), in its other threads."""
        kind, n = job
        out = work / f"callgrind-{kind}-{n}.out"
        run_child(__file__, {"part": "f", "kind": kind, "calls": n, "logdir": str(work / f"f-{kind}-{n}"),
                             "repo_id": f"{hub.user}/bench-count"}, env, timeout=3600,
                  prefix=["valgrind", "--tool=callgrind", "--separate-threads=yes", f"--callgrind-out-file={out}"])
        threads = []
        for path in sorted(work.glob(f"{out.name}-*")):  # one file per thread, the main thread's first
            lines = path.read_text().splitlines()
            threads.append(int(next(line.split()[1] for line in lines if line.startswith(("totals:", "summary:")))))
        return threads[0], sum(threads[1:])

    jobs = [(kind, n) for kind in kinds for n in (0, calls)]
    with ThreadPoolExecutor(max(1, min(4, (os.cpu_count() or 1)))) as pool:
        counts = dict(zip(jobs, pool.map(count, jobs), strict=True))
    caller = {kind: (counts[kind, calls][0] - counts[kind, 0][0]) / calls for kind in kinds}
    others = {kind: (counts[kind, calls][1] - counts[kind, 0][1]) / calls for kind in kinds}
    total = {kind: caller[kind] + others[kind] - caller["none"] - others["none"] for kind in kinds}
    rows = [[kind, f"{caller[kind] - caller['none']:.0f}", f"{others[kind] - others['none']:.0f}", f"{total[kind]:.0f}",
             f"{total[kind] / total['tensorboardX']:.3f}"] for kind in kinds[1:]]
    print(format_table(["", "in the calling thread", "in other threads", "in all", "of tensorboardX's"], rows))


LIVE_MODES = ("none", "idle", "live", "live-inprocess")
LIVE_TARGET = 0.003  # what pushing live may add to the idle writer's cost, as a fraction of the step


def part_g(args: argparse.Namespace, hub: LocalHub, work: Path, verdicts: Verdicts) -> None:
    print(f"\n(g) Who pays for a live push: MLP {args.width_e}-{args.width_e}-{args.width_e}-10, batch {args.batch_e}, "
          f"{args.steps_g} steps logging four Python floats each, one child per writer and round ({args.rounds_g} "
          "rounds, interleaved): no writer, ours idle (a bucket, no push during the run), ours pushing live to a "
          "bucket every 2 s (pushed by the companion), the same with the schedule in the training process "
          "(ring_size=None). Cost by accounting: the time inside the four calls plus the CPU of the training "
          "process's other threads, over the no-writer loop's time.", flush=True)
    per_mode: dict[str, list[dict[str, float]]] = {mode: [] for mode in LIVE_MODES}
    for r in range(args.rounds_g):
        modes = list(LIVE_MODES)
        for mode in modes[r % len(modes):] + modes[:r % len(modes)]:
            batches = hub.stats.bucket_batches
            result = run_child(__file__, {
                "part": "g", "mode": mode, "logdir": str(work / f"g-{mode}-{r}"), "bucket": f"{hub.user}/bench-g",
                "width": args.width_e, "batch": args.batch_e, "steps": args.steps_g, "floats": True,
                "warmup_steps": args.warmup_steps}, child_env(hub, work / "hf_home"), timeout=1800)
            # Every run with a writer also makes the warm-up trigger's batch and the final push's.
            pushes = hub.stats.bucket_batches - batches - (2 if mode != "none" else 0)
            per_mode[mode].append({**result, "pushes": pushes})
    base = median([r["loop_s"] for r in per_mode["none"]])
    rows, cost = [], {}
    idle_companion = median([r["companion_s"] for r in per_mode["idle"]])
    for mode in LIVE_MODES[1:]:
        runs = per_mode[mode]
        cost[mode] = median([(r["calls_s"] + r["threads_s"]) / base for r in runs])
        pushes = median([r["pushes"] for r in runs])
        companion = median([r["companion_s"] for r in runs])
        rows.append([mode, f"{median([r['calls_s'] for r in runs]) / base * 100:.2f} %",
                     f"{median([r['threads_s'] for r in runs]) / base * 100:.2f} %", f"{cost[mode] * 100:.2f} %",
                     f"{pushes:g}", f"{companion * 1000:.0f}" if mode != "live-inprocess" else "-",
                     f"{(companion - idle_companion) * 1000 / pushes:.0f}" if mode == "live" and pushes else "-"])
    print(format_table(["writer", "inside the calls", "other threads", "total", "pushes in the run",
                        "companion CPU ms", "companion CPU ms/push (over idle)"], rows))
    added = cost["live"] - cost["idle"]
    verdicts.check(f"(g) pushing live to a bucket adds <= {LIVE_TARGET * 100:g} % to the idle writer's cost",
                   added <= LIVE_TARGET,
                   f"+{added * 100:.2f} % (idle {cost['idle'] * 100:.2f} %, live {cost['live'] * 100:.2f} %; with the "
                   f"schedule in the training process {cost['live-inprocess'] * 100:.2f} %)")


def part_c(args: argparse.Namespace, hub: LocalHub, work: Path) -> None:
    print(f"\n(c) add_histogram (torch.randn({args.hist_side}, {args.hist_side}), default 'tensorflow' bins) and "
          f"add_image (torch.rand(3, {args.image_side}, {args.image_side})), add_scalar of a 0-d CPU tensor (ours "
          f"queues a copy, read by the writer thread): {args.calls_c} calls per round, "
          f"{args.rounds} interleaved rounds, median of the rounds' medians.", flush=True)
    params = {"part": "c", "logdir": str(work / "c"), "repo_id": f"{hub.user}/bench-hist-image",
              "hist_side": args.hist_side, "image_side": args.image_side, "calls": args.calls_c, "rounds": args.rounds}
    r = run_child(__file__, params, child_env(hub, work / "hf_home"), timeout=1200)
    rows = [[what, f"{r['ours'][what]:.0f}", f"{r['tensorboardX'][what]:.0f}",
             f"{r['tensorboardX'][what] / r['ours'][what]:.2f}x"] for what in ("histogram", "image", "tensor scalar")]
    print(format_table(["call", "ours us", "tensorboardX us", "tbX / ours"], rows))


def part_d(args: argparse.Namespace) -> None:
    print(f"\n(d) Import time: {args.import_reps} interleaved fresh processes per statement, median wall time minus "
          "that of `python -c pass`.", flush=True)
    statements = {"pass": "pass", **IMPORTS}
    names = list(statements)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(args.import_reps):
        for name in names[rep % len(names):] + names[:rep % len(names)]:
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", statements[name]], check=True)
            seconds[name].append(time.perf_counter() - t0)
    base = median(seconds["pass"])
    rows = [[IMPORTS[name], f"{(median(seconds[name]) - base) * 1000:.0f}",
             f"{(median(seconds[name]) - base) / (median(seconds['tensorboardX']) - base):.2f}"] for name in IMPORTS]
    print(format_table(["statement", "ms", "/ tensorboardX"], rows))
    print(f"`python -c pass`: {base * 1000:.0f} ms.")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default="abcdeg", help="which parts to run, e.g. 'ab'")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds for parts a and c")
    parser.add_argument("--train-rounds", type=int, default=9, help="(b) interleaved rounds")
    parser.add_argument("--calls", type=int, default=20_000, help="(a) timed add_scalar calls per run")
    parser.add_argument("--burst", type=int, default=200, help="(a) calls between pauses")
    parser.add_argument("--pause-ms", type=float, default=5.0, help="(a) pause between bursts")
    parser.add_argument("--warmup", type=int, default=2_000, help="(a) untimed calls first")
    parser.add_argument("--throughput-calls", type=int, default=50_000, help="(a) back-to-back calls")
    parser.add_argument("--width", type=int, default=192, help="(b) MLP width")
    parser.add_argument("--batch", type=int, default=32, help="(b) batch size")
    parser.add_argument("--steps", type=int, default=3_000, help="(b) timed steps per run")
    parser.add_argument("--warmup-steps", type=int, default=300, help="(b) untimed steps before each run")
    parser.add_argument("--commit-interval", type=float, default=1.0, help="(b) seconds between our commits")
    parser.add_argument("--cycles", type=int, default=300, help="(e) blocks per writer")
    parser.add_argument("--block-steps", type=int, default=100, help="(e) steps per block")
    parser.add_argument("--width-e", type=int, default=64, help="(e) MLP width (a step of about 0.2 ms)")
    parser.add_argument("--batch-e", type=int, default=16, help="(e) batch size")
    parser.add_argument("--counted-calls", type=int, default=20_000, help="(f) add_scalar calls counted")
    parser.add_argument("--calls-c", type=int, default=100, help="(c) calls per round and kind")
    parser.add_argument("--hist-side", type=int, default=256, help="(c) histogram of a side x side tensor")
    parser.add_argument("--image-side", type=int, default=64, help="(c) 3 x side x side image")
    parser.add_argument("--import-reps", type=int, default=9, help="(d) processes per statement")
    parser.add_argument("--steps-g", type=int, default=30_000, help="(g) timed steps per run")
    parser.add_argument("--rounds-g", type=int, default=3, help="(g) interleaved rounds")
    args = parse_args_or_run_child(parser, child)
    if args is None:
        return 0

    verdicts = Verdicts()
    with tempfile.TemporaryDirectory(prefix="bench-logging-") as tmp, LocalHub(root=Path(tmp, "hub")) as hub:
        work = Path(tmp)
        if "a" in args.parts:
            part_a(args, hub, work, verdicts)
        if "b" in args.parts:
            part_b(args, hub, work, verdicts)
        if "c" in args.parts:
            part_c(args, hub, work)
        if "e" in args.parts:
            part_e(args, hub, work, verdicts)
        if "f" in args.parts:
            part_f(args, hub, work)
        if "g" in args.parts:
            part_g(args, hub, work, verdicts)
    if "d" in args.parts:
        part_d(args)
    return verdicts.report()


if __name__ == "__main__":
    sys.exit(main())
