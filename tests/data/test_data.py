"""Input loading and validation: every bad input is one InputError naming file, column and row."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from allocator import names as N
from allocator.data.inputs import SCHEMAS, Inputs, load_inputs, validate_inputs
from allocator.errors import InputError
from allocator.runs.hashing import sha256_file as file_sha256

UTC = UTC
T = datetime(2025, 10, 10, 21, 15, 0, tzinfo=UTC)
FORMATS = ("parquet", "csv")


def base_tables() -> dict[str, pl.DataFrame]:
    """A small valid data set: 4 events, 2 price series, 3 snapshot rows, 3 users."""
    events = pl.DataFrame(
        {
            N.EVENT_ID: [101, 102, 103, 104],
            N.USER_ID: [1, 1, 2, 3],
            N.TS: [T, T + timedelta(minutes=1), T + timedelta(minutes=2), T + timedelta(hours=3)],
            N.PRODUCT: [N.USDM_FUTURES, N.COINM_FUTURES, N.CROSS_MARGIN, N.OPTIONS],
            N.SYMBOL: ["BTCUSDT", "BTCUSD_PERP", "ETHUSDT", "BTC-251010-120000-C"],
            N.SIDE: ["long", "long", "short", "long"],
            N.QUANTITY: [0.5, 1.0, 2.0, 0.1],
            N.LIQ_PRICE: [110_000.0, 109_000.0, 3_900.0, 500.0],
            N.REALISED_LOSS: [1_000.0, 0.01, 250.0, 50.0],
            N.LIQ_FEE: [10.0, 0.0001, 2.5, 0.0],
            N.SETTLE_ASSET: ["USDT", "BTC", "USDT", "USDT"],
            N.COLLATERAL: ["USDT", "BTC", "USDT|USDe", None],
        },
        schema=SCHEMAS[N.EVENTS_FILE],
    )
    bars = [T - timedelta(minutes=30) + timedelta(minutes=i) for i in range(3)]
    prices = pl.DataFrame(
        {
            N.ASSET: ["USDT"] * 3 + ["BTC"] * 3,
            N.PRICE_TS: bars + bars,
            N.PRICE_USD: [1.0, 1.0, 0.9999, 120_000.0, 118_000.0, 110_000.0],
        },
        schema=SCHEMAS[N.PRICES_FILE],
    )
    snapshot = pl.DataFrame(
        {N.USER_ID: [1, 2, 3], N.NET_ASSETS_USD: [5_000.0, -12.5, 0.0]},
        schema=SCHEMAS[N.SNAPSHOT_FILE],
    )
    users = pl.DataFrame(
        {
            N.USER_ID: [1, 2, 3],
            N.VIP_TIER: [0, 3, 9],
            N.IS_INSTITUTIONAL: [False, False, True],
            N.REGION: ["FR", "BR", "US"],
            N.CREATED_AT: [datetime(2020, 1, 2, 3, 4, 5, tzinfo=UTC)] * 3,
            N.KYC_STATUS: ["verified", "pending", "unverified"],
            N.DEPEG_COMP_USD: [0.0, 12.34, 0.0],
        },
        schema=SCHEMAS[N.USERS_FILE],
    )
    return {
        N.EVENTS_FILE: events,
        N.PRICES_FILE: prices,
        N.SNAPSHOT_FILE: snapshot,
        N.USERS_FILE: users,
    }


def write(tables: dict[str, pl.DataFrame], d: Path, fmt: str) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    for stem, df in tables.items():
        path = d / f"{stem}.{fmt}"
        df.write_parquet(path) if fmt == "parquet" else df.write_csv(path)
    return d


def as_text(df: pl.DataFrame) -> pl.DataFrame:
    """The CSV text of a frame, as an all-String frame (what a CSV reader sees)."""
    import io

    buf = io.BytesIO()
    df.write_csv(buf)
    buf.seek(0)
    return pl.read_csv(buf, infer_schema=False)


def set_cell(df: pl.DataFrame, column: str, row: int, value: object) -> pl.DataFrame:
    values = df[column].to_list()
    values[row] = value
    dtype = (
        df.schema[column]
        if not isinstance(value, str) or df.schema[column] == pl.String
        else pl.String
    )
    return df.with_columns(pl.Series(column, values, dtype=dtype, strict=False))


def load_error(d: Path) -> str:
    with pytest.raises(InputError) as info:
        load_inputs(d)
    msg = str(info.value)
    assert "\n" not in msg  # one paragraph
    return msg


# --------------------------------------------------------------------------------------------
# good data


@pytest.mark.parametrize("fmt", FORMATS)
def test_good_directory_loads_with_exact_dtypes_and_values(tmp_path: Path, fmt: str) -> None:
    tables = base_tables()
    d = write(tables, tmp_path / "d", fmt)
    inputs = load_inputs(d)
    for stem, want in tables.items():
        got = inputs.table(stem).collect()
        assert got.schema == pl.Schema(SCHEMAS[stem])
        assert got.equals(want), stem
        assert inputs.paths[stem] == d / f"{stem}.{fmt}"


def test_parquet_compatible_types_are_cast_and_extra_columns_dropped(tmp_path: Path) -> None:
    tables = base_tables()
    ev = tables[N.EVENTS_FILE]
    tables[N.EVENTS_FILE] = ev.with_columns(
        pl.col(N.USER_ID).cast(pl.Int32),
        pl.col(N.EVENT_ID).cast(pl.UInt32),
        pl.col(N.QUANTITY).cast(pl.Float32),
        pl.col(N.TS).dt.convert_time_zone("Europe/Paris").dt.cast_time_unit("ns"),
        pl.col(N.PRODUCT).cast(pl.Categorical),
        pl.lit("anything").alias("desk_note"),
    )
    tables[N.USERS_FILE] = tables[N.USERS_FILE].with_columns(pl.col(N.VIP_TIER).cast(pl.Int8))
    d = write(tables, tmp_path / "d", "parquet")
    got = load_inputs(d).events.collect()
    assert got.schema == pl.Schema(SCHEMAS[N.EVENTS_FILE])
    assert "desk_note" not in got.columns
    # The same instants, now in UTC (stored as Europe/Paris wall times in nanoseconds).
    assert got[N.TS].to_list() == ev[N.TS].to_list()
    assert got[N.USER_ID].to_list() == ev[N.USER_ID].to_list()


def test_csv_offsets_are_converted_to_utc(tmp_path: Path) -> None:
    d = write(base_tables(), tmp_path / "d", "csv")
    text = as_text(base_tables()[N.PRICES_FILE])
    stamps = ["2025-10-10T22:45:00+02:00", "2025-10-10 20:46:00Z", "2025-10-10T15:47:00-0500"]
    text = text.with_columns(pl.Series(N.PRICE_TS, stamps * 2))
    text.write_csv(d / "prices.csv")
    got = load_inputs(d).prices.collect()[N.PRICE_TS].to_list()
    want = [datetime(2025, 10, 10, 20, 45 + i, tzinfo=UTC) for i in range(3)] * 2
    assert got == want


def test_validation_is_separate_from_loading(tmp_path: Path) -> None:
    tables = base_tables()
    tables[N.SNAPSHOT_FILE] = set_cell(tables[N.SNAPSHOT_FILE], N.NET_ASSETS_USD, 1, float("nan"))
    d = write(tables, tmp_path / "d", "parquet")
    inputs = load_inputs(d, validate=False)  # layout and types only
    with pytest.raises(InputError, match="net_assets_usd"):
        validate_inputs(inputs)


def test_in_memory_inputs_are_validated(tmp_path: Path) -> None:
    t = base_tables()
    t[N.USERS_FILE] = set_cell(t[N.USERS_FILE], N.VIP_TIER, 2, 12)
    inputs = Inputs(*(t[s].lazy() for s in N.INPUT_TABLES), paths={})
    with pytest.raises(InputError, match=r"'vip_tier'.*row 3"):
        validate_inputs(inputs)


def test_negative_and_zero_net_assets_are_allowed(tmp_path: Path) -> None:
    d = write(base_tables(), tmp_path / "d", "csv")
    net = load_inputs(d).snapshot.collect()[N.NET_ASSETS_USD].to_list()
    assert min(net) < 0 and 0.0 in net


def test_file_sha256_streams(tmp_path: Path) -> None:
    p = tmp_path / "blob"
    data = bytes(range(256)) * 5000
    p.write_bytes(data)
    assert file_sha256(p, chunk_bytes=4096) == hashlib.sha256(data).hexdigest() == file_sha256(p)


# --------------------------------------------------------------------------------------------
# layout errors


def test_missing_directory(tmp_path: Path) -> None:
    msg = load_error(tmp_path / "nope")
    assert str(tmp_path / "nope") in msg and "does not exist" in msg
    assert all(stem in msg for stem in N.INPUT_TABLES)


def test_missing_table_names_what_was_looked_for(tmp_path: Path) -> None:
    t = base_tables()
    del t[N.SNAPSHOT_FILE]
    d = write(t, tmp_path / "d", "parquet")
    msg = load_error(d)
    assert "snapshot.parquet" in msg and "snapshot.csv" in msg and str(d) in msg


def test_both_formats_present_is_ambiguous(tmp_path: Path) -> None:
    d = write(base_tables(), tmp_path / "d", "parquet")
    base_tables()[N.USERS_FILE].write_csv(d / "users.csv")
    msg = load_error(d)
    assert "users.csv" in msg and "users.parquet" in msg and "ambiguous" in msg


@pytest.mark.parametrize("fmt", FORMATS)
def test_zero_byte_file(tmp_path: Path, fmt: str) -> None:
    d = write(base_tables(), tmp_path / "d", fmt)
    (d / f"prices.{fmt}").write_bytes(b"")
    msg = load_error(d)
    assert str(d / f"prices.{fmt}") in msg and "empty" in msg


@pytest.mark.parametrize("fmt", FORMATS)
def test_table_without_rows(tmp_path: Path, fmt: str) -> None:
    t = base_tables()
    t[N.USERS_FILE] = t[N.USERS_FILE].head(0)
    d = write(t, tmp_path / "d", fmt)
    msg = load_error(d)
    assert str(d / f"users.{fmt}") in msg and "no data rows" in msg


def test_unreadable_parquet(tmp_path: Path) -> None:
    d = write(base_tables(), tmp_path / "d", "parquet")
    (d / "snapshot.parquet").write_bytes(b"this is not parquet at all")
    msg = load_error(d)
    assert str(d / "snapshot.parquet") in msg and "parquet" in msg


@pytest.mark.parametrize("fmt", FORMATS)
def test_missing_column(tmp_path: Path, fmt: str) -> None:
    t = base_tables()
    t[N.EVENTS_FILE] = t[N.EVENTS_FILE].drop(N.LIQ_FEE)
    d = write(t, tmp_path / "d", fmt)
    msg = load_error(d)
    assert str(d / f"liquidations.{fmt}") in msg and "'liq_fee'" in msg and "missing" in msg


# --------------------------------------------------------------------------------------------
# row errors: file, column, row number and the row's values in one paragraph

# (table, column, 0-based row, value in parquet, text in CSV, words the message must hold)
ROW_CASES = [
    (N.EVENTS_FILE, N.QUANTITY, 2, -1.0, "-1.0", ">= 0"),
    (N.EVENTS_FILE, N.REALISED_LOSS, 1, float("nan"), "NaN", ">= 0"),
    (N.EVENTS_FILE, N.LIQ_FEE, 3, float("inf"), "inf", ">= 0"),
    (N.EVENTS_FILE, N.LIQ_FEE, 0, -0.5, "-0.5", ">= 0"),
    (N.EVENTS_FILE, N.LIQ_PRICE, 1, 0.0, "0", "> 0"),
    (N.PRICES_FILE, N.PRICE_USD, 4, 0.0, "0.0", "> 0"),
    (N.PRICES_FILE, N.PRICE_USD, 2, float("-inf"), "-inf", "> 0"),
    (N.SNAPSHOT_FILE, N.NET_ASSETS_USD, 1, float("nan"), "nan", "finite"),
    (N.USERS_FILE, N.DEPEG_COMP_USD, 1, -0.01, "-0.01", ">= 0"),
    (N.USERS_FILE, N.VIP_TIER, 2, 10, "10", "0..9"),
    (N.USERS_FILE, N.VIP_TIER, 0, -1, "-1", "0..9"),
    (N.EVENTS_FILE, N.PRODUCT, 2, "perpetual", "perpetual", "'usdm_futures', 'coinm_futures'"),
    (N.EVENTS_FILE, N.SIDE, 1, "buy", "buy", "'long', 'short'"),
    (N.USERS_FILE, N.KYC_STATUS, 1, "done", "done", "'verified', 'pending', 'unverified'"),
    (N.USERS_FILE, N.REGION, 2, "usa", "usa", "two upper-case letters"),
    (N.USERS_FILE, N.REGION, 0, "U.", "U.", "ISO 3166-1 alpha-2"),
    (N.EVENTS_FILE, N.USER_ID, 2, None, "", "required"),
    (N.EVENTS_FILE, N.TS, 3, None, "", "required"),
    (N.PRICES_FILE, N.ASSET, 5, None, "", "required"),
    (N.USERS_FILE, N.REGION, 1, None, "", "required"),
    (N.USERS_FILE, N.IS_INSTITUTIONAL, 2, None, "", "required"),
    (N.SNAPSHOT_FILE, N.NET_ASSETS_USD, 0, None, "", "required"),
]


def shown(value: object, fmt: str, text: str) -> str:
    """How the message shows the offending cell: parquet values, or the CSV text as written."""
    if fmt == "csv":
        return "null" if text == "" else repr(text)
    if value is None:
        return "null"
    return repr(value) if isinstance(value, str) else str(value)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(("stem", "column", "row", "value", "text", "words"), ROW_CASES)
def test_bad_value_names_file_column_and_row(
    tmp_path: Path, fmt: str, stem: str, column: str, row: int, value: object, text: str, words: str
) -> None:
    t = base_tables()
    if fmt == "parquet":
        t[stem] = set_cell(t[stem], column, row, value)
    else:
        t[stem] = set_cell(as_text(t[stem]), column, row, text or None)
    d = write(t, tmp_path / "d", fmt)
    msg = load_error(d)
    assert str(d / f"{stem}.{fmt}") in msg
    assert f"column '{column}'" in msg
    assert f"row {row + 1}:" in msg
    assert f"{column}={shown(value, fmt, text)}" in msg
    first = next(iter(SCHEMAS[stem]))
    assert f"{first}=" in msg  # the rest of the row is shown too
    assert words in msg


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    ("stem", "column", "dup_row", "of_row"),
    [
        (N.EVENTS_FILE, N.EVENT_ID, 3, 0),  # out of order: found by hashing
        (N.EVENTS_FILE, N.EVENT_ID, 2, 1),  # adjacent, in order
        (N.SNAPSHOT_FILE, N.USER_ID, 2, 0),
        (N.USERS_FILE, N.USER_ID, 1, 0),
    ],
)
def test_duplicate_ids(
    tmp_path: Path, fmt: str, stem: str, column: str, dup_row: int, of_row: int
) -> None:
    t = base_tables()
    t[stem] = set_cell(t[stem], column, dup_row, t[stem][column][of_row])
    d = write(t, tmp_path / "d", fmt)
    msg = load_error(d)
    assert str(d / f"{stem}.{fmt}") in msg and f"column '{column}'" in msg and "unique" in msg
    assert f"row {dup_row + 1}:" in msg and f"same {column} as row {of_row + 1}" in msg


@pytest.mark.parametrize(
    ("column", "row", "text", "words"),
    [
        (N.QUANTITY, 1, "abc", "a number"),
        (N.EVENT_ID, 2, "12x", "an integer"),
        (N.USER_ID, 0, "2.5", "an integer"),
        (N.TS, 2, "yesterday", "time-zone-aware timestamp"),
    ],
)
def test_csv_unparsable_values(
    tmp_path: Path, column: str, row: int, text: str, words: str
) -> None:
    t = base_tables()
    t[N.EVENTS_FILE] = set_cell(as_text(t[N.EVENTS_FILE]), column, row, text)
    d = write(t, tmp_path / "d", "csv")
    msg = load_error(d)
    assert str(d / "liquidations.csv") in msg and f"column '{column}'" in msg
    assert f"row {row + 1}:" in msg and f"{column}={text!r}" in msg and words in msg


@pytest.mark.parametrize(
    ("stem", "column", "text"),
    [
        (N.USERS_FILE, N.VIP_TIER, "1.5"),
        (N.USERS_FILE, N.IS_INSTITUTIONAL, "maybe"),
    ],
)
def test_csv_unparsable_user_fields(tmp_path: Path, stem: str, column: str, text: str) -> None:
    t = base_tables()
    t[stem] = set_cell(as_text(t[stem]), column, 1, text)
    d = write(t, tmp_path / "d", "csv")
    msg = load_error(d)
    assert f"column '{column}'" in msg and "row 2:" in msg and f"{column}={text!r}" in msg


@pytest.mark.parametrize(
    "stamp", ["2025-10-10 21:15:00", "2025-10-10T21:15:00.123456", "2025-10-10"]
)
def test_csv_naive_timestamp(tmp_path: Path, stamp: str) -> None:
    t = base_tables()
    t[N.USERS_FILE] = set_cell(as_text(t[N.USERS_FILE]), N.CREATED_AT, 2, stamp)
    d = write(t, tmp_path / "d", "csv")
    msg = load_error(d)
    assert str(d / "users.csv") in msg and "column 'created_at'" in msg and "naive" in msg
    assert "row 3:" in msg and f"created_at={stamp!r}" in msg


def test_parquet_naive_datetime(tmp_path: Path) -> None:
    t = base_tables()
    t[N.PRICES_FILE] = t[N.PRICES_FILE].with_columns(pl.col(N.PRICE_TS).dt.replace_time_zone(None))
    d = write(t, tmp_path / "d", "parquet")
    msg = load_error(d)
    assert str(d / "prices.parquet") in msg and "column 'ts'" in msg and "naive" in msg
    assert "row 1 has ts=2025-10-10 20:45:00" in msg


@pytest.mark.parametrize(
    ("stem", "column", "cast"),
    [
        (N.EVENTS_FILE, N.QUANTITY, pl.String),
        (N.EVENTS_FILE, N.USER_ID, pl.Float64),
        (N.USERS_FILE, N.IS_INSTITUTIONAL, pl.Int64),
        (N.USERS_FILE, N.CREATED_AT, pl.Date),
        (N.EVENTS_FILE, N.PRODUCT, pl.Int64),
    ],
)
def test_parquet_wrong_kind(tmp_path: Path, stem: str, column: str, cast: pl.DataType) -> None:
    t = base_tables()
    if column == N.PRODUCT:
        t[stem] = t[stem].with_columns(pl.Series(column, [1, 2, 3, 4]))
    else:
        t[stem] = t[stem].with_columns(pl.col(column).cast(cast))
    d = write(t, tmp_path / "d", "parquet")
    msg = load_error(d)
    assert str(d / f"{stem}.parquet") in msg and f"column '{column}'" in msg
    assert f"row 1 has {column}=" in msg and "must be" in msg


def test_uint64_ids_that_do_not_fit(tmp_path: Path) -> None:
    t = base_tables()
    t[N.SNAPSHOT_FILE] = t[N.SNAPSHOT_FILE].with_columns(
        pl.Series(N.USER_ID, [1, 2**63 + 5, 3], dtype=pl.UInt64)
    )
    d = write(t, tmp_path / "d", "parquet")
    msg = load_error(d)
    assert "column 'user_id'" in msg and "row 2:" in msg and "an integer" in msg


def test_settle_asset_without_prices(tmp_path: Path) -> None:
    t = base_tables()
    t[N.EVENTS_FILE] = set_cell(t[N.EVENTS_FILE], N.SETTLE_ASSET, 2, "ETH")
    d = write(t, tmp_path / "d", "parquet")
    msg = load_error(d)
    assert str(d / "liquidations.parquet") in msg and "column 'settle_asset'" in msg
    assert "row 3:" in msg and "settle_asset='ETH'" in msg


def test_uncovered_product_may_settle_in_unpriced_asset(tmp_path: Path) -> None:
    t = base_tables()
    t[N.EVENTS_FILE] = set_cell(t[N.EVENTS_FILE], N.SETTLE_ASSET, 3, "OPT")  # an options event
    load_inputs(write(t, tmp_path / "d", "parquet"))


# --------------------------------------------------------------------------------------------
# properties


@settings(max_examples=30)
@given(
    n=st.integers(1, 25),
    data=st.data(),
    fmt=st.sampled_from(FORMATS),
    bad=st.sampled_from([float("nan"), float("inf"), float("-inf")]),
)
def test_first_offending_row_is_reported(tmp_path_factory, n, data, fmt, bad) -> None:  # noqa: ANN001
    """Whatever rows break the rule, the message counts them and shows the first one."""
    rows = data.draw(st.sets(st.integers(0, n - 1), min_size=1, max_size=n))
    net = data.draw(st.lists(st.floats(-1e9, 1e9, allow_nan=False), min_size=n, max_size=n))
    for r in rows:
        net[r] = bad
    t = base_tables()
    ids = list(range(1, n + 1))
    t[N.SNAPSHOT_FILE] = pl.DataFrame(
        {N.USER_ID: ids, N.NET_ASSETS_USD: net}, schema=SCHEMAS[N.SNAPSHOT_FILE]
    )
    d = write(t, tmp_path_factory.mktemp("prop"), fmt)
    msg = load_error(d)
    assert f"but {len(rows)} row(s) do not" in msg
    assert f"first at row {min(rows) + 1}:" in msg


@settings(max_examples=30)
@given(
    net=st.lists(
        st.floats(-1e12, 1e12, allow_nan=False, allow_infinity=False), min_size=1, max_size=30
    ),
    fmt=st.sampled_from(FORMATS),
)
def test_valid_values_round_trip_exactly(tmp_path_factory, net, fmt) -> None:  # noqa: ANN001
    t = base_tables()
    t[N.SNAPSHOT_FILE] = pl.DataFrame(
        {N.USER_ID: list(range(len(net), 0, -1)), N.NET_ASSETS_USD: net},
        schema=SCHEMAS[N.SNAPSHOT_FILE],
    )
    d = write(t, tmp_path_factory.mktemp("rt"), fmt)
    got = load_inputs(d).snapshot.collect()
    assert got.equals(t[N.SNAPSHOT_FILE])


# --------------------------------------------------------------------------------------------
# CSV structure: malformed lines are named by file and line, shown short, and never accepted

#: A message quotes at most ~200 characters of the file; with the path and the explanation a
#: message stays within this many characters, however long the offending line.
MAX_MESSAGE = 700


def csv_dir(tmp_path: Path, edits: dict[str, Callable[[bytes], bytes]] | None = None) -> Path:
    """The base tables as CSV files, with the bytes of some of them rewritten by ``edits``."""
    d = write(base_tables(), tmp_path / "d", "csv")
    for stem, edit in (edits or {}).items():
        path = d / f"{stem}.csv"
        path.write_bytes(edit(path.read_bytes()))
    return d


def on_line(line: int, edit: Callable[[bytes], bytes]) -> Callable[[bytes], bytes]:
    """Rewrite one line of a file (numbered from 1, the header being line 1)."""

    def apply(data: bytes) -> bytes:
        lines = data.split(b"\n")
        lines[line - 1] = edit(lines[line - 1])
        return b"\n".join(lines)

    return apply


def csv_error(d: Path) -> str:
    msg = load_error(d)
    assert len(msg) <= MAX_MESSAGE, msg
    return msg


@pytest.mark.parametrize("stem", N.INPUT_TABLES)
def test_line_with_an_extra_field_is_refused(tmp_path: Path, stem: str) -> None:
    # The extra field lands past the last column: Polars drops it silently unless every column
    # is read, so this is checked for each table (the events' last column has no other check).
    d = csv_dir(tmp_path, {stem: on_line(3, lambda b: b + b",EXTRA")})
    msg = csv_error(d)
    n = len(SCHEMAS[stem])
    assert str(d / f"{stem}.csv") in msg and "line 3 (data row 2)" in msg
    assert f"{n + 1} fields where the header has {n}" in msg and ",EXTRA'" in msg


def test_unquoted_comma_in_a_timestamp(tmp_path: Path) -> None:
    stamp = b"2025-10-10T21:16:00.000000+0000"
    d = csv_dir(
        tmp_path, {N.EVENTS_FILE: on_line(3, lambda b: b.replace(stamp, b"2025-10-10T21:15:00,5Z"))}
    )
    msg = csv_error(d)
    assert "liquidations.csv, line 3 (data row 2): 13 fields where the header has 12" in msg
    assert "2025-10-10T21:15:00,5Z" in msg and "comma inside an unquoted value" in msg


@pytest.mark.parametrize("value", [b'us"dm_futures', b'"usdm_futures'])
def test_stray_double_quote_names_line_and_column_briefly(tmp_path: Path, value: bytes) -> None:
    # Many lines follow the quote: a reader looking for its end would otherwise quote them all.
    t = base_tables()
    t[N.EVENTS_FILE] = pl.concat([t[N.EVENTS_FILE]] * 200).with_columns(
        pl.int_range(1, 801, dtype=pl.Int64).alias(N.EVENT_ID)
    )
    d = write(t, tmp_path / "d", "csv")
    p = d / "liquidations.csv"
    p.write_bytes(on_line(6, lambda b: b.replace(b"usdm_futures", value))(p.read_bytes()))
    msg = csv_error(d)
    assert "liquidations.csv, line 6 (data row 5), column 'product'" in msg
    assert "never closes" in msg and value.decode() in msg


def test_latin1_byte_names_line_and_column(tmp_path: Path) -> None:
    d = csv_dir(tmp_path, {N.USERS_FILE: on_line(3, lambda b: b.replace(b",BR,", b",\xc9S,"))})
    msg = csv_error(d)
    assert "users.csv, line 3 (data row 2), column 'region'" in msg
    assert "0xC9" in msg and "UTF-8" in msg


def test_latin1_byte_in_the_header(tmp_path: Path) -> None:
    d = csv_dir(tmp_path, {N.USERS_FILE: lambda b: b.replace(b"\n", b",r\xe9sum\xe9\n")})
    msg = csv_error(d)
    assert "users.csv, line 1 (the header)" in msg and "0xE9" in msg and "UTF-8" in msg


def test_utf16_file_is_named_as_such(tmp_path: Path) -> None:
    d = csv_dir(tmp_path, {N.SNAPSHOT_FILE: lambda b: b.decode().encode("utf-16")})
    msg = csv_error(d)
    assert "snapshot.csv is UTF-16" in msg and "UTF-8" in msg


def test_long_line_is_shown_truncated(tmp_path: Path) -> None:
    d = csv_dir(tmp_path, {N.USERS_FILE: on_line(2, lambda b: b + b"," + b"x" * 10_000)})
    msg = csv_error(d)
    assert "line 2 (data row 1)" in msg and "x" * 100 in msg and "x" * 1000 not in msg


@pytest.mark.parametrize(
    ("line", "edit", "words"),
    [
        (3, lambda b: b.replace(b",coinm_futures,", b","), "11 fields where the header has 12"),
        (4, lambda b: b"", "blank"),
        (6, lambda b: b"\n", "blank"),  # an empty line at the end of the file
    ],
)
def test_short_or_blank_line_is_refused_by_line(
    tmp_path: Path, line: int, edit: Callable[[bytes], bytes], words: str
) -> None:
    # Polars pads a short line with nulls (its values then sit one column left): the value
    # checks see the damage, and the message names the line rather than a shifted value.
    d = csv_dir(tmp_path, {N.EVENTS_FILE: on_line(line, edit)})
    msg = csv_error(d)
    assert f"liquidations.csv, line {line} (data row {line - 1})" in msg and words in msg


def test_line_lacking_only_the_optional_last_field_reads_as_empty(tmp_path: Path) -> None:
    # Documented: indistinguishable, for the reader, from leaving ``collateral`` empty.
    d = csv_dir(tmp_path, {N.EVENTS_FILE: on_line(2, lambda b: b.rsplit(b",", 1)[0])})
    assert load_inputs(d).events.collect()[N.COLLATERAL][0] is None


def test_bom_and_crlf_are_accepted(tmp_path: Path) -> None:
    bom_crlf = {
        stem: (lambda b: b"\xef\xbb\xbf" + b.replace(b"\n", b"\r\n")) for stem in N.INPUT_TABLES
    }
    d = csv_dir(tmp_path, bom_crlf)
    assert (d / "users.csv").read_bytes().startswith(b"\xef\xbb\xbfuser_id,")
    inputs = load_inputs(d)
    for stem, want in base_tables().items():
        assert inputs.table(stem).collect().equals(want), stem


def test_quoted_values_may_hold_commas_and_line_breaks_and_lines_stay_exact(tmp_path: Path) -> None:
    # A value spanning two lines: the data row after it is reported on the right line.
    d = csv_dir(
        tmp_path,
        {
            N.EVENTS_FILE: lambda b: on_line(5, lambda x: x.replace(b",short,", b",shrt,"))(
                on_line(2, lambda x: x.replace(b",BTCUSDT,", b',"BTC,\nUSDT",'))(b)
            )
        },
    )
    msg = csv_error(d)
    assert (
        "column 'side'" in msg and "first at row 3:" in msg and "row 3 is line 5 of the file" in msg
    )
    assert "symbol='ETHUSDT'" in msg
    fixed = d / "liquidations.csv"
    fixed.write_bytes(fixed.read_bytes().replace(b",shrt,", b",short,"))
    assert load_inputs(d).events.collect()[N.SYMBOL][0] == "BTC,\nUSDT"


def test_csv_bad_value_names_its_line(tmp_path: Path) -> None:
    d = csv_dir(tmp_path, {N.USERS_FILE: on_line(4, lambda b: b.replace(b",US,", b",us,"))})
    msg = csv_error(d)
    assert (
        "column 'region'" in msg
        and "first at row 3:" in msg
        and "row 3 is line 4 of the file" in msg
    )


@pytest.mark.parametrize("char", [b"\x00", b"\x07", b"\x1b", b"\x7f"])
def test_a_control_character_in_a_text_value_is_refused(tmp_path: Path, char: bytes) -> None:
    """A NUL byte inside a symbol was accepted and written on into the run's files."""
    symbol = list(SCHEMAS[N.EVENTS_FILE]).index(N.SYMBOL)

    def edit(line: bytes) -> bytes:
        fields = line.split(b",")
        fields[symbol] = fields[symbol][:2] + char + fields[symbol][2:]
        return b",".join(fields)

    d = csv_dir(tmp_path, {N.EVENTS_FILE: on_line(3, edit)})
    assert char in (d / f"{N.EVENTS_FILE}.csv").read_bytes()  # the edit took
    msg = csv_error(d)
    assert "column 'symbol'" in msg and "control characters" in msg and "1 row(s) do" in msg


