"""Per-user explanations, checked against the run directory and the raw input files.

Small runs are made with the CLI: a baseline at a scaled-down budget, one where every factor is
at work (alpha = 2, coverage cap, a binding segment share, a weight feature, users without net
assets excluded), the shipped phase-in scenario at a scaled-down budget, and a phase-in run with
a small cap and a coverage cap (so that floors are lowered to the phased cap and coverage caps
compete with it). Amounts, prices, bounds, phase factors and thresholds are recomputed here from
``allocations.parquet``, ``excluded.parquet``, the manifest and the liquidations file.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
from pathlib import Path

import polars as pl
import pytest
from clihelp import strict_json
from typer.testing import CliRunner

import allocator.cli.cmd_explain  # noqa: F401  (registers the explain and audit commands)
from allocator import names as N
from allocator.analysis.explain import (
    COUNTED,
    NOT_COVERED,
    OUTSIDE_WINDOW,
    explain_user,
    explain_users,
    shipped_scenarios,
)
from allocator.cli.app import app
from allocator.data.synthetic import generate
from allocator.errors import InputError
from allocator.settings.scenarios import load_scenario

runner = CliRunner()

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"


def _scaled_baseline() -> str:
    """scenarios/baseline.toml under another name, at a budget scaled to 3,000 users."""
    text = (SCENARIOS / "baseline.toml").read_text()
    # the first "name" is the top-level one (tables such as [solver] have their own)
    text = re.sub(r"(?m)^name\s*=.*$", 'name = "small-baseline"', text, count=1)
    text = re.sub(r"(?m)^total_usd\s*=.*$", "total_usd = 3000000", text, count=1)
    assert 'name = "small-baseline"' in text and "total_usd = 3000000" in text
    return text


BASELINE = _scaled_baseline()


def _scaled_phase_in() -> str:
    """scenarios/phase_in.toml under another name, at a budget scaled to 3,000 users."""
    text = (SCENARIOS / "phase_in.toml").read_text()
    text = re.sub(r"(?m)^name\s*=.*$", 'name = "small-phase-in"', text, count=1)
    text = re.sub(r"(?m)^total_usd\s*=.*$", "total_usd = 3000000", text, count=1)
    assert "phase_in_loss_usd = 25.0" in text and "phase_in_ratio = 0.20" in text
    return text


PHASE_IN = _scaled_phase_in()

# A cap of 100 USD makes the phased cap fall below the 10 USD floor for factors under 0.1, and
# a coverage cap of 0.5 x loss binds below the phased cap for many band users.
PHASE_SMALL_CAP = """
name = "small-phase-cap"
[eligibility]
phase_in_loss_usd = 25.0
phase_in_ratio = 0.2
[objective]
alpha = 1.0
loss_exponent = 1.0
ratio_exponent = 1.0
[bounds]
floor_usd = 10.0
cap_usd = 100.0
coverage_cap = 0.5
[budget]
total_usd = 80000
"""

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


@pytest.fixture(scope="module")
def phase_run(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    return _run(tmp_path_factory.mktemp("phase"), data_dir, PHASE_IN)


@pytest.fixture(scope="module")
def phase_cap_run(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    return _run(tmp_path_factory.mktemp("phase-cap"), data_dir, PHASE_SMALL_CAP)


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
    bounds_line = next(line for line in lines if line.strip().startswith("bounds"))
    assert "(cap)" in bounds_line and "coverage" not in bounds_line


def test_coverage_capped_user_says_coverage_cap(factors_run: Path) -> None:
    alloc, _, _ = _files(factors_run)
    covered = alloc.filter((pl.col(N.BOUND) == N.BOUND_CAP) & (pl.col("upper_cents") < 600_000))
    assert covered.height > 0
    row = covered.row(0, named=True)
    e = explain_user(factors_run, row[N.USER_ID], other_scenarios=False)
    assert e.amount is not None
    assert e.amount.binding == "coverage_cap" and e.amount.upper_source == "coverage_cap"
    # the bound is the whole cents that can be paid: 0.3 x loss floored to the cent
    floored = math.floor(0.3 * row[N.LOSS_USD] * 100 + 1e-6)
    assert e.amount.upper_cents == e.amount.voucher_cents == row["upper_cents"] == floored
    assert e.amount.upper_usd == floored / 100
    assert e.amount.reproduces_within_cent is True
    assert "set by the coverage cap" in "\n".join(e.lines())
    # a user paid the 6,000 cap in the same run says cap, not coverage cap
    plain = alloc.filter((pl.col(N.BOUND) == N.BOUND_CAP) & (pl.col("upper_cents") == 600_000))
    if plain.height:
        other = explain_user(factors_run, plain[N.USER_ID][0], other_scenarios=False)
        assert other.amount is not None and other.amount.binding == "cap"


def test_coverage_cap_is_shown_as_payable_cents(factors_run: Path) -> None:
    """A coverage cap such as 0.3 x 9.1833 = 2.755 shows as 2.75, the amount paid, not 2.76."""
    alloc, _, _ = _files(factors_run)
    capped = alloc.filter(
        (pl.col(N.BOUND) == N.BOUND_CAP) & (pl.col("upper_cents") < 600_000)
    ).with_columns(raw=0.3 * pl.col(N.LOSS_USD))
    # users whose raw cap would round up to a cent that cannot be paid
    rounds_up = capped.filter(pl.col("raw").round(2) * 100 > pl.col("upper_cents") + 0.5)
    assert rounds_up.height > 0
    row = rounds_up.row(0, named=True)
    e = explain_user(factors_run, row[N.USER_ID], other_scenarios=False)
    bounds_line = next(line for line in e.lines() if line.strip().startswith("bounds"))
    paid = f"{row['upper_cents'] // 100:,}.{row['upper_cents'] % 100:02d}"
    assert f"upper {paid} " in bounds_line
    assert f"{row['raw']:,.2f}" != paid and f"upper {row['raw']:,.2f}" not in bounds_line
    formula = next(line for line in e.lines() if line.strip().startswith("upper bound ="))
    assert formula.endswith(f"= {paid}") and "coverage_cap 0.3 x loss" in formula


# ----------------------------------------------------------------------------- phase-in


def _cents(x: float) -> int:
    """Floor to the cent with the tolerance of allocator.kernel.money.bounds_in_cents."""
    return math.floor(x * 100 + 1e-6)


def _ramp(x: float, low: float, high: float) -> float:
    return 1.0 if x >= high else min(1.0, max(0.0, (x - low) / (high - low)))


def _amount_in(text: str, prefix: str) -> float:
    match = re.search(re.escape(prefix) + r"\s*([0-9][0-9,]*\.[0-9]+)", text)
    assert match, (prefix, text)
    return float(match.group(1).replace(",", ""))


def test_phase_in_excluded_below_the_loss_band(phase_run: Path) -> None:
    _, excluded, manifest = _files(phase_run)
    rules = manifest["scenario"]["eligibility"]
    low = rules["phase_in_loss_usd"]
    below = excluded.filter(pl.col(N.REASON) == N.REASON_BELOW_MIN_LOSS)
    ratio = pl.col(N.LOSS_RATIO)
    # the review's case: a ratio inside its band (0.20, 0.30) is not a failure of the ratio rule
    in_ratio_band = below.filter(
        (ratio > rules["phase_in_ratio"]) & (ratio < rules["min_loss_ratio"])
    )
    under_ratio_band = below.filter(ratio <= rules["phase_in_ratio"])
    assert in_ratio_band.height > 0 and under_ratio_band.height > 0
    rows = pl.concat(
        [in_ratio_band.head(4), under_ratio_band.head(3), below.filter(ratio.is_null()).head(1)]
    )
    for e, row in zip(
        explain_users(phase_run, rows[N.USER_ID].to_list(), other_scenarios=False),
        rows.iter_rows(named=True),
        strict=True,
    ):
        x = e.exclusion
        assert x is not None and x.reason == N.REASON_BELOW_MIN_LOSS and not e.notes
        assert row[N.LOSS_USD] <= low
        assert x.rule.startswith("eligibility.phase_in_loss_usd = 25 ")
        assert "must be above 25 USD" in x.rule
        shown = _amount_in(x.detail, "loss")
        assert shown <= low and abs(shown - row[N.LOSS_USD]) < 0.005
        assert x.detail.endswith("USD <= 25 USD, the lower end of the phase-in band")
        assert "50" not in x.detail  # not the hard threshold
        short = _amount_in(x.distance, "")
        assert short == pytest.approx(low - row[N.LOSS_USD], abs=0.005)
        assert "short of the band's lower end" in x.distance
        # the other failures use the band too: ratio <= 0.20 fails, a ratio in the band does not
        r = row[N.LOSS_RATIO]
        expected = (
            (N.REASON_NO_SNAPSHOT,)
            if r is None
            else (N.REASON_BELOW_LOSS_RATIO,)
            if r <= rules["phase_in_ratio"]
            else ()
        )
        assert x.also_fails == expected, (row, x)
        # the run's own detail says the same threshold
        assert f"<= {low:g} USD" in row[N.DETAIL]


def test_phase_in_excluded_below_the_ratio_band(phase_run: Path) -> None:
    _, excluded, manifest = _files(phase_run)
    rules = manifest["scenario"]["eligibility"]
    low = rules["phase_in_ratio"]
    rows = (
        excluded.filter(pl.col(N.REASON) == N.REASON_BELOW_LOSS_RATIO)
        .sort(N.LOSS_RATIO, descending=True)
        .head(5)
    )
    assert rows.height == 5
    for e, row in zip(
        explain_users(phase_run, rows[N.USER_ID].to_list(), other_scenarios=False),
        rows.iter_rows(named=True),
        strict=True,
    ):
        x = e.exclusion
        assert x is not None and not e.notes and x.also_fails == ()
        assert row[N.LOSS_USD] / row[N.NET_ASSETS_USD] <= low
        assert x.rule.startswith("eligibility.phase_in_ratio = 0.20 ")
        shown = _amount_in(x.detail, "loss ratio")
        assert shown <= low and abs(shown - row[N.LOSS_RATIO]) < 5e-5
        assert "the lower end of the phase-in band" in x.detail and "0.30 (" not in x.detail
        need = low * row[N.NET_ASSETS_USD]
        assert f"a loss above {need:,.2f} USD" in x.distance
        assert f"net assets below {row[N.LOSS_USD] / low:,.2f} USD" in x.distance


def _check_phase(e, row: dict, rules: dict, bounds: dict) -> None:
    """Everything an eligible user's explanation says about the band, recomputed from the row."""
    loss, ratio = row[N.LOSS_USD], row[N.LOSS_RATIO]
    loss_f = _ramp(loss, rules["phase_in_loss_usd"], rules["min_loss_usd"])
    ratio_f = _ramp(ratio, rules["phase_in_ratio"], rules["min_loss_ratio"])
    p = e.phase_in
    assert p is not None and e.amount is not None and e.weight is not None
    assert p.factor == row[N.PHASE_FACTOR] == pytest.approx(loss_f * ratio_f, rel=1e-12)
    assert (p.in_loss_band, p.in_ratio_band) == (
        loss < rules["min_loss_usd"],
        ratio < rules["min_loss_ratio"],
    )
    # the phase factor is its own weight factor, log(phi), and the factors add up to log w
    names = [f.name for f in e.weight.factors]
    assert names == ["loss", "ratio", "coverage", "phase"]
    phase = e.weight.factors[-1]
    assert phase.log_contribution == pytest.approx(math.log(row[N.PHASE_FACTOR]), rel=1e-12)
    assert "phase = " in phase.formula and "(None)" not in phase.formula
    assert sum(f.log_contribution for f in e.weight.factors) == pytest.approx(
        math.log(row[N.WEIGHT]), abs=1e-9
    )
    # the cap scaled by the factor, floored to the cent, at least one cent; the floor below it
    cap, floor, kappa = bounds["cap_usd"], bounds["floor_usd"], bounds.get("coverage_cap")
    scaled = _cents(cap * p.factor)
    plain = _cents(cap) if kappa is None else min(_cents(cap), _cents(kappa * loss))
    upper = max(min(scaled, plain), min(plain, max(_cents(floor), 1)))
    assert e.amount.upper_cents == p.upper_cents == row["upper_cents"] == upper
    assert e.amount.lower_cents == row["lower_cents"] == min(_cents(floor), upper)
    assert p.cap_raised_to_floor is (min(scaled, plain) < upper and _cents(floor) >= 1)
    coverage_binds = kappa is not None and _cents(kappa * loss) < min(_cents(cap), scaled)
    assert e.amount.upper_source == ("coverage_cap" if coverage_binds else "phased_cap")
    text = "\n".join(e.lines())
    if p.in_band:
        assert f"in the phase-in band (factor {p.factor:.4g})" in text.splitlines()[1]
        where = " and ".join(
            n for n, inside in (("loss", p.in_loss_band), ("loss-ratio", p.in_ratio_band)) if inside
        )
        assert f"in the {where} phase-in band" in text
        if p.in_loss_band:
            assert f"(loss {loss:,.2f} - 25) / (50 - 25)" in p.formula or loss - 25 < 0.005
        if p.in_ratio_band:
            assert "- 0.20) / (0.30 - 0.20)" in p.formula
        assert p.formula.endswith(f"= {p.factor:.4g}")
        assert f"at least the floor = {upper // 100:,}.{upper % 100:02d} USD" in text
        assert ("raised to the floor" in text) is p.cap_raised_to_floor


