# SPDX-License-Identifier: GPL-2.0-only
"""UFFD-WP across memory management: swap-out, MADV_DONTNEED, THP split/collapse, fork, mremap.

What the kernel must do (mm/memory.c, mm/mprotect.c, mm/huge_memory.c, mm/mremap.c, and the
kernel's own tools/testing/selftests/mm/uffd-unit-tests.c wp-fork / wp-unpopulated cases):
- a swapped-out protected page keeps its uffd-wp bit on the swap entry (pagemap bit 57); the write
  after swap-in still faults, and the data is intact;
- zapping (MADV_DONTNEED) drops everything on anonymous memory ("zap on anonymous always means
  dropping everything"), but leaves a uffd-wp pte marker on file-backed and hugetlb memory, so the
  next write still faults;
- splitting a protected THP keeps the protection of every subpage; khugepaged/MADV_COLLAPSE never
  collapses uffd-wp protected ptes into a writable huge page;
- fork() without UFFD_FEATURE_EVENT_FORK gives the child unprotected memory; with it the child's
  copy stays protected and faults on the new userfaultfd of the fork event;
- mremap() without UFFD_FEATURE_EVENT_REMAP leaves no uffd-wp state at the destination
  (mremap-clear); with it the moved pages stay protected.
"""

from __future__ import annotations

import errno

import pytest

from uffdwp import pagemap
from uffdwp.kernel_facts import Feature
from uffdwp.memory import (
    MADV_COLLAPSE,
    MADV_DONTNEED,
    PAGE_SIZE,
    PROT_READ,
    PROT_WRITE,
    THP_SIZE,
    Region,
    reserve_address,
)
from uffdwp.messages import PageFault

from .capabilities import COLLAPSE, SWAP, THP
from .observe import page_wp, pagemap_reports_wp, region_wp
from .support import (
    SAMPLE,
    OnThread,
    assert_blocks,
    assert_blocks_hp,
    assert_writes_freely,
    child,
    child_write,
    fill_pattern,
    fork_with_event,
    load,
    pattern,
    require_pageout,
    run_forked,
    thp_region,
)
from .uffdtest import (
    FORK_EVENT,
    MEM_ALL,
    MEM_ANON,
    MEM_SWAPPABLE,
    uffd_test,
)


# --- swap-out (MADV_PAGEOUT with a real swap file) -----------------------------------------------
@uffd_test(mem=MEM_SWAPPABLE, needs=SWAP)
def test_pageout_keeps_wp_and_write_faults_after_swapin(ctx, memtype):
    """A protected page swapped out keeps bit 57 (on the swap entry, or the shmem pte marker); the
    write after swap-in still faults WP and the data comes back intact."""
    region = ctx.region(4)
    fill_pattern(region)
    uffd = ctx.uffd()
    ctx.register(uffd, region)
    uffd.writeprotect(region.address, region.length)
    require_pageout(region)
    ents = pagemap.entries(region.address, region.pages)
    assert all(not e.present for e in ents), "pages still present after pageout"
    if pagemap_reports_wp():  # by effect a swapped page is seen only by swapping it in: below
        assert all(e.uffd_wp for e in ents), "uffd-wp bit lost on swap-out"
    assert_blocks(ctx, uffd, region.page(1) + 16, 0xBEEF)
    for i in (0, 2, 3):  # read fault = swap-in: the data, and still protected
        assert load(region.page(i)) == pattern(i)
        assert page_wp(region.page(i)), f"bit 57 lost on swap-in of page {i}"
        assert_blocks(ctx, uffd, region.page(i) + 8, 0x1000 + i)
    assert load(region.page(1)) == pattern(1)


@uffd_test(mem=MEM_SWAPPABLE, needs=SWAP)
def test_unprotect_swapped_page(ctx, memtype):
    """UFFDIO_WRITEPROTECT on a swapped-out page changes the swap entry: unprotected while swapped
    means no fault after swap-in; protected again while swapped means a fault."""
    region = ctx.region(2)
    fill_pattern(region)
    uffd = ctx.uffd()
    ctx.register(uffd, region)
    uffd.writeprotect(region.address, region.length)
    require_pageout(region)
    uffd.unprotect(region.page(0), PAGE_SIZE)
    assert region_wp(region) == [False, True]
    assert_writes_freely(ctx, region.page(0) + 8, 0x77)
    assert load(region.page(0)) == pattern(0)
    assert_blocks(ctx, uffd, region.page(1) + 8, 0x78)


