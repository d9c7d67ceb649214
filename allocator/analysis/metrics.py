r"""Distribution metrics of an allocation, for ``compare``, ``sweep`` and reports.

Vouchers are read from exact cents (``voucher_cents``) when the frame has them. With the vouchers
sorted ascending, :math:`x_{(1)} \le \dots \le x_{(n)}`, the metrics are:

.. math::

    G = \frac{\sum_i \sum_j |x_i - x_j|}{2 n^2 \bar x}
      = \frac{\sum_{i=1}^{n} (2i - n - 1)\, x_{(i)}}{n \sum_i x_i}
    \qquad
    L(k/n) = \frac{\sum_{i \le k} x_{(i)}}{\sum_i x_i}

the Gini coefficient :math:`G` (0 when everyone gets the same, :math:`1 - 1/n` when one user
gets everything) and the Lorenz curve :math:`L`, linear between its points :math:`k/n`. The
top-decile share is :math:`1 - L(0.9)`, the share of the money paid to the best-paid tenth of the
users (interpolated when ``n`` is not a multiple of ten). Coverage is ``voucher / loss`` and is
defined only for users with a positive loss.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import polars as pl

from allocator import names as N
from allocator.kernel.allocation import Allocation
from allocator.kernel.money import CENTS_PER_USD, cents_to_usd

#: Loss bands (label, lower USD inclusive, upper USD exclusive) for coverage by loss size.
LOSS_BANDS: tuple[tuple[str, float, float], ...] = (
    ("<100", 0.0, 100.0),
    ("100-1k", 100.0, 1_000.0),
    ("1k-10k", 1_000.0, 10_000.0),
    ("10k-100k", 10_000.0, 100_000.0),
    (">=100k", 100_000.0, math.inf),
)


def _values(x: Any) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64).ravel()
    if arr.size and (not np.all(np.isfinite(arr)) or arr.min() < 0):
        raise ValueError("inequality metrics need finite, non-negative values")
    return arr


def gini(x: Any) -> float:
    """Gini coefficient of non-negative values (0 for all-equal or all-zero values).

    Raises ValueError for an empty input or a negative or non-finite value.
    """
    v = np.sort(_values(x))
    n = v.size
    if n == 0:
        raise ValueError("the Gini coefficient of no values is undefined")
    total = v.sum()
    if total == 0:
        return 0.0
    ranks = np.arange(1, n + 1, dtype=np.float64)
    return float(np.dot(2.0 * ranks - n - 1.0, v) / (n * total))


def lorenz(x: Any) -> tuple[np.ndarray, np.ndarray]:
    """The Lorenz curve: ``(pop_share, value_share)``, each of length ``n + 1`` from 0 to 1.

    ``value_share[k]`` is the share of the total held by the ``k`` smallest values; when every
    value is zero the curve is the line of equality. Raises ValueError for an empty input.
    """
    v = np.sort(_values(x))
    n = v.size
    if n == 0:
        raise ValueError("the Lorenz curve of no values is undefined")
    pop = np.arange(n + 1, dtype=np.float64) / n
    total = v.sum()
    if total == 0:
        return pop, pop.copy()
    share = np.concatenate(([0.0], np.cumsum(v) / total))
    share[-1] = 1.0  # the cumulative sum may miss 1 by a rounding error
    return pop, share


def top_share(x: Any, fraction: float = 0.1) -> float:
    """Share of the total held by the largest ``fraction`` of the values, ``1 - L(1 - fraction)``."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be within [0, 1], not {fraction}")
    pop, share = lorenz(x)
    return float(1.0 - np.interp(1.0 - fraction, pop, share))


def _voucher_cents(frame: pl.DataFrame) -> pl.Series:
    if N.VOUCHER_CENTS in frame.columns:
        return frame[N.VOUCHER_CENTS].cast(pl.Int64)
    if N.VOUCHER_USD in frame.columns:
        return (frame[N.VOUCHER_USD] * CENTS_PER_USD).round(0).cast(pl.Int64)
    raise ValueError(
        f"an allocation frame needs {N.VOUCHER_CENTS} or {N.VOUCHER_USD}; it has {frame.columns}"
    )


def _median(x: np.ndarray) -> float | None:
    return float(np.median(x)) if x.size else None


