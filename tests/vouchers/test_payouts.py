"""Payout plan, idempotency keys and the payouts CSV (exact cents, strict reading)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from allocator import names as N
from allocator.errors import InputError, ScenarioError
from allocator.settings.models import PayoutSpec
from allocator.vouchers.payouts import (
    PAYOUT_COLUMNS,
    idempotency_key,
    plan_payouts,
    read_payouts_csv,
    write_payouts_csv,
)

PROGRAMME = "test-programme"
UTC = UTC


@st.composite
def paid_users(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    n = draw(st.integers(min_value=0, max_value=60))
    ids = draw(st.lists(st.integers(-(2**63), 2**63 - 1), min_size=n, max_size=n, unique=True))
    amounts = st.one_of(
        st.integers(0, 1000), st.integers(0, 10**15 - 1), st.sampled_from([5, 600000])
    )
    cents = draw(st.lists(amounts, min_size=n, max_size=n))
    return np.array(ids, dtype=np.int64), np.array(cents, dtype=np.int64)


def _usd(cents: int) -> str:
    # Independent formatting through Decimal.
    return str((Decimal(cents) / 100).quantize(Decimal("0.01")))


@given(paid_users(), st.integers(1, 7))
def test_cents_round_trip_through_the_csv_exactly(tmp_path_factory, users, batch_size: int) -> None:
    ids, cents = users
    path = tmp_path_factory.mktemp("p") / "payouts.csv"
    plan = plan_payouts(ids, cents, PayoutSpec(batch_size=batch_size), PROGRAMME)
    write_payouts_csv(plan, path)
    back = read_payouts_csv(path, programme=PROGRAMME)

    paid = {int(u): int(c) for u, c in zip(ids, cents) if c > 0}
    assert dict(zip(back[N.USER_ID].to_list(), back[N.VOUCHER_CENTS].to_list())) == paid
    assert back[N.AMOUNT].to_list() == [_usd(paid[u]) for u in back[N.USER_ID].to_list()]
    assert plan.total_cents == sum(paid.values()) == int(back[N.VOUCHER_CENTS].sum() or 0)
    assert plan.zero_cent_users == int((cents == 0).sum())
    assert back.select(PAYOUT_COLUMNS).equals(plan.frame)


def test_amount_examples() -> None:
    cents = np.array([600000, 5, 400, 123456789])
    plan = plan_payouts(np.array([1, 2, 3, 4]), cents, PayoutSpec(), PROGRAMME)
    assert plan.frame[N.AMOUNT].to_list() == ["6000.00", "0.05", "4.00", "1234567.89"]


@given(paid_users(), st.integers(1, 9), st.floats(0.0, 48.0), st.floats(1e-4, 100.0))
def test_batches_cover_every_user_once_inside_the_window(
    users, batch_size: int, start_h: float, width_h: float
) -> None:
    ids, cents = users
    spec = PayoutSpec(
        batch_size=batch_size, start_within_hours=start_h, finish_within_hours=start_h + width_h
    )
    start = spec.announced_at + timedelta(hours=start_h)
    finish = spec.announced_at + timedelta(hours=start_h + width_h)
    n_batches = -(-int((cents > 0).sum()) // batch_size)
    if finish - start < n_batches * timedelta(seconds=1):  # batch times are whole seconds
        with pytest.raises(ScenarioError, match="do not fit"):
            plan_payouts(ids, cents, spec, PROGRAMME)
        return
    plan = plan_payouts(ids, cents, spec, PROGRAMME)
    frame = plan.frame

    # Every paid user exactly once, in user id order; nobody with zero cents.
    assert frame[N.USER_ID].to_list() == sorted(int(u) for u, c in zip(ids, cents) if c > 0)
    batch = frame[N.BATCH].to_numpy()
    assert np.all(np.diff(batch) >= 0)
    counts = np.bincount(batch)[1:] if batch.size else np.array([], dtype=np.int64)
    assert np.all(counts <= batch_size) and np.all(counts[:-1] == batch_size)

    # Schedule agrees with the rows and fits the window.
    assert [b.number for b in plan.batches] == list(range(1, len(counts) + 1))
    assert [b.users for b in plan.batches] == counts.tolist()
    by_batch = frame.group_by(N.BATCH).agg(pl.col(N.AMOUNT)).sort(N.BATCH)
    sums = [sum(int(Decimal(a) * 100) for a in amounts) for amounts in by_batch[N.AMOUNT].to_list()]
    assert [b.cents for b in plan.batches] == sums
    if plan.batches:
        assert plan.batches[0].scheduled_at <= start
        assert plan.batches[-1].due_at <= finish
        for b, nxt in zip(plan.batches, plan.batches[1:]):
            assert b.scheduled_at < b.due_at <= nxt.scheduled_at
        for b in plan.batches:
            assert b.scheduled_at >= start and b.scheduled_at.utcoffset() == timedelta(0)
    dicts = plan.schedule_dicts()
    assert [d["users"] for d in dicts] == counts.tolist()
    assert all(datetime.fromisoformat(d["due_at"]) <= finish for d in dicts)


def test_default_window_is_even() -> None:
    ids = np.arange(1, 200_001)
    plan = plan_payouts(ids, np.full(ids.size, 400), PayoutSpec(), PROGRAMME)
    starts = [b.scheduled_at for b in plan.batches]
    gaps = {b - a for a, b in zip(starts, starts[1:])}
    assert len(plan.batches) == 4 and len(gaps) == 1
    assert starts[0] == PayoutSpec().announced_at + timedelta(hours=24)
    assert plan.batches[-1].due_at == PayoutSpec().announced_at + timedelta(hours=96)


@given(paid_users(), st.integers(1, 10**6))
def test_keys_unique_per_user_and_independent_of_amounts(users, shift: int) -> None:
    ids, cents = users
    plan = plan_payouts(ids, cents + 1, PayoutSpec(), PROGRAMME)
    keys = plan.frame[N.IDEMPOTENCY_KEY].to_list()
    assert len(set(keys)) == len(keys)
    ids_out = plan.frame[N.USER_ID].to_list()
    expected = [hashlib.sha256(f"{PROGRAMME}:{u}".encode()).hexdigest()[:32] for u in ids_out]
    assert keys == expected
    # A rerun with other amounts keeps each user's key; another programme changes it.
    rerun = plan_payouts(ids, cents * 3 + shift, PayoutSpec(), PROGRAMME)
    assert rerun.frame[N.IDEMPOTENCY_KEY].to_list() == keys
    elsewhere = plan_payouts(ids, cents + 1, PayoutSpec(), PROGRAMME + "-2")
    assert not set(elsewhere.frame[N.IDEMPOTENCY_KEY].to_list()) & set(keys)


def test_idempotency_key_helper_matches_the_plan() -> None:
    plan = plan_payouts(np.array([42, -7]), np.array([100, 200]), PayoutSpec(), PROGRAMME)
    got = dict(zip(plan.frame[N.USER_ID].to_list(), plan.frame[N.IDEMPOTENCY_KEY].to_list()))
    assert got == {42: idempotency_key(PROGRAMME, 42), -7: idempotency_key(PROGRAMME, -7)}
    assert re.fullmatch(r"[0-9a-f]{32}", got[42])


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        (
            PayoutSpec(batch_size=1, start_within_hours=0, finish_within_hours=1 / 3600),
            "do not fit",
        ),
        (PayoutSpec(start_within_hours=24, finish_within_hours=24), "finish_within_hours"),
        (PayoutSpec(batch_size=0), "batch_size"),
        (PayoutSpec(announced_at=datetime(2025, 10, 14)), "time zone"),
        (PayoutSpec(start_within_hours=float("nan")), "start_within_hours"),
    ],
)
def test_bad_payout_settings_are_scenario_errors(spec: PayoutSpec, needle: str) -> None:
    with pytest.raises(ScenarioError, match=needle):
        plan_payouts(np.array([1, 2]), np.array([100, 100]), spec, PROGRAMME)


def test_bad_amounts_are_input_errors() -> None:
    with pytest.raises(InputError, match="negative"):
        plan_payouts(np.array([1, 2]), np.array([100, -1]), PayoutSpec(), PROGRAMME)
    with pytest.raises(InputError, match="repeats"):
        plan_payouts(np.array([1, 1]), np.array([100, 100]), PayoutSpec(), PROGRAMME)
    with pytest.raises(InputError, match="integer cents"):
        plan_payouts(np.array([1, 2]), np.array([1.5, 2.0]), PayoutSpec(), PROGRAMME)


def test_non_utc_announcement_is_converted() -> None:
    tz = timezone(timedelta(hours=8))
    spec = replace(PayoutSpec(), announced_at=datetime(2025, 10, 14, 8, 0, tzinfo=tz))
    plan = plan_payouts(np.array([1]), np.array([100]), spec, PROGRAMME)
    assert plan.batches[0].scheduled_at == datetime(2025, 10, 15, 0, 0, tzinfo=UTC)
    assert plan.batches[0].scheduled_at.tzinfo == UTC


# --------------------------------------------------------------------------- file


def _plan() -> object:
    return plan_payouts(
        np.array([3, 1, 2]), np.array([600000, 5, 0]), PayoutSpec(batch_size=1), PROGRAMME
    )


def test_written_bytes_are_exact_and_repeatable(tmp_path: Path) -> None:
    a, b = tmp_path / "a.csv", tmp_path / "sub" / "b.csv"
    write_payouts_csv(_plan(), a)
    write_payouts_csv(_plan(), b)
    data = a.read_bytes()
    assert data == b.read_bytes()
    k1, k3 = idempotency_key(PROGRAMME, 1), idempotency_key(PROGRAMME, 3)
    assert (
        data == f"user_id,amount,batch,idempotency_key\n1,0.05,1,{k1}\n3,6000.00,2,{k3}\n".encode()
    )
    # Overwriting in place leaves no temporary file behind.
    write_payouts_csv(_plan(), a)
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["a.csv", "b.csv"]


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "payouts.csv"
    path.write_bytes(text.encode())
    return path


def _good_lines() -> list[str]:
    k1, k2 = idempotency_key(PROGRAMME, 1), idempotency_key(PROGRAMME, 2)
    return ["user_id,amount,batch,idempotency_key", f"1,6000.00,1,{k1}", f"2,0.05,1,{k2}"]


def test_reading_accepts_crlf_and_returns_exact_cents(tmp_path: Path) -> None:
    df = read_payouts_csv(_write(tmp_path, "\r\n".join(_good_lines()) + "\r\n"))
    assert df[N.VOUCHER_CENTS].to_list() == [600000, 5]
    assert df.schema[N.USER_ID] == pl.Int64 and df.schema[N.AMOUNT] == pl.String


@pytest.mark.parametrize(
    ("line", "column"),
    [
        ("2,6000.0,1,KEY", N.AMOUNT),
        ("2,6000,1,KEY", N.AMOUNT),
        ("2,1e3,1,KEY", N.AMOUNT),
        ("2,-1.00,1,KEY", N.AMOUNT),
        ("2,,1,KEY", N.AMOUNT),
        ("2,0.055,1,KEY", N.AMOUNT),
        ("2, 1.00,1,KEY", N.AMOUNT),
        ("x,1.00,1,KEY", N.USER_ID),
        ("9223372036854775808,1.00,1,KEY", N.USER_ID),
        ("2,1.00,0,KEY", N.BATCH),
        ("2,1.00,1,nothex", N.IDEMPOTENCY_KEY),
        ("1,1.00,1,KEY", N.USER_ID),  # user 1 twice
        (f"2,1.00,1,{idempotency_key(PROGRAMME, 1)}", N.IDEMPOTENCY_KEY),  # user 1's key twice
    ],
)
def test_malformed_values_name_file_column_and_line(tmp_path: Path, line: str, column: str) -> None:
    lines = _good_lines()
    lines[2] = line.replace("KEY", idempotency_key(PROGRAMME, 2))
    path = _write(tmp_path, "\n".join(lines) + "\n")
    with pytest.raises(InputError) as exc:
        read_payouts_csv(path)
    msg = str(exc.value)
    assert str(path) in msg and f"column {column}" in msg and "line 3" in msg


@pytest.mark.parametrize(
    "text",
    [
        "user_id,amount,batch\n1,1.00,1\n",
        "",
        "user_id,amount,batch,idempotency_key\n1,1.00,1\n",
        "user_id,amount,batch,idempotency_key\n1,1.00,1,k,extra\n",
        "user_id,amount,batch,idempotency_key\n\n",
    ],
)
def test_malformed_structure_is_an_input_error(tmp_path: Path, text: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(InputError) as exc:
        read_payouts_csv(path)
    assert str(path) in str(exc.value)


def test_wrong_field_count_names_the_line(tmp_path: Path) -> None:
    lines = _good_lines()
    lines.insert(2, "5,1.00,1")
    with pytest.raises(InputError, match="line 3 has 3 fields"):
        read_payouts_csv(_write(tmp_path, "\n".join(lines) + "\n"))


def test_keys_checked_against_the_programme(tmp_path: Path) -> None:
    path = _write(tmp_path, "\n".join(_good_lines()) + "\n")
    assert read_payouts_csv(path, programme=PROGRAMME).height == 2
    with pytest.raises(InputError, match="line 2"):
        read_payouts_csv(path, programme="another")


def test_missing_file_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        read_payouts_csv(tmp_path / "nope.csv")


def test_header_only_file_has_no_rows(tmp_path: Path) -> None:
    df = read_payouts_csv(_write(tmp_path, "user_id,amount,batch,idempotency_key\n"))
    assert df.height == 0 and df.columns == [
        *PAYOUT_COLUMNS[:2],
        N.VOUCHER_CENTS,
        *PAYOUT_COLUMNS[2:],
    ]


@given(
    ids=st.lists(st.integers(-(2**63), 2**63 - 1), max_size=40, unique=True),
    round_number=st.integers(1, 5),
)
def test_the_keys_of_many_users_are_each_users_formula(ids: list[int], round_number: int) -> None:
    import hashlib

    from allocator.vouchers.payouts import idempotency_keys

    got = idempotency_keys(PROGRAMME, np.array(ids, dtype=np.int64), round_number).to_list()
    middle = "" if round_number == 1 else f"round-{round_number}:"
    want = [hashlib.sha256(f"{PROGRAMME}:{middle}{u}".encode()).hexdigest()[:32] for u in ids]
    assert got == want
    assert got == [idempotency_key(PROGRAMME, u, round_number) for u in ids]
