# SPDX-License-Identifier: GPL-2.0-only
"""Dirty-logging precopy, the older way to save memory that keeps changing, as baselines for
the snapshot bench.

Every variant logs writes with async UFFD-WP (PAGEMAP_SCAN get-and-reprotect in one walk; the
kernel resolves the faults itself, so writers never wait on user space), copies everything once,
then re-copies what was dirtied, and ends with a stop-and-copy of what is left:

  naive      rounds until a round has at most 256 dirty pages or 8 rounds passed; every re-sent
             page is appended to the stream (the image grows with the write rate).
  converge   as QEMU's precopy converges (migration/migration.c migration_iteration_run and
             migration_update_counters, migration/ram.c migration_bitmap_sync,
             migration_trigger_throttle and mig_throttle_guest_down): complete once the dirty
             set can be sent within the downtime limit at the bandwidth measured over the last
             100 ms, and throttle the writers (cpu-throttle: 20 %, then +10 % up to 99 %) when
             twice the bytes dirtied in a period of at least a second exceed half the bytes sent
             in it. Pages are appended to a stream, as QEMU's stream formats do.
  mapped     the same control writing each page at a fixed offset, as QEMU's mapped-ram file
             migration (docs/devel/migration/mapped-ram.rst): a re-sent page overwrites its
             place, zero pages are not written and cleared in a bitmap, so the file never grows
             beyond memory (plus the bitmap).

The mapped file: page i of the region at offset i * page_size, then the bitmap (bit i set: page
i's bytes are in the file; clear: the page is zero), load_mapped() reads it back.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .. import memory
from .._ffi import ffi, lib
from ..kernel_facts import Feature, RegisterMode
from ..pagemap import written_pages
from ..snapshot.image import FLAG_REWRITES, ImageHeader, ImageWriter, RegionInfo
from ..uffd import Userfaultfd

# QEMU's defaults (migration/options.c) and loop constants (migration.c, ram.c).
DOWNTIME_LIMIT_MS = 300  # DEFAULT_MIGRATE_SET_DOWNTIME
BUFFER_DELAY_MS = 100  # BUFFER_DELAY: bandwidth and threshold are re-measured this often
SYNC_PERIOD_MS = 1000  # migration_bitmap_sync: throttling is considered at most once a second
THROTTLE_TRIGGER_PCT = 50  # DEFAULT_MIGRATE_THROTTLE_TRIGGER_THRESHOLD
THROTTLE_INITIAL_PCT = 20  # DEFAULT_MIGRATE_CPU_THROTTLE_INITIAL
THROTTLE_INCREMENT_PCT = 10  # DEFAULT_MIGRATE_CPU_THROTTLE_INCREMENT
THROTTLE_MAX_PCT = 99  # DEFAULT_MIGRATE_MAX_CPU_THROTTLE
SEND_PAGES = 1024  # pages sent between two looks at the clock and the dirty set
MAX_RUN_BYTES = 4 << 20  # one pwrite of consecutive pages (mapped)
NAIVE_MAX_ROUNDS, NAIVE_CONVERGED_PAGES = 8, 256


@dataclass
class ConvergenceParams:
    downtime_ms: float = DOWNTIME_LIMIT_MS
    auto_converge: bool = True
    buffer_delay_ms: float = BUFFER_DELAY_MS
    sync_period_ms: float = SYNC_PERIOD_MS
    trigger_pct: int = THROTTLE_TRIGGER_PCT
    throttle_initial: int = THROTTLE_INITIAL_PCT
    throttle_increment: int = THROTTLE_INCREMENT_PCT
    throttle_max: int = THROTTLE_MAX_PCT


class Convergence:
    """QEMU's precopy control, as pure bookkeeping: fed the bytes sent and the pages found dirty
    at each bitmap sync (with their times), it says when to complete and how hard to throttle.

    - on_sent: every buffer_delay the bandwidth of the last interval is measured and the
      threshold set to bandwidth * downtime (migration_update_counters);
    - can_complete: nothing pending, or less pending than the threshold
      (migration_iteration_run);
    - on_sync: over a period of more than sync_period since the last check (and not at the
      first sync), if the bytes dirtied exceed trigger_pct % of the bytes sent, a second such
      period starts or raises the throttle (migration_trigger_throttle, mig_throttle_guest_down
      without tailslow)."""

    def __init__(self, params: ConvergenceParams, now_ns: int) -> None:
        self.p = params
        self.sent = 0
        self.bandwidth = 0.0  # bytes/s over the last interval
        self.threshold = 0  # bytes that can be sent within the downtime limit
        self.syncs = 0
        self.throttle_pct = 0
        self.throttle_steps: list[tuple[int, int]] = []  # (ns, new percentage)
        self._iter_ns, self._iter_bytes = now_ns, 0
        self._period_ns, self._period_bytes, self._period_dirty = now_ns, 0, 0
        self._high = 0

    def on_sent(self, nbytes: int, now_ns: int) -> None:
        self.sent += nbytes
        elapsed = now_ns - self._iter_ns
        if elapsed >= self.p.buffer_delay_ms * 1e6:
            self.bandwidth = (self.sent - self._iter_bytes) / (elapsed / 1e9)
            self.threshold = int(self.bandwidth * self.p.downtime_ms / 1000)
            self._iter_ns, self._iter_bytes = now_ns, self.sent

    def can_complete(self, pending_bytes: int) -> bool:
        return pending_bytes == 0 or pending_bytes < self.threshold

    def on_sync(self, new_dirty_bytes: int, now_ns: int) -> bool:
        """A bitmap sync found *new_dirty_bytes* newly dirty; True when the throttle changed."""
        self.syncs += 1
        if self.syncs == 1:
            self._period_ns = now_ns
        self._period_dirty += new_dirty_bytes
        if now_ns - self._period_ns <= self.p.sync_period_ms * 1e6 or self.syncs <= 1:
            return False
        changed = False
        sent_period = self.sent - self._period_bytes
        if self.p.auto_converge and \
                self._period_dirty > sent_period * self.p.trigger_pct / 100:
            self._high += 1
            if self._high >= 2:
                self._high = 0
                self.throttle_pct = (self.p.throttle_initial if not self.throttle_pct else
                                     min(self.throttle_pct + self.p.throttle_increment,
                                         self.p.throttle_max))
                self.throttle_steps.append((now_ns, self.throttle_pct))
                changed = True
        self._period_ns, self._period_bytes, self._period_dirty = now_ns, self.sent, 0
        return changed


@dataclass
class PrecopyOutcome:
    t_begin_ns: int
    t_stop_ns: int  # writers stopped: the stop-and-copy starts
    t_end_ns: int  # the last byte written
    bytes_written: int
    rounds: int
    converged: bool  # False: forced to complete by the time limit
    throttle_max_pct: int = 0
    throttle_steps: list[tuple[int, int]] = field(default_factory=list)
    final_pages: int = 0  # pages sent in the stop-and-copy

    @property
    def pause_ns(self) -> int:
        return self.t_end_ns - self.t_stop_ns


class _DirtyLog:
    """The pages to send, as a bitmap fed by async-WP syncs (get-and-reprotect)."""

    def __init__(self, region: memory.Region) -> None:
        self.region = region
        self.pages = region.length // region.page_size
        self.dirty = np.ones(self.pages, dtype=bool)  # the first round sends everything
        self.count = self.pages
        self.cursor = 0

    def sync(self) -> int:
        """Collect the pages written since the last sync; returns how many were newly dirty."""
        r = self.region
        found = written_pages(r.address, r.address + r.length, reprotect=True,
                              page_size=r.page_size)
        if not found:
            return 0
        idx = (np.asarray(found, dtype=np.uint64) - r.address) // r.page_size
        new = idx[~self.dirty[idx]]
        self.dirty[new] = True
        self.count += int(new.size)
        return int(new.size)

    def take(self, limit: int | None) -> np.ndarray:
        """Up to *limit* dirty pages from the cursor on (all of them for None), marked clean."""
        span = self.dirty[self.cursor:]
        idx = np.flatnonzero(span)
        if limit is not None:
            idx = idx[:limit]
        idx = idx + self.cursor
        self.dirty[idx] = False
        self.count -= int(idx.size)
        if idx.size:
            self.cursor = int(idx[-1]) + 1
        return idx.astype(np.uint64)

    def rewind(self) -> None:
        self.cursor = 0


class StreamSink:
    """Pages appended as image records (FLAG_REWRITES: a later record of a page wins)."""

    def __init__(self, fd: int, region: memory.Region) -> None:
        info = RegionInfo(region.address, region.length, region.page_size, region.memtype)
        self.writer = ImageWriter(fd, ImageHeader([info], FLAG_REWRITES))
        self.region = region

    def send(self, idx: np.ndarray) -> int:
        return self.writer.write_pages(0, self.region.address, idx.tolist()) if idx.size else 0

    def finish(self) -> int:
        before = self.writer.bytes
        return self.writer.finish() - before


class MappedSink:
    """Pages at fixed offsets (QEMU's mapped-ram), the bitmap after the pages."""

    def __init__(self, fd: int, region: memory.Region) -> None:
        self.fd = fd
        self.region = region
        self.bitmap = ffi.new("uint8_t[]", (region.length // region.page_size + 7) // 8)

    def send(self, idx: np.ndarray) -> int:
        if not idx.size:
            return 0
        arr = ffi.from_buffer("uint64_t[]", np.ascontiguousarray(idx, dtype=np.uint64))
        r = self.region
        n = lib.uffdbench_pwrite_pages(self.fd, r.address, r.page_size, arr, int(idx.size), 0,
                                       self.bitmap, MAX_RUN_BYTES)
        if n < 0:
            raise OSError(-n, f"writing pages at their offsets: {os.strerror(-n)}")
        return n

    def finish(self) -> int:
        data = ffi.buffer(self.bitmap)[:]
        os.pwrite(self.fd, data, self.region.length)
        return len(data)


def load_mapped(path: str | os.PathLike, length: int, page_size: int) -> bytes:
    """The memory a mapped file holds: pages whose bitmap bit is set, zero elsewhere."""
    with open(path, "rb") as f:
        f.seek(length)
        bits = np.unpackbits(np.frombuffer(f.read(), dtype=np.uint8), bitorder="little")
        f.seek(0)
        data = bytearray(f.read(length).ljust(length, b"\0"))
    pages = length // page_size
    view = np.frombuffer(data, dtype=np.uint8).reshape(pages, page_size)
    view[bits[:pages] == 0] = 0
    return bytes(data)


def _logging_uffd(region: memory.Region) -> Userfaultfd:
    want = Feature.PAGEFAULT_FLAG_WP | Feature.WP_ASYNC | Feature.WP_UNPOPULATED
    if region.memtype != "anon":
        want |= Feature.WP_HUGETLBFS_SHMEM
    uffd = Userfaultfd.create(want, via="auto")
    try:
        uffd.register(region.address, region.length, RegisterMode.WP)
        uffd.writeprotect(region.address, region.length)  # async: from now on writes are logged
    except BaseException:
        uffd.close()
        raise
    return uffd


def run_precopy(region: memory.Region, fd: int, *, layout: str, stop_writers: Callable[[], None],
                throttle: Callable[[int], None], control: str = "converge",
                params: ConvergenceParams | None = None,
                time_limit_s: float = 60.0) -> PrecopyOutcome:
    """Save *region* to *fd* while writers run; *stop_writers* pauses them for the last round
    (after which they stay stopped), *throttle* sets their throttle percentage. *layout* is
    'stream' or 'mapped'; *control* 'converge' (QEMU's rule) or 'naive'. After *time_limit_s*
    without converging, the stop-and-copy is forced (converged=False)."""
    if layout not in ("stream", "mapped"):
        raise ValueError(f"layout is 'stream' or 'mapped', not {layout!r}")
    if control not in ("converge", "naive"):
        raise ValueError(f"control is 'converge' or 'naive', not {control!r}")
    params = params or ConvergenceParams()
    t_begin = time.monotonic_ns()
    uffd = _logging_uffd(region)
    try:
        sink = StreamSink(fd, region) if layout == "stream" else MappedSink(fd, region)
        log = _DirtyLog(region)
        ctl = Convergence(params, t_begin)
        ctl.on_sync(0, t_begin)  # the setup sync: logging starts, everything is dirty
        written, rounds, converged = 0, 1, True
        deadline = t_begin + int(time_limit_s * 1e9)
        ps = region.page_size
        while True:
            now = time.monotonic_ns()
            if now > deadline:
                converged = False
                break
            if control == "naive":
                if log.count == 0 or log.cursor >= log.pages:
                    new = log.sync()
                    rounds += 1
                    log.rewind()
                    if rounds > NAIVE_MAX_ROUNDS or new <= NAIVE_CONVERGED_PAGES:
                        converged = new <= NAIVE_CONVERGED_PAGES
                        break
            elif ctl.can_complete(log.count * ps):  # the estimate; the exact figure syncs
                if ctl.on_sync(log.sync() * ps, time.monotonic_ns()):
                    throttle(ctl.throttle_pct)
                if ctl.can_complete(log.count * ps):
                    break
            idx = log.take(SEND_PAGES)
            if not idx.size:  # the round is complete: sync and start the next one
                rounds += 1
                log.rewind()
                if control == "converge" and ctl.on_sync(log.sync() * ps, time.monotonic_ns()):
                    throttle(ctl.throttle_pct)
                continue
            n = sink.send(idx)
            written += n
            ctl.on_sent(n, time.monotonic_ns())
        # Completion (migration_completion): stop the writers, last sync, send what is left.
        t_stop = time.monotonic_ns()
        stop_writers()
        log.sync()
        log.rewind()
        rest = log.take(None)
        written += sink.send(rest)
        written += sink.finish()
        t_end = time.monotonic_ns()
    finally:
        with contextlib.suppress(OSError):
            uffd.unregister(region.address, region.length)
        uffd.close()
    return PrecopyOutcome(t_begin, t_stop, t_end, written, rounds, converged,
                          max((p for _, p in ctl.throttle_steps), default=0),
                          ctl.throttle_steps, int(rest.size))


__all__ = ["Convergence", "ConvergenceParams", "MappedSink", "PrecopyOutcome", "StreamSink",
           "load_mapped", "run_precopy"]
