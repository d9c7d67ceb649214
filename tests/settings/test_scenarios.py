"""Voucher scenarios: shipped files, range validation, predicates, to_dict and overrides."""

from __future__ import annotations

import json
from dataclasses import fields, is_dataclass, replace
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from allocator import names as N
from allocator.errors import ScenarioError
from allocator.settings.models import (
    ANNOUNCED_AT,
    SNAPSHOT_AT,
    WINDOW_END,
    WINDOW_START,
    BoundsSpec,
    BudgetSpec,
    EligibilityRules,
    ObjectiveSpec,
    PayoutSpec,
    Scenario,
    SegmentSpec,
)
from allocator.settings.scenarios import (
    SWEEPABLE,
    load_scenario,
    parse_scenario,
    scenario_to_dict,
    validate_scenario,
    weight_feature_columns,
    with_overrides,
)

SCENARIO_DIR = Path(__file__).resolve().parents[2] / "scenarios"
VOUCHER_FILES = sorted(p for p in SCENARIO_DIR.glob("*.toml") if not p.name.startswith("loans"))
EXPECTED = {
    "baseline",
    "proportional",
    "cea",
    "cel",
    "talmud",
    "mt_gox",
    "ftx_convenience",
    "ratio_weighted",
    "retail_first",
    "max_min",
    "phase_in",
}
#: Order of magnitude of the eligible population on the built-in data.
ELIGIBLE_USERS = 120_000


def scenario_error(tmp_path: Path, text: str) -> str:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    return str(info.value)


# --- shipped files ----------------------------------------------------------------------------


def test_all_voucher_scenarios_are_shipped():
    assert EXPECTED <= {p.stem for p in VOUCHER_FILES}


@pytest.mark.parametrize("path", VOUCHER_FILES, ids=lambda p: p.stem)
def test_shipped_scenario_loads_and_is_feasible_at_scale(path):
    s = load_scenario(path)
    assert s.name == path.stem
    assert s.description
    # Each file opens with a comment block explaining intent and reasoning.
    head = path.read_text().splitlines()[:5]
    assert all(line.startswith("#") for line in head)
    # Feasible for about 120k eligible users: floors fit in the budget, caps can absorb it,
    # and every segment's minimum is reachable by its members at the cap.
    assert ELIGIBLE_USERS * s.bounds.floor_usd < 0.1 * s.budget.total_usd
    assert ELIGIBLE_USERS * s.bounds.cap_usd > s.budget.total_usd
    assert (
        s.bounds.coverage_cap is None
        or s.bounds.coverage_cap * s.eligibility.min_loss_usd >= s.bounds.floor_usd
    )
    for seg in s.segments:
        if seg.min_share:
            assert seg.min_share * s.budget.total_usd / s.bounds.cap_usd < ELIGIBLE_USERS / 2


def test_baseline_is_the_announced_programme():
    s = load_scenario(SCENARIO_DIR / "baseline.toml")
    e = s.eligibility
    assert (e.window_start, e.window_end, e.snapshot_at) == (WINDOW_START, WINDOW_END, SNAPSHOT_AT)
    assert set(e.products) == set(N.COVERED_PRODUCTS)
    assert (e.min_loss_usd, e.min_loss_ratio, e.depeg_policy) == (50.0, 0.30, "exclude")
    assert (s.bounds.floor_usd, s.bounds.cap_usd, s.bounds.coverage_cap) == (4.0, 6000.0, None)
    assert (s.budget.total_usd, s.budget.exhaust) == (300_000_000.0, True)
    o = s.objective
    assert o.alpha == 1.0 and o.form == "voucher"
    assert o.loss_exponent > 0 and o.ratio_exponent > 0  # "liquidation loss amount, loss ratio"
    assert s.payouts.announced_at == ANNOUNCED_AT
    assert (s.payouts.start_within_hours, s.payouts.finish_within_hours) == (24.0, 96.0)
    # The baseline spells out the defaults of allocator.settings.models: nothing differs from them
    # except the weighting, which the announcement leaves open.
    assert s.eligibility == EligibilityRules()
    assert s.bounds == BoundsSpec() and s.budget == BudgetSpec() and s.payouts == PayoutSpec()


