r"""A run directory as one self-contained report: HTML (offline), strict JSON or Markdown.

:func:`build_report` reads a run directory (and any runs to compare with it) and gathers, in
order, the sections below; :func:`render_html`, :func:`render_json` and :func:`render_md` turn
the same :class:`Report` into text. Each section has a stable ``id``.

``summary``
    Scenario, liquidated / eligible / excluded users, budget, paid and unspent (cents, from the
    manifest), users at the floor, interior and at the cap, the budget's shadow price, the solver
    and whether the certificate (before and after rounding to cents) holds.
``reconciliation``
    Every finance check of :func:`allocator.analysis.checks.check_run_dir`, PASS or FAIL, for each run.
``voucher-histogram``
    Vouchers on logarithmic bins from the floor to the largest voucher.
``voucher-vs-loss``
    Voucher against loss on log-log axes, coloured by the binding bound. Above
    :data:`SCATTER_MAX_POINTS` users a fixed-seed subsample is drawn, so the picture is
    reproducible.
``lorenz``
    Lorenz curves :math:`L(k/n)` of every run (:func:`allocator.analysis.metrics.lorenz`) with their Gini.
``coverage``
    Coverage ``voucher / loss`` by loss band (users, p10, median, p90) for every run.
``sweep``
    The run's scenario re-solved on the run's own input data along ``objective.alpha``
    (``with_payouts=False``): Gini, median coverage and users at the cap at each point.
``shadow-price``
    The same scenario along the budget, from 0.5x to 1.5x the run's budget (rounded to the cent):
    the shadow price :math:`\lambda(B)` of the budget constraint
    :math:`\sum_i v_i \le B` and the number of users paid at their cap. Points the model cannot
    meet (e.g. a budget above the sum of the caps in exhaust mode) are listed with the reason.
``cliff``
    Users excluded just below a threshold: reason ``below_min_loss`` with
    ``loss_usd >= min_loss_usd - LOSS_BAND_USD`` and reason ``below_loss_ratio`` with
    ``loss_ratio >= min_loss_ratio - RATIO_BAND``, thresholds from the run's scenario. When
    :mod:`allocator.analysis.sensitivity` is installed, its ``cliff_analysis`` is added as well.
``fairness``
    :func:`allocator.analysis.audit.audit`: Gini, top-decile share, monotonicity and envy pair counts,
    what explains them and what remains unexplained.

Every run directory is read with :func:`allocator.runs.rundir.load_run` (``inputs=True``): a damaged
run directory, one changed since its run, or input files that changed or are gone are refused
with an :class:`~allocator.errors.InputError` and nothing is written. A run that passes those
checks but fails a finance check (a hand-edited manifest, a bug) is reported with the failures
marked, and ``report.ok`` is False. The sweeps have at most :data:`MAX_SWEEP_POINTS` points each.

Determinism: charts are PNG images drawn with Matplotlib's Agg renderer without a ``Software``
or date entry, numbers are formatted with fixed precision and nothing depends on the clock, so
the same run directory gives a byte-identical report. The HTML needs no network: CSS is inline
and every chart is a ``data:image/png;base64`` URI.
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from allocator import names as N
from allocator.analysis import metrics
from allocator.analysis.audit import Audit, audit
from allocator.analysis.checks import CheckReport, check_run_dir
from allocator.errors import AllocatorError, InputError
from allocator.jsonsafe import dumps, json_safe
from allocator.runs.rundir import RunDir, load_run, refuse_output_in_run
from allocator.settings.models import Scenario
from allocator.settings.scenarios import with_overrides

#: Value of ``render_json(...)["format"]``.
REPORT_FORMAT = "allocator-report/1"
#: Section ids, in the order they appear.
SECTION_IDS = (
    "summary",
    "reconciliation",
    "voucher-histogram",
    "voucher-vs-loss",
    "lorenz",
    "coverage",
    "sweep",
    "shadow-price",
    "cliff",
    "fairness",
)
FORMATS = ("html", "json", "md")
#: Points of each re-solved sweep (alpha, budget) unless told otherwise.
DEFAULT_SWEEP_POINTS = 6
#: Most points of each sweep: every point is two re-solves on the run's data (about 0.3 s at the
#: 200,000-user default size, ten times that at the stress size), and the charts gain nothing
#: from more.
MAX_SWEEP_POINTS = 50
#: Alpha values of the sweep are spaced geometrically over this range.
ALPHA_RANGE = (0.25, 8.0)
#: Budgets of the shadow-price sweep, as multiples of the run's budget.
BUDGET_RANGE = (0.5, 1.5)
#: Scatter plots draw at most this many users (a fixed-seed subsample beyond it).
SCATTER_MAX_POINTS = 20_000
SCATTER_SEED = 20251010
#: Width of the "just below" bands of the cliff section.
LOSS_BAND_USD = 10.0
RATIO_BAND = 0.05
LORENZ_POINTS = 101
HIST_BINS = 40

_DPI = 100
_BOUND_COLOURS = {
    N.BOUND_FLOOR: "#d62728",
    N.BOUND_INTERIOR: "#1f77b4",
    N.BOUND_CAP: "#2ca02c",
}


# --------------------------------------------------------------------------------------------
# the report
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Table:
    """A table of formatted cells; ``status_column`` marks a PASS/FAIL column for highlighting."""

    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    caption: str = ""
    status_column: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "caption": self.caption,
            "columns": list(self.columns),
            "rows": [list(r) for r in self.rows],
        }


@dataclass(frozen=True)
class Chart:
    """A chart as PNG bytes (deterministic: no software tag, no date)."""

    title: str
    png: bytes
    alt: str

    def data_uri(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")


@dataclass(frozen=True)
class Section:
    """One section: its id and heading, its data (JSON-safe), tables, charts and notes."""

    id: str
    title: str
    data: Mapping[str, Any]
    tables: tuple[Table, ...] = ()
    charts: tuple[Chart, ...] = ()
    notes: tuple[str, ...] = ()
    failed: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The section without its charts (their data is in ``data``)."""
        return {
            "id": self.id,
            "title": self.title,
            "failed": self.failed,
            "data": json_safe(dict(self.data)),
            "tables": [t.to_dict() for t in self.tables],
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class Report:
    """Everything a report shows; ``ok`` when every finance check of every run passed."""

    title: str
    run_dir: str
    compare: tuple[str, ...]
    sections: tuple[Section, ...]
    failures: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not self.failures

    def section(self, section_id: str) -> Section:
        for s in self.sections:
            if s.id == section_id:
                return s
        raise KeyError(section_id)

    @property
    def n_charts(self) -> int:
        return sum(len(s.charts) for s in self.sections)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": REPORT_FORMAT,
            "title": self.title,
            "run_dir": self.run_dir,
            "compare": list(self.compare),
            "ok": self.ok,
            "failures": list(self.failures),
            "sections": [s.to_dict() for s in self.sections],
        }


