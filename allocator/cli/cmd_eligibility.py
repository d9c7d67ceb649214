"""``allocator eligibility``: who qualifies, why the others do not, and the reconciliation."""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from allocator.cli.app import app, guarded, out_console
from allocator.cli.common import progress_printer, resolve_data_dir


class DepegPolicy(str, Enum):
    exclude = "exclude"
    net = "net"
    ignore = "ignore"


@app.command("eligibility")
@guarded
def eligibility_cmd(
    out: Annotated[
        str,
        typer.Option(
            "--out",
            metavar="DIR",
            help="Directory for eligible.parquet, excluded.parquet, reconciliation.json (not "
            "a run directory of allocate, nor inside one).",
            show_default=False,
        ),
    ],
    data: Annotated[
        Path | None, typer.Option("--data", help="Data directory (default: built-in data).")
    ] = None,
    scenario: Annotated[
        Path | None,
        typer.Option(
            "--scenario",
            "-s",
            help="Take every rule from this scenario's [eligibility] (window, products, regions, "
            "thresholds, phase-in bands, policies); the options below override it.",
        ),
    ] = None,
    min_loss: Annotated[
        float | None,
        typer.Option("--min-loss", min=0.0, help="Minimum counted loss in USD (default 50)."),
    ] = None,
    min_ratio: Annotated[
        float | None,
        typer.Option(
            "--min-ratio", min=0.0, help="Minimum loss / net assets, as a fraction (default 0.30)."
        ),
    ] = None,
    depeg_policy: Annotated[
        DepegPolicy | None,
        typer.Option(
            "--depeg-policy", help="Users already paid depeg compensation (default exclude)."
        ),
    ] = None,
    json_out: Annotated[
        bool,
        typer.Option(
            "--json", help="Print the reconciliation as strict JSON on stdout, nothing else."
        ),
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress on stderr.")] = False,
) -> None:
    """Apply the eligibility rules and write the feature matrix and the exclusions.

    Every liquidated user ends up in exactly one of eligible.parquet (one row of features per
    user) and excluded.parquet (the first rule the user fails, with the numbers). The
    reconciliation ties users, events and USD losses together; the command fails (exit 1) if it
    does not hold. Rerunning on the same data writes byte-identical files. --out may not be
    empty, nor a run directory written by allocate or a path inside one (exit 2).

    Example: allocator eligibility --data data/small --out out/eligibility --min-loss 25 --json

    Example: allocator eligibility --scenario scenarios/phase_in.toml --out out/phase_in
    """
    from allocator.runs.reader import refuse_output_in_run
    from allocator.settings.models import EligibilityRules, Scenario
    from allocator.settings.scenarios import load_scenario, validate_scenario
    from allocator.vouchers.eligibility import run_eligibility, write_eligibility

    # before any work: an empty --out would mean the current directory, and a run directory's
    # excluded.parquet has the same name as ours
    refuse_output_in_run(out, "--out")
    out_dir = Path(out)
    base = load_scenario(scenario).eligibility if scenario is not None else EligibilityRules()
    changes: dict[str, Any] = {}
    if min_loss is not None:
        changes["min_loss_usd"] = float(min_loss)
    if min_ratio is not None:
        changes["min_loss_ratio"] = float(min_ratio)
    if depeg_policy is not None:
        changes["depeg_policy"] = depeg_policy.value
    rules = dataclasses.replace(base, **changes)
    if rules != base:
        # an override may contradict the scenario (a min loss below its phase-in band's lower
        # end): judge the combination by the scenario rules, naming the options
        validate_scenario(Scenario(name="eligibility", eligibility=rules), file="the options")

    progress = progress_printer(quiet or json_out)
    data_dir = resolve_data_dir(data)
    progress(f"loading, validating and applying the rules to {data_dir}")
    t0 = time.perf_counter()
    result = run_eligibility(data_dir, rules)
    result.reconciliation.check()
    elapsed = time.perf_counter() - t0
    progress(f"writing {out_dir}")
    write_eligibility(result, out_dir)

    if json_out:
        # Not sorted: excluded_by_reason keeps the order in which the rules are checked.
        text = json.dumps(result.reconciliation.to_dict(), indent=2, allow_nan=False)
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
        return
    for line in result.reconciliation.lines():
        out_console.print(line, markup=False, highlight=False)
    out_console.print(
        f"computed in {elapsed:.1f} s; wrote {out_dir}", markup=False, highlight=False
    )
