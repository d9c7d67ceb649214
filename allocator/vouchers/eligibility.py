r"""Who qualifies for a voucher, and why everyone else does not.

The rules are those of :class:`~allocator.settings.models.EligibilityRules`. For each event :math:`e`
of user :math:`i`

.. math::

    \ell_e = \big[(q_e + f_e\,[\text{include\_fees}])\; p_{a_e}(t_e)\big]_{10^{-9}},
    \qquad
    G_i = \sum_{e \in C_i} \ell_e,

where :math:`q_e` is the realised loss and :math:`f_e` the liquidation fee, both in the
settlement asset :math:`a_e`, :math:`p_a(t)` is the USD price of the latest bar of asset
:math:`a` with bar time :math:`\le t`, and :math:`[\cdot]_{10^{-9}}` rounds to the nano-dollar:
the float product with :math:`10^9` rounded half to even, which can differ by one nano-dollar
from rounding the exact decimal product when that product lies within a float's last place of
a half (a user's loss moves by at most a nano-dollar per event; the sums stay exact). :math:`C_i` holds the *counted* events of user
:math:`i`: product in ``rules.products`` and time in the half-open window
``[window_start, window_end)``. The announced "2025-10-11 23:59 inclusive" therefore means
"through 23:59:59.999999": an event at 2025-10-12 00:00:00 is outside.

The counted loss is :math:`L_i = G_i` (``depeg_policy`` ``"exclude"`` or ``"ignore"``) or
:math:`L_i = \max(G_i - D_i, 0)` with the depeg compensation :math:`D_i` (``"net"``), and the
loss ratio is :math:`r_i = L_i / A_i` for snapshot net assets :math:`A_i > 0`, :math:`+\infty`
when :math:`A_i \le 0`.

Every *liquidated user* (a distinct ``user_id`` of the events table, any product, any time) is
either eligible or excluded with the first rule, in the order of :data:`allocator.names.REASONS`,
that fails:

``product_not_covered``
    no counted event, and the user does not fall under ``outside_window`` (below): either the
    user has events inside the window on non-covered products only, or no covered-product event
    at all. In words: if the user was liquidated during the window, the product is what
    disqualifies.
``outside_window``
    no counted event, at least one covered-product event, and no event of any product inside
    the window.
``no_user_record``
    ``user_id`` is missing from the users table.
``restricted_region``
    ``region`` is in ``rules.restricted_regions``.
``kyc_not_verified``
    ``rules.require_kyc`` and ``kyc_status`` is not ``"verified"``.
``depeg_compensated``
    ``depeg_policy == "exclude"`` and ``depeg_comp_usd > 0``.
``below_min_loss``
    not :math:`L_i \ge` ``min_loss_usd``.
``no_snapshot``
    ``user_id`` is missing from the snapshot.
``nonpositive_net_assets``
    :math:`A_i \le 0` and ``nonpositive_net_assets == "exclude"``.
``below_loss_ratio``
    not :math:`r_i \ge` ``min_loss_ratio``.

Phase-in band. With ``phase_in_loss_usd`` :math:`p < m` = ``min_loss_usd``, the loss rule
becomes :math:`L_i > p` and the eligible feature matrix gets the column ``phase_factor``,
:math:`\phi_i = \phi^L_i \phi^r_i` with :math:`\phi^L_i = \min(1, (L_i - p)/(m - p))`;
``phase_in_ratio`` does the same for the ratio (:math:`r_i > p_r`, an infinite ratio gives 1).
The lower end is excluded because a factor of 0 would pay nothing. Without either option the
rules, the columns and the outputs are exactly those of the hard thresholds.

Both thresholds are exact ``>=`` comparisons on Float64. The ratio rule is applied to the
published column, ``fl(L_i / A_i) >= min_loss_ratio``, so that anyone can re-check it from
``eligible.parquet``. IEEE division is correctly rounded and rounding is monotone, so a user
whose ratio of the stored values is at least the decimal threshold in exact arithmetic (300 of
1000 against 0.30) always passes; only a ratio within half a unit in the last place below the
threshold is rounded up to it and passes too. The multiplied form ``L >= 0.3 * A`` would instead
exclude 30 USD against 100 USD, because ``0.3 * 100 == 30.000000000000004``. A loss itself built
in floating point as ``0.3 * A`` may land one unit in the last place under 30% and then fails,
as its published ratio shows.

Sums are exact. Event losses are summed as whole nano-dollars in 128-bit integers, so a user's
loss does not depend on the order in which a parallel group-by meets the events (Float64 sums
do, in the last bits, from run to run), the outputs are byte-identical on every rerun, and
decimal amounts add as decimals: 1.91 + 32.01 + 16.08 is exactly 50, not 49.99999999999999.

A price is needed only for counted events; a counted event whose asset has no bar at or before
it, or whose USD loss is not finite, is an :class:`~allocator.errors.InputError`.

The work is two Polars queries. Stage 1, the one pass over the events, computes per-event
nano-dollar losses and aggregates them per user (Polars' default engine, ``"auto"``; the
``engine`` argument can ask for ``"streaming"``, which gives the same bytes). Prices are not joined: when
every bar time is a multiple of a grid step (one minute for minute bars) the price of each
(asset, grid cell) of the window is laid out in a small dense array and each event gathers its
price by index, which avoids sorting the events; otherwise an as-of join is used. Stage 2
filters the users and snapshot tables to the liquidated users with a hash set, joins them to
the per-user frame and applies the rules in order (in-memory engine).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import polars as pl

from allocator import names as N
from allocator.errors import CheckFailedError, InputError, ScenarioError
from allocator.settings.models import EligibilityRules

__all__ = [
    "RECONCILIATION_FILE",
    "EligibilityResult",
    "Reconciliation",
    "compute_eligibility",
    "eligible_columns",
    "excluded_columns",
    "has_phase_in",
    "run_eligibility",
    "write_eligibility",
]

#: Written beside eligible.parquet and excluded.parquet by :func:`write_eligibility`.
RECONCILIATION_FILE = "reconciliation.json"

#: Rows per parquet row group of the outputs (fixed, so that reruns write the same bytes).
ROW_GROUP_ROWS = 256 * 1024

#: Relative tolerance of the loss reconciliation (sums of floats in different orders).
RECONCILE_RTOL = 1e-6

#: Largest dense price grid (assets x grid cells) before falling back to an as-of join.
MAX_GRID_CELLS = 20_000_000

#: Candidate grid steps in microseconds, coarsest first: minute, second, millisecond, microsecond.
_GRID_STEPS_US = (60_000_000, 1_000_000, 1_000, 1)
_US_PER_DAY = 86_400_000_000
_UTC_US = pl.Datetime("us", "UTC")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_EVENT_COLUMNS = {
    N.EVENT_ID: pl.Int64,
    N.USER_ID: pl.Int64,
    N.TS: _UTC_US,
    N.PRODUCT: pl.String,
    N.REALISED_LOSS: pl.Float64,
    N.LIQ_FEE: pl.Float64,
    N.SETTLE_ASSET: pl.String,
}
_PRICE_COLUMNS = {N.ASSET: pl.String, N.PRICE_TS: _UTC_US, N.PRICE_USD: pl.Float64}
_SNAPSHOT_COLUMNS = {N.USER_ID: pl.Int64, N.NET_ASSETS_USD: pl.Float64}
_USER_COLUMNS = {
    N.USER_ID: pl.Int64,
    N.VIP_TIER: pl.Int64,
    N.IS_INSTITUTIONAL: pl.Boolean,
    N.REGION: pl.String,
    N.CREATED_AT: _UTC_US,
    N.KYC_STATUS: pl.String,
    N.DEPEG_COMP_USD: pl.Float64,
}

# Private per-user columns of the query.
_N_TOTAL = "_n_total"
_N_COVERED = "_n_covered"
_N_IN_WINDOW = "_n_in_window"
_N_NO_PRICE = "_n_no_price"
_IN_USERS = "_in_users"
_IN_SNAPSHOT = "_in_snapshot"
_PRICE = "_price"
_COVERED = "_covered"
_IN_WINDOW = "_in_window"
_COUNTED = "_counted"
_EVENT_LOSS = "_event_loss"
_EVENT_FEE = "_event_fee"
_GROSS_NANO = "_gross_nano"
_FEE_NANO = "_fee_nano"
_PACKED = "_packed_counts"

#: Event losses are rounded to whole nano-dollars and summed exactly as Int128 (module doc).
NANO_PER_USD = 1_000_000_000
#: Largest USD loss of one event that the nano-dollar sums can hold.
MAX_LOSS_USD = (2**127 - 1) / NANO_PER_USD
#: Width of one packed per-user count (see ``_per_user``).
_FIELD = 1 << 31


def has_phase_in(rules: EligibilityRules) -> bool:
    """Whether the rules soften a threshold with a phase-in band."""
    return rules.phase_in_loss_usd is not None or rules.phase_in_ratio is not None


def eligible_columns(rules: EligibilityRules) -> list[str]:
    """Columns of the feature matrix (``eligible.parquet``), in order (``phase_factor`` last,
    only with a phase-in band)."""
    return [
        N.USER_ID,
        N.LOSS_USD,
        N.GROSS_LOSS_USD,
        N.FEE_USD,
        *(N.product_loss_column(p) for p in _products(rules)),
        N.LOSS_RATIO,
        N.NET_ASSETS_USD,
        N.N_EVENTS,
        N.FIRST_EVENT_TS,
        N.LAST_EVENT_TS,
        N.VIP_TIER,
        N.IS_INSTITUTIONAL,
        N.REGION,
        N.ACCOUNT_AGE_DAYS,
        N.KYC_STATUS,
        N.DEPEG_COMP_USD,
        *((N.PHASE_FACTOR,) if has_phase_in(rules) else ()),
    ]


def excluded_columns() -> list[str]:
    """Columns of ``excluded.parquet``, in order."""
    return [
        N.USER_ID,
        N.REASON,
        N.DETAIL,
        N.LOSS_USD,
        N.GROSS_LOSS_USD,
        N.NET_ASSETS_USD,
        N.LOSS_RATIO,
        N.N_EVENTS,
    ]


@dataclass(frozen=True)
class Reconciliation:
    """Counts and USD totals that tie the inputs to the two output tables.

    Users: ``liquidated_users = eligible_users + excluded_users`` and
    ``excluded_users = sum(excluded_by_reason.values())``.
    Events: ``events_total = events_counted + events_outside_window +
    events_product_not_covered`` (an event is *product_not_covered* when its product is not
    covered, *outside_window* when its product is covered but its time is outside the window)
    and ``events_counted = events_eligible + events_excluded``.
    Losses (USD): ``counted_loss_usd = eligible_gross_loss_usd + excluded_loss_usd`` and
    ``eligible_loss_usd = eligible_gross_loss_usd - depeg_netted_usd``, within
    :data:`RECONCILE_RTOL`. ``counted_loss_usd`` and the event counts come from the per-user
    aggregation before any join, the other figures from the output tables.
    """

    liquidated_users: int
    eligible_users: int
    excluded_users: int
    excluded_by_reason: dict[str, int]
    events_total: int
    events_counted: int
    events_outside_window: int
    events_product_not_covered: int
    events_eligible: int
    events_excluded: int
    counted_loss_usd: float
    eligible_loss_usd: float
    eligible_gross_loss_usd: float
    excluded_loss_usd: float
    depeg_netted_usd: float

    def failures(self) -> list[str]:
        """Every identity of the class docstring that does not hold (empty when all hold)."""
        out: list[str] = []

        def same_int(label: str, lhs: int, rhs: int) -> None:
            if lhs != rhs:
                out.append(f"{label}: {lhs:,} != {rhs:,}")

        def same_float(label: str, lhs: float, rhs: float) -> None:
            scale = max(abs(lhs), abs(rhs), 1.0)
            if not (abs(lhs - rhs) <= RECONCILE_RTOL * scale):
                out.append(f"{label}: {lhs:,.6f} != {rhs:,.6f}")

        if tuple(self.excluded_by_reason) != N.REASONS:
            out.append(f"excluded_by_reason keys {tuple(self.excluded_by_reason)} != {N.REASONS}")
        same_int(
            "liquidated users = eligible + excluded",
            self.liquidated_users,
            self.eligible_users + self.excluded_users,
        )
        same_int(
            "excluded users = sum over reasons",
            self.excluded_users,
            sum(self.excluded_by_reason.values()),
        )
        same_int(
            "events total = counted + outside window + product not covered",
            self.events_total,
            self.events_counted + self.events_outside_window + self.events_product_not_covered,
        )
        same_int(
            "events counted = eligible + excluded",
            self.events_counted,
            self.events_eligible + self.events_excluded,
        )
        same_float(
            "counted loss = eligible gross + excluded",
            self.counted_loss_usd,
            self.eligible_gross_loss_usd + self.excluded_loss_usd,
        )
        same_float(
            "eligible loss = eligible gross - depeg netted",
            self.eligible_loss_usd,
            self.eligible_gross_loss_usd - self.depeg_netted_usd,
        )
        counts = [
            self.liquidated_users,
            self.eligible_users,
            self.excluded_users,
            self.events_total,
            self.events_counted,
            self.events_outside_window,
            self.events_product_not_covered,
            *self.excluded_by_reason.values(),
        ]
        if min(counts) < 0:
            out.append("a count is negative")
        return out

    def check(self) -> None:
        """Raise :class:`~allocator.errors.CheckFailedError` unless every identity holds."""
        bad = self.failures()
        if bad:
            raise CheckFailedError(
                "Eligibility does not reconcile: " + "; ".join(bad) + ".",
                hint="duplicate user_id rows in the users or snapshot table are the usual cause.",
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-ready dict (``excluded_by_reason`` in the order of the reason codes)."""
        return {
            "liquidated_users": self.liquidated_users,
            "eligible_users": self.eligible_users,
            "excluded_users": self.excluded_users,
            "excluded_by_reason": dict(self.excluded_by_reason),
            "events_total": self.events_total,
            "events_counted": self.events_counted,
            "events_outside_window": self.events_outside_window,
            "events_product_not_covered": self.events_product_not_covered,
            "events_eligible": self.events_eligible,
            "events_excluded": self.events_excluded,
            "counted_loss_usd": self.counted_loss_usd,
            "eligible_loss_usd": self.eligible_loss_usd,
            "eligible_gross_loss_usd": self.eligible_gross_loss_usd,
            "excluded_loss_usd": self.excluded_loss_usd,
            "depeg_netted_usd": self.depeg_netted_usd,
        }

    def lines(self) -> list[str]:
        """The reconciliation as aligned human-readable lines."""
        w = max(len(r) for r in N.REASONS) + 4
        out = [
            f"{'liquidated users':<{w}}{self.liquidated_users:>16,}",
            f"{'  eligible':<{w}}{self.eligible_users:>16,}",
            f"{'  excluded':<{w}}{self.excluded_users:>16,}",
        ]
        out += [f"{'    ' + r:<{w}}{n:>16,}" for r, n in self.excluded_by_reason.items()]
        out += [
            f"{'events':<{w}}{self.events_total:>16,}",
            f"{'  counted':<{w}}{self.events_counted:>16,}",
            f"{'  outside window':<{w}}{self.events_outside_window:>16,}",
            f"{'  product not covered':<{w}}{self.events_product_not_covered:>16,}",
            f"{'counted loss (USD)':<{w}}{self.counted_loss_usd:>16,.2f}",
            f"{'  eligible, gross':<{w}}{self.eligible_gross_loss_usd:>16,.2f}",
            f"{'  excluded, gross':<{w}}{self.excluded_loss_usd:>16,.2f}",
            f"{'eligible loss (USD)':<{w}}{self.eligible_loss_usd:>16,.2f}",
            f"{'  depeg netted':<{w}}{self.depeg_netted_usd:>16,.2f}",
        ]
        status = "ok" if not self.failures() else "FAILED: " + "; ".join(self.failures())
        out.append(f"{'reconciliation':<{w}}{status:>16}")
        return out


