"""Hub content rules: default `.gitattributes`, the LFS-or-regular decision and git object ids."""

from __future__ import annotations

import fnmatch
import hashlib
from pathlib import PurePosixPath
from typing import Literal

UploadMode = Literal["lfs", "regular"]

# The Hub refuses regular (non-LFS) files above this size.
REGULAR_FILE_MAX_SIZE = 10 * 1024 * 1024

_LFS_EXTENSIONS = (
    "*.7z *.arrow *.bin *.bz2 *.ckpt *.ftz *.gz *.h5 *.joblib *.lfs.* *.mlmodel *.model *.msgpack *.npy *.npz"
    " *.onnx *.ot *.parquet *.pb *.pickle *.pkl *.pt *.pth *.rar *.safetensors saved_model/**/* *.tar.* *.tar"
    " *.tflite *.tgz *.wasm *.xz *.zip *.zst *tfevents*"
).split()
_DATASET_EXTRA_EXTENSIONS = "*.lz4 *.mds *.mp3 *.ogg *.wav *.jpg *.jpeg *.png *.webp".split()


def default_gitattributes(repo_type: str) -> str:
    """The `.gitattributes` the Hub writes in the initial commit of a new repository.

    Args:
        repo_type: "model", "dataset" or "space".

    Returns:
        The file content, one LFS rule per line.
    """
    patterns = _LFS_EXTENSIONS + (_DATASET_EXTRA_EXTENSIONS if repo_type == "dataset" else [])
    return "".join(f"{pattern} filter=lfs diff=lfs merge=lfs -text\n" for pattern in patterns)


def lfs_patterns(gitattributes: str) -> list[str]:
    """Patterns of a `.gitattributes` file that route matching files through LFS."""
    patterns = []
    for line in gitattributes.splitlines():
        fields = line.split()
        if len(fields) >= 2 and not fields[0].startswith("#") and "filter=lfs" in fields[1:]:
            patterns.append(fields[0])
    return patterns


def _matches(path: str, pattern: str) -> bool:
    """Git-style match: patterns without a slash match the basename, others the whole path from the root."""
    if "/" not in pattern:
        return fnmatch.fnmatchcase(PurePosixPath(path).name, pattern)
    pattern = pattern.lstrip("/")
    # `**/` also matches zero directories, which plain fnmatch does not know about.
    return fnmatch.fnmatchcase(path, pattern) or fnmatch.fnmatchcase(path, pattern.replace("**/", ""))


def is_gitignored(path: str, gitignore: str | None) -> bool:
    """Whether `path` (or one of its parent folders) is excluded by a `.gitignore` content.

    Only the common subset of the syntax is honoured: comments, negations and trailing-slash folder rules.
    """
    if not gitignore:
        return False
    parts = PurePosixPath(path).parts
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for raw in gitignore.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line[1:] if negate else line
        folder_only = pattern.endswith("/")
        pattern = pattern.rstrip("/")
        # A folder rule can only match a parent folder of the path, never the file itself.
        targets = candidates[:-1] if folder_only else candidates
        if any(_matches(target, pattern) for target in targets):
            ignored = not negate
    return ignored


def looks_binary(sample: bytes) -> bool:
    """Whether the first bytes of a file look like binary content (NUL byte or invalid UTF-8)."""
    if b"\x00" in sample:
        return True
    try:
        sample.decode("utf-8")
    except UnicodeDecodeError as err:
        # The sample is cut at a fixed size and may end in the middle of a multi-byte character.
        return not (err.reason == "unexpected end of data" and err.start >= len(sample) - 3)
    return False


def upload_mode(path: str, size: int, sample: bytes, gitattributes: str | None) -> UploadMode:
    """Decide like the Hub whether a file is stored in LFS or as a regular git blob.

    Args:
        path: Path of the file in the repository.
        size: Size of the file in bytes.
        sample: First bytes (up to 512) of the file.
        gitattributes: Content of the repository's `.gitattributes` at the target revision, if any.

    Returns:
        "lfs" for files matching an LFS rule, binary files and large files; "regular" otherwise.
    """
    if size == 0:
        return "regular"
    if any(_matches(path, pattern) for pattern in lfs_patterns(gitattributes or "")):
        return "lfs"
    if size > REGULAR_FILE_MAX_SIZE or looks_binary(sample):
        return "lfs"
    return "regular"


def git_blob_oid(content: bytes) -> str:
    """The git object id (sha1) of a blob with this content."""
    return hashlib.sha1(b"blob %d\x00" % len(content) + content).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    """The LFS pointer file git stores in place of an LFS file."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()
