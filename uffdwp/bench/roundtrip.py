# SPDX-License-Identifier: GPL-2.0-only
"""Write-fault round trip: how long a store to a write-protected page waits until the handler
has unprotected it, for uffdwp's native handler and, in the same run, for a minimal handler in
plain C (uffdwp/csrc/wpref_native.c: its own threads, poll + read + UFFDIO_WRITEPROTECT, no
Python and no uffdwp code), so that the ratio says what uffdwp adds.

Both sides do the same per round: map *pages* fresh anonymous pages, populate them, register
and protect them all, then a writer thread stores once into each page in order, timing each
store; the handler unprotects the faulting page, which wakes the writer. Rounds alternate
between the two sides (and which goes first), so load on the machine weighs on both alike.
Both sides put their threads on the same CPUs (a *placement*): the round trip is a few µs with
writer and handler sharing a CPU and tens of µs across CPUs, so a side the scheduler happened to
place differently would make the ratio meaningless. Percentiles are exact (nearest rank over
every store).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass

from .. import memory
from .._ffi import ffi, lib
from ..kernel_facts import Feature, RegisterMode
from ..native import FaultHandler, Policy, Writer
from ..uffd import Userfaultfd
from .stats import percentiles

ROUND_TIMEOUT_S = 60
PLACEMENTS = ("across", "shared")  # writer and handler on two CPUs, or both on one


def placement_cpus(placement: str) -> tuple[int, int]:
    """(writer CPU, handler CPU) for *placement*, from the CPUs this process may use; with
    only one CPU, "across" cannot be had and is "shared"."""
    if placement not in PLACEMENTS:
        raise ValueError(f"placement must be one of {', '.join(PLACEMENTS)}, not {placement!r}")
    cpus = sorted(os.sched_getaffinity(0))
    return (cpus[0], cpus[1]) if placement == "across" and len(cpus) > 1 else (cpus[0], cpus[0])


@contextlib.contextmanager
def _threads_start_on(cpu: int) -> Iterator[None]:
    """Threads created inside start on *cpu*: they inherit the creating thread's affinity,
    which is set for this thread only (pid 0) and given back afterwards."""
    old = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, old)


@dataclass
class RoundTrip:
    pages: int
    rounds: int
    placement: str  # "across" (writer and handler on two CPUs) or "shared" (one CPU)
    cpus: tuple[int, int]  # (writer, handler)
    samples: int
    median_us: float
    p99_us: float
    max_us: float
    handler_median_us: float  # message read -> unprotect done, inside uffdwp's handler
    reference_samples: int
    reference_median_us: float
    reference_p99_us: float
    reference_max_us: float

    @property
    def median_ratio(self) -> float | None:
        return self.median_us / self.reference_median_us if self.reference_median_us else None

    @property
    def p99_ratio(self) -> float | None:
        return self.p99_us / self.reference_p99_us if self.reference_p99_us else None

    def as_dict(self) -> dict:
        return asdict(self) | {"median_ratio": self.median_ratio, "p99_ratio": self.p99_ratio}


def uffdwp_round(pages: int, cpus: tuple[int, int]) -> tuple[list[int], list[int]]:
    """One round of the native Writer against the native FaultHandler (Policy.UNPROTECT), on
    *cpus* (writer, handler): the writer's stall per store, and the handler's read -> unprotect
    time per fault."""
    with memory.allocate("anon", pages=pages) as region, \
            Userfaultfd.create(Feature.PAGEFAULT_FLAG_WP, via="auto") as uffd:
        region.fill(1)
        uffd.register(region.address, region.length, RegisterMode.WP)
        uffd.writeprotect(region.address, region.length)
        with _threads_start_on(cpus[1]):
            handler = FaultHandler(uffd, [(region.address, region.length)], Policy.UNPROTECT,
                                   page_size=region.page_size, record_capacity=pages)
        with handler:
            with _threads_start_on(cpus[0]):
                w = Writer(region.address, region.length, page_size=region.page_size,
                           max_writes=pages, record_capacity=pages)
            try:
                if not w.wait(ROUND_TIMEOUT_S):
                    raise TimeoutError(f"the writer did not finish {pages} stores within "
                                       f"{ROUND_TIMEOUT_S}s")
                stalls = [r.stall_ns for r in w.records()]
                service = [r.t_done_ns - r.t_read_ns for r in handler.records() if r.t_done_ns]
            finally:
                handler.stop()  # unprotects and wakes everything: the writer cannot stay stuck
                w.close()
        uffd.unregister(region.address, region.length)
    return stalls, service


def reference_round(pages: int, cpus: tuple[int, int]) -> list[int]:
    """One round of the plain-C reference on *cpus* (writer, handler): the writer's stall per
    store."""
    out = ffi.new("uint64_t[]", pages)
    n = lib.uffdbench_reference_roundtrip(pages, out, ROUND_TIMEOUT_S * 1000, *cpus)
    if n < 0:
        raise OSError(-n, f"reference round trip: {os.strerror(-n)}")
    return list(out[0:n])


def bench_roundtrip(pages: int = 4096, rounds: int = 5, placement: str = "across") -> RoundTrip:
    """*rounds* rounds of each side, alternated, both in *placement*."""
    if pages < 1 or rounds < 1:
        raise ValueError(f"pages and rounds must be positive, not {pages} and {rounds}")
    cpus = placement_cpus(placement)
    ours: list[int] = []
    service: list[int] = []
    ref: list[int] = []
    for r in range(rounds):
        for side in (("uffdwp", "reference") if r % 2 == 0 else ("reference", "uffdwp")):
            if side == "uffdwp":
                stalls, served = uffdwp_round(pages, cpus)
                ours += stalls
                service += served
            else:
                ref += reference_round(pages, cpus)
    p50, p99 = percentiles(ours, (0.5, 0.99))
    r50, r99 = percentiles(ref, (0.5, 0.99))
    (s50,) = percentiles(service, (0.5,))
    placed = placement if cpus[0] != cpus[1] else "shared"
    return RoundTrip(pages, rounds, placed, cpus, len(ours), p50 / 1000, p99 / 1000,
                     max(ours) / 1000, s50 / 1000, len(ref), r50 / 1000, r99 / 1000,
                     max(ref) / 1000)


__all__ = ["PLACEMENTS", "RoundTrip", "bench_roundtrip", "placement_cpus", "reference_round",
           "uffdwp_round"]
