"""A loan run directory: term sheet (CSV and Parquet), applications copy and manifest."""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import shutil
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import polars as pl

from allocator.errors import InputError
from allocator.jsonsafe import json_safe
from allocator.loans import applications as D
from allocator.loans.allocate import LoanResult
from allocator.settings.loans import loan_scenario_to_dict

# --- run directory ---
TERM_SHEET_CSV = "term_sheet.csv"
TERM_SHEET_PARQUET = "term_sheet.parquet"
APPLICATIONS_COPY = "applications.parquet"
MANIFEST = "manifest.json"
MANIFEST_KIND = "loan_fund_run"
FORMAT_VERSION = 1


def applications_sha256(apps: pl.DataFrame) -> str:
    """Hash of an applications table's content, independent of file format and row order."""
    cols = [c for c in D.SCHEMA if c in apps.columns]
    data = apps.select(cols).sort(D.INSTITUTION_ID).write_csv().encode()
    return hashlib.sha256(data).hexdigest()


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("allocator", "numpy", "polars", "cvxpy", "clarabel", "highspy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def manifest_dict(
    result: LoanResult, *, applications: pl.DataFrame, source: str, files: dict[str, str]
) -> dict[str, Any]:
    """The manifest of a run: resolved scenario, input hash, versions, solver, totals,
    multipliers, objective and the SHA-256 of every file written."""
    return json_safe(
        {
            "kind": MANIFEST_KIND,
            "format_version": FORMAT_VERSION,
            "scenario": loan_scenario_to_dict(result.scenario),
            "applications": {
                "source": source,
                "rows": applications.height,
                "table_sha256": applications_sha256(applications),
            },
            "versions": _versions(),
            "solver": result.solver,
            "totals": result.totals,
            "multipliers": result.multipliers,
            "objective": result.objective,
            "files": files,
        }
    )


def write_loan_run(
    result: LoanResult, out_dir: str | Path, *, applications: pl.DataFrame, source: str
) -> Path:
    """Write ``term_sheet.csv``, ``term_sheet.parquet``, a copy of the applications and
    ``manifest.json`` to ``out_dir`` atomically (a sibling temporary directory renamed into
    place). An existing ``out_dir`` is replaced only if it is empty or an earlier loan run."""
    out = Path(out_dir)
    if out.exists():
        if not out.is_dir():
            raise InputError(f"--out {out} exists and is not a directory.")
        if any(out.iterdir()) and _manifest_kind(out / MANIFEST) != MANIFEST_KIND:
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
    files = {k: hashlib.sha256(v).hexdigest() for k, v in sorted(blobs.items())}
    man = manifest_dict(result, applications=applications, source=source, files=files)
    blobs[MANIFEST] = (json.dumps(man, sort_keys=True, indent=2, allow_nan=False) + "\n").encode()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        for name, data in blobs.items():
            (tmp / name).write_bytes(data)
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


def _parquet_bytes(df: pl.DataFrame) -> bytes:
    buf = io.BytesIO()
    df.write_parquet(buf, statistics=False)
    return buf.getvalue()


def _manifest_kind(path: Path) -> str | None:
    try:
        return json.loads(path.read_text()).get("kind")
    except (OSError, ValueError, AttributeError):
        return None


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
