"""The eligibility rules as configured: products, thresholds and their phase-in bands, checked."""

from __future__ import annotations

import math
from datetime import datetime

from allocator import names as N
from allocator.errors import ScenarioError
from allocator.kernel.phase import Band
from allocator.settings.models import EligibilityRules

__all__ = ["check_rules", "has_phase_in", "loss_band", "products", "ratio_band"]


def has_phase_in(rules: EligibilityRules) -> bool:
    """Whether the rules soften a threshold with a phase-in band."""
    return rules.phase_in_loss_usd is not None or rules.phase_in_ratio is not None


def products(rules: EligibilityRules) -> tuple[str, ...]:
    """The covered products, each once, in the order the rules list them."""
    return tuple(dict.fromkeys(rules.products))


def check_rules(rules: EligibilityRules) -> None:
    """Raise :class:`~allocator.errors.ScenarioError` for inconsistent rules (unknown product,
    empty or reversed window, negative threshold, a band not below its threshold)."""

    def bad(msg: str) -> ScenarioError:
        return ScenarioError(f"Eligibility rules: {msg}.")

    unknown = [p for p in rules.products if p not in N.PRODUCTS]
    if unknown:
        raise bad(f"unknown product(s) {unknown}; known products are {list(N.PRODUCTS)}")
    if not rules.products:
        raise bad("products is empty, so nobody could qualify")
    for name in ("window_start", "window_end", "snapshot_at"):
        value = getattr(rules, name)
        if not isinstance(value, datetime) or value.tzinfo is None:
            raise bad(f"{name} must be a time-zone-aware datetime, not {value!r}")
    if not rules.window_start < rules.window_end:
        raise bad(f"window_start {rules.window_start} is not before window_end {rules.window_end}")
    for name in ("min_loss_usd", "min_loss_ratio"):
        value = getattr(rules, name)
        if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise bad(f"{name} must be a finite number >= 0, not {value!r}")
    for name, top in (("phase_in_loss_usd", "min_loss_usd"), ("phase_in_ratio", "min_loss_ratio")):
        value = getattr(rules, name)
        if value is None:
            continue
        if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise bad(f"{name} must be a finite number >= 0 or absent, not {value!r}")
        if not value < getattr(rules, top):
            raise bad(f"{name} ({value!r}) must be below {top} ({getattr(rules, top)!r})")
    if rules.nonpositive_net_assets not in ("eligible", "exclude"):
        raise bad(
            f"nonpositive_net_assets must be 'eligible' or 'exclude', not {rules.nonpositive_net_assets!r}"
        )
    if rules.depeg_policy not in ("exclude", "net", "ignore"):
        raise bad(f"depeg_policy must be 'exclude', 'net' or 'ignore', not {rules.depeg_policy!r}")


def loss_band(rules: EligibilityRules) -> Band:
    """The loss threshold ``min_loss_usd`` and its phase-in band (``phase_in_loss_usd``)."""
    low = None if rules.phase_in_loss_usd is None else float(rules.phase_in_loss_usd)
    return Band(low=low, high=float(rules.min_loss_usd))


def ratio_band(rules: EligibilityRules) -> Band:
    """The loss-ratio threshold ``min_loss_ratio`` and its phase-in band (``phase_in_ratio``)."""
    low = None if rules.phase_in_ratio is None else float(rules.phase_in_ratio)
    return Band(low=low, high=float(rules.min_loss_ratio))
