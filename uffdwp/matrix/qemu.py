# SPDX-License-Identifier: GPL-2.0-only
"""Boot one kernel under QEMU (direct kernel boot) and run the guest command in it.

The guest's root is the host's / over virtio-9p (read-only) under a tmpfs overlay, so the repo,
its .venv and the interpreter are used in place; results come back through a second, writable 9p
share of the per-kernel output directory. QEMU runs in its own process group, which is killed on
timeout or interrupt: nothing is left running, and nothing is ever mounted on the host.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import WORK_DIR
from .guestcmd import read_exit_status

QEMU = "qemu-system-x86_64"
# panic=-1 + -no-reboot: a panicking guest ends QEMU at once instead of hanging until the timeout
KERNEL_ARGS = (
    "console=ttyS0,115200 panic=-1 rdinit=/init loglevel=4 random.trust_cpu=on "
    "mitigations=off nokaslr"
)
# The guest's clock. Under TCG the TSC is calibrated against the emulated PIT, which a loaded
# host delays: a guest measured 338 MHz for a 2596 MHz TSC and its clock ran ~7x fast, so every
# timeout in the suites fired early. The emulated HPET follows the host's clock: use it.
# (KVM guests have kvm-clock; there the TSC is trusted, as before.)
CLOCK_ARGS = {"tcg": "clocksource=hpet tsc=unstable", "kvm": "tsc=reliable"}
MARK_ROOT = "uffdwp-guest: root ready"
MARK_RUN = "uffdwp-guest: running suites"


@dataclass
class BootResult:
    status: str  # ok | failed | boot-failed | timeout
    exit_status: int | None
    seconds: float
    detail: str = ""
    phases: dict[str, float] = field(default_factory=dict)


def numa_args(memory_mib: int, nodes: int, cpus: int) -> list[str]:
    """QEMU options for *nodes* NUMA nodes sharing the memory (the CPUs on node 0): the guest
    can then migrate pages between nodes (move_pages, THP migration entries)."""
    if nodes <= 1:
        return []
    size = memory_mib // nodes
    args: list[str] = []
    for n in range(nodes):
        args += ["-object", f"memory-backend-ram,id=mem{n},size={size}M",
                 "-numa", f"node,nodeid={n},memdev=mem{n}"
                 + (f",cpus=0-{cpus - 1}" if n == 0 else "")]
    return args


def qemu_command(vmlinuz: Path, initrd: Path, out: Path, accel: str, memory_mib: int = 2048,
                 cpus: int = 1, scratch: Path | None = None, extra_append: str = "",
                 numa_nodes: int = 1) -> list[str]:
    cpu = "host" if accel == "kvm" else "max"
    cmd = [
        QEMU, "-nodefaults", "-no-user-config", "-no-reboot",
        "-machine", f"pc,accel={accel}", "-cpu", cpu, "-smp", str(cpus), "-m", str(memory_mib),
        "-display", "none", "-serial", "stdio",
        "-kernel", str(vmlinuz), "-initrd", str(initrd),
        "-append", f"{KERNEL_ARGS} {CLOCK_ARGS.get(accel, '')} {extra_append}".strip(),
        # multidevs=remap: / spans several host file systems; keeps inode numbers unique
        "-fsdev", "local,id=hostroot,path=/,security_model=none,readonly=on,multidevs=remap",
        "-device", "virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot",
        "-fsdev", f"local,id=out,path={out},security_model=none,multidevs=remap",
        "-device", "virtio-9p-pci,fsdev=out,mount_tag=out",
        "-device", "virtio-rng-pci",
        *numa_args(memory_mib, numa_nodes, cpus),
    ]
    if scratch is not None:
        cmd += ["-drive", f"file={scratch},if=virtio,format=raw,cache=unsafe"]
    return cmd


def make_scratch(path: Path, size: str = "4G") -> Path | None:
    """A sparse ext4 image for the guest's /uffdwp-scratch (swap files need a real block device)."""
    if not shutil.which("mkfs.ext4"):
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    subprocess.run(["truncate", "-s", size, str(path)], check=True)
    p = subprocess.run(["mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=1,lazy_journal_init=1",
                        str(path)], capture_output=True)
    if p.returncode != 0:
        path.unlink(missing_ok=True)
        return None
    return path


# every process group we started and have not reaped yet: kill_all() ends them on interrupt
LIVE: set[subprocess.Popen] = set()
_LIVE_LOCK = threading.Lock()
# Set by an interrupt of the matrix: running guests end now, and none starts any more.
STOP = threading.Event()
STOP_GRACE = 2.0  # seconds QEMU gets to exit on SIGTERM after an interrupt before SIGKILL


def spawn(cmd: list[str], **kw) -> subprocess.Popen:
    """Popen in a new session (own process group), registered in LIVE."""
    proc = subprocess.Popen(cmd, start_new_session=True, **kw)
    with _LIVE_LOCK:
        LIVE.add(proc)
    if STOP.is_set():  # started just as the matrix was interrupted: stop_all did not see it
        kill_group(proc, grace=0)
    return proc


