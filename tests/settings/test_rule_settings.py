"""``objective.rule`` in voucher scenarios: aliases, the parameter each rule needs, the rules it
cannot be combined with, and the messages that say why, from a file, ``--set`` and the CLI."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from clihelp import invoke, strict_json

from allocator import names as N
from allocator.data.synthetic import generate
from allocator.errors import ScenarioError
from allocator.runs.contract import LOWER_CENTS, UPPER_CENTS
from allocator.settings.files import json_schema
from allocator.settings.loans import load_loan_scenario
from allocator.settings.models import (
    CLAIMS_RULES,
    RULE_ALIASES,
    RULE_ALPHA_FAIR,
    RULE_MAX_MIN,
    RULE_PARAMETERS,
    VOUCHER_RULES,
)
from allocator.settings.scenarios import (
    load_scenario,
    parse_scenario,
    scenario_to_dict,
    validate_scenario,
    with_overrides,
)

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = sorted((ROOT / "scenarios").glob("*.toml"))
BASELINE = ROOT / "scenarios" / "baseline.toml"
#: Every rule a voucher scenario may name besides the default alpha-fair objective.
NOT_ALPHA_FAIR = [r for r in VOUCHER_RULES if r != RULE_ALPHA_FAIR]
SEGMENT = "[[segments]]\nname = 'small'\nwhere = 'loss_usd < 1000'\nmin_share = 0.1\n"


def objective(rule: str, extra: str = "") -> str:
    """An ``[objective]`` table naming ``rule`` with the parameter its full name needs."""
    needed = RULE_PARAMETERS.get(RULE_ALIASES.get(rule.strip().lower(), rule.strip().lower()))
    param = f"{needed} = 100.0\n" if needed else ""
    return f"[objective]\nrule = {json.dumps(rule)}\n{param}{extra}"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rule.toml"
    path.write_text(text)
    return path


def error_of(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    msg = str(info.value)
    # one paragraph that starts with the file it is about
    assert msg.startswith(f"{path}: ") and "\n" not in msg
    return msg


# --- names ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("alias", "full"), sorted(RULE_ALIASES.items()))
def test_each_alias_resolves_to_its_full_name(tmp_path: Path, alias: str, full: str) -> None:
    """A short name, in any case and with spaces around it, is stored as the full name."""
    for given in (alias, f" {alias.upper()} "):
        s = load_scenario(write(tmp_path, objective(given)))
        assert s.objective.rule == full
        # the run records the full name, and reading it back keeps it
        assert scenario_to_dict(s)["objective"]["rule"] == full
        assert parse_scenario(scenario_to_dict(s), file="manifest").objective.rule == full


@pytest.mark.parametrize("rule", VOUCHER_RULES)
def test_full_names_stand_for_themselves(tmp_path: Path, rule: str) -> None:
    """Each rule of the schema loads under its own name; none is an alias of another."""
    assert rule not in RULE_ALIASES
    assert load_scenario(write(tmp_path, objective(rule))).objective.rule == rule


def test_every_alias_names_a_rule_of_the_schema() -> None:
    """An alias that led nowhere would be refused only when someone used it."""
    assert set(RULE_ALIASES.values()) <= set(VOUCHER_RULES)
    assert set(CLAIMS_RULES) == set(VOUCHER_RULES) - {RULE_ALPHA_FAIR, RULE_MAX_MIN}


@pytest.mark.parametrize("rule", ["fifo", "proportionl", "talmud rule"])
def test_an_unknown_rule_lists_the_allowed_rules(tmp_path: Path, rule: str) -> None:
    """The message names the key, every allowed rule and the value given."""
    msg = error_of(tmp_path, f"[objective]\nrule = {json.dumps(rule)}\n")
    allowed = ", ".join(repr(r) for r in VOUCHER_RULES)
    assert f"key 'objective.rule' must be one of {allowed}; got {rule!r} (string)." in msg


@pytest.mark.parametrize(
    ("spelt", "full"), [("mt-gox", "base_then_pro_rata"), ("Alpha-Fair", "alpha_fair")]
)
def test_a_rule_may_be_spelt_with_hyphens_as_the_claims_command_takes_it(
    tmp_path: Path, spelt: str, full: str
) -> None:
    """``allocator claims ftx-convenience`` works, so a scenario's ``rule = 'mt-gox'`` does too."""
    extra = "base_usd = 100.0\n" if full == "base_then_pro_rata" else ""
    path = write(tmp_path, f"[objective]\nrule = {json.dumps(spelt)}\n{extra}")
    assert load_scenario(path).objective.rule == full


def test_a_hyphenated_minimum_payment_is_refused_with_its_reason(tmp_path: Path) -> None:
    msg = error_of(tmp_path, "[objective]\nrule = 'minimum-payment'\n")
    assert "objective.rule = 'minimum-payment' is not offered in a voucher scenario" in msg


