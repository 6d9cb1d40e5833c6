"""A sweep on several machines logging to one repo under the Hub's limits: commits, 429s, freshness, values lost.

`--processes` (N) trials per "machine" times `--groups` (M) machines log to ONE repo of a local Hub that enforces
the Hub's limits: `--hub-limit` (C) commits per repo per hour (`LocalHub(commit_limit=(C, 3600))`), 100 files per
commit, 10 000 entries per folder. A machine is a group of child processes sharing one `HF_HOME` (so our writers'
machine registry and its lock); groups have separate ones, so they only meet on the Hub. Each trial is one child
process with one writer on a logdir of its own; once every child has built its writer, the parent starts them all
together, and each logs `train/loss` every `--log-every-ms` ms for `--duration` (D) s, with `walltime=time.time()`,
then closes its writer (its final push). Contestants, each against a fresh local Hub, one after the other:

- ours: `hf_summary.HFSummaryWriter(repo_id, logdir=..., commit_every=interval / 60,
  max_commits_per_hour=--budget)`;
- peer: `huggingface_hub.HFSummaryWriter(repo_id, logdir=..., commit_every=interval / 60)`, which also pushes a
  model card when built, and has no budget and no retry. A peer trial whose constructor or final push raises is
  reported, not retried (a user's script would stop there).

How freshness is measured (after the run, from the server's own records, so nothing polls during the run):
every commit of the branch is taken oldest first, with its time (the `date` the server stamped it with, ms
precision: the moment its files became downloadable); for each event file the commit changed, the file's content at
that revision (`hub.repo_files(repo_id, revision=commit)`) is parsed record by record, stopping at the first
incomplete record (TensorBoard's reader does the same), and every `train/loss` step found in a complete record that
was not visible before is marked visible at that commit's time. Files only grow, so each file is parsed once,
incrementally; a file whose earlier bytes changed is parsed again from the start. A value's freshness is its
visible time minus its `walltime` (read from the local event file, where the writer stored it exactly as given).
Median and 95th percentile are over every value of every trial that reached the Hub (the count is printed: a writer
that stops committing is measured only on what it got up); the others count as lost.

Values lost: at the end every trial's run is downloaded from the Hub and read with TensorBoard's `EventAccumulator`
(no sampling); a trial is whole when its `train/loss` steps are exactly 0..n-1 with the exact values (float32).

Commits: those the quota counts (`hub.commit_times`, every commit through the commit endpoint); "scheduled" are
those accepted before the first trial began closing, "final" the rest. Per hour: scheduled commits / D x 3600, the
rate during the run (ours stops at the budget once it is spent: a scheduled push then waits for a slot and carries
more). 429s: commits the server refused for the quota (`hub.stats.rate_limited`).

Targets (ours): scheduled commits <= --budget and all commits <= --budget + N x M (one final push per process);
median freshness <= one interval; no value lost. Ratios: peer / ours in the same run. Keep C >= budget + N x M, or
final pushes meet 429s by design.

    .venv/bin/python benchmarks/bench_sweep.py                      # N=4, M=2, 3 s interval, 30 s: ~2-3 min
    .venv/bin/python benchmarks/bench_sweep.py --processes 8 --groups 4 --duration 120 --budget 40 --hub-limit 80
"""

from __future__ import annotations

import argparse
import json
import logging
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import _common
from _common import (
    CHILD_FLAG,
    Verdicts,
    child_env,
    emit_result,
    format_table,
    median,
    parse_args_or_run_child,
    percentile,
    read_run,
)

from hf_summary.testing import LocalHub

TAG = "train/loss"
PATH_IN_REPO = "tensorboard"
CONTESTANTS = {"ours": "hf_summary.HFSummaryWriter", "peer": "huggingface_hub.HFSummaryWriter"}
GO = "go"


def scalar_value(trial: int, step: int) -> float:
    """A deterministic value per trial and step, so the read-back can be checked exactly."""
    return trial + 1.0 / (1.0 + step)


def _float32(value: float) -> float:
    # Event files store scalars as float32: compare with the value rounded the same way.
    return struct.unpack("<f", struct.pack("<f", value))[0]


# Child: one trial -----------------------------------------------------------------------------------------------------


