"""Plain words for the report's readers: amounts, shares, rules, bounds and exclusion reasons.

The report is read by people who design the programme and by the public, not by the model's
authors, so what the model calls ``n_cap`` or ``below_loss_ratio`` is written here as "users
paid the maximum (USD 6,000)" or "loss under 30% of net assets". Amounts are written in whole
words of money (``USD 1,000``, ``USD 10k``, ``USD 1.5M``) and never in scientific notation,
in tables and on chart axes alike. The JSON report keeps the machine keys.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from allocator import names as N
from allocator.settings.models import CLAIMS_RULES, EligibilityRules, Scenario


def _trim(value: float) -> str:
    # at most two decimals, trailing zeros dropped: 1.50 -> 1.5, 2.00 -> 2
    text = f"{value:,.2f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def usd_amount(amount: float, *, short: bool = False) -> str:
    """An amount in USD as a reader says it, never in scientific notation.

    Parameters
    ----------
    amount
        The amount in USD.
    short
        Write thousands as ``k`` from USD 1,000 (for tick labels on a logarithmic axis, where
        ``USD 1k`` and ``USD 10k`` stand side by side); otherwise from USD 10,000.

    Returns
    -------
    str
        ``USD 4``, ``USD 18.93``, ``USD 1,000`` (``USD 1k`` when ``short``), ``USD 12.5k``,
        ``USD 300M``, ``USD 1.2B``; a negative amount as ``-USD 5``, and a non-finite one by
        name (``USD inf``).
    """
    if not math.isfinite(amount):
        return f"USD {amount}"
    sign = "-" if amount < 0 else ""
    a = abs(amount)
    k_from = 1e3 if short else 1e4
    for size, start, suffix in ((1e9, 1e9, "B"), (1e6, 1e6, "M"), (1e3, k_from, "k")):
        if a >= start:
            return f"{sign}USD {_trim(a / size)}{suffix}"
    # cents are shown only when there are any: ticks stay "USD 250", amounts "USD 18.93"
    body = f"{a:,.0f}" if round(a, 2) == round(a) else f"{a:,.2f}"
    return f"{sign}USD {body}"


def percent(share: float) -> str:
    """A share as a percentage with at most two decimals: ``0.3`` -> ``30%``, ``0.255`` ->
    ``25.5%``."""
    if not math.isfinite(share):
        return f"{share}"
    return f"{_trim(100.0 * share)}%"


def plain_number(x: float | None, digits: int = 4) -> str:
    """``x`` to ``digits`` significant digits in positional notation (``0.000927``, never
    ``9.27e-04``); ``-`` when missing."""
    if x is None:
        return "-"
    if not math.isfinite(x):
        return "inf" if x > 0 else ("-inf" if x < 0 else "nan")
    if x == 0:
        return "0"
    magnitude = math.floor(math.log10(abs(x)))
    decimals = max(digits - 1 - magnitude, 0)
    text = f"{x:,.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


# --------------------------------------------------------------------------------------------
# the programme's rules
# --------------------------------------------------------------------------------------------

#: Each rule's name as the text says it.
_RULE_TITLES = {
    "alpha_fair": "alpha-fair",
    "max_min": "max-min",
}


def rule_title(rule: str) -> str:
    """A rule's name in words: ``constrained_equal_awards`` -> ``constrained equal awards``."""
    return _RULE_TITLES.get(rule, rule.replace("_", " "))


def shared(values: Sequence[float]) -> float | None:
    """The one value every run has, or None when the runs differ."""
    return values[0] if values and all(v == values[0] for v in values) else None


def floor_words(scenarios: Sequence[Scenario]) -> str:
    """``the minimum (USD 4)``, the amount shown when every run has the same floor."""
    floor = shared([s.bounds.floor_usd for s in scenarios])
    return "the minimum" if floor is None else f"the minimum ({usd_amount(floor)})"


def coverage_limit(scenario: Scenario) -> float | None:
    """The largest voucher as a share of the loss: the coverage cap, and at most 1 under a
    claims rule (an award never exceeds the claim); None when there is no such limit."""
    cover = scenario.bounds.coverage_cap
    if scenario.objective.rule in CLAIMS_RULES:
        return 1.0 if cover is None else min(cover, 1.0)
    return cover


def cap_words(scenarios: Sequence[Scenario]) -> str:
    """``the maximum (USD 6,000)``, the amount shown when every run has the same cap and no
    user has a smaller one of their own (a share of the loss or a phase-in band lowers it)."""
    cap = shared([s.bounds.cap_usd for s in scenarios])
    own = any(
        coverage_limit(s) is not None
        or s.eligibility.phase_in_loss_usd is not None
        or s.eligibility.phase_in_ratio is not None
        for s in scenarios
    )
    if cap is None:
        return "their maximum"
    if own:
        return f"their maximum (at most {usd_amount(cap)})"
    return f"the maximum ({usd_amount(cap)})"


# --------------------------------------------------------------------------------------------
# exclusion reasons
# --------------------------------------------------------------------------------------------

_REASON_WORDS = {
    N.REASON_PRODUCT_NOT_COVERED: "no liquidation on a covered product",
    N.REASON_OUTSIDE_WINDOW: "liquidated outside the window",
    N.REASON_NO_USER_RECORD: "no user record",
    N.REASON_RESTRICTED_REGION: "in a restricted region",
    N.REASON_KYC: "identity (KYC) not verified",
    N.REASON_DEPEG: "already paid depeg compensation",
    N.REASON_NO_SNAPSHOT: "no net-assets snapshot",
    N.REASON_NONPOSITIVE_NET_ASSETS: "net assets zero or negative",
}


def reason_words(reason: str, rules: EligibilityRules | None) -> str:
    """Why a user is excluded, in words; the loss and ratio thresholds are named when
    ``rules`` are given (every run has the same), and described otherwise."""
    if reason == N.REASON_BELOW_MIN_LOSS:
        if rules is None:
            return "loss below the minimum"
        if rules.phase_in_loss_usd is not None:
            return f"loss of {usd_amount(rules.phase_in_loss_usd)} or less"
        return f"loss below {usd_amount(rules.min_loss_usd)}"
    if reason == N.REASON_BELOW_LOSS_RATIO:
        if rules is None:
            return "loss too small a share of net assets"
        if rules.phase_in_ratio is not None:
            return f"loss {percent(rules.phase_in_ratio)} of net assets or less"
        return f"loss under {percent(rules.min_loss_ratio)} of net assets"
    return _REASON_WORDS.get(reason, reason.replace("_", " "))


# --------------------------------------------------------------------------------------------
# examples the analyses give as records
# --------------------------------------------------------------------------------------------


def _value_words(value: Any, amount: bool) -> str:
    if isinstance(value, (list, tuple)):
        return " and ".join(_value_words(v, amount) for v in value)
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if amount and isinstance(value, (int, float)):
        return usd_amount(float(value))
    return str(value).replace("_", " ")


def record_words(record: Mapping[str, Any]) -> str:
    """A record such as an axiom's worst case in words: ``{"user_id": 7, "loss_usd": 12.5}`` ->
    ``user 7, loss USD 12.50``; keys ending ``_usd`` are amounts."""
    parts = []
    for key, value in record.items():
        amount = key.endswith("_usd")
        name = (key.removesuffix("_usd") if amount else key).replace("_", " ")
        name = name.replace("user ids", "users").replace("user id", "user")
        parts.append(f"{name} {_value_words(value, amount)}")
    return ", ".join(parts)
