r"""Appeals in a later round: checked against the chain, applied to the users before the rules.

An appeal is decided once (a user appealed in round 2 cannot appeal again in round 3: the
decision is final) and stays in force in every later round, so that a reinstated user is not
dropped again, and a corrected value stays corrected.

``correct``
    The corrected values (:data:`allocator.names.CORRECTABLE`) replace the user's inputs before
    any rule: ``gross_loss_usd`` the counted loss of their events (before depeg netting; the
    per-product split is left as the events give it), ``net_assets_usd`` the snapshot (a user
    missing from it is then in it), ``depeg_comp_usd``, ``kyc_status`` and ``region`` the users
    table. The rules then decide the user as anyone else: eligible with the loss, ratio and
    weight of the corrected values, or excluded with the first rule they still fail.
``reinstate``
    Any corrected values apply first; then every rule the user still fails is waived (recorded in
    appeals.parquet's ``waived``), and the user is eligible with their computed loss. With a
    phase-in band, a waived loss or ratio rule no longer scales them (factor 1 for that rule). A
    reinstated user needs a positive loss, a loss ratio (a snapshot row, or ``net_assets_usd`` in
    the appeal) and a users-table record (an appeal cannot create an account).
``uphold``
    The earlier decision stands; nothing changes, and the appeal is recorded.

Refused (exit 2, nothing written): a user who was never liquidated, a user appealed in an
earlier round, a user who forfeited an expired voucher, a ``reinstate`` of a user the rules
already admit, and any appeal of a user already *paid in full*: holding at least
:math:`\min(\text{cap\_usd}, L_i)` (the largest voucher, or the user's whole loss after the
appeal), so that no decision could pay them more.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import numpy as np
import polars as pl

from allocator import names as N
from allocator.errors import InputError
from allocator.kernel.money import format_cents
from allocator.runs.contract import APPEALS_SCHEMA, canonical_round_file
from allocator.settings.models import Scenario
from allocator.vouchers.eligibility import EligibilityResult, UserTable
from allocator.vouchers.eligibility.reasons import fails_column
from allocator.vouchers.eligibility.schema import COL_IN_SNAPSHOT, COL_IN_USERS

__all__ = [
    "appeals_record",
    "check_new_appeals",
    "check_reinstated",
    "corrected_table",
    "no_appeals",
    "paid_in_full",
]

_NANO = 10**9


def no_appeals() -> pl.DataFrame:
    """An empty appeals.parquet frame (round 2 without an appeals file)."""
    return pl.DataFrame(schema=APPEALS_SCHEMA)


def _refuse(path: Path, users: pl.DataFrame, what: str, hint: str) -> InputError:
    first = users.row(0, named=True)
    more = f" ({users.height:,} such appeals)" if users.height > 1 else ""
    return InputError(
        f"{path}: the appeal of user {first[N.USER_ID]} (decision {first[N.DECISION]!r}) "
        f"{what}{more}; nothing was written.",
        hint=hint,
    )


def check_new_appeals(
    new: pl.DataFrame,
    *,
    path: Path,
    in_force: pl.DataFrame,
    liquidated: pl.Series,
    forfeited: pl.Series,
) -> None:
    """What can be refused before any rule runs: users never liquidated, appealed before, or
    forfeited (module docstring).

    Raises
    ------
    InputError
        The first such appeal, naming the file and the user.
    """
    unknown = new.filter(~pl.col(N.USER_ID).is_in(liquidated.implode()))
    if unknown.height:
        raise _refuse(
            path,
            unknown,
            "names a user who is not in the liquidations table: only liquidated users have a "
            "loss to appeal",
            "check the user id against the run's data",
        )
    again = new.join(in_force.select(N.USER_ID, pl.col(N.ROUND).alias("_decided")), on=N.USER_ID)
    if again.height:
        row = again.row(0, named=True)
        raise _refuse(
            path,
            again,
            f"repeats an appeal decided in round {row['_decided']}; a decision is final",
            "remove the row (appeals.parquet of the previous run lists every decided appeal)",
        )
    gone = new.filter(pl.col(N.USER_ID).is_in(forfeited.implode()))
    if gone.height:
        raise _refuse(
            path,
            gone,
            "names a user who forfeited an expired voucher (rounds.unclaimed = 'expire'): "
            "nothing more is paid to them",
            "remove the row",
        )


def _nano(usd: float | None) -> int:
    return 0 if usd is None else int((Decimal(repr(float(usd))) * _NANO).to_integral_value())


def corrected_table(users: UserTable, appeals: pl.DataFrame) -> UserTable:
    """The per-user table with every appeal's corrected values in place (module docstring).

    The pass's loss total moves by the corrections, so that the reconciliation of losses (counted
    = eligible + excluded) still holds to the nano-dollar.
    """
    fixes = appeals.select(N.USER_ID, *(pl.col(c).alias(f"_fix_{c}") for c in N.CORRECTABLE))
    if fixes.height == 0:
        return users
    table = users.table.join(fixes, on=N.USER_ID, how="left", maintain_order="left")
    before = table[N.GROSS_LOSS_USD].to_list()
    after_fix = table[f"_fix_{N.GROSS_LOSS_USD}"].to_list()
    moved = sum(
        _nano(a) - _nano(b) for a, b in zip(after_fix, before, strict=True) if a is not None
    )
    table = table.with_columns(
        *(pl.coalesce(f"_fix_{c}", c).alias(c) for c in N.CORRECTABLE),
        (pl.col(COL_IN_SNAPSHOT) | pl.col(f"_fix_{N.NET_ASSETS_USD}").is_not_null()).alias(
            COL_IN_SNAPSHOT
        ),
    ).drop(f"_fix_{c}" for c in N.CORRECTABLE)
    totals = dict(users.totals)
    totals["loss_nano"] = int(totals["loss_nano"] or 0) + moved
    return UserTable(table=table, totals=totals, rows=users.rows, event_rules=users.event_rules)


def _status(elig: EligibilityResult) -> pl.DataFrame:
    """Every liquidated user's ``loss_usd`` and outcome (``eligible`` or ``excluded:<reason>``)."""
    return pl.concat(
        [
            elig.eligible.select(N.USER_ID, N.LOSS_USD, pl.lit("eligible").alias(N.OUTCOME)),
            elig.excluded.select(
                N.USER_ID, N.LOSS_USD, pl.format("excluded:{}", N.REASON).alias(N.OUTCOME)
            ),
        ]
    )


