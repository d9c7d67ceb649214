"""A loan run directory: term sheet (CSV and Parquet), applications copy and manifest."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import polars as pl

from allocator import names as N
from allocator.errors import InputError
from allocator.jsonsafe import json_safe
from allocator.loans import applications as D
from allocator.loans.allocate import LoanResult
from allocator.runs.hashing import sha256_bytes
from allocator.runs.manifest import dumps_manifest, read_manifest, versions, write_manifest
from allocator.runs.store import atomic_directory
from allocator.settings.loans import loan_scenario_to_dict

# --- run directory ---
TERM_SHEET_CSV = "term_sheet.csv"
TERM_SHEET_PARQUET = "term_sheet.parquet"
APPLICATIONS_COPY = "applications.parquet"
MANIFEST = N.MANIFEST_FILE
MANIFEST_KIND = "loan_fund_run"
FORMAT_VERSION = 1


def applications_sha256(apps: pl.DataFrame) -> str:
    """Hash of an applications table's content, independent of file format and row order."""
    cols = [c for c in D.SCHEMA if c in apps.columns]
    data = apps.select(cols).sort(D.INSTITUTION_ID).write_csv().encode()
    return sha256_bytes(data)


def manifest_dict(
    result: LoanResult, *, applications: pl.DataFrame, source: str, files: dict[str, str]
) -> dict[str, Any]:
    """The manifest of a run: resolved scenario, input hash, versions, solver, totals,
    multipliers, objective and the SHA-256 of every file written."""
    manifest: dict[str, Any] = json_safe(
        {
            "kind": MANIFEST_KIND,
            "format_version": FORMAT_VERSION,
            "scenario": loan_scenario_to_dict(result.scenario),
            "applications": {
                "source": source,
                "rows": applications.height,
                "table_sha256": applications_sha256(applications),
            },
            "versions": versions(),
            "solver": result.solver,
            "totals": result.totals,
            "multipliers": result.multipliers,
            "objective": result.objective,
            "files": files,
        }
    )
    return manifest


def write_loan_run(
    result: LoanResult, out_dir: str | Path, *, applications: pl.DataFrame, source: str
) -> Path:
    """Write ``term_sheet.csv``, ``term_sheet.parquet``, a copy of the applications and
    ``manifest.json`` (last) to ``out_dir`` atomically (:func:`allocator.runs.store.atomic_directory`).
    An existing ``out_dir`` is replaced only if it is empty or an earlier loan run."""
    out = Path(out_dir)
    if out.exists():
        if not out.is_dir():
            raise InputError(f"--out {out} exists and is not a directory.")
        if any(out.iterdir()) and _run_kind(out) != MANIFEST_KIND:
            raise InputError(
                f"--out {out} is a non-empty directory that is not a loan run; "
                "refusing to replace it.",
                hint="choose a new or empty directory.",
            )
    apps_sorted = applications.select([c for c in D.SCHEMA if c in applications.columns]).sort(
        D.INSTITUTION_ID
    )
    blobs = {
        TERM_SHEET_CSV: result.term_sheet.write_csv().encode(),
        TERM_SHEET_PARQUET: _parquet_bytes(result.term_sheet),
        APPLICATIONS_COPY: _parquet_bytes(apps_sorted),
    }
    files = {k: sha256_bytes(v) for k, v in sorted(blobs.items())}
    man = manifest_dict(result, applications=applications, source=source, files=files)
    dumps_manifest(man)  # fail on an unserialisable manifest before touching the disk
    with atomic_directory(out) as staging:
        for name, data in blobs.items():
            (staging / name).write_bytes(data)
        write_manifest(staging, man)
    return out


def _parquet_bytes(df: pl.DataFrame) -> bytes:
    # Not the shared PARQUET_OPTIONS: loan runs have always been written with these options, and
    # the manifests and checks of existing runs hold the hashes of these bytes.
    buf = io.BytesIO()
    df.write_parquet(buf, statistics=False)
    return buf.getvalue()


def _run_kind(directory: Path) -> Any:
    """The ``kind`` of a directory's manifest, None when it has no readable one."""
    try:
        return read_manifest(directory / MANIFEST).get("kind")
    except InputError:
        return None
