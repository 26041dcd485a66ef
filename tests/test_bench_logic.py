# SPDX-License-Identifier: GPL-2.0-only
"""The snapshot bench's arithmetic: exact percentiles, which stores count as WP faults, QEMU's
precopy convergence rule, the headline ratios, the fixed-offset (mapped-ram) file."""

from __future__ import annotations

import random

import numpy as np
import pytest

from uffdwp.bench.command import table
from uffdwp.bench.precopy import Convergence, ConvergenceParams, load_mapped
from uffdwp.bench.snapshot import BenchResult, PlainBar, ProtectCost, Run
from uffdwp.bench.stats import (
    StoreLog,
    first_touches,
    median,
    percentiles,
    split_faults,
    stores_in_window,
    time_ratio,
)
from uffdwp.native import percentile

MS = 1_000_000


# --- percentiles -------------------------------------------------------------------------------
def test_percentiles_are_exact_nearest_rank():
    rng = random.Random(7)
    for n in (1, 2, 3, 10, 101, 1000):
        values = [rng.randrange(10**6) for _ in range(n)]
        for q in (0.0, 0.5, 0.9, 0.99, 1.0):
            (got,) = percentiles(values, (q,))
            assert got == percentile(values, q)
            assert got in values  # a sample, never a bucket bound
    assert percentiles(list(range(1, 101)), (0.5, 0.99)) == [51, 99]
    assert percentiles([], (0.5,)) == [0]


def test_median_and_time_ratio():
    assert median([3.0, 1.0, 2.0]) == 2.0
    assert median([1.0, 2.0, 3.0, 10.0]) == 2.5
    with pytest.raises(ValueError):
        median([])
    # a cold first sample does not move the bar
    assert time_ratio([9.0, 1.0, 1.1, 1.0], [2.0, 2.0, 2.2]) == pytest.approx(1.05 / 2.0)
    assert time_ratio([], [1.0]) is None


# --- which stores waited on a WP fault -----------------------------------------------------------
def _log(stores: list[tuple[int, int, int]]) -> StoreLog:
    """(t_start, stall, page) triples in time order."""
    t, s, p = zip(*stores) if stores else ((), (), ())
    return StoreLog.from_lists(t, s, p)


def _writer(pages: int, faulting: set[int], *, t0: int, fault_ns: int = 50_000,
            slow_later: dict[int, int] | None = None) -> StoreLog:
    """A writer storing to pages 0..pages-1 twice over from t0, 1 µs apart, 60 ns a store;
    first stores to *faulting* pages stall *fault_ns*; *slow_later* makes the n-th store slow
    for another reason (preemption) without it being a first touch."""
    stores, t = [], t0
    for n, page in enumerate(list(range(pages)) * 2):
        stall = fault_ns if (n < pages and page in faulting) else 60
        if slow_later and n in slow_later:
            stall = slow_later[n]
        stores.append((t, stall, page))
        t += 1000 + stall
    return _log(stores)


def test_first_touches_are_per_page_in_the_window():
    log = _log([(10, 1, 5), (20, 1, 6), (30, 1, 5), (40, 1, 7), (50, 1, 6), (60, 1, 8)])
    assert first_touches(log, 0, 100).tolist() == [0, 1, 3, 5]
    # a page stored to before the window may still fault in it: its first store inside counts
    assert first_touches(log, 25, 55).tolist() == [2, 3, 4]
    assert stores_in_window([log], 25, 55).tolist() == [1, 1, 1]


def test_faults_are_the_slowest_first_touches_as_many_as_the_engine_read():
    t0 = 1_000_000
    faulting = {3, 17, 40, 41, 99}
    # two stores that are not first touches are preempted for 4 ms: not faults
    log = _writer(128, faulting, t0=t0, slow_later={130: 4 * MS, 200: 4 * MS})
    undisturbed = [60] * 10_000 + [4 * MS] * 2
    split = split_faults([log], t0, 10**12, len(faulting), undisturbed)
    assert split.count == len(faulting)
    assert split.candidates == 128
    assert split.stalls.tolist() == [50_000] * 5
    # the undisturbed tail above 50 us is 2 in 10002: of 123 other first touches, ~0.02
    assert split.background_expected == pytest.approx(123 * 2 / 10_002)
    # the old rule, any store over ~1 us, counts the preempted ones too
    assert int(np.count_nonzero(stores_in_window([log], t0, 10**12) >= 1 << 10)) == 7


