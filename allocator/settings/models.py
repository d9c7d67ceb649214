"""Frozen settings that a scenario resolves to, with their types, ranges and rules.

Each section of a scenario TOML file maps to one frozen dataclass here; the defaults are a careful
reading of the Together Initiative announcement (see ``scenarios/baseline.toml``). The library
takes these objects, never file paths, so the optimisation core stays free of I/O.

The annotations are the schema: :func:`allocator.settings.toml.build` validates a file against
them with pydantic (strict types, ``Field`` ranges, and the ``_check`` validators for rules that
span fields); building a dataclass in code checks nothing, so code can hand any value to the
module that owns its meaning.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    WithJsonSchema,
    model_validator,
    with_config,
)

from allocator import names as N
from allocator.settings.features import feature_schema, predicate_problem, weight_feature_columns
from allocator.settings.types import (
    SETTINGS_CONFIG,
    Allowed,
    Bool,
    Float,
    Int,
    Str,
    UtcDateTime,
    pairs_table,
    rule_error,
)

#: Announced window "2025-10-10 00:00 to 2025-10-11 23:59 (UTC)". We read "23:59" as the whole
#: minute, so the window is the half-open interval [2025-10-10 00:00:00, 2025-10-12 00:00:00):
#: an event at 23:59:59.999999 on the 11th counts, one at 00:00:00 on the 12th does not.
WINDOW_START = datetime(2025, 10, 10, 0, 0, tzinfo=UTC)
WINDOW_END = datetime(2025, 10, 12, 0, 0, tzinfo=UTC)
SNAPSHOT_AT = datetime(2025, 10, 9, 23, 59, tzinfo=UTC)
ANNOUNCED_AT = datetime(2025, 10, 14, 0, 0, tzinfo=UTC)

#: Longest payout window after the announcement, in hours (ten years): far beyond any
#: programme's schedule, and well inside what date arithmetic can hold.
MAX_PAYOUT_HOURS = 87_600

#: Regions where the exchange's derivatives are not offered (a scenario may replace the list).
DEFAULT_RESTRICTED_REGIONS = ("US", "CU", "IR", "KP", "SY")

#: Allowed ranges; open ends are written out in messages.
ALPHA_MAX = 100.0
#: Smallest positive alpha: below it the closed form underflows ((w / max w)^(1/alpha)) and the
#: conic model fails without a diagnosis (measured: alpha = 1e-9 is refused by the certificate
#: and 1e-17 crashes inside cvxpy, on weights spanning a factor 4e5; 1e-6 solves).
ALPHA_MIN_POSITIVE = 1e-6
EXPONENT_LIMIT = 10.0
#: Largest USD amount of a scenario: budget cents stay exact in float64 and int64.
BUDGET_MAX_USD = 1e13
#: Largest loss-ratio cap and coverage multiple: far above any meaningful value, and small
#: enough that ``cap ** exponent`` stays finite.
RATIO_MAX = 1e6
#: Largest payout batch: more users than any programme pays, and well inside int64 arithmetic.
MAX_BATCH_SIZE = 10**9
#: Last year an announcement may fall in: dates past it leave no room for the payout window.
MAX_ANNOUNCED_YEAR = 9000

#: The objective's rules: the alpha-fair family, its exact max-min limit, and the claims rules
#: of :mod:`allocator.kernel.claims` that pay the whole budget within the voucher bounds.
RULE_ALPHA_FAIR = "alpha_fair"
RULE_MAX_MIN = "max_min"
VOUCHER_RULES = (
    RULE_ALPHA_FAIR,
    RULE_MAX_MIN,
    "proportional",
    "constrained_equal_awards",
    "constrained_equal_losses",
    "talmud",
    "base_then_pro_rata",
    "convenience_class",
)
#: Short names a scenario may use for a rule (the full name is what the run records).
RULE_ALIASES = {
    "alpha": RULE_ALPHA_FAIR,
    "alpha-fair": RULE_ALPHA_FAIR,
    "lexicographic_max_min": RULE_MAX_MIN,
    "pro": "proportional",
    "pro_rata": "proportional",
    "cea": "constrained_equal_awards",
    "cel": "constrained_equal_losses",
    "mt_gox": "base_then_pro_rata",
    "ftx": "convenience_class",
    "ftx_convenience": "convenience_class",
}
#: The parameter (an ``[objective]`` key in USD) each rule needs.
RULE_PARAMETERS = {"base_then_pro_rata": "base_usd", "convenience_class": "threshold_usd"}
#: Claims rules: the claim is the user's loss and caps every award (award <= loss).
CLAIMS_RULES = tuple(r for r in VOUCHER_RULES if r not in (RULE_ALPHA_FAIR, RULE_MAX_MIN))

_SEGMENT_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
_SCENARIO_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_REGION = re.compile(r"^[A-Z]{2}$")


def _known_product(value: str) -> str:
    if value not in N.PRODUCTS:
        raise rule_error("", "is not a known product", value=value, allowed=", ".join(N.PRODUCTS))
    return value


def _region_code(value: str) -> str:
    if not _REGION.match(value):
        raise rule_error(
            "",
            "is not a region code",
            value=value,
            allowed="ISO 3166-1 alpha-2, two upper-case letters such as 'US'",
        )
    return value


def _alpha_not_tiny(value: float) -> float:
    if 0.0 < value < ALPHA_MIN_POSITIVE:
        raise rule_error(
            "",
            "is out of range",
            value=value,
            allowed=f"0, or {ALPHA_MIN_POSITIVE:g} <= alpha <= {ALPHA_MAX:g} (smaller positive "
            "values underflow the solvers; use 0 for the utilitarian objective)",
        )
    return value


def rule_full_name(value: str) -> str:
    """The full name of a rule as a scenario may spell it (any case, hyphens, a short name);
    an unknown name comes back normalised, for the validator to refuse."""
    key = value.strip().lower().replace("-", "_")
    return RULE_ALIASES.get(key, key)


def _rule_name(value: object) -> object:
    if not isinstance(value, str):
        return value  # the strict string type words the error
    # the kernel's spelling too: case, surrounding spaces and hyphens do not matter
    full = rule_full_name(value)
    if full in ("minimum_payment", "class_action"):
        raise rule_error(
            "",
            "is not offered in a voucher scenario",
            value=value,
            allowed="a voucher scenario pays every eligible user at least bounds.floor_usd, so "
            "an award below a minimum is raised to it, not dropped; dropping it would leave an "
            "eligible user unpaid without an exclusion reason. Raise bounds.floor_usd for a "
            "larger minimum, or study the rule with `allocator claims minimum_payment`",
        )
    # an unknown rule goes to the Literal check as written, so the message quotes the file
    return full if full in VOUCHER_RULES else value


def _scenario_name(value: str) -> str:
    # the name is the default run directory (runs/<name>) and part of file names, so it must
    # not be able to climb out of runs/ or hide as a dot-file
    if not _SCENARIO_NAME.match(value):
        raise rule_error(
            "",
            "is not a valid scenario name",
            value=value,
            quote_key=True,
            allowed="1 to 100 letters, digits, '.', '_' or '-', starting with a letter or digit",
        )
    return value


def _segment_name(value: str) -> str:
    if not _SEGMENT_NAME.match(value):
        raise rule_error(
            "",
            "is not allowed",
            value=value,
            allowed="letters, digits, '_' and '-' (names appear in dotted parameters and "
            "'+'-joined labels)",
        )
    return value


def _announced_year(value: datetime) -> datetime:
    if value.year > MAX_ANNOUNCED_YEAR:
        raise rule_error(
            "",
            "is out of range",
            value=value.isoformat(),
            allowed=f"a year before {MAX_ANNOUNCED_YEAR}",
        )
    return value


Product = Annotated[Str, AfterValidator(_known_product)]
Region = Annotated[Str, AfterValidator(_region_code)]
UsdAmount = Annotated[Float, Field(ge=0, le=BUDGET_MAX_USD)]
Share = Annotated[Float, Field(ge=0, le=1), Allowed("0 <= share <= 1")]
Exponent = Annotated[
    Float,
    Field(ge=-EXPONENT_LIMIT, le=EXPONENT_LIMIT),
    Allowed(f"{-EXPONENT_LIMIT:g} to {EXPONENT_LIMIT:g}"),
]


@with_config(SETTINGS_CONFIG)
@dataclass(frozen=True)
class EligibilityRules:
    """Who qualifies for a voucher.

    ``window_start`` is inclusive and ``window_end`` exclusive (see :data:`WINDOW_END`).
    ``include_fees`` adds liquidation fees to the realised loss. ``nonpositive_net_assets``
    decides users whose snapshot net assets are zero or negative: their loss ratio is +inf, so
    ``"eligible"`` lets them pass the ratio rule and ``"exclude"`` excludes them.
    ``depeg_policy``: ``"exclude"`` users who already received depeg compensation (the reported
    rule), ``"net"`` their compensation from their loss before the thresholds, or ``"ignore"`` it.

    Phase-in band (``None``: the hard cliff as announced). With ``phase_in_loss_usd`` :math:`p`
    below ``min_loss_usd`` :math:`m`, users with loss in :math:`(p, m)` are eligible with the
    factor ``(L - p) / (m - p)`` (1 from :math:`m` up); ``phase_in_ratio`` does the
    same for the loss ratio below ``min_loss_ratio``. A user's phase factor is the product of
    both; the weight and the cap are multiplied by it (see :mod:`allocator.vouchers.weights`).
    """

    window_start: UtcDateTime = WINDOW_START
    """First instant of the liquidation window (inclusive)."""
    window_end: UtcDateTime = WINDOW_END
    """End of the liquidation window (exclusive)."""
    products: tuple[Product, ...] = N.COVERED_PRODUCTS
    """Products whose liquidations count."""
    min_loss_usd: UsdAmount = 50.0
    """Smallest counted loss (USD) that qualifies."""
    min_loss_ratio: Annotated[Float, Field(ge=0, le=RATIO_MAX)] = 0.30
    """Smallest loss / net assets ratio that qualifies."""
    restricted_regions: tuple[Region, ...] = DEFAULT_RESTRICTED_REGIONS
    """Regions (ISO 3166-1 alpha-2) whose users are excluded."""
    require_kyc: Bool = True
    """Exclude users without a verified KYC."""
    include_fees: Bool = True
    """Add liquidation fees to the realised loss."""
    nonpositive_net_assets: Literal["eligible", "exclude"] = "eligible"
    """Users with zero or negative snapshot net assets: pass the ratio rule, or be excluded."""
    depeg_policy: Literal["exclude", "net", "ignore"] = "exclude"
    """Users already paid depeg compensation: exclude them, net it, or ignore it."""
    snapshot_at: UtcDateTime = SNAPSHOT_AT
    """When net assets were snapshot."""
    phase_in_loss_usd: UsdAmount | None = None
    """Lower end of the loss phase-in band (below min_loss_usd); omit for the hard cliff."""
    phase_in_ratio: Annotated[Float, Field(ge=0, le=RATIO_MAX)] | None = None
    """Lower end of the loss-ratio phase-in band (below min_loss_ratio)."""

    @model_validator(mode="after")
    def _check(self) -> EligibilityRules:
        if not self.window_start < self.window_end:
            raise rule_error(
                "window_start",
                f"({self.window_start.isoformat()}) must be before eligibility.window_end "
                f"({self.window_end.isoformat()})",
            )
        if not self.products:
            raise rule_error("products", "must not be empty", allowed=", ".join(N.PRODUCTS))
        if len(set(self.products)) != len(self.products):
            raise rule_error("products", f"lists a product twice: {list(self.products)}")
        for key, value, top, top_value in (
            ("phase_in_loss_usd", self.phase_in_loss_usd, "min_loss_usd", self.min_loss_usd),
            ("phase_in_ratio", self.phase_in_ratio, "min_loss_ratio", self.min_loss_ratio),
        ):
            if value is not None and not value < top_value:
                raise rule_error(
                    key,
                    "is out of range",
                    value=value,
                    allowed=f">= 0 and below eligibility.{top} ({top_value:g})",
                )
        return self


@with_config(SETTINGS_CONFIG)
@dataclass(frozen=True)
class ObjectiveSpec:
    r"""Weighted alpha-fairness objective and how weights come from features.

    .. math::

        w_i = L_i^{a}\,\min(r_i, \bar r)^{b}\,\exp\Big(\sum_k c_k x_{ik}\Big)

    with loss :math:`L_i`, loss ratio :math:`r_i` capped at ``ratio_cap`` :math:`\bar r`, and
    feature columns :math:`x_{ik}` of the feature matrix named in ``features``.
    ``form="coverage"`` maximises the utility of coverage :math:`v_i / L_i` instead of the
    voucher, which is the same family with :math:`w_i \leftarrow w_i L_i^{\alpha-1}`.
    """

    alpha: Annotated[
        Float,
        Field(ge=0, le=ALPHA_MAX),
        Allowed(f"0 <= alpha <= {ALPHA_MAX:g}"),
        AfterValidator(_alpha_not_tiny),
    ] = 1.0
    """Fairness: 0 utilitarian, 1 proportional (log), large -> max-min."""
    loss_exponent: Exponent = 1.0
    """Exponent a of the loss in the weight L^a."""
    ratio_exponent: Exponent = 1.0
    """Exponent b of the capped loss ratio in the weight min(r, cap)^b."""
    ratio_cap: Annotated[Float, Field(gt=0, le=RATIO_MAX)] = 1.0
    """Loss ratio above which the ratio stops raising the weight."""
    features: Annotated[tuple[tuple[str, float], ...], pairs_table(Float)] = ()
    """Coefficient c of each feature column in the weight exp(c x)."""
    form: Literal["voucher", "coverage"] = "voucher"
    """Maximise the utility of the voucher, or of the coverage (voucher / loss)."""
    rule: Annotated[
        Literal[
            "alpha_fair",
            "max_min",
            "proportional",
            "constrained_equal_awards",
            "constrained_equal_losses",
            "talmud",
            "base_then_pro_rata",
            "convenience_class",
        ],
        BeforeValidator(_rule_name),
        # editors validate files against the schema: the short names the loader takes are valid
        WithJsonSchema(
            {
                "type": "string",
                "enum": [*VOUCHER_RULES, *RULE_ALIASES],
                "default": RULE_ALPHA_FAIR,
                "title": "Rule",
            }
        ),
    ] = "alpha_fair"
    """alpha_fair (the weighted objective), max_min (its exact limit) or a claims rule."""
    base_usd: Annotated[Float, Field(gt=0, le=BUDGET_MAX_USD)] | None = None
    """base_then_pro_rata: the base amount every user is paid first (up to their loss)."""
    threshold_usd: Annotated[Float, Field(gt=0, le=BUDGET_MAX_USD)] | None = None
    """convenience_class: losses up to this amount are paid in full first."""

    @model_validator(mode="after")
    def _check(self) -> ObjectiveSpec:
        needed = RULE_PARAMETERS.get(self.rule)
        for key in ("base_usd", "threshold_usd"):
            given = getattr(self, key) is not None
            if key == needed and not given:
                raise rule_error(
                    key,
                    f"is required by rule {self.rule!r}",
                    allowed="an amount in USD, e.g. 100.0",
                )
            if key != needed and given:
                users = [r for r, k in RULE_PARAMETERS.items() if k == key]
                raise rule_error(
                    key,
                    f"is not used by rule {self.rule!r}",
                    value=getattr(self, key),
                    allowed=f"only with rule = {users[0]!r}; remove it",
                )
        return self


@with_config(SETTINGS_CONFIG)
@dataclass(frozen=True)
class BoundsSpec:
    """Per-user bounds: ``floor_usd <= v_i <= min(cap_usd, coverage_cap * L_i)``."""

    floor_usd: UsdAmount = 4.0
    """Smallest voucher in USD."""
    cap_usd: Annotated[Float, Field(gt=0, le=BUDGET_MAX_USD)] = 6000.0
    """Largest voucher in USD."""
    coverage_cap: Annotated[Float, Field(gt=0, le=RATIO_MAX)] | None = None
    """Largest voucher as a multiple of the user's loss; omit for no coverage cap."""

    @model_validator(mode="after")
    def _check(self) -> BoundsSpec:
        if not self.cap_usd > self.floor_usd:
            raise rule_error(
                "cap_usd",
                "is out of range",
                value=self.cap_usd,
                allowed=f"> bounds.floor_usd ({self.floor_usd:g})",
            )
        return self


