"""A user across the rounds of a distribution: what each round paid them and why.

A run of round 2 or later (``allocate --previous``) pays each user the cumulative amount
``voucher_cents``, of which ``paid_before_cents`` they already held and ``delta_cents`` is the
round's top-up. The explanation walks the chain back to round 1 (each run verified as it is
read) and says, round by round, what the user was paid and what happened to them: an appeal
decided in that round (with its note), a voucher that expired unredeemed, a forfeit. In words:
"USD 1,234.56 in round 1, +56.78 in round 2 after appeal: snapshot disputed".

It also gives the one-user eligibility of a later round (the appeals in force applied before the
rules, a reinstatement's waived rules) that the rest of the explanation checks against the run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import polars as pl

from allocator import names as N
from allocator.analysis.explain.results import Exclusion, RoundHistory, RoundStep
from allocator.runs.contract import RunDir
from allocator.runs.reader import load_run
from allocator.settings.models import EligibilityRules
from allocator.vouchers.eligibility import EligibilityResult, RuleDecision, decide_users, user_table
from allocator.vouchers.rounds.appeals import corrected_table

__all__ = [
    "RoundHistory",
    "RoundStep",
    "chain_runs",
    "corrections",
    "forfeit_exclusion",
    "one_user_eligibility",
    "round_history",
    "waived_decision",
]


def chain_runs(run: RunDir) -> list[RunDir]:
    """The verified runs of the chain, round 1 first, ending with ``run``."""
    out = [run]
    while out[-1].round > 1:
        previous = out[-1].manifest.get("round", {}).get("previous", {})
        path = previous.get("path") if isinstance(previous, Mapping) else None
        out.append(load_run(Path(str(path))))
    return out[::-1]


def _appeal(run: RunDir, uid: int) -> tuple[str | None, str | None]:
    if run.appeals is None:
        return None, None
    hit = run.appeals.filter((pl.col(N.USER_ID) == uid) & (pl.col(N.ROUND) == run.round))
    if hit.height == 0:
        return None, None
    row = hit.row(0, named=True)
    return row[N.DECISION], row[N.NOTE] or None


def _status(run: RunDir, uid: int) -> tuple[str, dict[str, Any] | None]:
    alloc = run.allocations.filter(pl.col(N.USER_ID) == uid)
    if alloc.height:
        return "paid", alloc.row(0, named=True)
    excl = run.excluded.filter(pl.col(N.USER_ID) == uid)
    if excl.height:
        return f"excluded:{excl.row(0, named=True)[N.REASON]}", None
    return "absent", None


def round_history(
    run: RunDir, uid: int, chain: Sequence[RunDir] | None = None
) -> RoundHistory | None:
    """The user's history over the chain ending with ``run`` (``None`` for a round-1 run);
    ``chain`` is :func:`chain_runs` of ``run`` when already read."""
    if run.round == 1:
        return None
    steps = []
    for one in chain if chain is not None else chain_runs(run):
        status, row = _status(one, uid)
        cents = int(row[N.VOUCHER_CENTS]) if row else 0
        delta = int(row.get(N.DELTA_CENTS, cents)) if row else 0
        expired = 0
        if one.vouchers is not None:
            gone = one.vouchers.filter(
                (pl.col(N.USER_ID) == uid)
                & (pl.col(N.STATUS) == N.VOUCHER_EXPIRED)
                & (pl.col(N.SETTLED_ROUND) == one.round)
            )
            expired = int(gone[N.CENTS].sum())
        decision, note = _appeal(one, uid)
        steps.append(RoundStep(one.round, status, cents, delta, expired, decision, note))
    status, row = _status(run, uid)
    forfeited = bool(
        run.vouchers is not None
        and run.vouchers.filter(
            (pl.col(N.USER_ID) == uid) & (pl.col(N.STATUS) == N.VOUCHER_EXPIRED)
        ).height
    )
    before = int(row[N.PAID_BEFORE_CENTS]) if row else 0
    held = bool(
        row and before > 0 and int(row[N.VOUCHER_CENTS]) == int(row["lower_cents"]) == before
    )
    return RoundHistory(tuple(steps), before, held, forfeited)


def _appeals_in_force(run: RunDir) -> pl.DataFrame | None:
    if run.round == 1 or run.appeals is None or run.appeals.height == 0:
        return None
    return run.appeals


def one_user_eligibility(
    run: RunDir, tables: Mapping[str, pl.DataFrame], rules: EligibilityRules, source: dict[str, str]
) -> EligibilityResult:
    """Eligibility of the users in ``tables`` as the run decided it: from round 2 on with the
    appeals in force (corrected values before the rules, reinstatements' rules waived)."""
    users = user_table(
        tables[N.EVENTS_FILE],
        tables[N.PRICES_FILE],
        tables[N.SNAPSHOT_FILE],
        tables[N.USERS_FILE],
        rules,
        source=source,
    )
    appeals = _appeals_in_force(run)
    waive = None
    if appeals is not None:
        users = corrected_table(users, appeals)
        waive = appeals.filter(pl.col(N.DECISION) == N.DECISION_REINSTATE)[N.USER_ID]
    return decide_users(users, rules, decisions=True, waive=waive)


def waived_decision(decision: RuleDecision, run: RunDir) -> RuleDecision:
    """A reinstated user's decision with the waived loss or ratio rule scaling them by 1."""
    appeals = _appeals_in_force(run)
    if appeals is None or decision.reason is not None:
        return decision
    hit = appeals.filter(
        (pl.col(N.USER_ID) == decision.user_id) & (pl.col(N.DECISION) == N.DECISION_REINSTATE)
    )
    if hit.height == 0:
        return decision
    failed = set(decision.failures)
    return dataclasses.replace(
        decision,
        loss_factor=1.0 if N.REASON_BELOW_MIN_LOSS in failed else decision.loss_factor,
        ratio_factor=1.0 if N.REASON_BELOW_LOSS_RATIO in failed else decision.ratio_factor,
    )


def forfeit_exclusion(run_detail: str | None) -> Exclusion:
    """Why a user who forfeited is out (a later round's own reason, not an eligibility rule)."""
    return Exclusion(
        reason=N.REASON_VOUCHER_EXPIRED,
        rule="rounds.unclaimed = 'expire': a voucher not redeemed by the deadline expires back "
        "into the pool, and its user forfeits what it held",
        detail="every voucher the user was issued expired unredeemed, so they hold nothing",
        distance=None,
        run_detail=run_detail,
        also_fails=(),
    )


def corrections(run: RunDir, uid: int) -> dict[str, Any]:
    """The values an appeal in force corrected for ``uid`` (field -> value; empty in round 1)."""
    appeals = _appeals_in_force(run)
    if appeals is None:
        return {}
    hit = appeals.filter(pl.col(N.USER_ID) == uid)
    if hit.height == 0:
        return {}
    row = hit.row(0, named=True)
    return {field: row[field] for field in N.CORRECTABLE if row[field] is not None}
