# SPDX-License-Identifier: GPL-2.0-only
"""Snapshot benchmark: UFFD-WP background snapshot against the older ways, every figure measured
beside its bar in the same run.

Methods, each saving the same region to the same target directory:
  uffd-wp         the background snapshot engine (uffdwp.snapshot)
  precopy         dirty-logging precopy converging as QEMU's (uffdwp.bench.precopy: bandwidth-based
                  downtime limit, auto-converge throttling of the writers), image as a stream
  precopy-mapped  the same control, each page at a fixed offset (QEMU's mapped-ram)
  precopy-naive   naive stream precopy: fixed round limits, every re-sent page appended
  fork            a fork() copy-on-write snapshot (as Redis BGSAVE): the child writes the memory
  stop            stop-the-world: the writers are stopped while the memory is written
and the plain bar: write(2) of the same non-zero bytes to the same directory, no snapshot.

Content patterns: "random" (random bytes, no zero page) and "quarter-zero" (every fourth page
zero, which zero-page skipping profits from). Per run, from the writers' own per-store logs
(uffdwp.native.Writer), exact, in the writers' window (uffd-wp: protect -> all saved; the
others: start -> end): stores and their stalls, the stores that waited on a WP fault
(uffdwp.bench.stats.split_faults), throughput against the same writers just before. `sync`
runs between runs, so no run is throttled by the writeback of another.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .. import memory
from .._ffi import ffi, lib
from ..native import Pattern, Writer, now_ns
from ..snapshot import Snapshot
from ..snapshot.check import pattern_byte
from ..snapshot.image import ImageHeader, ImageWriter, RegionInfo, load
from .defs import DEFAULT_RATES, DEFAULT_WRITERS, METHODS, PATTERNS
from .precopy import ConvergenceParams, load_mapped, run_precopy
from .roundtrip import RoundTrip, bench_roundtrip
from .stats import (
    StoreLog,
    logs_cover,
    median,
    percentiles,
    split_faults,
    spread,
    stores_in_window,
    time_ratio,
)

PRE_WINDOW_S = 0.25  # writers run this long before each snapshot: their undisturbed baseline
WARMUP_S = 0.05  # ... of which the first part is left out (threads reaching their pace)
RANDOM_BLOCK = 64 << 20  # the random pattern: this many random bytes, repeated
PLAIN_CHUNK = 1 << 20  # bytes per write(2) of the plain bar
RECORD_BYTES = 32  # one logged store (struct uffdwp_write_record)
GIB = 1 << 30


def rate_name(rate: int) -> str:
    return {-1: "idle", 0: "max"}.get(rate, f"{rate:,}/s")


@dataclass
class Run:
    method: str
    pattern: str
    rate: int  # stores/s per writer; -1 idle, 0 as fast as they can
    writers: int
    seconds: float  # the method's time: uffd-wp start -> end record; others start -> end
    image_bytes: int  # what the image takes on the target
    bytes_written: int  # what was written to it (re-sent pages count again)
    nonzero_bytes: int  # non-zero memory the image holds
    window_s: float = 0.0  # the writers' window
    stores: int = 0  # stores started in the window
    undisturbed_rate: float = 0.0  # stores/s of all writers just before the window
    throughput_ratio: float | None = None  # stores/s in the window / undisturbed
    stall_p50_us: float | None = None  # every store in the window
    stall_p99_us: float | None = None
    stall_max_us: float | None = None
    faults: int | None = None  # stores that waited on a WP fault (None: no WP handler waits)
    fault_messages: int | None = None  # WP fault messages the engine read
    fault_candidates: int | None = None  # first stores to a page in the window
    fault_p50_us: float | None = None
    fault_p99_us: float | None = None
    fault_max_us: float | None = None
    background_expected: float | None = None  # of the faults, how many may be other stalls
    pause_ms: float = 0.0  # writers stopped (stop-and-copy)
    protect_ms: float = 0.0
    rounds: int = 0
    throttle_pct: int = 0
    converged: bool | None = None
    logs_complete: bool = True
    note: str = ""

    @property
    def size_ratio(self) -> float:
        return self.image_bytes / self.nonzero_bytes if self.nonzero_bytes else 0.0

    def as_dict(self) -> dict:
        return asdict(self) | {"size_ratio": self.size_ratio}


@dataclass
class PlainBar:
    pattern: str
    nonzero_bytes: int
    samples_s: list[float] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return median(self.samples_s)


@dataclass
class ProtectCost:
    size: int
    small_ms: list[float]  # protect ioctl time of each run, 4 KiB pages
    thp_ms: list[float]  # ... THP-backed memory
    thp_backed_bytes: list[int]  # AnonHugePages of the THP region before each run
    note: str = ""

    def per_gib(self) -> dict:
        gib = self.size / GIB
        return {"4k": median(self.small_ms) / gib if self.small_ms else None,
                "thp": median(self.thp_ms) / gib if self.thp_ms else None}

    @property
    def thp_backed_fraction(self) -> float:
        return min(self.thp_backed_bytes, default=0) / self.size

    def as_dict(self) -> dict:
        return asdict(self) | {"ms_per_gib": self.per_gib(),
                               "thp_backed_fraction": self.thp_backed_fraction}


@dataclass
class BenchResult:
    size: int
    writers: tuple[int, ...]
    directory: str
    params: dict
    plain: dict[str, PlainBar]
    runs: list[Run]
    protect: ProtectCost | None = None
    roundtrip: RoundTrip | None = None
    host: dict = field(default_factory=dict)

    def cell(self, method: str, pattern: str, rate: int, writers: int | None = None) -> list[Run]:
        """Every run of one cell (writers: the first count when None)."""
        n = self.writers[0] if writers is None else writers
        return [r for r in self.runs if (r.method, r.pattern, r.rate) == (method, pattern, rate)
                and (r.writers == n or rate < 0)]

    def top_rate(self) -> int | None:
        rates = {r.rate for r in self.runs if r.rate >= 0}
        return 0 if 0 in rates else max(rates, default=None)

    def ratios(self) -> dict:
        """The headline figures, each a ratio of medians measured in this run."""
        out: dict = {"idle_throughput_over_plain": {}, "time_max_over_idle": {},
                     "image_over_nonzero": {}, "fault_stall_us": {}}
        top = self.top_rate()
        for pattern, bar in self.plain.items():
            idle = [r.seconds for r in self.cell("uffd-wp", pattern, -1)]
            # same bytes on both sides: non-zero memory / time, so a ratio of times
            out["idle_throughput_over_plain"][pattern] = time_ratio(bar.samples_s, idle)
            if top is not None:
                out["time_max_over_idle"][pattern] = {
                    f"{n} writer{'s' * (n > 1)}": time_ratio(
                        [r.seconds for r in self.cell("uffd-wp", pattern, top, n)], idle)
                    for n in self.writers}
            sizes, stalls = {}, {}
            for r in self.runs:
                if r.method != "uffd-wp" or r.pattern != pattern:
                    continue
                key = rate_name(r.rate) + (f" x{r.writers}" if r.rate >= 0 else "")
                sizes[key] = max(sizes.get(key, 0.0), round(r.size_ratio, 4))
                if r.faults:
                    worst = stalls.get(key, {"p50": 0.0, "p99": 0.0})
                    stalls[key] = {"p50": max(worst["p50"], r.fault_p50_us or 0.0),
                                   "p99": max(worst["p99"], r.fault_p99_us or 0.0)}
            out["image_over_nonzero"][pattern] = sizes
            out["fault_stall_us"][pattern] = stalls
        if self.roundtrip:
            out["roundtrip_over_reference"] = {"median": self.roundtrip.median_ratio,
                                               "p99": self.roundtrip.p99_ratio}
        if self.protect:
            out["protect_ms_per_gib"] = self.protect.per_gib()
            out["thp_backed_fraction"] = self.protect.thp_backed_fraction
        return out

    def as_dict(self) -> dict:
        return {"size": self.size, "writers": list(self.writers), "directory": self.directory,
                "params": self.params, "host": self.host,
                "plain": {p: asdict(b) | {"seconds": b.seconds, "spread": spread(b.samples_s)}
                          for p, b in self.plain.items()},
                "runs": [r.as_dict() for r in self.runs],
                "protect": self.protect.as_dict() if self.protect else None,
                "roundtrip": self.roundtrip.as_dict() if self.roundtrip else None,
                "ratios": self.ratios()}


# --- memory content ------------------------------------------------------------------------------
class Content:
    """The patterns, built once and copied in before every run (so every run starts alike)."""

    def __init__(self, page_size: int) -> None:
        self.page_size = page_size
        self._blocks: dict[str, bytes] = {}

    def block(self, pattern: str) -> bytes:
        if pattern not in self._blocks:
            ps = self.page_size
            if pattern == "random":
                data = np.random.default_rng(0x5eed).bytes(RANDOM_BLOCK)
            elif pattern == "quarter-zero":  # snapshot.check's pattern: it repeats every 1020
                data = b"".join(bytes([pattern_byte(p)]) * ps for p in range(1020))
            else:
                raise ValueError(f"unknown pattern {pattern!r}; one of {', '.join(PATTERNS)}")
            self._blocks[pattern] = data
        return self._blocks[pattern]

    def fill(self, region: memory.Region, pattern: str) -> None:
        block = self.block(pattern)
        for off in range(0, region.length, len(block)):
            n = min(len(block), region.length - off)
            ffi.memmove(ffi.cast("char *", region.address + off), block[:n] if n < len(block)
                        else block, n)


def page_nonzero(data, page_size: int) -> np.ndarray:
    """Per page of *data* (a buffer), whether any byte is non-zero."""
    words = np.frombuffer(data, dtype=np.uint64)
    return words.reshape(-1, page_size // 8).any(axis=1)


def region_buffer(region: memory.Region):
    return ffi.buffer(ffi.cast("char *", region.address), region.length)


def nonzero_runs(region: memory.Region) -> np.ndarray:
    """(address, length) of each run of consecutive non-zero pages, flat, for the plain bar."""
    nz = page_nonzero(region_buffer(region), region.page_size).astype(np.int8)
    edges = np.diff(np.concatenate(([0], nz, [0])))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    ps = region.page_size
    out = np.empty(2 * starts.size, dtype=np.uint64)
    out[0::2] = region.address + starts.astype(np.uint64) * ps
    out[1::2] = (ends - starts).astype(np.uint64) * ps
    return out


# --- writers -------------------------------------------------------------------------------------
class Writers:
    """N native writers storing at random pages, each logging every store."""

    def __init__(self, region: memory.Region, n: int, rate: int, capacity: int) -> None:
        self.region = region
        self.ws: list[Writer] = []
        self.t_started = time.monotonic_ns()
        try:
            for i in range(n):
                self.ws.append(Writer(region.address, region.length, page_size=region.page_size,
                                      offset_in_page=8 * i, pattern=Pattern.RANDOM, rate=rate,
                                      seed=i + 1, value_base=(i + 1) << 48,
                                      record_capacity=capacity))
        except BaseException:
            self.close()
            raise

    def throttle(self, percent: int) -> None:
        for w in self.ws:
            w.throttle(percent)

    def stop(self) -> None:
        for w in self.ws:
            w.request_stop()
        for w in self.ws:
            if not w.wait(30):
                raise TimeoutError("a writer did not stop within 30 s")

    def logs(self) -> list[StoreLog]:
        """Every writer's log (call after stop())."""
        out = []
        for w in self.ws:
            st = w.stats
            words = w.raw_records()
            rec = np.frombuffer(words, dtype=np.uint64).reshape(-1, 4)
            got = rec.shape[0]
            t_start = rec[:, 0].copy()
            until = int(t_start[-1]) if st.dropped_records and got else 2**63
            out.append(StoreLog(t_start, rec[:, 1].copy(),
                                (rec[:, 2] - self.region.address) // self.region.page_size,
                                st.writes, until))
            del words, rec
        return out

    def close(self) -> None:
        for w in self.ws:
            w.close(30)
        self.ws = []