def test_phase_in_eligible_users_in_the_bands(phase_run: Path) -> None:
    alloc, _, manifest = _files(phase_run)
    rules, bounds = manifest["scenario"]["eligibility"], manifest["scenario"]["bounds"]
    loss_band = alloc.filter(pl.col(N.LOSS_USD) < rules["min_loss_usd"])
    ratio_band = alloc.filter(
        (pl.col(N.LOSS_RATIO) < rules["min_loss_ratio"]) & (pl.col(N.LOSS_USD) >= 50)
    )
    both = loss_band.filter(pl.col(N.LOSS_RATIO) < rules["min_loss_ratio"])
    past = alloc.filter(pl.col(N.PHASE_FACTOR) == 1.0)
    assert min(loss_band.height, ratio_band.height, both.height, past.height) > 0
    rows = pl.concat([loss_band.head(4), ratio_band.head(4), both.head(3), past.head(2)])
    for e, row in zip(
        explain_users(phase_run, rows[N.USER_ID].to_list(), other_scenarios=False),
        rows.iter_rows(named=True),
        strict=True,
    ):
        assert e.status == "paid" and not e.notes
        if row[N.PHASE_FACTOR] == 1.0:
            assert e.phase_in is not None and not e.phase_in.in_band
            assert e.weight.factors[-1].log_contribution == 0.0
            assert e.amount.upper_cents == row["upper_cents"] == 600_000
            assert "past both thresholds" in "\n".join(e.lines())
            continue
        _check_phase(e, row, rules, bounds)
        # the voucher follows from the closed form within the scaled bounds
        assert e.amount.reproduces_within_cent is True
    # the JSON carries the band as well, strictly
    report = strict_json(
        runner.invoke(
            app,
            ["explain", str(both[N.USER_ID][0]), "--run", str(phase_run), "--json", "--no-others"],
        ).stdout
    )
    assert report["phase_in"]["factor"] == both[N.PHASE_FACTOR][0]
    assert report["phase_in"]["loss_band_usd"] == [25.0, 50.0]
    assert report["phase_in"]["in_loss_band"] and report["phase_in"]["in_ratio_band"]


