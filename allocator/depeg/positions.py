r"""Depeg compensation per position: USDe, BNSOL and WBETH collateral force-sold while the
venue's price broke.

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

:func:`value_positions` applies the rule to every position; per-user totals and their
reconciliation with what was paid are in :mod:`allocator.depeg.reconciliation`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import polars as pl

from allocator import names as N
from allocator.data.conform import table_name
from allocator.errors import InputError
from allocator.kernel.money import CENTS_PER_USD
from allocator.settings.depeg import DepegRules

# --- positions.parquet ---
ASSET = "asset"
REFERENCE_PRICE = "reference_price"
COMPENSABLE_PRICE = "compensable_price"
FEE_USD = N.FEE_USD
COMPENSATION_USD = "compensation_usd"
COMPENSATION_CENTS = "compensation_cents"
LIQ_PRICE_USD = "liq_price_usd"
REASON = N.REASON

# --- why a position in the window gets nothing (checked in this order) ---
ZERO_NOT_DEPEG_ASSET = "position_not_in_depeg_asset"
ZERO_AT_OR_ABOVE_REFERENCE = "liquidated_at_or_above_reference"
ZERO_ROUNDS_TO_ZERO = "rounds_to_zero_cents"
ZERO_REASONS = (ZERO_NOT_DEPEG_ASSET, ZERO_AT_OR_ABOVE_REFERENCE, ZERO_ROUNDS_TO_ZERO)

_UTC_US = pl.Datetime("us", "UTC")
EVENT_COLUMNS: dict[str, pl.DataType] = {
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
PRICE_COLUMNS: dict[str, pl.DataType] = {
    N.ASSET: pl.String(),
    N.PRICE_TS: _UTC_US,
    N.PRICE_USD: pl.Float64(),
}

# private columns
_QUOTE = "_quote"
_QUOTE_USD = "_quote_usd"
_SETTLE_USD = "_settle_usd"
_IN_WINDOW = "_in_window"
_KEY = "_key"
_BAR = "_bar"


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


@dataclass(frozen=True, eq=False)
class ValuedPositions:
    """The positions of the window valued by the rule, and the review cases outside it.

    ``positions`` has the columns of :func:`positions_columns`, sorted by ``event_id``;
    ``outside_window`` holds the depeg-asset positions with depeg collateral outside the window
    (valued by the same formula, cents null where a price is missing) and ``outside_priced``
    those of them that could be priced; ``events_total`` counts every event of the table.
    """

    positions: pl.DataFrame
    references: tuple[ReferencePrice, ...]
    events_total: int
    outside_window: pl.DataFrame
    outside_priced: pl.DataFrame


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


def check_price_names(prices: pl.DataFrame, source: Mapping[str, Any] | None) -> None:
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
            f"The {table_name(N.PRICES_FILE, source)}, column {N.ASSET!r}: assets {both[0]!r} and "
            f"{both[1]!r} differ only in case; symbols and collateral are matched to assets "
            f"case-insensitively, so which one is meant is ambiguous."
        )


def _missing_price_error(
    frame: pl.DataFrame, col: str, asset_col: str, what: str, source: Mapping[str, Any] | None
) -> InputError:
    row = frame.filter(pl.col(col).is_null()).sort(N.TS, N.EVENT_ID).row(0, named=True)
    return InputError(
        f"The {table_name(N.PRICES_FILE, source)} has no USD price for asset {row[asset_col]!r} at or "
        f"before {row[N.TS]}, needed to convert the {what} of a depeg position in the "
        f"{table_name(N.EVENTS_FILE, source)}: event_id={row[N.EVENT_ID]}, user_id={row[N.USER_ID]}, "
        f"symbol={row[N.SYMBOL]!r}, {N.LIQ_PRICE}={row[N.LIQ_PRICE]}, {N.LIQ_FEE}={row[N.LIQ_FEE]}, "
        f"{N.SETTLE_ASSET}={row[N.SETTLE_ASSET]!r}. Add bars for that asset."
    )


def value_positions(
    ev: pl.LazyFrame,
    px: pl.DataFrame,
    rules: DepegRules,
    source: Mapping[str, Any] | None = None,
) -> ValuedPositions:
    """Every position in the window on a covered product whose collateral lists a depeg asset,
    with its compensation :math:`C_e` in cents or the reason it gets nothing (module docstring).

    Parameters
    ----------
    ev, px
        The events (lazy) and prices (eager) tables, already conformed to
        :data:`EVENT_COLUMNS` and :data:`PRICE_COLUMNS` by :func:`conform`.
    rules
        Validated rules.
    source
        Optional table stem -> file path, used only to name files in error messages.

    Raises
    ------
    InputError
        A position in the window whose quote, settle or reference price cannot be found.
    """
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
            f"The {table_name(N.PRICES_FILE, source)} has no USD price for asset {row[ASSET]!r} at or "
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
            (pl.col(COMPENSATION_USD) * float(CENTS_PER_USD) + 0.5)
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
    return ValuedPositions(positions, refs, n_events, outside, out_priced)
