"""A depeg run directory: positions.parquet, users.parquet and manifest.json."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import polars as pl

from allocator import names as N
from allocator.data.inputs import file_sha256, load_inputs
from allocator.depeg.compensation import DepegResult, compute_depeg
from allocator.errors import InputError
from allocator.runs.rundir import dumps_manifest, versions
from allocator.settings.depeg import DepegRules, rules_to_dict

# --- files ---
POSITIONS_FILE = "positions.parquet"
USERS_FILE = "users.parquet"
MANIFEST_FILE = N.MANIFEST_FILE
RUN_FILES = (POSITIONS_FILE, USERS_FILE, MANIFEST_FILE)
MANIFEST_KIND = "depeg_compensation_run"
FORMAT_VERSION = 1


def run_depeg(data_dir: str | Path, rules: DepegRules | None = None) -> DepegResult:
    """Load and validate a data directory, then :func:`compute_depeg`; records input hashes."""
    inputs = load_inputs(Path(data_dir), validate=True)
    source = {k: str(v) for k, v in inputs.paths.items()}
    result = compute_depeg(inputs.events, inputs.prices, inputs.users, rules, source=source)
    used = (N.EVENTS_FILE, N.PRICES_FILE, N.USERS_FILE)
    hashes = {
        stem: {
            "path": str(Path(inputs.paths[stem]).resolve()),
            "sha256": file_sha256(inputs.paths[stem]),
        }
        for stem in used
    }
    return replace(result, inputs=hashes)


def manifest_dict(result: DepegResult) -> dict[str, Any]:
    """The run's manifest (``outputs`` hashes are added by the writer)."""
    return {
        "kind": MANIFEST_KIND,
        "format_version": FORMAT_VERSION,
        "rules": rules_to_dict(result.rules),
        "reference_prices": [r.to_dict() for r in result.references],
        "inputs": result.inputs,
        "versions": versions(),
        "totals": result.summary(),
        "counts": {
            "positions_in_window": result.reconciliation.positions_in_window,
            "positions_compensated": result.reconciliation.positions_compensated,
            "users_compensated": result.reconciliation.users_compensated,
            "users_by_status": dict(result.reconciliation.users_by_status),
        },
    }


def _parquet(df: pl.DataFrame, path: Path) -> None:
    df.write_parquet(
        path, compression="zstd", compression_level=3, statistics=True, row_group_size=256 * 1024
    )


def _manifest_kind(path: Path) -> str | None:
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("kind")
    except (OSError, ValueError, AttributeError):
        return None


def write_depeg_run(result: DepegResult, out_dir: str | Path) -> Path:
    """Write positions.parquet, users.parquet and manifest.json to ``out_dir`` atomically.

    Everything is written into a hidden sibling directory first and renamed into place; an
    existing ``out_dir`` is replaced only when it is empty or an earlier depeg run. The bytes
    depend only on the result, so a rerun on the same inputs writes identical files.
    """
    out = Path(os.path.abspath(out_dir))
    if out.exists():
        if not out.is_dir():
            raise InputError(f"--out {out} exists and is not a directory.")
        if any(out.iterdir()) and _manifest_kind(out / MANIFEST_FILE) != MANIFEST_KIND:
            raise InputError(
                f"--out {out} is a non-empty directory that is not a depeg run; "
                "refusing to replace it.",
                hint="choose a new or empty directory.",
            )
    man = manifest_dict(result)
    dumps_manifest(man)  # fail on an unserialisable manifest before touching the disk
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        _parquet(result.positions, tmp / POSITIONS_FILE)
        _parquet(result.users, tmp / USERS_FILE)
        man["outputs"] = {name: file_sha256(tmp / name) for name in (POSITIONS_FILE, USERS_FILE)}
        (tmp / MANIFEST_FILE).write_text(dumps_manifest(man), encoding="utf-8", newline="\n")
        for name in RUN_FILES:
            with open(tmp / name, "rb") as fh:
                os.fsync(fh.fileno())
        os.chmod(tmp, 0o755)
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
            os.rmdir(old)
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out
