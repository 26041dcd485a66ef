# SPDX-License-Identifier: GPL-2.0-only
"""`uffdwp wrlat --pid` traces handle_userfault() in the kernel, and agrees with the writers.

`uffdwp snapshot demo` is started held (a shell waiting on its stdin, then exec'ing the demo,
so its PID is known before it runs), wrlat attaches to that PID, the demo runs, and wrlat ends
when it exits. The demo's native writers time every store themselves: the median of their N
longest stalls (N = the waits wrlat counted) must be within a factor of two of the median wrlat
measured in the kernel. Needs kprobes (Debian's
kernels have them; where they are missing the test says so in one line and skips).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from uffdwp.bench import wrlat
from uffdwp.native import percentile
from uffdwp.qemusnap.scenario import WrlatProcess, save_artifact
from uffdwp.runner.precondition import require

from .uffdtest import STRESS_SCALE, uffd_test

# On an emulated CPU a writer at full speed starves the engine of the one vCPU (as in
# test_snapshot.py); the waits measured are then the scheduler's, on both sides alike.
WRITE_RATE = "max" if STRESS_SCALE >= 1 else "20000"
TIMEOUT = 120 if STRESS_SCALE >= 1 else 1200


@uffd_test(mem=("anon",), timeout=TIMEOUT)
def test_wrlat_pid_matches_demo_writers(memtype, tmp_path):
    why = wrlat.kprobe_support()
    if why:
        pytest.skip(f"wrlat --pid: {why}")
    stats = tmp_path / "stats.json"
    demo_cmd = (f'read _ && exec "$0" -m uffdwp snapshot demo --size 32M --writers 1 '
                f'--write-rate {WRITE_RATE} --memtype {memtype} --to file:{tmp_path}/demo.img '
                f'--stats-json {stats} --no-verify --no-progress')
    demo = subprocess.Popen(["sh", "-c", demo_cmd, sys.executable], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    tracer = WrlatProcess(demo.pid, tmp_path / "wrlat.log")
    try:
        tracer.start(TIMEOUT / 2)
        out, _ = demo.communicate("\n", timeout=TIMEOUT / 2)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    traced = tracer.stop(wait_exit=TIMEOUT / 4)  # wrlat ends with the demo
    assert demo.returncode == 0, f"snapshot demo failed: {out[-500:]}"
    stalls, _ = wrlat.stalls_from_stats(stats)
    # The same events on both sides: the writers' N longest stalls, N = the waits wrlat counted
    # (the writers also stall >= 1 us for other reasons: minor faults, interrupts, preemption).
    top = sorted(stalls)[-traced["count"]:] if traced["count"] else []
    own = {"count": len(stalls), "p50_us": percentile(stalls, 0.5) / 1000 if stalls else None,
           "slowest_n": len(top), "p50_us_slowest_n": percentile(top, 0.5) / 1000 if top else None,
           "histogram_us": wrlat.log2_histogram_us(top)}
    save_artifact({"wrlat": traced, "writers": own, "demo": out[-2000:]}, "wrlat-demo.json")
    # writers that never stalled on a WP fault (a slow machine) gave wrlat nothing to see
    require(bool(stalls), "writers never stalled on a WP fault during the demo")
    assert traced["count"] > 0, "wrlat saw no wait in handle_userfault() of the demo"
    ratio = traced["p50_us"] / own["p50_us_slowest_n"]
    assert 0.5 <= ratio <= 2, (
        f"wrlat median {traced['p50_us']:.1f} us ({traced['count']} waits) vs the writers' own "
        f"{own['p50_us_slowest_n']:.1f} us (their {len(top)} longest of {len(stalls)} stalls)")
