"""The report as strict JSON: every section's data and tables, no charts."""

from __future__ import annotations

from allocator.jsonsafe import dumps
from allocator.report.model import Report


def render_json(report: Report) -> str:
    """The report as strict JSON (sorted keys, no NaN): every section's data and tables, no charts."""
    return dumps(report.to_dict()) + "\n"
