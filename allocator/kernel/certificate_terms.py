r"""The certificate's per-user terms: marginal ratios, best responses, sign conditions,
objective and duality-gap terms, summed over blocks of users.

:func:`allocator.kernel.certificate.certify` states the problem and the conditions; this module
evaluates them for every user in as few passes over the arrays as it can, since the certificate
must cost no more than the solve it checks (at a million users, some forty passes of a few
hundred microseconds each). Each step keeps the semantics of the plain formula, including for
infinite and undefined entries: the shortcuts (a test by arithmetic instead of a selection, the
counts of a failed sign condition only when one fails) hold only when every value is a number,
and the general path runs otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from allocator.kernel.select import pick, pick_max
from allocator.kernel.sums import all_finite

__all__ = ["BLOCK", "UserSums", "in_blocks", "user_sums", "utility", "utility_difference"]


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


def utility_difference(
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
    w: np.ndarray, v: np.ndarray, prices: np.ndarray, alpha: float, kind: _Prices
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
            log_p = np.log(prices[0]) if prices.size and kind.uniform else np.log(prices)
            ratio = np.exp(np.log(w) - alpha * logv - log_p)
    if not kind.positive:  # a free budget or segment: nothing is worth its price
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
    kind: _Prices,
) -> np.ndarray:
    r"""The best response :math:`\operatorname{clip}(v\,r^{1/\alpha}, \ell, h)` (see
    :func:`allocator.kernel.certificate.best_response`), from the ratio already computed.

    At ``alpha = 0`` a user whose weight is within ``tie_tol`` (relative) of their price is on a
    tie and keeps ``v``: the price of a linear problem *is* the weight of its fractional users,
    and a float comparison ``w == lambda`` would send that user to a bound for a last-bit
    difference (the same tolerance lets interior users pass stationarity).
    """
    if alpha == 0.0:
        out = pick(ratio > 1.0 + tie_tol, hi, lo)
        # only the budget's and the segments' fractional users are on a tie: a branch that is
        # nearly always guessed right
        np.copyto(out, v, where=np.abs(ratio - 1.0) <= tie_tol)
        return out
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
            # (1 + z)^k to second order, in place, with the factor after z kept >= 0: the value
            # then lies on the side of v that z says, so that a user on a bound pushing the way
            # of that bound is clipped to it below, near its best response or far from it
            raw = z * (0.5 * k * (k - 1.0))
            raw += k
            np.maximum(raw, 0.0, out=raw)
            raw *= z
            raw += 1.0
            raw *= v
            # the series is exact to float precision while k z (the relative move) is small
            far = ~(np.abs(z) < _SERIES / max(1.0, k))
            if far.any():
                settled = ((v <= lo) & (ratio <= 1.0)) | ((v >= hi) & (ratio >= 1.0))
                if not kind.finite_ratio:  # an infinite ratio makes the series NaN
                    raw = pick(settled, v, raw)
                far &= ~settled
            n_far = int(np.count_nonzero(far))
            if n_far > raw.shape[0] // _DENSE:
                # many users far from their best response (vouchers rounded to cents): the
                # power for everyone and a select cost less than gathering and scattering them
                exact = np.log(ratio)
                exact *= k
                exact += np.log(v) if logv is None else logv
                np.exp(exact, out=exact)
                raw = pick(far, exact, raw)
            elif n_far:
                log_v = np.log(v[far]) if logv is None else logv[far]
                raw[far] = np.exp(log_v + np.log(ratio[far]) * k)
        if not kind.positive:
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
    kind: _Prices,
) -> float:
    r""":math:`\sum_i w_i u_\alpha(v_i)`. For a general ``alpha`` with every price positive,
    :math:`w v^{1-\alpha} = r \lambda_i v` from the marginal ratio already at hand: no power of
    :math:`v`, which would cost as much as the ratio itself."""
    if alpha == 0.0:
        return float(np.dot(w, v))
    if logv is None or alpha in (1.0, 2.0, 0.5):
        return float(np.dot(w, utility(v, alpha)))
    if kind.positive and kind.finite_ratio:
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
    kind: _Prices,
) -> np.ndarray:
    r"""Every user's :math:`w(u(v^\star) - u(v)) - \lambda_i d`, :math:`d = v^\star - v`, in
    closed form.

    For a general ``alpha`` with all prices positive, :math:`w v^{1-\alpha} = r \lambda_i v`
    (the marginal ratio :math:`r = w v^{-\alpha}/\lambda_i`, already at hand), so the term is
    :math:`\lambda_i \big(r v \operatorname{expm1}((1-\alpha)\log(1 + d/v))/(1-\alpha)
    - d\big)`: no power of :math:`v`, which would cost as much as the rest of the certificate.
    """
    if alpha in (0.0, 0.5, 1.0, 2.0) or not kind.positive:
        exact = utility_difference(w, v_star, v, alpha)
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
    d: np.ndarray,
    prices: np.ndarray,
    ratio: np.ndarray,
    alpha: float,
    kind: _Prices,
) -> np.ndarray:
    r"""Per-user :math:`w(u(v^\star) - u(v)) - \lambda_i d \ge 0`, :math:`d = v^\star - v`.

    For :math:`|d| < 10^{-5} v` the Taylor series to third order,
    :math:`\lambda_i d\,[(r - 1) - r\alpha d/(2v) + r\alpha(\alpha+1)d^2/(6v^2)]`, is exact to
    float precision; larger deviations use the closed form.
    """
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
        # the largest relative deviation first (a NaN carries through both reductions): at the
        # optimum every user is within the series' range, and nothing more is needed
        if not max(float(x.max(initial=0.0)), -float(x.min(initial=0.0))) < _SERIES:
            far = ~(np.abs(x) < _SERIES) & (d != 0.0)
            n_far = int(np.count_nonzero(far))
            if n_far > terms.shape[0] // _DENSE:
                exact = _gap_closed_form(w, v, v_star, d, x, prices, ratio, alpha, kind)
                terms = pick(far, exact, terms)
            elif n_far:
                terms[far] = (
                    utility_difference(w[far], v_star[far], v[far], alpha) - prices[far] * d[far]
                )
        if not (kind.positive and kind.finite_ratio and v.min(initial=1.0) > 0.0):
            terms = pick(d == 0.0, 0.0, terms)  # d = 0 against an infinite or undefined bracket
    return terms


@dataclass(frozen=True)
class _Prices:
    """What a block's prices are known to be, found once and read by every step."""

    uniform: bool  # one price for everyone (no segment price moves it)
    positive: bool  # every price is > 0
    finite_ratio: bool = False  # every marginal ratio is a finite number


