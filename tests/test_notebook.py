"""Notebooks, for real: `examples/notebook.ipynb` and the notebook habits, each in a real Jupyter kernel.

The kernels run the venv's Python (a kernelspec written into a temporary JUPYTER_PATH, named so that no other
kernelspec can be picked) and inherit this process's environment, so they talk to the session's LocalHub. Jupyter's
and IPython's folders all point into a temporary folder: nothing is written to the user's home.
"""

from __future__ import annotations

import json
import os
import queue
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
jupyter_client = pytest.importorskip("jupyter_client")
pytest.importorskip("ipykernel")

from hf_summary.testing import LocalHub  # noqa: E402

from .helpers import download_run, scalars, wait_until  # noqa: E402

# The companion process's own life is checked here: no companion shared by the module (conftest.py).
OWN_COMPANION = True

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "notebook.ipynb"
KERNEL_NAME = "hf-summary-test-venv"  # a name no user kernelspec has
WIDGET = "application/vnd.jupyter.widget-view+json"
STARTUP = 60.0  # generous bounds: a loaded CI machine may be slow, a passing run never waits this long
CELL = 60.0

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def jupyter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A kernelspec for this very interpreter in a temporary JUPYTER_PATH; every Jupyter folder in a tmp dir."""
    root = tmp_path_factory.mktemp("jupyter")
    spec_dir = root / "path" / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "hf_summary tests (venv)", "language": "python",
    }))
    with pytest.MonkeyPatch.context() as env:
        env.setenv("JUPYTER_PATH", str(root / "path"))
        env.setenv("JUPYTER_DATA_DIR", str(root / "data"))
        env.setenv("JUPYTER_CONFIG_DIR", str(root / "config"))
        env.setenv("JUPYTER_RUNTIME_DIR", str(root / "runtime"))
        env.setenv("JUPYTER_PLATFORM_DIRS", "1")
        env.setenv("IPYTHONDIR", str(root / "ipython"))
        env.setenv("MPLCONFIGDIR", str(root / "matplotlib"))
        env.delenv("HF_HUB_DISABLE_PROGRESS_BARS", raising=False)
        from jupyter_client.kernelspec import KernelSpecManager

        spec = KernelSpecManager().get_kernel_spec(KERNEL_NAME)
        assert spec.argv[0] == sys.executable, spec.argv
        yield KERNEL_NAME


class Kernel:
    """One real ipykernel, driven cell by cell through jupyter_client; outputs come back as nbformat outputs."""

    def __init__(self, name: str, cwd: Path) -> None:
        from jupyter_client.manager import KernelManager

        self.km = KernelManager(kernel_name=name)
        self.km.start_kernel(cwd=str(cwd))  # the environment is this process's: HF_ENDPOINT, HF_TOKEN, HF_HOME...
        self.kc = self.km.client()
        self.kc.start_channels()
        try:
            self.kc.wait_for_ready(timeout=STARTUP)
            self.run(THREADS_HELPER)
            # This venv's interpreter, talking to the session's LocalHub.
            assert self.value("[__import__('sys').executable, __import__('os').environ.get('HF_ENDPOINT')]") == [
                sys.executable, os.environ["HF_ENDPOINT"]]
        except BaseException:
            self.close()
            raise

    def submit(self, code: str) -> str:
        return self.kc.execute(textwrap.dedent(code), store_history=True)

    def collect(self, msg_id: str, timeout: float = CELL,
                until: Callable[[list[Any]], bool] | None = None) -> list[Any]:
        """The outputs of cell `msg_id` until it is idle (or until `until(outputs)` holds), within `timeout`."""
        deadline = time.monotonic() + timeout
        outputs: list[Any] = []
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"cell {msg_id} still running after {timeout}s; outputs so far: {outputs}")
            try:
                msg = self.kc.get_iopub_msg(timeout=min(remaining, 1.0))
            except queue.Empty:
                continue
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind = msg["msg_type"]
            if kind == "status" and msg["content"]["execution_state"] == "idle":
                return outputs
            if kind in ("stream", "display_data", "execute_result", "error", "update_display_data"):
                outputs.append(nbformat.v4.output_from_msg(msg))
                if until is not None and until(outputs):
                    return outputs

    def run(self, code: str, timeout: float = CELL) -> list[Any]:
        """Run a cell that must not fail; its outputs."""
        outputs = self.collect(self.submit(code), timeout)
        errors = [o for o in outputs if o.output_type == "error"]
        assert not errors, "\n".join("\n".join(e.traceback) for e in errors)
        return outputs

    def value(self, expression: str) -> Any:
        """A JSON value computed in the kernel."""
        return json.loads(text(self.run(f"import json as _j; print(_j.dumps({expression}))")))

    def close(self) -> None:
        self.kc.stop_channels()
        if self.km.is_alive():
            self.km.shutdown_kernel(now=True)
        self.km.cleanup_resources()


@pytest.fixture
def kernel(jupyter: str, tmp_path: Path) -> Iterator[Kernel]:
    k = Kernel(jupyter, tmp_path)
    try:
        yield k
    finally:
        k.close()


def text(outputs: list[Any], name: str = "stdout") -> str:
    return "".join(o.text for o in outputs if o.output_type == "stream" and o.name == name)


def hub_scalars(hub: LocalHub, repo_id: str, folder: str, tag: str, dest: Path) -> list[tuple[int, float]]:
    return scalars(download_run(hub, repo_id, folder, dest), tag)


def hub_steps(hub: LocalHub, repo_id: str, folder: str, tag: str, dest: Path) -> list[int] | None:
    """The steps of `tag` on the Hub, or None while the repo or the folder is not there yet."""
    prefix = folder + "/"
    try:
        if not any(p.startswith(prefix) for p in hub.repo_files(repo_id)):
            return None
    except KeyError:
        return None
    return [step for step, _ in hub_scalars(hub, repo_id, folder, tag, dest)]


def local_steps(run_dir: Path, tag: str) -> list[int]:
    """The steps of `tag` in a local run folder, as TensorBoard reads them ([] before the tag is written)."""
    try:
        return [step for step, _ in scalars(run_dir, tag)]
    except KeyError:
        return []


# The threads a cell sees: the writer's own are "hf_summary-*"; the companion's reaper lives exactly as long as the
# companion process, which exits after the last writer closed. A push's deadline timer is cancelled once the push
# ends, a moment after its Future settles: it gets a few seconds to go (a timer still armed would stay).
THREADS_HELPER = """
def hf_threads(grace=5.0):
    import threading, time
    deadline = time.monotonic() + grace
    for t in threading.enumerate():
        if t.name == "hf_summary-push-deadline":
            t.join(max(0.0, deadline - time.monotonic()))
    return sorted(t.name for t in threading.enumerate() if t.name.startswith("hf_summary-"))
