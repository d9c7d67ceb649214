"""``allocator claims``: the textbook problem from the command line, exact in cents."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from clihelp import invoke, strict_json
from hypothesis import given
from hypothesis import strategies as st


def test_talmud_table_in_text() -> None:
    r = invoke("claims", "talmud", "--estate", "200", "--claims", "100,200,300")
    assert r.exit_code == 0, r.output
    rows = [line.split() for line in r.stdout.splitlines()[2:]]
    assert rows == [["100.00", "50.00"], ["200.00", "75.00"], ["300.00", "75.00"]]


def test_json_awards_in_input_order_sum_to_the_estate() -> None:
    r = invoke("claims", "cea", "--estate", "100", "--claims", "300,100,200", "--json")
    assert r.exit_code == 0, r.output
    out = strict_json(r.stdout)
    assert out["rule"] == "constrained_equal_awards" and out["estate"] == 100.0
    assert round(sum(out["awards"]) * 100) == 10_000
    # 33.33 each and the spare cent to the largest claim (the first one given)
    assert out["awards"] == [33.34, 33.33, 33.33]


@given(
    claims=st.lists(st.integers(1, 100_000), min_size=1, max_size=8),
    share=st.integers(0, 100),
    rule=st.sampled_from(["pro", "cea", "cel", "talmud"]),
)
def test_any_estate_up_to_the_claims_is_paid_to_the_cent(
    claims: list[int], share: int, rule: str
) -> None:
    total = sum(claims)  # claims in cents
    estate = total * share // 100
    r = invoke(
        "claims",
        rule,
        "--estate",
        f"{estate / 100:.2f}",
        "--claims",
        ",".join(f"{c / 100:.2f}" for c in claims),
        "--json",
    )
    assert r.exit_code == 0, r.output
    awards = [round(a * 100) for a in json.loads(r.stdout)["awards"]]
    assert sum(awards) == estate
    assert all(0 <= a <= c for a, c in zip(awards, claims))


def test_practice_rules_take_their_parameter() -> None:
    r = invoke(
        "claims", "mt_gox", "--estate", "500", "--claims", "100,200,300", "--base", "150", "--json"
    )
    assert strict_json(r.stdout)["awards"] == [100.0, 175.0, 225.0]
    r = invoke(
        "claims",
        "ftx",
        "--estate",
        "400",
        "--claims",
        "100,200,300",
        "--threshold",
        "150",
        "--json",
    )
    assert strict_json(r.stdout)["awards"] == [100.0, 120.0, 180.0]
    r = invoke(
        "claims",
        "minimum_payment",
        "--estate",
        "200",
        "--claims",
        "1,10,100,1000",
        "--minimum",
        "5",
        "--json",
    )
    assert strict_json(r.stdout)["awards"] == [0.0, 0.0, 18.18, 181.82]
    r = invoke(
        "claims",
        "pro",
        "--estate",
        "100",
        "--claims",
        "100,200,300",
        "--floor",
        "20",
        "--cap",
        "45",
        "--json",
    )
    assert strict_json(r.stdout)["awards"] == [20.0, 35.0, 45.0]


def test_claims_file_as_lines_or_csv(tmp_path: Path) -> None:
    lines = tmp_path / "claims.txt"
    lines.write_text("# three creditors\n100\n200\n300\n")
    csv = tmp_path / "claims.csv"
    csv.write_text("user_id,claim\n7,100\n8,200\n9,300\n")
    for f in (lines, csv):
        r = invoke("claims", "talmud", "--estate", "300", "--claims-file", str(f), "--json")
        assert strict_json(r.stdout)["awards"] == [50.0, 100.0, 150.0], r.output


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["pro", "--estate", "1000", "--claims", "100,200"], "more than the claims can take"),
        (["pro", "--estate", "10", "--claims", "100,-2"], "claim 2"),
        (["pro", "--estate", "-5", "--claims", "1"], "--estate must be"),
        (["pro", "--estate", "1.005", "--claims", "10"], "whole cents"),
        (["fifo", "--estate", "1", "--claims", "1"], "unknown claims rule"),
        (["mt_gox", "--estate", "1", "--claims", "1"], "needs its base"),
        (["pro", "--estate", "1"], "exactly one of --claims or --claims-file"),
        (["pro", "--estate", "1", "--claims", "1,x"], "'x' is not an amount"),
    ],
)
def test_bad_input_is_exit_2_in_plain_words(args: list[str], words: str) -> None:
    r = invoke("claims", *args)
    assert r.exit_code == 2
    assert words in r.output
    assert "Traceback" not in r.output