@dataclass
class UserSums:
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

    def add(self, other: UserSums) -> UserSums:
        return UserSums(
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


def user_sums(
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
) -> UserSums:
    """Every per-user test and term of :func:`allocator.kernel.certificate.certify` on one block
    of users."""
    prices = np.full(v.shape[0], lam)
    uniform = True
    for mask, shift in zip(members, shifts):
        if shift != 0.0:
            prices += shift * mask
            uniform = False
    positive = bool(lam > 0.0 or not v.shape[0]) if uniform else prices.min(initial=1.0) > 0.0
    kind = _Prices(uniform=uniform, positive=positive)
    at_floor = v <= lo + btol
    at_cap = (v >= hi - btol) & ~at_floor
    interior = ~(at_floor | at_cap)
    free = lo != hi  # no freedom: neither sign condition applies
    ratio, logv = _marginal_ratio(w, v, prices, alpha, kind)
    kind = replace(kind, finite_ratio=all_finite(ratio))
    dev = ratio - 1.0
    v_star = _best_response_from_ratio(w, v, lo, hi, prices, ratio, logv, alpha, tie_tol, kind)
    if kind.finite_ratio:
        # every deviation is a number: the sign conditions by arithmetic, with no selection.
        # +1 at a floor, -1 at a cap (with freedom), 0 elsewhere; the counts and maxima by
        # side only when some user breaks one (a certificate about to fail)
        side = (at_floor & free).view(np.int8) - (at_cap & free).view(np.int8)
        signed = dev * side
        broken = float(signed.max(initial=-np.inf)) > ratio_tol
        np.abs(dev, out=dev)
        dev *= interior
        stationarity_max = float(dev.max(initial=0.0))
        floor = _side_test(signed, side == 1, ratio_tol) if broken else (0, -np.inf)
        cap = _side_test(signed, side == -1, ratio_tol) if broken else (0, -np.inf)
    else:
        floor = _side_test(dev, at_floor & free, ratio_tol)
        np.negative(dev, out=dev)
        cap = _side_test(dev, at_cap & free, ratio_tol)
        np.abs(dev, out=dev)
        stationarity_max = pick_max(dev, interior, 0.0)
    with np.errstate(invalid="ignore"):
        d = v_star - v
        below = np.subtract(lo, v)
        bound_violation = float(below.max(initial=0.0))
        np.subtract(v, hi, out=below)  # now above
        bound_violation = max(bound_violation, float(below.max(initial=0.0)))
    spent = float(np.sum(v))
    return UserSums(
        # a sum is finite only if every voucher is (or it overflowed: then they are counted)
        not_finite=0
        if math.isfinite(spent)
        else int(v.shape[0] - np.count_nonzero(np.isfinite(v))),
        bound_violation=bound_violation,
        spent=spent,
        segment_totals=[float(np.einsum("i,i->", v, mask)) for mask in members],
        n_floor=int(np.count_nonzero(at_floor)),
        n_cap=int(np.count_nonzero(at_cap)),
        stationarity_max=stationarity_max,
        floor_wrong=floor[0],
        floor_excess_max=floor[1],
        cap_wrong=cap[0],
        cap_short_max=cap[1],
        # |v - v*| at its largest (a NaN carries through both reductions)
        best_response_max=max(float(d.max(initial=0.0)), -float(d.min(initial=0.0))),
        objective=_objective(w, v, logv, prices, ratio, alpha, kind),
        gap=float(np.sum(_gap_terms(w, v, v_star, d, prices, ratio, alpha, kind)))
        if with_gap
        else 0.0,
    )


def _side_test(dev: np.ndarray, on_side: np.ndarray, tol: float) -> tuple[int, float]:
    """How many users on one side (a floor or a cap) exceed ``tol`` in ``dev``, and the largest
    ``dev`` there (``-inf`` for nobody)."""
    excess = pick(on_side, dev, -np.inf)
    return int(np.count_nonzero(excess > tol)), float(np.max(excess, initial=-np.inf))


#: Users per block: a block's arrays stay in the core's cache between the certificate's steps.
BLOCK = 1 << 16


def in_blocks(n: int, part: Callable[[slice], UserSums]) -> UserSums:
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
