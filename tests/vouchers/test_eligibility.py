"""Eligibility: boundaries with known answers, a row-by-row reference, and invariants."""

from __future__ import annotations

import bisect
import dataclasses
import json
import math
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from allocator import names as N
from allocator.errors import CheckFailedError, InputError, ScenarioError
from allocator.kernel.phase import Band, band_factor, passes, phase_factor
from allocator.settings.models import EligibilityRules
from allocator.vouchers.eligibility import (
    MAX_LOSS_USD,
    RECONCILIATION_FILE,
    EligibilityResult,
    compute_eligibility,
    eligible_columns,
    excluded_columns,
    write_eligibility,
)

UTC = UTC
US = pl.Datetime("us", "UTC")


def at(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


WINDOW_FIRST = at(2025, 10, 10, 0, 0, 0, 0)
WINDOW_LAST = at(2025, 10, 11, 23, 59, 59, 999_999)
BEFORE_WINDOW = at(2025, 10, 9, 23, 59, 59, 999_999)
AFTER_WINDOW = at(2025, 10, 12, 0, 0, 0, 0)
MID = at(2025, 10, 10, 12, 0)

#: BTC minute bars around the cascade: the 21:15 bar must price 21:15:xx events, not 21:16's.
BTC_BARS = [
    (at(2025, 10, 9, 0, 0), 120_000.0),
    (at(2025, 10, 10, 21, 15), 100_000.0),
    (at(2025, 10, 10, 21, 16), 50_000.0),
    (at(2025, 10, 11, 0, 0), 110_000.0),
]


class Data:
    """Hand-built input tables: every user verified, in GB, with 100 USD net assets by default."""

    def __init__(self) -> None:
        self.events: list[dict] = []
        self.users: dict[int, dict] = {}
        self.snapshot: dict[int, float] = {}
        self.prices: list[tuple[str, datetime, float]] = [("USDT", at(2025, 10, 1), 1.0)]
        self.prices += [("BTC", ts, p) for ts, p in BTC_BARS]

    def user(
        self,
        uid: int,
        *,
        net: float | None = 100.0,
        record: bool = True,
        region: str = "GB",
        kyc: str = N.KYC_VERIFIED,
        depeg: float = 0.0,
        created: datetime = at(2023, 10, 9, 23, 59),
        vip: int = 0,
    ) -> Data:
        if record:
            self.users[uid] = {
                N.USER_ID: uid,
                N.VIP_TIER: vip,
                N.IS_INSTITUTIONAL: False,
                N.REGION: region,
                N.CREATED_AT: created,
                N.KYC_STATUS: kyc,
                N.DEPEG_COMP_USD: depeg,
            }
        if net is not None:
            self.snapshot[uid] = net
        return self

    def event(
        self,
        uid: int,
        loss: float,
        *,
        ts: datetime = MID,
        product: str = N.USDM_FUTURES,
        fee: float = 0.0,
        asset: str = "USDT",
    ) -> Data:
        self.events.append(
            {
                N.EVENT_ID: len(self.events) + 1,
                N.USER_ID: uid,
                N.TS: ts,
                N.PRODUCT: product,
                N.REALISED_LOSS: loss,
                N.LIQ_FEE: fee,
                N.SETTLE_ASSET: asset,
            }
        )
        return self

    def frames(self) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame, pl.DataFrame]:
        events = pl.DataFrame(
            self.events,
            schema={
                N.EVENT_ID: pl.Int64,
                N.USER_ID: pl.Int64,
                N.TS: US,
                N.PRODUCT: pl.String,
                N.REALISED_LOSS: pl.Float64,
                N.LIQ_FEE: pl.Float64,
                N.SETTLE_ASSET: pl.String,
            },
        )
        prices = pl.DataFrame(
            self.prices,
            schema={N.ASSET: pl.String, N.PRICE_TS: US, N.PRICE_USD: pl.Float64},
            orient="row",
        )
        snapshot = pl.DataFrame(
            {N.USER_ID: list(self.snapshot), N.NET_ASSETS_USD: list(self.snapshot.values())},
            schema={N.USER_ID: pl.Int64, N.NET_ASSETS_USD: pl.Float64},
        )
        users = pl.DataFrame(
            list(self.users.values()),
            schema={
                N.USER_ID: pl.Int64,
                N.VIP_TIER: pl.Int64,
                N.IS_INSTITUTIONAL: pl.Boolean,
                N.REGION: pl.String,
                N.CREATED_AT: US,
                N.KYC_STATUS: pl.String,
                N.DEPEG_COMP_USD: pl.Float64,
            },
        )
        return events, prices, snapshot, users

    def run(self, rules: EligibilityRules | None = None, **kw) -> EligibilityResult:
        result = compute_eligibility(*self.frames(), rules or EligibilityRules(), **kw)
        result.reconciliation.check()
        return result


def reasons(result: EligibilityResult) -> dict[int, str | None]:
    """user_id -> exclusion reason (None for eligible users)."""
    out: dict[int, str | None] = dict.fromkeys(result.eligible[N.USER_ID].to_list())
    out.update(dict(result.excluded.select(N.USER_ID, N.REASON).iter_rows()))
    return out


def row(frame: pl.DataFrame, uid: int) -> dict:
    rows = frame.filter(pl.col(N.USER_ID) == uid)
    assert rows.height == 1
    return rows.row(0, named=True)


# ---------------------------------------------------------------- boundaries with known answers


def test_min_loss_exactly_50_passes_and_one_cent_below_fails() -> None:
    d = Data()
    d.user(1).event(1, 45.0, fee=5.0)  # 45 + 5 fee = 50.00 exactly
    d.user(2).event(2, 44.99, fee=5.0)  # 49.99
    d.user(3).event(3, 25.0).event(3, 25.0, product=N.CROSS_MARGIN)  # two events, 50 in total
    r = d.run()
    assert reasons(r) == {1: None, 2: N.REASON_BELOW_MIN_LOSS, 3: None}
    assert row(r.eligible, 1)[N.LOSS_USD] == 50.0
    assert row(r.eligible, 1)[N.FEE_USD] == 5.0
    x = row(r.excluded, 2)
    assert x[N.DETAIL] == "loss 49.99 USD < 50 USD"
    assert x[N.LOSS_USD] == pytest.approx(49.99, abs=1e-12)
    # Without fees user 1's counted loss is 45 and fails.
    r = d.run(EligibilityRules(include_fees=False))
    assert reasons(r)[1] == N.REASON_BELOW_MIN_LOSS
    assert row(r.excluded, 1)[N.LOSS_USD] == 45.0


