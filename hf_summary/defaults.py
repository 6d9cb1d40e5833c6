"""The library's defaults, in one place: the writer, the upload spec, the CLI and the integrations read them here."""

from __future__ import annotations

# Where a run goes in the repo, and what of it: the same as huggingface_hub's HFSummaryWriter.
PATH_IN_REPO = "tensorboard"
ALLOW_PATTERNS = "*.tfevents.*"
REPO_TYPE = "model"
REVISION = "main"

COMMIT_EVERY = 5.0  # minutes between pushes
CLOSE_TIMEOUT = 60.0  # seconds close() waits for the final push
HUB_TIMEOUT = 5.0  # seconds the constructor waits for the Hub before going on locally

QUEUE_SIZE = 10_000  # events waiting in memory before logging blocks
# Small on purpose: the Hub replaces a file whole, so the file still growing is re-sent at each push. Closing it at
# the first push past this size makes a commit send the new bytes plus at most this much again.
MAX_FILE_SIZE = 1024 * 1024
