# SPDX-License-Identifier: GPL-2.0-only
"""Run the selected kernels (side by side where the machine allows) and write the report."""

from __future__ import annotations

import os
import shutil
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from . import (
    changelog,
    crosscheck,  # noqa: F401  (its report section registers itself)
    qemu,
)
from .accel import choose_accel
from .catalogue import KernelSpec, host_kernel
from .debfetch import FetchError, KernelFiles, kernel_files
from .guestcmd import write_guest_files
from .hostrun import run_direct
from .initramfs import build_initramfs
from .interrupt import signal_name
from .report import KernelOutcome, final_status, write_report
from .results import load_kernel_dir

GUEST_MEMORY_MIB = 2048


@dataclass
class Target:
    spec: KernelSpec
    via: str  # qemu | direct
    kernel: KernelFiles | None = None
    initrd: Path | None = None
    error: str = ""
    note: str = ""
    fix_evidence: dict[str, dict] = field(default_factory=dict)


def default_jobs(n_vms: int) -> int:
    """Guests at once: one per core (each guest has one vCPU: under TCG one vCPU was faster
    than two), bounded by memory (guest RAM plus QEMU's own, ~3 GiB each)."""
    cores = os.cpu_count() or 1
    try:
        with open("/proc/meminfo") as f:
            avail_kib = next(int(line.split()[1]) for line in f
                             if line.startswith("MemAvailable:"))
    except (OSError, StopIteration):
        avail_kib = 4 << 20
    by_mem = max(1, avail_kib // (3 << 20))
    return max(1, min(cores, by_mem, max(n_vms, 1)))


def read_evidence(kernel: KernelFiles) -> tuple[dict[str, dict], str]:
    """What the kernel's package changelog says about each known bug's fix ({} without one),
    and why there is none where a changelog exists but cannot be read."""
    if kernel.changelog is None:
        return {}, ""
    try:
        cl = changelog.read(kernel.changelog)
    except (OSError, ValueError) as e:  # a damaged changelog costs the cross-check, not the run
        return {}, f"changelog {kernel.changelog.name} unreadable: {e}"
    return {k: ev.as_dict() for k, ev in changelog.all_evidence(cl).items()}, ""


def prepare(spec: KernelSpec, log) -> Target:
    """Fetch/unpack the kernel and build its initramfs (or decide to run on the host)."""
    try:
        if spec.source == "host":
            hk = host_kernel()
            if not hk.bootable:
                return Target(spec, "direct", note=(
                    f"host kernel {hk.release} has no /boot/vmlinuz-{hk.release} or "
                    f"/lib/modules/{hk.release} here: suites run directly on the host, no VM"))
            kernel = KernelFiles(spec.name, hk.release, hk.vmlinuz, hk.modules)
        else:
            kernel = kernel_files(spec, log=log)
        initrd = build_initramfs(kernel)
        evidence, note = read_evidence(kernel)
        if spec.expect_release and not kernel.release.startswith(spec.expect_release):
            note = f"catalogue expects release {spec.expect_release}*, got {kernel.release}"
        return Target(spec, "qemu", kernel, initrd, note=note, fix_evidence=evidence)
    except (FetchError, OSError, ValueError, RuntimeError) as e:
        return Target(spec, "qemu", error=f"prepare failed: {e}")


def run_one(t: Target, report_dir: Path, guest_command: str, accel: str, timeout: float,
            on_phase, numa_nodes: int = 1) -> KernelOutcome:
    out = (report_dir / t.spec.name).resolve()
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    oc = KernelOutcome(name=t.spec.name, via=t.via, status="boot-failed", note=t.note,
                       package=t.kernel.package if t.kernel else "",
                       package_version=t.kernel.version if t.kernel else "",
                       fix_evidence=t.fix_evidence)
    if t.error:
        oc.detail = t.error
        (out / "console.log").write_text(t.error + "\n")
        return oc
    run_sh = write_guest_files(out, t.spec.name, guest_command)
    if t.via == "direct":
        br = run_direct(out, run_sh, timeout, on_phase)
    else:
        assert t.kernel is not None and t.initrd is not None
        br = qemu.boot(t.spec.name, t.kernel.vmlinuz, t.initrd, out, accel, timeout,
                       GUEST_MEMORY_MIB, 1, on_phase, numa_nodes)
    oc.record = load_kernel_dir(out)
    oc.seconds, oc.exit_status = br.seconds, br.exit_status
    oc.detail, oc.phases = br.detail, br.phases
    oc.status = final_status(br.status, oc.record)
    if br.status in ("ok", "failed") and not oc.record.tests:
        oc.record.notes.append(f"no test results ({oc.record.source})")
    return oc


def run_matrix(specs: list[KernelSpec], report_dir: Path, guest_command: str, *,
               accel: str = "auto", timeout: float = 600, jobs: int | None = None,
               console: Console | None = None,
               numa_nodes: int = 1) -> tuple[list[KernelOutcome], dict]:
    """Run the kernels and write the report. An interrupt (interrupt.py) stops every guest at
    once and still writes the report: the kernels that finished, the others "interrupted";
    the summary's "interrupted" names the signal."""
    console = console or Console()
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    t0 = time.monotonic()
    report_dir.mkdir(parents=True, exist_ok=True)
    qemu.STOP.clear()
    outcomes: dict[str, KernelOutcome] = {}
    acc, why, stopped_by = "none", "not chosen before the interrupt", None
    try:
        targets = []
        for spec in specs:
            with console.status(f"preparing {spec.name}"):
                targets.append(prepare(spec, lambda m: console.print(m)))
        vm_targets = [t for t in targets if t.via == "qemu" and not t.error]
        acc, why = choose_accel(accel, vm_targets[0].kernel if vm_targets else None)
        if not vm_targets:
            acc, why = "none", "no kernel needs a VM"
        jobs = jobs or default_jobs(len(vm_targets))
        console.print(f"accel: [bold]{acc}[/] ({why}); {jobs} kernel(s) at a time; "
                      f"guest command: {guest_command}")
        _run_targets(targets, report_dir, guest_command, acc, timeout, jobs, console,
                     numa_nodes, outcomes)
    except KeyboardInterrupt as exc:
        stopped_by = signal_name(exc)
        console.print(f"[red]matrix: interrupted by {stopped_by}: guests stopped[/]")
    finally:  # no QEMU left behind, ever
        if stopped_by:
            qemu.stop_all()
        else:
            qemu.kill_all()
    ordered = [outcomes.get(s.name) or KernelOutcome(
        name=s.name, via="qemu", status="interrupted",
        detail="not run: the matrix was interrupted before it started") for s in specs]
    meta = {"started": started, "seconds": round(time.monotonic() - t0, 1), "accel": acc,
            "accel_reason": why, "jobs": jobs, "guest_command": guest_command,
            "host_release": os.uname().release, "numa_nodes": numa_nodes,
            "interrupted": stopped_by}
    summary = write_report(report_dir, ordered, meta)
    return ordered, summary


def _run_targets(targets: list[Target], report_dir: Path, guest_command: str, acc: str,
                 timeout: float, jobs: int, console: Console, numa_nodes: int,
                 outcomes: dict[str, KernelOutcome]) -> None:
    """The guests, *jobs* at a time, into *outcomes* as each ends. On an interrupt the guests
    are stopped before the pool is left: waiting for them would last until their timeout."""
    with Progress(SpinnerColumn(finished_text="•"),
                  TextColumn("[bold]{task.fields[kernel]:>6}"),
                  TextColumn("{task.description}"), TimeElapsedColumn(),
                  console=console, transient=False) as progress:
        tasks = {t.spec.name: progress.add_task("queued", kernel=t.spec.name, start=False,
                                                total=1)
                 for t in targets}

        def work(t: Target) -> KernelOutcome:
            tid = tasks[t.spec.name]
            progress.start_task(tid)
            progress.update(tid, description=f"starting ({t.via})")

            def on_phase(msg: str) -> None:
                progress.update(tid, description=msg)

            oc = run_one(t, report_dir, guest_command, acc, timeout, on_phase, numa_nodes)
            r = oc.record
            counts = " ".join(f"{k}={v}" for k, v in r.summary.items() if v)
            feat = "?" if r.features is None else f"0x{r.features:x}"
            style = "green" if oc.status == "ok" else "red"
            line = f"[{style}]{oc.status}[/] {r.release} features={feat} {counts}"
            progress.update(tid, description=line, completed=1)
            progress.stop_task(tid)
            # a plain line too: CI logs are not terminals and show no live display
            progress.console.print(f"{t.spec.name}: {line} ({oc.seconds:.0f} s)")
            return oc

        # the host run (no VM) does not need a VM slot, but still uses a core
        pool = ThreadPoolExecutor(max_workers=jobs)
        pending: set[Future] = set()
        try:
            pending = {pool.submit(work, t) for t in targets}
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    oc = fut.result()
                    outcomes[oc.name] = oc
        except KeyboardInterrupt:
            qemu.stop_all()  # the running guests end now; their threads return "interrupted"
            done, _ = wait(pending, timeout=qemu.STOP_GRACE + 1)
            for fut in done:
                if not fut.cancelled() and fut.exception() is None:
                    oc = fut.result()
                    outcomes[oc.name] = oc
            raise
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
