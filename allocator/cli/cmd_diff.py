"""``allocator diff``: two run directories user by user: old, new, the change and why.

The comparison itself lives in :mod:`allocator.analysis.diff` (the statuses, the ``why`` values
and their precedence are documented there).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from allocator.analysis.diff import (
    MAX_TOP_MOVES,
    TOP_MOVES,
    WHY_MEANING,
    RunDiff,
    check_diff_out,
    diff_runs,
    write_diff,
)
from allocator.cli.app import app, err_console, guarded, out_console
from allocator.cli.common import print_json
from allocator.errors import InputError
from allocator.kernel.money import format_cents


def _signed(cents: int) -> str:
    return f"+{format_cents(cents)}" if cents > 0 else format_cents(cents)


def _summary_table(diff: RunDiff) -> Table:
    c, t = diff.counts, diff.totals
    table = Table(title="what changed from run A to run B", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    for label, path, scenario, rule in (
        ("run A (old)", diff.run_a, diff.scenario_a, diff.rule_a),
        ("run B (new)", diff.run_b, diff.scenario_b, diff.rule_b),
    ):
        table.add_row(label, Text(f"{path} (scenario {scenario}, rule {rule})"))
    table.add_row("same input data", "yes" if diff.same_data else "no")
    if diff.round_a > 1 or diff.round_b > 1:
        chain = " of the same distribution" if diff.same_chain else ""
        table.add_row("rounds", f"round {diff.round_a} -> round {diff.round_b}{chain}")
    table.add_row("users in either run (allocated or excluded)", f"{c['users']:,}")
    table.add_row("paid in both, amount changed", f"{c['changed']:,}")
    table.add_row("paid in both, same amount", f"{c['unchanged']:,}")
    table.add_row("newly paid (in run B only)", f"{c['added']:,}")
    table.add_row("no longer paid (in run A only)", f"{c['removed']:,}")
    table.add_row("paid in neither run", f"{c['paid_in_neither']:,}")
    table.add_row("paid in run A, USD", format_cents(t["paid_a"]))
    table.add_row("paid in run B, USD", format_cents(t["paid_b"]))
    table.add_row("net change, USD", _signed(t["net"]))
    table.add_row(
        "moved (every user's change, added up without sign), USD", format_cents(t["moved"])
    )
    return table


def _why_table(diff: RunDiff) -> Table:
    table = Table(title="why the amounts changed (the first reason that applies)")
    table.add_column("why")
    table.add_column("users", justify="right")
    table.add_column("net change, USD", justify="right")
    table.add_column("moved, USD", justify="right")
    table.add_column("meaning")
    for why, row in diff.by_why().items():
        table.add_row(
            why,
            f"{row['users']:,}",
            _signed(row["delta_cents"]),
            format_cents(row["moved_cents"]),
            WHY_MEANING[why],
        )
    return table


def _largest_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title=f"the {len(rows):,} largest moves")
    table.add_column("user")
    table.add_column("run A, USD", justify="right")
    table.add_column("run B, USD", justify="right")
    table.add_column("change, USD", justify="right")
    table.add_column("why")
    table.add_column("in words")
    for r in rows:
        table.add_row(
            str(r["user_id"]),
            format_cents(r["old_cents"]),
            format_cents(r["new_cents"]),
            _signed(r["delta_cents"]),
            str(r["why"]),
            Text(str(r["detail"])),
        )
    return table


@app.command("diff")
@guarded
def diff_cmd(
    run_a: Annotated[Path, typer.Argument(help="The old run directory (allocator allocate).")],
    run_b: Annotated[Path, typer.Argument(help="The new run directory (allocator allocate).")],
    json_out: Annotated[
        bool, typer.Option("--json", help="Strict JSON on stdout, nothing else.")
    ] = False,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Write every user's row (user_id, old_cents, new_cents, delta_cents, "
            "old_status, new_status, why) to this .parquet or .csv file.",
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace an existing --out file (refused otherwise).")
    ] = False,
    top: Annotated[
        int,
        typer.Option(
            "--top", help=f"How many of the largest moves to list: 0 to {MAX_TOP_MOVES:,}."
        ),
    ] = TOP_MOVES,
) -> None:
    """Compare two runs user by user: the old and new voucher, the change and why it changed.

    Every user allocated or excluded in either run is listed with a status in each run (paid,
    excluded:<reason> or absent) and one reason, the first that applies: appeal or expired
    (run B is a later round that decided the user's appeal, or expired their voucher),
    eligibility (paid in one run only), unchanged (same cents), bound (the bound that binds changed, or its cents
    did), rule (the runs use different rules), weight (the user's weight changed), rule (nothing
    about the user changed: the rule's parameters or its price moved).

    Both run directories are verified first: a damaged or changed one is refused (exit 2;
    allocator check-budget RUN_DIR lists every check). --out may not be inside a run directory,
    and an existing file is replaced only with --force.

    Example: allocator diff runs/baseline runs/proportional --json

    Example: allocator diff runs/baseline runs/alpha2 --out runs/diff.csv --top 20

    Example: allocator diff runs/reserve runs/reserve-round2
    """
    if not 0 <= top <= MAX_TOP_MOVES:
        raise InputError(f"--top must be 0 to {MAX_TOP_MOVES:,}, not {top}.")
    if out is not None:
        # a wrong suffix, a path in a run directory or an existing file: refused before reading
        check_diff_out(out, force=force)
    diff = diff_runs(run_a, run_b)
    written = None if out is None else write_diff(diff, out, force=force)
    if json_out:
        result = diff.to_dict(top)
        result["out"] = None if written is None else str(written)
        print_json(result, sort_keys=False)
        return
    out_console.print(_summary_table(diff))
    out_console.print(_why_table(diff))
    rows = diff.largest(top)
    if rows:
        out_console.print(_largest_table(rows))
    if written is not None:
        err_console.print(
            f"wrote {written} ({diff.counts['users']:,} users)", markup=False, highlight=False
        )
