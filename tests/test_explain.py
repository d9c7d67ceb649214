"""Per-user explanations, checked against the run directory and the raw input files.

Two small runs are made with the CLI: a baseline at a scaled-down budget, and one where every
factor is at work (alpha = 2, coverage cap, a binding segment share, a weight feature, users
without net assets excluded). Amounts, prices, bounds and thresholds are recomputed here from
``allocations.parquet``, ``excluded.parquet``, the manifest and the liquidations file.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

import allocator.cli.cmd_explain  # noqa: F401  (registers the explain and audit commands)
from allocator import names as N
from allocator.cli.app import app
from allocator.errors import InputError
from allocator.explain import (
    COUNTED,
    NOT_COVERED,
    OUTSIDE_WINDOW,
    explain_user,
    explain_users,
    shipped_scenarios,
)
from allocator.scenarios import load_scenario
from allocator.synthetic import generate

runner = CliRunner()

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"


def _scaled_baseline() -> str:
    """scenarios/baseline.toml under another name, at a budget scaled to 3,000 users."""
    text = (SCENARIOS / "baseline.toml").read_text()
    # the first "name" is the top-level one (tables such as [solver] have their own)
    text = re.sub(r"(?m)^name\s*=.*$", 'name = "small-baseline"', text, count=1)
    text = re.sub(r"(?m)^total_usd\s*=.*$", "total_usd = 3000000", text, count=1)
    assert 'name = "small-baseline"' in text and "total_usd = 3000000" in text
    return text


BASELINE = _scaled_baseline()

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


def strict_json(text: str):
    def reject(token: str) -> None:
        raise ValueError(f"non-strict JSON token {token}")

    return json.loads(text, parse_constant=reject)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("explain-data") / "small"
    generate(out, users=3000, seed=5)
    return out


def _run(base: Path, data_dir: Path, text: str) -> Path:
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
    return _run(tmp_path_factory.mktemp("baseline"), data_dir, BASELINE)


@pytest.fixture(scope="module")
def factors_run(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    return _run(tmp_path_factory.mktemp("factors"), data_dir, FACTORS)


def _files(run_dir: Path) -> tuple[pl.DataFrame, pl.DataFrame, dict]:
    return (
        pl.read_parquet(run_dir / N.ALLOCATIONS_FILE),
        pl.read_parquet(run_dir / N.EXCLUDED_FILE),
        json.loads((run_dir / N.MANIFEST_FILE).read_text()),
    )


def _price(manifest: dict, segment: str | None) -> float:
    price = manifest["shadow_price"]
    for name in (segment or "").split("+"):
        if name:
            mu_min, mu_max = manifest["segment_prices"][name]
            price += mu_max - mu_min
    return price


def _sample(frame: pl.DataFrame, k: int) -> list[int]:
    ids = frame[N.USER_ID].to_list()
    return ids[:: max(1, len(ids) // k)][:k]


# ------------------------------------------------------------------------------- amounts


@pytest.mark.parametrize("which", ["baseline", "factors"])
def test_interior_vouchers_follow_from_the_closed_form(
    which: str, request: pytest.FixtureRequest
) -> None:
    run_dir = request.getfixturevalue(f"{which}_run")
    alloc, _, manifest = _files(run_dir)
    alpha = manifest["scenario"]["objective"]["alpha"]
    interior = alloc.filter(pl.col(N.BOUND) == N.BOUND_INTERIOR)
    if which == "factors":  # include users whose price carries the segment multiplier
        interior = pl.concat(
            [
                interior.filter(pl.col(N.SEGMENT).is_null()).head(8),
                interior.filter(pl.col(N.SEGMENT) == "large").head(8),
            ]
        )
        assert manifest["segment_prices"]["large"][1] > 0  # the max share binds
    ids = _sample(interior, 16)
    for e in explain_users(run_dir, ids, other_scenarios=False):
        row = alloc.filter(pl.col(N.USER_ID) == e.user_id).row(0, named=True)
        price = _price(manifest, row[N.SEGMENT])
        expected = (row[N.WEIGHT] / price) ** (1.0 / alpha)
        assert e.status == "paid" and e.amount is not None and e.weight is not None
        assert e.amount.binding == "interior"
        assert e.amount.effective_price == pytest.approx(price, rel=1e-12)
        assert e.amount.closed_form_usd == pytest.approx(expected, rel=1e-9)
        gap = abs(row[N.VOUCHER_CENTS] / 100 - expected)
        assert e.amount.difference_usd == pytest.approx(
            row[N.VOUCHER_CENTS] / 100 - expected, abs=1e-9
        )
        if which == "baseline":
            # bounds in whole cents: rounding moves every voucher by less than a cent
            assert gap <= 0.01 + 1e-9
            assert e.amount.reproduces_within_cent is True and not e.notes
        else:
            # a coverage cap is not whole cents: the cents the capped users could not take go
            # to interior users, at most as far as the run's rounded certificate records
            limit = manifest["certificate_rounded"]["best_response_max_usd"]
            assert gap <= max(0.01, limit) + 1e-9
            assert e.amount.reproduces_within_cent is (gap <= 0.01 + 1e-9 * expected)
            assert bool(e.notes) is (not e.amount.reproduces_within_cent)
        assert e.amount.voucher_cents == row[N.VOUCHER_CENTS]
        assert e.weight.weight == pytest.approx(row[N.WEIGHT], rel=1e-12)


def test_weight_factors_add_up_against_the_median_user(factors_run: Path) -> None:
    alloc, _, _ = _files(factors_run)
    ordered = alloc.sort([N.WEIGHT, N.USER_ID])
    median_user = ordered[N.USER_ID][(ordered.height - 1) // 2]
    median_weight = ordered[N.WEIGHT][(ordered.height - 1) // 2]
    for e in explain_users(factors_run, _sample(alloc, 6) + [median_user], other_scenarios=False):
        w = e.weight
        assert w is not None
        row = alloc.filter(pl.col(N.USER_ID) == e.user_id).row(0, named=True)
        names = [f.name for f in w.factors]
        assert names == ["loss", "ratio", "feature:vip_tier", "coverage"]
        assert sum(f.log_contribution for f in w.factors) == pytest.approx(
            math.log(row[N.WEIGHT]), abs=1e-9
        )
        assert w.reference_user == median_user
        assert w.relative_weight == pytest.approx(row[N.WEIGHT] / median_weight, rel=1e-9)
        assert math.prod(f.relative_multiplier for f in w.factors) == pytest.approx(
            w.relative_weight, rel=1e-9
        )
        shares = sum(abs(f.share) for f in w.factors)
        if e.user_id == median_user:
            assert shares == 0 and w.relative_weight == 1.0
        else:
            assert shares == pytest.approx(1.0)
        loss = next(f for f in w.factors if f.name == "loss")
        assert loss.log_contribution == pytest.approx(math.log(row[N.LOSS_USD]))
        ratio = next(f for f in w.factors if f.name == "ratio")
        assert ratio.log_contribution == pytest.approx(0.5 * math.log(min(row[N.LOSS_RATIO], 1.0)))


def test_capped_user_says_cap(baseline_run: Path) -> None:
    alloc, _, _ = _files(baseline_run)
    capped = alloc.filter(pl.col(N.BOUND) == N.BOUND_CAP)
    assert capped.height > 0
    uid = capped[N.USER_ID][0]
    e = explain_user(baseline_run, uid, other_scenarios=False)
    assert e.amount is not None
    assert e.amount.binding == "cap" and e.amount.upper_source == "cap"
    assert e.amount.upper_usd == 6000.0 and e.amount.voucher_cents == 600_000
    assert e.amount.closed_form_usd >= 6000.0 - 0.01  # it would have been more without the cap
    lines = e.lines()
    assert any("set by the cap" in line for line in lines)
    bounds_line = next(line for line in lines if line.strip().startswith("bounds:"))
    assert "(cap)" in bounds_line and "coverage" not in bounds_line


def test_coverage_capped_user_says_coverage_cap(factors_run: Path) -> None:
    alloc, _, _ = _files(factors_run)
    covered = alloc.filter((pl.col(N.BOUND) == N.BOUND_CAP) & (pl.col("upper_cents") < 600_000))
    assert covered.height > 0
    row = covered.row(0, named=True)
    e = explain_user(factors_run, row[N.USER_ID], other_scenarios=False)
    assert e.amount is not None
    assert e.amount.binding == "coverage_cap" and e.amount.upper_source == "coverage_cap"
    assert e.amount.upper_usd == pytest.approx(0.3 * row[N.LOSS_USD])
    assert (
        e.amount.voucher_cents
        == row["upper_cents"]
        == math.floor(0.3 * row[N.LOSS_USD] * 100 + 1e-6)
    )
    assert e.amount.reproduces_within_cent is True
    assert "set by the coverage cap" in "\n".join(e.lines())
    # a user paid the 6,000 cap in the same run says cap, not coverage cap
    plain = alloc.filter((pl.col(N.BOUND) == N.BOUND_CAP) & (pl.col("upper_cents") == 600_000))
    if plain.height:
        other = explain_user(factors_run, plain[N.USER_ID][0], other_scenarios=False)
        assert other.amount is not None and other.amount.binding == "cap"


# ----------------------------------------------------------------------------- liquidations


def test_events_match_the_liquidations_file(baseline_run: Path, data_dir: Path) -> None:
    alloc, excluded, _ = _files(baseline_run)
    events = pl.read_parquet(data_dir / "liquidations.parquet")
    ids = _sample(alloc, 4) + _sample(excluded, 6)
    for e in explain_users(baseline_run, ids, other_scenarios=False):
        mine = events.filter(pl.col(N.USER_ID) == e.user_id)
        assert sum(g.n_events for g in e.events) == mine.height
        by_product = mine.group_by(N.PRODUCT).len()
        for product, n in by_product.iter_rows():
            assert sum(g.n_events for g in e.events if g.product == product) == n
        for g in e.events:
            assert g.status in (COUNTED, OUTSIDE_WINDOW, NOT_COVERED)
            assert (g.status == NOT_COVERED) == (g.product not in N.COVERED_PRODUCTS)
        counted = sum(g.loss_usd or 0.0 for g in e.events if g.status == COUNTED)
        if e.gross_loss_usd is not None:
            assert counted == pytest.approx(e.gross_loss_usd, abs=1e-8)
        assert not e.notes


# ------------------------------------------------------------------------------- exclusions


def _number(x: float) -> str:
    return f"{x:,.2f}"


def test_every_exclusion_reason_shows_its_numbers(factors_run: Path, data_dir: Path) -> None:
    _, excluded, manifest = _files(factors_run)
    rules = manifest["scenario"]["eligibility"]
    first = excluded.group_by(N.REASON).agg(pl.all().first())
    assert set(first[N.REASON]) == set(N.REASONS)  # the data exercises every rule
    users = pl.read_parquet(data_dir / "users.parquet")
    explained = explain_users(factors_run, first[N.USER_ID].to_list(), other_scenarios=False)
    for e, row in zip(explained, first.iter_rows(named=True), strict=True):
        x = e.exclusion
        assert e.status == "excluded" and x is not None
        assert x.reason == row[N.REASON], (x, row)
        assert x.run_detail == row[N.DETAIL]
        assert row[N.REASON] not in x.also_fails
        assert not e.notes  # the rules re-checked here fail first where the pipeline said
        user = users.filter(pl.col(N.USER_ID) == e.user_id)
        reason, text = x.reason, x.detail
        if reason == N.REASON_BELOW_MIN_LOSS:
            assert row[N.LOSS_USD] < rules["min_loss_usd"]
            assert f"loss {_number(row[N.LOSS_USD])} USD < min_loss_usd 50 USD" == text
            short = rules["min_loss_usd"] - row[N.LOSS_USD]
            assert x.distance.startswith(f"{_number(short)} USD short")
        elif reason == N.REASON_BELOW_LOSS_RATIO:
            ratio = row[N.LOSS_USD] / row[N.NET_ASSETS_USD]
            assert ratio < 0.30
            assert text == (
                f"loss ratio {ratio:.4f} < 0.30 (loss {_number(row[N.LOSS_USD])} / net assets "
                f"{_number(row[N.NET_ASSETS_USD])})"
            )
            need = 0.30 * row[N.NET_ASSETS_USD]
            assert (
                f"a loss of {_number(need)} USD ({_number(need - row[N.LOSS_USD])} more)"
                in x.distance
            )
        elif reason == N.REASON_NONPOSITIVE_NET_ASSETS:
            assert row[N.NET_ASSETS_USD] <= 0
            assert text == f"net assets {_number(row[N.NET_ASSETS_USD])} USD <= 0"
        elif reason == N.REASON_RESTRICTED_REGION:
            assert text == f"region {user[N.REGION][0]} is restricted"
            assert user[N.REGION][0] in rules["restricted_regions"]
        elif reason == N.REASON_KYC:
            assert user[N.KYC_STATUS][0] != "verified"
            assert text == f"kyc_status is '{user[N.KYC_STATUS][0]}'"
        elif reason == N.REASON_DEPEG:
            assert text.startswith(f"received {_number(user[N.DEPEG_COMP_USD][0])} USD")
        elif reason == N.REASON_OUTSIDE_WINDOW:
            assert "2025-10-10T00:00:00Z, 2025-10-12T00:00:00Z" in text
            assert x.distance and (
                "before the start" in x.distance or "after the end" in x.distance
            )
            assert all(g.status != COUNTED for g in e.events)
        elif reason == N.REASON_PRODUCT_NOT_COVERED:
            assert all(g.status != COUNTED for g in e.events)
            assert any(g.product in text for g in e.events if g.status == NOT_COVERED)
        elif reason == N.REASON_NO_SNAPSHOT:
            assert "not in the snapshot" in text and e.net_assets_usd is None
        elif reason == N.REASON_NO_USER_RECORD:
            assert "not in" in text and "users" in text and user.height == 0
        lines = "\n".join(e.lines())
        assert text in lines and reason in lines


# --------------------------------------------------------------------------- other scenarios


def test_other_scenarios_run_at_this_budget(baseline_run: Path) -> None:
    alloc, excluded, _ = _files(baseline_run)
    interior = alloc.filter(pl.col(N.BOUND) == N.BOUND_INTERIOR)
    ids = [interior[N.USER_ID][0], interior[N.USER_ID][-1], excluded[N.USER_ID][0]]
    paid_a, paid_b, out = explain_users(baseline_run, ids)
    files = shipped_scenarios()
    assert files and not any(p.stem.startswith("loans") for p in files)
    shipped = [load_scenario(p).name for p in files]
    for e in (paid_a, paid_b, out):
        assert e.other_scenarios is not None
        assert [o.scenario for o in e.other_scenarios] == shipped
        assert all(o.budget_usd == 3_000_000 for o in e.other_scenarios)
    # baseline.toml at this run's budget is this run's scenario: the same amounts
    same = {o.scenario: o for o in paid_a.other_scenarios}["baseline"]
    assert same.status == "paid" and same.voucher_cents == paid_a.amount.voucher_cents
    assert same.shipped_budget_usd == 300_000_000
    # equal split pays every user the same, to the cent
    a = {o.scenario: o for o in paid_a.other_scenarios}["equal_split"].voucher_cents
    b = {o.scenario: o for o in paid_b.other_scenarios}["equal_split"].voucher_cents
    assert abs(a - b) <= 1
    reason = excluded[N.REASON][0]
    assert {o.scenario: o for o in out.other_scenarios}["baseline"].reason == reason


# ------------------------------------------------------------------------------------- CLI


def test_cli_text_for_an_interior_user(baseline_run: Path) -> None:
    alloc, _, _ = _files(baseline_run)
    uid = alloc.filter(pl.col(N.BOUND) == N.BOUND_INTERIOR)[N.USER_ID][0]
    result = runner.invoke(app, ["explain", str(uid), "--run", str(baseline_run), "--no-others"])
    assert result.exit_code == 0, result.output
    assert f"user {uid}" in result.stdout
    assert "closed form (w / price)^(1/alpha)" in result.stdout
    assert "reproduces it within a cent" in result.stdout
    assert "other shipped scenarios" not in result.stdout


def test_cli_json_is_strict(baseline_run: Path) -> None:
    alloc, excluded, _ = _files(baseline_run)
    no_assets = alloc.filter(pl.col(N.LOSS_RATIO).is_infinite())
    assert no_assets.height > 0  # eligible with zero or negative net assets: ratio +inf
    for uid in (no_assets[N.USER_ID][0], excluded[N.USER_ID][0]):
        result = runner.invoke(
            app, ["explain", str(uid), "--run", str(baseline_run), "--json", "--no-others"]
        )
        assert result.exit_code == 0, result.output
        report = strict_json(result.stdout)
        assert report["user_id"] == uid
        assert report["other_scenarios"] is None
    assert report["status"] == "excluded" and report["exclusion"]["reason"] == excluded[N.REASON][0]
    paid = strict_json(
        runner.invoke(
            app,
            [
                "explain",
                str(no_assets[N.USER_ID][0]),
                "--run",
                str(baseline_run),
                "--json",
                "--no-others",
            ],
        ).stdout
    )
    assert paid["loss_ratio"] == "inf"
    assert paid["amount"]["voucher_cents"] == no_assets[N.VOUCHER_CENTS][0]


def test_unknown_user_is_an_input_error(baseline_run: Path) -> None:
    result = runner.invoke(app, ["explain", "424242", "--run", str(baseline_run), "--no-others"])
    assert result.exit_code == 2
    assert "not in the liquidations file" in result.output
    assert "Traceback" not in result.output
    with pytest.raises(InputError, match="not in the liquidations file"):
        explain_user(baseline_run, 424242, other_scenarios=False)


def test_changed_inputs_are_refused(tmp_path: Path, data_dir: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(data_dir, data)
    run_dir = _run(tmp_path, data, BASELINE)
    alloc, _, _ = _files(run_dir)
    uid = alloc[N.USER_ID][0]
    events = pl.read_parquet(data / "liquidations.parquet")
    events.with_columns(
        pl.when(pl.col(N.USER_ID) == uid)
        .then(pl.col(N.REALISED_LOSS) * 2)
        .otherwise(pl.col(N.REALISED_LOSS))
        .alias(N.REALISED_LOSS)
    ).write_parquet(data / "liquidations.parquet")
    result = runner.invoke(app, ["explain", str(uid), "--run", str(run_dir), "--no-others"])
    assert result.exit_code == 2
    assert "changed since the run" in result.output
    # another user is untouched and still explained
    other = alloc[N.USER_ID][1]
    assert (
        runner.invoke(app, ["explain", str(other), "--run", str(run_dir), "--no-others"]).exit_code
        == 0
    )


def test_explain_help_has_an_example() -> None:
    result = runner.invoke(app, ["explain", "--help"])
    assert result.exit_code == 0 and "Example" in result.stdout
