r"""How the allocation moves with the budget, the weights, alpha and the eligibility thresholds.

The model (:mod:`allocator.problem`) is

.. math::

    \max_v \sum_i w_i u_\alpha(v_i)\quad\text{s.t.}\quad \ell_i \le v_i \le h_i,\quad
    \sum_i v_i \le B\;(= B \text{ in exhaust mode}),\quad
    m_s B \le \sum_{i\in S_s} v_i \le M_s B .

Groups
------
With the active set held fixed, users fall into groups that move together:

* users at their floor or cap (``bound_state != 0``) do not move;
* the interior users of a (disjoint) segment whose min or max share *binds* (positive
  multiplier) form one group :math:`g = s` with its own price :math:`\lambda_s`; the segment's
  total is :math:`\sigma_s B` (:math:`\sigma_s` the binding share), so
  :math:`\mathrm{d}\sum_{i \in s} v_i / \mathrm{d}B = \sigma_s`;
* every other interior user is *free* and faces the budget price :math:`\lambda`; when the
  budget binds the free users absorb the rest,
  :math:`\mathrm{d}\sum_{i \in F} v_i / \mathrm{d}B = \tau_F = 1 - \sum_{s \text{ binding}}
  \sigma_s` (0 when the budget is slack).

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

The value of the budget (envelope theorem) is
:math:`\mathrm{d}P^\star/\mathrm{d}B = \lambda + \sum_s (\mu_s^{\max} M_s - \mu_s^{\min} m_s)`.

Weights and alpha (``alpha > 0``)
    With :math:`\log w_i` gaining :math:`\theta x_i` for a parameter :math:`\theta` (a feature
    coefficient :math:`c_k` with :math:`x_{ik}`, the loss exponent with :math:`\log L_i`, the
    ratio exponent with :math:`\log\min(r_i, \bar r)`), an interior user has
    :math:`\log v_i = (\log w_i - \log\lambda_g)/\alpha`. Holding every group's total fixed
    (budget and binding shares held),

    .. math::

        \frac{\mathrm{d}\log v_i}{\mathrm{d}\theta} = \frac{x_i - \bar x_g}{\alpha},\qquad
        \frac{\mathrm{d}\log\lambda_g}{\mathrm{d}\theta} = \bar x_g
            = \frac{\sum_{j\in g} v_j x_j}{\sum_{j \in g} v_j}.

    For alpha, with :math:`\omega_i = \partial \log w_i / \partial\alpha` (:math:`\log L_i` in
    coverage form, else 0) and :math:`z_i = \omega_i - \log v_i`,
    :math:`\mathrm{d}\log v_i/\mathrm{d}\alpha = (z_i - \bar z_g)/\alpha` with the same
    voucher-weighted group mean. At ``alpha = 0`` the allocation is locally constant in the
    weights (derivative 0) unless weights tie at the margin.

Summary metrics (Gini, median coverage, top-decile share) are not smooth in the vouchers, so
their derivatives are central finite differences through re-solves of the fast solver.

Cliffs
------
:func:`cliff_analysis` counts the users just below the loss and loss-ratio thresholds and the
voucher paid just above them (the height of the cliff). The phase-in band
(``eligibility.phase_in_loss_usd`` / ``phase_in_ratio``) is the scenario option that smooths it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from allocator import names as N
from allocator.config import EligibilityRules
from allocator.errors import AllocatorError, InfeasibleError, InputError
from allocator.jsonsafe import json_safe
from allocator.metrics import LOSS_BANDS, gini, top_share
from allocator.problem import AllocationProblem
from allocator.solvers import (
    CAP,
    FLOOR,
    Allocation,
    InvalidProblemError,
    bound_states,
    fast_reach,
    segments_disjoint,
    solve,
)

__all__ = [
    "MOVE_TOL_USD",
    "BudgetChange",
    "BudgetSensitivity",
    "ParameterSensitivity",
    "WeightSensitivity",
    "CliffAnalysis",
    "SensitivityReport",
    "groups",
    "budget_sensitivity",
    "weight_sensitivity",
    "cliff_analysis",
    "run_sensitivity",
]

#: A voucher "moves" when it changes by more than this (USD): one cent.
MOVE_TOL_USD = 0.01
#: A segment multiplier counts as binding above this fraction of the prices around it.
_BINDING_RTOL = 1e-9
#: Step of the central finite differences of the summary metrics.
METRIC_STEP = 1e-3
#: Name of the alpha parameter in :class:`WeightSensitivity`.
ALPHA = "alpha"


# ----------------------------------------------------------------------------------------------
# groups of the active set
# ----------------------------------------------------------------------------------------------


def groups(problem: AllocationProblem, allocation: Allocation) -> tuple[np.ndarray, np.ndarray]:
    r"""The groups of the module docstring: ``(group, tau)``.

    ``group[i]`` is -1 for a user at a bound, 0 for a free interior user and ``k + 1`` for an
    interior user of binding segment ``k``; ``tau[g + 1]`` is :math:`\tau_g`, the share of an
    extra budget dollar that group ``g`` receives (``tau[0]`` for the users at bounds is 0).

    Raises
    ------
    InvalidProblemError
        The segments overlap (the groups are then not separable).
    """
    if not segments_disjoint(problem):
        raise InvalidProblemError(
            "sensitivities need disjoint segments, and some users belong to two segments",
            hint="remove the overlap between the scenario's segments",
        )
    n = problem.n
    group = np.where(np.asarray(allocation.bound_state) == 0, 0, -1).astype(np.int64)
    tau = np.zeros(len(problem.segments) + 2)
    lam = float(allocation.shadow_price)
    taken = 0.0
    for k, seg in enumerate(problem.segments):
        mu_min, mu_max = allocation.segment_prices.get(seg.name, (0.0, 0.0))
        scale = max(lam, mu_min, mu_max, np.finfo(float).tiny)
        share = None
        if mu_min > _BINDING_RTOL * scale and seg.min_share is not None:
            share = seg.min_share
        elif mu_max > _BINDING_RTOL * scale and seg.max_share is not None:
            share = seg.max_share
        if share is None:
            continue
        members = np.asarray(seg.members, dtype=bool)
        group[members & (group == 0)] = k + 1
        tau[k + 2] = share
        taken += share
    assert group.shape == (n,)
    budget_binds = problem.exhaust or lam > 0.0
    tau[1] = (1.0 - taken) if budget_binds else 0.0
    return group, tau


def _group_sums(group: np.ndarray, values: np.ndarray, n_groups: int) -> np.ndarray:
    """Sum of ``values`` per group, indexed ``g + 1`` (bound users at 0)."""
    return np.bincount(group + 1, weights=values, minlength=n_groups + 2)


def _absorb(problem: AllocationProblem, v: np.ndarray) -> np.ndarray:
    """How a group's interior users share a change of its total: vouchers (alpha > 0) or room."""
    if problem.alpha > 0:
        return np.asarray(v, dtype=np.float64)
    return np.asarray(problem.upper, dtype=np.float64) - np.asarray(problem.lower, dtype=np.float64)


