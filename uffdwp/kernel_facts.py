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
    """UFFDIO_REGISTER_MODE_* (UAPI). MISSING 4.3, WP 5.7, MINOR 5.13."""

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


# --- fixed UFFD-WP bugs user space can reproduce -----------------------------------------------
# Sources of the fix entries:
#   LORE     the patch on lore.kernel.org (message id) / mainline merge shortlog
#   STABLE   the stable review posting "[PATCH x.y n/m] <title>" on stable@vger.kernel.org, whose
#            series names the release ("stable review cycle for the x.y.z release")
#   FAILED   gregkh's "FAILED: patch ... failed to apply to x.y-stable tree"
#   OSV      the bug's CVE record on osv.dev (affected ranges per series)
#   DEBCL-v  Debian's linux package changelog (/usr/share/doc/linux-image-*/changelog.gz), which
#            lists every upstream stable release it imports with its shortlog
#            ("ChangeLog-6.1.191"): 5.10.223-1 (bullseye), 6.1.192-3 (bookworm-security),
#            6.12.117-1 (trixie). A fix absent from a series' newest changelog was never in it.
@dataclass(frozen=True)
class StableFix:
    """A known bug's fix in one stable series."""

    series: str  # "6.1"
    release: str | None  # first release of the series with the fix; None: never fixed there
    source: str


@dataclass(frozen=True)
class KnownBug:
    key: str
    title: str
    commit: str  # the mainline fix (12 hex digits)
    fixed_in: str  # the first mainline release with the fix
    source: str
    stable: tuple[StableFix, ...] = ()

    @property
    def backports(self) -> tuple[str, ...]:
        """The stable releases that carry the fix, newest series first."""
        return tuple(f.release for f in self.stable if f.release)

    def stable_fix(self, series: str) -> StableFix | None:
        return next((f for f in self.stable if f.series == series), None)

    def describe(self) -> str:
        ports = f" (backported to {', '.join(self.backports)})" if self.backports else ""
        return f"known bug {self.commit}, fixed in {self.fixed_in}{ports}: {self.title}"


