r"""The loan model without a minimum ticket: solved in cvxpy, made exact, certified.

The problem is the one of :mod:`allocator.loans.problem` over a set of applicants with
bounds :math:`\ell_i \le x_i \le h_i` (zero and the limit :math:`U_i`, or the minimum ticket
and :math:`U_i` for the applicants a minimum-ticket pattern keeps).

**Exactness.** An interior-point answer is accurate to about 1e-8 of the fund — dollars — and
exponential/power cones are sensitive to scaling. Apart from the fund and the budget the
problem is separable, so each optimum is :math:`x_i = \mathrm{clip}((w_i/p_i)^{1/\alpha} - s,
\ell_i, U_i)` with :math:`p_i = \lambda + \mu\,\mathrm{PD}_i\,\mathrm{LGD}`; the conic
answer's multipliers are refined on these conditions (two nested root searches) to machine
precision, the loans follow, and a certificate (feasibility, complementary slackness, every
loan equal to its implied amount) is checked before anything is paid. The conic solver's
status and its distance to the final loans are reported; if it fails outright the refinement
still gives, and certifies, the answer. alpha = 0 is a linear programme, solved by HiGHS.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from allocator.errors import InfeasibleError, NotCertifiedError, SolverFailedError
from allocator.kernel.native import native_stdout_to_stderr
from allocator.loans.problem import LoanProblem

#: Relative violation of the marginal conditions above which a linear (alpha = 0) solution is
#: refused; for alpha > 0 the limit is one cent.
KKT_TOLERANCE = 1e-3


def solver_options(solver: str) -> dict[str, Any]:
    # verbose=False keeps cvxpy's and the solver's own log off; HiGHS also gets output_flag,
    # which turns off every log channel it has (console and log file), not only the console.
    opts: dict[str, Any] = {"verbose": False}
    if solver == "HIGHS":
        opts["output_flag"] = False
    return opts


@dataclass(frozen=True, eq=False)
class ContinuousSolution:
    """A solution in USD before rounding, with multipliers in utility per USD.

    ``kkt`` is the largest distance (USD) between a loan and the loan its multipliers imply
    (alpha > 0), or the largest relative violation of the marginal conditions (alpha = 0);
    ``cvx_diff`` the largest distance (USD) between the conic solver's loans and the final ones.
    """

    x: np.ndarray
    lam: float | None
    mu: float | None
    status: str
    kkt: float | None
    cvx_diff: float | None = None
    solver: str = ""


def cvxpy() -> Any:
    """The cvxpy module, imported when a model is first solved (importing it takes about a
    second, which ``loans check`` and ``--help`` need not pay) and typed ``Any``: cvxpy exports
    its atoms without declaring them, which mypy cannot follow."""
    import cvxpy as cp

    return cp


def _cvx_utility(y: Any, alpha: float) -> Any:
    cp = cvxpy()

    if alpha == 1.0:
        return cp.log(y)
    if alpha == 0.0:
        return y
    if alpha < 1.0:
        return cp.power(y, 1.0 - alpha) / (1.0 - alpha)
    return -cp.power(y, 1.0 - alpha) / (alpha - 1.0)


def _solve_conic(
    P: LoanProblem, idx: np.ndarray, lo: np.ndarray, hi: np.ndarray, solver: str, unit: float
) -> tuple[np.ndarray, float, float, str] | str:
    """The convex model as written, in cvxpy; its loans (USD), multipliers (per USD) and
    status, or the status alone when it failed."""
    cp = cvxpy()

    a = P.alpha
    x = cp.Variable(idx.size)
    fund = cp.sum(x) <= P.fund / unit
    el = P.el_coef[idx] @ x <= P.el_budget / unit
    cons = [x >= lo / unit, x <= hi / unit, fund, el]
    prob = cp.Problem(cp.Maximize(P.weight[idx] @ _cvx_utility(x + P.shift / unit, a)), cons)
    try:
        with warnings.catch_warnings():
            # An inaccurate answer is reported through its status and refined below.
            warnings.simplefilter("ignore", UserWarning)
            with native_stdout_to_stderr():
                prob.solve(solver=solver, **solver_options(solver))
    except cp.error.SolverError:
        return "solver_error"
    except ValueError as exc:
        # cvxpy raises a bare ValueError ("Cannot unpack invalid solution") when the solver
        # returns a status it cannot map, e.g. HiGHS's kUnknown on a badly scaled model.
        if "invalid solution" not in str(exc):
            raise
        return "unknown"
    if prob.status not in ("optimal", "optimal_inaccurate") or x.value is None:
        return str(prob.status)
    # Multipliers of the scaled model -> per USD: the objective scales by unit^(1-a) (a
    # constant shift for a = 1) and each constraint by unit.
    to_usd = unit ** (-a)
    lam = max(float(fund.dual_value), 0.0) * to_usd
    mu = max(float(el.dual_value), 0.0) * to_usd
    return np.clip(np.asarray(x.value, np.float64) * unit, lo, hi), lam, mu, str(prob.status)


def _response(
    P: LoanProblem, idx: np.ndarray, lo: np.ndarray, hi: np.ndarray, lam: float, mu: float
) -> np.ndarray:
    r"""Loans the multipliers imply: :math:`x_i = \mathrm{clip}((w_i/p_i)^{1/\alpha} - s,
    \ell_i, h_i)` with :math:`p_i = \lambda + \mu\,\mathrm{PD}_i\,\mathrm{LGD}` (alpha > 0)."""
    p = lam + mu * P.el_coef[idx]
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        y = np.where(
            p > 0, np.power(P.weight[idx] / np.where(p > 0, p, 1.0), 1.0 / P.alpha), np.inf
        )
    return np.clip(y - P.shift, lo, hi)


def _bisect_price(f: Callable[[float], float], target: float, start: float | None) -> float:
    """Smallest price ``t >= 0`` (to machine precision) with ``f(t) <= target``, for ``f``
    non-increasing and continuous; ``start`` is a guess that narrows the first bracket."""
    if f(0.0) <= target:
        return 0.0
    good = start is not None and start > 0 and math.isfinite(start)
    hi = start * (1 + 1e-3) if good else 1.0  # type: ignore[operator]
    lo = start * (1 - 1e-3) if good else 0.25  # type: ignore[operator]
    for _ in range(600):
        if f(hi) <= target:
            break
        lo, hi = hi, hi * 4.0
    else:
        return math.inf
    for _ in range(600):
        if f(lo) > target:
            break
        hi, lo = lo, lo / 4.0
    else:
        return hi
    from scipy.optimize import brentq

    # Brent's method converges superlinearly on this piecewise-smooth function; the answer is
    # then nudged up to the feasible side.
    t = float(brentq(lambda v: f(v) - target, lo, hi, xtol=1e-300, rtol=1e-15, maxiter=300))
    step = max(abs(t), 1e-300) * 4e-16
    for _ in range(200):
        if t >= hi or f(t) <= target:
            break
        t, step = t + step, step * 2.0
    return min(t, hi)


def _refine(
    P: LoanProblem,
    idx: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    start: tuple[float, float] | None,
) -> tuple[np.ndarray, float, float]:
    r"""Exact loans from the optimality conditions (alpha > 0).

    The problem is separable apart from the fund and the expected-loss budget, so an optimum
    is :func:`_response` at multipliers :math:`(\lambda, \mu) \ge 0` with complementary
    slackness. For a given :math:`\mu`, :math:`\lambda(\mu)` is the smallest price that keeps
    the total within the fund; the expected loss at :math:`(\lambda(\mu), \mu)` is
    non-increasing in :math:`\mu` (it is minus the derivative of a convex dual function), so a
    second bisection finds :math:`\mu`. Each price is taken on the feasible side.
    """
    c = P.el_coef[idx]
    last = {"lam": start[0] if start is not None else None}

    def lam_for(mu: float) -> float:
        lam = _bisect_price(
            lambda t: float(np.sum(_response(P, idx, lo, hi, t, mu))), P.fund, last["lam"]
        )
        if lam > 0 and math.isfinite(lam):
            last["lam"] = lam
        return lam

    def el_at(mu: float) -> float:
        return float(np.dot(c, _response(P, idx, lo, hi, lam_for(mu), mu)))

    mu = _bisect_price(el_at, P.el_budget, start[1] if start is not None else None)
    lam = lam_for(mu)
    return _response(P, idx, lo, hi, lam, mu), lam, mu


def solve_convex(
    P: LoanProblem, idx: np.ndarray, lo: np.ndarray, hi: np.ndarray, solver: str
) -> ContinuousSolution:
    """Exact convex model over applicants ``idx`` with bounds ``lo <= x <= hi`` (USD).

    The model is stated and solved in cvxpy (``solver``, Clarabel by default; HiGHS for the
    linear case alpha = 0); for alpha > 0
    its answer is then made exact on the optimality conditions (:func:`_refine`, started at
    the conic multipliers) — an interior-point answer is accurate to about 1e-8 of the fund,
    i.e. to dollars, and the term sheet is in cents. The distance between the two is reported;
    if the conic solve fails the refinement alone gives the answer, which its certificate
    (:func:`kkt_violation`) proves optimal.
    """
    x_full = np.zeros(P.n)
    if idx.size == 0:
        return ContinuousSolution(x_full, 0.0, 0.0, "empty", 0.0, 0.0, solver)
    if float(lo.sum()) > P.fund or math.fsum((P.el_coef[idx] * lo).tolist()) > P.el_budget:
        raise InfeasibleError(
            "the minimum tickets chosen do not fit in the fund or the expected-loss budget."
        )
    if P.alpha == 0.0:
        # A linear programme: the simplex method gives an exact vertex and exact duals.
        solver = "HIGHS"
        units = [float(np.max(hi))]
    else:
        # Exponential and power cones are sensitive to scaling: the largest limit as the unit
        # was measured to suit alpha <= 1 best and the median limit alpha > 1; try both.
        units = [float(np.max(hi)), float(np.median(hi))]
        if P.alpha > 1.0:
            units.reverse()
    conic: tuple[np.ndarray, float, float, str] | str = "not run"
    for unit in units:
        if unit <= 0:
            continue
        conic = _solve_conic(P, idx, lo, hi, solver, unit)
        if not isinstance(conic, str) and conic[3] == "optimal":
            break
    if P.alpha == 0.0:
        if isinstance(conic, str):
            raise SolverFailedError(
                f"the linear loan model (alpha = 0) stopped with status {conic!r} ({solver}).",
                status=conic,
            )
        x, lam, mu, status = conic
        cvx_diff: float | None = 0.0
    else:
        start = None if isinstance(conic, str) else (conic[1], conic[2])
        x, lam, mu = _refine(P, idx, lo, hi, start)
        status = f"failed: {conic}" if isinstance(conic, str) else conic[3]
        cvx_diff = None if isinstance(conic, str) else float(np.max(np.abs(conic[0] - x)))
    x_full[idx] = x
    lo_full, hi_full = np.zeros(P.n), np.zeros(P.n)
    lo_full[idx], hi_full[idx] = lo, hi
    kkt = kkt_violation(P, x_full, lam, mu, idx, lo_full, hi_full)
    limit = KKT_TOLERANCE if P.alpha == 0.0 else 0.01  # relative, or one cent
    if not kkt <= limit:
        raise NotCertifiedError(
            f"the loan solution (alpha {P.alpha:g}, {solver} status {status}) fails its "
            f"optimality check: violation {kkt:.3g} > {limit:g}.",
            status=status,
        )
    return ContinuousSolution(x_full, lam, mu, status, kkt, cvx_diff, solver)


def kkt_violation(
    P: LoanProblem,
    x: np.ndarray,
    lam: float,
    mu: float,
    idx: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
) -> float:
    r"""Optimality certificate of loans ``x`` with multipliers ``lam``, ``mu`` over ``idx``.

    Requires primal feasibility (bounds, fund, budget: any breach is returned as its size)
    and complementary slackness (a positive multiplier with a slack constraint fails). Then,
    for alpha > 0, the largest distance in USD between a loan and the loan the multipliers
    imply, :func:`_response` — zero for an exact optimum, since the conditions are sufficient
    for this concave problem. For alpha = 0 (linear), with marginal utility :math:`w_i` and
    price :math:`p_i = \lambda + \mu\,\mathrm{PD}_i\,\mathrm{LGD}`, the largest relative
    violation of: :math:`w_i > p_i` only at the upper bound, :math:`w_i < p_i` only at the
    lower bound.
    """
    if idx.size == 0:
        return 0.0
    xi, l, h = x[idx], lo[idx], hi[idx]
    breach = max(float(np.max(l - xi)), float(np.max(xi - h)), 0.0)
    total = math.fsum(x.tolist())
    el = math.fsum((P.el_coef * x).tolist())
    breach = max(breach, total - P.fund, el - P.el_budget)
    slack_bad = (lam > 0 and P.fund - total > max(1e-9 * P.fund, 0.01)) or (
        mu > 0 and P.el_budget - el > max(1e-9 * P.el_budget, 0.01)
    )
    if slack_bad:
        return math.inf
    if P.alpha > 0:
        return max(breach, float(np.max(np.abs(xi - _response(P, idx, l, h, lam, mu)))))
    w = P.weight[idx]
    p = lam + mu * P.el_coef[idx]
    near = 0.01
    rel = (w - p) / np.maximum(p, 1e-300)
    v_up = np.where(xi < h - near, np.maximum(rel, 0.0), 0.0)
    v_dn = np.where(xi > l + near, np.maximum(-rel, 0.0), 0.0)
    return max(breach / P.fund, float(np.max(v_up)), float(np.max(v_dn)))
