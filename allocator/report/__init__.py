"""Reports of run directories: HTML, Markdown and JSON.

:func:`build_report` gathers a :class:`Report` from run directories; :func:`render` writes it
as text and :func:`write_report` to a file. The parts:

- :mod:`~allocator.report.model`: tables, charts, sections, the report, and shared settings;
- :mod:`~allocator.report.inputs`: each run directory verified, checked and audited;
- :mod:`~allocator.report.sections`: sections read from the run directories;
- :mod:`~allocator.report.sweep_sections`: sections re-solved with the sweeps library;
- :mod:`~allocator.report.charts`: Matplotlib figures as PNG bytes;
- :mod:`~allocator.report.cells`: how numbers and amounts are written in tables;
- :mod:`~allocator.report.html`, :mod:`~allocator.report.markdown`,
  :mod:`~allocator.report.jsonout`: the three renderers;
- :mod:`~allocator.report.build`: the entry points.
"""

from allocator.report.build import build_report, render, write_report
from allocator.report.model import (
    DEFAULT_AXIOMS_SAMPLE,
    DEFAULT_SWEEP_POINTS,
    FORMATS,
    MAX_AXIOMS_SAMPLE,
    MAX_SWEEP_POINTS,
    SECTION_IDS,
    Report,
    Section,
)

__all__ = [
    "DEFAULT_AXIOMS_SAMPLE",
    "DEFAULT_SWEEP_POINTS",
    "FORMATS",
    "MAX_AXIOMS_SAMPLE",
    "MAX_SWEEP_POINTS",
    "SECTION_IDS",
    "Report",
    "Section",
    "build_report",
    "render",
    "write_report",
]