KNOWN_BUGS: dict[str, KnownBug] = {b.key: b for b in (
    KnownBug("wp-race-corruption", "memory corruption due to writeprotect", "6ce64428d620",
             "5.12", "LORE (Nadav Amit, 2021-03-12; merged for 5.12-rc3)",
             (StableFix("5.10", "5.10.24", "DEBCL-5.10.223: ChangeLog-5.10.24"),)),
    KnownBug("swp-uffd-wp-bit", "pte_same_as_swp() not removing the uffd-wp bit", "099dd6878b9b",
             "5.13", "LORE (Peter Xu); STABLE posting 'commit 099dd6878b9b upstream'",
             (StableFix("5.10", "5.10.46", "DEBCL-5.10.223: ChangeLog-5.10.46"),)),
    KnownBug("unuse-pte-bits", "swapoff (unuse_pte) drops the uffd-wp bit of swapped-out ptes",
             "14a762dd1977", "5.19",
             "LORE 20220519125030.21486-3-linmiaohe@huawei.com (mm/swapfile: fix lost swap bits "
             "in unuse_pte()); torvalds/linux master push 2022-05-27 (mm-stable-2022-05-27)",
             (StableFix("5.10", None, "DEBCL-5.10.223: absent"),)),
    KnownBug("fork-special-cases", "uffd-wp special cases for fork()", "8f34f1eac382", "5.14",
             "LORE (Peter Xu, 2021-06)",
             (StableFix("5.10", "5.10.53", "DEBCL-5.10.223: ChangeLog-5.10.53"),)),
    KnownBug("unregister-reset", "reset write protection when unregistering with wp-mode",
             "f369b07c8614", "6.0", "LORE (Peter Xu, 2022-08-11; mm-hotfixes for 6.0)",
             (StableFix("5.10", None, "DEBCL-5.10.223: absent"),)),
    KnownBug("shmem-writenotify", "enable writenotify while uffd-wp is enabled for a VMA",
             "51d3d5eb74ff", "6.2", "LORE (David Hildenbrand, 2022-12)",
             (StableFix("6.1", "6.1.8", "DEBCL-6.1.192: ChangeLog-6.1.8"),)),
    KnownBug("fork-pte-marker", "pte marker when fork() without fork event", "49d6d7fb6313",
             "6.2", "LORE (Peter Xu, 2023-02)",
             (StableFix("6.1", "6.1.11", "DEBCL-6.1.192: ChangeLog-6.1.11"),)),
    KnownBug("hugetlb-cow-wp", "hugetlb wr-protection for the CoW optimization path",
             "60d5b473d61b", "6.3",
             "LORE 20230321191840.1897940-1-peterx@redhat.com; Linux 6.3-rc6 shortlog",
             (StableFix("6.2", "6.2.11", "STABLE [PATCH 6.2 153/173], 6.2.11 review"),
              StableFix("6.1", "6.1.24", "DEBCL-6.1.192: ChangeLog-6.1.24"))),
    KnownBug("thp-migration", "uffd-wp for THP migration entries", "24bf08c4376b", "6.3",
             "LORE (David Stevens, 2023-04)",
             (StableFix("6.1", "6.1.26", "DEBCL-6.1.192: ChangeLog-6.1.26"),)),
    KnownBug("hugetlb-fork", "hugetlb uffd-wp during fork", "5a2f8d22ace4", "6.4",
             "LORE 20230417195317.898696-2-peterx@redhat.com",
             (StableFix("6.2", None, "FAILED to apply to 6.2-stable"),
              StableFix("6.1", None, "FAILED to apply to 6.1-stable; DEBCL-6.1.192: absent"))),
    KnownBug("hugetlb-unshare", "uffd-wp bit lost on hugetlb unshare", "0f230bc24b6e", "6.4",
             "LORE 20230417195317.898696-3-peterx@redhat.com",
             (StableFix("6.1", None, "DEBCL-6.1.192: absent"),)),
    KnownBug("close-reset", "reset ptes on close() for wr-protected ones (CVE-2024-36881)",
             "c88033efe9a3", "6.9", "LORE 20240422133311.2987675-1-peterx@redhat.com",
             (StableFix("6.8", "6.8.10", "OSV CVE-2024-36881; STABLE [PATCH 6.8 315/336]"),
              StableFix("6.6", "6.6.31", "OSV CVE-2024-36881; STABLE [PATCH 6.6 283/301]"),
              StableFix("6.1", "6.1.191", "DEBCL-6.1.192: ChangeLog-6.1.191 (after FAILED "
                                          "to apply to 6.1-stable in 2024-05)"))),
    # 6.6.y: no backport found (OSV lists only 6.12.11; no 6.6 stable posting in the index), so
    # a 6.6 kernel failing it reads known-bug, not regression.
    KnownBug("mremap-clear", "clear uffd-wp PTE/PMD state on mremap() (CVE-2025-21696)",
             "0cef0bb836e3", "6.13", "LORE 20250107144755.1871363-2-ryan.roberts@arm.com",
             (StableFix("6.12", "6.12.11", "STABLE [PATCH 6.12 100/122]; OSV CVE-2025-21696; "
                                           "DEBCL-6.12.117: ChangeLog-6.12.11"),
              StableFix("6.1", "6.1.191", "DEBCL-6.1.192: ChangeLog-6.1.191"))),
    KnownBug("mthp-zeropage", "zero-filled mTHP subpage remapped to the shared zero page loses "
             "uffd-wp (and soft-dirty)", "9658d698a8a8", "6.18",
             "LORE 20250930043351.34927-1-lance.yang@linux.dev (mm/rmap: fix soft-dirty and "
             "uffd-wp bit loss when remapping zero-filled mTHP subpage to shared zeropage)",
             (StableFix("6.17", "6.17.4", "STABLE [PATCH 6.17 316/371], 6.17.4 review"),
              StableFix("6.12", "6.12.54", "DEBCL-6.12.117: ChangeLog-6.12.54"))),
)}


# How each known bug's fix is named where a distribution lists the commits it took: the upstream
# commit subject (as in the stable queues and Debian's package changelogs), and its CVE where one
# was assigned. Sources: the stable mailing list's patch mails; Debian's linux changelog
# (6.1.192-1, bookworm-security) for the CVE ids.
FIX_NAMES: dict[str, tuple[str, ...]] = {
    "wp-race-corruption": ("mm/userfaultfd: fix memory corruption due to writeprotect",),
    "swp-uffd-wp-bit": ("mm/swap: fix pte_same_as_swp() not removing uffd-wp bit when compare",),
    "unuse-pte-bits": ("mm/swapfile: fix lost swap bits in unuse_pte()",),
    "fork-special-cases": ("mm/userfaultfd: fix uffd-wp special cases for fork()",),
    "unregister-reset": ("mm/uffd: reset write protection when unregister with wp-mode",),
    "shmem-writenotify": (
        "mm/userfaultfd: enable writenotify while userfaultfd-wp is enabled for a VMA",),
    "fork-pte-marker": ("mm/uffd: fix pte marker when fork() without fork event",),
    "hugetlb-cow-wp": ("mm/hugetlb: fix uffd wr-protection for CoW optimization path",),
    "thp-migration": ("mm/userfaultfd: fix uffd-wp handling for THP migration entries",),
    "hugetlb-fork": ("mm/hugetlb: fix uffd-wp during fork()",),
    "hugetlb-unshare": ("mm/hugetlb: fix uffd-wp bit lost when unsharing happens",),
    "close-reset": ("mm/userfaultfd: reset ptes when close() for wr-protected ones",
                    "CVE-2024-36881"),
    "mremap-clear": ("mm: clear uffd-wp PTE/PMD state on mremap()", "CVE-2025-21696"),
    "mthp-zeropage": ("mm/rmap: fix soft-dirty and uffd-wp bit loss when remapping zero-filled "
                      "mTHP subpage to shared zeropage",),
}


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
