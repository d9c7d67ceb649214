"""``allocator compare`` and ``allocator sweep``: scenarios side by side, and along a parameter."""

from __future__ import annotations

import itertools
import os
import tempfile
from pathlib import Path
from typing import Annotated, Optional

import numpy as np
import polars as pl
import typer
from rich.table import Table

from allocator.cli.app import app, err_console, guarded, out_console
from allocator.cli.common import print_json, progress_printer, resolve_data_dir
from allocator.errors import ScenarioError
from allocator.metrics import moved, summary
from allocator.pipeline import DataSession, allocate
from allocator.scenarios import SWEEPABLE, load_scenario, with_overrides

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
)


def _fmt(value: object, fmt: str) -> str:
    if value is None:
        return "-"
    try:
        return fmt.format(value)
    except (TypeError, ValueError):
        return str(value)


def scenario_metrics(run) -> dict:  # noqa: ANN001 - RunResult
    return summary(
        run.allocations, budget_cents=run.budget_cents, shadow_price=run.allocation.shadow_price
    )


@app.command("compare")
@guarded
def compare_cmd(
    scenarios: Annotated[list[Path], typer.Argument(help="Two or more scenario TOML files.")],
    data: Annotated[
        Optional[Path], typer.Option("--data", help="Data directory (default: built-in data).")
    ] = None,
    moved_threshold: Annotated[
        float,
        typer.Option("--moved-threshold", help="USD: count users whose voucher moves by more than this."),
    ] = 1.0,
    solver: Annotated[Optional[str], typer.Option("--solver", help="auto | fast | cvxpy.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Strict JSON on stdout, nothing else.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress on stderr.")] = False,
) -> None:
    """Compare scenarios side by side on the same data.

    Example: allocator compare scenarios/baseline.toml scenarios/pro_rata.toml scenarios/equal_split.toml --json
    """
    progress = progress_printer(quiet)
    loaded = [load_scenario(p) for p in scenarios]
    data_dir = resolve_data_dir(data)
    progress(f"loading and validating {data_dir}")
    session = DataSession.open(data_dir)
    runs = []
    for path, scen in zip(scenarios, loaded):
        progress(f"scenario {scen.name}")
        runs.append(allocate(session, scen, solver=solver, with_payouts=False))
    first = runs[0].allocations
    rows = []
    for path, run in zip(scenarios, runs):
        m = scenario_metrics(run)
        m["scenario"] = run.scenario.name
        m["file"] = str(path)
        m["solver"] = run.allocation.method
        m["moved_vs_first"] = moved(first, run.allocations, threshold_usd=moved_threshold)
        rows.append(m)
    result = {
        "data": str(data_dir),
        "moved_threshold_usd": moved_threshold,
        "baseline": runs[0].scenario.name,
        "scenarios": rows,
    }
    if json_out:
        print_json(result)
        return
    table = Table(title=f"scenarios on {data_dir}", show_lines=False)
    table.add_column("metric")
    for row in rows:
        table.add_column(row["scenario"], justify="right")
    for key, fmt in TABLE_METRICS + (("moved_vs_first", "{:,.0f}"),):
        table.add_row(key, *(_fmt(r.get(key), fmt) for r in rows))
    bands = list(rows[0].get("median_coverage_by_band", {}))
    for band in bands:
        table.add_row(
            f"median coverage, loss {band}",
            *(_fmt(r["median_coverage_by_band"].get(band), "{:.4f}") for r in rows),
        )
    out_console.print(table)


