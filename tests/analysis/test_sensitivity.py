"""Sensitivities checked against finite differences of re-solves, cliffs and phase-in bands
recounted by hand, and the per-user file checked against fresh allocations at B +/- delta."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from typer.testing import CliRunner

import allocator.cli.cmd_sensitivity  # noqa: F401  (registers the command)
from allocator import names as N
from allocator.analysis.metrics import gini, top_share
from allocator.analysis.sensitivity import (
    MAX_TOP_MOVERS,
    MOVES_COLUMNS,
    band_price,
    budget_derivatives,
    budget_sensitivity,
    cliff_analysis,
    run_sensitivity,
    ties_at_margin,
    weight_sensitivity,
)
from allocator.cli import app
from allocator.data.synthetic import generate
from allocator.errors import InputError
from allocator.kernel.allocation import bound_states
from allocator.kernel.certificate import objective_value
from allocator.kernel.feasibility import InvalidProblemError
from allocator.kernel.problem import AllocationProblem, Segment
from allocator.kernel.solve import solve
from allocator.settings.models import EligibilityRules

# ----------------------------------------------------------------------------------------------
# random problems
# ----------------------------------------------------------------------------------------------


@st.composite
def problems(draw: st.DrawFn, *, alpha: float | None = None) -> AllocationProblem:
    n = draw(st.integers(4, 40))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    loss = np.exp(rng.normal(6.0, 1.5, n))
    w = loss ** draw(st.sampled_from([0.5, 1.0])) * np.exp(rng.normal(0, 0.3, n))
    a = alpha if alpha is not None else draw(st.sampled_from([0.5, 1.0, 1.7, 3.0]))
    floor = draw(st.sampled_from([0.0, 4.0])) if a < 1 else 4.0
    upper = np.minimum(6000.0, floor + 0.8 * loss)
    lower = np.full(n, floor)
    fill = draw(st.floats(0.1, 0.9))
    budget = float(lower.sum() + fill * (upper.sum() - lower.sum()))
    segments: tuple[Segment, ...] = ()
    if draw(st.booleans()):
        members = loss < np.median(loss)
        seg_hi = float(upper[members].sum())
        share = draw(st.floats(0.3, 0.95)) * seg_hi / budget
        if float(lower[members].sum()) < share * budget and share <= 1:
            segments = (Segment("small", members, min_share=share),)
    return AllocationProblem(
        weights=w, lower=lower, upper=upper, budget=budget, alpha=a, segments=segments
    )


def _v(problem: AllocationProblem) -> np.ndarray:
    return solve(problem, method="fast").vouchers


def _same_states(problem: AllocationProblem, *others: AllocationProblem) -> bool:
    base = bound_states(_v(problem), problem.lower, problem.upper)
    return all(np.array_equal(base, bound_states(_v(o), o.lower, o.upper)) for o in others)


# ----------------------------------------------------------------------------------------------
# budget
# ----------------------------------------------------------------------------------------------


@given(problems())
def test_budget_derivative_matches_central_differences(problem: AllocationProblem) -> None:
    alloc = solve(problem, method="fast")
    h = 1e-4 * problem.budget
    up, down = (
        replace(problem, budget=problem.budget + h),
        replace(problem, budget=problem.budget - h),
    )
    assume(_same_states(problem, up, down))
    dv, _, _, degenerate = budget_derivatives(problem, alloc)
    assume(not degenerate)
    fd = (_v(up) - _v(down)) / (2 * h)
    np.testing.assert_allclose(dv, fd, atol=1e-6)
    # exhaust mode: every extra dollar is paid; users at bounds do not move
    assert math.isclose(float(dv.sum()), 1.0, rel_tol=0, abs_tol=1e-9)
    assert np.all(dv[alloc.bound_state != 0] == 0)
    assert np.all(dv >= 0)


@given(problems(alpha=0.0))
def test_budget_derivative_linear_utility(problem: AllocationProblem) -> None:
    alloc = solve(problem, method="fast")
    h = 1e-4 * problem.budget
    up, down = (
        replace(problem, budget=problem.budget + h),
        replace(problem, budget=problem.budget - h),
    )
    assume(_same_states(problem, up, down))
    sens = budget_sensitivity(problem, alloc, delta_usd=h)
    assume(not sens.degenerate)
    fd = (_v(up) - _v(down)) / (2 * h)
    np.testing.assert_allclose(sens.dv_dbudget, fd, atol=1e-6)
    assert sens.dprice_dbudget == 0.0
    # only the fractional (interior) users move
    assert set(np.flatnonzero(sens.dv_dbudget)) <= set(np.flatnonzero(alloc.bound_state == 0))


@given(problems())
def test_price_derivative_and_value_of_budget(problem: AllocationProblem) -> None:
    assume(not problem.segments)
    alloc = solve(problem, method="fast")
    h = 1e-4 * problem.budget
    up, down = (
        replace(problem, budget=problem.budget + h),
        replace(problem, budget=problem.budget - h),
    )
    assume(_same_states(problem, up, down))
    a_up, a_down = solve(up, method="fast"), solve(down, method="fast")
    sens = budget_sensitivity(problem, alloc, delta_usd=h)
    assume(not sens.degenerate)
    fd_price = (a_up.shadow_price - a_down.shadow_price) / (2 * h)
    assert math.isclose(sens.dprice_dbudget, fd_price, rel_tol=1e-3, abs_tol=1e-12)
    fd_obj = (objective_value(up, a_up.vouchers) - objective_value(down, a_down.vouchers)) / (2 * h)
    assert math.isclose(sens.value_of_budget, fd_obj, rel_tol=1e-4, abs_tol=1e-12)


@given(problems())
def test_value_of_budget_with_segments(problem: AllocationProblem) -> None:
    assume(problem.segments)
    alloc = solve(problem, method="fast")
    h = 1e-4 * problem.budget
    up, down = (
        replace(problem, budget=problem.budget + h),
        replace(problem, budget=problem.budget - h),
    )
    assume(_same_states(problem, up, down))
    sens = budget_sensitivity(problem, alloc, delta_usd=h)
    fd_obj = (objective_value(up, _v(up)) - objective_value(down, _v(down))) / (2 * h)
    assert math.isclose(sens.value_of_budget, fd_obj, rel_tol=1e-4, abs_tol=1e-12)


def test_exact_change_recomputed() -> None:
    rng = np.random.default_rng(3)
    n = 500
    loss = np.exp(rng.normal(7, 2, n))
    problem = AllocationProblem(
        weights=loss,
        lower=np.full(n, 4.0),
        upper=np.minimum(6000, 0.5 * loss + 4),
        budget=200_000.0,
        alpha=1.0,
    )
    alloc = solve(problem, method="fast")
    delta = 20_000.0
    sens = budget_sensitivity(problem, alloc, delta_usd=delta, loss=loss)
    v0 = alloc.vouchers
    v1 = solve(replace(problem, budget=problem.budget + delta), method="fast").vouchers
    diff = v1 - v0
    up = sens.up
    assert up.feasible
    assert up.n_moved == int((np.abs(diff) > 0.01).sum())
    assert math.isclose(up.total_change_usd, delta, rel_tol=1e-9)
    assert math.isclose(up.max_increase_usd, float(diff.max()), rel_tol=1e-12)
    s0 = bound_states(v0, problem.lower, problem.upper)
    s1 = bound_states(v1, problem.lower, problem.upper)
    assert up.newly_at_cap == int(((s1 == 1) & (s0 != 1)).sum())
    assert up.newly_at_cap > 0  # a 10% larger budget pushes someone to the cap
    assert sum(b["n_moved"] for b in up.by_band.values()) == up.n_moved
    assert math.isclose(
        sum(b["total_change_usd"] for b in up.by_band.values()), delta, rel_tol=1e-9
    )
    # the linear prediction is exact until the active set changes, so it errs by less than delta
    assert 0 < up.max_prediction_error_usd < delta
    assert sens.down.feasible and math.isclose(sens.down.total_change_usd, -delta, rel_tol=1e-9)
    # a budget cut below the floors is reported, not raised
    big = budget_sensitivity(problem, alloc, delta_usd=problem.budget - 100.0)
    assert not big.down.feasible and big.down.message
    json.dumps(sens.to_dict(per_user=True), allow_nan=False)


# ----------------------------------------------------------------------------------------------
# weights and alpha
# ----------------------------------------------------------------------------------------------


@given(problems(), st.integers(0, 1000))
def test_weight_derivative_matches_central_differences(
    problem: AllocationProblem, seed: int
) -> None:
    alloc = solve(problem, method="fast")
    x = np.random.default_rng(seed).normal(size=problem.n)
    h = 1e-5
    logw = np.log(problem.weights)
    up = replace(problem, weights=np.exp(logw + h * x))
    down = replace(problem, weights=np.exp(logw - h * x))
    assume(_same_states(problem, up, down))
    sens = weight_sensitivity(problem, alloc, {"x": x})
    fd = (_v(up) - _v(down)) / (2 * h)
    dv = sens.get("x").dv
    scale = max(1.0, float(np.abs(fd).max()))
    np.testing.assert_allclose(dv, fd, atol=1e-4 * scale)
    # the budget is held: the changes add up to nothing
    assert abs(float(dv.sum())) <= 1e-9 * scale * problem.n
    assert np.all(dv[alloc.bound_state != 0] == 0)


@given(problems())
def test_alpha_derivative_matches_central_differences(problem: AllocationProblem) -> None:
    alloc = solve(problem, method="fast")
    h = 1e-5
    omega = np.log(problem.upper)  # any per-user log-weight slope, as in coverage form
    logw = np.log(problem.weights)
    up = replace(problem, alpha=problem.alpha + h, weights=np.exp(logw + h * omega))
    down = replace(problem, alpha=problem.alpha - h, weights=np.exp(logw - h * omega))
    assume(_same_states(problem, up, down))
    sens = weight_sensitivity(problem, alloc, {}, alpha_log_weight=omega)
    fd = (_v(up) - _v(down)) / (2 * h)
    scale = max(1.0, float(np.abs(fd).max()))
    np.testing.assert_allclose(sens.get("alpha").dv, fd, atol=1e-4 * scale)


def _metric_values(v: np.ndarray, loss: np.ndarray) -> dict[str, float]:
    return {
        "gini": gini(v),
        "top_decile_share": top_share(v, 0.1),
        "median_coverage": float(np.median(v / loss)),
    }


def _linear(weights: list[float], budget: float) -> tuple[AllocationProblem, np.ndarray]:
    n = len(weights)
    upper = 10.0 * np.arange(1, n + 1)
    problem = AllocationProblem(
        weights=np.asarray(weights, dtype=np.float64),
        lower=np.ones(n),
        upper=upper,
        budget=budget,
        alpha=0.0,
    )
    return problem, 3.0 * upper  # the problem and each user's loss


def _forward(problem: AllocationProblem, omega: np.ndarray, h: float) -> np.ndarray:
    """Vouchers at alpha = h with the weights w e^(h omega), by the fast solver."""
    p = replace(problem, alpha=h, weights=problem.weights * np.exp(h * omega))
    return solve(p, method="fast").vouchers


def test_alpha_metrics_at_zero_match_forward_differences() -> None:
    """alpha = 0, one user at the margin: v(alpha) = v(0) for small alpha > 0, so every
    forward difference of the metrics is 0, as reported without re-solving."""
    problem, loss = _linear([1, 2, 4, 8, 16, 32], 100.0)
    omega = np.log(loss)
    alloc = solve(problem, method="fast")
    assert int((alloc.bound_state == 0).sum()) == 1  # one fractional user
    assert not ties_at_margin(problem, alloc)
    sens = weight_sensitivity(problem, alloc, {}, alpha_log_weight=omega, loss=loss)
    alpha = sens.get("alpha")
    assert alpha.metrics == {"gini": 0.0, "top_decile_share": 0.0, "median_coverage": 0.0}
    assert np.all(alpha.dv == 0)
    base = _metric_values(alloc.vouchers, loss)
    for h in (0.04, 0.02, 0.01):
        v = _forward(problem, omega, h)
        np.testing.assert_allclose(v, alloc.vouchers, rtol=1e-9, atol=1e-9)
        fd = {k: (m - base[k]) / h for k, m in _metric_values(v, loss).items()}
        for k, d in fd.items():
            assert abs(d) <= 1e-6, (k, h, d)


def test_alpha_metrics_at_zero_are_undefined_at_a_tie() -> None:
    """Two users tied at the marginal weight: alpha = 0 shares the rest by room, any alpha > 0
    by e^omega, so the metrics jump (forward differences grow like 1/h) and none is reported."""
    problem, loss = _linear([1, 2, 4, 4, 8, 16], 140.0)
    omega = np.log(loss) * np.array([1.0, 1.0, 1.0, -1.0, 1.0, 1.0])
    alloc = solve(problem, method="fast")
    assert int((alloc.bound_state == 0).sum()) == 2  # the two tied users share the rest
    assert ties_at_margin(problem, alloc)
    sens = weight_sensitivity(problem, alloc, {}, alpha_log_weight=omega, loss=loss)
    assert sens.get("alpha").metrics == {
        "gini": None,
        "top_decile_share": None,
        "median_coverage": None,
    }
    json.dumps(sens.to_dict(), allow_nan=False)
    base = _metric_values(alloc.vouchers, loss)
    v1, v2 = _forward(problem, omega, 0.02), _forward(problem, omega, 0.01)
    np.testing.assert_allclose(v1, v2, rtol=1e-9)  # constant on (0, alpha_0) ...
    assert np.abs(v1 - alloc.vouchers).max() > 1.0  # ... but not equal to v(0)
    g1 = (_metric_values(v1, loss)["gini"] - base["gini"]) / 0.02
    g2 = (_metric_values(v2, loss)["gini"] - base["gini"]) / 0.01
    assert math.isclose(g2, 2 * g1, rel_tol=1e-6) and abs(g1) > 1.0


def test_alpha_metrics_stay_with_the_fast_solver(monkeypatch: pytest.MonkeyPatch) -> None:
    """An alpha the fast solver reaches, alpha - step not: that side is alpha itself (a forward
    difference), never a conic solve of weights raised to a huge power."""
    problem, loss = _linear([1.0, 10.0, 100.0, 1000.0, 30.0, 300.0], 100.0)
    spread = math.log(1000.0)
    alpha = spread / 640.0  # reached; alpha - 1e-3 is not (spread / alpha > 650 there)
    problem = replace(problem, alpha=alpha)
    alloc = solve(problem, method="fast")

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the conic solver was called")

    monkeypatch.setattr("allocator.kernel.solve.FairnessModel", refuse)
    sens = weight_sensitivity(problem, alloc, {}, loss=loss)
    up = solve(replace(problem, alpha=alpha + 1e-3), method="fast").vouchers
    base = _metric_values(alloc.vouchers, loss)
    for k, m in _metric_values(up, loss).items():
        assert math.isclose(sens.get("alpha").metrics[k], (m - base[k]) / 1e-3, abs_tol=1e-9)


def test_metric_derivatives_are_central_differences() -> None:
    rng = np.random.default_rng(5)
    n = 400
    loss = np.exp(rng.normal(7, 2, n))
    vip = rng.integers(0, 5, n).astype(float)
    problem = AllocationProblem(
        weights=loss,
        lower=np.full(n, 4.0),
        upper=np.minimum(6000, loss),
        budget=300_000.0,
        alpha=2.0,
    )
    alloc = solve(problem, method="fast")
    step = 1e-3
    sens = weight_sensitivity(problem, alloc, {"vip": vip}, loss=loss, step=step)

    up = _v(replace(problem, weights=loss * np.exp(step * vip)))
    down = _v(replace(problem, weights=loss * np.exp(-step * vip)))
    m = sens.get("vip").metrics
    assert math.isclose(m["gini"], (gini(up) - gini(down)) / (2 * step), rel_tol=1e-9)
    assert math.isclose(
        m["top_decile_share"], (top_share(up) - top_share(down)) / (2 * step), rel_tol=1e-9
    )
    # more weight on VIP tiers moves money towards them
    dv = sens.get("vip").dv
    assert dv[vip == 4].sum() > 0 > dv[vip == 0].sum()
    json.dumps(sens.to_dict(), allow_nan=False)


def test_overlapping_segments_are_refused() -> None:
    n = 10
    problem = AllocationProblem(
        weights=np.ones(n),
        lower=np.full(n, 1.0),
        upper=np.full(n, 10.0),
        budget=50.0,
        alpha=1.0,
        segments=(Segment("a", np.ones(n, bool), 0.1), Segment("b", np.arange(n) < 6, None, 0.9)),
    )
    alloc = solve(problem, method="cvxpy")

    with pytest.raises(InvalidProblemError):
        budget_sensitivity(problem, alloc)


# ----------------------------------------------------------------------------------------------
# cliffs
# ----------------------------------------------------------------------------------------------


def test_cliff_analysis_counts() -> None:
    rng = np.random.default_rng(9)
    m = 2000
    loss = rng.uniform(0, 120, m)
    ratio = rng.uniform(0, 1, m)
    reason = np.where(
        loss < 50, N.REASON_BELOW_MIN_LOSS, np.where(ratio < 0.3, N.REASON_BELOW_LOSS_RATIO, "")
    ).tolist()
    reason = pl.Series(N.REASON, reason, dtype=pl.String).replace("", None)
    excluded = pl.DataFrame(
        {N.USER_ID: np.arange(m), N.REASON: reason, N.LOSS_USD: loss, N.LOSS_RATIO: ratio}
    ).filter(pl.col(N.REASON).is_not_null())
    eligible = pl.DataFrame(
        {N.USER_ID: np.arange(m), N.LOSS_USD: loss, N.LOSS_RATIO: ratio, N.REASON: reason}
    ).filter(pl.col(N.REASON).is_null())
    allocations = eligible.with_columns(
        (pl.col(N.LOSS_USD) * 10).round(0).cast(pl.Int64).alias(N.VOUCHER_CENTS)
    )
    cliff = cliff_analysis(excluded, allocations, EligibilityRules())
    near = excluded.filter(
        (pl.col(N.REASON) == N.REASON_BELOW_MIN_LOSS) & (pl.col(N.LOSS_USD) >= 40)
    )
    assert cliff.below_loss_users == near.height
    assert math.isclose(cliff.below_loss_total_usd, float(near[N.LOSS_USD].sum()))
    assert cliff.below_loss_only_users == near.filter(pl.col(N.LOSS_RATIO) >= 0.3).height
    near_r = excluded.filter(
        (pl.col(N.REASON) == N.REASON_BELOW_LOSS_RATIO) & (pl.col(N.LOSS_RATIO) >= 0.25)
    )
    assert cliff.below_ratio_users == near_r.height
    above = allocations.filter(pl.col(N.LOSS_USD) < 60)
    assert cliff.eligible_above_loss_users == above.height
    assert cliff.voucher_above_loss_usd == pytest.approx(
        float(above[N.VOUCHER_CENTS].median()) / 100
    )
    hist = cliff.loss_hist
    # the bins below the threshold hold only excluded users, those above only eligible ones
    half = len(hist["eligible"]) // 2
    assert sum(hist["eligible"][:half]) == 0 and sum(hist["excluded"][half:]) == 0
    assert sum(hist["excluded"][:half]) == cliff.below_loss_users
    json.dumps(cliff.to_dict(), allow_nan=False)


def _ramp(x: np.ndarray, low: float, high: float) -> np.ndarray:
    return np.where(x >= high, 1.0, np.clip((x - low) / (high - low), 0.0, 1.0))


def test_cliff_analysis_with_phase_in_bands() -> None:
    """With bands the cliffs move to their lower ends, and each band is recounted by hand."""
    rng = np.random.default_rng(11)
    m = 3000
    loss = rng.uniform(0, 120, m)
    ratio = rng.uniform(0, 1, m)
    loss[:5] = 25.0  # exactly at the lower end: excluded (the rule is loss > 25)
    rules = EligibilityRules(phase_in_loss_usd=25.0, phase_in_ratio=0.2)
    reason = np.where(
        loss <= 25, N.REASON_BELOW_MIN_LOSS, np.where(ratio <= 0.2, N.REASON_BELOW_LOSS_RATIO, "")
    ).tolist()
    frame = pl.DataFrame(
        {
            N.USER_ID: np.arange(m),
            N.LOSS_USD: loss,
            N.LOSS_RATIO: ratio,
            N.REASON: pl.Series(reason).replace("", None),
        }
    )
    excluded = frame.filter(pl.col(N.REASON).is_not_null())
    phi = _ramp(loss, 25, 50) * _ramp(ratio, 0.2, 0.3)
    allocations = (
        frame.filter(pl.col(N.REASON).is_null())
        .join(pl.DataFrame({N.USER_ID: np.arange(m), N.PHASE_FACTOR: phi}), on=N.USER_ID)
        .with_columns(
            (pl.col(N.LOSS_USD) * 10 * pl.col(N.PHASE_FACTOR))
            .round(0)
            .cast(pl.Int64)
            .alias(N.VOUCHER_CENTS)
        )
    )
    cliff = cliff_analysis(excluded, allocations, rules)
    assert (cliff.min_loss_usd, cliff.min_loss_ratio) == (25.0, 0.2)
    L, R, X = pl.col(N.LOSS_USD), pl.col(N.LOSS_RATIO), pl.col(N.REASON)
    below = excluded.filter((X == N.REASON_BELOW_MIN_LOSS) & (L >= 15) & (L <= 25))
    assert cliff.below_loss_users == below.height and below.filter(L == 25).height == 5
    assert cliff.below_loss_total_usd == pytest.approx(float(below[N.LOSS_USD].sum()))
    assert cliff.below_loss_only_users == below.filter(R > 0.2).height
    below_r = excluded.filter((X == N.REASON_BELOW_LOSS_RATIO) & (R >= 0.15) & (R <= 0.2))
    assert cliff.below_ratio_users == below_r.height
    above = allocations.filter((L > 25) & (L < 35))
    assert cliff.eligible_above_loss_users == above.height
    assert cliff.voucher_above_loss_usd == pytest.approx(
        float(above[N.VOUCHER_CENTS].median()) / 100
    )
    for band, col, low, high in (
        (cliff.loss_phase_in, L, 25, 50),
        (cliff.ratio_phase_in, R, 0.2, 0.3),
    ):
        inside = allocations.filter(col < high)
        assert band is not None and (band.lower, band.upper) == (low, high)
        assert band.users == inside.height > 0
        assert band.loss_usd == pytest.approx(float(inside[N.LOSS_USD].sum()))
        assert band.paid_usd == pytest.approx(int(inside[N.VOUCHER_CENTS].sum()) / 100)
        assert band.median_phase_factor == pytest.approx(float(inside[N.PHASE_FACTOR].median()))
        assert band.in_both_bands == inside.filter((L < 50) & (R < 0.3)).height
    # without bands nothing is reported about them, and the cliffs are the thresholds
    hard = cliff_analysis(excluded, allocations.drop(N.PHASE_FACTOR), EligibilityRules())
    assert hard.loss_phase_in is None and hard.min_loss_usd == 50.0
    json.dumps(cliff.to_dict(), allow_nan=False)
    assert any("loss phase-in band (25, 50) USD" in line for line in cliff.lines())


def test_band_price_by_hand() -> None:
    with_band = pl.DataFrame(
        {
            N.USER_ID: [1, 2, 3, 4],
            N.VOUCHER_CENTS: [500, 900, 300, 100],
            N.LOSS_USD: [100.0, 200.0, 40.0, 30.0],
        }
    )
    without = pl.DataFrame(
        {N.USER_ID: [1, 2], N.VOUCHER_CENTS: [600, 1200], N.LOSS_USD: [100.0, 200.0]}
    )
    price = band_price(with_band, without, budget_usd=18.0)
    assert (price.band_users, price.band_paid_usd, price.band_loss_usd) == (2, 4.0, 70.0)
    assert (price.others_paid_without_band_usd, price.others_paid_with_band_usd) == (18.0, 14.0)
    assert price.others_change_usd == -4.0 and price.others_down == 2 and price.others_up == 0
    assert price.others_median_coverage_without_band == pytest.approx(0.06)  # 6/100 and 12/200
    assert price.others_median_coverage_with_band == pytest.approx((0.05 + 0.045) / 2)
    assert price.others_max_decrease_usd == 3.0

    with pytest.raises(InputError, match="not eligible with the band"):
        band_price(without, with_band.filter(pl.col(N.USER_ID) > 1), budget_usd=18.0)


# ----------------------------------------------------------------------------------------------
# end to end through the CLI
# ----------------------------------------------------------------------------------------------

runner = CliRunner()
SCENARIO = """
# Baseline rules on a small data set, with the budget scaled to the number of users.
name = "small"
[objective]
alpha = 1.0
loss_exponent = 1.0
ratio_exponent = 0.5
[objective.features]
vip_tier = 0.1
[budget]
total_usd = 3000000
[[segments]]
name = "retail"
where = "loss_usd < 10000"
min_share = 0.4
"""


PHASE_IN = """
# The shipped phase-in bands (loss 25-50 USD, ratio 20-30%) on the baseline rules, small data.
name = "small-phase-in"
[eligibility]
phase_in_loss_usd = 25.0
phase_in_ratio = 0.2
[objective]
alpha = 1.0
loss_exponent = 1.0
ratio_exponent = 1.0
[budget]
total_usd = 3000000
"""


def _allocate(base: Path, data: Path, text: str, name: str) -> Path:
    scen = base / f"{name}.toml"
    scen.write_text(text)
    out = base / name
    result = runner.invoke(
        app, ["allocate", "--scenario", str(scen), "--data", str(data), "--out", str(out), "-q"]
    )
    assert result.exit_code == 0, result.output
    return out


def _with_budget(text: str, budget: float) -> str:
    assert "total_usd = 3000000\n" in text
    return text.replace("total_usd = 3000000\n", f"total_usd = {budget:.2f}\n")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sens-data") / "data"
    generate(out, users=3000, seed=21)
    return out


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, data: Path) -> Path:
    return _allocate(tmp_path_factory.mktemp("sens"), data, SCENARIO, "run")


@pytest.fixture(scope="module")
def phase_run(tmp_path_factory: pytest.TempPathFactory, data: Path) -> Path:
    return _allocate(tmp_path_factory.mktemp("sens-phase"), data, PHASE_IN, "phase")


def test_cli_sensitivity_json(run_dir: Path) -> None:
    delta = 100_000
    result = runner.invoke(app, ["sensitivity", str(run_dir), "--delta", str(delta), "--json"])
    assert result.exit_code == 0, result.output

    def reject(token: str) -> None:
        raise ValueError(token)

    report = json.loads(result.stdout, parse_constant=reject)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    alloc = pl.read_parquet(run_dir / N.ALLOCATIONS_FILE)
    excluded = pl.read_parquet(run_dir / N.EXCLUDED_FILE)
    budget = report["budget"]
    assert report["eligible"] == alloc.height
    assert budget["shadow_price"] == pytest.approx(manifest["shadow_price"], rel=1e-9)
    assert budget["sum_dv_dbudget"] == pytest.approx(1.0, abs=1e-9)
    assert budget["up"]["total_change_usd"] == pytest.approx(delta, rel=1e-9)
    assert budget["down"]["total_change_usd"] == pytest.approx(-delta, rel=1e-9)
    # the retail segment's floor binds here, so it receives exactly its share of the extra dollar
    assert "retail" in budget["segment_dprice_dbudget"]
    names = [p["name"] for p in report["weights"]["parameters"]]
    assert names == ["loss_exponent", "ratio_exponent", "features.vip_tier", "alpha"]
    cliff = report["cliff"]
    near = excluded.filter(
        (pl.col(N.REASON) == N.REASON_BELOW_MIN_LOSS)
        & (pl.col(N.LOSS_USD) >= 40)
        & (pl.col(N.LOSS_USD) < 50)
    )
    assert cliff["below_loss_users"] == near.height
    above = alloc.filter((pl.col(N.LOSS_USD) >= 50) & (pl.col(N.LOSS_USD) < 60))
    assert cliff["eligible_above_loss_users"] == above.height
    if above.height:
        assert cliff["voucher_above_loss_usd"] == pytest.approx(
            float(above[N.VOUCHER_CENTS].median()) / 100
        )


def test_cli_sensitivity_text_and_errors(run_dir: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["sensitivity", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert "shadow price" in result.stdout and "cliffs" in result.stdout
    bad = runner.invoke(app, ["sensitivity", str(tmp_path)])
    assert bad.exit_code == 2 and "manifest.json" in bad.output
    neg = runner.invoke(app, ["sensitivity", str(run_dir), "--delta", "-5"])
    assert neg.exit_code == 2
    assert "Example" in runner.invoke(app, ["sensitivity", "--help"]).stdout


def _strict(text: str):
    def reject(token: str) -> None:
        raise ValueError(token)

    return json.loads(text, parse_constant=reject)


@pytest.mark.parametrize("which", ["run_dir", "phase_run"])
def test_users_out_matches_fresh_allocations(
    which: str, request: pytest.FixtureRequest, data: Path, tmp_path: Path
) -> None:
    """Every row of --users-out is what `allocator allocate` pays at B, B + d and B - d."""
    run = request.getfixturevalue(which)
    text = SCENARIO if which == "run_dir" else PHASE_IN
    delta = 150_000.0
    out = tmp_path / "moves.parquet"
    result = runner.invoke(
        app, ["sensitivity", str(run), "--delta", str(delta), "--users-out", str(out), "--json"]
    )
    assert result.exit_code == 0, result.output
    report = _strict(result.stdout)  # stdout holds the JSON and nothing else
    assert report["users_out"] == str(out)
    moves = pl.read_parquet(out)
    assert tuple(moves.columns) == MOVES_COLUMNS
    now = pl.read_parquet(run / N.ALLOCATIONS_FILE)
    assert moves[N.USER_ID].to_list() == now[N.USER_ID].to_list()
    assert moves[N.VOUCHER_CENTS].to_list() == now[N.VOUCHER_CENTS].to_list()
    assert moves[N.BOUND].to_list() == now[N.BOUND].to_list()
    for side, sign in (("up", 1), ("down", -1)):
        fresh = pl.read_parquet(
            _allocate(tmp_path, data, _with_budget(text, 3_000_000 + sign * delta), side)
            / N.ALLOCATIONS_FILE
        )
        assert moves[f"voucher_{side}_cents"].to_list() == fresh[N.VOUCHER_CENTS].to_list()
        assert moves[f"bound_{side}"].to_list() == fresh[N.BOUND].to_list()
        change = fresh[N.VOUCHER_CENTS] - now[N.VOUCHER_CENTS]
        assert moves[f"change_{side}_cents"].to_list() == change.to_list()
        assert int(change.sum()) == sign * round(delta * 100)  # exhaust mode: every cent moves
    # the prediction is the derivative times delta, and the derivatives add up to one
    assert moves["dv_dbudget"].sum() == pytest.approx(1.0, abs=1e-9)
    np.testing.assert_allclose(
        moves["predicted_change_usd"], moves["dv_dbudget"] * delta, rtol=1e-12
    )
    # users at a bound in all three runs do not move, and are predicted not to
    stuck = moves.filter((pl.col(N.BOUND) == pl.col("bound_up")) & (pl.col(N.BOUND) != "interior"))
    assert (stuck["change_up_cents"] == 0).all() and (stuck["predicted_change_usd"] == 0).all()
    # the top movers are the largest changes of the file, ties by user id
    size = np.maximum(np.abs(moves["change_up_cents"]), np.abs(moves["change_down_cents"]))
    order = sorted(range(moves.height), key=lambda i: (-size[i], moves[N.USER_ID][i]))
    expected = [moves[N.USER_ID][i] for i in order[:10] if size[i] > 0]
    assert [r[N.USER_ID] for r in report["top_movers"]] == expected
    first = report["top_movers"][0]
    row = moves.filter(pl.col(N.USER_ID) == first[N.USER_ID]).row(0, named=True)
    assert first == pytest.approx(row)
    assert report["notes"] == []  # the re-solve pays what the run directory says


def test_users_out_is_atomic_and_byte_identical(run_dir: Path, tmp_path: Path) -> None:
    files = {}
    for name in ("a.parquet", "b.parquet", "a.csv"):
        path = tmp_path / "out" / name
        result = runner.invoke(app, ["sensitivity", str(run_dir), "--users-out", str(path)])
        assert result.exit_code == 0, result.output
        assert f"wrote {path}" in result.stderr and "largest movers" in result.stdout
        files[name] = path.read_bytes()
    assert files["a.parquet"] == files["b.parquet"]
    again = tmp_path / "out" / "a.csv"
    runner.invoke(app, ["sensitivity", str(run_dir), "--users-out", str(again)])
    assert again.read_bytes() == files["a.csv"]
    assert pl.read_csv(again).equals(pl.read_parquet(tmp_path / "out" / "a.parquet"))
    # nothing but the outputs is left in the folder (no temporary files)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "a.csv",
        "a.parquet",
        "b.parquet",
    ]
    bad = runner.invoke(app, ["sensitivity", str(run_dir), "--users-out", str(tmp_path / "m.xlsx")])
    assert bad.exit_code == 2 and ".parquet or .csv" in bad.output and "Traceback" not in bad.output
    assert not (tmp_path / "m.xlsx").exists()
    neg = runner.invoke(app, ["sensitivity", str(run_dir), "--top", "-1"])
    assert neg.exit_code == 2 and "--top" in neg.output


def test_cli_phase_in_cliffs_and_price(phase_run: Path, data: Path, tmp_path: Path) -> None:
    """The band and its price, recomputed from the run's parquet files and a hard-threshold run."""
    result = runner.invoke(app, ["sensitivity", str(phase_run), "--json"])
    assert result.exit_code == 0, result.output
    report = _strict(result.stdout)
    alloc = pl.read_parquet(phase_run / N.ALLOCATIONS_FILE)
    excluded = pl.read_parquet(phase_run / N.EXCLUDED_FILE)
    L, R, X = pl.col(N.LOSS_USD), pl.col(N.LOSS_RATIO), pl.col(N.REASON)
    cliff = report["cliff"]
    # the loss cliff is the band's lower end, 25 USD, not 50
    assert cliff["min_loss_usd"] == 25.0 and cliff["min_loss_ratio"] == 0.2
    below = excluded.filter((X == N.REASON_BELOW_MIN_LOSS) & (L >= 15) & (L <= 25))
    assert cliff["below_loss_users"] == below.height > 0
    assert cliff["below_loss_total_usd"] == pytest.approx(float(below[N.LOSS_USD].sum()), rel=1e-12)
    assert cliff["below_loss_only_users"] == below.filter(R > 0.2).height
    below_r = excluded.filter((X == N.REASON_BELOW_LOSS_RATIO) & (R >= 0.15) & (R <= 0.2))
    assert cliff["below_ratio_users"] == below_r.height > 0
    above = alloc.filter((L > 25) & (L < 35))
    assert cliff["eligible_above_loss_users"] == above.height > 0
    assert cliff["voucher_above_loss_usd"] == pytest.approx(
        float(above[N.VOUCHER_CENTS].median()) / 100
    )
    # nobody is excluded by min loss between 25 and 50 any more
    assert excluded.filter((X == N.REASON_BELOW_MIN_LOSS) & (L > 25)).height == 0
    for key, col, high in (("loss_phase_in", L, 50.0), ("ratio_phase_in", R, 0.3)):
        band = cliff[key]
        inside = alloc.filter(col < high)
        assert band["users"] == inside.height > 0
        assert band["loss_usd"] == pytest.approx(float(inside[N.LOSS_USD].sum()), rel=1e-12)
        assert band["paid_usd"] == pytest.approx(
            int(inside[N.VOUCHER_CENTS].sum()) / 100, rel=1e-12
        )
        assert band["median_phase_factor"] == pytest.approx(float(inside[N.PHASE_FACTOR].median()))
        assert (inside[N.PHASE_FACTOR] < 1).all()
    # the price: the same scenario with hard thresholds, allocated afresh at the same budget
    hard_text = PHASE_IN.replace("phase_in_loss_usd = 25.0\n", "").replace(
        "phase_in_ratio = 0.2\n", ""
    )
    hard = pl.read_parquet(_allocate(tmp_path, data, hard_text, "hard") / N.ALLOCATIONS_FILE)
    price = report["phase_in_price"]
    band_users = alloc.join(hard.select(N.USER_ID), on=N.USER_ID, how="anti")
    assert set(band_users[N.USER_ID]) == set(alloc.filter(pl.col(N.PHASE_FACTOR) < 1)[N.USER_ID])
    assert price["band_users"] == band_users.height
    assert price["band_paid_usd"] == int(band_users[N.VOUCHER_CENTS].sum()) / 100
    others = hard.select(N.USER_ID, N.LOSS_USD, pl.col(N.VOUCHER_CENTS).alias("hard")).join(
        alloc.select(N.USER_ID, N.VOUCHER_CENTS), on=N.USER_ID
    )
    assert price["others_users"] == others.height == hard.height
    assert price["others_paid_without_band_usd"] == int(others["hard"].sum()) / 100 == 3_000_000
    assert price["others_paid_with_band_usd"] == int(others[N.VOUCHER_CENTS].sum()) / 100
    # exhaust mode: what the band users receive is exactly what everyone else gives up
    assert price["others_change_usd"] == pytest.approx(-price["band_paid_usd"], abs=1e-6)
    cov = lambda c: float((others[c] / 100 / others[N.LOSS_USD]).median())  # noqa: E731
    assert price["others_median_coverage_without_band"] == pytest.approx(cov("hard"), rel=1e-12)
    assert price["others_median_coverage_with_band"] == pytest.approx(
        cov(N.VOUCHER_CENTS), rel=1e-12
    )
    change = others[N.VOUCHER_CENTS] - others["hard"]
    assert price["others_down"] == int((change < 0).sum()) and price["others_up"] == int(
        (change > 0).sum()
    )
    assert price["others_max_decrease_usd"] == -int(change.min()) / 100
    # and the text says so
    text = runner.invoke(app, ["sensitivity", str(phase_run)]).stdout
    assert "loss phase-in band (25, 50) USD" in text and "price of the phase-in band" in text
    assert "excluded by the loss band's lower end" in text


