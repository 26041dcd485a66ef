"""Views of a results.json document that the human-readable reports share."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from ..kernel_facts import FEATURE_FACTS, KNOWN_BUGS
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


def row_key(test: dict) -> str:
    """The matrix row of a test: its node id without the memory-type parameter, so that
    test_x[anon] and test_x[shmem] share a row (and test_y[anon-4k] goes with test_y[shmem-4k])."""
    nodeid, memtype = test["nodeid"], test.get("memtype")
    if "[" not in nodeid or not nodeid.endswith("]") or not memtype:
        return nodeid
    base, params = nodeid[:-1].split("[", 1)
    if params == memtype:
        return base
    for rest in (params.removeprefix(memtype + "-") if params.startswith(memtype + "-") else None,
                 params.removesuffix("-" + memtype) if params.endswith("-" + memtype) else None):
        if rest:
            return f"{base}[{rest}]"
    if f"-{memtype}-" in params:
        return f"{base}[{params.replace(f'-{memtype}-', '-', 1)}]"
    return nodeid


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
    """Test × memory type, rows in run order (file order), columns in MEMORY_TYPES order."""
    rows: dict[str, dict[str, dict]] = {}
    seen: set[str] = set()
    for t in tests:
        col = t.get("memtype") or NO_MEMTYPE
        seen.add(col)
        rows.setdefault(row_key(t), {})[col] = t
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


@dataclass
class BugFound:
    key: str
    commit: str
    fixed_in: str
    title: str
    backports: tuple[str, ...]
    tests: list[dict] = field(default_factory=list)


def known_bugs(tests: list[dict]) -> list[BugFound]:
    """Known bugs this run reproduced (verdict known-bug), with the tests that showed each."""
    found: dict[str, BugFound] = {}
    for t in by_verdict(tests, "known-bug"):
        bug = t.get("bug") or {"key": "xfail", "commit": "?", "fixed_in": "?"}
        facts = KNOWN_BUGS.get(bug["key"])
        entry = found.setdefault(bug["key"], BugFound(
            bug["key"], bug.get("commit", "?"), bug.get("fixed_in", "?"),
            facts.title if facts else "expected failure (xfail)",
            facts.backports if facts else ()))
        entry.tests.append(t)
    return list(found.values())


def regressions(tests: list[dict]) -> list[dict]:
    """Failures of known-bug tests on kernels that have the fix."""
    return [t for t in by_verdict(tests, "fail") if t.get("bug")]
