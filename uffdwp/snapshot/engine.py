"""Background snapshot of memory regions of this process with UFFD-WP (QEMU's design).

    with Snapshot([region], "file:/tmp/snap.img", progress=print) as snap:
        result = snap.wait()

The native engine (uffdwp/native/snapshot_native.c) freezes every region with one
UFFDIO_WRITEPROTECT each before it serves any fault, so the image is a consistent cut at that
instant. It then saves pages in one linear pass, saving a page a writer faults on first (copy,
unprotect: the writer wakes), and streams records to the target through an output thread.
Python only sets up, watches the progress counters, and cleans up.
"""

from __future__ import annotations

import contextlib
import errno as errno_mod
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .._ffi import ffi, lib
from ..errors import UffdError
from ..kernel_facts import Feature, RegisterMode
from ..memory import Region
from ..uffd import Userfaultfd
from .image import FLAG_POPULATED, ImageHeader, RegionInfo
from .targets import Target, TargetError, parse_target

STATE_RUNNING, STATE_DONE, STATE_FAILED, STATE_ABORTED = 0, 1, 2, 3
PHASES = {0: "none", 1: "populate", 2: "protect", 3: "read faults", 4: "unprotect",
          5: "output", 6: "abort"}


class SnapshotError(Exception):
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

    @classmethod
    def read(cls, handle) -> SnapshotStats:
        s = ffi.new("struct uffdsnap_stats *")
        lib.uffdsnap_get_stats(handle, s)
        return cls(s.pages_total, s.pages_saved, s.linear_pages, s.fault_pages, s.zero_pages,
                   s.data_pages, s.faults, s.faults_already_saved, s.records,
                   s.bytes_committed, s.bytes_written, s.t_start_ns, s.t_protect_ns, s.t_frozen_ns,
                   s.t_saved_ns, s.t_end_ns, s.populate_ns, s.protect_ns, s.service_max_ns,
                   s.service_total_ns, tuple(s.service_hist), s.ring_waits, s.priority_applied,
                   s.state, s.error,
                   s.error_phase)

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
                "stats": self.stats.as_dict()}


RegionLike = Region | RegionInfo | tuple[int, int, int] | tuple[int, int, int, str]


def _region_info(r: RegionLike) -> RegionInfo:
    if isinstance(r, RegionInfo):
        return r
    if isinstance(r, Region):
        return RegionInfo(r.address, r.length, r.page_size, r.memtype)
    return RegionInfo(*r)


def _needs_file_wp(memtype: str) -> bool:
    return memtype != "anon"


