# SPDX-License-Identifier: GPL-2.0-only
"""Async write-protect (UFFD_FEATURE_WP_ASYNC, 6.7) read back with PAGEMAP_SCAN.

With WP_ASYNC the kernel resolves a write to a write-protected page itself (no message, no
blocking) by clearing the page's uffd-wp bit; PAGEMAP_SCAN (ioctl on /proc/pid/pagemap) reports
such pages as PAGE_IS_WRITTEN and, with PM_SCAN_WP_MATCHING, protects them again in the same
walk. Registration follows tools/testing/selftests/mm/pagemap_ioctl.c: a userfaultfd with
WP_ASYNC | WP_UNPOPULATED (| WP_HUGETLBFS_SHMEM), the range registered in WP mode, then
write-protected. Argument rules: fs/proc/task_mmu.c pagemap_scan_get_args().
"""

from __future__ import annotations

import errno
import os
import random
import threading

import pytest

from uffdwp import kernel_facts as kf
from uffdwp import native, pagemap
from uffdwp._ffi import ffi, lib
from uffdwp.errors import UffdError
from uffdwp.kernel_facts import Feature, PageCategory
from uffdwp.memory import MADV_HUGEPAGE, PAGE_SIZE

from .uffdtest import MEM_ALL, MEM_ANON, MEM_HUGETLB, uffd_test

ASYNC = Feature.WP_ASYNC | Feature.WP_UNPOPULATED
W = PageCategory.WRITTEN
HPAGE_PMD = 2 << 20
THP_ENABLED = "/sys/kernel/mm/transparent_hugepage/enabled"


# --- helpers -------------------------------------------------------------------------------------
def _async_region(ctx, pages: int, *, populate: bool = True, protect: bool = True):
    region = ctx.region(pages)
    if populate:
        region.fill(0x11)
    uffd = ctx.uffd()
    ctx.register(uffd, region)
    if protect:
        uffd.writeprotect(region.address, region.length)
    return uffd, region


def _store_all(uffd, region, stores: list[tuple[int, int]], timeout: float = 5.0) -> None:
    """Do the stores from C on one helper thread: with async WP none may block. If one does,
    release it and stop the thread before failing (its next store must not hit an unmapped
    region after the test's cleanup)."""
    done, abort = threading.Event(), threading.Event()

    def run() -> None:
        for addr, value in stores:
            if abort.is_set():
                return
            native.store_u64(addr, value)
        done.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    if not done.wait(timeout):
        abort.set()
        uffd.unprotect(region.address, region.length)
        uffd.wake(region.address, region.length)
        thread.join(timeout)
        pytest.fail("a store blocked: the kernel did not resolve the WP fault itself")


