"""Event files scanned in bulk: record boundaries, CRCs and plain scalar events decoded with numpy, not per event.

The framing is TFRecord's (see `hf_summary.events.records`): 8-byte length, its masked CRC32C, the data, the data's
masked CRC32C. A plain scalar event, as tensorboardX, torch and our own writer serialize it, is always laid out as

    09 <wall_time: double>  [10 <step: varint>]  2a <n+9>  0a <n+7>  0a <n> <tag: n bytes>  15 <value: float>

(the step field is absent when the step is 0: proto3 omits defaults). Such records are decoded here by gathering
their fields at their offsets, for all records of a buffer at once; any other record (file version, session log,
histogram, image, tensor-valued scalar, a scalar with metadata, a tag of 119 bytes or more) is handed back whole,
for the caller to parse with protobuf.

Reading stops where TensorBoard's loader stops: at a record that is not complete yet (the end of a file still being
written) and at a record whose CRC does not match (TensorBoard reads nothing of the file past it).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from ..events.records import FOOTER_SIZE, HEADER_SIZE, MAX_RECORD_SIZE, masked_crc

_MASK_DELTA = 0xA282EAD8
_CRC32C_POLY = 0x82F63B78  # CRC32C's polynomial, bit-reflected
_TABLE_LENGTHS = 1 << 16  # the header CRCs of records shorter than this come from a table
_NUMPY_CRC_MAX = 1024  # records up to this long get their CRCs from numpy, all at once; longer ones one by one
_WALL, _STEP, _SUMMARY, _VALUE, _TAG, _SIMPLE_VALUE = 0x09, 0x10, 0x2A, 0x0A, 0x0A, 0x15
_MAX_TAG = 127 - 9  # the summary's length (the tag's + 9) must fit in one varint byte
_MIN_SCALAR = 20  # the shortest plain scalar: no step, an empty tag
_MAX_SCALAR = _MIN_SCALAR + 11 + _MAX_TAG  # a 10-byte step varint and its field byte, the longest tag
_HASH_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)


@dataclass
class Scanned:
    """The complete, valid records at the start of a buffer.

    Attributes:
        end: offset just past the last record read: where the next read starts.
        corrupt: reading stopped at a record whose CRC does not match: TensorBoard reads nothing of the file past it.
        records: number of records read.
        ordinal: for each plain scalar, the index of its record among the `records`.
        tag: for each plain scalar, the index of its tag in `tags`.
        tags: the plain scalars' tags, as stored.
        step, wall_time, value: the plain scalars' fields (the float32 value widened to float64, exactly).
        others: the records that are not plain scalars: (index among the `records`, the event's bytes).
    """

    end: int
    corrupt: bool
    records: int
    ordinal: np.ndarray
    tag: np.ndarray
    tags: list[str]
    step: np.ndarray
    wall_time: np.ndarray
    value: np.ndarray
    others: list[tuple[int, bytes]]


def scan(buffer: bytes) -> Scanned:
    """Read the records of `buffer`, which starts at a record boundary of an event file.

    Args:
        buffer: bytes of an event file, from a record boundary; it may end anywhere.

    Example:
        ```py
        >>> data = open("runs/mlp/events.out.tfevents.1700000000.host.1.000", "rb").read()
        >>> found = scan(data)
        >>> found.tags, found.step[:3].tolist(), found.end == len(data)
        (['loss'], [0, 1, 2], True)
        ```
    """
    data = np.frombuffer(buffer, dtype=np.uint8)
    starts, lengths, end, corrupt = _record_starts(data)
    good = _crcs_match(data, starts, lengths)
    if not good.all():
        bad = int(np.argmin(good))
        end, corrupt, starts, lengths = int(starts[bad]), True, starts[:bad], lengths[:bad]
    fast, tag_starts, tag_lengths, steps = _plain_scalars(data, starts, lengths)
    codes, tags, undecodable = _tag_codes(data, tag_starts, tag_lengths)
    ordinal = np.flatnonzero(fast)
    if undecodable.any():  # not UTF-8: protobuf decides what that means, as it does for TensorBoard
        fast[ordinal[undecodable]] = False
        keep = ~undecodable
        ordinal, codes, tag_starts, tag_lengths, steps = (
            ordinal[keep], codes[keep], tag_starts[keep], tag_lengths[keep], steps[keep])
    others = [(int(index), buffer[int(starts[index]) + HEADER_SIZE:int(starts[index] + HEADER_SIZE + lengths[index])])
              for index in np.flatnonzero(~fast)]
    return Scanned(
        end=end, corrupt=corrupt, records=len(starts), ordinal=ordinal, tag=codes, tags=tags, step=steps,
        wall_time=_view(data, "<f8")[starts[ordinal] + HEADER_SIZE + 1].astype(np.float64),
        value=_view(data, "<f4")[tag_starts + tag_lengths + 1].astype(np.float64), others=others,
    )


def _view(data: np.ndarray, dtype: str) -> np.ndarray:
    """`data` read as `dtype` at every byte offset: one gather reads a field wherever it starts."""
    size = np.dtype(dtype).itemsize
    return np.ndarray(shape=(max(0, data.size - size + 1),), dtype=dtype, buffer=data, strides=(1,))


def _record_starts(data: np.ndarray) -> tuple[np.ndarray, np.ndarray, int, bool]:
    """Offsets and lengths of the complete records, the offset where reading stopped, and whether a bad header CRC
    stopped it.

    Records are found by following the chain of lengths from offset 0. Following it one record at a time would cost
    a Python step per record; instead every offset where a record could start (an event's first byte, wall_time's
    field tag, 12 bytes after it) whose length and header CRC check out is taken as a candidate, the candidates
    whose successor is the next candidate are chained in bulk, and Python steps in only where the chain leaves the
    candidates (an event without a wall_time, a long record, a false candidate inside a record's data).
    """
    size = data.size
    lengths64, crcs32 = _view(data, "<u8"), _view(data, "<u4")
    candidates = np.flatnonzero(data[HEADER_SIZE:] == _WALL) if size > HEADER_SIZE else np.zeros(0, np.int64)
    lengths = lengths64[candidates]
    short = lengths < _TABLE_LENGTHS
    candidates, lengths = candidates[short], lengths[short].astype(np.int64)
    checked = crcs32[candidates + 8] == _header_crcs()[lengths]
    candidates, lengths = candidates[checked], lengths[checked]
    following = candidates + lengths + HEADER_SIZE + FOOTER_SIZE
    chained = np.zeros(candidates.size, dtype=bool)
    chained[:-1] = following[:-1] == candidates[1:]
    breaks = np.flatnonzero(~chained)
    pieces: list[np.ndarray] = []
    position, corrupt = 0, False
    while position < size:
        index = int(np.searchsorted(candidates, position))
        if index < candidates.size and candidates[index] == position:
            last = int(breaks[np.searchsorted(breaks, index)])
            complete = following[last] <= size
            pieces.append(candidates[index:last + complete])
            position = int(following[last] if complete else candidates[last])
            if not complete:
                break
            continue
        if position + HEADER_SIZE > size:
            break
        length = int(lengths64[position])
        if length > MAX_RECORD_SIZE or int(crcs32[position + 8]) != masked_crc(data[position:position + 8].tobytes()):
            corrupt = True
            break
        if position + HEADER_SIZE + length + FOOTER_SIZE > size:
            break
        pieces.append(np.array([position], dtype=np.int64))
        position += HEADER_SIZE + length + FOOTER_SIZE
    starts = np.concatenate(pieces) if pieces else np.zeros(0, np.int64)
    return starts, lengths64[starts].astype(np.int64), position, corrupt


@functools.lru_cache(maxsize=1)
def _crc_tables() -> np.ndarray:
    """CRC32C's slicing-by-8 tables: row k maps a byte to its effect on the CRC k bytes before the end of a word."""
    tables = np.zeros((8, 256), dtype=np.uint32)
    crc = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        crc = np.where(crc & 1, (crc >> 1) ^ np.uint32(_CRC32C_POLY), crc >> 1).astype(np.uint32)
    tables[0] = crc
    for k in range(1, 8):
        tables[k] = (tables[k - 1] >> 8) ^ tables[0][tables[k - 1] & 0xFF]
    return tables


@functools.lru_cache(maxsize=1)
def _header_crcs() -> np.ndarray:
    """The masked CRC of every 8-byte length below `_TABLE_LENGTHS`: a header's CRC checks with one lookup."""
    lengths = np.arange(_TABLE_LENGTHS, dtype=np.uint64)
    return _mask(_crc_update(np.full(_TABLE_LENGTHS, 0xFFFFFFFF, dtype=np.uint32), lengths) ^ np.uint32(0xFFFFFFFF))


def _mask(crc: np.ndarray) -> np.ndarray:
    wide = crc.astype(np.uint64)
    return (((wide >> np.uint64(15)) | (wide << np.uint64(17))) + np.uint64(_MASK_DELTA)).astype(np.uint32)


def _crc_update(crc: np.ndarray, words: np.ndarray) -> np.ndarray:
    """CRC32C states after 8 more bytes (`words`, little-endian), slicing-by-8: one table lookup per byte."""
    tables = _crc_tables()
    mixed = (words ^ crc.astype(np.uint64)).view(np.uint8).reshape(-1, 8)
    out = tables[7][mixed[:, 0]]
    for k in range(1, 8):
        out ^= tables[7 - k][mixed[:, k]]
    return out


def _crcs_match(data: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Whether each record's data matches its CRC.

    Short records: all at once, a word of every record per numpy step. CRC32C is linear: the CRC of the data is
    the register's effect over as many zero bytes (`_zeros_crcs`) xor the CRC of the data from a zero register, and
    from a zero register leading zero bytes change nothing; so each record is read as whole words from up to 7 bytes
    before its data, those bytes zeroed. Sorted by length, the records still going at each step are a prefix.
    Long records: one crc32c call each.
    """
    good = np.ones(starts.size, dtype=bool)
    stored = _view(data, "<u4")[starts + HEADER_SIZE + lengths]
    for index in np.flatnonzero(lengths > _NUMPY_CRC_MAX):
        begin = int(starts[index]) + HEADER_SIZE
        good[index] = masked_crc(data[begin:begin + int(lengths[index])].tobytes()) == stored[index]
    short = np.flatnonzero(lengths <= _NUMPY_CRC_MAX)
    if not short.size:
        return good
    order = short[np.argsort(lengths[short].astype(np.uint16), kind="stable")[::-1]]
    sizes = lengths[order]
    words = np.maximum((sizes + 7) // 8, 1)  # an empty record: one word, all zeroed
    begins = starts[order] + HEADER_SIZE + sizes - 8 * words  # the header is there to read, zeroed
    word_view = _view(data, "<u8")
    crc = np.zeros(order.size, dtype=np.uint32)
    keep = np.array([(1 << 64) - (1 << (8 * pad)) for pad in range(9)], dtype=np.uint64)
    crc = _crc_update(crc, word_view[begins] & keep[8 * words - sizes])
    descending = -words
    for word in range(1, int(words[0])):
        going = int(np.searchsorted(descending, -word, side="left"))  # the records with more than `word` words
        crc[:going] = _crc_update(crc[:going], word_view[begins[:going] + 8 * word])
    good[order] = _mask(crc ^ _zeros_crcs()[sizes]) == stored[order]
    return good


@functools.lru_cache(maxsize=1)
def _zeros_crcs() -> np.ndarray:
    """For each length up to `_NUMPY_CRC_MAX`: the CRC32C register's start and end values' effect over that many
    zero bytes, which the CRC of data from a zero register is missing."""
    table = _crc_tables()[0]
    out = np.zeros(_NUMPY_CRC_MAX + 1, dtype=np.uint32)
    crc = np.uint32(0xFFFFFFFF)
    for length in range(_NUMPY_CRC_MAX + 1):
        out[length] = crc ^ np.uint32(0xFFFFFFFF)
        crc = table[int(crc) & 0xFF] ^ (crc >> np.uint32(8))
    return out


def _plain_scalars(data: np.ndarray, starts: np.ndarray, lengths: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Which records are plain scalar events, and for those: where their tag starts, its length, and the step."""
    fast = (lengths >= _MIN_SCALAR) & (lengths <= _MAX_SCALAR)
    fast[fast] = data[starts[fast] + HEADER_SIZE] == _WALL
    candidates = np.flatnonzero(fast)
    begin = starts[candidates] + HEADER_SIZE
    has_step = data[begin + 9] == _STEP
    step = np.zeros(candidates.size, dtype=np.uint64)
    varint = np.zeros(candidates.size, dtype=np.int64)
    going = has_step.copy()
    for shift in range(10):
        if not going.any():
            break
        byte = data[begin + 10 + shift]
        step |= np.where(going, (byte & 0x7F).astype(np.uint64) << np.uint64(7 * shift), np.uint64(0))
        varint += going
        going &= byte >= 0x80
    summary = begin + 9 + np.where(has_step, 1 + varint, 0)
    last = data.size - 1

    def byte_at(offsets: np.ndarray) -> np.ndarray:  # past the record only when it is not a plain scalar
        return data[np.minimum(offsets, last)]

    tag_length = byte_at(summary + 5).astype(np.int64)
    ok = (~going & (byte_at(summary) == _SUMMARY) & (byte_at(summary + 1) == tag_length + 9)
          & (byte_at(summary + 2) == _VALUE) & (byte_at(summary + 3) == tag_length + 7)
          & (byte_at(summary + 4) == _TAG)
          & (tag_length <= _MAX_TAG) & (byte_at(summary + 6 + tag_length) == _SIMPLE_VALUE)
          & (summary + 11 + tag_length == begin + lengths[candidates]))
    fast[candidates[~ok]] = False
    return fast, summary[ok] + 6, tag_length[ok], step[ok].view(np.int64)


def _tag_codes(data: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, list[str], np.ndarray]:
    """A code per tag (the index of its text in the list), and which tags are not UTF-8.

    Tags are told apart by a 64-bit hash of their bytes, read a word at a time; every tag is then compared with the
    first one of its code, word by word, so a collision cannot merge two tags (it falls back to grouping the words
    themselves).
    """
    import pandas as pd  # type: ignore[import-untyped]

    if not starts.size:
        return np.zeros(0, np.int32), [], np.zeros(0, bool)
    words = _tag_words(data, starts, lengths)
    digest = lengths.astype(np.uint64)
    for word in words:
        digest = (digest ^ word) * _HASH_MULTIPLIER
        digest ^= digest >> np.uint64(29)
    codes, _ = pd.factorize(digest)
    # Codes are numbered in order of first appearance: the running maximum grows at each code's first record.
    first = np.flatnonzero(np.diff(np.maximum.accumulate(codes), prepend=-1) > 0)
    same = lengths == lengths[first[codes]]
    for word in words:
        same &= word == word[first[codes]]
    if not same.all():
        keys = np.column_stack([lengths.astype(np.uint64), *words])
        _, first, codes = np.unique(keys, axis=0, return_index=True, return_inverse=True)
        codes = codes.reshape(-1)
    tags, bad_codes = [], []
    for code, index in enumerate(first):
        begin = int(starts[index])
        try:
            tags.append(data[begin:begin + int(lengths[index])].tobytes().decode("utf-8"))
        except UnicodeDecodeError:
            tags.append("")
            bad_codes.append(code)
    return codes.astype(np.int32), tags, np.isin(codes, bad_codes)


def _tag_words(data: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> list[np.ndarray]:
    """The tags' bytes as little-endian words, zero past each tag's end."""
    view = _view(data, "<u8")
    masks = np.array([(1 << (8 * n)) - 1 for n in range(9)], dtype=np.uint64)
    words = []
    for word in range((int(lengths.max()) + 7) // 8):
        left = np.clip(lengths - 8 * word, 0, 8)
        # A word that starts inside the tag ends, at the latest, in the record's CRC: inside the buffer.
        offsets = np.minimum(starts + 8 * word, view.size - 1)
        words.append(view[offsets] & masks[left])
    return words
