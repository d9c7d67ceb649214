"""The fairness audit: exact pair counts against brute force, and real runs audited end to end.

Every count is re-derived here pair by pair from the definitions (O(n^2)) on small random
inputs full of ties; the runs come from the CLI on small generated data.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from clihelp import strict_json
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

import allocator.cli.cmd_explain  # noqa: F401  (registers the explain and audit commands)
from allocator import names as N
from allocator.analysis import metrics
from allocator.analysis.audit import (
    audit,
    count_envy,
    count_inversions,
    count_monotonicity,
    weights_monotone,
)
from allocator.cli.app import app
from allocator.data.synthetic import generate
from allocator.errors import InputError
from allocator.settings.models import ObjectiveSpec
from allocator.settings.scenarios import parse_scenario

runner = CliRunner()

BASELINE = """
name = "small-baseline"
[objective]
alpha = 1.0
loss_exponent = 1.0
ratio_exponent = 1.0
[budget]
total_usd = 3000000
"""

# Coverage cap, a binding segment share, a weight feature and alpha = 2: every factor at work.
FACTORS = """
name = "small-factors"
[eligibility]
nonpositive_net_assets = "exclude"
[objective]
alpha = 2.0
loss_exponent = 1.0
ratio_exponent = 0.5
[objective.features]
vip_tier = 0.1
[bounds]
coverage_cap = 0.3
[budget]
total_usd = 3000000
[[segments]]
name = "large"
where = "loss_usd >= 20000"
max_share = 0.25
"""


# ------------------------------------------------------------------------------- brute force


def brute_monotonicity(loss, cents, groups) -> int:
    n = len(loss)
    return sum(
        1
        for i in range(n)
        for j in range(n)
        if groups[i] == groups[j] and loss[j] > loss[i] and cents[j] < cents[i]
    )


def is_envy(loss, ratio, cents, i: int, j: int) -> bool:
    both_equal = loss[j] == loss[i] and ratio[j] == ratio[i]
    return loss[j] >= loss[i] and ratio[j] >= ratio[i] and not both_equal and cents[j] < cents[i]


def brute_envy(loss, ratio, cents, groups) -> int:
    n = len(loss)
    return sum(
        1
        for i in range(n)
        for j in range(n)
        if groups[i] == groups[j] and is_envy(loss, ratio, cents, i, j)
    )


values = st.lists(st.integers(0, 4), min_size=0, max_size=40)


@given(values)
def test_inversions_match_brute_force(x: list[int]) -> None:
    brute = sum(1 for p in range(len(x)) for q in range(p + 1, len(x)) if x[p] > x[q])
    assert count_inversions(x) == brute


@st.composite
def pair_inputs(draw):
    n = draw(st.integers(0, 40))
    small = st.lists(st.integers(0, 4), min_size=n, max_size=n)
    loss = np.array(draw(small), dtype=np.float64) * 10.0
    ratio = np.array(
        draw(st.lists(st.sampled_from([0.3, 0.5, 1.0, math.inf]), min_size=n, max_size=n))
    )
    cents = np.array(draw(small), dtype=np.int64) * 100 + 400
    groups = np.array(draw(st.lists(st.integers(0, 2), min_size=n, max_size=n)))
    return loss, ratio, cents, groups


@given(pair_inputs())
def test_pair_counts_match_brute_force(data) -> None:
    loss, ratio, cents, groups = data
    ones = np.zeros(len(loss), dtype=np.int64)
    assert count_monotonicity(loss, cents) == brute_monotonicity(loss, cents, ones)
    assert count_monotonicity(loss, cents, groups) == brute_monotonicity(loss, cents, groups)
    assert count_envy(loss, ratio, cents) == brute_envy(loss, ratio, cents, ones)
    assert count_envy(loss, ratio, cents, groups) == brute_envy(loss, ratio, cents, groups)


# -------------------------------------------------------- the attribution cascade, brute force


@st.composite
def allocation_frames(draw):
    n = draw(st.integers(0, 30))
    a = draw(st.sampled_from([0.0, 1.0]))
    b = draw(st.sampled_from([0.0, 0.5, 1.0]))
    c = draw(st.sampled_from([0.0, 0.2]))
    cap = 1.0
    idx = st.lists(st.integers(0, 3), min_size=n, max_size=n)
    loss = np.array([50.0, 120.0, 120.0, 4000.0])[draw(idx)]
    ratio = np.array([0.3, 0.8, 1.5, math.inf])[draw(idx)]
    vip = np.array(draw(st.lists(st.integers(0, 1), min_size=n, max_size=n)), dtype=np.float64)
    upper = np.array([600, 900, 600_000, 600_000])[draw(idx)]
    lower = np.full(n, 400)
    # a voucher at the floor, at the upper bound, or strictly between
    where = np.array(draw(st.lists(st.integers(0, 4), min_size=n, max_size=n)))
    cents = np.where(
        where == 0, lower, np.where(where == 1, upper, lower + (upper - lower) * where // 5)
    )
    segment = [
        ["x", "y", None][k] for k in draw(st.lists(st.integers(0, 2), min_size=n, max_size=n))
    ]
    log_w = a * np.log(loss) + b * np.log(np.minimum(ratio, cap)) + c * vip
    frame = pl.DataFrame(
        {
            N.USER_ID: np.arange(n, dtype=np.int64),
            N.VOUCHER_CENTS: cents.astype(np.int64),
            "lower_cents": lower.astype(np.int64),
            "upper_cents": upper.astype(np.int64),
            N.LOSS_USD: loss,
            N.LOSS_RATIO: ratio,
            N.WEIGHT: np.exp(log_w),
            N.SEGMENT: pl.Series(segment, dtype=pl.String),
        }
    )
    objective = ObjectiveSpec(
        alpha=1.0, loss_exponent=a, ratio_exponent=b, ratio_cap=cap, features=(("vip_tier", c),)
    )
    return frame, objective, vip * c


def brute_cascade(
    frame: pl.DataFrame, objective: ObjectiveSpec, feature: np.ndarray, kind: str
) -> dict[str, int]:
    L, r = frame[N.LOSS_USD].to_numpy(), frame[N.LOSS_RATIO].to_numpy()
    v, w = frame[N.VOUCHER_CENTS].to_numpy(), frame[N.WEIGHT].to_numpy()
    lo, hi = frame["lower_cents"].to_numpy(), frame["upper_cents"].to_numpy()
    seg = frame[N.SEGMENT].to_list()
    inside = (v > lo) & (v < hi)
    counts = dict.fromkeys(
        ("raw", "segment", "features", "bounds", "ratio", "rounding_tie", "unexplained"), 0
    )
    n = frame.height
    for i in range(n):
        for j in range(n):
            if i == j:
                continue
            if kind == "monotonicity":
                violation = L[j] > L[i] and v[j] < v[i]
            else:
                violation = is_envy(L, r, v, i, j)
            if not violation:
                continue
            counts["raw"] += 1
            if seg[i] != seg[j]:
                counts["segment"] += 1
            elif feature[i] != feature[j]:
                counts["features"] += 1
            elif (lo[i], hi[i]) != (lo[j], hi[j]) and not (inside[i] and inside[j]):
                counts["bounds"] += 1
            elif kind == "monotonicity" and objective.ratio_exponent != 0 and r[j] < r[i]:
                counts["ratio"] += 1
            elif kind == "envy" and L[i] == L[j] and w[i] == w[j]:
                counts["rounding_tie"] += 1
            else:
                counts["unexplained"] += 1
    return counts


@given(allocation_frames())
def test_attribution_cascade_matches_brute_force(data) -> None:
    frame, objective, feature = data
    result = audit(frame, objective=objective)
    for kind in ("monotonicity", "envy"):
        v = getattr(result, kind)
        brute = brute_cascade(frame, objective, feature, kind)
        assert v.raw == brute["raw"]
        assert v.unexplained == brute["unexplained"]
        for name, count in v.by_factor:
            assert count == brute[name], (kind, name)
        assert v.raw == v.unexplained + sum(c for _, c in v.by_factor)
        # every example really is a violation of this kind, and unexplained ones are unexplained
        ids = frame[N.USER_ID].to_list()
        for ex in v.examples + v.unexplained_examples:
            i, j = ids.index(ex.user_i), ids.index(ex.user_j)
            L, r, c = (frame[col].to_numpy() for col in (N.LOSS_USD, N.LOSS_RATIO, N.VOUCHER_CENTS))
            if kind == "monotonicity":
                assert L[j] > L[i] and c[j] < c[i]
            else:
                assert is_envy(L, r, c, i, j)
        assert all(ex.explained_by == "unexplained" for ex in v.unexplained_examples)
        assert len(v.unexplained_examples) == min(5, len(v.unexplained_examples))
        if v.unexplained:
            assert v.unexplained_examples
    json.dumps(result.to_dict(), allow_nan=False)


def test_without_objective_features_are_assumed_equal() -> None:
    frame = pl.DataFrame(
        {
            N.USER_ID: [1, 2],
            N.VOUCHER_CENTS: [1000, 900],
            "lower_cents": [400, 400],
            "upper_cents": [600_000, 600_000],
            N.LOSS_USD: [100.0, 200.0],
            N.LOSS_RATIO: [0.5, 0.5],
            N.WEIGHT: [2.0, 1.0],  # user 2 lost more but has a lower weight: a feature did it
            N.SEGMENT: pl.Series([None, None], dtype=pl.String),
        }
    )
    plain = audit(frame)
    assert plain.monotonicity.raw == 1 and plain.monotonicity.unexplained == 1
    assert plain.monotonicity.expected_zero is None and plain.ok
    assert any("objective not given" in note for note in plain.notes)
    assert weights_monotone(ObjectiveSpec(loss_exponent=1.0, ratio_exponent=0.0))
    assert not weights_monotone(ObjectiveSpec(loss_exponent=-0.5))
    assert not weights_monotone(ObjectiveSpec(alpha=0.5, loss_exponent=0.2, form="coverage"))


# ---------------------------------------------------------------------------- real runs


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("audit-data") / "small"
    generate(out, users=3000, seed=5)
    return out


def _run(tmp_path_factory: pytest.TempPathFactory, data_dir: Path, text: str) -> Path:
    base = tmp_path_factory.mktemp("audit-run")
    scenario = base / "scenario.toml"
    scenario.write_text(text)
    out = base / "run"
    result = runner.invoke(
        app,
        ["allocate", "--scenario", str(scenario), "--data", str(data_dir), "--out", str(out), "-q"],
    )
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def baseline_run(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    return _run(tmp_path_factory, data_dir, BASELINE)


@pytest.fixture(scope="module")
def factors_run(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    return _run(tmp_path_factory, data_dir, FACTORS)


def _objective(run_dir: Path) -> ObjectiveSpec:
    manifest = json.loads((run_dir / N.MANIFEST_FILE).read_text())
    return parse_scenario(manifest["scenario"], file="manifest").objective


def test_baseline_run_has_no_unexplained_violations(baseline_run: Path) -> None:
    allocations = pl.read_parquet(baseline_run / N.ALLOCATIONS_FILE)
    result = audit(allocations, objective=_objective(baseline_run))
    assert result.monotonicity.expected_zero is True
    assert result.monotonicity.unexplained == 0 and result.envy.unexplained == 0
    # the loss ratio does lower some weights, so raw monotonicity violations exist and are
    # all credited to it (one segment, one set of bounds, no features)
    assert result.monotonicity.raw > 0
    assert dict(result.monotonicity.by_factor)["ratio"] == result.monotonicity.raw
    assert result.ok

    cli = runner.invoke(app, ["audit", str(baseline_run), "--json"])
    assert cli.exit_code == 0, cli.output
    report = strict_json(cli.stdout)
    assert report["ok"] is True
    assert report["monotonicity"]["raw"] == result.monotonicity.raw
    assert report["envy"]["unexplained"] == 0


def test_run_with_every_factor_has_no_unexplained_violations(factors_run: Path) -> None:
    allocations = pl.read_parquet(factors_run / N.ALLOCATIONS_FILE)
    result = audit(allocations, objective=_objective(factors_run))
    for v in (result.monotonicity, result.envy):
        assert v.unexplained == 0, v
        counts = dict(v.by_factor)
        assert counts["segment"] > 0 and counts["features"] > 0
    # some pairs are only told apart by a bound one of the two users sits at
    assert dict(result.monotonicity.by_factor)["bounds"] > 0
    cli = runner.invoke(app, ["audit", str(factors_run)])
    assert cli.exit_code == 0, cli.output
    assert "audit: ok" in cli.stdout


def test_a_swapped_voucher_is_unexplained_and_fails_the_cli(
    baseline_run: Path, tmp_path: Path
) -> None:
    allocations = pl.read_parquet(baseline_run / N.ALLOCATIONS_FILE)
    interior = allocations.filter(pl.col(N.BOUND) == N.BOUND_INTERIOR).sort(N.WEIGHT)
    low, high = interior.row(0, named=True), interior.row(interior.height - 1, named=True)
    swap = {low[N.USER_ID]: high[N.VOUCHER_CENTS], high[N.USER_ID]: low[N.VOUCHER_CENTS]}
    broken = allocations.with_columns(
        pl.col(N.USER_ID)
        .replace_strict(swap, default=pl.col(N.VOUCHER_CENTS))
        .alias(N.VOUCHER_CENTS)
    )
    result = audit(broken, objective=_objective(baseline_run))
    assert not result.ok
    assert result.envy.unexplained > 0
    users = {(e.user_i, e.user_j) for e in result.envy.unexplained_examples}
    assert all(low[N.USER_ID] in pair for pair in users)  # the user paid the top voucher

    # the edited file no longer has the sha256 the manifest recorded: refused, not audited
    copy = tmp_path / "run"
    shutil.copytree(baseline_run, copy)
    broken.write_parquet(copy / N.ALLOCATIONS_FILE)
    cli = runner.invoke(app, ["audit", str(copy)])
    assert cli.exit_code == 2 and "Traceback" not in cli.output
    assert f"{copy / N.ALLOCATIONS_FILE}: its sha256" in cli.output
    assert f"allocator check-budget {copy}" in cli.output
    # with the hash rewritten to match (a tamper that hides itself) the audit finds it: exit 1
    _rehash(copy)
    cli = runner.invoke(app, ["audit", str(copy)])
    assert cli.exit_code == 1
    assert "UNEXPLAINED" in cli.stdout


def _rehash(run: Path) -> None:
    """Record the data files' current sha256 in the manifest."""
    manifest = json.loads((run / N.MANIFEST_FILE).read_text())
    manifest["outputs"] = {
        name: hashlib.sha256((run / name).read_bytes()).hexdigest() for name in manifest["outputs"]
    }
    (run / N.MANIFEST_FILE).write_text(json.dumps(manifest))


