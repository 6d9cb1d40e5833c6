"""`read_scalars`: every scalar of a logdir, a repo or a bucket in one pandas DataFrame; `export` writes it out."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import defaults
from ..show import ShowError, parse_source
from .fetch import ReadError, sync_mirror
from .runs import RunScalars, find_runs, read_run

if TYPE_CHECKING:
    import pandas as pd  # type: ignore[import-untyped]

COLUMNS = ("run", "tag", "step", "wall_time", "value")
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
    """Every scalar of `source`, one row per value: the values TensorBoard shows, exactly.

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
        ImportError: pandas is not installed (`pip install 'hf-summary[data]'`).
        ReadError: the source cannot be read (the message says why).

    Example:
        ```py
        >>> df = hf_summary.read_scalars("me/my-run", tags=["train/loss"])
        >>> df.groupby("run").value.min()
        ```
    """
    pandas = require("pandas", "read_scalars")
    wanted_tags = None if tags is None else set([tags] if isinstance(tags, str) else tags)
    wanted_runs = None if runs is None else set([runs] if isinstance(runs, str) else runs)
    logdir = local_logdir(source, path_in_repo=path_in_repo, repo_type=repo_type, revision=revision, token=token)
    names: list[str] = []
    tag_names: dict[str, int] = {}
    parts: list[tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    for name, files in find_runs(logdir):
        if wanted_runs is None or name in wanted_runs:
            parts.append(_part(len(names), read_run(files, wanted_tags), tag_names))
            names.append(name)
    return _frame(pandas, names, tag_names, parts)


def _part(number: int, run: RunScalars, tag_names: dict[str, int]
          ) -> tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A run's columns, its tag codes renumbered into the frame's (`tag_names`, which this extends)."""
    remap = np.array([tag_names.setdefault(tag, len(tag_names)) for tag in run.tags] or [0], dtype=np.int32)
    return number, remap[run.tag], run.step, run.wall_time, run.value


def _frame(pandas: Any, runs: list[str], tags: dict[str, int],
           parts: list[tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]) -> pd.DataFrame:
    """The DataFrame of the runs' columns, built one column at a time so that at most one is held twice."""
    sizes = [part[1].size for part in parts]
    run_codes = np.repeat(np.array([part[0] for part in parts], dtype=np.int32), sizes)
    order = sorted(tags)
    position = {tag: index for index, tag in enumerate(order)}
    rank = np.array([position[tag] for tag in tags] or [0], dtype=np.int32)  # `tags` is in code order
    columns: dict[str, Any] = {
        "run": pandas.Categorical.from_codes(run_codes, categories=runs),
        "tag": pandas.Categorical.from_codes(rank[_join(parts, 1, np.int32)], categories=order),
    }
    for index, name in enumerate(COLUMNS[2:], start=2):
        columns[name] = _join(parts, index, np.int64 if name == "step" else np.float64)
    return pandas.DataFrame(columns, copy=False)


def _join(parts: list[Any], index: int, dtype: Any) -> np.ndarray:
    """Column `index` of all parts in one array; each part's column is dropped as soon as it is copied."""
    out = np.empty(sum(part[index].size for part in parts), dtype=dtype)
    at = 0
    for number, part in enumerate(parts):
        column = part[index]
        out[at:at + column.size] = column
        at += column.size
        parts[number] = (*part[:index], column[:0], *part[index + 1:])
    return out


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
        ReadError: the source cannot be read (the message says why).
    """
    try:
        parsed = parse_source(os.fspath(source), repo_type=repo_type, revision=revision, path_in_repo=path_in_repo)
    except ShowError as error:
        raise ReadError(str(error).replace("--revision", "revision")) from None
    if isinstance(parsed, Path):
        return parsed
    return sync_mirror(parsed, token=token)


def export(frame: pd.DataFrame, path: str | os.PathLike[str]) -> None:
    """Write a `read_scalars` DataFrame to `path`: CSV (`.csv`, `.csv.gz`) or Parquet (`.parquet`).

    Raises:
        ValueError: the file name ends in neither.
        ImportError: Parquet without pyarrow (`pip install 'hf-summary[data]'`).

    Example:
        ```py
        >>> export(hf_summary.read_scalars("runs"), "scalars.parquet")
        ```
    """
    name = os.fspath(path)
    if name.endswith(".parquet"):
        require("pyarrow", "writing Parquet")
        frame.to_parquet(name, index=False)
    elif name.endswith((".csv", ".csv.gz")):
        frame.to_csv(name, index=False)
    else:
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
