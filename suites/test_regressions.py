# SPDX-License-Identifier: GPL-2.0-only
"""Regression tests for fixed UFFD-WP kernel bugs that user space can reproduce.

Each test names its fix commit and declares ``bug=<key>`` (uffdwp.known_bugs.KNOWN_BUGS), and
the one check that shows the bug (``with ctx.bug_check():``): a kernel older than the fix in its
own series may fail that check, and the report then names the known bug. Everything before the
check is a precondition: its failure is an error, or a skip that names the environment.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import mmap
import os
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from uffdwp import hostsetup, native, pagemap
from uffdwp.kernel_facts import Feature
from uffdwp.memory import MADV_DONTNEED, MADV_PAGEOUT, PAGE_SIZE, Region, reserve_address
from uffdwp.runner.precondition import require

from .observe import page_wp, region_wp, wp_pages
from .test_mm import (
    MEM_SWAPPABLE,
    SAMPLE,
    SHARED,
    THP_SIZE,
    assert_blocks,
    assert_blocks_hp,
    assert_writes_freely,
    child,
    child_write,
    fill_pattern,
    load,
    pattern,
    require_fork_event,
    require_pageout,
    run_forked,
    thp_region,
    vma_field,
)
from .uffdtest import (
    MEM_ALL,
    MEM_ANON,
    MEM_HUGETLB,
    stress,
    uffd_test,
)

WRITES = stress(6000, minimum=500)


# --- 6ce64428d620: memory corruption due to writeprotect ------------------------------------------
@uffd_test(mem=MEM_ALL, bug="wp-race-corruption", timeout=90)
def test_wp_race_no_lost_writes(ctx, memtype):
    """6ce64428d620 (5.12): native writers race UFFDIO_WRITEPROTECT protect/unprotect cycles on
    pages that fork() left copy-on-write; every page must end with the last value written to it,
    at both offsets the two writers use (no lost writes, no corruption). An attempt whose
    writers finished before the race window was exercised (a slow or emulated CPU) tested
    nothing: it is tried again, then skipped saying so."""
    ctx.retry(_wp_race_once, tries=3, budget_s=70)


def _wp_race_once(ctx) -> None:
    pages = 4 if ctx.memtype.startswith("hugetlb") else 16
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


# --- 099dd6878b9b: pte_same_as_swp() not removing the uffd-wp bit ---
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
    if os.geteuid() != 0:
        pytest.skip("swapon needs root")
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
                pytest.skip(f"cannot set up a swap file in {scratch} ({step[0]}: "
                            f"{_swap_error(res, path)})")
        yield path
    finally:  # (an error from swapoff here: it was never on, or the test swapped it off)
        subprocess.run(["swapoff", str(path)], capture_output=True, timeout=60, check=False)
        path.unlink(missing_ok=True)


@uffd_test(mem=MEM_SWAPPABLE, bug=("swp-uffd-wp-bit", "unuse-pte-bits"), timeout=60)
def test_swapoff_keeps_wp_bit_and_data(ctx, memtype, swap):
    """Protected pages swapped out to a swap file, then that file is swapped off: swapoff
    succeeds (099dd6878b9b, 5.13: unuse_pte() compares swap ptes ignoring the uffd-wp bit), and
    the pages come back protected (14a762dd1977, 5.19: unuse_pte() carries the bit over), with
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
    if vma_field(region.address, "Swap"):
        swaps = " ".join(Path("/proc/swaps").read_text().split()[5:])
        pytest.skip(f"the pages went to another swap device than the test's own ({swaps})")
    if memtype != "shmem":  # private pages are mapped back by unuse_pte()
        assert all(e.present for e in pagemap.entries(region.address, region.pages))
    for i in range(region.pages):
        assert load(region.page(i)) == pattern(i)
    with ctx.bug_check("unuse-pte-bits"):
        assert all(region_wp(region)), "uffd-wp bit lost by swapoff"
        assert_blocks(ctx, uffd, region.page(2) + 8, 0x99)


# --- 8f34f1eac382: uffd-wp special cases for fork() ---
@pytest.mark.parametrize("with_event", [False, True], ids=["no-event", "event"])
@uffd_test(mem=MEM_SWAPPABLE, bug="fork-special-cases")
def test_fork_special_cases(ctx, memtype, swap, with_event):
    """8f34f1eac382 (5.14): fork() of a protected present page and a protected swapped-out page.
    Without EVENT_FORK the child's copies carry no bit 57 and it writes both freely; with it both
    keep bit 57 and the child's write faults on its new userfaultfd. The child never hangs; the
    parent keeps its protection."""
    require_fork_event(ctx, with_event)
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
        assert load(region.page(i) + 8) == (0xF00 + i if memtype in SHARED else 0)


