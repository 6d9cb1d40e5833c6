"""`hf-summary show` live on the Hub: TensorBoard reads `hf://` and serves values logged after it started.

Everything end to end: `show` runs in a subprocess against a LocalHub, TensorBoard is asked over HTTP, the runs are
written by the real writer (a bucket's through Xet, in a child process with its own HF_HOME and HF_XET_CACHE, as in
test_buckets.py). Every wait is `wait_until` with a generous bound or a bounded pipe read.
"""

from __future__ import annotations

import os
import queue
import signal
import struct
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from hf_summary import HFSummaryWriter
from hf_summary.testing import LocalHub

from .helpers import wait_until
from .test_show import DEADLINE, Show, _get_json, _scalars, _wait_for_run

BUCKET = "local-user/show-live"
LIVE = 30.0  # bound for a value pushed to reach TensorBoard (measured: a few seconds at a 1 s reload interval)


def _f32(value: float) -> float:
    return struct.unpack("<f", struct.pack("<f", value))[0]  # TensorBoard keeps scalars as float32


def _env(hub: LocalHub, home: Path, **extra: str) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if name not in ("HF_HUB_DISABLE_XET", "HF_HUB_OFFLINE")}
    env.update(hub.env(xet=True), HF_HOME=str(home / "hf_home"), HF_XET_CACHE=str(home / "xet"),
               HF_XET_TELEMETRY_ENABLED="0", HF_HUB_DISABLE_PROGRESS_BARS="1", **extra)
    return env


@pytest.fixture
def bucket_hub(tmp_path: Path) -> Iterator[LocalHub]:
    with LocalHub(tmp_path / "hub", xet=True) as hub:
        yield hub


# A writer that logs and pushes the steps it is given on stdin, one line each, and says so on stdout.
_WRITER = textwrap.dedent("""
    import sys
    from hf_summary import HFSummaryWriter
    with HFSummaryWriter(sys.argv[1], logdir=sys.argv[2], commit_every=60, crash_upload=False) as writer:
        for line in sys.stdin:
            step = int(line)
            writer.add_scalar("loss", step / 7, step)
            writer.scheduler.trigger().result(timeout=120)
            print("pushed", step, flush=True)
""")


class Writer:
    """`_WRITER` in a subprocess with Xet on."""

    def __init__(self, env: dict[str, str], handle: str, logdir: Path) -> None:
        self.process = subprocess.Popen([sys.executable, "-c", _WRITER, handle, str(logdir)], env=env, text=True,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.strip())
        self.lines.put(None)

    def push(self, step: int) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(f"{step}\n")
        self.process.stdin.flush()
        line = self.lines.get(timeout=120)
        assert line == f"pushed {step}", (line, self.process.stderr.read() if line is None else "")

    def close(self) -> None:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            try:
                self.process.wait(timeout=120)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _show(env: dict[str, str], *args: str) -> Show:
    return Show(*args, env=env)


def _losses(url: str, run: str) -> list[tuple[int, float]]:
    return _scalars(url, run, "loss")


def test_show_on_a_bucket_serves_a_value_pushed_after_it_started(bucket_hub: LocalHub, tmp_path: Path) -> None:
    env = _env(bucket_hub, tmp_path / "writer")
    writer = Writer(env, f"hf://buckets/{BUCKET}", tmp_path / "runs" / "mlp")
    show = None
    try:
        for step in range(3):
            writer.push(step)
        show = _show(_env(bucket_hub, tmp_path / "viewer"), f"hf://buckets/{BUCKET}", "--reload-interval", "1")
        url = show.url()
        _wait_for_run(url, "mlp")
        wait_until(lambda: len(_losses(url, "mlp")) == 3, timeout=DEADLINE, what="the 3 values pushed before")
        assert _get_json(url + "data/runs") == ["mlp"]

        writer.push(3)  # the same event file grows in the bucket: no new file, no restart
        pushed = time.monotonic()
        wait_until(lambda: (3, _f32(3 / 7)) in _losses(url, "mlp"), timeout=LIVE,
                   what="the value pushed after show started")
        print(f"bucket: a pushed value reached TensorBoard in {time.monotonic() - pushed:.1f} s")
        assert _losses(url, "mlp") == [(step, _f32(step / 7)) for step in range(4)]
        assert show.stop(signal.SIGTERM) == 0
    finally:
        writer.close()
        if show is not None:
            show.kill()

    # Offline, what TensorBoard read is shown again, without asking the Hub (stopped).
    bucket_hub.stop()
    offline = _show(_env(bucket_hub, tmp_path / "viewer", HF_HUB_OFFLINE="1"), f"hf://buckets/{BUCKET}")
    try:
        url = offline.url()
        assert "offline" in offline.output[-1]
        _wait_for_run(url, "mlp")
        assert _losses(url, "mlp") == [(step, _f32(step / 7)) for step in range(4)]
        assert offline.stop(signal.SIGINT) == 0
    finally:
        offline.kill()


