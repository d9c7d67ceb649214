r"""Why did a user get this amount? A per-user explanation, from a run directory alone.

:func:`explain_user` reads the run directory and the input files its manifest names, and
rebuilds the user's case step by step, checking each step against what the run wrote. First,
:func:`allocator.runs.rundir.load_run` refuses a damaged or changed run directory, and input files
whose sha256 is not the manifest's (edited or regenerated since the run). Then:

1. **Liquidations.** The user's events are read from the liquidations file (a lazy scan filtered
   on ``user_id``), valued in USD at the latest price bar at or before each event
   (realised loss, plus the fee when ``include_fees``), and grouped by product and by whether
   they counted (covered product inside the window) or not.
2. **Eligibility.** :func:`allocator.vouchers.eligibility.compute_eligibility` is run on the one-user
   subsets of the four input tables with the run's eligibility rules. Eligibility is per user,
   so the result must equal the run's row: the loss (to a nano-dollar), the reason of an
   exclusion and the weight are checked against ``allocations.parquet`` / ``excluded.parquet``,
   and an :class:`~allocator.errors.InputError` says the inputs changed since the run otherwise.
   An excluded user gets the rule that failed, its numbers and how far they were from passing.
   With a phase-in band (``eligibility.phase_in_loss_usd`` / ``phase_in_ratio``) the rule of
   that threshold is the band's lower end, passed strictly (:math:`L_i > p`), as in
   :mod:`allocator.vouchers.eligibility`; the rule, the numbers, the distance and the other failing rules
   all use it.
3. **Weight.** :math:`\log w_i = \sum_k f_{ik}` by factor (:func:`allocator.vouchers.weights.weight_factors`:
   loss, ratio, each feature, coverage, and the phase-in factor :math:`\log\phi_i` when the
   rules have a band). Each factor is shown as its log contribution
   :math:`f_{ik}`, its multiplicative factor :math:`e^{f_{ik}}` and against a **reference user**,
   the median-weight eligible user :math:`m` (the lower median of ``weight``, ties by smaller
   user id): :math:`w_i / w_m = \prod_k e^{d_k}` with :math:`d_k = f_{ik} - f_{mk}`, and the
   factor's **share** of the log-weight gap :math:`s_k = d_k / \sum_j |d_j|` (signed, the
   :math:`|s_k|` add up to 1; all 0 when the user's weight equals the median's). The median user
   is a meaningful zero point: an absolute log-weight depends on units (USD vs cents), the gap
   to a typical user does not, and at interior vouchers it is what sets
   :math:`v_i / v_m = (w_i / w_m)^{1/\alpha}`.
4. **Amount.** The user's price is the run's shadow price :math:`\lambda`, plus the segment
   multipliers of the segments the user is in (:math:`\lambda_i = \lambda + \sum_{s\ni i}
   (\mu^{\max}_s - \mu^{\min}_s)`, from ``manifest["segment_prices"]``). The closed form
   :math:`(w_i/\lambda_i)^{1/\alpha}`, clipped to :math:`[\ell_i, h_i]`, is the continuous
   voucher; rounding to cents moves it by less than a cent, which is verified and shown. The
   bounds are the whole cents the problem is posed in (:func:`allocator.kernel.money.whole_cent_bounds`):
   :math:`\ell_i = \lceil f\rceil_{\text{cent}}`, :math:`h_i = \lfloor\min(c, \kappa L_i)
   \rfloor_{\text{cent}}`, and in a phase-in band :math:`h_i = \lfloor\min(\phi_i c, \kappa
   L_i)\rfloor_{\text{cent}}` (at least one cent) with the floor lowered to it where it would
   exceed it (:func:`allocator.vouchers.weights.phase_bounds`); both are recomputed and checked against
   ``lower_cents`` / ``upper_cents``. Which bound binds is read from the paid cents: the floor,
   the cap, the phased cap or the coverage cap (``upper_cents`` equal to
   :math:`\lfloor 100\,\kappa L_i\rfloor` below the other caps' cents). A paid user of a
   run with a band also gets a :class:`PhaseIn`: which band they are in, their factor and its
   formula, and the scaled cap.
5. **Other scenarios.** Every shipped ``scenarios/*.toml`` except the loan fund's, run on the
   same data at *this run's budget* (so that differences come from the rules, not from the
   amount of money), without payout plans; the data is loaded and checked once per call.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from allocator import names as N
from allocator.errors import AllocatorError, InputError
from allocator.jsonsafe import json_safe
from allocator.runs.rundir import RunDir, load_run
from allocator.settings.models import EligibilityRules, Scenario

if TYPE_CHECKING:
    from allocator.data.inputs import Inputs

__all__ = [
    "COUNTED",
    "NOT_COVERED",
    "OUTSIDE_WINDOW",
    "SCENARIOS_DIR",
    "AmountDerivation",
    "EventGroup",
    "Exclusion",
    "Explanation",
    "Factor",
    "OtherScenario",
    "PhaseIn",
    "WeightBreakdown",
    "explain_user",
    "explain_users",
    "shipped_scenarios",
]

#: The shipped scenario files (``scenarios/`` beside the package in a source checkout).
SCENARIOS_DIR = Path(__file__).resolve().parent.parent / "scenarios"
#: Scenario files whose name starts with this are the loan fund's, not voucher scenarios.
_LOAN_PREFIX = "loans"

#: Event statuses: counted, covered product outside the window, product not covered.
COUNTED = "counted"
OUTSIDE_WINDOW = "outside_window"
NOT_COVERED = "product_not_covered"

#: The one-user loss must equal the run's to within this many USD (events are summed in whole
#: nano-dollars, so the two are normally identical).
LOSS_ATOL_USD = 1e-9
#: Relative tolerance of the recomputed weight against ``allocations.parquet``.
WEIGHT_RTOL = 1e-9
#: The closed form, clipped, must be within this of the paid amount (one cent, plus float slack).
CENT_USD = 0.01
_SLACK = 1e-9
#: User ids are Int64 in every table; an id outside this range is in no run.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_NANO = 1_000_000_000


# --------------------------------------------------------------------------------------------
# result types
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EventGroup:
    """The user's events on one product with one status (:data:`COUNTED`, ...)."""

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
    least one cent; ``floor_lowered`` when the floor exceeded it and was lowered to it.
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
    floor_lowered: bool

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

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict: no NaN or infinity (an infinite loss ratio is ``"inf"``)."""
        return json_safe(asdict(self))

    def lines(self) -> list[str]:
        """The explanation as text, one line per item."""
        return _render(self)


# --------------------------------------------------------------------------------------------
# formatting
# --------------------------------------------------------------------------------------------


def _usd(x: float | None) -> str:
    return "-" if x is None else f"{x:,.2f}"


def _g(x: float) -> str:
    return f"{x:g}"


def _threshold(x: float) -> str:
    """A ratio threshold as written in scenarios: 0.30 rather than 0.3."""
    return f"{x:.2f}" if float(f"{x:.2f}") == x else _g(x)


def _below(x: float, threshold: float, decimals: int = 2) -> str:
    """``x`` (known to be below ``threshold``) with enough decimals to read as below it."""
    for d in (decimals, decimals + 2, decimals + 4):
        if round(x, d) < threshold:
            return f"{x:,.{d}f}"
    return repr(x)


def _above(x: float, threshold: float, decimals: int = 2) -> str:
    """``x`` (known to be above ``threshold``) with enough decimals to read as above it."""
    for d in (decimals, decimals + 2, decimals + 4):
        if round(x, d) > threshold:
            return f"{x:,.{d}f}"
    return repr(x)


def _at_most(x: float, threshold: float, decimals: int = 2) -> str:
    """``x`` (known to be at most ``threshold``) so that it does not read as above it."""
    return f"{x:,.{decimals}f}" if x == threshold else _below(x, threshold, decimals)


def _ratio(r: float | None) -> str:
    if r is None:
        return "-"
    return "inf (net assets <= 0)" if math.isinf(r) else f"{r:.4f}"


def _iso(dt: datetime) -> str:
    dt = dt.astimezone(UTC) if dt.tzinfo else dt.replace(tzinfo=UTC)
    text = dt.strftime("%Y-%m-%dT%H:%M:%S.%f").rstrip("0").rstrip(".")
    return text + "Z"


def _duration(seconds: float) -> str:
    seconds = abs(seconds)
    if seconds < 60:
        return f"{seconds:.3g} s"
    minutes = seconds / 60
    if minutes < 120:
        return f"{minutes:.1f} min"
    hours = minutes / 60
    return f"{hours:.1f} h" if hours < 48 else f"{hours / 24:.1f} days"


# --------------------------------------------------------------------------------------------
# loading the run and its inputs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class _Run:
    run: RunDir
    scenario: Scenario
    paths: dict[str, Path]
    data_dir: Path


def _load_run(run_dir: str | Path) -> _Run:
    # load_run refuses a damaged or changed run directory, and inputs that changed since the run
    run = load_run(run_dir, inputs=True)
    assert run.data_dir is not None
    paths = {stem: Path(run.manifest["inputs"][stem]["path"]) for stem in N.INPUT_TABLES}
    return _Run(run=run, scenario=run.scenario, paths=paths, data_dir=run.data_dir)


def _open_inputs(run: _Run) -> Inputs:
    from allocator.data.inputs import load_inputs

    inputs = load_inputs(run.data_dir, validate=False)
    for stem, path in run.paths.items():
        if Path(inputs.paths[stem]).resolve() != path.resolve():
            raise InputError(
                f"the run's {stem} file {path} is not the one its data directory {run.data_dir} "
                f"now holds ({inputs.paths[stem]}); the inputs changed since the run."
            )
    return inputs


def _one_user_inputs(inputs: Inputs, user_ids: Sequence[int]) -> dict[str, pl.DataFrame]:
    ids = pl.Series(N.USER_ID, list(user_ids), dtype=pl.Int64)
    events = inputs.events.filter(pl.col(N.USER_ID).is_in(ids.implode())).collect()
    assets = events[N.SETTLE_ASSET].unique()
    return {
        N.EVENTS_FILE: events,
        # An event's price depends only on its own asset's bars.
        N.PRICES_FILE: inputs.prices.filter(pl.col(N.ASSET).is_in(assets.implode())).collect(),
        N.SNAPSHOT_FILE: inputs.snapshot.filter(pl.col(N.USER_ID).is_in(ids.implode())).collect(),
        N.USERS_FILE: inputs.users.filter(pl.col(N.USER_ID).is_in(ids.implode())).collect(),
    }


def _row(frame: pl.DataFrame, user_id: int) -> dict[str, Any] | None:
    hit = frame.filter(pl.col(N.USER_ID) == user_id)
    return hit.row(0, named=True) if hit.height else None


def _reference_user(allocations: pl.DataFrame) -> int | None:
    """The lower-median-weight user (ties by smaller id): the zero point of the factor shares."""
    if allocations.height == 0:
        return None
    ordered = allocations.select(N.USER_ID, N.WEIGHT).sort([N.WEIGHT, N.USER_ID])
    return int(ordered[N.USER_ID][(ordered.height - 1) // 2])


def _changed(what: str, run: _Run) -> InputError:
    return InputError(
        f"{what}; the inputs changed since the run (data directory {run.data_dir}, run "
        f"{run.run.path}). The explanation is recomputed from the inputs and must match the run.",
        hint="re-run the scenario on the current data, or restore the data the run used",
    )


# --------------------------------------------------------------------------------------------
# events
# --------------------------------------------------------------------------------------------


def _valued_events(
    events: pl.DataFrame, prices: pl.DataFrame, rules: EligibilityRules
) -> pl.DataFrame:
    """The user's events with their status and USD value (null without a price bar)."""
    ts = pl.col(N.TS)
    covered = pl.col(N.PRODUCT).is_in(list(rules.products))
    in_window = (ts >= rules.window_start) & (ts < rules.window_end)
    status = (
        pl.when(~covered)
        .then(pl.lit(NOT_COVERED))
        .when(~in_window)
        .then(pl.lit(OUTSIDE_WINDOW))
        .otherwise(pl.lit(COUNTED))
    )
    ev = events.sort(N.TS).with_columns(status.alias("status"), in_window.alias("in_window"))
    px = prices.select(
        pl.col(N.ASSET).alias(N.SETTLE_ASSET), pl.col(N.PRICE_TS).alias("_bar"), N.PRICE_USD
    ).sort("_bar")
    # Both sides are sorted by time, so they are sorted within every asset too.
    ev = ev.join_asof(
        px,
        left_on=N.TS,
        right_on="_bar",
        by=N.SETTLE_ASSET,
        strategy="backward",
        check_sortedness=False,
    )
    amount = pl.col(N.REALISED_LOSS)
    if rules.include_fees:
        amount = amount + pl.col(N.LIQ_FEE)
    return ev.with_columns(
        (amount * pl.col(N.PRICE_USD)).alias("loss_usd"),
        (pl.col(N.LIQ_FEE) * pl.col(N.PRICE_USD)).alias("fee_usd"),
    )