def _whole_cents(value: float) -> float:
    if round(value, 2) != value:
        raise rule_error(
            "", "is out of range", value=value, allowed="whole cents (at most 2 decimals)"
        )
    return value


@with_config(SETTINGS_CONFIG)
@dataclass(frozen=True)
class BudgetSpec:
    """Total budget; ``exhaust`` requires the whole budget to be paid (to the cent)."""

    total_usd: Annotated[
        Float,
        Field(gt=0, le=BUDGET_MAX_USD),
        Allowed(f"0 < total_usd <= {BUDGET_MAX_USD:g}"),
        AfterValidator(_whole_cents),
    ] = 300_000_000.0
    """Total budget in USD (whole cents)."""
    exhaust: Bool = True
    """Pay the whole budget, to the cent."""
    reserve_usd: Annotated[
        Float,
        Field(ge=0, le=BUDGET_MAX_USD),
        Allowed("0 <= reserve_usd < budget.total_usd, in whole cents"),
        AfterValidator(_whole_cents),
    ] = 0.0
    """Held back from the rounds before rounds.reserve_release_round (USD, whole cents)."""

    @model_validator(mode="after")
    def _check(self) -> BudgetSpec:
        if not self.reserve_usd < self.total_usd:
            raise rule_error(
                "reserve_usd",
                "is out of range",
                value=self.reserve_usd,
                allowed=f"below budget.total_usd ({self.total_usd:.2f}): the first round must "
                "pay something",
            )
        return self


