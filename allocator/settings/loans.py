"""The loan fund's scenario: typed settings read from a TOML file, with their ranges."""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from allocator.errors import ScenarioError
from allocator.settings.toml import build, load_toml, to_dict

#: Top-level keys of a voucher scenario (allocator.settings.models.Scenario) that a loan scenario lacks,
#: and keys only a loan scenario has: they tell the two kinds of file apart.
VOUCHER_SCENARIO_KEYS = frozenset(
    {"eligibility", "objective", "bounds", "budget", "segments", "rounding", "payouts"}
)
LOAN_ONLY_KEYS = frozenset(
    {"fund_usd", "alpha", "shift_usd", "weights", "limits", "risk", "pricing"}
)

#: Largest supported alpha: 3 is already close to max-min fairness, and beyond it the conic
#: model (reported alongside the exact answer) fails on realistic weight ranges.
MAX_ALPHA = 3.0
#: Largest alpha with a minimum ticket (measured: HiGHS stalls on the tangent-cut model at 3).
MAX_ALPHA_MIP = 2.0
#: Largest USD amount of a scenario (fund, budget, ticket, shift, floors): the applications'
#: limit, USD 1e13, so that cents stay exact.
MAX_AMOUNT_USD = 1e13
#: Largest advance rate: a loan of ten times the collateral's post-haircut value is no longer
#: secured lending, and the bound keeps every collateral limit within int64 cents.
MAX_ADVANCE_RATE = 10.0


# ----------------------------------------------------------------------------- scenario


@dataclass(frozen=True)
class TierSpec:
    """One credit tier: default probability used when an applicant gives none, the upper edge
    of its default-probability band (to place an applicant that gives only a probability) and
    its annual spread over the base rate."""

    name: str
    pd: float
    max_pd: float
    spread: float


@dataclass(frozen=True)
class LoanWeightSpec:
    r"""Weights :math:`w_i \propto \max(L_i,\underline L)^{a_L}\max(V_i,\underline V)^{a_V}
    e^{c v_i}`: ``loss_exponent`` :math:`a_L`, ``volume_exponent`` :math:`a_V`,
    ``vip_coefficient`` :math:`c`, ``loss_floor_usd`` :math:`\underline L`,
    ``volume_floor_usd`` :math:`\underline V`."""

    loss_exponent: float = 1.0
    volume_exponent: float = 0.25
    vip_coefficient: float = 0.05
    loss_floor_usd: float = 10_000.0
    volume_floor_usd: float = 1_000_000.0


@dataclass(frozen=True)
class LoanLimitSpec:
    """Per-borrower limits: ``loan <= concentration_cap * fund``, ``loan <= advance_rate *
    (1 - haircut) * collateral``; ``min_ticket_usd`` > 0 makes each loan 0 or at least it.

    The cap is a share of the fund, so a larger fund also raises it. With the cap fixed in USD
    a larger fund never lowers the total lent (without a minimum ticket); with the share fixed
    and the expected-loss budget binding it can, because the larger cap lets the budget go to
    a few low-risk, high-weight borrowers.
    """

    concentration_cap: float = 0.10
    advance_rate: float = 1.0
    min_ticket_usd: float = 100_000.0


@dataclass(frozen=True)
class LoanRiskSpec:
    """Expected-loss budget: ``sum_i pd_i * lgd * loan_i <= el_budget_usd``."""

    lgd: float = 0.45
    el_budget_usd: float = 1_500_000.0


def default_tiers() -> tuple[TierSpec, ...]:
    return (
        TierSpec("A", pd=0.005, max_pd=0.01, spread=0.005),
        TierSpec("B", pd=0.02, max_pd=0.03, spread=0.01),
        TierSpec("C", pd=0.05, max_pd=0.08, spread=0.02),
        TierSpec("D", pd=0.15, max_pd=1.0, spread=0.04),
    )


@dataclass(frozen=True)
class LoanPricingSpec:
    """``rate_i = min(base_rate + spread(tier_i), rate_ceiling)``, annual."""

    base_rate: float = 0.03
    rate_ceiling: float = 0.06
    tiers: tuple[TierSpec, ...] = field(default_factory=default_tiers)


@dataclass(frozen=True)
class LoanSolverSpec:
    """``convex_solver`` for the exact model and the polish step; ``mip_solver`` for the
    minimum-ticket model, with ``pwl_breakpoints`` tangent points per applicant, relative MIP
    gap ``mip_rel_gap`` (the largest gap a run is accepted with) and ``time_limit_s`` seconds
    (a MILP that reaches it before proving ``mip_rel_gap`` is a solver failure)."""

    convex_solver: Literal["CLARABEL", "ECOS", "SCS"] = "CLARABEL"
    mip_solver: Literal["HIGHS"] = "HIGHS"
    pwl_breakpoints: int = 32
    mip_rel_gap: float = 1e-6
    time_limit_s: float = 120.0