def make_writer(params: dict[str, Any]) -> Any:
    minutes = params["interval"] / 60
    if params["contestant"] == "ours":
        from hf_summary import HFSummaryWriter

        return HFSummaryWriter(params["repo_id"], logdir=params["logdir"], commit_every=minutes,
                               max_commits_per_hour=params["budget"])
    from huggingface_hub import HFSummaryWriter as PeerWriter

    return PeerWriter(params["repo_id"], logdir=params["logdir"], commit_every=minutes)


def describe(error: BaseException) -> str:
    """The error's type, HTTP status if any, and first line."""
    response = getattr(error, "response", None)
    status = f" HTTP {response.status_code}" if getattr(response, "status_code", None) else ""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}{status}: {text[0] if text else ''}"


class BudgetWaits(logging.Handler):
    """Counts our repo target's "made N commits in the last hour (budget B)" records: pushes held back."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "(budget" in record.getMessage():
            self.count += 1


def child(params: dict[str, Any]) -> None:
    """Build the writer, say ready, wait for the parent's go, log for the duration, close; report."""
    waits = BudgetWaits()
    budget_log = logging.getLogger("hf_summary.upload.targets.repo")
    budget_log.addHandler(waits)
    budget_log.setLevel(logging.INFO)
    t0 = time.monotonic()
    init_error = None
    try:
        writer = make_writer(params)
    except Exception as error:  # the peer's constructor pushes a model card: it can meet the quota
        writer, init_error = None, describe(error)
    init_seconds = time.monotonic() - t0
    print("ready", flush=True)
    sys.stdin.readline()  # the go line
    steps, close_error, close_start, close_end = 0, None, time.time(), time.time()
    if writer is not None:
        trial, pause = params["trial"], params["log_every_ms"] / 1000
        end = time.monotonic() + params["duration"]
        while time.monotonic() < end:
            writer.add_scalar(TAG, scalar_value(trial, steps), steps, walltime=time.time())
            steps += 1
            time.sleep(pause)
        close_start = time.time()
        try:
            writer.__exit__(None, None, None)  # as leaving a `with` block: close and final push
        except Exception as error:
            close_error = describe(error)
        close_end = time.time()
    emit_result({"steps": steps, "init_seconds": init_seconds, "init_error": init_error,
                 "close_start": close_start, "close_end": close_end, "close_error": close_error,
                 "budget_waits": waits.count})


# Parent: run the sweep -----------------------------------------------------------------------------------------------


@dataclass
class Trial:
    index: int
    group: int
    name: str  # the logdir's name, hence the run folder in the repo
    logdir: Path
    proc: subprocess.Popen[str] | None = None
    stderr_path: Path | None = None
    result: dict[str, Any] = field(default_factory=dict)


def _wait_ready(trial: Trial) -> None:
    """Block until the child says it built its writer; a child that died first gives EOF."""
    assert trial.proc is not None and trial.proc.stdout is not None
    if not trial.proc.stdout.readline():
        assert trial.stderr_path is not None
        tail = "\n".join(trial.stderr_path.read_text().strip().splitlines()[-30:])
        raise RuntimeError(f"trial {trial.name} ended before it was ready (exit {trial.proc.wait()}):\n{tail}")


