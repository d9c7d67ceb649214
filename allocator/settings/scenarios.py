"""Voucher scenarios: TOML files under ``scenarios/`` -> validated :class:`~allocator.settings.models.Scenario`.

A scenario file has one table per section of :class:`~allocator.settings.models.Scenario`
(``[eligibility]``, ``[objective]`` with ``[objective.features]``, ``[bounds]``, ``[budget]``,
``[[segments]]``, ``[solver]``, ``[rounding]``, ``[payouts]``) plus top-level ``name`` (default:
the file's stem) and ``description``. Omitted keys take the defaults of :mod:`allocator.settings.models`,
which are a careful reading of the announcement.

Loading validates the file against the annotations of :mod:`allocator.settings.models` with
pydantic (:func:`allocator.settings.toml.build`): keys, types, ranges and cross-field rules; each
error names the file, the dotted key, what is allowed and the value given.

:func:`with_overrides` replaces dotted parameters (``objective.alpha``); :func:`parse_assignments`
reads the command line's ``--set KEY=VALUE`` into such overrides.
"""

from __future__ import annotations

import copy
import difflib
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from allocator.errors import ScenarioError
from allocator.settings.features import (
    FEATURE_SCHEMA,
    check_predicate,
    feature_schema,
    weight_feature_columns,
)
from allocator.settings.models import (
    ALPHA_MAX,
    BUDGET_MAX_USD,
    EXPONENT_LIMIT,
    RULE_PARAMETERS,
    Scenario,
    rule_full_name,
)
from allocator.settings.toml import build, load_toml, to_dict

__all__ = [
    "ALPHA_MAX",
    "BUDGET_MAX_USD",
    "EXPONENT_LIMIT",
    "FEATURE_SCHEMA",
    "SWEEPABLE",
    "check_predicate",
    "feature_schema",
    "load_scenario",
    "load_scenario_with",
    "parse_assignment",
    "parse_assignments",
    "parse_scenario",
    "scenario_to_dict",
    "validate_scenario",
    "weight_feature_columns",
    "with_overrides",
]

#: Dotted parameters ``with_overrides`` and ``allocator sweep`` take, with their meaning.
#: ``<name>`` stands for a feature column or a segment name.
SWEEPABLE: dict[str, str] = {
    "objective.alpha": "fairness: 0 utilitarian, 1 proportional (log), large -> max-min",
    "objective.loss_exponent": "exponent a of the loss in the weight L^a",
    "objective.ratio_exponent": "exponent b of the capped loss ratio in the weight min(r, cap)^b",
    "objective.ratio_cap": "loss ratio above which the ratio stops raising the weight",
    "objective.features.<name>": "coefficient c of a feature column in the weight exp(c x)",
    "objective.base_usd": "base amount paid first under the base_then_pro_rata (mt_gox) rule",
    "objective.threshold_usd": "claims up to this are paid in full first (convenience_class rule)",
    "budget.total_usd": "total budget in USD (whole cents)",
    "bounds.floor_usd": "smallest voucher in USD",
    "bounds.cap_usd": "largest voucher in USD",
    "bounds.coverage_cap": "largest voucher as a multiple of the user's loss",
    "eligibility.min_loss_usd": "smallest counted loss (USD) that qualifies",
    "eligibility.min_loss_ratio": "smallest loss / net assets ratio that qualifies",
    "eligibility.phase_in_loss_usd": "lower end of the loss phase-in band (below min_loss_usd)",
    "segments.<name>.min_share": "least share of the budget the segment receives",
    "segments.<name>.max_share": "most share of the budget the segment receives",
}


def load_scenario(path: str | Path) -> Scenario:
    """Read, type-check and range-check a scenario TOML file (name defaults to the stem).

    Raises
    ------
    ScenarioError
        Invalid TOML, an unknown key, a wrong type or an out-of-range value; the message names
        the file, the key and what is allowed.
    """
    path = Path(path)
    data = load_toml(path)
    if isinstance(data, Mapping) and "fund_usd" in data and "budget" not in data:
        # the most likely mix-up: the loan fund's scenario handed to a voucher command
        raise ScenarioError(
            f"{path}: this is a loan-fund scenario (it has 'fund_usd' and no [budget]), not a "
            "voucher scenario.",
            hint=f"run it with: allocator loans allocate --scenario {path}",
        )
    return parse_scenario(data, file=path, default_name=path.stem)


def parse_scenario(
    data: Mapping[str, Any], *, file: str | Path, default_name: str = "scenario"
) -> Scenario:
    """Build and validate a scenario from an already parsed mapping (TOML or JSON)."""
    if isinstance(data, Mapping) and "name" not in data:
        data = {"name": default_name, **data}
    return build(Scenario, data, file=file)


def validate_scenario(s: Scenario, *, file: str | Path = "<scenario>") -> Scenario:
    """Check the types, ranges and cross-field rules of a scenario built in code; return it unchanged.

    The rules are those a file is held to (the annotations of :mod:`allocator.settings.models`):
    ``alpha`` 0 or in [1e-6, 100]; exponents in [-10, 10]; ``ratio_cap > 0``; feature
    coefficients name numeric or boolean feature columns; ``floor_usd >= 0``;
    ``cap_usd > floor_usd``; ``coverage_cap > 0``; ``0 < total_usd <= 1e13`` in whole cents;
    thresholds ``>= 0``; ``window_start < window_end``; products a non-empty subset of
    :data:`allocator.names.PRODUCTS`; regions two upper-case letters; segment names unique
    (letters, digits, ``_``, ``-``), shares in [0, 1] with ``min_share <= max_share``, ``where``
    a row-wise boolean Polars SQL expression over known feature columns; ``batch_size`` from 1
    to 1e9; payout hours ``0 <= start < finish``; ``name`` 1 to 100 letters, digits, ``.``,
    ``_`` or ``-`` starting with a letter or digit (it names the default run directory).

    Raises
    ------
    ScenarioError
        The first broken rule, naming ``file`` and the dotted key.
    """
    build(Scenario, to_dict(s), file=file)
    return s


