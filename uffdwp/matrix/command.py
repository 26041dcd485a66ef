# SPDX-License-Identifier: GPL-2.0-only
"""The `uffdwp matrix` subcommand."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from rich.console import Console

from .. import cliargs
from . import interrupt
from .catalogue import (
    DEFAULT_CATALOGUE,
    DEFAULT_KERNELS,
    CatalogueError,
    KernelSpec,
    load_catalogue,
    select,
)

MAX_NUMA_NODES = 8  # nodes of one guest (its 2 GiB shared between them)


def register(subparsers) -> None:
    from ..cli import HelpFormatter

    p = subparsers.add_parser(
        "matrix", help="run the suites on a matrix of guest kernels (QEMU or Vagrant)",
        description="Boot each selected kernel (Debian packages fetched to vms/cache/), run the "
                    "suites in it as root, and write a matrix report (report.html, report.md, "
                    "summary.json, kcidb.json, a directory per kernel). With --merge, write one "
                    "matrix report from several instead.",
        formatter_class=HelpFormatter)
    p.add_argument("--kernels", default=None,
                   help="comma-separated catalogue names (vms/kernels.cfg), or Debian builds by "
                        f"package name (6.1.0-50) (default: {','.join(DEFAULT_KERNELS)}; none "
                        "with --kernel); with --merge, the kernels expected (a kernel in no "
                        "report is listed as missing)")
    p.add_argument("--kernel", type=cliargs.existing_path, default=None, metavar="BZIMAGE",
                   help="also boot a kernel built from a source tree (build it with "
                        "vms/uffdwp.config merged in: vms/build-kernel.sh)")
    p.add_argument("--modules", type=cliargs.existing_dir, default=None, metavar="DIR",
                   help="that kernel's modules directory (lib/modules/<release>, no modules.dep "
                        "needed); omit for a kernel with everything built in")
    p.add_argument("--history", default=None, metavar="SERIES",
                   help="run the known-bug tests on every build of a catalogue series (e.g. 6.1) "
                        "still in its suites, and report per bug where the verdict changes")
    p.add_argument("--bugs", default=None, metavar="KEYS",
                   help="run only the tests of these known bugs in each guest: 'all' or keys "
                        "separated by commas (default with --history: all)")
    p.add_argument("--numa-nodes", type=cliargs.bounded_int(1, MAX_NUMA_NODES, "--numa-nodes"),
                   default=1, metavar="N",
                   help="give each guest N NUMA nodes (2 lets THP migration be tested)")
    p.add_argument("--via", choices=("qemu", "vagrant"), default="qemu",
                   help="QEMU direct kernel boot, or the Vagrant machines of the Vagrantfile "
                        "(./bootstrap.sh --vagrant)")
    p.add_argument("--report", type=cliargs.report_dir, default=None, metavar="DIR",
                   help="report directory (default: reports/matrix-<timestamp>)")
    p.add_argument("--timeout", type=cliargs.seconds, default=600.0, metavar="SECONDS",
                   help="seconds per kernel before its guest is killed")
    p.add_argument("--jobs", type=cliargs.bounded_int(1, cliargs.MAX_JOBS, "--jobs"),
                   default=None, metavar="N",
                   help="kernels side by side (default: by cores and memory; --via vagrant: 1)")
    p.add_argument("--accel", choices=("auto", "kvm", "tcg"), default="auto",
                   help="QEMU accelerator; auto boots a kernel under KVM once to see whether "
                        "it really works here (cached in vms/cache/accel.json), else TCG")
    p.add_argument("--guest-command", default=None, metavar="CMD",
                   help="command run as root in each guest; {out} and {repo} are substituted "
                        "(default: `uffdwp run`)")
    p.add_argument("--merge", nargs="*", type=cliargs.existing_dir, default=None, metavar="DIR",
                   help="merge these matrix reports (e.g. one per kernel, from separate jobs) "
                        "into --report instead of running kernels")
    p.add_argument("--catalogue", type=Path, default=DEFAULT_CATALOGUE, help=argparse.SUPPRESS)
    p.set_defaults(func=main)


def guest_command(args: argparse.Namespace, bugs: str | None) -> str:
    """The command each guest runs: --guest-command, or `uffdwp run` (only the tests of *bugs*
    when given)."""
    from .guestcmd import RUN_COMMAND

    if args.guest_command:
        if bugs:
            raise CatalogueError("--bugs selects tests of the default guest command; "
                                 "with --guest-command select them there")
        return args.guest_command
    return RUN_COMMAND + (f" --bugs {bugs}" if bugs else "")


def local_spec(kernel: Path, modules: Path | None) -> KernelSpec:
    """A catalogue entry for --kernel/--modules, named by the release the image announces."""
    from .debfetch import bzimage_release

    if not kernel.is_file():
        raise CatalogueError(f"--kernel {kernel}: no such file")
    if modules is not None and not modules.is_dir():
        raise CatalogueError(f"--modules {modules}: no such directory")
    release = bzimage_release(kernel)
    if not release:
        raise CatalogueError(f"--kernel {kernel}: not an x86 bzImage (no kernel version in its "
                             "boot header)")
    return KernelSpec(name=f"local-{release}".replace("/", "_"), source="local",
                      vmlinuz=str(kernel.resolve()),
                      modules=str(modules.resolve()) if modules else "",
                      note=f"built from a source tree: {kernel}")


def selected(args: argparse.Namespace) -> list[KernelSpec]:
    catalogue = load_catalogue(args.catalogue)
    specs: list[KernelSpec] = []
    if args.kernels is not None or args.kernel is None:
        specs = select(catalogue, args.kernels or ",".join(DEFAULT_KERNELS))
    if args.modules is not None and args.kernel is None:
        raise CatalogueError("--modules goes with --kernel")
    if args.kernel is not None:
        specs.append(local_spec(args.kernel, args.modules))
    return specs


def history_entry(args: argparse.Namespace) -> KernelSpec:
    catalogue = load_catalogue(args.catalogue)
    entry = catalogue.get(args.history)
    if entry is None or entry.source != "debian" or not entry.series:
        series = [n for n, e in catalogue.items() if e.source == "debian" and e.series]
        raise CatalogueError(f"--history {args.history}: not a Debian series of the catalogue "
                             f"({', '.join(series)})")
    if args.kernels is not None or args.kernel is not None:
        raise CatalogueError("--history picks its own kernels: drop --kernels/--kernel")
    return entry


def merge(args: argparse.Namespace, console: Console) -> int:
    from .merge import MergeError, merge_reports

    report = args.report or Path("reports") / f"matrix-{time.strftime('%Y%m%d-%H%M%S')}"
    try:
        expected = None
        if args.kernels:
            expected = [s.name for s in select(load_catalogue(args.catalogue), args.kernels)]
        summary = merge_reports(args.merge, report, expected)
    except (CatalogueError, MergeError, OSError) as e:
        console.print(f"[red]matrix --merge: {e}[/]")
        return 2
    console.print(f"report: {report}/report.html ({len(summary['kernels'])} kernels from "
                  f"{len(args.merge)} report(s))")
    return 0 if summary["ok"] else 1


def _write_kcidb(report: Path, outcomes: list, console: Console) -> None:
    from .merge import MergeError, write_kcidb

    try:
        write_kcidb(report, outcomes)
    except ImportError:
        console.print("[yellow]kcidb.json not written: kcidb-io is not installed[/]")
    except MergeError as e:
        console.print(f"[red]kcidb.json not written: {e}[/]")


def main(args: argparse.Namespace) -> int:
    console = Console()
    if args.merge is not None:
        return merge(args, console)
    try:
        if args.bugs:
            from ..runner.plugin import bug_selection

            bug_selection(args.bugs)
        if args.history:
            entry = history_entry(args)
            bugs = args.bugs or "all"
        else:
            specs = selected(args)
            bugs = args.bugs
        cmd = guest_command(args, bugs) if args.via == "qemu" else args.guest_command
    except (CatalogueError, OSError, ValueError) as e:
        console.print(f"[red]matrix: {e}[/]")
        return 2
    if args.history:
        if args.via != "qemu":
            console.print("[red]matrix: --history runs under QEMU only[/]")
            return 2
        return run_history(args, entry, cmd, console)
    report = args.report or Path("reports") / f"matrix-{time.strftime('%Y%m%d-%H%M%S')}"
    interrupt.install()  # SIGTERM (CI cancelling the job) and Ctrl-C: guests stopped at once
    try:
        if args.via == "vagrant":
            from .vagrant import run_matrix_vagrant

            outcomes, summary = run_matrix_vagrant(specs, report, args.guest_command,
                                                   timeout=args.timeout, console=console,
                                                   accel=args.accel)
        else:
            from .runner import run_matrix

            outcomes, summary = run_matrix(specs, report, cmd, accel=args.accel,
                                           timeout=args.timeout, jobs=args.jobs,
                                           console=console, numa_nodes=args.numa_nodes)
    except KeyboardInterrupt:  # the Vagrant path: its machines are destroyed on the way out
        console.print("[red]matrix: interrupted; guests killed[/]")
        return 130
    _write_kcidb(report, outcomes, console)
    console.print(f"report: {report}/report.html ({summary['seconds']:.0f} s)")
    return _exit_status(summary)


def _exit_status(summary: dict) -> int:
    """130 for a matrix stopped by a signal (its report holds what finished), else 0 if every
    kernel is ok, else 1."""
    if summary.get("interrupted"):
        return 130
    return 0 if summary["ok"] else 1


def run_history(args: argparse.Namespace, entry: KernelSpec, cmd: str, console: Console) -> int:
    from . import history
    from .debfetch import FetchError
    from .runner import run_matrix

    try:
        with console.status(f"listing the {entry.series} builds in {', '.join(entry.suites)}"):
            builds = history.list_builds(entry)
    except FetchError as e:
        console.print(f"[red]matrix: {e}[/]")
        return 2
    if not builds:
        console.print(f"[red]matrix: no {entry.series} build in {', '.join(entry.suites)}[/]")
        return 2
    specs = history.build_specs(entry, builds)
    console.print(f"{len(specs)} builds of {entry.series}: {', '.join(s.name for s in specs)}")
    report = args.report or Path("reports") / (
        f"history-{entry.series}-{time.strftime('%Y%m%d-%H%M%S')}")
    interrupt.install()
    outcomes, summary = run_matrix(specs, report, cmd, accel=args.accel, timeout=args.timeout,
                                   jobs=args.jobs, console=console, numa_nodes=args.numa_nodes)
    data = history.write(report, entry.series, outcomes)
    for bug, line in data["lines"].items():
        console.print(f"{bug}: {line}", highlight=False)
    console.print(f"report: {report}/history.md, {report}/report.html "
                  f"({summary['seconds']:.0f} s)")
    return _exit_status(summary)


def standalone(argv: list[str] | None = None) -> int:
    """`python -m uffdwp.matrix.command ...` works before the lead's cli.py wires us in."""
    parser = argparse.ArgumentParser(prog="uffdwp")
    register(parser.add_subparsers(dest="cmd", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(standalone())
