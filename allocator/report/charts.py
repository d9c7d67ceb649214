"""The report's charts: Matplotlib figures drawn from a section's data, kept as PNG bytes.

Each ``*_figure`` function takes the numbers a section gathered and returns a Matplotlib
:class:`~matplotlib.figure.Figure`; the matching ``*_chart`` function draws it as a
:class:`Chart`, whose :meth:`~allocator.report.model.Chart.data_uri` embeds it in the HTML page
so the page opens offline. Figures are drawn with the Agg canvas of a bare
:class:`~matplotlib.figure.Figure` (no pyplot: no global state, no backend switch for callers)
and saved without a ``Software`` entry or a date, so the same data gives the same bytes.

The charts are read by policy designers and the public: titles say what the chart shows, axes
are labelled in words, amounts are written ``USD 1,000``, ``USD 10k`` or ``USD 1M`` and shares as
percentages (:mod:`allocator.report.words`), never in scientific notation. Amounts are on linear
axes, except the losses, which span USD 50 to over USD 1M and are drawn on a logarithmic axis
with a labelled tick at each power of ten.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from allocator.report.model import Chart
from allocator.report.words import percent, plain_number, usd_amount

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.axis import Axis
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

_DPI = 100
_BLUE, _ORANGE, _GREEN, _RED, _GREY = "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "grey"


def _figure(width: float = 7.0, height: float = 4.0) -> Figure:
    # Matplotlib is imported when a chart is drawn, not when the command line starts: every
    # command imports the report command, and only `allocator report` draws.
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=_DPI, layout="constrained")


def to_chart(fig: Figure, title: str, alt: str) -> Chart:
    """Draw ``fig`` as PNG bytes (no software tag, no date) under ``title`` and ``alt``."""
    import matplotlib

    buf = io.BytesIO()
    with matplotlib.rc_context({"svg.hashsalt": "allocator-report"}):
        fig.savefig(buf, format="png", dpi=_DPI, metadata={"Software": None})
    return Chart(title=title, png=buf.getvalue(), alt=alt)


# --------------------------------------------------------------------------------------------
# axes in words
# --------------------------------------------------------------------------------------------


def usd_axis(axis: Axis, *, short: bool = False) -> None:
    """Tick labels in USD (:func:`~allocator.report.words.usd_amount`) on a linear axis."""
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    axis.set_major_locator(MaxNLocator(nbins=7, steps=[1, 2, 2.5, 5, 10]))
    axis.set_major_formatter(FuncFormatter(lambda x, _pos: usd_amount(x, short=short)))


def count_axis(axis: Axis) -> None:
    """Whole numbers of users with thousands separators (no ``1e6`` offset)."""
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    axis.set_major_locator(MaxNLocator(nbins=6, integer=True, steps=[1, 2, 2.5, 5, 10]))
    axis.set_major_formatter(FuncFormatter(lambda x, _pos: f"{x:,.0f}"))


def percent_axis(axis: Axis) -> None:
    """Shares (fractions) as percentages."""
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    axis.set_major_locator(MaxNLocator(nbins=6, steps=[1, 2, 2.5, 5, 10]))
    axis.set_major_formatter(FuncFormatter(lambda x, _pos: percent(x)))


def plain_axis(axis: Axis) -> None:
    """Numbers in positional notation (``0.0009``, not ``9e-4``), without an offset."""
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    axis.set_major_locator(MaxNLocator(nbins=6, steps=[1, 2, 2.5, 5, 10]))
    axis.set_major_formatter(FuncFormatter(lambda x, _pos: plain_number(x, 3)))


def decades(lo: float, hi: float) -> list[float]:
    """The powers of ten from ``lo`` to ``hi`` (both positive), at least two: a log axis's ticks."""
    first = math.floor(math.log10(lo))
    last = math.ceil(math.log10(hi))
    return [10.0**k for k in range(first, max(last, first + 1) + 1)]


