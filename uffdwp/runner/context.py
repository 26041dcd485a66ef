# SPDX-License-Identifier: GPL-2.0-only
"""What a run ran on and with, for the reports: the kernel's distribution package, the machine
(bare metal, KVM or QEMU's TCG emulation) and the suite's own version and commit.

Each value says how it was found; where nothing tells, the value is left out rather than guessed.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from .. import __version__, tree

# Debian's uname -v names the package version: "#1 SMP PREEMPT_DYNAMIC Debian 6.1.158-1 (...)".
_DEBIAN = re.compile(r"\bDebian (\d+\.\d+\.\d+\S*)")
# Ubuntu's /proc/version_signature: "Ubuntu 5.15.0-91.101-generic 5.15.131".
_UBUNTU = re.compile(r"^Ubuntu (\S+?)-[a-z][\w-]*\s+(\d+\.\d+\.\d+)")


def kernel_package(release: str, version: str, signature: str = "") -> dict[str, str]:
    """{"distro", "package", "package_version", "upstream"} of a distribution kernel, {} for a
    kernel built from a tree (or a distribution we cannot tell)."""
    d = _DEBIAN.search(version or "")
    if d:
        return {"distro": "debian", "package": f"linux-image-{release}",
                "package_version": d.group(1), "upstream": d.group(1).split("-", 1)[0]}
    u = _UBUNTU.match(signature or "")
    if u:
        return {"distro": "ubuntu", "package": f"linux-image-{release}",
                "package_version": u.group(1), "upstream": u.group(2)}
    return {}


def _read(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


def accel(cpuinfo: str | None = None, clocksources: str | None = None) -> tuple[str, str]:
    """(accel, evidence): "tcg" (QEMU emulating the CPU), "kvm" (a KVM guest), "none" (no
    hypervisor) or "unknown"."""
    cpuinfo = _read("/proc/cpuinfo") if cpuinfo is None else cpuinfo
    if clocksources is None:
        clocksources = _read("/sys/devices/system/clocksource/clocksource0/"
                             "available_clocksource")
    model = next((ln.split(":", 1)[1].strip() for ln in cpuinfo.splitlines()
                  if ln.startswith("model name")), "")
    flags = next((ln.split(":", 1)[1].split() for ln in cpuinfo.splitlines()
                  if ln.startswith("flags")), [])
    if "TCG" in model:
        return "tcg", f"CPU model {model!r}"
    if "kvm-clock" in clocksources.split():
        return "kvm", "kvm-clock clock source"
    if flags and "hypervisor" not in flags:
        return "none", "no hypervisor CPU flag"
    return "unknown", "hypervisor CPU flag, but neither TCG's CPU model nor kvm-clock"


def suite_commit(root: Path) -> str:
    """The git commit of the suite's checkout ("+dirty" when it has changes), "" outside git."""
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=20)
        if head.returncode != 0:
            return ""
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain",
                                "--untracked-files=no"], capture_output=True, text=True,
                               timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def suite() -> dict[str, str]:
    """The suite's name, version and commit (none for an installed wheel: whatever git tree
    its venv sits in is not the suite's)."""
    commit = suite_commit(tree.ROOT) if tree.IN_CHECKOUT else ""
    return {"name": "uffdwp", "version": __version__, "commit": commit}
