r"""Depeg compensation: USDe, BNSOL and WBETH collateral force-sold while the venue's price broke.

The rule (domain brief, section 3): Futures, Margin and Loan users whose collateral included
USDe, BNSOL or WBETH and who were liquidated during 2025-10-10 21:36-22:16 UTC are paid, per
liquidated position, the gap between the liquidation price and the market price at
2025-10-11 00:00 UTC times the liquidated quantity, plus a refund of the liquidation fee.

For a position :math:`e` in depeg asset :math:`a` with quantity :math:`q_e`, liquidation price
:math:`\ell_e` (USD) and liquidation fee :math:`f_e` (USD),

.. math::

    \hat p_a = \max\big(p_a,\; \underline p_a\big), \qquad
    c_e = \begin{cases}
        (\hat p_a - \ell_e)\,q_e + f_e & \ell_e < \hat p_a \\
        0 & \text{otherwise,}
    \end{cases}
    \qquad C_e = \lfloor 100\,c_e + \tfrac12 \rfloor,

where :math:`p_a` is the reference price, :math:`\underline p_a` the asset's floor (0 when it
has none), :math:`c_e` the compensation in USD and :math:`C_e` the cents paid (half up). A
user's compensation is :math:`\sum_e C_e`, exact in integer cents. :math:`c_e \ge 0` always,
and it is non-decreasing in the reference price and the floor.

How the announcement is read (each choice is a field of :class:`DepegRules`):

* **Window.** Half-open, ``[21:36:00, 22:16:00)``: the announcement calls it a "40-minute
  window", which is exactly 21:36 to 22:16; a liquidation at 22:16:00.000000 is outside. Cases
  outside the window were "reviewed one by one", which no rule can reproduce: they are reported
  (count, and what the formula would give) but not compensated.
* **Which positions.** The population is every event on a covered product (USD- and
  coin-margined futures, cross and isolated margin, loans) inside the window whose ``collateral``
  lists a depeg asset. Of those, a position is compensable when the symbol's base asset is a
  depeg asset (``USDEUSDT``: quantity in USDe, price in USDT): the forced sale of the depegged
  collateral itself. A ``BTCUSDT`` long liquidated because its USDe collateral lost value lost
  on BTC, an ordinary market move the announcement does not cover; its USDe, if sold, is its
  own compensable event. Such positions are kept with reason ``position_not_in_depeg_asset``.
  The side is not used: the gap formula alone decides.
* **Prices in USD.** ``liq_price`` is quoted in the symbol's quote asset (the part after the
  base, before any ``_``: ``USDT`` in ``USDEUSDT``) and converted at that asset's USD price at
  the event (latest bar at or before it); a quote of ``USD`` is worth 1. The fee is in the
  settle asset and converted the same way. Asset names are compared case-insensitively.
* **Reference price.** The asset's USD price at the latest bar at or before ``reference_at``
  (2025-10-11 00:00 UTC), unless ``reference_prices`` overrides it. The announcement adjusts
  this "market price" with redemption-based index weights for all three assets; an override
  is where such a value goes (e.g. BNSOL at SOL times its conversion ratio).
* **USDe floor.** The same announcement adds "a minimum price floor for USDe" to that index:
  the floor bounds the *reference* price from below, :math:`\hat p_a = \max(p_a, \underline
  p_a)`, so a USDe position is compensated at least up to the floor even if USDe still traded
  below it at 00:00. (Reading it as a floor on the liquidation price instead would pay the
  users sold deepest the least, the opposite of its purpose.) No figure was published; the
  default is USD 1.00, USDe's redemption value, and ``floors`` changes it.
* **Zero compensation.** A position sold at or above the compensable price was not harmed by
  the depeg: no gap and no fee refund (reason ``liquidated_at_or_above_reference``); one whose
  compensation rounds to 0 cents has reason ``rounds_to_zero_cents``.

:func:`compute_depeg` applies the rules to the input tables, compares each user's computed
total with ``users.depeg_comp_usd`` (the compensation the data says was paid) and reconciles
positions, users and cents; :func:`write_depeg_run` writes the run directory atomically.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from allocator import names as N
from allocator.errors import CheckFailedError, InputError

__all__ = [
    "DepegReconciliation",
    "DepegResult",
    "DepegRules",
    "ReferencePrice",
    "compute_depeg",
    "depeg_rules_from_dict",
    "load_depeg_rules",
    "positions_columns",
    "run_depeg",
    "users_columns",
    "validate_depeg_rules",
    "write_depeg_run",
]


#: Announced total of the real programme (USD), for calibration only.
ANNOUNCED_TOTAL_USD = 283_000_000.0


from allocator.settings.depeg import (  # noqa: E402 -- re-exported: the rules live in settings
    DepegRules,
    depeg_rules_from_dict,
    load_depeg_rules,
    rules_to_dict,
    validate_depeg_rules,
)

# --- positions.parquet ---
ASSET = "asset"
REFERENCE_PRICE = "reference_price"
COMPENSABLE_PRICE = "compensable_price"
FEE_USD = N.FEE_USD
COMPENSATION_USD = "compensation_usd"
COMPENSATION_CENTS = "compensation_cents"
LIQ_PRICE_USD = "liq_price_usd"
REASON = N.REASON

# --- users.parquet ---
POSITIONS = "positions"
COMPENSATED_POSITIONS = "compensated_positions"
PAID_USD = "paid_usd"
PAID_CENTS = "paid_cents"
DIFFERENCE_CENTS = "difference_cents"
STATUS = "status"

# --- files ---
POSITIONS_FILE = "positions.parquet"
USERS_FILE = "users.parquet"
MANIFEST_FILE = N.MANIFEST_FILE
RUN_FILES = (POSITIONS_FILE, USERS_FILE, MANIFEST_FILE)
MANIFEST_KIND = "depeg_compensation_run"
FORMAT_VERSION = 1

# --- why a position in the window gets nothing (checked in this order) ---
ZERO_NOT_DEPEG_ASSET = "position_not_in_depeg_asset"
ZERO_AT_OR_ABOVE_REFERENCE = "liquidated_at_or_above_reference"
ZERO_ROUNDS_TO_ZERO = "rounds_to_zero_cents"
ZERO_REASONS = (ZERO_NOT_DEPEG_ASSET, ZERO_AT_OR_ABOVE_REFERENCE, ZERO_ROUNDS_TO_ZERO)

# --- computed total against users.depeg_comp_usd ---
STATUS_MATCH = "match"  # both positive and equal to the cent
STATUS_NOTHING_DUE = "nothing_due"  # positions in the window, nothing computed, nothing paid
STATUS_NOT_PAID = "computed_not_paid"
STATUS_AMOUNT_DIFFERS = "amount_differs"
STATUS_PAID_WITHOUT = "paid_without_compensable_position"
STATUS_NO_USER_RECORD = "no_user_record"
STATUSES = (
    STATUS_MATCH,
    STATUS_NOTHING_DUE,
    STATUS_NOT_PAID,
    STATUS_AMOUNT_DIFFERS,
    STATUS_PAID_WITHOUT,
    STATUS_NO_USER_RECORD,
)

_UTC_US = pl.Datetime("us", "UTC")
_EVENT_COLUMNS: dict[str, pl.DataType] = {
    N.EVENT_ID: pl.Int64(),
    N.USER_ID: pl.Int64(),
    N.TS: _UTC_US,
    N.PRODUCT: pl.String(),
    N.SYMBOL: pl.String(),
    N.QUANTITY: pl.Float64(),
    N.LIQ_PRICE: pl.Float64(),
    N.LIQ_FEE: pl.Float64(),
    N.SETTLE_ASSET: pl.String(),
    N.COLLATERAL: pl.String(),
}
_PRICE_COLUMNS: dict[str, pl.DataType] = {
    N.ASSET: pl.String(),
    N.PRICE_TS: _UTC_US,
    N.PRICE_USD: pl.Float64(),
}
_USER_COLUMNS: dict[str, pl.DataType] = {N.USER_ID: pl.Int64(), N.DEPEG_COMP_USD: pl.Float64()}

# private columns
_QUOTE = "_quote"
_QUOTE_USD = "_quote_usd"
_SETTLE_USD = "_settle_usd"
_IN_WINDOW = "_in_window"
_KEY = "_key"
_BAR = "_bar"


# ----------------------------------------------------------------------------- results


@dataclass(frozen=True)
class ReferencePrice:
    """The reference price used for one asset: from the prices table (with its bar) or given."""

    asset: str
    price_usd: float | None  # None: no bar at or before reference_at and no override
    source: str  # "prices" | "override" | "missing"
    bar_ts: datetime | None
    floor_usd: float | None
    compensable_usd: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "asset": self.asset,
            "price_usd": self.price_usd,
            "source": self.source,
            "bar_ts": self.bar_ts.isoformat() if self.bar_ts else None,
            "floor_usd": self.floor_usd,
            "compensable_usd": self.compensable_usd,
        }


@dataclass(frozen=True)
class DepegReconciliation:
    """Counts and cents tying the events to positions.parquet and users.parquet.

    Positions: ``positions_in_window = positions_compensated + sum(positions_zero_by_reason)``.
    Cents: ``positions_cents = users_cents`` exactly. Users: every row of users.parquet has
    one status, ``users_rows = sum(users_by_status)``; the paid side,
    ``paid_cents`` (every positive ``depeg_comp_usd`` of the users table), equals the paid cents
    summed over users.parquet, since every paid user has a row there.
    ``outside_window_*`` describe positions in a depeg asset with depeg collateral outside the
    window (left to case review): how many, what the formula would pay, and how many could not
    be priced.
    """

    events_total: int
    positions_in_window: int
    positions_compensated: int
    positions_zero_by_reason: dict[str, int]
    positions_cents: int
    users_rows: int
    users_compensated: int
    users_cents: int
    users_by_status: dict[str, int]
    paid_users: int
    paid_cents: int
    paid_cents_in_users_file: int
    outside_window_positions: int
    outside_window_cents: int
    outside_window_unpriced: int

    def failures(self) -> list[str]:
        """Every identity of the class docstring that does not hold (empty when all hold)."""
        out: list[str] = []

        def same(label: str, lhs: int, rhs: int) -> None:
            if lhs != rhs:
                out.append(f"{label}: {lhs:,} != {rhs:,}")

        same(
            "positions in window = compensated + zero",
            self.positions_in_window,
            self.positions_compensated + sum(self.positions_zero_by_reason.values()),
        )
        same("cents over positions = cents over users", self.positions_cents, self.users_cents)
        same("users rows = sum over statuses", self.users_rows, sum(self.users_by_status.values()))
        same(
            "paid cents in users table = in users.parquet",
            self.paid_cents,
            self.paid_cents_in_users_file,
        )
        if tuple(self.positions_zero_by_reason) != ZERO_REASONS:
            out.append(f"zero reasons {tuple(self.positions_zero_by_reason)} != {ZERO_REASONS}")
        if tuple(self.users_by_status) != STATUSES:
            out.append(f"statuses {tuple(self.users_by_status)} != {STATUSES}")
        if min(self.positions_cents, self.users_cents, self.paid_cents) < 0:
            out.append("a total is negative")
        return out

    def check(self) -> None:
        """Raise :class:`~allocator.errors.CheckFailedError` unless every identity holds."""
        bad = self.failures()
        if bad:
            raise CheckFailedError(
                "Depeg compensation does not reconcile: " + "; ".join(bad) + ".",
                hint="duplicate event_id or user_id rows are the usual cause.",
            )

    @property
    def computed_minus_paid_cents(self) -> int:
        return self.users_cents - self.paid_cents

    def to_dict(self) -> dict[str, Any]:
        return {
            "events_total": self.events_total,
            "positions_in_window": self.positions_in_window,
            "positions_compensated": self.positions_compensated,
            "positions_zero_by_reason": dict(self.positions_zero_by_reason),
            "positions_cents": self.positions_cents,
            "users_rows": self.users_rows,
            "users_compensated": self.users_compensated,
            "users_cents": self.users_cents,
            "users_by_status": dict(self.users_by_status),
            "paid_users": self.paid_users,
            "paid_cents": self.paid_cents,
            "paid_cents_in_users_file": self.paid_cents_in_users_file,
            "computed_minus_paid_cents": self.computed_minus_paid_cents,
            "outside_window_positions": self.outside_window_positions,
            "outside_window_cents": self.outside_window_cents,
            "outside_window_unpriced": self.outside_window_unpriced,
            "ok": not self.failures(),
        }

    def lines(self) -> list[str]:
        """The reconciliation as aligned human-readable lines."""
        w = 44

        def usd(cents: int) -> str:
            return f"{cents / 100:,.2f}"

        out = [
            f"{'positions in window with depeg collateral':<{w}}{self.positions_in_window:>18,}",
            f"{'  compensated':<{w}}{self.positions_compensated:>18,}",
            f"{'  zero compensation':<{w}}{sum(self.positions_zero_by_reason.values()):>18,}",
        ]
        out += [f"{'    ' + r:<{w}}{n:>18,}" for r, n in self.positions_zero_by_reason.items()]
        out += [
            f"{'compensation over positions (USD)':<{w}}{usd(self.positions_cents):>18}",
            f"{'compensation over users (USD)':<{w}}{usd(self.users_cents):>18}",
            f"{'users compensated':<{w}}{self.users_compensated:>18,}",
            f"{'paid per users table (USD)':<{w}}{usd(self.paid_cents):>18}",
            f"{'  users paid':<{w}}{self.paid_users:>18,}",
            f"{'computed minus paid (USD)':<{w}}{usd(self.computed_minus_paid_cents):>18}",
            f"{'users compared':<{w}}{self.users_rows:>18,}",
        ]
        out += [f"{'  ' + s:<{w}}{n:>18,}" for s, n in self.users_by_status.items()]
        out += [
            f"{'outside window (case review)':<{w}}{self.outside_window_positions:>18,}",
            f"{'  formula would pay (USD)':<{w}}{usd(self.outside_window_cents):>18}",
            f"{'  not priced':<{w}}{self.outside_window_unpriced:>18,}",
        ]
        status = "ok" if not self.failures() else "FAILED: " + "; ".join(self.failures())
        out.append(f"{'reconciliation':<{w}}{status:>18}")
        return out


@dataclass(frozen=True, eq=False)
class DepegResult:
    """Positions (one row per position in the window), users (computed against paid) and totals.

    ``inputs`` maps each table stem to ``{"path", "sha256"}`` when the tables came from files.
    """

    rules: DepegRules
    positions: pl.DataFrame
    users: pl.DataFrame
    references: tuple[ReferencePrice, ...]
    reconciliation: DepegReconciliation
    inputs: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def total_cents(self) -> int:
        return self.reconciliation.positions_cents

    def summary(self) -> dict[str, Any]:
        """Totals, counts and calibration in one JSON-ready dict."""
        rec = self.reconciliation
        return {
            "total_cents": rec.positions_cents,
            "total_usd": rec.positions_cents / 100,
            "users_compensated": rec.users_compensated,
            "positions_compensated": rec.positions_compensated,
            "paid_cents": rec.paid_cents,
            "paid_users": rec.paid_users,
            "announced_total_usd": ANNOUNCED_TOTAL_USD,
            "share_of_announced": rec.positions_cents / 100 / ANNOUNCED_TOTAL_USD,
            "by_asset_cents": _by_asset(self.positions, self.rules),
            "reconciliation": rec.to_dict(),
        }


def positions_columns() -> list[str]:
    """Columns of positions.parquet, in order."""
    return [
        N.EVENT_ID,
        N.USER_ID,
        N.TS,
        ASSET,
        N.QUANTITY,
        N.LIQ_PRICE,
        REFERENCE_PRICE,
        COMPENSABLE_PRICE,
        FEE_USD,
        COMPENSATION_USD,
        COMPENSATION_CENTS,
        N.PRODUCT,
        N.SYMBOL,
        LIQ_PRICE_USD,
        REASON,
    ]


def users_columns() -> list[str]:
    """Columns of users.parquet, in order."""
    return [
        N.USER_ID,
        POSITIONS,
        COMPENSATED_POSITIONS,
        COMPENSATION_CENTS,
        COMPENSATION_USD,
        PAID_CENTS,
        PAID_USD,
        DIFFERENCE_CENTS,
        STATUS,
    ]


def _by_asset(positions: pl.DataFrame, rules: DepegRules) -> dict[str, int]:
    out = dict.fromkeys(rules.assets, 0)
    for asset, cents in positions.group_by(ASSET).agg(pl.col(COMPENSATION_CENTS).sum()).iter_rows():
        if asset is not None:
            out[asset] = int(cents)
    return out


# ----------------------------------------------------------------------------- computation


def _name(stem: str, source: Mapping[str, Any] | None) -> str:
    if source and stem in source:
        return f"{stem} file {source[stem]}"
    return f"{stem} table"


def _conform(
    frame: pl.LazyFrame | pl.DataFrame,
    columns: Mapping[str, pl.DataType],
    stem: str,
    source: Mapping[str, Any] | None,
) -> pl.LazyFrame:
    lf = frame.lazy()
    schema = lf.collect_schema()
    missing = [c for c in columns if c not in schema]
    if missing:
        raise InputError(
            f"The {_name(stem, source)} has no column {missing[0]!r} "
            f"(columns: {', '.join(schema.names())})."
        )
    exprs = []
    for col, dtype in columns.items():
        have = schema[col]
        if have == dtype:
            exprs.append(pl.col(col))
        elif isinstance(dtype, pl.Datetime) and isinstance(have, pl.Datetime) and have.time_zone:
            exprs.append(pl.col(col).dt.convert_time_zone("UTC").dt.cast_time_unit("us"))
        elif (have.is_numeric() and dtype.is_numeric()) or have == pl.Null:
            exprs.append(pl.col(col).cast(dtype))
        elif dtype == pl.String and isinstance(have, (pl.Categorical, pl.Enum)):
            exprs.append(pl.col(col).cast(pl.String))
        else:
            raise InputError(
                f"The {_name(stem, source)} has column {col!r} of type {have}; expected {dtype}."
            )
    return lf.select(exprs)


def _utc_lit(dt: datetime) -> pl.Expr:
    return pl.lit(dt.astimezone(UTC)).cast(_UTC_US)


def _base_asset(rules: DepegRules) -> tuple[pl.Expr, pl.Expr]:
    """The depeg asset a symbol trades (null if none) and its quote asset (upper case)."""
    sym = pl.col(N.SYMBOL).str.to_uppercase()
    asset: pl.Expr = pl.lit(None, dtype=pl.String)
    quote: pl.Expr = pl.lit(None, dtype=pl.String)
    # Longest names first, so that no asset is mistaken for a prefix of another.
    for name in sorted(rules.assets, key=lambda a: (-len(a), a)):
        hit = sym.str.starts_with(name.upper()) & (sym.str.len_chars() > len(name))
        asset = pl.when(hit).then(pl.lit(name)).otherwise(asset)
        quote = (
            pl.when(hit).then(sym.str.slice(len(name)).str.split("_").list.first()).otherwise(quote)
        )
    return asset, quote


def _asof_usd(frame: pl.DataFrame, key: pl.Expr, prices: pl.DataFrame, out: str) -> pl.DataFrame:
    """``frame`` with ``out``: the USD price of asset ``key`` at the latest bar at or before ts."""
    left = frame.with_columns(key.alias(_KEY)).sort(N.TS)
    right = prices.select(
        pl.col(N.ASSET).str.to_uppercase().alias(_KEY),
        pl.col(N.PRICE_TS).alias(_BAR),
        pl.col(N.PRICE_USD).alias(out),
    ).sort(_BAR)
    joined = left.join_asof(
        right, left_on=N.TS, right_on=_BAR, by=_KEY, strategy="backward", check_sortedness=False
    )
    # A quote of plain USD needs no bar.
    joined = joined.with_columns(
        pl.when(pl.col(_KEY) == "USD").then(pl.lit(1.0)).otherwise(pl.col(out)).alias(out)
    )
    return joined.drop(_KEY, _BAR)


def _references(prices: pl.DataFrame, rules: DepegRules) -> tuple[ReferencePrice, ...]:
    overrides = {a.upper(): float(p) for a, p in rules.reference_prices}
    floors = {a.upper(): float(p) for a, p in rules.floors}
    at = rules.reference_at.astimezone(UTC)
    out = []
    for asset in rules.assets:
        key = asset.upper()
        floor = floors.get(key)
        if key in overrides:
            price, source, bar = overrides[key], "override", None
        else:
            hit = (
                prices.filter(
                    (pl.col(N.ASSET).str.to_uppercase() == key) & (pl.col(N.PRICE_TS) <= at)
                )
                .sort(N.PRICE_TS)
                .tail(1)
            )
            if hit.height:
                price, source, bar = (
                    float(hit.item(0, N.PRICE_USD)),
                    "prices",
                    hit.item(0, N.PRICE_TS),
                )
            else:
                price, source, bar = None, "missing", None
        comp = None if price is None else max(price, floor if floor is not None else 0.0)
        out.append(ReferencePrice(asset, price, source, bar, floor, comp))
    return tuple(out)


def _check_price_names(prices: pl.DataFrame, source: Mapping[str, Any] | None) -> None:
    names = prices.select(pl.col(N.ASSET).unique()).to_series()
    clash = (
        names.to_frame()
        .group_by(pl.col(N.ASSET).str.to_uppercase().alias("u"))
        .agg(pl.col(N.ASSET))
        .filter(pl.col(N.ASSET).list.len() > 1)
    )
    if clash.height:
        both = sorted(clash.item(0, N.ASSET))
        raise InputError(
            f"The {_name(N.PRICES_FILE, source)}, column {N.ASSET!r}: assets {both[0]!r} and "
            f"{both[1]!r} differ only in case; symbols and collateral are matched to assets "
            f"case-insensitively, so which one is meant is ambiguous."
        )


def _missing_price_error(
    frame: pl.DataFrame, col: str, asset_col: str, what: str, source: Mapping[str, Any] | None
) -> InputError:
    row = frame.filter(pl.col(col).is_null()).sort(N.TS, N.EVENT_ID).row(0, named=True)
    return InputError(
        f"The {_name(N.PRICES_FILE, source)} has no USD price for asset {row[asset_col]!r} at or "
        f"before {row[N.TS]}, needed to convert the {what} of a depeg position in the "
        f"{_name(N.EVENTS_FILE, source)}: event_id={row[N.EVENT_ID]}, user_id={row[N.USER_ID]}, "
        f"symbol={row[N.SYMBOL]!r}, {N.LIQ_PRICE}={row[N.LIQ_PRICE]}, {N.LIQ_FEE}={row[N.LIQ_FEE]}, "
        f"{N.SETTLE_ASSET}={row[N.SETTLE_ASSET]!r}. Add bars for that asset."
    )


def _cents_to_usd(cents: pl.Series, name: str) -> pl.Series:
    # NumPy divides each element (correctly rounded); Polars may multiply by the reciprocal.
    values = cents.cast(pl.Float64).to_numpy() / 100.0
    return pl.Series(name, values, dtype=pl.Float64)


def compute_depeg(
    events: pl.LazyFrame | pl.DataFrame,
    prices: pl.LazyFrame | pl.DataFrame,
    users: pl.LazyFrame | pl.DataFrame,
    rules: DepegRules | None = None,
    *,
    source: Mapping[str, Any] | None = None,
) -> DepegResult:
    """Apply the depeg compensation rule (module docstring) to the input tables.

    Parameters
    ----------
    events, prices, users
        The liquidations, prices and users tables (columns of :mod:`allocator.names`), lazy or
        eager; ``event_id`` and ``user_id`` are assumed unique (``allocator.data.inputs`` checks it).
    rules
        The rule's parameters; :class:`DepegRules` defaults when omitted.
    source
        Optional table stem -> file path, used only to name files in error messages.

    Returns
    -------
    DepegResult
        ``positions``: every position in the window on a covered product whose collateral lists
        a depeg asset, sorted by ``event_id`` (columns :func:`positions_columns`);
        ``users``: every user with such a position or a positive ``depeg_comp_usd``, sorted by
        ``user_id`` (columns :func:`users_columns`); the reference prices used; the
        reconciliation.

    Raises
    ------
    ScenarioError
        Inconsistent rules.
    InputError
        A missing column, or a position in the window whose quote, settle or reference price
        cannot be found.
    """
    rules = validate_depeg_rules(rules or DepegRules())
    ev = _conform(events, _EVENT_COLUMNS, N.EVENTS_FILE, source)
    px = _conform(prices, _PRICE_COLUMNS, N.PRICES_FILE, source).collect()
    usr = _conform(users, _USER_COLUMNS, N.USERS_FILE, source)
    _check_price_names(px, source)
    upper = [a.upper() for a in rules.assets]

    ts = pl.col(N.TS)
    posted = (
        pl.col(N.COLLATERAL)
        .str.to_uppercase()
        .str.split(N.COLLATERAL_SEP)
        .list.eval(pl.element().str.strip_chars().is_in(upper))
        .list.any()
        .fill_null(False)
    )
    in_window = (ts >= _utc_lit(rules.window_start)) & (ts < _utc_lit(rules.window_end))
    asset, quote = _base_asset(rules)
    # One pass over the events keeps the few rows that matter: covered products with depeg
    # collateral, inside the window or in a depeg asset outside it (the review cases).
    base = (
        ev.filter(pl.col(N.PRODUCT).is_in(list(rules.products)) & posted)
        .with_columns(asset.alias(ASSET), quote.alias(_QUOTE), in_window.alias(_IN_WINDOW))
        .filter(pl.col(_IN_WINDOW) | pl.col(ASSET).is_not_null())
        .collect()
    )
    n_events = int(ev.select(pl.len()).collect().item())
    refs = _references(px, rules)
    ref_price = {r.asset: r.price_usd for r in refs}
    comp_price = {r.asset: r.compensable_usd for r in refs}

    depeg = base.filter(pl.col(ASSET).is_not_null())
    priced = _asof_usd(depeg, pl.col(_QUOTE), px, _QUOTE_USD)
    priced = _asof_usd(priced, pl.col(N.SETTLE_ASSET).str.to_uppercase(), px, _SETTLE_USD)
    priced = priced.with_columns(
        pl.col(ASSET)
        .replace_strict(ref_price, default=None, return_dtype=pl.Float64)
        .alias(REFERENCE_PRICE),
        pl.col(ASSET)
        .replace_strict(comp_price, default=None, return_dtype=pl.Float64)
        .alias(COMPENSABLE_PRICE),
    )
    inside = priced.filter(pl.col(_IN_WINDOW))
    for col, key, what in (
        (_QUOTE_USD, _QUOTE, "liquidation price"),
        (_SETTLE_USD, N.SETTLE_ASSET, "liquidation fee"),
    ):
        if inside[col].null_count():
            raise _missing_price_error(inside, col, key, what, source)
    if inside[REFERENCE_PRICE].null_count():
        row = inside.filter(pl.col(REFERENCE_PRICE).is_null()).sort(N.EVENT_ID).row(0, named=True)
        raise InputError(
            f"The {_name(N.PRICES_FILE, source)} has no USD price for asset {row[ASSET]!r} at or "
            f"before the reference time {rules.reference_at.isoformat()}, needed for "
            f"{inside.filter(pl.col(ASSET) == row[ASSET]).height} position(s) in the window, e.g. "
            f"event_id={row[N.EVENT_ID]} (symbol {row[N.SYMBOL]!r}).",
            hint=f"add bars for {row[ASSET]} or give its reference price "
            f"(--reference {row[ASSET]}=PRICE, or [depeg.reference_prices] in a rules file).",
        )

    liq_usd = pl.col(N.LIQ_PRICE) * pl.col(_QUOTE_USD)
    fee_usd = pl.col(N.LIQ_FEE) * pl.col(_SETTLE_USD)
    cp = pl.col(COMPENSABLE_PRICE)
    harmed = pl.col(LIQ_PRICE_USD) < cp
    gap = (cp - pl.col(LIQ_PRICE_USD)) * pl.col(N.QUANTITY)
    comp = gap + pl.col(FEE_USD) if rules.refund_fees else gap
    valued = (
        priced.with_columns(liq_usd.alias(LIQ_PRICE_USD), fee_usd.alias(FEE_USD))
        .with_columns(
            pl.when(pl.any_horizontal(pl.col(LIQ_PRICE_USD, FEE_USD, COMPENSABLE_PRICE).is_null()))
            .then(None)
            .when(harmed)
            .then(comp)
            .otherwise(0.0)
            .alias(COMPENSATION_USD)
        )
        .with_columns(
            (pl.col(COMPENSATION_USD) * 100.0 + 0.5)
            .floor()
            .cast(pl.Int64)
            .alias(COMPENSATION_CENTS)
        )
    )
    outside = valued.filter(~pl.col(_IN_WINDOW))
    out_priced = outside.filter(pl.col(COMPENSATION_CENTS).is_not_null())

    # The window's population: depeg-asset positions (valued) and the other positions (zero).
    others = base.filter(pl.col(_IN_WINDOW) & pl.col(ASSET).is_null())
    null_f = pl.lit(None, dtype=pl.Float64)
    others = others.with_columns(
        null_f.alias(REFERENCE_PRICE),
        null_f.alias(COMPENSABLE_PRICE),
        null_f.alias(FEE_USD),
        pl.lit(0.0).alias(COMPENSATION_USD),
        pl.lit(0, dtype=pl.Int64).alias(COMPENSATION_CENTS),
        null_f.alias(LIQ_PRICE_USD),
    )
    reason = (
        pl.when(pl.col(ASSET).is_null())
        .then(pl.lit(ZERO_NOT_DEPEG_ASSET))
        .when(~(pl.col(LIQ_PRICE_USD) < pl.col(COMPENSABLE_PRICE)))
        .then(pl.lit(ZERO_AT_OR_ABOVE_REFERENCE))
        .when(pl.col(COMPENSATION_CENTS) == 0)
        .then(pl.lit(ZERO_ROUNDS_TO_ZERO))
        .otherwise(pl.lit(None, dtype=pl.String))
    )
    cols = positions_columns()[:-1]
    positions = (
        pl.concat([valued.filter(pl.col(_IN_WINDOW)).select(cols), others.select(cols)])
        .with_columns(reason.alias(REASON))
        .sort(N.EVENT_ID)
        .rechunk()
    )

    users_df, paid_total = _users_table(positions, usr)
    rec = _reconcile(positions, users_df, paid_total, n_events, outside, out_priced)
    return DepegResult(rules, positions, users_df, refs, rec)


def _users_table(
    positions: pl.DataFrame, users: pl.LazyFrame
) -> tuple[pl.DataFrame, dict[str, int]]:
    """Per user: computed cents against paid cents, with a status; and the paid totals."""
    computed = positions.group_by(N.USER_ID).agg(
        pl.len().cast(pl.Int64).alias(POSITIONS),
        (pl.col(COMPENSATION_CENTS) > 0).sum().cast(pl.Int64).alias(COMPENSATED_POSITIONS),
        pl.col(COMPENSATION_CENTS).sum().cast(pl.Int64).alias(COMPENSATION_CENTS),
    )
    paid_cents = (pl.col(N.DEPEG_COMP_USD) * 100.0).round().cast(pl.Int64)
    ids = computed[N.USER_ID].implode()
    relevant = (
        users.filter((pl.col(N.DEPEG_COMP_USD) > 0) | pl.col(N.USER_ID).is_in(ids))
        .select(
            N.USER_ID,
            pl.col(N.DEPEG_COMP_USD).alias(PAID_USD),
            paid_cents.alias(PAID_CENTS),
            pl.lit(True).alias("_known"),
        )
        .collect()
    )
    paid_total = (
        users.filter(pl.col(N.DEPEG_COMP_USD) > 0)
        .select(
            pl.len().cast(pl.Int64).alias("users"), paid_cents.sum().cast(pl.Int64).alias("cents")
        )
        .collect()
        .row(0, named=True)
    )
    table = (
        computed.join(relevant, on=N.USER_ID, how="full", coalesce=True)
        .with_columns(
            pl.col(POSITIONS).fill_null(0),
            pl.col(COMPENSATED_POSITIONS).fill_null(0),
            pl.col(COMPENSATION_CENTS).fill_null(0),
            pl.col("_known").fill_null(False),
        )
        .sort(N.USER_ID)
    )
    c, p = pl.col(COMPENSATION_CENTS), pl.col(PAID_CENTS)
    status = (
        pl.when(~pl.col("_known"))
        .then(pl.lit(STATUS_NO_USER_RECORD))
        .when((c == 0) & (p == 0))
        .then(pl.lit(STATUS_NOTHING_DUE))
        .when(c == p)
        .then(pl.lit(STATUS_MATCH))
        .when(p == 0)
        .then(pl.lit(STATUS_NOT_PAID))
        .when(c == 0)
        .then(pl.lit(STATUS_PAID_WITHOUT))
        .otherwise(pl.lit(STATUS_AMOUNT_DIFFERS))
    )
    table = (
        table.with_columns(
            _cents_to_usd(table[COMPENSATION_CENTS], COMPENSATION_USD),
            (c - p).alias(DIFFERENCE_CENTS),
            status.alias(STATUS),
        )
        .select(users_columns())
        .rechunk()
    )
    return table, {"users": int(paid_total["users"] or 0), "cents": int(paid_total["cents"] or 0)}


def _reconcile(
    positions: pl.DataFrame,
    users: pl.DataFrame,
    paid: Mapping[str, int],
    n_events: int,
    outside: pl.DataFrame,
    out_priced: pl.DataFrame,
) -> DepegReconciliation:
    zero = dict.fromkeys(ZERO_REASONS, 0)
    for r, k in positions.group_by(REASON).len().iter_rows():
        if r is not None:
            zero[r] = int(k)
    statuses = dict.fromkeys(STATUSES, 0)
    for s, k in users.group_by(STATUS).len().iter_rows():
        statuses[s] = int(k)
    return DepegReconciliation(
        events_total=n_events,
        positions_in_window=positions.height,
        positions_compensated=int(positions[REASON].is_null().sum()),
        positions_zero_by_reason=zero,
        positions_cents=int(positions[COMPENSATION_CENTS].sum()),
        users_rows=users.height,
        users_compensated=int((users[COMPENSATION_CENTS] > 0).sum()),
        users_cents=int(users[COMPENSATION_CENTS].sum()),
        users_by_status=statuses,
        paid_users=int(paid["users"]),
        paid_cents=int(paid["cents"]),
        paid_cents_in_users_file=int(users.filter(pl.col(PAID_CENTS) > 0)[PAID_CENTS].sum()),
        outside_window_positions=outside.height,
        outside_window_cents=int(out_priced[COMPENSATION_CENTS].sum()),
        outside_window_unpriced=outside.height - out_priced.height,
    )


# ----------------------------------------------------------------------------- files


def run_depeg(data_dir: str | Path, rules: DepegRules | None = None) -> DepegResult:
    """Load and validate a data directory, then :func:`compute_depeg`; records input hashes."""
    from allocator.data.inputs import file_sha256, load_inputs

    inputs = load_inputs(Path(data_dir), validate=True)
    source = {k: str(v) for k, v in inputs.paths.items()}
    result = compute_depeg(inputs.events, inputs.prices, inputs.users, rules, source=source)
    used = (N.EVENTS_FILE, N.PRICES_FILE, N.USERS_FILE)
    hashes = {
        stem: {
            "path": str(Path(inputs.paths[stem]).resolve()),
            "sha256": file_sha256(inputs.paths[stem]),
        }
        for stem in used
    }
    return replace(result, inputs=hashes)


def manifest_dict(result: DepegResult) -> dict[str, Any]:
    """The run's manifest (``outputs`` hashes are added by the writer)."""
    from allocator.runs.rundir import versions

    return {
        "kind": MANIFEST_KIND,
        "format_version": FORMAT_VERSION,
        "rules": rules_to_dict(result.rules),
        "reference_prices": [r.to_dict() for r in result.references],
        "inputs": result.inputs,
        "versions": versions(),
        "totals": result.summary(),
        "counts": {
            "positions_in_window": result.reconciliation.positions_in_window,
            "positions_compensated": result.reconciliation.positions_compensated,
            "users_compensated": result.reconciliation.users_compensated,
            "users_by_status": dict(result.reconciliation.users_by_status),
        },
    }


