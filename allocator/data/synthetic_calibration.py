"""Calibration of the synthetic data: the crash's calendar, assets, instruments and regions.

The numbers every table of :mod:`allocator.data.synthetic` is drawn around (prices before and at
the low of the crash, the depeg window, product and collateral mixes, regions), and the random
helpers the tables share.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np

from allocator import names as N

#: Bump when the generator's output changes for a given (users, seed); it keys the cache.
GENERATOR_VERSION = 3
DEFAULT_USERS = 200_000
DEFAULT_SEED = 20251010
#: Snapshot rows per liquidated user (most snapshot users were never liquidated).
SNAPSHOT_MULTIPLE = 10
US_PER_MIN = 60_000_000


def _us(dt: datetime) -> int:
    return int(dt.timestamp()) * 1_000_000 + dt.microsecond


#: Price bars: one per minute from PRICE_START to PRICE_END inclusive.
PRICE_START = datetime(2025, 10, 9, 23, 0, tzinfo=UTC)
PRICE_END = datetime(2025, 10, 12, 1, 0, tzinfo=UTC)
N_BARS = int((PRICE_END - PRICE_START).total_seconds() // 60) + 1
T0 = _us(PRICE_START)
DAY10 = _us(datetime(2025, 10, 10, tzinfo=UTC))
DAY11 = _us(datetime(2025, 10, 11, tzinfo=UTC))
DAY12 = _us(datetime(2025, 10, 12, tzinfo=UTC))
SNAP_MIN = _us(datetime(2025, 10, 9, 23, 59, tzinfo=UTC))


def at_hm(h: int, m: int) -> int:
    """Microseconds at hh:mm on 2025-10-10."""
    return DAY10 + (h * 60 + m) * US_PER_MIN


PEAK = at_hm(21, 15)
DEPEG_START, DEPEG_END = at_hm(21, 36), at_hm(22, 16)
DEPEG_LOW = {
    "USDe": (at_hm(21, 44), 0.66),
    "BNSOL": (at_hm(21, 43), 34.90),
    "WBETH": (at_hm(21, 45), 430.65),
}
#: Full recovery of the depegged prices, ten minutes after the window closes.
DEPEG_RECOVERED = DEPEG_END + 10 * US_PER_MIN
#: Depeg compensation as paid in the data: the defaults of ``allocator.depeg.compensation.DepegRules``
#: (checked against them by the tests), repeated here so that the data never changes silently.
DEPEG_REFERENCE_AT = DAY11
DEPEG_FLOORS = {"USDe": 1.0}
# Collateral sales: symbol, price decimals (tick) and quantity decimals (lot step) per asset.
COLL_LIQ_SPEC = {
    "USDe": ("USDEUSDT", 4, 2),
    "BNSOL": ("BNSOLUSDT", 2, 3),
    "WBETH": ("WBETHUSDT", 2, 4),
}
COLL_LIQ_PRODUCTS = (
    (N.CROSS_MARGIN, 0.45),
    (N.ISOLATED_MARGIN, 0.15),
    (N.USDM_FUTURES, 0.30),
    (N.LOAN, 0.10),
)
# --- assets: pre-crash USD price and depth of the crash (fraction lost at the low) ---
COINS: dict[str, tuple[float, float]] = {
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
STABLES = ("USDT", "USDC")
#: Crash shape: fraction of the crash depth reached at each time (linear in between).
SHAPE_T = np.array(
    [at_hm(20, 50), at_hm(21, 5), at_hm(21, 15), at_hm(21, 20), at_hm(21, 40), at_hm(22, 30)]
)
SHAPE_V = np.array([0.0, 0.2, 0.75, 1.0, 0.8, 0.55])
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


INSTR = _instruments()
#: Forced sales of depeg collateral (asset-major, then product), kept apart from ``INSTR`` so
#: that the draws over the ordinary instruments do not see them.
_COLL_LIQ_INSTR = [
    (prod, spec[0], asset, "USDT", w)
    for asset, spec in COLL_LIQ_SPEC.items()
    for prod, w in COLL_LIQ_PRODUCTS
]
ALL_INSTR = INSTR + _COLL_LIQ_INSTR
#: Share of covered-product events by product (also each user's main product).
COVERED_SHARE = {
    N.USDM_FUTURES: 0.74,
    N.COINM_FUTURES: 0.09,
    N.CROSS_MARGIN: 0.09,
    N.ISOLATED_MARGIN: 0.08,
}
UNCOVERED_SHARE = {N.OPTIONS: 0.45, N.SPOT: 0.25, N.LOAN: 0.30}
# --- collateral sets (sorted asset names joined by "|") ---
COLL_USDT = (
    ("USDT", 0.85),
    ("BNB|USDT", 0.06),
    ("BTC|USDT", 0.04),
    ("ETH|USDT", 0.03),
    ("USDC|USDT", 0.02),
)
COLL_DEPEG = (
    ("USDe", 0.22),
    ("USDT|USDe", 0.25),
    ("BNSOL", 0.12),
    ("BNSOL|USDT", 0.13),
    ("WBETH", 0.10),
    ("USDT|WBETH", 0.12),
    ("USDe|WBETH", 0.06),
)
COLL_NAMES = (
    [c for c, _ in COLL_USDT] + [c for c, _ in COLL_DEPEG] + ["USDC"] + sorted(_COINM_BASES)
)
COLL_INDEX = {c: i for i, c in enumerate(COLL_NAMES)}
# --- users ---
REGIONS = (
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
RESTRICTED = (("US", 0.50), ("IR", 0.20), ("CU", 0.10), ("SY", 0.10), ("KP", 0.10))
REGION_NAMES = [r for r, _ in REGIONS] + [r for r, _ in RESTRICTED]
VIP_SHARE = (0.82, 0.09, 0.04, 0.02, 0.012, 0.007, 0.004, 0.003, 0.002, 0.002)
INSTITUTIONAL_P = (0.004, 0.02, 0.03, 0.05, 0.08, 0.12, 0.20, 0.30, 0.40, 0.50)
CREATED_FROM = _us(datetime(2017, 7, 14, tzinfo=UTC))
CREATED_TO = _us(datetime(2025, 10, 8, tzinfo=UTC))


def exact_split(rng: np.random.Generator, n: int, shares: tuple[float, ...]) -> np.ndarray:
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


def pick(rng: np.random.Generator, weights: np.ndarray | list[float], size: int) -> np.ndarray:
    """Indices drawn with the given weights (inverse CDF: one uniform per draw)."""
    cdf = np.cumsum(np.asarray(weights, dtype=np.float64))
    cdf /= cdf[-1]
    u = rng.random(size)
    # A few vector comparisons beat a binary search per draw for the short tables used here.
    out = np.zeros(size, dtype=np.int16)
    for c in cdf[:-1]:
        out += u >= c
    return out


def to_us(minutes: np.ndarray) -> np.ndarray:
    return (minutes * US_PER_MIN).astype(np.int64)
