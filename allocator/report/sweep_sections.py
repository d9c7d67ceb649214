r"""The report's re-solved sections: the alpha sweep and the budget sweep.

Both re-solve the reported run's scenario on the run's own input data with
:func:`allocator.analysis.sweeps.run_sweep` (``with_payouts=False``, each scenario's own solver),
the same code as ``allocator sweep``, and show a few of its metrics per point:

``sweep``
    Along ``objective.alpha``, spaced geometrically over :data:`ALPHA_RANGE`: Gini, median
    coverage and users at the floor and at the cap.
``shadow-price``
    Along the budget, from 0.5x to 1.5x the run's budget (rounded to the cent): users at the
    floor and at the cap, median coverage, and the shadow price :math:`\lambda(B)` of the budget
    constraint :math:`\sum_i v_i \le B`, shown over the run's own :math:`\lambda(B_0)` (what one
    more dollar is worth, 1 at the run's budget). Points the model cannot meet (e.g. a budget
    above the sum of the caps in exhaust mode) are listed with the reason.

Each point is solved from scratch (``reuse=False``): a report shows what ``allocator allocate``
would pay at that point, not an answer within solver tolerance of it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from allocator.analysis.sweeps import STATUS_SOLVED, run_sweep
from allocator.errors import AllocatorError
from allocator.report import charts
from allocator.report.cells import count, num, pct, usd, usd_cents
from allocator.report.inputs import ReportRun
from allocator.report.model import ALPHA_RANGE, BUDGET_RANGE, Section, Table
from allocator.report.words import cap_words, floor_words, plain_number
from allocator.settings.models import Scenario, round_budget_usd
from allocator.settings.scenarios import with_overrides
from allocator.vouchers.pipeline import DataSession

#: Titles of the two sections (also when they are skipped).
SWEEP_TITLE = "A more or less equal split (alpha)"
BUDGET_TITLE = "A bigger or smaller budget"
#: Status of a point that solved, as the report has always written it.
STATUS_OK = "ok"
#: Metrics of :func:`allocator.analysis.metrics.summary` the report keeps for each point.
POINT_METRICS = ("gini", "median_coverage", "n_floor", "n_cap", "paid_cents", "shadow_price")
#: ``moved_vs_first`` of :func:`run_sweep` is not shown; any threshold will do.
_MOVED_THRESHOLD_USD = 0.01


def _error_status(exc: AllocatorError) -> str:
    return f"{type(exc).__name__}: {exc}"


def _point(row: Mapping[str, Any]) -> dict[str, Any]:
    """A row of :func:`run_sweep` as a report point: ``ok`` and its metrics, or why it failed."""
    if row["status"] != STATUS_SOLVED:
        return {"status": f"{row['status']}: {row['reason']}"}
    return {"status": STATUS_OK, **{k: row[k] for k in POINT_METRICS}}


def solve_points(
    session: DataSession, name: str, values: Sequence[float], base: Scenario
) -> list[dict[str, Any]]:
    """``base`` re-solved with ``name`` set to each of ``values``, one report point each.

    Parameters
    ----------
    session
        The run's input data (:func:`allocator.report.inputs.open_session`).
    name
        The dotted scenario parameter, e.g. ``objective.alpha``.
    values
        Its values, in the order of the points returned.
    base
        The run's scenario.

    Returns
    -------
    list of dict
        Per value, ``status`` (``ok``, or what stopped the point) and, when ``ok``, the metrics
        :data:`POINT_METRICS`. A value the scenario refuses is a failed point, not an error.
    """
    refused: dict[int, str] = {}
    points: list[dict[str, float]] = []
    scenarios: list[Scenario] = []
    for k, value in enumerate(values):
        try:
            scenarios.append(with_overrides(base, {name: value}))
        except AllocatorError as exc:
            refused[k] = _error_status(exc)
            continue
        points.append({name: value})
    try:
        rows, _ = run_sweep(
            session,
            points,
            scenarios,
            solver=None,
            moved_threshold=_MOVED_THRESHOLD_USD,
            reuse=False,
        )
        answers = [_point(row) for row in rows]
    except AllocatorError as exc:
        # run_sweep records infeasible and solver failures per point; anything else stops it,
        # and then no point of the section has an answer
        answers = [{"status": _error_status(exc)} for _ in points]
    solved = iter(answers)
    return [{"status": refused[k]} if k in refused else next(solved) for k in range(len(values))]


def skipped_section(section_id: str, title: str, why: str) -> Section:
    """A sweep section that was not computed, saying why."""
    return Section(
        id=section_id,
        title=title,
        data={"skipped": why, "points": []},
        notes=(f"not computed: {why}",),
    )


def alpha_sweep_section(main: ReportRun, session: DataSession, n_points: int) -> Section:
    """The run's scenario re-solved at ``n_points`` values of ``objective.alpha``."""
    alpha_now = float(main.scenario.objective.alpha)
    alphas = [float(a) for a in np.round(np.geomspace(*ALPHA_RANGE, n_points), 4)]
    points = [
        {"alpha": a, **p}
        for a, p in zip(alphas, solve_points(session, "objective.alpha", alphas, main.scenario))
    ]
    scenarios = [main.scenario]
    at_floor, at_cap = floor_words(scenarios), cap_words(scenarios)
    table = Table(
        columns=(
            "alpha",
            "Gini (0 = all equal)",
            "median share of the loss repaid",
            f"users paid {at_floor}",
            f"users paid {at_cap}",
            "status",
        ),
        rows=tuple(
            (
                plain_number(p["alpha"]),
                num(p.get("gini"), "{:.4f}"),
                pct(p.get("median_coverage")),
                count(p.get("n_floor")),
                count(p.get("n_cap")),
                p["status"],
            )
            for p in points
        ),
        caption=(
            f"{main.label} re-solved on its own data; the run itself has alpha = {alpha_now:g}"
        ),
    )
    ok = [p for p in points if p["status"] == STATUS_OK]
    return Section(
        id="sweep",
        title=SWEEP_TITLE,
        data={"alpha_of_run": alpha_now, "points": points},
        tables=(table,),
        charts=(
            (
                charts.alpha_sweep_chart(
                    ok, alpha_now, floor_words=f"paid {at_floor}", cap_words=f"paid {at_cap}"
                ),
            )
            if ok
            else ()
        ),
        notes=(
            "alpha sets how the money is shared: near 0 it goes where the weights add the most "
            "in total, at 1 each voucher is in proportion to its weight where the bounds allow, "
            "and the higher alpha, the more equal the vouchers; each point's shadow price is in "
            "the JSON report (its units change with alpha, so it is not compared here)",
        ),
    )