@dataclass(frozen=True, eq=False)
class _Run:
    label: str
    run: RunDir
    scenario: Scenario
    checks: CheckReport
    audit: Audit


# --------------------------------------------------------------------------------------------
# formatting and charts
# --------------------------------------------------------------------------------------------


def _usd_cents(cents: int | None) -> str:
    if cents is None:
        return "-"
    sign = "-" if cents < 0 else ""
    whole, frac = divmod(abs(int(cents)), 100)
    return f"{sign}{whole:,}.{frac:02d}"


def _num(x: Any, fmt: str = "{:.6g}") -> str:
    if x is None:
        return "-"
    if isinstance(x, float) and not math.isfinite(x):
        return "inf" if x > 0 else ("-inf" if x < 0 else "nan")
    try:
        return fmt.format(x)
    except (TypeError, ValueError):
        return str(x)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100.0 * x:.2f}%"


def _int(x: Any) -> str:
    return "-" if x is None else f"{int(x):,}"


def _figure(width: float = 7.0, height: float = 4.0):
    # Figure + Agg canvas directly, not pyplot: no global state, no backend switch for callers.
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=_DPI, layout="constrained")


def _png(fig) -> bytes:
    import matplotlib

    buf = io.BytesIO()
    with matplotlib.rc_context({"svg.hashsalt": "allocator-report"}):
        fig.savefig(buf, format="png", dpi=_DPI, metadata={"Software": None})
    return buf.getvalue()


def _chart(fig, title: str, alt: str) -> Chart:
    return Chart(title=title, png=_png(fig), alt=alt)


# --------------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------------


def _load(path: Path, label_taken: set[str]) -> _Run:
    # A damaged or changed run directory, or input data changed since the run, is refused
    # (exit 2) rather than reported: the finance checks below read the liquidations input and
    # the sweeps re-solve on all four tables.
    run = load_run(path, inputs=True)
    scenario = run.scenario
    label = scenario.name
    if label in label_taken:
        label = f"{scenario.name} [{path.name}]"
    label_taken.add(label)
    checks = check_run_dir(path)
    try:
        result = audit(run.allocations, objective=scenario.objective)
    except ValueError as exc:
        raise InputError(f"{path / N.ALLOCATIONS_FILE}: cannot be audited ({exc}).") from None
    return _Run(label=label, run=run, scenario=scenario, checks=checks, audit=result)


# --------------------------------------------------------------------------------------------
# sections
# --------------------------------------------------------------------------------------------


def _certified(man: Mapping[str, Any], key: str) -> bool | None:
    cert = man.get(key)
    if isinstance(cert, Mapping) and isinstance(cert.get("certified"), bool):
        return cert["certified"]
    return None


def summary_data(r: _Run) -> dict[str, Any]:
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
        "solver_requested": solver.get("requested"),
        "solver_used": solver.get("used"),
        "solver_status": solver.get("status"),
        "certified": _certified(man, "certificate"),
        "certified_rounded": _certified(man, "certificate_rounded"),
        "checks_ok": r.checks.ok,
    }


def _yes_no(x: bool | None) -> str:
    return "-" if x is None else ("yes" if x else "NO")


