# SPDX-License-Identifier: GPL-2.0-only
"""Non-cooperative events (FORK, REMAP, REMOVE, UNMAP) delivered while write-protection is armed.

The kernel (fs/userfaultfd.c, userfaultfd_event_wait_completion) makes the thread that causes an
event wait until the event has been read. So each event here is triggered on another thread (a cffi
call releases the GIL) or, for fork() which holds the GIL, read by a native thread, and the main
thread reads it with a timeout.
"""

from __future__ import annotations

import os

import pytest

from uffdwp import native
from uffdwp._ffi import ffi, lib
from uffdwp.kernel_facts import Feature
from uffdwp.memory import (
    MADV_DONTNEED,
    MADV_REMOVE,
    PROT_READ,
    PROT_WRITE,
    Region,
    reserve_address,
)
from uffdwp.messages import (
    EVENT_FORK,
    PageFault,
    RemapEvent,
    RemoveEvent,
    UnmapEvent,
)

from .observe import page_wp, region_wp
from .test_mm import (
    SHARED,
    assert_blocks_hp,
    child,
    child_write,
    fork_with_event,
    in_thread,
)
from .uffdtest import MEM_ALL, MEM_SHARED, uffd_test

MAP_FIXED_ANON = 0x10 | 0x20 | 0x02  # MAP_FIXED | MAP_ANONYMOUS | MAP_PRIVATE


def event_from(uffd, fn, *args, blocked_check: bool = True):
    """Run *fn* on a thread, check it waits for the event to be read, read it; returns
    (message, fn's result)."""
    t, out = in_thread(fn, *args)
    if blocked_check:
        t.join(0.1)
        assert t.is_alive() or not out or isinstance(out[0], BaseException), \
            "the thread causing the event returned before the event was read"
    msgs = uffd.read(1, 5)
    t.join(5)
    assert not t.is_alive(), "the thread causing the event is still blocked after the read"
    assert out, "no result from the thread"
    if isinstance(out[0], BaseException):
        raise out[0]
    assert msgs, "no event within 5 s"
    return msgs[0], out[0]


def munmap(address: int, length: int) -> int:
    return lib.munmap(ffi.cast("void *", address), length)


def refill(address: int, length: int) -> None:
    """Map anonymous memory over a hole we unmapped, so the region's final munmap stays ours."""
    lib.mmap(ffi.cast("void *", address), length, PROT_READ | PROT_WRITE, MAP_FIXED_ANON, -1, 0)


# --- REMOVE ---------------------------------------------------------------------------------------
@uffd_test(mem=MEM_ALL, features=Feature.EVENT_REMOVE)
def test_remove_event_dontneed(ctx, memtype):
    """MADV_DONTNEED of pages 1-2 of a protected region: RemoveEvent(start, end) with exactly that
    range; the other pages keep their protection."""
    uffd, region = ctx.wp_region(4)
    ps = region.page_size
    msg, _ = event_from(uffd, region.madvise, MADV_DONTNEED, ps, 2 * ps)
    assert msg == RemoveEvent(region.page(1), region.page(3))
    bits = region_wp(region)
    assert bits[0] and bits[3], "pages outside the removed range lost their protection"
    assert_blocks_hp(ctx, uffd, region, 3, 0x11)
    assert not uffd.read(4, 0.05)


@uffd_test(mem=MEM_SHARED, features=Feature.EVENT_REMOVE)
def test_remove_event_madv_remove(ctx, memtype):
    """MADV_REMOVE (hole punch) on shared shmem/hugetlb: RemoveEvent with the exact range, and the
    punched page reads as zeros afterwards. (MADV_REMOVE needs a shared file mapping.)"""
    uffd, region = ctx.wp_region(3)
    ps = region.page_size
    msg, _ = event_from(uffd, region.madvise, MADV_REMOVE, ps, ps)
    assert msg == RemoveEvent(region.page(1), region.page(2))
    assert region.read(ps, 8) == bytes(8)
    assert region_wp(region)[0] and region_wp(region)[2]
    assert_blocks_hp(ctx, uffd, region, 2, 0x12)


@uffd_test(mem=MEM_ALL)
def test_no_remove_event_without_feature(ctx, memtype):
    """Without EVENT_REMOVE, MADV_DONTNEED returns at once and queues no message."""
    uffd, region = ctx.wp_region(2)
    region.madvise(MADV_DONTNEED, 0, region.page_size)  # would block for ever if an event came
    assert not uffd.read(4, 0.05)


# --- UNMAP ----------------------------------------------------------------------------------------
@uffd_test(mem=MEM_ALL, features=Feature.EVENT_UNMAP)
def test_unmap_event(ctx, memtype):
    """munmap of the last two pages of a protected region: UnmapEvent(start, end) with exactly that
    range; the remaining pages stay protected."""
    uffd, region = ctx.wp_region(4)
    ps = region.page_size
    try:
        msg, rc = event_from(uffd, munmap, region.page(2), 2 * ps)
        assert rc == 0
        assert msg == UnmapEvent(region.page(2), region.address + region.length)
        assert region_wp(Region(memtype, region.address, 2 * ps, ps)) == [True, True]
        assert_blocks_hp(ctx, uffd, region, 1, 0x21)
    finally:
        refill(region.page(2), 2 * ps)


