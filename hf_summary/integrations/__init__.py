"""Integrations with training libraries: an accelerate tracker, a Lightning logger, and what they share.

`hf_summary.integrations.HubTensorBoardTracker` and `HubTensorBoardLogger` import accelerate and Lightning on first
use, so that importing this package requires neither.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["HubTensorBoardLogger", "HubTensorBoardTracker"]

if TYPE_CHECKING:
    from .accelerate import HubTensorBoardTracker
    from .lightning import HubTensorBoardLogger


def __getattr__(name: str) -> Any:
    if name == "HubTensorBoardTracker":
        from .accelerate import HubTensorBoardTracker

        return HubTensorBoardTracker
    if name == "HubTensorBoardLogger":
        from .lightning import HubTensorBoardLogger

        return HubTensorBoardLogger
    raise AttributeError(f"module 'hf_summary.integrations' has no attribute {name!r}")
