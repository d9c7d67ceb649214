"""A chart of the page: its rows, the Altair chart on demand, and its Vega-Lite JSON fast.

Each view draws the same chart on every setting with new numbers: the same marks, axes,
titles and colours over new rows. Building the Altair objects and serialising them costs more
than computing the numbers at a million users, so the Vega-Lite JSON of a kind of chart is made
once with Altair (per kind and per set of runs drawn) and kept as a template; a new setting
puts its rows into the template. The Altair chart itself (for the tests, which check every chart
against the Vega-Lite schema, and for anything else that wants it) is built only when asked for.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Hashable
from typing import Any

import altair as alt
import polars as pl

__all__ = ["VEGA_LITE_MEDIA_TYPE", "ViewChart"]

#: The media type of a Vega-Lite chart, as the page's renderer knows it.
VEGA_LITE_MEDIA_TYPE = f"application/vnd.vegalite.v{alt.SCHEMA_VERSION[1:].split('.')[0]}+json"

#: Where a template's rows go (the name of its one data set).
_ROWS = "rows"

# (kind, key) -> the chart's JSON before and after its rows
_TEMPLATES: dict[tuple[str, Hashable], tuple[str, str]] = {}
_LOCK = threading.Lock()


class ViewChart:
    """One chart of the page.

    Parameters
    ----------
    kind
        The view it draws (``"histogram"``, ...).
    key
        What else shapes the chart besides its rows (the names of the runs drawn, which set the
        legend and the colours): one template per ``(kind, key)``.
    rows
        The chart's data, one dict per mark.
    build
        Makes the Altair chart from the rows as a Polars frame.
    """

    def __init__(
        self,
        kind: str,
        key: Hashable,
        rows: list[dict[str, Any]],
        build: Callable[[pl.DataFrame], Any],
    ) -> None:
        self.kind, self.key, self.rows, self._build = kind, key, rows, build
        self._chart: Any = None

    @property
    def data(self) -> pl.DataFrame:
        """The rows as a frame."""
        return pl.DataFrame(self.rows)

    @property
    def chart(self) -> Any:
        """The Altair chart (built on first use)."""
        if self._chart is None:
            self._chart = self._build(self.data)
        return self._chart

    def to_dict(self, *, validate: bool = True) -> dict[str, Any]:
        """The Altair chart's Vega-Lite spec (checked against the schema unless told not to)."""
        result: dict[str, Any] = self.chart.to_dict(validate=validate)
        return result

    def to_json(self, *, validate: bool = True) -> str:
        text: str = self.chart.to_json(validate=validate)
        return text

    def _mime_(self) -> tuple[str, str]:
        try:
            rows = json.dumps(self.rows, allow_nan=False)
        except ValueError:  # a NaN or an infinity: Altair knows how to write those
            return VEGA_LITE_MEDIA_TYPE, self.to_json(validate=False)
        before, after = self._template()
        return VEGA_LITE_MEDIA_TYPE, before + rows + after

    def _template(self) -> tuple[str, str]:
        with _LOCK:
            if (self.kind, self.key) not in _TEMPLATES:
                spec = self.to_dict(validate=False)
                datasets = spec.get("datasets", {})
                if len(datasets) != 1:
                    raise ValueError(f"a {self.kind} chart has {len(datasets)} data sets, not 1")
                (name,) = datasets
                spec["datasets"] = {_ROWS: "\x00rows\x00"}
                text = json.dumps(spec).replace(json.dumps(name), json.dumps(_ROWS))
                before, after = text.split(json.dumps("\x00rows\x00"))
                _TEMPLATES[(self.kind, self.key)] = (before, after)
            return _TEMPLATES[(self.kind, self.key)]
