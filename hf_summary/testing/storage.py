"""On-disk storage of the local Hub: content-addressed blobs, repositories, commits and refs.

Layout under `root`:

    blobs/<sha256[:2]>/<sha256>          file contents, shared by all repositories
    repos/<type>s/<ns>/<name>/repo.json  visibility, owner, creation date
    repos/<type>s/<ns>/<name>/refs.json  {"refs/heads/main": <commit id>, "refs/tags/v1": ..., "refs/pr/1": ...}
    repos/<type>s/<ns>/<name>/commits/<commit id>.json   full file table of each commit
    repos/<type>s/<ns>/<name>/lfs/<sha256>               LFS objects uploaded to this repository (empty markers)

Every JSON file is replaced atomically, so a server restarted on the same root sees a consistent state.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

from .errors import BadRequest, EntryNotFound, HubError, RevisionNotFound
from .rules import default_gitattributes, git_blob_oid, lfs_pointer

REPO_TYPES = ("model", "dataset", "space")
DEFAULT_BRANCH = "main"

_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,96}$")
_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


def utc_now() -> str:
    """Current time in the Hub's date format (`2024-01-31T12:00:00.000Z`)."""
    now = datetime.now(timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


@dataclass(frozen=True)
class RepoKey:
    """Identifies a repository: its type ("model", "dataset", "space") and id ("namespace/name")."""

    repo_type: str
    repo_id: str

    @classmethod
    def parse(cls, repo_type: str, repo_id: str) -> RepoKey:
        """Validate a repo type and id like the Hub does.

        Raises:
            BadRequest: unknown type, or an id that is not `namespace/name` with valid characters.
        """
        if repo_type not in REPO_TYPES:
            raise BadRequest(f"Invalid repo type: {repo_type}")
        parts = repo_id.split("/")
        if len(parts) != 2 or not all(_valid_name(part) for part in parts):
            raise BadRequest(f"Invalid repo id: {repo_id!r}")
        return cls(repo_type, repo_id)

    @property
    def namespace(self) -> str:
        """The user owning the repository."""
        return self.repo_id.split("/")[0]

    @property
    def url_prefix(self) -> str:
        """Prefix of the repository's web and git URLs ("" for models, "datasets/" or "spaces/" otherwise)."""
        return "" if self.repo_type == "model" else f"{self.repo_type}s/"


def _valid_name(name: str) -> bool:
    return bool(_NAME_RE.match(name)) and "--" not in name and ".." not in name and name[0] not in ".-"


@dataclass(frozen=True)
class FileEntry:
    """A file in a commit. `oid` is its git blob id (of the LFS pointer for LFS files), `sha256` its content hash."""

    sha256: str
    size: int
    lfs: bool
    oid: str


@dataclass(frozen=True)
class Commit:
    """An immutable commit with the complete file table of the repository at that point."""

    id: str
    parents: tuple[str, ...]
    title: str
    message: str
    author: str
    date: str
    files: dict[str, FileEntry]
    changed: tuple[str, ...]

    def to_json(self) -> dict:
        """Serializable form, as stored on disk."""
        return {
            "id": self.id,
            "parents": list(self.parents),
            "title": self.title,
            "message": self.message,
            "author": self.author,
            "date": self.date,
            "files": {path: [e.sha256, e.size, e.lfs, e.oid] for path, e in sorted(self.files.items())},
            "changed": list(self.changed),
        }

    @classmethod
    def from_json(cls, data: dict) -> Commit:
        """Inverse of `to_json`."""
        return cls(
            id=data["id"],
            parents=tuple(data["parents"]),
            title=data["title"],
            message=data["message"],
            author=data["author"],
            date=data["date"],
            files={path: FileEntry(*values) for path, values in data["files"].items()},
            changed=tuple(data["changed"]),
        )


@dataclass(frozen=True)
class RepoInfo:
    """Repository metadata."""

    key: RepoKey
    owner: str
    private: bool
    created_at: str


@dataclass(frozen=True)
class AddFile:
    """Commit operation: write a file whose content is already stored as a blob (see `make_entry`)."""

    path: str
    entry: FileEntry


@dataclass(frozen=True)
class DeletePath:
    """Commit operation: delete a file, or every file under a folder."""

    path: str
    folder: bool = False


Operation = AddFile | DeletePath


@dataclass
class Storage:
    """Thread-safe store of blobs and repositories under `root`.

    Args:
        root: Folder holding the whole state; created if missing.
    """

    root: Path
    _lock: threading.RLock = field(default_factory=threading.RLock, init=False, repr=False)
    _commit_cache: dict[tuple[RepoKey, str], Commit] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        for sub in ("blobs", "repos", "tmp"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    # ---------------------------------------------------------------- blobs

    def blob_path(self, sha256: str) -> Path:
        """Where the content with this sha256 is (or would be) stored."""
        if not _SHA256_RE.match(sha256):
            raise BadRequest(f"Invalid sha256: {sha256!r}")
        return self.root / "blobs" / sha256[:2] / sha256

    def has_blob(self, sha256: str) -> bool:
        """Whether this content is stored."""
        return self.blob_path(sha256).is_file()

    def read_blob(self, sha256: str) -> bytes:
        """The stored content with this sha256."""
        return self.blob_path(sha256).read_bytes()

    def put_bytes(self, data: bytes) -> str:
        """Store `data` and return its sha256."""
        sha256 = hashlib.sha256(data).hexdigest()
        if not self.has_blob(sha256):
            self.put_stream([data], expected_sha256=sha256, expected_size=len(data))
        return sha256

    def put_stream(self, chunks: Iterable[bytes], *, expected_sha256: str, expected_size: int) -> None:
        """Store streamed content, refusing it unless its size and sha256 are the expected ones.

        Args:
            chunks: The content, in pieces.
            expected_sha256: The sha256 the content must have.
            expected_size: The size the content must have.

        Raises:
            BadRequest: the content does not match.
        """
        target = self.blob_path(expected_sha256)
        digest = hashlib.sha256()
        size = 0
        fd, tmp_name = tempfile.mkstemp(dir=self.root / "tmp")
        try:
            with os.fdopen(fd, "wb") as tmp:
                for chunk in chunks:
                    digest.update(chunk)
                    size += len(chunk)
                    tmp.write(chunk)
            if size != expected_size:
                raise BadRequest(f"Size mismatch: expected {expected_size} bytes, received {size}")
            if digest.hexdigest() != expected_sha256:
                raise BadRequest(f"Checksum mismatch: expected sha256 {expected_sha256}, got {digest.hexdigest()}")
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp_name, target)
        finally:
            if os.path.exists(tmp_name):
                os.unlink(tmp_name)

    # ---------------------------------------------------------------- repositories

    def _repo_dir(self, key: RepoKey) -> Path:
        return self.root / "repos" / f"{key.repo_type}s" / key.repo_id

    def repo(self, key: RepoKey) -> RepoInfo | None:
        """Metadata of a repository, or None if it does not exist."""
        path = self._repo_dir(key) / "repo.json"
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        return RepoInfo(key=key, owner=data["owner"], private=data["private"], created_at=data["created_at"])

    def create_repo(self, key: RepoKey, *, owner: str, private: bool) -> RepoInfo:
        """Create a repository whose `main` branch holds one commit with the default `.gitattributes`.

        Raises:
            HubError: 409 if the repository already exists.
        """
        with self._lock:
            if self.repo(key) is not None:
                raise HubError(409, f"You already created this {key.repo_type} repo")
            repo_dir = self._repo_dir(key)
            (repo_dir / "commits").mkdir(parents=True, exist_ok=True)
            (repo_dir / "lfs").mkdir(exist_ok=True)
            content = default_gitattributes(key.repo_type).encode()
            entry = FileEntry(self.put_bytes(content), len(content), False, git_blob_oid(content))
            initial = self._write_commit(key, (), {".gitattributes": entry}, "initial commit", "", "system")
            self._write_json(repo_dir / "refs.json", {f"refs/heads/{DEFAULT_BRANCH}": initial.id})
            now = utc_now()
            # repo.json is written last: its presence is what makes the repository exist.
            self._write_json(repo_dir / "repo.json", {"owner": owner, "private": private, "created_at": now})
            return RepoInfo(key=key, owner=owner, private=private, created_at=now)

    def delete_repo(self, key: RepoKey) -> bool:
        """Delete a repository; returns False if it did not exist."""
        with self._lock:
            if self.repo(key) is None:
                return False
            (self._repo_dir(key) / "repo.json").unlink()
            shutil.rmtree(self._repo_dir(key))
            self._commit_cache = {k: v for k, v in self._commit_cache.items() if k[0] != key}
            return True

    def set_private(self, key: RepoKey, private: bool) -> None:
        """Change the visibility of an existing repository."""
        with self._lock:
            path = self._repo_dir(key) / "repo.json"
            data = json.loads(path.read_text())
            data["private"] = private
            self._write_json(path, data)

    def _next_pr_number(self, key: RepoKey) -> int:
        """Reserve the number of a new pull request (discussion) on the repository."""
        with self._lock:
            path = self._repo_dir(key) / "repo.json"
            data = json.loads(path.read_text())
            number = data.get("discussions", 0) + 1
            data["discussions"] = number
            self._write_json(path, data)
            return number

    def add_lfs_object(self, key: RepoKey, sha256: str) -> None:
        """Record that an LFS object was uploaded to this repository (LFS objects are not shared between repos)."""
        if not self.has_blob(sha256):
            raise BadRequest(f"LFS object {sha256} is not stored")
        (self._repo_dir(key) / "lfs" / sha256).touch()

    def has_lfs_object(self, key: RepoKey, sha256: str) -> bool:
        """Whether this LFS object was uploaded to this repository."""
        return _SHA256_RE.match(sha256) is not None and (self._repo_dir(key) / "lfs" / sha256).is_file()

    # ---------------------------------------------------------------- refs

    def refs(self, key: RepoKey) -> dict[str, str]:
        """All refs of a repository: full ref name -> commit id."""
        with self._lock:
            return json.loads((self._repo_dir(key) / "refs.json").read_text())

    def resolve(self, key: RepoKey, revision: str) -> str:
        """Commit id of a branch, tag, full ref name or commit id.

        Raises:
            RevisionNotFound: nothing matches.
        """
        refs = self.refs(key)
        for ref in (revision, f"refs/heads/{revision}", f"refs/tags/{revision}"):
            if ref.startswith("refs/") and ref in refs:
                return refs[ref]
        if _COMMIT_RE.match(revision) and (self._repo_dir(key) / "commits" / f"{revision}.json").is_file():
            return revision
        raise RevisionNotFound(revision)

    def branch_ref(self, key: RepoKey, revision: str) -> str:
        """Full ref name of a revision that can receive commits (a branch or a pull request ref).

        Raises:
            RevisionNotFound: the revision does not exist.
            BadRequest: the revision exists but is a tag or a commit id.
        """
        refs = self.refs(key)
        for ref in (revision, f"refs/heads/{revision}"):
            if ref in refs and (ref.startswith("refs/heads/") or ref.startswith("refs/pr/")):
                return ref
        self.resolve(key, revision)
        raise BadRequest(f"Invalid rev id: {revision} is not a branch")

    def set_ref(self, key: RepoKey, ref: str, commit_id: str | None, *, create: bool = False) -> None:
        """Create, move or (with `commit_id=None`) delete a ref.

        Raises:
            HubError: 409 when creating a ref that exists.
            RevisionNotFound: when moving or deleting a ref that does not exist.
        """
        with self._lock:
            refs = self.refs(key)
            if create and ref in refs:
                raise HubError(409, f"Reference {ref} already exists")
            if not create and ref not in refs:
                raise RevisionNotFound(ref)
            if commit_id is None:
                del refs[ref]
            else:
                refs[ref] = commit_id
            self._write_json(self._repo_dir(key) / "refs.json", refs)

    # ---------------------------------------------------------------- commits

    def commit(self, key: RepoKey, commit_id: str) -> Commit:
        """A commit by id (commits are immutable, so they are cached once read)."""
        cached = self._commit_cache.get((key, commit_id))
        if cached is not None:
            return cached
        data = json.loads((self._repo_dir(key) / "commits" / f"{commit_id}.json").read_text())
        commit = Commit.from_json(data)
        self._commit_cache[(key, commit_id)] = commit
        return commit

    def history(self, key: RepoKey, commit_id: str) -> list[Commit]:
        """The commit and its ancestors, newest first (history is linear)."""
        commits = [self.commit(key, commit_id)]
        while commits[-1].parents:
            commits.append(self.commit(key, commits[-1].parents[0]))
        return commits

    def read_file(self, key: RepoKey, commit_id: str, path: str) -> bytes | None:
        """Content of a file at a commit, or None if there is no such file."""
        entry = self.commit(key, commit_id).files.get(path)
        return None if entry is None else self.read_blob(entry.sha256)

    def create_commit(
        self,
        key: RepoKey,
        ref: str,
        operations: list[Operation],
        *,
        title: str,
        message: str,
        author: str,
        parent_commit: str | None = None,
        check: Callable[[dict[str, FileEntry], dict[str, FileEntry]], None] | None = None,
    ) -> Commit:
        """Apply operations on top of the head of `ref` and move the ref to the new commit.

        Args:
            key: The repository.
            ref: Full name of the branch (or pull request ref) to commit to.
            operations: Additions and deletions, applied in order.
            title: Commit summary.
            message: Commit description.
            author: User name recorded as author.
            parent_commit: If given, the commit id (or a prefix of it) the caller expects at the head of `ref`.
            check: Called with the file tables before and after the commit, before anything is written; raises to
                refuse the commit (e.g. a folder above the entries limit).

        Raises:
            HubError: 412 if `parent_commit` is not the head anymore.
            EntryNotFound: deleting a path that does not exist.
            BadRequest: a file would also be a folder.
        """
        with self._lock:
            head = self.refs(key).get(ref)
            if head is None:
                raise RevisionNotFound(ref)
            if parent_commit is not None and not head.startswith(parent_commit.lower()):
                raise HubError(412, "A commit has happened since. Please refresh and try again.")
            base = self.commit(key, head)
            files = dict(base.files)
            for op in operations:
                _apply(files, op, head)
            _check_no_file_folder_clash(files)
            if check is not None:
                check(base.files, files)  # under the lock, so no concurrent commit changes the tree in between
            commit = self._write_commit(key, (head,), files, title, message, author, base=base.files)
            self.set_ref(key, ref, commit.id)
            return commit

    def open_pull_request(self, key: RepoKey, ref: str, *, parent_commit: str | None = None) -> tuple[str, int]:
        """Create a `refs/pr/<n>` ref at the head of `ref`, to commit a pull request on it.

        Returns:
            The new ref name and the pull request number.

        Raises:
            HubError: 412 if `parent_commit` is not the head of `ref` anymore.
        """
        with self._lock:
            head = self.refs(key)[ref]
            if parent_commit is not None and not head.startswith(parent_commit.lower()):
                raise HubError(412, "A commit has happened since. Please refresh and try again.")
            number = self._next_pr_number(key)
            pr_ref = f"refs/pr/{number}"
            self.set_ref(key, pr_ref, head, create=True)
            return pr_ref, number

    def squash(self, key: RepoKey, ref: str, *, title: str, author: str) -> Commit:
        """Replace the history of `ref` by a single parentless commit holding the same files."""
        with self._lock:
            head = self.commit(key, self.refs(key)[ref])
            commit = self._write_commit(key, (), dict(head.files), title, "", author)
            self.set_ref(key, ref, commit.id)
            return commit

    def _write_commit(
        self,
        key: RepoKey,
        parents: tuple[str, ...],
        files: dict[str, FileEntry],
        title: str,
        message: str,
        author: str,
        *,
        base: dict[str, FileEntry] | None = None,
    ) -> Commit:
        base = base or {}
        changed = sorted(p for p in set(files) | set(base) if files.get(p) != base.get(p))
        date = utc_now()
        # Like git, the id hashes the tree, parents, metadata and date; the date keeps otherwise identical commits
        # (e.g. two squashes in a row) apart.
        identity = json.dumps(
            [sorted((p, e.oid) for p, e in files.items()), parents, title, message, author, date],
            separators=(",", ":"),
        )
        commit = Commit(
            id=hashlib.sha1(identity.encode()).hexdigest(),
            parents=parents,
            title=title,
            message=message,
            author=author,
            date=date,
            files=files,
            changed=tuple(changed),
        )
        self._write_json(self._repo_dir(key) / "commits" / f"{commit.id}.json", commit.to_json())
        return commit

    def _write_json(self, path: Path, data: object) -> None:
        fd, tmp_name = tempfile.mkstemp(dir=self.root / "tmp")
        with os.fdopen(fd, "w") as tmp:
            json.dump(data, tmp)
        os.replace(tmp_name, path)


def make_entry(sha256: str, size: int, *, lfs: bool, content: bytes | None = None) -> FileEntry:
    """Build a file entry; `content` is required for regular files to compute their git blob id."""
    if lfs:
        return FileEntry(sha256, size, True, git_blob_oid(lfs_pointer(sha256, size)))
    if content is None:
        raise ValueError("content is required for regular files")
    return FileEntry(sha256, size, False, git_blob_oid(content))


def _apply(files: dict[str, FileEntry], op: Operation, head: str) -> None:
    if isinstance(op, AddFile):
        files[op.path] = op.entry
        return
    prefix = op.path.rstrip("/") + "/"
    if op.folder:
        doomed = [path for path in files if path.startswith(prefix)]
        if not doomed:
            raise EntryNotFound(f"A folder with this name doesn't exist: {op.path}", commit=head)
        for path in doomed:
            del files[path]
    elif files.pop(op.path, None) is None:
        raise EntryNotFound(f"A file with this name doesn't exist: {op.path}", commit=head)


def _check_no_file_folder_clash(files: dict[str, FileEntry]) -> None:
    folders = {str(parent) for path in files for parent in list(PurePosixPath(path).parents)[:-1]}
    clashes = sorted(folders & files.keys())
    if clashes:
        raise BadRequest(f"Path is both a file and a folder: {clashes[0]}")
