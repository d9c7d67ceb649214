"""Claims rules: published tables, an exact rational reference, and the axioms each rule keeps.

The reference below is written independently of ``allocator.kernel.claims``: it evaluates each
rule's textbook path in exact fractions at every breakpoint and interpolates, so it shares no
code (and no floating point) with the kernel's root search.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from allocator.errors import InfeasibleError
from allocator.kernel import affine_root as R
from allocator.kernel import claims as K
from allocator.kernel.feasibility import InvalidProblemError

# ------------------------------------------------------------------------ published tables

#: Aumann and Maschler (1985), Table 1: the Talmud's division of estates of 100, 200 and 300
#: among claims of 100, 200 and 300 (Mishnah, Ketubot 93a).
TALMUD_TABLE = {
    100: (Fraction(100, 3), Fraction(100, 3), Fraction(100, 3)),
    200: (50, 75, 75),
    300: (50, 100, 150),
}
#: The same problems under the other classical rules (Thomson 2003, section 2).
CLASSICAL = {
    ("proportional", 100): (Fraction(50, 3), Fraction(100, 3), 50),
    ("proportional", 200): (Fraction(100, 3), Fraction(200, 3), 100),
    ("proportional", 300): (50, 100, 150),
    ("constrained_equal_awards", 100): (Fraction(100, 3),) * 3,
    ("constrained_equal_awards", 200): (Fraction(200, 3),) * 3,
    ("constrained_equal_awards", 300): (100, 100, 100),
    ("constrained_equal_losses", 100): (0, 0, 100),
    ("constrained_equal_losses", 200): (0, 50, 150),
    ("constrained_equal_losses", 300): (0, 100, 200),
}


@pytest.mark.parametrize("estate", [100, 200, 300])
def test_talmud_reproduces_aumann_maschler_table(estate: int) -> None:
    got = K.talmud(np.array([100.0, 200.0, 300.0]), float(estate)).awards
    np.testing.assert_allclose(got, [float(x) for x in TALMUD_TABLE[estate]], rtol=1e-12)


def test_talmud_divides_the_contested_garment() -> None:
    # Bava Metzia 2a: one claims the whole garment, the other half of it: 3/4 and 1/4.
    got = K.talmud(np.array([1.0, 0.5]), 1.0).awards
    np.testing.assert_allclose(got, [0.75, 0.25], rtol=1e-12)


@pytest.mark.parametrize(("rule", "estate"), sorted(CLASSICAL))
def test_classical_rules_on_the_talmud_problems(rule: str, estate: int) -> None:
    got = K.divide(rule, np.array([100.0, 200.0, 300.0]), float(estate)).awards
    np.testing.assert_allclose(got, [float(x) for x in CLASSICAL[(rule, estate)]], atol=1e-9)


def test_practice_rules_on_small_examples() -> None:
    c = np.array([100.0, 200.0, 300.0])
    # Mt. Gox: 150 base to everyone (100 is capped by its claim), the other 0 pro rata on 50+150.
    np.testing.assert_allclose(K.base_then_pro_rata(c, 400.0, base=150.0).awards, [100, 150, 150])
    np.testing.assert_allclose(K.base_then_pro_rata(c, 500.0, base=150.0).awards, [100, 175, 225])
    # FTX: the claim of 100 is in the class and paid in full; 300 shared as 200:300.
    np.testing.assert_allclose(
        K.convenience_class(c, 400.0, threshold=150.0).awards, [100, 120, 180]
    )
    # Class action: the 1 and 10 claims would get less than 5; their money goes to the others.
    got = K.minimum_payment(np.array([1.0, 10.0, 100.0, 1000.0]), 200.0, minimum=5.0)
    np.testing.assert_allclose(got.awards, [0, 0, 200 / 11, 2000 / 11])
    assert got.dropped.tolist() == [True, True, False, False]


# ------------------------------------------------------------------ exact rational reference


def _clip(x: Fraction, lo: Fraction, hi: Fraction) -> Fraction:
    return min(max(x, lo), hi)


def _reference(rule: str, claims, estate, lower, upper, parameter=None):  # noqa: ANN001, ANN202
    """Each rule's award, in exact fractions, from its textbook path (see the module docstring)."""
    c = [Fraction(str(x)) for x in claims]
    u = [min(Fraction(str(h)), ci) for h, ci in zip(upper, c)]
    l = [min(Fraction(str(x)), ui) for x, ui in zip(lower, u)]
    n = len(c)
    if rule == "minimum_payment":
        kept = [ci > 0 for ci in c]
        while True:

            def path(t, kept=kept):  # noqa: ANN001, ANN202
                return [
                    _clip(t * ci, l[i], u[i]) if kept[i] else Fraction(0) for i, ci in enumerate(c)
                ]

            x = _root(
                path,
                [b for i in range(n) if kept[i] and c[i] for b in (l[i] / c[i], u[i] / c[i])],
                estate,
            )
            drop = [kept[i] and x[i] < Fraction(parameter) for i in range(n)]
            if not any(drop):
                return x
            kept = [k and not d for k, d in zip(kept, drop)]
    if rule == "proportional":
        stages = [
            (
                lambda t: [_clip(t * ci, l[i], u[i]) for i, ci in enumerate(c)],
                [b for i in range(n) if c[i] for b in (l[i] / c[i], u[i] / c[i])],
            )
        ]
    elif rule == "constrained_equal_awards":
        stages = [(lambda t: [_clip(t, l[i], u[i]) for i in range(n)], l + u)]
    elif rule == "constrained_equal_losses":
        stages = [
            (
                lambda t: [_clip(c[i] + t, l[i], u[i]) for i in range(n)],
                [l[i] - c[i] for i in range(n)] + [u[i] - c[i] for i in range(n)],
            )
        ]
    elif rule == "talmud":
        e = [_clip(ci / 2, l[i], u[i]) for i, ci in enumerate(c)]
        stages = [
            (lambda t: [_clip(t, l[i], e[i]) for i in range(n)], l + e),
            (
                lambda t: [_clip(c[i] + t, e[i], u[i]) for i in range(n)],
                [e[i] - c[i] for i in range(n)] + [u[i] - c[i] for i in range(n)],
            ),
        ]
    elif rule == "base_then_pro_rata":
        e = [_clip(min(ci, Fraction(parameter)), l[i], u[i]) for i, ci in enumerate(c)]
        stages = [
            (lambda t: [_clip(t, l[i], e[i]) for i in range(n)], l + e),
            (
                lambda t: [_clip(e[i] + t * (u[i] - e[i]), e[i], u[i]) for i in range(n)],
                [Fraction(0), Fraction(1)],
            ),
        ]
    elif rule == "convenience_class":
        small = [ci <= Fraction(parameter) for ci in c]
        stages = [
            (
                lambda t: [_clip(t * c[i], l[i], u[i]) if small[i] else l[i] for i in range(n)],
                [b for i in range(n) if small[i] and c[i] for b in (l[i] / c[i], u[i] / c[i])],
            ),
            (
                lambda t: [u[i] if small[i] else _clip(t * c[i], l[i], u[i]) for i in range(n)],
                [b for i in range(n) if not small[i] and c[i] for b in (l[i] / c[i], u[i] / c[i])],
            ),
        ]
    else:  # pragma: no cover
        raise AssertionError(rule)
    for k, (path, breaks) in enumerate(stages):
        top = sum(path(max(breaks) + 1 if breaks else Fraction(0)))
        if estate <= top or k == len(stages) - 1:
            return _root(path, breaks, estate)
    raise AssertionError("unreachable")


