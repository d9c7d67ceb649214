"""CSV input files as text: the header, strict parsing of fields, and what is wrong, by line.

Polars reports a malformed file with a message that names no line (and may quote kilobytes of
it); the raw bytes are scanned, only once something is known to be wrong, for the first line
that breaks the structure, to name and show it.
"""

from __future__ import annotations

import codecs
import csv
import io
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from allocator.data.schemas import SCHEMAS, UTC_US
from allocator.errors import InputError

READ_ERRORS = (pl.exceptions.PolarsError, OSError, ValueError)
#: Longest excerpt of a file (a line, a reader's message) quoted in an error message.
_SHOW_CHARS = 200
#: A quoted CSV value may span lines; a record still open after this many bytes is reported as
#: an unbalanced quote rather than read on to the end of the file.
_MAX_RECORD_BYTES = 1 << 16
_BOOL_TEXT = {"true": True, "false": False, "1": True, "0": False}


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


def reader_reason(exc: BaseException) -> str:
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


def csv_header(stem: str, path: Path) -> tuple[str, ...]:
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


def scan_csv(path: Path, header: tuple[str, ...], *, upto_row: int | None = None) -> _CsvScan:
    """Find the first malformed line of a CSV file, reading no further than data row ``upto_row``.

    A line is malformed when it is not UTF-8, holds an unbalanced double quote, or has a number
    of fields other than the header's (a blank line has one). A quoted value may span lines, as
    Polars allows; data rows are counted as Polars counts them. Pure Python at about a million
    lines a second: it runs only once Polars has failed or a check has found a bad row.
    """
    n_fields = len(header)
    with open(path, "rb") as fh:
        fh.readline()  # the header, checked by csv_header
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


def csv_read_error(path: Path, header: tuple[str, ...], exc: BaseException) -> InputError:
    """The InputError for a CSV file Polars could not read: the first malformed line if found."""
    found = scan_csv(path, header)
    if found.problem is not None:
        return InputError(f"Input file {path}, {found.problem}")
    return InputError(f"Input file {path} cannot be read as CSV: {reader_reason(exc)}")


def csv_parse(col: str, target: pl.DataType) -> pl.Expr:
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
