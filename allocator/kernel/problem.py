r"""The allocation problem in plain arrays: what both solver paths take.

.. math::

    \begin{aligned}
    \max_{v}\quad & \sum_{i=1}^{n} w_i\,u_\alpha(v_i),\qquad
        u_\alpha(v) = \begin{cases}\log v & \alpha = 1\\ \dfrac{v^{1-\alpha}}{1-\alpha} & \alpha \ne 1\end{cases}\\
    \text{s.t.}\quad & \ell_i \le v_i \le h_i, \\
    & \textstyle\sum_i v_i \le B \quad(= B \text{ in exhaust mode}),\\
    & m_s B \le \textstyle\sum_{i \in S_s} v_i \le M_s B \quad\text{for each segment } s.
    \end{aligned}

The bounds are per user. A later round of a distribution raises a user's lower bound to what
they already hold, :math:`\ell_i = \max(f, H_i)` (and pins a user who forfeited,
:math:`\ell_i = h_i = H_i`); such a problem has no :class:`ScalarBounds`. Every solver path
(the fast solver, the cvxpy model, the claims rules) and the rounding to cents take per-user
bounds as they are, so the certificate and the cents respect the raised ones.

Nothing here knows about files, scenarios or the CLI.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from allocator.kernel.money import bounds_in_cents, whole_cent_bounds


@dataclass(frozen=True, eq=False)
class Segment:
    """Users in ``members`` (boolean mask, length n) get between ``min_share * B`` and
    ``max_share * B`` in total; ``None`` means no constraint on that side."""

    name: str
    members: np.ndarray
    min_share: float | None = None
    max_share: float | None = None


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

    ``rule`` replaces the alpha-fair objective by a claims rule of
    :mod:`allocator.kernel.claims` (its full name, or ``"max_min"`` for the exact lexicographic
    max-min): the weights are then the claims (for ``max_min``, the scale :math:`s_i` of
    :func:`~allocator.kernel.claims.water_filling`), ``rule_parameter`` the rule's base,
    threshold or minimum in USD, and ``alpha`` is not used. A rule pays the whole budget.
    """

    weights: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    budget: float
    alpha: float
    exhaust: bool = True
    segments: tuple[Segment, ...] = ()
    scalar_bounds: ScalarBounds | None = None
    rule: str | None = None
    rule_parameter: float | None = None

    @property
    def n(self) -> int:
        return int(self.weights.shape[0])

    def bounds_in_cents(
        self, *, known: tuple[np.ndarray, np.ndarray] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The bounds in whole cents (:func:`~allocator.kernel.money.bounds_in_cents`: floors
        rounded up, caps down), computed once per problem and read-only: the feasibility
        checks, the rounding and the run's files all read them, at a million users.

        ``known``: those of another problem with the very same ``lower`` and ``upper`` arrays
        (a builder that keeps bounds between problems), adopted instead of computed.
        """
        cached: tuple[np.ndarray, np.ndarray] | None = self.__dict__.get("_bounds_in_cents")
        if cached is None and known is not None:
            cached = known
            object.__setattr__(self, "_bounds_in_cents", cached)
        if cached is None:
            lo_c, hi_c = bounds_in_cents(self.lower, self.upper)
            lo_c.flags.writeable = False
            hi_c.flags.writeable = False
            cached = (lo_c, hi_c)
            object.__setattr__(self, "_bounds_in_cents", cached)  # a cache, not a field
        return cached
