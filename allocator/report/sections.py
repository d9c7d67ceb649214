"""The report's sections read from the run directories: each one's data, tables and charts.

One function per section, each taking the loaded runs (:class:`ReportRun`, the reported run
first) and returning a :class:`Section`. The sections that re-solve the run's scenario, the
alpha sweep and the shadow price against the budget, are in
:mod:`allocator.report.sweep_sections`.
"""

from __future__ import annotations

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
    HIST_BINS,
    LORENZ_POINTS,
    LOSS_BAND_USD,
    RATIO_BAND,
    SCATTER_MAX_POINTS,
    SCATTER_SEED,
    Chart,
    Section,
    Table,
)

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
        return f"alpha-fair, alpha {objective.alpha:g}"
    section = r.run.manifest.get("rule") or {}
    parameter, stage = section.get("parameter"), section.get("stage", 0)
    if not isinstance(parameter, (int, float)):
        return objective.rule
    words = describe(
        objective.rule, float(parameter), int(stage), coverage=objective.form == "coverage"
    )
    return f"{objective.rule}: {words}"


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
        "floor": counts.get("floor"),
        "interior": counts.get("interior"),
        "cap": counts.get("cap"),
        "shadow_price": man.get("shadow_price"),
        "rule": r.scenario.objective.rule,
        "rule_in_words": rule_in_words(r),
        "solver_requested": solver.get("requested"),
        "solver_used": solver.get("used"),
        "solver_status": solver.get("status"),
        "certified": _certified(man, "certificate"),
        "certified_rounded": _certified(man, "certificate_rounded"),
        "checks_ok": r.checks.ok,
    }


#: Rows of the summary table: the row's name and how a run's :func:`summary_data` fills it.
_SUMMARY_ROWS: tuple[tuple[str, Callable[[Mapping[str, Any]], str]], ...] = (
    ("scenario", lambda d: str(d["scenario"])),
    ("liquidated users", lambda d: count(d["liquidated"])),
    ("eligible users", lambda d: count(d["eligible"])),
    ("excluded users", lambda d: count(d["excluded"])),
    ("budget (USD)", lambda d: usd_cents(d["budget_cents"])),
    ("paid (USD)", lambda d: usd_cents(d["paid_cents"])),
    ("unspent (USD)", lambda d: usd_cents(d["unspent_cents"])),
    ("at floor", lambda d: count(d["floor"])),
    ("interior", lambda d: count(d["interior"])),
    ("at cap", lambda d: count(d["cap"])),
    ("rule", lambda d: str(d["rule_in_words"])),
    (
        "shadow price (per USD)",
        lambda d: num(d["shadow_price"]) if d["rule"] == "alpha_fair" else "- (a claims rule)",
    ),
    ("solver", lambda d: f"{d['solver_used']} ({d['solver_status']})"),
    ("certificate holds", lambda d: yes_no(d["certified"])),
    ("certificate holds after rounding", lambda d: yes_no(d["certified_rounded"])),
    ("finance checks", lambda d: pass_fail(d["checks_ok"])),
)


