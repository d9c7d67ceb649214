"""The report's sections read from the run directories: each one's data, tables and charts.

One function per section, each taking the loaded runs (:class:`ReportRun`, the reported run
first) and returning a :class:`Section`. The sections that re-solve the run's scenario, the
alpha sweep and the budget sweep, are in :mod:`allocator.report.sweep_sections`.

Titles, table headings and notes are written for readers who design or receive the vouchers
(:mod:`allocator.report.words`); each section's ``data`` keeps the machine names for the JSON
report.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import polars as pl

from allocator import names as N
from allocator.analysis import metrics
from allocator.analysis.axioms_run import run_axioms, verdict
from allocator.analysis.sensitivity import cliff_analysis
from allocator.jsonsafe import json_safe
from allocator.kernel.claims import describe
from allocator.kernel.money import format_usd
from allocator.report import charts
from allocator.report.cells import count, num, pass_fail, pct, usd, usd_cents, yes_no
from allocator.report.inputs import ReportRun
from allocator.report.model import (
    HIST_MAX_BINS,
    LORENZ_POINTS,
    LOSS_BAND_USD,
    RATIO_BAND,
    Chart,
    Section,
    Table,
)
from allocator.report.words import (
    cap_words,
    coverage_limit,
    floor_words,
    percent,
    plain_number,
    reason_words,
    record_words,
    rule_title,
    usd_amount,
)
from allocator.settings.models import EligibilityRules

# --------------------------------------------------------------------------------------------
# summary and finance checks
# --------------------------------------------------------------------------------------------


def _certified(man: Mapping[str, Any], key: str) -> bool | None:
    cert = man.get(key)
    if isinstance(cert, Mapping):
        certified = cert.get("certified")
        if isinstance(certified, bool):
            return certified
    return None


def rule_in_words(r: ReportRun) -> str:
    """The run's rule and its multiplier in plain words (from the manifest's ``rule`` section)."""
    objective = r.scenario.objective
    if objective.rule == "alpha_fair":
        return f"{rule_title(objective.rule)}, alpha {objective.alpha:g}"
    section = r.run.manifest.get("rule") or {}
    parameter, stage = section.get("parameter"), section.get("stage", 0)
    if not isinstance(parameter, (int, float)):
        return rule_title(objective.rule)
    words = describe(
        objective.rule, float(parameter), int(stage), coverage=objective.form == "coverage"
    )
    return f"{rule_title(objective.rule)}: {words}"


def summary_data(r: ReportRun) -> dict[str, Any]:
    """The headline numbers of one run, read from its manifest."""
    man = r.run.manifest
    counts = man.get("counts", {}) or {}
    money = man.get("money", {}) or {}
    solver = man.get("solver", {}) or {}
    return {
        "label": r.label,
        "run_dir": str(r.run.path),
        "scenario": r.scenario.name,
        "description": r.scenario.description,
        "liquidated": counts.get("liquidated"),
        "eligible": counts.get("eligible"),
        "excluded": counts.get("excluded"),
        "excluded_by_reason": dict(sorted((counts.get("excluded_by_reason") or {}).items())),
        "budget_cents": money.get("budget_cents"),
        "paid_cents": money.get("paid_cents"),
        "unspent_cents": money.get("unspent_cents"),
        "exhaust": money.get("exhaust"),
        "floor_usd": r.scenario.bounds.floor_usd,
        "cap_usd": r.scenario.bounds.cap_usd,
        "coverage_cap": r.scenario.bounds.coverage_cap,
        "coverage_limit": coverage_limit(r.scenario),
        "floor": counts.get("floor"),
        "interior": counts.get("interior"),
        "cap": counts.get("cap"),
        "held": counts.get("held", 0),
        "shadow_price": man.get("shadow_price"),
        "rule": r.scenario.objective.rule,
        "rule_in_words": rule_in_words(r),
        "solver_requested": solver.get("requested"),
        "solver_used": solver.get("used"),
        "solver_status": solver.get("status"),
        "certified": _certified(man, "certificate"),
        "certified_rounded": _certified(man, "certificate_rounded"),
        "checks_ok": r.checks.ok,
        "checks": len(r.checks.checks),
        "checks_failed": len(r.checks.failures),
    }


def _summary_rows(
    runs: Sequence[ReportRun],
) -> tuple[tuple[str, Callable[[Mapping[str, Any]], str]], ...]:
    """Rows of the summary table: the row's name and how a run's :func:`summary_data` fills it."""
    scenarios = [r.scenario for r in runs]
    return (
        ("scenario", lambda d: str(d["scenario"])),
        ("how the vouchers are set", lambda d: str(d["rule_in_words"])),
        ("users liquidated", lambda d: count(d["liquidated"])),
        ("users eligible", lambda d: count(d["eligible"])),
        ("users excluded", lambda d: count(d["excluded"])),
        ("budget (USD)", lambda d: usd_cents(d["budget_cents"])),
        ("paid (USD)", lambda d: usd_cents(d["paid_cents"])),
        ("left unspent (USD)", lambda d: usd_cents(d["unspent_cents"])),
        ("smallest voucher allowed", lambda d: usd_amount(d["floor_usd"])),
        (
            "largest voucher allowed",
            lambda d: usd_amount(d["cap_usd"]) + _share_of_loss(d["coverage_limit"]),
        ),
        (f"users paid {floor_words(scenarios)}", lambda d: count(d["floor"])),
        ("users paid more than the minimum, less than the maximum", lambda d: count(d["interior"])),
        (f"users paid {cap_words(scenarios)}", lambda d: count(d["cap"])),
        *(
            [("users held at what they were already paid", lambda d: count(d["held"]))]
            if any(r.run.round > 1 for r in runs)
            else []
        ),
        (
            "value of one more dollar of budget (shadow price)",
            lambda d: (
                plain_number(d["shadow_price"])
                if d["rule"] == "alpha_fair"
                else "- (this rule has none)"
            ),
        ),
        ("solver", lambda d: f"{d['solver_used']} ({d['solver_status']})"),
        ("optimality certificate holds", lambda d: yes_no(d["certified"])),
        ("... and after rounding to cents", lambda d: yes_no(d["certified_rounded"])),
        ("finance checks", lambda d: pass_fail(d["checks_ok"])),
    )


def _share_of_loss(limit: float | None) -> str:
    """The loss's part of a run's largest voucher, in words (empty without one)."""
    if limit is None:
        return ""
    return ", or the loss if less" if limit == 1 else f", or {percent(limit)} of the loss if less"


def _shared_rules(runs: Sequence[ReportRun]) -> EligibilityRules | None:
    """The eligibility rules of every run, or None when the runs' rules differ."""
    rules = [r.scenario.eligibility for r in runs]
    return rules[0] if all(x == rules[0] for x in rules) else None