def log_usd_axis(axis: Axis, lo: float, hi: float) -> None:
    """A logarithmic USD axis from ``lo`` to ``hi`` labelled only at powers of ten (``USD 100``,
    ``USD 1k``, ``USD 1M``), with unlabelled minor ticks between them."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullFormatter

    axis.set_major_locator(FixedLocator(decades(lo, hi)))
    axis.set_major_formatter(FuncFormatter(lambda x, _pos: usd_amount(x, short=True)))
    axis.set_minor_locator(LogLocator(base=10.0, subs=(2.0, 5.0)))
    axis.set_minor_formatter(NullFormatter())


def _mark(ax: Axes, x: float) -> None:
    """A dotted vertical line at ``x``: where the reported run sits on a swept axis (the
    figure's title says so; a label inside the axes would collide with legends and lines)."""
    ax.axvline(x, color=_GREY, linestyle=":", linewidth=1.0)


# --------------------------------------------------------------------------------------------
# vouchers of one run
# --------------------------------------------------------------------------------------------


def histogram_figure(
    edges: np.ndarray,
    counts: Mapping[str, np.ndarray],
    *,
    label: str,
    users: int,
) -> Figure:
    """Vouchers on the linear USD bins ``edges``: one stacked bar per bin, split by the
    ``counts`` of each group (e.g. paid the minimum, in between, the maximum)."""
    fig = _figure()
    ax = fig.subplots()
    colours = (_RED, _BLUE, _GREEN, _ORANGE)
    bottom = np.zeros(edges.size - 1)
    for (name, values), colour in zip(counts.items(), colours):
        if not np.any(values):
            continue
        ax.stairs(
            bottom + values,
            edges,
            baseline=bottom.copy(),
            fill=True,
            color=colour,
            edgecolor="white",
            linewidth=0.4,
            label=f"{name}: {int(values.sum()):,}",
        )
        bottom = bottom + values
    ax.set_xlim(float(edges[0]), float(edges[-1]))
    usd_axis(ax.xaxis)
    count_axis(ax.yaxis)
    width = float(edges[1] - edges[0])
    ax.set_xlabel(f"voucher (USD), in steps of {usd_amount(width)}")
    ax.set_ylabel("users")
    ax.set_title(f"How large the vouchers are: {label} ({users:,} users)")
    ax.legend(loc="upper center", fontsize=8, title="users paid", title_fontsize=8)
    return fig


def histogram_chart(
    edges: np.ndarray, counts: Mapping[str, np.ndarray], *, label: str, users: int
) -> Chart:
    """:func:`histogram_figure` as a chart."""
    return to_chart(
        histogram_figure(edges, counts, label=label, users=users),
        "How large the vouchers are",
        f"{label}: number of users by voucher amount, in equal USD steps",
    )


def voucher_by_loss_figure(
    bins: Sequence[Mapping[str, Any]],
    *,
    label: str,
    cap_usd: float,
    loss_range: tuple[float, float],
    top_usd: float,
) -> Figure:
    """The median voucher and the 10th to 90th percentile band of each loss bin of one run.

    ``bins`` hold ``low_usd``, ``high_usd``, ``users``, ``p10_usd``, ``median_usd`` and
    ``p90_usd``; empty bins are skipped. The loss axis is logarithmic over ``loss_range``
    (the same for every run, so the charts compare) and the voucher axis linear from 0 to
    ``top_usd``.
    """
    fig = _figure()
    ax = fig.subplots()
    full = [b for b in bins if b["users"]]
    if full:
        mid = np.array([math.sqrt(b["low_usd"] * b["high_usd"]) for b in full])
        ax.fill_between(
            mid,
            [b["p10_usd"] for b in full],
            [b["p90_usd"] for b in full],
            color=_BLUE,
            alpha=0.2,
            linewidth=0,
            label="middle 80% of users (10th to 90th percentile)",
        )
        ax.plot(mid, [b["median_usd"] for b in full], color=_BLUE, marker="o", ms=3, label="median")
    ax.axhline(cap_usd, color=_GREEN, linestyle="--", linewidth=0.8)
    ax.annotate(
        f"maximum voucher {usd_amount(cap_usd)}",
        xy=(0.01, cap_usd),
        xycoords=("axes fraction", "data"),
        xytext=(0, 3),
        textcoords="offset points",
        fontsize=7,
        color=_GREEN,
    )
    ax.set_xscale("log")
    ax.set_xlim(*loss_range)
    log_usd_axis(ax.xaxis, *loss_range)
    ax.set_ylim(0, top_usd)
    usd_axis(ax.yaxis)
    ax.set_xlabel("loss (USD; each labelled step is ten times the one before)")
    ax.set_ylabel("voucher (USD)")
    ax.set_title(f"What users are paid for what they lost: {label}")
    ax.legend(loc="center right", fontsize=8)
    return fig


def voucher_by_loss_chart(
    bins: Sequence[Mapping[str, Any]],
    *,
    label: str,
    cap_usd: float,
    loss_range: tuple[float, float],
    top_usd: float,
) -> Chart:
    """:func:`voucher_by_loss_figure` as a chart."""
    fig = voucher_by_loss_figure(
        bins, label=label, cap_usd=cap_usd, loss_range=loss_range, top_usd=top_usd
    )
    return to_chart(
        fig,
        f"Voucher against loss: {label}",
        f"{label}: median voucher and the 10th to 90th percentile of vouchers by size of loss",
    )


# --------------------------------------------------------------------------------------------
# every run side by side
# --------------------------------------------------------------------------------------------


def lorenz_figure(curves: Sequence[tuple[str, np.ndarray, np.ndarray, float]]) -> Figure:
    """Lorenz curves ``(label, population share, money share, Gini)`` and the line of equality."""
    fig = _figure(6.0, 5.0)
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], color=_GREY, linestyle="--", linewidth=0.8, label="everyone the same")
    for label, pop, share, gini in curves:
        ax.plot(pop, share, linewidth=1.2, label=f"{label} (Gini {gini:.3f})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    percent_axis(ax.xaxis)
    percent_axis(ax.yaxis)
    ax.set_xlabel("share of users, smallest vouchers first")
    ax.set_ylabel("share of the money they receive together")
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title("How evenly the money is spread")
    return fig


def lorenz_chart(curves: Sequence[tuple[str, np.ndarray, np.ndarray, float]]) -> Chart:
    """:func:`lorenz_figure` as a chart."""
    return to_chart(
        lorenz_figure(curves),
        "How evenly the money is spread",
        "share of the money received by each share of users, for every run, against an equal split",
    )


def coverage_figure(band_labels: Sequence[str], medians: Mapping[str, Sequence[float]]) -> Figure:
    """Grouped bars: each run's median share of the loss repaid (a fraction) in each loss band
    (``band_labels`` short enough to sit side by side, e.g. on two lines)."""
    fig = _figure()
    ax = fig.subplots()
    width = 0.8 / max(len(medians), 1)
    x = np.arange(len(band_labels))
    for k, (label, values) in enumerate(medians.items()):
        ax.bar(x + (k - (len(medians) - 1) / 2) * width, list(values), width=width, label=label)
    ax.set_xticks(x, band_labels)
    ax.set_ylim(bottom=0)
    percent_axis(ax.yaxis)
    ax.set_xlabel("loss")
    ax.set_ylabel("median share of the loss repaid")
    ax.legend(fontsize=8)
    ax.set_title("Median share of the loss repaid, by size of loss")
    return fig


def coverage_chart(band_labels: Sequence[str], medians: Mapping[str, Sequence[float]]) -> Chart:
    """:func:`coverage_figure` as a chart."""
    return to_chart(
        coverage_figure(band_labels, medians),
        "Share of the loss repaid",
        "median share of the loss repaid by size of loss, for every run",
    )


# --------------------------------------------------------------------------------------------
# the run re-solved
# --------------------------------------------------------------------------------------------


def _values(points: Sequence[Mapping[str, Any]], key: str) -> list[float]:
    return [np.nan if p.get(key) is None else float(p[key]) for p in points]


def alpha_sweep_figure(
    points: Sequence[Mapping[str, Any]],
    alpha_of_run: float,
    *,
    floor_words: str,
    cap_words: str,
) -> Figure:
    """Gini, the median share of the loss repaid, and users paid the minimum and the maximum
    against alpha, for the points that solved."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    fig = _figure(11.0, 3.6)
    axes = fig.subplots(1, 3)
    x = [float(p["alpha"]) for p in points]
    axes[0].plot(x, _values(points, "gini"), marker="o", ms=3, color=_BLUE)
    axes[0].set_title("Inequality of vouchers (Gini)", fontsize=10)
    axes[0].set_ylabel("Gini: 0 = all equal, 1 = one user gets all")
    plain_axis(axes[0].yaxis)
    axes[1].plot(x, _values(points, "median_coverage"), marker="o", ms=3, color=_BLUE)
    axes[1].set_title("Median share of the loss repaid", fontsize=10)
    percent_axis(axes[1].yaxis)
    axes[2].plot(x, _values(points, "n_cap"), marker="o", ms=3, color=_GREEN, label=cap_words)
    axes[2].plot(x, _values(points, "n_floor"), marker="s", ms=3, color=_RED, label=floor_words)
    axes[2].set_title("Users paid the minimum or the maximum", fontsize=10)
    axes[2].legend(fontsize=7)
    count_axis(axes[2].yaxis)
    for ax in axes:
        # alpha is swept in equal ratios, so it is drawn on a log axis labelled at the
        # swept values only, in plain numbers
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(FixedLocator(x))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: plain_number(v, 3)))
        ax.xaxis.set_minor_locator(NullLocator())
        _mark(ax, alpha_of_run)
        ax.set_xlabel("alpha (higher: more equal vouchers)")
    fig.suptitle(
        f"A more or less equal split: the run re-solved at other values of alpha "
        f"(dotted line: this run, alpha {plain_number(alpha_of_run, 3)})"
    )
    return fig


def alpha_sweep_chart(
    points: Sequence[Mapping[str, Any]],
    alpha_of_run: float,
    *,
    floor_words: str,
    cap_words: str,
) -> Chart:
    """:func:`alpha_sweep_figure` as a chart."""
    return to_chart(
        alpha_sweep_figure(points, alpha_of_run, floor_words=floor_words, cap_words=cap_words),
        "A more or less equal split",
        "inequality, median share of the loss repaid and users paid the minimum or the maximum, "
        "against alpha",
    )


def budget_figure(
    points: Sequence[Mapping[str, Any]],
    budget_of_run_usd: float,
    *,
    label: str,
    floor_words: str,
    cap_words: str,
) -> Figure:
    """Users paid the minimum and the maximum, the median share of the loss repaid, and what
    one more dollar is worth against the budget.

    ``points`` hold ``budget_usd``, ``n_cap``, ``n_floor``, ``median_coverage`` and
    ``dollar_value`` (the shadow price over the run's own, 1 at the run's budget).
    """
    fig = _figure(11.0, 3.6)
    axes = fig.subplots(1, 3)
    x = [float(p["budget_usd"]) for p in points]
    axes[0].plot(x, _values(points, "n_cap"), marker="o", ms=3, color=_GREEN, label=cap_words)
    axes[0].plot(x, _values(points, "n_floor"), marker="s", ms=3, color=_RED, label=floor_words)
    axes[0].set_title("Users paid the minimum or the maximum", fontsize=10)
    axes[0].legend(fontsize=7)
    count_axis(axes[0].yaxis)
    axes[1].plot(x, _values(points, "median_coverage"), marker="o", ms=3, color=_BLUE)
    axes[1].set_title("Median share of the loss repaid", fontsize=10)
    percent_axis(axes[1].yaxis)
    axes[2].plot(x, _values(points, "dollar_value"), marker="o", ms=3, color=_BLUE)
    axes[2].set_title("What one more dollar is worth", fontsize=10)
    axes[2].set_ylabel("1 = at this run's budget")
    plain_axis(axes[2].yaxis)
    for ax in axes:
        usd_axis(ax.xaxis)
        ax.xaxis.set_major_locator(_budget_locator())
        _mark(ax, budget_of_run_usd)
        ax.set_xlabel("budget (USD)")
    fig.suptitle(
        f"A bigger or smaller budget: {label} re-solved at other budgets "
        f"(dotted line: this run, {usd_amount(budget_of_run_usd)})"
    )
    return fig


def _budget_locator() -> MaxNLocator:
    from matplotlib.ticker import MaxNLocator

    # three or four labels: a budget reads "USD 250M" and three panels share the width
    return MaxNLocator(nbins=4, steps=[1, 2, 2.5, 5, 10])


def budget_chart(
    points: Sequence[Mapping[str, Any]],
    budget_of_run_usd: float,
    *,
    label: str,
    floor_words: str,
    cap_words: str,
) -> Chart:
    """:func:`budget_figure` as a chart."""
    fig = budget_figure(
        points, budget_of_run_usd, label=label, floor_words=floor_words, cap_words=cap_words
    )
    return to_chart(
        fig,
        "A bigger or smaller budget",
        "users paid the minimum or the maximum, median share of the loss repaid and what one "
        "more dollar is worth, against the budget",
    )


# --------------------------------------------------------------------------------------------
# the eligibility cliff
# --------------------------------------------------------------------------------------------


def cliff_figure(
    sides: Sequence[tuple[str, str, float, np.ndarray, np.ndarray, np.ndarray, str]],
    *,
    label: str,
) -> Figure:
    """Users excluded and eligible on either side of each eligibility threshold.

    ``sides`` holds, per threshold, the axis name, its kind (``usd`` or ``share``), the
    threshold, the histogram's edges, excluded counts, eligible counts and a line saying what
    the users just above the threshold are paid.
    """
    fig = _figure(11.0, 3.8)
    axes = fig.subplots(1, len(sides))
    for ax, (name, kind, threshold, edges, excluded, eligible, above) in zip(
        np.atleast_1d(axes), sides
    ):
        ax.stairs(excluded, edges, fill=True, color=_ORANGE, alpha=0.85, label="not eligible")
        ax.stairs(eligible, edges, fill=True, color=_BLUE, alpha=0.7, label="eligible")
        ax.axvline(threshold, color="black", linestyle="--", linewidth=0.8)
        ax.set_xlim(float(edges[0]), float(edges[-1]))
        if kind == "usd":
            usd_axis(ax.xaxis)
        else:
            percent_axis(ax.xaxis)
        count_axis(ax.yaxis)
        ax.set_xlabel(name)
        ax.set_ylabel("users")
        ax.set_title(above, fontsize=9)
        ax.legend(fontsize=7, loc="upper right")
    fig.suptitle(f"Who just misses out: {label}, users either side of the eligibility thresholds")
    return fig


def cliff_chart(
    sides: Sequence[tuple[str, str, float, np.ndarray, np.ndarray, np.ndarray, str]],
    *,
    label: str,
) -> Chart:
    """:func:`cliff_figure` as a chart."""
    return to_chart(
        cliff_figure(sides, label=label),
        "Who just misses out",
        f"{label}: users just below and just above the loss and loss-share thresholds",
    )
