"""Finance's sign-off workbook of a run directory (``allocator export``).

:func:`export_run` reads a run directory with :func:`allocator.runs.reader.load_run`
(``inputs=True``: a damaged run directory, one changed since its run, or input files that
changed or are gone are refused with an :class:`~allocator.errors.InputError`, exit 2, before
anything is written), runs finance's checks (:func:`allocator.analysis.checks.check_run_dir`)
and writes what finance signs off.

Tables
------
``Summary``
    One row per item, its label in words: programme, scenario, rule, run directory, when and by
    whom the run was made (when the manifest records it), budget, paid and unspent (USD),
    liquidated, eligible, paid, excluded users, users at the floor and at the cap, payout
    batches, the result of ``allocator check-budget`` (``all 30 checks passed``, or how many
    failed and which, each failure on a row of its own with what was found), the sha256 of
    ``manifest.json`` (of its bytes), of each input file (with its path) and of each data file
    of the run. Paid is the sum of ``payouts.csv``; budget is the manifest's.
``Payouts``
    ``payouts.csv`` as the payment system takes it: ``user_id``, ``amount_usd`` (the exact cents
    of the file / 100), ``batch``, ``idempotency_key``, one row per payout in the file's order.
    A worksheet holds at most 1,048,575 rows under its header; beyond that the rows go on in
    ``Payouts 2``, ``Payouts 3``... (csv has no such limit).
``Batches``
    Per batch of ``payouts.csv``: users, USD, and the schedule of the manifest's
    ``payout_batches`` (scheduled and due times, UTC); a total row whose USD is paid.
``Exclusions``
    Per exclusion reason, in the order the rules are applied (reasons in words, with the code):
    users and their counted loss (``loss_usd``, summed exactly rounded with :func:`math.fsum`);
    a total row whose users are the excluded users.
``By region``
    Per region of the users input table (``region`` joined on ``user_id``; ``(no user
    record)`` for an eligible user the table lacks): eligible users, users paid and USD paid,
    with a total row.

xlsx
----
One workbook, one sheet per table in the order above (:data:`SHEETS`), written with
xlsxwriter in constant-memory mode (rows stream to disk: a million payouts take about 20 s and
little memory). Amounts are numbers (never text) in the format :data:`USD_FORMAT`, counts
whole numbers in :data:`COUNT_FORMAT`; user ids are numbers in the format ``0`` (never in
scientific notation, never with decimals) unless some id has more than 15 digits, which Excel
cannot show exactly: then the whole column is text. Times are Excel date-times (UTC). Headers
are bold and frozen, columns sized, total rows bold. Text is never read as a formula or a link.

The workbook is deterministic: its creation date (the one timestamp xlsxwriter writes, in
``docProps/core.xml``) is the manifest's ``created_at``, or when the manifest has none, the
scenario's ``payouts.announced_at``; xlsxwriter stamps every part of the zip with 1980-01-31.
Two exports of the same run are byte-identical.

csv
---
``--out FILE.csv`` writes the payouts to ``FILE.csv`` (``user_id,amount_usd,batch,
idempotency_key``; ``amount_usd`` is text with exactly two decimals made from the integer
cents, e.g. ``1234.50``) and the other tables beside it, each with its header row:
``FILE.summary.csv`` (``item,value``), ``FILE.batches.csv``, ``FILE.exclusions.csv`` and
``FILE.regions.csv`` (:data:`CSV_PARTS`; for a ``FILE`` not ending in ``.csv`` the suffixes are
added to the whole name). Amounts are written with exactly two decimals and counts as whole
numbers, never in scientific notation; times are ISO 8601 in UTC. UTF-8, ``\\n`` line ends.

Writing
-------
Every file is written to a hidden temporary file beside it and renamed into place
(:func:`allocator.runs.store.atomic_write_all`); the csv files appear together or not at all.
An existing file is replaced only with ``force``; the folder must exist; a path inside a run
directory is refused (:func:`allocator.runs.reader.refuse_output_in_run`).
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Literal

import polars as pl
import xlsxwriter

from allocator import names as N
from allocator.analysis.checks import CheckReport, check_run_dir
from allocator.data.inputs import load_inputs
from allocator.errors import InputError
from allocator.kernel.money import CENTS_PER_USD
from allocator.report.words import reason_words, rule_title
from allocator.runs.contract import AMOUNT_CENTS, OUTPUT_FILES, RunDir, cents_to_usd_expr
from allocator.runs.hashing import sha256_file
from allocator.runs.reader import load_run, refuse_output_in_run
from allocator.runs.store import atomic_write_all
from allocator.settings.models import Scenario

__all__ = [
    "COUNT_FORMAT",
    "CSV_PARTS",
    "EXPORT_FORMATS",
    "ID_FORMAT",
    "MAX_NUMERIC_ID",
    "PAYOUT_COLUMNS",
    "SHEETS",
    "SHEET_ROWS",
    "USD_FORMAT",
    "Column",
    "Export",
    "Item",
    "Signoff",
    "Table",
    "build_signoff",
    "check_outputs",
    "export_run",
    "output_paths",
    "write_csv_files",
    "write_signoff",
    "write_xlsx",
]

#: Values of ``allocator export --format``.
EXPORT_FORMATS = ("xlsx", "csv")
#: The workbook's sheets, in order (payouts beyond one sheet go on in ``Payouts 2``...).
SHEETS = ("Summary", "Payouts", "Batches", "Exclusions", "By region")
#: The files beside a csv export's payouts file: ``FILE.<part>.csv``.
CSV_PARTS = ("summary", "batches", "exclusions", "regions")
#: Columns of the payouts table (sheet and csv).
PAYOUT_COLUMNS = (N.USER_ID, "amount_usd", N.BATCH, N.IDEMPOTENCY_KEY)
#: Rows of one worksheet, its header included (Excel's limit).
SHEET_ROWS = 1_048_576
#: Largest user id written as a number: Excel shows 15 significant digits exactly.
MAX_NUMERIC_ID = 10**15 - 1
USD_FORMAT = "#,##0.00"
COUNT_FORMAT = "#,##0"
ID_FORMAT = "0"
TIME_FORMAT = "yyyy-mm-dd hh:mm"

#: How a cell is written: text, a whole count, integer cents or a float in USD, a key (a whole
#: number shown without separators, or text), a UTC time.
Kind = Literal["text", "count", "cents", "usd", "key", "time"]
NO_USER_RECORD = "(no user record)"


# --------------------------------------------------------------------------------------------
# the tables
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    """A column of a table: its header, how its cells are written and its width (characters)."""

    header: str
    kind: Kind
    width: float = 14.0


@dataclass(frozen=True)
class Item:
    """A row of the summary: a label in words, a value and how it is written (``cents``:
    integer cents shown as USD)."""

    label: str
    value: Any
    kind: Kind = "text"


@dataclass(frozen=True, eq=False)
class Table:
    """A small table (batches, exclusions, regions): its sheet, csv part, columns, rows and
    total row."""

    sheet: str
    part: str
    columns: tuple[Column, ...]
    rows: tuple[tuple[Any, ...], ...]
    total: tuple[Any, ...] | None = None


@dataclass(frozen=True, eq=False)
class Signoff:
    """Everything an export writes, read from one verified run directory.

    ``payouts`` has ``user_id`` (Int64), ``amount_cents`` (Int64, exact), ``batch`` and
    ``idempotency_key``, in the order of ``payouts.csv``; ``created`` is the workbook's fixed
    creation date.
    """

    run: RunDir
    checks: CheckReport
    created: datetime
    summary: tuple[Item, ...]
    payouts: pl.DataFrame
    tables: tuple[Table, ...]

    @property
    def ok(self) -> bool:
        """Whether every finance check passed."""
        return self.checks.ok


@dataclass(frozen=True, eq=False)
class Export:
    """What :func:`export_run` wrote: the files (the payouts file first) and the sign-off."""

    paths: tuple[Path, ...]
    signoff: Signoff


# --------------------------------------------------------------------------------------------
# building
# --------------------------------------------------------------------------------------------


def _parse_time(value: Any) -> datetime | None:
    """An ISO 8601 time of the manifest as an aware UTC datetime; None when it is not one."""
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    else:
        return None
    if parsed.tzinfo is None:
        return None
    return parsed.astimezone(UTC)


def _created(manifest: Mapping[str, Any], scenario: Scenario) -> datetime:
    """The workbook's creation date: the run's ``created_at``, else the announcement."""
    made = _parse_time(manifest.get("created_at"))
    if made is not None:
        return made
    announced = _parse_time(scenario.payouts.announced_at)
    return announced if announced is not None else datetime(2000, 1, 1, tzinfo=UTC)


def _verdict(checks: CheckReport) -> str:
    n = len(checks.checks)
    if checks.ok:
        return f"all {n} checks passed"
    names = ", ".join(c.name for c in checks.failures)
    return f"{len(checks.failures)} of {n} checks FAILED: {names}"


def _section(manifest: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    """A section of the manifest; empty when it is missing or not an object."""
    value = manifest.get(key)
    return value if isinstance(value, Mapping) else {}


def _summary(run: RunDir, checks: CheckReport, paid_cents: int, n_batches: int) -> list[Item]:
    man = run.manifest
    scenario: Scenario = run.scenario
    alloc = run.allocations
    budget = _section(man, "money").get("budget_cents")
    bounds = alloc[N.BOUND].value_counts().rows() if alloc.height else []
    at = {str(k): int(v) for k, v in bounds}
    items = [
        Item("Programme", str(man.get("programme", ""))),
        Item("Scenario", scenario.name),
        Item("Rule", rule_title(scenario.objective.rule)),
        Item("Run directory", os.path.abspath(run.path)),
        Item("Created", str(man.get("created_at") or "not recorded in the manifest")),
    ]
    if man.get("operator"):
        items.append(Item("Made by", str(man["operator"])))
    if isinstance(budget, int) and not isinstance(budget, bool):
        items.append(Item("Budget (USD)", budget, "cents"))
    else:
        items.append(Item("Budget (USD)", "not recorded in the manifest"))
    items.append(Item("Paid (USD)", paid_cents, "cents"))
    if isinstance(budget, int) and not isinstance(budget, bool):
        items.append(Item("Unspent (USD)", budget - paid_cents, "cents"))
    items += [
        Item("Liquidated users", alloc.height + run.excluded.height, "count"),
        Item("Eligible users", alloc.height, "count"),
        Item("Users paid", run.payouts.height, "count"),
        Item("Excluded users", run.excluded.height, "count"),
        Item("Users at the floor", at.get(N.BOUND_FLOOR, 0), "count"),
        Item("Users at the cap", at.get(N.BOUND_CAP, 0), "count"),
        Item("Payout batches", n_batches, "count"),
        Item("Finance checks (allocator check-budget)", _verdict(checks)),
    ]
    items += [Item(f"Failed check: {c.name}", c.detail) for c in checks.failures]
    items.append(Item("manifest.json sha256", sha256_file(run.path / N.MANIFEST_FILE)))
    inputs = _section(man, "inputs")
    if run.data_dir is not None:
        items.append(Item("Data directory", str(run.data_dir)))
    for stem in N.INPUT_TABLES:
        meta = inputs.get(stem)
        if isinstance(meta, Mapping):
            items.append(Item(f"Input {stem}: file", str(meta.get("path", ""))))
            items.append(Item(f"Input {stem}: sha256", str(meta.get("sha256", ""))))
    outputs = _section(man, "outputs")
    items += [Item(f"{name} sha256", str(outputs.get(name, ""))) for name in OUTPUT_FILES]
    return items


def _batches(run: RunDir) -> Table:
    payouts = run.payouts
    grouped = (
        payouts.group_by(N.BATCH)
        .agg(pl.len().alias("users"), pl.col(AMOUNT_CENTS).sum().alias("cents"))
        .sort(N.BATCH)
    )
    schedule: dict[str, Mapping[str, Any]] = {}
    entries = run.manifest.get("payout_batches")
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, Mapping) and "number" in entry:
            schedule[str(entry["number"])] = entry

    def when(entry: Mapping[str, Any] | None, key: str) -> datetime | str:
        if entry is None:
            return "not in the manifest's schedule"
        value = entry.get(key)
        parsed = _parse_time(value)
        return parsed if parsed is not None else str(value)

    rows = []
    for batch, users, cents in grouped.iter_rows():
        entry = schedule.get(str(batch))
        rows.append(
            (batch, int(users), int(cents), when(entry, "scheduled_at"), when(entry, "due_at"))
        )
    return Table(
        sheet="Batches",
        part="batches",
        columns=(
            Column("Batch", "key", 10),
            Column("Users", "count", 12),
            Column("Paid (USD)", "cents", 20),
            Column("Scheduled (UTC)", "time", 20),
            Column("Due by (UTC)", "time", 20),
        ),
        rows=tuple(rows),
        total=("Total", payouts.height, int(payouts[AMOUNT_CENTS].sum()), "", ""),
    )


def _exclusions(run: RunDir) -> Table:
    excluded = run.excluded
    scenario: Scenario = run.scenario
    has_loss = N.LOSS_USD in excluded.columns
    codes = excluded[N.REASON].unique().to_list()
    unknown = sorted(str(c) for c in codes if c not in N.REASONS)
    rows = []
    total_loss: list[float] = []
    for reason in [*N.REASONS, *unknown]:
        part = excluded.filter(pl.col(N.REASON) == reason)
        losses = [float(x) for x in part[N.LOSS_USD].drop_nulls().to_list()] if has_loss else []
        total_loss += losses
        rows.append(
            (
                reason_words(reason, scenario.eligibility),
                reason,
                part.height,
                math.fsum(losses),
            )
        )
    return Table(
        sheet="Exclusions",
        part="exclusions",
        columns=(
            Column("Reason", "text", 40),
            Column("Code", "text", 24),
            Column("Users", "count", 12),
            Column("Loss (USD)", "usd", 22),
        ),
        rows=tuple(rows),
        total=("Total", "", excluded.height, math.fsum(total_loss)),
    )


def _user_regions(run: RunDir) -> pl.LazyFrame:
    """``user_id`` and ``region`` of the run's users input, refused unless it is the file the
    manifest names (and :func:`load_run` verified)."""
    assert run.data_dir is not None
    inputs = load_inputs(run.data_dir, validate=False)
    recorded = Path(run.manifest["inputs"][N.USERS_FILE]["path"])
    if Path(inputs.paths[N.USERS_FILE]).resolve() != recorded.resolve():
        raise InputError(
            f"the run's {N.USERS_FILE} file {recorded} is not the one its data directory "
            f"{run.data_dir} now holds ({inputs.paths[N.USERS_FILE]}); the inputs changed since "
            f"the run."
        )
    return inputs.users.select(N.USER_ID, N.REGION)


def _regions(run: RunDir) -> Table:
    alloc = run.allocations.lazy().select(N.USER_ID, N.VOUCHER_CENTS)
    grouped = (
        alloc.join(_user_regions(run), on=N.USER_ID, how="left")
        .group_by(N.REGION)
        .agg(
            pl.len().alias("users"),
            (pl.col(N.VOUCHER_CENTS) > 0).sum().alias("paid_users"),
            pl.col(N.VOUCHER_CENTS).sum().alias("cents"),
        )
        .sort(N.REGION, nulls_last=True)
        .collect()
    )
    rows = tuple(
        (NO_USER_RECORD if region is None else str(region), int(n), int(paid), int(cents))
        for region, n, paid, cents in grouped.iter_rows()
    )
    vouchers = run.allocations[N.VOUCHER_CENTS]
    return Table(
        sheet="By region",
        part="regions",
        columns=(
            Column("Region", "text", 18),
            Column("Eligible users", "count", 16),
            Column("Users paid", "count", 14),
            Column("Paid (USD)", "cents", 22),
        ),
        rows=rows,
        total=("Total", run.allocations.height, int((vouchers > 0).sum()), int(vouchers.sum())),
    )


def build_signoff(run_dir: str | Path) -> Signoff:
    """Read, verify and check a run directory and gather the tables of its sign-off.

    Parameters
    ----------
    run_dir
        A run directory written by ``allocator allocate``.

    Returns
    -------
    Signoff
        The summary, the payouts, and the batches, exclusions and regions tables.

    Raises
    ------
    InputError
        The run directory is missing, damaged or changed since its run, or its input files
        changed or are gone (nothing is written).
    """
    run = load_run(run_dir, inputs=True)
    checks = check_run_dir(run.path)
    payouts = run.payouts.select(N.USER_ID, AMOUNT_CENTS, N.BATCH, N.IDEMPOTENCY_KEY)
    paid = int(payouts[AMOUNT_CENTS].sum())
    batches = _batches(run)
    return Signoff(
        run=run,
        checks=checks,
        created=_created(run.manifest, run.scenario),
        summary=tuple(_summary(run, checks, paid, len(batches.rows))),
        payouts=payouts,
        tables=(batches, _exclusions(run), _regions(run)),
    )


# --------------------------------------------------------------------------------------------
# xlsx
# --------------------------------------------------------------------------------------------


class _Formats:
    """The workbook's cell formats, plain and bold (headers, total rows)."""

    def __init__(self, book: xlsxwriter.Workbook) -> None:
        num = {
            "count": COUNT_FORMAT,
            "cents": USD_FORMAT,
            "usd": USD_FORMAT,
            "key": ID_FORMAT,
            "time": TIME_FORMAT,
        }
        self.header = book.add_format({"bold": True, "bottom": 1})
        self.plain = {k: book.add_format({"num_format": v}) for k, v in num.items()}
        self.bold = {k: book.add_format({"num_format": v, "bold": True}) for k, v in num.items()}
        self.plain["text"] = book.add_format({})
        self.bold["text"] = book.add_format({"bold": True})