def _summary_section(runs: Sequence[_Run]) -> Section:
    data = [summary_data(r) for r in runs]
    rows_spec: tuple[tuple[str, Any], ...] = (
        ("scenario", lambda d: d["scenario"]),
        ("liquidated users", lambda d: _int(d["liquidated"])),
        ("eligible users", lambda d: _int(d["eligible"])),
        ("excluded users", lambda d: _int(d["excluded"])),
        ("budget (USD)", lambda d: _usd_cents(d["budget_cents"])),
        ("paid (USD)", lambda d: _usd_cents(d["paid_cents"])),
        ("unspent (USD)", lambda d: _usd_cents(d["unspent_cents"])),
        ("at floor", lambda d: _int(d["floor"])),
        ("interior", lambda d: _int(d["interior"])),
        ("at cap", lambda d: _int(d["cap"])),
        ("shadow price (per USD)", lambda d: _num(d["shadow_price"])),
        ("solver", lambda d: f"{d['solver_used']} ({d['solver_status']})"),
        ("certificate holds", lambda d: _yes_no(d["certified"])),
        ("certificate holds after rounding", lambda d: _yes_no(d["certified_rounded"])),
        ("finance checks", lambda d: "PASS" if d["checks_ok"] else "FAIL"),
    )
    table = Table(
        columns=("", *(d["label"] for d in data)),
        rows=tuple((name, *(fmt(d) for d in data)) for name, fmt in rows_spec),
        caption="headline numbers, from each run's manifest",
    )
    reasons = sorted({k for d in data for k in d["excluded_by_reason"]})
    by_reason = Table(
        columns=("excluded because", *(d["label"] for d in data)),
        rows=tuple((k, *(_int(d["excluded_by_reason"].get(k, 0)) for d in data)) for k in reasons),
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


def _reconciliation_section(runs: Sequence[_Run]) -> Section:
    tables = []
    for r in runs:
        rows = tuple(("PASS" if c.ok else "FAIL", c.name, c.detail) for c in r.checks.checks)
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


def _usd(r: _Run) -> np.ndarray:
    return r.run.allocations[N.VOUCHER_CENTS].cast(pl.Int64).to_numpy() / 100.0


def _histogram_section(main: _Run) -> Section:
    usd = _usd(main)
    notes: list[str] = []
    charts: list[Chart] = []
    data: dict[str, Any] = {"users": int(usd.size)}
    positive = usd[usd > 0]
    if positive.size:
        lo, hi = float(positive.min()), float(positive.max())
        edges = np.geomspace(lo, hi, HIST_BINS + 1) if hi > lo else np.array([lo * 0.99, hi * 1.01])
        counts, edges = np.histogram(positive, bins=edges)
        data.update(
            {
                "bin_edges_usd": [float(x) for x in edges],
                "counts": [int(c) for c in counts],
                "zero_vouchers": int((usd == 0).sum()),
            }
        )
        fig = _figure()
        ax = fig.subplots()
        ax.hist(positive, bins=edges, color="#1f77b4", edgecolor="white", linewidth=0.3)
        ax.set_xscale("log")
        ax.set_xlabel("voucher (USD, log scale)")
        ax.set_ylabel("users")
        ax.set_title(f"{main.label}: vouchers of {usd.size:,} users")
        charts.append(_chart(fig, "voucher histogram", "histogram of vouchers on logarithmic bins"))
    else:
        notes.append("no positive vouchers to draw")
    return Section(
        id="voucher-histogram",
        title="Voucher histogram",
        data=data,
        charts=tuple(charts),
        notes=tuple(notes),
    )


def _subsample(n: int) -> np.ndarray:
    if n <= SCATTER_MAX_POINTS:
        return np.arange(n)
    rng = np.random.default_rng(SCATTER_SEED)
    return np.sort(rng.choice(n, size=SCATTER_MAX_POINTS, replace=False))


def _scatter_section(main: _Run) -> Section:
    alloc = main.run.allocations
    usd = _usd(main)
    loss = alloc[N.LOSS_USD].cast(pl.Float64).to_numpy()
    bound = alloc[N.BOUND].cast(pl.String).fill_null("").to_numpy()
    keep = (usd > 0) & (loss > 0) & np.isfinite(loss)
    idx = np.flatnonzero(keep)[_subsample(int(keep.sum()))]
    data = {
        "users": int(usd.size),
        "drawn": int(idx.size),
        "subsampled": bool(idx.size < keep.sum()),
        "subsample_seed": SCATTER_SEED if idx.size < keep.sum() else None,
    }
    notes = []
    if data["subsampled"]:
        notes.append(f"{idx.size:,} of {int(keep.sum()):,} users drawn (fixed-seed subsample)")
    charts = []
    if idx.size:
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
        ax.set_title(f"{main.label}: voucher against loss")
        ax.legend(loc="lower right", fontsize=8, markerscale=3)
        charts.append(
            _chart(fig, "voucher against loss", "log-log scatter of voucher against loss")
        )
    return Section(
        id="voucher-vs-loss",
        title="Voucher against loss",
        data=data,
        charts=tuple(charts),
        notes=tuple(notes),
    )


def _lorenz_section(runs: Sequence[_Run]) -> Section:
    grid = np.linspace(0.0, 1.0, LORENZ_POINTS)
    curves = []
    fig = _figure(6.0, 5.0)
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=0.8, label="equality")
    rows = []
    for r in runs:
        usd = _usd(r)
        if usd.size == 0:
            curves.append({"label": r.label, "gini": None, "population": [], "share": []})
            rows.append((r.label, "0", "-", "-", "-"))
            continue
        pop, share = metrics.lorenz(usd)
        on_grid = np.interp(grid, pop, share)
        g = metrics.gini(usd)
        curves.append(
            {
                "label": r.label,
                "gini": g,
                "population": grid.tolist(),
                "share": on_grid.tolist(),
            }
        )
        ax.plot(pop, share, linewidth=1.2, label=f"{r.label} (Gini {g:.3f})")
        rows.append(
            (
                r.label,
                _int(usd.size),
                f"{g:.4f}",
                _pct(float(np.interp(0.5, pop, share))),
                _pct(metrics.top_share(usd, 0.1)),
            )
        )
    ax.set_xlabel("share of users (smallest vouchers first)")
    ax.set_ylabel("share of the money paid")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title("Lorenz curves")
    return Section(
        id="lorenz",
        title="Lorenz curves",
        data={"curves": curves},
        tables=(
            Table(
                columns=(
                    "run",
                    "users",
                    "Gini",
                    "share of bottom 50%",
                    "share of top 10%",
                ),
                rows=tuple(rows),
            ),
        ),
        charts=(
            _chart(
                fig,
                "Lorenz curves",
                "Lorenz curves of every run against the line of equality",
            ),
        ),
    )