def kill_all() -> None:
    with _LIVE_LOCK:
        procs = list(LIVE)
    for p in procs:
        kill_group(p)


def stop_all() -> None:
    """An interrupt: no guest starts any more, and every running one ends within STOP_GRACE
    seconds (all signalled at once, not one after the other)."""
    STOP.set()
    with _LIVE_LOCK:
        procs = list(LIVE)
    for p in procs:
        _signal_group(p, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE
    for p in procs:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for p in procs:
        kill_group(p, grace=0)


def kill_group(proc: subprocess.Popen, grace: float = 5) -> None:
    """End a whole process group: TERM, then KILL if it lingers *grace* seconds (KILL at once
    for 0)."""
    try:
        _kill_group(proc, grace)
    finally:
        if proc.poll() is not None:
            with _LIVE_LOCK:
                LIVE.discard(proc)


def _signal_group(proc: subprocess.Popen, sig: signal.Signals) -> bool:
    """False if the group is gone. Also after the leader exited: its children may live on."""
    try:
        os.killpg(proc.pid, sig)
        return True
    except ProcessLookupError:
        return False


def _kill_group(proc: subprocess.Popen, grace: float) -> None:
    steps = ((signal.SIGTERM, grace), (signal.SIGKILL, 10)) if grace else ((signal.SIGKILL, 10),)
    if proc.poll() is not None:
        _signal_group(proc, signal.SIGKILL)  # what the leader left behind in its group
        return
    for sig, wait in steps:
        if not _signal_group(proc, sig):
            return
        try:
            proc.wait(timeout=wait)
            _signal_group(proc, signal.SIGKILL)
            return
        except subprocess.TimeoutExpired:
            continue


def boot(name: str, vmlinuz: Path, initrd: Path, out: Path, accel: str, timeout: float,
         memory_mib: int = 2048, cpus: int = 1, on_phase=None, numa_nodes: int = 1) -> BootResult:
    """Boot, wait for the guest to power off (or the timeout), classify the outcome.

    on_phase(text) is called with each "uffdwp-guest:" marker line as it appears."""
    console = out / "console.log"
    if STOP.is_set():
        return BootResult("interrupted", None, 0.0, "not started: the matrix was interrupted")
    scratch = make_scratch(WORK_DIR / f"scratch-{name}-{os.getpid()}.raw")
    cmd = qemu_command(vmlinuz, initrd, out, accel, memory_mib, cpus, scratch,
                       numa_nodes=numa_nodes)
    (out / ".guest" / "qemu.cmd").write_text(" ".join(cmd) + "\n")
    t0 = time.monotonic()
    phases: dict[str, float] = {}
    timed_out = False
    with open(console, "wb") as con, open(out / ".guest" / "qemu.stderr", "wb") as err:
        proc = spawn(cmd, stdin=subprocess.DEVNULL, stdout=con, stderr=err)
        try:
            seen = 0
            while proc.poll() is None and not STOP.is_set():
                if time.monotonic() - t0 > timeout:
                    timed_out = True
                    break
                STOP.wait(0.5)
                seen = _scan_markers(console, seen, phases, t0, on_phase)
            _scan_markers(console, seen, phases, t0, on_phase)
        finally:
            kill_group(proc)
            if scratch is not None:
                scratch.unlink(missing_ok=True)
    secs = time.monotonic() - t0
    rc = read_exit_status(out)
    text = console.read_text(errors="replace")
    if timed_out:
        return BootResult("timeout", rc, secs, f"killed after {timeout:.0f} s", phases)
    if STOP.is_set() and rc is None:
        return BootResult("interrupted", rc, secs, f"stopped after {secs:.0f} s: the matrix "
                          "was interrupted", phases)
    if MARK_ROOT not in text:
        tail = "\n".join(text.strip().splitlines()[-5:])
        return BootResult("boot-failed", rc, secs,
                          f"guest never reached its root (qemu exit {proc.returncode}):\n{tail}",
                          phases)
    if rc is None:
        return BootResult("failed", None, secs, "guest command left no exit status", phases)
    return BootResult("ok" if rc == 0 else "failed", rc, secs, "", phases)


def _scan_markers(console: Path, seen: int, phases: dict[str, float], t0: float,
                  on_phase) -> int:
    """Read new console bytes from offset seen; note marker lines. Returns the new offset."""
    try:
        with open(console, "rb") as f:
            f.seek(seen)
            chunk = f.read()
    except OSError:
        return seen
    # only consume complete lines so a marker split across reads is not lost
    end = chunk.rfind(b"\n") + 1
    for line in chunk[:end].decode(errors="replace").splitlines():
        if "uffdwp-guest:" in line:
            msg = line.split("uffdwp-guest:", 1)[1].strip()
            phases.setdefault(msg, round(time.monotonic() - t0, 1))
            if on_phase:
                on_phase(msg)
    return seen + end
