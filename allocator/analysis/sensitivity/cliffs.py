r"""Cliffs at the eligibility thresholds, and the phase-in bands that smooth them.

:func:`cliff_analysis` counts the users just below the loss and loss-ratio thresholds and the
voucher paid just above them (the height of the cliff). The phase-in band
(``eligibility.phase_in_loss_usd`` / ``phase_in_ratio``) is the scenario option that smooths it:
eligibility then starts above the band's lower end, so that is where the cliff moves, and the
users inside each band (:class:`PhaseInBand`: how many, their loss, what they are paid, their
median phase factor) are reported too. The band's price (:func:`phase_in_price`) is the same
scenario with hard thresholds at the same budget: the band users are exactly those it makes
eligible (a phase factor below 1), and what they receive is what everyone else gives up when
the budget is paid in full (:mod:`allocator.analysis.sensitivity.phase_in`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, cast

import numpy as np
import polars as pl

from allocator import names as N
from allocator.errors import InputError
from allocator.jsonsafe import json_safe
from allocator.kernel.feasibility import InvalidProblemError
from allocator.kernel.money import CENTS_PER_USD, format_usd
from allocator.kernel.phase import Band, passes
from allocator.settings.models import EligibilityRules


@dataclass(frozen=True)
class PhaseInBand:
    """The eligible users inside one phase-in band ``(lower, upper)`` (``rule`` ``"loss"`` in USD
    or ``"ratio"``): how many, their loss, what they are paid and their phase factors.

    ``phase_factor`` is the user's whole factor (both bands multiplied); ``in_both_bands``
    counts those of them inside the other band too.
    """

    rule: str
    lower: float
    upper: float
    users: int
    loss_usd: float
    paid_usd: float
    median_voucher_usd: float | None
    median_phase_factor: float | None
    in_both_bands: int

    def to_dict(self) -> dict[str, Any]:
        return cast(
            "dict[str, Any]", json_safe({k: getattr(self, k) for k in self.__dataclass_fields__})
        )

    def line(self) -> str:
        unit = " USD" if self.rule == "loss" else ""
        median = "-" if self.median_phase_factor is None else f"{self.median_phase_factor:.4f}"
        voucher = "-" if self.median_voucher_usd is None else format_usd(self.median_voucher_usd)
        return (
            f"{self.rule} phase-in band ({self.lower:g}, {self.upper:g}){unit}: {self.users:,} "
            f"eligible users, {format_usd(self.loss_usd, currency=True)} of loss, paid "
            f"{format_usd(self.paid_usd, currency=True)} "
            f"(median voucher USD {voucher}, median phase factor {median}; "
            f"{self.in_both_bands:,} also in the other band)"
        )


@dataclass(frozen=True)
class CliffAnalysis:
    """Users just below the thresholds, and the voucher paid just above them.

    The cliff of a rule is where eligibility starts: ``min_loss_usd`` / ``min_loss_ratio`` under
    hard thresholds, and the lower end of the phase-in band when the rules have one (``loss >
    phase_in_loss_usd``); ``min_loss_usd`` and ``min_loss_ratio`` hold that position, and
    ``loss_phase_in`` / ``ratio_phase_in`` describe the band (``None`` without one). "Below" is
    ``[cliff - band, cliff)`` for a hard threshold and ``[cliff - band, cliff]`` for a band's
    lower end (reaching it is not enough); "above" is ``[cliff, cliff + band)``, resp.
    ``(cliff, cliff + band)``.

    ``loss_hist`` and ``ratio_hist`` hold bin edges and, per bin, the eligible users and the
    users excluded by that rule (``below_min_loss`` / ``below_loss_ratio``).
    """

    min_loss_usd: float
    min_loss_ratio: float
    loss_band_usd: float
    ratio_band: float
    below_loss_users: int
    below_loss_total_usd: float
    below_loss_only_users: int
    below_loss_only_total_usd: float
    below_ratio_users: int
    below_ratio_total_usd: float
    voucher_above_loss_usd: float | None
    eligible_above_loss_users: int
    voucher_above_ratio_usd: float | None
    eligible_above_ratio_users: int
    loss_hist: Mapping[str, list[float] | list[int]]
    ratio_hist: Mapping[str, list[float] | list[int]]
    loss_phase_in: PhaseInBand | None = None
    ratio_phase_in: PhaseInBand | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        for key in ("loss_phase_in", "ratio_phase_in"):
            band = out[key]
            out[key] = None if band is None else band.to_dict()
        return cast("dict[str, Any]", json_safe(out))

    def lines(self) -> list[str]:
        def usd(x: float | None) -> str:
            return "-" if x is None else format_usd(x)

        loss_b, ratio_b = self.loss_phase_in, self.ratio_phase_in
        lo_close, loss_name = (
            (")", "min loss") if loss_b is None else ("]", "the loss band's lower end")
        )
        r_close, ratio_name = (
            (")", "ratio") if ratio_b is None else ("]", "the ratio band's lower end")
        )
        out = [
            f"loss in [{self.min_loss_usd - self.loss_band_usd:g}, {self.min_loss_usd:g}{lo_close} "
            f"USD, excluded by {loss_name}: {self.below_loss_users:,} users, "
            f"{format_usd(self.below_loss_total_usd, currency=True)} (passing the ratio rule: "
            f"{self.below_loss_only_users:,}, {format_usd(self.below_loss_only_total_usd, currency=True)})",
            f"ratio in [{self.min_loss_ratio - self.ratio_band:g}, {self.min_loss_ratio:g}{r_close}, "
            f"excluded by {ratio_name}: {self.below_ratio_users:,} users, "
            f"{format_usd(self.below_ratio_total_usd, currency=True)}",
            f"median voucher just above {'min loss' if loss_b is None else 'the loss cliff'}: "
            f"USD {usd(self.voucher_above_loss_usd)} ({self.eligible_above_loss_users:,} users)",
            f"median voucher just above {'min ratio' if ratio_b is None else 'the ratio cliff'}: "
            f"USD {usd(self.voucher_above_ratio_usd)} ({self.eligible_above_ratio_users:,} users)",
        ]
        out += [b.line() for b in (loss_b, ratio_b) if b is not None]
        return out


def need_columns(frame: pl.DataFrame, cols: tuple[str, ...], what: str) -> None:
    missing = [c for c in cols if c not in frame.columns]
    if missing:
        raise InputError(f"the {what} frame has no column(s) {missing}; it has {frame.columns}.")


def _hist(
    eligible: np.ndarray, excluded: np.ndarray, lo: float, hi: float, bins: int
) -> dict[str, list[float] | list[int]]:
    # equal bins by count and range: NumPy's arithmetic path, which agrees with the edges
    # np.linspace(lo, hi, bins + 1) to the last bit and drops what lies outside them (NaN
    # and infinities included), instead of a binary search per user
    e, edges = np.histogram(eligible, bins=bins, range=(lo, hi))
    x, _ = np.histogram(excluded, bins=bins, range=(lo, hi))
    return {"edges": edges.tolist(), "eligible": e.tolist(), "excluded": x.tolist()}


def _vouchers_usd(allocations: pl.DataFrame) -> np.ndarray:
    if N.VOUCHER_CENTS in allocations.columns:
        return allocations[N.VOUCHER_CENTS].cast(pl.Float64).to_numpy() / CENTS_PER_USD
    if N.VOUCHER_USD in allocations.columns:
        return allocations[N.VOUCHER_USD].cast(pl.Float64).to_numpy()
    raise InputError("the allocations frame has neither voucher_cents nor voucher_usd.")


def _passes(x: np.ndarray, threshold: float, band_low: float | None) -> np.ndarray:
    """The eligibility rule on one number (:func:`allocator.kernel.phase.passes`)."""
    return passes(x, Band(band_low, threshold))


def cliff_analysis(
    excluded: pl.DataFrame,
    allocations: pl.DataFrame,
    rules: EligibilityRules,
    *,
    loss_band_usd: float = 10.0,
    ratio_band: float = 0.05,
    bins: int = 10,
) -> CliffAnalysis:
    """Who sits just below the loss and ratio thresholds, and the cliff they fall off.

    Parameters
    ----------
    excluded
        ``excluded.parquet``: ``reason``, ``loss_usd``, ``loss_ratio``.
    allocations
        ``allocations.parquet``: ``voucher_cents`` (or ``voucher_usd``), ``loss_usd``,
        ``loss_ratio``, and ``phase_factor`` when the rules have a phase-in band.
    rules
        The eligibility rules (``min_loss_usd``, ``min_loss_ratio``, ``phase_in_loss_usd``,
        ``phase_in_ratio``).
    loss_band_usd, ratio_band
        Widths of the ranges below (and above) each cliff.
    bins
        Histogram bins on each side's full range ``[cliff - band, cliff + band)``.

    Returns
    -------
    CliffAnalysis
        Users excluded by min loss just below the loss cliff (and those of them whose ratio
        would pass), users excluded by ratio just below the ratio cliff, histograms, the median
        voucher of eligible users just above each cliff (the height of the cliff), and with a
        phase-in band, the eligible users inside it (:class:`PhaseInBand`). The cliff is the
        threshold, or the band's lower end (see :class:`CliffAnalysis`).
    """
    sides = cliff_sides(
        excluded, allocations, rules, loss_band_usd=loss_band_usd, ratio_band=ratio_band, bins=bins
    )
    return sides.with_vouchers(_vouchers_usd(allocations))


@dataclass(frozen=True, eq=False)
class CliffSides:
    """Everything of a :class:`CliffAnalysis` that does not read the vouchers: it depends on
    who is eligible and who is not, so every allocation of the same users shares it, and
    :meth:`with_vouchers` completes it for one allocation."""

    analysis: CliffAnalysis
    above_loss: np.ndarray
    above_ratio: np.ndarray
    inside: Mapping[str, np.ndarray]

    def with_vouchers(self, voucher: np.ndarray) -> CliffAnalysis:
        """The analysis of the allocation paying ``voucher`` (USD, one per eligible user in the
        order of the allocations frame the sides were made from)."""

        def median(mask: np.ndarray) -> float | None:
            return float(np.median(voucher[mask])) if mask.any() else None

        def paid(band: PhaseInBand | None) -> PhaseInBand | None:
            if band is None:
                return None
            mask = self.inside[band.rule]
            return replace(
                band, paid_usd=float(voucher[mask].sum()), median_voucher_usd=median(mask)
            )

        return replace(
            self.analysis,
            voucher_above_loss_usd=median(self.above_loss),
            voucher_above_ratio_usd=median(self.above_ratio),
            loss_phase_in=paid(self.analysis.loss_phase_in),
            ratio_phase_in=paid(self.analysis.ratio_phase_in),
        )


def cliff_sides(
    excluded: pl.DataFrame,
    allocations: pl.DataFrame,
    rules: EligibilityRules,
    *,
    loss_band_usd: float = 10.0,
    ratio_band: float = 0.05,
    bins: int = 10,
) -> CliffSides:
    """:func:`cliff_analysis` up to the vouchers (the same parameters; ``allocations`` needs no
    voucher column)."""
    if not (loss_band_usd > 0 and ratio_band > 0 and bins >= 1):
        raise InvalidProblemError("loss_band_usd and ratio_band must be positive, bins >= 1")
    need_columns(excluded, (N.REASON, N.LOSS_USD, N.LOSS_RATIO), "excluded")
    need_columns(allocations, (N.LOSS_USD, N.LOSS_RATIO), "allocations")
    p_loss, p_ratio = rules.phase_in_loss_usd, rules.phase_in_ratio
    if (p_loss is not None or p_ratio is not None) and allocations.height:
        need_columns(allocations, (N.PHASE_FACTOR,), "allocations")
    # where eligibility starts: the threshold, or the lower end of its band
    c_loss = float(rules.min_loss_usd if p_loss is None else p_loss)
    c_ratio = float(rules.min_loss_ratio if p_ratio is None else p_ratio)
    x_loss = excluded[N.LOSS_USD].cast(pl.Float64).fill_null(np.nan).to_numpy()
    x_ratio = excluded[N.LOSS_RATIO].cast(pl.Float64).fill_null(np.nan).to_numpy()
    # compared in Polars: hundreds of thousands of reasons as Python strings would cost more
    # than the rest of the analysis
    reason = excluded[N.REASON]
    by_loss = (reason == N.REASON_BELOW_MIN_LOSS).fill_null(False).to_numpy()
    by_ratio = (reason == N.REASON_BELOW_LOSS_RATIO).fill_null(False).to_numpy()
    e_loss = allocations[N.LOSS_USD].cast(pl.Float64).to_numpy()
    e_ratio = allocations[N.LOSS_RATIO].cast(pl.Float64).to_numpy()
    with np.errstate(invalid="ignore"):
        # below the cliff is failing the rule: x < threshold, or x <= the band's lower end
        below_l = ~_passes(x_loss, c_loss, p_loss) & (x_loss >= c_loss - loss_band_usd)
        below_r = ~_passes(x_ratio, c_ratio, p_ratio) & (x_ratio >= c_ratio - ratio_band)
        near_loss = by_loss & below_l
        only_loss = near_loss & _passes(x_ratio, c_ratio, p_ratio)
        near_ratio = by_ratio & below_r
        above_loss = _passes(e_loss, c_loss, p_loss) & (e_loss < c_loss + loss_band_usd)
        above_ratio = _passes(e_ratio, c_ratio, p_ratio) & (e_ratio < c_ratio + ratio_band)

    bands: dict[str, PhaseInBand | None] = {"loss": None, "ratio": None}
    inside: dict[str, np.ndarray] = {}
    if p_loss is not None or p_ratio is not None:
        phi = (
            allocations[N.PHASE_FACTOR].cast(pl.Float64).to_numpy()
            if N.PHASE_FACTOR in allocations.columns
            else np.ones(allocations.height)  # only when there is nobody to pay
        )
        if p_loss is not None:
            inside["loss"] = e_loss < rules.min_loss_usd
        if p_ratio is not None:
            inside["ratio"] = e_ratio < rules.min_loss_ratio
        for rule, low, high in (
            ("loss", p_loss, rules.min_loss_usd),
            ("ratio", p_ratio, rules.min_loss_ratio),
        ):
            if low is None:
                continue
            mask = inside[rule]
            other = inside.get("ratio" if rule == "loss" else "loss")
            bands[rule] = PhaseInBand(
                rule=rule,
                lower=float(low),
                upper=float(high),
                users=int(mask.sum()),
                loss_usd=float(e_loss[mask].sum()),
                paid_usd=math.nan,  # with_vouchers
                median_voucher_usd=None,
                median_phase_factor=float(np.median(phi[mask])) if mask.any() else None,
                in_both_bands=int((mask & other).sum()) if other is not None else 0,
            )

    analysis = CliffAnalysis(
        min_loss_usd=c_loss,
        min_loss_ratio=c_ratio,
        loss_band_usd=float(loss_band_usd),
        ratio_band=float(ratio_band),
        below_loss_users=int(near_loss.sum()),
        below_loss_total_usd=float(x_loss[near_loss].sum()),
        below_loss_only_users=int(only_loss.sum()),
        below_loss_only_total_usd=float(x_loss[only_loss].sum()),
        below_ratio_users=int(near_ratio.sum()),
        below_ratio_total_usd=float(x_loss[near_ratio].sum()),
        voucher_above_loss_usd=None,  # with_vouchers
        eligible_above_loss_users=int(above_loss.sum()),
        voucher_above_ratio_usd=None,
        eligible_above_ratio_users=int(above_ratio.sum()),
        loss_hist=_hist(
            e_loss, x_loss[by_loss], c_loss - loss_band_usd, c_loss + loss_band_usd, 2 * bins
        ),
        ratio_hist=_hist(
            e_ratio, x_ratio[by_ratio], c_ratio - ratio_band, c_ratio + ratio_band, 2 * bins
        ),
        loss_phase_in=bands["loss"],
        ratio_phase_in=bands["ratio"],
    )
    return CliffSides(analysis, above_loss, above_ratio, inside)
