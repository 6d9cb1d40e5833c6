"""The target's budget, as a schedule sees it: when the next push may go (a repo's commits per hour; a bucket has
none)."""

from __future__ import annotations

import logging
import math

from .pusher import Clock
from .targets import Target

logger = logging.getLogger(__name__)

_BUDGET_RECHECK = 60.0  # seconds between two looks at the history while a one-off push waits for the budget


class BudgetGate:
    """Holds pushes back while the target's budget has no room, and says until when (`not_before`).

    Args:
        target: the destination, whose `holdback()` reads its budget (a repo's recent history: one request).
        clock: seconds on the schedule's clock.

    Example:
        ```py
        >>> gate = BudgetGate(RepoTarget(client, max_commits_per_hour=60), time.monotonic)
        >>> gate.hold(once=False)   # seconds to wait before the next commit (0.0: now)
        0.0
        ```
    """

    def __init__(self, target: Target, clock: Clock) -> None:
        self.target = target
        self.clock = clock
        self.not_before = -math.inf  # a clock() value before which the target's budget takes no push
        self._budgeted = True  # False once a one-off push must go now, whatever the budget (`hurry`)
        self._told = False  # a one-off push says once that it waits for the budget

    def hold(self, *, once: bool) -> float:
        """Seconds the budget holds the next push back (0.0: none), and `not_before` moved that far.

        A one-off push (`once`) waits however long it takes, looking again every little while: the history may
        free a slot sooner (another writer's squash), and the Hub is the judge of it.
        """
        if not self.target.ready or not self._budgeted:
            return 0.0
        hold = self.target.holdback()
        if hold <= 0:
            return 0.0
        if once:
            if not self._told:
                logger.info("The commit budget of %s is spent: pushing in %.0fs, when a slot frees", self.target.name,
                            hold)
                self._told = True
            hold = min(hold, _BUDGET_RECHECK)
        self.not_before = self.clock() + hold
        return hold

    def hurry(self) -> None:
        """Let pushes go whatever the budget (the process is about to be killed: what it holds is worth more)."""
        self._budgeted = False
        self.not_before = -math.inf
