# SPDX-License-Identifier: GPL-2.0-only
"""Background snapshot of memory regions of this process with UFFD-WP (QEMU's design).

    with Snapshot([region], "file:/tmp/snap.img", progress=print) as snap:
        result = snap.wait()

The native engine (uffdwp/csrc/snapshot_native.c) freezes every region with one
UFFDIO_WRITEPROTECT each before it serves any fault, so the image is a consistent cut at that
instant. It then saves pages in one linear pass, saving a page a writer faults on first (copy,
unprotect: the writer wakes), and streams records to the target through an output thread.
Python only sets up, watches the progress counters, and cleans up.
"""

from __future__ import annotations

import contextlib
import enum
import errno as errno_mod
import itertools
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .._ffi import ffi, lib
from ..errors import Error, UffdError
from ..kernel_facts import Feature, Ioctl, RegisterMode
from ..memory import (
    MEMORY_TYPES,
    PAGE_SIZE,
    THP_SIZE,
    Region,
    anon_huge_bytes,
    mappings,
    unmapped_part,
)
from ..uffd import Userfaultfd, supported_features
from .image import FLAG_POPULATED, ImageHeader, RegionInfo
from .targets import Target, TargetError, parse_target


# The engine's states and phases are C enums (snapshot_native.h): the values come from there;
# tests/test_native_enums.py holds the members against the compiled enums.
class State(enum.IntEnum):
    RUNNING = lib.UFFDSNAP_RUNNING
    DONE = lib.UFFDSNAP_DONE
    FAILED = lib.UFFDSNAP_FAILED
    ABORTED = lib.UFFDSNAP_ABORTED


class Phase(enum.IntEnum):
    """Where a snapshot failed; ``words`` is how SnapshotError.phase names it."""

    NONE = lib.UFFDSNAP_PHASE_NONE
    POPULATE = lib.UFFDSNAP_PHASE_POPULATE
    PROTECT = lib.UFFDSNAP_PHASE_PROTECT
    READ = lib.UFFDSNAP_PHASE_READ  # reading fault messages
    UNPROTECT = lib.UFFDSNAP_PHASE_UNPROTECT
    OUTPUT = lib.UFFDSNAP_PHASE_OUTPUT
    ABORT = lib.UFFDSNAP_PHASE_ABORT
    MEMORY = lib.UFFDSNAP_PHASE_MEMORY  # reading region memory (it was unmapped)
    DISCARD = lib.UFFDSNAP_PHASE_DISCARD
    FORK = lib.UFFDSNAP_PHASE_FORK
    PROTECTION = lib.UFFDSNAP_PHASE_PROTECTION  # a page lost its protection before saved

    @property
    def words(self) -> str:
        return {Phase.READ: "read faults", Phase.MEMORY: "read memory"}.get(
            self, self.name.lower())


SHARED_TYPES = ("shmem", "hugetlb")


class SnapshotError(Error):
    """The snapshot did not complete. Protection is removed and no writer is blocked when this
    is raised; *partial* says what happened to the partial image."""

    def __init__(self, message: str, *, errno: int = 0, phase: str = "", partial: str = "",
                 stats: SnapshotStats | None = None) -> None:
        text = message + (f"; {partial}" if partial else "")
        super().__init__(text)
        self.errno = errno
        self.phase = phase
        self.partial = partial
        self.stats = stats