@uffd_test(mem=MEM_SWAPPABLE, needs=SWAP)
def test_protect_while_swapped(ctx, memtype):
    """Protecting a page that is already swapped out sets bit 57 on its swap entry: the write
    after swap-in faults."""
    region = ctx.region(2)
    fill_pattern(region)
    uffd = ctx.uffd()
    ctx.register(uffd, region)
    require_pageout(region)
    if pagemap_reports_wp():  # observing by effect would swap the pages in before the protect
        assert region_wp(region) == [False, False]
    uffd.writeprotect(region.address, region.length)
    assert region_wp(region) == [True, True]
    assert_blocks(ctx, uffd, region.page(0) + 8, 0x99)
    assert load(region.page(1)) == pattern(1)


# --- MADV_DONTNEED --------------------------------------------------------------------------------
@uffd_test(mem=MEM_ANON)
def test_dontneed_anon_drops_page_and_protection(ctx, memtype):
    """On anonymous memory MADV_DONTNEED drops the page and its uffd-wp bit (zap never leaves a
    marker there): the page reads zero and the next write does not fault; other pages stay
    protected."""
    uffd, region = ctx.wp_region(3)
    region.madvise(MADV_DONTNEED, PAGE_SIZE, PAGE_SIZE)
    assert region_wp(region) == [True, False, True]
    assert not pagemap.entry(region.page(1)).present
    assert region.read(PAGE_SIZE, PAGE_SIZE) == bytes(PAGE_SIZE)
    assert_writes_freely(ctx, region.page(1) + 8, 0x55)
    assert_blocks(ctx, uffd, region.page(0), 0x56)
    assert region.read(2 * PAGE_SIZE, PAGE_SIZE) == b"\x5a" * PAGE_SIZE


@uffd_test(mem=MEM_ANON, features=Feature.WP_UNPOPULATED)
def test_dontneed_anon_with_wp_unpopulated(ctx, memtype):
    """With WP_UNPOPULATED a zap on anon still drops the protection (selftest wp-unpopulated:
    "zap on anon marker"), but protecting the now empty page again installs a marker that makes
    the next write fault."""
    uffd, region = ctx.wp_region(2)
    region.madvise(MADV_DONTNEED, 0, PAGE_SIZE)
    assert region_wp(region) == [False, True]
    uffd.writeprotect(region.page(0), PAGE_SIZE)
    assert region_wp(region) == [True, True]
    assert_blocks(ctx, uffd, region.page(0) + 8, 0x31)
    assert region.read(0, 8) == bytes(8)


@uffd_test(mem=("shmem", "shmem-private", "hugetlb", "hugetlb-private"))
def test_dontneed_file_and_hugetlb_keep_marker(ctx, memtype):
    """On shmem and hugetlb, zapping a protected page leaves a uffd-wp pte marker: bit 57 stays,
    the next write faults WP. Shared types still hold the data (page cache); private types fall
    back to the file (zeros here, the fill went to private copies) or to a new zero page."""
    uffd, region = ctx.wp_region(2)
    region.madvise(MADV_DONTNEED, 0, region.page_size)
    assert not pagemap.entry(region.page(0)).present
    assert region_wp(region) == [True, True], "zap dropped the uffd-wp marker"
    expect = b"\x5a" * 8 if ctx.mem_type.shared else bytes(8)
    assert_blocks_hp(ctx, uffd, region, 0, 0x4242)
    assert region.read(0, 8) == expect
    assert region.read(region.page_size - 8, 8) == expect[:8]
    assert region.read(region.page_size, 8) == b"\x5a" * 8


@uffd_test(mem=MEM_ALL)
def test_unprotect_marker_then_write(ctx, memtype):
    """Unprotecting a zapped (marker) or swapped-out page clears bit 57 and the write goes through
    without a fault."""
    uffd, region = ctx.wp_region(2)
    region.madvise(MADV_DONTNEED, 0, region.page_size)
    uffd.unprotect(region.page(0), region.page_size)
    assert region_wp(region) == [False, True]
    assert_writes_freely(ctx, region.page(0) + 8, 0x4343)


# --- THP ------------------------------------------------------------------------------------------
def _thp_protected(ctx):
    region = thp_region(ctx)
    uffd = ctx.uffd()
    ctx.register(uffd, region)
    uffd.writeprotect(region.address, region.length)
    assert all(region_wp(region)), "protecting a THP left subpages without bit 57"
    return uffd, region




@uffd_test(mem=MEM_ANON, needs=THP)
def test_thp_protected_whole(ctx, memtype):
    """Every subpage of a protected PMD-mapped THP faults on write."""
    uffd, region = _thp_protected(ctx)
    for i in SAMPLE:
        assert_blocks(ctx, uffd, region.page(i) + 8, 0x100 + i)
        assert load(region.page(i)) == pattern(i)


