# SPDX-License-Identifier: GPL-2.0-only
"""libvirtd and virtlogd for the Vagrant machines: started by hand where they are not running
(machines of this kind run no init system), with QEMU running as root, and stopped again by pid."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console

from . import WORK_DIR

LIBVIRT_URI = "qemu:///system"
VIRTLOGD_PIDFILE = Path("/run/uffdwp-virtlogd.pid")
LIBVIRTD_PIDFILE = Path("/run/uffdwp-libvirtd.pid")
PIDFILES = [VIRTLOGD_PIDFILE, LIBVIRTD_PIDFILE]  # in start order; stopped in reverse


def virsh(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["virsh", "-c", LIBVIRT_URI, *args], capture_output=True, text=True)


def libvirt_ready() -> bool:
    return shutil.which("virsh") is not None and virsh("-q", "version").returncode == 0


QEMU_CONF = Path("/etc/libvirt/qemu.conf")
ROOT_QEMU_CONF = WORK_DIR / "libvirt-qemu.conf"
_USER_LINE = re.compile(r"^\s*(user|group)\s*=")


def root_qemu_conf(original: str) -> str:
    """qemu.conf with QEMU run as root: the guest reads the host's / over 9p, and this checkout's
    python (a pyenv under /root, mode 0700) is out of reach of libvirt's default libvirt-qemu."""
    kept = [ln for ln in original.splitlines() if not _USER_LINE.match(ln)]
    return "\n".join([*kept, "# uffdwp: QEMU as root (9p share of the host's /)",
                      'user = "+0"', 'group = "+0"']) + "\n"


def qemu_runs_as_root(pid: int) -> bool:
    """Whether the libvirtd with this pid runs QEMU as root: its own view of qemu.conf (through
    /proc/PID/root, so a private bind mount counts) sets user = "+0", "0" or "root"."""
    try:
        text = Path(f"/proc/{pid}/root{QEMU_CONF}").read_text()
    except OSError:
        return False
    users = [ln.split("=", 1)[1].strip().strip('"') for ln in text.splitlines()
             if re.match(r"^\s*user\s*=", ln)]
    return bool(users) and users[-1] in ("+0", "0", "root")


def _pids(name: str) -> list[int]:
    p = subprocess.run(["pgrep", "-x", name], capture_output=True, text=True)
    return [int(x) for x in p.stdout.split()]


def ensure_libvirt(console: Console) -> list[Path]:
    """virtlogd and libvirtd started by hand when not running (machines of this kind run no init
    system). libvirtd is started in a private mount namespace where qemu.conf runs QEMU as root
    (see root_qemu_conf); /etc is left as it is. Returns the pid files of the daemons started
    here, for stop_libvirt()."""
    started = []
    if not _pids("virtlogd") and shutil.which("virtlogd"):
        pidfile = VIRTLOGD_PIDFILE
        console.print("starting virtlogd -d")
        if subprocess.run(["virtlogd", "-d", "-p", str(pidfile)]).returncode == 0:
            started.append(pidfile)
    running = _pids("libvirtd")
    if running:
        if not any(qemu_runs_as_root(p) for p in running):
            raise SystemExit(
                f"libvirtd (pid {running[0]}) runs QEMU as libvirt-qemu, which cannot read this "
                "checkout's python over 9p: stop it and let uffdwp start its own (python -m "
                f'uffdwp.matrix.libvirtd start), or set user = "+0" and group = "+0" in '
                f"{QEMU_CONF}")
    elif shutil.which("libvirtd"):
        pidfile = LIBVIRTD_PIDFILE
        ROOT_QEMU_CONF.parent.mkdir(parents=True, exist_ok=True)
        ROOT_QEMU_CONF.write_text(root_qemu_conf(QEMU_CONF.read_text()))
        os.chmod(ROOT_QEMU_CONF, 0o600)
        console.print("starting libvirtd -d (QEMU as root, private qemu.conf)")
        p = subprocess.run(
            ["unshare", "-m", "--propagation", "private", "sh", "-c",
             'mount --bind "$1" "$2" && exec libvirtd -d -p "$3"', "sh",
             str(ROOT_QEMU_CONF), str(QEMU_CONF), str(pidfile)])
        if p.returncode == 0:
            started.append(pidfile)
    for _ in range(100):
        if libvirt_ready():
            break
        time.sleep(0.1)
    return started


def stop_libvirt(pidfiles: list[Path] = PIDFILES, console: Console | None = None) -> None:
    """Stop the daemons ensure_libvirt() started (libvirtd before virtlogd), by their pids."""
    for pidfile in reversed(pidfiles):
        try:
            pid = int(pidfile.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
        try:
            os.kill(pid, 15)
            for _ in range(50):  # up to 5 s for it to go
                time.sleep(0.1)
                os.kill(pid, 0)
        except ProcessLookupError:
            pass
        (console or Console()).print(f"stopped {pidfile.stem.removeprefix('uffdwp-')} (pid {pid})")
        pidfile.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m uffdwp.matrix.libvirtd",
        description="Start libvirtd and virtlogd for uffdwp's Vagrant machines where they are not "
                    "running (QEMU as root), or stop the ones started so.")
    parser.add_argument("action", choices=("start", "stop"))
    parser.add_argument("--force", action="store_true",
                        help="stop even while machines run (they go on running, out of "
                             "Vagrant's reach until libvirtd is started again)")
    args = parser.parse_args(argv)
    console = Console(highlight=False)
    if args.action == "stop":
        running = virsh("list", "--name").stdout.split() if libvirt_ready() else []
        if running and not args.force:
            console.print(f"libvirtd not stopped: machines running ({', '.join(running)}); "
                          "vagrant destroy them first, or --force")
            return 1
        stop_libvirt(PIDFILES, console)
        return 0
    started = ensure_libvirt(console)
    if not libvirt_ready():
        console.print(f"libvirt not reachable at {LIBVIRT_URI}")
        return 1
    pids = ", ".join(f"{p.stem.removeprefix('uffdwp-')} {p.read_text().split()[0]}"
                     for p in started if p.exists())
    console.print(f"libvirt ready at {LIBVIRT_URI}" + (f" (started: {pids})" if pids else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
