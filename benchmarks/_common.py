"""Shared helpers of the benchmarks: child processes pointed at a local Hub, reading runs back, tables, verdicts.

Every measured contestant runs in a child process of its own. huggingface_hub reads `HF_ENDPOINT` once, when it is
imported, so a fresh process is the only way to point two contestants at two different servers; it also gives each
contestant its own peak memory figure and keeps one contestant's threads from slowing another.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hf_summary.testing import LocalHub

CHILD_FLAG = "--child"
_RESULT_PREFIX = "BENCH-RESULT "
MIB = 1024 * 1024


def child_env(hub: LocalHub | None, home: Path) -> dict[str, str]:
    """The environment of a child process: the parent's, pointed at `hub`, with a private `HF_HOME`."""
    env = {**os.environ, "HF_HOME": str(home), "HF_HUB_DISABLE_PROGRESS_BARS": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("HF_HUB_OFFLINE", None)
    if hub is not None:
        env.update(hub.env())
    return env


def run_child(script: str | Path, params: dict[str, Any], env: dict[str, str], timeout: float,
              prefix: Sequence[str] = ()) -> dict[str, Any]:
    """Run `script --child <params as JSON>` (after `prefix`, a command such as valgrind's) and return the dict the
    child passed to `emit_result`.

    Raises:
        RuntimeError: the child failed or reported nothing; the message holds the end of its stderr.
    """
    proc = subprocess.run(
        [*prefix, sys.executable, str(script), CHILD_FLAG, json.dumps(params)],
        env=env, capture_output=True, text=True, timeout=timeout,
    )
    results = [line[len(_RESULT_PREFIX):] for line in proc.stdout.splitlines() if line.startswith(_RESULT_PREFIX)]
    if proc.returncode != 0 or not results:
        tail = "\n".join(proc.stderr.strip().splitlines()[-30:])
        raise RuntimeError(f"child {params} exited with {proc.returncode}:\n{tail}")
    return json.loads(results[-1])


def parse_args_or_run_child(
    parser: argparse.ArgumentParser, child: Callable[[dict[str, Any]], None]
) -> argparse.Namespace | None:
    """Child side of `run_child`'s command line: parse the script's arguments, or, when started as a child by
    `run_child`, run `child` with its parameters and return None (the script then exits 0).
    """
    parser.add_argument(CHILD_FLAG, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(json.loads(args.child))
        return None
    return args


def emit_result(result: dict[str, Any]) -> None:
    """Child side of `run_child`: hand the measurements to the parent on stdout."""
    print(_RESULT_PREFIX + json.dumps(result), flush=True)


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far (Linux reports `ru_maxrss` in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def event_bytes(logdir: Path) -> int:
    """Bytes of all event files under `logdir` (the upload state folder is not logged data)."""
    return sum(p.stat().st_size for p in logdir.rglob("*") if p.is_file() and "tfevents" in p.name)


def download_run(hub: LocalHub, repo_id: str, folder: str, dest: Path) -> Path:
    """Write the repo's files under `folder` to `dest`, keeping sub-folders, and return `dest`.

    Raises:
        RuntimeError: the repo holds nothing under `folder`.
    """
    prefix = folder.rstrip("/") + "/"
    files = {path: data for path, data in hub.repo_files(repo_id).items() if path.startswith(prefix)}
    if not files:
        raise RuntimeError(f"nothing under {folder!r} in {repo_id}")
    for path, data in files.items():
        target = dest / path[len(prefix):]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return dest


def read_run(hub: LocalHub, repo_id: str, folder: str) -> tuple[dict[str, list[tuple[int, float]]], dict[str, int]]:
    """The run stored in `folder` of the repo, read by TensorBoard's own loader.

    Returns:
        Every scalar as (step, value) per tag, and the number of histograms per tag.
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with tempfile.TemporaryDirectory(prefix="bench-readback-") as tmp:
        run = download_run(hub, repo_id, folder, Path(tmp))
        # 0 keeps every event: the default guidance samples them, which would hide missing values.
        acc = EventAccumulator(str(run), size_guidance={"scalars": 0, "histograms": 0, "images": 1, "tensors": 1})
        acc.Reload()
        tags = acc.Tags()
        scalars = {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in tags["scalars"]}
        return scalars, {tag: len(acc.Histograms(tag)) for tag in tags["histograms"]}


def percentile(values: Sequence[float], q: float) -> float:
    """The `q`-th percentile (0-100) by nearest rank; enough for latency tails of thousands of samples."""
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))
    return ordered[index]


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], left: int = 1) -> str:
    """A plain-text table: the first `left` columns left-aligned (labels), the others right-aligned (numbers)."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        cells = zip(row, widths, strict=True)
        return "  ".join(c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(cells)).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule, *(line(row) for row in cells[1:])])


class Verdicts:
    """PASS/FAIL lines for a script's targets, and the exit code they imply."""

    def __init__(self) -> None:
        self._results: list[tuple[str, bool, str]] = []

    def check(self, target: str, ok: bool, measured: str) -> None:
        self._results.append((target, ok, measured))

    def report(self) -> int:
        """Print one line per target and return the process exit code (1 if any target was missed)."""
        print("\nTargets:")
        for target, ok, measured in self._results:
            print(f"  {'PASS' if ok else 'FAIL'}  {target}: {measured}")
        return 0 if all(ok for _, ok, _ in self._results) else 1
