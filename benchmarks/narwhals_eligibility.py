#!/usr/bin/env python3
r"""The eligibility query written once in Narwhals, run on DuckDB, checked against the package.

``docs/scaling.md`` argues that the eligibility pass needs nothing a distributed engine lacks:
filters, an as-of join to the price bars, one group-by per user with exact integer sums, two
left joins and a ``CASE`` for the first failing rule. :func:`eligibility_query` is that query in
`Narwhals <https://narwhals-dev.github.io/narwhals/>`_, a dataframe API whose lazy frames wrap
DuckDB, Polars, PySpark, Dask or Ibis tables: the same function runs wherever the four tables
live (here DuckDB over the parquet files; on a cluster, ``nw.from_native(spark_df)``). This
script runs it on DuckDB and compares every liquidated user's reason (or eligibility) and loss
with :func:`allocator.vouchers.eligibility.run_eligibility` on the same files.

Usage::

    python benchmarks/narwhals_eligibility.py                       # the built-in data
    python benchmarks/narwhals_eligibility.py --data /tmp/allocator_bench_2m

The announced rules (the package's defaults) are used; losses are exact sums of nano-dollars in
128-bit integers, rounded per event as DuckDB's ``round`` does (half away from zero, where
Polars rounds half to even: a user's loss can differ by a nano-dollar per event, which the
comparison allows).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import duckdb
import narwhals as nw
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from allocator import names as N  # noqa: E402
from allocator.settings.models import EligibilityRules  # noqa: E402


def eligibility_query(
    events: nw.LazyFrame,
    prices: nw.LazyFrame,
    snapshot: nw.LazyFrame,
    users: nw.LazyFrame,
    rules: EligibilityRules,
) -> nw.LazyFrame:
    """Every liquidated user: counted loss, loss ratio and the first rule failed (null: eligible).

    One pass over the events (a group-by per user), one as-of join of the counted events to
    their price bar, and per-user joins to the users and the snapshot; nothing needs the events
    in one place or in order, so a distributed engine runs it as it runs any aggregation.
    """
    covered = nw.col(N.PRODUCT).is_in(list(rules.products))
    in_window = (nw.col(N.TS) >= rules.window_start) & (nw.col(N.TS) < rules.window_end)
    flags = events.with_columns(covered.alias("covered"), in_window.alias("in_window"))
    per_user = flags.group_by(N.USER_ID).agg(
        nw.col("covered").sum().alias("n_covered"),
        nw.col("in_window").sum().alias("n_in_window"),
    )
    amount = nw.col(N.REALISED_LOSS) + (nw.col(N.LIQ_FEE) if rules.include_fees else 0.0)
    bars = prices.rename({N.PRICE_TS: "bar"}).sort("bar")
    losses = (
        flags.filter(nw.col("covered") & nw.col("in_window"))
        .sort(N.TS)
        .join_asof(
            bars,
            left_on=N.TS,
            right_on="bar",
            by_left=N.SETTLE_ASSET,
            by_right=N.ASSET,
            strategy="backward",
        )
        # exact sums: each event's loss in whole nano-dollars, added as 128-bit integers
        .with_columns((amount * nw.col(N.PRICE_USD) * 1e9).round(0).cast(nw.Int128).alias("nano"))
        .group_by(N.USER_ID)
        .agg(nw.col("nano").sum().alias("loss_nano"), nw.len().alias(N.N_EVENTS))
    )
    joined = (
        per_user.join(losses, on=N.USER_ID, how="left")
        .join(users.with_columns(nw.lit(True).alias("in_users")), on=N.USER_ID, how="left")
        .join(snapshot.with_columns(nw.lit(True).alias("in_snapshot")), on=N.USER_ID, how="left")
        .with_columns(
            (nw.col("loss_nano").cast(nw.Float64) / 1e9).fill_null(0.0).alias(N.LOSS_USD),
            nw.col(N.N_EVENTS).fill_null(0),
            nw.col("in_users").fill_null(False),
            nw.col("in_snapshot").fill_null(False),
        )
    )
    if rules.depeg_policy != "exclude" or rules.phase_in_loss_usd or rules.phase_in_ratio:
        raise NotImplementedError("this sketch implements the announced rules only")
    net = nw.col(N.NET_ASSETS_USD)
    ratio = nw.when(net <= 0).then(float("inf")).otherwise(nw.col(N.LOSS_USD) / net)
    outside = (nw.col(N.N_EVENTS) == 0) & (nw.col("n_covered") > 0) & (nw.col("n_in_window") == 0)
    failing = [  # (reason, fails), in the order of allocator.names.REASONS
        (N.REASON_PRODUCT_NOT_COVERED, (nw.col(N.N_EVENTS) == 0) & ~outside),
        (N.REASON_OUTSIDE_WINDOW, outside),
        (N.REASON_NO_USER_RECORD, ~nw.col("in_users")),
        (N.REASON_RESTRICTED_REGION, nw.col(N.REGION).is_in(list(rules.restricted_regions))),
        (N.REASON_KYC, nw.col(N.KYC_STATUS) != N.KYC_VERIFIED if rules.require_kyc else nw.lit(False)),
        (N.REASON_DEPEG, nw.col(N.DEPEG_COMP_USD) > 0),
        (N.REASON_BELOW_MIN_LOSS, nw.col(N.LOSS_USD) < rules.min_loss_usd),
        (N.REASON_NO_SNAPSHOT, ~nw.col("in_snapshot")),
        (N.REASON_NONPOSITIVE_NET_ASSETS, (net <= 0) & (rules.nonpositive_net_assets == "exclude")),
        (N.REASON_BELOW_LOSS_RATIO, nw.col(N.LOSS_RATIO) < rules.min_loss_ratio),
    ]  # fmt: skip
    reason = nw.lit(None, dtype=nw.String)
    for code, fails in reversed(failing):  # the last `when` written is the first one tried
        reason = nw.when(fails.fill_null(False)).then(nw.lit(code)).otherwise(reason)
    return joined.with_columns(ratio.alias(N.LOSS_RATIO)).with_columns(reason.alias(N.REASON))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=None)
    args = parser.parse_args()
    if args.data is None:
        from allocator.data.synthetic import default_data_dir

        args.data = default_data_dir()
    rules = EligibilityRules()

    def table(stem: str) -> nw.LazyFrame:
        return nw.from_native(
            duckdb.sql(f"SELECT * FROM read_parquet('{args.data / stem}.parquet')")
        )

    t0 = time.perf_counter()
    query = eligibility_query(*(table(s) for s in N.INPUT_TABLES), rules)
    out = query.select(N.USER_ID, N.REASON, N.LOSS_USD).collect(backend="polars").to_native()
    duck_s = time.perf_counter() - t0

    from allocator.vouchers.eligibility import run_eligibility

    t0 = time.perf_counter()
    ref = run_eligibility(args.data, rules)
    polars_s = time.perf_counter() - t0
    want = pl.concat(
        [
            ref.eligible.select(N.USER_ID, pl.lit(None, pl.String).alias(N.REASON), N.LOSS_USD),
            ref.excluded.select(N.USER_ID, N.REASON, N.LOSS_USD),
        ]
    ).sort(N.USER_ID)
    got = out.sort(N.USER_ID)
    same_users = got[N.USER_ID].equals(want[N.USER_ID])
    same_reasons = same_users and got[N.REASON].equals(want[N.REASON], null_equal=True)
    gap = (got[N.LOSS_USD] - want[N.LOSS_USD]).abs().max() if same_users else float("nan")
    print(f"data {args.data}: {want.height:,} liquidated users, {ref.eligible.height:,} eligible")
    print(
        f"  Narwhals on DuckDB: {duck_s:.2f} s; the package (Polars, input checks): {polars_s:.2f} s"
    )
    print(f"  same users: {same_users}; same reason for every user: {same_reasons}; "
          f"largest loss difference: {gap:.3g} USD")  # fmt: skip
    if not same_reasons:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
