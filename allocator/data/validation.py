"""Input tables checked row by row: nulls, parsing, ranges, vocabularies, keys and prices.

One aggregate pass per table counts every kind of problem; one small pass more, only when a
rule is broken, fetches the first offending row for the message.

Folded into a consumer's pass (:class:`FoldedChecks`): the same rules as one flag per row,
which the eligibility scan evaluates while it reads the rows for itself, so that the large
tables are read once. Only when a flag is raised (or the scan fails) are the tables validated
as above, which raises the very error :func:`validate_inputs` would have raised first.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from allocator import names as N
from allocator.data.csvtext import READ_ERRORS, scan_csv
from allocator.data.schemas import MAX_VIP_TIER, NULLABLE, SCHEMAS, UNIQUE_KEYS
from allocator.data.tables import (
    Inputs,
    Table,
    describe_dtype,
    fmt_row,
    open_table,
    read_error,
    table_from_frame,
)
from allocator.errors import InputError

#: Control characters (C0 but tab and line breaks, which a quoted CSV value may hold; DEL; C1):
#: never part of a product, symbol, asset, region or code. Looked for as literal characters
#: (one Aho-Corasick pass; UTF-8 lets a character match only where it is whole), which reads a
#: million values in two thirds of the time of the regular expression ``[\x00-\x08...]``.
_CONTROL_CHARS = [
    chr(c) for c in (*range(0x09), 0x0B, 0x0C, *range(0x0E, 0x20), *range(0x7F, 0xA0))
]
# An ISO 8601 date or date-time without any offset: valid text, but a naive instant.
_NAIVE_RE = r"^\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?)?$"
_ROW = "__row"


@dataclass(frozen=True)
class _Rule:
    """A row-level rule: ``bad`` is true on rows that break it (nulls are checked beforehand)."""

    column: str
    bad: pl.Expr
    text: str


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


def _count_message(before: str, after: str) -> Callable[[int], str]:
    """The message of a check, given how many rows break it: ``before``, the count, ``after``."""
    return lambda n: f"{before}{n}{after}"


def _checks(table: Table) -> list[_Check]:
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
        if target == pl.String:
            # a NUL or other control character inside a name or code is damage, not data: it
            # would be written on into run files and payout instructions
            control = t[col].str.contains_any(_CONTROL_CHARS).fill_null(False)
            out.append(
                _Check(
                    f"control:{col}",
                    col,
                    control,
                    lambda n: (
                        f"text values must not hold control characters (a NUL byte, an "
                        f"escape...), but {n} row(s) do"
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
                    _count_message(
                        f"values must be {describe_dtype(target)}, but ", " row(s) are not"
                    ),
                )
            )
    for rule in _rules(stem, t):
        out.append(
            _Check(
                f"rule:{rule.column}",
                rule.column,
                rule.bad.fill_null(False),
                _count_message(f"values {rule.text}, but ", " row(s) do not"),
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
    tables: dict[str, Table] = {}
    for stem in N.INPUT_TABLES:
        path = inputs.paths.get(stem)
        tables[stem] = (
            open_table(stem, Path(path))
            if path is not None
            else table_from_frame(stem, inputs.table(stem))
        )
    validate_tables(tables)


def validate_tables(tables: Mapping[str, Table]) -> None:
    for stem in N.INPUT_TABLES:
        _validate_table(tables[stem])
    _check_prices_cover_settle_assets(tables[N.EVENTS_FILE], tables[N.PRICES_FILE])


def _counts(table: Table, checks: list[_Check]) -> dict[str, int]:
    """One aggregate pass over ``table``: its rows (``__n``) and how many rows break each check
    (for a key, how many rows are not above the previous one)."""
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
        return source.select(aggs).collect().row(0, named=True)
    except READ_ERRORS as exc:
        raise read_error(table, exc) from None


def _validate_table(table: Table) -> None:
    checks = _checks(table)
    counts = _counts(table, checks)
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


def _collect(table: Table, lf: pl.LazyFrame) -> pl.DataFrame:
    """Collect a query over ``table``; a read failure is an InputError, never a traceback."""
    try:
        return lf.collect()
    except READ_ERRORS as exc:
        raise read_error(table, exc) from None


def _numbering(table: Table, row: int) -> str:
    """How rows are numbered, with the file line of data row ``row`` for a CSV file.

    For a CSV file the lines up to that row are scanned first: a bad value is often the
    symptom of a malformed line (a missing field shifts the rest of the line one column left),
    and then the line is the error to report.
    """
    if table.csv_path is None:
        return "(data rows are numbered from 1, header not counted)"
    found = scan_csv(table.csv_path, table.header, upto_row=row)
    if found.problem is not None:
        raise InputError(f"Input file {table.csv_path}, {found.problem}")
    line = f"row {row} is line {found.line} of the file; " if found.line is not None else ""
    return f"({line}data rows are numbered from 1, header not counted)"


def _raise_with_example(table: Table, chk: _Check, n: int) -> None:
    columns = list(SCHEMAS[table.stem])
    indexed = table.raw.with_row_index(_ROW, offset=1)
    hit = _collect(
        table, indexed.filter(chk.bad).head(1).with_columns(table.typed[chk.column].alias("__key"))
    )
    example, numbering = "", "(data rows are numbered from 1, header not counted)"
    if hit.height:
        row = hit.row(0, named=True)
        numbering = _numbering(table, row[_ROW])
        example = f"; first at row {row[_ROW]}: {fmt_row(row, columns)}"
        if chk.key.startswith("dup:"):
            first = _collect(table, indexed.filter(table.typed[chk.column] == row["__key"]).head(1))
            example += f" (same {chk.column} as row {first.item(0, _ROW)})"
    raise InputError(
        f"Input file {table.source}, column '{chk.column}': {chk.message(n)}{example} {numbering}."
    )


def _check_prices_cover_settle_assets(events: Table, prices: Table) -> None:
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
        f"{fmt_row(row, list(SCHEMAS[events.stem]))} {_numbering(events, row[_ROW])}."
    )


# --------------------------------------------------------------------------- folded checks

#: The column holding a table's folded checks, one value per row (:meth:`FoldedChecks.flag`).
FLAG = "__input_problems"
#: Added to a row's flag when its key is not above the previous row's: a possible duplicate
#: (certain only if the key also has fewer distinct values than rows: ids may be unsorted).
_KEY_NOT_RISING = 1 << 32
#: The tables whose rows the eligibility scan reads anyway; prices (small) are checked at once.
FOLDED_TABLES = (N.EVENTS_FILE, N.SNAPSHOT_FILE, N.USERS_FILE)
#: Columns whose rule admits known words only (a vocabulary, or two upper-case letters): a
#: control character breaks that rule too, so the folded flag need not look for one (a regex
#: over every row, a tenth of a second per ten million).
_CLOSED_WORDS = frozenset({N.PRODUCT, N.SIDE, N.KYC_STATUS, N.REGION})


@dataclass(frozen=True)
class FoldedChecks:
    """The row checks of :func:`validate_inputs` for a consumer's own pass over the tables.

    For each table of :data:`FOLDED_TABLES`, :meth:`flag` is an ``Int64`` expression over the
    table's typed columns: 1 when the row breaks any rule (a null, a control character, a
    value out of range or vocabulary; for an event, also a covered product settled in an asset
    without prices), plus ``2**32`` when its key is not above the previous row's. The consumer
    adds up each table's flags while reading it and hands the totals to :meth:`resolve`; it runs
    its whole pass inside :meth:`first`. The prices table and empty tables were checked when the
    checks were made (:func:`fold_checks`).

    Whenever anything is flagged or the pass fails, the tables are validated as by
    :func:`validate_inputs`, so the error, its file, column and example row are exactly those of
    a separate validation; clean data is read once.
    """

    tables: Mapping[str, Table]
    assets: tuple[str, ...]  # assets with at least one price bar
    rows: Mapping[str, int]

    def flag(self, stem: str) -> pl.Expr:
        """The folded checks of one table, one ``Int64`` per row (see the class docstring)."""
        table = self.tables[stem]
        # Parquet without lossy casts (fold_checks ensures it): the typed columns are the
        # stored ones, so every check reads the consumer's columns by name.
        typed = Table(stem, table.source, table.raw, {c: pl.col(c) for c in SCHEMAS[stem]},
                      frozenset(), frozenset())  # fmt: skip
        bad = [
            c.bad.fill_null(False)
            for c in _checks(typed)
            if not c.key.startswith("dup:")
            and not (c.key.startswith("control:") and c.column in _CLOSED_WORDS)
        ]
        if stem == N.EVENTS_FILE:
            # the check of _check_prices_cover_settle_assets, row by row
            bad.append(
                pl.col(N.PRODUCT).is_in(list(N.COVERED_PRODUCTS))
                & ~pl.col(N.SETTLE_ASSET).is_in(list(self.assets))
            )
        rising = [(pl.col(k).diff() <= 0).fill_null(False) for k in UNIQUE_KEYS[stem]]
        flag = pl.any_horizontal(bad).fill_null(False).cast(pl.Int64)
        if rising:
            flag = flag + pl.any_horizontal(rising).cast(pl.Int64) * _KEY_NOT_RISING
        return flag.alias(FLAG)

    def validate(self) -> None:
        """Validate every table as :func:`validate_inputs` does (raises the first problem)."""
        validate_tables(self.tables)

    @contextmanager
    def first(self) -> Iterator[None]:
        """Run a pass over the data; if it fails, the data's own first problem is raised
        instead, as a separate validation before the pass would have raised it."""
        try:
            yield
        except Exception:
            self.validate()
            raise

    def resolve(self, totals: Mapping[str, int]) -> None:
        """Given each folded table's sum of :meth:`flag`, raise the first problem of the data
        (as :func:`validate_inputs`), or return when there is none."""
        if any(int(n) % _KEY_NOT_RISING for n in totals.values()):
            self.validate()
            return
        for stem, n in totals.items():
            if int(n) < _KEY_NOT_RISING:
                continue
            # keys not in order: unique only if there are as many distinct values as rows
            table = self.tables[stem]
            for key in UNIQUE_KEYS[stem]:
                distinct = _collect(table, table.raw.select(table.typed[key].n_unique())).item()
                if int(distinct) < self.rows[stem]:
                    self.validate()
                    return


def fold_checks(tables: Mapping[str, Table]) -> FoldedChecks | None:
    """The checks of ``tables`` to fold into the eligibility scan, or None when the tables were
    validated here instead: a CSV file, or a parquet column cast with possible loss (whose
    problems a typed column no longer shows), or a problem found here.

    The prices table is small and checked here, and so is that no table is empty (from the
    file metadata); any problem found here is raised as :func:`validate_tables` raises it.
    """
    if any(t.scan is not None or t.parsed for t in tables.values()):
        validate_tables(tables)
        return None
    prices = tables[N.PRICES_FILE]
    checks = _checks(prices)
    try:
        counts = _counts(prices, checks)
        rows = {s: int(tables[s].raw.select(pl.len()).collect().item()) for s in FOLDED_TABLES}
        clean = counts["__n"] > 0 and not any(counts[c.key] for c in checks) and all(rows.values())
    except (InputError, *READ_ERRORS):
        clean = False  # the validation below says what, in its order of tables
    if not clean:
        validate_tables(tables)  # raises the first problem
        return None
    assets = _collect(prices, prices.frame().select(pl.col(N.ASSET).unique().sort()))
    return FoldedChecks(tables, tuple(assets.to_series().to_list()), rows)