def parse_param(spec: str) -> tuple[str, np.ndarray]:
    """``NAME=START:STOP:COUNT`` -> (name, evenly spaced values)."""
    name, sep, rng = spec.partition("=")
    parts = rng.split(":")
    if not sep or len(parts) != 3:
        raise ScenarioError(
            f"--param {spec!r} is not of the form NAME=START:STOP:COUNT "
            f"(e.g. objective.alpha=0.5:5:10)."
        )
    try:
        start, stop, count = float(parts[0]), float(parts[1]), int(parts[2])
    except ValueError:
        raise ScenarioError(
            f"--param {spec!r}: START and STOP must be numbers and COUNT a whole number."
        ) from None
    if count < 1:
        raise ScenarioError(f"--param {spec!r}: COUNT must be at least 1.")
    values = np.linspace(start, stop, count)
    if name == "budget.total_usd":
        # A budget is paid to the cent; evenly spaced points land between cents otherwise.
        values = np.round(values, 2)
    if name not in SWEEPABLE and not any(name.startswith(k.split("<")[0]) for k in SWEEPABLE if "<" in k):
        allowed = ", ".join(sorted(SWEEPABLE))
        raise ScenarioError(f"--param {spec!r}: {name!r} cannot be swept. Sweepable: {allowed}.")
    return name, values


def _plot(frame: pl.DataFrame, params: list[str], path: Path) -> None:
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
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".png")
    os.close(fd)
    fig.savefig(tmp, dpi=110, metadata={"Software": None})
    plt.close(fig)
    os.replace(tmp, path)


@app.command("sweep")
@guarded
def sweep_cmd(
    scenario: Annotated[Path, typer.Option("--scenario", "-s", help="Scenario TOML file.")],
    param: Annotated[
        list[str],
        typer.Option("--param", "-p", help="NAME=START:STOP:COUNT; repeat for a grid."),
    ],
    data: Annotated[
        Optional[Path], typer.Option("--data", help="Data directory (default: built-in data).")
    ] = None,
    out: Annotated[
        Optional[Path], typer.Option("--out", help="Folder for sweep.csv and sweep.png.")
    ] = None,
    solver: Annotated[Optional[str], typer.Option("--solver", help="auto | fast | cvxpy.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Strict JSON on stdout, nothing else.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress on stderr.")] = False,
) -> None:
    """Sweep scenario parameters and report the comparison metrics at every point.

    Example: allocator sweep --scenario scenarios/baseline.toml --param objective.alpha=0.5:5:10
    """
    progress = progress_printer(quiet)
    base = load_scenario(scenario)
    grids = [parse_param(p) for p in param]
    names = [g[0] for g in grids]
    if len(set(names)) != len(names):
        raise ScenarioError("--param names the same parameter twice.")
    data_dir = resolve_data_dir(data)
    progress(f"loading and validating {data_dir}")
    session = DataSession.open(data_dir)
    rows = []
    points = list(itertools.product(*(g[1] for g in grids)))
    for k, values in enumerate(points, 1):
        overrides = dict(zip(names, (float(v) for v in values)))
        scen = with_overrides(base, overrides)
        progress(f"point {k}/{len(points)}: " + ", ".join(f"{n}={v:.6g}" for n, v in overrides.items()))
        run = allocate(session, scen, solver=solver, with_payouts=False)
        m = scenario_metrics(run)
        m.pop("median_coverage_by_band", None)
        rows.append({**overrides, **m})
    frame = pl.DataFrame(rows)
    out_dir = out if out is not None else Path("runs") / f"sweep-{base.name}"
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = out_dir / "sweep.csv"
    fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=".sweep.", suffix=".csv")
    os.close(fd)
    frame.write_csv(tmp)
    os.replace(tmp, csv_path)
    png_path = out_dir / "sweep.png"
    _plot(frame, names, png_path)
    if json_out:
        print_json({"scenario": base.name, "params": names, "points": rows,
                    "csv": str(csv_path), "plot": str(png_path)})
        return
    table = Table(title=f"sweep of {base.name} over {', '.join(names)}")
    cols = names + [k for k, _ in TABLE_METRICS if k not in ("eligible",)]
    for c in cols:
        table.add_column(c, justify="right")
    fmts = dict(TABLE_METRICS)
    for r in rows:
        table.add_row(*(_fmt(r.get(c), fmts.get(c, "{:.6g}")) for c in cols))
    out_console.print(table)
    err_console.print(f"wrote {csv_path} and {png_path}")
