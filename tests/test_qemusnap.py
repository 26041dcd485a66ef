# SPDX-License-Identifier: GPL-2.0-only
"""Pure logic of the QEMU snapshot suite: the consistent-cut rule, the writer's status page, the
snapshot-added stalls, wrlat's bpftrace histogram parsing and log2 quantiles."""

from __future__ import annotations

import struct

import pytest

from uffdwp.bench import wrlat
from uffdwp.qemusnap import bootblock
from uffdwp.qemusnap.bootblock import PAGE, START, TAIL_OFFSET, Status
from uffdwp.qemusnap.cut import check_cut as _check_cut
from uffdwp.qemusnap.scenario import WriterTimings, _status_agrees, snapshot_added


def ram_at(passes: list[int], torn: dict[int, int] | None = None) -> bytearray:
    """RAM as the writer leaves it: page i at pass passes[i] (0 = never written)."""
    ram = bytearray(PAGE * len(passes))
    for i, p in enumerate(passes):
        if p:
            tail = (torn or {}).get(i, p)
            struct.pack_into("<II", ram, i * PAGE, p, START + i * PAGE)
            struct.pack_into("<I", ram, i * PAGE + TAIL_OFFSET, tail)
    return ram


def check_cut(ram: bytes, start: int):
    """These cases are written in address order: a writer that goes in address order."""
    return _check_cut(ram, start, order=list(range(len(ram) // PAGE)))


def test_cut_with_one_boundary():
    rep = check_cut(bytes(ram_at([7, 7, 7, 6, 6])), START)
    assert rep.ok, rep
    assert rep.boundary == 3 and rep.passes == (7, 6)
    assert "pass 7 on the writer's first 3 pages" in str(rep)


def test_cut_without_boundary():
    rep = check_cut(bytes(ram_at([5, 5, 5])), START)
    assert rep.ok and rep.boundary is None


@pytest.mark.parametrize(("passes", "torn", "what"), [
    ([7, 6, 7, 6], None, "second boundary"),  # two instants
    ([7, 7, 5, 5], None, "7 -> 5"),  # a jump by two passes
    ([6, 6, 7, 7], None, "6 -> 7"),  # the prefix behind the rest
    ([7, 7, 0, 6], None, "never written"),
    ([7, 7, 6, 6], {1: 6}, "torn"),  # head of one pass, tail of another
])
def test_not_a_cut(passes, torn, what):
    rep = check_cut(bytes(ram_at(passes, torn)), START)
    assert not rep.ok
    assert what in str(rep)


def test_misplaced_page_is_caught():
    ram = ram_at([7, 7, 6, 6])
    ram[0:PAGE], ram[PAGE:2 * PAGE] = ram[PAGE:2 * PAGE], ram[0:PAGE]  # same pass, swapped
    rep = check_cut(bytes(ram), START)
    assert not rep.ok and "tag" in str(rep)


def test_problems_are_counted_beyond_the_listed_ones():
    rep = check_cut(bytes(ram_at([3, 1] * 20)), START)
    assert rep.problem_count > len(rep.problems) and "more" in str(rep)


def _status(passes: int, magic: int = bootblock.MAGIC) -> Status:
    page = bytearray(PAGE)
    struct.pack_into("<IIQIII", page, 0, magic, passes, 123, START, 1 << 25, PAGE)
    struct.pack_into("<II", page, 0x20, 2_500_000 * 50, bootblock.PIT_LATCH)
    struct.pack_into("<3I", page, bootblock.HIST_OFFSET, 1, 2, 3)
    return Status.parse(bytes(page))


def test_status_page_layout_and_delta():
    st = _status(9)
    assert st.running and st.passes == 9 and st.last_tsc == 123 and st.histogram[:3] == (1, 2, 3)
    assert st.ticks_per_us == pytest.approx(2500, rel=1e-3)  # 2.5 GHz: 125 M ticks in 50 ms
    later = Status(st.magic, 10, 0, st.start, st.end, st.stride, st.pit_ticks, st.pit_latch,
                   (5, 2, 4, *st.histogram[3:]))
    assert bootblock.histogram_delta(st, later)[:3] == [4, 0, 1]


@pytest.mark.parametrize(("passes", "status_passes", "ok"), [
    ([7, 7, 6, 6], 6, True), ([7, 7, 6, 6], 7, False), ([7, 7, 6, 6], 5, False),
    ([7, 7, 7, 7], 7, True), ([7, 7, 7, 7], 6, True), ([7, 7, 7, 7], 5, False),
])
def test_status_page_must_be_the_same_instant(passes, status_passes, ok):
    rep = check_cut(bytes(ram_at(passes)), START)
    _status_agrees(rep, _status(status_passes))
    assert rep.ok is ok, rep


def test_snapshot_added_subtracts_the_undisturbed_tail():
    undisturbed = [0] * 8 + [9000, 900, 90, 9, 1]  # p99 falls in bucket 9
    during = [0] * 8 + [900, 90, 9, 50, 300, 20]
    thr, added = snapshot_added(undisturbed, during)
    assert thr == 10
    # bucket 11: 50 seen, 9 * 1000/10000 ~ 1 expected undisturbed
    assert added[:10] == [0] * 10 and added[11] == 49 and added[12] == 300 and added[13] == 20


def test_slowest_n_takes_from_the_top():
    w = WriterTimings(1000.0, 1.0, [], 1.0, [], 0, [0, 0, 5, 3, 2])
    assert w.slowest(4) == [0, 0, 0, 2, 2]
    assert w.slowest(100) == [0, 0, 5, 3, 2]


BPFTRACE_OUT = """Attaching 4 probes...
uffdwp-wrlat: tracing


@usecs:
[0]                    3 |@@@                                                 |
[1]                    1 |@                                                   |
[4, 8)                10 |@@@@@@@@@@                                          |
[1K, 2K)               2 |@@                                                  |
[2M, 4M)               1 |@                                                   |

@other:
[16, 32)             100 |@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@|
"""


def test_parse_bpftrace_hist():
    hist = wrlat.parse_bpftrace_hist(BPFTRACE_OUT)
    assert hist[0] == 3 and hist[1] == 1 and hist[3] == 10 and hist[11] == 2 and hist[22] == 1
    assert sum(hist) == 17  # @other is not @usecs
    assert wrlat.parse_bpftrace_hist("Attaching 4 probes...\n") == []


def test_log2_quantile_stays_in_its_bucket():
    assert wrlat.log2_quantile([], 0.5) is None
    hist = [0, 0, 0, 10]  # all in [4, 8)
    assert 4 <= wrlat.log2_quantile(hist, 0.5) < 8
    assert wrlat.log2_quantile(hist, 0.5, unit=0.5) == pytest.approx(wrlat.log2_quantile(
        hist, 0.5) * 0.5)
    assert wrlat.log2_quantile([10], 0.5) == pytest.approx(0.5)  # bucket 0 is [0, 1)


def test_writer_order_visits_every_page_once_far_apart():
    for pages in (3840, 7936, 100):
        order = bootblock.writer_order(pages)
        assert sorted(order) == list(range(pages))
        assert abs(order[1] - order[0]) > pages // 4


def copy_racing_writer(pages: int, order: list[int], copy_pages_per_write: float,
                       start_pass: int = 5) -> bytes:
    """What a copy in address order sees while the writer (in *order*) goes on: the copier
    reads page i after i / copy_pages_per_write of the writer's page writes."""
    position = {page: k for k, page in enumerate(order)}
    passes = []
    for i in range(pages):
        writes = int(i / copy_pages_per_write)  # writer's page writes since the copy began
        k = position[i]
        passes.append(start_pass + (writes + pages // 2 - k + pages - 1) // pages)
    return bytes(ram_at(passes))


@pytest.mark.parametrize("speed", [3.0, 1.5, 0.5])
def test_address_order_copy_is_caught_only_with_a_permuted_writer(speed):
    """Why writer.S does not go in address order: a copier in address order racing an
    ascending writer crosses it once and looks like a cut; against the permuted order it
    cannot."""
    pages = 384
    ascending = list(range(pages))
    permuted = bootblock.writer_order(pages)
    if speed > 1:  # the copy outruns the writer: one crossing, indistinguishable from a cut
        assert _check_cut(copy_racing_writer(pages, ascending, speed), START, ascending).ok
    rep = _check_cut(copy_racing_writer(pages, permuted, speed), START, permuted)
    assert not rep.ok, rep
