"""What a report is made of: tables, charts and sections, and the settings every part shares.

The section gatherers (:mod:`allocator.report.sections`, :mod:`allocator.report.sweep_sections`)
fill these; the renderers (:mod:`allocator.report.html`, :mod:`allocator.report.markdown`,
:mod:`allocator.report.jsonout`) only read them.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from allocator.jsonsafe import json_safe

#: Value of ``render_json(...)["format"]``.
REPORT_FORMAT = "allocator-report/1"
#: Section ids, in the order they appear.
SECTION_IDS = (
    "summary",
    "reconciliation",
    "voucher-histogram",
    "voucher-vs-loss",
    "lorenz",
    "coverage",
    "sweep",
    "shadow-price",
    "cliff",
    "fairness",
    "axioms",
)
FORMATS = ("html", "json", "md")
#: Points of each re-solved sweep (alpha, budget) unless told otherwise.
DEFAULT_SWEEP_POINTS = 6
#: Most points of each sweep: every point is two re-solves on the run's data (about 0.3 s at the
#: 200,000-user default size, ten times that at the stress size), and the charts gain nothing
#: from more.
MAX_SWEEP_POINTS = 50
#: Users sampled per perturbed axiom unless told otherwise (0 skips the section).
DEFAULT_AXIOMS_SAMPLE = 200
#: Most users sampled per axiom in a report.
MAX_AXIOMS_SAMPLE = 100_000
#: Alpha values of the sweep are spaced geometrically over this range.
ALPHA_RANGE = (0.25, 8.0)
#: Budgets of the shadow-price sweep, as multiples of the run's budget.
BUDGET_RANGE = (0.5, 1.5)
#: Width of the "just below" bands of the cliff section.
LOSS_BAND_USD = 10.0
RATIO_BAND = 0.05
LORENZ_POINTS = 101
#: Most bins of the voucher histogram; the bins are equal steps of a round amount (USD 250 for
#: vouchers up to USD 6,000), so there are between half this and this many.
HIST_MAX_BINS = 25


@dataclass(frozen=True)
class Table:
    """A table of formatted cells; ``status_column`` marks a PASS/FAIL column for highlighting."""

    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    caption: str = ""
    status_column: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """The table as JSON-ready lists (no status column: the cells say PASS or FAIL)."""
        return {
            "caption": self.caption,
            "columns": list(self.columns),
            "rows": [list(r) for r in self.rows],
        }


@dataclass(frozen=True)
class Chart:
    """A chart as PNG bytes (deterministic: no software tag, no date)."""

    title: str
    png: bytes
    alt: str

    def data_uri(self) -> str:
        """The PNG as a ``data:`` URI, so an HTML page needs no file or network beside it."""
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")


@dataclass(frozen=True)
class Section:
    """One section: its id and heading, its data (JSON-safe), tables, charts and notes."""

    id: str
    title: str
    data: Mapping[str, Any]
    tables: tuple[Table, ...] = ()
    charts: tuple[Chart, ...] = ()
    notes: tuple[str, ...] = ()
    failed: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The section without its charts (their data is in ``data``)."""
        return {
            "id": self.id,
            "title": self.title,
            "failed": self.failed,
            "data": json_safe(dict(self.data)),
            "tables": [t.to_dict() for t in self.tables],
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class Report:
    """Everything a report shows; ``ok`` when every finance check of every run passed."""

    title: str
    run_dir: str
    compare: tuple[str, ...]
    sections: tuple[Section, ...]
    failures: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        """True when no finance check of any run failed."""
        return not self.failures

    def section(self, section_id: str) -> Section:
        """The section with id ``section_id``; :class:`KeyError` when there is none."""
        for s in self.sections:
            if s.id == section_id:
                return s
        raise KeyError(section_id)

    @property
    def n_charts(self) -> int:
        """Charts over all sections."""
        return sum(len(s.charts) for s in self.sections)

    def to_dict(self) -> dict[str, Any]:
        """The report as a JSON-ready dict: every section's data and tables, no charts."""
        return {
            "format": REPORT_FORMAT,
            "title": self.title,
            "run_dir": self.run_dir,
            "compare": list(self.compare),
            "ok": self.ok,
            "failures": list(self.failures),
            "sections": [s.to_dict() for s in self.sections],
        }