def test_show_on_a_repo_serves_a_value_committed_after_it_started(hub: LocalHub, repo_id: str,
                                                                   tmp_path: Path) -> None:
    logdir = tmp_path / "runs" / "cnn"
    with HFSummaryWriter(repo_id, logdir=str(logdir), commit_every=60, crash_upload=False) as writer:
        for step in range(3):
            writer.add_scalar("loss", step / 7, step)
        writer.scheduler.trigger().result(timeout=120)
        home = tmp_path / "viewer"
        env = {**os.environ, "HF_HOME": str(home)}
        show = _show(env, repo_id, "--reload-interval", "1")
        try:
            url = show.url()
            _wait_for_run(url, "cnn")
            wait_until(lambda: len(_losses(url, "cnn")) == 3, timeout=DEADLINE, what="the 3 values committed before")
            assert _get_json(url + "data/runs") == ["cnn"]

            commits = len(hub.commits(repo_id))
            writer.add_scalar("loss", 3 / 7, 3)
            assert writer.scheduler.trigger().result(timeout=120) is not None
            assert len(hub.commits(repo_id)) == commits + 1
            committed = time.monotonic()
            wait_until(lambda: (3, _f32(3 / 7)) in _losses(url, "cnn"), timeout=LIVE,
                       what="the value committed after show started")
            print(f"repo: a committed value reached TensorBoard in {time.monotonic() - committed:.1f} s")
            assert _losses(url, "cnn") == [(step, _f32(step / 7)) for step in range(4)]
            assert show.stop(signal.SIGTERM) == 0
        finally:
            show.kill()
        writer.add_scalar("loss", 4 / 7, 4)  # committed after show stopped: never read by it
        assert writer.scheduler.trigger().result(timeout=120) is not None

    # Offline: the values last read, from the mirror; the newer commit is not asked for.
    offline = _show({**env, "HF_HUB_OFFLINE": "1"}, repo_id)
    try:
        url = offline.url()
        _wait_for_run(url, "cnn")
        assert _losses(url, "cnn") == [(step, _f32(step / 7)) for step in range(4)]
        assert offline.stop(signal.SIGTERM) == 0
    finally:
        offline.kill()


