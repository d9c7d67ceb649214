"""Input tables: where they are, their schema, lazy loading and fast validation.

A data directory holds four tables, each as ``<stem>.parquet`` or ``<stem>.csv`` (the stems are
:data:`allocator.names.INPUT_TABLES`). :func:`load_inputs` returns them as Polars LazyFrames
with exactly the columns and types of :data:`SCHEMAS`; nothing is read into memory until a
consumer collects.

Validation is separate (:func:`validate_inputs`) so that loading, validating and the eligibility
query can be timed apart. It runs one aggregate pass per table (counts of nulls, unparsable
values and rule breaks, uniqueness), plus one small pass only when a rule is broken, to fetch the
first offending row for the message. Or it is folded into the eligibility scan
(``validate="folded"``, :class:`~allocator.data.validation.FoldedChecks`): the scan checks every
row it reads, so the large tables are read once, and only data that breaks a rule is validated
separately, for the same message. Every problem raises
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

Modules. This module is the door (:func:`load_inputs`, :func:`validate_inputs` and the names
other modules import); the schemas are in :mod:`allocator.data.schemas`, locating and opening
files in :mod:`allocator.data.tables`, CSV text and its error messages in
:mod:`allocator.data.csvtext`, and the row checks in :mod:`allocator.data.validation`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

from allocator import names as N
from allocator.data.schemas import FORMATS, MAX_VIP_TIER, NULLABLE, SCHEMAS, UNIQUE_KEYS, UTC_US
from allocator.data.tables import Inputs, find_tables, open_table, table_path
from allocator.data.validation import fold_checks, validate_inputs, validate_tables

__all__ = [
    "FORMATS",
    "MAX_VIP_TIER",
    "NULLABLE",
    "SCHEMAS",
    "UNIQUE_KEYS",
    "UTC_US",
    "Inputs",
    "load_inputs",
    "table_path",
    "validate_inputs",
]


def load_inputs(data_dir: str | Path, *, validate: bool | Literal["folded"] = True) -> Inputs:
    """Open the four input tables of ``data_dir`` lazily.

    File layout, column names and types are always checked (they need only file metadata and
    the CSV header); ``validate=True`` also runs :func:`validate_inputs` over the data.

    Parameters
    ----------
    data_dir : str or Path
        Directory holding ``liquidations``, ``prices``, ``snapshot`` and ``users``, each as
        ``.parquet`` or ``.csv``.
    validate : bool or "folded"
        Whether to check every row (nulls, ranges, codes, uniqueness). ``"folded"``: check the
        prices now and leave the other tables' rows to the eligibility scan
        (:attr:`Inputs.checks`), which checks them as it reads them; a directory holding a CSV
        table is validated now, as with ``True``.

    Returns
    -------
    Inputs
        LazyFrames with exactly the columns and types of :data:`SCHEMAS`.

    Raises
    ------
    InputError
        For a missing or ambiguous table, an unreadable or empty file, a missing column, a
        column of the wrong type, and (with ``validate=True``) any row breaking a rule.
    """
    data_dir = Path(data_dir)
    paths = find_tables(data_dir)
    tables = {stem: open_table(stem, path) for stem, path in paths.items()}
    inputs = Inputs(
        events=tables[N.EVENTS_FILE].frame(),
        prices=tables[N.PRICES_FILE].frame(),
        snapshot=tables[N.SNAPSHOT_FILE].frame(),
        users=tables[N.USERS_FILE].frame(),
        paths=paths,
    )
    if validate == "folded":
        return dataclasses.replace(inputs, checks=fold_checks(tables))
    if validate:
        validate_tables(tables)
    return inputs
