"""Problem builder: weights recomputed independently, coverage form, bounds in cents, segments."""

from __future__ import annotations

import math
from dataclasses import replace
from decimal import Decimal

import numpy as np
import polars as pl
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from allocator import names as N
from allocator.errors import InfeasibleError, InputError, ScenarioError
from allocator.settings.models import BoundsSpec, BudgetSpec, ObjectiveSpec, Scenario, SegmentSpec
from allocator.vouchers.weights import (
    FACTOR_COVERAGE,
    FACTOR_LOSS,
    FACTOR_PHASE,
    FACTOR_RATIO,
    LOG_WEIGHT,
    bounds_cents,
    build_problem,
    compute_bounds,
    compute_weights,
    feature_factor,
    phase_bounds,
    segment_labels,
    segment_masks,
    weight_factors,
)

REGIONS = ("DE", "FR", "BR", "VN", None)

# --- random feature matrices ------------------------------------------------------------------

row = st.fixed_dictionaries(
    {
        N.LOSS_USD: st.floats(1.0, 1e7),
        N.LOSS_RATIO: st.one_of(st.floats(0.01, 100.0), st.just(math.inf)),
        N.VIP_TIER: st.integers(0, 9),
        N.IS_INSTITUTIONAL: st.booleans(),
        N.ACCOUNT_AGE_DAYS: st.integers(0, 5000),
        N.N_EVENTS: st.integers(1, 60),
        N.REGION: st.sampled_from(REGIONS),
    }
)


def frame(rows: list[dict]) -> pl.DataFrame:
    df = pl.DataFrame(
        rows,
        schema={
            N.LOSS_USD: pl.Float64,
            N.LOSS_RATIO: pl.Float64,
            N.VIP_TIER: pl.Int64,
            N.IS_INSTITUTIONAL: pl.Boolean,
            N.ACCOUNT_AGE_DAYS: pl.Int64,
            N.N_EVENTS: pl.Int64,
            N.REGION: pl.String,
        },
    )
    ids = pl.Series(N.USER_ID, np.arange(len(rows), dtype=np.int64) * 7 + 1001)
    return df.insert_column(0, ids)


features_st = st.lists(row, min_size=1, max_size=25).map(frame)

specs = st.builds(
    ObjectiveSpec,
    alpha=st.floats(0.0, 5.0),
    loss_exponent=st.floats(-3.0, 3.0),
    ratio_exponent=st.floats(-3.0, 3.0),
    ratio_cap=st.floats(0.1, 5.0),
    features=st.tuples(
        st.tuples(st.just(N.VIP_TIER), st.floats(-1.0, 1.0)),
        st.tuples(st.just(N.IS_INSTITUTIONAL), st.floats(-2.0, 2.0)),
        st.tuples(st.just(N.ACCOUNT_AGE_DAYS), st.floats(-1e-3, 1e-3)),
    ),
    form=st.sampled_from(["voucher", "coverage"]),
)


def direct_weight(r: dict, spec: ObjectiveSpec) -> float:
    """The weight formula evaluated plainly, one user at a time, without logs."""
    loss = r[N.LOSS_USD]
    w = loss**spec.loss_exponent * min(r[N.LOSS_RATIO], spec.ratio_cap) ** spec.ratio_exponent
    w *= math.exp(sum(c * float(r[name]) for name, c in spec.features))
    if spec.form == "coverage":
        w *= loss ** (spec.alpha - 1.0)
    return w


def u(v: np.ndarray, alpha: float) -> np.ndarray:
    return np.log(v) if alpha == 1.0 else v ** (1.0 - alpha) / (1.0 - alpha)


# --- weights ----------------------------------------------------------------------------------


@given(features_st, specs)
def test_weights_match_the_formula(features, spec):
    w = compute_weights(features, spec)
    expected = np.array([direct_weight(r, spec) for r in features.iter_rows(named=True)])
    assert w.shape == (features.height,)
    assert np.all(np.isfinite(w)) and np.all(w > 0)
    np.testing.assert_allclose(w, expected, rtol=1e-9)


