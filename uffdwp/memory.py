# SPDX-License-Identifier: GPL-2.0-only
"""The five memory types the kernel's own uffd tests use, mapped for one test or snapshot.

anon             private anonymous memory
shmem            a memfd mapped shared
shmem-private    a memfd mapped private (CoW over the page cache)
hugetlb          a hugetlb memfd mapped shared
hugetlb-private  private anonymous hugetlb memory
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from ._ffi import ffi, lib
from .errors import MemoryUnavailableError

MEMORY_TYPES: tuple[str, ...] = ("anon", "shmem", "shmem-private", "hugetlb", "hugetlb-private")

# Linux (asm-generic and x86) values; Python's mmap module lacks some of them.
MAP_SHARED = 0x01
MAP_PRIVATE = 0x02
MAP_FIXED = 0x10
MAP_ANONYMOUS = 0x20
MAP_NORESERVE = 0x4000
MAP_POPULATE = 0x8000
MAP_HUGETLB = 0x40000
MFD_CLOEXEC = 0x1
MFD_HUGETLB = 0x4
PROT_NONE, PROT_READ, PROT_WRITE = 0, 1, 2
MADV_DONTNEED = 4
MADV_REMOVE = 9
MADV_HUGEPAGE = 14
MADV_NOHUGEPAGE = 15
MADV_PAGEOUT = 21  # 5.4
MADV_POPULATE_WRITE = 23  # 5.14
MADV_COLLAPSE = 25  # 6.1
MREMAP_MAYMOVE = 1
MREMAP_FIXED = 2
MAP_FAILED = (1 << 64) - 1

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def _errno_or(result_ptr: Any, what: str) -> int:
    addr = int(ffi.cast("uintptr_t", result_ptr))
    if addr == MAP_FAILED:
        err = ffi.errno
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return addr


def hugepage_size() -> int:
    """The default huge page size in bytes (0 when the kernel has no hugetlbfs)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("Hugepagesize:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def hugepages_free() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("HugePages_Free:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


@dataclass
class Region:
    """A mapping of one memory type. *address*, *length* and *page_size* are in bytes."""

    memtype: str
    address: int
    length: int
    page_size: int
    fd: int = -1  # the memfd behind shmem/hugetlb types, -1 for anonymous memory
    shared: bool = False
    _closed: bool = field(default=False, repr=False)

    @property
    def pages(self) -> int:
        return self.length // self.page_size

    @property
    def is_hugetlb(self) -> bool:
        return self.memtype.startswith("hugetlb")

    @property
    def is_file(self) -> bool:
        return self.fd >= 0

    def page(self, index: int) -> int:
        """Address of page *index* (negative counts from the end)."""
        if index < 0:
            index += self.pages
        if not 0 <= index < self.pages:
            raise IndexError(f"page {index} outside {self.pages} pages")
        return self.address + index * self.page_size

    def view(self) -> memoryview:
        """A writable view of the whole region. A Python write through it to a write-protected
        page holds the GIL while it faults: resolve such faults natively (uffdwp.native)."""
        self._check_open()
        return memoryview(ffi.buffer(ffi.cast("char *", self.address), self.length))

    def read(self, offset: int = 0, length: int | None = None) -> bytes:
        self._check_open()
        length = self.length - offset if length is None else length
        if offset < 0 or length < 0 or offset + length > self.length:
            raise ValueError(f"bytes {offset}+{length} outside the region of {self.length}")
        return bytes(ffi.buffer(ffi.cast("char *", self.address + offset), length))

    def fill(self, byte: int) -> None:
        self._check_open()
        ffi.memmove(ffi.cast("char *", self.address), bytes([byte]) * self.length, self.length)

    def _check_open(self) -> None:
        # Touching an unmapped region from Python would take the interpreter down.
        if self._closed:
            raise ValueError(f"{self.memtype} region {self.address:#x} is closed (unmapped)")

    def madvise(self, advice: int, offset: int = 0, length: int | None = None) -> None:
        self._check_open()
        length = self.length - offset if length is None else length
        if lib.madvise(ffi.cast("void *", self.address + offset), length, advice) != 0:
            err = ffi.errno
            raise OSError(err, f"madvise({advice}): {os.strerror(err)}")

    def mprotect(self, prot: int, offset: int = 0, length: int | None = None) -> None:
        self._check_open()
        length = self.length - offset if length is None else length
        if lib.mprotect(ffi.cast("void *", self.address + offset), length, prot) != 0:
            err = ffi.errno
            raise OSError(err, f"mprotect({prot}): {os.strerror(err)}")

    def alias(self) -> int:
        """Map the same file again, shared, and return its address: the second view that minor
        faults and UFFDIO_CONTINUE need. Unmap with unmap_alias()."""
        if self.fd < 0:
            raise ValueError(f"{self.memtype} has no file to map twice")
        ptr = lib.mmap(ffi.NULL, self.length, PROT_READ | PROT_WRITE, MAP_SHARED, self.fd, 0)
        return _errno_or(ptr, "mmap(alias)")

    def unmap_alias(self, address: int) -> None:
        lib.munmap(ffi.cast("void *", address), self.length)

    def remap(self, new_address: int | None = None) -> int:
        """mremap the region (to *new_address* if given) and follow it; returns the address."""
        self._check_open()
        flags = MREMAP_MAYMOVE | (MREMAP_FIXED if new_address else 0)
        args = [ffi.cast("void *", self.address), ffi.cast("size_t", self.length),
                ffi.cast("size_t", self.length), ffi.cast("int", flags)]
        if new_address:
            args.append(ffi.cast("void *", new_address))
        self.address = _errno_or(lib.mremap(*args), "mremap")
        return self.address

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        lib.munmap(ffi.cast("void *", self.address), self.length)
        if self.fd >= 0:
            os.close(self.fd)

    def __enter__(self) -> Region:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class Mapping:
    """One line of /proc/PID/maps."""

    start: int
    end: int
    perms: str
    device: str
    inode: int
    path: str

    @property
    def writable(self) -> bool:
        return self.perms[1] == "w"

    @property
    def shared(self) -> bool:
        return self.perms[3] == "s"


def mappings(pid: int | str = "self") -> list[Mapping]:
    """The mappings of process *pid*, in address order (OSError if they cannot be read)."""
    out = []
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            fields = line.split(maxsplit=5)
            lo, hi = fields[0].split("-")
            out.append(Mapping(int(lo, 16), int(hi, 16), fields[1], fields[3], int(fields[4]),
                               fields[5].strip() if len(fields) > 5 else ""))
    return out


def unmapped_part(address: int, length: int, *, writable: bool = False,
                  maps: list[Mapping] | None = None) -> int | None:
    """The first address of [address, address+length) that is not mapped (or not writable,
    with *writable*), or None when all of it is."""
    at, end = address, address + length
    for m in maps if maps is not None else mappings():
        if m.end <= at:
            continue
        if m.start > at or (writable and not m.writable):
            return at
        at = m.end
        if at >= end:
            return None
    return at if at < end else None


THP_SIZE = 2 << 20  # a PMD on x86-64


def anon_huge_bytes(address: int, length: int) -> int:
    """Bytes of transparent huge pages (AnonHugePages in /proc/self/smaps) in the mappings that
    overlap [address, address+length) — 0 where THP backs none of it."""
    total, inside = 0, False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split(maxsplit=1)[0]
            if "-" in head and not head.endswith(":"):
                lo, hi = (int(x, 16) for x in head.split("-"))
                inside = lo < address + length and address < hi
            elif inside and head == "AnonHugePages:":
                total += int(line.split()[1]) * 1024
    return total


def reserve_address(length: int, align: int) -> int:
    """An address range of *length* aligned to *align*, reserved PROT_NONE (for MAP_FIXED)."""
    ptr = lib.mmap(ffi.NULL, length + align, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0)
    base = _errno_or(ptr, "mmap(reserve)")
    aligned = (base + align - 1) & ~(align - 1)
    if aligned > base:
        lib.munmap(ffi.cast("void *", base), aligned - base)
    tail = base + length + align - (aligned + length)
    if tail:
        lib.munmap(ffi.cast("void *", aligned + length), tail)
    return aligned


def allocate(memtype: str, length: int | None = None, *, pages: int | None = None,
             align: int | None = None) -> Region:
    """Map *length* bytes (or *pages* pages of the type's page size) of *memtype*.

    Raises MemoryUnavailableError when the type cannot be had here (no huge pages reserved).
    *align* places the region at that alignment (e.g. 2 MiB so THP can back anonymous memory).
    """
    if memtype not in MEMORY_TYPES:
        raise ValueError(f"unknown memory type {memtype!r}; one of {', '.join(MEMORY_TYPES)}")
    hugetlb = memtype.startswith("hugetlb")
    page_size = hugepage_size() if hugetlb else PAGE_SIZE
    if hugetlb and not page_size:
        raise MemoryUnavailableError("this kernel has no hugetlbfs (Hugepagesize missing)")
    if length is None:
        length = (pages or 1) * page_size
    if length % page_size:
        raise ValueError(f"length {length} is not a multiple of the page size {page_size}")
    if hugetlb and hugepages_free() < length // page_size:
        raise MemoryUnavailableError(
            f"{memtype} needs {length // page_size} free huge pages of {page_size >> 10} KiB, "
            f"{hugepages_free()} free: reserve some (sysctl vm.nr_hugepages=N)")

    shared = memtype in ("shmem", "hugetlb")
    fd = -1
    flags = MAP_SHARED if shared else MAP_PRIVATE
    if memtype in ("anon", "hugetlb-private"):
        flags |= MAP_ANONYMOUS | (MAP_HUGETLB if hugetlb else 0)
    else:
        fd = os.memfd_create(f"uffdwp-{memtype}", MFD_CLOEXEC | (MFD_HUGETLB if hugetlb else 0))
        os.ftruncate(fd, length)
    addr_hint = ffi.NULL
    if align:
        flags |= MAP_FIXED
        addr_hint = ffi.cast("void *", reserve_address(length, align))
    ptr = lib.mmap(addr_hint, length, PROT_READ | PROT_WRITE, flags, fd, 0)
    try:
        address = _errno_or(ptr, f"mmap({memtype})")
    except OSError as exc:
        if fd >= 0:
            os.close(fd)
        if hugetlb:
            raise MemoryUnavailableError(f"{memtype}: {exc}: reserve huge pages "
                                         "(sysctl vm.nr_hugepages=N)") from exc
        raise
    return Region(memtype, address, length, page_size, fd, shared)


__all__ = ["MEMORY_TYPES", "PAGE_SIZE", "THP_SIZE", "Mapping", "Region", "allocate",
           "anon_huge_bytes", "hugepage_size", "hugepages_free", "mappings", "unmapped_part"]