def test_phase_in_floor_kept_and_coverage_cap(phase_cap_run: Path) -> None:
    alloc, _, manifest = _files(phase_cap_run)
    rules, bounds = manifest["scenario"]["eligibility"], manifest["scenario"]["bounds"]
    banded = alloc.filter(pl.col(N.PHASE_FACTOR) < 1)
    # nobody in the band is paid a positive amount below the floor: a phased cap below it is
    # raised to it (the fixture's floor is USD 10)
    assert banded.filter(pl.col("lower_cents") < 1000).height == 0
    assert banded[N.VOUCHER_CENTS].min() >= 1000
    lowered = banded.filter(pl.col("upper_cents") == 1000)
    coverage = banded.filter(pl.col("upper_cents") < (100 * pl.col(N.PHASE_FACTOR) * 100).floor())
    assert lowered.height > 0 and coverage.height > 0
    rows = pl.concat([lowered.head(4), coverage.head(4)])
    for e, row in zip(
        explain_users(phase_cap_run, rows[N.USER_ID].to_list(), other_scenarios=False),
        rows.iter_rows(named=True),
        strict=True,
    ):
        assert not e.notes
        _check_phase(e, row, rules, bounds)
        if e.phase_in.cap_raised_to_floor:
            # lower = upper = the floor: the phased cap was below it
            assert row["lower_cents"] == row["upper_cents"] == row[N.VOUCHER_CENTS] == 1000
            assert e.amount.binding == "floor" and row[N.BOUND] == N.BOUND_FLOOR


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
    # constrained equal awards pays every user one level, or their loss if it is smaller
    a = {o.scenario: o for o in paid_a.other_scenarios}["cea"].voucher_cents
    b = {o.scenario: o for o in paid_b.other_scenarios}["cea"].voucher_cents
    assert a is not None and b is not None
    loss_cents = {
        uid: math.floor(loss * 100 + 1e-6)
        for uid, loss in alloc.select(N.USER_ID, N.LOSS_USD).iter_rows()
    }
    level = max(a, b)
    for cents, uid in ((a, ids[0]), (b, ids[1])):
        assert abs(cents - level) <= 1 or cents == loss_cents[uid]
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
    # the input's sha256 is checked before any user is looked at: every user is refused, those
    # whose numbers changed and the others alike, and the message names the file
    for user in (uid, alloc[N.USER_ID][1]):
        result = runner.invoke(app, ["explain", str(user), "--run", str(run_dir), "--no-others"])
        assert result.exit_code == 2 and "Traceback" not in result.output
        assert "changed since the run" in result.output
        assert f"liquidations file {data / 'liquidations.parquet'}" in result.output
    with pytest.raises(InputError, match="changed since the run"):
        explain_user(run_dir, alloc[N.USER_ID][1], other_scenarios=False)


