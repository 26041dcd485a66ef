# SPDX-License-Identifier: GPL-2.0-only
"""Resolving faults in WP-registered ranges: COPY (MODE_WP, DONTWAKE), ZEROPAGE, CONTINUE
(MODE_WP), POISON, MOVE and the SIGBUS feature.

Kernel sources consulted: mm/userfaultfd.c (mfill_atomic, mfill_atomic_hugetlb, move_pages,
move_present_ptes), fs/userfaultfd.c (userfaultfd_continue, handle_userfault with
UFFD_FEATURE_SIGBUS), tools/testing/selftests/mm/uffd-unit-tests.c (minor-wp, sigbus-wp).
"""

from __future__ import annotations

import errno
import signal

import pytest

from uffdwp import native, pagemap
from uffdwp.kernel_facts import Feature, Ioctl
from uffdwp.memory import allocate
from uffdwp.uffd import Userfaultfd

from .capabilities import CONTINUE_MODE_WP
from .observe import page_wp, region_wp
from .support import (
    BLOCKED,
    RESUME,
    assert_killed_by,
    expect_errno,
    load_on_thread,
    no_message,
    run_in_child,
)
from .uffdtest import (
    MEM_ALL,
    MEM_ANON,
    MEM_HUGETLB,
    MEM_NOT_HUGETLB,
    MEM_SHARED,
    MINOR,
    MISSING,
    WP,
    uffd_test,
)


