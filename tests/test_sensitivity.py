"""Sensitivities checked against finite differences of re-solves, and cliffs recounted by hand."""

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
from allocator.certificate import objective_value
from allocator.cli import app
from allocator.config import EligibilityRules
from allocator.problem import AllocationProblem, Segment
from allocator.sensitivity import (
    budget_derivatives,
    budget_sensitivity,
    cliff_analysis,
    weight_sensitivity,
)
from allocator.solvers import bound_states, solve
from allocator.synthetic import generate

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
    return all(
        np.array_equal(base, bound_states(_v(o), o.lower, o.upper)) for o in others
    )


# ----------------------------------------------------------------------------------------------
# budget
# ----------------------------------------------------------------------------------------------


@given(problems())
def test_budget_derivative_matches_central_differences(problem: AllocationProblem) -> None:
    alloc = solve(problem, method="fast")
    h = 1e-4 * problem.budget
    up, down = replace(problem, budget=problem.budget + h), replace(problem, budget=problem.budget - h)
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
    up, down = replace(problem, budget=problem.budget + h), replace(problem, budget=problem.budget - h)
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
    up, down = replace(problem, budget=problem.budget + h), replace(problem, budget=problem.budget - h)
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
    up, down = replace(problem, budget=problem.budget + h), replace(problem, budget=problem.budget - h)
    assume(_same_states(problem, up, down))
    sens = budget_sensitivity(problem, alloc, delta_usd=h)
    fd_obj = (objective_value(up, _v(up)) - objective_value(down, _v(down))) / (2 * h)
    assert math.isclose(sens.value_of_budget, fd_obj, rel_tol=1e-4, abs_tol=1e-12)


def test_exact_change_recomputed() -> None:
    rng = np.random.default_rng(3)
    n = 500
    loss = np.exp(rng.normal(7, 2, n))
    problem = AllocationProblem(
        weights=loss, lower=np.full(n, 4.0), upper=np.minimum(6000, 0.5 * loss + 4),
        budget=200_000.0, alpha=1.0,
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
    assert math.isclose(sum(b["total_change_usd"] for b in up.by_band.values()), delta, rel_tol=1e-9)
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
def test_weight_derivative_matches_central_differences(problem: AllocationProblem, seed: int) -> None:
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


def test_metric_derivatives_are_central_differences() -> None:
    rng = np.random.default_rng(5)
    n = 400
    loss = np.exp(rng.normal(7, 2, n))
    vip = rng.integers(0, 5, n).astype(float)
    problem = AllocationProblem(
        weights=loss, lower=np.full(n, 4.0), upper=np.minimum(6000, loss),
        budget=300_000.0, alpha=2.0,
    )
    alloc = solve(problem, method="fast")
    step = 1e-3
    sens = weight_sensitivity(problem, alloc, {"vip": vip}, loss=loss, step=step)
    from allocator.metrics import gini, top_share

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
        weights=np.ones(n), lower=np.full(n, 1.0), upper=np.full(n, 10.0), budget=50.0, alpha=1.0,
        segments=(Segment("a", np.ones(n, bool), 0.1), Segment("b", np.arange(n) < 6, None, 0.9)),
    )
    alloc = solve(problem, method="cvxpy")
    from allocator.solvers import InvalidProblemError

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
    reason = np.where(loss < 50, N.REASON_BELOW_MIN_LOSS,
                      np.where(ratio < 0.3, N.REASON_BELOW_LOSS_RATIO, "")).tolist()
    reason = pl.Series(N.REASON, reason, dtype=pl.String).replace("", None)
    excluded = pl.DataFrame({N.USER_ID: np.arange(m), N.REASON: reason, N.LOSS_USD: loss,
                             N.LOSS_RATIO: ratio}).filter(pl.col(N.REASON).is_not_null())
    eligible = pl.DataFrame({N.USER_ID: np.arange(m), N.LOSS_USD: loss, N.LOSS_RATIO: ratio,
                             N.REASON: reason}).filter(pl.col(N.REASON).is_null())
    allocations = eligible.with_columns(
        (pl.col(N.LOSS_USD) * 10).round(0).cast(pl.Int64).alias(N.VOUCHER_CENTS)
    )
    cliff = cliff_analysis(excluded, allocations, EligibilityRules())
    near = excluded.filter((pl.col(N.REASON) == N.REASON_BELOW_MIN_LOSS) & (pl.col(N.LOSS_USD) >= 40))
    assert cliff.below_loss_users == near.height
    assert math.isclose(cliff.below_loss_total_usd, float(near[N.LOSS_USD].sum()))
    assert cliff.below_loss_only_users == near.filter(pl.col(N.LOSS_RATIO) >= 0.3).height
    near_r = excluded.filter((pl.col(N.REASON) == N.REASON_BELOW_LOSS_RATIO) & (pl.col(N.LOSS_RATIO) >= 0.25))
    assert cliff.below_ratio_users == near_r.height
    above = allocations.filter(pl.col(N.LOSS_USD) < 60)
    assert cliff.eligible_above_loss_users == above.height
    assert cliff.voucher_above_loss_usd == pytest.approx(float(above[N.VOUCHER_CENTS].median()) / 100)
    hist = cliff.loss_hist
    # the bins below the threshold hold only excluded users, those above only eligible ones
    half = len(hist["eligible"]) // 2
    assert sum(hist["eligible"][:half]) == 0 and sum(hist["excluded"][half:]) == 0
    assert sum(hist["excluded"][:half]) == cliff.below_loss_users
    json.dumps(cliff.to_dict(), allow_nan=False)


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


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("sens")
    generate(base / "data", users=3000, seed=21)
    scen = base / "small.toml"
    scen.write_text(SCENARIO)
    out = base / "run"
    result = runner.invoke(
        app, ["allocate", "--scenario", str(scen), "--data", str(base / "data"), "--out", str(out), "-q"]
    )
    assert result.exit_code == 0, result.output
    return out


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
        & (pl.col(N.LOSS_USD) >= 40) & (pl.col(N.LOSS_USD) < 50)
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
