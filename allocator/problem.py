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


@dataclass(frozen=True, eq=False)
class ScalarBounds:
    r"""Bounds given by scalar knobs: :math:`\ell_i = f`, :math:`h_i = \min(c, \kappa L_i)`.

    When a problem carries this, the cvxpy model makes ``floor``, ``cap`` and ``coverage_cap``
    Parameters so a sweep over them re-uses one compiled problem.
    """

    floor: float
    cap: float
    coverage_cap: float | None
    loss: np.ndarray

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        lower = np.full(self.loss.shape[0], float(self.floor))
        upper = np.full(self.loss.shape[0], float(self.cap))
        if self.coverage_cap is not None:
            upper = np.minimum(upper, self.coverage_cap * self.loss)
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
