# SPDX-License-Identifier: GPL-2.0-only
"""Each known bug, per kernel: the suite's verdict beside what the package changelog says.

The two are independent: the suite observes the kernel, the changelog is what the distribution
says it merged. Where both answer and they differ, the report flags it: a fix the changelog
names while the bug's test still fails (a bad backport, or a test that fails for another
reason), or a fix it does not name while the test passes (the test does not reach the bug on
this machine, or the fix came by another route).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..known_bugs import KNOWN_BUGS
from .doc import Cell, Section, Table
from .report import section
from .results import KernelRecord

# the worst verdict of a bug's tests decides: one reproduction is enough
_ORDER = ("fail", "known-bug", "error", "pass", "skip")


def bug_verdicts(rec: KernelRecord) -> dict[str, str]:
    """Known-bug key -> the verdict of its tests on this kernel (keys without tests left out)."""
    seen: dict[str, set[str]] = {}
    for t in rec.tests:
        key = (t.bug or {}).get("key")
        if key:
            seen.setdefault(key, set()).add(t.verdict)
    return {k: next(v for v in _ORDER if v in vs) for k, vs in seen.items() if vs & set(_ORDER)}


@dataclass(frozen=True)
class Row:
    kernel: str
    bug: str
    verdict: str  # the suite's, or "" when no test of the bug ran
    changelog: str  # named | reverted | by-version | not-named | unknown
    detail: str
    agree: bool | None  # None: nothing to compare (no changelog answer or no suite answer)


def compare(verdict: str, fixed: bool | None) -> bool | None:
    """Whether a suite verdict and the changelog's answer agree (None: not comparable)."""
    if fixed is None or verdict not in ("pass", "known-bug", "fail"):
        return None
    return (verdict == "pass") == fixed


def rows(outcomes) -> list[Row]:
    """Rows for every kernel that has changelog evidence (KernelOutcome.fix_evidence)."""
    out: list[Row] = []
    for o in outcomes:
        if not o.fix_evidence:
            continue
        verdicts = bug_verdicts(o.record)
        for key in KNOWN_BUGS:
            ev = o.fix_evidence.get(key)
            if ev is None:
                continue
            v = verdicts.get(key, "")
            out.append(Row(o.name, key, v, ev["status"], ev["detail"], compare(v, ev["fixed"])))
    return out


_MARK = {True: "agree", False: "DISAGREE", None: ""}
_CSS = {True: "pass", False: "fail", None: "skip"}


@section
def changelog_section(outcomes, _report_dir: Path) -> Section | None:
    """The report's section: one row per kernel and known bug, disagreements first."""
    rs = rows(outcomes)
    if not rs:
        return None
    bad = [r for r in rs if r.agree is False]
    paragraphs = ["The package changelog names the fix (named), implies it by its upstream "
                  "version (by-version), or does not name it (not-named); a suite verdict that "
                  "says otherwise is flagged."]
    if bad:
        paragraphs.insert(0, f"**{len(bad)} disagreement(s):** " + "; ".join(
            f"{r.kernel} {r.bug} ({r.verdict} vs {r.changelog})" for r in bad))
    ordered = sorted(rs, key=lambda r: r.agree is not False)
    table = Table(["kernel", "bug", "suite", "changelog", "check", "changelog says"],
                  [[r.kernel, r.bug, Cell(r.verdict or "-", css=r.verdict), r.changelog,
                    Cell(_MARK[r.agree], css=_CSS[r.agree], strong=r.agree is False),
                    r.detail] for r in ordered])
    return Section("Known bugs: suite vs package changelog", "changelog", paragraphs, [table])