def test_losses_add_as_decimals_whatever_their_order() -> None:
    # 1.91 + 32.01 + 16.08 is 49.99999999999999 in floating point; nano-dollar sums give 50.
    d = Data()
    d.user(1).event(1, 1.91).event(1, 32.01).event(1, 16.08)
    d.user(2).event(2, 16.08).event(2, 1.91, product=N.CROSS_MARGIN).event(2, 32.01)
    d.user(3).event(3, 1.91).event(3, 32.01).event(3, 16.07)
    r = d.run()
    assert reasons(r) == {1: None, 2: None, 3: N.REASON_BELOW_MIN_LOSS}
    assert row(r.eligible, 1)[N.LOSS_USD] == row(r.eligible, 2)[N.LOSS_USD] == 50.0
    assert row(r.excluded, 3)[N.LOSS_USD] == 49.99


def test_loss_ratio_exactly_30_percent_passes_and_just_below_fails() -> None:
    d = Data()
    d.user(1, net=1000.0).event(1, 300.0)  # exactly 30%
    d.user(2, net=1000.0).event(2, 299.99)  # 29.999%
    d.user(3, net=100.0).event(3, 30.0, fee=0.0)  # 0.3 * 100 == 30.000000000000004 in floats
    d.user(4, net=1000.0).event(4, 300.0 - 1e-9)  # one nano-dollar below
    r = d.run(EligibilityRules(min_loss_usd=0.0))
    assert reasons(r) == {
        1: None,
        2: N.REASON_BELOW_LOSS_RATIO,
        3: None,
        4: N.REASON_BELOW_LOSS_RATIO,
    }
    assert row(r.eligible, 1)[N.LOSS_RATIO] == 0.3
    assert row(r.excluded, 2)[N.DETAIL] == (
        "loss ratio 29.999% < 30% (loss 299.99 USD, net assets 1000.0 USD)"
    )
    # A ratio a hair below the threshold must not read as if it reached it.
    assert row(r.excluded, 4)[N.DETAIL].startswith("loss ratio 29.9999999999% < 30%")


@given(
    x=st.floats(min_value=0.01, max_value=1e12, allow_nan=False, allow_infinity=False),
    ratio=st.sampled_from([0.3, 0.1, 0.25, 0.33, 0.5]),
)
def test_ratio_rule_is_the_published_ratio_for_losses_built_as_ratio_times_x(
    x: float, ratio: float
) -> None:
    loss = ratio * x
    d = Data()
    d.user(1, net=x).event(1, loss)
    r = d.run(EligibilityRules(min_loss_usd=0.0, min_loss_ratio=ratio))
    both = pl.concat(
        [r.eligible.select(N.LOSS_USD, N.LOSS_RATIO), r.excluded.select(N.LOSS_USD, N.LOSS_RATIO)]
    )
    published_loss, published_ratio = both.row(0)
    # The event loss is counted to the nano-dollar (round half to even) ...
    assert published_loss == float(round(loss * 1e9)) / 1e9
    # ... and the rule is the published column: fl(loss / net) >= min_loss_ratio.
    assert published_ratio == published_loss / x
    assert (reasons(r)[1] is None) == (published_ratio >= ratio)


@given(
    net_cents=st.integers(min_value=1, max_value=10**12),
    pct=st.integers(min_value=1, max_value=99),
)
def test_ratio_exactly_at_a_decimal_threshold_always_passes(net_cents: int, pct: int) -> None:
    # loss / net == pct / 100 exactly in real arithmetic (both are integers here).
    net = float(net_cents * 100)
    loss = float(net_cents * pct)
    d = Data()
    d.user(1, net=net).event(1, loss)
    r = d.run(EligibilityRules(min_loss_usd=0.0, min_loss_ratio=pct / 100))
    assert reasons(r)[1] is None


def test_window_is_half_open_to_the_microsecond() -> None:
    d = Data()
    d.user(1).event(1, 100.0, ts=WINDOW_FIRST)
    d.user(2).event(2, 100.0, ts=WINDOW_LAST)
    d.user(3).event(3, 100.0, ts=BEFORE_WINDOW)
    d.user(4).event(4, 100.0, ts=AFTER_WINDOW)
    d.user(5).event(5, 100.0, ts=WINDOW_FIRST).event(5, 1000.0, ts=AFTER_WINDOW)
    d.user(6).event(6, 100.0, ts=at(2025, 10, 9, 23, 59))  # the snapshot minute itself
    r = d.run()
    assert reasons(r) == {
        1: None,
        2: None,
        3: N.REASON_OUTSIDE_WINDOW,
        4: N.REASON_OUTSIDE_WINDOW,
        5: None,
        6: N.REASON_OUTSIDE_WINDOW,
    }
    u5 = row(r.eligible, 5)
    assert (u5[N.N_EVENTS], u5[N.LOSS_USD]) == (1, 100.0)
    assert u5[N.FIRST_EVENT_TS] == u5[N.LAST_EVENT_TS] == WINDOW_FIRST
    assert row(r.eligible, 2)[N.LAST_EVENT_TS] == WINDOW_LAST
    rec = r.reconciliation
    assert (rec.events_total, rec.events_counted, rec.events_outside_window) == (7, 3, 4)
    assert row(r.excluded, 4)[N.DETAIL] == (
        "1 covered-product event(s), none in [2025-10-10T00:00:00Z, 2025-10-12T00:00:00Z)"
    )