def test_a_new_rule_from_the_command_line_drops_the_old_rules_parameter() -> None:
    """TOML has no null: ``--set objective.rule=cea`` on an mt_gox file must not be stuck with
    its base; a parameter given alongside the new rule still counts."""
    mt_gox = load_scenario(ROOT / "scenarios" / "mt_gox.toml")
    cea = with_overrides(mt_gox, {"objective.rule": "cea"})
    assert cea.objective.rule == "constrained_equal_awards" and cea.objective.base_usd is None
    ftx = with_overrides(mt_gox, {"objective.rule": "ftx", "objective.threshold_usd": 500.0})
    assert (ftx.objective.base_usd, ftx.objective.threshold_usd) == (None, 500.0)
    same = with_overrides(mt_gox, {"objective.rule": "mt-gox"})
    assert same.objective.base_usd == mt_gox.objective.base_usd
    with pytest.raises(ScenarioError, match="objective.base_usd = 5.0 is not used"):
        with_overrides(mt_gox, {"objective.rule": "talmud", "objective.base_usd": 5.0})


def test_a_rule_that_is_not_a_string_is_refused(tmp_path: Path) -> None:
    """The strict string type words the error, not the alias lookup."""
    msg = error_of(tmp_path, "[objective]\nrule = 3\n")
    assert "key 'objective.rule' must be one of 'alpha_fair'" in msg and "got 3 (integer)" in msg


def test_an_unknown_rule_is_quoted_as_written(tmp_path: Path) -> None:
    """Errors show the value given, so that the reader can find it in the file."""
    msg = error_of(tmp_path, "[objective]\nrule = 'FIFO'\n")
    assert "got 'FIFO' (string)" in msg


@pytest.mark.parametrize("rule", ["minimum_payment", "class_action", " Class_Action "])
def test_minimum_payment_is_refused_with_its_reason(tmp_path: Path, rule: str) -> None:
    """The kernel's class-action rule drops small awards, which a voucher floor forbids."""
    msg = error_of(tmp_path, f"[objective]\nrule = {json.dumps(rule)}\n")
    assert f"objective.rule = {rule!r} is not offered in a voucher scenario; allowed: " in msg
    assert "an award below a minimum is raised to it, not dropped" in msg
    assert "Raise bounds.floor_usd" in msg and "allocator claims minimum_payment" in msg


# --- the parameter each rule needs ------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "full", "key"),
    [
        ("base_then_pro_rata", "base_then_pro_rata", "base_usd"),
        ("mt_gox", "base_then_pro_rata", "base_usd"),
        ("convenience_class", "convenience_class", "threshold_usd"),
        ("ftx", "convenience_class", "threshold_usd"),
    ],
)
def test_a_rule_without_its_parameter_is_refused(
    tmp_path: Path, rule: str, full: str, key: str
) -> None:
    """The message names the missing key and the rule by its full name."""
    msg = error_of(tmp_path, f"[objective]\nrule = {json.dumps(rule)}\n")
    assert msg.endswith(
        f": objective.{key} is required by rule {full!r}; allowed: an amount in USD, e.g. 100.0."
    )
    assert RULE_PARAMETERS[full] == key


@pytest.mark.parametrize(
    ("text", "key", "value", "rule", "owner"),
    [
        ("rule = 'talmud'\nbase_usd = 50.0", "base_usd", 50.0, "talmud", "base_then_pro_rata"),
        ("base_usd = 50.0", "base_usd", 50.0, "alpha_fair", "base_then_pro_rata"),
        (
            "rule = 'cea'\nthreshold_usd = 7",
            "threshold_usd",
            7.0,
            "constrained_equal_awards",
            "convenience_class",
        ),
        (
            "rule = 'mt_gox'\nbase_usd = 10.0\nthreshold_usd = 5.0",
            "threshold_usd",
            5.0,
            "base_then_pro_rata",
            "convenience_class",
        ),
        (
            "rule = 'ftx'\nthreshold_usd = 5.0\nbase_usd = 10.0",
            "base_usd",
            10.0,
            "convenience_class",
            "base_then_pro_rata",
        ),
    ],
)
def test_a_parameter_for_another_rule_is_refused(
    tmp_path: Path, text: str, key: str, value: float, rule: str, owner: str
) -> None:
    """A base or threshold the rule would ignore is an error that says which rule takes it."""
    msg = error_of(tmp_path, f"[objective]\n{text}\n")
    assert msg.endswith(
        f": objective.{key} = {value!r} is not used by rule {rule!r}; "
        f"allowed: only with rule = {owner!r}; remove it."
    )


