# SPDX-License-Identifier: GPL-2.0-only
"""The native fault handler and writer: faults resolved without Python, no thread left
blocked when a handler stops, COPY_UNPROTECT keeps the pre-write content, and the writer's stall
statistics are coherent with the handler's view of the same faults.
"""

from __future__ import annotations

import time

from uffdwp import native
from uffdwp.kernel_facts import Feature
from uffdwp.memory import MemType

from .observe import wp_pages
from .support import in_child
from .uffdtest import MEM_ALL, uffd_test

FILL = 0x5A
LONG = 5.0


def _pages(memtype: str, small: int = 4, large: int = 8) -> int:
    return small if MemType.of(memtype).hugetlb else large


def _resolved(handler: native.FaultHandler, count: int, timeout: float = LONG):
    """Stats once *count* faults are resolved (counted after the ioctl returns, which may be
    after the woken writer already went on)."""
    deadline = time.monotonic() + timeout
    while (stats := handler.stats).resolved < count and time.monotonic() < deadline:
        time.sleep(0.001)
    return stats


@uffd_test(mem=MEM_ALL, timeout=15)
def test_python_write_resolved_by_native_handler(ctx, memtype):
    """A Python-level write (memoryview assignment, holding the GIL) into a protected page is
    resolved by the native UNPROTECT handler without deadlock: the byte lands, exactly one WP
    fault was seen and resolved, only that page lost its protection. (In a forked child with
    a deadline: on a kernel that never resolves the fault, that store cannot be interrupted.)"""

    def body(progress):
        uffd, region = ctx.wp_region(3, fill=FILL)
        handler = ctx.handler(uffd, region, native.Policy.UNPROTECT)
        off = region.page_size + 123
        progress.step("Python-level store into protected page 1")
        region.view()[off] = 0xEE  # would deadlock without a native handler
        progress.step("store done; checking")
        assert region.read(off, 1) == b"\xee"
        stats = _resolved(handler, 1)
        assert (stats.wp_faults, stats.resolved, stats.errors, stats.missing_faults) == \
            (1, 1, 0, 0), stats
        [rec] = handler.records()
        assert rec.address & ~(region.page_size - 1) == region.page(1) and not rec.error, rec
        assert wp_pages(region.address, region.length, region.page_size) == \
            [True, False, True]
        assert region.read(0, region.page_size) == bytes([FILL]) * region.page_size

    in_child(body, timeout=2 * LONG)


