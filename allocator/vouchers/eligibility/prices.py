"""USD prices of the counted events: a dense price grid gathered by index, or an as-of join."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import polars as pl

from allocator import names as N
from allocator.data.conform import table_name
from allocator.errors import InputError
from allocator.settings.models import EligibilityRules
from allocator.vouchers.eligibility.losses import MAX_LOSS_USD
from allocator.vouchers.eligibility.schema import COL_EVENT_LOSS, COL_PRICE, UTC_US

__all__ = ["MAX_GRID_CELLS", "check_prices", "priced_events", "raise_bad_event", "utc"]

#: Largest dense price grid (assets x grid cells) before falling back to an as-of join.
MAX_GRID_CELLS = 20_000_000

#: Candidate grid steps in microseconds, coarsest first: minute, second, millisecond, microsecond.
_GRID_STEPS_US = (60_000_000, 1_000_000, 1_000, 1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

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


def utc(dt: datetime) -> datetime:
    return dt.astimezone(UTC)


def _epoch_us(dt: datetime) -> int:
    delta = utc(dt) - _EPOCH
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
            ((pl.col("_cell") + first) * step).cast(UTC_US).alias("_at"),
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


def check_prices(prices: pl.DataFrame, source: Mapping[str, Any] | None) -> None:
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
            f"The {table_name(N.PRICES_FILE, source)} has a bar with a missing or non-positive "
            f"{N.PRICE_USD!r}, {N.ASSET!r} or {N.PRICE_TS!r}: {row}.",
        )
    dup = prices.filter(pl.struct(N.ASSET, N.PRICE_TS).is_duplicated())
    if dup.height:
        row = dup.sort(N.ASSET, N.PRICE_TS).row(0, named=True)
        raise InputError(
            f"The {table_name(N.PRICES_FILE, source)} has two bars for asset {row[N.ASSET]!r} at "
            f"{N.PRICE_TS} {row[N.PRICE_TS]}; each (asset, ts) must appear once.",
        )


def priced_events(
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
        bars = prices.lazy().rename({N.PRICE_TS: "_bar", N.PRICE_USD: COL_PRICE}).sort("_bar")
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
            .with_columns(pl.when(counted).then(pl.col(COL_PRICE)).alias(COL_PRICE))
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
    return events.with_columns(pl.lit(grid.prices).gather(index).alias(COL_PRICE))


def raise_bad_event(
    priced: pl.LazyFrame, counted: pl.Expr, prices: pl.DataFrame, source: Mapping[str, Any] | None
) -> None:
    """Raise for the first counted event whose USD loss could not be computed."""

    def example(bad: pl.Expr) -> dict[str, Any] | None:
        rows = priced.filter(counted & bad).sort(N.TS, N.EVENT_ID).head(1).collect()
        return rows.row(0, named=True) if rows.height else None

    def where(row: Mapping[str, Any]) -> str:
        return (
            f"Example event in the {table_name(N.EVENTS_FILE, source)}: "
            f"{N.EVENT_ID}={row[N.EVENT_ID]}, {N.USER_ID}={row[N.USER_ID]}, {N.TS}={row[N.TS]}, "
            f"{N.PRODUCT}={row[N.PRODUCT]}, {N.SETTLE_ASSET}={row[N.SETTLE_ASSET]}, "
            f"{N.REALISED_LOSS}={row[N.REALISED_LOSS]}, {N.LIQ_FEE}={row[N.LIQ_FEE]}."
        )

    row = example(pl.col(COL_PRICE).is_null())
    if row is not None:
        asset = row[N.SETTLE_ASSET]
        known = prices.filter(pl.col(N.ASSET) == asset)
        if known.height:
            why = f"its first bar is at {known[N.PRICE_TS].min()!s}, after the event"
        else:
            why = "it has no bar at all"
        raise InputError(
            f"No USD price for settlement asset {asset!r} at or before a counted event: the "
            f"{table_name(N.PRICES_FILE, source)} has no {N.PRICE_USD!r} bar for {asset!r} "
            f"with {N.PRICE_TS} <= the event time ({why}). " + where(row),
            hint="add bars for that asset from before the window start.",
        )
    row = example(pl.col(COL_EVENT_LOSS).is_null())
    raise InputError(
        f"A counted event has a USD loss that is not a finite number below {MAX_LOSS_USD:.3g}: "
        f"{N.REALISED_LOSS} and {N.LIQ_FEE} times the price must be finite and in range. "
        + (where(row) if row is not None else "")
    )
