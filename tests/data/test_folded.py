"""Validation folded into the eligibility scan raises what a separate validation raised.

``load_inputs(..., validate="folded")`` leaves the row checks to the pass over the events
(:class:`allocator.data.validation.FoldedChecks`). For every kind of bad parquet input, alone or
with others, the error (its file, column, count and example row) must be the one the separate
validation raised first, and on good data the eligibility result must not change.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest
from test_data import T, base_tables, set_cell

from allocator import names as N
from allocator.data.inputs import load_inputs
from allocator.errors import InputError
from allocator.settings.models import EligibilityRules
from allocator.vouchers.eligibility import compute_eligibility, run_eligibility
from allocator.vouchers.pipeline import DataSession

Tables = dict[str, pl.DataFrame]
RULES = EligibilityRules()


def _write(tables: Tables, d: Path, row_groups: int | None = None) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    for stem, df in tables.items():
        df.write_parquet(d / f"{stem}.parquet", row_group_size=row_groups)
    return d


def _separately(d: Path) -> str | None:
    """The error of validating first, then computing eligibility (None: no error)."""
    try:
        inputs = load_inputs(d, validate=True)
        compute_eligibility(
            inputs.events, inputs.prices, inputs.snapshot, inputs.users, RULES,
            source={k: str(v) for k, v in inputs.paths.items()},
        )  # fmt: skip
    except InputError as exc:
        return str(exc)
    return None


def _folded(d: Path) -> str | None:
    try:
        run_eligibility(d, RULES)
    except InputError as exc:
        return str(exc)
    return None


def _session(d: Path) -> str | None:
    try:
        DataSession.open(d, fold_validation=True, keep_passes=False).eligibility(RULES)
    except InputError as exc:
        return str(exc)
    return None


def _edit(stem: str, column: str, row: int, value: object) -> Callable[[Tables], None]:
    def edit(t: Tables) -> None:
        t[stem] = set_cell(t[stem], column, row, value)

    return edit


def _reorder(stem: str, order: list[int]) -> Callable[[Tables], None]:
    def edit(t: Tables) -> None:
        t[stem] = t[stem][order]

    return edit


def _empty(stem: str) -> Callable[[Tables], None]:
    def edit(t: Tables) -> None:
        t[stem] = t[stem].head(0)

    return edit


def _stranger(stem: str, column: str, value: object) -> Callable[[Tables], None]:
    """A last row for user 99, never liquidated, with one bad value."""

    def edit(t: Tables) -> None:
        row = set_cell(t[stem].tail(1), N.USER_ID, 0, 99)
        t[stem] = pl.concat([t[stem], set_cell(row, column, 0, value)])

    return edit


def _early_event(t: Tables) -> None:
    # a counted event before the first USDT bar: eligibility's own error, on valid data
    t[N.EVENTS_FILE] = set_cell(t[N.EVENTS_FILE], N.TS, 0, T - timedelta(hours=2))


def _twice_priced(t: Tables) -> None:
    # two bars for one asset and time: eligibility's own error, on valid data
    t[N.PRICES_FILE] = pl.concat([t[N.PRICES_FILE], t[N.PRICES_FILE].head(1)])


PROBLEMS: dict[str, list[Callable[[Tables], None]]] = {
    "null user_id": [_edit(N.EVENTS_FILE, N.USER_ID, 1, None)],
    "control character in a symbol": [_edit(N.EVENTS_FILE, N.SYMBOL, 2, "BTC\x00USDT")],
    "control character in a product": [_edit(N.EVENTS_FILE, N.PRODUCT, 2, "spot\x1b")],
    "unknown product": [_edit(N.EVENTS_FILE, N.PRODUCT, 3, "futures")],
    "negative quantity": [_edit(N.EVENTS_FILE, N.QUANTITY, 1, -1.0)],
    "infinite fee": [_edit(N.EVENTS_FILE, N.LIQ_FEE, 0, float("inf"))],
    "duplicate event id": [_edit(N.EVENTS_FILE, N.EVENT_ID, 2, 102)],
    "duplicate event id, unsorted": [
        _edit(N.EVENTS_FILE, N.EVENT_ID, 2, 101),
        _reorder(N.EVENTS_FILE, [3, 1, 0, 2]),
    ],
    "settle asset without prices": [_edit(N.EVENTS_FILE, N.SETTLE_ASSET, 2, "ETH")],
    "negative price": [_edit(N.PRICES_FILE, N.PRICE_USD, 4, -1.0)],
    "NaN net assets": [_edit(N.SNAPSHOT_FILE, N.NET_ASSETS_USD, 1, float("nan"))],
    "duplicate snapshot user": [_edit(N.SNAPSHOT_FILE, N.USER_ID, 2, 2)],
    "lower-case region": [_edit(N.USERS_FILE, N.REGION, 0, "fr")],
    "control character in a KYC status": [_edit(N.USERS_FILE, N.KYC_STATUS, 1, "verif\x07ied")],
    "duplicate user, unsorted": [
        _edit(N.USERS_FILE, N.USER_ID, 0, 3),
        _reorder(N.USERS_FILE, [2, 0, 1]),
    ],
    "empty snapshot": [_empty(N.SNAPSHOT_FILE)],
    "snapshot row of a user never liquidated": [
        _stranger(N.SNAPSHOT_FILE, N.NET_ASSETS_USD, float("-inf"))
    ],
    "users row of a user never liquidated": [_stranger(N.USERS_FILE, N.KYC_STATUS, None)],
    "snapshot and events: the events first": [
        _edit(N.SNAPSHOT_FILE, N.NET_ASSETS_USD, 0, float("nan")),
        _edit(N.EVENTS_FILE, N.QUANTITY, 3, -2.0),
    ],
    "prices and events: the events first": [
        _edit(N.PRICES_FILE, N.PRICE_USD, 0, 0.0),
        _edit(N.EVENTS_FILE, N.SIDE, 0, "up"),
    ],
    "users and snapshot: the snapshot first": [
        _edit(N.USERS_FILE, N.VIP_TIER, 1, 12),
        _edit(N.SNAPSHOT_FILE, N.USER_ID, 1, None),
    ],
    "no price before an event": [_early_event],
    "no price before an event, and a bad user": [
        _early_event,
        _edit(N.USERS_FILE, N.VIP_TIER, 0, -1),
    ],
    "two bars at once": [_twice_priced],
    "two bars at once, and a bad event": [_twice_priced, _edit(N.EVENTS_FILE, N.LIQ_PRICE, 0, 0.0)],
}


@pytest.mark.parametrize("name", PROBLEMS)
def test_folded_validation_raises_the_separate_validations_error(tmp_path: Path, name: str) -> None:
    tables = base_tables()
    for edit in PROBLEMS[name]:
        edit(tables)
    d = _write(tables, tmp_path / "data")
    want = _separately(d)
    assert want is not None
    assert _folded(d) == want
    assert _session(d) == want


def test_a_duplicate_across_row_groups_is_found(tmp_path: Path) -> None:
    """The streaming engine reads row groups in pieces; the key's order is checked across them."""
    tables = base_tables()
    _edit(N.EVENTS_FILE, N.EVENT_ID, 2, 102)(tables)  # rows 1 and 2: the two row groups' edges
    d = _write(tables, tmp_path / "data", row_groups=2)
    want = _separately(d)
    assert want is not None and "event_id" in want
    assert _folded(d) == want


