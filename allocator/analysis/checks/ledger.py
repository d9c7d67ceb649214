r"""The voucher ledger and the redemptions file of a later round, recomputed from the files.

``redemptions file``
    The file the manifest names (``round.redemptions``) is there with the recorded sha256, and
    each of its rows names a voucher an earlier round issued to that user and that no earlier
    redemptions file settled for good (redeemed or expired), once.
``voucher ledger``
    vouchers.parquet is exactly the previous round's ledger (round 1: its payouts.csv, every
    voucher outstanding) with this round's redemptions applied (``redeemed``, or ``expired`` /
    ``unclaimed`` as ``rounds.unclaimed`` says, settled in this round) and this round's payouts
    added as outstanding vouchers; and every user holds, in vouchers that did not expire,
    exactly their ``voucher_cents``.

The input files are read here with Polars alone, on a path of their own (the allocating code
reads them with its own checks, which this does not run).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from allocator import names as N
from allocator.analysis.checks.chain import previous_ledger
from allocator.analysis.checks.runfiles import Result, RunFiles, Unavailable, examples
from allocator.kernel.money import format_cents
from allocator.runs.contract import AMOUNT_CENTS
from allocator.runs.hashing import sha256_file

_LEDGER_COLUMNS = [N.USER_ID, N.ROUND, N.IDEMPOTENCY_KEY, N.CENTS, N.STATUS, N.SETTLED_ROUND]
_TRUE = ("true", "1", "yes")


def input_file(r: RunFiles, key: str) -> tuple[Path, pl.DataFrame] | None:
    """The round's appeals or redemptions file (``round.<key>``): ``None`` when the round had
    none, else its path and contents (CSV values as text); refused when it changed."""
    sec = r.section("round").get(key)
    if sec is None:
        return None
    if not isinstance(sec, dict) or not isinstance(sec.get("path"), str):
        raise Unavailable(f"{N.MANIFEST_FILE} round.{key} has no path")
    path = Path(sec["path"])
    if not path.is_file():
        raise Unavailable(f"the round's {key} file {path} is not there")
    if sha256_file(path) != sec.get("sha256"):
        raise Unavailable(
            f"the round's {key} file {path} changed since the run (its sha256 is not the one "
            "recorded in round." + key + ")"
        )
    try:
        if path.suffix.lower() == ".csv":
            return path, pl.read_csv(path, infer_schema=False)
        return path, pl.read_parquet(path)
    except Exception as exc:  # a damaged file is a finding, not a crash
        raise Unavailable(f"the round's {key} file {path} is unreadable ({exc})") from None


def text(series: pl.Series) -> pl.Series:
    """A column as stripped text (empty as null), whatever the file stored."""
    out = series.cast(pl.String).str.strip_chars()
    return pl.Series(series.name, [v if v else None for v in out.to_list()], dtype=pl.String)


def redemptions(r: RunFiles) -> pl.DataFrame:
    """The round's redemptions as ``idempotency_key``, ``user_id``, ``redeemed`` (empty without
    a file)."""
    found = input_file(r, "redemptions")
    schema: dict[str, Any] = {
        N.IDEMPOTENCY_KEY: pl.String,
        N.USER_ID: pl.Int64,
        N.REDEEMED: pl.Boolean,
    }
    if found is None:
        return pl.DataFrame(schema=schema)
    _, raw = found
    flag = text(raw[N.REDEEMED]).str.to_lowercase()
    return pl.DataFrame(
        {
            N.IDEMPOTENCY_KEY: text(raw[N.IDEMPOTENCY_KEY]),
            N.USER_ID: text(raw[N.USER_ID]).cast(pl.Int64),
            N.REDEEMED: flag.is_in(list(_TRUE)),
        },
        schema=schema,
    )


def check_redemptions_file(r: RunFiles) -> Result:
    red = redemptions(r)
    if red.height == 0 and r.section("round").get("redemptions") is None:
        return True, "no redemptions file this round: every earlier voucher stays as it was"
    before = previous_ledger(r).select(
        N.IDEMPOTENCY_KEY, pl.col(N.USER_ID).alias("_issued_to"), N.STATUS
    )
    joined = red.join(before, on=N.IDEMPOTENCY_KEY, how="left")
    problems = []
    again = red.filter(pl.col(N.IDEMPOTENCY_KEY).is_duplicated())
    if again.height:
        problems.append(f"{again.height:,} row(s) repeat a voucher, " + examples(again))
    unknown = joined.filter(pl.col("_issued_to").is_null())
    if unknown.height:
        problems.append(
            f"{unknown.height:,} row(s) name a key no earlier round issued, " + examples(unknown)
        )
    other = joined.filter(pl.col("_issued_to") != pl.col(N.USER_ID))
    if other.height:
        problems.append(f"{other.height:,} row(s) name the wrong user, " + examples(other))
    final = joined.filter(pl.col(N.STATUS).is_in([N.VOUCHER_REDEEMED, N.VOUCHER_EXPIRED]))
    if final.height:
        problems.append(
            f"{final.height:,} row(s) settle a voucher settled for good before, " + examples(final)
        )
    if problems:
        return False, "; ".join(problems)
    redeemed = int(red[N.REDEEMED].sum())
    return True, (
        f"{red.height:,} vouchers of earlier rounds reported, each once and to its user: "
        f"{redeemed:,} redeemed, {red.height - redeemed:,} not"
    )


def _expected_ledger(r: RunFiles) -> pl.DataFrame:
    scen = r.section("scenario")
    policy = (scen.get("rounds") or {}).get("unclaimed", "keep")
    unclaimed = N.VOUCHER_EXPIRED if policy == "expire" else N.VOUCHER_UNCLAIMED
    news = redemptions(r).select(
        N.IDEMPOTENCY_KEY,
        pl.when(pl.col(N.REDEEMED))
        .then(pl.lit(N.VOUCHER_REDEEMED))
        .otherwise(pl.lit(unclaimed))
        .alias("_new"),
    )
    settled = (
        previous_ledger(r)
        .join(news, on=N.IDEMPOTENCY_KEY, how="left")
        .with_columns(
            pl.coalesce("_new", N.STATUS).alias(N.STATUS),
            pl.when(pl.col("_new").is_not_null())
            .then(pl.lit(r.round, dtype=pl.Int64))
            .otherwise(pl.col(N.SETTLED_ROUND))
            .alias(N.SETTLED_ROUND),
        )
        .select(_LEDGER_COLUMNS)
    )
    p = r.payouts
    issued = pl.DataFrame(
        {
            N.USER_ID: p[N.USER_ID].cast(pl.Int64),
            N.ROUND: pl.Series([r.round] * p.height, dtype=pl.Int64),
            N.IDEMPOTENCY_KEY: p[N.IDEMPOTENCY_KEY].cast(pl.String),
            N.CENTS: p[AMOUNT_CENTS].cast(pl.Int64),
            N.STATUS: pl.Series([N.VOUCHER_OUTSTANDING] * p.height, dtype=pl.String),
            N.SETTLED_ROUND: pl.Series([None] * p.height, dtype=pl.Int64),
        }
    )
    return pl.concat([settled, issued]).sort([N.USER_ID, N.ROUND])


def check_voucher_ledger(r: RunFiles) -> Result:
    mine = r.vouchers.select(_LEDGER_COLUMNS)
    want = _expected_ledger(r)
    problems = []
    fill = pl.col(N.SETTLED_ROUND).fill_null(-1)  # null joins nothing: compare it as a number
    a, b = mine.with_columns(fill), want.with_columns(fill)
    extra = a.join(b, on=_LEDGER_COLUMNS, how="anti")
    missing = b.join(a, on=_LEDGER_COLUMNS, how="anti")
    if extra.height or missing.height or mine.height != want.height:
        problems.append(
            f"{N.VOUCHERS_FILE} is not the previous ledger with this round's redemptions and "
            f"payouts ({mine.height:,} vouchers, the chain gives {want.height:,}; "
            f"{extra.height:,} differ), " + examples(extra if extra.height else missing)
        )
    held = (
        mine.filter(pl.col(N.STATUS) != N.VOUCHER_EXPIRED)
        .group_by(N.USER_ID)
        .agg(pl.col(N.CENTS).sum().alias("_held"))
    )
    alloc = r.allocations.select(N.USER_ID, N.VOUCHER_CENTS)
    both = alloc.join(held, on=N.USER_ID, how="full", coalesce=True).fill_null(0)
    off = both.filter(pl.col(N.VOUCHER_CENTS) != pl.col("_held"))
    if off.height:
        problems.append(
            f"{off.height:,} user(s) whose vouchers that did not expire do not add up to their "
            "voucher_cents, " + examples(off)
        )
    if problems:
        return False, "; ".join(problems)
    status = mine[N.STATUS].value_counts().sort(N.STATUS)
    counts = ", ".join(f"{row[0]} {row[1]:,}" for row in status.iter_rows())
    return True, (
        f"{mine.height:,} vouchers: the previous ledger with this round's redemptions and "
        f"payouts ({counts}); they hold USD {format_cents(int(alloc[N.VOUCHER_CENTS].sum()))}"
    )