def _waived(decisions: pl.DataFrame, users: pl.Series) -> pl.DataFrame:
    """``user_id`` and the rules each of ``users`` fails, joined by ``+`` (null: none)."""
    rows = decisions.filter(pl.col(N.USER_ID).is_in(users.implode()))
    failing = pl.concat_list(
        pl.when(pl.col(fails_column(r))).then(pl.lit(r)).otherwise(pl.lit(None, dtype=pl.String))
        for r in N.REASONS
    ).list.drop_nulls()
    return rows.select(
        N.USER_ID,
        pl.when(failing.list.len() > 0)
        .then(failing.list.join("+"))
        .otherwise(pl.lit(None, dtype=pl.String))
        .alias(N.WAIVED),
    )


def check_reinstated(
    new: pl.DataFrame, elig: EligibilityResult, users: UserTable, *, path: Path
) -> None:
    """A new ``reinstate`` must waive something and leave a user who can be weighed: a users
    record, a positive loss and a loss ratio (module docstring).

    Raises
    ------
    InputError
        The first such appeal, naming the file, the user and what the appeal lacks.
    """
    ids = new.filter(pl.col(N.DECISION) == N.DECISION_REINSTATE)[N.USER_ID]
    if ids.len() == 0:
        return
    assert elig.decisions is not None
    waived = _waived(elig.decisions, ids).join(new, on=N.USER_ID)
    nothing = waived.filter(pl.col(N.WAIVED).is_null())
    if nothing.height:
        raise _refuse(
            path,
            nothing,
            "reinstates a user the rules already admit (with the appeal's values, if any): "
            "there is no rule to waive",
            "decide 'correct' to change the user's values, or 'uphold'",
        )
    table = users.table.filter(pl.col(N.USER_ID).is_in(ids.implode()))
    row_of = elig.eligible.select(N.USER_ID, N.LOSS_USD, N.LOSS_RATIO)
    merged = table.select(N.USER_ID, COL_IN_USERS, COL_IN_SNAPSHOT).join(
        row_of, on=N.USER_ID, how="left"
    )
    merged = merged.join(new.select(N.USER_ID, N.DECISION), on=N.USER_ID)
    for cond, what, hint in (
        (
            ~pl.col(COL_IN_USERS),
            "reinstates a user with no record in the users table (region, KYC, account age)",
            "add the user's record to the users table; an appeal cannot create an account",
        ),
        (
            ~pl.col(COL_IN_SNAPSHOT),
            "reinstates a user missing from the snapshot without net assets, so no loss "
            "ratio can be formed",
            "give the user's net assets in the appeal's net_assets_usd column",
        ),
        (
            ~(pl.col(N.LOSS_USD) > 0).fill_null(False),
            "reinstates a user with no counted loss (no event in the window on a covered product)",
            "give the loss in the appeal's gross_loss_usd column",
        ),
    ):
        bad = merged.filter(cond)
        if bad.height:
            raise _refuse(path, bad, what, hint)


