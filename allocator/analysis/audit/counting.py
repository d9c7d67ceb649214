r"""Exact counts of ordering violations in :math:`O(n \log n)`, without enumerating pairs.

Counting (exact, :math:`O(n \log n)`)
    *Inversions.* The number of pairs :math:`p < q` with :math:`x_p > x_q` is counted by a
    bottom-up merge sort vectorised with numpy: at each of the :math:`\lceil\log_2 n\rceil`
    levels the sorted blocks of size :math:`s` are merged pairwise by one stable argsort of
    ``block_pair * R + x`` (timsort merges the two sorted runs of each block pair in linear
    time), and each element's merged position tells how many elements of the other half it
    passed, which gives every element's number of inverted partners. :math:`O(n)` work per
    level, :math:`O(n \log n)` in all.

    *Restricted counts.* The pairs kept by the ``bounds`` stage are those in one group of the
    features partition :math:`P` with equal bounds, or both strictly inside their bounds:
    :math:`C(\text{all}, P \wedge \text{bounds}) + C(\text{interior}, P) -
    C(\text{interior}, P \wedge \text{bounds})`, three grouped counts.

    *Monotonicity* is an inversion count: order users by (group, loss, voucher) and count
    inversions of ``group * R + rank(voucher)`` (ties in loss sort by voucher, so they never
    count; pairs of different groups never invert).

    *Envy* is a 3-D dominance count, done with three 2-D counts. Order users by (group, loss,
    ratio, voucher) to get positions :math:`P`; rank them by (group, ratio, position) to get
    :math:`Q` and by (group, descending voucher, descending position) to get :math:`C`. All three
    are strict total orders, and for any pair the three pairwise comparisons either all agree
    (the pair is *concordant in all three*) or exactly two disagree, so with :math:`N = n(n-1)/2`
    and :math:`T_{PQ}, T_{PC}, T_{QC}` the inversions between the orders,

    .. math::

        X = \frac{2N - T_{PQ} - T_{PC} - T_{QC}}{2}

    counts the pairs concordant in all three. Such a pair within one group is exactly an envy
    pair (the tie-breaks make equal ratios count as "at least", equal vouchers never count, and
    users equal in both loss and ratio never count); pairs of different groups are always
    concordant and are subtracted, :math:`N - \sum_g n_g(n_g-1)/2` of them. Three inversion
    counts: :math:`O(n \log n)`. The same identity per user gives each user's number of violating
    partners, which picks the example pairs without enumerating pairs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def inversions(
    x: np.ndarray, per_user: bool = False, *, dense: bool = False
) -> tuple[int, np.ndarray | None]:
    """Pairs ``p < q`` with ``x[p] > x[q]``: the total and, with ``per_user``, each element's
    number of partners in such pairs.

    Bottom-up merge sort in numpy (module docstring); ``x`` holds non-negative integers, ties
    allowed (``dense``: they are already ``0..n-1``-sized ranks). At each level a stable argsort
    merges the sorted halves of every block. An element of a right half moves left past exactly
    the left-half elements greater than it, and an element of a left half moves right past
    exactly the right-half elements smaller than it (equal values keep their order), so
    ``|new position - old position|`` is its number of inverted partners across the two
    halves, and each such pair is seen from both of its ends.
    """
    n = int(x.shape[0])
    per = np.zeros(n, dtype=np.int64) if per_user else None
    if n < 2:
        return 0, per
    a = np.asarray(x, dtype=np.int64)
    r = int(a.max()) + 1
    if not dense and (n // 2 + 1) * r >= 2**62:
        # keep block * r + value inside int64
        _, ranks = np.unique(a, return_inverse=True)
        a, r = ranks.astype(np.int64).ravel(), int(ranks.max()) + 1
    idx = np.arange(n, dtype=np.int64)
    orig = idx.copy() if per_user else None
    moved = np.empty(n, dtype=np.int64)
    twice = 0
    s, level = 1, 1
    key = np.empty(n, dtype=np.int64)
    while s < n:
        np.right_shift(idx, level, out=key)  # block number, block width 2**level
        key *= r
        key += a
        order = np.argsort(key, kind="stable")
        moved[order] = idx
        moved -= idx
        np.abs(moved, out=moved)
        twice += int(moved.sum())
        if per is not None and orig is not None:
            per[orig] += moved
            orig = orig[order]
        a = a[order]
        s, level = 2 * s, level + 1
    return twice // 2, per


def count_inversions(x: Sequence[int] | np.ndarray) -> int:
    """Number of pairs ``p < q`` with ``x[p] > x[q]`` (ties do not count), in O(n log n)."""
    x = np.asarray(x)
    if x.size < 2:
        return 0
    return inversions(dense_rank(x))[0]


def dense_rank(x: np.ndarray) -> np.ndarray:
    """Dense ranks ``0..R-1`` (equal values share a rank): integer sort keys for any dtype."""
    if x.size == 0:
        return np.zeros(0, dtype=np.int64)
    _, inverse = np.unique(x, return_inverse=True)
    return inverse.astype(np.int64).ravel()


def key_span(x: np.ndarray) -> int:
    return int(x.max()) + 1 if x.size else 1


def combine_keys(major: np.ndarray, minor: np.ndarray) -> np.ndarray:
    """One integer key ordering like ``(major, minor)`` (both non-negative integer ranks)."""
    key: np.ndarray = major * key_span(minor) + minor
    if key_span(major) * key_span(minor) >= 2**62:  # beyond int64: re-rank the pairs instead
        order = np.lexsort((minor, major))
        change = np.zeros(major.shape[0], dtype=bool)
        change[1:] = (np.diff(major[order]) != 0) | (np.diff(minor[order]) != 0)
        key = np.empty(major.shape[0], dtype=np.int64)
        key[order] = np.cumsum(change)
    return key


def group_ids(*keys: np.ndarray) -> np.ndarray:
    """Dense ids 0..G-1 of the distinct rows of ``keys`` (arrays of length n, any dtype)."""
    n = keys[0].shape[0] if keys else 0
    if n == 0:
        return np.zeros(n, dtype=np.int64)
    key = dense_rank(keys[0])
    for k in keys[1:]:
        key = dense_rank(combine_keys(key, dense_rank(k)))
    return key


def scatter(per_sorted: np.ndarray | None, order: np.ndarray) -> np.ndarray | None:
    if per_sorted is None:
        return None
    per = np.empty(order.shape[0], dtype=np.int64)
    per[order] = per_sorted
    return per


def monotonicity_counts(
    loss: np.ndarray, voucher: np.ndarray, groups: np.ndarray, per_user: bool = False
) -> tuple[int, np.ndarray | None]:
    """Pairs in one group with ``loss_j > loss_i`` and ``voucher_j < voucher_i``.

    All three arguments are non-negative integer ranks, ``groups`` dense (``0..G-1``).
    """
    n = loss.shape[0]
    if n < 2 or key_span(groups) == n:  # every group a single user: no pairs
        return 0, np.zeros(n, dtype=np.int64) if per_user else None
    order = np.lexsort((voucher, combine_keys(groups, loss)))
    key = groups[order] * key_span(voucher) + voucher[order]
    total, per_sorted = inversions(key, per_user)
    return total, scatter(per_sorted, order)


def rank_of(order: np.ndarray) -> np.ndarray:
    rank = np.empty(order.shape[0], dtype=np.int64)
    rank[order] = np.arange(order.shape[0], dtype=np.int64)
    return rank


def envy_counts(
    loss: np.ndarray,
    ratio: np.ndarray,
    voucher: np.ndarray,
    groups: np.ndarray,
    per_user: bool = False,
) -> tuple[int, np.ndarray | None]:
    """Envy pairs within groups (module docstring), by three inversion counts.

    All four arguments are non-negative integer ranks, ``groups`` dense (``0..G-1``).
    """
    n = loss.shape[0]
    if n < 2 or key_span(groups) == n:  # every group a single user: no pairs
        return 0, np.zeros(n, dtype=np.int64) if per_user else None
    # position P: by (group, loss, ratio, voucher)
    order = np.lexsort((combine_keys(ratio, voucher), combine_keys(groups, loss)))
    g, rr, vv = groups[order], ratio[order], voucher[order]
    # Q: by (group, ratio), ties by position (a stable sort of positions keeps them in order)
    q = rank_of(np.argsort(combine_keys(g, rr), kind="stable"))
    # C: by (group, descending voucher), ties by descending position: sort the reversed
    # sequence stably and map its indices back
    c_key = combine_keys(g, key_span(vv) - 1 - vv)
    c = rank_of(n - 1 - np.argsort(c_key[::-1], kind="stable"))
    by_q = np.argsort(q)  # elements (by position) in Q order
    t_pq, d_pq = inversions(q, per_user, dense=True)
    t_pc, d_pc = inversions(c, per_user, dense=True)
    t_qc, d_qc_q = inversions(c[by_q], per_user, dense=True)
    pairs = n * (n - 1) // 2
    concordant = (2 * pairs - t_pq - t_pc - t_qc) // 2
    sizes = np.bincount(g)
    cross = pairs - int((sizes * (sizes - 1) // 2).sum())
    per = None
    if per_user:
        assert d_pq is not None and d_pc is not None and d_qc_q is not None
        d_qc = np.empty(n, dtype=np.int64)
        d_qc[by_q] = d_qc_q
        # partners concordant in all three orders, less the users of other groups
        full = (n - 1) - (d_pq + d_pc + d_qc) // 2
        per = scatter(full - (n - sizes[g]), order)
    return int(concordant - cross), per


def groups_or_zero(groups: np.ndarray | None, n: int) -> np.ndarray:
    if groups is None:
        return np.zeros(n, dtype=np.int64)
    return group_ids(np.asarray(groups))


def count_monotonicity(
    loss: np.ndarray, voucher: np.ndarray, groups: np.ndarray | None = None
) -> int:
    """Exact count of pairs with ``loss_j > loss_i`` and ``voucher_j < voucher_i``.

    ``groups`` (any array of labels) restricts the count to pairs with equal labels.
    O(n log n).
    """
    loss = np.asarray(loss, dtype=np.float64)
    voucher = np.asarray(voucher)
    g = groups_or_zero(groups, loss.shape[0])
    return monotonicity_counts(dense_rank(loss), dense_rank(voucher), g)[0]


def count_envy(
    loss: np.ndarray, ratio: np.ndarray, voucher: np.ndarray, groups: np.ndarray | None = None
) -> int:
    """Exact count of pairs with ``loss_j >= loss_i``, ``ratio_j >= ratio_i`` (not both equal)
    and ``voucher_j < voucher_i``, optionally within equal ``groups``. O(n log n)."""
    loss = np.asarray(loss, dtype=np.float64)
    ratio = np.asarray(ratio, dtype=np.float64)
    g = groups_or_zero(groups, loss.shape[0])
    return envy_counts(dense_rank(loss), dense_rank(ratio), dense_rank(np.asarray(voucher)), g)[0]
