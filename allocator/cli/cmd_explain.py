"""``allocator explain`` (why a user got their amount) and ``allocator audit`` (fairness audit)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from allocator.cli.app import app, err_console, guarded, out_console
from allocator.cli.common import print_json


@app.command("explain")
@guarded
def explain_cmd(
    user_id: Annotated[int, typer.Argument(help="The user to explain.")],
    run: Annotated[
        Path, typer.Option("--run", help="Run directory written by 'allocator allocate'.")
    ],
    json_out: Annotated[
        bool, typer.Option("--json", help="Print the explanation as strict JSON.")
    ] = False,
    no_others: Annotated[
        bool, typer.Option("--no-others", help="Skip the other shipped scenarios (faster).")
    ] = False,
) -> None:
    """Explain one user's voucher or exclusion: why did I get this amount?

    Liquidations by product and whether they counted; loss, net assets, loss ratio; each weight factor against the median-weight user; the price, the closed form (w / price)^(1/alpha) and the bound that binds (bounds in the whole cents that can be paid); with a phase-in band, the band the user is in, their phase factor and the scaled cap; or the rule that excluded the user (the band's lower end when there is one), its numbers and the distance to passing; and the amount under the other shipped scenarios. Everything is recomputed from the inputs and checked against the run (exit 2 if the user was never liquidated or the inputs changed).

    Example: allocator explain 10000080 --run runs/baseline --no-others
    """
    from allocator.explain import explain_user

    explanation = explain_user(run, user_id, other_scenarios=not no_others)
    if json_out:
        print_json(explanation.to_dict())
        return
    out_console.print("\n".join(explanation.lines()), markup=False)


@app.command("audit")
@guarded
def audit_cmd(
    run_dir: Annotated[Path, typer.Argument(help="Run directory written by 'allocator allocate'.")],
    json_out: Annotated[
        bool, typer.Option("--json", help="Print the audit as strict JSON.")
    ] = False,
) -> None:
    """Fairness audit of a run: inequality, coverage by loss band, ordering violations.

    Gini, Lorenz curve, coverage by loss band, and exact counts of monotonicity and envy violations, split by the documented factor that explains them (segment, weight features, bounds, loss ratio, cent tie-break). Exit 1 when violations remain unexplained although the run's weights are monotone in loss and loss ratio.

    Example: allocator audit runs/baseline --json
    """
    from allocator import names as N
    from allocator.audit import audit
    from allocator.rundir import read_manifest, read_parquet_file
    from allocator.scenarios import parse_scenario

    manifest = read_manifest(run_dir)
    objective = None
    if isinstance(manifest.get("scenario"), dict):
        objective = parse_scenario(
            manifest["scenario"], file=f"{Path(run_dir) / N.MANIFEST_FILE} (scenario)"
        ).objective
    allocations = read_parquet_file(Path(run_dir) / N.ALLOCATIONS_FILE)
    result = audit(allocations, objective=objective)
    if json_out:
        print_json(result.to_dict())
    else:
        out_console.print("\n".join(result.lines()), markup=False)
    if not result.ok:
        err_console.print(
            "[bold red]audit failed:[/] violations that no documented factor explains "
            f"(monotonicity {result.monotonicity.unexplained:,}, envy {result.envy.unexplained:,}).",
            markup=True,
        )
        raise typer.Exit(1)
