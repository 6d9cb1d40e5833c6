"""Record framing: what counts as a complete, valid record."""

from __future__ import annotations

from pathlib import Path

from tensorboardX import SummaryWriter

from hf_summary.events.records import EventFileNamer, frame_record, iter_records, masked_crc, scan_records


def _write(path: Path, records: list[bytes]) -> int:
    data = b"".join(frame_record(r) for r in records)
    path.write_bytes(data)
    return len(data)


def test_our_framing_matches_tensorboardx(tmp_path: Path) -> None:
    writer = SummaryWriter(str(tmp_path))
    writer.add_scalar("a", 1.0, 0)
    writer.close()
    (path,) = list(tmp_path.iterdir())
    result = scan_records(path)
    assert result.valid_size == path.stat().st_size and result.records == 2 and not result.corrupt
    assert [frame_record(r) for r in iter_records(path)] and b"".join(
        frame_record(r) for r in iter_records(path)) == path.read_bytes()


def test_known_masked_crc() -> None:
    # TensorFlow's masked CRC32C of the empty string.
    assert masked_crc(b"") == 0xA282EAD8


def test_torn_record_is_not_valid(tmp_path: Path) -> None:
    path = tmp_path / "events.out.tfevents.1"
    good = _write(path, [b"one", b"two" * 100])
    for cut in (1, 11, 12, 20, len(frame_record(b"x" * 50)) - 1):
        path.write_bytes(path.read_bytes()[:good] + frame_record(b"x" * 50)[:cut])
        result = scan_records(path)
        assert result.valid_size == good and not result.corrupt, cut


def test_corrupt_record_ends_the_valid_prefix(tmp_path: Path) -> None:
    path = tmp_path / "events.out.tfevents.1"
    good = _write(path, [b"one", b"two"])
    bad = bytearray(frame_record(b"three"))
    bad[-1] ^= 0xFF
    path.write_bytes(path.read_bytes() + bytes(bad) + frame_record(b"four"))
    result = scan_records(path)
    assert result.valid_size == good and result.corrupt
    assert list(iter_records(path)) == [b"one", b"two"]


def test_corrupt_length_is_not_trusted(tmp_path: Path) -> None:
    path = tmp_path / "events.out.tfevents.1"
    good = _write(path, [b"one"])
    bad = bytearray(frame_record(b"two"))
    bad[0] ^= 0x40
    path.write_bytes(path.read_bytes() + bytes(bad))
    assert scan_records(path).valid_size == good


def test_scan_resumes_from_a_known_boundary(tmp_path: Path) -> None:
    path = tmp_path / "events.out.tfevents.1"
    first = _write(path, [b"a" * 10])
    path.write_bytes(path.read_bytes() + frame_record(b"b" * (3 << 20)))  # larger than one read chunk
    result = scan_records(path, start=first)
    assert result.records == 1 and result.valid_size == path.stat().st_size


def test_names_sort_in_writing_order_and_carry_the_pid() -> None:
    import os

    namer = EventFileNamer(".suffix")
    names = [namer.next_name() for _ in range(30)]
    assert names == sorted(names) and len(set(names)) == 30
    assert all(f".{os.getpid()}." in n and n.endswith(".suffix") and "tfevents" in n for n in names)