@dataclass(frozen=True)
class LoanScenario:
    """A fully resolved loan-fund scenario (``scenarios/loans_default.toml``)."""

    name: str
    description: str = ""
    fund_usd: float = 100_000_000.0
    alpha: float = 1.0
    shift_usd: float = 1.0
    weights: LoanWeightSpec = field(default_factory=LoanWeightSpec)
    limits: LoanLimitSpec = field(default_factory=LoanLimitSpec)
    risk: LoanRiskSpec = field(default_factory=LoanRiskSpec)
    pricing: LoanPricingSpec = field(default_factory=LoanPricingSpec)
    solver: LoanSolverSpec = field(default_factory=LoanSolverSpec)


def load_loan_scenario(path: str | Path) -> LoanScenario:
    """Read a loan scenario TOML file strictly (unknown keys, wrong types and out-of-range
    values raise :class:`~allocator.errors.ScenarioError`)."""

    path = Path(path)
    return loan_scenario_from_dict(load_toml(path), file=str(path))


def loan_scenario_from_dict(data: dict[str, Any], *, file: str = "<scenario>") -> LoanScenario:
    """Build and validate a :class:`LoanScenario` from plain data (a TOML or manifest table)."""

    if isinstance(data, dict):
        voucher_keys = sorted(k for k in data if k in VOUCHER_SCENARIO_KEYS)
        if voucher_keys and not any(k in data for k in LOAN_ONLY_KEYS):
            # Both commands read TOML scenarios; the strict "unknown key" message alone does
            # not say that the file is for the other command.
            raise ScenarioError(
                f"{file} is a voucher scenario (it has {', '.join(voucher_keys)}), not a loan "
                "scenario.",
                hint="voucher scenarios are run with `allocator allocate --scenario FILE`; a loan "
                "scenario has fund_usd, [limits], [risk] and [pricing], as in "
                "scenarios/loans_default.toml.",
            )
    scn = build(LoanScenario, data, file=file)
    validate_loan_scenario(scn, file=file)
    return scn


def loan_scenario_to_dict(scn: LoanScenario) -> dict[str, Any]:
    """Plain JSON-ready data that :func:`loan_scenario_from_dict` reads back to an equal object."""

    return to_dict(scn)