def _nano_sum(values: np.ndarray) -> float:
    # The run sums whole nano-dollars (exact in any order); the same here.
    return int(np.round(values * _NANO).astype(np.int64).sum()) / _NANO


def _event_groups(valued: pl.DataFrame, rules: EligibilityRules) -> tuple[EventGroup, ...]:
    out = []
    order = {COUNTED: 0, OUTSIDE_WINDOW: 1, NOT_COVERED: 2}
    keys = sorted(
        {
            (r["product"], r["status"])
            for r in valued.select(N.PRODUCT, "status").iter_rows(named=True)
        },
        key=lambda k: (order[k[1]], N.PRODUCTS.index(k[0]) if k[0] in N.PRODUCTS else 99, k[0]),
    )
    for product, status in keys:
        part = valued.filter((pl.col(N.PRODUCT) == product) & (pl.col("status") == status))
        priced = part.filter(pl.col(N.PRICE_USD).is_not_null())
        unpriced = part.height - priced.height
        loss = _nano_sum(priced["loss_usd"].to_numpy()) if priced.height else None
        fee = _nano_sum(priced["fee_usd"].to_numpy()) if priced.height else None
        out.append(
            EventGroup(
                product=product,
                status=status,
                n_events=part.height,
                loss_usd=loss,
                fee_usd=fee,
                unpriced_events=unpriced,
                first_ts=_iso(part[N.TS].min()),
                last_ts=_iso(part[N.TS].max()),
            )
        )
    return tuple(out)


# --------------------------------------------------------------------------------------------
# exclusions
# --------------------------------------------------------------------------------------------