def _coverage_section(runs: Sequence[_Run]) -> Section:
    tables = []
    data = []
    labels = [b.label for b in runs[0].audit.coverage_by_band]
    for r in runs:
        bands = r.audit.coverage_by_band
        data.append({"label": r.label, "bands": [json_safe(b.__dict__) for b in bands]})
        tables.append(
            Table(
                columns=("loss band (USD)", "users", "p10", "median", "p90"),
                rows=tuple(
                    (b.label, _int(b.count), _pct(b.p10), _pct(b.median), _pct(b.p90))
                    for b in bands
                ),
                caption=f"{r.label}: coverage (voucher / loss) by loss band",
            )
        )
    fig = _figure()
    ax = fig.subplots()
    width = 0.8 / max(len(runs), 1)
    x = np.arange(len(labels))
    for k, r in enumerate(runs):
        med = {b.label: b.median for b in r.audit.coverage_by_band}
        heights = [100.0 * med[lab] if med.get(lab) is not None else 0.0 for lab in labels]
        ax.bar(x + (k - (len(runs) - 1) / 2) * width, heights, width=width, label=r.label)
    ax.set_xticks(x, labels)
    ax.set_xlabel("loss band (USD)")
    ax.set_ylabel("median coverage (%)")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    ax.set_title("median coverage by loss band")
    return Section(
        id="coverage",
        title="Coverage by loss band",
        data={"runs": data},
        tables=tuple(tables),
        charts=(
            _chart(
                fig,
                "coverage by loss band",
                "median coverage by loss band for every run",
            ),
        ),
    )


def _open_session(main: _Run) -> tuple[Any | None, str | None]:
    """The run's own input data (verified by :func:`load_run`), or ``(None, why not)`` when the
    data directory no longer loads as the run's."""
    from allocator.vouchers.pipeline import DataSession

    data_dir = main.run.data_dir
    assert data_dir is not None  # _load verified the inputs
    try:
        session = DataSession.open(data_dir)
    except AllocatorError as exc:
        return None, f"the run's input data cannot be loaded: {exc}"
    for stem, path in session.inputs.paths.items():
        meta = main.run.manifest["inputs"].get(stem)
        if not isinstance(meta, Mapping) or Path(path).resolve() != Path(meta["path"]).resolve():
            return (
                None,
                f"the data directory {data_dir} now reads {stem} from {path}, not the run's file",
            )
    return session, None


def _resolve(session: Any, scenario: Scenario) -> Any:
    from allocator.vouchers.pipeline import allocate

    return allocate(session, scenario, with_payouts=False)


def _point(session: Any, scenario: Scenario) -> dict[str, Any]:
    try:
        run = _resolve(session, scenario)
    except AllocatorError as exc:
        return {"status": f"{type(exc).__name__}: {exc}"}
    m = metrics.summary(
        run.allocations,
        budget_cents=run.budget_cents,
        shadow_price=run.allocation.shadow_price,
    )
    return {
        "status": "ok",
        "gini": m["gini"],
        "median_coverage": m["median_coverage"],
        "n_floor": m["n_floor"],
        "n_cap": m["n_cap"],
        "paid_cents": m["paid_cents"],
        "shadow_price": m["shadow_price"],
    }


def _skipped(section_id: str, title: str, why: str) -> Section:
    return Section(
        id=section_id,
        title=title,
        data={"skipped": why, "points": []},
        notes=(f"not computed: {why}",),
    )


