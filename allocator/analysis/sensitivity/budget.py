r"""The allocation's derivatives in the budget, and the exact effect of re-solving at
:math:`B \pm \delta`.

With the groups of :mod:`allocator.analysis.sensitivity.groups`:

Budget (``alpha > 0``)
    An interior user of group :math:`g` has :math:`v_i = (w_i/\lambda_g)^{1/\alpha}`, so
    :math:`\partial v_i / \partial \lambda_g = -v_i / (\alpha \lambda_g)`. Differentiating the
    group's total, :math:`\sum_{i\in g} \mathrm{d}v_i/\mathrm{d}B = \tau_g`, gives

    .. math::

        \frac{\mathrm{d}\lambda_g}{\mathrm{d}B} = -\frac{\alpha\,\lambda_g\,\tau_g}{V_g},
        \qquad
        \frac{\mathrm{d}v_i}{\mathrm{d}B} = \tau_g \frac{v_i}{V_g},
        \qquad V_g = \sum_{i \in g} v_i,

    i.e. each group's extra dollar is shared in proportion to current vouchers. In exhaust
    mode :math:`\sum_i \mathrm{d}v_i/\mathrm{d}B = 1`.

Budget (``alpha = 0``)
    Linear utility: the price is the marginal weight and does not move
    (:math:`\mathrm{d}\lambda/\mathrm{d}B = 0`); the fractional user(s) of each group (the
    interior ones, tied at the marginal weight) absorb :math:`\tau_g` in proportion to their room
    :math:`h_i - \ell_i`, as the fast solver shares it.

Budget (a claims rule)
    A rule pays along its path :math:`x_i = \operatorname{clip}(a_i + b_i t, lo_i, hi_i)`
    (:mod:`allocator.kernel.claims`). The users strictly inside their bounds move with
    :math:`t`, so :math:`\mathrm{d}t/\mathrm{d}B = 1 / \sum_{i\,\text{inside}} b_i` and
    :math:`\mathrm{d}v_i/\mathrm{d}B = b_i / \sum_{j\,\text{inside}} b_j` for them (0 for the
    others). A rule has no objective, so it has no value of the budget (reported as NaN); a
    two-stage rule whose budget crosses its stage changes path, which the exact re-solves show.

The value of the budget (envelope theorem) is
:math:`\mathrm{d}P^\star/\mathrm{d}B = \lambda + \sum_s (\mu_s^{\max} M_s - \mu_s^{\min} m_s)`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, cast

import numpy as np

from allocator.analysis.metrics import LOSS_BANDS
from allocator.analysis.sensitivity.groups import absorb_shares, group_sums, groups
from allocator.errors import AllocatorError, InfeasibleError
from allocator.jsonsafe import json_safe
from allocator.kernel.allocation import CAP, FLOOR, Allocation, bound_states
from allocator.kernel.fast import fast_reach
from allocator.kernel.feasibility import InvalidProblemError
from allocator.kernel.money import format_usd
from allocator.kernel.problem import AllocationProblem
from allocator.kernel.select import pick
from allocator.kernel.solve import solve

#: A voucher "moves" when it changes by more than this (USD): one cent.
MOVE_TOL_USD = 0.01


def _band_labels(loss: np.ndarray) -> np.ndarray:
    out = np.full(loss.shape[0], "", dtype=object)
    for label, lo, hi in LOSS_BANDS:
        out[(loss >= lo) & (loss < hi)] = label
    return out


@dataclass(frozen=True)
class BudgetChange:
    """What re-solving at ``budget_usd`` (the budget plus ``delta_usd``) changes, exactly.

    ``feasible`` is False (with ``message``) when that budget has no allocation; every other
    field is then empty. Amounts are USD of the continuous optimum (before cents).
    """

    delta_usd: float
    budget_usd: float
    feasible: bool
    message: str = ""
    n_moved: int = 0
    n_up: int = 0
    n_down: int = 0
    total_change_usd: float = 0.0
    max_increase_usd: float = 0.0
    max_decrease_usd: float = 0.0
    predicted_total_change_usd: float = 0.0
    max_prediction_error_usd: float = 0.0
    newly_at_cap: int = 0
    newly_at_floor: int = 0
    left_cap: int = 0
    left_floor: int = 0
    by_band: Mapping[str, Mapping[str, float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return cast(
            "dict[str, Any]", json_safe({k: getattr(self, k) for k in self.__dataclass_fields__})
        )


@dataclass(frozen=True, eq=False)
class BudgetSensitivity:
    r"""Derivatives of the allocation in the budget, and the exact effect of :math:`\pm\delta`.

    Attributes
    ----------
    shadow_price
        :math:`\lambda`, the budget multiplier.
    value_of_budget
        :math:`\mathrm{d}P^\star/\mathrm{d}B` (envelope theorem, segment terms included).
    dprice_dbudget
        :math:`\mathrm{d}\lambda/\mathrm{d}B` of the free group (NaN when it has no interior
        user but must absorb budget: the active set changes at once).
    segment_dprice_dbudget
        The same for each binding segment's price.
    dv_dbudget
        Per-user :math:`\mathrm{d}v_i/\mathrm{d}B` (USD per USD).
    degenerate
        True when a group must absorb budget but has no interior user.
    up, down
        :class:`BudgetChange` of re-solving at :math:`B + \delta` and :math:`B - \delta`.
    loss
        Per-user loss of the breakdown by loss band (``None``: no breakdown).
    vouchers_up, vouchers_down
        The continuous optima of those re-solves (``None`` when that budget is infeasible);
        :func:`budget_moves` rounds them to cents.
    """

    budget_usd: float
    delta_usd: float
    alpha: float
    shadow_price: float
    value_of_budget: float
    dprice_dbudget: float
    segment_dprice_dbudget: Mapping[str, float]
    dv_dbudget: np.ndarray
    degenerate: bool
    up: BudgetChange
    down: BudgetChange
    loss: np.ndarray | None = None
    vouchers_up: np.ndarray | None = None
    vouchers_down: np.ndarray | None = None

    @property
    def predicted_up(self) -> np.ndarray:
        """Linear prediction of each voucher's change for :math:`+\\delta`."""
        return self.dv_dbudget * self.delta_usd

    @property
    def predicted_down(self) -> np.ndarray:
        return -self.dv_dbudget * self.delta_usd

    def to_dict(self, *, per_user: bool = False) -> dict[str, Any]:
        """JSON-safe summary; ``per_user=True`` adds the array ``dv_dbudget``."""
        d = self.dv_dbudget
        out: dict[str, Any] = {
            "budget_usd": self.budget_usd,
            "delta_usd": self.delta_usd,
            "alpha": self.alpha,
            "shadow_price": self.shadow_price,
            "value_of_budget": self.value_of_budget,
            "dprice_dbudget": self.dprice_dbudget,
            "segment_dprice_dbudget": dict(self.segment_dprice_dbudget),
            "degenerate": self.degenerate,
            "sum_dv_dbudget": float(d.sum()),
            "max_dv_dbudget": float(d.max()) if d.size else None,
            "n_moving": int(np.count_nonzero(d)),
            "predicted_up_total_usd": float(d.sum() * self.delta_usd),
            "predicted_up_max_usd": float(d.max() * self.delta_usd) if d.size else None,
            "up": self.up.to_dict(),
            "down": self.down.to_dict(),
        }
        if self.loss is not None:
            labels = _band_labels(self.loss)
            out["dv_dbudget_by_band"] = {
                label: float(d[labels == label].sum()) for label, _, _ in LOSS_BANDS
            }
        if per_user:
            out["dv_dbudget"] = d
        return cast("dict[str, Any]", json_safe(out))


