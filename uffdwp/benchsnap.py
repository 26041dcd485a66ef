"""Snapshot benchmarks: UFFD-WP background snapshot against the older ways, side by side.

Methods, each writing the same image format to the same target directory:
  uffd-wp    the background snapshot engine (uffdwp.snapshot)
  precopy    dirty-logging iterative precopy (QEMU's older path): copy everything, then re-copy
             the pages dirtied meanwhile in rounds until a round is small or the round limit is
             hit, then pause the writers for a last round. Dirty pages come from PAGEMAP_SCAN
             with async UFFD-WP (get-and-reprotect in one walk); soft-dirty is the classic
             source but needs CONFIG_MEM_SOFT_DIRTY. The image keeps every version (it grows
             with the write rate), flagged FLAG_REWRITES.
  fork       a fork() copy-on-write snapshot (as Redis BGSAVE): the child writes the memory
  stop       stop-the-world: writers paused while the memory is copied
and, at idle, "plain": one write(2) of the raw memory to the same target (the throughput bar).

Per run: snapshot time, image bytes / non-zero memory, longest writer stall, the faulting
stores' stall p50/p99 (log2 buckets of the writers' own timings), writer throughput during the
snapshot over undisturbed.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from . import memory
from ._ffi import ffi, lib
from .kernel_facts import Feature, RegisterMode
from .native import FaultHandler, Pattern, Policy, Writer, hist_percentile, percentile
from .pagemap import written_pages
from .snapshot import Snapshot
from .snapshot.check import fill_initial
from .snapshot.image import FLAG_REWRITES, ImageHeader, ImageWriter, RegionInfo, load
from .uffd import Userfaultfd

METHODS = ("uffd-wp", "precopy", "fork", "stop")
DEFAULT_RATES = (-1, 10_000, 100_000, 1_000_000, 0)  # stores/s per writer; -1 idle, 0 max
FAULT_FLOOR_BUCKET = 10  # stores slower than 2^10 ns (~1 µs) waited on a fault


def rate_name(rate: int) -> str:
    return {-1: "idle", 0: "max"}.get(rate, f"{rate:,}/s")


@dataclass
class Run:
    method: str
    rate: int
    seconds: float
    image_bytes: int
    nonzero_bytes: int
    max_stall_us: float
    fault_p50_us: float
    fault_p99_us: float
    faulting_stores: int
    throughput_ratio: float  # stores/s during the snapshot over undisturbed (1.0 at idle)
    rounds: int = 0
    note: str = ""

    @property
    def size_ratio(self) -> float:
        return self.image_bytes / self.nonzero_bytes if self.nonzero_bytes else 0.0


class _Writers:
    """N native writers on the region; throughput and stall deltas around a snapshot."""

    def __init__(self, region: memory.Region, n: int, rate: int) -> None:
        self.ws = [] if rate < 0 else [
            Writer(region.address, region.length, page_size=region.page_size,
                   offset_in_page=8 * i, pattern=Pattern.RANDOM, rate=rate, seed=i + 1,
                   value_base=(i + 1) << 48, record_capacity=1) for i in range(n)]

    def count(self) -> int:
        return sum(w.stats.writes for w in self.ws)

    def hist(self) -> list[int]:
        out = [0] * 64
        for w in self.ws:
            for i, c in enumerate(w.stats.histogram):
                out[i] += c
        return out

    def max_stall_ns(self) -> int:
        return max((w.stats.max_stall_ns for w in self.ws), default=0)

    def undisturbed(self, seconds: float = 0.2) -> float:
        if not self.ws:
            return 0.0
        time.sleep(0.05)
        c0, t0 = self.count(), time.monotonic()
        time.sleep(seconds)
        return (self.count() - c0) / (time.monotonic() - t0)

    def stop(self) -> None:
        for w in self.ws:
            w.request_stop()
        for w in self.ws:
            w.wait(30)

    def close(self) -> None:
        for w in self.ws:
            w.close(30)
        self.ws = []


def _open(path: Path) -> int:
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)


def _info(region: memory.Region) -> RegionInfo:
    return RegionInfo(region.address, region.length, region.page_size, region.memtype)


# --- methods: each returns (seconds, image bytes, pause ns the writers suffered, rounds, note)
def _uffd(region: memory.Region, path: Path, writers: _Writers, *, engine_priority: int = 0):
    res = Snapshot([region], f"file:{path}",
                   engine_priority=engine_priority).start().wait(timeout=600)
    return res.duration_s, res.image_bytes, 0, 0, f"{res.stats.fault_pages} pages saved first"


def _stop(region: memory.Region, path: Path, writers: _Writers):
    t0 = time.monotonic_ns()
    writers.stop()
    fd = _open(path)
    try:
        w = ImageWriter(fd, ImageHeader([_info(region)]))
        w.write_pages(0, region.address)
        size = w.finish()
    finally:
        os.close(fd)
    dt = time.monotonic_ns() - t0
    return dt / 1e9, size, dt, 0, "writers paused throughout"


def _fork(region: memory.Region, path: Path, writers: _Writers):
    t0 = time.monotonic_ns()
    pid = os.fork()
    if pid == 0:  # child: only this thread exists; C calls and _exit, nothing else
        code = 1
        try:
            fd = _open(path)
            w = ImageWriter(fd, ImageHeader([_info(region)]))
            w.write_pages(0, region.address)
            w.finish()
            os.close(fd)
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    dt = time.monotonic_ns() - t0
    if status:
        raise RuntimeError(f"fork snapshot child failed (status {status:#x})")
    return dt / 1e9, path.stat().st_size, 0, 0, "child writes a CoW copy"


def _precopy(region: memory.Region, path: Path, writers: _Writers, *, max_rounds: int = 8,
             converged_pages: int = 256):
    t0 = time.monotonic_ns()
    want = Feature.PAGEFAULT_FLAG_WP | Feature.WP_ASYNC | Feature.WP_UNPOPULATED
    if region.memtype != "anon":
        want |= Feature.WP_HUGETLBFS_SHMEM
    uffd = Userfaultfd.create(want, via="auto")
    fd = _open(path)
    pause = 0
    rounds = 0
    try:
        uffd.register(region.address, region.length, RegisterMode.WP)
        uffd.writeprotect(region.address, region.length)  # async: start logging writes
        w = ImageWriter(fd, ImageHeader([_info(region)], FLAG_REWRITES))
        w.write_pages(0, region.address)  # round 0: everything
        end = region.address + region.length
        while True:
            rounds += 1
            last = rounds >= max_rounds
            dirty = written_pages(region.address, end, reprotect=True,
                                  page_size=region.page_size)
            if last or len(dirty) <= converged_pages:
                tp = time.monotonic_ns()  # stop-and-copy: pause, take what is left
                writers.stop()
                dirty += written_pages(region.address, end, reprotect=True,
                                       page_size=region.page_size)
                idx = sorted({(a - region.address) // region.page_size for a in dirty})
                w.write_pages(0, region.address, idx)
                pause = time.monotonic_ns() - tp
                break
            idx = [(a - region.address) // region.page_size for a in dirty]
            w.write_pages(0, region.address, idx)
        size = w.finish()
    finally:
        os.close(fd)
        with contextlib.suppress(OSError):
            uffd.unregister(region.address, region.length)
        uffd.close()
    dt = time.monotonic_ns() - t0
    return dt / 1e9, size, pause, rounds, ""


_METHODS: dict[str, Callable] = {"uffd-wp": _uffd, "precopy": _precopy, "fork": _fork,
                                 "stop": _stop}


def _image_nonzero(path: Path) -> int:
    """Non-zero bytes of the memory an image holds (its final state): the denominator."""
    image = load(path)
    total = 0
    for reg, data in zip(image.header.regions, image.contents):
        ps = reg.page_size
        buf = ffi.from_buffer(data)
        total += sum(ps for p in range(reg.pages)
                     if not lib.uffdsnap_is_zero(buf + p * ps, ps))
    return total


def run_one(method: str, region: memory.Region, rate: int, n_writers: int,
            directory: Path, engine_priority: int = 0) -> Run:
    path = directory / f"{method}.img"
    writers = _Writers(region, n_writers, rate)
    try:
        base_rate = writers.undisturbed()
        h0, c0, t0 = writers.hist(), writers.count(), time.monotonic()
        kw = {"engine_priority": engine_priority} if method == "uffd-wp" else {}
        seconds, size, pause_ns, rounds, note = _METHODS[method](region, path, writers, **kw)
        elapsed = time.monotonic() - t0
        c1, h1 = writers.count(), writers.hist()
        max_stall = max(writers.max_stall_ns(), pause_ns)
        writers.close()
        nonzero = _image_nonzero(path)
    finally:
        writers.close()
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    delta = [b - a for a, b in zip(h0, h1)]
    faulting = delta[FAULT_FLOOR_BUCKET:]
    during = (c1 - c0) / elapsed if elapsed > 0 else 0.0
    ratio = during / base_rate if base_rate else 1.0
    floored = [0] * FAULT_FLOOR_BUCKET + faulting
    return Run(method, rate, seconds, size, nonzero, max_stall / 1000,
               hist_percentile(floored, 0.5) / 1000, hist_percentile(floored, 0.99) / 1000,
               sum(faulting), ratio, rounds, note)


def plain_copy(region: memory.Region, directory: Path) -> Run:
    path = directory / "plain.bin"
    fd = _open(path)
    try:
        t0 = time.monotonic()
        n = lib.uffdsnap_write_all(fd, region.address, region.length, 1 << 20)
        seconds = time.monotonic() - t0
    finally:
        os.close(fd)
        path.unlink()
    if n < 0:
        raise OSError(-n, os.strerror(-n))
    return Run("plain", -1, seconds, region.length, region.length, 0, 0, 0, 0, 1.0)


@dataclass
class BenchResult:
    size: int
    writers: int
    directory: str
    plain: Run
    runs: list[Run]

    def find(self, method: str, rate: int) -> Run | None:
        return next((r for r in self.runs if r.method == method and r.rate == rate), None)

    def ratios(self) -> dict:
        """The headline figures the issue's targets are stated in."""
        out: dict = {}
        idle = self.find("uffd-wp", -1)
        rates = sorted({r.rate for r in self.runs}, key=lambda r: (r == 0, r))
        top = rates[-1] if rates else -1
        busiest = self.find("uffd-wp", top)
        if idle and busiest and idle.seconds:
            out["uffd_time_busiest_over_idle"] = busiest.seconds / idle.seconds
        if idle and self.plain.seconds:
            # bytes of memory per second, the plain copy writing all of it, zero pages included
            out["uffd_idle_throughput_over_plain"] = self.plain.seconds / idle.seconds
        out["uffd_size_ratio"] = {rate_name(r.rate): round(r.size_ratio, 4)
                                  for r in self.runs if r.method == "uffd-wp"}
        out["precopy_size_ratio"] = {rate_name(r.rate): round(r.size_ratio, 4)
                                     for r in self.runs if r.method == "precopy"}
        faults = [r for r in self.runs if r.method == "uffd-wp" and r.faulting_stores]
        if faults:
            worst = max(faults, key=lambda r: r.fault_p99_us)
            out["uffd_fault_stall_p50_us_max"] = max(r.fault_p50_us for r in faults)
            out["uffd_fault_stall_p99_us_max"] = worst.fault_p99_us
        return out

    def as_dict(self) -> dict:
        return {"size": self.size, "writers": self.writers, "directory": self.directory,
                "plain": asdict(self.plain), "runs": [asdict(r) | {"size_ratio": r.size_ratio}
                                                      for r in self.runs],
                "ratios": self.ratios()}


