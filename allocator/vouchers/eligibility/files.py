"""Eligibility from a data directory, and its three output files written atomically."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from allocator import names as N
from allocator.data.inputs import load_inputs
from allocator.errors import InputError
from allocator.settings.models import EligibilityRules
from allocator.vouchers.eligibility.compute import EligibilityResult, compute_eligibility

__all__ = ["RECONCILIATION_FILE", "ROW_GROUP_ROWS", "run_eligibility", "write_eligibility"]

#: Written beside eligible.parquet and excluded.parquet by :func:`write_eligibility`.
RECONCILIATION_FILE = "reconciliation.json"

#: Rows per parquet row group of the outputs (fixed, so that reruns write the same bytes).
ROW_GROUP_ROWS = 256 * 1024


# --------------------------------------------------------------------------- files


def run_eligibility(data_dir: str | Path, rules: EligibilityRules) -> EligibilityResult:
    """Load and validate the data directory, then :func:`compute_eligibility`."""

    inputs = load_inputs(Path(data_dir), validate=True)
    return compute_eligibility(
        inputs.events,
        inputs.prices,
        inputs.snapshot,
        inputs.users,
        rules,
        source={k: str(v) for k, v in inputs.paths.items()},
    )


def write_eligibility(result: EligibilityResult, out_dir: str | Path) -> Path:
    """Write ``eligible.parquet``, ``excluded.parquet`` and ``reconciliation.json`` atomically.

    The three files are written into a temporary directory beside ``out_dir`` first. A new
    ``out_dir`` is then created by one rename; an existing one gets each file by ``os.replace``
    (other files in it are left alone). An error while writing leaves no partial output. The
    bytes depend only on the result, so a rerun on the same inputs writes identical files.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"Output path {out_dir} exists and is not a directory.")
    names = (N.ELIGIBLE_FILE, N.EXCLUDED_FILE, RECONCILIATION_FILE)
    tmp = out_dir.parent / f".{out_dir.name}.{uuid.uuid4().hex}.tmp"
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        # Made by hand rather than with tempfile.mkdtemp, whose 0700 mode the renamed
        # directory would keep.
        tmp.mkdir()
        for name, frame in ((N.ELIGIBLE_FILE, result.eligible), (N.EXCLUDED_FILE, result.excluded)):
            frame.rechunk().write_parquet(tmp / name, row_group_size=ROW_GROUP_ROWS)
        text = json.dumps(
            {"reconciliation": result.reconciliation.to_dict(), "rules": _rules_dict(result.rules)},
            indent=2,
            allow_nan=False,
        )
        (tmp / RECONCILIATION_FILE).write_text(text + "\n", encoding="utf-8")
        for name in names:
            with open(tmp / name, "rb") as fh:
                os.fsync(fh.fileno())
        if not out_dir.exists():
            os.rename(tmp, out_dir)
        else:
            for name in names:
                os.replace(tmp / name, out_dir / name)
            tmp.rmdir()
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise InputError(f"Cannot write the eligibility outputs to {out_dir}: {exc}.") from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
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
