r"""What a later round changes in the recomputation of eligibility, written out for the checks.

From round 2 on (``allocate --previous``), the users are not decided by the rules alone:

* an appeal's corrected values (appeals.parquet: ``gross_loss_usd``, ``net_assets_usd``,
  ``depeg_comp_usd``, ``kyc_status``, ``region``; null where not corrected) replace the inputs
  before any rule, and a corrected ``net_assets_usd`` puts the user in the snapshot;
* a ``reinstate`` waives every rule the user still fails: the user is eligible, and with a
  phase-in band a waived loss or ratio rule scales them by 1 instead of its band factor;
* a user with an expired voucher who holds nothing (every voucher expired) is excluded as
  ``voucher_expired``.

The appeals check ties appeals.parquet to the appeals files of the chain, and the ledger check
ties vouchers.parquet to the redemptions files and payouts, so that reading them here does not
trust what the run says about its own users.

``appeals applied`` (round 2 and later)
    appeals.parquet holds the previous round's appeals unchanged and this round's exactly as its
    appeals file gives them (the file there, with the recorded sha256); no user twice; each
    decision fits its values (``uphold`` corrects nothing, ``correct`` something); each
    ``outcome`` is the user's status in the run; each reinstatement waives exactly the rules the
    user fails with the appeal's values (recomputed from the inputs) and leaves them allocated.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from allocator import names as N
from allocator.analysis.checks.chain import previous
from allocator.analysis.checks.ledger import input_file, text
from allocator.analysis.checks.runfiles import Result, RunFiles, examples

#: The recomputed table's column naming the rules a reinstatement waives (null: none).
WAIVED_RECOMPUTED = "_waived"


def corrected(r: RunFiles, table: pl.DataFrame, in_snapshot: str) -> pl.DataFrame:
    """The joined per-user table with the corrections of the appeals in force in place."""
    if not r.later_round:
        return table
    fixes = r.appeals.select(N.USER_ID, *(pl.col(c).alias(f"_fix_{c}") for c in N.CORRECTABLE))
    if fixes.height == 0:
        return table
    out = table.join(fixes, on=N.USER_ID, how="left", maintain_order="left")
    return out.with_columns(
        *(pl.coalesce(f"_fix_{c}", c).alias(c) for c in N.CORRECTABLE),
        (pl.col(in_snapshot) | pl.col(f"_fix_{N.NET_ASSETS_USD}").is_not_null()).alias(in_snapshot),
    ).drop(f"_fix_{c}" for c in N.CORRECTABLE)


def reinstated(r: RunFiles, user_id: pl.Series) -> np.ndarray:
    """Which of ``user_id`` an appeal in force reinstates."""
    if not r.later_round:
        return np.zeros(user_id.len(), dtype=bool)
    ids = r.appeals.filter(pl.col(N.DECISION) == N.DECISION_REINSTATE)[N.USER_ID]
    return user_id.is_in(ids.implode()).to_numpy()


def waived_text(fails: dict[str, np.ndarray], waive: np.ndarray) -> list[str | None]:
    """Per user, the rules waived for them joined by ``+`` (null when not reinstated or when they
    fail none)."""
    out: list[str | None] = []
    for i in range(waive.shape[0]):
        if not waive[i]:
            out.append(None)
            continue
        names = [code for code in N.REASONS if fails[code][i]]
        out.append("+".join(names) if names else None)
    return out


def forfeit(r: RunFiles, table: pl.DataFrame) -> pl.DataFrame:
    """``voucher_expired`` as the reason of the eligible users who forfeited and hold nothing."""
    if not r.later_round:
        return table
    v = r.vouchers
    held = v.group_by(N.USER_ID).agg(
        pl.col(N.CENTS).filter(pl.col(N.STATUS) != N.VOUCHER_EXPIRED).sum().alias("_held")
    )
    gone = r.forfeited().to_frame().join(held, on=N.USER_ID, how="left")
    empty = gone.filter(pl.col("_held").fill_null(0) == 0)[N.USER_ID]
    hit = pl.col(N.USER_ID).is_in(empty.implode()) & pl.col(N.REASON).is_null()
    return table.with_columns(
        pl.when(hit)
        .then(pl.lit(N.REASON_VOUCHER_EXPIRED))
        .otherwise(pl.col(N.REASON))
        .alias(N.REASON)
    )


# --------------------------------------------------------------------------- appeals applied

_RECORD = [N.USER_ID, N.ROUND, N.DECISION, *N.CORRECTABLE, N.NOTE]
_LOWER = (N.DECISION, N.KYC_STATUS)


def _parsed_file(r: RunFiles) -> pl.DataFrame | None:
    """This round's appeals file as records (:data:`_RECORD`), or ``None`` without one."""
    found = input_file(r, "appeals")
    if found is None:
        return None
    path, raw = found
    csv = path.suffix.lower() == ".csv"
    cols: dict[str, pl.Series] = {}
    for col in (N.USER_ID, N.DECISION, *N.CORRECTABLE, N.NOTE):
        if col not in raw.columns:
            cols[col] = pl.Series(col, [None] * raw.height, dtype=pl.String)
            continue
        # a CSV value is read without the spaces around it; a Parquet note as it is stored
        values = text(raw[col]) if col != N.NOTE or csv else raw[col].cast(pl.String)
        cols[col] = values.str.to_lowercase() if col in _LOWER else values
    frame = pl.DataFrame(cols)
    return frame.select(
        pl.col(N.USER_ID).cast(pl.Int64),
        pl.lit(r.round, dtype=pl.Int64).alias(N.ROUND),
        N.DECISION,
        *(
            pl.col(c).cast(pl.Float64)
            for c in (N.GROSS_LOSS_USD, N.NET_ASSETS_USD, N.DEPEG_COMP_USD)
        ),
        N.KYC_STATUS,
        N.REGION,
        pl.col(N.NOTE).fill_null(""),
    ).sort(N.USER_ID)


