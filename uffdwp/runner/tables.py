# SPDX-License-Identifier: GPL-2.0-only
"""Views of a results.json document that the human-readable reports share."""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field

from ..kernel_facts import FEATURE_FACTS
from ..known_bugs import KNOWN_BUGS
from ..memory import MEMORY_TYPES

NO_MEMTYPE = "—"  # column of tests that are not parametrized over a memory type


@dataclass
class FeatureRow:
    name: str
    bit: int
    since: str
    present: bool | None  # None: no handshake happened


def feature_rows(api: dict) -> list[FeatureRow]:
    features = api.get("features") if api else None
    return [FeatureRow(f.name, f.value.bit_length() - 1, f.since,
                       None if features is None else bool(features & f.value))
            for f in FEATURE_FACTS]


def feature_notes(api: dict, release: str) -> list[str]:
    """What the advertised set says beside the table: unknown bits, and features mainline had
    by this release that are missing (a distro config or a backport can explain them)."""
    notes = []
    if api.get("below_mainline"):
        notes.append(f"Not advertised although mainline had them by {release}'s release: "
                     + ", ".join(api["below_mainline"])
                     + " (a kernel config, an architecture or a distribution patch can explain "
                       "this; the tests that need them skip)")
    if api.get("unknown_feature_bits"):
        notes.append("Advertised feature bits unknown to uffdwp: "
                     + ", ".join(f"bit {n}" for n in api["unknown_feature_bits"])
                     + " (newer than uffdwp.kernel_facts, or a kernel that advertises "
                       "what it does not have: see test_feature_accepted_iff_advertised)")
    return notes


def without_memtype(params: str, memtype: str | None) -> str | None:
    """A node id's parameters without its memory type: 'anon-4k' -> '4k', 'anon' -> '';
    None where the memory type is not one of them."""
    if not memtype:
        return None
    if params == memtype:
        return ""
    if params.startswith(memtype + "-"):
        return params.removeprefix(memtype + "-")
    if params.endswith("-" + memtype):
        return params.removesuffix("-" + memtype)
    if f"-{memtype}-" in params:
        return params.replace(f"-{memtype}-", "-", 1)
    return None


def row_key(test: dict) -> str:
    """The matrix row of a test: its node id without the memory-type parameter, so that
    test_x[anon] and test_x[shmem] share a row (and test_y[anon-4k] goes with test_y[shmem-4k])."""
    nodeid = test["nodeid"]
    if "[" not in nodeid or not nodeid.endswith("]"):
        return nodeid
    base, params = nodeid[:-1].split("[", 1)
    rest = without_memtype(params, test.get("memtype"))
    if rest is None:
        return nodeid
    return f"{base}[{rest}]" if rest else base


def guess_memtype(nodeid: str) -> str | None:
    """The memory type in a node id's parameters, for reports that lack user_properties (a
    crashed xdist worker's). The longest match wins: "shmem-private" over "shmem"."""
    if not nodeid.endswith("]") or "[" not in nodeid:
        return None
    params = nodeid[:-1].split("[", 1)[1]
    for m in sorted(MEMORY_TYPES, key=len, reverse=True):
        if params == m or params.startswith(m + "-") or params.endswith("-" + m) \
                or f"-{m}-" in params:
            return m
    return None


def short_row(key: str) -> str:
    """'suites/test_wp.py::test_x[4k]' -> 'test_wp::test_x[4k]' for display."""
    path, _, rest = key.partition("::")
    module = path.rsplit("/", 1)[-1].removesuffix(".py")
    return f"{module}::{rest}" if rest else module


@dataclass
class Grid:
    columns: list[str]
    rows: list[tuple[str, dict[str, dict]]]  # (row key, column -> test)


def grid(tests: list[dict]) -> Grid:
    """Test × memory type, rows in run order (file order), columns in MEMORY_TYPES order.
    Every test gets a cell: one whose cell is taken (two variants that differ only in what
    row_key drops) gets a row of its own, keyed by its node id."""
    rows: dict[str, dict[str, dict]] = {}
    seen: set[str] = set()
    for t in tests:
        col = t.get("memtype") or NO_MEMTYPE
        seen.add(col)
        key = row_key(t)
        if col in rows.get(key, {}):
            key = t["nodeid"]
        rows.setdefault(key, {})[col] = t
    columns = [m for m in MEMORY_TYPES if m in seen]
    columns += sorted(c for c in seen if c not in MEMORY_TYPES and c != NO_MEMTYPE)
    if NO_MEMTYPE in seen:
        columns.append(NO_MEMTYPE)
    return Grid(columns, sorted(rows.items(), key=lambda kv: kv[0].split("::", 1)[0]))


def by_verdict(tests: list[dict], *verdicts: str) -> list[dict]:
    return [t for t in tests if t["verdict"] in verdicts]


