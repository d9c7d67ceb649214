"""``allocator generate``: write a synthetic data directory calibrated on the 2025-10-10 crash."""

from __future__ import annotations

import time
from enum import Enum
from pathlib import Path
from typing import Annotated

import polars as pl
import typer

from allocator.cli.app import app, guarded, out_console
from allocator.cli.common import stage
from allocator.data.synthetic import DEFAULT_SEED, DEFAULT_USERS, MAX_USERS, generate
from allocator.errors import InputError


class DataFormat(str, Enum):
    parquet = "parquet"
    csv = "csv"


def _rows(path: Path) -> int:
    scan = (
        pl.scan_parquet(path)
        if path.suffix == ".parquet"
        else pl.scan_csv(path, infer_schema=False)
    )
    return int(scan.select(pl.len()).collect().item())


@app.command("generate")
@guarded
def generate_cmd(
    # Text, not Path: Typer turns "" into Path("."), and an empty --out (an unset shell
    # variable) must be refused rather than fill the current directory.
    out: Annotated[
        str,
        typer.Option(
            "--out",
            metavar="DIR",
            help="Directory to write (created if missing); not a run directory, and not one "
            "holding the other format's tables.",
        ),
    ],
    users: Annotated[
        int,
        typer.Option(
            "--users",
            min=1,
            help=f"Number of liquidated users (~5 events each), at most {MAX_USERS:,}.",
        ),
    ] = DEFAULT_USERS,
    seed: Annotated[
        int,
        typer.Option("--seed", min=0, help="Random seed, any integer >= 0; same seed, same bytes."),
    ] = DEFAULT_SEED,
    fmt: Annotated[
        DataFormat, typer.Option("--format", help="File format of the tables.")
    ] = DataFormat.parquet,
) -> None:
    """Write synthetic liquidations, prices, snapshot and users tables.

    The data reproduce the public facts of the crash (heavy-tailed losses, longs far ahead of
    shorts, the 21:15 UTC peak, coin-margined settlement, the USDe/BNSOL/WBETH depeg) and the
    edge cases the eligibility rules must handle. Rerunning with the same --users and --seed
    writes byte-identical files, replacing the four tables; other files are left alone.

    Example: allocator generate --users 20000 --seed 7 --out data/small --format csv
    """
    t0 = time.perf_counter()
    try:
        with stage(f"generating {users:,} liquidated users"):
            paths = generate(out, users=users, seed=seed, fmt=fmt.value)
    except MemoryError:
        # Below MAX_USERS a machine may still run short: say so instead of a numpy traceback.
        raise InputError(
            f"not enough memory to generate {users:,} liquidated users (every table is built "
            f"in memory, about 2 GB per million users); use a smaller --users. Nothing was written."
        ) from None
    elapsed = time.perf_counter() - t0
    for stem, path in paths.items():
        out_console.print(
            f"{stem:<13} {_rows(path):>12,} rows  {path}", markup=False, highlight=False
        )
    out_console.print(
        f"wrote {out} in {elapsed:.1f} s (users={users}, seed={seed})",
        markup=False,
        highlight=False,
    )
