"""Freshness: how old the newest value a reader can see is, on the Hub and in `hf-summary show`, and what it costs.

A writer child logs one scalar (`fresh/t`) every `--log-every-ms` (100) ms, on an absolute schedule, for
`--duration` (D, 150) s. Its value is the number of seconds since a base time the parent hands every child
(`time.time() - base`: TensorBoard stores float32, so an epoch timestamp would lose its seconds), so any reader knows
when the newest value it sees was logged: the age of what it sees at time t is `t - base - newest value`.

Contestants, in ONE run (started together, all logging at the same time), each against a LocalHub of its own
(Xet on, as every user's client runs), in a child process of its own (own HF_HOME and HF_XET_CACHE):

- `ours -> bucket`: `hf_summary.HFSummaryWriter("hf://buckets/<user>/fresh", logdir=..., crash_upload=False)`, its
  default push every 2 s;
- `ours -> repo`: `hf_summary.HFSummaryWriter(repo_id, logdir=..., commit_every=1, max_commits_per_hour=60,
  crash_upload=False)`: a push a minute, the fastest a 60 commits/hour budget allows;
- `huggingface_hub`: `huggingface_hub.HFSummaryWriter(repo_id=..., logdir=...)` at its defaults (a commit every
  5 minutes, tensorboardX's 120 s flush).

How each figure is measured:

- (a) Hub: a reader child per contestant (another user's read token, its own HF_HOME) polls the Hub every
  `--poll-every` (0.5) s with huggingface_hub, as a user's script would: a bucket with `list_bucket_tree(prefix=
  "tensorboard/", recursive=True)`, then `download_bucket_files` (through Xet) of each event file whose size or Xet
  hash changed; a repo with `list_repo_tree("tensorboard", recursive=True)` at `main`, then `hf_hub_download(...,
  revision="main")` of each event file whose blob id changed. Each downloaded file is parsed record by record
  (`hf_summary.events.records.scan_records`, which stops at a torn or corrupt record, as TensorBoard does; each
  record an `event_pb2.Event`), from where the previous parse of that file stopped. A sample is taken when the poll
  has returned: its age is `time.time() - base - newest value seen so far`. Before any value is readable, the sample
  is `time.time() - base` (a lower bound: nothing logged is visible); a figure marked `>=` includes such samples.
  Median and 95th percentile (nearest rank) over every sample taken while the writer logs (0 <= t - base <= D).
- (b) `show`: once the reader sees the first event file on the Hub, it starts `hf-summary show <bucket or repo>`
  (its defaults: a bucket's change feed, a repo's head commit every 5 s, fetched into a local mirror that
  TensorBoard's data server reads every second) and asks its HTTP API every `--poll-every` s for
  `/data/plugin/scalars/scalars?run=<run>&tag=fresh/t` (TensorBoard's reservoir always keeps the newest value);
  the age is computed as in (a), from when the answer arrived. Samples start when `show` first answers (its start-up
  is not counted); same median and p95 over the logging window, an answer without the tag counting as a lower bound
  as in (a). If `show` does not start, (b) is reported n/a with the reason.
- first: seconds from base until the reader first saw a value ((a), the Hub).
- requests/min: every HTTP request the contestant's LocalHub received from the writer process during the logging
  window [base, base + D], per minute; `api/min` the `/api/...` ones among them (what the Hub's per-user API quota
  counts; downloads and the Xet CAS are not). Readers send a distinct User-Agent (`HF_HUB_USER_AGENT_ORIGIN`, which
  huggingface_hub also gives hf_xet's CAS requests) and are counted apart, by a wrapper around the LocalHub's request
  handler installed in this (parent) process; huggingface_hub's once-a-day `/api/agent-harnesses` fetch at import
  is counted for no one.
- on Hub: after the writers closed, the values the Hub holds (the parent reads the stored files, record by record) /
  the values logged.

Sweep (`--groups` (M, 2) machines x `--processes` (N, 4) processes, one bucket): one LocalHub with the Hub's per-user
API rate limit on (`set_limits(api_limit=(--api-quota, --api-window))`, 1 000 calls per 300 s, fixed windows, as a
free user has). Each process is a writer child as `ours -> bucket` above, logging to its own logdir for
`--sweep-duration` (90) s; the processes of a machine share one HF_HOME (and Xet cache), the machines share only the
Hub and the user. One reader (another user: its calls do not use the writers' quota) polls every run as in (a).
429s: answers with status 429 the writers received (counted by the same wrapper, by User-Agent; the server's
`stats.api_rate_limited` is printed beside it). Freshness: the samples of all runs together, and the worst run's p95.

Targets: bucket (a) median <= 2 s and p95 <= 5 s; bucket (b) p95 <= 10 s; sweep: 0 429s. Ratios: each repo
contestant's figures over the bucket's, measured in the same run.

    .venv/bin/python benchmarks/bench_freshness.py                                   # ~5-6 min on 2 cores
    .venv/bin/python benchmarks/bench_freshness.py --duration 600 --sweep-duration 600   # the peer's commits too
    .venv/bin/python benchmarks/bench_freshness.py --contestants '' --groups 4 --processes 2 --sweep-duration 360
        # only the sweep, 4 machines: the quota binds before its window resets (~7 min)
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _common
from _common import CHILD_FLAG, Verdicts, emit_result, format_table, median, parse_args_or_run_child, percentile

from hf_summary.testing import LocalHub

TAG = "fresh/t"
FOLDER = "tensorboard"
BUCKET = "fresh"
READER_TOKEN = "hf_bench_reader"
READER_USER = "bench-reader"
READER_ORIGIN = "hf-summary-bench-reader"  # in the User-Agent of every reader request (HF_HUB_USER_AGENT_ORIGIN)
NOT_COUNTED = ("/api/agent-harnesses",)  # huggingface_hub's once-a-day fetch at import: nobody's steady cost
CONTESTANTS = {
    "bucket": "ours -> bucket (push every 2 s)",
    "repo": "ours -> repo (commit_every=1 min)",
    "peer": "huggingface_hub (defaults: 5 min)",
}


# Children ------------------------------------------------------------------------------------------------------------


def _wait_for_go() -> tuple[float, float]:
    """Say ready, then read the parent's go line: the base time and the end of the logging window (epoch s)."""
    print("ready", flush=True)
    base, end = (float(x) for x in sys.stdin.readline().split())
    return base, end


