"""Loan applications for the USD 100M institutional fund: schema, synthetic set, strict loader.

One row per applicant institution (an ecosystem partner, a VIP or an institutional user who
applied through its account manager).

========================  =========  ==========================================================
column                    type       meaning and rule
========================  =========  ==========================================================
``institution_id``        String     unique, non-empty
``requested_usd``         Float64    amount applied for, USD, > 0 and <= 1e13
``collateral_usd``        Float64    market value of the collateral pledged, USD, in [0, 1e13]
``collateral_haircut``    Float64    haircut on that collateral, in [0, 1)
``credit_tier``           String     internal credit tier (e.g. A, B, C, D); may be blank in
                                     a row that gives ``default_probability``
``default_probability``   Float64    one-year probability of default, in [0, 1]; may be blank
                                     in a row that gives ``credit_tier``
``pre_crash_volume_usd``  Float64    traded volume over the 30 days before 2025-10-10, USD,
                                     in [0, 1e13]
``crash_loss_usd``        Float64    loss in the crash of 2025-10-10/11, USD, in [0, 1e13]
``vip_tier``              Int64      VIP tier, 0..9
========================  =========  ==========================================================

Each row needs a default probability or a credit tier: at least one of the two columns must be
present, and in each row at least one of the two fields must be filled (a blank or
whitespace-only tier counts as missing). A missing one is derived from the scenario's tier table
(see :func:`allocator.loans.problem.build_loan_problem`). When a row gives both, both are used as given
and need not agree: the probability in the expected-loss budget, the tier for the rate (the
published spread schedule; a credit committee may have placed the applicant in a tier its
model probability would not).

Columns outside this table are rejected, so that a misspelt optional column cannot be ignored
silently.

Every USD amount is at most :data:`MAX_AMOUNT_USD` (USD 1e13, ten trillion, the voucher budget's
limit too): loans and limits are integer cents, and 1e15 cents is exact in float64 and fits
int64 with room for sums. Larger figures are not real applications, and would overflow the
cents arithmetic; they are rejected with the file, column and row.
"""

from __future__ import annotations

from pathlib import Path
from typing import IO, Any

import numpy as np
import polars as pl

from allocator.errors import InputError
from allocator.runs.store import atomic_write
from allocator.settings.loans import MAX_AMOUNT_USD

INSTITUTION_ID = "institution_id"
REQUESTED_USD = "requested_usd"
COLLATERAL_USD = "collateral_usd"
COLLATERAL_HAIRCUT = "collateral_haircut"
CREDIT_TIER = "credit_tier"
DEFAULT_PROBABILITY = "default_probability"
PRE_CRASH_VOLUME_USD = "pre_crash_volume_usd"
CRASH_LOSS_USD = "crash_loss_usd"
VIP_TIER = "vip_tier"

#: Every column of the schema, in canonical order, with its type.
SCHEMA: dict[str, pl.DataType] = {
    INSTITUTION_ID: pl.String(),
    REQUESTED_USD: pl.Float64(),
    COLLATERAL_USD: pl.Float64(),
    COLLATERAL_HAIRCUT: pl.Float64(),
    CREDIT_TIER: pl.String(),
    DEFAULT_PROBABILITY: pl.Float64(),
    PRE_CRASH_VOLUME_USD: pl.Float64(),
    CRASH_LOSS_USD: pl.Float64(),
    VIP_TIER: pl.Int64(),
}
#: Columns of which at least one must be present.
RISK_COLUMNS = (CREDIT_TIER, DEFAULT_PROBABILITY)
REQUIRED_COLUMNS = tuple(c for c in SCHEMA if c not in RISK_COLUMNS)

