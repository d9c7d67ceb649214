"""Input tables: where they are, their schema, lazy loading and fast validation.

A data directory holds four tables, each as ``<stem>.parquet`` or ``<stem>.csv`` (the stems are
:data:`allocator.names.INPUT_TABLES`). :func:`load_inputs` returns them as Polars LazyFrames
with exactly the columns and types of :data:`SCHEMAS`; nothing is read into memory until a
consumer collects.

Validation is separate (:func:`validate_inputs`) so that loading, validating and the eligibility
query can be timed apart. It runs one aggregate pass per table (counts of nulls, unparsable
values and rule breaks, uniqueness), plus one small pass only when a rule is broken, to fetch the
first offending row for the message. Every problem raises
:class:`~allocator.errors.InputError` with one paragraph naming the file, the column and an
example row (data rows numbered from 1, the CSV header not counted; for a CSV file also the line
of the file, the header being line 1).

Columns. They are found by name, in any order. Columns not in :data:`SCHEMAS` are accepted and
ignored (real exports carry more than the allocator needs); in a CSV file they are still read by
the validation pass, so a malformed line is found wherever it breaks. A schema column named
twice in a CSV header is refused (which copy is meant would be a guess).

Type rules. Parquet columns are cast when the kind matches (any integer width to ``Int64``, any
float, integer or decimal to ``Float64``, categorical to ``String``, a time-zone-aware datetime of
any unit to ``Datetime("us", "UTC")``) and rejected otherwise; a naive datetime is rejected
because its time zone would be a guess. CSV fields are read as text and parsed strictly:
timestamps must be ISO 8601 with an offset or ``Z``; booleans are ``true``/``false``/``1``/``0``.
``collateral`` may be null (not reported); every other column is required on every row.

CSV files must be UTF-8 (a leading byte-order mark is accepted and ignored), comma-separated,
with ``"`` quoting values that contain commas; ``\n`` and ``\r\n`` line ends both work. A line
with more fields than the header, a value that is not UTF-8, an unbalanced quote or a blank line
is refused, naming the line and showing it. A line with fewer fields than the header is read
with the missing trailing values empty, which the checks above report when a value is required;
only a line lacking nothing but trailing optional fields (``collateral``) reads the same as one
leaving them empty.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from allocator import names as N
from allocator.errors import InputError

UTC_US = pl.Datetime("us", "UTC")

#: Columns and types of each input table, in canonical order.
SCHEMAS: dict[str, dict[str, pl.DataType]] = {
    N.EVENTS_FILE: {
        N.EVENT_ID: pl.Int64(),
        N.USER_ID: pl.Int64(),
        N.TS: UTC_US,
        N.PRODUCT: pl.String(),
        N.SYMBOL: pl.String(),
        N.SIDE: pl.String(),
        N.QUANTITY: pl.Float64(),
        N.LIQ_PRICE: pl.Float64(),
        N.REALISED_LOSS: pl.Float64(),
        N.LIQ_FEE: pl.Float64(),
        N.SETTLE_ASSET: pl.String(),
        N.COLLATERAL: pl.String(),
    },
    N.PRICES_FILE: {
        N.ASSET: pl.String(),
        N.PRICE_TS: UTC_US,
        N.PRICE_USD: pl.Float64(),
    },
    N.SNAPSHOT_FILE: {
        N.USER_ID: pl.Int64(),
        N.NET_ASSETS_USD: pl.Float64(),
    },
    N.USERS_FILE: {
        N.USER_ID: pl.Int64(),
        N.VIP_TIER: pl.Int64(),
        N.IS_INSTITUTIONAL: pl.Boolean(),
        N.REGION: pl.String(),
        N.CREATED_AT: UTC_US,
        N.KYC_STATUS: pl.String(),
        N.DEPEG_COMP_USD: pl.Float64(),
    },
}

#: Columns that may hold nulls; every other column is required on every row.
NULLABLE: dict[str, frozenset[str]] = {
    N.EVENTS_FILE: frozenset({N.COLLATERAL}),
    N.PRICES_FILE: frozenset(),
    N.SNAPSHOT_FILE: frozenset(),
    N.USERS_FILE: frozenset(),
}

#: Columns whose values must be unique within their table.
UNIQUE_KEYS: dict[str, tuple[str, ...]] = {
    N.EVENTS_FILE: (N.EVENT_ID,),
    N.PRICES_FILE: (),
    N.SNAPSHOT_FILE: (N.USER_ID,),
    N.USERS_FILE: (N.USER_ID,),
}

FORMATS = ("parquet", "csv")
MAX_VIP_TIER = 9

_READ_ERRORS = (pl.exceptions.PolarsError, OSError, ValueError)
#: Longest excerpt of a file (a line, a reader's message) quoted in an error message.
_SHOW_CHARS = 200
#: A quoted CSV value may span lines; a record still open after this many bytes is reported as
#: an unbalanced quote rather than read on to the end of the file.
_MAX_RECORD_BYTES = 1 << 16
# An ISO 8601 date or date-time without any offset: valid text, but a naive instant.
_NAIVE_RE = r"^\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?)?$"
_BOOL_TEXT = {"true": True, "false": False, "1": True, "0": False}
_ROW = "__row"


@dataclass(frozen=True)
class Inputs:
    """The four input tables as LazyFrames with the columns and types of :data:`SCHEMAS`.

    ``paths`` maps each table stem to the file it was read from (empty for in-memory tables).
    """

    events: pl.LazyFrame
    prices: pl.LazyFrame
    snapshot: pl.LazyFrame
    users: pl.LazyFrame
    paths: dict[str, Path]

    def table(self, stem: str) -> pl.LazyFrame:
        """The LazyFrame of one table by its file stem."""
        return {
            N.EVENTS_FILE: self.events,
            N.PRICES_FILE: self.prices,
            N.SNAPSHOT_FILE: self.snapshot,
            N.USERS_FILE: self.users,
        }[stem]


@dataclass(frozen=True)
class _Rule:
    """A row-level rule: ``bad`` is true on rows that break it (nulls are checked beforehand)."""

    column: str
    bad: pl.Expr
    text: str


@dataclass(frozen=True)
class _Table:
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


# --------------------------------------------------------------------------------------------
# locating and opening files


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


def _find_tables(data_dir: Path) -> dict[str, Path]:
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


def _fmt_row(row: Mapping[str, object], columns: list[str]) -> str:
    return ", ".join(f"{c}={_fmt_value(row.get(c))}" for c in columns if c in row)


def _open_parquet(stem: str, path: Path) -> _Table:
    if path.stat().st_size == 0:
        raise InputError(f"Input file {path} is empty (0 bytes); expected a parquet file.")
    try:
        raw = pl.scan_parquet(path)
        schema = raw.collect_schema()
    except _READ_ERRORS as exc:
        raise InputError(
            f"Input file {path} cannot be read as parquet: {_reader_reason(exc)}"
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
    return _Table(stem, str(path), raw, typed, frozenset(parsed), frozenset())


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
) -> None:
    try:
        first = raw.select(col).head(1).collect()
        example = f" (row 1 has {col}={_fmt_value(first.item(0, 0))})" if first.height else ""
    except _READ_ERRORS:
        example = ""
    if target == UTC_US and isinstance(have, pl.Datetime):
        raise InputError(
            f"Input file {path}, column '{col}': timestamps are naive ({have}){example}; "
            f"without a time zone their instant is ambiguous. Store them time-zone aware "
            f"(UTC or with a zone), for example Datetime('us', 'UTC')."
        )
    raise InputError(
        f"Input file {path}, column '{col}': stored as {have}{example}, but the column must be "
        f"{_describe(target)}."
    )


def _describe(dtype: pl.DataType) -> str:
    if dtype == UTC_US:
        return "a time-zone-aware timestamp (Datetime, converted to UTC)"
    if dtype == pl.Int64:
        return "an integer (Int64)"
    if dtype == pl.Float64:
        return "a number (Float64)"
    if dtype == pl.Boolean:
        return "a boolean"
    return "text (String)"


def _open_csv(stem: str, path: Path) -> _Table:
    if path.stat().st_size == 0:
        raise InputError(
            f"Input file {path} is empty (0 bytes); expected a CSV file with a header."
        )
    header = _csv_header(stem, path)
    try:
        scan = pl.scan_csv(path, infer_schema=False)
        names = list(scan.collect_schema().names())
    except pl.exceptions.NoDataError:
        raise InputError(
            f"Input file {path} is empty; expected a CSV file with a header."
        ) from None
    except _READ_ERRORS as exc:
        raise _csv_read_error(path, header, exc) from None
    _check_columns(stem, str(path), names)
    want = SCHEMAS[stem]
    raw = scan.select(list(want))
    typed = {col: _csv_parse(col, target) for col, target in want.items()}
    parsed = frozenset(c for c, t in want.items() if t != pl.String)
    text_ts = frozenset(c for c, t in want.items() if t == UTC_US)
    return _Table(stem, str(path), raw, typed, parsed, text_ts, path, header, scan)


# --------------------------------------------------------------------------------------------
# CSV structure. Polars reports a malformed file with a message that names no line (and may
# quote kilobytes of it); the raw bytes are scanned, only once something is known to be wrong,
# for the first line that breaks the structure, to name and show it.


def _strip_eol(text: str) -> str:
    if text.endswith("\r\n"):
        return text[:-2]
    return text[:-1] if text.endswith("\n") else text


def _show_line(text: str) -> str:
    """A line as quoted in a message: repr (control characters visible), at most ~200 chars."""
    shown = repr(text)
    if len(shown) <= _SHOW_CHARS:
        return shown
    return f"{shown[:_SHOW_CHARS]}... ({len(text):,} characters)"


def _reader_reason(exc: BaseException) -> str:
    """The first line of a reader's message, cut short: Polars may quote the rest of the file."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    first = lines[0] if lines else type(exc).__name__
    return first if len(first) <= _SHOW_CHARS else first[:_SHOW_CHARS] + "..."


