"""What an explanation holds: the result types of :func:`~allocator.analysis.explain.explain_user`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from allocator import names as N
from allocator.analysis.explain.render import render_lines
from allocator.analysis.explain.wording import cents_text
from allocator.jsonsafe import json_safe

__all__ = [
    "AmountDerivation",
    "EventGroup",
    "Exclusion",
    "Explanation",
    "Factor",
    "OtherScenario",
    "PhaseIn",
    "RoundHistory",
    "RoundStep",
    "WeightBreakdown",
]


@dataclass(frozen=True)
class EventGroup:
    """The user's events on one product with one status (:data:`~allocator.analysis.explain.wording.COUNTED`, ...)."""

    product: str
    status: str
    n_events: int
    loss_usd: float | None  # realised loss (+ fee when fees count) at the event's price
    fee_usd: float | None
    unpriced_events: int  # events without a price bar at or before them (not valued)
    first_ts: str
    last_ts: str


@dataclass(frozen=True)
class Factor:
    """One factor of the weight: ``log_contribution`` :math:`f_{ik}` and its comparisons."""

    name: str
    formula: str
    log_contribution: float
    multiplier: float
    reference_log_contribution: float
    relative_multiplier: float  # exp(f_ik - f_mk): this factor's part of w_i / w_median
    share: float  # (f_ik - f_mk) / sum_j |f_ij - f_mj|


@dataclass(frozen=True)
class WeightBreakdown:
    """The user's weight by factor, against the median-weight eligible user."""

    weight: float
    log_weight: float
    reference_user: int
    reference_weight: float
    relative_weight: float
    factors: tuple[Factor, ...]


@dataclass(frozen=True)
class AmountDerivation:
    """How the paid amount follows from the weight, the price and the bounds."""

    alpha: float
    shadow_price: float
    segments: tuple[str, ...]
    segment_adjustment: float
    effective_price: float
    closed_form_usd: float | None  # (w / price)^(1/alpha) before clipping; None at alpha = 0
    lower_usd: float  # whole cents: the amounts the problem is posed in
    upper_usd: float
    upper_source: str  # "cap", "phased_cap" or "coverage_cap"
    lower_cents: int
    upper_cents: int
    upper_formula: str  # how the upper bound follows from the scenario and the user's numbers
    continuous_usd: float | None  # the closed form clipped to the bounds
    voucher_cents: int
    bound: str  # as written in allocations.parquet
    binding: str  # "floor", "interior", "cap", "phased_cap" or "coverage_cap"
    difference_usd: float | None  # paid - continuous
    reproduces_within_cent: bool | None
    #: The largest such difference over the run's users (``certificate_rounded`` in the
    #: manifest): above a cent when bounds that are not whole cents (a coverage cap) left cents
    #: for the rounding to place further away.
    run_max_difference_usd: float | None = None
    #: The scenario's rule; for a claims rule the "closed form" is the user's point on the
    #: rule's path, ``rule_formula`` says how (and the shadow price is the path's multiplier).
    rule: str = "alpha_fair"
    rule_formula: str | None = None
    #: What the lower bound is: "floor", or from round 2 on "held" / "forfeited".
    lower_source: str = "floor"


@dataclass(frozen=True)
class Exclusion:
    """Why an excluded user is out: the first failing rule, its numbers and the distance."""

    reason: str
    rule: str
    detail: str
    distance: str | None
    run_detail: str | None  # the detail column of excluded.parquet
    also_fails: tuple[str, ...]


@dataclass(frozen=True)
class PhaseIn:
    r"""A paid user against the run's phase-in bands (:mod:`allocator.vouchers.weights`, "Phase-in band").

    ``factor`` is :math:`\phi_i = \phi^L_i \phi^r_i` of ``allocations.parquet``, each part
    ``(x - p) / (m - p)`` inside its band ``(p, m)`` and 1 past it (or without that band). It
    multiplies the weight (the ``phase`` factor of :class:`WeightBreakdown`) and the cap:
    ``upper_cents`` is :math:`\lfloor\min(\phi_i c, \kappa L_i)\rfloor_{\text{cent}}`, at
    least one cent; ``cap_raised_to_floor`` when it fell below the floor and was raised to it.
    """

    factor: float
    loss_band_usd: tuple[float, float] | None  # (phase_in_loss_usd, min_loss_usd)
    ratio_band: tuple[float, float] | None  # (phase_in_ratio, min_loss_ratio)
    loss_factor: float
    ratio_factor: float
    in_loss_band: bool
    in_ratio_band: bool
    formula: str
    cap_usd: float
    coverage_cap: float | None
    scaled_cap_cents: int  # floor to the cent of cap x factor (before the coverage cap)
    upper_cents: int
    raised_to_one_cent: bool
    cap_raised_to_floor: bool

    @property
    def in_band(self) -> bool:
        return self.in_loss_band or self.in_ratio_band


