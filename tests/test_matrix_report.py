# SPDX-License-Identifier: GPL-2.0-only
"""Matrix report generation from sample per-kernel result directories."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests import consumers
from uffdwp.matrix import report
from uffdwp.matrix.doc import Cell, Section, Table
from uffdwp.matrix.report import (
    KernelOutcome,
    feature_cell,
    final_status,
    write_report,
)
from uffdwp.matrix.results import feature_names, load_kernel_dir, split_nodeid


def results_json(release: str, features: int, tests: list[dict]) -> dict:
    summary: dict[str, int] = dict.fromkeys(["pass", "fail", "skip", "known-bug", "error"], 0)
    for t in tests:
        summary[t["verdict"]] += 1
    return {"schema": "uffdwp-results/1",
            "kernel": {"release": release, "version": "#1 SMP", "machine": "x86_64"},
            "api": {"features": features, "feature_names": feature_names(features),
                    "ioctls": 0x8000000000000003},
            "tests": tests, "summary": summary, "exit_status": 0}


def t(nodeid: str, verdict: str, **kw) -> dict:
    test, mem = split_nodeid(nodeid)
    return {"nodeid": nodeid, "test": test, "memtype": mem, "verdict": verdict,
            "reason": kw.get("reason", ""), "bug": kw.get("bug"), "duration": 0.01}


CLOSE_BUG = {"key": "close-reset", "commit": "c88033efe9a3", "fixed_in": "6.9"}


@pytest.fixture
def sample(tmp_path: Path) -> Path:
    d61 = tmp_path / "6.1"
    d61.mkdir()
    (d61 / "results.json").write_text(json.dumps(results_json("6.1.0-50-amd64", 0x1FFF, [
        t("suites/test_wp.py::test_wp_fault[anon]", "pass"),
        t("suites/test_wp.py::test_wp_unpopulated[anon]", "skip",
          reason="feature WP_UNPOPULATED absent"),
        t("suites/test_bugs.py::test_close_reset[shmem]", "known-bug", bug=CLOSE_BUG),
    ])))
    d612 = tmp_path / "6.12"
    d612.mkdir()
    (d612 / "results.json").write_text(json.dumps(results_json("6.12.117+deb13-amd64", 0x1FFFF, [
        t("suites/test_wp.py::test_wp_fault[anon]", "fail", reason="no fault"),
        t("suites/test_wp.py::test_wp_unpopulated[anon]", "pass"),
    ])))
    # a kernel whose suites wrote only junit.xml, plus our API probe
    d510 = tmp_path / "5.10"
    (d510 / ".guest").mkdir(parents=True)
    (d510 / "junit.xml").write_text(
        '<testsuites><testsuite name="pytest">'
        '<testcase classname="suites.test_wp" name="test_wp_fault[anon]" time="0.1"/>'
        '<testcase classname="suites.test_wp" name="test_wp_unpopulated[anon]" time="0">'
        '<skipped type="pytest.skip" message="feature WP_UNPOPULATED absent"/></testcase>'
        '<testcase classname="suites.test_wp" name="test_minor[shmem]" time="0">'
        '<error message="boom"/></testcase>'
        "</testsuite></testsuites>")
    (d510 / ".guest" / "api.json").write_text(json.dumps(
        {"kernel": {"release": "5.10.0-32-amd64", "version": "#1", "machine": "x86_64"},
         "api": {"features": 0x1FF, "ioctls": 0x8000000000000003}}))
    return tmp_path


def test_kernel_version_and_feature_cells():
    wp_unpop, since = 1 << 13, "6.4"
    assert feature_cell(0x1FFF, "6.1.0-50-amd64", wp_unpop, since) == "absent-expected"
    assert feature_cell(0x1FFFF, "6.12.1", wp_unpop, since) == "present"
    assert feature_cell(0x1FFF, "6.12.1", wp_unpop, since) == "absent-unexpected"
    assert feature_cell(0x3FFF, "6.1.0", wp_unpop, since) == "present-early"
    assert feature_cell(None, "6.1.0", wp_unpop, since) == "unknown"
    assert feature_cell(0x1FFF, "6.12.117+deb13-amd64", wp_unpop, since) == "absent-unexpected"
    assert feature_cell(0x1FFF, "weird", wp_unpop, since) == "absent-unexpected"


def test_load_results_json_and_junit_fallback(sample: Path):
    r61 = load_kernel_dir(sample / "6.1")
    assert r61.source == "results.json"
    assert r61.features == 0x1FFF and "WP_HUGETLBFS_SHMEM" in r61.feature_names
    assert r61.summary["known-bug"] == 1
    r510 = load_kernel_dir(sample / "5.10")
    assert r510.source == "junit.xml"
    assert r510.features == 0x1FF and r510.release == "5.10.0-32-amd64"
    assert r510.summary == {"pass": 1, "fail": 0, "skip": 1, "known-bug": 0, "error": 1}
    assert {(x.test, x.memtype) for x in r510.tests} >= {("test_minor", "shmem")}


def test_final_status_rules(sample: Path):
    assert final_status("ok", load_kernel_dir(sample / "6.1")) == "ok"  # known bug is not a failure
    assert final_status("ok", load_kernel_dir(sample / "6.12")) == "failed"
    assert final_status("failed", load_kernel_dir(sample / "5.10")) == "failed"
    assert final_status("timeout", load_kernel_dir(sample / "6.1")) == "timeout"
    assert final_status("failed", load_kernel_dir(sample / "nothing")) == "failed"


def _outcomes(sample: Path) -> list[KernelOutcome]:
    outcomes = []
    for name in ("5.10", "6.1", "6.12"):
        rec = load_kernel_dir(sample / name)
        outcomes.append(KernelOutcome(name=name, via="qemu", status=final_status("ok", rec),
                                      seconds=12.0, exit_status=0, record=rec))
    outcomes.append(KernelOutcome(name="7.2", via="qemu", status="boot-failed",
                                  detail="guest never reached its root"))
    return outcomes


META = {"started": "now", "seconds": 50.0, "accel": "tcg", "accel_reason": "test", "jobs": 2}


def test_write_report(sample: Path):
    summary = write_report(sample, _outcomes(sample), META)
    assert summary["ok"] is False
    by = {k["name"]: k for k in summary["kernels"]}
    assert by["6.1"]["features_hex"] == "0x1fff"
    assert by["6.1"]["known_bugs"][0]["commit"] == "c88033efe9a3"
    assert by["6.1"]["known_bugs"][0]["title"].startswith("reset ptes on close()")
    assert by["7.2"]["features"] is None and by["7.2"]["status"] == "boot-failed"
    assert json.loads((sample / "summary.json").read_text()) == summary
    md = (sample / "report.md").read_text()
    assert md.startswith("# uffdwp kernel matrix: FAIL\n\n**FAIL · kernels: 1 ok, 2 failed, "
                         "1 boot-failed · 0 regressions · 1 failure · 1 error · "
                         "1 known-bug result · 3 passed · 2 skipped of 8 results**")
    assert "| WP_UNPOPULATED | 13 | 6.4 | - | - | ✓ | ? |" in md
    assert "close-reset" in md and "c88033efe9a3" in md
    assert "| `suites/test_wp.py::test_wp_fault[anon]` | pass | pass | fail (no fault) |  |" in md
    assert "[console](7.2/console.log)" in md
    page = (sample / "report.html").read_text()
    assert page.startswith("<!doctype html>") and "<style>" in page
    assert "href='6.1/console.log'" in page
    assert "<script" not in page and " src=" not in page and "<link" not in page
    order = [page.index(f"id='{i}'") for i in ("verdict", "kernels", "per-kernel", "failures",
                                                  "known-bugs", "skips", "features", "grid")]
    assert order == sorted(order)


def test_every_result_has_a_row(sample: Path):
    """Rows are test ids: variants sharing a function and memory type are not merged."""
    d = sample / "6.1"
    data = json.loads((d / "results.json").read_text())
    data["tests"] += [t("suites/test_wp.py::test_order[anon-x]", "pass"),
                      t("suites/test_wp.py::test_order[x-anon]", "fail", reason="hidden?")]
    for row in data["tests"][-2:]:
        row["memtype"] = "anon"  # as the suites' user_properties say
    (d / "results.json").write_text(json.dumps(data))
    outcomes = _outcomes(sample)
    write_report(sample, outcomes, META)
    total = sum(len(o.record.tests) for o in outcomes)
    md = (sample / "report.md").read_text()
    grid = md[md.index("## All "):]
    assert grid.startswith(f"## All {total} results")
    rows = [r for r in grid.splitlines() if r.startswith("| `")]
    cells = [c for r in rows for c in r.split(" | ")[1:] if c.strip(" |")]
    assert len(cells) == total
    assert "| `suites/test_wp.py::test_order[x-anon]` |  | fail (hidden?) |" in md
    page = (sample / "report.html").read_text()
    grid_html = page[page.index("id='grid'"):]
    assert grid_html.count("<td class='") == total


def test_summary_json_schema_suite_features_relative(sample: Path):
    summary = write_report(sample, _outcomes(sample), META)
    assert summary["schema"] == "uffdwp-matrix/2"
    assert summary["suite"]["version"] and "commit" in summary["suite"]
    assert [f["name"] for f in summary["feature_table"]][:2] == ["PAGEFAULT_FLAG_WP",
                                                                 "EVENT_FORK"]
    assert summary["feature_table"][12] == {"name": "WP_HUGETLBFS_SHMEM", "bit": 12,
                                            "since": "5.19"}
    text = (sample / "summary.json").read_text()
    assert str(sample) not in text  # paths relative to the report directory
    assert by_name(summary, "6.1")["results"] == "6.1/results.json"


def by_name(summary: dict, name: str) -> dict:
    return next(k for k in summary["kernels"] if k["name"] == name)


def test_matrix_junit_one_suite_per_kernel(sample: Path):
    write_report(sample, _outcomes(sample), META)
    from junitparser import JUnitXml

    suites = {s.name: s for s in JUnitXml.fromfile(str(sample / "junit.xml"))}
    assert set(suites) == {"5.10.0-32-amd64", "6.1.0-50-amd64", "6.12.117+deb13-amd64"}
    counts = consumers.junit_counts(sample / "junit.xml", "6.1.0-50-amd64")
    assert counts == {"tests": 3, "failures": 0, "errors": 0, "skipped": 2, "passed": 1,
                      "skipped_with_message": 2}
    props = {p.name: p.value for p in suites["6.12.117+deb13-amd64"].properties()}
    assert props["uffd.features"] == "0x1ffff" and props["kernel.machine"] == "x86_64"


def test_extension_point(sample: Path):
    """A per-kernel row and a section, registered from outside, show in both formats."""
    @report.kernel_row("QEMU background snapshot")
    def _snapshot(o, kernel_dir):
        return Cell("ok" if o.record.tests else "—", css="ok" if o.record.tests else "",
                    note=kernel_dir.name)

    @report.section
    def _histogram(outcomes, report_dir):
        return Section("Write-fault latency", "wrlat", tables=[Table(
            ["kernel", "p50"], [[o.name, "3 µs"] for o in outcomes])])

    try:
        write_report(sample, _outcomes(sample), META)
    finally:
        report.KERNEL_ROWS.remove(("QEMU background snapshot", _snapshot))
        report.SECTIONS.remove(_histogram)
    md = (sample / "report.md").read_text()
    assert "| **QEMU background snapshot** | ok (5.10) | ok (6.1) | ok (6.12) | — (7.2) |" in md
    assert "## Write-fault latency" in md and "| 6.1 | 3 µs |" in md
    page = (sample / "report.html").read_text()
    assert "<h2 id='wrlat'>Write-fault latency</h2>" in page
    assert page.index("id='wrlat'") < page.index("id='features'")


def test_qemu_section(tmp_path: Path):
    """The QEMU row per kernel (a pass with its times, a refusal) and the wrlat histograms."""
    from uffdwp.matrix import qemu_report

    k1 = tmp_path / "7.2"
    (k1 / "artifacts").mkdir(parents=True)
    (k1 / "results.json").write_text(json.dumps(results_json("7.2.13-amd64", 0x1FFFF, [
        t("suites/test_qemu_snapshot.py::test_qemu_background_snapshot[anon]", "pass"),
        t("suites/test_qemu_snapshot.py::test_qemu_background_snapshot[shmem]", "pass"),
        t("suites/test_qemu_snapshot.py::test_qemu_snapshot_refused[shmem]", "skip"),
    ])))
    run = {"refused": None, "ram_mib": 16, "image_bytes": 16 << 20, "precopy_bytes": 40 << 20,
           "timing": {"snapshot": 3.5, "restore": 1.25, "boot": 20.0},
           "restored": "consistent cut of 3840 pages",
           "writer": {"slowest_us": [0, 0, 0, 0, 0, 0, 0, 0, 10], "slowest_n": 10,
                      "slowest_p50_us": 180.0},
           "wrlat": {"count": 10, "p50_us": 170.0, "histogram_us": [0] * 8 + [10]}}
    (k1 / "artifacts" / "qemu-snapshot-anon.json").write_text(json.dumps(run))
    k2 = tmp_path / "5.10"
    (k2 / "artifacts").mkdir(parents=True)
    (k2 / "results.json").write_text(json.dumps(results_json("5.10.0-32-amd64", 0x1FF, [
        t("suites/test_qemu_snapshot.py::test_qemu_background_snapshot[anon]", "pass"),
        t("suites/test_qemu_snapshot.py::test_qemu_background_snapshot[shmem]", "skip",
          reason="feature WP_HUGETLBFS_SHMEM (mainline 5.19) absent on this kernel"),
        t("suites/test_qemu_snapshot.py::test_qemu_snapshot_refused[shmem]", "pass"),
    ])))
    (k2 / "artifacts" / "qemu-snapshot-shmem.json").write_text(json.dumps(
        {"refused": "Failed to enable background-snapshot", "wrlat_skipped": ""}))
    outcomes = [KernelOutcome(name=n, via="qemu", status="ok",
                              record=load_kernel_dir(tmp_path / n)) for n in ("5.10", "7.2")]
    summary = write_report(tmp_path, outcomes, {"started": "now", "seconds": 1})
    md = (tmp_path / "report.md").read_text()
    assert "| QEMU background snapshot | anon | pass | pass (snapshot 3.50 s" in md
    assert "| QEMU background snapshot | shmem | refused (QEMU refused, as it must" in md
    assert "snapshot 3.50 s, restore 1.25 s" in md and "WP_HUGETLBFS_SHMEM" in md
    assert "wrlat 10 waits" in md and "128 -> 255" in md  # the histogram itself
    assert "<h2 id='qemu'>QEMU background snapshot</h2>" in (tmp_path / "report.html").read_text()
    q = summary["qemu_snapshot"]
    assert q["5.10"]["shmem"]["verdict"] == "refused" and q["7.2"]["anon"]["verdict"] == "pass"
    assert qemu_report.ROW == "QEMU background snapshot"