def paid_in_full(
    new: pl.DataFrame,
    elig: EligibilityResult,
    held: pl.DataFrame,
    scenario: Scenario,
    *,
    path: Path,
) -> None:
    """Refuse an appeal of a user who already holds :math:`\\min(\\text{cap}, L_i)` (loss after the
    appeal): no decision could pay them more.

    Raises
    ------
    InputError
        The first such appeal, naming the file, the user, what they hold and their most.
    """
    status = _status(elig)
    rows = (
        new.select(N.USER_ID, N.DECISION)
        .join(held, on=N.USER_ID, how="inner")
        .join(status, on=N.USER_ID, how="left")
        .filter(pl.col(N.PAID_BEFORE_CENTS) > 0)
    )
    if rows.height == 0:
        return
    loss = rows[N.LOSS_USD].fill_null(0.0).to_numpy()
    most = np.minimum(float(scenario.bounds.cap_usd), loss)
    # the most a voucher can be, in whole cents (a cap is rounded down to the cent)
    most_c = np.floor(most * 100.0 + 1e-6).astype(np.int64)
    full = rows[N.PAID_BEFORE_CENTS].to_numpy() >= most_c
    if full.any():
        bad = rows.filter(pl.Series(full))
        first = bad.row(0, named=True)
        limit = int(most_c[int(np.flatnonzero(full)[0])])
        raise _refuse(
            path,
            bad,
            f"is for a user paid in full already: they hold USD "
            f"{format_cents(first[N.PAID_BEFORE_CENTS])}, and the most a voucher can be is USD "
            f"{format_cents(limit)} (the smaller of bounds.cap_usd and their loss)",
            "remove the row: no decision could pay this user more",
        )


def appeals_record(
    in_force: pl.DataFrame,
    new: pl.DataFrame,
    elig: EligibilityResult,
    *,
    round_number: int,
) -> pl.DataFrame:
    """appeals.parquet: the appeals in force from earlier rounds and this round's, each with
    the rules a reinstatement waives in this round and the user's outcome in this round
    (``elig`` is the round's final split, forfeits included)."""
    assert elig.decisions is not None
    fresh = new.with_columns(pl.lit(round_number, dtype=pl.Int64).alias(N.ROUND))
    cols = [c for c in APPEALS_SCHEMA if c not in (N.WAIVED, N.OUTCOME)]
    both = pl.concat([in_force.select(cols), fresh.select(cols)], how="vertical_relaxed")
    reinstated = both.filter(pl.col(N.DECISION) == N.DECISION_REINSTATE)[N.USER_ID]
    both = both.join(_waived(elig.decisions, reinstated), on=N.USER_ID, how="left")
    both = both.join(_status(elig).select(N.USER_ID, N.OUTCOME), on=N.USER_ID, how="left")
    return canonical_round_file(N.APPEALS_FILE, both)
