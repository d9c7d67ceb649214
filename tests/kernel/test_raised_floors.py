"""Per-user lower bounds above the floor (a later round's "no claw-back"), on every solver path.

A later round raises each user's lower bound to what they hold. These tests draw problems with
such bounds and check, on the alpha-fair fast solver, the cvxpy model, every claims rule, the
exact max-min and the rounding to cents (with and without segments), what must hold whatever the
numbers: nobody below their raised bound, the certificate passes, the total is the budget to the
cent, and the fast solver and cvxpy agree. The rules' awards are recomputed here from their paths
written out anew (the award clipped to the raised bounds at the root that pays the budget).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from allocator.kernel.claims import RULES
from allocator.kernel.money import CENTS_PER_USD, budget_to_cents
from allocator.kernel.problem import AllocationProblem, Segment
from allocator.kernel.rounding import bounds_to_cents, round_to_cents_by_segment
from allocator.kernel.rule_certificate import certify_rule
from allocator.kernel.solve import solve

#: Claims rules a voucher scenario offers (minimum_payment drops awards, so it is refused there).
VOUCHER_RULES = sorted(r for r in RULES if r != "minimum_payment")


@st.composite
def held_problems(draw: st.DrawFn) -> tuple[AllocationProblem, np.ndarray]:
    """A problem whose lower bounds are raised, for a random subset, to a held amount in whole
    cents between the floor and the cap, and a budget between the raised floors and the caps."""
    n = draw(st.integers(3, 40))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    loss = np.round(50.0 + rng.lognormal(6.0, 1.5, n), 2)
    lower = np.full(n, 4.0)
    upper = np.floor(np.minimum(6000.0, loss) * 100.0) / 100.0
    held_c = np.zeros(n, dtype=np.int64)
    holds = rng.random(n) < draw(st.floats(0.2, 1.0))
    lo_c, hi_c = bounds_to_cents(lower, upper)
    held_c[holds] = rng.integers(lo_c[holds], hi_c[holds] + 1)
    raised = np.maximum(lower, held_c / CENTS_PER_USD)
    share = draw(st.floats(0.0, 1.0))
    low, high = int(np.maximum(lo_c, held_c).sum()), int(hi_c.sum())
    budget_c = low + int(round(share * (high - low)))
    problem = AllocationProblem(
        weights=loss,
        lower=raised,
        upper=upper,
        budget=budget_c / CENTS_PER_USD,
        alpha=1.0,
    )
    return problem, held_c


def _cents(problem: AllocationProblem, v: np.ndarray) -> np.ndarray:
    loss = np.asarray(problem.weights)
    cents, _ = round_to_cents_by_segment(
        v,
        problem.lower,
        problem.upper,
        problem.budget,
        exhaust=True,
        loss=loss,
        user_id=np.arange(problem.n, dtype=np.int64),
        segments=problem.segments,
    )
    return cents


def _no_claw_back(problem: AllocationProblem, held_c: np.ndarray, v: np.ndarray) -> None:
    assert (v >= held_c / CENTS_PER_USD - 1e-9).all()
    cents = _cents(problem, v)
    assert (cents >= held_c).all()
    assert int(cents.sum()) == budget_to_cents(problem.budget)
    _, hi_c = bounds_to_cents(problem.lower, problem.upper)
    assert (cents <= hi_c).all()


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0, 2.0])
@given(case=held_problems())
def test_fast_solver_keeps_every_user_at_or_above_what_they_hold(alpha: float, case) -> None:
    problem, held_c = case
    problem = replace(problem, alpha=alpha)
    alloc = solve(problem, method="fast")
    assert alloc.certificate.certified
    _no_claw_back(problem, held_c, alloc.vouchers)


@settings(max_examples=15)
@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0])
@given(case=held_problems())
def test_cvxpy_agrees_with_the_fast_solver_on_raised_floors(alpha: float, case) -> None:
    problem, held_c = case
    problem = replace(problem, alpha=alpha)
    fast = solve(problem, method="fast")
    conic = solve(problem, method="cvxpy")
    assert conic.certificate.certified
    _no_claw_back(problem, held_c, conic.vouchers)
    scale = max(1.0, abs(fast.objective))
    assert abs(fast.objective - conic.objective) <= 1e-6 * scale
    assert np.abs(fast.vouchers - conic.vouchers).max() <= 0.01


@given(case=held_problems())
def test_segment_shares_and_raised_floors_hold_together(case) -> None:
    problem, held_c = case
    members = np.arange(problem.n) % 2 == 0
    # between what the members' floors need and what they can take beside the others' floors
    need = float(problem.lower[members].sum())
    most = min(float(problem.upper[members].sum()), problem.budget - problem.lower[~members].sum())
    assume(most - need > 1.0)  # a share on the edge is a matter of float shares, not of rounds
    share = float((need + 0.5 * (most - need)) / problem.budget)
    seg = Segment("even", members, min_share=share)
    problem = replace(problem, segments=(seg,))
    alloc = solve(problem, method="fast")
    assert alloc.certificate.certified
    _no_claw_back(problem, held_c, alloc.vouchers)
    cents = _cents(problem, alloc.vouchers)
    assert int(cents[members].sum()) >= int(np.ceil(share * budget_to_cents(problem.budget) - 1e-6))


def _path_awards(rule: str, c: np.ndarray, lo: np.ndarray, hi: np.ndarray, budget: float):
    """The awards of the simplest rules by bisection on their paths clipped to the bounds."""
    if rule == "proportional":
        a, b = np.zeros_like(c), c
    elif rule == "constrained_equal_awards":
        a, b = np.zeros_like(c), np.ones_like(c)
    else:  # constrained_equal_losses
        a, b = c, np.ones_like(c)
    left, right = -1e7, 1e7
    for _ in range(200):
        mid = 0.5 * (left + right)
        if np.clip(a + b * mid, lo, hi).sum() < budget:
            left = mid
        else:
            right = mid
    return np.clip(a + b * right, lo, hi)


@pytest.mark.parametrize("rule", [*VOUCHER_RULES, "max_min"])
@given(case=held_problems())
def test_claims_rules_clip_their_path_to_the_raised_floors(rule: str, case) -> None:
    problem, held_c = case
    parameter = {"base_then_pro_rata": 100.0, "convenience_class": 1000.0}.get(rule)
    problem = replace(problem, rule=rule, rule_parameter=parameter)
    alloc = solve(problem)
    awards = alloc.rule_awards
    assert awards is not None and alloc.certificate.certified
    _no_claw_back(problem, held_c, alloc.vouchers)
    cents = _cents(problem, alloc.vouchers)
    lo_c, hi_c = bounds_to_cents(problem.lower, np.minimum(problem.upper, problem.weights))
    rounded = certify_rule(
        awards,
        cents / CENTS_PER_USD,
        problem.budget,
        rounded=True,
        bounds=(lo_c / CENTS_PER_USD, hi_c / CENTS_PER_USD),
    )
    assert rounded.certified, rounded.failures
    if rule in ("proportional", "constrained_equal_awards", "constrained_equal_losses"):
        hi = np.minimum(problem.upper, problem.weights)
        want = _path_awards(rule, problem.weights, problem.lower, hi, problem.budget)
        assert np.abs(alloc.vouchers - want).max() <= 1e-6 * max(1.0, problem.budget)
