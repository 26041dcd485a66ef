# SPDX-License-Identifier: GPL-2.0-only
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

import contextlib
import errno
import io
import itertools
import os
import secrets
import stat
import struct
import time
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import BinaryIO

from .._ffi import ffi, lib
from ..errors import Error
from ..memory import unmapped_part

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
MIN_PAGE_SIZE, MAX_PAGE_SIZE = 4096, 16 << 30  # 4 KiB pages .. 16 GiB huge pages
ADDRESS_LIMIT = 1 << 64


class ImageError(Error):
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
            at = _FIXED.size + i * _REGION.size
            if not MIN_PAGE_SIZE <= ps <= MAX_PAGE_SIZE or ps & (ps - 1):
                raise ImageError("corrupt", f"region {i}: page size {ps} is not a power of two "
                                            f"from {MIN_PAGE_SIZE} to {MAX_PAGE_SIZE}", at)
            if not length or length % ps or addr + length > ADDRESS_LIMIT:
                raise ImageError("corrupt", f"region {i}: {addr:#x}+{length:#x} is not whole "
                                            f"pages of {ps} bytes inside the address space", at)
            memtype = name.rstrip(b"\0").decode(errors="replace")
            regions.append(RegionInfo(addr, length, ps, memtype))
        spans = sorted((r.address, r.address + r.length, i) for i, r in enumerate(regions))
        for (_, end_a, a), (start_b, _, b) in itertools.pairwise(spans):
            if start_b < end_a:
                raise ImageError("corrupt", f"regions {a} and {b} overlap", 16)
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
        # Opening a FIFO would wait for a writer for ever: a path must name a file. (A stream
        # is read from an open file object, e.g. `uffdwp image verify - < FIFO`.)
        mode = os.stat(source).st_mode
        if not stat.S_ISREG(mode):
            kind = ("a FIFO" if stat.S_ISFIFO(mode) else "a directory" if stat.S_ISDIR(mode)
                    else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else
                    "a socket" if stat.S_ISSOCK(mode) else "not a regular file")
            raise ImageError("format", f"{os.fspath(source)} is {kind}, not an image file "
                                       "(read a stream from standard input: -)")
        return open(source, "rb", buffering=1 << 20), True
    return source, False


class _Spans:
    """Which pages of one region the records cover, as runs in file order (a linear pass
    is one run, each page saved early for a writer one more): memory grows with the records
    the file holds, never with the size its header claims."""

    def __init__(self) -> None:
        self.first, self.count, self.offset = array("Q"), array("Q"), array("Q")

    def add(self, first: int, count: int, offset: int) -> None:
        if self.first and self.first[-1] + self.count[-1] == first:
            self.count[-1] += count  # extends the last run
        else:
            self.first.append(first)
            self.count.append(count)
            self.offset.append(offset)

    def check(self, region: int, pages: int, rewrites: bool, end_offset: int | None) -> int:
        """Raise ImageError if a page is recorded twice (unless *rewrites*) and, given the end
        record's *end_offset*, unless every page is covered; returns how many pages were
        recorded again."""
        covered, again = 0, 0
        for k in sorted(range(len(self.first)), key=self.first.__getitem__):
            first, count = self.first[k], self.count[k]
            if first < covered:
                if not rewrites:
                    raise ImageError("corrupt", f"region {region} page {first} recorded twice",
                                     self.offset[k])
                again += min(covered, first + count) - first
            elif first > covered and end_offset is not None:
                break
            covered = max(covered, first + count)
        if end_offset is not None and covered < pages:
            raise ImageError("incomplete", f"region {region} page {covered} is not in the "
                                           "image", end_offset)
        return again


class _Sink:
    """Where the pages of a scanned image go (nowhere, for verify)."""

    def wants(self, region: int) -> bool:
        return False

    def fill(self, f: BinaryIO, region: int, offset: int, length: int) -> tuple[int, int]:
        """Read *length* bytes of f into place; returns (bytes read, their crc32c)."""
        raise NotImplementedError

    def zero(self, region: int, offset: int, length: int) -> None:
        """Pages recorded as zero (they already are, unless an earlier record wrote them)."""


_ZEROS = bytes(1 << 20)