@pytest.mark.parametrize("key", ["base_usd", "threshold_usd"])
def test_a_parameter_must_be_a_positive_amount(tmp_path: Path, key: str) -> None:
    """A base or threshold of zero would make the rule's first stage empty."""
    rule = "mt_gox" if key == "base_usd" else "ftx"
    msg = error_of(tmp_path, f"[objective]\nrule = '{rule}'\n{key} = 0\n")
    assert f"objective.{key} = 0 is out of range; allowed: > 0" in msg


# --- what a rule cannot be combined with ------------------------------------------------------


@pytest.mark.parametrize("rule", NOT_ALPHA_FAIR)
def test_segments_with_a_rule_are_refused(tmp_path: Path, rule: str) -> None:
    """A rule divides the whole budget along its path: it has no budget shares to honour."""
    msg = error_of(tmp_path, objective(rule) + SEGMENT)
    assert msg.endswith(
        f": objective.rule ({rule!r}) cannot be combined with [[segments]]; allowed: a rule "
        "divides the whole budget along its own path and has no budget shares; remove the "
        "segments, or use rule = 'alpha_fair'."
    )


def test_segments_with_the_alpha_fair_objective_are_accepted(tmp_path: Path) -> None:
    """Only a rule refuses segments: the alpha-fair objective (here by its alias) keeps them."""
    s = load_scenario(write(tmp_path, "[objective]\nrule = 'alpha'\n" + SEGMENT))
    assert s.objective.rule == RULE_ALPHA_FAIR and s.segments[0].name == "small"


@pytest.mark.parametrize("rule", [*CLAIMS_RULES, "cea", "mt_gox"])
def test_coverage_form_is_refused_for_a_claims_rule(tmp_path: Path, rule: str) -> None:
    """A claims rule's claims are the losses already: coverage form would divide them twice."""
    full = RULE_ALIASES.get(rule, rule)
    msg = error_of(tmp_path, objective(rule, "form = 'coverage'\n"))
    assert msg.endswith(
        f": objective.form = 'coverage' is only for rule 'alpha_fair' or 'max_min', not "
        f"{full!r}; allowed: 'voucher' (a claims rule divides vouchers, its claims are the "
        "losses)."
    )


@pytest.mark.parametrize("rule", ["max_min", "lexicographic_max_min", "alpha_fair", "alpha"])
@pytest.mark.parametrize("form", ["voucher", "coverage"])
def test_both_forms_are_accepted_for_max_min_and_alpha_fair(
    tmp_path: Path, rule: str, form: str
) -> None:
    """Coverage form is the max-min of v / L, and a form of the alpha-fair objective."""
    s = load_scenario(write(tmp_path, objective(rule, f"form = '{form}'\n")))
    assert s.objective.form == form and s.objective.rule in (RULE_MAX_MIN, RULE_ALPHA_FAIR)


# --- overrides --------------------------------------------------------------------------------


def test_overrides_resolve_and_check_a_rule_like_a_file() -> None:
    """``--set objective.rule=...`` goes through the same aliases and rules as a file."""
    base = load_scenario(BASELINE)
    assert with_overrides(base, {"objective.rule": "cea"}).objective.rule == (
        "constrained_equal_awards"
    )
    gox = with_overrides(base, {"objective.rule": "mt_gox", "objective.base_usd": 250})
    assert (gox.objective.rule, gox.objective.base_usd) == ("base_then_pro_rata", 250.0)
    with pytest.raises(ScenarioError) as info:
        with_overrides(base, {"objective.rule": "mt_gox"})
    assert str(info.value).startswith(
        "scenario 'baseline' with overrides: objective.base_usd is required by rule "
        "'base_then_pro_rata'"
    )
    segmented = load_scenario(ROOT / "scenarios" / "retail_first.toml")
    with pytest.raises(ScenarioError, match=r"cannot be combined with \[\[segments\]\]"):
        with_overrides(segmented, {"objective.rule": "talmud"})


# --- shipped files ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_every_shipped_scenario_validates(path: Path) -> None:
    """Each file loads with the loader of its kind; a voucher file names a rule of the schema
    with exactly the parameters it needs, and re-validates from its resolved form."""
    if path.stem.startswith("loans"):
        # a loan-fund scenario has no objective.rule; its own loader is the check
        assert load_loan_scenario(path).name
        return
    s = load_scenario(path)
    o = s.objective
    assert o.rule in VOUCHER_RULES
    needed = RULE_PARAMETERS.get(o.rule)
    assert (o.base_usd is not None) == (needed == "base_usd")
    assert (o.threshold_usd is not None) == (needed == "threshold_usd")
    assert validate_scenario(s, file=path) is s
    assert parse_scenario(scenario_to_dict(s), file=path) == s


