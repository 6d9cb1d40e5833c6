"""LocalHub has the Hub's Storage Buckets and per-user API rate limit: the real huggingface_hub client, unchanged.

huggingface_hub reads HF_HUB_DISABLE_XET and HF_ENDPOINT at import, and conftest.py may run the in-process client with
Xet off, so bucket clients (bucket uploads always go through Xet) run in subprocesses against a LocalHub started by
the test, each with its own HF_HOME and HF_XET_CACHE (hf_xet's shard cache is keyed by the server's address). The
in-process checks speak plain HTTP. Every wait is bounded: process ends, queue reads with timeouts, socket timeouts.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from hf_summary.testing import LocalHub, buckets

from .helpers import xet_client_env

BUCKET = "local-user/run-logs"
_TIMEOUT = 180


@pytest.fixture
def bucket_hub(tmp_path: Path) -> Iterator[LocalHub]:
    with LocalHub(tmp_path / "hub", xet=True) as hub:
        yield hub


def client_env(hub: LocalHub, home: Path) -> dict[str, str]:
    return {**xet_client_env(hub, home), "HF_HUB_DISABLE_PROGRESS_BARS": "1"}


def run_client(hub: LocalHub, home: Path, code: str, *args: str) -> dict:
    """Run client code in a subprocess against `hub`; it prints one JSON object last, returned here."""
    proc = subprocess.run(
        [sys.executable, "-c", code, *args], env=client_env(hub, home), capture_output=True, text=True,
        timeout=_TIMEOUT,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def api_get(hub: LocalHub, path: str, *, method: str = "GET", data: bytes | None = None) -> tuple[int, dict, bytes]:
    """Status, headers (lower-case names) and body of a plain HTTP call with the hub's token."""
    request = urllib.request.Request(
        f"{hub.endpoint}{path}", method=method, data=data, headers={"Authorization": f"Bearer {hub.token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as err:
        return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read()


UPLOAD_AND_READ = """
import json, sys
from pathlib import Path
from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError
bucket, work = sys.argv[1], Path(sys.argv[2])
api = HfApi()
url = api.create_bucket(bucket, private=True)
again = api.create_bucket(bucket, exist_ok=True)
try:
    api.create_bucket(bucket)
    conflict = None
except HfHubHTTPError as err:
    conflict = err.response.status_code
api.batch_bucket_files(bucket, add=[((work / "weights.bin").read_bytes(), "ckpt/weights.bin"),
                                    (str(work / "metrics.jsonl"), "logs/metrics.jsonl"),
                                    (b"first", "logs/note.txt"),
                                    (b"top", "top.txt")])
before = {f.path: f.xet_hash for f in api.list_bucket_tree(bucket, recursive=True)}
api.batch_bucket_files(bucket, add=[(b"second, longer", "logs/note.txt")])
tree = [[f.type, f.path, getattr(f, "size", None), getattr(f, "xet_hash", None)]
        for f in api.list_bucket_tree(bucket, recursive=True)]
top = [[f.type, f.path] for f in api.list_bucket_tree(bucket)]
under_logs = [f.path for f in api.list_bucket_tree(bucket, prefix="logs")]
infos = {f.path: [f.size, f.xet_hash] for f in api.get_bucket_paths_info(bucket, ["logs/note.txt", "missing.txt"])}
out = work / "download"
api.download_bucket_files(bucket, [(p, out / p) for p in ("ckpt/weights.bin", "logs/metrics.jsonl", "logs/note.txt")])
info = api.bucket_info(bucket)
print(json.dumps({
    "url": url.bucket_id, "again": again.bucket_id, "conflict": conflict, "before": before, "tree": tree,
    "top": top, "under_logs": under_logs, "infos": infos, "private": info.private, "files": info.total_files,
    "size": info.size,
    "downloaded": {p: (out / p).read_bytes().hex()
                   for p in ("ckpt/weights.bin", "logs/metrics.jsonl", "logs/note.txt")},
}))
"""


def test_create_batch_overwrite_list_and_download(
    bucket_hub: LocalHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(buckets, "TREE_PAGE_SIZE", 2)  # the server runs in this process: listings take pages
    weights = os.urandom(300_000)  # random: each chunk is new, nothing for Xet to dedup within the file
    metrics = b"".join(json.dumps({"step": i, "loss": 1 / (i + 1)}).encode() + b"\n" for i in range(2000))
    (tmp_path / "weights.bin").write_bytes(weights)
    (tmp_path / "metrics.jsonl").write_bytes(metrics)

    out = run_client(bucket_hub, tmp_path, UPLOAD_AND_READ, BUCKET, str(tmp_path))

    assert out["url"] == out["again"] == BUCKET
    assert out["conflict"] == 409
    expected = {"ckpt/weights.bin": weights, "logs/metrics.jsonl": metrics, "logs/note.txt": b"second, longer"}
    assert {p: bytes.fromhex(h) for p, h in out["downloaded"].items()} == expected
    tree = {path: (kind, size, xet_hash) for kind, path, size, xet_hash in out["tree"]}
    assert sorted(tree) == ["ckpt/weights.bin", "logs/metrics.jsonl", "logs/note.txt", "top.txt"]
    assert {p: s for p, (_, s, _) in tree.items()} == {
        "ckpt/weights.bin": len(weights), "logs/metrics.jsonl": len(metrics), "logs/note.txt": 14, "top.txt": 3,
    }
    # Overwritten in place: same path, new content and hash; the other files kept theirs.
    assert tree["logs/note.txt"][2] != out["before"]["logs/note.txt"]
    assert {p: h for p, (_, _, h) in tree.items() if p != "logs/note.txt"} == {
        p: h for p, h in out["before"].items() if p != "logs/note.txt"
    }
    assert out["top"] == [["directory", "ckpt"], ["directory", "logs"], ["file", "top.txt"]]
    assert out["under_logs"] == ["logs/metrics.jsonl", "logs/note.txt"]
    assert out["infos"] == {"logs/note.txt": [14, tree["logs/note.txt"][2]]}
    assert (out["private"], out["files"], out["size"]) == (True, 4, len(weights) + len(metrics) + 14 + 3)
    stats = bucket_hub.stats
    assert (stats.bucket_batches, stats.bucket_operations, stats.bucket_failed_operations) == (2, 5, 0)
    assert stats.xet_shards >= 2 and stats.commits == 0

    # Persisted under the root, like repositories: a server started again on it has the bucket.
    bucket_hub.stop()
    with LocalHub(bucket_hub.root, xet=True) as again:
        assert again.bucket_files(BUCKET) == {**expected, "top.txt": b"top"}


PARTIAL_FAILURE = """
import json, sys
from huggingface_hub import HfApi
from huggingface_hub.errors import BucketBatchError
bucket = sys.argv[1]
api = HfApi()
api.create_bucket(bucket)
api.batch_bucket_files(bucket, add=[(b"doomed", "old.txt")])
results = []
for ops in (dict(add=[(b"kept", "ok.txt")], copy=[("bucket", bucket, "0" * 64, "bad.txt")], delete=["old.txt"]),
            dict(copy=[("bucket", bucket, "1" * 64, "worse.txt")])):
    try:
        api.batch_bucket_files(bucket, **ops)
        results.append(None)
    except BucketBatchError as err:
        results.append({"status": err.response.status_code, "failures": err.failures})
print(json.dumps({"results": results, "paths": sorted(f.path for f in api.list_bucket_tree(bucket, recursive=True))}))
"""


def test_a_partial_failure_is_a_bucket_batch_error_and_the_rest_is_applied(
    bucket_hub: LocalHub, tmp_path: Path
) -> None:
    out = run_client(bucket_hub, tmp_path, PARTIAL_FAILURE, BUCKET)

    partial, total = out["results"]
    assert partial["status"] == 200
    assert [f["path"] for f in partial["failures"]] == ["bad.txt"]
    assert "not found" in partial["failures"][0]["error"]
    assert total["status"] == 422 and [f["path"] for f in total["failures"]] == ["worse.txt"]
    assert out["paths"] == ["ok.txt"]  # non-transactional: the add and the delete of the batch were applied
    assert bucket_hub.bucket_files(BUCKET) == {"ok.txt": b"kept"}
    assert bucket_hub.stats.bucket_failed_operations == 2


FOLLOW = """
import json, queue, sys, threading
import huggingface_hub._bucket_live_follow as live
from huggingface_hub import HfApi
bucket = sys.argv[1]
HfApi().create_bucket(bucket, exist_ok=True)
ready = threading.Event()
parse = live.parse_follow_event
def parse_and_see_ready(name, data):
    event = parse(name, data)
    if isinstance(event, live._Ready):
        ready.set()
    return event
live.parse_follow_event = parse_and_see_ready
changes = queue.Queue()
follower = live.BucketFollower(
    endpoint=HfApi().endpoint, bucket_id=bucket, on_changes=lambda batch: [changes.put(c) for c in batch],
    on_reconcile=lambda: None, is_alive=lambda: True,
)
follower.start()
assert ready.wait(120), "the feed never became ready"
print("READY", flush=True)
seen = []
while not any(c.op == "update" for c in seen):
    seen.append(changes.get(timeout=120))
follower.stop()
print(json.dumps([[c.path, c.op, c.size, c.xet_hash, c.uploaded_at is not None, c.mtime is not None] for c in seen]))
"""

CHANGE = """
import json, sys
from huggingface_hub import HfApi
bucket = sys.argv[1]
api = HfApi()
api.batch_bucket_files(bucket, add=[(b"step 1", "live/scalars.jsonl")])
first = next(iter(api.get_bucket_paths_info(bucket, ["live/scalars.jsonl"]))).xet_hash
api.batch_bucket_files(bucket, add=[(b"step 1 step 2", "live/scalars.jsonl")])
second = next(iter(api.get_bucket_paths_info(bucket, ["live/scalars.jsonl"]))).xet_hash
print(json.dumps([first, second]))
"""


def test_the_change_feed_delivers_changes_made_after_following_started(bucket_hub: LocalHub, tmp_path: Path) -> None:
    follower = subprocess.Popen(
        [sys.executable, "-c", FOLLOW, BUCKET], env=client_env(bucket_hub, tmp_path / "follower"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        lines: queue.Queue[str] = queue.Queue()
        reader = threading.Thread(target=lambda: [lines.put(line) for line in follower.stdout or ()], daemon=True)
        reader.start()
        assert lines.get(timeout=_TIMEOUT).strip() == "READY"  # subscribed: what follows comes live

        first, second = run_client(bucket_hub, tmp_path / "writer", CHANGE, BUCKET)

        assert follower.wait(timeout=_TIMEOUT) == 0, (follower.stderr.read() if follower.stderr else "")[-4000:]
        reader.join(timeout=_TIMEOUT)
        seen = json.loads(lines.get(timeout=_TIMEOUT))
    finally:
        follower.kill()
        follower.communicate(timeout=_TIMEOUT)
    assert seen == [
        ["live/scalars.jsonl", "add", 6, first, True, True],
        ["live/scalars.jsonl", "update", 13, second, True, True],
    ]


def read_events(hub: LocalHub, query: str) -> list[tuple[str, dict]]:
    """The events of a feed stream up to `ready` (or a `reset`, which ends it), read over plain HTTP."""
    request = urllib.request.Request(
        f"{hub.endpoint}/api/buckets/{BUCKET}/events{query}",
        headers={"Authorization": f"Bearer {hub.token}", "Accept": "text/event-stream"},
    )
    events: list[tuple[str, dict]] = []
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.headers["Content-Type"].startswith("text/event-stream")
        name = ""
        for raw in response:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                name = line[len("event: ") :]
            elif line.startswith("data: "):
                events.append((name, json.loads(line[len("data: ") :])))
                if name in ("ready", "reset"):
                    return events
    return events


def test_the_change_feed_replays_from_a_cursor_and_resets_an_unknown_one(bucket_hub: LocalHub, tmp_path: Path) -> None:
    run_client(bucket_hub, tmp_path, CHANGE.replace("api = HfApi()", "api = HfApi(); api.create_bucket(bucket)"),
               BUCKET)

    live_only = read_events(bucket_hub, "")
    assert [name for name, _ in live_only] == ["ready"]
    head = live_only[0][1]["cursor"]
    everything = read_events(bucket_hub, "?since=2000-01-01T00:00:00.000Z")
    assert [(n, [(c["path"], c["op"]) for c in d.get("changes", [])]) for n, d in everything] == [
        ("changes", [("live/scalars.jsonl", "add")]), ("changes", [("live/scalars.jsonl", "update")]), ("ready", []),
    ]
    after_first = read_events(bucket_hub, f"?cursor={everything[0][1]['cursor']}")
    assert [n for n, _ in after_first] == ["changes", "ready"] and after_first[0][1]["cursor"] == head
    assert read_events(bucket_hub, f"?cursor={head}") == [("ready", {"cursor": head})]
    assert [n for n, _ in read_events(bucket_hub, "?cursor=from-another-run.1")] == ["reset"]
    status, _, _ = api_get(bucket_hub, f"/api/buckets/{BUCKET}/events?cursor=garbage")
    assert status == 400  # the client then steps back to since=


FILESYSTEM = """
import json, sys
from huggingface_hub import HfApi, HfFileSystem
bucket, path = sys.argv[1], sys.argv[2]
api = HfApi()
api.create_bucket(bucket)
api.batch_bucket_files(bucket, add=[(path, "tensorboard/run1/events.out.tfevents.1")])
fs = HfFileSystem()
root = f"hf://buckets/{bucket}"
with fs.open(f"{root}/tensorboard/run1/events.out.tfevents.1", "rb", block_size=4096) as f:
    f.seek(10_000)
    ranged = f.read(5_000)
print(json.dumps({
    "ls": fs.ls(f"{root}/tensorboard", detail=False),
    "isdir": fs.isdir(f"{root}/tensorboard/run1"),
    "size": fs.info(f"{root}/tensorboard/run1/events.out.tfevents.1")["size"],
    "ranged": ranged.hex(),
    "whole": fs.cat_file(f"{root}/tensorboard/run1/events.out.tfevents.1").hex(),
}))
"""


def test_hffilesystem_lists_and_reads_a_bucket_file(bucket_hub: LocalHub, tmp_path: Path) -> None:
    content = os.urandom(200_000)
    (tmp_path / "events").write_bytes(content)

    out = run_client(bucket_hub, tmp_path, FILESYSTEM, BUCKET, str(tmp_path / "events"))

    assert out["ls"] == [f"buckets/{BUCKET}/tensorboard/run1"]
    assert out["isdir"] is True
    assert out["size"] == len(content)
    assert bytes.fromhex(out["ranged"]) == content[10_000:15_000]
    assert bytes.fromhex(out["whole"]) == content


LIVE_FILESYSTEM = """
import json, sys, threading
import huggingface_hub._bucket_live_follow as live
from huggingface_hub import HfApi, HfFileSystem
bucket = sys.argv[1]
HfApi().create_bucket(bucket)
HfApi().batch_bucket_files(bucket, add=[(b"old", "tensorboard/run1/events.out.tfevents.1")])
ready = threading.Event()
parse = live.parse_follow_event
def parse_and_see_ready(name, data):
    event = parse(name, data)
    if isinstance(event, live._Ready):
        ready.set()
    return event
live.parse_follow_event = parse_and_see_ready
root = f"hf://buckets/{bucket}/tensorboard/run1"
plain, following = HfFileSystem(), HfFileSystem(live_follow=True)
before = plain.ls(root, detail=False)
assert following.ls(root, detail=False) == before  # starts following the bucket
follower = next(f for (_, _, followed), (f, _) in live.BUCKET_FOLLOWERS.items() if followed == bucket)
arrived = threading.Event()
push = follower._on_changes
def push_and_see_the_new_file(changes):
    push(changes)
    if any(c.path.endswith(".2") for c in changes):  # a replay of the first upload may come before
        arrived.set()
follower._on_changes = push_and_see_the_new_file
assert ready.wait(120), "the feed never became ready"
print("READY", flush=True)
assert arrived.wait(120), "no change arrived"
print(json.dumps({"before": before, "plain": plain.ls(root, detail=False),
                  "following": following.ls(root, detail=False)}))
"""


def test_hffilesystem_live_follow_sees_a_new_file_without_a_refresh(bucket_hub: LocalHub, tmp_path: Path) -> None:
    reader_proc = subprocess.Popen(
        [sys.executable, "-c", LIVE_FILESYSTEM, BUCKET], env=client_env(bucket_hub, tmp_path / "reader"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        lines: queue.Queue[str] = queue.Queue()
        reader = threading.Thread(target=lambda: [lines.put(line) for line in reader_proc.stdout or ()], daemon=True)
        reader.start()
        assert lines.get(timeout=_TIMEOUT).strip() == "READY"

        run_client(bucket_hub, tmp_path / "writer", """
import json, sys
from huggingface_hub import HfApi
HfApi().batch_bucket_files(sys.argv[1], add=[(b"new", "tensorboard/run1/events.out.tfevents.2")])
print("{}")
""", BUCKET)

        errors = reader_proc.stderr
        assert reader_proc.wait(timeout=_TIMEOUT) == 0, (errors.read() if errors else "")[-4000:]
        reader.join(timeout=_TIMEOUT)
        out = json.loads(lines.get(timeout=_TIMEOUT))
    finally:
        reader_proc.kill()
        reader_proc.communicate(timeout=_TIMEOUT)
    run = f"buckets/{BUCKET}/tensorboard/run1"
    assert out["before"] == out["plain"] == [f"{run}/events.out.tfevents.1"]  # without live follow: a stale cache
    assert out["following"] == [f"{run}/events.out.tfevents.1", f"{run}/events.out.tfevents.2"]


def test_api_rate_limit_headers_and_429_past_the_quota(bucket_hub: LocalHub) -> None:
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError
    from huggingface_hub.utils import parse_ratelimit_headers

    status, headers, _ = api_get(bucket_hub, "/api/buckets/local-user/limited", method="POST", data=b"{}")
    assert status == 200 and "ratelimit" not in headers  # off by default

    bucket_hub.set_limits(api_limit=(4, 300))
    answers = [
        api_get(bucket_hub, "/api/buckets/local-user/limited"),
        api_get(bucket_hub, "/api/buckets/local-user/limited/batch", method="POST", data=b""),  # a batch counts
        api_get(bucket_hub, "/api/buckets/local-user/missing"),  # so does an error answer
        api_get(bucket_hub, "/api/whoami-v2"),
    ]
    assert [status for status, _, _ in answers] == [200, 200, 404, 200]
    infos = [parse_ratelimit_headers(headers) for _, headers, _ in answers]
    assert [(i.resource_type, i.remaining, i.limit, i.window_seconds) for i in infos if i is not None] == [
        ("api", 3, 4, 300), ("api", 2, 4, 300), ("api", 1, 4, 300), ("api", 0, 4, 300),
    ]
    assert all(0 < i.reset_in_seconds <= 300 for i in infos if i is not None)
    assert answers[0][1]["ratelimit-policy"] == '"fixed window";"api";q=4;w=300'

    status, headers, _ = api_get(bucket_hub, "/api/buckets/local-user/limited")
    assert status == 429
    assert headers["ratelimit"].startswith('"api";r=0;t=') and 0 < int(headers["retry-after"]) <= 300
    # The real client reports it as the 'api' rate limit (bucket_info does not retry).
    api = HfApi(endpoint=bucket_hub.endpoint, token=bucket_hub.token)
    with pytest.raises(HfHubHTTPError) as raised:
        api.bucket_info("local-user/limited")
    assert raised.value.response.status_code == 429 and "'api' rate limit" in str(raised.value)
    assert bucket_hub.stats.api_rate_limited == 2

    bucket_hub.set_limits()  # no arguments: no limit, no headers
    status, headers, _ = api_get(bucket_hub, "/api/buckets/local-user/limited")
    assert status == 200 and "ratelimit" not in headers


def test_faults_apply_to_bucket_routes(bucket_hub: LocalHub) -> None:
    assert api_get(bucket_hub, f"/api/buckets/{BUCKET}", method="POST", data=b"{}")[0] == 200
    bucket_hub.set_faults(1.0, kinds=["503"])
    assert api_get(bucket_hub, f"/api/buckets/{BUCKET}")[0] == 503
    assert api_get(bucket_hub, f"/buckets/{BUCKET}/resolve/missing.txt")[0] == 503
    bucket_hub.clear_faults()
    assert api_get(bucket_hub, f"/api/buckets/{BUCKET}")[0] == 200
    assert bucket_hub.stats.faults_injected == 2
