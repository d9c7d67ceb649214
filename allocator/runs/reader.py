"""Reading a voucher run directory back, plain or verified, and keeping other outputs out of it.

Reading
-------
:func:`load_run` is the one door of the commands that read a run (``audit``, ``explain``,
``report``, ``sensitivity``). It refuses, with an :class:`~allocator.errors.InputError` (exit 2)
naming the file and what is wrong, a run directory that is damaged or changed:

- ``manifest.json`` that is not UTF-8, not strict JSON (``NaN``, ``Infinity``), nested deeper
  than :data:`~allocator.runs.manifest.MAX_MANIFEST_DEPTH`, not in format :data:`RUN_FORMAT`, or without a ``scenario``
  object, an ``outputs`` hash per data file or, for a reader of the inputs, an ``inputs`` entry
  (path and sha256) per input table;
- a data file that is missing or whose SHA-256 is not the manifest's ``outputs`` entry (hashing
  the three files costs about 10 ms at the 200,000-user default size, the inputs about 35 ms);
- a data file without the contract's columns and types, with a null key or amount, a negative
  ``voucher_cents``, or a user id twice or out of order;
- with ``inputs=True`` (``explain``, ``report`` and ``sensitivity``, which read the input data
  again): an input file that is gone or whose SHA-256 differs from the manifest's.

A run directory that passes may still fail a finance check (a hand-edited manifest, a bug):
``check-budget`` runs all of them, and the messages above point to it.

:func:`refuse_output_in_run` keeps every other output (``report --out``,
``sensitivity --users-out``, ``eligibility --out``) out of run directories: a path in or under a
directory whose ``manifest.json`` is in format :data:`RUN_FORMAT` is refused.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import polars as pl

from allocator import names as N
from allocator.errors import InputError
from allocator.runs.contract import (
    ALLOCATIONS_ROUND,
    ALLOCATIONS_SCHEMA,
    APPEALS_SCHEMA,
    EXCLUDED_KEY_COLUMNS,
    LOWER_CENTS,
    OUTPUT_FILES,
    PAYOUTS_COLUMNS,
    RUN_FILES,
    RUN_FORMAT,
    UPPER_CENTS,
    VOUCHERS_SCHEMA,
    RunDir,
    output_files,
    round_number,
    usd_to_cents,
)
from allocator.runs.hashing import sha256_file
from allocator.runs.manifest import read_manifest
from allocator.settings.scenarios import parse_scenario

# --------------------------------------------------------------------------------------------
# plain reading
# --------------------------------------------------------------------------------------------


def own_file(file: Path) -> None:
    """Refuse a file of a run directory that is a link: the run must hold its own bytes (a link
    could point the checker at another run's file, or change after the check)."""
    if file.is_symlink():
        raise InputError(
            f"{file}: a symbolic link, not a file; a run directory holds its own files."
        )


def read_parquet_file(file: Path) -> pl.DataFrame:
    """Read a parquet file of a run directory; InputError naming it when missing or unreadable."""
    own_file(file)
    if not file.is_file():
        raise InputError(f"{file}: file not found; a run directory must hold {file.name}.")
    try:
        return pl.read_parquet(file)
    except Exception as exc:  # polars raises several error types for a damaged file
        raise InputError(
            f"{file}: not a readable parquet file ({type(exc).__name__}: {exc})."
        ) from None


def read_payouts_csv(file: str | Path) -> pl.DataFrame:
    """Read payouts.csv exactly: ``amount`` stays text and ``amount_cents`` is parsed from it.

    Returns a frame with ``user_id`` Int64, ``amount`` String, ``batch`` (Int64 when every value
    is a whole number, else String), ``idempotency_key`` String and ``amount_cents`` Int64.
    """
    file = Path(file)
    own_file(file)
    if not file.is_file():
        raise InputError(f"{file}: file not found; a run directory must hold {file.name}.")
    try:
        raw = pl.read_csv(file, infer_schema=False)
    except Exception as exc:
        raise InputError(
            f"{file}: not a readable CSV file ({type(exc).__name__}: {exc})."
        ) from None
    missing = [c for c in PAYOUTS_COLUMNS if c not in raw.columns]
    if missing:
        raise InputError(
            f"{file}: missing column(s) {', '.join(missing)}; expected {', '.join(PAYOUTS_COLUMNS)}, "
            f"found {', '.join(raw.columns) or 'none'}."
        )
    extra = [c for c in raw.columns if c not in PAYOUTS_COLUMNS]
    if extra:
        raise InputError(
            f"{file}: unexpected column(s) {', '.join(extra)}; the file holds exactly "
            f"{', '.join(PAYOUTS_COLUMNS)}."
        )
    user_id = raw[N.USER_ID].cast(pl.Int64, strict=False)
    # one spelling per id: '010000582' or '+10000582' would pay the same user under another key
    bad = raw.filter(user_id.is_null() | (user_id.cast(pl.String) != raw[N.USER_ID]))
    if bad.height:
        raise InputError(
            f"{file}: column {N.USER_ID} must be a whole number written plainly (e.g. 10000582, "
            f"no sign, leading zero or space); {bad.height} row(s) are not, "
            f"e.g. {bad.row(0, named=True)}."
        )
    cents = usd_to_cents(raw[N.AMOUNT])
    bad = raw.filter(cents.is_null())
    if bad.height:
        raise InputError(
            f"{file}: column {N.AMOUNT} must be USD with exactly two decimals (e.g. 4.00); "
            f"{bad.height} row(s) are not, e.g. {bad.row(0, named=True)}."
        )
    batch = raw[N.BATCH].cast(pl.Int64, strict=False)
    if batch.null_count() != raw[N.BATCH].null_count():
        batch = raw[N.BATCH]
    return raw.select(PAYOUTS_COLUMNS).with_columns(
        user_id.alias(N.USER_ID), batch.alias(N.BATCH), cents
    )


def read_run_dir(path: str | Path) -> RunDir:
    """Read a run directory; raises InputError naming the first file missing or unreadable."""
    path = Path(path)
    if not path.is_dir():
        raise InputError(f"{path}: run directory not found (or not a directory).")
    manifest = read_manifest(path)
    return RunDir(
        path=path,
        allocations=read_parquet_file(path / N.ALLOCATIONS_FILE),
        excluded=read_parquet_file(path / N.EXCLUDED_FILE),
        payouts=read_payouts_csv(path / N.PAYOUTS_FILE),
        manifest=manifest,
    )


# --------------------------------------------------------------------------------------------
# verified reading (audit, explain, report, sensitivity)
# --------------------------------------------------------------------------------------------


def _damaged(path: Path, what: str) -> InputError:
    """The error of a damaged or changed run directory: what is wrong, and where to see it all."""
    return InputError(
        f"{what}. The run directory {path} is damaged or was changed after allocator allocate "
        f"wrote it, so it is not read.",
        hint=f"`allocator check-budget {path}` lists every check; re-run the scenario to rebuild it.",
    )


def _example(frame: pl.DataFrame, mask: pl.Series) -> str:
    bad = frame.filter(mask)
    row = bad.row(0, named=True) if bad.height else {}
    return f"{bad.height:,} row(s), e.g. {row}"


def _table_problem(
    frame: pl.DataFrame,
    schema: Mapping[str, pl.DataType],
    required: tuple[str, ...],
    non_negative: tuple[str, ...] = (),
    one_row_per_user: bool = True,
) -> str | None:
    """The first way ``frame`` breaks the contract's columns, types, nulls, signs and order
    (user ids ascending, and unique unless ``one_row_per_user`` is false: the vouchers ledger
    holds a row per user and round)."""
    for col, dtype in schema.items():
        if col not in frame.columns:
            return f"column {col} is missing (found {', '.join(frame.columns) or 'none'})"
        if frame.schema[col] != dtype:
            return f"column {col} is {frame.schema[col]}, the contract says {dtype}"
    for col in required:
        nulls = frame[col].is_null()
        if nulls.any():
            return f"column {col} is empty in {_example(frame, nulls)}"
        if frame.schema[col] == pl.Float64:
            nan = frame[col].is_nan()
            if nan.any():
                return f"column {col} is NaN in {_example(frame, nan)}"
    for col in non_negative:
        negative = frame[col] < 0
        if negative.any():
            return f"column {col} is negative in {_example(frame, negative)}"
    ids = frame[N.USER_ID]
    if ids.len() > 1:
        after = ids.slice(1)
        before = ids.slice(0, ids.len() - 1)  # no subtraction: no overflow
        ascending = after > before if one_row_per_user else after >= before
        if not bool(ascending.all()):
            first = int((~ascending).arg_true()[0]) + 1
            uid = ids[first]
            kind = "twice" if (ids == uid).sum() > 1 else "out of order"
            return (
                f"user {uid} appears {kind} (row {first + 1}); user ids must be unique and "
                f"sorted ascending"
            )
    return None


def _check_hash(path: Path, name: str, recorded: Any, run_path: Path) -> None:
    file = path / name
    if not file.is_file():
        raise _damaged(run_path, f"{file}: file not found; a run directory must hold {name}")
    actual = sha256_file(file)
    if actual != recorded:
        raise _damaged(
            run_path,
            f"{file}: its sha256 is {actual[:12]}..., the manifest recorded "
            f"{str(recorded)[:12]}...: the file was replaced or edited",
        )


def _verified_inputs(manifest: Mapping[str, Any], man_file: Path, run_path: Path) -> Path:
    """Check every input table the manifest names against its sha256; return their directory."""
    inputs = manifest.get("inputs")
    if not isinstance(inputs, Mapping):
        raise _damaged(run_path, f"{man_file}: no 'inputs' object naming the run's data files")
    dirs = set()
    for stem in N.INPUT_TABLES:
        meta = inputs.get(stem)
        if not (
            isinstance(meta, Mapping)
            and isinstance(meta.get("path"), str)
            and isinstance(meta.get("sha256"), str)
        ):
            raise _damaged(
                run_path, f"{man_file}: inputs.{stem} lacks the path and sha256 of the {stem} file"
            )
        file = Path(meta["path"])
        if not file.is_file():
            raise InputError(
                f"{man_file}: the run's {stem} file {file} no longer exists; this command reads "
                f"the run's input data again, so it needs the files the run used.",
                hint="restore the data directory, or re-run the scenario on the current data.",
            )
        if sha256_file(file) != meta["sha256"]:
            raise InputError(
                f"{man_file}: the run's {stem} file {file} changed since the run (its sha256 is "
                f"not the one the manifest recorded): the data was edited or regenerated, and "
                f"results computed from it now would not be this run's.",
                hint=(
                    f"restore the data the run used, or re-run the scenario on the current data; "
                    f"`allocator check-budget {run_path}` lists every check."
                ),
            )
        dirs.add(file.parent)
    if len(dirs) != 1:
        raise _damaged(
            run_path,
            f"{man_file}: the input files are not in one data directory ({sorted(map(str, dirs))})",
        )
    return dirs.pop()


def load_run(path: str | Path, *, inputs: bool = False) -> RunDir:
    """Read a run directory for a command, refusing it when it is damaged or changed.

    The checks, in order (see "Reading" in the module docstring): the manifest (UTF-8, strict
    JSON, format, ``scenario`` and ``outputs``), each data file's sha256 against ``outputs``,
    each table's columns, types, nulls, signs and user-id order, the scenario (parsed and
    validated), and with ``inputs`` every input file's sha256 against ``inputs``.

    Parameters
    ----------
    path
        A run directory written by ``allocator allocate``.
    inputs
        The caller reads the run's input data again (explain, report, sensitivity): verify the
        input files too, and fill :attr:`RunDir.data_dir`.

    Returns
    -------
    RunDir
        With ``scenario`` (a :class:`allocator.settings.models.Scenario`) and, with ``inputs``,
        ``data_dir``.

    Raises
    ------
    InputError
        The directory is missing, damaged or changed since the run (or its inputs are, with
        ``inputs``); the message names the file and what is wrong and points to
        ``allocator check-budget``.
    ScenarioError
        The manifest's scenario is not a valid scenario.
    """
    path = Path(path)
    if not path.is_dir():
        what = "is not a directory" if os.path.lexists(path) else "does not exist"
        raise InputError(
            f"{path}: {what}; expected a run directory written by allocator allocate "
            f"({', '.join(RUN_FILES)})."
        )
    man_file = path / N.MANIFEST_FILE
    try:
        manifest = read_manifest(man_file, strict=True)
    except InputError as exc:
        raise _damaged(path, exc.message.rstrip(".")) from None
    if manifest.get("kind") == "loan_fund_run":
        # a loan run handed to a voucher command is a mix-up, not damage
        raise InputError(
            f"{path} is a loan-fund run (written by allocator loans allocate), not a voucher "
            "run; audit, explain, report and sensitivity read runs of allocator allocate.",
            hint=f"check it with: allocator loans check {path}",
        )
    if manifest.get("format") != RUN_FORMAT:
        raise _damaged(
            path, f"{man_file}: format is {manifest.get('format')!r}, expected {RUN_FORMAT!r}"
        )
    if not isinstance(manifest.get("scenario"), Mapping):
        raise _damaged(path, f"{man_file}: no 'scenario' object")
    try:
        files = output_files(manifest)
    except ValueError as exc:
        raise _damaged(path, f"{man_file}: {exc}") from None
    outputs = manifest.get("outputs")
    if not isinstance(outputs, Mapping) or not all(
        isinstance(outputs.get(name), str) for name in files
    ):
        raise _damaged(
            path, f"{man_file}: 'outputs' does not record the sha256 of {', '.join(files)}"
        )
    for name in files:
        _check_hash(path, name, outputs[name], path)

    def table(name: str, frame: pl.DataFrame, *args: Any) -> pl.DataFrame:
        problem = _table_problem(frame, *args)
        if problem:
            raise _damaged(path, f"{path / name}: {problem}")
        return frame

    later_round = round_number(manifest) > 1
    required = tuple(c for c in ALLOCATIONS_SCHEMA if c != N.SEGMENT)
    schema = {**ALLOCATIONS_SCHEMA, **(ALLOCATIONS_ROUND if later_round else {})}
    allocations = table(
        N.ALLOCATIONS_FILE,
        read_parquet_file(path / N.ALLOCATIONS_FILE),
        schema,
        required + (tuple(ALLOCATIONS_ROUND) if later_round else ()),
        (N.VOUCHER_CENTS, LOWER_CENTS, UPPER_CENTS)
        + ((N.PAID_BEFORE_CENTS, N.DELTA_CENTS) if later_round else ()),
    )
    vouchers = appeals = None
    if later_round:
        vouchers = table(
            N.VOUCHERS_FILE,
            read_parquet_file(path / N.VOUCHERS_FILE),
            VOUCHERS_SCHEMA,
            (N.USER_ID, N.ROUND, N.IDEMPOTENCY_KEY, N.CENTS, N.STATUS),
            (N.CENTS,),
            False,
        )
        appeals = table(
            N.APPEALS_FILE,
            read_parquet_file(path / N.APPEALS_FILE),
            APPEALS_SCHEMA,
            (N.USER_ID, N.ROUND, N.DECISION, N.OUTCOME),
        )
    excluded = table(
        N.EXCLUDED_FILE,
        read_parquet_file(path / N.EXCLUDED_FILE),
        EXCLUDED_KEY_COLUMNS,
        (N.USER_ID, N.REASON),
    )
    try:
        payouts = read_payouts_csv(path / N.PAYOUTS_FILE)
    except InputError as exc:
        raise _damaged(path, exc.message.rstrip(".")) from None
    scenario = parse_scenario(manifest["scenario"], file=f"{man_file} (scenario)")
    data_dir = _verified_inputs(manifest, man_file, path) if inputs else None
    return RunDir(
        path=path,
        allocations=allocations,
        excluded=excluded,
        payouts=payouts,
        manifest=manifest,
        scenario=scenario,
        data_dir=data_dir,
        vouchers=vouchers,
        appeals=appeals,
    )


# --------------------------------------------------------------------------------------------
# outputs of other commands stay out of run directories
# --------------------------------------------------------------------------------------------


def is_run_dir(path: str | Path) -> bool:
    """Whether ``path`` is a directory whose ``manifest.json`` is in format :data:`RUN_FORMAT`.

    A ``manifest.json`` that cannot be read counts as a run's when the directory also holds one
    of the run's data files: a damaged run is still a run, not a place to write.
    """
    path = Path(path)
    file = path / N.MANIFEST_FILE
    try:
        if not file.is_file():
            return False
        return read_manifest(file).get("format") == RUN_FORMAT
    except InputError:
        return any((path / name).exists() for name in OUTPUT_FILES)
    except OSError:
        return False


def run_dir_holding(path: str | Path) -> Path | None:
    """The run directory that ``path`` is, or lies in (at any depth), or ``None``."""
    given = Path(os.path.abspath(path))
    candidates = [given, *given.parents]
    try:
        real = given.resolve()
    except (OSError, RuntimeError):
        real = given
    if real != given:
        candidates += [real, *real.parents]
    seen: set[Path] = set()
    for directory in candidates:
        if directory in seen:
            continue
        seen.add(directory)
        if is_run_dir(directory):
            return directory
    return None


def refuse_output_in_run(path: str | Path, option: str) -> None:
    """Refuse an output path that is, or is inside, a run directory (exit 2, nothing written).

    Parameters
    ----------
    path
        Where a command is about to write a file or a directory.
    option
        The option that named it, for the message (e.g. ``"--out"``).

    Raises
    ------
    InputError
        ``path`` is empty, or is or lies inside a directory written by ``allocator allocate``.
    """
    if str(path).strip() == "":
        raise InputError(f"{option} is empty; give the path of the file or directory to write.")
    run = run_dir_holding(path)
    if run is not None:
        inside = Path(os.path.abspath(path)) != run
        where = "is inside the run directory" if inside else "is the run directory"
        raise InputError(
            f"{option} {path} {where} {run} (written by allocator allocate); writing there "
            f"would replace or add to the run's own files, and a changed run directory is "
            f"refused by every command that reads it. Nothing was written.",
            hint=f"choose a path outside {run}.",
        )