def _rehash(run: Path) -> None:
    """Record the data files' current sha256 in the manifest."""
    manifest = json.loads((run / N.MANIFEST_FILE).read_text())
    manifest["outputs"] = {
        name: hashlib.sha256((run / name).read_bytes()).hexdigest() for name in manifest["outputs"]
    }
    (run / N.MANIFEST_FILE).write_text(json.dumps(manifest))


def _damage_allocations(change):
    def damage(run: Path) -> None:
        frame = pl.read_parquet(run / N.ALLOCATIONS_FILE)
        change(frame).write_parquet(run / N.ALLOCATIONS_FILE)
        _rehash(run)  # even with matching hashes, the columns are checked

    return damage


def _first_cents(value):
    return pl.when(pl.int_range(pl.len()) == 0).then(value).otherwise(pl.col(N.VOUCHER_CENTS))


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda r: (r / N.MANIFEST_FILE).write_bytes(b"\xff{}"), "not UTF-8"),
        (
            lambda r: (r / N.MANIFEST_FILE).write_bytes(b"[" * 100_000 + b"]" * 100_000),
            "nested too deeply",
        ),
        (
            _damage_allocations(
                lambda a: a.with_columns(_first_cents(-100).alias(N.VOUCHER_CENTS))
            ),
            "column voucher_cents is negative",
        ),
        (
            _damage_allocations(
                lambda a: a.with_columns(
                    _first_cents(pl.lit(None, pl.Int64)).alias(N.VOUCHER_CENTS)
                )
            ),
            "column voucher_cents is empty",
        ),
        (_damage_allocations(lambda a: a.drop(N.WEIGHT)), "column weight is missing"),
        (lambda r: (r / N.PAYOUTS_FILE).write_text("user_id,amount\n"), "payouts.csv: its sha256"),
    ],
)
def test_damaged_run_directory_is_refused(
    baseline_run: Path, tmp_path: Path, damage, expected: str
) -> None:
    run = tmp_path / "run"
    shutil.copytree(baseline_run, run)
    uid = pl.read_parquet(run / N.ALLOCATIONS_FILE)[N.USER_ID][0]
    damage(run)
    result = runner.invoke(app, ["explain", str(uid), "--run", str(run), "--no-others", "--json"])
    assert result.exit_code == 2 and result.stdout == ""
    assert "Traceback" not in result.output
    assert expected in result.output and f"allocator check-budget {run}" in result.output


