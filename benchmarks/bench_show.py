"""Issue 31: `hf-summary show` at any size: how soon TensorBoard answers with the last step of every run.

Two logdirs go to a Storage Bucket on a local Hub (Xet on), as tensorboardX writes `add_scalar` (a `file_version`
event, then one event per scalar):

- `run`: one run of `--scalars` (1 million) scalars, 10 tags;
- `sweep`: `--runs` (100) runs of `--run-scalars` (10 000) scalars each, 10 tags.

For each, every contestant is started as a new process and timed from its start until TensorBoard's HTTP API
(`/data/plugin/scalars/scalars_multirun`) answers with the last step of the last tag of every run:

- `show`: `hf-summary show hf://buckets/...` with an empty `HF_HOME` (the mirror is fetched: it is in the time);
- `tb-python`: `tensorboard --logdir <the local logdir> --load_fast=false` (TensorBoard's Python loader);
- `tb-fast`: `tensorboard --logdir <the local logdir> --load_fast=true` (its data server, RustBoard);
- `read_scalars`: `hf_summary.read_scalars("hf://buckets/...")` in a fresh process (the call, fetch included).

`show`, `tb-fast` and `read_scalars` run `--rounds` (3) times, interleaved, and their median is kept; `tb-python`,
which takes a minute a logdir, once. `show`'s RSS (its process and the data server's, sampled every 50 ms) is taken
when the last step appears and at its peak; `show` and `tb-fast` are also timed once on a run of `--big-scalars`
(10 million) scalars, for `show`'s RSS as the data grows.

Then the live view: `show` runs on the `run` bucket while `--pushes` (20) values are pushed to another run of it (one
bucket batch each, the file grown by one record), a random 0.2-1 s apart; for each, the seconds from the push's
return (and from its start) until TensorBoard answers with it.

Targets (issue 31): `show` within 2x of `tb-fast` on both logdirs (goal: 3 s each); the live value at p95 within 5 s.

    .venv/bin/python benchmarks/bench_show.py                          # ~5 min on 2 cores
    .venv/bin/python benchmarks/bench_show.py --big-scalars 0 --skip tb-python   # a quick look, ~1 min
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from _common import (
    MIB,
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

TAGS = 10
WALL = 1_700_000_000.0
BUCKETS = {"run": "local-user/bench-show-run", "sweep": "local-user/bench-show-sweep",
           "big": "local-user/bench-show-big"}
FILE = "events.out.tfevents.1700000000.bench"
TIMEOUT = 600.0  # seconds for a contestant to show every run: the Python loader takes about a minute
TARGET_RATIO = 2.0
GOAL_SECONDS = 3.0
LIVE_P95 = 5.0


def write_run(path: Path, steps: range) -> None:
    """Append the records tensorboardX writes for `add_scalar(f"tag_{i}", value, step)` of every tag at these steps
    (a new file starts with its `file_version` event)."""
    from tensorboard.compat.proto.event_pb2 import Event

    from hf_summary.events.encoding import ScalarEncoder
    from hf_summary.events.records import frame_record

    encoder = ScalarEncoder(lambda tag: tag)
    path.parent.mkdir(parents=True, exist_ok=True)
    batch = [] if path.exists() else [frame_record(Event(wall_time=WALL, file_version="brain.Event:2")
                                                   .SerializeToString())]
    with open(path, "ab") as file:
        for step in steps:
            for tag in range(TAGS):
                batch.append(frame_record(encoder.encode(f"tag_{tag}", ((step * 7 + tag) % 1000) / 1000, step,
                                                         WALL + step * 0.01)))
            if len(batch) >= 200_000:
                file.write(b"".join(batch))
                batch.clear()
        file.write(b"".join(batch))


# ---------------------------------------------------------------------------------------------------- children


def child(params: dict[str, Any]) -> None:
    kind = params["kind"]
    if kind == "upload":
        from huggingface_hub import HfApi

        api = HfApi()
        api.create_bucket(params["bucket"], exist_ok=True)
        logdir = Path(params["logdir"])
        files = [(str(path), f"tensorboard/{path.relative_to(logdir).as_posix()}")
                 for path in sorted(logdir.rglob("*tfevents*"))]
        for start in range(0, len(files), 1000):
            api.batch_bucket_files(params["bucket"], add=files[start:start + 1000])
        emit_result({})
    elif kind == "read_scalars":
        import pandas  # noqa: F401  (imported before the clock starts, as the others' imports are not timed)

        import hf_summary

        start = time.perf_counter()
        frame = hf_summary.read_scalars(f"hf://buckets/{params['bucket']}")
        emit_result({"seconds": time.perf_counter() - start, "scalars": len(frame)})
    elif kind == "live":
        emit_result(live(params))
    else:
        raise ValueError(f"unknown child {kind!r}")


class Served:
    """A process serving TensorBoard, its output read by a thread until it prints a URL."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        import psutil

        self.started = time.monotonic()
        self.process = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.ps = psutil.Process(self.process.pid)
        self.url: str | None = None
        self.lines: list[str] = []
        self._found = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)
            if self.url is None and (match := re.search(r"(http://[^\s]+/)", line)):
                self.url = match.group(1)
                self._found.set()
        self._found.set()

    def wait_url(self) -> str:
        self._found.wait(TIMEOUT)
        if self.url is None:
            raise RuntimeError(f"no URL from {self.process.args}:\n{''.join(self.lines[-30:])}")
        return self.url

    def rss_mib(self) -> float:
        """The process's RSS and its children's (the data server), now."""
        import psutil

        total = 0
        for process in [self.ps, *self.ps.children(recursive=True)]:
            try:
                total += process.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        return total / MIB

    def stop(self) -> None:
        import psutil

        children = self.ps.children(recursive=True) if self.process.poll() is None else []
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for process in children:
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass


def _post(url: str, fields: list[tuple[str, str]]) -> Any:
    request = urllib.request.Request(url, data=urllib.parse.urlencode(fields).encode(), method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def last_steps(url: str, runs: list[str], tag: str) -> dict[str, int]:
    """Each run's last step of `tag`, as TensorBoard answers now (runs it does not know yet are missing)."""
    try:
        answer = _post(url + "data/plugin/scalars/scalars_multirun", [("tag", tag), *(("runs", run) for run in runs)])
    except OSError:
        return {}
    return {run: points[-1][1] for run, points in answer.items() if points}


def time_to_last_step(argv: list[str], env: dict[str, str], runs: list[str], last_step: int) -> dict[str, Any]:
    """Start `argv`, wait until TensorBoard answers with `last_step` of the last tag of every run; the seconds since
    the start, and the RSS (process and children) then and at its peak."""
    served = Served(argv, env)
    try:
        url = served.wait_url()
        tag = f"tag_{TAGS - 1}"
        peak = 0.0
        while True:
            now = time.monotonic()
            if now - served.started > TIMEOUT:
                raise RuntimeError(f"{argv[:4]}: not every run after {TIMEOUT:g} s")
            peak = max(peak, served.rss_mib())
            steps = last_steps(url, runs, tag)
            if len(steps) == len(runs) and all(step == last_step for step in steps.values()):
                seconds = time.monotonic() - served.started
                break
            time.sleep(0.05)
        rss = served.rss_mib()
        return {"seconds": seconds, "rss_mib": rss, "peak_rss_mib": max(peak, rss)}
    finally:
        served.stop()


def live(params: dict[str, Any]) -> dict[str, Any]:
    """`show` on the bucket while values are pushed to another run of it: seconds from each push to TensorBoard."""
    from huggingface_hub import HfApi

    from hf_summary.events.encoding import ScalarEncoder
    from hf_summary.events.records import frame_record

    api, bucket = HfApi(), params["bucket"]
    path = f"tensorboard/live/{FILE}"
    encoder = ScalarEncoder(lambda tag: tag)
    data = bytearray()

    def push(step: int) -> None:
        data.extend(frame_record(encoder.encode("live", step / 10, step, time.time())))
        api.batch_bucket_files(bucket, add=[(bytes(data), path)])

    push(0)
    served = Served([sys.executable, "-m", "hf_summary.cli", "show", f"hf://buckets/{bucket}"], dict(os.environ))
    rng = random.Random(31)
    after, since_start = [], []
    try:
        url = served.wait_url()
        deadline = time.monotonic() + TIMEOUT
        while last_steps(url, ["live"], "live").get("live") != 0:
            if time.monotonic() > deadline:
                raise RuntimeError("the live run never appeared")
            time.sleep(0.05)
        for step in range(1, params["pushes"] + 1):
            time.sleep(rng.uniform(0.2, 1.0))
            started = time.monotonic()
            push(step)
            landed = time.monotonic()
            while last_steps(url, ["live"], "live").get("live") != step:
                if time.monotonic() - landed > 60:
                    raise RuntimeError(f"pushed step {step} not shown after 60 s")
                time.sleep(0.02)
            seen = time.monotonic()
            after.append(seen - landed)
            since_start.append(seen - started)
        return {"after": after, "since_start": since_start, "rss_mib": served.rss_mib()}
    finally:
        served.stop()


# ---------------------------------------------------------------------------------------------------- the parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scalars", type=int, default=1_000_000, help="scalars of the one-run logdir (1 million)")
    parser.add_argument("--runs", type=int, default=100, help="runs of the sweep (100)")
    parser.add_argument("--run-scalars", type=int, default=10_000, help="scalars of each run of the sweep (10 000)")
    parser.add_argument("--big-scalars", type=int, default=10_000_000,
                        help="scalars of the run show's RSS is measured on too (10 million; 0: none)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of show, tb-fast and read_scalars (3)")
    parser.add_argument("--pushes", type=int, default=20, help="values pushed while show runs (20)")
    parser.add_argument("--skip", default="", help="contestants not to run, comma-separated (e.g. tb-python)")
    args = parse_args_or_run_child(parser, child)
    if args is None:
        return 0
    skip = set(filter(None, args.skip.split(",")))
    verdicts = Verdicts()
    with tempfile.TemporaryDirectory(prefix="bench-show-") as tmp, LocalHub(Path(tmp) / "hub", xet=True) as hub:
        root = Path(tmp)
        logdirs = {"run": root / "run", "sweep": root / "sweep"}
        started = time.perf_counter()
        write_run(logdirs["run"] / "big" / FILE, range(args.scalars // TAGS))
        for run in range(args.runs):
            write_run(logdirs["sweep"] / f"run{run:03d}" / FILE, range(args.run_scalars // TAGS))
        shapes = {"run": (["big"], args.scalars // TAGS - 1),
                  "sweep": ([f"run{run:03d}" for run in range(args.runs)], args.run_scalars // TAGS - 1)}
        if args.big_scalars:
            logdirs["big"] = root / "big"
            write_run(logdirs["big"] / "big" / FILE, range(args.big_scalars // TAGS))
            shapes["big"] = (["big"], args.big_scalars // TAGS - 1)
        def env(home: str) -> dict[str, str]:
            """A child's environment: the Hub's, Xet on, a private HF_HOME and Xet cache."""
            variables = child_env(None, root / "home" / home) | hub.env(xet=True)
            variables.pop("HF_HUB_DISABLE_XET", None)
            variables["HF_XET_CACHE"] = str(root / "home" / home / "xet")
            return variables

        for name, logdir in logdirs.items():
            run_child(__file__, {"kind": "upload", "bucket": BUCKETS[name], "logdir": str(logdir)}, env("upload"),
                      timeout=1800)
        print(f"Logdirs written and pushed to buckets in {time.perf_counter() - started:.0f} s: "
              f"run {args.scalars} scalars ({_size(logdirs['run'])}), sweep {args.runs} x {args.run_scalars} "
              f"({_size(logdirs['sweep'])})" + (f", big {args.big_scalars} ({_size(logdirs['big'])})"
                                                if args.big_scalars else "") + "\n", flush=True)

        results: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for name in ("run", "sweep"):
            runs, last = shapes[name]
            for round_number in range(args.rounds):
                for kind in ("show", "tb-fast", "read_scalars", "tb-python"):
                    if kind in skip or (kind == "tb-python" and round_number):
                        continue
                    results.setdefault((name, kind), []).append(
                        _contestant(kind, name, logdirs[name], runs, last, env(f"{name}-{kind}-{round_number}")))
                    print(f"  {name} {kind}: {results[name, kind][-1]['seconds']:.2f} s", flush=True)
        if args.big_scalars:
            runs, last = shapes["big"]
            for kind in ("show", "tb-fast"):
                if kind not in skip:
                    results["big", kind] = [_contestant(kind, "big", logdirs["big"], runs, last, env(f"big-{kind}"))]
                    print(f"  big {kind}: {results['big', kind][-1]['seconds']:.2f} s", flush=True)
        live_result = None
        if args.pushes and "show" not in skip:
            live_result = run_child(__file__, {"kind": "live", "bucket": BUCKETS["run"], "pushes": args.pushes},
                                    env("live"), timeout=1800)
    _report(results, live_result, args, verdicts)
    return verdicts.report()


def _size(logdir: Path) -> str:
    return f"{sum(path.stat().st_size for path in logdir.rglob('*tfevents*')) / MIB:.0f} MiB"


def _contestant(kind: str, name: str, logdir: Path, runs: list[str], last: int, env: dict[str, str]
                ) -> dict[str, Any]:
    if kind == "read_scalars":
        return run_child(__file__, {"kind": "read_scalars", "bucket": BUCKETS[name]}, env, timeout=TIMEOUT)
    if kind == "show":
        argv = [sys.executable, "-m", "hf_summary.cli", "show", f"hf://buckets/{BUCKETS[name]}"]
    else:
        argv = [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", "127.0.0.1",
                "--port", "0", "--load_fast", "true" if kind == "tb-fast" else "false"]
    return time_to_last_step(argv, env, runs, last)


def _report(results: dict[tuple[str, str], list[dict[str, Any]]], live_result: dict[str, Any] | None,
            args: argparse.Namespace, verdicts: Verdicts) -> None:
    def seconds(name: str, kind: str) -> float | None:
        rows = results.get((name, kind))
        return median([row["seconds"] for row in rows]) if rows else None

    print()
    headers = ["logdir", "show hf://buckets/...", "TensorBoard, local, Python loader",
               "TensorBoard, local, --load_fast=true", "read_scalars on the bucket", "show / fast", "show / Python"]
    rows = []
    for name, label in (("run", f"one run, {args.scalars:,} scalars ({TAGS} tags)"),
                        ("sweep", f"a sweep, {args.runs} runs x {args.run_scalars:,} scalars"),
                        ("big", f"one run, {args.big_scalars:,} scalars (one round)")):
        if (name, "show") not in results and (name, "tb-fast") not in results:
            continue
        show, python, fast, read = (seconds(name, kind) for kind in ("show", "tb-python", "tb-fast", "read_scalars"))
        rows.append([label, *(f"{value:.2f} s" if value is not None else "-" for value in (show, python, fast, read)),
                     f"{show / fast:.2f}x" if show and fast else "-",
                     f"{show / python:.3f}x" if show and python else "-"])
        if name == "big":
            continue  # measured for show's memory; no target on its time
        if show and fast:
            verdicts.check(f"{name}: show within {TARGET_RATIO:g}x of TensorBoard's fast loader on a local copy",
                           show <= TARGET_RATIO * fast, f"{show:.2f} s vs {fast:.2f} s = {show / fast:.2f}x")
        if show:
            verdicts.check(f"{name}: show on screen within {GOAL_SECONDS:g} s (goal)", show <= GOAL_SECONDS,
                           f"{show:.2f} s")
    print(format_table(headers, rows))
    print("\n(seconds from the process's start until TensorBoard answers with the last step of every run; show "
          "starts with an empty mirror; medians of", args.rounds, "rounds, the Python loader one round;",
          "read_scalars: the call, in a fresh process)")
    memory = [[name, f"{row['seconds']:.2f} s", f"{row['rss_mib']:.0f}", f"{row['peak_rss_mib']:.0f}"]
              for name in ("run", "sweep", "big") for row in results.get((name, "show"), [])[:1]]
    if memory:
        print()
        print(format_table(["show on", "last step after", "RSS MiB then (show + data server)", "peak RSS MiB"],
                           memory))
    if live_result is not None:
        after, since_start = live_result["after"], live_result["since_start"]
        print(f"\nLive: {len(after)} values pushed while show ran on the {args.scalars:,}-scalar bucket; seconds until "
              "TensorBoard answered with each:")
        print(format_table(["measured from", "p50", "p95", "max"], [
            ["the push's return", f"{median(after):.2f}", f"{percentile(after, 95):.2f}", f"{max(after):.2f}"],
            ["the push's start", f"{median(since_start):.2f}", f"{percentile(since_start, 95):.2f}",
             f"{max(since_start):.2f}"]]))
        verdicts.check(f"a value pushed while show runs is shown within {LIVE_P95:g} s at p95",
                       percentile(after, 95) <= LIVE_P95, f"p95 {percentile(after, 95):.2f} s")


if __name__ == "__main__":
    sys.exit(main())
