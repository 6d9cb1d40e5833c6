"""`HubTensorBoardTracker`: accelerate's TensorBoard tracker, with the run pushed to the Hub as it trains."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from accelerate.tracking import GeneralTracker, on_main_process

from .. import defaults
from ..validation import validate_repo_id
from ..writer import HFSummaryWriter
from .common import allow_patterns_with_config, as_number, save_config

logger = logging.getLogger(__name__)


class HubTensorBoardTracker(GeneralTracker):
    """An accelerate tracker that logs like `accelerate.tracking.TensorBoardTracker` and pushes to a Hub repo.

    Events go to `logging_dir/run_name`, as with accelerate's own tracker, through an `HFSummaryWriter`: they
    reach the Hub every `commit_every` minutes and at `accelerator.end_training()`. Unlike accelerate's tracker it
    does not flush to disk at every `log()`; the writer's thread writes once a second.

    `accelerator.log(values)` logs numbers (0-d tensors included) as scalars, strings as text and dicts of
    numbers as grouped scalars (`add_scalars`); other values are skipped with a warning, as the Trainer does.
    The config given to `init_trackers` is stored as hparams and as `config.json` beside the events, uploaded too.
    Everything runs on the main process only.

    Args:
        run_name: the run's folder name under `logging_dir`, and in the repo under `path_in_repo`.
        logging_dir: where the run's folder is created.
        repo_id: the repo to push to, `namespace/name`.
        writer_kwargs: passed to `HFSummaryWriter` (`commit_every`, `path_in_repo`, `repo_private`, `token`, ...).
            `config.json` is added to `repo_allow_patterns`.

    Raises:
        ValueError: a malformed `repo_id`.

    Example:
        ```py
        >>> from accelerate import Accelerator
        >>> from hf_summary.integrations import HubTensorBoardTracker
        >>> tracker = HubTensorBoardTracker("run-1", "logs", repo_id="me/my-experiment", commit_every=5)
        >>> accelerator = Accelerator(log_with=tracker)
        >>> accelerator.init_trackers("my-project", config={"lr": 1e-3})
        >>> accelerator.log({"loss": loss, "lr": {"encoder": 1e-3, "head": 1e-2}}, step=step)
        >>> accelerator.end_training()   # final push
        ```
    """

    name = "hf_tensorboard"
    requires_logging_directory = True
    main_process_only = True

    def __init__(
        self, run_name: str, logging_dir: str | os.PathLike[str], *, repo_id: str, **writer_kwargs: Any
    ) -> None:
        super().__init__()
        validate_repo_id(repo_id)  # now, rather than at init_trackers, possibly after the model was loaded
        self.run_name = run_name
        self.logging_dir = os.path.join(logging_dir, run_name)
        self.repo_id = repo_id
        self.writer_kwargs = writer_kwargs
        self.writer: HFSummaryWriter | None = None
        self._skipped: set[str] = set()

    @property
    def tracker(self) -> HFSummaryWriter | None:
        """The run's `HFSummaryWriter`, once `init_trackers` has started it (None on the other processes)."""
        return self.writer

    @on_main_process
    def start(self) -> None:
        kwargs = dict(self.writer_kwargs)
        patterns = allow_patterns_with_config(kwargs.pop("repo_allow_patterns", defaults.ALLOW_PATTERNS))
        self.writer = HFSummaryWriter(self.repo_id, logdir=self.logging_dir, repo_allow_patterns=patterns, **kwargs)
        logger.debug("Logging run %s to %s, pushed to %s", self.run_name, self.logging_dir, self.repo_id)

    @on_main_process
    def store_init_configuration(self, values: dict[str, Any]) -> None:
        """Store the run's config as hparams and as `config.json` beside the events.

        Args:
            values: the hyperparameters; nested dicts are shown as `a/b` hparams.
        """
        save_config(self._started(), values)

    @on_main_process
    def log(self, values: dict[str, Any], step: int | None = None, **kwargs: Any) -> None:
        """Log numbers as scalars, strings as text and dicts of numbers as grouped scalars.

        Args:
            values: tag -> value.
            step: the step of these values.
            kwargs: passed to `add_scalar`, `add_text` or `add_scalars` (e.g. `walltime`).
        """
        writer = self._started()
        for key, value in values.items():
            number = as_number(value)
            group = _numbers(value) if isinstance(value, Mapping) else None
            if number is not None:
                writer.add_scalar(key, number, global_step=step, **kwargs)
            elif isinstance(value, str):
                writer.add_text(key, value, global_step=step, **kwargs)
            elif group is not None:
                writer.add_scalars(key, group, global_step=step, **kwargs)
            elif key not in self._skipped:
                self._skipped.add(key)
                logger.warning("Not logging %r: a %s is neither a number, a string nor a dict of numbers. Use "
                               "`accelerator.get_tracker('hf_tensorboard').tracker.add_*` for other kinds of data.",
                               key, type(value).__name__)

    @on_main_process
    def log_images(self, values: dict[str, Any], step: int | None = None, **kwargs: Any) -> None:
        """Log batches of images, as accelerate's TensorBoard tracker does.

        Args:
            values: tag -> images (an `NCHW` array or tensor, or what `add_images` takes with `dataformats`).
            step: the step of these images.
            kwargs: passed to `add_images`.
        """
        writer = self._started()
        for key, images in values.items():
            writer.add_images(key, images, global_step=step, **kwargs)

    @on_main_process
    def finish(self) -> None:
        """Close the writer: write everything and make the final push (waiting at most its `close_timeout`)."""
        if self.writer is not None:
            self.writer.close()

    def _started(self) -> HFSummaryWriter:
        if self.writer is None:
            raise RuntimeError("The tracker has not started: call `accelerator.init_trackers(project_name)` before "
                               "logging.")
        return self.writer


def _numbers(values: Mapping[str, Any]) -> dict[str, float] | None:
    """A dict of numbers as floats; None if any value is not a number."""
    converted = {}
    for key, value in values.items():
        number = as_number(value)
        if number is None:
            return None
        converted[key] = number
    return converted