def test_user_ids_outside_64_bits_are_not_in_the_run(baseline_run: Path) -> None:
    for uid in ("99999999999999999999999", str(2**63), str(-(2**63) - 1)):
        result = runner.invoke(app, ["explain", uid, "--run", str(baseline_run), "--no-others"])
        assert result.exit_code == 2 and "Traceback" not in result.output
        assert f"user {uid} is not in this run" in result.output
    with pytest.raises(InputError, match="64-bit"):
        explain_user(baseline_run, 2**64, other_scenarios=False)
    # a mistyped option is named as one, not taken for a user id
    result = runner.invoke(app, ["explain", "--jsn", "--run", str(baseline_run)])
    assert result.exit_code == 2 and "no such option '--jsn'" in result.output
    result = runner.invoke(app, ["explain", "12x", "--run", str(baseline_run)])
    assert result.exit_code == 2 and "whole number" in result.output


def test_negative_user_ids_are_explained(tmp_path: Path, data_dir: Path) -> None:
    """A negative id is valid data; `explain -5` and `explain --run R -- -5` both reach it."""
    data = tmp_path / "data"
    shutil.copytree(data_dir, data)
    uid = pl.read_parquet(data / "users.parquet")[N.USER_ID].sort()[0]
    for stem in ("liquidations", "snapshot", "users"):
        frame = pl.read_parquet(data / f"{stem}.parquet")
        frame.with_columns(
            pl.when(pl.col(N.USER_ID) == uid).then(-pl.col(N.USER_ID)).otherwise(pl.col(N.USER_ID))
        ).write_parquet(data / f"{stem}.parquet")
    run_dir = _run(tmp_path, data, BASELINE)
    alloc, excluded, _ = _files(run_dir)
    assert -uid in alloc[N.USER_ID].to_list() + excluded[N.USER_ID].to_list()
    for args in (
        [str(-uid), "--run", str(run_dir), "--no-others", "--json"],
        ["--run", str(run_dir), "--no-others", "--json", "--", str(-uid)],
    ):
        result = runner.invoke(app, ["explain", *args])
        assert result.exit_code == 0, result.output
        assert strict_json(result.stdout)["user_id"] == -uid
    help_text = " ".join(runner.invoke(app, ["explain", "--help"]).stdout.split())
    assert "allocator explain -5 --run" in help_text and "-- -5" in help_text


def test_explain_help_has_an_example() -> None:
    result = runner.invoke(app, ["explain", "--help"])
    assert result.exit_code == 0 and "Example" in result.stdout
