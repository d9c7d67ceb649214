"""``allocator sweep`` and ``allocator compare`` through Typer's CliRunner, on small generated data.

Covers: sweep reports the metrics compare reports (recomputed by compare on the same scenarios);
failed points are recorded and the sweep goes on; files are written atomically with ordinary
permissions and the same bytes on rerun; options are validated before any data is read; loss
bands stay in band order in JSON; and a cvxpy sweep re-uses one compiled model while paying
exactly what a fresh solve pays.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from clihelp import invoke, strict_json

from allocator import names as N
from allocator.analysis import sweeps
from allocator.analysis.metrics import LOSS_BANDS
from allocator.analysis.sweeps import (
    MAX_SWEEP_POINTS,
    ModelReuse,
    parse_param,
    run_point,
    run_sweep,
    sweep_grid,
)
from allocator.data.synthetic import generate
from allocator.errors import NotCertifiedError, SolverFailedError
from allocator.settings.scenarios import load_scenario, with_overrides
from allocator.vouchers import pipeline
from allocator.vouchers.pipeline import DataSession, allocate

BANDS = [label for label, _, _ in LOSS_BANDS]
BUDGET_USD = 3_000_000  # about 1,800 eligible users: floors need 7,300 USD, caps allow 10.9M
SMALL = f"""
# Baseline-like rules with the budget scaled to a 3,000-user data set.
name = "small"
[objective]
alpha = 1.0
loss_exponent = 1.0
ratio_exponent = 0.5
[budget]
total_usd = {BUDGET_USD}
exhaust = true
"""
SEGMENTED = (
    SMALL.replace('"small"', '"retail"')
    + '\n[[segments]]\nname = "retail"\nwhere = "loss_usd < 10000"\nmin_share = 0.5\n'
)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("data") / "small"
    generate(out, users=3000, seed=5)
    return out


@pytest.fixture(scope="module")
def scen_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("scen")


def scenario(scen_dir: Path, name: str, text: str) -> Path:
    path = scen_dir / f"{name}.toml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def small(scen_dir: Path) -> Path:
    return scenario(scen_dir, "small", SMALL)


@pytest.fixture(scope="module")
def session(data_dir: Path) -> DataSession:
    return DataSession.open(data_dir)


def sweep_json(*args: object) -> dict:
    result = invoke("sweep", *args, "--json", "-q")
    assert result.exit_code == 0, result.output
    return strict_json(result.stdout)


# ------------------------------------------------------------------ 1. the metrics of compare


def test_sweep_points_carry_the_metrics_compare_reports(
    tmp_path: Path, data_dir: Path, scen_dir: Path, small: Path
) -> None:
    report = sweep_json(
        "--scenario",
        small,
        "--param",
        "eligibility.min_loss_usd=50:500:3",
        "--data",
        data_dir,
        "--out",
        tmp_path / "sw",
    )
    points = report["points"]
    assert [p["eligibility.min_loss_usd"] for p in points] == [50.0, 275.0, 500.0]
    assert report["baseline"] == {"eligibility.min_loss_usd": 50.0}
    # Raising the loss threshold removes users, and each removed user has moved.
    eligible = [p["eligible"] for p in points]
    assert eligible[0] > eligible[1] > eligible[2]
    assert points[0]["moved_vs_first"] == 0
    assert points[2]["moved_vs_first"] >= eligible[0] - eligible[2]

    # compare on the same two settings gives the same numbers, band medians and moves included.
    a = scenario(
        scen_dir,
        "loss50",
        SMALL.replace('"small"', '"loss50"') + "[eligibility]\nmin_loss_usd = 50.0\n",
    )
    b = scenario(
        scen_dir,
        "loss500",
        SMALL.replace('"small"', '"loss500"') + "[eligibility]\nmin_loss_usd = 500.0\n",
    )
    result = invoke("compare", a, b, "--data", data_dir, "--json", "-q")
    assert result.exit_code == 0, result.output
    rows = strict_json(result.stdout)["scenarios"]
    # the scenario's identity (its name, file and rule) is compare's own; the metrics are shared
    shared = set(rows[0]) - {"scenario", "file", "rule"}
    assert {"median_coverage_by_band", "moved_vs_first", "eligible"} <= shared
    for row, point in zip(rows, (points[0], points[2])):
        assert {k: row[k] for k in shared} == {k: point[k] for k in shared}

    # sweep.csv holds the same values, the band medians flattened into columns.
    table = pl.read_csv(tmp_path / "sw" / "sweep.csv")
    assert table["eligible"].to_list() == eligible
    assert table["moved_vs_first"].to_list() == [p["moved_vs_first"] for p in points]
    for label in BANDS:
        got = table[f"median_coverage[{label}]"].to_list()
        for g, p in zip(got, points):
            want = p["median_coverage_by_band"][label]
            assert g is None if want is None else g == pytest.approx(want, rel=1e-12)


def test_sweep_table_shows_eligible_moves_and_bands(
    tmp_path: Path, data_dir: Path, small: Path
) -> None:
    report = sweep_json(
        "--scenario",
        small,
        "--param",
        "eligibility.min_loss_usd=50:500:3",
        "--data",
        data_dir,
        "--out",
        tmp_path / "json",
    )
    result = invoke(
        "sweep",
        "--scenario",
        small,
        "--param",
        "eligibility.min_loss_usd=50:500:3",
        "--data",
        data_dir,
        "--out",
        tmp_path / "table",
        "-q",
    )
    assert result.exit_code == 0, result.output
    header = result.stdout
    for column in ("eligibility.min_loss_usd", "eligible", "moved vs", "cov <100", "cov >=100k"):
        assert column in header
    lines = [line.split() for line in result.stdout.splitlines()]
    for point in report["points"]:
        row = next(
            cells for cells in lines if cells[:1] == [f"{point['eligibility.min_loss_usd']:,.10g}"]
        )
        # Every value is printed whole, none cut short to fit the page.
        assert f"{point['eligible']:,}" in row and f"{point['moved_vs_first']:,}" in row
        assert not any("…" in cell for cell in row)


# ------------------------------------------------------------------ 2. failed points


def test_infeasible_points_are_recorded_and_the_sweep_goes_on(
    tmp_path: Path, data_dir: Path, small: Path
) -> None:
    out = tmp_path / "sw"
    result = invoke(
        "sweep",
        "--scenario",
        small,
        "--param",
        "bounds.floor_usd=5000:4:3",
        "--data",
        data_dir,
        "--out",
        out,
        "--json",
        "-q",
    )
    assert result.exit_code == 0, result.output
    report = strict_json(result.stdout)
    points = report["points"]
    assert [p["status"] for p in points] == ["infeasible", "infeasible", "solved"]
    assert (report["solved"], report["failed"]) == (1, 2)
    for p in points[:2]:
        assert "floor" in p["reason"] and "budget" in p["reason"]
        assert p["paid_usd"] is None and p["moved_vs_first"] is None and p["solver"] is None
    # Moves are counted against the first point that solved.
    assert report["baseline"] == {"bounds.floor_usd": 4.0}
    assert points[2]["moved_vs_first"] == 0 and points[2]["reason"] is None
    assert round(points[2]["paid_usd"] * 100) == BUDGET_USD * 100
    table = pl.read_csv(out / "sweep.csv")
    assert table["status"].to_list() == ["infeasible", "infeasible", "solved"]
    assert table["paid_usd"].null_count() == 2
    assert (out / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "point 1 (bounds.floor_usd=5000): infeasible" in result.stderr


def test_a_solver_failure_is_recorded_with_its_message(
    tmp_path: Path, data_dir: Path, small: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = sweeps.allocate

    def flaky(session, scen, **kwargs):  # noqa: ANN001, ANN202
        if scen.budget.total_usd == 2_500_000:
            raise SolverFailedError("CLARABEL stopped without a solution (numerical trouble)")
        return real(session, scen, **kwargs)

    monkeypatch.setattr(sweeps, "allocate", flaky)
    report = sweep_json(
        "--scenario",
        small,
        "--param",
        "budget.total_usd=2000000:3000000:3",
        "--data",
        data_dir,
        "--out",
        tmp_path / "sw",
    )
    statuses = [(p["status"], p["reason"]) for p in report["points"]]
    assert statuses == [
        ("solved", None),
        ("solver_failed", "CLARABEL stopped without a solution (numerical trouble)"),
        ("solved", None),
    ]


def test_no_point_solved_exits_3_and_writes_nothing(
    tmp_path: Path, data_dir: Path, small: Path
) -> None:
    out = tmp_path / "sw"
    result = invoke(
        "sweep",
        "--scenario",
        small,
        "--param",
        "bounds.floor_usd=3000:5000:2",
        "--data",
        data_dir,
        "--out",
        out,
        "--json",
    )
    assert result.exit_code == 3
    assert result.stdout == ""
    assert "none of the 2 sweep points solved" in result.stderr and "Traceback" not in result.output
    assert not out.exists()


# ------------------------------------------------------------------ 3. files


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_files_get_ordinary_permissions_and_identical_bytes(
    tmp_path: Path, data_dir: Path, small: Path, umask: int
) -> None:
    old = os.umask(umask)
    try:
        runs = []
        for name in ("a", "b"):
            out = tmp_path / name
            result = invoke(
                "sweep",
                "--scenario",
                small,
                "--param",
                "objective.alpha=0.5:2:3",
                "--data",
                data_dir,
                "--out",
                out,
                "-q",
            )
            assert result.exit_code == 0, result.output
            runs.append(out)
    finally:
        os.umask(old)
    for out in runs:
        # Nothing but the two outputs: no temporary file is left behind.
        assert sorted(p.name for p in out.iterdir()) == ["sweep.csv", "sweep.png"]
        for name in ("sweep.csv", "sweep.png"):
            assert (out / name).stat().st_mode & 0o777 == 0o666 & ~umask
    for name in ("sweep.csv", "sweep.png"):
        assert (runs[0] / name).read_bytes() == (runs[1] / name).read_bytes()


# ------------------------------------------------------------------ 4-6. options


@pytest.mark.parametrize("threshold", ["-1", "nan", "inf"])
def test_bad_moved_threshold_is_refused_before_any_work(
    tmp_path: Path, small: Path, threshold: str
) -> None:
    other = tmp_path / "other.toml"
    other.write_text(SMALL.replace('"small"', '"other"'))
    missing = tmp_path / "no-data"  # never read: the option is checked first
    for args in (
        ("compare", small, other),
        (
            "sweep",
            "--scenario",
            small,
            "--param",
            "objective.alpha=1:2:2",
            "--out",
            tmp_path / "sw",
        ),
    ):
        result = invoke(*args, "--data", missing, f"--moved-threshold={threshold}")
        assert result.exit_code == 2, result.output
        assert "--moved-threshold" in result.stderr and "Traceback" not in result.output
        assert len(result.stderr.strip().splitlines()) == 1


def test_unknown_solver_is_refused_before_any_work(tmp_path: Path, small: Path) -> None:
    missing = tmp_path / "no-data"
    for args in (
        ("compare", small, small),
        (
            "sweep",
            "--scenario",
            small,
            "--param",
            "objective.alpha=1:2:2",
            "--out",
            tmp_path / "sw",
        ),
    ):
        result = invoke(*args, "--data", missing, "--solver", "gurobi")
        assert result.exit_code == 2, result.output
        assert "--solver" in result.stderr and "gurobi" in result.stderr
        assert "auto, fast, cvxpy" in result.stderr and "Traceback" not in result.output
    assert not (tmp_path / "sw").exists()


@pytest.mark.parametrize(
    ("params", "named"),
    [
        (["objective.alpha=1:2:100000000000"], "COUNT must be from 1 to 1000"),
        (["objective.alpha=1:2:1" + "0" * 400], "COUNT must be from 1 to 1000"),
        (["objective.alpha=1:2:0"], "COUNT must be from 1 to 1000"),
        (["objective.alpha=1:2:2.5"], "COUNT a whole number"),
        (["objective.alpha=1:inf:3"], "finite"),
        (["objective.alpha=nan:2:3"], "finite"),
        (["objective.alpha=1:1e400:3"], "finite"),
        (["objective.alpha=0.5:5:100", "budget.total_usd=1e6:3e6:11"], "100 x 11 = 1,100 points"),
        (["bounds.floor_usd=4:7000:3"], "bounds.floor_usd=7000"),
        (["objective.alpha=log:0:1:3"], "a log grid needs START and STOP > 0"),
        (["objective.alpha=log:1:2:0"], "COUNT must be from 1 to 1000"),
        (["objective.alpha=1,x"], "value 'x' is not a number"),
        (["objective.alpha=1,inf"], "values must be finite numbers"),
        (["objective.alpha=" + ",".join(["1"] * 1001)], "lists 1,001 values"),
        (["objective.alpha=1,2", "budget.total_usd=" + ",".join(["1e6"] * 501)], "2 x 501"),
        (["objective.alpha=1:2"], "NAME=log:START:STOP:COUNT"),
        (["objective.alpah=1,2"], "Did you mean 'objective.alpha'?"),
    ],
    ids=[
        "count-1e11",
        "count-1e400",
        "count-0",
        "count-fraction",
        "stop-inf",
        "start-nan",
        "stop-overflows",
        "grid-too-large",
        "point-out-of-range",
        "log-through-zero",
        "log-count-0",
        "list-not-a-number",
        "list-inf",
        "list-too-long",
        "list-grid-too-large",
        "two-parts",
        "misspelt-name",
    ],
)
def test_bad_param_is_a_one_line_error(
    tmp_path: Path, small: Path, params: list[str], named: str
) -> None:
    args: list[object] = ["sweep", "--scenario", small, "--data", tmp_path / "no-data"]
    for p in params:
        args += ["--param", p]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a leaked numpy warning fails the test
        result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert named in result.stderr and "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("spec", "values"),
    [
        ("objective.alpha=0.5:2:4", [0.5, 1.0, 1.5, 2.0]),
        ("objective.alpha=log:0.1:10:3", [0.1, 1.0, 10.0]),
        ("objective.alpha=log:10:0.1:3", [10.0, 1.0, 0.1]),
        ("objective.alpha=2,0,0.5", [2.0, 0.0, 0.5]),
        ("objective.alpha=3", [3.0]),
        ("budget.total_usd=1e6,2000000.004", [1e6, 2e6]),
        ("budget.total_usd=log:1e6:1e7:3", [1e6, 3162277.66, 1e7]),
        ("objective.features.vip_tier=-0.1,0.1", [-0.1, 0.1]),
    ],
)
def test_param_forms_give_their_values(spec: str, values: list[float]) -> None:
    name, got = parse_param(spec)
    assert name == spec.partition("=")[0]
    assert got.tolist() == pytest.approx(values, rel=1e-12)
    if name == "budget.total_usd":
        assert all(round(v, 2) == v for v in got.tolist())


def test_log_grid_points_are_evenly_spaced_in_log() -> None:
    _, got = parse_param("objective.alpha=log:0.01:100:9")
    ratios = got[1:] / got[:-1]
    assert ratios == pytest.approx([10**0.5] * 8)


def test_the_largest_grid_allowed_is_accepted(small: Path) -> None:
    base = load_scenario(small)
    names, points, scenarios = sweep_grid(
        base, ["objective.alpha=0.5:3:40", "budget.total_usd=1e6:3e6:25"]
    )
    assert len(points) == len(scenarios) == MAX_SWEEP_POINTS == 40 * 25
    assert names == ["objective.alpha", "budget.total_usd"]


def test_compare_needs_two_scenarios(data_dir: Path, small: Path) -> None:
    result = invoke("compare", small, "--data", data_dir)
    assert result.exit_code == 2
    assert "two or more" in result.stderr and "Traceback" not in result.output


# ------------------------------------------------------------------ 7. band order in JSON


def test_json_keeps_loss_bands_in_band_order(tmp_path: Path, data_dir: Path, small: Path) -> None:
    other = tmp_path / "other.toml"
    other.write_text(SMALL.replace('"small"', '"other"').replace("alpha = 1.0", "alpha = 2.0"))
    result = invoke("compare", small, other, "--data", data_dir, "--json", "-q")
    assert result.exit_code == 0, result.output
    for row in strict_json(result.stdout)["scenarios"]:
        assert list(row["median_coverage_by_band"]) == BANDS
    # In the text itself too: "<100" comes before "1k-10k", unlike a key-sorted dump.
    assert result.stdout.index('"<100"') < result.stdout.index('"1k-10k"')
    report = sweep_json(
        "--scenario",
        small,
        "--param",
        "objective.alpha=1:2:2",
        "--data",
        data_dir,
        "--out",
        tmp_path / "sw",
    )
    for p in report["points"]:
        assert list(p["median_coverage_by_band"]) == BANDS


# ------------------------------------------------------------------ 8. model re-use with cvxpy


def _assert_same_as_fresh(session: DataSession, scen, got) -> None:  # noqa: ANN001
    fresh = allocate(session, scen, solver="cvxpy", with_payouts=False)
    assert np.abs(got.allocation.vouchers - fresh.allocation.vouchers).max() <= 1e-6
    # The certificate, not cvxpy's status, is what accepts an answer: a re-used model keeps the
    # scaling guessed for the first point and may come back "optimal_inaccurate" where a fresh
    # one says "optimal"; both are polished and certified.
    assert got.allocation.status in ("optimal", "optimal_inaccurate")
    assert got.allocation.certificate.certified is fresh.allocation.certificate.certified is True
    assert got.final_certificate.certified is fresh.final_certificate.certified is True
    cents = got.allocations[N.VOUCHER_CENTS].to_numpy()
    assert int(cents.sum()) == fresh.paid_cents == fresh.budget_cents
    assert np.abs(cents - fresh.cents).max() <= 1
    assert got.allocations[N.USER_ID].to_list() == fresh.allocations[N.USER_ID].to_list()


@pytest.mark.parametrize(
    ("scenario_text", "params", "compiled"),
    [
        (SMALL, ["budget.total_usd=2000000:4000000:3"], 1),
        (SMALL, ["bounds.floor_usd=4:50:2", "bounds.cap_usd=3000:6000:2"], 1),
        (SEGMENTED, ["segments.retail.min_share=0.5:0.7:3"], 1),
        # Structural changes need a new problem: alpha, the users, whole-cent coverage caps.
        (SMALL, ["objective.alpha=1:2:2"], 2),
        (SMALL, ["eligibility.min_loss_usd=50:500:2"], 2),
        (SMALL + "[bounds]\ncoverage_cap = 0.5\n", ["bounds.coverage_cap=0.5:0.8:2"], 2),
    ],
    ids=["budget", "floor-cap-grid", "segment-share", "alpha", "eligibility", "coverage-cap"],
)
def test_reused_model_pays_what_a_fresh_solve_pays(
    tmp_path: Path, session: DataSession, scenario_text: str, params: list[str], compiled: int
) -> None:
    path = tmp_path / "scen.toml"
    path.write_text(scenario_text)
    _, _, scenarios = sweep_grid(load_scenario(path), params)
    reuse = ModelReuse()
    for scen in scenarios:
        got = run_point(session, scen, solver="cvxpy", reuse=reuse)
        assert got.allocation.method == "cvxpy:CLARABEL"
        _assert_same_as_fresh(session, scen, got)
    assert (reuse.compiled, reuse.reused) == (compiled, len(scenarios) - compiled)


def test_reuse_skips_the_fast_solver_and_infeasible_points(
    session: DataSession, small: Path
) -> None:
    _, points, scenarios = sweep_grid(load_scenario(small), ["bounds.floor_usd=5000:4:3"])
    rows, reuse = run_sweep(session, points, scenarios, solver=None, moved_threshold=1.0)
    assert [r["status"] for r in rows] == ["infeasible", "infeasible", "solved"]
    assert rows[2]["solver"] == "fast"
    assert reuse is not None and (reuse.compiled, reuse.reused) == (0, 0)
    rows, reuse = run_sweep(session, points, scenarios, solver="cvxpy", moved_threshold=1.0)
    assert [r["status"] for r in rows] == ["infeasible", "infeasible", "solved"]
    assert reuse is not None and (reuse.compiled, reuse.reused) == (1, 0)


def test_cvxpy_sweep_rows_equal_with_and_without_reuse(session: DataSession, small: Path) -> None:
    _, points, scenarios = sweep_grid(load_scenario(small), ["budget.total_usd=2000000:4000000:3"])
    fresh, none = run_sweep(
        session, points, scenarios, solver="cvxpy", moved_threshold=1.0, reuse=False
    )
    reused, reuse = run_sweep(session, points, scenarios, solver="cvxpy", moved_threshold=1.0)
    assert none is None and reuse is not None and reuse.reused == 2
    for a, b in zip(fresh, reused):
        assert a.keys() == b.keys()
        for key in a:
            if key == "shadow_price":
                assert a[key] == pytest.approx(b[key], rel=1e-6)
            elif key in (
                "paid_cents",
                "eligible",
                "n_floor",
                "n_cap",
                "moved_vs_first",
                "status",
                "solver",
            ):
                assert a[key] == b[key], key


def test_reused_points_still_pass_the_rounded_certificate(
    session: DataSession, small: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = pipeline.round_to_cents_by_segment

    def off_by_a_dollar(v, *args, **kwargs):  # noqa: ANN001, ANN202
        cents, report = real(v, *args, **kwargs)
        cents = cents.copy()
        cents[int(np.argmax(cents))] -= 100  # a dollar moved between users: the total holds
        cents[int(np.argmin(cents))] += 100
        return cents, report

    monkeypatch.setattr(pipeline, "round_to_cents_by_segment", off_by_a_dollar)
    _, points, scenarios = sweep_grid(load_scenario(small), ["budget.total_usd=2000000:3000000:2"])
    with pytest.raises(NotCertifiedError, match="rounded to cents"):
        run_point(session, scenarios[0], solver="cvxpy", reuse=ModelReuse())
    rows, _ = run_sweep(session, points, scenarios, solver="cvxpy", moved_threshold=1.0)
    assert [r["status"] for r in rows] == ["not_certified", "not_certified"]


def test_a_model_that_needed_its_fallback_is_not_reused(
    session: DataSession, small: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from allocator.kernel.model import FairnessModel

    real = FairnessModel._attempt

    def stalls_as_built(self, *args, **kwargs):  # noqa: ANN001, ANN202
        if (self.scaling, self.normalise) == ("guess", "price"):
            raise SolverFailedError("CLARABEL returned status None without a usable solution")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(FairnessModel, "_attempt", stalls_as_built)
    _, _, scenarios = sweep_grid(load_scenario(small), ["budget.total_usd=2000000:3000000:2"])
    reuse = ModelReuse()
    for scen in scenarios:
        got = run_point(session, scen, solver="cvxpy", reuse=reuse)
        assert got.allocation.certificate.certified and got.final_certificate.certified
        assert reuse.model is None  # its own scaling failed: the next point starts afresh
    assert (reuse.compiled, reuse.reused) == (2, 0)


def test_a_point_with_nobody_eligible_is_recorded_on_the_reuse_path(
    tmp_path: Path, session: DataSession
) -> None:
    path = tmp_path / "slack.toml"
    path.write_text(SMALL.replace("exhaust = true", "exhaust = false"))
    _, points, scenarios = sweep_grid(load_scenario(path), ["eligibility.min_loss_usd=50:1e12:2"])
    rows, reuse = run_sweep(session, points, scenarios, solver="cvxpy", moved_threshold=1.0)
    assert [r["status"] for r in rows] == ["solved", "infeasible"]
    assert rows[0]["eligible"] > 0 and rows[1]["eligible"] is None
    assert reuse is not None and reuse.compiled == 1


def test_rows_have_the_same_fields_when_no_point_solved(session: DataSession, small: Path) -> None:
    _, points, scenarios = sweep_grid(load_scenario(small), ["bounds.floor_usd=3000:5000:2"])
    rows, _ = run_sweep(session, points, scenarios, solver=None, moved_threshold=1.0)
    solved, _ = run_sweep(session, [{}], [load_scenario(small)], solver=None, moved_threshold=1.0)
    assert [r["status"] for r in rows] == ["infeasible", "infeasible"]
    assert set(rows[0]) - {"bounds.floor_usd"} == set(solved[0])
    given = ("bounds.floor_usd", "status", "reason")
    assert all(v is None for k, v in rows[0].items() if k not in given)


def test_the_session_keeps_only_the_most_recent_eligibility_results(session: DataSession) -> None:
    # a threshold sweep makes a new rule set at every point; the cache must not grow with it
    from dataclasses import replace

    from allocator.settings.models import EligibilityRules
    from allocator.vouchers.pipeline import ELIGIBILITY_CACHE_SIZE

    session._eligibility.clear()
    base = EligibilityRules()
    first, _ = session.eligibility(base)
    for k in range(ELIGIBILITY_CACHE_SIZE + 3):
        session.eligibility(replace(base, min_loss_usd=60.0 + k))
        again, _ = session.eligibility(base)  # used at every step: never evicted
        assert again is first
    assert len(session._eligibility) == ELIGIBILITY_CACHE_SIZE
    assert replace(base, min_loss_usd=60.0) not in session._eligibility  # the oldest went first


def test_a_file_that_cannot_be_written_leaves_neither_file(
    tmp_path: Path, data_dir: Path, small: Path
) -> None:
    # sweep.png is a folder here: the error must leave no sweep.csv behind either, as it says
    out = tmp_path / "sw"
    (out / "sweep.png").mkdir(parents=True)
    result = invoke(
        "sweep",
        "--scenario",
        small,
        "--param",
        "objective.alpha=1:2:2",
        "--data",
        data_dir,
        "--out",
        out,
        "-q",
    )
    assert result.exit_code == 2, result.output
    assert "Nothing was written" in result.stderr and "Traceback" not in result.output
    assert sorted(p.name for p in out.iterdir()) == ["sweep.png"]


# ------------------------------------------------------------------ 10. claims rules

MT_GOX = SMALL.replace('"small"', '"mtgox"').replace(
    "alpha = 1.0\nloss_exponent = 1.0\nratio_exponent = 0.5\n",
    'rule = "mt_gox"\nbase_usd = 100.0\n',
)


@pytest.mark.parametrize(
    "param",
    [
        "objective.alpha=1,2",
        "objective.loss_exponent=0.5,1",
        "objective.ratio_exponent=0,1",
        "objective.features.vip_tier=-0.1,0.1",
    ],
)
def test_a_weight_knob_on_a_rule_scenario_is_refused(
    tmp_path: Path, scen_dir: Path, param: str
) -> None:
    # identical points would read as "alpha does not matter here"; say why instead
    path = scenario(scen_dir, "mtgox", MT_GOX)
    result = invoke("sweep", "--scenario", path, "--data", tmp_path / "no-data", "--param", param)
    assert result.exit_code == 2, result.output
    name = param.partition("=")[0]
    assert name in result.stderr and "base_then_pro_rata" in result.stderr
    assert "budget.total_usd" in result.stderr and "Traceback" not in result.output


def test_a_rule_sweep_of_its_parameter_matches_each_point_allocated(
    data_dir: Path, scen_dir: Path, session: DataSession
) -> None:
    path = scenario(scen_dir, "mtgox", MT_GOX)
    out = sweep_json("--scenario", path, "--data", data_dir, "--param", "objective.base_usd=50,400")
    points = out["points"]
    assert [p["objective.base_usd"] for p in points] == [50.0, 400.0]
    for point in points:
        assert point["status"] == "solved" and point["shadow_price"] is None
        assert point["solver"] == "rule:base_then_pro_rata"
        base = {"objective.base_usd": point["objective.base_usd"]}
        run = allocate(session, with_overrides(load_scenario(path), base), with_payouts=False)
        cents = run.allocations[N.VOUCHER_CENTS]
        assert point["paid_cents"] == int(cents.sum()) == BUDGET_USD * 100
        assert point["median_voucher"] == pytest.approx(float(cents.median()) / 100)
    # a larger base moves money to small losses: more users are paid their whole loss
    assert points[1]["n_cap"] > points[0]["n_cap"]