"""
THREADS = "hf_threads()"
# One open writer: the reader and the reaper of the companion process that writes and pushes its events (no event
# thread, no committer: the companion runs the schedule).
OPEN = ["hf_summary-companion-reader", "hf_summary-companion-reaper"]


# The example notebook, top to bottom ----------------------------------------------------------------------------------


def test_example_notebook_runs_in_a_kernel_and_lands_on_the_hub(
        jupyter: str, hub: LocalHub, repo_id: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    logdir = tmp_path / "runs" / "notebook"
    monkeypatch.setenv("HF_SUMMARY_NOTEBOOK_REPO_ID", repo_id)
    monkeypatch.setenv("HF_SUMMARY_NOTEBOOK_LOGDIR", str(logdir))
    monkeypatch.setenv("HF_SUMMARY_NOTEBOOK_COMMIT_EVERY", "10")
    monkeypatch.setenv("HF_SUMMARY_NOTEBOOK_STEPS", "120")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, kernel_name=jupyter, timeout=CELL, startup_timeout=STARTUP,
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError, with the traceback, if a cell fails

    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    stdout = "".join(o.get("text", "") for o in outputs if o.output_type == "stream" and o.name == "stdout")
    stderr = [o.text for o in outputs if o.output_type == "stream" and o.name == "stderr"]
    assert not stderr, stderr  # silent by default: no warning, no bar for a push that is quick
    assert f"Pushed 120 steps to {repo_id}: commit " in stdout

    folder = "tensorboard/notebook"
    run = download_run(hub, repo_id, folder, tmp_path / "download")
    loss, accuracy = scalars(run, "train/loss"), scalars(run, "train/accuracy")
    assert [s for s, _ in loss] == list(range(120)) == [s for s, _ in accuracy]
    assert f"Last loss {loss[-1][1]:.4f}" in stdout  # the kernel's own last value is the one the Hub holds
    # The notebook's own read-back printed the same files and the same last values.
    for path in hub.repo_files(repo_id):
        assert path in stdout
    assert f"train/loss         120 steps, last: step  119 value {loss[-1][1]:.4f}" in stdout
    assert f"train/accuracy     120 steps, last: step  119 value {accuracy[-1][1]:.4f}" in stdout


# Habits ---------------------------------------------------------------------------------------------------------------


def test_rerunning_the_cell_sends_both_runs_once(kernel: Kernel, hub: LocalHub, repo_id: str, tmp_path: Path) -> None:
    """The notebook's cell (`with HFSummaryWriter(...)`) run twice: a second writer on the same logdir and repo."""
    logdir = tmp_path / "runs" / "rerun"
    kernel.run(f"REPO, LOGDIR = {repo_id!r}, {str(logdir)!r}\nfrom hf_summary import HFSummaryWriter")
    cell = """
        run = globals().get("run", -1) + 1
        with HFSummaryWriter(repo_id=REPO, logdir=LOGDIR, commit_every=10) as writer:
            for step in range(20):
                writer.add_scalar("loss", run * 100 + step, step)
            writer.scheduler.trigger().result()
            threads = THREADS
        print(run)
    """.replace("THREADS", THREADS)
    for expected in ("0", "1"):
        outputs = kernel.run(cell)
        assert text(outputs).strip() == expected and not text(outputs, "stderr"), outputs
        # While open: the companion's reader and reaper; closed: none (the companion exited too).
        assert kernel.value("threads") == OPEN
        assert kernel.value(THREADS) == []
    want = sorted((step, float(run * 100 + step)) for run in (0, 1) for step in range(20))
    assert sorted(hub_scalars(hub, repo_id, "tensorboard/rerun", "loss", tmp_path / "download")) == want