def skips_by_reason(tests: list[dict]) -> list[tuple[str, list[dict]]]:
    groups: dict[str, list[dict]] = defaultdict(list)
    for t in by_verdict(tests, "skip"):
        groups[t.get("reason") or "(no reason given)"].append(t)
    return sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))


# --- known bugs and their fixes ---------------------------------------------------------------
@dataclass(frozen=True)
class Fix:
    """The kernel fix of a known bug, as every report names it."""

    key: str
    title: str
    commit: str  # "?" where the hash is not confirmed
    fixed_in: str  # mainline release
    backports: tuple[str, ...] = ()

    @property
    def url(self) -> str | None:
        """The commit on git.kernel.org (its short link to mainline), where the hash is known."""
        if re.fullmatch(r"[0-9a-f]{7,40}", self.commit):
            return f"https://git.kernel.org/linus/{self.commit}"
        return None

    def releases(self) -> str:
        ports = f", backported to {', '.join(self.backports)}" if self.backports else ""
        return f"mainline {self.fixed_in}{ports}"

    def describe(self) -> str:
        """The commit, its title in quotes and the releases: '<commit> "<title>" (mainline X.Y,
        backported to X.Y.Z)'."""
        return f'{self.commit} "{self.title}" ({self.releases()})'


def fix_of(bug: dict | None) -> Fix | None:
    """The fix behind a result's "bug" object: the one place the reports read known-bug facts,
    so that a change in what results.json or kernel_facts carry is one edit here."""
    if not bug:
        return None
    key = str(bug.get("key") or "")
    facts = KNOWN_BUGS.get(key)
    return Fix(key=key or "xfail",
               title=facts.title if facts else str(bug.get("title") or "expected failure"),
               commit=str(bug.get("commit") or (facts.commit if facts else "?")),
               fixed_in=str(bug.get("fixed_in") or (facts.fixed_in if facts else "?")),
               backports=tuple(facts.backports) if facts else ())


def is_regression(test: dict) -> bool:
    """A failure of a known-bug test on a kernel that should have the fix: the fix was undone."""
    return test["verdict"] == "fail" and bool(test.get("bug"))


def bug_message(test: dict) -> str:
    """How every report words a known bug or a regression: the fix, its releases, and what the
    test saw."""
    fix = fix_of(test.get("bug"))
    reason = " ".join(str(test.get("reason") or "").split())
    if fix is None:
        return reason
    if is_regression(test):
        return f"regression: fix {fix.describe()} undone on this kernel — {reason}"
    return f"known bug, fixed by {fix.describe()} — {reason}"


def kind(test: dict) -> str:
    """The verdict as triage sorts it: a regression is a failure of its own kind."""
    return "regression" if is_regression(test) else test["verdict"]


@dataclass
class BugFound:
    fix: Fix
    tests: list[dict] = field(default_factory=list)


def known_bugs(tests: list[dict]) -> list[BugFound]:
    """Known bugs this run reproduced (verdict known-bug), with the tests that showed each."""
    found: dict[str, BugFound] = {}
    for t in by_verdict(tests, "known-bug"):
        fix = fix_of(t.get("bug") or {"key": "xfail"})
        assert fix is not None
        found.setdefault(fix.key, BugFound(fix)).tests.append(t)
    return list(found.values())


def regressions(tests: list[dict]) -> list[dict]:
    """Failures of known-bug tests on kernels that have the fix."""
    return [t for t in tests if is_regression(t)]


def problems(tests: list[dict]) -> list[dict]:
    """What a maintainer looks at first: regressions, then failures, then errors."""
    order = {"regression": 0, "fail": 1, "error": 2}
    return sorted((t for t in tests if kind(t) in order), key=lambda t: order[kind(t)])


BAD = ("regression", "fail", "error")  # kinds that fail a run whatever it allows


def counts(tests: list[dict]) -> dict[str, int]:
    """Counts by triage kind, regressions apart from failures."""
    out = dict.fromkeys(("regression", "fail", "error", "known-bug", "pass", "skip"), 0)
    for t in tests:
        out[kind(t)] = out.get(kind(t), 0) + 1
    return out


def headline(n: dict[str, int]) -> tuple[str, str]:
    """(css class, word) of the verdict line."""
    if any(n[k] for k in BAD):
        return "bad", "FAIL"
    if n["known-bug"]:
        return "known", "KNOWN BUGS"
    if n["pass"]:
        return "good", "PASS"
    return "none", "NOTHING RAN" if not n["skip"] else "ALL SKIPPED"


def plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def count_label(kind: str, n: int) -> str:
    """'1 failure', '26 known-bug results', '501 passed' for the verdict line."""
    if kind in ("pass", "skip"):
        return f"{n} {'passed' if kind == 'pass' else 'skipped'}"
    return plural(n, {"regression": "regression", "fail": "failure", "error": "error",
                      "known-bug": "known-bug result"}[kind])
