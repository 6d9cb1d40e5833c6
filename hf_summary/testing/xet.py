"""Xet storage of the local Hub: xorb and shard formats, LZ4 frames, and the on-disk store of Xet files.

Sources of the formats (the Hub's Xet protocol spec, in huggingface/xet-core `spec/`, also at
https://huggingface.co/docs/xet):

- Hashes as strings (`spec/api.md`, "Converting Hashes to Strings"): each 8-byte group of the 32-byte hash is read as a
  little-endian u64 and written as 16 hex digits. `X-Xet-Hash`, `xetHash` and every CAS URL use this form.
- Xorb (`spec/xorb.md`): chunks one after the other, each an 8-byte header (version 0, compressed size u24 LE,
  compression type, uncompressed size u24 LE) then the compressed bytes; compression 0 = none, 1 = LZ4,
  2 = byte grouping by 4 then LZ4. The serialized xorb the client uploads ends with a footer starting with the ident
  `XETBLOB` (xet-core `xet_core_structures/src/xorb_object/xorb_object_format.rs`); we stop at it and keep the
  whole body as received, so byte ranges of chunks are offsets into the stored file.
- LZ4 (xet-core `compression_scheme.rs`: `lz4_flex::frame::FrameEncoder`): the LZ4 *frame* format, not raw blocks.
- Shard (`spec/shard.md`): a 48-byte header (32-byte tag, version 2, footer size), then the file info section: per file
  a `FileDataSequenceHeader` (file hash, flags, entry count), its `FileDataSequenceEntry`s (xorb hash, flags,
  unpacked bytes, chunk range [start, end)), one `FileVerificationEntry` per entry when flag 1<<31 is set, one
  `FileMetadataExt` (the file's sha256) when flag 1<<30 is set, and a bookend (32 bytes of 0xFF) after the last
  file. The CAS info section and footer that follow are not needed to rebuild files.

What the store does not check: the BLAKE3-based chunk, xorb and file hashes (the standard library has no BLAKE3), so
they are trusted as sent. It does rebuild every file of a shard from the xorbs and checks its sha256 against the one
in the shard, which is what a commit refers to: a commit never points at bytes the client did not describe.
"""

from __future__ import annotations

import json
import os
import re
import struct
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .errors import BadRequest

SHARD_HEADER_TAG = b"HFRepoMetaData\x00" + bytes(
    [85, 105, 103, 69, 106, 123, 129, 87, 131, 165, 189, 217, 92, 205, 209, 74, 169]
)  # xet-core `shard_format.rs` MDB_SHARD_HEADER_TAG
_SHARD_HEADER_VERSION = 2
_ENTRY_SIZE = 48
_BOOKEND_HASH = b"\xff" * 32
_FLAG_VERIFICATION = 1 << 31
_FLAG_METADATA_EXT = 1 << 30
_XORB_FOOTER_IDENT = b"XETBLOB"
_CHUNK_HEADER = struct.Struct("<B3sB3s")
_LZ4_FRAME_MAGIC = 0x184D2204
_HASH_RE = re.compile(r"^[0-9a-f]{64}$")


def hash_to_hex(raw: bytes) -> str:
    """A 32-byte Xet hash as its 64-character string: four little-endian u64, each as 16 hex digits."""
    return "".join(f"{value:016x}" for value in struct.unpack("<4Q", raw))


def is_hash(text: str) -> bool:
    """Whether `text` has the shape of a Xet hash string (64 lowercase hex digits, like a sha256 digest)."""
    return _HASH_RE.match(text) is not None


# -------------------------------------------------------------------- formats


@dataclass(frozen=True)
class Chunk:
    """A chunk of a stored xorb: where its header starts and its data ends, and its size once decompressed."""

    start: int
    end: int
    size: int


@dataclass(frozen=True)
class Term:
    """A piece of a file: chunks [chunk_start, chunk_end) of a xorb, `size` bytes once decompressed."""

    xorb: str
    chunk_start: int
    chunk_end: int
    size: int


