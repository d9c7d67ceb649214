"""Why an excluded user is out: the rule eligibility found failing first, worded with the
user's numbers, how far they were from passing, and the other rules they fail.

Which rules fail is read from eligibility's :class:`~allocator.vouchers.eligibility.RuleDecision`;
the thresholds and bands from :func:`~allocator.vouchers.eligibility.loss_band` and
:func:`~allocator.vouchers.eligibility.ratio_band`. Nothing is decided here.
"""

from __future__ import annotations

import math
from typing import Any

import polars as pl

from allocator import names as N
from allocator.analysis.explain.facts import LoadedRun
from allocator.analysis.explain.results import Exclusion
from allocator.analysis.explain.wording import (
    OUTSIDE_WINDOW,
    at_most,
    below,
    duration,
    iso,
    num,
    threshold_text,
    usd,
)
from allocator.vouchers.eligibility import RuleDecision, loss_band, ratio_band

__all__ = ["exclusion"]


def _number(x: Any) -> float:
    """A number of the user's row as a float (a missing one reads as 0, as the rules treat it
    as failing)."""
    return 0.0 if x is None else float(x)


def exclusion(
    decision: RuleDecision,
    run_detail: str | None,
    valued: pl.DataFrame,
    user: dict[str, Any] | None,
    row: dict[str, Any],
    run: LoadedRun,
) -> Exclusion:
    """Why the user is out, in words: the first rule eligibility found failing (``decision``),
    its numbers, how far they were from passing, and the other rules the user fails.

    ``row`` is the user's row of the recomputed ``excluded`` table; ``run_detail`` the detail the
    run wrote.
    """
    rules = run.scenario.eligibility
    reason = decision.reason or ""
    uid = int(row[N.USER_ID])
    loss = _number(row.get(N.LOSS_USD))
    gross = row.get(N.GROSS_LOSS_USD)
    net = _number(row.get(N.NET_ASSETS_USD))
    ratio = _number(row.get(N.LOSS_RATIO))
    covered_list = ", ".join(rules.products)
    window = f"[{iso(rules.window_start)}, {iso(rules.window_end)})"
    distance: str | None = None
    if reason == N.REASON_PRODUCT_NOT_COVERED:
        in_window = valued.filter(pl.col("in_window"))
        products = sorted(set(in_window[N.PRODUCT].to_list()))
        rule = f"eligibility.products = [{covered_list}]: only these products' liquidations count"
        if products:
            detail = (
                f"{in_window.height} event(s) inside the window {window}, all on products not "
                f"covered ({', '.join(products)})"
            )
        else:
            detail = f"no event on a covered product ({covered_list}); events on " + ", ".join(
                sorted(set(valued[N.PRODUCT].to_list()))
            )
        distance = "any covered-product liquidation inside the window would have counted"
    elif reason == N.REASON_OUTSIDE_WINDOW:
        covered = valued.filter(pl.col("status") == OUTSIDE_WINDOW)
        rule = f"eligibility.window_start/window_end: events count in {window} (end exclusive)"
        ts = covered[N.TS].to_list()
        before = [t for t in ts if t < rules.window_start]
        after = [t for t in ts if t >= rules.window_end]
        detail = f"{len(ts)} covered-product event(s), none in {window}"
        parts = []
        if before:
            last = max(before)
            gap = (rules.window_start - last).total_seconds()
            parts.append(f"the latest before it, {iso(last)}, was {duration(gap)} before the start")
        if after:
            first = min(after)
            gap = (first - rules.window_end).total_seconds()
            when = "at the (exclusive) end" if gap == 0 else f"{duration(gap)} after the end"
            parts.append(f"the earliest after it, {iso(first)}, was {when}")
        distance = "; ".join(parts) or None
    elif reason == N.REASON_NO_USER_RECORD:
        rule = "every paid user needs a record in the users table (region, KYC, depeg compensation)"
        detail = f"user_id {uid} is not in {run.paths[N.USERS_FILE]}"
    elif reason == N.REASON_RESTRICTED_REGION:
        assert user is not None
        rule = f"eligibility.restricted_regions = [{', '.join(rules.restricted_regions)}]"
        detail = f"region {user[N.REGION]} is restricted"
    elif reason == N.REASON_KYC:
        assert user is not None
        rule = f"eligibility.require_kyc = true: kyc_status must be '{N.KYC_VERIFIED}'"
        detail = f"kyc_status is '{user[N.KYC_STATUS]}'"
    elif reason == N.REASON_DEPEG:
        assert user is not None
        rule = "eligibility.depeg_policy = 'exclude': users already paid depeg compensation are out"
        detail = f"received {usd(user[N.DEPEG_COMP_USD])} USD depeg compensation (> 0)"
    elif reason == N.REASON_BELOW_MIN_LOSS:
        band = loss_band(rules)
        value = loss
        netted = ""
        if rules.depeg_policy == "net" and user is not None and (user[N.DEPEG_COMP_USD] or 0) > 0:
            netted = (
                f" (gross {usd(gross)} - depeg compensation {usd(user[N.DEPEG_COMP_USD])}, "
                f"floored at 0)"
            )
        if band.low is None:
            threshold = band.high
            rule = (
                f"eligibility.min_loss_usd = {num(threshold)}: counted loss must be at least "
                f"{num(threshold)} USD"
            )
            detail = f"loss {below(value, threshold)} USD < min_loss_usd {num(threshold)} USD"
            short = threshold - value
            pct = f" ({100 * short / threshold:.1f}% of the threshold)" if threshold > 0 else ""
            distance = f"{below(short, math.inf)} USD short{pct}"
        else:
            low, top = band.low, band.high
            rule = (
                f"eligibility.phase_in_loss_usd = {num(low)} (phase-in band ({num(low)}, "
                f"{num(top)}) USD below "
                f"min_loss_usd = {num(top)}): counted loss must be above {num(low)} USD"
            )
            detail = (
                f"loss {at_most(value, low)} USD <= {num(low)} USD, the lower end of the "
                f"phase-in band"
            )
            short = low - value
            inside = (
                f"inside the band a loss L is paid with the factor (L - {num(low)}) / "
                f"({num(top)} - {num(low)})"
            )
            if short > 0:
                pct = f" ({100 * short / low:.1f}% of it)" if low > 0 else ""
                distance = (
                    f"{below(short, math.inf)} USD short of the band's lower end{pct}; {inside}"
                )
            else:
                distance = f"exactly at the band's lower end, where the factor is 0; {inside}"
        detail += netted
    elif reason == N.REASON_NO_SNAPSHOT:
        rule = "a snapshot row is needed to check the loss ratio"
        detail = (
            f"user_id {uid} is not in the snapshot {run.paths[N.SNAPSHOT_FILE]} "
            f"(taken at {iso(rules.snapshot_at)})"
        )
    elif reason == N.REASON_NONPOSITIVE_NET_ASSETS:
        rule = "eligibility.nonpositive_net_assets = 'exclude': net assets must be above 0"
        detail = f"net assets {usd(net)} USD <= 0"
        distance = f"net assets would have to be above 0 ({usd(-net)} USD more)"
    elif reason == N.REASON_BELOW_LOSS_RATIO:
        numbers = f"(loss {usd(row.get(N.LOSS_USD))} / net assets {usd(row.get(N.NET_ASSETS_USD))})"
        band = ratio_band(rules)
        if band.low is None:
            threshold = band.high
            shown = threshold_text(threshold)
            rule = (
                f"eligibility.min_loss_ratio = {shown}: loss / net assets must be at least {shown}"
            )
            detail = f"loss ratio {below(ratio, threshold, 4)} < {shown} {numbers}"
            need_loss = threshold * net
            max_net = loss / threshold if threshold > 0 else math.inf
            distance = (
                f"a loss of {usd(need_loss)} USD ({usd(need_loss - loss)} more), or net "
                f"assets of at most {usd(max_net)} USD ({usd(net - max_net)} less), would "
                f"have passed"
            )
        else:
            low, top = band.low, band.high
            lo_t, top_t = threshold_text(low), threshold_text(top)
            rule = (
                f"eligibility.phase_in_ratio = {lo_t} (phase-in band ({lo_t}, {top_t}) below "
                f"min_loss_ratio = {top_t}): loss / net assets must be above {lo_t}"
            )
            detail = (
                f"loss ratio {at_most(ratio, low, 4)} <= {lo_t}, the lower end of the "
                f"phase-in band {numbers}"
            )
            need_loss = low * net
            max_net = loss / low if low > 0 else math.inf
            distance = (
                f"a loss above {usd(need_loss)} USD (more than {usd(need_loss - loss)} "
                f"more), or net assets below {usd(max_net)} USD (more than "
                f"{usd(net - max_net)} less), would have entered the band, where a ratio r "
                f"is paid with the factor (r - {lo_t}) / ({top_t} - {lo_t})"
            )
    else:  # a reason this version does not know
        rule = reason
        detail = run_detail or reason
    return Exclusion(
        reason=reason,
        rule=rule,
        detail=detail,
        distance=distance,
        run_detail=run_detail,
        also_fails=tuple(f for f in decision.failures if f != reason),
    )
