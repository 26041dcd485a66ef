# SPDX-License-Identifier: GPL-2.0-only
"""report.md: the run for a person, in GitHub-flavoured Markdown, in the same triage order as
report.html: the verdict line, failures with their reasons (and the fix a regression undid),
known bugs with their fixes, skips by cause, then every result and the negotiated features."""

from __future__ import annotations

from . import skips, tables

CELL = {"pass": "pass", "fail": "**FAIL**", "regression": "**REGRESSION**", "skip": "skip",
        "known-bug": "*known-bug*", "error": "**ERROR**"}


def _esc(text: str) -> str:
    """Make text safe inside a table cell or a list item."""
    return " ".join(str(text).split()).replace("|", "\\|").replace("[^", "[\\^")


def _fix(fix: tables.Fix) -> str:
    commit = f"[`{fix.commit}`]({fix.url})" if fix.url else f"`{fix.commit}`"
    return f"{commit} “{_esc(fix.title)}” ({fix.releases()})"


def _names(tests: list[dict]) -> str:
    return ", ".join(f"`{_esc(tables.short_row(t['nodeid']))}`" for t in tests)


def _header(results: dict, run: dict) -> list[str]:
    k, api = results["kernel"], results.get("api") or {}
    ctx = run.get("context") or {}
    pkg, suite = ctx.get("package") or {}, run.get("suite") or {}
    n = tables.counts(results["tests"])
    _, word = tables.headline(n)
    bugs = len(tables.known_bugs(results["tests"]))

    def count(kind: str) -> str:
        text = tables.count_label(kind, n[kind])
        if kind == "known-bug":
            text += f" ({tables.plural(bugs, 'bug')})"
        return f"**{text}**" if n[kind] and kind in tables.BAD else text

    allowed = " (known bugs allowed)" if run.get("allow_known_bugs") else ""
    lines = [f"# uffdwp on {k.get('release', '?')}", "",
             f"**{word}** · " + " · ".join(count(kind) for kind in (
                 "regression", "fail", "error", "known-bug", "pass", "skip"))
             + f" of {len(results['tests'])} · exit status {results['exit_status']}{allowed}", "",
             f"- **kernel**: `{k.get('release', '')}` {k.get('machine', '')} — "
             f"`{k.get('version', '')}`"]
    if pkg:
        lines.append(f"- **package**: {pkg['package']} {pkg['package_version']} "
                     f"(upstream {pkg['upstream']})")
    if ctx.get("accel"):
        lines.append(f"- **machine**: {ctx['accel']} ({ctx.get('accel_evidence', '')})")
    lines.append(f"- **uffd**: features `{api['features']:#x}` ioctls `{api['ioctls']:#x}`"
                 if api else "- **uffd**: userfaultfd could not be opened: no handshake, every "
                             "test skipped")
    if run.get("started"):
        lines.append(f"- **run**: {run['started']}, {run.get('seconds', 0):.1f} s on "
                     f"{run.get('hostname', '?')} ({run.get('jobs', '?')} jobs)")
    if suite:
        lines.append(f"- **suite**: uffdwp {suite.get('version', '?')} "
                     f"`{suite.get('commit') or 'commit unknown'}`")
    return [*lines, ""]


def _failures(results: dict, details: dict[str, str]) -> list[str]:
    failed = tables.problems(results["tests"])
    lines = [f"## Regressions, failures and errors ({len(failed)})", ""]
    if not failed:
        return [*lines, "None.", ""]
    for t in failed:
        kind = tables.kind(t)
        lines += [f"### {kind.upper()} `{t['nodeid']}`", "", _esc(t.get("reason", "")), ""]
        fix = tables.fix_of(t.get("bug"))
        if kind == "regression" and fix:
            lines += [f"Undid the fix {_fix(fix)}.", ""]
        message = details.get(t["nodeid"], "").strip()
        if message:
            lines += ["```", message.replace("```", "'''"), "```", ""]
    return lines


def _bugs(results: dict) -> list[str]:
    found = tables.known_bugs(results["tests"])
    if not found:
        return []
    n = sum(len(b.tests) for b in found)
    lines = [f"## Known bugs: {len(found)} bugs in {n} results", "",
             "The kernel predates the fix (or its backport): the bug is real, and expected.", "",
             "| bug | fix | results | tests |", "|---|---|--:|---|"]
    lines += [f"| {b.fix.key} | {_fix(b.fix)} | {len(b.tests)} | {_names(b.tests)} |"
              for b in found]
    return [*lines, ""]


def _skips(results: dict) -> list[str]:
    groups = skips.skip_groups(results["tests"])
    if not groups:
        return []
    lines = [f"## Skipped: {sum(len(g.tests) for g in groups)}, by cause", ""]
    for kind in skips.KINDS:
        mine = [g for g in groups if g.cause.kind == kind]
        if not mine:
            continue
        lines += [f"### {skips.KIND_TITLES[kind].capitalize()} "
                  f"({sum(len(g.tests) for g in mine)})", ""]
        if kind == "feature":
            lines += ["| feature | mainline | skips | reasons |", "|---|---|--:|---|"]
            lines += [f"| `{g.cause.name}` | {g.cause.since} | {len(g.tests)} | "
                      + "<br>".join(f"{_esc(r)} ({c})" for r, c in g.reasons.most_common())
                      + " |" for g in mine]
        else:
            lines += ["| reason | skips | tests |", "|---|--:|---|"]
            lines += [f"| {_esc(g.cause.name)} | {len(g.tests)} | {_names(g.tests)} |"
                      for g in mine]
        lines.append("")
    return lines


def _matrix(results: dict) -> list[str]:
    grid = tables.grid(results["tests"])
    if not grid.rows:
        return ["## Verdicts", "", "No tests ran.", ""]
    notes: dict[str, int] = {}  # reason -> footnote number, shared by equal reasons

    def cell(t: dict | None) -> str:
        if t is None:
            return ""
        kind = tables.kind(t)
        text = CELL.get(kind, kind)
        reason = tables.bug_message(t) if t.get("bug") and kind != "pass" else t.get("reason")
        if kind != "pass" and reason:
            text += f"[^{notes.setdefault(reason, len(notes) + 1)}]"
        return text

    n = sum(len(cells) for _, cells in grid.rows)
    lines = [f"## All {n} results (test × memory type)", "",
             "| test | " + " | ".join(grid.columns) + " |",
             "|---|" + "---|" * len(grid.columns)]
    for key, cells in grid.rows:
        lines.append(f"| `{_esc(tables.short_row(key))}` | "
                     + " | ".join(cell(cells.get(c)) for c in grid.columns) + " |")
    lines.append("")
    lines += [f"[^{n}]: {_esc(reason)}" for reason, n in notes.items()]
    return [*lines, ""]


def _features(results: dict) -> list[str]:
    lines = ["## Negotiated features", "",
             "| feature | bit | mainline since | present |", "|---|--:|---|---|"]
    for row in tables.feature_rows(results.get("api") or {}):
        present = "—" if row.present is None else ("yes" if row.present else "**no**")
        lines.append(f"| {row.name} | {row.bit} | {row.since} | {present} |")
    notes = tables.feature_notes(results.get("api") or {}, results["kernel"]["release"])
    return [*lines, "", *[f"- {_esc(n)}" for n in notes], *([""] if notes else [])]


def render(results: dict, run: dict | None = None, details: dict[str, str] | None = None) -> str:
    run, details = run or {}, details or {}
    lines = [*_header(results, run), *_failures(results, details), *_bugs(results),
             *_skips(results), *_matrix(results), *_features(results)]
    return "\n".join(lines).rstrip() + "\n"