@given(features_st, specs)
def test_weight_factors_explain_the_weight(features, spec):
    f = weight_factors(features, spec)
    assert f[N.USER_ID].to_list() == features[N.USER_ID].to_list()
    parts = [
        FACTOR_LOSS,
        FACTOR_RATIO,
        *(feature_factor(n) for n, _ in spec.features),
        FACTOR_COVERAGE,
    ]
    assert f.columns == [N.USER_ID, *parts, LOG_WEIGHT]
    np.testing.assert_allclose(
        f.select(parts).sum_horizontal().to_numpy(),
        f[LOG_WEIGHT].to_numpy(),
        rtol=1e-12,
        atol=1e-12,
    )
    np.testing.assert_allclose(
        np.exp(f[LOG_WEIGHT].to_numpy()), compute_weights(features, spec), rtol=1e-12
    )
    # Each factor alone, recomputed from its definition.
    loss = features[N.LOSS_USD].to_numpy()
    ratio = np.minimum(features[N.LOSS_RATIO].to_numpy(), spec.ratio_cap)
    np.testing.assert_allclose(
        f[FACTOR_LOSS].to_numpy(), spec.loss_exponent * np.log(loss), rtol=1e-12, atol=1e-12
    )
    np.testing.assert_allclose(
        f[FACTOR_RATIO].to_numpy(), spec.ratio_exponent * np.log(ratio), rtol=1e-12, atol=1e-12
    )
    cov = (spec.alpha - 1) * np.log(loss) if spec.form == "coverage" else np.zeros_like(loss)
    np.testing.assert_allclose(f[FACTOR_COVERAGE].to_numpy(), cov, rtol=1e-12, atol=1e-12)


def test_infinite_ratio_is_capped_and_booleans_count_as_one():
    features = frame(
        [
            {
                N.LOSS_USD: 100.0,
                N.LOSS_RATIO: math.inf,
                N.VIP_TIER: 0,
                N.IS_INSTITUTIONAL: True,
                N.ACCOUNT_AGE_DAYS: 0,
                N.N_EVENTS: 1,
                N.REGION: "DE",
            },
            {
                N.LOSS_USD: 100.0,
                N.LOSS_RATIO: 0.5,
                N.VIP_TIER: 0,
                N.IS_INSTITUTIONAL: False,
                N.ACCOUNT_AGE_DAYS: 0,
                N.N_EVENTS: 1,
                N.REGION: "DE",
            },
        ]
    )
    spec = ObjectiveSpec(
        loss_exponent=0.0, ratio_exponent=2.0, ratio_cap=0.8, features=((N.IS_INSTITUTIONAL, 0.25),)
    )
    w = compute_weights(features, spec)
    assert w[0] == pytest.approx(0.8**2 * math.exp(0.25))
    assert w[1] == pytest.approx(0.5**2)


@given(features_st, st.floats(0.0, 5.0), st.integers(0, 2**32 - 1))
def test_coverage_form_differs_by_a_constant(features, alpha, seed):
    """sum_i w_i u(v_i / L_i) - sum_i w_i L_i^(alpha-1) u(v_i) does not depend on v."""
    base = ObjectiveSpec(
        alpha=alpha, loss_exponent=0.5, ratio_exponent=1.0, features=((N.VIP_TIER, 0.1),)
    )
    w = compute_weights(features, base)
    w_cov = compute_weights(features, replace(base, form="coverage"))
    loss = features[N.LOSS_USD].to_numpy()
    rng = np.random.default_rng(seed)
    gaps = []
    for _ in range(3):
        v = rng.uniform(4.0, 6000.0, size=loss.shape[0])  # any feasible vouchers
        coverage_obj = w * u(v / loss, alpha)
        voucher_obj = w_cov * u(v, alpha)
        scale = np.abs(coverage_obj).sum() + np.abs(voucher_obj).sum()
        gaps.append((coverage_obj.sum() - voucher_obj.sum(), scale))
    for gap, scale in gaps[1:]:
        assert abs(gap - gaps[0][0]) <= 1e-9 * max(scale, gaps[0][1])
    if alpha != 1.0:
        assert abs(gaps[0][0]) <= 1e-9 * gaps[0][1]
    else:
        assert gaps[0][0] == pytest.approx(-(w * np.log(loss)).sum(), rel=1e-9, abs=1e-9)