def test_offline_show_of_what_was_never_seen_says_so(hub: LocalHub, repo_id: str, tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "hf_summary.cli", "show", repo_id], capture_output=True, text=True,
                            timeout=60, env={**os.environ, "HF_HOME": str(tmp_path / "h"), "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 2, result.stderr
    assert "HF_HUB_OFFLINE is set and nothing of" in result.stderr and "was read before" in result.stderr


def test_runs_are_named_after_their_folders(tmp_path: Path) -> None:
    import tensorboardX

    for name in ("mlp", "cnn"):
        with tensorboardX.SummaryWriter(str(tmp_path / "runs" / name)) as writer:
            writer.add_scalar("acc", 0.5, 1)
    single = Show(str(tmp_path / "runs" / "mlp"))
    try:
        url = single.url()
        _wait_for_run(url, "mlp")
        assert _get_json(url + "data/runs") == ["mlp"]
        assert single.stop(signal.SIGINT) == 0
    finally:
        single.kill()
    several = Show(str(tmp_path / "runs"))
    try:
        url = several.url()
        wait_until(lambda: sorted(_get_json(url + "data/runs")) == ["cnn", "mlp"], timeout=DEADLINE,
                   what="both runs listed by their folder names")
        assert several.stop(signal.SIGTERM) == 0
    finally:
        several.kill()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_while_the_hub_hangs_ends_show_as_ctrl_c(hub: LocalHub, repo_id: str, tmp_path: Path,
                                                          sig: int) -> None:
    with HFSummaryWriter(repo_id, logdir=str(tmp_path / "run"), commit_every=60, crash_upload=False) as writer:
        writer.add_scalar("x", 1.0, 0)
    hub.set_faults(1.0, kinds=["hang"])
    requests = hub.stats.requests
    show = Show(repo_id)
    try:
        wait_until(lambda: hub.stats.requests > requests, timeout=DEADLINE, what="show asking the hung Hub")
        show.process.send_signal(sig)
        assert show.process.wait(timeout=30) == 130
    finally:
        show.kill()
        hub.clear_faults()


def test_status_of_a_bucket_run_reads_sizes_from_the_bucket(bucket_hub: LocalHub, tmp_path: Path) -> None:
    import re

    import tensorboardX

    env = _env(bucket_hub, tmp_path / "writer")
    logdir = tmp_path / "runs" / "mlp"
    writer = Writer(env, f"hf://buckets/{BUCKET}", logdir)
    try:
        writer.push(0)
        writer.push(1)
    finally:
        writer.close()
    assert writer.process.returncode == 0
    (event_file,) = [path for path in logdir.iterdir() if "tfevents" in path.name]
    size = event_file.stat().st_size
    assert len(bucket_hub.bucket_files(BUCKET)[f"tensorboard/mlp/{event_file.name}"]) == size

    def status() -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "hf_summary.cli", "status", str(logdir)], env=env,
                              capture_output=True, text=True, timeout=120)

    synced = status()
    assert synced.returncode == 0, synced.stdout + synced.stderr
    assert f"-> bucket:{BUCKET}" in synced.stdout and "last commit" not in synced.stdout
    assert re.search(r"in the bucket, newest file uploaded \d+ s ago", synced.stdout), synced.stdout
    assert re.search(rf"{re.escape(event_file.name)}\s+{size}\s+{size}\n", synced.stdout), synced.stdout

    with tensorboardX.SummaryWriter(str(logdir), filename_suffix=".later") as local:  # logged, never pushed
        local.add_scalar("loss", 1.0, 2)
    pending = status()
    assert pending.returncode == 1 and "pending: yes" in pending.stdout, pending.stdout + pending.stderr
    (later,) = [path for path in logdir.iterdir() if path.name.endswith(".later")]
    assert re.search(rf"{re.escape(later.name)}\s+{later.stat().st_size}\s+0\n", pending.stdout), pending.stdout


# -------------------------------------------------------------------- the mirror and the fast loader

def _event_file(steps: range, tags: int = 2, offset: float = 0.0) -> bytes:
    """An event file as tensorboardX writes `add_scalar` (a `file_version` event, then one event a scalar): tag
    `t{i}` holds `step + offset + i / 10` at each step."""
    from tensorboard.compat.proto.event_pb2 import Event

    from hf_summary.events.encoding import ScalarEncoder
    from hf_summary.events.records import frame_record

    encoder = ScalarEncoder(lambda tag: tag)
    records = [frame_record(Event(wall_time=1.7e9, file_version="brain.Event:2").SerializeToString())]
    records += [frame_record(encoder.encode(f"t{tag}", step + offset + tag / 10, step, 1.7e9 + step))
                for step in steps for tag in range(tags)]
    return b"".join(records)


class Place:
    """A repo or a bucket of the session's Hub, and how to put a file in it."""

    def __init__(self, hub: LocalHub, kind: str, name: str) -> None:
        from huggingface_hub import HfApi

        self.api, self.kind = HfApi(), kind
        self.ident = f"{hub.user}/{name}"
        if kind == "bucket":
            if not hub.xet:
                pytest.skip("buckets need a Hub that speaks Xet")
            self.api.create_bucket(self.ident)
        else:
            self.api.create_repo(self.ident)

    @property
    def handle(self) -> str:
        return f"hf://buckets/{self.ident}" if self.kind == "bucket" else self.ident

    def put(self, path: str, data: bytes) -> None:
        if self.kind == "bucket":
            self.api.batch_bucket_files(self.ident, add=[(data, f"tensorboard/{path}")])
        else:
            self.api.upload_file(repo_id=self.ident, path_or_fileobj=data, path_in_repo=f"tensorboard/{path}")


def _data_servers(show: Show) -> list[psutil.Process]:
    """The show's children that are TensorBoard's data server."""
    from tensorboard.data import server_ingester

    binary = Path(server_ingester.get_server_binary().path).resolve()
    return [child for child in psutil.Process(show.process.pid).children(recursive=True)
            if Path(child.exe()).resolve() == binary]


