# SPDX-License-Identifier: GPL-2.0-only
"""Named capabilities of the host that a test declares it needs (``@uffd_test(needs=...)``).

Most of what a test needs is a feature bit of the UFFDIO_API handshake (uffdtest.py). These have
none: each is probed here, once per process, and the probe answers None (present) or the skip
reason. A release named in a reason comes from uffdwp.kernel_facts: it is stated there only.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import mmap
import os
import stat
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from uffdwp import hostsetup, pagemap
from uffdwp import kernel_facts as kf
from uffdwp.errors import UffdError
from uffdwp.memory import MADV_COLLAPSE, PAGE_SIZE, THP_SIZE, allocate
from uffdwp.uffd import DEV_USERFAULTFD, Userfaultfd, open_syscall_raw

from .observe import pagemap_reports_wp

THP_ENABLED = Path("/sys/kernel/mm/transparent_hugepage/enabled")
SYSCTL_PATH = Path("/proc/sys/vm/unprivileged_userfaultfd")
# Stress sizes shrink where the CPU is emulated (the matrix sets this in TCG guests): the
# checks stay the same, only the amount of work changes; timing tests need a native CPU.
STRESS_SCALE = float(os.environ.get("UFFDWP_STRESS_SCALE", "1"))


def _since(name: str) -> str:
    return f"mainline {kf.fact(name).since}"


@dataclass(frozen=True)
class Capability:
    """A property of the host with no feature bit. *probe* returns None where the host has it,
    else why not; *detail* (``because()``) says what a test cannot do without it."""

    name: str
    probe: Callable[[], str | None]
    detail: str = ""

    def missing(self) -> str | None:
        """The skip reason where this host lacks it, None where it has it."""
        why = _probed(self.probe)
        return f"{why}: {self.detail}" if why and self.detail else why

    def because(self, detail: str) -> Capability:
        """The same capability, its skip reason followed by *detail*."""
        return replace(self, detail=detail)


@functools.cache
def _probed(probe: Callable[[], str | None]) -> str | None:
    return probe()


def _pagemap_wp() -> str | None:
    if pagemap_reports_wp():
        return None
    return (f"pagemap bit 57 (PM_UFFD_WP, {_since('PM_UFFD_WP')}) absent on this kernel: this "
            "test checks the bit itself")


def _user_mode_only() -> str | None:
    # No feature bit: kernels before it reject the open flag with EINVAL.
    fd = open_syscall_raw(os.O_CLOEXEC | kf.UFFD_USER_MODE_ONLY)
    if fd >= 0:
        os.close(fd)
    if fd != -errno.EINVAL:
        return None
    return (f"open flag UFFD_USER_MODE_ONLY ({_since('UFFD_USER_MODE_ONLY')}) rejected with "
            "EINVAL by this kernel")


def _pagemap_scan() -> str | None:
    if pagemap.scan_raw(start=0, end=0)[0] != -errno.ENOTTY:
        return None
    return f"PAGEMAP_SCAN ({_since('PAGEMAP_SCAN')}) absent on this kernel: ENOTTY"


def _continue_mode_wp() -> str | None:
    # On a range no userfaultfd registered, a kernel that knows the mode answers ENOENT (no
    # such registration); one that does not rejects the mode first, with EINVAL.
    with allocate("anon", pages=1) as region, Userfaultfd.create(0) as uffd:
        try:
            uffd.continue_(region.address, region.length, wp=True)
        except UffdError as exc:
            if exc.errno == errno.EINVAL:
                return (f"UFFDIO_CONTINUE_MODE_WP ({_since('UFFDIO_CONTINUE_MODE_WP')}) "
                        "rejected with EINVAL by this kernel")
    return None


def _thp() -> str | None:
    try:
        mode = THP_ENABLED.read_text()
    except OSError:
        return "no transparent huge pages (CONFIG_TRANSPARENT_HUGEPAGE off)"
    return f"THP disabled ({THP_ENABLED}: never)" if "[never]" in mode else None


def _collapse() -> str | None:
    # the control: an unregistered, populated, PMD-aligned range collapses
    with allocate("anon", THP_SIZE, align=THP_SIZE) as region:
        region.fill(1)
        try:
            region.madvise(MADV_COLLAPSE)
        except OSError as exc:
            return (f"MADV_COLLAPSE ({_since('MADV_COLLAPSE')}) does not work on an unregistered "
                    f"range here: {exc}")
    return None


def _mthp() -> str | None:
    if list(THP_ENABLED.parent.glob("hugepages-*kB/enabled")):
        return None
    return f"no mTHP sysfs knobs (transparent_hugepage/hugepages-*kB, {_since('mTHP sysfs')})"


def numa_nodes() -> list[int]:
    """The online NUMA nodes ([0] where the kernel does not say)."""
    try:
        text = Path("/sys/devices/system/node/online").read_text().strip()
    except OSError:
        return [0]
    nodes: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        nodes += range(int(lo), int(hi or lo) + 1)
    return nodes


def _numa() -> str | None:
    # move_pages() is called through ctypes with x86-64's syscall number
    ok = len(numa_nodes()) >= 2 and os.uname().machine == "x86_64"
    return None if ok else "a single NUMA node"


def _present(path: Path, fact: str) -> Callable[[], str | None]:
    def probe() -> str | None:
        return None if path.exists() else f"{fact} ({_since(fact)}) absent on this kernel"
    return probe


def _fstype(path: Path) -> str:
    """The filesystem type of the mount holding *path* (for skip reasons)."""
    best, fstype = "", "?"
    with open("/proc/self/mounts") as f:
        for line in f:
            fields = line.split()
            mnt = fields[1]
            inside = str(path).startswith(mnt.rstrip("/") + "/") or str(path) == mnt
            if inside and len(mnt) > len(best):
                best, fstype = mnt, fields[2]
    return fstype


def _odirect() -> str | None:
    # tmpfs before 6.6 rejects O_DIRECT: a guest's /var/tmp is one
    where = hostsetup.SCRATCH_DIR
    fd, path = tempfile.mkstemp(prefix="uffdwp-odirect-", dir=where)
    os.unlink(path)
    probe = mmap.mmap(-1, PAGE_SIZE)  # page-aligned, as O_DIRECT wants
    try:
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_DIRECT)
        os.write(fd, probe)
    except OSError as exc:
        return f"no O_DIRECT writes on {where} ({_fstype(where)}) to pin pages with: {exc}"
    finally:
        os.close(fd)
        probe.close()
    return None


def _device_usable() -> str | None:
    try:
        Userfaultfd.open(via="dev").close()
    except UffdError as exc:
        if exc.errno in (errno.ENOENT, errno.EACCES, errno.EPERM):
            return f"/dev/userfaultfd unusable here: {exc}"
        raise
    return None


def _wrlat_pid() -> str | None:
    from uffdwp.bench import wrlat  # (bpftrace and kprobes: only where a test asks)

    why = wrlat.kprobe_support()
    return f"wrlat --pid: {why}" if why else None


def _qemu() -> str | None:
    from uffdwp.qemusnap import bootblock
    from uffdwp.qemusnap.vm import qemu_missing, qemu_version

    why = qemu_missing()
    if why:
        return why
    if qemu_version() < (6, 0, 0):
        return f"QEMU {qemu_version()} predates the background-snapshot capability (6.0)"
    if bootblock.missing_tools():
        return f"{', '.join(bootblock.missing_tools())} not found: cannot assemble the guest"
    return None


def _device_default_mode() -> str | None:
    st = os.stat(DEV_USERFAULTFD)
    if st.st_uid != 0 or stat.S_IMODE(st.st_mode) & 0o066:
        return (f"/dev/userfaultfd permissions changed here "
                f"(uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):o})")
    return None


def _native_cpu() -> str | None:
    return "an emulated CPU" if STRESS_SCALE < 1 else None


PAGEMAP_WP = Capability("pagemap uffd-wp bit", _pagemap_wp)
USER_MODE_ONLY = Capability("UFFD_USER_MODE_ONLY", _user_mode_only)
PAGEMAP_SCAN = Capability("PAGEMAP_SCAN", _pagemap_scan)
CONTINUE_MODE_WP = Capability("UFFDIO_CONTINUE_MODE_WP", _continue_mode_wp)
SWAP = Capability("swap", hostsetup.ensure_swap)  # activates the shared swap file (hostsetup)
NUMA = Capability("two NUMA nodes", _numa)
THP = Capability("transparent huge pages", _thp)
MTHP = Capability("mTHP sysfs", _mthp)
COLLAPSE = Capability("MADV_COLLAPSE", _collapse)
DEVICE = Capability("/dev/userfaultfd", _present(Path(DEV_USERFAULTFD), "/dev/userfaultfd"))
# after DEVICE in a declaration: the device is there with its default mode (0600, root)
DEVICE_DEFAULT_MODE = Capability("/dev/userfaultfd mode 0600 root", _device_default_mode)
DEVICE_USABLE = Capability("/dev/userfaultfd opens", _device_usable)
UNPRIV_SYSCTL = Capability("vm.unprivileged_userfaultfd",
                           _present(SYSCTL_PATH, "vm.unprivileged_userfaultfd"))
ODIRECT = Capability("O_DIRECT on the scratch disk", _odirect)
WRLAT_PID = Capability("wrlat --pid (kprobes)", _wrlat_pid)
QEMU = Capability("QEMU with background snapshots", _qemu)
NATIVE_CPU = Capability("a native CPU", _native_cpu)  # UFFDWP_STRESS_SCALE < 1: emulated


def root(reason: str) -> Capability:
    """Root, for the reason a test says (its skip reason elsewhere)."""
    return Capability(f"root: {reason}", functools.partial(_root, reason))


def _root(reason: str) -> str | None:
    return None if os.geteuid() == 0 else reason
