"""Synthetic data: deterministic, valid, and calibrated on the facts of the 2025-10-10 crash.

Calibration properties are recomputed here from the files alone, with an independent Polars
reading of the published rules (window, covered products, USD 50, 30% of net assets).
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import allocator.cli.cmd_generate  # noqa: F401 - registers the command
from allocator import names as N
from allocator.cli.app import app
from allocator.data.inputs import SCHEMAS, Inputs, load_inputs, validate_inputs
from allocator.data.synthetic import MAX_USERS, default_data_dir, generate, generate_tables
from allocator.errors import InputError

UTC = UTC
W0 = datetime(2025, 10, 10, tzinfo=UTC)
W1 = datetime(2025, 10, 12, tzinfo=UTC)
RESTRICTED = ["US", "CU", "IR", "KP", "SY"]
USERS = 5_000


def at(day: int, h: int = 0, m: int = 0, s: int = 0, us: int = 0) -> datetime:
    return datetime(2025, 10, day, h, m, s, us, tzinfo=UTC)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("synthetic") / "data"
    generate(d, users=USERS, seed=20251010)
    return d


@pytest.fixture(scope="module")
def tables(data_dir: Path) -> dict[str, pl.DataFrame]:
    inputs = load_inputs(data_dir)
    return {stem: inputs.table(stem).collect() for stem in N.INPUT_TABLES}


@pytest.fixture(scope="module")
def per_user(tables: dict[str, pl.DataFrame]) -> pl.DataFrame:
    """Every liquidated user with counted USD loss, attributes, net assets and a default verdict."""
    ev, prices = tables[N.EVENTS_FILE], tables[N.PRICES_FILE]
    counted = (
        ev.filter(
            pl.col(N.PRODUCT).is_in(N.COVERED_PRODUCTS), pl.col(N.TS) >= W0, pl.col(N.TS) < W1
        )
        .sort(N.TS)
        .join_asof(
            prices.sort(N.ASSET, N.PRICE_TS).rename({N.PRICE_TS: "bar"}),
            left_on=N.TS,
            right_on="bar",
            by_left=N.SETTLE_ASSET,
            by_right=N.ASSET,
            strategy="backward",
            check_sortedness=False,
        )
    )
    assert counted[N.PRICE_USD].null_count() == 0
    loss = counted.group_by(N.USER_ID).agg(
        ((pl.col(N.REALISED_LOSS) + pl.col(N.LIQ_FEE)) * pl.col(N.PRICE_USD)).sum().alias("loss")
    )
    covered = ev.filter(pl.col(N.PRODUCT).is_in(N.COVERED_PRODUCTS)).select(N.USER_ID).unique()
    df = (
        ev.select(N.USER_ID)
        .unique()
        .join(covered.with_columns(covered=pl.lit(True)), on=N.USER_ID, how="left")
        .join(loss, on=N.USER_ID, how="left")
        .join(tables[N.USERS_FILE].with_columns(known=pl.lit(True)), on=N.USER_ID, how="left")
        .join(tables[N.SNAPSHOT_FILE], on=N.USER_ID, how="left")
    )
    net = pl.col(N.NET_ASSETS_USD)
    verdict = (
        pl.when(pl.col("covered").is_null())
        .then(pl.lit("product"))
        .when(pl.col("loss").is_null())
        .then(pl.lit("window"))
        .when(pl.col("known").is_null())
        .then(pl.lit("no_user"))
        .when(pl.col(N.REGION).is_in(RESTRICTED))
        .then(pl.lit("region"))
        .when(pl.col(N.KYC_STATUS) != N.KYC_VERIFIED)
        .then(pl.lit("kyc"))
        .when(pl.col(N.DEPEG_COMP_USD) > 0)
        .then(pl.lit("depeg"))
        .when(pl.col("loss") < 50)
        .then(pl.lit("min_loss"))
        .when(net.is_null())
        .then(pl.lit("no_snapshot"))
        .when((net > 0) & (pl.col("loss") < 0.3 * net))
        .then(pl.lit("ratio"))
        .otherwise(pl.lit("eligible"))
    )
    return df.with_columns(verdict=verdict)


# --------------------------------------------------------------------------------------------
# determinism, validity, files


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    a = generate(tmp_path / "a", users=800, seed=3)
    b = generate(tmp_path / "b", users=800, seed=3)
    c = generate(tmp_path / "c", users=800, seed=4)
    for stem in N.INPUT_TABLES:
        assert a[stem].read_bytes() == b[stem].read_bytes(), stem
    assert a[N.EVENTS_FILE].read_bytes() != c[N.EVENTS_FILE].read_bytes()
    assert a[N.SNAPSHOT_FILE].read_bytes() != c[N.SNAPSHOT_FILE].read_bytes()


def test_rerun_in_place_is_identical_and_keeps_other_files(tmp_path: Path) -> None:
    d = tmp_path / "d"
    first = {s: p.read_bytes() for s, p in generate(d, users=300, seed=1).items()}
    (d / "notes.txt").write_text("kept")
    again = generate(d, users=300, seed=1)
    assert {s: p.read_bytes() for s, p in again.items()} == first
    assert (d / "notes.txt").read_text() == "kept"
    assert load_inputs(d).events.collect().equals(load_inputs_from_bytes(first, tmp_path))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left behind


@pytest.mark.parametrize(("have", "want"), [("csv", "parquet"), ("parquet", "csv")])
def test_other_format_in_the_directory_is_refused_and_kept(
    tmp_path: Path, have: str, want: str
) -> None:
    # The other format's tables may be real exports: never deleted, and nothing written.
    d = tmp_path / "d"
    generate(d, users=50, seed=1, fmt=have)
    (d / f"{N.EVENTS_FILE}.{have}").write_bytes(b"the user's own export")
    before = {p.name: p.read_bytes() for p in d.iterdir()}
    with pytest.raises(InputError) as info:
        generate(d, users=50, seed=1, fmt=want)
    msg = str(info.value)
    assert f"already holds {have} tables" in msg and f"{N.EVENTS_FILE}.{have}" in msg
    assert f"--format {have}" in msg and "Nothing was written" in msg
    assert {p.name: p.read_bytes() for p in d.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["d"]  # no temporary left behind


def test_run_directory_is_refused(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / N.MANIFEST_FILE).write_text("{}")
    with pytest.raises(InputError, match="run directory"):
        generate(run, users=10, seed=1)
    assert [p.name for p in run.iterdir()] == [N.MANIFEST_FILE]


@pytest.mark.parametrize("out", ["", "   "])
def test_empty_output_path_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, out: str
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match="empty"):
        generate(out, users=10, seed=1)
    assert list(tmp_path.iterdir()) == []


def test_users_above_the_limit_are_refused_before_any_work(tmp_path: Path) -> None:
    # 10**14 users would ask numpy for petabytes; the limit answers at once.
    with pytest.raises(InputError, match="50,000,000"):
        generate(tmp_path / "x", users=10**14, seed=1)
    assert MAX_USERS == 50_000_000 and not (tmp_path / "x").exists()


def load_inputs_from_bytes(files: dict[str, bytes], tmp: Path) -> pl.DataFrame:
    d = tmp / "from_bytes"
    d.mkdir()
    for stem, blob in files.items():
        (d / f"{stem}.parquet").write_bytes(blob)
    return load_inputs(d).events.collect()


def test_generated_data_passes_validation(data_dir: Path, tables: dict[str, pl.DataFrame]) -> None:
    validate_inputs(load_inputs(data_dir, validate=False))
    for stem, df in tables.items():
        assert df.schema == pl.Schema(SCHEMAS[stem])


def test_csv_and_parquet_hold_the_same_data(tmp_path: Path) -> None:
    p = load_inputs(generate(tmp_path / "p", users=400, seed=9)[N.EVENTS_FILE].parent)
    c = load_inputs(generate(tmp_path / "c", users=400, seed=9, fmt="csv")[N.EVENTS_FILE].parent)
    for stem in N.INPUT_TABLES:
        assert p.table(stem).collect().equals(c.table(stem).collect()), stem


@settings(max_examples=20)
@given(users=st.integers(1, 400), seed=st.integers(0, 2**32))
def test_tables_are_valid_for_any_size_and_seed(users: int, seed: int) -> None:
    t = generate_tables(users, seed)
    validate_inputs(Inputs(*(t[s].lazy() for s in N.INPUT_TABLES), paths={}))
    ev = t[N.EVENTS_FILE]
    liquidated = ev[N.USER_ID].unique()
    assert liquidated.len() == users
    assert ev[N.TS].is_sorted() and ev[N.EVENT_ID].is_sorted()
    # The users table covers liquidated users only; the snapshot is mostly never-liquidated users.
    assert t[N.USERS_FILE][N.USER_ID].is_in(liquidated.implode()).all()
    assert t[N.SNAPSHOT_FILE].height >= 9 * users
    priced = set(t[N.PRICES_FILE][N.ASSET].unique())
    assert set(ev[N.SETTLE_ASSET].unique()) <= priced


@pytest.mark.parametrize(("users", "seed"), [(0, 1), (10, -1)])
def test_bad_arguments(tmp_path: Path, users: int, seed: int) -> None:
    with pytest.raises(InputError):
        generate(tmp_path / "x" / "y", users=users, seed=seed)
    assert list(tmp_path.iterdir()) == []  # not even the parent folder


def test_bad_format(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="format"):
        generate(tmp_path / "x", users=10, fmt="xlsx")


# --------------------------------------------------------------------------------------------
# calibration (users=5000)


def test_sizes(tables: dict[str, pl.DataFrame]) -> None:
    ev = tables[N.EVENTS_FILE]
    assert ev[N.USER_ID].n_unique() == USERS
    assert 4.0 <= ev.height / USERS <= 6.0
    assert 9.5 * USERS <= tables[N.SNAPSHOT_FILE].height <= 10 * USERS
    per = ev.group_by(N.USER_ID).len()["len"]
    assert per.min() >= 1 and per.max() >= 20  # heavy-tailed counts
    assert (per > 1).mean() > 0.6  # several events per user


def test_window_edges(tables: dict[str, pl.DataFrame]) -> None:
    ts = tables[N.EVENTS_FILE][N.TS]
    assert ((ts >= at(9, 23, 59)) & (ts < W0)).sum() > 0
    assert (ts == W1).sum() > 0
    assert (ts > W1).sum() > 0
    assert (ts == W0).sum() > 0
    assert (ts == at(11, 23, 59, 59, 999_999)).sum() > 0
    assert (ts < at(9, 23, 59)).sum() == 0  # nothing far from the window


def test_every_product_and_uncovered_share(
    tables: dict[str, pl.DataFrame], per_user: pl.DataFrame
) -> None:
    ev = tables[N.EVENTS_FILE]
    counts = dict(ev.group_by(N.PRODUCT).len().iter_rows())
    assert set(counts) == set(N.PRODUCTS)
    assert max(counts, key=counts.get) == N.USDM_FUTURES
    uncovered = sum(counts[p] for p in N.PRODUCTS if p not in N.COVERED_PRODUCTS) / ev.height
    assert 0.01 <= uncovered <= 0.08
    assert (per_user["verdict"] == "product").sum() > 0  # users with only uncovered products


def test_coin_margined_losses_settle_in_coins(tables: dict[str, pl.DataFrame]) -> None:
    coinm = tables[N.EVENTS_FILE].filter(pl.col(N.PRODUCT) == N.COINM_FUTURES)
    assets = set(coinm[N.SETTLE_ASSET].unique())
    assert {"BTC", "ETH"} <= assets and not assets & {"USDT", "USDC"}
    assert coinm[N.SYMBOL].str.ends_with("USD_PERP").all()


def test_longs_lose_more_than_shorts(tables: dict[str, pl.DataFrame]) -> None:
    ev = tables[N.EVENTS_FILE].filter(pl.col(N.PRODUCT).is_in(N.COVERED_PRODUCTS))
    side = dict(ev.group_by(N.SIDE).len().iter_rows())
    assert 4.0 <= side["long"] / side["short"] <= 10.0  # about 6.7 : 1


def test_loss_share_long(per_user: pl.DataFrame, tables: dict[str, pl.DataFrame]) -> None:
    ev = tables[N.EVENTS_FILE].filter(pl.col(N.PRODUCT).is_in(N.COVERED_PRODUCTS)).sort(N.TS)
    priced = ev.join_asof(
        tables[N.PRICES_FILE].sort(N.ASSET, N.PRICE_TS).rename({N.PRICE_TS: "bar"}),
        left_on=N.TS,
        right_on="bar",
        by_left=N.SETTLE_ASSET,
        by_right=N.ASSET,
        check_sortedness=False,
    )
    usd = priced.group_by(N.SIDE).agg(
        ((pl.col(N.REALISED_LOSS) + pl.col(N.LIQ_FEE)) * pl.col(N.PRICE_USD)).sum()
    )
    by = dict(usd.iter_rows())
    assert by["long"] > 3 * by["short"]


def test_intraday_profile(tables: dict[str, pl.DataFrame]) -> None:
    ts = tables[N.EVENTS_FILE][N.TS]
    minutes = ts.dt.truncate("1m").value_counts().sort("count", descending=True)
    peak = minutes[N.TS][0]
    assert at(10, 21, 5) <= peak <= at(10, 21, 25)
    assert ((ts >= at(10, 20, 50)) & (ts < at(10, 22, 30))).mean() > 0.6
    assert ((ts >= at(11)) & (ts < W1)).sum() > 0  # some through the 11th


def test_heavy_tailed_losses(per_user: pl.DataFrame) -> None:
    loss = per_user["loss"].drop_nulls()
    assert loss.max() > 1e6
    assert loss.max() > 200 * loss.median()
    assert (loss > 1e5).mean() > 0.01


def test_depeg_collateral_concentrated_in_window(tables: dict[str, pl.DataFrame]) -> None:
    ev = tables[N.EVENTS_FILE].filter(pl.col(N.PRODUCT).is_in(N.COVERED_PRODUCTS))
    has_depeg = pl.col(N.COLLATERAL).str.contains("USDe|BNSOL|WBETH")
    in_window = (pl.col(N.TS) >= at(10, 21, 36)) & (pl.col(N.TS) < at(10, 22, 16))
    depeg = ev.filter(has_depeg)
    assert depeg.height > 0 and set(depeg[N.COLLATERAL].str.split("|").explode()) >= {
        "USDe",
        "BNSOL",
        "WBETH",
    }
    assert depeg.select(in_window.mean()).item() > 0.4  # 40 of 2,880 minutes: concentrated
    hit = ev.filter(has_depeg & in_window).select(N.USER_ID).unique()
    users = tables[N.USERS_FILE]
    comp_hit = users.join(hit, on=N.USER_ID)[N.DEPEG_COMP_USD]
    assert (comp_hit > 0).mean() > 0.7
    # Compensation went only to users who posted such collateral (on any product, loans too).
    posted = tables[N.EVENTS_FILE].filter(has_depeg).select(N.USER_ID).unique()
    no_depeg = users.join(posted, on=N.USER_ID, how="anti")
    assert (no_depeg[N.DEPEG_COMP_USD] == 0).all()
    assert (users[N.DEPEG_COMP_USD] >= 0).all()


DEPEG_SYMBOLS = {
    "USDEUSDT": ("USDe", 0.66),
    "BNSOLUSDT": ("BNSOL", 34.90),
    "WBETHUSDT": ("WBETH", 430.65),
}


def test_depeg_collateral_sales(tables: dict[str, pl.DataFrame]) -> None:
    ev = tables[N.EVENTS_FILE]
    sales = ev.filter(pl.col(N.SYMBOL).is_in(list(DEPEG_SYMBOLS)))
    assert sales.height > 100
    assert set(sales[N.PRODUCT].unique()) == {
        N.CROSS_MARGIN,
        N.ISOLATED_MARGIN,
        N.USDM_FUTURES,
        N.LOAN,
    }
    assert (sales[N.SIDE] == "long").all() and (sales[N.SETTLE_ASSET] == "USDT").all()
    in_window = (pl.col(N.TS) >= at(10, 21, 36)) & (pl.col(N.TS) < at(10, 22, 16))
    assert sales.select(in_window.mean()).item() > 0.85
    # Outside the window only within ten minutes of it, including both edges exactly.
    assert sales[N.TS].min() >= at(10, 21, 26) and sales[N.TS].max() < at(10, 22, 26)
    assert (sales[N.TS] == at(10, 21, 36)).sum() >= 1 and (sales[N.TS] == at(10, 22, 16)).sum() >= 1
    for symbol, (asset, low) in DEPEG_SYMBOLS.items():
        s = sales.filter(pl.col(N.SYMBOL) == symbol)
        # The sold asset is in the collateral; the deepest sales are at the venue's low.
        assert s[N.COLLATERAL].str.split("|").list.contains(asset).all(), symbol
        assert low * 0.995 <= s[N.LIQ_PRICE].min() <= low * 1.01, symbol
        assert s[N.LIQ_PRICE].median() < 0.8 * s[N.LIQ_PRICE].max(), symbol
        assert (s[N.QUANTITY] > 0).all() and (s[N.LIQ_FEE] > 0).all()


def test_depeg_comp_is_the_rule_recomputed(tables: dict[str, pl.DataFrame]) -> None:
    """users.depeg_comp_usd against the rule recomputed here from the tables alone: sales of
    USDe, BNSOL or WBETH in [21:36, 22:16) on futures, margin or loan accounts, compensated at
    max(00:00 price, USDe floor 1) minus the sale price in USD, plus the fee, half up to the cent."""
    ev, prices, users = tables[N.EVENTS_FILE], tables[N.PRICES_FILE], tables[N.USERS_FILE]
    bars = prices.sort(N.PRICE_TS).rename({N.PRICE_TS: "bar"})
    ref = prices.filter(pl.col(N.PRICE_TS) == at(11)).select(
        pl.col(N.ASSET).alias("asset"),
        pl.when(pl.col(N.ASSET) == "USDe")
        .then(pl.max_horizontal(N.PRICE_USD, pl.lit(1.0)))
        .otherwise(pl.col(N.PRICE_USD))
        .alias("ref"),
    )
    products = [*N.COVERED_PRODUCTS, N.LOAN]
    sales = (
        ev.filter(
            pl.col(N.SYMBOL).is_in(list(DEPEG_SYMBOLS)),
            pl.col(N.PRODUCT).is_in(products),
            pl.col(N.TS) >= at(10, 21, 36),
            pl.col(N.TS) < at(10, 22, 16),
        )
        .with_columns(
            pl.col(N.SYMBOL)
            .replace_strict({k: v[0] for k, v in DEPEG_SYMBOLS.items()})
            .alias("asset")
        )
        .sort(N.TS)
        .join_asof(
            bars.filter(pl.col(N.ASSET) == "USDT").select("bar", pl.col(N.PRICE_USD).alias("usdt")),
            left_on=N.TS,
            right_on="bar",
            check_sortedness=False,
        )
        .join(ref, on="asset")
        .with_columns(usd=pl.col(N.LIQ_PRICE) * pl.col("usdt"))
        .with_columns(
            comp=pl.when(pl.col("usd") < pl.col("ref"))
            .then(
                (pl.col("ref") - pl.col("usd")) * pl.col(N.QUANTITY)
                + pl.col(N.LIQ_FEE) * pl.col("usdt")
            )
            .otherwise(0.0)
        )
        .with_columns(cents=(pl.col("comp") * 100 + 0.5).floor().cast(pl.Int64))
    )
    owed = sales.group_by(N.USER_ID).agg(pl.col("cents").sum())
    both = (
        users.join(owed, on=N.USER_ID, how="full", coalesce=True)
        .with_columns(
            pl.col("cents").fill_null(0),
            paid=(pl.col(N.DEPEG_COMP_USD) * 100).round().cast(pl.Int64),
        )
        .filter(pl.col(N.DEPEG_COMP_USD).is_not_null())
    )  # users missing from the users table
    owed_any = both.filter(pl.col("cents") > 0)
    assert owed_any.height > 100
    exact = int((owed_any["paid"] == owed_any["cents"]).sum())
    unpaid = int((owed_any["paid"] == 0).sum())
    assert (
        exact >= 0.95 * owed_any.height and exact + unpaid == owed_any.height
    )  # a few unpaid, never another amount
    # Paid without a sale in the window: the case-reviewed sales just outside it.
    reviewed = both.filter(pl.col("cents") == 0, pl.col("paid") > 0)
    assert reviewed.height >= 1
    outside = ev.filter(
        pl.col(N.SYMBOL).is_in(list(DEPEG_SYMBOLS)),
        (pl.col(N.TS) < at(10, 21, 36)) | (pl.col(N.TS) >= at(10, 22, 16)),
    )
    assert reviewed[N.USER_ID].is_in(outside[N.USER_ID].implode()).all()


def test_collateral_mostly_usdt(tables: dict[str, pl.DataFrame]) -> None:
    coll = tables[N.EVENTS_FILE][N.COLLATERAL]
    assert (coll == "USDT").mean() > 0.5


def test_prices(tables: dict[str, pl.DataFrame]) -> None:
    pr = tables[N.PRICES_FILE]
    ev = tables[N.EVENTS_FILE]
    used = set(ev[N.SETTLE_ASSET].unique()) | set(
        ev[N.COLLATERAL].str.split("|").explode().unique()
    )
    assets = set(pr[N.ASSET].unique())
    assert used <= assets and assets - used  # at least one asset nobody traded
    span = pr.group_by(N.ASSET).agg(
        pl.col(N.PRICE_TS).min().alias("lo"), pl.col(N.PRICE_TS).max().alias("hi"), pl.len()
    )
    assert (span["lo"] == at(9, 23)).all() and (span["hi"] == at(12, 1)).all()
    assert (span["len"] == 50 * 60 + 1).all()  # every minute bar

    def series(asset: str) -> pl.DataFrame:
        return pr.filter(pl.col(N.ASSET) == asset)

    depeg = (pl.col(N.PRICE_TS) >= at(10, 21, 36)) & (pl.col(N.PRICE_TS) < at(10, 22, 16))
    for asset, low in (("USDe", 0.66), ("BNSOL", 34.90), ("WBETH", 430.65)):
        s = series(asset)
        assert s[N.PRICE_USD].min() == pytest.approx(low, abs=1e-9)
        assert s.filter(pl.col(N.PRICE_USD) == s[N.PRICE_USD].min()).select(depeg.all()).item()
        assert s.filter(~depeg)[N.PRICE_USD].min() > 1.3 * low
    for stable in ("USDT", "USDC"):
        assert series(stable)[N.PRICE_USD].is_between(0.99, 1.01).all()
    for coin in ("BTC", "ETH", "BNB", "SOL", "XRP", "DOGE"):
        s = series(coin)
        pre = s.filter(pl.col(N.PRICE_TS) < at(10, 20, 30))[N.PRICE_USD].mean()
        low_ts = s.sort(N.PRICE_USD)[N.PRICE_TS][0]
        assert at(10, 21) <= low_ts <= at(10, 21, 35), coin
        assert s[N.PRICE_USD].min() < 0.92 * pre, coin


def test_edge_populations(per_user: pl.DataFrame, tables: dict[str, pl.DataFrame]) -> None:
    n = per_user.height
    share = lambda expr: per_user.select(expr.mean()).item()  # noqa: E731
    assert 0.005 <= share(pl.col(N.NET_ASSETS_USD).is_null()) <= 0.03  # no snapshot row
    assert share(pl.col(N.NET_ASSETS_USD) == 0) > 0.002
    assert share(pl.col(N.NET_ASSETS_USD) < 0) > 0.002
    assert 0.01 <= share(pl.col(N.REGION).is_in(RESTRICTED)) <= 0.025
    assert 0.005 <= share(pl.col(N.KYC_STATUS) != N.KYC_VERIFIED) <= 0.02
    missing_users = per_user.filter(pl.col("known").is_null()).height
    assert 1 <= missing_users <= 0.005 * n
    assert (per_user["verdict"] == "window").sum() > 0  # users with only outside-window events
    users = tables[N.USERS_FILE]
    assert (users[N.VIP_TIER] == 0).mean() > 0.7 and users[N.VIP_TIER].max() >= 5
    assert 0.003 <= users[N.IS_INSTITUTIONAL].mean() <= 0.03
    assert (users[N.CREATED_AT] < at(9, 23, 59)).all()
    assert users[N.CREATED_AT].min() < datetime(2020, 1, 1, tzinfo=UTC)


def test_default_rules_calibration(per_user: pl.DataFrame) -> None:
    n = per_user.height
    eligible = per_user.filter(pl.col("verdict") == "eligible")
    assert 0.55 <= eligible.height / n <= 0.70
    # The budget is meaningful: capped demand is 1.5-3 times USD 300M at the full 200k size.
    capped = eligible["loss"].clip(upper_bound=6000).sum() * (200_000 / n)
    assert 1.5 * 300e6 <= capped <= 3 * 300e6
    assert 1_000 <= eligible["loss"].median() <= 10_000
    # Cliff populations just below each threshold.
    below_50 = per_user.filter(pl.col("loss").is_between(40, 50, closed="left")).height / n
    assert below_50 > 0.02
    net = pl.col(N.NET_ASSETS_USD)
    below_30 = (
        per_user.filter(
            net > 0, (pl.col("loss") / net).is_between(0.25, 0.30, closed="left")
        ).height
        / n
    )
    assert below_30 > 0.02


# --------------------------------------------------------------------------------------------
# default data and the command


def test_default_data_dir_is_cached_and_race_safe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALLOCATOR_CACHE_DIR", str(tmp_path / "cache"))
    results: list[Path] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            results.append(default_data_dir(users=300, seed=11))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(results)) == 1
    d = results[0]
    assert d.parent == tmp_path / "cache" and "u300" in d.name and "s11" in d.name
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [d.name]  # no temporaries left
    stamps = {p.name: p.stat().st_mtime_ns for p in d.iterdir()}
    assert default_data_dir(users=300, seed=11) == d
    assert {p.name: p.stat().st_mtime_ns for p in d.iterdir()} == stamps  # reused, not rebuilt
    fresh = generate(tmp_path / "fresh", users=300, seed=11)
    for stem, path in fresh.items():
        assert (d / path.name).read_bytes() == path.read_bytes()


def _invoke(args: list[str]):  # noqa: ANN202
    return CliRunner().invoke(app, ["generate", *args])


def test_cli_generate(tmp_path: Path) -> None:
    out = tmp_path / "cli"
    res = _invoke(["--users", "250", "--seed", "5", "--out", str(out), "--format", "csv"])
    assert res.exit_code == 0, res.output
    inputs = load_inputs(out)
    for stem in N.INPUT_TABLES:
        rows = inputs.table(stem).select(pl.len()).collect().item()
        assert f"{rows:,} rows" in res.output and str(out / f"{stem}.csv") in res.output
    expected = generate(tmp_path / "lib", users=250, seed=5, fmt="csv")
    for stem, path in expected.items():
        assert (out / path.name).read_bytes() == path.read_bytes()


def test_cli_errors_are_messages_not_tracebacks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    res = _invoke(["--users", "10", "--out", str(blocker)])
    assert res.exit_code == 2 and "not a directory" in res.output and "Traceback" not in res.output
    res = _invoke(["--users", "10", "--out", str(tmp_path / "o"), "--format", "xlsx"])
    assert res.exit_code == 2
    res = _invoke(["--users", "0", "--out", str(tmp_path / "o")])
    assert res.exit_code == 2
    res = _invoke(["--users", "-3", "--seed", "-1", "--out", str(tmp_path / "o")])
    assert res.exit_code == 2
    res = _invoke(["--users", "99999999999999", "--out", str(tmp_path / "o")])
    assert (
        res.exit_code == 2
        and "the limit is 50,000,000" in res.output
        and "Traceback" not in res.output
    )
    monkeypatch.chdir(tmp_path)
    res = _invoke(["--users", "10", "--out", ""])
    assert res.exit_code == 2 and "empty" in res.output
    assert not (tmp_path / "o").exists() and not list(tmp_path.glob("*.parquet"))


def test_cli_seed_may_be_any_non_negative_integer(tmp_path: Path) -> None:
    # numpy seeds take integers of any size; the limit is the shell's, not ours.
    res = _invoke(["--users", "5", "--seed", str(10**30), "--out", str(tmp_path / "big")])
    assert res.exit_code == 0, res.output
    assert load_inputs(tmp_path / "big").events.collect()[N.USER_ID].n_unique() == 5


def test_cli_switching_format_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "d"
    assert _invoke(["--users", "20", "--out", str(out), "--format", "csv"]).exit_code == 0
    res = _invoke(["--users", "20", "--out", str(out), "--format", "parquet"])
    assert res.exit_code == 2 and "already holds csv tables" in res.output
    assert sorted(p.suffix for p in out.iterdir()) == [".csv"] * 4


def test_cli_out_of_memory_is_a_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Below the limit a small machine may still run short of memory.
    def short_of_memory(*args: object, **kwargs: object) -> None:
        raise MemoryError

    monkeypatch.setattr(allocator.cli.cmd_generate, "generate", short_of_memory)
    res = _invoke(["--users", "40000000", "--out", str(tmp_path / "o")])
    assert (
        res.exit_code == 2 and "not enough memory" in res.output and "Traceback" not in res.output
    )