def _records(frame: pl.DataFrame) -> list[tuple[object, ...]]:
    return [tuple(row) for row in frame.select(_RECORD).sort(N.USER_ID).iter_rows()]


def check_appeals_applied(r: RunFiles) -> Result:
    # the recomputation uses this module's corrections: imported when the check runs
    from allocator.analysis.checks.recompute import recompute_users

    mine = r.appeals
    prev = previous(r)
    problems = []
    earlier = mine.filter(pl.col(N.ROUND) < r.round)
    before = prev.appeals if prev.later_round else pl.DataFrame(schema=dict(mine.schema))
    if _records(earlier) != _records(before):
        problems.append(
            f"the appeals of earlier rounds are not those of round {prev.round}'s "
            f"{N.APPEALS_FILE} ({earlier.height:,} here, {before.height:,} there)"
        )
    new = mine.filter(pl.col(N.ROUND) == r.round)
    stray = mine.filter(pl.col(N.ROUND) > r.round)
    if stray.height:
        problems.append(f"{stray.height:,} appeal(s) of a later round, " + examples(stray))
    parsed = _parsed_file(r)
    if parsed is None and new.height:
        problems.append(f"{new.height:,} appeal(s) of this round, but it recorded no appeals file")
    if parsed is not None and _records(parsed) != _records(new):
        problems.append(
            f"this round's appeals in {N.APPEALS_FILE} are not the rows of its appeals file "
            f"({new.height:,} here, {parsed.height:,} in the file)"
        )
    dup = mine.filter(pl.col(N.USER_ID).is_duplicated())
    if dup.height:
        problems.append(f"{dup.height:,} user(s) appealed twice, " + examples(dup))
    corrected_n = pl.sum_horizontal(pl.col(c).is_not_null().cast(pl.Int32) for c in N.CORRECTABLE)
    odd = mine.filter(
        ~pl.col(N.DECISION).is_in(list(N.APPEAL_DECISIONS))
        | ((pl.col(N.DECISION) == N.DECISION_UPHOLD) & (corrected_n > 0))
        | ((pl.col(N.DECISION) == N.DECISION_CORRECT) & (corrected_n == 0))
    )
    if odd.height:
        problems.append(
            f"{odd.height:,} appeal(s) whose decision does not fit its values (an uphold that "
            "corrects, a correct that does not, an unknown decision), "
            + examples(odd.select(N.USER_ID, N.DECISION))
        )
    status = pl.concat(
        [
            r.allocations.select(N.USER_ID, pl.lit("eligible").alias("_status")),
            r.excluded.select(N.USER_ID, pl.format("excluded:{}", N.REASON).alias("_status")),
        ]
    )
    both = mine.join(status, on=N.USER_ID, how="left")
    wrong = both.filter(pl.col(N.OUTCOME) != pl.col("_status").fill_null("absent"))
    if wrong.height:
        problems.append(
            f"{wrong.height:,} appeal(s) whose recorded outcome is not the user's status in the "
            "run, " + examples(wrong.select(N.USER_ID, N.DECISION, N.OUTCOME, "_status"))
        )
    again = recompute_users(r).select(N.USER_ID, WAIVED_RECOMPUTED)
    waived = (
        mine.filter(pl.col(N.DECISION) == N.DECISION_REINSTATE)
        .select(N.USER_ID, N.WAIVED)
        .join(again, on=N.USER_ID, how="left")
    )
    off = waived.filter(pl.col(N.WAIVED).fill_null("") != pl.col(WAIVED_RECOMPUTED).fill_null(""))
    if off.height:
        problems.append(
            f"{off.height:,} reinstatement(s) whose waived rules are not those the user fails "
            "with the appeal's values, " + examples(off)
        )
    kept_out = both.filter(
        (pl.col(N.DECISION) == N.DECISION_REINSTATE)
        & ~pl.col("_status").is_in(["eligible", f"excluded:{N.REASON_VOUCHER_EXPIRED}"])
    )
    if kept_out.height:
        problems.append(
            f"{kept_out.height:,} reinstated user(s) not allocated, "
            + examples(kept_out.select(N.USER_ID, "_status"))
        )
    if problems:
        return False, "; ".join(problems)
    by = {d: int((new[N.DECISION] == d).sum()) for d in N.APPEAL_DECISIONS}
    return True, (
        f"{new.height:,} appeal(s) of this round as its file gives them ({by['reinstate']:,} "
        f"reinstate, {by['correct']:,} correct, {by['uphold']:,} uphold) and {earlier.height:,} "
        "of earlier rounds, each applied as decided"
    )
