"""The reconciliation: counts and USD totals that tie the inputs to the two output tables."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import polars as pl

from allocator import names as N
from allocator.errors import CheckFailedError
from allocator.kernel.money import format_usd
from allocator.vouchers.eligibility.losses import NANO_PER_USD

__all__ = ["RECONCILE_RTOL", "Reconciliation", "reconcile"]

#: Relative tolerance of the loss reconciliation (sums of floats in different orders).
RECONCILE_RTOL = 1e-6


@dataclass(frozen=True)
class Reconciliation:
    """Counts and USD totals that tie the inputs to the two output tables.

    Users: ``liquidated_users = eligible_users + excluded_users`` and
    ``excluded_users = sum(excluded_by_reason.values())``.
    Events: ``events_total = events_counted + events_outside_window +
    events_product_not_covered`` (an event is *product_not_covered* when its product is not
    covered, *outside_window* when its product is covered but its time is outside the window)
    and ``events_counted = events_eligible + events_excluded``.
    Losses (USD): ``counted_loss_usd = eligible_gross_loss_usd + excluded_loss_usd`` and
    ``eligible_loss_usd = eligible_gross_loss_usd - depeg_netted_usd``, within
    :data:`RECONCILE_RTOL`. ``counted_loss_usd`` and the event counts come from the per-user
    aggregation before any join, the other figures from the output tables.
    """

    liquidated_users: int
    eligible_users: int
    excluded_users: int
    excluded_by_reason: dict[str, int]
    events_total: int
    events_counted: int
    events_outside_window: int
    events_product_not_covered: int
    events_eligible: int
    events_excluded: int
    counted_loss_usd: float
    eligible_loss_usd: float
    eligible_gross_loss_usd: float
    excluded_loss_usd: float
    depeg_netted_usd: float

    def failures(self) -> list[str]:
        """Every identity of the class docstring that does not hold (empty when all hold)."""
        out: list[str] = []

        def same_int(label: str, lhs: int, rhs: int) -> None:
            if lhs != rhs:
                out.append(f"{label}: {lhs:,} != {rhs:,}")

        def same_float(label: str, lhs: float, rhs: float) -> None:
            scale = max(abs(lhs), abs(rhs), 1.0)
            if not (abs(lhs - rhs) <= RECONCILE_RTOL * scale):
                out.append(
                    f"{label}: {format_usd(lhs, decimals=6)} != {format_usd(rhs, decimals=6)}"
                )

        keys = tuple(self.excluded_by_reason)
        # a later round may add its own reason (a forfeited voucher) after the rules' reasons
        if keys[: len(N.REASONS)] != N.REASONS or not set(keys[len(N.REASONS) :]) <= set(
            N.ROUND_REASONS
        ):
            out.append(f"excluded_by_reason keys {keys} != {N.REASONS}")
        same_int(
            "liquidated users = eligible + excluded",
            self.liquidated_users,
            self.eligible_users + self.excluded_users,
        )
        same_int(
            "excluded users = sum over reasons",
            self.excluded_users,
            sum(self.excluded_by_reason.values()),
        )
        same_int(
            "events total = counted + outside window + product not covered",
            self.events_total,
            self.events_counted + self.events_outside_window + self.events_product_not_covered,
        )
        same_int(
            "events counted = eligible + excluded",
            self.events_counted,
            self.events_eligible + self.events_excluded,
        )
        same_float(
            "counted loss = eligible gross + excluded",
            self.counted_loss_usd,
            self.eligible_gross_loss_usd + self.excluded_loss_usd,
        )
        same_float(
            "eligible loss = eligible gross - depeg netted",
            self.eligible_loss_usd,
            self.eligible_gross_loss_usd - self.depeg_netted_usd,
        )
        counts = [
            self.liquidated_users,
            self.eligible_users,
            self.excluded_users,
            self.events_total,
            self.events_counted,
            self.events_outside_window,
            self.events_product_not_covered,
            *self.excluded_by_reason.values(),
        ]
        if min(counts) < 0:
            out.append("a count is negative")
        return out

    def check(self) -> None:
        """Raise :class:`~allocator.errors.CheckFailedError` unless every identity holds."""
        bad = self.failures()
        if bad:
            raise CheckFailedError(
                "Eligibility does not reconcile: " + "; ".join(bad) + ".",
                hint="duplicate user_id rows in the users or snapshot table are the usual cause.",
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-ready dict (``excluded_by_reason`` in the order of the reason codes)."""
        return {
            "liquidated_users": self.liquidated_users,
            "eligible_users": self.eligible_users,
            "excluded_users": self.excluded_users,
            "excluded_by_reason": dict(self.excluded_by_reason),
            "events_total": self.events_total,
            "events_counted": self.events_counted,
            "events_outside_window": self.events_outside_window,
            "events_product_not_covered": self.events_product_not_covered,
            "events_eligible": self.events_eligible,
            "events_excluded": self.events_excluded,
            "counted_loss_usd": self.counted_loss_usd,
            "eligible_loss_usd": self.eligible_loss_usd,
            "eligible_gross_loss_usd": self.eligible_gross_loss_usd,
            "excluded_loss_usd": self.excluded_loss_usd,
            "depeg_netted_usd": self.depeg_netted_usd,
        }

    def lines(self) -> list[str]:
        """The reconciliation as aligned human-readable lines."""
        w = max(len(r) for r in N.REASONS) + 4
        out = [
            f"{'liquidated users':<{w}}{self.liquidated_users:>16,}",
            f"{'  eligible':<{w}}{self.eligible_users:>16,}",
            f"{'  excluded':<{w}}{self.excluded_users:>16,}",
        ]
        out += [f"{'    ' + r:<{w}}{n:>16,}" for r, n in self.excluded_by_reason.items()]
        out += [
            f"{'events':<{w}}{self.events_total:>16,}",
            f"{'  counted':<{w}}{self.events_counted:>16,}",
            f"{'  outside window':<{w}}{self.events_outside_window:>16,}",
            f"{'  product not covered':<{w}}{self.events_product_not_covered:>16,}",
            f"{'counted loss (USD)':<{w}}{format_usd(self.counted_loss_usd):>16}",
            f"{'  eligible, gross':<{w}}{format_usd(self.eligible_gross_loss_usd):>16}",
            f"{'  excluded, gross':<{w}}{format_usd(self.excluded_loss_usd):>16}",
            f"{'eligible loss (USD)':<{w}}{format_usd(self.eligible_loss_usd):>16}",
            f"{'  depeg netted':<{w}}{format_usd(self.depeg_netted_usd):>16}",
        ]
        status = "ok" if not self.failures() else "FAILED: " + "; ".join(self.failures())
        out.append(f"{'reconciliation':<{w}}{status:>16}")
        return out


