# SPDX-License-Identifier: GPL-2.0-only
"""The matrix report: summary.json, report.md, report.html and junit.xml.

In triage order: the verdict line; the kernels with their counts; per-kernel facts; regressions,
failures and errors with their reasons; known bugs with their fixes; skips by cause; then the
negotiated features and every result, one row per test id (node id), one column per kernel.

Extension point: a view that adds a row per kernel registers a function with @kernel_row, a view
that adds a section registers one with @section; both write plain data (matrix/doc.py), shown the
same in Markdown and HTML:

    @kernel_row("QEMU background snapshot")
    def _qemu_snapshot(o: KernelOutcome, kernel_dir: Path) -> Cell: ...

    @section
    def _wrlat(outcomes: list[KernelOutcome], report_dir: Path) -> Section | None: ...
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..kernel_facts import FEATURE_FACTS
from ..kernel_version import at_least, kernel_version
from ..runner import context, junit, skips, tables
from .doc import Cell, Section, Table, render_html, render_md
from .results import VERDICTS, KernelRecord

SCHEMA = "uffdwp-matrix/2"
STATUSES = ("ok", "failed", "boot-failed", "timeout", "interrupted", "skipped")
KINDS = ("regression", "fail", "error", "known-bug", "pass", "skip")  # counted per kernel


@dataclass
class KernelOutcome:
    name: str
    via: str  # qemu | direct | vagrant
    status: str  # one of STATUSES
    seconds: float = 0.0
    exit_status: int | None = None
    detail: str = ""
    package: str = ""
    package_version: str = ""
    note: str = ""
    record: KernelRecord = field(default_factory=KernelRecord)
    phases: dict[str, float] = field(default_factory=dict)
    fix_evidence: dict[str, dict] = field(default_factory=dict)  # bug -> changelog.FixEvidence


def feature_cell(features: int | None, release: str, value: int, since: str) -> str:
    """present | present-early (backported: kernel older than mainline) | absent-expected |
    absent-unexpected | unknown."""
    if features is None:
        return "unknown"
    kv = kernel_version(release or "")
    present = bool(features & value)
    if kv is None:
        return "present" if present else "absent-unexpected"
    old = not at_least(kv, since)
    if present:
        return "present-early" if old else "present"
    return "absent-expected" if old else "absent-unexpected"


def final_status(boot_status: str, rec: KernelRecord) -> str:
    """Boot outcome refined by the verdicts: any fail or error fails the kernel; known bugs
    and skips do not (they are the expected result on older kernels)."""
    if boot_status in ("boot-failed", "timeout", "interrupted", "skipped"):
        return boot_status
    if rec.tests:
        return "failed" if rec.summary.get("fail", 0) + rec.summary.get("error", 0) else "ok"
    return boot_status


def overall_ok(outcomes: list[KernelOutcome]) -> bool:
    return all(o.status == "ok" for o in outcomes)


def _tests(o: KernelOutcome) -> list[dict]:
    return o.record.as_results()["tests"]


def known_bugs(rec: KernelRecord) -> list[dict]:
    """Known bugs a kernel showed: the fix (one accessor: runner.tables.fix_of) and the tests."""
    found = tables.known_bugs(rec.as_results()["tests"])
    return [{"key": b.fix.key, "title": b.fix.title, "commit": b.fix.commit,
             "fixed_in": b.fix.fixed_in, "backports": list(b.fix.backports),
             "tests": [t["nodeid"] for t in b.tests]} for b in found]


def test_rows(outcomes: list[KernelOutcome]) -> list[str]:
    """Every test id any kernel reported, in first-seen order: one row each, nothing merged."""
    return list(dict.fromkeys(t.nodeid for o in outcomes for t in o.record.tests))


def results_by_id(o: KernelOutcome) -> dict[str, dict]:
    return {t["nodeid"]: t for t in _tests(o)}


# --- extension point -----------------------------------------------------------------------------
KernelRowFn = Callable[[KernelOutcome, Path], "Cell | str"]
SectionFn = Callable[[list[KernelOutcome], Path], "Section | None"]
KERNEL_ROWS: list[tuple[str, KernelRowFn]] = []
SECTIONS: list[SectionFn] = []


def kernel_row(label: str) -> Callable[[KernelRowFn], KernelRowFn]:
    """Register a row of the per-kernel table: fn(outcome, kernel's result dir) -> cell."""
    def register(fn: KernelRowFn) -> KernelRowFn:
        KERNEL_ROWS.append((label, fn))
        return fn
    return register


def section(fn: SectionFn) -> SectionFn:
    """Register a section (after the skips, before the features and the full grid)."""
    SECTIONS.append(fn)
    return fn


@kernel_row("package")
def _package_row(o: KernelOutcome, _dir: Path) -> Cell:
    pkg = (o.record.run.get("context") or {}).get("package") or {}
    version = o.package_version or pkg.get("package_version", "")
    return Cell(version or "—", note=o.package or pkg.get("package", ""))


@kernel_row("machine")
def _machine_row(o: KernelOutcome, _dir: Path) -> Cell:
    ctx = o.record.run.get("context") or {}
    return Cell(f"{o.via}, {ctx.get('accel', 'accel unknown')}", note=o.record.machine)


@kernel_row("features")
def _features_row(o: KernelOutcome, _dir: Path) -> Cell:
    f = o.record.features
    return Cell("?" if f is None else f"0x{f:x}", code=True)


@kernel_row("known bugs")
def _bugs_row(o: KernelOutcome, _dir: Path) -> Cell:
    bugs = known_bugs(o.record)
    return Cell(", ".join(b["key"] for b in bugs) or "none", css="known-bug" if bugs else "")


@kernel_row("suite")
def _suite_row(o: KernelOutcome, _dir: Path) -> Cell:
    suite = o.record.run.get("suite") or {}
    return Cell(suite.get("version", "?"), note=(suite.get("commit") or "")[:12])


# --- views ---------------------------------------------------------------------------------------
def kernel_counts(o: KernelOutcome) -> dict[str, int]:
    return tables.counts(_tests(o))


def _count(kind: str, n: int) -> Cell:
    css = "" if not n else "bad" if kind in tables.BAD else "known" if kind == "known-bug" else ""
    return Cell(str(n), css=css, strong=bool(n) and kind in tables.BAD)


def _kernels(outcomes: list[KernelOutcome], report_dir: Path, meta: dict) -> Section:
    rows = []
    for o in outcomes:
        n = kernel_counts(o)
        links = [f"{o.name}/report.html" if (report_dir / o.name / "report.html").exists()
                 else f"{o.name}/", f"{o.name}/console.log"]
        rows.append([Cell(o.name, strong=True), Cell(o.status, css=o.status),
                     Cell(o.record.release or "?", code=True),
                     *[_count(k, n[k]) for k in KINDS], f"{o.seconds:.0f} s",
                     Cell("report", href=links[0]), Cell("console", href=links[1])])
    notes = [f"{o.name}: {n}" for o in outcomes
             for n in [o.detail, o.note, *o.record.notes] if n]
    return Section("Kernels", "kernels", paragraphs=[_run_line(meta)], tables=[Table(
        ["kernel", "status", "release", *KINDS, "time", "results", "console"], rows)],
        pre="\n".join(notes))


def _per_kernel(outcomes: list[KernelOutcome], report_dir: Path) -> Section:
    rows = [[Cell(label, strong=True), *[fn(o, report_dir / o.name) for o in outcomes]]
            for label, fn in KERNEL_ROWS]
    return Section("Per kernel", "per-kernel",
                   tables=[Table(["", *[o.name for o in outcomes]], rows)])


def _fix_cell(fix: tables.Fix | None, prefix: str = "") -> Cell:
    if fix is None:
        return Cell("")
    return Cell(f"{prefix}{fix.commit}", href=fix.url or "", code=False,
                note=f"“{fix.title}” ({fix.releases()})")


def _failures(outcomes: list[KernelOutcome], _report_dir: Path) -> Section:
    rows = []
    for o in outcomes:
        for t in tables.problems(_tests(o)):
            kind = tables.kind(t)
            fix = tables.fix_of(t.get("bug")) if kind == "regression" else None
            rows.append([o.name, Cell(kind, css=kind), Cell(t["nodeid"], code=True),
                         t.get("reason", ""), _fix_cell(fix, "undid ")])
    return Section(f"Regressions, failures and errors ({len(rows)})", "failures",
                   paragraphs=[] if rows else ["None."],
                   tables=[Table(["kernel", "verdict", "test", "reason", "fix"], rows)]
                   if rows else [])


def _bugs(outcomes: list[KernelOutcome], _report_dir: Path) -> Section | None:
    per_kernel = {o.name: {b.fix.key: b for b in tables.known_bugs(_tests(o))}
                  for o in outcomes}
    fixes = {k: b.fix for bugs in per_kernel.values() for k, b in bugs.items()}
    if not fixes:
        return None
    rows = [[Cell(key, css="known-bug"), _fix_cell(fix),
             *[Cell(str(len(per_kernel[o.name][key].tests)), css="known-bug")
               if key in per_kernel[o.name] else Cell("—") for o in outcomes]]
            for key, fix in fixes.items()]
    return Section("Known bugs (results per kernel)", "known-bugs",
                   paragraphs=["The kernel predates the fix (or its backport): the bug is real "
                               "and expected there."],
                   tables=[Table(["bug", "fix", *[o.name for o in outcomes]], rows)])


def _skips(outcomes: list[KernelOutcome], _report_dir: Path) -> Section | None:
    per_kernel = {o.name: {g.cause: g for g in skips.skip_groups(_tests(o))} for o in outcomes}
    causes = sorted({c for groups in per_kernel.values() for c in groups},
                    key=lambda c: (skips.KINDS.index(c.kind), c.name))
    if not causes:
        return None
    rows = []
    for c in causes:
        name = Cell(c.name, code=c.kind == "feature",
                    note=f"mainline {c.since}" if c.since else "")
        rows.append([skips.KIND_TITLES[c.kind], name,
                     *[str(len(per_kernel[o.name][c].tests)) if c in per_kernel[o.name]
                       else "—" for o in outcomes]])
    return Section("Skips by cause", "skips",
                   tables=[Table(["cause", "what", *[o.name for o in outcomes]], rows)])


def _features(outcomes: list[KernelOutcome], _report_dir: Path) -> Section:
    marks = {"present": "✓", "present-early": "✓ backport", "absent-expected": "-",
             "absent-unexpected": "✗ missing", "unknown": "?"}
    rows = []
    for f in FEATURE_FACTS:
        cells = []
        for o in outcomes:
            c = feature_cell(o.record.features, o.record.release, f.value, f.since)
            cells.append(Cell(marks[c], css=c))
        rows.append([f.name, str(f.value.bit_length() - 1), f.since, *cells])
    return Section(
        "Negotiated features", "features",
        paragraphs=["UFFDIO_API with features=0. ✓ present · - absent, as expected for the "
                    "kernel's version · ✗ absent though mainline had it by then · ✓ backport: "
                    "present before its mainline version · ? not probed"],
        tables=[Table(["feature", "bit", "mainline", *[o.name for o in outcomes]], rows)])


def _note(t: dict) -> str:
    """What a grid cell says besides its verdict, so that no reason hides in a tooltip."""
    kind = tables.kind(t)
    if kind == "pass":
        return ""
    fix = tables.fix_of(t.get("bug"))
    if fix is not None and kind in ("known-bug", "regression"):
        return fix.key
    if kind == "skip":
        cause = skips.cause_of(t.get("reason", ""))
        return f"no {cause.name}" if cause.kind == "feature" else cause.name
    return t.get("reason", "")


def _grid(outcomes: list[KernelOutcome], _report_dir: Path) -> Section:
    by_kernel = [results_by_id(o) for o in outcomes]
    rows = []
    for nodeid in test_rows(outcomes):
        cells = []
        for results in by_kernel:
            t = results.get(nodeid)
            cells.append(Cell() if t is None else
                         Cell(tables.kind(t), css=tables.kind(t), note=_note(t)))
        rows.append([Cell(nodeid, code=True), *cells])
    n = sum(len(r) for r in by_kernel)
    return Section(f"All {n} results (test id × kernel)", "grid",
                   paragraphs=[] if rows else ["No test results."],
                   tables=[Table(["test", *[o.name for o in outcomes]], rows)] if rows else [])


def sections(outcomes: list[KernelOutcome], report_dir: Path, meta: dict) -> list[Section]:
    views = [_per_kernel, _failures, _bugs, _skips, *SECTIONS, _features, _grid]
    return [_kernels(outcomes, report_dir, meta),
            *[s for s in (view(outcomes, report_dir) for view in views) if s is not None]]


def verdict(outcomes: list[KernelOutcome]) -> tuple[str, str, str]:
    """(css, word, line) of the whole matrix."""
    n: Counter = Counter()
    for o in outcomes:
        n.update(kernel_counts(o))
    status = Counter(o.status for o in outcomes)
    if not overall_ok(outcomes) or any(n[k] for k in tables.BAD):
        css, word = "bad", "FAIL"
    elif n["known-bug"]:
        css, word = "known", "KNOWN BUGS"
    else:
        css, word = "good", "ALL OK"
    kernels = ", ".join(f"{status[s]} {s}" for s in STATUSES if status[s])
    line = (f"{word} · kernels: {kernels or 'none'} · "
            + " · ".join(tables.count_label(k, n[k]) for k in KINDS)
            + f" of {tables.plural(sum(n.values()), 'result')}")
    return css, word, line


def summary_dict(outcomes: list[KernelOutcome], meta: dict) -> dict:
    kernels = []
    for o in outcomes:
        r = o.record
        kernels.append({
            "name": o.name, "via": o.via, "status": o.status,
            "release": r.release, "version": r.version, "machine": r.machine,
            "package": o.package, "package_version": o.package_version,
            "accel": (r.run.get("context") or {}).get("accel"),
            "features": r.features,
            "features_hex": None if r.features is None else f"0x{r.features:x}",
            "feature_names": r.feature_names,
            "ioctls_hex": None if r.ioctls is None else f"0x{r.ioctls:x}",
            "verdicts": {v: r.summary.get(v, 0) for v in VERDICTS},
            "regressions": kernel_counts(o)["regression"],
            "known_bugs": known_bugs(r),
            "exit_status": o.exit_status, "seconds": round(o.seconds, 1),
            "phases": o.phases, "results_source": r.source,
            "detail": o.detail, "notes": r.notes + ([o.note] if o.note else []),
            "dir": f"{o.name}/", "console": f"{o.name}/console.log",
            "results": f"{o.name}/results.json",
            "changelog": o.fix_evidence,
        })
    meta = {k: v for k, v in meta.items() if k != "report_dir"}  # paths stay relative
    return {"schema": SCHEMA, "suite": context.suite(), **meta,
            "ok": overall_ok(outcomes),
            "feature_table": [{"name": f.name, "bit": f.value.bit_length() - 1,
                               "since": f.since} for f in FEATURE_FACTS],
            "kernels": kernels}


def render_md_report(outcomes: list[KernelOutcome], meta: dict, report_dir: Path) -> str:
    _, word, line = verdict(outcomes)
    return render_md(f"uffdwp kernel matrix: {word}", f"**{line}**",
                     sections(outcomes, report_dir, meta))


def render_html_report(outcomes: list[KernelOutcome], meta: dict, report_dir: Path) -> str:
    css, word, line = verdict(outcomes)
    return render_html(f"uffdwp kernel matrix: {word}", line, css,
                       sections(outcomes, report_dir, meta))


def _run_line(meta: dict) -> str:
    return (f"Run {meta.get('started', '')}, {meta.get('seconds', 0):.0f} s wall, accel "
            f"{meta.get('accel', '?')} ({meta.get('accel_reason', '')}), "
            f"{meta.get('jobs', 1)} kernel(s) at a time"
            + (f"; interrupted by {meta['interrupted']}: guests stopped, the report holds what "
               "finished" if meta.get("interrupted") else ""))


def write_report(report_dir: Path, outcomes: list[KernelOutcome], meta: dict) -> dict:
    report_dir.mkdir(parents=True, exist_ok=True)
    from . import qemu_report  # the QEMU section: registered on import (it imports this one)

    summary = summary_dict(outcomes, meta)
    summary["qemu_snapshot"] = qemu_report.summary_section(outcomes, report_dir)
    (report_dir / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    (report_dir / "report.md").write_text(render_md_report(outcomes, meta, report_dir))
    (report_dir / "report.html").write_text(render_html_report(outcomes, meta, report_dir))
    suites = [junit.run_suite(o.record.as_results(),
                              {"allow_known_bugs": True, **o.record.run})
              for o in outcomes if o.record.tests]
    junit.write(report_dir / "junit.xml", suites)
    return summary
