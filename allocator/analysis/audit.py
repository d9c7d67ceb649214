r"""Fairness audit of an allocation: inequality, coverage by loss size, and ordering violations.

Everything is computed from ``allocations.parquet`` (and, for the attribution of violations, the
run's objective), so anyone holding a run directory can re-check it.

Inequality and coverage
    Gini coefficient and Lorenz curve of the vouchers (:mod:`allocator.analysis.metrics`), and per loss
    band the count, median, 10th and 90th percentile of the coverage :math:`v_i / L_i`.

Ordering violations
    With loss :math:`L`, loss ratio :math:`r` and voucher :math:`v` (integer cents), two kinds
    of pairs :math:`(i, j)` are counted exactly:

    * **monotonicity**: :math:`L_j > L_i` and :math:`v_j < v_i` (a larger loss, a smaller voucher);
    * **envy**: :math:`L_j \ge L_i`, :math:`r_j \ge r_i`, not both equal, and :math:`v_j < v_i`
      (user :math:`j` lost at least as much, and at least as large a share of net assets, yet
      receives less than :math:`i`).

Attribution
    In a correct run such a pair can only come from a documented factor. Vouchers are
    :math:`v = \operatorname{clip}((w/\lambda_s)^{1/\alpha}, \ell, h)` rounded to cents, which is
    non-decreasing in the weight :math:`w` for users with the same bounds and the same segment
    price :math:`\lambda_s`; rounding gives a user with a higher weight and the same bounds
    never less, and breaks exact ties by the larger loss, then the smaller user id. The weight
    :math:`\log w = a\log L + b\log\min(r,\bar r) + \sum_k c_k x_k [+ (\alpha-1)\log L]` is
    non-decreasing in :math:`L` and :math:`r` when the exponents are :math:`\ge 0`. So each raw
    count is split along a cascade of restrictions, each stage counting the pairs that the
    previous stage kept but this one drops:

    1. ``segment``: their segments (hence segment prices) differ;
    2. ``features``: the non-loss/ratio part of their log-weight,
       :math:`\sum_k c_k x_k = \log w - (\text{loss, ratio and coverage factors})`, differs
       (needs the objective; without it every user is assumed to have the same features);
    3. ``bounds``: their cent bounds (``lower_cents``, ``upper_cents``) differ and at least one
       of the two is paid a bound. Two users strictly inside their bounds are paid
       :math:`(w/\lambda_s)^{1/\alpha}` whatever the bounds are, so they stay in the check:
       with a coverage cap nearly every user has bounds of their own, and keeping only pairs
       with equal bounds would leave almost nothing to check;
    4. monotonicity only, ``ratio``: :math:`r_j < r_i`, the ratio lowers :math:`j`'s weight
       (skipped when the objective is known and its ratio exponent is 0);
    5. envy only, ``rounding_tie``: equal loss and equal weight, so equal continuous vouchers,
       and the cent went to the smaller user id.

    The order only decides which factor a pair is credited to when several apply; the
    unexplained pairs are the same in any order.

    What remains is **unexplained** and must be zero when the weights are monotone
    (``expected_zero``: effective loss exponent and ratio exponent :math:`\ge 0`).

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

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import polars as pl

from allocator import names as N
from allocator.analysis import metrics
from allocator.errors import InputError
from allocator.jsonsafe import json_safe
from allocator.settings.models import ObjectiveSpec

__all__ = [
    "LORENZ_POINTS",
    "MAX_EXAMPLES",
    "Audit",
    "BandCoverage",
    "ViolationPair",
    "Violations",
    "audit",
    "count_envy",
    "count_inversions",
    "count_monotonicity",
    "weights_monotone",
]

#: Points of the Lorenz curve kept in the audit (population shares 0, 1%, ..., 100%).
LORENZ_POINTS = 101
#: Example pairs shown per violation kind.
MAX_EXAMPLES = 5
#: Two users' feature parts of the log-weight are equal when they differ by at most this
#: (relative to 1 + |value|): floating noise of ``log w`` minus its loss and ratio factors.
FEATURE_RTOL = 1e-9

MONOTONICITY = "monotonicity"
ENVY = "envy"
UNEXPLAINED = "unexplained"
_DEFINITIONS = {
    MONOTONICITY: "pairs (i, j) with loss_j > loss_i and voucher_j < voucher_i",
    ENVY: (
        "pairs (i, j) with loss_j >= loss_i and loss_ratio_j >= loss_ratio_i (not both equal) "
        "and voucher_j < voucher_i"
    ),
}
_FACTOR_TEXT = {
    "bounds": "different bounds (floor, cap or coverage cap), one of the two paid a bound",
    "segment": "different segments, hence different segment prices",
    "features": "different non-loss/ratio weight features",
    "ratio": "the larger loss came with a smaller loss ratio",
    "rounding_tie": "equal loss and weight; the cent went to the smaller user id",
    UNEXPLAINED: "no documented factor",
}


# --------------------------------------------------------------------------------------------
# counting kernels
# --------------------------------------------------------------------------------------------


def _inversions(
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
    return _inversions(_rank(x))[0]


def _rank(x: np.ndarray) -> np.ndarray:
    """Dense ranks ``0..R-1`` (equal values share a rank): integer sort keys for any dtype."""
    if x.size == 0:
        return np.zeros(0, dtype=np.int64)
    _, inverse = np.unique(x, return_inverse=True)
    return inverse.astype(np.int64).ravel()


def _span(x: np.ndarray) -> int:
    return int(x.max()) + 1 if x.size else 1


def _combine(major: np.ndarray, minor: np.ndarray) -> np.ndarray:
    """One integer key ordering like ``(major, minor)`` (both non-negative integer ranks)."""
    key = major * _span(minor) + minor
    if _span(major) * _span(minor) >= 2**62:  # beyond int64: re-rank the pairs instead
        order = np.lexsort((minor, major))
        change = np.zeros(major.shape[0], dtype=bool)
        change[1:] = (np.diff(major[order]) != 0) | (np.diff(minor[order]) != 0)
        key = np.empty(major.shape[0], dtype=np.int64)
        key[order] = np.cumsum(change)
    return key


def _group_ids(*keys: np.ndarray) -> np.ndarray:
    """Dense ids 0..G-1 of the distinct rows of ``keys`` (arrays of length n, any dtype)."""
    n = keys[0].shape[0] if keys else 0
    if n == 0:
        return np.zeros(n, dtype=np.int64)
    key = _rank(keys[0])
    for k in keys[1:]:
        key = _rank(_combine(key, _rank(k)))
    return key


def _scatter(per_sorted: np.ndarray | None, order: np.ndarray) -> np.ndarray | None:
    if per_sorted is None:
        return None
    per = np.empty(order.shape[0], dtype=np.int64)
    per[order] = per_sorted
    return per


def _monotonicity(
    loss: np.ndarray, voucher: np.ndarray, groups: np.ndarray, per_user: bool = False
) -> tuple[int, np.ndarray | None]:
    """Pairs in one group with ``loss_j > loss_i`` and ``voucher_j < voucher_i``.

    All three arguments are non-negative integer ranks, ``groups`` dense (``0..G-1``).
    """
    n = loss.shape[0]
    if n < 2 or _span(groups) == n:  # every group a single user: no pairs
        return 0, np.zeros(n, dtype=np.int64) if per_user else None
    order = np.lexsort((voucher, _combine(groups, loss)))
    key = groups[order] * _span(voucher) + voucher[order]
    total, per_sorted = _inversions(key, per_user)
    return total, _scatter(per_sorted, order)


def _rank_of(order: np.ndarray) -> np.ndarray:
    rank = np.empty(order.shape[0], dtype=np.int64)
    rank[order] = np.arange(order.shape[0], dtype=np.int64)
    return rank


def _envy(
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
    if n < 2 or _span(groups) == n:  # every group a single user: no pairs
        return 0, np.zeros(n, dtype=np.int64) if per_user else None
    # position P: by (group, loss, ratio, voucher)
    order = np.lexsort((_combine(ratio, voucher), _combine(groups, loss)))
    g, rr, vv = groups[order], ratio[order], voucher[order]
    # Q: by (group, ratio), ties by position (a stable sort of positions keeps them in order)
    q = _rank_of(np.argsort(_combine(g, rr), kind="stable"))
    # C: by (group, descending voucher), ties by descending position: sort the reversed
    # sequence stably and map its indices back
    c_key = _combine(g, _span(vv) - 1 - vv)
    c = _rank_of(n - 1 - np.argsort(c_key[::-1], kind="stable"))
    by_q = np.argsort(q)  # elements (by position) in Q order
    t_pq, d_pq = _inversions(q, per_user, dense=True)
    t_pc, d_pc = _inversions(c, per_user, dense=True)
    t_qc, d_qc_q = _inversions(c[by_q], per_user, dense=True)
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
        per = _scatter(full - (n - sizes[g]), order)
    return int(concordant - cross), per


def _groups_or_zero(groups: np.ndarray | None, n: int) -> np.ndarray:
    if groups is None:
        return np.zeros(n, dtype=np.int64)
    return _group_ids(np.asarray(groups))


def count_monotonicity(
    loss: np.ndarray, voucher: np.ndarray, groups: np.ndarray | None = None
) -> int:
    """Exact count of pairs with ``loss_j > loss_i`` and ``voucher_j < voucher_i``.

    ``groups`` (any array of labels) restricts the count to pairs with equal labels.
    O(n log n).
    """
    loss = np.asarray(loss, dtype=np.float64)
    voucher = np.asarray(voucher)
    g = _groups_or_zero(groups, loss.shape[0])
    return _monotonicity(_rank(loss), _rank(voucher), g)[0]


def count_envy(
    loss: np.ndarray, ratio: np.ndarray, voucher: np.ndarray, groups: np.ndarray | None = None
) -> int:
    """Exact count of pairs with ``loss_j >= loss_i``, ``ratio_j >= ratio_i`` (not both equal)
    and ``voucher_j < voucher_i``, optionally within equal ``groups``. O(n log n)."""
    loss = np.asarray(loss, dtype=np.float64)
    ratio = np.asarray(ratio, dtype=np.float64)
    g = _groups_or_zero(groups, loss.shape[0])
    return _envy(_rank(loss), _rank(ratio), _rank(np.asarray(voucher)), g)[0]


# --------------------------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BandCoverage:
    """Coverage ``voucher / loss`` of the users whose loss is in ``[low_usd, high_usd)``."""

    label: str
    low_usd: float
    high_usd: float
    count: int
    median: float | None
    p10: float | None
    p90: float | None


@dataclass(frozen=True)
class ViolationPair:
    """User ``i`` receives more than user ``j`` although ``j`` lost at least as much."""

    user_i: int
    loss_i: float
    ratio_i: float
    voucher_cents_i: int
    user_j: int
    loss_j: float
    ratio_j: float
    voucher_cents_j: int
    explained_by: str


@dataclass(frozen=True)
class Violations:
    """Counts of one kind of violation: raw, split by explaining factor, and unexplained."""

    kind: str
    definition: str
    raw: int
    by_factor: tuple[tuple[str, int], ...]
    unexplained: int
    expected_zero: bool | None
    examples: tuple[ViolationPair, ...]
    unexplained_examples: tuple[ViolationPair, ...]

    @property
    def ok(self) -> bool:
        """False only when unexplained violations exist where the model forbids them."""
        return not (self.expected_zero and self.unexplained > 0)


@dataclass(frozen=True)
class Audit:
    """The fairness audit of one allocation (see the module docstring)."""

    users: int
    paid_cents: int
    gini: float | None
    top_decile_share: float | None
    lorenz_population: tuple[float, ...]
    lorenz_share: tuple[float, ...]
    coverage_by_band: tuple[BandCoverage, ...]
    monotonicity: Violations
    envy: Violations
    notes: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return self.monotonicity.ok and self.envy.ok

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (no NaN or infinity: an infinite ratio is the string ``"inf"``)."""
        out = asdict(self)
        for kind in (MONOTONICITY, ENVY):
            out[kind]["by_factor"] = dict(getattr(self, kind).by_factor)
        out["ok"] = self.ok
        return json_safe(out)

    def lines(self) -> list[str]:
        """Human-readable report."""
        out = [f"users {self.users:,}, paid {self.paid_cents / 100:,.2f} USD"]
        if self.gini is not None:
            out.append(
                f"Gini {self.gini:.4f}; top decile share {self.top_decile_share:.4f}; "
                f"Lorenz at 50% of users {_lorenz_at(self, 0.5):.4f}, at 90% {_lorenz_at(self, 0.9):.4f}"
            )
        out.append("coverage (voucher / loss) by loss band:")
        out.append(f"  {'band':<10} {'users':>8} {'p10':>10} {'median':>10} {'p90':>10}")
        for b in self.coverage_by_band:
            out.append(
                f"  {b.label:<10} {b.count:>8,} {_pct(b.p10):>10} {_pct(b.median):>10} {_pct(b.p90):>10}"
            )
        for v in (self.monotonicity, self.envy):
            out.append(f"{v.kind}: {v.definition}")
            out.append(f"  raw {v.raw:,}")
            for name, count in v.by_factor:
                out.append(f"  explained by {name} ({_FACTOR_TEXT[name]}): {count:,}")
            verdict = {
                True: "must be 0",
                False: "allowed: weights not monotone",
                None: "objective unknown",
            }
            out.append(f"  unexplained {v.unexplained:,} ({verdict[v.expected_zero]})")
            for ex in v.examples:
                out.append("    e.g. " + _pair_text(ex))
            for ex in v.unexplained_examples:
                out.append("    UNEXPLAINED " + _pair_text(ex))
        out.extend(f"note: {n}" for n in self.notes)
        out.append("audit: " + ("ok" if self.ok else "FAILED (unexplained violations)"))
        return out


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def _lorenz_at(a: Audit, share: float) -> float:
    return float(np.interp(share, a.lorenz_population, a.lorenz_share))


