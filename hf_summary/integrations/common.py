"""What the integrations share: telling numbers from other logged values, and saving a run's config.

A run's config is stored twice, beside the run's events: as TensorBoard hparams (for the HPARAMS dashboard) and as a
`config.json` file that is uploaded with the events, so the exact values stay readable without TensorBoard.
"""

from __future__ import annotations

import json
import numbers
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

CONFIG_FILE = "config.json"


def as_number(value: Any) -> float | None:
    """`value` as a float if it is a number, a numpy scalar or a 0-d tensor/array; None for anything else.

    Example:
        ```py
        >>> as_number(3), as_number(torch.tensor(0.5)), as_number("3"), as_number([1.0])
        (3.0, 0.5, None, None)
        ```
    """
    if isinstance(value, numbers.Real):  # bool, int, float and numpy's scalar types
        return float(value)
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):
        item = value.item()
        return float(item) if isinstance(item, numbers.Real) else None
    return None


def flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts as one level, their keys joined with "/" (TensorBoard's tag separator).

    Example:
        ```py
        >>> flatten({"loss": 1.0, "eval": {"acc": 0.5, "f1": 0.4}})
        {'loss': 1.0, 'eval/acc': 0.5, 'eval/f1': 0.4}
        ```
    """
    flat: dict[str, Any] = {}
    for key, value in values.items():
        tag = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{tag}/"))
        else:
            flat[tag] = value
    return flat


def allow_patterns_with_config(patterns: list[str] | str | None) -> list[str] | None:
    """The writer's `repo_allow_patterns` extended so that the run's config file is uploaded too.

    None (upload everything) stays None.
    """
    if patterns is None:
        return None
    patterns = [patterns] if isinstance(patterns, str) else list(patterns)
    return patterns if CONFIG_FILE in patterns else [*patterns, CONFIG_FILE]


def save_config(writer: Any, config: Mapping[str, Any]) -> Path:
    """Store `config` in the run: as hparams events and as `config.json` in the writer's logdir.

    Nested dicts become `a/b` hparams; values TensorBoard's hparams cannot hold (lists, None, objects) are shown
    as their text there, and kept as they are in the JSON file (objects JSON cannot hold as their text).

    Args:
        writer: a `tensorboardX.SummaryWriter` (an `HFSummaryWriter` included).
        config: the run's hyperparameters.

    Returns:
        The path of the config file.

    Example:
        ```py
        >>> save_config(writer, {"lr": 1e-3, "model": {"layers": 2}})
        PosixPath('runs/my-run/config.json')
        ```
    """
    from ..events.tbx import file_writer, hparams

    hparam_values = {key: _hparam_value(value) for key, value in flatten(config).items()}
    # Written into the run itself, not into a sub-run as `add_hparams` does: the hparams session is then the run
    # whose scalars it describes, and no second writer (with its own event file) is opened.
    run_writer = file_writer(writer)
    for summary in hparams(hparam_values, {}):
        run_writer.add_summary(summary)

    path = Path(writer.logdir) / CONFIG_FILE
    text = json.dumps(config, indent=2, default=str)
    # Written aside and renamed: the uploader may read the folder at any moment and must not see half a file.
    partial = path.with_name(path.name + ".tmp")
    partial.write_text(text + "\n", encoding="utf-8")
    os.replace(partial, path)
    return path


def _hparam_value(value: Any) -> bool | float | str:
    if isinstance(value, bool | str):
        return value
    number = as_number(value)
    return number if number is not None else str(value)
