"""Every knob of the studio: the scenario key it sets, its label in words and its range.

A catalogue, one entry per control. The page builds its controls from it, and a setting is
turned into a scenario with :func:`allocator.settings.scenarios.with_overrides`, so every value
is validated exactly as in a scenario file, with the same messages.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from allocator.settings.models import RULE_PARAMETERS, VOUCHER_RULES, Scenario

__all__ = [
    "FEATURES",
    "KNOBS",
    "RULE_LABELS",
    "SECTIONS",
    "Knob",
    "knob_values",
    "knobs_for",
]


@dataclass(frozen=True)
class Knob:
    """One control: ``key`` is the dotted scenario key, ``kind`` one of ``number``, ``slider``,
    ``choice``, ``switch``, ``regions`` or ``optional_number``."""

    key: str
    label: str
    help: str
    section: str
    kind: str
    low: float | None = None
    high: float | None = None
    step: float | None = None
    options: tuple[str, ...] = ()


#: The rules, in words, as the page lists them.
RULE_LABELS: dict[str, str] = {
    "alpha_fair": "Weighted fairness (alpha)",
    "max_min": "Exact max-min (equal amounts, or equal shares of the loss)",
    "proportional": "Proportional to the loss",
    "constrained_equal_awards": "Equal amounts, never above the loss (CEA)",
    "constrained_equal_losses": "Equal unpaid losses (CEL)",
    "talmud": "Talmud rule",
    "base_then_pro_rata": "A base amount, then pro rata (Mt. Gox)",
    "convenience_class": "Small losses in full, then pro rata (FTX)",
}
assert set(RULE_LABELS) == set(VOUCHER_RULES)

#: The sections of the control panel, in order.
SECTIONS = ("Rule and fairness", "Amounts", "Who is eligible", "Budget shares")

KNOBS: tuple[Knob, ...] = (
    Knob("objective.rule", "Rule", "How the budget is divided.", SECTIONS[0], "choice",
         options=tuple(VOUCHER_RULES)),
    Knob("objective.alpha", "Fairness (alpha)",
         "0 pays the largest weights first, 1 pays in proportion to the weight, higher values "
         "even the vouchers out.", SECTIONS[0], "slider", 0.0, 10.0, 0.25),
    Knob("objective.loss_exponent", "How much the loss counts",
         "The weight grows as loss to this power (1: in proportion to the loss).",
         SECTIONS[0], "slider", 0.0, 2.0, 0.05),
    Knob("objective.ratio_exponent", "How much the loss ratio counts",
         "The weight grows as the loss ratio (loss / net assets) to this power.",
         SECTIONS[0], "slider", 0.0, 2.0, 0.05),
    Knob("objective.ratio_cap", "Loss ratio counted up to",
         "A loss ratio above this counts as this much.", SECTIONS[0], "slider", 0.3, 5.0, 0.1),
    Knob("objective.form", "Fair in", "Vouchers in dollars, or shares of the loss repaid.",
         SECTIONS[0], "choice", options=("voucher", "coverage")),
    Knob("objective.base_usd", "Base amount (USD)",
         "Mt. Gox rule only: paid to everyone first (their loss if smaller).", SECTIONS[0],
         "optional_number", 1.0, 6000.0, 1.0),
    Knob("objective.threshold_usd", "Paid in full up to (USD)",
         "FTX rule only: losses up to this are paid in full first.", SECTIONS[0],
         "optional_number", 1.0, 1_000_000.0, 1.0),
    Knob("bounds.floor_usd", "Smallest voucher (USD)", "Every eligible user gets at least this.",
         SECTIONS[1], "number", 0.0, 6000.0, 1.0),
    Knob("bounds.cap_usd", "Largest voucher (USD)", "Nobody gets more than this.",
         SECTIONS[1], "number", 1.0, 1_000_000.0, 100.0),
    Knob("bounds.coverage_cap", "Largest share of the loss repaid",
         "1 means nobody is paid more than their loss; empty means no such cap.",
         SECTIONS[1], "optional_number", 0.01, 10.0, 0.05),
    Knob("budget.total_usd", "Budget (USD)", "The money to divide.", SECTIONS[1], "number",
         1.0, 1e13, 1_000_000.0),
    Knob("budget.exhaust", "Pay the whole budget", "Off: money the bounds cannot place is kept.",
         SECTIONS[1], "switch"),
    Knob("eligibility.min_loss_usd", "Minimum loss (USD)", "Smaller losses are not paid.",
         SECTIONS[2], "number", 0.0, 1_000_000.0, 1.0),
    Knob("eligibility.min_loss_ratio", "Minimum loss ratio",
         "Loss as a share of net assets in the snapshot; smaller shares are not paid.",
         SECTIONS[2], "slider", 0.0, 1.0, 0.01),
    Knob("eligibility.phase_in_loss_usd", "Loss phase-in from (USD)",
         "Between this and the minimum loss, users are paid part of a voucher; empty: a hard "
         "cut.", SECTIONS[2], "optional_number", 0.0, 1_000_000.0, 1.0),
    Knob("eligibility.phase_in_ratio", "Ratio phase-in from",
         "Between this and the minimum ratio, users are paid part of a voucher; empty: a hard "
         "cut.", SECTIONS[2], "optional_number", 0.0, 1.0, 0.01),
    Knob("eligibility.depeg_policy", "Users paid depeg compensation",
         "exclude them, net the compensation from the loss, or ignore it.", SECTIONS[2],
         "choice", options=("exclude", "net", "ignore")),
    Knob("eligibility.restricted_regions", "Restricted regions",
         "Two-letter region codes whose users are not paid, separated by commas.",
         SECTIONS[2], "regions"),
    Knob("eligibility.require_kyc", "Require identity verification (KYC)",
         "Off: unverified users are paid too.", SECTIONS[2], "switch"),
)  # fmt: skip


#: Feature columns offered as weight factors, in words (more can be set in a scenario file).
FEATURES: dict[str, str] = {
    "vip_tier": "VIP tier",
    "is_institutional": "Institutional account (0 or 1)",
    "account_age_days": "Account age (days)",
    "n_events": "Liquidation events",
}


def knobs_for(scenario: Scenario) -> tuple[Knob, ...]:
    """The knobs: the fixed ones, a weight coefficient per feature (those of :data:`FEATURES`
    and any the scenario sets), and each segment's minimum and maximum share of the budget."""
    features = [
        Knob(
            f"objective.features.{name}",
            f"Weight factor: {FEATURES.get(name, name)}",
            f"The weight is multiplied by exp(c x {FEATURES.get(name, name).lower()}); "
            "0 leaves it out.",
            SECTIONS[0],
            "number",
            -10.0,
            10.0,
            0.01,
        )
        for name in dict.fromkeys([*FEATURES, *(n for n, _ in scenario.objective.features)])
    ]
    shares = []
    for seg in scenario.segments:
        for side, word in (("min_share", "at least"), ("max_share", "at most")):
            shares.append(
                Knob(
                    f"segments.{seg.name}.{side}",
                    f"{seg.name}: {word} this share of the budget",
                    f"Users where {seg.where}; empty: no such share.",
                    SECTIONS[3],
                    "optional_number",
                    0.0,
                    1.0,
                    0.01,
                )
            )
    return (*KNOBS, *features, *shares)


