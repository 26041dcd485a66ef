# SPDX-License-Identifier: GPL-2.0-only
"""Regression tests for fixed UFFD-WP kernel bugs that user space can reproduce.

Each test declares ``bug=<key>`` (uffdwp.known_bugs.KNOWN_BUGS, where its fix commit and
releases are stated: the report shows them; docstrings name the key), and
the one check that shows the bug (``with ctx.bug_check():``): a kernel older than the fix in its
own series may fail that check, and the report then names the known bug. Everything before the
check is a precondition: its failure is an error, or a skip that names the environment.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from uffdwp import hostsetup, native, pagemap
from uffdwp import kernel_facts as kf
from uffdwp.kernel_facts import Feature
from uffdwp.memory import MADV_DONTNEED, MADV_PAGEOUT, PAGE_SIZE, THP_SIZE, Region, reserve_address
from uffdwp.runner.precondition import require

from .capabilities import MTHP, NUMA, ODIRECT, SWAP, THP, numa_nodes
from .observe import page_wp, region_wp, wp_pages
from .support import (
    SAMPLE,
    assert_blocks,
    assert_blocks_hp,
    assert_writes_freely,
    child,
    child_write,
    fill_pattern,
    load,
    pattern,
    require_pageout,
    run_forked,
    thp_region,
    vma_field,
)
from .uffdtest import (
    FORK_EVENT,
    MEM_ALL,
    MEM_ANON,
    MEM_HUGETLB,
    MEM_SWAPPABLE,
    requires,
    stress,
    uffd_test,
)

WRITES = stress(6000, minimum=500)


# --- wp-race-corruption: memory corruption due to writeprotect ---
@uffd_test(mem=MEM_ALL, bug="wp-race-corruption", timeout=90)
def test_wp_race_no_lost_writes(ctx, memtype):
    """wp-race-corruption: native writers race UFFDIO_WRITEPROTECT protect/unprotect cycles on
    pages that fork() left copy-on-write; every page must end with the last value written to it,
    at both offsets the two writers use (no lost writes, no corruption). An attempt whose
    writers finished before the race window was exercised (a slow or emulated CPU) tested
    nothing: it is tried again, then skipped saying so."""
    ctx.retry(_wp_race_once, tries=3, budget_s=70)


def _wp_race_once(ctx) -> None:
    pages = 4 if ctx.mem_type.hugetlb else 16
    region = ctx.region(pages)
    region.fill(0)
    uffd = ctx.uffd()
    ctx.register(uffd, region)
    with child(lambda: time.sleep(2) or 0):  # parent's private pages are now copy-on-write
        handler = ctx.handler(uffd, region, native.Policy.UNPROTECT)
        writers = [ctx.writer(region, offset_in_page=off, max_writes=WRITES, rate=20000,
                              value_base=base)
                   for off, base in ((0, 1 << 40), (64, 2 << 40))]
        deadline = time.monotonic() + 20
        cycles = 0
        while not all(w.wait(0) for w in writers) and time.monotonic() < deadline:
            uffd.writeprotect(region.address, region.length)
            time.sleep(0.0005)
            cycles += 1
            if cycles % 2:
                uffd.unprotect(region.address, region.length)
        uffd.unprotect(region.address, region.length)
        assert all(w.wait(10) for w in writers), "writers did not finish"
    assert handler.stats.errors == 0, f"handler errors: {handler.stats}"
    for w in writers:
        last: dict[int, int] = {}
        records = w.records()
        assert len(records) == WRITES
        for r in records:
            last[r.address] = r.value
        with ctx.bug_check():  # a lost write is the bug, however few cycles raced it
            for addr, value in last.items():
                assert load(addr) == value, \
                    f"lost write at {addr:#x}: {load(addr):#x} != {value:#x}"
    require(cycles > 5 and handler.stats.wp_faults > 0, "race window not exercised",
            f"{cycles} protect cycles, {handler.stats.wp_faults} WP faults before the writers "
            "finished; needs > 5 and > 0")


# --- swp-uffd-wp-bit: pte_same_as_swp() not removing the uffd-wp bit ---
def _swap_error(res: subprocess.CompletedProcess, path: Path) -> str:
    """A command's error without the swap file's random name (one reason, one group)."""
    return res.stderr.strip().replace(str(path), "<swap file>")


@contextlib.contextmanager
def own_swap_file(mb: int = 32):
    """A swap file of our own with the highest priority, swapped off (synchronously) at the end.
    It lives on the scratch disk: swapon refuses files on tmpfs (a guest's /run and root).
    It is swapped on twice: the swapoff between drains the per-CPU swap slot caches (kernels
    before 6.14 keep up to 64 pre-allocated slots per CPU, taken from whichever device was
    first), so the next swap-out takes its slots by priority, from this file."""
    scratch = hostsetup.SCRATCH_DIR
    fd, name = tempfile.mkstemp(prefix="regr-swap-", dir=scratch)
    os.close(fd)
    path = Path(name)
    try:
        swapon = ["swapon", "-p", "32767", str(path)]
        for step in (["fallocate", "-l", f"{mb}M", str(path)], ["chmod", "600", str(path)],
                     ["mkswap", str(path)], swapon, ["swapoff", str(path)], swapon):
            res = subprocess.run(step, capture_output=True, text=True, timeout=30, check=False)
            if res.returncode:
                # Not a declaration: a second swap file of the test's own, set up by trying (the
                # shared one is the SWAP capability); the step that failed names why.
                pytest.skip(f"cannot set up a swap file in {scratch} ({step[0]}: "
                            f"{_swap_error(res, path)})")
        yield path
    finally:  # (an error from swapoff here: it was never on, or the test swapped it off)
        subprocess.run(["swapoff", str(path)], capture_output=True, timeout=60, check=False)
        path.unlink(missing_ok=True)


@uffd_test(mem=MEM_SWAPPABLE, bug=("swp-uffd-wp-bit", "unuse-pte-bits"), timeout=60, needs=SWAP)
def test_swapoff_keeps_wp_bit_and_data(ctx, memtype):
    """Protected pages swapped out to a swap file, then that file is swapped off: swapoff
    succeeds (swp-uffd-wp-bit: unuse_pte() compares swap ptes ignoring the uffd-wp bit), and
    the pages come back protected (unuse-pte-bits: unuse_pte() carries the bit over), with
    their data; writes still fault."""
    region = ctx.region(4)
    fill_pattern(region)
    uffd = ctx.uffd()
    ctx.register(uffd, region)
    uffd.writeprotect(region.address, region.length)
    with own_swap_file() as path:
        require_pageout(region)
        with ctx.bug_check("swp-uffd-wp-bit"):  # unuse_pte() never matched the marked entries
            try:
                res = subprocess.run(["swapoff", str(path)], capture_output=True, text=True,
                                     timeout=30, check=False)
            except subprocess.TimeoutExpired:
                raise AssertionError("swapoff hung on protected swap entries") from None
            assert res.returncode == 0, f"swapoff failed: {_swap_error(res, path)}"
    swaps = " ".join(Path("/proc/swaps").read_text().split()[5:])
    require(not vma_field(region.address, "Swap"), "pages not swapped to the test's own file",
            f"the pages went to another swap device than the test's own ({swaps})")
    if not ctx.mem_type.shared:  # private pages are mapped back by unuse_pte()
        assert all(e.present for e in pagemap.entries(region.address, region.pages))
    for i in range(region.pages):
        assert load(region.page(i)) == pattern(i)
    with ctx.bug_check("unuse-pte-bits"):
        assert all(region_wp(region)), "uffd-wp bit lost by swapoff"
        assert_blocks(ctx, uffd, region.page(2) + 8, 0x99)


# --- fork-special-cases: uffd-wp special cases for fork() ---
@FORK_EVENT
@uffd_test(mem=MEM_SWAPPABLE, bug="fork-special-cases", needs=SWAP)
def test_fork_special_cases(ctx, memtype, with_event):
    """fork-special-cases: fork() of a protected present page and a protected swapped-out page.
    Without EVENT_FORK the child's copies carry no bit 57 and it writes both freely; with it both
    keep bit 57 and the child's write faults on its new userfaultfd. The child never hangs; the
    parent keeps its protection."""
    region = ctx.region(2)
    fill_pattern(region)
    uffd = ctx.uffd(Feature.EVENT_FORK if with_event else 0)
    ctx.register(uffd, region)
    uffd.writeprotect(region.address, region.length)
    require_pageout(region, PAGE_SIZE, PAGE_SIZE)  # page 1 swapped, page 0 present

    def run() -> int:
        bits = wp_pages(region.address, region.length, in_child=True)
        if bits != [with_event] * 2:
            return 10
        for i in range(2):
            native.store_u64(region.page(i) + 8, 0xF00 + i)
        return 0

    with ctx.bug_check():
        run_forked(ctx, uffd, region, run, with_event, faults=(0, 1), exact=True)
        assert region_wp(region) == [True, True], "the parent lost its protection"
    for i in range(2):
        assert load(region.page(i)) == pattern(i)
        assert load(region.page(i) + 8) == (0xF00 + i if ctx.mem_type.shared else 0)


# --- fork-pte-marker: pte marker when fork() without fork event ---
def _marker_region(ctx, memtype, extra=0):
    """A 2-page protected region whose page 0 is a uffd-wp pte marker (no page)."""
    uffd, region = ctx.wp_region(2, extra=extra)
    if ctx.mem_type.anonymous:  # WP_UNPOPULATED: protecting an empty anon pte installs a marker
        region.madvise(MADV_DONTNEED, 0, region.page_size)
        uffd.writeprotect(region.page(0), region.page_size)
    else:  # shmem/hugetlb: zapping a protected pte leaves a marker
        region.madvise(MADV_DONTNEED, 0, region.page_size)
    assert not pagemap.entry(region.page(0)).present
    assert region_wp(region) == [True, True]
    return uffd, region


@FORK_EVENT
@uffd_test(mem=MEM_ALL, features=Feature.WP_UNPOPULATED, bug="fork-pte-marker")
def test_fork_pte_marker(ctx, memtype, with_event):
    """fork-pte-marker: fork() of a range holding a uffd-wp pte marker. Without EVENT_FORK the
    child must not inherit the marker (its vma is not registered): no bit 57, its write goes through
    at once. With EVENT_FORK the marker is kept and the child's write faults on the new fd. The
    parent keeps its marker either way. (WP_UNPOPULATED is what puts markers on anon memory.)"""
    uffd, region = _marker_region(ctx, memtype, Feature.EVENT_FORK if with_event else 0)
    addr = region.page(0) + 8
    with ctx.bug_check():
        run_forked(ctx, uffd, region, child_write(addr, 0xAB, expect_wp=with_event), with_event)
        assert region_wp(region) == [True, True], "the parent lost its marker"
        assert_blocks_hp(ctx, uffd, region, 0, 0xCD)


# --- hugetlb-cow-wp: hugetlb wr-protection for the CoW optimization path ---
@uffd_test(mem=MEM_HUGETLB, bug="hugetlb-cow-wp")
def test_hugetlb_wp_unpopulated_then_write(ctx, memtype):
    """hugetlb-cow-wp: a protected, never populated hugetlb page (a pte marker); the first
    access is a write. It must fault WP (the private CoW shortcut used to map it writable), and
    after unprotect the write lands in a zeroed page."""
    uffd, region = ctx.wp_region(2, populate=False)
    assert region_wp(region) == [True, True], "precondition: markers on the unpopulated pages"
    with ctx.bug_check():
        assert_blocks_hp(ctx, uffd, region, 0, 0x1234)
    assert region.read(0, 8) == bytes(8)
    assert region.read(region.page_size - 8, 8) == bytes(8)
    with ctx.bug_check():
        assert_blocks_hp(ctx, uffd, region, 1, 0x5678)


# --- thp-migration: uffd-wp for THP migration entries ---
def _move_pages(address: int, count: int, node: int) -> list[int]:
    """move_pages(2) of *count* base pages at *address* to *node*; returns per-page status."""
    libc = ctypes.CDLL(None, use_errno=True)
    pages = (ctypes.c_void_p * count)(*[address + i * PAGE_SIZE for i in range(count)])
    nodes = (ctypes.c_int * count)(*[node] * count)
    status = (ctypes.c_int * count)()
    nr_move_pages = 279  # x86_64
    if libc.syscall(nr_move_pages, 0, count, pages, nodes, status, 2) < 0:  # MPOL_MF_MOVE
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return list(status)


@uffd_test(mem=MEM_ANON, bug="thp-migration", needs=(NUMA.because(
    "a THP cannot be migrated here (set_pmd_migration_entry is only reached by migration; "
    "MADV_PAGEOUT takes the swap path, covered in test_mm.py::test_thp_pageout_keeps_protection)"),
    THP))
def test_thp_migration_keeps_wp(ctx, memtype):
    """thp-migration: migrating a protected PMD-mapped THP goes through a PMD migration entry,
    which must carry the uffd-wp bit: after the move every subpage has bit 57 and writes fault."""
    nodes = numa_nodes()
    region = thp_region(ctx)
    uffd = ctx.uffd()
    ctx.register(uffd, region)
    uffd.writeprotect(region.address, region.length)
    status = _move_pages(region.address, 1, nodes[1])
    if status[0] < 0:
        status = _move_pages(region.address, 1, nodes[0])
    with ctx.bug_check():
        assert all(region_wp(region)), "uffd-wp bit lost by THP migration"
        for i in SAMPLE:
            assert_blocks(ctx, uffd, region.page(i) + 8, 0x900 + i)
    for i in SAMPLE:
        assert load(region.page(i)) == pattern(i)


# --- hugetlb-fork: hugetlb uffd-wp during fork() ---
@FORK_EVENT
@uffd_test(mem=MEM_HUGETLB, bug="hugetlb-fork")
def test_hugetlb_fork(ctx, memtype, with_event):
    """hugetlb-fork: fork() of protected hugetlb memory, a present page and a marker. The
    child's copy keeps bit 57 exactly when EVENT_FORK registers it; without the event the child
    writes the present page freely and never hangs; with it the write faults on the child's fd."""
    uffd, region = ctx.wp_region(2, extra=Feature.EVENT_FORK if with_event else 0)
    region.madvise(MADV_DONTNEED, region.page_size, region.page_size)  # page 1: a marker
    assert region_wp(region) == [True, True], "precondition: protected page and marker"
    addr = region.page(0) + 8

    def run() -> int:
        present = page_wp(region.page(0), in_child=True)
        marker = page_wp(region.page(1), in_child=True)
        if present != with_event or (with_event and not marker) or (marker and not with_event):
            return 10
        native.store_u64(addr, 0xBB)
        return 0

    with ctx.bug_check():
        run_forked(ctx, uffd, region, run, with_event, timeout=10)
        assert region_wp(region) == [True, True], "the parent lost its protection"
    assert load(addr) == (0xBB if ctx.mem_type.shared else 0x5A5A5A5A5A5A5A5A)
    with ctx.bug_check():
        assert_blocks_hp(ctx, uffd, region, 0, 0xCC)


# --- hugetlb-unshare: uffd-wp bit lost when hugetlb unshare happens ---
@contextlib.contextmanager
def odirect_file():
    """An O_DIRECT file on the scratch disk (tests using it declare needs=ODIRECT)."""
    fd, path = tempfile.mkstemp(prefix="uffdwp-odirect-", dir=hostsetup.SCRATCH_DIR)
    os.unlink(path)
    try:
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_DIRECT)
        yield fd
    finally:
        os.close(fd)


