"""Payout plan: who is paid how much, in which batch, when, under which idempotency key.

Amounts are integer cents throughout; the CSV shows them as USD strings with exactly two
decimals made from the integer (``600000 -> "6000.00"``), and reading parses them back to the
same integer without passing through a float.

Idempotency key
---------------
``sha256(f"{programme}:{user_id}")``, first 32 hex characters (128 bits). It names *the voucher a
user gets from a programme*, not a payment of some amount: if the payout job is retried, or the
allocation is rerun and amounts move by a cent, the payment system sees the same key for the same
user and refuses the second credit. A key that included the amount would let a rerun with a
changed amount pay the user twice. The programme is part of the key so that the same user can be
paid by another programme. A correction after payment is therefore an explicit adjustment, never a
rerun.

Rounds
------
A later round (``allocate --previous``) pays each user only what the round adds,
``delta_cents``, under the key ``sha256(f"{programme}:round-{k}:{user_id}")`` for round
k >= 2 (round 1 keeps the key above): one key per user per round, so the round's
top-up is a new payment and a re-sent one is still refused. Round :math:`k`'s window is round
1's moved by :math:`(k - 1)` times ``rounds.interval_hours``.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl

from allocator import names as N
from allocator.errors import InputError, ScenarioError
from allocator.runs.contract import cents_to_usd_expr, usd_text_to_cents_expr
from allocator.runs.hashing import sha256_bytes, sha256_digests
from allocator.runs.store import atomic_write
from allocator.settings.models import MAX_PAYOUT_HOURS, PayoutSpec

#: Column order of the payouts file.
PAYOUT_COLUMNS = (N.USER_ID, N.AMOUNT, N.BATCH, N.IDEMPOTENCY_KEY)
_HEADER = ",".join(PAYOUT_COLUMNS)
#: Batch times are whole seconds, so a batch needs a slot of at least one second.
_SLOT_UNIT = timedelta(seconds=1)
_US = b"\x1f"  # unit separator: never in a payouts file, so a line reads as one field
#: Integer USD part of an amount: at most 15 digits keeps cents inside int64.
_AMOUNT_RE = r"^(0|[1-9][0-9]{0,14})\.[0-9]{2}$"


@dataclass(frozen=True)
class Batch:
    """One payout batch: ``users`` users and ``cents`` cents, sent from ``scheduled_at`` and done
    by ``due_at`` (the start of the next batch's slot); times are UTC."""

    number: int
    users: int
    cents: int
    scheduled_at: datetime
    due_at: datetime

    def to_dict(self) -> dict[str, object]:
        return {
            "number": self.number,
            "users": self.users,
            "cents": self.cents,
            "scheduled_at": self.scheduled_at.isoformat(),
            "due_at": self.due_at.isoformat(),
        }


@dataclass(frozen=True, eq=False)
class Payouts:
    """The payout plan: ``frame`` has the columns of :data:`PAYOUT_COLUMNS`, one row per paid
    user in user id order; ``batches`` is the schedule. Users with zero cents are not paid and
    counted in ``zero_cent_users``."""

    programme: str
    frame: pl.DataFrame
    batches: tuple[Batch, ...]
    total_cents: int
    zero_cent_users: int

    @property
    def n_users(self) -> int:
        return self.frame.height

    def schedule_dicts(self) -> list[dict[str, object]]:
        """The batch schedule as JSON-ready dicts (for a run manifest)."""
        return [b.to_dict() for b in self.batches]


#: Hex characters of an idempotency key: 128 bits of the SHA-256.
KEY_HEX = 32


def key_prefix(programme: str, round_number: int = 1) -> str:
    """What an idempotency key hashes before the user id: ``"<programme>:"`` in round 1,
    ``"<programme>:round-<k>:"`` in round k >= 2."""
    return f"{programme}:" if round_number == 1 else f"{programme}:round-{int(round_number)}:"


def idempotency_key(programme: str, user_id: int, round_number: int = 1) -> str:
    """The payout key of one user in one programme and round (see the module docstring for why)."""
    return sha256_bytes(f"{key_prefix(programme, round_number)}{int(user_id)}".encode())[:KEY_HEX]


def idempotency_keys(programme: str, user_ids: np.ndarray, round_number: int = 1) -> pl.Series:
    """:func:`idempotency_key` of every user in ``user_ids`` at once.

    The ids are written as text by Polars (the same digits as ``str(int)``), each hashed by one
    ``hashlib`` call on bytes (no text formatting per user), and the digests turned into hex by
    Polars in one pass: about half the time of formatting and hashing user by user, which at a
    million users was seconds.
    """
    prefix = key_prefix(programme, round_number).encode()
    text = pl.Series(user_ids, dtype=pl.Int64).cast(pl.String).cast(pl.Binary).to_list()
    digests = pl.Series(sha256_digests(prefix, text), dtype=pl.Binary)
    return digests.bin.encode("hex").str.slice(0, KEY_HEX).alias(N.IDEMPOTENCY_KEY)


def _window(spec: PayoutSpec, shift_hours: float = 0.0) -> tuple[datetime, datetime]:
    bs = spec.batch_size
    if isinstance(bs, bool) or not isinstance(bs, int) or bs < 1:
        raise ScenarioError(
            f"payouts.batch_size must be a whole number >= 1, got {spec.batch_size!r}."
        )
    at = spec.announced_at
    if not isinstance(at, datetime) or at.tzinfo is None or at.utcoffset() is None:
        raise ScenarioError(
            f"payouts.announced_at must be a date-time with a time zone, got {at!r}."
        )
    for name in ("start_within_hours", "finish_within_hours"):
        h = getattr(spec, name)
        if isinstance(h, bool) or not isinstance(h, (int, float)) or not math.isfinite(h) or h < 0:
            raise ScenarioError(f"payouts.{name} must be a finite number of hours >= 0, got {h!r}.")
    if spec.finish_within_hours <= spec.start_within_hours:
        raise ScenarioError(
            f"payouts.finish_within_hours ({spec.finish_within_hours}) must be after "
            f"payouts.start_within_hours ({spec.start_within_hours}): there is no time to pay."
        )
    if spec.finish_within_hours > MAX_PAYOUT_HOURS:
        raise ScenarioError(
            f"payouts.finish_within_hours ({spec.finish_within_hours:g}) is more than "
            f"{MAX_PAYOUT_HOURS:,} hours (ten years) after the announcement; allowed: up to "
            f"{MAX_PAYOUT_HOURS:,}."
        )
    try:
        at = at.astimezone(UTC)
        return (
            at + timedelta(hours=spec.start_within_hours + shift_hours),
            at + timedelta(hours=spec.finish_within_hours + shift_hours),
        )
    except OverflowError:
        raise ScenarioError(
            f"payouts.announced_at ({spec.announced_at.isoformat()}) plus "
            f"{spec.finish_within_hours + shift_hours:g} hours is past the last date a payout "
            "can be scheduled (year 9999)."
        ) from None


def _schedule(
    sizes: np.ndarray, sums: np.ndarray, start: datetime, finish: datetime, spec: PayoutSpec
) -> tuple[Batch, ...]:
    n_batches = sizes.shape[0]
    if n_batches == 0:
        return ()
    slot = (finish - start) // n_batches // _SLOT_UNIT * _SLOT_UNIT  # whole seconds, rounded down
    if slot < _SLOT_UNIT:
        raise ScenarioError(
            f"{n_batches:,} payout batches of {spec.batch_size:,} users do not fit between "
            f"{start.isoformat()} and {finish.isoformat()}: each would get less than one second.",
            hint="raise payouts.batch_size or widen the window.",
        )
    return tuple(
        Batch(
            number=k + 1,
            users=int(sizes[k]),
            cents=int(sums[k]),
            scheduled_at=start + k * slot,
            due_at=start + (k + 1) * slot,
        )
        for k in range(n_batches)
    )


def plan_payouts(
    user_id: np.ndarray,
    cents: np.ndarray,
    spec: PayoutSpec,
    programme: str,
    *,
    round_number: int = 1,
    shift_hours: float = 0.0,
) -> Payouts:
    """Split the paid users into batches and schedule them.

    Users with a positive amount are sorted by user id and cut into consecutive batches of
    ``spec.batch_size``. The window runs from ``announced_at + start_within_hours`` (the first
    batch starts at that deadline) to ``announced_at + finish_within_hours``; it is cut into equal
    slots of whole seconds, one per batch, so the last batch is due by the finish deadline.

    Parameters
    ----------
    user_id
        Unique integer user ids.
    cents
        Voucher per user in integer cents (>= 0); zero means not paid.
    spec
        Batch size and the payout window.
    programme
        Programme name, part of every idempotency key.
    round_number
        The distribution round (:func:`key_prefix`): ``cents`` are then what the round adds.
    shift_hours
        How far the window moves after round 1's, in hours.

    Raises
    ------
    InputError
        Ids repeat, or amounts are negative or not integers.
    ScenarioError
        The payout settings are out of range, or the batches cannot fit in the window.
    """
    if not isinstance(programme, str) or not programme:
        raise ScenarioError(f"the programme name must be a non-empty string, got {programme!r}.")
    user_id = np.asarray(user_id)
    cents = np.asarray(cents)
    if user_id.ndim != 1 or user_id.shape != cents.shape:
        raise ValueError(
            f"user_id and cents must be 1-D of equal length: {user_id.shape}, {cents.shape}"
        )
    if user_id.shape[0] and not np.issubdtype(user_id.dtype, np.integer):
        raise InputError(f"column {N.USER_ID} must hold integers, got dtype {user_id.dtype}.")
    if cents.shape[0] and not np.issubdtype(cents.dtype, np.integer):
        raise InputError(
            f"column {N.VOUCHER_CENTS} must hold integer cents, got dtype {cents.dtype}."
        )
    user_id = user_id.astype(np.int64)
    cents = cents.astype(np.int64)
    neg = cents < 0
    if neg.any():
        i = int(np.flatnonzero(neg)[0])
        raise InputError(
            f"column {N.VOUCHER_CENTS} has {int(neg.sum())} negative amounts "
            f"(e.g. user_id {int(user_id[i])}: {int(cents[i])} cents); a voucher cannot be negative."
        )
    start, finish = _window(spec, shift_hours)

    paid = cents > 0
    order = np.argsort(user_id[paid], kind="stable")
    ids = user_id[paid][order]
    amounts = cents[paid][order]
    dup = ids[1:] == ids[:-1]
    if dup.any():
        raise InputError(
            f"column {N.USER_ID} repeats {int(dup.sum())} ids among paid users "
            f"(e.g. {int(ids[1:][dup][0])}); a user must be paid once."
        )
    m = ids.shape[0]
    bs = spec.batch_size
    starts = np.arange(0, m, bs)
    sizes = np.diff(np.append(starts, m))
    sums = np.add.reduceat(amounts, starts) if m else np.empty(0, dtype=np.int64)
    batches = _schedule(sizes, sums, start, finish, spec)

    keys = idempotency_keys(programme, ids, round_number)
    frame = pl.DataFrame(
        {
            N.USER_ID: pl.Series(ids, dtype=pl.Int64),
            "_cents": pl.Series(amounts, dtype=pl.Int64),
            N.BATCH: pl.Series(np.arange(m, dtype=np.int64) // bs + 1, dtype=pl.Int64),
            N.IDEMPOTENCY_KEY: pl.Series(keys, dtype=pl.String),
        }
    ).select(
        N.USER_ID, cents_to_usd_expr(pl.col("_cents")).alias(N.AMOUNT), N.BATCH, N.IDEMPOTENCY_KEY
    )
    return Payouts(
        programme=programme,
        frame=frame,
        batches=batches,
        total_cents=int(amounts.sum()),
        zero_cent_users=int((~paid).sum()),
    )


def write_payouts_csv(payouts: Payouts, path: str | Path) -> Path:
    """Write the payouts file: header ``user_id,amount,batch,idempotency_key``, ``\\n`` line
    endings, no index, no quoting (no field can hold a comma). The bytes depend only on the plan;
    the file is written aside and renamed into place, so readers never see half a file."""
    path = Path(path)
    frame = payouts.frame
    if tuple(frame.columns) != PAYOUT_COLUMNS:
        raise ValueError(
            f"payouts frame must have columns {PAYOUT_COLUMNS}, got {tuple(frame.columns)}"
        )
    atomic_write(
        path,
        lambda fh: frame.write_csv(
            fh, include_header=True, line_terminator="\n", quote_style="necessary"
        ),
    )
    return path


def _fail(path: Path, what: str, bad: pl.DataFrame, col: str, total: int) -> InputError:
    row = bad.row(0, named=True)
    return InputError(
        f"{path}: column {col}, line {row['_line']}: {row[col]!r} is {what} "
        f"({total:,} malformed rows in all)."
    )


def read_payouts_csv(path: str | Path, *, programme: str | None = None) -> pl.DataFrame:
    """Read a payouts file strictly and turn amounts into exact integer cents.

    Returns the file's columns (``user_id`` Int64, ``amount`` String as written, ``batch`` Int64,
    ``idempotency_key`` String) plus ``voucher_cents`` (Int64) parsed from the amount string by
    integer arithmetic. With ``programme`` given, every key must be the one
    :func:`idempotency_key` derives for that programme and user.

    Raises
    ------
    InputError
        Missing or unreadable file, wrong header, a line with the wrong number of fields, a bad
        value (the message names the file, the column and the line), or a repeated user id or key.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise InputError(f"{path}: payouts file not found.") from exc
    except OSError as exc:
        raise InputError(f"{path}: cannot read the payouts file ({exc.strerror}).") from exc
    if not data:
        raise InputError(f"{path}: empty file; expected the header {_HEADER!r}.")
    header = data.split(b"\n", 1)[0].removesuffix(b"\r").decode("utf-8", errors="replace")
    if header != _HEADER:
        raise InputError(f"{path}: line 1 is {header!r}; expected the header {_HEADER!r}.")
    if _US in data:
        line = data[: data.index(_US)].count(b"\n") + 1
        raise InputError(
            f"{path}: line {line} holds a control character (0x1f); expected {_HEADER}."
        )
    try:
        # One string per line: the field split below then knows each line's number.
        raw = pl.read_csv(
            io.BytesIO(data),
            has_header=False,
            skip_rows=1,
            separator=_US.decode(),
            quote_char=None,
            infer_schema=False,
            new_columns=["_text"],
        )
    except pl.exceptions.NoDataError:
        raw = pl.DataFrame({"_text": pl.Series([], dtype=pl.String)})
    except pl.exceptions.PolarsError as exc:
        raise InputError(f"{path}: cannot be read as UTF-8 text lines ({exc}).") from exc
    raw = raw.with_columns(
        pl.col("_text").fill_null(""),
        (pl.int_range(pl.len(), dtype=pl.Int64) + 2).alias("_line"),
    )
    fields = raw.filter(
        pl.col("_text").str.count_matches(",", literal=True) != len(PAYOUT_COLUMNS) - 1
    )
    if fields.height:
        row = fields.row(0, named=True)
        raise InputError(
            f"{path}: line {row['_line']} has {row['_text'].count(',') + 1} fields, expected "
            f"{len(PAYOUT_COLUMNS)} ({_HEADER}): {row['_text']!r} ({fields.height:,} such lines)."
        )
    df = raw.select(
        pl.col("_text")
        .str.split_exact(",", len(PAYOUT_COLUMNS) - 1)
        .struct.rename_fields(list(PAYOUT_COLUMNS)),
        "_line",
    ).unnest("_text")

    checks = (
        (N.USER_ID, r"^-?[0-9]{1,19}$", "not an integer user id"),
        (N.AMOUNT, _AMOUNT_RE, "not a USD amount with exactly two decimals (e.g. 6000.00)"),
        (N.BATCH, r"^[1-9][0-9]{0,9}$", "not a batch number >= 1"),
        (N.IDEMPOTENCY_KEY, r"^[0-9a-f]{32}$", "not a 32-character lowercase hex key"),
    )
    for col, pattern, what in checks:
        bad = df.filter(~pl.col(col).str.contains(pattern))
        if bad.height:
            raise _fail(path, what, bad, col, bad.height)

    big = df.filter(pl.col(N.USER_ID).cast(pl.Int64, strict=False).is_null())
    if big.height:
        raise _fail(path, "outside the 64-bit integer range", big, N.USER_ID, big.height)
    out = df.select(
        pl.col(N.USER_ID).cast(pl.Int64),
        pl.col(N.AMOUNT),
        usd_text_to_cents_expr(pl.col(N.AMOUNT)).alias(N.VOUCHER_CENTS),
        pl.col(N.BATCH).cast(pl.Int64),
        pl.col(N.IDEMPOTENCY_KEY),
        pl.col("_line"),
    )
    for col in (N.USER_ID, N.IDEMPOTENCY_KEY):
        if out[col].n_unique() == out.height:
            continue
        again = out.filter(~pl.col(col).is_first_distinct()).with_columns(
            pl.col(col).cast(pl.String)
        )
        what = "a repeat of an earlier line (a user must be paid once)"
        raise _fail(path, what, again, col, again.height)
    if programme is not None:
        expected = [idempotency_key(programme, u) for u in out[N.USER_ID].to_list()]
        wrong = out.filter(pl.col(N.IDEMPOTENCY_KEY) != pl.Series(expected, dtype=pl.String))
        if wrong.height:
            what = f"not the key of this user in programme {programme!r}"
            raise _fail(path, what, wrong, N.IDEMPOTENCY_KEY, wrong.height)
    return out.drop("_line")