def _write_cell(ws: Any, row: int, col: int, value: Any, kind: Kind, fmt: Any) -> None:
    """One cell: numbers as numbers in their format, times as date-times, anything else as
    text (a table's label in a number column, a value the manifest lacks)."""
    if value is None or value == "":
        ws.write_blank(row, col, None, fmt)
    elif kind in ("count", "key") and isinstance(value, int) and not isinstance(value, bool):
        ws.write_number(row, col, value, fmt)
    elif kind == "cents" and isinstance(value, int) and not isinstance(value, bool):
        ws.write_number(row, col, value / CENTS_PER_USD, fmt)
    elif kind == "usd" and isinstance(value, float) and math.isfinite(value):
        ws.write_number(row, col, value, fmt)
    elif kind == "time" and isinstance(value, datetime):
        ws.write_datetime(row, col, value.astimezone(UTC), fmt)
    else:
        ws.write_string(row, col, str(value), fmt)


def _header(ws: Any, headers: Sequence[str], widths: Sequence[float], fmt: _Formats) -> None:
    for col, width in enumerate(widths):
        ws.set_column(col, col, width)
    ws.freeze_panes(1, 0)
    for col, text in enumerate(headers):
        ws.write_string(0, col, text, fmt.header)


def _write_summary(book: xlsxwriter.Workbook, items: Sequence[Item], fmt: _Formats) -> None:
    ws = book.add_worksheet(SHEETS[0])
    _header(ws, ("Item", "Value"), (40, 72), fmt)
    for row, item in enumerate(items, start=1):
        ws.write_string(row, 0, item.label)
        _write_cell(ws, row, 1, item.value, item.kind, fmt.plain[item.kind])