@uffd_test(mem=("hugetlb-private",), bug="hugetlb-unshare", timeout=30, needs=ODIRECT)
def test_hugetlb_unshare_keeps_wp(ctx, memtype):
    """hugetlb-unshare: a read-only pin (an O_DIRECT write reads the buffer through FOLL_PIN) of
    a private hugetlb page that fork() left shared makes the kernel unshare (copy) it; the copy must
    keep bit 57, and a write must still fault. The O_DIRECT file lives on the scratch disk."""
    uffd, region = ctx.wp_region(1)
    before = pagemap.entries(region.address)[0].pfn
    require(before != 0, "page frame numbers visible", "pagemap shows PFNs to CAP_SYS_ADMIN only")
    with odirect_file() as fd, child(lambda: time.sleep(5) or 0):  # the child keeps it shared
        written = os.write(fd, region.view()[:PAGE_SIZE])
    assert written == PAGE_SIZE
    # The bug is in the copy that unsharing makes: a kernel whose O_DIRECT does not pin the
    # buffer with FOLL_PIN (before 6.4 it took plain references) makes none, and its pass would
    # say nothing about the bug.
    after = pagemap.entries(region.address)[0].pfn
    require(after != before, "the pinned page was unshared",
            f"PFN {before:#x} kept: this kernel's O_DIRECT write did not R/O-pin the buffer")
    with ctx.bug_check():
        assert region_wp(region) == [True], "uffd-wp bit lost when the pinned page was unshared"
        assert_blocks_hp(ctx, uffd, region, 0, 0xDD)
    assert region.read(16, 8) == b"\x5a" * 8