def _fields(body: str) -> list[str]:
    """The fields of one CSV record (quoted values may hold commas and line breaks)."""
    if '"' not in body:
        return body.split(",")
    return next(csv.reader(io.StringIO(body, newline="")), [""])


def _column_at(header: tuple[str, ...] | list[str], text_before: str) -> str:
    """``, column 'x'`` for the field a position falls in (commas counted, quotes ignored)."""
    i = text_before.count(",")
    return f", column '{header[i]}'" if 0 <= i < len(header) else ""


def _not_utf8(
    rec: bytes, exc: UnicodeDecodeError, header: tuple[str, ...] | list[str]
) -> tuple[int, str]:
    """(line offset within ``rec``, description) of the first byte that is not UTF-8.

    The description starts with ``, column 'x'`` when the column is known, then ``: ``.
    """
    before = rec[: exc.start]
    offset = before.count(b"\n")
    line_start = before.rfind(b"\n") + 1
    column = _column_at(header, before[line_start:].decode("utf-8", errors="replace"))
    end = rec.find(b"\n", exc.start)
    shown = rec[line_start : end if end >= 0 else len(rec)].decode("utf-8", errors="replace")
    return offset, (
        f"{column}: byte 0x{rec[exc.start]:02X} (character {exc.start - line_start + 1} of the "
        f"line) is not UTF-8. CSV files must be UTF-8 text; this one was perhaps saved as "
        f"Latin-1 or Windows-1252: export it again as UTF-8. The line reads: "
        f"{_show_line(_strip_eol(shown))}."
    )


