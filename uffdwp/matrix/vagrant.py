# SPDX-License-Identifier: GPL-2.0-only
"""`uffdwp matrix --via vagrant`: the same guests through Vagrant (vagrant-libvirt) with
python-vagrant. Lowest-priority runner: QEMU direct boot is the default and the faster one.

Per kernel, through python-vagrant: `up` (output to <kernel>/vagrant.log), whose trigger fetches
the kernel and builds its initramfs as for QEMU (uffdwp.matrix.vagrantup; the accelerator chosen
here is passed on in UFFDWP_VAGRANT_ACCEL, and the per-kernel directory becomes the machine's
output share through UFFDWP_VAGRANT_OUT); `status` and `ssh-config` (SSH must be on 127.0.0.1: a
QEMU user-mode NIC forwarded there, no private-range network anywhere); then
`ssh --command 'sudo uffdwp-vagrant-run'` runs the suites through the same .guest/run.sh; their
results land in the per-kernel directory over 9p. `destroy` afterwards, also on failure or
timeout (a watchdog kills the libvirt domain, which ends a hanging `up` or `ssh`).
Needs: ./bootstrap.sh --vagrant; libvirtd and virtlogd are started here if they are not running
(and stopped again afterwards).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console

from . import REPO_ROOT
from .accel import choose_accel
from .catalogue import KernelSpec
from .guestcmd import RUN_COMMAND, read_exit_status, write_guest_files
from .interrupt import signal_name
from .libvirtd import LIBVIRT_URI, ensure_libvirt, libvirt_ready, stop_libvirt, virsh
from .report import KernelOutcome, final_status, write_report
from .results import load_kernel_dir
from .runner import prepare
from .vagrantup import ACCEL_ENV

OUT_ENV = "UFFDWP_VAGRANT_OUT"  # the Vagrantfile shares this directory as the machine's output
SSH_HOST = "127.0.0.1"
PROVIDER = "libvirt"


def machine_name(kernel: str) -> str:
    return "k" + kernel.replace(".", "_")


def domain_name(machine: str) -> str:
    """vagrant-libvirt names the domain <project dir>_<machine>."""
    return f"{REPO_ROOT.name}_{machine}"


def kill_domain(machine: str) -> None:
    """A domain vagrant lost track of would keep running: remove it through libvirt."""
    dom = domain_name(machine)
    virsh("destroy", dom)
    virsh("undefine", dom, "--remove-all-storage", "--nvram")
    virsh("undefine", dom, "--remove-all-storage")


@contextmanager
def _watchdog(seconds: float, machine: str):
    """Kill the machine's domain after `seconds`: a hanging `vagrant up` or `vagrant ssh` then
    fails instead of blocking the matrix. Yields a dict whose "fired" says whether it did."""
    state = {"fired": False}

    def fire() -> None:
        state["fired"] = True
        virsh("destroy", domain_name(machine))

    t = threading.Timer(max(seconds, 1.0), fire)
    t.daemon = True
    t.start()
    try:
        yield state
    finally:
        t.cancel()


def _file_cm(path: Path):
    """python-vagrant out_cm/err_cm: append the vagrant command's output to `path`."""
    @contextmanager
    def cm():
        with open(path, "a") as fh:
            yield fh
    return cm


def vagrant_env(out: Path, accel: str) -> dict[str, str]:
    """The environment of each vagrant command for one machine: the Vagrantfile shares `out` as
    the machine's output directory, its trigger boots the kernel with `accel`."""
    return {**os.environ, "VAGRANT_CHECKPOINT_DISABLE": "1", OUT_ENV: str(out),
            ACCEL_ENV: "kvm" if accel == "kvm" else "tcg"}


def check_ssh_target(conf: dict) -> None:
    """SSH must go to the 127.0.0.1 forward, never to an address of a network."""
    host = conf.get("HostName")
    if host != SSH_HOST:
        raise RuntimeError(f"vagrant ssh-config gives HostName {host!r}, not {SSH_HOST}: refusing")


def run_matrix_vagrant(specs: list[KernelSpec], report_dir: Path, guest_command: str | None, *,
                       timeout: float = 900, console: Console | None = None,
                       accel: str = "auto") -> tuple[list[KernelOutcome], dict]:
    import vagrant  # python-vagrant; imported here so the QEMU path does not need it

    console = console or Console()
    if not shutil.which("vagrant"):
        raise SystemExit("vagrant not installed: ci/install-matrix-deps.sh --vagrant")
    started_daemons = ensure_libvirt(console)
    try:
        return _run(vagrant, specs, report_dir, guest_command, timeout, console, accel)
    finally:
        stop_libvirt(started_daemons, console)


