"""The matrix report: summary.json, report.md and a self-contained report.html.

Views: kernels x negotiated features (against the mainline version that brought each feature),
kernels x test verdicts (one row per test and memory type), known bugs found per kernel, and links
to each kernel's own result directory and console log.
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..kernel_facts import FEATURE_FACTS
from . import crosscheck
from .results import VERDICTS, KernelRecord

SCHEMA = "uffdwp-matrix/1"
STATUSES = ("ok", "failed", "boot-failed", "timeout", "skipped")


@dataclass
class KernelOutcome:
    name: str
    via: str  # qemu | direct | vagrant
    status: str  # ok | failed | boot-failed | timeout | skipped
    seconds: float = 0.0
    exit_status: int | None = None
    detail: str = ""
    package: str = ""
    package_version: str = ""
    note: str = ""
    record: KernelRecord = field(default_factory=KernelRecord)
    phases: dict[str, float] = field(default_factory=dict)
    fix_evidence: dict[str, dict] = field(default_factory=dict)  # bug -> changelog.FixEvidence


def kernel_version(release: str) -> tuple[int, int] | None:
    m = re.match(r"(\d+)\.(\d+)", release or "")
    return (int(m.group(1)), int(m.group(2))) if m else None


def _ver(s: str) -> tuple[int, int]:
    a, b = s.split(".")[:2]
    return int(a), int(b)


def feature_cell(features: int | None, release: str, value: int, since: str) -> str:
    """present | present-early (backported: kernel older than mainline) | absent-expected |
    absent-unexpected | unknown."""
    if features is None:
        return "unknown"
    kv = kernel_version(release)
    present = bool(features & value)
    if kv is None:
        return "present" if present else "absent-unexpected"
    old = kv < _ver(since)
    if present:
        return "present-early" if old else "present"
    return "absent-expected" if old else "absent-unexpected"


def final_status(boot_status: str, rec: KernelRecord) -> str:
    """Boot outcome refined by the verdicts: any fail or error fails the kernel; known bugs
    and skips do not (they are the expected result on older kernels)."""
    if boot_status in ("boot-failed", "timeout", "skipped"):
        return boot_status
    if rec.tests:
        return "failed" if rec.summary.get("fail", 0) + rec.summary.get("error", 0) else "ok"
    return boot_status


def overall_ok(outcomes: list[KernelOutcome]) -> bool:
    return all(o.status == "ok" for o in outcomes)


def release_text(o: KernelOutcome) -> str:
    """The booted release, with the Debian package version it came from."""
    rel = o.record.release or "?"
    return f"{rel} ({o.package_version})" if o.package_version else rel


def known_bugs(rec: KernelRecord) -> list[dict]:
    seen: dict[str, dict] = {}
    for t in rec.tests:
        if t.verdict == "known-bug":
            bug = t.bug or {"key": t.reason or t.test}
            entry = seen.setdefault(bug.get("key", t.test), {**bug, "tests": []})
            entry["tests"].append(t.nodeid)
    return list(seen.values())


def test_rows(outcomes: list[KernelOutcome]) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    for o in outcomes:
        for t in o.record.tests:
            if (t.test, t.memtype) not in rows:
                rows.append((t.test, t.memtype))
    return rows


def verdict_of(o: KernelOutcome, test: str, memtype: str):
    for t in o.record.tests:
        if t.test == test and t.memtype == memtype:
            return t
    return None


def summary_dict(outcomes: list[KernelOutcome], meta: dict) -> dict:
    kernels = []
    for o in outcomes:
        r = o.record
        kernels.append({
            "name": o.name, "via": o.via, "status": o.status,
            "release": r.release, "version": r.version, "machine": r.machine,
            "package": o.package, "package_version": o.package_version,
            "features": r.features,
            "features_hex": None if r.features is None else f"0x{r.features:x}",
            "feature_names": r.feature_names,
            "ioctls": r.ioctls,
            "verdicts": {v: r.summary.get(v, 0) for v in VERDICTS},
            "known_bugs": known_bugs(r),
            "exit_status": o.exit_status, "seconds": round(o.seconds, 1),
            "phases": o.phases, "results_source": r.source,
            "detail": o.detail, "notes": r.notes + ([o.note] if o.note else []),
            "dir": f"{o.name}/", "console": f"{o.name}/console.log",
        })
    return {"schema": SCHEMA, **meta, "ok": overall_ok(outcomes), "kernels": kernels,
            "changelog_crosscheck": crosscheck.summary(outcomes)}


# --- Markdown -------------------------------------------------------------------------------
MD_FEATURE = {"present": "✓", "present-early": "✓ (backport)", "absent-expected": "-",
              "absent-unexpected": "✗ (missing)", "unknown": "?"}
MD_VERDICT = {"pass": "pass", "fail": "**FAIL**", "skip": "skip", "known-bug": "known-bug",
              "error": "**ERROR**"}


def render_md(outcomes: list[KernelOutcome], meta: dict) -> str:
    names = [o.name for o in outcomes]
    L = [f"# uffdwp kernel matrix: {'all ok' if overall_ok(outcomes) else 'FAILURES'}", ""]
    L.append(f"Run {meta.get('started', '')}, {meta.get('seconds', 0):.0f} s wall, "
             f"accel {meta.get('accel', '?')} ({meta.get('accel_reason', '')}), "
             f"{meta.get('jobs', 1)} kernel(s) at a time.")
    L += ["", "## Kernels", "",
          "| kernel | status | release | via | features | pass | fail | skip | known-bug | error "
          "| time | results |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for o in outcomes:
        r = o.record
        feat = "?" if r.features is None else f"0x{r.features:x}"
        link = f"[{o.name}/]({o.name}/) · [console]({o.name}/console.log)"
        if Path(meta.get("report_dir", "."), o.name, "report.md").exists():
            link = f"[report]({o.name}/report.md) · " + link
        counts = " | ".join(str(r.summary.get(v, 0)) for v in VERDICTS)
        L.append(f"| {o.name} | {o.status} | {release_text(o)} | {o.via} | {feat} | {counts} "
                 f"| {o.seconds:.0f} s | {link} |")
    problems = [o for o in outcomes if o.detail or o.record.notes or o.note]
    if problems:
        L += ["", "Notes:", ""]
        for o in problems:
            for n in [o.detail, o.note, *o.record.notes]:
                if n:
                    L.append(f"- **{o.name}**: " + n.replace("\n", " ⏎ "))
    L += ["", "## Negotiated features (UFFDIO_API, features=0 handshake)", "",
          "✓ present · - absent, as expected for the kernel's version · ✗ absent though mainline "
          "had it by then · ✓ (backport) present before its mainline version · ? not probed", "",
          "| feature | bit | mainline | " + " | ".join(names) + " |",
          "|---|---|---|" + "---|" * len(names)]
    for f in FEATURE_FACTS:
        cells = [MD_FEATURE[feature_cell(o.record.features, o.record.release, f.value, f.since)]
                 for o in outcomes]
        bit = f.value.bit_length() - 1
        L.append(f"| {f.name} | {bit} | {f.since} | " + " | ".join(cells) + " |")
    rows = test_rows(outcomes)
    L += ["", "## Verdicts (test x memory type)", ""]
    if not rows:
        L.append("No test results.")
    else:
        L += ["| test | memtype | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
        for test, mem in rows:
            cells = []
            for o in outcomes:
                t = verdict_of(o, test, mem)
                cells.append("" if t is None else MD_VERDICT.get(t.verdict, t.verdict))
            L.append(f"| {test} | {mem} | " + " | ".join(cells) + " |")
    L += ["", "## Known bugs found", ""]
    any_bug = False
    for o in outcomes:
        for b in known_bugs(o.record):
            any_bug = True
            L.append(f"- **{o.name}** ({o.record.release}): {b.get('key', '?')} — commit "
                     f"{b.get('commit', '?')}, fixed in {b.get('fixed_in', '?')} "
                     f"({len(b['tests'])} test(s))")
    if not any_bug:
        L.append("None.")
    check = crosscheck.render_md(outcomes)
    return "\n".join(L) + "\n" + (f"\n{check}" if check else "")


# --- HTML -----------------------------------------------------------------------------------
CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:1em 0}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;font-size:.92em}
th{background:#f0f0f0}
.ok,.pass,.present{background:#d9f2d9}
.failed,.fail,.error,.absent-unexpected,.boot-failed,.timeout{background:#f8c9c9}
.skip,.absent-expected,.unknown,.skipped{background:#eee;color:#666}
.known-bug,.present-early{background:#fbe7b5}
code,pre{font-family:ui-monospace,monospace}
pre{background:#f7f7f7;padding:.5em;white-space:pre-wrap}
"""
HTML_FEATURE = {"present": "✓", "present-early": "✓ backport", "absent-expected": "-",
                "absent-unexpected": "✗ missing", "unknown": "?"}