def _csv_header(stem: str, path: Path) -> tuple[str, ...]:
    """The header of a CSV file, checked: UTF-8, balanced quotes, no schema column twice.

    A UTF-8 byte-order mark (written by Excel and many Windows tools) is skipped, as Polars does.
    """
    with open(path, "rb") as fh:
        first = fh.readline(_MAX_RECORD_BYTES)
    if first.startswith(codecs.BOM_UTF8):
        first = first[len(codecs.BOM_UTF8) :]
    where = f"Input file {path}, line 1 (the header)"
    if first.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        # "Unicode text" from Excel or Notepad: every other byte is zero, nothing would match.
        raise InputError(
            f"Input file {path} is UTF-16 text (it starts with a UTF-16 byte-order mark); CSV "
            f"files must be UTF-8: export or save it again as 'CSV UTF-8'."
        )
    try:
        text = first.decode("utf-8")
    except UnicodeDecodeError as exc:
        _, what = _not_utf8(first, exc, [])
        raise InputError(f"{where}{what}") from None
    body = _strip_eol(text)
    if body.count('"') % 2:
        raise InputError(
            f"{where}: a double quote opens a quoted name that never closes. The line reads: "
            f"{_show_line(body)}."
        )
    names = tuple(_fields(body)) if body else ()
    twice = [c for c, k in Counter(names).items() if k > 1 and c in SCHEMAS[stem]]
    if twice:
        raise InputError(
            f"{where}, column '{twice[0]}': named {Counter(names)[twice[0]]} times, so which copy "
            f"holds the '{stem}' table's {twice[0]} is ambiguous. Remove or rename the extra "
            f"copies. The header reads: {_show_line(body)}."
        )
    return names