def _sweep_section(main: _Run, session: Any, points: int) -> Section:
    alpha_now = float(main.scenario.objective.alpha)
    alphas = [float(a) for a in np.round(np.geomspace(*ALPHA_RANGE, points), 4)]
    rows_data = []
    for a in alphas:
        scen = with_overrides(main.scenario, {"objective.alpha": a})
        rows_data.append({"alpha": a, **_point(session, scen)})
    ok = [p for p in rows_data if p["status"] == "ok"]
    table = Table(
        columns=(
            "alpha",
            "Gini",
            "median coverage",
            "at floor",
            "at cap",
            "shadow price",
            "status",
        ),
        rows=tuple(
            (
                _num(p["alpha"], "{:.4g}"),
                _num(p.get("gini"), "{:.4f}"),
                _pct(p.get("median_coverage")),
                _int(p.get("n_floor")),
                _int(p.get("n_cap")),
                _num(p.get("shadow_price")),
                p["status"],
            )
            for p in rows_data
        ),
        caption=f"{main.label} re-solved on its own data; the run itself has alpha = {alpha_now:g}",
    )
    charts = []
    if ok:
        fig = _figure(10.0, 3.4)
        axes = fig.subplots(1, 3)
        x = [p["alpha"] for p in ok]
        for ax, key, name in zip(
            axes,
            ("gini", "median_coverage", "n_cap"),
            ("Gini", "median coverage", "users at cap"),
        ):
            ax.plot(
                x,
                [p[key] if p[key] is not None else np.nan for p in ok],
                marker="o",
                ms=3,
            )
            ax.axvline(alpha_now, color="grey", linestyle=":", linewidth=0.8)
            ax.set_xscale("log")
            # label the swept values only: log-scale minor labels overlap on a short range
            ax.minorticks_off()
            ax.set_xticks(x, [f"{a:g}" for a in x])
            ax.set_xlabel("alpha (log scale)")
            ax.set_title(name)
        charts.append(
            _chart(
                fig,
                "alpha sweep",
                "Gini, median coverage and users at cap against alpha",
            )
        )
    return Section(
        id="sweep",
        title="Alpha sweep",
        data={"alpha_of_run": alpha_now, "points": rows_data},
        tables=(table,),
        charts=tuple(charts),
    )


def _shadow_section(main: _Run, session: Any, points: int) -> Section:
    budget = float(main.scenario.budget.total_usd)
    budgets = sorted(
        {float(b) for b in np.round(np.linspace(*BUDGET_RANGE, points) * budget, 2) if b > 0}
    )
    rows_data = []
    for b in budgets:
        try:
            scen = with_overrides(main.scenario, {"budget.total_usd": b})
        except AllocatorError as exc:
            rows_data.append({"budget_usd": b, "status": f"{type(exc).__name__}: {exc}"})
            continue
        rows_data.append({"budget_usd": b, **_point(session, scen)})
    ok = [p for p in rows_data if p["status"] == "ok"]
    table = Table(
        columns=(
            "budget (USD)",
            "shadow price",
            "at cap",
            "at floor",
            "paid (USD)",
            "status",
        ),
        rows=tuple(
            (
                _usd_cents(round(p["budget_usd"] * 100)),
                _num(p.get("shadow_price")),
                _int(p.get("n_cap")),
                _int(p.get("n_floor")),
                _usd_cents(p.get("paid_cents")),
                p["status"],
            )
            for p in rows_data
        ),
        caption=f"{main.label} re-solved at budgets from {BUDGET_RANGE[0]}x to {BUDGET_RANGE[1]}x its own",
    )
    charts = []
    if ok:
        fig = _figure()
        ax = fig.subplots()
        x = [p["budget_usd"] for p in ok]
        prices = [p["shadow_price"] if p["shadow_price"] is not None else np.nan for p in ok]
        ax.plot(x, prices, marker="o", ms=3, color="#1f77b4", label="shadow price")
        ax.set_xlabel("budget (USD)")
        ax.set_ylabel("shadow price (per USD)", color="#1f77b4")
        if all(np.isfinite(prices)) and min(prices) > 0:
            ax.set_yscale("log")
        ax.axvline(budget, color="grey", linestyle=":", linewidth=0.8)
        ax2 = ax.twinx()
        ax2.plot(
            x,
            [p["n_cap"] for p in ok],
            marker="s",
            ms=3,
            color="#2ca02c",
            label="users at cap",
        )
        ax2.set_ylabel("users paid at cap", color="#2ca02c")
        ax.set_title(f"{main.label}: shadow price and users at cap against the budget")
        charts.append(
            _chart(fig, "shadow price", "shadow price and users at cap against the budget")
        )
    return Section(
        id="shadow-price",
        title="Shadow price against the budget",
        data={"budget_of_run_usd": budget, "points": rows_data},
        tables=(table,),
        charts=tuple(charts),
    )


def cliff_table(
    excluded: pl.DataFrame,
    *,
    min_loss_usd: float,
    min_loss_ratio: float,
    loss_band_usd: float = LOSS_BAND_USD,
    ratio_band: float = RATIO_BAND,
) -> list[dict[str, Any]]:
    """Users excluded just below the loss and the ratio thresholds.

    ``below_min_loss`` users with ``loss_usd >= min_loss_usd - loss_band_usd``, and
    ``below_loss_ratio`` users with ``loss_ratio >= min_loss_ratio - ratio_band``: how many, and
    their losses (total, median, largest). Returns one dict per rule.
    """
    out = []
    specs = (
        (N.REASON_BELOW_MIN_LOSS, N.LOSS_USD, min_loss_usd, loss_band_usd),
        (N.REASON_BELOW_LOSS_RATIO, N.LOSS_RATIO, min_loss_ratio, ratio_band),
    )
    for reason, column, threshold, band in specs:
        frame = excluded.filter(pl.col(N.REASON) == reason)
        values = (
            frame[column].cast(pl.Float64)
            if column in frame.columns
            else pl.Series([], dtype=pl.Float64)
        )
        near = frame.filter(values >= threshold - band) if frame.height else frame
        loss = (
            near[N.LOSS_USD].cast(pl.Float64).to_numpy()
            if near.height
            else np.zeros(0, dtype=np.float64)
        )
        out.append(
            {
                "reason": reason,
                "column": column,
                "threshold": threshold,
                "band": band,
                "excluded_for_reason": frame.height,
                "just_below": near.height,
                "loss_total_usd": float(loss.sum()) if loss.size else 0.0,
                "loss_median_usd": float(np.median(loss)) if loss.size else None,
                "loss_max_usd": float(loss.max()) if loss.size else None,
                "values": sorted(float(v) for v in near[column].cast(pl.Float64).to_list())
                if near.height
                else [],
            }
        )
    return out


