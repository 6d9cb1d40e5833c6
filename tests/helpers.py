"""Reading runs back the way TensorBoard does: files downloaded from the Hub, parsed by tensorboard itself; and the
one way tests wait for a condition that has no event or Future of its own to wait on."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from hf_summary.testing import LocalHub

SIZE_GUIDANCE = {"scalars": 0, "histograms": 0, "images": 0, "tensors": 0}  # 0: keep every event

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], *, timeout: float, what: str, interval: float = 0.05) -> T:
    """Call `predicate` until it returns something truthy, and return that; fail the test after `timeout` seconds.

    For conditions that only polling can see (a server's state, a file, another process's table); where an event, a
    pipe or a Future exists, wait on that instead. `timeout` is a bound for a machine under load, never a measure:
    make it generous. The failure names `what` and the predicate's last result.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what} (last result: {result!r:.300})")
        time.sleep(interval)


def download_run(hub: LocalHub, repo_id: str, folder: str, dest: Path, repo_type: str = "model") -> Path:
    """Write the repo's files under `folder` into `dest` (keeping sub-folders) and return `dest`."""
    prefix = folder.rstrip("/") + "/"
    files = {p: b for p, b in hub.repo_files(repo_id, repo_type=repo_type).items() if p.startswith(prefix)}
    assert files, f"nothing under {folder!r} in {repo_id}: {sorted(hub.repo_files(repo_id, repo_type=repo_type))}"
    for path, data in files.items():
        target = dest / path[len(prefix):]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return dest


def accumulate(run_dir: Path) -> EventAccumulator:
    acc = EventAccumulator(str(run_dir), size_guidance=SIZE_GUIDANCE)
    acc.Reload()
    return acc


def scalars(run_dir: Path, tag: str) -> list[tuple[int, float]]:
    return [(e.step, e.value) for e in accumulate(run_dir).Scalars(tag)]


def snapshot_run(repo_id: str, folder: str, dest: Path, repo_type: str = "model") -> Path:
    """Download the run through the real client, as a user would, and return its local folder."""
    from huggingface_hub import snapshot_download

    snapshot_download(repo_id, repo_type=repo_type, local_dir=dest, allow_patterns=[f"{folder}/*", f"{folder}/**"])
    return dest / folder


def xet_client_env(hub: LocalHub, home: Path) -> dict[str, str]:
    """The environment of a child process whose huggingface_hub uploads through Xet to `hub` (it reads
    HF_HUB_DISABLE_XET at import), with an HF_HOME and a shard cache of its own (keyed by the CAS's address)."""
    env = {name: value for name, value in os.environ.items() if name != "HF_HUB_DISABLE_XET"}
    env.update(hub.env(xet=True), HF_HOME=str(home / "hf_home"), HF_XET_CACHE=str(home / "xet_cache"),
               HF_XET_TELEMETRY_ENABLED="0")
    return env
