# SPDX-License-Identifier: GPL-2.0-only
"""The benchmark's arithmetic, kept apart from anything that measures: exact percentiles,
medians of bars, which stores waited on a write-protect fault, and the ratios reported.

Stores come from the native writers' own logs (uffdwp.native.Writer): per store its start
(CLOCK_MONOTONIC ns), how long it stalled, and the page it went to.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..native import nearest_rank


def percentiles(values: Sequence[int] | np.ndarray, qs: Sequence[float]) -> list[int]:
    """Exact quantiles by nearest rank (uffdwp.native.nearest_rank) of many samples at once
    (0 for none)."""
    arr = np.sort(np.asarray(values, dtype=np.int64))
    if not arr.size:
        return [0 for _ in qs]
    return [int(arr[nearest_rank(arr.size, q)]) for q in qs]


def median(values: Sequence[float]) -> float:
    """The middle value (mean of the two middle ones for an even count)."""
    if not values:
        raise ValueError("median of no values")
    return float(np.median(np.asarray(values, dtype=np.float64)))


@dataclass
class StoreLog:
    """One writer's logged stores, in program order (arrays of equal length)."""

    t_start: np.ndarray  # ns
    stall: np.ndarray  # ns
    page: np.ndarray  # page index in the region
    writes: int  # stores done, logged or not
    logged_until_ns: int  # stores started after this were not logged (the log filled up)

    @classmethod
    def from_lists(cls, t_start: Sequence[int], stall: Sequence[int], page: Sequence[int],
                   writes: int | None = None) -> StoreLog:
        t = np.asarray(t_start, dtype=np.uint64)
        return cls(t, np.asarray(stall, dtype=np.uint64), np.asarray(page, dtype=np.uint64),
                   len(t) if writes is None else writes, 2**63)

    def window(self, t0: int, t1: int) -> slice:
        """The stores that started in [t0, t1] (the log is in time order)."""
        lo = int(np.searchsorted(self.t_start, t0, side="left"))
        hi = int(np.searchsorted(self.t_start, t1, side="right"))
        return slice(lo, hi)


def first_touches(log: StoreLog, t0: int, t1: int) -> np.ndarray:
    """Indices of the stores that were the writer's first to their page in [t0, t1].

    Protection is only ever lifted during a snapshot, so a page this writer already stored to
    in the window was writable for it from then on: only a first store can have waited on a WP
    fault. (Another writer's first store to the same page is its own candidate.)"""
    win = log.window(t0, t1)
    _, first = np.unique(log.page[win], return_index=True)
    return np.sort(first) + win.start


@dataclass
class FaultSplit:
    """Which stores of a window waited on a write-protect fault."""

    stalls: np.ndarray  # ns, of the stores counted as faults, ascending
    candidates: int  # first stores to a page in the window: the only ones that could fault
    messages: int  # WP fault messages the engine read (one per faulting store)
    background_expected: float  # non-fault candidates expected as slow as the faster faults

    @property
    def count(self) -> int:
        return int(self.stalls.size)


def split_faults(logs: Sequence[StoreLog], t0: int, t1: int, messages: int,
                 undisturbed: np.ndarray | Sequence[int]) -> FaultSplit:
    """The stores that waited on a WP fault during [t0, t1]: the *messages* slowest first
    touches, where *messages* is how many fault messages the engine read (each is one store
    waiting in the kernel until the page was unprotected).

    A first touch that did not fault is as fast as any store, unless something else held it up
    (preemption, an interrupt). How many such stores would be at least as slow as the fastest
    store counted as a fault follows from *undisturbed*, the same writers' stalls just before
    the window: reported as background_expected, the bound on misattributed stores."""
    stalls = np.concatenate([log.stall[first_touches(log, t0, t1)] for log in logs]) \
        if logs else np.zeros(0, dtype=np.uint64)
    k = min(max(0, messages), stalls.size)
    faults = np.sort(stalls)[stalls.size - k:] if k else np.zeros(0, dtype=np.uint64)
    background = 0.0
    if k:
        base = np.asarray(undisturbed, dtype=np.uint64)
        if base.size:
            tail = float(np.count_nonzero(base >= faults[0])) / base.size
            background = tail * (stalls.size - k)
    return FaultSplit(faults, int(stalls.size), messages, background)


def stores_in_window(logs: Sequence[StoreLog], t0: int, t1: int) -> np.ndarray:
    """The stall of every store started in [t0, t1], all writers."""
    parts = [log.stall[log.window(t0, t1)] for log in logs]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint64)


def logs_cover(logs: Sequence[StoreLog], t1: int) -> bool:
    """Whether every writer logged all its stores up to t1."""
    return all(log.logged_until_ns >= t1 for log in logs)


def time_ratio(numerator_s: Sequence[float], denominator_s: Sequence[float]) -> float | None:
    """median(numerator) / median(denominator), or None when either side has no sample."""
    if not numerator_s or not denominator_s:
        return None
    den = median(denominator_s)
    return median(numerator_s) / den if den > 0 else None


def spread(values: Sequence[float]) -> dict:
    """min, median and max of repeated samples, for the report."""
    if not values:
        return {"n": 0}
    return {"n": len(values), "min": min(values), "median": median(values), "max": max(values)}


__all__ = ["FaultSplit", "StoreLog", "first_touches", "logs_cover", "median",
           "percentiles", "split_faults", "spread", "stores_in_window", "time_ratio"]