def _e(s: object) -> str:
    return html.escape(str(s), quote=True)


def render_html(outcomes: list[KernelOutcome], meta: dict) -> str:
    names = [o.name for o in outcomes]
    title = f"uffdwp kernel matrix: {'all ok' if overall_ok(outcomes) else 'FAILURES'}"
    H = [f"<!doctype html><html><head><meta charset='utf-8'><title>{_e(title)}</title>"
         f"<style>{CSS}</style></head><body><h1>{_e(title)}</h1>",
         f"<p>Run {_e(meta.get('started', ''))}, {meta.get('seconds', 0):.0f} s wall, accel "
         f"<b>{_e(meta.get('accel', '?'))}</b> ({_e(meta.get('accel_reason', ''))}), "
         f"{_e(meta.get('jobs', 1))} kernel(s) at a time.</p>",
         "<h2>Kernels</h2><table><tr><th>kernel</th><th>status</th><th>release</th><th>via</th>"
         "<th>features</th>" + "".join(f"<th>{v}</th>" for v in VERDICTS)
         + "<th>time</th><th>results</th></tr>"]
    for o in outcomes:
        r = o.record
        feat = "?" if r.features is None else f"0x{r.features:x}"
        links = [f"<a href='{_e(o.name)}/'>{_e(o.name)}/</a>",
                 f"<a href='{_e(o.name)}/console.log'>console</a>"]
        if Path(meta.get("report_dir", "."), o.name, "report.html").exists():
            links.insert(0, f"<a href='{_e(o.name)}/report.html'>report</a>")
        H.append(f"<tr><td><b>{_e(o.name)}</b></td><td class='{_e(o.status)}'>{_e(o.status)}</td>"
                 f"<td>{_e(release_text(o))}</td><td>{_e(o.via)}</td><td><code>{feat}</code></td>"
                 + "".join(f"<td class='{v if r.summary.get(v) else ''}'>{r.summary.get(v, 0)}</td>"
                           for v in VERDICTS)
                 + f"<td>{o.seconds:.0f} s</td><td>{' · '.join(links)}</td></tr>")
    H.append("</table>")
    for o in outcomes:
        notes = [n for n in [o.detail, o.note, *o.record.notes] if n]
        if notes:
            H.append(f"<p><b>{_e(o.name)}</b>:</p><pre>{_e(chr(10).join(notes))}</pre>")
    H.append("<h2>Negotiated features</h2><p>UFFDIO_API with features=0. ✓ present · - absent, "
             "as expected for the kernel's version · ✗ absent though mainline had it by then · "
             "✓ backport: present before its mainline version · ? not probed</p>"
             "<table><tr><th>feature</th><th>bit</th><th>mainline</th>"
             + "".join(f"<th>{_e(n)}</th>" for n in names) + "</tr>")
    for f in FEATURE_FACTS:
        H.append(f"<tr><td>{_e(f.name)}</td><td>{f.value.bit_length() - 1}</td>"
                 f"<td>{_e(f.since)}</td>")
        for o in outcomes:
            c = feature_cell(o.record.features, o.record.release, f.value, f.since)
            H.append(f"<td class='{c}'>{HTML_FEATURE[c]}</td>")
        H.append("</tr>")
    H.append("</table><h2>Verdicts (test x memory type)</h2>")
    rows = test_rows(outcomes)
    if not rows:
        H.append("<p>No test results.</p>")
    else:
        H.append("<table><tr><th>test</th><th>memtype</th>"
                 + "".join(f"<th>{_e(n)}</th>" for n in names) + "</tr>")
        for test, mem in rows:
            H.append(f"<tr><td>{_e(test)}</td><td>{_e(mem)}</td>")
            for o in outcomes:
                t = verdict_of(o, test, mem)
                if t is None:
                    H.append("<td></td>")
                else:
                    tip = t.reason
                    if t.bug:
                        tip += f" [{t.bug.get('key')} {t.bug.get('commit', '')}]"
                    H.append(f"<td class='{_e(t.verdict)}' title='{_e(tip)}'>{_e(t.verdict)}</td>")
            H.append("</tr>")
        H.append("</table>")
    H.append("<h2>Known bugs found</h2><ul>")
    found = False
    for o in outcomes:
        for b in known_bugs(o.record):
            found = True
            H.append(f"<li><b>{_e(o.name)}</b> ({_e(o.record.release)}): {_e(b.get('key', '?'))} — "
                     f"commit <code>{_e(b.get('commit', '?'))}</code>, fixed in "
                     f"{_e(b.get('fixed_in', '?'))}: {_e(', '.join(b['tests']))}</li>")
    if not found:
        H.append("<li>None.</li>")
    H.append("</ul>" + crosscheck.render_html(outcomes) + "</body></html>")
    return "\n".join(H) + "\n"


def write_report(report_dir: Path, outcomes: list[KernelOutcome], meta: dict) -> dict:
    report_dir.mkdir(parents=True, exist_ok=True)
    meta = {**meta, "report_dir": str(report_dir)}
    summary = summary_dict(outcomes, meta)
    (report_dir / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    (report_dir / "report.md").write_text(render_md(outcomes, meta))
    (report_dir / "report.html").write_text(render_html(outcomes, meta))
    return summary
