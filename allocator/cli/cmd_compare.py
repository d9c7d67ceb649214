"""``allocator compare`` and ``allocator sweep``: scenarios side by side, and along a parameter.

Both report the same metrics per scenario or point: :func:`allocator.analysis.metrics.summary` (with the
median coverage by loss band) and ``moved_vs_first``, the users whose voucher moves by more than
``--moved-threshold`` USD against the first scenario (compare) or the first point that solved
(sweep). The sweep itself lives in :mod:`allocator.analysis.sweeps`; a failed point is recorded and the
sweep goes on. The table, ``sweep.csv`` and ``sweep.png`` are written when at least one point
solved (exit 0); when none did, nothing is written and the exit code is 3, as for a single
infeasible or failed run.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

import polars as pl
import typer
from rich import box
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from allocator.analysis.axioms_run import axioms_of
from allocator.analysis.metrics import LOSS_BANDS, budget_price, moved, summary
from allocator.analysis.sweeps import (
    MAX_SWEEP_POINTS,
    STATUS_INFEASIBLE,
    STATUS_SOLVED,
    point_label,
    run_sweep,
    sweep_frame,
    sweep_grid,
)
from allocator.cli.app import app, err_console, guarded, out_console
from allocator.cli.common import (
    check_sample,
    check_solver_option,
    print_json,
    progress_printer,
    resolve_data_dir,
)
from allocator.errors import AllocatorError, InfeasibleError, SolverFailedError
from allocator.runs.store import atomic_write_all
from allocator.settings.scenarios import load_scenario_with
from allocator.vouchers.pipeline import DataSession, RunResult, allocate

#: Metrics shown in the human tables, in order, with their formats.
TABLE_METRICS: tuple[tuple[str, str], ...] = (
    ("eligible", "{:,.0f}"),
    ("paid_usd", "{:,.2f}"),
    ("unspent_usd", "{:,.2f}"),
    ("n_floor", "{:,.0f}"),
    ("n_cap", "{:,.0f}"),
    ("mean_voucher", "{:,.2f}"),
    ("median_voucher", "{:,.2f}"),
    ("p90_voucher", "{:,.2f}"),
    ("max_voucher", "{:,.2f}"),
    ("median_coverage", "{:.4f}"),
    ("gini", "{:.4f}"),
    ("top_decile_share", "{:.4f}"),
    ("shadow_price", "{:.6g}"),
    ("moved_vs_first", "{:,.0f}"),
)


def _fmt(value: object, fmt: str) -> str:
    if value is None:
        return "-"
    try:
        return fmt.format(value)
    except (TypeError, ValueError):
        return str(value)


def check_moved_threshold(threshold: float) -> None:
    """Reject a ``--moved-threshold`` that is negative or not finite before any solve (exit 2)."""
    if not (math.isfinite(threshold) and threshold >= 0):
        raise AllocatorError(
            f"--moved-threshold must be a finite amount of USD >= 0 (e.g. 1.0), not {threshold!r}."
        )


def scenario_metrics(run: RunResult) -> dict[str, Any]:
    """The compare/sweep metrics of one :class:`~allocator.vouchers.pipeline.RunResult` (without moves)."""
    return summary(
        run.allocations, budget_cents=run.budget_cents, shadow_price=budget_price(run.allocation)
    )


@app.command("compare")
@guarded
def compare_cmd(
    scenarios: Annotated[list[Path], typer.Argument(help="Two or more scenario TOML files.")],
    data: Annotated[
        Path | None, typer.Option("--data", help="Data directory (default: built-in data).")
    ] = None,
    moved_threshold: Annotated[
        float,
        typer.Option(
            "--moved-threshold", help="USD: count users whose voucher moves by more than this."
        ),
    ] = 1.0,
    solver: Annotated[str | None, typer.Option("--solver", help="auto | fast | cvxpy.")] = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="Strict JSON on stdout, nothing else.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress on stderr.")] = False,
    assignments: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="KEY=VALUE: replace one value in every scenario (TOML value; repeatable), "
            "e.g. --set budget.total_usd=2e8.",
        ),
    ] = None,
    axioms: Annotated[
        bool,
        typer.Option(
            "--axioms",
            help="Also measure the fairness axioms of every scenario, side by side (each "
            "scenario solved again with perturbations: seconds per scenario).",
        ),
    ] = False,
    sample: Annotated[
        int,
        typer.Option("--sample", help="With --axioms: users perturbed or split per axiom."),
    ] = 1000,
) -> None:
    """Compare scenarios side by side on the same data.

    Example: allocator compare scenarios/baseline.toml scenarios/proportional.toml scenarios/cea.toml --json

    Example: allocator compare scenarios/proportional.toml scenarios/cea.toml scenarios/cel.toml scenarios/talmud.toml --axioms

    Example: allocator compare scenarios/baseline.toml scenarios/max_min.toml --set budget.total_usd=2e8
    """
    if len(scenarios) < 2:
        raise AllocatorError(
            f"compare needs two or more scenario files, got {len(scenarios)}; "
            "use 'allocator allocate' for a single scenario."
        )
    check_solver_option(solver)
    check_moved_threshold(moved_threshold)
    check_sample(sample)
    progress = progress_printer(quiet)
    loaded = [load_scenario_with(p, assignments or ()) for p in scenarios]
    data_dir = resolve_data_dir(data)
    progress(f"loading and validating {data_dir}")
    session = DataSession.open(data_dir)
    runs = []
    for scen in loaded:
        progress(f"scenario {scen.name}")
        runs.append(allocate(session, scen, solver=solver, with_payouts=False))
    first = runs[0].allocations
    rows = []
    for path, run in zip(scenarios, runs):
        rows.append(
            {
                "scenario": run.scenario.name,
                "file": str(path),
                "rule": run.scenario.objective.rule,
                "solver": run.allocation.method,
                **scenario_metrics(run),
                "moved_vs_first": moved(first, run.allocations, threshold_usd=moved_threshold),
            }
        )
    if axioms:
        for row, run in zip(rows, runs):
            progress(f"axioms of {run.scenario.name}")
            row["axioms"] = [a.to_dict() for a in axioms_of(run, solver=solver, sample=sample)]
    result = {
        "data": str(data_dir),
        "moved_threshold_usd": moved_threshold,
        "baseline": runs[0].scenario.name,
        "scenarios": rows,
    }
    if json_out:
        # insertion order, not sorted: sorted keys would put the loss band "<100" after "1k-10k"
        print_json(result, sort_keys=False)
        return
    table = Table(title=f"scenarios on {data_dir}", show_lines=False)
    table.add_column("metric")
    for row in rows:
        table.add_column(row["scenario"], justify="right")
    table.add_row("rule", *(r["rule"] for r in rows))
    for key, fmt in TABLE_METRICS:
        table.add_row(key, *(_fmt(r.get(key), fmt) for r in rows))
    for label, _, _ in LOSS_BANDS:
        table.add_row(
            f"median coverage, loss {label}",
            *(_fmt(r["median_coverage_by_band"].get(label), "{:.4f}") for r in rows),
        )
    out_console.print(table)
    if axioms:
        out_console.print(axioms_table(rows))


def axioms_table(rows: list[dict[str, Any]]) -> Table:
    """Axioms down, scenarios across: "holds" or how many cases fail."""
    table = Table(title="fairness axioms (allocator axioms RUN_DIR explains each)")
    table.add_column("axiom")
    for row in rows:
        table.add_column(row["scenario"], justify="right")
    names = [a["name"] for a in rows[0]["axioms"]]
    for i, name in enumerate(names):
        cells = []
        for row in rows:
            a = row["axioms"][i]
            cells.append(
                "holds" if a["holds"] else f"fails {a['violations']:,} of {a['checked']:,}"
            )
        table.add_row(name, *cells)
    return table


# ---------------------------------------------------------------------------------------------
# sweep: parameters, model re-use, one point, files
# ---------------------------------------------------------------------------------------------


def _plot(frame: pl.DataFrame, params: list[str]) -> bytes:
    """The sweep's chart as PNG bytes."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = ["gini", "median_coverage", "n_floor", "n_cap", "top_decile_share", "shadow_price"]
    x = params[0]
    fig, axes = plt.subplots(2, 3, figsize=(13, 7), constrained_layout=True)
    groups = frame.partition_by(params[1:], maintain_order=True) if len(params) > 1 else [frame]
    for ax, metric in zip(axes.flat, metrics):
        for g in groups:
            label = ", ".join(f"{p}={g[p][0]:.4g}" for p in params[1:]) or None
            ax.plot(g[x].to_list(), g[metric].to_list(), marker="o", ms=3, label=label)
        ax.set_title(metric)
        ax.set_xlabel(x)
        if metric == "shadow_price":
            ax.set_yscale("log")
    if len(params) > 1:
        axes.flat[0].legend(fontsize=7)
    fig.suptitle(f"sweep over {', '.join(params)}")
    png = io.BytesIO()
    try:
        fig.savefig(png, format="png", dpi=110, metadata={"Software": None})
    finally:
        plt.close(fig)
    return png.getvalue()


