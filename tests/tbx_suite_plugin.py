"""A pytest plugin that runs tensorboardX's own test suite against `hf_summary.LocalSummaryWriter`.

Load it by module name, with this folder on PYTHONPATH (tensorboardX's tests are a package named `tests` too):

    PYTHONPATH=<repo>:<repo>/tests TBX_PATCH=1 python -m pytest -p tbx_suite_plugin <copy of the sdist's tests/>

Environment:
    TBX_PATCH: "1" replaces `SummaryWriter` wherever the suite can get it (`tensorboardX.SummaryWriter`,
        `tensorboardX.writer.SummaryWriter`, and the name `GlobalSummaryWriter` builds on); "0" runs tensorboardX as
        it is (the baseline).
    TBX_SUITE_REPORT: a file to write each test's outcome to, as JSON {nodeid: "passed" | "failed" | "skipped"}.

The patch is applied when the plugin is imported, which pytest does before it collects (and so imports) any test
module: a module's `from tensorboardX import SummaryWriter` then binds our class.

Modules that need what this project does not install are skipped with a reason (not dropped), and `boto3`/`moto`,
imported at the top of test_embedding.py, are stubbed when missing so that the S3-free tests of that module still run.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import sys
import types
from typing import Any

import pytest

PATCHED = os.environ.get("TBX_PATCH", "1") == "1"

# Test modules skipped whole: what they need, and why it is none of the writer's business.
SKIPPED_MODULES = {
    "test_onnx_graph.py": "needs onnx (a large native wheel); add_onnx_graph is tensorboardX's code, not overridden",
    "test_openvino_graph.py": "needs openvino and examples/mobilenetv2.xml, which the sdist does not ship",
    "test_lint.py": "runs ruff on tensorboardX's source tree, which is not the code under test",
}


def _install_stubs() -> None:
    """Stand-ins for boto3 and moto, so that test_embedding.py imports; the tests that use S3 are skipped."""
    if importlib.util.find_spec("moto") is None:
        moto = types.ModuleType("moto")

        def mock_s3(function):
            @functools.wraps(function)
            def skipped(*args, **kwargs):
                pytest.skip("needs moto and boto3 (S3 mocks), not installed")

            return skipped

        moto.mock_s3 = mock_s3
        sys.modules["moto"] = moto
    if importlib.util.find_spec("boto3") is None:
        sys.modules["boto3"] = types.ModuleType("boto3")


def _patch() -> None:
    import tensorboardX
    import tensorboardX.global_writer
    import tensorboardX.writer

    from hf_summary import LocalSummaryWriter

    tensorboardX.SummaryWriter = LocalSummaryWriter
    tensorboardX.writer.SummaryWriter = LocalSummaryWriter
    tensorboardX.global_writer.SummaryWriter = LocalSummaryWriter  # GlobalSummaryWriter's `self.smw`


_install_stubs()
if PATCHED:
    _patch()

_outcomes: dict[str, str] = {}


@pytest.fixture(scope="session", autouse=True)
def _shared_companion(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One of our writers open for the session: its companion process serves every writer of tensorboardX's suite,
    as in one training process, instead of starting again for each."""
    if not PATCHED:
        yield
        return
    from hf_summary import LocalSummaryWriter

    writer = LocalSummaryWriter(str(tmp_path_factory.mktemp("companion")))
    yield
    writer.close()


def pytest_report_header(config: pytest.Config) -> str:
    import tensorboardX

    import hf_summary

    writer = tensorboardX.SummaryWriter
    return (f"tbx_suite_plugin: SummaryWriter is {writer.__module__}.{writer.__qualname__} "
            f"(tensorboardX {tensorboardX.__version__}, hf_summary from {os.path.dirname(hf_summary.__file__)})")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        reason = SKIPPED_MODULES.get(os.path.basename(str(item.path)))
        if reason:
            item.add_marker(pytest.mark.skip(reason=reason))


# Optional packages tensorboardX imports inside a method (soundfile in add_audio, ...): a test that stops on one of
# them missing is skipped, naming it, rather than failed, so that the outcome does not depend on what is installed.
OPTIONAL_MODULES = {"soundfile", "moviepy", "onnx", "openvino", "chainer", "boto3", "moto", "google", "comet_ml"}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Any:
    outcome = yield
    report = outcome.get_result()
    if call.excinfo is not None and call.excinfo.errisinstance(ModuleNotFoundError):
        name = (call.excinfo.value.name or "").split(".")[0]
        if name in OPTIONAL_MODULES:
            report.outcome = "skipped"
            report.longrepr = (str(item.path), item.location[1] or 0, f"needs {name}, not installed")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" or report.outcome != "passed":
        # A failure or skip in setup/teardown counts for the test; a pass needs the call phase to pass.
        previous = _outcomes.get(report.nodeid)
        if previous != "failed":
            _outcomes[report.nodeid] = report.outcome


def pytest_collectreport(report: pytest.CollectReport) -> None:
    if report.failed:  # a module that does not import: its tests never run, which must not pass unnoticed
        _outcomes[report.nodeid] = "failed"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    path = os.environ.get("TBX_SUITE_REPORT")
    if path:
        with open(path, "w") as f:
            json.dump(_outcomes, f, indent=1, sort_keys=True)
