r"""The phase-in ramp: how a threshold is softened into a band, written once.

A threshold :math:`m` (``min_loss_usd`` on the counted loss, ``min_loss_ratio`` on the loss
ratio) may have a phase-in band that starts at :math:`p < m` (``phase_in_loss_usd``,
``phase_in_ratio``). For a value :math:`x` (a user's loss, or loss ratio) the rule and the
band's factor are

.. math::

    \text{passes}(x) =
    \begin{cases} x \ge m & \text{without a band,} \\ x > p & \text{with a band,} \end{cases}
    \qquad
    \phi(x) =
    \begin{cases}
    1 & \text{without a band, or } x \ge m, \\
    \min\big(1, \max\big(0, (x - p)\cdot \mathrm{fl}(1 / (m - p))\big)\big) & \text{otherwise.}
    \end{cases}

The lower end :math:`p` itself fails, because its factor of 0 would pay nothing. A user's phase
factor is the product of the two bands' factors, :math:`\phi_i = \phi^L(L_i)\,\phi^r(r_i)`; an
infinite ratio (net assets :math:`\le 0`) is past any threshold and gives 1.

Two details keep every published ``phase_factor`` bit for bit what it has always been:

* :math:`x \ge m` is compared first, so that a threshold reached exactly gives 1.0 rather than a
  rounded quotient;
* the quotient is :math:`(x - p)` times the rounded reciprocal :math:`\mathrm{fl}(1/(m - p))`,
  which is how Polars divides a column by a scalar; a true division can differ from it in the
  last place.

A missing value (NaN) fails the rule; its factor is NaN. Everything here is plain NumPy, for the
eligibility rules (vectorised over users), the per-user explanation (one value) and the finance
checks (which recompute the factors from a run directory).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["Band", "band_factor", "passes", "phase_factor"]


@dataclass(frozen=True)
class Band:
    """A threshold ``high`` (:math:`m`) and the lower end ``low`` (:math:`p`) of its phase-in
    band, or ``low = None`` for a hard threshold."""

    low: float | None
    high: float

    @property
    def phased(self) -> bool:
        """Whether the threshold has a phase-in band."""
        return self.low is not None


def passes(x: ArrayLike, band: Band) -> NDArray[np.bool_]:
    """The threshold rule (module docstring): ``x >= high``, or ``x > low`` with a band; NaN
    fails."""
    values = np.asarray(x, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        if band.low is None:
            return np.asarray(values >= float(band.high))
        return np.asarray(values > float(band.low))


def band_factor(x: ArrayLike, band: Band) -> NDArray[np.float64]:
    """One band's factor :math:`\\phi(x)` (module docstring): 1 without a band or from ``high``
    up, 0 at ``low``, linear between."""
    values = np.asarray(x, dtype=np.float64)
    if band.low is None:
        return np.ones_like(values)
    low, high = float(band.low), float(band.high)
    with np.errstate(invalid="ignore"):
        ramp = np.clip((values - low) * (1.0 / (high - low)), 0.0, 1.0)
        return np.asarray(np.where(values >= high, 1.0, ramp), dtype=np.float64)


def phase_factor(
    loss: ArrayLike, ratio: ArrayLike, loss_band: Band, ratio_band: Band
) -> NDArray[np.float64]:
    r"""Each user's phase factor :math:`\phi^L(L_i)\,\phi^r(r_i)` (1 where neither band applies)."""
    return band_factor(loss, loss_band) * band_factor(ratio, ratio_band)
