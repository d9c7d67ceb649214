"""``allocator keys``: signing keys for maker and checker (see :mod:`allocator.runs.signing`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from allocator.cli.app import app, guarded, out_console

keys_app = typer.Typer(help="Signing keys: the maker signs runs, the checker verifies them.")
app.add_typer(keys_app, name="keys")


@keys_app.command("new")
@guarded
def keys_new_cmd(
    out: Annotated[Path, typer.Option("--out", help="Folder for the two key files.")],
    force: Annotated[
        bool, typer.Option("--force", help="Replace key files already in --out.")
    ] = False,
) -> None:
    """Make an Ed25519 key pair: the private key signs runs, the public key verifies them.

    Give the private key (readable by its owner only) to whoever runs allocate, and the public
    key to finance: check-budget --verify-key then accepts only runs nobody edited without it.

    Example: allocator keys new --out keys
    """
    from allocator.runs.signing import new_key_pair

    private, public = new_key_pair(out, force=force)
    out_console.print(f"private key (signs; keep it secret): {private}")
    out_console.print(f"public key (verifies; give it to the checker): {public}")
