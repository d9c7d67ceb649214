"""Synthetic prices: one bar per minute and asset, through the crash and the depeg."""

from __future__ import annotations

import numpy as np
import polars as pl

from allocator import names as N
from allocator.data.schemas import SCHEMAS
from allocator.data.synthetic_calibration import (
    COINS,
    DEPEG_END,
    DEPEG_LOW,
    DEPEG_RECOVERED,
    DEPEG_START,
    N_BARS,
    SHAPE_T,
    SHAPE_V,
    STABLES,
    T0,
    US_PER_MIN,
)


def price_paths(rng: np.random.Generator) -> tuple[list[str], np.ndarray, dict[str, np.ndarray]]:
    """Minute USD prices, shape (assets, N_BARS), assets sorted by name; and for each depeg asset
    its fair-value path (what it would have traded at without the depeg)."""
    t = T0 + np.arange(N_BARS, dtype=np.int64) * US_PER_MIN
    shape = np.interp(t, SHAPE_T, SHAPE_V)
    paths: dict[str, np.ndarray] = {}
    for asset, (base, depth) in COINS.items():
        walk = np.cumsum(rng.normal(0.0, 0.0007, N_BARS))
        paths[asset] = base * (1.0 - depth * shape) * np.exp(walk - walk[0])
    for asset in STABLES:
        paths[asset] = 1.0 + rng.normal(0.0, 0.00015, N_BARS)
    normal = {
        "USDe": np.ones(N_BARS) + rng.normal(0.0, 0.0002, N_BARS),
        "BNSOL": paths["SOL"] * 1.07,
        "WBETH": paths["ETH"] * 1.075,
    }
    for asset, (t_low, low) in DEPEG_LOW.items():
        i_low = int((t_low - T0) // US_PER_MIN)
        dip = low / normal[asset][i_low]
        # The venue's price falls to its low within minutes, is back within a few percent of
        # fair value when the window closes and fully recovered ten minutes later.
        factor = np.interp(
            t,
            [DEPEG_START, t_low, t_low + 12 * US_PER_MIN, DEPEG_END, DEPEG_RECOVERED],
            [1.0, dip, dip**0.35, dip**0.05, 1.0],
        )
        path = np.maximum(normal[asset] * factor, low * 1.0005)
        path[i_low] = low
        paths[asset] = path
    assets = sorted(paths)
    return assets, np.round(np.vstack([paths[a] for a in assets]), 8), normal


def prices_table(assets: list[str], px: np.ndarray) -> pl.DataFrame:
    bars = T0 + np.arange(N_BARS, dtype=np.int64) * US_PER_MIN
    return pl.DataFrame(
        {
            N.ASSET: pl.Series(assets).gather(np.repeat(np.arange(len(assets)), N_BARS)),
            N.PRICE_TS: pl.Series(np.tile(bars, len(assets))).cast(pl.Datetime("us", "UTC")),
            N.PRICE_USD: px.ravel(),
        },
        schema=SCHEMAS[N.PRICES_FILE],
    )
