"""The three programmes in one view: totals and overlaps recomputed from the run files."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

import allocator.cli.cmd_programme  # noqa: F401 - registers the command
from allocator import names as N
from allocator.cli.app import app
from allocator.data.synthetic import generate
from allocator.depeg.positions import COMPENSATION_CENTS
from allocator.depeg.run import run_depeg
from allocator.errors import InputError
from allocator.loans.allocate import allocate_loans
from allocator.loans.applications import generate_applications
from allocator.loans.run import write_loan_run
from allocator.loans.terms import AMOUNT_CENTS
from allocator.programme import (
    ANNOUNCED_USD,
    default_scenario_path,
    summarise_programmes,
)
from allocator.settings.loans import load_loan_scenario
from allocator.settings.models import BudgetSpec
from allocator.settings.scenarios import load_scenario
from allocator.vouchers.pipeline import DataSession, allocate, write_run

BUDGET_USD = 1_000_000.0


def voucher_scenario(policy: str = "exclude"):
    base = load_scenario(default_scenario_path("baseline.toml"))
    elig = dataclasses.replace(base.eligibility, depeg_policy=policy)
    return dataclasses.replace(
        base, name=f"small_{policy}", budget=BudgetSpec(total_usd=BUDGET_USD), eligibility=elig
    )


def write_voucher_run(data_dir: Path, out: Path, policy: str) -> Path:
    session = DataSession.open(data_dir)
    run = allocate(session, voucher_scenario(policy))
    return write_run(out, session, run, solver_requested="auto")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("programme")
    data = root / "data"
    generate(data, users=2000, seed=3)
    apps = generate_applications(30, seed=5)
    loans = allocate_loans(apps, load_loan_scenario(default_scenario_path("loans_default.toml")))
    return {
        "data": data,
        "exclude": write_voucher_run(data, root / "v_exclude", "exclude"),
        "net": write_voucher_run(data, root / "v_net", "net"),
        "loans": write_loan_run(loans, root / "loans", applications=apps, source="test"),
    }


def paid_users(data: Path) -> set[int]:
    users = pl.read_parquet(data / "users.parquet")
    return set(users.filter(pl.col(N.DEPEG_COMP_USD) > 0)[N.USER_ID].to_list())


def test_totals_and_overlaps_recomputed_from_files(world: dict[str, Path]) -> None:
    s = summarise_programmes(world["data"], voucher_run=world["exclude"], loans_run=world["loans"])
    alloc = pl.read_parquet(world["exclude"] / N.ALLOCATIONS_FILE)
    sheet = pl.read_parquet(world["loans"] / "term_sheet.parquet")
    depeg = run_depeg(world["data"]).users
    v_cents = int(alloc[N.VOUCHER_CENTS].sum())
    d_cents = int(depeg[COMPENSATION_CENTS].sum())
    l_cents = int(sheet[AMOUNT_CENTS].sum())
    assert s.line("vouchers").amount_cents == v_cents == round(BUDGET_USD * 100)
    assert s.line("depeg").amount_cents == d_cents > 0
    assert s.line("loans").amount_cents == l_cents > 0
    assert s.total_cents == v_cents + d_cents + l_cents
    assert s.announced_total_usd == 683_000_000.0 == sum(ANNOUNCED_USD.values())
    assert s.difference_cents == s.total_cents - 68_300_000_000
    for line in s.programmes:
        assert line.difference_cents == line.amount_cents - int(ANNOUNCED_USD[line.programme] * 100)

    v = set(alloc.filter(pl.col(N.VOUCHER_CENTS) > 0)[N.USER_ID].to_list())
    d = set(depeg.filter(pl.col(COMPENSATION_CENTS) > 0)[N.USER_ID].to_list())
    assert s.line("vouchers").recipients == len(v)
    assert s.line("depeg").recipients == len(d)
    assert s.line("loans").recipients == int((sheet[AMOUNT_CENTS] > 0).sum())
    assert s.line("loans").recipient_kind == "institutions"
    assert s.users_reached == len(v | d)
    over = {(o.first, o.second): o for o in s.overlaps}
    assert over[("vouchers", "depeg")].users == len(v & d)
    # The exclude policy acts on what the users table says was paid: nobody paid gets a voucher.
    assert over[("vouchers", "depeg (paid)")].users == len(v & paid_users(world["data"])) == 0
    for key in (("loans", "vouchers"), ("loans", "depeg")):
        assert over[key].users is None and not over[key].linkable
    assert s.voucher_depeg_policy == "exclude" and s.ok
    users = pl.read_parquet(world["data"] / "users.parquet")
    inst = set(users.filter(pl.col(N.IS_INSTITUTIONAL))[N.USER_ID].to_list())
    assert s.institutional == {"vouchers": len(v & inst), "depeg": len(d & inst)}


def test_net_policy_lets_depeg_users_have_vouchers(world: dict[str, Path]) -> None:
    s = summarise_programmes(world["data"], voucher_run=world["net"], loans_run=world["loans"])
    alloc = pl.read_parquet(world["net"] / N.ALLOCATIONS_FILE)
    v = set(alloc.filter(pl.col(N.VOUCHER_CENTS) > 0)[N.USER_ID].to_list())
    both = len(v & paid_users(world["data"]))
    over = {(o.first, o.second): o.users for o in s.overlaps}
    assert over[("vouchers", "depeg (paid)")] == both > 0
    assert s.voucher_depeg_policy == "net" and s.ok
    assert "exclude policy respected" not in [name for name, _, _ in s.checks]


def test_computed_programmes(world: dict[str, Path]) -> None:
    apps = generate_applications(25, seed=9)
    s = summarise_programmes(world["data"], voucher_scenario=voucher_scenario(), applications=apps)
    from_run = summarise_programmes(
        world["data"], voucher_run=world["exclude"], loans_run=world["loans"]
    )
    # The same scenario on the same data pays the same vouchers to the same users.
    assert s.line("vouchers").amount_cents == from_run.line("vouchers").amount_cents
    assert s.line("vouchers").recipients == from_run.line("vouchers").recipients
    assert s.line("depeg").amount_cents == from_run.line("depeg").amount_cents
    lent = allocate_loans(
        apps, load_loan_scenario(default_scenario_path("loans_default.toml"))
    ).term_sheet
    assert s.line("loans").amount_cents == int(lent[AMOUNT_CENTS].sum())
    assert s.line("vouchers").source.startswith("computed") and s.ok


def test_tampered_run_fails_a_check_and_other_data_is_refused(
    world: dict[str, Path], tmp_path: Path
) -> None:
    import shutil

    run = tmp_path / "v"
    shutil.copytree(world["exclude"], run)
    man = json.loads((run / N.MANIFEST_FILE).read_text())
    man["money"]["paid_cents"] += 1
    (run / N.MANIFEST_FILE).write_text(json.dumps(man))
    s = summarise_programmes(world["data"], voucher_run=run, loans_run=world["loans"])
    assert not s.ok and [n for n, ok, _ in s.checks if not ok] == ["voucher total = manifest"]
    res = CliRunner().invoke(
        app,
        [
            "programme",
            "summary",
            "--data",
            str(world["data"]),
            "--voucher-run",
            str(run),
            "--loans-run",
            str(world["loans"]),
            "--json",
        ],
    )
    assert res.exit_code == 1 and json.loads(res.stdout)["ok"] is False

    other = tmp_path / "other"
    generate(other, users=300, seed=1)
    with pytest.raises(InputError, match="other data"):
        summarise_programmes(other, voucher_run=world["exclude"], loans_run=world["loans"])
    with pytest.raises(InputError, match="not a loan run"):
        summarise_programmes(
            world["data"], voucher_run=world["exclude"], loans_run=world["exclude"]
        )


def test_cli_json_and_table(world: dict[str, Path]) -> None:
    args = [
        "programme",
        "summary",
        "--data",
        str(world["data"]),
        "--voucher-run",
        str(world["exclude"]),
        "--loans-run",
        str(world["loans"]),
    ]
    res = CliRunner().invoke(app, [*args, "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["total_cents"] == sum(p["amount_cents"] for p in doc["programmes"])
    assert [p["programme"] for p in doc["programmes"]] == ["vouchers", "depeg", "loans"]
    assert doc["announced_total_usd"] == 683_000_000.0 and doc["ok"] is True
    sheet = pl.read_parquet(world["loans"] / "term_sheet.parquet")
    assert doc["programmes"][2]["amount_cents"] == int(sheet[AMOUNT_CENTS].sum())
    res = CliRunner().invoke(app, [*args, "-q"])
    assert res.exit_code == 0 and "not linkable" in res.stdout and "683,000,000.00" in res.stdout


def test_json_stdout_is_strict_json_in_a_real_process(world: dict[str, Path]) -> None:
    # No --loans-run: the loan model is solved (with HiGHS, whose C code prints a banner to
    # descriptor 1) in a real process, where CliRunner's in-process capture would miss it.
    args = [
        "programme",
        "summary",
        "--data",
        str(world["data"]),
        "--voucher-run",
        str(world["exclude"]),
        "-q",
        "--json",
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "allocator", *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)  # the whole of stdout, nothing before or after
    loans = doc["programmes"][2]
    assert loans["programme"] == "loans" and loans["source"].startswith("computed")
    assert 0 < loans["amount_cents"] <= round(ANNOUNCED_USD["loans"] * 100) and doc["ok"] is True


def test_a_loan_run_without_a_proven_optimum_fails_a_check(
    world: dict[str, Path], tmp_path: Path
) -> None:
    # Older versions wrote a run that stopped at HiGHS's time limit (lending nothing) as a
    # success; the summary must not add it up as the loan programme without saying so.
    import shutil

    run = tmp_path / "loans"
    shutil.copytree(world["loans"], run)
    man = json.loads((run / "manifest.json").read_text())
    man["solver"].update(status="time_limit", mip_rel_gap_achieved="inf")
    (run / "manifest.json").write_text(json.dumps(man))
    s = summarise_programmes(world["data"], voucher_run=world["exclude"], loans_run=run)
    failed = [(n, d) for n, ok, d in s.checks if not ok]
    assert [n for n, _ in failed] == ["loan run solved to optimality"] and "time_limit" in failed[
        0
    ][1]
    ok = summarise_programmes(world["data"], voucher_run=world["exclude"], loans_run=world["loans"])
    assert ok.ok and "loan run solved to optimality" in [n for n, _, _ in ok.checks]


def test_a_voucher_run_edited_after_it_was_written_is_refused(
    world: dict[str, Path], tmp_path: Path
) -> None:
    # one cent moved between two users keeps every total, but the file no longer has the hash
    # the manifest recorded: the summary refuses the run rather than sum it
    import shutil

    run = tmp_path / "v"
    shutil.copytree(world["exclude"], run)
    alloc = pl.read_parquet(run / N.ALLOCATIONS_FILE)
    cents = alloc[N.VOUCHER_CENTS].to_list()
    cents[0] += 1
    cents[1] -= 1
    alloc.with_columns(pl.Series(N.VOUCHER_CENTS, cents)).write_parquet(run / N.ALLOCATIONS_FILE)
    with pytest.raises(InputError, match="allocations.parquet"):
        summarise_programmes(world["data"], voucher_run=run, loans_run=world["loans"])