def summary_section(runs: Sequence[ReportRun]) -> Section:
    """Headline numbers of every run, and excluded users by reason."""
    data = [summary_data(r) for r in runs]
    table = Table(
        columns=("", *(d["label"] for d in data)),
        rows=tuple((name, *(fmt(d) for d in data)) for name, fmt in _summary_rows(runs)),
        caption="headline numbers, from each run's manifest",
    )
    reasons = sorted({k for d in data for k in d["excluded_by_reason"]})
    rules = _shared_rules(runs)
    by_reason = Table(
        columns=("excluded because", *(d["label"] for d in data)),
        rows=tuple(
            (reason_words(k, rules), *(count(d["excluded_by_reason"].get(k, 0)) for d in data))
            for k in reasons
        ),
        caption="excluded users, by the first rule they fail",
    )
    notes = tuple(d["description"] for d in data[:1] if d["description"])
    return Section(
        id="summary",
        title="Summary",
        data={"run": data[0], "compare": data[1:]},
        tables=(table, by_reason),
        notes=notes,
        failed=not all(d["checks_ok"] for d in data),
    )


def reconciliation_section(runs: Sequence[ReportRun]) -> Section:
    """Every finance check of the reported run (those of ``allocator check-budget``), PASS or
    FAIL, and one line per compared run: all checks passed, or which failed."""
    main, others = runs[0], runs[1:]
    rows = tuple((pass_fail(c.ok), c.name, c.detail) for c in main.checks.checks)
    tables = [
        Table(
            columns=("status", "check", "detail"),
            rows=rows,
            caption=f"{main.label} ({main.run.path}): {_checks_verdict(main)}",
            status_column=0,
        )
    ]
    if others:
        tables.append(
            Table(
                columns=("run", "status", "checks", "failed checks"),
                rows=tuple(
                    (
                        f"{r.label} ({r.run.path})",
                        pass_fail(r.checks.ok),
                        _checks_verdict(r),
                        "; ".join(f"{c.name}: {c.detail}" for c in r.checks.failures) or "-",
                    )
                    for r in others
                ),
                caption="the runs compared with it: the same checks, failures listed",
                status_column=1,
            )
        )
    return Section(
        id="reconciliation",
        title="Finance checks",
        data={"runs": [{"label": r.label, **r.checks.to_dict()} for r in runs]},
        tables=tuple(tables),
        notes=("the checks of `allocator check-budget`, from each run directory's files alone",),
        failed=not all(r.checks.ok for r in runs),
    )


