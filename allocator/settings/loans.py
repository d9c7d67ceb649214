"""The loan fund's scenario: typed settings read from a TOML file, with their ranges.

The annotations are the schema (strict types of :mod:`allocator.settings.types`, ``Field``
ranges, and ``_check`` validators for the rules that span fields); a file is validated against
them with pydantic by :func:`load_loan_scenario`, and a range error reads
``fund_usd must be in (0, 1e13] USD, got 1e+300``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator, with_config

from allocator.errors import ScenarioError
from allocator.settings.toml import build, load_toml, to_dict
from allocator.settings.types import SETTINGS_CONFIG, Allowed, Float, Int, Str, rule_error

#: Top-level keys of a voucher scenario (allocator.settings.models.Scenario) that a loan scenario lacks,
#: and keys only a loan scenario has: they tell the two kinds of file apart.
VOUCHER_SCENARIO_KEYS = frozenset(
    {"eligibility", "objective", "bounds", "budget", "segments", "rounding", "payouts", "rounds"}
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

_BIG = "1e13] USD (1e13 = MAX_AMOUNT_USD, the largest amount the cents arithmetic holds exactly)"
#: A USD amount above zero, and one that may be zero.
PositiveUsd = Annotated[Float, Field(gt=0, le=MAX_AMOUNT_USD), Allowed(f"(0, {_BIG}")]
NonNegativeUsd = Annotated[Float, Field(ge=0, le=MAX_AMOUNT_USD), Allowed(f"[0, {_BIG}")]
Probability = Annotated[Float, Field(ge=0, le=1)]


# ----------------------------------------------------------------------------- scenario


@with_config(SETTINGS_CONFIG)
@dataclass(frozen=True)
class TierSpec:
    """One credit tier: default probability used when an applicant gives none, the upper edge
    of its default-probability band (to place an applicant that gives only a probability) and
    its annual spread over the base rate."""

    name: Str
    """Tier name, e.g. "A"."""
    pd: Probability
    """Default probability of an applicant of the tier who gives none."""
    max_pd: Probability
    """Upper edge of the tier's default-probability band."""
    spread: Annotated[Float, Field(ge=0)]
    """Annual spread over the base rate."""


@with_config(SETTINGS_CONFIG)
@dataclass(frozen=True)
class LoanWeightSpec:
    r"""Weights :math:`w_i \propto \max(L_i,\underline L)^{a_L}\max(V_i,\underline V)^{a_V}
    e^{c v_i}`: ``loss_exponent`` :math:`a_L`, ``volume_exponent`` :math:`a_V`,
    ``vip_coefficient`` :math:`c`, ``loss_floor_usd`` :math:`\underline L`,
    ``volume_floor_usd`` :math:`\underline V`."""

    loss_exponent: Annotated[Float, Field(ge=0)] = 1.0
    """Exponent of the crash loss in the weight."""
    volume_exponent: Annotated[Float, Field(ge=0)] = 0.25
    """Exponent of the trading volume in the weight."""
    vip_coefficient: Annotated[
        Float, Field(ge=-5, le=5), Allowed("[-5, 5] (a factor exp(c) per VIP tier)")
    ] = 0.05
    """Coefficient c of the VIP tier in the weight exp(c v)."""
    loss_floor_usd: PositiveUsd = 10_000.0
    """Loss below which the weight stops falling (USD)."""
    volume_floor_usd: PositiveUsd = 1_000_000.0
    """Volume below which the weight stops falling (USD)."""


@with_config(SETTINGS_CONFIG)
@dataclass(frozen=True)
class LoanLimitSpec:
    """Per-borrower limits: ``loan <= concentration_cap * fund``, ``loan <= advance_rate *
    (1 - haircut) * collateral``; ``min_ticket_usd`` > 0 makes each loan 0 or at least it.

    The cap is a share of the fund, so a larger fund also raises it. With the cap fixed in USD
    a larger fund never lowers the total lent (without a minimum ticket); with the share fixed
    and the expected-loss budget binding it can, because the larger cap lets the budget go to
    a few low-risk, high-weight borrowers.
    """

    concentration_cap: Annotated[
        Float, Field(gt=0, le=1), Allowed("(0, 1] (a share of the fund)")
    ] = 0.10
    """Largest loan as a share of the fund."""
    advance_rate: Annotated[
        Float,
        Field(gt=0, le=MAX_ADVANCE_RATE),
        Allowed(f"(0, {MAX_ADVANCE_RATE:g}] (a multiple of the collateral's post-haircut value)"),
    ] = 1.0
    """Largest loan as a multiple of the collateral's post-haircut value."""
    min_ticket_usd: NonNegativeUsd = 100_000.0
    """Smallest loan (USD); 0 for none."""


@with_config(SETTINGS_CONFIG)
@dataclass(frozen=True)
class LoanRiskSpec:
    """Expected-loss budget: ``sum_i pd_i * lgd * loan_i <= el_budget_usd``."""

    lgd: Probability = 0.45
    """Loss given default, a fraction."""
    el_budget_usd: NonNegativeUsd = 1_500_000.0
    """Expected-loss budget (USD)."""


