r"""The USD 100M institutional loan fund: the model, its weights and its limits.

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

**Magnitudes.** Every USD amount of the applications and the scenario is at most USD 1e13
(:data:`MAX_AMOUNT_USD`), so limits and loans in integer cents are exact in float64 and int64.

**Rates** are an output, not a decision: :math:`r_i = \min(r_0 + \mathrm{spread}(\text{tier}_i),
\bar r)` with base rate :math:`r_0` and the low-interest ceiling :math:`\bar r`. Putting the
interest into the objective would make it bilinear in rate and amount; nothing convex and
principled was found that a reviewer would prefer to a published tier schedule.

The model is solved by :mod:`allocator.loans.convex` (no minimum ticket) or
:mod:`allocator.loans.mip` (minimum ticket), rounded to cents and labelled by
:mod:`allocator.loans.terms`, assembled by :mod:`allocator.loans.allocate`, written by
:mod:`allocator.loans.run` and verified by :mod:`allocator.loans.checks`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import polars as pl

from allocator.errors import InfeasibleError, InputError
from allocator.kernel.money import (
    CENTS_PER_USD,
    ceil_cents,
    floor_cents,
    floor_cents_array,
    format_cents,
    format_usd,
)
from allocator.loans import applications as D
from allocator.settings.loans import LoanScenario, LoanWeightSpec

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
        upper: np.ndarray = np.minimum(
            np.minimum(self.requested, self.collateral_limit), self.concentration_limit
        )
        return upper

    def limits_cents(self) -> dict[str, np.ndarray]:
        """Each limit in cents, rounded down: what a loan in cents may not exceed."""
        return {
            BIND_REQUESTED: floor_cents_array(self.requested),
            BIND_COLLATERAL: floor_cents_array(self.collateral_limit),
            BIND_CONCENTRATION: np.full(self.n, floor_cents(self.concentration_limit), np.int64),
        }

    @property
    def fund_cents(self) -> int:
        return floor_cents(self.fund)

    @property
    def min_ticket_cents(self) -> int:
        return ceil_cents(self.min_ticket)


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
    weights: np.ndarray = w / w.mean()
    return weights


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
    fits: np.ndarray = ok & (P.el_coef * smallest / CENTS_PER_USD <= P.el_budget)
    return fits


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
            f"the minimum ticket of USD {format_cents(T)} is above every applicant's limit "
            f"(largest limit USD {format_cents(ub.max())}: the smallest of request, collateral "
            "limit and concentration cap)"
        )
    elif P.fund_cents < T:
        reason = f"the minimum ticket of USD {format_cents(T)} is larger than the fund"
    else:
        reason = (
            f"the expected-loss budget of USD {format_usd(P.el_budget)} is too small for even the "
            f"smallest loan (USD {format_cents(max(T, 1))}) to any applicant with a usable limit: "
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
    u: np.ndarray
    if alpha == 1.0:
        u = np.log(y)
    elif alpha == 0.0:
        u = y.copy()
    else:
        u = np.power(y, 1.0 - alpha) / (1.0 - alpha)
    return u


def marginal_utility(y: np.ndarray, alpha: float) -> np.ndarray:
    return np.power(np.asarray(y, dtype=np.float64), -alpha)


def loan_objective(amount_usd: np.ndarray, weight: np.ndarray, alpha: float, shift: float) -> float:
    r""":math:`\sum_i w_i u_\alpha(x_i + s)` in USD, summed exactly (``math.fsum``)."""
    return math.fsum((weight * utility(np.asarray(amount_usd, np.float64) + shift, alpha)).tolist())