def calibrate_rate(region: memory.Region, seconds: float = 0.2) -> float:
    """Stores/s of one writer at full speed on this region, to size the logs."""
    w = Writer(region.address, region.length, page_size=region.page_size,
               pattern=Pattern.RANDOM, record_capacity=1)
    try:
        time.sleep(seconds)
        st = w.stats
        return st.writes / max(1e-9, (now_ns() - st.t_start_ns) / 1e9)
    finally:
        w.close(30)


# --- methods -------------------------------------------------------------------------------------
@dataclass
class Outcome:
    seconds: float
    t_begin_ns: int  # the writers' window
    t_end_ns: int
    bytes_written: int
    layout: str = "image"  # or "mapped"
    pause_ns: int = 0
    fault_messages: int | None = None
    protect_ns: int = 0
    rounds: int = 0
    throttle_pct: int = 0
    converged: bool | None = None
    writers_stopped: bool = False  # the writers were stopped by t_end_ns (stop, precopy)
    note: str = ""


@dataclass
class Options:
    engine_priority: int = 0
    timeout_s: float = 300.0
    downtime_ms: float = 300.0
    precopy_time_limit_s: float = 60.0


def _open(path: Path) -> int:
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)


def _info(region: memory.Region) -> RegionInfo:
    return RegionInfo(region.address, region.length, region.page_size, region.memtype)


