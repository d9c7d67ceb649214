"""The two input files of a later distribution round: appeals and redemptions.

Both may be CSV (UTF-8, a header line, comma-separated) or Parquet, chosen by the file's
suffix. Every value is checked here, before anything is computed; a bad file is an
:class:`~allocator.errors.InputError` (exit 2) whose message names the file, the column, the line
(CSV) or row (Parquet) and shows an example of a good row.

Appeals (``--appeals FILE``)
    ``user_id`` (integer), ``decision`` (``reinstate``, ``uphold`` or ``correct``), an optional
    ``note`` (text: why, e.g. ``snapshot disputed``) and optional corrected values, each its own
    column and empty where the appeal does not correct it: ``gross_loss_usd`` (the counted loss
    before any depeg netting, >= 0), ``net_assets_usd`` (the snapshot's net assets, any finite
    number), ``depeg_comp_usd`` (>= 0), ``kyc_status`` (``verified``, ``pending``,
    ``unverified``) and ``region`` (two upper-case letters). One row per user; ``uphold`` corrects
    nothing and ``correct`` corrects at least one value.

Redemptions (``--redemptions FILE``)
    ``idempotency_key`` (the payout's key in an earlier round's payouts.csv), ``user_id`` (the
    user that payout paid) and ``redeemed`` (``true`` or ``false``: claimed by the deadline or
    not). One row per voucher; vouchers it does not name stay outstanding.
"""

from __future__ import annotations

import difflib
import math
import re
from pathlib import Path

import polars as pl

from allocator import names as N
from allocator.errors import InputError

#: A good file of each kind, quoted on one line in the messages (the paragraph stays one).
APPEALS_EXAMPLE = (
    "the header 'user_id,decision,net_assets_usd,note' and rows such as "
    "'10000043,correct,1200.50,snapshot disputed' or '10000885,reinstate,,missing from the "
    "snapshot'"
)
REDEMPTIONS_EXAMPLE = (
    "the header 'idempotency_key,user_id,redeemed' and rows such as "
    "'3f1c0a9e5b7d2c4e8a6f1b3d5c7e9a0b,10000043,true'"
)
#: Columns of an appeals file: the required ones, then the optional.
APPEALS_REQUIRED = (N.USER_ID, N.DECISION)
APPEALS_OPTIONAL = (N.NOTE, *N.CORRECTABLE)
REDEMPTIONS_COLUMNS = (N.IDEMPOTENCY_KEY, N.USER_ID, N.REDEEMED)

_INT = re.compile(r"^-?[0-9]{1,19}$")
_KEY = re.compile(r"^[0-9a-f]{32}$")
_REGION = re.compile(r"^[A-Z]{2}$")
_BOOL_TEXT = {"true": True, "false": False, "1": True, "0": False, "yes": True, "no": False}
_ROW = "_row"


