"""The report's charts: Matplotlib figures drawn from a section's data, kept as PNG bytes.

Each function takes the numbers a section gathered and returns a :class:`Chart`, whose
:meth:`~allocator.report.model.Chart.data_uri` embeds it in the HTML page so the page opens
offline. Figures are drawn with the Agg canvas of a bare :class:`matplotlib.figure.Figure`
(no pyplot: no global state, no backend switch for callers) and saved without a ``Software``
entry or a date, so the same data gives the same bytes.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from allocator import names as N
from allocator.report.model import Chart

if TYPE_CHECKING:
    from matplotlib.figure import Figure

_DPI = 100
_BOUND_COLOURS = {
    N.BOUND_FLOOR: "#d62728",
    N.BOUND_INTERIOR: "#1f77b4",
    N.BOUND_CAP: "#2ca02c",
}


def _figure(width: float = 7.0, height: float = 4.0) -> Figure:
    # Matplotlib is imported when a chart is drawn, not when the command line starts: every
    # command imports the report command, and only `allocator report` draws.
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=_DPI, layout="constrained")


def _chart(fig: Figure, title: str, alt: str) -> Chart:
    import matplotlib

    buf = io.BytesIO()
    with matplotlib.rc_context({"svg.hashsalt": "allocator-report"}):
        fig.savefig(buf, format="png", dpi=_DPI, metadata={"Software": None})
    return Chart(title=title, png=buf.getvalue(), alt=alt)


def histogram_chart(
    positive_usd: np.ndarray, edges: np.ndarray, *, label: str, users: int
) -> Chart:
    """Positive vouchers on the logarithmic bins ``edges``."""
    fig = _figure()
    ax = fig.subplots()
    ax.hist(positive_usd, bins=edges.tolist(), color="#1f77b4", edgecolor="white", linewidth=0.3)
    ax.set_xscale("log")
    ax.set_xlabel("voucher (USD, log scale)")
    ax.set_ylabel("users")
    ax.set_title(f"{label}: vouchers of {users:,} users")
    return _chart(fig, "voucher histogram", "histogram of vouchers on logarithmic bins")


def scatter_chart(
    loss: np.ndarray, usd: np.ndarray, bound: np.ndarray, idx: np.ndarray, *, label: str
) -> Chart:
    """Voucher against loss of the users ``idx`` on log-log axes, coloured by binding bound."""
    fig = _figure()
    ax = fig.subplots()
    for state in N.BOUND_STATES:
        sel = idx[bound[idx] == state]
        if sel.size:
            ax.scatter(
                loss[sel],
                usd[sel],
                s=4,
                alpha=0.5,
                color=_BOUND_COLOURS[state],
                label=f"{state} ({sel.size:,})",
                linewidths=0,
                rasterized=False,
            )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("loss (USD, log scale)")
    ax.set_ylabel("voucher (USD, log scale)")
    ax.set_title(f"{label}: voucher against loss")
    ax.legend(loc="lower right", fontsize=8, markerscale=3)
    return _chart(fig, "voucher against loss", "log-log scatter of voucher against loss")


def lorenz_chart(curves: Sequence[tuple[str, np.ndarray, np.ndarray, float]]) -> Chart:
    """Lorenz curves ``(label, population share, money share, Gini)`` and the line of equality."""
    fig = _figure(6.0, 5.0)
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=0.8, label="equality")
    for label, pop, share, gini in curves:
        ax.plot(pop, share, linewidth=1.2, label=f"{label} (Gini {gini:.3f})")
    ax.set_xlabel("share of users (smallest vouchers first)")
    ax.set_ylabel("share of the money paid")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title("Lorenz curves")
    return _chart(fig, "Lorenz curves", "Lorenz curves of every run against the line of equality")


def coverage_chart(band_labels: Sequence[str], medians: Mapping[str, Sequence[float]]) -> Chart:
    """Grouped bars: each run's median coverage (a fraction) in each loss band."""
    fig = _figure()
    ax = fig.subplots()
    width = 0.8 / max(len(medians), 1)
    x = np.arange(len(band_labels))
    for k, (label, values) in enumerate(medians.items()):
        heights = [100.0 * v for v in values]
        ax.bar(x + (k - (len(medians) - 1) / 2) * width, heights, width=width, label=label)
    ax.set_xticks(x, band_labels)
    ax.set_xlabel("loss band (USD)")
    ax.set_ylabel("median coverage (%)")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    ax.set_title("median coverage by loss band")
    return _chart(fig, "coverage by loss band", "median coverage by loss band for every run")


