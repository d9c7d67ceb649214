"""Per-user depeg compensation against what the users table says was paid, and the
reconciliation that ties events, positions, users and cents together."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import polars as pl

from allocator import names as N
from allocator.depeg.positions import COMPENSATION_CENTS, COMPENSATION_USD, REASON, ZERO_REASONS
from allocator.errors import CheckFailedError
from allocator.kernel.money import CENTS_PER_USD, cents_array_to_usd, format_cents

# --- users.parquet ---
POSITIONS = "positions"
COMPENSATED_POSITIONS = "compensated_positions"
PAID_USD = "paid_usd"
PAID_CENTS = "paid_cents"
DIFFERENCE_CENTS = "difference_cents"
STATUS = "status"

# --- computed total against users.depeg_comp_usd ---
STATUS_MATCH = "match"  # both positive and equal to the cent
STATUS_NOTHING_DUE = "nothing_due"  # positions in the window, nothing computed, nothing paid
STATUS_NOT_PAID = "computed_not_paid"
STATUS_AMOUNT_DIFFERS = "amount_differs"
STATUS_PAID_WITHOUT = "paid_without_compensable_position"
STATUS_NO_USER_RECORD = "no_user_record"
STATUSES = (
    STATUS_MATCH,
    STATUS_NOTHING_DUE,
    STATUS_NOT_PAID,
    STATUS_AMOUNT_DIFFERS,
    STATUS_PAID_WITHOUT,
    STATUS_NO_USER_RECORD,
)

USER_COLUMNS: dict[str, pl.DataType] = {N.USER_ID: pl.Int64(), N.DEPEG_COMP_USD: pl.Float64()}


@dataclass(frozen=True)
class DepegReconciliation:
    """Counts and cents tying the events to positions.parquet and users.parquet.

    Positions: ``positions_in_window = positions_compensated + sum(positions_zero_by_reason)``.
    Cents: ``positions_cents = users_cents`` exactly. Users: every row of users.parquet has
    one status, ``users_rows = sum(users_by_status)``; the paid side,
    ``paid_cents`` (every positive ``depeg_comp_usd`` of the users table), equals the paid cents
    summed over users.parquet, since every paid user has a row there.
    ``outside_window_*`` describe positions in a depeg asset with depeg collateral outside the
    window (left to case review): how many, what the formula would pay, and how many could not
    be priced.
    """

    events_total: int
    positions_in_window: int
    positions_compensated: int
    positions_zero_by_reason: dict[str, int]
    positions_cents: int
    users_rows: int
    users_compensated: int
    users_cents: int
    users_by_status: dict[str, int]
    paid_users: int
    paid_cents: int
    paid_cents_in_users_file: int
    outside_window_positions: int
    outside_window_cents: int
    outside_window_unpriced: int

    def failures(self) -> list[str]:
        """Every identity of the class docstring that does not hold (empty when all hold)."""
        out: list[str] = []

        def same(label: str, lhs: int, rhs: int) -> None:
            if lhs != rhs:
                out.append(f"{label}: {lhs:,} != {rhs:,}")

        same(
            "positions in window = compensated + zero",
            self.positions_in_window,
            self.positions_compensated + sum(self.positions_zero_by_reason.values()),
        )
        same("cents over positions = cents over users", self.positions_cents, self.users_cents)
        same("users rows = sum over statuses", self.users_rows, sum(self.users_by_status.values()))
        same(
            "paid cents in users table = in users.parquet",
            self.paid_cents,
            self.paid_cents_in_users_file,
        )
        if tuple(self.positions_zero_by_reason) != ZERO_REASONS:
            out.append(f"zero reasons {tuple(self.positions_zero_by_reason)} != {ZERO_REASONS}")
        if tuple(self.users_by_status) != STATUSES:
            out.append(f"statuses {tuple(self.users_by_status)} != {STATUSES}")
        if min(self.positions_cents, self.users_cents, self.paid_cents) < 0:
            out.append("a total is negative")
        return out

    def check(self) -> None:
        """Raise :class:`~allocator.errors.CheckFailedError` unless every identity holds."""
        bad = self.failures()
        if bad:
            raise CheckFailedError(
                "Depeg compensation does not reconcile: " + "; ".join(bad) + ".",
                hint="duplicate event_id or user_id rows are the usual cause.",
            )

    @property
    def computed_minus_paid_cents(self) -> int:
        return self.users_cents - self.paid_cents

    def to_dict(self) -> dict[str, Any]:
        return {
            "events_total": self.events_total,
            "positions_in_window": self.positions_in_window,
            "positions_compensated": self.positions_compensated,
            "positions_zero_by_reason": dict(self.positions_zero_by_reason),
            "positions_cents": self.positions_cents,
            "users_rows": self.users_rows,
            "users_compensated": self.users_compensated,
            "users_cents": self.users_cents,
            "users_by_status": dict(self.users_by_status),
            "paid_users": self.paid_users,
            "paid_cents": self.paid_cents,
            "paid_cents_in_users_file": self.paid_cents_in_users_file,
            "computed_minus_paid_cents": self.computed_minus_paid_cents,
            "outside_window_positions": self.outside_window_positions,
            "outside_window_cents": self.outside_window_cents,
            "outside_window_unpriced": self.outside_window_unpriced,
            "ok": not self.failures(),
        }

    def lines(self) -> list[str]:
        """The reconciliation as aligned human-readable lines."""
        w = 44

        out = [
            f"{'positions in window with depeg collateral':<{w}}{self.positions_in_window:>18,}",
            f"{'  compensated':<{w}}{self.positions_compensated:>18,}",
            f"{'  zero compensation':<{w}}{sum(self.positions_zero_by_reason.values()):>18,}",
        ]
        out += [f"{'    ' + r:<{w}}{n:>18,}" for r, n in self.positions_zero_by_reason.items()]
        out += [
            f"{'compensation over positions (USD)':<{w}}{format_cents(self.positions_cents):>18}",
            f"{'compensation over users (USD)':<{w}}{format_cents(self.users_cents):>18}",
            f"{'users compensated':<{w}}{self.users_compensated:>18,}",
            f"{'paid per users table (USD)':<{w}}{format_cents(self.paid_cents):>18}",
            f"{'  users paid':<{w}}{self.paid_users:>18,}",
            f"{'computed minus paid (USD)':<{w}}{format_cents(self.computed_minus_paid_cents):>18}",
            f"{'users compared':<{w}}{self.users_rows:>18,}",
        ]
        out += [f"{'  ' + s:<{w}}{n:>18,}" for s, n in self.users_by_status.items()]
        out += [
            f"{'outside window (case review)':<{w}}{self.outside_window_positions:>18,}",
            f"{'  formula would pay (USD)':<{w}}{format_cents(self.outside_window_cents):>18}",
            f"{'  not priced':<{w}}{self.outside_window_unpriced:>18,}",
        ]
        status = "ok" if not self.failures() else "FAILED: " + "; ".join(self.failures())
        out.append(f"{'reconciliation':<{w}}{status:>18}")
        return out


def users_columns() -> list[str]:
    """Columns of users.parquet, in order."""
    return [
        N.USER_ID,
        POSITIONS,
        COMPENSATED_POSITIONS,
        COMPENSATION_CENTS,
        COMPENSATION_USD,
        PAID_CENTS,
        PAID_USD,
        DIFFERENCE_CENTS,
        STATUS,
    ]


def _cents_to_usd(cents: pl.Series, name: str) -> pl.Series:
    # NumPy divides each element (correctly rounded); Polars may multiply by the reciprocal.
    values = cents_array_to_usd(cents.cast(pl.Float64).to_numpy())
    return pl.Series(name, values, dtype=pl.Float64)


def users_table(
    positions: pl.DataFrame, users: pl.LazyFrame
) -> tuple[pl.DataFrame, dict[str, int]]:
    """Per user: computed cents against paid cents, with a status; and the paid totals."""
    computed = positions.group_by(N.USER_ID).agg(
        pl.len().cast(pl.Int64).alias(POSITIONS),
        (pl.col(COMPENSATION_CENTS) > 0).sum().cast(pl.Int64).alias(COMPENSATED_POSITIONS),
        pl.col(COMPENSATION_CENTS).sum().cast(pl.Int64).alias(COMPENSATION_CENTS),
    )
    paid_cents = (pl.col(N.DEPEG_COMP_USD) * float(CENTS_PER_USD)).round().cast(pl.Int64)
    ids = computed[N.USER_ID].implode()
    relevant = (
        users.filter((pl.col(N.DEPEG_COMP_USD) > 0) | pl.col(N.USER_ID).is_in(ids))
        .select(
            N.USER_ID,
            pl.col(N.DEPEG_COMP_USD).alias(PAID_USD),
            paid_cents.alias(PAID_CENTS),
            pl.lit(True).alias("_known"),
        )
        .collect()
    )
    paid_total = (
        users.filter(pl.col(N.DEPEG_COMP_USD) > 0)
        .select(
            pl.len().cast(pl.Int64).alias("users"), paid_cents.sum().cast(pl.Int64).alias("cents")
        )
        .collect()
        .row(0, named=True)
    )
    table = (
        computed.join(relevant, on=N.USER_ID, how="full", coalesce=True)
        .with_columns(
            pl.col(POSITIONS).fill_null(0),
            pl.col(COMPENSATED_POSITIONS).fill_null(0),
            pl.col(COMPENSATION_CENTS).fill_null(0),
            pl.col("_known").fill_null(False),
        )
        .sort(N.USER_ID)
    )
    c, p = pl.col(COMPENSATION_CENTS), pl.col(PAID_CENTS)
    status = (
        pl.when(~pl.col("_known"))
        .then(pl.lit(STATUS_NO_USER_RECORD))
        .when((c == 0) & (p == 0))
        .then(pl.lit(STATUS_NOTHING_DUE))
        .when(c == p)
        .then(pl.lit(STATUS_MATCH))
        .when(p == 0)
        .then(pl.lit(STATUS_NOT_PAID))
        .when(c == 0)
        .then(pl.lit(STATUS_PAID_WITHOUT))
        .otherwise(pl.lit(STATUS_AMOUNT_DIFFERS))
    )
    table = (
        table.with_columns(
            _cents_to_usd(table[COMPENSATION_CENTS], COMPENSATION_USD),
            (c - p).alias(DIFFERENCE_CENTS),
            status.alias(STATUS),
        )
        .select(users_columns())
        .rechunk()
    )
    return table, {"users": int(paid_total["users"] or 0), "cents": int(paid_total["cents"] or 0)}


def reconcile(
    positions: pl.DataFrame,
    users: pl.DataFrame,
    paid: Mapping[str, int],
    n_events: int,
    outside: pl.DataFrame,
    out_priced: pl.DataFrame,
) -> DepegReconciliation:
    zero = dict.fromkeys(ZERO_REASONS, 0)
    for r, k in positions.group_by(REASON).len().iter_rows():
        if r is not None:
            zero[r] = int(k)
    statuses = dict.fromkeys(STATUSES, 0)
    for s, k in users.group_by(STATUS).len().iter_rows():
        statuses[s] = int(k)
    return DepegReconciliation(
        events_total=n_events,
        positions_in_window=positions.height,
        positions_compensated=int(positions[REASON].is_null().sum()),
        positions_zero_by_reason=zero,
        positions_cents=int(positions[COMPENSATION_CENTS].sum()),
        users_rows=users.height,
        users_compensated=int((users[COMPENSATION_CENTS] > 0).sum()),
        users_cents=int(users[COMPENSATION_CENTS].sum()),
        users_by_status=statuses,
        paid_users=int(paid["users"]),
        paid_cents=int(paid["cents"]),
        paid_cents_in_users_file=int(users.filter(pl.col(PAID_CENTS) > 0)[PAID_CENTS].sum()),
        outside_window_positions=outside.height,
        outside_window_cents=int(out_priced[COMPENSATION_CENTS].sum()),
        outside_window_unpriced=outside.height - out_priced.height,
    )
