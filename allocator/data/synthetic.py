"""Deterministic synthetic input data calibrated on the crash of 2025-10-10.

:func:`generate` writes the four input tables of :mod:`allocator.data.inputs` for a given number of
liquidated users; :func:`default_data_dir` provides the built-in default data set (generated on
first use, then cached). The tables are drawn in :mod:`~allocator.data.synthetic_prices`,
:mod:`~allocator.data.synthetic_events` and :mod:`~allocator.data.synthetic_accounts` around the
numbers of :mod:`~allocator.data.synthetic_calibration`; this module draws them in a fixed order
and writes the files.

What the data reproduces (public facts, see the domain brief, section 4):

* per-account losses are heavy-tailed: a log-normal body (median about USD 5,000) with a Pareto
  tail (index 1.15 from USD 60k), so a few percent of accounts lose over USD 100k, some over
  USD 1M and a few over USD 10M;
* longs far outnumber shorts (about 6.7 : 1 in events; by loss the ratio moves with the few
  largest accounts, mostly long), events peak around 21:15 UTC on 2025-10-10
  (most between 20:50 and 22:30, some through the 11th) and users have several events
  (about 5 on average, geometric with a heavy tail) across products;
* USD-margined futures dominate; coin-margined futures settle losses in the coin (BTC, ETH, ...)
  and need price conversion; cross and isolated margin; a few percent of events are on products
  the programme does not cover (options, spot, loan), and some users have only those;
* collateral is mostly USDT; some users post USDe, BNSOL or WBETH and are liquidated mostly in
  the depeg window 2025-10-10 21:36-22:16, where those assets fall to about 0.66, 34.90 and
  430.65 USD, are back within a few percent of fair value at 22:16 and fully recovered ten
  minutes later;
* the venue also force-sells that collateral itself: events on the symbols ``USDEUSDT``,
  ``BNSOLUSDT`` and ``WBETHUSDT`` (quantity in the collateral asset, ``liq_price`` in USDT at the
  depressed price, a liquidation fee of 0.5-1.5% of notional) on margin, USD-margined futures
  (multi-asset mode) and loan accounts, clustered around each asset's low; a few fall just
  outside the window (21:26-21:36, 22:16-22:26), including one exactly at 21:36:00 (inside) and
  one exactly at 22:16:00 (outside) whenever there are enough of them;
* ``depeg_comp_usd`` is the depeg compensation already received, computed with the default
  rules of :mod:`allocator.depeg.compensation` (reference price the 2025-10-11 00:00 bar, USDe's floored at
  USD 1, fee refunded, per position rounded half up to the cent, summed per user) on the
  collateral sales inside the window. Exceptions, on purpose: about 2% of the users owed
  compensation were not paid (``0``), and about half of the users whose collateral was sold only
  outside the window were paid the same formula on those sales after a case review;
* edge cases: events just outside the window (2025-10-09 23:59, exactly 2025-10-12 00:00, later
  on the 12th) and exactly on its inner edges, users without a snapshot row, zero and negative
  net assets, restricted regions, unverified KYC, users missing from the users table, and
  clusters just below the USD 50 and 30% thresholds for cliff analysis.

Net assets are set from each user's counted loss through a loss ratio
:math:`r = L / A` drawn log-normal around 0.6, so that with the default rules roughly 60% of
liquidated users are eligible. The snapshot holds about ten times as many users as were
liquidated. Every random draw comes from one ``numpy`` generator seeded with ``seed`` in a fixed
order, so the same ``(users, seed)`` gives byte-identical files.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO

import numpy as np
import polars as pl

from allocator import __version__
from allocator import names as N
from allocator.data.schemas import FORMATS
from allocator.data.synthetic_accounts import snapshot_table, users_table
from allocator.data.synthetic_calibration import (
    DEFAULT_SEED,
    DEFAULT_USERS,
    DEPEG_END,
    DEPEG_FLOORS,
    DEPEG_REFERENCE_AT,
    DEPEG_START,
    GENERATOR_VERSION,
    N_BARS,
    PEAK,
    PRICE_END,
    PRICE_START,
    SNAPSHOT_MULTIPLE,
)
from allocator.data.synthetic_events import draw_people, events_table
from allocator.data.synthetic_prices import price_paths, prices_table
from allocator.errors import InputError
from allocator.runs.store import atomic_directory, atomic_write

# The calibration constants stay importable from here, where the tests and notebooks look.
__all__ = [
    "DEFAULT_SEED",
    "DEFAULT_USERS",
    "DEPEG_END",
    "DEPEG_FLOORS",
    "DEPEG_REFERENCE_AT",
    "DEPEG_START",
    "GENERATOR_VERSION",
    "MAX_USERS",
    "N_BARS",
    "PEAK",
    "PRICE_END",
    "PRICE_START",
    "SNAPSHOT_MULTIPLE",
    "cache_root",
    "default_data_dir",
    "generate",
    "generate_tables",
]


def generate_tables(
    users: int = DEFAULT_USERS, seed: int = DEFAULT_SEED
) -> dict[str, pl.DataFrame]:
    """Build the four input tables in memory (see the module docstring for what they model).

    Parameters
    ----------
    users : int
        Number of liquidated users (>= 1); the events table has about ``5 * users`` rows and
        the snapshot about ``10 * users``.
    seed : int
        Seed of the random generator (>= 0).

    Returns
    -------
    dict of str to polars.DataFrame
        Keyed by table stem, each with the columns and types of :data:`allocator.data.inputs.SCHEMAS`.
    """
    if int(users) < 1:
        raise InputError(f"cannot generate data for {users} liquidated users: need at least 1.")
    if int(seed) < 0:
        raise InputError(f"seed must be a non-negative integer, got {seed}.")
    rng = np.random.default_rng(int(seed))
    assets, px, fair = price_paths(rng)
    people = draw_people(rng, int(users))
    events, losses = events_table(rng, people, assets, px, fair)
    snapshot, net = snapshot_table(rng, people, losses)
    users_df = users_table(rng, people, net, losses)
    return {
        N.EVENTS_FILE: events,
        N.PRICES_FILE: prices_table(assets, px),
        N.SNAPSHOT_FILE: snapshot,
        N.USERS_FILE: users_df,
    }


# --------------------------------------------------------------------------------------------
# files

#: Most liquidated users :func:`generate` accepts. Far above the 2M-user stress size, but every
#: table is built in memory (about 2 GB per million users), so a mistyped size is refused at
#: once instead of failing after minutes with an out-of-memory error.
MAX_USERS = 50_000_000


def _check_destination(out_dir: Path, fmt: str) -> None:
    """Refuse an output directory whose contents :func:`generate` would clobber or confuse.

    A run directory (it holds ``manifest.json``) is the allocator's output, not a data
    directory. Tables in the other format would make the directory ambiguous for
    :func:`allocator.data.inputs.load_inputs`; they may be the user's real data, so they are never
    deleted: the user decides.
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"output path {out_dir} exists and is not a directory.")
    if not out_dir.is_dir():
        return
    if (out_dir / N.MANIFEST_FILE).exists():
        raise InputError(
            f"output directory {out_dir} is an allocator run directory (it holds "
            f"{N.MANIFEST_FILE}); synthetic tables are not written into runs. Choose another "
            f"--out, for example data/synthetic. Nothing was written."
        )
    others = [
        out_dir / f"{stem}.{other}"
        for stem in N.INPUT_TABLES
        for other in FORMATS
        if other != fmt and (out_dir / f"{stem}.{other}").exists()
    ]
    if others:
        other = others[0].suffix.lstrip(".")
        raise InputError(
            f"output directory {out_dir} already holds {other} tables "
            f"({', '.join(p.name for p in others)}); writing {fmt} tables beside them would leave "
            f"each table in two formats, and they are not deleted for you. Choose another --out, "
            f"write --format {other} instead, or move or delete those files first. Nothing was "
            f"written."
        )