# ----------------------------------------------------------------------------------------------
# damaged or changed runs, outputs, bounds and warnings
# ----------------------------------------------------------------------------------------------

LINEAR = SCENARIO.replace("alpha = 1.0\n", "alpha = 0.0\n")


def _copy(run: Path, tmp_path: Path) -> Path:
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    return copy


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda r: (r / N.ALLOCATIONS_FILE).unlink(), "allocations.parquet: file not found"),
        (
            lambda r: (r / N.ALLOCATIONS_FILE).write_bytes(b"garbage"),
            "allocations.parquet: its sha256",
        ),
        (lambda r: (r / N.MANIFEST_FILE).write_bytes(b"\xff\xfe{}"), "not UTF-8"),
        (
            lambda r: (r / N.MANIFEST_FILE).write_bytes(b"[" * 100_000 + b"]" * 100_000),
            "nested too deeply",
        ),
    ],
)
def test_damaged_run_is_refused(run_dir: Path, tmp_path: Path, damage, expected: str) -> None:
    """A missing or garbage allocations.parquet used to be re-solved anyway, with exit 0."""
    copy = _copy(run_dir, tmp_path)
    damage(copy)
    result = runner.invoke(app, ["sensitivity", str(copy), "--json"])
    assert result.exit_code == 2 and result.stdout == ""
    assert "Traceback" not in result.output
    assert expected in result.output and f"allocator check-budget {copy}" in result.output


