# SPDX-License-Identifier: GPL-2.0-only
"""`uffdwp run`: the suites on this kernel, with progress, into a report directory."""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from .. import __version__, cliargs, hostsetup
from ..cli import HelpFormatter
from ..kernel_version import KernelVersion, kernel_version, version_signature
from ..probe import kernel_info, probe
from . import (
    context,
    junit,
    kcidb,
    ktap,
    report_html,
    report_md,
    results,
    session,
    tables,
    unlock,
    verdicts,
    watchdog,
)
from .plugin import bug_selection, function_name
from .progress import make_progress

EPILOG = """\
exit status (kselftest conventions):
  0  every test passed or skipped
  1  a test failed or errored, or reproduced a known bug (unless --allow-known-bugs),
     or pytest itself failed
  4  every test was skipped (KSFT_SKIP), or none was selected

Known bugs fail the run by default: the kernel has the bug, and a conformance run should not
say otherwise. Runs over old kernels on purpose (the VM matrix, CI of a stable branch) pass
--allow-known-bugs: known bugs are then reported but only failures and regressions (a known
bug reproduced on a kernel that has its fix) fail the run.

A test still running past its timeout (plus as much again, at most 10 s) has its worker killed
and replaced: error "hung in <phase>", with the line it stopped at. ^C or SIGTERM stops every
process of the run within 5 s, writes the report of what finished and restores the host.

Everything after `--` goes to pytest, e.g.  uffdwp run -- -x --timeout 30
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "run", help="run the conformance suites on this kernel and write a report",
        description="Run the UFFD-WP conformance suites on the running kernel, in parallel, "
                    "and write results.json, report.md, report.html, junit.xml, results.ktap "
                    "and kcidb.json into a report directory.",
        epilog=EPILOG, formatter_class=HelpFormatter)
    p.add_argument("--report", type=cliargs.report_dir, default=None, metavar="DIR",
                   help="report directory (default: reports/run-<release>-<timestamp>)")
    p.add_argument("--suites", type=cliargs.existing_path, default=None, metavar="PATH",
                   help="test directory or file (default: the suites/ next to this uffdwp)")
    p.add_argument("-j", "--jobs", type=cliargs.jobs, default="auto", metavar="N",
                   help="parallel pytest-xdist workers: a number or 'auto' (default); "
                        "1 runs in one process without xdist")
    p.add_argument("-k", dest="keyword", default=None, metavar="EXPR",
                   help="only tests matching the pytest -k expression")
    p.add_argument("--bugs", default=None, metavar="KEYS",
                   help="only the tests that reproduce known bugs: 'all', or bug keys separated "
                        "by commas (uffdwp.known_bugs.KNOWN_BUGS)")
    p.add_argument("--allow-known-bugs", action="store_true",
                   help="known bugs (on kernels without the fix) do not fail the run")
    p.add_argument("--list", action="store_true",
                   help="list the test × memory type cases without running them")
    k = p.add_argument_group(
        "KCIDB", "what kcidb.json says about the kernel's source, and existing KCIDB objects to "
                 "attach the tests to")
    k.add_argument("--kcidb-tree", default="", metavar="NAME",
                   help="tree name, e.g. mainline, stable, net-next (default: the distribution "
                        "of a packaged kernel)")
    k.add_argument("--kcidb-git-url", default="", metavar="URL",
                   help="https URL of the git repository the kernel was built from")
    k.add_argument("--kcidb-git-commit", default="", metavar="HASH", type=_git_hash,
                   help="full commit hash the kernel was built from")
    k.add_argument("--kcidb-git-commit-name", default="", metavar="NAME",
                   help="`git describe` of that commit")
    k.add_argument("--kcidb-checkout-id", default="", metavar="ID", type=_kcidb_id,
                   help="attach to this existing checkout (origin:id) instead of writing one")
    k.add_argument("--kcidb-build-id", default="", metavar="ID", type=_kcidb_id,
                   help="attach the tests to this existing build (origin:id); no checkout or "
                        "build is written")
    k.add_argument("--kcidb-artifacts-url", default="", metavar="URL",
                   help="where this report directory will be published: log and file URLs")
    p.add_argument("pytest_args", nargs="*", metavar="-- PYTEST_ARGS",
                   help="extra arguments for pytest, after --")
    p.set_defaults(func=run)


# --- helpers -----------------------------------------------------------------------------------
def _git_hash(text: str) -> str:
    if text and not re.fullmatch(r"[0-9a-f]{40}", text):
        raise argparse.ArgumentTypeError("a full 40-digit lowercase hex commit hash")
    return text


def _kcidb_id(text: str) -> str:
    if text and not re.fullmatch(r"[a-z0-9_]+:.+", text):
        raise argparse.ArgumentTypeError("an id of the form origin:rest")
    return text


def _kcidb_options(args: argparse.Namespace) -> kcidb.Options:
    return kcidb.Options(
        checkout_id=args.kcidb_checkout_id, build_id=args.kcidb_build_id,
        tree_name=args.kcidb_tree, git_url=args.kcidb_git_url, git_commit=args.kcidb_git_commit,
        git_commit_name=args.kcidb_git_commit_name, artifacts_url=args.kcidb_artifacts_url)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", text)


def _extra_args(args: argparse.Namespace) -> list[str]:
    extra = ["-k", args.keyword] if args.keyword else []
    if getattr(args, "bugs", None):
        extra.append(f"--uffdwp-bugs={args.bugs}")
    return extra + [a for a in args.pytest_args if a != "--"]


def _suites(args: argparse.Namespace) -> Path:
    return (args.suites or session.default_suites()).resolve()


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# --- uffdwp run --list -------------------------------------------------------------------------
def list_cases(args: argparse.Namespace, console: Console) -> int:
    suites = _suites(args)
    out = Path(os.environ.get("TMPDIR", "/tmp")) / f"uffdwp-list-{os.getpid()}"
    out.mkdir(parents=True, exist_ok=True)
    events, log = out / "events.jsonl", out / "pytest.log"
    events.unlink(missing_ok=True)
    cmd = session.pytest_command(suites, events, collect_only=True, extra=_extra_args(args))
    proc = session.start(cmd, log)
    items = [e for e in session.follow(proc, events) if e["event"] in ("item", "test")]
    rc = proc.wait()
    rows: dict[str, dict] = {}
    for e in items:
        if e["event"] == "test":  # a collection error
            console.print(f"[red]cannot collect {escape(e['nodeid'])}[/]: {escape(e['reason'])}")
            continue
        row = rows.setdefault(tables.row_key(e), {"memtypes": [], "bug": e.get("bug")})
        if e.get("memtype"):
            row["memtypes"].append(e["memtype"])
    for key, row in rows.items():
        mem = " ".join(row["memtypes"]) or "-"
        bug = f"  bug:{row['bug']}" if row["bug"] else ""
        console.print(f"{escape(tables.short_row(key))}  [cyan]{mem}[/]{bug}", highlight=False,
                      soft_wrap=True)
    n = sum(1 for e in items if e["event"] == "item")
    console.print(f"{n} cases in {len(rows)} tests")
    if rc not in (0, 5):
        console.print(escape(_tail(log)), highlight=False)
    for path in (events, log):
        path.unlink(missing_ok=True)
    out.rmdir()
    return 0 if rc in (0, 5) else 1


# --- uffdwp run --------------------------------------------------------------------------------
def _classify(event: dict, kv: KernelVersion | None) -> dict:
    verdict, reason = verdicts.classify(event.get("outcome", "error"), event.get("reason", ""),
                                        event.get("bug"), kv, event.get("failure"))
    memtype = event.get("memtype") or tables.guess_memtype(event["nodeid"])  # crashed: no props
    return results.make_test(event["nodeid"], event.get("test") or function_name(event["nodeid"]),
                             memtype, verdict, reason,
                             verdicts.bug_info(event.get("bug"), kv), event.get("duration", 0.0),
                             event.get("bugs"))


STOP_SECONDS = 4.0  # SIGINT to the stop of every process of the run: the issue allows 5


def _stop(proc: subprocess.Popen) -> None:
    """After ^C or SIGTERM: pytest and its workers are in a process group of their own
    (session.start). SIGINT lets them stop and report; a worker blocked in a page fault that
    nobody resolves never gets to, so whatever is left of the group after STOP_SECONDS is
    killed. Host state is restored by the caller (hostsetup.leave), whoever was killed."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGINT)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=STOP_SECONDS)
    _kill_group(proc)