def _run(vagrant, specs, report_dir, guest_command, timeout, console, accel):
    if not libvirt_ready():
        raise SystemExit(f"libvirt not reachable at {LIBVIRT_URI}: are libvirtd/virtlogd running?")
    guest_command = guest_command or RUN_COMMAND
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    t0 = time.monotonic()
    report_dir = report_dir.resolve()
    report_dir.mkdir(parents=True, exist_ok=True)
    targets = [prepare(s, console.print) for s in specs]
    vm = [t for t in targets if t.via == "qemu" and not t.error]
    acc, why = choose_accel(accel, vm[0].kernel if vm else None)
    for t in vm:
        out = report_dir / t.spec.name
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        os.chmod(out, 0o777)  # libvirt's QEMU runs as its own user and writes here over 9p
        write_guest_files(out, t.spec.name, guest_command)
    outcomes = []
    stopped_by = None
    for t in targets:
        oc = KernelOutcome(name=t.spec.name, via="vagrant", status="boot-failed", note=t.note)
        if stopped_by:  # a signal stopped the matrix: the report lists what did not run
            oc.status, oc.detail = "interrupted", f"not run: interrupted by {stopped_by}"
            outcomes.append(oc)
            continue
        if t.error or t.via != "qemu":
            oc.detail = t.error or "runs only as a VM kernel under --via vagrant"
            oc.status = "boot-failed" if t.error else "skipped"
            outcomes.append(oc)
            continue
        out = report_dir / t.spec.name
        name = machine_name(t.spec.name)
        # vagrant's own output goes to the kernel's directory: its errors are the only
        # explanation of a failed `up`
        vlog = out / "vagrant.log"
        v = vagrant.Vagrant(root=str(REPO_ROOT), out_cm=_file_cm(vlog), err_cm=_file_cm(vlog),
                            env=vagrant_env(out, acc))
        k0 = time.monotonic()
        step = "vagrant up"
        try:
            with _watchdog(timeout, name) as dog:
                with console.status(f"{t.spec.name}: vagrant up"), open(vlog, "a") as log:
                    for line in v.up(vm_name=name, provider=PROVIDER, stream_output=True):
                        log.write(f"[{time.monotonic() - k0:6.1f} s] {line}")
                        log.flush()
                up_s = time.monotonic() - k0
                step = "vagrant status"
                state = v.status(vm_name=name)[0].state
                if state != "running":
                    raise RuntimeError(f"machine {name} is {state!r} after vagrant up")
                step = "vagrant ssh-config"
                conf = v.conf(vm_name=name)
                check_ssh_target(conf)
                console.print(f"{t.spec.name}: up in {up_s:.0f} s (ssh {conf['HostName']}:"
                              f"{conf['Port']}); running suites")
                step = "vagrant ssh"
                r0 = time.monotonic()
                rc_ssh = 0
                try:
                    text = v.ssh(vm_name=name, command="sudo /usr/local/sbin/uffdwp-vagrant-run")
                except subprocess.CalledProcessError as e:
                    text, rc_ssh = e.output.decode(errors="replace") if isinstance(
                        e.output, bytes) else (e.output or ""), e.returncode
                (out / "console.log").write_text(text)
                console.print(f"{t.spec.name}: suites ran in {time.monotonic() - r0:.0f} s")
            if dog["fired"]:
                raise TimeoutError
            rc = read_exit_status(out)
            oc.exit_status = rc if rc is not None else rc_ssh
            oc.status = "ok" if oc.exit_status == 0 else "failed"
        except KeyboardInterrupt as exc:  # its machine is destroyed below, then the report
            stopped_by = signal_name(exc)
            oc.status, oc.detail = "interrupted", f"interrupted by {stopped_by} during {step}"
        except TimeoutError:
            oc.status, oc.detail = "timeout", f"killed after {timeout:.0f} s (during {step})"
        except (subprocess.CalledProcessError, RuntimeError) as e:
            if dog["fired"]:
                oc.status, oc.detail = "timeout", f"killed after {timeout:.0f} s (during {step})"
            else:
                oc.detail = f"{step} failed: {e}; see {t.spec.name}/vagrant.log"
        finally:
            try:
                v.destroy(vm_name=name)
            except subprocess.CalledProcessError as e:
                oc.detail = (oc.detail or "") + f"\nvagrant destroy failed: {e}"
            kill_domain(name)
        oc.seconds = time.monotonic() - k0
        oc.record = load_kernel_dir(out)
        oc.status = final_status(oc.status, oc.record)
        console.print(f"{t.spec.name}: {oc.status} ({oc.seconds:.0f} s)")
        outcomes.append(oc)
    meta = {"started": started, "seconds": round(time.monotonic() - t0, 1), "accel": acc,
            "accel_reason": why, "jobs": 1, "guest_command": guest_command, "via": "vagrant",
            "interrupted": stopped_by}
    return outcomes, write_report(report_dir, outcomes, meta)
