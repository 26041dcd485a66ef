"""The report writers of `uffdwp run`, from a sample results document (no kernel needed)."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import pytest

from uffdwp.matrix.results import KernelRecord, from_results_json
from uffdwp.runner import kcidb, ktap, report_html, report_md, results, tables
from uffdwp.runner.verdicts import summarize

KERNEL = {"release": "6.1.0-9-amd64", "version": "#1 SMP PREEMPT_DYNAMIC Debian 6.1.20-1",
          "machine": "x86_64"}
API = {"features": 0x1FFF, "feature_names": ["PAGEFAULT_FLAG_WP"], "ioctls": 0x800000000000000B}
SKIP_WPU = "feature WP_UNPOPULATED (mainline 6.4) absent on this kernel"
CLOSE_RESET = {"key": "close-reset", "commit": "c88033efe9a3", "fixed_in": "6.9"}


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
    _t("suites/test_wp.py::test_unpopulated[anon]", "skip", "anon", reason=SKIP_WPU),
    _t("suites/test_wp.py::test_unpopulated[hugetlb]", "skip", "hugetlb", reason=SKIP_WPU),
    _t("suites/test_wp.py::test_close_reset[anon]", "known-bug", "anon",
       reason="known bug c88033efe9a3, fixed in 6.9: reset ptes on close()", bug=CLOSE_RESET),
    _t("suites/test_wp.py::test_close_reset[shmem]", "pass", "shmem", bug=CLOSE_RESET),
    _t("suites/test_wp.py::test_sizes[anon-4k]", "pass", "anon"),
    _t("suites/test_wp.py::test_sizes[shmem-private-4k]", "pass", "shmem-private"),
    _t("suites/test_broken.py", "error", reason="collection failed: SyntaxError"),
]
DETAILS = {"suites/test_wp.py::test_basic[shmem]": "def test_basic():\n>   assert 1 == 2\n<tag>"}
RUN = {"run_id": "20250101T000000", "started": "2025-01-01T00:00:00+00:00", "seconds": 3.5,
       "hostname": "box", "jobs": "auto", "allow_known_bugs": False}


@pytest.fixture
def data() -> dict:
    return results.build(KERNEL, API, TESTS, 1)


# --- results.json ------------------------------------------------------------------------------
def test_results_schema(data):
    assert list(data) == ["schema", "kernel", "api", "tests", "summary", "exit_status"]
    assert data["schema"] == "uffdwp-results/1"
    assert data["kernel"] == KERNEL
    assert list(data["api"]) == ["features", "feature_names", "ioctls"]
    for t in data["tests"]:
        assert list(t) == ["nodeid", "test", "memtype", "verdict", "reason", "bug", "duration"]
    assert data["summary"] == {"pass": 6, "fail": 1, "skip": 3, "known-bug": 1, "error": 2}
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


# --- shared tables -----------------------------------------------------------------------------
def test_grid_rows_and_columns():
    grid = tables.grid(TESTS)
    assert grid.columns == ["anon", "shmem", "shmem-private", "hugetlb", tables.NO_MEMTYPE]
    rows = dict(grid.rows)
    assert set(rows["suites/test_wp.py::test_basic"]) == {"anon", "shmem", "shmem-private"}
    assert set(rows["suites/test_wp.py::test_sizes[4k]"]) == {"anon", "shmem-private"}
    assert "suites/test_api.py::test_open_and_handshake[dev]" in rows


@pytest.mark.parametrize(("nodeid", "memtype"), [
    ("a.py::t[anon]", "anon"), ("a.py::t[shmem-private]", "shmem-private"),
    ("a.py::t[read-shmem-private]", "shmem-private"), ("a.py::t[hugetlb-4k]", "hugetlb"),
    ("a.py::t[syscall]", None), ("a.py::t", None),
])
def test_guess_memtype(nodeid, memtype):
    assert tables.guess_memtype(nodeid) == memtype


def test_skips_grouped_by_reason():
    groups = tables.skips_by_reason(TESTS)
    assert groups[0][0] == SKIP_WPU and len(groups[0][1]) == 2


# --- report.md ---------------------------------------------------------------------------------
def test_markdown(data):
    md = report_md.render(data, RUN, DETAILS)
    assert md.startswith("# uffdwp run on 6.1.0-9-amd64")
    assert "| WP_UNPOPULATED | 13 | 6.4 | **no** |" in md
    assert "| PAGEFAULT_FLAG_WP | 0 | 5.7 | yes |" in md
    assert "## Failures" in md and "assert 1 == 2" in md
    assert "## Known bugs found" in md and "c88033efe9a3" in md
    assert "## Skips by reason" in md and f"**{SKIP_WPU}** (2)" in md
    # every footnote used in the matrix is defined, and reasons' pipes do not split cells
    used = set(re.findall(r"\[\^(\d+)\](?!:)", md))
    defined = set(re.findall(r"^\[\^(\d+)\]:", md, re.M))
    assert used and used == defined
    row = next(ln for ln in md.splitlines() if ln.startswith("| `test_wp::test_basic`"))
    assert len(re.split(r"(?<!\\)\|", row)) == len(re.split(r"(?<!\\)\|", md.splitlines()[
        md.splitlines().index(row) - 4]))


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
        self.external: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        for name, value in attrs:
            if name in ("src", "href") and value and not value.startswith("#"):
                self.external.append(value)
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes {self.stack[-1:]}"
        self.stack.pop()


def test_html_is_self_contained_and_balanced(data):
    page = report_html.render(data, RUN, DETAILS)
    checker = _Checker()
    checker.feed(page)
    assert checker.stack == [] and checker.external == []
    assert "script" not in checker.tags and "link" not in checker.tags
    assert "<style>" in page
    assert "&lt;tag&gt;" in page  # details escaped
    assert f'title="{SKIP_WPU}' in page  # the reason on hover
    assert "Known bugs found" in page and "Skips by reason" in page


# --- results.ktap ------------------------------------------------------------------------------
_RESULT = re.compile(r"^(ok|not ok) (\d+)(?: ([^#]*?))?(?: # (.*))?$")


def parse_ktap(lines: list[str], indent: int = 0) -> list[tuple[bool, str, str]]:
    """A strict KTAP v1 reader: version, plan, numbered results, nested subtests."""
    pad = " " * indent
    assert lines.pop(0) == f"{pad}KTAP version 1"
    while lines[0].startswith(f"{pad}#"):
        lines.pop(0)
    plan = re.fullmatch(rf"{pad}1\.\.(\d+)", lines.pop(0))
    assert plan, "plan line"
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


def test_ktap_is_valid(data):
    text = ktap.render(data)
    lines = text.splitlines()
    top = parse_ktap(lines)
    assert all(ln.startswith("#") for ln in lines)  # only diagnostics after the last result
    names = [name for _, name, _ in top]
    assert names == ["test_api.test_open_and_handshake", "test_api.test_wrong_api_rejected",
                     "test_wp.test_basic", "test_wp.test_unpopulated", "test_wp.test_close_reset",
                     "test_wp.test_sizes", "test_broken"]
    by_name = {name: (ok, directive) for ok, name, directive in top}
    assert by_name["test_wp.test_basic"][0] is False
    assert by_name["test_wp.test_unpopulated"] == (True, f"SKIP {SKIP_WPU}")
    assert by_name["test_wp.test_close_reset"][0] is False
    assert by_name["test_broken"][0] is False and by_name["test_broken"][1].startswith("ERROR")
    assert "# SKIP /dev/userfaultfd unusable here: ENOENT" in text
    assert "  ok 2 shmem-private-4k" in text


def test_ktap_known_bugs_allowed(data):
    text = ktap.render(data, allow_known_bugs=True)
    assert "  ok 1 anon # XFAIL known bug c88033efe9a3" in text
    assert "ok 5 test_wp.test_close_reset" in text
    parse_ktap(text.splitlines())


def test_ktap_names_never_carry_directives():
    tricky = results.build(KERNEL, API, [_t("suites/t.py::test_x[a #b c]", "pass")], 0)
    top = parse_ktap(ktap.render(tricky).splitlines())
    assert top == [(True, "t.test_x", "")]
    assert "ok 1 a__b_c" in ktap.render(tricky) or "ok 1 a_b_c" in ktap.render(tricky)


# --- kcidb.json --------------------------------------------------------------------------------
def _no_nulls(obj) -> bool:
    if isinstance(obj, dict):
        return all(v is not None and _no_nulls(v) for v in obj.values())
    if isinstance(obj, list):
        return all(_no_nulls(v) for v in obj)
    return True


def test_kcidb(data):
    doc = kcidb.render(data, RUN)
    assert doc["version"] == {"major": 4, "minor": 3}
    assert _no_nulls(doc)
    (checkout,), (build,) = doc["checkouts"], doc["builds"]
    assert build["checkout_id"] == checkout["id"] and build["architecture"] == "x86_64"
    ids = [t["id"] for t in doc["tests"]]
    assert len(set(ids)) == len(ids) == len(TESTS)
    for obj in (checkout, build, *doc["tests"]):
        assert obj["origin"] == "uffdwp" and obj["id"].startswith("uffdwp:")
    for t in doc["tests"]:
        assert t["build_id"] == build["id"]
        assert re.fullmatch(r"[.a-zA-Z0-9_-]*", t["path"])
        assert all(t["path"].split("."))  # no empty components
        assert t["status"] in ("FAIL", "ERROR", "MISS", "PASS", "DONE", "SKIP")
    paths = {t["path"]: t for t in doc["tests"]}
    kb = paths["uffdwp.test_wp.test_close_reset.anon"]
    assert kb["status"] == "FAIL" and kb["waived"] is False
    assert kb["misc"]["known_bug"]["commit"] == "c88033efe9a3"
    assert paths["uffdwp.test_wp.test_sizes.shmem-private-4k"]["status"] == "PASS"
    assert paths["uffdwp.test_broken"]["status"] == "ERROR"
    assert kcidb.render(data, RUN, allow_known_bugs=True)["tests"][8]["waived"] is True


def test_summary_helper_matches_build(data):
    assert data["summary"] == summarize([t["verdict"] for t in TESTS])
