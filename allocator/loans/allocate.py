"""Solving a loan scenario end to end: the model, its solution, the term sheet and totals.

See :mod:`allocator.loans.problem` for the model and the modules it names for each step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from allocator.errors import InfeasibleError, NotCertifiedError, SolverFailedError
from allocator.kernel.money import cents_array_to_usd
from allocator.loans.convex import ContinuousSolution, solve_convex
from allocator.loans.mip import solve_mip
from allocator.loans.problem import (
    BINDING_STATES,
    LoanProblem,
    build_loan_problem,
    explain_infeasible,
    lendable,
    loan_objective,
)
from allocator.loans.terms import binding_labels, cents_expected_loss, round_to_cents, term_sheet
from allocator.settings.loans import LoanScenario, validate_loan_scenario


@dataclass(frozen=True, eq=False)
class LoanResult:
    """A solved loan scenario: the term sheet and everything a manifest reports.

    ``term_sheet`` has one row per applicant (sorted by institution id) with the columns of
    :data:`TERM_SHEET_COLUMNS`; ``amount_cents`` is exact. ``totals``, ``multipliers``,
    ``solver`` and ``objective`` are plain JSON-ready dicts.
    """

    scenario: LoanScenario
    problem: LoanProblem
    term_sheet: pl.DataFrame
    totals: dict[str, Any]
    multipliers: dict[str, Any]
    solver: dict[str, Any]
    objective: dict[str, Any]


def allocate_loans(apps: pl.DataFrame, scn: LoanScenario, *, source: str = "<table>") -> LoanResult:
    """Solve the loan model for validated applications (see :mod:`allocator.loans.problem`).

    Raises
    ------
    InputError
        A credit tier of the file is not in the scenario's tier table.
    InfeasibleError
        The settings let the fund lend nothing at all (explained before solving).
    SolverFailedError, NotCertifiedError
        The solver failed, or its answer fails the optimality check.
    """
    validate_loan_scenario(scn, file=f"{scn.name!r}")
    P = build_loan_problem(apps, scn, source=source)
    explain_infeasible(P)
    ok = lendable(P)
    idx = np.flatnonzero(ok)
    sv = scn.solver
    zeros = np.zeros(P.n)
    # The convex relaxation (no minimum ticket): the exact answer when T = 0, an upper bound
    # on the optimum otherwise.
    relax_idx = np.flatnonzero(np.minimum.reduce(list(P.limits_cents().values())) > 0)
    relax = solve_convex(P, relax_idx, zeros[relax_idx], P.upper[relax_idx], sv.convex_solver)
    relax_obj = loan_objective(relax.x, P.weight, P.alpha, P.shift)
    solver_info: dict[str, Any] = {"convex_solver": relax.solver}
    objective: dict[str, Any] = {"relaxation": relax_obj}
    if P.min_ticket <= 0:
        sol = relax
        on = sol.x > 0
        solver_info.update(method="convex", status=sol.status)
    else:
        mip = solve_mip(P, idx, sv)
        on = mip.on
        on_idx = np.flatnonzero(on)
        try:
            sol = solve_convex(
                P, on_idx, np.full(on_idx.size, P.min_ticket), P.upper[on_idx], sv.convex_solver
            )
            polish = sol.status
        except (SolverFailedError, NotCertifiedError, InfeasibleError) as exc:
            # Tolerances can make the fixed pattern marginally infeasible; the MILP's own
            # amounts are then kept (they satisfy every constraint up to its tolerance).
            status = getattr(exc, "status", None) or "infeasible"
            sol = ContinuousSolution(mip.x, None, None, f"milp ({status})", None)
            polish = f"failed: {status}"
        mip_true = loan_objective(mip.x, P.weight, P.alpha, P.shift)
        solver_info.update(
            method="milp_pwl",
            status=mip.status,
            mip_solver=sv.mip_solver,
            mip_rel_gap_achieved=mip.mip_gap,
            polish_status=polish,
            pwl_breakpoints=sv.pwl_breakpoints,
        )
        objective.update(
            pwl=mip.pwl_objective,
            pwl_upper_bound=mip.pwl_upper_bound,
            milp_true=mip_true,
            pwl_gap=mip.pwl_objective - mip_true,
            pwl_error_bound=mip.error_bound,
        )

    cents, repaired = round_to_cents(P, sol.x, on)
    amount = cents_array_to_usd(cents)
    obj = loan_objective(amount, P.weight, P.alpha, P.shift)
    objective["value"] = obj
    upper_bound = min(objective.get("pwl_upper_bound", math.inf), relax_obj)
    objective["upper_bound"] = upper_bound
    objective["optimality_gap"] = max(upper_bound - obj, 0.0)

    fund_binding, el_binding = shared_binding(P, sol)
    binding = binding_labels(P, cents, sol.lam, sol.mu, fund_binding, el_binding)
    sheet = term_sheet(P, cents, amount, binding)
    lent = int(cents.sum())
    counts = {b: int(sum(1 for v in binding if v == b)) for b in BINDING_STATES}
    totals = {
        "applicants": P.n,
        "funded": int((cents > 0).sum()),
        "requested_usd": math.fsum(P.requested.tolist()),
        "fund_cents": P.fund_cents,
        "lent_cents": lent,
        "unlent_cents": P.fund_cents - lent,
        "expected_loss_usd": cents_expected_loss(P, cents),
        "el_budget_usd": P.el_budget,
        "rounding_repair_cents": int(repaired),
        "binding_counts": counts,
        "lent_by_tier_cents": {
            t.name: int(cents[np.array(P.tier) == t.name].sum()) for t in scn.pricing.tiers
        },
        "interest_per_year_usd": math.fsum((amount * P.rate).tolist()),
    }
    multipliers = {
        "fund_per_usd": sol.lam,
        "el_budget_per_usd": sol.mu,
        "fund_binding": bool(fund_binding),
        "el_budget_binding": bool(el_binding),
        "kkt_violation": sol.kkt,
        "conic_max_diff_usd": sol.cvx_diff,
    }
    return LoanResult(scn, P, sheet, totals, multipliers, solver_info, objective)


def shared_binding(P: LoanProblem, sol: ContinuousSolution) -> tuple[bool, bool]:
    """Whether the fund and the expected-loss budget bind: their multipliers when known (exact
    for alpha > 0, the linear programme's duals for alpha = 0; :func:`kkt_violation` has
    certified them complementary to the slacks), else their slacks before rounding (within a
    millionth and one dollar, or a cent for the budget)."""
    if sol.lam is not None and sol.mu is not None:
        return sol.lam > 0, sol.mu > 0
    fund_slack = P.fund - math.fsum(sol.x.tolist())
    el_slack = P.el_budget - math.fsum((P.el_coef * sol.x).tolist())
    return (fund_slack <= 1e-6 * P.fund + 1.0, el_slack <= 1e-6 * max(P.el_budget, 1.0) + 0.01)