def test_comparison_scenarios_encode_their_rules():
    get = {p.stem: load_scenario(p) for p in VOUCHER_FILES}
    # each claims-rule scenario names its rule, with the parameter it needs, by a short name
    rules = {
        "proportional": ("proportional", None, None),
        "cea": ("constrained_equal_awards", None, None),
        "cel": ("constrained_equal_losses", None, None),
        "talmud": ("talmud", None, None),
        "mt_gox": ("base_then_pro_rata", 100.0, None),
        "ftx_convenience": ("convenience_class", None, 1000.0),
    }
    for stem, (rule, base, threshold) in rules.items():
        o = get[stem].objective
        assert (o.rule, o.base_usd, o.threshold_usd) == (rule, base, threshold), stem
        assert not get[stem].segments
    mm = get["max_min"].objective
    assert mm.rule == "max_min" and mm.form == "coverage"
    rw = get["ratio_weighted"]
    assert rw.objective.loss_exponent == 0.0 and rw.objective.ratio_exponent > 0
    # alpha-fair scenarios that could pay more than the loss cap coverage at the loss
    assert rw.bounds.coverage_cap == 1.0 and get["retail_first"].bounds.coverage_cap == 1.0
    (retail,) = get["retail_first"].segments
    assert retail.min_share == 0.4 and retail.where.replace(" ", "") == "loss_usd<10000"
    assert get["retail_first"].objective.loss_exponent < 1.0  # the smooth taper
    for p in VOUCHER_FILES:  # every alpha-fair file keeps the announced floor and cap
        assert (get[p.stem].bounds.floor_usd, get[p.stem].bounds.cap_usd) == (4.0, 6000.0)


# --- range validation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key", "allowed"),
    [
        ("[objective]\nalpha = -0.5", "objective.alpha", "0 <= alpha <= 100"),
        ("[objective]\nalpha = 101", "objective.alpha", "0 <= alpha <= 100"),
        ("[objective]\nloss_exponent = 11", "objective.loss_exponent", "-10 to 10"),
        ("[objective]\nratio_cap = 0", "objective.ratio_cap", "> 0"),
        ("[bounds]\nfloor_usd = -1", "bounds.floor_usd", ">= 0"),
        ("[bounds]\nfloor_usd = 10\ncap_usd = 10", "bounds.cap_usd", "> bounds.floor_usd"),
        ("[bounds]\ncoverage_cap = 0", "bounds.coverage_cap", "> 0"),
        ("[budget]\ntotal_usd = 0", "budget.total_usd", "0 < total_usd"),
        ("[budget]\ntotal_usd = 1000.005", "budget.total_usd", "whole cents"),
        ("[eligibility]\nmin_loss_usd = -5", "eligibility.min_loss_usd", ">= 0"),
        ("[eligibility]\nmin_loss_ratio = -0.1", "eligibility.min_loss_ratio", ">= 0"),
        (
            "[[segments]]\nname = 's'\nwhere = 'vip_tier > 1'\nmin_share = 1.5",
            "segments[0].min_share",
            "0 <= share <= 1",
        ),
        (
            "[[segments]]\nname = 's'\nwhere = 'vip_tier > 1'\nmax_share = -0.1",
            "segments[0].max_share",
            "0 <= share <= 1",
        ),
        (
            "[[segments]]\nname = 's'\nwhere = 'vip_tier > 1'\nmin_share = 0.6\nmax_share = 0.5",
            "segments[0].min_share",
            "<= segments[0].max_share",
        ),
        ("[payouts]\nbatch_size = 0", "payouts.batch_size", ">= 1"),
        (
            "[payouts]\nstart_within_hours = 100",
            "payouts.finish_within_hours",
            "> payouts.start_within_hours",
        ),
        ("[payouts]\nfinish_within_hours = 1e12", "payouts.finish_within_hours", "<= 87600"),
        (
            "[payouts]\nannounced_at = 9999-12-31T00:00:00Z",
            "payouts.announced_at",
            "a year before 9000",
        ),
        (  # equal hours leave no time to pay; the payout planner refuses them too
            "[payouts]\nstart_within_hours = 24.0\nfinish_within_hours = 24.0",
            "payouts.finish_within_hours",
            "> payouts.start_within_hours",
        ),
    ],
)
def test_out_of_range_names_file_key_and_range(tmp_path, text, key, allowed):
    msg = scenario_error(tmp_path, text + "\n")
    assert "bad.toml" in msg and key in msg and "allowed" in msg and allowed in msg