def test_rerunning_a_cell_that_never_closes_its_writer(kernel: Kernel, hub: LocalHub, repo_id: str,
                                                       tmp_path: Path) -> None:
    """`writer = HFSummaryWriter(...)` without close(), re-run: the second writer opens while the first is open."""
    logdir = tmp_path / "runs" / "rerun"
    kernel.run(f"REPO, LOGDIR = {repo_id!r}, {str(logdir)!r}\nfrom hf_summary import HFSummaryWriter")
    cell = """
        run = globals().get("run", -1) + 1
        writer = HFSummaryWriter(repo_id=REPO, logdir=LOGDIR, commit_every=10)
        for step in range(20):
            writer.add_scalar("loss", run * 100 + step, step)
        writer.scheduler.trigger().result()
        print(run)
    """
    threads = []
    for expected in ("0", "1"):
        outputs = kernel.run(cell, timeout=30)
        assert text(outputs).strip() == expected and not text(outputs, "stderr"), outputs
        threads.append(kernel.value(THREADS))
    # One committer for both (same repo and branch), one companion (its reaper); the first writer, never closed,
    # keeps its ring in the companion until close() or the end of the kernel, and neither has an event thread.
    assert threads[0] == OPEN
    assert threads[1] == OPEN
    want = sorted((step, float(run * 100 + step)) for run in (0, 1) for step in range(20))
    assert sorted(hub_scalars(hub, repo_id, "tensorboard/rerun", "loss", tmp_path / "download")) == want


def test_interrupting_the_loop_pushes_and_reraises(kernel: Kernel, hub: LocalHub, repo_id: str,
                                                   tmp_path: Path) -> None:
    logdir = tmp_path / "runs" / "interrupted"
    kernel.run(f"REPO, LOGDIR = {repo_id!r}, {str(logdir)!r}\nfrom hf_summary import HFSummaryWriter\nimport time")
    msg_id = kernel.submit("""
        logged = 0
        with HFSummaryWriter(repo_id=REPO, logdir=LOGDIR, commit_every=10) as writer:
            for step in range(10**9):
                writer.add_scalar("loss", 1 / (step + 1), step)
                logged = step + 1
                if step == 300:
                    print("looping", flush=True)
                time.sleep(0.001)  # a training step
    """)
    kernel.collect(msg_id, until=lambda outs: "looping" in text(outs))
    kernel.km.interrupt_kernel()
    outputs = kernel.collect(msg_id)
    errors = [o for o in outputs if o.output_type == "error"]
    assert [e.ename for e in errors] == ["KeyboardInterrupt"], outputs  # it reaches the user
    assert not text(outputs, "stderr"), outputs
    logged, threads = kernel.value(f"[logged, {THREADS}]")
    assert threads == []  # the final push ran and the writer's threads ended
    steps = hub_steps(hub, repo_id, "tensorboard/interrupted", "loss", tmp_path / "download")
    # Everything logged before the interrupt; one more if it landed between add_scalar and `logged = ...`.
    assert steps in (list(range(logged)), list(range(logged + 1))), (logged, steps and steps[-5:])
    assert logged > 300


