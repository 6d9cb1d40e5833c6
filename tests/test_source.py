"""One way to name a source: a table of inputs, and what each command that takes a source does with them.

`read_scalars`, `export`, `show` and `notebook` read a source; `sync`, `watch` and `status` take a logdir (and a
target). Every input is either read (the run `mlp`, three values of `loss`) or refused with a clear message and, on
the command line, exit code 2 and no traceback. Everything runs against the session's LocalHub; the commands run
in this process (`cli.main`), which is what `hf-summary` runs.
"""

from __future__ import annotations

import functools
import itertools
import os
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

pd = pytest.importorskip("pandas")

import hf_summary  # noqa: E402
from hf_summary import cli  # noqa: E402
from hf_summary.source import ReadError, open_source, parse_source, resolve  # noqa: E402

from .conftest import HUB  # noqa: E402

OK = "ok"  # the source is read: run `mlp`, three values of `loss`
_names = itertools.count()


@dataclass
class World:
    """The places the table names: local folders, two repos, a dataset, a bucket (when the Hub speaks Xet)."""

    root: Path
    user: str
    repo: str
    elsewhere: str  # a repo whose runs are under logs/, not tensorboard/
    dataset: str
    bucket: str | None  # created as `hf://buckets/<name>`: in the user's namespace


def _write_run(folder: Path) -> None:
    import tensorboardX

    with tensorboardX.SummaryWriter(str(folder)) as writer:
        for step in range(3):
            writer.add_scalar("loss", step / 4, step)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    from huggingface_hub import HfApi

    HUB.resume()
    HUB.clear_faults()
    HUB.set_limits()
    root = tmp_path_factory.mktemp("sources")
    _write_run(root / "runs" / "mlp")
    (root / "empty" / "a").mkdir(parents=True)
    (root / "empty" / "b").mkdir()
    (root / "notes.txt").write_text("not a folder")
    api, user, suffix = HfApi(), HUB.user, next(_names)
    repo, elsewhere, dataset = f"{user}/src-repo-{suffix}", f"{user}/src-else-{suffix}", f"{user}/src-data-{suffix}"
    for name, folder, repo_type in ((repo, "tensorboard/mlp", "model"), (elsewhere, "logs/mlp", "model"),
                                    (dataset, "tensorboard/mlp", "dataset")):
        api.create_repo(name, repo_type=repo_type)
        api.upload_folder(repo_id=name, repo_type=repo_type, folder_path=str(root / "runs" / "mlp"),
                          path_in_repo=folder)
    bucket = None
    if HUB.xet:  # buckets are made of Xet
        bucket = f"src-bucket-{suffix}"
        # `sync` to a bucket named without a namespace: it lands in the user's, as the writer's would.
        assert cli.main(["sync", str(root / "runs" / "mlp"), f"hf://buckets/{bucket}"]) == 0
        (event_file,) = (root / "runs" / "mlp").glob("*tfevents*")
        assert f"tensorboard/mlp/{event_file.name}" in HUB.bucket_files(f"{user}/{bucket}")
    return World(root, user, repo, elsewhere, dataset, bucket)


