r"""Fairness axioms of a run's rule, measured on the run's own problem at full size.

Each axiom is checked either by construction (from the run's vouchers alone) or by perturbation
(the problem is changed the way the axiom describes and solved again, at full size). Every check
reports ``holds``, how many users or cases it ``checked``, the number of ``violations``, the
``worst`` ones (user ids and amounts in USD) and what theory ``expected`` for the rule, so that a
designer can tell a surprise from a known property of the rule.

Vouchers are compared before rounding to cents, within :data:`TOL_USD` (half a cent) plus a
relative 1e-9: a difference below that is the solver's last digit, not a property of the rule.

The axioms (Thomson 2003 and its 2015 update; the voucher programme adds bounds and thresholds)
    ``budget_balance``
        the vouchers spend the budget exactly (in exhaust mode; at most the budget otherwise);
    ``award_at_most_claim``
        :math:`v_i \le L_i`: nobody is paid more than they lost;
    ``equal_treatment_of_equals``
        users the rule cannot tell apart (same weight, bounds and segment) get the same voucher;
    ``order_preservation``
        a larger loss gets no smaller voucher and keeps no smaller remaining loss :math:`L - v`;
    ``claims_monotonicity``
        raising a user's loss by 10% (the loss ratio with it), one user at a time, does not
        lower their voucher;
    ``resource_monotonicity``
        1% more budget lowers nobody's voucher;
    ``consistency``
        removing a tenth of the users with their vouchers and solving the rest on what remains
        (segment shares restated on the remaining budget) gives the rest the same vouchers;
    ``composition``
        paying half the budget first and then the whole budget with everyone's floor raised to
        what they already have gives the same vouchers as paying it at once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from allocator.kernel.problem import AllocationProblem, Segment

#: Vouchers closer than this (USD) are equal for the axioms: half a cent.
TOL_USD = 0.005
#: One cent (USD): bounds are whole cents, so a remaining loss can differ by one for nothing.
CENT_USD = 0.01
#: How many worst cases each axiom lists.
WORST = 5

Solver = Callable[[AllocationProblem], np.ndarray]


@dataclass(frozen=True)
class AxiomResult:
    """One axiom's verdict on a run (see the module docstring for each ``name``)."""

    name: str
    holds: bool
    checked: int
    violations: int
    expected: str
    how: str
    worst: list[dict[str, Any]] = field(default_factory=list)
    #: for split_merge_gain: the gains' summary by kind ("split", "merge")
    distribution: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True, eq=False)
class AxiomCase:
    """A run's problem as the axioms need it: the problem, its optimum, and who is who.

    ``solve`` re-solves a changed problem (the run's solver); ``with_loss`` rebuilds the problem
    for other losses (weights, caps and loss ratios follow the loss, as the scenario says).
    """

    problem: AllocationProblem
    vouchers: np.ndarray
    loss: np.ndarray
    user_id: np.ndarray
    segment: np.ndarray
    solve: Solver
    with_loss: Callable[[np.ndarray], AllocationProblem]
    expected: dict[str, str]


