"""The columns eligibility reads (input contracts) and writes (the two output tables), and the
private per-user columns of its queries."""

from __future__ import annotations

import polars as pl

from allocator import names as N
from allocator.runs.contract import EXCLUDED_COLUMNS
from allocator.settings.models import EligibilityRules
from allocator.vouchers.eligibility.rules import has_phase_in, products

__all__ = ["eligible_columns", "excluded_columns"]

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
    """Columns of ``excluded.parquet``, in order (the run contract's, which check-budget holds
    every run to)."""
    return list(EXCLUDED_COLUMNS)