def make_writer(params: dict[str, Any]) -> Any:
    kind, logdir = params["kind"], params["logdir"]
    if kind == "bucket":
        from hf_summary import HFSummaryWriter

        return HFSummaryWriter(f"hf://buckets/{params['target']}", logdir=logdir, crash_upload=False)
    if kind == "repo":
        from hf_summary import HFSummaryWriter

        return HFSummaryWriter(params["target"], logdir=logdir, commit_every=1, max_commits_per_hour=60,
                               crash_upload=False)
    from huggingface_hub import HFSummaryWriter as PeerWriter

    return PeerWriter(repo_id=params["target"], logdir=logdir)


def writer_child(params: dict[str, Any]) -> None:
    """Build the writer, wait for go, log `time.time() - base` every tick until the end, close (final push)."""
    t0 = time.monotonic()
    writer = make_writer(params)
    init_seconds = time.monotonic() - t0
    base, end = _wait_for_go()
    tick = params["log_every_ms"] / 1000
    time.sleep(max(0.0, base - time.time()))
    step, last = 0, 0.0
    while True:
        now = time.time()
        if now >= end:
            break
        last = now - base
        writer.add_scalar(TAG, last, step)
        step += 1
        time.sleep(max(0.0, base + step * tick - time.time()))  # absolute schedule: no drift
    t1 = time.monotonic()
    writer.__exit__(None, None, None)  # as leaving a `with` block: close and final push
    emit_result({"steps": step, "last": last, "init_seconds": init_seconds, "close_seconds": time.monotonic() - t1})


def _event_values(path: Path, start: int) -> tuple[list[float], int]:
    """The `fresh/t` values of the complete records of an event file from `start` (a record boundary), and where the
    complete records end."""
    from tensorboard.compat.proto.event_pb2 import Event

    from hf_summary.events.records import FOOTER_SIZE, HEADER_SIZE, scan_records

    end = scan_records(path, start).valid_size
    values = []
    with open(path, "rb") as f:
        f.seek(start)
        data = f.read(end - start)
    pos = 0
    while pos < len(data):
        length = int.from_bytes(data[pos:pos + 8], "little")
        event = Event.FromString(data[pos + HEADER_SIZE:pos + HEADER_SIZE + length])
        pos += HEADER_SIZE + length + FOOTER_SIZE
        for value in event.summary.value:
            if value.tag == TAG:
                values.append(value.simple_value if value.HasField("simple_value") else value.tensor.float_val[0])
    return values, end