def _checks_verdict(r: ReportRun) -> str:
    n = len(r.checks.checks)
    if r.checks.ok:
        return f"all {n} checks passed"
    return f"{len(r.checks.failures)} of {n} checks FAILED"


# --------------------------------------------------------------------------------------------
# vouchers
# --------------------------------------------------------------------------------------------


def linear_edges(top: float, max_bins: int = HIST_MAX_BINS) -> np.ndarray:
    """Bin edges from 0 to at least ``top`` in equal steps of a round amount (1, 2, 2.5 or 5
    times a power of ten), at most ``max_bins`` of them: USD 250 for vouchers up to 6,000."""
    if not top > 0:
        return np.array([0.0, 1.0])
    raw = top / max_bins
    scale = 10.0 ** math.floor(math.log10(raw))
    width = next(m * scale for m in (1.0, 2.0, 2.5, 5.0, 10.0) if m * scale >= raw)
    n = max(math.ceil(top / width), 1)
    while n * width < top:  # a top a rounding error above n steps still falls in a bin
        n += 1
    return np.arange(n + 1, dtype=np.float64) * width


def histogram_section(main: ReportRun) -> Section:
    """The reported run's vouchers in equal USD steps from 0, split by the bound they sit on."""
    vouchers = main.vouchers_usd()
    notes: list[str] = []
    drawn: list[Chart] = []
    data: dict[str, Any] = {"users": int(vouchers.size)}
    if vouchers.size:
        edges = linear_edges(float(vouchers.max()))
        bound = main.run.allocations[N.BOUND].cast(pl.String).fill_null("").to_numpy()
        states = N.ROUND_BOUND_STATES if main.run.round > 1 else N.BOUND_STATES
        by_bound = {
            state: np.histogram(vouchers[bound == state], bins=edges)[0] for state in states
        }
        counts = np.histogram(vouchers, bins=edges)[0]
        data.update(
            {
                "bin_edges_usd": [float(x) for x in edges],
                "bin_width_usd": float(edges[1] - edges[0]),
                "counts": [int(c) for c in counts],
                "counts_by_bound": {k: [int(c) for c in v] for k, v in by_bound.items()},
                "zero_vouchers": int((vouchers == 0).sum()),
            }
        )
        scenarios = [main.scenario]
        groups = {
            floor_words(scenarios): by_bound[N.BOUND_FLOOR],
            "more than the minimum, less than the maximum": by_bound[N.BOUND_INTERIOR],
            cap_words(scenarios): by_bound[N.BOUND_CAP],
        }
        if N.BOUND_HELD in by_bound:  # a later round: held at what they were already paid
            groups["what they already held"] = by_bound[N.BOUND_HELD]
        drawn.append(
            charts.histogram_chart(edges, groups, label=main.label, users=int(vouchers.size))
        )
        notes.append(
            f"{main.label}: vouchers in equal steps of {usd_amount(float(edges[1] - edges[0]))}; "
            f"the smallest is {usd_amount(float(vouchers.min()))}, the median "
            f"{usd_amount(float(np.median(vouchers)))} and the largest "
            f"{usd_amount(float(vouchers.max()))}"
        )
    else:
        notes.append("no vouchers to draw")
    return Section(
        id="voucher-histogram",
        title="How large the vouchers are",
        data=data,
        charts=tuple(drawn),
        notes=tuple(notes),
    )


