# SPDX-License-Identifier: GPL-2.0-only
"""Kernel facts about userfaultfd: the one table uffdwp consults.

Every number the binding puts into a syscall, and every "which mainline version brought this",
lives here, each with its source. Nothing in uffdwp gates behaviour on version strings: versions
are for reports; what the running kernel negotiates decides.

Sources cited below:
  UAPI   include/uapi/linux/userfaultfd.h (mainline; Debian 12's copy stops at bit 12)
  FSAPI  include/uapi/linux/fs.h (PAGEMAP_SCAN, 6.7)
  MAN    man-pages userfaultfd.2, ioctl_userfaultfd.2, UFFDIO_*.2const, ioctl_pagemap_scan.2
  PMDOC  Documentation/admin-guide/mm/pagemap.rst
  UFDOC  Documentation/admin-guide/mm/userfaultfd.rst
  THPDOC Documentation/admin-guide/mm/transhuge.rst
  SELF   tools/testing/selftests/mm/uffd-unit-tests.c
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntFlag


@dataclass(frozen=True)
class Fact:
    name: str
    value: int
    since: str  # first mainline release that has it
    source: str
    note: str = ""


# --- UFFDIO_API .features ----------------------------------------------------------------------
FEATURE_FACTS: tuple[Fact, ...] = (
    Fact("PAGEFAULT_FLAG_WP", 1 << 0, "5.7", "UAPI; MAN UFFDIO_API.2const",
         "WP ioctls arrived in 5.7; the man page says 5.10 for the bit: probe, do not gate"),
    Fact("EVENT_FORK", 1 << 1, "4.11", "UAPI"),
    Fact("EVENT_REMAP", 1 << 2, "4.11", "UAPI"),
    Fact("EVENT_REMOVE", 1 << 3, "4.11", "UAPI"),
    Fact("MISSING_HUGETLBFS", 1 << 4, "4.11", "UAPI"),
    Fact("MISSING_SHMEM", 1 << 5, "4.11", "UAPI"),
    Fact("EVENT_UNMAP", 1 << 6, "4.11", "UAPI"),
    Fact("SIGBUS", 1 << 7, "4.14", "UAPI"),
    Fact("THREAD_ID", 1 << 8, "4.14", "UAPI"),
    Fact("MINOR_HUGETLBFS", 1 << 9, "5.13", "UAPI"),
    Fact("MINOR_SHMEM", 1 << 10, "5.14", "UAPI"),
    Fact("EXACT_ADDRESS", 1 << 11, "5.18", "UAPI"),
    Fact("WP_HUGETLBFS_SHMEM", 1 << 12, "5.19", "UAPI"),
    Fact("WP_UNPOPULATED", 1 << 13, "6.4", "UAPI (newer than Debian 12's header)"),
    Fact("POISON", 1 << 14, "6.6", "UAPI (newer than Debian 12's header)"),
    Fact("WP_ASYNC", 1 << 15, "6.7", "UAPI (newer than Debian 12's header)"),
    Fact("MOVE", 1 << 16, "6.8", "UAPI (newer than Debian 12's header)"),
)


class Feature(IntFlag):
    """UFFD_FEATURE_* bits, as negotiated by UFFDIO_API."""

    PAGEFAULT_FLAG_WP = 1 << 0
    EVENT_FORK = 1 << 1
    EVENT_REMAP = 1 << 2
    EVENT_REMOVE = 1 << 3
    MISSING_HUGETLBFS = 1 << 4
    MISSING_SHMEM = 1 << 5
    EVENT_UNMAP = 1 << 6
    SIGBUS = 1 << 7
    THREAD_ID = 1 << 8
    MINOR_HUGETLBFS = 1 << 9
    MINOR_SHMEM = 1 << 10
    EXACT_ADDRESS = 1 << 11
    WP_HUGETLBFS_SHMEM = 1 << 12
    WP_UNPOPULATED = 1 << 13
    POISON = 1 << 14
    WP_ASYNC = 1 << 15
    MOVE = 1 << 16


# --- ioctls ------------------------------------------------------------------------------------
UFFDIO = 0xAA  # ioctl type of userfaultfd (UAPI)
UFFD_API = 0xAA  # the only .api value the kernel accepts (UAPI)
_IOC_NONE, _IOC_WRITE, _IOC_READ = 0, 1, 2


def ioc(direction: int, type_: int, nr: int, size: int) -> int:
    """The asm-generic _IOC encoding (x86, arm64, riscv, s390 share it)."""
    return (direction << 30) | (size << 16) | (type_ << 8) | nr


@dataclass(frozen=True)
class IoctlFact:
    name: str
    nr: int
    direction: int
    struct: str  # argument struct (its size comes from the compiled binding)
    size: int  # sizeof(struct) on 64-bit Linux
    since: str
    source: str

    @property
    def request(self) -> int:
        return ioc(self.direction, UFFDIO if self.name != "PAGEMAP_SCAN" else ord("f"),
                   self.nr, self.size)

    @property
    def bit(self) -> int:
        """The bit of this ioctl in uffdio_api.ioctls / uffdio_register.ioctls."""
        return 1 << self.nr


_RW = _IOC_READ | _IOC_WRITE
IOCTL_FACTS: tuple[IoctlFact, ...] = (
    IoctlFact("UFFDIO_REGISTER", 0x00, _RW, "uffdio_register", 32, "4.3", "UAPI"),
    IoctlFact("UFFDIO_UNREGISTER", 0x01, _IOC_READ, "uffdio_range", 16, "4.3", "UAPI"),
    IoctlFact("UFFDIO_WAKE", 0x02, _IOC_READ, "uffdio_range", 16, "4.3", "UAPI"),
    IoctlFact("UFFDIO_COPY", 0x03, _RW, "uffdio_copy", 40, "4.3", "UAPI"),
    IoctlFact("UFFDIO_ZEROPAGE", 0x04, _RW, "uffdio_zeropage", 32, "4.3", "UAPI"),
    IoctlFact("UFFDIO_MOVE", 0x05, _RW, "uffdio_move", 40, "6.8", "UAPI; MAN UFFDIO_MOVE.2const"),
    IoctlFact("UFFDIO_WRITEPROTECT", 0x06, _RW, "uffdio_writeprotect", 24, "5.7", "UAPI"),
    IoctlFact("UFFDIO_CONTINUE", 0x07, _RW, "uffdio_continue", 32, "5.13", "UAPI"),
    IoctlFact("UFFDIO_POISON", 0x08, _RW, "uffdio_poison", 32, "6.6", "UAPI"),
    IoctlFact("UFFDIO_API", 0x3F, _RW, "uffdio_api", 24, "4.3", "UAPI"),
    IoctlFact("PAGEMAP_SCAN", 16, _RW, "pm_scan_arg", 96, "6.7", "FSAPI; MAN ioctl_pagemap_scan.2"),
)
IOCTLS = {f.name: f for f in IOCTL_FACTS}

USERFAULTFD_IOC_NEW = ioc(_IOC_NONE, 0xAA, 0x00, 0)  # /dev/userfaultfd, 6.1 (UAPI)


class Ioctl(IntFlag):
    """Bits of uffdio_api.ioctls and uffdio_register.ioctls: 1 << _UFFDIO_nr."""

    REGISTER = 1 << 0x00
    UNREGISTER = 1 << 0x01
    WAKE = 1 << 0x02
    COPY = 1 << 0x03
    ZEROPAGE = 1 << 0x04
    MOVE = 1 << 0x05
    WRITEPROTECT = 1 << 0x06
    CONTINUE = 1 << 0x07
    POISON = 1 << 0x08
    API = 1 << 0x3F


# --- modes and flags ---------------------------------------------------------------------------
class RegisterMode(IntFlag):
    """UFFDIO_REGISTER_MODE_* (UAPI; the release of each in MODE_FACTS)."""

    MISSING = 1 << 0
    WP = 1 << 1
    MINOR = 1 << 2


MODE_FACTS: tuple[Fact, ...] = (
    Fact("UFFDIO_REGISTER_MODE_MISSING", 1 << 0, "4.3", "UAPI"),
    Fact("UFFDIO_REGISTER_MODE_WP", 1 << 1, "5.7", "UAPI"),
    Fact("UFFDIO_REGISTER_MODE_MINOR", 1 << 2, "5.13", "UAPI"),
    Fact("UFFDIO_COPY_MODE_DONTWAKE", 1 << 0, "4.3", "UAPI"),
    Fact("UFFDIO_COPY_MODE_WP", 1 << 1, "5.7", "UAPI"),
    Fact("UFFDIO_ZEROPAGE_MODE_DONTWAKE", 1 << 0, "4.3", "UAPI"),
    Fact("UFFDIO_WRITEPROTECT_MODE_WP", 1 << 0, "5.7", "UAPI"),
    Fact("UFFDIO_WRITEPROTECT_MODE_DONTWAKE", 1 << 1, "5.7", "UAPI"),
    Fact("UFFDIO_CONTINUE_MODE_DONTWAKE", 1 << 0, "5.13", "UAPI"),
    Fact("UFFDIO_CONTINUE_MODE_WP", 1 << 1, "6.4", "UAPI (newer than Debian 12's header)"),
    Fact("UFFDIO_POISON_MODE_DONTWAKE", 1 << 0, "6.6", "UAPI"),
    Fact("UFFDIO_MOVE_MODE_DONTWAKE", 1 << 0, "6.8", "UAPI"),
    Fact("UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES", 1 << 1, "6.8", "UAPI"),
    Fact("UFFD_USER_MODE_ONLY", 1, "5.11", "UAPI; MAN userfaultfd.2"),
    Fact("UFFD_PAGEFAULT_FLAG_WRITE", 1 << 0, "4.3", "UAPI"),
    Fact("UFFD_PAGEFAULT_FLAG_WP", 1 << 1, "5.7", "UAPI"),
    Fact("UFFD_PAGEFAULT_FLAG_MINOR", 1 << 2, "5.13", "UAPI"),
    Fact("UFFD_EVENT_PAGEFAULT", 0x12, "4.3", "UAPI"),
    Fact("UFFD_EVENT_FORK", 0x13, "4.11", "UAPI"),
    Fact("UFFD_EVENT_REMAP", 0x14, "4.11", "UAPI"),
    Fact("UFFD_EVENT_REMOVE", 0x15, "4.11", "UAPI"),
    Fact("UFFD_EVENT_UNMAP", 0x16, "4.11", "UAPI"),
)
MODES = {f.name: f.value for f in MODE_FACTS}
UFFD_USER_MODE_ONLY = MODES["UFFD_USER_MODE_ONLY"]


class FaultFlag(IntFlag):
    """uffd_msg.arg.pagefault.flags (UAPI)."""

    WRITE = 1 << 0
    WP = 1 << 1
    MINOR = 1 << 2


# --- /proc/pid/pagemap and PAGEMAP_SCAN --------------------------------------------------------
PAGEMAP_FACTS: tuple[Fact, ...] = (
    Fact("PM_SOFT_DIRTY", 1 << 55, "3.11", "PMDOC"),
    Fact("PM_MMAP_EXCLUSIVE", 1 << 56, "4.2", "PMDOC"),
    Fact("PM_UFFD_WP", 1 << 57, "5.13", "PMDOC (anon 5.13, shmem/hugetlb 5.19)"),
    Fact("PM_FILE", 1 << 61, "3.5", "PMDOC"),
    Fact("PM_SWAP", 1 << 62, "2.6.25", "PMDOC"),
    Fact("PM_PRESENT", 1 << 63, "2.6.25", "PMDOC"),
)
PAGEMAP_BITS = {f.name: f.value for f in PAGEMAP_FACTS}


class PageCategory(IntFlag):
    """PAGE_IS_* categories of PAGEMAP_SCAN (FSAPI, 6.7)."""

    WPALLOWED = 1 << 0
    WRITTEN = 1 << 1
    FILE = 1 << 2
    PRESENT = 1 << 3
    SWAPPED = 1 << 4
    PFNZERO = 1 << 5
    HUGE = 1 << 6
    SOFT_DIRTY = 1 << 7  # EINVAL on 6.7.x (fixed later)


PM_SCAN_WP_MATCHING = 1 << 0  # FSAPI
PM_SCAN_CHECK_WPASYNC = 1 << 1  # FSAPI

# --- access and interfaces ---------------------------------------------------------------------
ACCESS_FACTS: tuple[Fact, ...] = (
    Fact("vm.unprivileged_userfaultfd", 0, "5.2", "UFDOC",
         "0: only CAP_SYS_PTRACE, or UFFD_USER_MODE_ONLY (5.11+), may create an fd"),
    Fact("/dev/userfaultfd", 0, "6.1", "UFDOC", "USERFAULTFD_IOC_NEW; access by the node's mode"),
    Fact("UFFD_USER_MODE_ONLY", 1, "5.11", "MAN userfaultfd.2"),
    Fact("PAGEMAP_SCAN", 0, "6.7", "MAN ioctl_pagemap_scan.2"),
    Fact("uffd-wp on arm64", 0, "6.10", "arch/arm64 Kconfig HAVE_ARCH_USERFAULTFD_WP"),
)

# --- memory management the suites depend on (no feature bit: probed, never gated) -------------
MM_FACTS: tuple[Fact, ...] = (
    Fact("MADV_COLLAPSE", 25, "6.1", "MAN madvise.2"),
    Fact("mTHP sysfs", 0, "6.8", "THPDOC",
         "/sys/kernel/mm/transparent_hugepage/hugepages-<size>kB/enabled"),
    Fact("split THP zero-page remap", 0, "6.12", "mm/huge_memory.c (__split_unmapped_folio)",
         "zero-filled subpages of a split THP are mapped to the shared zero page"),
)


def fact(name: str) -> Fact:
    """The fact named *name* in any of the tables (KeyError otherwise)."""
    for table in (FEATURE_FACTS, MODE_FACTS, PAGEMAP_FACTS, ACCESS_FACTS, MM_FACTS):
        for f in table:
            if f.name == name:
                return f
    raise KeyError(name)


def feature_fact(name: str) -> Fact:
    for fact in FEATURE_FACTS:
        if fact.name == name:
            return fact
    raise KeyError(name)


def unknown_feature_bits(features: int) -> list[int]:
    """Bit numbers set in *features* that no FEATURE_FACTS entry names."""
    known = sum(f.value for f in FEATURE_FACTS)
    return [n for n in range(64) if features & ~known & (1 << n)]


def feature_names(features: int) -> list[str]:
    """Names of the feature bits set in *features*; unknown bits as BIT(n)."""
    names = [f.name for f in FEATURE_FACTS if features & f.value]
    return names + [f"BIT({n})" for n in unknown_feature_bits(features)]


def ioctl_names(ioctls: int) -> list[str]:
    names = [f.name.removeprefix("UFFDIO_") for f in IOCTL_FACTS
             if f.name != "PAGEMAP_SCAN" and ioctls & f.bit]
    known = sum(f.bit for f in IOCTL_FACTS if f.name != "PAGEMAP_SCAN")
    names += [f"BIT({n})" for n in range(64) if ioctls & ~known & (1 << n)]
    return names
