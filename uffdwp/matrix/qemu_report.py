# SPDX-License-Identifier: GPL-2.0-only
"""The matrix report's QEMU section: per kernel, the row "QEMU background snapshot" (verdict,
times, image sizes) and the wrlat histograms, from what the suites left in
<kernel>/artifacts/ (qemu-snapshot-<memtype>.json, wrlat-demo.json) beside their verdicts.

A section registered with report.py's extension point (@section), written once for Markdown and
HTML; summary.json's "qemu_snapshot" comes from summary_section().
"""

from __future__ import annotations

import json
from pathlib import Path

from ..bench.wrlat import format_histogram
from .doc import Cell, Section, Table
from .report import KernelOutcome, section

ROW = "QEMU background snapshot"
SNAPSHOT_TEST = "test_qemu_background_snapshot"
REFUSED_TEST = "test_qemu_snapshot_refused"
MEMTYPES = ("anon", "shmem")
MIB = 1 << 20


def _load(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def artifacts(report_dir: Path, o: KernelOutcome) -> dict:
    d = Path(report_dir) / o.name / "artifacts"
    return {"runs": {m: r for m in MEMTYPES
                     if (r := _load(d / f"qemu-snapshot-{m}.json")) is not None},
            "demo": _load(d / "wrlat-demo.json")}


def verdict_of(o: KernelOutcome, test: str, memtype: str):
    """The result of suite test *test* (the function name) on *memtype*, or None."""
    return next((t for t in o.record.tests if t.test == test and t.memtype == memtype), None)


def cell(o: KernelOutcome, run: dict | None, memtype: str) -> tuple[str, str]:
    """(verdict, detail) of the QEMU row for one kernel and memory backend."""
    t = verdict_of(o, SNAPSHOT_TEST, memtype)
    refused = verdict_of(o, REFUSED_TEST, memtype)
    if t is None:
        return "", "not run"
    if t.verdict == "skip" and refused is not None and refused.verdict == "pass":
        why = (run or {}).get("refused") or refused.reason
        return "refused", f"QEMU refused, as it must: {t.reason}; QEMU: {why}"
    if run is None or run.get("refused"):
        return t.verdict, t.reason
    tm = run["timing"]
    detail = (f"snapshot {tm['snapshot']:.2f} s, restore {tm['restore']:.2f} s, boot "
              f"{tm['boot']:.1f} s; image {run['image_bytes'] / MIB:.1f} MiB for "
              f"{run['ram_mib']} MiB RAM, precopy {run['precopy_bytes'] / MIB:.1f} MiB; "
              f"{run['restored']}")
    if t.verdict != "pass":
        detail = f"{t.reason} — {detail}"
    return t.verdict, detail


def _wrlat_pairs(art: dict) -> list[tuple[str, dict, list[int], str]]:
    """(title, wrlat result, the writers' own histogram in µs, note) per traced run."""
    out = []
    for m, run in art["runs"].items():
        w, traced = run.get("writer") or {}, run.get("wrlat")
        if traced and w.get("slowest_us") is not None:
            out.append((f"QEMU ({m})", traced, w["slowest_us"],
                        f"guest writer, rdtsc: its {w.get('slowest_n')} longest added stalls, "
                        f"p50 ~{w.get('slowest_p50_us') or 0:.1f} us"))
    demo = art.get("demo")
    if demo and demo.get("wrlat"):
        own = demo["writers"]
        out.append(("uffdwp snapshot demo", demo["wrlat"], own["histogram_us"],
                    f"native writers' own: their {own.get('slowest_n')} longest of "
                    f"{own['count']} stalls, p50 {own.get('p50_us_slowest_n') or 0:.1f} us"))
    return out


def _skip_note(art: dict) -> str:
    for run in art["runs"].values():
        if run.get("wrlat_skipped"):
            return run["wrlat_skipped"]
    return ""


@section
def qemu_section(outcomes: list[KernelOutcome], report_dir: Path) -> Section | None:
    arts = {o.name: artifacts(report_dir, o) for o in outcomes}
    rows = []
    for m in MEMTYPES:
        cells = []
        for o in outcomes:
            verdict, detail = cell(o, arts[o.name]["runs"].get(m), m)
            cells.append(Cell(verdict or "—", css="pass" if verdict == "refused" else verdict,
                              note=detail if verdict else ""))
        rows.append([ROW, m, *cells])
    if all(c.text == "—" for r in rows for c in r[2:]):
        return None  # no kernel ran the QEMU suite
    blocks = []
    for o in outcomes:
        pairs = _wrlat_pairs(arts[o.name])
        if not pairs:
            blocks.append(f"{o.name}: {_skip_note(arts[o.name]) or 'no wrlat result'}")
        for title, traced, own_us, note in pairs:
            blocks += [f"{o.name} — {title}: wrlat {traced['count']} waits, p50 "
                       f"~{traced.get('p50_us') or 0:.1f} us; {note}",
                       "wrlat --pid (kernel):", format_histogram(traced["histogram_us"]),
                       "writers' own:", format_histogram(own_us), ""]
    return Section(ROW, "qemu", paragraphs=[
        "QEMU's own background snapshot of a boot-sector guest writing every page at full "
        "speed (suites/test_qemu_snapshot.py), restored in a second QEMU and checked to be a "
        "consistent cut. Below the table: wrlat's waits in handle_userfault() (bpftrace) beside "
        "the writers' own, per kernel."],
        tables=[Table(["row", "memory", *[o.name for o in outcomes]], rows)],
        pre="\n".join(blocks))


def summary_section(outcomes: list[KernelOutcome], report_dir: Path) -> dict:
    """summary.json's "qemu_snapshot": kernel -> memtype -> verdict, detail, the run's data."""
    out: dict = {}
    for o in outcomes:
        art = artifacts(report_dir, o)
        out[o.name] = {m: {"verdict": v, "detail": d, "run": art["runs"].get(m)}
                       for m in MEMTYPES
                       for v, d in [cell(o, art["runs"].get(m), m)] if v}
        if art.get("demo"):
            out[o.name]["wrlat_demo"] = art["demo"]
    return out