@dataclass(frozen=True)
class _CsvScan:
    """What a scan of a CSV file's lines found."""

    problem: str | None  # "line N (data row M): ..." for the first malformed line, else None
    line: int | None  # the line where data row ``upto_row`` starts, when the scan reached it


def _scan_csv(path: Path, header: tuple[str, ...], *, upto_row: int | None = None) -> _CsvScan:
    """Find the first malformed line of a CSV file, reading no further than data row ``upto_row``.

    A line is malformed when it is not UTF-8, holds an unbalanced double quote, or has a number
    of fields other than the header's (a blank line has one). A quoted value may span lines, as
    Polars allows; data rows are counted as Polars counts them. Pure Python at about a million
    lines a second: it runs only once Polars has failed or a check has found a bad row.
    """
    n_fields = len(header)
    with open(path, "rb") as fh:
        fh.readline()  # the header, checked by _csv_header
        line = 1
        for row, rec in enumerate(fh, start=1):
            line += 1
            start = line
            while rec.count(b'"') % 2 and len(rec) <= _MAX_RECORD_BYTES:
                more = fh.readline()
                if not more:
                    break
                rec += more
                line += 1
            problem = _record_problem(rec, header, n_fields)
            if problem is not None:
                offset, what = problem
                return _CsvScan(f"line {start + offset} (data row {row}){what}", start)
            if row == upto_row:
                return _CsvScan(None, start)
    return _CsvScan(None, None)


def _record_problem(rec: bytes, header: tuple[str, ...], n_fields: int) -> tuple[int, str] | None:
    """(line offset within the record, description) of what is wrong with one record, if any.

    As for :func:`_not_utf8`, the description starts with ``, column 'x'`` or ``: ``.
    """
    try:
        text = rec.decode("utf-8")
    except UnicodeDecodeError as exc:
        return _not_utf8(rec, exc, header)
    if b'"' not in rec and rec.count(b",") + 1 == n_fields:
        return None  # the common case, decided on the bytes
    body = _strip_eol(text)
    first_line = body.split("\n", 1)[0]
    if body.count('"') % 2 or ("\n" in body and len(_fields(body)) != n_fields):
        # An odd quote count, or an even one only by pairing with a stray quote lines later.
        q = first_line.find('"')
        column = _column_at(header, first_line[:q]) if q >= 0 else ""
        return 0, (
            f'{column}: a double quote opens a quoted value that never closes (a stray " inside '
            f'a value: remove it, or quote the whole value and double the inner quote as ""). '
            f"The line reads: {_show_line(first_line)}."
        )
    if not body:
        return 0, ": the line is blank; remove it (it would read as a row of empty values)."
    n = len(_fields(body))
    if n != n_fields:
        why = (
            "a comma inside an unquoted value (quote such values, or use '.' for decimals), "
            "or an extra separator"
            if n > n_fields
            else "a missing value or separator"
        )
        return 0, (
            f": {n} fields where the header has {n_fields}: {why}. The line reads: "
            f"{_show_line(body)}."
        )
    return None


def _csv_read_error(path: Path, header: tuple[str, ...], exc: BaseException) -> InputError:
    """The InputError for a CSV file Polars could not read: the first malformed line if found."""
    found = _scan_csv(path, header)
    if found.problem is not None:
        return InputError(f"Input file {path}, {found.problem}")
    return InputError(f"Input file {path} cannot be read as CSV: {_reader_reason(exc)}")


def _read_error(table: _Table, exc: BaseException) -> InputError:
    if table.csv_path is not None:
        return _csv_read_error(table.csv_path, table.header, exc)
    return InputError(f"Input file {table.source} cannot be read: {_reader_reason(exc)}")


def _csv_parse(col: str, target: pl.DataType) -> pl.Expr:
    """Strict parse of a text column: unparsable values become null and are reported."""
    c = pl.col(col)
    if target == pl.String:
        return c
    s = c.str.strip_chars()
    if target == UTC_US:
        # "%+" is ISO 8601 with an offset; naive values fail to parse and are reported as naive.
        return s.str.to_datetime(format="%+", time_unit="us", time_zone="UTC", strict=False)
    if target == pl.Boolean:
        return s.str.to_lowercase().replace_strict(
            _BOOL_TEXT, default=None, return_dtype=pl.Boolean
        )
    return s.cast(target, strict=False)


