r"""The file contract: the manifest's sections, each file's columns and types, who is in which
file, the counts, and the input and output hashes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl

from allocator import names as N
from allocator.analysis.checks.runfiles import Result, RunFiles, duplicates, examples
from allocator.runs.contract import (
    ALLOCATIONS_OPTIONAL,
    ALLOCATIONS_ROUND,
    ALLOCATIONS_SCHEMA,
    EXCLUDED_COLUMNS,
    EXCLUDED_KEY_COLUMNS,
    OUTPUT_FILES,
    ROUND_FILES,
    RUN_FORMAT,
)
from allocator.runs.hashing import sha256_file

#: Sections every manifest must have for the checks to run.
MANIFEST_SECTIONS = (
    "format",
    "programme",
    "scenario",
    "inputs",
    "money",
    "counts",
    "outputs",
    "shadow_price",
    "segment_prices",
    "objective_rounded",
    "payout_batches",
)


MONEY_KEYS = ("budget_cents", "paid_cents", "unspent_cents", "exhaust")


COUNT_KEYS = (
    "liquidated",
    "eligible",
    "excluded",
    "floor",
    "interior",
    "cap",
    "excluded_by_reason",
)


def check_manifest(r: RunFiles) -> Result:
    m = r.manifest
    problems = [f"no {k}" for k in MANIFEST_SECTIONS if k not in m]
    if m.get("format") not in (None, RUN_FORMAT):
        problems.append(f"format {m.get('format')!r}, expected {RUN_FORMAT!r}")
    money, counts = m.get("money"), m.get("counts")
    money = money if isinstance(money, dict) else {}
    counts = counts if isinstance(counts, dict) else {}
    problems += [f"no money.{k}" for k in MONEY_KEYS if "money" in m and k not in money]
    problems += [f"no counts.{k}" for k in COUNT_KEYS if "counts" in m and k not in counts]
    if problems:
        return False, f"{N.MANIFEST_FILE}: " + "; ".join(problems)
    return True, f"{N.MANIFEST_FILE} in format {RUN_FORMAT} with every section"


def _schema_problems(
    frame: pl.DataFrame, schema: dict[str, pl.DataType], required: tuple[str, ...]
) -> list[str]:
    problems = []
    for col, dtype in schema.items():
        if col not in frame.columns:
            problems.append(f"missing column {col}")
        elif frame.schema[col] != dtype:
            problems.append(f"column {col} is {frame.schema[col]}, expected {dtype}")
    for col in required:
        if col in frame.columns and frame[col].null_count():
            problems.append(f"column {col} has {frame[col].null_count()} null(s)")
    if N.USER_ID in frame.columns and not frame[N.USER_ID].is_sorted():
        problems.append(f"rows not sorted by {N.USER_ID}")
    return problems


def _extra_columns(frame: pl.DataFrame, allowed: tuple[str, ...]) -> list[str]:
    extra = [c for c in frame.columns if c not in allowed]
    return [f"unexpected column(s) {', '.join(extra)}"] if extra else []


def check_allocations_file(r: RunFiles) -> Result:
    a = r.allocations
    required = tuple(c for c in ALLOCATIONS_SCHEMA if c != N.SEGMENT)
    schema = dict(ALLOCATIONS_SCHEMA)
    if r.later_round:  # what users held before the round, and what it pays them
        schema.update(ALLOCATIONS_ROUND)
        required += tuple(ALLOCATIONS_ROUND)
    problems = _schema_problems(a, schema, required)
    problems += _extra_columns(a, (*schema, *ALLOCATIONS_OPTIONAL))
    if N.BOUND in a.columns and a.schema[N.BOUND] == pl.String:
        states = N.ROUND_BOUND_STATES if r.later_round else N.BOUND_STATES
        bad = a.filter(~pl.col(N.BOUND).is_in(list(states)))
        if bad.height:
            problems.append(f"{bad.height} bound label(s) not in {states}")
    if problems:
        return False, f"{N.ALLOCATIONS_FILE}: " + "; ".join(problems)
    return True, f"{N.ALLOCATIONS_FILE}: {a.height:,} rows, contract columns and types, sorted"


def check_excluded_file(r: RunFiles) -> Result:
    e = r.excluded
    problems = _schema_problems(e, EXCLUDED_KEY_COLUMNS, (N.USER_ID, N.REASON))
    problems += _extra_columns(e, EXCLUDED_COLUMNS)
    if problems:
        return False, f"{N.EXCLUDED_FILE}: " + "; ".join(problems)
    return True, f"{N.EXCLUDED_FILE}: {e.height:,} rows, contract columns and types, sorted"


def check_payouts_file(r: RunFiles) -> Result:
    p = r.payouts
    return True, f"{N.PAYOUTS_FILE}: {p.height:,} rows, every amount in exact cents"


def check_unique_allocations(r: RunFiles) -> Result:
    dup = duplicates(r.allocations)
    if dup.height:
        return (
            False,
            f"{dup.height:,} user(s) allocated more than once in {N.ALLOCATIONS_FILE}, "
            + examples(dup),
        )
    return True, "no user allocated twice"


def check_unique_exclusions(r: RunFiles) -> Result:
    dup = duplicates(r.excluded)
    if dup.height:
        return (
            False,
            f"{dup.height:,} user(s) excluded more than once in {N.EXCLUDED_FILE}, "
            + examples(dup),
        )
    return True, "no user excluded twice"


def check_disjoint(r: RunFiles) -> Result:
    both = (
        r.allocations.select(N.USER_ID)
        .unique()
        .join(r.excluded.select(N.USER_ID).unique(), on=N.USER_ID)
    )
    if both.height:
        return False, f"{both.height:,} user(s) both allocated and excluded, " + examples(
            both.sort(N.USER_ID)
        )
    return True, "no user both allocated and excluded"


def check_reasons(r: RunFiles) -> Result:
    e = r.excluded
    # from round 2 on a user may also be out for a forfeited voucher
    known = [*N.REASONS, *(N.ROUND_REASONS if r.later_round else ())]
    bad = e.filter(~pl.col(N.REASON).is_in(known) | pl.col(N.REASON).is_null())
    if bad.height:
        return False, f"{bad.height:,} exclusion(s) with an unknown reason, " + examples(
            bad.select(N.USER_ID, N.REASON)
        )
    return True, "every exclusion has a known reason"


def check_liquidated(r: RunFiles) -> Result:
    liq = r.liquidated.to_frame()
    accounted = pl.concat([r.allocations.select(N.USER_ID), r.excluded.select(N.USER_ID)]).unique()
    missing = liq.join(accounted, on=N.USER_ID, how="anti").sort(N.USER_ID)
    extra = accounted.join(liq, on=N.USER_ID, how="anti").sort(N.USER_ID)
    problems = []
    if missing.height:
        problems.append(
            f"{missing.height:,} liquidated user(s) neither allocated nor excluded, "
            + examples(missing)
        )
    if extra.height:
        problems.append(
            f"{extra.height:,} user(s) in the run who were not liquidated, " + examples(extra)
        )
    if problems:
        return False, "; ".join(problems)
    return True, f"all {liq.height:,} liquidated users allocated or excluded, nobody else"


def check_input_hashes(r: RunFiles) -> Result:
    inputs = r.section("inputs")
    if not isinstance(inputs, dict) or N.EVENTS_FILE not in inputs:
        return False, f"{N.MANIFEST_FILE} inputs does not list the {N.EVENTS_FILE} file"
    problems, checked = [], 0
    for stem, meta in sorted(inputs.items()):
        if not isinstance(meta, dict) or "path" not in meta or "sha256" not in meta:
            problems.append(f"{stem}: no path/sha256 in the manifest")
            continue
        path = Path(meta["path"])
        if not path.is_file():
            problems.append(f"{stem}: {path} not found")
            continue
        actual = sha256_file(path)
        if actual != meta["sha256"]:
            problems.append(
                f"{stem}: {path} has sha256 {actual[:12]}..., "
                f"manifest says {str(meta['sha256'])[:12]}..."
            )
        checked += 1
    if problems:
        return False, "input files differ from the manifest: " + "; ".join(problems)
    return True, f"all {checked} input files have the manifest's sha256"


def check_output_hashes(r: RunFiles) -> Result:
    outputs = r.section("outputs")
    if not isinstance(outputs, dict):
        return False, f"{N.MANIFEST_FILE} outputs is not an object"
    problems = []
    files = OUTPUT_FILES + (ROUND_FILES if r.later_round else ())
    for name in sorted(set(outputs) - set(files)):
        problems.append(f"unexpected output {name!r} in the manifest")
    for name in files:
        path = r.path / name
        if name not in outputs:
            problems.append(f"{name}: no hash in the manifest")
        elif not path.is_file():
            problems.append(f"{name}: file not found")
        elif sha256_file(path) != outputs[name]:
            problems.append(
                f"{name}: sha256 differs from the manifest (file changed after the run)"
            )
    if problems:
        return False, "; ".join(problems)
    if r.later_round:
        return (
            True,
            "allocations, excluded, payouts, vouchers and appeals files have the manifest's sha256",
        )
    return True, "allocations, excluded and payouts files have the manifest's sha256"


def check_counts(r: RunFiles) -> Result:
    counts = r.section("counts")
    a, e = r.allocations, r.excluded
    labels = a[N.BOUND].value_counts()
    by_label = dict(zip(labels[N.BOUND].to_list(), labels["count"].to_list()))
    reasons = e[N.REASON].value_counts()
    by_reason = dict(zip(reasons[N.REASON].to_list(), reasons["count"].to_list()))
    actual: dict[str, Any] = {
        "liquidated": pl.concat([a.select(N.USER_ID), e.select(N.USER_ID)]).n_unique(),
        "eligible": a.height,
        "excluded": e.height,
        N.BOUND_FLOOR: by_label.get(N.BOUND_FLOOR, 0),
        N.BOUND_INTERIOR: by_label.get(N.BOUND_INTERIOR, 0),
        N.BOUND_CAP: by_label.get(N.BOUND_CAP, 0),
    }
    if r.later_round:
        actual[N.BOUND_HELD] = by_label.get(N.BOUND_HELD, 0)
    problems = []
    for key, value in actual.items():
        if counts.get(key) != value:
            problems.append(f"{key}: manifest {counts.get(key)!r}, files {value:,}")
    stated = counts.get("excluded_by_reason")
    stated = {k: v for k, v in stated.items() if v} if isinstance(stated, dict) else stated
    if stated != by_reason:
        problems.append(
            f"excluded_by_reason: manifest {json.dumps(stated, sort_keys=True)}, "
            f"files {json.dumps(by_reason, sort_keys=True)}"
        )
    if problems:
        return False, "manifest counts differ from the files: " + "; ".join(problems)
    return True, f"manifest counts match the files ({a.height:,} eligible, {e.height:,} excluded)"