def test_good_data_in_any_order_gives_the_same_result(tmp_path: Path) -> None:
    tables = base_tables()
    _reorder(N.EVENTS_FILE, [3, 1, 0, 2])(tables)
    _reorder(N.SNAPSHOT_FILE, [2, 0, 1])(tables)
    _reorder(N.USERS_FILE, [1, 2, 0])(tables)
    d = _write(tables, tmp_path / "data")
    assert _separately(d) is None
    inputs = load_inputs(d, validate=True)
    want = compute_eligibility(inputs.events, inputs.prices, inputs.snapshot, inputs.users, RULES)
    got = run_eligibility(d, RULES)
    assert got.eligible.equals(want.eligible) and got.excluded.equals(want.excluded)
    assert got.reconciliation.to_dict() == want.reconciliation.to_dict()


def test_csv_tables_are_validated_at_once(tmp_path: Path) -> None:
    tables = base_tables()
    tables[N.EVENTS_FILE] = set_cell(tables[N.EVENTS_FILE], N.QUANTITY, 0, -1.0)
    d = tmp_path / "data"
    d.mkdir()
    for stem, df in tables.items():
        df.write_csv(d / f"{stem}.csv")
    with pytest.raises(InputError) as info:
        load_inputs(d, validate="folded")
    assert "quantity" in str(info.value)
