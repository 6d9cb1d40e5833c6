"""`init` / `log` / `finish`: the wandb- and trackio-style API, writing TensorBoard runs pushed to the Hub.

```py
import hf_summary as wandb

wandb.init(project="my-project", name="baseline", group="lr-sweep", config={"lr": 1e-3}, repo_id="me/experiments")
for step in range(100):
    wandb.log({"loss": loss, "eval": {"acc": acc}})   # scalars "loss" and "eval/acc", at steps 0, 1, 2, ...
wandb.finish()                                        # final push
```

A run is a TensorBoard run folder, `<logdir_root>/<project>[/<group>]/<name>` locally and
`tensorboard/<project>[/<group>]/<name>` in the repo, so that TensorBoard lists the runs of a project side by side.
"""

from __future__ import annotations

import dataclasses
import inspect
import sys
from collections.abc import Mapping
from concurrent.futures import Future
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from . import defaults
from .integrations.common import allow_patterns_with_config, as_number, flatten, save_config
from .process import STATE
from .upload.spec import UploadSpec


class Run:
    """One run started by `init()`: log to it with `log()`, end it with `finish()` (or a `with` block).

    Attributes:
        project: the project, the run's parent folder.
        name: the run's folder name.
        group: the folder between project and run, or None.
        logdir: the run's local folder.
        repo_id: the repo the run is pushed to; None for a local run.
        path_in_repo: the repo folder holding the project's (or the group's) runs.
        writer: the run's `SummaryWriter` (an `HFSummaryWriter` when `repo_id` is set), for the other `add_*`
            calls: histograms, images, ...
        step: the step the next `log()` without `step` uses.
    """

    def __init__(
        self,
        *,
        project: str,
        name: str,
        group: str | None,
        logdir: Path,
        repo_id: str | None,
        spec: UploadSpec,
        writer: Any,
    ) -> None:
        self.project = project
        self.name = name
        self.group = group
        self.logdir = logdir
        self.repo_id = repo_id
        self.spec = spec
        self.path_in_repo = spec.path_in_repo or ""
        self.writer = writer
        self.step = 0
        self.finished = False
        self.shared: Future | None = None  # `init(share=...)`: what sharing did, once the first push landed

    def __repr__(self) -> str:
        return f"Run(project={self.project!r}, name={self.name!r}, group={self.group!r}, logdir={str(self.logdir)!r})"

    def log(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Log numbers (0-d tensors included) as scalars and strings as text; nested dicts become `a/b` tags.

        Args:
            metrics: tag -> value.
            step: the step of these values. None uses the run's step, which each call moves past the step it
                logged at (so calls without `step` log at 0, 1, 2, ...).

        Raises:
            TypeError: a value that is neither a number nor a string; nothing of this call is logged then.
            RuntimeError: the run is finished.
        """
        if self.finished:
            raise RuntimeError(f"Run {self.name!r} is finished; start another with hf_summary.init(...).")
        step = self.step if step is None else int(step)
        scalars, texts = {}, {}
        for tag, value in flatten(metrics).items():
            number = as_number(value)
            if number is not None:
                scalars[tag] = number
            elif isinstance(value, str):
                texts[tag] = value
            else:
                raise TypeError(f"log() takes numbers, strings and dicts of them; {tag!r} is a {type(value).__name__}. "
                                f"Log other kinds of data with run.writer.add_histogram/add_image/... .")
        for tag, number in scalars.items():
            self.writer.add_scalar(tag, number, step)
        for tag, text in texts.items():
            self.writer.add_text(tag, text, step)
        self.step = max(self.step, step + 1)

    def finish(self) -> None:
        """Write everything and close the run; a run with a repo makes its final push (see `close_timeout`)."""
        if STATE.run is self:
            STATE.run = None
        if self.finished:
            return
        self.finished = True
        self.writer.close()
        if self.repo_id is None:
            print(f"hf_summary: run {self.name!r} is in {self.logdir}. Push it to the Hub with:\n  "
                  f"{self.sync_command()}", file=sys.stderr, flush=True)

    def sync_command(self, repo_id: str | None = None) -> str:
        """The `hf-summary sync` command that uploads this run with the same repo layout.

        Args:
            repo_id: the repo to upload to. Defaults to the run's repo, or for a local run to a repo named after
                the project in your namespace.
        """
        spec = dataclasses.replace(self.spec, repo_id=repo_id) if repo_id else self.spec
        return spec.sync_command(self.logdir)

    def __enter__(self) -> Run:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.finish()


def init(
    project: str,
    name: str | None = None,
    config: Mapping[str, Any] | None = None,
    repo_id: str | None = None,
    group: str | None = None,
    logdir_root: str | Path = "runs",
    share: bool | str = False,
    **writer_kwargs: Any,
) -> Run:
    """Start a run and make it the current one (finishing the previous current run, as wandb does).

    Args:
        project: the project: a folder that holds its runs, locally and in the repo.
        name: the run's folder name. Defaults to the date and time, e.g. `20250101-120000`.
        config: hyperparameters, stored as TensorBoard hparams and as `config.json` in the run folder.
        repo_id: the repo to push to, `namespace/name`. None keeps the run local; `init` then prints the
            `hf-summary sync` command that pushes it later (also `run.sync_command()`).
        group: a folder between the project and the run, to keep related runs together.
        logdir_root: the local folder holding the projects. Defaults to "runs".
        share: share the project's runs live through a Docker Space (`hf_summary.share`) once the first push
            landed: True for a Space named after the repo, or the Space's id `ns/name`. Its URL is printed then;
            `run.shared` is the Future of what was done. Needs `repo_id`.
        writer_kwargs: passed to `HFSummaryWriter` (`commit_every`, `path_in_repo` (default "tensorboard"),
            `repo_private`, `token`, ...) or, for a local run, to `LocalSummaryWriter`.

    Returns:
        The run; `hf_summary.log` and `hf_summary.finish` act on it too.

    Raises:
        ValueError: a project, group or name that is not a plain folder name; a malformed repo id.
        TypeError: Hub arguments (`commit_every`, ...) without `repo_id`.

    Example:
        ```py
        >>> import hf_summary as wandb
        >>> run = wandb.init(project="mnist", name="lr-1e-3", config={"lr": 1e-3}, repo_id="me/mnist-runs")
        >>> wandb.log({"loss": 0.5})
        >>> wandb.finish()   # the run is in me/mnist-runs under tensorboard/mnist/lr-1e-3/
        ```
    """
    for what, value in (("project", project), ("group", group), ("name", name)):
        if value is not None or what == "project":
            _check_folder_name(what, value)
    base = writer_kwargs.pop("path_in_repo", defaults.PATH_IN_REPO)
    path_in_repo = "/".join(part for part in ((base or "").strip("/"), project, group) if part)
    parent = Path(logdir_root, project, *([group] if group else []))
    logdir = parent / (name or _unused_name(parent))
    patterns = allow_patterns_with_config(writer_kwargs.pop("repo_allow_patterns", defaults.ALLOW_PATTERNS))

    if share and repo_id is None:
        raise TypeError("share= shares a run pushed to the Hub: pass repo_id=... or drop share.")
    if repo_id is not None:
        from .writer import HFSummaryWriter

        writer = HFSummaryWriter(repo_id, logdir=str(logdir), path_in_repo=path_in_repo,
                                 repo_allow_patterns=patterns, **writer_kwargs)
        spec = writer.spec
    else:
        hub_only = sorted(set(writer_kwargs) & _hub_arguments())
        if hub_only:
            raise TypeError(f"{', '.join(hub_only)} only apply to a run pushed to the Hub: pass repo_id=... or "
                            f"drop them.")
        from .local_writer import LocalSummaryWriter

        writer = LocalSummaryWriter(str(logdir), **writer_kwargs)
        # A local run's command pushes to a repo named after the project, in the user's namespace.
        spec = UploadSpec.create(project, path_in_repo=path_in_repo, allow_patterns=patterns)

    if STATE.run is not None:
        STATE.run.finish()
    run = Run(project=project, name=logdir.name, group=group, logdir=logdir, repo_id=repo_id, spec=spec,
              writer=writer)
    STATE.run = run
    if config:
        save_config(writer, config)
    if share:
        from .sharing import share_when_pushed

        run.shared = share_when_pushed(writer, share if isinstance(share, str) else None,
                                       token=writer_kwargs.get("token"))
    if repo_id is None:
        print(f"hf_summary: run {run.name!r} logs locally to {logdir} (no repo_id). Push it to the Hub later with:"
              f"\n  {run.sync_command()}", file=sys.stderr, flush=True)
    return run


def log(metrics: Mapping[str, Any], step: int | None = None) -> None:
    """Log to the current run; see `Run.log`.

    Raises:
        RuntimeError: no run was started with `init()`.
    """
    if STATE.run is None:
        raise RuntimeError("No current run: call hf_summary.init(project=...) before hf_summary.log().")
    STATE.run.log(metrics, step)


def finish() -> None:
    """Finish the current run, if there is one; see `Run.finish`."""
    if STATE.run is not None:
        STATE.run.finish()


def _check_folder_name(what: str, value: object) -> None:
    if not isinstance(value, str) or value in ("", ".", "..") or "/" in value or "\\" in value:
        raise ValueError(f"{what} must be a plain folder name like 'my-{what}' (no '/'), got {value!r}.")


def _unused_name(parent: Path) -> str:
    stem = datetime.now().strftime("%Y%m%d-%H%M%S")
    name, n = stem, 1
    while (parent / name).exists():
        n += 1
        name = f"{stem}-{n}"
    return name


def _hub_arguments() -> set[str]:
    """`HFSummaryWriter`'s own keyword arguments (`commit_every`, `token`, ...): meaningless for a local run."""
    from .local_writer import LocalSummaryWriter
    from .writer import HFSummaryWriter

    def keyword_only(cls: type) -> set[str]:
        parameters = inspect.signature(cls).parameters.values()
        return {p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY}

    return keyword_only(HFSummaryWriter) - keyword_only(LocalSummaryWriter) - {"logdir"}