def _parquet(df: pl.DataFrame, path: Path) -> None:
    df.write_parquet(
        path, compression="zstd", compression_level=3, statistics=True, row_group_size=256 * 1024
    )


def _manifest_kind(path: Path) -> str | None:
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("kind")
    except (OSError, ValueError, AttributeError):
        return None


def write_depeg_run(result: DepegResult, out_dir: str | Path) -> Path:
    """Write positions.parquet, users.parquet and manifest.json to ``out_dir`` atomically.

    Everything is written into a hidden sibling directory first and renamed into place; an
    existing ``out_dir`` is replaced only when it is empty or an earlier depeg run. The bytes
    depend only on the result, so a rerun on the same inputs writes identical files.
    """
    from allocator.data.inputs import file_sha256
    from allocator.runs.rundir import dumps_manifest

    out = Path(os.path.abspath(out_dir))
    if out.exists():
        if not out.is_dir():
            raise InputError(f"--out {out} exists and is not a directory.")
        if any(out.iterdir()) and _manifest_kind(out / MANIFEST_FILE) != MANIFEST_KIND:
            raise InputError(
                f"--out {out} is a non-empty directory that is not a depeg run; "
                "refusing to replace it.",
                hint="choose a new or empty directory.",
            )
    man = manifest_dict(result)
    dumps_manifest(man)  # fail on an unserialisable manifest before touching the disk
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        _parquet(result.positions, tmp / POSITIONS_FILE)
        _parquet(result.users, tmp / USERS_FILE)
        man["outputs"] = {name: file_sha256(tmp / name) for name in (POSITIONS_FILE, USERS_FILE)}
        (tmp / MANIFEST_FILE).write_text(dumps_manifest(man), encoding="utf-8", newline="\n")
        for name in RUN_FILES:
            with open(tmp / name, "rb") as fh:
                os.fsync(fh.fileno())
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
