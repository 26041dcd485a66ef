# SPDX-License-Identifier: GPL-2.0-only
"""QEMU's own background snapshot on this kernel — the program UFFD-WP was built for.

A tiny guest (uffdwp/qemusnap/writer.S, a boot sector; no Linux) writes every page of its RAM
in a known order, pass after pass, at full speed under TCG. QEMU snapshots it in the background
(`background-snapshot` capability, `migrate "exec:cat > IMAGE"`), a second QEMU loads the image
(-incoming), and its RAM must be a consistent cut of the writer's sequence: one increment
boundary, nothing torn (uffdwp/qemusnap/cut.py). A dump of the running guest, which has no
write tracking (QMP pmemsave, else QEMU's RAM read through /proc/PID/mem), is the control: the
same check must reject it, and accept the same dump of the paused guest. Where the kernel lacks
what QEMU needs (shared memory before WP_HUGETLBFS_SHMEM, 5.19), QEMU must refuse the snapshot
cleanly.
Where the kernel has kprobes, `uffdwp wrlat --pid` traces QEMU meanwhile and its histogram is
compared with the writer's own rdtsc timings.

Every case of one memory backend shares one run (a module fixture), which also lands in
$UFFDWP_ARTIFACTS/qemu-snapshot-<memtype>.json for the matrix report.
"""

from __future__ import annotations

import os
import sys
import traceback

import pytest

from uffdwp.errors import UffdError
from uffdwp.kernel_facts import RegisterMode
from uffdwp.qemusnap.scenario import ScenarioResult, run_scenario, save_artifact
from uffdwp.qemusnap.vm import MEMORY_BACKENDS
from uffdwp.runner.precondition import require
from uffdwp.runner.skips import NOT_APPLICABLE
from uffdwp.uffd import supported_features

from .capabilities import QEMU, WRLAT_PID
from .uffdtest import STRESS_SCALE, implied_features, missing_reason, uffd_test

MIB = 1 << 20
# Guest RAM: small, the more so under an emulated CPU (nested TCG in the matrix's guests).
RAM_MIB = int(os.environ.get("UFFDWP_QEMU_RAM_MIB", "32" if STRESS_SCALE >= 1 else "16"))
# One case pays for its backend's whole run: minutes under nested TCG on a loaded machine.
TIMEOUT = 120 if STRESS_SCALE >= 1 else 1800
# The image holds every page once plus QEMU's ROMs, device state and page headers.
IMAGE_OVERHEAD = 1 * MIB


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory):
    """memtype -> ScenarioResult (or the exception its run raised), each run done once (its
    tests declare needs=QEMU)."""
    cache: dict[str, ScenarioResult | BaseException] = {}
    workdir = tmp_path_factory.mktemp("qemu")

    def get(memtype: str) -> ScenarioResult:
        if memtype not in cache:
            try:
                cache[memtype] = run_scenario(
                    # one traced backend: bpftrace takes minutes to start on an emulated CPU
                    workdir, memtype, RAM_MIB, timeout=TIMEOUT / 3, trace=memtype == "anon",
                    log=lambda msg: print(f"qemu-snapshot[{memtype}]: {msg}", file=sys.stderr))
                save_artifact(cache[memtype].as_dict(), f"qemu-snapshot-{memtype}.json")
            except Exception as exc:
                exc.add_note(traceback.format_exc())
                cache[memtype] = exc
        got = cache[memtype]
        if isinstance(got, BaseException):
            raise got
        return got

    return get


def _lacks(memtype: str) -> str | None:
    """Why this kernel cannot write-protect QEMU's RAM of this backend, or None."""
    try:
        have = supported_features()
    except UffdError as exc:
        return f"userfaultfd ({exc})"
    return missing_reason(implied_features(memtype, RegisterMode.WP), have)