def scenario_to_dict(s: Scenario) -> dict[str, Any]:
    """The fully resolved scenario as a JSON-safe dict: every knob, defaults included.

    ``parse_scenario(scenario_to_dict(s), file=...) == s``.
    """
    return to_dict(s)


def with_overrides(
    s: Scenario, overrides: Mapping[str, Any], *, label: str | None = None
) -> Scenario:
    """A copy of ``s`` with dotted parameters replaced, re-typed and re-validated.

    Paths name a single value: ``objective.alpha``, ``budget.total_usd``, ``bounds.coverage_cap``,
    ``objective.features.<column>`` (adds the coefficient if absent),
    ``segments.<name>.min_share``; see :data:`SWEEPABLE` for the numeric ones.

    ``label`` names the result in messages (default: ``scenario '<name>' with overrides``).

    Raises
    ------
    ScenarioError
        An unknown path, a wrong type or an out-of-range value.
    """
    label = label or f"scenario '{s.name}' with overrides"
    data = copy.deepcopy(scenario_to_dict(s))
    for path, value in overrides.items():
        _set_path(data, path, value, label)
    if "objective.rule" in overrides and isinstance(overrides["objective.rule"], str):
        # a new rule replaces the old one with its parameter (a base or threshold cannot be
        # unset from the command line, TOML having no null); one given alongside still counts
        wanted = RULE_PARAMETERS.get(rule_full_name(overrides["objective.rule"]))
        for key in set(RULE_PARAMETERS.values()) - {wanted}:
            if f"objective.{key}" not in overrides:
                data["objective"].pop(key, None)
    return parse_scenario(data, file=label)


def _set_path(data: dict[str, Any], path: str, value: Any, label: str) -> None:
    parts = path.split(".")
    examples = ", ".join(SWEEPABLE)

    def unknown(extra: str = "") -> ScenarioError:
        close = difflib.get_close_matches(path, [*_leaf_paths(data), *SWEEPABLE], n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        return ScenarioError(
            f"{label}: unknown parameter '{path}'{extra}. Parameters include: {examples}.{hint}"
        )

    if len(parts) == 3 and parts[0] == "objective" and parts[1] == "features":
        data["objective"]["features"][parts[2]] = value
        return
    if parts[0] == "segments":
        if len(parts) != 3:
            raise unknown(" (write segments.<name>.<key>)")
        matches = [seg for seg in data["segments"] if seg["name"] == parts[1]]
        if not matches:
            names = ", ".join(seg["name"] for seg in data["segments"]) or "none"
            raise unknown(f" (no segment named {parts[1]!r}; segments: {names})")
        target = matches[0]
        if parts[2] not in target or parts[2] == "name":
            raise unknown(f" (segment keys: {', '.join(k for k in target if k != 'name')})")
        target[parts[2]] = value
        return
    node: Any = data
    for part in parts[:-1]:
        if not isinstance(node, dict) or part not in node or not isinstance(node[part], dict):
            raise unknown()
        node = node[part]
    leaf = parts[-1]
    if not isinstance(node, dict) or leaf not in node or isinstance(node[leaf], dict):
        raise unknown()
    if isinstance(node[leaf], list) and not isinstance(value, list):
        raise unknown(" (it is an array: give one, e.g. ['a', 'b'])")
    node[leaf] = value


def _leaf_paths(data: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Dotted paths of the single values of a resolved scenario (segments by name)."""
    out: list[str] = []
    for key, value in data.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if key == "segments" and not prefix:
            for seg in value:
                out += [f"segments.{seg['name']}.{k}" for k in seg if k != "name"]
        elif isinstance(value, Mapping):
            out += _leaf_paths(value, path)
        else:
            out.append(path)
    return out


def parse_assignment(text: str, *, option: str = "--set") -> tuple[str, Any]:
    """Read ``KEY=VALUE`` with the value as a TOML value (``2``, ``false``, ``"fast"``, ``[...]``).

    A value that is not TOML is taken as a string, so ``solver.name=fast`` needs no quotes; a
    string where a number is expected is then refused by the scenario's validation, naming it.

    Raises
    ------
    ScenarioError
        No ``=``, or an empty key.
    """
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ScenarioError(
            f"{option} {text!r} is not of the form KEY=VALUE, e.g. {option} objective.alpha=2 "
            f"or {option} budget.exhaust=false. Keys: {', '.join(SWEEPABLE)}, and any other "
            "single value of the scenario (allocator scenario show FILE lists them)."
        )
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return key, value


def load_scenario_with(path: str | Path, assignments: Iterable[str] = ()) -> Scenario:
    """:func:`load_scenario`, then the command line's ``--set KEY=VALUE`` applied and re-validated.

    Raises
    ------
    ScenarioError
        The file is invalid, or a ``--set`` names an unknown key or gives a bad value; the
        message names the file, ``--set`` and the key.
    """
    scenario = load_scenario(path)
    overrides = parse_assignments(assignments)
    if not overrides:
        return scenario
    return with_overrides(scenario, overrides, label=f"{path} with --set")


def parse_assignments(texts: Iterable[str], *, option: str = "--set") -> dict[str, Any]:
    """``--set`` options as overrides for :func:`with_overrides`; a key given twice is an error."""
    out: dict[str, Any] = {}
    for text in texts:
        key, value = parse_assignment(text, option=option)
        if key in out:
            raise ScenarioError(f"{option} gives {key!r} twice; give each key once.")
        out[key] = value
    return out
