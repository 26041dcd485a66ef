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
  (0cef0bb836e3); with it the moved pages stay protected.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import threading
import time

import pytest

from uffdwp import native, pagemap
from uffdwp.kernel_facts import Feature
from uffdwp.memory import (
    MADV_COLLAPSE,
    MADV_DONTNEED,
    MADV_HUGEPAGE,
    MADV_PAGEOUT,
    PAGE_SIZE,
    PROT_READ,
    PROT_WRITE,
    Region,
    reserve_address,
)
from uffdwp.messages import EVENT_FORK, PageFault
from uffdwp.runner.precondition import require
from uffdwp.uffd import Userfaultfd

from .observe import page_wp, pagemap_reports_wp, region_wp
from .uffdtest import (
    MEM_ALL,
    MEM_ANON,
    MEM_NOT_HUGETLB,
    uffd_test,
)

THP_SIZE = 2 << 20
THP_ENABLED = "/sys/kernel/mm/transparent_hugepage/enabled"
# Memory types whose pages can be swapped out: hugetlb pages are never swapped (MADV_PAGEOUT gives
# EINVAL on a VM_HUGETLB vma: can_madv_lru_vma()).
MEM_SWAPPABLE = MEM_NOT_HUGETLB
# Types whose copy in a child shares the parent's data (MAP_SHARED of a memfd).
SHARED = ("shmem", "hugetlb")


# --- helpers shared by test_events.py and test_regressions.py ------------------------------------
def pattern(index: int) -> int:
    """The 64-bit value page *index* holds in these tests (never zero, distinct per page)."""
    return 0xA5A5_0000_0000_0000 | (index + 1)


def fill_pattern(region: Region) -> None:
    for i in range(region.pages):
        native.store_u64(region.page(i), pattern(i))


def load(address: int) -> int:
    return native.load_u64(address)


def vma_field(address: int, name: str, pid: int | str = "self") -> int:
    """A kB field (Swap, AnonHugePages, Rss…) of the smaps entry of the VMA holding *address*."""
    inside = False
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            head = line.split(maxsplit=1)[0]
            if "-" in head and not head.endswith(":"):
                start, end = (int(x, 16) for x in head.split("-"))
                inside = start <= address < end
            elif inside and head == f"{name}:":
                return int(line.split()[1])
    raise LookupError(f"no VMA with {name} at {address:#x}")


def page_out(region: Region, offset: int = 0, length: int | None = None, tries: int = 5) -> bool:
    """MADV_PAGEOUT until smaps reports the whole range as swap; False if it never did.

    Swap is counted from smaps because pagemap shows pte markers (shmem) as swap entries too."""
    length = region.length - offset if length is None else length
    for _ in range(tries):
        region.madvise(MADV_PAGEOUT, offset, length)
        if vma_field(region.address + offset, "Swap") * 1024 >= length:
            return True
        time.sleep(0.05)
    return False


def require_pageout(region: Region, offset: int = 0, length: int | None = None) -> None:
    require(page_out(region, offset, length), "pages not swapped out",
            "MADV_PAGEOUT: reclaim declined them 5 times")


def _fault_of(uffd: Userfaultfd, st, address: int) -> PageFault:
    """The WP fault the store *st* must raise (it never arrives if the write went through)."""
    msgs = uffd.read(1, 0.5 if st.finished(0.02) else 5)
    assert msgs, (f"write to {address:#x} did not fault" if st.finished()
                  else f"write to {address:#x} stalled but no message came")
    msg = msgs[0]
    assert isinstance(msg, PageFault) and msg.is_wp and msg.is_write, msg
    return msg


def assert_blocks(ctx, uffd: Userfaultfd, address: int, value: int) -> None:
    """A store to *address* must stop in a WP fault at that page; resolve it and check it lands."""
    st = ctx.store(address, value)
    msg = _fault_of(uffd, st, address)
    page = address & ~(PAGE_SIZE - 1)
    assert msg.address & ~(PAGE_SIZE - 1) == page
    assert not st.finished(0.02), "writer resumed before the fault was resolved"
    uffd.unprotect(page, PAGE_SIZE)
    assert st.finished(5), "writer not woken by unprotect"
    assert load(address) == value


def assert_blocks_hp(ctx, uffd: Userfaultfd, region: Region, index: int, value: int) -> None:
    """As assert_blocks for page *index* of *region*, resolving the whole (huge) page."""
    address = region.page(index)
    st = ctx.store(address + 8, value)
    msg = _fault_of(uffd, st, address)
    assert not st.finished(0.02), "writer resumed before the fault was resolved"
    assert region.page(index) <= msg.address < region.page(index) + region.page_size
    uffd.unprotect(address, region.page_size)
    assert st.finished(5), "writer not woken by unprotect"
    assert load(address + 8) == value


