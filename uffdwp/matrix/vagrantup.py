# SPDX-License-Identifier: GPL-2.0-only
"""What a Vagrant machine needs before `vagrant up` creates it; the Vagrantfile's before-up trigger
runs `python -m uffdwp.matrix.vagrantup KERNEL`.

It fetches the kernel from the catalogue (as `uffdwp matrix` does), builds its initramfs, chooses
the accelerator, starts libvirtd/virtlogd where they are not running, and writes
vms/work/vagrant/KERNEL.json (vmlinuz, initrd, accel), which the Vagrantfile applies to the machine.
UFFDWP_VAGRANT_ACCEL (auto, kvm, tcg) overrides the accelerator (`uffdwp matrix --via vagrant
--accel`).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import sys
from pathlib import Path

from rich.console import Console

from . import WORK_DIR
from .accel import ACCELS, choose_accel
from .catalogue import CatalogueError, load_catalogue, select
from .libvirtd import LIBVIRT_URI, ensure_libvirt, libvirt_ready
from .runner import prepare

MACHINES_DIR = WORK_DIR / "vagrant"
ACCEL_ENV = "UFFDWP_VAGRANT_ACCEL"


class MachineError(RuntimeError):
    """The machine cannot be prepared; the message says why and what to do."""


def machine_file(kernel: str) -> Path:
    return MACHINES_DIR / f"{kernel}.json"


def prepare_machine(kernel: str, accel: str = "auto", log=print) -> dict:
    """Fetch and unpack the kernel, build its initramfs, choose the accelerator; write and return
    the machine's spec."""
    try:
        (spec,) = select(load_catalogue(), kernel)
    except (CatalogueError, OSError) as e:
        raise MachineError(str(e)) from e
    target = prepare(spec, log)
    if target.error:
        raise MachineError(f"kernel {kernel}: {target.error}")
    if target.via != "qemu" or target.kernel is None or target.initrd is None:
        raise MachineError(f"kernel {kernel}: {target.note or 'no bootable kernel image'}")
    acc, why = choose_accel(accel, target.kernel)
    machine = {"kernel": kernel, "release": target.kernel.release,
               "package": target.kernel.package, "version": target.kernel.version,
               "vmlinuz": str(target.kernel.vmlinuz), "initrd": str(target.initrd),
               "accel": acc, "accel_reason": why}
    path = machine_file(kernel)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(machine, indent=1) + "\n")
    tmp.replace(path)
    return machine


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m uffdwp.matrix.vagrantup",
        description="Prepare a Vagrant machine's kernel (run by the Vagrantfile before `vagrant "
                    "up`).", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("kernel", help="catalogue name (vms/kernels.cfg)")
    parser.add_argument("--accel", choices=ACCELS, default=os.environ.get(ACCEL_ENV, "auto"),
                        help=f"QEMU accelerator (environment: {ACCEL_ENV})")
    args = parser.parse_args(argv)
    console = Console(highlight=False)
    MACHINES_DIR.mkdir(parents=True, exist_ok=True)
    # `vagrant up` brings machines up side by side: one preparation (and libvirtd start) at a time
    with open(MACHINES_DIR / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            m = prepare_machine(args.kernel, args.accel, log=console.print)
        except MachineError as e:
            console.print(f"uffdwp: {e}")
            return 1
        ensure_libvirt(console)
    if not libvirt_ready():
        console.print(f"uffdwp: libvirt is not reachable at {LIBVIRT_URI}: is libvirtd running?")
        return 1
    console.print(f"uffdwp: {args.kernel}: {m['package'] or 'kernel'} {m['version']} "
                  f"({m['release']}), accel {m['accel']} ({m['accel_reason']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