def _check_columns(stem: str, source: str, names: list[str]) -> None:
    missing = [c for c in SCHEMAS[stem] if c not in names]
    if missing:
        shown = ", ".join(names[:20]) + (", ..." if len(names) > 20 else "")
        raise InputError(
            f"Input file {source}, column '{missing[0]}': missing "
            f"({len(missing)} required column(s) missing: {', '.join(missing)}). The '{stem}' "
            f"table needs {', '.join(SCHEMAS[stem])}; the file has {shown or 'no columns'}."
        )


def _open_table(stem: str, path: Path) -> _Table:
    return _open_parquet(stem, path) if path.suffix == ".parquet" else _open_csv(stem, path)


def _table_from_frame(stem: str, lf: pl.LazyFrame) -> _Table:
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
                f"{_describe(target)}."
            )
        typed[col] = expr
    return _Table(stem, source, lf.select(list(want)), typed, frozenset(), frozenset())


# --------------------------------------------------------------------------------------------
# public API


def load_inputs(data_dir: str | Path, *, validate: bool = True) -> Inputs:
    """Open the four input tables of ``data_dir`` lazily.

    File layout, column names and types are always checked (they need only file metadata and
    the CSV header); ``validate=True`` also runs :func:`validate_inputs` over the data.

    Parameters
    ----------
    data_dir : str or Path
        Directory holding ``liquidations``, ``prices``, ``snapshot`` and ``users``, each as
        ``.parquet`` or ``.csv``.
    validate : bool
        Whether to check every row (nulls, ranges, codes, uniqueness).

    Returns
    -------
    Inputs
        LazyFrames with exactly the columns and types of :data:`SCHEMAS`.

    Raises
    ------
    InputError
        For a missing or ambiguous table, an unreadable or empty file, a missing column, a
        column of the wrong type, and (with ``validate``) any row breaking a rule.
    """
    data_dir = Path(data_dir)
    paths = _find_tables(data_dir)
    tables = {stem: _open_table(stem, path) for stem, path in paths.items()}
    inputs = Inputs(
        events=tables[N.EVENTS_FILE].frame(),
        prices=tables[N.PRICES_FILE].frame(),
        snapshot=tables[N.SNAPSHOT_FILE].frame(),
        users=tables[N.USERS_FILE].frame(),
        paths=paths,
    )
    if validate:
        _validate_tables(tables)
    return inputs


def validate_inputs(inputs: Inputs) -> None:
    """Check every row of every table; raise :class:`InputError` at the first broken rule.

    Tables read from files are re-opened from ``inputs.paths`` (metadata only) so that CSV
    text that fails to parse and the offending row as written can be reported; tables without
    a path are checked as they are.

    Rules: no null outside :data:`NULLABLE`; timestamps carry an offset; amounts finite with
    ``quantity, realised_loss, liq_fee >= 0``, ``liq_price > 0``, ``price_usd > 0``,
    ``depeg_comp_usd >= 0`` and ``net_assets_usd`` any finite value; ``product``, ``side`` and
    ``kyc_status`` in their vocabularies; ``region`` two upper-case letters; ``vip_tier`` in 0..9; ``event_id`` unique, ``user_id``
    unique in the snapshot and users tables; and every settle asset of a covered-product event
    has prices.
    """
    tables: dict[str, _Table] = {}
    for stem in N.INPUT_TABLES:
        path = inputs.paths.get(stem)
        tables[stem] = (
            _open_table(stem, Path(path))
            if path is not None
            else _table_from_frame(stem, inputs.table(stem))
        )
    _validate_tables(tables)


