"""Deterministic synthetic input data calibrated on the crash of 2025-10-10.

:func:`generate` writes the four input tables of :mod:`allocator.data.inputs` for a given number of
liquidated users; :func:`default_data_dir` provides the built-in default data set (generated on
first use, then cached).

What the data reproduces (public facts, see the domain brief, section 4):

* per-account losses are heavy-tailed: a log-normal body (median about USD 5,000) with a Pareto
  tail (index 1.15 from USD 60k), so a few percent of accounts lose over USD 100k, some over
  USD 1M and a few over USD 10M;
* longs far outnumber shorts (about 6.7 : 1 in events; by loss the ratio moves with the few
  largest accounts, mostly long), events peak around 21:15 UTC on 2025-10-10
  (most between 20:50 and 22:30, some through the 11th) and users have several events
  (about 5 on average, geometric with a heavy tail) across products;
* USD-margined futures dominate; coin-margined futures settle losses in the coin (BTC, ETH, ...)
  and need price conversion; cross and isolated margin; a few percent of events are on products
  the programme does not cover (options, spot, loan), and some users have only those;
* collateral is mostly USDT; some users post USDe, BNSOL or WBETH and are liquidated mostly in
  the depeg window 2025-10-10 21:36-22:16, where those assets fall to about 0.66, 34.90 and
  430.65 USD, are back within a few percent of fair value at 22:16 and fully recovered ten
  minutes later;
* the venue also force-sells that collateral itself: events on the symbols ``USDEUSDT``,
  ``BNSOLUSDT`` and ``WBETHUSDT`` (quantity in the collateral asset, ``liq_price`` in USDT at the
  depressed price, a liquidation fee of 0.5-1.5% of notional) on margin, USD-margined futures
  (multi-asset mode) and loan accounts, clustered around each asset's low; a few fall just
  outside the window (21:26-21:36, 22:16-22:26), including one exactly at 21:36:00 (inside) and
  one exactly at 22:16:00 (outside) whenever there are enough of them;
* ``depeg_comp_usd`` is the depeg compensation already received, computed with the default
  rules of :mod:`allocator.depeg.compensation` (reference price the 2025-10-11 00:00 bar, USDe's floored at
  USD 1, fee refunded, per position rounded half up to the cent, summed per user) on the
  collateral sales inside the window. Exceptions, on purpose: about 2% of the users owed
  compensation were not paid (``0``), and about half of the users whose collateral was sold only
  outside the window were paid the same formula on those sales after a case review;
* edge cases: events just outside the window (2025-10-09 23:59, exactly 2025-10-12 00:00, later
  on the 12th) and exactly on its inner edges, users without a snapshot row, zero and negative
  net assets, restricted regions, unverified KYC, users missing from the users table, and
  clusters just below the USD 50 and 30% thresholds for cliff analysis.

Net assets are set from each user's counted loss through a loss ratio
:math:`r = L / A` drawn log-normal around 0.6, so that with the default rules roughly 60% of
liquidated users are eligible. The snapshot holds about ten times as many users as were
liquidated. Every random draw comes from one ``numpy`` generator seeded with ``seed`` in a fixed
order, so the same ``(users, seed)`` gives byte-identical files.
"""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl

from allocator import __version__
from allocator import names as N
from allocator.data.inputs import FORMATS, SCHEMAS
from allocator.errors import InputError

#: Bump when the generator's output changes for a given (users, seed); it keys the cache.
GENERATOR_VERSION = 3
DEFAULT_USERS = 200_000
DEFAULT_SEED = 20251010
#: Snapshot rows per liquidated user (most snapshot users were never liquidated).
SNAPSHOT_MULTIPLE = 10

_US_PER_MIN = 60_000_000


def _us(dt: datetime) -> int:
    return int(dt.timestamp()) * 1_000_000 + dt.microsecond


