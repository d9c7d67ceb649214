"""Eligibility from a data directory, and its three output files written atomically."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any

import polars as pl

from allocator import names as N
from allocator.data.inputs import load_inputs
from allocator.errors import InputError
from allocator.runs.store import atomic_write_all
from allocator.settings.models import EligibilityRules
from allocator.vouchers.eligibility.compute import EligibilityResult, compute_eligibility

__all__ = ["RECONCILIATION_FILE", "ROW_GROUP_ROWS", "run_eligibility", "write_eligibility"]

#: Written beside eligible.parquet and excluded.parquet by :func:`write_eligibility`.
RECONCILIATION_FILE = "reconciliation.json"

#: Rows per parquet row group of the outputs (fixed, so that reruns write the same bytes).
ROW_GROUP_ROWS = 256 * 1024


# --------------------------------------------------------------------------- files


def run_eligibility(data_dir: str | Path, rules: EligibilityRules) -> EligibilityResult:
    """Load the data directory and :func:`compute_eligibility`, validating the rows as they are
    read (``load_inputs(..., validate="folded")``)."""

    inputs = load_inputs(Path(data_dir), validate="folded")
    return compute_eligibility(
        inputs.events,
        inputs.prices,
        inputs.snapshot,
        inputs.users,
        rules,
        source={k: str(v) for k, v in inputs.paths.items()},
        checks=inputs.checks,
    )


def _parquet_writer(frame: pl.DataFrame) -> Callable[[IO[bytes]], None]:
    def write(fh: IO[bytes]) -> None:
        frame.rechunk().write_parquet(fh, row_group_size=ROW_GROUP_ROWS)

    return write


def write_eligibility(result: EligibilityResult, out_dir: str | Path) -> Path:
    """Write ``eligible.parquet``, ``excluded.parquet`` and ``reconciliation.json`` atomically.

    The three files are written together or not at all
    (:func:`allocator.runs.store.atomic_write_all`); other files in ``out_dir`` are left alone.
    The bytes depend only on the result, so a rerun on the same inputs writes identical files.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"Output path {out_dir} exists and is not a directory.")
    text = json.dumps(
        {"reconciliation": result.reconciliation.to_dict(), "rules": _rules_dict(result.rules)},
        indent=2,
        allow_nan=False,
    )
    try:
        atomic_write_all(
            [
                (out_dir / N.ELIGIBLE_FILE, _parquet_writer(result.eligible)),
                (out_dir / N.EXCLUDED_FILE, _parquet_writer(result.excluded)),
                (out_dir / RECONCILIATION_FILE, lambda fh: fh.write((text + "\n").encode())),
            ]
        )
    except OSError as exc:
        raise InputError(f"Cannot write the eligibility outputs to {out_dir}: {exc}.") from exc
    return out_dir


def _rules_dict(rules: EligibilityRules) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in rules.__dataclass_fields__:
        value = getattr(rules, name)
        if isinstance(value, datetime):
            value = value.isoformat()
        elif isinstance(value, timedelta):
            value = value.total_seconds()
        elif isinstance(value, tuple):
            value = list(value)
        out[name] = value
    return out
