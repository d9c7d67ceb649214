"""``allocator programme summary``: vouchers, depeg compensation and loans in one view."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from allocator.cli.app import app, guarded, out_console
from allocator.cli.common import print_json, progress_printer, resolve_data_dir

programme_app = typer.Typer(
    help=(
        "The three programmes after the crash side by side: USD 300M vouchers, USD 283M depeg "
        "compensation and the USD 100M loan fund.\n\n"
        "Example: allocator programme summary --voucher-run runs/baseline --loans-run runs/loans"
    ),
    no_args_is_help=True,
)
app.add_typer(programme_app, name="programme")


@programme_app.command("summary")
@guarded
def summary_cmd(
    data: Annotated[
        Path | None, typer.Option("--data", help="Data directory (default: built-in data).")
    ] = None,
    voucher_run: Annotated[
        Path | None,
        typer.Option(
            "--voucher-run",
            help="Voucher run directory (allocator allocate); default: run "
            "the voucher scenario on the data.",
        ),
    ] = None,
    loans_run: Annotated[
        Path | None,
        typer.Option(
            "--loans-run",
            help="Loan run directory (allocator loans allocate); default: "
            "solve the loan scenario on the synthetic applications.",
        ),
    ] = None,
    voucher_scenario: Annotated[
        Path | None,
        typer.Option(
            "--voucher-scenario",
            help="Voucher scenario when no --voucher-run (default scenarios/baseline.toml).",
        ),
    ] = None,
    loan_scenario: Annotated[
        Path | None,
        typer.Option(
            "--loan-scenario",
            help="Loan scenario when no --loans-run (default scenarios/loans_default.toml).",
        ),
    ] = None,
    rules_file: Annotated[
        Path | None,
        typer.Option("--depeg-rules", help="TOML file with a \\[depeg] table (default rules)."),
    ] = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="Strict JSON on stdout, nothing else.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress on stderr.")] = False,
) -> None:
    """Users reached and dollars per programme, overlaps, and the total against USD 683M.

    Vouchers come from --voucher-run (or the baseline scenario run on the data), depeg
    compensation is computed from the data, loans come from --loans-run (or the default loan
    scenario on the synthetic applications). Overlaps are counted on user ids; loan applicants
    are institutions without a user id in the data, so their overlaps are reported as not
    linkable. Exits 1 if a consistency check fails (a run's total against its manifest, the
    exclude policy, the depeg reconciliation).

    Examples:

      allocator programme summary

      allocator programme summary --data data/small --voucher-run runs/baseline --loans-run runs/loans --json
    """
    from allocator.kernel.native import native_stdout_to_stderr
    from allocator.programme import summarise_programmes
    from allocator.settings.depeg import load_depeg_rules

    # stdout carries only the result below: anything native code prints while the three
    # programmes are computed (the HiGHS banner of the loan model) goes to stderr.
    with native_stdout_to_stderr():
        rules = load_depeg_rules(rules_file) if rules_file is not None else None
        progress = progress_printer(quiet or json_out)
        data_dir = resolve_data_dir(data)
        summary = summarise_programmes(
            data_dir,
            voucher_run=voucher_run,
            loans_run=loans_run,
            voucher_scenario=voucher_scenario,
            loan_scenario=loan_scenario,
            depeg_rules=rules,
            progress=progress,
        )
    if json_out:
        print_json(summary.to_dict())
    else:
        for line in summary.lines():
            out_console.print(line, markup=False, highlight=False)
    if not summary.ok:
        raise typer.Exit(1)
