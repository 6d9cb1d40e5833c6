"""Issue 4: bytes sent to the Hub for a given logging workload, ours vs `huggingface_hub.HFSummaryWriter`, on the
Xet path (every user's client) and on the legacy LFS path (HF_HUB_DISABLE_XET=1).

The same workload (scalars, histograms and images) goes through each writer in a child process, against a fresh local
Hub server of its own (speaking Xet or not, as the child's client), with a Xet cache of its own. It is logged in
`--commits` equal chunks, each followed by `scheduler.trigger().result()`, then the writer is closed as a user would
(leaving its `with` block). The server counts every request body byte (xorbs, shards, LFS uploads, commits and every
other request); the child reports its peak memory. Every run is read back from its server with TensorBoard's loader,
so a run that lost data cannot look cheap.

Contestants: `ours` (Xet), `ours-lfs` (Xet off), `peer` (huggingface_hub's writer, Xet on: its file objects make
huggingface_hub fall back to legacy LFS) and `peer-lfs`. `--roll-sizes 1,4,16` adds runs of ours on the Xet path with
those `max_file_size` values (MiB), to choose the default from.

Targets, for our writer with its default roll size: bytes received by the server <= 1.25 x the bytes logged (the
event files' final size) on either path, and <= 1.05 x on the Xet path.

    .venv/bin/python benchmarks/bench_upload_bytes.py                       # ours (Xet), ours-lfs, peer
    .venv/bin/python benchmarks/bench_upload_bytes.py --roll-sizes 1,4,16,32 --contestants ours
"""

from __future__ import annotations

import argparse
import re
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
XET_TARGET_RATIO = 1.05  # with Xet a push re-sends only the new chunks of the file still growing
STEPS_PER_BLOCK = 100  # a block: 100 steps of 4 scalars, 2 histograms and 1 image
SCALAR_TAGS = ("train/loss", "train/accuracy", "train/lr", "train/grad_norm")
HIST_VALUES = 10_000
IMAGE_SIDE = 192  # random pixels: PNG cannot compress them, so an image costs about 3 x 192 x 192 bytes
# name -> (writer, whether the client and the server use Xet)
CONTESTANTS = {"ours": ("hf_summary", True), "ours-lfs": ("hf_summary", False),
               "peer": ("huggingface_hub", True), "peer-lfs": ("huggingface_hub", False)}


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
    if params["writer"] == "hf_summary":
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
            if params["writer"] == "huggingface_hub":
                writer.flush()  # the peer's trigger does not flush the writer: a user has to
            t0 = time.perf_counter()
            writer.scheduler.trigger().result()
            commit_seconds.append(time.perf_counter() - t0)
    from huggingface_hub.utils._runtime import is_xet_available

    emit_result({
        "xet_client": is_xet_available(),
        "seconds": time.perf_counter() - started,
        "commit_seconds_median": median(commit_seconds),
        "rss_after_setup_mib": rss_after_setup,
        "peak_rss_mib": peak_rss_mib(),
        "logged_bytes": event_bytes(Path(params["logdir"])),
        "last_step": last_step,
    })


# Parent -------------------------------------------------------------------------------------------------------------


