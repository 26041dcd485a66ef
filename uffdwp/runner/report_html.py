"""report.html: one self-contained page (inline CSS, no scripts, no external assets)."""

from __future__ import annotations

from html import escape

from . import tables

CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1200px;padding:0 1em;color:#222}
h1{font-size:1.6em;margin-bottom:.2em}h2{margin-top:1.8em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0}
th,td{border:1px solid #ccc;padding:.2em .6em;text-align:left;vertical-align:top}
th{background:#f3f3f3}td.num{text-align:right}
code,pre{font-family:ui-monospace,monospace;font-size:.92em}
pre{background:#f6f6f6;padding:.6em;overflow-x:auto;white-space:pre-wrap}
.pass{background:#d8f0d8}.fail,.error{background:#f7c6c6;font-weight:bold}
.skip{background:#f2f2f2;color:#666}.known-bug{background:#fbe7b5}
.present{color:#176117}.absent{color:#a33}
td.v{text-align:center;cursor:help;white-space:nowrap}
.badge{display:inline-block;padding:.15em .6em;margin-right:.3em;border-radius:.8em}
.meta td:first-child{font-weight:bold}
details{margin:.3em 0}summary{cursor:pointer}
"""


def _e(text: object) -> str:
    return escape(str(text), quote=True)


def _header(results: dict, run: dict) -> str:
    k, s = results["kernel"], results["summary"]
    rows = [("kernel", f"<code>{_e(k.get('release', ''))}</code> {_e(k.get('machine', ''))}"),
            ("version", f"<code>{_e(k.get('version', ''))}</code>")]
    if run.get("started"):
        rows.append(("run", f"{_e(run['started'])}, {run.get('seconds', 0):.1f} s on "
                            f"{_e(run.get('hostname', '?'))}, {_e(run.get('jobs', '?'))} jobs"))
    exit_note = " (known bugs allowed)" if run.get("allow_known_bugs") else ""
    rows.append(("exit status", f"{results['exit_status']}{exit_note}"))
    badges = "".join(f'<span class="badge {v}">{v} {n}</span>' for v, n in s.items())
    table = "".join(f"<tr><td>{a}</td><td>{b}</td></tr>" for a, b in rows)
    return (f"<h1>uffdwp run on {_e(k.get('release', '?'))}</h1>"
            f'<table class="meta">{table}</table><p>{badges}</p>')


def _features(results: dict) -> str:
    api = results.get("api") or {}
    if api:
        intro = (f"<p>UFFDIO_API features=<code>{api['features']:#x}</code> "
                 f"ioctls=<code>{api['ioctls']:#x}</code></p>")
    else:
        intro = ("<p><b>userfaultfd could not be opened on this machine</b>: no handshake, every "
                 "test skipped (see the reasons below).</p>")
    rows = []
    for r in tables.feature_rows(api):
        if r.present is None:
            cell = "<td>—</td>"
        else:
            cell = (f'<td class="{"present" if r.present else "absent"}">'
                    f'{"yes" if r.present else "no"}</td>')
        rows.append(f'<tr><td>{r.name}</td><td class="num">{r.bit}</td>'
                    f"<td>{r.since}</td>{cell}</tr>")
    return ("<h2>Negotiated features</h2>" + intro +
            "<table><tr><th>feature</th><th>bit</th><th>mainline since</th><th>present</th></tr>"
            + "".join(rows) + "</table>")


def _matrix(results: dict) -> str:
    grid = tables.grid(results["tests"])
    if not grid.rows:
        return "<h2>Verdicts</h2><p>No tests ran.</p>"
    head = "".join(f"<th>{_e(c)}</th>" for c in grid.columns)
    rows = []
    for key, cells in grid.rows:
        tds = []
        for c in grid.columns:
            t = cells.get(c)
            if t is None:
                tds.append("<td></td>")
                continue
            hover = t.get("reason") or t["verdict"]
            if t.get("duration"):
                hover += f" ({t['duration']:.2f} s)"
            tds.append(f'<td class="v {_e(t["verdict"])}" title="{_e(hover)}">'
                       f'{_e(t["verdict"])}</td>')
        rows.append(f"<tr><td><code>{_e(tables.short_row(key))}</code></td>{''.join(tds)}</tr>")
    return ("<h2>Verdicts (test × memory type)</h2><p>Hover over a cell for its reason.</p>"
            f"<table><tr><th>test</th>{head}</tr>{''.join(rows)}</table>")


def _failures(results: dict, details: dict[str, str]) -> str:
    failed = tables.by_verdict(results["tests"], "fail", "error")
    if not failed:
        return ""
    items = []
    for t in failed:
        message = details.get(t["nodeid"], "").strip()
        body = f"<pre>{_e(message)}</pre>" if message else ""
        items.append(f'<details open><summary><span class="badge {t["verdict"]}">'
                     f'{t["verdict"]}</span> <code>{_e(t["nodeid"])}</code>: '
                     f'{_e(t.get("reason", ""))}</summary>{body}</details>')
    return "<h2>Failures</h2>" + "".join(items)


def _bugs(results: dict, details: dict[str, str]) -> str:
    found = tables.known_bugs(results["tests"])
    if not found:
        return ""
    rows = []
    for b in found:
        names = "<br>".join(f'<code title="{_e(t.get("reason", ""))}">'
                            f'{_e(tables.short_row(t["nodeid"]))}</code>' for t in b.tests)
        rows.append(f"<tr><td>{_e(b.key)}</td><td><code>{_e(b.commit)}</code></td>"
                    f"<td>{_e(b.fixed_in)}</td><td>{_e(', '.join(b.backports) or '—')}</td>"
                    f"<td>{_e(b.title)}</td><td>{names}</td></tr>")
    return ("<h2>Known bugs found</h2><table><tr><th>bug</th><th>commit</th><th>fixed in</th>"
            "<th>backports</th><th>title</th><th>tests</th></tr>" + "".join(rows) + "</table>")


def _skips(results: dict) -> str:
    groups = tables.skips_by_reason(results["tests"])
    if not groups:
        return ""
    items = []
    for reason, tests in groups:
        names = ", ".join(f"<code>{_e(tables.short_row(t['nodeid']))}</code>" for t in tests)
        items.append(f"<details><summary>{_e(reason)} <b>({len(tests)})</b></summary>"
                     f"<p>{names}</p></details>")
    return "<h2>Skips by reason</h2>" + "".join(items)


def render(results: dict, run: dict | None = None, details: dict[str, str] | None = None) -> str:
    run, details = run or {}, details or {}
    title = f"uffdwp run on {results['kernel'].get('release', '?')}"
    body = "".join((_header(results, run), _features(results), _matrix(results),
                    _failures(results, details), _bugs(results, details), _skips(results)))
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width,initial-scale=1">'
            f"<title>{_e(title)}</title><style>{CSS}</style></head>\n<body>{body}</body></html>\n")