def _cliff_from_sensitivity(main: _Run, rules: Any) -> Section | None:
    """The cliff section from :func:`allocator.analysis.sensitivity.cliff_analysis`, when it is installed."""
    try:
        from allocator.analysis.sensitivity import cliff_analysis
    except ImportError:
        return None
    c = cliff_analysis(
        main.run.excluded,
        main.run.allocations,
        rules,
        loss_band_usd=LOSS_BAND_USD,
        ratio_band=RATIO_BAND,
    )
    data = c.to_dict()
    loss_lo, ratio_lo = (
        c.min_loss_usd - c.loss_band_usd,
        c.min_loss_ratio - c.ratio_band,
    )
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
                _int(c.below_loss_users),
                _num(c.below_loss_total_usd, "{:,.2f}"),
                _int(c.eligible_above_loss_users),
                _num(c.voucher_above_loss_usd, "{:,.2f}"),
            ),
            (
                N.REASON_BELOW_LOSS_RATIO,
                f"ratio in [{ratio_lo:g}, {c.min_loss_ratio:g}{']' if c.ratio_phase_in else ')'}",
                _int(c.below_ratio_users),
                _num(c.below_ratio_total_usd, "{:,.2f}"),
                _int(c.eligible_above_ratio_users),
                _num(c.voucher_above_ratio_usd, "{:,.2f}"),
            ),
        ),
        caption=(
            f"users excluded just below a threshold, and the median voucher just above it "
            f"({c.below_loss_only_users:,} of those below the loss threshold, "
            f"USD {c.below_loss_only_total_usd:,.2f} of loss, pass the ratio rule)"
        ),
    )
    tables = [summary]
    fig = _figure(10.0, 3.4)
    axes = fig.subplots(1, 2)
    for ax, (key, name, threshold) in zip(
        axes,
        (
            ("loss_hist", "loss (USD)", c.min_loss_usd),
            ("ratio_hist", "loss ratio", c.min_loss_ratio),
        ),
    ):
        hist = data[key]
        edges = np.asarray(hist["edges"], dtype=np.float64)
        excl = np.asarray(hist["excluded"], dtype=np.float64)
        elig = np.asarray(hist["eligible"], dtype=np.float64)
        tables.append(
            Table(
                columns=("bin", "eligible", "excluded"),
                rows=tuple(
                    (
                        f"[{edges[k]:.6g}, {edges[k + 1]:.6g})",
                        _int(elig[k]),
                        _int(excl[k]),
                    )
                    for k in range(edges.size - 1)
                ),
                caption=f"users by {name} around the threshold {threshold:g}",
            )
        )
        ax.stairs(
            excl,
            edges,
            fill=True,
            color="#ff7f0e",
            alpha=0.8,
            label="excluded by the rule",
        )
        ax.stairs(elig, edges, fill=True, color="#1f77b4", alpha=0.6, label="eligible")
        ax.axvline(threshold, color="black", linestyle="--", linewidth=0.8)
        ax.set_xlabel(name)
        ax.set_ylabel("users")
        ax.legend(fontsize=7)
    fig.suptitle(f"{main.label}: users around the eligibility thresholds")
    chart = _chart(fig, "cliff", "users just below and above the loss and ratio thresholds")
    return Section(
        id="cliff",
        title="Cliff analysis",
        data={"source": "allocator.analysis.sensitivity.cliff_analysis", **data},
        tables=tuple(tables),
        charts=(chart,),
    )