def resolve(problem: AllocationProblem) -> Allocation:
    """Re-solve with the fast exact solver wherever it applies, the cvxpy model otherwise."""
    return solve(problem, method="fast" if fast_reach(problem) else "auto")


def _change(
    problem: AllocationProblem,
    allocation: Allocation,
    dv: np.ndarray,
    delta: float,
    loss: np.ndarray | None,
) -> tuple[BudgetChange, np.ndarray | None]:
    budget = float(problem.budget) + delta
    try:
        if not budget > 0:
            raise InfeasibleError(
                f"a budget of {format_usd(budget, currency=True)} is not positive"
            )
        other = resolve(replace(problem, budget=budget))
    except AllocatorError as exc:
        change = BudgetChange(delta_usd=delta, budget_usd=budget, feasible=False, message=str(exc))
        return change, None
    v0 = np.asarray(allocation.vouchers, dtype=np.float64)
    diff = other.vouchers - v0
    moved = np.abs(diff) > MOVE_TOL_USD
    s0 = bound_states(v0, problem.lower, problem.upper)
    s1 = bound_states(other.vouchers, problem.lower, problem.upper)
    by_band: dict[str, dict[str, float]] = {}
    if loss is not None:
        labels = _band_labels(loss)
        for label, _, _ in LOSS_BANDS:
            m = labels == label
            by_band[label] = {
                "users": int(m.sum()),
                "n_moved": int((moved & m).sum()),
                "total_change_usd": float(diff[m].sum()),
                "max_abs_change_usd": float(np.abs(diff[m]).max()) if m.any() else 0.0,
            }
    change = BudgetChange(
        delta_usd=delta,
        budget_usd=budget,
        feasible=True,
        n_moved=int(moved.sum()),
        n_up=int((diff > MOVE_TOL_USD).sum()),
        n_down=int((diff < -MOVE_TOL_USD).sum()),
        total_change_usd=float(diff.sum()),
        max_increase_usd=float(max(0.0, diff.max())),
        max_decrease_usd=float(max(0.0, -diff.min())),
        predicted_total_change_usd=float(dv.sum() * delta),
        max_prediction_error_usd=float(np.abs(diff - dv * delta).max()),
        newly_at_cap=int(((s1 == CAP) & (s0 != CAP)).sum()),
        newly_at_floor=int(((s1 == FLOOR) & (s0 != FLOOR)).sum()),
        left_cap=int(((s0 == CAP) & (s1 != CAP)).sum()),
        left_floor=int(((s0 == FLOOR) & (s1 != FLOOR)).sum()),
        by_band=by_band,
    )
    return change, np.asarray(other.vouchers, dtype=np.float64)


