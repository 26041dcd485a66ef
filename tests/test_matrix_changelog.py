# SPDX-License-Identifier: GPL-2.0-only
"""Debian changelog reading and the cross-check against the suite's verdicts: pure logic on a
small changelog in tests/data, no network, no VM."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from uffdwp.known_bugs import FIX_NAMES, KNOWN_BUGS
from uffdwp.matrix import changelog, crosscheck, results
from uffdwp.matrix.report import KernelOutcome
from uffdwp.matrix.results import KernelRecord

DATA = Path(__file__).parent / "data" / "changelog-linux-6.1.txt"


@pytest.fixture(scope="module")
def cl() -> changelog.Changelog:
    return changelog.parse(DATA.read_text())


def test_every_known_bug_has_a_name_to_look_for():
    assert set(FIX_NAMES) == set(KNOWN_BUGS)
    assert all(FIX_NAMES[k] for k in KNOWN_BUGS)


def test_versions_and_stable_releases(cl):
    assert cl.version == "6.1.192+3"  # the signed package's upload comes first
    assert str(cl.upstream) == "6.1.192"
    assert cl.stable_releases[:2] == ("6.1.191", "6.1.192")
    assert "6.1.24" in cl.stable_releases


def test_items_join_continuation_lines_and_keep_their_stable_release(cl):
    close = next(i for i in cl.items if "reset ptes when close()" in i.text)
    assert close.text.endswith("(CVE-2024-36881)")
    assert (close.upload, close.stable) == ("6.1.192-1", "6.1.191")
    timers = next(i for i in cl.items if i.text.startswith("exec: Cleanup"))
    assert timers.stable == ""  # a change of Debian's own, not under the stable release


@pytest.mark.parametrize("key, status, words", [
    ("close-reset", "named", "6.1.192-1 (upstream 6.1.191)"),
    ("mremap-clear", "named", "CVE-2025-21696"),
    ("shmem-writenotify", "named", "enabled for a VMA"),  # a subject wrapped over two lines
    ("thp-migration", "named", "upstream 6.1.26"),
    ("hugetlb-cow-wp", "reverted", "6.1.27-1"),  # the newest mention is its revert
    ("unregister-reset", "by-version", "fixed in 6.0"),  # mainline before 6.1: never named
    ("hugetlb-fork", "not-named", "predates the fix"),
])
def test_evidence(cl, key, status, words):
    ev = changelog.evidence(cl, key)
    assert ev.status == status and words in ev.detail
    assert ev.fixed is {"named": True, "by-version": True}.get(status, False)


def test_an_older_build_does_not_name_the_fix():
    older = DATA.read_text().split("linux (6.1.27-1)", 1)[1]
    cl = changelog.parse("linux (6.1.27-1)" + older)
    ev = changelog.evidence(cl, "close-reset")
    assert (ev.status, ev.fixed) == ("not-named", False)


def test_read_gzipped(tmp_path):
    path = tmp_path / "changelog.Debian.gz"
    path.write_bytes(gzip.compress(DATA.read_bytes()))
    assert changelog.read(path).version == "6.1.192+3"


def test_upstream_version_of_package_versions():
    assert str(changelog.upstream_version("6.12.117-1~deb12u1")) == "6.12.117"
    rc = changelog.upstream_version("7.3~rc2-1~exp1")
    assert rc is not None and rc.rc and (rc.major, rc.minor) == (7, 3)
    assert changelog.upstream_version("garbage") is None


def row(test: str, verdict: str, bug: str | None) -> results.TestRow:
    return results.TestRow(f"suites/x.py::{test}[anon]", test, "anon", verdict,
                   bug={"key": bug} if bug else None)


def test_bug_verdicts_take_the_worst_of_a_bugs_tests():
    rec = KernelRecord(tests=[row("a", "pass", "mremap-clear"),
                              row("b", "known-bug", "mremap-clear"),
                              row("c", "skip", "close-reset"),
                              row("d", "pass", None)])
    assert crosscheck.bug_verdicts(rec) == {"mremap-clear": "known-bug", "close-reset": "skip"}


@pytest.mark.parametrize("verdict, fixed, agree", [
    ("pass", True, True), ("known-bug", False, True), ("known-bug", True, False),
    ("fail", True, False), ("pass", False, False), ("skip", True, None),
    ("error", False, None), ("pass", None, None), ("", True, None),
])
def test_compare(verdict, fixed, agree):
    assert crosscheck.compare(verdict, fixed) is agree


def test_rows_and_rendering_flag_disagreements(cl):
    evidence = {k: e.as_dict() for k, e in changelog.all_evidence(cl).items()}
    o = KernelOutcome("6.1", "qemu", "ok", fix_evidence=evidence, record=KernelRecord(tests=[
        row("test_close", "known-bug", "close-reset"),  # the changelog names the fix: flagged
        row("test_mremap", "pass", "mremap-clear"),
        row("test_hugetlb_fork", "known-bug", "hugetlb-fork")]))
    rows = {r.bug: r for r in crosscheck.rows([o])}
    assert len(rows) == len(KNOWN_BUGS)
    assert rows["close-reset"].agree is False
    assert rows["mremap-clear"].agree is True and rows["hugetlb-fork"].agree is True
    assert rows["wp-race-corruption"].agree is None and rows["wp-race-corruption"].verdict == ""
    section = crosscheck.changelog_section([o], Path("."))
    assert "**1 disagreement(s):** 6.1 close-reset (known-bug vs named)" in section.paragraphs[0]
    first = section.tables[0].rows[0]  # disagreements first
    assert first[1] == "close-reset" and first[4].text == "DISAGREE"
    # a kernel without a changelog (the host, a tree of one's own) adds no section
    assert crosscheck.changelog_section([KernelOutcome("host", "direct", "ok")], Path(".")) is None


def test_the_section_is_in_the_matrix_report(cl, tmp_path):
    from uffdwp.matrix.report import write_report

    evidence = {k: e.as_dict() for k, e in changelog.all_evidence(cl).items()}
    o = KernelOutcome("6.1", "qemu", "ok", fix_evidence=evidence, record=KernelRecord(
        release="6.1.0-57-amd64", tests=[row("test_close", "known-bug", "close-reset")]))
    summary = write_report(tmp_path, [o], {"started": "now", "seconds": 1})
    assert summary["kernels"][0]["changelog"]["close-reset"]["status"] == "named"
    md = (tmp_path / "report.md").read_text()
    assert "Known bugs: suite vs package changelog" in md and "DISAGREE" in md
    assert "DISAGREE" in (tmp_path / "report.html").read_text()