def _cliff_section(main: _Run) -> Section:
    rules = main.scenario.eligibility
    section = _cliff_from_sensitivity(main, rules)
    if section is not None:
        return section
    rows_data = cliff_table(
        main.run.excluded,
        min_loss_usd=float(rules.min_loss_usd),
        min_loss_ratio=float(rules.min_loss_ratio),
    )
    table = Table(
        columns=(
            "rule",
            "threshold",
            "band below",
            "excluded for it",
            "just below",
            "their loss (USD)",
            "median loss",
            "largest loss",
        ),
        rows=tuple(
            (
                d["reason"],
                _num(d["threshold"], "{:g}"),
                _num(d["band"], "{:g}"),
                _int(d["excluded_for_reason"]),
                _int(d["just_below"]),
                _num(d["loss_total_usd"], "{:,.2f}"),
                _num(d["loss_median_usd"], "{:,.2f}"),
                _num(d["loss_max_usd"], "{:,.2f}"),
            )
            for d in rows_data
        ),
        caption="users excluded just below a published threshold (from excluded.parquet)",
    )
    data = {
        "source": "excluded.parquet",
        "just_below": [{k: v for k, v in d.items() if k != "values"} for d in rows_data],
    }
    charts = []
    if any(d["values"] for d in rows_data):
        fig = _figure(10.0, 3.4)
        axes = fig.subplots(1, 2)
        for ax, d, name in zip(axes, rows_data, ("loss (USD)", "loss ratio")):
            values = d["values"]
            lo = d["threshold"] - d["band"]
            ax.hist(
                values,
                bins=np.linspace(lo, d["threshold"], 11),
                color="#ff7f0e",
                edgecolor="white",
            )
            ax.axvline(d["threshold"], color="black", linestyle="--", linewidth=0.8)
            ax.set_xlabel(name)
            ax.set_ylabel("excluded users")
            ax.set_title(f"{d['reason']}: {len(values):,} just below")
        charts.append(
            _chart(fig, "cliff", "excluded users just below the loss and ratio thresholds")
        )
    return Section(
        id="cliff",
        title="Cliff analysis",
        data=data,
        tables=(table,),
        charts=tuple(charts),
        notes=("computed from excluded.parquet (allocator.analysis.sensitivity is not installed)",),
    )


def _fairness_section(runs: Sequence[_Run]) -> Section:
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
                    _int(v.raw),
                    "; ".join(f"{k} {n:,}" for k, n in v.by_factor),
                    _int(v.unexplained),
                    "PASS" if v.ok else "FAIL",
                )
            )
    gini_rows = tuple(
        (
            d["label"],
            _num(d["gini"], "{:.4f}"),
            _pct(d["top_decile_share"]),
            "PASS" if d["ok"] else "FAIL",
        )
        for d in data
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
                columns=(
                    "run",
                    "kind",
                    "pairs",
                    "explained by",
                    "unexplained",
                    "status",
                ),
                rows=tuple(rows),
                caption="ordering violations (see `allocator audit` for definitions)",
                status_column=5,
            ),
        ),
        notes=tuple(f"{d['label']}: {n}" for d in data for n in d["notes"]),
        failed=not all(d["ok"] for d in data),
    )


# --------------------------------------------------------------------------------------------
# entry points
# --------------------------------------------------------------------------------------------


