# SPDX-License-Identifier: GPL-2.0-only
"""Fault ordering and messages: who blocks, who resumes, which thread a message names, in what
order a thread's faults arrive, and that nothing is lost or duplicated under concurrency.

fs/userfaultfd.c handle_userfault(): every faulting thread queues its own uffd_msg and sleeps on
the fd's fault queue until a UFFDIO_WRITEPROTECT (unprotect) or UFFDIO_WAKE over its address
wakes it; with UFFD_FEATURE_THREAD_ID the message carries task_pid_vnr() of the faulting thread.
"""

from __future__ import annotations

import random
import time

from uffdwp import native
from uffdwp.kernel_facts import Feature
from uffdwp.messages import PageFault
from uffdwp.runner.precondition import require

from .observe import wp_pages
from .uffdtest import MEM_ALL, STRESS_SCALE, uffd_test

FILL = 0x5A
FILL_U64 = int.from_bytes(bytes([FILL]) * 8, "little")
SHORT = 0.15  # how long a blocked writer must stay blocked
LONG = 5.0  # how long a writer may take to resume once released


def _pages(memtype: str, small: int = 4, large: int = 8) -> int:
    """hugetlb regions stay small (the run reserves few huge pages)."""
    return small if memtype.startswith("hugetlb") else large


def _resolved(handler: native.FaultHandler, count: int, timeout: float = LONG):
    """The handler's stats once it has resolved *count* faults (it counts after its ioctl
    returns, which may be after the woken writer already finished)."""
    deadline = time.monotonic() + timeout
    while (stats := handler.stats).resolved < count and time.monotonic() < deadline:
        time.sleep(0.001)
    return stats


def _faults(ctx, uffd, count: int, timeout: float = LONG) -> list[PageFault]:
    """Exactly *count* page-fault messages (failing on anything else)."""
    got: list[PageFault] = []
    deadline = time.monotonic() + timeout
    while len(got) < count:
        left = deadline - time.monotonic()
        assert left > 0, f"only {len(got)} of {count} fault messages arrived within {timeout}s"
        for msg in uffd.read(count - len(got), left):
            assert isinstance(msg, PageFault), f"expected a page fault, got {msg}"
            got.append(msg)
    return got


@uffd_test(mem=MEM_ALL, features=Feature.THREAD_ID)
def test_writers_on_distinct_pages_resume_one_by_one(ctx, memtype):
    """Writers on distinct protected pages each stay blocked until *their* page is unprotected,
    and the message of each names the faulting thread (THREAD_ID: ptid == gettid())."""
    n = _pages(memtype)
    uffd, region = ctx.wp_region(n, fill=FILL)
    stores = [ctx.store(region.page(i), 0x1000 + i) for i in range(n)]

    faults = _faults(ctx, uffd, n)
    by_page = {f.address & ~(region.page_size - 1): f for f in faults}
    assert sorted(by_page) == [region.page(i) for i in range(n)], "one fault per page"
    for i, s in enumerate(stores):
        f = by_page[region.page(i)]
        assert f.is_wp and f.is_write, f
        assert f.thread_id == s.tid, \
            f"page {i}: message names tid {f.thread_id}, store ran on {s.tid}"
    time.sleep(SHORT)
    assert not any(s.finished() for s in stores), "a store completed on a protected page"

    order = list(range(n))
    random.Random(n).shuffle(order)
    released: set[int] = set()
    for i in order:
        uffd.unprotect(region.page(i), region.page_size)
        released.add(i)
        assert stores[i].finished(LONG), f"store to page {i} did not resume after its unprotect"
        time.sleep(0.05)
        waiting = [j for j in range(n) if j not in released]
        assert not any(stores[j].finished() for j in waiting), \
            f"unprotecting page {i} released a store on another page"
        assert native.load_u64(region.page(i)) == 0x1000 + i
        for j in waiting:
            assert native.load_u64(region.page(j)) == FILL_U64, f"page {j} changed while protected"
        bits = wp_pages(region.address, region.length, region.page_size)
        assert bits == [j not in released for j in range(n)], bits
    assert list(ctx.messages(uffd, 0.05)) == [], "no further message once every store resumed"


@uffd_test(mem=MEM_ALL, features=Feature.THREAD_ID)
def test_writers_on_same_page_each_get_a_message_and_resume_together(ctx, memtype):
    """Three threads faulting on one protected page queue three messages (one per thread, each
    with its own tid, same page); one unprotect of the page wakes all three."""
    uffd, region = ctx.wp_region(2, fill=FILL)
    stores = [ctx.store(region.page(0) + 8 * k, 0xAB00 + k) for k in range(3)]
    faults = _faults(ctx, uffd, 3)
    assert {f.address & ~(region.page_size - 1) for f in faults} == {region.page(0)}
    assert sorted(f.thread_id for f in faults) == sorted(s.tid for s in stores)
    assert all(f.is_wp for f in faults)
    time.sleep(SHORT)
    assert not any(s.finished() for s in stores)
    assert list(ctx.messages(uffd, 0.05)) == [], "a blocked thread must not queue a second message"

    uffd.unprotect(region.page(0), region.page_size)
    for s in stores:
        assert s.finished(LONG), "one unprotect must wake every waiter on the page"
    for k in range(3):
        assert native.load_u64(region.page(0) + 8 * k) == 0xAB00 + k
    assert native.load_u64(region.page(1)) == FILL_U64
    assert wp_pages(region.address, region.length, region.page_size) == [False, True]