def test_no_fault_without_write_protection():
    """The stop method (no userfaultfd at all) has no faults, however slow some stores were:
    the old rule gave it 18 on a loaded machine."""
    log = _writer(64, set(), t0=0, slow_later={3: 5 * MS, 70: 2 * MS})
    split = split_faults([log], 0, 10**12, 0, [60] * 100)
    assert split.count == 0 and split.background_expected == 0.0


def test_two_writers_each_have_their_own_first_touches():
    a = _writer(16, {1, 2}, t0=0)
    b = _writer(16, {2}, t0=500)  # both faulted on page 2: two messages, two waiting stores
    split = split_faults([a, b], 0, 10**12, 3, [60] * 100)
    assert split.count == 3 and split.candidates == 32


def test_stores_outside_the_window_are_not_candidates():
    log = _writer(32, {5, 25}, t0=0)
    t_page_20 = int(log.t_start[20])
    split = split_faults([log], t_page_20, 10**12, 1, [60])
    # candidates: pages 20..31 of the first pass, 0..19 of the second; page 5's fault was
    # before the window
    assert split.candidates == 32 and split.stalls.tolist() == [50_000]
    assert split_faults([log], t_page_20, 10**12, 2, [60]).stalls.tolist() == [60, 50_000]


# --- QEMU's convergence rule ---------------------------------------------------------------------
def test_threshold_is_bandwidth_times_downtime():
    c = Convergence(ConvergenceParams(downtime_ms=300), 0)
    assert not c.can_complete(1) and c.can_complete(0)  # no bandwidth measured yet
    c.on_sent(50 << 20, 50 * MS)  # before BUFFER_DELAY: not measured yet
    assert c.threshold == 0
    c.on_sent(50 << 20, 100 * MS)  # 100 MiB in 100 ms: 1000 MiB/s
    assert c.bandwidth == pytest.approx((100 << 20) / 0.1)
    assert c.threshold == int((100 << 20) / 0.1 * 0.3)
    assert c.can_complete(c.threshold - 1) and not c.can_complete(c.threshold)
    c.on_sent(10 << 20, 200 * MS)  # the next interval alone: 100 MiB/s
    assert c.threshold == int((10 << 20) / 0.1 * 0.3)


def _periods(c: Convergence, dirty: int, sent: int, n: int, start: int) -> list[bool]:
    """n sync periods of 1.1 s, each sending *sent* bytes and finding *dirty* newly dirty."""
    out = []
    for k in range(n):
        t = start + (k + 1) * 1100 * MS
        c.on_sent(sent, t - MS)
        out.append(c.on_sync(dirty, t))
    return out


def test_throttle_starts_after_two_high_periods_and_climbs():
    c = Convergence(ConvergenceParams(), 0)
    assert not c.on_sync(10**12, 0)  # the setup sync never throttles
    # dirtied 60 % of what was sent: above the 50 % trigger
    changed = _periods(c, 60, 100, 2, 0)
    assert changed == [False, True] and c.throttle_pct == 20
    _periods(c, 60, 100, 2, 3 * 1100 * MS)
    assert c.throttle_pct == 30
    for _ in range(20):
        _periods(c, 60, 100, 2, c._period_ns)
    assert c.throttle_pct == 99


