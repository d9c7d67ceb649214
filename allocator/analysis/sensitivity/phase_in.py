r"""The price of a phase-in band: what the users it makes eligible receive, and what everyone else
gives up for it at the same budget.

The band's price (:func:`phase_in_price`) is the same scenario with hard thresholds at the same
budget: the band users are exactly those it makes eligible (a phase factor below 1), and what
they receive is what everyone else gives up when the budget is paid in full.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, cast

import numpy as np
import polars as pl

from allocator import names as N
from allocator.analysis.sensitivity.cliffs import need_columns
from allocator.errors import InputError, ScenarioError
from allocator.jsonsafe import json_safe
from allocator.kernel.money import CENTS_PER_USD, cents_to_usd, format_usd
from allocator.settings.models import Scenario, round_budget_usd
from allocator.vouchers.eligibility import has_phase_in
from allocator.vouchers.pipeline import DataSession, RunResult, allocate


@dataclass(frozen=True)
class PhaseInPrice:
    """What a phase-in band costs everyone else: the scenario with its band against the same
    scenario with hard thresholds, at the same budget (:func:`phase_in_price`).

    *Band users* are those the band makes eligible (eligible with it, not without it): exactly
    the users with a phase factor below 1. *Others* are eligible either way; their totals,
    median coverage (voucher / loss) and per-user changes compare the two runs' paid cents.
    """

    budget_usd: float
    band_users: int
    band_loss_usd: float
    band_paid_usd: float
    band_median_voucher_usd: float | None
    others_users: int
    others_paid_without_band_usd: float
    others_paid_with_band_usd: float
    others_change_usd: float
    others_median_coverage_without_band: float | None
    others_median_coverage_with_band: float | None
    others_down: int
    others_up: int
    others_median_change_usd: float | None
    others_max_decrease_usd: float
    shadow_price_without_band: float | None = None
    shadow_price_with_band: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return cast(
            "dict[str, Any]", json_safe({k: getattr(self, k) for k in self.__dataclass_fields__})
        )

    def lines(self) -> list[str]:
        def pct(x: float | None) -> str:
            return "-" if x is None else f"{100 * x:.2f}%"

        median = (
            "-"
            if self.band_median_voucher_usd is None
            else format_usd(self.band_median_voucher_usd)
        )
        change = (
            "-"
            if self.others_median_change_usd is None
            else f"{self.others_median_change_usd:+,.2f}"
        )
        return [
            f"price of the phase-in band (the same scenario with hard thresholds, same budget "
            f"{format_usd(self.budget_usd, currency=True)}):",
            f"  band users (eligible only with the band): {self.band_users:,}, USD "
            f"{format_usd(self.band_loss_usd)} of loss, paid {format_usd(self.band_paid_usd, currency=True)} "
            "(median "
            f"voucher USD {median})",
            f"  everyone else ({self.others_users:,} users): paid USD "
            f"{format_usd(self.others_paid_without_band_usd)} without the band, USD "
            f"{format_usd(self.others_paid_with_band_usd)} with it ({self.others_change_usd:+,.2f}); "
            f"median coverage {pct(self.others_median_coverage_without_band)} -> "
            f"{pct(self.others_median_coverage_with_band)}",
            f"  {self.others_down:,} of them receive less, {self.others_up:,} more; median change "
            f"USD {change}, largest decrease {format_usd(self.others_max_decrease_usd, currency=True)}",
        ]


def _median(x: np.ndarray) -> float | None:
    return float(np.median(x)) if x.size else None


def band_price(
    with_band: pl.DataFrame,
    without_band: pl.DataFrame,
    *,
    budget_usd: float,
    shadow_prices: tuple[float, float] | None = None,
) -> PhaseInPrice:
    """:class:`PhaseInPrice` from the allocations of the two runs (``user_id``,
    ``voucher_cents``, ``loss_usd``).

    Parameters
    ----------
    with_band, without_band
        ``allocations.parquet`` of the scenario with its phase-in band, and of the same scenario
        with hard thresholds, at the same budget.
    budget_usd
        That budget, reported as is.
    shadow_prices
        ``(with band, without band)``, reported as is.

    Raises
    ------
    InputError
        A frame lacks a column, or a user eligible under the hard thresholds is not eligible with
        the band (a band only widens eligibility, so the two frames are not such a pair).
    """
    cols = (N.USER_ID, N.VOUCHER_CENTS, N.LOSS_USD)
    need_columns(with_band, cols, "with-band allocations")
    need_columns(without_band, cols, "without-band allocations")
    hard = without_band.select(N.USER_ID, pl.col(N.VOUCHER_CENTS).alias("_hard"))
    lost = hard.join(with_band.select(N.USER_ID), on=N.USER_ID, how="anti")
    if lost.height:
        raise InputError(
            f"{lost.height:,} user(s) eligible under the hard thresholds are not eligible with the "
            f"band (e.g. user {lost[N.USER_ID][0]}); these are not the same scenario with and "
            f"without a phase-in band."
        )
    joined = with_band.select(cols).join(hard, on=N.USER_ID, how="left")
    band = joined.filter(pl.col("_hard").is_null())
    others = joined.filter(pl.col("_hard").is_not_null())
    now = others[N.VOUCHER_CENTS].to_numpy().astype(np.int64)
    before = others["_hard"].to_numpy().astype(np.int64)
    loss = others[N.LOSS_USD].cast(pl.Float64).to_numpy()
    change = now - before
    pos = loss > 0
    return PhaseInPrice(
        budget_usd=float(budget_usd),
        band_users=band.height,
        band_loss_usd=float(band[N.LOSS_USD].sum()),
        band_paid_usd=cents_to_usd(int(band[N.VOUCHER_CENTS].sum())),
        band_median_voucher_usd=_median(band[N.VOUCHER_CENTS].to_numpy() / CENTS_PER_USD),
        others_users=others.height,
        others_paid_without_band_usd=cents_to_usd(int(before.sum())),
        others_paid_with_band_usd=cents_to_usd(int(now.sum())),
        others_change_usd=cents_to_usd(int(change.sum())),
        others_median_coverage_without_band=_median(before[pos] / CENTS_PER_USD / loss[pos]),
        others_median_coverage_with_band=_median(now[pos] / CENTS_PER_USD / loss[pos]),
        others_down=int((change < 0).sum()),
        others_up=int((change > 0).sum()),
        others_median_change_usd=_median(change / CENTS_PER_USD),
        others_max_decrease_usd=cents_to_usd(max(0, -int(change.min()))) if change.size else 0.0,
        shadow_price_with_band=None if shadow_prices is None else float(shadow_prices[0]),
        shadow_price_without_band=None if shadow_prices is None else float(shadow_prices[1]),
    )


def without_phase_in(scenario: Scenario) -> Scenario:
    """The same scenario with hard thresholds: both phase-in bands removed, nothing else changed."""
    rules = replace(scenario.eligibility, phase_in_loss_usd=None, phase_in_ratio=None)
    return replace(scenario, eligibility=rules)


def phase_in_price(
    session: DataSession, scenario: Scenario, *, with_band: RunResult | None = None
) -> PhaseInPrice:
    """The price of the scenario's phase-in band: :func:`band_price` of the scenario against
    :func:`without_phase_in` of it, both allocated on ``session`` at the scenario's budget.

    Parameters
    ----------
    session
        The data, loaded once (:class:`allocator.vouchers.pipeline.DataSession`).
    scenario
        A scenario with a phase-in band.
    with_band
        The scenario's run on ``session``, when already computed (it is not re-solved).

    Raises
    ------
    ScenarioError
        The scenario has no phase-in band.
    InfeasibleError
        The scenario without the band cannot pay its budget (e.g. exhaust mode with too few users
        left eligible), or the errors of :func:`allocator.vouchers.pipeline.allocate`.
    """

    if not has_phase_in(scenario.eligibility):
        raise ScenarioError(
            f"scenario {scenario.name!r} has no phase-in band (eligibility.phase_in_loss_usd or "
            f"phase_in_ratio), so it has no price to compare."
        )
    if with_band is None:
        with_band = allocate(session, scenario, with_payouts=False)
    hard = allocate(session, without_phase_in(scenario), with_payouts=False)
    return band_price(
        with_band.allocations,
        hard.allocations,
        budget_usd=round_budget_usd(scenario),
        shadow_prices=(with_band.allocation.shadow_price, hard.allocation.shadow_price),
    )