def loss_edges(lo: float, hi: float) -> np.ndarray:
    """Loss bin edges in steps of 1, 2 and 5 times a power of ten (50, 100, 200, 500, 1,000,
    ...), from the step at or below ``lo`` to the first step above ``hi`` (``0 < lo <= hi``)."""
    # one decade of margin each way: log10 rounds (log10(999999999.9999999) is 9.0)
    first, last = math.floor(math.log10(lo)) - 1, math.floor(math.log10(hi)) + 1
    steps = [m * 10.0**e for e in range(first, last + 1) for m in (1.0, 2.0, 5.0)]
    start = max(v for v in steps if v <= lo)
    stop = min(v for v in steps if v > hi)
    return np.array([v for v in steps if start <= v <= stop])


def loss_bins(loss: np.ndarray, usd: np.ndarray, edges: np.ndarray) -> list[dict[str, Any]]:
    """Per loss bin ``[edges[k], edges[k + 1])`` (the last one closed): its users and the 10th,
    50th and 90th percentile of their vouchers (None for an empty bin)."""
    which = np.clip(np.searchsorted(edges, loss, side="right") - 1, 0, edges.size - 2)
    out = []
    for k in range(edges.size - 1):
        v = usd[which == k]
        q = np.percentile(v, [10, 50, 90]).tolist() if v.size else [None] * 3
        out.append(
            {
                "low_usd": float(edges[k]),
                "high_usd": float(edges[k + 1]),
                "users": int(v.size),
                "p10_usd": q[0],
                "median_usd": q[1],
                "p90_usd": q[2],
            }
        )
    return out


def _loss_and_vouchers(r: ReportRun) -> tuple[np.ndarray, np.ndarray]:
    """Every user's loss and voucher in USD, for the users with a positive finite loss."""
    loss = r.run.allocations[N.LOSS_USD].cast(pl.Float64).to_numpy()
    usd = r.vouchers_usd()
    keep = np.isfinite(loss) & (loss > 0)
    return loss[keep], usd[keep]


_VOUCHER_BY_LOSS_TITLE = "What users are paid for what they lost"


def voucher_by_loss_section(runs: Sequence[ReportRun]) -> Section:
    """Every run's vouchers by size of loss: per loss bin (1-2-5 steps, the same for every run)
    the median voucher and the 10th to 90th percentile, one chart per run on the same axes."""
    pairs = [_loss_and_vouchers(r) for r in runs]
    losses = [loss for loss, _ in pairs if loss.size]
    data: dict[str, Any] = {"runs": []}
    drawn: list[Chart] = []
    notes: list[str] = []
    if not losses:
        return Section(
            id="voucher-vs-loss",
            title=_VOUCHER_BY_LOSS_TITLE,
            data=data,
            notes=("no users with a loss to draw",),
        )
    edges = loss_edges(min(float(x.min()) for x in losses), max(float(x.max()) for x in losses))
    # no voucher exceeds its run's cap: the largest cap tops every chart, so they compare
    top = max(r.scenario.bounds.cap_usd for r in runs)
    for r, (loss, paid) in zip(runs, pairs):
        bins = loss_bins(loss, paid, edges)
        data["runs"].append({"label": r.label, "users": int(loss.size), "bins": bins})
        if loss.size:
            drawn.append(
                charts.voucher_by_loss_chart(
                    bins,
                    label=r.label,
                    cap_usd=r.scenario.bounds.cap_usd,
                    loss_range=(float(edges[0]), float(edges[-1])),
                    top_usd=1.08 * top,
                )
            )
        else:
            notes.append(f"{r.label}: no users with a loss to draw")
    steps = ", ".join(
        f"{usd_amount(float(a))} to {usd_amount(float(b))}"
        for a, b in itertools.pairwise(edges[:4])
    )
    notes.append(
        f"users grouped by loss in steps of 1, 2 and 5 times a power of ten ({steps}, ...); the "
        "line is the median voucher of each group, the band holds the middle 80% of its users"
    )
    return Section(
        id="voucher-vs-loss",
        title=_VOUCHER_BY_LOSS_TITLE,
        data={"loss_edges_usd": edges.tolist(), **data},
        charts=tuple(drawn),
        notes=tuple(notes),
    )


