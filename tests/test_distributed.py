"""Sweeps (many writers, one repo, one committer) and distributed training (one uploader)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from hf_summary import HFSummaryWriter
from hf_summary.testing import LocalHub

from .helpers import download_run, scalars


def _our_commits(hub: LocalHub, repo_id: str) -> list[dict]:
    return [c for c in hub.commits(repo_id) if any(f.startswith("tensorboard/") for f in c.get("files", []))]


def test_fifty_writers_share_one_committer(hub: LocalHub, repo_id: str, tmp_path: Path) -> None:
    writers = [HFSummaryWriter(repo_id, logdir=str(tmp_path / f"trial{i:02d}"), commit_every=0.02)
               for i in range(50)]
    try:
        assert len({id(w.scheduler.committer) for w in writers}) == 1
        for i, writer in enumerate(writers):
            writer.add_scalar("score", float(i), 0)
        # The interval's own push (no trigger) carries all fifty logdirs.
        assert writers[0].scheduler.next_push().result(timeout=120) is not None
        assert len(_our_commits(hub, repo_id)) <= 2
    finally:
        for writer in writers:
            writer.close()
    assert len(_our_commits(hub, repo_id)) <= 3  # the closes add at most the final one
    for i in range(50):
        run = download_run(hub, repo_id, f"tensorboard/trial{i:02d}", tmp_path / "dl" / str(i))
        assert scalars(run, "score") == [(0, float(i))]


_DDP = textwrap.dedent("""
    import sys
    import torch.distributed as dist
    dist.init_process_group("gloo")
    from hf_summary import HFSummaryWriter
    rank = dist.get_rank()
    writer = HFSummaryWriter(sys.argv[1], logdir=sys.argv[2], commit_every=60, other_ranks=sys.argv[3])
    for step in range(200):
        writer.add_scalar("loss", float(rank * 1000 + step), step)
    dist.barrier()
    writer.scheduler.trigger().result() if rank == 0 else None
    writer.close()
    dist.barrier()
    dist.destroy_process_group()
""")


def test_torchrun_two_ranks_one_uploader(hub: LocalHub, repo_id: str, tmp_path: Path) -> None:
    logdir = tmp_path / "ddp"
    script = tmp_path / "ddp.py"
    script.write_text(_DDP)
    hub.reset_stats()
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                    str(script), repo_id, str(logdir), "local"], check=True, timeout=300, capture_output=True)
    files = [p for p in hub.repo_files(repo_id) if p.startswith("tensorboard/")]
    assert files and all(p.startswith("tensorboard/ddp/") for p in files)
    assert len(_our_commits(hub, repo_id)) == 1  # rank 0's trigger; its close found nothing new
    run = download_run(hub, repo_id, "tensorboard/ddp", tmp_path / "dl")
    assert scalars(run, "loss") == [(s, float(s)) for s in range(200)]
    # The other rank logged locally, beside the run, and uploaded nothing.
    assert scalars(tmp_path / "ddp-rank1", "loss") == [(s, float(1000 + s)) for s in range(200)]


_ACCELERATE = textwrap.dedent("""
    import sys
    from accelerate import Accelerator
    from hf_summary.integrations import HubTensorBoardTracker
    accelerator = Accelerator(log_with=HubTensorBoardTracker("run", sys.argv[2], repo_id=sys.argv[1], commit_every=60),
                              cpu=True)
    accelerator.init_trackers("proj", config={"lr": 0.1})
    for step in range(100):
        accelerator.log({"loss": float(step)}, step=step)
    accelerator.wait_for_everyone()
    accelerator.end_training()
""")


def test_accelerate_launch_two_processes_one_uploader(hub: LocalHub, repo_id: str, tmp_path: Path) -> None:
    script = tmp_path / "acc.py"
    script.write_text(_ACCELERATE)
    result = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--cpu",
                             "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                             str(script), repo_id, str(tmp_path / "logs")], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(_our_commits(hub, repo_id)) == 1  # one uploader: the main process's final push
    run = download_run(hub, repo_id, "tensorboard/run", tmp_path / "dl")
    assert scalars(run, "loss") == [(s, float(s)) for s in range(100)]


_TRIAL = textwrap.dedent("""
    import sys, time
    from hf_summary import HFSummaryWriter
    repo_id, logdir, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
    with HFSummaryWriter(repo_id, logdir=logdir, commit_every=0.05) as writer:   # every 3 s
        print("started", flush=True)
        step, end = 0, time.monotonic() + seconds
        while time.monotonic() < end:
            writer.add_scalar("score", float(step), step)
            step += 1
            time.sleep(0.01)
    print(step, flush=True)
""")


def test_processes_of_one_machine_make_one_commit_per_interval(hub: LocalHub, repo_id: str, tmp_path: Path) -> None:
    import math
    import time

    trials, seconds, interval = 8, 30.0, 3.0
    start = time.monotonic()
    procs = [subprocess.Popen([sys.executable, "-c", _TRIAL, repo_id, str(tmp_path / f"trial{i}"), str(seconds)],
                              stdout=subprocess.PIPE, text=True) for i in range(trials)]
    steps = [int(proc.communicate(timeout=300)[0].split()[-1]) for proc in procs]
    assert all(proc.returncode == 0 for proc in procs)
    elapsed = time.monotonic() - start
    commits = len(_our_commits(hub, repo_id))
    # One commit per interval for the whole machine, plus each trial's final push (the first trial to start may
    # push once before the others have registered).
    assert commits <= math.ceil(elapsed / interval) + trials + 1, (commits, elapsed)
    assert commits < trials * seconds / interval / 2  # far fewer than one commit per interval per process
    for i, count in enumerate(steps):
        run = download_run(hub, repo_id, f"tensorboard/trial{i}", tmp_path / "dl" / str(i))
        assert [s for s, _ in scalars(run, "score")] == list(range(count))


def test_machines_that_share_nothing_keep_the_commit_budget(hub: LocalHub, repo_id: str, tmp_path: Path) -> None:
    import os

    budget, seconds = 4, 12.0
    script = _TRIAL.replace("commit_every=0.05", f"commit_every=0.02, max_commits_per_hour={budget}")  # 1.2 s
    procs = []
    for machine in ("a", "b"):  # two HF cache folders: no lock or registry in common, only the repo's history
        env = {**os.environ, "HF_HOME": str(tmp_path / f"hf-home-{machine}")}
        procs += [subprocess.Popen([sys.executable, "-c", script, repo_id, str(tmp_path / f"{machine}{i}"),
                                    str(seconds)], stdout=subprocess.PIPE, text=True, env=env) for i in range(2)]
    steps = [int(proc.communicate(timeout=300)[0].split()[-1]) for proc in procs]
    assert all(proc.returncode == 0 for proc in procs)
    commits = len(_our_commits(hub, repo_id))
    # Scheduled pushes stay within the budget; each trial's final push is never held back (one each).
    assert commits <= budget + len(procs), commits
    for (machine, i), count in zip([(m, i) for m in "ab" for i in range(2)], steps, strict=True):
        run = download_run(hub, repo_id, f"tensorboard/{machine}{i}", tmp_path / "dl" / f"{machine}{i}")
        assert [s for s, _ in scalars(run, "score")] == list(range(count))
