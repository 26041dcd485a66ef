# SPDX-License-Identifier: GPL-2.0-only
"""`uffdwp matrix --history 6.1`: the known-bug tests on every build of a series still in the
archive (the suite and its security archive), and per bug the builds where its verdict changes.

A fix reaches a distribution kernel in one build; this names that build from observation (the
bug's own tests), beside what each build's changelog says.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

from ..known_bugs import KNOWN_BUGS
from .catalogue import KernelSpec
from .crosscheck import bug_verdicts
from .debfetch import Build, SuiteApt

CONCLUSIVE = ("pass", "known-bug", "fail")  # skip, error, no result: says nothing about the fix


def build_specs(entry: KernelSpec, builds: list[Build]) -> list[KernelSpec]:
    """One pinned catalogue entry per build, named by its ABI (and version where one ABI has
    several builds)."""
    abis = [b.abi for b in builds]
    return [replace(entry, name=b.abi if abis.count(b.abi) == 1 else f"{b.abi}_{b.version}",
                    package=b.package, version=b.version, expect_release=f"{b.abi}-",
                    note=f"{b.package} {b.version} ({b.suite})")
            for b in builds]


def list_builds(entry: KernelSpec) -> list[Build]:
    apt = SuiteApt(entry.suites)
    apt.update()
    return apt.image_builds(entry.series)


@dataclass(frozen=True)
class Change:
    bug: str
    before: str  # the last build with the old verdict
    old: str
    at: str  # the first build with the new verdict
    new: str
    between: tuple[str, ...] = ()  # builds in between that gave no verdict (skip, error, none)

    def text(self) -> str:
        gap = (f" ({', '.join(self.between)} in between: no verdict)" if self.between else "")
        return f"{self.old} up to {self.before}, {self.new} from {self.at}{gap}"


def verdict_changes(rows: list[tuple[str, dict[str, str]]]) -> dict[str, list[Change]]:
    """Builds in order (oldest first) with each one's verdict per bug -> per bug, every change
    between consecutive conclusive verdicts. Inconclusive builds (skip, error, not run) are
    stepped over: they neither start nor end a run."""
    out: dict[str, list[Change]] = {}
    for bug in KNOWN_BUGS:
        last: tuple[str, str] | None = None
        silent: list[str] = []
        for build, verdicts in rows:
            v = verdicts.get(bug, "")
            if v not in CONCLUSIVE:
                silent.append(build)
                continue
            if last is not None and v != last[1]:
                out.setdefault(bug, []).append(
                    Change(bug, last[0], last[1], build, v, tuple(silent)))
            last, silent = (build, v), []
    return out


def describe(bug: str, rows: list[tuple[str, dict[str, str]]],
             changes: dict[str, list[Change]]) -> str:
    """One line per bug: its changes, or the one verdict it had throughout."""
    seen = [(b, v[bug]) for b, v in rows if v.get(bug) in CONCLUSIVE]
    if bug in changes:
        return "; ".join(c.text() for c in changes[bug])
    if not seen:
        return "no conclusive verdict on any build"
    first, last = seen[0][0], seen[-1][0]
    span = first if first == last else f"{first} … {last}"
    return f"{seen[0][1]} on every build ({span})"


def first_named(bug: str, outcomes) -> str:
    """The first build whose package changelog says the fix is in ("" if none says so)."""
    return next((o.name for o in outcomes
                 if (o.fix_evidence.get(bug) or {}).get("fixed") is True), "")


def summarize(outcomes) -> dict:
    """history.json: the builds in order, each bug's verdict per build, the changes, and the
    first build whose changelog has the fix."""
    rows = [(o.name, bug_verdicts(o.record)) for o in outcomes]
    changes = verdict_changes(rows)
    lines = {}
    for bug in KNOWN_BUGS:
        named = first_named(bug, outcomes)
        lines[bug] = describe(bug, rows, changes) + (
            f"; changelog: fix in from {named}" if named and named != rows[0][0] else "")
    return {
        "builds": [{"name": o.name, "package": o.package, "version": o.package_version,
                    "release": o.record.release, "status": o.status} for o in outcomes],
        "verdicts": {bug: {name: v.get(bug, "") for name, v in rows} for bug in KNOWN_BUGS},
        "changes": {bug: [c.__dict__ for c in cs] for bug, cs in changes.items()},
        "changelog_first_fixed": {bug: first_named(bug, outcomes) for bug in KNOWN_BUGS},
        "lines": lines,
    }


def render_md(series: str, outcomes, data: dict) -> str:
    names = [b["name"] for b in data["builds"]]
    L = [f"# uffdwp history: known bugs over every {series} build", "",
         "Builds oldest first; each ran only the known-bug tests.", "",
         "| build | package version | status |", "|---|---|---|"]
    L += [f"| {b['name']} | {b['version']} | {b['status']} |" for b in data["builds"]]
    L += ["", "## Where each verdict changes", ""]
    L += [f"- **{bug}**: {line}" for bug, line in data["lines"].items()]
    L += ["", "## Verdicts", "", "| bug | " + " | ".join(names) + " |",
          "|---|" + "---|" * len(names)]
    for bug, per in data["verdicts"].items():
        L.append(f"| {bug} | " + " | ".join(per[n] or "-" for n in names) + " |")
    return "\n".join(L) + "\n"


def write(report_dir: Path, series: str, outcomes) -> dict:
    data = summarize(outcomes)
    (report_dir / "history.json").write_text(json.dumps(data, indent=1) + "\n")
    (report_dir / "history.md").write_text(render_md(series, outcomes, data))
    return data