def budget_derivatives(
    problem: AllocationProblem, allocation: Allocation
) -> tuple[np.ndarray, float, dict[str, float], bool]:
    """``(dv_dB, dlambda_dB, {segment: dlambda_s_dB}, degenerate)`` (see the module docstring)."""
    if allocation.rule_awards is not None and allocation.rule_awards.path is not None:
        a, b, lo, hi = allocation.rule_awards.path
        x = a + b * allocation.rule_awards.root
        inside = (x > lo) & (x < hi) & (b > 0.0)
        slope = float(b[inside].sum())
        if not slope > 0.0:
            return np.zeros(problem.n), math.nan, {}, True
        return np.where(inside, b / slope, 0.0), 1.0 / slope, {}, False
    group, tau = groups(problem, allocation)
    k = len(problem.segments)
    v = np.asarray(allocation.vouchers, dtype=np.float64)
    absorb = pick(group >= 0, absorb_shares(problem, v), 0.0)
    total = group_sums(group, absorb, k)
    need = tau > 0
    degenerate = bool(np.any(need[1:] & ~(total[1:] > 0)))
    with np.errstate(divide="ignore", invalid="ignore"):
        per = np.where(total > 0, tau / total, 0.0)
    per[0] = 0.0
    # with no binding segment every user with something to absorb is in group 0
    dv = absorb * per[1] if group.max(initial=-1) <= 0 else absorb * per[group + 1]
    lam = float(allocation.shadow_price)

    def dprice(g: int, price: float) -> float:
        if problem.alpha == 0 or tau[g + 1] == 0:
            return 0.0
        if not total[g + 1] > 0:
            return math.nan
        return float(-problem.alpha * price * tau[g + 1] / total[g + 1])

    seg: dict[str, float] = {}
    for j, s in enumerate(problem.segments):
        if tau[j + 2] > 0:
            mu_min, mu_max = allocation.segment_prices.get(s.name, (0.0, 0.0))
            seg[s.name] = dprice(j + 1, lam - mu_min + mu_max)
    return dv, dprice(0, lam), seg, degenerate


def budget_sensitivity(
    problem: AllocationProblem,
    allocation: Allocation,
    *,
    delta_usd: float = 1_000_000,
    loss: np.ndarray | None = None,
) -> BudgetSensitivity:
    r"""Derivatives in the budget and the exact effect of re-solving at :math:`B \pm \delta`.

    Parameters
    ----------
    problem, allocation
        The problem and its (certified) optimal allocation.
    delta_usd
        :math:`\delta`, the budget change of the exact re-solves and the linear predictions.
    loss
        Per-user loss (USD) for the breakdown by :data:`allocator.analysis.metrics.LOSS_BANDS`; taken
        from ``problem.scalar_bounds`` when omitted.

    Returns
    -------
    BudgetSensitivity
        See its attributes; the maths is in the module docstring.
    """
    if not (math.isfinite(delta_usd) and delta_usd > 0):
        raise InvalidProblemError(f"delta_usd must be a positive amount, got {delta_usd!r}")
    if loss is None and problem.scalar_bounds is not None:
        loss = np.asarray(problem.scalar_bounds.loss, dtype=np.float64)
    dv, dlam, seg_dlam, degenerate = budget_derivatives(problem, allocation)
    lam = float(allocation.shadow_price)
    value = lam if allocation.rule_awards is None else math.nan
    for s in problem.segments:
        mu_min, mu_max = allocation.segment_prices.get(s.name, (0.0, 0.0))
        value += mu_max * (s.max_share or 0.0) - mu_min * (s.min_share or 0.0)
    up, v_up = _change(problem, allocation, dv, float(delta_usd), loss)
    down, v_down = _change(problem, allocation, dv, -float(delta_usd), loss)
    return BudgetSensitivity(
        budget_usd=float(problem.budget),
        delta_usd=float(delta_usd),
        alpha=float(problem.alpha),
        shadow_price=lam,
        value_of_budget=value,
        dprice_dbudget=dlam,
        segment_dprice_dbudget=seg_dlam,
        dv_dbudget=dv,
        degenerate=degenerate,
        up=up,
        down=down,
        loss=loss,
        vouchers_up=v_up,
        vouchers_down=v_down,
    )
