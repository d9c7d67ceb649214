"""Settings through pydantic: error wording, did-you-mean, range holes, --set, schema, resolved TOML."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
from pydantic import ValidationError

from allocator.errors import ScenarioError
from allocator.settings import loans as LS
from allocator.settings.depeg import DepegRules, depeg_rules_from_dict
from allocator.settings.files import detect_kind, json_schema, resolve_file, to_toml
from allocator.settings.messages import scenario_error
from allocator.settings.models import ALPHA_MIN_POSITIVE, MAX_BATCH_SIZE, Scenario
from allocator.settings.scenarios import (
    load_scenario,
    load_scenario_with,
    parse_assignment,
    parse_assignments,
    parse_scenario,
    scenario_to_dict,
    with_overrides,
)
from allocator.settings.toml import adapter

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = sorted((ROOT / "scenarios").glob("*.toml"))


def error_of(text: str, tmp_path: Path) -> str:
    path = tmp_path / "s.toml"
    path.write_text(text)
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    return str(info.value)


# --- the formatter over pydantic's ValidationError ---------------------------------------------


def test_formatter_words_a_raw_validation_error():
    with pytest.raises(ValidationError) as info:
        adapter(Scenario).validate_python({"name": "x", "objective": {"alpha": "2"}})
    err = scenario_error(info.value, Scenario, file="f.toml")
    text = str(err)
    assert text.startswith("f.toml: key 'objective.alpha' must be a finite number")
    assert "'2' (string)" in text and "Traceback" not in text and "\n" not in text
    assert err.exit_code == 2


def test_every_problem_is_counted_but_only_the_first_is_worded(tmp_path):
    msg = error_of("[objective]\nalpha = 'x'\n[bounds]\nfloor_usd = -1\n", tmp_path)
    assert "objective.alpha" in msg and "(1 more problem(s) after this one.)" in msg
    assert "floor_usd" not in msg


@pytest.mark.parametrize(
    ("text", "key", "guess"),
    [
        ("[objective]\nalpah = 1\n", "objective.alpah", "alpha"),
        ("[budgte]\ntotal_usd = 1\n", "budgte", "budget"),
        ("[payouts]\nbatchsize = 3\n", "payouts.batchsize", "batch_size"),
        ("[[segments]]\nname = 'a'\nwher = 'vip_tier > 1'\n", "segments[0].wher", "where"),
    ],
)
def test_unknown_keys_get_a_did_you_mean(tmp_path, text, key, guess):
    msg = error_of(text, tmp_path)
    assert f"unknown key '{key}'" in msg and f"Did you mean '{guess}'?" in msg
    assert "Allowed keys in" in msg


def test_an_unknown_key_far_from_any_gets_no_guess(tmp_path):
    msg = error_of("[objective]\nzzzzzz = 1\n", tmp_path)
    assert "unknown key 'objective.zzzzzz'" in msg and "Did you mean" not in msg


def test_a_string_is_not_a_number_but_an_integer_is(tmp_path):
    assert "must be a finite number; got '1' (string)" in error_of(
        "[objective]\nalpha = '1'\n", tmp_path
    )
    path = tmp_path / "ok.toml"
    path.write_text("[objective]\nalpha = 2\n[budget]\ntotal_usd = 1000000\n")
    s = load_scenario(path)
    assert s.objective.alpha == 2.0 and type(s.objective.alpha) is float
    assert type(s.budget.total_usd) is float


def test_datetimes_must_carry_an_offset_and_are_stored_in_utc(tmp_path):
    msg = error_of("[eligibility]\nsnapshot_at = 2025-10-09T23:59:00\n", tmp_path)
    assert "eligibility.snapshot_at" in msg and "without a time zone" in msg
    path = tmp_path / "ok.toml"
    path.write_text("[eligibility]\nsnapshot_at = 2025-10-10T01:59:00+02:00\n")
    at = load_scenario(path).eligibility.snapshot_at
    assert at.utcoffset().total_seconds() == 0 and at.hour == 23


def test_old_manifests_still_parse():
    # a manifest stores the scenario as scenario_to_dict wrote it (datetimes as strings)
    for path in SCENARIOS:
        if path.stem.startswith("loans"):
            continue
        s = load_scenario(path)
        assert parse_scenario(json.loads(json.dumps(scenario_to_dict(s))), file="m") == s


# --- values the solvers and planners cannot take are refused at the boundary ------------------


@pytest.mark.parametrize("alpha", [1e-17, 1e-300, 5e-324, ALPHA_MIN_POSITIVE / 2])
def test_tiny_positive_alphas_are_refused_with_a_plain_message(tmp_path, alpha):
    msg = error_of(f"[objective]\nalpha = {alpha!r}\n", tmp_path)
    assert "objective.alpha" in msg and "out of range" in msg
    assert f"0, or {ALPHA_MIN_POSITIVE:g} <= alpha" in msg


@pytest.mark.parametrize("alpha", [0.0, ALPHA_MIN_POSITIVE, 0.5, 100.0])
def test_alphas_the_solvers_handle_are_accepted(tmp_path, alpha):
    path = tmp_path / "ok.toml"
    path.write_text(f"[objective]\nalpha = {alpha!r}\n")
    assert load_scenario(path).objective.alpha == alpha


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[payouts]\nbatch_size = 9223372036854775807", "payouts.batch_size"),
        (f"[payouts]\nbatch_size = {MAX_BATCH_SIZE + 1}", "payouts.batch_size"),
        ("[budget]\ntotal_usd = 1.7976931348623157e308", "budget.total_usd"),
        ("[bounds]\ncap_usd = 1e300", "bounds.cap_usd"),
        ("[bounds]\nfloor_usd = 1e14", "bounds.floor_usd"),
        ("[bounds]\ncoverage_cap = 1e300", "bounds.coverage_cap"),
        ("[eligibility]\nmin_loss_usd = 1e300", "eligibility.min_loss_usd"),
        ("[eligibility]\nphase_in_loss_usd = -1", "eligibility.phase_in_loss_usd"),
        ("[objective]\nratio_cap = 1e300", "objective.ratio_cap"),
        ("[objective]\nfeatures = {vip_tier = inf}", "objective.features.vip_tier"),
        ("[payouts]\nstart_within_hours = 1e300", "payouts.finish_within_hours"),
        ("[payouts]\nannounced_at = 9001-01-01T00:00:00Z", "payouts.announced_at"),
    ],
)
def test_values_beyond_what_the_arithmetic_holds_are_refused(tmp_path, text, key):
    msg = error_of(text + "\n", tmp_path)
    assert key in msg and ("allowed" in msg or "must be" in msg)


def test_an_integer_beyond_int64_is_refused_for_any_int_field(tmp_path):
    msg = error_of("[payouts]\nbatch_size = 9223372036854775808\n", tmp_path)
    assert "payouts.batch_size = 9223372036854775808 is out of range" in msg
    assert "<= 1,000,000,000" in msg


def test_the_largest_batch_is_accepted(tmp_path):
    path = tmp_path / "ok.toml"
    path.write_text(f"[payouts]\nbatch_size = {MAX_BATCH_SIZE}\n")
    assert load_scenario(path).payouts.batch_size == MAX_BATCH_SIZE


def test_loan_and_depeg_amounts_are_bounded_too(tmp_path):
    with pytest.raises(ScenarioError, match=r"risk.lgd must be in \[0, 1\], got 1.5"):
        LS.loan_scenario_from_dict({"name": "l", "risk": {"lgd": 1.5}})
    with pytest.raises(ScenarioError, match=r"solver.pwl_breakpoints must be in \[2, 200\]"):
        LS.loan_scenario_from_dict({"name": "l", "solver": {"pwl_breakpoints": 2**63}})
    with pytest.raises(ScenarioError, match="key 'solver.pwl_breakpoints' must be an integer"):
        LS.loan_scenario_from_dict({"name": "l", "solver": {"pwl_breakpoints": True}})
    with pytest.raises(ScenarioError, match=r"depeg.floors.USDe = 1e\+20 is out of range"):
        depeg_rules_from_dict({"floors": {"USDe": 1e20}}, file="r.toml")
    with pytest.raises(ScenarioError, match=r"unknown key 'depeg.flors'.*Did you mean 'floors'"):
        depeg_rules_from_dict({"flors": {}}, file="r.toml")
    assert depeg_rules_from_dict({}, file="r.toml") == DepegRules()


def test_code_may_build_any_settings_but_validation_judges_them():
    # consumers build dataclasses directly (tests, command-line options): no check there
    s = Scenario(name="../bad")
    assert s.name == "../bad"
    from allocator.settings.scenarios import validate_scenario

    with pytest.raises(ScenarioError, match="key 'name' = '../bad' is not a valid scenario name"):
        validate_scenario(s, file="the options")


# --- --set ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key", "value"),
    [
        ("objective.alpha=2", "objective.alpha", 2),
        ("budget.exhaust=false", "budget.exhaust", False),
        ("solver.name=fast", "solver.name", "fast"),
        ('solver.name="cvxpy"', "solver.name", "cvxpy"),
        ("eligibility.products=['spot', 'options']", "eligibility.products", ["spot", "options"]),
        ("payouts.announced_at=2025-10-15T00:00:00Z", "payouts.announced_at", None),
        (" bounds.cap_usd = 1e4 ", "bounds.cap_usd", 1e4),
    ],
)
def test_set_values_are_read_as_toml(text, key, value):
    got_key, got = parse_assignment(text)
    assert got_key == key
    if value is None:
        assert got.isoformat() == "2025-10-15T00:00:00+00:00"
    else:
        assert got == value and type(got) is type(value)


def test_set_needs_key_equals_value_and_each_key_once():
    with pytest.raises(ScenarioError, match="is not of the form KEY=VALUE"):
        parse_assignment("objective.alpha")
    with pytest.raises(ScenarioError, match="is not of the form KEY=VALUE"):
        parse_assignment("=2")
    with pytest.raises(ScenarioError, match="gives 'objective.alpha' twice"):
        parse_assignments(["objective.alpha=1", "objective.alpha=2"])


def test_set_applies_to_any_single_value_and_revalidates():
    path = ROOT / "scenarios" / "retail_first.toml"
    s = load_scenario_with(
        path,
        [
            "objective.alpha=2",
            "budget.exhaust=false",
            "solver.name=fast",
            "segments.retail.max_share=0.9",
            "eligibility.restricted_regions=['US']",
        ],
    )
    base = load_scenario(path)
    assert (s.objective.alpha, s.budget.exhaust, s.solver.name) == (2.0, False, "fast")
    assert s.segments[0].max_share == 0.9 and s.eligibility.restricted_regions == ("US",)
    assert s.bounds == base.bounds and s.name == base.name
    assert load_scenario_with(path, []) == base


@pytest.mark.parametrize(
    ("sets", "needle"),
    [
        (["objective.alhpa=2"], "Did you mean 'objective.alpha'?"),
        (["budget.exhaust=maybe"], "key 'budget.exhaust' must be true or false; got 'maybe'"),
        (["objective.alpha=1e-17"], "objective.alpha = 1e-17 is out of range"),
        (["payouts.batch_size=9223372036854775808"], "payouts.batch_size"),
        (["objective=1"], "unknown parameter 'objective'"),
        (["eligibility.products=spot"], "it is an array"),
    ],
)
def test_bad_set_names_the_file_the_option_and_the_key(sets, needle):
    path = ROOT / "scenarios" / "baseline.toml"
    with pytest.raises(ScenarioError) as info:
        load_scenario_with(path, sets)
    assert needle in str(info.value) and f"{path} with --set" in str(info.value)


def test_with_overrides_keeps_its_default_label():
    s = Scenario(name="h")
    with pytest.raises(ScenarioError, match="scenario 'h' with overrides"):
        with_overrides(s, {"objective.alpha": -1.0})


# --- schema, kinds and the resolved file ------------------------------------------------------


@pytest.mark.parametrize("kind", ["voucher", "loans", "depeg"])
def test_json_schema_has_a_dialect_a_title_and_descriptions(kind):
    schema = json_schema(kind)
    json.dumps(schema, allow_nan=False)
    assert schema["$schema"].startswith("https://json-schema.org/")
    assert kind.rstrip("s") in schema["title"]
    props = schema["properties"] if kind != "depeg" else schema["$defs"]["DepegRules"]["properties"]
    assert props and all("description" in p for p in props.values())


def test_voucher_schema_forbids_unknown_keys_and_states_ranges():
    schema = json_schema("voucher")
    assert schema["additionalProperties"] is False
    objective = schema["$defs"]["ObjectiveSpec"]
    alpha = objective["properties"]["alpha"]
    assert alpha["minimum"] == 0 and alpha["maximum"] == 100 and alpha["type"] == "number"
    assert objective["properties"]["features"]["type"] == "object"
    assert objective["properties"]["form"]["enum"] == ["voucher", "coverage"]
    assert schema["$defs"]["PayoutSpec"]["properties"]["batch_size"]["maximum"] == MAX_BATCH_SIZE
    assert "name" not in schema.get("required", [])  # the file's stem is the default name
    assert "name" in json_schema("loans")["required"]
    floors = json_schema("depeg")["$defs"]["DepegRules"]["properties"]["floors"]
    assert floors["default"] == {"USDe": 1.0}  # a table, as the file writes it


def test_unknown_schema_kind_is_a_usage_error():
    with pytest.raises(Exception, match="--kind must be one of voucher, loans, depeg"):
        json_schema("bonds")


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_resolved_toml_reads_back_to_the_same_settings(path, tmp_path):
    resolved = resolve_file(path)
    text = to_toml(resolved.resolved)
    out = tmp_path / path.name
    out.write_text(text)
    again = resolve_file(out)
    assert again.kind == resolved.kind and again.settings == resolved.settings
    # every key is written, unset ones as a comment
    for key in resolved.resolved:
        assert key in text


def test_detect_kind_tells_the_files_apart():
    assert (
        detect_kind(tomllib.loads((ROOT / "scenarios" / "baseline.toml").read_text())) == "voucher"
    )
    loans = tomllib.loads((ROOT / "scenarios" / "loans_default.toml").read_text())
    assert detect_kind(loans) == "loans"
    assert detect_kind({"depeg": {"refund_fees": False}}) == "depeg"
    assert detect_kind({}) == "voucher"


def test_huge_values_are_shown_shortened(tmp_path):
    msg = error_of(f"[payouts]\nbatch_size = {10**400}\n", tmp_path)
    assert "payouts.batch_size = 1000" in msg and "..." in msg and len(msg) < 400
    msg = error_of(f"[objective]\nalpha = {10**400}\n", tmp_path)
    assert "key 'objective.alpha' must be a finite number" in msg and len(msg) < 400
