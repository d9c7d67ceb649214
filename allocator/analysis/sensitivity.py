r"""How the allocation moves with the budget, the weights, alpha and the eligibility thresholds.

The model (:mod:`allocator.kernel.problem`) is

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
    weights and in alpha (derivative 0) unless weights tie at the margin; the metrics' one-sided
    alpha derivatives there are exact (:func:`linear_alpha_metrics`), not re-solved.

Summary metrics (Gini, median coverage, top-decile share) are not smooth in the vouchers, so
their derivatives are central finite differences through re-solves of the fast solver (and the
alpha ones at ``alpha = 0`` are the exact one-sided derivatives).

Who moves
---------
:func:`budget_moves` lists every user's voucher now and at :math:`B \pm \delta`, re-solved and
rounded to cents exactly as a run at that budget is (so each row is what ``allocator allocate``
would pay), beside the linear prediction :math:`\delta\,\mathrm{d}v_i/\mathrm{d}B` and the bound
each voucher sits on. The prediction is exact while the active set holds; the users where it is
not are those who reach or leave a bound between the two budgets. :func:`top_movers` picks the
largest changes; :func:`write_moves` writes the list (``--users-out``).

Cliffs
------
:func:`cliff_analysis` counts the users just below the loss and loss-ratio thresholds and the
voucher paid just above them (the height of the cliff). The phase-in band
(``eligibility.phase_in_loss_usd`` / ``phase_in_ratio``) is the scenario option that smooths it:
eligibility then starts above the band's lower end, so that is where the cliff moves, and the
users inside each band (:class:`PhaseInBand`: how many, their loss, what they are paid, their
median phase factor) are reported too. The band's price (:func:`phase_in_price`) is the same
scenario with hard thresholds at the same budget: the band users are exactly those it makes
eligible (a phase factor below 1), and what they receive is what everyone else gives up when
the budget is paid in full.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from allocator import names as N
from allocator.analysis.metrics import LOSS_BANDS, gini, top_share
from allocator.errors import AllocatorError, InfeasibleError, InputError, ScenarioError
from allocator.jsonsafe import json_safe
from allocator.kernel.allocation import CAP, FLOOR, Allocation, bound_states
from allocator.kernel.fast import fast_reach
from allocator.kernel.feasibility import InvalidProblemError, segments_disjoint
from allocator.kernel.problem import AllocationProblem
from allocator.kernel.solve import solve
from allocator.runs.rundir import RunDir, load_run, refuse_output_in_run
from allocator.settings.models import EligibilityRules, Scenario

if TYPE_CHECKING:
    from allocator.vouchers.pipeline import DataSession, RunResult

__all__ = [
    "MAX_TOP_MOVERS",
    "MOVES_COLUMNS",
    "MOVE_TOL_USD",
    "TOP_MOVERS",
    "BudgetChange",
    "BudgetSensitivity",
    "CliffAnalysis",
    "ParameterSensitivity",
    "PhaseInBand",
    "PhaseInPrice",
    "SensitivityReport",
    "WeightSensitivity",
    "band_price",
    "budget_moves",
    "budget_sensitivity",
    "cliff_analysis",
    "groups",
    "linear_alpha_metrics",
    "moves_format",
    "phase_in_price",
    "run_sensitivity",
    "ties_at_margin",
    "top_movers",
    "weight_sensitivity",
    "without_phase_in",
    "write_moves",
]

#: A voucher "moves" when it changes by more than this (USD): one cent.
MOVE_TOL_USD = 0.01
#: A segment multiplier counts as binding above this fraction of the prices around it.
_BINDING_RTOL = 1e-9
#: Weights this close (relative) to a price tie at the margin of linear utility.
TIE_RTOL = 1e-9
#: Step of the central finite differences of the summary metrics.
METRIC_STEP = 1e-3
#: Name of the alpha parameter in :class:`WeightSensitivity`.
ALPHA = "alpha"


# ----------------------------------------------------------------------------------------------
# groups of the active set
# ----------------------------------------------------------------------------------------------


def _binding_shares(problem: AllocationProblem, allocation: Allocation) -> dict[int, float]:
    """Segment index -> its binding share (min or max), for the segments whose multiplier binds."""
    lam = float(allocation.shadow_price)
    out: dict[int, float] = {}
    for k, seg in enumerate(problem.segments):
        mu_min, mu_max = allocation.segment_prices.get(seg.name, (0.0, 0.0))
        scale = max(lam, mu_min, mu_max, np.finfo(float).tiny)
        if mu_min > _BINDING_RTOL * scale and seg.min_share is not None:
            out[k] = seg.min_share
        elif mu_max > _BINDING_RTOL * scale and seg.max_share is not None:
            out[k] = seg.max_share
    return out


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
    for k, share in _binding_shares(problem, allocation).items():
        members = np.asarray(problem.segments[k].members, dtype=bool)
        group[members & (group == 0)] = k + 1
        tau[k + 2] = share
        taken += share
    assert group.shape == (n,)
    budget_binds = problem.exhaust or lam > 0.0
    tau[1] = (1.0 - taken) if budget_binds else 0.0
    return group, tau


def ties_at_margin(problem: AllocationProblem, allocation: Allocation) -> bool:
    r"""Whether two users with room share a group's price as their weight (``alpha = 0``).

    Under linear utility a group's price is its marginal weight. Users whose weight equals it
    (relative :data:`TIE_RTOL`) and whose bounds leave room are *tied at the margin*: the fast
    solver shares what is left among them in proportion to their room, while for any
    :math:`\alpha > 0` they share it as :math:`v_i \propto e^{\omega_i}` (equal weights).
    With at most one such user per group the allocation does not change on a stretch
    :math:`[0, \alpha_0)`; with two or more it jumps as soon as ``alpha`` leaves 0.
    """
    lam = float(allocation.shadow_price)
    price = np.full(problem.n, lam)
    member = np.zeros(problem.n, dtype=np.int64)
    for k in _binding_shares(problem, allocation):
        seg = problem.segments[k]
        mu_min, mu_max = allocation.segment_prices.get(seg.name, (0.0, 0.0))
        mask = np.asarray(seg.members, dtype=bool)
        price[mask] = lam - mu_min + mu_max
        member[mask] = k + 1
    w = np.asarray(problem.weights, dtype=np.float64)
    room = np.asarray(problem.upper, dtype=np.float64) > np.asarray(problem.lower, dtype=np.float64)
    tied = room & (price > 0) & (np.abs(w - price) <= TIE_RTOL * price)
    return bool(np.any(np.bincount(member[tied], minlength=len(problem.segments) + 1) >= 2))


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
        return json_safe(out)


def _resolve(problem: AllocationProblem) -> Allocation:
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
            raise InfeasibleError(f"a budget of USD {budget:,.2f} is not positive")
        other = _resolve(replace(problem, budget=budget))
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
    value = lam
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


# ----------------------------------------------------------------------------------------------
# per-user moves
# ----------------------------------------------------------------------------------------------

#: Columns of :func:`budget_moves` (the ``--users-out`` file), in order.
MOVES_COLUMNS = (
    N.USER_ID,
    N.LOSS_USD,
    N.VOUCHER_CENTS,
    "voucher_up_cents",
    "voucher_down_cents",
    "change_up_cents",
    "change_down_cents",
    "dv_dbudget",
    "predicted_change_usd",
    N.BOUND,
    "bound_up",
    "bound_down",
)
#: Suffixes :func:`write_moves` accepts.
MOVES_FORMATS = (".parquet", ".csv")
#: Users listed as the largest movers in the text and JSON output.
TOP_MOVERS = 10
#: Most users ``top`` may ask for (every user's move is in ``--users-out``).
MAX_TOP_MOVERS = 1_000_000
_MOVES_PARQUET = {
    "compression": "zstd",
    "compression_level": 3,
    "statistics": True,
    "row_group_size": 262_144,
}


def _cents_and_bounds(
    problem: AllocationProblem,
    budget: float,
    v: np.ndarray,
    user_id: np.ndarray,
    loss: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """``v`` rounded as :func:`allocator.vouchers.pipeline.allocate` rounds a run, and the bound labels."""
    from allocator.kernel.rounding import bounds_to_cents, round_to_cents_by_segment
    from allocator.vouchers.pipeline import bound_labels

    cents, _ = round_to_cents_by_segment(
        v,
        problem.lower,
        problem.upper,
        budget,
        exhaust=problem.exhaust,
        loss=loss,
        user_id=user_id,
        segments=problem.segments,
    )
    lo_c, hi_c = bounds_to_cents(problem.lower, problem.upper)
    return cents.astype(np.int64), bound_labels(cents, lo_c, hi_c)


def budget_moves(
    problem: AllocationProblem,
    allocation: Allocation,
    sens: BudgetSensitivity,
    *,
    user_id: np.ndarray,
    loss: np.ndarray,
    cents: np.ndarray | None = None,
) -> pl.DataFrame:
    r"""Every user's voucher now and at :math:`B \pm \delta`, in paid cents, with the prediction.

    The re-solved optima of ``sens`` are rounded exactly as a run at that budget rounds them
    (:func:`allocator.kernel.rounding.round_to_cents_by_segment`, then the bound labels of
    ``allocations.parquet``), so ``voucher_up_cents`` is what ``allocator allocate`` pays at
    :math:`B + \delta` when it solves with the same method (the fast solver wherever it applies).

    Parameters
    ----------
    problem, allocation
        The problem and its optimal allocation (rows in ``user_id`` order).
    sens
        :func:`budget_sensitivity` of them.
    user_id, loss
        Per row: the user and the loss (the rounding's tie-breaks use both).
    cents
        The paid cents at :math:`B`; the allocation rounded the same way when omitted.

    Returns
    -------
    polars.DataFrame
        :data:`MOVES_COLUMNS`, one row per user in problem order: ``voucher_cents`` (now),
        ``voucher_up_cents`` / ``voucher_down_cents`` (null when that budget is infeasible),
        ``change_up_cents`` / ``change_down_cents`` against now, ``dv_dbudget``,
        ``predicted_change_usd`` (:math:`\delta\,\mathrm{d}v_i/\mathrm{d}B`, the linear
        prediction for :math:`+\delta`; for :math:`-\delta` it is the negative) and the
        bound (``floor``, ``interior``, ``cap``) of each voucher.
    """
    from allocator.kernel.rounding import bounds_to_cents
    from allocator.vouchers.pipeline import bound_labels

    user_id = np.asarray(user_id, dtype=np.int64)
    loss = np.asarray(loss, dtype=np.float64)
    if cents is None:
        now, bound = _cents_and_bounds(problem, problem.budget, allocation.vouchers, user_id, loss)
    else:
        now = np.asarray(cents, dtype=np.int64)
        bound = bound_labels(now, *bounds_to_cents(problem.lower, problem.upper))
    columns: dict[str, pl.Series] = {
        N.USER_ID: pl.Series(N.USER_ID, user_id, dtype=pl.Int64),
        N.LOSS_USD: pl.Series(N.LOSS_USD, loss, dtype=pl.Float64),
        N.VOUCHER_CENTS: pl.Series(N.VOUCHER_CENTS, now, dtype=pl.Int64),
    }
    sides = {}
    for side, v, change in (
        ("up", sens.vouchers_up, sens.up),
        ("down", sens.vouchers_down, sens.down),
    ):
        if v is None:
            sides[side] = (
                pl.Series([None] * len(now), dtype=pl.Int64),
                pl.Series([None] * len(now), dtype=pl.String),
            )
            continue
        c, b = _cents_and_bounds(problem, change.budget_usd, v, user_id, loss)
        sides[side] = (pl.Series(c, dtype=pl.Int64), pl.Series(b.tolist(), dtype=pl.String))
    columns["voucher_up_cents"] = sides["up"][0].alias("voucher_up_cents")
    columns["voucher_down_cents"] = sides["down"][0].alias("voucher_down_cents")
    frame = pl.DataFrame(columns).with_columns(
        (pl.col("voucher_up_cents") - pl.col(N.VOUCHER_CENTS)).alias("change_up_cents"),
        (pl.col("voucher_down_cents") - pl.col(N.VOUCHER_CENTS)).alias("change_down_cents"),
        pl.Series("dv_dbudget", sens.dv_dbudget, dtype=pl.Float64),
        pl.Series("predicted_change_usd", sens.dv_dbudget * sens.delta_usd, dtype=pl.Float64),
        pl.Series(N.BOUND, bound.tolist(), dtype=pl.String),
        sides["up"][1].alias("bound_up"),
        sides["down"][1].alias("bound_down"),
    )
    return frame.select(MOVES_COLUMNS)


def top_movers(moves: pl.DataFrame, k: int = TOP_MOVERS) -> pl.DataFrame:
    """The ``k`` users whose voucher moves most, by the larger of the two changes (an infeasible
    side counts as no change), ties by smaller user id."""
    size = pl.max_horizontal(
        pl.col("change_up_cents").abs().fill_null(0), pl.col("change_down_cents").abs().fill_null(0)
    )
    return (
        moves.with_columns(size.alias("_size"))
        .filter(pl.col("_size") > 0)
        .sort(["_size", N.USER_ID], descending=[True, False])
        .head(k)
        .drop("_size")
    )


def moves_format(path: str | Path) -> str:
    """``"parquet"`` or ``"csv"`` from the file name; an :class:`InputError` for anything else."""
    suffix = Path(path).suffix.lower()
    if suffix not in MOVES_FORMATS:
        raise InputError(
            f"the per-user file {path} must end in {' or '.join(MOVES_FORMATS)} (its format is "
            f"taken from the name), not {suffix or 'no suffix'!r}."
        )
    return suffix[1:]


def write_moves(moves: pl.DataFrame, path: str | Path) -> Path:
    """Write :func:`budget_moves` to ``path`` (parquet or CSV by suffix) atomically: a temporary
    file in the same folder, flushed, then renamed over the target, so a reader never sees half a
    file. The same frame always gives the same bytes (fixed row groups and compression, no
    timestamps).

    Raises
    ------
    InputError
        The suffix is neither ``.parquet`` nor ``.csv``, the path is in a run directory
        (:func:`allocator.runs.rundir.refuse_output_in_run`), or the folder cannot be written.
    """
    import os
    import tempfile

    path = Path(path)
    fmt = moves_format(path)
    refuse_output_in_run(path, "the per-user file")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    except OSError as exc:
        raise InputError(f"cannot write the per-user file {path}: {exc.strerror or exc}.") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            if fmt == "parquet":
                moves.rechunk().write_parquet(fh, **_MOVES_PARQUET)
            else:
                moves.write_csv(fh, line_terminator="\n")
            fh.flush()
            os.fsync(fh.fileno())
        # mkstemp makes the file private; it is an output like any other
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise InputError(f"cannot write the per-user file {path}: {exc.strerror or exc}.") from None
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


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
        lo_a = max(alpha - step, 0.0)
        hi_a = alpha + step
        plus = _resolve_v(
            replace(problem, alpha=hi_a, weights=np.exp(logw + (hi_a - alpha) * omega))
        )
        minus = _resolve_v(
            replace(problem, alpha=lo_a, weights=np.exp(logw + (lo_a - alpha) * omega))
        )
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


# ----------------------------------------------------------------------------------------------
# cliffs at the eligibility thresholds
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PhaseInBand:
    """The eligible users inside one phase-in band ``(lower, upper)`` (``rule`` ``"loss"`` in USD
    or ``"ratio"``): how many, their loss, what they are paid and their phase factors.

    ``phase_factor`` is the user's whole factor (both bands multiplied); ``in_both_bands``
    counts those of them inside the other band too.
    """

    rule: str
    lower: float
    upper: float
    users: int
    loss_usd: float
    paid_usd: float
    median_voucher_usd: float | None
    median_phase_factor: float | None
    in_both_bands: int

    def to_dict(self) -> dict[str, Any]:
        return json_safe({k: getattr(self, k) for k in self.__dataclass_fields__})

    def line(self) -> str:
        unit = " USD" if self.rule == "loss" else ""
        median = "-" if self.median_phase_factor is None else f"{self.median_phase_factor:.4f}"
        voucher = "-" if self.median_voucher_usd is None else f"{self.median_voucher_usd:,.2f}"
        return (
            f"{self.rule} phase-in band ({self.lower:g}, {self.upper:g}){unit}: {self.users:,} "
            f"eligible users, USD {self.loss_usd:,.2f} of loss, paid USD {self.paid_usd:,.2f} "
            f"(median voucher USD {voucher}, median phase factor {median}; "
            f"{self.in_both_bands:,} also in the other band)"
        )


@dataclass(frozen=True)
class CliffAnalysis:
    """Users just below the thresholds, and the voucher paid just above them.

    The cliff of a rule is where eligibility starts: ``min_loss_usd`` / ``min_loss_ratio`` under
    hard thresholds, and the lower end of the phase-in band when the rules have one (``loss >
    phase_in_loss_usd``); ``min_loss_usd`` and ``min_loss_ratio`` hold that position, and
    ``loss_phase_in`` / ``ratio_phase_in`` describe the band (``None`` without one). "Below" is
    ``[cliff - band, cliff)`` for a hard threshold and ``[cliff - band, cliff]`` for a band's
    lower end (reaching it is not enough); "above" is ``[cliff, cliff + band)``, resp.
    ``(cliff, cliff + band)``.

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
    loss_phase_in: PhaseInBand | None = None
    ratio_phase_in: PhaseInBand | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        for key in ("loss_phase_in", "ratio_phase_in"):
            band = out[key]
            out[key] = None if band is None else band.to_dict()
        return json_safe(out)

    def lines(self) -> list[str]:
        def usd(x: float | None) -> str:
            return "-" if x is None else f"{x:,.2f}"

        loss_b, ratio_b = self.loss_phase_in, self.ratio_phase_in
        lo_close, loss_name = (
            (")", "min loss") if loss_b is None else ("]", "the loss band's lower end")
        )
        r_close, ratio_name = (
            (")", "ratio") if ratio_b is None else ("]", "the ratio band's lower end")
        )
        out = [
            f"loss in [{self.min_loss_usd - self.loss_band_usd:g}, {self.min_loss_usd:g}{lo_close} "
            f"USD, excluded by {loss_name}: {self.below_loss_users:,} users, "
            f"USD {self.below_loss_total_usd:,.2f} (passing the ratio rule: "
            f"{self.below_loss_only_users:,}, USD {self.below_loss_only_total_usd:,.2f})",
            f"ratio in [{self.min_loss_ratio - self.ratio_band:g}, {self.min_loss_ratio:g}{r_close}, "
            f"excluded by {ratio_name}: {self.below_ratio_users:,} users, "
            f"USD {self.below_ratio_total_usd:,.2f}",
            f"median voucher just above {'min loss' if loss_b is None else 'the loss cliff'}: "
            f"USD {usd(self.voucher_above_loss_usd)} ({self.eligible_above_loss_users:,} users)",
            f"median voucher just above {'min ratio' if ratio_b is None else 'the ratio cliff'}: "
            f"USD {usd(self.voucher_above_ratio_usd)} ({self.eligible_above_ratio_users:,} users)",
        ]
        out += [b.line() for b in (loss_b, ratio_b) if b is not None]
        return out


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


def _vouchers_usd(allocations: pl.DataFrame) -> np.ndarray:
    if N.VOUCHER_CENTS in allocations.columns:
        return allocations[N.VOUCHER_CENTS].cast(pl.Float64).to_numpy() / 100.0
    if N.VOUCHER_USD in allocations.columns:
        return allocations[N.VOUCHER_USD].cast(pl.Float64).to_numpy()
    raise InputError("the allocations frame has neither voucher_cents nor voucher_usd.")


def _passes(x: np.ndarray, threshold: float, band_low: float | None) -> np.ndarray:
    """The rule of :mod:`allocator.vouchers.eligibility`: ``x >= threshold``, or ``x > band_low`` with a
    band (NaN, a missing value, never passes)."""
    with np.errstate(invalid="ignore"):
        return x >= threshold if band_low is None else x > band_low


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
        ``loss_ratio``, and ``phase_factor`` when the rules have a phase-in band.
    rules
        The eligibility rules (``min_loss_usd``, ``min_loss_ratio``, ``phase_in_loss_usd``,
        ``phase_in_ratio``).
    loss_band_usd, ratio_band
        Widths of the ranges below (and above) each cliff.
    bins
        Histogram bins on each side's full range ``[cliff - band, cliff + band)``.

    Returns
    -------
    CliffAnalysis
        Users excluded by min loss just below the loss cliff (and those of them whose ratio
        would pass), users excluded by ratio just below the ratio cliff, histograms, the median
        voucher of eligible users just above each cliff (the height of the cliff), and with a
        phase-in band, the eligible users inside it (:class:`PhaseInBand`). The cliff is the
        threshold, or the band's lower end (see :class:`CliffAnalysis`).
    """
    if not (loss_band_usd > 0 and ratio_band > 0 and bins >= 1):
        raise InvalidProblemError("loss_band_usd and ratio_band must be positive, bins >= 1")
    _need(excluded, (N.REASON, N.LOSS_USD, N.LOSS_RATIO), "excluded")
    _need(allocations, (N.LOSS_USD, N.LOSS_RATIO), "allocations")
    voucher = _vouchers_usd(allocations)
    p_loss, p_ratio = rules.phase_in_loss_usd, rules.phase_in_ratio
    if (p_loss is not None or p_ratio is not None) and allocations.height:
        _need(allocations, (N.PHASE_FACTOR,), "allocations")
    # where eligibility starts: the threshold, or the lower end of its band
    c_loss = float(rules.min_loss_usd if p_loss is None else p_loss)
    c_ratio = float(rules.min_loss_ratio if p_ratio is None else p_ratio)
    reason = excluded[N.REASON].to_numpy()
    x_loss = excluded[N.LOSS_USD].cast(pl.Float64).fill_null(np.nan).to_numpy()
    x_ratio = excluded[N.LOSS_RATIO].cast(pl.Float64).fill_null(np.nan).to_numpy()
    by_loss = reason == N.REASON_BELOW_MIN_LOSS
    by_ratio = reason == N.REASON_BELOW_LOSS_RATIO
    e_loss = allocations[N.LOSS_USD].cast(pl.Float64).to_numpy()
    e_ratio = allocations[N.LOSS_RATIO].cast(pl.Float64).to_numpy()
    with np.errstate(invalid="ignore"):
        # below the cliff is failing the rule: x < threshold, or x <= the band's lower end
        below_l = ~_passes(x_loss, c_loss, p_loss) & (x_loss >= c_loss - loss_band_usd)
        below_r = ~_passes(x_ratio, c_ratio, p_ratio) & (x_ratio >= c_ratio - ratio_band)
        near_loss = by_loss & below_l
        only_loss = near_loss & _passes(x_ratio, c_ratio, p_ratio)
        near_ratio = by_ratio & below_r
        above_loss = _passes(e_loss, c_loss, p_loss) & (e_loss < c_loss + loss_band_usd)
        above_ratio = _passes(e_ratio, c_ratio, p_ratio) & (e_ratio < c_ratio + ratio_band)

    def median(mask: np.ndarray) -> float | None:
        return float(np.median(voucher[mask])) if mask.any() else None

    bands: dict[str, PhaseInBand | None] = {"loss": None, "ratio": None}
    if p_loss is not None or p_ratio is not None:
        phi = (
            allocations[N.PHASE_FACTOR].cast(pl.Float64).to_numpy()
            if N.PHASE_FACTOR in allocations.columns
            else np.ones(allocations.height)  # only when there is nobody to pay
        )
        inside = {
            "loss": (e_loss < rules.min_loss_usd) if p_loss is not None else None,
            "ratio": (e_ratio < rules.min_loss_ratio) if p_ratio is not None else None,
        }
        for rule, low, high in (
            ("loss", p_loss, rules.min_loss_usd),
            ("ratio", p_ratio, rules.min_loss_ratio),
        ):
            mask = inside[rule]
            if low is None or mask is None:
                continue
            other = inside["ratio" if rule == "loss" else "loss"]
            bands[rule] = PhaseInBand(
                rule=rule,
                lower=float(low),
                upper=float(high),
                users=int(mask.sum()),
                loss_usd=float(e_loss[mask].sum()),
                paid_usd=float(voucher[mask].sum()),
                median_voucher_usd=median(mask),
                median_phase_factor=float(np.median(phi[mask])) if mask.any() else None,
                in_both_bands=int((mask & other).sum()) if other is not None else 0,
            )

    return CliffAnalysis(
        min_loss_usd=c_loss,
        min_loss_ratio=c_ratio,
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
            e_loss, x_loss[by_loss], c_loss - loss_band_usd, c_loss + loss_band_usd, 2 * bins
        ),
        ratio_hist=_hist(
            e_ratio, x_ratio[by_ratio], c_ratio - ratio_band, c_ratio + ratio_band, 2 * bins
        ),
        loss_phase_in=bands["loss"],
        ratio_phase_in=bands["ratio"],
    )


# ----------------------------------------------------------------------------------------------
# the price of a phase-in band
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PhaseInPrice:
    """What a phase-in band costs everyone else: the scenario with its band against the same
    scenario with hard thresholds, at the same budget (:func:`phase_in_price`).

    *Band users* are those the band makes eligible (eligible with it, not without it): exactly
    the users with a phase factor below 1. *Others* are eligible either way; their totals,
    median coverage (voucher / loss) and per-user changes compare the two runs' paid cents.
    """

    budget_usd: float
    band_users: int
    band_loss_usd: float
    band_paid_usd: float
    band_median_voucher_usd: float | None
    others_users: int
    others_paid_without_band_usd: float
    others_paid_with_band_usd: float
    others_change_usd: float
    others_median_coverage_without_band: float | None
    others_median_coverage_with_band: float | None
    others_down: int
    others_up: int
    others_median_change_usd: float | None
    others_max_decrease_usd: float
    shadow_price_without_band: float | None = None
    shadow_price_with_band: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return json_safe({k: getattr(self, k) for k in self.__dataclass_fields__})

    def lines(self) -> list[str]:
        def pct(x: float | None) -> str:
            return "-" if x is None else f"{100 * x:.2f}%"

        median = (
            "-" if self.band_median_voucher_usd is None else f"{self.band_median_voucher_usd:,.2f}"
        )
        change = (
            "-"
            if self.others_median_change_usd is None
            else f"{self.others_median_change_usd:+,.2f}"
        )
        return [
            f"price of the phase-in band (the same scenario with hard thresholds, same budget "
            f"USD {self.budget_usd:,.2f}):",
            f"  band users (eligible only with the band): {self.band_users:,}, USD "
            f"{self.band_loss_usd:,.2f} of loss, paid USD {self.band_paid_usd:,.2f} (median "
            f"voucher USD {median})",
            f"  everyone else ({self.others_users:,} users): paid USD "
            f"{self.others_paid_without_band_usd:,.2f} without the band, USD "
            f"{self.others_paid_with_band_usd:,.2f} with it ({self.others_change_usd:+,.2f}); "
            f"median coverage {pct(self.others_median_coverage_without_band)} -> "
            f"{pct(self.others_median_coverage_with_band)}",
            f"  {self.others_down:,} of them receive less, {self.others_up:,} more; median change "
            f"USD {change}, largest decrease USD {self.others_max_decrease_usd:,.2f}",
        ]


def _median(x: np.ndarray) -> float | None:
    return float(np.median(x)) if x.size else None


def band_price(
    with_band: pl.DataFrame,
    without_band: pl.DataFrame,
    *,
    budget_usd: float,
    shadow_prices: tuple[float, float] | None = None,
) -> PhaseInPrice:
    """:class:`PhaseInPrice` from the allocations of the two runs (``user_id``,
    ``voucher_cents``, ``loss_usd``).

    Parameters
    ----------
    with_band, without_band
        ``allocations.parquet`` of the scenario with its phase-in band, and of the same scenario
        with hard thresholds, at the same budget.
    budget_usd
        That budget, reported as is.
    shadow_prices
        ``(with band, without band)``, reported as is.

    Raises
    ------
    InputError
        A frame lacks a column, or a user eligible under the hard thresholds is not eligible with
        the band (a band only widens eligibility, so the two frames are not such a pair).
    """
    cols = (N.USER_ID, N.VOUCHER_CENTS, N.LOSS_USD)
    _need(with_band, cols, "with-band allocations")
    _need(without_band, cols, "without-band allocations")
    hard = without_band.select(N.USER_ID, pl.col(N.VOUCHER_CENTS).alias("_hard"))
    lost = hard.join(with_band.select(N.USER_ID), on=N.USER_ID, how="anti")
    if lost.height:
        raise InputError(
            f"{lost.height:,} user(s) eligible under the hard thresholds are not eligible with the "
            f"band (e.g. user {lost[N.USER_ID][0]}); these are not the same scenario with and "
            f"without a phase-in band."
        )
    joined = with_band.select(cols).join(hard, on=N.USER_ID, how="left")
    band = joined.filter(pl.col("_hard").is_null())
    others = joined.filter(pl.col("_hard").is_not_null())
    now = others[N.VOUCHER_CENTS].to_numpy().astype(np.int64)
    before = others["_hard"].to_numpy().astype(np.int64)
    loss = others[N.LOSS_USD].cast(pl.Float64).to_numpy()
    change = now - before
    pos = loss > 0
    return PhaseInPrice(
        budget_usd=float(budget_usd),
        band_users=band.height,
        band_loss_usd=float(band[N.LOSS_USD].sum()),
        band_paid_usd=int(band[N.VOUCHER_CENTS].sum()) / 100,
        band_median_voucher_usd=_median(band[N.VOUCHER_CENTS].to_numpy() / 100.0),
        others_users=others.height,
        others_paid_without_band_usd=int(before.sum()) / 100,
        others_paid_with_band_usd=int(now.sum()) / 100,
        others_change_usd=int(change.sum()) / 100,
        others_median_coverage_without_band=_median(before[pos] / 100.0 / loss[pos]),
        others_median_coverage_with_band=_median(now[pos] / 100.0 / loss[pos]),
        others_down=int((change < 0).sum()),
        others_up=int((change > 0).sum()),
        others_median_change_usd=_median(change / 100.0),
        others_max_decrease_usd=float(max(0, -int(change.min()))) / 100 if change.size else 0.0,
        shadow_price_with_band=None if shadow_prices is None else float(shadow_prices[0]),
        shadow_price_without_band=None if shadow_prices is None else float(shadow_prices[1]),
    )


def without_phase_in(scenario: Scenario) -> Scenario:
    """The same scenario with hard thresholds: both phase-in bands removed, nothing else changed."""
    rules = replace(scenario.eligibility, phase_in_loss_usd=None, phase_in_ratio=None)
    return replace(scenario, eligibility=rules)


def phase_in_price(
    session: DataSession, scenario: Scenario, *, with_band: RunResult | None = None
) -> PhaseInPrice:
    """The price of the scenario's phase-in band: :func:`band_price` of the scenario against
    :func:`without_phase_in` of it, both allocated on ``session`` at the scenario's budget.

    Parameters
    ----------
    session
        The data, loaded once (:class:`allocator.vouchers.pipeline.DataSession`).
    scenario
        A scenario with a phase-in band.
    with_band
        The scenario's run on ``session``, when already computed (it is not re-solved).

    Raises
    ------
    ScenarioError
        The scenario has no phase-in band.
    InfeasibleError
        The scenario without the band cannot pay its budget (e.g. exhaust mode with too few users
        left eligible), or the errors of :func:`allocator.vouchers.pipeline.allocate`.
    """
    from allocator.vouchers.eligibility import has_phase_in
    from allocator.vouchers.pipeline import allocate

    if not has_phase_in(scenario.eligibility):
        raise ScenarioError(
            f"scenario {scenario.name!r} has no phase-in band (eligibility.phase_in_loss_usd or "
            f"phase_in_ratio), so it has no price to compare."
        )
    if with_band is None:
        with_band = allocate(session, scenario, with_payouts=False)
    hard = allocate(session, without_phase_in(scenario), with_payouts=False)
    return band_price(
        with_band.allocations,
        hard.allocations,
        budget_usd=float(scenario.budget.total_usd),
        shadow_prices=(with_band.allocation.shadow_price, hard.allocation.shadow_price),
    )


# ----------------------------------------------------------------------------------------------
# a run directory, end to end
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class SensitivityReport:
    r"""Budget, weight/alpha and cliff sensitivities of one run directory.

    ``moves`` is :func:`budget_moves` (every user's voucher now and at :math:`B \pm \delta`);
    the text and JSON show its :func:`top_movers`. ``phase_in_price`` is set when the run's rules
    have a phase-in band. ``notes`` say where the re-solve differs from the run directory.
    """

    run_dir: str
    scenario: str
    eligible: int
    budget: BudgetSensitivity
    weights: WeightSensitivity
    cliff: CliffAnalysis
    moves: pl.DataFrame | None = None
    phase_in_price: PhaseInPrice | None = None
    notes: tuple[str, ...] = ()
    top: int = TOP_MOVERS

    def top_movers(self) -> pl.DataFrame | None:
        return None if self.moves is None else top_movers(self.moves, self.top)

    def to_dict(self) -> dict[str, Any]:
        movers = self.top_movers()
        return json_safe(
            {
                "run_dir": self.run_dir,
                "scenario": self.scenario,
                "eligible": self.eligible,
                "budget": self.budget.to_dict(),
                "top_movers": None if movers is None else movers.to_dicts(),
                "weights": self.weights.to_dict(),
                "cliff": self.cliff.to_dict(),
                "phase_in_price": (
                    None if self.phase_in_price is None else self.phase_in_price.to_dict()
                ),
                "notes": list(self.notes),
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
        ]
        out += _movers_lines(self.top_movers(), b.delta_usd)
        out.append("weights (d metric / d parameter, finite differences):")
        for p in self.weights.parameters:
            m = ", ".join(f"{k} {'-' if v is None else f'{v:+.4g}'}" for k, v in p.metrics.items())
            out.append(f"  {p.name} = {p.value:g}: {m}; sum |dv| {np.abs(p.dv).sum():,.2f} USD")
        out.append("cliffs:")
        out += [f"  {line}" for line in self.cliff.lines()]
        if self.phase_in_price is not None:
            out += self.phase_in_price.lines()
        out += [f"note: {n}" for n in self.notes]
        return out


def _cents(c: int | None, *, sign: bool = False) -> str:
    if c is None:
        return "-"
    text = f"{abs(c) // 100:,}.{abs(c) % 100:02d}"
    return ("-" if c < 0 else "+" if sign else "") + text


def _movers_lines(movers: pl.DataFrame | None, delta: float) -> list[str]:
    if movers is None:
        return []
    if movers.height == 0:
        return [f"largest movers for +/- {delta:,.0f} USD: no voucher moves by a cent"]
    out = [
        f"largest movers for +/- {delta:,.0f} USD (paid cents, re-solved and rounded at each budget):",
        f"  {'user_id':>10} {'loss USD':>14} {'now':>12} {'+ delta':>12} {'- delta':>12} "
        f"{'predicted':>12}  bound",
    ]
    for r in movers.iter_rows(named=True):
        out.append(
            f"  {r[N.USER_ID]:>10} {r[N.LOSS_USD]:>14,.2f} {_cents(r[N.VOUCHER_CENTS]):>12} "
            f"{_cents(r['change_up_cents'], sign=True):>12} "
            f"{_cents(r['change_down_cents'], sign=True):>12} "
            f"{r['predicted_change_usd']:>+12,.2f}  {r[N.BOUND]} -> {r['bound_up'] or '-'} / "
            f"{r['bound_down'] or '-'}"
        )
    return out


def _features_log(
    features: pl.DataFrame, scenario: Any
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
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


def _paid_cents(run: RunDir, user_id: np.ndarray, cents: np.ndarray) -> str | None:
    """A note when the re-solve does not pay what ``allocations.parquet`` says (or ``None``)."""
    path = run.path / N.ALLOCATIONS_FILE
    written = run.allocations
    same_users = written.height == user_id.shape[0] and bool(
        np.array_equal(written[N.USER_ID].to_numpy(), user_id)
    )
    if not same_users:
        return (
            f"the re-solve's {user_id.shape[0]:,} eligible users are not the {written.height:,} of "
            f"{path}; vouchers 'now' are the re-solve's"
        )
    differ = int((written[N.VOUCHER_CENTS].to_numpy() != cents).sum())
    if differ:
        return (
            f"re-solving the run pays {differ:,} user(s) differently from {path} (another solver "
            f"or version); vouchers 'now' are the re-solve's"
        )
    return None


def _open_session(run: RunDir) -> DataSession:
    """The run's data directory, loaded; refused unless it reads the very files the run used."""
    from allocator.vouchers.pipeline import DataSession

    assert run.data_dir is not None  # load_run(inputs=True) verified them
    session = DataSession.open(run.data_dir)
    for stem, path in session.inputs.paths.items():
        used = Path(run.manifest["inputs"][stem]["path"])
        if Path(path).resolve() != used.resolve():
            raise InputError(
                f"the data directory {run.data_dir} now reads the {stem} table from {path}, not "
                f"from the run's {used}; the inputs changed since the run.",
                hint="restore the data the run used, or re-run the scenario on the current data.",
            )
    return session


def run_sensitivity(
    run_dir: str | Path, *, delta_usd: float = 1e6, top: int = TOP_MOVERS
) -> SensitivityReport:
    r"""Rebuild a run from its manifest and compute its budget, weight/alpha and cliff sensitivities.

    The scenario is the manifest's resolved scenario and the data the files it names; the run is
    re-solved (``allocate(..., with_payouts=False)``, with the solver the run used) rather than
    read back, because the derivatives need the continuous optimum and its prices. Every user's
    voucher at :math:`B \pm \delta` is re-solved and rounded to cents (:func:`budget_moves`);
    with a phase-in band the same scenario is also allocated with hard thresholds
    (:func:`phase_in_price`). The run directory and the input files are verified first
    (:func:`allocator.runs.rundir.load_run`): the re-solve must be on the data the run used.

    Parameters
    ----------
    run_dir
        A run directory written by ``allocator allocate``.
    delta_usd
        :math:`\delta`, the budget change of the exact re-solves.
    top
        How many of the largest movers the text and JSON list, 0 to :data:`MAX_TOP_MOVERS`.

    Raises
    ------
    InputError
        ``top`` is outside 0 to :data:`MAX_TOP_MOVERS`; the run directory is damaged or changed
        since the run, or its input files are gone or changed (:func:`allocator.runs.rundir.load_run`:
        a re-solve on other data would not be this run's sensitivities).
    """
    with np.errstate(over="ignore", invalid="ignore"):
        # The alpha derivative's re-solves at a small alpha > 0 may overflow exp() in the
        # solver's scale guess (clipped to the bounds right after, on purpose), and cvxpy
        # evaluates the utility v^(1 - alpha) at iterates a rounding error below zero (NaN, an
        # objective value nothing reads: the certificate judges the answer). Only the tool's own
        # messages go to stderr.
        return _run_sensitivity(Path(run_dir), delta_usd=delta_usd, top=top)


def _run_sensitivity(run_dir: Path, *, delta_usd: float, top: int) -> SensitivityReport:
    """:func:`run_sensitivity` without the floating-point error state."""
    from allocator.vouchers.eligibility import has_phase_in
    from allocator.vouchers.pipeline import allocate

    if not 0 <= top <= MAX_TOP_MOVERS:
        raise InputError(f"top must be 0 to {MAX_TOP_MOVERS:,} movers, not {top}.")
    written = load_run(run_dir, inputs=True)
    scenario = written.scenario
    session = _open_session(written)
    solver = written.manifest.get("solver")
    used = solver.get("used") if isinstance(solver, Mapping) else None
    run = allocate(
        session, scenario, solver=used if used in ("fast", "cvxpy") else None, with_payouts=False
    )
    features = run.eligibility.eligible
    loss = features[N.LOSS_USD].cast(pl.Float64).to_numpy()
    user_id = features[N.USER_ID].to_numpy()
    budget = budget_sensitivity(run.problem, run.allocation, delta_usd=delta_usd, loss=loss)
    moves = budget_moves(
        run.problem, run.allocation, budget, user_id=user_id, loss=loss, cents=run.cents
    )
    logs, values = _features_log(features, scenario)
    omega = None
    if scenario.objective.form == "coverage" and np.all(loss > 0):
        omega = np.log(loss)
    weights = weight_sensitivity(
        run.problem, run.allocation, logs, values=values, alpha_log_weight=omega, loss=loss
    )
    cliff = cliff_analysis(run.eligibility.excluded, run.allocations, scenario.eligibility)
    price = None
    if has_phase_in(scenario.eligibility):
        price = phase_in_price(session, scenario, with_band=run)
    note = _paid_cents(written, user_id, run.cents)
    return SensitivityReport(
        run_dir=str(run_dir),
        scenario=scenario.name,
        eligible=features.height,
        budget=budget,
        weights=weights,
        cliff=cliff,
        moves=moves,
        phase_in_price=price,
        notes=() if note is None else (note,),
        top=top,
    )
