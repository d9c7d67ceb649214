r"""A later round of a distribution: the next run after ``--previous RUN_DIR``, never clawing back.

Round :math:`k \ge 2` starts from the previous run of the chain (verified: its files against its
manifest; ``allocate`` runs ``check-budget`` on it first) and the same input data. It applies, in
order: the round's redemptions file to the voucher ledger (:mod:`.ledger`), the appeals in force
and the round's new appeals to the users before the rules (:mod:`.appeals`), the rules, and then
solves the *same objective* as round 1 on the eligible users with

.. math::

    \max_v \sum_i w_i u_\alpha(v_i) \quad\text{s.t.}\quad
    \max(\ell_i, H_i) \le v_i \le h_i, \qquad \sum_i v_i \;(=)\le\; T_k,
    \qquad m_s T_k \le \sum_{i \in S_s} v_i \le M_s T_k,

where :math:`H_i` is what user :math:`i` holds (``paid_before_cents``: their vouchers of earlier
rounds that did not expire), :math:`\ell_i, h_i` the scenario's bounds and :math:`T_k` the
round's cumulative total (:func:`allocator.settings.models.round_budget_usd`). :math:`v_i` is the
user's cumulative amount (``voucher_cents``); the round pays :math:`v_i - H_i \ge 0`
(``delta_cents``). A user who forfeited (an expired voucher) is held at :math:`v_i = H_i`, or,
holding nothing, excluded with the reason ``voucher_expired``. Every rule of the kernel takes
per-user lower bounds, so the same certificate, integer-cent rounding and segment rules as in
round 1 apply unchanged (a claims rule's awards are its path clipped to the raised bounds, at
the root that pays :math:`T_k`).

Refused (exit 2, nothing written), each naming the user and the cause: the rules now exclude a
user who holds a voucher, a user's cap is below what they hold, or :math:`T_k` is below what the
users hold together: any of these would take money back.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from allocator import names as N
from allocator.data.roundfiles import read_appeals, read_redemptions
from allocator.errors import AllocatorError, InfeasibleError, InputError, ScenarioError
from allocator.kernel.money import CENTS_PER_USD, budget_to_cents, format_cents
from allocator.kernel.problem import AllocationProblem
from allocator.kernel.rounding import bounds_to_cents
from allocator.runs.contract import AMOUNT_CENTS, RunDir, usd_to_cents
from allocator.runs.hashing import sha256_file
from allocator.runs.reader import load_run
from allocator.runs.writer import write_run_dir
from allocator.settings.models import Scenario, round_budget_usd
from allocator.vouchers.eligibility import EligibilityResult, UserTable, decide_users
from allocator.vouchers.eligibility.reconciliation import reconcile
from allocator.vouchers.payouts import plan_payouts, write_payouts_csv
from allocator.vouchers.pipeline import (
    PROGRAMME,
    DataSession,
    Progress,
    RunResult,
    manifest,
    provenance,
    solve_and_round,
)
from allocator.vouchers.rounds.appeals import (
    appeals_record,
    check_new_appeals,
    check_reinstated,
    corrected_table,
    no_appeals,
    paid_in_full,
)
from allocator.vouchers.rounds.ledger import (
    Settlement,
    forfeited_users,
    held_cents,
    ledger_of,
    settle,
    with_new_vouchers,
)
from allocator.vouchers.weights import build_problem, check_feasible_cents

__all__ = ["RoundResult", "allocate_round", "open_previous", "write_round"]


def _quiet(_: str) -> None:
    return None


@dataclasses.dataclass(frozen=True, eq=False)
class RoundResult:
    """A later round before it is written: the run (allocations with ``paid_before_cents`` and
    ``delta_cents``, payouts of the deltas), the ledger, the appeals and the manifest's ``round``
    section."""

    run: RunResult
    number: int
    ledger: pl.DataFrame
    appeals: pl.DataFrame
    section: dict[str, Any]


def _input_hashes(manifest: dict[str, Any]) -> dict[str, str]:
    inputs = manifest.get("inputs")
    if not isinstance(inputs, dict):
        return {}
    return {
        stem: str(meta.get("sha256"))
        for stem, meta in inputs.items()
        if isinstance(meta, dict) and "sha256" in meta
    }


def open_previous(path: str | Path, session: DataSession) -> RunDir:
    """The previous run of the chain, verified, made by this programme from the same data.

    Raises
    ------
    InputError
        The run is damaged or changed (:func:`allocator.runs.reader.load_run`), belongs to
        another programme, or read other input files than ``session``.
    """
    prev = load_run(path)
    programme = prev.manifest.get("programme")
    if programme != PROGRAMME:
        raise InputError(
            f"--previous {path} is a run of programme {programme!r}, not {PROGRAMME!r}; a round "
            "continues a run of the same programme.",
        )
    mine = {stem: str(meta["sha256"]) for stem, meta in session.input_manifest().items()}
    theirs = _input_hashes(prev.manifest)
    changed = sorted(stem for stem in mine if theirs.get(stem) != mine[stem])
    if changed:
        raise InputError(
            f"--previous {path} was made from other input data: the {changed[0]} file of "
            f"{session.data_dir} is not the one that run read (its sha256 differs); a later "
            "round re-reads the same data, and a correction of one user goes through --appeals.",
            hint="pass the --data the previous run used",
        )
    return prev


def _check_ledger(prev: RunDir, ledger: pl.DataFrame) -> None:
    """What the previous run's users hold by its ledger must be its cumulative vouchers."""
    held = held_cents(ledger)
    alloc = prev.allocations.select(N.USER_ID, N.VOUCHER_CENTS).filter(pl.col(N.VOUCHER_CENTS) > 0)
    both = alloc.join(held, on=N.USER_ID, how="full", coalesce=True).fill_null(0)
    off = both.filter(pl.col(N.VOUCHER_CENTS) != pl.col(N.PAID_BEFORE_CENTS))
    if off.height:
        row = off.row(0, named=True)
        raise InputError(
            f"--previous {prev.path}: user {row[N.USER_ID]} holds {row[N.PAID_BEFORE_CENTS]} "
            f"cents by the voucher ledger but {row[N.VOUCHER_CENTS]} by the allocations; the run "
            "does not add up.",
            hint=f"`allocator check-budget {prev.path}` lists every check",
        )