#: Credit tiers of the synthetic set, their shares and their one-year default-probability bands.
SYNTHETIC_TIERS = (
    ("A", 0.20, 0.002, 0.010),
    ("B", 0.35, 0.010, 0.030),
    ("C", 0.30, 0.030, 0.080),
    ("D", 0.15, 0.080, 0.250),
)
#: 30-day futures volume (USD) needed for VIP 1..9, the exchange's published ladder, rounded.
VIP_VOLUME_USD = (15e6, 50e6, 100e6, 600e6, 1e9, 2.5e9, 5e9, 12.5e9, 25e9)
MIN_REQUEST_USD = 100_000.0
MAX_REQUEST_USD = 15_000_000.0
#: Largest USD amount in an application (and in a loan scenario): 1e15 cents stays exact in
#: float64 (< 2**53) and in int64, so limits and loans in cents cannot overflow.

#: Largest synthetic set :func:`generate_applications` makes (about 100 MB in memory; the loan
#: model is meant for hundreds to thousands of applicants).
MAX_GENERATE_N = 1_000_000
#: Seeds are integers in ``0..MAX_SEED`` (what numpy's generator accepts, kept to int64).
MAX_SEED = 2**63 - 1


def generate_applications(n: int = 400, seed: int = 20251014) -> pl.DataFrame:
    """A deterministic, realistic synthetic set of loan applications.

    A latent size drives 30-day volume (log-normal, median about USD 150M), VIP tier (the
    volume ladder, with some partners outside the VIP programme) and crash loss (a log-normal
    share of volume, a few with none); requests follow the loss with noise, clipped to
    USD 0.1M..15M, so they are heavy-tailed and, for the default ``n``, total several times the
    USD 100M fund. Credit tiers get worse with a larger loss relative to volume and better with
    size; the default probability is drawn inside the tier's band, so the two agree. About 15%
    pledge little collateral (under 30% of the request) and 3% none.

    Parameters
    ----------
    n : int
        Number of applications, ``1..MAX_GENERATE_N`` (1,000,000).
    seed : int
        Seed of the generator, ``0..MAX_SEED`` (2**63 - 1); the same ``(n, seed)`` always gives
        the same table.

    Returns
    -------
    polars.DataFrame
        The table in :data:`SCHEMA`, sorted by ``institution_id``.

    Raises
    ------
    InputError
        ``n`` or ``seed`` is not an integer in its range.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= MAX_GENERATE_N:
        raise InputError(
            f"cannot generate {n!r} loan applications: n (--n) must be an integer "
            f"from 1 to {MAX_GENERATE_N:,}."
        )
    if (
        isinstance(seed, bool)
        or not isinstance(seed, (int, np.integer))
        or not 0 <= seed <= MAX_SEED
    ):
        raise InputError(
            f"cannot generate loan applications with seed {seed!r}: the seed (--seed) "
            f"must be an integer from 0 to {MAX_SEED} (2**63 - 1)."
        )
    n, seed = int(n), int(seed)
    rng = np.random.default_rng(seed)
    size = rng.normal(0.0, 1.0, n)
    volume = np.exp(np.log(150e6) + 1.3 * size + rng.normal(0.0, 0.5, n))
    volume = np.clip(volume, 2e5, 5e10)
    vip = np.searchsorted(np.asarray(VIP_VOLUME_USD), volume, side="right").astype(np.int64)
    # Ecosystem partners (projects, market infrastructure) often sit outside the VIP ladder.
    partner = rng.random(n) < 0.12
    vip[partner] = 0

    loss_share = np.exp(np.log(0.006) + 0.9 * rng.normal(0.0, 1.0, n))
    loss = volume * loss_share
    loss[rng.random(n) < 0.04] = 0.0

    request_basis = np.maximum(loss, 0.002 * volume)
    requested = 0.4 * request_basis * np.exp(rng.normal(0.0, 0.6, n))
    requested = np.clip(np.round(requested, -4), MIN_REQUEST_USD, MAX_REQUEST_USD)

    coll_ratio = np.exp(np.log(1.3) + 0.5 * rng.normal(0.0, 1.0, n))
    u = rng.random(n)
    coll_ratio[u < 0.15] = rng.uniform(0.0, 0.3, int((u < 0.15).sum()))
    coll_ratio[u < 0.03] = 0.0
    collateral = np.round(requested * coll_ratio, 2)
    # Collateral mix: stablecoins, majors (BTC, ETH), long-tail tokens.
    kind = rng.choice(3, size=n, p=[0.30, 0.45, 0.25])
    lo = np.array([0.02, 0.15, 0.35])[kind]
    hi = np.array([0.05, 0.30, 0.60])[kind]
    haircut = np.round(rng.uniform(lo, hi), 2)

    # Credit score: bigger loss relative to volume and smaller size are worse.
    score = 0.8 * np.log(loss_share) - 0.6 * size + rng.normal(0.0, 1.0, n)
    shares = np.cumsum([t[1] for t in SYNTHETIC_TIERS])
    ranks = np.argsort(np.argsort(score, kind="stable"), kind="stable") / max(n, 1)
    tier_idx = np.searchsorted(shares[:-1], ranks, side="right")
    pd_lo = np.array([t[2] for t in SYNTHETIC_TIERS])[tier_idx]
    pd_hi = np.array([t[3] for t in SYNTHETIC_TIERS])[tier_idx]
    pd_ = np.exp(rng.uniform(np.log(pd_lo), np.log(pd_hi)))
    pd_ = np.round(np.clip(pd_, pd_lo, pd_hi), 4)
    tiers = np.array([t[0] for t in SYNTHETIC_TIERS])[tier_idx]

    width = max(4, len(str(n)))
    ids = [f"INST-{i + 1:0{width}d}" for i in range(n)]
    df = pl.DataFrame(
        {
            INSTITUTION_ID: ids,
            REQUESTED_USD: requested.astype(np.float64),
            COLLATERAL_USD: collateral,
            COLLATERAL_HAIRCUT: haircut,
            CREDIT_TIER: tiers.tolist(),
            DEFAULT_PROBABILITY: pd_,
            PRE_CRASH_VOLUME_USD: np.round(volume, 2),
            CRASH_LOSS_USD: np.round(loss, 2),
            VIP_TIER: vip,
        },
        schema=SCHEMA,
    )
    return df.sort(INSTITUTION_ID)


def write_applications(df: pl.DataFrame, path: str | Path) -> Path:
    """Write an applications table as parquet or CSV (by suffix), atomically."""
    path = Path(path)
    fmt = _format_of(path)

    def write(fh: IO[bytes]) -> None:
        if fmt == "parquet":
            df.write_parquet(fh, statistics=False)
        else:
            df.write_csv(fh)

    return atomic_write(path, write)


def load_applications(path: str | Path) -> pl.DataFrame:
    """Read and validate a loan applications file (``.parquet`` or ``.csv``).

    Every rule of the module's schema is checked; the first broken rule raises
    :class:`~allocator.errors.InputError` naming the file, the column and an example row
    (numbered from 1, the header not counted).

    Returns
    -------
    polars.DataFrame
        The table with the schema's types, columns in canonical order, rows in file order.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"loan applications file {path} does not exist or is not a file.")
    fmt = _format_of(path)
    try:
        if fmt == "parquet":
            raw = pl.read_parquet(path)
        else:
            # Read every field as text and cast strictly below, so that "12k" or "3.5" in an
            # integer column is reported instead of being guessed at.
            raw = pl.read_csv(path, infer_schema=False, raise_if_empty=False)
    except Exception as exc:  # polars raises several exception types for unreadable files
        raise InputError(f"loan applications file {path} cannot be read as {fmt}: {exc}") from None
    return validate_applications(raw, source=str(path), from_text=fmt == "csv")