def test_products_not_covered_and_the_product_window_rule() -> None:
    d = Data()
    d.user(1).event(1, 500.0, product=N.OPTIONS)  # in window, not covered
    d.user(2).event(2, 500.0, product=N.SPOT, ts=AFTER_WINDOW)  # neither
    # In-window liquidation on a non-covered product, covered product only outside: the product
    # is what disqualifies.
    d.user(3).event(3, 500.0, product=N.LOAN).event(3, 500.0, ts=AFTER_WINDOW)
    d.user(4).event(4, 500.0, ts=BEFORE_WINDOW)  # covered, outside only
    d.user(5).event(5, 60.0, product=N.ISOLATED_MARGIN).event(5, 9_999.0, product=N.OPTIONS)
    r = d.run()
    assert reasons(r) == {
        1: N.REASON_PRODUCT_NOT_COVERED,
        2: N.REASON_PRODUCT_NOT_COVERED,
        3: N.REASON_PRODUCT_NOT_COVERED,
        4: N.REASON_OUTSIDE_WINDOW,
        5: None,
    }
    u5 = row(r.eligible, 5)
    assert u5[N.LOSS_USD] == 60.0
    assert u5[N.product_loss_column(N.ISOLATED_MARGIN)] == 60.0
    assert u5[N.product_loss_column(N.USDM_FUTURES)] == 0.0
    assert N.product_loss_column(N.OPTIONS) not in r.eligible.columns
    assert row(r.excluded, 1)[N.DETAIL] == "1 event(s) in the window, none on a covered product"
    assert row(r.excluded, 2)[N.DETAIL] == "no event on a covered product"
    rec = r.reconciliation
    assert rec.events_product_not_covered == 4
    # Covering options makes user 1 eligible and adds the options loss to user 5.
    r = d.run(EligibilityRules(products=N.COVERED_PRODUCTS + (N.OPTIONS,)))
    assert reasons(r)[1] is None
    assert row(r.eligible, 5)[N.LOSS_USD] == 60.0 + 9_999.0


@pytest.mark.parametrize("price_lookup", ["auto", "asof"])
def test_coin_margined_loss_uses_the_bar_of_its_own_minute(price_lookup: str) -> None:
    d = Data()
    last_of_minute = at(2025, 10, 10, 21, 15, 59, 999_999)
    d.user(1).event(1, 0.001, ts=last_of_minute, product=N.COINM_FUTURES, asset="BTC")
    d.user(2).event(2, 0.001, ts=at(2025, 10, 10, 21, 16), product=N.COINM_FUTURES, asset="BTC")
    d.user(3).event(3, 0.001, fee=0.0001, ts=WINDOW_FIRST, product=N.COINM_FUTURES, asset="BTC")
    r = d.run(EligibilityRules(min_loss_usd=0.0, min_loss_ratio=0.0), price_lookup=price_lookup)
    assert row(r.eligible, 1)[N.LOSS_USD] == pytest.approx(0.001 * 100_000.0, rel=1e-15)
    assert row(r.eligible, 2)[N.LOSS_USD] == pytest.approx(0.001 * 50_000.0, rel=1e-15)
    # At the first instant of the window the latest bar is the one of 2025-10-09 00:00.
    u3 = row(r.eligible, 3)
    assert u3[N.LOSS_USD] == pytest.approx(0.0011 * 120_000.0, rel=1e-15)
    assert u3[N.FEE_USD] == pytest.approx(0.0001 * 120_000.0, rel=1e-15)
    assert u3[N.product_loss_column(N.COINM_FUTURES)] == u3[N.LOSS_USD]


def test_price_grid_and_asof_join_agree_on_irregular_bars() -> None:
    d = Data()
    d.prices += [
        ("ETH", at(2025, 10, 10, 0, 0, 7), 4000.0),
        ("ETH", at(2025, 10, 10, 0, 0, 8), 3000.0),
    ]
    d.user(1).event(1, 1.0, ts=at(2025, 10, 10, 0, 0, 7, 999_999), asset="ETH")
    d.user(2).event(2, 1.0, ts=at(2025, 10, 10, 0, 0, 8), asset="ETH")
    auto, asof = d.run(), d.run(price_lookup="asof")
    assert auto.eligible.equals(asof.eligible)
    assert row(auto.eligible, 1)[N.LOSS_USD] == 4000.0
    assert row(auto.eligible, 2)[N.LOSS_USD] == 3000.0


def test_asset_without_a_price_is_an_input_error_naming_asset_and_event() -> None:
    d = Data()
    d.user(1).event(1, 100.0)
    d.user(2).event(2, 2.0, ts=at(2025, 10, 10, 3), asset="SOL")
    with pytest.raises(InputError) as err:
        d.run(source={N.PRICES_FILE: "/data/prices.parquet"})
    msg = str(err.value)
    assert "/data/prices.parquet" in msg and "'SOL'" in msg
    assert "event_id=2" in msg and "user_id=2" in msg and "2025-10-10 03:00:00" in msg
    assert "no bar at all" in msg


def test_event_before_the_first_bar_of_its_asset_is_an_input_error() -> None:
    d = Data()
    d.prices.append(("SOL", at(2025, 10, 10, 12, 0), 200.0))
    d.user(1).event(1, 1.0, ts=at(2025, 10, 10, 11, 59, 59), asset="SOL")
    with pytest.raises(InputError, match="first bar is at 2025-10-10 12:00:00"):
        d.run()
    with pytest.raises(InputError, match="'SOL'"):
        d.run(price_lookup="asof")


def test_missing_price_is_fine_for_events_that_are_not_counted() -> None:
    d = Data()
    d.user(1).event(1, 100.0).event(1, 3.0, asset="SOL", ts=AFTER_WINDOW)
    d.user(2).event(2, 3.0, asset="SOL", product=N.SPOT)
    assert reasons(d.run()) == {1: None, 2: N.REASON_PRODUCT_NOT_COVERED}


def test_snapshot_and_net_asset_policies() -> None:
    d = Data()
    d.user(1, net=None).event(1, 100.0)  # no snapshot row
    d.user(2, net=0.0).event(2, 100.0)
    d.user(3, net=-250.0).event(3, 100.0)
    d.user(4, net=None).event(4, 10.0)  # fails the minimum loss first
    r = d.run(EligibilityRules(nonpositive_net_assets="eligible"))
    assert reasons(r) == {
        1: N.REASON_NO_SNAPSHOT,
        2: None,
        3: None,
        4: N.REASON_BELOW_MIN_LOSS,
    }
    assert row(r.eligible, 2)[N.LOSS_RATIO] == math.inf
    assert row(r.eligible, 3)[N.LOSS_RATIO] == math.inf
    assert row(r.eligible, 3)[N.NET_ASSETS_USD] == -250.0
    x1 = row(r.excluded, 1)
    assert x1[N.NET_ASSETS_USD] is None and x1[N.LOSS_RATIO] is None and x1[N.LOSS_USD] == 100.0
    r = d.run(EligibilityRules(nonpositive_net_assets="exclude"))
    assert reasons(r)[2] == reasons(r)[3] == N.REASON_NONPOSITIVE_NET_ASSETS
    assert row(r.excluded, 3)[N.DETAIL] == "net assets -250.0 USD <= 0"