def _write_payouts(book: xlsxwriter.Workbook, payouts: pl.DataFrame, fmt: _Formats) -> None:
    ids = payouts[N.USER_ID]
    numeric_ids = bool(ids.is_between(-MAX_NUMERIC_ID, MAX_NUMERIC_ID).all())
    numeric_batch = payouts.schema[N.BATCH].is_integer()
    per_sheet = SHEET_ROWS - 1
    n_sheets = max(1, -(-payouts.height // per_sheet))
    id_fmt, usd_fmt = fmt.plain["key"], fmt.plain["cents"]
    for part in range(n_sheets):
        ws = book.add_worksheet(SHEETS[1] if part == 0 else f"{SHEETS[1]} {part + 1}")
        _header(ws, PAYOUT_COLUMNS, (14, 14, 8, 36), fmt)
        chunk = payouts.slice(part * per_sheet, per_sheet)
        write_number, write_string = ws.write_number, ws.write_string
        rows = zip(
            chunk[N.USER_ID].to_list(),
            chunk[AMOUNT_CENTS].to_list(),
            chunk[N.BATCH].to_list(),
            chunk[N.IDEMPOTENCY_KEY].to_list(),
        )
        for row, (uid, cents, batch, key) in enumerate(rows, start=1):
            if numeric_ids:
                write_number(row, 0, uid, id_fmt)
            else:
                write_string(row, 0, str(uid))
            write_number(row, 1, cents / CENTS_PER_USD, usd_fmt)
            if numeric_batch:
                write_number(row, 2, batch, id_fmt)
            else:
                write_string(row, 2, str(batch))
            write_string(row, 3, key)


def _write_table(book: xlsxwriter.Workbook, table: Table, fmt: _Formats) -> None:
    ws = book.add_worksheet(table.sheet)
    _header(ws, [c.header for c in table.columns], [c.width for c in table.columns], fmt)
    kinds = [c.kind for c in table.columns]
    for row, values in enumerate(table.rows, start=1):
        for col, (value, kind) in enumerate(zip(values, kinds)):
            _write_cell(ws, row, col, value, kind, fmt.plain[kind])
    if table.total is not None:
        row = len(table.rows) + 1
        for col, (value, kind) in enumerate(zip(table.total, kinds)):
            style = fmt.bold["text"] if col == 0 else fmt.bold[kind]
            _write_cell(ws, row, col, value, "text" if col == 0 else kind, style)


def write_xlsx(signoff: Signoff, fh: IO[bytes]) -> None:
    """Write the sign-off workbook to the binary file ``fh`` (see the module docstring)."""
    book = xlsxwriter.Workbook(
        fh,
        {
            "constant_memory": True,
            "strings_to_formulas": False,
            "strings_to_urls": False,
            "strings_to_numbers": False,
            "remove_timezone": True,
        },
    )
    try:
        book.set_properties(
            {
                "title": f"Sign-off: {signoff.run.scenario.name}",
                "subject": str(signoff.run.manifest.get("programme", "")),
                "created": signoff.created.replace(tzinfo=None),
            }
        )
        fmt = _Formats(book)
        _write_summary(book, signoff.summary, fmt)
        _write_payouts(book, signoff.payouts, fmt)
        for table in signoff.tables:
            _write_table(book, table, fmt)
    finally:
        book.close()


# --------------------------------------------------------------------------------------------
# csv
# --------------------------------------------------------------------------------------------


def _cents_text(cents: int) -> str:
    """Integer cents as ``1234.50`` (``-1234.50``): exact, two decimals, no separators."""
    whole, frac = divmod(abs(int(cents)), CENTS_PER_USD)
    return f"{'-' if cents < 0 else ''}{whole}.{frac:02d}"


def _csv_value(value: Any, kind: Kind) -> str:
    if value is None:
        return ""
    if kind == "cents" and isinstance(value, int) and not isinstance(value, bool):
        return _cents_text(value)
    if kind == "usd" and isinstance(value, float) and math.isfinite(value):
        return f"{value:.2f}"
    if kind in ("count", "key") and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if kind == "time" and isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return str(value)


def _csv_bytes(header: Sequence[str], rows: Sequence[Sequence[str]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue().encode("utf-8")


def _summary_csv(items: Sequence[Item]) -> bytes:
    return _csv_bytes(("item", "value"), [(i.label, _csv_value(i.value, i.kind)) for i in items])


def _table_csv(table: Table) -> bytes:
    kinds = [c.kind for c in table.columns]
    rows = [*table.rows, *([table.total] if table.total is not None else [])]
    return _csv_bytes(
        [c.header for c in table.columns],
        [[_csv_value(v, k) for v, k in zip(row, kinds)] for row in rows],
    )


def _payouts_csv(payouts: pl.DataFrame, fh: IO[bytes]) -> None:
    payouts.select(
        pl.col(N.USER_ID),
        cents_to_usd_expr(pl.col(AMOUNT_CENTS)).alias(PAYOUT_COLUMNS[1]),
        pl.col(N.BATCH),
        pl.col(N.IDEMPOTENCY_KEY),
    ).write_csv(fh, line_terminator="\n")


def write_csv_files(signoff: Signoff, paths: Sequence[Path]) -> list[Path]:
    """Write the payouts to ``paths[0]`` and the summary, batches, exclusions and regions to
    ``paths[1:]`` (:func:`output_paths`), all together or none."""
    parts = {t.part: t for t in signoff.tables}
    blobs = [_summary_csv(signoff.summary)] + [_table_csv(parts[p]) for p in CSV_PARTS[1:]]

    def writer(blob: bytes) -> Callable[[IO[bytes]], object]:
        return lambda fh: fh.write(blob)

    outputs: list[tuple[str | Path, Callable[[IO[bytes]], object]]] = [
        (paths[0], lambda fh: _payouts_csv(signoff.payouts, fh))
    ]
    outputs += [(path, writer(blob)) for path, blob in zip(paths[1:], blobs)]
    return atomic_write_all(outputs)


# --------------------------------------------------------------------------------------------
# the files
# --------------------------------------------------------------------------------------------


def output_paths(out: str | Path, fmt: str) -> tuple[Path, ...]:
    """The files an export to ``out`` writes: ``out`` alone for xlsx; for csv, ``out`` and
    ``<out without .csv>.<part>.csv`` for each of :data:`CSV_PARTS`."""
    out = Path(out)
    if fmt != "csv":
        return (out,)
    base = out.name[: -len(".csv")] if out.name.lower().endswith(".csv") else out.name
    return (out, *(out.with_name(f"{base}.{part}.csv") for part in CSV_PARTS))


def check_outputs(out: str | Path, fmt: str, *, force: bool = False) -> tuple[Path, ...]:
    """Refuse, before any work, an export that cannot or may not be written (exit 2).

    Returns
    -------
    tuple of Path
        The files the export will write (:func:`output_paths`).

    Raises
    ------
    InputError
        ``fmt`` is not one of :data:`EXPORT_FORMATS`; ``out`` is empty, a folder, in a folder
        that does not exist, or inside a run directory; or a file to write exists and ``force``
        is not given (the message names it).
    """
    if fmt not in EXPORT_FORMATS:
        raise InputError(f"--format must be one of {', '.join(EXPORT_FORMATS)}, not {fmt!r}.")
    refuse_output_in_run(out, "--out")
    paths = output_paths(out, fmt)
    folder = paths[0].parent
    if not folder.is_dir():
        raise InputError(
            f"--out {out}: the folder {folder} does not exist (or is not a folder); nothing was "
            f"written.",
            hint="create the folder first, or choose another --out.",
        )
    for path in paths:
        refuse_output_in_run(path, "--out")
        if path.is_dir():
            raise InputError(
                f"--out {out}: {path} is a folder; give the file to write, e.g. signoff.{fmt}."
            )
        if os.path.lexists(path) and not force:
            raise InputError(
                f"{path} already exists; refusing to replace it. Nothing was written.",
                hint="choose another --out, or add --force to replace it.",
            )
    return paths


def write_signoff(signoff: Signoff, paths: Sequence[Path], fmt: str) -> list[Path]:
    """Write ``signoff`` in ``fmt`` to ``paths`` (from :func:`check_outputs`), atomically."""
    if fmt == "xlsx":
        return atomic_write_all([(paths[0], lambda fh: write_xlsx(signoff, fh))])
    return write_csv_files(signoff, paths)


def export_run(
    run_dir: str | Path, out: str | Path, fmt: str = "xlsx", *, force: bool = False
) -> Export:
    """Export a run directory's sign-off as an xlsx workbook or csv files.

    Parameters
    ----------
    run_dir
        A run directory written by ``allocator allocate``.
    out
        The file to write (for csv, the payouts file; the other tables go beside it).
    fmt
        ``"xlsx"`` or ``"csv"``.
    force
        Replace files that exist; without it an existing file is refused.

    Returns
    -------
    Export
        The files written and the sign-off (``signoff.ok`` is whether every finance check
        passed: a failed check is stated in the summary, and the files are still written).

    Raises
    ------
    InputError
        See :func:`check_outputs` and :func:`build_signoff`; nothing is written.
    """
    paths = check_outputs(out, fmt, force=force)
    signoff = build_signoff(run_dir)
    written = write_signoff(signoff, paths, fmt)
    return Export(paths=tuple(written), signoff=signoff)
