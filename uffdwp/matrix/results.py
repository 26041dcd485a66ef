# SPDX-License-Identifier: GPL-2.0-only
"""Read one kernel's result directory into a uniform record.

Preferred source: results.json (schema uffdwp-results/1, written by `uffdwp run`). While that is
missing (or when the suites crashed before writing it) the record is pieced together from what
exists: junit.xml for verdicts, probe.json or our own .guest/api.json for negotiated features.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..kernel_facts import FEATURE_FACTS

VERDICTS = ("pass", "fail", "skip", "known-bug", "error")


@dataclass
class TestRow:
    nodeid: str
    test: str
    memtype: str
    verdict: str
    reason: str = ""
    bug: dict | None = None
    duration: float = 0.0


@dataclass
class KernelRecord:
    release: str = ""
    version: str = ""
    machine: str = ""
    features: int | None = None
    feature_names: list[str] = field(default_factory=list)
    ioctls: int | None = None
    tests: list[TestRow] = field(default_factory=list)
    summary: dict[str, int] = field(default_factory=lambda: dict.fromkeys(VERDICTS, 0))
    exit_status: int | None = None
    source: str = "none"  # results.json | junit.xml | none
    notes: list[str] = field(default_factory=list)
    run: dict = field(default_factory=dict)  # the kernel's run.json: context, suite, options

    def as_results(self) -> dict:
        """The record as a results.json document, for the run's own report writers."""
        api = {} if self.features is None else {
            "features": self.features, "feature_names": self.feature_names,
            "ioctls": self.ioctls or 0}
        return {"kernel": {"release": self.release, "version": self.version,
                           "machine": self.machine},
                "api": api, "tests": [asdict(t) for t in self.tests], "summary": self.summary,
                "exit_status": self.exit_status}


def feature_names(features: int) -> list[str]:
    names = [f.name for f in FEATURE_FACTS if features & f.value]
    unknown = features & ~sum(f.value for f in FEATURE_FACTS)
    if unknown:
        names.append(f"UNKNOWN(0x{unknown:x})")
    return names


def split_nodeid(nodeid: str) -> tuple[str, str]:
    """(test function, memtype) from 'suites/x.py::test_f[anon]' or 'test_f[anon-4k]'."""
    tail = nodeid.rsplit("::", 1)[-1]
    m = re.match(r"([^\[]+)(?:\[(.*)\])?$", tail)
    if not m:
        return tail, ""
    return m.group(1), m.group(2) or ""


def _load_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def from_results_json(data: dict, rec: KernelRecord) -> None:
    k = data.get("kernel") or {}
    rec.release = k.get("release", rec.release)
    rec.version = k.get("version", rec.version)
    rec.machine = k.get("machine", rec.machine)
    api = data.get("api") or {}
    if api.get("features") is not None:
        rec.features = int(api["features"])
        rec.feature_names = list(api.get("feature_names") or feature_names(rec.features))
    if api.get("ioctls") is not None:
        rec.ioctls = int(api["ioctls"])
    for t in data.get("tests") or []:
        test, memtype = split_nodeid(t.get("nodeid", ""))
        verdict = t.get("verdict", "error")
        if verdict not in VERDICTS:
            rec.notes.append(f"unknown verdict {verdict!r} for {t.get('nodeid')}: counted as error")
            verdict = "error"
        rec.tests.append(TestRow(
            nodeid=t.get("nodeid", ""), test=t.get("test") or test,
            memtype=t.get("memtype") if t.get("memtype") is not None else memtype,
            verdict=verdict, reason=t.get("reason") or "", bug=t.get("bug") or None,
            duration=float(t.get("duration") or 0.0)))
    rec.summary = dict.fromkeys(VERDICTS, 0)
    for row in rec.tests:
        rec.summary[row.verdict] += 1
    given = data.get("summary") or {}
    if given and any(given.get(v, 0) != rec.summary[v] for v in VERDICTS):
        rec.notes.append(f"results.json summary {given} disagrees with its tests; tests counted")
    if data.get("exit_status") is not None:
        rec.exit_status = int(data["exit_status"])
    rec.source = "results.json"


def from_junit(path: Path, rec: KernelRecord) -> None:
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as e:
        rec.notes.append(f"junit.xml unreadable: {e}")
        return
    for case in root.iter("testcase"):
        cls, name = case.get("classname", ""), case.get("name", "")
        nodeid = f"{cls.replace('.', '/')}.py::{name}" if cls else name
        test, memtype = split_nodeid(name)
        verdict, reason = "pass", ""
        for tag, v in (("failure", "fail"), ("error", "error"), ("skipped", "skip")):
            el = case.find(tag)
            if el is not None:
                verdict, reason = v, (el.get("message") or "").strip()
                if tag in ("skipped", "failure") and (el.get("type") or "").endswith(
                        ("xfail", "known-bug")):
                    verdict = "known-bug"
                break
        rec.tests.append(TestRow(nodeid, test, memtype, verdict, reason[:300], None,
                                 float(case.get("time") or 0.0)))
    rec.summary = dict.fromkeys(VERDICTS, 0)
    for row in rec.tests:
        rec.summary[row.verdict] += 1
    rec.source = "junit.xml"


def from_probe(data: dict, rec: KernelRecord) -> None:
    """probe.json (uffdwp probe --json) or .guest/api.json: kernel + api, tolerant of layout."""
    k = data.get("kernel") or {}
    if isinstance(k, dict):
        rec.release = rec.release or k.get("release", "")
        rec.version = rec.version or k.get("version", "")
        rec.machine = rec.machine or k.get("machine", "")
    api = data.get("api") if isinstance(data.get("api"), dict) else data
    if rec.features is None and api.get("features") is not None:
        rec.features = int(api["features"])
        rec.feature_names = feature_names(rec.features)
    if rec.ioctls is None and api.get("ioctls") is not None:
        rec.ioctls = int(api["ioctls"])
    if data.get("error"):
        rec.notes.append(f"probe: {data['error']}")


def load_kernel_dir(out: Path) -> KernelRecord:
    rec = KernelRecord()
    data = _load_json(out / "results.json")
    if data is not None:
        from_results_json(data, rec)
    elif (out / "junit.xml").exists():
        from_junit(out / "junit.xml", rec)
    rec.run = _load_json(out / "run.json") or {}
    for probe in (out / "probe.json", out / ".guest" / "api.json"):
        pdata = _load_json(probe)
        if pdata is not None:
            from_probe(pdata, rec)
    return rec
