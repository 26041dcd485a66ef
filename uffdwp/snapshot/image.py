"""The snapshot image format: header, page records, end record; writer, verifier, loader, restore.

Layout (all integers little-endian)::

    header   magic "UFFDSNAP" | version u32 | header_len u32 | n_regions u32 | flags u32
             | created_unix_ns u64 | reserved u64
             then per region: address u64 | length u64 | page_size u32 | reserved u32
                              | memtype char[24]
             then header_crc u32 (crc32c of all bytes before it) | pad u32
    records  magic "SREC" u32 | type u32 | region u32 | count u32 | first_page u64
             | data_crc u32 | header_crc u32 (crc32c of the 28 bytes before it)
             PAGES: followed by count * page_size bytes (data_crc is their crc32c)
             ZERO:  count zero pages, no bytes
    end      type END, region 0xffffffff, first_page = pages recorded, count = records,
             data_crc = crc32c of the first 28 bytes of every record header before it, in
             order (not whole headers: a CRC over a message followed by its own CRC is a
             constant, so such a chain would not notice records dropped or swapped)

A snapshot writes each page exactly once (in any order: faulted pages come early). Only an image
whose end record matches its records is complete: a partial image (aborted snapshot, truncated
file) has no valid end record and never verifies. Flag REWRITES marks images (dirty-logging
precopy) whose later records of a page supersede earlier ones.
"""

from __future__ import annotations

import io
import os
import struct
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import BinaryIO

from .._ffi import ffi, lib

MAGIC = b"UFFDSNAP"
VERSION = 1
REC_MAGIC = 0x43455253  # "SREC"
REC_PAGES, REC_ZERO, REC_END = 1, 2, 3
END_REGION = 0xFFFFFFFF

FLAG_POPULATED = 1 << 0  # regions were read-populated before protection (no WP_UNPOPULATED)
FLAG_REWRITES = 1 << 1  # a page may be recorded more than once; the last record wins

_FIXED = struct.Struct("<8sIIIIQQ")
_REGION = struct.Struct("<QQII24s")
_HCRC = struct.Struct("<II")
REC = struct.Struct("<IIIIQII")
REC_SIZE = REC.size  # 32
assert REC_SIZE == 32

RECORD_NAMES = {REC_PAGES: "PAGES", REC_ZERO: "ZERO", REC_END: "END"}


class ImageError(Exception):
    """The image is not a complete, intact snapshot. *kind*: format, corrupt, truncated,
    incomplete; *offset*: where in the file the problem was found."""

    def __init__(self, kind: str, message: str, offset: int | None = None) -> None:
        where = f" at byte {offset}" if offset is not None else ""
        super().__init__(f"{kind}{where}: {message}")
        self.kind = kind
        self.offset = offset


def crc32c(data: bytes | bytearray | memoryview, crc: int = 0) -> int:
    """CRC32C (Castagnoli), computed natively (SSE4.2 where available)."""
    return lib.uffdsnap_crc32c(crc, ffi.from_buffer(data), len(data))


@dataclass(frozen=True)
class RegionInfo:
    address: int
    length: int
    page_size: int
    memtype: str = "anon"

    @property
    def pages(self) -> int:
        return self.length // self.page_size