class Snapshot:
    """One background snapshot of *regions* (this process's memory) to *target*.

    populate:            None: read-populate the regions only if the kernel lacks
                         WP_UNPOPULATED; True: always (and do not ask for WP_UNPOPULATED: the
                         pre-6.4 path, testable on any kernel); False: never.
    use_wp_unpopulated:  None: when the kernel offers it and populate is not forced.
    engine_priority:     0 inherit; > 0 run the engine thread SCHED_FIFO at that priority
                         (falls back to nice -10); < 0 that nice value. A faulting writer
                         waits until the engine runs: on a busy machine that is a time slice.
    progress:            called with a Progress every *progress_interval* s while wait() runs.
    """

    def __init__(self, regions: Sequence[RegionLike], target: str | Target, *,
                 populate: bool | None = None, use_wp_unpopulated: bool | None = None,
                 chunk_bytes: int = 128 << 10, slot_bytes: int = 1 << 20, n_slots: int = 32,
                 reserve_slots: int = 8, engine_priority: int = 0,
                 progress: Callable[[Progress], None] | None = None,
                 progress_interval: float = 0.1) -> None:
        if not regions:
            raise ValueError("nothing to snapshot: give at least one region")
        self.regions = [_region_info(r) for r in regions]
        self.target = parse_target(target)
        self.populate_opt = populate
        self.use_wp_unpopulated = use_wp_unpopulated
        self.tuning = (chunk_bytes, slot_bytes, n_slots, reserve_slots, engine_priority)
        self.progress = progress
        self.progress_interval = progress_interval
        self.uffd: Userfaultfd | None = None
        self.header: ImageHeader | None = None
        self.populated = False
        self._h = None
        self._keep: list = []
        self._registered: list[RegionInfo] = []
        self._result: SnapshotResult | None = None

    # --- setup -------------------------------------------------------------------------------
    def _negotiate(self) -> Feature:
        with Userfaultfd.open("auto") as probe:
            offered = probe.api(0).features
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
        return want

    def start(self) -> Snapshot:
        """Freeze the regions and start saving them in the background."""
        if self._h is not None:
            raise RuntimeError("snapshot already started")
        want = self._negotiate()
        # UFFDIO_API answers every feature the kernel has, not the ones enabled: keep ours.
        self.uffd_features = want
        try:
            self.uffd = Userfaultfd.create(want, via="auto")
        except UffdError as exc:
            raise SnapshotError(f"cannot open a userfaultfd: {exc}", errno=exc.errno) from exc
        try:
            for r in self.regions:
                self.uffd.register(r.address, r.length, RegisterMode.WP)
                self._registered.append(r)
        except UffdError as exc:
            self._teardown()
            raise SnapshotError(f"cannot register {r.memtype} region {r.address:#x}+"
                                f"{r.length:#x} for write-protect: {exc}",
                                errno=exc.errno) from exc
        self.header = ImageHeader(self.regions, FLAG_POPULATED if self.populated else 0)
        try:
            out_fd = self.target.open()
        except TargetError:
            self._teardown()
            raise
        self._start_native(out_fd)
        return self

    def _start_native(self, out_fd: int) -> None:
        chunk_bytes, slot_bytes, n_slots, reserve, priority = self.tuning
        regions = ffi.new("struct uffdsnap_region[]",
                          [(r.address, r.length, r.page_size) for r in self.regions])
        header_bytes = self.header.encode()
        prefix = ffi.from_buffer("uint8_t[]", header_bytes)
        cfg = ffi.new("struct uffdsnap_config *", {
            "uffd": self.uffd.fileno(), "out_fd": out_fd,
            "out_nonblock": int(self.target.nonblock), "populate": int(self.populated),
            "protect": 1, "n_regions": len(self.regions), "regions": regions,
            "prefix": prefix, "prefix_len": len(prefix), "chunk_bytes": chunk_bytes,
            "slot_bytes": slot_bytes, "n_slots": n_slots, "reserve_slots": reserve,
            "engine_priority": priority})
        self._keep = [regions, header_bytes, prefix, cfg]
        err = ffi.new("int *")
        h = lib.uffdsnap_start(cfg, err)
        if h == ffi.NULL:
            partial = self.target.discard()
            self._teardown()
            raise SnapshotError(f"cannot start the snapshot engine: {os.strerror(-err[0])}",
                                errno=-err[0], partial=partial)
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
        On timeout the snapshot is aborted and SnapshotError raised."""
        if self._result is not None:
            return self._result
        if self._h is None:
            raise RuntimeError("snapshot not started")
        deadline = None if timeout is None else time.monotonic() + timeout
        step_ms = max(1, int(self.progress_interval * 1000))
        while lib.uffdsnap_wait(self._h, step_ms) != 0:
            if self.progress:
                self.progress(self.poll_progress())
            if deadline is not None and time.monotonic() > deadline:
                self.abort()
                lib.uffdsnap_wait(self._h, 60_000)
                return self._finish(timed_out=timeout)
        if self.progress:
            self.progress(self.poll_progress())
        return self._finish()

    def abort(self) -> None:
        """Stop now: protection is removed and writers woken; wait() then raises."""
        if self._h is not None:
            lib.uffdsnap_abort(self._h)

    def _finish(self, timed_out: float | None = None) -> SnapshotResult:
        stats = SnapshotStats.read(self._h)
        cleanup = -lib.uffdsnap_free(self._h)
        self._h = None
        self._teardown()
        if stats.state == STATE_DONE and not cleanup:
            try:
                self.target.commit()
            except TargetError as exc:
                raise SnapshotError(f"snapshot to {self.target} failed: {exc}",
                                    phase="output", stats=stats) from None
            self._result = SnapshotResult(str(self.target), self.header, stats,
                                          self.uffd_features, self.populated)
            return self._result
        partial = self.target.discard()
        err = -stats.error
        phase = PHASES.get(stats.error_phase, "?")
        if timed_out is not None:
            msg = f"snapshot to {self.target} did not finish within {timed_out:g}s: aborted"
        elif stats.state == STATE_ABORTED:
            msg = f"snapshot to {self.target} aborted"
        elif cleanup:
            msg = f"snapshot to {self.target}: {cleanup} ioctls failed removing protection"
        else:
            msg = f"snapshot to {self.target} failed in {phase}: {_explain(err, phase)}"
        if stats.state != STATE_DONE:
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
        if self._h is not None:
            self.abort()
            with contextlib.suppress(SnapshotError):
                self.wait()

    def __del__(self) -> None:
        if getattr(self, "_h", None) is not None:
            lib.uffdsnap_abort(self._h)
            lib.uffdsnap_wait(self._h, 60_000)
            lib.uffdsnap_free(self._h)
            self._h = None


def _explain(err: int, phase: str) -> str:
    name = errno_mod.errorcode.get(err, str(err))
    text = f"{name} ({os.strerror(err)})" if err else "unknown error"
    if phase == "output":
        hints = {errno_mod.ENOSPC: "the target is full: free space or choose another target",
                 errno_mod.EPIPE: "the reader closed the pipe (did the exec command exit?)",
                 errno_mod.EDQUOT: "disk quota exceeded"}
        if err in hints:
            text += f": {hints[err]}"
    return text


def take(regions: Sequence[RegionLike], target: str | Target, *,
         timeout: float | None = None, **options) -> SnapshotResult:
    """Snapshot *regions* to *target* and wait for it (options as for Snapshot)."""
    snap = Snapshot(regions, target, **options)
    snap.start()
    return snap.wait(timeout)


__all__ = ["Progress", "Snapshot", "SnapshotError", "SnapshotResult", "SnapshotStats", "take"]
