"""Frozen settings that a scenario resolves to.

Each section of a scenario TOML file maps to one frozen dataclass here; the defaults are a careful
reading of the Together Initiative announcement (see ``scenarios/baseline.toml``). The library
takes these objects, never file paths, so the optimisation core stays free of I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from allocator import names as N

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

    window_start: datetime = WINDOW_START
    window_end: datetime = WINDOW_END
    products: tuple[str, ...] = N.COVERED_PRODUCTS
    min_loss_usd: float = 50.0
    min_loss_ratio: float = 0.30
    restricted_regions: tuple[str, ...] = DEFAULT_RESTRICTED_REGIONS
    require_kyc: bool = True
    include_fees: bool = True
    nonpositive_net_assets: Literal["eligible", "exclude"] = "eligible"
    depeg_policy: Literal["exclude", "net", "ignore"] = "exclude"
    snapshot_at: datetime = SNAPSHOT_AT
    phase_in_loss_usd: float | None = None
    phase_in_ratio: float | None = None


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

    alpha: float = 1.0
    loss_exponent: float = 1.0
    ratio_exponent: float = 1.0
    ratio_cap: float = 1.0
    features: tuple[tuple[str, float], ...] = ()
    form: Literal["voucher", "coverage"] = "voucher"


@dataclass(frozen=True)
class BoundsSpec:
    """Per-user bounds: ``floor_usd <= v_i <= min(cap_usd, coverage_cap * L_i)``."""

    floor_usd: float = 4.0
    cap_usd: float = 6000.0
    coverage_cap: float | None = None


@dataclass(frozen=True)
class BudgetSpec:
    """Total budget; ``exhaust`` requires the whole budget to be paid (to the cent)."""

    total_usd: float = 300_000_000.0
    exhaust: bool = True


@dataclass(frozen=True)
class SegmentSpec:
    """A group of users (a Polars SQL predicate over feature-matrix columns) and its budget share."""

    name: str
    where: str
    min_share: float | None = None
    max_share: float | None = None


@dataclass(frozen=True)
class SolverSpec:
    """``name``: auto | fast | cvxpy; ``cvxpy_solver``: CLARABEL | ECOS | SCS."""

    name: Literal["auto", "fast", "cvxpy"] = "auto"
    cvxpy_solver: Literal["CLARABEL", "ECOS", "SCS"] = "CLARABEL"


@dataclass(frozen=True)
class RoundingSpec:
    """Cents rounding; ties: largest remainder, then larger loss, then smaller user id."""

    method: Literal["largest_remainder"] = "largest_remainder"


@dataclass(frozen=True)
class PayoutSpec:
    """Payout batches: the first starts within ``start_within_hours`` of the announcement and
    the last ends within ``finish_within_hours``."""

    batch_size: int = 50_000
    announced_at: datetime = ANNOUNCED_AT
    start_within_hours: float = 24.0
    finish_within_hours: float = 96.0


@dataclass(frozen=True)
class Scenario:
    """A fully resolved scenario: every knob has a value."""

    name: str
    description: str = ""
    eligibility: EligibilityRules = field(default_factory=EligibilityRules)
    objective: ObjectiveSpec = field(default_factory=ObjectiveSpec)
    bounds: BoundsSpec = field(default_factory=BoundsSpec)
    budget: BudgetSpec = field(default_factory=BudgetSpec)
    segments: tuple[SegmentSpec, ...] = ()
    solver: SolverSpec = field(default_factory=SolverSpec)
    rounding: RoundingSpec = field(default_factory=RoundingSpec)
    payouts: PayoutSpec = field(default_factory=PayoutSpec)