def _close(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    close: np.ndarray = np.abs(a - b) <= TOL_USD + 1e-9 * np.maximum(np.abs(a), np.abs(b))
    return close


def _user(case: AxiomCase, i: int, **amounts: float) -> dict[str, Any]:
    row: dict[str, Any] = {
        "user_id": int(case.user_id[i]),
        "loss_usd": round(float(case.loss[i]), 2),
    }
    row.update({k: round(float(v), 4) for k, v in amounts.items()})
    return row


def _result(
    case: AxiomCase, name: str, checked: int, bad: int, how: str, worst: list[dict[str, Any]]
) -> AxiomResult:
    return AxiomResult(
        name=name,
        holds=bad == 0,
        checked=checked,
        violations=bad,
        expected=case.expected.get(name, ""),
        how=how,
        worst=worst[:WORST],
    )


# -------------------------------------------------------------------------- by construction


def budget_balance(case: AxiomCase) -> AxiomResult:
    p = case.problem
    spent = float(case.vouchers.sum())
    off = spent - p.budget if p.exhaust else max(0.0, spent - p.budget)
    bad = int(abs(off) > TOL_USD + 1e-9 * p.budget)
    how = "the vouchers' total against the budget" + (" (exhaust mode)" if p.exhaust else "")
    worst = (
        [{"budget_usd": p.budget, "paid_usd": round(spent, 4), "difference_usd": round(off, 4)}]
        if bad
        else []
    )
    return _result(case, "budget_balance", 1, bad, how, worst)


def award_at_most_claim(case: AxiomCase) -> AxiomResult:
    excess = case.vouchers - case.loss
    over = excess > TOL_USD
    order = np.argsort(-np.where(over, excess, -np.inf))[: int(over.sum())]
    worst = [
        _user(case, i, voucher_usd=case.vouchers[i], excess_usd=excess[i]) for i in order[:WORST]
    ]
    return _result(
        case,
        "award_at_most_claim",
        case.vouchers.size,
        int(over.sum()),
        "every voucher against its loss",
        worst,
    )


def equal_treatment_of_equals(case: AxiomCase) -> AxiomResult:
    p = case.problem
    frame = pl.DataFrame(
        {
            "w": p.weights,
            "lo": p.lower,
            "hi": p.upper,
            "seg": case.segment,
            "v": case.vouchers,
            "i": np.arange(p.n),
        }
    )
    groups = (
        frame.group_by("w", "lo", "hi", "seg")
        .agg(
            pl.len().alias("n"),
            pl.col("v").min().alias("v_min"),
            pl.col("v").max().alias("v_max"),
            pl.col("i").sort_by("v").first().alias("i_min"),
            pl.col("i").sort_by("v").last().alias("i_max"),
        )
        .filter(pl.col("n") > 1)
    )
    spread = groups["v_max"].to_numpy() - groups["v_min"].to_numpy()
    bad_groups = spread > TOL_USD + 1e-9 * groups["v_max"].to_numpy()
    bad = int(groups["n"].to_numpy()[bad_groups].sum())
    worst = []
    for k in np.argsort(-spread)[: int(bad_groups.sum())][:WORST]:
        lo_i, hi_i = int(groups["i_min"][int(k)]), int(groups["i_max"][int(k)])
        worst.append(
            {
                "user_ids": [int(case.user_id[lo_i]), int(case.user_id[hi_i])],
                "vouchers_usd": [
                    round(float(case.vouchers[lo_i]), 4),
                    round(float(case.vouchers[hi_i]), 4),
                ],
            }
        )
    checked = int(groups["n"].sum()) if groups.height else 0
    how = f"{groups.height:,} groups of users with the same weight, bounds and segment"
    return _result(case, "equal_treatment_of_equals", checked, bad, how, worst)


def _prefix_max_below(loss: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each user (in loss order): the largest value among users with a strictly smaller
    loss, and the index of that user (-1 if none)."""
    order = np.argsort(loss, kind="stable")
    sorted_loss = loss[order]
    sorted_values = values[order]
    starts = np.flatnonzero(np.r_[True, sorted_loss[1:] != sorted_loss[:-1]])
    group_max = np.maximum.reduceat(sorted_values, starts)
    best_before = np.r_[-np.inf, np.maximum.accumulate(group_max)[:-1]]
    sizes = np.diff(np.r_[starts, sorted_loss.size])
    below = np.empty(loss.size)
    below[order] = np.repeat(best_before, sizes)
    return below, order


def order_preservation(case: AxiomCase) -> AxiomResult:
    v, loss = case.vouchers, case.loss
    best_v, _ = _prefix_max_below(loss, v)
    best_rest, _ = _prefix_max_below(loss, loss - v)
    award_gap = best_v - v
    rest_gap = best_rest - (loss - v)
    bad_award = award_gap > TOL_USD + 1e-9 * np.abs(v)
    # a cap at the loss is paid in whole cents (a loss of 965.25 is capped at 965.24 or 965.25
    # depending on float digits), so remaining losses differ by up to a cent for nothing
    bad_rest = rest_gap > CENT_USD + TOL_USD + 1e-9 * np.abs(loss)
    bad = bad_award | bad_rest
    worst = []
    rest = loss - v
    for kind, gaps, flags, values in (
        ("voucher", award_gap, bad_award, v),
        ("remaining_loss", rest_gap, bad_rest, rest),
    ):
        gap = np.where(flags, gaps, 0.0)
        for i in np.argsort(-gap)[: int(flags.sum())][:WORST]:
            smaller = loss < loss[i]
            j = int(np.flatnonzero(smaller)[np.argmax(values[smaller])])
            worst.append(
                {
                    "broken": kind,
                    "user_id": int(case.user_id[i]),
                    "loss_usd": round(float(loss[i]), 2),
                    "voucher_usd": round(float(v[i]), 4),
                    "smaller_loss_user_id": int(case.user_id[j]),
                    "smaller_loss_usd": round(float(loss[j]), 2),
                    "smaller_loss_voucher_usd": round(float(v[j]), 4),
                }
            )
    how = (
        f"each user against everyone with a smaller loss: {int(bad_award.sum()):,} get a smaller "
        f"voucher, {int(bad_rest.sum()):,} keep a smaller remaining loss"
    )
    return _result(case, "order_preservation", v.size, int(bad.sum()), how, worst)


# --------------------------------------------------------------------------- by perturbation


def _sample(n: int, k: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=min(k, n), replace=False))


#: Users whose claim claims_monotonicity raises, one at a time (each a full solve).
MONOTONICITY_USERS = 100


def _one_changed(base: AllocationProblem, changed: AllocationProblem, j: int) -> AllocationProblem:
    """``base`` with user ``j``'s weight, bounds and segment memberships taken from ``changed``."""
    weights, lower, upper = base.weights.copy(), base.lower.copy(), base.upper.copy()
    weights[j], lower[j], upper[j] = changed.weights[j], changed.lower[j], changed.upper[j]
    segments = []
    for old, new in zip(base.segments, changed.segments):
        members = np.array(old.members, dtype=bool)
        members[j] = bool(new.members[j])
        segments.append(dataclasses.replace(old, members=members))
    return dataclasses.replace(
        base,
        weights=weights,
        lower=lower,
        upper=upper,
        segments=tuple(segments),
        scalar_bounds=None,
    )


def claims_monotonicity(
    case: AxiomCase, *, sample: int = MONOTONICITY_USERS, seed: int = 0
) -> AxiomResult:
    """Each sampled user's loss raised by 10% alone (the others' as they are), solved again:
    the axiom is about one claim at a time, since raising many claims together can lower
    everyone's share of the budget."""
    idx = _sample(case.problem.n, min(sample, MONOTONICITY_USERS), seed)
    loss = case.loss.copy()
    loss[idx] *= 1.10
    raised = case.with_loss(loss)  # every sampled user's new weight, bounds and segments
    after = np.empty(idx.size)
    for k, j in enumerate(idx):
        after[k] = case.solve(_one_changed(case.problem, raised, int(j)))[j]
    drop = case.vouchers[idx] - after
    bad = drop > TOL_USD + 1e-9 * case.vouchers[idx]
    worst = [
        _user(case, int(idx[k]), voucher_usd=case.vouchers[idx[k]], after_usd=after[k])
        for k in np.argsort(-drop)[: int(bad.sum())][:WORST]
    ]
    how = (
        f"{idx.size:,} random users' losses (and loss ratios) raised by 10%, one user at a time, "
        "everyone solved again"
    )
    return _result(case, "claims_monotonicity", idx.size, int(bad.sum()), how, worst)


def resource_monotonicity(case: AxiomCase) -> AxiomResult:
    more = dataclasses.replace(case.problem, budget=case.problem.budget * 1.01)
    after = case.solve(more)
    drop = case.vouchers - after
    bad = drop > TOL_USD + 1e-9 * case.vouchers
    worst = [
        _user(case, int(i), voucher_usd=case.vouchers[i], after_usd=after[i])
        for i in np.argsort(-drop)[: int(bad.sum())][:WORST]
    ]
    return _result(
        case,
        "resource_monotonicity",
        case.problem.n,
        int(bad.sum()),
        "the budget raised by 1%, everyone solved again",
        worst,
    )


def consistency(case: AxiomCase, *, share: float = 0.1, seed: int = 1) -> AxiomResult:
    p = case.problem
    gone = np.zeros(p.n, dtype=bool)
    gone[_sample(p.n, max(1, int(p.n * share)), seed)] = True
    keep = ~gone
    budget = p.budget - float(case.vouchers[gone].sum())
    if budget <= 0.0 or not keep.any():  # the removed users held everything: nothing to re-solve
        return _result(
            case, "consistency", 0, 0, "nothing left to divide once users are removed", []
        )
    segments = []
    for seg in p.segments:
        members = np.asarray(seg.members, dtype=bool)
        removed = float(case.vouchers[gone & members].sum())

        def restate(s: float | None, removed: float = removed) -> float | None:
            return None if s is None else min(1.0, max(0.0, (s * p.budget - removed) / budget))

        segments.append(
            Segment(seg.name, members[keep], restate(seg.min_share), restate(seg.max_share))
        )
    rest = dataclasses.replace(
        p,
        weights=p.weights[keep],
        lower=p.lower[keep],
        upper=p.upper[keep],
        budget=budget,
        segments=tuple(segments),
        scalar_bounds=None,
    )
    after = case.solve(rest)
    before = case.vouchers[keep]
    moved = ~_close(before, after)
    kept_idx = np.flatnonzero(keep)
    diff = np.abs(before - after)
    worst = [
        _user(case, int(kept_idx[k]), voucher_usd=before[k], after_usd=after[k])
        for k in np.argsort(-diff)[: int(moved.sum())][:WORST]
    ]
    how = (
        f"{int(gone.sum()):,} random users removed with their vouchers, the other "
        f"{int(keep.sum()):,} solved again on what remains"
    )
    return _result(case, "consistency", int(keep.sum()), int(moved.sum()), how, worst)


def composition(case: AxiomCase) -> AxiomResult:
    p = case.problem
    half = case.solve(dataclasses.replace(p, budget=p.budget / 2.0))
    second = dataclasses.replace(
        p, lower=np.minimum(np.maximum(p.lower, half), p.upper), scalar_bounds=None
    )
    after = case.solve(second)
    moved = ~_close(case.vouchers, after)
    diff = np.abs(case.vouchers - after)
    worst = [
        _user(case, int(i), voucher_usd=case.vouchers[i], two_stages_usd=after[i])
        for i in np.argsort(-diff)[: int(moved.sum())][:WORST]
    ]
    how = "half the budget first, then the whole budget with everyone's floor raised to what they have"
    return _result(case, "composition", p.n, int(moved.sum()), how, worst)


def check_axioms(
    case: AxiomCase,
    *,
    sample: int = 1000,
    seed: int = 0,
    progress: Callable[[str], None] = lambda _: None,
) -> list[AxiomResult]:
    """Every axiom of the module docstring, in its order; ``progress`` is called with each
    axiom's name before it is measured (the perturbation axioms each solve again)."""
    checks: list[tuple[str, Callable[[AxiomCase], AxiomResult]]] = [
        ("budget_balance", budget_balance),
        ("award_at_most_claim", award_at_most_claim),
        ("equal_treatment_of_equals", equal_treatment_of_equals),
        ("order_preservation", order_preservation),
        ("claims_monotonicity", lambda c: claims_monotonicity(c, sample=sample, seed=seed)),
        ("resource_monotonicity", resource_monotonicity),
        ("consistency", lambda c: consistency(c, seed=seed + 1)),
        ("composition", composition),
    ]
    results = []
    for name, check in checks:
        progress(f"axiom {name}")
        results.append(check(case))
    return results


def segment_names(problem: AllocationProblem) -> np.ndarray:
    """Each user's segment name ("" outside every segment), for equal treatment."""
    label = np.full(problem.n, "", dtype=object)
    for seg in problem.segments:
        label[np.asarray(seg.members, dtype=bool)] = seg.name
    return label.astype(str)


__all__ = [
    "TOL_USD",
    "AxiomCase",
    "AxiomResult",
    "check_axioms",
    "segment_names",
]
