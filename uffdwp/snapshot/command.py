# SPDX-License-Identifier: GPL-2.0-only
"""CLI: `snapshot demo`, `image info|verify|extract`.

uffdwp/cli.py calls register(subparsers). Each handler returns an exit status; expected errors
print one clear line saying what to do (no traceback). `demo_args` and `run_demo_command` serve
`uffdwp wrlat --demo` too (uffdwp/bench/command.py).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from .. import cliargs
from ..cliargs import EXIT_FAIL, err
from ..errors import MemoryUnavailableError, UffdError
from ..memory import MEMORY_TYPES
from ..native import Pattern


def target(text: str) -> str:
    from .targets import TargetError, parse_target

    try:
        parse_target(text)
    except TargetError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def register(subparsers) -> None:
    _register_snapshot(subparsers)
    _register_image(subparsers)


# --- snapshot ----------------------------------------------------------------------------------
def demo_args(p: argparse.ArgumentParser) -> None:
    from .demo import MAX_WRITERS

    p.add_argument("--size", type=cliargs.size, default=cliargs.size("1G"),
                   help="region size (1G, 256M…)")
    p.add_argument("--writers", type=cliargs.bounded_int(0, MAX_WRITERS, "--writers"), default=2,
                   help=f"native writer threads (0..{MAX_WRITERS}: each owns a word of the "
                        "page)")
    p.add_argument("--write-rate", type=cliargs.rate, default=0,
                   help="stores/s per writer (0 or 'max': as fast as they can)")
    p.add_argument("--pattern", choices=[x.name.lower() for x in Pattern], default="random")
    p.add_argument("--memtype", choices=MEMORY_TYPES, default="anon")
    p.add_argument("--populate", action=argparse.BooleanOptionalAction, default=None,
                   help="read-populate before protecting (default: only without "
                        "WP_UNPOPULATED); --populate forces the pre-6.4 path")
    p.add_argument("--engine-priority", type=cliargs.bounded_int(-20, 99, "--engine-priority"),
                   default=0, help="engine thread: >0 SCHED_FIFO priority, <0 nice value, "
                                   "0 inherit")
    p.add_argument("--timeout", type=cliargs.seconds, default=None,
                   help="abort the snapshot if it has not finished (image committed) after "
                        "this many seconds")
    p.add_argument("--stall-timeout", type=cliargs.seconds, default=None,
                   help="abort when a pipe target takes nothing for this many seconds")
    p.add_argument("--busy-poll", type=cliargs.bounded_int(0, 1_000_000, "--busy-poll"), default=0,
                   metavar="US", help="the engine spins this many µs before it sleeps: lower "
                   "fault latency for a core (0: off)")


def _register_snapshot(subparsers) -> None:
    p = subparsers.add_parser("snapshot", help="background snapshot with UFFD-WP")
    sub = p.add_subparsers(dest="snapshot_command", required=True)
    d = sub.add_parser("demo", help="snapshot a region under native writers, check the image",
                       description="Native writers store into a region while it is "
                       "snapshotted; the image is then checked against the initial content "
                       "plus each writer's logged stores up to its cut.")
    demo_args(d)
    d.add_argument("--to", dest="target", type=target, default=None,
                   help="file:PATH, exec:CMD or fd:N (default: a temporary file, checked, "
                        "then removed unless --keep)")
    d.add_argument("--keep", action="store_true",
                   help="keep the default temporary image (its path is printed)")
    d.add_argument("--stats-json", type=cliargs.output_file,
                   help="save engine and writer statistics here (for wrlat)")
    d.add_argument("--no-verify", action="store_true", help="skip the check of the image")
    d.add_argument("--no-progress", action="store_true")
    d.add_argument("--json", action="store_true", help="print the result as JSON")
    d.set_defaults(func=cmd_demo)


def _progress_bar(enabled: bool):
    if not enabled:
        return None, None
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn("{task.description:<10}"), BarColumn(),
                   TextColumn("{task.percentage:>5.1f}%"), TextColumn("{task.fields[detail]}"),
                   TimeElapsedColumn())
    task = bar.add_task("filling", total=None, detail="region (initial pattern, writers)")

    def update(p) -> None:
        if isinstance(p, str):  # a phase without counters: 'checking' the image
            bar.update(task, description=p, total=None, detail="image against the writers' logs")
            return
        bar.update(task, description="snapshot", total=p.pages_total, completed=p.pages_saved,
                   detail=f"{p.fault_pages} pages saved first, "
                          f"{p.throughput / (1 << 20):.0f} MiB/s out")
    return bar, update


def run_demo_command(args, verify: bool = True):
    from .demo import run_demo

    show = not getattr(args, "no_progress", False) and sys.stderr.isatty()
    bar, update = _progress_bar(show)
    try:
        if bar:
            bar.start()
        return run_demo(args.size, args.target, writers=args.writers, rate=args.write_rate,
                        pattern=Pattern[args.pattern.upper()], memtype=args.memtype,
                        populate=args.populate, verify=verify, progress=update,
                        engine_priority=args.engine_priority, timeout=args.timeout,
                        busy_poll_us=args.busy_poll,
                        stall_timeout=args.stall_timeout, keep=getattr(args, "keep", True))
    finally:
        if bar:
            bar.stop()


def _demo_report(res) -> str:
    from .demo import stall_summary

    s = res.snapshot.stats
    mib = 1 << 20
    lines = [
        f"snapshot of {res.params['size'] / mib:.0f} MiB {res.params['memtype']} to "
        f"{res.params['target']}: {res.snapshot.duration_s:.3f} s "
        f"(freeze {s.protect_ns / 1e6:.1f} ms"
        + (f", populate {s.populate_ns / 1e6:.1f} ms" if res.snapshot.populated else "") + ")",
        f"image {res.snapshot.image_bytes / mib:.1f} MiB for {res.nonzero_bytes / mib:.1f} MiB "
        f"non-zero memory (ratio {res.snapshot.image_bytes / max(1, res.nonzero_bytes):.4f}); "
        f"{s.zero_pages} zero pages recorded without bytes",
        f"pages: {s.linear_pages} in the linear pass, {s.fault_pages} saved first for a "
        f"faulting writer ({s.faults} fault messages)",
        f"writers: {res.params['writers']} x {res.params['rate'] or 'max'} stores/s; "
        + stall_summary(res.fault_stalls_ns),
        f"check: {res.check_note}",
    ]
    lines += [f"note: {n}" for n in res.snapshot.notes]
    if res.kept_image:
        lines.append(f"image: {res.kept_image}")
    return "\n".join(lines)


def cmd_demo(args) -> int:
    from .engine import SnapshotError
    from .targets import TargetError

    try:
        res = run_demo_command(args, verify=not args.no_verify)
        if args.stats_json:
            res.save(args.stats_json)
    except (SnapshotError, TargetError, MemoryUnavailableError, UffdError, OSError,
            ValueError) as exc:
        err(str(exc))
        return EXIT_FAIL
    if args.json:
        print(json.dumps(res.as_dict(), indent=1))
    else:
        print(_demo_report(res))
        if args.stats_json:
            print(f"statistics saved to {args.stats_json} (uffdwp wrlat --stats "
                  f"{args.stats_json})")
    return 0 if res.check is None or res.check.ok else EXIT_FAIL


# --- image -------------------------------------------------------------------------------------
def _register_image(subparsers) -> None:
    p = subparsers.add_parser("image", help="inspect and check snapshot images")
    sub = p.add_subparsers(dest="image_command", required=True)
    i = sub.add_parser("info", help="header, regions and record counts")
    i.add_argument("file")
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=cmd_image_info)
    v = sub.add_parser("verify", help="check every checksum and that the image is complete")
    v.add_argument("file", help="the image, or - for standard input (a stream, e.g. from a "
                                "FIFO or `exec:` target)")
    v.set_defaults(func=cmd_image_verify)
    x = sub.add_parser("extract", help="write the memory of one region (raw bytes) to a file")
    x.add_argument("file")
    x.add_argument("--region", type=cliargs.bounded_int(0, 65535, "--region"), default=0)
    x.add_argument("-o", "--output", required=True,
                   help="the file to write (it appears only once the image verified)")
    x.set_defaults(func=cmd_image_extract)


def _open_image_error(exc: Exception, path: str) -> int:
    from .image import ImageError

    if isinstance(exc, (ImageError, ValueError)):
        err(f"{path}: {exc}")
        return EXIT_FAIL
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename and exc.filename != path else ""
        err(f"{path}: {where}{exc.strerror or exc}")
        return EXIT_FAIL
    raise exc


def cmd_image_info(args) -> int:
    from .image import ImageError, ImageHeader, iter_records

    try:
        with open(args.file, "rb") as f:
            header = ImageHeader.read_from(f)
        counts: dict[str, int] = {}
        pages: dict[str, int] = {}
        complete = False
        for rec in iter_records(args.file):
            counts[rec.name] = counts.get(rec.name, 0) + 1
            if rec.name != "END":
                pages[rec.name] = pages.get(rec.name, 0) + rec.count
            complete = complete or rec.name == "END"
    except (ImageError, OSError) as exc:
        return _open_image_error(exc, args.file)
    info = {"file": args.file, "bytes": os.path.getsize(args.file), "version": header.version,
            "flags": header.flags, "created_ns": header.created_ns,
            "regions": [r.__dict__ for r in header.regions], "records": counts,
            "pages": pages, "end_record": complete}
    if args.json:
        print(json.dumps(info, indent=1))
        return 0
    print(f"{args.file}: uffdwp snapshot image v{header.version}, {info['bytes']} bytes, "
          f"flags {header.flags:#x}")
    for n, r in enumerate(header.regions):
        print(f"  region {n}: {r.memtype:<16} {r.address:#x} {r.length / (1 << 20):.1f} MiB, "
              f"page size {r.page_size}")
    recorded = sum(pages.values())
    print(f"  records: {counts}; pages recorded: {recorded} of {header.total_pages} the "
          f"header describes; end record: {'yes' if complete else 'NO (partial image)'}")
    print("  (`uffdwp image verify` checks checksums and completeness)")
    return 0


def cmd_image_verify(args) -> int:
    from .image import ImageError, verify

    try:
        r = verify(sys.stdin.buffer if args.file == "-" else args.file)
    except (ImageError, OSError, ValueError) as exc:
        return _open_image_error(exc, args.file)
    print(f"{args.file}: OK: {len(r.header.regions)} region(s), {r.pages} pages "
          f"({r.data_pages} with data, {r.zero_pages} zero), {r.records} records, "
          f"{r.image_bytes} bytes")
    return 0


def cmd_image_extract(args) -> int:
    from .image import ImageError, extract

    try:
        summary = extract(args.file, args.region, args.output)
    except (ImageError, OSError, ValueError) as exc:
        return _open_image_error(exc, args.file)
    length = summary.header.regions[args.region].length
    print(f"region {args.region}: {length} bytes -> {args.output}")
    return 0


__all__ = ["demo_args", "register", "run_demo_command", "target"]
