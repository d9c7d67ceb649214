"""The report as one self-contained HTML page: inline CSS, charts as PNG data URIs.

The page references nothing outside itself (no script, stylesheet, font or image address), so
it opens offline and can be mailed or attached as one file.
"""

from __future__ import annotations

import html
from typing import Any

from allocator.report.model import Report, Table

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2em auto;max-width:1100px;
color:#222;line-height:1.4;padding:0 1em}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.8em}
table{border-collapse:collapse;margin:.8em 0;font-size:.9em}
th,td{border:1px solid #ddd;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f4f4f4}caption{text-align:left;font-style:italic;padding:.3em 0}
td.pass{color:#116611;font-weight:bold}td.fail{color:#fff;background:#c62828;font-weight:bold}
.banner{padding:.8em 1em;border-radius:4px;font-weight:bold;margin:1em 0}
.banner.ok{background:#e8f5e9;color:#1b5e20}.banner.fail{background:#c62828;color:#fff}
section.failed h2{color:#c62828}
img{max-width:100%;height:auto;display:block;margin:.6em 0}
.note{color:#555;font-size:.9em}nav a{margin-right:.8em}
"""


def _esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _table(t: Table) -> str:
    out = ["<table>"]
    if t.caption:
        out.append(f"<caption>{_esc(t.caption)}</caption>")
    out.append(
        "<thead><tr>" + "".join(f"<th>{_esc(c)}</th>" for c in t.columns) + "</tr></thead><tbody>"
    )
    for row in t.rows:
        cells = []
        for k, cell in enumerate(row):
            cls = ""
            if t.status_column == k and cell in ("PASS", "FAIL"):
                cls = f' class="{cell.lower()}"'
            cells.append(f"<td{cls}>{_esc(cell)}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def render_html(report: Report) -> str:
    """One self-contained HTML page: inline CSS, charts as PNG data URIs, no external reference."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_esc(report.title)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{_esc(report.title)}</h1>",
        f'<p class="note">run directory {_esc(report.run_dir)}'
        + (f"; compared with {_esc(', '.join(report.compare))}" if report.compare else "")
        + "</p>",
    ]
    if report.ok:
        parts.append('<div class="banner ok">Finance reconciliation: every check passes.</div>')
    else:
        parts.append(
            '<div class="banner fail">FINANCE RECONCILIATION FAILED: '
            + _esc(", ".join(report.failures))
            + "</div>"
        )
    parts.append(
        "<nav>"
        + "".join(f'<a href="#{s.id}">{_esc(s.title)}</a>' for s in report.sections)
        + "</nav>"
    )
    for s in report.sections:
        cls = ' class="failed"' if s.failed else ""
        parts.append(f'<section id="{_esc(s.id)}"{cls}>')
        parts.append(f"<h2>{_esc(s.title)}{' (FAIL)' if s.failed else ''}</h2>")
        for n in s.notes:
            parts.append(f'<p class="note">{_esc(n)}</p>')
        for t in s.tables:
            parts.append(_table(t))
        for c in s.charts:
            parts.append(f'<img src="{c.data_uri()}" alt="{_esc(c.alt)}" title="{_esc(c.title)}">')
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