def run_sweep(
    name: str, hub: LocalHub, repo_id: str, args: argparse.Namespace, work: Path
) -> tuple[list[Trial], float]:
    """Start N x M children, start them logging together, wait for them all; return the trials and the go time."""
    trials = []
    for group in range(args.groups):
        env = child_env(hub, work / f"hf_home-{group}")  # one HF_HOME per machine, shared by its processes
        for p in range(args.processes):
            index = group * args.processes + p
            trial = Trial(index, group, f"m{group}-p{p}", work / "runs" / f"m{group}-p{p}")
            params = {"contestant": name, "repo_id": repo_id, "logdir": str(trial.logdir), "trial": index,
                      "interval": args.interval, "budget": args.budget, "duration": args.duration,
                      "log_every_ms": args.log_every_ms}
            trial.stderr_path = work / f"{trial.name}.stderr"
            with trial.stderr_path.open("w") as err:
                trial.proc = subprocess.Popen([sys.executable, __file__, CHILD_FLAG, json.dumps(params)],
                                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True,
                                              env=env)
            trials.append(trial)
    try:
        for trial in trials:
            _wait_ready(trial)
        go_time = time.time()
        deadline = time.monotonic() + args.timeout
        for trial in trials:
            assert trial.proc is not None and trial.proc.stdin is not None
            trial.proc.stdin.write(GO + "\n")
            trial.proc.stdin.flush()
        for trial in trials:
            assert trial.proc is not None and trial.proc.stdout is not None
            out, _ = trial.proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
            lines = [ln for ln in out.splitlines() if ln.startswith(_common._RESULT_PREFIX)]
            if trial.proc.returncode != 0 or not lines:
                assert trial.stderr_path is not None
                tail = "\n".join(trial.stderr_path.read_text().strip().splitlines()[-30:])
                raise RuntimeError(f"{name} trial {trial.name} exited with {trial.proc.returncode}:\n{tail}")
            trial.result = json.loads(lines[-1][len(_common._RESULT_PREFIX):])
    finally:
        for trial in trials:
            if trial.proc is not None and trial.proc.poll() is None:
                trial.proc.kill()
                trial.proc.wait()
    return trials, go_time


# Parent: what reached the Hub, and when -----------------------------------------------------------------------------