def _root(path, breaks, estate):  # noqa: ANN001, ANN202
    """The point of a continuous non-decreasing piecewise-linear path where it pays ``estate``."""
    pts = sorted(set(breaks)) or [Fraction(0)]
    pts = [pts[0] - 1, *pts, pts[-1] + 1]
    totals = [sum(path(t)) for t in pts]
    for (t0, s0), (t1, s1) in zip(zip(pts, totals), zip(pts[1:], totals[1:])):
        if s0 <= estate <= s1:
            t = t0 if s1 == s0 else t0 + (estate - s0) * (t1 - t0) / (s1 - s0)
            return path(t)
    raise AssertionError("estate outside the path")


PARAMS = {"base_then_pro_rata": 40, "convenience_class": 60, "minimum_payment": 15}

money = st.integers(min_value=0, max_value=20_000).map(lambda cents: cents / 100)


@st.composite
def bounded_problems(draw: st.DrawFn) -> tuple:
    n = draw(st.integers(min_value=1, max_value=6))
    claims = [draw(money) for _ in range(n)]
    bounded = draw(st.booleans())
    floor = draw(st.sampled_from([0.0, 4.0, 10.0])) if bounded else 0.0
    cap = draw(st.sampled_from([50.0, 80.0, 1e9])) if bounded else float("inf")
    lower = [floor] * n
    upper = [cap] * n
    lo = sum(min(floor, min(cap, c)) for c in claims)
    hi = sum(min(cap, c) for c in claims)
    share = draw(st.integers(min_value=0, max_value=1000)) / 1000
    estate = round((lo + share * (hi - lo)) * 100) / 100
    assume(lo - 1e-9 <= estate <= hi + 1e-9)
    return claims, estate, lower, upper


