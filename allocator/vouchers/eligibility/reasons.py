r"""The rules applied to each liquidated user, and the reasons and details of the exclusions.

Every rule of :data:`allocator.names.REASONS` is decided once per user, as a boolean "fails"
column; a user's reason is the first failing rule in that order, and the per-user record
:class:`RuleDecision` (all failing rules and the phase-in factors) is what the explanation of a
user (:mod:`allocator.analysis.explain`) reads instead of deciding again. Each rule is judged
only where it applies: the region, KYC and depeg rules need a user record, the net-assets and
ratio rules a snapshot row, so that a missing record is one failure and not four. The first
failing rule is the same as without the guards, because the missing record's own rule comes
earlier in the order.

The loss and ratio thresholds, and their phase-in bands, are those of
:mod:`allocator.kernel.phase`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import polars as pl

from allocator import names as N
from allocator.kernel.phase import band_factor, passes
from allocator.settings.models import EligibilityRules
from allocator.vouchers.eligibility.prices import utc
from allocator.vouchers.eligibility.rules import has_phase_in, loss_band, products, ratio_band
from allocator.vouchers.eligibility.schema import (
    COL_IN_SNAPSHOT,
    COL_IN_USERS,
    COL_N_COVERED,
    COL_N_IN_WINDOW,
    UTC_US,
    excluded_columns,
)

__all__ = [
    "COL_LOSS_FACTOR",
    "COL_RATIO_FACTOR",
    "RuleDecision",
    "covered_event",
    "decide",
    "decision_columns",
    "fails_column",
    "in_window_event",
    "rule_decision",
    "waive_rules",
    "with_detail",
]

#: Private per-user columns of the decision: each band's factor (1 without a band).
COL_LOSS_FACTOR = "_loss_factor"
COL_RATIO_FACTOR = "_ratio_factor"
_PASSES_LOSS = "_passes_loss"
_PASSES_RATIO = "_passes_ratio"


def fails_column(reason: str) -> str:
    """The private boolean column that says whether a user fails the rule ``reason``."""
    return f"_fails_{reason}"


def decision_columns() -> list[str]:
    """The columns of :attr:`EligibilityResult.decisions <allocator.vouchers.eligibility.EligibilityResult>`,
    in order."""
    return [
        N.USER_ID,
        N.REASON,
        *(fails_column(r) for r in N.REASONS),
        COL_LOSS_FACTOR,
        COL_RATIO_FACTOR,
    ]


# --------------------------------------------------------------------------- event rules


def covered_event(rules: EligibilityRules) -> pl.Expr:
    """Whether an event is on a covered product."""
    return pl.col(N.PRODUCT).is_in(list(products(rules)))


def in_window_event(rules: EligibilityRules) -> pl.Expr:
    """Whether an event lies in the half-open window ``[window_start, window_end)``."""
    ts = pl.col(N.TS)
    return (ts >= pl.lit(utc(rules.window_start)).cast(UTC_US)) & (
        ts < pl.lit(utc(rules.window_end)).cast(UTC_US)
    )


# --------------------------------------------------------------------------- user rules


def _failures(rules: EligibilityRules) -> dict[str, pl.Expr]:
    """Reason code -> whether the user fails that rule (module docstring: each where it applies)."""
    n_events = pl.col(N.N_EVENTS)
    in_users, in_snapshot = pl.col(COL_IN_USERS), pl.col(COL_IN_SNAPSHOT)
    outside = (n_events == 0) & (pl.col(COL_N_COVERED) > 0) & (pl.col(COL_N_IN_WINDOW) == 0)
    region_bad = pl.col(N.REGION).is_in(list(rules.restricted_regions)).fill_null(False)
    kyc_bad = pl.lit(False)
    if rules.require_kyc:
        kyc_bad = pl.col(N.KYC_STATUS).is_null() | (pl.col(N.KYC_STATUS) != N.KYC_VERIFIED)
    depeg_bad = pl.lit(False)
    if rules.depeg_policy == "exclude":
        depeg_bad = pl.col(N.DEPEG_COMP_USD).fill_null(0.0) > 0
    nonpos_bad = pl.lit(False)
    if rules.nonpositive_net_assets == "exclude":
        nonpos_bad = (pl.col(N.NET_ASSETS_USD) <= 0).fill_null(False)
    return {
        N.REASON_PRODUCT_NOT_COVERED: (n_events == 0) & ~outside,
        N.REASON_OUTSIDE_WINDOW: outside,
        N.REASON_NO_USER_RECORD: ~in_users,
        N.REASON_RESTRICTED_REGION: in_users & region_bad,
        N.REASON_KYC: in_users & kyc_bad,
        N.REASON_DEPEG: in_users & depeg_bad,
        N.REASON_BELOW_MIN_LOSS: ~pl.col(_PASSES_LOSS),
        N.REASON_NO_SNAPSHOT: ~in_snapshot,
        N.REASON_NONPOSITIVE_NET_ASSETS: in_snapshot & nonpos_bad,
        N.REASON_BELOW_LOSS_RATIO: in_snapshot & ~pl.col(_PASSES_RATIO),
    }


def _first_failure() -> pl.Expr:
    """The first failing rule in the order of :data:`allocator.names.REASONS` (null: eligible).

    Chosen as a small integer, then looked up: a chain of ``when`` on the reasons' strings
    builds a column of strings at every step (110 ms at 1.6M users, against 12 ms this way).
    """
    index = pl.lit(None, dtype=pl.UInt32)
    for i, code in reversed(list(enumerate(N.REASONS))):  # the last ``when`` is tried first
        index = pl.when(pl.col(fails_column(code))).then(pl.lit(i, pl.UInt32)).otherwise(index)
    return pl.lit(pl.Series(list(N.REASONS), dtype=pl.String)).gather(index).alias(N.REASON)


def _values(table: pl.DataFrame, column: str) -> np.ndarray:
    """A Float64 column as floats, a missing value as NaN (which fails every threshold)."""
    return table[column].cast(pl.Float64).fill_null(float("nan")).to_numpy()


def decide(table: pl.DataFrame, rules: EligibilityRules) -> pl.DataFrame:
    """Add to the joined per-user table a fails column per rule, the reason, and each band's
    factor (plus ``phase_factor`` with a phase-in band)."""
    loss, ratio = _values(table, N.LOSS_USD), _values(table, N.LOSS_RATIO)
    loss_f = band_factor(loss, loss_band(rules))
    ratio_f = band_factor(ratio, ratio_band(rules))
    table = table.with_columns(
        pl.Series(_PASSES_LOSS, passes(loss, loss_band(rules))),
        pl.Series(_PASSES_RATIO, passes(ratio, ratio_band(rules))),
        pl.Series(COL_LOSS_FACTOR, loss_f, dtype=pl.Float64),
        pl.Series(COL_RATIO_FACTOR, ratio_f, dtype=pl.Float64),
    )
    table = table.with_columns(
        expr.alias(fails_column(code)) for code, expr in _failures(rules).items()
    ).with_columns(_first_failure())
    if has_phase_in(rules):
        table = table.with_columns(pl.Series(N.PHASE_FACTOR, loss_f * ratio_f, dtype=pl.Float64))
    return table.drop(_PASSES_LOSS, _PASSES_RATIO)


def waive_rules(table: pl.DataFrame, waive: pl.Series) -> pl.DataFrame:
    r"""Reinstate the users of ``waive`` (user ids; an appeal decided ``reinstate``): every rule
    they fail is waived, so their reason becomes null, and with a phase-in band a waived
    threshold no longer scales them,

    .. math::

        \phi_i = \big(1 \text{ if } i \text{ fails the loss rule, else } \phi^L_i\big)
        \big(1 \text{ if } i \text{ fails the ratio rule, else } \phi^r_i\big).

    The fails columns stay: they say which rules were waived.
    """
    hit = pl.col(N.USER_ID).is_in(waive.implode())
    table = table.with_columns(
        pl.when(hit).then(pl.lit(None, dtype=pl.String)).otherwise(pl.col(N.REASON)).alias(N.REASON)
    )
    if N.PHASE_FACTOR in table.columns:
        loss_f = (
            pl.when(hit & pl.col(fails_column(N.REASON_BELOW_MIN_LOSS)))
            .then(1.0)
            .otherwise(pl.col(COL_LOSS_FACTOR))
        )
        ratio_f = (
            pl.when(hit & pl.col(fails_column(N.REASON_BELOW_LOSS_RATIO)))
            .then(1.0)
            .otherwise(pl.col(COL_RATIO_FACTOR))
        )
        phased = pl.when(hit).then(loss_f * ratio_f).otherwise(pl.col(N.PHASE_FACTOR))
        table = table.with_columns(phased.cast(pl.Float64).alias(N.PHASE_FACTOR))
    return table


@dataclass(frozen=True)
class RuleDecision:
    """What eligibility decided for one user, rule by rule.

    ``failures`` holds every rule the user fails, in the order of :data:`allocator.names.REASONS`
    (each judged where it applies, module docstring); ``reason`` is the first of them, ``None``
    for an eligible user. ``loss_factor`` and ``ratio_factor`` are the user's factors in the
    loss and ratio phase-in bands (:func:`allocator.kernel.phase.band_factor`; 1 without a band
    or past the threshold, NaN without a loss or ratio); an eligible user's ``phase_factor`` is
    their product.
    """

    user_id: int
    reason: str | None
    failures: tuple[str, ...]
    loss_factor: float
    ratio_factor: float

    @property
    def phase_factor(self) -> float:
        return self.loss_factor * self.ratio_factor


def rule_decision(decisions: pl.DataFrame, user_id: int) -> RuleDecision | None:
    """The :class:`RuleDecision` of ``user_id`` in a frame of :func:`decision_columns`."""
    hit = decisions.filter(pl.col(N.USER_ID) == user_id)
    if hit.height == 0:
        return None
    row = hit.row(0, named=True)
    return RuleDecision(
        user_id=int(row[N.USER_ID]),
        reason=row[N.REASON],
        failures=tuple(code for code in N.REASONS if row[fails_column(code)]),
        loss_factor=float(row[COL_LOSS_FACTOR]),
        ratio_factor=float(row[COL_RATIO_FACTOR]),
    )


# --------------------------------------------------------------------------- detail texts


def _fmt(expr: pl.Expr) -> pl.Expr:
    """A USD amount or count as short text (two decimals)."""
    return expr.round(2).cast(pl.String)


def _fmt_below(expr: pl.Expr, threshold: float) -> pl.Expr:
    """A value known to be below ``threshold``, with the fewest decimals (2, 4 or 6) that keep
    it visibly below, so that 49.999 never reads as 50.0; the exact value as a last resort."""
    shown = expr
    for decimals in (6, 4, 2):  # the last ``when`` written is the first one tried
        shown = (
            pl.when(expr.round(decimals) < threshold).then(expr.round(decimals)).otherwise(shown)
        )
    return shown.cast(pl.String)


def _iso(dt: datetime) -> str:
    text = utc(dt).strftime("%Y-%m-%dT%H:%M:%S.%f").rstrip("0").rstrip(".")
    return text + "Z"


def _num(x: float) -> str:
    return f"{x:g}"


def _detail_texts(rules: EligibilityRules) -> dict[str, pl.Expr]:
    """Reason code -> expression of its human-readable detail."""
    window = f"[{_iso(rules.window_start)}, {_iso(rules.window_end)})"
    in_window_other = pl.col(COL_N_IN_WINDOW)
    loss, net, ratio = pl.col(N.LOSS_USD), pl.col(N.NET_ASSETS_USD), pl.col(N.LOSS_RATIO)
    netted = ""
    if rules.depeg_policy == "net":
        netted = " after depeg netting"
    cases = [
        (
            N.REASON_PRODUCT_NOT_COVERED,
            pl.when(in_window_other > 0)
            .then(
                pl.format(
                    "{} event(s) in the window, none on a covered product",
                    in_window_other,
                )
            )
            .otherwise(pl.lit("no event on a covered product")),
        ),
        (
            N.REASON_OUTSIDE_WINDOW,
            pl.format(f"{{}} covered-product event(s), none in {window}", pl.col(COL_N_COVERED)),
        ),
        (N.REASON_NO_USER_RECORD, pl.lit(f"{N.USER_ID} not in the users table")),
        (N.REASON_RESTRICTED_REGION, pl.format("region {} is restricted", pl.col(N.REGION))),
        (
            N.REASON_KYC,
            pl.format("kyc status {}", pl.col(N.KYC_STATUS).fill_null("missing")),
        ),
        (
            N.REASON_DEPEG,
            pl.format("received {} USD depeg compensation", _fmt(pl.col(N.DEPEG_COMP_USD))),
        ),
        (
            N.REASON_BELOW_MIN_LOSS,
            pl.format(
                f"loss {{}} USD{netted} < {_num(rules.min_loss_usd)} USD",
                _fmt_below(loss, rules.min_loss_usd),
            )
            if rules.phase_in_loss_usd is None
            else pl.format(
                f"loss {{}} USD{netted} <= {_num(rules.phase_in_loss_usd)} USD "
                f"(lower end of the phase-in band up to {_num(rules.min_loss_usd)} USD)",
                _fmt(loss),
            ),
        ),
        (N.REASON_NO_SNAPSHOT, pl.lit(f"{N.USER_ID} not in the snapshot")),
        (
            N.REASON_NONPOSITIVE_NET_ASSETS,
            pl.format("net assets {} USD <= 0", _fmt(net)),
        ),
        (
            N.REASON_BELOW_LOSS_RATIO,
            pl.format(
                f"loss ratio {{}}% < {_num(100 * rules.min_loss_ratio)}% (loss {{}} USD, "
                "net assets {} USD)",
                _fmt_below(ratio * 100, 100 * rules.min_loss_ratio),
                _fmt(loss),
                _fmt(net),
            )
            if rules.phase_in_ratio is None
            else pl.format(
                f"loss ratio {{}}% <= {_num(100 * rules.phase_in_ratio)}% (lower end of the "
                f"phase-in band up to {_num(100 * rules.min_loss_ratio)}%; loss {{}} USD, "
                "net assets {} USD)",
                _fmt(ratio * 100),
                _fmt(loss),
                _fmt(net),
            ),
        ),
    ]
    return dict(cases)


#: What the details read, besides the columns of the excluded table.
_DETAIL_INPUTS = (
    COL_N_IN_WINDOW,
    COL_N_COVERED,
    N.REGION,
    N.KYC_STATUS,
    N.DEPEG_COMP_USD,
    N.LOSS_USD,
    N.NET_ASSETS_USD,
    N.LOSS_RATIO,
)


def with_detail(excluded: pl.DataFrame, rules: EligibilityRules) -> pl.DataFrame:
    """The columns of the excluded table and the detail column, formatting each reason's text
    only on that reason's rows."""
    texts = _detail_texts(rules)
    # Only what the texts and the excluded table read: the partitions, their concatenation and
    # the sort then move a dozen columns, not the forty of the joined table (at two million
    # users, half a gigabyte less at the peak of eligibility).
    wanted = {*excluded_columns(), *_DETAIL_INPUTS}
    excluded = excluded.select(c for c in excluded.columns if c in wanted)
    parts = [
        part.with_columns(texts[reason].alias(N.DETAIL))
        for (reason,), part in excluded.partition_by(N.REASON, as_dict=True).items()
    ]
    if not parts:
        return excluded.with_columns(pl.lit(None, dtype=pl.String).alias(N.DETAIL))
    return pl.concat(parts).sort(N.USER_ID)
