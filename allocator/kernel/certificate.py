r"""Optimality certificates for the weighted alpha-fairness allocation problem.

The problem (see :mod:`allocator.kernel.problem`) is

.. math::

    \max_v \sum_i w_i u_\alpha(v_i)\quad\text{s.t.}\quad \ell_i \le v_i \le h_i,\quad
    \sum_i v_i \le B \;(= B \text{ in exhaust mode}),\quad
    m_s B \le \sum_{i\in S_s} v_i \le M_s B .

With a budget multiplier :math:`\lambda` (the shadow price: weighted fairness gained per extra
dollar) and segment multipliers :math:`\mu_s^{\min}, \mu_s^{\max} \ge 0`, user :math:`i` faces
the effective price

.. math::

    \lambda_i = \lambda + \sum_{s \ni i} \left(\mu_s^{\max} - \mu_s^{\min}\right),

and the KKT conditions read, with marginal utility
:math:`g_i(v) = w_i u_\alpha'(v) = w_i v^{-\alpha}`:

* interior users (:math:`\ell_i < v_i < h_i`): :math:`g_i(v_i) = \lambda_i`;
* floor users (:math:`v_i = \ell_i`): :math:`g_i(v_i) \le \lambda_i`;
* cap users (:math:`v_i = h_i`): :math:`g_i(v_i) \ge \lambda_i`;
* primal feasibility, :math:`\mu \ge 0` (and :math:`\lambda \ge 0` unless exhaust mode), and
  complementary slackness.

The first three are tested on the ratio :math:`g_i(v_i)/\lambda_i = (v_i^\star/v_i)^\alpha`
to the relative tolerance :math:`\tau \max(1, \alpha)`, which is :math:`\tau` on the voucher
itself whatever :math:`\alpha`.

The Lagrangian dual function has a closed form because the Lagrangian separates by user:

.. math::

    D(\lambda,\mu) = \sum_i \max_{\ell_i\le v\le h_i}\big(w_i u_\alpha(v) - \lambda_i v\big)
        + \lambda B + \sum_s \left(\mu_s^{\max} M_s - \mu_s^{\min} m_s\right) B,

maximised by the best response :math:`v_i^\star = \operatorname{clip}((w_i/\lambda_i)^{1/\alpha},
\ell_i, h_i)`. Weak duality gives :math:`D \ge P` for every feasible :math:`v`; the gap
:math:`D - P` is computed user by user (each term is :math:`\ge 0`) so that it does not cancel
catastrophically at a million users.

:func:`certify` checks all of it and also works on vouchers rounded to cents
(``rounded=True``), where the stationarity test is replaced by "every voucher lies within one
cent of its best response at the given prices".
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from allocator.kernel.certificate_terms import UserSums, in_blocks, user_sums, utility
from allocator.kernel.problem import AllocationProblem

__all__ = [
    "CENT",
    "DEFAULT_FEAS_TOL_USD",
    "DEFAULT_TOL",
    "Certificate",
    "best_response",
    "certify",
    "effective_prices",
    "objective_value",
    "utility",
]

#: Default relative tolerance for stationarity, sign conditions and the duality gap.
DEFAULT_TOL = 1e-6
#: Default absolute tolerance (USD) for bounds, budget and segment totals of unrounded vouchers.
DEFAULT_FEAS_TOL_USD = 1e-3
#: One cent: how far a rounded voucher may sit from its best response.
CENT = 0.01


def objective_value(problem: AllocationProblem, vouchers: np.ndarray) -> float:
    r"""The objective :math:`\sum_i w_i u_\alpha(v_i)`, recomputed with numpy."""
    w = np.asarray(problem.weights, dtype=np.float64)
    return float(np.dot(w, utility(vouchers, float(problem.alpha))))


def effective_prices(
    problem: AllocationProblem,
    shadow_price: float,
    segment_prices: Mapping[str, tuple[float, float]] | None,
) -> np.ndarray:
    r"""Per-user price :math:`\lambda_i = \lambda + \sum_{s\ni i}(\mu^{\max}_s - \mu^{\min}_s)`."""
    lam = np.full(problem.n, float(shadow_price))
    for seg in problem.segments:
        mu_min, mu_max = _segment_mu(segment_prices, seg.name)
        if mu_max - mu_min != 0.0:
            lam += (mu_max - mu_min) * np.asarray(seg.members, dtype=bool)
    return lam


def best_response(
    weights: np.ndarray, lower: np.ndarray, upper: np.ndarray, alpha: float, prices: np.ndarray
) -> np.ndarray:
    r"""The maximiser of :math:`w u_\alpha(v) - \lambda_i v` over :math:`[\ell_i, h_i]`.

    :math:`\operatorname{clip}((w_i/\lambda_i)^{1/\alpha}, \ell_i, h_i)` for ``alpha > 0``
    (``h_i`` when :math:`\lambda_i \le 0`); for ``alpha == 0`` the upper bound when
    :math:`w_i > \lambda_i`, the lower bound when :math:`w_i < \lambda_i` and ``nan`` on a tie
    (any point of the box is a maximiser; the caller keeps its own value).
    """
    w = np.asarray(weights, dtype=np.float64)
    lo = np.asarray(lower, dtype=np.float64)
    hi = np.asarray(upper, dtype=np.float64)
    lam = np.asarray(prices, dtype=np.float64)
    if alpha == 0.0:
        out = np.where(w > lam, hi, lo)
        out[w == lam] = np.nan
        return out
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        ratio = w / lam
        if alpha == 1.0:
            raw = ratio
        elif alpha == 2.0:
            raw = np.sqrt(ratio)
        elif alpha == 0.5:
            raw = ratio * ratio
        else:
            raw = np.exp(np.log(ratio) * (1.0 / alpha))
    raw = np.where(lam > 0.0, raw, np.inf)
    np.maximum(raw, lo, out=raw)
    np.minimum(raw, hi, out=raw)
    return raw


@dataclass(frozen=True)
class Certificate:
    r"""What was checked about a voucher vector and whether it holds within tolerance.

    Attributes
    ----------
    certified
        Every check below holds within tolerance.
    failures
        One plain sentence per failed check (empty when certified).
    objective, dual_value
        :math:`P = \sum_i w_i u_\alpha(v_i)` and the dual function :math:`D(\lambda,\mu)`.
    duality_gap, duality_gap_rel
        :math:`D - P` and :math:`(D-P)/\max(|P|, \lambda B)`.
    shadow_price, segment_prices
        The multipliers that were certified (USD prices: fairness per dollar).
    spent, budget
        :math:`\sum_i v_i` and :math:`B` (USD).
    budget_violation, bound_violation, segment_violation
        Largest primal violations (USD).
    n_floor, n_interior, n_cap
        Users classified at their floor, strictly inside, at their cap.
    stationarity_max
        Largest :math:`|g_i(v_i) - \lambda_i| / \lambda_i` over interior users.
    floor_wrong_sign, floor_wrong_sign_max
        Floor users with :math:`g_i(v_i) > \lambda_i (1 + \text{tol} \max(1, \alpha))`, and the largest
        relative excess.
    cap_wrong_sign, cap_wrong_sign_max
        Cap users with :math:`g_i(v_i) < \lambda_i (1 - \text{tol} \max(1, \alpha))`, and the largest relative
        shortfall.
    dual_infeasibility
        Largest negative part of a multiplier that must be non-negative.
    best_response_max_usd
        :math:`\max_i |v_i - v_i^\star|` (USD): distance to the best response at the prices.
    rounded
        Checked as rounded vouchers (cents): the best-response distance replaces stationarity.
    tol, feas_tol_usd, bound_tol_usd
        Tolerances used (relative; USD for constraints; USD for the floor/cap classification).
    """

    certified: bool
    failures: tuple[str, ...]
    objective: float
    dual_value: float
    duality_gap: float
    duality_gap_rel: float
    shadow_price: float
    segment_prices: Mapping[str, tuple[float, float]]
    spent: float
    budget: float
    budget_violation: float
    bound_violation: float
    segment_violation: float
    n_floor: int
    n_interior: int
    n_cap: int
    stationarity_max: float
    floor_wrong_sign: int
    floor_wrong_sign_max: float
    cap_wrong_sign: int
    cap_wrong_sign_max: float
    dual_infeasibility: float
    best_response_max_usd: float
    rounded: bool
    tol: float
    feas_tol_usd: float
    bound_tol_usd: float
    n: int = field(default=0)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (non-finite floats become ``None``; tuples become lists)."""
        out: dict[str, Any] = {}
        for key in self.__dataclass_fields__:
            value = getattr(self, key)
            if key == "segment_prices":
                out[key] = {str(k): [_json_float(a) for a in v] for k, v in sorted(value.items())}
            elif key == "failures":
                out[key] = list(value)
            elif isinstance(value, (bool, np.bool_)):
                out[key] = bool(value)
            elif isinstance(value, (int, np.integer)):
                out[key] = int(value)
            else:
                out[key] = _json_float(value)
        return out


