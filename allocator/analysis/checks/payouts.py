r"""Payouts: one row per paid user with the allocation's amount, batches and idempotency keys, the
keys recomputed from the contract's formula, and the batches against the manifest's schedule.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import polars as pl

from allocator import names as N
from allocator.analysis.checks.runfiles import (
    Result,
    RunFiles,
    Unavailable,
    duplicates,
    examples,
    manifest_number,
)
from allocator.kernel.money import format_cents
from allocator.runs.contract import AMOUNT_CENTS, PROGRAMME_ANNOUNCEMENTS

#: Keys of one entry of ``manifest["payout_batches"]`` (:meth:`allocator.vouchers.payouts.Batch.to_dict`).
BATCH_KEYS = ("number", "users", "cents", "scheduled_at", "due_at")


#: Hex characters of an idempotency key (128 bits of the SHA-256).
KEY_HEX_CHARS = 32


def paid_column(r: RunFiles) -> str:
    """The allocations column payouts.csv pays: the voucher in round 1, from round 2 on what the
    round adds to it (``delta_cents``)."""
    return N.DELTA_CENTS if r.later_round else N.VOUCHER_CENTS


def check_payout_rows(r: RunFiles) -> Result:
    p, a = r.payouts, r.allocations
    dup = duplicates(p)
    users = a.filter(pl.col(paid_column(r)) > 0).select(N.USER_ID).unique()
    paid_users = p.select(N.USER_ID).unique()
    unpaid = users.join(paid_users, on=N.USER_ID, how="anti").sort(N.USER_ID)
    stray = paid_users.join(users, on=N.USER_ID, how="anti").sort(N.USER_ID)
    problems = []
    if dup.height:
        problems.append(f"{dup.height:,} user(s) with more than one payout row, " + examples(dup))
    if unpaid.height:
        problems.append(
            f"{unpaid.height:,} allocated user(s) without a payout row, " + examples(unpaid)
        )
    if stray.height:
        problems.append(
            f"{stray.height:,} payout row(s) for users not allocated a positive voucher, "
            + examples(stray)
        )
    if problems:
        return False, "; ".join(problems)
    what = "a positive top-up this round" if r.later_round else "a positive voucher"
    return True, f"one payout row per allocated user with {what} ({p.height:,})"


def check_payout_amounts(r: RunFiles) -> Result:
    col = paid_column(r)
    p = r.payouts.select(N.USER_ID, AMOUNT_CENTS)
    a = r.allocations.select(N.USER_ID, col)
    joined = a.join(p, on=N.USER_ID, how="inner")
    bad = joined.filter(pl.col(AMOUNT_CENTS) != pl.col(col)).sort(N.USER_ID)
    paid_total = int(r.payouts[AMOUNT_CENTS].sum())
    allocated = int(r.allocations[col].sum())
    problems = []
    if bad.height:
        problems.append(f"{bad.height:,} payout(s) differ from the allocation, " + examples(bad))
    if paid_total != allocated:
        problems.append(
            f"payouts add up to {format_cents(paid_total)} USD, allocations ({col}) to "
            f"{format_cents(allocated)} USD"
        )
    if problems:
        return False, "; ".join(problems)
    return (
        True,
        f"every payout equals its allocation to the cent (total {format_cents(paid_total)} USD)",
    )


def check_payout_keys(r: RunFiles) -> Result:
    p = r.payouts
    problems = []
    for col in (N.BATCH, N.IDEMPOTENCY_KEY):
        empty = p.filter(
            pl.col(col).is_null() | (pl.col(col).cast(pl.String).str.strip_chars() == "")
        )
        if empty.height:
            problems.append(
                f"{empty.height:,} row(s) without a {col}, "
                + examples(empty.select(N.USER_ID, col))
            )
    keys = p.filter(pl.col(N.IDEMPOTENCY_KEY).is_not_null())
    dup = keys.group_by(N.IDEMPOTENCY_KEY).len().filter(pl.col("len") > 1).sort(N.IDEMPOTENCY_KEY)
    if dup.height:
        problems.append(f"{dup.height:,} idempotency key(s) used more than once, " + examples(dup))
    if problems:
        return False, "; ".join(problems)
    n_batches = p[N.BATCH].n_unique()
    return True, f"every payout has a batch ({n_batches:,} batches) and a unique idempotency key"


def payout_key(programme: str, user_id: int, round_number: int = 1) -> str:
    """The idempotency key the run directory contract gives one user of one programme.

    Parameters
    ----------
    programme
        ``manifest["programme"]``.
    user_id
        The user's id.
    round_number
        The distribution round (``manifest["round"]["number"]``, 1 without one).

    Returns
    -------
    str
        ``sha256(f"{programme}:{user_id}")`` in round 1 and
        ``sha256(f"{programme}:round-{k}:{user_id}")`` in round k >= 2, as lowercase
        hex, first :data:`KEY_HEX_CHARS` characters.

    Notes
    -----
    :func:`allocator.vouchers.payouts.idempotency_key` computes the same; the formula is written out
    again so that the check pins the documented contract. Were the writer's function changed
    (say, to include the amount, which would let a rerun pay a user twice), a check calling it
    would agree with every run it wrote; this one would not.
    """
    middle = "" if round_number == 1 else f"round-{int(round_number)}:"
    text = f"{programme}:{middle}{int(user_id)}"
    return hashlib.sha256(text.encode()).hexdigest()[:KEY_HEX_CHARS]


def _key_formula(programme: str, round_number: int) -> str:
    middle = "" if round_number == 1 else f"round-{round_number}:"
    return f"sha256('{programme}:{middle}<user_id>')[:{KEY_HEX_CHARS}]"


def check_idempotency_keys(r: RunFiles) -> Result:
    programme = r.section("programme")
    if not isinstance(programme, str) or not programme:
        raise Unavailable(f"{N.MANIFEST_FILE} programme is not a non-empty string: {programme!r}")
    p = r.payouts
    k = r.round
    expected = pl.Series(
        "expected",
        [payout_key(programme, u, k) for u in p[N.USER_ID].to_list()],
        dtype=pl.String,
    )
    stated = p[N.IDEMPOTENCY_KEY].cast(pl.String)
    wrong = (
        p.select(N.USER_ID, N.IDEMPOTENCY_KEY)
        .with_columns(expected)
        .filter((stated != expected).fill_null(True))
    )
    if wrong.height:
        return False, (
            f"{wrong.height:,} payout(s) whose idempotency key is not "
            f"{_key_formula(programme, k)}, " + examples(wrong)
        )
    return True, f"all {p.height:,} keys are {_key_formula(programme, k)}"


@dataclass(frozen=True)
class _Batch:
    number: int
    users: int
    cents: int
    scheduled_at: datetime
    due_at: datetime


def _timestamp(value: Any, where: str) -> datetime:
    if isinstance(value, str):
        try:
            at = datetime.fromisoformat(value)
        except ValueError:
            at = None
        if at is not None and at.utcoffset() is not None:
            return at
    raise Unavailable(f"{N.MANIFEST_FILE} {where} is not a date-time with a time zone: {value!r}")


def _whole(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise Unavailable(f"{N.MANIFEST_FILE} {where} is not a whole number: {value!r}")
    return value


def _schedule(r: RunFiles) -> list[_Batch]:
    """``manifest["payout_batches"]``, every entry complete and typed."""
    entries = r.section("payout_batches")
    if not isinstance(entries, list):
        raise Unavailable(f"{N.MANIFEST_FILE} payout_batches is not a list")
    out = []
    for k, entry in enumerate(entries):
        where = f"payout_batches[{k}]"
        if not isinstance(entry, dict) or any(key not in entry for key in BATCH_KEYS):
            raise Unavailable(f"{N.MANIFEST_FILE} {where} lacks one of {', '.join(BATCH_KEYS)}")
        out.append(
            _Batch(
                number=_whole(entry["number"], f"{where}.number"),
                users=_whole(entry["users"], f"{where}.users"),
                cents=_whole(entry["cents"], f"{where}.cents"),
                scheduled_at=_timestamp(entry["scheduled_at"], f"{where}.scheduled_at"),
                due_at=_timestamp(entry["due_at"], f"{where}.due_at"),
            )
        )
    return out


def check_payout_batches(r: RunFiles) -> Result:
    batches = _schedule(r)
    size = _whole(r.section("scenario", "payouts", "batch_size"), "scenario.payouts.batch_size")
    p = r.payouts
    if p.schema[N.BATCH] != pl.Int64:
        return False, f"{N.PAYOUTS_FILE}: column {N.BATCH} does not hold whole batch numbers"
    problems = []
    numbers = [b.number for b in batches]
    if numbers != list(range(1, len(batches) + 1)):
        problems.append(f"the manifest's batches are numbered {numbers[:5]}, not 1, 2, ...")
    too_big = [b for b in batches if not 1 <= b.users <= size]
    if too_big:
        problems.append(
            f"{len(too_big):,} scheduled batch(es) with a size outside 1..{size:,} "
            f"(payouts.batch_size), e.g. batch {too_big[0].number} of {too_big[0].users:,} users"
        )
    schedule = pl.DataFrame(
        {
            N.BATCH: [b.number for b in batches],
            "scheduled_users": [b.users for b in batches],
            "scheduled_cents": [b.cents for b in batches],
        },
        schema={N.BATCH: pl.Int64, "scheduled_users": pl.Int64, "scheduled_cents": pl.Int64},
    )
    stray = p.join(schedule, on=N.BATCH, how="anti").sort(N.USER_ID)
    if stray.height:
        problems.append(
            f"{stray.height:,} payout(s) in a batch the manifest does not schedule, "
            + examples(stray.select(N.USER_ID, N.BATCH))
        )
    actual = p.group_by(N.BATCH).agg(
        pl.len().cast(pl.Int64).alias("users"), pl.col(AMOUNT_CENTS).sum().alias("cents")
    )
    both = schedule.join(actual, on=N.BATCH, how="left").with_columns(
        pl.col("users").fill_null(0), pl.col("cents").fill_null(0)
    )
    differs = (pl.col("users") != pl.col("scheduled_users")) | (
        pl.col("cents") != pl.col("scheduled_cents")
    )
    off = both.filter(differs).sort(N.BATCH)
    if off.height:
        problems.append(
            f"{off.height:,} batch(es) whose payouts differ from the manifest's schedule, "
            + examples(off)
        )
    if problems:
        return False, "; ".join(problems)
    return True, (
        f"{p.height:,} payouts in {len(batches):,} batch(es) of at most {size:,}, each with "
        "the users and cents of the manifest's schedule"
    )


def check_payout_schedule(r: RunFiles) -> Result:
    batches = _schedule(r)
    announced = _timestamp(
        r.section("scenario", "payouts", "announced_at"), "scenario.payouts.announced_at"
    )
    hours = {}
    for key in ("start_within_hours", "finish_within_hours"):
        h = manifest_number(r, "scenario", "payouts", key)
        if not math.isfinite(h) or h < 0:
            raise Unavailable(f"{N.MANIFEST_FILE} scenario.payouts.{key} is not >= 0: {h!r}")
        hours[key] = h
    published = PROGRAMME_ANNOUNCEMENTS.get(str(r.manifest.get("programme")))
    if published is not None and announced != datetime.fromisoformat(published):
        return False, (
            f"scenario.payouts.announced_at is {announced.isoformat()}, not the announcement of "
            f"programme {r.manifest['programme']!r} ({published}): the schedule is measured "
            "from the programme's public announcement"
        )
    # round k's window is round 1's moved by (k - 1) intervals
    shift = 0.0
    if r.later_round:
        shift = (r.round - 1) * manifest_number(r, "scenario", "rounds", "interval_hours")
        if not (math.isfinite(shift) and shift > 0):
            raise Unavailable(f"{N.MANIFEST_FILE} scenario.rounds.interval_hours is not > 0")
    start_by = announced + timedelta(hours=hours["start_within_hours"] + shift)
    finish_by = announced + timedelta(hours=hours["finish_within_hours"] + shift)
    if not batches:
        return True, "no batches to schedule"
    problems = []
    early = [b for b in batches if b.scheduled_at < announced]
    if early:
        problems.append(
            f"{len(early):,} batch(es) scheduled before the announcement "
            f"({announced.isoformat()}), e.g. batch {early[0].number} at "
            f"{early[0].scheduled_at.isoformat()}"
        )
    first = min(batches, key=lambda b: b.scheduled_at)
    if first.scheduled_at > start_by:
        problems.append(
            f"the first batch starts at {first.scheduled_at.isoformat()}, after "
            f"{start_by.isoformat()} (announcement + {hours['start_within_hours'] + shift:g} h)"
        )
    late = [b for b in batches if b.due_at > finish_by]
    if late:
        problems.append(
            f"{len(late):,} batch(es) due after {finish_by.isoformat()} (announcement + "
            f"{hours['finish_within_hours'] + shift:g} h), e.g. batch {late[0].number} due "
            f"{late[0].due_at.isoformat()}"
        )
    backwards = [b for b in batches if b.due_at <= b.scheduled_at]
    if backwards:
        problems.append(
            f"{len(backwards):,} batch(es) due no later than they are scheduled, e.g. batch "
            f"{backwards[0].number}"
        )
    if problems:
        return False, "; ".join(problems)
    last = max(b.due_at for b in batches)
    return True, (
        f"batches from {first.scheduled_at.isoformat()} (start by {start_by.isoformat()}) "
        f"to {last.isoformat()} (finish by {finish_by.isoformat()})"
    )