@uffd_test(mem=MEM_ALL, features=Feature.THREAD_ID)
def test_unprotect_of_one_page_keeps_same_page_writers_of_other_pages_blocked(ctx, memtype):
    """Two writers per page on two pages: unprotecting page 1 releases exactly its two
    writers; page 0's two stay blocked until page 0 is unprotected."""
    uffd, region = ctx.wp_region(2, fill=FILL)
    stores = {(p, k): ctx.store(region.page(p) + 16 * k, (p << 8) | k)
              for p in range(2) for k in range(2)}
    faults = _faults(ctx, uffd, 4)
    for (p, _k), s in stores.items():
        assert any(f.thread_id == s.tid and f.address == region.page(p) for f in faults)
    uffd.unprotect(region.page(1), region.page_size)
    assert stores[1, 0].finished(LONG) and stores[1, 1].finished(LONG)
    time.sleep(SHORT)
    assert not stores[0, 0].finished() and not stores[0, 1].finished()
    uffd.unprotect(region.page(0), region.page_size)
    assert stores[0, 0].finished(LONG) and stores[0, 1].finished(LONG)
    for (p, k) in stores:
        assert native.load_u64(region.page(p) + 16 * k) == (p << 8) | k


@uffd_test(mem=MEM_ALL)
def test_dontwake_unprotect_resumes_only_on_wake(ctx, memtype):
    """UFFDIO_WRITEPROTECT_MODE_DONTWAKE lifts the protection but leaves the faulting thread
    asleep; it resumes on UFFDIO_WAKE of its page (and a wake of another page does not)."""
    uffd, region = ctx.wp_region(2, fill=FILL)
    store = ctx.store(region.page(0), 0xD0)
    assert ctx.fault(uffd).address == region.page(0)
    uffd.unprotect(region.page(0), region.page_size, dontwake=True)
    assert wp_pages(region.address, region.length, region.page_size) == [False, True]
    time.sleep(SHORT)
    assert not store.finished(), "DONTWAKE must not wake the waiter"
    uffd.wake(region.page(1), region.page_size)
    time.sleep(SHORT)
    assert not store.finished(), "a wake of another page released the waiter"
    uffd.wake(region.page(0), region.page_size)
    assert store.finished(LONG)
    assert native.load_u64(region.page(0)) == 0xD0


@uffd_test(mem=MEM_ALL)
def test_thread_id_zero_without_feature(ctx, memtype):
    """Without UFFD_FEATURE_THREAD_ID negotiated the kernel leaves feat.ptid zero."""
    region = ctx.region(1)
    region.fill(FILL)
    # (UFFDIO_API answers every feature the kernel has, so the request is what counts.)
    uffd = ctx.uffd(features=ctx.features() & ~Feature.THREAD_ID)
    ctx.register(uffd, region)
    uffd.writeprotect(region.address, region.length)
    store = ctx.store(region.address, 7)
    fault = ctx.fault(uffd)
    assert fault.is_wp and fault.address == region.address
    assert fault.thread_id == 0
    uffd.unprotect(region.address, region.length)
    assert store.finished(LONG)


@uffd_test(mem=MEM_ALL, features=Feature.THREAD_ID)
def test_many_concurrent_faults_nothing_lost_or_duplicated(ctx, memtype):
    """N threads fault at once on N pages: exactly N messages, one per page and thread, no
    more after a quiet period; a single range unprotect releases all of them."""
    n = _pages(memtype, 4, 16)
    uffd, region = ctx.wp_region(n, fill=FILL)
    stores = [ctx.store(region.page(i) + 24, 0x5000 + i) for i in range(n)]
    faults = _faults(ctx, uffd, n)
    assert list(ctx.messages(uffd, 0.1)) == [], "more messages than faulting threads"
    assert sorted(f.address for f in faults) == [region.page(i) for i in range(n)]
    assert sorted(f.thread_id for f in faults) == sorted(s.tid for s in stores)
    assert len({f.thread_id for f in faults}) == n
    uffd.unprotect(region.address, region.length)
    assert all(s.finished(LONG) for s in stores)
    assert [native.load_u64(region.page(i) + 24) for i in range(n)] == \
        [0x5000 + i for i in range(n)]


