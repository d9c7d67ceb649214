"""The input tables' schemas: their columns and types, which may be null, which are keys.

Every reader and checker of the input data (:mod:`allocator.data.tables`,
:mod:`allocator.data.validation`) and the synthetic generator take the tables' shape from here.
"""

from __future__ import annotations

import polars as pl

from allocator import names as N

UTC_US = pl.Datetime("us", "UTC")
#: Columns and types of each input table, in canonical order.
SCHEMAS: dict[str, dict[str, pl.DataType]] = {
    N.EVENTS_FILE: {
        N.EVENT_ID: pl.Int64(),
        N.USER_ID: pl.Int64(),
        N.TS: UTC_US,
        N.PRODUCT: pl.String(),
        N.SYMBOL: pl.String(),
        N.SIDE: pl.String(),
        N.QUANTITY: pl.Float64(),
        N.LIQ_PRICE: pl.Float64(),
        N.REALISED_LOSS: pl.Float64(),
        N.LIQ_FEE: pl.Float64(),
        N.SETTLE_ASSET: pl.String(),
        N.COLLATERAL: pl.String(),
    },
    N.PRICES_FILE: {
        N.ASSET: pl.String(),
        N.PRICE_TS: UTC_US,
        N.PRICE_USD: pl.Float64(),
    },
    N.SNAPSHOT_FILE: {
        N.USER_ID: pl.Int64(),
        N.NET_ASSETS_USD: pl.Float64(),
    },
    N.USERS_FILE: {
        N.USER_ID: pl.Int64(),
        N.VIP_TIER: pl.Int64(),
        N.IS_INSTITUTIONAL: pl.Boolean(),
        N.REGION: pl.String(),
        N.CREATED_AT: UTC_US,
        N.KYC_STATUS: pl.String(),
        N.DEPEG_COMP_USD: pl.Float64(),
    },
}
#: Columns that may hold nulls; every other column is required on every row.
NULLABLE: dict[str, frozenset[str]] = {
    N.EVENTS_FILE: frozenset({N.COLLATERAL}),
    N.PRICES_FILE: frozenset(),
    N.SNAPSHOT_FILE: frozenset(),
    N.USERS_FILE: frozenset(),
}
#: Columns whose values must be unique within their table.
UNIQUE_KEYS: dict[str, tuple[str, ...]] = {
    N.EVENTS_FILE: (N.EVENT_ID,),
    N.PRICES_FILE: (),
    N.SNAPSHOT_FILE: (N.USER_ID,),
    N.USERS_FILE: (N.USER_ID,),
}
FORMATS = ("parquet", "csv")
MAX_VIP_TIER = 9