@dataclass
class ImageHeader:
    regions: list[RegionInfo]
    flags: int = 0
    created_ns: int = field(default_factory=time.time_ns)
    version: int = VERSION

    @property
    def size(self) -> int:
        return _FIXED.size + _REGION.size * len(self.regions) + _HCRC.size

    @property
    def total_pages(self) -> int:
        return sum(r.pages for r in self.regions)

    @property
    def memory_bytes(self) -> int:
        return sum(r.length for r in self.regions)

    def encode(self) -> bytes:
        parts = [_FIXED.pack(MAGIC, self.version, self.size, len(self.regions), self.flags,
                             self.created_ns, 0)]
        for r in self.regions:
            name = r.memtype.encode()[:24]
            parts.append(_REGION.pack(r.address, r.length, r.page_size, 0, name))
        body = b"".join(parts)
        return body + _HCRC.pack(crc32c(body), 0)

    @classmethod
    def read_from(cls, f: BinaryIO) -> ImageHeader:
        fixed = f.read(_FIXED.size)
        if len(fixed) < len(MAGIC) or fixed[:8] != MAGIC:
            raise ImageError("format", "not a uffdwp snapshot image (bad magic)", 0)
        if len(fixed) < _FIXED.size:
            raise ImageError("truncated", "file ends inside the header", len(fixed))
        _, version, header_len, n_regions, flags, created, _ = _FIXED.unpack(fixed)
        if version != VERSION:
            raise ImageError("format", f"image version {version}, this tool reads {VERSION}", 8)
        expect = _FIXED.size + _REGION.size * n_regions + _HCRC.size
        if header_len != expect or n_regions == 0 or n_regions > 65536:
            raise ImageError("corrupt", f"header length {header_len} does not fit "
                                        f"{n_regions} regions", 12)
        rest = f.read(header_len - _FIXED.size)
        if len(rest) < header_len - _FIXED.size:
            raise ImageError("truncated", "file ends inside the header",
                             _FIXED.size + len(rest))
        body = fixed + rest[:-_HCRC.size]
        (hcrc, _) = _HCRC.unpack(rest[-_HCRC.size:])
        if crc32c(body) != hcrc:
            raise ImageError("corrupt", "header checksum mismatch", header_len - _HCRC.size)
        regions = []
        for i in range(n_regions):
            addr, length, ps, _, name = _REGION.unpack_from(rest, i * _REGION.size)
            if ps == 0 or length % ps:
                raise ImageError("corrupt", f"region {i}: length {length} is not a multiple "
                                            f"of page size {ps}", _FIXED.size + i * _REGION.size)
            memtype = name.rstrip(b"\0").decode(errors="replace")
            regions.append(RegionInfo(addr, length, ps, memtype))
        return cls(regions, flags, created, version)


@dataclass(frozen=True)
class Record:
    offset: int  # of the record header in the file
    type: int
    region: int
    first: int
    count: int
    data_crc: int
    raw: bytes  # the 32 header bytes (the end record's chain covers them)

    @property
    def name(self) -> str:
        return RECORD_NAMES.get(self.type, f"type{self.type}")


def pack_record(type_: int, region: int, first: int, count: int, data_crc: int) -> bytes:
    head = REC.pack(REC_MAGIC, type_, region, count, first, data_crc, 0)[:28]
    return head + struct.pack("<I", crc32c(head))


def _parse_record(raw: bytes, offset: int) -> Record:
    magic, type_, region, count, first, data_crc, hcrc = REC.unpack(raw)
    if magic != REC_MAGIC:
        raise ImageError("corrupt", f"bad record magic {magic:#x}", offset)
    if crc32c(raw[:28]) != hcrc:
        raise ImageError("corrupt", "record header checksum mismatch", offset)
    if type_ not in RECORD_NAMES:
        raise ImageError("corrupt", f"unknown record type {type_}", offset)
    return Record(offset, type_, region, first, count, data_crc, raw)


@dataclass
class VerifyResult:
    header: ImageHeader
    records: int = 0
    data_pages: int = 0
    zero_pages: int = 0
    rewritten_pages: int = 0  # FLAG_REWRITES images only
    image_bytes: int = 0

    @property
    def pages(self) -> int:
        return self.data_pages + self.zero_pages

    def as_dict(self) -> dict:
        h = self.header
        return {
            "version": h.version, "flags": h.flags, "created_ns": h.created_ns,
            "regions": [{"address": r.address, "length": r.length, "page_size": r.page_size,
                         "memtype": r.memtype} for r in h.regions],
            "memory_bytes": h.memory_bytes, "image_bytes": self.image_bytes,
            "records": self.records, "data_pages": self.data_pages,
            "zero_pages": self.zero_pages, "rewritten_pages": self.rewritten_pages,
        }


def _open(source: str | os.PathLike | BinaryIO) -> tuple[BinaryIO, bool]:
    if isinstance(source, (str, os.PathLike)):
        return open(source, "rb", buffering=1 << 20), True
    return source, False


def scan(source: str | os.PathLike | BinaryIO,
         sink: Sequence[bytearray | memoryview] | None = None) -> VerifyResult:
    """Read and check a whole image. With *sink* (one writable buffer per region), also copy
    every page into it. Raises ImageError naming what is wrong and where."""
    f, owned = _open(source)
    try:
        return _scan(f, sink)
    finally:
        if owned:
            f.close()


