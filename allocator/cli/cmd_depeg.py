"""``allocator depeg ...``: the depeg compensation for USDe, BNSOL and WBETH collateral."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from allocator.cli.app import app, guarded, out_console
from allocator.cli.common import print_json, progress_printer, resolve_data_dir
from allocator.errors import ScenarioError

if TYPE_CHECKING:
    from allocator.settings.depeg import DepegRules

depeg_app = typer.Typer(
    help=(
        "Depeg compensation: positions liquidated on 2025-10-10 21:36-22:16 UTC whose collateral "
        "included USDe, BNSOL or WBETH are paid the gap to the 2025-10-11 00:00 price plus the "
        "liquidation fee.\n\n"
        "Example: allocator depeg compute --out runs/depeg"
    ),
    no_args_is_help=True,
)
app.add_typer(depeg_app, name="depeg")


def parse_prices(values: list[str] | None, option: str) -> dict[str, float]:
    """``["USDe=0.99", ...]`` -> ``{"USDe": 0.99}``; ScenarioError naming the option otherwise."""
    out: dict[str, float] = {}
    for text in values or []:
        asset, sep, price = text.partition("=")
        try:
            value = float(price) if sep else math.nan
        except ValueError:
            value = math.nan
        if not sep or not asset.strip() or not math.isfinite(value):
            raise ScenarioError(
                f"{option} {text!r}: expected ASSET=PRICE with a finite price in "
                f"USD, for example {option} USDe=0.999."
            )
        out[asset.strip()] = value
    return out


def rules_from_options(
    rules_file: Path | None,
    window_start: str | None,
    window_end: str | None,
    reference: list[str] | None,
    floor: list[str] | None,
    fee_refund: bool | None,
) -> DepegRules:
    """The rules file's ``[depeg]`` table (or the defaults) with the command-line options applied."""
    from allocator.settings.depeg import depeg_rules_from_dict, load_depeg_rules, merge_overrides

    overrides: dict[str, Any] = {}
    if window_start is not None:
        overrides["window_start"] = window_start
    if window_end is not None:
        overrides["window_end"] = window_end
    if reference:
        overrides["reference_prices"] = parse_prices(reference, "--reference")
    if floor:
        overrides["floors"] = parse_prices(floor, "--floor")
    if fee_refund is not None:
        overrides["refund_fees"] = fee_refund
    if rules_file is not None:
        return load_depeg_rules(rules_file, overrides)
    return depeg_rules_from_dict(merge_overrides({}, overrides), file="command line")


@depeg_app.command("compute")
@guarded
def compute_cmd(
    out: Annotated[
        Path,
        typer.Option(
            "--out", help="Run directory to write (replaced if it is an earlier depeg run)."
        ),
    ],
    data: Annotated[
        Path | None, typer.Option("--data", help="Data directory (default: built-in data).")
    ] = None,
    rules_file: Annotated[
        Path | None,
        typer.Option(
            "--rules",
            help="TOML file with a \\[depeg] table (window_start, window_end, assets, "
            "products, reference_at, reference_prices, floors, refund_fees).",
        ),
    ] = None,
    window_start: Annotated[
        str | None,
        typer.Option(
            "--window-start",
            help="First instant of the window, inclusive, with an "
            "offset (default 2025-10-10T21:36:00Z).",
        ),
    ] = None,
    window_end: Annotated[
        str | None,
        typer.Option(
            "--window-end", help="End of the window, exclusive (default 2025-10-10T22:16:00Z)."
        ),
    ] = None,
    reference: Annotated[
        list[str] | None,
        typer.Option(
            "--reference",
            help="Reference price override ASSET=USD, repeatable (default: the "
            "prices table at 2025-10-11 00:00 UTC).",
        ),
    ] = None,
    floor: Annotated[
        list[str] | None,
        typer.Option(
            "--floor",
            help="Minimum reference price ASSET=USD, repeatable (default USDe=1.0; USDe=0 removes it).",
        ),
    ] = None,
    fee_refund: Annotated[
        bool | None,
        typer.Option(
            "--fee-refund/--no-fee-refund", help="Refund the liquidation fee (default: yes)."
        ),
    ] = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="Strict JSON on stdout, nothing else.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress on stderr.")] = False,
) -> None:
    """Compute the depeg compensation per position and per user; write a run directory.

    Writes positions.parquet (every position in the window with depeg collateral, its prices,
    fee and compensation in cents, or the reason it gets nothing), users.parquet (per user:
    computed cents against the users table's depeg_comp_usd, with a status) and manifest.json
    (rules, reference prices, input hashes, totals). Prints the reconciliation; exits 1 if it
    does not hold. Reruns on the same data write byte-identical files.

    Examples:

      allocator depeg compute --out runs/depeg

      allocator depeg compute --data data/small --out runs/depeg_par --reference USDe=1 --floor USDe=0.95 --json
    """
    from allocator.depeg.compensation import ANNOUNCED_TOTAL_USD
    from allocator.depeg.run import run_depeg, write_depeg_run
    from allocator.kernel.money import cents_to_usd, format_cents
    from allocator.settings.depeg import rules_to_dict

    rules = rules_from_options(rules_file, window_start, window_end, reference, floor, fee_refund)
    progress = progress_printer(quiet or json_out)
    data_dir = resolve_data_dir(data)
    progress(f"loading, validating and applying the depeg rules to {data_dir}")
    t0 = time.perf_counter()
    result = run_depeg(data_dir, rules)
    elapsed = time.perf_counter() - t0
    result.reconciliation.check()
    progress(f"writing {out}")
    write_depeg_run(result, out)
    summary = result.summary()
    if json_out:
        print_json(
            {
                "run_dir": str(out),
                "data_dir": str(data_dir),
                "rules": rules_to_dict(rules),
                "reference_prices": [r.to_dict() for r in result.references],
                **summary,
            }
        )
        return
    for line in result.reconciliation.lines():
        out_console.print(line, markup=False, highlight=False)
    refs = ", ".join(
        f"{r.asset} {r.compensable_usd:,.6g}"
        + (f" (floor {r.floor_usd:g})" if r.floor_usd is not None else "")
        if r.compensable_usd is not None
        else f"{r.asset} missing"
        for r in result.references
    )
    by_asset = ", ".join(f"{a} {format_cents(c)}" for a, c in summary["by_asset_cents"].items())
    total = cents_to_usd(summary["total_cents"])
    out_console.print(
        f"compensable prices (USD): {refs}\n"
        f"by asset (USD): {by_asset}\n"
        f"total {format_cents(summary['total_cents'])} USD to {summary['users_compensated']:,} users = "
        f"{100 * total / ANNOUNCED_TOTAL_USD:.1f}% of the real programme's announced "
        f"{ANNOUNCED_TOTAL_USD / 1e6:,.0f}M\n"
        f"computed in {elapsed:.1f} s; wrote {out}",
        markup=False,
        highlight=False,
    )
