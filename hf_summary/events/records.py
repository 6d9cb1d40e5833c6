"""TFRecord framing of event files: writing records, checking them, and naming files.

A tfevents file is a sequence of records, each framed as:
8-byte little-endian length, 4-byte masked CRC32C of the length, the data, 4-byte masked CRC32C of the data.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from dataclasses import dataclass

from crc32c import crc32c

_HEADER = struct.Struct("<Q")
_CRC = struct.Struct("<I")
HEADER_SIZE = _HEADER.size + _CRC.size  # length + its CRC
FOOTER_SIZE = _CRC.size

# Records above this size are not written by any TensorBoard writer; a larger "length" means a torn or corrupt header,
# and trusting it would make the scanner wait forever for bytes that will never come.
MAX_RECORD_SIZE = 1 << 31


def masked_crc(data: bytes) -> int:
    """The CRC32C of `data`, masked the way TensorFlow's record format requires."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def frame_record(data: bytes) -> bytes:
    """Frame one serialized record (usually an `Event` protobuf) for appending to an event file."""
    length = len(data)
    header = _framed_headers.get(length)
    if header is None:
        # Records of one tag have one length: their framed headers, CRC included, are computed once.
        if len(_framed_headers) >= 4096:
            _framed_headers.clear()
        packed = _HEADER.pack(length)
        header = _framed_headers[length] = packed + _CRC.pack(masked_crc(packed))
    return header + data + _CRC.pack(masked_crc(data))


_framed_headers: dict[int, bytes] = {}


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
            header = buf[pos : pos + _HEADER.size]
            (length,) = _HEADER.unpack(header)
            (length_crc,) = _CRC.unpack_from(buf, pos + _HEADER.size)
            if length_crc != masked_crc(header) or length > MAX_RECORD_SIZE:
                return ScanResult(offset, records, corrupt=True)
            total = HEADER_SIZE + length + FOOTER_SIZE
            if len(buf) - pos < total:
                buf = buf[pos:] + f.read(max(chunk_size, total - (len(buf) - pos)))
                pos = 0
                if len(buf) < total:
                    return ScanResult(offset, records, corrupt=False)
            data = buf[pos + HEADER_SIZE : pos + HEADER_SIZE + length]
            (data_crc,) = _CRC.unpack_from(buf, pos + HEADER_SIZE + length)
            if data_crc != masked_crc(data):
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

    def __init__(self, suffix: str = "") -> None:
        self._suffix = suffix
        self._host = socket.gethostname()
        self._last_name = ""

    def next_name(self) -> str:
        """The name of the next file; always sorts after every name returned before."""
        seq = 0
        while True:
            name = f"events.out.tfevents.{int(time.time()):010d}.{self._host}.{os.getpid()}.{seq:03d}{self._suffix}"
            if name > self._last_name:
                self._last_name = name
                return name
            seq += 1