def _table(w: World) -> list[tuple[str, list[str], str]]:
    """(input, extra command-line arguments, what every reading command does: OK or a message's pattern)."""
    rows = [
        (str(w.root / "runs"), [], OK),
        (str(w.root / "runs" / "mlp"), [], OK),
        (str(w.root / "empty"), [], r"no event files under '.*empty', found these folders: a/, b/"),
        (str(w.root / "missing"), [], r"no such folder: '.*missing'"),
        ("./missing-here", [], r"no such folder: './missing-here'"),
        ("a/b/c", [], r"no such folder: 'a/b/c'"),
        (str(w.root / "notes.txt"), [], r"is a file, not a folder of runs"),
        ("not a folder!", [], r"no such folder: 'not a folder!' \(and it is not a repo id either"),
        (w.repo, [], OK),
        (f"hf://{w.repo}", [], OK),
        (f"hf://models/{w.repo}", [], OK),
        (w.repo, ["--path-in-repo", "nowhere"],
         rf"no event files under 'nowhere' in the model repo '{w.repo}', found these folders: tensorboard/mlp/"),
        (w.repo, ["--revision", "no-such-branch"], r"has no revision 'no-such-branch'"),
        (w.repo, ["--repo-type", "dataset"], rf"no such dataset repo '{w.repo}' \(or your token cannot read it\)"),
        (w.elsewhere, [], rf"no event files under 'tensorboard' in the model repo '{w.elsewhere}', found these "
                          r"folders: logs/mlp/: pass the folder"),
        (w.elsewhere, ["--path-in-repo", "logs"], OK),
        (f"{w.user}/no-such-repo", [],
         rf"no such folder '{w.user}/no-such-repo', and no such model repo '{w.user}/no-such-repo' \(or your "
         r"token cannot read it\)"),
        (f"hf://datasets/{w.dataset}", [], OK),
        (w.dataset, ["--repo-type", "dataset"], OK),
        (f"hf://datasets/{w.dataset}", ["--repo-type", "space"], r"is a dataset, but .*repo_type='space'"),
        (f"hf://buckets/{w.user}/no-such-bucket", [],
         rf"no such bucket '{w.user}/no-such-bucket' \(or your token cannot read it\)"),
        (f"hf://buckets/{w.user}/logs/tensorboard", [], r"names a folder inside the bucket: pass the bucket, "
                                                        rf"hf://buckets/{w.user}/logs, and the folder"),
        ("hf://buckets/", [], r"'hf://buckets/' does not name a repo or a bucket"),
    ]
    if w.bucket is not None:
        rows += [
            (f"hf://buckets/{w.user}/{w.bucket}", [], OK),
            (f"hf://buckets/{w.bucket}", [], OK),  # no namespace: the user's, as `sync` put it there
            (f"hf://buckets/{w.bucket}", ["--revision", "main"], r"A bucket has no revisions"),
            (f"hf://buckets/{w.bucket}", ["--path-in-repo", "nowhere"],
             rf"no event files under 'nowhere' in the bucket '{w.user}/{w.bucket}', found these folders: "
             r"tensorboard/mlp/"),
        ]
    return rows


def _python_kwargs(args: list[str]) -> dict[str, str]:
    """The command line's options as `read_scalars` and `notebook` take them."""
    return {name.lstrip("-").replace("-", "_"): value for name, value in zip(args[::2], args[1::2], strict=True)}


def _check_values(frame: pd.DataFrame) -> None:
    assert list(frame["run"].unique()) in (["mlp"], ["."])  # the folder of runs, or the run's own folder
    assert frame["value"].tolist() == [0.0, 0.25, 0.5]


def test_read_scalars(world: World) -> None:
    for text, args, expected in _table(world):
        if expected == OK:
            _check_values(hf_summary.read_scalars(text, **_python_kwargs(args)))
        else:
            with pytest.raises(ReadError, match=expected):
                hf_summary.read_scalars(text, **_python_kwargs(args))


def _run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, err


def test_export(world: World, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    for number, (text, args, expected) in enumerate(_table(world)):
        output = tmp_path / f"{number}.csv"
        code, err = _run_cli(capsys, "export", text, "-o", str(output), *args)
        if expected == OK:
            assert code == 0, err
            _check_values(pd.read_csv(output).astype({"run": "category"}))
        else:
            assert code == 2 and re.search(expected, err), (text, args, err)
            assert not output.exists()


def test_show_and_notebook_open_what_read_scalars_reads(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    from hf_summary import show

    for text, args, expected in _table(world):
        kwargs = _python_kwargs(args)
        if expected == OK:  # served: the local folder itself, or the repo's or bucket's files, listed
            shown = show.open_show(text, **{"repo_type": "model", **kwargs})
            assert shown.listing if shown.listing is not None else (shown.folder / "mlp").is_dir() or \
                shown.folder.name == "mlp", text
            continue
        code, err = _run_cli(capsys, "show", text, *args)
        assert code == 2 and re.search(expected, err), (text, args, err)
        with pytest.raises(ReadError, match=expected):
            hf_summary.notebook(text, **kwargs)


def test_a_bucket_without_namespace_is_the_users_everywhere(world: World) -> None:
    if world.bucket is None:
        pytest.skip("buckets need a Hub that speaks Xet")
    source = resolve(parse_source(f"hf://buckets/{world.bucket}"))
    assert source.ident == f"{world.user}/{world.bucket}"
    assert source.mirror == resolve(parse_source(f"hf://buckets/{world.user}/{world.bucket}")).mirror
    # Offline, the one mirror of that name (read above, online) says whose it is; a name never read is refused.
    from huggingface_hub import constants

    hf_summary.read_scalars(f"hf://buckets/{world.bucket}")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(constants, "HF_HUB_OFFLINE", True)
        _check_values(hf_summary.read_scalars(f"hf://buckets/{world.bucket}"))
        with pytest.raises(ReadError, match="offline .* there is no mirror of it"):
            hf_summary.read_scalars("hf://buckets/never-read")


def test_a_name_without_namespace_needs_a_token(world: World, monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: Path) -> None:
    from hf_summary import source as source_module

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "no-login"))
    source_module._api.cache_clear()  # the user's HfApi, its whoami cached
    monkeypatch.setattr(source_module, "_api", functools.lru_cache(maxsize=16)(source_module._api.__wrapped__))
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-login" / "token"))
    with pytest.raises(ReadError, match="names no namespace.* no token says who you are"):
        open_source("hf://buckets/logs")


