"""The entry points: :func:`explain_user` and :func:`explain_users` gather the user's facts,
recompute eligibility for them (checked against the run) and explain the exclusion or the
amount."""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import polars as pl

from allocator import names as N
from allocator.analysis.explain.allocated import (
    SLACK,
    amount_derivation,
    claim_of,
    phase_in_of,
    weight_breakdown,
)
from allocator.analysis.explain.excluded import exclusion
from allocator.analysis.explain.facts import (
    LoadedRun,
    changed,
    event_groups,
    one_user_inputs,
    open_inputs,
    open_run,
    reference_user,
    row_of,
    valued_events,
)
from allocator.analysis.explain.others import OtherScenarios
from allocator.analysis.explain.results import Explanation, WeightBreakdown
from allocator.analysis.explain.rounds import (
    corrections,
    forfeit_exclusion,
    one_user_eligibility,
    round_history,
    waived_decision,
)
from allocator.analysis.explain.wording import COUNTED, cents_text
from allocator.data.inputs import Inputs
from allocator.errors import InputError
from allocator.settings.models import round_budget_usd

__all__ = ["INT64_MAX", "INT64_MIN", "LOSS_ATOL_USD", "explain_user", "explain_users"]

#: The one-user loss must equal the run's to within this many USD (events are summed in whole
#: nano-dollars, so the two are normally identical).
LOSS_ATOL_USD = 1e-9
#: User ids are Int64 in every table; an id outside this range is in no run.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def _loss_matches(a: float | None, b: float | None) -> bool:
    """Whether a recomputed loss is the run's (to a nano-dollar; both missing also matches)."""
    if a is None or b is None:
        return a is None and b is None
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return math.isclose(a, b, rel_tol=1e-12, abs_tol=LOSS_ATOL_USD)


