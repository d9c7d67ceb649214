r"""The loan model with a minimum ticket: a mixed-integer programme with tangent cuts.

**Minimum ticket.** With :math:`T > 0` the model is mixed-integer (:math:`z_i \in \{0,1\}`,
:math:`T z_i \le x_i \le U_i z_i`). MILP solvers (HiGHS) take no logarithm or power, so the
utility gain over a zero loan, :math:`g_i(x) = u_\alpha(x + s) - u_\alpha(s)`, is bounded by
tangent cuts at ``pwl_breakpoints`` geometrically spaced points of :math:`[T, U_i]` and by the
chord :math:`g_i \le g_i(T)\,x_i/T`; together they describe the concave envelope of
:math:`\{0\} \cup [T, U_i]`, so the LP relaxation is tight. Tangents over-estimate a concave
function, so the MILP's optimum (and its dual bound) is an **upper bound** on the true optimum;
the cut error between two tangent points is computed exactly at their intersection and summed
into an a-priori bound. The on/off pattern found is then **polished**: the exact convex
problem with that pattern fixed is solved with Clarabel, which also yields the multipliers.
The report gives the PWL objective, the true objective of the MILP's own loans, the polished
objective, the convex relaxation (no minimum ticket, also an upper bound) and the resulting
optimality gap. Without a minimum ticket the exact convex model is solved with Clarabel.
Only a proven MILP answer is used: HiGHS must report optimality within ``mip_rel_gap``; a run
stopped by ``time_limit_s`` (or an iteration limit) is refused (exit 3, nothing written) even
if it has an incumbent. A looser answer is accepted only by raising ``mip_rel_gap`` (an
explicit tolerance); the achieved gap is in the manifest and ``loans check`` verifies both.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from allocator.errors import SolverFailedError
from allocator.kernel.native import native_stdout_to_stderr
from allocator.loans.convex import cvxpy, solver_options
from allocator.loans.problem import LoanProblem, marginal_utility, utility
from allocator.settings.loans import LoanSolverSpec


@dataclass(frozen=True, eq=False)
class MipSolution:
    on: np.ndarray  # bool, length n
    x: np.ndarray  # USD, the MILP's own amounts
    pwl_objective: float  # USD utility, the MILP incumbent's PWL value
    pwl_upper_bound: float  # USD utility, from the MILP dual bound
    error_bound: float  # a-priori bound on PWL - true utility
    status: str
    mip_gap: float


def _scale(P: LoanProblem, idx: np.ndarray) -> float:
    # Solve in units of the median limit: amounts, the shift and u's range then sit where
    # conic solvers are accurate (an even split of the fund was measured to be less robust).
    return float(np.median(P.upper[idx])) if idx.size else P.fund / max(P.n, 1)


def _pwl_tables(P: LoanProblem, idx: np.ndarray, unit: float, k: int) -> tuple[np.ndarray, ...]:
    """Tangent points ``Y`` (scaled, shifted), gains and slopes there, and the per-applicant
    largest cut error (scaled utility)."""
    a, s = P.alpha, P.shift / unit
    T = P.min_ticket / unit
    U = P.upper[idx] / unit
    y0, y1 = T + s, np.maximum(U, T) + s
    frac = np.linspace(0.0, 1.0, k)
    Y = y0 * np.power((y1 / y0)[:, None], frac[None, :])
    u0 = float(utility(np.array([s]), a)[0]) if s > 0 else 0.0
    gain = utility(Y, a) - u0
    slope = marginal_utility(Y, a)
    # Largest gap between the tangent envelope and u between consecutive tangent points: at the
    # intersection of the two tangents (u concave, so that is where the envelope is highest).
    g0, g1, s0, s1, Y0, Y1 = (
        gain[:, :-1],
        gain[:, 1:],
        slope[:, :-1],
        slope[:, 1:],
        Y[:, :-1],
        Y[:, 1:],
    )
    ds = s0 - s1
    with np.errstate(divide="ignore", invalid="ignore"):
        ystar = np.where(ds > 0, (g1 - g0 + s0 * Y0 - s1 * Y1) / np.where(ds > 0, ds, 1.0), Y0)
    ystar = np.clip(ystar, Y0, Y1)
    err = g0 + s0 * (ystar - Y0) - (utility(ystar, a) - u0)
    err_i = np.maximum(err.max(axis=1), 0.0) if k > 1 else np.zeros(idx.size)
    return Y, gain, slope, err_i, np.asarray(u0)


def solve_mip(P: LoanProblem, idx: np.ndarray, spec: LoanSolverSpec) -> MipSolution:
    """The minimum-ticket model with tangent cuts, solved by HiGHS over applicants ``idx``.

    Only a proven answer is returned: HiGHS must report optimality, i.e. a relative gap
    between its incumbent and its dual bound of at most ``spec.mip_rel_gap``. A run that stops
    at a limit (``time_limit_s``, or HiGHS's iteration or node limits) is refused even when it
    has an incumbent; to accept a looser answer, raise ``solver.mip_rel_gap`` (an explicit
    tolerance, recorded with the achieved gap in the manifest and verified by
    :func:`check_loans`).

    Raises
    ------
    SolverFailedError
        HiGHS failed, stopped at a limit, or did not reach the requested gap.
    """
    cp = cvxpy()
    import scipy.sparse as sp

    unit = _scale(P, idx)
    m, k = idx.size, spec.pwl_breakpoints
    a, s = P.alpha, P.shift / unit
    T = P.min_ticket / unit
    U = P.upper[idx] / unit
    w = P.weight[idx]
    Y, gain, slope, err_i, u0 = _pwl_tables(P, idx, unit, k)
    x = cp.Variable(m)
    z = cp.Variable(m, boolean=True)
    d = cp.Variable(m)
    # d_i <= gain_ik + slope_ik (x_i + s - Y_ik), as one sparse block: rows i*k + j.
    rows = np.arange(m * k)
    cols = np.repeat(np.arange(m), k)
    sel = sp.csr_matrix((np.ones(m * k), (rows, cols)), shape=(m * k, m))
    A = sp.csr_matrix((slope.ravel(), (rows, cols)), shape=(m * k, m))
    rhs = (gain + slope * (s - Y)).ravel()
    chord = float(utility(np.array([T + s]), a)[0] - u0) / T
    cons = [
        sel @ d - A @ x <= rhs,
        d <= chord * x,
        x >= T * z,
        x <= cp.multiply(U, z),
        cp.sum(x) <= P.fund / unit,
        P.el_coef[idx] @ x <= P.el_budget / unit,
    ]
    prob = cp.Problem(cp.Maximize(w @ d), cons)
    # A tight integrality tolerance: with z_i = 1e-6 "counting as 0" an excluded applicant
    # could still take a sliver of the chord's utility, which for alpha > 1 is steep.
    opts = {
        "mip_rel_gap": float(spec.mip_rel_gap),
        "time_limit": float(spec.time_limit_s),
        "random_seed": 0,
        "mip_feasibility_tolerance": 1e-9,
    }
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            with native_stdout_to_stderr():
                prob.solve(solver=spec.mip_solver, **opts, **solver_options(spec.mip_solver))
    except cp.error.SolverError as exc:
        raise SolverFailedError(
            f"the minimum-ticket loan model could not be solved by {spec.mip_solver}: {exc}",
            status="solver_error",
        ) from None
    except ValueError as exc:
        # cvxpy's "Cannot unpack invalid solution": HiGHS returned a status cvxpy cannot map
        # (kUnknown), typically on a model whose limits span too many orders of magnitude.
        if "invalid solution" not in str(exc):
            raise
        raise SolverFailedError(
            f"the minimum-ticket loan model stopped with an unknown status ({spec.mip_solver}): "
            "the model is probably too badly scaled (limits spanning many orders of magnitude "
            "above the minimum ticket).",
            status="unknown",
            hint="lower alpha, raise limits.min_ticket_usd or lower solver.pwl_breakpoints.",
        ) from None
    info = prob.solver_stats.extra_stats
    gap = float(getattr(info, "mip_gap", math.inf)) if info is not None else math.inf
    if prob.status == "user_limit":
        run_time = prob.solver_stats.solve_time
        timed_out = run_time is not None and run_time >= 0.9 * float(spec.time_limit_s)
        status = "time_limit" if timed_out else "user_limit"
        what = (
            f"its time limit (solver.time_limit_s = {spec.time_limit_s:g} s)"
            if timed_out
            else "an iteration or node limit"
        )
        raise SolverFailedError(
            f"the minimum-ticket loan model stopped at {what} before proving optimality "
            f"({spec.mip_solver} status {status!r}, relative gap {gap:.3g} against "
            f"solver.mip_rel_gap = {spec.mip_rel_gap:g}); loans that are not proven optimal "
            "are not written.",
            status=status,
            hint="raise solver.time_limit_s, or accept a looser answer with a larger "
            "solver.mip_rel_gap (at most 0.1), or lower solver.pwl_breakpoints.",
        )
    if prob.status != "optimal" or z.value is None or x.value is None:
        raise SolverFailedError(
            f"the minimum-ticket loan model stopped with status {prob.status!r} and no usable "
            f"solution ({spec.mip_solver}).",
            status=str(prob.status),
            hint="raise solver.time_limit_s or solver.mip_rel_gap, or lower pwl_breakpoints.",
        )
    if not gap <= spec.mip_rel_gap * (1 + 1e-9):
        # HiGHS also stops on an absolute gap (1e-6); the documented rule is the relative one.
        raise SolverFailedError(
            f"the minimum-ticket loan model reports optimality with relative gap {gap:.3g}, above "
            f"solver.mip_rel_gap = {spec.mip_rel_gap:g} ({spec.mip_solver}); the loans are not "
            "proven optimal to the requested tolerance and are not written.",
            status="gap_not_met",
            hint="raise solver.mip_rel_gap (at most 0.1).",
        )
    # HiGHS minimises -objective: its primal minus dual bound is the absolute gap.
    abs_gap = max(float(info.objective_function_value) - float(info.mip_dual_bound), 0.0)
    on = np.zeros(P.n, dtype=bool)
    on[idx] = np.asarray(z.value) > 0.5
    x_full = np.zeros(P.n)
    x_full[idx] = np.where(
        on[idx], np.clip(np.asarray(x.value) * unit, P.min_ticket, P.upper[idx]), 0.0
    )
    # Objective in scaled units: every applicant contributes u(s) plus its gain.
    base = float(P.weight.sum()) * float(u0)
    pwl = _to_usd(base + float(prob.value), P, unit)
    ub = _to_usd(base + float(prob.value) + abs_gap, P, unit)
    err = _gap_to_usd(float(np.dot(w, err_i)), P, unit)
    return MipSolution(on, x_full, pwl, ub, err, "optimal", gap)


def _to_usd(value_scaled: float, P: LoanProblem, unit: float) -> float:
    """A scaled-model objective (with every applicant's u(s) included) in USD utility."""
    if P.alpha == 1.0:
        return value_scaled + math.log(unit) * float(P.weight.sum())
    return value_scaled * float(unit ** (1.0 - P.alpha))


def _gap_to_usd(gap_scaled: float, P: LoanProblem, unit: float) -> float:
    return gap_scaled if P.alpha == 1.0 else gap_scaled * float(unit ** (1.0 - P.alpha))
