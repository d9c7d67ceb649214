"""The CLI end to end through Typer's CliRunner, on small generated data.

Every number the commands print or write is recomputed here from the run directory's files:
the total to the cent, the bounds, the objective, the optimality conditions, and the promise
that every liquidated user is either paid once or excluded with a reason.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from clihelp import invoke, strict_json

from allocator import names as N
from allocator.cli import app, load_all
from allocator.data.synthetic import generate

BUDGET_USD = 4_000_000
SMALL_SCENARIO = f"""
# Baseline rules on a small data set: the budget is scaled down to the number of users.
name = "small"
[objective]
alpha = 1.0
loss_exponent = 1.0
ratio_exponent = 0.5
[budget]
total_usd = {BUDGET_USD}
exhaust = true
"""


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("data") / "small"
    generate(out, users=4000, seed=11)
    return out


@pytest.fixture(scope="module")
def scenario_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("scen") / "small.toml"
    path.write_text(SMALL_SCENARIO)
    return path


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, data_dir: Path, scenario_file: Path) -> Path:
    out = tmp_path_factory.mktemp("runs") / "small"
    result = invoke("allocate", "--scenario", scenario_file, "--data", data_dir, "--out", out, "-q")
    assert result.exit_code == 0, result.output
    return out


def _all_commands() -> list[list[str]]:
    """Every leaf command registered on the app, sub-commands of groups included."""
    import typer.main

    load_all()  # the commands are imported on demand; walk them all

    def walk(group, prefix: list[str]) -> list[list[str]]:  # noqa: ANN001
        found = []
        for name, cmd in sorted(group.commands.items()):
            if hasattr(cmd, "commands"):
                found += walk(cmd, [*prefix, name])
            else:
                found.append([*prefix, name])
        return found

    return walk(typer.main.get_command(app), [])


ALL_COMMANDS = _all_commands()


def test_help_lists_every_command() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    top = {c[0] for c in ALL_COMMANDS}
    assert {
        "allocate",
        "compare",
        "sweep",
        "check-budget",
        "eligibility",
        "generate",
        "loans",
        "explain",
        "audit",
        "report",
        "sensitivity",
        "depeg",
        "programme",
    } <= top
    for command in top:
        assert command in result.stdout


@pytest.mark.parametrize("command", ALL_COMMANDS, ids=" ".join)
def test_every_command_help_has_an_example(command: list[str]) -> None:
    result = invoke(*command, "--help")
    assert result.exit_code == 0
    assert "Example" in result.stdout and "allocator " + " ".join(command) in result.stdout


def test_allocate_output_reconciles_from_files(run_dir: Path, data_dir: Path) -> None:
    alloc = pl.read_parquet(run_dir / N.ALLOCATIONS_FILE)
    excluded = pl.read_parquet(run_dir / N.EXCLUDED_FILE)
    manifest = json.loads((run_dir / N.MANIFEST_FILE).read_text())
    cents = alloc[N.VOUCHER_CENTS].to_numpy()

    # Money: exact budget, integer cents, every voucher within its bounds.
    assert alloc[N.VOUCHER_CENTS].dtype == pl.Int64
    assert int(cents.sum()) == BUDGET_USD * 100 == manifest["money"]["paid_cents"]
    assert (cents >= alloc["lower_cents"].to_numpy()).all()
    assert (cents <= alloc["upper_cents"].to_numpy()).all()
    assert (alloc["lower_cents"].to_numpy() == 400).all()
    assert (alloc["upper_cents"].to_numpy() <= 600_000).all()

    # Nothing lost: liquidated users = allocated + excluded, disjoint, each once.
    liquidated = set(
        pl.read_parquet(data_dir / "liquidations.parquet")[N.USER_ID].unique().to_list()
    )
    paid = alloc[N.USER_ID].to_list()
    out = excluded[N.USER_ID].to_list()
    assert len(paid) == len(set(paid)) and len(out) == len(set(out))
    assert set(paid).isdisjoint(out)
    assert set(paid) | set(out) == liquidated
    assert set(excluded[N.REASON].unique().to_list()) <= set(N.REASONS)

    # Time per stage, every stage.
    stages = {"load_and_validate", "eligibility", "model", "solve", "rounding", "write"}
    assert set(manifest["timings_s"]) == stages
    assert all(t >= 0 for t in manifest["timings_s"].values())

    # Objective recomputed with numpy from the paid cents equals the manifest's.
    v = cents / 100.0
    w = alloc[N.WEIGHT].to_numpy()
    assert np.isclose(float(np.sum(w * np.log(v))), manifest["objective_rounded"], rtol=1e-9)

    # Optimality (alpha = 1): interior users share one price w_i / v_i = lambda, up to the cent
    # each voucher was rounded by; capped users would want more (w_i / cap_i >= lambda).
    lam = manifest["shadow_price"]
    interior = (alloc[N.BOUND] == N.BOUND_INTERIOR).to_numpy()
    capped = (alloc[N.BOUND] == N.BOUND_CAP).to_numpy()
    assert interior.sum() > 0
    rel = np.abs(w[interior] / v[interior] - lam) / lam
    assert (rel <= 0.01 / v[interior] + 1e-9).all()
    assert (w[capped] / v[capped] >= lam * (1 - 0.01 / v[capped]) - 1e-12).all()


def test_check_budget_accepts_a_fresh_run(run_dir: Path) -> None:
    result = invoke("check-budget", run_dir)
    assert result.exit_code == 0, result.output
    result = invoke("check-budget", run_dir, "--json")
    report = strict_json(result.stdout)
    assert report["ok"] is True


def test_rerun_is_byte_identical(
    tmp_path: Path, run_dir: Path, data_dir: Path, scenario_file: Path
) -> None:
    again = tmp_path / "again"
    result = invoke(
        "allocate", "--scenario", scenario_file, "--data", data_dir, "--out", again, "-q"
    )
    assert result.exit_code == 0, result.output
    for name in (N.ALLOCATIONS_FILE, N.EXCLUDED_FILE, N.PAYOUTS_FILE):
        assert (again / name).read_bytes() == (run_dir / name).read_bytes(), name


def _tamper_move_cent(run: Path, data: Path) -> None:
    frame = pl.read_parquet(run / N.ALLOCATIONS_FILE)
    cents = frame[N.VOUCHER_CENTS].to_numpy().copy()
    interior = np.flatnonzero((frame[N.BOUND] == N.BOUND_INTERIOR).to_numpy())
    cents[interior[0]] += 1
    cents[interior[1]] -= 1
    frame.with_columns(pl.Series(N.VOUCHER_CENTS, cents)).write_parquet(run / N.ALLOCATIONS_FILE)


def _tamper_duplicate(run: Path, data: Path) -> None:
    frame = pl.read_parquet(run / N.ALLOCATIONS_FILE)
    pl.concat([frame, frame.head(1)]).sort(N.USER_ID).write_parquet(run / N.ALLOCATIONS_FILE)


def _tamper_drop_row(run: Path, data: Path) -> None:
    frame = pl.read_parquet(run / N.ALLOCATIONS_FILE)
    frame.slice(1).write_parquet(run / N.ALLOCATIONS_FILE)


def _tamper_input(run: Path, data: Path) -> None:
    snap = pl.read_parquet(data / "snapshot.parquet")
    snap.with_columns(pl.col(N.NET_ASSETS_USD) + 0.01).write_parquet(data / "snapshot.parquet")


@pytest.mark.parametrize(
    "tamper",
    [_tamper_move_cent, _tamper_duplicate, _tamper_drop_row, _tamper_input],
    ids=["one-cent-moved", "user-duplicated", "row-dropped", "input-changed"],
)
def test_check_budget_rejects_tampering(
    tmp_path: Path, data_dir: Path, scenario_file: Path, tamper
) -> None:  # noqa: ANN001
    data = tmp_path / "data"
    shutil.copytree(data_dir, data)
    run = tmp_path / "run"
    result = invoke("allocate", "--scenario", scenario_file, "--data", data, "--out", run, "-q")
    assert result.exit_code == 0, result.output
    assert invoke("check-budget", run).exit_code == 0
    tamper(run, data)
    result = invoke("check-budget", run, "--json")
    assert result.exit_code == 1
    report = strict_json(result.stdout)
    assert report["ok"] is False
    assert any(not c["ok"] for c in report["checks"])


def test_compare_json_is_strict_and_consistent_with_allocate(
    tmp_path: Path, run_dir: Path, data_dir: Path, scenario_file: Path
) -> None:
    other = tmp_path / "equal.toml"
    other.write_text(
        SMALL_SCENARIO.replace('"small"', '"equal"')
        .replace("loss_exponent = 1.0", "loss_exponent = 0.0")
        .replace("ratio_exponent = 0.5", "ratio_exponent = 0.0")
    )
    result = invoke("compare", scenario_file, other, "--data", data_dir, "--json", "-q")
    assert result.exit_code == 0, result.output
    report = strict_json(result.stdout)
    first, second = report["scenarios"]
    assert first["moved_vs_first"] == 0
    assert first["scenario"] == "small" and second["scenario"] == "equal"
    alloc = pl.read_parquet(run_dir / N.ALLOCATIONS_FILE)
    v = alloc[N.VOUCHER_USD].to_numpy()
    assert first["eligible"] == alloc.height
    assert np.isclose(first["paid_usd"], v.sum())
    assert np.isclose(first["median_voucher"], np.median(v))
    assert np.isclose(first["max_voucher"], v.max())
    # Equal weights with a common floor and cap: everyone gets the same amount (to the cent).
    assert second["n_cap"] == 0
    assert second["max_voucher"] - second["median_voucher"] <= 0.01
    assert second["moved_vs_first"] > 0


def test_sweep_writes_table_and_plot(tmp_path: Path, data_dir: Path, scenario_file: Path) -> None:
    out = tmp_path / "sweep"
    result = invoke(
        "sweep",
        "--scenario",
        scenario_file,
        "--param",
        "objective.alpha=0.5:3:4",
        "--data",
        data_dir,
        "--out",
        out,
        "--json",
        "-q",
    )
    assert result.exit_code == 0, result.output
    report = strict_json(result.stdout)
    alphas = [p["objective.alpha"] for p in report["points"]]
    assert alphas == pytest.approx([0.5, 1.3333333, 2.1666667, 3.0])
    assert all(abs(p["paid_usd"] - BUDGET_USD) < 1e-6 for p in report["points"])
    table = pl.read_csv(out / "sweep.csv")
    assert table.height == 4
    assert (out / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sweep_rejects_unknown_parameter(data_dir: Path, scenario_file: Path) -> None:
    result = invoke(
        "sweep", "--scenario", scenario_file, "--param", "objective.beta=0:1:3", "--data", data_dir
    )
    assert result.exit_code == 2
    assert "objective.beta" in result.stderr


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ("[budget]\ntotal_usd = 100\nsurprise = 1\n", "surprise"),
        ('[objective]\nalpha = "high"\n', "objective.alpha"),
        ("[objective]\nalpha = -1.0\n", "objective.alpha"),
        ('[solver]\nname = "gurobi"\n', "solver.name"),
    ],
    ids=["unknown-key", "wrong-type", "out-of-range", "bad-choice"],
)
def test_bad_scenario_is_a_clear_error(
    tmp_path: Path, data_dir: Path, body: str, named: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(body)
    result = invoke("allocate", "--scenario", path, "--data", data_dir, "--out", tmp_path / "run")
    assert result.exit_code == 2
    assert str(path) in result.stderr and named in result.stderr
    assert "Traceback" not in result.output
    assert not (tmp_path / "run").exists()


def test_markup_like_text_in_user_input_is_shown_as_is(tmp_path: Path, data_dir: Path) -> None:
    # Rich would read "[/x]" as a closing tag and crash with a traceback; ":b:" as an emoji
    path = tmp_path / "bad.toml"
    path.write_text('"[/x] :b:" = 1\n')
    result = invoke("allocate", "--scenario", path, "--data", data_dir, "--out", tmp_path / "run")
    assert result.exit_code == 2, result.output
    assert "'[/x] :b:'" in result.stderr and "Traceback" not in result.output


@pytest.mark.parametrize("where", ["under-a-file", "missing-root"])
def test_unwritable_out_is_a_usage_error(
    tmp_path: Path, data_dir: Path, scenario_file: Path, where: str
) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    out = blocker / "run" if where == "under-a-file" else Path("/proc/allocator-test/run")
    result = invoke("allocate", "--scenario", scenario_file, "--data", data_dir, "--out", out, "-q")
    assert result.exit_code == 2, result.output
    assert "error:" in result.stderr and "Nothing was written" in result.stderr
    assert "Traceback" not in result.output
    assert blocker.read_text() == "not a folder"


def test_nobody_eligible_is_a_plain_error(tmp_path: Path, data_dir: Path) -> None:
    path = tmp_path / "none.toml"
    path.write_text(
        SMALL_SCENARIO.replace("exhaust = true", "exhaust = false")
        + "[eligibility]\nmin_loss_usd = 1e12\n"
    )
    result = invoke("allocate", "--scenario", path, "--data", data_dir, "--out", tmp_path / "run")
    assert result.exit_code == 3, result.output
    assert "no liquidated user passes the eligibility rules" in result.stderr
    assert "4,000 liquidated users" in result.stderr and "Hint:" in result.stderr
    assert not (tmp_path / "run").exists()


def test_infeasible_scenario_exits_3(tmp_path: Path, data_dir: Path) -> None:
    path = tmp_path / "tight.toml"
    path.write_text("[budget]\ntotal_usd = 1000\n")
    result = invoke("allocate", "--scenario", path, "--data", data_dir, "--out", tmp_path / "run")
    assert result.exit_code == 3
    assert "floor" in result.stderr.lower()
    assert not (tmp_path / "run").exists()


def test_bad_data_names_the_file(tmp_path: Path, data_dir: Path, scenario_file: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(data_dir, data)
    users = pl.read_parquet(data / "users.parquet")
    users.drop(N.KYC_STATUS).write_parquet(data / "users.parquet")
    result = invoke(
        "allocate", "--scenario", scenario_file, "--data", data, "--out", tmp_path / "run"
    )
    assert result.exit_code == 2
    assert "users.parquet" in result.stderr and N.KYC_STATUS in result.stderr
    assert not (tmp_path / "run").exists()


def test_cvxpy_and_fast_paths_pay_the_same(
    tmp_path: Path, data_dir: Path, scenario_file: Path, run_dir: Path
) -> None:
    out = tmp_path / "cvx"
    result = invoke(
        "allocate",
        "--scenario",
        scenario_file,
        "--data",
        data_dir,
        "--out",
        out,
        "--solver",
        "cvxpy",
        "--json",
        "-q",
    )
    assert result.exit_code == 0, result.output
    summary = strict_json(result.stdout)
    assert summary["solver"].startswith("cvxpy") and summary["certified"]
    a = pl.read_parquet(run_dir / N.ALLOCATIONS_FILE)[N.VOUCHER_CENTS].to_numpy()
    b = pl.read_parquet(out / N.ALLOCATIONS_FILE)[N.VOUCHER_CENTS].to_numpy()
    assert a.sum() == b.sum() == BUDGET_USD * 100
    # Continuous solutions agree within a cent; rounding each can add one more.
    assert np.abs(a - b).max() <= 2


def test_segment_share_is_exact_and_checked(tmp_path: Path, data_dir: Path) -> None:
    path = tmp_path / "retail.toml"
    path.write_text(
        SMALL_SCENARIO.replace('"small"', '"retail"')
        + '\n[[segments]]\nname = "retail"\nwhere = "loss_usd < 10000"\nmin_share = 0.6\n'
    )
    run = tmp_path / "run"
    result = invoke("allocate", "--scenario", path, "--data", data_dir, "--out", run, "-q")
    assert result.exit_code == 0, result.output
    alloc = pl.read_parquet(run / N.ALLOCATIONS_FILE)
    members = (alloc[N.LOSS_USD] < 10000).to_numpy()
    assert (alloc[N.SEGMENT].is_not_null().to_numpy() == members).all()
    cents = alloc[N.VOUCHER_CENTS].to_numpy().copy()
    share_cents = int(0.6 * BUDGET_USD * 100)
    # The share binds (the loss-weighted optimum pays small losses less) and holds to the cent.
    assert int(cents[members].sum()) == share_cents
    assert invoke("check-budget", run).exit_code == 0

    # Move one cent from a member to a non-member: total unchanged, the share is now missed.
    giver = np.flatnonzero(members & (cents > alloc["lower_cents"].to_numpy()))[0]
    taker = np.flatnonzero(~members & (cents < alloc["upper_cents"].to_numpy()))[0]
    cents[giver] -= 1
    cents[taker] += 1
    alloc.with_columns(pl.Series(N.VOUCHER_CENTS, cents)).write_parquet(run / N.ALLOCATIONS_FILE)
    result = invoke("check-budget", run, "--json")
    assert result.exit_code == 1
    failed = {c["name"] for c in strict_json(result.stdout)["checks"] if not c["ok"]}
    assert "segment shares" in failed


def test_budget_sweep_pays_each_budget_to_the_cent(
    tmp_path: Path, data_dir: Path, scenario_file: Path
) -> None:
    result = invoke(
        "sweep",
        "--scenario",
        scenario_file,
        "--param",
        "budget.total_usd=2000000:4000000:4",
        "--data",
        data_dir,
        "--out",
        tmp_path / "sweep",
        "--json",
        "-q",
    )
    assert result.exit_code == 0, result.output
    points = strict_json(result.stdout)["points"]
    budgets = [p["budget.total_usd"] for p in points]
    assert budgets == [2_000_000.0, 2_666_666.67, 3_333_333.33, 4_000_000.0]
    for p in points:
        assert round(p["paid_usd"] * 100) == round(p["budget.total_usd"] * 100)
    # The objective is strictly concave, so each extra dollar is worth less: the shadow price falls.
    prices = [p["shadow_price"] for p in points]
    assert all(a > b for a, b in zip(prices, prices[1:]))


def test_uncertified_rounding_is_never_written(
    tmp_path: Path, data_dir: Path, scenario_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import allocator.vouchers.pipeline as pipeline

    real = pipeline.round_to_cents_by_segment

    def off_by_a_dollar(v, *args, **kwargs):  # noqa: ANN001, ANN202
        cents, report = real(v, *args, **kwargs)
        cents = cents.copy()
        i = int(np.argmax(cents))
        j = int(np.argmin(cents))
        cents[i] -= 100  # a dollar moved from the largest voucher to the smallest: total intact
        cents[j] += 100
        return cents, report

    monkeypatch.setattr(pipeline, "round_to_cents_by_segment", off_by_a_dollar)
    out = tmp_path / "run"
    result = invoke("allocate", "--scenario", scenario_file, "--data", data_dir, "--out", out)
    assert result.exit_code == 3
    assert "certificate" in result.stderr
    assert not out.exists()


def test_phase_in_run_passes_finance_checks(tmp_path: Path, data_dir: Path) -> None:
    path = tmp_path / "phase.toml"
    path.write_text(
        SMALL_SCENARIO.replace('"small"', '"phase"')
        + "[eligibility]\nphase_in_loss_usd = 25.0\nphase_in_ratio = 0.2\n"
    )
    run = tmp_path / "run"
    result = invoke("allocate", "--scenario", path, "--data", data_dir, "--out", run, "-q")
    assert result.exit_code == 0, result.output
    alloc = pl.read_parquet(run / N.ALLOCATIONS_FILE)
    phase = alloc[N.PHASE_FACTOR].to_numpy().copy()
    assert ((phase > 0) & (phase <= 1)).all() and (phase < 1).any()
    # Inside the band the cap is the phased cap, rounded down to the cent.
    inside = phase < 1
    expected_upper = np.floor(np.round(6000.0 * phase[inside] * 100, 6))
    assert (alloc["upper_cents"].to_numpy()[inside] == expected_upper).all()
    assert invoke("check-budget", run).exit_code == 0

    k = int(np.flatnonzero(inside)[0])
    phase[k] = min(1.0, phase[k] * 1.5)
    alloc.with_columns(pl.Series(N.PHASE_FACTOR, phase)).write_parquet(run / N.ALLOCATIONS_FILE)
    result = invoke("check-budget", run, "--json")
    failed = {c["name"] for c in strict_json(result.stdout)["checks"] if not c["ok"]}
    assert result.exit_code == 1 and "bounds" in failed


def test_linear_objective_through_cvxpy_keeps_stdout_strict_json(
    tmp_path: Path, data_dir: Path
) -> None:
    # alpha = 0 with cvxpy ends on HiGHS's simplex, whose C++ banner goes straight to file
    # descriptor 1: only a real process shows whether it stays off stdout.
    import os
    import subprocess
    import sys

    path = tmp_path / "linear.toml"
    path.write_text(SMALL_SCENARIO.replace("alpha = 1.0", "alpha = 0.0"))
    out = tmp_path / "run"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "allocator",
            "allocate",
            "--scenario",
            str(path),
            "--data",
            str(data_dir),
            "--out",
            str(out),
            "--solver",
            "cvxpy",
            "--json",
            "-q",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_COLOR": "1"},
    )
    assert proc.returncode == 0, proc.stderr
    summary = strict_json(proc.stdout)  # the whole of stdout, nothing before or after
    assert summary["solver"] == "cvxpy:HIGHS" and summary["certified"]
    assert invoke("check-budget", out).exit_code == 0


def test_eligibility_takes_its_rules_from_a_scenario(tmp_path: Path, data_dir: Path) -> None:
    phase_in = Path(__file__).resolve().parents[2] / "scenarios" / "phase_in.toml"
    out = tmp_path / "el"
    result = invoke("eligibility", "--scenario", phase_in, "--data", data_dir, "--out", out, "-q")
    assert result.exit_code == 0, result.output
    eligible = pl.read_parquet(out / "eligible.parquet")
    # the band's users are in, with their phase factor; the rest of the rules as announced
    assert eligible[N.PHASE_FACTOR].min() > 0 and eligible[N.PHASE_FACTOR].max() == 1.0
    assert (eligible[N.LOSS_USD] > 25).all() and (eligible[N.LOSS_USD] < 50).any()
    # an option overrides the scenario, and a contradiction with its band is a usage error
    result = invoke(
        "eligibility",
        "--scenario",
        phase_in,
        "--data",
        data_dir,
        "--out",
        tmp_path / "x",
        "--min-loss",
        "20",
    )
    assert result.exit_code == 2 and "phase_in_loss_usd" in result.stderr
    assert not (tmp_path / "x").exists()


def test_a_full_disk_inside_polars_is_a_usage_error_and_other_errors_stay_bugs(capsys) -> None:
    # Polars words a failed write as a ComputeError carrying the OS error; a bug must still
    # surface with its traceback rather than be dressed up as the user's fault.
    import typer

    from allocator.cli.app import guarded

    @guarded
    def disk_full() -> None:
        raise pl.exceptions.ComputeError(
            "parquet: underlying IO error: No space left on device (os error 28)"
        )

    @guarded
    def bug() -> None:
        raise pl.exceptions.ComputeError("cannot compare string with numeric type (i64)")

    with pytest.raises(typer.Exit) as info:
        disk_full()
    assert info.value.exit_code == 2
    assert "No space left on device" in capsys.readouterr().err
    with pytest.raises(pl.exceptions.ComputeError):
        bug()
