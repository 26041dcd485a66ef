# SPDX-License-Identifier: GPL-2.0-only
"""An independent reference for "the image equals memory at the freeze".

Why writer logs and not a fork() child: a child forked at the freeze would hold a CoW copy of the
memory at the fork, not at the protect ioctls, and forking a process whose writers are blocked in
faults races the engine. Instead every native writer logs each store (start time, stall, address,
value) and values are unique (writer w stores ``(w+1) << 48 | i`` for its i-th store, at its own
offset of the page, so no two writers touch the same word). The reference is then:

    initial content (a known pattern, set before the writers start)
    + every logged store of each writer up to its cut k_w, replayed in order

where k_w is read off the image (1 + the highest store index visible in it). The image passes if
it equals that reference byte for byte, which holds only if each writer's visible stores form a
prefix of its program order (no later store visible while an earlier one is missing, nothing
lost), and if the cut agrees with the clock: every store that finished before protection began
is in, none that started after the freeze completed is.
"""

from __future__ import annotations

import bisect
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field

from .._ffi import ffi
from ..native import Writer
from .image import LoadedImage, RegionInfo

VALUE_SHIFT = 48


def pattern_byte(page: int) -> int:
    """The initial byte of page *page*: every fourth page stays zero (zero records get tested)."""
    return 0 if page % 4 == 0 else (page * 37) % 255 + 1


def initial_content(region: RegionInfo) -> bytearray:
    ps = region.page_size
    period = 1020  # lcm(4, 255) pages: the pattern repeats
    block = bytearray()
    for p in range(min(period, region.pages)):
        block += bytes([pattern_byte(p)]) * ps
    out = bytearray(region.length)
    step = len(block)
    view = memoryview(out)
    for off in range(0, region.length, step):
        n = min(step, region.length - off)
        view[off:off + n] = block[:n]
    return out


def fill_initial(region: RegionInfo) -> bytearray:
    """Write the initial pattern into the region's memory; returns it (the reference's base)."""
    data = initial_content(region)
    ffi.memmove(ffi.cast("char *", region.address), data, len(data))
    return data


def value_base(writer_index: int) -> int:
    return (writer_index + 1) << VALUE_SHIFT


@dataclass
class WriterLog:
    """What one native writer stored, in order, as flat uint64 arrays."""

    region: int
    base: int
    t_start: Sequence[int]
    stall: Sequence[int]
    address: Sequence[int]
    value: Sequence[int]
    writes: int  # total stores (records may have been dropped beyond the capacity)

    @classmethod
    def from_writer(cls, writer: Writer, region: int, base: int,
                    until_ns: int | None = None) -> WriterLog:
        """Read the log of a *stopped* writer (request_stop() and wait()): a running writer
        stores first and logs after, so its last record may not be filled in yet.
        *until_ns* keeps only stores started by then (the freeze): later ones cannot be in the
        image, and a store the image shows beyond the log is reported as such."""
        # Read the raw record array in one go: millions of records as dataclasses would be slow.
        n = writer.stats.writes
        words = writer.raw_records()
        got = len(words) // 4
        keep = got if until_ns is None else bisect.bisect_right(words[0::4], until_ns)
        words = words[:keep * 4]
        # arrays, not lists: a writer logs millions of stores in a 1 GiB demo
        return cls(region, base, array("Q", words[0::4]), array("Q", words[1::4]),
                   array("Q", words[2::4]), array("Q", words[3::4]), n)


@dataclass
class CheckReport:
    ok: bool
    cuts: list[int] = field(default_factory=list)  # k_w per writer
    problems: list[str] = field(default_factory=list)
    compared_bytes: int = 0

    def __str__(self) -> str:
        if self.ok:
            return (f"image equals memory at the freeze ({self.compared_bytes} bytes compared; "
                    f"writer cuts {self.cuts})")
        return "image differs from memory at the freeze: " + "; ".join(self.problems[:5])


def check_image(image: LoadedImage, initial: Sequence[bytes | bytearray],
                logs: Sequence[WriterLog], t_protect_begin: int = 0,
                t_frozen: int = 0) -> CheckReport:
    """Compare *image* with the reference built from *initial* and the writers' *logs*."""
    report = CheckReport(True)
    expected = [bytearray(b) for b in initial]
    for w, log in enumerate(logs):
        reg = image.header.regions[log.region]
        got = image.contents[log.region]
        cut = 0
        for addr in set(log.address):
            off = addr - reg.address
            v = int.from_bytes(got[off:off + 8], "little")
            if v >> VALUE_SHIFT == log.base >> VALUE_SHIFT:
                cut = max(cut, (v - log.base) + 1)
        report.cuts.append(cut)
        if cut > len(log.address):
            report.ok = False
            report.problems.append(f"writer {w}: the image shows store {cut - 1}, which "
                                   f"started after the freeze or was not logged "
                                   f"({len(log.address)} logged)")
            continue
        # store start times are in program order, so counts are bisections
        if t_protect_begin:
            started = bisect.bisect_left(log.t_start, t_protect_begin)
            done_before = next((i + 1 for i in range(started - 1, -1, -1)
                                if log.t_start[i] + log.stall[i] < t_protect_begin), 0)
            if cut < done_before:
                report.ok = False
                report.problems.append(f"writer {w}: {done_before} stores finished before the "
                                       f"freeze began, the image holds only {cut}")
        if t_frozen:
            started = bisect.bisect_right(log.t_start, t_frozen)
            if cut > started:
                report.ok = False
                report.problems.append(f"writer {w}: the image holds {cut} stores, only "
                                       f"{started} had started when the freeze completed")
        exp = expected[log.region]
        last: dict[int, int] = {}
        for addr, value in zip(log.address[:cut], log.value[:cut]):
            last[addr] = value
        for addr, value in last.items():
            off = addr - reg.address
            exp[off:off + 8] = value.to_bytes(8, "little")
    for i, (exp, got) in enumerate(zip(expected, image.contents)):
        report.compared_bytes += len(exp)
        if exp != got:
            report.ok = False
            ps = image.header.regions[i].page_size
            bad = [p for p in range(len(exp) // ps) if exp[p * ps:(p + 1) * ps] !=
                   got[p * ps:(p + 1) * ps]]
            report.problems.append(f"region {i}: {len(bad)} pages differ from the reference "
                                   f"(first: page {bad[0]})")
    return report


def check_chain(values: Sequence[int], n_addrs: int) -> tuple[bool, int, str]:
    """Values read at the chain's addresses (in the image): consistent iff they form a prefix
    of the chain. Returns (ok, steps in the image, explanation)."""
    m = max(values) if values else 0  # the last step the image holds
    for k, v in enumerate(values):
        # the last step i < m with i % n == k wrote value i+1; none: 0
        last = ((m - 1 - k) // n_addrs) * n_addrs + k if m > k else -1
        want = last + 1 if last >= 0 else 0
        if v != want:
            return False, m, (f"address {k} holds step {v}, expected {want} for a cut after "
                              f"step {m}: a later write is visible while an earlier one is not")
    return True, m, f"consistent cut after step {m}"


__all__ = ["CheckReport", "WriterLog", "check_chain", "check_image", "fill_initial",
           "initial_content", "pattern_byte", "value_base"]