def validate_loan_scenario(scn: LoanScenario, *, file: str = "<scenario>") -> None:
    """Range checks a type checker cannot make; each failure names the key and the rule.

    Every USD amount (``fund_usd``, ``shift_usd``, the weight floors, ``limits.min_ticket_usd``,
    ``risk.el_budget_usd``) must be at most :data:`MAX_AMOUNT_USD` (USD 1e13), and
    ``limits.advance_rate`` at most :data:`MAX_ADVANCE_RATE`, so that every limit in cents is
    exact.

    Parameters
    ----------
    scn : LoanScenario
        The scenario to check.
    file : str
        Where it came from, for the message.

    Raises
    ------
    ScenarioError
        The first key out of its range, with the rule and the value.
    """

    def fail(key: str, rule: str, value: Any) -> None:
        raise ScenarioError(f"loan scenario {file}: {key} {rule}, got {value!r}.")

    def finite(key: str, value: float) -> None:
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            fail(key, "must be a finite number", value)

    for key, value in [
        ("fund_usd", scn.fund_usd),
        ("alpha", scn.alpha),
        ("shift_usd", scn.shift_usd),
        *[
            (f"weights.{f.name}", getattr(scn.weights, f.name))
            for f in dataclasses.fields(scn.weights)
        ],
        *[
            (f"limits.{f.name}", getattr(scn.limits, f.name))
            for f in dataclasses.fields(scn.limits)
        ],
        ("risk.lgd", scn.risk.lgd),
        ("risk.el_budget_usd", scn.risk.el_budget_usd),
        ("pricing.base_rate", scn.pricing.base_rate),
        ("pricing.rate_ceiling", scn.pricing.rate_ceiling),
        ("solver.mip_rel_gap", scn.solver.mip_rel_gap),
        ("solver.time_limit_s", scn.solver.time_limit_s),
    ]:
        finite(key, value)
    if not scn.name.strip():
        fail("name", "must not be empty", scn.name)
    big = "1e13] USD (1e13 = MAX_AMOUNT_USD, the largest amount the cents arithmetic holds exactly)"
    for key, value, low in [
        ("fund_usd", scn.fund_usd, "(0"),
        ("shift_usd", scn.shift_usd, "[0"),
        ("weights.loss_floor_usd", scn.weights.loss_floor_usd, "(0"),
        ("weights.volume_floor_usd", scn.weights.volume_floor_usd, "(0"),
        ("limits.min_ticket_usd", scn.limits.min_ticket_usd, "[0"),
        ("risk.el_budget_usd", scn.risk.el_budget_usd, "[0"),
    ]:
        if not (value > 0 if low == "(0" else value >= 0) or value > MAX_AMOUNT_USD:
            fail(key, f"must be in {low}, {big}", value)
    if not 0 <= scn.alpha <= MAX_ALPHA:
        fail(
            "alpha",
            f"must be in [0, {MAX_ALPHA:g}] (0 = utilitarian, 1 = proportional "
            "fairness; larger alphas are numerically unreliable in this model)",
            scn.alpha,
        )
    if scn.alpha >= 1 and scn.shift_usd <= 0:
        fail(
            "shift_usd",
            "must be > 0 when alpha >= 1 (a zero loan would have utility -inf)",
            scn.shift_usd,
        )
    if scn.limits.min_ticket_usd > 0 and scn.alpha > MAX_ALPHA_MIP:
        fail(
            "alpha",
            f"must be at most {MAX_ALPHA_MIP:g} with a minimum ticket: the utility of a "
            "zero loan, u(shift), is then so far below that of a ticket that the mixed-integer "
            "model cannot be solved reliably (raise shift_usd or drop the minimum ticket)",
            scn.alpha,
        )
    w = scn.weights
    for key, value in [("loss_exponent", w.loss_exponent), ("volume_exponent", w.volume_exponent)]:
        if value < 0:
            fail(f"weights.{key}", "must be >= 0", value)
    if abs(w.vip_coefficient) > 5:
        fail(
            "weights.vip_coefficient",
            "must be in [-5, 5] (a factor exp(c) per VIP tier)",
            w.vip_coefficient,
        )
    lim = scn.limits
    if not 0 < lim.concentration_cap <= 1:
        fail(
            "limits.concentration_cap",
            "must be in (0, 1] (a share of the fund)",
            lim.concentration_cap,
        )
    if not 0 < lim.advance_rate <= MAX_ADVANCE_RATE:
        fail(
            "limits.advance_rate",
            f"must be in (0, {MAX_ADVANCE_RATE:g}] (a multiple of the "
            "collateral's post-haircut value)",
            lim.advance_rate,
        )
    if not 0 <= scn.risk.lgd <= 1:
        fail("risk.lgd", "must be in [0, 1]", scn.risk.lgd)
    pr = scn.pricing
    if pr.base_rate < 0:
        fail("pricing.base_rate", "must be >= 0", pr.base_rate)
    if pr.rate_ceiling < pr.base_rate:
        fail(
            "pricing.rate_ceiling",
            f"must be >= pricing.base_rate ({pr.base_rate})",
            pr.rate_ceiling,
        )
    if not pr.tiers:
        fail("pricing.tiers", "must list at least one tier", pr.tiers)
    names = [t.name for t in pr.tiers]
    if len(set(names)) != len(names) or any(not n.strip() for n in names):
        fail("pricing.tiers", "must have unique, non-empty names", names)
    edges = [t.max_pd for t in pr.tiers]
    for t in pr.tiers:
        for key in ("pd", "max_pd", "spread"):
            finite(f"pricing.tiers[{t.name}].{key}", getattr(t, key))
        if not 0 <= t.pd <= 1:
            fail(f"pricing.tiers[{t.name}].pd", "must be in [0, 1]", t.pd)
        if t.spread < 0:
            fail(f"pricing.tiers[{t.name}].spread", "must be >= 0", t.spread)
        if t.pd > t.max_pd:
            fail(
                f"pricing.tiers[{t.name}].pd",
                f"must not exceed the tier's max_pd ({t.max_pd})",
                t.pd,
            )
    if any(b <= a for a, b in itertools.pairwise(edges)) or edges[-1] != 1.0:
        fail(
            "pricing.tiers",
            "must be ordered by strictly increasing max_pd, the last being 1.0, "
            "so that every default probability falls in exactly one tier",
            edges,
        )
    sv = scn.solver
    if not 2 <= sv.pwl_breakpoints <= 200:
        fail("solver.pwl_breakpoints", "must be in [2, 200]", sv.pwl_breakpoints)
    if not 0 < sv.mip_rel_gap <= 0.1:
        fail("solver.mip_rel_gap", "must be in (0, 0.1]", sv.mip_rel_gap)
    if sv.time_limit_s <= 0:
        fail("solver.time_limit_s", "must be > 0", sv.time_limit_s)