def alpha_sweep_chart(points: Sequence[Mapping[str, Any]], alpha_of_run: float) -> Chart:
    """Gini, median coverage and users at the cap against alpha, for the points that solved."""
    fig = _figure(10.0, 3.4)
    axes = fig.subplots(1, 3)
    x = [p["alpha"] for p in points]
    for ax, key, name in zip(
        axes,
        ("gini", "median_coverage", "n_cap"),
        ("Gini", "median coverage", "users at cap"),
    ):
        ax.plot(x, [p[key] if p[key] is not None else np.nan for p in points], marker="o", ms=3)
        ax.axvline(alpha_of_run, color="grey", linestyle=":", linewidth=0.8)
        ax.set_xscale("log")
        # label the swept values only: log-scale minor labels overlap on a short range
        ax.minorticks_off()
        ax.set_xticks(x, [f"{a:g}" for a in x])
        ax.set_xlabel("alpha (log scale)")
        ax.set_title(name)
    return _chart(fig, "alpha sweep", "Gini, median coverage and users at cap against alpha")


def shadow_price_chart(
    points: Sequence[Mapping[str, Any]], budget_of_run_usd: float, *, label: str
) -> Chart:
    """Shadow price (left axis) and users at the cap (right axis) against the budget."""
    fig = _figure()
    ax = fig.subplots()
    x = [p["budget_usd"] for p in points]
    prices = [p["shadow_price"] if p["shadow_price"] is not None else np.nan for p in points]
    ax.plot(x, prices, marker="o", ms=3, color="#1f77b4", label="shadow price")
    ax.set_xlabel("budget (USD)")
    ax.set_ylabel("shadow price (per USD)", color="#1f77b4")
    if all(np.isfinite(prices)) and min(prices) > 0:
        ax.set_yscale("log")
    ax.axvline(budget_of_run_usd, color="grey", linestyle=":", linewidth=0.8)
    ax2 = ax.twinx()
    ax2.plot(
        x, [p["n_cap"] for p in points], marker="s", ms=3, color="#2ca02c", label="users at cap"
    )
    ax2.set_ylabel("users paid at cap", color="#2ca02c")
    ax.set_title(f"{label}: shadow price and users at cap against the budget")
    return _chart(fig, "shadow price", "shadow price and users at cap against the budget")


def cliff_chart(
    sides: Sequence[tuple[str, float, np.ndarray, np.ndarray, np.ndarray]], *, label: str
) -> Chart:
    """Users excluded and eligible around each threshold.

    ``sides`` holds, per threshold, its axis name, the threshold and the histogram's edges,
    excluded counts and eligible counts.
    """
    fig = _figure(10.0, 3.4)
    axes = fig.subplots(1, len(sides))
    for ax, (name, threshold, edges, excluded, eligible) in zip(axes, sides):
        ax.stairs(
            excluded, edges, fill=True, color="#ff7f0e", alpha=0.8, label="excluded by the rule"
        )
        ax.stairs(eligible, edges, fill=True, color="#1f77b4", alpha=0.6, label="eligible")
        ax.axvline(threshold, color="black", linestyle="--", linewidth=0.8)
        ax.set_xlabel(name)
        ax.set_ylabel("users")
        ax.legend(fontsize=7)
    fig.suptitle(f"{label}: users around the eligibility thresholds")
    return _chart(fig, "cliff", "users just below and above the loss and ratio thresholds")