def _claw_back(what: str, *, appealed: bool, path: Path | None) -> AllocatorError:
    """The error of a round that would take money back: the appeals file's fault when the user
    was appealed, the scenario's otherwise."""
    if appealed:
        return InputError(
            f"{path}: {what}; an appeal cannot take back what a user was paid, so nothing was "
            "written.",
            hint="decide 'uphold' instead, or correct the values so that the user keeps it",
        )
    return ScenarioError(
        f"the scenario would claw back: {what}; a later round never pays anyone less than they "
        "hold, so nothing was written.",
        hint="keep the scenario's rules, bounds and budget as they were in the previous round "
        "for users already paid",
    )


def _move_forfeited(
    elig: EligibilityResult, forfeited: pl.Series, held: pl.DataFrame, users: UserTable
) -> EligibilityResult:
    """Forfeited users who hold nothing leave the eligible users, excluded as ``voucher_expired``."""
    empty = held.filter(pl.col(N.PAID_BEFORE_CENTS) == 0)[N.USER_ID]
    gone = elig.eligible.filter(
        pl.col(N.USER_ID).is_in(forfeited.implode()) & pl.col(N.USER_ID).is_in(empty.implode())
    )
    if gone.height == 0:
        return elig
    moved = gone.select(
        N.USER_ID,
        pl.lit(N.REASON_VOUCHER_EXPIRED).alias(N.REASON),
        pl.lit(
            "every voucher expired unclaimed after the deadline (rounds.unclaimed = expire): "
            "the user forfeited"
        ).alias(N.DETAIL),
        N.LOSS_USD,
        N.GROSS_LOSS_USD,
        N.NET_ASSETS_USD,
        N.LOSS_RATIO,
        N.N_EVENTS,
    )
    eligible = elig.eligible.filter(~pl.col(N.USER_ID).is_in(gone[N.USER_ID].implode()))
    excluded = pl.concat([elig.excluded, moved.select(elig.excluded.columns)]).sort(N.USER_ID)
    eligible, excluded = eligible.rechunk(), excluded.rechunk()
    rec = reconcile(eligible, excluded, users.totals, users.rows)
    return dataclasses.replace(elig, eligible=eligible, excluded=excluded, reconciliation=rec)


