r"""The polish: a few Newton steps on a conic solver's multipliers, then the users' best responses.

An interior-point answer where the marginal utility is nearly flat can be off by cents. Given the
solver's budget and segment prices, each user's best response
:math:`v_i = \operatorname{clip}((w_i/\lambda_i)^{1/\alpha}, \ell_i, h_i)` is exact, and the
prices themselves solve the small system "each constraint spends what it must": Newton's method on
that dual system (one unknown per priced constraint) converges in a few steps from the solver's
prices. Used by :class:`allocator.kernel.model.FairnessModel` for ``alpha > 0``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from allocator.kernel.problem import AllocationProblem


def spread_residual(v: np.ndarray, lo: np.ndarray, hi: np.ndarray, residual: float) -> None:
    """Move ``residual`` USD onto the users strictly inside their bounds, in proportion to their
    vouchers (a first-order shift of the common price); a no-op for a zero residual."""
    if residual == 0.0:
        return
    inside = (v > lo) & (v < hi)
    total = float(v[inside].sum())
    if total <= 0.0:
        return
    v[inside] = np.minimum(np.maximum(v[inside] * (1.0 + residual / total), lo[inside]), hi[inside])


@dataclass(frozen=True, eq=False)
class RawSolution:
    """What cvxpy returned, mapped to USD (vouchers clipped to the bounds), before polishing."""

    status: str
    vouchers: np.ndarray
    shadow_price: float
    segment_prices: dict[str, tuple[float, float]]


@dataclass(frozen=True, eq=False)
class PolishResult:
    """Multipliers refined by Newton steps on the dual and the vouchers they imply."""

    vouchers: np.ndarray
    shadow_price: float
    segment_prices: dict[str, tuple[float, float]]
    iterations: int
    residual_usd: float


def polish(
    problem: AllocationProblem,
    shadow_price: float,
    segment_prices: dict[str, tuple[float, float]],
    *,
    max_iter: int = 40,
) -> PolishResult | None:
    r"""Refine solver multipliers to the exact optimum by Newton's method on the dual.

    An interior-point solution is accurate in objective (about 1e-9 relative) but a voucher
    whose marginal utility is nearly flat can still be off by tens of cents. The dual has only
    :math:`1 + 2S` variables :math:`y = (\lambda, \mu^{\min}, \mu^{\max})`:

    .. math::

        D(y) = \sum_i \max_{\ell_i \le v \le h_i} \big(w_i u_\alpha(v) - (A y)_i v\big) + b^\top y,
        \qquad \nabla D = b - A^\top v^\star(y),\qquad
        \nabla^2 D = A^\top \operatorname{diag}\!\Big(\frac{v_i^\star}{\alpha (Ay)_i}
            [\ell_i < v_i^\star < h_i]\Big) A,

    with :math:`(Ay)_i = \lambda_i` the user's price and :math:`b = (B, -m_s B, M_s B)`. Starting
    from the solver's multipliers, projected Newton steps (multipliers of inequalities stay
    :math:`\ge 0`) drive the constraint residuals :math:`\nabla D` to zero; the vouchers are the
    best response :math:`v^\star(y)`, which satisfies stationarity exactly. Overlapping
    segments are fine. Returns ``None`` when the steps stop reducing the residual before it is
    small (e.g. a binding segment with no user strictly inside its bounds); the caller then
    keeps the solver's own answer. ``alpha > 0`` only.
    """
    alpha = float(problem.alpha)
    if alpha <= 0:
        return None
    budget = float(problem.budget)
    w = np.asarray(problem.weights, dtype=np.float64)
    lo = np.asarray(problem.lower, dtype=np.float64)
    hi = np.asarray(problem.upper, dtype=np.float64)
    logw = np.log(w)
    # one column per multiplier: (name, side, member mask, sign in the price, b entry)
    cols: list[tuple[str, str, np.ndarray | None, float, float]] = [
        ("", "budget", None, 1.0, budget)
    ]
    y0 = [max(shadow_price, 0.0) if not problem.exhaust else shadow_price]
    for seg in problem.segments:
        members = np.asarray(seg.members, dtype=bool)
        mu_min, mu_max = segment_prices.get(seg.name, (0.0, 0.0))
        if seg.min_share is not None:
            cols.append((seg.name, "min", members, -1.0, -seg.min_share * budget))
            y0.append(max(mu_min, 0.0))
        if seg.max_share is not None:
            cols.append((seg.name, "max", members, 1.0, seg.max_share * budget))
            y0.append(max(mu_max, 0.0))
    y = np.array(y0, dtype=np.float64)
    bounded = np.array([not problem.exhaust] + [True] * (len(cols) - 1))
    b = np.array([c[4] for c in cols])
    tol_usd = 1e-12 * budget + 1e-9

    def evaluate(y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        price = np.full(w.shape[0], y[0])
        for j, (_, _, members, sign, _) in enumerate(cols[1:], start=1):
            if y[j] != 0.0:
                price[members] += sign * y[j]
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            raw = np.exp((logw - np.log(price)) / alpha)
        raw = np.where(price > 0.0, raw, np.inf)
        v = np.minimum(np.maximum(raw, lo), hi)
        inner = (raw > lo) & (raw < hi)
        h = np.where(inner, v / (alpha * np.where(inner, price, 1.0)), 0.0)
        grad = np.empty(len(cols))
        hess = np.empty((len(cols), len(cols)))
        sums_v = [float(v.sum())]
        sums_h = [float(h.sum())]
        for _, _, members, sign, _ in cols[1:]:
            sums_v.append(sign * float(v[members].sum()))
        for j in range(len(cols)):
            grad[j] = b[j] - sums_v[j]
        for j, (_, _, mj, sj, _) in enumerate(cols):
            for k, (_, _, mk, sk, _) in enumerate(cols):
                if k < j:
                    continue
                if j == 0 and k == 0:
                    val = sums_h[0]
                elif j == 0:
                    val = sk * float(h[mk].sum())
                else:
                    assert mj is not None and mk is not None  # only the budget's column has none
                    both = mj if mk is mj else (mj & mk)
                    val = sj * sk * float(h[both].sum())
                hess[j, k] = hess[k, j] = val
        res = np.where(bounded & (y <= 0.0), np.maximum(-grad, 0.0), np.abs(grad))
        return v, grad, hess, float(res.max())

    v, grad, hess, res = evaluate(y)
    it = 0
    for it in range(1, max_iter + 1):  # noqa: B007 - the count is reported
        if res <= tol_usd:
            break
        # A multiplier whose constraint is clearly slack (gradient > 0) belongs at 0; when dropping
        # such multipliers lowers the residual, do so before the Newton step. Newton alone can
        # stall there: a slack constraint's user set may have no interior user to move.
        base, v_b, g_b, h_b, r_b = y, v, grad, hess, res
        for j in np.argsort(-grad):  # one at a time, the most slack first
            if bounded[j] and base[j] > 0.0 and g_b[j] > 1e-6 * budget:
                trial = base.copy()
                trial[j] = 0.0
                v_t, g_t, h_t, r_t = evaluate(trial)
                if r_t < r_b:
                    base, v_b, g_b, h_b, r_b = trial, v_t, g_t, h_t, r_t
        inactive = bounded & (base <= 0.0) & (g_b >= 0.0)
        idx = np.flatnonzero(~inactive)
        d = np.zeros(0)
        if idx.size:
            # least squares: a direction no interior user responds to gets no step
            d = np.linalg.lstsq(h_b[np.ix_(idx, idx)], -g_b[idx], rcond=1e-12)[0]
        best = (r_b, base, v_b, g_b, h_b)
        step = 1.0
        while idx.size and step > 1e-8:
            y_new = base.copy()
            y_new[idx] += step * d
            y_new = np.where(bounded, np.maximum(y_new, 0.0), y_new)
            v_new, g_new, h_new, r_new = evaluate(y_new)
            if r_new < best[0]:
                best = (r_new, y_new, v_new, g_new, h_new)
                break
            step *= 0.5
        if not best[0] < res:
            break
        res, y, v, grad, hess = best
    if res > 1e-7 * budget:
        return None
    v = v.copy()
    if problem.exhaust or float(v.sum()) > budget:
        spread_residual(v, lo, hi, budget - float(v.sum()))
    lam = float(y[0])
    prices: dict[str, tuple[float, float]] = {seg.name: (0.0, 0.0) for seg in problem.segments}
    for j, (name, side, _, _, _) in enumerate(cols[1:], start=1):
        mu_min, mu_max = prices[name]
        prices[name] = (float(y[j]), mu_max) if side == "min" else (mu_min, float(y[j]))
    return PolishResult(
        vouchers=v, shadow_price=lam, segment_prices=prices, iterations=it, residual_usd=res
    )