# --- mremap-clear: clear uffd-wp PTE/PMD state on mremap() (CVE-2025-21696) ---
def _move(region: Region) -> None:
    region.remap(reserve_address(region.length, max(region.page_size, THP_SIZE)))


def _assert_no_wp_state(ctx, region: Region, uffd_old) -> None:
    """The bug's check: nothing of the old protection follows the move."""
    with ctx.bug_check():
        assert not any(region_wp(region)), "stale uffd-wp bits in a VMA that is not registered"
        uffd2 = ctx.uffd()
        ctx.register(uffd2, region)  # WP mode, nothing protected: no write may fault
        for i in range(region.pages):
            assert_writes_freely(ctx, region.page(i) + 16, 0xE00 + i)
        assert not uffd2.read(4, 0.05) and not uffd_old.read(4, 0.05)


# markers on anonymous memory come from WP_UNPOPULATED
@pytest.mark.parametrize("state", [
    "present", pytest.param("marker", marks=requires(Feature.WP_UNPOPULATED, mem=MEM_ANON))])
@uffd_test(mem=MEM_ALL, bug="mremap-clear")
def test_mremap_clears_wp(ctx, memtype, state):
    """mremap-clear (CVE-2025-21696): mremap() of protected memory without EVENT_REMAP drops
    the registration, and must drop the uffd-wp bits and markers too: none at the new address, and
    a new WP registration there sees no stale protection."""
    if state == "marker":
        uffd, region = _marker_region(
            ctx, memtype, Feature.WP_UNPOPULATED if ctx.mem_type.anonymous else 0)
    else:
        uffd, region = ctx.wp_region(2)
    assert all(region_wp(region)), "precondition: the pages are protected before the move"
    _move(region)
    _assert_no_wp_state(ctx, region, uffd)
    if ctx.mem_type.shared or state == "present":
        assert region.read(region.page_size, 8) == b"\x5a" * 8