def assert_writes_freely(ctx, address: int, value: int) -> None:
    st = ctx.store(address, value)
    assert st.finished(5), f"write to {address:#x} stalled: an unexpected fault"
    assert load(address) == value


class Child:
    """A forked child running *fn* (simple, native work only); its exit code is fn's result."""

    def __init__(self, fn) -> None:
        self.pid = os.fork()
        if self.pid == 0:  # the child: no Python threads exist here, only this one
            code = 3
            try:
                code = int(fn())
            except BaseException:
                code = 4
            os._exit(code)
        self.status: int | None = None

    def poll(self) -> int | None:
        if self.status is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = os.waitstatus_to_exitcode(status)
        return self.status

    def wait(self, timeout: float = 5.0) -> int | None:
        """Exit code, or None (after killing it) if it did not finish within *timeout*."""
        deadline = time.monotonic() + timeout
        while self.poll() is None:
            if time.monotonic() > deadline:
                self.kill()
                return None
            time.sleep(0.005)
        return self.status

    def kill(self) -> None:
        if self.status is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            _, status = os.waitpid(self.pid, 0)
            self.status = os.waitstatus_to_exitcode(status)


@contextlib.contextmanager
def child(fn):
    c = Child(fn)
    try:
        yield c
    finally:
        c.kill()


def child_write(address: int, value: int, expect_wp: bool | None = None):
    """The child's job: check its own protection of *address* (exit 10 if not as expected), then
    store."""

    def run() -> int:
        if expect_wp is not None and page_wp(address, in_child=True) != expect_wp:
            return 10
        native.store_u64(address, value)
        return 0 if native.load_u64(address) == value else 11

    return run


def require_fork_event(ctx, with_event: bool) -> None:
    if with_event and not ctx.supported & Feature.EVENT_FORK:
        pytest.skip("feature EVENT_FORK (mainline 4.11) absent on this kernel")


def run_forked(ctx, uffd: Userfaultfd, region: Region, run, with_event: bool,
               faults: tuple[int, ...] = (0,), exact: bool = False, timeout: float = 5) -> None:
    """fork() a child doing *run*; it must exit 0. With EVENT_FORK each page index in *faults*
    must fault WP on the child's new userfaultfd (at that page if *exact*) and is unprotected
    through it; without, the child runs alone."""
    if not with_event:
        with child(run) as c:
            assert c.wait(timeout) == 0, \
                f"child exit {c.status} (10: wrong bit 57 in the child; None: stuck)"
        return
    c, cuffd = fork_with_event(ctx, uffd, region, run)
    try:
        for i in faults:
            msg = ctx.fault(cuffd)
            assert msg.is_wp and (not exact or msg.address == region.page(i)), msg
            cuffd.unprotect(region.page(i), region.page_size)
        assert c.wait(timeout) == 0, f"child exit {c.status}"
    finally:
        c.kill()


def fork_with_event(ctx, uffd: Userfaultfd, region: Region, fn) -> tuple[Child, Userfaultfd]:
    """fork() while a native thread reads *uffd* (the forking thread waits for the FORK event to
    be read, and os.fork holds the GIL); returns the child and the child's new userfaultfd."""
    # No ranges: stopping it must not unprotect the parent's memory.
    h = native.FaultHandler(uffd, [], native.Policy.RECORD)
    c = Child(fn)
    try:
        h.wait_for(1, 5)
        forks = [r for r in h.records() if r.event == EVENT_FORK]
        assert len(forks) == 1, f"expected one FORK event, got {h.records()}"
    except BaseException:
        c.kill()
        raise
    finally:
        h.stop()
    child_uffd = Userfaultfd(forks[0].address)
    ctx._uffds.append(child_uffd)  # closed by the context's cleanup
    return c, child_uffd