# ----------------------------------------------------------------------------------------------
# budget
# ----------------------------------------------------------------------------------------------


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
        return json_safe({k: getattr(self, k) for k in self.__dataclass_fields__})


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
        return json_safe(out)


def _resolve(problem: AllocationProblem) -> Allocation:
    return solve(problem, method="fast" if fast_reach(problem) else "auto")


def _change(
    problem: AllocationProblem,
    allocation: Allocation,
    dv: np.ndarray,
    delta: float,
    loss: np.ndarray | None,
) -> BudgetChange:
    budget = float(problem.budget) + delta
    try:
        if not budget > 0:
            raise InfeasibleError(f"a budget of USD {budget:,.2f} is not positive")
        other = _resolve(replace(problem, budget=budget))
    except AllocatorError as exc:
        return BudgetChange(delta_usd=delta, budget_usd=budget, feasible=False, message=str(exc))
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
    return BudgetChange(
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


def budget_derivatives(
    problem: AllocationProblem, allocation: Allocation
) -> tuple[np.ndarray, float, dict[str, float], bool]:
    """``(dv_dB, dlambda_dB, {segment: dlambda_s_dB}, degenerate)`` (see the module docstring)."""
    group, tau = groups(problem, allocation)
    k = len(problem.segments)
    v = np.asarray(allocation.vouchers, dtype=np.float64)
    absorb = np.where(group >= 0, _absorb(problem, v), 0.0)
    total = _group_sums(group, absorb, k)
    need = tau > 0
    degenerate = bool(np.any(need[1:] & ~(total[1:] > 0)))
    with np.errstate(divide="ignore", invalid="ignore"):
        per = np.where(total > 0, tau / total, 0.0)
    per[0] = 0.0
    dv = absorb * per[group + 1]
    lam = float(allocation.shadow_price)

    def dprice(g: int, price: float) -> float:
        if problem.alpha == 0 or tau[g + 1] == 0:
            return 0.0
        if not total[g + 1] > 0:
            return math.nan
        return -problem.alpha * price * tau[g + 1] / total[g + 1]

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
        Per-user loss (USD) for the breakdown by :data:`allocator.metrics.LOSS_BANDS`; taken
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
    value = lam
    for s in problem.segments:
        mu_min, mu_max = allocation.segment_prices.get(s.name, (0.0, 0.0))
        value += mu_max * (s.max_share or 0.0) - mu_min * (s.min_share or 0.0)
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
        up=_change(problem, allocation, dv, float(delta_usd), loss),
        down=_change(problem, allocation, dv, -float(delta_usd), loss),
        loss=loss,
    )


