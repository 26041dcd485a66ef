# SPDX-License-Identifier: GPL-2.0-only
"""The matrix report's content as plain data — sections of paragraphs and tables of cells — and its
two renderings, Markdown and self-contained HTML. A view is written once and shows the same in
both; a new per-kernel row or section needs no HTML or Markdown of its own.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field


@dataclass
class Cell:
    text: str = ""
    css: str = ""  # a verdict or status class: pass, fail, known-bug, skip, ok, boot-failed, ...
    note: str = ""  # a second, smaller line: the missing feature, the bug, the reason
    href: str = ""
    code: bool = False
    strong: bool = False


CellLike = Cell | str | int | float


@dataclass
class Table:
    head: list[str]
    rows: list[list[CellLike]]


@dataclass
class Section:
    title: str
    id: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    pre: str = ""  # preformatted text after the tables (logs, notes)


def cell(value: CellLike) -> Cell:
    return value if isinstance(value, Cell) else Cell(str(value))


# --- Markdown ------------------------------------------------------------------------------------
def _md_text(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _decorate(c: Cell, text: str, fmt: dict[str, str], escape) -> str:
    """A cell's text with its markup, in one format's templates."""
    if c.code and text:
        text = fmt["code"].format(text=text)
    if c.strong and text:
        text = fmt["strong"].format(text=text)
    if c.href:
        text = fmt["href"].format(text=text, href=escape(c.href))
    if c.note:
        text = fmt["note"].format(text=text, note=escape(c.note))
    return text


MD = {"code": "`{text}`", "strong": "**{text}**", "href": "[{text}]({href})",
      "note": "{text} ({note})"}


def _md_cell(value: CellLike) -> str:
    c = cell(value)
    return _decorate(c, _md_text(c.text), MD, _md_text)


def render_md(title: str, verdict: str, sections: list[Section]) -> str:
    lines = [f"# {title}", "", verdict, ""]
    for s in sections:
        lines += [f"## {s.title}", ""]
        for p in s.paragraphs:
            lines += [_md_text(p), ""]
        for t in s.tables:
            lines.append("| " + " | ".join(_md_text(h) for h in t.head) + " |")
            lines.append("|" + "---|" * len(t.head))
            lines += ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in t.rows]
            lines.append("")
        if s.pre:
            lines += ["```", s.pre.replace("```", "'''"), "```", ""]
    return "\n".join(lines).rstrip() + "\n"


# --- HTML ----------------------------------------------------------------------------------------
CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:1.2em auto;max-width:1400px;padding:0 1em;
color:#222}
h1{font-size:1.5em;margin:.2em 0}h2{margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0}
th,td{border:1px solid #ccc;padding:.2em .5em;text-align:left;vertical-align:top}
th{background:#f0f0f0}
td small{display:block;color:#444;font-size:.8em;font-weight:normal}
code,pre{font-family:ui-monospace,monospace;font-size:.92em}
pre{background:#f7f7f7;padding:.5em;white-space:pre-wrap}
.verdict{font-size:1.15em;padding:.5em .8em;border-radius:.3em}
.verdict.bad{background:#f7c6c6}.verdict.known{background:#fbe7b5}.verdict.good{background:#d8f0d8}
.ok,.pass,.present{background:#d9f2d9}
.failed,.fail,.error,.regression,.absent-unexpected,.boot-failed,.timeout,.bad{background:#f8c9c9;
font-weight:bold}
.skip,.absent-expected,.unknown,.skipped{background:#f2f2f2;color:#555}
.known-bug,.present-early,.known{background:#fbe7b5}
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


HTML = {"code": "<code>{text}</code>", "strong": "<b>{text}</b>",
        "href": "<a href='{href}'>{text}</a>", "note": "{text}<small>{note}</small>"}


def _html_cell(value: CellLike, tag: str = "td") -> str:
    c = cell(value)
    css = f" class='{_e(c.css)}'" if c.css else ""
    return f"<{tag}{css}>{_decorate(c, _e(c.text), HTML, _e)}</{tag}>"


def render_html(title: str, verdict: str, verdict_css: str, sections: list[Section]) -> str:
    out = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{_e(title)}</title>"
           f"<style>{CSS}</style></head><body><h1>{_e(title)}</h1>",
           f"<p class='verdict {_e(verdict_css)}' id='verdict'>{_e(verdict)}</p>"]
    for s in sections:
        out.append(f"<h2 id='{_e(s.id)}'>{_e(s.title)}</h2>")
        out += [f"<p>{_e(p)}</p>" for p in s.paragraphs]
        for t in s.tables:
            out.append("<table><tr>" + "".join(f"<th>{_e(h)}</th>" for h in t.head) + "</tr>")
            out += ["<tr>" + "".join(_html_cell(v) for v in row) + "</tr>" for row in t.rows]
            out.append("</table>")
        if s.pre:
            out.append(f"<pre>{_e(s.pre)}</pre>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"