@given(features_st, specs, st.floats(0.01, 1.0))
def test_raising_a_coefficient_favours_users_with_that_feature(features, spec, delta):
    name = N.VIP_TIER
    coefs = dict(spec.features)
    raised = replace(
        spec, features=tuple((k, c + delta if k == name else c) for k, c in coefs.items())
    )
    w, w2 = compute_weights(features, spec), compute_weights(features, raised)
    x = features[name].to_numpy()
    growth = w2 / w
    np.testing.assert_allclose(growth[x == 0], 1.0, rtol=1e-12)
    assert np.all(growth[x > 0] > 1.0)
    # Relative to any other user with a smaller value, a user's weight grows.
    i, j = np.argmax(x), np.argmin(x)
    if x[i] > x[j]:
        assert w2[i] / w2[j] > w[i] / w[j]


def one_user(**values) -> pl.DataFrame:
    """Two users, 5 and 42, both with a loss of 100 USD; ``values`` change user 42 only."""
    base = {
        N.LOSS_USD: 100.0,
        N.LOSS_RATIO: 0.5,
        N.VIP_TIER: 1,
        N.IS_INSTITUTIONAL: False,
        N.ACCOUNT_AGE_DAYS: 10,
        N.N_EVENTS: 1,
        N.REGION: "DE",
    }
    return frame([base, {**base, **values}]).with_columns(pl.Series(N.USER_ID, [5, 42]))


@pytest.mark.parametrize(
    ("values", "spec", "error", "column"),
    [
        ({N.LOSS_USD: 0.0}, ObjectiveSpec(loss_exponent=-1.0), ScenarioError, N.LOSS_USD),
        ({N.LOSS_USD: 0.0}, ObjectiveSpec(loss_exponent=1.0), ScenarioError, N.LOSS_USD),
        ({N.LOSS_USD: -3.0}, ObjectiveSpec(loss_exponent=1.0), InputError, N.LOSS_USD),
        ({N.LOSS_USD: math.nan}, ObjectiveSpec(loss_exponent=1.0), InputError, N.LOSS_USD),
        ({N.LOSS_RATIO: 0.0}, ObjectiveSpec(ratio_exponent=1.0), ScenarioError, N.LOSS_RATIO),
        ({N.LOSS_RATIO: math.nan}, ObjectiveSpec(ratio_exponent=1.0), InputError, N.LOSS_RATIO),
        (
            {N.LOSS_USD: 1e9},
            ObjectiveSpec(alpha=100.0, loss_exponent=0.0, form="coverage"),
            ScenarioError,
            FACTOR_COVERAGE,
        ),
        (
            {N.VIP_TIER: 9},
            ObjectiveSpec(features=((N.VIP_TIER, 200.0),)),
            ScenarioError,
            feature_factor(N.VIP_TIER),
        ),
    ],
)
def test_non_finite_weights_name_user_and_column(values, spec, error, column):
    with pytest.raises(error) as info:
        compute_weights(one_user(**values), spec)
    msg = str(info.value)
    assert "user 42" in msg and column in msg
    assert "user 5 " not in msg


def test_zero_exponent_ignores_zero_loss():
    # L^0 = 1 even at L = 0: equal weights do not need a positive loss.
    spec = ObjectiveSpec(loss_exponent=0.0, ratio_exponent=0.0)
    w = compute_weights(one_user(**{N.LOSS_USD: 0.0}), spec)
    np.testing.assert_array_equal(w, [1.0, 1.0])


