"""A cheap generator of exchange-size input data, written in row groups (benchmarks only).

The synthetic generator of :mod:`allocator.data.synthetic` draws every table in memory and is
calibrated user by user; at an exchange's size (hundreds of millions of accounts) that would
take longer and hold more than the pass it is meant to measure. This one writes each table a
chunk at a time through ``pyarrow.parquet.ParquetWriter``, so its memory is one chunk's, and
draws only what the eligibility pass reads, with the shapes that matter to it:

- ``snapshot``: one row per account (``--accounts``, user ids ``10**9 + k``, sorted), net
  assets log-normal around USD 3,000 with 2% zero or negative;
- ``liquidations``: ``--events`` events of ``--liquidated`` users (every ``accounts //
  liquidated``-th account), event ids in file order, user ids random; 96% inside the window
  (peaking near 21:15 UTC on 2025-10-10), 94% on covered products; losses log-normal in USDT
  (coin-margined futures in BTC or ETH);
- ``users``: one row per liquidated user (the only rows the eligibility filter keeps; a real
  users table holds every account, which the filter reads like the snapshot);
- ``prices``: the minute bars of :mod:`allocator.data.synthetic_prices`.

Every table satisfies the input contract (:mod:`allocator.data.validation`), and the same
arguments give the same files. A ``sizes.json`` beside them records the arguments; a directory
with other sizes is written again.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from allocator import names as N
from allocator.data.synthetic_prices import price_paths, prices_table

#: Rows drawn and written at a time.
CHUNK = 5_000_000
#: Rows per parquet row group (pyarrow's default): the streaming reader decodes one at a time.
ROW_GROUP = 1 << 20
FIRST_ID = 10**9
_US = 1_000_000
WINDOW_START = 1_760_054_400 * _US  # 2025-10-10 00:00 UTC
PEAK = WINDOW_START + (21 * 3600 + 15 * 60) * _US
DAY = 86_400 * _US
PRODUCTS = np.array(N.PRODUCTS)
PRODUCT_P = np.array([0.55, 0.12, 0.17, 0.10, 0.02, 0.02, 0.02])
SYMBOLS = np.array(["BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT", "DOGEUSDT"])
COIN_SETTLE = np.array(["BTC", "ETH"])
COIN_PRICE = np.array([121_500.0, 4_350.0])
REGIONS = np.array(["BR", "DE", "FR", "GB", "IN", "JP", "KR", "TR", "VN", "US"])


def _strings(values: np.ndarray, index: np.ndarray) -> pa.Array:
    """``values[index]`` as an Arrow string array, built in C++ (no Python string per row)."""
    return pa.DictionaryArray.from_arrays(pa.array(index, pa.int32()), pa.array(values)).cast(
        pa.string()
    )


def _timestamps(us: np.ndarray) -> pa.Array:
    return pa.array(us, pa.int64()).cast(pa.timestamp("us", tz="UTC"))


def _writer(path: Path, schema: pa.Schema) -> pq.ParquetWriter:
    return pq.ParquetWriter(path, schema, compression="zstd", compression_level=1)


def write_snapshot(path: Path, accounts: int, seed: int) -> None:
    schema = pa.schema([(N.USER_ID, pa.int64()), (N.NET_ASSETS_USD, pa.float64())])
    with _writer(path, schema) as out:
        for k, start in enumerate(range(0, accounts, CHUNK)):
            rng = np.random.default_rng([seed, 1, k])
            n = min(CHUNK, accounts - start)
            net = np.round(rng.lognormal(8.0, 1.6, n), 2)
            low = rng.random(n) < 0.02
            net[low] = -np.round(rng.exponential(50.0, int(low.sum())), 2)
            ids = np.arange(FIRST_ID + start, FIRST_ID + start + n, dtype=np.int64)
            out.write_table(pa.table([ids, net], schema=schema), row_group_size=ROW_GROUP)


def liquidated_ids(accounts: int, liquidated: int) -> np.ndarray:
    step = max(1, accounts // liquidated)
    return FIRST_ID + np.arange(liquidated, dtype=np.int64) * step


def write_events(path: Path, events: int, ids: np.ndarray, seed: int) -> None:
    cols = [
        (N.EVENT_ID, pa.int64()),
        (N.USER_ID, pa.int64()),
        (N.TS, pa.timestamp("us", tz="UTC")),
        (N.PRODUCT, pa.string()),
        (N.SYMBOL, pa.string()),
        (N.SIDE, pa.string()),
        (N.QUANTITY, pa.float64()),
        (N.LIQ_PRICE, pa.float64()),
        (N.REALISED_LOSS, pa.float64()),
        (N.LIQ_FEE, pa.float64()),
        (N.SETTLE_ASSET, pa.string()),
        (N.COLLATERAL, pa.string()),
    ]
    schema = pa.schema(cols)
    with _writer(path, schema) as out:
        for k, start in enumerate(range(0, events, CHUNK)):
            rng = np.random.default_rng([seed, 2, k])
            n = min(CHUNK, events - start)
            user = ids[rng.integers(0, ids.size, n)]
            inside = rng.random(n) < 0.96
            ts = np.where(
                inside,
                np.clip(PEAK + rng.normal(0, 2.5 * 3600 * _US, n), WINDOW_START, WINDOW_START + 2 * DAY - 1),
                WINDOW_START + 2 * DAY + rng.integers(0, DAY // 2, n),
            ).astype(np.int64)  # fmt: skip
            product = rng.choice(PRODUCTS.size, n, p=PRODUCT_P)
            coin = product == 1  # coin-margined futures settle in the coin
            which_coin = rng.integers(0, COIN_SETTLE.size, n)
            loss_usd = np.round(rng.lognormal(5.5, 1.8, n), 2)
            loss = np.where(coin, np.round(loss_usd / COIN_PRICE[which_coin], 8), loss_usd)
            fee = np.round(loss * 0.005, 8)
            settle = np.where(coin, which_coin + 1, 0)  # 0: USDT
            price = np.round(rng.lognormal(6.0, 2.0, n), 4) + 0.01
            table = pa.table(
                [
                    np.arange(start + 1, start + n + 1, dtype=np.int64),
                    user,
                    _timestamps(ts),
                    _strings(PRODUCTS, product),
                    _strings(SYMBOLS, rng.integers(0, SYMBOLS.size, n)),
                    _strings(np.array(N.SIDES), (rng.random(n) < 0.13).astype(np.int32)),
                    np.round(loss_usd / price, 6),
                    price,
                    loss,
                    fee,
                    _strings(np.array(["USDT", *COIN_SETTLE]), settle),
                    _strings(
                        np.array(["USDT", "USDT|BNB"]), (rng.random(n) < 0.1).astype(np.int32)
                    ),
                ],
                schema=schema,
            )
            out.write_table(table, row_group_size=ROW_GROUP)


def write_users(path: Path, ids: np.ndarray, seed: int) -> None:
    schema = pa.schema(
        [
            (N.USER_ID, pa.int64()),
            (N.VIP_TIER, pa.int64()),
            (N.IS_INSTITUTIONAL, pa.bool_()),
            (N.REGION, pa.string()),
            (N.CREATED_AT, pa.timestamp("us", tz="UTC")),
            (N.KYC_STATUS, pa.string()),
            (N.DEPEG_COMP_USD, pa.float64()),
        ]
    )
    with _writer(path, schema) as out:
        for k, start in enumerate(range(0, ids.size, CHUNK)):
            rng = np.random.default_rng([seed, 3, k])
            part = ids[start : start + CHUNK]
            n = part.size
            kyc = np.where(rng.random(n) < 0.93, 0, rng.integers(1, 3, n))
            depeg = np.where(rng.random(n) < 0.01, np.round(rng.lognormal(4, 1, n), 2), 0.0)
            table = pa.table(
                [
                    part,
                    rng.integers(0, 10, n),
                    rng.random(n) < 0.002,
                    _strings(REGIONS, rng.integers(0, REGIONS.size, n)),
                    _timestamps(WINDOW_START - rng.integers(30, 3000, n) * DAY),
                    _strings(np.array(N.KYC_STATUSES), kyc),
                    depeg,
                ],
                schema=schema,
            )
            out.write_table(table, row_group_size=ROW_GROUP)


def ensure(data: Path, *, accounts: int, events: int, liquidated: int, seed: int = 7) -> Path:
    """The data directory for these sizes: reused when ``sizes.json`` matches, else written."""
    sizes = {"accounts": accounts, "events": events, "liquidated": liquidated, "seed": seed}
    marker = data / "sizes.json"
    if marker.is_file() and json.loads(marker.read_text()) == sizes:
        print(f"using existing data in {data} ({sizes})", flush=True)
        return data
    data.mkdir(parents=True, exist_ok=True)
    marker.unlink(missing_ok=True)
    t0 = time.perf_counter()
    ids = liquidated_ids(accounts, liquidated)
    for name, write in (
        ("snapshot", lambda p: write_snapshot(p, accounts, seed)),
        ("liquidations", lambda p: write_events(p, events, ids, seed)),
        ("users", lambda p: write_users(p, ids, seed)),
    ):
        tmp = data / f".{name}.parquet.part"
        write(tmp)
        tmp.replace(data / f"{name}.parquet")
        print(f"  {name}: {time.perf_counter() - t0:.0f} s", flush=True)
    assets, px, _ = price_paths(np.random.default_rng([seed, 4]))
    prices_table(assets, px).write_parquet(data / "prices.parquet")
    marker.write_text(json.dumps(sizes))
    return data
