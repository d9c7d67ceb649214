"""The eligibility query: stage 1 over the events, stage 2 over the users and the snapshot."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import polars as pl

from allocator import names as N
from allocator.data.conform import conform, table_name
from allocator.data.validation import FLAG, FoldedChecks
from allocator.errors import InputError
from allocator.settings.models import EligibilityRules
from allocator.vouchers.eligibility.losses import (
    FIELD,
    aggregate_per_user,
    decode_per_user,
    event_loss,
)
from allocator.vouchers.eligibility.prices import check_prices, priced_events, raise_bad_event, utc
from allocator.vouchers.eligibility.reasons import (
    RuleDecision,
    covered_event,
    decide,
    decision_columns,
    in_window_event,
    rule_decision,
    waive_rules,
    with_detail,
)
from allocator.vouchers.eligibility.reconciliation import Reconciliation, reconcile
from allocator.vouchers.eligibility.rules import check_rules
from allocator.vouchers.eligibility.schema import (
    COL_COUNTED,
    COL_COVERED,
    COL_GROSS_NANO,
    COL_IN_SNAPSHOT,
    COL_IN_USERS,
    COL_IN_WINDOW,
    COL_N_COVERED,
    COL_N_NO_PRICE,
    COL_N_TOTAL,
    EVENT_COLUMNS,
    PRICE_COLUMNS,
    SNAPSHOT_COLUMNS,
    US_PER_DAY,
    USER_COLUMNS,
    UTC_US,
    eligible_columns,
    excluded_columns,
)

__all__ = [
    "EVENT_RULE_FIELDS",
    "EligibilityResult",
    "UserTable",
    "compute_eligibility",
    "decide_users",
    "event_rules",
    "user_table",
]


@dataclass(frozen=True, eq=False)
class EligibilityResult:
    """The feature matrix of eligible users, the excluded users with reasons, and the totals.

    ``eligible`` has the columns of :func:`eligible_columns`, ``excluded`` those of
    :func:`excluded_columns`; both one row per user, sorted by ``user_id``.
    """

    eligible: pl.DataFrame
    excluded: pl.DataFrame
    reconciliation: Reconciliation
    rules: EligibilityRules = field(default_factory=EligibilityRules)
    #: Every user's :class:`~allocator.vouchers.eligibility.reasons.RuleDecision` as a frame of
    #: :func:`~allocator.vouchers.eligibility.reasons.decision_columns`, when asked for
    #: (``compute_eligibility(..., decisions=True)``); never written to any file.
    decisions: pl.DataFrame | None = None

    def decision(self, user_id: int) -> RuleDecision | None:
        """What eligibility decided for ``user_id``, rule by rule (``None`` when the user is not
        liquidated).

        Raises
        ------
        ValueError
            The result was computed without ``decisions=True``.
        """
        if self.decisions is None:
            raise ValueError("compute_eligibility(..., decisions=True) keeps the rule decisions")
        return rule_decision(self.decisions, user_id)


#: Fields of :class:`~allocator.settings.models.EligibilityRules` read by the pass over the
#: events; every other rule applies to the per-user table (:func:`decide_users`).
EVENT_RULE_FIELDS = ("window_start", "window_end", "products", "include_fees")


@dataclass(frozen=True, eq=False)
class UserTable:
    """Every liquidated user's aggregates (losses, event counts) joined with the users table
    and the snapshot, before any per-user rule: what :func:`decide_users` needs.

    ``totals`` are the event counts and the loss total of the pass over the events, ``rows``
    the number of events read; ``event_rules`` the :func:`event_rules` it was built with.
    """

    table: pl.DataFrame
    totals: dict[str, Any]
    rows: int
    event_rules: tuple[object, ...]


def compute_eligibility(
    events: pl.LazyFrame | pl.DataFrame,
    prices: pl.LazyFrame | pl.DataFrame,
    snapshot: pl.LazyFrame | pl.DataFrame,
    users: pl.LazyFrame | pl.DataFrame,
    rules: EligibilityRules,
    *,
    source: Mapping[str, Any] | None = None,
    engine: Literal["auto", "in-memory", "streaming"] = "auto",
    price_lookup: Literal["auto", "asof"] = "auto",
    decisions: bool = False,
    checks: FoldedChecks | None = None,
) -> EligibilityResult:
    """Apply ``rules`` to the four input tables (see the module docstring for the rules).

    Parameters
    ----------
    events, prices, snapshot, users
        The input tables (columns of :mod:`allocator.names`), lazy or eager. ``user_id`` is
        assumed unique in ``snapshot`` and ``users`` (``allocator.data.inputs.validate_inputs``
        checks it); a duplicate shows up as a reconciliation failure.
    rules
        The eligibility rules.
    source
        Optional table stem -> file path, used only to name files in error messages.
    engine
        Polars engine of the pass over the events (``"auto"``, ``"in-memory"`` or
        ``"streaming"``); the joins with the users and the snapshot run in memory.
    price_lookup
        ``"auto"``: the dense price grid when the bars allow it, else an as-of join;
        ``"asof"``: always the as-of join (same result, slower; for tests and benchmarks).
    decisions
        Also keep every user's decision rule by rule (:attr:`EligibilityResult.decisions`), for
        explaining one user; off for the full runs, which do not need it.
    checks
        The input checks to make on the way (``load_inputs(..., validate="folded")``): every
        row read is checked, and a row breaking a rule raises the error the validation of
        :func:`allocator.data.inputs.validate_inputs` would have raised, before any other.

    Returns
    -------
    EligibilityResult
        Eligible users with their features, excluded users with the first failing reason, and
        the reconciliation of users, events and losses.

    Raises
    ------
    ScenarioError
        Inconsistent rules (unknown product, empty or reversed window, negative threshold).
    InputError
        A missing column, a bad price bar, or a counted event without a USD price.
    """
    table = user_table(
        events,
        prices,
        snapshot,
        users,
        rules,
        source=source,
        engine=engine,
        price_lookup=price_lookup,
        checks=checks,
    )
    return decide_users(table, rules, decisions=decisions)


def event_rules(rules: EligibilityRules) -> tuple[object, ...]:
    """The part of ``rules`` that the pass over the events reads (:data:`EVENT_RULE_FIELDS`):
    rules equal here share one :class:`UserTable`."""
    return tuple(getattr(rules, name) for name in EVENT_RULE_FIELDS)


def user_table(
    events: pl.LazyFrame | pl.DataFrame,
    prices: pl.LazyFrame | pl.DataFrame,
    snapshot: pl.LazyFrame | pl.DataFrame,
    users: pl.LazyFrame | pl.DataFrame,
    rules: EligibilityRules,
    *,
    source: Mapping[str, Any] | None = None,
    engine: Literal["auto", "in-memory", "streaming"] = "auto",
    price_lookup: Literal["auto", "asof"] = "auto",
    checks: FoldedChecks | None = None,
) -> UserTable:
    """Stage 1 (the pass over the events) and the joins with the users and the snapshot.

    Only the event rules of ``rules`` (:func:`event_rules`) are read; the parameters and errors
    are those of :func:`compute_eligibility`. With ``checks``, the events, users and snapshot
    rows are checked as they are read (their flags summed per table), and the data's first
    problem, if any, is raised before anything else: the same error as a validation first.
    """
    if checks is None:
        return _user_table(events, prices, snapshot, users, rules, source, engine, price_lookup)[0]
    with checks.first():
        table, problems = _user_table(
            events, prices, snapshot, users, rules, source, engine, price_lookup, checks
        )
    checks.resolve(problems)
    return table


def _user_table(
    events: pl.LazyFrame | pl.DataFrame,
    prices: pl.LazyFrame | pl.DataFrame,
    snapshot: pl.LazyFrame | pl.DataFrame,
    users: pl.LazyFrame | pl.DataFrame,
    rules: EligibilityRules,
    source: Mapping[str, Any] | None,
    engine: Literal["auto", "in-memory", "streaming"],
    price_lookup: Literal["auto", "asof"],
    checks: FoldedChecks | None = None,
) -> tuple[UserTable, dict[str, int]]:
    """:func:`user_table`, and with ``checks`` each folded table's sum of its row flags."""
    check_rules(rules)
    if price_lookup not in ("auto", "asof"):
        raise ValueError(f"price_lookup must be 'auto' or 'asof', not {price_lookup!r}")
    ev = conform(events, EVENT_COLUMNS, N.EVENTS_FILE, source)
    px = conform(prices, PRICE_COLUMNS, N.PRICES_FILE, source).collect()
    snap = conform(snapshot, SNAPSHOT_COLUMNS, N.SNAPSHOT_FILE, source)
    usr = conform(users, USER_COLUMNS, N.USERS_FILE, source)
    check_prices(px, source)
    rows = int(ev.select(pl.len()).collect().item())  # parquet: from the file metadata
    if rows >= FIELD:
        raise InputError(
            f"The {table_name(N.EVENTS_FILE, source)} has {rows:,} rows; at most "
            f"{FIELD - 1:,} are supported."
        )
    problems: dict[str, int] = {}
    sums: tuple[str, ...] = ()
    if checks is not None:
        # the input checks ride along the pass over the events: one more sum per user
        ev = _flagged(events, checks, N.EVENTS_FILE, EVENT_COLUMNS, source)
        sums = (FLAG,)

    # Flag columns, computed once per event: several aggregations below use each of them.
    ev = ev.with_columns(
        covered_event(rules).alias(COL_COVERED), in_window_event(rules).alias(COL_IN_WINDOW)
    ).with_columns((pl.col(COL_COVERED) & pl.col(COL_IN_WINDOW)).alias(COL_COUNTED))
    covered, in_window, counted = pl.col(COL_COVERED), pl.col(COL_IN_WINDOW), pl.col(COL_COUNTED)
    priced = priced_events(ev, px, counted, rules, price_lookup)

    # Stage 1: the one pass over the events, collected before its result is used twice below.
    per_user = decode_per_user(
        aggregate_per_user(priced, covered, in_window, counted, rules, sums).collect(engine=engine),
        rules,
    )
    if checks is not None:
        problems[N.EVENTS_FILE] = int(per_user[FLAG].sum())
        per_user = per_user.drop(FLAG)
    t = per_user.select(
        pl.len().cast(pl.Int64).alias("users"),
        pl.col(COL_N_TOTAL).sum().cast(pl.Int64).alias("events"),
        pl.col(COL_N_COVERED).sum().cast(pl.Int64).alias("covered"),
        pl.col(N.N_EVENTS).sum().cast(pl.Int64).alias("counted"),
        pl.col(COL_N_NO_PRICE).sum().cast(pl.Int64).alias("no_price"),
        pl.col(COL_GROSS_NANO).sum().alias("loss_nano"),
    ).row(0, named=True)
    if t["no_price"]:
        raise_bad_event(priced.with_columns(event_loss(rules)), counted, px, source)

    # Stage 2: the users and snapshot tables may hold every account. A hash-set filter keeps
    # the liquidated ones before the joins; it is much cheaper than a semi-join, which builds
    # its table on the large side. The per-user frame is sorted (and slimmed) before the
    # joins, which keep its order, so that the wide joined table is never sorted.
    per_user = per_user.drop(c for c, d in per_user.schema.items() if d == pl.Int128).sort(
        N.USER_ID
    )
    ids = per_user[N.USER_ID].implode()
    if checks is not None:
        # each read once, whole, for its checks: the rows of liquidated users and any row
        # flagged (none in valid data sorted by user) are kept
        usr = _checked_rows(users, checks, N.USERS_FILE, USER_COLUMNS, source, ids, problems)
        snap = _checked_rows(
            snapshot, checks, N.SNAPSHOT_FILE, SNAPSHOT_COLUMNS, source, ids, problems
        )
    usr_l = usr.filter(pl.col(N.USER_ID).is_in(ids)).with_columns(pl.lit(True).alias(COL_IN_USERS))
    snap_l = snap.filter(pl.col(N.USER_ID).is_in(ids)).with_columns(
        pl.lit(True).alias(COL_IN_SNAPSHOT)
    )
    table = (
        per_user.lazy()
        .join(usr_l, on=N.USER_ID, how="left", maintain_order="left")
        .join(snap_l, on=N.USER_ID, how="left", maintain_order="left")
        .with_columns(
            pl.col(COL_IN_USERS).fill_null(False),
            pl.col(COL_IN_SNAPSHOT).fill_null(False),
        )
        # Measured at stress size: the in-memory engine joins these ~2M-row frames in about
        # half the CPU time of the streaming one, which is the better choice for stage 1.
        .collect(engine="in-memory")
    )
    return UserTable(table=table, totals=t, rows=rows, event_rules=event_rules(rules)), problems


