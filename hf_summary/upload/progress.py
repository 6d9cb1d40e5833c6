"""Progress where a person waits: a final push that takes a while shows that it is running, nothing else does.

Background pushes never draw anything (they would land in the training log at every interval). A final push at
`close()` is different: the script, or the notebook cell, waits for it. If it has not finished after `quiet_for`
seconds, a bar appears until it does: a widget in a notebook, a single line in a terminal (tqdm.auto picks).
"""

from __future__ import annotations

import concurrent.futures
import time
import warnings
from concurrent.futures import Future
from typing import Any

QUIET_FOR = 2.0  # seconds a final push may take before it shows a bar
_SLICE = 0.2  # seconds of each wait for the push: a Ctrl-C is seen within one


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
        bar = None
        try:
            while True:
                left = timeout - (time.monotonic() - start)
                try:
                    # In slices: the kernel gives Ctrl-C to any thread that does not block it, and only a wait of
                    # the main thread itself is cut short by it. Python runs the handler in the main thread when
                    # that next runs: within a slice, not at the push's deadline.
                    result = future.result(max(0.0, min(left, _SLICE)))
                except concurrent.futures.TimeoutError:
                    if future.done() or left <= _SLICE:  # the push's own error, or the time is up
                        raise
                    if bar is None and time.monotonic() - start >= self.quiet_for:
                        from tqdm import TqdmWarning

                        with warnings.catch_warnings():
                            # A kernel without ipywidgets: tqdm.auto warns at import, then draws no bar where
                            # stderr is not a terminal. Nothing to tell the user about a final push.
                            warnings.simplefilter("ignore", TqdmWarning)
                            from tqdm.auto import tqdm

                        self.shown = True
                        # disable=None: no bar where nobody sees one (output redirected to a log file), a widget in
                        # a notebook.
                        bar = tqdm(total=1, desc=self.description, bar_format="{desc}: {elapsed}", leave=False,
                                   disable=None)
                    continue
                if bar is not None:
                    bar.update(1)
                return result
        finally:
            if bar is not None:
                bar.close()
