"""``allocator report``: a run directory as one self-contained HTML page (or JSON, or Markdown)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from allocator.cli.app import app, err_console, guarded, styled
from allocator.cli.common import stage
from allocator.errors import InputError
from allocator.report import (
    DEFAULT_AXIOMS_SAMPLE,
    DEFAULT_SWEEP_POINTS,
    FORMATS,
    MAX_AXIOMS_SAMPLE,
    MAX_SWEEP_POINTS,
    build_report,
    write_report,
)
from allocator.runs.reader import refuse_output_in_run


@app.command("report")
@guarded
def report_cmd(
    run_dir: Annotated[Path, typer.Argument(help="Run directory written by `allocator allocate`.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="File to write (e.g. report.html).")],
    compare: Annotated[
        list[Path],
        typer.Option(
            "--compare",
            "-c",
            help="Another run directory to show beside it; repeatable.",
        ),
    ] = [],  # noqa: B006 - Typer needs a literal default for a repeatable option
    fmt: Annotated[str, typer.Option("--format", "-f", help="html | json | md.")] = "html",
    sweep_points: Annotated[
        int,
        typer.Option(
            "--sweep-points",
            help=(
                "Points of the alpha and budget sweeps re-solved on the run's data: 0 (skip) to "
                f"{MAX_SWEEP_POINTS}."
            ),
        ),
    ] = DEFAULT_SWEEP_POINTS,
    axioms_sample: Annotated[
        int,
        typer.Option(
            "--axioms-sample",
            help=(
                "Users perturbed, split or merged per fairness axiom (each run solved again): "
                f"0 (skip the axioms) to {MAX_AXIOMS_SAMPLE:,}."
            ),
        ),
    ] = DEFAULT_AXIOMS_SAMPLE,
) -> None:
    """Write a report of a run: summary, finance checks, charts, sweeps, cliff and fairness audit.

    HTML opens offline (inline CSS, charts embedded as PNG); --format json is strict JSON with the
    same sections (data, no charts); --format md is Markdown tables for a pull request. The file
    is written atomically and is byte-identical for the same runs. The report is always written;
    the exit code is 1 when a finance check of any run fails (marked FAIL in the report), as for
    `allocator check-budget`. A damaged run directory, one changed since its run, or input data
    changed since the run is refused (exit 2, nothing written; `allocator check-budget RUN_DIR`
    lists every check), and so is an --out inside a run directory.

    The fairness axioms of every run are measured side by side (`allocator axioms` explains
    each); --axioms-sample 0 skips them.

    Example: allocator report runs/baseline --compare runs/proportional --out runs/baseline-report.html
    """
    if fmt not in FORMATS:
        raise InputError(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}.")
    if not 0 <= sweep_points <= MAX_SWEEP_POINTS:
        raise InputError(
            f"--sweep-points must be 0 (skip the sweeps) to {MAX_SWEEP_POINTS}, not "
            f"{sweep_points}: each point re-solves the run twice."
        )
    if not 0 <= axioms_sample <= MAX_AXIOMS_SAMPLE:
        raise InputError(
            f"--axioms-sample must be 0 (skip the axioms) to {MAX_AXIOMS_SAMPLE:,} users, not "
            f"{axioms_sample}."
        )
    # before any work: the report must not land in (and damage) a run directory
    refuse_output_in_run(out, "--out")
    if out.is_dir():
        raise InputError(
            f"--out {out} is a directory; give the report's file name, e.g. report.html."
        )
    with stage("building the report"):
        report = build_report(
            run_dir,
            compare=tuple(compare),
            sweep_points=sweep_points,
            axioms_sample=axioms_sample,
        )
    path = write_report(out, report, fmt)
    err_console.print(f"wrote {path}", markup=False, highlight=False)
    if not report.ok:
        err_console.print(
            styled("finance checks failed:", "bold red", " " + ", ".join(report.failures))
        )
        raise typer.Exit(1)
