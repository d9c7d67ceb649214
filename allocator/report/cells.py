"""Table cells: numbers, shares, counts and amounts written the same way in every section.

A missing value (``None``) is written ``-`` everywhere. Amounts go through
:mod:`allocator.kernel.money`, so the report writes USD as the rest of the project does.
"""

from __future__ import annotations

import math
from typing import Any

from allocator.kernel.money import format_cents, format_usd


def num(x: Any, fmt: str = "{:.6g}") -> str:
    """``x`` through ``fmt``; infinities and NaN by name, anything ``fmt`` refuses as ``str``."""
    if x is None:
        return "-"
    if isinstance(x, float) and not math.isfinite(x):
        return "inf" if x > 0 else ("-inf" if x < 0 else "nan")
    try:
        return fmt.format(x)
    except (TypeError, ValueError):
        return str(x)


def pct(x: float | None) -> str:
    """A share as a percentage with two decimals: ``0.1234`` -> ``12.34%``."""
    return "-" if x is None else f"{100.0 * x:.2f}%"


def count(x: Any) -> str:
    """A whole number with thousands separators."""
    return "-" if x is None else f"{int(x):,}"


def usd_cents(cents: int | None) -> str:
    """Integer cents as USD with thousands separators, exactly (:func:`format_cents`)."""
    return "-" if cents is None else format_cents(cents)


def usd(amount: float | None) -> str:
    """A USD float with thousands separators and two decimals (:func:`format_usd`)."""
    if amount is None:
        return "-"
    return format_usd(amount)


def yes_no(x: bool | None) -> str:
    """``yes``, ``NO`` (capitals: it is the one to notice) or ``-`` when unknown."""
    return "-" if x is None else ("yes" if x else "NO")


def pass_fail(ok: bool) -> str:
    """The status cell of a check."""
    return "PASS" if ok else "FAIL"
