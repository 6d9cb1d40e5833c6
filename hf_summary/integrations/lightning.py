"""`HubTensorBoardLogger`: Lightning's TensorBoard logger, with the run pushed to the Hub as it trains."""

from __future__ import annotations

import importlib
import os
from argparse import Namespace
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.fabric.utilities.logger import _convert_params, _flatten_dict
from lightning.pytorch.core.saving import save_hparams_to_yaml
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from .. import defaults
from ..events.tbx import file_writer, hparams
from ..validation import validate_repo_id
from ..writer import HFSummaryWriter
from .common import as_number

HPARAMS_FILE = TensorBoardLogger.NAME_HPARAMS_FILE  # "hparams.yaml"


class HubTensorBoardLogger(TensorBoardLogger):
    """A Lightning `TensorBoardLogger` whose `experiment` is an `HFSummaryWriter`: the run is pushed to the Hub.

    Everything Lightning logs through its TensorBoard logger (`self.log` metrics, `log_hyperparams`, the model
    graph with `log_graph=True`, and whatever you call on `logger.experiment`) is written to the same local folder,
    `save_dir/name/version[/sub_dir]`, and pushed every `commit_every` minutes, then once more when the stage ends
    (`fit`, `validate`, `test`, `predict`: Lightning calls `finalize`), failed or not. The repo mirrors the local
    layout: `<path_in_repo>/<name>/<version>[/<sub_dir>]`, and `hparams.yaml` is uploaded beside the events.

    Unlike Lightning's logger, `save()` (which Lightning calls after every `log_metrics`) does not flush the event
    files: the writer's thread writes them every second, and every push includes everything logged before it.
    Each stage ends with the writer closed; a later stage with the same logger opens a new writer in the same
    folder (a new event file, pushed at that stage's end). Checkpoints are not uploaded (unless you add them to
    `repo_allow_patterns`). Only global rank 0 logs and pushes, as with Lightning's logger.

    `version` is numbered from the local `save_dir` only: give an explicit `version` (a string) when runs of
    several machines push to one repo, or their folders in the repo may collide.

    Args:
        save_dir: the local folder of the runs.
        name: the experiment's folder under `save_dir` (and under `path_in_repo` in the repo); "" for none.
        version: the run's folder; an int becomes `version_<n>`, None the next free `version_<n>` in `save_dir`.
        log_graph: log the model's graph (`model.example_input_array` is traced), as Lightning's logger.
        default_hp_metric: log the placeholder metric `hp_metric` with hyperparameters logged without metrics.
        prefix: put at the beginning of every metric's tag.
        sub_dir: a sub-folder of the run for these logs.
        repo_id: the repo to push to, `namespace/name`.
        writer_kwargs: passed to `HFSummaryWriter` (`commit_every`, `path_in_repo`, `repo_private`, `token`,
            `squash_history`, ...) and through it to `tensorboardX.SummaryWriter`. `hparams.yaml` is added to
            `repo_allow_patterns`.

    Raises:
        ValueError: a malformed `repo_id`.

    Example:
        ```py
        >>> from lightning.pytorch import Trainer
        >>> from hf_summary.integrations import HubTensorBoardLogger
        >>> logger = HubTensorBoardLogger("logs", name="run", repo_id="me/my-experiment", commit_every=5)
        >>> trainer = Trainer(logger=logger, max_epochs=3)
        >>> trainer.fit(model)   # pushed to tensorboard/run/version_0/ while it trains, and when it ends
        ```
    """

    def __init__(
        self,
        save_dir: str | Path,
        name: str | None = "lightning_logs",
        version: int | str | None = None,
        log_graph: bool = False,
        default_hp_metric: bool = True,
        prefix: str = "",
        sub_dir: str | Path | None = None,
        *,
        repo_id: str,
        **writer_kwargs: Any,
    ) -> None:
        validate_repo_id(repo_id)  # now, rather than at the first log, possibly after the model was loaded
        super().__init__(save_dir, name=name, version=version, log_graph=log_graph,
                         default_hp_metric=default_hp_metric, prefix=prefix, sub_dir=sub_dir, **writer_kwargs)
        self.repo_id = repo_id
        self._experiment: HFSummaryWriter | None = None  # ours, a tensorboardX writer, not torch's

    @property
    @rank_zero_experiment
    def experiment(self) -> HFSummaryWriter:
        """The run's `HFSummaryWriter` (started at first use; a no-op object on ranks other than 0).

        Example:
            ```py
            >>> logger.experiment.add_histogram("weights", model.layer.weight, trainer.global_step)
            ```
        """
        if self._experiment is not None:
            return self._experiment
        kwargs = dict(self._kwargs)
        patterns = _with_hparams_file(kwargs.pop("repo_allow_patterns", defaults.ALLOW_PATTERNS))
        base = kwargs.pop("path_in_repo", defaults.PATH_IN_REPO) or ""
        self._experiment = HFSummaryWriter(
            self.repo_id, logdir=self.log_dir, repo_allow_patterns=patterns,
            path_in_repo=_repo_folder(base, self.save_dir, self.log_dir), **kwargs)
        return self._experiment

    @rank_zero_only
    def log_hyperparams(
        self,
        params: dict[str, Any] | Namespace,
        metrics: dict[str, Any] | float | None = None,
        step: int | None = None,
    ) -> None:
        """Record hyperparameters (and their metrics) for TensorBoard's HPARAMS tab, and keep them for hparams.yaml.

        Lightning's own logger builds the hparams events with torch's protos, which a tensorboardX writer cannot
        write; this does the same with tensorboardX's. Tensor values with one element are stored as numbers.

        Args:
            params: the hyperparameters (a dict, possibly nested, or a Namespace).
            metrics: metric name -> value, or one value (`hp_metric`); None logs `hp_metric = -1` when
                `default_hp_metric` is set, else no hparams events (the params are still kept for hparams.yaml).
            step: the step of the metrics.

        Example:
            ```py
            >>> logger.log_hyperparams({"lr": 1e-3, "model": {"layers": 2}}, {"val/acc": 0.0})
            ```
        """
        params = _convert_params(params)
        _keep_for_yaml(self, params)
        # Lightning's own steps (flatten, then sanitize to bool/int/float/str/tensor), then tensorboardX's types.
        flat = {key: _hparam_value(value)
                for key, value in self._sanitize_params(_flatten_dict(dict(params))).items()}
        if metrics is None:
            metrics = {"hp_metric": -1} if self._default_hp_metric else None
        elif not isinstance(metrics, dict):
            metrics = {"hp_metric": metrics}
        if metrics:
            self.log_metrics(metrics, step)
            run_writer = file_writer(self.experiment)
            for summary in hparams(flat, metrics):
                run_writer.add_summary(summary, step)

    @rank_zero_only
    def save(self) -> None:
        """Write hparams.yaml into the run folder if it is not there yet, as Lightning's logger does.

        Lightning calls this after every `log_metrics`; the event files are not flushed here (the writer's thread
        writes them every second), so that logging never waits for the disk.
        """
        if self._experiment is None:
            return  # nothing logged yet, or the stage is over: no folder to write into
        path = os.path.join(self.log_dir, HPARAMS_FILE)
        if os.path.isdir(self.log_dir) and not os.path.isfile(path):
            # Written aside and renamed: the uploader may read the folder at any moment and must not see half a file.
            partial = path + ".tmp"
            save_hparams_to_yaml(partial, self.hparams)
            os.replace(partial, path)

    @rank_zero_only
    def finalize(self, status: str) -> None:
        """Close the writer at the end of a stage: write everything and make the final push.

        The push waits at most the writer's `close_timeout`; if it cannot finish, the log says which
        `hf-summary sync` command completes it. On success hparams.yaml is written first, so that it is pushed too.

        Args:
            status: Lightning's outcome of the stage ("success", "failed", "finished").
        """
        writer = self._experiment
        if writer is None:
            return
        if status == "success":
            self.save()
        writer.close()
        # Lightning's logger keeps its closed writer and reopens its files on the next use; ours would stay closed
        # to the Hub (its scheduler is stopped), so a later stage gets a new writer in the same folder instead.
        self._experiment = None


