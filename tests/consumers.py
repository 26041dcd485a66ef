# SPDX-License-Identifier: GPL-2.0-only
"""The real consumers of uffdwp's reports, as checks: kcidb-io validates kcidb.json at the newest
schema it knows, junitparser reads junit.xml, the kernel's own kunit_parser.py (from Debian's
linux-source package, fetched by ci/fetch-kunit-parser.sh) reads results.ktap. Each check
compares what the consumer understood with results.json.

Used by tests/test_runner_reports.py and by ci/check-reports.py on real report directories.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
KUNIT_DIR = Path(os.environ.get("UFFDWP_KUNIT_DIR", REPO / "vms" / "cache" / "kunit"))
KUNIT_MISSING = (f"the kernel's kunit_parser.py is not in {KUNIT_DIR}: run "
                 "ci/fetch-kunit-parser.sh (it takes tools/testing/kunit from Debian's "
                 "linux-source-6.1 package)")


def kcidb_validate(doc: dict) -> dict:
    """Validate at the document's own version, then upgraded to the newest schema kcidb-io has;
    returns the upgraded document."""
    from kcidb_io import schema

    version = schema.LATEST
    while (version.major, version.minor) != (doc["version"]["major"],
                                              doc["version"]["minor"]):
        version = version.previous
        assert version is not None, f"kcidb-io does not know version {doc['version']}"
    version.validate_exactly(doc)
    upgraded = schema.LATEST.upgrade(doc)
    schema.LATEST.validate_exactly(upgraded)
    return upgraded


def junit_counts(path: Path, release: str) -> dict[str, int]:
    """Counts of the <testsuite> named *release*, read with junitparser."""
    from junitparser import Error, Failure, JUnitXml, Skipped

    xml = JUnitXml.fromfile(str(path))
    suites = [s for s in xml if s.name == release]
    assert len(suites) == 1, f"one testsuite named {release}: {[s.name for s in xml]}"
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0, "passed": 0,
              "skipped_with_message": 0}
    for case in suites[0]:
        counts["tests"] += 1
        results = case.result
        if not results:
            counts["passed"] += 1
        for r in results:
            if isinstance(r, Failure):
                counts["failures"] += 1
            elif isinstance(r, Error):
                counts["errors"] += 1
            elif isinstance(r, Skipped):
                counts["skipped"] += 1
                counts["skipped_with_message"] += bool(r.message)
    assert suites[0].tests == counts["tests"] and suites[0].failures == counts["failures"]
    assert suites[0].errors == counts["errors"] and suites[0].skipped == counts["skipped"]
    return counts


def kunit_parser():
    """The kernel's kunit_parser module, or None where it has not been fetched."""
    if not (KUNIT_DIR / "kunit_parser.py").exists():
        return None
    if str(KUNIT_DIR) not in sys.path:
        sys.path.insert(0, str(KUNIT_DIR))
    return importlib.import_module("kunit_parser")


def kunit_counts(ktap_text: str) -> dict[str, int]:
    """What the kernel's parser counts in a KTAP document (its summary line goes to a buffer)."""
    parser = kunit_parser()
    assert parser is not None, KUNIT_MISSING
    printer = parser.stdout  # kunit_printer bound sys.stdout at import: point it at a buffer
    saved = printer._output
    try:
        with contextlib.redirect_stdout(io.StringIO()) as out:
            printer._output = out
            test = parser.parse_run_tests(ktap_text.splitlines())
    finally:
        printer._output = saved
    c = test.counts
    return {"passed": c.passed, "failed": c.failed, "crashed": c.crashed, "skipped": c.skipped,
            "errors": c.errors, "xfail": getattr(c, "xfail", None), "status": test.status.name}


def expected_kunit_counts(summary: dict[str, int], parser_has_xfail: bool) -> dict[str, int]:
    """results.json's summary as kunit_parser should count it: kselftest's `ok … # XFAIL` is a
    pass to a parser without an xfail status."""
    known = summary.get("known-bug", 0)
    return {"passed": summary.get("pass", 0) + (0 if parser_has_xfail else known),
            "failed": summary.get("fail", 0) + summary.get("error", 0), "crashed": 0,
            "skipped": summary.get("skip", 0), "errors": 0}


def check_dir(report: Path, allow_known_bugs: bool | None = None) -> dict[str, object]:
    """Check one `uffdwp run` report directory with every consumer; returns the figures."""
    results = json.loads((report / "results.json").read_text())
    run = json.loads((report / "run.json").read_text()) if (report / "run.json").exists() else {}
    if allow_known_bugs is None:
        allow_known_bugs = bool(run.get("allow_known_bugs"))
    s, release = results["summary"], results["kernel"]["release"]
    figures: dict[str, object] = {"release": release, "summary": s}

    doc = json.loads((report / "kcidb.json").read_text())
    upgraded = kcidb_validate(doc)
    assert len(upgraded["tests"]) == len(results["tests"])
    assert all(t.get("environment") for t in upgraded["tests"])
    incidents = [i for i in upgraded.get("incidents", []) if i.get("present")]
    assert len(incidents) == s["known-bug"] + sum(
        1 for t in results["tests"] if t["verdict"] == "fail" and t.get("bug"))
    figures["kcidb"] = {"version": doc["version"], "tests": len(upgraded["tests"]),
                        "issues": len(upgraded.get("issues", [])),
                        "incidents_present": len(incidents),
                        "checkout": {k: v for k, v in (upgraded.get("checkouts") or [{}])[0]
                                     .items() if k in ("tree_name", "comment", "misc")}}

    j = junit_counts(report / "junit.xml", release)
    assert j["tests"] == len(results["tests"])
    assert j["failures"] == s["fail"] + (0 if allow_known_bugs else s["known-bug"])
    assert j["errors"] == s["error"]
    assert j["skipped"] == s["skip"] + (s["known-bug"] if allow_known_bugs else 0)
    figures["junit"] = j

    ktap = (report / "results.ktap").read_text()
    totals = f"# Totals: pass:{s['pass']} fail:{s['fail']} xfail:{s['known-bug']} xpass:0 " \
             f"skip:{s['skip']} error:{s['error']}"
    assert ktap.rstrip("\n").splitlines()[-1] == totals
    parser = kunit_parser()
    if parser is not None:
        got = kunit_counts(ktap)
        has_xfail = got.pop("xfail") is not None
        got.pop("status")
        assert got == expected_kunit_counts(s, has_xfail), (got, s)
        figures["kunit_parser"] = got
    else:
        figures["kunit_parser"] = "skipped: " + KUNIT_MISSING
    return figures