def run_contestant(label: str, name: str, max_file_size: int | None, args: argparse.Namespace,
                   blocks_per_chunk: int, work: Path) -> dict[str, Any]:
    """Run one contestant against a fresh local Hub; return its figures and the read-back check."""
    writer, xet = CONTESTANTS[name]
    folder = work / re.sub(r"[^A-Za-z0-9]+", "-", label).strip("-")
    with LocalHub(root=folder / "hub", xet=xet) as hub:
        repo_id = f"{hub.user}/bench-upload-{folder.name}"
        logdir = folder / "run"
        params = {"writer": writer, "repo_id": repo_id, "logdir": str(logdir), "commits": args.commits,
                  "blocks_per_chunk": blocks_per_chunk, "max_file_size": max_file_size}
        env = child_env(hub, folder / "hf_home")
        env.pop("HF_HUB_DISABLE_XET", None)
        env.update(hub.env(xet=xet), HF_XET_CACHE=str(folder / "xet_cache"))  # a fresh machine's cache
        result = run_child(__file__, params, env, timeout=args.timeout)
        stats = hub.stats
        uploads = [n for path, n in stats.per_path_uploads.items() if "tfevents" in path]
        result.update(bytes_received=stats.bytes_received, upload_bytes=stats.upload_bytes, commits=stats.commits,
                      requests=stats.requests, event_files=len(uploads), max_uploads=max(uploads, default=0),
                      lfs_uploads=stats.lfs_uploads, xet_xorbs=stats.xet_xorbs,
                      xet_xorb_bytes=stats.xet_xorb_bytes, xet_shards=stats.xet_shards)
        scalars, _ = read_run(hub, repo_id, f"tensorboard/{logdir.name}")
    if result["xet_client"] != xet:
        raise RuntimeError(f"{label}: the child's client {'used' if result['xet_client'] else 'did not use'} Xet")
    loss = scalars.get("train/loss", [])
    expected = (result["last_step"], float(_float32(scalar_value(0, result["last_step"]))))
    result["readback_ok"] = bool(loss) and loss[-1] == expected and len(loss) == result["last_step"] + 1
    result["readback"] = f"{len(loss)} loss values, last {loss[-1] if loss else None}, expected {expected}"
    result.update(name=name, xet=xet, max_file_size=max_file_size)
    return result


