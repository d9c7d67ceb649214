"""The depeg compensation's rules: typed settings read from a TOML file, with their ranges.

The annotations of :class:`DepegRules` are the schema (strict types, ``Field`` ranges for the
prices, and a ``_check`` validator for the rules that span keys); :func:`depeg_rules_from_dict`
validates a ``[depeg]`` table against them with pydantic.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, model_validator, with_config

from allocator import names as N
from allocator.errors import ScenarioError
from allocator.settings.toml import build, load_toml, to_dict
from allocator.settings.types import (
    SETTINGS_CONFIG,
    Allowed,
    Bool,
    Float,
    Str,
    UtcDateTime,
    pairs_table,
    rule_error,
)

#: The announced window, read as the half-open 40 minutes [21:36, 22:16).
DEPEG_WINDOW_START = datetime(2025, 10, 10, 21, 36, tzinfo=UTC)
DEPEG_WINDOW_END = datetime(2025, 10, 10, 22, 16, tzinfo=UTC)
REFERENCE_AT = datetime(2025, 10, 11, 0, 0, tzinfo=UTC)
#: Futures, Margin and Loan accounts.
DEPEG_PRODUCTS = N.COVERED_PRODUCTS + (N.LOAN,)
#: USDe's minimum reference price (USD): its redemption value; no figure was published.
DEFAULT_FLOORS = (("USDe", 1.0),)
#: The ``[depeg]`` table of a rules file.
TOML_SECTION = "depeg"

#: Largest reference price or floor (USD) a rule may set: compensation is counted in int64
#: cents, and a price this far above any asset's would overflow it (and is a typo in any case).
MAX_PRICE_USD = 10_000_000.0

ReferencePrice = Annotated[
    Float,
    Field(gt=0, le=MAX_PRICE_USD),
    Allowed(f"a finite price in USD > 0 and at most {MAX_PRICE_USD:,.0f}"),
]
FloorPrice = Annotated[
    Float,
    Field(ge=0, le=MAX_PRICE_USD),
    Allowed(f"a finite price in USD >= 0 and at most {MAX_PRICE_USD:,.0f}"),
]

# ----------------------------------------------------------------------------- rules


@with_config(SETTINGS_CONFIG)
@dataclass(frozen=True)
class DepegRules:
    """The depeg compensation rule's parameters (module docstring for each reading).

    ``window_start`` is inclusive and ``window_end`` exclusive. ``reference_prices`` overrides
    the reference price of an asset (USD); ``floors`` bounds it from below (USD).
    ``refund_fees`` adds the liquidation fee of a compensated position.
    """

    window_start: UtcDateTime = DEPEG_WINDOW_START
    """First instant of the depeg window (inclusive)."""
    window_end: UtcDateTime = DEPEG_WINDOW_END
    """End of the depeg window (exclusive)."""
    assets: tuple[Str, ...] = N.DEPEG_ASSETS
    """Assets whose depeg is compensated."""
    products: tuple[Str, ...] = DEPEG_PRODUCTS
    """Account types whose positions count."""
    reference_at: UtcDateTime = REFERENCE_AT
    """When the reference prices are taken."""
    reference_prices: Annotated[tuple[tuple[str, float], ...], pairs_table(ReferencePrice)] = ()
    """Reference price of an asset (USD), replacing the price at reference_at."""
    floors: Annotated[tuple[tuple[str, float], ...], pairs_table(FloorPrice)] = DEFAULT_FLOORS
    """Lowest reference price of an asset (USD)."""
    refund_fees: Bool = True
    """Add the liquidation fee of a compensated position."""

    @model_validator(mode="after")
    def _check(self) -> DepegRules:
        _check_rules(self)
        return self


def _check_rules(rules: DepegRules) -> None:
    """The rules that span keys (single-key ranges are the annotations)."""

    def bad(key: str, text: str) -> Exception:
        return rule_error(key, text, quote_key=True)

    if not rules.window_start < rules.window_end:
        raise bad(
            "window_end",
            f"({rules.window_end.isoformat()}) must be after window_start "
            f"({rules.window_start.isoformat()})",
        )
    if not rules.assets:
        raise bad("assets", "must list at least one asset")
    upper = [a.upper() for a in rules.assets]
    if any(not a.strip() for a in rules.assets) or len(set(upper)) != len(upper):
        raise bad(
            "assets",
            f"must be distinct non-empty names (case-insensitive), not {list(rules.assets)}",
        )
    unknown = [p for p in rules.products if p not in N.PRODUCTS]
    if unknown or not rules.products:
        raise bad(
            "products",
            f"must be a non-empty list of {', '.join(N.PRODUCTS)}; got {list(rules.products)}",
        )
    for key in ("reference_prices", "floors"):
        pairs = getattr(rules, key)
        names = [a.upper() for a, _ in pairs]
        if len(set(names)) != len(names):
            raise bad(key, "names an asset twice")
        for asset, _ in pairs:
            if asset.upper() not in upper:
                raise bad(
                    f"{key}.{asset}", f"is not one of the rule's assets ({', '.join(rules.assets)})"
                )


def validate_depeg_rules(rules: DepegRules, *, file: str | Path = "<rules>") -> DepegRules:
    """Check types, ranges and cross-references of rules built in code; return them unchanged.

    Raises
    ------
    ScenarioError
        The first broken rule, naming the key under ``depeg``.
    """
    build(DepegRules, to_dict(rules), file=file, prefix=TOML_SECTION)
    return rules


def depeg_rules_from_dict(data: Mapping[str, Any], *, file: str | Path = "<rules>") -> DepegRules:
    """Build and validate :class:`DepegRules` from the contents of a ``[depeg]`` table."""
    rules = build(DepegRules, data, file=file, prefix=TOML_SECTION)
    return validate_depeg_rules(rules, file=file)


def load_depeg_rules(path: str | Path, overrides: Mapping[str, Any] | None = None) -> DepegRules:
    """Read the ``[depeg]`` table of a TOML file (other tables are left to their owners).

    ``overrides`` replaces keys of the table before it is built (the command line's options);
    ``reference_prices`` and ``floors`` given there are merged per asset into the file's.
    """
    raw = load_toml(path)
    section = raw.get(TOML_SECTION)
    if not isinstance(section, Mapping):
        found = ", ".join(sorted(raw)) or "none"
        raise ScenarioError(
            f"{path}: no [{TOML_SECTION}] table (top-level keys and tables found: {found}).",
            hint="put the depeg compensation settings under a [depeg] table.",
        )
    return depeg_rules_from_dict(merge_overrides(section, overrides or {}), file=path)


def merge_overrides(data: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` with ``overrides`` applied.

    The price tables (``reference_prices``, ``floors``) are merged per asset into ``data``'s, or
    into the defaults' when ``data`` has none: ``--floor BNSOL=30`` keeps USDe's default floor,
    and ``--floor USDe=0`` removes it.
    """
    out = dict(data)
    defaults = to_dict(DepegRules())
    for key, value in overrides.items():
        if key in ("reference_prices", "floors"):
            base = out.get(key, defaults[key])
            out[key] = {**base, **value} if isinstance(base, Mapping) else value
        else:
            out[key] = value
    return out


def rules_to_dict(rules: DepegRules) -> dict[str, Any]:
    """JSON-ready dict of the rules (the ``[depeg]`` table that rebuilds them)."""
    return to_dict(rules)