def _copy(run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    return copy


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        # a user paid twice: more than the budget in total, and audit used to exit 0
        (lambda a: pl.concat([a, a.head(1)]).sort(N.USER_ID), "appears twice"),
        (lambda a: a.with_columns(-pl.col(N.VOUCHER_CENTS)), "voucher_cents is negative"),
        (
            lambda a: a.with_columns(
                pl.when(pl.int_range(pl.len()) == 3)
                .then(None)
                .otherwise(pl.col(N.VOUCHER_CENTS))
                .alias(N.VOUCHER_CENTS)
            ),
            "voucher_cents is empty",
        ),
    ],
)
@pytest.mark.parametrize("rehash", [False, True])
def test_damaged_allocations_are_refused(
    baseline_run: Path, tmp_path: Path, change, expected: str, rehash: bool
) -> None:
    copy = _copy(baseline_run, tmp_path)
    change(pl.read_parquet(copy / N.ALLOCATIONS_FILE)).write_parquet(copy / N.ALLOCATIONS_FILE)
    if rehash:
        _rehash(copy)
    cli = runner.invoke(app, ["audit", str(copy), "--json"])
    assert cli.exit_code == 2 and cli.stdout == ""  # --json: nothing on stdout but JSON
    assert "Traceback" not in cli.output and "check-budget" in cli.output
    assert (expected if rehash else "its sha256") in cli.output
    # the library refuses such a frame too
    with pytest.raises(InputError, match="allocations.parquet"):
        audit(change(pl.read_parquet(baseline_run / N.ALLOCATIONS_FILE)))


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(b"\xff\xfe{}", "not UTF-8"), (b"[" * 100_000 + b"]" * 100_000, "nested too deeply")],
)
def test_unreadable_manifest_is_refused(
    baseline_run: Path, tmp_path: Path, raw: bytes, expected: str
) -> None:
    copy = _copy(baseline_run, tmp_path)
    (copy / N.MANIFEST_FILE).write_bytes(raw)
    cli = runner.invoke(app, ["audit", str(copy)])
    assert cli.exit_code == 2 and "Traceback" not in cli.output
    assert expected in cli.output and str(copy / N.MANIFEST_FILE) in cli.output