@dataclass(frozen=True)
class SnapshotStats:
    """Counters of the native engine (times are CLOCK_MONOTONIC ns, as uffdwp.native.now_ns)."""

    pages_total: int
    pages_saved: int
    linear_pages: int
    fault_pages: int
    zero_pages: int
    data_pages: int
    faults: int
    faults_already_saved: int
    records: int
    bytes_committed: int
    bytes_written: int
    t_start_ns: int
    t_protect_ns: int
    t_frozen_ns: int
    t_saved_ns: int
    t_end_ns: int
    populate_ns: int
    protect_ns: int
    service_max_ns: int
    service_total_ns: int
    service_hist: tuple[int, ...]
    ring_waits: int
    priority_applied: int
    state: int
    error: int
    error_phase: int
    error_addr: int  # where the error happened, when it has an address
    events: int  # fork/remove messages read
    drains: int  # times a pending event made the engine save everything before reading it
    discarded_bytes: int  # what the caller discarded (MADV_DONTNEED/REMOVE) meanwhile
    faults_waited: int  # faults on pages whose chunk was being written: they waited for it
    patched: int  # faults on queued pages: a copy took the page's place, unprotected at once
    batched: int  # pages saved along with a fault just ahead of the linear pass
    engine_cpu_ns: int  # CPU time of the engine thread
    output_cpu_ns: int  # CPU time of the output thread
    copied_unprotected: int  # linear-pass pages not seen protected (pagemap): copied, not
    #                          written from memory, where they could change before the write

    @classmethod
    def read(cls, handle) -> SnapshotStats:
        s = ffi.new("struct uffdsnap_stats *")
        lib.uffdsnap_get_stats(handle, s)
        return cls(s.pages_total, s.pages_saved, s.linear_pages, s.fault_pages, s.zero_pages,
                   s.data_pages, s.faults, s.faults_already_saved, s.records,
                   s.bytes_committed, s.bytes_written, s.t_start_ns, s.t_protect_ns, s.t_frozen_ns,
                   s.t_saved_ns, s.t_end_ns, s.populate_ns, s.protect_ns, s.service_max_ns,
                   s.service_total_ns, tuple(s.service_hist), s.ring_waits, s.priority_applied,
                   s.state, s.error, s.error_phase, s.error_addr, s.events, s.drains,
                   s.discarded_bytes, s.faults_waited, s.patched, s.batched,
                   s.engine_cpu_ns, s.output_cpu_ns, s.copied_unprotected)

    @property
    def duration_s(self) -> float:
        """Start (populate/freeze) to the end record written."""
        end = self.t_end_ns or time.monotonic_ns()
        return max(0, end - self.t_start_ns) / 1e9 if self.t_start_ns else 0.0

    def as_dict(self) -> dict:
        d = dict(self.__dict__)
        d["service_hist"] = list(self.service_hist)
        return d


@dataclass(frozen=True)
class Progress:
    pages_total: int
    pages_saved: int
    fault_pages: int
    faults: int
    bytes_written: int
    elapsed_s: float

    @property
    def fraction(self) -> float:
        return self.pages_saved / self.pages_total if self.pages_total else 1.0

    @property
    def throughput(self) -> float:
        """Bytes per second written to the target so far."""
        return self.bytes_written / self.elapsed_s if self.elapsed_s > 0 else 0.0


@dataclass
class SnapshotResult:
    target: str
    header: ImageHeader
    stats: SnapshotStats
    features: Feature
    populated: bool
    notes: list[str] = field(default_factory=list)  # what this kernel or these options left out
    image_bytes: int = field(init=False)

    def __post_init__(self) -> None:
        self.image_bytes = self.stats.bytes_written

    @property
    def duration_s(self) -> float:
        return self.stats.duration_s

    def as_dict(self) -> dict:
        return {"target": self.target, "image_bytes": self.image_bytes,
                "memory_bytes": self.header.memory_bytes, "duration_s": self.duration_s,
                "populated": self.populated, "features": int(self.features),
                "notes": self.notes, "stats": self.stats.as_dict()}


RegionLike = Region | RegionInfo | tuple[int, int, int] | tuple[int, int, int, str]


def _region_info(r: RegionLike) -> RegionInfo:
    if isinstance(r, RegionInfo):
        return r
    if isinstance(r, Region):
        return RegionInfo(r.address, r.length, r.page_size, r.memtype)
    try:
        info = RegionInfo(*r)
    except TypeError:
        raise ValueError(f"a region is a Region, a RegionInfo or (address, length, page_size"
                         f"[, memtype]), not {r!r}") from None
    if not all(isinstance(v, int) for v in (info.address, info.length, info.page_size)):
        raise ValueError(f"region {r!r}: address, length and page size must be integers")
    return info