@pytest.mark.parametrize("rule", sorted(K.RULES))
@given(case=bounded_problems())
def test_every_rule_matches_the_rational_reference(rule: str, case: tuple) -> None:
    claims, estate, lower, upper = case
    param = PARAMS.get(rule)
    try:
        got = K.divide(
            rule,
            np.array(claims),
            estate,
            lower=np.array(lower),
            upper=np.array(upper),
            parameter=param,
        )
    except InfeasibleError:
        assume(False)  # a minimum payment can leave too few claims to take the estate
    want = _reference(
        rule,
        claims,
        Fraction(str(estate)),
        lower,
        [u if u != float("inf") else 10**18 for u in upper],
        param,
    )
    np.testing.assert_allclose(got.awards, [float(x) for x in want], atol=1e-7, rtol=1e-9)


@pytest.mark.parametrize("rule", sorted(K.RULES))
@given(case=bounded_problems())
def test_cents_sum_to_the_estate_within_bounds_and_a_cent(rule: str, case: tuple) -> None:
    claims, estate, lower, upper = case
    c = np.array(claims)
    try:
        got = K.divide(
            rule,
            c,
            estate,
            lower=np.array(lower),
            upper=np.array(upper),
            parameter=PARAMS.get(rule),
        )
    except InfeasibleError:
        assume(False)
    cents = K.awards_to_cents(got, c, estate, lower=np.array(lower), upper=np.array(upper))
    assert cents.dtype == np.int64
    assert int(cents.sum()) == round(estate * 100)
    assert (cents <= np.round(np.minimum(c, upper) * 100)).all()  # never above claim or cap
    assert (np.abs(cents - got.awards * 100) < 1.0 + 1e-6).all()


# ---------------------------------------------------------------------------------- axioms

claim_lists = st.lists(
    st.integers(min_value=0, max_value=10_000).map(float), min_size=2, max_size=7
)


def _estate(claims: list[float], share: int) -> float:
    return sum(claims) * share / 1000


THEORY_RULES = ["proportional", "constrained_equal_awards", "constrained_equal_losses", "talmud"]


@pytest.mark.parametrize("rule", [*K.RULES])
@given(claims=claim_lists, share=st.integers(0, 1000))
def test_budget_balance_bounds_and_equal_treatment(
    rule: str, claims: list[float], share: int
) -> None:
    c = np.array(claims + [claims[0]])  # the last claim equals the first
    e = _estate(list(c), share)
    try:
        x = K.divide(rule, c, e, parameter=PARAMS.get(rule)).awards
    except InfeasibleError:
        assume(False)
    assert x.sum() == pytest.approx(e, rel=1e-9, abs=1e-7)
    assert (x >= -1e-9).all() and (x <= c + 1e-7).all()
    assert x[0] == pytest.approx(x[-1], rel=1e-9, abs=1e-7)


@pytest.mark.parametrize("rule", [*THEORY_RULES, "base_then_pro_rata"])
@given(claims=claim_lists, share=st.integers(0, 1000))
def test_order_preservation(rule: str, claims: list[float], share: int) -> None:
    c = np.array(sorted(claims))
    x = K.divide(rule, c, _estate(list(c), share), parameter=PARAMS.get(rule)).awards
    assert (np.diff(x) >= -1e-7).all()  # a larger claim: no smaller award
    assert (np.diff(c - x) >= -1e-7).all()  # ... and no smaller loss


def test_convenience_class_breaks_order_preservation() -> None:
    # A claim just above the class threshold gets less than one inside it.
    x = K.convenience_class(np.array([60.0, 61.0, 1000.0]), 200.0, threshold=60.0).awards
    assert x[1] < x[0]


@pytest.mark.parametrize("rule", [*THEORY_RULES, "base_then_pro_rata", "convenience_class"])
@given(claims=claim_lists, s1=st.integers(0, 1000), s2=st.integers(0, 1000))
def test_resource_monotonicity(rule: str, claims: list[float], s1: int, s2: int) -> None:
    c = np.array(claims)
    e1, e2 = sorted((_estate(claims, s1), _estate(claims, s2)))
    x1 = K.divide(rule, c, e1, parameter=PARAMS.get(rule)).awards
    x2 = K.divide(rule, c, e2, parameter=PARAMS.get(rule)).awards
    assert (x2 >= x1 - 1e-7).all()