@dataclass(frozen=True, eq=False)
class EligibilityResult:
    """The feature matrix of eligible users, the excluded users with reasons, and the totals.

    ``eligible`` has the columns of :func:`eligible_columns`, ``excluded`` those of
    :func:`excluded_columns`; both one row per user, sorted by ``user_id``.
    """

    eligible: pl.DataFrame
    excluded: pl.DataFrame
    reconciliation: Reconciliation
    rules: EligibilityRules = field(default_factory=EligibilityRules)


# --------------------------------------------------------------------------- rules and schema


def _products(rules: EligibilityRules) -> tuple[str, ...]:
    return tuple(dict.fromkeys(rules.products))


def _check_rules(rules: EligibilityRules) -> None:
    def bad(msg: str) -> ScenarioError:
        return ScenarioError(f"Eligibility rules: {msg}.")

    unknown = [p for p in rules.products if p not in N.PRODUCTS]
    if unknown:
        raise bad(f"unknown product(s) {unknown}; known products are {list(N.PRODUCTS)}")
    if not rules.products:
        raise bad("products is empty, so nobody could qualify")
    for name in ("window_start", "window_end", "snapshot_at"):
        value = getattr(rules, name)
        if not isinstance(value, datetime) or value.tzinfo is None:
            raise bad(f"{name} must be a time-zone-aware datetime, not {value!r}")
    if not rules.window_start < rules.window_end:
        raise bad(f"window_start {rules.window_start} is not before window_end {rules.window_end}")
    for name in ("min_loss_usd", "min_loss_ratio"):
        value = getattr(rules, name)
        if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise bad(f"{name} must be a finite number >= 0, not {value!r}")
    for name, top in (("phase_in_loss_usd", "min_loss_usd"), ("phase_in_ratio", "min_loss_ratio")):
        value = getattr(rules, name)
        if value is None:
            continue
        if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise bad(f"{name} must be a finite number >= 0 or absent, not {value!r}")
        if not value < getattr(rules, top):
            raise bad(f"{name} ({value!r}) must be below {top} ({getattr(rules, top)!r})")
    if rules.nonpositive_net_assets not in ("eligible", "exclude"):
        raise bad(
            f"nonpositive_net_assets must be 'eligible' or 'exclude', not {rules.nonpositive_net_assets!r}"
        )
    if rules.depeg_policy not in ("exclude", "net", "ignore"):
        raise bad(f"depeg_policy must be 'exclude', 'net' or 'ignore', not {rules.depeg_policy!r}")