def _raw(path: Path, what: str, example: str) -> tuple[pl.DataFrame, bool]:
    """The file as a frame (CSV: every value text, empty values null) and whether it is CSV."""
    hint = f"for example (CSV): {example}"
    if not path.is_file():
        why = "is a directory" if path.is_dir() else "does not exist"
        raise InputError(f"{path}: the {what} file {why}.", hint=hint)
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            data = path.read_bytes()
            try:
                data.decode("utf-8")
            except UnicodeDecodeError as exc:
                line = data[: exc.start].count(b"\n") + 1
                raise InputError(
                    f"{path}: line {line} is not UTF-8 text; the {what} file must be UTF-8.",
                    hint=hint,
                ) from None
            if not data.strip():
                raise InputError(
                    f"{path}: the {what} file is empty (not even a header).", hint=hint
                )
            frame = pl.read_csv(data, infer_schema=False)
            return frame, True
        if suffix == ".parquet":
            return pl.read_parquet(path), False
    except InputError:
        raise
    except (pl.exceptions.PolarsError, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(
            f"{path}: the {what} file cannot be read ({first[:200]}).", hint=hint
        ) from None
    raise InputError(
        f"{path}: the {what} file must end in .csv or .parquet, not {path.suffix or '(none)'}.",
        hint=hint,
    )


def _check_columns(
    frame: pl.DataFrame,
    path: Path,
    what: str,
    required: tuple[str, ...],
    optional: tuple[str, ...],
    example: str,
) -> None:
    allowed = (*required, *optional)
    for col in frame.columns:
        if col not in allowed:
            close = difflib.get_close_matches(col, allowed, n=1)
            guess = f" (did you mean {close[0]!r}?)" if close else ""
            raise InputError(
                f"{path}: unknown column {col!r}{guess}; an {what} file has the columns "
                f"{', '.join(required)} and optionally {', '.join(optional) or 'nothing else'}.",
                hint=f"for example (CSV): {example}",
            )
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise InputError(
            f"{path}: no column {missing[0]!r}; an {what} file needs {', '.join(required)} "
            f"(found {', '.join(frame.columns) or 'no column'}).",
            hint=f"for example (CSV): {example}",
        )


def _where(row: int, csv: bool) -> str:
    # a CSV's first data line is line 2, after the header
    return f"line {row + 2}" if csv else f"row {row + 1}"


def _bad(
    path: Path, col: str, row: int, csv: bool, value: object, want: str, example: str, n: int
) -> InputError:
    more = f" ({n:,} rows in all)" if n > 1 else ""
    return InputError(
        f"{path}: column {col!r}, {_where(row, csv)}: {value!r} is not {want}{more}.",
        hint=f"for example (CSV): {example}",
    )


def _parse(
    frame: pl.DataFrame,
    col: str,
    csv: bool,
    path: Path,
    example: str,
    *,
    kind: str,
    allowed: tuple[str, ...] = (),
    required: bool = False,
) -> pl.Series:
    """One column typed (``kind``: int, float, nonneg, bool, key, code, region, text), every
    value checked; a null where ``required`` is an error, otherwise it stays null."""
    raw = frame[col]
    values = raw.to_list()
    out: list[object] = []
    bad_rows: list[int] = []
    want = {
        "int": "a whole number (e.g. 10000043)",
        "float": "a finite number (e.g. 1200.50)",
        "nonneg": "a finite amount >= 0 (e.g. 1200.50)",
        "bool": "true or false",
        "key": "a 32-character lowercase hex idempotency key",
        "code": "one of " + ", ".join(allowed),
        "region": "two upper-case letters (e.g. DE)",
        "text": "text",
    }[kind]
    for i, v in enumerate(values):
        if isinstance(v, str) and csv:
            v = v.strip()
            if v == "":
                v = None
        if v is None:
            if required:
                bad_rows.append(i)
            out.append(None)
            continue
        parsed = _value(v, kind, allowed)
        if parsed is _INVALID:
            bad_rows.append(i)
            out.append(None)
        else:
            out.append(parsed)
    if bad_rows:
        row = bad_rows[0]
        shown = values[row]
        if shown is None:
            raise InputError(
                f"{path}: column {col!r}, {_where(row, csv)} is empty; {want} is required"
                + (f" ({len(bad_rows):,} rows in all)." if len(bad_rows) > 1 else "."),
                hint=f"for example (CSV): {example}",
            )
        raise _bad(path, col, row, csv, shown, want, example, len(bad_rows))
    dtype = {
        "int": pl.Int64,
        "float": pl.Float64,
        "nonneg": pl.Float64,
        "bool": pl.Boolean,
    }.get(kind, pl.String)
    return pl.Series(col, out, dtype=dtype)


class _Invalid:
    pass


_INVALID = _Invalid()


def _value(v: object, kind: str, allowed: tuple[str, ...]) -> object:
    if kind == "int":
        if isinstance(v, bool):
            return _INVALID
        if isinstance(v, int):
            return v if -(2**63) <= v < 2**63 else _INVALID
        if isinstance(v, str) and _INT.match(v):
            n = int(v)
            return n if -(2**63) <= n < 2**63 else _INVALID
        return _INVALID
    if kind in ("float", "nonneg"):
        if isinstance(v, bool):
            return _INVALID
        if isinstance(v, (int, float)):
            x = float(v)
        elif isinstance(v, str):
            try:
                x = float(v)
            except ValueError:
                return _INVALID
        else:
            return _INVALID
        if not math.isfinite(x) or (kind == "nonneg" and x < 0):
            return _INVALID
        return x
    if kind == "bool":
        if isinstance(v, bool):
            return v
        if isinstance(v, str):
            return _BOOL_TEXT.get(v.strip().lower(), _INVALID)
        return _INVALID
    if not isinstance(v, str):
        return _INVALID
    if kind == "key":
        return v if _KEY.match(v) else _INVALID
    if kind == "code":
        text = v.strip().lower()
        return text if text in allowed else _INVALID
    if kind == "region":
        return v if _REGION.match(v) else _INVALID
    # free text: one line of printable characters (a note is quoted in explanations)
    if any(ord(ch) < 32 and ch != "\t" for ch in v):
        return _INVALID
    return v


def _duplicates(frame: pl.DataFrame, col: str, path: Path, csv: bool, what: str) -> None:
    again = frame.with_row_index(_ROW).filter(~pl.col(col).is_first_distinct())
    if again.height:
        row = again.row(0, named=True)
        first = frame.with_row_index(_ROW).filter(pl.col(col) == row[col]).row(0, named=True)
        raise InputError(
            f"{path}: {col} {row[col]!r} appears twice ({_where(first[_ROW], csv)} and "
            f"{_where(row[_ROW], csv)}; {again.height:,} repeats in all): {what}.",
            hint="merge the rows into one",
        )


def read_appeals(path: str | Path) -> pl.DataFrame:
    """An appeals file, checked: columns ``user_id`` Int64, ``decision`` String, ``note`` String
    (empty when not given) and every correctable column (null where not corrected), in the order
    of :data:`allocator.runs.contract.APPEALS_SCHEMA`, sorted by user id.

    Raises
    ------
    InputError
        The file cannot be read, has an unknown or missing column, a bad value, a user twice, an
        ``uphold`` that corrects a value or a ``correct`` that corrects none.
    """
    path = Path(path)
    frame, csv = _raw(path, "appeals", APPEALS_EXAMPLE)
    _check_columns(frame, path, "appeals", APPEALS_REQUIRED, APPEALS_OPTIONAL, APPEALS_EXAMPLE)
    ex = APPEALS_EXAMPLE
    kinds = {
        N.GROSS_LOSS_USD: ("nonneg", ()),
        N.NET_ASSETS_USD: ("float", ()),
        N.DEPEG_COMP_USD: ("nonneg", ()),
        N.KYC_STATUS: ("code", N.KYC_STATUSES),
        N.REGION: ("region", ()),
    }
    cols: dict[str, pl.Series] = {
        N.USER_ID: _parse(frame, N.USER_ID, csv, path, ex, kind="int", required=True),
        N.DECISION: _parse(
            frame,
            N.DECISION,
            csv,
            path,
            ex,
            kind="code",
            allowed=N.APPEAL_DECISIONS,
            required=True,
        ),
    }
    for col, (kind, allowed) in kinds.items():
        if col in frame.columns:
            cols[col] = _parse(frame, col, csv, path, ex, kind=kind, allowed=allowed)
        else:
            dtype = pl.String if kind in ("code", "region") else pl.Float64
            cols[col] = pl.Series(col, [None] * frame.height, dtype=dtype)
    if N.NOTE in frame.columns:
        cols[N.NOTE] = _parse(frame, N.NOTE, csv, path, ex, kind="text").fill_null("")
    else:
        cols[N.NOTE] = pl.Series(N.NOTE, [""] * frame.height, dtype=pl.String)
    out = pl.DataFrame(cols)
    _duplicates(out, N.USER_ID, path, csv, "one appeal per user")
    corrected = pl.sum_horizontal(pl.col(c).is_not_null().cast(pl.Int32) for c in N.CORRECTABLE)
    checks = (
        (
            (pl.col(N.DECISION) == N.DECISION_UPHOLD) & (corrected > 0),
            "an 'uphold' keeps the earlier decision, so it corrects no value; use 'correct'",
        ),
        (
            (pl.col(N.DECISION) == N.DECISION_CORRECT) & (corrected == 0),
            f"a 'correct' must give at least one corrected value ({', '.join(N.CORRECTABLE)})",
        ),
    )
    indexed = out.with_row_index(_ROW)
    for cond, why in checks:
        bad = indexed.filter(cond)
        if bad.height:
            row = bad.row(0, named=True)
            raise InputError(
                f"{path}: {_where(row[_ROW], csv)} (user {row[N.USER_ID]}, decision "
                f"{row[N.DECISION]!r}): {why} ({bad.height:,} such rows).",
                hint=f"for example (CSV): {ex}",
            )
    order = [N.USER_ID, N.DECISION, *N.CORRECTABLE, N.NOTE]
    return out.select(order).sort(N.USER_ID)


def read_redemptions(path: str | Path) -> pl.DataFrame:
    """A redemptions file, checked: ``idempotency_key`` String, ``user_id`` Int64 and
    ``redeemed`` Boolean, in file order.

    Raises
    ------
    InputError
        The file cannot be read, has an unknown or missing column, a bad value or a key twice.
    """
    path = Path(path)
    ex = REDEMPTIONS_EXAMPLE
    frame, csv = _raw(path, "redemptions", ex)
    _check_columns(frame, path, "redemptions", REDEMPTIONS_COLUMNS, (), ex)
    out = pl.DataFrame(
        {
            N.IDEMPOTENCY_KEY: _parse(
                frame, N.IDEMPOTENCY_KEY, csv, path, ex, kind="key", required=True
            ),
            N.USER_ID: _parse(frame, N.USER_ID, csv, path, ex, kind="int", required=True),
            N.REDEEMED: _parse(frame, N.REDEEMED, csv, path, ex, kind="bool", required=True),
        }
    )
    _duplicates(out, N.IDEMPOTENCY_KEY, path, csv, "one row per voucher")
    return out