@dataclass(frozen=True)
class FileReconstruction:
    """A file described by a shard: its Xet hash, the terms rebuilding it in order and its sha256 (if given)."""

    file_hash: str
    terms: tuple[Term, ...]
    sha256: str | None

    @property
    def size(self) -> int:
        """The file's size in bytes."""
        return sum(term.size for term in self.terms)


def parse_xorb(data: bytes) -> list[Chunk]:
    """The chunks of a serialized xorb, in order.

    Raises:
        BadRequest: a chunk header is malformed or a chunk runs past the end of the body.
    """
    chunks = []
    offset = 0
    while offset < len(data) and not data.startswith(_XORB_FOOTER_IDENT, offset):
        if offset + _CHUNK_HEADER.size > len(data):
            raise BadRequest("Truncated xorb chunk header")
        version, compressed, scheme, uncompressed = _CHUNK_HEADER.unpack_from(data, offset)
        end = offset + _CHUNK_HEADER.size + int.from_bytes(compressed, "little")
        if version != 0 or scheme > 2 or end > len(data):
            raise BadRequest(f"Malformed xorb chunk at byte {offset}")
        chunks.append(Chunk(offset, end, int.from_bytes(uncompressed, "little")))
        offset = end
    if not chunks:
        raise BadRequest("Empty xorb")
    return chunks


def decode_chunks(data: bytes) -> Iterator[bytes]:
    """The decompressed content of each chunk in `data`, a run of whole chunks cut out of a xorb."""
    offset = 0
    while offset < len(data):
        _, compressed, scheme, uncompressed = _CHUNK_HEADER.unpack_from(data, offset)
        start = offset + _CHUNK_HEADER.size
        offset = start + int.from_bytes(compressed, "little")
        payload = data[start:offset]
        size = int.from_bytes(uncompressed, "little")
        content = payload if scheme == 0 else lz4_frame_decompress(payload)
        if scheme == 2:
            content = _ungroup_bytes(content)
        if len(content) != size:
            raise BadRequest(f"Xorb chunk decompressed to {len(content)} bytes, its header says {size}")
        yield content


def _ungroup_bytes(grouped: bytes) -> bytes:
    """Undo byte grouping by 4 (`spec/xorb.md`): group i holds bytes i, i+4, ...; the first n % 4 get one more."""
    n = len(grouped)
    out = bytearray(n)
    position = 0
    for index in range(4):
        length = n // 4 + (1 if index < n % 4 else 0)
        out[index::4] = grouped[position : position + length]
        position += length
    return bytes(out)


def lz4_frame_decompress(frame: bytes) -> bytes:
    """Decompress an LZ4 frame (https://github.com/lz4/lz4/blob/dev/doc/lz4_Frame_format.md).

    Checksums are skipped, not verified: the sha256 of the rebuilt file is checked instead. Blocks share one output
    buffer, so linked blocks (matches reaching into the previous block) decode too.

    Raises:
        BadRequest: not an LZ4 frame, or truncated.
    """
    if len(frame) < 7 or struct.unpack_from("<I", frame)[0] != _LZ4_FRAME_MAGIC:
        raise BadRequest("Xorb chunk is not an LZ4 frame")
    flags = frame[4]
    block_checksum = bool(flags & 0x10)
    offset = 6 + (8 if flags & 0x08 else 0) + (4 if flags & 0x01 else 0) + 1  # FLG, BD, size, dict id, HC
    out = bytearray()
    while True:
        if offset + 4 > len(frame):
            raise BadRequest("Truncated LZ4 frame")
        (block_size,) = struct.unpack_from("<I", frame, offset)
        offset += 4
        if block_size == 0:
            return bytes(out)
        length = block_size & 0x7FFFFFFF
        block = frame[offset : offset + length]
        if len(block) != length:
            raise BadRequest("Truncated LZ4 block")
        if block_size & 0x80000000:
            out += block
        else:
            _lz4_block_decompress(block, out)
        offset += length + (4 if block_checksum else 0)