def _loss_rule_passes(loss: float | None, rules: EligibilityRules) -> bool:
    """The loss rule of :mod:`allocator.vouchers.eligibility`: ``>= min_loss_usd``, or strictly above
    the band's lower end when there is a band (a factor of 0 at that end would pay nothing)."""
    if loss is None or math.isnan(loss):
        return False
    if rules.phase_in_loss_usd is None:
        return loss >= rules.min_loss_usd
    return loss > rules.phase_in_loss_usd


def _ratio_rule_passes(ratio: float | None, rules: EligibilityRules) -> bool:
    """The ratio rule, with the same reading of a band as :func:`_loss_rule_passes`."""
    if ratio is None or math.isnan(ratio):
        return False
    if rules.phase_in_ratio is None:
        return ratio >= rules.min_loss_ratio
    return ratio > rules.phase_in_ratio


def _ramp(x: float, low: float | None, high: float) -> float:
    """One band's factor, as :func:`allocator.vouchers.eligibility._ramp` computes it in Float64."""
    if low is None or x >= high:
        return 1.0
    return min(1.0, max(0.0, (x - low) / (high - low)))


def _rule_failures(
    valued: pl.DataFrame,
    user: dict[str, Any] | None,
    snap: dict[str, Any] | None,
    loss: float | None,
    ratio: float | None,
    rules: EligibilityRules,
) -> list[str]:
    """Every eligibility rule the user fails, in the order of :data:`allocator.names.REASONS`."""
    n_counted = int((valued["status"] == COUNTED).sum())
    n_covered = int((valued["status"] != NOT_COVERED).sum())
    n_in_window = int(valued["in_window"].sum())
    failed: list[str] = []
    if n_counted == 0:
        outside = n_covered > 0 and n_in_window == 0
        failed.append(N.REASON_OUTSIDE_WINDOW if outside else N.REASON_PRODUCT_NOT_COVERED)
    if user is None:
        failed.append(N.REASON_NO_USER_RECORD)
    else:
        if user[N.REGION] in rules.restricted_regions:
            failed.append(N.REASON_RESTRICTED_REGION)
        if rules.require_kyc and user[N.KYC_STATUS] != N.KYC_VERIFIED:
            failed.append(N.REASON_KYC)
        if rules.depeg_policy == "exclude" and (user[N.DEPEG_COMP_USD] or 0.0) > 0:
            failed.append(N.REASON_DEPEG)
    if not _loss_rule_passes(loss, rules):
        failed.append(N.REASON_BELOW_MIN_LOSS)
    if snap is None:
        failed.append(N.REASON_NO_SNAPSHOT)
    else:
        if rules.nonpositive_net_assets == "exclude" and snap[N.NET_ASSETS_USD] <= 0:
            failed.append(N.REASON_NONPOSITIVE_NET_ASSETS)
        if not _ratio_rule_passes(ratio, rules):
            failed.append(N.REASON_BELOW_LOSS_RATIO)
    return failed


def _exclusion(
    reason: str,
    run_detail: str | None,
    valued: pl.DataFrame,
    user: dict[str, Any] | None,
    snap: dict[str, Any] | None,
    row: dict[str, Any],
    failures: list[str],
    run: _Run,
) -> Exclusion:
    rules = run.scenario.eligibility
    uid = int(row[N.USER_ID])
    loss = row.get(N.LOSS_USD)
    gross = row.get(N.GROSS_LOSS_USD)
    net = row.get(N.NET_ASSETS_USD)
    ratio = row.get(N.LOSS_RATIO)
    covered_list = ", ".join(rules.products)
    window = f"[{_iso(rules.window_start)}, {_iso(rules.window_end)})"
    distance: str | None = None
    if reason == N.REASON_PRODUCT_NOT_COVERED:
        in_window = valued.filter(pl.col("in_window"))
        products = sorted(set(in_window[N.PRODUCT].to_list()))
        rule = f"eligibility.products = [{covered_list}]: only these products' liquidations count"
        if products:
            detail = (
                f"{in_window.height} event(s) inside the window {window}, all on products not "
                f"covered ({', '.join(products)})"
            )
        else:
            detail = f"no event on a covered product ({covered_list}); events on " + ", ".join(
                sorted(set(valued[N.PRODUCT].to_list()))
            )
        distance = "any covered-product liquidation inside the window would have counted"
    elif reason == N.REASON_OUTSIDE_WINDOW:
        covered = valued.filter(pl.col("status") == OUTSIDE_WINDOW)
        rule = f"eligibility.window_start/window_end: events count in {window} (end exclusive)"
        ts = covered[N.TS].to_list()
        before = [t for t in ts if t < rules.window_start]
        after = [t for t in ts if t >= rules.window_end]
        detail = f"{len(ts)} covered-product event(s), none in {window}"
        parts = []
        if before:
            last = max(before)
            gap = (rules.window_start - last).total_seconds()
            parts.append(
                f"the latest before it, {_iso(last)}, was {_duration(gap)} before the start"
            )
        if after:
            first = min(after)
            gap = (first - rules.window_end).total_seconds()
            when = "at the (exclusive) end" if gap == 0 else f"{_duration(gap)} after the end"
            parts.append(f"the earliest after it, {_iso(first)}, was {when}")
        distance = "; ".join(parts) or None
    elif reason == N.REASON_NO_USER_RECORD:
        rule = "every paid user needs a record in the users table (region, KYC, depeg compensation)"
        detail = f"user_id {uid} is not in {run.paths[N.USERS_FILE]}"
    elif reason == N.REASON_RESTRICTED_REGION:
        assert user is not None
        rule = f"eligibility.restricted_regions = [{', '.join(rules.restricted_regions)}]"
        detail = f"region {user[N.REGION]} is restricted"
    elif reason == N.REASON_KYC:
        assert user is not None
        rule = f"eligibility.require_kyc = true: kyc_status must be '{N.KYC_VERIFIED}'"
        detail = f"kyc_status is '{user[N.KYC_STATUS]}'"
    elif reason == N.REASON_DEPEG:
        assert user is not None
        rule = "eligibility.depeg_policy = 'exclude': users already paid depeg compensation are out"
        detail = f"received {_usd(user[N.DEPEG_COMP_USD])} USD depeg compensation (> 0)"
    elif reason == N.REASON_BELOW_MIN_LOSS:
        value = 0.0 if loss is None else float(loss)
        netted = ""
        if rules.depeg_policy == "net" and user is not None and (user[N.DEPEG_COMP_USD] or 0) > 0:
            netted = (
                f" (gross {_usd(gross)} - depeg compensation {_usd(user[N.DEPEG_COMP_USD])}, "
                f"floored at 0)"
            )
        if rules.phase_in_loss_usd is None:
            threshold = rules.min_loss_usd
            rule = (
                f"eligibility.min_loss_usd = {_g(threshold)}: counted loss must be at least "
                f"{_g(threshold)} USD"
            )
            detail = f"loss {_below(value, threshold)} USD < min_loss_usd {_g(threshold)} USD"
            short = threshold - value
            pct = f" ({100 * short / threshold:.1f}% of the threshold)" if threshold > 0 else ""
            distance = f"{_below(short, math.inf)} USD short{pct}"
        else:
            low, top = float(rules.phase_in_loss_usd), float(rules.min_loss_usd)
            band = f"({_g(low)}, {_g(top)}) USD"
            rule = (
                f"eligibility.phase_in_loss_usd = {_g(low)} (phase-in band {band} below "
                f"min_loss_usd = {_g(top)}): counted loss must be above {_g(low)} USD"
            )
            detail = (
                f"loss {_at_most(value, low)} USD <= {_g(low)} USD, the lower end of the "
                f"phase-in band"
            )
            short = low - value
            inside = (
                f"inside the band a loss L is paid with the factor (L - {_g(low)}) / "
                f"({_g(top)} - {_g(low)})"
            )
            if short > 0:
                pct = f" ({100 * short / low:.1f}% of it)" if low > 0 else ""
                distance = (
                    f"{_below(short, math.inf)} USD short of the band's lower end{pct}; {inside}"
                )
            else:
                distance = f"exactly at the band's lower end, where the factor is 0; {inside}"
        detail += netted
    elif reason == N.REASON_NO_SNAPSHOT:
        rule = "a snapshot row is needed to check the loss ratio"
        detail = (
            f"user_id {uid} is not in the snapshot {run.paths[N.SNAPSHOT_FILE]} "
            f"(taken at {_iso(rules.snapshot_at)})"
        )
    elif reason == N.REASON_NONPOSITIVE_NET_ASSETS:
        rule = "eligibility.nonpositive_net_assets = 'exclude': net assets must be above 0"
        detail = f"net assets {_usd(net)} USD <= 0"
        distance = f"net assets would have to be above 0 ({_usd(-float(net or 0.0))} USD more)"
    elif reason == N.REASON_BELOW_LOSS_RATIO:
        numbers = f"(loss {_usd(loss)} / net assets {_usd(net)})"
        if rules.phase_in_ratio is None:
            threshold = rules.min_loss_ratio
            shown = _threshold(threshold)
            rule = (
                f"eligibility.min_loss_ratio = {shown}: loss / net assets must be at least {shown}"
            )
            detail = f"loss ratio {_below(float(ratio), threshold, 4)} < {shown} {numbers}"
            need_loss = threshold * float(net)
            max_net = float(loss) / threshold if threshold > 0 else math.inf
            distance = (
                f"a loss of {_usd(need_loss)} USD ({_usd(need_loss - float(loss))} more), or net "
                f"assets of at most {_usd(max_net)} USD ({_usd(float(net) - max_net)} less), would "
                f"have passed"
            )
        else:
            low, top = float(rules.phase_in_ratio), float(rules.min_loss_ratio)
            lo_t, top_t = _threshold(low), _threshold(top)
            rule = (
                f"eligibility.phase_in_ratio = {lo_t} (phase-in band ({lo_t}, {top_t}) below "
                f"min_loss_ratio = {top_t}): loss / net assets must be above {lo_t}"
            )
            detail = (
                f"loss ratio {_at_most(float(ratio), low, 4)} <= {lo_t}, the lower end of the "
                f"phase-in band {numbers}"
            )
            need_loss = low * float(net)
            max_net = float(loss) / low if low > 0 else math.inf
            distance = (
                f"a loss above {_usd(need_loss)} USD (more than {_usd(need_loss - float(loss))} "
                f"more), or net assets below {_usd(max_net)} USD (more than "
                f"{_usd(float(net) - max_net)} less), would have entered the band, where a ratio r "
                f"is paid with the factor (r - {lo_t}) / ({top_t} - {lo_t})"
            )
    else:  # a reason this version does not know
        rule = reason
        detail = run_detail or reason
    return Exclusion(
        reason=reason,
        rule=rule,
        detail=detail,
        distance=distance,
        run_detail=run_detail,
        also_fails=tuple(f for f in failures if f != reason),
    )


