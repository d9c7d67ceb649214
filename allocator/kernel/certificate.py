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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from allocator.kernel.problem import AllocationProblem
from allocator.kernel.select import pick, pick_max

#: Default relative tolerance for stationarity, sign conditions and the duality gap.
DEFAULT_TOL = 1e-6
#: Default absolute tolerance (USD) for bounds, budget and segment totals of unrounded vouchers.
DEFAULT_FEAS_TOL_USD = 1e-3
#: One cent: how far a rounded voucher may sit from its best response.
CENT = 0.01


def utility(v: np.ndarray, alpha: float) -> np.ndarray:
    r""":math:`u_\alpha(v)`: ``log v`` for ``alpha == 1``, else ``v**(1-alpha) / (1-alpha)``."""
    v = np.asarray(v, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if alpha == 1.0:
            return np.log(v)
        if alpha == 0.0:
            return v.copy()
        if alpha == 2.0:
            return -1.0 / v
        if alpha == 0.5:
            return 2.0 * np.sqrt(v)
        return np.power(v, 1.0 - alpha) / (1.0 - alpha)


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


def _utility_difference(
    w: np.ndarray, v_new: np.ndarray, v_old: np.ndarray, alpha: float
) -> np.ndarray:
    r""":math:`w\,(u_\alpha(v_{new}) - u_\alpha(v_{old}))`, without cancellation when close."""
    d = v_new - v_old
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if alpha == 0.0:
            out = w * d
        elif alpha == 1.0:
            out = w * np.log1p(d / v_old)
        elif alpha == 2.0:  # -1/a + 1/b = (a - b) / (a b)
            out = w * d / (v_old * v_new)
        elif alpha == 0.5:  # 2 (sqrt a - sqrt b) = 2 (a - b) / (sqrt a + sqrt b)
            out = 2.0 * w * d / (np.sqrt(v_new) + np.sqrt(v_old))
        else:
            rho = np.log1p(d / v_old)  # log(v_new / v_old)
            out = w * np.power(v_old, 1.0 - alpha) * np.expm1((1.0 - alpha) * rho) / (1.0 - alpha)
    return np.where(d == 0.0, 0.0, out)


# Relative deviations below this use exact low-order series instead of exp/log: the neglected
# terms are below 1e-15 of the kept ones, and at a million users most deviations are this small.
_SERIES = 1e-5
# When more than one user in this many needs the closed form, it is computed for everyone and
# selected: gathering and scattering that many users costs more than the arithmetic.
_DENSE = 8


def _marginal_ratio(
    w: np.ndarray, v: np.ndarray, prices: np.ndarray, alpha: float
) -> tuple[np.ndarray, np.ndarray | None]:
    r""":math:`r_i = g_i(v_i)/\lambda_i` (``inf`` where :math:`\lambda_i \le 0`) and, for a
    general ``alpha``, :math:`\log v` for re-use."""
    logv = None
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if alpha == 0.0:
            ratio = w / prices
        elif alpha == 1.0:
            ratio = w / (v * prices)
        elif alpha == 2.0:
            ratio = w / (v * v * prices)
        elif alpha == 0.5:
            ratio = w / (np.sqrt(v) * prices)
        else:
            logv = np.log(v)
            log_p = (
                np.log(prices[0])
                if prices.size and prices.min() == prices.max()
                else np.log(prices)
            )
            ratio = np.exp(np.log(w) - alpha * logv - log_p)
    if not prices.min(initial=1.0) > 0.0:  # a free budget or segment: nothing is worth its price
        ratio = np.where(prices > 0.0, ratio, np.inf)
    return ratio, logv


def _best_response_from_ratio(
    w: np.ndarray,
    v: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    prices: np.ndarray,
    ratio: np.ndarray,
    logv: np.ndarray | None,
    alpha: float,
    tie_tol: float,
) -> np.ndarray:
    r"""The best response :math:`\operatorname{clip}(v\,r^{1/\alpha}, \ell, h)` (see
    :func:`best_response`), from the ratio already computed.

    At ``alpha = 0`` a user whose weight is within ``tie_tol`` (relative) of their price is on a
    tie and keeps ``v``: the price of a linear problem *is* the weight of its fractional users,
    and a float comparison ``w == lambda`` would send that user to a bound for a last-bit
    difference (the same tolerance lets interior users pass stationarity).
    """
    if alpha == 0.0:
        out = pick(ratio > 1.0 + tie_tol, hi, lo)
        tie = np.abs(ratio - 1.0) <= tie_tol
        return pick(tie, v, out)
    with np.errstate(invalid="ignore", over="ignore"):
        if alpha == 1.0:
            raw = v * ratio
        elif alpha == 2.0:
            raw = np.sqrt(ratio)
            raw *= v
        elif alpha == 0.5:
            raw = ratio * ratio
            raw *= v
        else:
            k = 1.0 / alpha
            z = ratio - 1.0
            raw = z * (0.5 * k * (k - 1.0))  # (1 + z)^k to second order, in place
            raw += k
            raw *= z
            raw += 1.0
            raw *= v
            far = ~(np.abs(z) < _SERIES)
            n_far = int(np.count_nonzero(far))
            if n_far > raw.shape[0] // _DENSE:
                # many users far from their best response (vouchers rounded to cents): the
                # power for everyone and a select cost less than gathering and scattering them
                # (a user on a bound gets the exact best response, which the clip below puts
                # on that bound)
                exact = np.log(ratio)
                exact *= k
                exact += np.log(v) if logv is None else logv
                np.exp(exact, out=exact)
                raw = pick(far, exact, raw)
            elif n_far:
                # users on a bound that pushes the right way keep it: no power needed for
                # them (and the series, far from 1, is no approximation of it)
                settled = ((v <= lo) & (ratio <= 1.0)) | ((v >= hi) & (ratio >= 1.0))
                raw[settled] = v[settled]
                far &= ~settled
                log_v = np.log(v[far]) if logv is None else logv[far]
                raw[far] = np.exp(log_v + np.log(ratio[far]) * k)
        if not prices.min(initial=1.0) > 0.0:
            raw[~(prices > 0.0)] = np.inf
    np.maximum(raw, lo, out=raw)
    np.minimum(raw, hi, out=raw)
    return raw


def _objective(
    w: np.ndarray,
    v: np.ndarray,
    logv: np.ndarray | None,
    prices: np.ndarray,
    ratio: np.ndarray,
    alpha: float,
) -> float:
    r""":math:`\sum_i w_i u_\alpha(v_i)`. For a general ``alpha`` with every price positive,
    :math:`w v^{1-\alpha} = r \lambda_i v` from the marginal ratio already at hand: no power of
    :math:`v`, which would cost as much as the ratio itself."""
    if logv is None or alpha in (0.0, 1.0, 2.0, 0.5):
        return float(np.dot(w, utility(v, alpha)))
    if prices.min(initial=1.0) > 0.0 and _finite(ratio):
        terms = ratio * v
        terms *= prices
        return float(terms.sum()) / (1.0 - alpha)
    with np.errstate(over="ignore"):
        return float(np.dot(w, np.exp((1.0 - alpha) * logv) / (1.0 - alpha)))


def _gap_closed_form(
    w: np.ndarray,
    v: np.ndarray,
    v_star: np.ndarray,
    d: np.ndarray,
    x: np.ndarray,
    prices: np.ndarray,
    ratio: np.ndarray,
    alpha: float,
) -> np.ndarray:
    r"""Every user's :math:`w(u(v^\star) - u(v)) - \lambda_i d`, :math:`d = v^\star - v`, in
    closed form.

    For a general ``alpha`` with all prices positive, :math:`w v^{1-\alpha} = r \lambda_i v`
    (the marginal ratio :math:`r = w v^{-\alpha}/\lambda_i`, already at hand), so the term is
    :math:`\lambda_i \big(r v \operatorname{expm1}((1-\alpha)\log(1 + d/v))/(1-\alpha)
    - d\big)`: no power of :math:`v`, which would cost as much as the rest of the certificate.
    """
    if alpha in (0.0, 0.5, 1.0, 2.0) or not prices.min(initial=1.0) > 0.0:
        exact = _utility_difference(w, v_star, v, alpha)
        exact -= prices * d
        return exact
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        exact = np.log1p(x)
        exact *= 1.0 - alpha
        np.expm1(exact, out=exact)
        exact *= ratio
        exact *= v
        exact /= 1.0 - alpha
        exact -= d
        exact *= prices
    return exact


def _gap_terms(
    w: np.ndarray,
    v: np.ndarray,
    v_star: np.ndarray,
    prices: np.ndarray,
    ratio: np.ndarray,
    alpha: float,
) -> np.ndarray:
    r"""Per-user :math:`w(u(v^\star) - u(v)) - \lambda_i (v^\star - v) \ge 0`.

    For :math:`|d| = |v^\star - v| < 10^{-5} v` the Taylor series to third order,
    :math:`\lambda_i d\,[(r - 1) - r\alpha d/(2v) + r\alpha(\alpha+1)d^2/(6v^2)]`, is exact to
    float precision; larger deviations use the closed form.
    """
    d = v_star - v
    if alpha == 0.0:
        return (w - prices) * d
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        x = d / v
        terms = x * (-alpha * (alpha + 1.0) / 6.0)  # built in place, one buffer
        terms += 0.5 * alpha
        terms *= x
        terms *= ratio
        np.subtract(ratio, terms, out=terms)
        terms -= 1.0
        terms *= d
        terms *= prices
        still = d == 0.0
        far = ~(np.abs(x) < _SERIES) & ~still
        n_far = int(np.count_nonzero(far))
        if n_far > terms.shape[0] // _DENSE:
            exact = _gap_closed_form(w, v, v_star, d, x, prices, ratio, alpha)
            terms = pick(far, exact, terms)
        elif n_far:
            terms[far] = (
                _utility_difference(w[far], v_star[far], v[far], alpha) - prices[far] * d[far]
            )
        if not (v.min(initial=1.0) > 0.0 and prices.min(initial=1.0) > 0.0 and _finite(ratio)):
            terms = pick(still, 0.0, terms)  # d = 0 against an infinite or undefined bracket
    return terms


def _finite(x: np.ndarray) -> bool:
    """Whether every entry is finite, in one reduction (a NaN or an infinity makes the sum so)."""
    return bool(np.isfinite(np.add.reduce(x, initial=0.0)))


@dataclass
class _UserSums:
    """What the certificate needs of the users, summed (or maximised) over a block of them."""

    not_finite: int
    bound_violation: float
    spent: float
    segment_totals: list[float]
    n_floor: int
    n_cap: int
    stationarity_max: float
    floor_wrong: int
    floor_excess_max: float
    cap_wrong: int
    cap_short_max: float
    best_response_max: float
    objective: float
    gap: float

    def add(self, other: _UserSums) -> _UserSums:
        return _UserSums(
            not_finite=self.not_finite + other.not_finite,
            bound_violation=max(self.bound_violation, other.bound_violation),
            spent=self.spent + other.spent,
            segment_totals=[a + b for a, b in zip(self.segment_totals, other.segment_totals)],
            n_floor=self.n_floor + other.n_floor,
            n_cap=self.n_cap + other.n_cap,
            stationarity_max=max(self.stationarity_max, other.stationarity_max),
            floor_wrong=self.floor_wrong + other.floor_wrong,
            floor_excess_max=max(self.floor_excess_max, other.floor_excess_max),
            cap_wrong=self.cap_wrong + other.cap_wrong,
            cap_short_max=max(self.cap_short_max, other.cap_short_max),
            best_response_max=max(self.best_response_max, other.best_response_max),
            objective=self.objective + other.objective,
            gap=self.gap + other.gap,
        )


def _user_sums(
    w: np.ndarray,
    v: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    members: list[np.ndarray],
    lam: float,
    shifts: list[float],
    *,
    alpha: float,
    btol: float,
    tie_tol: float,
    ratio_tol: float,
    with_gap: bool,
) -> _UserSums:
    """Every per-user test and term of :func:`certify` on one block of users."""
    prices = np.full(v.shape[0], lam)
    for mask, shift in zip(members, shifts):
        if shift != 0.0:
            prices += shift * mask
    at_floor = v <= lo + btol
    at_cap = (v >= hi - btol) & ~at_floor
    interior = ~(at_floor | at_cap)
    free = lo != hi  # no freedom: neither sign condition applies
    ratio, logv = _marginal_ratio(w, v, prices, alpha)
    dev = ratio - 1.0
    excess_floor = pick(at_floor & free, dev, -np.inf)
    np.negative(dev, out=dev)
    short_cap = pick(at_cap & free, dev, -np.inf)
    v_star = _best_response_from_ratio(w, v, lo, hi, prices, ratio, logv, alpha, tie_tol)
    np.abs(dev, out=dev)
    with np.errstate(invalid="ignore"):
        off = np.abs(v - v_star)
        below = np.subtract(lo, v)
        bound_violation = float(below.max(initial=0.0))
        np.subtract(v, hi, out=below)  # now above
        bound_violation = max(bound_violation, float(below.max(initial=0.0)))
    spent = float(np.sum(v))
    return _UserSums(
        # a sum is finite only if every voucher is (or it overflowed: then they are counted)
        not_finite=0
        if math.isfinite(spent)
        else int(v.shape[0] - np.count_nonzero(np.isfinite(v))),
        bound_violation=bound_violation,
        spent=spent,
        segment_totals=[float(np.einsum("i,i->", v, mask)) for mask in members],
        n_floor=int(np.count_nonzero(at_floor)),
        n_cap=int(np.count_nonzero(at_cap)),
        stationarity_max=pick_max(dev, interior, 0.0),
        floor_wrong=int(np.count_nonzero(excess_floor > ratio_tol)),
        floor_excess_max=float(np.max(excess_floor, initial=-np.inf)),
        cap_wrong=int(np.count_nonzero(short_cap > ratio_tol)),
        cap_short_max=float(np.max(short_cap, initial=-np.inf)),
        best_response_max=float(np.max(off, initial=0.0)),
        objective=_objective(w, v, logv, prices, ratio, alpha),
        gap=float(np.sum(_gap_terms(w, v, v_star, prices, ratio, alpha))) if with_gap else 0.0,
    )


#: Users per block: a block's arrays stay in the core's cache between the certificate's steps.
BLOCK = 1 << 16


def _in_blocks(n: int, part: Callable[[slice], _UserSums]) -> _UserSums:
    """``part`` of every block of :data:`BLOCK` users, added in block order.

    The certificate takes some thirty steps over each user; on a block the arrays stay in the
    core's cache from one step to the next instead of going to memory and back each time, which
    halves the time at a million users (measured: 49 ms in one piece, 25 ms in blocks; a second
    thread on the other core gained nothing more).
    """
    blocks = [slice(i, min(i + BLOCK, n)) for i in range(0, n, BLOCK)] or [slice(0, 0)]
    total = part(blocks[0])
    for block in blocks[1:]:
        total = total.add(part(block))
    return total


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
        if n and np.all(np.isfinite(v)):
            typical = min(typical, float(np.mean(np.abs(v))))
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

    def part(at: slice) -> _UserSums:
        return _user_sums(
            w[at], v[at], lo[at], hi[at], [m[at] for m in members], lam, shifts,
            alpha=alpha, btol=btol, tie_tol=tol, ratio_tol=ratio_tol, with_gap=with_gap,
        )  # fmt: skip

    sums = _in_blocks(n, part)

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