def _ratio_text(r: float) -> str:
    return "inf" if math.isinf(r) else f"{r:.4f}"


def _pair_text(p: ViolationPair) -> str:
    return (
        f"user {p.user_i} (loss {p.loss_i:,.2f}, ratio {_ratio_text(p.ratio_i)}) gets "
        f"{p.voucher_cents_i / 100:,.2f} > user {p.user_j} (loss {p.loss_j:,.2f}, ratio "
        f"{_ratio_text(p.ratio_j)}) gets {p.voucher_cents_j / 100:,.2f} [{p.explained_by}]"
    )


# --------------------------------------------------------------------------------------------
# the audit
# --------------------------------------------------------------------------------------------


def weights_monotone(objective: ObjectiveSpec) -> bool:
    """Whether the weight is non-decreasing in loss and loss ratio (both exponents >= 0, the
    loss counted with its coverage-form exponent ``alpha - 1``)."""
    loss_exp = objective.loss_exponent
    if objective.form == "coverage":
        loss_exp += objective.alpha - 1.0
    return loss_exp >= 0 and objective.ratio_exponent >= 0


@dataclass(frozen=True, eq=False)
class _Columns:
    user_id: np.ndarray
    cents: np.ndarray
    loss: np.ndarray
    ratio: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    segment: np.ndarray
    weight: np.ndarray