# --------------------------------------------------------------------------------------------
# weight and amount
# --------------------------------------------------------------------------------------------


def _phase_formula(
    loss: float | None, ratio: float | None, rules: EligibilityRules
) -> tuple[str, float, float]:
    """``(text, loss factor, ratio factor)``: each band's part of the phase factor, with the
    user's numbers (a part is 1 past its threshold, or without that band)."""
    parts: list[str] = []
    loss_f = ratio_f = 1.0
    if rules.phase_in_loss_usd is not None:
        low, top = float(rules.phase_in_loss_usd), float(rules.min_loss_usd)
        x = math.nan if loss is None else float(loss)
        loss_f = _ramp(x, low, top)
        if x >= top:
            parts.append(f"1 (loss {_usd(x)} >= {_g(top)} USD)")
        else:
            parts.append(f"(loss {_above(x, low)} - {_g(low)}) / ({_g(top)} - {_g(low)})")
    if rules.phase_in_ratio is not None:
        low, top = float(rules.phase_in_ratio), float(rules.min_loss_ratio)
        r = math.nan if ratio is None else float(ratio)
        ratio_f = _ramp(r, low, top)
        lo_t, top_t = _threshold(low), _threshold(top)
        if r >= top:
            parts.append(f"1 (ratio {_ratio(r)} >= {top_t})")
        else:
            parts.append(f"(ratio {_above(r, low, 4)} - {lo_t}) / ({top_t} - {lo_t})")
    if not parts:
        return "1 (no phase-in band)", loss_f, ratio_f
    return " x ".join(parts) + f" = {loss_f * ratio_f:.4g}", loss_f, ratio_f


def _factor_formula(column: str, scenario: Scenario, feats: dict[str, Any]) -> tuple[str, str]:
    """The factor's display name and its formula with the user's numbers."""
    from allocator.vouchers.weights import (
        FACTOR_COVERAGE,
        FACTOR_LOSS,
        FACTOR_PHASE,
        FACTOR_RATIO,
        FEATURE_FACTOR_PREFIX,
    )

    o = scenario.objective
    loss = feats.get(N.LOSS_USD)
    if column == FACTOR_LOSS:
        text = (
            f"{_g(o.loss_exponent)} x log(loss {_usd(loss)})"
            if o.loss_exponent
            else "off (loss_exponent = 0)"
        )
        return "loss", text
    if column == FACTOR_RATIO:
        r = feats.get(N.LOSS_RATIO)
        text = (
            f"{_g(o.ratio_exponent)} x log(min(ratio {_ratio(r)}, ratio_cap {_g(o.ratio_cap)}))"
            if o.ratio_exponent
            else "off (ratio_exponent = 0)"
        )
        return "ratio", text
    if column == FACTOR_COVERAGE:
        if o.form == "coverage" and o.alpha != 1:
            return "coverage", f"(alpha {_g(o.alpha)} - 1) x log(loss {_usd(loss)}) (coverage form)"
        return "coverage", "off (voucher form, or alpha = 1)"
    if column == FACTOR_PHASE:
        phi = feats.get(N.PHASE_FACTOR)
        text, _, _ = _phase_formula(loss, feats.get(N.LOSS_RATIO), scenario.eligibility)
        return "phase", f"log(phase {_g(float(phi)) if phi is not None else '-'}); phase = {text}"
    if not column.startswith(FEATURE_FACTOR_PREFIX):
        # a factor this version does not know: shown under its column name, not as a feature
        return column, "-"
    name = column[len(FEATURE_FACTOR_PREFIX) :]
    coef = dict(o.features).get(name, 0.0)
    return f"feature:{name}", f"{_g(coef)} x {name} ({feats.get(name)})"


