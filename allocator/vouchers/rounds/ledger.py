r"""The voucher ledger of a distribution: every voucher issued so far and what became of it.

A voucher is one payout: what a user was paid in one round (round 1's whole voucher, a later
round's ``delta_cents``), under that round's idempotency key. Its ``status`` starts
``outstanding``; a round's redemptions file settles it as ``redeemed`` (claimed by the deadline)
or, when not claimed, as ``unclaimed`` (``rounds.unclaimed = "keep"``: still valid, and a later
redemptions file may still report it redeemed or expire it) or ``expired``
(``rounds.unclaimed = "expire"``: taken back into the pool). ``redeemed`` and ``expired`` are
final.

What a user holds is the sum of their vouchers that have not expired,

.. math::

    H_i = \sum_{v \in V_i,\; s_v \ne \text{expired}} c_v,

and before round :math:`k` (after its redemptions file) that is the user's ``paid_before_cents``,
the least round :math:`k` may pay them in total (no claw-back). A user with an expired voucher
*forfeits*: nothing more is paid to them in this round or later; they keep what they hold.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from allocator import names as N
from allocator.errors import InputError
from allocator.runs.contract import VOUCHERS_SCHEMA, RunDir, canonical_round_file

__all__ = [
    "Settlement",
    "forfeited_users",
    "held_cents",
    "ledger_of",
    "settle",
    "with_new_vouchers",
]


def ledger_of(run: RunDir) -> pl.DataFrame:
    """The ledger as a run left it: its vouchers.parquet from round 2 on; in round 1 every payout
    of payouts.csv, outstanding."""
    if run.vouchers is not None:
        return run.vouchers
    p = run.payouts
    frame = pl.DataFrame(
        {
            N.USER_ID: p[N.USER_ID],
            N.ROUND: pl.Series([1] * p.height, dtype=pl.Int64),
            N.IDEMPOTENCY_KEY: p[N.IDEMPOTENCY_KEY].cast(pl.String),
            N.CENTS: p["amount_cents"],
            N.STATUS: pl.Series([N.VOUCHER_OUTSTANDING] * p.height, dtype=pl.String),
            N.SETTLED_ROUND: pl.Series([None] * p.height, dtype=pl.Int64),
        },
        schema=VOUCHERS_SCHEMA,
    )
    return canonical_round_file(N.VOUCHERS_FILE, frame)


@dataclass(frozen=True, eq=False)
class Settlement:
    """A ledger after a round's redemptions file, and what the file did."""

    ledger: pl.DataFrame
    redeemed: int
    unclaimed: int
    expired: int
    expired_cents: int