def _columns(allocations: pl.DataFrame) -> _Columns:
    need = [N.USER_ID, N.LOSS_USD, N.LOSS_RATIO, "lower_cents", "upper_cents", N.WEIGHT]
    missing = [c for c in need if c not in allocations.columns]
    if N.VOUCHER_CENTS not in allocations.columns and N.VOUCHER_USD not in allocations.columns:
        missing.append(N.VOUCHER_CENTS)
    if missing:
        raise InputError(
            f"{N.ALLOCATIONS_FILE}: missing column(s) {', '.join(missing)} needed by the audit; "
            f"found {', '.join(allocations.columns) or 'none'}."
        )
    for col in (N.LOSS_USD, N.LOSS_RATIO, N.WEIGHT):
        values = allocations[col].cast(pl.Float64)
        bad = values.is_null() | values.is_nan()
        if bad.any():
            row = allocations.filter(bad).row(0, named=True)
            raise InputError(
                f"{N.ALLOCATIONS_FILE}: column {col} must be a number for every user; "
                f"{int(bad.sum())} row(s) are empty or NaN, e.g. {row}."
            )
    try:
        cents = metrics._voucher_cents(allocations)
    except pl.exceptions.PolarsError as exc:  # e.g. a voucher_usd too large for Int64 cents
        raise InputError(
            f"{N.ALLOCATIONS_FILE}: the vouchers cannot be read as whole cents ({exc})."
        ) from None
    for col, values in (
        (N.VOUCHER_CENTS, cents),
        ("lower_cents", allocations["lower_cents"]),
        ("upper_cents", allocations["upper_cents"]),
    ):
        bad = values.is_null() | (values < 0).fill_null(False)
        if bad.any():
            row = allocations.filter(bad).row(0, named=True)
            raise InputError(
                f"{N.ALLOCATIONS_FILE}: column {col} must be a non-negative number of cents for "
                f"every user; {int(bad.sum())} row(s) are empty or negative, e.g. {row}."
            )
    dup = allocations[N.USER_ID].is_duplicated()
    if dup.any():
        row = allocations.filter(dup).row(0, named=True)
        times = int((allocations[N.USER_ID] == row[N.USER_ID]).sum())
        raise InputError(
            f"{N.ALLOCATIONS_FILE}: user {row[N.USER_ID]} appears {times} times; each user is "
            f"paid once ({int(dup.sum())} row(s) share a user id), e.g. {row}."
        )
    if N.SEGMENT in allocations.columns:
        segment = allocations[N.SEGMENT].cast(pl.String).fill_null("").to_numpy().astype(str)
    else:
        segment = np.full(allocations.height, "", dtype=str)
    return _Columns(
        user_id=allocations[N.USER_ID].cast(pl.Int64).to_numpy(),
        cents=cents.to_numpy().astype(np.int64),
        loss=allocations[N.LOSS_USD].cast(pl.Float64).to_numpy(),
        ratio=allocations[N.LOSS_RATIO].cast(pl.Float64).to_numpy(),
        lower=allocations["lower_cents"].cast(pl.Int64).to_numpy(),
        upper=allocations["upper_cents"].cast(pl.Int64).to_numpy(),
        segment=segment,
        weight=allocations[N.WEIGHT].cast(pl.Float64).to_numpy(),
    )


