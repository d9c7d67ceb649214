"""``allocator axioms`` on written runs: the verdicts a rule's theory predicts, from the files."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from clihelp import invoke, strict_json

from allocator import names as N
from allocator.data.synthetic import generate

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("axioms-data") / "data"
    generate(out, users=3000, seed=11)
    return out


def _run(tmp: Path, data: Path, scenario: str, *extra: str) -> Path:
    out = tmp / scenario
    r = invoke(
        "allocate",
        "--scenario",
        ROOT / "scenarios" / f"{scenario}.toml",
        "--data",
        data,
        "--out",
        out,
        "-q",
        "--set",
        "budget.total_usd=3e6",  # the 3,000-user data set's scale
        *extra,
    )
    assert r.exit_code == 0, r.output
    return out


def _axioms(run: Path, *extra: str) -> dict[str, dict]:
    r = invoke("axioms", run, "--json", "--sample", "200", *extra)
    assert r.exit_code == 0, r.output
    out = strict_json(r.stdout)
    return {a["name"]: a for a in out["axioms"]}


def test_baseline_keeps_what_theory_says_and_reports_split_gains(
    tmp_path: Path, data: Path
) -> None:
    run = _run(tmp_path, data, "baseline")
    ax = _axioms(run)
    assert list(ax) == [
        "budget_balance",
        "award_at_most_claim",
        "equal_treatment_of_equals",
        "order_preservation",
        "claims_monotonicity",
        "resource_monotonicity",
        "consistency",
        "composition",
        "split_merge_gain",
    ]
    for name in (
        "budget_balance",
        "award_at_most_claim",
        "claims_monotonicity",
        "resource_monotonicity",
        "consistency",
        "composition",
    ):
        assert ax[name]["holds"], ax[name]
        assert ax[name]["checked"] > 0 and ax[name]["expected"]
    # the loss ratio in the baseline weight: a larger loss can get a smaller voucher
    order = ax["order_preservation"]
    assert not order["holds"]
    w = next(w for w in order["worst"] if w["broken"] == "voucher")
    assert (
        w["loss_usd"] > w["smaller_loss_usd"] and w["voucher_usd"] < w["smaller_loss_voucher_usd"]
    )
    # the USD 4 floor and 6,000 cap make splitting pay for someone; the gains are in USD
    split = ax["split_merge_gain"]
    assert not split["holds"] and split["violations"] > 0
    assert split["worst"][0]["gain_usd"] > 0
    assert set(split["distribution"]) == {"split", "merge"}
    top = split["worst"][0]
    assert split["distribution"][top["kind"]]["max_usd"] == pytest.approx(top["gain_usd"], abs=0.01)


def test_a_rule_that_overpays_is_caught_with_the_users(tmp_path: Path, data: Path) -> None:
    # the baseline's file with every weight 1: an equal split that ignores the losses
    run = _run(
        tmp_path,
        data,
        "baseline",
        "--set",
        "objective.loss_exponent=0",
        "--set",
        "objective.ratio_exponent=0",
    )
    ax = _axioms(run)
    over = ax["award_at_most_claim"]
    assert not over["holds"] and over["violations"] > 0
    paid = pl.read_parquet(run / N.ALLOCATIONS_FILE)
    worst = over["worst"][0]
    row = paid.filter(pl.col(N.USER_ID) == worst["user_id"])
    # the continuous voucher exceeds the loss by what the report says, to the cent
    assert row[N.VOUCHER_USD][0] - row[N.LOSS_USD][0] == pytest.approx(
        worst["excess_usd"], abs=0.011
    )
    # every user paid more than their loss is counted
    assert over["violations"] == int((paid[N.VOUCHER_USD] > paid[N.LOSS_USD] + 0.005).sum())


def test_text_output_and_bad_options(tmp_path: Path, data: Path) -> None:
    run = _run(tmp_path, data, "proportional")
    r = invoke("axioms", run, "--sample", "50")
    assert r.exit_code == 0, r.output
    assert "budget_balance" in r.stdout and "expected:" in r.stdout
    # each slow stage is announced on stderr, in order, and -q silences them; stdout stays clean
    stages = [line for line in r.stderr.splitlines() if line.startswith("· ")]
    assert stages[0].startswith("· re-solving") and len(stages) == 10
    assert stages[-1] == "· axiom split_merge_gain" and "re-solving" not in r.stdout
    quiet = invoke("axioms", run, "--sample", "50", "--json", "-q")
    assert quiet.exit_code == 0 and quiet.stderr == ""
    assert [a["name"] for a in strict_json(quiet.stdout)["axioms"]] == [
        line.removeprefix("· axiom ") for line in stages[1:]
    ]
    assert invoke("axioms", run, "--sample", "0").exit_code == 2
    assert invoke("axioms", tmp_path / "nope").exit_code == 2


def test_audit_shows_the_axioms_table_on_request(tmp_path: Path, data: Path) -> None:
    run = _run(tmp_path, data, "baseline")
    plain = strict_json(invoke("audit", run, "--json").stdout)
    assert "axioms" not in plain  # the default audit reads the run's files only
    r = invoke("audit", run, "--json", "--axioms", "--sample", "100")
    assert r.exit_code == 0, r.output
    out = strict_json(r.stdout)
    assert {k: v for k, v in out.items() if k != "axioms"} == plain
    names = [a["name"] for a in out["axioms"]]
    assert names[0] == "budget_balance" and names[-1] == "split_merge_gain"
    assert out["axioms"][1]["holds"]  # nobody in the baseline is paid more than their loss
    text = invoke("audit", run, "--axioms", "--sample", "100").stdout
    assert "fairness axioms" in text and "consistency" in text
    assert invoke("audit", run, "--axioms", "--sample", "0").exit_code == 2
