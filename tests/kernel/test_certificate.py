"""The optimality certificate: passes on optima, catches each kind of non-optimality.

Expected values are recomputed here from first principles (math.fsum objectives, weak duality
against the optimal value), never copied from a run.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from allocator.kernel.certificate import certify, effective_prices, objective_value, utility
from allocator.kernel.fast import fast_solution
from allocator.kernel.problem import AllocationProblem, Segment
from allocator.kernel.solve import solve


def _problem(
    alpha: float, n: int = 400, seed: int = 0, segments: bool = False
) -> AllocationProblem:
    rng = np.random.default_rng(seed)
    loss = 50.0 + rng.lognormal(6.5, 1.6, n)
    lower = np.full(n, 4.0)
    upper = np.minimum(6000.0, 0.6 * loss)
    segs: tuple[Segment, ...] = ()
    if segments:
        segs = (Segment("small", loss < np.quantile(loss, 0.3), min_share=0.04),)
    return AllocationProblem(loss, lower, upper, 0.3 * upper.sum(), alpha, True, segs)


def _u(v: float, alpha: float) -> float:
    return math.log(v) if alpha == 1 else v ** (1 - alpha) / (1 - alpha)


def _interior_pair(v: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[int, int]:
    inside = np.flatnonzero((v > lo + 1.0) & (v < hi - 1.0))
    return int(inside[0]), int(inside[-1])


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0, 2.0, 3.7])
def test_certified_optimum_passes(alpha: float) -> None:
    p = _problem(alpha, segments=True)
    alloc = solve(p, method="fast")
    cert = certify(p, alloc.vouchers, alloc.shadow_price, alloc.segment_prices)
    assert cert.certified, cert.failures
    assert cert.failures == ()
    assert abs(cert.duality_gap_rel) <= 1e-9
    assert cert.stationarity_max <= 1e-9
    assert cert.floor_wrong_sign == cert.cap_wrong_sign == 0
    assert cert.n_floor + cert.n_interior + cert.n_cap == p.n
    assert cert.budget_violation <= 1e-6


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0, 5.0])
def test_moving_money_between_interior_users_breaks_stationarity(alpha: float) -> None:
    p = _problem(alpha)
    sol = fast_solution(p)
    v = sol.vouchers.copy()
    i, j = _interior_pair(v, p.lower, p.upper)
    v[i] += 0.5
    v[j] -= 0.5  # still feasible: same total, inside the bounds
    cert = certify(p, v, sol.shadow_price, sol.segment_prices)
    assert not cert.certified
    assert cert.budget_violation <= 1e-6 and cert.bound_violation == 0.0
    # the residual is the relative marginal-utility error of the worse of the two users
    lam = sol.shadow_price
    expected = max(abs(p.weights[k] * v[k] ** -alpha / lam - 1.0) for k in (i, j))
    assert cert.stationarity_max == pytest.approx(expected, rel=1e-9)
    assert any("stationarity" in f for f in cert.failures)
    # weak duality at the optimal multipliers: D(lambda*) = P*, so the gap is P* - P(v)
    optimum = math.fsum(p.weights[k] * _u(sol.vouchers[k], alpha) for k in range(p.n))
    moved = math.fsum(p.weights[k] * _u(v[k], alpha) for k in range(p.n))
    assert cert.duality_gap == pytest.approx(optimum - moved, rel=1e-6)
    assert cert.duality_gap > 0


def test_wrong_sign_floor_user_is_detected() -> None:
    p = _problem(2.0)
    p = replace(p, budget=0.01 * p.upper.sum())
    sol = fast_solution(p)
    v, lam = sol.vouchers, sol.shadow_price
    floor_users = np.flatnonzero(v == p.lower)
    assert floor_users.size > 0
    k = int(floor_users[0])
    # make user k worth 3x the price at the floor: it now should get more than the floor
    w = p.weights.copy()
    w[k] = 3.0 * lam * p.lower[k] ** 2.0
    cert = certify(replace(p, weights=w), v, lam, sol.segment_prices)
    assert not cert.certified
    assert cert.floor_wrong_sign == 1
    assert cert.floor_wrong_sign_max == pytest.approx(2.0, rel=1e-9)
    assert cert.cap_wrong_sign == 0


def test_wrong_sign_cap_user_is_detected() -> None:
    p = _problem(1.0)
    sol = fast_solution(p)
    v, lam = sol.vouchers, sol.shadow_price
    capped = np.flatnonzero(v == p.upper)
    assert capped.size > 0
    k = int(capped[0])
    w = p.weights.copy()
    w[k] = 0.25 * lam * p.upper[k]  # marginal utility at the cap: a quarter of the price
    cert = certify(replace(p, weights=w), v, lam, sol.segment_prices)
    assert not cert.certified
    assert cert.cap_wrong_sign == 1
    assert cert.cap_wrong_sign_max == pytest.approx(0.75, rel=1e-9)


@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.5, 1.0, 2.0, 4.5])
def test_objective_recomputation_matches(alpha: float) -> None:
    p = _problem(alpha, n=300, seed=3)
    v = fast_solution(p).vouchers
    expected = math.fsum(
        p.weights[k] * _u(v[k], alpha) if alpha else p.weights[k] * v[k] for k in range(p.n)
    )
    assert objective_value(p, v) == pytest.approx(expected, rel=1e-12)
    assert utility(np.array([2.0]), alpha)[0] == pytest.approx(_u(2.0, alpha) if alpha else 2.0)


def test_feasibility_violations_are_reported() -> None:
    p = _problem(1.0)
    sol = fast_solution(p)
    v = sol.vouchers.copy()
    v[0] = p.lower[0] - 1.0  # below its floor and 1 USD short of the budget
    cert = certify(p, v, sol.shadow_price, sol.segment_prices)
    assert not cert.certified
    assert cert.bound_violation == pytest.approx(1.0)
    assert cert.budget_violation == pytest.approx(1.0 + sol.vouchers[0] - p.lower[0], rel=1e-6)


def test_segment_multipliers_enter_the_effective_price() -> None:
    p = _problem(1.0, segments=True)
    sol = fast_solution(p)
    mu_min, mu_max = sol.segment_prices["small"]
    assert mu_min > 0  # the min share binds in this instance
    prices = effective_prices(p, sol.shadow_price, sol.segment_prices)
    members = p.segments[0].members
    assert np.allclose(prices[members], sol.shadow_price - mu_min)
    assert np.allclose(prices[~members], sol.shadow_price)
    # dropping the segment multiplier breaks the certificate
    cert = certify(p, sol.vouchers, sol.shadow_price, {"small": (0.0, 0.0)})
    assert not cert.certified


def _round_cents(v: np.ndarray, lo: np.ndarray, hi: np.ndarray, budget: float) -> np.ndarray:
    """Largest remainder rounding to cents within the bounds, keeping the total (a small
    independent version for this test)."""
    lo_c, hi_c = np.ceil(lo * 100.0 - 1e-6), np.floor(hi * 100.0 + 1e-6)
    cents = np.clip(np.floor(v * 100.0), lo_c, hi_c)
    short = int(round(budget * 100.0 - cents.sum()))
    room = cents < hi_c
    order = np.argsort(-np.where(room, v * 100.0 - cents, -np.inf), kind="stable")
    cents[order[:short]] += 1
    return cents.astype(np.int64)


def test_rounded_vouchers_certify_within_a_cent() -> None:
    p = _problem(2.0, segments=True)
    p = replace(p, budget=round(p.budget, 2))
    sol = fast_solution(p)
    cents = _round_cents(sol.vouchers, p.lower, p.upper, p.budget)
    assert int(cents.sum()) == round(p.budget * 100)
    cert = certify(p, cents / 100.0, sol.shadow_price, sol.segment_prices, rounded=True)
    assert cert.certified, cert.failures
    assert cert.best_response_max_usd <= 0.01 + 1e-6
    assert cert.objective == pytest.approx(objective_value(p, cents / 100.0))
    # two cents moved from one interior user to another is more than rounding can explain
    i, j = _interior_pair(sol.vouchers, p.lower, p.upper)
    cents[i] += 2
    cents[j] -= 2
    bad = certify(p, cents / 100.0, sol.shadow_price, sol.segment_prices, rounded=True)
    assert not bad.certified
    assert any("best response" in f for f in bad.failures)


def test_to_dict_is_strict_json() -> None:
    p = _problem(1.0, segments=True)
    sol = fast_solution(p)
    v = sol.vouchers.copy()
    v[0] = np.inf
    for cert in (
        certify(p, sol.vouchers, sol.shadow_price, sol.segment_prices),
        certify(p, v, 1.0),
    ):
        text = json.dumps(cert.to_dict(), allow_nan=False, sort_keys=True)
        back = json.loads(text)
        assert back["certified"] is cert.certified
        assert set(back) >= {"duality_gap", "stationarity_max", "segment_prices", "failures"}


def test_linear_ties_survive_the_last_bit_of_a_segment_price() -> None:
    # alpha = 0: the price of a linear problem is the weight of its fractional users. User 0's
    # price is lambda + mu = 0.2 + 0.1, which is 0.30000000000000004 in floats while its weight
    # is 0.3: an exact comparison would send it to its floor, 5 USD away, and refuse the run.
    members = np.array([True, False])
    problem = AllocationProblem(
        weights=np.array([0.3, 0.2]),
        lower=np.zeros(2),
        upper=np.full(2, 10.0),
        budget=10.0,
        alpha=0.0,
        segments=(Segment("s", members, max_share=0.5),),
    )
    v = np.array([5.0, 5.0])
    for rounded in (False, True):
        cert = certify(problem, v, 0.2, {"s": (0.0, 0.1)}, rounded=rounded)
        assert cert.certified, cert.failures
    # a real gap between weight and price is still no tie
    far = certify(problem, v, 0.2, {"s": (0.0, 0.2)}, rounded=True)
    assert not far.certified and "from its best response" in " ".join(far.failures)


@pytest.mark.parametrize("budget", [1e8, 8e12, 1e13])
def test_a_slack_budget_far_above_the_caps_certifies_everyone_at_the_cap(budget: float) -> None:
    # With B = 1e13 and caps of 6,000, a bound tolerance scaled by B / n (8e9 USD per user) would
    # call every user "at the floor" and find them all wanting more at the price of zero.
    n = 1247
    rng = np.random.default_rng(7)
    problem = AllocationProblem(
        weights=rng.lognormal(6.0, 1.5, n),
        lower=np.full(n, 4.0),
        upper=np.full(n, 6000.0),
        budget=budget,
        alpha=1.0,
        exhaust=False,
    )
    alloc = solve(problem, method="fast")
    assert alloc.certificate.certified, alloc.certificate.failures
    assert alloc.shadow_price == 0.0 and np.all(alloc.vouchers == 6000.0)
    assert alloc.certificate.n_cap == n and alloc.certificate.n_floor == 0


@pytest.mark.parametrize("alpha", [50.0, 100.0])
def test_the_largest_allowed_alpha_certifies(alpha: float) -> None:
    # The marginal ratio is (v*/v)^alpha: float error in v alone moves it by ~alpha * 1e-16 per
    # operation, so stationarity is judged on the voucher (ratio tolerance tol * alpha).
    rng = np.random.default_rng(3)
    n = 2000
    loss = 50.0 + rng.lognormal(6.5, 1.7, n)
    problem = AllocationProblem(
        weights=loss,
        lower=np.full(n, 4.0),
        upper=np.minimum(6000.0, 0.5 * loss),
        budget=0.3 * float(np.minimum(6000.0, 0.5 * loss).sum()),
        alpha=alpha,
    )
    alloc = solve(problem, method="fast")
    assert alloc.certificate.certified, alloc.certificate.failures
    # and the test is not vacuous: a voucher off by 1e-5 (relative) is refused
    v = alloc.vouchers.copy()
    inside = np.flatnonzero(alloc.bound_state == 0)
    assert inside.size
    v[inside[0]] *= 1 + 1e-5
    v[inside[1]] -= v[inside[0]] - alloc.vouchers[inside[0]]
    bad = certify(problem, v, alloc.shadow_price, alloc.segment_prices)
    assert not bad.certified and "stationarity" in " ".join(bad.failures)


@settings(max_examples=60, deadline=None)
@given(
    alpha=st.sampled_from([0.5, 1.0, 1.5, 2.0, 3.7]),
    moved=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**16),
)
def test_best_response_and_gap_are_recomputed_from_first_principles(
    alpha: float, moved: float, seed: int
) -> None:
    # Any share of the users pushed off the optimum, by cents or by dollars, some past their
    # bounds' side: the certificate's best response and duality gap must equal the textbook
    # formulas computed user by user (it switches between a gather and a dense closed form
    # with the number of users far from their best response, and uses a series near it).
    rng = np.random.default_rng(seed)
    p = _problem(alpha, n=300, seed=seed % 7)
    # some users capped far below what their weight asks for: their marginal ratio is far
    # above 1, where no series around the optimum holds
    tight = rng.random(p.n) < 0.05
    p = replace(p, upper=np.where(tight, 5.0, p.upper))
    p = replace(p, budget=min(p.budget, 0.9 * float(p.upper.sum())))
    sol = fast_solution(p)
    v = sol.vouchers.copy()
    pick = rng.random(p.n) < moved
    v[pick] *= np.exp(rng.normal(0.0, 0.5, int(pick.sum())))
    v = np.clip(v, p.lower, p.upper)
    cert = certify(p, v, sol.shadow_price, sol.segment_prices)
    lam = sol.shadow_price
    best = np.clip((p.weights / lam) ** (1.0 / alpha), p.lower, p.upper)
    assert cert.best_response_max_usd == pytest.approx(np.abs(v - best).max(), rel=1e-9, abs=1e-9)
    terms = [
        w * (_u(b, alpha) - _u(x, alpha)) - lam * (b - x) for w, b, x in zip(p.weights, best, v)
    ]
    gap = math.fsum(terms) + lam * (p.budget - math.fsum(v))
    assert cert.duality_gap == pytest.approx(gap, rel=1e-6, abs=1e-9 * abs(lam) * p.budget)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    alpha=st.sampled_from([0.0, 0.5, 1.0, 2.0, 3.7]),
    block=st.sampled_from([7, 64, 1 << 16]),
    price=st.sampled_from([0.0, 1e-3, 0.02, 1.0]),
)
def test_sign_conditions_and_stationarity_are_their_definitions(
    seed: int, alpha: float, block: int, price: float
) -> None:
    """The certificate's counts and maxima (found by arithmetic when every ratio is a number,
    block by block) against the definitions evaluated user by user with NumPy selections."""
    rng = np.random.default_rng(seed)
    n = 300
    w = rng.uniform(0.5, 2.0, n)
    lo = rng.uniform(1.0, 5.0, n)
    hi = lo + rng.uniform(0.0, 50.0, n)
    hi[::11] = lo[::11]  # no freedom: neither sign condition applies
    v = lo + rng.uniform(0.0, 1.0, n) * (hi - lo)
    side = rng.integers(0, 3, n)
    v = np.where(side == 0, lo, np.where(side == 1, hi, v))
    p = AllocationProblem(w, lo, hi, float(v.sum()), alpha, True, ())
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("allocator.kernel.certificate_terms.BLOCK", block)
        cert = certify(p, v, price)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        ratio = np.where(price > 0.0, w * v**-alpha / price, np.inf)
    dev = ratio - 1.0
    btol, rtol = cert.bound_tol_usd, cert.tol * max(1.0, alpha)
    at_floor = v <= lo + btol
    at_cap = (v >= hi - btol) & ~at_floor
    interior = ~(at_floor | at_cap)
    free = lo != hi
    assert (cert.n_floor, cert.n_cap) == (int(at_floor.sum()), int(at_cap.sum()))
    # the ratio is formed here as w v^-alpha / price, there by each alpha's own formula: the
    # same to the last bits or two
    same = {"rel": 1e-12, "abs": 1e-300}
    assert cert.stationarity_max == pytest.approx(
        float(np.abs(dev[interior]).max(initial=0.0)), **same
    )
    for count, largest, on_side, excess in (
        (cert.floor_wrong_sign, cert.floor_wrong_sign_max, at_floor & free, dev),
        (cert.cap_wrong_sign, cert.cap_wrong_sign_max, at_cap & free, -dev),
    ):
        wrong = on_side & (excess > rtol)
        assert count == int(wrong.sum())
        expected = max(float(excess[on_side].max()), 0.0) if wrong.any() else 0.0
        assert largest == pytest.approx(expected, **same)
