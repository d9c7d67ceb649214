"""Settings files of every kind: which kind a file is, its JSON Schema, and its resolved form.

Three kinds of settings file exist: a voucher scenario (:class:`~allocator.settings.models.Scenario`),
a loan-fund scenario (:class:`~allocator.settings.loans.LoanScenario`) and depeg rules (the
``[depeg]`` table of :class:`~allocator.settings.depeg.DepegRules`). This module tells them
apart as the loaders do, loads any of them, writes the JSON Schema editors use to complete and
check keys, and writes a fully resolved file back as TOML. ``allocator scenario`` is a thin
layer over it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from allocator.errors import AllocatorError, ScenarioError
from allocator.settings.depeg import TOML_SECTION, DepegRules, depeg_rules_from_dict, rules_to_dict
from allocator.settings.docstrings import with_field_descriptions
from allocator.settings.loans import (
    LOAN_ONLY_KEYS,
    VOUCHER_SCENARIO_KEYS,
    LoanScenario,
    loan_scenario_from_dict,
    loan_scenario_to_dict,
)
from allocator.settings.models import Scenario
from allocator.settings.scenarios import load_scenario, scenario_to_dict
from allocator.settings.toml import adapter, load_toml

__all__ = [
    "KINDS",
    "SCHEMA_DIALECT",
    "Kind",
    "ResolvedFile",
    "detect_kind",
    "json_schema",
    "resolve_file",
    "to_toml",
]

Kind = Literal["voucher", "loans", "depeg"]
#: The kinds of settings file, with the dataclass each resolves to.
KINDS: dict[str, type] = {"voucher": Scenario, "loans": LoanScenario, "depeg": DepegRules}
#: JSON Schema dialect pydantic writes.
SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"

_TITLES = {
    "voucher": "allocator voucher scenario",
    "loans": "allocator loan-fund scenario",
    "depeg": "allocator depeg compensation rules",
}


def detect_kind(data: Mapping[str, Any]) -> Kind:
    """The kind of a parsed settings file, told apart as the loaders do.

    A file with ``fund_usd`` and no ``[budget]`` is a loan scenario (the voucher loader refuses
    it for that reason); a file with only a ``[depeg]`` table is depeg rules; anything else is
    read as a voucher scenario (so its errors are the voucher scenario's).
    """
    if "fund_usd" in data and "budget" not in data:
        return "loans"
    keys = set(data)
    if TOML_SECTION in keys and not keys & (VOUCHER_SCENARIO_KEYS | LOAN_ONLY_KEYS):
        return "depeg"
    return "voucher"


@dataclass(frozen=True)
class ResolvedFile:
    """A settings file read, validated and resolved: every key with its value."""

    path: Path
    kind: Kind
    settings: Any
    resolved: dict[str, Any]


def resolve_file(path: str | Path) -> ResolvedFile:
    """Read and validate a settings file of any kind (:func:`detect_kind`).

    Raises
    ------
    ScenarioError
        The file cannot be read, is not TOML, or breaks a rule of its kind; the message names
        the file and the key.
    """
    path = Path(path)
    data = load_toml(path)
    kind = detect_kind(data)
    if kind == "loans":
        loan = loan_scenario_from_dict(data, file=str(path))
        return ResolvedFile(path, kind, loan, loan_scenario_to_dict(loan))
    if kind == "depeg":
        section = data[TOML_SECTION]
        if not isinstance(section, Mapping):
            raise ScenarioError(f"{path}: key '{TOML_SECTION}' must be a table.")
        rules = depeg_rules_from_dict(section, file=path)
        return ResolvedFile(path, kind, rules, {TOML_SECTION: rules_to_dict(rules)})
    scenario = load_scenario(path)
    return ResolvedFile(path, kind, scenario, scenario_to_dict(scenario))


def json_schema(kind: str = "voucher") -> dict[str, Any]:
    """The JSON Schema of a kind of settings file, for editors that complete and check keys.

    Descriptions come from the field docstrings, ranges from the ``Field`` constraints;
    defaults are written as the file would write them (tables for name -> value pairs).

    Raises
    ------
    AllocatorError
        An unknown kind.
    """
    if kind not in KINDS:
        raise AllocatorError(
            f"--kind must be one of {', '.join(KINDS)}, not {kind!r} "
            "(e.g. allocator scenario schema --kind loans)."
        )
    cls = KINDS[kind]
    schema = with_field_descriptions(adapter(cls).json_schema(mode="validation"), cls)
    _table_defaults(schema)
    if kind == "depeg":
        # the rules are the [depeg] table of a file that may hold other tables
        defs = schema.pop("$defs", {})
        defs[cls.__name__] = schema
        schema = {
            "type": "object",
            "properties": {TOML_SECTION: {"$ref": f"#/$defs/{cls.__name__}"}},
            "required": [TOML_SECTION],
            "$defs": defs,
        }
    if kind == "voucher":
        # the loader names a scenario after its file when ``name`` is left out
        schema["required"] = [k for k in schema.get("required", []) if k != "name"]
        if not schema["required"]:
            del schema["required"]
    title = _TITLES[kind]
    head = {
        "$schema": SCHEMA_DIALECT,
        "title": title,
        "description": f"{title}, as read by allocator (TOML; every key is optional unless "
        "required). Generated by `allocator scenario schema`.",
    }
    return {**head, **{k: v for k, v in schema.items() if k not in head}}


def _table_defaults(schema: dict[str, Any]) -> None:
    """Write name -> value defaults as tables, as a file writes them (pydantic writes pairs)."""
    for sub in [schema, *schema.get("$defs", {}).values()]:
        for prop in sub.get("properties", {}).values():
            default = prop.get("default")
            is_table = prop.get("type") == "object" or "additionalProperties" in prop
            if is_table and isinstance(default, list):
                prop["default"] = {str(k): v for k, v in default}


_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_OFFSET_DATETIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")


def _key(name: str) -> str:
    return name if _BARE_KEY.match(name) else json.dumps(name)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        # datetimes are resolved to ISO-8601 strings with an offset: write them as TOML
        # offset date-times, which every reader of the file takes as such
        return value if _OFFSET_DATETIME.match(value) else json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_key(str(k))} = {_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no TOML form for {type(value).__name__}")


def _is_table_array(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def to_toml(data: Mapping[str, Any], *, _prefix: str = "") -> str:
    """A resolved settings dict as TOML that reads back to the same settings.

    Tables become ``[section]`` headers, lists of tables ``[[section]]``; name -> value tables
    whose values are plain (``[objective.features]``) stay tables. TOML has no null: a key
    without a value is written as a comment (``# coverage_cap = (not set)``), which reads back
    as the default, ``None``.
    """
    lines: list[str] = []
    nested: list[tuple[str, Any]] = []
    for name, value in data.items():
        if isinstance(value, dict) or _is_table_array(value):
            nested.append((name, value))
        elif value is None:
            lines.append(f"# {_key(name)} = (not set)")
        else:
            lines.append(f"{_key(name)} = {_value(value)}")
    blocks = ["\n".join(lines)] if lines else []
    for name, value in nested:
        path = f"{_prefix}.{_key(name)}" if _prefix else _key(name)
        if isinstance(value, dict):
            body = to_toml(value, _prefix=path)
            blocks.append(f"[{path}]\n{body}".rstrip())
        else:
            for item in value:
                body = to_toml(item, _prefix=path)
                blocks.append(f"[[{path}]]\n{body}".rstrip())
    return "\n\n".join(b for b in blocks if b) + ("\n" if not _prefix else "")
