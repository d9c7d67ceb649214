"""Synthetic liquidation events: who was liquidated, when, on which product, for how much.

Also the depegged collateral the venue force-sold (``USDEUSDT``, ``BNSOLUSDT``, ``WBETHUSDT``)
and the depeg compensation already paid for it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from allocator import names as N
from allocator.data.schemas import SCHEMAS
from allocator.data.synthetic_calibration import (
    ALL_INSTR,
    COLL_DEPEG,
    COLL_INDEX,
    COLL_LIQ_PRODUCTS,
    COLL_LIQ_SPEC,
    COLL_NAMES,
    COLL_USDT,
    COVERED_SHARE,
    DAY10,
    DAY11,
    DAY12,
    DEPEG_END,
    DEPEG_FLOORS,
    DEPEG_LOW,
    DEPEG_REFERENCE_AT,
    DEPEG_START,
    INSTR,
    PEAK,
    SNAP_MIN,
    SNAPSHOT_MULTIPLE,
    T0,
    UNCOVERED_SHARE,
    US_PER_MIN,
    at_hm,
    exact_split,
    pick,
    to_us,
)


def _event_times(rng: np.random.Generator, size: int) -> np.ndarray:
    """In-window event times (microseconds): the intraday profile of the cascade."""
    comp = pick(rng, [0.52, 0.22, 0.10, 0.08, 0.08], size)
    u = rng.random(size)
    # the cascade around 21:15 (normal, 8 min), by default
    out = PEAK + to_us(rng.normal(0.0, 8.0, size))
    # the broad crash, 20:50-22:30
    out = np.where(comp == 1, at_hm(20, 50) + to_us(u * 100.0), out)
    # the aftermath, decaying from 22:30; what would spill past the window lands on the 11th
    tail = at_hm(22, 30) + to_us(u * 0.0 + rng.exponential(90.0, size))
    tail = np.where(tail < DAY12, tail, DAY11 + tail % (DAY12 - DAY11))
    out = np.where(comp == 2, tail, out)
    out = np.where(comp == 3, DAY10 + (u * (at_hm(20, 50) - DAY10)).astype(np.int64), out)
    out = np.where(comp == 4, DAY11 + (u * (DAY12 - DAY11)).astype(np.int64), out)
    clipped: np.ndarray = np.clip(out, DAY10, DAY12 - 1)
    return clipped


def _outside_times(rng: np.random.Generator, size: int) -> np.ndarray:
    """Times just outside the window: 2025-10-09 23:59, exactly 2025-10-12 00:00, or later."""
    comp = pick(rng, [0.45, 0.20, 0.35], size)
    u = rng.random(size)
    return np.where(
        comp == 0,
        SNAP_MIN + to_us(u),
        np.where(comp == 1, DAY12, DAY12 + to_us(u * 60.0)),
    )


def _user_losses(rng: np.random.Generator, n: int) -> np.ndarray:
    """Target counted loss per user (USD): threshold clusters, log-normal body, Pareto tail."""
    kind = exact_split(rng, n, (0.045, 0.035, 0.01, 0.025))
    loss = np.exp(np.log(5_000.0) + 1.45 * rng.normal(0.0, 1.0, n))
    u = rng.random(n)
    loss = np.where(kind == 0, 36.0 + 13.5 * u, loss)  # just below USD 50
    loss = np.where(kind == 1, np.exp(np.log(2.0) + u * np.log(25.0)), loss)  # small, 2..50
    loss = np.where(kind == 2, 50.5 + 14.5 * u, loss)  # just above USD 50
    pareto = 60_000.0 * (1.0 - u) ** (-1.0 / 1.15)
    return np.where(kind == 3, np.minimum(pareto, 250e6), loss)


@dataclass(frozen=True)
class People:
    """Per liquidated user (arrays of length n), and the snapshot universe they belong to."""

    ids: np.ndarray  # user ids of the whole snapshot universe
    liq_pos: np.ndarray  # positions of the liquidated users in ``ids`` (sorted)
    uid: np.ndarray  # ids of the liquidated users
    kind: np.ndarray  # 0 only uncovered products, 1 only outside the window, 2 regular
    target_loss: np.ndarray  # USD
    depeg_user: np.ndarray  # posts USDe / BNSOL / WBETH collateral
    main_product: np.ndarray
    long_bias: np.ndarray
    depeg_coll: np.ndarray
    coll_sold: np.ndarray  # a depeg user whose depeg collateral the venue force-sold
    coll_share: np.ndarray  # share of the target loss taken by those sales


def draw_people(rng: np.random.Generator, n: int) -> People:
    m = SNAPSHOT_MULTIPLE * n
    ids = 10_000_000 + 7 * np.arange(m, dtype=np.int64) + rng.integers(0, 7, m)
    liq_pos = np.sort(rng.choice(m, n, replace=False))
    kind = exact_split(rng, n, (0.02, 0.01))
    target_loss = _user_losses(rng, n)
    depeg_user = (kind == 2) & (exact_split(rng, n, (0.07,)) == 0)
    main_product = pick(rng, list(COVERED_SHARE.values()), n)
    # Mostly long; the largest losses were longs caught by the cascade.
    short_biased = rng.random(n) < np.where(target_loss < 100_000.0, 0.13, 0.10)
    long_bias = np.where(short_biased, 0.25, 0.96)
    depeg_coll = pick(rng, [w for _, w in COLL_DEPEG], n)
    coll_sold = depeg_user & (rng.random(n) < 0.9)
    coll_share = rng.uniform(0.3, 0.85, n)
    return People(
        ids,
        liq_pos,
        ids[liq_pos],
        kind,
        target_loss,
        depeg_user,
        main_product,
        long_bias,
        depeg_coll,
        coll_sold,
        coll_share,
    )


@dataclass(frozen=True)
class Losses:
    """Per liquidated user, as the eligibility rules will see it."""

    counted: np.ndarray  # USD loss on covered products inside the window, fees included
    depeg_cents: np.ndarray  # depeg compensation owed by the rules (sales inside the depeg window)
    review_cents: np.ndarray  # the same formula on sales outside the depeg window


@dataclass(frozen=True)
class _CollateralSales:
    """Forced sales of depeg collateral: one entry per event (``e_*``), and per-user cents."""

    e_user: np.ndarray
    ts: np.ndarray
    instr: np.ndarray  # index into ``ALL_INSTR``
    quantity: np.ndarray
    liq_price: np.ndarray  # USDT
    realised: np.ndarray  # USDT
    fee: np.ndarray  # USDT
    coll: np.ndarray  # index into ``COLL_NAMES``
    depeg_cents: np.ndarray  # per user
    review_cents: np.ndarray  # per user


def _collateral_sales(
    rng: np.random.Generator,
    p: People,
    assets: list[str],
    px: np.ndarray,
    fair: dict[str, np.ndarray],
) -> _CollateralSales:
    """The venue's forced sales of USDe, BNSOL and WBETH collateral around the depeg.

    Each user in ``p.coll_sold`` has the first depeg asset of their collateral set sold (a second
    one with probability 0.7), in one or two steps; 92% of the sales fall inside the depeg
    window, around the asset's low, the rest within ten minutes before or after it. The sales
    take the share ``p.coll_share`` of the user's target loss: the loss of a sale is its quantity
    times the gap between fair value and the sale price. The compensation owed is computed as
    :mod:`allocator.depeg.compensation` does with its default rules, in the same floating-point operations,
    so that the two agree to the cent.
    """
    n = p.uid.size
    a_idx = {a: i for i, a in enumerate(assets)}
    depeg_names = list(COLL_LIQ_SPEC)
    # Depeg assets of each depeg collateral set, in the order of COLL_LIQ_SPEC.
    set_assets = [
        [k for k, a in enumerate(depeg_names) if a in name.split(N.COLLATERAL_SEP)]
        for name, _ in COLL_DEPEG
    ]
    users, which = [], []
    for j in range(2):
        has = np.array([len(a) > j for a in set_assets])[p.depeg_coll]
        take = p.coll_sold & has & ((rng.random(n) < 0.7) if j else True)
        idx = np.flatnonzero(take)
        users.append(idx)
        which.append(np.array([a[j] if len(a) > j else 0 for a in set_assets])[p.depeg_coll[idx]])
    pair_user, pair_asset = np.concatenate(users), np.concatenate(which)
    steps = 1 + (rng.random(pair_user.size) < 0.25)
    e_user = np.repeat(pair_user, steps)
    e_asset = np.repeat(pair_asset, steps)
    n_ev = e_user.size

    # times: around each asset's low inside the window; a few just before or after it
    t_low = np.array([DEPEG_LOW[a][0] for a in depeg_names], dtype=np.int64)[e_asset]
    where = pick(rng, [0.92, 0.03, 0.05], n_ev)
    u = rng.random(n_ev)
    inside = t_low + to_us(rng.normal(0.0, 5.0, n_ev))
    # Reflected at the window's start (its end is six standard deviations away), not clipped,
    # which would pile sales up on the edge.
    inside = np.clip(
        np.where(inside < DEPEG_START, 2 * DEPEG_START - inside, inside), DEPEG_START, DEPEG_END - 1
    )
    ts = np.where(
        where == 0,
        inside,
        np.where(where == 1, DEPEG_START - 1 - to_us(u * 10.0), DEPEG_END + to_us(u * 10.0)),
    )
    # The window's edges: one sale exactly at its first instant, one exactly at its end.
    for label, edge in ((0, DEPEG_START), (2, DEPEG_END)):
        pool = np.flatnonzero(where == label)
        if pool.size >= 2:
            ts[rng.choice(pool)] = edge
    minute = ((ts - T0) // US_PER_MIN).astype(np.int32)

    # prices (USD, then USDT at the venue's tick), quantities, losses and fees
    asset_row = np.array([a_idx[a] for a in depeg_names])[e_asset]
    usdt = px[a_idx["USDT"], minute]
    low = np.array([DEPEG_LOW[a][1] for a in depeg_names])[e_asset]
    sale_usd = np.maximum(px[asset_row, minute] * (1.0 + rng.normal(0.0, 0.002, n_ev)), low)
    fair_usd = np.vstack([fair[a] for a in depeg_names])[e_asset, minute]
    weight = rng.gamma(1.5, 1.0, n_ev)
    weight_sum = np.bincount(e_user, weights=weight, minlength=n)
    planned = (p.target_loss * p.coll_share)[e_user] * weight / weight_sum[e_user]
    liq_price = np.empty(n_ev)
    quantity = np.empty(n_ev)
    for k, a in enumerate(depeg_names):
        rows = e_asset == k
        _, tick, lot = COLL_LIQ_SPEC[a]
        liq_price[rows] = np.maximum(np.round(sale_usd[rows] / usdt[rows], tick), 10.0**-tick)
        liq_usd = liq_price[rows] * usdt[rows]
        # The gap is floored so that a sale near fair value does not imply an absurd position.
        qty = planned[rows] / np.maximum(fair_usd[rows] - liq_usd, 0.15 * fair_usd[rows])
        quantity[rows] = np.maximum(np.round(qty, lot), 10.0**-lot)
    liq_usd = liq_price * usdt
    realised = np.round(quantity * np.maximum(fair_usd - liq_usd, 0.0) / usdt, 8)
    fee = np.round(quantity * liq_price * rng.uniform(0.005, 0.015, n_ev), 8)
    product = pick(rng, [w for _, w in COLL_LIQ_PRODUCTS], n_ev)
    instr = (len(INSTR) + e_asset * len(COLL_LIQ_PRODUCTS) + product).astype(np.int16)
    coll = (len(COLL_USDT) + p.depeg_coll[e_user]).astype(np.int16)

    # Compensation owed, as allocator.depeg.compensation computes it with its default rules.
    i_ref = int((DEPEG_REFERENCE_AT - T0) // US_PER_MIN)
    ref = np.array([max(px[a_idx[a], i_ref], DEPEG_FLOORS.get(a, 0.0)) for a in depeg_names])[
        e_asset
    ]
    fee_usd = fee * usdt
    comp = np.where(liq_usd < ref, (ref - liq_usd) * quantity + fee_usd, 0.0)
    cents = np.floor(comp * 100.0 + 0.5).astype(np.int64)
    in_window = (ts >= DEPEG_START) & (ts < DEPEG_END)
    depeg_cents = np.zeros(n, dtype=np.int64)
    review_cents = np.zeros(n, dtype=np.int64)
    np.add.at(depeg_cents, e_user[in_window], cents[in_window])
    np.add.at(review_cents, e_user[~in_window], cents[~in_window])
    return _CollateralSales(
        e_user, ts, instr, quantity, liq_price, realised, fee, coll, depeg_cents, review_cents
    )


def events_table(
    rng: np.random.Generator,
    p: People,
    assets: list[str],
    px: np.ndarray,
    fair: dict[str, np.ndarray],
) -> tuple[pl.DataFrame, Losses]:
    """The liquidations table, and per user what the other tables are derived from."""
    n = p.uid.size
    a_idx = {a: i for i, a in enumerate(assets)}
    regular = p.kind == 2

    # events per user: covered in the window, uncovered products, covered outside the window
    k_cov = np.where(regular, rng.geometric(0.22, n), 0)
    heavy = regular & (p.target_loss > np.quantile(p.target_loss, 0.99))
    k_cov = k_cov + np.where(heavy, rng.integers(5, 60, n), 0)
    k_unc = np.where(
        regular, rng.poisson(0.15, n), np.where(p.kind == 0, rng.geometric(0.45, n), 0)
    )
    k_out = np.where(
        regular, rng.random(n) < 0.04, np.where(p.kind == 1, 1 + (rng.random(n) < 0.4), 0)
    )
    counts = [k.astype(np.int64) for k in (k_cov, k_unc, k_out)]
    e_user = np.concatenate([np.repeat(np.arange(n, dtype=np.int32), k) for k in counts])
    e_cat = np.concatenate([np.full(int(k.sum()), c, dtype=np.int8) for c, k in enumerate(counts)])
    n_ev = e_user.size
    cov = e_cat == 0

    # timestamps
    ts = np.empty(n_ev, dtype=np.int64)
    outside = e_cat == 2
    ts[~outside] = _event_times(rng, n_ev - int(outside.sum()))
    ts[outside] = _outside_times(rng, int(outside.sum()))
    del outside
    depeg_user_ev = p.depeg_user[e_user]
    # Depeg-collateral users were liquidated mostly while their collateral was depegged.
    in_depeg = cov & depeg_user_ev & (rng.random(n_ev) < 0.65)
    ts = np.where(
        in_depeg, DEPEG_START + (rng.random(n_ev) * (DEPEG_END - DEPEG_START)).astype(np.int64), ts
    )
    # A few events exactly on the window's inner edges.
    pool = np.flatnonzero(cov & ~in_depeg)
    edge = rng.choice(pool, size=min(max(2, pool.size // 20_000), pool.size), replace=False)
    ts[edge] = np.where(np.arange(edge.size) % 2 == 0, DAY10, DAY12 - 1)

    # product, instrument, assets
    product = np.where(
        rng.random(n_ev) < 0.7,
        p.main_product[e_user],
        pick(rng, list(COVERED_SHARE.values()), n_ev),
    )
    product = np.where(
        e_cat == 1, len(COVERED_SHARE) + pick(rng, list(UNCOVERED_SHARE.values()), n_ev), product
    )
    instr = np.empty(n_ev, dtype=np.int16)
    for p_code, p_name in enumerate(list(COVERED_SHARE) + list(UNCOVERED_SHARE)):
        rows = np.flatnonzero(product == p_code)
        choices = [i for i, ins in enumerate(INSTR) if ins[0] == p_name]
        instr[rows] = np.asarray(choices)[pick(rng, [INSTR[i][4] for i in choices], rows.size)]
    del product
    base_a = np.array([a_idx[ins[2]] for ins in INSTR], dtype=np.int16)[instr]
    settle_a = np.array([a_idx[ins[3]] for ins in INSTR], dtype=np.int16)[instr]
    coinm = np.array([ins[0] == N.COINM_FUTURES for ins in INSTR])[instr]

    # amounts: a user's counted loss is split over their covered in-window events (less the
    # share that the forced sales of depeg collateral take, see _collateral_sales)
    minute = ((ts - T0) // US_PER_MIN).astype(np.int32)
    share = rng.gamma(0.8, 1.0, n_ev)
    share_sum = np.bincount(e_user, weights=np.where(cov, share, 0.0), minlength=n)
    other_scale = rng.lognormal(-1.0, 0.8, n_ev)  # uncovered or outside: sized like the user
    positions_loss = p.target_loss * np.where(p.coll_sold, 1.0 - p.coll_share, 1.0)
    # divided only where counted: a user with no counted event has share_sum 0
    cov_share = np.divide(share, share_sum[e_user], out=np.zeros(n_ev), where=cov)
    loss_usd = np.where(
        cov, positions_loss[e_user] * cov_share, p.target_loss[e_user] * other_scale
    )
    del cov_share
    del share, other_scale
    fee_share = rng.uniform(0.03, 0.12, n_ev)
    settle_px = px[settle_a, minute]
    # Amounts in settle-asset units with the 8 decimals exchanges report.
    realised = np.round(loss_usd * (1.0 - fee_share) / settle_px, 8)
    fee = np.round(loss_usd * fee_share / settle_px, 8)
    del fee_share
    liq_price = px[base_a, minute] * (1.0 + rng.normal(0.0, 0.002, n_ev))
    quantity = loss_usd / rng.uniform(0.04, 0.6, n_ev) / liq_price
    del loss_usd, base_a
    is_long = rng.random(n_ev) < p.long_bias[e_user]

    # collateral: mostly USDT; the coin itself for coin-margined; USDe/BNSOL/WBETH for some
    coll = pick(rng, [w for _, w in COLL_USDT], n_ev)
    coll = np.where(settle_a == a_idx["USDC"], COLL_INDEX["USDC"], coll)
    depeg_ev = depeg_user_ev & ~coinm
    coll = np.where(depeg_ev, len(COLL_USDT) + p.depeg_coll[e_user], coll)
    settle_to_coll = np.array([COLL_INDEX.get(a, 0) for a in assets], dtype=np.int16)
    coll = np.where(coinm, settle_to_coll[settle_a], coll)
    del depeg_ev, depeg_user_ev, coinm

    # the venue's forced sales of the depeg collateral itself, appended to the events
    sales = _collateral_sales(rng, p, assets, px, fair)
    k = sales.e_user.size
    e_user = np.concatenate([e_user, sales.e_user])
    ts = np.concatenate([ts, sales.ts])
    instr = np.concatenate([instr, sales.instr])
    quantity = np.concatenate([quantity, sales.quantity])
    liq_price = np.concatenate([liq_price, sales.liq_price])
    realised = np.concatenate([realised, sales.realised])
    fee = np.concatenate([fee, sales.fee])
    settle_a = np.concatenate([settle_a, np.full(k, a_idx["USDT"], dtype=np.int16)])
    coll = np.concatenate([coll, sales.coll])
    is_long = np.concatenate([is_long, np.ones(k, dtype=bool)])  # a sale of collateral held
    sale_covered = np.array([ins[0] in COVERED_SHARE for ins in ALL_INSTR])[sales.instr]
    cov = np.concatenate([cov, sale_covered])
    n_ev += k

    # counted loss per user, converted as the eligibility rules do (latest bar at or before)
    settle_px = px[settle_a, ((ts - T0) // US_PER_MIN).astype(np.int32)]
    counted = cov & (ts >= DAY10) & (ts < DAY12)
    usd = (realised + fee) * settle_px
    loss_counted = np.bincount(e_user, weights=np.where(counted, usd, 0.0), minlength=n)
    del usd, settle_px, counted

    # rows in time order (ties in generation order); event ids follow time
    # (ts, position) is unique, so this parallel sort has one answer.
    order = (
        pl.DataFrame({"ts": ts, "i": np.arange(n_ev, dtype=np.int64)})
        .select(pl.arg_sort_by("ts", "i"))
        .to_series()
        .to_numpy()
    )
    events = pl.DataFrame(
        {
            N.EVENT_ID: 3_000_000_000 + np.arange(1, n_ev + 1, dtype=np.int64),
            N.USER_ID: p.uid[e_user[order]],
            N.TS: pl.Series(ts[order]).cast(pl.Datetime("us", "UTC")),
            N.PRODUCT: pl.Series([ins[0] for ins in ALL_INSTR]).gather(instr[order]),
            N.SYMBOL: pl.Series([ins[1] for ins in ALL_INSTR]).gather(instr[order]),
            N.SIDE: pl.Series(list(N.SIDES)).gather((~is_long[order]).astype(np.int8)),
            N.QUANTITY: quantity[order],
            N.LIQ_PRICE: liq_price[order],
            N.REALISED_LOSS: realised[order],
            N.LIQ_FEE: fee[order],
            N.SETTLE_ASSET: pl.Series(assets).gather(settle_a[order]),
            N.COLLATERAL: pl.Series(COLL_NAMES).gather(coll[order]),
        },
        schema=SCHEMAS[N.EVENTS_FILE],
    )
    return events, Losses(loss_counted, sales.depeg_cents, sales.review_cents)