@with_config(SETTINGS_CONFIG)
@dataclass(frozen=True)
class SegmentSpec:
    """A group of users (a Polars SQL predicate over feature-matrix columns) and its budget share."""

    name: Annotated[Str, AfterValidator(_segment_name)]
    """Unique name: letters, digits, '_' and '-'."""
    where: Str
    """Polars SQL condition over feature-matrix columns, e.g. "loss_usd < 10000"."""
    min_share: Share | None = None
    """Least share of the budget the segment receives."""
    max_share: Share | None = None
    """Most share of the budget the segment receives."""


@with_config(SETTINGS_CONFIG)
@dataclass(frozen=True)
class SolverSpec:
    """``name``: auto | fast | cvxpy; ``cvxpy_solver``: CLARABEL | ECOS | SCS."""

    name: Literal["auto", "fast", "cvxpy"] = "auto"
    """Solver: auto, fast (closed form) or cvxpy."""
    cvxpy_solver: Literal["CLARABEL", "ECOS", "SCS"] = "CLARABEL"
    """Conic solver cvxpy uses."""


@with_config(SETTINGS_CONFIG)
@dataclass(frozen=True)
class RoundingSpec:
    """Cents rounding; ties: largest remainder, then larger loss, then smaller user id."""

    method: Literal["largest_remainder"] = "largest_remainder"
    """Rounding method."""


