# SPDX-License-Identifier: GPL-2.0-only
"""The snapshot demo: native writers store into a region while it is snapshotted, then the image
is checked against an independent reference of the frozen state (see uffdwp.snapshot.check).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .. import memory
from ..native import Pattern, Writer, percentile
from .check import CheckReport, WriterLog, check_image, fill_initial, value_base
from .engine import Progress, Snapshot, SnapshotResult
from .image import RegionInfo, load
from .targets import FileTarget, parse_target

# Each writer stores at its own 64-bit word of the page, so no two touch the same bytes.
MAX_WRITERS = memory.PAGE_SIZE // 8


@dataclass
class WriterSummary:
    writes: int
    writes_during: int  # stores started between the freeze and the last page saved
    max_stall_ns: int
    histogram: list[int]  # log2 ns buckets, every store
    fault_stalls_ns: list[int] = field(default_factory=list)  # stores stalled >= 1 µs in window


@dataclass
class DemoResult:
    params: dict
    snapshot: SnapshotResult
    writers: list[WriterSummary]
    check: CheckReport | None
    check_note: str
    nonzero_bytes: int
    undisturbed_rate: float  # stores/s of all writers before the snapshot
    kept_image: str = ""  # the default temporary image, when kept
    protected_after: int = -1  # pages still write-protected after it (-1: no pagemap bit)

    @property
    def fault_stalls_ns(self) -> list[int]:
        return sorted(s for w in self.writers for s in w.fault_stalls_ns)

    def as_dict(self) -> dict:
        return {
            "params": self.params,
            "snapshot": self.snapshot.as_dict(),
            "nonzero_bytes": self.nonzero_bytes,
            "undisturbed_stores_per_s": self.undisturbed_rate,
            "writers": [w.__dict__ for w in self.writers],
            "check": None if self.check is None else {
                "ok": self.check.ok, "cuts": self.check.cuts, "problems": self.check.problems,
                "compared_bytes": self.check.compared_bytes},
            "check_note": self.check_note,
            "protected_after": self.protected_after,
        }

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.as_dict(), indent=1))


STALL_FLOOR_NS = 1000  # a store slower than this during the snapshot waited on a WP fault


def run_demo(size: int, target: str | None, *, writers: int = 2, rate: int = 0,
             pattern: Pattern = Pattern.RANDOM, memtype: str = "anon",
             populate: bool | None = None, verify: bool = True,
             progress: Callable[[Progress | str], None] | None = None,
             record_capacity: int = 1 << 22, engine_priority: int = 0,
             timeout: float | None = None, stall_timeout: float | None = None,
             keep: bool = False, busy_poll_us: int = 0) -> DemoResult:
    """Snapshot *size* bytes of *memtype* under *writers* native writers (each *rate* stores/s,
    0 = as fast as it can) to *target*, then check the image if it is a file. Without a
    target the image goes to a temporary file, removed after the check unless *keep*.
    *progress* gets the snapshot's Progress, and 'checking' when the check starts."""
    if not 0 <= writers <= MAX_WRITERS:
        raise ValueError(f"{writers} writers: from 0 to {MAX_WRITERS} (each owns a 64-bit word "
                         "of the page)")
    if rate < 0:
        raise ValueError(f"a write rate is stores/s >= 0 (0: as fast as they can), not {rate}")
    temporary = target is None
    if temporary:
        fd, path = tempfile.mkstemp(prefix="uffdwp-demo-", suffix=".img")
        os.close(fd)
        target = f"file:{path}"
    try:
        result = _run(size, target, writers, rate, pattern, memtype, populate, verify,
                      progress, record_capacity, engine_priority, timeout, stall_timeout,
                      busy_poll_us)
    finally:
        if temporary and not keep:
            with contextlib.suppress(OSError):
                os.unlink(path)
    if temporary and keep:
        result.kept_image = path
    return result


