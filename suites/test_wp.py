# SPDX-License-Identifier: GPL-2.0-only
"""Write-protect core semantics: registration, UFFDIO_WRITEPROTECT, WP faults, wake, pagemap.

Kernel sources consulted: fs/userfaultfd.c (userfaultfd_register, userfaultfd_writeprotect,
userfault_msg, userfaultfd_release), mm/userfaultfd.c (mwriteprotect_range), mm/memory.c
(pte markers, userfaultfd_wp_use_markers), include/uapi/linux/userfaultfd.h.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading

import pytest

from uffdwp import native, pagemap
from uffdwp.errors import UffdError
from uffdwp.kernel_facts import Feature, Ioctl
from uffdwp.memory import PAGE_SIZE, PROT_READ, PROT_WRITE

from .capabilities import PAGEMAP_WP
from .observe import region_wp
from .support import (
    BLOCKED,
    RESUME,
    expect_errno,
    fault_addresses,
    load_on_thread,
    no_message,
)
from .uffdtest import (
    MEM_ALL,
    MEM_ANON,
    MEM_FILE,
    MEM_HUGETLB,
    MEM_PRIVATE,
    MEM_SHARED,
    MINOR,
    MISSING,
    WP,
    uffd_test,
)

MINOR_FEATURES = Feature.MINOR_SHMEM | Feature.MINOR_HUGETLBFS


# --- registration --------------------------------------------------------------------------------
@uffd_test(mem=MEM_ALL, modes=WP)
def test_register_wp_ioctls(ctx, memtype):
    """REGISTER_MODE_WP answers WRITEPROTECT and WAKE; CONTINUE only comes with MINOR mode
    (fs/userfaultfd.c masks it out since 5.13); hugetlb ranges never offer ZEROPAGE
    (UFFD_API_RANGE_IOCTLS_BASIC), the others offer COPY and ZEROPAGE."""
    region = ctx.region(1)
    ioctls = ctx.register(ctx.uffd(), region, WP)
    assert ioctls & (Ioctl.WRITEPROTECT | Ioctl.WAKE) == Ioctl.WRITEPROTECT | Ioctl.WAKE
    assert not ioctls & Ioctl.CONTINUE
    assert ioctls & Ioctl.COPY
    if region.mem_type.hugetlb:
        assert not ioctls & Ioctl.ZEROPAGE
    else:
        assert ioctls & Ioctl.ZEROPAGE


@uffd_test(mem=MEM_ALL, modes=MISSING | WP)
@pytest.mark.parametrize("mode", [MISSING, WP, MISSING | WP], ids=["missing", "wp", "missing-wp"])
def test_register_ioctls_per_mode(ctx, memtype, mode):
    """WRITEPROTECT is declared exactly when WP mode is registered (since 5.7: "Declare the WP
    ioctl only if the WP mode is specified"); WAKE and COPY always; CONTINUE never without MINOR."""
    region = ctx.region(1)
    ioctls = ctx.register(ctx.uffd(), region, mode)
    assert ioctls & Ioctl.WAKE and ioctls & Ioctl.COPY
    assert bool(ioctls & Ioctl.WRITEPROTECT) == bool(mode & WP)
    assert not ioctls & Ioctl.CONTINUE
    assert bool(ioctls & Ioctl.ZEROPAGE) == (not region.mem_type.hugetlb)


@uffd_test(mem=MEM_FILE, modes=MINOR | WP)
@pytest.mark.parametrize("mode", [MINOR, MINOR | WP], ids=["minor", "minor-wp"])
def test_register_minor_ioctls(ctx, memtype, mode):
    """MINOR mode on shmem/hugetlb declares CONTINUE; WRITEPROTECT only alongside WP."""
    region = ctx.region(1)
    ioctls = ctx.register(ctx.uffd(), region, mode)
    assert ioctls & Ioctl.CONTINUE and ioctls & Ioctl.WAKE
    assert bool(ioctls & Ioctl.WRITEPROTECT) == bool(mode & WP)


@uffd_test(mem=MEM_ANON, modes=WP)
@pytest.mark.parametrize("mode", [MINOR, MINOR | WP], ids=["minor", "minor-wp"])
def test_register_minor_on_anon_rejected(ctx, memtype, mode):
    """MINOR mode needs a page cache: on anonymous memory REGISTER fails with EINVAL even when
    the uffd negotiated every MINOR feature (vma_can_userfault)."""
    region = ctx.region(1)
    uffd = ctx.uffd(extra=ctx.supported & MINOR_FEATURES)
    expect_errno(errno.EINVAL, uffd.register, region.address, region.length, mode)


@uffd_test(mem=MEM_ALL)
def test_wp_unregistered_range_enoent(ctx, memtype):
    """UFFDIO_WRITEPROTECT on a range this uffd never registered: ENOENT (mwriteprotect_range)."""
    region = ctx.region(1)
    region.fill(1)
    uffd = ctx.uffd()
    expect_errno(errno.ENOENT, uffd.writeprotect, region.address, region.length)
    expect_errno(errno.ENOENT, uffd.unprotect, region.address, region.length)


@uffd_test(mem=MEM_ALL, modes=MISSING, features=Feature.PAGEFAULT_FLAG_WP)
def test_wp_missing_only_range_enoent(ctx, memtype):
    """A range registered only in MISSING mode cannot be write-protected: ENOENT."""
    region = ctx.region(1)
    uffd = ctx.uffd()  # asks for PAGEFAULT_FLAG_WP: declared, so it skips where it is absent
    ctx.register(uffd, region, MISSING)
    expect_errno(errno.ENOENT, uffd.writeprotect, region.address, region.length)


@uffd_test(mem=MEM_ALL)
def test_wp_range_beyond_registration_enoent(ctx, memtype):
    """Protecting a range that runs past the registered part fails with ENOENT."""
    region = ctx.region(2)
    region.fill(2)
    uffd = ctx.uffd()
    ctx.register(uffd, region, WP, length=region.page_size)
    expect_errno(errno.ENOENT, uffd.writeprotect, region.address, region.length)


# --- argument validation -------------------------------------------------------------------------
@uffd_test(mem=MEM_ALL)
@pytest.mark.parametrize("case", ["start", "length", "zero-length", "both"])
def test_wp_bad_range_einval(ctx, memtype, case):
    """validate_range(): start and length must be page aligned and length non-zero: EINVAL."""
    uffd, region = ctx.wp_region(2, protect=False)
    start, length = {
        "start": (region.address + 8, PAGE_SIZE),
        "length": (region.address, PAGE_SIZE + 8),
        "zero-length": (region.address, 0),
        "both": (region.address + 8, 8),
    }[case]
    expect_errno(errno.EINVAL, uffd.writeprotect, start, length)
    expect_errno(errno.EINVAL, uffd.unprotect, start, length)
    assert region_wp(region) == [False, False]


@uffd_test(mem=MEM_HUGETLB)
@pytest.mark.parametrize("case", ["start", "length"])
def test_wp_hugetlb_not_huge_aligned_einval(ctx, memtype, case):
    """On hugetlb the range must be aligned to the huge page size (base-page aligned is not
    enough): mwriteprotect_range answers EINVAL and protects nothing."""
    uffd, region = ctx.wp_region(2, protect=False)
    start, length = {
        "start": (region.address + PAGE_SIZE, region.page_size),
        "length": (region.address, region.page_size + PAGE_SIZE),
    }[case]
    expect_errno(errno.EINVAL, uffd.writeprotect, start, length)
    assert region_wp(region) == [False, False]


@uffd_test(mem=MEM_ANON)
def test_wp_with_dontwake_rejected(ctx, memtype):
    """MODE_WP together with MODE_DONTWAKE is meaningless (protecting wakes nobody): EINVAL."""
    uffd, region = ctx.wp_region(1, protect=False)
    expect_errno(errno.EINVAL, uffd.writeprotect, region.address, region.length, True,
                 dontwake=True)


# --- faults --------------------------------------------------------------------------------------
@uffd_test(mem=MEM_ALL)
def test_write_faults_wp(ctx, memtype):
    """A store to a protected page blocks and is reported as a WP|WRITE fault at the page
    address (masked to PAGE_SIZE without EXACT_ADDRESS), with the writer's thread id; the
    store lands only after unprotect, and the rest of the page is unchanged."""
    uffd, region = ctx.wp_region(2, fill=0x5A)
    target = region.page(1) + 5 * PAGE_SIZE % region.page_size + 0x128
    store = ctx.store(target, 0x1122334455667788)
    msg = ctx.fault(uffd)
    assert msg.is_wp and msg.is_write and not msg.is_minor
    assert msg.address in fault_addresses(target, region)
    if ctx.features() & Feature.THREAD_ID:
        assert msg.thread_id == store.tid
    assert not store.finished(0.05)
    assert native.load_u64(target) == 0x5A5A5A5A5A5A5A5A  # not landed while protected
    uffd.unprotect(region.page(1), region.page_size)
    assert store.finished(RESUME)
    assert native.load_u64(target) == 0x1122334455667788
    off = target - region.address
    data = region.read()
    assert data[:off] == b"\x5a" * off and data[off + 8:] == b"\x5a" * (region.length - off - 8)


@uffd_test(mem=MEM_ALL, features=Feature.EXACT_ADDRESS)
def test_write_fault_exact_address(ctx, memtype):
    """With EXACT_ADDRESS the fault message carries the faulting byte address (5.18)."""
    uffd, region = ctx.wp_region(1)
    target = region.address + 3 * PAGE_SIZE % region.page_size + 0x7F8
    store = ctx.store(target)
    msg = ctx.fault(uffd)
    assert msg.is_wp and msg.is_write
    assert msg.address == target
    uffd.unprotect(region.address, region.length)
    assert store.finished(RESUME)


@uffd_test(mem=MEM_ALL, features=Feature.THREAD_ID)
def test_fault_thread_ids(ctx, memtype):
    """Two writers blocked on two protected pages: each message names its own thread (THREAD_ID),
    and unprotecting one page releases only that writer."""
    uffd, region = ctx.wp_region(2)
    a, b = ctx.store(region.page(0)), ctx.store(region.page(1))
    faults = {}
    for _ in range(2):
        msg = ctx.fault(uffd)
        faults[msg.address & ~(region.page_size - 1)] = msg.thread_id
    assert faults == {region.page(0): a.tid, region.page(1): b.tid}
    uffd.unprotect(region.page(1), region.page_size)
    assert b.finished(RESUME)
    assert not a.finished(0.05)
    uffd.unprotect(region.page(0), region.page_size)
    assert a.finished(RESUME)


@uffd_test(mem=MEM_ALL, modes=WP)
def test_fault_without_thread_id_feature(ctx, memtype):
    """Without UFFD_FEATURE_THREAD_ID the message's thread id field stays 0."""
    uffd = ctx.uffd(features=ctx.features() & ~Feature.THREAD_ID)
    region = ctx.region(1)
    region.fill(0)
    ctx.register(uffd, region, WP)
    uffd.writeprotect(region.address, region.length)
    store = ctx.store(region.address, 1)
    msg = ctx.fault(uffd)
    assert msg.is_wp and msg.thread_id == 0
    uffd.unprotect(region.address, region.length)
    assert store.finished(RESUME)


@uffd_test(mem=MEM_ALL)
def test_two_writers_same_page_one_unprotect(ctx, memtype):
    """Two threads blocked on the same protected page each queue a WP fault for that page; one
    unprotect wakes both and both stores land."""
    uffd, region = ctx.wp_region(1, fill=0)
    a, b = ctx.store(region.address, 0xA), ctx.store(region.address + 8, 0xB)
    msgs = [ctx.fault(uffd), ctx.fault(uffd)]
    assert all(m.is_wp and m.address == region.address for m in msgs)
    assert not a.finished(0.05) and not b.finished(0)
    uffd.unprotect(region.address, region.length)
    assert a.finished(RESUME) and b.finished(RESUME)
    assert native.load_u64(region.address) == 0xA and native.load_u64(region.address + 8) == 0xB


@uffd_test(mem=MEM_ALL)
def test_kernel_write_into_protected_page(ctx, memtype):
    """A write done by the kernel on the process's behalf (read(2) from a pipe into a protected
    buffer, copy_to_user) faults WP like a user store: the syscall blocks until unprotect,
    then completes with the data in place."""
    uffd, region = ctx.wp_region(1, fill=0)
    rfd, wfd = os.pipe()
    reader: threading.Thread | None = None
    try:
        os.write(wfd, b"uffd-wp!")
        result: list[int] = []
        buf = region.view()[64:72]
        reader = threading.Thread(target=lambda: result.append(os.readv(rfd, [buf])),
                                  daemon=True)
        reader.start()
        msg = ctx.fault(uffd)
        assert msg.is_wp and msg.is_write and msg.address == region.address
        reader.join(0.05)
        assert reader.is_alive() and region.read(64, 8) == bytes(8)
        uffd.unprotect(region.address, region.length)
        reader.join(RESUME)
        assert not reader.is_alive() and result == [8]
        assert region.read(64, 8) == b"uffd-wp!"
    finally:
        with contextlib.suppress(UffdError):
            uffd.unprotect(region.address, region.length)
        if reader is not None and reader.is_alive():
            # still in the fault (an unprotect that did not hold), holding the pipe's lock,
            # which close(rfd) would wait for: closing the uffd releases the fault first
            uffd.close()
            reader.join(RESUME)
        os.close(rfd)
        os.close(wfd)


@uffd_test(mem=MEM_ALL)
def test_read_of_protected_page_does_not_fault(ctx, memtype):
    """Write protection traps writes only: a load from a protected page completes with the
    page's data and produces no message."""
    uffd, region = ctx.wp_region(2, fill=0x3C)
    loader = load_on_thread(region.page(1) + 64)
    assert loader.finished(RESUME)
    assert loader.value == 0x3C3C3C3C3C3C3C3C
    assert region.read() == b"\x3c" * region.length
    no_message(ctx, uffd)
    assert region_wp(region) == [True, True]


@uffd_test(mem=MEM_ALL)
def test_unprotected_page_writes_freely(ctx, memtype):
    """A page of the registered range that is not protected takes writes without any message."""
    uffd, region = ctx.wp_region(2, protect=False)
    store = ctx.store(region.page(1), 77)
    assert store.finished(RESUME)
    assert native.load_u64(region.page(1)) == 77
    no_message(ctx, uffd)


# --- protect and unprotect ranges ----------------------------------------------------------------
@uffd_test(mem=MEM_ALL)
def test_protect_part_of_range(ctx, memtype):
    """Protecting pages 1..2 of 4 arms exactly those (pagemap bit 57 per page): stores to pages
    0 and 3 complete at once, stores to 1 and 2 fault WP at their own pages."""
    uffd, region = ctx.wp_region(4, protect=False)
    uffd.writeprotect(region.page(1), 2 * region.page_size)
    assert region_wp(region) == [False, True, True, False]
    free = [ctx.store(region.page(i), 100 + i) for i in (0, 3)]
    assert all(s.finished(RESUME) for s in free)
    no_message(ctx, uffd, 0.05)
    held = [ctx.store(region.page(i), 100 + i) for i in (1, 2)]
    addrs = {ctx.fault(uffd).address for _ in held}
    assert addrs == {region.page(1), region.page(2)}
    assert not any(s.finished(0.05) for s in held)
    uffd.unprotect(region.page(1), 2 * region.page_size)
    assert all(s.finished(RESUME) for s in held)
    assert [native.load_u64(region.page(i)) for i in range(4)] == [100, 101, 102, 103]
    assert region_wp(region) == [False] * 4


@uffd_test(mem=MEM_ALL)
def test_unprotect_part_of_range(ctx, memtype):
    """Unprotecting one page in the middle of a protected range leaves its neighbours armed."""
    uffd, region = ctx.wp_region(3)
    uffd.unprotect(region.page(1), region.page_size)
    assert region_wp(region) == [True, False, True]
    store = ctx.store(region.page(1), 5)
    assert store.finished(RESUME)
    held = ctx.store(region.page(2), 6)
    msg = ctx.fault(uffd)
    assert msg.is_wp and msg.address == region.page(2)
    uffd.unprotect(region.page(2), region.page_size)
    assert held.finished(RESUME)


@uffd_test(mem=MEM_ALL, needs=PAGEMAP_WP)
def test_pagemap_bit_follows_protection(ctx, memtype):
    """Pagemap bit 57 (PM_UFFD_WP) is set by protect and cleared by unprotect, page by page,
    while the pages stay present and their data intact. (The bit itself: elsewhere the suites
    observe protection by its effect where the kernel has no such bit.)"""
    uffd, region = ctx.wp_region(3, protect=False, fill=0x11)

    def bits() -> list[bool]:
        return pagemap.uffd_wp(region.address, region.length, region.page_size)

    assert bits() == [False] * 3
    uffd.writeprotect(region.address, region.length)
    assert bits() == [True] * 3
    uffd.unprotect(region.page(2), region.page_size)
    assert bits() == [True, True, False]
    uffd.unprotect(region.address, region.length)
    assert bits() == [False] * 3
    assert all(pagemap.entry(region.page(i)).present for i in range(3))
    assert region.read() == b"\x11" * region.length


@uffd_test(mem=MEM_ALL)
def test_protect_is_idempotent(ctx, memtype):
    """Protecting twice and unprotecting an unprotected page are no-ops, not errors."""
    uffd, region = ctx.wp_region(1)
    uffd.writeprotect(region.address, region.length)
    assert region_wp(region) == [True]
    uffd.unprotect(region.address, region.length)
    uffd.unprotect(region.address, region.length)
    assert region_wp(region) == [False]


# --- waking --------------------------------------------------------------------------------------
@uffd_test(mem=MEM_ALL)
def test_unprotect_dontwake_then_wake(ctx, memtype):
    """Unprotect with MODE_DONTWAKE lifts the protection but leaves the writer asleep until
    UFFDIO_WAKE; then its store lands (the kernel selftests never check DONTWAKE)."""
    uffd, region = ctx.wp_region(1, fill=0)
    store = ctx.store(region.address + 16, 0xD0D0)
    assert ctx.fault(uffd).is_wp
    uffd.unprotect(region.address, region.length, dontwake=True)
    assert region_wp(region) == [False]
    assert not store.finished(BLOCKED)
    assert native.load_u64(region.address + 16) == 0
    uffd.wake(region.address, region.length)
    assert store.finished(RESUME)
    assert native.load_u64(region.address + 16) == 0xD0D0


@uffd_test(mem=MEM_ALL)
def test_wake_without_unprotect_refaults(ctx, memtype):
    """UFFDIO_WAKE alone does not lift protection: the woken writer faults again (a second WP
    message for the same page) and stays blocked until the page is unprotected."""
    uffd, region = ctx.wp_region(1, fill=0)
    store = ctx.store(region.address, 9)
    assert ctx.fault(uffd).is_wp
    uffd.wake(region.address, region.length)
    again = ctx.fault(uffd)
    assert again.is_wp and again.address == region.address
    assert not store.finished(0.05)
    uffd.unprotect(region.address, region.length)
    assert store.finished(RESUME)
    assert native.load_u64(region.address) == 9


# --- unpopulated pages ---------------------------------------------------------------------------
@uffd_test(mem=MEM_ALL, features=Feature.WP_UNPOPULATED)
def test_wp_unpopulated_write_faults(ctx, memtype):
    """With WP_UNPOPULATED (6.4) protecting a never-touched page arms it (a pte marker): a
    write faults WP, and after unprotect the store lands on a zero page (selftest
    "wp-unpopulated")."""
    uffd, region = ctx.wp_region(2, populate=False)
    store = ctx.store(region.page(1) + 8, 0xABC)
    msg = ctx.fault(uffd)
    assert msg.is_wp and msg.is_write and msg.address == region.page(1)
    uffd.unprotect(region.address, region.length)
    assert store.finished(RESUME)
    data = region.read(region.page(1) - region.address, region.page_size)
    assert data[8:16] == (0xABC).to_bytes(8, "little")
    assert data[:8] == bytes(8) and data[16:] == bytes(region.page_size - 16)


@uffd_test(mem=MEM_ALL, features=Feature.WP_UNPOPULATED)
def test_wp_unpopulated_read_keeps_protection(ctx, memtype):
    """A read of an armed unpopulated page sees zeros without a message, and the page stays
    protected: a later write still faults WP."""
    uffd, region = ctx.wp_region(1, populate=False)
    loader = load_on_thread(region.address)
    assert loader.finished(RESUME) and loader.value == 0
    no_message(ctx, uffd, 0.05)
    store = ctx.store(region.address, 1)
    assert ctx.fault(uffd).is_wp
    uffd.unprotect(region.address, region.length)
    assert store.finished(RESUME)


@uffd_test(mem=MEM_ANON)
def test_wp_unpopulated_anon_without_feature(ctx, memtype):
    """Without WP_UNPOPULATED, protecting a never-touched anonymous page installs nothing (the
    uapi header: holes are not write-protected on anonymous memory unless the feature is asked
    for): the write proceeds without a message and the page is not marked."""
    region = ctx.region(2)
    uffd = ctx.uffd(features=Feature.PAGEFAULT_FLAG_WP)  # explicitly not WP_UNPOPULATED
    ctx.register(uffd, region, WP)
    uffd.writeprotect(region.address, region.length)
    store = ctx.store(region.page(1), 3)
    assert store.finished(RESUME)
    assert native.load_u64(region.page(1)) == 3
    no_message(ctx, uffd, 0.05)
    # The range itself is live: once populated, protecting the page does arm it.
    uffd.writeprotect(region.page(1), region.page_size)
    held = ctx.store(region.page(1), 4)
    assert ctx.fault(uffd).is_wp
    uffd.unprotect(region.page(1), region.page_size)
    assert held.finished(RESUME)


@uffd_test(mem=("shmem", "shmem-private", "hugetlb", "hugetlb-private"),
           bug={"hugetlb-private": "hugetlb-cow-wp"})
def test_wp_unpopulated_file_without_feature(ctx, memtype):
    """File-backed memory always uses pte markers for uffd-wp (userfaultfd_wp_use_markers):
    even without WP_UNPOPULATED a never-touched protected page faults WP on write. Private
    hugetlb is file-backed too; its CoW optimisation path skipped the marker before 6.3."""
    assert not ctx.features() & Feature.WP_UNPOPULATED
    uffd, region = ctx.wp_region(1, populate=False)
    store = ctx.store(region.address, 4)
    with ctx.bug_check():
        msg = ctx.fault(uffd)
        assert msg.is_wp and msg.address == region.address
    uffd.unprotect(region.address, region.length)
    assert store.finished(RESUME)
    assert native.load_u64(region.address) == 4


# --- end of protection: unregister and close -----------------------------------------------------
@uffd_test(mem=MEM_ALL, bug="unregister-reset")
def test_unregister_clears_protection(ctx, memtype):
    """UFFDIO_UNREGISTER resets write protection (unregister-reset): bit 57 clears, writes
    proceed, and registering again in WP mode does not bring stale protection back."""
    uffd, region = ctx.wp_region(2, fill=0x22)
    uffd.unregister(region.address, region.length)
    with ctx.bug_check():
        assert region_wp(region) == [False, False]
        store = ctx.store(region.page(0), 1)
        assert store.finished(RESUME)
        ctx.register(uffd, region, WP)
        again = ctx.store(region.page(1), 2)
        assert again.finished(RESUME), "stale uffd-wp bit survived UFFDIO_UNREGISTER"
        no_message(ctx, uffd, 0.05)
    assert native.load_u64(region.page(0)) == 1 and native.load_u64(region.page(1)) == 2


@uffd_test(mem=MEM_ALL, bug="close-reset")
def test_close_clears_protection(ctx, memtype):
    """close() of a uffd with protected pages and no UNREGISTER resets them (close-reset):
    bit 57 clears, a native store completes, and a new uffd registering WP sees no stale
    protection."""
    uffd, region = ctx.wp_region(2, fill=0x33)
    uffd.close()
    with ctx.bug_check():
        assert region_wp(region) == [False, False]
        store = ctx.store(region.page(0), 1)
        assert store.finished(RESUME)
        fresh = ctx.uffd()
        ctx.register(fresh, region, WP)
        again = ctx.store(region.page(1), 2)
        assert again.finished(RESUME), "stale uffd-wp bit survived close()"
        no_message(ctx, fresh, 0.05)


@uffd_test(mem=MEM_ALL)
def test_unregister_then_wake_releases_writer(ctx, memtype):
    """A writer blocked on a WP fault, after UFFDIO_UNREGISTER of its range (which only wakes
    waiters of MISSING-registered ranges, fs/userfaultfd.c) and UFFDIO_WAKE: it retries, meets
    no protection and its store lands."""
    uffd, region = ctx.wp_region(1, fill=0)
    store = ctx.store(region.address, 8)
    assert ctx.fault(uffd).is_wp
    uffd.unregister(region.address, region.length)
    uffd.wake(region.address, region.length)
    assert store.finished(RESUME)
    assert native.load_u64(region.address) == 8
    no_message(ctx, uffd, 0.05)


@uffd_test(mem=MEM_ALL, modes=MISSING | WP)
def test_unregister_missing_wp_wakes_writer(ctx, memtype):
    """Unregistering a MISSING|WP range wakes the writers blocked in it without UFFDIO_WAKE
    ("avoids userland to call UFFDIO_WAKE explicitly"), and their stores land."""
    uffd, region = ctx.wp_region(1, fill=0)
    store = ctx.store(region.address, 8)
    assert ctx.fault(uffd).is_wp
    uffd.unregister(region.address, region.length)
    assert store.finished(RESUME)
    assert native.load_u64(region.address) == 8


# --- mprotect ------------------------------------------------------------------------------------
def _mprotect_roundtrip_still_traps(ctx):
    uffd, region = ctx.wp_region(1, fill=0x44)
    region.mprotect(PROT_READ)
    region.mprotect(PROT_READ | PROT_WRITE)
    with ctx.bug_check():  # shared types: writenotify kept (shmem-writenotify)
        assert region_wp(region) == [True]
        store = ctx.store(region.address, 0x55)
        msg = ctx.fault(uffd)
        assert msg.is_wp and msg.address == region.address
    assert native.load_u64(region.address) == 0x4444444444444444
    uffd.unprotect(region.address, region.length)
    assert store.finished(RESUME)
    assert native.load_u64(region.address) == 0x55


@uffd_test(mem=MEM_PRIVATE)
def test_mprotect_rw_keeps_wp_private(ctx, memtype):
    """mprotect(PROT_READ) then mprotect(PROT_READ|PROT_WRITE) does not lift uffd-wp on private
    memory: the next write still faults WP (can_change_pte_writable refuses uffd-wp ptes)."""
    _mprotect_roundtrip_still_traps(ctx)


@uffd_test(mem=MEM_SHARED, bug="shmem-writenotify")
def test_mprotect_rw_keeps_wp_shared(ctx, memtype):
    """Shared mappings: mprotect RO->RW must keep write-notify while uffd-wp is enabled
    (shmem-writenotify), so the next write still faults WP instead of landing."""
    _mprotect_roundtrip_still_traps(ctx)
