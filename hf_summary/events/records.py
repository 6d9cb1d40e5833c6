"""TFRecord framing of event files: writing records, checking them, and naming files.

A tfevents file is a sequence of records, each framed as:
8-byte little-endian length, 4-byte masked CRC32C of the length, the data, 4-byte masked CRC32C of the data.
"""

from __future__ import annotations

import functools
import os
import socket
import struct
import time
from dataclasses import dataclass

from crc32c import crc32c

_HEADER = struct.Struct("<Q")
_CRC = struct.Struct("<I")
_HEADER_AND_CRC = struct.Struct("<QI")  # the length and its CRC, read in one call
_MASK_DELTA = 0xA282EAD8
HEADER_SIZE = _HEADER.size + _CRC.size  # length + its CRC
FOOTER_SIZE = _CRC.size

# Records above this size are not written by any TensorBoard writer; a larger "length" means a torn or corrupt header,
# and trusting it would make the scanner wait forever for bytes that will never come.
MAX_RECORD_SIZE = 1 << 31


def masked_crc(data: bytes) -> int:
    """The CRC32C of `data`, masked the way TensorFlow's record format requires."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def frame_record(data: bytes) -> bytes:
    """Frame one serialized record (usually an `Event` protobuf) for appending to an event file."""
    return _framed_header(len(data)) + data + _CRC.pack(masked_crc(data))


@functools.lru_cache(maxsize=4096)
def _framed_header(length: int) -> bytes:
    # Records of one tag have one length: their framed headers, CRC included, are computed once.
    packed = _HEADER.pack(length)
    return packed + _CRC.pack(masked_crc(packed))


@dataclass
class ScanResult:
    """Where the valid records of a file end.

    Attributes:
        valid_size: bytes from the start of the file up to the end of the last complete, valid record.
        records: number of valid records between the scan's start offset and `valid_size`.
        corrupt: True when scanning stopped at a record whose CRC does not match (not merely an unfinished one).
    """

    valid_size: int
    records: int
    corrupt: bool


def scan_records(path: str | os.PathLike[str], start: int = 0, chunk_size: int = 1 << 20) -> ScanResult:
    """Find the end of the last complete record whose CRCs match, reading from `start` (a known record boundary).

    A torn final record (still being written) and a record with a bad CRC both end the valid prefix; TensorBoard's
    readers stop at the first and may get stuck on or drop the rest of the file at the second, so neither may be
    uploaded.

    Args:
        path: the event file.
        start: offset of a record boundary already known to be valid, to avoid re-checking what was checked before.
        chunk_size: how much to read at once; records larger than this are read whole.

    Example:
        ```py
        >>> scan_records("runs/exp/events.out.tfevents.1700000000.host.123.000").valid_size
        4096
        ```
    """
    records = 0
    offset = start
    # The loop runs once per record (thousands per push): names are local and the CRCs are masked inline. Slices of
    # bytes, not memoryviews: for records this small, crc32c takes bytes faster than a buffer view.
    unpack_header, unpack_crc, crc, mask = _HEADER_AND_CRC.unpack_from, _CRC.unpack_from, crc32c, _MASK_DELTA
    length_size = _HEADER.size
    with open(path, "rb") as f:
        f.seek(start)
        buf = b""
        pos = 0
        while True:
            if len(buf) - pos < HEADER_SIZE:
                buf = buf[pos:] + f.read(max(chunk_size, HEADER_SIZE))
                pos = 0
                if len(buf) < HEADER_SIZE:
                    return ScanResult(offset, records, corrupt=False)
            length, length_crc = unpack_header(buf, pos)
            c = crc(buf[pos : pos + length_size])
            if length_crc != ((((c >> 15) | (c << 17)) + mask) & 0xFFFFFFFF) or length > MAX_RECORD_SIZE:
                return ScanResult(offset, records, corrupt=True)
            total = HEADER_SIZE + length + FOOTER_SIZE
            if len(buf) - pos < total:
                buf = buf[pos:] + f.read(max(chunk_size, total - (len(buf) - pos)))
                pos = 0
                if len(buf) < total:
                    return ScanResult(offset, records, corrupt=False)
            end = pos + HEADER_SIZE + length
            c = crc(buf[pos + HEADER_SIZE : end])
            if unpack_crc(buf, end)[0] != ((((c >> 15) | (c << 17)) + mask) & 0xFFFFFFFF):
                return ScanResult(offset, records, corrupt=True)
            pos += total
            offset += total
            records += 1


def iter_records(path: str | os.PathLike[str]):
    """Yield the data of each valid record of an event file, stopping at the first torn or corrupt one."""
    end = scan_records(path).valid_size
    with open(path, "rb") as f:
        while f.tell() < end:
            (length,) = _HEADER.unpack(f.read(_HEADER.size))
            f.seek(_CRC.size, os.SEEK_CUR)
            yield f.read(length)
            f.seek(FOOTER_SIZE, os.SEEK_CUR)


def is_event_file(name: str) -> bool:
    """Whether TensorBoard treats a file of this name as an event file."""
    return "tfevents" in name


class EventFileNamer:
    """Names for the successive files of one run folder, unique per process and sorted in writing order.

    TensorBoard's Python loader reads a run's files in name order and never returns to an earlier one, so names start
    with the creation time (fixed width) and end with a zero-padded sequence number; the process id keeps two
    processes on one host from opening the same file.
    """

    def __init__(self, suffix: str = "", pid: int | None = None) -> None:
        self._suffix = suffix
        self._pid = pid  # None: this process's, asked at each name (a forked child names its files with its own)
        self._host = socket.gethostname()
        self._last_name = ""

    def next_name(self) -> str:
        """The name of the next file; always sorts after every name returned before."""
        seq = 0
        pid = self._pid or os.getpid()
        while True:
            name = f"events.out.tfevents.{int(time.time()):010d}.{self._host}.{pid}.{seq:03d}{self._suffix}"
            if name > self._last_name:
                self._last_name = name
                return name
            seq += 1