# ----------------------------------------------------------------------------------------------
# weights and alpha
# ----------------------------------------------------------------------------------------------


def _metrics(v: np.ndarray, loss: np.ndarray | None) -> dict[str, float | None]:
    out: dict[str, float | None] = {"gini": gini(v), "top_decile_share": top_share(v, 0.1)}
    if loss is not None:
        pos = loss > 0
        out["median_coverage"] = float(np.median(v[pos] / loss[pos])) if pos.any() else None
    return out


def _fd_metrics(
    plus: np.ndarray, minus: np.ndarray, step: float, loss: np.ndarray | None
) -> dict[str, float | None]:
    a, b = _metrics(plus, loss), _metrics(minus, loss)
    return {
        k: None if a[k] is None or b[k] is None else (a[k] - b[k]) / step  # type: ignore[operator]
        for k in a
    }


def log_derivatives(
    problem: AllocationProblem, allocation: Allocation, x: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    r"""``(dv/dtheta, dlog lambda_g/dtheta per group)`` for :math:`\log w_i \mathrel{+}= \theta
    x_i`, with the budget and binding shares held (module docstring)."""
    group, _ = groups(problem, allocation)
    k = len(problem.segments)
    v = np.asarray(allocation.vouchers, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    if problem.alpha == 0:
        return np.zeros_like(v), np.zeros(k + 2)
    vin = np.where(group >= 0, v, 0.0)
    xin = np.where(group >= 0, x, 0.0)
    total = _group_sums(group, vin, k)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.where(total > 0, _group_sums(group, vin * xin, k) / total, 0.0)
    dv = np.where(group >= 0, v * (xin - mean[group + 1]) / problem.alpha, 0.0)
    return dv, mean


@dataclass(frozen=True, eq=False)
class ParameterSensitivity:
    r"""One parameter :math:`\theta` of the weights (or alpha): its value, per-user
    :math:`\mathrm{d}v_i/\mathrm{d}\theta`, :math:`\mathrm{d}\log\lambda/\mathrm{d}\theta` of
    the free group, and the finite-difference derivatives of the summary metrics."""

    name: str
    value: float
    dv: np.ndarray
    dlog_price: float
    metrics: Mapping[str, float | None]
    step: float

    def to_dict(self, *, per_user: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "value": self.value,
            "dlog_price": self.dlog_price,
            "sum_abs_dv": float(np.abs(self.dv).sum()),
            "max_increase_dv": float(self.dv.max()) if self.dv.size else None,
            "max_decrease_dv": float(-self.dv.min()) if self.dv.size else None,
            "metric_derivatives": dict(self.metrics),
            "metric_step": self.step,
        }
        if per_user:
            out["dv"] = self.dv
        return json_safe(out)


@dataclass(frozen=True, eq=False)
class WeightSensitivity:
    """Per-parameter sensitivities (weight coefficients, then ``alpha``) and base metrics."""

    parameters: tuple[ParameterSensitivity, ...]
    base_metrics: Mapping[str, float | None]

    def get(self, name: str) -> ParameterSensitivity:
        for p in self.parameters:
            if p.name == name:
                return p
        raise KeyError(name)

    def to_dict(self, *, per_user: bool = False) -> dict[str, Any]:
        return json_safe(
            {
                "base_metrics": dict(self.base_metrics),
                "parameters": [p.to_dict(per_user=per_user) for p in self.parameters],
            }
        )


def _resolve_v(problem: AllocationProblem) -> np.ndarray:
    return np.asarray(_resolve(problem).vouchers, dtype=np.float64)


def weight_sensitivity(
    problem: AllocationProblem,
    allocation: Allocation,
    features_log: dict[str, np.ndarray],
    *,
    values: Mapping[str, float] | None = None,
    alpha_log_weight: np.ndarray | None = None,
    loss: np.ndarray | None = None,
    step: float = METRIC_STEP,
) -> WeightSensitivity:
    r"""Derivatives of every voucher in each weight coefficient and in alpha.

    Parameters
    ----------
    problem, allocation
        The problem and its optimal allocation.
    features_log
        Parameter name -> :math:`x_{i}` with :math:`\partial\log w_i/\partial\theta = x_i`
        (e.g. ``{"loss_exponent": log L, "features.vip_tier": vip}``).
    values
        Current value of each parameter, reported as is.
    alpha_log_weight
        :math:`\omega_i = \partial\log w_i/\partial\alpha` (:math:`\log L_i` in coverage form);
        zeros when omitted.
    loss
        Per-user loss for the median coverage; from ``problem.scalar_bounds`` when omitted.
    step
        Step of the central finite differences of the metrics (forward at ``alpha`` = 0).

    Returns
    -------
    WeightSensitivity
        One :class:`ParameterSensitivity` per entry of ``features_log``, then ``alpha``.
    """
    if loss is None and problem.scalar_bounds is not None:
        loss = np.asarray(problem.scalar_bounds.loss, dtype=np.float64)
    values = dict(values or {})
    v = np.asarray(allocation.vouchers, dtype=np.float64)
    logw = np.log(np.asarray(problem.weights, dtype=np.float64))
    out: list[ParameterSensitivity] = []
    for name, x in features_log.items():
        x = np.asarray(x, dtype=np.float64)
        dv, mean = log_derivatives(problem, allocation, x)
        plus = _resolve_v(replace(problem, weights=np.exp(logw + step * x)))
        minus = _resolve_v(replace(problem, weights=np.exp(logw - step * x)))
        out.append(
            ParameterSensitivity(
                name=name,
                value=float(values.get(name, math.nan)),
                dv=dv,
                dlog_price=float(mean[1]),
                metrics=_fd_metrics(plus, minus, 2 * step, loss),
                step=step,
            )
        )
    omega = np.zeros_like(v) if alpha_log_weight is None else np.asarray(alpha_log_weight, float)
    alpha = float(problem.alpha)
    if alpha > 0:
        with np.errstate(divide="ignore"):
            z = omega - np.log(np.maximum(v, np.finfo(float).tiny))
        dv, mean = log_derivatives(problem, allocation, z)
    else:
        dv, mean = np.zeros_like(v), np.zeros(2)
    lo_a = max(alpha - step, 0.0)
    hi_a = alpha + step
    plus = _resolve_v(replace(problem, alpha=hi_a, weights=np.exp(logw + (hi_a - alpha) * omega)))
    minus = _resolve_v(replace(problem, alpha=lo_a, weights=np.exp(logw + (lo_a - alpha) * omega)))
    out.append(
        ParameterSensitivity(
            name=ALPHA,
            value=alpha,
            dv=dv,
            dlog_price=float(mean[1]),
            metrics=_fd_metrics(plus, minus, hi_a - lo_a, loss),
            step=step,
        )
    )
    return WeightSensitivity(parameters=tuple(out), base_metrics=_metrics(v, loss))


# ----------------------------------------------------------------------------------------------
# cliffs at the eligibility thresholds
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CliffAnalysis:
    """Users just below the thresholds, and the voucher paid just above them.

    ``loss_hist`` and ``ratio_hist`` hold bin edges and, per bin, the eligible users and the
    users excluded by that rule (``below_min_loss`` / ``below_loss_ratio``).
    """

    min_loss_usd: float
    min_loss_ratio: float
    loss_band_usd: float
    ratio_band: float
    below_loss_users: int
    below_loss_total_usd: float
    below_loss_only_users: int
    below_loss_only_total_usd: float
    below_ratio_users: int
    below_ratio_total_usd: float
    voucher_above_loss_usd: float | None
    eligible_above_loss_users: int
    voucher_above_ratio_usd: float | None
    eligible_above_ratio_users: int
    loss_hist: Mapping[str, list[float] | list[int]]
    ratio_hist: Mapping[str, list[float] | list[int]]

    def to_dict(self) -> dict[str, Any]:
        return json_safe({k: getattr(self, k) for k in self.__dataclass_fields__})

    def lines(self) -> list[str]:
        def usd(x: float | None) -> str:
            return "-" if x is None else f"{x:,.2f}"

        return [
            f"loss in [{self.min_loss_usd - self.loss_band_usd:g}, {self.min_loss_usd:g}) USD, "
            f"excluded by min loss: {self.below_loss_users:,} users, "
            f"USD {self.below_loss_total_usd:,.2f} (passing the ratio rule: "
            f"{self.below_loss_only_users:,}, USD {self.below_loss_only_total_usd:,.2f})",
            f"ratio in [{self.min_loss_ratio - self.ratio_band:g}, {self.min_loss_ratio:g}), "
            f"excluded by ratio: {self.below_ratio_users:,} users, "
            f"USD {self.below_ratio_total_usd:,.2f}",
            f"median voucher just above min loss: USD {usd(self.voucher_above_loss_usd)} "
            f"({self.eligible_above_loss_users:,} users)",
            f"median voucher just above min ratio: USD {usd(self.voucher_above_ratio_usd)} "
            f"({self.eligible_above_ratio_users:,} users)",
        ]


def _need(frame: pl.DataFrame, cols: tuple[str, ...], what: str) -> None:
    missing = [c for c in cols if c not in frame.columns]
    if missing:
        raise InputError(f"the {what} frame has no column(s) {missing}; it has {frame.columns}.")


def _hist(
    eligible: np.ndarray, excluded: np.ndarray, lo: float, hi: float, bins: int
) -> dict[str, list[float] | list[int]]:
    edges = np.linspace(lo, hi, bins + 1)
    e, _ = np.histogram(eligible[np.isfinite(eligible)], bins=edges)
    x, _ = np.histogram(excluded[np.isfinite(excluded)], bins=edges)
    return {"edges": edges.tolist(), "eligible": e.tolist(), "excluded": x.tolist()}


def cliff_analysis(
    excluded: pl.DataFrame,
    allocations: pl.DataFrame,
    rules: EligibilityRules,
    *,
    loss_band_usd: float = 10.0,
    ratio_band: float = 0.05,
    bins: int = 10,
) -> CliffAnalysis:
    """Who sits just below the loss and ratio thresholds, and the cliff they fall off.

    Parameters
    ----------
    excluded
        ``excluded.parquet``: ``reason``, ``loss_usd``, ``loss_ratio``.
    allocations
        ``allocations.parquet``: ``voucher_cents`` (or ``voucher_usd``), ``loss_usd``,
        ``loss_ratio``.
    rules
        The eligibility rules (``min_loss_usd``, ``min_loss_ratio``).
    loss_band_usd, ratio_band
        Widths of the bands below (and above) each threshold.
    bins
        Histogram bins on each side's full range ``[threshold - band, threshold + band)``.

    Returns
    -------
    CliffAnalysis
        Users excluded by min loss with loss in ``[min_loss - band, min_loss)`` (and those of
        them whose ratio would pass), users excluded by ratio with ratio in
        ``[min_ratio - band, min_ratio)``, histograms, and the median voucher of eligible users
        in ``[threshold, threshold + band)``, the height of the cliff.
    """
    if not (loss_band_usd > 0 and ratio_band > 0 and bins >= 1):
        raise InvalidProblemError("loss_band_usd and ratio_band must be positive, bins >= 1")
    _need(excluded, (N.REASON, N.LOSS_USD, N.LOSS_RATIO), "excluded")
    _need(allocations, (N.LOSS_USD, N.LOSS_RATIO), "allocations")
    if N.VOUCHER_CENTS in allocations.columns:
        voucher = allocations[N.VOUCHER_CENTS].cast(pl.Float64).to_numpy() / 100.0
    elif N.VOUCHER_USD in allocations.columns:
        voucher = allocations[N.VOUCHER_USD].cast(pl.Float64).to_numpy()
    else:
        raise InputError("the allocations frame has neither voucher_cents nor voucher_usd.")
    m_loss, m_ratio = float(rules.min_loss_usd), float(rules.min_loss_ratio)
    reason = excluded[N.REASON].to_numpy()
    x_loss = excluded[N.LOSS_USD].cast(pl.Float64).fill_null(np.nan).to_numpy()
    x_ratio = excluded[N.LOSS_RATIO].cast(pl.Float64).fill_null(np.nan).to_numpy()
    by_loss = reason == N.REASON_BELOW_MIN_LOSS
    by_ratio = reason == N.REASON_BELOW_LOSS_RATIO
    with np.errstate(invalid="ignore"):
        near_loss = by_loss & (x_loss >= m_loss - loss_band_usd) & (x_loss < m_loss)
        only_loss = near_loss & (x_ratio >= m_ratio)
        near_ratio = by_ratio & (x_ratio >= m_ratio - ratio_band) & (x_ratio < m_ratio)
    e_loss = allocations[N.LOSS_USD].cast(pl.Float64).to_numpy()
    e_ratio = allocations[N.LOSS_RATIO].cast(pl.Float64).to_numpy()
    above_loss = (e_loss >= m_loss) & (e_loss < m_loss + loss_band_usd)
    above_ratio = (e_ratio >= m_ratio) & (e_ratio < m_ratio + ratio_band)

    def median(mask: np.ndarray) -> float | None:
        return float(np.median(voucher[mask])) if mask.any() else None

    return CliffAnalysis(
        min_loss_usd=m_loss,
        min_loss_ratio=m_ratio,
        loss_band_usd=float(loss_band_usd),
        ratio_band=float(ratio_band),
        below_loss_users=int(near_loss.sum()),
        below_loss_total_usd=float(x_loss[near_loss].sum()),
        below_loss_only_users=int(only_loss.sum()),
        below_loss_only_total_usd=float(x_loss[only_loss].sum()),
        below_ratio_users=int(near_ratio.sum()),
        below_ratio_total_usd=float(x_loss[near_ratio].sum()),
        voucher_above_loss_usd=median(above_loss),
        eligible_above_loss_users=int(above_loss.sum()),
        voucher_above_ratio_usd=median(above_ratio),
        eligible_above_ratio_users=int(above_ratio.sum()),
        loss_hist=_hist(
            e_loss, x_loss[by_loss], m_loss - loss_band_usd, m_loss + loss_band_usd, 2 * bins
        ),
        ratio_hist=_hist(
            e_ratio, x_ratio[by_ratio], m_ratio - ratio_band, m_ratio + ratio_band, 2 * bins
        ),
    )


# ----------------------------------------------------------------------------------------------
# a run directory, end to end
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class SensitivityReport:
    """Budget, weight/alpha and cliff sensitivities of one run directory."""

    run_dir: str
    scenario: str
    eligible: int
    budget: BudgetSensitivity
    weights: WeightSensitivity
    cliff: CliffAnalysis

    def to_dict(self) -> dict[str, Any]:
        return json_safe(
            {
                "run_dir": self.run_dir,
                "scenario": self.scenario,
                "eligible": self.eligible,
                "budget": self.budget.to_dict(),
                "weights": self.weights.to_dict(),
                "cliff": self.cliff.to_dict(),
            }
        )

    def lines(self) -> list[str]:
        b = self.budget

        def change(c: BudgetChange) -> str:
            if not c.feasible:
                return f"budget {c.delta_usd:+,.0f} USD: infeasible ({c.message})"
            return (
                f"budget {c.delta_usd:+,.0f} USD: {c.n_moved:,} vouchers move, total "
                f"{c.total_change_usd:+,.2f} USD (predicted {c.predicted_total_change_usd:+,.2f}), "
                f"largest {max(c.max_increase_usd, c.max_decrease_usd):,.2f} USD, "
                f"{c.newly_at_cap:,} newly at cap, {c.newly_at_floor:,} newly at floor, "
                f"prediction error at most {c.max_prediction_error_usd:,.4f} USD"
            )

        out = [
            f"run {self.run_dir} (scenario {self.scenario}, {self.eligible:,} eligible users)",
            f"shadow price {b.shadow_price:.6g}; value of one more USD {b.value_of_budget:.6g}; "
            f"d price / d budget {b.dprice_dbudget:.6g}",
            f"users whose voucher grows with the budget: {int(np.count_nonzero(b.dv_dbudget)):,}"
            + (" (degenerate active set)" if b.degenerate else ""),
            change(b.up),
            change(b.down),
            "weights (d metric / d parameter, finite differences):",
        ]
        for p in self.weights.parameters:
            m = ", ".join(
                f"{k} {'-' if v is None else f'{v:+.4g}'}" for k, v in p.metrics.items()
            )
            out.append(f"  {p.name} = {p.value:g}: {m}; sum |dv| {np.abs(p.dv).sum():,.2f} USD")
        out.append("cliffs:")
        out += [f"  {line}" for line in self.cliff.lines()]
        return out


def _data_dir(manifest: Mapping[str, Any], path: Path) -> Path:
    inputs = manifest.get("inputs")
    if not isinstance(inputs, Mapping) or not inputs:
        raise InputError(f"{path}: the manifest has no 'inputs' section naming the data files.")
    dirs = {Path(str(meta.get("path", ""))).parent for meta in inputs.values()}
    if len(dirs) != 1:
        raise InputError(f"{path}: the manifest's inputs are not in one directory ({sorted(map(str, dirs))}).")
    data_dir = dirs.pop()
    if not data_dir.is_dir():
        raise InputError(
            f"{path}: the data directory {data_dir} of this run no longer exists; "
            "the sensitivities re-solve the run on its inputs."
        )
    return data_dir


def _features_log(features: pl.DataFrame, scenario: Any) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    spec = scenario.objective
    logs: dict[str, np.ndarray] = {}
    values: dict[str, float] = {}
    loss = features[N.LOSS_USD].cast(pl.Float64).to_numpy()
    with np.errstate(divide="ignore"):
        log_loss = np.log(loss)
        if np.all(np.isfinite(log_loss)):
            logs["loss_exponent"] = log_loss
            values["loss_exponent"] = float(spec.loss_exponent)
        ratio = features[N.LOSS_RATIO].cast(pl.Float64).to_numpy()
        log_ratio = np.log(np.minimum(ratio, spec.ratio_cap))
        if np.all(np.isfinite(log_ratio)):
            logs["ratio_exponent"] = log_ratio
            values["ratio_exponent"] = float(spec.ratio_exponent)
    for name, coef in spec.features:
        logs[f"features.{name}"] = features[name].cast(pl.Float64).to_numpy()
        values[f"features.{name}"] = float(coef)
    return logs, values


def run_sensitivity(run_dir: str | Path, *, delta_usd: float = 1e6) -> SensitivityReport:
    """Rebuild a run from its manifest and compute its budget, weight/alpha and cliff sensitivities.

    The scenario is the manifest's resolved scenario and the data the files it names; the run is
    re-solved (``allocate(..., with_payouts=False)``) rather than read back, because the
    derivatives need the continuous optimum and its prices.

    Raises
    ------
    InputError
        No readable ``manifest.json``, or its data directory is gone.
    """
    from allocator.pipeline import DataSession, allocate
    from allocator.scenarios import parse_scenario

    run_dir = Path(run_dir)
    path = run_dir / "manifest.json"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{run_dir} is not a run directory: it has no manifest.json.") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"{path} cannot be read as JSON ({exc}).") from None
    if not isinstance(manifest, Mapping) or "scenario" not in manifest:
        raise InputError(f"{path} has no 'scenario' section.")
    scenario = parse_scenario(manifest["scenario"], file=path)
    session = DataSession.open(_data_dir(manifest, path))
    run = allocate(session, scenario, with_payouts=False)
    features = run.eligibility.eligible
    loss = features[N.LOSS_USD].cast(pl.Float64).to_numpy()
    budget = budget_sensitivity(run.problem, run.allocation, delta_usd=delta_usd, loss=loss)
    logs, values = _features_log(features, scenario)
    omega = None
    if scenario.objective.form == "coverage" and np.all(loss > 0):
        omega = np.log(loss)
    weights = weight_sensitivity(
        run.problem, run.allocation, logs, values=values, alpha_log_weight=omega, loss=loss
    )
    cliff = cliff_analysis(run.eligibility.excluded, run.allocations, scenario.eligibility)
    return SensitivityReport(
        run_dir=str(run_dir),
        scenario=scenario.name,
        eligible=features.height,
        budget=budget,
        weights=weights,
        cliff=cliff,
    )