@app.command("sweep")
@guarded
def sweep_cmd(
    scenario: Annotated[Path, typer.Option("--scenario", "-s", help="Scenario TOML file.")],
    param: Annotated[
        list[str],
        typer.Option(
            "--param",
            "-p",
            help="NAME=START:STOP:COUNT, NAME=log:START:STOP:COUNT or NAME=V1,V2,...; repeat "
            f"for a grid ({MAX_SWEEP_POINTS} points at most).",
        ),
    ],
    data: Annotated[
        Path | None, typer.Option("--data", help="Data directory (default: built-in data).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Folder for sweep.csv and sweep.png.")
    ] = None,
    moved_threshold: Annotated[
        float,
        typer.Option(
            "--moved-threshold",
            help="USD: count users whose voucher moves by more than this vs the first point solved.",
        ),
    ] = 1.0,
    solver: Annotated[str | None, typer.Option("--solver", help="auto | fast | cvxpy.")] = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="Strict JSON on stdout, nothing else.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress on stderr.")] = False,
    assignments: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="KEY=VALUE: replace one value of the scenario before sweeping (TOML value; "
            "repeatable), e.g. --set objective.form=coverage.",
        ),
    ] = None,
) -> None:
    """Sweep scenario parameters and report the comparison metrics at every point.

    Failed points are recorded and the sweep goes on; exit 3, writing nothing, if none solves.

    Example: allocator sweep --scenario scenarios/baseline.toml --param objective.alpha=0.5:5:10

    Example: allocator sweep -s scenarios/baseline.toml --param objective.alpha=log:0.1:10:9 --param bounds.floor_usd=4,10,20 --set budget.exhaust=false
    """
    check_solver_option(solver)
    check_moved_threshold(moved_threshold)
    progress = progress_printer(quiet)
    base = load_scenario_with(scenario, assignments or ())
    names, points, scenarios = sweep_grid(base, param)
    data_dir = resolve_data_dir(data)
    progress(f"loading and validating {data_dir}")
    session = DataSession.open(data_dir)
    rows, model_reuse = run_sweep(
        session,
        points,
        scenarios,
        solver=solver,
        moved_threshold=moved_threshold,
        progress=progress,
    )
    if model_reuse is not None and model_reuse.compiled + model_reuse.reused:
        progress(
            f"cvxpy: {model_reuse.compiled} model(s) compiled, "
            f"re-used for {model_reuse.reused} point(s)"
        )
    failed = [(k, r) for k, r in enumerate(rows, 1) if r["status"] != STATUS_SOLVED]
    if len(failed) == len(rows):
        k, r = failed[0]
        all_infeasible = all(r["status"] == STATUS_INFEASIBLE for _, r in failed)
        error = InfeasibleError if all_infeasible else SolverFailedError
        raise error(
            f"none of the {len(rows)} sweep points solved, so nothing was written; point {k} "
            f"({point_label(points[k - 1])}) is {r['status'].replace('_', ' ')}: {r['reason']}"
        )

    frame = sweep_frame(names, rows)
    out_dir = out if out is not None else Path("runs") / f"sweep-{base.name}"
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = out_dir / "sweep.csv"
    png_path = out_dir / "sweep.png"
    png = _plot(frame.filter(pl.col("status") == STATUS_SOLVED), names)
    atomic_write_all([(csv_path, frame.write_csv), (png_path, lambda fh: fh.write(png))])
    for k, r in failed:
        err_console.print(
            Text(f"point {k} ({point_label(points[k - 1])}): {r['status']}: {r['reason']}")
        )
    if json_out:
        first_solved = next(k for k, r in enumerate(rows) if r["status"] == STATUS_SOLVED)
        print_json(
            {
                "scenario": base.name,
                "params": names,
                "moved_threshold_usd": moved_threshold,
                "baseline": points[first_solved],
                "solved": len(rows) - len(failed),
                "failed": len(failed),
                "points": rows,
                "csv": str(csv_path),
                "plot": str(png_path),
            },
            sort_keys=False,
        )
        return
    # One column per metric makes a wide table: no vertical rules, and headers that wrap at
    # spaces rather than lose their ends; the swept parameters are never shortened.
    table = Table(
        title=f"sweep of {base.name} over {', '.join(names)}", box=box.SIMPLE_HEAD, padding=(0, 0)
    )
    bands = [label for label, _, _ in LOSS_BANDS]
    for n in names:
        table.add_column(n, justify="right", no_wrap=True, min_width=len(n))
    table.add_column("status", justify="right", no_wrap=True)
    for c in [*(k.replace("_", " ") for k, _ in TABLE_METRICS), *(f"cov {b}" for b in bands)]:
        table.add_column(c, justify="right")
    for r in rows:
        by_band = r["median_coverage_by_band"] or {}
        table.add_row(
            *(_fmt(r[n], "{:,.10g}") for n in names),
            r["status"],
            *(_fmt(r[k], fmt) for k, fmt in TABLE_METRICS),
            *(_fmt(by_band.get(b), "{:.4f}") for b in bands),
        )
    # Wider than the page rather than values cut to "3,000,00…": a sweep table is read as data.
    natural = Measurement.get(out_console, out_console.options.update_width(10_000), table).maximum
    if natural > out_console.width:
        table.width = natural
    out_console.print(table, crop=False)
    err_console.print(Text(f"wrote {csv_path} and {png_path}"))
