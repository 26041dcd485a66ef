# SPDX-License-Identifier: GPL-2.0-only
"""Run the guest command directly on this machine's kernel (the `host` entry, when the running
kernel has no bootable image here): same run.sh as in a VM, same result layout."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from .guestcmd import read_exit_status
from .qemu import STOP, BootResult, kill_group, spawn


def run_direct(out: Path, run_sh: Path, timeout: float, on_phase=None) -> BootResult:
    note = "not root: the suites' root-only tests will skip or fail" if os.geteuid() else ""
    t0 = time.monotonic()
    if STOP.is_set():
        return BootResult("interrupted", None, 0.0, "not started: the matrix was interrupted")
    if on_phase:
        on_phase("running suites on the host kernel")
    with open(out / "console.log", "wb") as con:
        proc = spawn(["/bin/sh", str(run_sh)], stdin=subprocess.DEVNULL, stdout=con,
                     stderr=subprocess.STDOUT)
        try:
            while proc.poll() is None and not STOP.is_set():  # an interrupt ends it at once
                if time.monotonic() - t0 > timeout:
                    break
                STOP.wait(0.2)
            timed_out = proc.poll() is None and not STOP.is_set()
        finally:
            kill_group(proc)
    secs = time.monotonic() - t0
    rc = read_exit_status(out)
    if timed_out:
        return BootResult("timeout", rc, secs, f"killed after {timeout:.0f} s")
    if STOP.is_set() and rc is None:
        return BootResult("interrupted", rc, secs, f"stopped after {secs:.0f} s: the matrix "
                          "was interrupted")
    if rc is None:
        rc = proc.returncode
    return BootResult("ok" if rc == 0 else "failed", rc, secs, note)
