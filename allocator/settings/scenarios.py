"""Voucher scenarios: TOML files under ``scenarios/`` -> validated :class:`~allocator.settings.models.Scenario`.

A scenario file has one table per section of :class:`~allocator.settings.models.Scenario`
(``[eligibility]``, ``[objective]`` with ``[objective.features]``, ``[bounds]``, ``[budget]``,
``[[segments]]``, ``[solver]``, ``[rounding]``, ``[payouts]``) plus top-level ``name`` (default:
the file's stem) and ``description``. Omitted keys take the defaults of :mod:`allocator.settings.models`,
which are a careful reading of the announcement.

Loading is two steps: :func:`allocator.settings.toml.build` checks keys and types, then
:func:`validate_scenario` checks ranges and cross-field rules; each error names the file, the
dotted key and what is allowed.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import polars as pl

from allocator import names as N
from allocator.errors import ScenarioError
from allocator.settings.models import MAX_PAYOUT_HOURS, Scenario
from allocator.settings.toml import build, load_toml, to_dict

__all__ = [
    "FEATURE_SCHEMA",
    "SWEEPABLE",
    "check_predicate",
    "feature_schema",
    "load_scenario",
    "parse_scenario",
    "scenario_to_dict",
    "validate_scenario",
    "weight_feature_columns",
    "with_overrides",
]

#: Feature-matrix columns (``eligible.parquet``) a segment predicate or a weight may use, with
#: the dtypes predicates are checked against. The per-product loss columns are added for the
#: products a scenario covers (:func:`feature_schema`).
FEATURE_SCHEMA: dict[str, pl.DataType] = {
    N.USER_ID: pl.Int64(),
    N.LOSS_USD: pl.Float64(),
    N.GROSS_LOSS_USD: pl.Float64(),
    N.FEE_USD: pl.Float64(),
    N.LOSS_RATIO: pl.Float64(),
    N.NET_ASSETS_USD: pl.Float64(),
    N.N_EVENTS: pl.Int64(),
    N.FIRST_EVENT_TS: pl.Datetime("us", "UTC"),
    N.LAST_EVENT_TS: pl.Datetime("us", "UTC"),
    N.VIP_TIER: pl.Int64(),
    N.IS_INSTITUTIONAL: pl.Boolean(),
    N.REGION: pl.String(),
    N.ACCOUNT_AGE_DAYS: pl.Int64(),
    N.KYC_STATUS: pl.String(),
    N.DEPEG_COMP_USD: pl.Float64(),
}

#: Columns that are not weight features: identifiers, timestamps, strings, and the loss ratio
#: (it is +inf for users with no net assets; ``ratio_exponent`` and ``ratio_cap`` handle it).
_NOT_WEIGHT_FEATURES = frozenset({N.USER_ID, N.FIRST_EVENT_TS, N.LAST_EVENT_TS, N.LOSS_RATIO})

#: Dotted parameters ``with_overrides`` and ``allocator sweep`` take, with their meaning.
#: ``<name>`` stands for a feature column or a segment name.
SWEEPABLE: dict[str, str] = {
    "objective.alpha": "fairness: 0 utilitarian, 1 proportional (log), large -> max-min",
    "objective.loss_exponent": "exponent a of the loss in the weight L^a",
    "objective.ratio_exponent": "exponent b of the capped loss ratio in the weight min(r, cap)^b",
    "objective.ratio_cap": "loss ratio above which the ratio stops raising the weight",
    "objective.features.<name>": "coefficient c of a feature column in the weight exp(c x)",
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

#: Allowed ranges; open ends are written out in messages.
ALPHA_MAX = 100.0
EXPONENT_LIMIT = 10.0
BUDGET_MAX_USD = 1e13  # keeps budget cents exact in float64 and int64
_SEGMENT_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
_SCENARIO_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_REGION = re.compile(r"^[A-Z]{2}$")


def feature_schema(products: tuple[str, ...] = N.COVERED_PRODUCTS) -> dict[str, pl.DataType]:
    """Feature-matrix columns and dtypes for a scenario covering ``products``."""
    schema = dict(FEATURE_SCHEMA)
    for p in products:
        schema[N.product_loss_column(p)] = pl.Float64()
    return schema


def weight_feature_columns(products: tuple[str, ...] = N.COVERED_PRODUCTS) -> tuple[str, ...]:
    """Numeric and boolean feature columns an ``[objective.features]`` coefficient may name."""
    return tuple(
        name
        for name, dtype in feature_schema(products).items()
        if name not in _NOT_WEIGHT_FEATURES and (dtype.is_numeric() or dtype == pl.Boolean())
    )


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
    scenario = build(Scenario, data, file=file)
    return validate_scenario(scenario, file=file)


def _range(file: Any, key: str, value: Any, allowed: str) -> ScenarioError:
    return ScenarioError(f"{file}: {key} = {value!r} is out of range; allowed: {allowed}.")


def _whole_cents(x: float) -> bool:
    return round(x, 2) == x


def validate_scenario(s: Scenario, *, file: str | Path = "<scenario>") -> Scenario:
    """Check ranges and cross-field rules of a typed scenario; return it unchanged.

    Rules: ``0 <= alpha <= 100``; exponents in [-10, 10]; ``ratio_cap > 0``; feature coefficients
    name numeric or boolean feature columns; ``floor_usd >= 0``; ``cap_usd > floor_usd``;
    ``coverage_cap > 0``; ``0 < total_usd <= 1e13`` in whole cents; thresholds ``>= 0``;
    ``window_start < window_end``; products a non-empty subset of :data:`allocator.names.PRODUCTS`;
    regions two upper-case letters; segment names unique (letters, digits, ``_``, ``-``), shares
    in [0, 1] with ``min_share <= max_share``, ``where`` a row-wise boolean Polars SQL expression
    over known feature columns; ``batch_size >= 1``; payout hours ``0 <= start < finish``; ``name``
    1 to 100 letters, digits, ``.``, ``_`` or ``-`` starting with a letter or digit (it names the
    default run directory).
    """
    if not _SCENARIO_NAME.match(s.name):
        # the name is the default run directory (runs/<name>) and part of file names, so it must
        # not be able to climb out of runs/ or hide as a dot-file
        raise ScenarioError(
            f"{file}: key 'name' = {s.name!r} is not a valid scenario name; allowed: 1 to 100 "
            "letters, digits, '.', '_' or '-', starting with a letter or digit."
        )
    _validate_eligibility(s, file)
    _validate_objective(s, file)
    _validate_bounds_budget(s, file)
    _validate_segments(s, file)
    p = s.payouts
    if p.batch_size < 1:
        raise _range(file, "payouts.batch_size", p.batch_size, ">= 1")
    if p.start_within_hours < 0:
        raise _range(file, "payouts.start_within_hours", p.start_within_hours, ">= 0")
    if p.finish_within_hours > MAX_PAYOUT_HOURS:
        raise _range(
            file,
            "payouts.finish_within_hours",
            p.finish_within_hours,
            f"<= {MAX_PAYOUT_HOURS} (ten years)",
        )
    if p.announced_at.year > 9000:
        raise _range(file, "payouts.announced_at", p.announced_at.isoformat(), "a year before 9000")
    if not p.finish_within_hours > p.start_within_hours:
        raise _range(
            file,
            "payouts.finish_within_hours",
            p.finish_within_hours,
            f"> payouts.start_within_hours ({p.start_within_hours}): the batches need time",
        )
    return s


def _validate_eligibility(s: Scenario, file: Any) -> None:
    e = s.eligibility
    if not e.window_start < e.window_end:
        raise ScenarioError(
            f"{file}: eligibility.window_start ({e.window_start.isoformat()}) must be before "
            f"eligibility.window_end ({e.window_end.isoformat()})."
        )
    if not e.products:
        raise ScenarioError(
            f"{file}: eligibility.products must not be empty; allowed: {', '.join(N.PRODUCTS)}."
        )
    for i, p in enumerate(e.products):
        if p not in N.PRODUCTS:
            raise ScenarioError(
                f"{file}: eligibility.products[{i}] = {p!r} is not a known product; "
                f"allowed: {', '.join(N.PRODUCTS)}."
            )
    if len(set(e.products)) != len(e.products):
        raise ScenarioError(
            f"{file}: eligibility.products lists a product twice: {list(e.products)}."
        )
    for i, r in enumerate(e.restricted_regions):
        if not _REGION.match(r):
            raise ScenarioError(
                f"{file}: eligibility.restricted_regions[{i}] = {r!r} is not a region code; "
                f"allowed: ISO 3166-1 alpha-2, two upper-case letters such as 'US'."
            )
    if e.min_loss_usd < 0:
        raise _range(file, "eligibility.min_loss_usd", e.min_loss_usd, ">= 0")
    if e.min_loss_ratio < 0:
        raise _range(file, "eligibility.min_loss_ratio", e.min_loss_ratio, ">= 0")
    for key, value, top, top_value in (
        ("phase_in_loss_usd", e.phase_in_loss_usd, "min_loss_usd", e.min_loss_usd),
        ("phase_in_ratio", e.phase_in_ratio, "min_loss_ratio", e.min_loss_ratio),
    ):
        if value is not None and not (0 <= value < top_value):
            raise _range(
                file,
                f"eligibility.{key}",
                value,
                f">= 0 and below eligibility.{top} ({top_value:g})",
            )


def _validate_objective(s: Scenario, file: Any) -> None:
    o = s.objective
    if not 0.0 <= o.alpha <= ALPHA_MAX:
        raise _range(file, "objective.alpha", o.alpha, f"0 <= alpha <= {ALPHA_MAX:g}")
    for key in ("loss_exponent", "ratio_exponent"):
        value = getattr(o, key)
        if not -EXPONENT_LIMIT <= value <= EXPONENT_LIMIT:
            raise _range(
                file, f"objective.{key}", value, f"{-EXPONENT_LIMIT:g} to {EXPONENT_LIMIT:g}"
            )
    if not o.ratio_cap > 0:
        raise _range(file, "objective.ratio_cap", o.ratio_cap, "> 0")
    allowed = weight_feature_columns(s.eligibility.products)
    seen: set[str] = set()
    for name, _ in o.features:
        if name in seen:
            raise ScenarioError(f"{file}: objective.features names {name!r} twice.")
        seen.add(name)
        if name not in allowed:
            why = (
                " (the loss ratio enters through ratio_exponent and ratio_cap)"
                if name == N.LOSS_RATIO
                else ""
            )
            raise ScenarioError(
                f"{file}: objective.features.{name} is not a numeric or boolean feature column"
                f"{why}; allowed: {', '.join(allowed)}."
            )


def _validate_bounds_budget(s: Scenario, file: Any) -> None:
    b = s.bounds
    if b.floor_usd < 0:
        raise _range(file, "bounds.floor_usd", b.floor_usd, ">= 0")
    if not b.cap_usd > b.floor_usd:
        raise _range(file, "bounds.cap_usd", b.cap_usd, f"> bounds.floor_usd ({b.floor_usd:g})")
    if b.coverage_cap is not None and not b.coverage_cap > 0:
        raise _range(
            file, "bounds.coverage_cap", b.coverage_cap, "> 0 (or omit it for no coverage cap)"
        )
    total = s.budget.total_usd
    if not 0 < total <= BUDGET_MAX_USD:
        raise _range(file, "budget.total_usd", total, f"0 < total_usd <= {BUDGET_MAX_USD:g}")
    if not _whole_cents(total):
        raise _range(file, "budget.total_usd", total, "whole cents (at most 2 decimals)")


def _validate_segments(s: Scenario, file: Any) -> None:
    schema = feature_schema(s.eligibility.products)
    seen: set[str] = set()
    for i, seg in enumerate(s.segments):
        key = f"segments[{i}]"
        if not _SEGMENT_NAME.match(seg.name):
            raise ScenarioError(
                f"{file}: {key}.name = {seg.name!r} is not allowed; use letters, digits, '_' and '-' "
                f"(names appear in dotted parameters and '+'-joined labels)."
            )
        if seg.name in seen:
            raise ScenarioError(
                f"{file}: {key}.name = {seg.name!r} is used by an earlier segment; names must be unique."
            )
        seen.add(seg.name)
        for side in ("min_share", "max_share"):
            value = getattr(seg, side)
            if value is not None and not 0.0 <= value <= 1.0:
                raise _range(file, f"{key}.{side}", value, "0 <= share <= 1")
        if (
            seg.min_share is not None
            and seg.max_share is not None
            and seg.min_share > seg.max_share
        ):
            raise _range(
                file, f"{key}.min_share", seg.min_share, f"<= {key}.max_share ({seg.max_share:g})"
            )
        check_predicate(seg.where, schema, file=file, key=f"{key}.where")


def check_predicate(
    where: str, schema: Mapping[str, pl.DataType], *, file: Any, key: str
) -> pl.Expr:
    """Parse a segment predicate with ``pl.sql_expr`` and check it is a row-wise boolean over ``schema``.

    The expression is evaluated on an empty frame with the feature-matrix schema, which catches
    unknown columns, type mismatches, non-boolean results and aggregates without any data.
    """
    known = ", ".join(schema)
    try:
        expr = pl.sql_expr(where)
    except Exception as exc:
        raise ScenarioError(
            f"{file}: {key} = {where!r} is not a Polars SQL expression ({_first_line(exc)}). "
            f"Columns: {known}."
        ) from None
    try:
        roots = expr.meta.root_names()
    except Exception:
        roots = []
    unknown = sorted({r for r in roots if r not in schema})
    if unknown:
        raise ScenarioError(
            f"{file}: {key} = {where!r} uses unknown column(s) {', '.join(unknown)}; columns: {known}."
        )
    try:
        result = pl.DataFrame(schema=dict(schema)).select(expr.alias("_m"))
    except Exception as exc:
        raise ScenarioError(
            f"{file}: {key} = {where!r} cannot be evaluated on the feature matrix ({_first_line(exc)})."
        ) from None
    if result.height != 0 or result.width != 1:
        raise ScenarioError(
            f"{file}: {key} = {where!r} is not a row-by-row condition (aggregates such as SUM are not allowed)."
        )
    dtype = result.schema["_m"]
    if dtype != pl.Boolean():
        raise ScenarioError(
            f"{file}: {key} = {where!r} gives {dtype}, not a true/false condition "
            f'(e.g. "{N.LOSS_USD} < 10000").'
        )
    return expr


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def scenario_to_dict(s: Scenario) -> dict[str, Any]:
    """The fully resolved scenario as a JSON-safe dict: every knob, defaults included.

    ``parse_scenario(scenario_to_dict(s), file=...) == s``.
    """
    return to_dict(s)


def with_overrides(s: Scenario, overrides: Mapping[str, Any]) -> Scenario:
    """A copy of ``s`` with dotted parameters replaced, re-typed and re-validated.

    Paths name a single value: ``objective.alpha``, ``budget.total_usd``, ``bounds.coverage_cap``,
    ``objective.features.<column>`` (adds the coefficient if absent),
    ``segments.<name>.min_share``; see :data:`SWEEPABLE` for the numeric ones.

    Raises
    ------
    ScenarioError
        An unknown path, a wrong type or an out-of-range value.
    """
    label = f"scenario '{s.name}' with overrides"
    data = copy.deepcopy(scenario_to_dict(s))
    for path, value in overrides.items():
        _set_path(data, path, value, label)
    return parse_scenario(data, file=label)


def _set_path(data: dict[str, Any], path: str, value: Any, label: str) -> None:
    parts = path.split(".")
    examples = ", ".join(SWEEPABLE)

    def unknown(extra: str = "") -> ScenarioError:
        return ScenarioError(
            f"{label}: unknown parameter '{path}'{extra}. Parameters include: {examples}."
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
    if not isinstance(node, dict) or leaf not in node or isinstance(node[leaf], (dict, list)):
        raise unknown()
    node[leaf] = value