@pytest.mark.parametrize("now", [True, False], ids=["killed", "shut-down"])
def test_restarting_the_kernel_without_close_loses_nothing(jupyter: str, hub: LocalHub, repo_id: str,
                                                            tmp_path: Path, now: bool) -> None:
    """Restart without close(): killed (`now=True`, a dead kernel: the companion pushes) or shut down first (the
    exit hook makes the final push)."""
    logdir = tmp_path / "runs" / "forgotten"
    kernel = Kernel(jupyter, tmp_path)
    try:
        kernel.run(f"""
            from hf_summary import HFSummaryWriter
            writer = HFSummaryWriter(repo_id={repo_id!r}, logdir={str(logdir)!r}, commit_every=10)
            for step in range(50):
                writer.add_scalar("loss", 1 / (step + 1), step)
        """)
        # On disk before the restart (the writer thread writes every second): "nothing lost" is about what is on
        # disk; what is still in memory when a process is killed is lost with it.
        wait_until(lambda: local_steps(logdir, "loss") == list(range(50)), timeout=30,
                   what="the 50 events written to disk")
        assert hub_steps(hub, repo_id, "tensorboard/forgotten", "loss", tmp_path / "before") is None
        kernel.km.restart_kernel(now=now)
        steps = wait_until(lambda: hub_steps(hub, repo_id, "tensorboard/forgotten", "loss", tmp_path / "download"),
                           timeout=60, what="the run pushed after the kernel restart")
        assert steps == list(range(50))
        log = logdir / ".hf_summary" / "companion.log"
        if now:
            wait_until(lambda: log.exists() and "Pushed" in log.read_text(), timeout=30,
                       what="companion.log saying it pushed")
        else:
            assert not log.exists() or "Pushed" not in log.read_text()  # the exit hook pushed, not the companion
        kernel.kc.wait_for_ready(timeout=STARTUP)
        assert kernel.value("1 + 1") == 2  # the restarted kernel works
    finally:
        kernel.close()


@pytest.mark.parametrize("widgets", [True, False], ids=["ipywidgets", "no-ipywidgets"])
def test_a_slow_final_push_shows_a_widget_not_carriage_returns(kernel: Kernel, hub: LocalHub, repo_id: str,
                                                               tmp_path: Path, widgets: bool) -> None:
    """With ipywidgets: a widget while the final push runs. Without: tqdm.auto falls back to its terminal bar, which
    is off where stderr is not a terminal (a kernel's): nothing shows, and certainly no raw `\\r` lines, nor tqdm's
    "IProgress not found" warning (the push runs in the companion: the kernel imports tqdm.auto only for this bar)."""
    logdir = tmp_path / "runs" / "slow"
    if not widgets:
        kernel.run("import sys; sys.modules['ipywidgets'] = None  # as if not installed")
    kernel.run(f"""
        from hf_summary import HFSummaryWriter
        writer = HFSummaryWriter(repo_id={repo_id!r}, logdir={str(logdir)!r}, commit_every=10)
        for step in range(50):
            writer.add_scalar("loss", 1 / (step + 1), step)
        writer.scheduler.trigger().result()
        writer.add_scalar("loss", 0.0, 50)
    """)
    hub.set_faults(latency=0.5)  # every request: the final push takes several seconds
    try:
        start = time.monotonic()
        outputs = kernel.run("writer.close()")
        took = time.monotonic() - start
    finally:
        hub.clear_faults()
    assert [s for s, _ in hub_scalars(hub, repo_id, "tensorboard/slow", "loss", tmp_path / "d")] == list(range(51))
    assert took > 2.5, took  # longer than the 2 s a final push may take before it shows a bar
    streams = [o.text for o in outputs if o.output_type == "stream"]
    assert not any("\r" in s for s in streams), streams  # no raw terminal bar
    assert not text(outputs, "stderr"), streams  # no warning either
    mimetypes = [m for o in outputs if o.output_type == "display_data" for m in o.data]
    if widgets:
        assert WIDGET in mimetypes, outputs
    else:
        assert WIDGET not in mimetypes, outputs
    assert kernel.value(THREADS) == []