@uffd_test(mem=MEM_SWAPPABLE, bug="mremap-clear", needs=SWAP)
def test_mremap_clears_wp_swapped(ctx, memtype):
    """mremap-clear: the same for protected pages that are swapped out when moved."""
    region = ctx.region(2)
    fill_pattern(region)
    uffd = ctx.uffd()
    ctx.register(uffd, region)
    uffd.writeprotect(region.address, region.length)
    require_pageout(region)
    assert all(region_wp(region)), "precondition: the pages are protected before the move"
    _move(region)
    _assert_no_wp_state(ctx, region, uffd)
    assert [load(region.page(i)) for i in range(2)] == [pattern(0), pattern(1)]


@uffd_test(mem=MEM_ANON, bug="mremap-clear", needs=THP)
def test_mremap_clears_wp_thp(ctx, memtype):
    """mremap-clear: the same for a protected PMD-mapped THP moved whole (move_huge_pmd)."""
    region = thp_region(ctx)
    uffd = ctx.uffd()
    ctx.register(uffd, region)
    uffd.writeprotect(region.address, region.length)
    assert all(region_wp(region)), "precondition: the THP is protected before the move"
    _move(region)
    with ctx.bug_check():
        assert not any(region_wp(region)), "stale uffd-wp bits on the moved THP"
        uffd2 = ctx.uffd()
        ctx.register(uffd2, region)
        for i in SAMPLE:
            assert_writes_freely(ctx, region.page(i) + 16, 0xF00 + i)
    for i in SAMPLE:
        assert load(region.page(i)) == pattern(i)