def _flagged(
    frame: pl.LazyFrame | pl.DataFrame,
    checks: FoldedChecks,
    stem: str,
    columns: Mapping[str, pl.DataType],
    source: Mapping[str, Any] | None,
) -> pl.LazyFrame:
    """The columns the rules read, and the row's input-check flag (computed from every column)."""
    flagged = frame.lazy().with_columns(checks.flag(stem))
    return conform(flagged, {**columns, FLAG: pl.Int64()}, stem, source)


def _checked_rows(
    frame: pl.LazyFrame | pl.DataFrame,
    checks: FoldedChecks,
    stem: str,
    columns: Mapping[str, pl.DataType],
    source: Mapping[str, Any] | None,
    ids: pl.Series,
    problems: dict[str, int],
) -> pl.LazyFrame:
    """The rows of the liquidated users (``ids``) in one pass that also checks every row;
    the sum of the flags goes into ``problems``."""
    kept = (
        _flagged(frame, checks, stem, columns, source)
        .filter(pl.col(N.USER_ID).is_in(ids) | (pl.col(FLAG) != 0))
        .collect()
    )
    problems[stem] = int(kept[FLAG].sum())
    return kept.drop(FLAG).lazy()


def decide_users(
    users: UserTable,
    rules: EligibilityRules,
    *,
    decisions: bool = False,
    details: bool = True,
    waive: pl.Series | None = None,
) -> EligibilityResult:
    """Stage 2: every per-user rule of ``rules`` (losses net of depeg compensation, the loss
    ratio, the thresholds, regions, KYC, phase-in bands) on a :class:`UserTable`.

    A policy designer moving a threshold re-runs only this (no pass over the events).
    ``details=False`` leaves the excluded users' ``detail`` text null: half the time of this
    stage goes into writing those sentences, which only a written run needs. ``waive`` holds the
    user ids whose failing rules are waived (reinstated on appeal, :func:`waive_rules`).

    Raises
    ------
    ValueError
        ``users`` was built for other event rules (window, products or fees).
    ScenarioError
        Inconsistent rules.
    """
    if users.event_rules != event_rules(rules):
        raise ValueError(
            "the user table was built for other event rules (window, products or fees); "
            "build it again with these rules"
        )
    check_rules(rules)
    gross = pl.col(N.GROSS_LOSS_USD)
    depeg = pl.col(N.DEPEG_COMP_USD)
    if rules.depeg_policy == "net":
        loss_usd = pl.max_horizontal(gross - depeg, pl.lit(0.0))
        loss_usd = pl.when(depeg.is_null()).then(None).otherwise(loss_usd)
    else:
        loss_usd = gross
    net = pl.col(N.NET_ASSETS_USD)
    snapshot_at = pl.lit(utc(rules.snapshot_at)).cast(UTC_US)
    table = (
        users.table.lazy()
        .with_columns(
            loss_usd.alias(N.LOSS_USD),
            ((snapshot_at - pl.col(N.CREATED_AT)).dt.total_microseconds() // US_PER_DAY)
            .cast(pl.Int64)
            .alias(N.ACCOUNT_AGE_DAYS),
        )
        .with_columns(
            pl.when(net <= 0)
            .then(float("inf"))
            .otherwise(pl.col(N.LOSS_USD) / net)
            .alias(N.LOSS_RATIO),
        )
        .collect(engine="in-memory")
    )
    t, rows = users.totals, users.rows
    table = decide(table, rules)
    if waive is not None and waive.len():
        table = waive_rules(table, waive)
    # the columns each side keeps, then the rows: a filter moves every column it is given
    kept = table.get_column(N.REASON).is_null()
    eligible = table.select(eligible_columns(rules)).filter(kept)
    if details:
        excluded = with_detail(table.filter(~kept), rules).select(excluded_columns())
    else:
        plain = [c for c in excluded_columns() if c != N.DETAIL]
        excluded = (
            table.select(plain)
            .filter(~kept)
            .with_columns(pl.lit(None, dtype=pl.String).alias(N.DETAIL))
            .select(excluded_columns())
        )
    # One chunk each: the chunk layout of a parallel collect varies from run to run, and the
    # parquet row groups written from it would too.
    eligible, excluded = eligible.rechunk(), excluded.rechunk()
    rec = reconcile(eligible, excluded, t, rows)
    return EligibilityResult(
        eligible=eligible,
        excluded=excluded,
        reconciliation=rec,
        rules=rules,
        decisions=table.select(decision_columns()) if decisions else None,
    )