def _feature_part(
    allocations: pl.DataFrame, cols: _Columns, objective: ObjectiveSpec
) -> np.ndarray:
    """Cluster ids of :math:`\\log w -` (loss, ratio and coverage factors): the feature part."""
    from allocator.vouchers.weights import LOG_WEIGHT, weight_factors

    base = weight_factors(
        allocations.select(N.USER_ID, N.LOSS_USD, N.LOSS_RATIO), replace(objective, features=())
    )[LOG_WEIGHT].to_numpy()
    with np.errstate(divide="ignore"):
        part = np.log(cols.weight) - base
    order = np.argsort(part, kind="stable")
    sp = part[order]
    change = np.zeros(sp.shape[0], dtype=bool)
    change[1:] = np.diff(sp) > FEATURE_RTOL * (1.0 + np.abs(sp[1:]))
    ids = np.empty(sp.shape[0], dtype=np.int64)
    ids[order] = np.cumsum(change)
    return ids


def _coverage(
    cols: _Columns, bands: Sequence[tuple[str, float, float]]
) -> tuple[BandCoverage, ...]:
    covered = cols.loss > 0
    loss = cols.loss[covered]
    cov = cols.cents[covered] / 100.0 / loss
    out = []
    for label, lo, hi in bands:
        x = cov[(loss >= lo) & (loss < hi)]
        q = np.percentile(x, [10, 50, 90]) if x.size else [None] * 3
        out.append(
            BandCoverage(
                label=label,
                low_usd=float(lo),
                high_usd=float(hi),
                count=int(x.size),
                median=None if q[1] is None else float(q[1]),
                p10=None if q[0] is None else float(q[0]),
                p90=None if q[2] is None else float(q[2]),
            )
        )
    return tuple(out)


