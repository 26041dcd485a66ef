# SPDX-License-Identifier: GPL-2.0-only
"""`uffdwp matrix --merge`: per-kernel matrix reports (the nightly's jobs) become one matrix
report, by the same report builder, and one KCIDB file that kcidb-io accepts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from uffdwp.cli import main
from uffdwp.matrix.merge import MISSING, MergeError, load_outcomes, merge_reports
from uffdwp.matrix.report import KernelOutcome, write_report
from uffdwp.matrix.results import load_kernel_dir
from uffdwp.runner import kcidb, results

kcidb_io = pytest.importorskip("kcidb_io", reason="kcidb-io not installed (./bootstrap.sh)")

API = {"features": 0x1FFF, "feature_names": [], "ioctls": 0x8000000000000003}


def _kernel_run(out: Path, release: str, verdicts: dict[str, str]) -> None:
    """A kernel's directory as `uffdwp run` in a guest leaves it: results.json and kcidb.json."""
    out.mkdir(parents=True)
    tests = [results.make_test(f"suites/test_wp.py::{name}", name.split("[")[0],
                               name.split("[")[1].rstrip("]"), verdict, "", None, 0.1)
             for name, verdict in verdicts.items()]
    data = results.build({"release": release, "version": "#1 SMP", "machine": "x86_64"}, API,
                         tests, 0)
    results.write_json(out / "results.json", data)
    results.write_json(out / "kcidb.json", kcidb.render(data, {"run_id": release}))


def _matrix_report(root: Path, name: str, release: str, verdicts: dict[str, str],
                   status: str = "ok") -> Path:
    """A one-kernel matrix report, as a nightly kernel job uploads it."""
    report = root / f"kernel-report-{name}"
    _kernel_run(report / name, release, verdicts)
    oc = KernelOutcome(name=name, via="qemu", status=status, seconds=42.0, exit_status=0,
                       package=f"linux-image-{release}", package_version="1",
                       note="catalogue note", record=load_kernel_dir(report / name))
    write_report(report, [oc], {"started": f"2026-01-01T02:{len(name):02d}:00Z", "seconds": 50.0,
                                "accel": "kvm", "accel_reason": "probe", "jobs": 1})
    return report


@pytest.fixture
def reports(tmp_path: Path) -> list[Path]:
    return [_matrix_report(tmp_path, "6.1", "6.1.0-50-amd64",
                           {"test_wp_fault[anon]": "pass", "test_close[shmem]": "known-bug"}),
            _matrix_report(tmp_path, "6.12", "6.12.117-amd64",
                           {"test_wp_fault[anon]": "fail"}, status="failed")]


def test_load_outcomes_gives_back_what_the_runner_had(reports):
    (oc,), summary = load_outcomes(reports[0])
    assert (oc.name, oc.via, oc.status, oc.seconds) == ("6.1", "qemu", "ok", 42.0)
    assert oc.note == "catalogue note" and oc.package == "linux-image-6.1.0-50-amd64"
    assert [t.verdict for t in oc.record.tests] == ["pass", "known-bug"]
    assert summary["accel"] == "kvm"


def test_merge_writes_one_matrix_report_and_kcidb_file(reports, tmp_path):
    out = tmp_path / "merged"
    summary = merge_reports(reports, out, expected=["5.10", "6.1", "6.12"])
    assert [k["name"] for k in summary["kernels"]] == ["5.10", "6.1", "6.12"]
    assert [k["status"] for k in summary["kernels"]] == [MISSING, "ok", "failed"]
    assert summary["kernels"][0]["detail"].startswith("no report")
    assert summary["ok"] is False and summary["jobs"] == 2
    assert summary["started"] == "2026-01-01T02:03:00Z"
    assert summary["kernels"][1]["verdicts"]["known-bug"] == 1
    md = (out / "report.md").read_text()
    assert "| **6.12** | failed |" in md and "| **5.10** | missing |" in md
    # each kernel's own results came along, so the report's links work
    assert (out / "6.1" / "results.json").is_file() and (out / "6.12" / "kcidb.json").is_file()
    doc = json.loads((out / "kcidb.json").read_text())
    kcidb_io.schema.LATEST.validate(doc)
    assert len(doc["checkouts"]) == len(doc["builds"]) == 2 and len(doc["tests"]) == 3
    assert {b["misc"]["kernel_release"] for b in doc["builds"]} == {"6.1.0-50-amd64",
                                                                   "6.12.117-amd64"}


def test_merge_of_green_reports_is_ok(tmp_path):
    rep = [_matrix_report(tmp_path, "6.1", "6.1.0-50-amd64", {"test_a[anon]": "pass"})]
    assert merge_reports(rep, tmp_path / "out", expected=["6.1"])["ok"] is True


def test_merge_refuses_a_kernel_twice_and_a_non_report(reports, tmp_path):
    with pytest.raises(MergeError, match=r"kernel 6\.1 is in more than one report"):
        merge_reports([reports[0], reports[0]], tmp_path / "out")
    (tmp_path / "junk").mkdir()
    with pytest.raises(MergeError, match="not a matrix report"):
        merge_reports([tmp_path / "junk"], tmp_path / "out2")


def test_merge_refuses_invalid_kcidb(reports, tmp_path):
    bad = {"version": {"major": 4, "minor": 3}, "tests": [{"id": 1}]}
    (reports[0] / "6.1" / "kcidb.json").write_text(json.dumps(bad))
    with pytest.raises(MergeError, match="not valid KCIDB data"):
        merge_reports(reports, tmp_path / "out")


def test_cli_merge_exit_status(reports, tmp_path, capsys):
    assert main(["matrix", "--merge", str(reports[0]), "--kernels", "6.1",
                 "--report", str(tmp_path / "a")]) == 0
    assert main(["matrix", "--merge", *map(str, reports), "--report", str(tmp_path / "b")]) == 1
    assert main(["matrix", "--merge", str(tmp_path), "--report", str(tmp_path / "c")]) == 2
    assert main(["matrix", "--merge", "--kernels", "6.1,nope",
                 "--report", str(tmp_path / "d")]) == 2
    err = " ".join(capsys.readouterr().out.split())
    assert "not a matrix report" in err and "unknown kernel 'nope'" in err
    # no report at all (every job died): every expected kernel is missing, and the run is red
    assert main(["matrix", "--merge", "--kernels", "6.1", "--report", str(tmp_path / "e")]) == 1
    assert json.loads((tmp_path / "e" / "summary.json").read_text())["kernels"][0]["status"] \
        == MISSING