def test_user_record_region_and_kyc_rules_in_order() -> None:
    d = Data()
    d.user(1, record=False).event(1, 100.0)
    d.user(2, region="US").event(2, 100.0)
    d.user(3, region="US", kyc="pending").event(3, 100.0)  # region is checked first
    d.user(4, kyc="pending").event(4, 100.0)
    d.user(5, kyc="unverified").event(5, 10.0)  # kyc is checked before the minimum loss
    r = d.run()
    assert reasons(r) == {
        1: N.REASON_NO_USER_RECORD,
        2: N.REASON_RESTRICTED_REGION,
        3: N.REASON_RESTRICTED_REGION,
        4: N.REASON_KYC,
        5: N.REASON_KYC,
    }
    assert row(r.excluded, 2)[N.DETAIL] == "region US is restricted"
    assert row(r.excluded, 4)[N.DETAIL] == "kyc status pending"
    r = d.run(EligibilityRules(require_kyc=False, restricted_regions=()))
    assert reasons(r) == {
        1: N.REASON_NO_USER_RECORD,
        2: None,
        3: None,
        4: None,
        5: N.REASON_BELOW_MIN_LOSS,
    }


@pytest.mark.parametrize("policy", ["exclude", "net", "ignore"])
def test_depeg_policies(policy: str) -> None:
    d = Data()
    d.user(1, depeg=60.0).event(1, 100.0)  # net: 40 < 50
    d.user(2, depeg=60.0).event(2, 200.0)  # net: 140
    d.user(3, depeg=500.0, net=100.0).event(3, 200.0)  # net: clipped at 0
    d.user(4).event(4, 200.0)  # never compensated
    r = d.run(EligibilityRules(depeg_policy=policy))  # type: ignore[arg-type]
    got = reasons(r)
    assert got[4] is None
    if policy == "exclude":
        assert got == {1: N.REASON_DEPEG, 2: N.REASON_DEPEG, 3: N.REASON_DEPEG, 4: None}
        assert row(r.excluded, 1)[N.DETAIL] == "received 60.0 USD depeg compensation"
    elif policy == "net":
        assert got == {1: N.REASON_BELOW_MIN_LOSS, 2: None, 3: N.REASON_BELOW_MIN_LOSS, 4: None}
        u2 = row(r.eligible, 2)
        assert (u2[N.LOSS_USD], u2[N.GROSS_LOSS_USD], u2[N.DEPEG_COMP_USD]) == (140.0, 200.0, 60.0)
        assert u2[N.LOSS_RATIO] == 140.0 / 100.0
        assert row(r.excluded, 3)[N.LOSS_USD] == 0.0
        assert r.reconciliation.depeg_netted_usd == 60.0
        assert row(r.excluded, 1)[N.DETAIL] == "loss 40.0 USD after depeg netting < 50 USD"
    else:
        assert got == {1: None, 2: None, 3: None, 4: None}
        assert row(r.eligible, 2)[N.LOSS_USD] == 200.0


def test_feature_matrix_columns_types_order_and_values() -> None:
    d = Data()
    d.user(7, vip=3, created=at(2025, 10, 8, 0, 0)).event(7, 100.0).event(
        7, 0.001, product=N.COINM_FUTURES, asset="BTC", ts=at(2025, 10, 10, 21, 15, 30)
    )
    d.user(3, created=at(2025, 10, 9, 23, 59, 0, 1)).event(3, 80.0, product=N.CROSS_MARGIN)
    r = d.run()
    assert r.eligible.columns == eligible_columns(EligibilityRules())
    assert r.excluded.columns == excluded_columns()
    assert r.eligible[N.USER_ID].to_list() == [3, 7]
    schema = r.eligible.schema
    assert schema[N.FIRST_EVENT_TS] == US and schema[N.N_EVENTS] == pl.Int64
    assert schema[N.ACCOUNT_AGE_DAYS] == pl.Int64 and schema[N.IS_INSTITUTIONAL] == pl.Boolean
    u7 = row(r.eligible, 7)
    assert u7[N.ACCOUNT_AGE_DAYS] == 1  # 1 day 23:59 -> whole days, rounded down
    assert u7[N.VIP_TIER] == 3 and u7[N.N_EVENTS] == 2
    assert u7[N.LOSS_USD] == pytest.approx(200.0, rel=1e-15)
    # Created after the snapshot: a negative age, floored.
    assert row(r.eligible, 3)[N.ACCOUNT_AGE_DAYS] == -1
    product_cols = [N.product_loss_column(p) for p in N.COVERED_PRODUCTS]
    total = r.eligible.select(pl.sum_horizontal(product_cols) - pl.col(N.GROSS_LOSS_USD))
    assert total.to_series().abs().max() < 1e-9


def test_users_and_snapshot_may_hold_accounts_that_were_never_liquidated() -> None:
    d = Data()
    d.user(1).event(1, 100.0)
    for uid in range(100, 120):
        d.user(uid)
    r = d.run()
    assert r.reconciliation.liquidated_users == 1 and reasons(r) == {1: None}


def test_duplicate_user_rows_fail_the_reconciliation() -> None:
    d = Data()
    d.user(1).event(1, 100.0)
    events, prices, snapshot, users = d.frames()
    r = compute_eligibility(events, prices, snapshot, pl.concat([users, users]), EligibilityRules())
    with pytest.raises(CheckFailedError, match="liquidated users"):
        r.reconciliation.check()


