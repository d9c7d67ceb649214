"""The report as Markdown for a pull request: every table, with the charts left to the HTML."""

from __future__ import annotations

from allocator.report.model import Report, Table


def _cell(x: str) -> str:
    # a bar or a line break inside a cell would end the cell or the row
    return str(x).replace("|", "\\|").replace("\n", " ")


def _table(t: Table) -> list[str]:
    out = []
    if t.caption:
        out += [f"*{_cell(t.caption)}*", ""]
    out.append("| " + " | ".join(_cell(c) or " " for c in t.columns) + " |")
    out.append("| " + " | ".join("---" for _ in t.columns) + " |")
    for row in t.rows:
        cells = [
            f"**{c}**" if t.status_column == k and c == "FAIL" else _cell(c)
            for k, c in enumerate(row)
        ]
        out.append("| " + " | ".join(cells) + " |")
    out.append("")
    return out


def render_md(report: Report) -> str:
    """The report as Markdown for a pull request: the tables, with charts left to the HTML report."""
    out = [f"# {report.title}", "", f"Run directory `{report.run_dir}`."]
    if report.compare:
        out.append("Compared with " + ", ".join(f"`{c}`" for c in report.compare) + ".")
    out.append("")
    if report.ok:
        out += ["**Finance reconciliation: every check passes.**", ""]
    else:
        out += ["> **FINANCE RECONCILIATION FAILED:** " + _cell(", ".join(report.failures)), ""]
    for s in report.sections:
        out += [f"## {s.title}{' (FAIL)' if s.failed else ''}", "", f'<a id="{s.id}"></a>', ""]
        for n in s.notes:
            out += [f"_{_cell(n)}_", ""]
        for t in s.tables:
            out += _table(t)
        if s.charts:
            out += [f"_{len(s.charts)} chart(s) omitted; see the HTML report._", ""]
    return "\n".join(out).rstrip("\n") + "\n"