class _Counter:
    """Violation counts of each kind on all users or the interior ones, per grouping, cached.

    Per-user counts (for examples) cost about twice as much as totals and are computed only
    when asked for.
    """

    def __init__(self, cols: _Columns, interior: np.ndarray) -> None:
        self.subsets = {"all": np.arange(cols.cents.shape[0]), "interior": np.flatnonzero(interior)}
        self.n = cols.cents.shape[0]
        # integer ranks once: every sort below is on integer keys
        self.loss = _rank(cols.loss)
        self.ratio = _rank(cols.ratio)
        self.cents = _rank(cols.cents)
        self.weight = _rank(cols.weight)
        self.cache: dict[tuple[str, str, str, bool], tuple[int, np.ndarray | None]] = {}

    def count(
        self, kind: str, subset: str, grouping: tuple[str, np.ndarray], per_user: bool = False
    ) -> tuple[int, np.ndarray | None]:
        name, groups = grouping
        key = (kind, subset, name, per_user)
        if key not in self.cache:
            idx = self.subsets[subset]
            loss, ratio, cents = self.loss[idx], self.ratio[idx], self.cents[idx]
            g = _rank(groups[idx])  # dense group ids within the subset
            if kind == MONOTONICITY:
                total, per = _monotonicity(loss, cents, g, per_user)
            elif kind == ENVY:
                total, per = _envy(loss, ratio, cents, g, per_user)
            elif kind == "equal_loss":  # equal loss, ratio_j > ratio_i, voucher_j < voucher_i
                total, per = _monotonicity(ratio, cents, _group_ids(g, loss), per_user)
            else:  # the same with equal weights too: a cent tie-break
                g = _group_ids(g, loss, self.weight[idx])
                total, per = _monotonicity(ratio, cents, g, per_user)
            full = None
            if per is not None:
                full = np.zeros(self.n, dtype=np.int64)
                full[idx] = per
            self.cache[key] = (total, full)
            if per_user:
                self.cache[(kind, subset, name, False)] = (total, None)
        return self.cache[key]


