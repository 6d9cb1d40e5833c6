"""Offline demo: a small torch training loop logs through HFSummaryWriter to a local Hub server, then reads it back.

Run from the repository root (the README's first command does it for you):

    .venv/bin/python examples/train_offline.py
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

from hf_summary.testing import LocalHub


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    work = Path(tempfile.mkdtemp(prefix="hf_summary-demo-"))
    with LocalHub(root=work / "hub", xet=True) as hub:
        # The client reads these when it is imported: set them first. Uploads go through Xet, as against the Hub;
        # the Xet cache is the demo's own (hf_xet keys it by the server's address and trusts what it holds).
        os.environ.pop("HF_HUB_DISABLE_XET", None)
        os.environ.update(hub.env(xet=True))
        os.environ["HF_HOME"] = str(work / "hf_home")
        os.environ["HF_XET_CACHE"] = str(work / "xet_cache")
        print(f"Local Hub server at {hub.endpoint}")
        repo_id = f"{hub.user}/demo-run"
        logdir = work / "runs" / "mlp"
        train(repo_id, logdir)
        stats = hub.stats
        print(f"Sent through Xet: {stats.xet_xorbs} xorbs ({stats.xet_xorb_bytes / 1e3:.0f} kB, new chunks only), "
              f"{stats.xet_shards} shards; {stats.lfs_uploads} legacy LFS uploads")
        show(repo_id, f"tensorboard/{logdir.name}", work / "download")
        share_locally(hub, repo_id, logdir.name)
    for scratch in ("hub", "download", "hf_home", "xet_cache"):  # the server's files, the copies: only the run stays
        shutil.rmtree(work / scratch, ignore_errors=True)
    print(f"\nThe run stays on disk in {logdir}; look at it in TensorBoard with:\n  {command('hf-summary')} show "
          f"{shlex.quote(str(logdir))}")


def command(name: str) -> str:
    """How to run this interpreter's console script `name` from here: its bare name when the shell finds that very
    script (an activated virtualenv), else its path (`.venv/bin/hf-summary`: the README's commands do not activate
    the virtualenv, so its bin folder is not on PATH), else through this interpreter."""
    script = Path(sys.executable).parent / name  # not resolved: the virtualenv's python links out of it
    if not script.exists():
        return f"{shlex.quote(sys.executable)} -m hf_summary.cli"
    found = shutil.which(name)
    if found and os.path.samefile(found, script):
        return name
    relative = os.path.relpath(script)
    return shlex.quote(relative if not relative.startswith("..") else str(script))


def train(repo_id: str, logdir: Path) -> None:
    import torch

    from hf_summary import HFSummaryWriter

    torch.manual_seed(0)
    x = torch.randn(512, 8)
    y = (x[:, :4].sum(dim=1) > 0).long()
    model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loss_fn = torch.nn.CrossEntropyLoss()

    with HFSummaryWriter(repo_id, logdir=str(logdir), commit_every=1) as writer:
        for step in range(300):
            batch = torch.randint(0, len(x), (64,))
            logits = model(x[batch])
            loss = loss_fn(logits, y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            writer.add_scalar("train/loss", loss, step)
            writer.add_scalar("train/accuracy", (logits.argmax(1) == y[batch]).float().mean(), step)
            if step % 100 == 0:
                writer.add_histogram("weights/layer0", model[0].weight.detach(), step)
            if step == 150:
                info = writer.scheduler.trigger().result()
                print(f"Mid-run push: commit {info.oid[:12]}")
        print(f"Training done; pushing to {writer.repo_id} on close")


def show(repo_id: str, folder: str, dest: Path) -> None:
    from huggingface_hub import HfApi, snapshot_download
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    api = HfApi()
    print(f"\nRepo {repo_id}:")
    for path in sorted(api.list_repo_files(repo_id)):
        print(f"  {path}")
    snapshot_download(repo_id, local_dir=dest, allow_patterns=[f"{folder}/*"])
    run = EventAccumulator(str(dest / folder), size_guidance={"scalars": 0})
    run.Reload()
    print("\nLast value of each curve, read back from the Hub:")
    for tag in sorted(run.Tags()["scalars"]):
        last = run.Scalars(tag)[-1]
        print(f"  {tag:<16} step {last.step:>4}  {last.value:.4f}")


def share_locally(hub: LocalHub, repo_id: str, run: str) -> None:
    """Share the repo's runs through a Docker Space (`hf_summary.share`), then run the Space's command the way the
    Hub would (the local server's `run_space`, with what this virtualenv installed) and ask its TensorBoard."""
    import json
    import urllib.request

    from huggingface_hub.utils import disable_progress_bars

    import hf_summary

    disable_progress_bars()  # the Space's files go up without bars: the demo's output stays short
    shared = hf_summary.share(repo_id)
    print(f"\nShared: {shared.describe().splitlines()[0]}")
    package_root = str(Path(hf_summary.__file__).resolve().parents[1])
    env = {"PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
           "PYTHONPATH": package_root}  # what the Space's image installs from the wheel it holds
    with hub.run_space(shared.space_id, env=env) as url:
        with urllib.request.urlopen(f"{url}/data/plugin/scalars/scalars?run={run}&tag=train/loss", timeout=60) as r:
            values = json.load(r)
    print(f"The Space's command, run as the Hub would, served {len(values)} values of train/loss at {url}")


if __name__ == "__main__":
    main()