@pytest.mark.parametrize("how", ["mprotect", "partial-unprotect", "dontneed-subpage"])
@uffd_test(mem=MEM_ANON, needs=THP)
def test_thp_split_keeps_protection(ctx, memtype, how):
    """Splitting a protected THP's PMD (mprotect of a sub-range, unprotecting one subpage, or
    MADV_DONTNEED of one subpage) keeps bit 57 on every other subpage, and each still faults."""
    uffd, region = _thp_protected(ctx)
    hole = 100
    if how == "mprotect":
        region.mprotect(PROT_READ, hole * PAGE_SIZE, PAGE_SIZE)
        region.mprotect(PROT_READ | PROT_WRITE, hole * PAGE_SIZE, PAGE_SIZE)
    elif how == "partial-unprotect":
        uffd.unprotect(region.page(hole), PAGE_SIZE)
    else:
        region.madvise(MADV_DONTNEED, hole * PAGE_SIZE, PAGE_SIZE)
    bits = region_wp(region)
    expect_hole = how == "mprotect"
    assert bits[hole] is expect_hole
    assert all(b for i, b in enumerate(bits) if i != hole), "split dropped uffd-wp on subpages"
    for i in (*SAMPLE, hole - 1, hole + 1):
        assert_blocks(ctx, uffd, region.page(i) + 8, 0x200 + i)
        assert load(region.page(i)) == pattern(i)
    if how == "mprotect":
        assert_blocks(ctx, uffd, region.page(hole) + 8, 0x300)
    else:
        assert_writes_freely(ctx, region.page(hole) + 8, 0x300)
    if how != "dontneed-subpage":
        assert load(region.page(hole)) == pattern(hole)