def exact_sum(column: str) -> pl.Expr:
    """Sum of a Float64 USD column through nano-dollar decimals (the same bits in any order)."""
    return pl.col(column).cast(pl.Decimal(38, 9)).sum().cast(pl.Float64)


def reconcile(
    eligible: pl.DataFrame, excluded: pl.DataFrame, totals: Mapping[str, Any], rows: int
) -> Reconciliation:
    by_reason = dict.fromkeys(N.REASONS, 0)
    for reason, count in excluded.group_by(N.REASON).len().sort(N.REASON).iter_rows():
        by_reason[reason] = int(count)
    e = eligible.select(
        exact_sum(N.LOSS_USD).alias("loss"),
        exact_sum(N.GROSS_LOSS_USD).alias("gross"),
        pl.col(N.N_EVENTS).sum().cast(pl.Int64).alias("events"),
    ).row(0, named=True)
    x = excluded.select(
        exact_sum(N.GROSS_LOSS_USD).alias("gross"),
        pl.col(N.N_EVENTS).sum().cast(pl.Int64).alias("events"),
    ).row(0, named=True)
    return Reconciliation(
        liquidated_users=int(totals["users"]),
        eligible_users=eligible.height,
        excluded_users=excluded.height,
        excluded_by_reason=by_reason,
        events_total=rows,
        events_counted=int(totals["counted"]),
        events_outside_window=int(totals["covered"]) - int(totals["counted"]),
        events_product_not_covered=int(totals["events"]) - int(totals["covered"]),
        events_eligible=int(e["events"] or 0),
        events_excluded=int(x["events"] or 0),
        counted_loss_usd=int(totals["loss_nano"] or 0) / NANO_PER_USD,
        eligible_loss_usd=float(e["loss"] or 0.0),
        eligible_gross_loss_usd=float(e["gross"] or 0.0),
        excluded_loss_usd=float(x["gross"] or 0.0),
        depeg_netted_usd=float((e["gross"] or 0.0) - (e["loss"] or 0.0)),
    )
