"""One entry point for every solver: checks, dispatch to the fast solver or the cvxpy model, and
the certificate that every returned allocation carries."""

from __future__ import annotations

import math
import time
from typing import Literal

import numpy as np

from allocator.errors import NotCertifiedError
from allocator.kernel.allocation import Allocation, bound_states
from allocator.kernel.certificate import DEFAULT_TOL, certify, utility
from allocator.kernel.claims import RULES, ClaimsAwards, divide, water_filling
from allocator.kernel.fast import fast_reach, fast_solution
from allocator.kernel.feasibility import (
    InvalidProblemError,
    check_feasible,
    segments_disjoint,
    validate,
)
from allocator.kernel.model import FairnessModel
from allocator.kernel.problem import AllocationProblem
from allocator.kernel.rule_certificate import certify_rule

Method = Literal["auto", "fast", "cvxpy"]


def solve(
    problem: AllocationProblem,
    *,
    method: Method | str = "auto",
    cvxpy_solver: str = "CLARABEL",
    tol: float = DEFAULT_TOL,
    certify_solution: bool = True,
) -> Allocation:
    """Solve ``problem`` and return a certified :class:`Allocation`.

    Parameters
    ----------
    problem
        The allocation problem.
    method
        ``"fast"`` (exact solver; disjoint segments only), ``"cvxpy"`` (the reference model,
        any segments) or ``"auto"`` (fast whenever it applies).
    cvxpy_solver
        CLARABEL, ECOS or SCS (cvxpy method only).
    tol
        Relative tolerance of the optimality certificate.
    certify_solution
        Certify the fast solver's continuous vouchers (default). ``False`` leaves
        :attr:`Allocation.certificate` ``None``: for a caller that certifies the amounts it pays
        instead (the studio certifies the cents it shows, each within a cent of its best
        response at the solver's prices, and a run written to disk always carries both). The
        cvxpy model and the claims rules are always certified: that is how their answers are
        accepted.

    Raises
    ------
    InvalidProblemError
        Invalid numbers, an unknown method, or ``"fast"`` asked for overlapping segments.
    InfeasibleError
        No allocation satisfies the constraints.
    SolverFailedError, NotCertifiedError
        The solver failed, or its answer does not pass the certificate.
    """
    started = time.perf_counter()
    if problem.rule is not None:
        return solve_rule(problem, started=started)
    validate(problem)
    check_feasible(problem)
    if method == "auto":
        method = "fast" if fast_reach(problem) else "cvxpy"
    if method == "cvxpy":
        return FairnessModel(problem, solver=cvxpy_solver, check=False).solve(
            tol=tol, started=started
        )
    if method != "fast":
        raise InvalidProblemError(f"unknown solver method {method!r}: use auto, fast or cvxpy")
    if not segments_disjoint(problem):
        raise InvalidProblemError(
            "the fast solver handles disjoint segments only, and some users belong to two segments",
            hint="use method 'cvxpy' (or 'auto')",
        )
    if not fast_reach(problem):
        raise InvalidProblemError(
            f"alpha = {problem.alpha:g} is too small for weights spanning a factor of "
            f"{float(np.max(problem.weights) / np.min(problem.weights)):.3g}: "
            "(w/max w)^(1/alpha) underflows",
            hint="use method 'cvxpy' (or 'auto'), or a larger alpha",
        )
    sol = fast_solution(problem)
    if not certify_solution:
        return Allocation(
            vouchers=sol.vouchers,
            bound_state=bound_states(sol.vouchers, problem.lower, problem.upper),
            method="fast",
            status="optimal",
            objective=float(np.dot(problem.weights, utility(sol.vouchers, problem.alpha))),
            shadow_price=sol.shadow_price,
            segment_prices=dict(sol.segment_prices),
            certificate=None,
            seconds=time.perf_counter() - started,
        )
    cert = certify(problem, sol.vouchers, sol.shadow_price, sol.segment_prices, tol=tol)
    if not cert.certified:
        raise NotCertifiedError(
            "the fast solver's allocation did not pass its optimality certificate: "
            + "; ".join(cert.failures),
            status="optimal",
            hint="try method 'cvxpy'; very large alpha can push the shadow price outside float64",
        )
    return Allocation(
        vouchers=sol.vouchers,
        bound_state=bound_states(sol.vouchers, problem.lower, problem.upper),
        method="fast",
        status="optimal",
        objective=cert.objective,
        shadow_price=sol.shadow_price,
        segment_prices=dict(sol.segment_prices),
        certificate=cert,
        seconds=time.perf_counter() - started,
    )


#: The rule that is not a claims rule: the exact alpha = infinity limit (water-filling).
MAX_MIN = "max_min"


def rule_awards(problem: AllocationProblem) -> ClaimsAwards:
    """The awards of ``problem.rule`` on its claims (the weights) within its bounds."""
    rule = problem.rule
    if rule is None:
        raise InvalidProblemError("the problem has no claims rule (it is alpha-fair)")
    if problem.segments:
        raise InvalidProblemError(
            f"the {rule} rule has no segment shares: a claims rule divides the whole budget "
            "by its own path",
            hint="remove the segments, or use the alpha-fair objective",
        )
    if rule == MAX_MIN:
        return water_filling(
            problem.weights, problem.budget, lower=problem.lower, upper=problem.upper
        )
    if rule not in RULES:
        raise InvalidProblemError(f"unknown rule {rule!r}; known: {', '.join([*RULES, MAX_MIN])}")
    return divide(
        rule,
        problem.weights,
        problem.budget,
        lower=problem.lower,
        upper=problem.upper,
        parameter=problem.rule_parameter,
    )


def user_caps(problem: AllocationProblem) -> np.ndarray:
    """Each user's own cap under the problem's rule: for a claims rule at most the claim (the
    weight). At a floor or cap means these bounds, not a stage's: a Talmud award at half its
    claim is not at a cap."""
    if problem.rule is None or problem.rule == MAX_MIN:
        return np.asarray(problem.upper, dtype=np.float64)
    return np.minimum(problem.upper, problem.weights)


def solve_rule(problem: AllocationProblem, *, started: float | None = None) -> Allocation:
    """The certified awards of a claims rule (see :func:`rule_awards`); the budget is spent."""
    started = time.perf_counter() if started is None else started
    awards = rule_awards(problem)
    cert = certify_rule(
        awards, awards.awards, problem.budget, bounds=(problem.lower, user_caps(problem))
    )
    if not cert.certified:
        raise NotCertifiedError(
            f"the {problem.rule} awards did not pass their certificate: "
            + "; ".join(cert.failures),
            status="optimal",
            hint="report the scenario and data: this is a bug",
        )
    return Allocation(
        vouchers=awards.awards,
        bound_state=bound_states(awards.awards, problem.lower, user_caps(problem)),
        method=f"rule:{problem.rule}",
        status="optimal",
        objective=math.nan,
        shadow_price=float(awards.root),
        segment_prices={},
        certificate=cert,
        seconds=time.perf_counter() - started,
        rule_awards=awards,
    )
