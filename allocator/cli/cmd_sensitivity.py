"""``allocator sensitivity``: how a run moves with the budget, the weights, alpha and the thresholds."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer

from allocator.analysis.sensitivity import (
    MAX_TOP_MOVERS,
    TOP_MOVERS,
    moves_format,
    run_sensitivity,
    write_moves,
)
from allocator.cli.app import app, err_console, guarded, out_console
from allocator.cli.common import print_json
from allocator.errors import InputError
from allocator.runs.reader import refuse_output_in_run


@app.command("sensitivity")
@guarded
def sensitivity_cmd(
    run_dir: Annotated[Path, typer.Argument(help="Run directory written by `allocator allocate`.")],
    delta: Annotated[
        float,
        typer.Option(
            "--delta", help="USD: budget change of the exact re-solves (B + d and B - d)."
        ),
    ] = 1_000_000.0,
    users_out: Annotated[
        Path | None,
        typer.Option(
            "--users-out",
            help=(
                "Write every user's voucher now, at B + d and at B - d (re-solved, rounded to "
                "cents), the derivative's prediction and the bounds to this .parquet or .csv file."
            ),
        ),
    ] = None,
    top: Annotated[
        int,
        typer.Option(
            "--top", help=f"How many of the largest movers to list: 0 to {MAX_TOP_MOVERS:,}."
        ),
    ] = TOP_MOVERS,
    json_out: Annotated[
        bool, typer.Option("--json", help="Strict JSON on stdout, nothing else.")
    ] = False,
) -> None:
    """Sensitivity of a run: budget derivatives and B +/- delta, who moves, weights and alpha, cliffs.

    Re-solves the run from its manifest (same scenario, same data files). With a phase-in band it
    also reports the band (users, loss and payments inside it) and its price: the same scenario
    with hard thresholds at the same budget, and what everyone else gives up.

    The run directory and its input files are verified first: a damaged run directory, or data
    changed since the run (edited or regenerated), is refused (exit 2; allocator check-budget
    RUN_DIR lists every check). --users-out may not be inside a run directory.

    Example: allocator sensitivity runs/baseline --delta 5000000 --users-out runs/moves.parquet
    """
    if not (math.isfinite(delta) and delta > 0):
        raise InputError(f"--delta must be a positive amount in USD, not {delta!r}.")
    if not 0 <= top <= MAX_TOP_MOVERS:
        raise InputError(f"--top must be 0 to {MAX_TOP_MOVERS:,}, not {top}.")
    if users_out is not None:
        # refuse a wrong suffix, or a file inside a run directory, before minutes of work
        moves_format(users_out)
        refuse_output_in_run(users_out, "--users-out")
    if not json_out:
        err_console.print(f"re-solving {run_dir}", markup=False, highlight=False)
    report = run_sensitivity(run_dir, delta_usd=delta, top=top)
    written = None
    users = 0
    if users_out is not None:
        assert report.moves is not None  # run_sensitivity always lists every user's move
        written = write_moves(report.moves, users_out)
        users = report.moves.height
    if json_out:
        out = report.to_dict()
        out["users_out"] = None if written is None else str(written)
        print_json(out)
        return
    for line in report.lines():
        out_console.print(line, markup=False, highlight=False)
    if written is not None:
        err_console.print(f"wrote {written} ({users:,} users)", markup=False, highlight=False)