def budget_section(main: ReportRun, session: DataSession, n_points: int) -> Section:
    """The run's scenario re-solved at ``n_points`` budgets from 0.5x to 1.5x its own.

    Each point's ``dollar_value`` is its shadow price over the run's own (from the manifest):
    how much one more dollar is worth to the objective, 1 at the run's budget. The shadow
    price's units depend on alpha and the weights, its ratio does not.
    """
    # what the run paid (the budget less a reserve held back in round 1); every point pays its
    # whole budget, with no reserve
    budget = round_budget_usd(main.scenario)
    swept = with_overrides(main.scenario, {"budget.reserve_usd": 0.0})
    budgets = sorted(
        {float(b) for b in np.round(np.linspace(*BUDGET_RANGE, n_points) * budget, 2) if b > 0}
    )
    own = main.run.manifest.get("shadow_price")
    points = [
        {"budget_usd": b, **p, "dollar_value": _ratio(p.get("shadow_price"), own)}
        for b, p in zip(budgets, solve_points(session, "budget.total_usd", budgets, swept))
    ]
    scenarios = [main.scenario]
    at_floor, at_cap = floor_words(scenarios), cap_words(scenarios)
    table = Table(
        columns=(
            "budget (USD)",
            f"users paid {at_cap}",
            f"users paid {at_floor}",
            "median share of the loss repaid",
            "what one more dollar is worth (1 = this run)",
            "paid (USD)",
            "status",
        ),
        rows=tuple(
            (
                usd(p["budget_usd"]),
                count(p.get("n_cap")),
                count(p.get("n_floor")),
                pct(p.get("median_coverage")),
                plain_number(p.get("dollar_value"), 3),
                usd_cents(p.get("paid_cents")),
                p["status"],
            )
            for p in points
        ),
        caption=(
            f"{main.label} re-solved at budgets from {BUDGET_RANGE[0]}x to {BUDGET_RANGE[1]}x "
            "its own"
        ),
    )
    ok = [p for p in points if p["status"] == STATUS_OK]
    return Section(
        id="shadow-price",
        title=BUDGET_TITLE,
        data={"budget_of_run_usd": budget, "shadow_price_of_run": own, "points": points},
        tables=(table,),
        charts=(
            (
                charts.budget_chart(
                    ok,
                    budget,
                    label=main.label,
                    floor_words=f"paid {at_floor}",
                    cap_words=f"paid {at_cap}",
                ),
            )
            if ok
            else ()
        ),
        notes=(
            "what one more dollar is worth is the budget's shadow price, scaled to 1 at this "
            "run's budget: 2 means a dollar added there does twice as much for the objective as "
            "one added to this run",
        ),
    )


def _ratio(price: Any, own: Any) -> float | None:
    """``price / own``, or None when either is missing or ``own`` is not positive."""
    if not isinstance(price, (int, float)) or not isinstance(own, (int, float)) or own <= 0:
        return None
    return float(price) / float(own)
