"""Input tables located and opened: one file per table, typed as the schemas say.

Each table's columns are typed as :data:`~allocator.data.schemas.SCHEMAS` says. A table is
opened from its file's metadata (parquet) or header (CSV) only; the rows are read
when a consumer collects, or when :mod:`allocator.data.validation` checks them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import polars as pl

from allocator import names as N
from allocator.data.csvtext import READ_ERRORS, csv_header, csv_parse, csv_read_error, reader_reason
from allocator.data.schemas import FORMATS, SCHEMAS, UTC_US
from allocator.errors import InputError

if TYPE_CHECKING:
    from allocator.data.validation import FoldedChecks


@dataclass(frozen=True)
class Inputs:
    """The four input tables as LazyFrames with the columns and types of :data:`SCHEMAS`.

    ``paths`` maps each table stem to the file it was read from (empty for in-memory tables).
    ``checks``: the row checks still to be made, folded into the eligibility scan (loaded with
    ``validate="folded"``); None when the tables were validated, or are not to be.
    """

    events: pl.LazyFrame
    prices: pl.LazyFrame
    snapshot: pl.LazyFrame
    users: pl.LazyFrame
    paths: dict[str, Path]
    checks: FoldedChecks | None = None

    def table(self, stem: str) -> pl.LazyFrame:
        """The LazyFrame of one table by its file stem."""
        return {
            N.EVENTS_FILE: self.events,
            N.PRICES_FILE: self.prices,
            N.SNAPSHOT_FILE: self.snapshot,
            N.USERS_FILE: self.users,
        }[stem]


@dataclass(frozen=True)
class Table:
    """One opened table: its raw scan and, per schema column, the expression typing it."""

    stem: str
    source: str  # file path, or a description for an in-memory table
    raw: pl.LazyFrame  # schema columns only, as stored
    typed: dict[str, pl.Expr]  # schema column -> typed expression over ``raw``
    parsed: frozenset[str]  # columns parsed from text or cast lossily: check for failures
    text_ts: frozenset[str]  # timestamp columns given as text: report naive ones as such
    # For a CSV file: its path, its header and the scan of every column in the file. Polars
    # reports a line with too many fields only when every column is read, so the validation
    # pass reads ``scan``, not ``raw``.
    csv_path: Path | None = None
    header: tuple[str, ...] = ()
    scan: pl.LazyFrame | None = None

    def frame(self) -> pl.LazyFrame:
        return self.raw.select([self.typed[c].alias(c) for c in SCHEMAS[self.stem]])


def table_path(data_dir: str | Path, stem: str) -> Path:
    """The file holding table ``stem`` in ``data_dir``: ``<stem>.parquet`` or ``<stem>.csv``.

    Raises
    ------
    InputError
        If neither or both files exist.
    """
    data_dir = Path(data_dir)
    found = [
        data_dir / f"{stem}.{fmt}" for fmt in FORMATS if (data_dir / f"{stem}.{fmt}").is_file()
    ]
    if not found:
        raise InputError(
            f"Data directory {data_dir} has no '{stem}' table: looked for {stem}.parquet and "
            f"{stem}.csv."
        )
    if len(found) > 1:
        raise InputError(
            f"Data directory {data_dir} holds both {found[0].name} and {found[1].name}; which one is "
            f"the '{stem}' table is ambiguous. Remove or rename one of them."
        )
    return found[0]


def find_tables(data_dir: Path) -> dict[str, Path]:
    if not data_dir.is_dir():
        what = "is not a directory" if data_dir.exists() else "does not exist"
        raise InputError(
            f"Data directory {data_dir} {what}; it must hold the tables "
            f"{', '.join(N.INPUT_TABLES)}, each as <name>.parquet or <name>.csv."
        )
    missing = [
        stem
        for stem in N.INPUT_TABLES
        if not any((data_dir / f"{stem}.{fmt}").is_file() for fmt in FORMATS)
    ]
    if missing:
        looked = ", ".join(f"{s}.parquet or {s}.csv" for s in missing)
        raise InputError(
            f"Data directory {data_dir} is missing {len(missing)} of the "
            f"{len(N.INPUT_TABLES)} input tables: looked for {looked}."
        )
    return {stem: table_path(data_dir, stem) for stem in N.INPUT_TABLES}


def _fmt_value(v: object) -> str:
    if isinstance(v, str):
        return repr(v)
    return "null" if v is None else str(v)


def fmt_row(row: Mapping[str, object], columns: list[str]) -> str:
    return ", ".join(f"{c}={_fmt_value(row.get(c))}" for c in columns if c in row)


def _open_parquet(stem: str, path: Path) -> Table:
    if path.stat().st_size == 0:
        raise InputError(f"Input file {path} is empty (0 bytes); expected a parquet file.")
    try:
        raw = pl.scan_parquet(path)
        schema = raw.collect_schema()
    except READ_ERRORS as exc:
        raise InputError(
            f"Input file {path} cannot be read as parquet: {reader_reason(exc)}"
        ) from None
    _check_columns(stem, str(path), list(schema.names()))
    want = SCHEMAS[stem]
    raw = raw.select(list(want))
    typed: dict[str, pl.Expr] = {}
    parsed: set[str] = set()
    for col, target in want.items():
        have = schema[col]
        expr = _parquet_cast(col, have, target)
        if expr is None:
            _raise_wrong_parquet_type(path, raw, col, have, target)
        typed[col] = expr
        if have == pl.UInt64:
            parsed.add(col)  # values above 2**63 - 1 do not fit Int64
    return Table(stem, str(path), raw, typed, frozenset(parsed), frozenset())


def _parquet_cast(col: str, have: pl.DataType, target: pl.DataType) -> pl.Expr | None:
    """The expression casting a stored column to its schema type, or None if the kind differs."""
    c = pl.col(col)
    if have == target:
        return c
    if have == pl.Null:
        return c.cast(target)  # all null: the null check reports it
    if target == pl.Int64 and have.is_integer():
        return c.cast(pl.Int64, strict=False)
    if target == pl.Float64 and (have.is_float() or have.is_integer() or have.is_decimal()):
        return c.cast(pl.Float64)
    if target == pl.String and isinstance(have, (pl.Categorical, pl.Enum)):
        return c.cast(pl.String)
    if target == UTC_US and isinstance(have, pl.Datetime) and have.time_zone is not None:
        return c.dt.convert_time_zone("UTC").dt.cast_time_unit("us")
    return None


def _raise_wrong_parquet_type(
    path: Path, raw: pl.LazyFrame, col: str, have: pl.DataType, target: pl.DataType
) -> NoReturn:
    try:
        first = raw.select(col).head(1).collect()
        example = f" (row 1 has {col}={_fmt_value(first.item(0, 0))})" if first.height else ""
    except READ_ERRORS:
        example = ""
    if target == UTC_US and isinstance(have, pl.Datetime):
        raise InputError(
            f"Input file {path}, column '{col}': timestamps are naive ({have}){example}; "
            f"without a time zone their instant is ambiguous. Store them time-zone aware "
            f"(UTC or with a zone), for example Datetime('us', 'UTC')."
        )
    raise InputError(
        f"Input file {path}, column '{col}': stored as {have}{example}, but the column must be "
        f"{describe_dtype(target)}."
    )


def describe_dtype(dtype: pl.DataType) -> str:
    if dtype == UTC_US:
        return "a time-zone-aware timestamp (Datetime, converted to UTC)"
    if dtype == pl.Int64:
        return "an integer (Int64)"
    if dtype == pl.Float64:
        return "a number (Float64)"
    if dtype == pl.Boolean:
        return "a boolean"
    return "text (String)"


def _open_csv(stem: str, path: Path) -> Table:
    if path.stat().st_size == 0:
        raise InputError(
            f"Input file {path} is empty (0 bytes); expected a CSV file with a header."
        )
    header = csv_header(stem, path)
    try:
        scan = pl.scan_csv(path, infer_schema=False)
        names = list(scan.collect_schema().names())
    except pl.exceptions.NoDataError:
        raise InputError(
            f"Input file {path} is empty; expected a CSV file with a header."
        ) from None
    except READ_ERRORS as exc:
        raise csv_read_error(path, header, exc) from None
    _check_columns(stem, str(path), names)
    want = SCHEMAS[stem]
    raw = scan.select(list(want))
    typed = {col: csv_parse(col, target) for col, target in want.items()}
    parsed = frozenset(c for c, t in want.items() if t != pl.String)
    text_ts = frozenset(c for c, t in want.items() if t == UTC_US)
    return Table(stem, str(path), raw, typed, parsed, text_ts, path, header, scan)


def read_error(table: Table, exc: BaseException) -> InputError:
    if table.csv_path is not None:
        return csv_read_error(table.csv_path, table.header, exc)
    return InputError(f"Input file {table.source} cannot be read: {reader_reason(exc)}")


def _check_columns(stem: str, source: str, names: list[str]) -> None:
    missing = [c for c in SCHEMAS[stem] if c not in names]
    if missing:
        shown = ", ".join(names[:20]) + (", ..." if len(names) > 20 else "")
        raise InputError(
            f"Input file {source}, column '{missing[0]}': missing "
            f"({len(missing)} required column(s) missing: {', '.join(missing)}). The '{stem}' "
            f"table needs {', '.join(SCHEMAS[stem])}; the file has {shown or 'no columns'}."
        )


def open_table(stem: str, path: Path) -> Table:
    return _open_parquet(stem, path) if path.suffix == ".parquet" else _open_csv(stem, path)


def table_from_frame(stem: str, lf: pl.LazyFrame) -> Table:
    """An in-memory table (no file), validated as if read from parquet."""
    source = f"<in-memory '{stem}' table>"
    names = list(lf.collect_schema().names())
    _check_columns(stem, source, names)
    want = SCHEMAS[stem]
    schema = lf.collect_schema()
    typed: dict[str, pl.Expr] = {}
    for col, target in want.items():
        expr = _parquet_cast(col, schema[col], target)
        if expr is None:
            raise InputError(
                f"Input {source}, column '{col}': type {schema[col]}, but the column must be "
                f"{describe_dtype(target)}."
            )
        typed[col] = expr
    return Table(stem, source, lf.select(list(want)), typed, frozenset(), frozenset())