def test_window_order(tmp_path):
    msg = scenario_error(
        tmp_path,
        "[eligibility]\nwindow_start = 2025-10-12T00:00:00Z\nwindow_end = 2025-10-10T00:00:00Z\n",
    )
    assert "bad.toml" in msg and "eligibility.window_start" in msg and "before" in msg


@pytest.mark.parametrize(
    ("text", "key", "needle"),
    [
        (
            "products = ['usdm_futures', 'perpetuals']",
            "eligibility.products[1]",
            "usdm_futures, coinm_futures",
        ),
        ("products = []", "eligibility.products", "must not be empty"),
        ("products = ['spot', 'spot']", "eligibility.products", "twice"),
        (
            "restricted_regions = ['US', 'usa']",
            "eligibility.restricted_regions[1]",
            "two upper-case letters",
        ),
    ],
)
def test_eligibility_vocabularies(tmp_path, text, key, needle):
    msg = scenario_error(tmp_path, f"[eligibility]\n{text}\n")
    assert "bad.toml" in msg and key in msg and needle in msg


def test_strict_typing_reaches_scenarios(tmp_path):
    assert "'objective.alpah'" in scenario_error(tmp_path, "[objective]\nalpah = 1\n")
    assert "one of 'voucher', 'coverage'" in scenario_error(
        tmp_path, "[objective]\nform = 'share'\n"
    )
    assert "without a time zone" in scenario_error(
        tmp_path, "[payouts]\nannounced_at = 2025-10-14T00:00:00\n"
    )
    assert "true or false" in scenario_error(tmp_path, "[budget]\nexhaust = 'yes'\n")


# --- segments and features --------------------------------------------------------------------


def segment_toml(name: str = "s", where: str = "loss_usd < 10000") -> str:
    return f"[[segments]]\nname = {name!r}\nwhere = {json.dumps(where)}\nmin_share = 0.1\n"


@pytest.mark.parametrize(
    ("where", "needle"),
    [
        ("loss_usd <", "not a Polars SQL expression"),
        ("loss_usd < 10000 GROUP BY region", "not a Polars SQL expression"),
        ("balance < 10", "unknown column(s) balance"),
        ("loss_options_usd > 0", "unknown column(s) loss_options_usd"),  # options not covered
        ("region > 5", "cannot be evaluated"),
        ("loss_usd * 2", "not a true/false condition"),
        ("SUM(loss_usd) > 100", "row-by-row"),
    ],
)
def test_bad_segment_predicates(tmp_path, where, needle):
    msg = scenario_error(tmp_path, segment_toml(where=where))
    assert "bad.toml" in msg and "segments[0].where" in msg and needle in msg
    if "column" in needle:
        assert N.LOSS_USD in msg and N.VIP_TIER in msg  # the known columns are listed


@pytest.mark.parametrize(
    "where",
    [
        "loss_usd < 10000",
        "vip_tier >= 3 OR is_institutional",
        "region IN ('DE', 'FR') AND kyc_status = 'verified'",
        "loss_ratio > 0.9 AND account_age_days < 365",
        "loss_usdm_futures_usd > 0",
    ],
)
def test_good_segment_predicates(tmp_path, where):
    path = tmp_path / "ok.toml"
    path.write_text(segment_toml(where=where))
    assert load_scenario(path).segments[0].where == where


def test_predicate_may_use_loss_column_of_an_added_product(tmp_path):
    path = tmp_path / "ok.toml"
    path.write_text(
        "[eligibility]\nproducts = ['usdm_futures', 'options']\n"
        + segment_toml(where="loss_options_usd > 0")
    )
    assert load_scenario(path).segments[0].where == "loss_options_usd > 0"


@pytest.mark.parametrize(
    "name", ["../../escaped", "a/b", ".hidden", "", "with space", "x" * 101, "[/x]"]
)
def test_scenario_names_cannot_escape_the_runs_folder(tmp_path, name):
    # the name is the default run directory, runs/<name>
    msg = scenario_error(tmp_path, f"name = {name!r}\n")
    assert "bad.toml" in msg and "'name'" in msg and "letters, digits" in msg