# --------------------------------------------------------------------------------------------
# every run side by side
# --------------------------------------------------------------------------------------------


def lorenz_section(runs: Sequence[ReportRun]) -> Section:
    """Lorenz curves of every run (:func:`allocator.analysis.metrics.lorenz`) and their Gini."""
    grid = np.linspace(0.0, 1.0, LORENZ_POINTS)
    curves: list[dict[str, Any]] = []
    drawn: list[tuple[str, np.ndarray, np.ndarray, float]] = []
    rows = []
    for r in runs:
        vouchers = r.vouchers_usd()
        if vouchers.size == 0:
            curves.append({"label": r.label, "gini": None, "population": [], "share": []})
            rows.append((r.label, "0", "-", "-", "-"))
            continue
        pop, share = metrics.lorenz(vouchers)
        g = metrics.gini(vouchers)
        curves.append(
            {
                "label": r.label,
                "gini": g,
                "population": grid.tolist(),
                "share": np.interp(grid, pop, share).tolist(),
            }
        )
        drawn.append((r.label, pop, share, g))
        rows.append(
            (
                r.label,
                count(vouchers.size),
                f"{g:.4f}",
                pct(float(np.interp(0.5, pop, share))),
                pct(metrics.top_share(vouchers, 0.1)),
            )
        )
    return Section(
        id="lorenz",
        title="How evenly the money is spread",
        data={"curves": curves},
        tables=(
            Table(
                columns=(
                    "run",
                    "users",
                    "Gini (0 = all equal)",
                    "money to the half with the smallest vouchers",
                    "money to the tenth with the largest",
                ),
                rows=tuple(rows),
            ),
        ),
        charts=(charts.lorenz_chart(drawn),),
        notes=(
            "each curve adds up the vouchers from the smallest to the largest: the further it "
            "sags below the diagonal (everyone paid the same), the more unequal the vouchers",
        ),
    )


def band_words(low_usd: float, high_usd: float, sep: str = " ") -> str:
    """A loss band in words: ``under USD 100``, ``USD 100 to 1k``, ``USD 100k or more``; ``sep``
    joins the amount and the rest (a line break for a chart's tick label)."""
    if low_usd <= 0:
        return f"under{sep}{usd_amount(high_usd, short=True)}"
    if not math.isfinite(high_usd):
        return f"{usd_amount(low_usd, short=True)}{sep}or more"
    high = usd_amount(high_usd, short=True).removeprefix("USD ")
    return f"{usd_amount(low_usd, short=True)}{sep}to {high}"


def coverage_section(runs: Sequence[ReportRun]) -> Section:
    """Coverage ``voucher / loss`` by loss band (users, p10, median, p90) of every run."""
    tables = []
    data = []
    first = runs[0].audit.coverage_by_band
    band_labels = [band_words(b.low_usd, b.high_usd, "\n") for b in first]
    medians: dict[str, list[float]] = {}
    for r in runs:
        bands = r.audit.coverage_by_band
        data.append({"label": r.label, "bands": [json_safe(b.__dict__) for b in bands]})
        tables.append(
            Table(
                columns=(
                    "loss",
                    "users",
                    "10th percentile",
                    "median",
                    "90th percentile",
                ),
                rows=tuple(
                    (
                        band_words(b.low_usd, b.high_usd),
                        count(b.count),
                        pct(b.p10),
                        pct(b.median),
                        pct(b.p90),
                    )
                    for b in bands
                ),
                caption=f"{r.label}: share of the loss repaid (voucher / loss), by size of loss",
            )
        )
        by_band = {(b.low_usd, b.high_usd): b.median for b in bands}
        # a band with nobody in it (no median) is drawn as an empty bar
        medians[r.label] = [by_band.get((b.low_usd, b.high_usd)) or 0.0 for b in first]
    return Section(
        id="coverage",
        title="Share of the loss repaid, by size of loss",
        data={"runs": data},
        tables=tuple(tables),
        charts=(charts.coverage_chart(band_labels, medians),),
    )


#: The audit's two kinds of ordering violation, in words.
_KIND_WORDS = {
    "monotonicity": "lost more, paid less",
    "envy": "lost more at no smaller loss share, paid less",
}
#: The factors that explain a violation, in words.
_FACTOR_WORDS = {
    "segment": "different segments",
    "features": "other weight factors",
    "bounds": "minimum or maximum",
    "ratio": "smaller loss share",
    "rounding_tie": "a cent of rounding",
}


