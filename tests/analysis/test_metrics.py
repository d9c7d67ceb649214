"""Metrics recomputed independently: Gini by its O(n^2) definition, Lorenz by hand, medians by
the standard library."""

from __future__ import annotations

import math
import statistics

import numpy as np
import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from allocator import names as N
from allocator.analysis.metrics import LOSS_BANDS, gini, lorenz, moved, summary, top_share

values = st.lists(
    st.floats(0.0, 1e7, allow_nan=False, allow_infinity=False), min_size=1, max_size=60
)
cents_lists = st.lists(st.integers(0, 600_000), min_size=1, max_size=60)


def gini_by_definition(x: list[float]) -> float:
    n, mean = len(x), sum(x) / len(x)
    if mean == 0:
        return 0.0
    return sum(abs(a - b) for a in x for b in x) / (2 * n * n * mean)


@given(values)
def test_gini_is_the_mean_absolute_difference(x: list[float]) -> None:
    assert gini(x) == pytest.approx(gini_by_definition(x), abs=1e-9)


@given(values, st.floats(0.01, 1e3), st.permutations(range(60)))
def test_gini_is_scale_and_order_invariant(x: list[float], scale: float, perm: list[int]) -> None:
    shuffled = [x[i] for i in perm if i < len(x)]
    assert gini(shuffled) == pytest.approx(gini(x), abs=1e-12)
    assert gini([scale * v for v in x]) == pytest.approx(gini(x), abs=1e-9)


def test_gini_extremes() -> None:
    assert gini([5.0] * 7) == 0.0
    assert gini([0.0] * 3) == 0.0
    assert gini([0, 0, 0, 10]) == pytest.approx(1 - 1 / 4)
    with pytest.raises(ValueError):
        gini([])
    with pytest.raises(ValueError):
        gini([1.0, -1.0])
    with pytest.raises(ValueError):
        gini([1.0, math.inf])