def test_scenario_names_that_are_allowed(tmp_path):
    for name in ("baseline", "v2.1_retail-first", "9lives", "x" * 100):
        path = tmp_path / "ok.toml"
        path.write_text(f"name = {name!r}\n")
        assert load_scenario(path).name == name


def test_segment_names(tmp_path):
    msg = scenario_error(tmp_path, segment_toml("a") + segment_toml("a", "vip_tier > 2"))
    assert "segments[1].name" in msg and "unique" in msg
    for bad in ("a+b", "a.b", ""):
        msg = scenario_error(tmp_path, segment_toml(bad))
        assert "segments[0].name" in msg and "letters, digits" in msg


@pytest.mark.parametrize(
    "name", ["region", "kyc_status", "user_id", "loss_ratio", "first_event_ts", "balance"]
)
def test_feature_coefficients_need_numeric_columns(tmp_path, name):
    msg = scenario_error(tmp_path, f"[objective.features]\n{name} = 0.1\n")
    assert "bad.toml" in msg and f"objective.features.{name}" in msg
    assert "allowed: " in msg and N.VIP_TIER in msg and N.IS_INSTITUTIONAL in msg


def test_weight_feature_columns_are_numeric_or_boolean():
    cols = set(weight_feature_columns())
    assert {
        N.LOSS_USD,
        N.VIP_TIER,
        N.IS_INSTITUTIONAL,
        N.ACCOUNT_AGE_DAYS,
        N.DEPEG_COMP_USD,
    } <= cols
    assert {N.product_loss_column(p) for p in N.COVERED_PRODUCTS} <= cols
    assert not cols & {N.REGION, N.KYC_STATUS, N.USER_ID, N.LOSS_RATIO}


# --- fully resolved dict and round trip -------------------------------------------------------


def _assert_all_fields(obj, d):
    for f in fields(obj):
        assert f.name in d, f.name
        value = getattr(obj, f.name)
        if is_dataclass(value):
            _assert_all_fields(value, d[f.name])


@pytest.mark.parametrize("path", VOUCHER_FILES, ids=lambda p: p.stem)
def test_scenario_to_dict_is_complete_json_and_round_trips(path):
    s = load_scenario(path)
    d = scenario_to_dict(s)
    _assert_all_fields(s, d)
    assert d["objective"]["alpha"] == s.objective.alpha
    assert d["objective"]["features"] == dict(s.objective.features)
    text = json.dumps(d, allow_nan=False, sort_keys=True)
    assert parse_scenario(json.loads(text), file="manifest.json") == s


def test_scenario_to_dict_lists_every_weight_coefficient(tmp_path):
    path = tmp_path / "f.toml"
    path.write_text("[objective.features]\nvip_tier = 0.2\nis_institutional = -0.5\n")
    d = scenario_to_dict(load_scenario(path))
    assert d["objective"]["features"] == {"vip_tier": 0.2, "is_institutional": -0.5}
    assert d["objective"]["loss_exponent"] == 1.0 and d["objective"]["ratio_cap"] == 1.0
    assert d["bounds"]["coverage_cap"] is None
    assert d["eligibility"]["window_end"] == "2025-10-12T00:00:00Z"


# --- overrides --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def retail() -> Scenario:
    return load_scenario(SCENARIO_DIR / "retail_first.toml")


def _leaves(d, prefix=""):
    out = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else k
        if isinstance(v, dict):
            out.update(_leaves(v, key))
        elif k == "segments":
            for seg in v:
                out.update(
                    _leaves({x: y for x, y in seg.items() if x != "name"}, f"{key}.{seg['name']}")
                )
        else:
            out[key] = v
    return out


def test_overrides_change_only_their_paths(retail):
    new = with_overrides(
        retail, {"objective.alpha": 2.0, "budget.total_usd": 2e8, "bounds.coverage_cap": 1.5}
    )
    assert (new.objective.alpha, new.budget.total_usd, new.bounds.coverage_cap) == (2.0, 2e8, 1.5)
    before, after = _leaves(scenario_to_dict(retail)), _leaves(scenario_to_dict(new))
    changed = {k for k in before if before[k] != after[k]}
    assert changed == {"objective.alpha", "budget.total_usd", "bounds.coverage_cap"}
    assert retail.objective.alpha == 1.0  # the original is untouched


