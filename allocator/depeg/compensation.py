r"""The depeg compensation programme: the rule applied to the tables, per position and per
user, with its reconciliation.

The rule and how the announcement is read are in :mod:`allocator.depeg.positions`; users and
the reconciliation in :mod:`allocator.depeg.reconciliation`; :func:`compute_depeg` puts them
together and :func:`allocator.depeg.run.write_depeg_run` writes the run directory atomically.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from allocator import names as N
from allocator.data.conform import conform
from allocator.depeg.positions import (
    ASSET,
    COMPENSATION_CENTS,
    EVENT_COLUMNS,
    PRICE_COLUMNS,
    ReferencePrice,
    check_price_names,
    value_positions,
)
from allocator.depeg.reconciliation import (
    USER_COLUMNS,
    DepegReconciliation,
    reconcile,
    users_table,
)
from allocator.kernel.money import cents_to_usd
from allocator.settings.depeg import DepegRules, validate_depeg_rules

#: Announced total of the real programme (USD), for calibration only.
ANNOUNCED_TOTAL_USD = 283_000_000.0


@dataclass(frozen=True, eq=False)
class DepegResult:
    """Positions (one row per position in the window), users (computed against paid) and totals.

    ``inputs`` maps each table stem to ``{"path", "sha256"}`` when the tables came from files.
    """

    rules: DepegRules
    positions: pl.DataFrame
    users: pl.DataFrame
    references: tuple[ReferencePrice, ...]
    reconciliation: DepegReconciliation
    inputs: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def total_cents(self) -> int:
        return self.reconciliation.positions_cents

    def summary(self) -> dict[str, Any]:
        """Totals, counts and calibration in one JSON-ready dict."""
        rec = self.reconciliation
        return {
            "total_cents": rec.positions_cents,
            "total_usd": cents_to_usd(rec.positions_cents),
            "users_compensated": rec.users_compensated,
            "positions_compensated": rec.positions_compensated,
            "paid_cents": rec.paid_cents,
            "paid_users": rec.paid_users,
            "announced_total_usd": ANNOUNCED_TOTAL_USD,
            "share_of_announced": cents_to_usd(rec.positions_cents) / ANNOUNCED_TOTAL_USD,
            "by_asset_cents": _by_asset(self.positions, self.rules),
            "reconciliation": rec.to_dict(),
        }


def _by_asset(positions: pl.DataFrame, rules: DepegRules) -> dict[str, int]:
    out = dict.fromkeys(rules.assets, 0)
    for asset, cents in positions.group_by(ASSET).agg(pl.col(COMPENSATION_CENTS).sum()).iter_rows():
        if asset is not None:
            out[asset] = int(cents)
    return out


def compute_depeg(
    events: pl.LazyFrame | pl.DataFrame,
    prices: pl.LazyFrame | pl.DataFrame,
    users: pl.LazyFrame | pl.DataFrame,
    rules: DepegRules | None = None,
    *,
    source: Mapping[str, Any] | None = None,
) -> DepegResult:
    """Apply the depeg compensation rule (:mod:`allocator.depeg.positions`) to the input tables.

    Parameters
    ----------
    events, prices, users
        The liquidations, prices and users tables (columns of :mod:`allocator.names`), lazy or
        eager; ``event_id`` and ``user_id`` are assumed unique (``allocator.data.inputs`` checks it).
    rules
        The rule's parameters; :class:`DepegRules` defaults when omitted.
    source
        Optional table stem -> file path, used only to name files in error messages.

    Returns
    -------
    DepegResult
        ``positions``: every position in the window on a covered product whose collateral lists
        a depeg asset, sorted by ``event_id`` (columns :func:`positions_columns`);
        ``users``: every user with such a position or a positive ``depeg_comp_usd``, sorted by
        ``user_id`` (columns :func:`users_columns`); the reference prices used; the
        reconciliation.

    Raises
    ------
    ScenarioError
        Inconsistent rules.
    InputError
        A missing column, or a position in the window whose quote, settle or reference price
        cannot be found.
    """
    rules = validate_depeg_rules(rules or DepegRules())
    ev = conform(events, EVENT_COLUMNS, N.EVENTS_FILE, source)
    px = conform(prices, PRICE_COLUMNS, N.PRICES_FILE, source).collect()
    usr = conform(users, USER_COLUMNS, N.USERS_FILE, source)
    check_price_names(px, source)
    valued = value_positions(ev, px, rules, source)
    users_df, paid_total = users_table(valued.positions, usr)
    rec = reconcile(
        valued.positions,
        users_df,
        paid_total,
        valued.events_total,
        valued.outside_window,
        valued.outside_priced,
    )
    return DepegResult(rules, valued.positions, users_df, valued.references, rec)
