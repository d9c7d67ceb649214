"""The settings of a distribution in rounds: ``budget.reserve_usd`` and ``[rounds]``, their
ranges and messages, the cumulative total of each round, the schema editors read, and the two
input files of a later round (appeals, redemptions) as CSV and Parquet."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from allocator import names as N
from allocator.data.roundfiles import read_appeals, read_redemptions
from allocator.errors import InputError, ScenarioError
from allocator.settings.files import json_schema
from allocator.settings.models import round_budget_usd
from allocator.settings.scenarios import load_scenario, parse_scenario

ROOT = Path(__file__).resolve().parents[2]


def scenario(**sections: dict) -> object:
    return parse_scenario({"name": "s", **sections}, file="test")


def test_each_round_pays_the_budget_less_the_reserve_until_it_is_released() -> None:
    s = scenario(
        budget={"total_usd": 1000.10, "reserve_usd": 100.05},
        rounds={"reserve_release_round": 3},
    )
    assert [round_budget_usd(s, k) for k in (1, 2, 3, 4)] == [900.05, 900.05, 1000.10, 1000.10]
    plain = scenario()
    assert round_budget_usd(plain, 1) == plain.budget.total_usd  # no reserve: round 1 unchanged


@pytest.mark.parametrize(
    ("sections", "words"),
    [
        ({"budget": {"total_usd": 100.0, "reserve_usd": 100.0}}, "budget.reserve_usd"),
        ({"budget": {"total_usd": 100.0, "reserve_usd": 1.005}}, "whole cents"),
        ({"budget": {"reserve_usd": -1.0}}, "budget.reserve_usd"),
        ({"rounds": {"unclaimed": "later"}}, "rounds.unclaimed"),
        ({"rounds": {"reserve_release_round": 1}}, "rounds.reserve_release_round"),
        ({"rounds": {"interval_hours": 0}}, "rounds.interval_hours"),
        ({"rounds": {"unclaimd": "keep"}}, "did you mean"),
    ],
    ids=["reserve-is-budget", "reserve-cents", "negative", "policy", "release", "hours", "typo"],
)
def test_bad_round_settings_name_the_key(sections: dict, words: str) -> None:
    with pytest.raises(ScenarioError) as info:
        scenario(**sections)
    assert words.lower() in str(info.value).lower()


def test_the_schema_has_the_reserve_and_the_rounds() -> None:
    schema = json_schema("voucher")
    defs = schema["$defs"]
    assert "reserve_usd" in defs["BudgetSpec"]["properties"]
    rounds = defs["RoundsSpec"]["properties"]
    assert set(rounds) == {"unclaimed", "reserve_release_round", "interval_hours"}
    assert rounds["unclaimed"]["enum"] == ["keep", "expire"]


def test_the_shipped_reserve_scenario_holds_back_five_percent() -> None:
    s = load_scenario(ROOT / "scenarios" / "reserve.toml")
    assert round_budget_usd(s, 1) == 285_000_000.0
    assert round_budget_usd(s, 2) == 300_000_000.0


def test_appeals_read_the_same_from_csv_and_parquet(tmp_path: Path) -> None:
    text = (
        "user_id,decision,net_assets_usd,kyc_status,note\n"
        "2, Correct ,1200.5,,snapshot disputed\n"
        '1,reinstate,,VERIFIED,"missing, from the snapshot"\n'
        "3,uphold,,,\n"
    )
    (tmp_path / "a.csv").write_text(text)
    from_csv = read_appeals(tmp_path / "a.csv")
    assert from_csv[N.USER_ID].to_list() == [1, 2, 3]
    assert from_csv[N.DECISION].to_list() == ["reinstate", "correct", "uphold"]
    assert from_csv[N.KYC_STATUS].to_list() == ["verified", None, None]
    assert from_csv[N.NOTE].to_list() == ["missing, from the snapshot", "snapshot disputed", ""]
    assert from_csv[N.GROSS_LOSS_USD].null_count() == 3
    from_csv.write_parquet(tmp_path / "a.parquet")
    assert read_appeals(tmp_path / "a.parquet").equals(from_csv)


@pytest.mark.parametrize(
    ("name", "text", "words"),
    [
        ("a.txt", "user_id,decision\n", ["must end in .csv or .parquet"]),
        ("a.csv", "", ["empty"]),
        ("a.csv", "decision\nuphold\n", ["no column 'user_id'"]),
        ("a.csv", "user_id,decision\n1.5,uphold\n", ["user_id", "line 2", "whole number"]),
        ("a.csv", "user_id,decision,region\n1,correct,de\n", ["region", "two upper-case"]),
        ("a.csv", "user_id,decision,gross_loss_usd\n1,correct,-3\n", [">= 0"]),
        ("a.csv", "user_id,decision\n1,\n", ["decision", "empty"]),
    ],
)
def test_a_bad_appeals_file_names_the_file_column_and_line(
    tmp_path: Path, name: str, text: str, words: list[str]
) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(InputError) as info:
        read_appeals(path)
    message = str(info.value)
    assert str(path) in message and "for example" in message
    for word in words:
        assert word in message


def test_redemptions_take_true_and_false_in_any_case(tmp_path: Path) -> None:
    key = "0" * 31 + "a"
    path = tmp_path / "r.csv"
    path.write_text(f"user_id,idempotency_key,redeemed\n5,{key},TRUE\n6,{'1' * 32},no\n")
    frame = read_redemptions(path)
    assert frame[N.REDEEMED].to_list() == [True, False]
    frame.write_parquet(tmp_path / "r.parquet")
    assert read_redemptions(tmp_path / "r.parquet").equals(frame)
    path.write_text(f"user_id,idempotency_key,redeemed\n5,{key.upper()},true\n")
    with pytest.raises(InputError, match="32-character lowercase hex"):
        read_redemptions(path)
    pl.DataFrame({N.USER_ID: [5], N.IDEMPOTENCY_KEY: [key], "claimed": [True]}).write_csv(path)
    with pytest.raises(InputError, match="unknown column 'claimed'"):
        read_redemptions(path)