def _kill_group(proc: subprocess.Popen) -> None:
    """Nothing of the run left running: workers, and the children tests forked."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


class _Terminated(KeyboardInterrupt):
    """SIGTERM, handled as ^C: stop the run, write the report of what finished."""


def _set_sigterm(handler):
    """signal.signal where it can be (the main thread: a CLI run); the previous handler."""
    try:
        return signal.signal(signal.SIGTERM, handler)
    except ValueError:  # another thread (run() called by a test): no stop by SIGTERM there
        return signal.getsignal(signal.SIGTERM)


def _on_sigterm(signum: int, frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one stop is enough; the report follows
    raise _Terminated


def run(args: argparse.Namespace) -> int:
    console = Console()
    if args.bugs:
        try:
            bug_selection(args.bugs)
        except ValueError as e:
            console.print(f"[red]uffdwp run: --bugs: {escape(str(e))}[/]")
            return 2
    if args.list:
        return list_cases(args, console)

    t0 = time.monotonic()
    started = dt.datetime.now(dt.timezone.utc).astimezone()
    kernel = kernel_info()
    # The suite's commit as the run starts: the code that runs is the code imported now.
    suite = context.suite()
    accel, accel_evidence = context.accel()
    kv = kernel_version(kernel["release"], kernel["version"], version_signature())
    try:
        probed = probe(with_register=False)
    except Exception as exc:  # the report must still be written, saying why
        probed = None
        probe_error = f"probe failed: {exc}"
    else:
        probe_error = "; ".join(probed.errors)
    api = results.api_section(probed)

    report = args.report or Path("reports") / (
        f"run-{_slug(kernel['release'])}-{started.strftime('%Y%m%d-%H%M%S')}")
    report = report.resolve()
    report.mkdir(parents=True, exist_ok=True)
    # Measurements a suite keeps beside its verdicts (e.g. QEMU's snapshot timings) go here.
    os.environ.setdefault("UFFDWP_ARTIFACTS", str(report / "artifacts"))
    # The event log is followed while pytest appends to it: keep it on a local file system
    # (a report directory on a guest's 9p share answers such reads with ENODATA), then copy it.
    scratch = Path(tempfile.mkdtemp(prefix="uffdwp-run-"))
    events = scratch / "events.jsonl"
    log = report / "pytest.log"

    if not api:
        console.print(f"[yellow]userfaultfd unavailable:[/] {escape(probe_error)} "
                      "(the suites will skip)")
    watch = scratch / "watchdog"
    cmd = session.pytest_command(_suites(args), events, jobs=args.jobs, extra=_extra_args(args),
                                 watchdog=watch)
    tests: dict[str, dict] = {}
    details: dict[str, str] = {}
    collected: list[str] = []
    interrupted = False
    previous_term = _set_sigterm(_on_sigterm)
    proc = session.start(cmd, log)
    with make_progress(console, kernel["release"]) as progress:

        def consume(event: dict) -> None:
            if event["event"] == "collected" and not collected:
                collected.extend(event["nodeids"])
                progress.collected(collected)
            elif event["event"] == "test" and event["nodeid"] not in tests:
                # (a node id reported twice — xdist re-running after a crash — keeps the first)
                if event["nodeid"] not in collected:
                    progress.expect(1)  # a collection error: not among the collected ids
                test = tests[event["nodeid"]] = _classify(event, kv)
                if event.get("message"):
                    details[test["nodeid"]] = event["message"]
                progress.update(test)

        try:
            for event in session.follow(proc, events, on_idle=progress.idle):
                consume(event)
        except KeyboardInterrupt:
            _set_sigterm(signal.SIG_IGN)
            interrupted = True
            _stop(proc)
            for event in session.follow(proc, events):  # what finished while pytest stopped
                consume(event)
        finally:
            _kill_group(proc)  # pytest ended: whatever it left behind goes too
            hostsetup.leave(proc.pid)  # restored now if pytest could not (killed)
    _set_sigterm(signal.SIG_IGN if interrupted else previous_term)
    pytest_rc = proc.wait()
    if events.exists():
        shutil.move(str(events), report / "events.jsonl")

    # Collected but never reported: pytest stopped (crash, ^C, -x) before running them.
    if interrupted:
        why = "not run: interrupted"
    elif pytest_rc in (0, 1):  # pytest finished normally yet never reported the test
        why = "no result reported (did the suite files change during the run?)"
    else:
        why = f"not run: pytest stopped with exit status {pytest_rc}"
    # the one running when pytest itself stopped (-j 1: faulthandler's timer) says so
    ended = {n: r for n in collected if n not in tests
             for r in [watchdog.crash_reason(watch, n)] if r}
    if ended and not interrupted:
        why = (f"not run: pytest ended with {next(iter(ended))} (with -j 1 one process runs "
               "every test)")
    for nodeid in collected:
        if nodeid not in tests:
            reason = ended.get(nodeid) or why
            tests[nodeid] = results.make_test(nodeid, function_name(nodeid),
                                              tables.guess_memtype(nodeid), "error", reason,
                                              None, 0.0)
    ordered = [tests[n] for n in collected if n in tests]
    ordered += [t for n, t in tests.items() if n not in set(collected)]

    summary = verdicts.summarize([t["verdict"] for t in ordered])
    status = verdicts.exit_status(summary, args.allow_known_bugs)
    if pytest_rc in (2, 3, 4) and not ordered:  # usage/internal error: nothing to show for it
        status = verdicts.KSFT_FAIL
    data = results.build(kernel, api, ordered, status)
    unlock_line = unlock.summary_line(ordered, probed)
    seconds = time.monotonic() - t0
    run_info = {
        "run_id": started.strftime("%Y%m%dT%H%M%S"), "started": started.isoformat(),
        "seconds": round(seconds, 2), "hostname": platform.node(), "jobs": args.jobs,
        "allow_known_bugs": args.allow_known_bugs, "suites": str(_suites(args)),
        "pytest": {"argv": cmd.argv, "cwd": str(cmd.cwd), "exit_status": pytest_rc,
                   "pid": proc.pid},
        "interrupted": interrupted, "kernel_version_parsed": str(kv) if kv else None,
        "probe_error": probe_error, "unlock": unlock_line, "uffdwp": __version__,
        "python": sys.version.split()[0], "suite": suite,
        "context": {"package": context.kernel_package(kernel["release"], kernel["version"],
                                                      version_signature()),
                    "accel": accel, "accel_evidence": accel_evidence},
        "kcidb": {k: v for k, v in vars(_kcidb_options(args)).items() if v},
    }
    _write_reports(report, data, run_info, details, _kcidb_options(args))
    shutil.rmtree(scratch, ignore_errors=True)

    s = data["summary"]
    console.print(
        f"[bold]uffdwp run[/] {kernel['release']}: {len(ordered)} tests in {seconds:.1f}s — "
        + "  ".join(f"{v} {n}" for v, n in s.items()) + f" → exit {status}", highlight=False,
        soft_wrap=True)
    if pytest_rc in (2, 3, 4):
        console.print(f"[red]pytest exited with status {pytest_rc}[/]; end of {log}:")
        console.print(escape(_tail(log)), highlight=False)
    console.print(f"report: {report}", highlight=False, soft_wrap=True)
    if unlock_line:  # last: what a non-root user must change for the skipped tests to run
        console.print(f"[yellow]{escape(unlock_line)}[/]", highlight=False, soft_wrap=True)
    return status


def _write_reports(report: Path, data: dict, run_info: dict, details: dict[str, str],
                   kcidb_options: kcidb.Options) -> None:
    results.write_json(report / "results.json", data)
    results.write_json(report / "run.json", run_info)
    results.write_json(report / "kcidb.json", kcidb.render(data, run_info, kcidb_options))
    junit.write(report / "junit.xml", [junit.run_suite(data, run_info, details)])
    (report / "results.ktap").write_text(ktap.render(data), encoding="utf-8")
    (report / "report.md").write_text(report_md.render(data, run_info, details),
                                      encoding="utf-8")
    (report / "report.html").write_text(report_html.render(data, run_info, details),
                                        encoding="utf-8")
