# SPDX-License-Identifier: GPL-2.0-only
"""/proc/<pid>/pagemap entries and the PAGEMAP_SCAN ioctl (6.7) with async write-protect."""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

from . import kernel_facts as kf
from ._ffi import ffi, lib
from .errors import check
from .kernel_facts import PageCategory

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
_BITS = kf.PAGEMAP_BITS


@dataclass(frozen=True)
class PagemapEntry:
    """One 64-bit /proc/pid/pagemap entry (Documentation/admin-guide/mm/pagemap.rst)."""

    raw: int

    present = property(lambda self: bool(self.raw & _BITS["PM_PRESENT"]))
    swapped = property(lambda self: bool(self.raw & _BITS["PM_SWAP"]))
    file = property(lambda self: bool(self.raw & _BITS["PM_FILE"]))
    soft_dirty = property(lambda self: bool(self.raw & _BITS["PM_SOFT_DIRTY"]))
    exclusive = property(lambda self: bool(self.raw & _BITS["PM_MMAP_EXCLUSIVE"]))
    uffd_wp = property(lambda self: bool(self.raw & _BITS["PM_UFFD_WP"]))

    @property
    def pfn(self) -> int:
        """Frame number (0 without CAP_SYS_ADMIN, and for swapped pages)."""
        return self.raw & ((1 << 55) - 1) if self.present else 0


def entries(address: int, count: int = 1, pid: int | str = "self") -> list[PagemapEntry]:
    """Pagemap entries of *count* base pages starting at *address*."""
    fd = os.open(f"/proc/{pid}/pagemap", os.O_RDONLY | os.O_CLOEXEC)
    try:
        data = os.pread(fd, 8 * count, (address // PAGE_SIZE) * 8)
    finally:
        os.close(fd)
    return [PagemapEntry(v) for v in struct.unpack(f"={len(data) // 8}Q", data)]


def entry(address: int, pid: int | str = "self") -> PagemapEntry:
    return entries(address, 1, pid)[0]


def uffd_wp(address: int, length: int, page_size: int = PAGE_SIZE,
            pid: int | str = "self") -> list[bool]:
    """The uffd-wp bit (57) of the first base page of each *page_size* page in the range."""
    step = page_size // PAGE_SIZE
    ents = entries(address, length // PAGE_SIZE, pid)
    return [e.uffd_wp for e in ents[::step]]


@dataclass(frozen=True)
class PageRegion:
    """One run of pages PAGEMAP_SCAN reports: [start, end) with its categories."""

    start: int
    end: int
    categories: PageCategory

    @property
    def length(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class ScanResult:
    regions: list[PageRegion]
    walk_end: int  # where the walk stopped (the end unless max_pages or vec_len cut it)


def scan(start: int, end: int, *, category_mask: int = 0, category_inverted: int = 0,
         category_anyof_mask: int = 0, return_mask: int | None = None, wp_matching: bool = False,
         check_wpasync: bool = False, max_pages: int = 0, vec_len: int = 512,
         pid: int | str = "self") -> ScanResult:
    """PAGEMAP_SCAN over [start, end).

    *wp_matching* write-protects the pages it reports (async WP; the range must be registered in
    WP mode on a userfaultfd with WP_ASYNC). *return_mask* defaults to every category.
    """
    if return_mask is None:
        return_mask = sum(int(c) for c in PageCategory)
    vec = ffi.new("struct page_region[]", max(1, vec_len))
    flags = (kf.PM_SCAN_WP_MATCHING if wp_matching else 0) | (
        kf.PM_SCAN_CHECK_WPASYNC if check_wpasync else 0)
    arg = ffi.new("struct pm_scan_arg *", {
        "size": ffi.sizeof("struct pm_scan_arg"), "flags": flags, "start": start, "end": end,
        "vec": int(ffi.cast("uintptr_t", vec)), "vec_len": vec_len, "max_pages": max_pages,
        "category_inverted": category_inverted, "category_mask": category_mask,
        "category_anyof_mask": category_anyof_mask, "return_mask": return_mask,
    })
    fd = os.open(f"/proc/{pid}/pagemap", os.O_RDONLY | os.O_CLOEXEC)
    try:
        n = check(lib.uffdwp_ioctl(fd, kf.IOCTLS["PAGEMAP_SCAN"].request, arg), "PAGEMAP_SCAN")
    finally:
        os.close(fd)
    regions = [PageRegion(vec[i].start, vec[i].end, PageCategory(vec[i].categories))
               for i in range(n)]
    return ScanResult(regions, arg.walk_end)


def written_pages(start: int, end: int, *, reprotect: bool = False,
                  page_size: int = PAGE_SIZE) -> list[int]:
    """Addresses of the *page_size* pages written since they were last protected (async WP).
    With *reprotect*, protect them again in the same walk (PM_SCAN_WP_MATCHING)."""
    pages: list[int] = []
    addr = start
    while addr < end:
        result = scan(addr, end, category_mask=PageCategory.WRITTEN,
                      return_mask=PageCategory.WRITTEN, wp_matching=reprotect,
                      check_wpasync=reprotect)
        for region in result.regions:
            pages.extend(range(region.start, region.end, page_size))
        if result.walk_end <= addr:
            break
        addr = result.walk_end
    return pages


__all__ = ["PageRegion", "PagemapEntry", "ScanResult", "entries", "entry", "scan",
           "uffd_wp", "written_pages"]
