"""Progress where a person waits: a final push that takes a while shows that it is running, nothing else does.

Background pushes never draw anything (they would land in the training log at every interval). A final push at
`close()` is different: the script, or the notebook cell, waits for it. If it has not finished after `quiet_for`
seconds, a bar appears until it does: a widget in a notebook, a single line in a terminal (tqdm.auto picks).
"""

from __future__ import annotations

import concurrent.futures
import time
from concurrent.futures import Future
from typing import Any

QUIET_FOR = 2.0  # seconds a final push may take before it shows a bar


class FinalPushProgress:
    """Waits for a final push, and shows a bar if it takes longer than `quiet_for` seconds.

    Args:
        description: what the bar says, e.g. "Final push to me/my-run".
        quiet_for: seconds before the bar appears.

    Example:
        ```py
        >>> FinalPushProgress("Final push to me/run").wait(member.committer.trigger(), timeout=60)
        ```
    """

    def __init__(self, description: str, quiet_for: float = QUIET_FOR) -> None:
        self.description = description
        self.quiet_for = quiet_for
        self.shown = False

    def wait(self, future: Future, timeout: float) -> Any:
        """The future's result, waiting at most `timeout` seconds.

        Raises:
            concurrent.futures.TimeoutError: the push did not finish in time.
            Exception: what the push raised.
        """
        start = time.monotonic()
        try:
            return future.result(min(timeout, self.quiet_for))
        except concurrent.futures.TimeoutError:
            if timeout <= self.quiet_for:
                raise
        from tqdm.auto import tqdm

        self.shown = True
        # disable=None: no bar where nobody sees one (output redirected to a log file), a widget in a notebook.
        with tqdm(total=1, desc=self.description, bar_format="{desc}: {elapsed}", leave=False, disable=None) as bar:
            result = future.result(max(0.0, timeout - (time.monotonic() - start)))
            bar.update(1)
        return result
