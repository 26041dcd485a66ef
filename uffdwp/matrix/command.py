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
    p = subparsers.add_parser(
        "matrix", help="run the suites on a matrix of guest kernels (QEMU or Vagrant)",
        description="Boot each selected kernel (Debian packages fetched to vms/cache/), run the "
                    "suites in it as root, and write a matrix report.")
    p.add_argument("--kernels", default=",".join(DEFAULT_KERNELS),
                   help="comma-separated catalogue names (default: %(default)s)")
    p.add_argument("--via", choices=("qemu", "vagrant"), default="qemu")
    p.add_argument("--report", type=Path, default=None,
                   help="report directory (default: reports/matrix-<timestamp>)")
    p.add_argument("--timeout", type=_positive, default=600.0,
                   help="seconds per kernel before its guest is killed (default: %(default)s)")
    p.add_argument("--jobs", type=int, default=None,
                   help="kernels side by side (default: by cores and memory)")
    p.add_argument("--accel", choices=("auto", "kvm", "tcg"), default="auto")
    p.add_argument("--guest-command", default=None,
                   help="command run as root in each guest; {out} and {repo} are substituted "
                        "(default: `uffdwp run` if present, else pytest + probe)")
    p.add_argument("--catalogue", type=Path, default=DEFAULT_CATALOGUE, help=argparse.SUPPRESS)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    console = Console()
    try:
        specs = select(load_catalogue(args.catalogue), args.kernels)
    except (CatalogueError, OSError) as e:
        console.print(f"[red]matrix: {e}[/]")
        return 2
    report = args.report or Path("reports") / f"matrix-{time.strftime('%Y%m%d-%H%M%S')}"
    # SIGTERM (CI cancelling the job) takes the same path as Ctrl-C: guests get killed
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        if args.via == "vagrant":
            from .vagrant import run_matrix_vagrant

            _, summary = run_matrix_vagrant(specs, report, args.guest_command,
                                                   timeout=args.timeout, console=console)
        else:
            from .guestcmd import default_guest_command
            from .runner import run_matrix

            cmd = args.guest_command or default_guest_command()
            _, summary = run_matrix(specs, report, cmd, accel=args.accel,
                                           timeout=args.timeout, jobs=args.jobs, console=console)
    except KeyboardInterrupt:
        console.print("[red]matrix: interrupted; guests killed[/]")
        return 130
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
