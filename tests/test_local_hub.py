"""Tests of `hf_summary.testing.LocalHub` against the real `huggingface_hub` client.

`huggingface_hub` reads HF_ENDPOINT when it is imported, so client code runs in a subprocess whose environment points
at the server under test. The snippets store what they observed in a `result` dict, returned as JSON.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import urllib.request
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from hf_summary.testing import HubLimits, LocalHub

REPO = "local-user/demo"

_PRELUDE = """\
import json, os
from huggingface_hub import HfApi, CommitOperationAdd, CommitOperationDelete, hf_hub_download, snapshot_download
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError
api = HfApi()
result = {}
"""

ANONYMOUS = ""

RunClient = Callable[..., dict[str, Any]]


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[LocalHub]:
    with LocalHub(tmp_path / "hub-root") as local_hub:
        yield local_hub


@pytest.fixture
def run_client(hub: LocalHub, tmp_path: Path) -> RunClient:
    """Run client code in a subprocess against `hub`; `token` overrides HF_TOKEN (ANONYMOUS removes it)."""

    def run(code: str, *, token: str | None = None, target: LocalHub | None = None) -> dict[str, Any]:
        server = target or hub
        env = {**os.environ, **server.env(), "HF_HOME": str(tmp_path / "hf-home"), "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
        env.pop("HF_HUB_OFFLINE", None)
        if token == ANONYMOUS:
            del env["HF_TOKEN"]
        elif token is not None:
            env["HF_TOKEN"] = token
        script = _PRELUDE + textwrap.dedent(code) + "\nprint('RESULT=' + json.dumps(result))\n"
        proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        last = [line for line in proc.stdout.splitlines() if line.startswith("RESULT=")][-1]
        return json.loads(last.removeprefix("RESULT="))

    return run


def _host_port(hub: LocalHub) -> tuple[str, int]:
    host, port = hub.endpoint.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


def test_create_repo_exist_ok_and_private_repo_is_hidden(hub: LocalHub, run_client: RunClient) -> None:
    owner = run_client(
        """
        result["url"] = str(api.create_repo("local-user/public"))
        result["again"] = str(api.create_repo("local-user/public", exist_ok=True))
        api.create_repo("local-user/secret", private=True)
        try:
            api.create_repo("local-user/secret")
        except HfHubHTTPError as err:
            result["duplicate_status"] = err.response.status_code
        result["owner_sees_private"] = api.repo_info("local-user/secret").private
        """
    )
    assert owner == {
        "url": f"{hub.endpoint}/local-user/public",
        "again": f"{hub.endpoint}/local-user/public",
        "duplicate_status": 409,
        "owner_sees_private": True,
    }
    assert hub.is_private("local-user/secret") and not hub.is_private("local-user/public")

    anonymous = run_client(
        """
        result["public_sha"] = api.repo_info("local-user/public").sha
        for repo_id in ("local-user/secret", "local-user/missing"):
            try:
                api.repo_info(repo_id)
            except RepositoryNotFoundError as err:
                result[repo_id] = err.response.headers["X-Error-Code"]
        """,
        token=ANONYMOUS,
    )
    assert anonymous == {
        "public_sha": hub.commits("local-user/public")[0]["id"],
        "local-user/secret": "RepoNotFound",
        "local-user/missing": "RepoNotFound",
    }


def test_commit_regular_and_lfs_files_then_list_and_download(
    hub: LocalHub, run_client: RunClient, tmp_path: Path
) -> None:
    events = tmp_path / "events.out.tfevents.123.host"
    events.write_bytes(bytes(range(256)) * 400)
    readme = b"# Demo\n\nTensorBoard logs.\n"
    hub.reset_stats()

    result = run_client(
        f"""
        api.create_repo("{REPO}")
        info = api.create_commit(
            "{REPO}",
            operations=[
                CommitOperationAdd("README.md", {readme!r}),
                CommitOperationAdd("runs/exp1/{events.name}", {str(events)!r}),
            ],
            commit_message="Add logs",
            commit_description="first upload",
        )
        result["oid"] = info.oid
        result["commit_url"] = info.commit_url
        result["tree"] = {{
            entry.path: (type(entry).__name__, getattr(entry, "lfs", None) is not None)
            for entry in api.list_repo_tree("{REPO}", recursive=True)
        }}
        result["top_level"] = sorted(entry.path for entry in api.list_repo_tree("{REPO}"))
        downloaded = hf_hub_download("{REPO}", "runs/exp1/{events.name}")
        result["download_equal"] = open(downloaded, "rb").read() == open({str(events)!r}, "rb").read()
        snapshot = snapshot_download("{REPO}")
        result["snapshot_readme"] = open(os.path.join(snapshot, "README.md"), "rb").read().decode()
        result["commits"] = [(c.title, c.message) for c in api.list_repo_commits("{REPO}")]
        """
    )

    head = hub.commits(REPO)[0]
    assert result["oid"] == head["id"]
    assert result["commit_url"] == f"{hub.endpoint}/{REPO}/commit/{head['id']}"
    assert result["tree"] == {
        ".gitattributes": ["RepoFile", False],
        "README.md": ["RepoFile", False],
        "runs": ["RepoFolder", False],
        "runs/exp1": ["RepoFolder", False],
        f"runs/exp1/{events.name}": ["RepoFile", True],
    }
    assert result["top_level"] == [".gitattributes", "README.md", "runs"]
    assert result["download_equal"] is True
    assert result["snapshot_readme"] == readme.decode()
    assert result["commits"] == [["Add logs", "first upload"], ["initial commit", ""]]

    files = hub.repo_files(REPO)
    assert files["README.md"] == readme
    assert files[f"runs/exp1/{events.name}"] == events.read_bytes()
    stats = hub.stats
    assert stats.upload_bytes == len(readme) + events.stat().st_size
    assert stats.commits == 1
    assert stats.per_path_uploads == {"README.md": 1, f"runs/exp1/{events.name}": 1}
    assert stats.bytes_received > stats.upload_bytes


def test_unchanged_files_are_skipped_and_stored_lfs_objects_are_not_uploaded_again(
    hub: LocalHub, run_client: RunClient
) -> None:
    result = run_client(
        f"""
        api.create_repo("{REPO}")
        payload = os.urandom(50_000)
        first = api.upload_file(path_or_fileobj=payload, path_in_repo="weights.bin", repo_id="{REPO}")
        again = api.upload_file(path_or_fileobj=payload, path_in_repo="weights.bin", repo_id="{REPO}")
        copy = api.upload_file(path_or_fileobj=payload, path_in_repo="copy/weights.bin", repo_id="{REPO}")
        result["same_commit"] = first.oid == again.oid
        result["copy_committed"] = copy.oid != first.oid
        """
    )
    assert result == {"same_commit": True, "copy_committed": True}
    stats = hub.stats
    # The no-op upload made no commit, and the copy reused the LFS object already stored in the repository.
    assert stats.commits == 2
    assert stats.upload_bytes == 50_000
    assert stats.per_path_uploads == {"weights.bin": 1, "copy/weights.bin": 1}


def test_super_squash_leaves_one_commit_with_the_same_files(hub: LocalHub, run_client: RunClient) -> None:
    result = run_client(
        f"""
        api.create_repo("{REPO}")
        for step in range(3):
            content = f"step {{step}}".encode()
            api.upload_file(path_or_fileobj=content, path_in_repo=f"log_{{step}}.txt", repo_id="{REPO}")
        api.delete_file("log_0.txt", "{REPO}")
        result["before"] = len(api.list_repo_commits("{REPO}"))
        api.super_squash_history("{REPO}", commit_message="squashed")
        result["after"] = [c.title for c in api.list_repo_commits("{REPO}")]
        result["files"] = sorted(api.list_repo_files("{REPO}"))
        """
    )
    assert result["before"] == 5
    assert result["after"] == ["squashed"]
    assert result["files"] == [".gitattributes", "log_1.txt", "log_2.txt"]
    (commit,) = hub.commits(REPO)
    assert commit["parents"] == []
    assert hub.repo_files(REPO)["log_2.txt"] == b"step 2"


def test_stale_parent_commit_is_rejected_with_412(hub: LocalHub, run_client: RunClient) -> None:
    result = run_client(
        f"""
        api.create_repo("{REPO}")
        initial = api.repo_info("{REPO}").sha
        api.upload_file(path_or_fileobj=b"a", path_in_repo="a.txt", repo_id="{REPO}")
        op = [CommitOperationAdd("b.txt", b"b")]
        try:
            api.create_commit("{REPO}", operations=op, commit_message="late", parent_commit=initial)
        except HfHubHTTPError as err:
            result["status"] = err.response.status_code
        head = api.repo_info("{REPO}").sha
        op = [CommitOperationAdd("b.txt", b"b")]
        result["ok"] = api.create_commit("{REPO}", operations=op, commit_message="on time", parent_commit=head).oid
        """
    )
    assert result["status"] == 412
    assert result["ok"] == hub.commits(REPO)[0]["id"]
    assert [c["title"] for c in hub.commits(REPO)][:2] == ["on time", "Upload a.txt with huggingface_hub"]


def test_write_with_unknown_token_is_401_and_with_read_only_token_is_403(hub: LocalHub, run_client: RunClient) -> None:
    run_client(f'api.create_repo("{REPO}")')
    hub.add_token("hf_read_only", hub.user, write=False)
    hub.add_token("hf_someone_else", "someone-else")
    attempt = f"""
        try:
            api.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id="{REPO}")
            result["status"] = 200
        except HfHubHTTPError as err:
            result["status"] = err.response.status_code
        result["can_read"] = api.repo_info("{REPO}").id == "{REPO}"
        """
    assert run_client(attempt, token="hf_read_only") == {"status": 403, "can_read": True}
    assert run_client(attempt, token="hf_someone_else") == {"status": 403, "can_read": True}
    unknown = run_client(
        f"""
        try:
            api.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id="{REPO}")
        except HfHubHTTPError as err:
            result["status"] = err.response.status_code
        """,
        token="hf_not_a_token",
    )
    assert unknown == {"status": 401}
    assert list(hub.repo_files(REPO)) == [".gitattributes"]


def test_pause_refuses_connections_and_resume_listens_on_the_same_port(hub: LocalHub, run_client: RunClient) -> None:
    host, port = _host_port(hub)
    keep_alive = http.client.HTTPConnection(host, port, timeout=5)
    keep_alive.request("GET", "/api/whoami-v2", headers={"Authorization": f"Bearer {hub.token}"})
    assert json.loads(keep_alive.getresponse().read())["name"] == hub.user

    hub.pause()
    hub.pause()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((host, port), timeout=5)
    # Connections kept alive by a client pool are cut too.
    with pytest.raises((ConnectionError, http.client.RemoteDisconnected)):
        keep_alive.request("GET", "/api/whoami-v2", headers={"Authorization": f"Bearer {hub.token}"})
        keep_alive.getresponse().read()
    keep_alive.close()

    hub.resume()
    hub.resume()
    assert _host_port(hub) == (host, port)
    assert run_client("result['name'] = api.whoami()['name']") == {"name": hub.user}


def test_injected_503_fails_the_commit_and_is_counted(hub: LocalHub, run_client: RunClient) -> None:
    run_client(
        f"""
        api.create_repo("{REPO}")
        api.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id="{REPO}")
        """
    )
    commits_before = len(hub.commits(REPO))
    hub.set_faults(failure_rate=1.0, kinds=("503",))
    # A deletion-only commit is a single POST, which the client does not retry: the fault surfaces immediately.
    delete = f"""
        try:
            api.create_commit("{REPO}", operations=[CommitOperationDelete("x.txt")], commit_message="rm")
            result["status"] = 200
        except HfHubHTTPError as err:
            result["status"] = err.response.status_code
        """
    assert run_client(delete) == {"status": 503}
    assert hub.stats.faults_injected >= 1
    assert len(hub.commits(REPO)) == commits_before

    hub.clear_faults()
    assert run_client(delete) == {"status": 200}
    assert "x.txt" not in hub.repo_files(REPO)


def test_fault_kinds_as_seen_on_the_wire(hub: LocalHub) -> None:
    host, port = _host_port(hub)
    hub.set_faults(failure_rate=1.0, kinds=("429",), retry_after=7, methods={"GET"})
    connection = http.client.HTTPConnection(host, port, timeout=5)
    connection.request("GET", "/api/whoami-v2")
    response = connection.getresponse()
    response.read()
    assert (response.status, response.getheader("Retry-After")) == (429, "7")
    connection.request("POST", "/api/validate-yaml", body=b"{}")  # not a GET: served normally, same connection
    response = connection.getresponse()
    response.read()
    assert response.status == 200

    hub.set_faults(failure_rate=1.0, kinds=("drop",))
    connection.request("GET", "/api/whoami-v2")
    with pytest.raises(http.client.RemoteDisconnected):
        connection.getresponse()
    connection.close()
    assert hub.stats.faults_injected == 2


def test_lfs_upload_with_wrong_content_is_rejected(hub: LocalHub, run_client: RunClient) -> None:
    result = run_client(
        f"""
        import hashlib
        from huggingface_hub.lfs import UploadInfo, post_lfs_batch_info
        from huggingface_hub.utils import build_hf_headers, get_session
        api.create_repo("{REPO}")
        info = UploadInfo.from_bytes(b"expected content")
        actions, errors, transfer = post_lfs_batch_info(
            upload_infos=[info], token=None, repo_type="model", repo_id="{REPO}", headers=build_hf_headers()
        )
        href = actions[0]["actions"]["upload"]["href"]
        result["transfer"] = transfer
        result["wrong"] = get_session().put(href, content=b"other content!!!").status_code
        result["right"] = get_session().put(href, content=b"expected content").status_code
        again, _, _ = post_lfs_batch_info(
            upload_infos=[info], token=None, repo_type="model", repo_id="{REPO}", headers=build_hf_headers()
        )
        result["actions_after_upload"] = again[0].get("actions")
        """
    )
    assert result == {"transfer": "basic", "wrong": 400, "right": 200, "actions_after_upload": None}


def test_repositories_persist_across_a_restart_on_the_same_root(tmp_path: Path, run_client: RunClient) -> None:
    root = tmp_path / "persistent-root"
    with LocalHub(root) as first:
        run_client(
            f"""
            api.create_repo("{REPO}", repo_type="dataset", private=True)
            api.upload_file(path_or_fileobj=os.urandom(2048), path_in_repo="data.bin", repo_id="{REPO}",
                            repo_type="dataset")
            """,
            target=first,
        )
        files, history = first.repo_files(REPO, repo_type="dataset"), first.commits(REPO, repo_type="dataset")

    with LocalHub(root) as second:
        assert second.repo_files(REPO, repo_type="dataset") == files
        assert second.commits(REPO, repo_type="dataset") == history
        assert second.is_private(REPO, repo_type="dataset")
        result = run_client(
            f"""
            path = hf_hub_download("{REPO}", "data.bin", repo_type="dataset", force_download=True)
            result["size"] = os.path.getsize(path)
            result["sha"] = api.dataset_info("{REPO}").sha
            """,
            target=second,
        )
        assert result == {"size": 2048, "sha": history[0]["id"]}


def test_command_line_server_starts_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH")])),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "hf_summary.testing", "--root", str(tmp_path / "cli-root")],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(2)]
        endpoint = lines[0].split(" listening on ")[1].split()[0]
        token = lines[1].split()[1]
        request = urllib.request.Request(f"{endpoint}/api/whoami-v2", headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=5) as response:
            assert json.loads(response.read())["name"] == "local-user"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
        assert "Local Hub stopped." in proc.stdout.read()
    finally:
        proc.kill()
        proc.wait()


# -------------------------------------------------------------------- limits of the real Hub


def _raw_commit(hub: LocalHub, repo_id: str, path: str) -> tuple[int, dict[str, str], dict[str, Any]]:
    """Commit one small file with a bare HTTP request; returns the status, headers and JSON body of the answer."""
    host, port = _host_port(hub)
    connection = http.client.HTTPConnection(host, port, timeout=5)
    header = {"key": "header", "value": {"summary": f"Add {path}"}}
    file = {"key": "file", "value": {"path": path, "content": path, "encoding": "utf-8"}}
    body = b"".join(json.dumps(item).encode() + b"\n" for item in (header, file))
    auth = {"Authorization": f"Bearer {hub.token}", "Content-Type": "application/x-ndjson"}
    connection.request("POST", f"/api/models/{repo_id}/commit/main", body=body, headers=auth)
    response = connection.getresponse()
    answer = json.loads(response.read())
    connection.close()
    return response.status, dict(response.getheaders()), answer


def test_commit_quota_answers_a_429_huggingface_hub_parses_and_frees_a_slot_after_the_window(
    hub: LocalHub, run_client: RunClient
) -> None:
    hub.set_limits(commit_limit=(2, 2.0))
    result = run_client(
        f"""
        import time
        from huggingface_hub.utils import parse_ratelimit_headers
        api.create_repo("{REPO}")
        def upload(path):
            api.upload_file(path_or_fileobj=path.encode(), path_in_repo=path, repo_id="{REPO}")
        upload("log_0.txt")
        upload("log_1.txt")
        started = time.monotonic()
        try:
            upload("late.txt")
        except HfHubHTTPError as err:
            refused_at = time.monotonic()
            result["seconds_to_fail"] = refused_at - started
            result["status"] = err.response.status_code
            names = ("Retry-After", "RateLimit", "RateLimit-Policy", "X-Error-Message")
            result["headers"] = {{name: err.response.headers.get(name) for name in names}}
            result["body"] = err.response.json()
            result["message"] = str(err)
            info = parse_ratelimit_headers(err.response.headers)
            result["parsed"] = [info.resource_type, info.remaining, info.reset_in_seconds, info.limit,
                                info.window_seconds]
            retry_after = int(err.response.headers["Retry-After"])
        # Wait for the condition itself (the Hub accepts the commit again), polling up to a bounded deadline.
        deadline = refused_at + retry_after + 5
        attempts = 1
        while True:
            try:
                upload("late.txt")
                break
            except HfHubHTTPError as err:
                if err.response.status_code != 429 or time.monotonic() > deadline:
                    raise
                attempts += 1
                time.sleep(0.1)
        result["accepted_after"] = time.monotonic() - refused_at
        result["attempts"] = attempts
        """
    )
    retry_after = int(result["headers"]["Retry-After"])
    assert result["status"] == 429
    assert retry_after in (1, 2)  # whole seconds until the first commit leaves the 2 s window, rounded up
    assert result["headers"] == {
        "Retry-After": str(retry_after),
        "RateLimit": f'"commit";r=0;t={retry_after}',
        "RateLimit-Policy": '"sliding window";"commit";q=2;w=2',
        "X-Error-Message": "You have exceeded our hourly quotas for action: commit. We invite you to retry later.",
    }
    assert result["body"] == {"error": result["headers"]["X-Error-Message"]}
    assert result["parsed"] == ["commit", 0, retry_after, 2, 2]
    # huggingface_hub turns the RateLimit headers into its message, then appends the server's.
    assert "429 Too Many Requests: you have reached your 'commit' rate limit." in result["message"]
    assert f"Retry after {retry_after} seconds (0/2 requests remaining in current 2s window)." in result["message"]
    assert "You have exceeded our hourly quotas for action: commit." in result["message"]
    # create_commit (behind upload_file) neither sleeps nor retries on a 429: one refusal per call.
    assert result["seconds_to_fail"] < 1.0
    assert hub.stats.rate_limited == result["attempts"]
    # The slot freed within the announced delay, and not before the first commit left the window.
    assert result["accepted_after"] <= retry_after + 1.0
    times = hub.commit_times(REPO)
    assert len(times) == 3 and times[2] - times[0] >= 1.95
    # The dates of the history agree with the recorded times (the history is newest first).
    dates = [datetime.strptime(c["date"], "%Y-%m-%dT%H:%M:%S.%f%z").timestamp() for c in hub.commits(REPO)[:3]]
    assert all(abs(date - time) < 1.0 for date, time in zip(reversed(dates), times, strict=True))
    assert hub.stats.commits == 3


def test_create_commit_does_not_retry_a_429_but_http_backoff_waits_for_the_ratelimit_reset(
    hub: LocalHub, run_client: RunClient
) -> None:
    hub.set_limits(commit_limit=(1, 1.0))
    result = run_client(
        f"""
        import logging, time
        from huggingface_hub._commit_api import _send_commit
        from huggingface_hub.utils import build_hf_headers
        messages = []
        class Collect(logging.Handler):
            def emit(self, record):
                messages.append(record.getMessage())
        logging.getLogger("huggingface_hub").addHandler(Collect())
        api.create_repo("{REPO}")
        api.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id="{REPO}")
        started = time.monotonic()
        # The commit POST with retries, as huggingface_hub's upload pipeline sends it (retry_on_error=True).
        info = _send_commit(
            operations=[CommitOperationDelete("x.txt")], files_to_copy={{}}, commit_message="rm",
            commit_description="", repo_type="model", repo_id="{REPO}", headers=build_hf_headers(),
            revision="main", endpoint=api.endpoint, retry_on_error=True,
        )
        result["elapsed"] = time.monotonic() - started
        result["oid"] = info.oid
        result["waits"] = [m for m in messages if m.startswith("Rate limited.")]
        """
    )
    # RateLimit t=1 (the slot frees within a second) and the client sleeps t + 1 s, then retries successfully.
    assert result["waits"] == ["Rate limited. Waiting 2.0s before retry [Retry 1/5]."]
    assert 2.0 <= result["elapsed"] < 4.0
    assert result["oid"] == hub.commits(REPO)[0]["id"]
    assert hub.stats.rate_limited == 1
    assert "x.txt" not in hub.repo_files(REPO)


def test_commit_quota_is_per_repository_and_spares_super_squash_and_refused_commits(
    tmp_path: Path, run_client: RunClient
) -> None:
    with LocalHub(tmp_path / "limited-root", commit_limit=(2, 3600.0)) as limited:
        assert limited.limits == HubLimits(commit_limit=(2, 3600.0))
        result = run_client(
            """
            def attempt(repo_id, path, repo_type=None, parent_commit=None):
                try:
                    op = [CommitOperationAdd(path, path.encode())]
                    api.create_commit(repo_id, operations=op, commit_message=path, repo_type=repo_type,
                                      parent_commit=parent_commit)
                    return 200
                except HfHubHTTPError as err:
                    return err.response.status_code
            for repo_id in ("local-user/a", "local-user/b", "local-user/c"):
                api.create_repo(repo_id)
            api.create_repo("local-user/a", repo_type="dataset")
            result["a"] = [attempt("local-user/a", "1.txt"), attempt("local-user/a", "2.txt")]
            api.super_squash_history("local-user/a")
            result["a"].append(attempt("local-user/a", "3.txt"))
            result["b"] = [attempt("local-user/b", f"{i}.txt") for i in range(3)]
            result["dataset a"] = [attempt("local-user/a", "1.txt", repo_type="dataset")]
            initial = api.repo_info("local-user/c").sha
            result["c"] = [attempt("local-user/c", "1.txt"), attempt("local-user/c", "2.txt", parent_commit=initial),
                           attempt("local-user/c", "3.txt")]
            """,
            target=limited,
        )
        assert result == {"a": [200, 200, 429], "b": [200, 200, 429], "dataset a": [200], "c": [200, 412, 200]}
        assert limited.stats.rate_limited == 2
        # The squash left one commit in the history, but both commits still count against the quota.
        assert len(limited.commits("local-user/a")) == 1
        assert [len(limited.commit_times(r)) for r in ("local-user/a", "local-user/b", "local-user/c")] == [2, 2, 2]
        assert len(limited.commit_times("local-user/a", repo_type="dataset")) == 1


def test_commit_limits_change_at_runtime_and_count_earlier_commits(hub: LocalHub, run_client: RunClient) -> None:
    run_client(f'api.create_repo("{REPO}")')
    first = _raw_commit(hub, REPO, "0.txt")
    assert first[0] == 200 and "RateLimit" not in first[1]  # no limit, no RateLimit headers
    assert _raw_commit(hub, REPO, "1.txt")[0] == 200

    hub.set_limits(commit_limit=(2, 60.0))
    status, headers, body = _raw_commit(hub, REPO, "2.txt")  # the two commits made before the limit count
    assert (status, body) == (
        429,
        {"error": "You have exceeded our hourly quotas for action: commit. We invite you to retry later."},
    )
    assert 59 <= int(headers["Retry-After"]) <= 60

    hub.set_limits(commit_limit=(3, 60.0))
    status, headers, _ = _raw_commit(hub, REPO, "2.txt")
    assert status == 200
    assert headers["RateLimit"].startswith('"commit";r=0;t=')  # accepted commits announce the slots left
    assert headers["RateLimit-Policy"] == '"sliding window";"commit";q=3;w=60'

    hub.set_limits()
    assert hub.limits == HubLimits()
    assert _raw_commit(hub, REPO, "3.txt")[0] == 200
    assert hub.stats.rate_limited == 1 and len(hub.commit_times(REPO)) == 4
    for bad in ({"commit_limit": (0, 60.0)}, {"commit_limit": (5, 0.0)}, {"max_files_per_commit": 0}):
        with pytest.raises(ValueError):
            hub.set_limits(**bad)  # type: ignore[arg-type]


def test_commit_with_too_many_file_operations_is_refused_with_413(
    hub: LocalHub, run_client: RunClient, tmp_path: Path
) -> None:
    folder = tmp_path / "folder"
    folder.mkdir()
    for i in range(4):
        (folder / f"f{i}.txt").write_text(f"file {i}")
    # The commit quota shows that refused commits do not use a slot.
    hub.set_limits(max_files_per_commit=3, commit_limit=(2, 3600.0))
    result = run_client(
        f"""
        def attempt(operations):
            try:
                api.create_commit("{REPO}", operations=operations, commit_message="attempt")
                return 200
            except HfHubHTTPError as err:
                result.setdefault("messages", []).append(err.response.headers["X-Error-Message"])
                return err.response.status_code
        api.create_repo("{REPO}")
        result["four adds"] = attempt([CommitOperationAdd(f"f{{i}}.txt", b"x") for i in range(4)])
        try:
            api.upload_folder(folder_path={str(folder)!r}, repo_id="{REPO}")
        except HfHubHTTPError as err:
            result["upload_folder"] = err.response.status_code
        result["three adds"] = attempt([CommitOperationAdd(f"f{{i}}.txt", b"x") for i in range(3)])
        # Deletions are operations too.
        ops = [CommitOperationDelete(f"f{{i}}.txt") for i in range(3)] + [CommitOperationAdd("g.txt", b"g")]
        result["three deletes and an add"] = attempt(ops)
        result["one delete"] = attempt([CommitOperationDelete("f0.txt")])
        """
    )
    assert {key: value for key, value in result.items() if key != "messages"} == {
        "four adds": 413,
        "upload_folder": 413,
        "three adds": 200,
        "three deletes and an add": 413,
        "one delete": 200,
    }
    assert result["messages"][0].startswith(
        "Payload Too Large: this commit has 4 file operations, more than the 3 this Hub accepts in one commit"
    )
    stats = hub.stats
    assert (stats.limit_rejections, stats.rate_limited, stats.commits) == (3, 0, 2)
    assert sorted(hub.repo_files(REPO)) == [".gitattributes", "f1.txt", "f2.txt"]


def test_commit_overfilling_a_folder_is_refused_with_the_hubs_400(hub: LocalHub, run_client: RunClient) -> None:
    hub.set_limits(max_folder_entries=3)
    result = run_client(
        f"""
        def attempt(*operations):
            try:
                api.create_commit("{REPO}", operations=list(operations), commit_message="attempt")
                return 200
            except HfHubHTTPError as err:
                result.setdefault("errors", []).append([type(err).__name__, str(err)])
                return err.response.status_code
        add = lambda path: CommitOperationAdd(path, path.encode() + os.urandom(4))
        api.create_repo("{REPO}")
        result["statuses"] = [
            attempt(add("logs/a.txt"), add("logs/b.txt"), add("logs/c.txt")),  # 3 entries in logs/: full
            attempt(add("logs/d.txt")),  # a fourth file
            attempt(add("logs/sub/x.txt")),  # a subfolder is an entry too
            attempt(add("logs/a.txt")),  # replacing a file keeps the count
            attempt(CommitOperationDelete("logs/a.txt"), add("logs/d.txt")),  # so does swapping one
            attempt(add("README.txt")),  # the root holds .gitattributes, logs/ and README.txt: full
            attempt(add("NOTES.txt")),
        ]
        """
    )
    assert result["statuses"] == [200, 400, 400, 200, 200, 200, 400]
    hub_message = (
        "Your push was rejected because it contains too many files per directory. Each directory in your git repo can "
        "only contain up to 3 files. Offending reference: refs/heads/main Offending directories: {}"
    )
    (kind, message), _, (_, root_message) = result["errors"]
    assert kind == "BadRequestError"  # huggingface_hub's type for a 400
    assert "Bad request for commit endpoint:" in message and hub_message.format("/logs/") in message
    assert hub_message.format("/") in root_message
    assert hub.stats.limit_rejections == 3
    assert sorted(hub.repo_files(REPO)) == [".gitattributes", "README.txt", "logs/b.txt", "logs/c.txt", "logs/d.txt"]
