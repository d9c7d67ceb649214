"""check-budget recomputes eligibility and weights from the input files: a run edited together
with its manifest (hashes and counts rewritten to match) still fails."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import polars as pl
import pytest
from clihelp import invoke, rehash_outputs, strict_json

from allocator import names as N
from allocator.analysis.checks import CHECK_NAMES, check_run_dir
from allocator.data.synthetic import generate

ROOT = Path(__file__).resolve().parents[2]
NEW_CHECKS = ("eligibility recomputed", "weights recomputed")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("recompute") / "data"
    generate(out, users=2000, seed=3)
    return out


def _allocate(data: Path, run: Path, scenario: str) -> Path:
    r = invoke(
        "allocate", "--scenario", ROOT / "scenarios" / scenario, "--data", data,
        "--out", run, "-q", "--set", "budget.total_usd=2e6",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    return run


@pytest.fixture(scope="module")
def pristine(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _allocate(data, tmp_path_factory.mktemp("recompute-run") / "run", "baseline.toml")


@pytest.fixture
def run(pristine: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(pristine, out)
    return out


def _failed(run: Path) -> set[str]:
    r = invoke("check-budget", run, "--json")
    assert r.exit_code in (0, 1), r.output
    return set(strict_json(r.stdout)["failed"])


def test_the_new_checks_are_registered() -> None:
    assert CHECK_NAMES[-2:] == NEW_CHECKS


@pytest.mark.parametrize(
    "scenario",
    ["baseline.toml", "phase_in.toml", "baseline_depeg_net.toml", "talmud.toml"],
)
def test_a_pristine_run_passes_every_check(data: Path, tmp_path: Path, scenario: str) -> None:
    run = _allocate(data, tmp_path / "run", scenario)
    report = check_run_dir(run)
    assert report.ok, report.lines()
    names = {c.name for c in report.checks}
    assert set(NEW_CHECKS) <= names


def test_an_excluded_user_moved_into_the_allocations_is_caught(run: Path) -> None:
    alloc = pl.read_parquet(run / N.ALLOCATIONS_FILE)
    excl = pl.read_parquet(run / N.EXCLUDED_FILE)
    # a user who lost enough but not enough of their net assets: plausible numbers throughout
    moved = excl.filter(pl.col(N.REASON) == N.REASON_BELOW_LOSS_RATIO).row(0, named=True)
    template = alloc.filter(pl.col(N.BOUND) == N.BOUND_FLOOR)
    row = (template if template.height else alloc).head(1)
    row = row.with_columns(
        pl.lit(moved[N.USER_ID], dtype=pl.Int64).alias(N.USER_ID),
        pl.lit(moved[N.LOSS_USD]).alias(N.LOSS_USD),
        pl.lit(moved[N.LOSS_RATIO]).alias(N.LOSS_RATIO),
        pl.lit(moved[N.LOSS_USD] * moved[N.LOSS_RATIO]).alias(N.WEIGHT),
    )
    pl.concat([alloc, row.select(alloc.columns)]).sort(N.USER_ID).write_parquet(
        run / N.ALLOCATIONS_FILE
    )
    excl.filter(pl.col(N.USER_ID) != moved[N.USER_ID]).write_parquet(run / N.EXCLUDED_FILE)
    man = json.loads((run / N.MANIFEST_FILE).read_text())
    counts = man["counts"]
    counts["eligible"] += 1
    counts["excluded"] -= 1
    counts["excluded_by_reason"][N.REASON_BELOW_LOSS_RATIO] -= 1
    counts[row[N.BOUND][0]] += 1
    (run / N.MANIFEST_FILE).write_text(json.dumps(man, sort_keys=True, indent=2) + "\n")
    rehash_outputs(run)
    report = check_run_dir(run)
    check = next(c for c in report.checks if c.name == "eligibility recomputed")
    assert not check.ok
    assert "allocated user(s) the rules exclude" in check.detail
    assert str(moved[N.USER_ID]) in check.detail
    assert "counts" not in {c.name for c in report.failures}


def test_an_edited_loss_is_caught(run: Path) -> None:
    path = run / N.ALLOCATIONS_FILE
    alloc = pl.read_parquet(path)
    uid = alloc[N.USER_ID][len(alloc) // 2]
    alloc.with_columns(
        pl.when(pl.col(N.USER_ID) == uid)
        .then(pl.col(N.LOSS_USD) * 1.5)
        .otherwise(pl.col(N.LOSS_USD))
        .alias(N.LOSS_USD)
    ).write_parquet(path)
    rehash_outputs(run)
    failed = _failed(run)
    assert "eligibility recomputed" in failed
    assert "output hashes" not in failed
    detail = next(c.detail for c in check_run_dir(run).checks if c.name == "eligibility recomputed")
    assert f"user_id={uid}" in detail and N.LOSS_USD in detail


def test_an_edited_excluded_reason_is_caught(run: Path) -> None:
    path = run / N.EXCLUDED_FILE
    excl = pl.read_parquet(path)
    uid = excl.filter(pl.col(N.REASON) == N.REASON_BELOW_MIN_LOSS)[N.USER_ID][0]
    excl.with_columns(
        pl.when(pl.col(N.USER_ID) == uid)
        .then(pl.lit(N.REASON_KYC))
        .otherwise(pl.col(N.REASON))
        .alias(N.REASON)
    ).write_parquet(path)
    rehash_outputs(run)
    assert "eligibility recomputed" in _failed(run)


def test_an_edited_weight_is_caught(run: Path) -> None:
    path = run / N.ALLOCATIONS_FILE
    alloc = pl.read_parquet(path)
    uid = alloc[N.USER_ID][3]
    alloc.with_columns(
        pl.when(pl.col(N.USER_ID) == uid)
        .then(pl.col(N.WEIGHT) * (1 + 1e-6))
        .otherwise(pl.col(N.WEIGHT))
        .alias(N.WEIGHT)
    ).write_parquet(path)
    rehash_outputs(run)
    failed = _failed(run)
    assert "weights recomputed" in failed
    assert "eligibility recomputed" not in failed


def test_a_missing_input_is_reported_not_raised(run: Path, tmp_path: Path) -> None:
    man = json.loads((run / N.MANIFEST_FILE).read_text())
    man["inputs"][N.PRICES_FILE]["path"] = str(tmp_path / "nowhere.parquet")
    (run / N.MANIFEST_FILE).write_text(json.dumps(man, sort_keys=True, indent=2) + "\n")
    report = check_run_dir(run)
    for name in NEW_CHECKS:
        check = next(c for c in report.checks if c.name == name)
        assert not check.ok and check.detail.startswith("not checked")
