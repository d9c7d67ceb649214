"""How an explanation writes things: event statuses, amounts, thresholds, ratios, times and durations.

USD amounts go through :mod:`allocator.kernel.money`; the helpers that show a value against a
threshold pick enough decimals that a value below (above) it never reads as equal to it.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

from allocator.kernel.money import format_cents, format_usd

#: Event statuses: counted, covered product outside the window, product not covered.
COUNTED = "counted"
OUTSIDE_WINDOW = "outside_window"
NOT_COVERED = "product_not_covered"
#: How each status reads in the text.
STATUS_TEXT = {
    COUNTED: "counted",
    OUTSIDE_WINDOW: "outside the window",
    NOT_COVERED: "product not covered",
}

__all__ = [
    "COUNTED",
    "NOT_COVERED",
    "OUTSIDE_WINDOW",
    "STATUS_TEXT",
    "above",
    "at_most",
    "below",
    "cents_text",
    "duration",
    "iso",
    "num",
    "ratio_text",
    "threshold_text",
    "usd",
]


def usd(x: float | None) -> str:
    """A USD amount with two decimals and thousands separators, ``-`` when there is none."""
    return "-" if x is None else format_usd(x)


def cents_text(cents: int) -> str:
    """Integer cents as USD text with thousands separators (``123456`` -> ``"1,234.56"``)."""
    return format_cents(cents)


def num(x: float) -> str:
    """A threshold or knob as the scenario writes it (``%g``)."""
    return f"{x:g}"


def threshold_text(x: float) -> str:
    """A ratio threshold as written in scenarios: 0.30 rather than 0.3."""
    return f"{x:.2f}" if float(f"{x:.2f}") == x else num(x)


def below(x: float, threshold: float, decimals: int = 2) -> str:
    """``x`` (known to be below ``threshold``) with enough decimals to read as below it."""
    for d in (decimals, decimals + 2, decimals + 4):
        if round(x, d) < threshold:
            return f"{x:,.{d}f}"
    return repr(x)


def above(x: float, threshold: float, decimals: int = 2) -> str:
    """``x`` (known to be above ``threshold``) with enough decimals to read as above it."""
    for d in (decimals, decimals + 2, decimals + 4):
        if round(x, d) > threshold:
            return f"{x:,.{d}f}"
    return repr(x)


def at_most(x: float, threshold: float, decimals: int = 2) -> str:
    """``x`` (known to be at most ``threshold``) so that it does not read as above it."""
    return f"{x:,.{decimals}f}" if x == threshold else below(x, threshold, decimals)


def ratio_text(r: float | None) -> str:
    """A loss ratio with four decimals; an infinite one says why."""
    if r is None:
        return "-"
    return "inf (net assets <= 0)" if math.isinf(r) else f"{r:.4f}"


def iso(dt: datetime) -> str:
    """A time in UTC as ISO 8601 with a ``Z``, trailing zeros of the fraction dropped."""
    dt = dt.astimezone(UTC) if dt.tzinfo else dt.replace(tzinfo=UTC)
    text = dt.strftime("%Y-%m-%dT%H:%M:%S.%f").rstrip("0").rstrip(".")
    return text + "Z"


def duration(seconds: float) -> str:
    """A length of time in the unit a reader takes in (s, min, h or days)."""
    seconds = abs(seconds)
    if seconds < 60:
        return f"{seconds:.3g} s"
    minutes = seconds / 60
    if minutes < 120:
        return f"{minutes:.1f} min"
    hours = minutes / 60
    return f"{hours:.1f} h" if hours < 48 else f"{hours / 24:.1f} days"
