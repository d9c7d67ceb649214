"""``allocator allocate``: one scenario, end to end, into an auditable run directory."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from allocator.cli.app import app, guarded, out_console
from allocator.cli.common import (
    check_solver_option,
    print_json,
    progress_printer,
    resolve_data_dir,
    usd,
)
from allocator.errors import AllocatorError

if TYPE_CHECKING:
    from allocator.vouchers.pipeline import RunResult


def _rule_words(run: RunResult) -> str:
    from allocator.kernel.claims import describe

    awards = run.allocation.rule_awards
    if awards is None:
        return (
            f"alpha-fair (alpha {run.scenario.objective.alpha:g}): shadow price "
            f"{run.allocation.shadow_price:.6g} per USD"
        )
    words = describe(
        awards.rule,
        awards.parameter,
        awards.stage,
        coverage=run.scenario.objective.form == "coverage",
    )
    return f"{awards.rule}: {words}"


def finite_or_none(x: float) -> float | None:
    """Strict JSON has no NaN: a rule without an objective says null."""
    return float(x) if math.isfinite(x) else None


def run_summary(run: RunResult, out_dir: Path | None) -> dict[str, Any]:
    cert = run.allocation.certificate
    rec = run.eligibility.reconciliation
    counts = run.allocations["bound"].value_counts()
    by = {row[0]: row[1] for row in counts.iter_rows()}
    return {
        "scenario": run.scenario.name,
        "run_dir": str(out_dir) if out_dir else None,
        "liquidated": rec.liquidated_users,
        "eligible": rec.eligible_users,
        "excluded": rec.excluded_users,
        "budget_cents": run.budget_cents,
        "paid_cents": run.paid_cents,
        "unspent_cents": run.budget_cents - run.paid_cents,
        "at_floor": int(by.get("floor", 0)),
        "interior": int(by.get("interior", 0)),
        "at_cap": int(by.get("cap", 0)),
        "shadow_price": run.allocation.shadow_price,
        "objective": finite_or_none(run.allocation.objective),
        "rule": run.scenario.objective.rule,
        "rule_in_words": _rule_words(run),
        "solver": run.allocation.method,
        "status": run.allocation.status,
        "certified": cert is not None and bool(cert.certified),
    }


@app.command("allocate")
@guarded
def allocate_cmd(
    scenario: Annotated[Path, typer.Option("--scenario", "-s", help="Scenario TOML file.")],
    data: Annotated[
        Path | None, typer.Option("--data", help="Data directory (default: built-in data).")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Run directory to write (default: runs/<scenario>)."),
    ] = None,
    solver: Annotated[
        str | None, typer.Option("--solver", help="auto | fast | cvxpy (default: the scenario's).")
    ] = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print the summary as strict JSON.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress on stderr.")] = False,
    assignments: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="KEY=VALUE: replace one scenario value (TOML value; repeatable), "
            "e.g. --set objective.alpha=2 --set budget.exhaust=false.",
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace a run already at --out (refused otherwise).")
    ] = False,
    operator: Annotated[
        str | None,
        typer.Option("--operator", help="Who makes the run, for the manifest (default: login)."),
    ] = None,
    sign_key: Annotated[
        Path | None,
        typer.Option(
            "--sign-key",
            help="Ed25519 private key (allocator keys new): sign the manifest (manifest.sig).",
        ),
    ] = None,
) -> None:
    """Run eligibility, allocation and cent rounding for one scenario; write a run directory.

    Example: allocator allocate --scenario scenarios/baseline.toml --out runs/baseline

    Example: allocator allocate -s scenarios/baseline.toml --set objective.alpha=2 --out runs/a2

    An existing run at --out is replaced only with --force; two allocate runs cannot write one
    directory at once.
    """
    # imported here, not at the top: ``allocator allocate --help`` needs none of them
    from allocator.runs.signing import load_private_key, signature_of
    from allocator.runs.writer import refuse_existing
    from allocator.settings.scenarios import load_scenario_with
    from allocator.vouchers.pipeline import DataSession, allocate, provenance, write_run

    check_solver_option(solver)
    scen = load_scenario_with(scenario, assignments or ())
    out_dir = out if out is not None else Path("runs") / scen.name
    if not force:
        refuse_existing(out_dir)  # before any work; checked again under the writer's lock
    if operator is not None and not operator.strip():
        raise AllocatorError(
            "--operator must name someone (e.g. --operator 'j.doe'), not be empty."
        )
    key = load_private_key(sign_key) if sign_key is not None else None  # before any work
    progress = progress_printer(quiet)
    data_dir = resolve_data_dir(data)
    progress(f"loading and validating {data_dir}")
    # one allocation: the rows are checked in the pass over them, which is not kept
    session = DataSession.open(data_dir, fold_validation=True, keep_passes=False)
    run = allocate(session, scen, solver=solver, progress=progress)
    progress(f"writing {out_dir}")
    write_run(
        out_dir,
        session,
        run,
        solver_requested=solver or scen.solver.name,
        replace=force,
        made_by=provenance(scenario_file=scenario, operator=operator),
        sign=None if key is None else (lambda manifest: signature_of(manifest, key)),
    )
    summary = run_summary(run, out_dir)
    if json_out:
        print_json(summary)
        return
    s = summary
    out_console.print(
        f"scenario {s['scenario']}: {s['eligible']:,} eligible of {s['liquidated']:,} liquidated "
        f"({s['excluded']:,} excluded)\n"
        f"paid {usd(s['paid_cents'] / 100)} of {usd(s['budget_cents'] / 100)} USD, "
        f"unspent {usd(s['unspent_cents'] / 100)}\n"
        f"at floor {s['at_floor']:,}, interior {s['interior']:,}, at cap {s['at_cap']:,}\n"
        f"{s['rule_in_words']}\nsolver {s['solver']} ({s['status']}, "
        f"{'certified' if s['certified'] else 'NOT certified'})\n"
        f"run directory {out_dir}"
    )