def _weight_breakdown(
    features: pl.DataFrame, uid: int, ref: int, run: _Run, run_weight: float, ref_weight: float
) -> WeightBreakdown:
    from allocator.vouchers.weights import LOG_WEIGHT, weight_factors

    factors = weight_factors(features, run.scenario.objective)
    mine = _row(factors, uid)
    theirs = _row(factors, ref)
    assert mine is not None and theirs is not None
    weight = math.exp(mine[LOG_WEIGHT])
    if not math.isclose(weight, run_weight, rel_tol=WEIGHT_RTOL):
        raise _changed(
            f"user {uid}'s weight recomputed from the inputs is {weight!r}, but "
            f"{N.ALLOCATIONS_FILE} has {run_weight!r}",
            run,
        )
    columns = [c for c in factors.columns if c not in (N.USER_ID, LOG_WEIGHT)]
    gaps = {c: mine[c] - theirs[c] for c in columns}
    total = sum(abs(d) for d in gaps.values())
    feats = _row(features, uid) or {}
    out = []
    for c in columns:
        name, formula = _factor_formula(c, run.scenario, feats)
        out.append(
            Factor(
                name=name,
                formula=formula,
                log_contribution=float(mine[c]),
                multiplier=math.exp(mine[c]),
                reference_log_contribution=float(theirs[c]),
                relative_multiplier=math.exp(gaps[c]),
                share=gaps[c] / total if total > 0 else 0.0,
            )
        )
    return WeightBreakdown(
        weight=weight,
        log_weight=float(mine[LOG_WEIGHT]),
        reference_user=ref,
        reference_weight=ref_weight,
        relative_weight=math.exp(mine[LOG_WEIGHT] - theirs[LOG_WEIGHT]),
        factors=tuple(out),
    )


@dataclass(frozen=True)
class _Bounds:
    lower_cents: int
    upper_cents: int
    source: str  # "cap", "phased_cap" or "coverage_cap"
    formula: str
    scaled_cap_cents: int  # floor to the cent of cap x phase factor (the cap without a band)
    raised_to_one_cent: bool
    floor_lowered: bool


def _floor_cents(usd: float) -> int:
    from allocator.vouchers.weights import bounds_cents

    return int(bounds_cents(np.array([0.0]), np.array([usd]))[1][0])


def _bounds(alloc: Mapping[str, Any], run: _Run) -> _Bounds:
    """The user's bounds in whole cents, rebuilt from the scenario, the loss and the phase factor
    (module docstring, step 4) and checked against ``lower_cents`` / ``upper_cents``."""
    from allocator.vouchers.weights import bounds_cents

    b = run.scenario.bounds
    uid = int(alloc[N.USER_ID])
    loss = float(alloc[N.LOSS_USD])
    phase_raw = alloc.get(N.PHASE_FACTOR)
    phase = 1.0 if phase_raw is None else float(phase_raw)
    (floor_c,), (cap_c,) = bounds_cents(
        np.array([float(b.floor_usd)]), np.array([float(b.cap_usd)])
    )
    floor_c, cap_c = int(floor_c), int(cap_c)
    cov_c = None if b.coverage_cap is None else _floor_cents(float(b.coverage_cap) * loss)
    plain_c = cap_c if cov_c is None else min(cap_c, cov_c)
    scaled_c = _floor_cents(float(b.cap_usd) * phase) if phase < 1.0 else cap_c
    upper_c = min(plain_c, scaled_c)
    # weights.phase_bounds: an eligible user is paid, so a phased cap is at least one cent
    raised = upper_c < min(plain_c, 1)
    upper_c = max(upper_c, min(plain_c, 1))
    lower_c = min(floor_c, upper_c)
    source = (
        "coverage_cap"
        if cov_c is not None and cov_c < min(cap_c, scaled_c)
        else "phased_cap"
        if phase < 1.0
        else "cap"
    )
    cap_text = f"cap {cents_text(cap_c)}"
    if phase < 1.0:
        cap_text = f"cap {cents_text(cap_c)} x phase {_g(phase)} = {float(b.cap_usd) * phase:,.4f}"
    if cov_c is None and phase == 1.0:
        formula = cap_text
    else:
        inner = cap_text
        if cov_c is not None:
            cov = float(b.coverage_cap) * loss
            inner += f", coverage_cap {_g(float(b.coverage_cap))} x loss {_usd(loss)} = {cov:,.4f}"
        formula = f"floor to the cent of min({inner}) = {cents_text(min(plain_c, scaled_c))}"
        if raised:
            formula += ", raised to one cent (an eligible user is paid)"
    for what, mine, theirs in (
        ("upper", upper_c, alloc.get("upper_cents")),
        ("lower", lower_c, alloc.get("lower_cents")),
    ):
        if theirs is not None and int(theirs) != mine:
            raise _changed(
                f"user {uid}'s {what} bound from the scenario and the loss is {mine} cents, but "
                f"{N.ALLOCATIONS_FILE} has {theirs}",
                run,
            )
    return _Bounds(
        lower_cents=lower_c,
        upper_cents=upper_c,
        source=source,
        formula=formula,
        scaled_cap_cents=scaled_c,
        raised_to_one_cent=raised,
        floor_lowered=lower_c < floor_c,
    )


def _phase_in(alloc: Mapping[str, Any], feats: Mapping[str, Any], run: _Run) -> PhaseIn | None:
    """The user against the run's bands (``None`` when the rules have none)."""
    from allocator.vouchers.eligibility import has_phase_in

    rules = run.scenario.eligibility
    if not has_phase_in(rules):
        return None
    factor = alloc.get(N.PHASE_FACTOR)
    if factor is None:
        raise _changed(
            f"the run's rules have a phase-in band but {N.ALLOCATIONS_FILE} has no "
            f"{N.PHASE_FACTOR} for user {alloc[N.USER_ID]}",
            run,
        )
    loss, ratio = feats.get(N.LOSS_USD), feats.get(N.LOSS_RATIO)
    text, loss_f, ratio_f = _phase_formula(loss, ratio, rules)
    if not math.isclose(loss_f * ratio_f, float(factor), rel_tol=1e-12, abs_tol=1e-15):
        raise _changed(
            f"user {alloc[N.USER_ID]}'s phase factor from the loss and ratio is "
            f"{loss_f * ratio_f!r}, but {N.ALLOCATIONS_FILE} has {factor!r}",
            run,
        )
    bounds = _bounds(alloc, run)
    loss_band = ratio_band = None
    if rules.phase_in_loss_usd is not None:
        loss_band = (float(rules.phase_in_loss_usd), float(rules.min_loss_usd))
    if rules.phase_in_ratio is not None:
        ratio_band = (float(rules.phase_in_ratio), float(rules.min_loss_ratio))
    return PhaseIn(
        factor=float(factor),
        loss_band_usd=loss_band,
        ratio_band=ratio_band,
        loss_factor=loss_f,
        ratio_factor=ratio_f,
        in_loss_band=loss_f < 1.0,
        in_ratio_band=ratio_f < 1.0,
        formula=text,
        cap_usd=float(run.scenario.bounds.cap_usd),
        coverage_cap=(
            None
            if run.scenario.bounds.coverage_cap is None
            else float(run.scenario.bounds.coverage_cap)
        ),
        scaled_cap_cents=bounds.scaled_cap_cents,
        upper_cents=bounds.upper_cents,
        raised_to_one_cent=bounds.raised_to_one_cent,
        floor_lowered=bounds.floor_lowered,
    )