@dataclass(frozen=True, eq=False)
class _ExampleFinder:
    """Example pairs of one kind, from per-user violation counts (no enumeration of pairs)."""

    kind: str
    cols: _Columns
    levels: dict[str, np.ndarray]
    interior: np.ndarray
    ratio_stage: bool
    limit: int

    def _partners(self, k: int, restricted: bool) -> np.ndarray:
        """Users forming a violation with user ``k``, O(n); ``restricted``: in the same
        features group with equal bounds or both interior."""
        L, r, v, w = self.cols.loss, self.cols.ratio, self.cols.cents, self.cols.weight
        if self.kind == MONOTONICITY:
            k_poorer = (L[k] > L) & (v > v[k])  # k lost more and got less
            k_richer = (L[k] < L) & (v < v[k])
            if restricted and self.ratio_stage:  # the ratio must not explain it
                k_poorer &= r <= r[k]
                k_richer &= r >= r[k]
            mask = k_poorer | k_richer
        else:
            both_equal = (L[k] == L) & (r == r[k])
            k_poorer = (L[k] >= L) & (r <= r[k]) & (v > v[k])
            k_richer = (L[k] <= L) & (r >= r[k]) & (v < v[k])
            mask = (k_poorer | k_richer) & ~both_equal
            if restricted:  # nor a cent tie-break between equal losses and weights
                mask &= ~((L[k] == L) & (w == w[k]))
        if restricted:
            bounds = self.levels["bounds"]
            mask &= self.levels["features"] == self.levels["features"][k]
            mask &= (bounds == bounds[k]) | (self.interior & self.interior[k])
        return np.flatnonzero(mask)

    def _pair(self, a: int, b: int) -> ViolationPair:
        c = self.cols
        # i is the user paid more, j the one who lost at least as much yet got less.
        i, j = (a, b) if c.cents[a] > c.cents[b] else (b, a)
        explained_by = UNEXPLAINED
        if self.levels["segment"][i] != self.levels["segment"][j]:
            explained_by = "segment"
        elif self.levels["features"][i] != self.levels["features"][j]:
            explained_by = "features"
        elif self.levels["bounds"][i] != self.levels["bounds"][j] and not (
            self.interior[i] and self.interior[j]
        ):
            explained_by = "bounds"
        elif self.kind == MONOTONICITY and self.ratio_stage and c.ratio[j] < c.ratio[i]:
            explained_by = "ratio"
        elif self.kind == ENVY and c.loss[i] == c.loss[j] and c.weight[i] == c.weight[j]:
            explained_by = "rounding_tie"
        return ViolationPair(
            user_i=int(c.user_id[i]),
            loss_i=float(c.loss[i]),
            ratio_i=float(c.ratio[i]),
            voucher_cents_i=int(c.cents[i]),
            user_j=int(c.user_id[j]),
            loss_j=float(c.loss[j]),
            ratio_j=float(c.ratio[j]),
            voucher_cents_j=int(c.cents[j]),
            explained_by=explained_by,
        )

    def find(self, per_user: np.ndarray | None, *, restricted: bool) -> tuple[ViolationPair, ...]:
        """Up to ``limit`` pairs with no user in two of them, from the users in the most
        violations (then the smaller id), each with the partner furthest away in cents;
        ``restricted`` finds unexplained pairs only."""
        c = self.cols
        if per_user is None:
            return ()
        involved = np.flatnonzero(per_user > 0)
        if involved.size == 0 or self.limit <= 0:
            return ()
        involved = involved[np.lexsort((c.user_id[involved], -per_user[involved]))]
        used: set[int] = set()  # each user in one example at most, for variety
        out: list[ViolationPair] = []
        for k in involved[: 20 * self.limit]:
            if int(k) in used:
                continue
            partners = self._partners(int(k), restricted)
            gap = np.abs(c.cents[partners] - c.cents[k])
            for p in partners[np.lexsort((c.user_id[partners], -gap))]:
                if int(p) in used:
                    continue
                out.append(self._pair(int(k), int(p)))
                used.update((int(k), int(p)))
                break
            if len(out) >= self.limit:
                break
        return tuple(out)