class _BufferSink(_Sink):
    def __init__(self, buffers: Sequence[bytearray | memoryview], header: ImageHeader) -> None:
        self.views = [memoryview(b).cast("B") for b in buffers]
        for i, (v, r) in enumerate(zip(self.views, header.regions)):
            if len(v) != r.length:
                raise ValueError(f"region {i}: buffer of {len(v)} bytes for {r.length}")
        self.rewrites = bool(header.flags & FLAG_REWRITES)

    def wants(self, region: int) -> bool:
        return True

    def fill(self, f, region, offset, length):
        target = self.views[region][offset:offset + length]
        got = f.readinto(target) or 0
        return got, crc32c(target[:got])

    def zero(self, region, offset, length):
        if self.rewrites:  # fresh buffers are zero; only a rewritten page needs clearing
            view = self.views[region]
            for at in range(offset, offset + length, len(_ZEROS)):
                n = min(len(_ZEROS), offset + length - at)
                view[at:at + n] = _ZEROS[:n]


class _FileSink(_Sink):
    """One region into a sparse file: zero pages are holes."""

    def __init__(self, fd: int, region: int, rewrites: bool) -> None:
        self.fd, self.region, self.rewrites = fd, region, rewrites
        self.scratch = bytearray(1 << 20)

    def wants(self, region: int) -> bool:
        return region == self.region

    def fill(self, f, region, offset, length):
        got, crc, view = 0, 0, memoryview(self.scratch)
        while got < length:
            n = f.readinto(view[:min(len(view), length - got)])
            if not n:
                break
            crc = crc32c(view[:n], crc)
            _pwrite_all(self.fd, view[:n], offset + got)
            got += n
        return got, crc

    def zero(self, region, offset, length):
        if self.rewrites and region == self.region:
            for at in range(offset, offset + length, len(_ZEROS)):
                _pwrite_all(self.fd, _ZEROS[:min(len(_ZEROS), offset + length - at)], at)


