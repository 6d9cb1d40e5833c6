"""Issue 4: bytes sent to the Hub for a given logging workload, ours vs `huggingface_hub.HFSummaryWriter`.

The same workload (scalars, histograms and images) goes through each writer in a child process, against a fresh local
Hub server of its own. It is logged in `--commits` equal chunks, each followed by `scheduler.trigger().result()`, then
the writer is closed as a user would (leaving its `with` block). The server counts every request body byte; the
child reports its peak memory. Both runs are read back from their server with TensorBoard's loader, so a run that
lost data cannot look cheap.

Target: bytes received by the server <= 1.25 x the bytes logged (the event files' final size), for our writer.

    .venv/bin/python benchmarks/bench_upload_bytes.py            # default size, both writers
    .venv/bin/python benchmarks/bench_upload_bytes.py --mb 200   # the full-size workload
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
    median,
    parse_args_or_run_child,
    peak_rss_mib,
    read_run,
    run_child,
)

from hf_summary.testing import LocalHub

TARGET_RATIO = 1.25
STEPS_PER_BLOCK = 100  # a block: 100 steps of 4 scalars, 2 histograms and 1 image
SCALAR_TAGS = ("train/loss", "train/accuracy", "train/lr", "train/grad_norm")
HIST_VALUES = 10_000
IMAGE_SIDE = 192  # random pixels: PNG cannot compress them, so an image costs about 3 x 192 x 192 bytes
CONTESTANTS = {"ours": "hf_summary.HFSummaryWriter", "peer": "huggingface_hub.HFSummaryWriter"}


def scalar_value(tag_index: int, step: int) -> float:
    """A deterministic value per tag and step, so the read-back can be checked exactly."""
    return tag_index + 1.0 / (1.0 + step)


def log_block(writer: Any, block: int, rng: Any) -> int:
    """Log one block of the workload; return its last step."""
    step = block * STEPS_PER_BLOCK
    for step in range(block * STEPS_PER_BLOCK, (block + 1) * STEPS_PER_BLOCK):
        for index, tag in enumerate(SCALAR_TAGS):
            writer.add_scalar(tag, scalar_value(index, step), step)
    writer.add_histogram("weights/layer0", rng.standard_normal(HIST_VALUES), step)
    writer.add_histogram("weights/layer1", rng.standard_normal(HIST_VALUES) * 0.1, step)
    writer.add_image("samples/input", rng.integers(0, 256, (3, IMAGE_SIDE, IMAGE_SIDE), dtype="uint8"), step)
    return step


def block_bytes() -> int:
    """Bytes one block adds to an event file, measured by writing it with plain tensorboardX."""
    import numpy as np
    from tensorboardX import SummaryWriter

    with tempfile.TemporaryDirectory() as tmp:
        empty, full = Path(tmp, "empty"), Path(tmp, "full")
        SummaryWriter(str(empty)).close()
        writer = SummaryWriter(str(full))
        log_block(writer, 0, np.random.default_rng(0))
        writer.close()
        return event_bytes(full) - event_bytes(empty)


# Child: one contestant ------------------------------------------------------------------------------------------------


def make_writer(params: dict[str, Any]) -> Any:
    """The contestant's writer; a long interval, so that only the benchmark's triggers and the close commit."""
    if params["contestant"] == "ours":
        from hf_summary import HFSummaryWriter

        extra = {} if params["max_file_size"] is None else {"max_file_size": params["max_file_size"]}
        return HFSummaryWriter(params["repo_id"], logdir=params["logdir"], commit_every=60, **extra)
    from huggingface_hub import HFSummaryWriter as PeerWriter

    return PeerWriter(params["repo_id"], logdir=params["logdir"], commit_every=60)


def child(params: dict[str, Any]) -> None:
    """Log the workload through one writer, triggering a commit after each chunk; report what it measured."""
    import numpy as np
    import psutil

    rng = np.random.default_rng(0)
    blocks_per_chunk = params["blocks_per_chunk"]
    commit_seconds = []
    started = time.perf_counter()
    with make_writer(params) as writer:
        rss_after_setup = psutil.Process().memory_info().rss / MIB
        last_step = 0
        for chunk in range(params["commits"]):
            for block in range(chunk * blocks_per_chunk, (chunk + 1) * blocks_per_chunk):
                last_step = log_block(writer, block, rng)
            if params["contestant"] == "peer":
                writer.flush()  # the peer's trigger does not flush the writer: a user has to
            t0 = time.perf_counter()
            writer.scheduler.trigger().result()
            commit_seconds.append(time.perf_counter() - t0)
    emit_result({
        "seconds": time.perf_counter() - started,
        "commit_seconds_median": median(commit_seconds),
        "rss_after_setup_mib": rss_after_setup,
        "peak_rss_mib": peak_rss_mib(),
        "logged_bytes": event_bytes(Path(params["logdir"])),
        "last_step": last_step,
    })


# Parent -------------------------------------------------------------------------------------------------------------


def run_contestant(name: str, args: argparse.Namespace, blocks_per_chunk: int, work: Path) -> dict[str, Any]:
    """Run one contestant against a fresh local Hub; return its figures and the read-back check."""
    with LocalHub(root=work / name / "hub") as hub:
        repo_id = f"{hub.user}/bench-upload-{name}"
        logdir = work / name / "run"
        params = {"contestant": name, "repo_id": repo_id, "logdir": str(logdir), "commits": args.commits,
                  "blocks_per_chunk": blocks_per_chunk, "max_file_size": args.max_file_size}
        result = run_child(__file__, params, child_env(hub, work / name / "hf_home"), timeout=args.timeout)
        stats = hub.stats
        uploads = [n for path, n in stats.per_path_uploads.items() if "tfevents" in path]
        result.update(bytes_received=stats.bytes_received, upload_bytes=stats.upload_bytes, commits=stats.commits,
                      requests=stats.requests, event_files=len(uploads), max_uploads=max(uploads, default=0))
        scalars, _ = read_run(hub, repo_id, f"tensorboard/{logdir.name}")
    loss = scalars.get("train/loss", [])
    expected = (result["last_step"], float(_float32(scalar_value(0, result["last_step"]))))
    result["readback_ok"] = bool(loss) and loss[-1] == expected and len(loss) == result["last_step"] + 1
    result["readback"] = f"{len(loss)} loss values, last {loss[-1] if loss else None}, expected {expected}"
    return result


def _float32(value: float) -> float:
    # Event files store scalars as float32: compare with the value rounded the same way.
    import numpy as np

    return float(np.float32(value))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=float, default=200, help="approximate MB (1e6 bytes) of events to log")
    parser.add_argument("--commits", type=int, default=20, help="chunks of the workload, each followed by a commit")
    parser.add_argument("--max-file-size", type=int, default=None,
                        help="our writer's max_file_size (bytes); default: the library's default")
    parser.add_argument("--contestants", default="ours,peer", help=f"comma-separated, from {sorted(CONTESTANTS)}")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds each contestant may take")
    args = parse_args_or_run_child(parser, child)
    if args is None:
        return 0

    per_block = block_bytes()
    blocks_per_chunk = max(1, round(args.mb * 1e6 / args.commits / per_block))
    names = [n.strip() for n in args.contestants.split(",") if n.strip()]
    if args.max_file_size is None:
        from hf_summary.defaults import MAX_FILE_SIZE as DEFAULT_FILE_SIZE

        our_max_file_size = DEFAULT_FILE_SIZE
    else:
        our_max_file_size = args.max_file_size
    print(f"Workload: {args.commits} chunks x {blocks_per_chunk} blocks x {per_block} B/block "
          f"= {args.commits * blocks_per_chunk * per_block / 1e6:.1f} MB of events (--mb {args.mb:g}); a block is "
          f"{STEPS_PER_BLOCK} steps x {len(SCALAR_TAGS)} scalars + 2 histograms ({HIST_VALUES} values) + 1 image "
          f"(3x{IMAGE_SIDE}x{IMAGE_SIDE} random uint8). Our max_file_size: {our_max_file_size / MIB:g} MiB"
          f"{' (library default)' if args.max_file_size is None else ''}.")
    print("Memory: peak RSS of the child process (ru_maxrss), which logs and uploads; 'RSS after setup' is its RSS "
          "once the writer is built (torch, pulled in by tensorboardX, is most of it).\n")

    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-upload-") as tmp:
        for name in names:
            print(f"Running {CONTESTANTS[name]} ...", flush=True)
            results[name] = run_contestant(name, args, blocks_per_chunk, Path(tmp))

    rows = []
    for name, r in results.items():
        logged = r["logged_bytes"]
        rows.append([
            CONTESTANTS[name], f"{logged / 1e6:.1f}", f"{r['bytes_received'] / 1e6:.1f}",
            f"{r['upload_bytes'] / 1e6:.1f}", f"{r['bytes_received'] / logged:.2f}x", r["commits"], r["requests"],
            f"{r['event_files']} / {r['max_uploads']}",
            f"{r['peak_rss_mib']:.0f}", f"{r['peak_rss_mib'] - r['rss_after_setup_mib']:.0f}",
            f"{r['commit_seconds_median']:.2f}", f"{r['seconds']:.0f}", "ok" if r["readback_ok"] else "MISSING",
        ])
    print()
    print(format_table(
        ["writer", "logged MB", "received MB", "upload MB", "recv/logged", "commits", "requests", "files / max sent",
         "peak RSS MiB",
         "peak-setup MiB", "commit s (med)", "total s", "read back"], rows))
    print("'files / max sent': event files in the repo / the most times one of them was uploaded (a file is sent "
          "whole each time it changed).")
    for name, r in results.items():
        print(f"  {name} read back: {r['readback']}")
    if len(results) == 2:
        ours, peer = results["ours"], results["peer"]
        print(f"\nPeer / ours: {peer['bytes_received'] / ours['bytes_received']:.2f}x the bytes received, "
              f"{peer['peak_rss_mib'] / ours['peak_rss_mib']:.2f}x the peak RSS.")

    verdicts = Verdicts()
    if "ours" in results:
        r = results["ours"]
        ratio = r["bytes_received"] / r["logged_bytes"]
        peer_note = ""
        if "peer" in results:
            peer_note = f" (peer: {results['peer']['bytes_received'] / results['peer']['logged_bytes']:.2f}x)"
        verdicts.check(f"ours: bytes received <= {TARGET_RATIO}x bytes logged", ratio <= TARGET_RATIO,
                       f"{ratio:.2f}x{peer_note}")
    for name, r in results.items():
        verdicts.check(f"{name}: every loss value read back from the hub", r["readback_ok"], r["readback"])
    return verdicts.report()


if __name__ == "__main__":
    sys.exit(main())