def pattern(region, seed: int) -> bytes:
    """One page of recognisable bytes."""
    unit = bytes((seed + i) & 0xFF for i in range(256))
    return unit * (region.page_size // 256)


def page_bytes(region, index: int) -> bytes:
    return region.read(region.page(index) - region.address, region.page_size)


# --- UFFDIO_COPY ---------------------------------------------------------------------------------
@uffd_test(mem=MEM_ALL, modes=MISSING | WP)
def test_copy_wp_resolves_missing_into_protected_page(ctx, memtype):
    """A write to a missing page of a MISSING|WP range faults without the WP flag; COPY with
    MODE_WP maps the page write-protected (pagemap bit 57) and wakes the writer, which then
    faults again, this time WP; after unprotect its store lands on the copied data."""
    region = ctx.region(2)
    uffd = ctx.uffd()
    ctx.register(uffd, region)
    store = ctx.store(region.page(1) + 8, 0xFEED)
    first = ctx.fault(uffd)
    assert first.is_write and not first.is_wp and first.address == region.page(1)
    data = pattern(region, 7)
    assert uffd.copy(region.page(1), data, wp=True) == region.page_size
    assert region_wp(region) == [False, True]
    second = ctx.fault(uffd)
    assert second.is_wp and second.is_write and second.address == region.page(1)
    assert not store.finished(0.05)
    assert page_bytes(region, 1) == data
    uffd.unprotect(region.page(1), region.page_size)
    assert store.finished(RESUME)
    expected = bytearray(data)
    expected[8:16] = (0xFEED).to_bytes(8, "little")
    assert page_bytes(region, 1) == bytes(expected)


@uffd_test(mem=MEM_ALL, modes=MISSING | WP)
def test_copy_wp_proactive_then_write_faults(ctx, memtype):
    """COPY with MODE_WP into an untouched page (no fault pending): the page is present and
    protected, reads see the data without a message, a write faults WP."""
    region = ctx.region(1)
    uffd = ctx.uffd()
    ctx.register(uffd, region)
    data = pattern(region, 3)
    uffd.copy(region.address, data, wp=True)
    entry = pagemap.entry(region.address)
    assert entry.present and page_wp(region.address)
    assert region.read() == data
    store = ctx.store(region.address, 1)
    msg = ctx.fault(uffd)
    assert msg.is_wp and msg.address == region.address
    uffd.unprotect(region.address, region.length)
    assert store.finished(RESUME)


@uffd_test(mem=MEM_ALL, modes=MISSING | WP)
def test_copy_without_wp_is_writable(ctx, memtype):
    """COPY without MODE_WP in a MISSING|WP range maps a writable page: bit 57 clear, a store
    completes with no message."""
    region = ctx.region(1)
    uffd = ctx.uffd()
    ctx.register(uffd, region)
    data = pattern(region, 5)
    uffd.copy(region.address, data)
    assert region_wp(region) == [False]
    store = ctx.store(region.address + 16, 42)
    assert store.finished(RESUME)
    no_message(ctx, uffd, 0.05)
    assert region.read(0, 16) == data[:16]
    assert native.load_u64(region.address + 16) == 42


@uffd_test(mem=MEM_ALL, modes=MISSING | WP)
@pytest.mark.parametrize("wp", [False, True], ids=["plain", "mode-wp"])
def test_copy_onto_present_page_eexist(ctx, memtype, wp):
    """COPY onto a page that is already present fails with EEXIST and leaves it unchanged,
    whether protected or not."""
    uffd, region = ctx.wp_region(1, fill=0x66, protect=wp)
    expect_errno(errno.EEXIST, uffd.copy, region.address, pattern(region, 1), wp=wp)
    assert region.read() == b"\x66" * region.length
    assert region_wp(region) == [wp]


@uffd_test(mem=MEM_ALL, modes=MISSING | WP)
def test_copy_dontwake(ctx, memtype):
    """COPY with MODE_DONTWAKE maps the page but leaves the faulting writer asleep until
    UFFDIO_WAKE; then its store lands on the copied data."""
    region = ctx.region(1)
    uffd = ctx.uffd()
    ctx.register(uffd, region)
    store = ctx.store(region.address, 0xAB)
    assert not ctx.fault(uffd).is_wp
    data = pattern(region, 9)
    uffd.copy(region.address, data, dontwake=True)
    assert pagemap.entry(region.address).present
    assert not store.finished(BLOCKED), "MODE_DONTWAKE: the writer was woken by the COPY"
    assert region.read() == data
    uffd.wake(region.address, region.length)
    assert store.finished(RESUME)
    assert native.load_u64(region.address) == 0xAB
    assert region.read(8) == data[8:]


@uffd_test(mem=MEM_ALL, modes=MISSING | WP)
def test_copy_wp_dontwake_pending_fault(ctx, memtype):
    """COPY with MODE_WP | MODE_DONTWAKE on a pending missing fault maps the page protected and
    wakes nobody: the writer stays blocked with no second message until UFFDIO_WAKE; woken,
    it faults again, WP this time, and its store lands once the page is unprotected."""
    region = ctx.region(1)
    uffd = ctx.uffd()
    ctx.register(uffd, region)
    store = ctx.store(region.address + 8, 0xAB)
    assert not ctx.fault(uffd).is_wp
    data = pattern(region, 11)
    uffd.copy(region.address, data, wp=True, dontwake=True)
    assert region_wp(region) == [True], "MODE_WP: the copied page is protected"
    assert not store.finished(BLOCKED), "MODE_DONTWAKE: the writer was woken by the COPY"
    no_message(ctx, uffd, 0.05)  # asleep, so it has not faulted again
    uffd.wake(region.address, region.length)
    msg = ctx.fault(uffd)
    assert msg.is_wp and msg.address == region.address, msg
    assert not store.finished(0.05)
    uffd.unprotect(region.address, region.length)
    assert store.finished(RESUME)
    assert native.load_u64(region.address + 8) == 0xAB
    assert region.read(0, 8) == data[:8]


@uffd_test(mem=MEM_ALL, modes=MISSING | WP)
def test_read_missing_fault_flags(ctx, memtype):
    """A load from a missing page of a MISSING|WP range is a missing fault: neither WRITE nor
    WP; resolving it with COPY_MODE_WP lets the reader finish with the data, no WP message."""
    region = ctx.region(1)
    uffd = ctx.uffd()
    ctx.register(uffd, region)
    loader = load_on_thread(region.address)
    msg = ctx.fault(uffd)
    assert not msg.is_write and not msg.is_wp and not msg.is_minor
    data = pattern(region, 11)
    uffd.copy(region.address, data, wp=True)
    assert loader.finished(RESUME)
    assert loader.value == int.from_bytes(data[:8], "little")
    no_message(ctx, uffd, 0.05)


# --- UFFDIO_ZEROPAGE -----------------------------------------------------------------------------
@uffd_test(mem=MEM_NOT_HUGETLB, modes=MISSING | WP)
def test_zeropage_resolves_missing_read(ctx, memtype):
    """ZEROPAGE answers a missing read with zeros (anon/shmem); the page is not protected, and
    protecting it afterwards makes a write fault WP."""
    region = ctx.region(1)
    uffd = ctx.uffd()
    ctx.register(uffd, region)
    loader = load_on_thread(region.address + 24)
    assert not ctx.fault(uffd).is_wp
    assert uffd.zeropage(region.address, region.length) == region.length
    assert loader.finished(RESUME) and loader.value == 0
    assert region_wp(region) == [False]
    uffd.writeprotect(region.address, region.length)
    store = ctx.store(region.address, 5)
    assert ctx.fault(uffd).is_wp
    uffd.unprotect(region.address, region.length)
    assert store.finished(RESUME)
    assert native.load_u64(region.address) == 5
    assert region.read(8) == bytes(region.length - 8)


@uffd_test(mem=MEM_NOT_HUGETLB, modes=MISSING | WP)
def test_zeropage_onto_present_eexist(ctx, memtype):
    """ZEROPAGE onto a present page: EEXIST, data unchanged."""
    uffd, region = ctx.wp_region(1, fill=0x77, protect=False)
    expect_errno(errno.EEXIST, uffd.zeropage, region.address, region.length)
    assert region.read() == b"\x77" * region.length


@uffd_test(mem=MEM_HUGETLB, modes=MISSING | WP)
def test_zeropage_hugetlb_rejected(ctx, memtype):
    """hugetlb has no ZEROPAGE: REGISTER does not offer it and the ioctl fails with EINVAL
    (mfill_atomic_hugetlb), mapping nothing."""
    region = ctx.region(1)
    uffd = ctx.uffd()
    ioctls = ctx.register(uffd, region)
    assert not ioctls & Ioctl.ZEROPAGE
    expect_errno(errno.EINVAL, uffd.zeropage, region.address, region.length)
    assert not pagemap.entry(region.address).present


# --- UFFDIO_CONTINUE -----------------------------------------------------------------------------
def _minor_setup(ctx, fill: int):
    """A shared file region whose page cache is populated through a second mapping, registered
    MINOR|WP: the first access through the registered mapping is a minor fault."""
    region = ctx.region(1)
    alias = region.alias()
    try:
        ctx_alias = region.__class__(region.memtype, alias, region.length, region.page_size)
        ctx_alias.fill(fill)
    except BaseException:
        region.unmap_alias(alias)
        raise
    uffd = ctx.uffd()
    ctx.register(uffd, region, MINOR | WP)
    return uffd, region, alias


@uffd_test(mem=MEM_SHARED, modes=MINOR | WP, needs=CONTINUE_MODE_WP)
def test_continue_wp_maps_protected(ctx, memtype):
    """minor-wp: a read of a page present only in the page cache faults MINOR; CONTINUE with
    MODE_WP (6.4) maps it write-protected, so the reader finishes and a write then faults WP;
    after unprotect the store is visible through the other mapping too."""
    uffd, region, alias = _minor_setup(ctx, 0x2B)
    try:
        loader = load_on_thread(region.address + 32)
        msg = ctx.fault(uffd)
        assert msg.is_minor and not msg.is_wp and not msg.is_write
        assert msg.address == region.address
        assert uffd.continue_(region.address, region.length, wp=True) == region.length
        assert loader.finished(RESUME) and loader.value == 0x2B2B2B2B2B2B2B2B
        assert region_wp(region) == [True]
        store = ctx.store(region.address, 0x99)
        wp = ctx.fault(uffd)
        assert wp.is_wp and wp.is_write and wp.address == region.address
        assert native.load_u64(alias) == 0x2B2B2B2B2B2B2B2B
        uffd.unprotect(region.address, region.length)
        assert store.finished(RESUME)
        assert native.load_u64(alias) == 0x99
    finally:
        region.unmap_alias(alias)


@uffd_test(mem=MEM_SHARED, modes=MINOR | WP)
def test_continue_without_wp_is_writable(ctx, memtype):
    """CONTINUE without MODE_WP in a MINOR|WP range maps the page writable: a store completes
    with no message and shows through the alias."""
    uffd, region, alias = _minor_setup(ctx, 0x1D)
    try:
        assert uffd.continue_(region.address, region.length) == region.length
        assert region_wp(region) == [False]
        store = ctx.store(region.address, 0x31)
        assert store.finished(RESUME)
        no_message(ctx, uffd, 0.05)
        assert native.load_u64(alias) == 0x31
    finally:
        region.unmap_alias(alias)


@uffd_test(mem=MEM_SHARED, modes=MINOR | WP)
def test_continue_onto_mapped_page_eexist(ctx, memtype):
    """CONTINUE onto a page already mapped in the registered range: EEXIST."""
    uffd, region, alias = _minor_setup(ctx, 0x4E)
    try:
        uffd.continue_(region.address, region.length)
        expect_errno(errno.EEXIST, uffd.continue_, region.address, region.length)
    finally:
        region.unmap_alias(alias)


# --- UFFDIO_POISON -------------------------------------------------------------------------------
def _poison_then_touch(memtype: str, features: int, write: bool) -> None:
    """Child body: its own uffd and region, poison page 0, touch it (must die of SIGBUS)."""
    region = allocate(memtype, pages=1)
    uffd = Userfaultfd.create(features)
    uffd.register(region.address, region.length, MISSING | WP)
    uffd.poison(region.address, region.length)
    if write:
        native.store_u64(region.address, 1)
    else:
        native.load_u64(region.address)


@uffd_test(mem=MEM_ALL, modes=MISSING | WP, features=Feature.POISON)
@pytest.mark.parametrize("write", [False, True], ids=["read", "write"])
def test_poison_access_sigbus(ctx, memtype, write):
    """UFFDIO_POISON (6.6) in a MISSING|WP range: any access to the poisoned page raises
    SIGBUS (checked in a forked child that owns the uffd)."""
    features = ctx.features()
    status = run_in_child(lambda: _poison_then_touch(memtype, features, write))
    assert_killed_by(status, signal.SIGBUS)


@uffd_test(mem=MEM_ALL, modes=MISSING | WP, features=Feature.POISON)
def test_poison_onto_present_page_eexist(ctx, memtype):
    """POISON only fills holes: on a present (write-protected) page it fails with EEXIST and the
    page keeps its data and its protection."""
    uffd, region = ctx.wp_region(1, fill=0x6D)
    expect_errno(errno.EEXIST, uffd.poison, region.address, region.length)
    assert region_wp(region) == [True]
    assert region.read() == b"\x6d" * region.length


# --- SIGBUS feature ------------------------------------------------------------------------------
# UFFD_FEATURE_SIGBUS makes handle_userfault() return VM_FAULT_SIGBUS for every fault of the
# context, WP faults included: the selftest "sigbus-wp" expects zero userfault messages and
# resolves both the missing (COPY_MODE_WP) and the WP faults from its SIGBUS handler.
def _sigbus_missing(memtype: str, features: int) -> None:
    region = allocate(memtype, pages=1)
    uffd = Userfaultfd.create(features)
    uffd.register(region.address, region.length, MISSING | WP)
    native.load_u64(region.address)


def _sigbus_wp(memtype: str, features: int, data: bytes) -> None:
    region = allocate(memtype, pages=1)
    uffd = Userfaultfd.create(features)
    uffd.register(region.address, region.length, MISSING | WP)
    uffd.copy(region.address, data, wp=True)
    if native.load_u64(region.address) != int.from_bytes(data[:8], "little"):
        raise AssertionError("COPY_MODE_WP data not readable")  # exit 3, not SIGBUS
    native.store_u64(region.address, 1)


@uffd_test(mem=MEM_ALL, modes=MISSING | WP, features=Feature.SIGBUS)
def test_sigbus_missing_fault(ctx, memtype):
    """With UFFD_FEATURE_SIGBUS a missing access in a MISSING|WP range raises SIGBUS instead of
    queueing a message (checked in a forked child owning its own uffd)."""
    features = ctx.features()
    status = run_in_child(lambda: _sigbus_missing(memtype, features))
    assert_killed_by(status, signal.SIGBUS)


@uffd_test(mem=MEM_ALL, modes=MISSING | WP, features=Feature.SIGBUS)
def test_sigbus_wp_fault(ctx, memtype):
    """sigbus-wp: with UFFD_FEATURE_SIGBUS a page mapped by COPY_MODE_WP reads normally, and a
    write to it raises SIGBUS: the WP fault is not queued as a message either."""
    features = ctx.features()
    data = pattern(ctx.region(1), 13)
    status = run_in_child(lambda: _sigbus_wp(memtype, features, data))
    assert_killed_by(status, signal.SIGBUS)


@uffd_test(mem=MEM_ALL, modes=MISSING | WP, features=Feature.SIGBUS)
def test_sigbus_copy_wp_state(ctx, memtype):
    """SIGBUS does not change how pages are mapped: COPY_MODE_WP gives a protected page (bit 57),
    plain COPY a writable one whose store completes; reads queue no message."""
    region = ctx.region(2)
    uffd = ctx.uffd()
    ctx.register(uffd, region)
    uffd.copy(region.page(0), pattern(region, 1), wp=True)
    uffd.copy(region.page(1), pattern(region, 2))
    assert region_wp(region) == [True, False]
    store = ctx.store(region.page(1), 0x5B)
    assert store.finished(RESUME)
    assert native.load_u64(region.page(0)) == int.from_bytes(pattern(region, 1)[:8], "little")
    no_message(ctx, uffd, 0.05)


# --- UFFDIO_MOVE (anonymous private memory only: move_pages rejects other VMAs) ---------------
def _move_setup(ctx):
    """Four anon pages registered MISSING|WP: pages 0-1 are the populated source, 2-3 the
    empty destination."""
    region = ctx.region(4)
    view = region.view()
    for i in (0, 1):
        off = region.page(i) - region.address
        view[off:off + region.page_size] = pattern(region, 20 + i)
    del view
    uffd = ctx.uffd()
    ctx.register(uffd, region)
    return uffd, region


@uffd_test(mem=MEM_ANON, modes=MISSING | WP, features=Feature.MOVE)
def test_move_write_protected_page(ctx, memtype):
    """MOVE of a write-protected page: the data arrives intact, the source becomes a hole, and
    the destination pte is writable without uffd-wp: mainline move_present_ptes() builds it
    with pte_mkwrite() and no uffd-wp (a 2025 patch to carry the bit over was withdrawn as a
    uABI change in favour of a future UFFDIO_MOVE_MODE_WP)."""
    uffd, region = _move_setup(ctx)
    uffd.writeprotect(region.page(0), region.page_size)
    assert region_wp(region)[0]
    moved = uffd.move(region.page(2), region.page(0), region.page_size)
    assert moved == region.page_size
    assert page_bytes(region, 2) == pattern(region, 20)
    assert not pagemap.entry(region.page(0)).present
    assert not region_wp(region)[2]
    store = ctx.store(region.page(2), 0x77)
    assert store.finished(RESUME)
    no_message(ctx, uffd, 0.05)
    assert native.load_u64(region.page(2)) == 0x77


@uffd_test(mem=MEM_ANON, modes=MISSING | WP, features=Feature.MOVE)
def test_move_into_wp_range_then_protect(ctx, memtype):
    """A page moved into a WP-registered destination can be protected there like any other:
    a write then faults WP at the destination, and lands after unprotect."""
    uffd, region = _move_setup(ctx)
    uffd.move(region.page(3), region.page(1), region.page_size)
    uffd.writeprotect(region.page(3), region.page_size)
    assert region_wp(region)[3]
    store = ctx.store(region.page(3) + 8, 0x88)
    msg = ctx.fault(uffd)
    assert msg.is_wp and msg.address == region.page(3)
    uffd.unprotect(region.page(3), region.page_size)
    assert store.finished(RESUME)
    expected = bytearray(pattern(region, 21))
    expected[8:16] = (0x88).to_bytes(8, "little")
    assert page_bytes(region, 3) == bytes(expected)


@uffd_test(mem=MEM_ANON, modes=MISSING | WP, features=Feature.MOVE)
def test_move_resolves_missing_fault(ctx, memtype):
    """MOVE answers a missing write fault in a MISSING|WP destination: the writer wakes and its
    store lands on the moved data."""
    uffd, region = _move_setup(ctx)
    store = ctx.store(region.page(2) + 16, 0x99)
    msg = ctx.fault(uffd)
    assert msg.is_write and not msg.is_wp and msg.address == region.page(2)
    uffd.move(region.page(2), region.page(0), region.page_size)
    assert store.finished(RESUME)
    expected = bytearray(pattern(region, 20))
    expected[16:24] = (0x99).to_bytes(8, "little")
    assert page_bytes(region, 2) == bytes(expected)


@uffd_test(mem=MEM_ANON, modes=MISSING | WP, features=Feature.MOVE)
def test_move_onto_present_page_eexist(ctx, memtype):
    """MOVE onto a present (here: write-protected) destination page fails with EEXIST; both
    pages keep their data and the destination its protection."""
    uffd, region = _move_setup(ctx)
    uffd.writeprotect(region.page(1), region.page_size)
    expect_errno(errno.EEXIST, uffd.move, region.page(1), region.page(0), region.page_size)
    assert page_bytes(region, 0) == pattern(region, 20)
    assert page_bytes(region, 1) == pattern(region, 21)
    assert region_wp(region)[1]

