"""LocalHub speaks Xet: the real huggingface_hub + hf_xet clients upload and download through it, unchanged.

huggingface_hub reads HF_HUB_DISABLE_XET at import and conftest.py sets it for the whole session, so Xet clients run
in subprocesses, each test with its own HF_HOME and HF_XET_CACHE (hf_xet's shard cache is keyed by the server's
address, and a cache from another server would make it skip chunks this one never received). Every test starts its
own LocalHub, so the traffic counters it checks are its own.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import struct
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tensorboardX

from hf_summary.testing import LocalHub

REPO = "local-user/xet-run"
EVENTS_PATH = "tensorboard/run1/events.out.tfevents.1700000000.host.1.0"
_HASH = re.compile(r"^[0-9a-f]{64}$")

UPLOAD_FILE = """
import sys
from huggingface_hub import HfApi
api = HfApi()
api.create_repo(sys.argv[1], exist_ok=True)
api.upload_file(path_or_fileobj=sys.argv[2], path_in_repo=sys.argv[3], repo_id=sys.argv[1])
"""

DOWNLOAD = """
import shutil, sys
from huggingface_hub import hf_hub_download
shutil.copyfile(hf_hub_download(sys.argv[1], sys.argv[2]), sys.argv[3])
"""

LIST = """
import json, sys
from huggingface_hub import HfApi
api = HfApi()
tree = {f.path: getattr(f, "xet_hash", None) for f in api.list_repo_tree(sys.argv[1], recursive=True)}
infos = {f.path: f.xet_hash for f in api.get_paths_info(sys.argv[1], sys.argv[2:])}
print(json.dumps({"tree": tree, "paths_info": infos}))
"""


@pytest.fixture
def xet_hub(tmp_path: Path) -> Iterator[LocalHub]:
    with LocalHub(tmp_path / "hub", xet=True) as hub:
        yield hub


def run_client(hub: LocalHub, home: Path, code: str, *args: str, xet: bool = True, **extra_env: str) -> str:
    """Run client code in a subprocess against `hub`, with its own HF_HOME and Xet cache under `home`."""
    env = {name: value for name, value in os.environ.items() if name != "HF_HUB_DISABLE_XET"}
    env.update(hub.env(xet=xet))
    env.update(HF_HOME=str(home / "hf_home"), HF_XET_CACHE=str(home / "xet_cache"), HF_HUB_DISABLE_PROGRESS_BARS="1")
    env.update(extra_env)
    proc = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout


def log_steps(writer: tensorboardX.SummaryWriter, steps: range) -> Path:
    """Log a histogram and a scalar per step (about 10 KB a step), flush, and return the writer's event file."""
    rng = np.random.default_rng(steps.start)
    for step in steps:
        writer.add_histogram("weights", rng.normal(size=1000), step)
        writer.add_scalar("loss", float(rng.random()), step)
    writer.flush()
    (path,) = Path(writer.logdir).glob("events.out.tfevents.*")
    return path


def write_events(logdir: Path, steps: range) -> Path:
    """A finished run's event file."""
    with tensorboardX.SummaryWriter(str(logdir)) as writer:
        return log_steps(writer, steps)


