# SPDX-License-Identifier: GPL-2.0-only
"""The snapshot image format: round trips, and every truncation or corruption is caught."""

from __future__ import annotations

import io
import os
import random
import struct

import pytest

from uffdwp._ffi import ffi
from uffdwp.snapshot import image as im
from uffdwp.snapshot.image import (
    FLAG_REWRITES,
    REC_SIZE,
    ImageError,
    ImageHeader,
    ImageWriter,
    RegionInfo,
    build_image,
    crc32c,
    load,
    verify,
)

PS = 4096


def contents(pages: int, seed: int) -> bytearray:
    rng = random.Random(seed)
    data = bytearray(pages * PS)
    for p in range(pages):
        if p % 3:  # every third page zero
            data[p * PS:(p + 1) * PS] = bytes([rng.randrange(1, 256)]) * PS
            data[p * PS + 17] = rng.randrange(256)
    return data


@pytest.fixture
def sample() -> tuple[bytes, list[bytearray]]:
    a, b = contents(10, 1), contents(5, 2)
    regions = [(RegionInfo(0x10000, len(a), PS, "anon"), a),
               (RegionInfo(0x90000, len(b), PS, "shmem"), b)]
    return build_image(regions), [a, b]


def test_crc32c_known_value():
    assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
    assert crc32c(b"6789", crc32c(b"12345")) == 0xE3069283  # chaining


def test_round_trip(sample):
    data, regions = sample
    loaded = load(io.BytesIO(data))
    assert [bytes(c) for c in loaded.contents] == [bytes(r) for r in regions]
    summary = verify(io.BytesIO(data))
    assert summary.pages == 15 and summary.zero_pages == 4 + 2
    assert [r.memtype for r in loaded.header.regions] == ["anon", "shmem"]