def test_no_throttle_below_the_trigger_or_in_short_periods():
    c = Convergence(ConvergenceParams(), 0)
    c.on_sync(0, 0)
    assert _periods(c, 40, 100, 6, 0) == [False] * 6  # 40 % < 50 %
    assert c.throttle_pct == 0
    # many syncs within one second are one period: no decision until it is over
    c2 = Convergence(ConvergenceParams(), 0)
    c2.on_sync(0, 0)
    for k in range(1, 10):
        c2.on_sent(100, k * 100 * MS)
        assert not c2.on_sync(10**9, k * 100 * MS)
    assert c2.throttle_pct == 0
    off = Convergence(ConvergenceParams(auto_converge=False), 0)
    off.on_sync(0, 0)
    assert _periods(off, 10**9, 1, 6, 0) == [False] * 6


def test_high_periods_need_not_be_consecutive():
    """As QEMU's dirty_rate_high_cnt: counted up on a high period, never reset by a low one."""
    c = Convergence(ConvergenceParams(), 0)
    c.on_sync(0, 0)
    assert _periods(c, 60, 100, 1, 0) == [False]
    assert _periods(c, 10, 100, 1, 1100 * MS) == [False]
    assert _periods(c, 60, 100, 1, 2200 * MS) == [True]


# --- headline ratios -----------------------------------------------------------------------------
def _run(method, pattern, rate, seconds, writers=1, **kw) -> Run:
    base = {"image_bytes": 1000, "bytes_written": 1000, "nonzero_bytes": 1000}
    return Run(method, pattern, rate, writers if rate >= 0 else 0, seconds, **(base | kw))


def test_ratios_are_ratios_of_medians_beside_the_bar():
    runs = [_run("uffd-wp", "random", -1, s) for s in (2.0, 2.5, 9.0)]
    runs += [_run("uffd-wp", "random", 0, s) for s in (3.0, 2.9, 3.2)]
    runs += [_run("uffd-wp", "random", 0, s, writers=2) for s in (5.0, 5.0, 5.0)]
    runs += [_run("uffd-wp", "random", 10_000, 1.0, image_bytes=1010, faults=3,
                  fault_messages=3, fault_p50_us=60.0, fault_p99_us=400.0)]
    runs += [_run("stop", "random", -1, 1.0)]
    res = BenchResult(1 << 30, (1, 2), "/tmp", {}, {"random": PlainBar("random", 1000,
                                                                       [2.0, 2.2, 1.9, 30.0])},
                      runs, ProtectCost(1 << 30, [30.0, 32.0, 31.0], [0.5, 0.4, 0.6],
                                        [1 << 30, 1 << 30, 1 << 29]))
    r = res.ratios()
    assert r["idle_throughput_over_plain"]["random"] == pytest.approx(2.1 / 2.5)
    assert r["time_max_over_idle"]["random"]["1 writer"] == pytest.approx(3.0 / 2.5)
    assert r["time_max_over_idle"]["random"]["2 writers"] == pytest.approx(5.0 / 2.5)
    assert r["image_over_nonzero"]["random"] == {"idle": 1.0, "10,000/s x1": 1.01,
                                                  "max x1": 1.0, "max x2": 1.0}
    assert r["fault_stall_us"]["random"] == {"10,000/s x1": {"p50": 60.0, "p99": 400.0}}
    assert r["protect_ms_per_gib"] == {"4k": 31.0, "thp": 0.5}
    assert r["thp_backed_fraction"] == 0.5
    text = table(res)
    assert "stop" in text and "3/3" in text and "-" in text


# --- the fixed-offset file -----------------------------------------------------------------------
def test_mapped_file_reads_back_pages_by_bitmap(tmp_path):
    ps, pages = 4096, 10
    memory = bytearray(pages * ps)
    path = tmp_path / "m.img"
    body = bytearray(pages * ps)
    bits = 0
    for i in (1, 4, 9):
        memory[i * ps:(i + 1) * ps] = bytes([i]) * ps
        body[i * ps:(i + 1) * ps] = bytes([i]) * ps
        bits |= 1 << i
    body[2 * ps:3 * ps] = b"\x77" * ps  # stale bytes of a page that became zero: bit clear
    path.write_bytes(bytes(body) + bits.to_bytes(2, "little"))
    assert load_mapped(path, pages * ps, ps) == bytes(memory)