def test_missing_and_null_columns():
    features = one_user()
    with pytest.raises(InputError, match="no column 'loss_ratio'"):
        compute_weights(features.drop(N.LOSS_RATIO), ObjectiveSpec(ratio_exponent=1.0))
    nulls = features.with_columns(pl.Series(N.VIP_TIER, [1, None], dtype=pl.Int64))
    with pytest.raises(InputError, match=r"'vip_tier' is empty \(null\).*user 42"):
        compute_weights(nulls, ObjectiveSpec(features=((N.VIP_TIER, 0.1),)))
    with pytest.raises(ScenarioError, match="'region' .* not numeric"):
        compute_weights(features, ObjectiveSpec(features=((N.REGION, 0.1),)))


# --- bounds -----------------------------------------------------------------------------------

cents_amount = st.integers(1, 2_000_000).map(lambda c: c / 100)
coverage_caps = st.sampled_from(["0.07", "0.29", "0.5", "1", "1.5", "2"])


@given(
    st.lists(cents_amount, min_size=1, max_size=30),
    st.integers(0, 20_000).map(lambda c: c / 100),
    st.one_of(st.none(), coverage_caps),
)
def test_bounds_and_cent_feasibility(losses, floor, cc_text):
    cap = 6000.0
    features = pl.DataFrame({N.USER_ID: np.arange(len(losses)) + 10, N.LOSS_USD: losses})
    spec = BoundsSpec(
        floor_usd=floor, cap_usd=cap, coverage_cap=None if cc_text is None else float(cc_text)
    )
    # Independent reading in exact decimals: the largest whole cent at most min(cap, cc * L).
    floor_c = int(Decimal(repr(floor)) * 100)
    hi_exact = [
        min(
            int(Decimal(repr(cap)) * 100),
            int(Decimal(cc_text) * Decimal(repr(L)) * 100) if cc_text else 10**12,
        )
        for L in losses
    ]
    bad = [i for i, h in enumerate(hi_exact) if h < floor_c]
    if bad:
        with pytest.raises(InfeasibleError) as info:
            compute_bounds(features, spec)
        msg = str(info.value)
        worst = min(bad, key=lambda i: (losses[i], i))
        assert f"{len(bad)} of {len(losses)} eligible user(s)" in msg
        assert f"user {worst + 10}" in msg and f"smallest loss {losses[worst]:.2f}" in msg
        assert "lower bounds.floor_usd" in msg and "raise bounds.coverage_cap" in msg
        return
    lower, upper, scalar = compute_bounds(features, spec)
    lo2, hi2 = scalar.arrays()
    np.testing.assert_array_equal(lower, lo2)
    np.testing.assert_array_equal(upper, hi2)
    # the problem is posed on whole cents: the floor (a whole cent here) and each cap rounded down
    np.testing.assert_array_equal(lower, np.full(len(losses), floor_c / 100))
    np.testing.assert_array_equal(upper, np.array(hi_exact) / 100)
    lo_c, hi_c = bounds_cents(lower, upper)
    assert lo_c.tolist() == [floor_c] * len(losses)
    assert hi_c.tolist() == hi_exact
    assert np.all(lo_c <= hi_c)


@given(
    st.lists(st.floats(0.0, 1e6), min_size=1, max_size=20),
    st.lists(st.floats(0.0, 1e7), min_size=1, max_size=20),
)
def test_bounds_cents_agree_with_rounding(lows, widths):
    # The pre-solve check and the cents rounding must judge the same users feasible.
    from allocator.kernel.rounding import bounds_to_cents

    n = min(len(lows), len(widths))
    lower = np.array(lows[:n])
    upper = lower + np.array(widths[:n])
    mine = bounds_cents(lower, upper)
    if np.all(mine[0] <= mine[1]):
        theirs = bounds_to_cents(lower, upper)
        np.testing.assert_array_equal(mine[0], theirs[0])
        np.testing.assert_array_equal(mine[1], theirs[1])
    else:
        with pytest.raises(InfeasibleError):
            bounds_to_cents(lower, upper)