def _parse_date(date: str) -> float:
    return datetime.strptime(date, "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()


def complete_records(data: bytes, offset: int) -> tuple[list[bytes], int]:
    """The records of a TFRecord file that are complete from `offset` on, and the offset after the last of them.

    A record: 8-byte length, 4-byte length CRC, the data, 4-byte data CRC. A file uploaded while its writer was
    writing may end in a partial record; it is not visible (TensorBoard stops there) until a later version has it.
    """
    records = []
    while offset + 12 <= len(data):
        (length,) = struct.unpack_from("<Q", data, offset)
        end = offset + 12 + length + 4
        if end > len(data):
            break
        records.append(data[offset + 12: offset + 12 + length])
        offset = end
    return records, offset


def loss_steps(records: list[bytes]) -> list[int]:
    from tensorboard.compat.proto.event_pb2 import Event

    steps = []
    for raw in records:
        event = Event.FromString(raw)
        if event.HasField("summary") and any(v.tag == TAG for v in event.summary.value):
            steps.append(event.step)
    return steps


@dataclass
class CommitRecord:
    time: float
    files: int
    new_values: int  # values this commit made visible for the first time


def first_visible(hub: LocalHub, repo_id: str, trials: list[Trial]) -> tuple[dict[str, dict[int, float]],
                                                                               list[CommitRecord]]:
    """For each trial, the time each step was first visible on the Hub's branch; and what each commit showed."""
    by_folder = {f"{PATH_IN_REPO}/{t.name}/": t.name for t in trials}
    visible: dict[str, dict[int, float]] = {t.name: {} for t in trials}
    parsed: dict[str, tuple[bytes, int]] = {}  # path -> (content parsed so far, offset after its complete records)
    records = []
    for commit in reversed(hub.commits(repo_id)):  # oldest first
        when = _parse_date(commit["date"])
        changed = [p for p in commit["files"] if "tfevents" in p and any(p.startswith(f) for f in by_folder)]
        new = 0
        if changed:
            files = hub.repo_files(repo_id, revision=commit["id"])
            for path in changed:
                if path not in files:
                    continue
                data = files[path]
                before, offset = parsed.get(path, (b"", 0))
                if not data.startswith(before[:offset]):
                    offset = 0  # rewritten, not appended to: read it again from the start
                recs, offset = complete_records(data, offset)
                parsed[path] = (data, offset)
                trial = by_folder[next(f for f in by_folder if path.startswith(f))]
                for step in loss_steps(recs):
                    if step not in visible[trial]:
                        visible[trial][step] = when
                        new += 1
        records.append(CommitRecord(when, len(commit["files"]), new))
    return visible, records


def local_walltimes(logdir: Path) -> dict[int, float]:
    """Step -> walltime of every `train/loss` value in the trial's local event files (exactly as logged)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0})
    acc.Reload()
    if TAG not in acc.Tags()["scalars"]:
        return {}
    return {e.step: e.wall_time for e in acc.Scalars(TAG)}


def analyse(name: str, hub: LocalHub, repo_id: str, trials: list[Trial], go_time: float,
            args: argparse.Namespace) -> dict[str, Any]:
    stats = hub.stats
    commit_times = hub.commit_times(repo_id) if hub.repo_exists(repo_id) else []
    started = [t for t in trials if t.result["init_error"] is None]
    close_start = min((t.result["close_start"] for t in started), default=float("inf"))
    scheduled = [c for c in commit_times if c < close_start]
    visible, per_commit = first_visible(hub, repo_id, trials) if hub.repo_exists(repo_id) else ({}, [])

    freshness, lost, whole, logged = [], 0, 0, 0
    for trial in started:
        n = trial.result["steps"]
        logged += n
        walltimes = local_walltimes(trial.logdir)
        seen = visible.get(trial.name, {})
        for step, wall in walltimes.items():
            if step in seen:
                freshness.append(seen[step] - wall)
        try:
            scalars, _ = read_run(hub, repo_id, f"{PATH_IN_REPO}/{trial.name}")
            on_hub = scalars.get(TAG, [])
        except (RuntimeError, KeyError):
            on_hub = []
        expected = [(s, _float32(scalar_value(trial.index, s))) for s in range(n)]
        if on_hub == expected:
            whole += 1
        lost += n - len(set(on_hub) & set(expected))
    errors = [f"{t.name}: init {t.result['init_error']}" for t in trials if t.result["init_error"]]
    errors += [f"{t.name}: close {t.result['close_error']}" for t in trials if t.result["close_error"]]
    return {
        "name": name, "trials": len(trials), "started": len(started), "whole": whole, "logged": logged, "lost": lost,
        "commits": len(commit_times), "scheduled": len(scheduled), "final": len(commit_times) - len(scheduled),
        "per_hour": len(scheduled) / args.duration * 3600, "rate_limited": stats.rate_limited,
        "requests": stats.requests, "limit_rejections": stats.limit_rejections,
        "fresh_median": median(freshness) if freshness else float("nan"),
        "fresh_p95": percentile(freshness, 95) if freshness else float("nan"),
        "fresh_max": max(freshness, default=float("nan")), "fresh_n": len(freshness),
        "budget_waits": sum(t.result["budget_waits"] for t in trials),
        "init_median": median([t.result["init_seconds"] for t in trials]),
        "close_max": max((t.result["close_end"] - t.result["close_start"] for t in started), default=0.0),
        "errors": errors,
        "timeline": [(round(c.time - go_time, 1), c.new_values) for c in per_commit],
    }


def run_contestant(name: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    limits = {"commit_limit": (args.hub_limit, 3600.0), "max_files_per_commit": 100, "max_folder_entries": 10_000}
    with LocalHub(root=work / "hub", **limits) as hub:
        repo_id = f"{hub.user}/bench-sweep-{name}"
        trials, go_time = run_sweep(name, hub, repo_id, args, work)
        return analyse(name, hub, repo_id, trials, go_time, args)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, default=4, help="N: trials (processes) per machine")
    parser.add_argument("--groups", type=int, default=2, help="M: machines, each with its own HF_HOME")
    parser.add_argument("--interval", type=float, default=3.0, help="seconds between scheduled pushes (commit_every)")
    parser.add_argument("--duration", type=float, default=30.0, help="D: seconds each trial logs")
    parser.add_argument("--log-every-ms", type=float, default=5.0, help="pause between two scalars of a trial")
    parser.add_argument("--budget", type=int, default=24, help="our max_commits_per_hour")
    parser.add_argument("--hub-limit", type=int, default=40, help="C: commits per repo per hour the Hub accepts")
    parser.add_argument("--contestants", default="ours,peer", help=f"comma-separated, from {sorted(CONTESTANTS)}")
    parser.add_argument("--timeout", type=float, default=600, help="seconds a contestant's sweep may take")
    args = parse_args_or_run_child(parser, child)
    if args is None:
        return 0

    n_proc = args.processes * args.groups
    print(f"Sweep: {args.groups} machines x {args.processes} processes = {n_proc} trials, one repo; each logs "
          f"{TAG} every {args.log_every_ms:g} ms for {args.duration:g} s, commit interval {args.interval:g} s. "
          f"Hub: {args.hub_limit} commits/repo/hour, 100 files/commit, 10 000 entries/folder. "
          f"Our max_commits_per_hour: {args.budget}.")
    if args.hub_limit < args.budget + n_proc:
        print(f"Note: --hub-limit {args.hub_limit} < budget + trials ({args.budget + n_proc}): final pushes may meet "
              "the quota.")
    print()
    names = [n.strip() for n in args.contestants.split(",") if n.strip()]
    results: dict[str, dict[str, Any]] = {}
    for name in names:
        print(f"Running {CONTESTANTS[name]} ...", flush=True)
        with tempfile.TemporaryDirectory(prefix=f"bench-sweep-{name}-") as tmp:
            started = time.monotonic()
            results[name] = run_contestant(name, args, Path(tmp))
            results[name]["seconds"] = time.monotonic() - started

    rows = []
    for name, r in results.items():
        rows.append([
            CONTESTANTS[name], f"{r['started']}/{r['trials']}", r["logged"],
            f"{r['commits']} ({r['scheduled']} + {r['final']})", f"{r['per_hour']:.0f}", r["rate_limited"],
            r["budget_waits"] if name == "ours" else "-", f"{r['fresh_median']:.2f}", f"{r['fresh_p95']:.2f}",
            f"{r['fresh_max']:.2f}", r["lost"], f"{r['whole']}/{r['started']}", f"{r['init_median']:.1f}",
            f"{r['close_max']:.1f}", f"{r['seconds']:.0f}",
        ])
    print()
    print(format_table(["writer", "trials up", "values logged", "commits (sched + final)", "sched/h", "429s",
                        "budget waits", "fresh med s", "fresh p95 s", "fresh max s", "values lost", "runs whole",
                        "init s (med)", "close s (max)", "total s"], rows))
    print("commits: what the quota counts (hub.commit_times); sched: before the first trial began closing; sched/h: "
          "scheduled commits / duration x 3600;\nbudget waits: scheduled pushes our writers held back because the "
          "budget was spent; fresh: add_scalar walltime -> first commit showing the value.")
    for name, r in results.items():
        timeline = " ".join(f"{t:g}s:{n}" for t, n in r["timeline"])
        print(f"  {name} commits (s after go : values first shown): {timeline}")
        for error in r["errors"][:8]:
            print(f"  {name} {error}")
        if len(r["errors"]) > 8:
            print(f"  {name} ... {len(r['errors']) - 8} more errors")
    if "ours" in results and "peer" in results:
        ours, peer = results["ours"], results["peer"]
        print(f"\nPeer / ours: {peer['commits'] / max(1, ours['commits']):.2f}x the commits, "
              f"{peer['fresh_median'] / ours['fresh_median']:.2f}x the median freshness, "
              f"{peer['fresh_p95'] / ours['fresh_p95']:.2f}x the p95; 429s {peer['rate_limited']} vs "
              f"{ours['rate_limited']}, values lost {peer['lost']} vs {ours['lost']}. Freshness is over the values "
              f"that reached the Hub: ours {ours['fresh_n']} of {ours['logged']}, peer {peer['fresh_n']} of "
              f"{peer['logged']}.")

    verdicts = Verdicts()
    if "ours" in results:
        r = results["ours"]
        verdicts.check(f"ours: scheduled commits <= budget ({args.budget})", r["scheduled"] <= args.budget,
                       f"{r['scheduled']}")
        cap = args.budget + n_proc
        verdicts.check(f"ours: all commits <= budget + one final push per process ({cap})", r["commits"] <= cap,
                       f"{r['commits']} ({r['final']} final)")
        verdicts.check(f"ours: median freshness <= one interval ({args.interval:g} s)",
                       r["fresh_median"] <= args.interval, f"{r['fresh_median']:.2f} s (p95 {r['fresh_p95']:.2f} s)")
        verdicts.check("ours: values lost == 0", r["lost"] == 0 and r["whole"] == r["trials"],
                       f"{r['lost']} lost, {r['whole']}/{r['trials']} runs whole")
    return verdicts.report()


if __name__ == "__main__":
    sys.exit(main())