def _amount(alloc: dict[str, Any], weight: float, run: _Run) -> AmountDerivation:
    s = run.scenario
    man = run.run.manifest
    lam = man.get("shadow_price")
    if not isinstance(lam, (int, float)):
        raise InputError(f"{run.run.path / N.MANIFEST_FILE}: no numeric 'shadow_price'.")
    seg_label = alloc.get(N.SEGMENT)
    segments = tuple(seg_label.split("+")) if seg_label else ()
    prices = man.get("segment_prices") or {}
    adjust = 0.0
    for name in segments:
        mu = prices.get(name, (0.0, 0.0))
        adjust += float(mu[1]) - float(mu[0])
    price = float(lam) + adjust
    alpha = float(s.objective.alpha)
    bounds = _bounds(alloc, run)
    lower, upper = bounds.lower_cents / 100.0, bounds.upper_cents / 100.0
    upper_source = bounds.source

    cents = int(alloc[N.VOUCHER_CENTS])
    bound = str(alloc[N.BOUND])
    binding = {N.BOUND_FLOOR: "floor", N.BOUND_CAP: upper_source}.get(bound, "interior")
    if bound == N.BOUND_FLOOR and bounds.floor_lowered:
        # the floor was lowered to the phased cap: that cap is what pins the voucher
        binding = upper_source
    if alpha > 0:
        if price <= 0:
            closed: float | None = math.inf  # the budget does not bind: everyone at the cap
        else:
            x = (math.log(weight) - math.log(price)) / alpha
            closed = math.exp(x) if x < 709 else math.inf
        continuous: float | None = min(max(closed, lower), upper)
        diff: float | None = cents / 100.0 - continuous
        ok: bool | None = abs(diff) <= CENT_USD + _SLACK * max(1.0, continuous)
    else:
        closed = continuous = diff = ok = None
    rounded = man.get("certificate_rounded")
    run_max = rounded.get("best_response_max_usd") if isinstance(rounded, Mapping) else None
    return AmountDerivation(
        alpha=alpha,
        shadow_price=float(lam),
        segments=segments,
        segment_adjustment=adjust,
        effective_price=price,
        closed_form_usd=closed,
        lower_usd=lower,
        upper_usd=upper,
        upper_source=upper_source,
        lower_cents=bounds.lower_cents,
        upper_cents=bounds.upper_cents,
        upper_formula=bounds.formula,
        continuous_usd=continuous,
        voucher_cents=cents,
        bound=bound,
        binding=binding,
        difference_usd=diff,
        reproduces_within_cent=ok,
        run_max_difference_usd=None if not isinstance(run_max, (int, float)) else float(run_max),
    )


# --------------------------------------------------------------------------------------------
# other scenarios
# --------------------------------------------------------------------------------------------


def shipped_scenarios(directory: str | Path | None = None) -> list[Path]:
    """The shipped voucher scenario files (``scenarios/*.toml`` except ``loans*``), sorted."""
    d = Path(directory) if directory is not None else SCENARIOS_DIR
    if not d.is_dir():
        return []
    return sorted(p for p in d.glob("*.toml") if not p.stem.startswith(_LOAN_PREFIX))


class _Others:
    """Shipped scenarios run on one data directory, each once (the data loaded once)."""

    def __init__(
        self, data_dir: Path, budget_usd: float, skip: str, directory: Path | None
    ) -> None:
        self.data_dir = data_dir
        self.budget_usd = budget_usd
        self.skip = skip
        self.directory = directory
        self._runs: list[tuple[str, float | None, Any]] | None = None

    def _compute(self) -> list[tuple[str, float | None, Any]]:
        from allocator.settings.scenarios import load_scenario, with_overrides
        from allocator.vouchers.pipeline import DataSession, allocate

        runs: list[tuple[str, float | None, Any]] = []
        session = None
        for path in shipped_scenarios(self.directory):
            name, shipped = path.stem, None
            try:
                scen = load_scenario(path)
                name, shipped = scen.name, scen.budget.total_usd
                if name == self.skip:
                    continue
                if session is None:
                    session = DataSession.open(self.data_dir)
                scen = with_overrides(scen, {"budget.total_usd": self.budget_usd})
                result: Any = allocate(session, scen, with_payouts=False)
            except AllocatorError as exc:
                result = exc
            runs.append((name, shipped, result))
        return runs

    def outcome(self, user_id: int) -> tuple[OtherScenario, ...]:
        if self._runs is None:
            self._runs = self._compute()
        out = []
        for name, shipped, result in self._runs:
            common = {
                "scenario": name,
                "budget_usd": self.budget_usd,
                "shipped_budget_usd": shipped,
            }
            if isinstance(result, AllocatorError):
                out.append(OtherScenario(status="failed", detail=str(result), **common))
                continue
            paid = _row(result.allocations, user_id)
            if paid is not None:
                out.append(
                    OtherScenario(
                        status="paid",
                        voucher_cents=int(paid[N.VOUCHER_CENTS]),
                        bound=paid[N.BOUND],
                        **common,
                    )
                )
                continue
            ex = _row(result.eligibility.excluded, user_id)
            out.append(
                OtherScenario(
                    status="excluded",
                    reason=None if ex is None else ex[N.REASON],
                    detail=None if ex is None else ex[N.DETAIL],
                    **common,
                )
            )
        return tuple(out)


# --------------------------------------------------------------------------------------------
# public entry points
# --------------------------------------------------------------------------------------------