def fairness_section(runs: Sequence[ReportRun]) -> Section:
    """:func:`allocator.analysis.audit.audit` of every run: Gini, top-decile share, ordering
    violations, what explains them and what remains unexplained."""
    rows = []
    data = []
    for r in runs:
        a = r.audit
        data.append(
            {
                "label": r.label,
                "gini": a.gini,
                "top_decile_share": a.top_decile_share,
                "ok": a.ok,
                "notes": list(a.notes),
                **{
                    v.kind: {
                        "raw": v.raw,
                        "by_factor": dict(v.by_factor),
                        "unexplained": v.unexplained,
                        "expected_zero": v.expected_zero,
                    }
                    for v in (a.monotonicity, a.envy)
                },
            }
        )
        for v in (a.monotonicity, a.envy):
            rows.append(
                (
                    r.label,
                    _KIND_WORDS.get(v.kind, v.kind),
                    count(v.raw),
                    "; ".join(f"{_FACTOR_WORDS.get(k, k)} {n:,}" for k, n in v.by_factor),
                    count(v.unexplained),
                    pass_fail(v.ok),
                )
            )
    gini_rows = tuple(
        (r.label, num(r.audit.gini, "{:.4f}"), pct(r.audit.top_decile_share), pass_fail(r.audit.ok))
        for r in runs
    )
    return Section(
        id="fairness",
        title="Fairness audit",
        data={"runs": data},
        tables=(
            Table(
                columns=("run", "Gini", "money to the tenth with the largest vouchers", "audit"),
                rows=gini_rows,
                status_column=3,
            ),
            Table(
                columns=(
                    "run",
                    "pairs of users where one",
                    "pairs",
                    "explained by",
                    "unexplained",
                    "status",
                ),
                rows=tuple(rows),
                caption=(
                    "pairs of users paid in the opposite order of their losses, and the rule "
                    "that explains them (`allocator audit` defines each)"
                ),
                status_column=5,
            ),
        ),
        notes=tuple(f"{r.label}: {n}" for r in runs for n in r.audit.notes),
        failed=not all(r.audit.ok for r in runs),
    )


# --------------------------------------------------------------------------------------------
# the eligibility cliff
# --------------------------------------------------------------------------------------------


def cliff_section(main: ReportRun) -> Section:
    """Users excluded just below the loss and ratio thresholds, and the median voucher just
    above them (:func:`allocator.analysis.sensitivity.cliff_analysis`), as a chart of the users
    either side of each threshold and a two-row summary."""
    c = cliff_analysis(
        main.run.excluded,
        main.run.allocations,
        main.scenario.eligibility,
        loss_band_usd=LOSS_BAND_USD,
        ratio_band=RATIO_BAND,
    )
    data = c.to_dict()
    loss_lo, ratio_lo = c.min_loss_usd - c.loss_band_usd, c.min_loss_ratio - c.ratio_band

    def upto(phase_in: object, text: str) -> str:
        # a band's lower end must be passed, not reached: "below" then includes it
        return f"up to and including {text}" if phase_in else f"to just under {text}"

    def paid(median: float | None) -> str:
        return "-" if median is None else usd_amount(median)

    summary = Table(
        columns=(
            "excluded for",
            "just below means",
            "users just below",
            "their loss (USD)",
            "users just above (eligible)",
            "their median voucher",
        ),
        rows=(
            (
                reason_words(N.REASON_BELOW_MIN_LOSS, main.scenario.eligibility),
                f"loss from {usd_amount(loss_lo)} "
                + upto(c.loss_phase_in, usd_amount(c.min_loss_usd)),
                count(c.below_loss_users),
                usd(c.below_loss_total_usd),
                count(c.eligible_above_loss_users),
                paid(c.voucher_above_loss_usd),
            ),
            (
                reason_words(N.REASON_BELOW_LOSS_RATIO, main.scenario.eligibility),
                f"loss from {percent(ratio_lo)} "
                + upto(c.ratio_phase_in, percent(c.min_loss_ratio))
                + " of net assets",
                count(c.below_ratio_users),
                usd(c.below_ratio_total_usd),
                count(c.eligible_above_ratio_users),
                paid(c.voucher_above_ratio_usd),
            ),
        ),
        caption=(
            f"users excluded just below a threshold, and what users just above it are paid "
            f"({c.below_loss_only_users:,} of those below the loss threshold, "
            f"{format_usd(c.below_loss_only_total_usd, currency=True)} of loss, would pass the "
            "loss-share rule)"
        ),
    )
    sides = []
    for key, name, kind, threshold, median in (
        ("loss_hist", "loss (USD)", "usd", c.min_loss_usd, c.voucher_above_loss_usd),
        (
            "ratio_hist",
            "loss as a share of net assets",
            "share",
            c.min_loss_ratio,
            c.voucher_above_ratio_usd,
        ),
    ):
        hist = data[key]
        at = usd_amount(threshold) if kind == "usd" else percent(threshold)
        sides.append(
            (
                name,
                kind,
                threshold,
                np.asarray(hist["edges"], dtype=np.float64),
                np.asarray(hist["excluded"], dtype=np.float64),
                np.asarray(hist["eligible"], dtype=np.float64),
                f"threshold {at}: users just above it are paid {paid(median)} (median)",
            )
        )
    return Section(
        id="cliff",
        title="Who just misses out: the eligibility thresholds",
        data={"source": "allocator.analysis.sensitivity.cliff_analysis", **data},
        tables=(summary,),
        charts=(charts.cliff_chart(sides, label=main.label),),
        notes=(
            "a user just below a threshold gets nothing, one just above it gets the voucher in "
            "the last column: the height of the cliff",
        ),
    )


