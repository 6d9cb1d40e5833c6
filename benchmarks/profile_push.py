"""The CPU one push costs the training process, split by phase, and the HTTP requests it makes.

A child process (fresh, pointed at a `LocalHub` that runs in this parent process, so the server's CPU is not
counted) builds an `HFSummaryWriter` on one run folder, makes its first push (repo and model card), then repeats:
log `--steps-per-push` steps of four scalars, `flush()` (outside the measurement: that is logging, not pushing),
push, measure. The one event file grows a little at each push, as in a training run.

Printed per push (median over a round's pushes, then over rounds; a fresh child per round):
- process CPU: the whole child during the push (`getrusage`; its main thread only waits on the Future), so it also
  holds the writer thread's flush and the push's deadline timer thread;
- pushing thread CPU: `time.thread_time()` of our thread inside the push (and its budget check), split into the
  requests (httpx2), huggingface_hub around them, and our own work (plan, state, locks, registry);
- a table of phases: each probed function's CPU in that thread, inclusive and exclusive of the phases it calls
  (nested phases show as `outer > inner`), and calls per push. `http` is one request (`httpx2.Client.request`):
  `build request` (URL, headers, body), `send` (hooks, auth), `transport` (httpcore2's pool and h11), `read body`;
  `new connection` appears when a connection is opened;
- the requests of a push, by method and path (repo, revision and hashes replaced by placeholders).

Probes are looked up by name and skipped when missing (listed at the end), so the script runs on other versions of
the package; the push itself is found as `Committer.push` or `Schedule.push` (add others to `PUSH_ROOTS`).

`--mode triggered` pushes with `scheduler.trigger().result()` (as bench_logging.py (b) does); `--mode scheduled`
lets the writer's own schedule push (`commit_every` of `--interval` s), which also reads the repo's history for the
commit budget before each push. `--bare` runs without the phase probes (they cost about 1 ms a push themselves).
`--cprofile N` adds cProfile (on thread CPU time, so inflated about 4x) of the pushes: the N functions with the most
own time. `--patch FILE` runs a Python file in the child before the writer is built: monkeypatches, to try a
reduction and measure it.

The machine is small and shared: repeat, and compare configurations in alternation (`--bare --rounds 5`).

    .venv/bin/python benchmarks/profile_push.py
    .venv/bin/python benchmarks/profile_push.py --mode scheduled --pushes 30
    .venv/bin/python benchmarks/profile_push.py --bare --rounds 5
    .venv/bin/python benchmarks/profile_push.py --cprofile 40
"""

from __future__ import annotations

import argparse
import functools
import re
import resource
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from _common import child_env, emit_result, format_table, median, parse_args_or_run_child, run_child

from hf_summary.testing import LocalHub

THREAD_PREFIX = "hf_summary-"  # our background threads; a push is recorded in the one that runs it