def knob_values(scenario: Scenario) -> dict[str, Any]:
    """The value of every knob of :func:`knobs_for` in ``scenario``."""
    o, b, e = scenario.objective, scenario.bounds, scenario.eligibility
    values: dict[str, Any] = {
        "objective.rule": o.rule,
        "objective.alpha": o.alpha,
        "objective.loss_exponent": o.loss_exponent,
        "objective.ratio_exponent": o.ratio_exponent,
        "objective.ratio_cap": o.ratio_cap,
        "objective.form": o.form,
        "objective.base_usd": o.base_usd,
        "objective.threshold_usd": o.threshold_usd,
        "bounds.floor_usd": b.floor_usd,
        "bounds.cap_usd": b.cap_usd,
        "bounds.coverage_cap": b.coverage_cap,
        "budget.total_usd": scenario.budget.total_usd,
        "budget.exhaust": scenario.budget.exhaust,
        "eligibility.min_loss_usd": e.min_loss_usd,
        "eligibility.min_loss_ratio": e.min_loss_ratio,
        "eligibility.phase_in_loss_usd": e.phase_in_loss_usd,
        "eligibility.phase_in_ratio": e.phase_in_ratio,
        "eligibility.depeg_policy": e.depeg_policy,
        "eligibility.restricted_regions": ", ".join(e.restricted_regions),
        "eligibility.require_kyc": e.require_kyc,
    }
    coefficients = dict(scenario.objective.features)
    for name in dict.fromkeys([*FEATURES, *coefficients]):
        values[f"objective.features.{name}"] = coefficients.get(name, 0.0)
    for seg in scenario.segments:
        values[f"segments.{seg.name}.min_share"] = seg.min_share
        values[f"segments.{seg.name}.max_share"] = seg.max_share
    return values


def rule_parameter_key(rule: str) -> str | None:
    """The ``objective.*`` key of the parameter ``rule`` needs, if any."""
    key = RULE_PARAMETERS.get(rule)
    return f"objective.{key}" if key else None
