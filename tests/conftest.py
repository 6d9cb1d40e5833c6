"""One local Hub server for the whole test session, started before huggingface_hub is imported.

huggingface_hub reads HF_ENDPOINT (and HF_HUB_DISABLE_XET) once, at import: the environment must point at the server
before any test module imports it.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from hf_summary.testing import LocalHub

_HOME = tempfile.mkdtemp(prefix="hf_summary-tests-")
HUB = LocalHub(root=Path(_HOME) / "hub").start()
os.environ.update(HUB.env())
os.environ["HF_HOME"] = str(Path(_HOME) / "hf_home")
os.environ.pop("HF_HUB_OFFLINE", None)

_names = itertools.count()


def pytest_configure(config: pytest.Config) -> None:
    # tmp_path folders inside the session's own temporary folder, removed with it at the end.
    if not config.option.basetemp:
        config.option.basetemp = str(Path(_HOME) / "tmp")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    HUB.stop()
    shutil.rmtree(_HOME, ignore_errors=True)  # the suite leaves nothing in the system temp folder


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