def settle(
    ledger: pl.DataFrame,
    redemptions: pl.DataFrame | None,
    *,
    round_number: int,
    policy: str,
    path: Path | None,
) -> Settlement:
    """Apply a redemptions file (:func:`allocator.data.roundfiles.read_redemptions`) to the ledger.

    Raises
    ------
    InputError
        A key no earlier round issued, a key paid to another user than the row says, or a
        voucher already settled as redeemed or expired.
    """
    if redemptions is None or redemptions.height == 0:
        return Settlement(ledger, 0, 0, 0, 0)
    where = str(path) if path is not None else "the redemptions file"
    joined = redemptions.with_row_index("_row").join(
        ledger.select(
            N.IDEMPOTENCY_KEY,
            pl.col(N.USER_ID).alias("_issued_to"),
            N.STATUS,
            N.ROUND,
            N.SETTLED_ROUND,
        ),
        on=N.IDEMPOTENCY_KEY,
        how="left",
    )
    unknown = joined.filter(pl.col("_issued_to").is_null())
    if unknown.height:
        row = unknown.row(0, named=True)
        raise InputError(
            f"{where}: idempotency_key {row[N.IDEMPOTENCY_KEY]!r} (user {row[N.USER_ID]}) is "
            f"not a voucher of rounds 1 to {round_number - 1} ({unknown.height:,} unknown "
            "key(s)): a redemptions file reports on the payouts.csv of earlier rounds.",
            hint="take the keys from the earlier rounds' payouts.csv files",
        )
    other = joined.filter(pl.col("_issued_to") != pl.col(N.USER_ID))
    if other.height:
        row = other.row(0, named=True)
        raise InputError(
            f"{where}: idempotency_key {row[N.IDEMPOTENCY_KEY]!r} paid user {row['_issued_to']} "
            f"in round {row[N.ROUND]}, not user {row[N.USER_ID]} as the row says "
            f"({other.height:,} such row(s)).",
            hint="each row names a voucher's key and the user it paid",
        )
    final = joined.filter(pl.col(N.STATUS).is_in([N.VOUCHER_REDEEMED, N.VOUCHER_EXPIRED]))
    if final.height:
        row = final.row(0, named=True)
        raise InputError(
            f"{where}: the voucher {row[N.IDEMPOTENCY_KEY]!r} of user {row[N.USER_ID]} (round "
            f"{row[N.ROUND]}) was already settled as {row[N.STATUS]} in round "
            f"{row[N.SETTLED_ROUND]} ({final.height:,} such row(s)); a redeemed or expired "
            "voucher is settled for good.",
            hint="leave settled vouchers out of the file",
        )
    unclaimed_status = N.VOUCHER_EXPIRED if policy == "expire" else N.VOUCHER_UNCLAIMED
    news = redemptions.select(
        N.IDEMPOTENCY_KEY,
        pl.when(pl.col(N.REDEEMED))
        .then(pl.lit(N.VOUCHER_REDEEMED))
        .otherwise(pl.lit(unclaimed_status))
        .alias("_new_status"),
    )
    updated = (
        ledger.join(news, on=N.IDEMPOTENCY_KEY, how="left")
        .with_columns(
            pl.coalesce("_new_status", N.STATUS).alias(N.STATUS),
            pl.when(pl.col("_new_status").is_not_null())
            .then(pl.lit(round_number, dtype=pl.Int64))
            .otherwise(pl.col(N.SETTLED_ROUND))
            .alias(N.SETTLED_ROUND),
        )
        .drop("_new_status")
    )
    redeemed = int(redemptions[N.REDEEMED].sum())
    not_redeemed = redemptions.height - redeemed
    expired_keys = redemptions.filter(~pl.col(N.REDEEMED))[N.IDEMPOTENCY_KEY].implode()
    expired_cents = (
        int(ledger.filter(pl.col(N.IDEMPOTENCY_KEY).is_in(expired_keys))[N.CENTS].sum())
        if policy == "expire"
        else 0
    )
    return Settlement(
        ledger=canonical_round_file(N.VOUCHERS_FILE, updated),
        redeemed=redeemed,
        unclaimed=0 if policy == "expire" else not_redeemed,
        expired=not_redeemed if policy == "expire" else 0,
        expired_cents=expired_cents,
    )


def held_cents(ledger: pl.DataFrame) -> pl.DataFrame:
    """Per user with a voucher: ``user_id`` and ``paid_before_cents``, the cents of their vouchers
    that have not expired (:math:`H_i`), sorted by user id."""
    return (
        ledger.group_by(N.USER_ID)
        .agg(
            pl.col(N.CENTS)
            .filter(pl.col(N.STATUS) != N.VOUCHER_EXPIRED)
            .sum()
            .cast(pl.Int64)
            .alias(N.PAID_BEFORE_CENTS)
        )
        .sort(N.USER_ID)
    )


def forfeited_users(ledger: pl.DataFrame) -> pl.Series:
    """The users with an expired voucher: they forfeit, and are paid nothing more."""
    return ledger.filter(pl.col(N.STATUS) == N.VOUCHER_EXPIRED)[N.USER_ID].unique().sort()


def with_new_vouchers(
    ledger: pl.DataFrame, payouts: pl.DataFrame, *, round_number: int
) -> pl.DataFrame:
    """The ledger with a round's payouts added as outstanding vouchers (``payouts`` has
    ``user_id``, ``idempotency_key`` and the cents in ``amount_cents``)."""
    new = pl.DataFrame(
        {
            N.USER_ID: payouts[N.USER_ID].cast(pl.Int64),
            N.ROUND: pl.Series([round_number] * payouts.height, dtype=pl.Int64),
            N.IDEMPOTENCY_KEY: payouts[N.IDEMPOTENCY_KEY].cast(pl.String),
            N.CENTS: payouts["amount_cents"].cast(pl.Int64),
            N.STATUS: pl.Series([N.VOUCHER_OUTSTANDING] * payouts.height, dtype=pl.String),
            N.SETTLED_ROUND: pl.Series([None] * payouts.height, dtype=pl.Int64),
        },
        schema=VOUCHERS_SCHEMA,
    )
    return canonical_round_file(N.VOUCHERS_FILE, pl.concat([ledger, new]))
