# SPDX-License-Identifier: GPL-2.0-only
"""SIGTERM or SIGINT to `uffdwp matrix` while a guest runs: the guests are stopped at once (within
5 s), the report is written for what finished (the running kernel marked interrupted), and
nothing is left running. Run as a user would, in a child process."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .childproc import ROOT

STOP_WITHIN = 5.0  # seconds from the signal to the matrix's exit, guests included
# A guest command that outlives any test, and names the report directory on its command line
# (so the test can find it, or what is left of it, among all processes).
LONG_GUEST = "{repo}/.venv/bin/python -c 'import time; time.sleep(600)' {out}"


def _processes_naming(text: str) -> list[str]:
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline:
            found.append(f"{pid}: {cmdline[:200]}")
    return found


def _cached_kernel() -> bool:
    """Whether the matrix already fetched a Debian 6.1 kernel into vms/cache (a test downloads
    nothing)."""
    return any((ROOT / "vms" / "cache" / "kernels").glob("linux-image-6.1.*/boot/vmlinuz-*"))


def _matrix(report: Path, *argv: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "uffdwp", "matrix", "--report", str(report), "--timeout", "120",
         "--guest-command", LONG_GUEST, *argv],
        cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _kill_everything(proc: subprocess.Popen) -> None:
    """The matrix and the guests it started (in sessions of their own): a failed test leaves
    nothing running either."""
    report = next(a for a in proc.args if "report" in a and a.startswith("/"))
    left = _processes_naming(report)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    for line in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(line.split(":", 1)[0]), signal.SIGKILL)


def _wait_for(what: str, cond, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if proc.poll() is not None or time.monotonic() > deadline:
            _kill_everything(proc)
            out = proc.communicate()[0]
            pytest.fail(f"{what} never happened (exit {proc.returncode}):\n{out[-2000:]}")
        time.sleep(0.2)


def _stop_and_check(proc: subprocess.Popen, report: Path, sig: signal.Signals,
                    kernel: str) -> dict:
    t0 = time.monotonic()
    proc.send_signal(sig)
    try:
        out = proc.communicate(timeout=STOP_WITHIN)[0]
    except subprocess.TimeoutExpired:
        left = _processes_naming(str(report))
        _kill_everything(proc)
        proc.communicate()
        pytest.fail(f"uffdwp matrix still running {STOP_WITHIN} s after {sig.name}; "
                    f"still running: {left}")
    took = time.monotonic() - t0
    assert proc.returncode == 130, out[-2000:]
    assert not _processes_naming(str(report)), "guests left running after the matrix ended"
    assert "interrupted" in out, out[-2000:]
    summary = json.loads((report / "summary.json").read_text())
    statuses = {k["name"]: k["status"] for k in summary["kernels"]}
    assert statuses == {kernel: "interrupted"}, summary
    assert not summary["ok"] and summary["interrupted"] == sig.name
    assert (report / "report.html").is_file() and (report / "report.md").is_file()
    print(f"{sig.name}: matrix ended {took:.2f} s after the signal")
    return summary


@pytest.mark.timeout(90)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_a_direct_guest_and_writes_the_report(tmp_path, sig):
    """The `host` entry runs the guest command on this machine (no VM): the same stop."""
    report = tmp_path / "report"
    proc = _matrix(report, "--kernels", "host")
    _wait_for("the guest command starting",
              lambda: _processes_naming(f"time.sleep(600) {report}"), proc, 60)
    _stop_and_check(proc, report, sig, "host")


@pytest.mark.timeout(120)
def test_sigterm_kills_the_qemu_guest_and_writes_the_report(tmp_path):
    if not _cached_kernel():
        pytest.skip("no Debian 6.1 kernel in vms/cache/kernels (`uffdwp matrix --kernels 6.1` "
                    "fetches one): no guest to boot without a download")
    report = tmp_path / "report"
    proc = _matrix(report, "--kernels", "6.1", "--accel", "tcg")
    _wait_for("QEMU starting", lambda: any("qemu-system" in p for p in
                                           _processes_naming(str(report))), proc, 90)
    time.sleep(2)  # QEMU is booting the guest
    summary = _stop_and_check(proc, report, signal.SIGTERM, "6.1")
    assert summary["kernels"][0]["via"] == "qemu"