# --- mthp-zeropage: zero-filled mTHP subpage remapped to the shared zero page loses uffd-wp ---
def _zero_pfns(region: Region, indexes) -> set[int]:
    return {pagemap.entry(region.page(i)).pfn for i in indexes}


def _split_by_partial_pageout(region: Region) -> None:
    """MADV_PAGEOUT of the first subpage only: the kernel splits the large folio first."""
    region.madvise(MADV_PAGEOUT, 0, PAGE_SIZE)


@uffd_test(mem=MEM_ANON, bug="mthp-zeropage", needs=(MTHP, THP))
def test_thp_split_zero_subpages_keep_wp(ctx, memtype):
    """mthp-zeropage: splitting an anonymous large folio maps its zero-filled subpages to the
    shared zero page (try_to_map_unused_to_zeropage; kernel_facts.MM_FACTS has the release).
    For a protected folio those subpages must stay protected: bit 57 kept, writes fault."""
    zero = [i for i in range(2, 512) if i not in SAMPLE]
    # Control: an unprotected THP, split the same way, must show the zero-page remap at all.
    control = thp_region(ctx, fill=False)
    native.store_u64(control.page(0), 1)
    native.store_u64(control.page(1), 1)
    _split_by_partial_pageout(control)
    pfns = _zero_pfns(control, zero)
    # No probe can tell this before the test: the control is the probe (a precondition).
    require(len(pfns) == 1 and 0 not in pfns, "no zero-page remap of a split THP",
            f"this kernel does not map zero-filled subpages of a split THP to the shared zero "
            f"page (mainline {kf.fact('split THP zero-page remap').since}), or the split did "
            "not happen")
    region = thp_region(ctx, fill=False)
    for i in (0, 1, *SAMPLE):
        native.store_u64(region.page(i), pattern(i))
    uffd = ctx.uffd()
    ctx.register(uffd, region)
    uffd.writeprotect(region.address, region.length)
    _split_by_partial_pageout(region)
    with ctx.bug_check():
        bits = region_wp(region)
        lost = [i for i, b in enumerate(bits) if not b]
        assert not lost, f"uffd-wp lost on {len(lost)} subpages after the split (e.g. {lost[:5]})"
        for i in (zero[0], zero[len(zero) // 2], zero[-1], 1, 511):
            assert_blocks(ctx, uffd, region.page(i) + 8, 0xA00 + i)
    assert load(region.page(1)) == pattern(1)
    assert region.read(zero[0] * PAGE_SIZE, 8) == bytes(8)