def files_for(total_bytes: float, roll_size: int) -> int:
    """Event files in one run folder after logging `total_bytes` with this base roll size: the size at which the
    file rolls doubles each time the folder holds another `FILES_PER_ROLL_DOUBLING` files (hf_summary.events)."""
    from hf_summary.events.queue import FILES_PER_ROLL_DOUBLING

    files, left = 0, total_bytes
    while left > 0:
        size = roll_size << (files // FILES_PER_ROLL_DOUBLING)
        batch = min(FILES_PER_ROLL_DOUBLING - files % FILES_PER_ROLL_DOUBLING, -(-int(left) // size))
        files += batch
        left -= batch * size
    return files


def _float32(value: float) -> float:
    # Event files store scalars as float32: compare with the value rounded the same way.
    import numpy as np

    return float(np.float32(value))


def our_default_size(xet: bool) -> int:
    """Our writer's roll size when `max_file_size` is not given, on each path."""
    from hf_summary import defaults

    return int(getattr(defaults, "MAX_FILE_SIZE_XET", defaults.MAX_FILE_SIZE) if xet else defaults.MAX_FILE_SIZE)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=float, default=200, help="approximate MB (1e6 bytes) of events to log")
    parser.add_argument("--commits", type=int, default=20, help="chunks of the workload, each followed by a commit")
    parser.add_argument("--max-file-size", type=int, default=None,
                        help="our writer's max_file_size (bytes); default: the library's default for the path")
    parser.add_argument("--contestants", default="ours,ours-lfs,peer",
                        help=f"comma-separated, from {sorted(CONTESTANTS)}")
    parser.add_argument("--roll-sizes", default="",
                        help="comma-separated max_file_size values in MiB: extra runs of ours on the Xet path")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds each contestant may take")
    args = parse_args_or_run_child(parser, child)
    if args is None:
        return 0

    per_block = block_bytes()
    blocks_per_chunk = max(1, round(args.mb * 1e6 / args.commits / per_block))
    names = [n.strip() for n in args.contestants.split(",") if n.strip()]
    unknown = sorted(set(names) - set(CONTESTANTS))
    if unknown:
        parser.error(f"unknown contestants {unknown}; choose from {sorted(CONTESTANTS)}")
    runs: list[tuple[str, str, int | None]] = [(name, name, args.max_file_size) for name in names]
    for mib in (float(v) for v in args.roll_sizes.split(",") if v.strip()):
        runs.append((f"ours roll {mib:g} MiB", "ours", int(mib * MIB)))
    print(f"Workload: {args.commits} chunks x {blocks_per_chunk} blocks x {per_block} B/block "
          f"= {args.commits * blocks_per_chunk * per_block / 1e6:.1f} MB of events (--mb {args.mb:g}); a block is "
          f"{STEPS_PER_BLOCK} steps x {len(SCALAR_TAGS)} scalars + 2 histograms ({HIST_VALUES} values) + 1 image "
          f"(3x{IMAGE_SIDE}x{IMAGE_SIDE} random uint8). Our default max_file_size: "
          f"{our_default_size(True) / MIB:g} MiB with Xet, {our_default_size(False) / MIB:g} MiB without"
          f"{'' if args.max_file_size is None else f'; this run: {args.max_file_size / MIB:g} MiB'}.")
    print("Memory: peak RSS of the child process (ru_maxrss), which logs and uploads; 'RSS after setup' is its RSS "
          "once the writer is built (torch, pulled in by tensorboardX, is most of it).\n")

    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-upload-") as tmp:
        for label, name, size in runs:
            writer, xet = CONTESTANTS[name]
            print(f"Running {label}: {writer}.HFSummaryWriter, Xet {'on' if xet else 'off'} ...", flush=True)
            results[label] = run_contestant(label, name, size, args, blocks_per_chunk, Path(tmp))

    rows = []
    for label, r in results.items():
        logged = r["logged_bytes"]
        writer, xet = CONTESTANTS[r["name"]]
        roll = r["max_file_size"] if r["max_file_size"] is not None else our_default_size(xet)
        rows.append([
            label, "on" if xet else "off", f"{roll / MIB:g}" if writer == "hf_summary" else "-",
            f"{logged / 1e6:.1f}", f"{r['bytes_received'] / 1e6:.1f}", f"{r['bytes_received'] / logged:.3f}x",
            f"{r['xet_xorb_bytes'] / 1e6:.1f}", r["xet_xorbs"], r["xet_shards"], r["lfs_uploads"],
            r["commits"], f"{r['requests'] / max(1, r['commits']):.1f}",
            f"{r['event_files']} / {r['max_uploads']}",
            f"{files_for(1e12, roll):,}" if writer == "hf_summary" else "-",
            f"{r['peak_rss_mib']:.0f}", f"{r['peak_rss_mib'] - r['rss_after_setup_mib']:.0f}",
            f"{r['commit_seconds_median']:.2f}", f"{r['seconds']:.0f}", "ok" if r["readback_ok"] else "MISSING",
        ])
    print()
    print(format_table(
        ["run", "Xet", "roll MiB", "logged MB", "received MB", "recv/logged", "xorb MB", "xorbs", "shards",
         "LFS uploads", "commits", "requests/commit", "files / max sent", "files per TB", "peak RSS MiB",
         "peak-setup MiB", "commit s (med)", "total s", "read back"], rows))
    print("'received MB': every request body byte the server received (xorbs, shards, LFS uploads, commits, the rest). "
          "'files / max sent': event files in the repo / the most times one of them was uploaded. 'files per TB': "
          "event files one run folder would hold after logging 1e12 bytes with this roll size (doubling every "
          "1 000 files; the Hub refuses more than 10 000 entries in a folder).")
    for label, r in results.items():
        print(f"  {label} read back: {r['readback']}")
    if "ours" in results and "peer" in results:
        ours, peer = results["ours"], results["peer"]
        print(f"\nPeer / ours: {peer['bytes_received'] / ours['bytes_received']:.2f}x the bytes received, "
              f"{peer['peak_rss_mib'] / ours['peak_rss_mib']:.2f}x the peak RSS.")

    verdicts = Verdicts()
    for label in ("ours", "ours-lfs"):
        if label not in results:
            continue
        r = results[label]
        ratio = r["bytes_received"] / r["logged_bytes"]
        peer_label = "peer" if r["xet"] else "peer-lfs"
        peer_note = ""
        if peer_label in results:
            peer = results[peer_label]
            peer_note = f" (huggingface_hub: {peer['bytes_received'] / peer['logged_bytes']:.2f}x)"
        verdicts.check(f"{label}: bytes received <= {TARGET_RATIO}x bytes logged", ratio <= TARGET_RATIO,
                       f"{ratio:.3f}x{peer_note}")
        if r["xet"] and r["max_file_size"] is None:
            verdicts.check(f"{label}: bytes received <= {XET_TARGET_RATIO}x bytes logged with Xet",
                           ratio <= XET_TARGET_RATIO, f"{ratio:.3f}x")
    for label, r in results.items():
        verdicts.check(f"{label}: every loss value read back from the hub", r["readback_ok"], r["readback"])
    return verdicts.report()


if __name__ == "__main__":
    sys.exit(main())