def test_minimum_payment_breaks_resource_monotonicity() -> None:
    # With 54 the claim of 10 would get 4.91 and is dropped, so the claim of 100 gets all 54;
    # with 55 it gets exactly 5 and is kept, and the claim of 100 falls to 50.
    c = np.array([10.0, 100.0])
    less = K.minimum_payment(c, 54.0, minimum=5.0).awards
    more = K.minimum_payment(c, 55.0, minimum=5.0).awards
    np.testing.assert_allclose(less, [0.0, 54.0])
    np.testing.assert_allclose(more, [5.0, 50.0])
    assert more[1] < less[1]


@pytest.mark.parametrize("rule", THEORY_RULES)
@given(claims=claim_lists, share=st.integers(0, 1000), data=st.data())
def test_consistency(rule: str, claims: list[float], share: int, data: st.DataObject) -> None:
    c = np.array(claims)
    x = K.divide(rule, c, _estate(claims, share)).awards
    keep = np.array(data.draw(st.lists(st.booleans(), min_size=c.size, max_size=c.size)))
    assume(keep.any())
    sub = K.divide(rule, c[keep], float(x[keep].sum())).awards
    np.testing.assert_allclose(sub, x[keep], rtol=1e-9, atol=1e-6)


@pytest.mark.parametrize("rule", ["proportional", "talmud"])
@given(claims=claim_lists, share=st.integers(0, 1000))
def test_self_duality(rule: str, claims: list[float], share: int) -> None:
    c = np.array(claims)
    e = _estate(claims, share)
    awards = K.divide(rule, c, e).awards
    losses = K.divide(rule, c, float(c.sum()) - e).awards
    np.testing.assert_allclose(awards, c - losses, rtol=1e-9, atol=1e-6)


@pytest.mark.parametrize(
    "rule", ["proportional", "constrained_equal_awards", "constrained_equal_losses"]
)
@given(claims=claim_lists, s1=st.integers(0, 1000), s2=st.integers(0, 1000))
def test_composition_up(rule: str, claims: list[float], s1: int, s2: int) -> None:
    c = np.array(claims)
    e1, e2 = sorted((_estate(claims, s1), _estate(claims, s2)))
    first = K.divide(rule, c, e1).awards
    second = K.divide(rule, np.maximum(c - first, 0.0), e2 - e1).awards
    np.testing.assert_allclose(first + second, K.divide(rule, c, e2).awards, rtol=1e-9, atol=1e-6)


# ------------------------------------------------------------------- max-min, errors, scale


@given(claims=claim_lists, share=st.integers(0, 1000))
def test_max_min_limits_are_water_filling(claims: list[float], share: int) -> None:
    loss = np.array(claims) + 1.0
    lo, hi = np.full(loss.size, 0.5), np.minimum(loss, 5000.0)
    budget = float(lo.sum() + (hi.sum() - lo.sum()) * share / 1000)
    level, v = K.lexicographic_max_min(lo, hi, budget)
    assert v.sum() == pytest.approx(budget, rel=1e-9, abs=1e-7)
    # max-min: nobody strictly inside their bounds is below anyone who could give
    inside = (v > lo + 1e-9) & (v < hi - 1e-9)
    if inside.any():
        assert np.ptp(v[inside]) < 1e-7
        assert (v[v < level - 1e-7] <= hi[v < level - 1e-7] + 1e-9).all()
    # coverage form: equal coverage v / L among users inside their bounds
    _, vc = K.lexicographic_max_min(lo, hi, budget, scale=loss)
    inside = (vc > lo + 1e-9) & (vc < hi - 1e-9)
    if inside.any():
        assert np.ptp(vc[inside] / loss[inside]) < 1e-9


def test_bad_problems_are_refused_in_plain_words() -> None:
    with pytest.raises(InfeasibleError, match="more than the claims can take"):
        K.proportional(np.array([10.0, 20.0]), 31.0)
    with pytest.raises(InvalidProblemError, match="claim 2"):
        K.proportional(np.array([10.0, -1.0]), 5.0)
    with pytest.raises(InvalidProblemError, match="unknown claims rule"):
        K.divide("fifo", np.array([1.0]), 1.0)
    with pytest.raises(InvalidProblemError, match="needs its base"):
        K.divide("mt_gox", np.array([1.0]), 1.0)
    assert K.rule_name("CEA") == "constrained_equal_awards"
    assert K.rule_name("ftx-convenience") == "convenience_class"


