"""The Hub's limits, end to end against LocalHub: a refusal that retrying cannot fix costs only its own run."""

from __future__ import annotations

from pathlib import Path

import pytest

from hf_summary import HFSummaryWriter, PushError
from hf_summary.testing import LocalHub

from .helpers import download_run, scalars


def test_a_folder_the_hub_refuses_costs_only_its_own_run(hub: LocalHub, repo_id: str, tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    # A run whose files roll at every push (a tiny max_file_size) fills its folder; the Hub caps folders at 4 entries.
    # ring_size=None: the schedule in this process, where the test can see that both runs share it.
    crowded = HFSummaryWriter(repo_id, logdir=str(tmp_path / "crowded"), max_file_size=1, crash_upload=False,
                              ring_size=None)
    calm = HFSummaryWriter(repo_id, logdir=str(tmp_path / "calm"), crash_upload=False, ring_size=None)
    assert calm.scheduler.schedule is crowded.scheduler.schedule  # one schedule: every push carries both runs
    hub.set_limits(max_folder_entries=4)
    errors = []
    try:
        for step in range(8):
            crowded.add_scalar("x", step, step)
            calm.add_scalar("y", step, step)
            try:
                calm.scheduler.trigger().result(timeout=120)
            except PushError as error:
                errors.append(error)
        rejected = hub.stats.limit_rejections
        for step in range(8, 12):  # the refused run is not sent again: no more refusals, the calm run still goes
            calm.add_scalar("y", step, step)
            calm.scheduler.trigger().result(timeout=120)
        assert hub.stats.limit_rejections == rejected
    finally:
        crowded.close()
        calm.close()
    assert errors and all("'tensorboard/crowded'" in error.reason for error in errors)
    assert "max_file_size" in errors[0].reason and errors[0].sync_command
    # Refused once in a commit that held both runs, once alone: never again, however many pushes followed.
    assert rejected == 2 and len(errors) == 1
    assert [r.getMessage() for r in caplog.records if "refused the files" in r.getMessage()] != []
    run = download_run(hub, repo_id, "tensorboard/calm", tmp_path / "dl")
    assert scalars(run, "y") == [(step, float(step)) for step in range(12)]