@pytest.mark.parametrize("kind", ["bucket", "repo"])
def test_show_serves_the_whole_run_with_the_fast_loader(hub: LocalHub, repo_id: str, tmp_path: Path,
                                                         kind: str) -> None:
    place = Place(hub, kind, repo_id.split("/")[1])
    place.put("big/events.out.tfevents.1.host", _event_file(range(20_000)))
    show = Show(place.handle, "--reload-interval", "1", env={**os.environ, "HF_HOME": str(tmp_path / "home")})
    try:
        url = show.url()
        assert len(_data_servers(show)) == 1  # TensorBoard's fast loader reads the mirror
        for tag in ("t0", "t1"):
            # The data server keeps 1 000 values a tag, the last one always (TensorBoard's default sampling).
            wait_until(lambda tag=tag: _scalars(url, "big", tag)[-1:] == [(19_999, _f32(19_999 + int(tag[1]) / 10))],
                       timeout=DEADLINE, what=f"the last step of {tag}", interval=0.1)
            assert len(_scalars(url, "big", tag)) == 1000
        mirror = tmp_path / "home" / "hf_summary" / "show"
        (copy,) = mirror.rglob("events.out.tfevents.1.host")
        assert copy.read_bytes() == _event_file(range(20_000))
        assert show.stop(signal.SIGINT) == 0
    finally:
        show.kill()


@pytest.mark.parametrize("kind", ["bucket", "repo"])
def test_a_file_rewritten_shorter_is_fetched_again(hub: LocalHub, repo_id: str, tmp_path: Path, kind: str) -> None:
    place = Place(hub, kind, repo_id.split("/")[1])
    place.put("mlp/events.out.tfevents.1.host", _event_file(range(100), tags=1))
    show = Show(place.handle, "--reload-interval", "1", env={**os.environ, "HF_HOME": str(tmp_path / "home")})
    try:
        url = show.url()
        wait_until(lambda: len(_scalars(url, "mlp", "t0")) == 100, timeout=DEADLINE, what="the first version")
        servers = _data_servers(show)
        # The run started again under the same file name (an upload state lost, a squashed history): a shorter file
        # whose bytes differ. The mirror's copy is replaced and the loader reads it from the start.
        place.put("mlp/events.out.tfevents.1.host", _event_file(range(10), tags=1, offset=1000))
        expected = [(step, _f32(step + 1000)) for step in range(10)]
        wait_until(lambda: _scalars(url, "mlp", "t0") == expected, timeout=LIVE, what="the rewritten file's values")
        assert _data_servers(show) != servers  # a new data server: one that never read the old file
        (copy,) = (tmp_path / "home" / "hf_summary" / "show").rglob("events.out.tfevents.1.host")
        assert copy.read_bytes() == _event_file(range(10), tags=1, offset=1000)
        # And it goes on growing from there, the new bytes only.
        place.put("mlp/events.out.tfevents.1.host", _event_file(range(20), tags=1, offset=1000))
        wait_until(lambda: len(_scalars(url, "mlp", "t0")) == 20, timeout=LIVE, what="the rewritten file grown")
        assert show.stop(signal.SIGTERM) == 0
    finally:
        show.kill()


def test_without_the_data_server_show_says_so_once_and_uses_the_python_loader(hub: LocalHub, repo_id: str,
                                                                              tmp_path: Path) -> None:
    place = Place(hub, "repo", repo_id.split("/")[1])
    place.put("mlp/events.out.tfevents.1.host", _event_file(range(50), tags=1))
    env = {**os.environ, "HF_HOME": str(tmp_path / "home"), "TENSORBOARD_DATA_SERVER_BINARY": str(tmp_path / "no")}
    show = Show(place.handle, "--reload-interval", "1", env=env)
    try:
        url = show.url()
        said = [line for line in show.output if "fast loader" in line]
        assert len(said) == 1 and "using its Python loader" in said[0], show.output
        wait_until(lambda: len(_scalars(url, "mlp", "t0")) == 50, timeout=DEADLINE, what="the run, read by Python")
        place.put("mlp/events.out.tfevents.1.host", _event_file(range(60), tags=1))
        wait_until(lambda: len(_scalars(url, "mlp", "t0")) == 60, timeout=LIVE, what="the values pushed after")
        assert not _data_servers(show)
        assert show.stop(signal.SIGINT) == 0
    finally:
        show.kill()