def head(hub: LocalHub, path: str) -> dict[str, str]:
    request = urllib.request.Request(
        f"{hub.endpoint}/{REPO}/resolve/main/{path}", method="HEAD", headers={"Authorization": f"Bearer {hub.token}"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return dict(response.headers)


def test_upload_file_goes_through_xet_and_downloads_back_both_ways(xet_hub: LocalHub, tmp_path: Path) -> None:
    events = write_events(tmp_path / "logs", range(100))
    run_client(xet_hub, tmp_path / "uploader", UPLOAD_FILE, REPO, str(events), EVENTS_PATH)

    stats = xet_hub.stats
    assert stats.lfs_uploads == 0
    assert stats.xet_xorbs >= 1 and stats.xet_shards == 1
    assert stats.xet_xorb_bytes == stats.upload_bytes > 0
    assert stats.commits == 1
    # The server rebuilt the content from the xorbs: what the commit points at is the file's bytes.
    assert xet_hub.repo_files(REPO)[EVENTS_PATH] == events.read_bytes()

    # A Xet client, fresh cache: through the reconstruction API.
    xet_copy = tmp_path / "xet-copy"
    run_client(xet_hub, tmp_path / "xet-reader", DOWNLOAD, REPO, EVENTS_PATH, str(xet_copy))
    assert xet_copy.read_bytes() == events.read_bytes()
    after_xet_download = xet_hub.stats.xet_reconstructions
    assert after_xet_download >= 1

    # A client without Xet: plain bytes from the resolve route, the CAS untouched.
    plain_copy = tmp_path / "plain-copy"
    run_client(xet_hub, tmp_path / "plain-reader", DOWNLOAD, REPO, EVENTS_PATH, str(plain_copy), xet=False)
    assert plain_copy.read_bytes() == events.read_bytes()
    assert xet_hub.stats.xet_reconstructions == after_xet_download


def test_create_commit_of_bytes_and_paths_through_xet(xet_hub: LocalHub, tmp_path: Path) -> None:
    events = write_events(tmp_path / "logs", range(50))
    other = os.urandom(300_000)
    code = """
import sys
from huggingface_hub import CommitOperationAdd, HfApi
api = HfApi()
api.create_repo(sys.argv[1])
api.create_commit(sys.argv[1], commit_message="events", operations=[
    CommitOperationAdd(path_in_repo="a/events.out.tfevents.1", path_or_fileobj=sys.argv[2]),
    CommitOperationAdd(path_in_repo="b/events.out.tfevents.2", path_or_fileobj=open(sys.argv[3], "rb").read()),
    CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=b"# run"),
])
"""
    other_path = tmp_path / "other"
    other_path.write_bytes(other)
    run_client(xet_hub, tmp_path / "client", code, REPO, str(events), str(other_path))

    stats = xet_hub.stats
    assert stats.lfs_uploads == 0
    assert stats.xet_shards >= 1
    assert stats.xet_xorb_bytes >= len(other)  # random bytes do not compress
    files = xet_hub.repo_files(REPO)
    assert files["a/events.out.tfevents.1"] == events.read_bytes()
    assert files["b/events.out.tfevents.2"] == other
    assert files["README.md"] == b"# run"  # a regular file: inline in the commit, not through Xet
    assert xet_hub.xet_hash(REPO, "README.md") is None
    assert _HASH.match(xet_hub.xet_hash(REPO, "b/events.out.tfevents.2") or "")


def test_a_grown_event_file_sends_only_its_new_chunks(xet_hub: LocalHub, tmp_path: Path) -> None:
    writer = tensorboardX.SummaryWriter(str(tmp_path / "logs"))
    events = log_steps(writer, range(300))  # about 3 MB
    uploader = tmp_path / "uploader"  # the same Xet cache for both pushes, as in one training run
    run_client(xet_hub, uploader, UPLOAD_FILE, REPO, str(events), EVENTS_PATH)
    first = xet_hub.stats.xet_xorb_bytes
    size_before = events.stat().st_size

    log_steps(writer, range(300, 315))  # the run goes on: its event file grows by about 5 %
    writer.close()
    appended = events.stat().st_size - size_before
    xet_hub.reset_stats()
    run_client(xet_hub, uploader, UPLOAD_FILE, REPO, str(events), EVENTS_PATH)

    second = xet_hub.stats
    assert second.lfs_uploads == 0 and second.commits == 1
    # The new bytes' share of a full upload, plus the chunk they continue (at most 128 KiB), not `first` again.
    assert appended < size_before / 10
    assert 0 < second.xet_xorb_bytes < first * appended / size_before + 128 * 1024 < first

    # The file is now spread over two uploads' xorbs; downloading it in many small ranges rebuilds it exactly.
    copy = tmp_path / "copy"
    run_client(
        xet_hub, tmp_path / "reader", DOWNLOAD, REPO, EVENTS_PATH, str(copy),
        HF_XET_RECONSTRUCTION_MIN_RECONSTRUCTION_FETCH_SIZE="50000",
        HF_XET_RECONSTRUCTION_MAX_RECONSTRUCTION_FETCH_SIZE="100000",
    )  # fmt: skip
    assert copy.read_bytes() == events.read_bytes()
    assert xet_hub.stats.xet_reconstructions > 1


def test_tree_paths_info_and_resolve_show_the_xet_hash(xet_hub: LocalHub, tmp_path: Path) -> None:
    events = write_events(tmp_path / "logs", range(20))
    run_client(xet_hub, tmp_path / "client", UPLOAD_FILE, REPO, str(events), EVENTS_PATH)
    xet_hash = xet_hub.xet_hash(REPO, EVENTS_PATH)
    assert xet_hash is not None and _HASH.match(xet_hash)

    listed = json.loads(run_client(xet_hub, tmp_path / "client", LIST, REPO, EVENTS_PATH, ".gitattributes"))
    assert listed["tree"][EVENTS_PATH] == xet_hash
    assert listed["tree"][".gitattributes"] is None
    assert listed["paths_info"] == {EVENTS_PATH: xet_hash, ".gitattributes": None}

    headers = head(xet_hub, EVENTS_PATH)
    commit = xet_hub.commits(REPO)[0]["id"]
    assert headers["X-Xet-Hash"] == xet_hash
    assert headers["X-Linked-Size"] == str(events.stat().st_size)
    assert headers["X-Repo-Commit"] == commit
    token_url = f"{xet_hub.endpoint}/api/models/{REPO}/xet-read-token/{commit}"
    assert headers["Link"] == f'<{token_url}>; rel="xet-auth"'


def test_legacy_lfs_upload_to_a_xet_hub_downloads_with_a_xet_client(xet_hub: LocalHub, tmp_path: Path) -> None:
    events = write_events(tmp_path / "logs", range(20))
    run_client(xet_hub, tmp_path / "lfs-client", UPLOAD_FILE, REPO, str(events), EVENTS_PATH, xet=False)
    stats = xet_hub.stats
    assert stats.lfs_uploads == 1
    assert stats.xet_xorbs == stats.xet_shards == 0
    assert xet_hub.xet_hash(REPO, EVENTS_PATH) is None
    assert "X-Xet-Hash" not in head(xet_hub, EVENTS_PATH)

    copy = tmp_path / "copy"
    run_client(xet_hub, tmp_path / "xet-reader", DOWNLOAD, REPO, EVENTS_PATH, str(copy))
    assert copy.read_bytes() == events.read_bytes()
    assert xet_hub.stats.xet_reconstructions == 0  # no Xet hash: the client took the plain download


def test_without_xet_the_hub_answers_as_before(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    with LocalHub(tmp_path / "hub") as hub:
        assert not hub.xet
        assert hub.env()["HF_HUB_DISABLE_XET"] == "1"
        with pytest.raises(ValueError, match="does not speak Xet"):
            hub.env(xet=True)

        events = write_events(tmp_path / "logs", range(20))
        run_client(hub, tmp_path / "client", UPLOAD_FILE, REPO, str(events), EVENTS_PATH, xet=False)
        stats = hub.stats
        assert stats.lfs_uploads == 1 and stats.xet_xorbs == stats.xet_shards == 0
        assert hub.repo_files(REPO)[EVENTS_PATH] == events.read_bytes()
        assert "X-Xet-Hash" not in head(hub, EVENTS_PATH)
        listed = json.loads(run_client(hub, tmp_path / "client", LIST, REPO, EVENTS_PATH, xet=False))
        assert listed["tree"][EVENTS_PATH] is None

        request = urllib.request.Request(
            f"{hub.endpoint}/api/models/{REPO}/xet-write-token/main", headers={"Authorization": f"Bearer {hub.token}"}
        )
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(request, timeout=30)
        assert err.value.code == 404

    monkeypatch.delenv("HF_HUB_DISABLE_XET")
    assert LocalHub(tmp_path / "hub").xet  # on by default when the client would use Xet too


# -------------------------------------------------------------------- repetitive content (dedup inside a file)


def one_byte(size: int) -> bytes:
    return b"x" * size


def repeated_blocks(size: int) -> bytes:
    """A random 4 KiB block, again and again: chunks of one period dedup against each other."""
    block = np.random.default_rng(4096).bytes(4096)
    return (block * (size // 4096 + 1))[:size]


def scalar_records(count: int) -> bytes:
    """An event file of `count` nearly identical scalar records, as a long run logging one loss writes."""
    from tensorboardX.proto.event_pb2 import Event
    from tensorboardX.proto.summary_pb2 import Summary

    from hf_summary.events.records import frame_record

    return b"".join(
        frame_record(
            Event(
                wall_time=1_700_000_000.0 + step // 100,
                step=step,
                summary=Summary(value=[Summary.Value(tag="loss", simple_value=0.5)]),
            ).SerializeToString()
        )
        for step in range(count)
    )


def xet_read(hub: LocalHub, path: str, first: int, last: int, *, v2: bool) -> bytes:
    """Bytes [first, last] of a file through the reconstruction API, rebuilt as `spec/download_protocol.md` says.

    Also checks what hf_xet relies on: per xorb, the fetched chunk ranges are disjoint, and each term lies inside one.
    """
    from hf_summary.testing.xet import decode_chunks

    def get(url: str, headers: dict[str, str]) -> bytes:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30) as response:
            return bytes(response.read())

    token_url = f"{hub.endpoint}/api/models/{REPO}/xet-read-token/main"
    token = json.loads(get(token_url, {"Authorization": f"Bearer {hub.token}"}))
    file_hash = hub.xet_hash(REPO, path)
    answer = json.loads(
        get(
            f"{token['casUrl']}/{'v2' if v2 else 'v1'}/reconstructions/{file_hash}",
            {"Authorization": f"Bearer {token['accessToken']}", "Range": f"bytes={first}-{last}"},
        )
    )
    fetches: dict[str, list[tuple[dict[str, int], dict[str, int], str]]] = {}
    if v2:
        for xorb, entries in answer["xorbs"].items():
            fetches[xorb] = [(r["chunks"], r["bytes"], e["url"]) for e in entries for r in e["ranges"]]
    else:
        for xorb, entries in answer["fetch_info"].items():
            fetches[xorb] = [(e["range"], e["url_range"], e["url"]) for e in entries]
    for ranges in fetches.values():
        spans = sorted((chunks["start"], chunks["end"]) for chunks, _, _ in ranges)
        assert all(end <= next_start for (_, end), (next_start, _) in itertools.pairwise(spans)), spans
    downloaded: dict[tuple[str, int], bytes] = {}  # (xorb, chunk index) -> content
    out = bytearray()
    for term in answer["terms"]:
        start, end = term["range"]["start"], term["range"]["end"]
        (chunks, byte_range, url), *others = [
            f for f in fetches[term["hash"]] if f[0]["start"] <= start and end <= f[0]["end"]
        ]
        assert not others
        if (term["hash"], start) not in downloaded:
            data = get(url, {"Range": f"bytes={byte_range['start']}-{byte_range['end']}"})
            for index, content in enumerate(decode_chunks(data), chunks["start"]):
                downloaded[term["hash"], index] = content
        content = b"".join(downloaded[term["hash"], index] for index in range(start, end))
        assert len(content) == term["unpacked_length"]
        out += content
    return bytes(out[answer["offset_into_first_range"] :][: last - first + 1])


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(one_byte(300_000), id="300KB-of-one-byte"),
        pytest.param(one_byte(262_144), id="two-max-chunks-of-one-byte"),
        pytest.param(one_byte(5_000_000), id="5MB-of-one-byte"),
        pytest.param(repeated_blocks(1_000_000), id="repeated-4KiB-blocks"),
        pytest.param(scalar_records(200_000), id="200k-scalar-records"),
    ],
)
def test_repetitive_files_download_through_xet(xet_hub: LocalHub, tmp_path: Path, content: bytes) -> None:
    # A file whose chunks dedup against each other is stored as the same chunks of one xorb several times over,
    # overlapping: 300 KB of one byte is xorb X chunks [0, 1) then [0, 2). hf_xet once panicked downloading it
    # ("range end out of bounds: 168928 <= 131072") when the reconstruction gave one fetch range per term.
    source = tmp_path / "source"
    source.write_bytes(content)
    run_client(xet_hub, tmp_path / "uploader", UPLOAD_FILE, REPO, str(source), EVENTS_PATH)
    assert xet_hub.repo_files(REPO)[EVENTS_PATH] == content
    assert xet_hub.stats.xet_xorb_bytes < len(content)  # it did dedup (or compress)

    for api_version in ("2", "1"):
        copy = tmp_path / f"copy-v{api_version}"
        run_client(
            xet_hub, tmp_path / f"reader-v{api_version}", DOWNLOAD, REPO, EVENTS_PATH, str(copy),
            HF_XET_CLIENT_RECONSTRUCTION_API_VERSION=api_version,
        )  # fmt: skip
        assert copy.read_bytes() == content

    # In small reconstructions, each cut anywhere, the same chunks again in every one.
    copy = tmp_path / "copy-ranges"
    run_client(
        xet_hub, tmp_path / "reader-ranges", DOWNLOAD, REPO, EVENTS_PATH, str(copy),
        HF_XET_RECONSTRUCTION_MIN_RECONSTRUCTION_FETCH_SIZE="50000",
        HF_XET_RECONSTRUCTION_MAX_RECONSTRUCTION_FETCH_SIZE="100000",
    )  # fmt: skip
    assert copy.read_bytes() == content

    size = len(content)
    for first, last in [(0, size - 1), (1, 131_072), (131_071, 131_073), (140_000, 299_999), (size - 10, size + 10)]:
        for v2 in (True, False):
            assert xet_read(xet_hub, EVENTS_PATH, first, last, v2=v2) == content[first : last + 1], (first, last, v2)


def test_a_file_repeating_an_earlier_file_downloads_through_xet(xet_hub: LocalHub, tmp_path: Path) -> None:
    earlier = np.random.default_rng(7).bytes(700_000)
    later = earlier + earlier[100_000:400_000] + earlier + one_byte(300_000) + earlier
    uploader = tmp_path / "uploader"  # one cache: the second upload dedups against the first one's xorbs
    paths = {"a/earlier.bin": earlier, "b/later.bin": later, "c/same.bin": earlier}
    for path, content in paths.items():
        source = tmp_path / path.replace("/", "-")
        source.write_bytes(content)
        run_client(xet_hub, uploader, UPLOAD_FILE, REPO, str(source), path)
    assert xet_hub.stats.xet_xorb_bytes < len(earlier) + 300_000  # `later` and `same` sent little new
    files = xet_hub.repo_files(REPO)
    assert all(files[path] == content for path, content in paths.items())

    for path, content in paths.items():
        copy = tmp_path / f"copy-{path.replace('/', '-')}"
        run_client(xet_hub, tmp_path / f"reader-{path.replace('/', '-')}", DOWNLOAD, REPO, path, str(copy))
        assert copy.read_bytes() == content
    copy = tmp_path / "copy-later-ranges"
    run_client(
        xet_hub, tmp_path / "reader-later-ranges", DOWNLOAD, REPO, "b/later.bin", str(copy),
        HF_XET_RECONSTRUCTION_MIN_RECONSTRUCTION_FETCH_SIZE="50000",
        HF_XET_RECONSTRUCTION_MAX_RECONSTRUCTION_FETCH_SIZE="100000",
    )  # fmt: skip
    assert copy.read_bytes() == later

    for first, last in [(0, len(later) - 1), (650_000, 1_050_000), (1_000_000, 2_100_000), (2_000_000, 2_000_000)]:
        for v2 in (True, False):
            assert xet_read(xet_hub, "b/later.bin", first, last, v2=v2) == later[first : last + 1], (first, last)


def _raw_hash(text: str) -> bytes:
    """A hash string as a shard writes it (four little-endian u64; `xet.hash_to_hex` the other way)."""
    return struct.pack("<4Q", *(int(text[i : i + 16], 16) for i in range(0, 64, 16)))


def _shard(file_hash: str, terms: list[list[Any]], sha256: str) -> bytes:
    """A shard describing one file: its terms and the sha256 it claims (xet-core `shard_format.rs`, as parsed)."""
    from hf_summary.testing.xet import SHARD_HEADER_TAG

    data = SHARD_HEADER_TAG + struct.pack("<QQ", 2, 0)
    data += _raw_hash(file_hash) + struct.pack("<IIQ", 1 << 30, len(terms), 0)  # flags: a metadata extension
    for xorb, start, end, size in terms:
        data += _raw_hash(xorb) + struct.pack("<IIII", 0, size, start, end)
    data += _raw_hash(sha256) + bytes(16)
    return data + b"\xff" * 32 + bytes(16)


def _post(hub: LocalHub, url: str, body: bytes, token: str) -> int:
    request = urllib.request.Request(url, data=body, method="POST", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_a_shard_claiming_another_files_sha256_is_refused(xet_hub: LocalHub, tmp_path: Path) -> None:
    """The CAS keeps, for each Xet file, the sha256 it computed from the content: a shard naming a known file with
    another sha256 is refused, so that no repository gets a file by the sha256 of content uploaded elsewhere (here,
    another repository's file, named through a file of the uploader's own)."""
    mine, theirs = tmp_path / "mine.bin", tmp_path / "theirs.bin"
    mine.write_bytes(np.random.default_rng(1).bytes(200_000))
    theirs.write_bytes(np.random.default_rng(2).bytes(200_000))
    run_client(xet_hub, tmp_path / "them", UPLOAD_FILE, "local-user/theirs", str(theirs), "secret.bin")
    run_client(xet_hub, tmp_path / "me", UPLOAD_FILE, REPO, str(mine), "mine.bin")
    file_hash = xet_hub.xet_hash(REPO, "mine.bin")
    assert file_hash is not None
    terms = json.loads((xet_hub.root / "xet" / "files" / f"{file_hash}.json").read_text())["terms"]
    their_sha256 = hashlib.sha256(theirs.read_bytes()).hexdigest()

    token_url = f"{xet_hub.endpoint}/api/models/{REPO}/xet-write-token/main"
    request = urllib.request.Request(token_url, headers={"Authorization": f"Bearer {xet_hub.token}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        xet_token = json.loads(response.read())["accessToken"]
    assert _post(xet_hub, f"{xet_hub.endpoint}/xet-cas/v1/shards", _shard(file_hash, terms, their_sha256),
                 xet_token) == 400
    # The true sha256 is taken.
    mine_sha256 = hashlib.sha256(mine.read_bytes()).hexdigest()
    assert _post(xet_hub, f"{xet_hub.endpoint}/xet-cas/v1/shards", _shard(file_hash, terms, mine_sha256),
                 xet_token) == 200
    # And a commit pointing at their sha256 is refused: it was never uploaded to this repository.
    lines = [{"key": "header", "value": {"summary": "take theirs"}},
             {"key": "lfsFile", "value": {"path": "taken.bin", "algo": "sha256", "oid": their_sha256,
                                          "size": 200_000}}]
    body = "\n".join(json.dumps(line) for line in lines).encode()
    assert _post(xet_hub, f"{xet_hub.endpoint}/api/models/{REPO}/commit/main", body, xet_hub.token) == 422
    assert "taken.bin" not in xet_hub.repo_files(REPO)