def test_the_json_schema_accepts_the_rules_the_shipped_files_use() -> None:
    """The schema editors check files with agrees with the loader on ``objective.rule``."""
    allowed = json_schema("voucher")["$defs"]["ObjectiveSpec"]["properties"]["rule"]["enum"]
    used = {
        path.name: tomllib.loads(path.read_text()).get("objective", {}).get("rule")
        for path in SCENARIOS
        if not path.stem.startswith("loans")
    }
    assert {name: rule for name, rule in used.items() if rule and rule not in allowed} == {}


# --- the command line -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[objective]\nrule = 'fifo'\n", "key 'objective.rule' must be one of"),
        ("[objective]\nrule = 'mt_gox'\n", "objective.base_usd is required by rule"),
        ("[objective]\nrule = 'talmud'\nbase_usd = 5.0\n", "objective.base_usd = 5.0 is not used"),
        ("[objective]\nrule = 'class_action'\n", "objective.rule = 'class_action' is not offered"),
        ("[objective]\nrule = 'cea'\nform = 'coverage'\n", "objective.form = 'coverage' is only"),
        (objective("cel") + SEGMENT, "objective.rule ('constrained_equal_losses') cannot be"),
    ],
)
def test_validate_exits_2_with_one_paragraph_for_a_bad_rule(
    tmp_path: Path, text: str, needle: str
) -> None:
    """``scenario validate`` prints the loader's message on one line: file, key, why."""
    path = write(tmp_path, text)
    result = invoke("scenario", "validate", path)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    (line,) = result.stdout.strip().splitlines()
    assert line.startswith(f"{path}: error: {path}: ") and needle in line


def test_validate_accepts_a_file_that_names_a_rule_by_alias(tmp_path: Path) -> None:
    """The command checks files as the loader reads them, aliases included."""
    path = write(tmp_path, objective("ftx_convenience"))
    result = invoke("scenario", "validate", path)
    assert result.exit_code == 0 and result.stdout.strip() == f"{path}: ok (voucher)"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("data") / "small"
    generate(out, users=2000, seed=3)
    return out


def test_allocate_with_a_rule_set_on_the_command_line(tmp_path: Path, data_dir: Path) -> None:
    """``--set objective.rule=cea`` on the baseline pays constrained equal awards: every
    voucher is the run's level, or the user's floor or cap (the loss at most), to the cent."""
    out = tmp_path / "run"
    result = invoke(
        "allocate",
        "-s",
        BASELINE,
        "--data",
        data_dir,
        "--out",
        out,
        "--set",
        "objective.rule=cea",
        "--set",
        "budget.total_usd=2e6",
        "--json",
        "-q",
    )
    assert result.exit_code == 0, result.output
    summary = strict_json(result.stdout)
    assert summary["rule"] == "constrained_equal_awards" and summary["objective"] is None
    assert summary["solver"] == "rule:constrained_equal_awards"
    manifest = strict_json((out / N.MANIFEST_FILE).read_text())
    rule = manifest["rule"]
    assert rule["name"] == "constrained_equal_awards" and rule["stage"] == 0
    assert rule["multiplier"] == rule["parameter"] == manifest["shadow_price"]
    assert manifest["scenario"]["objective"]["rule"] == "constrained_equal_awards"
    assert manifest["solver"]["used"] == "rule:constrained_equal_awards"
    assert manifest["objective"] is None
    assert manifest["certificate_rounded"]["certified"] is True
    assert manifest["money"]["paid_cents"] == manifest["money"]["budget_cents"] == 200_000_000
    # checked from the paid amounts alone, not from the run's certificate
    paid = pl.read_parquet(out / N.ALLOCATIONS_FILE)
    lo = paid[LOWER_CENTS].to_numpy() / 100
    hi = paid[UPPER_CENTS].to_numpy() / 100
    assert (hi <= paid[N.LOSS_USD].to_numpy() + 1e-9).all()  # a claims rule pays at most the loss
    want = np.clip(rule["multiplier"], lo, hi)
    assert np.abs(paid[N.VOUCHER_USD].to_numpy() - want).max() < 0.01 + 1e-9


def test_allocate_refuses_a_rule_without_its_parameter_before_any_work(tmp_path: Path) -> None:
    """A rule set without its base is a usage error (exit 2) before the data is read."""
    result = invoke(
        "allocate",
        "-s",
        BASELINE,
        "--data",
        tmp_path / "no-data",
        "--out",
        tmp_path / "run",
        "--set",
        "objective.rule=mt_gox",
    )
    assert result.exit_code == 2 and "Traceback" not in result.output
    (line,) = result.stderr.strip().splitlines()
    assert f"{BASELINE} with --set: objective.base_usd is required by rule" in line
    assert not (tmp_path / "run").exists()
