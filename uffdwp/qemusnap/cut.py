# SPDX-License-Identifier: GPL-2.0-only
"""Is a RAM image a consistent cut of the writer's sequence? (the rule of QEMU's migration test)

The writer (writer.S) sweeps its pages in a fixed order (bootblock.writer_order), pass after
pass, leaving on each page its pass number at the head and at the tail and the page's own
address as a tag. Memory frozen at one instant therefore reads, in the writer's order, pass k on
a prefix and k-1 on the rest: one increment boundary (or none, at the end of a pass), every page
whole (head == tail) and in its place (tag == address). Anything else — several boundaries, a
jump by more than one, a torn or misplaced page — was not memory at one instant.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from .bootblock import PAGE, TAIL_OFFSET, writer_order

MAX_PROBLEMS = 8  # problems listed in the report; all are counted


@dataclass
class CutReport:
    pages: int
    passes: tuple[int, int] = (0, 0)  # (highest, lowest) pass number seen
    boundary: int | None = None  # position in the writer's order where the lower pass begins
    problems: list[str] = field(default_factory=list)
    problem_count: int = 0

    @property
    def ok(self) -> bool:
        return self.problem_count == 0

    def add(self, problem: str) -> None:
        self.problem_count += 1
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(problem)

    def __str__(self) -> str:
        if self.ok:
            where = ("no boundary: every page at pass " f"{self.passes[0]}"
                     if self.boundary is None else
                     f"pass {self.passes[0]} on the writer's first {self.boundary} pages, pass "
                     f"{self.passes[1]} on the other {self.pages - self.boundary}")
            return f"consistent cut of {self.pages} pages: {where}"
        more = self.problem_count - len(self.problems)
        return (f"NOT a consistent cut ({self.problem_count} problems in {self.pages} pages): "
                + "; ".join(self.problems) + (f"; … {more} more" if more > 0 else ""))


def check_cut(ram: bytes, start: int, order: list[int] | None = None) -> CutReport:
    """Check the writer's pages in *ram*, which holds guest memory from address *start*; *order*
    is the writer's page order (default: writer.S's, bootblock.writer_order)."""
    if len(ram) % PAGE:
        raise ValueError(f"{len(ram)} bytes is not a whole number of pages")
    n = len(ram) // PAGE
    rep = CutReport(pages=n)
    values: list[int] = []
    for i in range(n):
        off = i * PAGE
        head, tag = struct.unpack_from("<II", ram, off)
        (tail,) = struct.unpack_from("<I", ram, off + TAIL_OFFSET)
        addr = start + off
        if head == 0 and tag == 0 and tail == 0:
            rep.add(f"page {i} ({addr:#x}) never written")
        elif tag != addr:
            rep.add(f"page {i} ({addr:#x}) carries the tag {tag:#x}: not its own content")
        elif head != tail:
            rep.add(f"page {i} ({addr:#x}) torn: head pass {head}, tail pass {tail}")
        values.append(head)
    if not values:
        return rep
    rep.passes = (max(values), min(values))
    order = writer_order(n) if order is None else order
    for k in range(1, n):
        i = order[k]
        prev, cur = values[order[k - 1]], values[i]
        if cur == prev:
            continue
        if cur == prev - 1 and rep.boundary is None:
            rep.boundary = k
            continue
        if cur == prev - 1:
            rep.add(f"second boundary at the writer's page {k} (page {i}; first at {rep.boundary})"
                    f": pass {prev} -> {cur}")
        else:
            rep.add(f"writer's page {k} (page {i}): pass {prev} -> {cur} (only one step down by "
                    "one is possible)")
    return rep


__all__ = ["CutReport", "check_cut"]
