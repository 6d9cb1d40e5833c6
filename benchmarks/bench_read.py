"""Issue 22: reading runs back, `hf_summary.read_scalars` vs TensorBoard's `EventAccumulator` and tbparse.

One logdir of `--scalars` (5 million) scalars over 20 tags and 4 runs, written as tensorboardX writes `add_scalar`
(a `file_version` event, then one event per scalar), is read by each contestant in a child process of its own:

- `ours`: `hf_summary.read_scalars(logdir)`, a DataFrame (run, tag, step, wall_time, value).
- `eventaccumulator`: TensorBoard's `EventAccumulator(run, size_guidance={"scalars": 0, ...})` per run (what
  TensorBoard, and tbparse, read with), `Reload()`, then every tag's `Scalars(tag)` as (step, wall_time, value).
- `tbparse`: `SummaryReader(logdir, extra_columns={"dir_name", "wall_time"}).scalars`, its DataFrame.

Each child reports its time, the scalars it read, its peak RSS, its RSS before reading (after its imports) and, for
ours, the DataFrame's size. Then the incremental read from the Hub: the logdir is pushed to a repo on a local Hub,
read once (every byte fetched), each run grows by 1 % and is pushed again, and the re-read is measured: the bytes
the server sent (`HubStats.bytes_sent`: file bytes, listings, everything) per byte added.

Targets: ours reads at least 20x as many scalars a second as EventAccumulator and as tbparse; its peak memory
beyond its RSS before reading is under twice the DataFrame's size; the re-read fetches at most 1.1 bytes per byte
added.

    .venv/bin/python benchmarks/bench_read.py                     # ~5 min on 2 cores
    .venv/bin/python benchmarks/bench_read.py --scalars 500000    # a quick look
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import (
    MIB,
    Verdicts,
    child_env,
    emit_result,
    event_bytes,
    format_table,
    parse_args_or_run_child,
    peak_rss_mib,
    run_child,
)

from hf_summary.testing import LocalHub

RUNS = 4
TAGS = tuple(f"{group}/{name}_{index}" for index, (group, name) in enumerate(
    [("train", "loss"), ("train", "accuracy"), ("eval", "loss"), ("eval", "accuracy"), ("optim", "lr")] * 4))
CONTESTANTS = ("ours", "eventaccumulator", "tbparse")
SPEED_TARGET = 20.0
MEMORY_TARGET = 2.0
FETCH_TARGET = 1.1
GROWTH = 0.01
REPO = "local-user/bench-read"
WALL = 1_700_000_000.0


def write_steps(path: Path, steps: range, seed: int) -> None:
    """Append the events tensorboardX writes for `add_scalar(tag, value, step)` of every tag at these steps (and the
    `file_version` event first, for a new file): the same bytes, framed as it frames them."""
    import numpy as np
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary

    from hf_summary.events.records import frame_record

    values = np.random.default_rng(seed + steps.start).standard_normal((len(steps), len(TAGS))).astype(np.float32)
    batch: list[bytes] = [] if path.exists() else [
        frame_record(Event(wall_time=WALL, file_version="brain.Event:2").SerializeToString())]
    with open(path, "ab") as file:
        for row, step in enumerate(steps):
            for column, tag in enumerate(TAGS):
                event = Event(wall_time=WALL + step * 0.01 + column * 1e-4, step=step,
                              summary=Summary(value=[Summary.Value(tag=tag, simple_value=float(values[row, column]))]))
                batch.append(frame_record(event.SerializeToString()))
            if len(batch) >= 100_000:
                file.write(b"".join(batch))
                batch.clear()
        file.write(b"".join(batch))


def run_file(logdir: Path, run: int) -> Path:
    return logdir / f"run{run}" / "events.out.tfevents.1700000000.bench"


def rss_mib() -> float:
    """This process's resident set size now."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def child(params: dict[str, Any]) -> None:
    kind, logdir = params["kind"], params["logdir"]
    result: dict[str, Any] = {}
    if kind == "ours":
        import pandas  # noqa: F401  (imported by read_scalars: its memory is not the read's)

        import hf_summary

        before = rss_mib()
        start = time.perf_counter()
        frame = hf_summary.read_scalars(logdir)
        result.update(seconds=time.perf_counter() - start, scalars=len(frame),
                      frame_mib=frame.memory_usage(deep=True).sum() / MIB)
    elif kind == "eventaccumulator":
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        guidance = {"scalars": 0, "histograms": 0, "images": 0, "tensors": 0, "audio": 0, "compressedHistograms": 0}
        before = rss_mib()
        start = time.perf_counter()
        count = 0
        for folder in sorted({path.parent for path in Path(logdir).rglob("*tfevents*")}):
            accumulator = EventAccumulator(str(folder), size_guidance=guidance)
            accumulator.Reload()
            for tag in accumulator.Tags()["scalars"]:
                count += len([(e.step, e.wall_time, e.value) for e in accumulator.Scalars(tag)])
        result.update(seconds=time.perf_counter() - start, scalars=count)
    elif kind == "tbparse":
        from tbparse import SummaryReader

        before = rss_mib()
        start = time.perf_counter()
        frame = SummaryReader(logdir, extra_columns={"dir_name", "wall_time"}).scalars
        result.update(seconds=time.perf_counter() - start, scalars=len(frame))
    elif kind == "push":
        from huggingface_hub import HfApi

        api = HfApi()
        api.create_repo(REPO, exist_ok=True)
        api.upload_folder(repo_id=REPO, folder_path=logdir, path_in_repo="tensorboard/bench")
        before = rss_mib()
    elif kind == "hub-read":
        import hf_summary

        before = rss_mib()
        start = time.perf_counter()
        frame = hf_summary.read_scalars(REPO)
        result.update(seconds=time.perf_counter() - start, scalars=len(frame))
    else:
        raise ValueError(f"unknown child {kind!r}")
    emit_result({**result, "peak_rss_mib": peak_rss_mib(), "rss_before_mib": before})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scalars", type=int, default=5_000_000, help="scalars in the logdir (default: 5 million)")
    parser.add_argument("--contestants", default=",".join(CONTESTANTS), help="who reads the logdir (default: all)")
    args = parse_args_or_run_child(parser, child)
    if args is None:
        return 0
    steps = args.scalars // (RUNS * len(TAGS))
    verdicts = Verdicts()
    with tempfile.TemporaryDirectory(prefix="bench-read-") as tmp:
        root = Path(tmp)
        logdir = root / "logs"
        started = time.perf_counter()
        for run in range(RUNS):
            run_file(logdir, run).parent.mkdir(parents=True)
            write_steps(run_file(logdir, run), range(steps), seed=run)
        size = event_bytes(logdir)
        print(f"Logdir: {RUNS} runs x {len(TAGS)} tags x {steps} steps = {RUNS * len(TAGS) * steps} scalars, "
              f"{size / MIB:.0f} MiB of event files (written in {time.perf_counter() - started:.0f} s)\n", flush=True)

        results = {}
        for kind in args.contestants.split(","):
            results[kind] = run_child(__file__, {"kind": kind, "logdir": str(logdir)},
                                      child_env(None, root / "home" / kind), timeout=3600)
            print(f"  {kind}: {results[kind]['seconds']:.1f} s", flush=True)
        rows = []
        for kind, result in results.items():
            rate = result["scalars"] / result["seconds"]
            ours_rate = results["ours"]["scalars"] / results["ours"]["seconds"] if "ours" in results else None
            rows.append([kind, result["scalars"], f"{result['seconds']:.2f}", f"{rate:,.0f}",
                         f"{ours_rate / rate:.1f}x" if ours_rate else "-",
                         f"{result['peak_rss_mib']:.0f}", f"{result['peak_rss_mib'] - result['rss_before_mib']:.0f}"])
        print()
        print(format_table(["reader", "scalars", "seconds", "scalars/s", "ours is", "peak RSS MiB",
                            "growth MiB"], rows))
        if "ours" in results:
            ours = results["ours"]
            rate = ours["scalars"] / ours["seconds"]
            growth = ours["peak_rss_mib"] - ours["rss_before_mib"]
            print(f"\nours: DataFrame {ours['frame_mib']:.0f} MiB; peak RSS beyond the RSS before reading "
                  f"{growth:.0f} MiB = {growth / ours['frame_mib']:.2f}x the DataFrame")
            for kind in ("eventaccumulator", "tbparse"):
                if kind in results:
                    ratio = rate / (results[kind]["scalars"] / results[kind]["seconds"])
                    verdicts.check(f"ours >= {SPEED_TARGET:g}x the scalars/s of {kind}", ratio >= SPEED_TARGET,
                                   f"{ratio:.1f}x")
            verdicts.check(f"ours: peak memory beyond the RSS before reading < {MEMORY_TARGET:g}x the DataFrame",
                           growth < MEMORY_TARGET * ours["frame_mib"], f"{growth / ours['frame_mib']:.2f}x")
            verdicts.check("ours read every scalar", ours["scalars"] == RUNS * len(TAGS) * steps,
                           f"{ours['scalars']} of {RUNS * len(TAGS) * steps}")
        incremental(root, logdir, steps, verdicts)
    return verdicts.report()


