"""Synthetic accounts: the snapshot of net assets and the users table (region, KYC, VIP tier)."""

from __future__ import annotations

import numpy as np
import polars as pl

from allocator import names as N
from allocator.data.schemas import SCHEMAS
from allocator.data.synthetic_calibration import (
    CREATED_FROM,
    CREATED_TO,
    INSTITUTIONAL_P,
    REGION_NAMES,
    REGIONS,
    RESTRICTED,
    VIP_SHARE,
    exact_split,
    pick,
)
from allocator.data.synthetic_events import Losses, People


def snapshot_table(
    rng: np.random.Generator, p: People, losses: Losses
) -> tuple[pl.DataFrame, np.ndarray]:
    """Net assets at the snapshot: from a loss ratio for the liquidated, a broad spread for others.

    Returns the table and the net assets of the liquidated users (also those left out of it).
    """
    n = p.uid.size
    ratio = np.clip(np.exp(np.log(0.6) + 0.85 * rng.normal(0.0, 1.0, n)), 0.02, 4.0)
    rkind = exact_split(rng, n, (0.045, 0.01, 0.006))
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
    keep[p.liq_pos[exact_split(rng, n, (0.015,)) == 0]] = False
    table = pl.DataFrame(
        {N.USER_ID: p.ids[keep], N.NET_ASSETS_USD: net_all[keep]}, schema=SCHEMAS[N.SNAPSHOT_FILE]
    )
    return table, net


def users_table(
    rng: np.random.Generator, p: People, net: np.ndarray, losses: Losses
) -> pl.DataFrame:
    """User attributes: tiers grow with wealth; regions, KYC, depeg compensation already paid."""
    n = p.uid.size
    score = np.log(np.maximum(np.maximum(net, losses.counted), 1.0)) + rng.normal(0.0, 1.0, n)
    rank = np.empty(n)
    rank[np.argsort(score, kind="stable")] = (np.arange(n) + 0.5) / n
    vip = np.searchsorted(np.cumsum(VIP_SHARE)[:-1], rank, side="right").astype(np.int64)
    institutional = rng.random(n) < np.asarray(INSTITUTIONAL_P)[vip]
    region = pick(rng, [w for _, w in REGIONS], n)
    restricted = exact_split(rng, n, (0.015,)) == 0
    region = np.where(restricted, len(REGIONS) + pick(rng, [w for _, w in RESTRICTED], n), region)
    kyc = exact_split(rng, n, (0.0055, 0.0045))  # pending, unverified; the rest verified
    kyc_code = np.where(kyc == 0, 1, np.where(kyc == 1, 2, 0))
    created = CREATED_FROM + ((1.0 - rng.random(n) ** 2) * (CREATED_TO - CREATED_FROM)).astype(
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
    keep = exact_split(rng, n, (0.002,)) != 0
    return pl.DataFrame(
        {
            N.USER_ID: p.uid[keep],
            N.VIP_TIER: vip[keep],
            N.IS_INSTITUTIONAL: institutional[keep],
            N.REGION: pl.Series(REGION_NAMES).gather(region[keep]),
            N.CREATED_AT: pl.Series(created[keep]).cast(pl.Datetime("us", "UTC")),
            N.KYC_STATUS: pl.Series(list(N.KYC_STATUSES)).gather(kyc_code[keep]),
            N.DEPEG_COMP_USD: comp[keep],
        },
        schema=SCHEMAS[N.USERS_FILE],
    )