def _json_float(x: float) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _segment_mu(
    segment_prices: Mapping[str, tuple[float, float]] | None, name: str
) -> tuple[float, float]:
    if not segment_prices or name not in segment_prices:
        return 0.0, 0.0
    mu_min, mu_max = segment_prices[name]
    return float(mu_min), float(mu_max)


def _mean_size(v: np.ndarray) -> float:
    """The mean of ``|v|`` (``inf`` unless every entry is finite): two reductions when no entry
    is negative, which is the rule (the same sum as ``np.mean``, so the same float)."""
    total = float(np.add.reduce(v))
    if math.isfinite(total) and v.min() >= 0.0:
        return total / v.shape[0]
    return float(np.mean(np.abs(v))) if np.all(np.isfinite(v)) else math.inf


def certify(
    problem: AllocationProblem,
    vouchers: np.ndarray,
    shadow_price: float,
    segment_prices: Mapping[str, tuple[float, float]] | None = None,
    *,
    tol: float = DEFAULT_TOL,
    rounded: bool = False,
    report_gap: bool = True,
    feas_tol_usd: float | None = None,
    bound_tol_usd: float | None = None,
) -> Certificate:
    r"""Check optimality of ``vouchers`` for ``problem`` at the given multipliers.

    Parameters
    ----------
    problem
        The allocation problem.
    vouchers
        Voucher amounts (USD), length ``n``; e.g. ``cents / 100`` for a paid allocation.
    shadow_price
        Budget multiplier :math:`\lambda` (0 when the budget is slack).
    segment_prices
        ``{segment name: (mu_min, mu_max)}``; missing segments count as ``(0, 0)``.
    tol
        Relative tolerance for stationarity, the sign conditions and the duality gap.
    rounded
        The vouchers are rounded to cents: classification at bounds within one cent, bounds
        must hold exactly (to 1e-9 USD), the budget to one cent, a segment total to one cent
        per member, and every voucher must lie within one cent of its best response; the
        duality gap (second order in the rounding) is reported, not tested.
    report_gap
        With ``rounded``, ``False`` leaves the reported-only duality gap out (NaN): a caller
        that shows the paid amounts and writes no run (the studio's page) saves a third of the
        time; every test of the certificate still runs. Unrounded vouchers always have it.
    feas_tol_usd
        Absolute tolerance (USD) on bound, budget and segment violations of unrounded vouchers
        (default :data:`DEFAULT_FEAS_TOL_USD`, or ``1e-12 B`` if larger).
    bound_tol_usd
        A user within this many USD of a bound is classified at that bound (default
        ``tol * max(1, min(B/n, mean |v|))`` unrounded, one cent rounded).

    Returns
    -------
    Certificate
        ``certified`` is true when every check holds; ``failures`` says which did not.
    """
    n = problem.n
    alpha = float(problem.alpha)
    budget = float(problem.budget)
    w = np.asarray(problem.weights, dtype=np.float64)
    lo = np.asarray(problem.lower, dtype=np.float64)
    hi = np.asarray(problem.upper, dtype=np.float64)
    v = np.asarray(vouchers, dtype=np.float64)
    lam = float(shadow_price)
    if v.shape != (n,):
        raise ValueError(f"vouchers must have shape ({n},), got {v.shape}")
    seg_prices = {seg.name: _segment_mu(segment_prices, seg.name) for seg in problem.segments}
    if rounded:
        feas = 1e-9 if feas_tol_usd is None else float(feas_tol_usd)
        btol = CENT if bound_tol_usd is None else float(bound_tol_usd)
        budget_tol = CENT
    else:
        feas = (
            max(DEFAULT_FEAS_TOL_USD, 1e-12 * budget)
            if feas_tol_usd is None
            else float(feas_tol_usd)
        )
        # the scale of a voucher: B / n, unless the budget is slack (B = 1e13 with everyone at
        # a USD 6,000 cap would make every voucher "at its floor" within B / n * tol)
        typical = budget / max(n, 1)
        if n:
            typical = min(typical, _mean_size(v))
        btol = tol * max(1.0, typical) if bound_tol_usd is None else float(bound_tol_usd)
        budget_tol = feas
    failures: list[str] = []
    # The marginal ratio is (v* / v)^alpha: a voucher within relative tol of its best response
    # moves it by alpha * tol. Judging it against tol * max(1, alpha) tests the voucher itself to
    # relative tol, at any alpha (at alpha = 100 float error alone makes the ratio ~1e-6 off).
    ratio_tol = tol * max(1.0, alpha)
    members = [np.asarray(seg.members, dtype=bool) for seg in problem.segments]
    shifts = [seg_prices[seg.name][1] - seg_prices[seg.name][0] for seg in problem.segments]
    with_gap = not (rounded and not report_gap)

    def part(at: slice) -> UserSums:
        return user_sums(
            w[at], v[at], lo[at], hi[at], [m[at] for m in members], lam, shifts,
            alpha=alpha, btol=btol, tie_tol=tol, ratio_tol=ratio_tol, with_gap=with_gap,
        )  # fmt: skip

    sums = in_blocks(n, part)

    finite = sums.not_finite == 0
    if not finite:
        failures.append(f"{sums.not_finite} vouchers are not finite numbers")

    # --- primal feasibility (USD) ---
    bound_violation = sums.bound_violation
    if not bound_violation <= feas:
        failures.append(f"a voucher is outside its bounds by {bound_violation:.6g} USD")
    spent = sums.spent
    excess = spent - budget
    budget_violation = abs(excess) if problem.exhaust else max(excess, 0.0)
    if not budget_violation <= budget_tol:
        failures.append(
            f"vouchers add up to {spent:.2f} USD against a budget of {budget:.2f} USD "
            f"({'must be spent exactly' if problem.exhaust else 'must not be exceeded'})"
        )
    segment_violation = 0.0
    seg_totals: dict[str, float] = {}
    for k, seg in enumerate(problem.segments):
        total = sums.segment_totals[k]
        seg_totals[seg.name] = total
        viol = 0.0
        if seg.min_share is not None:
            viol = max(viol, seg.min_share * budget - total)
        if seg.max_share is not None:
            viol = max(viol, total - seg.max_share * budget)
        seg_tol = CENT * int(members[k].sum()) if rounded else feas
        if viol > seg_tol:
            failures.append(f"segment {seg.name!r} misses its share by {viol:.6g} USD")
        segment_violation = max(segment_violation, viol)

    # --- dual feasibility ---
    negatives = [mu for pair in seg_prices.values() for mu in pair]
    if not problem.exhaust:
        negatives.append(lam)
    dual_infeasibility = float(max([0.0] + [-x for x in negatives]))
    for seg in problem.segments:
        mu_min, mu_max = seg_prices[seg.name]
        if seg.min_share is None and mu_min != 0.0:
            dual_infeasibility = max(dual_infeasibility, abs(mu_min))
        if seg.max_share is None and mu_max != 0.0:
            dual_infeasibility = max(dual_infeasibility, abs(mu_max))
    price_scale = max(abs(lam), max((abs(x) for x in negatives), default=0.0), 1e-300)
    if dual_infeasibility > tol * price_scale:
        failures.append(f"a multiplier has the wrong sign (by {dual_infeasibility:.3g})")

    # --- stationarity and sign conditions (summed user by user above) ---
    stationarity_max = sums.stationarity_max
    floor_wrong, cap_wrong = sums.floor_wrong, sums.cap_wrong
    floor_wrong_max = max(sums.floor_excess_max, 0.0) if floor_wrong else 0.0
    cap_wrong_max = max(sums.cap_short_max, 0.0) if cap_wrong else 0.0
    best_response_max = sums.best_response_max if finite else math.inf

    if rounded:
        if not best_response_max <= CENT + DEFAULT_FEAS_TOL_USD:
            failures.append(
                f"a voucher lies {best_response_max:.6g} USD from its best response at the "
                "certified prices (more than one cent)"
            )
    else:
        if not stationarity_max <= ratio_tol:
            failures.append(
                f"interior users are off stationarity by up to {stationarity_max:.3g} (relative)"
            )
        if floor_wrong:
            failures.append(
                f"{floor_wrong} floor users would gain from more money at the certified price "
                f"(up to {floor_wrong_max:.3g} relative)"
            )
        if cap_wrong:
            failures.append(
                f"{cap_wrong} capped users are worth less than the certified price "
                f"(up to {cap_wrong_max:.3g} relative)"
            )

    # --- objective, dual function, gap ---
    objective = sums.objective
    if with_gap:
        gap = sums.gap + lam * (budget - spent)
    else:
        gap = math.nan
    for seg in problem.segments:
        mu_min, mu_max = seg_prices[seg.name]
        total = seg_totals[seg.name]
        if seg.max_share is not None:
            gap += mu_max * (seg.max_share * budget - total)
        if seg.min_share is not None:
            gap += mu_min * (total - seg.min_share * budget)
    dual_value = objective + gap
    scale = max(abs(objective), abs(lam) * budget, 1e-300)
    gap_rel = gap / scale if math.isfinite(gap) else (gap if math.isnan(gap) else math.inf)
    if not rounded and not (-tol <= gap_rel <= tol):
        failures.append(f"the duality gap is {gap:.6g} ({gap_rel:.3g} relative)")
    if not math.isfinite(objective):
        failures.append("the objective is not finite")

    return Certificate(
        certified=not failures,
        failures=tuple(failures),
        objective=objective,
        dual_value=dual_value,
        duality_gap=gap,
        duality_gap_rel=gap_rel,
        shadow_price=lam,
        segment_prices=seg_prices,
        spent=spent,
        budget=budget,
        budget_violation=budget_violation,
        bound_violation=bound_violation,
        segment_violation=segment_violation,
        n_floor=sums.n_floor,
        n_interior=n - sums.n_floor - sums.n_cap,
        n_cap=sums.n_cap,
        stationarity_max=stationarity_max,
        floor_wrong_sign=floor_wrong,
        floor_wrong_sign_max=floor_wrong_max,
        cap_wrong_sign=cap_wrong,
        cap_wrong_sign_max=cap_wrong_max,
        dual_infeasibility=dual_infeasibility,
        best_response_max_usd=best_response_max,
        rounded=rounded,
        tol=float(tol),
        feas_tol_usd=float(feas),
        bound_tol_usd=float(btol),
        n=n,
    )
