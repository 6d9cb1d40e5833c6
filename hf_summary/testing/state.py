"""What the local Hub's request handlers share: `HubState`, apart from the HTTP server so the CAS can use it too."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field

from .auth import TokenRegistry
from .bucket_store import BucketStore
from .faults import FaultInjector, StatsRecorder
from .limits import CommitLimiter
from .spaces import SpaceStore
from .storage import FileEntry, RepoKey, Storage
from .xet import XetStore


@dataclass
class HubState:
    """Everything the request handlers share; outlives the HTTP server across pause/resume."""

    storage: Storage
    tokens: TokenRegistry
    faults: FaultInjector
    stats: StatsRecorder
    signing_key: bytes
    limiter: CommitLimiter = field(default_factory=CommitLimiter)
    endpoint: str = ""
    fake_commits: int = 0  # commits still to answer "200, committed" without committing anything (a lying server)
    xet: XetStore | None = None  # None: Xet is off (no tokens, no CAS, no Xet headers), as with HF_HUB_DISABLE_XET
    xet_token_ttl: float = 3600.0  # seconds a Xet access token is valid (the Hub's: an hour)
    buckets: BucketStore | None = None  # Storage Buckets; None only for a state built without them
    spaces: SpaceStore | None = None  # Spaces' settings and runtimes; None only for a state built without them

    def xet_hash(self, entry: FileEntry) -> str | None:
        """The Xet hash of a file uploaded through Xet, None for other files or when Xet is off."""
        return self.xet.file_hash(entry.sha256) if self.xet is not None and entry.lfs else None

    def sign_upload(self, key: RepoKey, oid: str, size: int, expires: int) -> str:
        """Signature of an LFS upload URL; the upload PUT carries no credentials, like a presigned S3 URL."""
        message = f"{key.repo_type}/{key.repo_id}/{oid}/{size}/{expires}".encode()
        return hmac.new(self.signing_key, message, hashlib.sha256).hexdigest()