@uffd_test(mem=MEM_ANON, needs=COLLAPSE)
def test_collapse_of_protected_ptes_refused_or_safe(ctx, memtype):
    """MADV_COLLAPSE (6.1) must not turn uffd-wp protected ptes into an unprotected huge page:
    khugepaged refuses (SCAN_PTE_UFFD_WP). Whatever madvise answers, every subpage still has bit 57,
    still faults on write, and holds its data."""
    region = ctx.region(THP_SIZE // PAGE_SIZE, align=THP_SIZE)
    fill_pattern(region)  # THP is "madvise"-only or the region is not advised: 4 KiB ptes
    uffd = ctx.uffd()
    ctx.register(uffd, region)
    uffd.writeprotect(region.address, region.length)
    try:
        region.madvise(MADV_COLLAPSE)
        collapsed = True
    except OSError as exc:
        assert exc.errno in (errno.EINVAL, errno.EAGAIN, errno.EBUSY), exc
        collapsed = False
    assert all(region_wp(region)), f"bit 57 lost (collapse {'done' if collapsed else 'refused'})"
    for i in SAMPLE:
        assert_blocks(ctx, uffd, region.page(i) + 8, 0x400 + i)
        assert load(region.page(i)) == pattern(i)


@uffd_test(mem=MEM_ANON, needs=(SWAP, THP))
def test_thp_pageout_keeps_protection(ctx, memtype):
    """A protected THP swapped out (whole, or split by reclaim) keeps bit 57 on all subpages;
    writes after swap-in fault and the data is intact."""
    uffd, region = _thp_protected(ctx)
    require_pageout(region)
    assert all(region_wp(region)), "uffd-wp lost when the THP was swapped out"
    for i in SAMPLE:
        assert_blocks(ctx, uffd, region.page(i) + 8, 0x500 + i)
        assert load(region.page(i)) == pattern(i)


# --- fork -----------------------------------------------------------------------------------------
@uffd_test(mem=MEM_ALL, bug={"hugetlb": "hugetlb-fork", "hugetlb-private": "hugetlb-fork"})
def test_fork_without_event_child_unprotected(ctx, memtype):
    """Without EVENT_FORK the child's memory is not registered: its copy has no bit 57 and it
    writes freely. The parent's page stays protected; private types keep the parent's data,
    shared types see the child's write."""
    uffd, region = ctx.wp_region(2)
    addr = region.page(0) + 8
    with ctx.bug_check(), child(child_write(addr, 0xC41D, expect_wp=False)) as c:
        assert c.wait(5) == 0, f"child exit {c.status} (10: bit 57 set in child; None: stuck)"
    assert region_wp(region) == [True, True], "parent lost its protection"
    assert load(addr) == (0xC41D if ctx.mem_type.shared else 0x5A5A5A5A5A5A5A5A)
    assert_blocks_hp(ctx, uffd, region, 0, 0xAB)


@uffd_test(mem=MEM_ALL, features=Feature.EVENT_FORK)
def test_fork_with_event_child_protected(ctx, memtype):
    """With EVENT_FORK the parent gets a ForkEvent carrying a new userfaultfd for the child; the
    child's pages keep bit 57 and its write faults WP on that new fd, from the child's thread;
    unprotecting through it lets the child finish. The parent's protection is untouched."""
    uffd, region = ctx.wp_region(2)
    addr = region.page(0) + 8
    write = child_write(addr, 0xC41D, expect_wp=True)

    def run() -> int:  # the child sees its own protection: pagemap's bit, or the effect
        return write() if page_wp(region.page(1), in_child=True) else 12

    c, cuffd = fork_with_event(ctx, uffd, region, run)
    try:
        msg = cuffd.read_one(5)
        assert isinstance(msg, PageFault) and msg.is_wp and msg.is_write, \
            f"{msg} (child exit {c.poll()}: 10 page 0, 12 its untouched page 1 unprotected)"
        assert region.page(0) <= msg.address < region.page(0) + region.page_size
        assert c.poll() is None, "child finished a write to a protected page"
        cuffd.unprotect(region.page(0), region.page_size)
        assert c.wait(5) == 0, f"child exit {c.status} (10: no bit 57 in child)"
    finally:
        c.kill()
    assert region_wp(region) == [True, True], "parent lost its protection"
    assert load(addr) == (0xC41D if ctx.mem_type.shared else 0x5A5A5A5A5A5A5A5A)
    assert not uffd.read(4, 0.05), "the child's fault reached the parent's userfaultfd"


@FORK_EVENT
@uffd_test(mem=MEM_SWAPPABLE, needs=SWAP)
def test_fork_swapped_protected_page(ctx, memtype, with_event):
    """fork() of a protected page that is swapped out (swap entry, or shmem marker): the child's
    entry has bit 57 exactly when EVENT_FORK keeps it registered (fork-special-cases)."""
    region = ctx.region(2)
    fill_pattern(region)
    uffd = ctx.uffd(Feature.EVENT_FORK if with_event else 0)
    ctx.register(uffd, region)
    uffd.writeprotect(region.address, region.length)
    require_pageout(region)
    addr = region.page(0)
    run_forked(ctx, uffd, region, child_write(addr, 0xD00D, expect_wp=with_event), with_event)
    assert region_wp(region) == [True, True]
    assert load(addr) == (0xD00D if ctx.mem_type.shared else pattern(0))
    assert load(region.page(1)) == pattern(1)


# --- mremap ---------------------------------------------------------------------------------------
def _move(region: Region) -> tuple[int, int]:
    """mremap the region to a fresh aligned address; returns (old, new)."""
    old = region.address
    target = reserve_address(region.length, max(region.page_size, THP_SIZE))
    return old, region.remap(target)


@uffd_test(mem=MEM_ALL, bug="mremap-clear")
def test_mremap_without_event_leaves_no_wp_state(ctx, memtype):
    """Without EVENT_REMAP the moved VMA is no longer registered, and the fixed kernel clears the
    uffd-wp bits and markers that moved with it (mremap-clear): no bit 57 at the new address, the
    writes go through, and registering the new range again (WP mode, nothing protected) shows no
    stale protection."""
    uffd, region = ctx.wp_region(3)
    region.madvise(MADV_DONTNEED, region.page_size, region.page_size)  # a marker on file types
    assert region_wp(region) == [True, not ctx.mem_type.anonymous, True], "precondition: protected"
    _move(region)
    with ctx.bug_check():
        assert region_wp(region) == [False] * 3, "uffd-wp state moved into an unregistered VMA"
        uffd2 = ctx.uffd()
        ctx.register(uffd2, region)
        for i in range(3):
            assert_writes_freely(ctx, region.page(i) + 8, 0x600 + i)
        assert not uffd.read(4, 0.05) and not uffd2.read(4, 0.05)


@uffd_test(mem=MEM_ALL, features=Feature.EVENT_REMAP)
def test_mremap_with_event_keeps_protection(ctx, memtype):
    """With EVENT_REMAP the registration follows the move: the pages keep bit 57 at the new address
    and a write there faults WP with the new address."""
    uffd, region = ctx.wp_region(2)
    old = region.address
    t = OnThread(_move, region)
    msg = uffd.read_one(5)
    t.join(5)
    assert not t.is_alive()
    assert t.finished() and t.error is None, t.error
    assert msg.old_address == old and msg.new_address == region.address
    assert region_wp(region) == [True, True]
    assert_blocks_hp(ctx, uffd, region, 1, 0x700)
    assert region.read(0, 8) == b"\x5a" * 8


# --- mprotect -------------------------------------------------------------------------------------
@uffd_test(mem=MEM_ALL)
def test_mprotect_cycle_keeps_protection(ctx, memtype):
    """mprotect(PROT_READ) then back to read-write does not make a uffd-wp protected page writable:
    bit 57 stays and the write faults."""
    uffd, region = ctx.wp_region(2)
    region.mprotect(PROT_READ)
    region.mprotect(PROT_READ | PROT_WRITE)
    assert region_wp(region) == [True, True]
    assert_blocks_hp(ctx, uffd, region, 1, 0x800)
