"""`read_scalars`: every scalar of a logdir, a repo or a bucket in one pandas DataFrame; `export` writes it out."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import defaults
from ..source import LocalSource, ReadError, open_source
from .fetch import sync_mirror
from .runs import Columns, find_runs, read_run

if TYPE_CHECKING:
    import pandas as pd  # type: ignore[import-untyped]

EXTRA = "data"  # the extra that installs what reading into a DataFrame needs


def read_scalars(
    source: str | os.PathLike[str],
    tags: Iterable[str] | None = None,
    runs: Iterable[str] | None = None,
    *,
    path_in_repo: str | None = defaults.PATH_IN_REPO,
    repo_type: str = defaults.REPO_TYPE,
    revision: str | None = None,
    token: str | None = None,
) -> pd.DataFrame:
    """Every scalar of `source`, one row per value: the values TensorBoard reads, exactly.

    The values are those of TensorBoard's `EventAccumulator` with `size_guidance` 0 (nothing sampled away), each
    tag's in the order written; `hf_summary.read.runs` says what it does on restarts and broken files. Runs are named
    as TensorBoard names them: by their folder below the logdir (or `path_in_repo`), "." for that folder itself.

    From the Hub only event files are fetched, into a local mirror; a file that grew since the last read is fetched
    from where that read stopped. With `HF_HUB_OFFLINE=1`, what was fetched before is read.

    Args:
        source: a local logdir, a repo id (`ns/name`), or a bucket (`hf://buckets/ns/name`).
        tags: only these tags (None: all).
        runs: only these runs, by name (None: all).
        path_in_repo: the repo's or bucket's folder of runs (the writer's `path_in_repo`); ignored for a logdir.
        repo_type: "model", "dataset" or "space".
        revision: a repo's branch, tag or commit (None: main).
        token: Hub token, for a private repo or bucket (default: HF_TOKEN or `hf auth login`).

    Returns:
        Columns `run` and `tag` (categorical), `step` (int64), `wall_time` (float64, seconds since the epoch) and
        `value` (float64; TensorBoard's float32 values widened exactly); rows by run, then in the order written.

    Raises:
        ImportError: pandas or TensorBoard is not installed (`pip install 'hf-summary[data]'`).
        ReadError: the source cannot be read (the message says why).

    Example:
        ```py
        >>> df = hf_summary.read_scalars("me/my-run", tags=["train/loss"])
        >>> df.groupby("run").value.min()
        ```
    """
    pandas = require("pandas", "read_scalars")
    require("tensorboard", "read_scalars")  # its protos parse the events that are not plain scalars
    wanted_tags = None if tags is None else set([tags] if isinstance(tags, str) else tags)
    wanted_runs = None if runs is None else set([runs] if isinstance(runs, str) else runs)
    logdir = local_logdir(source, path_in_repo=path_in_repo, repo_type=repo_type, revision=revision, token=token)
    chosen = [(name, files) for name, files in find_runs(logdir) if wanted_runs is None or name in wanted_runs]
    out = Columns.for_files([path for _, files in chosen for path in files])
    tag_names: dict[str, int] = {}  # every run's tags, numbered in order of appearance
    sizes = []
    for _, files in chosen:
        start = out.size
        run_tags = read_run(files, out, wanted_tags)
        remap = np.array([tag_names.setdefault(tag, len(tag_names)) for tag in run_tags] or [0], dtype=np.int32)
        out.tag[start:out.size] = remap[out.tag[start:out.size]]
        sizes.append(out.size - start)
    return _frame(pandas, [name for name, _ in chosen], sizes, tag_names, out)


def _frame(pandas: Any, runs: list[str], sizes: list[int], tags: dict[str, int], out: Columns) -> pd.DataFrame:
    """The DataFrame of the columns: the runs and tags that have values, tags sorted by name; the numbers' columns
    taken as they are, not copied."""
    codes = out.tag[:out.size]
    used = np.zeros(len(tags), dtype=bool)
    used[codes] = True  # not bincount: it would copy the codes as 64-bit integers first
    order = sorted(tag for tag, code in tags.items() if used[code])
    position = {tag: index for index, tag in enumerate(order)}
    rank = np.array([position.get(tag, -1) for tag in tags] or [0], dtype=_code_type(len(order)))  # in code order
    runs_with_values = [run for run, size in zip(runs, sizes, strict=True) if size]
    run_codes = np.repeat(np.arange(len(runs_with_values), dtype=_code_type(len(runs_with_values))),
                          [size for size in sizes if size])
    return pandas.DataFrame({
        "run": pandas.Categorical.from_codes(run_codes, categories=runs_with_values),
        "tag": pandas.Categorical.from_codes(rank[codes], categories=order),
        "step": out.step[:out.size],
        "wall_time": out.wall_time[:out.size],
        "value": out.value[:out.size],
    }, copy=False)


def _code_type(categories: int) -> type[np.signedinteger[Any]]:
    """The integer type pandas keeps a categorical's codes in: built in it, they are not converted (copied)."""
    return np.int8 if categories < 2**7 else np.int16 if categories < 2**15 else np.int32


def local_logdir(
    source: str | os.PathLike[str],
    *,
    path_in_repo: str | None = defaults.PATH_IN_REPO,
    repo_type: str = defaults.REPO_TYPE,
    revision: str | None = None,
    token: str | None = None,
) -> Path:
    """The local folder holding `source`'s runs: the logdir itself, or the Hub's event files mirrored (brought up to
    date unless offline).

    Raises:
        ReadError: the source is not there or cannot be read (the message says why: "no such folder", "no such
            bucket", "no event files under ...").

    Example:
        ```py
        >>> local_logdir("hf://buckets/me/logs")
        PosixPath('/home/me/.cache/huggingface/hf_summary/show/buckets--me--logs/tensorboard')
        ```
    """
    opened = open_source(source, repo_type=repo_type, revision=revision, path_in_repo=path_in_repo, token=token)
    if isinstance(opened, LocalSource):
        return opened.path
    return sync_mirror(opened, token=token)


def export(frame: pd.DataFrame, path: str | os.PathLike[str]) -> None:
    """Write a `read_scalars` DataFrame to `path`: CSV (`.csv`, `.csv.gz`) or Parquet (`.parquet`).

    The file is written beside its final name and renamed when complete: a failed write leaves no half file.

    Raises:
        ValueError: the file name ends in neither.
        ImportError: Parquet without pyarrow (`pip install 'hf-summary[data]'`).
        ReadError: the file cannot be written there (its folder is missing, or refuses it).

    Example:
        ```py
        >>> export(hf_summary.read_scalars("runs"), "scalars.parquet")
        ```
    """
    import tempfile

    kind = output_format(path)
    target = Path(path).expanduser()
    if not target.parent.is_dir():
        raise ReadError(f"cannot write '{path}': no such folder: '{target.parent}'.")
    partial = None
    try:
        handle, partial = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
        os.close(handle)
        if kind == "parquet":
            frame.to_parquet(partial, index=False)
        else:
            frame.to_csv(partial, index=False, compression="gzip" if target.name.endswith(".gz") else None)
        os.replace(partial, target)
        partial = None
    except OSError as error:
        raise ReadError(f"cannot write '{path}': {error.strerror or error}.") from None
    finally:
        if partial is not None:
            Path(partial).unlink(missing_ok=True)


def output_format(path: str | os.PathLike[str]) -> str:
    """"csv" or "parquet", as `path` is named: checked before reading, so that a wrong name fails at once.

    Raises:
        ValueError: the file name ends in neither.
        ImportError: Parquet without pyarrow (`pip install 'hf-summary[data]'`).

    Example:
        ```py
        >>> output_format("scalars.csv.gz")
        'csv'
        ```
    """
    name = os.fspath(path)
    if name.endswith(".parquet"):
        require("pyarrow", "writing Parquet")
        return "parquet"
    if name.endswith((".csv", ".csv.gz")):
        return "csv"
    raise ValueError(f"Cannot tell the format of '{name}': name it .csv, .csv.gz or .parquet.")


def require(module: str, what: str) -> Any:
    """Import `module`, or say which extra installs it.

    Raises:
        ImportError: it is not installed.
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(f"{what} needs {module}: pip install 'hf-summary[{EXTRA}]'") from None
