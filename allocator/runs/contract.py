"""The voucher run directory's contract: its files, their columns and types, and money as text.

Contract
--------
A run directory holds exactly four files.

``allocations.parquet``
    One row per eligible user, sorted by ``user_id``, columns in this order:
    ``user_id`` Int64, ``voucher_cents`` Int64, ``voucher_usd`` Float64 (``voucher_cents / 100``),
    ``lower_cents`` Int64, ``upper_cents`` Int64 (the user's bounds in cents: the floor rounded
    *up* to the cent, ``min(cap, coverage_cap * loss)`` rounded *down*), ``loss_usd`` Float64,
    ``loss_ratio`` Float64, ``weight`` Float64, ``bound`` String (one of
    :data:`allocator.names.BOUND_STATES`, judged on the paid cents), ``segment`` String (null when
    the scenario has no segments). Any further columns follow these.
``excluded.parquet``
    One row per liquidated user left out, sorted by ``user_id``: ``user_id`` Int64, ``reason``
    String (one of :data:`allocator.names.REASONS`), ``detail`` String, then the numbers behind
    the decision (``loss_usd``, ``gross_loss_usd``, ``net_assets_usd``, ``loss_ratio``,
    ``n_events``).
``payouts.csv``
    One row per allocated user: ``user_id``, ``amount`` (USD with exactly two decimals, e.g.
    ``4.00``; parsed back to cents by splitting the string, never through a float), ``batch``,
    ``idempotency_key``.
``vouchers.parquet`` and ``appeals.parquet`` (round 2 and later only, :data:`ROUND_FILES`)
    The ledger of every voucher issued in the chain so far (:data:`VOUCHERS_SCHEMA`, one row per
    user and round, with what became of it) and every appeal decided so far
    (:data:`APPEALS_SCHEMA`, one row per appealed user). allocations.parquet then also holds
    ``paid_before_cents`` and ``delta_cents`` (:data:`ALLOCATIONS_ROUND`), and the manifest a
    ``round`` section (:func:`round_number`).
``manifest.json``
    ``{"format": "allocator-run/1", "programme", "scenario": <the fully resolved scenario, incl.
    bounds.floor_usd, bounds.cap_usd, bounds.coverage_cap, budget.total_usd, budget.exhaust>,
    "inputs": {stem: {"path": <absolute>, "sha256", "rows"}}, "versions": {...}, "solver":
    {"requested", "used", "status"}, "objective", "shadow_price", "certificate": {...}, "money":
    {"budget_cents", "paid_cents", "unspent_cents", "exhaust"}, "counts": {"liquidated",
    "eligible", "excluded", "floor", "interior", "cap", "excluded_by_reason": {...}},
    "timings_s": {...}, "payout_batches": [...], "outputs": {filename: sha256}}``.
    Strict JSON (a non-finite float is written as ``null``, ``"inf"`` or ``"-inf"``), sorted keys,
    indent 2, trailing newline. ``outputs`` is filled in by :func:`write_run_dir`.

Money as text
-------------
``payouts.csv`` writes amounts as USD text with exactly two decimals, made from integer cents by
integer arithmetic (:func:`cents_to_usd_expr`) and read back the same way
(:func:`usd_text_to_cents_expr`): ``600000`` cents is ``"6000.00"`` and back, never through a
float. Every writer and reader of payouts text uses these two expressions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from allocator import names as N

#: Value of ``manifest["format"]``; bump it when the contract above changes.
RUN_FORMAT = "allocator-run/1"
LOWER_CENTS = "lower_cents"
UPPER_CENTS = "upper_cents"
#: Parsed ``amount`` of payouts.csv, exact integer cents (a column of :attr:`RunDir.payouts`).
AMOUNT_CENTS = "amount_cents"

ALLOCATIONS_SCHEMA: dict[str, pl.DataType] = {
    N.USER_ID: pl.Int64(),
    N.VOUCHER_CENTS: pl.Int64(),
    N.VOUCHER_USD: pl.Float64(),
    LOWER_CENTS: pl.Int64(),
    UPPER_CENTS: pl.Int64(),
    N.LOSS_USD: pl.Float64(),
    N.LOSS_RATIO: pl.Float64(),
    N.WEIGHT: pl.Float64(),
    N.BOUND: pl.String(),
    N.SEGMENT: pl.String(),
}
EXCLUDED_KEY_COLUMNS: dict[str, pl.DataType] = {
    N.USER_ID: pl.Int64(),
    N.REASON: pl.String(),
    N.DETAIL: pl.String(),
}
#: Each known programme's public announcement, from which its payout schedule is measured: a
#: run's manifest cannot move it (shifting the announcement and every batch together would
#: otherwise keep the schedule's windows intact).
PROGRAMME_ANNOUNCEMENTS: dict[str, str] = {
    "together-initiative-vouchers-2025": "2025-10-14T00:00:00+00:00",
}
#: Every column excluded.parquet may hold, in order (an extra one is a tampering).
EXCLUDED_COLUMNS = (
    N.USER_ID,
    N.REASON,
    N.DETAIL,
    N.LOSS_USD,
    N.GROSS_LOSS_USD,
    N.NET_ASSETS_USD,
    N.LOSS_RATIO,
    N.N_EVENTS,
)
#: Columns allocations.parquet may hold besides :data:`ALLOCATIONS_SCHEMA` (with a phase-in band).
ALLOCATIONS_OPTIONAL = (N.PHASE_FACTOR,)
#: Columns allocations.parquet holds from round 2 on, last: what each user held before the round
#: and what the round pays them (``voucher_cents`` is then the cumulative amount).
ALLOCATIONS_ROUND: dict[str, pl.DataType] = {
    N.PAID_BEFORE_CENTS: pl.Int64(),
    N.DELTA_CENTS: pl.Int64(),
}
PAYOUTS_COLUMNS = (N.USER_ID, N.AMOUNT, N.BATCH, N.IDEMPOTENCY_KEY)
#: vouchers.parquet: one row per voucher issued (a user's payout in one round), sorted by user
#: and round; ``settled_round`` is null while the voucher is outstanding.
VOUCHERS_SCHEMA: dict[str, pl.DataType] = {
    N.USER_ID: pl.Int64(),
    N.ROUND: pl.Int64(),
    N.IDEMPOTENCY_KEY: pl.String(),
    N.CENTS: pl.Int64(),
    N.STATUS: pl.String(),
    N.SETTLED_ROUND: pl.Int64(),
}
#: appeals.parquet: one row per appealed user, sorted by user id; the corrected values are null
#: where the appeal did not correct them.
APPEALS_SCHEMA: dict[str, pl.DataType] = {
    N.USER_ID: pl.Int64(),
    N.ROUND: pl.Int64(),
    N.DECISION: pl.String(),
    N.GROSS_LOSS_USD: pl.Float64(),
    N.NET_ASSETS_USD: pl.Float64(),
    N.DEPEG_COMP_USD: pl.Float64(),
    N.KYC_STATUS: pl.String(),
    N.REGION: pl.String(),
    N.NOTE: pl.String(),
    N.WAIVED: pl.String(),
    N.OUTCOME: pl.String(),
}
#: Data files of a run directory, hashed into ``manifest["outputs"]``.
OUTPUT_FILES = (N.ALLOCATIONS_FILE, N.EXCLUDED_FILE, N.PAYOUTS_FILE)
#: Data files a round after the first adds (also hashed into ``manifest["outputs"]``).
ROUND_FILES = (N.VOUCHERS_FILE, N.APPEALS_FILE)
RUN_FILES = OUTPUT_FILES + (N.MANIFEST_FILE,)
#: Every file name a run directory of any round may hold (besides its signature).
ANY_RUN_FILES = RUN_FILES + ROUND_FILES


def round_number(manifest: Mapping[str, Any]) -> int:
    """The round a run's manifest records (``round.number``); 1 for a run without one.

    Raises
    ------
    ValueError
        ``round.number`` is there but not a whole number >= 1.
    """
    section = manifest.get("round")
    if section is None:
        return 1
    number = section.get("number") if isinstance(section, Mapping) else None
    if isinstance(number, bool) or not isinstance(number, int) or number < 1:
        raise ValueError(f"round.number is not a whole number >= 1: {number!r}")
    return number


def output_files(manifest: Mapping[str, Any]) -> tuple[str, ...]:
    """The data files of a run with this manifest: :data:`OUTPUT_FILES`, plus
    :data:`ROUND_FILES` from round 2 on."""
    return OUTPUT_FILES + (ROUND_FILES if round_number(manifest) > 1 else ())


#: ``"1234.56"``: the whole dollars and the two cent digits of an amount as text.
AMOUNT_TEXT_RE = r"^(\d+)\.(\d{2})$"


@dataclass(frozen=True, eq=False)
class RunDir:
    """A run directory read back: its three tables, its manifest and where it lives.

    ``payouts`` has the columns of payouts.csv plus ``amount_cents`` (Int64, exact).
    :func:`load_run` also fills ``scenario`` (the manifest's, parsed and validated) and, when it
    verified the inputs, ``data_dir`` (the one directory the input files are in).
    """

    path: Path
    allocations: pl.DataFrame
    excluded: pl.DataFrame
    payouts: pl.DataFrame
    manifest: dict[str, Any]
    scenario: Any = None
    data_dir: Path | None = None
    #: vouchers.parquet and appeals.parquet of a round after the first (``None`` in round 1).
    vouchers: pl.DataFrame | None = None
    appeals: pl.DataFrame | None = None

    @property
    def round(self) -> int:
        """The run's round (1 without a ``round`` section)."""
        return round_number(self.manifest)


# --------------------------------------------------------------------------------------------
# money as text
# --------------------------------------------------------------------------------------------


def cents_to_usd_expr(cents: pl.Expr) -> pl.Expr:
    """Non-negative integer cents -> ``"1234.56"`` (exact, no float)."""
    return pl.format("{}.{}", cents // 100, (cents % 100).cast(pl.String).str.zfill(2))


def usd_text_to_cents_expr(amount: pl.Expr) -> pl.Expr:
    """``"1234.56"`` text -> exact Int64 cents; null where the text is not in that form."""
    parts = amount.cast(pl.String).str.extract_groups(AMOUNT_TEXT_RE)
    whole = parts.struct.field("1").cast(pl.Int64, strict=False)
    frac = parts.struct.field("2").cast(pl.Int64, strict=False)
    return whole * 100 + frac


def usd_to_cents(amount: pl.Series) -> pl.Series:
    """Parse ``"1234.56"`` strings to exact Int64 cents (named ``amount_cents``); null where the
    text is malformed."""
    return (
        amount.to_frame("_amount")
        .select(usd_text_to_cents_expr(pl.col("_amount")).alias(AMOUNT_CENTS))
        .to_series()
    )


# --------------------------------------------------------------------------------------------
# the payouts.csv layout and canonical frames
# --------------------------------------------------------------------------------------------


def write_payouts_frame(frame: pl.DataFrame, path: Path) -> None:
    """Write a payouts frame (``amount`` as text, or ``amount_cents``) in the payouts.csv layout."""
    if N.AMOUNT not in frame.columns or frame.schema[N.AMOUNT] != pl.String:
        if AMOUNT_CENTS not in frame.columns:
            raise ValueError(
                f"payouts frame needs a String '{N.AMOUNT}' or an integer '{AMOUNT_CENTS}' column; "
                f"it has {frame.columns}"
            )
        if frame[AMOUNT_CENTS].null_count() or (frame[AMOUNT_CENTS] < 0).any():
            raise ValueError("payouts frame: amount_cents must be non-negative and non-null")
        frame = frame.with_columns(cents_to_usd_expr(pl.col(AMOUNT_CENTS)).alias(N.AMOUNT))
    missing = [c for c in PAYOUTS_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"payouts frame lacks columns {missing}; it has {frame.columns}")
    frame.select(PAYOUTS_COLUMNS).write_csv(path, line_terminator="\n")


def _canonical(frame: pl.DataFrame, key: Mapping[str, pl.DataType], what: str) -> pl.DataFrame:
    """``key`` columns first, cast strictly to their types, then the rest; rows by user id."""
    missing = [c for c in key if c not in frame.columns]
    if missing:
        raise ValueError(f"{what} frame lacks columns {missing}; it has {frame.columns}")
    rest = [pl.col(c) for c in frame.columns if c not in key]
    out = frame.select([pl.col(c).cast(t, strict=True) for c, t in key.items()] + rest)
    if not out[N.USER_ID].is_sorted():
        out = out.sort(N.USER_ID, maintain_order=True)
    return out


def canonical_allocations(frame: pl.DataFrame) -> pl.DataFrame:
    """An allocations frame in the contract's column order and types, sorted by user id.

    Raises
    ------
    ValueError
        A contract column is missing; polars raises when a column does not cast.
    """
    return _canonical(frame, ALLOCATIONS_SCHEMA, "allocations")


def canonical_excluded(frame: pl.DataFrame) -> pl.DataFrame:
    """An excluded frame with its key columns first and typed, sorted by user id."""
    return _canonical(frame, EXCLUDED_KEY_COLUMNS, "excluded")


def canonical_round_file(name: str, frame: pl.DataFrame) -> pl.DataFrame:
    """vouchers.parquet or appeals.parquet in exactly the contract's columns and types, sorted
    by user id (and round for the vouchers).

    Raises
    ------
    ValueError
        Not a round file's name, or a column is missing.
    """
    schema = {N.VOUCHERS_FILE: VOUCHERS_SCHEMA, N.APPEALS_FILE: APPEALS_SCHEMA}.get(name)
    if schema is None:
        raise ValueError(f"{name!r} is not a round file ({', '.join(ROUND_FILES)})")
    missing = [c for c in schema if c not in frame.columns]
    if missing:
        raise ValueError(f"{name} frame lacks columns {missing}; it has {frame.columns}")
    out = frame.select(pl.col(c).cast(t, strict=True) for c, t in schema.items())
    keys = [N.USER_ID, N.ROUND] if name == N.VOUCHERS_FILE else [N.USER_ID]
    return out.sort(keys, maintain_order=True).rechunk()
