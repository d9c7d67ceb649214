r"""A run directory, end to end: its budget, weight/alpha and cliff sensitivities, and the text of
the report.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import polars as pl

from allocator import names as N
from allocator.analysis.rerun import rerun
from allocator.analysis.sensitivity.budget import (
    BudgetChange,
    BudgetSensitivity,
    budget_sensitivity,
)
from allocator.analysis.sensitivity.cliffs import CliffAnalysis, cliff_analysis
from allocator.analysis.sensitivity.moves import (
    MAX_TOP_MOVERS,
    TOP_MOVERS,
    budget_moves,
    top_movers,
)
from allocator.analysis.sensitivity.phase_in import PhaseInPrice, phase_in_price
from allocator.analysis.sensitivity.weights import WeightSensitivity, weight_sensitivity
from allocator.errors import InputError
from allocator.jsonsafe import json_safe
from allocator.kernel.money import format_cents, format_usd
from allocator.runs.contract import RunDir
from allocator.vouchers.eligibility import has_phase_in


@dataclass(frozen=True, eq=False)
class SensitivityReport:
    r"""Budget, weight/alpha and cliff sensitivities of one run directory.

    ``moves`` is :func:`budget_moves` (every user's voucher now and at :math:`B \pm \delta`);
    the text and JSON show its :func:`top_movers`. ``phase_in_price`` is set when the run's rules
    have a phase-in band. ``notes`` say where the re-solve differs from the run directory.
    """

    run_dir: str
    scenario: str
    eligible: int
    budget: BudgetSensitivity
    weights: WeightSensitivity
    cliff: CliffAnalysis
    moves: pl.DataFrame | None = None
    phase_in_price: PhaseInPrice | None = None
    notes: tuple[str, ...] = ()
    top: int = TOP_MOVERS
    #: The scenario's rule; a claims rule has no weights (their section is empty).
    rule: str = "alpha_fair"

    def top_movers(self) -> pl.DataFrame | None:
        return None if self.moves is None else top_movers(self.moves, self.top)

    def to_dict(self) -> dict[str, Any]:
        movers = self.top_movers()
        return cast(
            "dict[str, Any]",
            json_safe(
                {
                    "run_dir": self.run_dir,
                    "scenario": self.scenario,
                    "rule": self.rule,
                    "eligible": self.eligible,
                    "budget": self.budget.to_dict(),
                    "top_movers": None if movers is None else movers.to_dicts(),
                    "weights": self.weights.to_dict(),
                    "cliff": self.cliff.to_dict(),
                    "phase_in_price": (
                        None if self.phase_in_price is None else self.phase_in_price.to_dict()
                    ),
                    "notes": list(self.notes),
                }
            ),
        )

    def lines(self) -> list[str]:
        b = self.budget

        def change(c: BudgetChange) -> str:
            if not c.feasible:
                return f"budget {c.delta_usd:+,.0f} USD: infeasible ({c.message})"
            return (
                f"budget {c.delta_usd:+,.0f} USD: {c.n_moved:,} vouchers move, total "
                f"{c.total_change_usd:+,.2f} USD (predicted {c.predicted_total_change_usd:+,.2f}), "
                f"largest {format_usd(max(c.max_increase_usd, c.max_decrease_usd))} USD, "
                f"{c.newly_at_cap:,} newly at cap, {c.newly_at_floor:,} newly at floor, "
                f"prediction error at most {c.max_prediction_error_usd:,.4f} USD"
            )

        if self.rule == "alpha_fair":
            price = (
                f"shadow price {b.shadow_price:.6g}; value of one more USD "
                f"{b.value_of_budget:.6g}; d price / d budget {b.dprice_dbudget:.6g}"
            )
        else:
            price = (
                f"rule {self.rule}: multiplier {b.shadow_price:.6g} on its path; d multiplier / "
                f"d budget {b.dprice_dbudget:.6g} (a rule has no objective, so no value of the "
                "budget)"
            )
        out = [
            f"run {self.run_dir} (scenario {self.scenario}, {self.eligible:,} eligible users)",
            price,
            f"users whose voucher grows with the budget: {int(np.count_nonzero(b.dv_dbudget)):,}"
            + (" (degenerate active set)" if b.degenerate else ""),
            change(b.up),
            change(b.down),
        ]
        out += _movers_lines(self.top_movers(), b.delta_usd)
        if self.rule != "alpha_fair":
            out.append(f"weights: not used by the {self.rule} rule (its claims are the losses)")
        else:
            out.append("weights (d metric / d parameter, finite differences):")
        for p in self.weights.parameters:
            m = ", ".join(f"{k} {'-' if v is None else f'{v:+.4g}'}" for k, v in p.metrics.items())
            out.append(
                f"  {p.name} = {p.value:g}: {m}; sum |dv| {format_usd(np.abs(p.dv).sum())} USD"
            )
        out.append("cliffs:")
        out += [f"  {line}" for line in self.cliff.lines()]
        if self.phase_in_price is not None:
            out += self.phase_in_price.lines()
        out += [f"note: {n}" for n in self.notes]
        return out


def _cents(c: int | None, *, sign: bool = False) -> str:
    if c is None:
        return "-"
    return ("+" if sign and c >= 0 else "") + format_cents(c)


def _movers_lines(movers: pl.DataFrame | None, delta: float) -> list[str]:
    if movers is None:
        return []
    if movers.height == 0:
        return [f"largest movers for +/- {delta:,.0f} USD: no voucher moves by a cent"]
    out = [
        f"largest movers for +/- {delta:,.0f} USD (paid cents, re-solved and rounded at each budget):",
        f"  {'user_id':>10} {'loss USD':>14} {'now':>12} {'+ delta':>12} {'- delta':>12} "
        f"{'predicted':>12}  bound",
    ]
    for r in movers.iter_rows(named=True):
        out.append(
            f"  {r[N.USER_ID]:>10} {r[N.LOSS_USD]:>14,.2f} {_cents(r[N.VOUCHER_CENTS]):>12} "
            f"{_cents(r['change_up_cents'], sign=True):>12} "
            f"{_cents(r['change_down_cents'], sign=True):>12} "
            f"{r['predicted_change_usd']:>+12,.2f}  {r[N.BOUND]} -> {r['bound_up'] or '-'} / "
            f"{r['bound_down'] or '-'}"
        )
    return out


def _features_log(
    features: pl.DataFrame, scenario: Any
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    spec = scenario.objective
    logs: dict[str, np.ndarray] = {}
    values: dict[str, float] = {}
    loss = features[N.LOSS_USD].cast(pl.Float64).to_numpy()
    with np.errstate(divide="ignore"):
        log_loss = np.log(loss)
        if np.all(np.isfinite(log_loss)):
            logs["loss_exponent"] = log_loss
            values["loss_exponent"] = float(spec.loss_exponent)
        ratio = features[N.LOSS_RATIO].cast(pl.Float64).to_numpy()
        log_ratio = np.log(np.minimum(ratio, spec.ratio_cap))
        if np.all(np.isfinite(log_ratio)):
            logs["ratio_exponent"] = log_ratio
            values["ratio_exponent"] = float(spec.ratio_exponent)
    for name, coef in spec.features:
        logs[f"features.{name}"] = features[name].cast(pl.Float64).to_numpy()
        values[f"features.{name}"] = float(coef)
    return logs, values


def _paid_cents(run: RunDir, user_id: np.ndarray, cents: np.ndarray) -> str | None:
    """A note when the re-solve does not pay what ``allocations.parquet`` says (or ``None``)."""
    path = run.path / N.ALLOCATIONS_FILE
    written = run.allocations
    same_users = written.height == user_id.shape[0] and bool(
        np.array_equal(written[N.USER_ID].to_numpy(), user_id)
    )
    if not same_users:
        return (
            f"the re-solve's {user_id.shape[0]:,} eligible users are not the {written.height:,} of "
            f"{path}; vouchers 'now' are the re-solve's"
        )
    differ = int((written[N.VOUCHER_CENTS].to_numpy() != cents).sum())
    if differ:
        return (
            f"re-solving the run pays {differ:,} user(s) differently from {path} (another solver "
            f"or version); vouchers 'now' are the re-solve's"
        )
    return None


def run_sensitivity(
    run_dir: str | Path, *, delta_usd: float = 1e6, top: int = TOP_MOVERS
) -> SensitivityReport:
    r"""Rebuild a run from its manifest and compute its budget, weight/alpha and cliff sensitivities.

    The scenario is the manifest's resolved scenario and the data the files it names; the run is
    re-solved (``allocate(..., with_payouts=False)``, with the solver the run used) rather than
    read back, because the derivatives need the continuous optimum and its prices. Every user's
    voucher at :math:`B \pm \delta` is re-solved and rounded to cents (:func:`budget_moves`);
    with a phase-in band the same scenario is also allocated with hard thresholds
    (:func:`phase_in_price`). The run directory and the input files are verified first
    (:func:`allocator.runs.reader.load_run`): the re-solve must be on the data the run used.

    Parameters
    ----------
    run_dir
        A run directory written by ``allocator allocate``.
    delta_usd
        :math:`\delta`, the budget change of the exact re-solves.
    top
        How many of the largest movers the text and JSON list, 0 to :data:`MAX_TOP_MOVERS`.

    Raises
    ------
    InputError
        ``top`` is outside 0 to :data:`MAX_TOP_MOVERS`; the run directory is damaged or changed
        since the run, or its input files are gone or changed (:func:`allocator.runs.reader.load_run`:
        a re-solve on other data would not be this run's sensitivities).
    """
    with np.errstate(over="ignore", invalid="ignore"):
        # The alpha derivative's re-solves at a small alpha > 0 may overflow exp() in the
        # solver's scale guess (clipped to the bounds right after, on purpose), and cvxpy
        # evaluates the utility v^(1 - alpha) at iterates a rounding error below zero (NaN, an
        # objective value nothing reads: the certificate judges the answer). Only the tool's own
        # messages go to stderr.
        return _run_sensitivity(Path(run_dir), delta_usd=delta_usd, top=top)


def _run_sensitivity(run_dir: Path, *, delta_usd: float, top: int) -> SensitivityReport:
    """:func:`run_sensitivity` without the floating-point error state."""

    if not 0 <= top <= MAX_TOP_MOVERS:
        raise InputError(f"top must be 0 to {MAX_TOP_MOVERS:,} movers, not {top}.")
    again = rerun(run_dir)
    written, session, run = again.written, again.session, again.result
    scenario = written.scenario
    features = run.eligibility.eligible
    loss = features[N.LOSS_USD].cast(pl.Float64).to_numpy()
    user_id = features[N.USER_ID].to_numpy()
    budget = budget_sensitivity(run.problem, run.allocation, delta_usd=delta_usd, loss=loss)
    moves = budget_moves(
        run.problem, run.allocation, budget, user_id=user_id, loss=loss, cents=run.cents
    )
    rule = scenario.objective.rule
    if rule == "alpha_fair":
        logs, values = _features_log(features, scenario)
        omega = None
        if scenario.objective.form == "coverage" and np.all(loss > 0):
            omega = np.log(loss)
        weights = weight_sensitivity(
            run.problem, run.allocation, logs, values=values, alpha_log_weight=omega, loss=loss
        )
    else:  # no weight coefficients and no alpha to move
        weights = WeightSensitivity(parameters=(), base_metrics={})
    cliff = cliff_analysis(run.eligibility.excluded, run.allocations, scenario.eligibility)
    price = None
    if has_phase_in(scenario.eligibility):
        price = phase_in_price(session, scenario, with_band=run)
    note = _paid_cents(written, user_id, run.cents)
    return SensitivityReport(
        run_dir=str(run_dir),
        scenario=scenario.name,
        eligible=features.height,
        budget=budget,
        weights=weights,
        cliff=cliff,
        moves=moves,
        phase_in_price=price,
        notes=() if note is None else (note,),
        top=top,
        rule=rule,
    )
