"""Integrations with training libraries: an accelerate tracker, and what the integrations share.

`hf_summary.integrations.HubTensorBoardTracker` imports accelerate on first use, so that importing this package does
not require it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["HubTensorBoardTracker"]

if TYPE_CHECKING:
    from .accelerate import HubTensorBoardTracker


def __getattr__(name: str) -> Any:
    if name == "HubTensorBoardTracker":
        from .accelerate import HubTensorBoardTracker

        return HubTensorBoardTracker
    raise AttributeError(f"module 'hf_summary.integrations' has no attribute {name!r}")