def _held_problem(
    problem: AllocationProblem,
    user_id: np.ndarray,
    held: np.ndarray,
    pinned: np.ndarray,
    appealed: np.ndarray,
    appeals_path: Path | None,
) -> AllocationProblem:
    """The round's problem: each lower bound raised to what the user holds, a forfeited user
    held there; refused where the scenario's cap is below it (a claw-back)."""
    lo_c, hi_c = bounds_to_cents(problem.lower, problem.upper, user_id=user_id)
    over = held > hi_c
    if over.any():
        i = int(np.flatnonzero(over)[0])
        raise _claw_back(
            f"user {int(user_id[i])} holds USD {format_cents(int(held[i]))} from earlier rounds "
            f"but may now be paid at most USD {format_cents(int(hi_c[i]))} (bounds.cap_usd, "
            f"bounds.coverage_cap, a phase-in band or the loss caps it; {int(over.sum()):,} "
            "user(s) in all)",
            appealed=bool(appealed[i]),
            path=appeals_path,
        )
    held_usd = held / CENTS_PER_USD
    lower = np.where(held > lo_c, held_usd, problem.lower)
    lower = np.where(pinned, held_usd, lower)
    upper = np.where(pinned, held_usd, problem.upper)
    return dataclasses.replace(problem, lower=lower, upper=upper, scalar_bounds=None)


def held_labels(
    cents: np.ndarray, lo_c: np.ndarray, hi_c: np.ndarray, held: np.ndarray, pinned: np.ndarray
) -> pl.Series:
    """The ``bound`` column of a later round: ``cap`` at the upper bound (a user held at their cap
    included), else ``held`` on a lower bound that is what the user held (no claw-back; a user
    who forfeited too), ``floor`` on the scenario's floor, ``interior`` between."""
    labels = np.full(cents.shape[0], N.BOUND_INTERIOR, dtype=object)
    labels[cents <= lo_c] = N.BOUND_FLOOR
    labels[(cents <= lo_c) & (lo_c == held) & (held > 0)] = N.BOUND_HELD
    labels[(cents >= hi_c) & ~pinned] = N.BOUND_CAP
    return pl.Series(N.BOUND, labels.tolist(), dtype=pl.String)


def _appeals_section(path: Path | None, frame: pl.DataFrame | None) -> dict[str, Any] | None:
    if path is None or frame is None:
        return None
    return {"path": str(path.resolve()), "sha256": sha256_file(path), "rows": frame.height}