def _explain_one(
    run: LoadedRun, inputs: Inputs, uid: int, ref: int | None, others: OtherScenarios | None
) -> Explanation:
    """One user's explanation (module docstring of :mod:`allocator.analysis.explain`)."""
    rules = run.scenario.eligibility
    allocations, excluded = run.run.allocations, run.run.excluded
    if not INT64_MIN <= uid <= INT64_MAX:
        example = allocations[N.USER_ID][0] if allocations.height else None
        raise InputError(
            f"user {uid} is not in this run ({run.run.path}): user ids are 64-bit integers, "
            f"from {INT64_MIN} to {INT64_MAX}."
            + (f" A user of this run is, e.g., {example}." if example is not None else ""),
            hint="check the user id",
        )
    alloc = row_of(allocations, uid)
    excl = row_of(excluded, uid)
    # the median-weight user is recomputed too, as the zero point of the factor shares
    ids = [uid] if alloc is None or ref is None or ref == uid else [uid, ref]
    tables = one_user_inputs(inputs, ids)
    mine = tables[N.EVENTS_FILE].filter(pl.col(N.USER_ID) == uid)
    if mine.height == 0:
        if alloc is not None or excl is not None:
            raise changed(f"user {uid} is in the run but not in {run.paths[N.EVENTS_FILE]}", run)
        example = allocations[N.USER_ID][0] if allocations.height else None
        raise InputError(
            f"user {uid} is not in the liquidations file {run.paths[N.EVENTS_FILE]} (column "
            f"{N.USER_ID}): only liquidated users are paid or excluded, so there is nothing to "
            f"explain."
            + (f" A liquidated user of this run is, e.g., {example}." if example else ""),
            hint="check the user id",
        )
    # from round 2 on, the appeals in force apply before the rules, as the run applied them
    elig = one_user_eligibility(
        run.run, tables, rules, source={k: str(v) for k, v in run.paths.items()}
    )
    row_e = row_of(elig.eligible, uid)
    row_x = row_of(elig.excluded, uid)
    forfeited = excl is not None and excl[N.REASON] == N.REASON_VOUCHER_EXPIRED
    if alloc is None and excl is None:
        raise changed(f"user {uid} is liquidated but neither paid nor excluded by the run", run)
    if alloc is not None and row_e is None:
        why = f"now excluded ({row_x[N.REASON]}: {row_x[N.DETAIL]})" if row_x else "not found"
        raise changed(f"user {uid} was paid by the run but is {why}", run)
    if excl is not None and row_x is None and not forfeited:
        raise changed(
            f"user {uid} was excluded ({excl[N.REASON]}) by the run but is now eligible", run
        )
    row = row_e if alloc is not None or forfeited else row_x
    assert row is not None
    written = alloc if alloc is not None else excl
    assert written is not None
    if not _loss_matches(row[N.LOSS_USD], written[N.LOSS_USD]):
        raise changed(
            f"user {uid}'s loss recomputed from the inputs is {row[N.LOSS_USD]!r} USD, but the run "
            f"wrote {written[N.LOSS_USD]!r} USD",
            run,
        )
    if excl is not None and not forfeited and row[N.REASON] != excl[N.REASON]:
        raise changed(
            f"user {uid} is now excluded for {row[N.REASON]}, the run said {excl[N.REASON]}", run
        )

    valued = valued_events(mine, tables[N.PRICES_FILE], rules)
    groups = event_groups(valued)
    user = row_of(tables[N.USERS_FILE], uid)
    snap = row_of(tables[N.SNAPSHOT_FILE], uid)
    notes: list[str] = []
    counted = sum(g.loss_usd or 0.0 for g in groups if g.status == COUNTED)
    gross = row.get(N.GROSS_LOSS_USD)
    if gross is not None and not math.isclose(counted, gross, rel_tol=1e-12, abs_tol=1e-8):
        notes.append(
            f"event values add up to {counted!r} USD, the eligibility pipeline's gross loss is {gross!r}"
        )

    # from round 2 on, an appeal's corrected values are the ones the rules used
    corrected = corrections(run.run, uid)
    for field, value in corrected.items():
        was = {N.NET_ASSETS_USD: snap, N.DEPEG_COMP_USD: user, N.KYC_STATUS: user, N.REGION: user}
        source = was.get(field)
        before = None if source is None else source.get(field)
        if field == N.GROSS_LOSS_USD:
            before = counted
        notes.append(f"{field} corrected on appeal to {value!r} (the inputs give {before!r})")
    common: dict[str, Any] = {
        "user_id": uid,
        "run_dir": str(run.run.path),
        "scenario": run.scenario.name,
        "events": groups,
        "loss_usd": row.get(N.LOSS_USD),
        "gross_loss_usd": gross,
        "fee_usd": row.get(N.FEE_USD) if alloc is not None else None,
        "depeg_comp_usd": corrected.get(
            N.DEPEG_COMP_USD, None if user is None else user[N.DEPEG_COMP_USD]
        ),
        "net_assets_usd": corrected.get(
            N.NET_ASSETS_USD, None if snap is None else snap[N.NET_ASSETS_USD]
        ),
        "loss_ratio": row.get(N.LOSS_RATIO),
        "other_scenarios": None if others is None else others.outcome(uid),
        "rounds": round_history(run.run, uid),
    }
    decision = elig.decision(uid)
    assert decision is not None  # the user is in the recomputed eligible or excluded table
    decision = waived_decision(decision, run.run)
    if alloc is None:
        if forfeited:
            out = forfeit_exclusion(excl[N.DETAIL] if excl else None)
        else:
            out = exclusion(decision, excl[N.DETAIL] if excl else None, valued, user, row, run)
        return Explanation(status="excluded", exclusion=out, notes=tuple(notes), **common)

    assert ref is not None
    ref_row = row_of(allocations, ref)
    assert ref_row is not None
    ref_features = row_of(elig.eligible, ref)
    if ref_features is None or not _loss_matches(ref_features[N.LOSS_USD], ref_row[N.LOSS_USD]):
        raise changed(f"the reference user {ref}'s eligibility or loss differs from the run", run)
    features = elig.eligible.filter(pl.col(N.USER_ID).is_in([uid, ref]))
    weight: WeightBreakdown | None = None
    if run.scenario.objective.rule == "alpha_fair":
        weight = weight_breakdown(
            features, uid, ref, run, float(alloc[N.WEIGHT]), float(ref_row[N.WEIGHT]), decision
        )
        w = weight.weight
    else:  # a claims rule weighs by the claim: the loss (1 for max-min of the vouchers)
        w = claim_of(alloc, run)
    amount = amount_derivation(alloc, w, run)
    phase_in = phase_in_of(alloc, row_of(features, uid) or {}, run, decision)
    if amount.reproduces_within_cent is False:
        assert amount.difference_usd is not None
        gap = abs(amount.difference_usd)
        limit = amount.run_max_difference_usd
        if limit is not None and gap <= limit + SLACK * max(1.0, abs(amount.continuous_usd or 0.0)):
            notes.append(
                f"the paid amount is {gap:.4f} USD from the closed form, more than a cent: the run's "
                f"cent rounding moved vouchers by up to {limit:.4f} USD (manifest "
                f"certificate_rounded.best_response_max_usd), because bounds that are not whole "
                f"cents (e.g. a coverage cap) left cents to place"
            )
        else:
            raise changed(
                f"user {uid}'s voucher, {cents_text(amount.voucher_cents)} USD, is {gap:.4f} USD from "
                f"the closed form {amount.continuous_usd!r} USD, more than the run's rounding allows "
                f"({'unknown' if limit is None else f'{limit:.4f}'} USD)",
                run,
            )
    return Explanation(
        status="paid",
        weight=weight,
        amount=amount,
        phase_in=phase_in,
        notes=tuple(notes),
        **common,
    )