def test_overrides_of_features_and_segments(retail):
    new = with_overrides(
        retail, {"objective.features.vip_tier": 0.3, "segments.retail.max_share": 0.9}
    )
    assert dict(new.objective.features) == {"vip_tier": 0.3}
    assert new.segments[0] == replace(retail.segments[0], max_share=0.9)


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"objective.alpah": 1.0}, "unknown parameter 'objective.alpah'"),
        ({"objective": 1.0}, "unknown parameter 'objective'"),
        ({"segments.nobody.min_share": 0.1}, "no segment named 'nobody'"),
        ({"segments.retail.weight": 0.1}, "unknown parameter"),
        ({"segments.retail.name": "x"}, "unknown parameter"),
        ({"objective.alpha": -1.0}, "objective.alpha = -1.0 is out of range"),
        ({"objective.alpha": "high"}, "must be a finite number"),
        ({"segments.retail.min_share": 2.0}, "0 <= share <= 1"),
        ({"objective.features.region": 1.0}, "not a numeric or boolean feature column"),
        ({"budget.total_usd": 1e8 / 3}, "whole cents"),
    ],
)
def test_bad_overrides(retail, overrides, needle):
    with pytest.raises(ScenarioError) as info:
        with_overrides(retail, overrides)
    assert needle in str(info.value)
    assert "retail_first" in str(info.value)


def test_every_sweepable_parameter_is_accepted(retail):
    for key in SWEEPABLE:
        path = key.replace("objective.features.<name>", "objective.features.vip_tier")
        path = path.replace("segments.<name>", "segments.retail")
        value = {
            "bounds.cap_usd": 7000.0,
            "budget.total_usd": 1e8,
            "segments.retail.max_share": 0.9,
        }.get(path, 0.5)
        # a rule's own parameter belongs to a scenario with that rule
        base = {
            "objective.base_usd": load_scenario(SCENARIO_DIR / "mt_gox.toml"),
            "objective.threshold_usd": load_scenario(SCENARIO_DIR / "ftx_convenience.toml"),
        }.get(path, retail)
        new = with_overrides(base, {path: value})
        assert _leaves(scenario_to_dict(new))[path] == value


@given(
    alpha=st.one_of(st.just(0.0), st.floats(1e-6, 100.0)),
    floor=st.floats(0.0, 50.0),
    total=st.integers(10**6, 10**11),
)
def test_overrides_validate_like_files(alpha, floor, total):
    s = Scenario(name="h", segments=(SegmentSpec("big", "loss_usd >= 10000", max_share=0.8),))
    budget = total / 100
    new = with_overrides(
        s, {"objective.alpha": alpha, "bounds.floor_usd": floor, "budget.total_usd": budget}
    )
    assert new == replace(
        s,
        objective=replace(s.objective, alpha=alpha),
        bounds=replace(s.bounds, floor_usd=floor),
        budget=replace(s.budget, total_usd=budget),
    )
    assert validate_scenario(new) is new


def test_defaults_of_config_are_valid():
    s = Scenario(name="defaults")
    assert validate_scenario(s) is s
    assert s.objective == ObjectiveSpec()


def test_loan_scenario_given_to_a_voucher_command_says_which_command_to_use():
    loans = Path(__file__).resolve().parents[2] / "scenarios" / "loans_default.toml"
    with pytest.raises(ScenarioError) as info:
        load_scenario(loans)
    msg = str(info.value)
    assert "loans_default.toml" in msg and "loan-fund scenario" in msg
    assert "allocator loans allocate --scenario" in msg


def test_anything_omitted_takes_the_baseline_value(tmp_path):
    # the README's promise: a scenario that sets nothing is the baseline
    path = tmp_path / "empty.toml"
    path.write_text('name = "empty"\n')
    mine = scenario_to_dict(load_scenario(path))
    base = scenario_to_dict(load_scenario(SCENARIO_DIR / "baseline.toml"))
    for d in (mine, base):
        d.pop("name"), d.pop("description", None)
    assert mine == base