def _uffd(region, path, writers, opts: Options) -> Outcome:
    res = Snapshot([region], f"file:{path}", engine_priority=opts.engine_priority) \
        .start().wait(timeout=opts.timeout_s)
    s = res.stats
    return Outcome(res.duration_s, s.t_protect_ns, s.t_saved_ns, res.image_bytes,
                   fault_messages=s.faults, protect_ns=s.protect_ns,
                   note=f"{s.fault_pages} pages saved first")


def _write_image(region: memory.Region, path: Path) -> int:
    fd = _open(path)
    try:
        w = ImageWriter(fd, ImageHeader([_info(region)]))
        w.write_pages(0, region.address)
        return w.finish()
    finally:
        os.close(fd)


def _stop(region, path, writers, opts: Options) -> Outcome:
    t0 = time.monotonic_ns()
    if writers:
        writers.stop()
    size = _write_image(region, path)
    t1 = time.monotonic_ns()
    return Outcome((t1 - t0) / 1e9, t0, t1, size, pause_ns=t1 - t0, writers_stopped=True,
                   note="writers stopped throughout")


def _fork(region, path, writers, opts: Options) -> Outcome:
    t0 = time.monotonic_ns()
    pid = os.fork()
    if pid == 0:  # child: only this thread exists; C calls and _exit, nothing else
        code = 1
        try:
            _write_image(region, path)
            code = 0
        finally:
            os._exit(code)
    deadline = time.monotonic() + opts.timeout_s
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise TimeoutError(f"the fork child did not finish within {opts.timeout_s:g}s")
        time.sleep(0.001)
    t1 = time.monotonic_ns()
    if status:
        raise RuntimeError(f"fork snapshot child failed (status {status:#x})")
    return Outcome((t1 - t0) / 1e9, t0, t1, path.stat().st_size,
                   note="the child writes a CoW copy")


