# SPDX-License-Identifier: GPL-2.0-only
"""Soak: snapshots back to back in one process under writers at full speed, each image checked
against the writers' logs, and what a leak would leave behind counted after every round:
descriptors, threads, and pages still write-protected."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from ..native import Pattern
from .demo import DemoResult, run_demo


@dataclass(frozen=True)
class SoakRound:
    index: int
    seconds: float
    fault_pages: int
    check_ok: bool
    check_note: str
    fds: int
    threads: int
    protected_after: int  # -1 where pagemap cannot show the bit


@dataclass
class SoakResult:
    rounds: list[SoakRound]
    fds_before: int
    threads_before: int

    @property
    def ok(self) -> bool:
        last = self.rounds[-1] if self.rounds else None
        return bool(last) and all(r.check_ok and r.protected_after <= 0 for r in self.rounds) \
            and last.fds == self.fds_before and last.threads == self.threads_before

    def as_dict(self) -> dict:
        return {"ok": self.ok, "fds_before": self.fds_before,
                "threads_before": self.threads_before,
                "rounds": [r.__dict__ for r in self.rounds]}


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def threads() -> int:
    return len(os.listdir("/proc/self/task"))


def soak(size: int, rounds: int, *, writers: int = 4, memtype: str = "anon",
         image: str, on_round: Callable[[SoakRound], None] | None = None) -> SoakResult:
    """*rounds* snapshots of *size* bytes of *memtype* under *writers* writers at full speed,
    one after the other in this process, each to the file *image* and checked."""
    result = SoakResult([], open_fds(), threads())
    for i in range(rounds):
        res: DemoResult = run_demo(size, f"file:{image}", writers=writers, rate=0,
                                   pattern=Pattern.RANDOM, memtype=memtype, verify=True)
        r = SoakRound(i + 1, res.snapshot.duration_s, res.snapshot.stats.fault_pages,
                      bool(res.check and res.check.ok), res.check_note, open_fds(), threads(),
                      res.protected_after)
        result.rounds.append(r)
        if on_round:
            on_round(r)
    return result


__all__ = ["SoakResult", "SoakRound", "soak"]
