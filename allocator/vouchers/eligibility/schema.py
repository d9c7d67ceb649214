"""The columns eligibility reads (input contracts) and writes (the two output tables), and the
private per-user columns of its queries."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import polars as pl

from allocator import names as N
from allocator.errors import InputError
from allocator.settings.models import EligibilityRules
from allocator.vouchers.eligibility.rules import has_phase_in, products

__all__ = ["conform", "eligible_columns", "excluded_columns", "table_name"]

US_PER_DAY = 86_400_000_000
UTC_US: pl.DataType = pl.Datetime("us", "UTC")

EVENT_COLUMNS: dict[str, pl.DataType] = {
    N.EVENT_ID: pl.Int64(),
    N.USER_ID: pl.Int64(),
    N.TS: UTC_US,
    N.PRODUCT: pl.String(),
    N.REALISED_LOSS: pl.Float64(),
    N.LIQ_FEE: pl.Float64(),
    N.SETTLE_ASSET: pl.String(),
}
PRICE_COLUMNS: dict[str, pl.DataType] = {
    N.ASSET: pl.String(),
    N.PRICE_TS: UTC_US,
    N.PRICE_USD: pl.Float64(),
}
SNAPSHOT_COLUMNS: dict[str, pl.DataType] = {N.USER_ID: pl.Int64(), N.NET_ASSETS_USD: pl.Float64()}
USER_COLUMNS: dict[str, pl.DataType] = {
    N.USER_ID: pl.Int64(),
    N.VIP_TIER: pl.Int64(),
    N.IS_INSTITUTIONAL: pl.Boolean(),
    N.REGION: pl.String(),
    N.CREATED_AT: UTC_US,
    N.KYC_STATUS: pl.String(),
    N.DEPEG_COMP_USD: pl.Float64(),
}

# Private per-user columns of the query.
COL_N_TOTAL = "_n_total"
COL_N_COVERED = "_n_covered"
COL_N_IN_WINDOW = "_n_in_window"
COL_N_NO_PRICE = "_n_no_price"
COL_IN_USERS = "_in_users"
COL_IN_SNAPSHOT = "_in_snapshot"
COL_PRICE = "_price"
COL_COVERED = "_covered"
COL_IN_WINDOW = "_in_window"
COL_COUNTED = "_counted"
COL_EVENT_LOSS = "_event_loss"
COL_EVENT_FEE = "_event_fee"
COL_GROSS_NANO = "_gross_nano"
COL_FEE_NANO = "_fee_nano"
COL_PACKED = "_packed_counts"


def eligible_columns(rules: EligibilityRules) -> list[str]:
    """Columns of the feature matrix (``eligible.parquet``), in order (``phase_factor`` last,
    only with a phase-in band)."""
    return [
        N.USER_ID,
        N.LOSS_USD,
        N.GROSS_LOSS_USD,
        N.FEE_USD,
        *(N.product_loss_column(p) for p in products(rules)),
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


def table_name(stem: str, source: Mapping[str, Any] | None) -> str:
    if source and stem in source:
        return f"{stem} file {source[stem]}"
    return f"{stem} table"


def conform(
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
            f"The {table_name(stem, source)} has no column {missing[0]!r} "
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
                f"The {table_name(stem, source)} has column {name!r} of type {have}; "
                f"expected {dtype}.",
            )
    return lf.select(exprs)
