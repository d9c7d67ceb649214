"""``allocator scenario``: the JSON Schema of settings files, a file resolved, files checked."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from allocator.cli.app import app, guarded, out_console
from allocator.cli.common import print_json
from allocator.errors import AllocatorError
from allocator.settings.files import KINDS, json_schema, resolve_file, to_toml

scenario_app = typer.Typer(
    help=(
        "Settings files: print the JSON Schema editors use to complete and check keys, show a "
        "file fully resolved, or validate files.\n\n"
        "Example: allocator scenario validate scenarios/*.toml"
    ),
    no_args_is_help=True,
)
app.add_typer(scenario_app, name="scenario")


@scenario_app.command("schema")
@guarded
def schema_cmd(
    kind: Annotated[
        str,
        typer.Option("--kind", help=f"Kind of file: {' | '.join(KINDS)}."),
    ] = "voucher",
) -> None:
    """Print the JSON Schema of a kind of settings file (keys, types, ranges, descriptions).

    Point a TOML editor at it (e.g. a '#:schema ./voucher.schema.json' first line for Taplo /
    Even Better TOML) to complete and check keys as you type.

    Example: allocator scenario schema --kind loans > loans.schema.json
    """
    print_json(json_schema(kind), sort_keys=False)


@scenario_app.command("show")
@guarded
def show_cmd(
    file: Annotated[Path, typer.Argument(help="Settings file (voucher, loan or depeg TOML).")],
    json_out: Annotated[
        bool, typer.Option("--json", help="Print JSON (the run manifest's form) instead of TOML.")
    ] = False,
) -> None:
    """Print a settings file fully resolved: every key with its value, defaults included.

    Example: allocator scenario show scenarios/retail_first.toml
    """
    resolved = resolve_file(file)
    if json_out:
        print_json(resolved.resolved, sort_keys=False)
        return
    out_console.print(
        f"# {resolved.path}: {resolved.kind} settings, fully resolved\n"
        + to_toml(resolved.resolved),
        end="",
    )


@scenario_app.command("validate")
def validate_cmd(
    files: Annotated[list[Path], typer.Argument(help="Settings files to check.")],
) -> None:
    """Check each settings file (voucher or loan scenario, or depeg rules) and print 'ok' or why.

    Exit 0 when every file is valid, 2 otherwise.

    Example: allocator scenario validate scenarios/*.toml
    """
    bad = 0
    for path in files:
        try:
            resolved = resolve_file(path)
        except AllocatorError as exc:
            bad += 1
            out_console.print(f"{path}: error: {exc}")
        else:
            out_console.print(f"{path}: ok ({resolved.kind})")
    if bad:
        raise typer.Exit(2)
