"""``allocator export``: finance's sign-off workbook of a run directory (xlsx, or csv files)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from allocator.cli.app import app, err_console, guarded, styled
from allocator.cli.common import stage
from allocator.errors import InputError


def _format_of(fmt: str | None, out: Path) -> str:
    """``--format``, or from the suffix of ``--out`` (``.csv``: csv, anything else: xlsx); a
    suffix that says the other format is refused."""
    from allocator.report.export import EXPORT_FORMATS

    suffix = out.suffix.lower()
    if fmt is None:
        return "csv" if suffix == ".csv" else "xlsx"
    if fmt not in EXPORT_FORMATS:
        raise InputError(f"--format must be one of {', '.join(EXPORT_FORMATS)}, not {fmt!r}.")
    other = {"xlsx": ".csv", "csv": ".xlsx"}[fmt]
    if suffix == other:
        raise InputError(
            f"--format {fmt} with --out {out}: the file name says {other[1:]}; name the file "
            f".{fmt}, or give --format {other[1:]}."
        )
    return fmt


@app.command("export")
@guarded
def export_cmd(
    run_dir: Annotated[Path, typer.Argument(help="Run directory written by `allocator allocate`.")],
    out: Annotated[
        Path,
        typer.Option(
            "--out", "-o", help="File to write (e.g. signoff.xlsx; for csv, the payouts file)."
        ),
    ],
    fmt: Annotated[
        str | None,
        typer.Option(
            "--format",
            "-f",
            help="xlsx | csv (default: csv when --out ends in .csv, else xlsx).",
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace files that already exist (refused otherwise).")
    ] = False,
) -> None:
    """Write finance's sign-off of a run: summary, payouts, batches, exclusions, regions.

    xlsx: one workbook with the sheets Summary (programme, scenario, budget, paid and unspent in
    USD, eligible and excluded users, users at the floor and cap, the check-budget result, the
    sha256 of the manifest and of every input and output file), Payouts (user_id, amount_usd,
    batch, idempotency_key: payouts.csv to the cent), Batches (users, USD and schedule per
    batch), Exclusions (users and loss per reason) and By region (eligible users and USD paid
    per region of the users table), each with a total row. Amounts are numbers in USD with two
    decimals, never text; two exports of the same run are byte-identical.

    csv: the payouts (amount_usd as text with exactly two decimals, e.g. 1234.50) to --out, and
    FILE.summary.csv, FILE.batches.csv, FILE.exclusions.csv and FILE.regions.csv beside it.

    Files are written atomically; an existing file is replaced only with --force, the folder
    must exist. A damaged run directory, one changed since its run, or input data changed since
    the run is refused (exit 2, nothing written). When a finance check fails the export is still
    written, states the failures in its summary, and the exit code is 1, as for
    `allocator check-budget`.

    Example: allocator export runs/baseline --format xlsx --out runs/baseline-signoff.xlsx

    Example: allocator export runs/baseline --out runs/baseline-payouts.csv --force
    """
    from allocator.report.export import build_signoff, check_outputs, write_signoff

    kind = _format_of(fmt, out)
    # before any work: a file that may not be written (an existing one, a missing folder, a
    # path inside a run directory) is refused without reading the run
    paths = check_outputs(out, kind, force=force)
    with stage("reading and checking the run"):
        signoff = build_signoff(run_dir)
    with stage(f"writing {out}"):
        written = write_signoff(signoff, paths, kind)
    for path in written:
        err_console.print(f"wrote {path}", markup=False, highlight=False)
    if not signoff.ok:
        err_console.print(
            styled(
                "finance checks failed:",
                "bold red",
                " " + ", ".join(c.name for c in signoff.checks.failures),
            )
        )
        raise typer.Exit(1)