def validate_applications(
    raw: pl.DataFrame, *, source: str = "<table>", from_text: bool = False
) -> pl.DataFrame:
    """Validate an in-memory applications table; see :func:`load_applications`.

    ``from_text``: the columns are text to be parsed (a CSV file); otherwise each column must
    already have its schema type (integers are accepted for Float64 columns).
    """
    where = f"loan applications file {source}"
    if raw.height == 0:
        raise InputError(f"{where} has no rows; at least one application is needed.")
    cols = list(raw.columns)
    unknown = [c for c in cols if c not in SCHEMA]
    if unknown:
        raise InputError(
            f"{where} has unknown column(s) {', '.join(map(repr, unknown))}; the schema is "
            f"{', '.join(SCHEMA)}. Example row 1: {_row(raw, 0)}."
        )
    missing = [c for c in REQUIRED_COLUMNS if c not in cols]
    if missing:
        raise InputError(
            f"{where} lacks required column(s) {', '.join(map(repr, missing))}. "
            f"Example row 1: {_row(raw, 0)}."
        )
    if not any(c in cols for c in RISK_COLUMNS):
        raise InputError(
            f"{where} has neither 'credit_tier' nor 'default_probability'; at least one is "
            f"needed to price the loan and bound its expected loss. Example row 1: {_row(raw, 0)}."
        )
    present = [c for c in SCHEMA if c in cols]
    out = {c: _typed(raw, c, where, from_text) for c in present}
    df = pl.DataFrame(out)

    for c in present:
        if c in RISK_COLUMNS:
            continue  # per row, one of the two suffices: checked below
        nulls = df[c].is_null()
        if nulls.any():
            i = int(nulls.arg_max())  # type: ignore[arg-type]
            raise InputError(
                f"{where}: column {c!r} has {int(nulls.sum())} missing value(s); "
                f"example row {i + 1}: {_row(raw, i)}."
            )
    if CREDIT_TIER in df.columns:
        # One spelling of "no tier": a blank CSV field reads as null, "  " would not.
        tier = pl.col(CREDIT_TIER)
        df = df.with_columns(
            pl.when(tier.str.strip_chars().str.len_chars() == 0)
            .then(None)
            .otherwise(tier)
            .alias(CREDIT_TIER)
        )
    neither = risk_missing(df)
    if neither.any():
        i = int(neither.arg_max())  # type: ignore[arg-type]
        raise InputError(
            f"{where}: {risk_missing_message(df.columns, int(neither.sum()))}; "
            f"e.g. row {i + 1}: {_row(raw, i)}."
        )

    ids = df[INSTITUTION_ID]
    bad = ids.str.strip_chars().str.len_chars() == 0
    if bad.any():
        i = int(bad.arg_max())  # type: ignore[arg-type]
        raise InputError(
            f"{where}: column 'institution_id' is empty in row {i + 1}: {_row(raw, i)}."
        )
    dup = ids.is_duplicated()
    if dup.any():
        i = int(dup.arg_max())  # type: ignore[arg-type]
        rows = [k + 1 for k, v in enumerate(ids.to_list()) if v == ids[i]]
        raise InputError(
            f"{where}: column 'institution_id' has duplicates ({int(dup.sum())} rows); "
            f"id {ids[i]!r} appears in rows {rows}, e.g. row {i + 1}: {_row(raw, i)}."
        )

    big = (
        "at most 1e13 (USD 10 trillion, MAX_AMOUNT_USD: the largest amount the cents "
        "arithmetic holds exactly)"
    )

    def usd(col: str, positive: bool = False) -> tuple[str, pl.Expr, str]:
        low = pl.col(col) > 0 if positive else pl.col(col) >= 0
        return (
            col,
            low & (pl.col(col) <= MAX_AMOUNT_USD),
            f"must be {'> 0' if positive else '>= 0'} and {big}",
        )

    rules: list[tuple[str, pl.Expr, str]] = [
        usd(REQUESTED_USD, positive=True),
        usd(COLLATERAL_USD),
        (
            COLLATERAL_HAIRCUT,
            (pl.col(COLLATERAL_HAIRCUT) >= 0) & (pl.col(COLLATERAL_HAIRCUT) < 1),
            "must be in [0, 1)",
        ),
        usd(PRE_CRASH_VOLUME_USD),
        usd(CRASH_LOSS_USD),
        (VIP_TIER, (pl.col(VIP_TIER) >= 0) & (pl.col(VIP_TIER) <= 9), "must be an integer 0..9"),
    ]
    if DEFAULT_PROBABILITY in df.columns:
        rules.append(
            (
                DEFAULT_PROBABILITY,
                (pl.col(DEFAULT_PROBABILITY) >= 0) & (pl.col(DEFAULT_PROBABILITY) <= 1),
                "must be in [0, 1]",
            )
        )
    for col, ok_expr, rule in rules:
        values = df[col]
        if values.dtype == pl.Float64:
            finite = values.is_finite()
            if not finite.all():
                i = int((~finite).arg_max())  # type: ignore[arg-type]
                raise InputError(
                    f"{where}: column {col!r} must be finite (no NaN or infinity); "
                    f"row {i + 1}: {_row(raw, i)}."
                )
        # A blank default probability is allowed where the tier is given (checked above).
        ok = df.select(ok_expr.fill_null(True).alias("ok"))["ok"]
        if not ok.all():
            i = int((~ok).arg_max())  # type: ignore[arg-type]
            raise InputError(
                f"{where}: column {col!r} {rule}; {int((~ok).sum())} row(s) break the rule, "
                f"e.g. row {i + 1}: {_row(raw, i)}."
            )
    return df