def test_reconciliation_check_detects_each_broken_identity() -> None:
    d = Data()
    d.user(1).event(1, 100.0).event(1, 1.0, product=N.SPOT)
    d.user(2).event(2, 10.0)
    rec = d.run().reconciliation
    rec.check()
    for change in [
        {"eligible_users": rec.eligible_users + 1},
        {"excluded_by_reason": {**rec.excluded_by_reason, N.REASON_KYC: 1}},
        {"events_counted": rec.events_counted + 1},
        {"events_eligible": rec.events_eligible + 1},
        {"excluded_loss_usd": rec.excluded_loss_usd + 1.0},
        {"eligible_loss_usd": rec.eligible_loss_usd * (1 + 1e-5)},
    ]:
        with pytest.raises(CheckFailedError):
            dataclasses.replace(rec, **change).check()
    assert list(rec.to_dict()["excluded_by_reason"]) == list(N.REASONS)
    assert any("reconciliation" in line and "ok" in line for line in rec.lines())
    json.dumps(rec.to_dict(), allow_nan=False)


def test_bad_rules_and_bad_tables_are_typed_errors() -> None:
    d = Data()
    d.user(1).event(1, 100.0)
    with pytest.raises(ScenarioError, match="unknown product"):
        d.run(EligibilityRules(products=("futures",)))
    with pytest.raises(ScenarioError, match="window_start"):
        d.run(EligibilityRules(window_start=AFTER_WINDOW))
    with pytest.raises(ScenarioError, match="min_loss_usd"):
        d.run(EligibilityRules(min_loss_usd=-1.0))
    events, prices, snapshot, users = d.frames()
    with pytest.raises(InputError, match="'settle_asset'"):
        compute_eligibility(
            events.drop(N.SETTLE_ASSET), prices, snapshot, users, EligibilityRules()
        )
    dup = pl.concat([prices, prices.tail(1)])
    with pytest.raises(InputError, match="two bars"):
        compute_eligibility(events, dup, snapshot, users, EligibilityRules())


def test_empty_events_give_empty_outputs() -> None:
    d = Data()
    r = d.run()
    assert r.eligible.height == r.excluded.height == 0
    assert r.eligible.columns == eligible_columns(EligibilityRules())
    assert r.reconciliation.liquidated_users == 0


# ---------------------------------------------------------------- writing