def _run(size, target, writers, rate, pattern, memtype, populate, verify, progress,
         record_capacity, engine_priority, timeout, stall_timeout, busy_poll_us) -> DemoResult:
    params = {"size": size, "target": str(target), "writers": writers, "rate": rate,
              "pattern": pattern.name.lower(), "memtype": memtype, "populate": populate}
    tgt = parse_target(target)
    with memory.allocate(memtype, size) as region:
        info = RegionInfo(region.address, region.length, region.page_size, memtype)
        initial = fill_initial(info)
        ws: list[Writer] = []
        try:
            for w in range(writers):  # one by one: a failure stops those already running
                ws.append(Writer(region.address, region.length, page_size=region.page_size,
                                 offset_in_page=8 * w, pattern=pattern, rate=rate, seed=w + 1,
                                 value_base=value_base(w), record_capacity=record_capacity))
            time.sleep(0.05)  # let the writers reach their pace; measure it undisturbed
            c0, t0 = sum(w.stats.writes for w in ws), time.monotonic()
            time.sleep(0.05)
            undisturbed = (sum(w.stats.writes for w in ws) - c0) / (time.monotonic() - t0)
            snap = Snapshot([region], tgt, populate=populate, progress=progress,
                            engine_priority=engine_priority, stall_timeout=stall_timeout,
                            busy_poll_us=busy_poll_us)
            snap.start()
            result = snap.wait(timeout)
        finally:
            # Before the region is unmapped (leaving the with): no writer may still store.
            for w in ws:
                w.request_stop()
            for w in ws:
                w.wait(30)
        protected_after = _protected_pages(region)
        s = result.stats
        logs, summaries = [], []
        for i, w in enumerate(ws):
            logs.append(WriterLog.from_writer(w, 0, value_base(i), s.t_saved_ns or s.t_end_ns))
            st = w.stats
            summaries.append(_summary(logs[-1], st, s.t_protect_ns, s.t_saved_ns or s.t_end_ns))
            logs[-1] = _until(logs[-1], s.t_frozen_ns)
        for w in ws:
            w.close()
    check, note = None, ""
    if not verify:
        note = "not checked (--no-verify)"
    elif isinstance(tgt, FileTarget) and not tgt.in_place:
        if progress:
            progress("checking")
        check = check_image(load(tgt.path), [initial], logs, s.t_protect_ns, s.t_frozen_ns)
        note = str(check)
    else:
        note = (f"not checked: the image went to {tgt}; run `uffdwp image verify` on what it "
                "stored")
    # non-zero memory at the freeze: the pages the engine had to store with their bytes
    nonzero = s.data_pages * info.page_size
    return DemoResult(params, result, summaries, check, note, nonzero, undisturbed,
                      protected_after=protected_after)


def _protected_pages(region: memory.Region) -> int:
    from .. import kernel_facts as kf
    from .. import pagemap
    from ..kernel_version import at_least, running

    since = next(f.since for f in kf.PAGEMAP_FACTS if f.name == "PM_UFFD_WP")
    if not at_least(running(), since):
        return -1  # pagemap shows no uffd-wp bit: the count would always read 0
    try:
        return sum(pagemap.uffd_wp(region.address, region.length, region.page_size))
    except OSError:
        return -1


def _until(log: WriterLog, t_ns: int) -> WriterLog:
    import bisect

    k = bisect.bisect_right(log.t_start, t_ns)
    return WriterLog(log.region, log.base, log.t_start[:k], log.stall[:k], log.address[:k],
                     log.value[:k], log.writes)


def _summary(log: WriterLog, st, t_begin: int, t_end: int) -> WriterSummary:
    import bisect

    lo = bisect.bisect_left(log.t_start, t_begin)
    hi = bisect.bisect_right(log.t_start, t_end)
    stalls = [s for s in log.stall[lo:hi] if s >= STALL_FLOOR_NS]
    return WriterSummary(st.writes, hi - lo, st.max_stall_ns, list(st.histogram), stalls)


def stall_summary(stalls_ns: Sequence[int]) -> str:
    """One line: how many faulting stores, their p50/p90/p99 and max (µs)."""
    if not stalls_ns:
        return "no writer waited on a write-protect fault"
    def pct(q: float) -> float:
        return percentile(stalls_ns, q) / 1000

    return (f"{len(stalls_ns)} faulting stores: p50 {pct(0.5):.1f} us, p90 {pct(0.9):.1f} us, "
            f"p99 {pct(0.99):.1f} us, max {max(stalls_ns) / 1000:.1f} us")


__all__ = ["MAX_WRITERS", "DemoResult", "WriterSummary", "run_demo", "stall_summary"]
