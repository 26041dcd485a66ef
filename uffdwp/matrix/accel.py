# SPDX-License-Identifier: GPL-2.0-only
"""Choose QEMU's accelerator: KVM only where a guest kernel really boots under it, TCG otherwise.

/dev/kvm existing is not enough: on PVM hosts (nested, no vmx/svm) it opens fine but Debian
kernels do not boot. So `auto` boots the first kernel with a two-line init under KVM and looks
for its marker; the answer is cached per host kernel in vms/cache/accel.json.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

from . import CACHE_DIR
from .debfetch import KernelFiles
from .initramfs import CpioWriter, find_busybox
from .qemu import QEMU, kill_group, spawn

PROBE_MARK = "uffdwp-kvm-probe-ok"
PROBE_TIMEOUT = 40.0
ACCELS = ("auto", "kvm", "tcg")


def kvm_openable() -> bool:
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    os.close(fd)
    return True


def probe_initramfs(path: Path) -> Path:
    w = CpioWriter()
    for d in ("bin", "dev", "proc"):
        w.dir(d)
    w.chardev("dev/console", 5, 1)
    w.file("bin/busybox", find_busybox().read_bytes(), 0o755)
    w.file("init", f"#!/bin/busybox sh\n/bin/busybox echo {PROBE_MARK}\n"
                   "/bin/busybox poweroff -f\n".encode(), 0o755)
    path.write_bytes(w.finish())
    return path


def kvm_boots(kernel: KernelFiles, timeout: float = PROBE_TIMEOUT) -> tuple[bool, str]:
    """Boot kernel under KVM with a marker-printing init; True if the marker shows up."""
    with tempfile.TemporaryDirectory(prefix="uffdwp-kvm-") as td:
        initrd = probe_initramfs(Path(td) / "probe.cpio")
        cmd = [QEMU, "-nodefaults", "-no-user-config", "-no-reboot", "-machine", "pc,accel=kvm",
               "-cpu", "host", "-m", "256", "-display", "none", "-serial", "stdio",
               "-kernel", str(kernel.vmlinuz), "-initrd", str(initrd),
               "-append", "console=ttyS0 panic=-1 rdinit=/init loglevel=1"]
        t0 = time.monotonic()
        proc = spawn(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                     stderr=subprocess.STDOUT)
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_group(proc)
            return False, f"no marker within {timeout:.0f} s under KVM"
        finally:
            kill_group(proc)
        text = out.decode(errors="replace")
        if PROBE_MARK in text:
            return True, f"{kernel.release} booted under KVM in {time.monotonic() - t0:.1f} s"
        last = " / ".join(text.strip().splitlines()[-2:])[-240:]
        return False, f"QEMU exit {proc.returncode} without marker: {last}"


def choose_accel(requested: str, kernel: KernelFiles | None,
                 cache_file: Path = CACHE_DIR / "accel.json") -> tuple[str, str]:
    """Return (accel, reason)."""
    if requested == "tcg":
        return "tcg", "requested"
    if not kvm_openable():
        if requested == "kvm":
            return "kvm", "requested, but /dev/kvm cannot be opened: guests will fail"
        return "tcg", "/dev/kvm missing or not openable"
    if requested == "kvm":
        return "kvm", "requested"
    if kernel is None:
        return "tcg", "no guest kernel to probe KVM with"
    key = f"{os.uname().release}|{kernel.release}"
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    if key not in cache:
        ok, why = kvm_boots(kernel)
        cache[key] = {"kvm": ok, "why": why}
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        cache_file.write_text(json.dumps(cache, indent=1))
    hit = cache[key]
    if hit["kvm"]:
        return "kvm", f"KVM boot probe passed ({hit['why']})"
    return "tcg", f"KVM boot probe failed ({hit['why']}): using TCG"
