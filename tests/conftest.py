"""One local Hub server for the whole test session, started before huggingface_hub is imported.

huggingface_hub reads HF_ENDPOINT and HF_HUB_DISABLE_XET once, at import: the environment must point at the server
before any test module imports it. The suite runs the way users' clients run, with Xet on: the server speaks Xet and
the client uploads through it. `HF_HUB_DISABLE_XET=1 python -m pytest` runs the suite on the legacy LFS path instead
(server and client agree: the server follows the same variable); `test_xet_off.py` runs the key upload tests that
way within the default run.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from hf_summary.testing import LocalHub

_HOME = tempfile.mkdtemp(prefix="hf_summary-tests-")
HUB = LocalHub(root=Path(_HOME) / "hub").start()  # speaks Xet unless HF_HUB_DISABLE_XET is set
XET = HUB.xet
os.environ.pop("HF_HUB_DISABLE_XET", None)
os.environ.update(HUB.env(xet=XET))  # sets HF_HUB_DISABLE_XET=1 only when the server does not speak Xet
os.environ["HF_HOME"] = str(Path(_HOME) / "hf_home")
os.environ["HF_XET_CACHE"] = str(Path(_HOME) / "xet-cache" / "session")  # each test gets its own: `_xet_cache`
os.environ.pop("HF_HUB_OFFLINE", None)
# hf_xet waits 3 s before its first retry of a failed request, doubling: the tests that inject faults on every route
# would spend minutes waiting. A shorter first delay keeps its retries, and the suite inside CI's time.
os.environ.setdefault("HF_XET_CLIENT_RETRY_BASE_DELAY", "300ms")

# Set by test_xet_off.py in the pytest it runs: where this session writes its server's traffic counters at the end.
STATS_FILE_VARIABLE = "HF_SUMMARY_TEST_HUB_STATS"

_names = itertools.count()
_xet_caches = itertools.count()


def pytest_configure(config: pytest.Config) -> None:
    # tmp_path folders inside the session's own temporary folder, removed with it at the end.
    if not config.option.basetemp:
        config.option.basetemp = str(Path(_HOME) / "tmp")


def pytest_report_header(config: pytest.Config) -> str:
    return f"upload path: {'Xet' if XET else 'legacy LFS (HF_HUB_DISABLE_XET)'}, local Hub at {HUB.endpoint}"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    stats_file = os.environ.get(STATS_FILE_VARIABLE)
    if stats_file:
        stats = HUB.stats
        Path(stats_file).write_text(json.dumps({
            "xet": XET, "lfs_uploads": stats.lfs_uploads, "xet_xorbs": stats.xet_xorbs,
            "xet_shards": stats.xet_shards, "commits": stats.commits,
        }))
    HUB.stop()
    shutil.rmtree(_HOME, ignore_errors=True)  # the suite leaves nothing in the system temp folder


@pytest.fixture(autouse=True)
def _xet_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Xet cache of its own for each test, as a fresh machine has.

    hf_xet keys its shard cache by the server's address and trusts it: with a shared cache, a test that starts its
    own LocalHub (or one on a port a previous server used) would have the client skip chunks that server never
    received. hf_xet reads HF_XET_CACHE at each upload, not once per process, and child processes inherit it.
    The folder is only named here; hf_xet creates it if the test uploads.
    """
    monkeypatch.setenv("HF_XET_CACHE", str(Path(_HOME) / "xet-cache" / str(next(_xet_caches))))


@pytest.fixture
def hub() -> Iterator[LocalHub]:
    """The session's server, healthy and without limits at the start of each test whatever the previous one did."""
    HUB.resume()
    HUB.clear_faults()
    HUB.set_limits()
    yield HUB
    HUB.resume()
    HUB.clear_faults()
    HUB.set_limits()


@pytest.fixture
def repo_id(hub: LocalHub, request: pytest.FixtureRequest) -> str:
    """A fresh repo id in the test user's namespace."""
    name = re.sub(r"[^A-Za-z0-9]+", "-", request.node.name)[:60].strip("-")  # parameter ids may hold anything
    return f"{hub.user}/{name}-{next(_names)}"


@pytest.fixture
def logdir(tmp_path: Path) -> Path:
    return tmp_path / "run1"


@pytest.fixture(scope="module", autouse=True)
def shared_companion(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """One writer open while a module runs: its companion process serves the module's short-lived writers, as it
    serves every writer of a training process, instead of starting again for each (about 0.25 s of CPU: an
    interpreter and its imports). A module that checks the companion's own life (when it starts and ends, the threads
    a writer leaves behind) sets `OWN_COMPANION = True`."""
    if getattr(request.module, "OWN_COMPANION", False):
        yield
        return
    from hf_summary import LocalSummaryWriter

    writer = LocalSummaryWriter(str(tmp_path_factory.mktemp("companion")))
    yield
    writer.close()