def test_the_control_characters_are_c0_but_tab_and_line_breaks_del_and_c1() -> None:
    """The check looks for literal characters; every character up to U+3000 (and a few texts
    around them, with a null) is flagged exactly when it is one of those classes."""
    from allocator.data.validation import _CONTROL_CHARS

    def control(c: int) -> bool:
        return c < 0x20 and c not in (0x09, 0x0A, 0x0D) or 0x7F <= c <= 0x9F

    texts = [chr(c) for c in range(0x3000)] + [f"BTC{chr(c)}USDT" for c in range(0x100)]
    texts += ["\U0001f600", "", None]
    flagged = pl.Series(texts, dtype=pl.String).str.contains_any(_CONTROL_CHARS).to_list()
    expected = [None if t is None else any(control(ord(ch)) for ch in t) for t in texts]
    assert flagged == expected


def test_csv_extra_columns_are_accepted_and_ignored_in_any_order(tmp_path: Path) -> None:
    def extra(data: bytes) -> bytes:
        lines = data.rstrip(b"\n").split(b"\n")
        return (
            b"\n".join([b"desk_note," + lines[0]] + [b'"a, b",' + ln for ln in lines[1:]]) + b"\n"
        )

    d = csv_dir(tmp_path, dict.fromkeys(N.INPUT_TABLES, extra))
    inputs = load_inputs(d)
    for stem, want in base_tables().items():
        got = inputs.table(stem).collect()
        assert got.columns == list(SCHEMAS[stem]) and got.equals(want), stem