def file_sha256(path: str | Path, *, chunk_bytes: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks so that memory stays flat for any size."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk_bytes):
            h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------------------------
# validation


def _rules(stem: str, t: Mapping[str, pl.Expr]) -> list[_Rule]:
    def nonneg(col: str) -> _Rule:
        x = t[col]
        return _Rule(col, ~x.is_finite() | (x < 0), "must be a finite number >= 0")

    def positive(col: str) -> _Rule:
        x = t[col]
        return _Rule(col, ~x.is_finite() | (x <= 0), "must be a finite number > 0")

    def vocab(col: str, allowed: tuple[str, ...]) -> _Rule:
        return _Rule(
            col,
            ~t[col].is_in(list(allowed)),
            f"must be one of {', '.join(repr(a) for a in allowed)}",
        )

    if stem == N.EVENTS_FILE:
        return [
            vocab(N.PRODUCT, N.PRODUCTS),
            vocab(N.SIDE, N.SIDES),
            nonneg(N.QUANTITY),
            positive(N.LIQ_PRICE),
            nonneg(N.REALISED_LOSS),
            nonneg(N.LIQ_FEE),
        ]
    if stem == N.PRICES_FILE:
        return [positive(N.PRICE_USD)]
    if stem == N.SNAPSHOT_FILE:
        x = t[N.NET_ASSETS_USD]
        return [
            _Rule(
                N.NET_ASSETS_USD,
                ~x.is_finite(),
                "must be a finite number (it may be zero or negative)",
            )
        ]
    if stem == N.USERS_FILE:
        v = t[N.VIP_TIER]
        return [
            _Rule(
                N.VIP_TIER, (v < 0) | (v > MAX_VIP_TIER), f"must be an integer in 0..{MAX_VIP_TIER}"
            ),
            vocab(N.KYC_STATUS, N.KYC_STATUSES),
            nonneg(N.DEPEG_COMP_USD),
            # restricted regions are matched by code: "us" or "USA" would silently escape them
            _Rule(
                N.REGION,
                ~t[N.REGION].str.contains(r"^[A-Z]{2}$"),
                "must be an ISO 3166-1 alpha-2 code, two upper-case letters such as 'US'",
            ),
        ]
    raise AssertionError(stem)


@dataclass(frozen=True)
class _Check:
    """A counted check: an aggregate name, the predicate selecting bad rows, and a message."""

    key: str
    column: str
    bad: pl.Expr
    message: Callable[[int], str]


def _checks(table: _Table) -> list[_Check]:
    stem, t = table.stem, table.typed
    out: list[_Check] = []
    for col, target in SCHEMAS[stem].items():
        raw = pl.col(col)
        if col not in NULLABLE[stem]:
            out.append(
                _Check(
                    f"null:{col}",
                    col,
                    raw.is_null(),
                    lambda n: (
                        f"a value is required on every row, but {n} row(s) have none (null or empty)"
                    ),
                )
            )
        if col in table.text_ts:
            naive = raw.str.strip_chars().str.contains(_NAIVE_RE).fill_null(False)
            out.append(
                _Check(
                    f"naive:{col}",
                    col,
                    naive,
                    lambda n: (
                        f"timestamps must carry a UTC offset or Z (for example 2025-10-10T21:15:00Z), "
                        f"but {n} row(s) are naive, so their instant is ambiguous"
                    ),
                )
            )
        if col in table.parsed:
            bad = raw.is_not_null() & t[col].is_null()
            if col in table.text_ts:
                bad = bad & ~raw.str.strip_chars().str.contains(_NAIVE_RE)
            out.append(
                _Check(
                    f"parse:{col}",
                    col,
                    bad,
                    lambda n, target=target: (
                        f"values must be {_describe(target)}, but {n} row(s) are not"
                    ),
                )
            )
    for rule in _rules(stem, t):
        out.append(
            _Check(
                f"rule:{rule.column}",
                rule.column,
                rule.bad.fill_null(False),
                lambda n, text=rule.text: f"values {text}, but {n} row(s) do not",
            )
        )
    for key in UNIQUE_KEYS[stem]:
        out.append(
            _Check(
                f"dup:{key}",
                key,
                ~t[key].is_first_distinct(),
                lambda n: f"values must be unique, but {n} row(s) repeat a value of an earlier row",
            )
        )
    return out


def _validate_tables(tables: Mapping[str, _Table]) -> None:
    for stem in N.INPUT_TABLES:
        _validate_table(tables[stem])
    _check_prices_cover_settle_assets(tables[N.EVENTS_FILE], tables[N.PRICES_FILE])


def _validate_table(table: _Table) -> None:
    checks = _checks(table)
    aggs: list[pl.Expr] = [pl.len().alias("__n")]
    for chk in checks:
        if chk.key.startswith("dup:"):
            # Ids are usually written in order: strictly increasing means unique, found in the
            # same pass without hashing. Only otherwise is a separate n_unique pass needed.
            aggs.append((table.typed[chk.column].diff() <= 0).sum().alias(chk.key))
        else:
            aggs.append(chk.bad.sum().alias(chk.key))
    source = table.raw
    if table.scan is not None:
        # Read every column of the CSV file, extra ones included: only then does Polars refuse
        # a line with more fields than the header instead of silently dropping the surplus.
        source = table.scan
        aggs.append(pl.all().is_null().sum().name.prefix("__file:"))
    try:
        counts = source.select(aggs).collect().row(0, named=True)
    except _READ_ERRORS as exc:
        raise _read_error(table, exc) from None
    if counts["__n"] == 0:
        raise InputError(
            f"Input file {table.source} has no data rows; the '{table.stem}' table must not be empty."
        )
    for chk in checks:
        n = int(counts[chk.key] or 0)
        if n and chk.key.startswith("dup:"):
            n_unique = _collect(table, table.raw.select(table.typed[chk.column].n_unique())).item()
            n = int(counts["__n"]) - int(n_unique)
        if n:
            _raise_with_example(table, chk, n)


def _collect(table: _Table, lf: pl.LazyFrame) -> pl.DataFrame:
    """Collect a query over ``table``; a read failure is an InputError, never a traceback."""
    try:
        return lf.collect()
    except _READ_ERRORS as exc:
        raise _read_error(table, exc) from None


def _numbering(table: _Table, row: int) -> str:
    """How rows are numbered, with the file line of data row ``row`` for a CSV file.

    For a CSV file the lines up to that row are scanned first: a bad value is often the
    symptom of a malformed line (a missing field shifts the rest of the line one column left),
    and then the line is the error to report.
    """
    if table.csv_path is None:
        return "(data rows are numbered from 1, header not counted)"
    found = _scan_csv(table.csv_path, table.header, upto_row=row)
    if found.problem is not None:
        raise InputError(f"Input file {table.csv_path}, {found.problem}")
    line = f"row {row} is line {found.line} of the file; " if found.line is not None else ""
    return f"({line}data rows are numbered from 1, header not counted)"


def _raise_with_example(table: _Table, chk: _Check, n: int) -> None:
    columns = list(SCHEMAS[table.stem])
    indexed = table.raw.with_row_index(_ROW, offset=1)
    hit = _collect(
        table, indexed.filter(chk.bad).head(1).with_columns(table.typed[chk.column].alias("__key"))
    )
    example, numbering = "", "(data rows are numbered from 1, header not counted)"
    if hit.height:
        row = hit.row(0, named=True)
        numbering = _numbering(table, row[_ROW])
        example = f"; first at row {row[_ROW]}: {_fmt_row(row, columns)}"
        if chk.key.startswith("dup:"):
            first = _collect(table, indexed.filter(table.typed[chk.column] == row["__key"]).head(1))
            example += f" (same {chk.column} as row {first.item(0, _ROW)})"
    raise InputError(
        f"Input file {table.source}, column '{chk.column}': {chk.message(n)}{example} {numbering}."
    )


def _check_prices_cover_settle_assets(events: _Table, prices: _Table) -> None:
    """Every settle asset of a covered-product event needs a price series to convert losses."""
    assets = _collect(prices, prices.frame().select(pl.col(N.ASSET).unique())).to_series().to_list()
    ev = events.frame()
    bad = pl.col(N.PRODUCT).is_in(list(N.COVERED_PRODUCTS)) & ~pl.col(N.SETTLE_ASSET).is_in(assets)
    hit = _collect(
        events,
        ev.with_row_index(_ROW, offset=1)
        .filter(bad)
        .select(
            pl.len().alias("__n"),
            pl.col(N.SETTLE_ASSET).unique().sort().str.join(", ").alias("__assets"),
            pl.first(_ROW).alias("__first"),
        ),
    )
    n = int(hit.item(0, "__n"))
    if not n:
        return
    first = _collect(
        events,
        events.raw.with_row_index(_ROW, offset=1).filter(pl.col(_ROW) == hit.item(0, "__first")),
    )
    row = first.row(0, named=True)
    raise InputError(
        f"Input file {events.source}, column '{N.SETTLE_ASSET}': {n} covered-product event(s) "
        f"are settled in an asset with no rows in {prices.source} ({hit.item(0, '__assets')}), "
        f"so their loss cannot be converted to USD; first at row {row[_ROW]}: "
        f"{_fmt_row(row, list(SCHEMAS[events.stem]))} {_numbering(events, row[_ROW])}."
    )
