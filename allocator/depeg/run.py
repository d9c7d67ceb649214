"""A depeg run directory: positions.parquet, users.parquet and manifest.json."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from allocator import names as N
from allocator.data.inputs import load_inputs
from allocator.depeg.compensation import DepegResult, compute_depeg
from allocator.errors import InputError
from allocator.runs.hashing import sha256_file
from allocator.runs.manifest import dumps_manifest, read_manifest, versions, write_manifest
from allocator.runs.store import atomic_directory, write_parquet
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
            "sha256": sha256_file(inputs.paths[stem]),
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


def _run_kind(directory: Path) -> Any:
    """The ``kind`` of a directory's manifest, None when it has no readable one."""
    try:
        return read_manifest(directory / MANIFEST_FILE).get("kind")
    except InputError:
        return None


def write_depeg_run(result: DepegResult, out_dir: str | Path) -> Path:
    """Write positions.parquet, users.parquet and manifest.json (last) to ``out_dir`` atomically.

    Everything is written into a hidden sibling directory first and renamed into place
    (:func:`allocator.runs.store.atomic_directory`); an existing ``out_dir`` is replaced only
    when it is empty or an earlier depeg run. The bytes depend only on the result (deterministic
    parquet, canonical manifest), so a rerun on the same inputs writes identical files.
    """
    out = Path(os.path.abspath(out_dir))
    if out.exists():
        if not out.is_dir():
            raise InputError(f"--out {out} exists and is not a directory.")
        if any(out.iterdir()) and _run_kind(out) != MANIFEST_KIND:
            raise InputError(
                f"--out {out} is a non-empty directory that is not a depeg run; "
                "refusing to replace it.",
                hint="choose a new or empty directory.",
            )
    man = manifest_dict(result)
    dumps_manifest(man)  # fail on an unserialisable manifest before touching the disk
    with atomic_directory(out) as staging:
        write_parquet(result.positions, staging / POSITIONS_FILE)
        write_parquet(result.users, staging / USERS_FILE)
        man["outputs"] = {
            name: sha256_file(staging / name) for name in (POSITIONS_FILE, USERS_FILE)
        }
        write_manifest(staging, man)
    return out