def test_csv_schema_column_named_twice_is_refused(tmp_path: Path) -> None:
    def twice(data: bytes) -> bytes:
        lines = data.rstrip(b"\n").split(b"\n")
        return b"\n".join([lines[0] + b",user_id"] + [ln + b",999" for ln in lines[1:]]) + b"\n"

    msg = csv_error(csv_dir(tmp_path, {N.USERS_FILE: twice}))
    assert "users.csv, line 1 (the header), column 'user_id'" in msg and "ambiguous" in msg


def test_reader_failure_without_a_malformed_line_is_short(tmp_path: Path) -> None:
    """Should Polars fail on a file whose lines look well formed, its message is cut short."""
    from allocator.data.csvtext import csv_read_error

    d = csv_dir(tmp_path)
    path = d / "users.csv"
    header = tuple(path.read_text().splitlines()[0].split(","))
    err = csv_read_error(
        path, header, pl.exceptions.ComputeError("could not parse " + "x" * 5000 + "\nmore")
    )
    assert str(path) in str(err) and len(str(err)) <= MAX_MESSAGE and "more" not in str(err)


def test_cli_reports_a_malformed_line_without_traceback(tmp_path: Path) -> None:
    from clihelp import invoke

    stamp = b"2025-10-10T21:16:00.000000+0000"
    d = csv_dir(
        tmp_path, {N.EVENTS_FILE: on_line(3, lambda b: b.replace(stamp, b"2025-10-10T21:15:00,5Z"))}
    )
    out = tmp_path / "out"
    res = invoke("eligibility", "--data", d, "--out", out, "-q")
    assert res.exit_code == 2, res.output
    assert "line 3 (data row 2)" in res.stderr and "Traceback" not in res.output + res.stderr
    assert not out.exists()
