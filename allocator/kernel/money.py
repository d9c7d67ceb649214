r"""Money, once: USD amounts to integer cents and back, and how amounts are written for people.

Every amount the project pays is an integer number of cents. Conversions between USD (floats,
as the optimisation works in) and cents (int64, as everything paid or written is) live here, so
that "0.29 USD" is 29 cents everywhere and a budget with a fraction of a cent is refused in one
place. Formatting for people (``1,234.56``, ``USD 1.2M``) lives here too, so reports, pages and
messages write amounts the same way.
"""

from __future__ import annotations

import math
from decimal import Decimal, InvalidOperation
from numbers import Integral, Real

import numpy as np

from allocator.errors import ScenarioError

#: Cents in one USD.
CENTS_PER_USD = 100

#: Cents: a float within this many cents (plus a few ulps) of a whole cent is that cent.
CENT_TOL = 1e-6
#: Largest per-user cap in cents (USD 10 billion); 1M users times this still fits in int64.
MAX_CENTS = 10**12
_EPS = float(np.finfo(np.float64).eps)


def bounds_in_cents(lower: np.ndarray, upper: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r"""Floors rounded up and caps rounded down to whole cents (int64), never raising.

    .. math::

        \underline c_i = \lceil 100\,\ell_i - \tau_i \rceil,\qquad
        \overline c_i = \lfloor \min(100\,h_i, M) + \tau_i \rfloor,\qquad
        \tau_i = 10^{-6} + 4\,\epsilon\,|100\,\ell_i| \text{ (resp. } h_i\text{)},

    so ``0.29 * 100`` is 29 cents, not 28. An empty interval comes back as ``lo > hi`` for the
    caller to report.
    """
    lo_x = np.asarray(lower, dtype=np.float64) * 100.0
    hi_x = np.asarray(upper, dtype=np.float64) * 100.0
    np.minimum(hi_x, float(MAX_CENTS), out=hi_x)
    # the same operations in the same order as the formula, in place (a million users)
    tau = np.abs(lo_x)
    tau *= 4.0 * _EPS
    tau += CENT_TOL
    np.subtract(lo_x, tau, out=lo_x)
    lo = np.ceil(lo_x, out=lo_x).astype(np.int64)
    np.abs(hi_x, out=tau)
    tau *= 4.0 * _EPS
    tau += CENT_TOL
    hi_x += tau
    hi = np.floor(hi_x, out=hi_x).astype(np.int64)
    return lo, hi


def whole_cent_bounds(lower: np.ndarray, upper: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`bounds_in_cents` back in USD: the bounds of what can actually be paid.

    Solving with these instead of the raw bounds is what lets the rounded vouchers stay within
    one cent of the optimum: a raw cap of 37.0368 pays at most 37.03, and with a thousand users
    at such caps the lost fractions (up to a cent each) would otherwise have to be pushed onto
    the interior users, several cents each, away from their optimal amounts.
    """
    lo_c, hi_c = bounds_in_cents(lower, upper)
    return lo_c / 100.0, hi_c / 100.0


def budget_to_cents(budget: float | int | Decimal) -> int:
    """The budget in whole cents, exactly.

    A float is read as the shortest decimal that round-trips to it (``repr``), so
    ``300_000_000.0`` is exactly 30,000,000,000 cents and ``0.29`` is 29 cents. A budget that is
    not a whole number of cents (``1000.005``) is rejected rather than silently rounded: the
    budget is a published amount, and a fraction of a cent means a typo.

    Raises
    ------
    ScenarioError
        The budget is negative, not finite, or not a whole number of cents.
    """
    if isinstance(budget, bool) or not isinstance(budget, (Real, Decimal)):
        raise ScenarioError(f"the budget must be a number of USD, got {budget!r}.")
    try:
        if isinstance(budget, Decimal):
            d = budget
        elif isinstance(budget, Integral):
            d = Decimal(int(budget))
        else:
            d = Decimal(repr(float(budget)))
    except (InvalidOperation, ValueError) as exc:  # pragma: no cover - repr of a float parses
        raise ScenarioError(f"the budget {budget!r} is not a number.") from exc
    if not d.is_finite() or d < 0:
        raise ScenarioError(f"the budget must be a finite amount >= 0 USD, got {budget!r}.")
    cents = d * 100
    if cents != cents.to_integral_value():
        raise ScenarioError(
            f"the budget USD {budget!r} is not a whole number of cents; vouchers are paid in cents."
        )
    return int(cents)


def floor_cents(usd: float) -> int:
    r"""A USD amount rounded down to whole cents, :math:`\lfloor 100\,x \rfloor`, with no
    tolerance (unlike :func:`bounds_in_cents`): a limit a float puts just below a whole cent
    gives the cent below, the side a limit must err on. The loan fund's limits use it."""
    return math.floor(usd * CENTS_PER_USD)


def ceil_cents(usd: float) -> int:
    r"""A USD amount rounded up to whole cents, :math:`\lceil 100\,x \rceil` (a minimum that
    a payment in cents must reach)."""
    return math.ceil(usd * CENTS_PER_USD)


def floor_cents_array(usd: np.ndarray) -> np.ndarray:
    """:func:`floor_cents` elementwise, as int64."""
    cents: np.ndarray = np.floor(np.asarray(usd, dtype=np.float64) * CENTS_PER_USD).astype(np.int64)
    return cents


def cents_array_to_usd(cents: np.ndarray) -> np.ndarray:
    """Cents (integer, or float holding whole cents) as USD floats, elementwise (each division
    correctly rounded, so ``c / 100`` reads back as ``c`` cents)."""
    usd: np.ndarray = np.asarray(cents) / float(CENTS_PER_USD)
    return usd


def cents_to_usd(cents: int) -> float:
    """Integer cents as a USD float (for arithmetic and charts, never for what is paid)."""
    return int(cents) / CENTS_PER_USD


def format_cents(cents: int, *, currency: bool = False) -> str:
    """Integer cents written exactly with thousands separators: ``123456`` -> ``1,234.56``
    (``USD 1,234.56`` with ``currency``); no float is involved."""
    sign = "-" if cents < 0 else ""
    whole, frac = divmod(abs(int(cents)), CENTS_PER_USD)
    text = f"{sign}{whole:,}.{frac:02d}"
    return f"USD {text}" if currency else text


def format_usd(amount: float, *, currency: bool = False, decimals: int = 2) -> str:
    """A USD amount with thousands separators: ``1234.5`` -> ``1,234.50`` (``USD 1,234.50`` with
    ``currency``; ``decimals=0`` for whole dollars)."""
    text = f"{amount:,.{decimals}f}"
    return f"USD {text}" if currency else text


def format_usd_short(amount: float) -> str:
    """A USD amount in words a reader takes in at a glance: ``USD 300M``, ``USD 1.5k``,
    ``USD 12.34``."""
    a = abs(amount)
    for size, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if a >= size:
            return f"USD {amount / size:,.3g}{suffix}"
    return f"USD {amount:,.2f}"
