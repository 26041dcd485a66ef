# SPDX-License-Identifier: GPL-2.0-only
"""The report writers of `uffdwp run`, from a sample results document (no kernel needed), each
checked by its real consumer: kcidb-io, junitparser, the kernel's kunit_parser.py, Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests import consumers
from uffdwp.known_bugs import KNOWN_BUGS
from uffdwp.matrix.results import KernelRecord, from_results_json
from uffdwp.runner import (
    context,
    junit,
    kcidb,
    ktap,
    report_html,
    report_md,
    results,
    skips,
    tables,
)
from uffdwp.runner.verdicts import summarize

KERNEL = {"release": "6.1.0-9-amd64", "version": "#1 SMP PREEMPT_DYNAMIC Debian 6.1.20-1",
          "machine": "x86_64"}
API = {"features": 0x1FFF, "feature_names": ["PAGEFAULT_FLAG_WP"], "ioctls": 0x800000000000000B}
SKIP_WPU = "feature WP_UNPOPULATED (mainline 6.4) absent on this kernel"
SKIP_WPU2 = "feature WP_UNPOPULATED (mainline 6.4) absent: no markers on anon"
SKIP_ROOT = "mounting a small tmpfs needs root"
SKIP_NUMA = "a single NUMA node: a THP cannot be migrated here"
CLOSE_RESET = {"key": "close-reset", "commit": "c88033efe9a3", "fixed_in": "6.9"}
MREMAP = {"key": "mremap-clear", "commit": "0cef0bb836e3", "fixed_in": "6.13"}


def _t(nodeid, verdict, memtype=None, reason="", bug=None, duration=0.01):
    test = nodeid.rsplit("::", 1)[-1].split("[")[0]
    return results.make_test(nodeid, test, memtype, verdict, reason, bug, duration)


TESTS = [
    _t("suites/test_api.py::test_open_and_handshake[syscall]", "pass"),
    _t("suites/test_api.py::test_open_and_handshake[dev]", "skip",
       reason="/dev/userfaultfd unusable here: ENOENT"),
    _t("suites/test_api.py::test_wrong_api_rejected", "pass"),
    _t("suites/test_wp.py::test_basic[anon]", "pass", "anon"),
    _t("suites/test_wp.py::test_basic[shmem]", "fail", "shmem",
       reason="AssertionError: assert 1 == 2 | pipes # hashes"),
    _t("suites/test_wp.py::test_basic[shmem-private]", "error", "shmem-private",
       reason="setup: OSError: ENOMEM"),
    _t("suites/test_wp.py::test_unpopulated[anon]", "skip", "anon", reason=SKIP_WPU2),
    _t("suites/test_wp.py::test_unpopulated[hugetlb]", "skip", "hugetlb", reason=SKIP_WPU),
    _t("suites/test_wp.py::test_tmpfs[shmem]", "skip", "shmem", reason=SKIP_ROOT),
    _t("suites/test_wp.py::test_migrate[anon]", "skip", "anon", reason=SKIP_NUMA),
    _t("suites/test_wp.py::test_close_reset[anon]", "known-bug", "anon",
       reason="known bug c88033efe9a3, fixed in 6.9: reset ptes on close()", bug=CLOSE_RESET),
    _t("suites/test_wp.py::test_close_reset[shmem]", "pass", "shmem", bug=CLOSE_RESET),
    _t("suites/test_wp.py::test_mremap[anon]", "fail", "anon",
       reason="regression: page writable after mremap", bug=MREMAP),
    _t("suites/test_wp.py::test_sizes[anon-4k]", "pass", "anon"),
    _t("suites/test_wp.py::test_sizes[shmem-private-4k]", "pass", "shmem-private"),
    # two variants that differ only in where the memory type sits: one grid row each
    _t("suites/test_wp.py::test_order[anon-x]", "pass", "anon"),
    _t("suites/test_wp.py::test_order[x-anon]", "fail", "anon", reason="order x-anon failed"),
    _t("suites/test_broken.py", "error", reason="collection failed: SyntaxError"),
]
DETAILS = {"suites/test_wp.py::test_basic[shmem]": "def test_basic():\n>   assert 1 == 2\n<tag>"}
RUN = {"run_id": "20250101T000000", "started": "2025-01-01T00:00:00+00:00", "seconds": 3.5,
       "hostname": "box", "jobs": "auto", "allow_known_bugs": False,
       "suite": {"name": "uffdwp", "version": "0.1.0", "commit": "0" * 40},
       "context": {"package": context.kernel_package(KERNEL["release"], KERNEL["version"]),
                   "accel": "tcg", "accel_evidence": "CPU model 'QEMU TCG CPU version 2.5+'"}}


@pytest.fixture
def data() -> dict:
    return results.build(KERNEL, API, TESTS, 1)


def _cells(grid: tables.Grid) -> list[dict]:
    return [t for _, cells in grid.rows for t in cells.values()]


# --- results.json ------------------------------------------------------------------------------
def test_results_schema(data):
    assert list(data) == ["schema", "kernel", "api", "tests", "summary", "exit_status"]
    assert data["schema"] == "uffdwp-results/1"
    assert data["kernel"] == KERNEL
    assert list(data["api"]) == ["features", "feature_names", "ioctls"]
    for t in data["tests"]:
        assert list(t) == ["nodeid", "test", "memtype", "verdict", "reason", "bug", "bugs",
                           "duration"]
    assert data["summary"] == {"pass": 7, "fail": 3, "skip": 5, "known-bug": 1, "error": 2}
    json.dumps(data)


def test_results_read_back_by_the_matrix(data, tmp_path):
    results.write_json(tmp_path / "results.json", data)
    rec = KernelRecord()
    from_results_json(json.loads((tmp_path / "results.json").read_text()), rec)
    assert rec.summary == data["summary"] and not rec.notes
    assert rec.features == API["features"] and rec.exit_status == 1


def test_api_section_without_userfaultfd():
    assert results.api_section(None) == {}
    empty = results.build(KERNEL, {}, [], 4)
    assert empty["api"] == {} and empty["summary"]["skip"] == 0


def test_summary_helper_matches_build(data):
    assert data["summary"] == summarize([t["verdict"] for t in TESTS])


# --- shared tables -----------------------------------------------------------------------------
def test_grid_shows_every_result():
    grid = tables.grid(TESTS)
    assert sorted(t["nodeid"] for t in _cells(grid)) == sorted(t["nodeid"] for t in TESTS)
    assert grid.columns == ["anon", "shmem", "shmem-private", "hugetlb", tables.NO_MEMTYPE]
    rows = dict(grid.rows)
    assert set(rows["suites/test_wp.py::test_basic"]) == {"anon", "shmem", "shmem-private"}
    assert set(rows["suites/test_wp.py::test_sizes[4k]"]) == {"anon", "shmem-private"}
    # the second variant whose row and column are taken keeps its own row, under its full id
    assert rows["suites/test_wp.py::test_order[x]"]["anon"]["verdict"] == "pass"
    assert rows["suites/test_wp.py::test_order[x-anon]"]["anon"]["verdict"] == "fail"


@pytest.mark.parametrize(("nodeid", "memtype"), [
    ("a.py::t[anon]", "anon"), ("a.py::t[shmem-private]", "shmem-private"),
    ("a.py::t[read-shmem-private]", "shmem-private"), ("a.py::t[hugetlb-4k]", "hugetlb"),
    ("a.py::t[syscall]", None), ("a.py::t", None),
])
def test_guess_memtype(nodeid, memtype):
    assert tables.guess_memtype(nodeid) == memtype


def test_fix_accessor_and_regressions():
    fix = tables.fix_of(CLOSE_RESET)
    assert (fix.commit, fix.fixed_in) == ("c88033efe9a3", "6.9")
    assert fix.backports == tuple(KNOWN_BUGS["close-reset"].backports) and "6.8.10" in fix.backports
    assert fix.url == "https://git.kernel.org/linus/c88033efe9a3"
    assert tables.fix_of({"key": "hugetlb-cow-wp", "commit": "?", "fixed_in": "6.3"}).url is None
    assert tables.fix_of(None) is None
    regression = next(t for t in TESTS if t["nodeid"].endswith("test_mremap[anon]"))
    assert tables.kind(regression) == "regression"
    message = tables.bug_message(regression)
    assert message.startswith("regression: fix 0cef0bb836e3") and "undone" in message
    assert "mainline 6.13, backported to 6.12.11" in message
    assert [tables.kind(t) for t in tables.problems(TESTS)] == [
        "regression", "fail", "fail", "error", "error"]


def test_skips_grouped_by_cause():
    groups = skips.skip_groups(TESTS)
    assert [(g.cause.kind, g.cause.name, len(g.tests)) for g in groups] == [
        ("feature", "WP_UNPOPULATED", 2), ("capability", SKIP_ROOT, 1),
        ("environment", "/dev/userfaultfd unusable here: ENOENT", 1),
        ("environment", SKIP_NUMA, 1)]
    assert groups[0].cause.since == "6.4" and set(groups[0].reasons) == {SKIP_WPU, SKIP_WPU2}
    # a temporary file's random name does not split a cause
    a, b = (skips.cause_of(f"cannot set up a swap file (swapon /run/u/regr-swap-{s}: EINVAL)")
            for s in ("a0otmow0", "sxw6d9l9"))
    assert a == b and a.kind == "environment"
    # a refusal test on a kernel that has what it refuses: not applicable, not the environment
    na = skips.cause_of(f"{skips.NOT_APPLICABLE}this kernel write-protects shmem: "
                        "test_qemu_background_snapshot[shmem] takes the snapshot")
    assert na.kind == "not-applicable" and na.name.startswith("this kernel write-protects")


def test_context_package_and_accel():
    assert context.kernel_package("6.1.0-50-amd64", "#1 SMP Debian 6.1.158-1 (2025-10-01)") == {
        "distro": "debian", "package": "linux-image-6.1.0-50-amd64",
        "package_version": "6.1.158-1", "upstream": "6.1.158"}
    assert context.kernel_package("5.15.0-91-generic", "#101-Ubuntu SMP",
                                  "Ubuntu 5.15.0-91.101-generic 5.15.131")["upstream"] == "5.15.131"
    assert context.kernel_package("6.18.44-fc", "#1 SMP @0") == {}
    assert context.accel("model name\t: QEMU TCG CPU version 2.5+\nflags\t: fpu hypervisor",
                         "tsc")[0] == "tcg"
    assert context.accel("model name\t: AMD EPYC\nflags\t: fpu hypervisor", "tsc kvm-clock")[0] \
        == "kvm"
    assert context.accel("model name\t: AMD EPYC\nflags\t: fpu sse", "tsc hpet")[0] == "none"


# --- report.md ---------------------------------------------------------------------------------
def test_markdown_triage_order_and_every_result(data):
    md = report_md.render(data, RUN, DETAILS)
    lines = md.splitlines()
    assert lines[0] == "# uffdwp on 6.1.0-9-amd64"
    assert lines[2].startswith("**FAIL** · **1 regression** · **2 failures** · **2 errors** · "
                            "1 known-bug result (1 bug)")
    order = [md.index(h) for h in ("## Regressions, failures and errors (5)", "## Known bugs",
                                   "## Skipped: 5, by cause", "## All 18 results",
                                   "## Negotiated features")]
    assert order == sorted(order)
    assert "Undid the fix [`0cef0bb836e3`](https://git.kernel.org/linus/0cef0bb836e3)" in md
    assert "| `WP_UNPOPULATED` | 6.4 | 2 |" in md
    assert "package**: linux-image-6.1.0-9-amd64 6.1.20-1" in md
    # every result is a cell of the grid
    grid = md[md.index("## All 18 results"):md.index("## Negotiated features")]
    cells = [c.strip() for row in grid.splitlines() if row.startswith("| `")
             for c in re.split(r"(?<!\\)\|", row)[2:-1]]
    assert len([c for c in cells if c]) == len(TESTS)
    # every footnote used is defined, and reasons' pipes do not split cells
    used = set(re.findall(r"\[\^(\d+)\](?!:)", md))
    defined = set(re.findall(r"^\[\^(\d+)\]:", md, re.M))
    assert used and used == defined


def test_markdown_without_userfaultfd():
    md = report_md.render(results.build(KERNEL, {}, [], 4))
    assert "could not be opened" in md and "No tests ran." in md


# --- report.html -------------------------------------------------------------------------------
class _Checker(HTMLParser):
    VOID = {"meta", "br", "link", "img", "input", "hr"}

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.tags: set[str] = set()
        self.assets: list[str] = []
        self.ids: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        attrs = dict(attrs)
        if attrs.get("src") or tag == "link":
            self.assets.append(attrs.get("src") or attrs.get("href"))
        if attrs.get("id"):
            self.ids.append(attrs["id"])
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes {self.stack[-1:]}"
        self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def test_html_is_self_contained_and_balanced(data):
    page = report_html.render(data, RUN, DETAILS)
    checker = _Checker()
    checker.feed(page)
    assert checker.stack == [] and checker.assets == []
    assert "script" not in checker.tags and "<style>" in page
    assert "&lt;tag&gt;" in page  # details escaped


def test_html_triage(data):
    page = report_html.render(data, RUN, DETAILS)
    checker = _Checker()
    checker.feed(page)
    assert checker.ids == ["verdict", "failures", "known-bugs", "skips", "grid", "features"]
    text = " ".join(" ".join(checker.text).split())
    # every reason is on the page as text, not only in a tooltip
    for t in TESTS:
        if t["reason"]:
            assert " ".join(t["reason"].split()) in text, t["reason"]
    assert 'undid <code><a href="https://git.kernel.org/linus/0cef0bb836e3">' in page
    # red only for non-zero counts
    verdict = page[page.index('id="verdict"'):page.index("</p>", page.index('id="verdict"'))]
    assert '<span class="n bad">1 regression<' in verdict
    assert '<span class="n ">1 known-bug' not in verdict
    clean = report_html.render(results.build(KERNEL, API, [_t("a.py::t", "pass")], 0), RUN)
    assert '<span class="n ">0 failures</span>' in clean and "n bad" not in clean
    assert '<p class="verdict good" id="verdict"><b>PASS</b>' in clean


# Chromium: what a maintainer sees in the first screen of report.html
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars"]
MEASURE = """<script>
const pos = id => Math.round(document.getElementById(id).getBoundingClientRect().top);
const out = document.createElement('pre'); out.id = 'measured';
out.textContent = JSON.stringify({failures: pos('failures'), grid: pos('grid'),
  viewport: window.innerHeight});