def _written(region, *, reprotect: bool = False) -> list[int]:
    """Indices of the region's pages reported PAGE_IS_WRITTEN."""
    addrs = pagemap.written_pages(region.address, region.address + region.length,
                                  reprotect=reprotect, page_size=region.page_size)
    return [(a - region.address) // region.page_size for a in addrs]


def _rel(region, result) -> list[tuple[int, int, PageCategory]]:
    """Scan regions as (start, end) page offsets in base pages, with categories."""
    return [((r.start - region.address) // PAGE_SIZE, (r.end - region.address) // PAGE_SIZE,
             r.categories) for r in result.regions]


def _raw_scan(**fields) -> tuple[int, int]:
    """PAGEMAP_SCAN with any field set (the binding builds only valid arguments).
    Returns (ioctl result or -errno, walk_end)."""
    vec = ffi.new("struct page_region[]", 16)
    arg = {"size": ffi.sizeof("struct pm_scan_arg"), "vec": int(ffi.cast("uintptr_t", vec)),
           "vec_len": 16, "return_mask": int(sum(PageCategory))}
    arg.update(fields)
    c_arg = ffi.new("struct pm_scan_arg *", arg)
    fd = os.open("/proc/self/pagemap", os.O_RDONLY | os.O_CLOEXEC)
    try:
        ret = lib.uffdwp_ioctl(fd, kf.IOCTLS["PAGEMAP_SCAN"].request, c_arg)
    finally:
        os.close(fd)
    if ret == -errno.ENOTTY:
        pytest.skip("PAGEMAP_SCAN (mainline 6.7) absent on this kernel: ENOTTY")
    return ret, c_arg.walk_end


def _thp_region(ctx):
    """Two PMD-aligned, THP-backed anonymous huge pages (skip if THP can't be had)."""
    try:
        with open(THP_ENABLED) as f:
            if "[never]" in f.read():
                pytest.skip("transparent hugepages disabled ([never])")
    except OSError:
        pytest.skip("no transparent hugepage support")
    region = ctx.region(2 * HPAGE_PMD // PAGE_SIZE, align=HPAGE_PMD)
    region.madvise(MADV_HUGEPAGE)
    region.fill(0x11)
    res = pagemap.scan(region.address, region.address + region.length)
    if _rel(region, res) != [(0, 1024, res.regions[0].categories)] or \
            not res.regions[0].categories & PageCategory.HUGE:
        pytest.skip(f"no THP backing obtained: {_rel(region, res)}")
    return region


# --- written / not written, exact, over cycles ---------------------------------------------------
@pytest.mark.parametrize("populate", [True, False], ids=["populated", "unpopulated"])
@uffd_test(mem=MEM_ALL, features=ASYNC)
def test_written_set_exact_over_reprotect_cycles(ctx, memtype, populate):
    """Each cycle writes a random subset; the scan with PM_SCAN_WP_MATCHING reports exactly that
    subset (nothing written in an earlier cycle, nothing never written), the stores never block
    or queue a message, the values land, and the reported pages are protected again."""
    n = 4 if memtype.startswith("hugetlb") else 32
    uffd, region = _async_region(ctx, n, populate=populate)
    rng = random.Random(f"{memtype}{populate}")
    assert _written(region) == [], "nothing is written right after protecting"
    previous: list[int] = []
    for cycle in range(4):
        while True:
            subset = sorted(rng.sample(range(n), rng.randint(1, n - 1)))
            if subset != previous:
                break
        stores = [(region.page(i) + 8 * (i % 4), (cycle << 16) | i) for i in subset]
        _store_all(uffd, region, stores)
        assert uffd.read(4, 0.0) == [], "async WP must not queue fault messages"
        wp_bits = pagemap.uffd_wp(region.address, region.length, region.page_size)
        assert [i for i in range(n) if not wp_bits[i]] == subset, "bit 57 cleared by the writes"
        assert _written(region, reprotect=True) == subset, f"cycle {cycle}"
        for addr, value in stores:
            assert native.load_u64(addr) == value
        assert _written(region) == [], "WP_MATCHING protected the reported pages again"
        assert all(pagemap.uffd_wp(region.address, region.length, region.page_size))
        previous = subset


@uffd_test(mem=MEM_ALL, features=ASYNC)
def test_native_writer_pages_are_exactly_the_written_set(ctx, memtype):
    """A native writer doing random stores over a sub-range of an async-protected region
    never stalls on a message (none is queued) and the scan reports exactly the pages its
    records name, each holding the writer's last value there."""
    n = 4 if memtype.startswith("hugetlb") else 24
    uffd, region = _async_region(ctx, n)
    first, count = 1, n - 2
    writer = native.Writer(region.page(first), count * region.page_size,
                           page_size=region.page_size, pattern=native.Pattern.RANDOM,
                           max_writes=3 * count if region.is_hugetlb else count // 2,
                           seed=7, value_base=0x900)
    ctx._writers.append(writer)
    if not writer.wait(5.0):
        uffd.unprotect(region.address, region.length)
        raise AssertionError("the writer blocked on an async-protected page")
    assert uffd.read(4, 0.0) == []
    last = {r.address: r.value for r in writer.records()}
    want = sorted((a - region.address) // region.page_size for a in last)
    assert want and _written(region, reprotect=True) == want
    assert all(native.load_u64(a) == v for a, v in last.items())
    assert _written(region) == []


@uffd_test(mem=MEM_ALL, features=ASYNC)
def test_wp_matching_without_vec_arms_protection(ctx, memtype):
    """PM_SCAN_WP_MATCHING with no output vector (vec=NULL, vec_len=0) only protects: used in
    place of UFFDIO_WRITEPROTECT (as pagemap_ioctl.c's wp_addr_range does) it arms async WP on
    a freshly registered range, returns 0 regions, and later writes are tracked exactly."""
    n = 3 if memtype.startswith("hugetlb") else 8
    uffd, region = _async_region(ctx, n, protect=False)
    end = region.address + region.length
    assert _written(region) == list(range(n)), "registered, unprotected: all count as written"
    ret, walk_end = _raw_scan(start=region.address, end=end, vec=0, vec_len=0,
                              flags=kf.PM_SCAN_WP_MATCHING | kf.PM_SCAN_CHECK_WPASYNC,
                              category_mask=int(W), return_mask=int(W))
    assert (ret, walk_end) == (0, end)
    assert _written(region) == []
    assert all(pagemap.uffd_wp(region.address, region.length, region.page_size))
    _store_all(uffd, region, [(region.page(n - 1), 3)])
    assert _written(region) == [n - 1]


@uffd_test(mem=MEM_ALL, features=ASYNC)
def test_scan_without_wp_matching_does_not_reprotect(ctx, memtype):
    """A scan without PM_SCAN_WP_MATCHING only reports: the written page stays writable
    (reported again, bit 57 still clear) until a WP_MATCHING scan protects it."""
    uffd, region = _async_region(ctx, 3)
    _store_all(uffd, region, [(region.page(1), 1)])
    assert _written(region) == [1]
    assert _written(region) == [1]
    assert pagemap.uffd_wp(region.address, region.length, region.page_size) == [True, False, True]
    assert _written(region, reprotect=True) == [1]
    assert _written(region) == []


@uffd_test(mem=MEM_ALL, features=ASYNC)
def test_unprotect_makes_pages_written_and_protect_clears_it(ctx, memtype):
    """PAGE_IS_WRITTEN is the absence of uffd-wp: UFFDIO_WRITEPROTECT without MODE_WP makes a
    page 'written' without a store; protecting it again clears that."""
    uffd, region = _async_region(ctx, 4)
    uffd.unprotect(region.page(2), region.page_size)
    assert _written(region) == [2]
    pagemap.scan(region.address, region.address + region.length, check_wpasync=True)  # async
    uffd.writeprotect(region.page(2), region.page_size)
    assert _written(region) == []


# --- THP -----------------------------------------------------------------------------------------
@uffd_test(mem=MEM_ANON, features=ASYNC)
def test_thp_subpage_write_reports_only_that_subpage(ctx, memtype):
    """A write to one 4 KiB subpage of a write-protected PMD-mapped THP: in async mode
    mm/memory.c wp_huge_pmd() splits the PMD and resolves the fault at PTE level, so the scan
    reports exactly that subpage as written (not HUGE), the rest of the THP still protected,
    and the untouched second THP still one protected HUGE range."""
    region = _thp_region(ctx)
    uffd = ctx.uffd()
    ctx.register(uffd, region)
    uffd.writeprotect(region.address, region.length)
    res = pagemap.scan(region.address, region.address + region.length)
    assert [(s, e) for s, e, _ in _rel(region, res)] == [(0, 1024)]
    assert res.regions[0].categories & PageCategory.HUGE and not res.regions[0].categories & W

    _store_all(uffd, region, [(region.address + 5 * PAGE_SIZE + 64, 0xFEED)])
    rel = _rel(region, pagemap.scan(region.address, region.address + region.length))
    assert [(s, e, bool(c & W)) for s, e, c in rel] == \
        [(0, 5, False), (5, 6, True), (6, 512, False), (512, 1024, False)]
    assert not any(c & PageCategory.HUGE for s, _e, c in rel if s < 512), "first THP was split"
    assert rel[-1][2] & PageCategory.HUGE, "the second THP is still PMD-mapped"
    written = pagemap.written_pages(region.address, region.address + region.length,
                                    reprotect=True)
    assert written == [region.address + 5 * PAGE_SIZE]
    assert native.load_u64(region.address + 5 * PAGE_SIZE + 64) == 0xFEED


@uffd_test(mem=MEM_ANON, features=ASYNC)
def test_thp_fully_written_reported_whole_and_reprotected_huge(ctx, memtype):
    """A written (never protected) PMD-mapped THP is reported as one 2 MiB WRITTEN|HUGE range;
    a WP_MATCHING scan over the whole THP protects it as a huge PMD (pagemap_scan_thp_entry:
    make_uffd_wp_pmd), so it stays one HUGE range, now not written, bit 57 on every subpage."""
    region = _thp_region(ctx)
    uffd = ctx.uffd()
    ctx.register(uffd, region)  # registered, not protected: every page counts as written
    res = pagemap.scan(region.address, region.address + HPAGE_PMD, category_mask=W,
                       wp_matching=True, check_wpasync=True)
    assert [(s, e) for s, e, _ in _rel(region, res)] == [(0, 512)]
    assert res.regions[0].categories & PageCategory.HUGE
    res = pagemap.scan(region.address, region.address + region.length)
    rel = _rel(region, res)
    assert [(s, e, bool(c & W)) for s, e, c in rel] == [(0, 512, False), (512, 1024, True)]
    assert all(c & PageCategory.HUGE for _s, _e, c in rel)
    assert all(e.uffd_wp for e in pagemap.entries(region.address, 512))


@uffd_test(mem=MEM_ANON, features=ASYNC)
def test_thp_partial_wp_matching_splits_and_protects_only_the_range(ctx, memtype):
    """A WP_MATCHING scan over half of a written THP splits the PMD and protects exactly that
    half (pagemap_scan_thp_entry: end != start + HPAGE_SIZE -> split_huge_pmd, rescan by PTE)."""
    region = _thp_region(ctx)
    uffd = ctx.uffd()
    ctx.register(uffd, region)
    res = pagemap.scan(region.address, region.address + HPAGE_PMD // 2, category_mask=W,
                       wp_matching=True, check_wpasync=True)
    assert [(s, e) for s, e, _ in _rel(region, res)] == [(0, 256)]
    rel = _rel(region, pagemap.scan(region.address, region.address + HPAGE_PMD))
    assert [(s, e, bool(c & W)) for s, e, c in rel] == [(0, 256, False), (256, 512, True)]
    assert not any(c & PageCategory.HUGE for _s, _e, c in rel), "PMD split into PTEs"


@uffd_test(mem=MEM_ANON, features=ASYNC)
def test_thp_max_pages_wp_matching_protects_only_reported_pages(ctx, memtype):
    """max_pages cutting a written THP: only the reported pages are protected (the THP is split
    rather than protected whole), walk_end points after them, the rest remains written."""
    region = _thp_region(ctx)
    uffd = ctx.uffd()
    ctx.register(uffd, region)
    res = pagemap.scan(region.address, region.address + HPAGE_PMD, category_mask=W,
                       wp_matching=True, max_pages=3)
    assert [(s, e) for s, e, _ in _rel(region, res)] == [(0, 3)]
    assert res.walk_end == region.address + 3 * PAGE_SIZE
    rel = _rel(region, pagemap.scan(region.address, region.address + HPAGE_PMD))
    assert [(s, e, bool(c & W)) for s, e, c in rel] == [(0, 3, False), (3, 512, True)]


# --- hugetlb -------------------------------------------------------------------------------------
@uffd_test(mem=MEM_HUGETLB, features=ASYNC)
def test_hugetlb_written_reported_as_whole_huge_page(ctx, memtype):
    """One store into the middle of a protected hugetlb page: the whole 2 MiB page is reported
    WRITTEN|HUGE (hugetlb is mapped and tracked per huge page), the others not."""
    uffd, region = _async_region(ctx, 3)
    _store_all(uffd, region, [(region.page(1) + region.page_size // 2 + 8, 0xABC)])
    res = pagemap.scan(region.address, region.address + region.length, category_mask=W)
    assert [(r.start, r.end) for r in res.regions] == [(region.page(1), region.page(2))]
    assert res.regions[0].categories & PageCategory.HUGE


@uffd_test(mem=MEM_HUGETLB, features=ASYNC)
def test_hugetlb_partial_wp_matching_stops_the_walk(ctx, memtype):
    """A hugetlb page can't be protected in part: a WP_MATCHING scan limited to fewer base pages
    than the huge page reports nothing, sets walk_end to the huge page's start and leaves it
    written (pagemap_scan_hugetlb_entry: "Partial HugeTLB page WP isn't possible")."""
    uffd, region = _async_region(ctx, 2)
    _store_all(uffd, region, [(region.page(1), 1)])
    res = pagemap.scan(region.address, region.address + region.length, category_mask=W,
                       wp_matching=True, max_pages=1)
    assert res.regions == []
    assert res.walk_end == region.page(1)
    assert _written(region) == [1]


# --- PAGEMAP_SCAN arguments ----------------------------------------------------------------------
@pytest.fixture
def mapped():
    """A small populated anonymous mapping (no userfaultfd) for argument checks."""
    from uffdwp.memory import allocate
    region = allocate("anon", pages=4)
    region.fill(1)
    yield region
    region.close()


@pytest.mark.parametrize("delta", [-8, 8, None], ids=["short", "long", "zero"])
def test_scan_bad_size_einval(mapped, delta):
    """pm_scan_arg.size must equal sizeof(struct pm_scan_arg) (96): anything else is EINVAL."""
    size = 0 if delta is None else ffi.sizeof("struct pm_scan_arg") + delta
    assert _raw_scan(size=size, start=mapped.address, end=mapped.address + mapped.length)[0] == \
        -errno.EINVAL


def test_scan_valid_arguments_accepted(mapped):
    """The control case for the EINVAL tests: the same call with valid fields succeeds."""
    ret, walk_end = _raw_scan(start=mapped.address, end=mapped.address + mapped.length)
    assert ret == 1 and walk_end == mapped.address + mapped.length


def test_scan_unaligned_start_einval(mapped):
    """start must be page aligned: EINVAL."""
    assert _raw_scan(start=mapped.address + 8, end=mapped.address + mapped.length)[0] == \
        -errno.EINVAL


def test_scan_unaligned_end_rounded_up(mapped):
    """end is rounded up to the page size (ALIGN(end, PAGE_SIZE)): the walk covers the last page."""
    end = mapped.address + mapped.length
    ret, walk_end = _raw_scan(start=mapped.address, end=end - 8)
    assert ret == 1 and walk_end == end


def test_scan_unknown_flag_einval(mapped):
    """Only PM_SCAN_WP_MATCHING and PM_SCAN_CHECK_WPASYNC are flags: others give EINVAL."""
    assert _raw_scan(flags=1 << 2, start=mapped.address, end=mapped.address + mapped.length)[0] \
        == -errno.EINVAL


@pytest.mark.parametrize("field", ["category_mask", "category_inverted", "category_anyof_mask",
                                   "return_mask"])
@pytest.mark.parametrize("bit", [20, 63])
def test_scan_unknown_category_einval(mapped, field, bit):
    """Category bits beyond PM_SCAN_CATEGORIES in any of the four masks: EINVAL. (Bit 8 is
    PAGE_IS_GUARD on newer kernels, so the test uses bits no kernel defines.)"""
    ret, _ = _raw_scan(start=mapped.address, end=mapped.address + mapped.length,
                       **{field: 1 << bit})
    assert ret == -errno.EINVAL


def test_scan_null_vec_with_length_einval(mapped):
    """vec == NULL with vec_len != 0: EINVAL."""
    assert _raw_scan(vec=0, vec_len=4, start=mapped.address,
                     end=mapped.address + mapped.length)[0] == -errno.EINVAL


def test_scan_end_before_start_efault(mapped):
    """end < start makes the range length wrap: access_ok() fails, EFAULT."""
    assert _raw_scan(start=mapped.address + mapped.length, end=mapped.address)[0] == -errno.EFAULT


def test_check_wpasync_without_uffd_eperm(mapped):
    """PM_SCAN_CHECK_WPASYNC on a VMA without async WP: EPERM (pagemap_scan_test_walk)."""
    _raw_scan(start=mapped.address, end=mapped.address + mapped.length)  # skips without the ioctl
    with pytest.raises(UffdError) as info:
        pagemap.scan(mapped.address, mapped.address + mapped.length, check_wpasync=True)
    assert info.value.errno == errno.EPERM


@uffd_test(mem=MEM_ALL)
def test_check_wpasync_on_sync_wp_range_eperm(ctx, memtype):
    """A range registered in (synchronous) WP mode, without WP_ASYNC: PM_SCAN_CHECK_WPASYNC is
    EPERM, while a plain scan of it works."""
    _uffd, region = ctx.wp_region(2)
    _raw_scan(start=region.address, end=region.address + region.length)  # skips without the ioctl
    assert pagemap.scan(region.address, region.address + region.length).regions
    with pytest.raises(UffdError) as info:
        pagemap.scan(region.address, region.address + region.length, check_wpasync=True)
    assert info.value.errno == errno.EPERM


@uffd_test(mem=MEM_ANON, features=ASYNC)
def test_category_masks(ctx, memtype):
    """category_mask / category_inverted / category_anyof_mask / return_mask semantics:
    inverted WRITTEN selects the not-written pages; anyof selects pages with any bit; with
    return_mask=WRITTEN adjacent written pages merge into one region."""
    uffd, region = _async_region(ctx, 10)
    _store_all(uffd, region, [(region.page(i), i) for i in (2, 3, 4, 7)])
    end = region.address + region.length

    res = pagemap.scan(region.address, end, category_mask=W, return_mask=W)
    assert [(s, e, c) for s, e, c in _rel(region, res)] == [(2, 5, W), (7, 8, W)]

    res = pagemap.scan(region.address, end, category_mask=W, category_inverted=W,
                       return_mask=W)
    assert [(s, e) for s, e, _ in _rel(region, res)] == [(0, 2), (5, 7), (8, 10)]
    assert all(c == 0 for _s, _e, c in _rel(region, res)), "return_mask keeps only WRITTEN"

    res = pagemap.scan(region.address, end, category_anyof_mask=W | PageCategory.SWAPPED,
                       return_mask=W | PageCategory.PRESENT)
    assert [(s, e, c) for s, e, c in _rel(region, res)] == \
        [(2, 5, W | PageCategory.PRESENT), (7, 8, W | PageCategory.PRESENT)]

    res = pagemap.scan(region.address, end, category_mask=W | PageCategory.SWAPPED)
    assert res.regions == [], "category_mask needs every bit"


@uffd_test(mem=MEM_ANON, features=ASYNC)
def test_max_pages_limits_and_walk_end(ctx, memtype):
    """max_pages stops the walk after that many pages (walk_end right after them) and
    WP_MATCHING protects only what was reported: nothing written is lost for the next scan."""
    uffd, region = _async_region(ctx, 16)
    _store_all(uffd, region, [(region.page(i), i) for i in range(10)])
    res = pagemap.scan(region.address, region.address + region.length, category_mask=W,
                       return_mask=W, wp_matching=True, max_pages=3)
    assert [(s, e) for s, e, _ in _rel(region, res)] == [(0, 3)]
    assert res.walk_end == region.page(3)
    assert _written(region) == list(range(3, 10))


@uffd_test(mem=MEM_ANON, features=ASYNC)
def test_vec_len_limits_and_walk_end(ctx, memtype):
    """vec_len=1 with three separate written runs: one region back, walk_end at the start of the
    next run; resuming from walk_end finds the rest, WP_MATCHING protects only what was
    reported each time, and the union is exact."""
    uffd, region = _async_region(ctx, 16)
    _store_all(uffd, region, [(region.page(i), i) for i in (1, 2, 6, 11)])
    end = region.address + region.length
    res = pagemap.scan(region.address, end, category_mask=W, return_mask=W,
                       wp_matching=True, vec_len=1)
    assert [(s, e) for s, e, _ in _rel(region, res)] == [(1, 3)]
    assert res.walk_end == region.page(6)
    assert _written(region) == [6, 11], "pages beyond walk_end were left unprotected"
    seen = []
    addr = res.walk_end
    while addr < end:
        res = pagemap.scan(addr, end, category_mask=W, return_mask=W, wp_matching=True,
                           vec_len=1)
        seen += [(s, e) for s, e, _ in _rel(region, res)]
        assert res.walk_end > addr
        addr = res.walk_end
    assert seen == [(6, 7), (11, 12)]
    assert _written(region) == []
