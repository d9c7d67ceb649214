"""What the studio shows of an allocation, in plain words and dollars.

Each function takes a run (and the pinned reference run, when there is one) and returns plain
data: a headline of labelled numbers, tables as Polars frames with column names in words, and
charts (:class:`~allocator.studio.vegalite.ViewChart`: their rows, the Altair chart on demand,
the Vega-Lite JSON the page sends) with dollar axes. Charts draw binned data, never a point per
user, so that a million users cost the browser what a thousand do.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from typing import Any

import altair as alt
import numpy as np
import polars as pl

from allocator import names as N
from allocator.analysis.axioms import AxiomResult
from allocator.analysis.axioms_run import verdict
from allocator.analysis.metrics import LOSS_BANDS
from allocator.analysis.sensitivity.budget import budget_derivatives
from allocator.analysis.sensitivity.cliffs import CliffAnalysis, CliffSides, cliff_sides
from allocator.kernel.claims import describe
from allocator.kernel.money import CENTS_PER_USD
from allocator.studio.vegalite import VEGA_LITE_MEDIA_TYPE, ViewChart
from allocator.vouchers.pipeline import RunResult

__all__ = [
    "CURRENT",
    "PINNED",
    "VEGA_LITE_MEDIA_TYPE",
    "HeadlineItem",
    "ViewChart",
    "axioms_table",
    "budget_in_words",
    "cliffs",
    "coverage_by_band",
    "headline",
    "histogram",
    "lorenz_chart",
    "moved",
    "usd",
    "voucher_against_loss",
]

#: How the two runs are named on the page.
CURRENT, PINNED = "this setting", "pinned reference"
_RUN_COLOURS = {CURRENT: "#1f6feb", PINNED: "#9a6700", "everyone the same": "#8c959f"}


def _colours(*names: str) -> alt.Scale:
    """The colour of each run drawn (a legend lists only what is on the chart)."""
    return alt.Scale(domain=list(names), range=[_RUN_COLOURS[n] for n in names])


#: Loss bins of the voucher-against-loss chart (USD), readable edges.
LOSS_EDGES = (0, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000,
              1_000_000, math.inf)  # fmt: skip
#: Largest moves listed against the pinned reference.
TOP_MOVES = 10


def usd(x: float, *, cents: bool = False) -> str:
    """``USD 1,234`` (``USD 1,234.56`` with ``cents``); a minus sign before the currency."""
    sign = "-" if x < 0 else ""
    body = f"{abs(x):,.2f}" if cents else f"{abs(x):,.0f}"
    return f"{sign}USD {body}"


def _short(x: float) -> str:
    """``250``, ``2.5k``, ``1M``: a loss bin's edge, short enough for an axis label."""
    for size, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= size:
            return f"{x / size:g}{suffix}"
    return f"{x:g}"


def _vouchers(run: RunResult) -> np.ndarray:
    usd_: np.ndarray = _memo(run, "usd", lambda: np.asarray(run.cents, np.float64) / CENTS_PER_USD)
    return usd_


def _shares(run: RunResult) -> np.ndarray:
    """Each user's voucher as a share of their loss."""
    share: np.ndarray = _memo(
        run, "share", lambda: _vouchers(run) / run.allocations[N.LOSS_USD].to_numpy()
    )
    return share


# The pinned run is drawn again beside every new setting, and users' losses stay put while only
# vouchers move: what depends on a run alone is kept per run, and the loss bins per eligibility.
_PER_RUN: weakref.WeakKeyDictionary[RunResult, dict[str, Any]] = weakref.WeakKeyDictionary()
_PER_ELIGIBILITY: weakref.WeakKeyDictionary[Any, dict[Any, Any]] = weakref.WeakKeyDictionary()


def _memo(run: RunResult, kind: Any, compute: Any) -> Any:
    store = _PER_RUN.setdefault(run, {})
    if kind not in store:
        store[kind] = compute()
    return store[kind]


