r"""The allocation problem in plain arrays: what both solver paths take.

.. math::

    \begin{aligned}
    \max_{v}\quad & \sum_{i=1}^{n} w_i\,u_\alpha(v_i),\qquad
        u_\alpha(v) = \begin{cases}\log v & \alpha = 1\\ \dfrac{v^{1-\alpha}}{1-\alpha} & \alpha \ne 1\end{cases}\\
    \text{s.t.}\quad & \ell_i \le v_i \le h_i, \\
    & \textstyle\sum_i v_i \le B \quad(= B \text{ in exhaust mode}),\\
    & m_s B \le \textstyle\sum_{i \in S_s} v_i \le M_s B \quad\text{for each segment } s.
    \end{aligned}

Nothing here knows about files, scenarios or the CLI.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)
class Segment:
    """Users in ``members`` (boolean mask, length n) get between ``min_share * B`` and
    ``max_share * B`` in total; ``None`` means no constraint on that side."""

    name: str
    members: np.ndarray
    min_share: float | None = None
    max_share: float | None = None


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
    hi_x = np.minimum(np.asarray(upper, dtype=np.float64) * 100.0, float(MAX_CENTS))
    lo = np.ceil(lo_x - (CENT_TOL + 4.0 * _EPS * np.abs(lo_x)))
    hi = np.floor(hi_x + (CENT_TOL + 4.0 * _EPS * np.abs(hi_x)))
    return lo.astype(np.int64), hi.astype(np.int64)


def whole_cent_bounds(lower: np.ndarray, upper: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`bounds_in_cents` back in USD: the bounds of what can actually be paid.

    Solving with these instead of the raw bounds is what lets the rounded vouchers stay within
    one cent of the optimum: a raw cap of 37.0368 pays at most 37.03, and with a thousand users
    at such caps the lost fractions (up to a cent each) would otherwise have to be pushed onto
    the interior users, several cents each, away from their optimal amounts.
    """
    lo_c, hi_c = bounds_in_cents(lower, upper)
    return lo_c / 100.0, hi_c / 100.0


@dataclass(frozen=True, eq=False)
class ScalarBounds:
    r"""Bounds given by scalar knobs: :math:`\ell_i = f`, :math:`h_i = \min(c, \kappa L_i)`.

    When a problem carries this, the cvxpy model makes ``floor`` and ``cap`` (and, for raw
    bounds, ``coverage_cap``) Parameters so a sweep over them re-uses one compiled problem.
    With ``whole_cents`` the bounds are those of :func:`whole_cent_bounds` (the floor rounded
    up and each cap down to the cent); :math:`\lfloor \kappa L_i \rfloor_{\text{cent}}` is not
    an affine function of :math:`\kappa`, so the cvxpy model then holds the coverage caps as
    constants and rebuilds when :math:`\kappa` changes.
    """

    floor: float
    cap: float
    coverage_cap: float | None
    loss: np.ndarray
    whole_cents: bool = False

    def knobs(self) -> tuple[float, float]:
        """``(floor, cap)`` as the bounds use them (rounded to the cent with ``whole_cents``)."""
        if not self.whole_cents:
            return float(self.floor), float(self.cap)
        lo, hi = whole_cent_bounds(np.array([self.floor]), np.array([self.cap]))
        return float(lo[0]), float(hi[0])

    def coverage_caps(self) -> np.ndarray | None:
        r""":math:`\kappa L_i` (rounded down to the cent with ``whole_cents``), or ``None``."""
        if self.coverage_cap is None:
            return None
        caps = float(self.coverage_cap) * np.asarray(self.loss, dtype=np.float64)
        return whole_cent_bounds(caps, caps)[1] if self.whole_cents else caps

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        floor, cap = self.knobs()
        lower = np.full(self.loss.shape[0], floor)
        upper = np.full(self.loss.shape[0], cap)
        caps = self.coverage_caps()
        if caps is not None:
            upper = np.minimum(upper, caps)
        return lower, upper


@dataclass(frozen=True, eq=False)
class AllocationProblem:
    """Weights ``w > 0``, bounds ``lower <= upper`` (USD), budget ``B`` (USD) and ``alpha >= 0``.

    ``scalar_bounds``, when given, describes how ``lower`` and ``upper`` were made (they must be
    its :meth:`ScalarBounds.arrays`).
    """

    weights: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    budget: float
    alpha: float
    exhaust: bool = True
    segments: tuple[Segment, ...] = ()
    scalar_bounds: ScalarBounds | None = None

    @property
    def n(self) -> int:
        return int(self.weights.shape[0])
