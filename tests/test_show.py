"""`hf-summary show`: TensorBoard started on a repo's logs (read through hf://) or a local folder, queried over HTTP.

Live views (a value pushed after show started), offline views and signals: test_show_live.py.
"""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import psutil
import pytest

from hf_summary import HFSummaryWriter
from hf_summary.testing import LocalHub

from .helpers import wait_until

DEADLINE = 30.0  # seconds for TensorBoard to start and load the runs


class Show:
    """`hf-summary show ...` in a subprocess, its output lines collected by a thread."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "hf_summary.cli", "show", *args], env=env,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def url(self) -> str:
        """Wait for the line announcing TensorBoard and return its URL."""
        deadline = time.monotonic() + DEADLINE
        while True:
            line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            assert line is not None, f"show exited ({self.process.wait()}) without a URL:\n{''.join(self.output)}"
            self.output.append(line)
            if line.startswith("TensorBoard for"):
                return next(word for word in line.split() if word.startswith("http://"))

    def stop(self, sig: int) -> int:
        children = psutil.Process(self.process.pid).children(recursive=True)
        self.process.send_signal(sig)
        code = self.process.wait(timeout=30)
        _, alive = psutil.wait_procs(children, timeout=10)
        assert not alive, f"TensorBoard left processes behind: {alive}"
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def _get_json(url: str) -> object:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def _wait_for_run(url: str, run: str) -> None:
    """TensorBoard loads runs in the background after it starts serving: poll its run list."""
    wait_until(lambda: run in _get_json(url + "data/runs"), timeout=DEADLINE, what=f"TensorBoard listing {run!r}",
               interval=0.1)


def _scalars(url: str, run: str, tag: str) -> list[tuple[int, float]]:
    query = urllib.parse.urlencode({"run": run, "tag": tag})
    return [(step, value) for _, step, value in _get_json(f"{url}data/plugin/scalars/scalars?{query}")]


def test_show_repo_reads_the_logs_from_the_hub_and_serves_them(hub: LocalHub, repo_id: str, tmp_path: Path) -> None:
    with HFSummaryWriter(repo_id, logdir=str(tmp_path / "run-show"), commit_every=60) as writer:
        for step in range(5):
            writer.add_scalar("loss", 1.0 / (step + 1), step)
    # The local copy is gone: what TensorBoard shows can only come from the Hub.
    for file in (tmp_path / "run-show").glob("*tfevents*"):
        file.unlink()

    show = Show(repo_id, "--port", "0")
    try:
        url = show.url()
        assert url.startswith("http://127.0.0.1:")
        _wait_for_run(url, "run-show")
        assert _scalars(url, "run-show", "loss") == [(s, pytest.approx(1.0 / (s + 1))) for s in range(5)]
        assert show.stop(signal.SIGINT) == 0
    finally:
        show.kill()


def test_show_local_folder_stops_on_sigterm(tmp_path: Path) -> None:
    import tensorboardX

    with tensorboardX.SummaryWriter(str(tmp_path / "logs" / "local-run")) as writer:
        writer.add_scalar("acc", 0.75, 3)
    show = Show(str(tmp_path / "logs"))
    try:
        url = show.url()
        _wait_for_run(url, "local-run")
        assert _scalars(url, "local-run", "acc") == [(3, 0.75)]
        assert show.stop(signal.SIGTERM) == 0
    finally:
        show.kill()


def _show_fails(*args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "hf_summary.cli", "show", *args], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2, result.stderr
    return result.stderr


def test_show_errors_exit_2_and_say_what_to_do(hub: LocalHub, repo_id: str, tmp_path: Path) -> None:
    # The whole table of inputs is test_source.py's; here, the command itself, in its own process.
    assert "no such folder: 'not a folder!' (and it is not a repo id either" in _show_fails("not a folder!")
    assert f"no such model repo '{repo_id}' (or your token cannot read it)" in _show_fails(repo_id)
    assert f"no such bucket '{repo_id}' (or your token cannot read it)" in _show_fails(f"hf://buckets/{repo_id}")
    assert "A bucket has no revisions" in _show_fails(f"hf://buckets/{repo_id}", "--revision", "dev")

    with HFSummaryWriter(repo_id, logdir=str(tmp_path / "run"), path_in_repo="logs", commit_every=60) as writer:
        writer.add_scalar("x", 1.0, 0)
    assert "no event files under 'tensorboard' in the model repo" in _show_fails(repo_id)
    assert "found these folders: logs/run/" in _show_fails(repo_id)
