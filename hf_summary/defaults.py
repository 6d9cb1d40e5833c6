"""The library's defaults, in one place: the writer, the upload spec, the CLI and the integrations read them here."""

from __future__ import annotations

# Where a run goes in the repo, and what of it: the same as huggingface_hub's HFSummaryWriter.
PATH_IN_REPO = "tensorboard"
ALLOW_PATTERNS = "*.tfevents.*"
REPO_TYPE = "model"
REVISION = "main"

COMMIT_EVERY = 5.0  # minutes between pushes
# A bucket has no commits to budget: a push every few seconds, and only when something is new, keeps a curve live
# within the Hub's per-user request quota (two requests a push).
BUCKET_PUSH_EVERY = 2.0 / 60  # minutes
CLOSE_TIMEOUT = 60.0  # seconds close() waits for the final push
HUB_TIMEOUT = 5.0  # seconds the constructor waits for the Hub before going on locally
PUSH_TIMEOUT = 120.0  # seconds before a trigger()'s Future fails with PushError, even if the Hub never answers
CRASH_UPLOAD_TIMEOUT = 300.0  # seconds the companion retries the push of a run whose process died

# The Hub advises fewer than 100 files per commit over HTTP (a commit times out after 60 s); a backlog goes up in
# several commits of at most this many files, each recorded as it lands.
MAX_FILES_PER_COMMIT = 100

# Commits all writers of a repo make together in an hour, across machines (the Hub's commit quota is per repo and
# not documented; users report 429s from a few hundred an hour). Read from the repo's own history before each push.
MAX_COMMITS_PER_HOUR = 60

QUEUE_SIZE = 10_000  # events waiting in memory before logging blocks (events written in-process)
# Bytes of events held in memory while the disk refuses them (full, a quota, read-only, failing), by whoever writes
# the event files (the companion process, else the writer thread): 1.2 million scalars of a 16-character tag (55
# bytes each, measured), two minutes at 10 000 a second. Past it, values are dropped and counted (events/held.py).
HOLD_SIZE = 64 * 1024 * 1024
# Bytes of memory shared with the companion process that writes the event files: half of it 32 768 slots of one
# scalar each, half room for other events (an event larger than a quarter of it goes through a spill file). The
# companion reads it every 50 ms: logging waits only when more is logged between two reads than the ring holds, or
# faster than the companion writes.
RING_SIZE = 4 * 1024 * 1024
# Where an event file rolls (`max_file_size`), per upload path; measured with benchmarks/bench_upload_bytes.py.
# Legacy LFS (HF_HUB_DISABLE_XET=1): small on purpose. The Hub replaces a file whole, so the file still growing is
# re-sent at each push; closing it at the first push past this size makes a commit send the new bytes plus at most
# this much again.
MAX_FILE_SIZE = 1024 * 1024
# Xet (every user's client): a push sends only the growing file's new chunks, whatever its size, so the roll size is
# set by what else grows with it: files per folder (the Hub refuses more than 10 000; with the doubling every 1 000
# files, a run folder reaches about 6 900 files after a terabyte here, 9 900 at 1 MiB), and against that the bytes of
# small pushes (Xet re-sends a grown file's last chunk and its reconstruction: 150 KB pushes cost 1.07x the bytes
# logged at 1 MiB, 1.15x at 8 MiB, 1.18x from 16 MiB), the memory (the prefix goes up as bytes) and the hashing of a
# push. Must stay well below MAX_PREFIX_IN_MEMORY.
MAX_FILE_SIZE_XET = 8 * 1024 * 1024

# With Xet (every user's client), the valid prefix of a file still growing goes up as bytes read into memory: Xet
# takes paths and bytes, not file objects. Our own writer rolls its files before a push, so what it still appends to
# is below `max_file_size`; a file another program grows without rolling is read into memory up to this size, and
# past it goes up through the legacy LFS path, read in place.
MAX_PREFIX_IN_MEMORY = 64 * 1024 * 1024