def check_regions(regions: Sequence[RegionInfo]) -> None:
    """Raise ValueError naming the first region that cannot be snapshotted as given: unaligned,
    empty, overlapping another, of an unknown type, or not mapped writable in this process.
    Nothing is protected before this passes."""
    for i, r in enumerate(regions):
        where = f"region {i} ({r.address:#x}+{r.length:#x})"
        if r.memtype not in MEMORY_TYPES:
            raise ValueError(f"{where}: unknown memory type {r.memtype!r}; one of "
                             f"{', '.join(MEMORY_TYPES)}")
        ps = r.page_size
        if ps < PAGE_SIZE or ps & (ps - 1):
            raise ValueError(f"{where}: page size {ps} is not a power of two of at least "
                             f"{PAGE_SIZE}")
        if r.length <= 0 or r.address < 0 or r.address % ps or r.length % ps:
            raise ValueError(f"{where} is not page aligned: address and length must be "
                             f"non-zero multiples of its page size {ps}")
        if r.address + r.length > 1 << 64:
            raise ValueError(f"{where} wraps around the address space")
    by_address = sorted(range(len(regions)), key=lambda k: regions[k].address)
    for a, b in itertools.pairwise(by_address):
        ra, rb = regions[a], regions[b]
        if rb.address < ra.address + ra.length:
            same = "is given twice" if (ra.address, ra.length) == (rb.address, rb.length) \
                else f"overlaps region {max(a, b)} ({regions[max(a, b)].address:#x}+" \
                     f"{regions[max(a, b)].length:#x})"
            raise ValueError(f"region {min(a, b)} ({regions[min(a, b)].address:#x}+"
                             f"{regions[min(a, b)].length:#x}) {same}: each byte may be in "
                             "one region only")
    maps = mappings()
    for i, r in enumerate(regions):
        hole = unmapped_part(r.address, r.length, writable=True, maps=maps)
        if hole is not None:
            raise ValueError(f"region {i} ({r.address:#x}+{r.length:#x}) is not mapped "
                             f"writable in this process at {hole:#x}")


def other_mappers(regions: Sequence[RegionInfo]) -> list[str]:
    """Who else can write the shared memory of *regions*: other mappings of the same file in
    this process, and other processes that map it. Their writes do not fault on this
    process's protection, so they would escape the freeze."""
    own = mappings()
    files: dict[tuple[str, int], list[int]] = {}
    for i, r in enumerate(regions):
        for m in own:
            if m.shared and m.inode and m.start < r.address + r.length and r.address < m.end:
                files.setdefault((m.device, m.inode), []).append(i)
    if not files:
        return []
    covered = [(r.address, r.address + r.length) for r in regions]
    found = []
    for m in own:
        key = (m.device, m.inode)
        if m.shared and key in files and not any(lo <= m.start and m.end <= hi
                                                 for lo, hi in covered):
            found.append(f"this process also maps it at {m.start:#x} (region "
                         f"{files[key][0]})")
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            theirs = mappings(entry.name)
        except OSError:
            continue  # gone, or not ours to read (then it cannot have our memory either)
        for m in theirs:
            key = (m.device, m.inode)
            if m.shared and key in files:
                found.append(f"pid {entry.name} ({_comm(entry.name)}) maps region "
                             f"{files[key][0]}")
                break
    return found


