"""``allocator sensitivity``: how a run moves with the budget, the weights, alpha and the thresholds."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer

from allocator.cli.app import app, err_console, guarded, out_console
from allocator.cli.common import print_json
from allocator.errors import InputError
from allocator.sensitivity import run_sensitivity


@app.command("sensitivity")
@guarded
def sensitivity_cmd(
    run_dir: Annotated[Path, typer.Argument(help="Run directory written by `allocator allocate`.")],
    delta: Annotated[
        float,
        typer.Option("--delta", help="USD: budget change of the exact re-solves (B + d and B - d)."),
    ] = 1_000_000.0,
    json_out: Annotated[bool, typer.Option("--json", help="Strict JSON on stdout, nothing else.")] = False,
) -> None:
    """Sensitivity of a run: budget derivatives and B +/- delta, weights and alpha, cliffs.

    Re-solves the run from its manifest (same scenario, same data files).

    Example: allocator sensitivity runs/baseline --delta 5000000
    """
    if not (math.isfinite(delta) and delta > 0):
        raise InputError(f"--delta must be a positive amount in USD, not {delta!r}.")
    if not json_out:
        err_console.print(f"re-solving {run_dir}", markup=False, highlight=False)
    report = run_sensitivity(run_dir, delta_usd=delta)
    if json_out:
        print_json(report.to_dict())
        return
    for line in report.lines():
        out_console.print(line, markup=False, highlight=False)