document.body.appendChild(out);
</script>"""


def chromium(tmp: Path, *args: str) -> str:
    profile = tmp / "profile"
    shutil.rmtree(profile, ignore_errors=True)
    proc = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}",
                           "--window-size=1280,900", *args], capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium here (bootstrap.sh --dev installs "
                                             "Debian's chromium)")
def test_html_in_chromium_failures_before_the_grid(data, tmp_path):
    page = tmp_path / "report.html"
    page.write_text(report_html.render(data, RUN, DETAILS))
    shot = tmp_path / "first-screen.png"
    chromium(tmp_path, f"--screenshot={shot}", page.as_uri())
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    # the same page, with a script that measures where the sections landed
    measured_page = tmp_path / "measured.html"
    measured_page.write_text(page.read_text().replace("</body>", MEASURE + "</body>"))
    dom = chromium(tmp_path, "--dump-dom", measured_page.as_uri())
    m = json.loads(re.search(r'<pre id="measured">(.*?)</pre>', dom).group(1))
    assert 0 < m["failures"] < m["viewport"], m  # the failures are in the first screen
    assert m["failures"] < m["grid"], m


# --- junit.xml ---------------------------------------------------------------------------------
@pytest.mark.parametrize("allow", [True, False])
def test_junit_with_junitparser(data, tmp_path, allow):
    from junitparser import Failure, JUnitXml, Skipped

    path = tmp_path / "junit.xml"
    junit.write(path, [junit.run_suite(data, {**RUN, "allow_known_bugs": allow}, DETAILS)])
    counts = consumers.junit_counts(path, KERNEL["release"])
    s = data["summary"]
    assert counts["tests"] == len(TESTS)
    assert counts["failures"] == s["fail"] + (0 if allow else s["known-bug"])
    assert counts["skipped"] == counts["skipped_with_message"] == s["skip"] + (
        s["known-bug"] if allow else 0)
    (suite,) = JUnitXml.fromfile(str(path))
    props = {p.name: p.value for p in suite.properties()}
    assert props["kernel.release"] == KERNEL["release"] and props["uffd.features"] == "0x1fff"
    assert props["memtypes"] == "anon shmem shmem-private hugetlb"
    assert props["kernel.package_version"] == "6.1.20-1" and props["accel"] == "tcg"
    cases = {c.name: c for c in suite}
    (known,) = cases["test_close_reset[anon]"].result
    assert isinstance(known, Skipped if allow else Failure) and known.type == "known-bug"
    assert "fixed by c88033efe9a3" in known.message and "mainline 6.9" in known.message
    (regression,) = cases["test_mremap[anon]"].result
    assert isinstance(regression, Failure) and regression.type == "regression"
    assert regression.message.startswith("regression: fix 0cef0bb836e3")
    (failure,) = cases["test_basic[shmem]"].result
    assert "assert 1 == 2" in failure.text


# --- results.ktap ------------------------------------------------------------------------------
_RESULT = re.compile(r"^(ok|not ok) (\d+)(?: ([^#]*?))?(?: # (.*))?$")


def parse_ktap(lines: list[str], indent: int = 0) -> list[tuple[bool, str, str]]:
    """A strict KTAP v1 reader: version, plan, numbered results, nested subtests."""
    pad = " " * indent
    assert lines.pop(0) == f"{pad}KTAP version 1"
    if indent:
        assert lines.pop(0).startswith(f"{pad}# Subtest: ")
    plan = re.fullmatch(rf"{pad}1\.\.(\d+)", lines.pop(0))
    assert plan, "plan line right after the version (and subtest) line"
    out: list[tuple[bool, str, str]] = []
    while len(out) < int(plan.group(1)):
        line = lines[0]
        if line == f"{pad}  KTAP version 1":
            subs = parse_ktap(lines, indent + 2)
            assert subs
            continue
        lines.pop(0)
        if line.startswith(f"{pad}#"):
            continue
        assert line.startswith(pad) and not line[len(pad)].isspace(), repr(line)
        m = _RESULT.match(line[len(pad):])
        assert m, repr(line)
        assert int(m.group(2)) == len(out) + 1
        out.append((m.group(1) == "ok", m.group(3) or "", m.group(4) or ""))
    return out


def test_ktap_in_kselftest_conventions(data):
    text = ktap.render(data)
    lines = text.splitlines()
    top = parse_ktap(lines)
    assert all(ln.startswith("#") for ln in lines)  # only diagnostics after the last result
    assert text.splitlines()[-1] == (
        "# Totals: pass:7 fail:3 xfail:1 xpass:0 skip:5 error:2")
    by_name = {name: (ok, directive) for ok, name, directive in top}
    assert by_name["test_wp.test_basic"][0] is False
    assert by_name["test_wp.test_unpopulated"] == (True, f"SKIP {SKIP_WPU2}") or \
        by_name["test_wp.test_unpopulated"][1].startswith("SKIP")
    assert by_name["test_broken"] == (False, "error collection failed: SyntaxError")
    # a known bug is kselftest's `ok … # XFAIL`, naming the fix
    assert "  ok 1 anon # XFAIL known bug, fixed by c88033efe9a3" in text
    assert by_name["test_wp.test_close_reset"] == (True, by_name["test_wp.test_close_reset"][1])
    assert by_name["test_wp.test_close_reset"][1].startswith("XFAIL")
    assert "  # regression: fix 0cef0bb836e3" in text  # the regression's diagnostic
    assert "  ok 2 shmem-private-4k" in text


def test_ktap_names_never_carry_directives():
    tricky = results.build(KERNEL, API, [_t("suites/t.py::test_x[a #b c]", "pass")], 0)
    top = parse_ktap(ktap.render(tricky).splitlines())
    assert top == [(True, "t.test_x", "")]


@pytest.mark.skipif(consumers.kunit_parser() is None, reason=consumers.KUNIT_MISSING)
@pytest.mark.parametrize("which", ["sample", "all-pass", "only-skips", "known-bugs"])
def test_ktap_read_by_the_kernels_kunit_parser(data, which):
    """tools/testing/kunit/kunit_parser.py counts what results.json says."""
    docs = {"sample": data,
            "all-pass": results.build(KERNEL, API, [t for t in TESTS if t["verdict"] == "pass"],
                                      0),
            "only-skips": results.build(KERNEL, API, [t for t in TESTS if t["verdict"] == "skip"],
                                        4),
            "known-bugs": results.build(KERNEL, API, [t for t in TESTS if t.get("bug")], 1)}
    doc = docs[which]
    got = consumers.kunit_counts(ktap.render(doc))
    has_xfail = got.pop("xfail") is not None
    assert got.pop("status") in ("SUCCESS", "FAILURE", "SKIPPED")
    assert got == consumers.expected_kunit_counts(doc["summary"], has_xfail)


# --- kcidb.json --------------------------------------------------------------------------------
def test_kcidb_validates_at_the_newest_schema(data):
    doc = kcidb.render(data, RUN)
    upgraded = consumers.kcidb_validate(doc)
    assert doc["version"] == {"major": 5, "minor": 3}
    (checkout,), (build,) = doc["checkouts"], doc["builds"]
    assert checkout["tree_name"] == "debian"
    assert checkout["misc"]["package_version"] == "6.1.20-1"
    assert "linux-image-6.1.0-9-amd64 6.1.20-1" in checkout["comment"]
    assert build["checkout_id"] == checkout["id"] and build["architecture"] == "x86_64"
    # 64-bit masks as hex strings: JSON.parse would round 2^63+11
    assert build["misc"]["uffd_ioctls"] == "0x800000000000000b"
    assert build["misc"]["uffd_features"] == "0x1fff"
    ids = [t["id"] for t in doc["tests"]]
    assert len(set(ids)) == len(ids) == len(TESTS)
    paths = {t["path"]: t for t in doc["tests"]}
    assert len(paths) == len(TESTS)
    assert {"uffd.wp.wp.close_reset.anon", "uffd.wp.wp.sizes.4k.shmem-private",
            "uffd.wp.api.open_and_handshake.dev", "uffd.wp.broken"} <= set(paths)
    for t in doc["tests"]:
        assert t["environment"]["misc"] == {
            "machine": "x86_64", "kernel_release": KERNEL["release"], "accel": "tcg",
            "accel_evidence": RUN["context"]["accel_evidence"], "hostname": "box"}
        assert "waived" not in t
    kb = paths["uffd.wp.wp.close_reset.anon"]
    assert kb["status"] == "FAIL" and "fixed by c88033efe9a3" in kb["log_excerpt"]
    # known bugs are issues, their occurrences incidents (absent where a test found it fixed)
    issues = {i["id"]: i for i in upgraded["issues"]}
    close = issues["uffdwp:known-bug:close-reset"]
    assert close["report_url"] == "https://git.kernel.org/linus/c88033efe9a3"
    assert close["culprit"]["code"] is True and close["report_subject"].startswith("reset ptes")
    incidents = {(i["issue_id"], i["present"]): i for i in upgraded["incidents"]}
    assert incidents[("uffdwp:known-bug:close-reset", True)]["test_id"] == kb["id"]
    # close-reset showed on anon: its shmem pass is no evidence of absence; a bug no test showed
    # gets absent incidents, tied to the test alone
    assert ("uffdwp:known-bug:close-reset", False) not in incidents
    fixed = results.build(KERNEL, API, [_t("suites/t.py::test_c[shmem]", "pass", "shmem",
                                            bug=CLOSE_RESET)], 0)
    (absent,) = consumers.kcidb_validate(kcidb.render(fixed, RUN))["incidents"]
    assert absent["present"] is False and "build_id" not in absent
    assert incidents[("uffdwp:known-bug:mremap-clear", True)]["comment"].startswith("regression")


def test_kcidb_attaches_to_existing_objects(data):
    doc = kcidb.render(data, RUN, kcidb.Options(build_id="kernelci:build-42"))
    consumers.kcidb_validate(doc)
    assert "checkouts" not in doc and "builds" not in doc
    assert {t["build_id"] for t in doc["tests"]} == {"kernelci:build-42"}
    commit = "a" * 40
    doc = kcidb.render(data, RUN, kcidb.Options(
        checkout_id="kernelci:checkout-7", tree_name="mainline", git_commit=commit))
    consumers.kcidb_validate(doc)
    assert "checkouts" not in doc and doc["builds"][0]["checkout_id"] == "kernelci:checkout-7"
    doc = kcidb.render(data, RUN, kcidb.Options(
        tree_name="mainline", git_commit=commit,
        git_url="https://git.kernel.org/pub/scm/linux/kernel/git/torvalds/linux.git",
        artifacts_url="https://ci.example/run/1/"))
    consumers.kcidb_validate(doc)
    (checkout,) = doc["checkouts"]
    assert checkout["tree_name"] == "mainline" and checkout["git_commit_hash"] == commit
    assert doc["tests"][0]["log_url"] == "https://ci.example/run/1/pytest.log"