def _table_name(stem: str, source: Mapping[str, Any] | None) -> str:
    if source and stem in source:
        return f"{stem} file {source[stem]}"
    return f"{stem} table"


def _conform(
    frame: pl.LazyFrame | pl.DataFrame,
    columns: Mapping[str, pl.DataType],
    stem: str,
    source: Mapping[str, Any] | None,
) -> pl.LazyFrame:
    """Select the columns the rules need, in the contract's dtypes (a no-op on loaded data)."""
    lf = frame.lazy()
    schema = lf.collect_schema()
    missing = [c for c in columns if c not in schema]
    if missing:
        raise InputError(
            f"The {_table_name(stem, source)} has no column {missing[0]!r} "
            f"(columns: {', '.join(schema.names())}).",
        )
    exprs = []
    for name, dtype in columns.items():
        have = schema[name]
        if have == dtype:
            exprs.append(pl.col(name))
        elif isinstance(dtype, pl.Datetime) and isinstance(have, pl.Datetime) and have.time_zone:
            exprs.append(pl.col(name).dt.convert_time_zone("UTC").dt.cast_time_unit("us"))
        elif dtype == pl.String and isinstance(have, (pl.Categorical, pl.Enum)):
            exprs.append(pl.col(name).cast(pl.String))
        elif (have.is_numeric() and dtype.is_numeric()) or (have == pl.Null):
            exprs.append(pl.col(name).cast(dtype))
        else:
            raise InputError(
                f"The {_table_name(stem, source)} has column {name!r} of type {have}; "
                f"expected {dtype}.",
            )
    return lf.select(exprs)