def test_bounds_refuse_bad_losses_and_empty_ranges():
    with pytest.raises(InputError, match=r"'loss_usd' must be a finite amount >= 0, but user 42"):
        compute_bounds(one_user(**{N.LOSS_USD: math.nan}), BoundsSpec(coverage_cap=1.0))
    with pytest.raises(InputError, match="user 42"):
        compute_bounds(one_user(**{N.LOSS_USD: -1.0}), BoundsSpec())
    with pytest.raises(ScenarioError, match="leave no whole-cent voucher"):
        compute_bounds(one_user(), BoundsSpec(floor_usd=4.001, cap_usd=4.009, coverage_cap=10.0))


def test_bounds_cents_round_inwards():
    lo, hi = bounds_cents(
        np.array([4.0, 0.07, 4.001, 4.009]), np.array([6000.0, 0.29, 5.999, 5.991])
    )
    assert lo.tolist() == [400, 7, 401, 401]
    assert hi.tolist() == [600000, 29, 599, 599]


# --- segments ---------------------------------------------------------------------------------

PREDICATES = [
    ("loss_usd < 10000", pl.col(N.LOSS_USD) < 10000),
    ("vip_tier >= 3 OR is_institutional", (pl.col(N.VIP_TIER) >= 3) | pl.col(N.IS_INSTITUTIONAL)),
    (
        "region IN ('DE', 'FR') AND loss_ratio > 0.5",
        pl.col(N.REGION).is_in(["DE", "FR"]) & (pl.col(N.LOSS_RATIO) > 0.5),
    ),
    (
        "region <> 'BR' AND n_events BETWEEN 2 AND 20",
        (pl.col(N.REGION) != "BR") & pl.col(N.N_EVENTS).is_between(2, 20),
    ),
    (
        "account_age_days < 90 OR loss_ratio >= 1",
        (pl.col(N.ACCOUNT_AGE_DAYS) < 90) | (pl.col(N.LOSS_RATIO) >= 1),
    ),
]


@given(features_st)
def test_segment_masks_match_a_direct_filter(features):
    specs_ = [SegmentSpec(f"s{k}", where, min_share=0.1) for k, (where, _) in enumerate(PREDICATES)]
    masks = segment_masks(features, specs_)
    ids = features[N.USER_ID].to_numpy()
    for seg, spec, (_, expr) in zip(masks, specs_, PREDICATES):
        assert seg.name == spec.name and seg.min_share == 0.1 and seg.max_share is None
        assert seg.members.dtype == bool and seg.members.shape == (features.height,)
        assert set(ids[seg.members]) == set(features.filter(expr)[N.USER_ID].to_list())


@given(features_st)
def test_segment_labels_join_overlaps(features):
    specs_ = [SegmentSpec("small", "loss_usd < 100000"), SegmentSpec("vip", "vip_tier >= 5")]
    labels = segment_labels(features, specs_).to_list()
    assert segment_labels(features, specs_).name == N.SEGMENT
    for r, label in zip(features.iter_rows(named=True), labels):
        names = [
            n for n, ok in (("small", r[N.LOSS_USD] < 100000), ("vip", r[N.VIP_TIER] >= 5)) if ok
        ]
        assert label == ("+".join(names) if names else None)


def test_segment_labels_without_segments_are_null():
    s = segment_labels(one_user(), ())
    assert s.dtype == pl.String and s.null_count() == 2


def test_segment_predicate_errors_name_the_segment():
    with pytest.raises(ScenarioError, match="segment 'x'.*cannot be evaluated"):
        segment_masks(
            one_user(), [SegmentSpec("x", "depeg_comp_usd > 0")]
        )  # column not in this frame
    with pytest.raises(ScenarioError, match="segment 'y'.*true/false"):
        segment_masks(one_user(), [SegmentSpec("y", "loss_usd + 1")])


