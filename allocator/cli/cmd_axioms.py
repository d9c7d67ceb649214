"""``allocator axioms``: which fairness axioms a run's rule keeps, measured on its own problem."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from allocator.cli.app import app, guarded, out_console
from allocator.cli.common import check_sample, print_json, progress_printer
from allocator.errors import AllocatorError


@app.command("axioms")
@guarded
def axioms_cmd(
    run_dir: Annotated[Path, typer.Argument(help="Run directory written by `allocator allocate`.")],
    sample: Annotated[
        int, typer.Option("--sample", help="Users perturbed, split or merged (1-100,000).")
    ] = 1000,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the samples.")] = 0,
    json_out: Annotated[
        bool, typer.Option("--json", help="Strict JSON on stdout, nothing else.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress on stderr.")] = False,
) -> None:
    """Check the fairness axioms on the run's own problem at full size.

    Budget balance, award at most the loss, equal treatment of equals and order preservation
    from the vouchers; claims and resource monotonicity, consistency and composition by solving
    changed problems; and what splitting or merging accounts gains. Each axiom: holds, checked,
    violations, the worst cases and what theory expects. Exit 0 whether or not an axiom holds
    (a rule is allowed to break one); 2 for a damaged or changed run.

    Example: allocator axioms runs/baseline
    """
    from allocator.analysis.axioms_run import run_axioms

    check_sample(sample)
    if seed < 0:
        raise AllocatorError(f"--seed must be >= 0, not {seed}.")
    report = run_axioms(run_dir, sample=sample, seed=seed, progress=progress_printer(quiet))
    if json_out:
        print_json(
            {
                "axioms": [a.to_dict() for a in report.axioms],
                "run": report.run_dir,
                "scenario": report.scenario,
                "eligible": report.eligible,
            },
            sort_keys=False,
        )
        return
    for line in report.lines():
        out_console.print(line)
