"""The report's ``rounds`` section: a later round of a distribution, round by round.

A run of round 2 or later (``allocate --previous``) is shown with its whole chain, each run
verified as it is read: per round, what users held in total after it, what it paid out in new
vouchers and to how many users, the appeals it decided and what became of earlier vouchers
(redeemed, unclaimed and kept, expired back into the pool); then every appeal of the chain with
the user's history in words ("USD 57.24 in round 1, +37.37 in round 2 after appeal: snapshot
disputed").
"""

from __future__ import annotations

from typing import Any

import polars as pl

from allocator import names as N
from allocator.analysis.explain.rounds import chain_runs, round_history
from allocator.kernel.money import cents_to_usd
from allocator.report.cells import count, usd_cents
from allocator.report.inputs import ReportRun
from allocator.report.model import Section, Table
from allocator.runs.contract import AMOUNT_CENTS

#: Appeals listed in the section's table (every one is in its data).
MAX_APPEAL_ROWS = 50


def _round_row(run: Any) -> dict[str, Any]:
    sec = run.manifest.get("round") or {}
    vouchers = sec.get("vouchers") or {}
    appeals = sec.get("appeals_by_decision") or {}
    money = run.manifest.get("money") or {}
    return {
        "round": run.round,
        "total_cents": int(run.allocations[N.VOUCHER_CENTS].sum()),
        "target_cents": money.get("budget_cents"),
        "paid_out_cents": int(run.payouts[AMOUNT_CENTS].sum()),
        "users_paid": run.payouts.height,
        "reinstated": int(appeals.get(N.DECISION_REINSTATE, 0)),
        "corrected": int(appeals.get(N.DECISION_CORRECT, 0)),
        "upheld": int(appeals.get(N.DECISION_UPHOLD, 0)),
        "redeemed": int(vouchers.get("redeemed", 0)),
        "unclaimed_kept": int(vouchers.get("unclaimed", 0)),
        "expired": int(vouchers.get("expired", 0)),
        "expired_cents": int(sec.get("expired_cents", 0)),
    }


def rounds_section(main: ReportRun) -> Section:
    """Every round of the chain ending with the reported run, and every appeal it decided."""
    runs = chain_runs(main.run)
    rounds = [_round_row(run) for run in runs]
    table = Table(
        columns=(
            "round",
            "users hold after it, USD",
            "paid out in the round, USD",
            "users paid",
            "appeals (reinstated / corrected / upheld)",
            "earlier vouchers (redeemed / kept unclaimed / expired)",
            "expired back into the pool, USD",
        ),
        rows=tuple(
            (
                str(r["round"]),
                usd_cents(r["total_cents"]),
                usd_cents(r["paid_out_cents"]),
                count(r["users_paid"]),
                f"{r['reinstated']:,} / {r['corrected']:,} / {r['upheld']:,}",
                f"{r['redeemed']:,} / {r['unclaimed_kept']:,} / {r['expired']:,}",
                usd_cents(r["expired_cents"]),
            )
            for r in rounds
        ),
        caption="each round pays the users only what it adds to what they hold",
    )
    appeals = main.run.appeals if main.run.appeals is not None else pl.DataFrame()
    listed = []
    for row in appeals.iter_rows(named=True):
        history = round_history(main.run, int(row[N.USER_ID]), runs)
        listed.append(
            {
                N.USER_ID: int(row[N.USER_ID]),
                N.ROUND: int(row[N.ROUND]),
                N.DECISION: row[N.DECISION],
                N.NOTE: row[N.NOTE],
                N.WAIVED: row[N.WAIVED],
                N.OUTCOME: row[N.OUTCOME],
                "history": None if history is None else history.sentence(),
            }
        )
    appeal_table = Table(
        columns=("user", "round", "decision", "note", "outcome", "what the user was paid"),
        rows=tuple(
            (
                str(a[N.USER_ID]),
                str(a[N.ROUND]),
                str(a[N.DECISION]),
                str(a[N.NOTE] or "-"),
                str(a[N.OUTCOME]),
                str(a["history"] or "-"),
            )
            for a in listed[:MAX_APPEAL_ROWS]
        ),
        caption=(
            f"every appeal of the chain ({len(listed):,})"
            if len(listed) <= MAX_APPEAL_ROWS
            else f"the first {MAX_APPEAL_ROWS} of {len(listed):,} appeals (all are in the data)"
        ),
    )
    last = rounds[-1]
    before = sum(r["total_cents"] for r in rounds[-2:-1])
    notes = (
        f"round {last['round']} of a distribution: users held USD "
        f"{cents_to_usd(int(main.run.allocations[N.PAID_BEFORE_CENTS].sum())):,.2f} before it "
        f"(USD {cents_to_usd(before):,.2f} after round {last['round'] - 1}, less what expired); "
        f"it pays USD {cents_to_usd(last['paid_out_cents']):,.2f} more to "
        f"{last['users_paid']:,} users, and nobody is paid less than they held",
        "a later round solves the same objective with each user's lower bound raised to what "
        "they hold; its total over all rounds is the budget (less any reserve still held)",
    )
    return Section(
        id="rounds",
        title="Rounds of the distribution",
        data={"rounds": rounds, "appeals": listed},
        tables=(table, appeal_table),
        notes=notes,
    )