def explain_users(
    run_dir: str | Path,
    user_ids: Iterable[int],
    *,
    other_scenarios: bool = True,
    scenarios_dir: str | Path | None = None,
) -> list[Explanation]:
    """:func:`explain_user` for several users, reading the run once and running each other
    scenario once for all of them."""
    run = open_run(run_dir)
    inputs = open_inputs(run)
    ref = reference_user(run.run.allocations)
    others = None
    if other_scenarios:
        # the other scenarios at what this run pays in total (its round's cumulative total)
        budget = round_budget_usd(run.scenario, run.run.round)
        directory = None if scenarios_dir is None else Path(scenarios_dir)
        others = OtherScenarios(run.data_dir, budget, run.scenario.name, directory)
    return [_explain_one(run, inputs, int(uid), ref, others) for uid in user_ids]


def explain_user(
    run_dir: str | Path,
    user_id: int,
    *,
    other_scenarios: bool = True,
    scenarios_dir: str | Path | None = None,
) -> Explanation:
    """Explain one user's voucher (or exclusion) in a run directory; see the module docstring.

    Parameters
    ----------
    run_dir
        A run directory written by ``allocator allocate``; its manifest names the input files.
    user_id
        The user to explain.
    other_scenarios
        Also run the shipped scenarios (``scenarios/*.toml`` except ``loans*``, other than the
        run's own) on the same data at this run's budget, and report the user's outcome in each.
    scenarios_dir
        Where the shipped scenarios are (default :data:`SCENARIOS_DIR`).

    Raises
    ------
    InputError
        The run directory is damaged or changed (:func:`allocator.runs.reader.load_run`), an input
        file is gone or its sha256 is not the manifest's, the user id is outside 64 bits or not
        in the liquidations file, or the recomputed loss, exclusion reason, weight or bound
        differs from what the run wrote.
    """
    return explain_users(
        run_dir, [user_id], other_scenarios=other_scenarios, scenarios_dir=scenarios_dir
    )[0]