# --- 49d6d7fb6313: pte marker when fork() without fork event ---
def _marker_region(ctx, memtype, extra=0):
    """A 2-page protected region whose page 0 is a uffd-wp pte marker (no page)."""
    uffd, region = ctx.wp_region(2, extra=extra)
    if memtype == "anon":  # WP_UNPOPULATED: protecting an empty anon pte installs a marker
        region.madvise(MADV_DONTNEED, 0, region.page_size)
        uffd.writeprotect(region.page(0), region.page_size)
    else:  # shmem/hugetlb: zapping a protected pte leaves a marker
        region.madvise(MADV_DONTNEED, 0, region.page_size)
    assert not pagemap.entry(region.page(0)).present
    assert region_wp(region) == [True, True]
    return uffd, region


@pytest.mark.parametrize("with_event", [False, True], ids=["no-event", "event"])
@uffd_test(mem=MEM_ALL, features=Feature.WP_UNPOPULATED, bug="fork-pte-marker")
def test_fork_pte_marker(ctx, memtype, with_event):
    """49d6d7fb6313 (6.2): fork() of a range holding a uffd-wp pte marker. Without EVENT_FORK the
    child must not inherit the marker (its vma is not registered): no bit 57, its write goes through
    at once. With EVENT_FORK the marker is kept and the child's write faults on the new fd. The
    parent keeps its marker either way. (WP_UNPOPULATED is what puts markers on anon memory.)"""
    require_fork_event(ctx, with_event)
    uffd, region = _marker_region(ctx, memtype, Feature.EVENT_FORK if with_event else 0)
    addr = region.page(0) + 8
    with ctx.bug_check():
        run_forked(ctx, uffd, region, child_write(addr, 0xAB, expect_wp=with_event), with_event)
        assert region_wp(region) == [True, True], "the parent lost its marker"
        assert_blocks_hp(ctx, uffd, region, 0, 0xCD)


# --- hugetlb wr-protection for the CoW optimization path (6.3) ---
@uffd_test(mem=MEM_HUGETLB, bug="hugetlb-cow-wp")
def test_hugetlb_wp_unpopulated_then_write(ctx, memtype):
    """hugetlb-cow-wp (6.3): a protected, never populated hugetlb page (a pte marker); the first
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


# --- 24bf08c4376b: uffd-wp for THP migration entries ---
def _numa_nodes() -> list[int]:
    try:
        text = Path("/sys/devices/system/node/online").read_text().strip()
    except OSError:
        return [0]
    nodes: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        nodes += range(int(lo), int(hi or lo) + 1)
    return nodes


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


@uffd_test(mem=MEM_ANON, bug="thp-migration")
def test_thp_migration_keeps_wp(ctx, memtype):
    """24bf08c4376b (6.3): migrating a protected PMD-mapped THP goes through a PMD migration entry,
    which must carry the uffd-wp bit: after the move every subpage has bit 57 and writes fault."""
    nodes = _numa_nodes()
    if len(nodes) < 2 or os.uname().machine != "x86_64":
        pytest.skip("a single NUMA node: a THP cannot be migrated here (set_pmd_migration_entry is "
                    "only reached by migration; MADV_PAGEOUT takes the swap path, covered in "
                    "test_mm.py::test_thp_pageout_keeps_protection)")
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


# --- 5a2f8d22ace4: hugetlb uffd-wp during fork() ---
@pytest.mark.parametrize("with_event", [False, True], ids=["no-event", "event"])
@uffd_test(mem=MEM_HUGETLB, bug="hugetlb-fork")
def test_hugetlb_fork(ctx, memtype, with_event):
    """5a2f8d22ace4 (6.4): fork() of protected hugetlb memory, a present page and a marker. The
    child's copy keeps bit 57 exactly when EVENT_FORK registers it; without the event the child
    writes the present page freely and never hangs; with it the write faults on the child's fd."""
    require_fork_event(ctx, with_event)
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
    assert load(addr) == (0xBB if memtype == "hugetlb" else 0x5A5A5A5A5A5A5A5A)
    with ctx.bug_check():
        assert_blocks_hp(ctx, uffd, region, 0, 0xCC)


# --- 0f230bc24b6e: uffd-wp bit lost when hugetlb unshare happens ---
def _fstype(path: Path) -> str:
    """The filesystem type of the mount holding *path* (for skip reasons)."""
    best, fstype = "", "?"
    with open("/proc/self/mounts") as f:
        for line in f:
            fields = line.split()
            mnt = fields[1]
            inside = str(path).startswith(mnt.rstrip("/") + "/") or str(path) == mnt
            if inside and len(mnt) > len(best):
                best, fstype = mnt, fields[2]
    return fstype