def test_zero_pages_carry_no_bytes(sample):
    data, regions = sample
    data_pages = sum(1 for r in regions for p in range(len(r) // PS)
                     if any(r[p * PS:(p + 1) * PS]))
    header = ImageHeader([RegionInfo(0, 10 * PS, PS), RegionInfo(0, 5 * PS, PS)])
    expected = header.size + (15 + 1) * REC_SIZE + data_pages * PS
    assert len(data) == expected


def test_native_writer_matches_python_reader(tmp_path):
    buf = contents(64, 3)
    addr = int(ffi.cast("uintptr_t", ffi.from_buffer(buf)))
    header = ImageHeader([RegionInfo(addr, len(buf), PS, "anon")])
    path = tmp_path / "img"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        w = ImageWriter(fd, header)
        w.write_pages(0, addr, range(0, 64, 2))  # out of order is fine: evens, then odds
        w.write_pages(0, addr, range(1, 64, 2))
        w.finish()
    finally:
        os.close(fd)
    assert bytes(load(path).contents[0]) == bytes(buf)
    # runs of consecutive pages become one record: 64 pages in far fewer than 64 records
    w2 = tmp_path / "img2"
    fd = os.open(w2, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        writer = ImageWriter(fd, header)
        writer.write_pages(0, addr)
        writer.finish()
    finally:
        os.close(fd)
    assert verify(w2).records < 64 and bytes(load(w2).contents[0]) == bytes(buf)


def test_every_truncation_is_detected(sample):
    data, _ = sample
    # every byte of the header, the first records and the end; sampled in between
    cuts = sorted(set(range(400)) | set(range(400, len(data), 61)) |
                  set(range(len(data) - 100, len(data))))
    for cut in cuts:
        with pytest.raises(ImageError) as info:
            verify(io.BytesIO(data[:cut]))
        assert info.value.kind in ("truncated", "incomplete", "format")


def test_truncation_message_names_the_cause(sample):
    data, _ = sample
    with pytest.raises(ImageError, match="no end record"):
        verify(io.BytesIO(data[:-REC_SIZE]))
    with pytest.raises(ImageError, match="ends inside a record"):
        verify(io.BytesIO(data[:ImageHeader([RegionInfo(0, PS, PS)] * 2).size + 2 * REC_SIZE + 5]))


def test_every_flipped_byte_is_detected(sample):
    data, _ = sample
    rng = random.Random(5)
    offsets = [*range(0, len(data), 97), len(data) - 1, 8, 20]
    for off in offsets:
        bad = bytearray(data)
        bad[off] ^= 1 << rng.randrange(8)
        with pytest.raises(ImageError):
            verify(io.BytesIO(bytes(bad)))


def _records(data: bytes) -> list[tuple[int, int]]:
    """(offset, length) of each record, header included."""
    header = ImageHeader.read_from(io.BytesIO(data))
    out, off = [], header.size
    while off < len(data):
        _, type_, _, count, *_ = im.REC.unpack_from(data, off)
        length = REC_SIZE + (count * PS if type_ == im.REC_PAGES else 0)
        out.append((off, length))
        off += length
    return out


def test_dropped_record_is_detected(sample):
    data, _ = sample
    recs = _records(data)
    off, length = recs[3]
    with pytest.raises(ImageError, match=r"records|missing|not in the image"):
        verify(io.BytesIO(data[:off] + data[off + length:]))


def test_swapped_records_are_detected(sample):
    data, _ = sample
    recs = _records(data)
    (o1, l1), (o2, l2) = recs[1], recs[2]
    swapped = data[:o1] + data[o2:o2 + l2] + data[o1:o1 + l1] + data[o2 + l2:]
    with pytest.raises(ImageError, match=r"order|records"):
        verify(io.BytesIO(swapped))


def test_duplicated_record_is_detected(sample):
    data, _ = sample
    off, length = _records(data)[2]
    dup = data[:off + length] + data[off:off + length] + data[off + length:]
    with pytest.raises(ImageError, match="twice"):
        verify(io.BytesIO(dup))


def test_trailing_data_is_detected(sample):
    data, _ = sample
    with pytest.raises(ImageError, match="after the end record"):
        verify(io.BytesIO(data + b"x"))


def test_not_an_image():
    with pytest.raises(ImageError) as info:
        verify(io.BytesIO(b"hello world, this is not an image at all"))
    assert info.value.kind == "format"
    with pytest.raises(ImageError):
        verify(io.BytesIO(b""))


def test_other_version_is_refused(sample):
    data, _ = sample
    bad = bytearray(data)
    struct.pack_into("<I", bad, 8, 99)
    with pytest.raises(ImageError, match="version 99"):
        verify(io.BytesIO(bytes(bad)))


def test_missing_pages_are_incomplete():
    a = contents(4, 9)
    full = build_image([(RegionInfo(0, len(a), PS), a)])
    # rebuild with only pages 0..2 recorded, but a header claiming 4
    header = ImageHeader([RegionInfo(0, len(a), PS)])
    out = io.BytesIO()
    out.write(header.encode())
    chain, n = 0, 0
    for p in range(3):
        page = bytes(a[p * PS:(p + 1) * PS])
        zero = not any(page)
        raw = im.pack_record(im.REC_ZERO if zero else im.REC_PAGES, 0, p, 1,
                             0 if zero else crc32c(page))
        out.write(raw if zero else raw + page)
        chain, n = crc32c(raw[:28], chain), n + 1
    out.write(im.pack_record(im.REC_END, im.END_REGION, 3, n, chain))
    with pytest.raises(ImageError) as info:
        verify(io.BytesIO(out.getvalue()))
    assert info.value.kind == "incomplete" and "page 3" in str(info.value)
    verify(io.BytesIO(full))


def test_rewrites_flag_lets_the_last_record_win(tmp_path):
    buf = contents(8, 4)
    addr = int(ffi.cast("uintptr_t", ffi.from_buffer(buf)))
    header = ImageHeader([RegionInfo(addr, len(buf), PS)], FLAG_REWRITES)
    path = tmp_path / "precopy"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        w = ImageWriter(fd, header)
        w.write_pages(0, addr)
        buf[PS * 5] = 0x5A  # page 5 dirtied: a later round saves it again
        w.write_pages(0, addr, [5])
        w.finish()
    finally:
        os.close(fd)
    summary = verify(path)
    assert summary.rewritten_pages == 1
    assert bytes(load(path).contents[0]) == bytes(buf)


def test_cli_verify_exit_status(sample, tmp_path, capsys):
    import argparse

    from uffdwp.snapshot import command

    parser = argparse.ArgumentParser()
    command.register(parser.add_subparsers())
    data, _ = sample
    good, bad = tmp_path / "good.img", tmp_path / "bad.img"
    good.write_bytes(data)
    bad.write_bytes(data[:-40])
    args = parser.parse_args(["image", "verify", str(good)])
    assert args.func(args) == 0
    args = parser.parse_args(["image", "verify", str(bad)])
    assert args.func(args) == 1
    err = capsys.readouterr().err
    assert "truncated" in err and "Traceback" not in err
    args = parser.parse_args(["image", "info", str(bad)])
    assert args.func(args) == 0
    assert "NO (partial image)" in capsys.readouterr().out


def test_wrlat_histogram():
    from uffdwp.bench import wrlat
    from uffdwp.snapshot.demo import stall_summary

    hist = wrlat.log2_histogram_us([500, 1500, 3000, 3500, 9000, 150_000])
    assert hist[0] == 1 and hist[1] == 1 and hist[2] == 2 and hist[4] == 1 and hist[8] == 1
    text = wrlat.format_histogram(hist)
    assert "usecs" in text and "128 -> 255" in text
    assert "p50" in stall_summary([1000, 2000, 3000])