# --------------------------------------------------------------------------- prices


@dataclass(frozen=True)
class _PriceGrid:
    """Dense price array: the price of asset ``k`` at grid cell ``c`` sits at ``k * n_cells + c``.

    Cell ``c`` starts at ``(first_cell + c) * step_us`` microseconds since the epoch; its price is
    that of the latest bar at or before that instant, which is the latest bar at or before any
    instant inside the cell because every bar time is a multiple of ``step_us``.
    """

    assets: tuple[str, ...]
    step_us: int
    first_cell: int
    n_cells: int
    prices: pl.Series


def _utc(dt: datetime) -> datetime:
    return dt.astimezone(UTC)


def _epoch_us(dt: datetime) -> int:
    delta = _utc(dt) - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _price_grid(prices: pl.DataFrame, rules: EligibilityRules) -> _PriceGrid | None:
    """The dense price grid over the window, or None when it would be too large."""
    if prices.height == 0:
        return _PriceGrid((), 60_000_000, 0, 0, pl.Series(N.PRICE_USD, [], dtype=pl.Float64))
    ts_us = prices[N.PRICE_TS].dt.epoch("us")
    step = next(s for s in _GRID_STEPS_US if (ts_us % s == 0).all())
    start_us = _epoch_us(rules.window_start)
    end_us = _epoch_us(rules.window_end) - 1  # last instant inside the half-open window
    first, last = start_us // step, end_us // step
    assets = tuple(sorted(prices[N.ASSET].unique().to_list()))
    n_cells = last - first + 1
    if len(assets) * n_cells > MAX_GRID_CELLS:
        return None
    cells = pl.DataFrame({"_cell": pl.int_range(0, n_cells, eager=True, dtype=pl.Int64)})
    codes = pl.DataFrame({N.ASSET: list(assets), "_code": list(range(len(assets)))})
    grid = (
        codes.join(cells, how="cross")
        .with_columns(
            ((pl.col("_cell") + first) * step).cast(_UTC_US).alias("_at"),
        )
        .sort("_at")
        .join_asof(
            prices.sort(N.PRICE_TS).rename({N.PRICE_TS: "_bar"}),
            left_on="_at",
            right_on="_bar",
            by=N.ASSET,
            strategy="backward",
            check_sortedness=False,
        )
        .sort("_code", "_cell")
    )
    return _PriceGrid(assets, step, first, n_cells, grid[N.PRICE_USD])


def _check_prices(prices: pl.DataFrame, source: Mapping[str, Any] | None) -> None:
    bad = prices.filter(
        pl.col(N.PRICE_USD).is_null()
        | pl.col(N.PRICE_TS).is_null()
        | pl.col(N.ASSET).is_null()
        | ~(pl.col(N.PRICE_USD) > 0)
        | ~pl.col(N.PRICE_USD).is_finite()
    )
    if bad.height:
        row = bad.row(0, named=True)
        raise InputError(
            f"The {_table_name(N.PRICES_FILE, source)} has a bar with a missing or non-positive "
            f"{N.PRICE_USD!r}, {N.ASSET!r} or {N.PRICE_TS!r}: {row}.",
        )
    dup = prices.filter(pl.struct(N.ASSET, N.PRICE_TS).is_duplicated())
    if dup.height:
        row = dup.sort(N.ASSET, N.PRICE_TS).row(0, named=True)
        raise InputError(
            f"The {_table_name(N.PRICES_FILE, source)} has two bars for asset {row[N.ASSET]!r} at "
            f"{N.PRICE_TS} {row[N.PRICE_TS]}; each (asset, ts) must appear once.",
        )


def _priced_events(
    events: pl.LazyFrame,
    prices: pl.DataFrame,
    counted: pl.Expr,
    rules: EligibilityRules,
    price_lookup: str,
) -> pl.LazyFrame:
    """Events with the USD price column ``_price`` (null for events that are not counted)."""
    grid = _price_grid(prices, rules) if price_lookup != "asof" else None
    if grid is None:
        # Irregular bars over a long window: an as-of join, which has to sort the events.
        bars = prices.lazy().rename({N.PRICE_TS: "_bar", N.PRICE_USD: _PRICE}).sort("_bar")
        return (
            events.sort(N.TS)
            .join_asof(
                bars,
                left_on=N.TS,
                right_on="_bar",
                by_left=N.SETTLE_ASSET,
                by_right=N.ASSET,
                strategy="backward",
                check_sortedness=False,
            )
            .with_columns(pl.when(counted).then(pl.col(_PRICE)).alias(_PRICE))
            .drop("_bar")
        )
    code = (
        pl.col(N.SETTLE_ASSET)
        .cast(pl.Enum(grid.assets) if grid.assets else pl.Enum(["_"]), strict=False)
        .to_physical()
        .cast(pl.Int64)
    )
    cell = pl.col(N.TS).dt.epoch("us") // grid.step_us - grid.first_cell
    index = pl.when(counted).then(code * grid.n_cells + cell)
    return events.with_columns(pl.lit(grid.prices).gather(index).alias(_PRICE))


