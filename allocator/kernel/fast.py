r"""The exact fast solver for the weighted alpha-fairness allocation problem.

The problem (:class:`allocator.kernel.problem.AllocationProblem`) is

.. math::

    \max_v \sum_i w_i u_\alpha(v_i) \quad\text{s.t.}\quad \ell_i \le v_i \le h_i,\quad
    \sum_i v_i \le B \;(= B \text{ in exhaust mode}),\quad
    m_s B \le \sum_{i\in S_s} v_i \le M_s B,

with :math:`u_1 = \log` and :math:`u_\alpha(v) = v^{1-\alpha}/(1-\alpha)` otherwise.

Fast solver (``alpha > 0``)
    Stationarity gives :math:`v_i(\lambda_i) = \operatorname{clip}((w_i/\lambda_i)^{1/\alpha},
    \ell_i, h_i)`. With :math:`c_i = (w_i/W)^{1/\alpha} \in (0, 1]`, :math:`W = \max_i w_i`, and
    :math:`y = (W/\lambda)^{1/\alpha}`, a user's voucher is :math:`\operatorname{clip}(c_i y,
    \ell_i, h_i)`: the floor for :math:`y \le p_i = \ell_i/c_i`, the cap for
    :math:`y \ge q_i = h_i/c_i`, and :math:`c_i y` between. The spend :math:`S(y) = \sum_i v_i(y)`
    is continuous, non-decreasing and piecewise linear: on a stretch of :math:`y` holding no
    breakpoint it is :math:`C + K y` with :math:`C` the floors and caps there and
    :math:`K = \sum_{\text{interior}} c_i`, so the root of :math:`S(y) = B` is the closed form
    :math:`y = (B - C)/K`, i.e. :math:`\lambda^{-1/\alpha} = (B - \sum_{cap} h -
    \sum_{floor} \ell) / \sum_{int} w^{1/\alpha}`. Working in :math:`y` keeps every number in
    voucher units whatever ``alpha`` is (:math:`\lambda = W y^{-\alpha}` is formed in log space
    at the end), and no transcendental function runs inside the search. The :math:`c_i` must
    not underflow, which bounds ``alpha`` from below: :func:`fast_reach` asks
    :math:`\log(\max w / \min w)/\alpha < 650`.

    The solver narrows a bracket on :math:`y` (a guess from a strided sample of users, then
    safeguarded Newton steps that are exact on the current piece, with breakpoint-median steps
    as the fallback), moves every user whose breakpoints have left the bracket into the running
    sums :math:`C, K`, and stops as soon as the closed form lands on the piece it was computed
    on. After one pass over all users, the iterations touch only the few users whose
    breakpoints are near the root.

Fast solver (``alpha = 0``)
    Linear utility: a fractional knapsack by weight (floors first, then caps filled in
    decreasing weight); users tied at the marginal weight share what is left in proportion to
    their room (so equal users get equal amounts).

Disjoint segments
    A segment's price is :math:`\lambda_s = \operatorname{clip}(\lambda, \lambda_s^{M},
    \lambda_s^{m})` where :math:`\lambda_s^{m}` makes the segment spend exactly
    :math:`m_s B` and :math:`\lambda_s^{M}` exactly :math:`M_s B`. Both are computed once per
    segment; since :math:`v_i` is monotone in the price, a segment user then behaves like an
    ordinary user whose bounds are tightened to :math:`[v_i(\lambda_s^{m}), v_i(\lambda_s^{M})]`,
    and one outer root search on :math:`\lambda` finishes the job. Overlapping segments go to
    the cvxpy model.

Invalid input raises :class:`InvalidProblemError` (an :class:`~allocator.errors.AllocatorError`
with exit code 2 that is also a :class:`ValueError`); a problem that cannot be satisfied raises
:class:`~allocator.errors.InfeasibleError` before any solver runs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from allocator.errors import SolverFailedError
from allocator.kernel.feasibility import segments_disjoint
from allocator.kernel.problem import AllocationProblem
from allocator.kernel.select import pick

# Above this many users the fast solver first solves a strided sample to bracket the price:
# of at most _SAMPLE_SIZE users, and at most 1/_SAMPLE_SHARE of them, so that a sample large
# enough is itself bracketed by a sample of its own.
_SAMPLE_MIN_N = 8_192
_SAMPLE_SIZE = 16_384
_SAMPLE_SHARE = 8
_MAX_ITER = 500
# A sample's segment total this far (relative) inside its shares says the segment does not bind;
# the sample is small, since it only chooses which exact path runs first.
_SHARE_MARGIN = 0.1
_SHARE_SAMPLE = 4_096
_SHARE_MIN_N = 65_536  # below it the segments' path is chosen without a sample
# The knapsack's selection: sample size, margin either side of the estimated crossing (in
# sample entries, about three sampling errors), and the size below which candidates are sorted.
_SELECT_SAMPLE = 4096
_SELECT_MARGIN = 192
_SELECT_SORT_N = 8192


@dataclass(frozen=True, eq=False)
class FastSolution:
    """Raw output of the fast solver (not yet certified; :func:`solve` certifies it)."""

    vouchers: np.ndarray
    shadow_price: float
    segment_prices: dict[str, tuple[float, float]]


#: The fast solver needs log(max w / min w) / alpha below this (c_i = (w_i/W)^(1/alpha) > 1e-282).
MAX_LOG_WEIGHT_SPREAD_PER_ALPHA = 650.0


def fast_reach(problem: AllocationProblem) -> bool:
    """Whether the fast solver handles this problem: disjoint segments, and for ``alpha > 0``
    weights whose spread does not underflow :math:`(w_i/W)^{1/\alpha}`."""
    if problem.alpha < 0 or not segments_disjoint(problem):
        return False
    if problem.alpha == 0:
        return True
    w = np.asarray(problem.weights, dtype=np.float64)
    spread = math.log(float(w.max()) / float(w.min()))
    return spread / float(problem.alpha) < MAX_LOG_WEIGHT_SPREAD_PER_ALPHA


def _coefficients(w: np.ndarray, alpha: float) -> tuple[np.ndarray, float]:
    r""":math:`c_i = (w_i/W)^{1/\alpha} \in (0, 1]` and :math:`\log W`; exact shortcuts for
    ``alpha`` 1, 2 and 0.5 avoid a log and an exp over all users."""
    w_max = float(w.max())
    c = w / w_max  # one new array, then everything in place
    if alpha == 2.0:
        np.sqrt(c, out=c)
    elif alpha == 0.5:
        np.multiply(c, c, out=c)
    elif alpha != 1.0:
        with np.errstate(under="ignore"):
            np.log(c, out=c)
            c *= 1.0 / alpha
            np.exp(c, out=c)
    return c, math.log(w_max)


def _spend(c: np.ndarray, lo: np.ndarray, hi: np.ndarray, y: float) -> np.ndarray:
    v = c * y
    np.maximum(v, lo, out=v)
    np.minimum(v, hi, out=v)
    return v


def _masked_sum(x: np.ndarray, mask: np.ndarray) -> float:
    return float(np.einsum("i,i->", x, mask))


def _solve_in_bracket(
    c: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    p: np.ndarray,
    q: np.ndarray,
    target: float,
    y_lo: float,
    y_hi: float,
    y_start: float | None,
) -> float | None:
    r"""Exact root of :math:`S(y) = \text{target}` inside ``[y_lo, y_hi]``.

    Returns ``None`` when the bracket turns out not to contain the root, so the caller can
    widen it.
    """
    # one pass over all users: who is settled for the whole bracket
    cap = q <= y_lo
    flo = (p >= y_hi) & ~cap  # a pinned user (p >= q) may satisfy both: count it once
    inner = (p <= y_lo) & (q >= y_hi)
    active = ~(cap | flo | inner)
    const = _masked_sum(hi, cap) + _masked_sum(lo, flo)
    k_fixed = _masked_sum(c, inner)  # slope of the spend of users interior on the whole bracket
    idx = np.flatnonzero(active)
    a_c, a_lo, a_hi, a_p, a_q = c[idx], lo[idx], hi[idx], p[idx], q[idx]

    def spend_at(y: float) -> float:
        return const + k_fixed * y + float(_spend(a_c, a_lo, a_hi, y).sum())

    slack = 1e-12 * abs(target)  # float noise of the sums, far below a cent
    if spend_at(y_lo) > target + slack or spend_at(y_hi) < target - slack:
        return None
    y = y_start if y_start is not None and y_lo < y_start < y_hi else 0.5 * (y_lo + y_hi)
    for it in range(_MAX_ITER):
        if a_c.size == 0:
            if k_fixed <= 0.0:  # flat spend on the bracket: any point is a root
                return 0.5 * (y_lo + y_hi)
            return min(max((target - const) / k_fixed, y_lo), y_hi)
        at_floor = a_p >= y
        at_cap = (a_q <= y) & ~at_floor
        inside = ~(at_floor | at_cap)
        c_y = const + float(a_lo[at_floor].sum()) + float(a_hi[at_cap].sum())
        k_y = k_fixed + float(a_c[inside].sum())
        s_y = c_y + k_y * y
        if s_y == target:
            return y
        # closed form on the piece around y; exact if it stays on that piece
        y_new = math.nan
        if k_y > 0.0:
            y_new = (target - c_y) / k_y
            piece_lo = max(
                y_lo, float(a_p[inside].max(initial=0.0)), float(a_q[at_cap].max(initial=0.0))
            )
            piece_hi = min(
                y_hi,
                float(a_q[inside].min(initial=math.inf)),
                float(a_p[at_floor].min(initial=math.inf)),
            )
            if piece_lo <= y_new <= piece_hi:
                return y_new
        if s_y < target:
            y_lo = y
        else:
            y_hi = y
        # settle users whose breakpoints left the bracket
        now_cap = a_q <= y_lo
        now_floor = (a_p >= y_hi) & ~now_cap
        now_inner = (a_p <= y_lo) & (a_q >= y_hi)
        keep = ~(now_cap | now_floor | now_inner)
        const += float(a_hi[now_cap].sum()) + float(a_lo[now_floor].sum())
        k_fixed += float(a_c[now_inner].sum())
        if not keep.all():
            a_c, a_lo, a_hi, a_p, a_q = a_c[keep], a_lo[keep], a_hi[keep], a_p[keep], a_q[keep]
        if y_lo < y_new < y_hi and it % 4 != 3:
            y = y_new
        else:  # the median of the breakpoints left in the bracket halves them
            bps = np.concatenate(
                [a_p[(a_p > y_lo) & (a_p < y_hi)], a_q[(a_q > y_lo) & (a_q < y_hi)]]
            )
            y = float(np.median(bps)) if bps.size else 0.5 * (y_lo + y_hi)
    raise SolverFailedError(  # pragma: no cover
        "fast solver: the root search for the budget price did not converge",
        status="no_convergence",
        hint="try --solver cvxpy",
    )


def _root(
    c: np.ndarray, lo: np.ndarray, hi: np.ndarray, p: np.ndarray, q: np.ndarray, target: float
) -> float:
    r"""Exact :math:`y` with :math:`\sum_i \operatorname{clip}(c_i y, \ell_i, h_i) =` ``target``,
    for :math:`\sum \ell < \text{target} < \sum h`."""
    # Users with no room (p >= q: equal bounds, or pinned by a segment) need no special case:
    # every classification below gives them their one value.
    sum_lo = float(lo.sum())
    p_min = float(p.min())
    # at y_left every user is at the floor or, with a zero floor, below an even share of the slack
    y_left = min(p_min if p_min > 0 else math.inf, 0.5 * (target - sum_lo) / float(c.sum()))
    y_right = float(q.max())
    n = c.size
    if n >= _SAMPLE_MIN_N:
        sl = slice(0, n, max(n // _SAMPLE_SIZE, _SAMPLE_SHARE))
        s_c, s_lo, s_hi, s_p, s_q = c[sl], lo[sl], hi[sl], p[sl], q[sl]
        s_target = target * (s_c.size / n)
        if float(s_lo.sum()) < s_target < float(s_hi.sum()):
            ys = _root(s_c, s_lo, s_hi, s_p, s_q, s_target)
            vs = _spend(s_c, s_lo, s_hi, ys)
            slope = float(vs[(s_p < ys) & (s_q > ys)].sum())  # d S / d log y of the sample
            spread = float(vs.std()) * math.sqrt(vs.size)  # sampling error of the sample's spend
            if slope > 0.0:
                delta = min(max(6.0 * spread / slope, 1e-9), 1.0)  # in log y
                for _ in range(40):
                    found = _solve_in_bracket(
                        c,
                        lo,
                        hi,
                        p,
                        q,
                        target,
                        max(ys * math.exp(-delta), y_left),
                        min(ys * math.exp(delta), y_right),
                        ys,
                    )
                    if found is not None:
                        return found
                    delta *= 4.0
    found = _solve_in_bracket(c, lo, hi, p, q, target, y_left, y_right, None)
    if found is None:  # pragma: no cover - the outer bracket always holds the root
        raise SolverFailedError(
            "fast solver: the bracket for the budget price does not hold the root",
            status="no_bracket",
            hint="try --solver cvxpy",
        )
    return found


def _segment_price_range(
    c: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    p: np.ndarray,
    q: np.ndarray,
    min_total: float | None,
    max_total: float | None,
) -> tuple[float, float]:
    """``(y_min, y_max)`` of one segment: where it spends exactly its min and max totals."""
    seg_lo, seg_hi = float(lo.sum()), float(hi.sum())
    y_min, y_max = 0.0, math.inf
    if min_total is not None and min_total > seg_lo:
        y_min = float(q.max()) if min_total >= seg_hi else _root(c, lo, hi, p, q, min_total)
    if max_total is not None and max_total < seg_hi:
        y_max = float(p.min()) if max_total <= seg_lo else _root(c, lo, hi, p, q, max_total)
    return y_min, max(y_max, y_min)


def _price(log_w_max: float, alpha: float, y: float) -> float:
    r""":math:`\lambda = W y^{-\alpha}` (0 for :math:`y = \infty`), computed in log space."""
    if y == math.inf:
        return 0.0
    if y <= 0.0:
        return math.inf
    x = log_w_max - alpha * math.log(y)
    return math.exp(x) if x < 709.0 else math.inf


def _fast_positive_alpha(problem: AllocationProblem) -> FastSolution:
    alpha = float(problem.alpha)
    budget = float(problem.budget)
    w = np.asarray(problem.weights, dtype=np.float64)
    lo = np.asarray(problem.lower, dtype=np.float64)
    hi = np.asarray(problem.upper, dtype=np.float64)
    c, log_w_max = _coefficients(w, alpha)
    p = lo / c  # floor for y <= p, cap for y >= q
    q = hi / c

    seg_y: dict[str, tuple[float, float]] = {}
    o_lo, o_hi, o_p, o_q = lo, hi, p, q  # bounds as the outer problem sees them
    if problem.segments:
        # p and q are ours to change; lo and hi are the caller's: copied only when changed
        for seg in problem.segments:
            idx = np.flatnonzero(np.asarray(seg.members, dtype=bool))
            if idx.size == 0:
                seg_y[seg.name] = (0.0, math.inf)
                continue
            s_c, s_lo, s_hi = c[idx], lo[idx], hi[idx]
            s_p, s_q = s_lo / s_c, s_hi / s_c  # cheaper than two more gathers
            y_min, y_max = _segment_price_range(
                s_c,
                s_lo,
                s_hi,
                s_p,
                s_q,
                None if seg.min_share is None else seg.min_share * budget,
                None if seg.max_share is None else seg.max_share * budget,
            )
            seg_y[seg.name] = (y_min, y_max)
            if y_min > 0.0:
                if o_lo is lo:
                    o_lo = lo.copy()
                o_lo[idx] = _spend(s_c, s_lo, s_hi, y_min)
                o_p[idx] = np.maximum(s_p, y_min)
            if y_max < math.inf:
                if o_hi is hi:
                    o_hi = hi.copy()
                o_hi[idx] = _spend(s_c, s_lo, s_hi, y_max)
                o_q[idx] = np.minimum(s_q, y_max)

    outer_hi = float(o_hi.sum())
    if not problem.exhaust and outer_hi <= budget:
        y_star = math.inf  # everyone at their (segment-limited) cap; the budget is slack
    elif outer_hi <= budget:
        y_star = float(o_q.max())  # exhaust with caps adding up to exactly the budget
    elif float(o_lo.sum()) >= budget:
        y_star = float(o_p.min())  # floors adding up to exactly the budget
    else:
        y_star = _root(c, o_lo, o_hi, o_p, o_q, budget)

    if y_star == math.inf:
        v = o_hi.copy()
    else:
        v = _spend(c, o_lo, o_hi, y_star)

    lam = _price(log_w_max, alpha, y_star)
    prices: dict[str, tuple[float, float]] = {}
    for seg in problem.segments:
        y_min, y_max = seg_y[seg.name]
        lam_s = _price(log_w_max, alpha, min(max(y_star, y_min), y_max))
        prices[seg.name] = (max(lam - lam_s, 0.0), max(lam_s - lam, 0.0))
    return FastSolution(vouchers=v, shadow_price=lam, segment_prices=prices)


# ----------------------------------------------------------------------------------------------
# the fast solver, alpha = 0: fractional knapsack
# ----------------------------------------------------------------------------------------------


def _marginal_weight(w: np.ndarray, room: np.ndarray, rest: float) -> float:
    r"""The weight :math:`w_m` at which filling rooms in decreasing weight reaches ``rest``:
    :math:`\sum_{w_i > w_m} r_i < \text{rest} \le \sum_{w_i \ge w_m} r_i`.

    A selection, not a sort (Floyd and Rivest's): a strided sample of the candidates, sorted,
    estimates where the rooms add up to ``rest``; two of its weights a few sampling errors
    either side of that point split the candidates in one pass, and the middle part, which
    holds the crossing unless the sample misled, is usually a few thousand users that are then
    sorted. A sample that misleads costs one more pass on the side that holds the crossing.
    Users without room may stay among the candidates: they add nothing to any sum.
    """
    cand_w, cand_r = w, room
    above = 0.0  # room of users known to be heavier than every candidate
    while cand_w.size > _SELECT_SORT_N:
        step = cand_w.size // _SELECT_SAMPLE
        s_w, s_r = cand_w[::step], cand_r[::step]
        order = np.argsort(-s_w, kind="stable")
        s_w, cum = s_w[order], np.cumsum(s_r[order])
        total = float(cand_r.sum())
        if cum[-1] <= 0.0 or total <= 0.0:
            break
        k = int(np.searchsorted(cum * (total / float(cum[-1])), rest - above))
        w_hi = float(s_w[max(k - _SELECT_MARGIN, 0)])
        w_lo = float(s_w[min(k + _SELECT_MARGIN, s_w.size - 1)])
        heavier = cand_w > w_hi
        r_heavier = float(np.dot(cand_r, heavier))
        if above + r_heavier >= rest:  # the sample misled: the crossing is heavier still
            cand_w, cand_r = cand_w[heavier], cand_r[heavier]
            continue
        lighter = cand_w < w_lo
        middle = ~(heavier | lighter)
        r_middle = float(np.dot(cand_r, middle))
        if above + r_heavier + r_middle < rest:  # ... or lighter still
            above += r_heavier + r_middle
            cand_w, cand_r = cand_w[lighter], cand_r[lighter]
            continue
        above += r_heavier
        if w_hi == w_lo:  # the middle is one weight, and it holds the crossing
            return w_hi
        kept = np.flatnonzero(middle)
        if kept.size == cand_w.size:  # no progress (few distinct weights): sort them all
            break
        cand_w, cand_r = cand_w[kept], cand_r[kept]
    order = np.argsort(-cand_w, kind="stable")
    cum = above + np.cumsum(cand_r[order])
    k = min(int(np.searchsorted(cum, rest)), order.size - 1)
    return float(cand_w[order[k]])


def _knapsack(
    w: np.ndarray, lo: np.ndarray, hi: np.ndarray, amount: float
) -> tuple[np.ndarray, float]:
    r"""Maximise :math:`\sum w_i v_i` over :math:`\ell \le v \le h`, :math:`\sum v = ` ``amount``.

    Returns the allocation and the marginal weight (``nan`` when ``amount`` needs nothing
    above the floors). Users tied at the marginal weight share the rest in proportion to their
    room :math:`h_i - \ell_i`.
    """
    rest = amount - float(lo.sum())
    room = hi - lo
    if rest <= 0.0 or not room.any():
        return lo.copy(), math.nan
    total = float(room.sum())
    if rest >= total:  # everything filled; the price is the lightest user with room
        return hi.copy(), float(w[room > 0].min())
    w_m = _marginal_weight(w, room, rest)
    above = w > w_m
    v = pick(above, hi, lo)
    tied = np.flatnonzero(w == w_m)
    tied = tied[room[tied] > 0]
    left = rest - float(np.dot(room, above))
    tied_room = float(room[tied].sum())
    share = min(max(left / tied_room, 0.0), 1.0) if tied_room > 0 else 0.0
    v[tied] = lo[tied] + room[tied] * share
    return v, w_m


def _price_interval(
    w: np.ndarray, v: np.ndarray, lo: np.ndarray, hi: np.ndarray
) -> tuple[float, float]:
    """Prices consistent with the KKT conditions of linear utility for these users."""
    free = lo < hi
    below = free & (v < hi)  # at the floor or inside: w <= price
    above = free & (v > lo)  # at the cap or inside: w >= price
    return float(np.max(w[below], initial=0.0)), float(np.min(w[above], initial=math.inf))


def _fast_linear(problem: AllocationProblem) -> FastSolution:
    budget = float(problem.budget)
    w = np.asarray(problem.weights, dtype=np.float64)
    lo = np.asarray(problem.lower, dtype=np.float64)
    hi = np.asarray(problem.upper, dtype=np.float64)
    o_lo, o_hi = lo, hi  # the caller's arrays: copied only when a segment changes them
    members: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}
    for seg in problem.segments:
        idx = np.flatnonzero(np.asarray(seg.members, dtype=bool))
        s_w, s_lo, s_hi = w[idx], lo[idx], hi[idx]
        members[seg.name] = (idx, s_w, s_lo, s_hi)
        s_lo_total, s_hi_total = float(s_lo.sum()), float(s_hi.sum())
        if seg.min_share is not None and seg.min_share * budget > s_lo_total:
            if o_lo is lo:
                o_lo = lo.copy()
            o_lo[idx] = _knapsack(s_w, s_lo, s_hi, min(seg.min_share * budget, s_hi_total))[0]
        if seg.max_share is not None and seg.max_share * budget < s_hi_total:
            if o_hi is hi:
                o_hi = hi.copy()
            o_hi[idx] = _knapsack(s_w, s_lo, s_hi, max(seg.max_share * budget, s_lo_total))[0]
    if not problem.exhaust and float(o_hi.sum()) <= budget:
        v, lam = o_hi.copy(), 0.0
    else:
        v, w_m = _knapsack(w, o_lo, o_hi, min(budget, float(o_hi.sum())))
        lam = 0.0 if math.isnan(w_m) else w_m
        if math.isnan(w_m):  # budget met by the floors alone: the price is the top floor weight
            lam = _price_interval(w, v, o_lo, o_hi)[0]
    prices: dict[str, tuple[float, float]] = {}
    for seg in problem.segments:
        idx, s_w, s_lo, s_hi = members[seg.name]
        low, high = _price_interval(s_w, v[idx], s_lo, s_hi)
        lam_s = min(max(lam, low), high) if low <= high else lam
        prices[seg.name] = (max(lam - lam_s, 0.0), max(lam_s - lam, 0.0))
    return FastSolution(vouchers=v, shadow_price=lam, segment_prices=prices)


def _sample_meets_shares(
    problem: AllocationProblem, solver: Callable[[AllocationProblem], FastSolution]
) -> bool:
    """Whether a strided sample of the users, solved without the segments, meets every share
    with room to spare (:data:`_SHARE_MARGIN` of it): then the solve without the segments is
    likely the answer. Only a guess, which decides which exact path runs first.
    """
    n = problem.n
    if n < _SHARE_MIN_N:
        return True
    at = slice(0, n, n // _SHARE_SAMPLE)
    lower, upper = problem.lower[at], problem.upper[at]
    budget = float(problem.budget) * lower.shape[0] / n
    if not float(lower.sum()) < budget < float(upper.sum()):
        return True
    sample = AllocationProblem(
        weights=problem.weights[at],
        lower=lower,
        upper=upper,
        budget=budget,
        alpha=problem.alpha,
        exhaust=problem.exhaust,
    )
    v = solver(sample).vouchers
    for seg in problem.segments:
        share = float(np.dot(v, np.asarray(seg.members, dtype=bool)[at])) / budget
        if seg.min_share is not None and share < seg.min_share * (1.0 + _SHARE_MARGIN):
            return False
        if seg.max_share is not None and share > seg.max_share * (1.0 - _SHARE_MARGIN):
            return False
    return True


def fast_solution(problem: AllocationProblem) -> FastSolution:
    """Run the fast solver without checks or certificate (use :func:`solve`).

    The search over the segments' price ranges (module docstring) is exact whether a segment
    binds or not, and costs about a third more than a solve without segments. When a strided
    sample of the users, solved without segments, meets every share with room to spare, the
    problem is first solved without them: if every segment's total then lies within its
    shares, that allocation is optimal with the shares too (optimal on a larger feasible set
    and feasible on the smaller one) and every segment price is zero, so a segment that does
    not bind costs the sample and one sum. A sample that misleads costs time, never the answer.
    """
    solver = _fast_linear if problem.alpha == 0 else _fast_positive_alpha
    if not problem.segments or not _sample_meets_shares(problem, solver):
        return solver(problem)
    free = solver(replace(problem, segments=()))
    budget = float(problem.budget)
    for seg in problem.segments:
        total = float(np.einsum("i,i->", free.vouchers, np.asarray(seg.members, dtype=bool)))
        if (seg.min_share is not None and total < seg.min_share * budget) or (
            seg.max_share is not None and total > seg.max_share * budget
        ):
            return solver(problem)
    return FastSolution(
        vouchers=free.vouchers,
        shadow_price=free.shadow_price,
        segment_prices={seg.name: (0.0, 0.0) for seg in problem.segments},
    )