def bench_snapshot(size: int, *, rates: tuple[int, ...] = DEFAULT_RATES, n_writers: int = 1,
                   methods: tuple[str, ...] = METHODS, directory: str | None = None,
                   memtype: str = "anon", engine_priority: int = 0,
                   on_run: Callable[[Run], None] | None = None) -> BenchResult:
    with contextlib.ExitStack() as stack:
        if directory is None:
            directory = stack.enter_context(tempfile.TemporaryDirectory(prefix="uffdwp-bench-"))
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        region = stack.enter_context(memory.allocate(memtype, size))
        fill_initial(_info(region))
        plain = plain_copy(region, out)
        if on_run:
            on_run(plain)
        runs = []
        for rate in rates:
            for method in methods:
                fill_initial(_info(region))  # same content for every run
                run = run_one(method, region, rate, n_writers, out, engine_priority)
                runs.append(run)
                if on_run:
                    on_run(run)
        return BenchResult(size, n_writers, str(out), plain, runs)


def plot(result: BenchResult, directory: str | Path) -> list[Path]:
    """PNG plots of each metric against the write rate, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rates = sorted({r.rate for r in result.runs}, key=lambda r: (r == 0, r))
    labels = [rate_name(r) for r in rates]
    metrics = [("seconds", "snapshot time (s)"), ("size_ratio", "image / non-zero memory"),
               ("max_stall_us", "longest writer stall (µs)"),
               ("throughput_ratio", "writer throughput during / undisturbed")]
    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    for ax, (attr, title) in zip(axes.flat, metrics):
        for method in dict.fromkeys(r.method for r in result.runs):
            ys = [getattr(result.find(method, rate), attr, float("nan")) for rate in rates]
            ax.plot(labels, ys, marker="o", label=method)
        ax.set_title(title)
        ax.set_xlabel("store rate per writer")
        if attr == "max_stall_us":
            ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.suptitle(f"snapshot of {result.size >> 20} MiB, {result.writers} writer(s)")
    fig.tight_layout()
    path = directory / "snapshot-bench.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return [path]


# --- round trip of the native handler ----------------------------------------------------------
@dataclass
class RoundTrip:
    samples: int
    median_us: float
    p99_us: float
    max_us: float
    handler_median_us: float  # message read -> unprotect done, inside the handler


def bench_roundtrip(pages: int = 4096, rounds: int = 5) -> RoundTrip:
    """Write fault to wake-up: a native Writer stores once into each protected page, a native
    FaultHandler (Policy.UNPROTECT) unprotects it; the writer's own timing of each store."""
    stalls: list[int] = []
    service: list[int] = []
    want = Feature.PAGEFAULT_FLAG_WP | (Feature.WP_UNPOPULATED)
    with memory.allocate("anon", pages=pages) as region, \
            Userfaultfd.create(want, via="auto") as uffd:
        region.fill(1)
        uffd.register(region.address, region.length, RegisterMode.WP)
        for _ in range(rounds):
            uffd.writeprotect(region.address, region.length)
            with FaultHandler(uffd, [(region.address, region.length)], Policy.UNPROTECT,
                              record_capacity=pages) as handler:
                w = Writer(region.address, region.length, max_writes=pages,
                           record_capacity=pages)
                try:
                    if not w.wait(60):
                        raise TimeoutError("writer did not finish")
                    recs = w.records()
                finally:
                    w.close()
                service += [r.t_done_ns - r.t_read_ns for r in handler.records() if r.t_done_ns]
            stalls += [r.stall_ns for r in recs]
        uffd.unregister(region.address, region.length)
    stalls.sort()  # for the max below

    return RoundTrip(len(stalls), percentile(stalls, 0.5) / 1000, percentile(stalls, 0.99) / 1000,
                     stalls[-1] / 1000 if stalls else 0.0, percentile(service, 0.5) / 1000)


def save_json(obj, path: str | Path) -> None:
    Path(path).write_text(json.dumps(obj, indent=1))


__all__ = ["METHODS", "BenchResult", "RoundTrip", "Run", "bench_roundtrip", "bench_snapshot",
           "plot", "rate_name"]