@uffd_test(mem=MEM_ALL, features=Feature.EVENT_UNMAP)
def test_unmap_event_whole_region_with_blocked_writer(ctx, memtype):
    """A writer blocked in a WP fault, then the region is unmapped from another thread: the fault
    comes first, then UnmapEvent for the whole range. Unprotecting the page (before the unmap) lets
    the writer finish."""
    uffd, region = ctx.wp_region(2)
    st = ctx.store(region.page(0) + 8, 0x22)
    fault = ctx.fault(uffd)
    assert isinstance(fault, PageFault) and fault.is_wp
    uffd.unprotect(region.page(0), region.page_size)
    assert st.finished(5)
    try:
        msg, rc = event_from(uffd, munmap, region.address, region.length)
        assert rc == 0
        assert msg == UnmapEvent(region.address, region.address + region.length)
    finally:
        refill(region.address, region.length)


# --- REMAP ----------------------------------------------------------------------------------------
def _move(region: Region) -> int:
    target = reserve_address(region.length, max(region.page_size, 2 << 20))
    return region.remap(target)


@uffd_test(mem=MEM_ALL, features=Feature.EVENT_REMAP)
def test_remap_event_payload(ctx, memtype):
    """mremap of a protected region: RemapEvent(old, new, len) exactly; the moved pages keep bit 57
    and a write at the new address faults WP there, data intact."""
    uffd, region = ctx.wp_region(2)
    old = region.address
    msg, new = event_from(uffd, _move, region)
    assert msg == RemapEvent(old, new, region.length)
    assert new == region.address != old
    assert region_wp(region) == [True, True]
    assert_blocks_hp(ctx, uffd, region, 0, 0x31)
    assert region.read(region.page_size, 8) == b"\x5a" * 8


# --- FORK -----------------------------------------------------------------------------------------
@uffd_test(mem=MEM_ALL, features=Feature.EVENT_FORK)
def test_fork_event_gives_child_uffd(ctx, memtype):
    """fork() with EVENT_FORK: exactly one ForkEvent whose fd is a new userfaultfd in this process
    (not the parent's); the child's write faults there with the child's address and thread id."""
    uffd, region = ctx.wp_region(1)
    c, cuffd = fork_with_event(ctx, uffd, region, child_write(region.address + 8, 0x41))
    try:
        assert cuffd.fileno() != uffd.fileno()
        assert os.readlink(f"/proc/self/fd/{cuffd.fileno()}") == "anon_inode:[userfaultfd]"
        msg = ctx.fault(cuffd)
        assert msg.is_wp and msg.is_write
        assert region.address <= msg.address < region.address + region.page_size
        if ctx.features() & Feature.THREAD_ID:
            assert msg.thread_id == c.pid, "fault thread id is not the child's"
        cuffd.unprotect(region.address, region.page_size)
        assert c.wait(5) == 0
    finally:
        c.kill()
    assert region_wp(region) == [True]
    expect = 0x41 if memtype in SHARED else 0x5A5A5A5A5A5A5A5A
    assert native.load_u64(region.address + 8) == expect


@uffd_test(mem=MEM_ALL)
def test_no_fork_event_without_feature(ctx, memtype):
    """Without EVENT_FORK, fork() queues nothing on the parent's userfaultfd."""
    uffd, _region = ctx.wp_region(1)
    with child(lambda: 0) as c:
        assert c.wait(5) == 0
    assert not uffd.read(4, 0.05)


def _fork_records(uffd):
    h = native.FaultHandler(uffd, [], native.Policy.RECORD)
    try:
        with child(lambda: 0) as c:
            assert c.wait(5) == 0
        h.wait_for(1, 5)
        return h.records()
    finally:
        h.stop()


@uffd_test(mem=MEM_ALL, features=Feature.EVENT_FORK)
def test_fork_event_read_by_native_thread(ctx, memtype):
    """The FORK event record: event UFFD_EVENT_FORK with a valid descriptor, and only one."""
    uffd, region = ctx.wp_region(1)
    records = _fork_records(uffd)
    assert [r.event for r in records] == [EVENT_FORK]
    fd = records[0].address
    try:
        assert os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:[userfaultfd]"
    finally:
        os.close(fd)
    assert page_wp(region.address)


@pytest.mark.parametrize("event", ["remove", "unmap"])
@uffd_test(mem=MEM_ALL, features=Feature.EVENT_REMOVE | Feature.EVENT_UNMAP)
def test_event_then_fault_order(ctx, memtype, event):
    """An event and a WP fault from two threads are both delivered, each once, with their own
    payloads, and resolving the fault after the event still works."""
    uffd, region = ctx.wp_region(4)
    ps = region.page_size
    if event == "remove":
        fn, args, want = region.madvise, (MADV_DONTNEED, 3 * ps, ps), RemoveEvent(
            region.page(3), region.address + region.length)
    else:
        fn, args, want = munmap, (region.page(3), ps), UnmapEvent(
            region.page(3), region.address + region.length)
    try:
        msg, _ = event_from(uffd, fn, *args)
        assert msg == want
        assert_blocks_hp(ctx, uffd, region, 0, 0x51)
        assert not uffd.read(4, 0.05)
    finally:
        if event == "unmap":
            refill(region.page(3), ps)
