"""Sweeps (many writers, one repo, one committer) and distributed training (one uploader)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from hf_summary import HFSummaryWriter
from hf_summary.testing import LocalHub

from .helpers import download_run, scalars, wait_until

# The companion process's own life is checked here: no companion shared by the module (conftest.py).
OWN_COMPANION = True


def _our_commits(hub: LocalHub, repo_id: str) -> list[dict]:
    return [c for c in hub.commits(repo_id) if any(f.startswith("tensorboard/") for f in c.get("files", []))]


def test_fifty_writers_share_one_committer(hub: LocalHub, repo_id: str, tmp_path: Path) -> None:
    # ring_size=None: the schedule runs in this process, where the test can see it (the companion shares its
    # schedules by target the same way, through its own process.STATE).
    writers = [HFSummaryWriter(repo_id, logdir=str(tmp_path / f"trial{i:02d}"), commit_every=0.02, ring_size=None)
               for i in range(50)]
    try:
        assert len({id(w.scheduler.schedule) for w in writers}) == 1
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


_TURNS = textwrap.dedent("""
    import sys, time
    from hf_summary import HFSummaryWriter
    repo_id, logdir, turns = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with HFSummaryWriter(repo_id, logdir=logdir, commit_every=0.05) as writer:   # every 3 s
        print("registered", flush=True)
        sys.stdin.readline()  # every trial of the machine has registered: the turns start now, for all
        step = 0
        for turn in range(turns):
            push = writer.scheduler.next_push()  # this process's next scheduled turn
            while not push.done():  # a training loop logs on while it waits: each turn has new steps to push
                writer.add_scalar("score", float(step), step)
                step += 1
                time.sleep(0.01)  # a training step
            print("commit" if push.result() is not None else "skip", flush=True)
    print("steps", step, flush=True)  # after close, and its final push
""")


def test_processes_of_one_machine_make_one_commit_per_interval(hub: LocalHub, repo_id: str, tmp_path: Path) -> None:
    trials, turns = 5, 3
    procs = [subprocess.Popen([sys.executable, "-c", _TURNS, repo_id, str(tmp_path / f"trial{i}"), str(turns)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for i in range(trials)]
    try:
        for proc in procs:
            assert proc.stdout.readline().strip() == "registered"
        for proc in procs:
            proc.stdin.write("go\n")
            proc.stdin.flush()
        outputs = [proc.communicate(timeout=600)[0].split("\n") for proc in procs]
    finally:
        for proc in procs:
            proc.kill()
    assert [proc.returncode for proc in procs] == [0] * trials, outputs
    outcomes = [line for out in outputs for line in out if line in ("commit", "skip")]
    assert len(outcomes) == trials * turns
    scheduled = outcomes.count("commit")
    # Each turn had new steps: processes pushing alone would commit at every turn (trials x turns).
    # The turns of each process span `turns` intervals, and the machine commits about once per interval for all of
    # them (at most twice that here, for a loaded machine that delays turns): most turns skip, another process of
    # the machine having just committed, their steps with it.
    assert 1 <= scheduled <= 2 * turns, outcomes
    # Every commit on the Hub is one of those turns, or a trial's final push at close (at most one each).
    assert scheduled <= len(_our_commits(hub, repo_id)) <= scheduled + trials
    for i, out in enumerate(outputs):
        word, count = out[-2].split()
        assert word == "steps", out
        run = download_run(hub, repo_id, f"tensorboard/trial{i}", tmp_path / "dl" / str(i))
        assert [s for s, _ in scalars(run, "score")] == list(range(int(count)))


_ENDING_TRIAL = textwrap.dedent("""
    import sys, time
    from hf_summary import HFSummaryWriter
    from hf_summary import companion
    repo_id, logdir, budget = sys.argv[1], sys.argv[2], int(sys.argv[3])
    writer = HFSummaryWriter(repo_id, logdir=logdir, commit_every=0.02, max_commits_per_hour=budget,
                             close_timeout=5)  # a push every 1.2 s: the budget is spent long before the end
    for step in range(500):
        writer.add_scalar("score", float(step), step)
        time.sleep(0.01)
    print(companion.current_pid(), flush=True)
    sys.stdin.readline()  # every trial ends together
    writer.close()
""")


def test_machines_that_share_nothing_keep_the_commit_budget_final_pushes_included(
        hub: LocalHub, repo_id: str, tmp_path: Path) -> None:
    import os
    import signal

    import psutil

    budget, trials = 4, [(machine, i) for machine in "ab" for i in range(2)]
    procs = []
    for machine, i in trials:  # two HF cache folders: no lock or registry in common, only the repo's history
        env = {**os.environ, "HF_HOME": str(tmp_path / f"hf-home-{machine}")}
        procs.append(subprocess.Popen([sys.executable, "-c", _ENDING_TRIAL, repo_id, str(tmp_path / f"{machine}{i}"),
                                       str(budget)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                      env=env))
    companions = []
    try:
        companions = [psutil.Process(int(proc.stdout.readline())) for proc in procs]
        for proc in procs:
            proc.stdin.write("end\n")
            proc.stdin.flush()
        for proc in procs:
            proc.communicate(timeout=300)
        assert [proc.returncode for proc in procs] == [0] * len(procs)
        # Every commit, the final pushes' included: the budget holds for all of them. Machines that share nothing
        # learn of each other's commits from the history only: each may read it, then commit, while the other does
        # (its processes push one at a time, under the machine's lock), so the budget holds to one commit per other
        # machine. Without the final pushes held back, four processes ending together would add up to four.
        assert 1 <= len(_our_commits(hub, repo_id)) <= budget + 1
        # What the final pushes could not send waits with each trial's companion, which says so in its log.
        for machine, i in trials:
            log = tmp_path / f"{machine}{i}" / ".hf_summary" / "companion.log"
            wait_until(lambda log=log: log.exists() and "is spent: pushing in" in log.read_text(), timeout=120,
                       what=f"{log} to say the companion waits for the budget")
        assert all(g.is_running() for g in companions)
        for g in companions:  # a cluster ending the job: each companion pushes at once, whatever the budget
            g.send_signal(signal.SIGTERM)
        psutil.wait_procs(companions, timeout=120)
    finally:
        for proc in procs:
            proc.kill()
        for g in companions:
            if g.is_running():
                g.kill()
    for machine, i in trials:
        run = download_run(hub, repo_id, f"tensorboard/{machine}{i}", tmp_path / "dl" / f"{machine}{i}")
        assert scalars(run, "score") == [(step, float(step)) for step in range(500)]
