"""The core writer end to end: writer -> real huggingface_hub client -> local Hub server -> read back."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import tensorboardX

from hf_summary import HFSummaryWriter
from hf_summary.testing import LocalHub

from .helpers import accumulate, download_run, scalars, snapshot_run

# The companion process's own life is checked here: no companion shared by the module (conftest.py).
OWN_COMPANION = True


def test_is_a_summary_writer_and_repr_hides_token(hub: LocalHub, repo_id: str, logdir: Path) -> None:
    with HFSummaryWriter(repo_id, logdir=str(logdir), token=hub.token) as writer:
        assert isinstance(writer, tensorboardX.SummaryWriter)
        assert writer.repo_id == repo_id and writer.repo_type == "model" and writer.repo_revision == "main"
        assert writer.scheduler is not None
        text = repr(writer)
        assert repo_id in text and str(logdir) in text and hub.token not in text


def test_all_kinds_round_trip_through_the_hub(hub: LocalHub, repo_id: str, logdir: Path, tmp_path: Path) -> None:
    import torch

    image = np.random.default_rng(0).random((3, 8, 8))
    with HFSummaryWriter(repo_id, logdir=str(logdir)) as writer:
        for step in range(50):
            writer.add_scalar("loss", 1.0 / (step + 1), step)
        writer.add_scalar("tensor", torch.tensor(2.5), 7)
        writer.add_histogram("weights", np.arange(100, dtype=np.float64), 3)
        writer.add_image("image", image, 4)
        writer.add_text("notes", "hello hub", 5)
        writer.add_scalars("group", {"a": 1.0, "b": 2.0}, 6)
        info = writer.scheduler.trigger().result(timeout=60)
    assert info is not None and info.oid

    run = snapshot_run(repo_id, f"tensorboard/{logdir.name}", tmp_path / "download")
    assert scalars(run, "loss") == [(s, pytest.approx(1.0 / (s + 1), rel=1e-6)) for s in range(50)]
    assert scalars(run, "tensor") == [(7, 2.5)]
    acc = accumulate(run)
    histogram = acc.Histograms("weights")
    assert [h.step for h in histogram] == [3] and histogram[0].histogram_value.num == 100
    assert [i.step for i in acc.Images("image")] == [4]
    text = acc.Tensors("notes/text_summary")
    assert text[0].step == 5 and b"hello hub" in text[0].tensor_proto.string_val[0]
    assert scalars(run / "group" / "a", "group") == [(6, 1.0)]
    assert scalars(run / "group" / "b", "group") == [(6, 2.0)]


def test_trigger_contains_the_scalar_logged_just_before(hub: LocalHub, repo_id: str, logdir: Path,
                                                       tmp_path: Path) -> None:
    writer = HFSummaryWriter(repo_id, logdir=str(logdir))
    try:
        for round_ in range(3):
            writer.add_scalar("x", float(round_), round_)
            writer.scheduler.trigger().result(timeout=60)
            run = download_run(hub, repo_id, f"tensorboard/{logdir.name}", tmp_path / f"round{round_}")
            assert scalars(run, "x")[-1] == (round_, float(round_))
    finally:
        writer.close()


def test_context_exit_pushes_and_tags_the_card_in_the_first_commit(hub: LocalHub, repo_id: str, logdir: Path,
                                                                  tmp_path: Path) -> None:
    with HFSummaryWriter(repo_id, logdir=str(logdir), commit_every=60) as writer:
        writer.add_scalar("y", 3.0, 1)
    run = download_run(hub, repo_id, f"tensorboard/{logdir.name}", tmp_path / "dl")
    assert scalars(run, "y") == [(1, 3.0)]
    commits = hub.commits(repo_id)
    readme = hub.repo_files(repo_id)["README.md"].decode()
    assert "hf-summary-writer" in readme
    # One commit from us (plus the repo's initial commit, if the server makes one): the card came with the logs.
    ours = [c for c in commits if "README.md" in c.get("files", [])]
    assert len(ours) == 1 and any(f.startswith("tensorboard/") for f in ours[0]["files"])
    assert not writer.scheduler.alive


def test_nothing_changed_returns_none(hub: LocalHub, repo_id: str, logdir: Path) -> None:
    with HFSummaryWriter(repo_id, logdir=str(logdir)) as writer:
        writer.add_scalar("z", 1.0, 0)
        assert writer.scheduler.trigger().result(timeout=60) is not None
        assert writer.scheduler.trigger().result(timeout=60) is None


def test_triggers_during_a_commit_are_coalesced(hub: LocalHub, repo_id: str, logdir: Path) -> None:
    with HFSummaryWriter(repo_id, logdir=str(logdir)) as writer:
        writer.add_scalar("z", 1.0, 0)
        hub.set_faults(latency=0.3)
        first = writer.scheduler.trigger()
        futures = [writer.scheduler.trigger() for _ in range(20)]
        assert len({id(f) for f in futures}) <= 2
        for future in [first, *futures]:
            future.result(timeout=60)
        hub.clear_faults()


def test_stop_ends_the_thread_promptly(hub: LocalHub, repo_id: str, logdir: Path) -> None:
    writer = HFSummaryWriter(repo_id, logdir=str(logdir), commit_every=60)
    try:
        assert writer.scheduler.alive
        writer.scheduler.stop(timeout=5)
        assert not writer.scheduler.alive
    finally:
        writer.close()


def test_squash_history_keeps_one_commit_and_the_files(hub: LocalHub, repo_id: str, logdir: Path,
                                                      tmp_path: Path) -> None:
    with HFSummaryWriter(repo_id, logdir=str(logdir), squash_history=True) as writer:
        for step in range(3):
            writer.add_scalar("s", float(step), step)
            writer.scheduler.trigger().result(timeout=60)
    assert len(hub.commits(repo_id)) == 1
    run = download_run(hub, repo_id, f"tensorboard/{logdir.name}", tmp_path / "dl")
    assert scalars(run, "s") == [(0, 0.0), (1, 1.0), (2, 2.0)]


def test_squash_history_n_keeps_the_branch_short(hub: LocalHub, repo_id: str, logdir: Path, tmp_path: Path) -> None:
    lengths = []
    with HFSummaryWriter(repo_id, logdir=str(logdir), squash_history=5, commit_every=60) as writer:
        for step in range(12):
            writer.add_scalar("s", float(step), step)
            writer.scheduler.trigger().result(timeout=60)
            lengths.append(len(hub.commits(repo_id)))
    assert max(lengths) <= 6 and min(lengths[5:]) < 6  # squashed when over 5, not at every push
    run = download_run(hub, repo_id, f"tensorboard/{logdir.name}", tmp_path / "dl")
    assert scalars(run, "s") == [(s, float(s)) for s in range(12)]


def test_hub_down_at_start_then_up(hub: LocalHub, repo_id: str, logdir: Path, tmp_path: Path) -> None:
    hub.pause()
    errors: list[BaseException] = []
    # The constructor goes on locally after 1 s, the Future of a push the Hub does not answer fails after 2 s.
    writer = HFSummaryWriter(repo_id, logdir=str(logdir), commit_every=60, hub_timeout=1, push_timeout=2)
    try:
        for step in range(100):
            try:
                writer.add_scalar("loss", float(step), step)
            except BaseException as error:  # noqa: B036 - the point is that nothing reaches the loop
                errors.append(error)
        failed = writer.scheduler.trigger()
        with pytest.raises(Exception):  # noqa: B017 - the push failed (PushError at push_timeout), to the Future only
            failed.result(timeout=120)
        assert not hub.repo_exists(repo_id)
        hub.resume()
        assert writer.scheduler.trigger().result(timeout=60) is not None
    finally:
        writer.close()
    assert errors == []
    run = download_run(hub, repo_id, f"tensorboard/{logdir.name}", tmp_path / "dl")
    assert scalars(run, "loss") == [(s, float(s)) for s in range(100)]


def test_repo_layout_matches_huggingface_hub(hub: LocalHub, repo_id: str, tmp_path: Path) -> None:
    logdir = tmp_path / "my-logs"
    with HFSummaryWriter(repo_id, logdir=str(logdir), path_in_repo="custom/") as writer:
        writer.add_scalar("a", 1.0, 0)
    files = [p for p in hub.repo_files(repo_id) if p.startswith("custom/")]
    assert files and all(p.startswith("custom/my-logs/events.out.tfevents.") for p in files)


def test_dataset_repo_on_a_branch_private(hub: LocalHub, repo_id: str, logdir: Path) -> None:
    with HFSummaryWriter(repo_id, logdir=str(logdir), repo_type="dataset", repo_revision="logs",
                         repo_private=True) as writer:
        writer.add_scalar("a", 1.0, 0)
    assert hub.is_private(repo_id, repo_type="dataset")
    files = hub.repo_files(repo_id, repo_type="dataset", revision="logs")
    assert any(p.startswith(f"tensorboard/{logdir.name}/") for p in files)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"repo_id": "not a repo id"}, "repo_id"),
        ({"repo_id": "a/b/c"}, "repo_id"),
        ({"commit_every": 0}, "commit_every"),
        ({"commit_every": -1}, "commit_every"),
        ({"path_in_repo": "../escape"}, "path_in_repo"),
        ({"repo_type": "nonsense"}, "repo_type"),
        ({"repo_allow_patterns": 3}, "repo_allow_patterns"),
        ({"squash_history": 0}, "squash_history"),
        ({"squash_history": "5"}, "squash_history"),
        ({"push_timeout": 0}, "push_timeout"),
        ({"logdir": "s3://bucket/run"}, "remote"),
        ({"path_in_repo": "logs/.git"}, ".git folder"),
        ({"logdir": "runs/.git"}, "named .git"),
    ],
)
def test_bad_input_fails_fast_and_leaves_nothing(hub: LocalHub, repo_id: str, logdir: Path, kwargs: dict,
                                                 message: str) -> None:
    before = threading.active_count()
    with pytest.raises(ValueError, match=message):
        HFSummaryWriter(**{"repo_id": repo_id, "logdir": str(logdir), **kwargs})
    assert not logdir.exists()
    assert threading.active_count() == before


def test_logdir_that_is_a_file(hub: LocalHub, repo_id: str, tmp_path: Path) -> None:
    path = tmp_path / "afile"
    path.write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        HFSummaryWriter(repo_id, logdir=str(path))


@pytest.mark.parametrize("source", ["argument", "env"])
def test_rejected_token_names_its_source_not_its_value(hub: LocalHub, repo_id: str, logdir: Path,
                                                       monkeypatch: pytest.MonkeyPatch, source: str) -> None:
    from hf_summary import HubAuthError

    bad = "hf_this_token_is_not_known_0123456789"
    before = threading.active_count()
    if source == "env":
        monkeypatch.setenv("HF_TOKEN", bad)
        kwargs = {}
    else:
        kwargs = {"token": bad}
    with pytest.raises(HubAuthError) as caught:
        HFSummaryWriter(repo_id, logdir=str(logdir), **kwargs)
    text = str(caught.value)
    assert bad not in text
    assert ("the token passed with `token=`" if source == "argument" else "HF_TOKEN") in text
    assert not logdir.exists()
    assert threading.active_count() == before


def test_read_only_token_is_refused(hub: LocalHub, repo_id: str, logdir: Path) -> None:
    from hf_summary import HubAuthError

    hub.add_token("hf_read_only_token_for_tests", hub.user, write=False)
    with pytest.raises(HubAuthError, match="403"):
        HFSummaryWriter(repo_id, logdir=str(logdir), token="hf_read_only_token_for_tests")


def test_sync_command_carries_the_patterns(hub: LocalHub, repo_id: str, logdir: Path) -> None:
    import shlex

    with HFSummaryWriter(repo_id, logdir=str(logdir), repo_allow_patterns=["*.tfevents.*", "config.json"],
                         repo_ignore_patterns="*.tmp", path_in_repo="logs") as writer:
        words = shlex.split(writer.sync_command())
    assert words[:4] == ["hf-summary", "sync", str(logdir), repo_id]
    assert words[words.index("--include") + 1:words.index("--include") + 3] == ["*.tfevents.*", "config.json"]
    assert words[words.index("--exclude") + 1] == "*.tmp" and words[words.index("--path-in-repo") + 1] == "logs"


@pytest.mark.parametrize("main_tag, key", [("../escape", "a"), ("/abs", "a"), ("ok", "../../up"), (".git", "a"),
                                           ("group", ".git/x")])
def test_add_scalars_refuses_run_folders_outside_the_logdir(hub: LocalHub, repo_id: str, logdir: Path,
                                                            tmp_path: Path, main_tag: str, key: str) -> None:
    with HFSummaryWriter(repo_id, logdir=str(logdir), commit_every=60) as writer:
        with pytest.raises(ValueError, match="outside the logdir or inside a .git folder"):
            writer.add_scalars(main_tag, {key: 1.0}, 0)
        writer.add_scalars("fine", {"a": 2.0}, 1)  # the writer goes on
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run1"]  # nothing written beside the logdir
    run = download_run(hub, repo_id, f"tensorboard/{logdir.name}", tmp_path / "dl")
    assert scalars(run / "fine" / "a", "fine") == [(1, 2.0)]


def test_logging_after_close_reopens_and_the_next_close_pushes_it(hub: LocalHub, repo_id: str, logdir: Path,
                                                                  tmp_path: Path) -> None:
    writer = HFSummaryWriter(repo_id, logdir=str(logdir), commit_every=60)
    writer.add_scalar("loss", 1.0, 0)
    writer.close()
    writer.add_scalar("loss", 2.0, 1)  # tensorboardX reopens a closed writer: so do we, upload included
    assert not writer.scheduler.stopped
    writer.close()
    assert writer.scheduler.stopped
    run = download_run(hub, repo_id, f"tensorboard/{logdir.name}", tmp_path / "dl")
    assert scalars(run, "loss") == [(0, 1.0), (1, 2.0)]