@with_config(SETTINGS_CONFIG)
@dataclass(frozen=True)
class PayoutSpec:
    """Payout batches: the first starts within ``start_within_hours`` of the announcement and
    the last ends within ``finish_within_hours``."""

    batch_size: Annotated[Int, Field(ge=1, le=MAX_BATCH_SIZE)] = 50_000
    """Users per payout batch."""
    announced_at: Annotated[UtcDateTime, AfterValidator(_announced_year)] = ANNOUNCED_AT
    """When the programme was announced; the payout window counts from it."""
    start_within_hours: Annotated[Float, Field(ge=0)] = 24.0
    """Hours after the announcement by which the first batch starts."""
    finish_within_hours: Annotated[
        Float, Field(le=MAX_PAYOUT_HOURS), Allowed(f"<= {MAX_PAYOUT_HOURS} (ten years)")
    ] = 96.0
    """Hours after the announcement by which the last batch ends."""

    @model_validator(mode="after")
    def _check(self) -> PayoutSpec:
        if not self.finish_within_hours > self.start_within_hours:
            raise rule_error(
                "finish_within_hours",
                "is out of range",
                value=self.finish_within_hours,
                allowed=f"> payouts.start_within_hours ({self.start_within_hours}): the "
                "batches need time",
            )
        return self


