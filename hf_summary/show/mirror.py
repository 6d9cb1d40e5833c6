"""The local mirror `show` serves, kept fresh: a thread follows the repo or bucket and fetches what changed.

- A bucket: its change feed (the Hub's server-sent events, huggingface_hub's `BucketFollower`, what
  `HfFileSystem(live_follow=True)` uses) says which file changed and its new size as soon as a push lands; nothing is
  asked of the Hub while nothing changes. Where the feed cannot be followed, the bucket is listed every `interval`
  seconds instead; and it is listed again every `RECONCILE_EVERY` seconds whatever the feed says.
- A repo: its revision's head commit is asked for every `interval` seconds (one request); a new commit is listed,
  and its changed files fetched, at that commit.

Each changed event file is fetched by `read.fetch.fetch_file`: its new bytes only, or, if it was replaced (shorter,
or its bytes before the mirror's end changed, or a new version at the same size), whole, renamed over the old copy.
Files are fetched `FETCH_WORKERS` at a time. After each round `on_change(replaced=...)` tells the server: new bytes,
or a file replaced or deleted (a loader must start over to see that).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..read.fetch import FETCH_WORKERS, GONE, GREW, NEW, REPLACED, RemoteFile, fetch_file, list_event_files
from ..source import HubSource, ReadError, check_exists, is_event_file

logger = logging.getLogger(__name__)

RECONCILE_EVERY = 60.0  # seconds between full listings of a bucket whose change feed is followed


class Mirror:
    """Keeps `source.mirror` equal to the event files under the source's folder, in a thread of its own.

    Args:
        source: the repo or bucket (resolved).
        listing: its event files as just listed (`list_event_files`), fetched first.
        sha: a repo's head commit that listing was made at (None for a bucket).
        token: the Hub token.
        interval: seconds between checks of a repo's head commit, or of a bucket's listing when its change feed cannot
            be followed.
        on_change: called after a round that changed the mirror: `replaced=True` if a file was fetched again whole
            or deleted.
    """

    def __init__(self, source: HubSource, listing: dict[str, RemoteFile], sha: str | None, *,
                 token: str | None = None, interval: float = 5.0,
                 on_change: Callable[..., None] = lambda **_: None) -> None:
        self.source = source
        self.token = token
        self.interval = interval
        self.on_change = on_change
        self.sha = sha
        self.synced = threading.Event()  # set after the first round: every file listed at the start is fetched
        self.rounds = 0
        self._known: dict[str, RemoteFile] = {}  # what the mirror holds, as last fetched
        self._pending: dict[str, RemoteFile | None] = dict(listing)  # to fetch (None: to delete)
        self._relist = False
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._follower: Any = None
        self._pool = ThreadPoolExecutor(FETCH_WORKERS, thread_name_prefix="hf_summary-show-fetch")
        self._thread = threading.Thread(target=self._run, name="hf_summary-show-mirror", daemon=True)
        self._last_error = ""

    def start(self) -> Mirror:
        self._thread.start()
        if self.source.bucket_id is not None:
            self._follow_bucket()
        return self

    def stop(self) -> None:
        self._stopped.set()
        self._wake.set()
        if self._follower is not None:
            self._follower.stop()
        self._thread.join(timeout=2)  # a fetch under way ends with the process (a daemon thread)
        self._pool.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------ following

    def _follow_bucket(self) -> None:
        """Follow the bucket's change feed, if huggingface_hub has it (a private module: polling otherwise)."""
        try:
            from huggingface_hub import constants
            from huggingface_hub._bucket_live_follow import BucketFollower
        except ImportError:
            logger.info("No bucket change feed in this huggingface_hub: listing the bucket every %g s", self.interval)
            return
        self._follower = BucketFollower(endpoint=constants.ENDPOINT, bucket_id=self.source.ident, token=self.token,
                                        on_changes=self._on_changes, on_reconcile=self._on_reconcile,
                                        is_alive=lambda: not self._stopped.is_set())
        self._follower.start()

    def _following(self) -> bool:
        return self._follower is not None and self._follower.is_alive()

    def _on_changes(self, changes: list[Any]) -> None:
        folder = self.source.folder
        with self._lock:
            for change in changes:
                path = change.path
                if folder and not path.startswith(folder + "/"):
                    continue
                relpath = path[len(folder) + 1:] if folder else path
                if not is_event_file(relpath.rsplit("/", 1)[-1]):
                    continue
                if change.op == "delete":
                    self._pending[relpath] = None
                elif change.size is None:  # an update that did not say the size: the listing will
                    self._relist = True
                else:
                    self._pending[relpath] = RemoteFile(relpath, int(change.size), change.xet_hash)
        self._wake.set()

    def _on_reconcile(self) -> None:
        with self._lock:
            self._relist = True
        self._wake.set()

    # ------------------------------------------------------------------ the loop

    def _run(self) -> None:
        next_check = time.monotonic() + self.interval
        next_reconcile = time.monotonic() + RECONCILE_EVERY
        while not self._stopped.is_set():
            try:
                now = time.monotonic()
                if now >= next_check:
                    next_check = now + self.interval
                    if self.source.bucket_id is None:
                        self._check_head()
                    elif not self._following():
                        self._relist = True
                if self.source.bucket_id is not None and now >= next_reconcile:
                    next_reconcile = now + RECONCILE_EVERY
                    self._relist = True
                self._round()
                self._last_error = ""
            except Exception as error:  # the Hub failing a moment: what the mirror holds stays served
                message = f"{error}"
                if message != self._last_error:
                    logger.warning("Following %s failed, trying again in %g s: %s", self.source.describe(),
                                   self.interval, message)
                self._last_error = message
            if self.rounds:
                self.synced.set()
            self._wake.wait(max(0.0, min(next_check, next_reconcile) - time.monotonic()))
            self._wake.clear()

    def _check_head(self) -> None:
        sha = check_exists(self.source, token=self.token)
        if sha != self.sha:
            logger.info("%s: new commit %s", self.source.describe(), sha)
            self.sha = sha
            with self._lock:
                self._relist = True

    def _round(self) -> None:
        """List if asked to, then fetch (and delete) what is pending."""
        with self._lock:
            relist, self._relist = self._relist, False
        if relist:
            try:
                listing = list_event_files(self.source, token=self.token, sha=self.sha)
            except ReadError as error:
                if not str(error).startswith("no event files"):
                    raise
                listing = {}  # every file was deleted
            with self._lock:
                for relpath, remote in listing.items():
                    known = self._known.get(relpath)
                    if known is None or (known.size, known.version) != (remote.size, remote.version):
                        self._pending[relpath] = remote
                for relpath in self._known:
                    if relpath not in listing:
                        self._pending[relpath] = None
        with self._lock:
            pending, self._pending = self._pending, {}
        if not pending and self.rounds:
            return
        try:
            changed, replaced = self._fetch(pending)
        except BaseException:
            with self._lock:  # fetched again next round, unless newer news came meanwhile
                self._pending = {**pending, **self._pending}
            raise
        self.rounds += 1
        if changed or replaced:
            self.on_change(replaced=replaced)

    def _fetch(self, pending: dict[str, RemoteFile | None]) -> tuple[bool, bool]:
        """Fetch or delete the pending files; return (something changed, a file was replaced or deleted)."""
        changed = replaced = False
        for relpath, remote in pending.items():
            if remote is None:
                (self.source.mirror / relpath).unlink(missing_ok=True)
                if self._known.pop(relpath, None) is not None:
                    changed = replaced = True
        files = [remote for remote in pending.values() if remote is not None]

        def fetch(remote: RemoteFile) -> str:
            known = self._known.get(remote.path)
            whole = (known is not None and known.size == remote.size and None not in (known.version, remote.version)
                     and known.version != remote.version)
            return fetch_file(self.source, remote, token=self.token, sha=self.sha, whole=whole)

        for remote, result in zip(files, self._pool.map(fetch, files), strict=True):
            if result == GONE:
                self._known.pop(remote.path, None)
                with self._lock:
                    self._relist = True
                continue
            self._known[remote.path] = remote
            changed = changed or result in (NEW, GREW, REPLACED)
            replaced = replaced or result == REPLACED
        return changed, replaced
