r"""The USD 100M institutional loan fund: who gets how much, at what rate, and the proof.

The Together Initiative set aside a low-interest loan fund for severely affected ecosystem
partners, VIP and institutional users "to restart their trading", with no published allocation
rule. This module makes one explicit. With applicants :math:`i = 1..n`, loans :math:`x_i` (USD)
and the voucher model's weighted alpha-fair utility,

.. math::

    \begin{aligned}
    \max_{x}\quad & \sum_i w_i\,u_\alpha(x_i + s),\qquad
        u_\alpha(y) = \begin{cases}\log y & \alpha = 1\\
                                    y^{1-\alpha}/(1-\alpha) & \alpha \ne 1\end{cases}\\
    \text{s.t.}\quad & 0 \le x_i \le \min\big(R_i,\; a\,(1-h_i)\,C_i,\; \kappa F\big)
        =: U_i, \\
    & \textstyle\sum_i x_i \le F, \qquad
      \textstyle\sum_i \mathrm{PD}_i\,\mathrm{LGD}\,x_i \le E, \\
    & x_i \in \{0\} \cup [T, U_i] \quad\text{when a minimum ticket } T > 0 \text{ is set,}
    \end{aligned}

with request :math:`R_i`, collateral :math:`C_i` and its haircut :math:`h_i`, advance rate
:math:`a`, concentration cap :math:`\kappa` (share of the fund :math:`F`), expected-loss budget
:math:`E` and weights

.. math::

    w_i \propto \max(L_i, \underline L)^{a_L}\,\max(V_i, \underline V)^{a_V}\,e^{c\,v_i}

from the crash loss :math:`L_i`, 30-day pre-crash volume :math:`V_i` and VIP tier :math:`v_i`,
normalised to mean 1. The floors keep an applicant without a reported loss in the model with a
small weight rather than a zero one (and the weights within a range an interior-point solver
resolves).

**The shift** :math:`s` (``shift_usd``, default 1 USD). :math:`\log 0 = -\infty` and
:math:`0^{1-\alpha}` are not finite for :math:`\alpha \ge 1`, yet a loan of zero must be
allowed (no collateral, a priced-out applicant, one excluded by the minimum ticket). Shifting
the argument makes the utility of a zero loan finite, :math:`u_\alpha(s)`, and the marginal
utility at zero finite, :math:`w_i s^{-\alpha}`. Its effect on the answer is small and exact:
an interior loan solves :math:`w_i (x_i + s)^{-\alpha} = \lambda + \mu\,\mathrm{PD}_i\,
\mathrm{LGD}`, so it is the unshifted rule's amount minus :math:`s` (one dollar). What it does
change is the value of excluding someone: for :math:`\alpha \ge 1` a zero loan costs
:math:`w_i\,(u_\alpha(T+s) - u_\alpha(s))`, large for a small :math:`s`, so the model lends to
as many applicants as the constraints allow — restart impact with diminishing returns.

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

**Magnitudes.** Every USD amount of the applications and the scenario is at most USD 1e13
(:data:`MAX_AMOUNT_USD`), so limits and loans in integer cents are exact in float64 and int64.

**Exactness.** An interior-point answer is accurate to about 1e-8 of the fund — dollars — and
exponential/power cones are sensitive to scaling. Apart from the fund and the budget the
problem is separable, so each optimum is :math:`x_i = \mathrm{clip}((w_i/p_i)^{1/\alpha} - s,
\ell_i, U_i)` with :math:`p_i = \lambda + \mu\,\mathrm{PD}_i\,\mathrm{LGD}`; the conic
answer's multipliers are refined on these conditions (two nested root searches) to machine
precision, the loans follow, and a certificate (feasibility, complementary slackness, every
loan equal to its implied amount) is checked before anything is paid. The conic solver's
status and its distance to the final loans are reported; if it fails outright the refinement
still gives, and certifies, the answer. alpha = 0 is a linear programme, solved by HiGHS.

**Rates** are an output, not a decision: :math:`r_i = \min(r_0 + \mathrm{spread}(\text{tier}_i),
\bar r)` with base rate :math:`r_0` and the low-interest ceiling :math:`\bar r`. Putting the
interest into the objective would make it bilinear in rate and amount; nothing convex and
principled was found that a reviewer would prefer to a published tier schedule.

**Binding labels.** The term sheet names, per applicant, the constraint that decides its loan:
one of its own limits, the minimum ticket (holding a loan up, or excluding an applicant who
would borrow at the final prices), or the fund and/or the expected-loss budget through their
multipliers; :func:`binding_labels` states the rule and its tie order.

**Money** is integer cents: each loan is the solver's amount rounded down to the cent and never
above any of its limits (each limit converted to cents by rounding down); if solver tolerance
leaves the total a few cents above the fund or the expected loss above its budget, the excess is
taken from the loans with the most room (then the highest default probability), and the cents
so removed are reported.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import platform
import shutil
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from allocator.errors import (
    InfeasibleError,
    InputError,
    NotCertifiedError,
    SolverFailedError,
)
from allocator.jsonsafe import json_safe
from allocator.kernel.native import native_stdout_to_stderr
from allocator.loans import applications as D
from allocator.settings.loans import (
    LoanScenario,
    LoanSolverSpec,
    LoanWeightSpec,
    loan_scenario_from_dict,
    loan_scenario_to_dict,
    validate_loan_scenario,
)

#: Relative violation of the marginal conditions above which a linear (alpha = 0) solution is
#: refused; for alpha > 0 the limit is one cent.
KKT_TOLERANCE = 1e-3

# --- term sheet columns ---
TIER = "credit_tier"
PD = "default_probability"
WEIGHT = "weight"
COLLATERAL_LIMIT_USD = "collateral_limit_usd"
AMOUNT_CENTS = "amount_cents"
AMOUNT_USD = "amount_usd"
RATE = "rate"
EXPECTED_LOSS_USD = "expected_loss_usd"
BINDING = "binding"
TERM_SHEET_COLUMNS = (
    D.INSTITUTION_ID,
    TIER,
    PD,
    WEIGHT,
    D.REQUESTED_USD,
    COLLATERAL_LIMIT_USD,
    AMOUNT_CENTS,
    AMOUNT_USD,
    RATE,
    EXPECTED_LOSS_USD,
    BINDING,
)

# --- what decides each loan (the precise rule, with its tie order: binding_labels) ---
BIND_REQUESTED = "requested"  # at the amount applied for (or that is below the smallest loan)
BIND_COLLATERAL = "collateral"  # at the collateral limit (also zero: less than a ticket of it)
BIND_CONCENTRATION = "concentration"  # at the per-borrower cap
BIND_MIN_TICKET = "min_ticket"  # exactly the minimum ticket, which is above what it would get
BIND_MIN_TICKET_EXCLUDED = "min_ticket_excluded"  # zero: would borrow, but no ticket >= T fits
BIND_FUND = "fund"  # set (or priced out) by the price of the fund
BIND_EL = "el_budget"  # ... by the price of the expected-loss budget, or a ticket exceeds it
BIND_FUND_EL = "fund+el_budget"  # ... by both prices
BIND_INTERIOR = "interior"  # inside its limits with neither shared constraint priced
BINDING_STATES = (
    BIND_REQUESTED,
    BIND_COLLATERAL,
    BIND_CONCENTRATION,
    BIND_MIN_TICKET,
    BIND_MIN_TICKET_EXCLUDED,
    BIND_FUND,
    BIND_EL,
    BIND_FUND_EL,
    BIND_INTERIOR,
)

# --- run directory ---
TERM_SHEET_CSV = "term_sheet.csv"
TERM_SHEET_PARQUET = "term_sheet.parquet"
APPLICATIONS_COPY = "applications.parquet"
MANIFEST = "manifest.json"
MANIFEST_KIND = "loan_fund_run"
FORMAT_VERSION = 1

# ----------------------------------------------------------------------------- problem


@dataclass(frozen=True, eq=False)
class LoanProblem:
    """The model in arrays (USD), one entry per applicant, sorted by institution id."""

    ids: tuple[str, ...]
    tier: tuple[str, ...]
    pd: np.ndarray
    weight: np.ndarray
    requested: np.ndarray
    collateral_limit: np.ndarray
    concentration_limit: float
    rate: np.ndarray
    el_coef: np.ndarray  # pd_i * LGD
    fund: float
    el_budget: float
    alpha: float
    shift: float
    min_ticket: float

    @property
    def n(self) -> int:
        return len(self.ids)

    @property
    def upper(self) -> np.ndarray:
        return np.minimum(
            np.minimum(self.requested, self.collateral_limit), self.concentration_limit
        )

    def limits_cents(self) -> dict[str, np.ndarray]:
        """Each limit in cents, rounded down: what a loan in cents may not exceed."""
        return {
            BIND_REQUESTED: np.floor(self.requested * 100).astype(np.int64),
            BIND_COLLATERAL: np.floor(self.collateral_limit * 100).astype(np.int64),
            BIND_CONCENTRATION: np.full(
                self.n, math.floor(self.concentration_limit * 100), np.int64
            ),
        }

    @property
    def fund_cents(self) -> int:
        return math.floor(self.fund * 100)

    @property
    def min_ticket_cents(self) -> int:
        return math.ceil(self.min_ticket * 100)


def loan_weights(apps: pl.DataFrame, spec: LoanWeightSpec) -> np.ndarray:
    """Weights of the module formula, normalised to mean 1 (computed in logs, so no overflow)."""
    loss = apps[D.CRASH_LOSS_USD].to_numpy().astype(np.float64)
    vol = apps[D.PRE_CRASH_VOLUME_USD].to_numpy().astype(np.float64)
    vip = apps[D.VIP_TIER].to_numpy().astype(np.float64)
    lw = (
        spec.loss_exponent * np.log(np.maximum(loss, spec.loss_floor_usd))
        + spec.volume_exponent * np.log(np.maximum(vol, spec.volume_floor_usd))
        + spec.vip_coefficient * vip
    )
    w = np.exp(lw - lw.max())
    return w / w.mean()


def build_loan_problem(
    apps: pl.DataFrame, scn: LoanScenario, *, source: str = "<table>"
) -> LoanProblem:
    """Arrays of the model from a validated applications table and a scenario.

    Per row, as :mod:`allocator.loans.applications` allows: the default probability is the applicant's
    own when given, else its tier's ``pd``; the tier is the applicant's own when given (it
    must be in the scenario's tier table), else the first tier whose ``max_pd`` is at least the
    applicant's default probability. A row that gives both uses both as given: the probability
    in the expected-loss budget, the tier for the rate.
    """
    apps = apps.sort(D.INSTITUTION_ID)
    tiers = {t.name: t for t in scn.pricing.tiers}
    given_tier: list[str | None] = (
        [None if t is None or not t.strip() else t.strip() for t in apps[D.CREDIT_TIER].to_list()]
        if D.CREDIT_TIER in apps.columns
        else [None] * apps.height
    )
    given_pd: list[float | None] = (
        apps[D.DEFAULT_PROBABILITY].to_list()
        if D.DEFAULT_PROBABILITY in apps.columns
        else [None] * apps.height
    )
    neither = [k for k, (t, p) in enumerate(zip(given_tier, given_pd)) if t is None and p is None]
    if neither:
        k = neither[0]
        raise InputError(
            f"loan applications file {source}: "
            f"{D.risk_missing_message(apps.columns, len(neither))}; e.g. institution "
            f"{apps[D.INSTITUTION_ID][k]!r}: {apps.row(k, named=True)}."
        )
    unknown = [k for k, t in enumerate(given_tier) if t is not None and t not in tiers]
    if unknown:
        k = unknown[0]
        raise InputError(
            f"loan applications file {source}: column 'credit_tier' has {len(unknown)} value(s) "
            f"not in the scenario's tier table ({', '.join(tiers)}), e.g. {given_tier[k]!r} for "
            f"institution {apps[D.INSTITUTION_ID][k]!r}: {apps.row(k, named=True)}.",
            hint="add the tier to [[pricing.tiers]] in the loan scenario or fix the file.",
        )
    pd_ = np.array(
        [
            p if p is not None else tiers[t].pd  # type: ignore[index]
            for p, t in zip(given_pd, given_tier)
        ],
        dtype=np.float64,
    )
    edges = np.array([t.max_pd for t in scn.pricing.tiers])
    placed = np.searchsorted(edges, pd_, side="left")
    tier_list = [
        t if t is not None else scn.pricing.tiers[int(k)].name for t, k in zip(given_tier, placed)
    ]
    spread = np.array([tiers[t].spread for t in tier_list], dtype=np.float64)
    # Rates are quoted to a hundredth of a basis point; rounding removes float noise (0.03 +
    # 0.005 is not 0.035 in binary) so that term sheets show the schedule's numbers.
    rate = np.round(np.minimum(scn.pricing.base_rate + spread, scn.pricing.rate_ceiling), 8)
    collateral = apps[D.COLLATERAL_USD].to_numpy().astype(np.float64)
    haircut = apps[D.COLLATERAL_HAIRCUT].to_numpy().astype(np.float64)
    return LoanProblem(
        ids=tuple(apps[D.INSTITUTION_ID].to_list()),
        tier=tuple(tier_list),
        pd=pd_,
        weight=loan_weights(apps, scn.weights),
        requested=apps[D.REQUESTED_USD].to_numpy().astype(np.float64),
        collateral_limit=scn.limits.advance_rate * (1.0 - haircut) * collateral,
        concentration_limit=scn.limits.concentration_cap * scn.fund_usd,
        rate=rate,
        el_coef=pd_ * scn.risk.lgd,
        fund=float(scn.fund_usd),
        el_budget=float(scn.risk.el_budget_usd),
        alpha=float(scn.alpha),
        shift=float(scn.shift_usd),
        min_ticket=float(scn.limits.min_ticket_usd),
    )


def lendable(P: LoanProblem) -> np.ndarray:
    """Applicants who can receive a positive loan (a ticket of at least T when T > 0) at all,
    each on their own: limit in cents positive (at least T), and the fund and the expected-loss
    budget large enough for that smallest loan."""
    ub = np.minimum.reduce(list(P.limits_cents().values()))
    smallest = max(P.min_ticket_cents, 1)  # cents
    ok = (ub >= smallest) & (smallest <= P.fund_cents)
    return ok & (P.el_coef * smallest / 100 <= P.el_budget)


def explain_infeasible(P: LoanProblem) -> None:
    """Raise :class:`~allocator.errors.InfeasibleError` when the settings let the fund lend
    nothing at all, with the reason in plain words.

    Lending zero to everybody always satisfies the constraints, so the model itself is never
    infeasible; what can be impossible is lending anything, which is what a run is for.
    """
    if lendable(P).any():
        return
    limits = P.limits_cents()
    ub = np.minimum.reduce(list(limits.values()))
    T = P.min_ticket_cents
    if not (ub > 0).any():
        # Name the limit that is below a cent for everyone, not one that merely might be.
        if not (limits[BIND_COLLATERAL] > 0).any():
            reason = (
                "every applicant's collateral limit is below one cent (no collateral, or "
                "a 100% haircut), so no loan can be secured"
            )
        elif not (limits[BIND_REQUESTED] > 0).any():
            reason = "every applicant requested less than one cent"
        elif not (limits[BIND_CONCENTRATION] > 0).any():
            reason = (
                f"the concentration cap ({P.concentration_limit:.4g} USD, a share of the "
                "fund) is below one cent"
            )
        else:
            reason = (
                "every applicant has a limit below one cent (the smallest of request, "
                "collateral limit and concentration cap)"
            )
    elif T > 0 and not (ub >= T).any():
        reason = (
            f"the minimum ticket of USD {T / 100:,.2f} is above every applicant's limit "
            f"(largest limit USD {ub.max() / 100:,.2f}: the smallest of request, collateral "
            "limit and concentration cap)"
        )
    elif P.fund_cents < T:
        reason = f"the minimum ticket of USD {T / 100:,.2f} is larger than the fund"
    else:
        smallest = max(T, 1) / 100
        reason = (
            f"the expected-loss budget of USD {P.el_budget:,.2f} is too small for even the "
            f"smallest loan (USD {smallest:,.2f}) to any applicant with a usable limit: "
            "every one of them has a positive default probability"
        )
    raise InfeasibleError(
        f"the loan scenario cannot lend anything: {reason}.",
        hint="lower limits.min_ticket_usd or raise risk.el_budget_usd / the "
        "collateral advance rate.",
    )


# ----------------------------------------------------------------------------- utility


def utility(y: np.ndarray, alpha: float) -> np.ndarray:
    r""":math:`u_\alpha(y)` elementwise (``y`` already shifted)."""
    y = np.asarray(y, dtype=np.float64)
    if alpha == 1.0:
        return np.log(y)
    if alpha == 0.0:
        return y.copy()
    return np.power(y, 1.0 - alpha) / (1.0 - alpha)


def marginal_utility(y: np.ndarray, alpha: float) -> np.ndarray:
    return np.power(np.asarray(y, dtype=np.float64), -alpha)


def loan_objective(amount_usd: np.ndarray, weight: np.ndarray, alpha: float, shift: float) -> float:
    r""":math:`\sum_i w_i u_\alpha(x_i + s)` in USD, summed exactly (``math.fsum``)."""
    return math.fsum((weight * utility(np.asarray(amount_usd, np.float64) + shift, alpha)).tolist())


# ----------------------------------------------------------------------------- solving


def _solver_options(solver: str) -> dict[str, Any]:
    # verbose=False keeps cvxpy's and the solver's own log off; HiGHS also gets output_flag,
    # which turns off every log channel it has (console and log file), not only the console.
    opts: dict[str, Any] = {"verbose": False}
    if solver == "HIGHS":
        opts["output_flag"] = False
    return opts


@dataclass(frozen=True, eq=False)
class _Continuous:
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


def _scale(P: LoanProblem, idx: np.ndarray) -> float:
    # Solve in units of the median limit: amounts, the shift and u's range then sit where
    # conic solvers are accurate (an even split of the fund was measured to be less robust).
    return float(np.median(P.upper[idx])) if idx.size else P.fund / max(P.n, 1)


def _cvx_utility(y: Any, alpha: float) -> Any:
    import cvxpy as cp

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
    import cvxpy as cp

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
                prob.solve(solver=solver, **_solver_options(solver))
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


def _solve_convex(
    P: LoanProblem, idx: np.ndarray, lo: np.ndarray, hi: np.ndarray, solver: str
) -> _Continuous:
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
        return _Continuous(x_full, 0.0, 0.0, "empty", 0.0, 0.0, solver)
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
        cvx_diff = 0.0
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
    return _Continuous(x_full, lam, mu, status, kkt, cvx_diff, solver)


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


@dataclass(frozen=True, eq=False)
class _MipSolution:
    on: np.ndarray  # bool, length n
    x: np.ndarray  # USD, the MILP's own amounts
    pwl_objective: float  # USD utility, the MILP incumbent's PWL value
    pwl_upper_bound: float  # USD utility, from the MILP dual bound
    error_bound: float  # a-priori bound on PWL - true utility
    status: str
    mip_gap: float


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


def _solve_mip(
    P: LoanProblem, idx: np.ndarray, spec: LoanSolverSpec, *, unit: float
) -> _MipSolution:
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
    import cvxpy as cp
    import scipy.sparse as sp

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
                prob.solve(solver=spec.mip_solver, **opts, **_solver_options(spec.mip_solver))
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
    return _MipSolution(on, x_full, pwl, ub, err, "optimal", gap)


def _to_usd(value_scaled: float, P: LoanProblem, unit: float) -> float:
    """A scaled-model objective (with every applicant's u(s) included) in USD utility."""
    if P.alpha == 1.0:
        return value_scaled + math.log(unit) * float(P.weight.sum())
    return value_scaled * unit ** (1.0 - P.alpha)


def _gap_to_usd(gap_scaled: float, P: LoanProblem, unit: float) -> float:
    return gap_scaled if P.alpha == 1.0 else gap_scaled * unit ** (1.0 - P.alpha)


# ----------------------------------------------------------------------------- rounding


def _round_to_cents(P: LoanProblem, x: np.ndarray, on: np.ndarray) -> tuple[np.ndarray, int]:
    """Loans in cents: floor, clip to every limit, keep tickets at least T, then remove any
    excess over the fund or the expected-loss budget. Returns the cents and the cents removed
    beyond flooring."""
    ub = np.minimum.reduce(list(P.limits_cents().values()))
    cents = np.minimum(np.floor(np.maximum(x, 0.0) * 100.0).astype(np.int64), ub)
    T = P.min_ticket_cents
    floor_ = np.zeros(P.n, dtype=np.int64)
    if T > 0:
        floor_ = np.where(on, T, 0).astype(np.int64)
        cents = np.where(on, np.maximum(cents, T), 0)
    start = int(cents.sum())
    order_ids = np.array(P.ids)

    excess = int(cents.sum()) - P.fund_cents
    if excess > 0:
        room = cents - floor_
        for i in np.lexsort((order_ids, -room)):
            take = int(min(excess, room[i]))
            cents[i] -= take
            excess -= take
            if excess == 0:
                break
    el = _el_usd(P, cents)
    if el > P.el_budget:
        for i in np.lexsort((order_ids, -P.el_coef)):
            if P.el_coef[i] <= 0:
                break
            room = int(cents[i] - floor_[i])
            need = math.ceil((el - P.el_budget) * 100.0 / P.el_coef[i]) + 1
            cents[i] -= min(room, need)
            el = _el_usd(P, cents)
            if el <= P.el_budget:
                break
    if int(cents.sum()) > P.fund_cents or _el_usd(P, cents) > P.el_budget:
        raise SolverFailedError(
            "rounding the loans to cents could not keep the total within the "
            "fund and the expected-loss budget without dropping a minimum "
            "ticket; the solver's answer is too far off.",
            status="rounding",
        )
    return cents, start - int(cents.sum())


def _el_usd(P: LoanProblem, cents: np.ndarray) -> float:
    return math.fsum((P.el_coef * cents).tolist()) / 100.0


# ----------------------------------------------------------------------------- result


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
    """Solve the loan model for validated applications (see the module docstring).

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
    unit = _scale(P, idx)
    sv = scn.solver
    zeros = np.zeros(P.n)
    # The convex relaxation (no minimum ticket): the exact answer when T = 0, an upper bound
    # on the optimum otherwise.
    relax_idx = np.flatnonzero(np.minimum.reduce(list(P.limits_cents().values())) > 0)
    relax = _solve_convex(P, relax_idx, zeros[relax_idx], P.upper[relax_idx], sv.convex_solver)
    relax_obj = loan_objective(relax.x, P.weight, P.alpha, P.shift)
    solver_info: dict[str, Any] = {"convex_solver": relax.solver}
    objective: dict[str, Any] = {"relaxation": relax_obj}
    if P.min_ticket <= 0:
        sol = relax
        on = sol.x > 0
        solver_info.update(method="convex", status=sol.status)
    else:
        mip = _solve_mip(P, idx, sv, unit=unit)
        on = mip.on
        on_idx = np.flatnonzero(on)
        try:
            sol = _solve_convex(
                P, on_idx, np.full(on_idx.size, P.min_ticket), P.upper[on_idx], sv.convex_solver
            )
            polish = sol.status
        except (SolverFailedError, NotCertifiedError, InfeasibleError) as exc:
            # Tolerances can make the fixed pattern marginally infeasible; the MILP's own
            # amounts are then kept (they satisfy every constraint up to its tolerance).
            status = getattr(exc, "status", None) or "infeasible"
            sol = _Continuous(mip.x, None, None, f"milp ({status})", None)
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

    cents, repaired = _round_to_cents(P, sol.x, on)
    amount = cents / 100.0
    obj = loan_objective(amount, P.weight, P.alpha, P.shift)
    objective["value"] = obj
    upper_bound = min(objective.get("pwl_upper_bound", math.inf), relax_obj)
    objective["upper_bound"] = upper_bound
    objective["optimality_gap"] = max(upper_bound - obj, 0.0)

    fund_binding, el_binding = _shared_binding(P, sol)
    binding = binding_labels(P, cents, sol.lam, sol.mu, fund_binding, el_binding)
    el_each = P.el_coef * amount
    sheet = pl.DataFrame(
        {
            D.INSTITUTION_ID: list(P.ids),
            TIER: list(P.tier),
            PD: P.pd,
            WEIGHT: P.weight,
            D.REQUESTED_USD: P.requested,
            COLLATERAL_LIMIT_USD: P.collateral_limit,
            AMOUNT_CENTS: cents,
            AMOUNT_USD: amount,
            RATE: P.rate,
            EXPECTED_LOSS_USD: el_each,
            BINDING: binding,
        },
        schema={
            D.INSTITUTION_ID: pl.String,
            TIER: pl.String,
            PD: pl.Float64,
            WEIGHT: pl.Float64,
            D.REQUESTED_USD: pl.Float64,
            COLLATERAL_LIMIT_USD: pl.Float64,
            AMOUNT_CENTS: pl.Int64,
            AMOUNT_USD: pl.Float64,
            RATE: pl.Float64,
            EXPECTED_LOSS_USD: pl.Float64,
            BINDING: pl.String,
        },
    )
    lent = int(cents.sum())
    counts = {b: int(sum(1 for v in binding if v == b)) for b in BINDING_STATES}
    totals = {
        "applicants": P.n,
        "funded": int((cents > 0).sum()),
        "requested_usd": math.fsum(P.requested.tolist()),
        "fund_cents": P.fund_cents,
        "lent_cents": lent,
        "unlent_cents": P.fund_cents - lent,
        "expected_loss_usd": _el_usd(P, cents),
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


def _shared_binding(P: LoanProblem, sol: _Continuous) -> tuple[bool, bool]:
    """Whether the fund and the expected-loss budget bind: their multipliers when known (exact
    for alpha > 0, the linear programme's duals for alpha = 0; :func:`kkt_violation` has
    certified them complementary to the slacks), else their slacks before rounding (within a
    millionth and one dollar, or a cent for the budget)."""
    if sol.lam is not None and sol.mu is not None:
        return sol.lam > 0, sol.mu > 0
    fund_slack = P.fund - math.fsum(sol.x.tolist())
    el_slack = P.el_budget - math.fsum((P.el_coef * sol.x).tolist())
    return (fund_slack <= 1e-6 * P.fund + 1.0, el_slack <= 1e-6 * max(P.el_budget, 1.0) + 0.01)


def binding_labels(
    P: LoanProblem,
    cents: np.ndarray,
    lam: float | None,
    mu: float | None,
    fund_binding: bool,
    el_binding: bool,
) -> list[str]:
    r"""The constraint that decides each applicant's loan: the term sheet's ``binding`` column.

    With limits in cents :math:`R_i, C_i, K` (request, collateral, concentration, each rounded
    down), :math:`U_i = \min(R_i, C_i, K)`, minimum ticket :math:`T` (0: none), smallest
    possible loan :math:`t = \max(T, 1\text{ cent})`, loan :math:`x_i`, multipliers
    :math:`\lambda` (fund) and :math:`\mu` (expected-loss budget :math:`E`), price
    :math:`p_i = \lambda + \mu\,\mathrm{PD}_i\,\mathrm{LGD}` and tolerance
    :math:`\delta_i = \max(1\ \text{USD}, 10^{-6} U_i)` (solver tolerance and rounding to
    cents never move a loan further), the first rule that holds gives the label:

    1. :math:`U_i < t`: the limit attaining :math:`U_i` — no loan fits under the applicant's
       own limits (no collateral, or less than a ticket's worth), whatever the prices;
    2. :math:`x_i > 0` and :math:`x_i \ge U_i - \delta_i`: the limit attaining :math:`U_i`;
    3. :math:`x_i > 0`, :math:`T > 0` and :math:`x_i \le T + \delta_i`: ``min_ticket`` — the
       lower bound of a ticket holds the loan up;
    4. :math:`x_i > 0`: the shared constraints with a positive multiplier, ``fund``,
       ``el_budget`` or ``fund+el_budget`` (``interior`` if neither);
    5. :math:`x_i = 0` and :math:`\mathrm{PD}_i\,\mathrm{LGD}\,t > E`: ``el_budget`` — the
       smallest loan alone exceeds the budget (the fund cannot be the reason here: a fund
       below :math:`t` lets nobody borrow and is refused before solving);
    6. :math:`x_i = 0` and :math:`w_i\,u_\alpha'(s) = w_i s^{-\alpha} \le p_i`: the shared
       label of rule 4 — at these prices the applicant would not borrow even without a
       minimum ticket (the concave objective gives a positive amount exactly when the
       marginal utility at zero exceeds the price);
    7. :math:`x_i = 0` otherwise: ``min_ticket_excluded`` — it would borrow at these prices,
       but a ticket of at least :math:`T` did not fit (with :math:`T = 0`, a loan below a cent
       rounded down: the shared label).

    Ties between limits of equal value go to the request, then the collateral, then the
    concentration cap (the applicant's own figures before the fund-wide policy). Rules 1-2 come
    before 3, so a loan at a limit equal to the ticket is labelled by the limit: it could not
    be larger without the ticket rule either.

    Parameters
    ----------
    P : LoanProblem
        The model.
    cents : numpy.ndarray
        Final loans in cents.
    lam, mu : float or None
        Multipliers of the fund and the budget (utility per USD); None when unknown (the
        minimum-ticket pattern's polish failed), which skips rule 6.
    fund_binding, el_binding : bool
        Whether each shared constraint binds (see :func:`_shared_binding`).

    Returns
    -------
    list of str
        One of :data:`BINDING_STATES` per applicant, in the order of ``P.ids``.
    """
    limits = P.limits_cents()
    names = list(limits)  # requested, collateral, concentration: the tie order
    stack = np.vstack(list(limits.values()))
    ub = stack.min(axis=0)
    at_limit = [names[k] for k in np.argmin(stack, axis=0)]  # argmin takes the first of ties
    T = P.min_ticket_cents
    smallest = max(T, 1)
    shared = (
        BIND_FUND_EL
        if fund_binding and el_binding
        else BIND_FUND
        if fund_binding
        else BIND_EL
        if el_binding
        else BIND_INTERIOR
    )
    near = np.maximum(100, np.ceil(1e-6 * ub)).astype(np.int64)
    ticket_over_budget = P.el_coef * (smallest / 100) > P.el_budget
    if lam is not None and mu is not None:
        with np.errstate(divide="ignore"):
            # s = 0 (allowed for alpha < 1) makes the marginal utility at zero infinite.
            marginal0 = P.weight * float(marginal_utility(np.array(P.shift), P.alpha))
        # A relative margin keeps an alpha = 0 tie (weight equal to price) on the price side.
        priced_out = marginal0 <= (lam + mu * P.el_coef) * (1 + 1e-9)
    else:
        priced_out = np.zeros(P.n, dtype=bool)
    out = []
    for i in range(P.n):
        c = int(cents[i])
        if ub[i] < smallest or (c > 0 and c >= ub[i] - near[i]):
            out.append(at_limit[i])
        elif c > 0:
            out.append(BIND_MIN_TICKET if T > 0 and c <= T + near[i] else shared)
        elif ticket_over_budget[i]:
            out.append(BIND_EL)
        elif priced_out[i] or T <= 0:
            out.append(shared)
        else:
            out.append(BIND_MIN_TICKET_EXCLUDED)
    return out


# ----------------------------------------------------------------------------- run directory


def applications_sha256(apps: pl.DataFrame) -> str:
    """Hash of an applications table's content, independent of file format and row order."""
    cols = [c for c in D.SCHEMA if c in apps.columns]
    data = apps.select(cols).sort(D.INSTITUTION_ID).write_csv().encode()
    return hashlib.sha256(data).hexdigest()


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("allocator", "numpy", "polars", "cvxpy", "clarabel", "highspy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def manifest_dict(
    result: LoanResult, *, applications: pl.DataFrame, source: str, files: dict[str, str]
) -> dict[str, Any]:
    """The manifest of a run: resolved scenario, input hash, versions, solver, totals,
    multipliers, objective and the SHA-256 of every file written."""
    return json_safe(
        {
            "kind": MANIFEST_KIND,
            "format_version": FORMAT_VERSION,
            "scenario": loan_scenario_to_dict(result.scenario),
            "applications": {
                "source": source,
                "rows": applications.height,
                "table_sha256": applications_sha256(applications),
            },
            "versions": _versions(),
            "solver": result.solver,
            "totals": result.totals,
            "multipliers": result.multipliers,
            "objective": result.objective,
            "files": files,
        }
    )


def write_loan_run(
    result: LoanResult, out_dir: str | Path, *, applications: pl.DataFrame, source: str
) -> Path:
    """Write ``term_sheet.csv``, ``term_sheet.parquet``, a copy of the applications and
    ``manifest.json`` to ``out_dir`` atomically (a sibling temporary directory renamed into
    place). An existing ``out_dir`` is replaced only if it is empty or an earlier loan run."""
    out = Path(out_dir)
    if out.exists():
        if not out.is_dir():
            raise InputError(f"--out {out} exists and is not a directory.")
        if any(out.iterdir()) and _manifest_kind(out / MANIFEST) != MANIFEST_KIND:
            raise InputError(
                f"--out {out} is a non-empty directory that is not a loan run; "
                "refusing to replace it.",
                hint="choose a new or empty directory.",
            )
    apps_sorted = applications.select([c for c in D.SCHEMA if c in applications.columns]).sort(
        D.INSTITUTION_ID
    )
    blobs = {
        TERM_SHEET_CSV: result.term_sheet.write_csv().encode(),
        TERM_SHEET_PARQUET: _parquet_bytes(result.term_sheet),
        APPLICATIONS_COPY: _parquet_bytes(apps_sorted),
    }
    files = {k: hashlib.sha256(v).hexdigest() for k, v in sorted(blobs.items())}
    man = manifest_dict(result, applications=applications, source=source, files=files)
    blobs[MANIFEST] = (json.dumps(man, sort_keys=True, indent=2, allow_nan=False) + "\n").encode()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        for name, data in blobs.items():
            (tmp / name).write_bytes(data)
        os.chmod(tmp, 0o755)
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
            os.rmdir(old)
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def _parquet_bytes(df: pl.DataFrame) -> bytes:
    buf = io.BytesIO()
    df.write_parquet(buf, statistics=False)
    return buf.getvalue()


def _manifest_kind(path: Path) -> str | None:
    try:
        return json.loads(path.read_text()).get("kind")
    except (OSError, ValueError, AttributeError):
        return None


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ----------------------------------------------------------------------------- check


@dataclass(frozen=True)
class LoanCheckReport:
    """Outcome of :func:`check_loans`: every check with whether it held and a detail line."""

    run_dir: str
    checks: tuple[tuple[str, bool, str], ...]

    @property
    def ok(self) -> bool:
        return all(passed for _, passed, _ in self.checks)

    @property
    def failures(self) -> tuple[tuple[str, str], ...]:
        return tuple((name, detail) for name, passed, detail in self.checks if not passed)

    def lines(self) -> list[str]:
        out = [f"{'ok  ' if p else 'FAIL'} {name}: {detail}" for name, p, detail in self.checks]
        out.append(
            f"{self.run_dir}: "
            + ("all checks hold" if self.ok else f"{len(self.failures)} check(s) FAILED")
        )
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_dir": self.run_dir,
            "ok": self.ok,
            "checks": [{"name": n, "ok": p, "detail": d} for n, p, d in self.checks],
        }


def run_solver_status(manifest: dict[str, Any]) -> tuple[bool, str]:
    """Whether a loan run's manifest records a proven optimum, and a one-line detail.

    A minimum-ticket run (``solver.method`` ``"milp_pwl"``) must have HiGHS status
    ``"optimal"`` and an achieved relative gap (``solver.mip_rel_gap_achieved``) within the
    scenario's ``solver.mip_rel_gap``; a run stopped at a time or iteration limit fails. A
    convex run (``"convex"``) must record an optimality-certificate violation
    (``multipliers.kkt_violation``) within its limit: one cent for alpha > 0,
    :data:`KKT_TOLERANCE` (relative) for alpha = 0. :func:`allocate_loans` writes no other run;
    this verifies the claim for a directory written elsewhere or by an older version.

    Parameters
    ----------
    manifest : dict
        The parsed ``manifest.json`` of a loan run.

    Returns
    -------
    (bool, str)
        Whether the status holds, and what was found.
    """
    solver = manifest.get("solver") if isinstance(manifest.get("solver"), dict) else {}
    scn = manifest.get("scenario") if isinstance(manifest.get("scenario"), dict) else {}
    method, status = solver.get("method"), solver.get("status")
    if method == "milp_pwl":
        required = (scn.get("solver") or {}).get("mip_rel_gap")
        gap = solver.get("mip_rel_gap_achieved")
        numbers = all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in (gap, required)
        )
        ok = status == "optimal" and numbers and gap <= required * (1 + 1e-9)  # type: ignore[operator]
        return ok, (
            f"{solver.get('mip_solver', 'MILP')} status {status!r}, relative gap {gap} "
            f"(solver.mip_rel_gap {required})"
        )
    if method == "convex":
        kkt = (manifest.get("multipliers") or {}).get("kkt_violation")
        alpha = scn.get("alpha")
        limit = KKT_TOLERANCE if alpha == 0 else 0.01
        ok = isinstance(kkt, (int, float)) and not isinstance(kkt, bool) and kkt <= limit
        return ok, (
            f"convex model (conic status {status!r}), optimality certificate violation "
            f"{kkt} (limit {limit:g})"
        )
    return False, f"unknown solver method {method!r} (status {status!r})"


def _examples(ids: list[str], mask: np.ndarray) -> str:
    bad = [ids[i] for i in np.flatnonzero(mask)[:5]]
    return f"{int(mask.sum())} loan(s), e.g. {', '.join(bad)}"


def check_loans(run_dir: str | Path) -> LoanCheckReport:
    """Finance's check of a loan run directory from its files alone.

    Recomputes from the applications copy and the scenario in the manifest: every loan within
    [0, requested], its collateral limit and the concentration cap (limits in cents rounded
    down); 0 or at least the minimum ticket; the total within the fund and equal to the
    manifest's; the expected loss within its budget (to the cent); rates from the tier table;
    weights; the objective; the SHA-256 of each file against the manifest; and that the
    manifest records a proven optimum (:func:`run_solver_status`).

    Parameters
    ----------
    run_dir : str or Path
        A directory written by :func:`write_loan_run`.

    Returns
    -------
    LoanCheckReport
        Every check, passed or failed; a damaged run fails checks rather than raising.

    Raises
    ------
    InputError
        ``run_dir`` does not exist or is not a directory.
    """
    run = Path(run_dir)
    if run.exists() and not run.is_dir():
        raise InputError(
            f"loan run directory {run} is a file, not a directory; give the "
            "directory that `allocator loans allocate --out` wrote."
        )
    if not run.is_dir():
        raise InputError(f"loan run directory {run} does not exist.")
    checks: list[tuple[str, bool, str]] = []

    def add(name: str, passed: bool, detail: str) -> bool:
        checks.append((name, bool(passed), detail))
        return bool(passed)

    def done() -> LoanCheckReport:
        return LoanCheckReport(str(run), tuple(checks))

    missing = [
        f
        for f in (MANIFEST, TERM_SHEET_CSV, TERM_SHEET_PARQUET, APPLICATIONS_COPY)
        if not (run / f).is_file()
    ]
    if not add(
        "files present",
        not missing,
        "missing " + ", ".join(missing)
        if missing
        else "manifest, term sheet (csv, parquet), applications",
    ):
        return done()
    try:
        man = json.loads((run / MANIFEST).read_text())
        kind_ok = isinstance(man, dict) and man.get("kind") == MANIFEST_KIND
    except (OSError, ValueError) as exc:
        add("manifest readable", False, f"{MANIFEST}: {exc}")
        return done()
    if not add(
        "manifest readable", kind_ok, f"kind {man.get('kind') if isinstance(man, dict) else None!r}"
    ):
        return done()
    files = man.get("files", {})
    bad = [
        f
        for f in (TERM_SHEET_CSV, TERM_SHEET_PARQUET, APPLICATIONS_COPY)
        if files.get(f) != sha256_file(run / f)
    ]
    add("file hashes", not bad, "match the manifest" if not bad else f"differ for {', '.join(bad)}")
    try:
        scn = loan_scenario_from_dict(man["scenario"], file=f"{run / MANIFEST} [scenario]")
        apps = D.load_applications(run / APPLICATIONS_COPY)
        csv = pl.read_csv(run / TERM_SHEET_CSV, schema_overrides={AMOUNT_CENTS: pl.Int64})
        sheet = pl.read_parquet(run / TERM_SHEET_PARQUET)
    except (KeyError, TypeError) as exc:
        add("inputs readable", False, f"manifest lacks {exc}")
        return done()
    except Exception as exc:  # any reader or validation error is a failed check here
        add("inputs readable", False, str(exc))
        return done()
    add("inputs readable", True, f"scenario {scn.name!r}, {apps.height} applications")
    add("solver status", *run_solver_status(man))
    add(
        "applications hash",
        applications_sha256(apps) == man.get("applications", {}).get("table_sha256"),
        "applications copy matches the manifest's input hash",
    )
    cols_ok = (
        tuple(sheet.columns) == TERM_SHEET_COLUMNS and sheet.schema.get(AMOUNT_CENTS) == pl.Int64
    )
    if not add("term sheet columns", cols_ok, f"{list(sheet.columns)}"):
        return done()
    try:
        same = csv.select(TERM_SHEET_COLUMNS).equals(sheet)
    except Exception:  # a tampered CSV may not even have the columns
        same = False
    add("csv equals parquet", same, "term_sheet.csv and term_sheet.parquet hold the same rows")
    try:
        P = build_loan_problem(apps, scn, source=str(run / APPLICATIONS_COPY))
    except InputError as exc:
        add("problem rebuilt", False, str(exc))
        return done()
    ids = sheet[D.INSTITUTION_ID].to_list()
    if not add(
        "applicants",
        ids == list(P.ids),
        "one row per applicant, sorted by institution id"
        if ids == list(P.ids)
        else "term sheet ids differ from the applications",
    ):
        return done()
    cents = sheet[AMOUNT_CENTS].fill_null(-1).to_numpy().astype(np.int64)
    add(
        "amounts in cents",
        bool(np.all(sheet[AMOUNT_USD].to_numpy() == cents / 100.0)),
        "amount_usd == amount_cents / 100",
    )
    add(
        "non-negative",
        bool((cents >= 0).all()),
        "every loan >= 0" if (cents >= 0).all() else _examples(ids, cents < 0),
    )
    for name, lim in P.limits_cents().items():
        over = cents > lim
        add(
            f"within {name} limit",
            not over.any(),
            "every loan within it" if not over.any() else _examples(ids, over),
        )
    T = P.min_ticket_cents
    below = (cents > 0) & (cents < T)
    add(
        "minimum ticket",
        not below.any(),
        (f"each loan 0 or >= {T / 100:,.2f} USD" if T else "no minimum ticket")
        if not below.any()
        else _examples(ids, below),
    )
    total = int(cents.sum())
    add(
        "total within fund",
        total <= P.fund_cents,
        f"lent {total / 100:,.2f} of {P.fund_cents / 100:,.2f} USD",
    )
    totals = man.get("totals", {})
    add(
        "total matches manifest",
        total == totals.get("lent_cents"),
        f"term sheet {total} cents, manifest {totals.get('lent_cents')} cents",
    )
    el = _el_usd(P, cents)
    add(
        "expected-loss budget",
        el <= P.el_budget + 0.005,
        f"expected loss {el:,.2f} of {P.el_budget:,.2f} USD",
    )
    rate_ok = np.allclose(sheet[RATE].to_numpy(), P.rate, rtol=0, atol=1e-12)
    add("rates", bool(rate_ok), "rate = min(base + tier spread, ceiling) for every loan")
    w_ok = np.allclose(sheet[WEIGHT].to_numpy(), P.weight, rtol=1e-12, atol=0)
    add("weights", bool(w_ok), "weights recomputed from the applications and the scenario")
    obj = loan_objective(cents / 100.0, P.weight, P.alpha, P.shift)
    m_obj = man.get("objective", {}).get("value")
    add(
        "objective",
        isinstance(m_obj, (int, float)) and math.isclose(obj, m_obj, rel_tol=1e-9, abs_tol=1e-9),
        f"recomputed {obj:.10g}, manifest {m_obj}",
    )
    return done()
