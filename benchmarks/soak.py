"""Issue 7: a long logging run with frequent commits, optionally against a failing Hub.

A child process logs continuously through our writer (`--steps-per-sec` steps of four scalars, a histogram every
`--hist-every` steps) while the writer's own scheduler commits every `--commit-every` seconds to a local Hub, which
can be told to fail a share of its requests (`--failure-rate`). The child samples its memory and thread count; at
the end it closes the writer (final push), and the parent reads the run back from the server with TensorBoard's
loader and checks every logged value.

Targets: RSS growth < 10 % between the end of the warm-up and the end of the run; the same thread count at both
points; every scalar and histogram on the Hub after close.

    .venv/bin/python benchmarks/soak.py
    .venv/bin/python benchmarks/soak.py --duration 600 --failure-rate 0.3
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import threading
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
    read_run,
    run_child,
)

from hf_summary.testing import LocalHub

MEMORY_TARGET = 0.10
SCALAR_TAGS = ("train/loss", "train/accuracy", "train/lr", "train/grad_norm")
HIST_TAG = "weights/layer0"


def scalar_value(tag_index: int, step: int) -> float:
    """A deterministic value per tag and step, so that the read-back can be checked exactly."""
    return tag_index + 1.0 / (1.0 + step)


# Child ----------------------------------------------------------------------------------------------------------------


class LogCounter(logging.Handler):
    """Counts what the libraries report through `logging`: it is how retries and commits can be seen from outside."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.counts = {"our retries": 0, "failed pushes": 0, "commits": 0, "client retries": 0}

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if record.name == "hf_summary.upload.retry" and "retry" in message:
            self.counts["our retries"] += 1
        elif record.name == "hf_summary.upload.schedule" and message.startswith("Push to"):
            self.counts["failed pushes"] += 1
        elif record.name == "hf_summary.upload.pusher" and message.startswith("Committed"):
            self.counts["commits"] += 1
        elif record.name.startswith("huggingface_hub") and "Retrying" in message:
            self.counts["client retries"] += 1  # huggingface_hub's own backoff around preupload and LFS calls


def child(params: dict[str, Any]) -> None:
    """Log at a steady pace for `duration` seconds, sampling RSS and threads, then close and report."""
    import numpy as np
    import psutil

    counter = LogCounter()
    for name in ("hf_summary", "huggingface_hub"):
        logging.getLogger(name).addHandler(counter)
        logging.getLogger(name).setLevel(logging.INFO)  # commits are logged at INFO
    logging.basicConfig(level=logging.ERROR, format="%(name)s: %(message)s")  # still show errors on stderr

    from hf_summary import HFSummaryWriter

    proc = psutil.Process()
    rng = np.random.default_rng(0)
    threads_before = proc.num_threads()
    writer = HFSummaryWriter(params["repo_id"], logdir=params["logdir"], commit_every=params["commit_every"] / 60)
    samples: list[dict[str, float]] = []
    start = time.monotonic()
    next_sample = start + params["warmup"]
    step = 0
    histograms = 0
    while True:
        now = time.monotonic() - start
        if now >= params["duration"]:
            break
        if start + now >= next_sample:
            samples.append({"t": now, "rss_mib": proc.memory_info().rss / MIB, "threads": proc.num_threads(),
                            "py_threads": threading.active_count(), "commits": counter.counts["commits"]})
            next_sample += params["sample_every"]
        # Pace to the target rate in slices of 50 steps: sleeping per step would cost more than the logging.
        ahead = step / params["steps_per_sec"] - now
        if ahead > 0:
            time.sleep(ahead)
        for s in range(step, step + 50):
            for index, tag in enumerate(SCALAR_TAGS):
                writer.add_scalar(tag, scalar_value(index, s), s)
            if s % params["hist_every"] == 0:
                writer.add_histogram(HIST_TAG, rng.standard_normal(1000), s)
                histograms += 1
        step += 50
    end = {"t": time.monotonic() - start, "rss_mib": proc.memory_info().rss / MIB, "threads": proc.num_threads(),
           "py_threads": threading.active_count(), "commits": counter.counts["commits"]}
    t0 = time.monotonic()
    writer.close()
    close_seconds = time.monotonic() - t0
    emit_result({
        "steps": step, "histograms": histograms, "samples": samples, "end": end, "close_seconds": close_seconds,
        "threads_before": threads_before, "threads_after_close": proc.num_threads(),
        "left_after_close": sorted(t.name for t in threading.enumerate() if t is not threading.main_thread()),
        "logged_bytes": event_bytes(Path(params["logdir"])),
        "counts": counter.counts,
    })


# Parent ---------------------------------------------------------------------------------------------------------------


