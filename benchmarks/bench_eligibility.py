"""Eligibility at stress size: the Polars query against the same query in DuckDB.

Three runs per round, each in a fresh subprocess: ``allocator.vouchers.eligibility`` (Polars, exact
nano-dollar sums), the same query in DuckDB SQL with the same exact sums (``DECIMAL(38, 9)``),
and DuckDB with plain ``DOUBLE`` sums (faster for DuckDB, not order-stable). All read the same
parquet files and produce the same outputs under the default rules: the eligible users' feature
matrix and every excluded user's reason. A run's time covers reading the files to having both
tables in memory; its peak resident memory (``ru_maxrss``) and CPU time are its own process's.
The order of the engines rotates from round to round, so that load from other processes on the
machine hits all alike; the report gives medians. The script then checks that the engines
agree (the same eligible users, the same reason for every excluded user, losses within 1e-6 in
total and 1e-9 per user) and that every Polars run wrote byte-identical files.

Usage::

    python benchmarks/bench_eligibility.py                      # 2M users in /tmp/stress_data
    python benchmarks/bench_eligibility.py --users 200000 --data /tmp/bench_200k --rounds 3

The data directory is generated (``allocator.data.synthetic.generate``) only when it is missing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import machine, write_result

from allocator import names as N
from allocator.settings.models import EligibilityRules

RULES = EligibilityRules()


def _sql_list(values: tuple[str, ...]) -> str:
    return ", ".join("'" + v.replace("'", "''") + "'" for v in values)


def duckdb_sql(data: Path, rules: EligibilityRules = RULES, *, exact: bool = True) -> str:
    """The eligibility query in DuckDB SQL: one row per liquidated user, with its reason.

    The price of a counted event is an ``ASOF`` join (DuckDB's own operator for "latest bar at
    or before"). ``exact``: event losses are rounded to the nano-dollar and summed as
    ``DECIMAL(38, 9)``, as the Polars query does (order-independent); otherwise as ``DOUBLE``
    (faster, but the last bits depend on the order of the parallel aggregation). Everything
    else follows the module docstring of ``allocator.vouchers.eligibility``.
    """
    money = "DECIMAL(38, 9)" if exact else "DOUBLE"
    ev = f"read_parquet('{data / (N.EVENTS_FILE + '.parquet')}')"
    px = f"read_parquet('{data / (N.PRICES_FILE + '.parquet')}')"
    snap = f"read_parquet('{data / (N.SNAPSHOT_FILE + '.parquet')}')"
    usr = f"read_parquet('{data / (N.USERS_FILE + '.parquet')}')"
    start = rules.window_start.isoformat()
    end = rules.window_end.isoformat()
    snap_at = rules.snapshot_at.isoformat()
    products = _sql_list(rules.products)
    fee = "liq_fee" if rules.include_fees else "0.0"
    per_product = ",\n".join(
        f"    coalesce(sum(CASE WHEN product = '{p}' THEN ev_loss END), 0)::DOUBLE "
        f"AS {N.product_loss_column(p)}"
        for p in rules.products
    )
    restricted = _sql_list(rules.restricted_regions) or "NULL"
    kyc_bad = "kyc_status IS DISTINCT FROM 'verified'" if rules.require_kyc else "false"
    depeg_bad = "coalesce(depeg_comp_usd, 0) > 0" if rules.depeg_policy == "exclude" else "false"
    if rules.depeg_policy == "net":
        loss = "CASE WHEN u.user_id IS NULL THEN NULL ELSE greatest(gross_loss_usd - depeg_comp_usd, 0.0) END"
    else:
        loss = "gross_loss_usd"
    nonpos_bad = "net_assets_usd <= 0" if rules.nonpositive_net_assets == "exclude" else "false"
    sql = f"""
WITH ev AS (
  SELECT user_id, ts, product, realised_loss, liq_fee, settle_asset,
         product IN ({products}) AS covered,
         ts >= TIMESTAMPTZ '{start}' AND ts < TIMESTAMPTZ '{end}' AS in_window
  FROM {ev}
),
flags AS (
  SELECT user_id, count(*) AS n_total,
         count(*) FILTER (WHERE covered) AS n_covered,
         count(*) FILTER (WHERE in_window) AS n_in_window
  FROM ev GROUP BY user_id
),
priced AS (
  SELECT e.user_id, e.ts, e.product,
         ((e.realised_loss + e.{fee}) * p.price_usd)::{money} AS ev_loss,
         (e.{fee} * p.price_usd)::{money} AS ev_fee, p.price_usd
  FROM (SELECT * FROM ev WHERE covered AND in_window) e
  ASOF LEFT JOIN {px} p ON e.settle_asset = p.asset AND e.ts >= p.ts
),
losses AS (
  SELECT user_id, count(*) AS n_events,
    count(*) FILTER (WHERE price_usd IS NULL) AS n_no_price,
    sum(ev_loss)::DOUBLE AS gross_loss_usd, sum(ev_fee)::DOUBLE AS fee_usd,
{per_product},
    min(ts) AS first_event_ts, max(ts) AS last_event_ts
  FROM priced GROUP BY user_id
),
per_user AS (
  SELECT f.user_id, f.n_total, f.n_covered, f.n_in_window,
         coalesce(l.n_events, 0) AS n_events, coalesce(l.n_no_price, 0) AS n_no_price,
         coalesce(l.gross_loss_usd, 0.0) AS gross_loss_usd, coalesce(l.fee_usd, 0.0) AS fee_usd,
         {", ".join(f"coalesce(l.{N.product_loss_column(p)}, 0.0) AS {N.product_loss_column(p)}" for p in rules.products)},
         l.first_event_ts, l.last_event_ts
  FROM flags f LEFT JOIN losses l USING (user_id)
),
joined AS (
  SELECT pu.*, u.user_id IS NOT NULL AS in_users, s.user_id IS NOT NULL AS in_snapshot,
         u.vip_tier, u.is_institutional, u.region, u.kyc_status, u.depeg_comp_usd,
         floor((epoch_us(TIMESTAMPTZ '{snap_at}') - epoch_us(u.created_at)) / 86400000000.0)::BIGINT
           AS account_age_days,
         s.net_assets_usd, {loss} AS loss_usd
  FROM per_user pu
  LEFT JOIN {usr} u USING (user_id)
  LEFT JOIN {snap} s USING (user_id)
),
rated AS (
  SELECT *, CASE WHEN net_assets_usd <= 0 THEN 'inf'::DOUBLE ELSE loss_usd / net_assets_usd END
              AS loss_ratio
  FROM joined
)
SELECT *,
  CASE
    WHEN n_events = 0 AND n_covered > 0 AND n_in_window = 0 THEN '{N.REASON_OUTSIDE_WINDOW}'
    WHEN n_events = 0 THEN '{N.REASON_PRODUCT_NOT_COVERED}'
    WHEN NOT in_users THEN '{N.REASON_NO_USER_RECORD}'
    WHEN coalesce(region IN ({restricted}), false) THEN '{N.REASON_RESTRICTED_REGION}'
    WHEN {kyc_bad} THEN '{N.REASON_KYC}'
    WHEN {depeg_bad} THEN '{N.REASON_DEPEG}'
    WHEN NOT coalesce(loss_usd >= {rules.min_loss_usd!r}, false) THEN '{N.REASON_BELOW_MIN_LOSS}'
    WHEN NOT in_snapshot THEN '{N.REASON_NO_SNAPSHOT}'
    WHEN coalesce({nonpos_bad}, false) THEN '{N.REASON_NONPOSITIVE_NET_ASSETS}'
    WHEN NOT coalesce(loss_ratio >= {rules.min_loss_ratio!r}, false) THEN '{N.REASON_BELOW_LOSS_RATIO}'
  END AS reason
FROM rated
"""
    return sql


def eligible_columns(rules: EligibilityRules = RULES) -> list[str]:
    """The feature-matrix columns (as in ``allocator.vouchers.eligibility``, without importing Polars)."""
    return [
        N.USER_ID,
        N.LOSS_USD,
        N.GROSS_LOSS_USD,
        N.FEE_USD,
        *(N.product_loss_column(p) for p in rules.products),
        N.LOSS_RATIO,
        N.NET_ASSETS_USD,
        N.N_EVENTS,
        N.FIRST_EVENT_TS,
        N.LAST_EVENT_TS,
        N.VIP_TIER,
        N.IS_INSTITUTIONAL,
        N.REGION,
        N.ACCOUNT_AGE_DAYS,
        N.KYC_STATUS,
        N.DEPEG_COMP_USD,
    ]


EXCLUDED_KEEP = [
    N.USER_ID,
    N.REASON,
    N.LOSS_USD,
    N.GROSS_LOSS_USD,
    N.NET_ASSETS_USD,
    N.LOSS_RATIO,
    N.N_EVENTS,
]


def run_duckdb(data: Path, out: Path, *, exact: bool = True) -> tuple[float, float]:
    """Time the query (results fetched into memory as Arrow), then save the results to ``out``."""
    import duckdb

    con = duckdb.connect()
    sql = duckdb_sql(data, exact=exact)
    t0 = time.perf_counter()
    con.sql(f"CREATE TEMP TABLE t AS {sql}")
    if con.sql("SELECT sum(n_no_price) FROM t").fetchall()[0][0]:
        raise SystemExit("duckdb: a counted event has no price")
    eligible = con.sql(
        f"SELECT {', '.join(eligible_columns())} FROM t WHERE reason IS NULL ORDER BY user_id"
    ).to_arrow_table()
    excluded = con.sql(
        f"SELECT {', '.join(EXCLUDED_KEEP)} FROM t WHERE reason IS NOT NULL ORDER BY user_id"
    ).to_arrow_table()
    elapsed = time.perf_counter() - t0
    peak = _peak_mib()
    import pyarrow.parquet as pq

    pq.write_table(eligible, out / "eligible.parquet")
    pq.write_table(excluded, out / "excluded.parquet")
    return elapsed, peak


def run_polars(data: Path, out: Path) -> tuple[float, float]:
    """Time load (metadata) + :func:`compute_eligibility`, then save the results to ``out``."""
    from allocator.data.inputs import load_inputs
    from allocator.vouchers.eligibility import compute_eligibility, write_eligibility

    t0 = time.perf_counter()
    inputs = load_inputs(data, validate=False)  # file metadata only
    result = compute_eligibility(inputs.events, inputs.prices, inputs.snapshot, inputs.users, RULES)
    elapsed = time.perf_counter() - t0
    peak = _peak_mib()
    result.reconciliation.check()
    write_eligibility(result, out)
    return elapsed, peak


def _peak_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu_s() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def worker(engine: str, data: Path, out: Path) -> None:
    """One timed run in this process; writes its time and peak memory as JSON beside results."""
    cpu0 = _cpu_s()
    if engine == "polars":
        elapsed, peak = run_polars(data, out)
    else:
        elapsed, peak = run_duckdb(data, out, exact=engine == "duckdb")
    cpu = _cpu_s() - cpu0  # includes saving the results, which is small
    (out / "timing.json").write_text(
        json.dumps({"seconds": elapsed, "cpu_s": cpu, "peak_mib": peak})
    )


def _spawn(engine: str, data: Path, out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, __file__, "--worker", engine, "--data", str(data), "--result", str(out)]
    subprocess.run(cmd, check=True)
    return json.loads((out / "timing.json").read_text())


def ensure_data(data: Path, users: int) -> None:
    if all((data / f"{s}.parquet").is_file() for s in N.INPUT_TABLES):
        print(f"using existing data in {data}")
        return
    from allocator.data.synthetic import generate

    print(f"generating {users:,} users into {data} ...", flush=True)
    t0 = time.perf_counter()
    generate(data, users=users)
    print(f"  done in {time.perf_counter() - t0:.1f} s")


def compare(polars_dir: Path, duckdb_dir: Path) -> list[str]:
    """Differences between the two engines' saved results (empty when they agree)."""
    import polars as pl

    bad: list[str] = []
    pe, de = (pl.read_parquet(d / "eligible.parquet") for d in (polars_dir, duckdb_dir))
    px, dx = (pl.read_parquet(d / "excluded.parquet") for d in (polars_dir, duckdb_dir))
    if pe.columns != de.columns:
        bad.append(f"eligible columns differ: {pe.columns} vs {de.columns}")
    if not pe[N.USER_ID].equals(de[N.USER_ID]):
        bad.append(f"eligible users differ: {pe.height:,} vs {de.height:,}")
    ids_reasons = [N.USER_ID, N.REASON]
    if not px.select(ids_reasons).equals(dx.select(ids_reasons)):
        bad.append("excluded users or their reasons differ")
    for label, a, b in [
        ("eligible loss_usd", pe[N.LOSS_USD].sum(), de[N.LOSS_USD].sum()),
        ("eligible fee_usd", pe[N.FEE_USD].sum(), de[N.FEE_USD].sum()),
        ("eligible n_events", pe[N.N_EVENTS].sum(), de[N.N_EVENTS].sum()),
        ("excluded gross_loss_usd", px[N.GROSS_LOSS_USD].sum(), dx[N.GROSS_LOSS_USD].sum()),
    ]:
        if not abs(a - b) <= 1e-6 * max(abs(a), abs(b), 1.0):
            bad.append(f"{label}: polars {a!r} != duckdb {b!r}")
    if pe.height == de.height and pe[N.USER_ID].equals(de[N.USER_ID]):
        # Per user, not only in total: every loss within 1e-9 relative.
        rel = (pe[N.LOSS_USD] - de[N.LOSS_USD]).abs() / de[N.LOSS_USD].abs().clip(1.0, None)
        if rel.max() > 1e-9:
            bad.append(f"per-user loss differs by up to {rel.max():.3g} relative")
    return bad


ENGINES = ("polars", "duckdb", "duckdb-f64")
LABELS = {
    "polars": "polars (exact sums)",
    "duckdb": "duckdb (exact sums)",
    "duckdb-f64": "duckdb (DOUBLE sums)",
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=Path("/tmp/stress_data"))
    parser.add_argument(
        "--users", type=int, default=2_000_000, help="users to generate if --data is missing"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    parser.add_argument("--worker", choices=ENGINES, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.data, args.result)
        return

    started = machine()
    ensure_data(args.data, args.users)
    runs: dict[str, list[dict]] = {e: [] for e in ENGINES}
    bad: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench_eligibility_") as tmp:
        for r in range(args.rounds):
            order = ENGINES[r % len(ENGINES) :] + ENGINES[: r % len(ENGINES)]  # rotate the order
            for engine in order:
                res = _spawn(engine, args.data, Path(tmp) / f"{engine}{r}")
                runs[engine].append(res)
                print(
                    f"round {r + 1} {engine:10s} {res['seconds']:7.3f} s  cpu {res['cpu_s']:7.3f} s"
                    f"  peak {res['peak_mib']:7.0f} MiB",
                    flush=True,
                )
        for other in ENGINES[1:]:
            bad += [
                f"{other}: {x}" for x in compare(Path(tmp) / "polars0", Path(tmp) / f"{other}0")
            ]
        # Determinism across processes: every Polars run wrote the same bytes.
        same = all(
            (Path(tmp) / f"polars{r}" / f).read_bytes() == (Path(tmp) / "polars0" / f).read_bytes()
            for r in range(1, args.rounds)
            for f in ("eligible.parquet", "excluded.parquet", "reconciliation.json")
        )
        import polars as pl

        eligible = pl.read_parquet(Path(tmp) / "polars0" / "eligible.parquet").height
        excluded = pl.read_parquet(Path(tmp) / "polars0" / "excluded.parquet").height

    med = {e: statistics.median(x["seconds"] for x in v) for e, v in runs.items()}
    cpu = {e: statistics.median(x["cpu_s"] for x in v) for e, v in runs.items()}
    peak = {e: max(x["peak_mib"] for x in v) for e, v in runs.items()}
    print()
    print(f"data {args.data}: {eligible + excluded:,} liquidated users, {eligible:,} eligible")
    print(
        f"{'engine':22s} {'median s':>9s} {'cpu s':>8s} {'peak MiB':>9s} {'time / polars':>14s}"
        f"   (runs: {args.rounds}, each a fresh process)"
    )
    for e in ENGINES:
        print(
            f"{LABELS[e]:22s} {med[e]:9.3f} {cpu[e]:8.3f} {peak[e]:9.0f} "
            f"{med[e] / med['polars']:14.3f}"
        )
    for e in ENGINES[1:]:
        print(
            f"polars / {e} time ratio: {med['polars'] / med[e]:.3f} "
            f"(cpu time ratio {cpu['polars'] / cpu[e]:.3f})"
        )
    print(f"polars runs byte-identical: {'yes' if same else 'NO'}")
    if not same:
        bad.append("polars runs differ")
    if bad:
        print("ENGINES DISAGREE:\n  " + "\n  ".join(bad))
        raise SystemExit(1)
    print(
        "engines agree: same eligible users and feature columns, same reason for every "
        "excluded user, losses within 1e-6 in total and 1e-9 per user"
    )
    if args.json:
        write_result(
            args.json,
            name="eligibility",
            command=f"python benchmarks/bench_eligibility.py --rounds {args.rounds}",
            header=["engine", "wall (median)", "CPU (median)", "peak memory", "time / Polars"],
            rows=[
                [
                    LABELS[e],
                    f"{med[e]:.1f} s",
                    f"{cpu[e]:.1f} s",
                    f"{peak[e] / 1024:.1f} GiB",
                    f"{med[e] / med['polars']:.2f}",
                ]
                for e in ENGINES
            ],
            notes=[
                f"{eligible + excluded:,} liquidated users ({eligible:,} eligible); {args.rounds} "
                "runs of each engine, each a fresh process, in rotating order. The engines agree "
                "on every eligible user, feature and exclusion reason, and the Polars runs wrote "
                "byte-identical files."
            ],
            data={"median_s": med, "cpu_s": cpu, "peak_mib": peak},
            started=started,
        )


if __name__ == "__main__":
    main()