def summary_section(runs: Sequence[ReportRun]) -> Section:
    """Headline numbers of every run, and excluded users by reason."""
    data = [summary_data(r) for r in runs]
    table = Table(
        columns=("", *(d["label"] for d in data)),
        rows=tuple((name, *(fmt(d) for d in data)) for name, fmt in _SUMMARY_ROWS),
        caption="headline numbers, from each run's manifest",
    )
    reasons = sorted({k for d in data for k in d["excluded_by_reason"]})
    by_reason = Table(
        columns=("excluded because", *(d["label"] for d in data)),
        rows=tuple((k, *(count(d["excluded_by_reason"].get(k, 0)) for d in data)) for k in reasons),
        caption="excluded users by the first rule they fail",
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
    """Every finance check of every run (those of ``allocator check-budget``), PASS or FAIL."""
    tables = []
    for r in runs:
        rows = tuple((pass_fail(c.ok), c.name, c.detail) for c in r.checks.checks)
        verdict = (
            f"all {len(r.checks.checks)} checks pass"
            if r.checks.ok
            else f"{len(r.checks.failures)} of {len(r.checks.checks)} checks FAIL"
        )
        tables.append(
            Table(
                columns=("status", "check", "detail"),
                rows=rows,
                caption=f"{r.label} ({r.run.path}): {verdict}",
                status_column=0,
            )
        )
    return Section(
        id="reconciliation",
        title="Finance reconciliation",
        data={"runs": [{"label": r.label, **r.checks.to_dict()} for r in runs]},
        tables=tuple(tables),
        notes=("the checks of `allocator check-budget`, from the run directory's files alone",),
        failed=not all(r.checks.ok for r in runs),
    )


# --------------------------------------------------------------------------------------------
# vouchers of the reported run
# --------------------------------------------------------------------------------------------


def histogram_section(main: ReportRun) -> Section:
    """The reported run's positive vouchers on logarithmic bins from the floor to the largest."""
    vouchers = main.vouchers_usd()
    notes: list[str] = []
    drawn: list[Chart] = []
    data: dict[str, Any] = {"users": int(vouchers.size)}
    positive = vouchers[vouchers > 0]
    if positive.size:
        lo, hi = float(positive.min()), float(positive.max())
        edges = np.geomspace(lo, hi, HIST_BINS + 1) if hi > lo else np.array([lo * 0.99, hi * 1.01])
        counts, edges = np.histogram(positive, bins=edges)
        data.update(
            {
                "bin_edges_usd": [float(x) for x in edges],
                "counts": [int(c) for c in counts],
                "zero_vouchers": int((vouchers == 0).sum()),
            }
        )
        drawn.append(
            charts.histogram_chart(positive, edges, label=main.label, users=int(vouchers.size))
        )
    else:
        notes.append("no positive vouchers to draw")
    return Section(
        id="voucher-histogram",
        title="Voucher histogram",
        data=data,
        charts=tuple(drawn),
        notes=tuple(notes),
    )


def subsample(n: int) -> np.ndarray:
    """Sorted indices of at most :data:`SCATTER_MAX_POINTS` of ``n`` users (a fixed seed)."""
    if n <= SCATTER_MAX_POINTS:
        return np.arange(n)
    rng = np.random.default_rng(SCATTER_SEED)
    return np.sort(rng.choice(n, size=SCATTER_MAX_POINTS, replace=False))


def scatter_section(main: ReportRun) -> Section:
    """Voucher against loss of the reported run's users (a fixed-seed subsample beyond
    :data:`SCATTER_MAX_POINTS`)."""
    alloc = main.run.allocations
    vouchers = main.vouchers_usd()
    loss = alloc[N.LOSS_USD].cast(pl.Float64).to_numpy()
    bound = alloc[N.BOUND].cast(pl.String).fill_null("").to_numpy()
    keep = (vouchers > 0) & (loss > 0) & np.isfinite(loss)
    idx = np.flatnonzero(keep)[subsample(int(keep.sum()))]
    subsampled = bool(idx.size < keep.sum())
    data = {
        "users": int(vouchers.size),
        "drawn": int(idx.size),
        "subsampled": subsampled,
        "subsample_seed": SCATTER_SEED if subsampled else None,
    }
    notes = []
    if subsampled:
        notes.append(f"{idx.size:,} of {int(keep.sum()):,} users drawn (fixed-seed subsample)")
    drawn = []
    if idx.size:
        drawn.append(charts.scatter_chart(loss, vouchers, bound, idx, label=main.label))
    return Section(
        id="voucher-vs-loss",
        title="Voucher against loss",
        data=data,
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
        title="Lorenz curves",
        data={"curves": curves},
        tables=(
            Table(
                columns=("run", "users", "Gini", "share of bottom 50%", "share of top 10%"),
                rows=tuple(rows),
            ),
        ),
        charts=(charts.lorenz_chart(drawn),),
    )


def coverage_section(runs: Sequence[ReportRun]) -> Section:
    """Coverage ``voucher / loss`` by loss band (users, p10, median, p90) of every run."""
    tables = []
    data = []
    band_labels = [b.label for b in runs[0].audit.coverage_by_band]
    medians: dict[str, list[float]] = {}
    for r in runs:
        bands = r.audit.coverage_by_band
        data.append({"label": r.label, "bands": [json_safe(b.__dict__) for b in bands]})
        tables.append(
            Table(
                columns=("loss band (USD)", "users", "p10", "median", "p90"),
                rows=tuple(
                    (b.label, count(b.count), pct(b.p10), pct(b.median), pct(b.p90)) for b in bands
                ),
                caption=f"{r.label}: coverage (voucher / loss) by loss band",
            )
        )
        by_label = {b.label: b.median for b in bands}
        # a band with nobody in it (no median) is drawn as an empty bar
        medians[r.label] = [by_label.get(lab) or 0.0 for lab in band_labels]
    return Section(
        id="coverage",
        title="Coverage by loss band",
        data={"runs": data},
        tables=tuple(tables),
        charts=(charts.coverage_chart(band_labels, medians),),
    )


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
                    v.kind,
                    count(v.raw),
                    "; ".join(f"{k} {n:,}" for k, n in v.by_factor),
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
                columns=("run", "Gini", "top-decile share", "audit"),
                rows=gini_rows,
                status_column=3,
            ),
            Table(
                columns=("run", "kind", "pairs", "explained by", "unexplained", "status"),
                rows=tuple(rows),
                caption="ordering violations (see `allocator audit` for definitions)",
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
    above them (:func:`allocator.analysis.sensitivity.cliff_analysis`)."""
    c = cliff_analysis(
        main.run.excluded,
        main.run.allocations,
        main.scenario.eligibility,
        loss_band_usd=LOSS_BAND_USD,
        ratio_band=RATIO_BAND,
    )
    data = c.to_dict()
    loss_lo, ratio_lo = c.min_loss_usd - c.loss_band_usd, c.min_loss_ratio - c.ratio_band
    summary = Table(
        columns=(
            "just below",
            "range",
            "excluded users",
            "their loss (USD)",
            "just above: eligible users",
            "median voucher (USD)",
        ),
        rows=(
            (
                N.REASON_BELOW_MIN_LOSS,
                # a band's lower end must be passed, not reached: "below" then includes it
                f"loss in [{loss_lo:g}, {c.min_loss_usd:g}{']' if c.loss_phase_in else ')'} USD",
                count(c.below_loss_users),
                usd(c.below_loss_total_usd),
                count(c.eligible_above_loss_users),
                usd(c.voucher_above_loss_usd),
            ),
            (
                N.REASON_BELOW_LOSS_RATIO,
                f"ratio in [{ratio_lo:g}, {c.min_loss_ratio:g}{']' if c.ratio_phase_in else ')'}",
                count(c.below_ratio_users),
                usd(c.below_ratio_total_usd),
                count(c.eligible_above_ratio_users),
                usd(c.voucher_above_ratio_usd),
            ),
        ),
        caption=(
            f"users excluded just below a threshold, and the median voucher just above it "
            f"({c.below_loss_only_users:,} of those below the loss threshold, "
            f"{format_usd(c.below_loss_only_total_usd, currency=True)} of loss, pass the ratio rule)"
        ),
    )
    tables = [summary]
    sides = []
    for key, name, threshold in (
        ("loss_hist", "loss (USD)", c.min_loss_usd),
        ("ratio_hist", "loss ratio", c.min_loss_ratio),
    ):
        hist = data[key]
        edges = np.asarray(hist["edges"], dtype=np.float64)
        excluded = np.asarray(hist["excluded"], dtype=np.float64)
        eligible = np.asarray(hist["eligible"], dtype=np.float64)
        tables.append(
            Table(
                columns=("bin", "eligible", "excluded"),
                rows=tuple(
                    (
                        f"[{edges[k]:.6g}, {edges[k + 1]:.6g})",
                        count(eligible[k]),
                        count(excluded[k]),
                    )
                    for k in range(edges.size - 1)
                ),
                caption=f"users by {name} around the threshold {threshold:g}",
            )
        )
        sides.append((name, threshold, edges, excluded, eligible))
    return Section(
        id="cliff",
        title="Cliff analysis",
        data={"source": "allocator.analysis.sensitivity.cliff_analysis", **data},
        tables=tuple(tables),
        charts=(charts.cliff_chart(sides, label=main.label),),
    )


# --------------------------------------------------------------------------------------------
# fairness axioms
# --------------------------------------------------------------------------------------------


def axioms_section(runs: Sequence[ReportRun], sample: int) -> Section:
    """:func:`allocator.analysis.axioms_run.run_axioms` of every run, side by side: which axioms
    hold, how many cases fail, and what theory expects of the main run's rule."""
    reports = [run_axioms(r.run.path, sample=sample) for r in runs]
    names = [a.name for a in reports[0].axioms]
    rows = tuple(
        (name, *(verdict(rep.axioms[i]) for rep in reports)) for i, name in enumerate(names)
    )
    main = reports[0]
    expected = tuple((a.name, a.expected) for a in main.axioms)
    notes = tuple(
        f"{runs[0].label}: {a.name} fails, e.g. {a.worst[0]}"
        for a in main.axioms
        if not a.holds and a.worst
    )
    return Section(
        id="axioms",
        title="Fairness axioms",
        data={"sample": sample, "runs": [rep.to_dict() for rep in reports]},
        tables=(
            Table(
                columns=("axiom", *(r.label for r in runs)),
                rows=rows,
                caption=f"measured on each run's own problem at full size ({sample:,} users "
                "sampled for the perturbations; `allocator axioms RUN_DIR` explains each)",
            ),
            Table(
                columns=("axiom", f"what theory expects of {runs[0].scenario.objective.rule}"),
                rows=expected,
            ),
        ),
        notes=notes,
    )
