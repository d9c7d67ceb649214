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
from allocator.errors import AllocatorError, InputError

if TYPE_CHECKING:
    from allocator.vouchers.pipeline import RunResult
    from allocator.vouchers.rounds import RoundResult


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
        "held": int(by.get("held", 0)),
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
    previous: Annotated[
        Path | None,
        typer.Option(
            "--previous",
            help="Run directory of the previous round: run the next round, which never pays "
            "anyone less than they hold.",
        ),
    ] = None,
    appeals: Annotated[
        Path | None,
        typer.Option(
            "--appeals",
            help="Appeals decided for this round (CSV or Parquet: user_id, decision, corrected "
            "values, note); needs --previous.",
        ),
    ] = None,
    redemptions: Annotated[
        Path | None,
        typer.Option(
            "--redemptions",
            help="Which earlier vouchers were redeemed by the deadline (CSV or Parquet: "
            "idempotency_key, user_id, redeemed); needs --previous.",
        ),
    ] = None,
) -> None:
    """Run eligibility, allocation and cent rounding for one scenario; write a run directory.

    Example: allocator allocate --scenario scenarios/baseline.toml --out runs/baseline

    Example: allocator allocate -s scenarios/baseline.toml --set objective.alpha=2 --out runs/a2

    Example: allocator allocate --scenario scenarios/reserve.toml --previous runs/reserve --appeals examples/appeals.csv --out runs/reserve-round2

    An existing run at --out is replaced only with --force; two allocate runs cannot write one
    directory at once. With --previous the run is the next round of that run's distribution:
    the previous run must pass check-budget, and every user is paid at least what they hold.
    """
    # imported here, not at the top: ``allocator allocate --help`` needs none of them
    from allocator.runs.signing import load_private_key, signature_of
    from allocator.runs.writer import refuse_existing
    from allocator.settings.scenarios import load_scenario_with
    from allocator.vouchers.pipeline import DataSession, allocate, provenance, write_run

    check_solver_option(solver)
    if previous is None and (appeals is not None or redemptions is not None):
        option = "--appeals" if appeals is not None else "--redemptions"
        raise InputError(
            f"{option} belongs to a later round: give the run directory of the previous round "
            "with --previous (e.g. --previous runs/baseline).",
        )
    scen = load_scenario_with(scenario, assignments or ())
    out_dir = out if out is not None else Path("runs") / scen.name
    if previous is not None and out_dir.resolve() == previous.resolve():
        # the new round records the previous run's path: replacing it would break the chain
        raise InputError(
            f"--out {out_dir} is the previous round's run directory (--previous {previous}); "
            "each round is a run directory of its own, and the chain keeps every one.",
            hint=f"choose another --out, e.g. {out_dir}-round2",
        )
    if not force:
        refuse_existing(out_dir)  # before any work; checked again under the writer's lock
    if operator is not None and not operator.strip():
        raise AllocatorError(
            "--operator must name someone (e.g. --operator 'j.doe'), not be empty."
        )
    key = load_private_key(sign_key) if sign_key is not None else None  # before any work
    progress = progress_printer(quiet)
    if previous is not None:
        progress(f"checking the previous round {previous}")
        _check_previous(previous)
    data_dir = resolve_data_dir(data)
    progress(f"loading and validating {data_dir}")
    sign = None if key is None else (lambda manifest: signature_of(manifest, key))
    made_by = provenance(scenario_file=scenario, operator=operator)
    round_result: RoundResult | None = None
    if previous is None:
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
            made_by=made_by,
            sign=sign,
        )
    else:
        from allocator.vouchers.rounds import allocate_round, write_round

        session = DataSession.open(data_dir)
        round_result = allocate_round(
            session,
            scen,
            previous,
            appeals=appeals,
            redemptions=redemptions,
            solver=solver,
            progress=progress,
        )
        run = round_result.run
        progress(f"writing {out_dir}")
        write_round(
            out_dir,
            session,
            round_result,
            solver_requested=solver or scen.solver.name,
            replace=force,
            made_by=made_by,
            sign=sign,
        )
    summary = run_summary(run, out_dir)
    if round_result is not None:
        summary["round"] = round_summary(round_result)
    if json_out:
        print_json(summary)
        return
    s = summary
    out_console.print(
        f"scenario {s['scenario']}: {s['eligible']:,} eligible of {s['liquidated']:,} liquidated "
        f"({s['excluded']:,} excluded)\n"
        f"paid {usd(s['paid_cents'] / 100)} of {usd(s['budget_cents'] / 100)} USD, "
        f"unspent {usd(s['unspent_cents'] / 100)}\n"
        f"at floor {s['at_floor']:,}, interior {s['interior']:,}, at cap {s['at_cap']:,}"
        + (f", held at what they hold {s['held']:,}" if "round" in s else "")
        + "\n"
        f"{s['rule_in_words']}\nsolver {s['solver']} ({s['status']}, "
        f"{'certified' if s['certified'] else 'NOT certified'})\n"
        + (_round_words(s["round"]) if "round" in s else "")
        + f"run directory {out_dir}",
        markup=False,
        highlight=False,
    )


def _check_previous(previous: Path) -> None:
    """A round continues only a run that passes every finance check (exit 2 otherwise)."""
    from allocator.analysis.checks import check_run_dir

    report = check_run_dir(previous)
    if not report.ok:
        names = ", ".join(c.name for c in report.failures)
        first = report.failures[0]
        raise InputError(
            f"--previous {previous} fails check-budget ({len(report.failures)} of "
            f"{len(report.checks)} checks: {names}; first: {first.detail}); a round continues "
            "only a run that passes every check, so nothing was written.",
            hint=f"`allocator check-budget {previous}` lists every check",
        )


def round_summary(result: RoundResult) -> dict[str, Any]:
    """The round's figures for the summary: its number, totals and what happened to users."""
    sec = result.section
    return {
        "number": result.number,
        "target_cents": sec["target_cents"],
        "paid_before_cents": sec["paid_before_cents"],
        "delta_cents": sec["delta_cents"],
        "expired_cents": sec["expired_cents"],
        "appeals_by_decision": sec["appeals_by_decision"],
        "vouchers": sec["vouchers"],
        "users": sec["users"],
    }


def _round_words(r: dict[str, Any]) -> str:
    a = r["appeals_by_decision"]
    v = r["vouchers"]
    return (
        f"round {r['number']}: users held {usd(r['paid_before_cents'] / 100)} USD before it; it "
        f"pays {usd(r['delta_cents'] / 100)} USD more to {r['users']['topped_up']:,} users "
        f"({r['users']['new']:,} paid for the first time)\n"
        f"appeals: {a['reinstate']:,} reinstated, {a['correct']:,} corrected, "
        f"{a['uphold']:,} upheld; vouchers: {v['redeemed']:,} redeemed, {v['unclaimed']:,} "
        f"unclaimed and kept, {v['expired']:,} expired ({usd(r['expired_cents'] / 100)} USD "
        "back in the pool)\n"
    )