def _precopy(layout: str, control: str):
    def method(region, path, writers, opts: Options) -> Outcome:
        fd = _open(path)
        try:
            out = run_precopy(region, fd, layout=layout, control=control,
                              stop_writers=writers.stop if writers else lambda: None,
                              throttle=writers.throttle if writers else lambda pct: None,
                              params=ConvergenceParams(downtime_ms=opts.downtime_ms),
                              time_limit_s=opts.precopy_time_limit_s)
        finally:
            os.close(fd)
        note = f"{out.final_pages} pages in the stop-and-copy"
        if not out.converged:
            note += ("; did not converge within the round limit" if control == "naive" else
                     f"; did not converge within {opts.precopy_time_limit_s:g}s: stopped")
        return Outcome((out.t_end_ns - out.t_begin_ns) / 1e9, out.t_begin_ns, out.t_end_ns,
                       out.bytes_written, layout="mapped" if layout == "mapped" else "image",
                       pause_ns=out.pause_ns, rounds=out.rounds,
                       throttle_pct=out.throttle_max_pct, converged=out.converged,
                       writers_stopped=True, note=note)
    return method


_METHODS: dict[str, Callable[..., Outcome]] = {
    "uffd-wp": _uffd, "precopy": _precopy("stream", "converge"),
    "precopy-mapped": _precopy("mapped", "converge"),
    "precopy-naive": _precopy("stream", "naive"), "fork": _fork, "stop": _stop}