class Probe:
    """CPU time of wrapped functions in the thread that pushes, per push, inclusive and exclusive of nested phases."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.pushes: list[dict[str, Any]] = []
        self._current: dict[str, list[float]] | None = None
        self._requests: list[str] | None = None
        self._owner: int | None = None  # the thread recording the open push
        self._stack: list[list[Any]] = []  # [path, CPU of nested phases]

    def wrap(self, owner: Any, attr: str, name: str, root: bool = False) -> None:
        """Time `owner.attr` as the phase `name`; a root phase opens a push's record (the others need one open)."""
        original = getattr(owner, attr)
        if not self.enabled and not root:
            return

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            with self.phase(name, root):
                return original(*args, **kwargs)

        setattr(owner, attr, timed)

    def wrap_context(self, owner: Any, attr: str, name: str) -> None:
        """Time entering and leaving a context manager returned by `owner.attr`, not the body it runs."""
        original = getattr(owner, attr)
        if not self.enabled:
            return
        probe = self

        @functools.wraps(original)
        @contextmanager
        def timed(*args: Any, **kwargs: Any) -> Iterator[Any]:
            manager = original(*args, **kwargs)
            with probe.phase(f"{name} (enter)"):
                value = manager.__enter__()
            try:
                yield value
            except BaseException:
                with probe.phase(f"{name} (exit)"):
                    if not manager.__exit__(*sys.exc_info()):
                        raise
            else:
                with probe.phase(f"{name} (exit)"):
                    manager.__exit__(None, None, None)

        setattr(owner, attr, timed)

    def request(self, label: str) -> None:
        if self._requests is not None and threading.get_ident() == self._owner:
            self._requests.append(label)

    @contextmanager
    def phase(self, name: str, root: bool = False) -> Iterator[None]:
        thread = threading.current_thread()
        if root and self._current is None and thread.name.startswith(THREAD_PREFIX):
            self._current, self._requests, self._owner = defaultdict(lambda: [0.0, 0.0, 0]), [], thread.ident
        if self._current is None or thread.ident != self._owner:
            yield
            return
        path = f"{self._stack[-1][0]} > {name}" if self._stack else name
        frame: list[Any] = [path, 0.0]
        self._stack.append(frame)
        start = time.thread_time()
        try:
            yield
        finally:
            spent = time.thread_time() - start
            self._stack.pop()
            row = self._current[path]
            row[0] += spent
            row[1] += spent - frame[1]
            row[2] += 1
            if self._stack:
                self._stack[-1][1] += spent
            elif name == "push":  # a budget check stays open: the push it allowed follows
                self.pushes.append({"phases": dict(self._current), "requests": self._requests})
                self._current, self._requests, self._owner = None, None, None


def _request_label(method: str, url: str, repo_id: str) -> str:
    path = re.sub(r"^[a-z]+://[^/]+", "", url).split("?")[0]
    path = path.replace(repo_id, "{repo}")
    path = re.sub(r"/[0-9a-f]{64}(/|$)", r"/{sha256}\1", path)
    path = re.sub(r"/(main|[0-9a-f]{40})(/|$)", r"/{rev}\2", path)
    return f"{method} {path}"


# (module, attribute, phase): functions a push calls, from the scheduling thread down to the HTTP client. Missing
# ones are skipped, so that the script runs on other versions of the package (names printed with --verbose).
PUSH_ROOTS = [
    ("hf_summary.upload.committer", "Committer.push", "push"),
    ("hf_summary.upload.schedule", "Schedule.push", "push"),
]
BUDGET_ROOTS = [
    ("hf_summary.upload.committer", "Committer._budget_spent", "budget check"),
    ("hf_summary.upload.schedule", "Schedule._held_back", "budget check"),
]
PHASES = [
    ("hf_summary.upload.hub", "HubClient.commit_ages", "commit_ages"),
    ("hf_summary.upload.hub", "HubClient.ensure_repo", "ensure_repo"),
    ("hf_summary.upload.machine", "MachineRegistry.forget_finished", "machine.forget_finished"),
    ("hf_summary.upload.machine", "MachineRegistry._read", "registry json read"),
    ("hf_summary.upload.machine", "MachineRegistry._write", "registry json write"),
    ("hf_summary.upload.uploader", "Uploader.begin", "uploader.begin"),
    ("hf_summary.upload.uploader", "Uploader._operations", "operations (hash)"),
    ("hf_summary.upload.uploader", "Uploader.pending", "uploader.pending"),
    ("hf_summary.upload.uploader", "Batch.record", "batch.record"),
    ("hf_summary.upload.state", "UploadState.load", "state.load"),
    ("hf_summary.upload.state", "UploadState.save", "state.save"),
    ("hf_summary.upload.state", "UploadState._read", "state json read"),
    ("hf_summary.upload.plan", "UploadPlanner.plan", "plan"),
    ("hf_summary.upload.plan", "list_files", "list_files"),
    ("hf_summary.upload.plan", "scan_records", "scan_records"),  # plan's own name for it
    ("filelock", "BaseFileLock.acquire", "filelock acquire"),
    ("filelock", "BaseFileLock.release", "filelock release"),
    ("hf_summary.upload.hub", "HubClient.commit", "hub.commit"),
    ("hf_summary.upload.hub", "HubClient._card_operation", "model card"),
    ("huggingface_hub", "HfApi.preupload_lfs_files", "preupload"),
    ("huggingface_hub", "HfApi.create_commit", "create_commit"),
    ("hf_summary.upload.hub", "HubClient._confirm", "confirm (paths-info)"),
    ("hf_summary.upload.committer", "Committer._squash_if_asked", "squash check"),
    ("huggingface_hub.utils._headers", "build_hf_headers", "build_hf_headers"),
    ("httpx2", "Response.json", "response.json"),
    # One request: Client.request builds it (URL, headers, body) and sends it; streamed ones call build_request and
    # send themselves. Below send: auth and event hooks, then the transport (httpcore2's pool and h11), then the body.
    ("httpx2", "Client.request", "http"),
    ("httpx2", "Client.build_request", "build request"),
    ("httpx2", "Client.send", "send"),
    ("httpx2", "HTTPTransport.handle_request", "transport"),
    ("httpx2", "Response.read", "read body"),
    ("httpcore2._sync.connection", "HTTPConnection._connect", "new connection"),
]
CONTEXT_PHASES = [
    ("hf_summary.upload.machine", "MachineRegistry.turn", "machine.turn"),
]