def _raise_bad_event(
    priced: pl.LazyFrame, counted: pl.Expr, prices: pl.DataFrame, source: Mapping[str, Any] | None
) -> None:
    """Raise for the first counted event whose USD loss could not be computed."""

    def example(bad: pl.Expr) -> dict[str, Any] | None:
        rows = priced.filter(counted & bad).sort(N.TS, N.EVENT_ID).head(1).collect()
        return rows.row(0, named=True) if rows.height else None

    def where(row: Mapping[str, Any]) -> str:
        return (
            f"Example event in the {_table_name(N.EVENTS_FILE, source)}: "
            f"{N.EVENT_ID}={row[N.EVENT_ID]}, {N.USER_ID}={row[N.USER_ID]}, {N.TS}={row[N.TS]}, "
            f"{N.PRODUCT}={row[N.PRODUCT]}, {N.SETTLE_ASSET}={row[N.SETTLE_ASSET]}, "
            f"{N.REALISED_LOSS}={row[N.REALISED_LOSS]}, {N.LIQ_FEE}={row[N.LIQ_FEE]}."
        )

    row = example(pl.col(_PRICE).is_null())
    if row is not None:
        asset = row[N.SETTLE_ASSET]
        known = prices.filter(pl.col(N.ASSET) == asset)
        if known.height:
            why = f"its first bar is at {known[N.PRICE_TS].min()}, after the event"
        else:
            why = "it has no bar at all"
        raise InputError(
            f"No USD price for settlement asset {asset!r} at or before a counted event: the "
            f"{_table_name(N.PRICES_FILE, source)} has no {N.PRICE_USD!r} bar for {asset!r} "
            f"with {N.PRICE_TS} <= the event time ({why}). " + where(row),
            hint="add bars for that asset from before the window start.",
        )
    row = example(pl.col(_EVENT_LOSS).is_null())
    raise InputError(
        f"A counted event has a USD loss that is not a finite number below {MAX_LOSS_USD:.3g}: "
        f"{N.REALISED_LOSS} and {N.LIQ_FEE} times the price must be finite and in range. "
        + (where(row) if row is not None else "")
    )


# --------------------------------------------------------------------------- the query


def _fmt(expr: pl.Expr) -> pl.Expr:
    """A USD amount or count as short text (two decimals)."""
    return expr.round(2).cast(pl.String)


def _fmt_below(expr: pl.Expr, threshold: float) -> pl.Expr:
    """A value known to be below ``threshold``, with the fewest decimals (2, 4 or 6) that keep
    it visibly below, so that 49.999 never reads as 50.0; the exact value as a last resort."""
    shown = expr
    for decimals in (6, 4, 2):  # the last ``when`` written is the first one tried
        shown = (
            pl.when(expr.round(decimals) < threshold).then(expr.round(decimals)).otherwise(shown)
        )
    return shown.cast(pl.String)


def _iso(dt: datetime) -> str:
    text = _utc(dt).strftime("%Y-%m-%dT%H:%M:%S.%f").rstrip("0").rstrip(".")
    return text + "Z"


def _num(x: float) -> str:
    return f"{x:g}"


def _passes_loss(rules: EligibilityRules) -> pl.Expr:
    if rules.phase_in_loss_usd is None:
        return pl.col(N.LOSS_USD) >= rules.min_loss_usd
    return pl.col(N.LOSS_USD) > rules.phase_in_loss_usd


def _passes_ratio(rules: EligibilityRules) -> pl.Expr:
    if rules.phase_in_ratio is None:
        return pl.col(N.LOSS_RATIO) >= rules.min_loss_ratio
    return pl.col(N.LOSS_RATIO) > rules.phase_in_ratio


def _ramp(column: str, low: float | None, high: float) -> pl.Expr:
    """0 at ``low``, 1 from ``high`` up, linear between (1 everywhere without a band)."""
    if low is None:
        return pl.lit(1.0)
    x = pl.col(column)
    # compared first so that a threshold reached exactly gives 1.0, not a rounded quotient
    return pl.when(x >= high).then(1.0).otherwise(((x - low) / (high - low)).clip(0.0, 1.0))


def _phase_factor(rules: EligibilityRules) -> pl.Expr:
    return (
        (
            _ramp(N.LOSS_USD, rules.phase_in_loss_usd, rules.min_loss_usd)
            * _ramp(N.LOSS_RATIO, rules.phase_in_ratio, rules.min_loss_ratio)
        )
        .cast(pl.Float64)
        .alias(N.PHASE_FACTOR)
    )


def _reason_expr(rules: EligibilityRules) -> pl.Expr:
    n_events = pl.col(N.N_EVENTS)
    outside = (n_events == 0) & (pl.col(_N_COVERED) > 0) & (pl.col(_N_IN_WINDOW) == 0)
    kyc_bad = pl.lit(False)
    if rules.require_kyc:
        kyc_bad = pl.col(N.KYC_STATUS).is_null() | (pl.col(N.KYC_STATUS) != N.KYC_VERIFIED)
    depeg_bad = pl.lit(False)
    if rules.depeg_policy == "exclude":
        depeg_bad = pl.col(N.DEPEG_COMP_USD).fill_null(0.0) > 0
    nonpos_bad = pl.lit(False)
    if rules.nonpositive_net_assets == "exclude":
        nonpos_bad = pl.col(N.NET_ASSETS_USD) <= 0
    region_bad = pl.col(N.REGION).is_in(list(rules.restricted_regions)).fill_null(False)
    return (
        pl.when(outside)
        .then(pl.lit(N.REASON_OUTSIDE_WINDOW))
        .when(n_events == 0)
        .then(pl.lit(N.REASON_PRODUCT_NOT_COVERED))
        .when(~pl.col(_IN_USERS))
        .then(pl.lit(N.REASON_NO_USER_RECORD))
        .when(region_bad)
        .then(pl.lit(N.REASON_RESTRICTED_REGION))
        .when(kyc_bad)
        .then(pl.lit(N.REASON_KYC))
        .when(depeg_bad)
        .then(pl.lit(N.REASON_DEPEG))
        .when(~_passes_loss(rules).fill_null(False))
        .then(pl.lit(N.REASON_BELOW_MIN_LOSS))
        .when(~pl.col(_IN_SNAPSHOT))
        .then(pl.lit(N.REASON_NO_SNAPSHOT))
        .when(nonpos_bad)
        .then(pl.lit(N.REASON_NONPOSITIVE_NET_ASSETS))
        .when(~_passes_ratio(rules).fill_null(False))
        .then(pl.lit(N.REASON_BELOW_LOSS_RATIO))
        .otherwise(pl.lit(None, dtype=pl.String))
        .alias(N.REASON)
    )