def budget_price(allocation: Allocation) -> float | None:
    """The budget's shadow price of an alpha-fair solve; ``None`` for a claims rule.

    A rule's root is a recovery rate, a common award or a common loss (its parameter on the
    rule's path), not objective gained per USD: printed under "shadow price" beside alpha-fair
    runs it would be read as one.
    """
    return None if allocation.rule_awards is not None else allocation.shadow_price


def summary(
    allocations: pl.DataFrame, *, budget_cents: int, shadow_price: float | None
) -> dict[str, Any]:
    """Headline metrics of one allocation (one row of ``compare`` or ``sweep``).

    Parameters
    ----------
    allocations
        Frame with ``voucher_cents`` (or ``voucher_usd``), ``loss_usd`` and ``bound``.
    budget_cents
        The budget, in cents, for the unspent amount.
    shadow_price
        The solver's budget multiplier, passed through (:func:`budget_price`: ``None`` for a
        claims rule).

    Returns
    -------
    dict
        ``eligible``, ``paid_cents``, ``paid_usd``, ``unspent_cents``, ``unspent_usd``,
        ``n_floor``, ``n_interior``, ``n_cap``, ``mean_voucher``, ``median_voucher``,
        ``p90_voucher`` (linear interpolation), ``max_voucher`` (USD), ``median_coverage``,
        ``median_coverage_by_band`` (label of :data:`LOSS_BANDS` -> median, ``None`` for an empty
        band), ``gini``, ``top_decile_share`` and ``shadow_price``. Statistics of no users are
        ``None``.
    """
    cents = _voucher_cents(allocations).to_numpy()
    usd = cents / CENTS_PER_USD
    n = int(cents.size)
    paid = int(cents.sum()) if n else 0
    bounds = (
        allocations[N.BOUND] if N.BOUND in allocations.columns else pl.Series([], dtype=pl.String)
    )
    loss = allocations[N.LOSS_USD].cast(pl.Float64).to_numpy()
    covered = loss > 0
    coverage = usd[covered] / loss[covered]
    by_band: dict[str, float | None] = {}
    for label, lo, hi in LOSS_BANDS:
        in_band = (loss[covered] >= lo) & (loss[covered] < hi)
        by_band[label] = _median(coverage[in_band])
    return {
        "eligible": n,
        "paid_cents": paid,
        "paid_usd": cents_to_usd(paid),
        "unspent_cents": int(budget_cents) - paid,
        "unspent_usd": cents_to_usd(int(budget_cents) - paid),
        "n_floor": int((bounds == N.BOUND_FLOOR).sum()),
        "n_interior": int((bounds == N.BOUND_INTERIOR).sum()),
        "n_cap": int((bounds == N.BOUND_CAP).sum()),
        "mean_voucher": float(usd.mean()) if n else None,
        "median_voucher": _median(usd),
        "p90_voucher": float(np.percentile(usd, 90)) if n else None,
        "max_voucher": float(usd.max()) if n else None,
        "median_coverage": _median(coverage),
        "median_coverage_by_band": by_band,
        "gini": gini(usd) if n else None,
        "top_decile_share": top_share(usd, 0.1) if n else None,
        "shadow_price": None if shadow_price is None else float(shadow_price),
    }


def moved(a: pl.DataFrame, b: pl.DataFrame, *, threshold_usd: float) -> int:
    """Number of users whose voucher differs by more than ``threshold_usd`` between two allocations.

    The frames are joined on ``user_id``. A user present in only one of them counts as moved
    (gaining or losing eligibility is the largest move there is), whatever the threshold. The
    comparison is on exact cents: ``|cents_a - cents_b| > 100 * threshold_usd``.
    """
    if not threshold_usd >= 0:
        raise ValueError(f"threshold_usd must be a non-negative number, not {threshold_usd}")
    left = a.select(N.USER_ID, _voucher_cents(a).alias("_a"))
    right = b.select(N.USER_ID, _voucher_cents(b).alias("_b"))
    joined = left.join(right, on=N.USER_ID, how="full", coalesce=True)
    diff = (pl.col("_a") - pl.col("_b")).abs().cast(pl.Float64)
    flag = pl.col("_a").is_null() | pl.col("_b").is_null() | (diff > 100.0 * float(threshold_usd))
    return int(joined.select(flag.sum()).item())