def _repo_folder(base: str, save_dir: str, log_dir: str) -> str:
    """The writer's `path_in_repo` so that the run lands in `<base>/<log_dir relative to save_dir>` in the repo.

    The writer puts a logdir in `<path_in_repo>/<logdir name>`: the folders between `save_dir` and the run's own
    (`name`, and the version when there is a `sub_dir`) go into its `path_in_repo`.
    """
    parent = os.path.relpath(os.path.dirname(os.path.abspath(log_dir)), os.path.abspath(save_dir))
    parts = [part for part in (base.strip("/"), "" if parent == "." else parent.replace(os.sep, "/")) if part]
    return "/".join(parts)


def _with_hparams_file(patterns: list[str] | str | None) -> list[str] | None:
    """The writer's `repo_allow_patterns` extended with hparams.yaml; None (upload everything) stays None."""
    if patterns is None:
        return None
    patterns = [patterns] if isinstance(patterns, str) else list(patterns)
    return patterns if HPARAMS_FILE in patterns else [*patterns, HPARAMS_FILE]


def _keep_for_yaml(logger: TensorBoardLogger, params: dict[str, Any]) -> None:
    """Merge `params` into the logger's `hparams`, which `save()` writes to hparams.yaml, as Lightning does."""
    try:
        omegaconf = importlib.import_module("omegaconf")  # optional, as in Lightning
    except ImportError:
        omegaconf = None
    if omegaconf is not None and isinstance(params, omegaconf.Container):
        logger.hparams = omegaconf.OmegaConf.merge(logger.hparams, params)
    elif isinstance(logger.hparams, Mapping):
        logger.hparams.update(params)
    else:
        vars(logger.hparams).update(params)


def _hparam_value(value: Any) -> bool | float | str:
    """A value of Lightning's sanitized hparams (bool, int, float, str or a tensor of at most 1 dimension) as
    tensorboardX's `hparams` can hold it: tensorboardX would silently drop a tensor, torch stores its first element.

    A one-element tensor becomes its number; a longer one its text (rather than its first element alone).
    """
    if isinstance(value, bool | str):
        return value
    number = as_number(value)
    if number is not None:
        return number
    if getattr(value, "numel", lambda: 0)() == 1:
        return float(value.reshape(-1)[0].item())
    return str(value)
