r"""The report's re-solved sections: the alpha sweep and the shadow price against the budget.

Both re-solve the reported run's scenario on the run's own input data with
:func:`allocator.analysis.sweeps.run_sweep` (``with_payouts=False``, each scenario's own solver),
the same code as ``allocator sweep``, and show a few of its metrics per point:

``sweep``
    Along ``objective.alpha``, spaced geometrically over :data:`ALPHA_RANGE`: Gini, median
    coverage and users at the floor and at the cap.
``shadow-price``
    Along the budget, from 0.5x to 1.5x the run's budget (rounded to the cent): the shadow
    price :math:`\lambda(B)` of the budget constraint :math:`\sum_i v_i \le B` and the number of
    users paid at their cap. Points the model cannot meet (e.g. a budget above the sum of the
    caps in exhaust mode) are listed with the reason.

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
from allocator.settings.models import Scenario
from allocator.settings.scenarios import with_overrides
from allocator.vouchers.pipeline import DataSession

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
    table = Table(
        columns=(
            "alpha",
            "Gini",
            "median coverage",
            "at floor",
            "at cap",
            "shadow price",
            "status",
        ),
        rows=tuple(
            (
                num(p["alpha"], "{:.4g}"),
                num(p.get("gini"), "{:.4f}"),
                pct(p.get("median_coverage")),
                count(p.get("n_floor")),
                count(p.get("n_cap")),
                num(p.get("shadow_price")),
                p["status"],
            )
            for p in points
        ),
        caption=f"{main.label} re-solved on its own data; the run itself has alpha = {alpha_now:g}",
    )
    ok = [p for p in points if p["status"] == STATUS_OK]
    return Section(
        id="sweep",
        title="Alpha sweep",
        data={"alpha_of_run": alpha_now, "points": points},
        tables=(table,),
        charts=(charts.alpha_sweep_chart(ok, alpha_now),) if ok else (),
    )


def shadow_price_section(main: ReportRun, session: DataSession, n_points: int) -> Section:
    """The run's scenario re-solved at ``n_points`` budgets from 0.5x to 1.5x its own."""
    budget = float(main.scenario.budget.total_usd)
    budgets = sorted(
        {float(b) for b in np.round(np.linspace(*BUDGET_RANGE, n_points) * budget, 2) if b > 0}
    )
    points = [
        {"budget_usd": b, **p}
        for b, p in zip(budgets, solve_points(session, "budget.total_usd", budgets, main.scenario))
    ]
    table = Table(
        columns=("budget (USD)", "shadow price", "at cap", "at floor", "paid (USD)", "status"),
        rows=tuple(
            (
                usd(p["budget_usd"]),
                num(p.get("shadow_price")),
                count(p.get("n_cap")),
                count(p.get("n_floor")),
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
        title="Shadow price against the budget",
        data={"budget_of_run_usd": budget, "points": points},
        tables=(table,),
        charts=(charts.shadow_price_chart(ok, budget, label=main.label),) if ok else (),
    )