def default_tiers() -> tuple[TierSpec, ...]:
    return (
        TierSpec("A", pd=0.005, max_pd=0.01, spread=0.005),
        TierSpec("B", pd=0.02, max_pd=0.03, spread=0.01),
        TierSpec("C", pd=0.05, max_pd=0.08, spread=0.02),
        TierSpec("D", pd=0.15, max_pd=1.0, spread=0.04),
    )


@with_config(SETTINGS_CONFIG)
@dataclass(frozen=True)
class LoanPricingSpec:
    """``rate_i = min(base_rate + spread(tier_i), rate_ceiling)``, annual."""

    base_rate: Annotated[Float, Field(ge=0)] = 0.03
    """Annual base rate."""
    rate_ceiling: Float = 0.06
    """Highest annual rate (at least the base rate)."""
    tiers: tuple[TierSpec, ...] = field(default_factory=default_tiers)
    """Credit tiers by increasing max_pd, the last ending at 1.0."""


@with_config(SETTINGS_CONFIG)
@dataclass(frozen=True)
class LoanSolverSpec:
    """``convex_solver`` for the exact model and the polish step; ``mip_solver`` for the
    minimum-ticket model, with ``pwl_breakpoints`` tangent points per applicant, relative MIP
    gap ``mip_rel_gap`` (the largest gap a run is accepted with) and ``time_limit_s`` seconds
    (a MILP that reaches it before proving ``mip_rel_gap`` is a solver failure)."""

    convex_solver: Literal["CLARABEL", "ECOS", "SCS"] = "CLARABEL"
    """Conic solver of the exact model."""
    mip_solver: Literal["HIGHS"] = "HIGHS"
    """Solver of the minimum-ticket model."""
    pwl_breakpoints: Annotated[Int, Field(ge=2, le=200)] = 32
    """Tangent points per applicant in the minimum-ticket model."""
    mip_rel_gap: Annotated[Float, Field(gt=0, le=0.1)] = 1e-6
    """Largest relative MIP gap a run is accepted with."""
    time_limit_s: Annotated[Float, Field(gt=0)] = 120.0
    """Seconds the MIP solver may take."""


@with_config(SETTINGS_CONFIG)
@dataclass(frozen=True)
class LoanScenario:
    """A fully resolved loan-fund scenario (``scenarios/loans_default.toml``)."""

    name: Str
    """Scenario name."""
    description: Str = ""
    """What the scenario is for."""
    fund_usd: PositiveUsd = 100_000_000.0
    """Money the fund lends (USD)."""
    alpha: Annotated[
        Float,
        Field(ge=0, le=MAX_ALPHA),
        Allowed(
            f"[0, {MAX_ALPHA:g}] (0 = utilitarian, 1 = proportional fairness; larger alphas are "
            "numerically unreliable in this model)"
        ),
    ] = 1.0
    """Fairness of the loans: 0 utilitarian, 1 proportional."""
    shift_usd: NonNegativeUsd = 1.0
    """Shift s in the utility u(loan + s) (USD); > 0 when alpha >= 1."""
    weights: LoanWeightSpec = field(default_factory=LoanWeightSpec)
    """How applicants are weighted."""
    limits: LoanLimitSpec = field(default_factory=LoanLimitSpec)
    """Per-borrower limits."""
    risk: LoanRiskSpec = field(default_factory=LoanRiskSpec)
    """Expected-loss budget."""
    pricing: LoanPricingSpec = field(default_factory=LoanPricingSpec)
    """Interest rates by credit tier."""
    solver: LoanSolverSpec = field(default_factory=LoanSolverSpec)
    """Solvers and their limits."""

    @model_validator(mode="after")
    def _check(self) -> LoanScenario:
        _check_cross_rules(self)
        return self


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
    return build(LoanScenario, data, file=f"loan scenario {file}", style="interval")


def loan_scenario_to_dict(scn: LoanScenario) -> dict[str, Any]:
    """Plain JSON-ready data that :func:`loan_scenario_from_dict` reads back to an equal object."""

    return to_dict(scn)


def validate_loan_scenario(scn: LoanScenario, *, file: str = "<scenario>") -> None:
    """Check the types, ranges and cross-field rules of a scenario built in code.

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
    build(LoanScenario, to_dict(scn), file=f"loan scenario {file}", style="interval")


def _check_cross_rules(scn: LoanScenario) -> None:
    """The rules that span several keys (the ranges of single keys are their annotations)."""

    def fail(key: str, rule: str, value: Any) -> None:
        raise rule_error(key, f"{rule}, got {value!r}")

    if not scn.name.strip():
        fail("name", "must not be empty", scn.name)
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
    pr = scn.pricing
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
    for t in pr.tiers:
        if t.pd > t.max_pd:
            fail(
                f"pricing.tiers[{t.name}].pd",
                f"must not exceed the tier's max_pd ({t.max_pd})",
                t.pd,
            )
    edges = [t.max_pd for t in pr.tiers]
    if any(b <= a for a, b in itertools.pairwise(edges)) or edges[-1] != 1.0:
        fail(
            "pricing.tiers",
            "must be ordered by strictly increasing max_pd, the last being 1.0, "
            "so that every default probability falls in exactly one tier",
            edges,
        )