@uffd_test(mem=MEM_ALL, timeout=15)
def test_python_bulk_write_one_fault_per_page(ctx, memtype):
    """A Python slice assignment over the whole protected region: one WP fault per page, each
    resolved, and the whole new content in memory (in a forked child with a deadline)."""

    def body(progress):
        n = _pages(memtype, 3, 8)
        uffd, region = ctx.wp_region(n, fill=FILL)
        handler = ctx.handler(uffd, region, native.Policy.UNPROTECT)
        data = bytes(range(1, 256)) * (region.length // 255) + bytes(region.length % 255)
        progress.step(f"Python-level slice store over {n} protected pages")
        region.view()[:] = data
        progress.step("store done; checking")
        stats = _resolved(handler, n)
        assert (stats.wp_faults, stats.resolved, stats.errors) == (n, n, 0), stats
        assert sorted(r.address & ~(region.page_size - 1) for r in handler.records()) == \
            [region.page(i) for i in range(n)]
        assert region.read() == data
        assert not any(wp_pages(region.address, region.length, region.page_size))

    in_child(body, timeout=2 * LONG)


@uffd_test(mem=MEM_ALL, features=Feature.THREAD_ID)
def test_stopped_record_handler_leaves_no_writer_blocked(ctx, memtype):
    """Stores blocked under a RECORD handler (which resolves nothing) all complete once the
    handler is stopped (it unprotects and wakes its ranges); bit 57 is clear afterwards and
    the handler had recorded one fault per store, with the stores' thread ids."""
    n = _pages(memtype, 4, 6)
    uffd, region = ctx.wp_region(n, fill=FILL)
    handler = ctx.handler(uffd, region, native.Policy.RECORD)
    stores = [ctx.store(region.page(i) + 8, 0x700 + i) for i in range(n)]
    stats = handler.wait_for(n)
    assert stats.wp_faults == n and stats.resolved == 0
    time.sleep(0.1)
    assert not any(s.finished() for s in stores), "RECORD must not resolve faults"
    records = handler.records()
    assert sorted(r.thread_id for r in records) == sorted(s.tid for s in stores)
    assert all(r.t_done_ns == 0 for r in records)

    final = handler.stop()
    assert final is not None and handler.cleanup_failures == 0
    deadline = time.monotonic() + LONG
    for i, s in enumerate(stores):
        assert s.finished(max(0.0, deadline - time.monotonic())), f"store {i} still blocked"
    assert not any(wp_pages(region.address, region.length, region.page_size))
    assert [native.load_u64(region.page(i) + 8) for i in range(n)] == \
        [0x700 + i for i in range(n)]


@uffd_test(mem=MEM_ALL)
def test_copy_unprotect_saves_pre_write_content(ctx, memtype):
    """COPY_UNPROTECT copies a page out before unprotecting it: the copy holds the old content
    (every byte), memory the new value; pages never written are not copied."""
    n = 3
    uffd, region = ctx.wp_region(n, protect=False)
    for i in range(n):  # distinct old content per page
        region.view()[i * region.page_size:(i + 1) * region.page_size] = \
            bytes([0x10 + i]) * region.page_size
    uffd.writeprotect(region.address, region.length)
    copy = ctx.region(region.length // 4096, memtype="anon")
    handler = ctx.handler(uffd, region, native.Policy.COPY_UNPROTECT, copy_to=copy.address)
    stores = [ctx.store(region.page(i) + 40, 0xCAFE0000 + i) for i in (0, 2)]
    assert all(s.finished(LONG) for s in stores)
    assert _resolved(handler, 2).errors == 0
    ps = region.page_size
    assert copy.read(0, ps) == bytes([0x10]) * ps, "copy of page 0 is its pre-write content"
    assert copy.read(2 * ps, ps) == bytes([0x12]) * ps
    assert copy.read(ps, ps) == bytes(ps), "page 1 was not written, so not copied"
    assert native.load_u64(region.page(0) + 40) == 0xCAFE0000
    assert native.load_u64(region.page(2) + 40) == 0xCAFE0002
    assert region.read(ps, ps) == bytes([0x11]) * ps


@uffd_test(mem=MEM_ALL)
def test_writer_stall_statistics(ctx, memtype):
    """A native writer over protected pages with an UNPROTECT handler: writes counted, the
    log2 histogram sums to the writes, max/total stall agree with the records, max stall > 0,
    one fault per page, and each faulting write's stall spans the moment the handler read
    its fault (t_start <= t_read <= t_start + stall)."""
    n = _pages(memtype, 4, 16)
    uffd, region = ctx.wp_region(n, fill=FILL)
    handler = ctx.handler(uffd, region, native.Policy.UNPROTECT)
    writer = ctx.writer(region, max_writes=3 * n)
    assert writer.wait(LONG)
    stats = writer.stats
    assert stats.writes == 3 * n and stats.dropped_records == 0 and not stats.running
    assert sum(stats.histogram) == stats.writes
    recs = writer.records()
    assert len(recs) == 3 * n
    assert stats.max_stall_ns == max(r.stall_ns for r in recs) > 0
    assert stats.total_stall_ns == sum(r.stall_ns for r in recs)
    for r in recs:
        bucket = r.stall_ns.bit_length() - 1 if r.stall_ns else 0
        assert stats.histogram[bucket] > 0
    hstats = _resolved(handler, n)
    assert (hstats.wp_faults, hstats.resolved, hstats.errors) == (n, n, 0)
    faults = {f.address: f for f in handler.records()}
    assert sorted(faults) == [region.page(i) for i in range(n)]
    for r in recs[:n]:  # the first pass faults on every page
        f = faults[r.address]
        assert r.t_start_ns <= f.t_read_ns <= r.t_start_ns + r.stall_ns
    assert [native.load_u64(region.page(i)) for i in range(n)] == \
        [1 + 2 * n + i for i in range(n)]