# --- the whole problem ------------------------------------------------------------------------


def scenario(**sections) -> Scenario:
    return replace(Scenario(name="t"), **sections)


@given(features_st)
def test_build_problem_assembles_the_parts(features):
    s = scenario(
        objective=ObjectiveSpec(alpha=2.0, ratio_exponent=1.0),
        budget=BudgetSpec(total_usd=1000.0 * features.height, exhaust=True),
        segments=(SegmentSpec("small", "loss_usd < 1000000", max_share=1.0),),
    )
    p = build_problem(features, s)
    assert (
        p.n == features.height and p.alpha == 2.0 and p.budget == s.budget.total_usd and p.exhaust
    )
    np.testing.assert_array_equal(p.weights, compute_weights(features, s.objective))
    lo, hi = p.scalar_bounds.arrays()
    np.testing.assert_array_equal(p.lower, lo)
    np.testing.assert_array_equal(p.upper, hi)
    assert np.all(p.lower <= p.upper)
    (seg,) = p.segments
    np.testing.assert_array_equal(seg.members, features[N.LOSS_USD].to_numpy() < 1e6)


def test_build_problem_needs_rows_sorted_by_unique_user_id():
    features = one_user()
    with pytest.raises(InputError, match=r"sorted by 'user_id'.*\(user 5\) follows user 42"):
        build_problem(features.reverse(), scenario())
    dup = features.with_columns(pl.Series(N.USER_ID, [7, 7]))
    with pytest.raises(InputError, match="one row per user"):
        build_problem(dup, scenario())


@pytest.mark.parametrize(
    ("sections", "needle"),
    [
        (
            {"budget": BudgetSpec(total_usd=7.99)},
            "floors of 2 eligible users add up to 8.00 USD, more than the budget of 7.99 USD: "
            "0.01 USD short",
        ),
        (
            {"budget": BudgetSpec(total_usd=12_000.01)},
            "must be paid in full (budget.exhaust = true), but the upper bounds of the 2 eligible "
            "users add up to only 12,000.00 USD: 0.01 USD cannot be spent",
        ),
        (
            {
                "budget": BudgetSpec(total_usd=10_000.0),
                "segments": (SegmentSpec("rich", "loss_usd > 150", min_share=0.1),),
            },
            "segment 'rich' must receive at least 0.1",
        ),
        (
            {
                "budget": BudgetSpec(total_usd=100.0),
                "segments": (SegmentSpec("all", "loss_usd > 0", max_share=0.05),),
            },
            "segment 'all' may receive at most 0.05",
        ),
    ],
)
def test_infeasible_problems_are_reported_before_solving(sections, needle):
    s = scenario(bounds=BoundsSpec(floor_usd=4.0, cap_usd=6000.0), **sections)
    with pytest.raises(InfeasibleError) as info:
        build_problem(one_user(), s)
    assert needle in str(info.value) and "Hint:" in str(info.value)


def test_exact_fit_is_feasible():
    # Budget equal to the sum of caps (exhaust) and to the sum of floors are both payable.
    build_problem(one_user(), scenario(budget=BudgetSpec(total_usd=12_000.0)))
    build_problem(one_user(), scenario(budget=BudgetSpec(total_usd=8.0)))


def test_no_eligible_users_cannot_exhaust_a_budget():
    empty = one_user().clear()
    with pytest.raises(InfeasibleError, match="no liquidated user passes the eligibility rules"):
        build_problem(empty, scenario())
    p = build_problem(empty, scenario(budget=BudgetSpec(total_usd=100.0, exhaust=False)))
    assert p.n == 0


