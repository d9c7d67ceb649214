r"""The allocation's derivatives in the weight coefficients and in alpha.

With the groups of :mod:`allocator.analysis.sensitivity.groups`:

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
    weights and in alpha (derivative 0) unless weights tie at the margin; the metrics' one-sided
    alpha derivatives there are exact (:func:`linear_alpha_metrics`), not re-solved.

Summary metrics (Gini, median coverage, top-decile share) are not smooth in the vouchers, so
their derivatives are central finite differences through re-solves of the fast solver (and the
alpha ones at ``alpha = 0`` are the exact one-sided derivatives).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, cast

import numpy as np

from allocator.analysis.metrics import gini, top_share
from allocator.analysis.sensitivity.budget import resolve
from allocator.analysis.sensitivity.groups import group_sums, groups, ties_at_margin
from allocator.jsonsafe import json_safe
from allocator.kernel.allocation import Allocation
from allocator.kernel.fast import fast_reach
from allocator.kernel.problem import AllocationProblem

#: Step of the central finite differences of the summary metrics.
METRIC_STEP = 1e-3
#: Name of the alpha parameter in :class:`WeightSensitivity`.
ALPHA = "alpha"


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
    total = group_sums(group, vin, k)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.where(total > 0, group_sums(group, vin * xin, k) / total, 0.0)
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
        return cast("dict[str, Any]", json_safe(out))


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
        return cast(
            "dict[str, Any]",
            json_safe(
                {
                    "base_metrics": dict(self.base_metrics),
                    "parameters": [p.to_dict(per_user=per_user) for p in self.parameters],
                }
            ),
        )


def linear_alpha_metrics(
    problem: AllocationProblem, allocation: Allocation, loss: np.ndarray | None
) -> dict[str, float | None]:
    r"""One-sided derivatives of the summary metrics in ``alpha`` at ``alpha = 0``, exactly.

    With the weights :math:`w_i e^{\alpha\omega_i}`, an interior user of group :math:`g` has
    :math:`\log v_i = \omega_i + (\log w_i - \log\lambda_g)/\alpha`. Write
    :math:`\log\lambda_g = \log w^\star_g - \alpha\log K_g` around the marginal weight
    :math:`w^\star_g` of linear utility. A user heavier (lighter) than :math:`w^\star_g` sees
    :math:`(\log w_i - \log w^\star_g)/\alpha \to +\infty` (:math:`-\infty`) and stays at
    its cap (floor) for every :math:`\alpha` below some :math:`\alpha_0 > 0` (of the order of
    the log-weight gap around the margin); the users tied at :math:`w^\star_g` are paid
    :math:`\operatorname{clip}(K_g e^{\omega_i}, \ell_i, h_i)` with :math:`K_g` set by the
    group's total, which does not depend on :math:`\alpha`. So :math:`v(\alpha)` is constant
    on :math:`(0, \alpha_0)`:

    * with at most one tied user with room per group that constant is :math:`v(0)` (the lone
      marginal user receives what the group's total leaves), and every metric has one-sided
      derivative 0;
    * with two or more (:func:`ties_at_margin`), :math:`v(0^+)` shares the tie as
      :math:`e^{\omega_i}` where :math:`v(0)` shares it by room: the metrics jump at 0 and have
      no derivative (``None``).

    No re-solve is needed, so nothing depends on a solver coping with weights raised to the
    power :math:`1/\alpha` for a tiny ``alpha``.
    """
    base = _metrics(np.asarray(allocation.vouchers, dtype=np.float64), loss)
    jumps = ties_at_margin(problem, allocation)
    return {k: None if jumps or m is None else 0.0 for k, m in base.items()}


def _resolve_v(problem: AllocationProblem) -> np.ndarray:
    return np.asarray(resolve(problem).vouchers, dtype=np.float64)


def _at_alpha(
    problem: AllocationProblem, logw: np.ndarray, omega: np.ndarray, alpha: float
) -> AllocationProblem:
    r"""The problem at another ``alpha``, its weights moved along :math:`\omega`."""
    return replace(
        problem, alpha=alpha, weights=np.exp(logw + (alpha - float(problem.alpha)) * omega)
    )


def _alpha_steps(
    problem: AllocationProblem, logw: np.ndarray, omega: np.ndarray, step: float
) -> tuple[float, float]:
    """The two alphas of the finite difference: ``alpha -/+ step`` (not below 0).

    When the fast solver reaches ``alpha`` but not one of the two (the weights raised to
    :math:`1/\alpha` would underflow its coefficients), that side is ``alpha`` itself, a one-sided
    difference, rather than a conic solve of weights at the edge of overflow.
    """
    alpha = float(problem.alpha)
    lo_a, hi_a = max(alpha - step, 0.0), alpha + step
    if fast_reach(problem):
        if not fast_reach(_at_alpha(problem, logw, omega, lo_a)):
            lo_a = alpha
        if not fast_reach(_at_alpha(problem, logw, omega, hi_a)):
            hi_a = alpha
        if lo_a == hi_a:  # pragma: no cover - reached at alpha but at neither side
            lo_a, hi_a = max(alpha - step, 0.0), alpha + step
    return lo_a, hi_a


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
        Step of the central finite differences of the metrics (forward when ``alpha`` is below
        it; at ``alpha`` = 0 the alpha row is exact instead, :func:`linear_alpha_metrics`).

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
        lo_a, hi_a = _alpha_steps(problem, logw, omega, step)
        plus = _resolve_v(_at_alpha(problem, logw, omega, hi_a))
        minus = _resolve_v(_at_alpha(problem, logw, omega, lo_a))
        alpha_metrics = _fd_metrics(plus, minus, hi_a - lo_a, loss)
    else:
        dv, mean = np.zeros_like(v), np.zeros(2)
        alpha_metrics = linear_alpha_metrics(problem, allocation, loss)
    out.append(
        ParameterSensitivity(
            name=ALPHA,
            value=alpha,
            dv=dv,
            dlog_price=float(mean[1]),
            metrics=alpha_metrics,
            step=step,
        )
    )
    return WeightSensitivity(parameters=tuple(out), base_metrics=_metrics(v, loss))