def image_measure(path: Path, region: memory.Region, layout: str) -> tuple[int, int]:
    """(bytes the image takes, non-zero bytes of the memory it holds), read back from it (a
    record image is loaded and its checksums verified on the way)."""
    ps = region.page_size
    if layout == "mapped":
        data = load_mapped(path, region.length, ps)
        taken = path.stat().st_blocks * 512  # pages never written are holes
    else:
        data = load(path).contents[0]
        taken = path.stat().st_size
    return taken, int(np.count_nonzero(page_nonzero(data, ps))) * ps


# --- one run -------------------------------------------------------------------------------------
class Bench:
    """The region, its patterns and the per-run procedure."""

    def __init__(self, region: memory.Region, directory: Path, opts: Options,
                 max_rate: float) -> None:
        self.region = region
        self.directory = directory
        self.opts = opts
        self.content = Content(region.page_size)
        self.max_rate = max_rate
        self.idle_s: dict[str, float] = {}  # longest idle uffd-wp time per pattern

    def _capacity(self, rate: int, writers: int) -> int:
        """Records per writer for the warm-up and a window of up to 6x the idle snapshot (at
        least 2 s), within 1/4 of the memory available."""
        per_s = self.max_rate * 1.5 if rate == 0 else min(rate, self.max_rate * 1.5)
        window = max(2.0, 6 * max(self.idle_s.values(), default=0.0))
        want = int(per_s * (PRE_WINDOW_S + window)) + 65536
        budget = mem_available() // 4 // max(1, writers) // RECORD_BYTES
        return max(65536, min(want, budget))

    def plain_sample(self, pattern: str) -> float:
        """One write(2) run of the pattern's non-zero bytes to the target directory."""
        self.content.fill(self.region, pattern)
        runs = nonzero_runs(self.region)
        arr = ffi.from_buffer("uint64_t[]", runs)
        path = self.directory / "plain.bin"
        fd = _open(path)
        try:
            t0 = time.monotonic_ns()
            n = lib.uffdbench_write_runs(fd, arr, runs.size // 2, PLAIN_CHUNK)
            t1 = time.monotonic_ns()
        finally:
            os.close(fd)
            path.unlink()
            os.sync()
        if n < 0:
            raise OSError(-n, f"plain write to {self.directory}: {os.strerror(-n)}")
        return (t1 - t0) / 1e9

    def nonzero_bytes(self, pattern: str) -> int:
        self.content.fill(self.region, pattern)
        return int(np.count_nonzero(page_nonzero(region_buffer(self.region),
                                                 self.region.page_size))) * self.region.page_size

    def run(self, method: str, pattern: str, rate: int, n_writers: int) -> Run:
        region = self.region
        self.content.fill(region, pattern)
        os.sync()
        path = self.directory / f"{method}.img"
        writers = None
        try:
            if rate >= 0 and n_writers:
                writers = Writers(region, n_writers, rate, self._capacity(rate, n_writers))
                time.sleep(PRE_WINDOW_S)
            out = _METHODS[method](region, path, writers, self.opts)
            logs: list[StoreLog] = []
            if writers:
                writers.stop()
                logs = writers.logs()
                writers.close()
            taken, nonzero = image_measure(path, region, out.layout)
        finally:
            if writers:
                writers.close()
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            os.sync()
        run = Run(method, pattern, rate, n_writers if rate >= 0 else 0, out.seconds, taken,
                  out.bytes_written, nonzero, window_s=(out.t_end_ns - out.t_begin_ns) / 1e9,
                  pause_ms=out.pause_ns / 1e6, protect_ms=out.protect_ns / 1e6,
                  rounds=out.rounds, throttle_pct=out.throttle_pct, converged=out.converged,
                  note=out.note)
        if logs:
            _store_figures(run, logs, out, writers.t_started + int(WARMUP_S * 1e9))
        if method == "uffd-wp" and rate < 0:
            self.idle_s[pattern] = max(self.idle_s.get(pattern, 0.0), out.seconds)
        return run


def _store_figures(run: Run, logs: Sequence[StoreLog], out: Outcome, t_warm: int) -> None:
    """The writers' figures of one run, from their logs."""
    t0, t1 = out.t_begin_ns, out.t_end_ns
    before = stores_in_window(logs, t_warm, t0 - 1)
    if t0 > t_warm:
        run.undisturbed_rate = before.size / ((t0 - t_warm) / 1e9)
    if not run.undisturbed_rate:
        run.note += "; the writers did not store before the window (machine overloaded): no thr"
    elif run.rate > 0 and run.undisturbed_rate < 0.5 * run.rate * len(logs):
        # a paced writer held off the CPU catches up later, above its pace: thr means little
        run.note += (f"; writers below their pace before the window ({run.undisturbed_rate:,.0f}"
                     f" of {run.rate * len(logs):,} stores/s): the machine is overloaded")
    run.logs_complete = logs_cover(logs, t1)
    window = stores_in_window(logs, t0, t1)
    run.stores = int(window.size)
    counted = run.logs_complete
    if not counted and out.writers_stopped and logs_cover(logs, t0):
        # every store from t0 on fell in the window: count them from the writers' totals
        run.stores = sum(log.writes - int(np.searchsorted(log.t_start, t0)) for log in logs)
        counted = True
    if run.window_s > 0 and run.undisturbed_rate and counted:
        run.throughput_ratio = run.stores / run.window_s / run.undisturbed_rate
    if window.size:
        p50, p99 = percentiles(window, (0.5, 0.99))
        run.stall_p50_us, run.stall_p99_us = p50 / 1000, p99 / 1000
        run.stall_max_us = int(window.max()) / 1000
    if out.fault_messages is not None:
        split = split_faults(logs, t0, t1, out.fault_messages, before)
        run.faults, run.fault_messages = split.count, split.messages
        run.fault_candidates = split.candidates
        run.background_expected = round(split.background_expected, 2)
        if split.count:
            f50, f99 = percentiles(split.stalls, (0.5, 0.99))
            run.fault_p50_us, run.fault_p99_us = f50 / 1000, f99 / 1000
            run.fault_max_us = int(split.stalls[-1]) / 1000
    if not run.logs_complete:
        run.note += "; writer logs filled up before the window ended: figures cover its start"


def mem_available() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 4 * GIB


# --- protect cost --------------------------------------------------------------------------------
def anon_huge_bytes(address: int, length: int) -> int:
    """AnonHugePages of the mappings of [address, address+length), from /proc/self/smaps."""
    total, inside = 0, False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split(None, 1)[0]
            if "-" in head and not head.endswith(":"):
                lo, hi = (int(x, 16) for x in head.split("-"))
                inside = lo < address + length and address < hi
            elif inside and head == "AnonHugePages:":
                total += int(line.split()[1]) * 1024
    return total


def protect_cost(size: int, repeats: int, content: Content, *, timeout_s: float = 300.0
                 ) -> ProtectCost:
    """The engine's protect ioctl time (SnapshotStats.protect_ns) over *size* bytes of 4 KiB
    pages (MADV_NOHUGEPAGE) and of THP-backed memory (2 MiB-aligned, MADV_HUGEPAGE), idle,
    image to /dev/null; a fresh region each run, since saving a THP region splits its huge
    pages (AnonHugePages, read before each run, says how much THP really backed)."""
    small: list[float] = []
    thp: list[float] = []
    backed: list[int] = []
    note = ""
    for _ in range(repeats):
        for huge in (False, True):
            with memory.allocate("anon", size, align=(2 << 20) if huge else None) as region:
                try:
                    region.madvise(memory.MADV_HUGEPAGE if huge else memory.MADV_NOHUGEPAGE)
                except OSError as exc:
                    note = f"madvise refused ({exc.strerror}): THP cannot be asked for here"
                content.fill(region, "random")
                if huge:
                    backed.append(anon_huge_bytes(region.address, region.length))
                res = Snapshot([region], "file:/dev/null").start().wait(timeout=timeout_s)
                (thp if huge else small).append(res.stats.protect_ns / 1e6)
    if not min(backed, default=0) and not note:
        note = ("THP did not back the whole region every time (see /sys/kernel/mm/"
                "transparent_hugepage/enabled and defrag)")
    return ProtectCost(size, small, thp, backed, note)


# --- the whole bench -----------------------------------------------------------------------------
def bench_snapshot(size: int, *, rates: Sequence[int] = DEFAULT_RATES,
                   writers: Sequence[int] = DEFAULT_WRITERS, methods: Sequence[str] = METHODS,
                   patterns: Sequence[str] = PATTERNS, repeats: int = 3,
                   directory: str | None = None, thp: bool = False,
                   options: Options | None = None, protect: bool = True,
                   roundtrip_pages: int = 4096, roundtrip_rounds: int = 5,
                   on_run: Callable[[str, object], None] | None = None) -> BenchResult:
    """Every method at every rate on every pattern. Idle runs are repeated *repeats* times and
    alternate with the plain bar (one more plain run at the end: at least 3 in all); uffd-wp
    at the top rate is repeated too, with each writer count. *on_run* gets ("plain", seconds)
    and ("run", Run) as they come."""
    opts = options or Options()
    writers = tuple(writers) or DEFAULT_WRITERS
    report = on_run or (lambda kind, what: None)
    rates = tuple(rates)
    top = 0 if 0 in rates else max((r for r in rates if r > 0), default=None)
    with contextlib.ExitStack() as stack:
        if directory is None:
            directory = stack.enter_context(tempfile.TemporaryDirectory(prefix="uffdwp-bench-"))
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        host = {"kernel": os.uname().release, "cpus": os.cpu_count(),
                "loadavg_start": os.getloadavg()}
        region = stack.enter_context(memory.allocate("anon", size,
                                                     align=(2 << 20) if thp else None))
        if thp:
            region.madvise(memory.MADV_HUGEPAGE)
        bench = Bench(region, out, opts, calibrate_rate(region))
        host["store_rate_per_writer"] = round(bench.max_rate)
        plain: dict[str, PlainBar] = {}
        runs: list[Run] = []

        def record(run: Run) -> None:
            runs.append(run)
            report("run", run)

        def plain_sample(pattern: str) -> None:
            s = bench.plain_sample(pattern)
            plain[pattern].samples_s.append(s)
            report("plain", (pattern, s))

        for pattern in patterns:
            plain[pattern] = PlainBar(pattern, bench.nonzero_bytes(pattern))
            for _ in range(repeats if -1 in rates else 0):
                plain_sample(pattern)
                for method in methods:
                    record(bench.run(method, pattern, -1, 0))
            while len(plain[pattern].samples_s) < max(3, repeats + 1 if -1 in rates else 3):
                plain_sample(pattern)
            for rate in (r for r in rates if r >= 0):
                for method in methods:
                    again = repeats if method == "uffd-wp" and rate == top else 1
                    for _ in range(again):
                        record(bench.run(method, pattern, rate, writers[0]))
            if top is not None and "uffd-wp" in methods:
                for n in writers[1:]:
                    for _ in range(repeats):
                        record(bench.run("uffd-wp", pattern, top, n))
    # after the region is gone: these allocate their own
    cost = protect_cost(size, repeats, bench.content, timeout_s=opts.timeout_s) \
        if protect else None
    rt = bench_roundtrip(roundtrip_pages, roundtrip_rounds) if roundtrip_pages else None
    host["loadavg_end"] = os.getloadavg()
    params = {"rates": list(rates), "methods": list(methods), "patterns": list(patterns),
              "repeats": repeats, "thp": thp, "downtime_ms": opts.downtime_ms,
              "precopy_time_limit_s": opts.precopy_time_limit_s,
              "engine_priority": opts.engine_priority}
    return BenchResult(size, writers, str(out), params, plain, runs, cost, rt, host)


def save_json(obj, path: str | Path) -> None:
    Path(path).write_text(json.dumps(obj, indent=1))


__all__ = ["DEFAULT_RATES", "DEFAULT_WRITERS", "METHODS", "PATTERNS", "BenchResult", "Content",
           "Options", "PlainBar", "ProtectCost", "Run", "anon_huge_bytes", "bench_snapshot",
           "mem_available", "nonzero_runs", "page_nonzero", "rate_name"]
