"""The legacy LFS path (Xet off) stays tested: the key upload tests run again in a pytest of their own with
HF_HUB_DISABLE_XET=1, where the session's server and the client both leave Xet out (see conftest.py).

huggingface_hub reads HF_HUB_DISABLE_XET once, at import, so the other path needs a process of its own. Users who
set the variable (or run an older client) upload through legacy LFS; so does our writer for a foreign file still
growing past `defaults.MAX_PREFIX_IN_MEMORY`, sent in place as a `FilePrefix`. The whole suite runs that way with
`HF_HUB_DISABLE_XET=1 python -m pytest`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

from hf_summary import HFSummaryWriter
from hf_summary.testing import LocalHub

from .conftest import STATS_FILE_VARIABLE

TESTS = Path(__file__).parent

# The tests whose upload path differs with Xet off: the growing file sent in place (FilePrefix) rather than as
# bytes, closed files rolled and sent once, resumption, sync after SIGKILL mid-run, torn tails, every kind of event
# read back, and silence in the training log (huggingface_hub's LFS path has progress bars of its own). The slow
# fault-injection tests stay in the main run only (the retry policy is ours, the same on both paths).
KEY_TESTS = [
    "test_uploads.py::test_a_growing_file_is_sent_in_place_without_a_copy",
    "test_uploads.py::test_rolling_files_upload_each_closed_file_once",
    "test_uploads.py::test_restarted_writer_resumes_without_resending",
    "test_uploads.py::test_torn_and_corrupt_tails_are_never_uploaded",
    "test_uploads.py::test_two_processes_syncing_one_logdir",
    "test_uploads.py::test_sigkill_then_sync_has_every_record_once[2600]",
    "test_writer_core.py::test_all_kinds_round_trip_through_the_hub",
    "test_writer_core.py::test_trigger_contains_the_scalar_logged_just_before",
    "test_reliability.py::test_periodic_pushes_print_nothing_in_the_training_log[0.0]",
    "test_xet_off.py::test_a_writer_rolls_at_the_default_size_of_its_upload_path",
]


def test_key_upload_tests_pass_on_the_legacy_lfs_path(tmp_path: Path) -> None:
    stats_file = tmp_path / "hub-stats.json"
    env = {**os.environ, "HF_HUB_DISABLE_XET": "1", STATS_FILE_VARIABLE: str(stats_file)}
    for name in ("HF_ENDPOINT", "HF_TOKEN", "HF_HOME", "HF_XET_CACHE"):
        env.pop(name, None)  # the child's conftest starts its own server and points the client at it
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         *(str(TESTS / test) for test in KEY_TESTS)],
        cwd=TESTS.parent, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    summary = proc.stdout.strip().splitlines()[-1]
    passed = re.search(r"(\d+) passed", summary)
    # Every selected test ran and passed: none was skipped, deselected or missing.
    assert passed is not None and int(passed.group(1)) == len(KEY_TESTS), summary
    assert not re.search(r"skipped|deselected|error|xfail", summary), summary
    stats = json.loads(stats_file.read_text())
    assert stats["xet"] is False, stats
    assert stats["lfs_uploads"] > 0 and stats["xet_xorbs"] == 0 and stats["xet_shards"] == 0, stats


def test_a_writer_rolls_at_the_default_size_of_its_upload_path(hub: LocalHub, repo_id: str, logdir: Path) -> None:
    """8 MiB with Xet (a push sends only new chunks), 1 MiB without (a push re-sends the growing file whole)."""
    rng = np.random.default_rng(0)
    with HFSummaryWriter(repo_id, logdir=str(logdir), commit_every=60, crash_upload=False) as writer:
        assert writer.max_file_size is None
        for step in range(2):  # about 1.2 MB a step: random pixels that PNG cannot compress
            writer.add_image("noise", rng.integers(0, 256, (3, 640, 640), dtype="uint8"), step)
            writer.scheduler.trigger().result(timeout=120)
    files = sorted(p.name for p in logdir.iterdir() if "tfevents" in p.name)
    # The first push finds 1.2 MB: past 1 MiB the file rolls, below 8 MiB it grows on.
    assert len(files) == (1 if hub.xet else 2), files
    assert set(files) <= {path.rsplit("/", 1)[-1] for path in hub.repo_files(repo_id)}
