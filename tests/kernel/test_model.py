"""Structure of the cvxpy model: DPP, its variable and Parameters, re-solves, power forms, units."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from allocator.errors import InfeasibleError, NotCertifiedError, SolverFailedError
from allocator.kernel.fast import fast_solution
from allocator.kernel.feasibility import InvalidProblemError
from allocator.kernel.model import FairnessModel
from allocator.kernel.problem import AllocationProblem, ScalarBounds, Segment


def _problem(
    n: int = 400, alpha: float = 1.0, *, scalar: bool = True, segments: bool = True, seed: int = 1
) -> AllocationProblem:
    rng = np.random.default_rng(seed)
    loss = 50.0 + rng.lognormal(6.5, 1.6, n)
    sb = ScalarBounds(floor=4.0, cap=6000.0, coverage_cap=0.5, loss=loss)
    lower, upper = sb.arrays()
    segs: tuple[Segment, ...] = ()
    if segments:
        mid = (loss > np.quantile(loss, 0.3)) & (loss < np.quantile(loss, 0.6))
        top = loss >= np.quantile(loss, 0.9)
        segs = (Segment("mid", mid, min_share=0.2), Segment("top", top, max_share=0.35))
    return AllocationProblem(
        weights=loss,
        lower=lower,
        upper=upper,
        budget=0.3 * float(upper.sum()),
        alpha=alpha,
        segments=segs,
        scalar_bounds=sb if scalar else None,
    )


@pytest.mark.parametrize("alpha", [0.0, 0.37, 0.5, 1.0, 2.0, 5.0])
def test_model_is_dpp_with_one_variable(alpha: float) -> None:
    p = _problem(alpha=alpha)
    model = FairnessModel(p)
    assert model.is_dpp()
    assert model.variables == [model.x]
    assert model.x.shape == (p.n,)


def test_parameters_are_the_scalar_knobs_never_the_weights() -> None:
    p = _problem()
    model = FairnessModel(p)
    params = model.parameters
    assert set(params) == {
        "budget",
        "floor",
        "cap",
        "coverage_cap",
        "segment_min[mid]",
        "segment_max[top]",
    }
    assert all(par.size == 1 for par in params.values())  # nothing of length n (cvxpy issue 1622)
    assert params["budget"].value == pytest.approx(p.budget)
    assert params["segment_min[mid]"].value == pytest.approx(0.2 * p.budget)
    assert params["segment_max[top]"].value == pytest.approx(0.35 * p.budget)
    assert (params["floor"].value, params["cap"].value, params["coverage_cap"].value) == (
        4.0,
        6000.0,
        0.5,
    )
    # the weights enter the objective as a constant vector (divided by the objective scale C)
    expected = p.weights / model.objective_scale
    assert any(
        c.size == p.n and np.allclose(np.ravel(c.value), expected)
        for c in model.cvx_problem.objective.constants()
    )


def test_per_user_bounds_have_no_bound_parameters() -> None:
    model = FairnessModel(_problem(scalar=False, segments=False))
    assert set(model.parameters) == {"budget"}
    assert model.floor is None and model.cap is None and model.coverage_cap is None


def test_power_form_is_exact() -> None:
    # rational exponents with small denominators become exact SOCs, others use the power cone
    assert FairnessModel(_problem(alpha=2.0)).uses_soc
    assert FairnessModel(_problem(alpha=0.5)).uses_soc
    assert not FairnessModel(_problem(alpha=0.37)).uses_soc
    assert FairnessModel(_problem(alpha=0.37), solver="ECOS").uses_soc  # ECOS has no power cone
    assert not FairnessModel(_problem(alpha=1.0)).uses_soc  # the log uses the exponential cone


def _same(a, b, cents: float = 0.01) -> None:  # noqa: ANN001 - two Allocations
    assert np.max(np.abs(a.vouchers - b.vouchers)) <= cents
    assert a.objective == pytest.approx(b.objective, rel=1e-9)
    assert a.shadow_price == pytest.approx(b.shadow_price, rel=1e-6)


def test_resolve_after_budget_change_matches_a_fresh_build() -> None:
    p = _problem()
    model = FairnessModel(p)
    model.solve()
    compiled = model.cvx_problem._cache.param_prog
    model.set_budget(0.25 * float(p.upper.sum()))
    again = model.solve()
    assert model.cvx_problem._cache.param_prog is compiled  # re-used, not recompiled
    assert model.parameters["segment_min[mid]"].value == pytest.approx(0.2 * model.problem.budget)
    fresh = FairnessModel(replace(p, budget=0.25 * float(p.upper.sum()))).solve()
    _same(again, fresh)
    assert again.vouchers.sum() == pytest.approx(0.25 * p.upper.sum(), rel=1e-12)


def test_resolve_after_bound_and_share_changes_matches_a_fresh_build() -> None:
    p = _problem(alpha=2.0)
    model = FairnessModel(p)
    model.solve()
    model.set_bounds(floor=10.0, cap=5000.0, coverage_cap=0.4)
    model.set_segment_shares("mid", min_share=0.22)
    again = model.solve()
    sb = replace(p.scalar_bounds, floor=10.0, cap=5000.0, coverage_cap=0.4)
    lower, upper = sb.arrays()
    segs = (replace(p.segments[0], min_share=0.22), p.segments[1])
    fresh_problem = replace(p, lower=lower, upper=upper, scalar_bounds=sb, segments=segs)
    _same(again, FairnessModel(fresh_problem).solve())
    assert np.all(again.vouchers >= 10.0) and np.all(
        again.vouchers <= np.minimum(5000.0, 0.4 * sb.loss)
    )


def test_whole_cent_bounds_keep_floor_and_cap_parameters_and_coverage_caps_constant() -> None:
    # Caps rounded down to the cent are not affine in kappa: they enter as constants, the model
    # stays DPP with floor and cap Parameters, and a new kappa recompiles to the fresh answer.
    p = _problem(alpha=2.0)
    sb = replace(p.scalar_bounds, floor=4.005, whole_cents=True)
    lower, upper = sb.arrays()
    assert np.all(lower == 4.01)  # the floor rounded up to the cent
    assert np.array_equal(np.round(upper * 100) / 100, upper)  # whole cents
    assert np.all(upper <= np.minimum(6000.0, 0.5 * sb.loss)) and np.all(
        upper > np.minimum(6000.0, 0.5 * sb.loss) - 0.01
    )
    p = replace(p, lower=lower, upper=upper, scalar_bounds=sb)
    model = FairnessModel(p)
    assert model.is_dpp()
    assert "coverage_cap" not in model.parameters
    assert model.parameters["floor"].value == 4.01
    first = model.solve()
    assert np.all(first.vouchers <= upper + 1e-9) and np.all(first.vouchers >= lower - 1e-9)
    compiled = model.cvx_problem._cache.param_prog
    model.set_bounds(coverage_cap=0.4)
    assert model.cvx_problem._cache.param_prog is not compiled
    again = model.solve()
    sb2 = replace(sb, coverage_cap=0.4)
    lo2, hi2 = sb2.arrays()
    _same(again, FairnessModel(replace(p, lower=lo2, upper=hi2, scalar_bounds=sb2)).solve())
    assert np.all(again.vouchers <= hi2 + 1e-9)
    model.set_bounds(cap=5000.0)  # floor and cap stay Parameters: no recompile
    compiled = model.cvx_problem._cache.param_prog
    model.solve()
    assert model.cvx_problem._cache.param_prog is compiled


def test_structural_changes_are_refused() -> None:
    model = FairnessModel(_problem())
    with pytest.raises(InvalidProblemError, match="cannot be added"):
        model.set_segment_shares("mid", max_share=0.5)
    with pytest.raises(InvalidProblemError, match="no segment named"):
        model.set_segment_shares("nope", min_share=0.1)
    with pytest.raises(InvalidProblemError, match="per-user bounds"):
        FairnessModel(_problem(scalar=False)).set_bounds(floor=1.0)


def test_infeasible_parameter_update_is_reported_before_solving() -> None:
    p = _problem(segments=False)
    model = FairnessModel(p)
    model.set_budget(2.0 * float(p.upper.sum()))
    with pytest.raises(InfeasibleError, match="caps allow only"):
        model.solve()


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0])
def test_solver_duals_map_back_to_usd_prices(alpha: float) -> None:
    p = _problem(alpha=alpha)
    exact = fast_solution(p)
    model = FairnessModel(p)
    model.solve()
    raw = model.raw  # the solver's own multipliers, before polishing
    assert raw.shadow_price == pytest.approx(exact.shadow_price, rel=1e-4)
    for name, (mu_min, mu_max) in exact.segment_prices.items():
        got = raw.segment_prices[name]
        assert got[0] == pytest.approx(mu_min, rel=1e-4, abs=1e-6 * exact.shadow_price)
        assert got[1] == pytest.approx(mu_max, rel=1e-4, abs=1e-6 * exact.shadow_price)


def test_equal_bounds_become_equalities() -> None:
    p = _problem(alpha=2.0, scalar=False, segments=False)
    upper = p.upper.copy()
    upper[:20] = p.lower[:20]
    p = replace(p, upper=upper)
    model = FairnessModel(p)
    assert model.fixed.sum() == 20
    alloc = model.solve()
    assert np.array_equal(alloc.vouchers[:20], p.lower[:20])
    _same(alloc, FairnessModel(p, scaling="uniform").solve())


@pytest.mark.parametrize("alpha", [1.0, 2.0])
def test_ecos_agrees_with_clarabel(alpha: float) -> None:
    p = _problem(n=200, alpha=alpha)
    _same(FairnessModel(p, solver="ECOS").solve(), FairnessModel(p).solve())


def test_scs_never_returns_an_uncertified_answer() -> None:
    p = _problem(n=150, alpha=2.0, segments=False)
    try:
        alloc = FairnessModel(p, solver="SCS").solve()
    except (SolverFailedError, NotCertifiedError):
        return
    assert alloc.certificate.certified
    _same(alloc, FairnessModel(p).solve())


def test_unknown_solver_is_refused() -> None:
    with pytest.raises(InvalidProblemError, match="unknown cvxpy solver"):
        FairnessModel(_problem(n=20), solver="GUROBI")