@pytest.mark.slow
@pytest.mark.parametrize("rule", sorted(K.RULES))
def test_a_million_claims_with_bounds(rule: str) -> None:
    loss = np.random.default_rng(7).lognormal(7.0, 1.5, 1_000_000)
    got = K.divide(
        rule,
        loss,
        3e8,
        lower=4.0,
        upper=6000.0,
        parameter={"base_then_pro_rata": 500, "convenience_class": 5000, "minimum_payment": 20}.get(
            rule
        ),
    )
    assert got.awards.sum() == pytest.approx(3e8, rel=1e-12)
    cents = K.awards_to_cents(got, loss, 3e8, lower=4.0, upper=6000.0)
    assert int(cents.sum()) == 30_000_000_000
    assert (cents <= np.floor(np.minimum(loss, 6000.0) * 100 + 1e-6)).all()


def _misleading_sample(n: int) -> tuple[np.ndarray, ...]:
    """Every user a strided sample would see claims a thousand times more than the others."""
    b = np.ones(n)
    b[:: n // R._SAMPLE_USERS] = 1000.0
    return np.zeros(n), b, np.zeros(n), np.full(n, 50.0)


def _with_constant_users(n: int) -> tuple[np.ndarray, ...]:
    """A second stage: a third of the users have no slope and sit at, inside or below their
    bounds (base then pro rata's users whose claim is within the base)."""
    rng = np.random.default_rng(3)
    lo = rng.uniform(0.0, 10.0, n)
    hi = lo + rng.uniform(0.0, 100.0, n)
    b = hi - lo
    b[: n // 3] = 0.0
    a = lo.copy()
    a[: n // 9] = hi[: n // 9]  # constant at the cap
    a[n // 9 : 2 * n // 9] = (lo + hi)[n // 9 : 2 * n // 9] / 2  # constant inside
    return a, b, lo, hi


def _unbounded_above(n: int) -> tuple[np.ndarray, ...]:
    """Losses: intercepts of both signs, no caps."""
    rng = np.random.default_rng(4)
    return rng.normal(0.0, 50.0, n), rng.lognormal(0.0, 1.0, n), np.zeros(n), np.full(n, np.inf)


@pytest.mark.parametrize("make", [_misleading_sample, _with_constant_users, _unbounded_above])
def test_the_sampled_root_search_pays_the_target_exactly(make) -> None:  # type: ignore[no-untyped-def]
    # above _SAMPLE_MIN_USERS the search starts from a sample's bracket; the answer must not
    # depend on what the sample says
    n = 3 * R._SAMPLE_MIN_USERS
    a, b, lo, hi = make(n)
    for target_share in (0.01, 0.3, 0.97):
        least = float(np.clip(a, lo, hi).sum())  # at lambda = 0, nobody is above a floor
        most = float(np.clip(a + b * 1e4, lo, hi).sum())  # every cap reached (or far enough)
        target = least + target_share * (most - least)
        lam, x = R.affine_clip_root(a, b, lo, hi, target)
        assert x.sum() == pytest.approx(target, rel=1e-12)
        np.testing.assert_array_equal(x, np.clip(a + b * lam, lo, hi))
        # the small path (no sample) finds the same awards on the same users
        small = R._root_everywhere(a, b, lo, hi, target)
        np.testing.assert_allclose(np.clip(a + b * small, lo, hi), x, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("make", [_misleading_sample, _with_constant_users, _unbounded_above])
def test_a_given_guess_only_says_where_to_look_first(make) -> None:  # type: ignore[no-untyped-def]
    # a minimum payment's second round starts from the first round's root; a guess far off,
    # or with no margin at all, costs wider brackets and never changes the awards
    n = 3 * R._SAMPLE_MIN_USERS
    a, b, lo, hi = make(n)
    least = float(np.clip(a, lo, hi).sum())
    most = float(np.clip(a + b * 1e4, lo, hi).sum())
    target = least + 0.3 * (most - least)
    lam, x = R.affine_clip_root(a, b, lo, hi, target)
    for near in ((lam, 0.0), (lam * 1.001, 1e-12), (-5.0, 1.0), (1e6, 1e3), (0.0, math.inf)):
        got, y = R.affine_clip_root(a, b, lo, hi, target, near=near)
        assert y.sum() == pytest.approx(target, rel=1e-12), near
        np.testing.assert_allclose(y, x, rtol=1e-9, atol=1e-9)
