"""A repo branch as a destination: commits of at most 100 files, the commit budget, squash and 429 pacing."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from ... import defaults
from ..hooks import quiet_operation
from ..plan import FilePrefix, read_prefix
from .base import Pace

if TYPE_CHECKING:
    from huggingface_hub import CommitInfo, CommitOperationAdd

    from ..hub import RepoRef
    from ..plan import PlannedFile

logger = logging.getLogger(__name__)



class RepoClient(Protocol):
    """The Hub calls a repo target makes: `hub.HubClient`, or a test's stand-in."""

    repo: RepoRef
    repo_ready: bool

    @property
    def card_pending(self) -> bool: ...

    def ensure_repo(self) -> str: ...

    def commit(self, operations: list[CommitOperationAdd], message: str) -> CommitInfo: ...

    def commit_ages(self, window: float) -> list[float]: ...

    def commit_count(self) -> int: ...

    def squash(self) -> None: ...


class RepoTarget:
    """Commits to one repo branch, within the commit budget that all writers of the repo share.

    Args:
        client: the Hub client of the repo; the target owns it.
        max_files_per_commit: a push with more files goes up in several commits, each recorded as it lands.
        max_commits_per_hour: the commits all writers of the repo make together in an hour, read from the repo's
            history (one request); None for no budget.
        clock: seconds on a monotonic clock.

    Example:
        ```py
        >>> target = RepoTarget(HubClient(spec.repo()))
        >>> target.connect()
        'me/my-run'
        ```
    """

    def __init__(self, client: RepoClient, *, max_files_per_commit: int = defaults.MAX_FILES_PER_COMMIT,
                 max_commits_per_hour: int | None = defaults.MAX_COMMITS_PER_HOUR,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.client = client
        self.max_files_per_commit = max_files_per_commit
        self.max_commits_per_hour = max_commits_per_hour
        self._clock = clock
        self._own_commits: list[float] = []  # clock() values of our commits: squashed ones leave the history
        self._pace = Pace()
        self._xet: bool | None = None  # whether huggingface_hub uploads through Xet here (asked once)

    def __repr__(self) -> str:
        return f"RepoTarget({self.client.repo.repo_id!r}, {self.client.repo.revision!r})"

    @property
    def name(self) -> str:
        return self.client.repo.repo_id

    def web_url(self, path: str = "") -> str:
        repo = self.client.repo
        return f"{repo.url()}/tree/{repo.revision}" + (f"/{path}" if path else "")

    @property
    def ready(self) -> bool:
        return self.client.repo_ready

    def connect(self) -> str:
        return self.client.ensure_repo()

    def room(self) -> int:
        return self.max_files_per_commit - (1 if self.client.card_pending else 0)  # the card rides in our first

    def operation(self, path_in_repo: str, file: PlannedFile) -> CommitOperationAdd:
        if file.final:
            return quiet_operation(path_in_repo, str(file.local_path))
        if self._xet is None:
            from huggingface_hub.utils._runtime import is_xet_available  # what `_upload_files` asks

            self._xet = is_xet_available()
        if self._xet and file.size <= defaults.MAX_PREFIX_IN_MEMORY:
            # One file object in a commit sends the whole commit through legacy LFS: the prefix goes as bytes.
            return quiet_operation(path_in_repo, read_prefix(file.local_path, file.size))
        return quiet_operation(path_in_repo, FilePrefix(file.local_path, file.size))

    def send(self, operations: list[CommitOperationAdd], message: str) -> CommitInfo:
        info = self.client.commit(operations, message)
        self._own_commits.append(self._clock())
        return info

    def finish(self, squash: list[bool | int]) -> None:
        if any(policy is True for policy in squash):
            self.client.squash()
            return
        limits = [policy for policy in squash if policy]
        if limits and self.client.commit_count() > min(limits):
            self.client.squash()

    def holdback(self) -> float:
        """Seconds until the repo's `max_commits_per_hour` has a free slot, from its history (one request).

        Read at every scheduled push: a reading kept for a while would miss the commits of the machine's other
        processes and of other machines, each of which could then spend the budget on its own stale reading.
        """
        if not self.max_commits_per_hour or not self.client.repo_ready:
            return 0.0
        now = self._clock()
        self._own_commits = [t for t in self._own_commits if now - t < 3600]
        try:
            ages = self.client.commit_ages(3600)
        except Exception as error:  # the history unreadable: push anyway, the Hub's own 429 still paces us
            logger.info("Could not read the history of %s (%s); pushing anyway", self.name, error)
            return 0.0
        own = [now - t for t in self._own_commits]
        ages = ages if len(ages) >= len(own) else own  # a squashed history no longer shows our own commits
        if len(ages) < self.max_commits_per_hour:
            return 0.0
        oldest = sorted(ages)[:self.max_commits_per_hour][-1]  # the commit whose hour ends first frees a slot
        wait = max(1.0, 3600 - oldest)
        logger.info("%s made %d commits in the last hour (budget %d): next push in %.0fs", self.name, len(ages),
                    self.max_commits_per_hour, wait)
        return wait

    def paced(self, interval: float) -> float:
        return interval * self._pace.factor

    def settle(self, error: BaseException | None) -> None:
        self._pace.settle(error)