@pytest.mark.parametrize(("argv", "message"), [
    (["sync", "{root}/missing", "user/repo"], r"no such folder: '.*missing' \(the logdir\)"),
    (["sync", "{root}/notes.txt", "user/repo"], r"is a file, not a folder"),
    (["sync", "{root}/runs/mlp", "bad repo id"], r"Invalid repo_id 'bad repo id'"),
    (["sync", "{root}/runs/mlp", "hf://buckets/me/logs/sub"], r"names a folder inside the bucket"),
    (["sync", "{root}/runs/mlp", "hf://datasets/me/run", "--repo-type", "space"], r"is a dataset, but"),
    (["watch", "{root}/missing", "user/repo"], r"no such folder: '.*missing' \(the logdir\)"),
    (["status", "{root}/missing"], r"no such folder: '.*missing' \(the logdir\)"),
    (["status", "{root}/notes.txt"], r"is a file, not a folder"),
    (["export", "{root}/runs", "-o", "/nonexistent-dir/x.csv"],
     r"cannot write '/nonexistent-dir/x.csv': no such folder: '/nonexistent-dir'"),
    (["export", "{root}/runs", "-o", "/proc/x.parquet"], r"cannot write '/proc/x.parquet': "),
    (["export", "{root}/runs", "-o", "{root}/runs.csv/"], r"cannot write"),
    (["export", "{root}/runs", "-o", "{root}/scalars.xlsx"], r"name it .csv, .csv.gz or .parquet"),
])
def test_the_other_commands_refuse_bad_input_in_words(world: World, capsys: pytest.CaptureFixture[str],
                                                       argv: list[str], message: str) -> None:
    if os.name != "posix" and "/proc" in "".join(argv):
        pytest.skip("/proc is Linux's")
    (world.root / "runs.csv").mkdir(exist_ok=True)
    code, err = _run_cli(capsys, *[arg.format(root=world.root) for arg in argv])
    assert code == 2 and re.search(message, err), err


def test_export_writes_whole_files_or_none(world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hf_summary.read import frame as frame_module

    frame = hf_summary.read_scalars(world.root / "runs")
    target = tmp_path / "scalars.parquet"

    def fail(self: object, path: str, **kwargs: object) -> None:
        Path(path).write_bytes(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", fail)
    with pytest.raises(ReadError, match="cannot write .*No space left on device"):
        frame_module.export(frame, target)
    assert list(tmp_path.iterdir()) == []  # neither the file nor its partial copy


def test_the_demo_prints_a_command_that_runs_without_activating_the_virtualenv(tmp_path: Path) -> None:
    import importlib.util
    import shlex
    import subprocess
    import sys

    spec = importlib.util.spec_from_file_location("train_offline", Path(__file__).parents[1] / "examples" /
                                                  "train_offline.py")
    assert spec is not None and spec.loader is not None
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    bin_dir = str(Path(sys.executable).parent)
    path = os.pathsep.join(part for part in os.environ.get("PATH", "").split(os.pathsep) if part != bin_dir)
    with pytest.MonkeyPatch.context() as patch:  # the README's commands do not activate the virtualenv
        patch.setenv("PATH", path)
        printed = demo.command("hf-summary")
    assert printed != "hf-summary"
    result = subprocess.run([*shlex.split(printed), "--version"], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PATH": path})
    assert result.returncode == 0 and result.stdout.startswith("hf-summary "), result.stderr