def _detail_texts(rules: EligibilityRules) -> dict[str, pl.Expr]:
    """Reason code -> expression of its human-readable detail."""
    window = f"[{_iso(rules.window_start)}, {_iso(rules.window_end)})"
    in_window_other = pl.col(_N_IN_WINDOW)
    loss, net, ratio = pl.col(N.LOSS_USD), pl.col(N.NET_ASSETS_USD), pl.col(N.LOSS_RATIO)
    netted = ""
    if rules.depeg_policy == "net":
        netted = " after depeg netting"
    cases = [
        (
            N.REASON_PRODUCT_NOT_COVERED,
            pl.when(in_window_other > 0)
            .then(
                pl.format(
                    "{} event(s) in the window, none on a covered product",
                    in_window_other,
                )
            )
            .otherwise(pl.lit("no event on a covered product")),
        ),
        (
            N.REASON_OUTSIDE_WINDOW,
            pl.format(f"{{}} covered-product event(s), none in {window}", pl.col(_N_COVERED)),
        ),
        (N.REASON_NO_USER_RECORD, pl.lit(f"{N.USER_ID} not in the users table")),
        (N.REASON_RESTRICTED_REGION, pl.format("region {} is restricted", pl.col(N.REGION))),
        (
            N.REASON_KYC,
            pl.format("kyc status {}", pl.col(N.KYC_STATUS).fill_null("missing")),
        ),
        (
            N.REASON_DEPEG,
            pl.format("received {} USD depeg compensation", _fmt(pl.col(N.DEPEG_COMP_USD))),
        ),
        (
            N.REASON_BELOW_MIN_LOSS,
            pl.format(
                f"loss {{}} USD{netted} < {_num(rules.min_loss_usd)} USD",
                _fmt_below(loss, rules.min_loss_usd),
            )
            if rules.phase_in_loss_usd is None
            else pl.format(
                f"loss {{}} USD{netted} <= {_num(rules.phase_in_loss_usd)} USD "
                f"(lower end of the phase-in band up to {_num(rules.min_loss_usd)} USD)",
                _fmt(loss),
            ),
        ),
        (N.REASON_NO_SNAPSHOT, pl.lit(f"{N.USER_ID} not in the snapshot")),
        (
            N.REASON_NONPOSITIVE_NET_ASSETS,
            pl.format("net assets {} USD <= 0", _fmt(net)),
        ),
        (
            N.REASON_BELOW_LOSS_RATIO,
            pl.format(
                f"loss ratio {{}}% < {_num(100 * rules.min_loss_ratio)}% (loss {{}} USD, "
                "net assets {} USD)",
                _fmt_below(ratio * 100, 100 * rules.min_loss_ratio),
                _fmt(loss),
                _fmt(net),
            )
            if rules.phase_in_ratio is None
            else pl.format(
                f"loss ratio {{}}% <= {_num(100 * rules.phase_in_ratio)}% (lower end of the "
                f"phase-in band up to {_num(100 * rules.min_loss_ratio)}%; loss {{}} USD, "
                "net assets {} USD)",
                _fmt(ratio * 100),
                _fmt(loss),
                _fmt(net),
            ),
        ),
    ]
    return dict(cases)


def _with_detail(excluded: pl.DataFrame, rules: EligibilityRules) -> pl.DataFrame:
    """Add the detail column, formatting each reason's text only on that reason's rows."""
    texts = _detail_texts(rules)
    parts = [
        part.with_columns(texts[reason].alias(N.DETAIL))
        for (reason,), part in excluded.partition_by(N.REASON, as_dict=True).items()
    ]
    if not parts:
        return excluded.with_columns(pl.lit(None, dtype=pl.String).alias(N.DETAIL))
    return pl.concat(parts).sort(N.USER_ID)


def _nano(usd: pl.Expr) -> pl.Expr:
    """USD as whole nano-dollars (Int128): ``usd * 1e9`` in floats, rounded half to even; null
    beyond its range."""
    return (usd * NANO_PER_USD).round().cast(pl.Int128, strict=False)


def _nano_to_usd(nano: pl.Series) -> pl.Series:
    # NumPy divides each element (correctly rounded); Polars multiplies by the reciprocal when
    # dividing a column by a scalar, which can miss by one unit in the last place (6e10 / 1e9).
    usd = nano.cast(pl.Float64).to_numpy() / NANO_PER_USD
    return pl.Series(nano.name, usd, dtype=pl.Float64)


def _exact_sum(column: str) -> pl.Expr:
    """Sum of a Float64 USD column through nano-dollar decimals (the same bits in any order)."""
    return pl.col(column).cast(pl.Decimal(38, 9)).sum().cast(pl.Float64)


def _field(k: int) -> pl.Expr:
    return pl.lit(_FIELD**k, dtype=pl.Int128)


def _event_loss(rules: EligibilityRules) -> pl.Expr:
    """Counted loss of one event in nano-dollars (null when not counted, unpriced or invalid)."""
    amount = pl.col(N.REALISED_LOSS)
    if rules.include_fees:
        amount = amount + pl.col(N.LIQ_FEE)
    return _nano(amount * pl.col(_PRICE)).alias(_EVENT_LOSS)


def _per_user(
    priced: pl.LazyFrame,
    covered: pl.Expr,
    in_window: pl.Expr,
    counted: pl.Expr,
    rules: EligibilityRules,
) -> pl.LazyFrame:
    """One row per liquidated user: event counts, nano-USD losses, first/last counted event.

    Aggregations dominate the cost (each one scatters ten million rows into two million
    groups), so the four per-user counts share one Int128 sum of 31-bit fields, decoded in
    :func:`_decode`; no field can carry into the next while the events table has fewer than
    :math:`2^{31}` rows.
    """
    price = pl.col(_PRICE)
    loss = pl.col(_EVENT_LOSS)  # null unless counted and priced
    bad = counted & loss.is_null()
    packed = (
        covered.cast(pl.Int128)
        + in_window.cast(pl.Int128) * _field(1)
        + counted.cast(pl.Int128) * _field(2)
        + bad.cast(pl.Int128) * _field(3)
    )
    aggs = [
        pl.len().cast(pl.Int64).alias(_N_TOTAL),
        packed.sum().alias(_PACKED),
        *(
            pl.when(pl.col(N.PRODUCT) == p).then(loss).sum().alias(_nano_col(p))
            for p in _products(rules)
        ),
        pl.when(counted).then(pl.col(N.TS)).min().alias(N.FIRST_EVENT_TS),
        pl.when(counted).then(pl.col(N.TS)).max().alias(N.LAST_EVENT_TS),
    ]
    events = priced.with_columns(_event_loss(rules))
    if rules.include_fees:
        events = events.with_columns(_nano(pl.col(N.LIQ_FEE) * price).alias(_EVENT_FEE))
        aggs.append(pl.col(_EVENT_FEE).sum().alias(_FEE_NANO))
    return events.group_by(N.USER_ID).agg(aggs)