@uffd_test(mem=MEMORY_BACKENDS, timeout=TIMEOUT, needs=QEMU)
def test_qemu_background_snapshot(memtype, runs):
    """QEMU snapshots a guest writing at full speed; the restored RAM is a consistent cut."""
    r = runs(memtype)
    assert r.refused is None, f"QEMU refused the snapshot on a capable kernel: {r.refused}"
    assert r.restored_ok, f"restored RAM: {r.restored}"
    assert r.passes_after > r.passes_before, (
        f"the writer made no pass during the snapshot ({r.passes_before} -> {r.passes_after})")
    assert r.writer is not None and sum(r.writer.during) > 0
    assert r.resumed_ok, f"restored guest, resumed: {r.resumed}"


@uffd_test(mem=("anon",), timeout=TIMEOUT, needs=QEMU)
def test_qemu_running_dump_is_not_a_cut(memtype, runs):
    """Control: the same check rejects a dump of the running guest (no write tracking), and
    accepts one of the paused guest."""
    r = runs(memtype)
    assert r.control_failed, (
        "every dump of the running guest passed as a consistent cut, so the check cannot "
        f"tell (writer passes during each dump: {r.control_passes}): {r.control}")
    assert r.paused_dump_ok, f"a dump of the paused guest is not a cut: {r.paused_dump}"


@uffd_test(mem=MEMORY_BACKENDS, timeout=TIMEOUT, needs=QEMU)
def test_qemu_snapshot_image_size(memtype, runs):
    """The image holds each page once (≈ guest RAM) while the writer dirties everything; a
    plain precopy migration of the same guest, the baseline, sends pages again."""
    r = runs(memtype)
    ram = RAM_MIB * MIB
    assert r.image_bytes <= ram + IMAGE_OVERHEAD, (
        f"snapshot image {r.image_bytes} bytes for {ram} bytes of RAM")
    assert r.precopy_bytes > r.image_bytes, (
        f"precopy image {r.precopy_bytes} bytes, not larger than the background snapshot's "
        f"{r.image_bytes}: did the writer run?")


# registers nothing itself: it runs where the kernel lacks what QEMU's WP registration needs
@uffd_test(mem=MEMORY_BACKENDS, modes=0, timeout=TIMEOUT, needs=QEMU)
def test_qemu_snapshot_refused(memtype, runs):
    """Where the kernel cannot write-protect the backend, QEMU refuses, and the guest runs on."""
    lacks = _lacks(memtype)
    if lacks is None:
        # Not a declaration: a declaration names what a case needs, this case needs its
        # absence (test_qemu_background_snapshot is the same backend's case where it is there).
        pytest.skip(f"{NOT_APPLICABLE}this kernel write-protects {memtype}: "
                    f"test_qemu_background_snapshot[{memtype}] takes the snapshot")
    r = runs(memtype)
    assert r.refused is not None, (
        f"QEMU took a background snapshot of {memtype} RAM although the kernel lacks {lacks}; "
        f"restored: {r.restored}")
    assert r.passes_after > 0, "the guest stopped writing after QEMU refused the snapshot"


@uffd_test(mem=("anon",), timeout=TIMEOUT, needs=(QEMU, WRLAT_PID))
def test_qemu_wrlat_matches_writer(memtype, runs):
    """`uffdwp wrlat --pid QEMU` (bpftrace on handle_userfault) agrees with the guest writer's
    own rdtsc timings of the same snapshot: medians within a factor of two."""
    r = runs(memtype)
    assert r.wrlat is not None, r.wrlat_skipped
    assert r.wrlat["count"] > 0, "wrlat saw no wait in handle_userfault() during the snapshot"
    d = r.as_dict()["writer"]
    traced, own = r.wrlat["p50_us"], d["slowest_p50_us"]
    require(own is not None, "the guest writer never stalled on the snapshot",
            f"{d['added_count']} stalls added")
    assert 0.5 <= traced / own <= 2, (
        f"wrlat median {traced:.1f} us vs the writer's own {own:.1f} us "
        f"({r.wrlat['count']} waits traced, {d['added_count']} stalls the writer saw)")