def _scan(f: BinaryIO, sink: Sequence[bytearray | memoryview] | None) -> VerifyResult:
    header = ImageHeader.read_from(f)
    rewrites = bool(header.flags & FLAG_REWRITES)
    seen = [bytearray(r.pages) for r in header.regions]
    result = VerifyResult(header)
    views = [memoryview(b).cast("B") for b in sink] if sink is not None else None
    if views is not None:
        for i, (v, r) in enumerate(zip(views, header.regions)):
            if len(v) != r.length:
                raise ValueError(f"region {i}: buffer of {len(v)} bytes for {r.length}")
    offset = header.size
    chain = 0
    scratch = bytearray(1 << 20)
    while True:
        raw = f.read(REC_SIZE)
        if len(raw) < REC_SIZE:
            raise ImageError("truncated" if raw or result.records else "incomplete",
                             "no end record: the image is partial (aborted or cut short)",
                             offset + len(raw))
        rec = _parse_record(raw, offset)
        offset += REC_SIZE
        if rec.type == REC_END:
            _check_end(rec, chain, result, seen, rewrites)
            if f.read(1):
                raise ImageError("corrupt", "data after the end record", offset)
            result.image_bytes = offset
            return result
        chain = crc32c(raw[:28], chain)  # without the header's own CRC (see above)
        result.records += 1
        if rec.region >= len(header.regions):
            raise ImageError("corrupt", f"record for region {rec.region} of "
                                        f"{len(header.regions)}", rec.offset)
        reg = header.regions[rec.region]
        if rec.count == 0 or rec.first + rec.count > reg.pages:
            raise ImageError("corrupt", f"pages {rec.first}+{rec.count} outside region "
                                        f"{rec.region} ({reg.pages} pages)", rec.offset)
        marks = seen[rec.region]
        if marks.find(1, rec.first, rec.first + rec.count) != -1:
            if not rewrites:
                raise ImageError("corrupt", f"region {rec.region} page "
                                            f"{marks.find(1, rec.first, rec.first + rec.count)}"
                                            " recorded twice", rec.offset)
            result.rewritten_pages += marks.count(1, rec.first, rec.first + rec.count)
        marks[rec.first:rec.first + rec.count] = b"\1" * rec.count
        if rec.type == REC_ZERO:
            if rec.data_crc:
                raise ImageError("corrupt", "zero-page record with a data checksum", rec.offset)
            result.zero_pages += rec.count
            if views is not None:
                start = rec.first * reg.page_size
                views[rec.region][start:start + rec.count * reg.page_size] = bytes(
                    rec.count * reg.page_size)
            continue
        length = rec.count * reg.page_size
        if views is not None:
            start = rec.first * reg.page_size
            target = views[rec.region][start:start + length]
            got = f.readinto(target)
            data_crc = crc32c(target[:got])
        else:
            got, data_crc = 0, 0
            while got < length:
                want = min(len(scratch), length - got)
                n = f.readinto(memoryview(scratch)[:want])
                if not n:
                    break
                data_crc = crc32c(memoryview(scratch)[:n], data_crc)
                got += n
        if got < length:
            raise ImageError("truncated", f"file ends inside a record of {rec.count} pages",
                             offset + got)
        if data_crc != rec.data_crc:
            raise ImageError("corrupt", f"page data checksum mismatch (region {rec.region} "
                                        f"pages {rec.first}+{rec.count})", offset)
        offset += length
        result.data_pages += rec.count


def _check_end(rec: Record, chain: int, result: VerifyResult, seen: list[bytearray],
               rewrites: bool) -> None:
    if rec.region != END_REGION:
        raise ImageError("corrupt", "malformed end record", rec.offset)
    if rec.data_crc != chain or rec.count != result.records & 0xFFFFFFFF:
        raise ImageError("corrupt", f"end record says {rec.count} records, found "
                                    f"{result.records} (or their order/content changed)",
                         rec.offset)
    if rec.first != result.pages:
        raise ImageError("corrupt", f"end record says {rec.first} pages, found {result.pages}",
                         rec.offset)
    for i, marks in enumerate(seen):
        missing = marks.find(0)
        if missing != -1:
            raise ImageError("incomplete", f"region {i} page {missing} is not in the image "
                                           f"({marks.count(0)} pages missing)", rec.offset)


def verify(source: str | os.PathLike | BinaryIO) -> VerifyResult:
    """Check every checksum, that every page is there once, and the end record."""
    return scan(source)


@dataclass
class LoadedImage:
    header: ImageHeader
    contents: list[bytearray]  # one per region, the memory as it was at the freeze
    summary: VerifyResult


def load(source: str | os.PathLike | BinaryIO) -> LoadedImage:
    """Read a complete image into memory: one bytearray per region."""
    f, owned = _open(source)
    try:
        pos = f.tell()
        header = ImageHeader.read_from(f)
        f.seek(pos)
        contents = [bytearray(r.length) for r in header.regions]
        summary = _scan(f, contents)
    finally:
        if owned:
            f.close()
    return LoadedImage(header, contents, summary)