class HubPoller:
    """Reads the runs under `tensorboard/` of a bucket or repo with huggingface_hub, only files that changed."""

    def __init__(self, kind: str, target: str, work: Path) -> None:
        from huggingface_hub import HfApi

        self.kind, self.target, self.work = kind, target, work
        self.api = HfApi()
        self.seen: dict[str, Any] = {}  # path -> the version parsed (bucket: (size, xet hash); repo: blob id)
        self.parsed: dict[str, int] = {}  # path -> offset after its complete records
        self.newest: dict[str, float] = {}  # run (folder below tensorboard/) -> newest value seen
        self.files = 0

    def _listing(self) -> list[tuple[str, Any, Any]]:
        """(path, version, entry) of each event file under the folder; empty while the bucket or repo is missing."""
        from huggingface_hub.errors import HfHubHTTPError

        try:
            if self.kind == "bucket":
                entries = self.api.list_bucket_tree(self.target, prefix=FOLDER + "/", recursive=True)
                return [(e.path, (e.size, e.xet_hash), e) for e in entries
                        if getattr(e, "type", "") == "file" and "tfevents" in e.path]
            entries = self.api.list_repo_tree(self.target, path_in_repo=FOLDER, recursive=True, revision="main")
            return [(e.path, e.blob_id, e) for e in entries if hasattr(e, "blob_id") and "tfevents" in e.path]
        except HfHubHTTPError as error:
            if error.response is not None and error.response.status_code == 404:
                return []
            raise

    def poll(self) -> None:
        listing = self._listing()
        self.files = len(listing)
        changed = [(path, version, entry) for path, version, entry in listing if self.seen.get(path) != version]
        if not changed:
            return
        local: dict[str, Path] = {}
        if self.kind == "bucket":
            dests = [(entry, self.work / "dl" / path) for path, _, entry in changed]
            self.api.download_bucket_files(self.target, dests)
            local = {path: dest for (path, _, _), (_, dest) in zip(changed, dests, strict=True)}
        else:
            from huggingface_hub import hf_hub_download

            for path, _, _ in changed:
                local[path] = Path(hf_hub_download(self.target, path, revision="main",
                                                   cache_dir=str(self.work / "cache")))
        for path, version, _ in changed:
            start = self.parsed.get(path, 0)
            if local[path].stat().st_size < start:
                start = 0  # replaced by a shorter file (never expected): read it again
            values, end = _event_values(local[path], start)
            self.parsed[path], self.seen[path] = end, version
            run = path[len(FOLDER) + 1:].rsplit("/", 1)[0]
            if values:
                self.newest[run] = max(self.newest.get(run, float("-inf")), max(values))


def _show_command(kind: str, target: str) -> list[str]:
    handle = f"hf://buckets/{target}" if kind == "bucket" else target
    return [sys.executable, "-c", "import sys; from hf_summary.cli import main; sys.exit(main())", "show", handle]