def _decode(per_user: pl.DataFrame, rules: EligibilityRules) -> pl.DataFrame:
    """Unpack the counts and turn nano-dollar sums into Float64 USD columns."""
    products = _products(rules)
    packed = pl.col(_PACKED)
    field = pl.lit(_FIELD, dtype=pl.Int128)
    df = per_user.with_columns(
        (packed % field).cast(pl.Int64).alias(_N_COVERED),
        ((packed // _field(1)) % field).cast(pl.Int64).alias(_N_IN_WINDOW),
        ((packed // _field(2)) % field).cast(pl.Int64).alias(N.N_EVENTS),
        (packed // _field(3)).cast(pl.Int64).alias(_N_NO_PRICE),
        # Counted events fall in exactly one covered product: the gross loss is the exact sum.
        pl.sum_horizontal([_nano_col(p) for p in products]).alias(_GROSS_NANO),
    ).drop(_PACKED)
    if _FEE_NANO not in df.columns:
        df = df.with_columns(pl.lit(0, dtype=pl.Int128).alias(_FEE_NANO))
    return df.with_columns(
        _nano_to_usd(df[_GROSS_NANO]).alias(N.GROSS_LOSS_USD),
        _nano_to_usd(df[_FEE_NANO]).alias(N.FEE_USD),
        *(_nano_to_usd(df[_nano_col(p)]).alias(N.product_loss_column(p)) for p in products),
    )


def _nano_col(product: str) -> str:
    return f"_nano_{product}"


def compute_eligibility(
    events: pl.LazyFrame | pl.DataFrame,
    prices: pl.LazyFrame | pl.DataFrame,
    snapshot: pl.LazyFrame | pl.DataFrame,
    users: pl.LazyFrame | pl.DataFrame,
    rules: EligibilityRules,
    *,
    source: Mapping[str, Any] | None = None,
    engine: str = "auto",
    price_lookup: Literal["auto", "asof"] = "auto",
) -> EligibilityResult:
    """Apply ``rules`` to the four input tables (see the module docstring for the rules).

    Parameters
    ----------
    events, prices, snapshot, users
        The input tables (columns of :mod:`allocator.names`), lazy or eager. ``user_id`` is
        assumed unique in ``snapshot`` and ``users`` (``allocator.data.inputs.validate_inputs``
        checks it); a duplicate shows up as a reconciliation failure.
    rules
        The eligibility rules.
    source
        Optional table stem -> file path, used only to name files in error messages.
    engine
        Polars engine of the pass over the events (``"auto"``, ``"in-memory"`` or
        ``"streaming"``); the joins with the users and the snapshot run in memory.
    price_lookup
        ``"auto"``: the dense price grid when the bars allow it, else an as-of join;
        ``"asof"``: always the as-of join (same result, slower; for tests and benchmarks).

    Returns
    -------
    EligibilityResult
        Eligible users with their features, excluded users with the first failing reason, and
        the reconciliation of users, events and losses.

    Raises
    ------
    ScenarioError
        Inconsistent rules (unknown product, empty or reversed window, negative threshold).
    InputError
        A missing column, a bad price bar, or a counted event without a USD price.
    """
    _check_rules(rules)
    if price_lookup not in ("auto", "asof"):
        raise ValueError(f"price_lookup must be 'auto' or 'asof', not {price_lookup!r}")
    ev = _conform(events, _EVENT_COLUMNS, N.EVENTS_FILE, source)
    px = _conform(prices, _PRICE_COLUMNS, N.PRICES_FILE, source).collect()
    snap = _conform(snapshot, _SNAPSHOT_COLUMNS, N.SNAPSHOT_FILE, source)
    usr = _conform(users, _USER_COLUMNS, N.USERS_FILE, source)
    _check_prices(px, source)
    rows = int(ev.select(pl.len()).collect().item())  # parquet: from the file metadata
    if rows >= _FIELD:
        raise InputError(
            f"The {_table_name(N.EVENTS_FILE, source)} has {rows:,} rows; at most "
            f"{_FIELD - 1:,} are supported."
        )

    ts = pl.col(N.TS)
    # Flag columns, computed once per event: several aggregations below use each of them.
    ev = ev.with_columns(
        pl.col(N.PRODUCT).is_in(list(_products(rules))).alias(_COVERED),
        (
            (ts >= pl.lit(_utc(rules.window_start)).cast(_UTC_US))
            & (ts < pl.lit(_utc(rules.window_end)).cast(_UTC_US))
        ).alias(_IN_WINDOW),
    ).with_columns((pl.col(_COVERED) & pl.col(_IN_WINDOW)).alias(_COUNTED))
    covered, in_window, counted = pl.col(_COVERED), pl.col(_IN_WINDOW), pl.col(_COUNTED)
    priced = _priced_events(ev, px, counted, rules, price_lookup)

    # Stage 1: the one pass over the events, collected before its result is used twice below.
    per_user = _decode(
        _per_user(priced, covered, in_window, counted, rules).collect(engine=engine), rules
    )
    t = per_user.select(
        pl.len().cast(pl.Int64).alias("users"),
        pl.col(_N_TOTAL).sum().cast(pl.Int64).alias("events"),
        pl.col(_N_COVERED).sum().cast(pl.Int64).alias("covered"),
        pl.col(N.N_EVENTS).sum().cast(pl.Int64).alias("counted"),
        pl.col(_N_NO_PRICE).sum().cast(pl.Int64).alias("no_price"),
        pl.col(_GROSS_NANO).sum().alias("loss_nano"),
    ).row(0, named=True)
    if t["no_price"]:
        _raise_bad_event(priced.with_columns(_event_loss(rules)), counted, px, source)

    # Stage 2: the users and snapshot tables may hold every account. A hash-set filter keeps
    # the liquidated ones before the joins; it is much cheaper than a semi-join, which builds
    # its table on the large side. The per-user frame is sorted (and slimmed) before the
    # joins, which keep its order, so that the wide joined table is never sorted.
    per_user = per_user.drop(c for c, d in per_user.schema.items() if d == pl.Int128).sort(
        N.USER_ID
    )
    ids = per_user[N.USER_ID].implode()
    usr_l = usr.filter(pl.col(N.USER_ID).is_in(ids)).with_columns(pl.lit(True).alias(_IN_USERS))
    snap_l = snap.filter(pl.col(N.USER_ID).is_in(ids)).with_columns(
        pl.lit(True).alias(_IN_SNAPSHOT)
    )
    gross = pl.col(N.GROSS_LOSS_USD)
    depeg = pl.col(N.DEPEG_COMP_USD)
    if rules.depeg_policy == "net":
        loss_usd = pl.max_horizontal(gross - depeg, pl.lit(0.0))
        loss_usd = pl.when(depeg.is_null()).then(None).otherwise(loss_usd)
    else:
        loss_usd = gross
    net = pl.col(N.NET_ASSETS_USD)
    snapshot_at = pl.lit(_utc(rules.snapshot_at)).cast(_UTC_US)
    table = (
        per_user.lazy()
        .join(usr_l, on=N.USER_ID, how="left", maintain_order="left")
        .join(snap_l, on=N.USER_ID, how="left", maintain_order="left")
        .with_columns(
            pl.col(_IN_USERS).fill_null(False),
            pl.col(_IN_SNAPSHOT).fill_null(False),
            loss_usd.alias(N.LOSS_USD),
            ((snapshot_at - pl.col(N.CREATED_AT)).dt.total_microseconds() // _US_PER_DAY)
            .cast(pl.Int64)
            .alias(N.ACCOUNT_AGE_DAYS),
        )
        .with_columns(
            pl.when(net <= 0)
            .then(float("inf"))
            .otherwise(pl.col(N.LOSS_USD) / net)
            .alias(N.LOSS_RATIO),
        )
        .with_columns(_reason_expr(rules))
        .with_columns(*((_phase_factor(rules),) if has_phase_in(rules) else ()))
        # Measured at stress size: the in-memory engine joins these ~2M-row frames in about
        # half the CPU time of the streaming one, which is the better choice for stage 1.
        .collect(engine="in-memory")
    )
    eligible = table.filter(pl.col(N.REASON).is_null()).select(eligible_columns(rules))
    excluded = _with_detail(table.filter(pl.col(N.REASON).is_not_null()), rules).select(
        excluded_columns()
    )
    # One chunk each: the chunk layout of a parallel collect varies from run to run, and the
    # parquet row groups written from it would too.
    eligible, excluded = eligible.rechunk(), excluded.rechunk()
    rec = _reconcile(eligible, excluded, t, rows)
    return EligibilityResult(eligible=eligible, excluded=excluded, reconciliation=rec, rules=rules)


def _reconcile(
    eligible: pl.DataFrame, excluded: pl.DataFrame, totals: Mapping[str, Any], rows: int
) -> Reconciliation:
    by_reason = dict.fromkeys(N.REASONS, 0)
    for reason, count in excluded.group_by(N.REASON).len().iter_rows():
        by_reason[reason] = int(count)
    e = eligible.select(
        _exact_sum(N.LOSS_USD).alias("loss"),
        _exact_sum(N.GROSS_LOSS_USD).alias("gross"),
        pl.col(N.N_EVENTS).sum().cast(pl.Int64).alias("events"),
    ).row(0, named=True)
    x = excluded.select(
        _exact_sum(N.GROSS_LOSS_USD).alias("gross"),
        pl.col(N.N_EVENTS).sum().cast(pl.Int64).alias("events"),
    ).row(0, named=True)
    return Reconciliation(
        liquidated_users=int(totals["users"]),
        eligible_users=eligible.height,
        excluded_users=excluded.height,
        excluded_by_reason=by_reason,
        events_total=rows,
        events_counted=int(totals["counted"]),
        events_outside_window=int(totals["covered"]) - int(totals["counted"]),
        events_product_not_covered=int(totals["events"]) - int(totals["covered"]),
        events_eligible=int(e["events"] or 0),
        events_excluded=int(x["events"] or 0),
        counted_loss_usd=int(totals["loss_nano"] or 0) / NANO_PER_USD,
        eligible_loss_usd=float(e["loss"] or 0.0),
        eligible_gross_loss_usd=float(e["gross"] or 0.0),
        excluded_loss_usd=float(x["gross"] or 0.0),
        depeg_netted_usd=float((e["gross"] or 0.0) - (e["loss"] or 0.0)),
    )


# --------------------------------------------------------------------------- files


def run_eligibility(data_dir: str | Path, rules: EligibilityRules) -> EligibilityResult:
    """Load and validate the data directory, then :func:`compute_eligibility`."""
    from allocator.data.inputs import load_inputs

    inputs = load_inputs(Path(data_dir), validate=True)
    return compute_eligibility(
        inputs.events,
        inputs.prices,
        inputs.snapshot,
        inputs.users,
        rules,
        source={k: str(v) for k, v in inputs.paths.items()},
    )


def write_eligibility(result: EligibilityResult, out_dir: str | Path) -> Path:
    """Write ``eligible.parquet``, ``excluded.parquet`` and ``reconciliation.json`` atomically.

    The three files are written into a temporary directory beside ``out_dir`` first. A new
    ``out_dir`` is then created by one rename; an existing one gets each file by ``os.replace``
    (other files in it are left alone). An error while writing leaves no partial output. The
    bytes depend only on the result, so a rerun on the same inputs writes identical files.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"Output path {out_dir} exists and is not a directory.")
    names = (N.ELIGIBLE_FILE, N.EXCLUDED_FILE, RECONCILIATION_FILE)
    tmp = out_dir.parent / f".{out_dir.name}.{uuid.uuid4().hex}.tmp"
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        # Made by hand rather than with tempfile.mkdtemp, whose 0700 mode the renamed
        # directory would keep.
        tmp.mkdir()
        for name, frame in ((N.ELIGIBLE_FILE, result.eligible), (N.EXCLUDED_FILE, result.excluded)):
            frame.rechunk().write_parquet(tmp / name, row_group_size=ROW_GROUP_ROWS)
        text = json.dumps(
            {"reconciliation": result.reconciliation.to_dict(), "rules": _rules_dict(result.rules)},
            indent=2,
            allow_nan=False,
        )
        (tmp / RECONCILIATION_FILE).write_text(text + "\n", encoding="utf-8")
        for name in names:
            with open(tmp / name, "rb") as fh:
                os.fsync(fh.fileno())
        if not out_dir.exists():
            os.rename(tmp, out_dir)
        else:
            for name in names:
                os.replace(tmp / name, out_dir / name)
            tmp.rmdir()
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise InputError(f"Cannot write the eligibility outputs to {out_dir}: {exc}.") from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _rules_dict(rules: EligibilityRules) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in rules.__dataclass_fields__:
        value = getattr(rules, name)
        if isinstance(value, datetime):
            value = value.isoformat()
        elif isinstance(value, timedelta):
            value = value.total_seconds()
        elif isinstance(value, tuple):
            value = list(value)
        out[name] = value
    return out