def _loss_matches(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return math.isclose(a, b, rel_tol=1e-12, abs_tol=LOSS_ATOL_USD)


def _explain_one(
    run: _Run, inputs: Inputs, uid: int, ref: int | None, others: _Others | None
) -> Explanation:
    rules = run.scenario.eligibility
    allocations, excluded = run.run.allocations, run.run.excluded
    if not INT64_MIN <= uid <= INT64_MAX:
        example = allocations[N.USER_ID][0] if allocations.height else None
        raise InputError(
            f"user {uid} is not in this run ({run.run.path}): user ids are 64-bit integers, "
            f"from {INT64_MIN} to {INT64_MAX}."
            + (f" A user of this run is, e.g., {example}." if example is not None else ""),
            hint="check the user id",
        )
    alloc = _row(allocations, uid)
    excl = _row(excluded, uid)
    # the median-weight user is recomputed too, as the zero point of the factor shares
    ids = [uid] if alloc is None or ref is None or ref == uid else [uid, ref]
    tables = _one_user_inputs(inputs, ids)
    mine = tables[N.EVENTS_FILE].filter(pl.col(N.USER_ID) == uid)
    if mine.height == 0:
        if alloc is not None or excl is not None:
            raise _changed(f"user {uid} is in the run but not in {run.paths[N.EVENTS_FILE]}", run)
        example = allocations[N.USER_ID][0] if allocations.height else None
        raise InputError(
            f"user {uid} is not in the liquidations file {run.paths[N.EVENTS_FILE]} (column "
            f"{N.USER_ID}): only liquidated users are paid or excluded, so there is nothing to "
            f"explain."
            + (f" A liquidated user of this run is, e.g., {example}." if example else ""),
            hint="check the user id",
        )
    from allocator.vouchers.eligibility import compute_eligibility

    elig = compute_eligibility(
        tables[N.EVENTS_FILE],
        tables[N.PRICES_FILE],
        tables[N.SNAPSHOT_FILE],
        tables[N.USERS_FILE],
        rules,
        source={k: str(v) for k, v in run.paths.items()},
    )
    row_e = _row(elig.eligible, uid)
    row_x = _row(elig.excluded, uid)
    if alloc is None and excl is None:
        raise _changed(f"user {uid} is liquidated but neither paid nor excluded by the run", run)
    if alloc is not None and row_e is None:
        why = f"now excluded ({row_x[N.REASON]}: {row_x[N.DETAIL]})" if row_x else "not found"
        raise _changed(f"user {uid} was paid by the run but is {why}", run)
    if excl is not None and row_x is None:
        raise _changed(
            f"user {uid} was excluded ({excl[N.REASON]}) by the run but is now eligible", run
        )
    row = row_e if alloc is not None else row_x
    assert row is not None
    written = alloc if alloc is not None else excl
    assert written is not None
    if not _loss_matches(row[N.LOSS_USD], written[N.LOSS_USD]):
        raise _changed(
            f"user {uid}'s loss recomputed from the inputs is {row[N.LOSS_USD]!r} USD, but the run "
            f"wrote {written[N.LOSS_USD]!r} USD",
            run,
        )
    if excl is not None and row[N.REASON] != excl[N.REASON]:
        raise _changed(
            f"user {uid} is now excluded for {row[N.REASON]}, the run said {excl[N.REASON]}", run
        )

    valued = _valued_events(mine, tables[N.PRICES_FILE], rules)
    groups = _event_groups(valued, rules)
    user = _row(tables[N.USERS_FILE], uid)
    snap = _row(tables[N.SNAPSHOT_FILE], uid)
    notes: list[str] = []
    counted = sum(g.loss_usd or 0.0 for g in groups if g.status == COUNTED)
    gross = row.get(N.GROSS_LOSS_USD)
    if gross is not None and not math.isclose(counted, gross, rel_tol=1e-12, abs_tol=1e-8):
        notes.append(
            f"event values add up to {counted!r} USD, the eligibility pipeline's gross loss is {gross!r}"
        )

    common: dict[str, Any] = {
        "user_id": uid,
        "run_dir": str(run.run.path),
        "scenario": run.scenario.name,
        "events": groups,
        "loss_usd": row.get(N.LOSS_USD),
        "gross_loss_usd": gross,
        "fee_usd": row.get(N.FEE_USD) if alloc is not None else None,
        "depeg_comp_usd": None if user is None else user[N.DEPEG_COMP_USD],
        "net_assets_usd": None if snap is None else snap[N.NET_ASSETS_USD],
        "loss_ratio": row.get(N.LOSS_RATIO),
        "other_scenarios": None if others is None else others.outcome(uid),
    }
    if alloc is None:
        failures = _rule_failures(
            valued, user, snap, row.get(N.LOSS_USD), row.get(N.LOSS_RATIO), rules
        )
        if not failures or failures[0] != row[N.REASON]:
            notes.append(
                f"the rules re-checked here fail first on {failures[0] if failures else 'none'}, "
                f"the eligibility pipeline says {row[N.REASON]}"
            )
        exclusion = _exclusion(
            row[N.REASON], excl[N.DETAIL] if excl else None, valued, user, snap, row, failures, run
        )
        return Explanation(status="excluded", exclusion=exclusion, notes=tuple(notes), **common)

    assert ref is not None
    ref_row = _row(allocations, ref)
    assert ref_row is not None
    ref_features = _row(elig.eligible, ref)
    if ref_features is None or not _loss_matches(ref_features[N.LOSS_USD], ref_row[N.LOSS_USD]):
        raise _changed(f"the reference user {ref}'s eligibility or loss differs from the run", run)
    features = elig.eligible.filter(pl.col(N.USER_ID).is_in([uid, ref]))
    weight = _weight_breakdown(
        features, uid, ref, run, float(alloc[N.WEIGHT]), float(ref_row[N.WEIGHT])
    )
    amount = _amount(alloc, weight.weight, run)
    phase_in = _phase_in(alloc, _row(features, uid) or {}, run)
    if amount.reproduces_within_cent is False:
        assert amount.difference_usd is not None
        gap = abs(amount.difference_usd)
        limit = amount.run_max_difference_usd
        if limit is not None and gap <= limit + _SLACK * max(
            1.0, abs(amount.continuous_usd or 0.0)
        ):
            notes.append(
                f"the paid amount is {gap:.4f} USD from the closed form, more than a cent: the run's "
                f"cent rounding moved vouchers by up to {limit:.4f} USD (manifest "
                f"certificate_rounded.best_response_max_usd), because bounds that are not whole "
                f"cents (e.g. a coverage cap) left cents to place"
            )
        else:
            raise _changed(
                f"user {uid}'s voucher, {cents_text(amount.voucher_cents)} USD, is {gap:.4f} USD from "
                f"the closed form {amount.continuous_usd!r} USD, more than the run's rounding allows "
                f"({'unknown' if limit is None else f'{limit:.4f}'} USD)",
                run,
            )
    return Explanation(
        status="paid",
        weight=weight,
        amount=amount,
        phase_in=phase_in,
        notes=tuple(notes),
        **common,
    )


def cents_text(cents: int) -> str:
    """Integer cents as USD text with thousands separators (``123456`` -> ``"1,234.56"``)."""
    return f"{cents // 100:,}.{cents % 100:02d}"


def explain_users(
    run_dir: str | Path,
    user_ids: Iterable[int],
    *,
    other_scenarios: bool = True,
    scenarios_dir: str | Path | None = None,
) -> list[Explanation]:
    """:func:`explain_user` for several users, reading the run once and running each other
    scenario once for all of them."""
    run = _load_run(run_dir)
    inputs = _open_inputs(run)
    ref = _reference_user(run.run.allocations)
    others = None
    if other_scenarios:
        budget = float(run.scenario.budget.total_usd)
        directory = None if scenarios_dir is None else Path(scenarios_dir)
        others = _Others(run.data_dir, budget, run.scenario.name, directory)
    return [_explain_one(run, inputs, int(uid), ref, others) for uid in user_ids]


def explain_user(
    run_dir: str | Path,
    user_id: int,
    *,
    other_scenarios: bool = True,
    scenarios_dir: str | Path | None = None,
) -> Explanation:
    """Explain one user's voucher (or exclusion) in a run directory; see the module docstring.

    Parameters
    ----------
    run_dir
        A run directory written by ``allocator allocate``; its manifest names the input files.
    user_id
        The user to explain.
    other_scenarios
        Also run the shipped scenarios (``scenarios/*.toml`` except ``loans*``, other than the
        run's own) on the same data at this run's budget, and report the user's outcome in each.
    scenarios_dir
        Where the shipped scenarios are (default :data:`SCENARIOS_DIR`).

    Raises
    ------
    InputError
        The run directory is damaged or changed (:func:`allocator.runs.rundir.load_run`), an input
        file is gone or its sha256 is not the manifest's, the user id is outside 64 bits or not
        in the liquidations file, or the recomputed loss, exclusion reason, weight or bound
        differs from what the run wrote.
    """
    return explain_users(
        run_dir, [user_id], other_scenarios=other_scenarios, scenarios_dir=scenarios_dir
    )[0]


# --------------------------------------------------------------------------------------------
# text
# --------------------------------------------------------------------------------------------

_STATUS_TEXT = {
    COUNTED: "counted",
    OUTSIDE_WINDOW: "outside the window",
    NOT_COVERED: "product not covered",
}
_BINDING_TEXT = {
    "floor": "the floor",
    "cap": "the cap",
    "coverage_cap": "the coverage cap",
    "phased_cap": "the cap scaled by the phase-in factor",
    "interior": "no bound (interior)",
}


def _binding(binding: str) -> str:
    if binding == "interior":
        return "between its bounds (no bound binds)"
    return f"set by {_BINDING_TEXT[binding]}"


def _phase_lines(p: PhaseIn) -> list[str]:
    bands = []
    if p.loss_band_usd is not None:
        bands.append(f"loss ({_g(p.loss_band_usd[0])}, {_g(p.loss_band_usd[1])}) USD")
    if p.ratio_band is not None:
        bands.append(f"loss ratio ({_threshold(p.ratio_band[0])}, {_threshold(p.ratio_band[1])})")
    if not p.in_band:
        return [
            f"the rules phase in {' and '.join(bands)}; this user is past both thresholds: "
            f"phase factor 1, weight and cap not scaled"
        ]
    where = [
        name
        for name, inside in (("loss", p.in_loss_band), ("loss-ratio", p.in_ratio_band))
        if inside
    ]
    cov = "" if p.coverage_cap is None else f", coverage_cap {_g(p.coverage_cap)} x loss"
    out = [
        f"in the {' and '.join(where)} phase-in band ({'; '.join(bands)})",
        f"phase factor = {p.formula}",
        f"it multiplies the weight (factor 'phase' below) and the cap: upper bound = floor to the "
        f"cent of min(cap {_usd(p.cap_usd)} x {p.factor:.4g}{cov}), at least one cent = "
        f"{cents_text(p.upper_cents)} USD",
    ]
    if p.raised_to_one_cent:
        out.append("the scaled cap is below one cent, so it is raised to one cent")
    if p.floor_lowered:
        out.append(
            "the floor would exceed this scaled cap, so it is lowered to it: the user is paid "
            "exactly the scaled cap"
        )
    return out


def _render(e: Explanation) -> list[str]:
    out = [f"user {e.user_id}, scenario '{e.scenario}' (run {e.run_dir})"]
    if e.status == "paid" and e.amount is not None:
        band = ""
        if e.phase_in is not None and e.phase_in.in_band:
            band = f"; in the phase-in band (factor {e.phase_in.factor:.4g})"
        out.append(
            f"status: paid {cents_text(e.amount.voucher_cents)} USD, "
            f"{_binding(e.amount.binding)}{band}"
        )
    elif e.exclusion is not None:
        out.append(f"status: excluded ({e.exclusion.reason})")
    out.append("")
    out.append("liquidations:")
    out.append(f"  {'product':<16} {'status':<20} {'events':>6} {'loss USD':>14} {'fees USD':>12}")
    for g in e.events:
        unpriced = f"  ({g.unpriced_events} without a price)" if g.unpriced_events else ""
        out.append(
            f"  {g.product:<16} {_STATUS_TEXT[g.status]:<20} {g.n_events:>6} {_usd(g.loss_usd):>14} "
            f"{_usd(g.fee_usd):>12}{unpriced}"
        )
    out.append(
        f"  counted loss {_usd(e.loss_usd)} USD (gross {_usd(e.gross_loss_usd)}, depeg compensation "
        f"received {_usd(e.depeg_comp_usd)})"
    )
    out.append(f"  net assets {_usd(e.net_assets_usd)} USD; loss ratio {_ratio(e.loss_ratio)}")
    if e.exclusion is not None:
        x = e.exclusion
        out += ["", "why excluded:", f"  rule: {x.rule}", f"  numbers: {x.detail}"]
        if x.distance:
            out.append(f"  distance: {x.distance}")
        if x.also_fails:
            out.append(f"  also fails: {', '.join(x.also_fails)}")
    if e.phase_in is not None:
        out += ["", "phase-in band:"] + [f"  {line}" for line in _phase_lines(e.phase_in)]
    if e.weight is not None:
        w = e.weight
        out += [
            "",
            (
                f"weight: w = exp(sum of factors) = {w.weight:,.6g}; median-weight user "
                f"{w.reference_user} has {w.reference_weight:,.6g}, so w / w_median = "
                f"{w.relative_weight:,.4g}"
            ),
            f"  {'factor':<22} {'log':>10} {'x factor':>12} {'vs median':>10} {'share':>7}  formula",
        ]
        for f in w.factors:
            out.append(
                f"  {f.name:<22} {f.log_contribution:>10.4f} {f.multiplier:>12,.4g} "
                f"{'x' + format(f.relative_multiplier, '.4g'):>10} {100 * f.share:>6.1f}%  {f.formula}"
            )
    if e.amount is not None:
        a = e.amount
        seg = (
            f" + segment adjustment {a.segment_adjustment:.6g} ({'+'.join(a.segments)})"
            if a.segments
            else ""
        )
        out += [
            "",
            "amount:",
            f"  price: shadow price {a.shadow_price:.6g}{seg} = {a.effective_price:.6g}",
        ]
        if a.closed_form_usd is not None and e.weight is not None:
            out.append(
                f"  closed form (w / price)^(1/alpha) = ({e.weight.weight:,.6g} / {a.effective_price:.6g})"
                f"^(1/{_g(a.alpha)}) = {a.closed_form_usd:,.4f} USD"
            )
        else:
            out.append(
                "  alpha = 0 (linear utility): users whose weight is above the price get their upper "
                "bound, below it their floor; users at the price share what is left"
            )
            if e.weight is not None:
                w, p = e.weight.weight, a.effective_price
                sign = ">" if w > p else "<" if w < p else "="
                out.append(f"  weight {w:,.6g} {sign} price {p:,.6g}")
        src = {"cap": "cap", "phased_cap": "cap x phase-in factor"}.get(
            a.upper_source, "coverage cap x loss"
        )
        out.append(
            f"  bounds (whole cents): floor {cents_text(a.lower_cents)}, upper "
            f"{cents_text(a.upper_cents)} ({src}); {_binding(a.binding)}"
        )
        if a.upper_formula != f"cap {cents_text(a.upper_cents)}":
            out.append(f"  upper bound = {a.upper_formula}")
        if a.continuous_usd is not None:
            verdict = (
                "reproduces it within a cent"
                if a.reproduces_within_cent
                else "is more than a cent away (see the note)"
            )
            out.append(
                f"  clipped {a.continuous_usd:,.4f} USD; paid {cents_text(a.voucher_cents)} USD "
                f"(difference {a.difference_usd:+.4f}): the closed form {verdict}"
            )
    if e.other_scenarios is not None:
        out += ["", "under the other shipped scenarios (same data, this run's budget):"]
        for o in e.other_scenarios:
            if o.status == "paid":
                out.append(
                    f"  {o.scenario:<22} {cents_text(o.voucher_cents or 0):>12} USD  ({o.bound})"
                )
            elif o.status == "excluded":
                out.append(f"  {o.scenario:<22} {'excluded':>12}      ({o.reason}: {o.detail})")
            else:
                out.append(f"  {o.scenario:<22} {'not computed':>12}      ({o.detail})")
        if not e.other_scenarios:
            out.append("  (no shipped scenarios found)")
    for n in e.notes:
        out.append(f"note: {n}")
    return out