def test_write_is_byte_identical_on_rerun_and_leaves_nothing_on_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = Data()
    d.user(1).event(1, 100.0)
    d.user(2, kyc="pending").event(2, 100.0)
    out = tmp_path / "elig"
    write_eligibility(d.run(), out)
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    assert set(first) == {N.ELIGIBLE_FILE, N.EXCLUDED_FILE, RECONCILIATION_FILE}
    write_eligibility(d.run(), out)  # into the existing directory
    assert {p.name: p.read_bytes() for p in out.iterdir()} == first
    assert pl.read_parquet(out / N.EXCLUDED_FILE).equals(d.run().excluded)
    saved = json.loads((out / RECONCILIATION_FILE).read_text())
    assert saved["reconciliation"]["eligible_users"] == 1

    def boom(*_a: object, **_k: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(pl.DataFrame, "write_parquet", boom)
    fresh = tmp_path / "fresh"
    with pytest.raises(InputError, match="disk full"):
        write_eligibility(d.run(), fresh)
    with pytest.raises(InputError, match="disk full"):
        write_eligibility(d.run(), out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elig"]
    assert {p.name: p.read_bytes() for p in out.iterdir()} == first
    monkeypatch.undo()
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(InputError, match="not a directory"):
        write_eligibility(d.run(), tmp_path / "a_file")


# ---------------------------------------------------------------- reference and properties


def reference(d: Data, rules: EligibilityRules) -> dict[int, tuple[str | None, float]]:
    """user -> (reason, loss_usd), computed row by row straight from the rules."""
    bars: dict[str, list[tuple[datetime, float]]] = {}
    for asset, ts, price in sorted(d.prices, key=lambda b: (b[0], b[1])):
        bars.setdefault(asset, []).append((ts, price))

    def price(asset: str, ts: datetime) -> float:
        series = bars[asset]
        i = bisect.bisect_right([b[0] for b in series], ts)
        return series[i - 1][1]

    out: dict[int, tuple[str | None, float]] = {}
    for uid in sorted({e[N.USER_ID] for e in d.events}):
        mine = [e for e in d.events if e[N.USER_ID] == uid]
        in_win = [e for e in mine if rules.window_start <= e[N.TS] < rules.window_end]
        covered = [e for e in mine if e[N.PRODUCT] in rules.products]
        counted = [e for e in in_win if e[N.PRODUCT] in rules.products]
        gross = 0.0
        for e in counted:
            amount = e[N.REALISED_LOSS] + (e[N.LIQ_FEE] if rules.include_fees else 0.0)
            gross += amount * price(e[N.SETTLE_ASSET], e[N.TS])
        u = d.users.get(uid)
        comp = u[N.DEPEG_COMP_USD] if u else None
        loss: float | None = gross
        if rules.depeg_policy == "net":  # unknown without a user record
            loss = None if comp is None else max(gross - comp, 0.0)
        net = d.snapshot.get(uid)
        reason: str | None
        if not counted:
            outside = bool(covered) and not in_win
            reason = N.REASON_OUTSIDE_WINDOW if outside else N.REASON_PRODUCT_NOT_COVERED
        elif u is None:
            reason = N.REASON_NO_USER_RECORD
        elif u[N.REGION] in rules.restricted_regions:
            reason = N.REASON_RESTRICTED_REGION
        elif rules.require_kyc and u[N.KYC_STATUS] != N.KYC_VERIFIED:
            reason = N.REASON_KYC
        elif rules.depeg_policy == "exclude" and comp:
            reason = N.REASON_DEPEG
        elif not loss >= rules.min_loss_usd:
            reason = N.REASON_BELOW_MIN_LOSS
        elif net is None:
            reason = N.REASON_NO_SNAPSHOT
        elif net <= 0 and rules.nonpositive_net_assets == "exclude":
            reason = N.REASON_NONPOSITIVE_NET_ASSETS
        elif not (math.inf if net <= 0 else loss / net) >= rules.min_loss_ratio:
            reason = N.REASON_BELOW_LOSS_RATIO
        else:
            reason = None
        out[uid] = (reason, loss)
    return out


INSTANTS = [
    BEFORE_WINDOW,
    WINDOW_FIRST,
    at(2025, 10, 10, 21, 15, 59),
    at(2025, 10, 10, 21, 16),
    WINDOW_LAST,
    AFTER_WINDOW,
]


@st.composite
def datasets(draw: st.DrawFn) -> Data:
    d = Data()
    n_users = draw(st.integers(1, 8))
    for uid in range(1, n_users + 1):
        if draw(st.booleans()) or uid == 1:
            d.user(
                uid,
                net=draw(st.sampled_from([None, -10.0, 0.0, 100.0, 300.0, 1000.0, 1e6])),
                record=draw(st.integers(0, 5)) > 0,
                region=draw(st.sampled_from(["GB", "GB", "SG", "US"])),
                kyc=draw(st.sampled_from([N.KYC_VERIFIED, N.KYC_VERIFIED, "pending"])),
                depeg=draw(st.sampled_from([0.0, 0.0, 0.0, 25.0, 1000.0])),
            )
        for _ in range(draw(st.integers(0, 4))):
            asset = draw(st.sampled_from(["USDT", "BTC"]))
            scale = 1e-4 if asset == "BTC" else 1.0
            d.event(
                uid,
                draw(st.sampled_from([0.0, 10.0, 30.0, 49.99, 50.0, 90.0, 300.0, 5e4])) * scale,
                fee=draw(st.sampled_from([0.0, 0.5])) * scale,
                ts=draw(st.sampled_from(INSTANTS)),
                product=draw(st.sampled_from(N.PRODUCTS)),
                asset=asset,
            )
    return d


rules_strategy = st.builds(
    EligibilityRules,
    min_loss_usd=st.sampled_from([0.0, 10.0, 50.0, 300.0]),
    min_loss_ratio=st.sampled_from([0.0, 0.05, 0.3, 1.0]),
    require_kyc=st.booleans(),
    include_fees=st.booleans(),
    nonpositive_net_assets=st.sampled_from(["eligible", "exclude"]),
    depeg_policy=st.sampled_from(["exclude", "net", "ignore"]),
)


@given(d=datasets(), rules=rules_strategy, asof=st.booleans())
def test_matches_a_row_by_row_reference(d: Data, rules: EligibilityRules, asof: bool) -> None:
    r = d.run(rules, price_lookup="asof" if asof else "auto")
    want = reference(d, rules)
    assert reasons(r) == {u: reason for u, (reason, _) in want.items()}
    got_loss = dict(
        pl.concat(
            [r.eligible.select(N.USER_ID, N.LOSS_USD), r.excluded.select(N.USER_ID, N.LOSS_USD)]
        ).iter_rows()
    )
    for uid, (_, loss) in want.items():
        if loss is None:
            assert got_loss[uid] is None
        else:
            assert got_loss[uid] == pytest.approx(loss, rel=1e-12, abs=1e-12)


@given(d=datasets(), rules=rules_strategy)
def test_invariants_reconciliation_partition_determinism(d: Data, rules: EligibilityRules) -> None:
    r = d.run(rules)  # run() checks the reconciliation
    liquidated = sorted({e[N.USER_ID] for e in d.events})
    ids = r.eligible[N.USER_ID].to_list() + r.excluded[N.USER_ID].to_list()
    assert sorted(ids) == liquidated  # each liquidated user exactly once
    assert r.eligible[N.USER_ID].is_sorted() and r.excluded[N.USER_ID].is_sorted()
    rec = r.reconciliation
    assert rec.liquidated_users == len(liquidated) and rec.events_total == len(d.events)
    by_reason = r.excluded[N.REASON].value_counts()
    assert dict(by_reason.iter_rows()) == {k: v for k, v in rec.excluded_by_reason.items() if v}
    # Independent event count: counted events from the raw rows.
    counted = sum(
        rules.window_start <= e[N.TS] < rules.window_end and e[N.PRODUCT] in rules.products
        for e in d.events
    )
    assert rec.events_counted == counted
    assert (r.eligible[N.LOSS_USD] >= rules.min_loss_usd).all()
    assert (r.eligible[N.LOSS_RATIO] >= rules.min_loss_ratio).all()
    again = d.run(rules)
    assert again.eligible.equals(r.eligible) and again.excluded.equals(r.excluded)
    assert again.reconciliation == rec


@given(
    d=datasets(),
    rules=rules_strategy,
    more_loss=st.sampled_from([0.0, 0.01, 40.0, 1e4]),
    more_ratio=st.sampled_from([0.0, 1e-9, 0.25, 2.0]),
)
def test_raising_a_threshold_never_adds_an_eligible_user(
    d: Data, rules: EligibilityRules, more_loss: float, more_ratio: float
) -> None:
    base = set(d.run(rules).eligible[N.USER_ID].to_list())
    stricter = dataclasses.replace(
        rules,
        min_loss_usd=rules.min_loss_usd + more_loss,
        min_loss_ratio=rules.min_loss_ratio + more_ratio,
    )
    assert set(d.run(stricter).eligible[N.USER_ID].to_list()) <= base


def test_window_end_shift_by_one_microsecond() -> None:
    d = Data()
    d.user(1).event(1, 100.0, ts=AFTER_WINDOW)
    rules = EligibilityRules(window_end=AFTER_WINDOW + timedelta(microseconds=1))
    assert reasons(d.run(rules)) == {1: None}


# ---------------------------------------------------------------- files and command line


@pytest.fixture(scope="module")
def small_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from allocator.data.synthetic import generate

    out = tmp_path_factory.mktemp("elig_data")
    generate(out, users=2000, seed=11)
    return out


def test_cli_json_reconciles_with_the_files_it_wrote(small_data: Path, tmp_path: Path) -> None:
    import importlib
    import pkgutil

    from typer.testing import CliRunner

    import allocator.cli
    from allocator.cli.app import app

    importlib.import_module("allocator.cli.cmd_eligibility")
    # Register the other commands as the installed CLI does; with a single command Typer drops
    # the command name, so the invocation follows what is registered.
    for mod in pkgutil.iter_modules(allocator.cli.__path__):
        if mod.name.startswith("cmd_"):
            try:
                importlib.import_module(f"allocator.cli.{mod.name}")
            except ImportError:
                pass
    cmd = ["eligibility"] if len(app.registered_commands) > 1 else []

    out = tmp_path / "elig"
    args = [*cmd, "--data", str(small_data), "--out", str(out), "--min-loss", "40", "--json"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    rec = json.loads(res.stdout)
    eligible = pl.read_parquet(out / N.ELIGIBLE_FILE)
    excluded = pl.read_parquet(out / N.EXCLUDED_FILE)
    events = pl.read_parquet(small_data / f"{N.EVENTS_FILE}.parquet")
    # Recomputed from the input and output files alone.
    assert (
        rec["liquidated_users"] == events[N.USER_ID].n_unique() == eligible.height + excluded.height
    )
    assert rec["eligible_users"] == eligible.height
    assert rec["events_total"] == events.height
    assert rec["excluded_by_reason"] == {r: int((excluded[N.REASON] == r).sum()) for r in N.REASONS}
    assert list(rec["excluded_by_reason"]) == list(N.REASONS)
    assert (eligible[N.LOSS_USD] >= 40.0).all() and (eligible[N.LOSS_RATIO] >= 0.30).all()
    assert rec["eligible_loss_usd"] == pytest.approx(eligible[N.LOSS_USD].sum(), rel=1e-12)
    assert set(eligible[N.USER_ID]) | set(excluded[N.USER_ID]) == set(events[N.USER_ID])
    # The synthetic data exercise most reasons.
    assert sum(1 for v in rec["excluded_by_reason"].values() if v) >= 7
    saved = json.loads((out / RECONCILIATION_FILE).read_text())
    assert saved["reconciliation"] == rec and saved["rules"]["min_loss_usd"] == 40.0
    # Human output: the reconciliation lines, and an error is a message, not a traceback.
    res = CliRunner().invoke(app, [*cmd, "--data", str(small_data), "--out", str(out)])
    assert res.exit_code == 0 and "liquidated users" in res.stdout
    res = CliRunner().invoke(app, [*cmd, "--data", str(tmp_path / "nope"), "--out", str(out)])
    assert res.exit_code == 2 and "Traceback" not in res.output


def test_run_eligibility_equals_compute_on_loaded_frames(small_data: Path) -> None:
    from allocator.data.inputs import load_inputs
    from allocator.vouchers.eligibility import run_eligibility

    rules = EligibilityRules(depeg_policy="net")
    a = run_eligibility(small_data, rules)
    inp = load_inputs(small_data, validate=False)
    b = compute_eligibility(
        inp.events, inp.prices, inp.snapshot, inp.users, rules, price_lookup="asof"
    )
    a.reconciliation.check()
    # The as-of path meets each user's events in time order, the grid path in file order; the
    # nano-dollar sums do not depend on the order, so the results are identical.
    assert a.eligible.equals(b.eligible) and a.excluded.equals(b.excluded)
    assert a.reconciliation == b.reconciliation


@pytest.mark.parametrize("bad_loss", [1e30, math.nan, math.inf])
def test_an_unusable_loss_amount_is_an_input_error(bad_loss: float) -> None:
    d = Data()
    d.user(1).event(1, 100.0)
    d.user(2).event(2, bad_loss, ts=at(2025, 10, 10, 4))
    with pytest.raises(InputError, match="not a finite number") as err:
        d.run()
    assert "event_id=2" in str(err.value)
    # The same amount outside the window is not counted and so not an error.
    d = Data()
    d.user(1).event(1, 100.0).event(1, bad_loss, ts=AFTER_WINDOW)
    assert reasons(d.run()) == {1: None}


def test_huge_event_losses_of_one_user_cannot_wrap_their_sum_around() -> None:
    """Two events each below the old per-event limit (1.7e29 USD) summed past Int128 and came
    out as a negative loss: the user was excluded as below the minimum loss. Each event is now
    held to MAX_LOSS_USD, so that no user's sum can overflow."""
    d = Data()
    d.user(1).event(1, 100.0)
    d.user(2).event(2, 1e29).event(2, 1e29, ts=at(2025, 10, 10, 5))
    with pytest.raises(
        InputError, match=re.escape(f"not a finite number below {MAX_LOSS_USD:.3g}")
    ) as err:
        d.run()
    assert "user_id=2" in str(err.value)
    # up to the limit, many events of one user still add up exactly
    d = Data()
    d.user(1).event(1, MAX_LOSS_USD).event(1, MAX_LOSS_USD, ts=at(2025, 10, 10, 5))
    (loss,) = d.run().eligible[N.GROSS_LOSS_USD].to_list()
    assert loss == 2 * MAX_LOSS_USD > 0


# ---------------------------------------------------------------- phase-in band


def test_phase_in_band_admits_users_below_the_thresholds_with_a_linear_factor() -> None:
    d = Data()
    d.user(1).event(1, 25.0)  # lower end of the loss band: still excluded (factor 0)
    d.user(2).event(2, 30.0)  # 1/5 of the way from 25 to 50
    d.user(3).event(3, 50.0)  # at the threshold: factor 1
    d.user(4, net=1000.0).event(4, 250.0)  # ratio 0.25: half way from 0.2 to 0.3
    d.user(5, net=1000.0).event(5, 200.0)  # ratio 0.2: lower end of the ratio band
    d.user(6, net=120.0).event(6, 40.0)  # loss 3/5 of the way, ratio 1/3: factor 0.6
    d.user(7, net=-5.0).event(7, 45.0)  # infinite ratio: only the loss factor 0.8
    hard = d.run()
    rules = EligibilityRules(phase_in_loss_usd=25.0, phase_in_ratio=0.2)
    soft = d.run(rules)
    assert soft.eligible.columns == eligible_columns(rules)
    assert soft.eligible.columns[-1] == N.PHASE_FACTOR
    assert N.PHASE_FACTOR not in hard.eligible.columns
    got = dict(soft.eligible.select(N.USER_ID, N.PHASE_FACTOR).iter_rows())
    expected = {2: 0.2, 3: 1.0, 4: 0.5, 6: 0.6, 7: 0.8}
    assert set(got) == set(expected)
    for uid, factor in expected.items():
        assert got[uid] == pytest.approx(factor, abs=1e-12)
    assert got[3] == 1.0  # exactly, at the threshold
    r = reasons(soft)
    assert r[1] == N.REASON_BELOW_MIN_LOSS and r[5] == N.REASON_BELOW_LOSS_RATIO
    assert "phase-in" in row(soft.excluded, 1)[N.DETAIL]
    # the hard-threshold eligible users are all still eligible, with factor 1
    for uid in hard.eligible[N.USER_ID].to_list():
        assert got[uid] == 1.0


def test_phase_in_band_must_lie_below_its_threshold() -> None:
    d = Data()
    d.user(1).event(1, 60.0)
    for bad in (
        EligibilityRules(phase_in_loss_usd=50.0),
        EligibilityRules(phase_in_ratio=0.35),
        EligibilityRules(phase_in_loss_usd=-1.0),
        EligibilityRules(phase_in_ratio=math.nan),
    ):
        with pytest.raises(ScenarioError):
            d.run(bad)


@pytest.mark.parametrize("rules", [EligibilityRules(), EligibilityRules(phase_in_loss_usd=25.0)])
def test_every_polars_engine_gives_the_same_result(tmp_path: Path, rules: EligibilityRules) -> None:
    # Losses are summed as exact integers, so the engine (and its thread schedule) cannot change
    # a single bit of the output.
    from allocator.data.inputs import load_inputs
    from allocator.data.synthetic import generate

    generate(tmp_path / "d", users=2000, seed=3)
    inputs = load_inputs(tmp_path / "d")
    frames = (inputs.events, inputs.prices, inputs.snapshot, inputs.users)
    results = {
        engine: compute_eligibility(*frames, rules, engine=engine)
        for engine in ("auto", "in-memory", "streaming")
    }
    first = results["auto"]
    assert first.eligible.height > 500
    for r in results.values():
        assert r.eligible.equals(first.eligible) and r.excluded.equals(first.excluded)
        assert r.reconciliation == first.reconciliation


# ---------------------------------------------------------------- rules decided once


def test_phase_ramp_is_the_published_phase_factor_bit_for_bit() -> None:
    # the kernel's ramp against the Polars expression the published column was built with
    rng = np.random.default_rng(7)
    for low, high in ((25.0, 50.0), (0.2, 0.3), (7.0, 100 / 3), (0.1, 0.30000000000000004)):
        x = np.concatenate([rng.uniform(low - 1, high + 1, 20_000), [low, high, np.inf]])
        expr = (
            pl.when(pl.col("x") >= high)
            .then(1.0)
            .otherwise(((pl.col("x") - low) / (high - low)).clip(0.0, 1.0))
        )
        polars_ramp = pl.DataFrame({"x": x}).select(expr.alias("f"))["f"].to_numpy()
        assert np.array_equal(band_factor(x, Band(low, high)), polars_ramp)
    band = Band(25.0, 50.0)
    assert band_factor([25.0, 30.0, 50.0, 60.0], band).tolist() == [0.0, 0.2, 1.0, 1.0]
    assert band_factor([1.0, np.inf], Band(None, 50.0)).tolist() == [1.0, 1.0]
    # the rule: the lower end fails (factor 0), the threshold passes without a band; NaN fails
    assert passes([25.0, 25.01, np.nan], band).tolist() == [False, True, False]
    assert passes([49.99, 50.0, np.nan], Band(None, 50.0)).tolist() == [False, True, False]
    assert phase_factor([30.0], [0.25], band, Band(0.2, 0.3)).tolist() == pytest.approx([0.1])


def test_rule_decisions_list_every_failing_rule_where_it_applies() -> None:
    d = Data()
    d.user(1, record=False).event(1, 10.0)  # no record: region and KYC are not judged
    d.user(2, region="US", kyc="pending").event(2, 10.0)
    d.user(3, net=None).event(3, 10.0)  # no snapshot: net assets and ratio are not judged
    d.user(4, net=1000.0).event(4, 100.0)  # ratio 0.1
    d.user(5).event(5, 100.0)
    d.user(6).event(6, 100.0, ts=AFTER_WINDOW)
    r = d.run(decisions=True)
    assert r.decisions is not None
    failures = {uid: r.decision(uid).failures for uid in range(1, 7)}
    assert failures == {
        1: (N.REASON_NO_USER_RECORD, N.REASON_BELOW_MIN_LOSS, N.REASON_BELOW_LOSS_RATIO),
        2: (
            N.REASON_RESTRICTED_REGION,
            N.REASON_KYC,
            N.REASON_BELOW_MIN_LOSS,
            N.REASON_BELOW_LOSS_RATIO,
        ),
        3: (N.REASON_BELOW_MIN_LOSS, N.REASON_NO_SNAPSHOT),
        4: (N.REASON_BELOW_LOSS_RATIO,),
        5: (),
        6: (N.REASON_OUTSIDE_WINDOW, N.REASON_BELOW_MIN_LOSS, N.REASON_BELOW_LOSS_RATIO),
    }
    # the reason written to excluded.parquet is the first failing rule
    got = reasons(r)
    for uid, fails in failures.items():
        decision = r.decision(uid)
        assert decision is not None and decision.reason == got[uid] == (fails[0] if fails else None)
    assert r.decision(99) is None
    # the same tables with and without the decisions
    plain = d.run()
    assert plain.eligible.equals(r.eligible) and plain.excluded.equals(r.excluded)
    with pytest.raises(ValueError, match="decisions=True"):
        plain.decision(1)


def test_rule_decisions_carry_the_band_factors() -> None:
    d = Data()
    d.user(1, net=120.0).event(1, 40.0)  # loss 3/5 into the band, ratio 1/3: factor 0.6
    d.user(2, net=1000.0).event(2, 250.0)  # ratio half way into its band
    rules = EligibilityRules(phase_in_loss_usd=25.0, phase_in_ratio=0.2)
    r = d.run(rules, decisions=True)
    published = dict(r.eligible.select(N.USER_ID, N.PHASE_FACTOR).iter_rows())
    for uid in (1, 2):
        decision = r.decision(uid)
        assert decision is not None and decision.phase_factor == published[uid]
    one = r.decision(1)
    assert one is not None
    assert one.loss_factor == pytest.approx(0.6) and one.ratio_factor == 1.0