@dataclass(frozen=True)
class OtherScenario:
    """The user's outcome under another shipped scenario on the same data."""

    scenario: str
    status: str  # "paid", "excluded" or "failed"
    voucher_cents: int | None = None
    bound: str | None = None
    reason: str | None = None
    detail: str | None = None
    budget_usd: float | None = None
    shipped_budget_usd: float | None = None


_DECISION_WORDS = {
    N.DECISION_REINSTATE: "reinstated on appeal",
    N.DECISION_CORRECT: "after appeal",
    N.DECISION_UPHOLD: "appeal upheld",
}


@dataclass(frozen=True)
class RoundStep:
    """One round for one user: cumulative ``cents`` after it, the round's ``delta_cents``,
    ``expired_cents`` taken back in it, the user's ``status`` (``paid``, ``excluded:<reason>``
    or ``absent``) and the appeal decided in it (``decision``, ``note``)."""

    round: int
    status: str
    cents: int
    delta_cents: int
    expired_cents: int = 0
    decision: str | None = None
    note: str | None = None

    def words(self) -> str:
        """This round in words, e.g. ``+56.78 in round 2 after appeal: snapshot disputed``."""
        if self.round == 1:
            text = (
                f"USD {cents_text(self.cents)} in round 1"
                if self.status == "paid"
                else f"nothing in round 1 ({self.status})"
            )
        elif self.delta_cents:
            text = f"+{cents_text(self.delta_cents)} in round {self.round}"
        elif self.status == "paid":
            text = f"+0.00 in round {self.round}"
        else:
            text = f"nothing in round {self.round} ({self.status})"
        if self.expired_cents:
            text += f" (USD {cents_text(self.expired_cents)} expired unredeemed)"
        if self.decision is not None:
            text += f" {_DECISION_WORDS[self.decision]}"
            if self.note:
                text += f": {self.note}"
        return text


@dataclass(frozen=True)
class RoundHistory:
    """A user through every round of the chain, round 1 first (``steps``), and where they stand
    in the last: ``paid_before_cents`` held before it, ``held`` when the round pays them nothing
    because they sit on what they hold (no claw-back), ``forfeited`` after an expired voucher."""

    steps: tuple[RoundStep, ...]
    paid_before_cents: int
    held: bool
    forfeited: bool

    def sentence(self) -> str:
        """The history in one line: ``USD 1,234.56 in round 1, +56.78 in round 2 after ...``."""
        return ", ".join(step.words() for step in self.steps)


@dataclass(frozen=True)
class Explanation:
    """Everything :func:`explain_user` found about one user (see the module docstring)."""

    user_id: int
    run_dir: str
    scenario: str
    status: str  # "paid" or "excluded"
    events: tuple[EventGroup, ...]
    loss_usd: float | None
    gross_loss_usd: float | None
    fee_usd: float | None
    depeg_comp_usd: float | None
    net_assets_usd: float | None
    loss_ratio: float | None
    weight: WeightBreakdown | None = None
    amount: AmountDerivation | None = None
    exclusion: Exclusion | None = None
    other_scenarios: tuple[OtherScenario, ...] | None = None
    phase_in: PhaseIn | None = None  # paid users of a run with a phase-in band
    notes: tuple[str, ...] = field(default=())
    #: From round 2 on: the user through every round of the chain.
    rounds: RoundHistory | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict: no NaN or infinity (an infinite loss ratio is ``"inf"``)."""
        out: dict[str, Any] = json_safe(asdict(self))
        return out

    def lines(self) -> list[str]:
        """The explanation as text, one line per item."""
        return render_lines(self)
