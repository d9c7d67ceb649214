"""``allocator scenario schema|show|validate`` and ``--set`` on allocate, compare and sweep."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
from clihelp import invoke, strict_json

from allocator import names as N
from allocator.data.synthetic import generate
from allocator.settings.files import resolve_file
from allocator.settings.loans import load_loan_scenario
from allocator.settings.scenarios import load_scenario

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = sorted((ROOT / "scenarios").glob("*.toml"))
BUDGET_USD = 4_000_000
SMALL = f"""
name = "small"
[objective]
ratio_exponent = 0.5
[budget]
total_usd = {BUDGET_USD}
"""


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("data") / "small"
    generate(out, users=2000, seed=5)
    return out


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("scen") / "small.toml"
    path.write_text(SMALL)
    return path


# --- scenario schema ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["voucher", "loans", "depeg"])
def test_schema_prints_strict_json_schema(kind: str) -> None:
    result = invoke("scenario", "schema", "--kind", kind)
    assert result.exit_code == 0, result.output
    schema = strict_json(result.stdout)
    assert schema["$schema"].startswith("https://json-schema.org/") and schema["title"]


def test_schema_defaults_to_the_voucher_scenario_and_refuses_unknown_kinds() -> None:
    result = invoke("scenario", "schema")
    assert result.exit_code == 0
    assert "objective" in strict_json(result.stdout)["properties"]
    bad = invoke("scenario", "schema", "--kind", "bonds")
    assert bad.exit_code == 2 and "--kind must be one of voucher, loans, depeg" in bad.stderr
    assert "Traceback" not in bad.output


# --- scenario show ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_show_prints_every_key_as_toml_that_reads_back(path: Path, tmp_path: Path) -> None:
    result = invoke("scenario", "show", path)
    assert result.exit_code == 0, result.output
    data = tomllib.loads(result.stdout)
    again = tmp_path / path.name
    again.write_text(result.stdout)
    assert resolve_file(again).settings == resolve_file(path).settings
    if "fund_usd" in data:
        assert data["solver"]["time_limit_s"] == load_loan_scenario(path).solver.time_limit_s
    else:
        # keys the file leaves out are shown with their defaults
        assert data["payouts"]["batch_size"] == load_scenario(path).payouts.batch_size
        assert "# coverage_cap = (not set)" in result.stdout or "coverage_cap =" in result.stdout


def test_show_json_is_the_manifest_form() -> None:
    path = ROOT / "scenarios" / "retail_first.toml"
    result = invoke("scenario", "show", path, "--json")
    assert result.exit_code == 0
    shown = strict_json(result.stdout)
    assert shown["segments"][0]["min_share"] == 0.4
    assert shown["eligibility"]["window_end"] == "2025-10-12T00:00:00Z"
    assert shown["bounds"]["coverage_cap"] == 1.0
    assert shown["objective"]["rule"] == "alpha_fair" and shown["objective"]["base_usd"] is None


def test_show_of_a_bad_file_is_a_usage_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[objective]\nalpah = 2\n")
    result = invoke("scenario", "show", path)
    assert result.exit_code == 2 and result.stdout == ""
    assert str(path) in result.stderr and "Did you mean 'alpha'?" in result.stderr


# --- scenario validate --------------------------------------------------------------------------


def test_validate_accepts_every_shipped_file() -> None:
    result = invoke("scenario", "validate", *SCENARIOS)
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert len(lines) == len(SCENARIOS) and all(": ok (" in line for line in lines)
    assert any("loans_default.toml: ok (loans)" in line for line in lines)


def test_validate_reports_each_file_and_exits_2_when_one_is_bad(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[objective]\nalpha = 1e-17\n")
    loan = tmp_path / "loan.toml"
    loan.write_text('name = "l"\nfund_usd = -5.0\n')
    good = ROOT / "scenarios" / "baseline.toml"
    result = invoke("scenario", "validate", good, bad, loan, tmp_path / "missing.toml")
    assert result.exit_code == 2
    out = result.stdout.strip().splitlines()
    assert len(out) == 4
    assert out[0] == f"{good}: ok (voucher)"
    assert out[1].startswith(f"{bad}: error:") and "objective.alpha" in out[1]
    assert out[2].startswith(f"{loan}: error:") and "fund_usd must be in (0, 1e13] USD" in out[2]
    assert "file not found" in out[3]


# --- --set ----------------------------------------------------------------------------------------


def test_allocate_set_changes_the_run_and_its_manifest(
    tmp_path: Path, data_dir: Path, small: Path
) -> None:
    out = tmp_path / "run"
    result = invoke(
        "allocate",
        "-s",
        small,
        "--data",
        data_dir,
        "--out",
        out,
        "--set",
        "objective.alpha=2",
        "--set",
        "budget.exhaust=false",
        "--set",
        "bounds.cap_usd=5000",
        "--json",
        "-q",
    )
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / N.MANIFEST_FILE).read_text())
    scenario = manifest["scenario"]
    assert scenario["objective"]["alpha"] == 2.0 and scenario["budget"]["exhaust"] is False
    assert scenario["bounds"]["cap_usd"] == 5000.0
    assert strict_json(result.stdout)["scenario"] == "small"


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ("objective.alpah=2", "Did you mean 'objective.alpha'?"),
        ("objective.alpha=high", "key 'objective.alpha' must be a finite number"),
        ("objective.alpha=1e-17", "objective.alpha = 1e-17 is out of range"),
        ("payouts.batch_size=9223372036854775808", "payouts.batch_size"),
        ("alpha", "is not of the form KEY=VALUE"),
    ],
)
def test_bad_set_is_exit_2_before_any_work(
    tmp_path: Path, small: Path, value: str, needle: str
) -> None:
    for args in (
        ["allocate", "-s", small, "--out", tmp_path / "run"],
        ["compare", small, small],
        ["sweep", "-s", small, "--param", "objective.alpha=1,2", "--out", tmp_path / "sw"],
    ):
        result = invoke(*args, "--data", tmp_path / "no-data", "--set", value)
        assert result.exit_code == 2, result.output
        assert needle in result.stderr and "Traceback" not in result.output
        assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists() and not (tmp_path / "sw").exists()


def test_compare_set_applies_to_every_scenario(tmp_path: Path, data_dir: Path, small: Path) -> None:
    other = tmp_path / "equal.toml"
    other.write_text(SMALL.replace('"small"', '"equal"').replace("0.5", "0.0"))
    result = invoke(
        "compare",
        small,
        other,
        "--data",
        data_dir,
        "--set",
        "budget.total_usd=2500000",
        "--json",
        "-q",
    )
    assert result.exit_code == 0, result.output
    rows = strict_json(result.stdout)["scenarios"]
    assert [r["scenario"] for r in rows] == ["small", "equal"]
    assert all(abs(r["paid_usd"] - 2_500_000) < 1e-6 for r in rows)


def test_sweep_takes_value_lists_log_grids_and_set(
    tmp_path: Path, data_dir: Path, small: Path
) -> None:
    result = invoke(
        "sweep",
        "-s",
        small,
        "--param",
        "objective.alpha=log:0.5:2:3",
        "--param",
        "bounds.floor_usd=4,10",
        "--set",
        "budget.total_usd=3000000",
        "--data",
        data_dir,
        "--out",
        tmp_path / "sw",
        "--json",
        "-q",
    )
    assert result.exit_code == 0, result.output
    report = strict_json(result.stdout)
    alphas = [p["objective.alpha"] for p in report["points"]]
    floors = [p["bounds.floor_usd"] for p in report["points"]]
    assert alphas == pytest.approx([0.5, 0.5, 1.0, 1.0, 2.0, 2.0])
    assert floors == [4.0, 10.0] * 3
    assert all(abs(p["paid_usd"] - 3_000_000) < 1e-6 for p in report["points"])
