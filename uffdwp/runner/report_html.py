# SPDX-License-Identifier: GPL-2.0-only
"""report.html: one self-contained page (inline CSS, no scripts, no external assets), in triage
order: the verdict line, what failed and why (with the fix a regression undid), the known bugs
with their fixes, the skips by cause, then the full grid and the negotiated features. Every
reason is on the page, none only in a tooltip; red means a non-zero count of something wrong.
"""

from __future__ import annotations

from html import escape

from . import skips, tables

CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:1.2em auto;max-width:1280px;padding:0 1em;
color:#222}
h1{font-size:1.5em;margin:.2em 0}h2{margin-top:1.6em;border-bottom:1px solid #ddd}
h3{margin:1em 0 .3em}
table{border-collapse:collapse;margin:.5em 0}
th,td{border:1px solid #ccc;padding:.2em .5em;text-align:left;vertical-align:top}
th{background:#f3f3f3}td.num{text-align:right}
code,pre{font-family:ui-monospace,monospace;font-size:.92em}
pre{background:#f6f6f6;padding:.6em;overflow-x:auto;white-space:pre-wrap;margin:.3em 0}
.verdict{font-size:1.15em;padding:.5em .8em;border-radius:.3em;margin:.4em 0 .8em}
.verdict.bad{background:#f7c6c6}.verdict.known{background:#fbe7b5}.verdict.good{background:#d8f0d8}
.verdict.none{background:#eee}
.n{display:inline-block;padding:.05em .55em;margin:0 .15em;border-radius:.8em;background:#eee;
color:#555}
.n.bad{background:#c62828;color:#fff;font-weight:bold}.n.known{background:#f0b429;color:#222}
.n.good{background:#2e7d32;color:#fff}
.pass{background:#d8f0d8}.fail,.error,.regression{background:#f7c6c6;font-weight:bold}
.skip{background:#f2f2f2;color:#555}.known-bug{background:#fbe7b5}
.present{color:#176117}.absent{color:#a33}
td.fix{min-width:24em}td.v{text-align:center;white-space:nowrap}
td.v small{display:block;font-weight:normal;
color:#444;font-size:.8em}
.meta td:first-child{font-weight:bold;white-space:nowrap}
details{margin:.2em 0}summary{cursor:pointer}
.ok{color:#176117;font-weight:bold}.tests{color:#444;font-size:.92em}
"""


def _e(text: object) -> str:
    return escape(str(text), quote=True)


def _code_list(tests: list[dict]) -> str:
    return ", ".join(f"<code>{_e(tables.short_row(t['nodeid']))}</code>" for t in tests)


def _fix_html(fix: tables.Fix) -> str:
    commit = _e(fix.commit)
    if fix.url:
        commit = f'<a href="{_e(fix.url)}">{commit}</a>'
    return f"<code>{commit}</code> “{_e(fix.title)}” ({_e(fix.releases())})"


def _badge(kind: str, n: int, extra: str = "") -> str:
    cls = "" if not n else "bad" if kind in tables.BAD else "known" if kind == "known-bug" else \
        "good" if kind == "pass" else ""
    return f'<span class="n {cls}">{_e(tables.count_label(kind, n))}{_e(extra)}</span>'


def _verdict(results: dict, run: dict) -> str:
    n = tables.counts(results["tests"])
    cls, word = tables.headline(n)
    bugs = len(tables.known_bugs(results["tests"]))
    allowed = " (known bugs allowed)" if run.get("allow_known_bugs") else ""
    badges = [_badge(k, n[k], f" ({tables.plural(bugs, 'bug')})" if k == "known-bug" else "")
              for k in ("regression", "fail", "error", "known-bug", "pass", "skip")]
    return (f'<p class="verdict {cls}" id="verdict"><b>{word}</b> · ' + " ".join(badges)
            + f" of {len(results['tests'])} · exit status {results['exit_status']}{allowed}</p>")


def _meta(results: dict, run: dict) -> str:
    k, api = results["kernel"], results.get("api") or {}
    ctx = run.get("context") or {}
    pkg, suite = ctx.get("package") or {}, run.get("suite") or {}
    rows = [("kernel", f"<code>{_e(k.get('release', ''))}</code> {_e(k.get('machine', ''))} "
                       f"<code>{_e(k.get('version', ''))}</code>")]
    if pkg:
        rows.append(("package", f"{_e(pkg['package'])} {_e(pkg['package_version'])} "
                                f"(upstream {_e(pkg['upstream'])})"))
    if ctx.get("accel"):
        rows.append(("machine", f"{_e(ctx['accel'])} ({_e(ctx.get('accel_evidence', ''))})"))
    rows.append(("uffd", f"features <code>{api['features']:#x}</code> ioctls "
                         f"<code>{api['ioctls']:#x}</code>" if api else
                 "<b>userfaultfd could not be opened</b>: no handshake, every test skipped"))
    if run.get("started"):
        rows.append(("run", f"{_e(run['started'])}, {run.get('seconds', 0):.1f} s on "
                            f"{_e(run.get('hostname', '?'))}, {_e(run.get('jobs', '?'))} jobs"))
    if suite:
        rows.append(("suite", f"uffdwp {_e(suite.get('version', '?'))} "
                              f"<code>{_e(suite.get('commit') or 'commit unknown')}</code>"))
    return '<table class="meta">' + "".join(
        f"<tr><td>{a}</td><td>{b}</td></tr>" for a, b in rows) + "</table>"


def _failures(results: dict, details: dict[str, str]) -> str:
    failed = tables.problems(results["tests"])
    head = f'<h2 id="failures">Regressions, failures and errors ({len(failed)})</h2>'
    if not failed:
        return head + '<p class="ok">None.</p>'
    rows = []
    for t in failed:
        kind = tables.kind(t)
        fix = tables.fix_of(t.get("bug"))
        fixed = f"undid {_fix_html(fix)}" if kind == "regression" and fix else ""
        message = details.get(t["nodeid"], "").strip()
        trace = (f"<details><summary>traceback</summary><pre>{_e(message)}</pre></details>"
                 if message else "")
        rows.append(f'<tr><td class="{kind}">{kind}</td><td><code>{_e(t["nodeid"])}</code></td>'
                    f"<td>{_e(t.get('reason', ''))}{trace}</td><td>{fixed}</td></tr>")
    return (head + "<table><tr><th>verdict</th><th>test</th><th>reason</th><th>fix</th></tr>"
            + "".join(rows) + "</table>")


def _bugs(results: dict) -> str:
    found = tables.known_bugs(results["tests"])
    if not found:
        return ""
    rows = []
    for b in found:
        saw = "".join(f"<div><code>{_e(tables.short_row(t['nodeid']))}</code>: "
                      f"{_e(t.get('reason', ''))}</div>" for t in b.tests)
        rows.append(f'<tr><td class="known-bug">{_e(b.fix.key)}</td><td class="fix">'
                    f'{_fix_html(b.fix)}</td><td class="num">{len(b.tests)}</td>'
                    f'<td class="tests">{_code_list(b.tests)}<details><summary>what each test '
                    f"saw</summary>{saw}</details></td></tr>")
    n = sum(len(b.tests) for b in found)
    return (f'<h2 id="known-bugs">Known bugs: {len(found)} bugs in {n} results</h2>'
            "<p>The kernel predates the fix (or its backport): the bug is real, and expected.</p>"
            "<table><tr><th>bug</th><th>fix</th><th>results</th><th>tests</th></tr>"
            + "".join(rows) + "</table>")


def _skips(results: dict) -> str:
    groups = skips.skip_groups(results["tests"])
    if not groups:
        return ""
    total = sum(len(g.tests) for g in groups)
    out = [f'<h2 id="skips">Skipped: {total}, by cause</h2>']
    for kind in skips.KINDS:
        mine = [g for g in groups if g.cause.kind == kind]
        if not mine:
            continue
        n = sum(len(g.tests) for g in mine)
        out.append(f"<h3>{_e(skips.KIND_TITLES[kind].capitalize())} ({n})</h3><table>")
        out.append("<tr><th>feature</th><th>mainline</th><th>skips</th><th>reasons and tests"
                   "</th></tr>" if kind == "feature" else
                   "<tr><th>reason</th><th>skips</th><th>tests</th></tr>")
        for g in mine:
            tests = (f"<details><summary>{tables.plural(len(g.tests), 'test')}</summary>"
                     f"<p class='tests'>"
                     f"{_code_list(g.tests)}</p></details>")
            if kind == "feature":
                reasons = "".join(f"<div>{_e(r)} <b>({c})</b></div>"
                                  for r, c in g.reasons.most_common())
                out.append(f"<tr><td><code>{_e(g.cause.name)}</code></td>"
                           f"<td>{_e(g.cause.since)}</td><td class='num'>{len(g.tests)}</td>"
                           f"<td>{reasons}{tests}</td></tr>")
            else:
                out.append(f"<tr><td>{_e(g.cause.name)}</td><td class='num'>{len(g.tests)}</td>"
                           f"<td>{tests}</td></tr>")
        out.append("</table>")
    return "".join(out)


def _note(t: dict, notes: dict[str, int]) -> str:
    """What a grid cell says under its verdict: the missing feature, the bug, or a note number."""
    kind = tables.kind(t)
    if kind == "pass":
        return ""
    if kind in ("known-bug", "regression") and t.get("bug"):
        fix = tables.fix_of(t["bug"])
        return fix.key if fix else ""
    cause = skips.cause_of(t.get("reason", "")) if kind == "skip" else None
    if cause is not None and cause.kind == "feature":
        return f"no {cause.name}"
    reason = t.get("reason") or ""
    return f"note {notes.setdefault(reason, len(notes) + 1)}" if reason else ""


def _grid(results: dict) -> str:
    grid = tables.grid(results["tests"])
    if not grid.rows:
        return '<h2 id="grid">Verdicts</h2><p>No tests ran.</p>'
    notes: dict[str, int] = {}
    head = "".join(f"<th>{_e(c)}</th>" for c in grid.columns)
    rows = []
    for key, cells in grid.rows:
        tds = []
        for c in grid.columns:
            t = cells.get(c)
            if t is None:
                tds.append("<td></td>")
                continue
            kind, note = tables.kind(t), _note(t, notes)
            small = f"<small>{_e(note)}</small>" if note else ""
            tds.append(f'<td class="v {kind}" title="{_e(t.get("reason") or kind)}">'
                       f"{_e(kind)}{small}</td>")
        rows.append(f"<tr><td><code>{_e(tables.short_row(key))}</code></td>{''.join(tds)}</tr>")
    legend = "".join(f"<div>note {n}: {_e(reason)}</div>" for reason, n in notes.items())
    n = sum(len(cells) for _, cells in grid.rows)
    return (f'<h2 id="grid">All {n} results (test × memory type)</h2>'
            f"<table><tr><th>test</th>{head}</tr>{''.join(rows)}</table>"
            + (f'<div class="notes">{legend}</div>' if legend else ""))


def _features(results: dict) -> str:
    api = results.get("api") or {}
    rows = []
    for r in tables.feature_rows(api):
        if r.present is None:
            cell = "<td>—</td>"
        else:
            cell = (f'<td class="{"present" if r.present else "absent"}">'
                    f'{"yes" if r.present else "no"}</td>')
        rows.append(f'<tr><td>{r.name}</td><td class="num">{r.bit}</td>'
                    f"<td>{r.since}</td>{cell}</tr>")
    return ('<h2 id="features">Negotiated features</h2>'
            "<table><tr><th>feature</th><th>bit</th><th>mainline since</th><th>present</th></tr>"
            + "".join(rows) + "</table>"
            + "".join(f'<p class="notes">{escape(n)}</p>'
                      for n in tables.feature_notes(api, results["kernel"]["release"])))


def render(results: dict, run: dict | None = None, details: dict[str, str] | None = None) -> str:
    run, details = run or {}, details or {}
    k = results["kernel"]
    title = f"uffdwp on {k.get('release', '?')}"
    body = "".join((f"<h1>{_e(title)}</h1>", _verdict(results, run), _meta(results, run),
                    _failures(results, details), _bugs(results), _skips(results),
                    _grid(results), _features(results)))
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width,initial-scale=1">'
            f"<title>{_e(title)}</title><style>{CSS}</style></head>\n<body>{body}</body></html>\n")
