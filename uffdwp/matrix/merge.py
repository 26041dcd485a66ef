# SPDX-License-Identifier: GPL-2.0-only
"""One matrix report from several (`uffdwp matrix --merge DIR...`: the nightly's per-kernel jobs
each upload theirs), and the matrix's KCIDB file: every kernel's kcidb.json merged by kcidb-io.

A merged report is written by the same report builder as a matrix run, from each report's
summary.json and kernel directories (copied in, so that its links work). A kernel that was expected
(--kernels) but is in no report is listed as "missing": its job ended without uploading one.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from .report import KernelOutcome, write_report
from .results import load_kernel_dir

KCIDB_FILE = "kcidb.json"
MISSING = "missing"  # a kernel's status when no report came back for it


class MergeError(ValueError):
    """A report directory cannot be merged; the message says which and why."""


def load_outcomes(report_dir: Path) -> tuple[list[KernelOutcome], dict]:
    """The kernels of a matrix report directory, as the runner had them, and its summary."""
    try:
        summary = json.loads((report_dir / "summary.json").read_text())
        kernels = summary["kernels"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise MergeError(f"{report_dir}: not a matrix report (summary.json: {e})") from e
    outcomes = []
    for k in kernels:
        record = load_kernel_dir(report_dir / k["name"])
        # summary.json lists the runner's own note after the record's notes
        note = "; ".join(n for n in k.get("notes") or [] if n not in record.notes)
        outcomes.append(KernelOutcome(
            name=k["name"], via=k.get("via", ""), status=k.get("status", "failed"),
            seconds=float(k.get("seconds") or 0.0), exit_status=k.get("exit_status"),
            detail=k.get("detail") or "", package=k.get("package") or "",
            package_version=k.get("package_version") or "", note=note, record=record,
            phases=k.get("phases") or {}))
    return outcomes, summary


def merge_kcidb(docs: list[dict]) -> dict:
    """KCIDB I/O data of one or more runs as one dataset (kcidb-io; the result keeps their schema
    version)."""
    from kcidb_io.schema import LATEST

    return LATEST.merge(docs[0], docs[1:])


def write_kcidb(report_dir: Path, outcomes: list[KernelOutcome]) -> Path | None:
    """report_dir/kcidb.json from the kernels' own kcidb.json files (`uffdwp run` writes them),
    each validated by kcidb-io first; None when no kernel has one."""
    from jsonschema.exceptions import ValidationError
    from kcidb_io.schema import LATEST

    docs = []
    for o in outcomes:
        path = report_dir / o.name / KCIDB_FILE
        if not path.is_file():
            continue
        try:
            doc = json.loads(path.read_text())
            LATEST.validate(doc)
        except ValueError as e:
            raise MergeError(f"{path}: {e}") from e
        except ValidationError as e:
            raise MergeError(f"{path}: not valid KCIDB data: {e.message}") from e
        docs.append(doc)
    if not docs:
        return None
    out = report_dir / KCIDB_FILE
    out.write_text(json.dumps(merge_kcidb(docs), indent=1) + "\n")
    return out


def merge_reports(dirs: list[Path], out: Path, expected: list[str] | None = None) -> dict:
    """Write one matrix report into `out` from the matrix reports in `dirs`; returns its summary."""
    outcomes: list[KernelOutcome] = []
    summaries = []
    out.mkdir(parents=True, exist_ok=True)
    for d in dirs:
        got, summary = load_outcomes(d)
        summaries.append(summary)
        for o in got:
            if any(o.name == seen.name for seen in outcomes):
                raise MergeError(f"kernel {o.name} is in more than one report ({d})")
            if (d / o.name).is_dir():
                shutil.copytree(d / o.name, out / o.name, symlinks=True, dirs_exist_ok=True)
            outcomes.append(o)
    for name in expected or []:
        if not any(o.name == name for o in outcomes):
            outcomes.append(KernelOutcome(name=name, via="", status=MISSING,
                                          detail="no report: its run ended without one"))
    if expected:  # the order asked for
        outcomes.sort(key=lambda o: expected.index(o.name) if o.name in expected else len(expected))
    accels = sorted({s.get("accel", "?") for s in summaries})
    meta = {"started": min((s.get("started", "") for s in summaries), default=""),
            "seconds": max((float(s.get("seconds") or 0) for s in summaries), default=0.0),
            "accel": ",".join(accels) or "?",
            "accel_reason": f"merged from {len(dirs)} report(s)", "jobs": len(dirs),
            "merged_from": [str(d) for d in dirs]}
    summary = write_report(out, outcomes, meta)
    write_kcidb(out, outcomes)
    return summary