def incremental(root: Path, logdir: Path, steps: int, verdicts: Verdicts) -> None:
    """Push the logdir, read it from the Hub, grow every run by GROWTH, push, read again: bytes sent per byte added."""
    with LocalHub(root / "hub", xet=False) as hub:
        env = child_env(hub, root / "home" / "hub-reader")  # one HF_HOME: the second read finds the first's mirror
        push_env = child_env(hub, root / "home" / "pusher")
        run_child(__file__, {"kind": "push", "logdir": str(logdir)}, push_env, timeout=1800)
        hub.reset_stats()
        first = run_child(__file__, {"kind": "hub-read", "logdir": ""}, env, timeout=1800)
        first_sent = hub.stats.bytes_sent
        before = event_bytes(logdir)
        extra = max(1, int(steps * GROWTH))
        for run in range(RUNS):
            write_steps(run_file(logdir, run), range(steps, steps + extra), seed=run)
        added = event_bytes(logdir) - before
        run_child(__file__, {"kind": "push", "logdir": str(logdir)}, push_env, timeout=1800)
        hub.reset_stats()
        second = run_child(__file__, {"kind": "hub-read", "logdir": ""}, env, timeout=1800)
        stats = hub.stats
    ratio = stats.bytes_sent / added
    print()
    print(format_table(["read from the Hub", "scalars", "seconds", "bytes sent", "requests"], [
        ["first (all)", first["scalars"], f"{first['seconds']:.2f}", first_sent, "-"],
        [f"after +{GROWTH:.0%} ({added} bytes added)", second["scalars"], f"{second['seconds']:.2f}",
         stats.bytes_sent, stats.requests],
    ]))
    print(f"\nre-read: {ratio:.3f} bytes fetched per byte added")
    verdicts.check(f"re-read after +{GROWTH:.0%}: bytes fetched per byte added <= {FETCH_TARGET:g}",
                   ratio <= FETCH_TARGET, f"{ratio:.3f}")
    total = RUNS * len(TAGS) * (steps + extra)
    verdicts.check("re-read: every scalar", second["scalars"] == total, f"{second['scalars']} of {total}")


if __name__ == "__main__":
    sys.exit(main())
