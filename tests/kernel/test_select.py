"""Branch-free selection and exact sums give NumPy's and math.fsum's answers bit for bit."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from allocator.kernel.select import pick, pick_max
from allocator.kernel.sums import BLOCK, fsum

any_floats = st.floats(allow_nan=True, allow_infinity=True, width=64)
finite = st.floats(allow_nan=False, allow_infinity=False, width=64)


@st.composite
def masked_pairs(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = draw(st.integers(0, 200))
    a = draw(hnp.arrays(np.float64, n, elements=any_floats))
    b = draw(hnp.arrays(np.float64, n, elements=any_floats))
    mask = draw(hnp.arrays(np.bool_, n))
    return mask, a, b


@given(case=masked_pairs(), scalar=any_floats)
def test_pick_is_where_bit_for_bit(case: tuple[np.ndarray, ...], scalar: float) -> None:
    mask, a, b = case
    for got, want in (
        (pick(mask, a, b), np.where(mask, a, b)),
        (pick(mask, a, scalar), np.where(mask, a, scalar)),
        (pick(mask, scalar, b), np.where(mask, scalar, b)),
    ):
        assert got.dtype == np.float64
        np.testing.assert_array_equal(got.view(np.int64), want.view(np.int64))


@given(case=masked_pairs(), initial=finite)
def test_pick_max_is_the_masked_max(case: tuple[np.ndarray, ...], initial: float) -> None:
    mask, a, _ = case
    a = np.nan_to_num(a)
    want = float(np.max(a, where=mask, initial=initial))
    assert pick_max(a, mask, initial) == want


@given(
    x=hnp.arrays(
        np.float64,
        st.integers(0, 300),
        elements=st.one_of(
            finite.filter(lambda v: abs(v) < 1e300),
            st.integers(0, 600_000).map(lambda c: c / 100),
        ),
    )
)
def test_fsum_is_math_fsum_bit_for_bit(x: np.ndarray) -> None:
    assert fsum(x) == math.fsum(x.tolist())


def test_fsum_of_a_million_amounts_in_cents() -> None:
    x = np.random.default_rng(1).integers(400, 600_000, 1_000_000) / 100
    assert fsum(x) == math.fsum(x.tolist())
    assert fsum(np.array([1e16, 1.0, -1e16])) == 1.0  # what a float sum loses
    assert math.isnan(fsum(np.array([1.0, np.nan])))


def test_fsum_over_many_blocks_of_every_size_and_sign() -> None:
    """Each block extracts with its own sigma: amounts over sixteen binary orders of either
    sign, in blocks of unequal ranges, and a last block shorter than the others."""
    rng = np.random.default_rng(7)
    n = 5 * BLOCK + 123
    x = rng.standard_normal(n) * 10.0 ** rng.uniform(-8.0, 8.0, n)
    x[BLOCK : 2 * BLOCK] *= 1e12  # one block far larger than the rest
    x[3 * BLOCK] = 0.0
    assert fsum(x) == math.fsum(x.tolist())
    assert fsum(np.concatenate([x, -x])) == 0.0
    x[-1] = np.inf  # in the last block only
    assert fsum(x) == math.inf
