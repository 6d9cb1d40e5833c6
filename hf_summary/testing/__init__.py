"""A local Hugging Face Hub server for tests: `LocalHub` speaks the Hub's HTTP API to the real `huggingface_hub`.

Standard library only: importing this package does not import `huggingface_hub`, torch or tensorboard.
"""

from .faults import FAULT_KINDS, HubStats
from .hub import LocalHub
from .limits import HUB_COMMIT_LIMIT, HUB_MAX_FOLDER_ENTRIES, HUB_RECOMMENDED_FILES_PER_COMMIT, HubLimits

__all__ = [
    "FAULT_KINDS",
    "HUB_COMMIT_LIMIT",
    "HUB_MAX_FOLDER_ENTRIES",
    "HUB_RECOMMENDED_FILES_PER_COMMIT",
    "HubLimits",
    "HubStats",
    "LocalHub",
]
