"""`hf-summary share`: a Docker Space serving a live TensorBoard over a repo's or a bucket's runs, against LocalHub.

The Space's command runs as the Hub would run it (`LocalHub.run_space`: its CMD, its secrets as environment
variables, PORT), with this venv's `hf-summary` instead of the wheel the Dockerfile installs (installing it would
take minutes), and this worktree's code on PYTHONPATH. TensorBoard is then asked over HTTP.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import hf_summary
from hf_summary.testing import LocalHub

from .helpers import wait_until
from .test_show import DEADLINE, _get_json, _scalars
from .test_show_live import LIVE, Writer, _env, _f32

BUCKET = "local-user/share-live"
SPACE_ENV = {
    "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    "PYTHONPATH": str(Path(hf_summary.__file__).resolve().parent.parent),  # what the Space's image would install
}


def _share(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hf_summary.cli", "share", *args], capture_output=True, text=True,
                          env=env, timeout=300)


def _losses(url: str, run: str) -> list[tuple[int, float]]:
    return _scalars(url + "/", run, "loss")


def _wait_for_losses(url: str, run: str, count: int, tag: str = "loss") -> None:
    def loaded() -> bool:
        return run in _get_json(url + "/data/runs") and len(_scalars(url + "/", run, tag)) >= count

    wait_until(loaded, timeout=DEADLINE, what=f"{count} values of {tag!r} of {run!r} in the Space's TensorBoard",
               interval=0.1)


@pytest.fixture
def bucket_hub(tmp_path: Path) -> Iterator[LocalHub]:
    with LocalHub(tmp_path / "hub", xet=True) as hub:
        yield hub


def test_local_hub_serves_the_spaces_api(hub: LocalHub, repo_id: str) -> None:
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi()
    space = repo_id
    api.create_repo(space, repo_type="space", space_sdk="docker", private=True,
                    space_variables=[{"key": "RUNS", "value": "tensorboard"}])
    api.create_repo(space, repo_type="space", space_sdk="docker", exist_ok=True)  # a second time: no error
    api.add_space_secret(space, "HF_TOKEN", "hf_secret_value")
    assert set(api.add_space_variable(space, "MODE", "live")) == {"RUNS", "MODE"}
    assert api.get_space_variables(space)["RUNS"].value == "tensorboard"
    secrets = api.get_space_secrets(space)
    assert set(secrets) == {"HF_TOKEN"}
    assert hub.space_settings(space)["secrets"]["HF_TOKEN"]["value"] == "hf_secret_value"
    info = api.space_info(space)
    assert (info.sdk, info.private) == ("docker", True)
    assert api.get_space_runtime(space).stage == "NO_APP_FILE"
    api.upload_file(path_or_fileobj=b"FROM python\n", path_in_repo="Dockerfile", repo_id=space, repo_type="space")
    assert api.get_space_runtime(space).stage == "SLEEPING"
    api.delete_space_secret(space, "HF_TOKEN")
    assert api.get_space_secrets(space) == {}
    with pytest.raises(HfHubHTTPError) as refused:  # secrets are set by those who can write to the Space
        api.add_space_secret(space, "OTHER", "value", token=False)
    assert refused.value.response.status_code in (401, 404)
    api.delete_repo(space, repo_type="space")
    assert hub.space_settings(space)["sdk"] is None  # a Space created again with this name starts afresh


def test_share_a_bucket_serves_every_value_live_and_updates_in_place(bucket_hub: LocalHub, tmp_path: Path) -> None:
    env = _env(bucket_hub, tmp_path / "writer")
    writer = Writer(env, f"hf://buckets/{BUCKET}", tmp_path / "runs" / "mlp")
    try:
        for step in range(3):
            writer.push(step)
        shared = _share(_env(bucket_hub, tmp_path / "sharer"), f"hf://buckets/{BUCKET}")
        assert shared.returncode == 0, shared.stderr
        space = f"{bucket_hub.user}/share-live-tensorboard"
        assert f"{bucket_hub.endpoint}/spaces/{space}" in shared.stdout
        assert "public: anyone with the link" in shared.stdout
        assert bucket_hub.token not in shared.stdout + shared.stderr
        files = bucket_hub.repo_files(space, repo_type="space")
        wheel = f"hf_summary-{hf_summary.__version__}-py3-none-any.whl"
        assert set(files) == {".gitattributes", "README.md", "Dockerfile", wheel}
        assert "sdk: docker\napp_port: 7860\n" in files["README.md"].decode()
        dockerfile = files["Dockerfile"].decode().splitlines()
        assert all(line.startswith(("RUN useradd", "RUN pip install")) for line in dockerfile if line[:4] == "RUN ")
        assert f'RUN pip install --no-cache-dir --user "./{wheel}[tensorboard]"' in dockerfile
        assert json.loads(dockerfile[-1].removeprefix("CMD ")) == [
            "hf-summary", "show", f"hf://buckets/{BUCKET}", "--path-in-repo", "tensorboard", "--host", "0.0.0.0"]
        assert not any(bucket_hub.token.encode() in content for content in files.values())
        commits = len(bucket_hub.commits(space, repo_type="space"))

        again = _share(_env(bucket_hub, tmp_path / "sharer"), f"hf://buckets/{BUCKET}")
        assert again.returncode == 0, again.stderr
        assert "already up to date" in again.stdout
        assert len(bucket_hub.commits(space, repo_type="space")) == commits  # no commit: no rebuild

        with bucket_hub.run_space(space, env=SPACE_ENV) as url:
            assert bucket_hub.space_settings(space)["sdk"] == "docker"
            _wait_for_losses(url, "mlp", 3)
            assert _losses(url, "mlp") == [(step, _f32(step / 7)) for step in range(3)]
            writer.push(3)
            pushed = time.monotonic()
            wait_until(lambda: (3, _f32(3 / 7)) in _losses(url, "mlp"), timeout=LIVE,
                       what="the value pushed after the Space started")
            print(f"bucket: a pushed value reached the Space's TensorBoard in {time.monotonic() - pushed:.1f} s")
            assert _losses(url, "mlp") == [(step, _f32(step / 7)) for step in range(4)]
    finally:
        writer.close()

    deleted = _share(_env(bucket_hub, tmp_path / "sharer"), f"hf://buckets/{BUCKET}", "--delete")
    assert deleted.returncode == 0, deleted.stderr
    assert not bucket_hub.repo_exists(space, repo_type="space")


def _private_repo_with_a_run(repo_id: str, tmp_path: Path) -> None:
    import tensorboardX
    from huggingface_hub import HfApi

    with tensorboardX.SummaryWriter(str(tmp_path / "run" / "cnn")) as writer:
        for step in range(5):
            writer.add_scalar("loss", step / 7, step)
    api = HfApi()
    api.create_repo(repo_id, private=True)
    api.upload_folder(repo_id=repo_id, folder_path=tmp_path / "run", path_in_repo="tensorboard")


def test_a_private_repo_is_shared_privately_and_read_only_with_a_token_secret(hub: LocalHub, repo_id: str,
                                                                             tmp_path: Path) -> None:
    from huggingface_hub import HfApi

    _private_repo_with_a_run(repo_id, tmp_path)
    space = f"{repo_id}-view"

    shared = hf_summary.share(repo_id, space)
    assert shared.private and hub.is_private(space, repo_type="space")
    assert shared.needs_token and "--token-secret" in shared.describe()
    with pytest.raises(RuntimeError, match="no such model repo"), hub.run_space(space, env=SPACE_ENV, timeout=60):
        pass  # the Space cannot read the private repo without a token: it says so and exits
    assert HfApi().get_space_runtime(space).stage == "RUNTIME_ERROR"

    read_token = "hf_local_read_token"
    hub.add_token(read_token, hub.user, write=False)
    again = hf_summary.share(repo_id, space, token_secret=read_token)
    assert not again.needs_token and again.commit is None  # the files did not change
    assert not again.secret_can_write and read_token not in again.describe()
    assert hub.space_settings(space)["secrets"]["HF_TOKEN"]["value"] == read_token
    files = hub.repo_files(space, repo_type="space")
    assert not any(token.encode() in content for content in files.values() for token in (read_token, hub.token))
    with hub.run_space(space, env=SPACE_ENV) as url:
        _wait_for_losses(url, "cnn", 5)
        assert _losses(url, "cnn") == [(step, _f32(step / 7)) for step in range(5)]
    assert HfApi().get_space_runtime(space).stage == "SLEEPING"


def test_share_errors_exit_2_and_say_what_to_do(hub: LocalHub, repo_id: str, tmp_path: Path) -> None:
    from huggingface_hub import HfApi

    missing = _share(dict(os.environ), repo_id)
    assert missing.returncode == 2 and "no such model repo" in missing.stderr, missing.stderr

    _private_repo_with_a_run(repo_id, tmp_path)
    HfApi().create_repo(f"{repo_id}-app", repo_type="space", space_sdk="gradio")
    taken = _share(dict(os.environ), repo_id, "--space", f"{repo_id}-app")
    assert taken.returncode == 2 and "is a gradio Space: pass another name" in taken.stderr, taken.stderr
    HfApi().create_repo(f"{repo_id}-docker", repo_type="space", space_sdk="docker")
    HfApi().upload_file(path_or_fileobj=b"FROM nginx\n", path_in_repo="Dockerfile", repo_id=f"{repo_id}-docker",
                        repo_type="space")
    for args in ((), ("--delete",)):  # another app: neither replaced nor deleted
        other = _share(dict(os.environ), repo_id, "--space", f"{repo_id}-docker", *args)
        assert other.returncode == 2 and "Docker Space that `hf-summary share` did not make" in other.stderr, other
    assert hub.repo_files(f"{repo_id}-docker", repo_type="space")["Dockerfile"] == b"FROM nginx\n"

    elsewhere = _share(dict(os.environ), repo_id, "--space", "someone-else/view")
    assert elsewhere.returncode == 2 and "cannot write to 'someone-else'" in elsewhere.stderr, elsewhere.stderr

    unknown = _share(dict(os.environ), repo_id, "--token-secret", "hf_not_a_token_the_hub_knows")
    assert unknown.returncode == 2 and "refused the token given with --token-secret" in unknown.stderr, unknown.stderr
    assert "hf_not_a_token_the_hub_knows" not in unknown.stderr + unknown.stdout

    written = _share(dict(os.environ), repo_id, "--space", f"{repo_id}-board", "--token-secret", hub.token)
    assert written.returncode == 0 and "a read-only token is safer" in written.stdout, written.stderr
    assert hub.token not in written.stdout + written.stderr

    local = _share(dict(os.environ), str(tmp_path / "run"))
    assert local.returncode == 2 and "Push them first" in local.stderr, local.stderr


def test_share_a_repo_serves_a_value_committed_after_the_space_started(hub: LocalHub, repo_id: str,
                                                                      tmp_path: Path) -> None:
    from hf_summary import HFSummaryWriter

    space = f"{repo_id}-board"
    with HFSummaryWriter(repo_id, logdir=str(tmp_path / "runs" / "cnn"), commit_every=60, crash_upload=False) as writer:
        for step in range(3):
            writer.add_scalar("loss", step / 7, step)
        writer.scheduler.trigger().result(timeout=120)
        shared = _share(dict(os.environ), repo_id, "--space", space, "--private")  # --private over a public repo
        assert shared.returncode == 0, shared.stderr
        assert hub.is_private(space, repo_type="space") and "private: only you" in shared.stdout
        cmd = json.loads(hub.repo_files(space, repo_type="space")["Dockerfile"].decode().splitlines()[-1][4:])
        assert cmd[2:5] == [f"hf://{repo_id}", "--path-in-repo", "tensorboard"]

        with hub.run_space(space, env=SPACE_ENV) as url:
            _wait_for_losses(url, "cnn", 3)
            writer.add_scalar("loss", 3 / 7, 3)
            assert writer.scheduler.trigger().result(timeout=120) is not None
            wait_until(lambda: (3, _f32(3 / 7)) in _losses(url, "cnn"), timeout=LIVE,
                       what="the value committed after the Space started")
            assert _losses(url, "cnn") == [(step, _f32(step / 7)) for step in range(4)]

    commits = len(hub.commits(space, repo_type="space"))
    public = _share(dict(os.environ), repo_id, "--space", space, "--public")  # visibility changes, files do not
    assert public.returncode == 0, public.stderr
    assert not hub.is_private(space, repo_type="space") and "public: anyone with the link" in public.stdout
    assert len(hub.commits(space, repo_type="space")) == commits


def test_init_shares_the_project_once_its_first_push_landed(hub: LocalHub, repo_id: str,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(TypeError, match="repo_id"):
        hf_summary.init("proj", share=True)  # a local run has nothing on the Hub to share
    run = hf_summary.init("proj", name="a", repo_id=f"hf://buckets/{repo_id}", share=True, commit_every=60)
    try:
        assert run.shared is not None and not run.shared.done()  # nothing pushed yet: no Space over nothing
        hf_summary.log({"loss": 0.5})
        run.writer.scheduler.trigger().result(timeout=60)
        shared = run.shared.result(timeout=120)
    finally:
        hf_summary.finish()
    assert shared.space_id == f"{repo_id.split('/')[0]}/{repo_id.split('/')[1]}-tensorboard"
    dockerfile = hub.repo_files(shared.space_id, repo_type="space")["Dockerfile"].decode()
    command = json.loads(dockerfile.strip().splitlines()[-1].removeprefix("CMD "))
    assert command[:3] == ["hf-summary", "show", f"hf://buckets/{repo_id}"]
    assert command[command.index("--path-in-repo") + 1] == "tensorboard/proj"  # the project's runs
    printed = capsys.readouterr()
    assert shared.url in printed.err  # the link, printed once the Space is there
    assert "Processing Files" not in printed.err + printed.out  # and no upload bars in the training log


_BROWSER = next((path for name in ("chromium", "chromium-browser", "google-chrome")
                 if (path := shutil.which(name)) is not None), None)


@pytest.mark.skipif(_BROWSER is None, reason="no headless Chromium on this machine (Debian's package: chromium)")
def test_a_browser_opening_the_shared_space_finds_the_runs_tag(hub: LocalHub, repo_id: str, tmp_path: Path) -> None:
    assert _BROWSER is not None
    with hf_summary.HFSummaryWriter(f"hf://buckets/{repo_id}", logdir=str(tmp_path / "mlp"), commit_every=60) as w:
        for step in range(5):
            w.add_scalar("train/loss_curve", step / 10, step)
        w.scheduler.trigger().result(timeout=60)
    shared = hf_summary.share(f"hf://buckets/{repo_id}")
    with hub.run_space(shared.space_id, env=SPACE_ENV) as url:
        _wait_for_losses(url, "mlp", 5, tag="train/loss_curve")
        # As a person opens the page: the browser runs TensorBoard's app and renders the run's charts.
        page = subprocess.run(
            [_BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'browser'}", "--virtual-time-budget=15000", "--dump-dom", url + "/"],
            capture_output=True, text=True, timeout=120)
    assert "train/loss_curve" in page.stdout, page.stderr[-2000:]