def _lz4_block_decompress(block: bytes, out: bytearray) -> None:
    """Append the decompressed LZ4 block (https://github.com/lz4/lz4/blob/dev/doc/lz4_Block_format.md) to `out`."""
    position = 0
    end = len(block)
    try:
        while position < end:
            token = block[position]
            position += 1
            literals = token >> 4
            if literals == 15:
                while True:
                    extra = block[position]
                    position += 1
                    literals += extra
                    if extra != 255:
                        break
            out += block[position : position + literals]
            position += literals
            if position >= end:
                return  # the last sequence has literals only
            distance = block[position] | block[position + 1] << 8
            position += 2
            match_length = token & 15
            if match_length == 15:
                while True:
                    extra = block[position]
                    position += 1
                    match_length += extra
                    if extra != 255:
                        break
            match_length += 4
            start = len(out) - distance
            if distance == 0 or start < 0:
                raise BadRequest("Invalid LZ4 match offset")
            if distance >= match_length:
                out += out[start : start + match_length]
            else:  # the match overlaps what it writes: a repeated pattern
                pattern = bytes(out[start:])
                out += (pattern * (match_length // distance + 1))[:match_length]
    except IndexError as err:
        raise BadRequest("Truncated LZ4 block") from err


def parse_shard(data: bytes) -> list[FileReconstruction]:
    """The files described by the file info section of a shard.

    Raises:
        BadRequest: wrong tag or version, or a truncated file info section.
    """
    if len(data) < _ENTRY_SIZE or data[:32] != SHARD_HEADER_TAG:
        raise BadRequest("Not a Xet shard")
    (version,) = struct.unpack_from("<Q", data, 32)
    if version != _SHARD_HEADER_VERSION:
        raise BadRequest(f"Unsupported shard version {version}")
    files: list[FileReconstruction] = []
    offset = _ENTRY_SIZE
    while True:
        entry = _entry(data, offset)
        if entry[:32] == _BOOKEND_HASH:
            return files
        flags, count = struct.unpack_from("<II", entry, 32)
        offset += _ENTRY_SIZE
        terms = []
        for _ in range(count):
            raw = _entry(data, offset)
            size, chunk_start, chunk_end = struct.unpack_from("<III", raw, 36)
            if chunk_end <= chunk_start:
                raise BadRequest("Empty chunk range in shard")
            terms.append(Term(hash_to_hex(raw[:32]), chunk_start, chunk_end, size))
            offset += _ENTRY_SIZE
        if flags & _FLAG_VERIFICATION:
            offset += count * _ENTRY_SIZE  # range hashes: BLAKE3, which we cannot check
        sha256 = None
        if flags & _FLAG_METADATA_EXT:
            # Written like every other hash (four little-endian u64), so its string form is the usual hex digest.
            sha256 = hash_to_hex(_entry(data, offset)[:32])
            offset += _ENTRY_SIZE
        files.append(FileReconstruction(hash_to_hex(entry[:32]), tuple(terms), sha256))


def _entry(data: bytes, offset: int) -> bytes:
    entry = data[offset : offset + _ENTRY_SIZE]
    if len(entry) != _ENTRY_SIZE:
        raise BadRequest("Truncated shard")
    return entry


# -------------------------------------------------------------------- the store


class XetStore:
    """Thread-safe store of xorbs (as received) and of the reconstruction of every Xet file, under `root`.

    Layout:

        xorbs/<xorb hash>        serialized xorbs, byte for byte as uploaded
        files/<file hash>.json   {"sha256", "size", "terms": [[xorb hash, chunk start, chunk end, size], ...]}
        sha256/<sha256>          the Xet hash of the file with this content (content-addressed on both sides)
    """

    def __init__(self, root: Path):
        self.root = root
        for sub in ("xorbs", "files", "sha256", "tmp"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._chunks: dict[str, list[Chunk]] = {}

    def xorb_path(self, xorb_hash: str) -> Path:
        """Where a xorb is (or would be) stored."""
        if not is_hash(xorb_hash):
            raise BadRequest(f"Invalid xorb hash: {xorb_hash!r}")
        return self.root / "xorbs" / xorb_hash

    def has_xorb(self, xorb_hash: str) -> bool:
        """Whether this xorb was uploaded."""
        return self.xorb_path(xorb_hash).is_file()

    def put_xorb(self, xorb_hash: str, data: bytes) -> bool:
        """Store a serialized xorb after checking its chunk headers.

        Returns:
            False if it was already stored (not an error: the client may upload it again).

        Raises:
            BadRequest: a malformed xorb.
        """
        chunks = parse_xorb(data)
        target = self.xorb_path(xorb_hash)
        with self._lock:
            if target.is_file():
                return False
            self._write(target, data)
            self._chunks[xorb_hash] = chunks
            return True

    def chunks(self, xorb_hash: str) -> list[Chunk]:
        """The chunks of a stored xorb.

        Raises:
            BadRequest: the xorb was never uploaded.
        """
        with self._lock:
            cached = self._chunks.get(xorb_hash)
        if cached is not None:
            return cached
        try:
            chunks = parse_xorb(self.xorb_path(xorb_hash).read_bytes())
        except FileNotFoundError as err:
            raise BadRequest(f"Unknown xorb {xorb_hash}") from err
        with self._lock:
            self._chunks[xorb_hash] = chunks
        return chunks

    def iter_content(self, terms: tuple[Term, ...]) -> Iterator[bytes]:
        """The decompressed content of a file, term after term.

        Raises:
            BadRequest: a term points at a missing xorb or at chunks it does not have, or its size is wrong.
        """
        for term in terms:
            chunks = self.chunks(term.xorb)
            if term.chunk_end > len(chunks):
                raise BadRequest(f"Xorb {term.xorb} has {len(chunks)} chunks, not {term.chunk_end}")
            first, last = chunks[term.chunk_start], chunks[term.chunk_end - 1]
            with self.xorb_path(term.xorb).open("rb") as xorb:
                xorb.seek(first.start)
                data = xorb.read(last.end - first.start)
            size = 0
            for content in decode_chunks(data):
                size += len(content)
                yield content
            if size != term.size:
                raise BadRequest(f"A term of xorb {term.xorb} holds {size} bytes, the shard says {term.size}")

    def add_file(self, file: FileReconstruction, sha256: str) -> None:
        """Record a file whose content (with this sha256) was rebuilt from its terms."""
        record = {
            "sha256": sha256,
            "size": file.size,
            "terms": [[t.xorb, t.chunk_start, t.chunk_end, t.size] for t in file.terms],
        }
        with self._lock:
            self._write(self.root / "files" / f"{file.file_hash}.json", json.dumps(record).encode())
            self._write(self.root / "sha256" / sha256, file.file_hash.encode())

    def file(self, file_hash: str) -> FileReconstruction | None:
        """The reconstruction of a Xet file, or None if no shard described it."""
        if not is_hash(file_hash):
            return None
        try:
            record = json.loads((self.root / "files" / f"{file_hash}.json").read_text())
        except FileNotFoundError:
            return None
        terms = tuple(Term(xorb, start, end, size) for xorb, start, end, size in record["terms"])
        return FileReconstruction(file_hash, terms, record["sha256"])

    def file_hash(self, sha256: str) -> str | None:
        """The Xet hash of the file with this sha256, or None if the content never came through Xet."""
        if not is_hash(sha256):  # a sha256 digest has the same shape
            return None
        try:
            return (self.root / "sha256" / sha256).read_text()
        except FileNotFoundError:
            return None

    def _write(self, target: Path, data: bytes) -> None:
        # Written aside then renamed, so a reader (or a restarted server) never sees half a file.
        fd, tmp_name = tempfile.mkstemp(dir=self.root / "tmp")
        try:
            with os.fdopen(fd, "wb") as tmp:
                tmp.write(data)
            os.replace(tmp_name, target)
        finally:
            if os.path.exists(tmp_name):
                os.unlink(tmp_name)