def check_run(scalars: dict[str, list[tuple[int, float]]], histograms: dict[str, int], steps: int,
              expected_histograms: int) -> tuple[bool, str]:
    """Whether every scalar (exact step and value) and every histogram is on the Hub; and what is missing."""
    import numpy as np

    problems = []
    for index, tag in enumerate(SCALAR_TAGS):
        got = dict(scalars.get(tag, []))
        missing = [s for s in range(steps) if s not in got]
        wrong = [s for s, v in got.items() if v != float(np.float32(scalar_value(index, s)))]
        if missing or wrong or len(scalars.get(tag, [])) != steps:
            problems.append(f"{tag}: {len(missing)} missing, {len(wrong)} wrong, "
                            f"{len(scalars.get(tag, []))} stored for {steps} logged")
    if histograms.get(HIST_TAG, 0) != expected_histograms:
        problems.append(f"{HIST_TAG}: {histograms.get(HIST_TAG, 0)} of {expected_histograms} histograms")
    if problems:
        return False, "; ".join(problems)
    return True, f"{steps} steps x {len(SCALAR_TAGS)} scalars and {expected_histograms} histograms, all exact"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=60, help="seconds of logging")
    parser.add_argument("--warmup", type=float, default=10, help="seconds before the 'start' sample")
    parser.add_argument("--sample-every", type=float, default=10, help="seconds between samples")
    parser.add_argument("--steps-per-sec", type=float, default=1000, help="logging pace (4 scalars a step)")
    parser.add_argument("--hist-every", type=int, default=100, help="a histogram of 1000 values every N steps")
    parser.add_argument("--commit-every", type=float, default=3, help="seconds between commits (commit_every)")
    parser.add_argument("--failure-rate", type=float, default=0.0, help="share of Hub requests that fail")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fault sequence")
    args = parse_args_or_run_child(parser, child)
    if args is None:
        return 0
    if args.warmup >= args.duration:
        parser.error("--warmup must be shorter than --duration")
    if args.warmup <= args.commit_every:
        # The first commit starts the Hub client's own threads: sampled before it, the thread count cannot be flat.
        parser.error("--warmup must be longer than --commit-every, so that the first commit happens during warm-up")

    print(f"Soak: {args.duration:g} s of logging at {args.steps_per_sec:g} steps/s ({len(SCALAR_TAGS)} scalars a "
          f"step, a histogram every {args.hist_every} steps), commit_every={args.commit_every:g} s, failure rate "
          f"{args.failure_rate:g} (500/503/429/drop, seed {args.seed}), warm-up {args.warmup:g} s. Memory is the "
          "child's RSS (psutil); threads are OS threads of the child (Python threads in brackets).\n", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-soak-") as tmp, LocalHub(root=Path(tmp, "hub")) as hub:
        repo_id = f"{hub.user}/bench-soak"
        logdir = Path(tmp, "run")
        if args.failure_rate > 0:
            hub.set_faults(args.failure_rate, seed=args.seed)
        params = {"repo_id": repo_id, "logdir": str(logdir), "duration": args.duration, "warmup": args.warmup,
                  "sample_every": args.sample_every, "steps_per_sec": args.steps_per_sec,
                  "hist_every": args.hist_every, "commit_every": args.commit_every}
        r = run_child(__file__, params, child_env(hub, Path(tmp, "hf_home")), timeout=args.duration + 600)
        hub.clear_faults()
        stats = hub.stats
        scalars, histograms = read_run(hub, repo_id, f"tensorboard/{logdir.name}")

    rows = [[f"{s['t']:.0f}", f"{s['rss_mib']:.1f}", f"{s['threads']} ({s['py_threads']})", s["commits"]]
            for s in [*r["samples"], r["end"]]]
    print(format_table(["t (s)", "RSS MiB", "threads", "commits so far"], rows))
    start, end = r["samples"][0], r["end"]
    growth = end["rss_mib"] / start["rss_mib"] - 1
    arrived, detail = check_run(scalars, histograms, r["steps"], r["histograms"])
    counts = r["counts"]
    print()
    print(format_table(["measure", "value"], [
        ["events logged", f"{r['steps'] * len(SCALAR_TAGS) + r['histograms']:,} ({r['steps']:,} steps, "
                          f"{r['histograms']} histograms)"],
        ["commits (server / seen by the writer)", f"{stats.commits} / {counts['commits']}"],
        ["our retries (hf_summary.upload.retry warnings)", counts["our retries"]],
        ["failed pushes (after retries)", counts["failed pushes"]],
        ["huggingface_hub client retries", counts["client retries"]],
        ["faults injected / requests", f"{stats.faults_injected} / {stats.requests}"],
        ["bytes logged", f"{r['logged_bytes'] / 1e6:.2f} MB"],
        ["bytes received by the server", f"{stats.bytes_received / 1e6:.2f} MB "
                                         f"({stats.bytes_received / r['logged_bytes']:.2f}x logged)"],
        ["RSS after warm-up -> end", f"{start['rss_mib']:.1f} -> {end['rss_mib']:.1f} MiB ({growth:+.1%})"],
        ["threads: before the writer, after warm-up, end, after close",
         f"{r['threads_before']}, {start['threads']}, {end['threads']}, {r['threads_after_close']} "
         f"(Python threads left: {', '.join(r['left_after_close']) or 'none'})"],
        ["close() (final push)", f"{r['close_seconds']:.1f} s"],
        ["read back", detail],
    ], left=2))

    verdicts = Verdicts()
    verdicts.check(f"RSS growth after warm-up < {MEMORY_TARGET:.0%}", growth < MEMORY_TARGET, f"{growth:+.1%}")
    verdicts.check("constant thread count", start["threads"] == end["threads"],
                   f"{start['threads']} -> {end['threads']}")
    verdicts.check("nothing lost", arrived, detail)
    return verdicts.report()


if __name__ == "__main__":
    sys.exit(main())