def _comm(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return "?"


def _steps(r: RegionInfo) -> tuple[int, int]:
    """(chunk, fault batch) bytes for the engine, 0 for its defaults. Where transparent huge
    pages back the region, both are whole huge pages: an unprotect of part of one splits it."""
    thp = (r.memtype == "anon" and r.page_size < THP_SIZE and not r.address % THP_SIZE
           and not r.length % THP_SIZE and anon_huge_bytes(r.address, r.length) > 0)
    return (THP_SIZE, THP_SIZE) if thp else (0, 0)


def _needs_file_wp(memtype: str) -> bool:
    return memtype != "anon"


def _is_shared(region: RegionInfo, maps) -> bool:
    return region.memtype in SHARED_TYPES or any(
        m.shared and m.start < region.address + region.length and region.address < m.end
        for m in maps)


class Snapshot:
    """One background snapshot of *regions* (this process's memory) to *target*.

    populate:            None: read-populate the regions only if the kernel lacks
                         WP_UNPOPULATED; True: always (and do not ask for WP_UNPOPULATED: the
                         pre-6.4 path, testable on any kernel); False: never.
    use_wp_unpopulated:  None: when the kernel offers it and populate is not forced.
    engine_priority:     0 inherit; > 0 run the engine thread SCHED_FIFO at that priority
                         (falls back to nice -10); < 0 that nice value. A faulting writer
                         waits until the engine runs: on a busy machine that is a time slice.
    stall_timeout:       fail when a pipe or socket target takes nothing for that many seconds
                         (a stopped or stuck reader); None: wait as long as it takes.
    busy_poll_us:        > 0: when the engine would sleep, it first spins that many µs: a
                         faulting writer then does not wait for it to be woken (costs a core).
    allow_shared_writers: shared memory (shmem, hugetlb) can be written by other mappings of
                         the same file, in this process or another, and by children forked
                         meanwhile; those writes do not fault on this process's protection and
                         escape the freeze. By default such mappings refuse the snapshot, and a
                         fork during it fails it; True accepts that risk.
    progress:            called with a Progress every *progress_interval* s while wait() runs.

    While it runs, a discard of unsaved memory (MADV_DONTNEED, MADV_REMOVE) waits until the
    engine has saved everything (the kernel holds it until the engine reads its event); memory
    unmapped (munmap, mremap) before it is saved fails the snapshot, saying so.
    """

    def __init__(self, regions: Sequence[RegionLike], target: str | Target, *,
                 populate: bool | None = None, use_wp_unpopulated: bool | None = None,
                 chunk_bytes: int = 128 << 10, slot_bytes: int = 1 << 20, n_slots: int = 32,
                 reserve_slots: int = 8, engine_priority: int = 0,
                 stall_timeout: float | None = None, allow_shared_writers: bool = False,
                 busy_poll_us: int = 0,
                 progress: Callable[[Progress], None] | None = None,
                 progress_interval: float = 0.1) -> None:
        self._h = None  # close() and __del__ are safe whatever happens below
        self.uffd: Userfaultfd | None = None
        self._registered: list[RegionInfo] = []
        self._result: SnapshotResult | None = None
        if not regions:
            raise ValueError("nothing to snapshot: give at least one region")
        self.regions = [_region_info(r) for r in regions]
        check_regions(self.regions)
        for name, value in (("chunk_bytes", chunk_bytes), ("slot_bytes", slot_bytes),
                            ("n_slots", n_slots), ("reserve_slots", reserve_slots)):
            if value < 0 or value >= 1 << 40:
                raise ValueError(f"{name} must be between 0 and 2^40, not {value}")
        if stall_timeout is not None and not 0 < stall_timeout < 2**31 / 1000:
            raise ValueError(f"stall_timeout must be a positive number of seconds, not "
                             f"{stall_timeout}")
        if not -20 <= engine_priority <= 99:
            raise ValueError(f"engine_priority {engine_priority}: > 0 is a SCHED_FIFO priority "
                             "(1..99), < 0 a nice value (-20..-1)")
        if not 0 <= busy_poll_us <= 1_000_000:
            raise ValueError(f"busy_poll_us must be 0..1000000, not {busy_poll_us}")
        if progress_interval <= 0:
            raise ValueError(f"progress_interval must be positive, not {progress_interval}")
        self.target = parse_target(target)
        self.populate_opt = populate
        self.use_wp_unpopulated = use_wp_unpopulated
        self.tuning = (chunk_bytes, slot_bytes, n_slots, reserve_slots, engine_priority)
        self.stall_timeout = stall_timeout
        self.busy_poll_us = busy_poll_us
        self.allow_shared_writers = allow_shared_writers
        self.progress = progress
        self.progress_interval = progress_interval
        self.notes: list[str] = []
        self.header: ImageHeader | None = None
        self.populated = False
        self.fork_fails = False
        self._keep: list = []
        self._deadline: float | None = None

    # --- setup -------------------------------------------------------------------------------
    def _negotiate(self) -> Feature:
        offered = supported_features()
        want = Feature.PAGEFAULT_FLAG_WP
        if not offered & Feature.PAGEFAULT_FLAG_WP:
            raise SnapshotError("this kernel has no userfaultfd write-protect "
                                "(feature PAGEFAULT_FLAG_WP, Linux 5.7+): cannot snapshot")
        if any(_needs_file_wp(r.memtype) for r in self.regions):
            if not offered & Feature.WP_HUGETLBFS_SHMEM:
                kinds = sorted({r.memtype for r in self.regions if _needs_file_wp(r.memtype)})
                raise SnapshotError(f"write-protecting {', '.join(kinds)} needs feature "
                                    "WP_HUGETLBFS_SHMEM (Linux 5.19+), absent here: "
                                    "snapshot anonymous memory only")
            want |= Feature.WP_HUGETLBFS_SHMEM
        use_unpop = self.use_wp_unpopulated
        if use_unpop is None:
            use_unpop = bool(offered & Feature.WP_UNPOPULATED) and self.populate_opt is not True
        if use_unpop:
            if not offered & Feature.WP_UNPOPULATED:
                raise SnapshotError("feature WP_UNPOPULATED (Linux 6.4+) is absent here: "
                                    "use populate=True")
            want |= Feature.WP_UNPOPULATED
        self.populated = (self.populate_opt if self.populate_opt is not None
                          else not use_unpop)
        # The kernel holds a discard (MADV_DONTNEED/REMOVE) of registered memory until its
        # event is read, which lets the engine save the pages first.
        if offered & Feature.EVENT_REMOVE:
            want |= Feature.EVENT_REMOVE
        else:
            self.notes.append("this kernel has no EVENT_REMOVE: a discard (MADV_DONTNEED) "
                              "during the snapshot would go unnoticed")
        maps = mappings()
        shared = [r for r in self.regions if _is_shared(r, maps)]
        if shared and not self.allow_shared_writers:
            others = other_mappers(self.regions)
            if others:
                raise SnapshotError(
                    "shared memory that others can write would escape the freeze: "
                    + "; ".join(others[:3]) + ". Snapshot it when no other mapping writes "
                    "it, or pass allow_shared_writers=True")
            if offered & Feature.EVENT_FORK:  # a child forked meanwhile would share it too
                want |= Feature.EVENT_FORK
                self.fork_fails = True
        elif shared:
            self.notes.append("shared memory with allow_shared_writers: writes through other "
                              "mappings or processes are not in the image")
        return want

    def start(self) -> Snapshot:
        """Freeze the regions and start saving them in the background."""
        if self._h is not None or self._result is not None:
            raise RuntimeError("snapshot already started")
        want = self._negotiate()
        # UFFDIO_API answers every feature the kernel has, not the ones enabled: keep ours.
        self.uffd_features = want
        # The target first: an exec: command forks, which must not meet our fork event.
        out_fd = self.target.open()
        try:
            self._register(want)
            self.header = ImageHeader(self.regions, FLAG_POPULATED if self.populated else 0)
            self._start_native(out_fd)
        except BaseException as exc:
            partial = self.target.discard()
            self._teardown()
            if isinstance(exc, SnapshotError) and not exc.partial:
                exc.partial = partial
            raise
        return self

    def _register(self, want: Feature) -> None:
        try:
            self.uffd = Userfaultfd.create(want, via="auto")
        except UffdError as exc:
            raise SnapshotError(f"cannot open a userfaultfd: {exc}", errno=exc.errno) from exc
        for r in self.regions:
            try:
                ioctls = self.uffd.register(r.address, r.length, RegisterMode.WP)
            except UffdError as exc:
                raise SnapshotError(f"cannot register {r.memtype} region {r.address:#x}+"
                                    f"{r.length:#x} for write-protect: {exc}",
                                    errno=exc.errno) from exc
            self._registered.append(r)
            # As QEMU does: the kernel lists what this range supports; WP mode without the
            # WRITEPROTECT ioctl cannot freeze anything.
            if not ioctls & Ioctl.WRITEPROTECT:
                raise SnapshotError(f"the kernel registered {r.memtype} region {r.address:#x}+"
                                    f"{r.length:#x} without UFFDIO_WRITEPROTECT: cannot "
                                    "freeze it")

    def _start_native(self, out_fd: int) -> None:
        chunk_bytes, slot_bytes, n_slots, reserve, priority = self.tuning
        regions = ffi.new("struct uffdsnap_region[]",
                          [(r.address, r.length, r.page_size, *_steps(r)) for r in self.regions])
        header_bytes = self.header.encode()
        prefix = ffi.from_buffer("uint8_t[]", header_bytes)
        cfg = ffi.new("struct uffdsnap_config *", {
            "uffd": self.uffd.fileno(), "out_fd": out_fd,
            "out_nonblock": int(self.target.nonblock), "populate": int(self.populated),
            "protect": 1, "n_regions": len(self.regions), "regions": regions,
            "prefix": prefix, "prefix_len": len(prefix), "chunk_bytes": chunk_bytes,
            "slot_bytes": slot_bytes, "n_slots": n_slots, "reserve_slots": reserve,
            "engine_priority": priority, "fork_fails": int(self.fork_fails),
            "stall_timeout_ms": int((self.stall_timeout or 0) * 1000),
            "busy_poll_us": self.busy_poll_us})
        self._keep = [regions, header_bytes, prefix, cfg]
        err = ffi.new("int *")
        h = lib.uffdsnap_start(cfg, err)
        if h == ffi.NULL:
            raise SnapshotError(f"cannot start the snapshot engine: {os.strerror(-err[0])}",
                                errno=-err[0])
        self._h = h

    # --- running -----------------------------------------------------------------------------
    @property
    def stats(self) -> SnapshotStats:
        if self._h is None:
            if self._result:
                return self._result.stats
            raise RuntimeError("snapshot not started")
        return SnapshotStats.read(self._h)

    def poll_progress(self) -> Progress:
        s = self.stats
        elapsed = (time.monotonic_ns() - s.t_start_ns) / 1e9 if s.t_start_ns else 0.0
        if s.t_end_ns:
            elapsed = (s.t_end_ns - s.t_start_ns) / 1e9
        return Progress(s.pages_total, s.pages_saved, s.fault_pages, s.faults, s.bytes_written,
                        elapsed)

    def done(self) -> bool:
        return self._h is None or lib.uffdsnap_wait(self._h, 0) == 0

    def wait(self, timeout: float | None = None) -> SnapshotResult:
        """Wait for the end; returns the result or raises SnapshotError (after cleaning up).
        *timeout* bounds the whole wait, committing the image included: when it passes, the
        snapshot is aborted and SnapshotError raised. Any other exception while waiting (a
        KeyboardInterrupt, one from the progress callback) aborts it too, then propagates."""
        if self._result is not None:
            return self._result
        if self._h is None:
            raise RuntimeError("snapshot not started")
        if timeout is not None and timeout < 0:
            raise ValueError(f"timeout must not be negative, not {timeout}")
        self._deadline = None if timeout is None else time.monotonic() + timeout
        step_ms = max(1, int(self.progress_interval * 1000))
        try:
            while lib.uffdsnap_wait(self._h, step_ms) != 0:
                if self.progress:
                    self.progress(self.poll_progress())
                if self._deadline is not None and time.monotonic() > self._deadline:
                    self.abort()
                    self._join()
                    return self._finish(timed_out=timeout)
            if self.progress:
                self.progress(self.poll_progress())
            return self._finish()
        except BaseException:
            self.close()
            raise

    def abort(self) -> None:
        """Stop now: protection is removed and writers woken; wait() then raises."""
        if self._h is not None:
            lib.uffdsnap_abort(self._h)

    def close(self) -> None:
        """Abort if still running, and release everything (the partial image included).
        Safe to call at any time, more than once."""
        if self._h is not None:
            lib.uffdsnap_abort(self._h)
            self._join()
            h, self._h = self._h, None
            lib.uffdsnap_free(h)
            self.target.discard()
        self._teardown()

    def _join(self) -> None:
        # After an abort the engine ends within one poll interval; the bound is a last resort.
        lib.uffdsnap_wait(self._h, 60_000)

    def _finish(self, timed_out: float | None = None) -> SnapshotResult:
        stats = SnapshotStats.read(self._h)
        h, self._h = self._h, None
        cleanup = -lib.uffdsnap_free(h)
        self._teardown()
        if stats.state == State.DONE and not cleanup:
            try:
                self.target.commit(self._deadline)
            except TargetError as exc:
                raise SnapshotError(f"snapshot to {self.target} failed: {exc}",
                                    phase="output", stats=stats) from None
            self._result = SnapshotResult(str(self.target), self.header, stats,
                                          self.uffd_features, self.populated, self.notes)
            return self._result
        partial = self.target.discard()
        err = -stats.error
        phase = (Phase(stats.error_phase).words if stats.error_phase in Phase._value2member_map_
                 else "?")
        if timed_out is not None:
            msg = f"snapshot to {self.target} did not finish within {timed_out:g}s: aborted"
        elif stats.state == State.ABORTED:
            msg = f"snapshot to {self.target} aborted"
        elif cleanup:
            msg = f"snapshot to {self.target}: {cleanup} ioctls failed removing protection"
        else:
            msg = (f"snapshot to {self.target} failed in {phase}: "
                   f"{_explain(err, phase, stats, self)}")
        if stats.state != State.DONE:
            msg += (f" after {stats.bytes_written / (1 << 20):.1f} MiB "
                    f"({stats.pages_saved}/{stats.pages_total} pages saved); "
                    "protection removed, all writers woken")
        raise SnapshotError(msg, errno=err, phase=phase, partial=partial, stats=stats)

    def _teardown(self) -> None:
        """Unregister and close the userfaultfd (the engine already removed protection)."""
        if self.uffd is None:
            return
        for r in self._registered:
            with contextlib.suppress(OSError):
                self.uffd.unregister(r.address, r.length)
        self._registered = []
        self.uffd.close()
        self.uffd = None
        self._keep = []

    uffd_features: Feature = Feature(0)

    def __enter__(self) -> Snapshot:
        if self._h is None and self._result is None:
            self.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_h", None) is not None:
            with contextlib.suppress(Exception):
                self.close()


def _explain(err: int, phase: str, stats: SnapshotStats, snap: Snapshot) -> str:
    name = errno_mod.errorcode.get(err, str(err))
    text = f"{name} ({os.strerror(err)})" if err else "unknown error"
    where = f"{stats.error_addr:#x}"
    if phase == "read memory":
        return (f"memory at {where} was unmapped (munmap, mremap) before it was saved: its "
                "content at the freeze is not in any image")
    if phase == "discard":
        return (f"pages from {where} were discarded (MADV_DONTNEED/MADV_REMOVE) at the instant "
                "the engine read its messages, before they were saved: their content at the "
                "freeze may be gone (a discard the engine sees coming waits until all is "
                "saved; this one raced it)")
    if phase == "fork":
        return ("a child process was forked during the snapshot and maps its shared memory: "
                "the child's writes would escape the freeze. Snapshot shared memory when no "
                "child is forked, or pass allow_shared_writers=True")
    if phase == "protection":
        return (f"the page at {where} lost its write protection before it was saved, with no "
                "fault reaching the engine (another userfaultfd or a kernel bug unprotected "
                "it): it may have changed while it was written, so no image is claimed")
    if phase == "output":
        hints = {errno_mod.ENOSPC: "the target is full: free space or choose another target",
                 errno_mod.EPIPE: "the reader closed the pipe (did the exec command exit?)",
                 errno_mod.EDQUOT: "disk quota exceeded"}
        if err == errno_mod.ETIMEDOUT and snap.stall_timeout:
            text += (f": the target took nothing for {snap.stall_timeout:g}s: its reader is "
                     "stopped or stuck")
        elif err in hints:
            text += f": {hints[err]}"
    elif phase in ("protect", "unprotect") and err:
        text += f" at {where}"
    return text


def take(regions: Sequence[RegionLike], target: str | Target, *,
         timeout: float | None = None, **options) -> SnapshotResult:
    """Snapshot *regions* to *target* and wait for it (options as for Snapshot). *timeout*
    bounds the whole call. Whatever ends it early (an error, KeyboardInterrupt), protection is
    lifted and every writer woken before it propagates."""
    if timeout is not None and timeout < 0:
        raise ValueError(f"timeout must not be negative, not {timeout}")
    deadline = None if timeout is None else time.monotonic() + timeout
    snap = Snapshot(regions, target, **options)
    try:
        snap.start()
        return snap.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
    except BaseException:
        snap.close()
        raise


__all__ = ["Progress", "Snapshot", "SnapshotError", "SnapshotResult", "SnapshotStats",
           "check_regions", "take"]
