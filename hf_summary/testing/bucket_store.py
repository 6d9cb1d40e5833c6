"""Storage Buckets of the local Hub: buckets, their files and their change feed, kept under the Hub's root.

A bucket is the Hub's non-versioned, mutable, S3-like storage "powered by the Xet storage backend" (Hub docs,
storage-buckets: "Buckets vs Repositories": no history, overwrite in place). So a bucket here is a table
`path -> file` rewritten in place by each batch, with no commit; a file is only a reference to content the Xet CAS
already holds (its Xet hash), plus its size, sha256 (for plain downloads), client mtime and upload time.

Layout under `root`:

    buckets/<ns>/<name>/bucket.json   owner, visibility, dates, the last change number and the file table

The change feed (`GET /api/buckets/{id}/events`, huggingface_hub `_bucket_live_follow.py`) replays from an in-memory
log of the last `REPLAY_LIMIT` batches: a resume point older than that, or from before a restart, gets `reset`, as
the client expects of "a resume point older than the replay buffer" (`_Reset` in `_bucket_live_follow.py`).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

from .errors import BadRequest, HubError

BUCKET_TYPE = "bucket"  # the `repo_type` of buckets in Xet token routes (huggingface_hub `utils/_xet.py`)
REPLAY_LIMIT = 1000  # batches the change feed can replay
_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,96}$")


def iso_time(epoch: float) -> str:
    """A time in the Hub's date format (`2024-01-31T12:00:00.000Z`, what `huggingface_hub.utils.parse_datetime`
    reads)."""
    moment = datetime.fromtimestamp(epoch, timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_iso_time(text: str) -> float:
    """Seconds since the epoch of an ISO 8601 instant (`since=` of the change feed).

    Raises:
        BadRequest: not an ISO 8601 instant.
    """
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError as err:
        raise BadRequest(f"Invalid ISO 8601 date: {text!r}") from err
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def validate_bucket_id(bucket_id: str) -> str:
    """`namespace/name`, with the characters the Hub accepts in repository names.

    Raises:
        BadRequest: anything else.
    """
    parts = bucket_id.split("/")
    if len(parts) != 2 or not all(
        _NAME_RE.match(part) and "--" not in part and ".." not in part and part[0] not in ".-" for part in parts
    ):
        raise BadRequest(f"Invalid bucket id: {bucket_id!r}")
    return bucket_id


def path_error(path: object) -> str | None:
    """Why `path` cannot name a file in a bucket, or None if it can."""
    if not isinstance(path, str) or not path:
        return "Invalid path: a non-empty string is required"
    if path.startswith("/") or path.endswith("/"):
        return f"Invalid path {path!r}: it must not start or end with '/'"
    if any(part in ("", ".", "..") for part in path.split("/")):
        return f"Invalid path {path!r}: empty, '.' and '..' segments are not allowed"
    return None


@dataclass(frozen=True)
class BucketObject:
    """A file in a bucket: a reference to Xet content.

    Attributes:
        path: Where it is in the bucket.
        xet_hash: Its Xet file hash (the CAS rebuilds it from the hash).
        size: Its size in bytes.
        sha256: The sha256 of its content: the local Hub's blob store keeps plain bytes under it.
        mtime: Modification time the client gave (`mtime`, milliseconds, in the batch), as an ISO date.
        uploaded_at: When the batch writing it was applied, as an ISO date.
        content_type: The `contentType` the client gave, if any.
    """

    path: str
    xet_hash: str
    size: int
    sha256: str
    mtime: str
    uploaded_at: str
    content_type: str | None = None

    def to_api(self) -> dict[str, object]:
        """The file as `list_bucket_tree` and `get_bucket_paths_info` read it (huggingface_hub `_buckets.py`
        `BucketFile`: `type, path, size, xetHash, mtime, uploadedAt`)."""
        return {
            "type": "file",
            "path": self.path,
            "size": self.size,
            "xetHash": self.xet_hash,
            "mtime": self.mtime,
            "uploadedAt": self.uploaded_at,
        }


@dataclass(frozen=True)
class Bucket:
    """A snapshot of a bucket: metadata and file table."""

    bucket_id: str
    owner: str
    private: bool
    created_at: str
    updated_at: str
    files: dict[str, BucketObject] = field(default_factory=dict)

    @property
    def size(self) -> int:
        """Bytes of all its files."""
        return sum(f.size for f in self.files.values())


@dataclass(frozen=True)
class PutObject:
    """Batch action: write (or overwrite) a file."""

    obj: BucketObject


@dataclass(frozen=True)
class RemoveObject:
    """Batch action: delete a file (deleting a missing file changes nothing)."""

    path: str


BucketAction = PutObject | RemoveObject


@dataclass(frozen=True)
class FeedBatch:
    """One entry of the change feed: the changes one batch made, under a change number."""

    seq: int
    at: float
    changes: tuple[dict[str, object], ...]


@dataclass
class _Feed:
    batches: deque[FeedBatch] = field(default_factory=lambda: deque(maxlen=REPLAY_LIMIT))
    complete_since: float = float("-inf")  # the log holds every change made at or after this time


class BucketStore:
    """Thread-safe store of the buckets under `root`, with the change feed of each.

    Args:
        root: The Hub's root; buckets live in `root/buckets`.
    """

    def __init__(self, root: Path):
        self.root = Path(root) / "buckets"
        (self.root / ".tmp").mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._buckets: dict[str, Bucket] = {}
        self._seqs: dict[str, int] = {}
        self._feeds: dict[str, _Feed] = {}
        # Cursors carry this run's id: a cursor from before a restart points into a log this run does not have.
        self._epoch = secrets.token_hex(4)

    # ---------------------------------------------------------------- buckets

    def get(self, bucket_id: str) -> Bucket | None:
        """The bucket, or None if it does not exist."""
        with self._lock:
            if bucket_id not in self._buckets:
                loaded = self._load(bucket_id)
                if loaded is None:
                    return None
            return self._buckets[bucket_id]

    def create(self, bucket_id: str, *, owner: str, private: bool) -> Bucket:
        """Create an empty bucket.

        Raises:
            BadRequest: invalid id.
            HubError: 409 if it exists.
        """
        validate_bucket_id(bucket_id)
        with self._lock:
            if self.get(bucket_id) is not None:
                raise HubError(409, f"A bucket named {bucket_id} already exists", "RepoExists")
            now = iso_time(time.time())
            bucket = Bucket(bucket_id, owner, private, now, now)
            self._buckets[bucket_id] = bucket
            self._seqs[bucket_id] = 0
            self._feeds[bucket_id] = _Feed()
            self._save(bucket)
            return bucket

    def delete(self, bucket_id: str) -> bool:
        """Delete a bucket and its file table (the content stays in the CAS). False if it did not exist."""
        with self._lock:
            if self.get(bucket_id) is None:
                return False
            del self._buckets[bucket_id]
            self._feeds.pop(bucket_id, None)
            self._seqs.pop(bucket_id, None)
            (self._dir(bucket_id) / "bucket.json").unlink(missing_ok=True)
            self._changed.notify_all()
            return True

    def set_private(self, bucket_id: str, private: bool) -> None:
        """Change a bucket's visibility (it must exist)."""
        with self._lock:
            bucket = self.get(bucket_id)
            if bucket is not None:
                self._buckets[bucket_id] = replace(bucket, private=private)
                self._save(self._buckets[bucket_id])

    def in_namespace(self, namespace: str) -> list[Bucket]:
        """The buckets of a namespace, by name."""
        folder = self.root / namespace
        names = sorted(p.name for p in folder.iterdir() if (p / "bucket.json").is_file()) if folder.is_dir() else []
        return [b for b in (self.get(f"{namespace}/{name}") for name in names) if b is not None]

    def apply(self, bucket_id: str, actions: list[BucketAction]) -> FeedBatch | None:
        """Apply a batch's valid actions in order, persist the table once and publish the changes as one feed entry.

        Returns:
            The feed entry, or None if nothing changed (empty batch, deletions of missing files only).

        Raises:
            KeyError: the bucket does not exist.
        """
        with self._lock:
            bucket = self.get(bucket_id)
            if bucket is None:
                raise KeyError(bucket_id)
            files = dict(bucket.files)
            touched: dict[str, None] = {}
            for action in actions:
                if isinstance(action, PutObject):
                    files[action.obj.path] = action.obj
                    touched[action.obj.path] = None
                elif files.pop(action.path, None) is not None:
                    touched[action.path] = None
            # huggingface_hub `_bucket_live_follow.BucketFileChange`: "add" for a new path, "update" for a
            # re-upload, "delete"; a path written several times in one batch is reported once, in its last state.
            changes: list[dict[str, object]] = []
            for path in touched:
                obj = files.get(path)
                if obj is None:
                    if path in bucket.files:
                        changes.append({"path": path, "op": "delete"})
                    continue
                changes.append({
                    "path": path,
                    "op": "update" if path in bucket.files else "add",
                    "size": obj.size,
                    "xetHash": obj.xet_hash,
                    "uploadedAt": obj.uploaded_at,
                    "mtime": obj.mtime,
                })
            if not changes:
                return None
            now = time.time()
            self._seqs[bucket_id] += 1
            batch = FeedBatch(self._seqs[bucket_id], now, tuple(changes))
            updated = replace(bucket, files=files, updated_at=iso_time(now))
            self._buckets[bucket_id] = updated
            self._save(updated)
            feed = self._feed(bucket_id)
            if len(feed.batches) == REPLAY_LIMIT:  # the oldest entry is about to go
                feed.complete_since = feed.batches[1].at if REPLAY_LIMIT > 1 else now
            feed.batches.append(batch)
            self._changed.notify_all()
            return batch

    # ---------------------------------------------------------------- change feed

    def cursor(self, seq: int) -> str:
        """The opaque cursor resuming strictly after change number `seq`."""
        return f"{self._epoch}.{seq}"

    def last_seq(self, bucket_id: str) -> int:
        """The number of the last change made to the bucket (0: none yet)."""
        with self._lock:
            return self._seqs.get(bucket_id, 0)

    def replay(
        self, bucket_id: str, *, cursor: str | None, since: float | None
    ) -> tuple[list[FeedBatch], int] | None:
        """The feed entries to send before `ready`: after `cursor`, or made at or after `since`; neither: none.

        Returns:
            The entries and the number of the last change now (live changes follow it), or None when the log cannot
            replay from there (the client must reconcile: `reset`).

        Raises:
            BadRequest: a malformed cursor (the client then steps back to `since=`).
        """
        with self._lock:
            feed = self._feed(bucket_id)
            batches = list(feed.batches)
            head = self._seqs.get(bucket_id, 0)
            if cursor is not None:
                epoch, _, number = cursor.partition(".")
                if not number.isdigit():
                    raise BadRequest(f"Invalid cursor: {cursor!r}")
                seq = int(number)
                if epoch != self._epoch or seq > head:
                    return None  # from another run of the server: this log does not reach back there
                oldest = batches[0].seq if batches else head + 1
                if seq < oldest - 1:
                    return None
                return [b for b in batches if b.seq > seq], head
            if since is not None:
                if since < feed.complete_since:
                    return None
                return [b for b in batches if b.at >= since], head
            return [], head

    def wait(self, bucket_id: str, after_seq: int, timeout: float) -> list[FeedBatch] | None:
        """The feed entries after `after_seq`, waiting up to `timeout` seconds for one.

        Returns:
            The entries (empty after the timeout), or None if they are gone from the log (the reader fell behind
            by more than `REPLAY_LIMIT` batches) or the bucket was deleted.
        """
        with self._changed:
            if self._seqs.get(bucket_id, 0) <= after_seq:
                self._changed.wait(timeout)
            if bucket_id not in self._buckets:
                return None
            batches = [b for b in self._feed(bucket_id).batches if b.seq > after_seq]
            if batches and batches[0].seq != after_seq + 1:
                return None
            return batches

    def wake_all(self) -> None:
        """Wake every waiting reader (the server is closing)."""
        with self._changed:
            self._changed.notify_all()

    # ---------------------------------------------------------------- persistence

    def _feed(self, bucket_id: str) -> _Feed:
        feed = self._feeds.get(bucket_id)
        if feed is None:
            feed = self._feeds[bucket_id] = _Feed()
        return feed

    def _dir(self, bucket_id: str) -> Path:
        validate_bucket_id(bucket_id)
        return self.root / bucket_id

    def _load(self, bucket_id: str) -> Bucket | None:
        try:
            data = json.loads((self._dir(bucket_id) / "bucket.json").read_text())
        except (FileNotFoundError, BadRequest):
            return None
        files = {
            path: BucketObject(path, xet, size, sha256, mtime, uploaded, ctype)
            for path, (xet, size, sha256, mtime, uploaded, ctype) in data["files"].items()
        }
        bucket = Bucket(bucket_id, data["owner"], data["private"], data["createdAt"], data["updatedAt"], files)
        self._buckets[bucket_id] = bucket
        self._seqs[bucket_id] = data["seq"]
        # Changes made before this run are not in the log: only replays from now on are complete.
        self._feeds[bucket_id] = _Feed(complete_since=time.time() if data["seq"] else float("-inf"))
        return bucket

    def _save(self, bucket: Bucket) -> None:
        data = {
            "owner": bucket.owner,
            "private": bucket.private,
            "createdAt": bucket.created_at,
            "updatedAt": bucket.updated_at,
            "seq": self._seqs.get(bucket.bucket_id, 0),
            "files": {
                path: [f.xet_hash, f.size, f.sha256, f.mtime, f.uploaded_at, f.content_type]
                for path, f in sorted(bucket.files.items())
            },
        }
        target = self._dir(bucket.bucket_id) / "bucket.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        # Written aside then renamed, so a reader (or a restarted server) never sees half a table.
        fd, tmp_name = tempfile.mkstemp(dir=self.root / ".tmp")
        try:
            with os.fdopen(fd, "w") as tmp:
                json.dump(data, tmp)
            os.replace(tmp_name, target)
        finally:
            if os.path.exists(tmp_name):
                os.unlink(tmp_name)