def thp_region(ctx, fill: bool = True) -> Region:
    """A 2 MiB-aligned anonymous region backed by one PMD-mapped THP, or skip saying why."""
    try:
        with open(THP_ENABLED) as f:
            mode = f.read()
    except OSError:
        pytest.skip("no transparent huge pages (CONFIG_TRANSPARENT_HUGEPAGE off)")
    if "[never]" in mode:
        pytest.skip(f"THP disabled ({THP_ENABLED}: never)")
    region = ctx.region(THP_SIZE // PAGE_SIZE, align=THP_SIZE)
    region.madvise(MADV_HUGEPAGE)
    if fill:
        fill_pattern(region)
    else:
        native.store_u64(region.address, 1)  # fault the huge page in
    if vma_field(region.address, "AnonHugePages") * 1024 < THP_SIZE:
        pytest.skip("the kernel did not back the 2 MiB range with a THP (fragmented memory?)")
    return region


def in_thread(fn, *args):
    """Run *fn* on a Python thread (cffi calls release the GIL); returns (thread, result list)."""
    out: list = []

    def run():
        try:
            out.append(fn(*args))
        except BaseException as exc:  # reported by the caller
            out.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, out


# --- swap-out (MADV_PAGEOUT with a real swap file) -----------------------------------------------
@uffd_test(mem=MEM_SWAPPABLE)
def test_pageout_keeps_wp_and_write_faults_after_swapin(ctx, memtype, swap):
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


@uffd_test(mem=MEM_SWAPPABLE)
def test_unprotect_swapped_page(ctx, memtype, swap):
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


@uffd_test(mem=MEM_SWAPPABLE)
def test_protect_while_swapped(ctx, memtype, swap):
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
    expect = b"\x5a" * 8 if memtype in SHARED else bytes(8)
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


SAMPLE = (0, 1, 255, 256, 511)  # subpages to write: the edges and the middle of the THP


@uffd_test(mem=MEM_ANON)
def test_thp_protected_whole(ctx, memtype):
    """Every subpage of a protected PMD-mapped THP faults on write."""
    uffd, region = _thp_protected(ctx)
    for i in SAMPLE:
        assert_blocks(ctx, uffd, region.page(i) + 8, 0x100 + i)
        assert load(region.page(i)) == pattern(i)


@pytest.mark.parametrize("how", ["mprotect", "partial-unprotect", "dontneed-subpage"])
@uffd_test(mem=MEM_ANON)
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


@uffd_test(mem=MEM_ANON)
def test_collapse_of_protected_ptes_refused_or_safe(ctx, memtype):
    """MADV_COLLAPSE (6.1) must not turn uffd-wp protected ptes into an unprotected huge page:
    khugepaged refuses (SCAN_PTE_UFFD_WP). Whatever madvise answers, every subpage still has bit 57,
    still faults on write, and holds its data."""
    control = ctx.region(THP_SIZE // PAGE_SIZE, align=THP_SIZE)
    control.fill(1)
    try:
        control.madvise(MADV_COLLAPSE)
    except OSError as exc:
        pytest.skip(f"MADV_COLLAPSE does not work on an unregistered range here: {exc}")
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


@uffd_test(mem=MEM_ANON)
def test_thp_pageout_keeps_protection(ctx, memtype, swap):
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
    assert load(addr) == (0xC41D if memtype in SHARED else 0x5A5A5A5A5A5A5A5A)
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
    assert load(addr) == (0xC41D if memtype in SHARED else 0x5A5A5A5A5A5A5A5A)
    assert not uffd.read(4, 0.05), "the child's fault reached the parent's userfaultfd"


@pytest.mark.parametrize("with_event", [False, True], ids=["no-event", "event"])
@uffd_test(mem=MEM_SWAPPABLE)
def test_fork_swapped_protected_page(ctx, memtype, swap, with_event):
    """fork() of a protected page that is swapped out (swap entry, or shmem marker): the child's
    entry has bit 57 exactly when EVENT_FORK keeps it registered (8f34f1eac382)."""
    require_fork_event(ctx, with_event)
    region = ctx.region(2)
    fill_pattern(region)
    uffd = ctx.uffd(Feature.EVENT_FORK if with_event else 0)
    ctx.register(uffd, region)
    uffd.writeprotect(region.address, region.length)
    require_pageout(region)
    addr = region.page(0)
    run_forked(ctx, uffd, region, child_write(addr, 0xD00D, expect_wp=with_event), with_event)
    assert region_wp(region) == [True, True]
    assert load(addr) == (0xD00D if memtype in SHARED else pattern(0))
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
    uffd-wp bits and markers that moved with it (0cef0bb836e3): no bit 57 at the new address, the
    writes go through, and registering the new range again (WP mode, nothing protected) shows no
    stale protection."""
    uffd, region = ctx.wp_region(3)
    region.madvise(MADV_DONTNEED, region.page_size, region.page_size)  # a marker on file types
    assert region_wp(region) == [True, memtype != "anon", True], "precondition: protected"
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
    t, out = in_thread(_move, region)
    msg = uffd.read_one(5)
    t.join(5)
    assert not t.is_alive()
    assert out and not isinstance(out[0], BaseException), out
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