def restore(source: str | os.PathLike | BinaryIO, addresses: Sequence[int] | None = None
            ) -> VerifyResult:
    """Write the image back into memory: region i at *addresses[i]* (default: the address it
    was taken from, which must be mapped and writable with the same length)."""
    f, owned = _open(source)
    try:
        pos = f.tell()
        header = ImageHeader.read_from(f)
        f.seek(pos)
        targets = list(addresses) if addresses is not None else [r.address
                                                                  for r in header.regions]
        if len(targets) != len(header.regions):
            raise ValueError(f"{len(targets)} addresses for {len(header.regions)} regions")
        # Load into a scratch copy first: a corrupt image must not leave memory half-written.
        contents = [bytearray(r.length) for r in header.regions]
        summary = _scan(f, contents)
    finally:
        if owned:
            f.close()
    for addr, data in zip(targets, contents):
        ffi.memmove(ffi.cast("char *", addr), data, len(data))
    return summary


class ImageWriter:
    """Write an image record by record from memory (natively): for baselines and tests.

    The snapshot engine writes its images itself; this produces the same format from memory
    that is not changing (stopped writers, a fork child) or, with FLAG_REWRITES, from rounds of
    dirty pages."""

    def __init__(self, fd: int, header: ImageHeader) -> None:
        self.fd = fd
        self.header = header
        self.chain = ffi.new("uint32_t *", 0)
        self.records = ffi.new("uint64_t *", 0)
        self.pages = 0
        self.bytes = 0
        data = header.encode()
        _write_all(fd, data)
        self.bytes += len(data)

    def write_pages(self, region: int, base: int, indices: Sequence[int] | None = None) -> int:
        """Record pages of region *region* (mapped at *base*): all, or those in *indices*."""
        reg = self.header.regions[region]
        idx = range(reg.pages) if indices is None else indices
        arr = ffi.new("uint64_t[]", list(idx)) if len(idx) else ffi.new("uint64_t[]", 1)
        n = lib.uffdsnap_write_pages(self.fd, region, base, reg.page_size, arr, len(idx),
                                     self.chain, self.records)
        if n < 0:
            raise OSError(-n, f"writing image records: {os.strerror(-n)}")
        self.pages += len(idx)
        self.bytes += n
        return n

    def finish(self) -> int:
        n = lib.uffdsnap_write_end(self.fd, self.pages, self.records[0], self.chain[0])
        if n < 0:
            raise OSError(-n, f"writing the end record: {os.strerror(-n)}")
        self.bytes += n
        return self.bytes


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def build_image(regions: Sequence[tuple[RegionInfo, bytes | bytearray]], flags: int = 0
                ) -> bytes:
    """An image of the given contents, built in Python (reference for format tests)."""
    header = ImageHeader([r for r, _ in regions], flags)
    out = io.BytesIO()
    out.write(header.encode())
    chain, records, pages = 0, 0, 0
    for i, (reg, data) in enumerate(regions):
        ps = reg.page_size
        for p in range(reg.pages):
            page = bytes(data[p * ps:(p + 1) * ps])
            if page.count(0) == ps:
                raw = pack_record(REC_ZERO, i, p, 1, 0)
                out.write(raw)
            else:
                raw = pack_record(REC_PAGES, i, p, 1, crc32c(page))
                out.write(raw + page)
            chain = crc32c(raw[:28], chain)
            records += 1
            pages += 1
    out.write(pack_record(REC_END, END_REGION, pages, records, chain))
    return out.getvalue()


def iter_records(source: str | os.PathLike | BinaryIO) -> Iterator[Record]:
    """Record headers in file order (no checks beyond each header's own): for `image info`."""
    f, owned = _open(source)
    try:
        header = ImageHeader.read_from(f)
        offset = header.size
        while True:
            raw = f.read(REC_SIZE)
            if len(raw) < REC_SIZE:
                return
            rec = _parse_record(raw, offset)
            yield rec
            offset += REC_SIZE
            if rec.type == REC_END:
                return
            if rec.type == REC_PAGES and rec.region < len(header.regions):
                skip = rec.count * header.regions[rec.region].page_size
                f.seek(skip, io.SEEK_CUR)
                offset += skip
    finally:
        if owned:
            f.close()


__all__ = ["FLAG_POPULATED", "FLAG_REWRITES", "MAGIC", "REC_SIZE", "VERSION", "ImageError",
           "ImageHeader", "ImageWriter", "LoadedImage", "Record", "RegionInfo", "VerifyResult",
           "build_image", "crc32c", "iter_records", "load", "pack_record", "restore", "scan",
           "verify"]
