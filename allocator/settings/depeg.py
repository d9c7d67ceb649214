"""The depeg compensation's rules: typed settings read from a TOML file, with their ranges."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from allocator import names as N
from allocator.errors import ScenarioError
from allocator.settings.toml import build, load_toml, to_dict

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

# ----------------------------------------------------------------------------- rules


@dataclass(frozen=True)
class DepegRules:
    """The depeg compensation rule's parameters (module docstring for each reading).

    ``window_start`` is inclusive and ``window_end`` exclusive. ``reference_prices`` overrides
    the reference price of an asset (USD); ``floors`` bounds it from below (USD).
    ``refund_fees`` adds the liquidation fee of a compensated position.
    """

    window_start: datetime = DEPEG_WINDOW_START
    window_end: datetime = DEPEG_WINDOW_END
    assets: tuple[str, ...] = N.DEPEG_ASSETS
    products: tuple[str, ...] = DEPEG_PRODUCTS
    reference_at: datetime = REFERENCE_AT
    reference_prices: tuple[tuple[str, float], ...] = ()
    floors: tuple[tuple[str, float], ...] = DEFAULT_FLOORS
    refund_fees: bool = True


#: Largest reference price or floor (USD) a rule may set.
MAX_PRICE_USD = 10_000_000.0


def validate_depeg_rules(rules: DepegRules, *, file: str | Path = "<rules>") -> DepegRules:
    """Check ranges and cross-references; raise :class:`ScenarioError` naming the key."""

    def bad(key: str, text: str) -> ScenarioError:
        return ScenarioError(f"{file}: key '{TOML_SECTION}.{key}' {text}.")

    for key in ("window_start", "window_end", "reference_at"):
        value = getattr(rules, key)
        if not isinstance(value, datetime) or value.tzinfo is None:
            raise bad(key, f"must be a time-zone-aware date-time, not {value!r}")
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
        for asset, price in pairs:
            if asset.upper() not in upper:
                raise bad(
                    f"{key}.{asset}", f"is not one of the rule's assets ({', '.join(rules.assets)})"
                )
            ok = isinstance(price, (int, float)) and math.isfinite(price)
            low_bad = price <= 0 if key == "reference_prices" else price < 0
            # compensation is counted in int64 cents: a price this far above any asset's would
            # overflow it (and is a typo in any case)
            if not ok or low_bad or price > MAX_PRICE_USD:
                need = "> 0" if key == "reference_prices" else ">= 0"
                raise bad(
                    f"{key}.{asset}",
                    f"must be a finite price in USD {need} and at most {MAX_PRICE_USD:,.0f}, "
                    f"not {price!r}",
                )
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