def allocate_round(
    session: DataSession,
    scenario: Scenario,
    previous: str | Path,
    *,
    appeals: str | Path | None = None,
    redemptions: str | Path | None = None,
    solver: str | None = None,
    progress: Progress = _quiet,
) -> RoundResult:
    """Run the next round after the run at ``previous`` (module docstring).

    Raises
    ------
    InputError
        A bad previous run, appeals or redemptions file, or an appeal that would claw back.
    ScenarioError
        The scenario would claw back.
    InfeasibleError, SolverError
        As in round 1 (new users' floors above what is left, a failed solve).
    """
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    prev_dir = Path(previous)
    prev = open_previous(prev_dir, session)
    number = prev.round + 1
    rules = scenario.eligibility
    appeals_path = None if appeals is None else Path(appeals)
    redemptions_path = None if redemptions is None else Path(redemptions)

    progress("redemptions")
    ledger0 = ledger_of(prev)
    _check_ledger(prev, ledger0)
    red = None if redemptions_path is None else read_redemptions(redemptions_path)
    settlement: Settlement = settle(
        ledger0, red, round_number=number, policy=scenario.rounds.unclaimed, path=redemptions_path
    )
    held = held_cents(settlement.ledger)
    forfeited = forfeited_users(settlement.ledger)

    progress("appeals")
    in_force = prev.appeals if prev.appeals is not None else no_appeals()
    new = read_appeals(appeals_path) if appeals_path is not None else None
    users = session.user_table(rules)
    if new is not None:
        check_new_appeals(
            new,
            path=appeals_path or Path("-"),
            in_force=in_force,
            liquidated=users.table[N.USER_ID],
            forfeited=forfeited,
        )
    fresh = new if new is not None else no_appeals().select(read_columns())
    everyone = pl.concat([in_force.select(read_columns()), fresh.select(read_columns())])
    patched = corrected_table(users, everyone)
    reinstated = everyone.filter(pl.col(N.DECISION) == N.DECISION_REINSTATE)[N.USER_ID]
    elig = decide_users(patched, rules, decisions=True, details=session.details, waive=reinstated)
    if new is not None and appeals_path is not None:
        check_reinstated(new, elig, patched, path=appeals_path)
        paid_in_full(new, elig, held, scenario, path=appeals_path)
    elig = _move_forfeited(elig, forfeited, held, patched)
    elig.reconciliation.check()
    timings["eligibility"] = time.perf_counter() - t0

    appealed_ids = everyone[N.USER_ID].implode()
    holders = held.filter(pl.col(N.PAID_BEFORE_CENTS) > 0)
    lost = holders.join(elig.excluded.select(N.USER_ID, N.REASON), on=N.USER_ID, how="inner")
    if lost.height:
        row = lost.row(0, named=True)
        raise _claw_back(
            f"user {row[N.USER_ID]} holds USD {format_cents(row[N.PAID_BEFORE_CENTS])} from "
            f"earlier rounds but is now excluded ({row[N.REASON]}; {lost.height:,} user(s) in "
            "all)",
            appealed=bool(lost.filter(pl.col(N.USER_ID).is_in(appealed_ids)).height),
            path=appeals_path,
        )

    progress("model")
    t0 = time.perf_counter()
    target = round_budget_usd(scenario, number)
    target_c = budget_to_cents(target)
    total_held = int(holders[N.PAID_BEFORE_CENTS].sum())
    if total_held > target_c:
        raise _claw_back(
            f"round {number} pays USD {format_cents(target_c)} in total over all rounds "
            f"(budget.total_usd less any reserve still held), but users already hold USD "
            f"{format_cents(total_held)}",
            appealed=False,
            path=appeals_path,
        )
    features = elig.eligible
    user_id = features[N.USER_ID].to_numpy()
    aligned = features.select(N.USER_ID).join(held, on=N.USER_ID, how="left", maintain_order="left")
    held_c = aligned[N.PAID_BEFORE_CENTS].fill_null(0).to_numpy().astype(np.int64)
    pinned = features[N.USER_ID].is_in(forfeited.implode()).to_numpy()
    appealed = features[N.USER_ID].is_in(appealed_ids).to_numpy()
    # built without the exhaust check, which the raised bounds are checked against below: a
    # cap lowered under what users hold is a claw-back first, and only then too small a total
    loose = dataclasses.replace(
        scenario, budget=dataclasses.replace(scenario.budget, exhaust=False)
    )
    problem = build_problem(features, loose, budget_usd=target)
    problem = _held_problem(problem, user_id, held_c, pinned, appealed, appeals_path)
    problem = dataclasses.replace(problem, exhaust=bool(scenario.budget.exhaust))
    lowest = int(bounds_to_cents(problem.lower, problem.upper)[0].sum())
    if lowest > target_c:
        new_users = int((held_c == 0).sum())
        raise InfeasibleError(
            f"round {number} pays USD {format_cents(target_c)} in total, of which users already "
            f"hold USD {format_cents(total_held)}; the floors of the {new_users:,} user(s) new "
            f"in this round (reinstated or corrected on appeal) need USD "
            f"{format_cents(lowest - total_held)} more than that leaves: USD "
            f"{format_cents(lowest - target_c)} short.",
            hint="release the reserve in this round (rounds.reserve_release_round), raise "
            "budget.total_usd, or decide those appeals in a round that has money to pay them",
        )
    check_feasible_cents(
        target, scenario.budget.exhaust, problem.lower, problem.upper, problem.segments
    )
    timings["model"] = time.perf_counter() - t0

    run = solve_and_round(
        elig,
        problem,
        scenario,
        timings=timings,
        solver=solver,
        with_payouts=False,
        progress=progress,
    )
    delta = run.cents - held_c
    if (delta < 0).any():  # the bounds make this impossible; never pay a negative amount
        raise AllocatorError("a voucher came out below what its user holds; this is a bug")
    allocations = run.allocations.with_columns(
        held_labels(run.cents, run.lower_cents, run.upper_cents, held_c, pinned),
        pl.Series(N.PAID_BEFORE_CENTS, held_c, dtype=pl.Int64),
        pl.Series(N.DELTA_CENTS, delta, dtype=pl.Int64),
    )
    shift = (number - 1) * float(scenario.rounds.interval_hours)
    payouts = plan_payouts(
        user_id, delta, scenario.payouts, PROGRAMME, round_number=number, shift_hours=shift
    )
    issued = payouts.frame.with_columns(usd_to_cents(payouts.frame[N.AMOUNT]).alias(AMOUNT_CENTS))
    ledger = with_new_vouchers(settlement.ledger, issued, round_number=number)
    record = appeals_record(in_force, fresh, elig, round_number=number)
    run = dataclasses.replace(run, allocations=allocations, payouts=payouts)
    section = {
        "number": number,
        "target_cents": target_c,
        "reserve_cents": budget_to_cents(float(scenario.budget.total_usd)) - target_c,
        "previous": {
            "path": str(prev_dir.resolve()),
            "manifest_sha256": sha256_file(prev_dir / N.MANIFEST_FILE),
            "round": prev.round,
        },
        "appeals": _appeals_section(appeals_path, new),
        "redemptions": _appeals_section(redemptions_path, red),
        "unclaimed": scenario.rounds.unclaimed,
        "paid_before_cents": int(held_c.sum()),
        "delta_cents": int(delta.sum()),
        "expired_cents": settlement.expired_cents,
        "vouchers": {
            "redeemed": settlement.redeemed,
            "unclaimed": settlement.unclaimed,
            "expired": settlement.expired,
        },
        "appeals_by_decision": {d: int((fresh[N.DECISION] == d).sum()) for d in N.APPEAL_DECISIONS},
        "users": {
            "topped_up": int((delta > 0).sum()),
            "new": int(((held_c == 0) & (delta > 0)).sum()),
            "forfeited": int(forfeited.len()),
        },
    }
    return RoundResult(run=run, number=number, ledger=ledger, appeals=record, section=section)


