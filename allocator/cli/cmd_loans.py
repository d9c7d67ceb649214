"""``allocator loans ...``: the USD 100M institutional loan fund (allocate, check, generate)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from allocator.cli.app import app, guarded, out_console
from allocator.cli.common import print_json, progress_printer
from allocator.errors import InputError

loans_app = typer.Typer(
    help=(
        "The USD 100M low-interest loan fund for institutions hit by the crash: allocate loans "
        "under fund, collateral, concentration and expected-loss limits, check a run, or "
        "generate a synthetic applications file.\n\n"
        "Example: allocator loans allocate --scenario scenarios/loans_default.toml --out runs/loans"
    ),
    no_args_is_help=True,
)
app.add_typer(loans_app, name="loans")

#: The synthetic applications used when --applications is not given.
DEFAULT_N = 400
DEFAULT_SEED = 20251014


@loans_app.command("allocate")
@guarded
def allocate_cmd(
    scenario: Annotated[Path, typer.Option("--scenario", "-s", help="Loan scenario TOML file.")],
    out: Annotated[
        Path,
        typer.Option(
            "--out", help="Run directory to write (replaced if it is an earlier loan run)."
        ),
    ],
    applications: Annotated[
        Path | None,
        typer.Option(
            "--applications",
            "-a",
            help="Applications file (.parquet or .csv); default: the synthetic set "
            f"(n={DEFAULT_N}, seed={DEFAULT_SEED}).",
        ),
    ] = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="Strict JSON on stdout, nothing else.")
    ] = False,
) -> None:
    """Allocate the loan fund for one scenario and write a run directory.

    Writes term_sheet.csv, term_sheet.parquet, a copy of the applications and manifest.json
    (resolved scenario, input hash, versions, solver status, totals, multipliers). Exits 3,
    writing nothing, when nothing can be lent or the solver does not prove optimality (e.g. it
    hit solver.time_limit_s).

    Examples:

      allocator loans allocate --scenario scenarios/loans_default.toml --out runs/loans

      allocator loans allocate -s scenarios/loans_default.toml -a apps.csv --out runs/loans_q4
    """
    from allocator.kernel.money import format_cents, format_usd
    from allocator.kernel.native import native_stdout_to_stderr
    from allocator.loans.allocate import allocate_loans
    from allocator.loans.applications import generate_applications, load_applications
    from allocator.loans.run import write_loan_run
    from allocator.settings.loans import load_loan_scenario

    # stdout carries only the result below: anything native code prints while computing (the
    # HiGHS banner) goes to stderr, even from code outside allocator.loans.
    with native_stdout_to_stderr():
        scn = load_loan_scenario(scenario)
        if applications is None:
            apps = generate_applications(DEFAULT_N, DEFAULT_SEED)
            source = f"synthetic(n={DEFAULT_N}, seed={DEFAULT_SEED})"
        else:
            apps = load_applications(applications)
            source = str(applications.resolve())
        progress_printer(json_out)(f"solving {scn.name} for {apps.height} applications")
        result = allocate_loans(apps, scn, source=source)
        write_loan_run(result, out, applications=apps, source=source)
    t, m, o, sv = result.totals, result.multipliers, result.objective, result.solver
    summary = {
        "scenario": scn.name,
        "run_dir": str(out),
        "applications": source,
        **{
            k: t[k]
            for k in (
                "applicants",
                "funded",
                "fund_cents",
                "lent_cents",
                "unlent_cents",
                "expected_loss_usd",
                "el_budget_usd",
                "binding_counts",
            )
        },
        "method": sv["method"],
        "status": sv["status"],
        "objective": o["value"],
        "optimality_gap": o["optimality_gap"],
        "fund_per_usd": m["fund_per_usd"],
        "el_budget_per_usd": m["el_budget_per_usd"],
    }
    if json_out:
        print_json(summary)
        return
    counts = ", ".join(f"{k} {v}" for k, v in t["binding_counts"].items() if v)
    out_console.print(
        f"scenario {scn.name}: {t['funded']} of {t['applicants']} applicants funded\n"
        f"lent {format_cents(t['lent_cents'])} of {format_cents(t['fund_cents'])} USD, "
        f"expected loss {format_usd(t['expected_loss_usd'])} of {format_usd(t['el_budget_usd'])} USD\n"
        f"held by: {counts}\n"
        f"solver {sv['method']} ({sv['status']}), objective {o['value']:.10g}, "
        f"optimality gap <= {o['optimality_gap']:.3g}\n"
        f"run directory {out}",
        markup=False,
        highlight=False,
    )


@loans_app.command("check")
@guarded
def check_cmd(
    run_dir: Annotated[
        Path, typer.Argument(help="Run directory written by `allocator loans allocate`.")
    ],
    json_out: Annotated[
        bool, typer.Option("--json", help="Strict JSON on stdout, nothing else.")
    ] = False,
) -> None:
    """Check a loan run from its files alone: limits, fund, expected-loss budget, hashes.

    Exits 0 only if every check holds; otherwise lists every failure and exits 1.

    Example: allocator loans check runs/loans
    """
    from allocator.loans.checks import check_loans

    report = check_loans(run_dir)
    if json_out:
        print_json(report.to_dict())
    else:
        for line in report.lines():
            out_console.print(line, markup=False, highlight=False)
    if not report.ok:
        raise typer.Exit(1)


@loans_app.command("generate")
@guarded
def generate_cmd(
    out: Annotated[Path, typer.Option("--out", help="File to write: .parquet or .csv.")],
    n: Annotated[
        int, typer.Option("--n", help="Number of applications, 1..1,000,000.")
    ] = DEFAULT_N,
    seed: Annotated[
        int, typer.Option("--seed", help="Random seed, 0..2**63-1 (same seed, same file).")
    ] = DEFAULT_SEED,
) -> None:
    """Write a synthetic, deterministic loan applications file.

    --n and --seed out of range exit 2 before anything is written.

    Examples:

      allocator loans generate --out apps.parquet

      allocator loans generate --out apps.csv --n 50 --seed 7
    """
    from allocator.kernel.money import format_usd
    from allocator.loans.applications import generate_applications, write_applications

    if out.suffix.lower() not in (".parquet", ".csv"):
        raise InputError(f"--out {out} must end in .parquet or .csv.")
    df = generate_applications(n, seed)  # validates n and seed (InputError, exit 2)
    write_applications(df, out)
    total = float(df["requested_usd"].sum())
    out_console.print(
        f"wrote {df.height} applications (requests {format_usd(total, currency=True)}) to {out}",
        markup=False,
        highlight=False,
    )
