"""report.md: the run for a person, in GitHub-flavoured Markdown (footnotes carry the reasons)."""

from __future__ import annotations

from . import tables

CELL = {"pass": "pass", "fail": "**FAIL**", "skip": "skip", "known-bug": "*known-bug*",
        "error": "**ERROR**"}


def _esc(text: str) -> str:
    """Make text safe inside a table cell or a list item."""
    return " ".join(str(text).split()).replace("|", "\\|").replace("[^", "[\\^")


def _header(results: dict, run: dict) -> list[str]:
    k = results["kernel"]
    s = results["summary"]
    lines = [f"# uffdwp run on {k.get('release', '?')}", "",
             f"- **kernel**: `{k.get('release', '')}` {k.get('machine', '')} — "
             f"`{k.get('version', '')}`"]
    if run.get("started"):
        lines.append(f"- **started**: {run['started']}, took {run.get('seconds', 0):.1f} s "
                     f"on {run.get('hostname', '?')} ({run.get('jobs', '?')} jobs)")
    lines.append(f"- **exit status**: {results['exit_status']}"
                 + (" (known bugs allowed)" if run.get("allow_known_bugs") else ""))
    lines.append("- **summary**: " + " · ".join(f"{v} {n}" for v, n in s.items()))
    regressions = tables.regressions(results["tests"])
    if regressions:
        lines.append(f"- **regressions of fixed bugs**: {len(regressions)}")
    return [*lines, ""]


def _features(results: dict) -> list[str]:
    api = results.get("api") or {}
    lines = ["## Negotiated features", ""]
    if not api:
        lines += ["userfaultfd could not be opened on this machine: no handshake, "
                  "every test skipped (see the reasons below).", ""]
    else:
        lines += [f"UFFDIO_API features=`{api['features']:#x}` ioctls=`{api['ioctls']:#x}`", ""]
    lines += ["| feature | bit | mainline since | present |", "|---|--:|---|---|"]
    for row in tables.feature_rows(api):
        present = "—" if row.present is None else ("yes" if row.present else "**no**")
        lines.append(f"| {row.name} | {row.bit} | {row.since} | {present} |")
    return [*lines, ""]


def _matrix(results: dict) -> list[str]:
    grid = tables.grid(results["tests"])
    if not grid.rows:
        return ["## Verdicts", "", "No tests ran.", ""]
    notes: dict[str, int] = {}  # reason -> footnote number, shared by equal reasons

    def cell(t: dict | None) -> str:
        if t is None:
            return ""
        text = CELL.get(t["verdict"], t["verdict"])
        if t["verdict"] != "pass" and t.get("reason"):
            n = notes.setdefault(t["reason"], len(notes) + 1)
            text += f"[^{n}]"
        return text

    lines = ["## Verdicts (test × memory type)", "",
             "| test | " + " | ".join(grid.columns) + " |",
             "|---|" + "---|" * len(grid.columns)]
    for key, cells in grid.rows:
        lines.append(f"| `{_esc(tables.short_row(key))}` | "
                     + " | ".join(cell(cells.get(c)) for c in grid.columns) + " |")
    lines.append("")
    lines += [f"[^{n}]: {_esc(reason)}" for reason, n in notes.items()]
    return [*lines, ""]


def _failures(results: dict, details: dict[str, str]) -> list[str]:
    failed = tables.by_verdict(results["tests"], "fail", "error")
    if not failed:
        return []
    lines = ["## Failures", ""]
    for t in failed:
        lines += [f"### {t['verdict'].upper()} `{t['nodeid']}`", "", _esc(t.get("reason", "")), ""]
        message = details.get(t["nodeid"], "").strip()
        if message:
            lines += ["```", message.replace("```", "'''"), "```", ""]
    return lines


def _bugs(results: dict) -> list[str]:
    found = tables.known_bugs(results["tests"])
    if not found:
        return []
    lines = ["## Known bugs found", "",
             "| bug | commit | fixed in | backports | title | tests |", "|---|---|---|---|---|---|"]
    for b in found:
        names = ", ".join(f"`{tables.short_row(t['nodeid'])}`" for t in b.tests)
        lines.append(f"| {b.key} | {b.commit} | {b.fixed_in} | {', '.join(b.backports) or '—'} "
                     f"| {_esc(b.title)} | {names} |")
    return [*lines, ""]


def _skips(results: dict) -> list[str]:
    groups = tables.skips_by_reason(results["tests"])
    if not groups:
        return []
    lines = ["## Skips by reason", ""]
    for reason, tests in groups:
        names = ", ".join(f"`{tables.short_row(t['nodeid'])}`" for t in tests)
        lines.append(f"- **{_esc(reason)}** ({len(tests)}): {names}")
    return [*lines, ""]


def render(results: dict, run: dict | None = None, details: dict[str, str] | None = None) -> str:
    run, details = run or {}, details or {}
    lines = [*_header(results, run), *_features(results), *_matrix(results),
             *_failures(results, details), *_bugs(results), *_skips(results)]
    return "\n".join(lines).rstrip() + "\n"