def read_columns() -> list[str]:
    """The columns of an appeals file as :func:`~allocator.data.roundfiles.read_appeals` gives them."""
    return [N.USER_ID, N.DECISION, *N.CORRECTABLE, N.NOTE]


def write_round(
    out_dir: Path,
    session: DataSession,
    result: RoundResult,
    *,
    solver_requested: str,
    replace: bool = True,
    made_by: dict[str, object] | None = None,
    sign: Any = None,
) -> Path:
    """Write a later round as a run directory, atomically: the round 1 files (allocations with
    ``paid_before_cents`` and ``delta_cents``, payouts of the deltas), vouchers.parquet,
    appeals.parquet and a manifest with the ``round`` section."""
    run = result.run
    payouts = run.payouts
    if payouts is None:  # allocate_round always plans them
        raise ValueError("a round without a payout plan cannot be written")
    man = manifest(session, run, solver_requested=solver_requested)
    counts = dict(man["counts"])  # type: ignore[call-overload]
    counts[N.BOUND_HELD] = int((run.allocations[N.BOUND] == N.BOUND_HELD).sum())
    return write_run_dir(
        out_dir,
        allocations=run.allocations,
        excluded=run.eligibility.excluded,
        payouts=lambda path: write_payouts_csv(payouts, path),
        manifest={
            **man,
            "counts": counts,
            "round": result.section,
            **(provenance() if made_by is None else made_by),
        },
        replace=replace,
        sign=sign,
        round_files={N.VOUCHERS_FILE: result.ledger, N.APPEALS_FILE: result.appeals},
    )