def risk_missing(df: pl.DataFrame) -> pl.Series:
    """Rows with neither a credit tier nor a default probability (columns absent count as
    blank); such a row cannot be priced or given an expected loss."""
    missing = pl.Series([True] * df.height, dtype=pl.Boolean)
    for c in RISK_COLUMNS:
        if c in df.columns:
            missing = missing & df[c].is_null()
    return missing


def risk_missing_message(columns: list[str], n: int) -> str:
    """The error for ``n`` rows with neither a tier nor a probability, naming the columns."""
    if all(c in columns for c in RISK_COLUMNS):
        return (
            f"{n} row(s) give neither 'credit_tier' nor 'default_probability' (each row needs "
            "at least one, to price the loan and bound its expected loss)"
        )
    have, other = (
        (CREDIT_TIER, DEFAULT_PROBABILITY)
        if CREDIT_TIER in columns
        else (DEFAULT_PROBABILITY, CREDIT_TIER)
    )
    return (
        f"column {have!r} has {n} missing value(s) and there is no {other!r} column to fall "
        f"back on (each row needs at least one of the two)"
    )


def _format_of(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return "parquet"
    if suffix == ".csv":
        return "csv"
    raise InputError(f"loan applications file {path} must end in .parquet or .csv, not {suffix!r}.")


def _typed(raw: pl.DataFrame, col: str, where: str, from_text: bool) -> pl.Series:
    """Column ``col`` with its schema type; a value that does not convert raises InputError."""
    target = SCHEMA[col]
    s = raw[col]
    if s.dtype == target:
        return s
    if s.dtype == pl.String and from_text:
        text = s.str.strip_chars()
        converted = text.cast(target, strict=False)
        failed = converted.is_null() & text.is_not_null()
        if failed.any():
            i = int(failed.arg_max())  # type: ignore[arg-type]
            raise InputError(
                f"{where}: column {col!r} must hold {_type_name(target)} values; row {i + 1} has "
                f"{s[i]!r}: {_row(raw, i)}."
            )
        return converted.alias(col)
    numeric_ok = (
        (target == pl.Float64 and (s.dtype.is_integer() or s.dtype.is_float()))
        or (target == pl.Int64 and s.dtype.is_integer())
        or (target == pl.String and s.dtype in (pl.Categorical, pl.Enum))
    )
    if numeric_ok:
        return s.cast(target).alias(col)
    raise InputError(
        f"{where}: column {col!r} has type {s.dtype}, expected {_type_name(target)}. "
        f"Example row 1: {_row(raw, 0)}."
    )


def _type_name(dtype: pl.DataType) -> str:
    return {
        pl.Float64: "numeric (Float64)",
        pl.Int64: "integer (Int64)",
        pl.String: "text (String)",
    }.get(type(dtype), str(dtype))


def _row(raw: pl.DataFrame, i: int) -> dict[str, Any]:
    return raw.row(i, named=True)
