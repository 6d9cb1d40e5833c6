"""`notebook`: TensorBoard inline in a notebook, on a logdir, a repo or a bucket, read live as `show` reads it."""

from __future__ import annotations

import importlib
import os
from urllib.parse import urlparse

from .. import defaults
from . import RELOAD_INTERVAL, open_show
from .server import preload


def notebook(
    source: str | os.PathLike[str],
    *,
    path_in_repo: str | None = defaults.PATH_IN_REPO,
    repo_type: str = defaults.REPO_TYPE,
    revision: str | None = None,
    token: str | None = None,
    height: int = 800,
    reload_interval: float = RELOAD_INTERVAL,
) -> str:
    """Show TensorBoard on `source` in the notebook's output, and return its URL.

    TensorBoard runs in the notebook's own process, as `hf-summary show` runs it: a repo or bucket is mirrored
    locally and kept fresh while it runs, and TensorBoard's fast loader reads the mirror (offline: what was read
    before). The frame is TensorBoard's own notebook display (`tensorboard.notebook.display`).

    Args:
        source: a local logdir, a repo id (`ns/name`), or a bucket (`hf://buckets/ns/name`).
        path_in_repo: the repo's or bucket's folder of runs; ignored for a logdir.
        repo_type: "model", "dataset" or "space".
        revision: a repo's branch, tag or commit (None: main).
        token: Hub token, for a private repo or bucket.
        height: the frame's height, in pixels.
        reload_interval: seconds between checks of a repo's head commit (and the Python loader's reloads).

    Raises:
        ReadError: the source cannot be shown (the message says why), or TensorBoard is not installed.

    Example:
        ```py
        >>> import hf_summary
        >>> hf_summary.notebook("hf://buckets/me/logs")
        ```
    """
    preload()  # TensorBoard's imports, while the Hub is asked
    shown = open_show(os.fspath(source), repo_type=repo_type, revision=revision, path_in_repo=path_in_repo,
                      token=token)
    url = shown.start(port=0, reload_interval=reload_interval)
    # The module itself: `tensorboard.notebook` as an attribute is a lazy stand-in.
    importlib.import_module("tensorboard.notebook").display(port=urlparse(url).port, height=height)
    return url