class ShowProbe:
    """`hf-summary show` started on the contestant's bucket or repo, asked for the newest value of each run."""

    def __init__(self, kind: str, target: str, base: float, end: float, every: float) -> None:
        self.kind, self.target, self.base, self.end, self.every = kind, target, base, end, every
        self.samples: list[tuple[float, str, float | None]] = []  # (t - base, run, newest value or None)
        self.status = "not started"
        self.proc: subprocess.Popen[str] | None = None
        self.url: str | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self.status = "starting"
        self.thread.start()

    def _get(self, path: str) -> Any:
        assert self.url is not None
        with urllib.request.urlopen(self.url.rstrip("/") + path, timeout=10) as answer:
            return json.loads(answer.read())

    def _run(self) -> None:
        self.proc = subprocess.Popen(_show_command(self.kind, self.target), stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if " at http" not in line:
            err = self.proc.stderr.read() if self.proc.stderr is not None else ""
            self.status = f"did not start: {(err.strip().splitlines() or [line.strip() or 'no output'])[-1][:200]}"
            return
        self.url = line.split(" at ", 1)[1].split()[0]
        self.status = "serving"
        while time.time() < self.end:
            t = time.monotonic()
            try:
                runs = self._get("/data/runs")
                for run in runs:
                    query = urllib.parse.urlencode({"run": run, "tag": TAG})
                    try:
                        points = self._get(f"/data/plugin/scalars/scalars?{query}")
                    except urllib.error.HTTPError:
                        points = []  # the tag is not there yet
                    now = time.time() - self.base
                    self.samples.append((now, run, max((p[2] for p in points), default=None)))
            except (OSError, ValueError) as error:
                self.status = f"serving, a probe failed: {error}"
            time.sleep(max(0.0, self.every - (time.monotonic() - t)))

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def reader_child(params: dict[str, Any]) -> None:
    """Poll the Hub until the end of the logging window (and start `show` once there is something to show)."""
    import huggingface_hub  # noqa: F401  (imported before go: its import time is not a poll's)

    work = Path(params["work"])
    poller = HubPoller(params["kind"], params["target"], work)
    base, end = _wait_for_go()
    every = params["poll_every"]
    probe = ShowProbe(params["kind"], params["target"], base, end, every) if params["show"] else None
    samples: list[tuple[float, str, float | None]] = []
    durations, errors = [], collections.Counter()
    first_value: float | None = None
    while time.time() < end:
        t = time.monotonic()
        try:
            poller.poll()
        except Exception as error:  # a failed poll is a missed sample, reported
            errors[f"{type(error).__name__}: {str(error).splitlines()[0][:120] if str(error) else ''}"] += 1
        durations.append(time.monotonic() - t)
        now = time.time() - base
        for run in params["runs"]:
            value = poller.newest.get(run)
            samples.append((now, run, value))
            if value is not None and first_value is None:
                first_value = now
        if probe is not None and probe.status == "not started" and poller.files:
            probe.start()
        time.sleep(max(0.0, every - (time.monotonic() - t)))
    if probe is not None:
        probe.stop()
    emit_result({"samples": samples, "show_samples": probe.samples if probe else [],
                 "show_status": probe.status if probe else "not asked", "poll_seconds": durations,
                 "first_value": first_value, "errors": dict(errors)})


def child(params: dict[str, Any]) -> None:
    if params["role"] == "writer":
        writer_child(params)
    else:
        reader_child(params)


# Parent: counting requests by who sent them ---------------------------------------------------------------------------


def route(path: str) -> str:
    """A request path without its ids (user, repo or bucket name, hashes, file names): what kind of call it is."""
    parts = path.strip("/").split("/")
    if parts[:2] in (["api", "buckets"], ["api", "models"]) and len(parts) >= 4:
        parts = [*parts[:2], "*", *parts[4:5]]
    elif parts[:1] == ["buckets"] or (len(parts) > 2 and parts[2] == "resolve"):
        parts = ["<resolve>"]
    elif parts[:1] == ["xet-cas"]:
        parts = [p for p in parts if not re.fullmatch(r"[0-9a-f]{16,}|default", p)][:3]
    return "/" + "/".join(parts)


class RequestCounter:
    """Counts the requests each LocalHub (by port) receives from writers and from readers, and their 429 answers.

    A wrapper around the LocalHub's request handler, installed in this process (the servers run here): readers are
    recognised by `READER_ORIGIN` in their User-Agent, which huggingface_hub sends on Hub calls and gives hf_xet for
    the CAS.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: collections.Counter[tuple[int, str, str]] = collections.Counter()
        self.routes: collections.Counter[tuple[int, str]] = collections.Counter()  # writers' requests by route
        self.api_times: collections.defaultdict[int, list[float]] = collections.defaultdict(list)  # writers' /api/

    def install(self) -> None:
        from hf_summary.testing.server import HubRequestHandler

        counter, handle, send_response = self, HubRequestHandler._handle, HubRequestHandler.send_response

        def counted_handle(handler: Any) -> None:
            path = handler.path.split("?", 1)[0]
            who = "reader" if READER_ORIGIN in handler.headers.get("User-Agent", "") else "writer"
            if path in NOT_COUNTED:
                who = "nobody"
            handler._bench_who = who
            port = handler.server.server_address[1]
            counter.add(port, who, "requests")
            if path.startswith("/api/"):
                counter.add(port, who, "api")
            if who == "writer":
                with counter._lock:
                    counter.routes[(port, f"{handler.command} {route(path)}")] += 1
                    if path.startswith("/api/"):
                        counter.api_times[port].append(time.time())
            handle(handler)

        def counted_send_response(handler: Any, code: int, message: str | None = None) -> None:
            if code == 429:
                counter.add(handler.server.server_address[1], getattr(handler, "_bench_who", "writer"), "429")
            send_response(handler, code, message)

        HubRequestHandler._handle = counted_handle  # type: ignore[method-assign]
        HubRequestHandler.send_response = counted_send_response  # type: ignore[method-assign]

    def add(self, port: int, who: str, what: str) -> None:
        with self._lock:
            self._counts[(port, who, what)] += 1

    def top_routes(self, port: int) -> list[tuple[str, int]]:
        with self._lock:
            return sorted(((r, n) for (p, r), n in self.routes.items() if p == port), key=lambda x: -x[1])

    def get(self, port: int, who: str, what: str) -> int:
        with self._lock:
            return self._counts[(port, who, what)]


# Parent: running the children -----------------------------------------------------------------------------------------


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[str]
    stderr_path: Path
    result: dict[str, Any] = field(default_factory=dict)

    def tail(self) -> str:
        return "\n".join(self.stderr_path.read_text(errors="replace").strip().splitlines()[-30:])


def reader_env(hub: LocalHub, home: Path) -> dict[str, str]:
    env = child_env(hub, home, home / "xet")
    env.update(HF_TOKEN=READER_TOKEN, HF_HUB_USER_AGENT_ORIGIN=READER_ORIGIN)
    return env


def child_env(hub: LocalHub, home: Path, xet_cache: Path) -> dict[str, str]:
    """A child's environment: Xet on (buckets need it), its own HF_HOME and Xet cache, pointed at `hub`."""
    env = _common.child_env(hub, home)
    env.pop("HF_HUB_DISABLE_XET", None)
    env.pop("HF_HUB_USER_AGENT_ORIGIN", None)
    env.update(hub.env(xet=True), HF_XET_CACHE=str(xet_cache), HF_XET_TELEMETRY_ENABLED="0")
    return env


def spawn(name: str, params: dict[str, Any], env: dict[str, str], work: Path) -> Child:
    stderr_path = work / f"{name}.stderr"
    with stderr_path.open("w") as err:
        proc = subprocess.Popen([sys.executable, __file__, CHILD_FLAG, json.dumps(params)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=err, text=True, env=env, cwd=work)
    return Child(name, proc, stderr_path)


@contextmanager
def running(children: list[Child]) -> Iterator[None]:
    try:
        yield
    finally:
        for c in children:
            if c.proc.poll() is None:
                c.proc.kill()
                c.proc.wait()


def wait_ready(children: list[Child]) -> None:
    for c in children:
        assert c.proc.stdout is not None
        if c.proc.stdout.readline().strip() != "ready":
            raise RuntimeError(f"{c.name} ended before it was ready (exit {c.proc.wait()}):\n{c.tail()}")


def go(children: list[Child], base: float, end: float) -> None:
    for c in children:
        assert c.proc.stdin is not None
        c.proc.stdin.write(f"{base!r} {end!r}\n")
        c.proc.stdin.flush()


def collect(children: list[Child], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for c in children:
        out, _ = c.proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
        lines = [ln for ln in out.splitlines() if ln.startswith(_common._RESULT_PREFIX)]
        if c.proc.returncode != 0 or not lines:
            raise RuntimeError(f"{c.name} exited with {c.proc.returncode}:\n{c.tail()}")
        c.result = json.loads(lines[-1][len(_common._RESULT_PREFIX):])


def values_on_hub(files: dict[str, bytes], run: str, work: Path) -> int:
    """How many `fresh/t` values the stored event files of `run` hold (complete records only)."""
    count = 0
    for path, data in files.items():
        if path.startswith(f"{FOLDER}/{run}/") and "tfevents" in path:
            local = work / "check" / path
            local.parent.mkdir(parents=True, exist_ok=True)
            local.write_bytes(data)
            count += len(_event_values(local, 0)[0])
    return count


# Parent: figures ------------------------------------------------------------------------------------------------------


@dataclass
class Ages:
    median: float | None
    p95: float | None
    bound_median: bool  # the median is a lower bound (nothing readable yet at that sample)
    bound_p95: bool
    n: int

    def show(self, which: str) -> str:
        value, bound = (self.median, self.bound_median) if which == "median" else (self.p95, self.bound_p95)
        return "-" if value is None else f"{'>=' if bound else ''}{value:.2f}"


def ages(samples: list[list[Any]], duration: float, runs: list[str] | None = None) -> Ages:
    """Age samples in the logging window: (age, is a lower bound) from (t - base, run, newest value or None)."""
    picked = [(t - v, False) if v is not None else (t, True) for t, run, v in samples
              if 0 <= t <= duration and (runs is None or run in runs)]
    if not picked:
        return Ages(None, None, False, False, 0)
    ordered = sorted(picked)
    mid, p95 = ordered[(len(ordered) - 1) // 2], percentile([a for a, _ in ordered], 95)
    p95_bound = any(b for a, b in ordered if a == p95)
    return Ages(median([a for a, _ in ordered]), p95, mid[1], p95_bound, len(ordered))


def run_contestants(args: argparse.Namespace, work: Path, counter: RequestCounter) -> dict[str, dict[str, Any]]:
    names = [n.strip() for n in args.contestants.split(",") if n.strip()]
    results: dict[str, dict[str, Any]] = {}
    with ExitStack() as stack:
        hubs = {n: stack.enter_context(LocalHub(work / f"hub-{n}", xet=True)) for n in names}
        writers, readers = [], []
        for name, hub in hubs.items():
            hub.add_token(READER_TOKEN, READER_USER, write=False)
            target = f"{hub.user}/{BUCKET}" if name == "bucket" else f"{hub.user}/fresh-{name}"
            home = work / name
            writers.append(spawn(f"{name}-writer", {
                "role": "writer", "kind": name, "target": target, "logdir": str(home / "runs" / name),
                "log_every_ms": args.log_every_ms}, child_env(hub, home / "hf_home", home / "xet"), work))
            readers.append(spawn(f"{name}-reader", {
                "role": "reader", "kind": "bucket" if name == "bucket" else "repo", "target": target,
                "work": str(home / "reader"), "runs": [name], "poll_every": args.poll_every, "show": args.show},
                reader_env(hub, home / "reader"), work))
        children = writers + readers
        stack.enter_context(running(children))
        wait_ready(children)
        base = time.time() + 1.0
        end = base + args.duration
        go(children, base, end)
        ports = {n: h.endpoint.rsplit(":", 1)[1] for n, h in hubs.items()}
        time.sleep(max(0.0, base - time.time()))
        before = {n: (counter.get(int(p), "writer", "requests"), counter.get(int(p), "writer", "api"))
                  for n, p in ports.items()}
        time.sleep(max(0.0, end - time.time()))
        after = {n: (counter.get(int(p), "writer", "requests"), counter.get(int(p), "writer", "api"))
                 for n, p in ports.items()}
        collect(children, args.timeout)
        for (name, hub), w, r in zip(hubs.items(), writers, readers, strict=True):
            target = f"{hub.user}/{BUCKET}" if name == "bucket" else f"{hub.user}/fresh-{name}"
            files = hub.bucket_files(target) if name == "bucket" else hub.repo_files(target)
            minutes = args.duration / 60
            results[name] = {
                "a": ages(r.result["samples"], args.duration), "b": ages(r.result["show_samples"], args.duration),
                "show_status": r.result["show_status"], "first": r.result["first_value"],
                "poll_median": median(r.result["poll_seconds"]) if r.result["poll_seconds"] else float("nan"),
                "errors": r.result["errors"],
                "req_min": (after[name][0] - before[name][0]) / minutes,
                "api_min": (after[name][1] - before[name][1]) / minutes,
                "logged": w.result["steps"], "on_hub": values_on_hub(files, name, work / name),
                "routes": counter.top_routes(int(ports[name])),
                "close": w.result["close_seconds"], "commits": len(hub.commit_times(target))
                if name != "bucket" else 0, "batches": hub.stats.bucket_batches,
            }
    return results


def timeline(samples: list[list[Any]], api_times: list[float], base: float, duration: float,
             slice_s: float = 30.0) -> list[tuple[float, int, str]]:
    """Per slice of the logging window: its start (s after base), the writers' /api/ calls in it, the median age."""
    out = []
    for i in range(int(duration // slice_s) + (duration % slice_s > 0)):
        lo, hi = i * slice_s, min(duration, (i + 1) * slice_s)
        calls = sum(1 for t in api_times if lo <= t - base < hi)
        picked = [(t, run, v) for t, run, v in samples if lo <= t < hi]
        out.append((lo, calls, ages(picked, duration).show("median") if picked else "-"))
    return out


def run_sweep(args: argparse.Namespace, work: Path, counter: RequestCounter) -> dict[str, Any]:
    with ExitStack() as stack:
        hub = stack.enter_context(LocalHub(work / "hub-sweep", xet=True))
        hub.add_token(READER_TOKEN, READER_USER, write=False)
        hub.set_limits(api_limit=(args.api_quota, args.api_window))
        target = f"{hub.user}/{BUCKET}-sweep"
        writers, runs = [], []
        for g in range(args.groups):
            machine = work / f"machine-{g}"
            env = child_env(hub, machine / "hf_home", machine / "xet")
            for p in range(args.processes):
                run = f"m{g}-p{p}"
                runs.append(run)
                writers.append(spawn(f"sweep-{run}", {
                    "role": "writer", "kind": "bucket", "target": target, "logdir": str(machine / "runs" / run),
                    "log_every_ms": args.log_every_ms}, env, work))
        reader = spawn("sweep-reader", {"role": "reader", "kind": "bucket", "target": target,
                                        "work": str(work / "sweep-reader"), "runs": runs,
                                        "poll_every": args.sweep_poll_every, "show": False},
                       reader_env(hub, work / "sweep-reader"), work)
        children = [*writers, reader]
        stack.enter_context(running(children))
        wait_ready(children)
        base = time.time() + 1.0
        end = base + args.sweep_duration
        go(children, base, end)
        port = int(hub.endpoint.rsplit(":", 1)[1])
        time.sleep(max(0.0, base - time.time()))
        before = (counter.get(port, "writer", "requests"), counter.get(port, "writer", "api"))
        time.sleep(max(0.0, end - time.time()))
        after = (counter.get(port, "writer", "requests"), counter.get(port, "writer", "api"))
        collect(children, args.timeout)
        files = hub.bucket_files(target)
        samples = reader.result["samples"]
        per_run = {run: ages(samples, args.sweep_duration, [run]) for run in runs}
        worst = max(runs, key=lambda r: per_run[r].p95 or 0.0)
        minutes, n = args.sweep_duration / 60, len(writers)
        return {
            "n": n, "a": ages(samples, args.sweep_duration), "worst_run": worst, "worst": per_run[worst],
            "429": counter.get(port, "writer", "429"), "reader_429": counter.get(port, "reader", "429"),
            "api_rate_limited": hub.stats.api_rate_limited,
            "req_min": (after[0] - before[0]) / minutes / n, "api_min": (after[1] - before[1]) / minutes / n,
            "api_window_total": (after[1] - before[1]),
            "logged": sum(w.result["steps"] for w in writers),
            "on_hub": sum(values_on_hub(files, run, work / "sweep-check") for run in runs),
            "first": reader.result["first_value"], "errors": reader.result["errors"],
            "routes": counter.top_routes(port),
            "timeline": timeline(samples, counter.api_times[port], base, args.sweep_duration),
            "poll_median": median(reader.result["poll_seconds"]) if reader.result["poll_seconds"] else float("nan"),
        }


# Parent: report ------------------------------------------------------------------------------------------------------


def _ratio(x: float | None, y: float | None) -> str:
    if x is None or not y:
        return "-"
    return f"{x / y:.1f}x" if x >= y else f"{x / y:.2f}x"


def report_contestants(results: dict[str, dict[str, Any]], args: argparse.Namespace, verdicts: Verdicts) -> None:
    rows = []
    for name, r in results.items():
        b = r["b"]
        rows.append([CONTESTANTS[name], r["a"].show("median"), r["a"].show("p95"),
                     "-" if r["first"] is None else f"{r['first']:.1f}",
                     b.show("median") if b.n else "n/a", b.show("p95") if b.n else "n/a",
                     f"{r['req_min']:.0f}", f"{r['api_min']:.0f}",
                     r["commits"] if name != "bucket" else f"{r['batches']} batches",
                     f"{r['on_hub']}/{r['logged']}", f"{r['poll_median'] * 1000:.0f}", f"{r['close']:.1f}"])
    print(format_table(["writer", "(a) med s", "(a) p95 s", "first s", "(b) med s", "(b) p95 s", "req/min",
                        "api/min", "commits", "on Hub/logged", "poll ms", "close s"], rows))
    print("(a): age of the newest value readable on the Hub with huggingface_hub; (b): served by hf-summary show "
          "(TensorBoard HTTP API);\nfirst: s after base until (a) first saw a value; req/min, api/min: the "
          "writer process's requests to the Hub (all, /api/ only) per minute while logging;\n'>=': the figure "
          "includes samples taken while nothing was readable (age >= time since logging began).")
    for name, r in results.items():
        if args.routes:
            listed = ", ".join(f"{k} {n}" for k, n in r["routes"])
            print(f"  {name} writer requests by route (whole run): {listed}")
        if r["errors"]:
            print(f"  {name} reader errors: {r['errors']}")
        if not r["b"].n or "failed" in r["show_status"]:
            print(f"  {name} (b): show {r['show_status']}")
    if "bucket" in results:
        ours = results["bucket"]
        for name in ("repo", "peer"):
            if name in results:
                r = results[name]
                print(f"  {name} / bucket, same run: (a) median {_ratio(r['a'].median, ours['a'].median)}, "
                      f"p95 {_ratio(r['a'].p95, ours['a'].p95)}; (b) p95 {_ratio(r['b'].p95, ours['b'].p95)}; "
                      f"requests/min {_ratio(r['req_min'], ours['req_min'])}")
        a, b = ours["a"], ours["b"]
        verdicts.check("bucket (a) median age <= 2 s", a.median is not None and a.median <= 2 and
                       not a.bound_median, a.show("median"))
        verdicts.check("bucket (a) p95 age <= 5 s", a.p95 is not None and a.p95 <= 5, a.show("p95"))
        if b.n:
            verdicts.check("bucket (b) p95 age <= 10 s", b.p95 is not None and b.p95 <= 10, b.show("p95"))
        else:
            print(f"\n(b) n/a: show does not read hf:// live yet ({ours['show_status']})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=150.0, help="D: seconds the contestants log")
    parser.add_argument("--log-every-ms", type=float, default=100.0, help="one scalar every this many ms")
    parser.add_argument("--poll-every", type=float, default=0.5, help="seconds between two reads of a reader")
    parser.add_argument("--contestants", default="bucket,repo,peer", help=f"comma-separated, from {list(CONTESTANTS)}")
    parser.add_argument("--no-show", dest="show", action="store_false", help="skip (b), hf-summary show")
    parser.add_argument("--sweep-duration", type=float, default=90.0, help="seconds the sweep's processes log; 0: "
                                                                           "no sweep")
    parser.add_argument("--processes", type=int, default=4, help="N: sweep processes per machine")
    parser.add_argument("--groups", type=int, default=2, help="M: sweep machines (one HF_HOME each)")
    parser.add_argument("--api-quota", type=int, default=1000, help="sweep: API calls per window per user")
    parser.add_argument("--api-window", type=float, default=300.0, help="sweep: the API quota's window, seconds")
    parser.add_argument("--sweep-poll-every", type=float, default=1.0, help="seconds between two reads in the sweep")
    parser.add_argument("--routes", action="store_true", help="print the writers' requests by route (whole run)")
    parser.add_argument("--timeout", type=float, default=300, help="seconds to wait for children after logging")
    args = parse_args_or_run_child(parser, child)
    if args is None:
        return 0

    counter = RequestCounter()
    counter.install()
    verdicts = Verdicts()
    with tempfile.TemporaryDirectory(prefix="bench-freshness-") as tmp:
        work = Path(tmp)
        results: dict[str, dict[str, Any]] = {}
        if args.contestants.strip():
            print(f"Contestants log {TAG} every {args.log_every_ms:g} ms for {args.duration:g} s, together, each to "
                  f"a LocalHub of its own; readers poll every {args.poll_every:g} s.", flush=True)
            t0 = time.monotonic()
            results = run_contestants(args, work, counter)
            print(f"({time.monotonic() - t0:.0f} s)\n")
        if results:
            report_contestants(results, args, verdicts)

        if args.sweep_duration > 0:
            print(f"\nSweep: {args.groups} machines x {args.processes} processes -> one bucket, {TAG} every "
                  f"{args.log_every_ms:g} ms for {args.sweep_duration:g} s; API quota {args.api_quota} calls per "
                  f"{args.api_window:g} s per user (the writers share one user).", flush=True)
            t0 = time.monotonic()
            s = run_sweep(args, work, counter)
            print(f"({time.monotonic() - t0:.0f} s)\n")
            print(format_table(["processes", "429s (writers)", "api_rate_limited", "(a) med s", "(a) p95 s",
                                "worst run p95 s", "first s", "req/min/proc", "api/min/proc", "api calls",
                                "on Hub/logged", "poll ms"],
                               [[s["n"], s["429"], s["api_rate_limited"], s["a"].show("median"), s["a"].show("p95"),
                                 f"{s['worst'].show('p95')} ({s['worst_run']})",
                                 "-" if s["first"] is None else f"{s['first']:.1f}", f"{s['req_min']:.0f}",
                                 f"{s['api_min']:.1f}", s["api_window_total"], f"{s['on_hub']}/{s['logged']}",
                                 f"{s['poll_median'] * 1000:.0f}"]]))
            print(f"api calls: the writers' /api/ calls while logging; the quota allows {args.api_quota} per "
                  f"{args.api_window:g} s, i.e. {args.api_quota / args.api_window * 60 / s['n']:.1f}/min/process; "
                  f"reader 429s: {s['reader_429']}.")
            print("  per 30 s (s after base: writers' /api/ calls, median age s): "
                  + ", ".join(f"{lo:g}: {calls}, {age}" for lo, calls, age in s["timeline"]))
            if args.routes:
                print("  writer requests by route (whole run): " + ", ".join(f"{k} {n}" for k, n in s["routes"]))
            if s["errors"]:
                print(f"  sweep reader errors: {s['errors']}")
            verdicts.check("sweep: 429s received by the writers == 0", s["429"] == 0, str(s["429"]))
    return verdicts.report()


if __name__ == "__main__":
    sys.exit(main())