def _resolve(module: str, attribute: str) -> tuple[Any, str] | None:
    import importlib

    try:
        owner: Any = importlib.import_module(module)
    except ImportError:
        return None
    *path, name = attribute.split(".")
    for part in path:
        owner = getattr(owner, part, None)
        if owner is None:
            return None
    return (owner, name) if hasattr(owner, name) else None


def install_probes(probe: Probe, repo_id: str) -> list[str]:
    """Wrap the functions a push calls; returns those not found in this version of the package."""
    import httpx2

    missing = []
    for table, root, context in ((PUSH_ROOTS, True, False), (BUDGET_ROOTS, True, False), (PHASES, False, False),
                                 (CONTEXT_PHASES, False, True)):
        for module, attribute, name in table:
            found = _resolve(module, attribute)
            if found is None:
                missing.append(f"{module}:{attribute}")
            elif context:
                probe.wrap_context(*found, name)
            else:
                probe.wrap(*found, name, root=root)

    send = httpx2.Client.send

    @functools.wraps(send)
    def counted_send(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
        probe.request(_request_label(request.method, str(request.url), repo_id))
        return send(self, request, *args, **kwargs)

    httpx2.Client.send = counted_send  # type: ignore[method-assign]
    return missing


# Child: the run -------------------------------------------------------------------------------------------------------


def child(params: dict[str, Any]) -> None:
    import inspect

    probe = Probe(enabled=not params["bare"])
    if params["patch"]:
        exec(compile(Path(params["patch"]).read_text(), params["patch"], "exec"), {"__name__": "patch"})
    missing = install_probes(probe, params["repo_id"])
    profiler = _profile_pushes(params["cprofile"])

    from hf_summary import HFSummaryWriter

    scheduled = params["mode"] == "scheduled"
    options: dict[str, Any] = {
        "crash_upload": False,  # the guardian is another process: keep it off the shared cores
        "max_commits_per_hour": 10_000,  # the history is read before a scheduled push; the budget never binds
    }
    accepted = inspect.signature(HFSummaryWriter).parameters
    writer = HFSummaryWriter(params["repo_id"], logdir=params["logdir"],
                             commit_every=params["interval"] / 60 if scheduled else 60,
                             **{key: value for key, value in options.items() if key in accepted})
    step = 0

    def log() -> None:
        nonlocal step
        for _ in range(params["steps_per_push"]):
            for tag in ("loss", "accuracy", "grad_norm", "lr"):
                writer.add_scalar(f"train/{tag}", 1.0 / (step + 1), step)
            step += 1
        writer.flush()  # logging, not pushing: outside the measurement

    log()
    writer.scheduler.trigger().result()  # the first push also checks the model card
    first = probe.pushes[-1] if probe.pushes else None
    probe.pushes.clear()
    if profiler is not None:
        profiler.active = True
    process_cpu = []
    for _ in range(params["pushes"]):
        log()
        before = _process_cpu()
        (writer.scheduler.next_push() if scheduled else writer.scheduler.trigger()).result()
        process_cpu.append(_process_cpu() - before)
    writer.close()
    result: dict[str, Any] = {"process": process_cpu, "pushes": probe.pushes, "first": first, "missing": missing}
    if profiler is not None:
        result["cprofile"] = _top_functions(profiler, params["cprofile"], params["pushes"])
    emit_result(result)


def _process_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _profile_pushes(count: int) -> Any:
    """cProfile, on CPU time, in the pushing thread around each push after the first (and its budget check)."""
    if not count:
        return None
    import cProfile

    profiler: Any = cProfile.Profile(time.thread_time)  # CPU, not wall time (the waits on the socket)
    profiler.active = False
    for module, attribute, _name in PUSH_ROOTS + BUDGET_ROOTS:
        found = _resolve(module, attribute)
        if found is None:
            continue
        owner, name = found
        original = getattr(owner, name)

        @functools.wraps(original)
        def profiled(*args: Any, _original: Callable[..., Any] = original, **kwargs: Any) -> Any:
            if not profiler.active or not threading.current_thread().name.startswith(THREAD_PREFIX):
                return _original(*args, **kwargs)
            profiler.enable()
            try:
                return _original(*args, **kwargs)
            finally:
                profiler.disable()

        setattr(owner, name, profiled)
    return profiler


def _top_functions(profiler: Any, count: int, pushes: int) -> list[list[Any]]:
    import pstats

    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    rows = []
    for (filename, line, name), (_cc, calls, own, cumulative, _callers) in stats.items():
        short = re.sub(r".*site-packages/", "", filename)
        short = re.sub(r".*/(hf_summary/)", r"\1", short)
        rows.append([f"{short}:{line} {name}", calls / pushes, own * 1000 / pushes, cumulative * 1000 / pushes])
    rows.sort(key=lambda row: -row[2])
    return rows[:count]


# Parent ---------------------------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pushes", type=int, default=40, help="measured pushes per round (after the first)")
    parser.add_argument("--rounds", type=int, default=3, help="fresh child processes")
    parser.add_argument("--steps-per-push", type=int, default=10, help="steps of 4 scalars logged between pushes")
    parser.add_argument("--mode", choices=("triggered", "scheduled"), default="triggered")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between scheduled pushes")
    parser.add_argument("--bare", action="store_true", help="no phase probes: only the CPU per push")
    parser.add_argument("--cprofile", type=int, default=0, metavar="N", help="print the N costliest functions")
    parser.add_argument("--patch", default="", help="a Python file of monkeypatches run in the child first")
    args = parse_args_or_run_child(parser, child)
    if args is None:
        return 0
    with tempfile.TemporaryDirectory(prefix="profile-push-") as tmp, LocalHub(root=Path(tmp, "hub")) as hub:
        rounds = []
        for r in range(args.rounds):
            params = {"repo_id": f"{hub.user}/profile-push-{r}", "logdir": str(Path(tmp, f"run-{r}")),
                      "pushes": args.pushes, "steps_per_push": args.steps_per_push, "mode": args.mode,
                      "interval": args.interval, "bare": args.bare, "cprofile": args.cprofile,
                      "patch": str(Path(args.patch).resolve()) if args.patch else ""}
            rounds.append(run_child(__file__, params, child_env(hub, Path(tmp, f"hf_home-{r}")), timeout=900))
    report(args, rounds)
    return 0


def report(args: argparse.Namespace, rounds: list[dict[str, Any]]) -> None:
    ms = 1000.0
    pushes = [r["pushes"] for r in rounds]

    def per_push(value: Callable[[dict[str, Any]], float]) -> float:
        """Median over a round's pushes, then median over rounds."""
        return median([median([value(p) for p in round_pushes]) for round_pushes in pushes])

    def incl(p: dict[str, Any], match: Callable[[str], bool]) -> float:
        return sum(row[0] for path, row in p["phases"].items() if match(path))

    def leaf(path: str) -> str:
        return path.rsplit(" > ", 1)[-1]

    print(f"{args.mode} pushes, {args.pushes} per round, {args.rounds} rounds (fresh process each); "
          "CPU per push: median over a round's pushes, then over rounds")
    per_round = ", ".join(f"{median(r['process']) * ms:.2f}" for r in rounds)
    print(f"  process CPU (all threads):     {median([median(r['process']) for r in rounds]) * ms:6.2f} ms "
          f"(rounds: {per_round})")
    roots = ("push", "budget check")
    print(f"  pushing thread CPU:            {per_push(lambda p: incl(p, lambda x: x in roots)) * ms:6.2f} ms"
          f"{'' if args.bare else ' (probes included)'}")
    print(f"  requests:                      {per_push(lambda p: len(p['requests'])):6g}")
    missing = sorted({name for r in rounds for name in r.get("missing", [])})
    if args.bare:
        return
    http = per_push(lambda p: incl(p, lambda x: leaf(x) == "http"))
    client = per_push(lambda p: incl(p, lambda x: x in ("push > hub.commit", "budget check > commit_ages"))) - http
    total = per_push(lambda p: incl(p, lambda x: x in roots))
    print(f"    in requests (httpx2):        {http * ms:6.2f} ms, "
          f"{http * ms / max(per_push(lambda p: len(p['requests'])), 1):.2f} ms a request")
    print(f"    huggingface_hub around them: {client * ms:6.2f} ms")
    print(f"    ours (plan, state, locks):   {(total - http - client) * ms:6.2f} ms")
    print()
    paths = list(dict.fromkeys(path for round_pushes in pushes for p in round_pushes for path in p["phases"]))

    def column(path: str, index: int) -> float:
        return per_push(lambda p: p["phases"].get(path, [0.0, 0.0, 0])[index])

    rows = [[path, f"{column(path, 0) * ms:.3f}", f"{column(path, 1) * ms:.3f}", f"{column(path, 2):g}"]
            for path in paths]
    print(format_table(["phase (pushing thread)", "incl ms", "self ms", "calls"], rows))
    inside = ("build request", "send", "transport", "read body")
    count = per_push(lambda p: len(p["requests"]))

    def own(p: dict[str, Any], name: str) -> float:
        return sum(row[1] for path, row in p["phases"].items() if leaf(path) == name)

    split = [[name, f"{per_push(functools.partial(own, name=name)) * ms / max(count, 1):.3f}"]
             for name in ("http", *inside)]
    print(format_table(["one request, self CPU of", "ms"], split))
    labels: dict[str, list[int]] = defaultdict(list)
    for round_pushes in pushes:
        for p in round_pushes:
            for label in set(p["requests"]):
                labels[label].append(p["requests"].count(label))
    print()
    print(format_table(["request", "per push"], [[label, f"{median(counts):g}"] for label, counts in labels.items()]))
    first = rounds[0]["first"]
    if first:
        print(f"\nfirst push (model card): {first['phases']['push'][0] * ms:.2f} ms, "
              f"{len(first['requests'])} requests: {', '.join(first['requests'])}")
    if missing:
        print(f"\nnot found in this version (not probed): {', '.join(missing)}")
    if args.cprofile:
        print()
        rows = [[name, f"{calls:g}", f"{own:.3f}", f"{cum:.3f}"] for name, calls, own, cum in rounds[0]["cprofile"]]
        print(format_table(["function (cProfile on thread CPU, round 1; inflated)", "calls/push", "own ms", "cum ms"],
                           rows))


if __name__ == "__main__":
    sys.exit(main())