def build_report(
    run_dir: str | Path,
    *,
    compare: Sequence[str | Path] = (),
    sweep_points: int = DEFAULT_SWEEP_POINTS,
) -> Report:
    """Gather every section of the report of ``run_dir`` (and the runs compared with it).

    Parameters
    ----------
    run_dir
        The run directory reported on.
    compare
        Further run directories shown beside it (Lorenz curves, coverage, checks, audit).
    sweep_points
        Points of the alpha and budget sweeps (re-solved on the run's input data), 0 (skip) to
        :data:`MAX_SWEEP_POINTS`.

    Returns
    -------
    Report
        ``report.ok`` is False when a finance check of any run fails; the report still holds
        every section, with the failures marked.

    Raises
    ------
    InputError
        ``sweep_points`` is out of range, or a run directory is missing, damaged or changed since
        its run, or its input files are (:func:`allocator.runs.rundir.load_run`). A run directory
        that passes those checks but fails a finance check (e.g. a hand-edited manifest) is
        reported, with the failures marked.
    """
    if not 0 <= sweep_points <= MAX_SWEEP_POINTS:
        raise InputError(
            f"sweep points must be 0 (skip) to {MAX_SWEEP_POINTS}, not {sweep_points}."
        )
    taken: set[str] = set()
    main = _load(Path(run_dir), taken)
    others = [_load(Path(p), taken) for p in compare]
    runs = [main, *others]
    sections = [
        _summary_section(runs),
        _reconciliation_section(runs),
        _histogram_section(main),
        _scatter_section(main),
        _lorenz_section(runs),
        _coverage_section(runs),
    ]
    if sweep_points == 0:
        sections.append(_skipped("sweep", "Alpha sweep", "sweeps turned off (0 points)"))
        sections.append(
            _skipped(
                "shadow-price",
                "Shadow price against the budget",
                "sweeps turned off (0 points)",
            )
        )
    else:
        session, why = _open_session(main)
        if session is None:
            sections.append(_skipped("sweep", "Alpha sweep", why or "no data"))
            sections.append(
                _skipped("shadow-price", "Shadow price against the budget", why or "no data")
            )
        else:
            sections.append(_sweep_section(main, session, sweep_points))
            sections.append(_shadow_section(main, session, sweep_points))
    sections.append(_cliff_section(main))
    sections.append(_fairness_section(runs))
    failures = tuple(f"{r.label}: {c.name}" for r in runs for c in r.checks.failures)
    return Report(
        title=f"Allocation report: {main.label}",
        run_dir=str(main.run.path),
        compare=tuple(str(r.run.path) for r in others),
        sections=tuple(sections),
        failures=failures,
    )


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2em auto;max-width:1100px;
color:#222;line-height:1.4;padding:0 1em}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.8em}
table{border-collapse:collapse;margin:.8em 0;font-size:.9em}
th,td{border:1px solid #ddd;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f4f4f4}caption{text-align:left;font-style:italic;padding:.3em 0}
td.pass{color:#116611;font-weight:bold}td.fail{color:#fff;background:#c62828;font-weight:bold}
.banner{padding:.8em 1em;border-radius:4px;font-weight:bold;margin:1em 0}
.banner.ok{background:#e8f5e9;color:#1b5e20}.banner.fail{background:#c62828;color:#fff}
section.failed h2{color:#c62828}
img{max-width:100%;height:auto;display:block;margin:.6em 0}
.note{color:#555;font-size:.9em}nav a{margin-right:.8em}
"""


def _esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _html_table(t: Table) -> str:
    out = ["<table>"]
    if t.caption:
        out.append(f"<caption>{_esc(t.caption)}</caption>")
    out.append(
        "<thead><tr>" + "".join(f"<th>{_esc(c)}</th>" for c in t.columns) + "</tr></thead><tbody>"
    )
    for row in t.rows:
        cells = []
        for k, cell in enumerate(row):
            cls = ""
            if t.status_column == k and cell in ("PASS", "FAIL"):
                cls = f' class="{cell.lower()}"'
            cells.append(f"<td{cls}>{_esc(cell)}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def render_html(report: Report) -> str:
    """One self-contained HTML page: inline CSS, charts as PNG data URIs, no external reference."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_esc(report.title)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{_esc(report.title)}</h1>",
        f'<p class="note">run directory {_esc(report.run_dir)}'
        + (f"; compared with {_esc(', '.join(report.compare))}" if report.compare else "")
        + "</p>",
    ]
    if report.ok:
        parts.append('<div class="banner ok">Finance reconciliation: every check passes.</div>')
    else:
        parts.append(
            '<div class="banner fail">FINANCE RECONCILIATION FAILED: '
            + _esc(", ".join(report.failures))
            + "</div>"
        )
    parts.append(
        "<nav>"
        + "".join(f'<a href="#{s.id}">{_esc(s.title)}</a>' for s in report.sections)
        + "</nav>"
    )
    for s in report.sections:
        cls = ' class="failed"' if s.failed else ""
        parts.append(f'<section id="{_esc(s.id)}"{cls}>')
        parts.append(f"<h2>{_esc(s.title)}{' (FAIL)' if s.failed else ''}</h2>")
        for n in s.notes:
            parts.append(f'<p class="note">{_esc(n)}</p>')
        for t in s.tables:
            parts.append(_html_table(t))
        for c in s.charts:
            parts.append(f'<img src="{c.data_uri()}" alt="{_esc(c.alt)}" title="{_esc(c.title)}">')
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def render_json(report: Report) -> str:
    """The report as strict JSON (sorted keys, no NaN): every section's data and tables, no charts."""
    return dumps(report.to_dict()) + "\n"


def _md_cell(x: str) -> str:
    return str(x).replace("|", "\\|").replace("\n", " ")


def _md_table(t: Table) -> list[str]:
    out = []
    if t.caption:
        out += [f"*{_md_cell(t.caption)}*", ""]
    out.append("| " + " | ".join(_md_cell(c) or " " for c in t.columns) + " |")
    out.append("| " + " | ".join("---" for _ in t.columns) + " |")
    for row in t.rows:
        cells = [
            f"**{c}**" if t.status_column == k and c == "FAIL" else _md_cell(c)
            for k, c in enumerate(row)
        ]
        out.append("| " + " | ".join(cells) + " |")
    out.append("")
    return out


def render_md(report: Report) -> str:
    """The report as Markdown for a pull request: the tables, with charts left to the HTML report."""
    out = [f"# {report.title}", "", f"Run directory `{report.run_dir}`."]
    if report.compare:
        out.append("Compared with " + ", ".join(f"`{c}`" for c in report.compare) + ".")
    out.append("")
    if report.ok:
        out += ["**Finance reconciliation: every check passes.**", ""]
    else:
        out += [
            "> **FINANCE RECONCILIATION FAILED:** " + _md_cell(", ".join(report.failures)),
            "",
        ]
    for s in report.sections:
        out += [
            f"## {s.title}{' (FAIL)' if s.failed else ''}",
            "",
            f'<a id="{s.id}"></a>',
            "",
        ]
        for n in s.notes:
            out += [f"_{_md_cell(n)}_", ""]
        for t in s.tables:
            out += _md_table(t)
        if s.charts:
            out += [f"_{len(s.charts)} chart(s) omitted; see the HTML report._", ""]
    return "\n".join(out).rstrip("\n") + "\n"


def render(report: Report, fmt: str) -> str:
    """Render in ``fmt`` (one of :data:`FORMATS`)."""
    if fmt == "html":
        return render_html(report)
    if fmt == "json":
        return render_json(report)
    if fmt == "md":
        return render_md(report)
    raise InputError(f"report format must be one of {', '.join(FORMATS)}, not {fmt!r}.")


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8, ``\\n`` newlines) to ``path`` through a temporary sibling and a rename.

    Raises
    ------
    InputError
        ``path`` is in a run directory (:func:`allocator.runs.rundir.refuse_output_in_run`).
    """
    path = Path(path)
    refuse_output_in_run(path, "the report file")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        # mkstemp creates the file private; a report is meant to be shared like any other output.
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path