@uffd_test(mem=MEM_ALL, features=Feature.THREAD_ID)
def test_sequential_writer_faults_arrive_in_program_order(ctx, memtype):
    """A native writer storing once to each protected page in order: each fault arrives only
    after the previous page was unprotected, at the next page, from the same thread."""
    n = _pages(memtype)
    uffd, region = ctx.wp_region(n, fill=FILL)
    writer = ctx.writer(region, pattern=native.Pattern.SEQUENTIAL, max_writes=n, value_base=100)
    tids = set()
    for i in range(n):
        fault = ctx.fault(uffd)
        assert fault.address == region.page(i), \
            f"fault {i} at page {(fault.address - region.address) // region.page_size}"
        assert fault.is_wp
        tids.add(fault.thread_id)
        assert uffd.read(1, 0.02) == [], "the writer faulted again before its page was released"
        uffd.unprotect(region.page(i), region.page_size)
    assert writer.wait(LONG)
    assert len(tids) == 1 and 0 not in tids
    assert [native.load_u64(region.page(i)) for i in range(n)] == [100 + i for i in range(n)]
    assert [r.address for r in writer.records()] == [region.page(i) for i in range(n)]


@uffd_test(mem=MEM_ALL, features=Feature.THREAD_ID)
def test_two_writers_per_thread_program_order_under_handler(ctx, memtype):
    """Two native writers run concurrently over the two halves of a protected range with a
    native UNPROTECT handler: grouped by thread id, each thread's faults follow its own store
    order, every fault was resolved, and both halves hold the written values."""
    n = _pages(memtype, 4, 16)
    half = n // 2
    uffd, region = ctx.wp_region(n, fill=FILL)
    handler = ctx.handler(uffd, region, native.Policy.UNPROTECT)
    lo = ctx.writer(region, max_writes=half, value_base=1000)  # pages 0..half-1
    hi = native.Writer(region.page(half), half * region.page_size, page_size=region.page_size,
                       max_writes=half, value_base=2000)
    ctx._writers.append(hi)
    assert lo.wait(LONG) and hi.wait(LONG)
    stats = _resolved(handler, n)
    assert stats.wp_faults == n and stats.resolved == n and stats.errors == 0
    per_tid: dict[int, list[int]] = {}
    for rec in handler.records():
        per_tid.setdefault(rec.thread_id, []).append(rec.address)
    assert len(per_tid) == 2 and 0 not in per_tid
    sequences = sorted(per_tid.values())
    assert sequences == [[region.page(i) for i in range(half)],
                         [region.page(i) for i in range(half, n)]]
    assert [native.load_u64(region.page(i)) for i in range(n)] == \
        [1000 + i for i in range(half)] + [2000 + i for i in range(half)]


@uffd_test(mem=MEM_ALL, timeout=30)
def test_stress_random_writers_with_reprotect_cycles(ctx, memtype):
    """4 native writers (random pages, distinct offsets) race a native UNPROTECT handler while
    the range is write-protected again and again for ~0.5 s. Afterwards every page holds each
    writer's last value (no lost or torn store), the handler resolved every WP fault with no
    error and saw only WP faults, and writers that never touched a page left it untouched.
    An attempt in which no writer faulted (a slow CPU) raced nothing: tried again, then skipped."""
    ctx.retry(_stress_once, tries=3, budget_s=20)


def _stress_once(ctx) -> None:
    n = _pages(ctx.memtype, 4, 64)
    uffd, region = ctx.wp_region(n, fill=FILL)
    handler = ctx.handler(uffd, region, native.Policy.UNPROTECT)
    writers = [ctx.writer(region, pattern=native.Pattern.RANDOM, offset_in_page=8 * k,
                          seed=1 + k, value_base=(k + 1) << 32, rate=20000) for k in range(4)]
    cycles = 0
    end = time.monotonic() + 0.5 * STRESS_SCALE
    while time.monotonic() < end:
        uffd.writeprotect(region.address, region.length)
        cycles += 1
        time.sleep(0.005)
    for w in writers:
        w.request_stop()
    for w in writers:
        assert w.wait(LONG), "a writer stayed blocked: a fault was not resolved"
    stats = _resolved(handler, handler.stats.wp_faults)
    stats = handler.stats
    assert stats.errors == 0, f"handler errors, last {stats.last_error}"
    assert stats.messages == stats.wp_faults, "only WP faults expected"
    assert stats.wp_faults == stats.resolved
    print(f"{cycles} protect cycles, {stats.wp_faults} WP faults, "
          f"{sum(w.stats.writes for w in writers)} writes")
    for rec in handler.records():
        assert region.address <= rec.address < region.address + region.length
        assert rec.t_done_ns and not rec.error

    for k, w in enumerate(writers):
        recs = w.records()
        assert w.stats.dropped_records == 0 and len(recs) == w.stats.writes
        last: dict[int, int] = {}
        for r in recs:
            last[r.address] = r.value
        for i in range(n):
            addr = region.page(i) + 8 * k
            want = last.get(addr, FILL_U64)
            got = native.load_u64(addr)
            assert got == want, f"writer {k} page {i}: memory {got:#x}, last write {want:#x}"
    writes = [w.stats.writes for w in writers]
    require(stats.wp_faults > 0 and cycles > 1 and min(writes) > 0, "race window not exercised",
            f"{cycles} protect cycles, {stats.wp_faults} WP faults, writes {writes}; needs > 1, "
            "> 0 and > 0 each")
