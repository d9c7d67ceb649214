"""Loss aggregation over the events: per-event nano-dollar losses summed exactly per user."""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from allocator import names as N
from allocator.settings.models import EligibilityRules
from allocator.vouchers.eligibility.rules import products
from allocator.vouchers.eligibility.schema import (
    COL_EVENT_FEE,
    COL_EVENT_LOSS,
    COL_FEE_NANO,
    COL_GROSS_NANO,
    COL_N_COVERED,
    COL_N_IN_WINDOW,
    COL_N_NO_PRICE,
    COL_N_TOTAL,
    COL_PACKED,
    COL_PRICE,
)

__all__ = [
    "FIELD",
    "MAX_LOSS_USD",
    "NANO_PER_USD",
    "aggregate_per_user",
    "decode_per_user",
    "event_loss",
    "nano_to_usd",
]

#: Event losses are rounded to whole nano-dollars and summed exactly as Int128 (module doc).
NANO_PER_USD = 1_000_000_000
#: Width of one packed per-user count (see ``aggregate_per_user``); also the most events read.
FIELD = 1 << 31
#: Largest USD amount of one event: a user's Int128 nano-dollar sum over up to :data:`FIELD`
#: events of this size cannot overflow (with the range of one event alone, two huge events of
#: one user wrapped around to a negative loss and the user was excluded as below the minimum).
MAX_LOSS_USD = 1e19
assert MAX_LOSS_USD * NANO_PER_USD * FIELD < 2**127 / 4  # room to spare for float rounding


def nano(usd: pl.Expr) -> pl.Expr:
    """USD as whole nano-dollars (Int128): ``usd * 1e9`` in floats, rounded half to even; null
    beyond :data:`MAX_LOSS_USD` in size (or not finite)."""
    return (
        pl.when(usd.abs() <= MAX_LOSS_USD)
        .then((usd * NANO_PER_USD).round().cast(pl.Int128, strict=False))
        .otherwise(None)
    )


def nano_to_usd(nano: pl.Series) -> pl.Series:
    # NumPy divides each element (correctly rounded); Polars multiplies by the reciprocal when
    # dividing a column by a scalar, which can miss by one unit in the last place (6e10 / 1e9).
    usd = nano.cast(pl.Float64).to_numpy() / NANO_PER_USD
    return pl.Series(nano.name, usd, dtype=pl.Float64)


def _field(k: int) -> pl.Expr:
    return pl.lit(FIELD**k, dtype=pl.Int128)


def event_loss(rules: EligibilityRules) -> pl.Expr:
    """Counted loss of one event in nano-dollars (null when not counted, unpriced or invalid)."""
    amount = pl.col(N.REALISED_LOSS)
    if rules.include_fees:
        amount = amount + pl.col(N.LIQ_FEE)
    return nano(amount * pl.col(COL_PRICE)).alias(COL_EVENT_LOSS)


def aggregate_per_user(
    priced: pl.LazyFrame,
    covered: pl.Expr,
    in_window: pl.Expr,
    counted: pl.Expr,
    rules: EligibilityRules,
    sums: Sequence[str] = (),
) -> pl.LazyFrame:
    """One row per liquidated user: event counts, nano-USD losses, first/last counted event.

    Aggregations dominate the cost (each one scatters ten million rows into two million
    groups), so the four per-user counts share one Int128 sum of 31-bit fields, decoded in
    :func:`decode_per_user`; no field can carry into the next while the events table has fewer than
    :math:`2^{31}` rows. ``sums``: further columns of ``priced`` summed per user as they are
    (the folded input checks).
    """
    price = pl.col(COL_PRICE)
    loss = pl.col(COL_EVENT_LOSS)  # null unless counted and priced
    bad = counted & loss.is_null()
    packed = (
        covered.cast(pl.Int128)
        + in_window.cast(pl.Int128) * _field(1)
        + counted.cast(pl.Int128) * _field(2)
        + bad.cast(pl.Int128) * _field(3)
    )
    aggs = [
        pl.len().cast(pl.Int64).alias(COL_N_TOTAL),
        packed.sum().alias(COL_PACKED),
        *(
            pl.when(pl.col(N.PRODUCT) == p).then(loss).sum().alias(nano_col(p))
            for p in products(rules)
        ),
        pl.when(counted).then(pl.col(N.TS)).min().alias(N.FIRST_EVENT_TS),
        pl.when(counted).then(pl.col(N.TS)).max().alias(N.LAST_EVENT_TS),
        *(pl.col(c).sum() for c in sums),
    ]
    events = priced.with_columns(event_loss(rules))
    if rules.include_fees:
        events = events.with_columns(nano(pl.col(N.LIQ_FEE) * price).alias(COL_EVENT_FEE))
        aggs.append(pl.col(COL_EVENT_FEE).sum().alias(COL_FEE_NANO))
    return events.group_by(N.USER_ID).agg(aggs)


def decode_per_user(per_user: pl.DataFrame, rules: EligibilityRules) -> pl.DataFrame:
    """Unpack the counts and turn nano-dollar sums into Float64 USD columns."""
    covered = products(rules)
    packed = pl.col(COL_PACKED)
    field = pl.lit(FIELD, dtype=pl.Int128)
    df = per_user.with_columns(
        (packed % field).cast(pl.Int64).alias(COL_N_COVERED),
        ((packed // _field(1)) % field).cast(pl.Int64).alias(COL_N_IN_WINDOW),
        ((packed // _field(2)) % field).cast(pl.Int64).alias(N.N_EVENTS),
        (packed // _field(3)).cast(pl.Int64).alias(COL_N_NO_PRICE),
        # Counted events fall in exactly one covered product: the gross loss is the exact sum.
        pl.sum_horizontal([nano_col(p) for p in covered]).alias(COL_GROSS_NANO),
    ).drop(COL_PACKED)
    if COL_FEE_NANO not in df.columns:
        df = df.with_columns(pl.lit(0, dtype=pl.Int128).alias(COL_FEE_NANO))
    return df.with_columns(
        nano_to_usd(df[COL_GROSS_NANO]).alias(N.GROSS_LOSS_USD),
        nano_to_usd(df[COL_FEE_NANO]).alias(N.FEE_USD),
        *(nano_to_usd(df[nano_col(p)]).alias(N.product_loss_column(p)) for p in covered),
    )


def nano_col(product: str) -> str:
    return f"_nano_{product}"
