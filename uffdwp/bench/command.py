# SPDX-License-Identifier: GPL-2.0-only
"""CLI: `wrlat`, `bench snapshot|soak|roundtrip|plot`.

uffdwp/cli.py calls register(subparsers). Each handler returns an exit status; expected errors
print one clear line saying what to do (no traceback).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import TYPE_CHECKING, Any

from .. import cliargs
from ..cliargs import EXIT_FAIL, err
from ..errors import MemoryUnavailableError, UffdError
from ..memory import MEMORY_TYPES
from ..snapshot.command import demo_args, run_demo_command, target

if TYPE_CHECKING:
    from ..snapshot.soak import SoakRound
    from .roundtrip import RoundTrip
    from .snapshot import BenchResult, Run

    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]


def register(subparsers: Subparsers) -> None:
    _register_wrlat(subparsers)
    _register_bench(subparsers)


# --- wrlat -------------------------------------------------------------------------------------
def _register_wrlat(subparsers: Subparsers) -> None:
    p = subparsers.add_parser("wrlat", help="histogram of writer waits on UFFD-WP faults",
                              description="Like QEMU's userfaultfd-wrlat.py: how long writers "
                              "waited on write-protect faults. --demo runs a snapshot under "
                              "native writers and uses their own timings; --stats reads what "
                              "`snapshot demo --stats-json` saved; --pid traces any process "
                              "(kprobes on handle_userfault with bpftrace).")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--demo", action="store_true")
    src.add_argument("--stats", type=cliargs.existing_file, metavar="FILE")
    src.add_argument("--pid", type=cliargs.bounded_int(1, 2**22, "--pid"))
    demo_args(p)
    p.add_argument("--to", dest="target", type=target, default="file:/dev/null")
    p.add_argument("--duration", type=cliargs.seconds, default=None,
                   help="seconds to trace (--pid; default: until the process exits or ^C)")
    p.add_argument("--json", action="store_true", help="print the --pid result as JSON")
    p.set_defaults(func=cmd_wrlat, size=cliargs.size("256M"))


def cmd_wrlat(args: argparse.Namespace) -> int:
    from ..snapshot.demo import stall_summary
    from ..snapshot.engine import SnapshotError
    from ..snapshot.targets import TargetError
    from . import wrlat

    if args.pid is not None:
        return wrlat.trace_pid_command(args.pid, args.duration, args.json)
    if args.stats:
        try:
            stalls, _ = wrlat.stalls_from_stats(args.stats)
        except (OSError, ValueError) as exc:
            err(str(exc))
            return EXIT_FAIL
    else:
        try:
            res = run_demo_command(args, verify=False)
        except (SnapshotError, TargetError, MemoryUnavailableError, UffdError, OSError) as exc:
            err(str(exc))
            return EXIT_FAIL
        stalls = res.fault_stalls_ns
    print(wrlat.format_histogram(wrlat.log2_histogram_us(stalls)))
    print(stall_summary(stalls))
    return 0


# --- bench -------------------------------------------------------------------------------------
def _register_bench(subparsers: Subparsers) -> None:
    from ..snapshot.demo import MAX_WRITERS
    from .defs import DEFAULT_WRITERS, METHODS, PATTERNS

    p = subparsers.add_parser("bench", help="snapshot benchmarks")
    sub = p.add_subparsers(dest="bench_command", required=True)
    s = sub.add_parser("snapshot", help="UFFD-WP vs precopy vs fork vs stop-the-world, each "
                       "beside the plain write(2) bar", description="Every method at every rate "
                       "on every pattern; figures are ratios of medians measured in this run, "
                       "percentiles exact from the writers' per-store logs (README: Snapshots, "
                       "latency and benchmarks).")
    s.add_argument("--size", type=cliargs.size, default=cliargs.size("1G"))
    s.add_argument("--rates", type=cliargs.rate, nargs="+", default=None,
                   help="stores/s per writer ('idle', numbers, 'max'); default idle 10000 "
                        "100000 1000000 max")
    s.add_argument("--writers", type=cliargs.bounded_int(1, MAX_WRITERS, "--writers"), nargs="+",
                   default=list(DEFAULT_WRITERS),
                   help="writer counts: the first for every method, the others for uffd-wp at "
                        "the top rate (default 1 2)")
    s.add_argument("--methods", nargs="+", default=None, choices=METHODS)
    s.add_argument("--patterns", nargs="+", default=None, choices=PATTERNS,
                   help="memory content: random (no zero page), quarter-zero (every 4th page "
                        "zero); default both")
    s.add_argument("--repeats", type=cliargs.bounded_int(1, 20, "--repeats"), default=3,
                   help="runs of each idle cell and of uffd-wp at the top rate (medians "
                        "reported); the plain bar runs once more")
    s.add_argument("--dir", type=cliargs.report_dir,
                   help="target directory for the images and the plain bar (default: a "
                        "temporary one)")
    s.add_argument("--thp", action="store_true",
                   help="back the region with transparent huge pages (2 MiB-aligned, "
                        "MADV_HUGEPAGE)")
    s.add_argument("--downtime-ms", type=cliargs.bounded_int(1, 60000, "--downtime-ms"),
                   default=300,
                   help="precopy downtime limit (QEMU's downtime-limit, default 300)")
    s.add_argument("--precopy-time-limit", type=cliargs.seconds, default=60.0,
                   help="a precopy that has not converged by then stops the writers (default 60)")
    s.add_argument("--timeout", type=cliargs.seconds, default=300.0,
                   help="bound on each snapshot (default 300 s)")
    s.add_argument("--roundtrip-pages", type=cliargs.bounded_int(0, 1 << 20, "--roundtrip-pages"),
                   default=4096, help="faults per round trip round (0: skip the round trip)")
    s.add_argument("--roundtrip-rounds", type=cliargs.bounded_int(1, 1000, "--roundtrip-rounds"),
                   default=5)
    s.add_argument("--no-protect-cost", action="store_true",
                   help="skip the protect cost of 4 KiB and THP memory")
    s.add_argument("--plots", type=cliargs.report_dir, default="bench-plots",
                   help="directory for the PNG plot")
    s.add_argument("--no-plots", action="store_true")
    s.add_argument("--engine-priority", type=cliargs.bounded_int(-20, 99, "--engine-priority"),
                   default=0)
    s.add_argument("--save", type=cliargs.output_file, metavar="FILE",
                   help="also write the JSON result to FILE")
    s.add_argument("--json", action="store_true", help="print the result as JSON")
    s.set_defaults(func=cmd_bench_snapshot)
    k = sub.add_parser("soak", help="snapshots back to back under full-speed writers, each "
                       "checked; counts leaked fds, threads and protected pages")
    k.add_argument("--size", type=cliargs.size, default=cliargs.size("1G"), help="region size")
    k.add_argument("--rounds", type=cliargs.bounded_int(1, 100000, "--rounds"), default=20)
    k.add_argument("--writers", type=cliargs.bounded_int(0, MAX_WRITERS, "--writers"), default=4,
                   help="native writers storing as fast as they can")
    k.add_argument("--memtype", choices=MEMORY_TYPES, default="anon")
    k.add_argument("--dir", type=cliargs.existing_dir, default=None,
                   help="directory for the image (default: a temporary one, removed afterwards)")
    k.add_argument("--json", action="store_true")
    k.set_defaults(func=cmd_bench_soak)
    r = sub.add_parser("roundtrip", help="write-fault round trip: native handler vs a minimal "
                       "C handler, alternated")
    r.add_argument("--pages", type=cliargs.bounded_int(1, 1 << 20, "--pages"), default=4096,
                   help="faults per round")
    r.add_argument("--rounds", type=cliargs.bounded_int(1, 1000, "--rounds"), default=5)
    r.add_argument("--placement", choices=("across", "shared", "both"), default="both",
                   help="writer and handler on two CPUs, on one, or each in turn (both sides "
                   "of the comparison always share the placement)")
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=cmd_bench_roundtrip)
    g = sub.add_parser("plot", help="plot saved `bench snapshot --save` results, side by side")
    g.add_argument("files", nargs="+", metavar="FILE")
    g.add_argument("--out", type=cliargs.report_dir, default="bench-plots",
                   help="directory for the PNGs")
    g.add_argument("--pattern", choices=PATTERNS, default=None,
                   help="the pattern to plot (default: each one in the results)")
    g.set_defaults(func=cmd_bench_plot)


def _us(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def table(result: BenchResult) -> str:
    from .snapshot import rate_name
    from .stats import median

    head = (f"{'method':<15}{'pattern':<13}{'rate':>10}{'w':>3}{'n':>3}{'time s':>8}"
            f"{'img/nz':>8}{'thr':>6}{'p99 us':>9}{'max ms':>8}{'faults':>12}{'flt p50':>9}"
            f"{'flt p99':>10}{'pause ms':>9}  note")
    rows = [head, "-" * len(head)]
    cells: dict[tuple[str, str, int, int], list[Run]] = {}
    for r in result.runs:
        cells.setdefault((r.method, r.pattern, r.rate, r.writers), []).append(r)
    for (method, pattern, rate, w), runs in cells.items():
        mid = median([r.seconds for r in runs])
        r = min(runs, key=lambda x: abs(x.seconds - mid))  # the median run
        faults = "-" if r.faults is None else f"{r.faults}/{r.fault_messages}"
        thr = "-" if r.throughput_ratio is None else f"{r.throughput_ratio:.2f}"
        mx = "-" if r.stall_max_us is None else f"{r.stall_max_us / 1000:.1f}"
        rows.append(f"{method:<15}{pattern:<13}{rate_name(rate):>10}{w:>3}{len(runs):>3}"
                    f"{mid:>8.3f}{r.size_ratio:>8.3f}{thr:>6}{_us(r.stall_p99_us):>9}{mx:>8}"
                    f"{faults:>12}{_us(r.fault_p50_us):>9}{_us(r.fault_p99_us):>10}"
                    f"{r.pause_ms:>9.1f}  {r.note}"
                    + (f" rounds={r.rounds}" if r.rounds else "")
                    + (f" throttle={r.throttle_pct}%" if r.throttle_pct else ""))
    return "\n".join(rows)


COLUMNS = ("columns (the median run of each cell, n runs): time s = the method's time "
           "(uffd-wp: start -> end record); img/nz = image bytes / non-zero memory it holds; "
           "thr = writer stores/s in its window (uffd-wp: protect -> all saved) / the same "
           "writers just before; p99 us, max ms = stall of every store in the window; faults = "
           "stores that waited on a WP fault / fault messages the engine read; flt p50/p99 = "
           "their stall (exact, us); pause ms = writers stopped")


def _check_dir(directory: str | None, need: int) -> str | None:
    """Why the bench cannot write *need* bytes to *directory*, or None."""
    import tempfile

    where = directory or tempfile.gettempdir()
    if directory and not os.path.isdir(directory):
        parent = os.path.dirname(os.path.abspath(directory))
        if not os.path.isdir(parent):
            return f"--dir {directory}: neither it nor its parent directory exists"
        where = parent
    if not os.access(where, os.W_OK | os.X_OK):
        return f"{where} is not writable"
    st = os.statvfs(where)
    if st.f_bavail * st.f_frsize < need:
        return (f"{where} has {st.f_bavail * st.f_frsize >> 20} MiB free; the bench needs "
                f"{need >> 20} MiB there (use --dir, a smaller --size, or fewer --methods)")
    return None


def cmd_bench_snapshot(args: argparse.Namespace) -> int:
    from ..snapshot.engine import SnapshotError
    from . import snapshot as benchsnap
    from .defs import DEFAULT_RATES, METHODS, PATTERNS
    from .precopy import NAIVE_MAX_ROUNDS

    methods = tuple(dict.fromkeys(args.methods or METHODS))
    rates = tuple(dict.fromkeys(args.rates or DEFAULT_RATES))
    # the naive stream precopy may write every page once per round
    need = args.size * ((NAIVE_MAX_ROUNDS + 2) if "precopy-naive" in methods else 2)
    # memory: the region, an image read back to count what it holds, the writers' logs
    available = benchsnap.mem_available()
    problem = (f"a {args.size >> 20} MiB bench needs about {3 * args.size >> 20} MiB of memory, "
               f"{available >> 20} MiB is available: use a smaller --size"
               if 3 * args.size > available else _check_dir(args.dir, need))
    if problem:
        err(problem)
        return EXIT_FAIL

    def show(kind: str, what: Any) -> None:  # (pattern, seconds) or a Run
        if kind == "plain":
            pattern, seconds = what
            print(f"  plain bar ({pattern}): {seconds:.3f} s", file=sys.stderr, flush=True)
        else:
            print(f"  {what.method} {what.pattern} @ {benchsnap.rate_name(what.rate)}"
                  + (f" x{what.writers}" if what.rate >= 0 else "")
                  + f": {what.seconds:.3f} s", file=sys.stderr, flush=True)

    opts = benchsnap.Options(engine_priority=args.engine_priority, timeout_s=args.timeout,
                             downtime_ms=args.downtime_ms,
                             precopy_time_limit_s=args.precopy_time_limit)
    try:
        result = benchsnap.bench_snapshot(
            args.size, rates=rates, writers=tuple(args.writers), methods=methods,
            patterns=tuple(dict.fromkeys(args.patterns or PATTERNS)),
            repeats=args.repeats, directory=str(args.dir) if args.dir else None, thp=args.thp,
            options=opts,
            protect=not args.no_protect_cost, roundtrip_pages=args.roundtrip_pages,
            roundtrip_rounds=args.roundtrip_rounds, on_run=show)
    except (SnapshotError, MemoryUnavailableError, UffdError, OSError, RuntimeError,
            ValueError) as exc:
        err(str(exc))
        return EXIT_FAIL
    data = result.as_dict()
    plots = []
    if not args.no_plots:
        try:
            from .plot import plot

            for pattern in result.plain:
                plots += [str(p) for p in plot([data], args.plots, pattern)]
        except ImportError:
            err("matplotlib is not installed: pip install matplotlib (or use --no-plots)")
            return EXIT_FAIL
    data["plots"] = plots
    if args.save:
        try:
            benchsnap.save_json(data, args.save)
        except OSError as exc:
            err(f"cannot save {args.save}: {exc.strerror or exc}")
            return EXIT_FAIL
    if args.json:
        print(json.dumps(data, indent=1))
        return 0
    print(table(result))
    print(COLUMNS)
    for pattern, bar in result.plain.items():
        print(f"plain bar ({pattern}): write(2) of {bar.nonzero_bytes >> 20} MiB non-zero "
              f"bytes, median {bar.seconds:.3f} s of {len(bar.samples_s)} runs "
              f"({min(bar.samples_s):.3f}-{max(bar.samples_s):.3f})")
    if result.protect:
        pc = result.protect.per_gib()
        print(f"protect: {pc['4k']:.1f} ms/GiB with 4 KiB pages, {pc['thp']:.2f} ms/GiB THP-backed"
              f" ({result.protect.thp_backed_fraction:.0%} of it THP) {result.protect.note}")
    if result.roundtrip:
        print(_roundtrip_line(result.roundtrip))
    print("ratios: " + json.dumps(result.ratios(), indent=1))
    print(f"load average {result.host['loadavg_start']} -> {result.host['loadavg_end']}")
    for p in plots:
        print(f"plot: {p}")
    return 0


def cmd_bench_soak(args: argparse.Namespace) -> int:
    import tempfile

    from ..snapshot.engine import SnapshotError
    from ..snapshot.soak import soak

    if not args.json:
        print(f"{'round':>5} {'time s':>7} {'saved first':>11} {'check':>6} {'fds':>4} "
              f"{'threads':>7} {'protected':>9}")

    def show(r: SoakRound) -> None:
        if not args.json:
            print(f"{r.index:>5} {r.seconds:>7.2f} {r.fault_pages:>11} "
                  f"{'ok' if r.check_ok else 'FAIL':>6} {r.fds:>4} {r.threads:>7} "
                  f"{r.protected_after if r.protected_after >= 0 else 'n/a':>9}", flush=True)
            if not r.check_ok:
                print(f"      {r.check_note}")

    with tempfile.TemporaryDirectory(dir=args.dir, prefix="uffdwp-soak-") as directory:
        try:
            result = soak(args.size, args.rounds, writers=args.writers, memtype=args.memtype,
                          image=os.path.join(directory, "soak.img"), on_round=show)
        except (SnapshotError, MemoryUnavailableError, UffdError, OSError, ValueError) as exc:
            err(str(exc))
            return EXIT_FAIL
    if args.json:
        print(json.dumps(result.as_dict(), indent=1))
        return 0 if result.ok else EXIT_FAIL
    checked = sum(r.check_ok for r in result.rounds)
    last = result.rounds[-1]
    print(f"soak: {checked}/{len(result.rounds)} images equal memory at the freeze; fds "
          f"{result.fds_before} -> {last.fds}, threads {result.threads_before} -> "
          f"{last.threads}; pages protected after a round: at most "
          f"{max(r.protected_after for r in result.rounds)}"
          + ("" if result.ok else "  FAILED"))
    return 0 if result.ok else EXIT_FAIL


def _roundtrip_line(rt: RoundTrip) -> str:
    where = (f"writer on CPU {rt.cpus[0]}, handler on CPU {rt.cpus[1]}" if rt.placement == "across"
             else f"writer and handler on CPU {rt.cpus[0]}")
    return (f"write fault -> wake-up ({where}), {rt.samples} faults each side, alternated: "
            f"uffdwp (native Writer + FaultHandler) median {rt.median_us:.1f} us, "
            f"p99 {rt.p99_us:.1f} us; "
            f"plain-C reference median {rt.reference_median_us:.1f} us, p99 "
            f"{rt.reference_p99_us:.1f} us; uffdwp/reference {rt.median_ratio:.2f} (median), "
            f"{rt.p99_ratio:.2f} (p99)")


def cmd_bench_roundtrip(args: argparse.Namespace) -> int:
    from .roundtrip import bench_roundtrip

    placements = ("across", "shared") if args.placement == "both" else (args.placement,)
    results = []
    for placement in placements:
        try:
            rt = bench_roundtrip(args.pages, args.rounds, placement)
        except (UffdError, OSError, TimeoutError) as exc:
            err(str(exc))
            return EXIT_FAIL
        results.append(rt)
        if not args.json:
            print(_roundtrip_line(rt), flush=True)
    if args.json:
        print(json.dumps([rt.as_dict() for rt in results], indent=1))
    return 0


def cmd_bench_plot(args: argparse.Namespace) -> int:
    results = []
    for name in args.files:
        try:
            with open(name) as f:
                data = json.load(f)
            if not isinstance(data, dict) or not isinstance(data.get("runs"), list) \
                    or "plain" not in data:
                raise ValueError("not the JSON of `uffdwp bench snapshot --save/--json`")
        except (OSError, ValueError) as exc:
            err(f"{name}: {getattr(exc, 'strerror', None) or exc}")
            return EXIT_FAIL
        results.append(data)
    try:
        from .plot import plot
    except ImportError:
        err("matplotlib is not installed: pip install matplotlib")
        return EXIT_FAIL
    patterns = [args.pattern] if args.pattern else list(results[0]["plain"])
    try:
        for pattern in patterns:
            for path in plot(results, args.out, pattern):
                print(f"plot: {path}")
    except (OSError, KeyError, TypeError, ValueError) as exc:
        err(f"cannot plot these results: {exc}")
        return EXIT_FAIL
    return 0


__all__ = ["register", "table"]