#: Price bars: one per minute from PRICE_START to PRICE_END inclusive.
PRICE_START = datetime(2025, 10, 9, 23, 0, tzinfo=UTC)
PRICE_END = datetime(2025, 10, 12, 1, 0, tzinfo=UTC)
N_BARS = int((PRICE_END - PRICE_START).total_seconds() // 60) + 1

_T0 = _us(PRICE_START)
_DAY10 = _us(datetime(2025, 10, 10, tzinfo=UTC))
_DAY11 = _us(datetime(2025, 10, 11, tzinfo=UTC))
_DAY12 = _us(datetime(2025, 10, 12, tzinfo=UTC))
_SNAP_MIN = _us(datetime(2025, 10, 9, 23, 59, tzinfo=UTC))


def _hm(h: int, m: int) -> int:
    """Microseconds at hh:mm on 2025-10-10."""
    return _DAY10 + (h * 60 + m) * _US_PER_MIN


PEAK = _hm(21, 15)
DEPEG_START, DEPEG_END = _hm(21, 36), _hm(22, 16)
_DEPEG_LOW = {
    "USDe": (_hm(21, 44), 0.66),
    "BNSOL": (_hm(21, 43), 34.90),
    "WBETH": (_hm(21, 45), 430.65),
}
#: Full recovery of the depegged prices, ten minutes after the window closes.
_DEPEG_RECOVERED = DEPEG_END + 10 * _US_PER_MIN
#: Depeg compensation as paid in the data: the defaults of ``allocator.depeg.compensation.DepegRules``
#: (checked against them by the tests), repeated here so that the data never changes silently.
DEPEG_REFERENCE_AT = _DAY11
DEPEG_FLOORS = {"USDe": 1.0}
# Collateral sales: symbol, price decimals (tick) and quantity decimals (lot step) per asset.
_COLL_LIQ_SPEC = {
    "USDe": ("USDEUSDT", 4, 2),
    "BNSOL": ("BNSOLUSDT", 2, 3),
    "WBETH": ("WBETHUSDT", 2, 4),
}
_COLL_LIQ_PRODUCTS = (
    (N.CROSS_MARGIN, 0.45),
    (N.ISOLATED_MARGIN, 0.15),
    (N.USDM_FUTURES, 0.30),
    (N.LOAN, 0.10),
)

# --- assets: pre-crash USD price and depth of the crash (fraction lost at the low) ---
_COINS: dict[str, tuple[float, float]] = {
    "BTC": (121_500.0, 0.14),
    "ETH": (4_350.0, 0.21),
    "BNB": (1_150.0, 0.25),
    "SOL": (218.0, 0.23),
    "XRP": (2.80, 0.32),
    "DOGE": (0.245, 0.41),
    "ADA": (0.82, 0.39),
    "AVAX": (28.5, 0.40),
    "LINK": (21.9, 0.34),
    "SUI": (3.35, 0.46),
    "ENA": (0.56, 0.50),
    "LTC": (130.0, 0.27),  # priced but never traded in the events
}
_STABLES = ("USDT", "USDC")
#: Crash shape: fraction of the crash depth reached at each time (linear in between).
_SHAPE_T = np.array([_hm(20, 50), _hm(21, 5), _hm(21, 15), _hm(21, 20), _hm(21, 40), _hm(22, 30)])
_SHAPE_V = np.array([0.0, 0.2, 0.75, 1.0, 0.8, 0.55])

# --- instruments: (product, symbol, base asset, settle asset, weight within the product) ---
_USDM_BASES = {
    "BTC": 0.27,
    "ETH": 0.20,
    "SOL": 0.10,
    "BNB": 0.07,
    "XRP": 0.08,
    "DOGE": 0.08,
    "ADA": 0.04,
    "AVAX": 0.03,
    "LINK": 0.04,
    "SUI": 0.05,
    "ENA": 0.04,
}
_COINM_BASES = {
    "BTC": 0.35,
    "ETH": 0.30,
    "BNB": 0.10,
    "SOL": 0.10,
    "XRP": 0.08,
    "DOGE": 0.05,
    "ADA": 0.02,
}
_MARGIN_BASES = {
    "BTC": 0.30,
    "ETH": 0.25,
    "SOL": 0.12,
    "BNB": 0.12,
    "XRP": 0.08,
    "DOGE": 0.08,
    "LINK": 0.05,
}
_OPTIONS = (
    ("BTC-251010-120000-C", "BTC", 0.3),
    ("BTC-251010-110000-P", "BTC", 0.3),
    ("ETH-251010-4400-C", "ETH", 0.2),
    ("ETH-251010-4000-P", "ETH", 0.15),
    ("BNB-251010-1100-P", "BNB", 0.05),
)


def _instruments() -> list[tuple[str, str, str, str, float]]:
    out: list[tuple[str, str, str, str, float]] = []
    for b, w in _USDM_BASES.items():
        usdc = 0.10 if b in ("BTC", "ETH", "SOL", "BNB") else 0.0
        out.append((N.USDM_FUTURES, f"{b}USDT", b, "USDT", w * (1 - usdc)))
        if usdc:
            out.append((N.USDM_FUTURES, f"{b}USDC", b, "USDC", w * usdc))
    out += [(N.COINM_FUTURES, f"{b}USD_PERP", b, b, w) for b, w in _COINM_BASES.items()]
    for product in (N.CROSS_MARGIN, N.ISOLATED_MARGIN, N.SPOT, N.LOAN):
        out += [(product, f"{b}USDT", b, "USDT", w) for b, w in _MARGIN_BASES.items()]
    out += [(N.OPTIONS, sym, b, "USDT", w) for sym, b, w in _OPTIONS]
    return out


_INSTR = _instruments()
#: Forced sales of depeg collateral (asset-major, then product), kept apart from ``_INSTR`` so
#: that the draws over the ordinary instruments do not see them.
_COLL_LIQ_INSTR = [
    (prod, spec[0], asset, "USDT", w)
    for asset, spec in _COLL_LIQ_SPEC.items()
    for prod, w in _COLL_LIQ_PRODUCTS
]
_ALL_INSTR = _INSTR + _COLL_LIQ_INSTR
#: Share of covered-product events by product (also each user's main product).
_COVERED_SHARE = {
    N.USDM_FUTURES: 0.74,
    N.COINM_FUTURES: 0.09,
    N.CROSS_MARGIN: 0.09,
    N.ISOLATED_MARGIN: 0.08,
}
_UNCOVERED_SHARE = {N.OPTIONS: 0.45, N.SPOT: 0.25, N.LOAN: 0.30}

# --- collateral sets (sorted asset names joined by "|") ---
_COLL_USDT = (
    ("USDT", 0.85),
    ("BNB|USDT", 0.06),
    ("BTC|USDT", 0.04),
    ("ETH|USDT", 0.03),
    ("USDC|USDT", 0.02),
)
_COLL_DEPEG = (
    ("USDe", 0.22),
    ("USDT|USDe", 0.25),
    ("BNSOL", 0.12),
    ("BNSOL|USDT", 0.13),
    ("WBETH", 0.10),
    ("USDT|WBETH", 0.12),
    ("USDe|WBETH", 0.06),
)
_COLL_NAMES = (
    [c for c, _ in _COLL_USDT] + [c for c, _ in _COLL_DEPEG] + ["USDC"] + sorted(_COINM_BASES)
)
_COLL_INDEX = {c: i for i, c in enumerate(_COLL_NAMES)}

# --- users ---
_REGIONS = (
    ("TR", 10),
    ("BR", 7),
    ("VN", 7),
    ("IN", 6),
    ("ID", 5),
    ("RU", 5),
    ("NG", 4),
    ("UA", 4),
    ("FR", 4),
    ("DE", 4),
    ("PH", 4),
    ("KR", 4),
    ("AR", 3),
    ("TH", 3),
    ("AE", 3),
    ("PL", 3),
    ("ES", 3),
    ("IT", 3),
    ("MX", 3),
    ("PK", 3),
    ("JP", 2),
    ("AU", 2),
    ("ZA", 2),
    ("EG", 2),
    ("KZ", 2),
    ("MY", 2),
    ("CO", 2),
    ("NL", 2),
    ("CL", 1),
    ("PT", 1),
    ("SG", 1),
    ("BD", 1),
    ("MA", 1),
)
_RESTRICTED = (("US", 0.50), ("IR", 0.20), ("CU", 0.10), ("SY", 0.10), ("KP", 0.10))
_REGION_NAMES = [r for r, _ in _REGIONS] + [r for r, _ in _RESTRICTED]
_VIP_SHARE = (0.82, 0.09, 0.04, 0.02, 0.012, 0.007, 0.004, 0.003, 0.002, 0.002)
_INSTITUTIONAL_P = (0.004, 0.02, 0.03, 0.05, 0.08, 0.12, 0.20, 0.30, 0.40, 0.50)
_CREATED_FROM = _us(datetime(2017, 7, 14, tzinfo=UTC))
_CREATED_TO = _us(datetime(2025, 10, 8, tzinfo=UTC))


# --------------------------------------------------------------------------------------------
# helpers


def _split(rng: np.random.Generator, n: int, shares: tuple[float, ...]) -> np.ndarray:
    """Label ``n`` items 0..k with exact counts ``round(share * n)`` (label k for the rest).

    Exact counts keep small data sets calibrated: every edge case is present from a few hundred
    users on.
    """
    counts = [round(s * n) for s in shares]
    labels = np.full(n, len(shares), dtype=np.int8)
    chosen = rng.choice(n, size=min(sum(counts), n), replace=False)
    start = 0
    for k, c in enumerate(counts):
        labels[chosen[start : start + c]] = k
        start += c
    return labels


def _pick(rng: np.random.Generator, weights: np.ndarray | list[float], size: int) -> np.ndarray:
    """Indices drawn with the given weights (inverse CDF: one uniform per draw)."""
    cdf = np.cumsum(np.asarray(weights, dtype=np.float64))
    cdf /= cdf[-1]
    u = rng.random(size)
    # A few vector comparisons beat a binary search per draw for the short tables used here.
    out = np.zeros(size, dtype=np.int16)
    for c in cdf[:-1]:
        out += u >= c
    return out


def _to_us(minutes: np.ndarray) -> np.ndarray:
    return (minutes * _US_PER_MIN).astype(np.int64)


def _price_paths(rng: np.random.Generator) -> tuple[list[str], np.ndarray, dict[str, np.ndarray]]:
    """Minute USD prices, shape (assets, N_BARS), assets sorted by name; and for each depeg asset
    its fair-value path (what it would have traded at without the depeg)."""
    t = _T0 + np.arange(N_BARS, dtype=np.int64) * _US_PER_MIN
    shape = np.interp(t, _SHAPE_T, _SHAPE_V)
    paths: dict[str, np.ndarray] = {}
    for asset, (base, depth) in _COINS.items():
        walk = np.cumsum(rng.normal(0.0, 0.0007, N_BARS))
        paths[asset] = base * (1.0 - depth * shape) * np.exp(walk - walk[0])
    for asset in _STABLES:
        paths[asset] = 1.0 + rng.normal(0.0, 0.00015, N_BARS)
    normal = {
        "USDe": np.ones(N_BARS) + rng.normal(0.0, 0.0002, N_BARS),
        "BNSOL": paths["SOL"] * 1.07,
        "WBETH": paths["ETH"] * 1.075,
    }
    for asset, (t_low, low) in _DEPEG_LOW.items():
        i_low = int((t_low - _T0) // _US_PER_MIN)
        dip = low / normal[asset][i_low]
        # The venue's price falls to its low within minutes, is back within a few percent of
        # fair value when the window closes and fully recovered ten minutes later.
        factor = np.interp(
            t,
            [DEPEG_START, t_low, t_low + 12 * _US_PER_MIN, DEPEG_END, _DEPEG_RECOVERED],
            [1.0, dip, dip**0.35, dip**0.05, 1.0],
        )
        path = np.maximum(normal[asset] * factor, low * 1.0005)
        path[i_low] = low
        paths[asset] = path
    assets = sorted(paths)
    return assets, np.round(np.vstack([paths[a] for a in assets]), 8), normal


def _event_times(rng: np.random.Generator, size: int) -> np.ndarray:
    """In-window event times (microseconds): the intraday profile of the cascade."""
    comp = _pick(rng, [0.52, 0.22, 0.10, 0.08, 0.08], size)
    u = rng.random(size)
    # the cascade around 21:15 (normal, 8 min), by default
    out = PEAK + _to_us(rng.normal(0.0, 8.0, size))
    # the broad crash, 20:50-22:30
    out = np.where(comp == 1, _hm(20, 50) + _to_us(u * 100.0), out)
    # the aftermath, decaying from 22:30; what would spill past the window lands on the 11th
    tail = _hm(22, 30) + _to_us(u * 0.0 + rng.exponential(90.0, size))
    tail = np.where(tail < _DAY12, tail, _DAY11 + tail % (_DAY12 - _DAY11))
    out = np.where(comp == 2, tail, out)
    out = np.where(comp == 3, _DAY10 + (u * (_hm(20, 50) - _DAY10)).astype(np.int64), out)
    out = np.where(comp == 4, _DAY11 + (u * (_DAY12 - _DAY11)).astype(np.int64), out)
    return np.clip(out, _DAY10, _DAY12 - 1)


def _outside_times(rng: np.random.Generator, size: int) -> np.ndarray:
    """Times just outside the window: 2025-10-09 23:59, exactly 2025-10-12 00:00, or later."""
    comp = _pick(rng, [0.45, 0.20, 0.35], size)
    u = rng.random(size)
    return np.where(
        comp == 0,
        _SNAP_MIN + _to_us(u),
        np.where(comp == 1, _DAY12, _DAY12 + _to_us(u * 60.0)),
    )


def _user_losses(rng: np.random.Generator, n: int) -> np.ndarray:
    """Target counted loss per user (USD): threshold clusters, log-normal body, Pareto tail."""
    kind = _split(rng, n, (0.045, 0.035, 0.01, 0.025))
    loss = np.exp(np.log(5_000.0) + 1.45 * rng.normal(0.0, 1.0, n))
    u = rng.random(n)
    loss = np.where(kind == 0, 36.0 + 13.5 * u, loss)  # just below USD 50
    loss = np.where(kind == 1, np.exp(np.log(2.0) + u * np.log(25.0)), loss)  # small, 2..50
    loss = np.where(kind == 2, 50.5 + 14.5 * u, loss)  # just above USD 50
    pareto = 60_000.0 * (1.0 - u) ** (-1.0 / 1.15)
    return np.where(kind == 3, np.minimum(pareto, 250e6), loss)


# --------------------------------------------------------------------------------------------
# tables


@dataclass(frozen=True)
class _People:
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


def _people(rng: np.random.Generator, n: int) -> _People:
    m = SNAPSHOT_MULTIPLE * n
    ids = 10_000_000 + 7 * np.arange(m, dtype=np.int64) + rng.integers(0, 7, m)
    liq_pos = np.sort(rng.choice(m, n, replace=False))
    kind = _split(rng, n, (0.02, 0.01))
    target_loss = _user_losses(rng, n)
    depeg_user = (kind == 2) & (_split(rng, n, (0.07,)) == 0)
    main_product = _pick(rng, list(_COVERED_SHARE.values()), n)
    # Mostly long; the largest losses were longs caught by the cascade.
    short_biased = rng.random(n) < np.where(target_loss < 100_000.0, 0.13, 0.10)
    long_bias = np.where(short_biased, 0.25, 0.96)
    depeg_coll = _pick(rng, [w for _, w in _COLL_DEPEG], n)
    coll_sold = depeg_user & (rng.random(n) < 0.9)
    coll_share = rng.uniform(0.3, 0.85, n)
    return _People(
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
class _Losses:
    """Per liquidated user, as the eligibility rules will see it."""

    counted: np.ndarray  # USD loss on covered products inside the window, fees included
    depeg_cents: np.ndarray  # depeg compensation owed by the rules (sales inside the depeg window)
    review_cents: np.ndarray  # the same formula on sales outside the depeg window


@dataclass(frozen=True)
class _CollateralSales:
    """Forced sales of depeg collateral: one entry per event (``e_*``), and per-user cents."""

    e_user: np.ndarray
    ts: np.ndarray
    instr: np.ndarray  # index into ``_ALL_INSTR``
    quantity: np.ndarray
    liq_price: np.ndarray  # USDT
    realised: np.ndarray  # USDT
    fee: np.ndarray  # USDT
    coll: np.ndarray  # index into ``_COLL_NAMES``
    depeg_cents: np.ndarray  # per user
    review_cents: np.ndarray  # per user


def _collateral_sales(
    rng: np.random.Generator,
    p: _People,
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
    depeg_names = list(_COLL_LIQ_SPEC)
    # Depeg assets of each depeg collateral set, in the order of _COLL_LIQ_SPEC.
    set_assets = [
        [k for k, a in enumerate(depeg_names) if a in name.split(N.COLLATERAL_SEP)]
        for name, _ in _COLL_DEPEG
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
    t_low = np.array([_DEPEG_LOW[a][0] for a in depeg_names], dtype=np.int64)[e_asset]
    where = _pick(rng, [0.92, 0.03, 0.05], n_ev)
    u = rng.random(n_ev)
    inside = t_low + _to_us(rng.normal(0.0, 5.0, n_ev))
    # Reflected at the window's start (its end is six standard deviations away), not clipped,
    # which would pile sales up on the edge.
    inside = np.clip(
        np.where(inside < DEPEG_START, 2 * DEPEG_START - inside, inside), DEPEG_START, DEPEG_END - 1
    )
    ts = np.where(
        where == 0,
        inside,
        np.where(where == 1, DEPEG_START - 1 - _to_us(u * 10.0), DEPEG_END + _to_us(u * 10.0)),
    )
    # The window's edges: one sale exactly at its first instant, one exactly at its end.
    for label, edge in ((0, DEPEG_START), (2, DEPEG_END)):
        pool = np.flatnonzero(where == label)
        if pool.size >= 2:
            ts[rng.choice(pool)] = edge
    minute = ((ts - _T0) // _US_PER_MIN).astype(np.int32)

    # prices (USD, then USDT at the venue's tick), quantities, losses and fees
    asset_row = np.array([a_idx[a] for a in depeg_names])[e_asset]
    usdt = px[a_idx["USDT"], minute]
    low = np.array([_DEPEG_LOW[a][1] for a in depeg_names])[e_asset]
    sale_usd = np.maximum(px[asset_row, minute] * (1.0 + rng.normal(0.0, 0.002, n_ev)), low)
    fair_usd = np.vstack([fair[a] for a in depeg_names])[e_asset, minute]
    weight = rng.gamma(1.5, 1.0, n_ev)
    weight_sum = np.bincount(e_user, weights=weight, minlength=n)
    planned = (p.target_loss * p.coll_share)[e_user] * weight / weight_sum[e_user]
    liq_price = np.empty(n_ev)
    quantity = np.empty(n_ev)
    for k, a in enumerate(depeg_names):
        rows = e_asset == k
        _, tick, lot = _COLL_LIQ_SPEC[a]
        liq_price[rows] = np.maximum(np.round(sale_usd[rows] / usdt[rows], tick), 10.0**-tick)
        liq_usd = liq_price[rows] * usdt[rows]
        # The gap is floored so that a sale near fair value does not imply an absurd position.
        qty = planned[rows] / np.maximum(fair_usd[rows] - liq_usd, 0.15 * fair_usd[rows])
        quantity[rows] = np.maximum(np.round(qty, lot), 10.0**-lot)
    liq_usd = liq_price * usdt
    realised = np.round(quantity * np.maximum(fair_usd - liq_usd, 0.0) / usdt, 8)
    fee = np.round(quantity * liq_price * rng.uniform(0.005, 0.015, n_ev), 8)
    product = _pick(rng, [w for _, w in _COLL_LIQ_PRODUCTS], n_ev)
    instr = (len(_INSTR) + e_asset * len(_COLL_LIQ_PRODUCTS) + product).astype(np.int16)
    coll = (len(_COLL_USDT) + p.depeg_coll[e_user]).astype(np.int16)

    # Compensation owed, as allocator.depeg.compensation computes it with its default rules.
    i_ref = int((DEPEG_REFERENCE_AT - _T0) // _US_PER_MIN)
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


def _events(
    rng: np.random.Generator,
    p: _People,
    assets: list[str],
    px: np.ndarray,
    fair: dict[str, np.ndarray],
) -> tuple[pl.DataFrame, _Losses]:
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
    ts[edge] = np.where(np.arange(edge.size) % 2 == 0, _DAY10, _DAY12 - 1)

    # product, instrument, assets
    product = np.where(
        rng.random(n_ev) < 0.7,
        p.main_product[e_user],
        _pick(rng, list(_COVERED_SHARE.values()), n_ev),
    )
    product = np.where(
        e_cat == 1, len(_COVERED_SHARE) + _pick(rng, list(_UNCOVERED_SHARE.values()), n_ev), product
    )
    instr = np.empty(n_ev, dtype=np.int16)
    for p_code, p_name in enumerate(list(_COVERED_SHARE) + list(_UNCOVERED_SHARE)):
        rows = np.flatnonzero(product == p_code)
        choices = [i for i, ins in enumerate(_INSTR) if ins[0] == p_name]
        instr[rows] = np.asarray(choices)[_pick(rng, [_INSTR[i][4] for i in choices], rows.size)]
    del product
    base_a = np.array([a_idx[ins[2]] for ins in _INSTR], dtype=np.int16)[instr]
    settle_a = np.array([a_idx[ins[3]] for ins in _INSTR], dtype=np.int16)[instr]
    coinm = np.array([ins[0] == N.COINM_FUTURES for ins in _INSTR])[instr]

    # amounts: a user's counted loss is split over their covered in-window events (less the
    # share that the forced sales of depeg collateral take, see _collateral_sales)
    minute = ((ts - _T0) // _US_PER_MIN).astype(np.int32)
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
    coll = _pick(rng, [w for _, w in _COLL_USDT], n_ev)
    coll = np.where(settle_a == a_idx["USDC"], _COLL_INDEX["USDC"], coll)
    depeg_ev = depeg_user_ev & ~coinm
    coll = np.where(depeg_ev, len(_COLL_USDT) + p.depeg_coll[e_user], coll)
    settle_to_coll = np.array([_COLL_INDEX.get(a, 0) for a in assets], dtype=np.int16)
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
    sale_covered = np.array([ins[0] in _COVERED_SHARE for ins in _ALL_INSTR])[sales.instr]
    cov = np.concatenate([cov, sale_covered])
    n_ev += k

    # counted loss per user, converted as the eligibility rules do (latest bar at or before)
    settle_px = px[settle_a, ((ts - _T0) // _US_PER_MIN).astype(np.int32)]
    counted = cov & (ts >= _DAY10) & (ts < _DAY12)
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
            N.PRODUCT: pl.Series([ins[0] for ins in _ALL_INSTR]).gather(instr[order]),
            N.SYMBOL: pl.Series([ins[1] for ins in _ALL_INSTR]).gather(instr[order]),
            N.SIDE: pl.Series(list(N.SIDES)).gather((~is_long[order]).astype(np.int8)),
            N.QUANTITY: quantity[order],
            N.LIQ_PRICE: liq_price[order],
            N.REALISED_LOSS: realised[order],
            N.LIQ_FEE: fee[order],
            N.SETTLE_ASSET: pl.Series(assets).gather(settle_a[order]),
            N.COLLATERAL: pl.Series(_COLL_NAMES).gather(coll[order]),
        },
        schema=SCHEMAS[N.EVENTS_FILE],
    )
    return events, _Losses(loss_counted, sales.depeg_cents, sales.review_cents)


def _snapshot(
    rng: np.random.Generator, p: _People, losses: _Losses
) -> tuple[pl.DataFrame, np.ndarray]:
    """Net assets at the snapshot: from a loss ratio for the liquidated, a broad spread for others.

    Returns the table and the net assets of the liquidated users (also those left out of it).
    """
    n = p.uid.size
    ratio = np.clip(np.exp(np.log(0.6) + 0.85 * rng.normal(0.0, 1.0, n)), 0.02, 4.0)
    rkind = _split(rng, n, (0.045, 0.01, 0.006))
    ratio = np.where(rkind == 0, rng.uniform(0.25, 0.297, n), ratio)  # just below 30%
    generic = np.exp(np.log(2_000.0) + 1.8 * rng.normal(0.0, 1.0, n))
    net = np.where(losses.counted > 0, losses.counted / ratio, generic)
    net = np.where(rkind == 1, 0.0, net)
    net = np.where(rkind == 2, -np.exp(np.log(200.0) + rng.normal(0.0, 1.0, n)), net)
    net = np.round(net, 2)
    m = p.ids.size
    # Never-liquidated users: broad spread, some empty accounts and a few in deficit.
    net_all = np.round(np.exp(np.log(300.0) + 2.0 * rng.normal(0.0, 1.0, m)), 2)
    u = rng.random(m)
    net_all = np.where(u < 0.04, 0.0, np.where(u < 0.043, -0.05 * net_all, net_all))
    net_all[p.liq_pos] = net
    keep = np.ones(m, dtype=bool)
    keep[p.liq_pos[_split(rng, n, (0.015,)) == 0]] = False
    table = pl.DataFrame(
        {N.USER_ID: p.ids[keep], N.NET_ASSETS_USD: net_all[keep]}, schema=SCHEMAS[N.SNAPSHOT_FILE]
    )
    return table, net


def _users(rng: np.random.Generator, p: _People, net: np.ndarray, losses: _Losses) -> pl.DataFrame:
    """User attributes: tiers grow with wealth; regions, KYC, depeg compensation already paid."""
    n = p.uid.size
    score = np.log(np.maximum(np.maximum(net, losses.counted), 1.0)) + rng.normal(0.0, 1.0, n)
    rank = np.empty(n)
    rank[np.argsort(score, kind="stable")] = (np.arange(n) + 0.5) / n
    vip = np.searchsorted(np.cumsum(_VIP_SHARE)[:-1], rank, side="right").astype(np.int64)
    institutional = rng.random(n) < np.asarray(_INSTITUTIONAL_P)[vip]
    region = _pick(rng, [w for _, w in _REGIONS], n)
    restricted = _split(rng, n, (0.015,)) == 0
    region = np.where(
        restricted, len(_REGIONS) + _pick(rng, [w for _, w in _RESTRICTED], n), region
    )
    kyc = _split(rng, n, (0.0055, 0.0045))  # pending, unverified; the rest verified
    kyc_code = np.where(kyc == 0, 1, np.where(kyc == 1, 2, 0))
    created = _CREATED_FROM + ((1.0 - rng.random(n) ** 2) * (_CREATED_TO - _CREATED_FROM)).astype(
        np.int64
    )
    created -= created % 1_000_000
    # Depeg compensation as the rules compute it, paid to almost everyone owed it; about half of
    # those whose collateral was sold only outside the window were paid the same formula on
    # those sales after a case review.
    unpaid = (losses.depeg_cents > 0) & (rng.random(n) < 0.02)
    reviewed = (losses.depeg_cents == 0) & (losses.review_cents > 0) & (rng.random(n) < 0.5)
    cents = np.where(unpaid, 0, np.where(reviewed, losses.review_cents, losses.depeg_cents))
    comp = cents / 100.0
    keep = _split(rng, n, (0.002,)) != 0
    return pl.DataFrame(
        {
            N.USER_ID: p.uid[keep],
            N.VIP_TIER: vip[keep],
            N.IS_INSTITUTIONAL: institutional[keep],
            N.REGION: pl.Series(_REGION_NAMES).gather(region[keep]),
            N.CREATED_AT: pl.Series(created[keep]).cast(pl.Datetime("us", "UTC")),
            N.KYC_STATUS: pl.Series(list(N.KYC_STATUSES)).gather(kyc_code[keep]),
            N.DEPEG_COMP_USD: comp[keep],
        },
        schema=SCHEMAS[N.USERS_FILE],
    )


def _prices(assets: list[str], px: np.ndarray) -> pl.DataFrame:
    bars = _T0 + np.arange(N_BARS, dtype=np.int64) * _US_PER_MIN
    return pl.DataFrame(
        {
            N.ASSET: pl.Series(assets).gather(np.repeat(np.arange(len(assets)), N_BARS)),
            N.PRICE_TS: pl.Series(np.tile(bars, len(assets))).cast(pl.Datetime("us", "UTC")),
            N.PRICE_USD: px.ravel(),
        },
        schema=SCHEMAS[N.PRICES_FILE],
    )


def generate_tables(
    users: int = DEFAULT_USERS, seed: int = DEFAULT_SEED
) -> dict[str, pl.DataFrame]:
    """Build the four input tables in memory (see the module docstring for what they model).

    Parameters
    ----------
    users : int
        Number of liquidated users (>= 1); the events table has about ``5 * users`` rows and
        the snapshot about ``10 * users``.
    seed : int
        Seed of the random generator (>= 0).

    Returns
    -------
    dict of str to polars.DataFrame
        Keyed by table stem, each with the columns and types of :data:`allocator.data.inputs.SCHEMAS`.
    """
    if int(users) < 1:
        raise InputError(f"cannot generate data for {users} liquidated users: need at least 1.")
    if int(seed) < 0:
        raise InputError(f"seed must be a non-negative integer, got {seed}.")
    rng = np.random.default_rng(int(seed))
    assets, px, fair = _price_paths(rng)
    people = _people(rng, int(users))
    events, losses = _events(rng, people, assets, px, fair)
    snapshot, net = _snapshot(rng, people, losses)
    users_df = _users(rng, people, net, losses)
    return {
        N.EVENTS_FILE: events,
        N.PRICES_FILE: _prices(assets, px),
        N.SNAPSHOT_FILE: snapshot,
        N.USERS_FILE: users_df,
    }


# --------------------------------------------------------------------------------------------
# files

#: Most liquidated users :func:`generate` accepts. Far above the 2M-user stress size, but every
#: table is built in memory (about 2 GB per million users), so a mistyped size is refused at
#: once instead of failing after minutes with an out-of-memory error.
MAX_USERS = 50_000_000


def _check_destination(out_dir: Path, fmt: str) -> None:
    """Refuse an output directory whose contents :func:`generate` would clobber or confuse.

    A run directory (it holds ``manifest.json``) is the allocator's output, not a data
    directory. Tables in the other format would make the directory ambiguous for
    :func:`allocator.data.inputs.load_inputs`; they may be the user's real data, so they are never
    deleted: the user decides.
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"output path {out_dir} exists and is not a directory.")
    if not out_dir.is_dir():
        return
    if (out_dir / N.MANIFEST_FILE).exists():
        raise InputError(
            f"output directory {out_dir} is an allocator run directory (it holds "
            f"{N.MANIFEST_FILE}); synthetic tables are not written into runs. Choose another "
            f"--out, for example data/synthetic. Nothing was written."
        )
    others = [
        out_dir / f"{stem}.{other}"
        for stem in N.INPUT_TABLES
        for other in FORMATS
        if other != fmt and (out_dir / f"{stem}.{other}").exists()
    ]
    if others:
        other = others[0].suffix.lstrip(".")
        raise InputError(
            f"output directory {out_dir} already holds {other} tables "
            f"({', '.join(p.name for p in others)}); writing {fmt} tables beside them would leave "
            f"each table in two formats, and they are not deleted for you. Choose another --out, "
            f"write --format {other} instead, or move or delete those files first. Nothing was "
            f"written."
        )


def _write_table(df: pl.DataFrame, path: Path, fmt: str) -> None:
    if fmt == "parquet":
        df.write_parquet(path, compression="zstd", compression_level=1, statistics=True)
    else:
        df.write_csv(path)


def _install(tmp: Path, out_dir: Path, fmt: str) -> None:
    """Move the tables built in ``tmp`` into ``out_dir``, each file by an atomic rename.

    Only the four table files of format ``fmt`` are replaced; nothing else in ``out_dir`` is
    touched (:func:`_check_destination` has refused a directory holding the other format).
    """
    try:
        os.rename(tmp, out_dir)
        return
    except OSError:
        if not out_dir.is_dir():
            raise
    for stem in N.INPUT_TABLES:
        os.replace(tmp / f"{stem}.{fmt}", out_dir / f"{stem}.{fmt}")
    shutil.rmtree(tmp, ignore_errors=True)


def _build(out_dir: Path, users: int, seed: int, fmt: str) -> Path:
    """Write every table into a fresh hidden sibling of ``out_dir`` and return it."""
    if fmt not in FORMATS:
        raise InputError(f"unknown data format {fmt!r}: use one of {', '.join(FORMATS)}.")
    tables = generate_tables(users, seed)  # first: bad arguments leave no folder behind
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # A unique hidden sibling, created with the caller's umask (mkdtemp would make it 0700).
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:12]}"
    tmp.mkdir()
    try:
        for stem in N.INPUT_TABLES:
            _write_table(tables.pop(stem), tmp / f"{stem}.{fmt}", fmt)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return tmp


def generate(
    out_dir: str | Path,
    *,
    users: int = DEFAULT_USERS,
    seed: int = DEFAULT_SEED,
    fmt: str = "parquet",
) -> dict[str, Path]:
    """Write a synthetic data directory for ``users`` liquidated users.

    The tables are built in a temporary sibling of ``out_dir`` and moved into place by renames,
    so a reader never sees a half-written file. Table files of the same format already in
    ``out_dir`` are replaced; any other file is left alone. The same ``(users, seed)`` writes
    byte-identical files.

    Parameters
    ----------
    out_dir : str or Path
        Directory to create or update; not empty text (which would mean the current
        directory).
    users : int
        Number of liquidated users, 1 to :data:`MAX_USERS`; about ``5 * users`` events and
        ``10 * users`` snapshot rows.
    seed : int
        Seed of the random generator: any integer >= 0.
    fmt : {"parquet", "csv"}
        File format of the tables.

    Returns
    -------
    dict of str to Path
        The file written for each table stem.

    Raises
    ------
    InputError
        For an empty ``out_dir``, a path that is not a directory, a run directory (it holds
        ``manifest.json``), a directory holding tables of the other format, ``users`` outside
        1..:data:`MAX_USERS`, a negative ``seed`` or an unknown format. Nothing is written.
    """
    if not str(out_dir).strip():
        # Path("") is Path("."): an empty --out (an unset shell variable) would fill the
        # current directory.
        raise InputError(
            "output directory is empty text; give a directory path, for example data/synthetic. "
            "Nothing was written."
        )
    out_dir = Path(out_dir)
    if int(users) > MAX_USERS:
        raise InputError(
            f"cannot generate data for {int(users):,} liquidated users: the limit is "
            f"{MAX_USERS:,} (every table is built in memory, about 2 GB per million users). "
            f"Nothing was written."
        )
    if fmt not in FORMATS:
        raise InputError(f"unknown data format {fmt!r}: use one of {', '.join(FORMATS)}.")
    _check_destination(out_dir, fmt)
    tmp = _build(out_dir, users, seed, fmt)
    try:
        _install(tmp, out_dir, fmt)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return {stem: out_dir / f"{stem}.{fmt}" for stem in N.INPUT_TABLES}


def cache_root() -> Path:
    """``$ALLOCATOR_CACHE_DIR`` if set, else ``~/.cache/allocator``."""
    env = os.environ.get("ALLOCATOR_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "allocator"


def default_data_dir(*, users: int = DEFAULT_USERS, seed: int = DEFAULT_SEED) -> Path:
    """The built-in default data directory, generated on first use and cached.

    The cache folder is keyed by package version, generator version, size and seed. When two
    processes race, each builds in its own temporary directory and renames it into place; the
    loser finds the target taken and uses it.
    """
    target = cache_root() / f"data-{__version__}-gen{GENERATOR_VERSION}-u{users}-s{seed}"
    if _complete(target):
        return target
    if target.exists():
        # Not made by us (we only ever rename complete directories in): rebuild its tables.
        generate(target, users=users, seed=seed)
        return target
    tmp = _build(target, users, seed, "parquet")
    try:
        os.rename(tmp, target)
    except OSError:
        if not _complete(target):
            raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _complete(path: Path) -> bool:
    return all((path / f"{stem}.parquet").is_file() for stem in N.INPUT_TABLES)