def test_inequality_and_coverage_agree_with_metrics(factors_run: Path) -> None:
    allocations = pl.read_parquet(factors_run / N.ALLOCATIONS_FILE)
    result = audit(allocations, objective=_objective(factors_run))
    usd = allocations[N.VOUCHER_CENTS].to_numpy() / 100.0
    assert result.gini == pytest.approx(metrics.gini(usd), abs=1e-15)
    assert result.top_decile_share == pytest.approx(metrics.top_share(usd, 0.1), abs=1e-15)
    pop, share = metrics.lorenz(usd)
    assert result.lorenz_population[0] == 0.0 and result.lorenz_population[-1] == 1.0
    assert np.allclose(result.lorenz_share, np.interp(result.lorenz_population, pop, share))
    assert np.all(np.diff(result.lorenz_share) >= 0)
    assert result.paid_cents == int(allocations[N.VOUCHER_CENTS].sum())

    summary = metrics.summary(allocations, budget_cents=result.paid_cents, shadow_price=None)
    loss = allocations[N.LOSS_USD].to_numpy()
    assert sum(b.count for b in result.coverage_by_band) == int((loss > 0).sum())
    for band in result.coverage_by_band:
        assert band.median == summary["median_coverage_by_band"][band.label]
        inside = (loss >= band.low_usd) & (loss < band.high_usd)
        cov = usd[inside] / loss[inside]
        if band.count:
            assert band.p10 == pytest.approx(float(np.percentile(cov, 10)))
            assert band.p90 == pytest.approx(float(np.percentile(cov, 90)))
            assert band.p10 <= band.median <= band.p90
    # the coverage cap is 0.3: no one is covered beyond it
    assert max(b.p90 for b in result.coverage_by_band if b.p90 is not None) <= 0.3 + 1e-12


def test_audit_help_and_missing_run() -> None:
    result = runner.invoke(app, ["audit", "--help"])
    assert result.exit_code == 0 and "Example" in result.stdout
    result = runner.invoke(app, ["audit", "/nonexistent/run"])
    assert result.exit_code == 2
