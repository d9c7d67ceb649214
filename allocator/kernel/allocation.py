"""The solved allocation (continuous USD amounts, certified) and the bound each user sits on."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from allocator.kernel.certificate import Certificate
from allocator.kernel.claims import ClaimsAwards
from allocator.kernel.rule_certificate import RuleCertificate

#: Users within this many USD (plus a relative 1e-9 of the bound) of a bound count as on it.
BOUND_STATE_TOL_USD = 1e-6
FLOOR, INTERIOR, CAP = -1, 0, 1


@dataclass(frozen=True, eq=False)
class Allocation:
    r"""A certified optimal allocation (continuous USD amounts, before rounding to cents).

    Attributes
    ----------
    vouchers
        float64 USD per user.
    bound_state
        int8 per user: -1 at the floor, 0 interior, +1 at the cap (within
        :data:`BOUND_STATE_TOL_USD`).
    method
        ``"fast"`` or ``"cvxpy:<SOLVER>"``.
    status
        ``"optimal"``, or the cvxpy status that was accepted (``"optimal_inaccurate"`` only
        with a passing certificate).
    objective
        :math:`\sum_i w_i u_\alpha(v_i)`.
    shadow_price
        :math:`\lambda`: objective gained per extra USD of budget (0 when the budget is slack).
    segment_prices
        ``{segment name: (mu_min, mu_max)}``, the multipliers of the share constraints.
    certificate
        The optimality certificate (always ``certified``); for a claims rule, the
        :class:`~allocator.kernel.rule_certificate.RuleCertificate` that the awards are the rule's.
        ``None`` only when the caller asked :func:`~allocator.kernel.solve.solve` not to
        certify the continuous vouchers because it certifies the cents it pays instead.
    seconds
        Wall time of the solve including checks and certificate.
    rule_awards
        For a claims rule: its awards with the path they lie on (``None`` for alpha-fairness).
    """

    vouchers: np.ndarray
    bound_state: np.ndarray
    method: str
    status: str
    objective: float
    shadow_price: float
    segment_prices: Mapping[str, tuple[float, float]]
    certificate: Certificate | RuleCertificate | None
    seconds: float
    rule_awards: ClaimsAwards | None = None


def bound_states(
    vouchers: np.ndarray, lower: np.ndarray, upper: np.ndarray, tol_usd: float = BOUND_STATE_TOL_USD
) -> np.ndarray:
    """int8 per user: -1 at the floor, +1 at the cap, 0 strictly inside (within ``tol_usd``
    plus 1e-9 of the bound)."""
    lo = np.asarray(lower, dtype=np.float64)
    hi = np.asarray(upper, dtype=np.float64)
    v = np.asarray(vouchers, dtype=np.float64)
    # bounds are >= 0 (validated), so |bound| is the bound itself
    at_cap = v >= hi * (1.0 - 1e-9) - tol_usd
    at_floor = v <= lo * (1.0 + 1e-9) + tol_usd
    return np.where(at_floor, np.int8(FLOOR), at_cap.view(np.int8)).astype(np.int8, copy=False)
