"""The `uffdwp matrix` subcommand."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

from rich.console import Console

from .catalogue import DEFAULT_CATALOGUE, DEFAULT_KERNELS, CatalogueError, load_catalogue, select


def _positive(v: str) -> float:
    x = float(v)
    if x <= 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return x


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
                   help="comma-separated catalogue names (vms/kernels.cfg; default: "
                        f"{','.join(DEFAULT_KERNELS)}); with --merge, the kernels expected "
                        "(a kernel in no report is listed as missing)")
    p.add_argument("--via", choices=("qemu", "vagrant"), default="qemu",
                   help="QEMU direct kernel boot, or the Vagrant machines of the Vagrantfile "
                        "(./bootstrap.sh --vagrant)")
    p.add_argument("--report", type=Path, default=None, metavar="DIR",
                   help="report directory (default: reports/matrix-<timestamp>)")
    p.add_argument("--timeout", type=_positive, default=600.0, metavar="SECONDS",
                   help="seconds per kernel before its guest is killed")
    p.add_argument("--jobs", type=int, default=None, metavar="N",
                   help="kernels side by side (default: by cores and memory; --via vagrant: 1)")
    p.add_argument("--accel", choices=("auto", "kvm", "tcg"), default="auto",
                   help="QEMU accelerator; auto boots a kernel under KVM once to see whether "
                        "it really works here (cached in vms/cache/accel.json), else TCG")
    p.add_argument("--guest-command", default=None, metavar="CMD",
                   help="command run as root in each guest; {out} and {repo} are substituted "
                        "(default: `uffdwp run` if present, else pytest + probe)")
    p.add_argument("--merge", nargs="*", type=Path, default=None, metavar="DIR",
                   help="merge these matrix reports (e.g. one per kernel, from separate jobs) "
                        "into --report instead of running kernels")
    p.add_argument("--catalogue", type=Path, default=DEFAULT_CATALOGUE, help=argparse.SUPPRESS)
    p.set_defaults(func=main)


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
        specs = select(load_catalogue(args.catalogue), args.kernels or list(DEFAULT_KERNELS))
    except (CatalogueError, OSError) as e:
        console.print(f"[red]matrix: {e}[/]")
        return 2
    report = args.report or Path("reports") / f"matrix-{time.strftime('%Y%m%d-%H%M%S')}"
    # SIGTERM (CI cancelling the job) takes the same path as Ctrl-C: guests get killed
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        if args.via == "vagrant":
            from .vagrant import run_matrix_vagrant

            outcomes, summary = run_matrix_vagrant(specs, report, args.guest_command,
                                                   timeout=args.timeout, console=console,
                                                   accel=args.accel)
        else:
            from .guestcmd import default_guest_command
            from .runner import run_matrix

            cmd = args.guest_command or default_guest_command()
            outcomes, summary = run_matrix(specs, report, cmd, accel=args.accel,
                                           timeout=args.timeout, jobs=args.jobs, console=console)
    except KeyboardInterrupt:
        console.print("[red]matrix: interrupted; guests killed[/]")
        return 130
    _write_kcidb(report, outcomes, console)
    console.print(f"report: {report}/report.html ({summary['seconds']:.0f} s)")
    return 0 if summary["ok"] else 1


def standalone(argv: list[str] | None = None) -> int:
    """`python -m uffdwp.matrix.command ...` works before the lead's cli.py wires us in."""
    parser = argparse.ArgumentParser(prog="uffdwp")
    register(parser.add_subparsers(dest="cmd", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(standalone())
