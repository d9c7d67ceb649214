r"""The fairness audit of one allocation: the columns it reads, the cascade of documented factors
that explain each ordering violation, the example pairs, and :func:`audit` itself
(:mod:`allocator.analysis.audit` states the maths).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import polars as pl

from allocator import names as N
from allocator.analysis import metrics
from allocator.analysis.audit.counting import (
    dense_rank,
    envy_counts,
    group_ids,
    monotonicity_counts,
)
from allocator.analysis.audit.results import (
    DEFINITIONS,
    ENVY,
    MONOTONICITY,
    UNEXPLAINED,
    Audit,
    BandCoverage,
    ViolationPair,
    Violations,
)
from allocator.errors import InputError
from allocator.kernel.money import CENTS_PER_USD
from allocator.settings.models import ObjectiveSpec
from allocator.vouchers.weights import LOG_WEIGHT, weight_factors

#: Points of the Lorenz curve kept in the audit (population shares 0, 1%, ..., 100%).
LORENZ_POINTS = 101
#: Example pairs shown per violation kind.
MAX_EXAMPLES = 5
#: Two users' feature parts of the log-weight are equal when they differ by at most this
#: (relative to 1 + |value|): floating noise of ``log w`` minus its loss and ratio factors.
FEATURE_RTOL = 1e-9


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
    cov = cols.cents[covered] / CENTS_PER_USD / loss
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
        self.loss = dense_rank(cols.loss)
        self.ratio = dense_rank(cols.ratio)
        self.cents = dense_rank(cols.cents)
        self.weight = dense_rank(cols.weight)
        self.cache: dict[tuple[str, str, str, bool], tuple[int, np.ndarray | None]] = {}

    def count(
        self, kind: str, subset: str, grouping: tuple[str, np.ndarray], per_user: bool = False
    ) -> tuple[int, np.ndarray | None]:
        name, groups = grouping
        key = (kind, subset, name, per_user)
        if key not in self.cache:
            idx = self.subsets[subset]
            loss, ratio, cents = self.loss[idx], self.ratio[idx], self.cents[idx]
            g = dense_rank(groups[idx])  # dense group ids within the subset
            if kind == MONOTONICITY:
                total, per = monotonicity_counts(loss, cents, g, per_user)
            elif kind == ENVY:
                total, per = envy_counts(loss, ratio, cents, g, per_user)
            elif kind == "equal_loss":  # equal loss, ratio_j > ratio_i, voucher_j < voucher_i
                total, per = monotonicity_counts(ratio, cents, group_ids(g, loss), per_user)
            else:  # the same with equal weights too: a cent tie-break
                g = group_ids(g, loss, self.weight[idx])
                total, per = monotonicity_counts(ratio, cents, g, per_user)
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
    usd = cols.cents / CENTS_PER_USD
    notes: list[str] = []
    gini: float | None
    top: float | None
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
    bounds_g = group_ids(cols.lower, cols.upper)
    segment_g = group_ids(cols.segment) if n else zero
    if objective is not None and objective.features and n:
        feature_g = group_ids(segment_g, _feature_part(allocations, cols, objective))
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
    bounded = refine(p_feat, f"{p_feat[0]}+bounds", group_ids(p_feat[1], bounds_g))

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
            definition=DEFINITIONS[kind],
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