def _write_table(df: pl.DataFrame, file: IO[bytes], fmt: str) -> None:
    if fmt == "parquet":
        df.write_parquet(file, compression="zstd", compression_level=1, statistics=True)
    else:
        df.write_csv(file)


def _write_tables(tables: dict[str, pl.DataFrame], directory: Path, fmt: str) -> None:
    for stem in N.INPUT_TABLES:
        with (directory / f"{stem}.{fmt}").open("wb") as file:
            _write_table(tables.pop(stem), file, fmt)


def generate(
    out_dir: str | Path,
    *,
    users: int = DEFAULT_USERS,
    seed: int = DEFAULT_SEED,
    fmt: str = "parquet",
) -> dict[str, Path]:
    """Write a synthetic data directory for ``users`` liquidated users.

    The tables are built in a temporary sibling of ``out_dir`` and moved into place by renames,
    so a reader never sees a half-written file. Table files of the same format already in
    ``out_dir`` are replaced; any other file is left alone. The same ``(users, seed)`` writes
    byte-identical files.

    Parameters
    ----------
    out_dir : str or Path
        Directory to create or update; not empty text (which would mean the current
        directory).
    users : int
        Number of liquidated users, 1 to :data:`MAX_USERS`; about ``5 * users`` events and
        ``10 * users`` snapshot rows.
    seed : int
        Seed of the random generator: any integer >= 0.
    fmt : {"parquet", "csv"}
        File format of the tables.

    Returns
    -------
    dict of str to Path
        The file written for each table stem.

    Raises
    ------
    InputError
        For an empty ``out_dir``, a path that is not a directory, a run directory (it holds
        ``manifest.json``), a directory holding tables of the other format, ``users`` outside
        1..:data:`MAX_USERS`, a negative ``seed`` or an unknown format. Nothing is written.
    """
    if not str(out_dir).strip():
        # Path("") is Path("."): an empty --out (an unset shell variable) would fill the
        # current directory.
        raise InputError(
            "output directory is empty text; give a directory path, for example data/synthetic. "
            "Nothing was written."
        )
    out_dir = Path(out_dir)
    if int(users) > MAX_USERS:
        raise InputError(
            f"cannot generate data for {int(users):,} liquidated users: the limit is "
            f"{MAX_USERS:,} (every table is built in memory, about 2 GB per million users). "
            f"Nothing was written."
        )
    if fmt not in FORMATS:
        raise InputError(f"unknown data format {fmt!r}: use one of {', '.join(FORMATS)}.")
    _check_destination(out_dir, fmt)
    tables = generate_tables(users, seed)  # first: bad arguments leave nothing behind
    if out_dir.is_dir():
        # only the four tables of this format are replaced, each atomically; nothing else in
        # the folder is touched (_check_destination refused one holding the other format)
        for stem in N.INPUT_TABLES:
            frame = tables.pop(stem)

            def write(file: IO[bytes], frame: pl.DataFrame = frame) -> None:
                _write_table(frame, file, fmt)

            atomic_write(out_dir / f"{stem}.{fmt}", write)
    else:
        with atomic_directory(out_dir, replace=False) as staging:
            _write_tables(tables, staging, fmt)
    return {stem: out_dir / f"{stem}.{fmt}" for stem in N.INPUT_TABLES}


def cache_root() -> Path:
    """``$ALLOCATOR_CACHE_DIR`` if set, else ``~/.cache/allocator``."""
    env = os.environ.get("ALLOCATOR_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "allocator"


def default_data_dir(*, users: int = DEFAULT_USERS, seed: int = DEFAULT_SEED) -> Path:
    """The built-in default data directory, generated on first use and cached.

    The cache folder is keyed by package version, generator version, size and seed. When two
    processes race, each builds in its own staging directory and renames it into place
    (:func:`allocator.runs.store.atomic_directory`); the loser finds the target taken and uses it.
    """
    target = cache_root() / f"data-{__version__}-gen{GENERATOR_VERSION}-u{users}-s{seed}"
    if _complete(target):
        return target
    if target.exists():
        # Not made by us (we only ever rename complete directories in): rebuild its tables.
        generate(target, users=users, seed=seed)
        return target
    try:
        with atomic_directory(target, replace=False) as staging:
            _write_tables(generate_tables(users, seed), staging, "parquet")
    except OSError:  # FileExistsError included: another process got there first
        if not _complete(target):
            raise
    return target


def _complete(path: Path) -> bool:
    return all((path / f"{stem}.parquet").is_file() for stem in N.INPUT_TABLES)
