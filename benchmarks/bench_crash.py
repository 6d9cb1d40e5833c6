"""The companion process: how soon a run killed with SIGKILL is on the Hub, and what the companion costs while it waits.

Each round, a child process logs scalars and histograms through `HFSummaryWriter` (one push at the start, then an
hour's `commit_every`, so nothing else is pushed by the live run), flushes, and keeps logging until the parent kills
it with SIGKILL. No command is run after the kill: the parent polls its local Hub until every event file there holds
exactly the complete records on disk (no more, none twice), then reads the run back with TensorBoard's loader.

Measured: the time from SIGKILL to the last record on the Hub (median over `--rounds`), the companion's RSS and CPU
time while it waits, and what starting a companion costs the training process (`companion.watch()`).

Targets: median SIGKILL -> last record on the Hub <= 10 s (local server); companion RSS while the run is live <= 100 MB.

    .venv/bin/python benchmarks/bench_crash.py
    .venv/bin/python benchmarks/bench_crash.py --rounds 11
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import CHILD_FLAG, MIB, Verdicts, child_env, format_table, median, parse_args_or_run_child, read_run

from hf_summary.events.records import scan_records
from hf_summary.testing import LocalHub

TARGET_SECONDS = 10.0
# MB = 1e6 bytes. The companion runs the pushes: huggingface_hub, its HTTP client and hf_xet are loaded there (and no
# longer in the training process), where a companion that only watched held 30 MB.
TARGET_RSS_MB = 100.0
WAIT_SAMPLE = 1.0  # seconds the companion is watched while it waits, for its RSS and CPU time


# Child: one training process ------------------------------------------------------------------------------------------


def child(params: dict[str, Any]) -> None:
    """Log, push once, log more, flush, say `ready`, then keep logging until killed."""
    import numpy as np

    from hf_summary import HFSummaryWriter, UploadSpec, companion

    # What a companion costs the training process: one start and stop, on a logdir of its own.
    t0 = time.perf_counter()
    probe = companion.watch(params["logdir"] + "-probe", UploadSpec(params["repo_id"]))
    watch_ms = (time.perf_counter() - t0) * 1000
    probe.release()

    writer = HFSummaryWriter(params["repo_id"], logdir=params["logdir"], commit_every=60)
    rng = np.random.default_rng(0)
    step = 0

    def log(n: int) -> None:
        nonlocal step
        for _ in range(n):
            writer.add_scalar("train/loss", 1.0 / (1 + step), step)
            if step % 100 == 0:
                writer.add_histogram("weights", rng.standard_normal(1000), step)
            step += 1

    log(params["steps"])
    writer.scheduler.trigger().result()
    log(params["steps"])
    writer.flush()
    print(json.dumps({"companion_pid": companion.current_pid(), "watch_ms": watch_ms}), flush=True)
    while True:
        log(100)
        time.sleep(0.001)


# Parent -------------------------------------------------------------------------------------------------------------


def disk_is_on_hub(hub: LocalHub, repo_id: str, logdir: Path) -> bool:
    """Whether each event file holds on the Hub exactly its complete records on disk."""
    try:
        files = hub.repo_files(repo_id)
    except KeyError:
        return False
    for path in logdir.glob("*tfevents*"):
        valid = path.read_bytes()[: scan_records(path).valid_size]
        if files.get(f"tensorboard/{logdir.name}/{path.name}") != valid:
            return False
    return True


def one_round(hub: LocalHub, index: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    import psutil

    repo_id = f"{hub.user}/bench-crash-{index}"
    logdir = work / f"run{index}"
    params = {"repo_id": repo_id, "logdir": str(logdir), "steps": args.steps}
    proc = subprocess.Popen([sys.executable, __file__, CHILD_FLAG, json.dumps(params)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=child_env(hub, work / "hf_home"))
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"round {index}: the child ended before it was ready (exit {proc.wait()})")
        ready = json.loads(line)
        waiting = psutil.Process(ready["companion_pid"])
        cpu_before = sum(waiting.cpu_times()[:2])
        time.sleep(WAIT_SAMPLE)  # the companion waits: its RSS and CPU time then are what it costs a healthy run
        rss = waiting.memory_info().rss
        cpu_ms = (sum(waiting.cpu_times()[:2]) - cpu_before) * 1000
        killed = time.monotonic()
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    while not disk_is_on_hub(hub, repo_id, logdir):
        if time.monotonic() - killed > args.timeout:
            raise RuntimeError(f"round {index}: the run was not on the Hub {args.timeout:.0f} s after SIGKILL")
        time.sleep(0.02)
    seconds = time.monotonic() - killed
    scalars, histograms = read_run(hub, repo_id, f"tensorboard/{logdir.name}")
    steps = [s for s, _ in scalars.get("train/loss", [])]
    full = len(range(0, len(steps), 100))
    # The kill may fall between the last step's scalar and its histogram, logged just after it.
    histograms_ok = histograms.get("weights") in ({full, full - 1} if steps and steps[-1] % 100 == 0 else {full})
    return {
        "seconds": seconds, "rss_mb": rss / 1e6, "rss_mib": rss / MIB, "cpu_ms": cpu_ms, "watch_ms": ready["watch_ms"],
        "steps": len(steps),
        "readback_ok": steps == list(range(len(steps))) and len(steps) >= 2 * args.steps and histograms_ok,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7, help="training processes killed, one after the other")
    parser.add_argument("--steps", type=int, default=5000, help="steps logged before and after the live push")
    parser.add_argument("--timeout", type=float, default=120, help="seconds a round may wait for the Hub")
    args = parse_args_or_run_child(parser, child)
    if args is None:
        return 0

    print(f"{args.rounds} rounds: a training process logs {args.steps} steps (1 scalar a step, a 1000-value "
          f"histogram every 100), pushes once, logs {args.steps} more, flushes and keeps logging until SIGKILL. "
          f"The companion is watched for {WAIT_SAMPLE:g} s while it waits, before the kill.\n")
    rounds = []
    with tempfile.TemporaryDirectory(prefix="bench-crash-") as tmp, LocalHub(root=Path(tmp) / "hub") as hub:
        for index in range(args.rounds):
            rounds.append(one_round(hub, index, args, Path(tmp)))
            r = rounds[-1]
            print(f"  round {index}: {r['seconds']:.2f} s to the Hub, companion RSS {r['rss_mb']:.1f} MB", flush=True)

    rows = [[i, f"{r['seconds']:.2f}", f"{r['rss_mb']:.1f}", f"{r['rss_mib']:.1f}", f"{r['cpu_ms']:.1f}",
             f"{r['watch_ms']:.1f}", r["steps"], "ok" if r["readback_ok"] else "MISSING"] for i, r in enumerate(rounds)]
    print()
    print(format_table(["round", "SIGKILL -> Hub s", "companion RSS MB", "RSS MiB", f"CPU ms in {WAIT_SAMPLE:g} s",
                        "watch() ms", "steps on Hub", "read back"], rows))
    seconds = median([r["seconds"] for r in rounds])
    rss = max(r["rss_mb"] for r in rounds)
    print(f"\nSIGKILL -> last record on the Hub: median {seconds:.2f} s (min {min(r['seconds'] for r in rounds):.2f}, "
          f"max {max(r['seconds'] for r in rounds):.2f}); companion RSS while waiting: median "
          f"{median([r['rss_mb'] for r in rounds]):.1f} MB, max {rss:.1f} MB; watch() in the training process: "
          f"median {median([r['watch_ms'] for r in rounds]):.1f} ms.")

    verdicts = Verdicts()
    verdicts.check(f"median SIGKILL -> last record on the Hub <= {TARGET_SECONDS:g} s", seconds <= TARGET_SECONDS,
                   f"{seconds:.2f} s")
    verdicts.check(f"companion RSS while waiting <= {TARGET_RSS_MB:g} MB", rss <= TARGET_RSS_MB, f"max {rss:.1f} MB")
    verdicts.check("every run read back whole from the Hub", all(r["readback_ok"] for r in rounds),
                   f"{sum(r['readback_ok'] for r in rounds)}/{len(rounds)} rounds")
    return verdicts.report()


if __name__ == "__main__":
    sys.exit(main())
