"""`uffdwp matrix --via vagrant`: the same guests through Vagrant (vagrant-libvirt) with
python-vagrant. Lowest-priority runner: QEMU direct boot is the default and the faster one.

Per kernel: the kernel is fetched and its initramfs built as for QEMU; vms/work/
vagrant-kernels.json tells the Vagrantfile which kernel/initrd/port/output dir each machine uses;
`vagrant up`, then `vagrant ssh -c 'sudo uffdwp-vagrant-run'` runs the suites through the same
.guest/run.sh, `vagrant destroy -f` afterwards (also on failure or timeout).
Needs: ci/install-matrix-deps.sh --vagrant, libvirtd + virtlogd running, vms/build-box.sh.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

from rich.console import Console

from . import REPO_ROOT
from .accel import choose_accel
from .catalogue import KernelSpec
from .guestcmd import default_guest_command, read_exit_status, write_guest_files
from .report import KernelOutcome, final_status, write_report
from .results import load_kernel_dir
from .runner import prepare

SPEC_FILE = REPO_ROOT / "vms" / "work" / "vagrant-kernels.json"
BASE_PORT = 2310


def machine_name(kernel: str) -> str:
    return "k" + kernel.replace(".", "_")


def ensure_libvirt(console: Console) -> None:
    """libvirtd and virtlogd started by hand: machines of this kind run no init system."""
    for daemon in ("virtlogd", "libvirtd"):
        running = subprocess.run(["pgrep", "-x", daemon], capture_output=True).returncode == 0
        if not running and shutil.which(daemon):
            console.print(f"starting {daemon} -d")
            subprocess.run([daemon, "-d"], check=False)
    time.sleep(1)


def run_matrix_vagrant(specs: list[KernelSpec], report_dir: Path, guest_command: str | None, *,
                       timeout: float = 900, console: Console | None = None,
                       accel: str = "auto") -> tuple[list[KernelOutcome], dict]:
    import vagrant  # python-vagrant; imported here so the QEMU path does not need it

    console = console or Console()
    if not shutil.which("vagrant"):
        raise SystemExit("vagrant not installed: ci/install-matrix-deps.sh --vagrant")
    ensure_libvirt(console)
    guest_command = guest_command or default_guest_command()
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    t0 = time.monotonic()
    report_dir = report_dir.resolve()
    report_dir.mkdir(parents=True, exist_ok=True)
    targets = [prepare(s, console.print) for s in specs]
    vm = [t for t in targets if t.via == "qemu" and not t.error]
    acc, why = choose_accel(accel, vm[0].kernel if vm else None)
    machines = {}
    for i, t in enumerate(vm):
        out = report_dir / t.spec.name
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        os.chmod(out, 0o777)  # libvirt's QEMU runs as its own user and writes here over 9p
        write_guest_files(out, t.spec.name, guest_command)
        machines[t.spec.name] = {"vmlinuz": str(t.kernel.vmlinuz), "initrd": str(t.initrd),
                                 "port": BASE_PORT + i, "out": str(out),
                                 "accel": "kvm" if acc == "kvm" else "qemu"}
    SPEC_FILE.parent.mkdir(parents=True, exist_ok=True)
    SPEC_FILE.write_text(json.dumps(machines, indent=1))
    v = vagrant.Vagrant(root=str(REPO_ROOT), quiet_stdout=True, quiet_stderr=True)
    outcomes = []
    for t in targets:
        oc = KernelOutcome(name=t.spec.name, via="vagrant", status="boot-failed", note=t.note)
        if t.error or t.via != "qemu":
            oc.detail = t.error or "runs only as a VM kernel under --via vagrant"
            oc.status = "boot-failed" if t.error else "skipped"
            outcomes.append(oc)
            continue
        out = report_dir / t.spec.name
        name = machine_name(t.spec.name)
        k0 = time.monotonic()
        with console.status(f"{t.spec.name}: vagrant up"):
            try:
                # vagrant's own output goes to the kernel's directory: its errors are the
                # only explanation of a failed `up`
                with open(out / "vagrant.log", "w") as vlog:
                    subprocess.run(["vagrant", "up", name, "--provider=libvirt"], cwd=REPO_ROOT,
                                   stdout=vlog, stderr=subprocess.STDOUT, check=True,
                                   timeout=timeout)
                console.print(f"{t.spec.name}: up in {time.monotonic() - k0:.0f} s; running suites")
                p = subprocess.run(
                    ["vagrant", "ssh", name, "-c", "sudo /usr/local/sbin/uffdwp-vagrant-run"],
                    cwd=REPO_ROOT, capture_output=True, text=True,
                    timeout=max(30.0, timeout - (time.monotonic() - k0)))
                (out / "console.log").write_text(p.stdout + p.stderr)
                rc = read_exit_status(out)
                oc.exit_status = rc if rc is not None else p.returncode
                oc.status = "ok" if oc.exit_status == 0 else "failed"
            except subprocess.TimeoutExpired:
                oc.status, oc.detail = "timeout", f"killed after {timeout:.0f} s"
            except subprocess.CalledProcessError as e:
                oc.detail = f"vagrant up failed ({e.returncode}): see {t.spec.name}/vagrant.log"
            finally:
                try:
                    v.destroy(vm_name=name)
                except subprocess.CalledProcessError as e:
                    oc.detail += f"\nvagrant destroy failed: {e}"
                # a domain vagrant lost track of would keep running: remove it through libvirt
                dom = f"{REPO_ROOT.name}_{name}"
                subprocess.run(["virsh", "destroy", dom], capture_output=True)
                subprocess.run(["virsh", "undefine", dom, "--remove-all-storage"],
                               capture_output=True)
        oc.seconds = time.monotonic() - k0
        oc.record = load_kernel_dir(out)
        oc.status = final_status(oc.status, oc.record)
        console.print(f"{t.spec.name}: {oc.status} ({oc.seconds:.0f} s)")
        outcomes.append(oc)
    meta = {"started": started, "seconds": round(time.monotonic() - t0, 1), "accel": acc,
            "accel_reason": why, "jobs": 1, "guest_command": guest_command, "via": "vagrant"}
    return outcomes, write_report(report_dir, outcomes, meta)