def _pwrite_all(fd: int, data: memoryview | bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


def scan(source: str | os.PathLike | BinaryIO,
         sink: Sequence[bytearray | memoryview] | None = None) -> VerifyResult:
    """Read and check a whole image. With *sink* (one writable buffer per region), also copy
    every page into it. Raises ImageError naming what is wrong and where."""
    f, owned = _open(source)
    try:
        if sink is None:
            return _scan(f, None)
        pos = f.tell()
        header = ImageHeader.read_from(f)
        f.seek(pos)
        return _scan(f, _BufferSink(sink, header))
    finally:
        if owned:
            f.close()


def _scan(f: BinaryIO, sink: _Sink | None) -> VerifyResult:
    header = ImageHeader.read_from(f)
    rewrites = bool(header.flags & FLAG_REWRITES)
    spans = [_Spans() for _ in header.regions]
    result = VerifyResult(header)
    sink = sink or _Sink()
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
            for i, (s, r) in enumerate(zip(spans, header.regions)):
                s.check(i, r.pages, rewrites, None)  # a duplicate first: it names the record
            _check_end(rec, chain, result)
            result.rewritten_pages = sum(
                s.check(i, r.pages, rewrites, rec.offset)
                for i, (s, r) in enumerate(zip(spans, header.regions)))
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
        spans[rec.region].add(rec.first, rec.count, rec.offset)
        start, length = rec.first * reg.page_size, rec.count * reg.page_size
        if rec.type == REC_ZERO:
            if rec.data_crc:
                raise ImageError("corrupt", "zero-page record with a data checksum", rec.offset)
            result.zero_pages += rec.count
            sink.zero(rec.region, start, length)
            continue
        if sink.wants(rec.region):
            got, data_crc = sink.fill(f, rec.region, start, length)
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


def _check_end(rec: Record, chain: int, result: VerifyResult) -> None:
    if rec.region != END_REGION:
        raise ImageError("corrupt", "malformed end record", rec.offset)
    if rec.data_crc != chain or rec.count != result.records & 0xFFFFFFFF:
        raise ImageError("corrupt", f"end record says {rec.count} records, found "
                                    f"{result.records} (or their order/content changed)",
                         rec.offset)
    if rec.first != result.pages:
        raise ImageError("corrupt", f"end record says {rec.first} pages, found {result.pages}",
                         rec.offset)


def verify(source: str | os.PathLike | BinaryIO) -> VerifyResult:
    """Check every checksum, that every page is there once, and the end record."""
    return scan(source)


@dataclass
class LoadedImage:
    header: ImageHeader
    contents: list[bytearray]  # one per region, the memory as it was at the freeze
    summary: VerifyResult


def available_memory() -> int:
    """Bytes this machine can still hand out without swapping (MemAvailable)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _allocate(header: ImageHeader) -> list[bytearray]:
    need, have = header.memory_bytes, available_memory()
    if need > have:
        raise ValueError(f"the image holds {need / (1 << 30):.1f} GiB of memory, more than "
                         f"the {have / (1 << 30):.1f} GiB available here: extract one region "
                         "to a file instead (`uffdwp image extract`)")
    return [bytearray(r.length) for r in header.regions]


def load(source: str | os.PathLike | BinaryIO) -> LoadedImage:
    """Read a complete image into memory: one bytearray per region. ValueError when it holds
    more memory than this machine has available."""
    f, owned = _open(source)
    try:
        pos = f.tell()
        header = ImageHeader.read_from(f)
        f.seek(pos)
        contents = _allocate(header)
        summary = _scan(f, _BufferSink(contents, header))
    finally:
        if owned:
            f.close()
    return LoadedImage(header, contents, summary)


def restore(source: str | os.PathLike | BinaryIO, addresses: Sequence[int] | None = None
            ) -> VerifyResult:
    """Write the image back into memory: region i at *addresses[i]* (default: the address it
    was taken from), which must be mapped writable for the region's whole length: ValueError
    otherwise, before anything is written. A corrupt image writes nothing."""
    f, owned = _open(source)
    try:
        pos = f.tell()
        header = ImageHeader.read_from(f)
        targets = list(addresses) if addresses is not None else [r.address
                                                                  for r in header.regions]
        if len(targets) != len(header.regions):
            raise ValueError(f"{len(targets)} addresses for {len(header.regions)} regions")
        for i, (addr, r) in enumerate(zip(targets, header.regions)):
            hole = unmapped_part(addr, r.length, writable=True)
            if hole is not None:
                raise ValueError(f"cannot restore region {i} ({r.length} bytes) to {addr:#x}: "
                                 f"{hole:#x} is not mapped writable in this process")
        f.seek(pos)
        # Load into a scratch copy first: a corrupt image must not leave memory half-written.
        contents = _allocate(header)
        summary = _scan(f, _BufferSink(contents, header))
    finally:
        if owned:
            f.close()
    for i, (addr, data) in enumerate(zip(targets, contents)):
        src = int(ffi.cast("uintptr_t", ffi.from_buffer(data)))
        if lib.uffdwp_guarded_copy(addr, src, len(data)) < 0:
            raise OSError(errno.EFAULT, f"region {i} at {addr:#x} was unmapped while it was "
                                        "restored")
    return summary


def extract(source: str | os.PathLike | BinaryIO, region: int, output: str | os.PathLike
            ) -> VerifyResult:
    """Write the memory of *region* as raw bytes to the file *output* (zero pages as holes),
    checking the whole image on the way. The file appears only once the image verified; on
    any error nothing is left behind. Needs no memory for the region itself."""
    output = os.fspath(output)
    f, owned = _open(source)
    try:
        pos = f.tell()
        header = ImageHeader.read_from(f)
        if not 0 <= region < len(header.regions):
            raise ValueError(f"the image has {len(header.regions)} region(s); region {region} "
                             "is not one of them")
        f.seek(pos)
        if os.path.exists(output) and not os.path.isfile(output):
            raise OSError(errno.EEXIST, f"{output} exists and is not a regular file")
        partial = f"{output}.partial-{os.getpid()}-{secrets.token_hex(4)}"
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            os.ftruncate(fd, header.regions[region].length)
            summary = _scan(f, _FileSink(fd, region, bool(header.flags & FLAG_REWRITES)))
            os.fsync(fd)
            os.close(fd)
            fd = -1
            os.replace(partial, output)
        except BaseException:
            if fd >= 0:
                os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(partial)
            raise
    finally:
        if owned:
            f.close()
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
           "available_memory", "build_image", "crc32c", "extract", "iter_records", "load",
           "pack_record", "restore", "scan", "verify"]