def audit(
    allocations: pl.DataFrame,
    *,
    bands: Sequence[tuple[str, float, float]] = metrics.LOSS_BANDS,
    objective: ObjectiveSpec | None = None,
    max_examples: int = MAX_EXAMPLES,
) -> Audit:
    """Audit an allocation (rows of ``allocations.parquet``) for inequality and ordering violations.

    Parameters
    ----------
    allocations
        One row per paid user with ``user_id``, ``voucher_cents`` (or ``voucher_usd``),
        ``loss_usd``, ``loss_ratio``, ``lower_cents``, ``upper_cents``, ``weight`` and optionally
        ``segment``.
    bands
        Loss bands ``(label, low, high)`` for coverage, low inclusive, high exclusive.
    objective
        The run's objective. It separates the feature part of the weights (stage ``features``),
        tells whether the ratio can lower a weight (stage ``ratio``) and whether unexplained
        violations are forbidden (``expected_zero``). Without it every user is assumed to have
        the same features and ``expected_zero`` is ``None``.
    max_examples
        Example pairs per kind, raw and unexplained.

    Returns
    -------
    Audit
        See the module docstring for the definitions and the counting method (exact,
        O(n log n)).

    Raises
    ------
    InputError
        A needed column is missing, a loss, ratio or weight is empty or NaN, a voucher or bound
        in cents is empty or negative, or a user appears twice.
    """
    cols = _columns(allocations)
    n = cols.cents.shape[0]
    usd = cols.cents / 100.0
    notes: list[str] = []
    if n:
        gini = metrics.gini(usd)
        top = metrics.top_share(usd, 0.1)
        pop, share = metrics.lorenz(usd)
        grid = np.linspace(0.0, 1.0, LORENZ_POINTS)
        lorenz_pop, lorenz_share = tuple(grid.tolist()), tuple(np.interp(grid, pop, share).tolist())
    else:
        gini = top = None
        lorenz_pop = lorenz_share = ()

    zero = np.zeros(n, dtype=np.int64)
    bounds_g = _group_ids(cols.lower, cols.upper)
    segment_g = _group_ids(cols.segment) if n else zero
    if objective is not None and objective.features and n:
        feature_g = _group_ids(segment_g, _feature_part(allocations, cols, objective))
    else:
        feature_g = segment_g
        if objective is None and n:
            notes.append(
                "objective not given: every user is assumed to have the same weight features"
            )
    levels = {"bounds": bounds_g, "segment": segment_g, "features": feature_g}
    interior = (cols.cents > cols.lower) & (cols.cents < cols.upper)
    ratio_stage = objective is None or objective.ratio_exponent != 0
    expected = None if objective is None else weights_monotone(objective)
    counter = _Counter(cols, interior)

    # Partitions by segment, then features (a stage that does not refine the previous one
    # shares its name, and so its cached counts), then the same refined by the bounds.
    def refine(prev: tuple[str, np.ndarray], name: str, cur: np.ndarray) -> tuple[str, np.ndarray]:
        same = int(cur.max(initial=0)) == int(prev[1].max(initial=0))
        return prev if same else (name, cur)

    p_all = ("all", zero)
    p_seg = refine(p_all, "segment", segment_g)
    p_feat = refine(p_seg, "features", feature_g)
    bounded = refine(p_feat, f"{p_feat[0]}+bounds", _group_ids(p_feat[1], bounds_g))

    def kept(kind: str, per_user: bool = False) -> tuple[int, np.ndarray | None]:
        """Pairs in one features group with equal bounds, or both strictly inside their bounds."""
        if bounded[0] == p_feat[0]:  # the bounds split no group: one count
            return counter.count(kind, "all", p_feat, per_user)
        a_t, a_p = counter.count(kind, "all", bounded, per_user)
        i_t, i_p = counter.count(kind, "interior", p_feat, per_user)
        j_t, j_p = counter.count(kind, "interior", bounded, per_user)
        per = None if a_p is None or i_p is None or j_p is None else a_p + i_p - j_p
        return a_t + i_t - j_t, per

    def unexplained(kind: str, per_user: bool = False) -> tuple[int, np.ndarray | None]:
        if kind == MONOTONICITY and not ratio_stage:
            return kept(kind, per_user)
        # monotonicity: envy pairs with a strictly larger loss; envy: less the cent tie-breaks
        other = "equal_loss" if kind == MONOTONICITY else "equal_weight"
        t1, p1 = kept(ENVY, per_user)
        t2, p2 = kept(other, per_user)
        return t1 - t2, None if p1 is None or p2 is None else p1 - p2

    results = {}
    for kind in (MONOTONICITY, ENVY):
        raw = counter.count(kind, "all", p_all)[0]
        r_seg = counter.count(kind, "all", p_seg)[0]
        r_feat = counter.count(kind, "all", p_feat)[0]
        r2 = kept(kind)[0]
        by_factor = [
            ("segment", raw - r_seg),
            ("features", r_seg - r_feat),
            ("bounds", r_feat - r2),
        ]
        left = unexplained(kind)[0]
        if kind == MONOTONICITY and ratio_stage:
            by_factor.append(("ratio", r2 - left))
        elif kind == ENVY:
            by_factor.append(("rounding_tie", r2 - left))
        ex = _ExampleFinder(kind, cols, levels, interior, ratio_stage, max_examples)
        examples: tuple[ViolationPair, ...] = ()
        unexplained_examples: tuple[ViolationPair, ...] = ()
        if raw and max_examples > 0:
            examples = ex.find(counter.count(kind, "all", p_all, True)[1], restricted=False)
        if left and max_examples > 0:
            unexplained_examples = ex.find(unexplained(kind, True)[1], restricted=True)
        results[kind] = Violations(
            kind=kind,
            definition=_DEFINITIONS[kind],
            raw=raw,
            by_factor=tuple(by_factor),
            unexplained=left,
            expected_zero=expected,
            examples=examples,
            unexplained_examples=unexplained_examples,
        )
    if expected is False:
        notes.append(
            "the weights are not monotone in loss and ratio (a negative exponent), so unexplained "
            "violations are allowed"
        )
    return Audit(
        users=n,
        paid_cents=int(cols.cents.sum()),
        gini=gini,
        top_decile_share=top,
        lorenz_population=lorenz_pop,
        lorenz_share=lorenz_share,
        coverage_by_band=_coverage(cols, bands),
        monotonicity=results[MONOTONICITY],
        envy=results[ENVY],
        notes=tuple(notes),
    )