@given(values)
def test_lorenz_endpoints_monotone_convex_and_area(x: list[float]) -> None:
    pop, share = lorenz(x)
    n = len(x)
    assert pop.shape == share.shape == (n + 1,)
    assert (pop[0], share[0], pop[-1], share[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert np.allclose(np.diff(pop), 1 / n)
    steps = np.diff(share)
    assert np.all(steps >= -1e-12)  # non-decreasing
    assert np.all(np.diff(steps) >= -1e-9)  # convex: each step at least the one before
    assert np.all(share <= pop + 1e-12)  # never above the line of equality
    # Hand-computed points: share of the k smallest values.
    total = sum(x)
    if total > 0:
        srt = sorted(x)
        for k in range(n + 1):
            assert share[k] == pytest.approx(sum(srt[:k]) / total, abs=1e-9)
    # Gini is one minus twice the area under the curve (trapezoids).
    area = float(np.sum((share[1:] + share[:-1]) / 2 * np.diff(pop)))
    assert gini(x) == pytest.approx(1 - 2 * area, abs=1e-9)


@given(values)
def test_top_decile_share_against_the_sorted_values(x: list[float]) -> None:
    share = top_share(x, 0.1)
    assert 0.0 <= share <= 1.0 + 1e-12
    total = sum(x)
    if total > 0 and len(x) % 10 == 0:
        k = len(x) // 10
        assert share == pytest.approx(sum(sorted(x)[-k:]) / total, abs=1e-9)
    if total > 0:
        assert share >= 0.1 - 1e-9  # the best-paid tenth gets at least a tenth


def alloc_frame(
    user_ids: list[int], cents: list[int], loss: list[float] | None = None
) -> pl.DataFrame:
    loss = loss if loss is not None else [1000.0] * len(cents)
    return pl.DataFrame(
        {
            N.USER_ID: user_ids,
            N.VOUCHER_CENTS: cents,
            N.LOSS_USD: loss,
            N.BOUND: [N.BOUND_INTERIOR] * len(cents),
        },
        schema={
            N.USER_ID: pl.Int64,
            N.VOUCHER_CENTS: pl.Int64,
            N.LOSS_USD: pl.Float64,
            N.BOUND: pl.String,
        },
    )


def moved_by_hand(a: dict[int, int], b: dict[int, int], threshold_usd: float) -> int:
    count = 0
    for uid in set(a) | set(b):
        if uid not in a or uid not in b or abs(a[uid] - b[uid]) / 100 > threshold_usd:
            count += 1
    return count


@given(
    st.dictionaries(st.integers(0, 40), st.integers(0, 10_000), max_size=30),
    st.dictionaries(st.integers(0, 40), st.integers(0, 10_000), max_size=30),
    st.sampled_from([0.0, 0.01, 0.5, 1.0, 25.0]),
)
def test_moved_matches_a_hand_count(a: dict[int, int], b: dict[int, int], threshold: float) -> None:
    fa = alloc_frame(list(a), list(a.values()))
    fb = alloc_frame(list(b), list(b.values()))
    expected = moved_by_hand(a, b, threshold)
    assert moved(fa, fb, threshold_usd=threshold) == expected
    assert moved(fb, fa, threshold_usd=threshold) == expected
    assert moved(fa, fa, threshold_usd=threshold) == 0


def test_moved_threshold_is_strict_and_one_sided_users_count() -> None:
    a = alloc_frame([1, 2, 3], [1000, 1000, 1000])
    b = alloc_frame([1, 2, 4], [1100, 1101, 5])
    # user 1 moves exactly 1.00 (not more than 1.00), user 2 moves 1.01, 3 and 4 are in one only.
    assert moved(a, b, threshold_usd=1.0) == 3
    assert moved(a, b, threshold_usd=0.0) == 4
    assert moved(a, b, threshold_usd=1e9) == 2
    with pytest.raises(ValueError):
        moved(a, b, threshold_usd=-1.0)


@given(
    st.lists(
        st.tuples(st.integers(400, 600_000), st.floats(1.0, 1e6, allow_nan=False)),
        min_size=1,
        max_size=80,
    ),
    st.integers(0, 10**9),
)
def test_summary_recomputed(rows: list[tuple[int, float]], slack: int) -> None:
    cents = [c for c, _ in rows]
    loss = [x for _, x in rows]
    labels = [
        N.BOUND_FLOOR if c == 400 else N.BOUND_CAP if c == 600_000 else N.BOUND_INTERIOR
        for c in cents
    ]
    frame = alloc_frame(list(range(len(rows))), cents, loss).with_columns(
        pl.Series(N.BOUND, labels)
    )
    budget = sum(cents) + slack
    s = summary(frame, budget_cents=budget, shadow_price=0.25)

    usd = [c / 100 for c in cents]
    assert s["eligible"] == len(rows)
    assert s["paid_cents"] == sum(cents) and s["unspent_cents"] == slack
    assert s["paid_usd"] == pytest.approx(sum(cents) / 100) and s["unspent_usd"] == pytest.approx(
        slack / 100
    )
    assert s["n_floor"] == labels.count(N.BOUND_FLOOR) and s["n_cap"] == labels.count(N.BOUND_CAP)
    assert s["n_interior"] == labels.count(N.BOUND_INTERIOR)
    assert s["mean_voucher"] == pytest.approx(statistics.fmean(usd))
    assert s["median_voucher"] == pytest.approx(statistics.median(usd))
    assert s["max_voucher"] == max(usd)
    # p90 by linear interpolation between order statistics.
    srt, pos = sorted(usd), 0.9 * (len(usd) - 1)
    lo = math.floor(pos)
    p90 = srt[lo] + (srt[min(lo + 1, len(srt) - 1)] - srt[lo]) * (pos - lo)
    assert s["p90_voucher"] == pytest.approx(p90)
    coverage = [v / x for v, x in zip(usd, loss)]
    assert s["median_coverage"] == pytest.approx(statistics.median(coverage))
    for label, lo_usd, hi_usd in LOSS_BANDS:
        band = [v / x for v, x in zip(usd, loss) if lo_usd <= x < hi_usd]
        got = s["median_coverage_by_band"][label]
        assert (got is None) if not band else got == pytest.approx(statistics.median(band))
    assert s["gini"] == pytest.approx(gini_by_definition(usd), abs=1e-9)
    assert s["top_decile_share"] == pytest.approx(top_share(usd), abs=1e-12)
    assert s["shadow_price"] == 0.25


def test_loss_bands_partition_the_positive_losses() -> None:
    assert LOSS_BANDS[0][1] == 0.0 and LOSS_BANDS[-1][2] == math.inf
    for (_, _, hi), (_, lo, _) in zip(LOSS_BANDS, LOSS_BANDS[1:]):
        assert hi == lo
    assert [b[0] for b in LOSS_BANDS] == ["<100", "100-1k", "1k-10k", "10k-100k", ">=100k"]


def test_summary_of_no_users_and_zero_losses() -> None:
    s = summary(alloc_frame([], []), budget_cents=500, shadow_price=None)
    assert s["eligible"] == 0 and s["unspent_cents"] == 500 and s["paid_usd"] == 0.0
    assert s["gini"] is None and s["median_voucher"] is None and s["shadow_price"] is None
    assert all(v is None for v in s["median_coverage_by_band"].values())
    # Users without a positive loss have no coverage but still count everywhere else.
    s = summary(alloc_frame([1, 2], [400, 800], [0.0, 100.0]), budget_cents=1200, shadow_price=1.0)
    assert s["median_coverage"] == pytest.approx(8.0 / 100.0) and s["eligible"] == 2
    # Every value is a plain scalar except the band dict, so sweep can tabulate rows.
    assert all(
        isinstance(v, (int, float, type(None)))
        for k, v in s.items()
        if k != "median_coverage_by_band"
    )