# --------------------------------------------------------------------------------------------
# fairness axioms
# --------------------------------------------------------------------------------------------

#: What each axiom of :func:`allocator.analysis.axioms_run.run_axioms` asks, in words.
_AXIOM_WORDS = {
    "budget_balance": "the whole budget is paid out",
    "award_at_most_claim": "nobody is paid more than they lost",
    "equal_treatment_of_equals": "users alike in loss, weight and bounds are paid the same",
    "order_preservation": "more loss never means a smaller voucher, or a smaller loss left over",
    "claims_monotonicity": "a user whose loss grows is not paid less",
    "resource_monotonicity": "a bigger budget pays nobody less",
    "consistency": "removing some users with their vouchers leaves the others' vouchers alone",
    "composition": "paying half the budget, then the rest, gives the same vouchers",
    "split_merge_gain": "splitting or merging accounts does not pay",
}


def axioms_section(runs: Sequence[ReportRun], sample: int) -> Section:
    """:func:`allocator.analysis.axioms_run.run_axioms` of every run, side by side: which axioms
    hold, how many cases fail, and what theory expects of the main run's rule."""
    reports = [run_axioms(r.run.path, sample=sample) for r in runs]
    names = [a.name for a in reports[0].axioms]
    # the axiom's name stays first (the name `allocator axioms` prints) and each run's verdict
    # follows it, so the JSON table's rows keep their columns; the words come last
    rows = tuple(
        (
            name,
            *(verdict(rep.axioms[i]) for rep in reports),
            _AXIOM_WORDS.get(name, name.replace("_", " ")),
        )
        for i, name in enumerate(names)
    )
    main = reports[0]
    expected = tuple((a.name, a.expected) for a in main.axioms)
    notes = tuple(
        f"{runs[0].label}: {a.name} fails, e.g. {record_words(a.worst[0])}"
        for a in main.axioms
        if not a.holds and a.worst
    )
    return Section(
        id="axioms",
        title="Fairness axioms",
        data={"sample": sample, "runs": [rep.to_dict() for rep in reports]},
        tables=(
            Table(
                columns=("axiom", *(r.label for r in runs), "what it asks"),
                rows=rows,
                caption=f"measured on each run's own problem at full size ({sample:,} users "
                "sampled for the perturbations; `allocator axioms RUN_DIR` explains each)",
            ),
            Table(
                columns=(
                    "axiom",
                    f"what theory expects of the {rule_title(runs[0].scenario.objective.rule)} "
                    "rule",
                ),
                rows=expected,
            ),
        ),
        notes=notes,
    )
