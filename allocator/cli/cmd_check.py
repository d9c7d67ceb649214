"""``allocator check-budget``: finance's reconciliation of a run directory from its files alone."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from allocator.cli.app import app, guarded, out_console
from allocator.cli.common import print_json


@app.command("check-budget")
@guarded
def check_budget_cmd(
    run_dir: Annotated[Path, typer.Argument(help="Run directory written by `allocator allocate`.")],
    json_out: Annotated[
        bool, typer.Option("--json", help="Strict JSON on stdout, nothing else.")
    ] = False,
    verify_key: Annotated[
        Path | None,
        typer.Option(
            "--verify-key",
            help="Ed25519 public key (allocator keys new): also check the manifest's signature.",
        ),
    ] = None,
) -> None:
    """Check a run directory: exact total, bounds, nobody paid twice or lost, keys, optimality.

    Exact total, bounds, nobody paid twice or lost, payout keys, batches and schedule, every voucher within a cent of its best response at the manifest's prices, the manifest's objective, hashes. For a later round (allocate --previous) also the chain: the previous run and its checks, redemptions, the voucher ledger, what users held, no claw-back, the appeals applied and the totals across rounds. Exits 0 only if every check holds; otherwise lists every failure and exits 1. A RUN_DIR that does not exist or is not a directory is an input error (exit 2).

    Example: allocator check-budget runs/baseline

    Example: allocator check-budget runs/signed --verify-key keys/allocator-signing.pub
    """
    from allocator.analysis.checks import check_run_dir

    report = check_run_dir(run_dir, verify_key=verify_key)
    if json_out:
        print_json(report.to_dict())
    else:
        for line in report.lines():
            out_console.print(line, markup=False, highlight=False)
    if not report.ok:
        raise typer.Exit(1)
