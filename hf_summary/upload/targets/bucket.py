"""A Storage Bucket as a destination: batches of at most 1 000 files overwritten in place, through Xet.

A bucket has no commits: no commit budget, no history to squash, and a push is seconds, not minutes (Hub docs:
storage-buckets; huggingface_hub 2.4 `HfApi.batch_bucket_files`). A batch is not transactional: the files it could
not take are listed (`BucketBatchError.failures`) and only those are sent again. A file is overwritten in place, so
a push never replaces a longer version of a file with a shorter one (a run restarted on its logdir without its
upload state): the bucket's sizes of the files a process has not written yet are read first (one request).
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..auth import AuthErrors
from ..errors import PartlySent
from ..hooks import our_calls, quiet_operation
from ..plan import read_prefix
from ..xet import recovering_xet
from .base import Pace

if TYPE_CHECKING:
    from huggingface_hub import CommitOperationAdd

    from ..plan import PlannedFile

logger = logging.getLogger(__name__)

MAX_FILES_PER_BATCH = 1000  # huggingface_hub sends a batch of more in several requests; one push, one request


@dataclass(frozen=True)
class BatchReceipt:
    """What a batch that landed is recorded as (a bucket has no commit id)."""

    oid: str


class BucketTarget:
    """Files overwritten in place in one Storage Bucket.

    Args:
        bucket_id: `namespace/name`.
        token: the token, or None for the one huggingface_hub finds.
        private: create the bucket private when it does not exist.
        interactive: a person waits for the push (`hf-summary sync`): huggingface_hub's bars show.
        token_option: how the user passes a token here (`token=`, `--token`), for error messages.
        clock: seconds on a monotonic clock.

    Example:
        ```py
        >>> target = BucketTarget("me/logs")
        >>> target.connect()
        'me/logs'
        ```
    """

    def __init__(self, bucket_id: str, *, token: str | None = None, private: bool | None = None,
                 interactive: bool = False, token_option: str = "`token=`",
                 clock: Callable[[], float] = time.monotonic) -> None:
        from huggingface_hub import HfApi

        from ... import __version__

        self.bucket_id = bucket_id
        self.api = HfApi(token=token, library_name="hf_summary", library_version=__version__)
        self._token = token
        self._private = private
        self._interactive = interactive
        self._token_option = token_option
        self._clock = clock
        self._ready = False
        self._pace = Pace()
        self._batches = itertools.count(1)
        # Paths whose size on the bucket this target knows (it sent or read them): from then on our own pushes only
        # grow them (the upload state's lock keeps two processes of one logdir apart), so they are not read again.
        self._known: set[str] = set()

    def __repr__(self) -> str:
        return f"BucketTarget({self.bucket_id!r})"

    @property
    def name(self) -> str:
        return self.bucket_id

    def web_url(self, path: str = "") -> str:
        from huggingface_hub import constants

        return f"{constants.ENDPOINT}/buckets/{self.bucket_id}" + (f"/tree/{path}" if path else "")

    @property
    def ready(self) -> bool:
        return self._ready

    def connect(self) -> str:
        if not self._ready:
            with AuthErrors("create the bucket", self._token, self._token_option):
                url = self.api.create_bucket(self.bucket_id, private=self._private, exist_ok=True)
            self.bucket_id = getattr(url, "bucket_id", None) or self.bucket_id
            self._ready = True
        return self.bucket_id

    def room(self) -> int:
        return MAX_FILES_PER_BATCH

    def operation(self, path_in_repo: str, file: PlannedFile) -> CommitOperationAdd:
        if file.final:
            return quiet_operation(path_in_repo, str(file.local_path))
        # A bucket takes paths and bytes only: the valid prefix of a growing file goes as bytes. Our writer rolls
        # its files before each push, far below `MAX_PREFIX_IN_MEMORY`; only a file another program grows without
        # rolling (`hf-summary watch`) can be larger, and is read whole.
        return quiet_operation(path_in_repo, read_prefix(file.local_path, file.size))

    def send(self, operations: list[CommitOperationAdd], message: str) -> BatchReceipt:
        """Overwrite the files in one batch; never a longer file with a shorter one.

        Raises:
            PartlySent: the bucket took some of the files and refused the others (they are sent again).
        """
        from huggingface_hub.errors import BucketBatchError

        receipt = BatchReceipt(f"batch-{os.getpid()}-{next(self._batches)}")
        quiet = not self._interactive  # background pushes draw no bar
        with AuthErrors("write to the bucket", self._token, self._token_option), our_calls(quiet=quiet):
            longer = self._longer_on_the_bucket(operations)
            if longer:
                logger.info("Not overwriting %d file(s) of %s that the bucket holds longer: %s", len(longer),
                            self.bucket_id, ", ".join(sorted(longer)))
            add: list[tuple[str | bytes, str]] = [
                (op.path_or_fileobj, op.path_in_repo) for op in operations
                if op.path_in_repo not in longer and isinstance(op.path_or_fileobj, str | bytes)]
            try:
                if add:
                    recovering_xet(lambda: self.api.batch_bucket_files(self.bucket_id, add=list(add)),
                                   what=self.bucket_id)
            except BucketBatchError as error:
                failed = {failure.get("path", "") for failure in error.failures}
                self._known.update(op.path_in_repo for op in operations
                                   if op.path_in_repo not in failed and op.path_in_repo not in longer)
                raise PartlySent(receipt, failed, error) from error
        self._known.update(op.path_in_repo for op in operations if op.path_in_repo not in longer)
        return receipt

    def _longer_on_the_bucket(self, operations: list[CommitOperationAdd]) -> set[str]:
        """The paths the bucket holds longer than we would write them, among those this target does not know yet
        (one request; none when it knows them all: a push's own cost in the request quota)."""
        sizes = {op.path_in_repo: op.upload_info.size for op in operations if op.path_in_repo not in self._known}
        if not sizes:
            return set()
        found = self.api.get_bucket_paths_info(self.bucket_id, list(sizes))
        return {entry.path for entry in found if entry.path in sizes and entry.size > sizes[entry.path]}

    def finish(self, squash: list[bool | int]) -> None:
        """Nothing: a bucket keeps no history (`squash_history` with a bucket is refused at the call)."""

    def holdback(self) -> float:
        return 0.0  # no commit budget: the per-user request quota paces pushes through 429s and RateLimit

    def paced(self, interval: float) -> float:
        return interval * self._pace.factor

    def settle(self, error: BaseException | None) -> None:
        self._pace.settle(error)
