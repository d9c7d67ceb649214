"""Depeg compensation: hand-built cases with known answers, invariants, files and the command.

Expected amounts are worked out by hand (or recomputed in plain Python) from the rule as stated
in allocator/depeg/positions.py: compensable price = max(reference, floor); a position sold below it gets
(compensable - liquidation price in USD) x quantity + fee in USD, rounded half up to the cent.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import allocator.cli.cmd_depeg  # noqa: F401 - registers the command
from allocator import names as N
from allocator.cli.app import app
from allocator.data import synthetic
from allocator.data.inputs import SCHEMAS
from allocator.depeg.compensation import compute_depeg
from allocator.depeg.positions import (
    COMPENSABLE_PRICE,
    COMPENSATION_CENTS,
    COMPENSATION_USD,
    FEE_USD,
    LIQ_PRICE_USD,
    REASON,
    REFERENCE_PRICE,
    ZERO_AT_OR_ABOVE_REFERENCE,
    ZERO_NOT_DEPEG_ASSET,
    ZERO_REASONS,
    positions_columns,
)
from allocator.depeg.reconciliation import PAID_CENTS, STATUS, STATUSES, users_columns
from allocator.depeg.run import run_depeg, write_depeg_run
from allocator.errors import InputError, ScenarioError
from allocator.runs.hashing import sha256_file as file_sha256
from allocator.settings.depeg import DepegRules, depeg_rules_from_dict, load_depeg_rules

UTC = UTC


def at(h: int, m: int, s: int = 0, us: int = 0, day: int = 10) -> datetime:
    return datetime(2025, 10, day, h, m, s, us, tzinfo=UTC)


REF_AT = at(0, 0, day=11)
USDE_REF = 0.998  # below the USDe floor of 1.0
BNSOL_REF = 200.0
WBETH_REF = 4000.0


class Tables:
    """A tiny data set: price bars, events and users added one by one."""

    def __init__(self) -> None:
        self.events: list[dict] = []
        self.users: dict[int, float] = {}
        self.bars: list[tuple[str, datetime, float]] = []
        for asset, price in (
            ("USDT", 1.0),
            ("USDC", 0.998),
            ("USDe", USDE_REF),
            ("BNSOL", BNSOL_REF),
            ("WBETH", WBETH_REF),
            ("BTC", 110_000.0),
            ("ETH", 3_800.0),
        ):
            self.bars.append((asset, at(20, 0), price))
            self.bars.append((asset, REF_AT, price))

    def event(
        self,
        user: int,
        ts: datetime,
        symbol: str = "USDEUSDT",
        qty: float = 1000.0,
        liq: float = 0.66,
        fee: float = 0.0,
        settle: str = "USDT",
        coll: str | None = "USDe",
        product: str = N.CROSS_MARGIN,
    ) -> int:
        eid = len(self.events) + 1
        self.events.append(
            {
                N.EVENT_ID: eid,
                N.USER_ID: user,
                N.TS: ts,
                N.PRODUCT: product,
                N.SYMBOL: symbol,
                N.SIDE: "long",
                N.QUANTITY: qty,
                N.LIQ_PRICE: liq,
                N.REALISED_LOSS: 0.0,
                N.LIQ_FEE: fee,
                N.SETTLE_ASSET: settle,
                N.COLLATERAL: coll,
            }
        )
        self.users.setdefault(user, 0.0)
        return eid

    def frames(self) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
        ev = pl.DataFrame(self.events, schema=SCHEMAS[N.EVENTS_FILE])
        px = pl.DataFrame(
            [{N.ASSET: a, N.PRICE_TS: t, N.PRICE_USD: p} for a, t, p in self.bars],
            schema=SCHEMAS[N.PRICES_FILE],
        )
        us = pl.DataFrame(
            {
                N.USER_ID: list(self.users),
                N.VIP_TIER: [0] * len(self.users),
                N.IS_INSTITUTIONAL: [False] * len(self.users),
                N.REGION: ["FR"] * len(self.users),
                N.CREATED_AT: [at(0, 0, day=1)] * len(self.users),
                N.KYC_STATUS: ["verified"] * len(self.users),
                N.DEPEG_COMP_USD: list(self.users.values()),
            },
            schema=SCHEMAS[N.USERS_FILE],
        )
        return ev, px, us

    def run(self, rules: DepegRules | None = None):
        return compute_depeg(*self.frames(), rules)


def pos(result, event_id: int) -> dict:
    rows = result.positions.filter(pl.col(N.EVENT_ID) == event_id)
    assert rows.height == 1, f"event {event_id} is not a position"
    return rows.row(0, named=True)


def ids(result) -> set[int]:
    return set(result.positions[N.EVENT_ID].to_list())


# --------------------------------------------------------------------------------------------
# the rule, case by case


def test_known_answer_usde_position() -> None:
    t = Tables()
    e = t.event(1, at(21, 44), qty=1000.0, liq=0.66, fee=6.6)
    r = t.run()
    p = pos(r, e)
    # compensable = max(0.998, floor 1.0) = 1.0; (1.0 - 0.66) * 1000 + 6.6 = 346.60 USD
    assert p[REFERENCE_PRICE] == USDE_REF and p[COMPENSABLE_PRICE] == 1.0
    assert p[COMPENSATION_CENTS] == 34_660 and p[REASON] is None
    assert p["asset"] == "USDe" and p[LIQ_PRICE_USD] == 0.66 and p[FEE_USD] == 6.6
    assert r.users.row(0, named=True)[COMPENSATION_CENTS] == 34_660


def test_window_start_inclusive_end_exclusive() -> None:
    t = Tables()
    first = t.event(1, at(21, 36))
    last = t.event(2, at(22, 15, 59, 999_999))
    before = t.event(3, at(21, 35, 59, 999_999))
    end = t.event(4, at(22, 16))
    r = t.run()
    assert ids(r) == {first, last}
    assert before not in ids(r) and end not in ids(r)
    # The two outside are depeg-asset positions left to case review, priced and counted.
    rec = r.reconciliation
    assert rec.outside_window_positions == 2
    assert rec.outside_window_cents == 2 * 34_000 and rec.outside_window_unpriced == 0


def test_window_is_a_parameter() -> None:
    t = Tables()
    late = t.event(1, at(22, 20))
    wide = DepegRules(window_end=at(22, 30))
    assert ids(t.run()) == set() and ids(t.run(wide)) == {late}


def test_collateral_without_a_depeg_asset_is_ignored() -> None:
    t = Tables()
    t.event(1, at(21, 44), coll="USDT")
    t.event(2, at(21, 44), coll=None)
    t.event(3, at(21, 44), coll="BTC|USDC")
    kept = t.event(4, at(21, 44), coll="USDT|usde")  # names compare case-insensitively
    r = t.run()
    assert ids(r) == {kept}
    assert set(r.users[N.USER_ID].to_list()) == {4}


def test_position_in_another_asset_is_kept_with_zero() -> None:
    t = Tables()
    btc = t.event(
        1, at(21, 44), symbol="BTCUSDT", qty=2.0, liq=100_000.0, fee=50.0, coll="USDT|USDe"
    )
    r = t.run()
    p = pos(r, btc)
    assert p["asset"] is None and p[COMPENSATION_CENTS] == 0 and p[REASON] == ZERO_NOT_DEPEG_ASSET
    assert r.reconciliation.positions_zero_by_reason[ZERO_NOT_DEPEG_ASSET] == 1


def test_asset_not_in_the_rule_list_is_ignored() -> None:
    t = Tables()
    usde = t.event(1, at(21, 44))
    bnsol = t.event(2, at(21, 44), symbol="BNSOLUSDT", qty=10.0, liq=34.9, coll="BNSOL")
    mixed = t.event(3, at(21, 44), symbol="BNSOLUSDT", qty=10.0, liq=34.9, coll="BNSOL|USDe")
    only_usde = DepegRules(assets=("USDe",), floors=(("USDe", 1.0),))
    r = t.run(only_usde)
    # BNSOL collateral alone is not depeg collateral under these rules; with USDe it is, but the
    # position is in BNSOL, which the rules do not compensate.
    assert ids(r) == {usde, mixed}
    assert pos(r, mixed)[REASON] == ZERO_NOT_DEPEG_ASSET
    full = t.run()
    assert pos(full, bnsol)[COMPENSATION_CENTS] == round((BNSOL_REF - 34.9) * 10 * 100)


def test_uncovered_product_is_ignored_and_loans_count() -> None:
    t = Tables()
    t.event(1, at(21, 44), product=N.OPTIONS)
    t.event(2, at(21, 44), product=N.SPOT)
    loan = t.event(3, at(21, 44), product=N.LOAN)
    fut = t.event(4, at(21, 44), product=N.USDM_FUTURES)
    assert ids(t.run()) == {loan, fut}
    assert ids(t.run(DepegRules(products=N.COVERED_PRODUCTS))) == {fut}


def test_liquidated_above_reference_gets_nothing_never_negative() -> None:
    t = Tables()
    above = t.event(1, at(21, 44), symbol="WBETHUSDT", qty=3.0, liq=4100.0, fee=40.0, coll="WBETH")
    equal = t.event(
        2, at(21, 44), symbol="WBETHUSDT", qty=3.0, liq=WBETH_REF, fee=40.0, coll="WBETH"
    )
    r = t.run()
    for e in (above, equal):
        p = pos(r, e)
        assert p[COMPENSATION_CENTS] == 0 and p[COMPENSATION_USD] == 0.0
        assert p[REASON] == ZERO_AT_OR_ABOVE_REFERENCE
    assert r.reconciliation.positions_compensated == 0 and r.total_cents == 0


def test_fee_refund_converted_to_usd() -> None:
    t = Tables()
    # Quote and fee in USDC, worth 0.998 USD at the event (bar of 20:00, the latest before it).
    e = t.event(1, at(21, 44), symbol="USDEUSDC", qty=500.0, liq=0.70, fee=10.0, settle="USDC")
    r = t.run()
    p = pos(r, e)
    assert p[FEE_USD] == 10.0 * 0.998
    assert p[LIQ_PRICE_USD] == 0.70 * 0.998
    expected = (1.0 - 0.70 * 0.998) * 500.0 + 10.0 * 0.998
    assert p[COMPENSATION_USD] == expected
    assert p[COMPENSATION_CENTS] == math.floor(expected * 100 + 0.5)
    no_fee = t.run(DepegRules(refund_fees=False))
    assert pos(no_fee, e)[COMPENSATION_CENTS] == math.floor(
        (1.0 - 0.70 * 0.998) * 500.0 * 100 + 0.5
    )


def test_fee_uses_the_latest_bar_at_or_before_the_event() -> None:
    t = Tables()
    t.bars.append(("USDT", at(21, 40), 0.99))
    t.bars.append(("USDT", at(21, 50), 0.95))  # after the event: not used
    e = t.event(1, at(21, 44), qty=100.0, liq=0.70, fee=1.0)
    p = pos(t.run(), e)
    assert p[FEE_USD] == 0.99 and p[LIQ_PRICE_USD] == 0.70 * 0.99


def test_usde_floor_lifts_the_reference() -> None:
    t = Tables()
    # Sold at 0.999: above the market reference 0.998 but below the floor of 1.0.
    e = t.event(1, at(21, 44), qty=10_000.0, liq=0.999, fee=2.0)
    floored = pos(t.run(), e)
    assert floored[COMPENSABLE_PRICE] == 1.0
    assert floored[COMPENSATION_CENTS] == math.floor(((1.0 - 0.999) * 10_000.0 + 2.0) * 100 + 0.5)
    no_floor = pos(t.run(DepegRules(floors=())), e)
    assert no_floor[COMPENSABLE_PRICE] == USDE_REF
    assert no_floor[COMPENSATION_CENTS] == 0 and no_floor[REASON] == ZERO_AT_OR_ABOVE_REFERENCE
    # A floor below the reference changes nothing.
    low_floor = pos(t.run(DepegRules(floors=(("USDe", 0.9),))), e)
    assert low_floor[COMPENSABLE_PRICE] == USDE_REF


def test_reference_price_override() -> None:
    t = Tables()
    e = t.event(1, at(21, 45), symbol="WBETHUSDT", qty=2.0, liq=430.65, coll="WBETH")
    r = t.run(DepegRules(reference_prices=(("WBETH", 3500.0),)))
    p = pos(r, e)
    assert p[REFERENCE_PRICE] == 3500.0 and p[COMPENSATION_CENTS] == round(
        (3500.0 - 430.65) * 2 * 100
    )
    ref = {x.asset: x for x in r.references}
    assert ref["WBETH"].source == "override" and ref["USDe"].source == "prices"
    assert ref["USDe"].bar_ts == REF_AT


def test_reference_bar_is_the_latest_at_or_before_reference_time() -> None:
    t = Tables()
    t.bars.append(("BNSOL", at(0, 0, day=11) + timedelta(minutes=1), 999.0))  # after: ignored
    t.bars.append(("BNSOL", at(23, 59), 150.0))  # before 00:00, superseded by the 00:00 bar
    e = t.event(1, at(21, 43), symbol="BNSOLUSDT", qty=1.0, liq=34.9, coll="BNSOL")
    assert pos(t.run(), e)[REFERENCE_PRICE] == BNSOL_REF


def test_missing_prices_are_input_errors_naming_the_event() -> None:
    t = Tables()
    t.event(1, at(21, 44), symbol="USDEFDUSD", settle="FDUSD", fee=1.0)
    with pytest.raises(InputError, match=r"asset 'FDUSD'.*event_id=1"):
        t.run()
    t = Tables()
    t.bars = [b for b in t.bars if b[0] != "WBETH"]
    t.event(1, at(21, 44), symbol="WBETHUSDT", coll="WBETH")
    with pytest.raises(InputError, match=r"WBETH.*reference") as info:
        t.run()
    assert "--reference WBETH=PRICE" in str(info.value)
    # An override makes the missing bar irrelevant.
    assert t.run(DepegRules(reference_prices=(("WBETH", 4000.0),))).total_cents > 0


def test_users_compared_with_paid_compensation() -> None:
    t = Tables()
    t.event(1, at(21, 44), fee=6.6)  # owes 346.60
    t.users[1] = 346.60
    t.event(2, at(21, 44), fee=6.6)
    t.users[2] = 0.0
    t.event(3, at(21, 44), fee=6.6)
    t.users[3] = 300.0
    t.users[4] = 55.5  # paid, no position
    t.event(5, at(21, 44), symbol="BTCUSDT", liq=100_000.0, qty=1.0)  # position, nothing due
    t.event(6, at(21, 44), fee=6.6)
    ev, px, us = t.frames()
    r = compute_depeg(ev, px, us.filter(pl.col(N.USER_ID) != 6))
    status = dict(zip(r.users[N.USER_ID].to_list(), r.users[STATUS].to_list(), strict=True))
    assert status == {
        1: "match",
        2: "computed_not_paid",
        3: "amount_differs",
        4: "paid_without_compensable_position",
        5: "nothing_due",
        6: "no_user_record",
    }
    row3 = r.users.filter(pl.col(N.USER_ID) == 3).row(0, named=True)
    assert row3[PAID_CENTS] == 30_000 and row3["difference_cents"] == 4_660
    rec = r.reconciliation
    assert rec.paid_cents == 34_660 + 30_000 + 5_550 and rec.paid_users == 3
    assert rec.users_cents == 4 * 34_660 and not rec.failures()
    assert list(r.users.columns) == users_columns() and r.users[N.USER_ID].is_sorted()


def test_empty_population() -> None:
    t = Tables()
    t.event(1, at(12, 0))
    r = t.run()
    assert r.positions.height == 0 and r.users.height == 0 and r.total_cents == 0
    assert not r.reconciliation.failures()


# --------------------------------------------------------------------------------------------
# invariants


position = st.tuples(
    st.sampled_from(["USDEUSDT", "BNSOLUSDT", "WBETHUSDT", "BTCUSDT"]),
    st.floats(0.001, 1e6),  # quantity
    st.floats(0.01, 5000.0),  # liquidation price
    st.floats(0.0, 1e4),  # fee
    st.integers(1, 6),  # user
    st.integers(0, 39 * 60),  # seconds after 21:36
)


@settings(max_examples=40)
@given(
    rows=st.lists(position, min_size=1, max_size=25),
    ref=st.floats(0.5, 5000.0),
    bump=st.floats(0.0, 100.0),
    floor=st.floats(0.0, 2.0),
)
def test_invariants(rows: list, ref: float, bump: float, floor: float) -> None:
    t = Tables()
    for sym, qty, liq, fee, user, sec in rows:
        coll = "USDT|" + {"USDEUSDT": "USDe", "BNSOLUSDT": "BNSOL", "WBETHUSDT": "WBETH"}.get(
            sym, "USDe"
        )
        t.event(
            user,
            at(21, 36) + timedelta(seconds=sec),
            symbol=sym,
            qty=qty,
            liq=liq,
            fee=fee,
            coll=coll,
        )
    refs = (("USDe", ref), ("BNSOL", ref), ("WBETH", ref))
    low = t.run(DepegRules(reference_prices=refs, floors=(("USDe", floor),)))
    high = t.run(
        DepegRules(
            reference_prices=tuple((a, p + bump) for a, p in refs), floors=(("USDe", floor),)
        )
    )
    for r in (low, high):
        pos_ = r.positions
        assert pos_.height == len(rows)
        assert (pos_[COMPENSATION_CENTS] >= 0).all() and (pos_[COMPENSATION_USD] >= 0).all()
        # positions -> users to the cent, and each user's sum recomputed here
        assert int(pos_[COMPENSATION_CENTS].sum()) == int(r.users[COMPENSATION_CENTS].sum())
        by_user = pos_.group_by(N.USER_ID).agg(pl.col(COMPENSATION_CENTS).sum().alias("c"))
        joined = r.users.join(by_user, on=N.USER_ID, how="left")
        assert (joined[COMPENSATION_CENTS] == joined["c"].fill_null(0)).all()
        assert not r.reconciliation.failures()
        # each position recomputed in plain Python from its own row
        for p in pos_.iter_rows(named=True):
            if p["asset"] is None:
                assert p[COMPENSATION_CENTS] == 0
                continue
            cp = max(p[REFERENCE_PRICE], floor if p["asset"] == "USDe" else 0.0)
            assert p[COMPENSABLE_PRICE] == cp
            c = (cp - p[N.LIQ_PRICE]) * p[N.QUANTITY] + p[FEE_USD] if p[N.LIQ_PRICE] < cp else 0.0
            assert p[COMPENSATION_CENTS] == math.floor(c * 100 + 0.5)
    # monotone in the reference price, position by position
    lo = low.positions.sort(N.EVENT_ID)[COMPENSATION_CENTS]
    hi = high.positions.sort(N.EVENT_ID)[COMPENSATION_CENTS]
    assert (hi >= lo).all()


# --------------------------------------------------------------------------------------------
# rules


def test_rules_validation() -> None:
    with pytest.raises(ScenarioError, match="window_end"):
        depeg_rules_from_dict(
            {"window_start": "2025-10-10T22:00:00Z", "window_end": "2025-10-10T21:00:00Z"}
        )
    with pytest.raises(ScenarioError, match="floors.BTC"):
        depeg_rules_from_dict({"floors": {"BTC": 1.0}})
    with pytest.raises(ScenarioError, match="reference_prices.USDe"):
        depeg_rules_from_dict({"reference_prices": {"USDe": -1.0}})
    # far beyond any price: the int64 cents of the compensation would overflow
    with pytest.raises(ScenarioError, match=r"reference_prices.USDe.*at most 10,000,000"):
        depeg_rules_from_dict({"reference_prices": {"USDe": 1e300}})
    with pytest.raises(ScenarioError, match=r"floors.USDe.*at most 10,000,000"):
        depeg_rules_from_dict({"floors": {"USDe": 1e300}})
    with pytest.raises(ScenarioError, match="products"):
        depeg_rules_from_dict({"products": ["perpetual"]})
    with pytest.raises(ScenarioError, match="unknown key 'depeg.flor'"):
        depeg_rules_from_dict({"flor": {}})
    with pytest.raises(ScenarioError, match="time zone"):
        depeg_rules_from_dict({"window_start": "2025-10-10T21:00:00"})


def test_rules_file(tmp_path: Path) -> None:
    f = tmp_path / "rules.toml"
    f.write_text(
        "[other]\nx = 1\n\n[depeg]\nwindow_end = 2025-10-10T22:30:00Z\n"
        "[depeg.reference_prices]\nBNSOL = 190.0\n[depeg.floors]\nUSDe = 0.97\n"
    )
    rules = load_depeg_rules(f)
    assert rules.window_end == at(22, 30) and rules.reference_prices == (("BNSOL", 190.0),)
    assert rules.floors == (("USDe", 0.97),) and rules.window_start == DepegRules().window_start
    merged = load_depeg_rules(
        f, {"floors": {"WBETH": 100.0}, "reference_prices": {"WBETH": 3000.0}}
    )
    assert dict(merged.floors) == {"USDe": 0.97, "WBETH": 100.0}
    assert dict(merged.reference_prices) == {"BNSOL": 190.0, "WBETH": 3000.0}
    (tmp_path / "none.toml").write_text("[vouchers]\na = 1\n")
    with pytest.raises(ScenarioError, match=r"no \[depeg\] table"):
        load_depeg_rules(tmp_path / "none.toml")


def test_synthetic_constants_are_the_default_rules() -> None:
    d = DepegRules()
    assert synthetic.DEPEG_FLOORS == dict(d.floors)
    us = lambda dt: int(dt.timestamp()) * 1_000_000
    assert synthetic.DEPEG_REFERENCE_AT == us(d.reference_at)
    assert (synthetic.DEPEG_START, synthetic.DEPEG_END) == (us(d.window_start), us(d.window_end))


# --------------------------------------------------------------------------------------------
# generated data, files and the command


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("depeg") / "data"
    synthetic.generate(d, users=3000, seed=7)
    return d


def test_generator_pays_what_the_rule_computes(data_dir: Path) -> None:
    r = run_depeg(data_dir)
    u = r.users
    counts = r.reconciliation.users_by_status
    compensated = int((u[COMPENSATION_CENTS] > 0).sum())
    assert compensated > 50
    # Everyone owed compensation is paid exactly that, except the documented unpaid few.
    assert counts["amount_differs"] == 0
    assert counts["match"] >= 0.9 * compensated
    assert 0 < counts["computed_not_paid"] <= 0.08 * compensated
    # Paid without a position in the window: the case-reviewed sales outside it, at the same
    # formula, which a window covering those ten minutes either side reproduces to the cent.
    reviewed = u.filter(pl.col(STATUS) == "paid_without_compensable_position")
    assert reviewed.height > 0
    wide = run_depeg(data_dir, DepegRules(window_start=at(21, 26), window_end=at(22, 26))).users
    check = reviewed.join(wide, on=N.USER_ID, suffix="_wide")
    assert check.height == reviewed.height
    assert (check[PAID_CENTS] == check[f"{COMPENSATION_CENTS}_wide"]).all()
    assert not r.reconciliation.failures()
    zero = r.reconciliation.positions_zero_by_reason
    assert tuple(zero) == ZERO_REASONS and zero[ZERO_NOT_DEPEG_ASSET] > 0
    assert tuple(r.reconciliation.users_by_status) == STATUSES


def test_run_directory_is_atomic_and_byte_identical(data_dir: Path, tmp_path: Path) -> None:
    r = run_depeg(data_dir)
    out = write_depeg_run(r, tmp_path / "run")
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    assert set(first) == {"positions.parquet", "users.parquet", "manifest.json"}
    write_depeg_run(run_depeg(data_dir), out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == first
    man = json.loads(first["manifest.json"])
    for name, digest in man["outputs"].items():
        assert file_sha256(out / name) == digest
    assert man["inputs"]["liquidations"]["sha256"] == file_sha256(data_dir / "liquidations.parquet")
    assert depeg_rules_from_dict(man["rules"]) == r.rules
    positions = pl.read_parquet(out / "positions.parquet")
    users = pl.read_parquet(out / "users.parquet")
    assert list(positions.columns) == positions_columns()
    assert (
        positions.schema[COMPENSATION_CENTS] == pl.Int64
        and users.schema[COMPENSATION_CENTS] == pl.Int64
    )
    # totals recomputed from the files
    assert (
        man["totals"]["total_cents"]
        == int(positions[COMPENSATION_CENTS].sum())
        == int(users[COMPENSATION_CENTS].sum())
    )
    # cents / 100 correctly rounded (NumPy divides; Polars multiplies by the reciprocal)
    assert (users[COMPENSATION_USD].to_numpy() == users[COMPENSATION_CENTS].to_numpy() / 100).all()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("x")
    with pytest.raises(InputError, match="not a depeg run"):
        write_depeg_run(r, other)


def test_cli_json(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli"
    res = CliRunner().invoke(
        app,
        [
            "depeg",
            "compute",
            "--data",
            str(data_dir),
            "--out",
            str(out),
            "--json",
            "--reference",
            "WBETH=3900",
            "--floor",
            "BNSOL=150",
        ],
    )
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["rules"]["reference_prices"] == {"WBETH": 3900.0}
    assert doc["rules"]["floors"] == {"USDe": 1.0, "BNSOL": 150.0}
    positions = pl.read_parquet(out / "positions.parquet")
    assert doc["total_cents"] == int(positions[COMPENSATION_CENTS].sum())
    assert (positions.filter(pl.col("asset") == "WBETH")[REFERENCE_PRICE] == 3900.0).all()
    assert doc["reconciliation"]["ok"] is True


def test_cli_table_and_errors(data_dir: Path, tmp_path: Path) -> None:
    res = CliRunner().invoke(
        app, ["depeg", "compute", "--data", str(data_dir), "--out", str(tmp_path / "t"), "-q"]
    )
    assert res.exit_code == 0, res.output
    assert (
        "positions in window with depeg collateral" in res.output and "reconciliation" in res.output
    )
    for bad in (
        ["--reference", "WBETH"],
        ["--reference", "WBETH=abc"],
        ["--floor", "DOGE=1"],
        ["--window-start", "2025-10-10 21:00"],
        ["--rules", str(tmp_path / "missing.toml")],
    ):
        res = CliRunner().invoke(
            app, ["depeg", "compute", "--data", str(data_dir), "--out", str(tmp_path / "e"), *bad]
        )
        assert res.exit_code == 2, (bad, res.output)
        assert "Traceback" not in res.output and "error" in res.output