@contextlib.contextmanager
def odirect_file():
    """An O_DIRECT file on the scratch disk that has taken one aligned write, or a skip naming the
    filesystem that refuses it (tmpfs before 6.6 rejects O_DIRECT: a guest's /var/tmp is one)."""
    where = hostsetup.SCRATCH_DIR
    fd, path = tempfile.mkstemp(prefix="uffdwp-odirect-", dir=where)
    os.unlink(path)
    probe = mmap.mmap(-1, PAGE_SIZE)  # page-aligned, as O_DIRECT wants
    try:
        try:
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_DIRECT)
            os.write(fd, probe)
        except OSError as exc:
            pytest.skip(f"no O_DIRECT writes on {where} ({_fstype(where)}) to pin pages with: "
                        f"{exc}")
        yield fd
    finally:
        os.close(fd)
        probe.close()


@uffd_test(mem=("hugetlb-private",), bug="hugetlb-unshare", timeout=30)
def test_hugetlb_unshare_keeps_wp(ctx, memtype):
    """0f230bc24b6e (6.4): a read-only pin (an O_DIRECT write reads the buffer through FOLL_PIN) of
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


# --- 0cef0bb836e3: clear uffd-wp PTE/PMD state on mremap() (CVE-2025-21696) ---
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


@pytest.mark.parametrize("state", ["present", "marker"])
@uffd_test(mem=MEM_ALL, bug="mremap-clear")
def test_mremap_clears_wp(ctx, memtype, state):
    """0cef0bb836e3 (6.13, CVE-2025-21696): mremap() of protected memory without EVENT_REMAP drops
    the registration, and must drop the uffd-wp bits and markers too: none at the new address, and
    a new WP registration there sees no stale protection."""
    if state == "marker":
        if memtype == "anon" and not ctx.supported & Feature.WP_UNPOPULATED:
            pytest.skip("feature WP_UNPOPULATED (mainline 6.4) absent: no markers on anon")
        uffd, region = _marker_region(
            ctx, memtype, Feature.WP_UNPOPULATED if memtype == "anon" else 0)
    else:
        uffd, region = ctx.wp_region(2)
    assert all(region_wp(region)), "precondition: the pages are protected before the move"
    _move(region)
    _assert_no_wp_state(ctx, region, uffd)
    if memtype in SHARED or state == "present":
        assert region.read(region.page_size, 8) == b"\x5a" * 8


@uffd_test(mem=MEM_SWAPPABLE, bug="mremap-clear")
def test_mremap_clears_wp_swapped(ctx, memtype, swap):
    """0cef0bb836e3: the same for protected pages that are swapped out when moved."""
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


@uffd_test(mem=MEM_ANON, bug="mremap-clear")
def test_mremap_clears_wp_thp(ctx, memtype):
    """0cef0bb836e3: the same for a protected PMD-mapped THP moved whole (move_huge_pmd)."""
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


# --- zero-filled mTHP subpage remapped to the shared zero page loses uffd-wp (6.18) ---
def _zero_pfns(region: Region, indexes) -> set[int]:
    return {pagemap.entry(region.page(i)).pfn for i in indexes}


def _split_by_partial_pageout(region: Region) -> None:
    """MADV_PAGEOUT of the first subpage only: the kernel splits the large folio first."""
    region.madvise(MADV_PAGEOUT, 0, PAGE_SIZE)


@uffd_test(mem=MEM_ANON, bug="mthp-zeropage")
def test_thp_split_zero_subpages_keep_wp(ctx, memtype):
    """mthp-zeropage (fixed in 6.18): since 6.12 splitting an anonymous large folio maps its
    zero-filled subpages to the shared zero page (try_to_map_unused_to_zeropage). For a protected
    folio those subpages must stay protected: bit 57 kept, writes fault."""
    if not list(Path("/sys/kernel/mm/transparent_hugepage").glob("hugepages-*kB/enabled")):
        pytest.skip("no mTHP sysfs knobs (transparent_hugepage/hugepages-*kB, 6.8+)")
    zero = [i for i in range(2, 512) if i not in SAMPLE]
    # Control: an unprotected THP, split the same way, must show the zero-page remap at all.
    control = thp_region(ctx, fill=False)
    native.store_u64(control.page(0), 1)
    native.store_u64(control.page(1), 1)
    _split_by_partial_pageout(control)
    pfns = _zero_pfns(control, zero)
    if len(pfns) != 1 or 0 in pfns:
        pytest.skip("this kernel does not map zero-filled subpages of a split THP to the shared "
                    "zero page (before 6.12, or the split did not happen)")
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
