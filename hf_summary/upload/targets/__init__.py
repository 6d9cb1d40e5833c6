"""Destinations of a push: what differs between them lives behind `Target`; the plan, the upload state, the retry
policy, the schedule and the crash upload are shared."""

from .base import Receipt, Target
from .bucket import BucketTarget
from .repo import RepoTarget

__all__ = ["BucketTarget", "Receipt", "RepoTarget", "Target"]