#: Most rounds a distribution may have: far more than any real programme runs, and small enough
#: that the payout window of the last one stays a date.
MAX_ROUNDS = 1000


@with_config(SETTINGS_CONFIG)
@dataclass(frozen=True)
class RoundsSpec:
    r"""Distribution rounds (``allocator allocate --previous RUN_DIR``).

    Round :math:`k` pays, in total over rounds 1 to :math:`k`, the cumulative target

    .. math::

        T_k = B - R\,[k < k_R],

    with :math:`B` = ``budget.total_usd``, :math:`R` = ``budget.reserve_usd`` and :math:`k_R` =
    ``reserve_release_round`` (:func:`round_budget_usd`); ``budget.exhaust`` applies to
    :math:`T_k`. ``unclaimed`` decides the vouchers a redemptions file reports unclaimed by the
    deadline: ``"keep"`` leaves them valid and counted as paid, ``"expire"`` takes them back
    into the pool (the user forfeits: their cumulative amount stays what they redeemed). Round
    :math:`k`'s payout window is round 1's (``payouts``) moved by :math:`(k-1)` times
    ``interval_hours``.
    """

    unclaimed: Literal["keep", "expire"] = "keep"
    """Vouchers not redeemed by the deadline: keep them valid, or expire them into the pool."""
    reserve_release_round: Annotated[Int, Field(ge=2, le=MAX_ROUNDS)] = 2
    """The first round whose cumulative total includes budget.reserve_usd."""
    interval_hours: Annotated[
        Float, Field(gt=0, le=MAX_PAYOUT_HOURS), Allowed(f"0 < hours <= {MAX_PAYOUT_HOURS}")
    ] = 168.0
    """Hours between the payout windows of consecutive rounds."""


