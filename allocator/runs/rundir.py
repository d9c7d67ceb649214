"""The voucher run directory: what ``allocator allocate`` writes and ``allocator check-budget`` reads.

This module gathers the run directory's public names in one place; each lives in the module of
its concern:

- :mod:`allocator.runs.contract`: the four files, their columns and types, the payouts.csv layout
  and money as ``"1234.56"`` text;
- :mod:`allocator.runs.writer`: :func:`write_run_dir`, the atomic write of a run directory;
- :mod:`allocator.runs.reader`: :func:`read_run_dir`, the verified :func:`load_run` and
  :func:`refuse_output_in_run`;
- :mod:`allocator.runs.manifest`: ``manifest.json`` (versions, canonical text, strict reading);
- :mod:`allocator.runs.store` and :mod:`allocator.runs.hashing`: atomic writes and SHA-256 for
  every programme.
"""

from __future__ import annotations

from allocator.runs.contract import (
    ALLOCATIONS_SCHEMA,
    AMOUNT_CENTS,
    EXCLUDED_KEY_COLUMNS,
    LOWER_CENTS,
    OUTPUT_FILES,
    PAYOUTS_COLUMNS,
    RUN_FILES,
    RUN_FORMAT,
    UPPER_CENTS,
    RunDir,
    canonical_allocations,
    canonical_excluded,
    cents_to_usd_expr,
    usd_text_to_cents_expr,
    usd_to_cents,
    write_payouts_frame,
)
from allocator.runs.manifest import (
    MAX_MANIFEST_DEPTH,
    VERSIONED_PACKAGES,
    dumps_manifest,
    read_manifest,
    versions,
    write_manifest,
)
from allocator.runs.reader import (
    is_run_dir,
    load_run,
    read_parquet_file,
    read_payouts_csv,
    read_run_dir,
    refuse_output_in_run,
    run_dir_holding,
)
from allocator.runs.writer import PayoutsSource, write_run_dir

__all__ = [
    "ALLOCATIONS_SCHEMA",
    "AMOUNT_CENTS",
    "EXCLUDED_KEY_COLUMNS",
    "LOWER_CENTS",
    "MAX_MANIFEST_DEPTH",
    "OUTPUT_FILES",
    "PAYOUTS_COLUMNS",
    "RUN_FILES",
    "RUN_FORMAT",
    "UPPER_CENTS",
    "VERSIONED_PACKAGES",
    "PayoutsSource",
    "RunDir",
    "canonical_allocations",
    "canonical_excluded",
    "cents_to_usd_expr",
    "dumps_manifest",
    "is_run_dir",
    "load_run",
    "read_manifest",
    "read_parquet_file",
    "read_payouts_csv",
    "read_run_dir",
    "refuse_output_in_run",
    "run_dir_holding",
    "usd_text_to_cents_expr",
    "usd_to_cents",
    "versions",
    "write_manifest",
    "write_payouts_frame",
    "write_run_dir",
]