def test_regenerated_data_is_refused(tmp_path: Path) -> None:
    """The data directory regenerated after the run: the re-solve would be another run's."""
    data = tmp_path / "data"
    generate(data, users=600, seed=4)
    run = _allocate(tmp_path, data, _with_budget(SCENARIO, 600_000), "run")
    assert runner.invoke(app, ["sensitivity", str(run), "--json"]).exit_code == 0
    generate(data, users=700, seed=5)
    result = runner.invoke(app, ["sensitivity", str(run), "--json"])
    assert result.exit_code == 2 and result.stdout == ""
    assert "changed since the run" in result.output and str(data) in result.output

    with pytest.raises(InputError, match="changed since the run"):
        run_sensitivity(run)


def test_users_out_inside_a_run_directory_is_refused(run_dir: Path, tmp_path: Path) -> None:
    copy = _copy(run_dir, tmp_path)
    before = {p.name: p.read_bytes() for p in copy.iterdir()}
    for target in (copy / N.ALLOCATIONS_FILE, copy / "moves.parquet", copy / "sub" / "m.csv"):
        result = runner.invoke(app, ["sensitivity", str(copy), "--users-out", str(target)])
        assert result.exit_code == 2 and "Traceback" not in result.output
        assert f"inside the run directory {copy}" in result.output
    assert {p.name: p.read_bytes() for p in copy.iterdir()} == before


def test_top_is_bounded(run_dir: Path) -> None:
    for top in ("99999999999999999999", str(MAX_TOP_MOVERS + 1), "-1"):
        result = runner.invoke(app, ["sensitivity", str(run_dir), "--top", top])
        assert result.exit_code == 2 and "Traceback" not in result.output
        assert f"--top must be 0 to {MAX_TOP_MOVERS:,}" in result.output
    with pytest.raises(InputError, match="top must be"):
        run_sensitivity(run_dir, top=2**70)


def test_linear_run_prints_no_numpy_warnings(data: Path, tmp_path: Path) -> None:
    """alpha = 0: the alpha row is exact, with no re-solve at a tiny alpha; nothing is shown."""
    import subprocess
    import sys
    import warnings

    run = _allocate(tmp_path, data, LINEAR, "linear")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = run_sensitivity(run)
    assert [str(w.message) for w in caught] == []
    assert report.weights.get("alpha") is not None
    done = subprocess.run(
        [sys.executable, "-m", "allocator", "sensitivity", str(run), "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    _strict(done.stdout)
    assert "Warning" not in done.stderr and done.stderr == ""