def _loss_bins(run: RunResult, inner_edges: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """``(order, bounds)``: the users sorted by loss bin, and where each bin starts and ends in
    that order (bin k holds losses in [edge k, edge k+1) of ``[0, *inner_edges, inf]``)."""
    store = _PER_ELIGIBILITY.setdefault(run.eligibility, {})
    if inner_edges not in store:
        loss = run.allocations[N.LOSS_USD].to_numpy()
        # a few bins: the stable sort of one-byte keys is a radix sort, one linear pass
        index = np.searchsorted(np.asarray(inner_edges), loss, "right").astype(np.uint8)
        order = np.argsort(index, kind="stable")
        bounds = np.searchsorted(index[order], np.arange(len(inner_edges) + 2))
        store[inner_edges] = (order, bounds)
    result: tuple[np.ndarray, np.ndarray] = store[inner_edges]
    return result


def _sorted_by_bin(
    run: RunResult, inner_edges: tuple[float, ...], values: np.ndarray
) -> list[tuple[int, np.ndarray]]:
    """``(bin, the values of its users, sorted)`` of every non-empty loss bin, in bin order:
    one sort of every user in pieces, after which any quantile of a bin is free."""
    order, bounds = _loss_bins(run, inner_edges)
    ordered = values[order]
    out = []
    for k in range(len(bounds) - 1):
        if bounds[k + 1] > bounds[k]:
            part = ordered[bounds[k] : bounds[k + 1]]
            part.sort()  # in place
            out.append((k, part))
    return out


def _per_bin(parts: list[tuple[int, np.ndarray]], stat: Any) -> list[tuple[int, int, Any]]:
    """``(bin, users, stat(its sorted values))`` of every bin of :func:`_sorted_by_bin`."""
    return [(k, int(part.shape[0]), stat(part)) for k, part in parts]


def _shares_by_band(run: RunResult) -> list[tuple[int, np.ndarray]]:
    parts: list[tuple[int, np.ndarray]] = _memo(
        run, "shares_by_band", lambda: _sorted_by_bin(run, _BAND_EDGES, _shares(run))
    )
    return parts


def _kth(parts: list[np.ndarray], k: int) -> float:
    """The ``k``-th smallest (from 0) of all the values of ``parts``, each sorted, finite and
    >= 0: the smallest value with more than ``k`` values at or below it, found by bisection
    on the bits of the float (their order is the values' order for numbers >= 0), each step
    counting with one binary search per part."""
    lo, hi = 0, int(np.float64(max(float(p[-1]) for p in parts if p.size)).view(np.int64))
    while lo < hi:
        mid = (lo + hi) // 2
        value = np.int64(mid).view(np.float64)
        if sum(int(np.searchsorted(p, value, "right")) for p in parts) > k:
            hi = mid
        else:
            lo = mid + 1
    return float(np.int64(lo).view(np.float64))


def _median_of_parts(parts: list[np.ndarray]) -> float:
    """``np.median`` of all the values of ``parts`` (see :func:`_kth`)."""
    n = sum(p.shape[0] for p in parts)
    if n % 2:
        return _kth(parts, n // 2)
    return (_kth(parts, n // 2 - 1) + _kth(parts, n // 2)) / 2.0


def _quantile(ordered: np.ndarray, q: float) -> float:
    """``np.quantile(x, q)`` (linear interpolation, numpy's default) of ``x`` sorted as
    ``ordered``, without sorting it again."""
    h = (ordered.shape[0] - 1) * q
    lo = math.floor(h)
    a, b = float(ordered[lo]), float(ordered[min(lo + 1, ordered.shape[0] - 1)])
    t = float(h - lo)
    # numpy's lerp: from the nearer end, so that t = 0 and t = 1 give the end points exactly
    return b - (b - a) * (1.0 - t) if t >= 0.5 else a + (b - a) * t


def _median(ordered: np.ndarray) -> float:
    """``np.median`` of sorted values."""
    m = ordered.shape[0]
    if m % 2:
        return float(ordered[m // 2])
    return float((ordered[m // 2 - 1] + ordered[m // 2]) / 2.0)


#: The population shares the Lorenz curve is drawn at.
LORENZ_GRID = np.linspace(0.0, 1.0, 101)
_BAND_EDGES = tuple(lo for _, lo, _ in LOSS_BANDS[1:])
_LOSS_EDGES = tuple(float(e) for e in LOSS_EDGES[1:-1])


def _numbers(run: RunResult, kind: str) -> Any:
    """The numbers of view ``kind`` for ``run``, computed once per run (:data:`_NUMBERS`)."""
    return _memo(run, kind, lambda: _NUMBERS[kind](run))


@dataclass(frozen=True)
class HeadlineItem:
    """One headline number: its label, its value as shown, and the pinned run's."""

    label: str
    value: str
    pinned: str | None = None


def _headline_items(r: RunResult) -> list[tuple[str, str]]:
    n = r.cents.shape[0]
    # the bound column's rule (pipeline.bound_labels), on the cents: the floor wins a tie
    at_floor = int(np.count_nonzero(r.cents <= r.lower_cents))
    at_cap = int(np.count_nonzero((r.cents >= r.upper_cents) & (r.cents > r.lower_cents)))
    coverage = "-"
    if n:
        # the median of the shares already sorted per loss band, without a sort of everyone
        parts = [part for _, part in _shares_by_band(r)]
        plain = all(np.isfinite(p[-1]) and p[0] >= 0 for p in parts)
        median = _median_of_parts(parts) if plain else float(np.median(_shares(r)))
        coverage = f"{median:.1%}"
    floor, cap = r.scenario.bounds.floor_usd, r.scenario.bounds.cap_usd
    return [
        ("Eligible users", f"{n:,}"),
        ("Paid", usd(r.paid_cents / CENTS_PER_USD, cents=True)),
        ("Unspent", usd((r.budget_cents - r.paid_cents) / CENTS_PER_USD, cents=True)),
        (f"Paid the smallest voucher ({usd(floor)})", f"{at_floor:,}"),
        (f"Paid their largest voucher (at most {usd(cap)})", f"{at_cap:,}"),
        ("Median share of the loss repaid", coverage),
    ]  # fmt: skip


def headline(run: RunResult, pinned: RunResult | None = None) -> list[HeadlineItem]:
    """Eligible, paid, unspent, at the floor, at the cap and the median share repaid."""
    now = _numbers(run, "headline")
    ref = dict(_numbers(pinned, "headline")) if pinned is not None else {}
    return [HeadlineItem(label, value, ref.get(label)) for label, value in now]


def _runs(run: RunResult, pinned: RunResult | None) -> list[tuple[str, RunResult]]:
    return [(CURRENT, run)] + ([(PINNED, pinned)] if pinned is not None else [])


def histogram(run: RunResult, pinned: RunResult | None = None) -> ViewChart:
    """How many users receive how much: USD bins from 0 to the largest voucher, linear."""
    top = max(_numbers(r, "top") for _, r in _runs(run, pinned))
    width = max(1.0, _nice_step(top / CENTS_PER_USD / 24))
    edges = np.arange(0.0, top / CENTS_PER_USD + width, width)
    rows = []
    for name, r in _runs(run, pinned):

        def count(r: RunResult = r) -> np.ndarray:
            # the cents divided by the bin width in cents: the same bins as np.histogram
            index = np.minimum(r.cents // round(width * CENTS_PER_USD), edges.size - 2)
            return np.bincount(index, minlength=edges.size - 1)

        counts = _memo(r, ("histogram", width, edges.size), count)
        rows += [
            {"from": float(lo), "to": float(hi), "users": int(c), "run": name}
            for lo, hi, c in zip(edges[:-1], edges[1:], counts)
        ]

    def build(data: pl.DataFrame) -> Any:
        return (
            alt.Chart(data, title=alt.Title("How large the vouchers are", anchor="start"))
            .mark_bar(opacity=0.7)
            .encode(
                x=alt.X(
                    "from:Q",
                    bin="binned",
                    title="Voucher (USD)",
                    axis=alt.Axis(format=",.0f", labelOverlap="greedy", tickCount=6),
                ),
                x2="to:Q",
                y=alt.Y("users:Q", title="Users", stack=None, axis=alt.Axis(format=",d")),
                color=alt.Color(
                    "run:N", scale=_colours(*(name for name, _ in _runs(run, pinned))), title=None
                ),
                tooltip=[
                    alt.Tooltip("from:Q", title="From (USD)", format=",.0f"),
                    alt.Tooltip("to:Q", title="To (USD)", format=",.0f"),
                    alt.Tooltip("users:Q", title="Users", format=","),
                    alt.Tooltip("run:N", title="Run"),
                ],
            )
            .properties(width="container", height=220)
        )

    return ViewChart("histogram", tuple(name for name, _ in _runs(run, pinned)), rows, build)


def _nice_step(x: float) -> float:
    if x <= 0:
        return 1.0
    exp = 10 ** math.floor(math.log10(x))
    for m in (1, 2, 2.5, 5, 10):
        if m * exp >= x:
            return float(m * exp)
    return float(10 * exp)


def coverage_by_band(run: RunResult, pinned: RunResult | None = None) -> ViewChart:
    """The median share of the loss repaid, by size of the loss."""
    rows = []
    for name, r in _runs(run, pinned):
        for k, users, share in _numbers(r, "coverage_by_band"):
            label, lo, _ = LOSS_BANDS[k]
            rows.append(
                {"band": _band_words(label), "order": lo, "share": float(share),
                 "users": users, "run": name}
            )  # fmt: skip

    def build(data: pl.DataFrame) -> Any:
        return (
            alt.Chart(
                data,
                title=alt.Title(
                    "Share of the loss repaid, by size of the loss (median)", anchor="start"
                ),
            )
            .mark_bar()
            .encode(
                x=alt.X("band:N", title="Loss", sort=alt.SortField("order")),
                xOffset=alt.XOffset("run:N"),
                y=alt.Y("share:Q", title="Median share repaid", axis=alt.Axis(format="%")),
                color=alt.Color(
                    "run:N", scale=_colours(*(name for name, _ in _runs(run, pinned))), title=None
                ),
                tooltip=[
                    alt.Tooltip("band:N", title="Loss"),
                    alt.Tooltip("share:Q", title="Median share repaid", format=".1%"),
                    alt.Tooltip("users:Q", title="Users", format=","),
                    alt.Tooltip("run:N", title="Run"),
                ],
            )
            .properties(width="container", height=220)
        )

    return ViewChart("coverage_by_band", tuple(name for name, _ in _runs(run, pinned)), rows, build)


def _band_words(label: str) -> str:
    words = {
        "<100": "under USD 100",
        "100-1k": "USD 100 to 1,000",
        "1k-10k": "USD 1,000 to 10,000",
        "10k-100k": "USD 10,000 to 100,000",
        ">=100k": "USD 100,000 and more",
    }
    return words.get(label, label)


def voucher_against_loss(run: RunResult, pinned: RunResult | None = None) -> ViewChart:
    """The median voucher (and the middle 80% of users) in bins of loss."""
    rows = []
    for name, r in _runs(run, pinned):
        for k, users, (p10, p50, p90) in _numbers(r, "voucher_against_loss"):
            lo, hi = LOSS_EDGES[k], LOSS_EDGES[k + 1]
            rows.append(
                {
                    "loss": f"{_short(lo)}-{_short(hi)}" if hi < math.inf
                    else f"{_short(lo)}+",
                    "order": lo, "median": float(p50), "low": float(p10), "high": float(p90),
                    "users": int(users), "run": name,
                }
            )  # fmt: skip

    def build(data: pl.DataFrame) -> Any:
        base = alt.Chart(
            data,
            title=alt.Title(
                "Voucher against loss (median, and the middle 80% of users)", anchor="start"
            ),
        )
        x = alt.X(
            "loss:N", title="Loss (USD)", sort=alt.SortField("order"), axis=alt.Axis(labelAngle=-45)
        )
        band = base.mark_area(opacity=0.2).encode(
            x=x,
            y=alt.Y("low:Q", title="Voucher (USD)", axis=alt.Axis(format=",.0f")),
            y2="high:Q",
            color=alt.Color(
                "run:N", scale=_colours(*(name for name, _ in _runs(run, pinned))), title=None
            ),
        )
        line = base.mark_line(point=True).encode(
            x=x,
            y="median:Q",
            color=alt.Color(
                "run:N", scale=_colours(*(name for name, _ in _runs(run, pinned))), title=None
            ),
            tooltip=[
                alt.Tooltip("loss:N", title="Loss"),
                alt.Tooltip("median:Q", title="Median voucher (USD)", format=",.2f"),
                alt.Tooltip("low:Q", title="10% of users below (USD)", format=",.2f"),
                alt.Tooltip("high:Q", title="10% of users above (USD)", format=",.2f"),
                alt.Tooltip("users:Q", title="Users", format=","),
            ],
        )
        return (band + line).properties(width="container", height=240)

    return ViewChart(
        "voucher_against_loss", tuple(name for name, _ in _runs(run, pinned)), rows, build
    )


def _lorenz_at(cents: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """The Lorenz curve of ``cents`` (:func:`~allocator.analysis.metrics.lorenz`) at the
    population shares ``grid``: integer cents sorted and summed exactly, then read off by linear
    interpolation between the users either side of each grid point."""
    n = cents.shape[0]
    if n == 0:
        return np.asarray(grid, dtype=np.float64)
    at = np.asarray(grid, dtype=np.float64) * n
    lo = np.minimum(np.floor(at).astype(np.int64), n - 1)
    smallest = _sums_of_smallest(cents, np.concatenate([lo, lo + 1]))
    total = float(cents.sum())
    if total == 0:
        return np.asarray(grid, dtype=np.float64)
    low, high = smallest[: lo.shape[0]] / total, smallest[lo.shape[0] :] / total
    return np.asarray(low + (at - lo) * (high - low))


def _sums_of_smallest(cents: np.ndarray, k: np.ndarray) -> np.ndarray:
    """The exact sum of the ``k`` smallest ``cents`` (integers >= 0) for each ``k``: from a count
    of each amount when the amounts are few next to the users (a voucher of at most USD 6,000
    has 600,001 possible amounts), else from a sort."""
    top = int(cents.max())
    if top > 4 * cents.shape[0] + 100_000:
        cum = np.concatenate([[0], np.cumsum(np.sort(cents))])
        return np.asarray(cum[k])
    counts = np.bincount(cents, minlength=top + 1)
    users = np.cumsum(counts)  # users with at most each amount
    money = np.cumsum(counts * np.arange(top + 1, dtype=np.int64))  # their money
    # the k-th smallest amount is the first c with users[c] >= k; all below it count in full
    c = np.searchsorted(users, k, "left")
    below = np.where(c > 0, users[np.maximum(c - 1, 0)], 0)
    money_below = np.where(c > 0, money[np.maximum(c - 1, 0)], 0)
    return np.asarray(money_below + (k - below) * np.minimum(c, top))


def lorenz_chart(run: RunResult, pinned: RunResult | None = None) -> ViewChart:
    """The share of the money received by the x% of users with the smallest vouchers."""
    grid = LORENZ_GRID
    rows = []
    for name, r in _runs(run, pinned):
        rows += [
            {"users": float(g), "money": float(m), "run": name}
            for g, m in zip(grid, _numbers(r, "lorenz"))
        ]
    rows += [{"users": float(g), "money": float(g), "run": "everyone the same"} for g in (0.0, 1.0)]

    def build(data: pl.DataFrame) -> Any:
        scale = _colours(*(name for name, _ in _runs(run, pinned)), "everyone the same")
        return (
            alt.Chart(data, title=alt.Title("Who gets the money (Lorenz curve)", anchor="start"))
            .mark_line()
            .encode(
                x=alt.X(
                    "users:Q", title="Users, smallest vouchers first", axis=alt.Axis(format="%")
                ),
                y=alt.Y("money:Q", title="Share of the money", axis=alt.Axis(format="%")),
                color=alt.Color("run:N", scale=scale, title=None),
            )
            .properties(width="container", height=240)
        )

    return ViewChart("lorenz", tuple(name for name, _ in _runs(run, pinned)), rows, build)


@dataclass(frozen=True)
class Moves:
    """Users whose voucher moves by more than a dollar against the pinned reference."""

    users: int
    gained_usd: float
    lost_usd: float
    newly_paid: int
    no_longer_paid: int
    largest: pl.DataFrame

    def words(self) -> str:
        return (
            f"{self.users:,} users' vouchers move by more than USD 1: USD "
            f"{self.gained_usd:,.2f} more to some, USD {self.lost_usd:,.2f} less to others; "
            f"{self.newly_paid:,} newly paid, {self.no_longer_paid:,} no longer paid."
        )


def moved(run: RunResult, pinned: RunResult) -> Moves:
    """Who gains and who loses against the pinned reference (a user paid in only one of the two
    counts as receiving 0 in the other)."""
    if run.eligibility is pinned.eligibility:
        # the same users in the same order (a knob that left eligibility alone): rows line up
        ids = run.allocations[N.USER_ID].to_numpy()
        now_c, ref_c = run.cents, pinned.cents
        loss = run.allocations[N.LOSS_USD].to_numpy()
    else:
        # every user paid in either run, each once: both runs list their users sorted by id
        # (the feature matrix's order), so a merge of two sorted lists lines them up
        now_ids = run.allocations[N.USER_ID].to_numpy()
        ref_ids = pinned.allocations[N.USER_ID].to_numpy()
        both = np.concatenate([now_ids, ref_ids])
        # two sorted runs: the stable sort (a merge sort) finds them and merges them in one
        # pass; each user's place in the union is then a running count of new ids (np.union1d
        # and np.searchsorted are each several times slower)
        order = np.argsort(both, kind="stable")
        merged = both[order]
        first = np.empty(merged.shape[0], dtype=bool)
        first[:1] = True
        np.not_equal(merged[1:], merged[:-1], out=first[1:])
        ids = merged[np.flatnonzero(first)]
        place = np.empty(both.shape[0], dtype=np.int64)
        place[order] = np.cumsum(first) - 1
        at_now, at_ref = place[: now_ids.shape[0]], place[now_ids.shape[0] :]
        now_c = np.zeros(ids.shape[0], dtype=np.int64)
        ref_c = np.zeros(ids.shape[0], dtype=np.int64)
        loss = np.empty(ids.shape[0], dtype=np.float64)
        ref_c[at_ref] = pinned.cents
        loss[at_ref] = pinned.allocations[N.LOSS_USD].to_numpy()
        now_c[at_now] = run.cents
        loss[at_now] = run.allocations[N.LOSS_USD].to_numpy()
    change = np.subtract(now_c, ref_c, dtype=np.int64)  # cents
    size = np.abs(change)
    users = int(np.count_nonzero(size > CENTS_PER_USD))
    # the largest moves, ties by the smaller user id: every user at or above the TOP_MOVES-th
    # largest move, then ordered and trimmed
    keep = np.flatnonzero(size > CENTS_PER_USD) if users <= TOP_MOVES else _largest(size)
    order = keep[np.lexsort((ids[keep], -size[keep]))][:TOP_MOVES]
    largest = pl.DataFrame(
        {
            "User": ids[order],
            "Loss (USD)": np.round(loss[order], 2),
            "Pinned (USD)": ref_c[order] / CENTS_PER_USD,
            "Now (USD)": now_c[order] / CENTS_PER_USD,
            "Change (USD)": change[order] / CENTS_PER_USD,
        }
    )
    gained = int(np.maximum(change, 0).sum())
    return Moves(
        users=users,
        gained_usd=gained / CENTS_PER_USD,
        lost_usd=(gained - int(change.sum())) / CENTS_PER_USD,
        newly_paid=int(np.count_nonzero((ref_c == 0) & (now_c > 0))),
        no_longer_paid=int(np.count_nonzero((ref_c > 0) & (now_c == 0))),
        largest=largest,
    )


def _largest(size: np.ndarray) -> np.ndarray:
    """The positions of every entry at or above the :data:`TOP_MOVES`-th largest of ``size``
    (more than :data:`TOP_MOVES` entries): from the entries at or above a strided sample's
    largest when there are enough of them (one comparison over everyone), else from a
    partition of everyone."""
    n, step = size.shape[0], max(1, size.shape[0] // 16_384)
    cand = np.flatnonzero(size >= size[::step].max())
    if cand.shape[0] < TOP_MOVES:
        cand = np.arange(n)
    top = size[cand]
    cut = np.partition(top, top.shape[0] - TOP_MOVES)[top.shape[0] - TOP_MOVES]
    return cand[np.flatnonzero(top >= cut)]


def budget_in_words(run: RunResult) -> str:
    """What one million USD more would do, from the derivative of every voucher in the budget."""
    words: str = _numbers(run, "budget_in_words")
    return words


def _budget_words(run: RunResult) -> str:
    allocation = run.allocation
    if allocation.rule_awards is not None:
        awards = allocation.rule_awards
        rule = describe(awards.rule, awards.parameter, awards.stage)
    else:
        rule = None
    dv, _, _, degenerate = budget_derivatives(run.problem, allocation)
    moving = dv > 1e-12
    if degenerate or not moving.any():
        text = (
            "Every voucher sits at a bound: USD 1M more could not be paid out under these "
            "bounds (raise the largest voucher), and USD 1M less would come from the floor users."
        )
    else:
        per = dv[np.flatnonzero(moving)]
        per *= 1e6
        m = per.shape[0]
        per.partition([(m - 1) // 2, m // 2])  # the median, in place (np.median would copy)
        median = float((per[(m - 1) // 2] + per[m // 2]) / 2.0)
        text = (
            f"USD 1M more would add about {usd(median, cents=True)} to each of "
            f"{m:,} users (the median; from {usd(float(per.min()), cents=True)} "
            f"to {usd(float(per.max()), cents=True)}): those between the smallest and the "
            "largest voucher. The others stay where they are."
        )
    return text if rule is None else f"{rule[0].upper()}{rule[1:]}. {text}"


def cliff_of(run: RunResult) -> CliffAnalysis:
    """:func:`~allocator.analysis.sensitivity.cliffs.cliff_analysis` of ``run`` (see
    :func:`_cliff_of`), kept per run."""
    analysis: CliffAnalysis = _numbers(run, "cliffs")
    return analysis


def _cliff_of(run: RunResult) -> CliffAnalysis:
    """:func:`~allocator.analysis.sensitivity.cliffs.cliff_analysis` of ``run``: who sits on
    either side of each threshold is the same for every run of the same eligible users, so it
    is computed once per eligibility, and only the vouchers paid above the cliffs per run."""
    store = _PER_ELIGIBILITY.setdefault(run.eligibility, {})
    if "cliffs" not in store:
        store["cliffs"] = cliff_sides(
            run.eligibility.excluded, run.allocations, run.scenario.eligibility
        )
    sides: CliffSides = store["cliffs"]
    return sides.with_vouchers(_vouchers(run))


def cliffs(run: RunResult) -> tuple[list[str], ViewChart]:
    """Who sits just below the loss and ratio thresholds, in words, and a chart of the users
    on either side of each threshold (paid, or left out by it)."""
    c = cliff_of(run)

    def median(x: float | None) -> str:
        return "nobody" if x is None else usd(x, cents=True)

    words = [
        f"{c.below_loss_users:,} users lost between {usd(c.min_loss_usd - c.loss_band_usd)} and "
        f"{usd(c.min_loss_usd)} and are left out by the minimum loss "
        f"({usd(c.below_loss_total_usd)} of losses); just above it the median voucher is "
        f"{median(c.voucher_above_loss_usd)}.",
        f"{c.below_ratio_users:,} users lost between {c.min_loss_ratio - c.ratio_band:.0%} and "
        f"{c.min_loss_ratio:.0%} of their net assets and are left out by the minimum loss ratio "
        f"({usd(c.below_ratio_total_usd)} of losses); just above it the median voucher is "
        f"{median(c.voucher_above_ratio_usd)}.",
    ]
    rows = []
    for rule, hist, fmt in (
        ("Loss (USD)", c.loss_hist, "{:,.0f}"),
        ("Loss ratio", c.ratio_hist, "{:.1%}"),
    ):
        edges = list(hist["edges"])
        for k, (paid, out) in enumerate(zip(hist["eligible"], hist["excluded"])):
            mid = (float(edges[k]) + float(edges[k + 1])) / 2
            for status, n in (("paid", paid), ("left out by this threshold", out)):
                rows.append(
                    {"threshold": rule, "at": mid, "label": fmt.format(edges[k]),
                     "users": int(n), "status": status}
                )  # fmt: skip

    def build(data: pl.DataFrame) -> Any:
        return (
            alt.Chart(
                data,
                title=alt.Title("Users on either side of each threshold", anchor="start"),
            )
            .mark_bar()
            .encode(
                x=alt.X("label:N", title=None, sort=None, axis=alt.Axis(labelAngle=-45)),
                y=alt.Y("users:Q", title="Users", axis=alt.Axis(format=",d")),
                color=alt.Color(
                    "status:N",
                    scale=alt.Scale(range=["#1f6feb", "#cf222e"]),
                    title=None,
                ),
                column=alt.Column("threshold:N", title=None),
                tooltip=[
                    alt.Tooltip("label:N", title="From"),
                    alt.Tooltip("users:Q", title="Users", format=","),
                    alt.Tooltip("status:N", title="Status"),
                ],
            )
            .resolve_scale(x="independent", y="independent")
            .properties(width=260, height=180)
        )

    return words, ViewChart("cliffs", (), rows, build)


def draw(run: RunResult, pinned: RunResult | None = None) -> None:
    """Everything the page shows of one setting, computed as the page computes it, the charts'
    JSON included: what :meth:`Studio.warm_up
    <allocator.studio.engine.Studio.warm_up>` draws for each setting it tries, and what the
    studio's benchmark times."""
    headline(run, pinned)
    budget_in_words(run)
    if pinned is not None:
        moved(run, pinned)
    _, cliff_chart = cliffs(run)
    charts = (
        histogram(run, pinned),
        coverage_by_band(run, pinned),
        voucher_against_loss(run, pinned),
        lorenz_chart(run, pinned),
        cliff_chart,
    )
    for chart in charts:
        chart._mime_()


def axioms_table(results: list[AxiomResult]) -> pl.DataFrame:
    """The fairness axioms in words: holds, users checked, exceptions, what theory expects."""
    words = {
        "budget_balance": "The whole budget is paid",
        "award_at_most_claim": "Nobody is paid more than their loss",
        "equal_treatment_of_equals": "Equal losses, equal vouchers",
        "order_preservation": "A larger loss never gets less (nor keeps less unpaid)",
        "claims_monotonicity": "A larger loss of one's own never lowers one's voucher",
        "resource_monotonicity": "A larger budget lowers nobody's voucher",
        "consistency": "Removing users with their vouchers changes nobody else's",
        "composition": "Paying in two rounds equals paying at once",
        "split_merge_gain": "Splitting or merging accounts gains nothing",
    }
    return pl.DataFrame(
        {
            "Property": [words.get(r.name, r.name) for r in results],
            "Verdict": [verdict(r) for r in results],
            "Users checked": [f"{r.checked:,}" for r in results],
            "Exceptions": [f"{r.violations:,}" for r in results],
            "What theory says": [r.expected for r in results],
        }
    )


def as_dict(items: list[HeadlineItem]) -> dict[str, Any]:
    """The headline as ``{label: value}`` (for tests and the page's data attributes)."""
    return {i.label: i.value for i in items}


#: How each view's numbers are computed from one run (see :func:`_numbers`).
_NUMBERS: dict[str, Any] = {
    "headline": _headline_items,
    "coverage_by_band": lambda r: _per_bin(_shares_by_band(r), _median),
    "voucher_against_loss": lambda r: _per_bin(
        _sorted_by_bin(r, _LOSS_EDGES, _vouchers(r)),
        lambda x: (_quantile(x, 0.1), _median(x), _quantile(x, 0.9)),
    ),
    "lorenz": lambda r: _lorenz_at(r.cents, LORENZ_GRID),
    "budget_in_words": _budget_words,
    "cliffs": _cliff_of,
    "top": lambda r: int(r.cents.max(initial=0)),
}