@with_config(SETTINGS_CONFIG)
@dataclass(frozen=True)
class Scenario:
    """A fully resolved voucher scenario: every knob has a value."""

    name: Annotated[Str, AfterValidator(_scenario_name)]
    """Scenario name (default: the file's stem); it names the run directory runs/<name>."""
    description: Str = ""
    """What the scenario is for."""
    eligibility: EligibilityRules = field(default_factory=EligibilityRules)
    """Who qualifies for a voucher."""
    objective: ObjectiveSpec = field(default_factory=ObjectiveSpec)
    """The alpha-fairness objective and its weights."""
    bounds: BoundsSpec = field(default_factory=BoundsSpec)
    """Per-user floor and caps."""
    budget: BudgetSpec = field(default_factory=BudgetSpec)
    """Total budget."""
    segments: tuple[SegmentSpec, ...] = ()
    """Groups of users with a share of the budget."""
    solver: SolverSpec = field(default_factory=SolverSpec)
    """Which solver runs."""
    rounding: RoundingSpec = field(default_factory=RoundingSpec)
    """How vouchers are rounded to cents."""
    payouts: PayoutSpec = field(default_factory=PayoutSpec)
    """Payout batches and their window."""
    rounds: RoundsSpec = field(default_factory=RoundsSpec)
    """Distribution rounds: the reserve's release, unclaimed vouchers, the rounds' windows."""

    @model_validator(mode="after")
    def _check(self) -> Scenario:
        _check_features(self)
        _check_segments(self)
        _check_rule(self)
        return self


def _check_rule(s: Scenario) -> None:
    rule = s.objective.rule
    if rule == RULE_ALPHA_FAIR:
        return
    if s.segments:
        raise rule_error(
            "objective.rule",
            f"({rule!r}) cannot be combined with [[segments]]",
            allowed="a rule divides the whole budget along its own path and has no budget "
            "shares; remove the segments, or use rule = 'alpha_fair'",
        )
    if rule != RULE_MAX_MIN and s.objective.form != "voucher":
        raise rule_error(
            "objective.form",
            f"is only for rule 'alpha_fair' or 'max_min', not {rule!r}",
            value=s.objective.form,
            allowed="'voucher' (a claims rule divides vouchers, its claims are the losses)",
        )


def _check_features(s: Scenario) -> None:
    allowed = weight_feature_columns(s.eligibility.products)
    seen: set[str] = set()
    for name, _ in s.objective.features:
        if name in seen:
            raise rule_error("objective.features", f"names {name!r} twice")
        seen.add(name)
        if name not in allowed:
            why = (
                " (the loss ratio enters through ratio_exponent and ratio_cap)"
                if name == N.LOSS_RATIO
                else ""
            )
            raise rule_error(
                f"objective.features.{name}",
                f"is not a numeric or boolean feature column{why}",
                allowed=", ".join(allowed),
            )


def _check_segments(s: Scenario) -> None:
    schema = feature_schema(s.eligibility.products)
    seen: set[str] = set()
    for i, seg in enumerate(s.segments):
        if seg.name in seen:
            raise rule_error(
                f"segments[{i}].name",
                "is used by an earlier segment; names must be unique",
                value=seg.name,
            )
        seen.add(seg.name)
        if seg.min_share is not None and seg.max_share is not None:
            if seg.min_share > seg.max_share:
                raise rule_error(
                    f"segments[{i}].min_share",
                    "is out of range",
                    value=seg.min_share,
                    allowed=f"<= segments[{i}].max_share ({seg.max_share:g})",
                )
        expr, problem = predicate_problem(seg.where, schema)
        if expr is None:
            raise rule_error(f"segments[{i}].where", problem, value=seg.where)


def round_budget_usd(s: Scenario, round_number: int = 1) -> float:
    r"""The cumulative total of rounds 1 to ``round_number``, :math:`T_k` of :class:`RoundsSpec`:
    the budget less the reserve before ``rounds.reserve_release_round``, the whole budget from
    it on (USD, whole cents)."""
    if round_number < s.rounds.reserve_release_round:
        # both whole cents: the difference of their cents is exact
        return (round(s.budget.total_usd * 100) - round(s.budget.reserve_usd * 100)) / 100
    return float(s.budget.total_usd)