@given(st.data())
def test_feasibility_of_generated_ranges(data):
    # Random floors and caps that leave room: never infeasible, bounds ordered in cents.
    features = data.draw(features_st)
    # drawn in whole cents: int(0.57 * 100) is 56, which would put the budget below the floors
    floor_c = data.draw(st.integers(0, 10_000))
    cap_c = floor_c + data.draw(st.integers(1, 600_000))
    floor, cap = floor_c / 100, cap_c / 100
    total = data.draw(st.integers(floor_c * features.height, cap_c * features.height)) / 100
    assume(total > 0)
    p = build_problem(
        features,
        scenario(
            bounds=BoundsSpec(floor_usd=floor, cap_usd=cap), budget=BudgetSpec(total_usd=total)
        ),
    )
    lo_c, hi_c = bounds_cents(p.lower, p.upper)
    assert lo_c.sum() <= round(total * 100) <= hi_c.sum()


# --- phase-in band ----------------------------------------------------------------------------


@given(st.lists(st.floats(1e-7, 1.0), min_size=1, max_size=40), st.floats(5.0, 1e5))
def test_phase_factor_scales_weight_and_cap_and_the_floor_stays(
    factors: list[float], loss: float
) -> None:
    n = len(factors)
    phi = np.array(factors)
    features = pl.DataFrame(
        {
            N.USER_ID: np.arange(n, dtype=np.int64),
            N.LOSS_USD: np.full(n, loss),
            N.LOSS_RATIO: np.full(n, 0.5),
            N.PHASE_FACTOR: phi,
        }
    )
    plain = features.drop(N.PHASE_FACTOR)
    scen = Scenario(name="phase", objective=ObjectiveSpec(loss_exponent=1.0, ratio_exponent=1.0))
    w_plain = compute_weights(plain, scen.objective)
    w = compute_weights(features, scen.objective)
    np.testing.assert_allclose(w, w_plain * phi, rtol=1e-12)
    assert FACTOR_PHASE in weight_factors(features, scen.objective).columns
    assert FACTOR_PHASE not in weight_factors(plain, scen.objective).columns
    lower, upper = phase_bounds(
        np.full(n, 4.0), np.minimum(6000.0, 2.0 * loss) * np.ones(n), 6000.0, phi
    )
    # the cap scales with the factor, the coverage cap does not; both in whole cents, and never
    # below the floor (nobody is paid a positive amount below the announced minimum)
    raw = np.minimum(6000.0 * phi, 2.0 * loss)
    lo_c, hi_c = bounds_cents(lower, upper)
    np.testing.assert_array_equal(upper, hi_c / 100.0)
    floor_c = min(400, int(np.floor(2.0 * loss * 100 + 1e-6)))
    assert np.all(hi_c == np.maximum(floor_c, np.floor(raw * 100 + 1e-6)))
    assert np.all(lo_c <= hi_c)  # always at least one whole-cent voucher
    assert np.all(lo_c == floor_c)  # the floor stays (unless the unphased cap is below it)


def test_build_problem_with_a_phase_factor_drops_scalar_bounds() -> None:
    n = 6
    phi = np.array([1.0, 1.0, 0.5, 0.9, 0.0005, 1.0])
    features = pl.DataFrame(
        {
            N.USER_ID: np.arange(n, dtype=np.int64),
            N.LOSS_USD: np.array([100.0, 1e5, 40.0, 49.0, 26.0, 2e4]),
            N.LOSS_RATIO: np.full(n, 0.5),
            N.PHASE_FACTOR: phi,
        }
    )
    scen = Scenario(name="p", budget=BudgetSpec(total_usd=10_000.0))
    problem = build_problem(features, scen)
    assert problem.scalar_bounds is None
    # user 4's phased cap (USD 3) is below the floor: it is raised to the floor
    np.testing.assert_allclose(problem.upper, np.maximum(6000.0 * phi, 4.0))
    assert problem.upper[4] == 4.0 and np.all(problem.lower == 4.0)
    plain = build_problem(features.drop(N.PHASE_FACTOR), scen)
    assert plain.scalar_bounds is not None
    np.testing.assert_allclose(problem.weights, plain.weights * phi, rtol=1e-12)
