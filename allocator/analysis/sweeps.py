"""Sweeps: a scenario along one parameter or a grid of several, with the metrics of ``compare``.

:func:`sweep_grid` turns ``--param`` texts (``NAME=START:STOP:COUNT``, ``NAME=log:START:STOP:COUNT``
or ``NAME=V1,V2,...``) into a validated scenario per point;
:func:`run_sweep` allocates every point with :func:`allocator.vouchers.pipeline.allocate` and records the
metrics of :func:`allocator.analysis.metrics.summary` plus ``moved_vs_first`` (users whose voucher moves
by more than a threshold against the first point that solved). A point that is infeasible or
that the solver cannot solve gets its ``status`` and ``reason`` and the sweep goes on.

With the cvxpy solver, points that differ only in the budget, the floor, the cap or segment
shares re-use one compiled :class:`~allocator.kernel.model.FairnessModel` (:class:`ModelReuse`): those
are cvxpy Parameters of the model, so a new value needs no recompilation. A new coverage cap,
``alpha``, weights or eligibility rules need a new model.

Nothing here knows about the command line; ``allocator sweep`` is a thin layer over it.
"""

from __future__ import annotations

import difflib
import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from allocator import names as N
from allocator.analysis.metrics import LOSS_BANDS, budget_price, moved, summary
from allocator.errors import (
    AllocatorError,
    InfeasibleError,
    NotCertifiedError,
    ScenarioError,
    SolverError,
)
from allocator.kernel.allocation import Allocation
from allocator.kernel.certificate import DEFAULT_TOL, Certificate
from allocator.kernel.fast import fast_reach
from allocator.kernel.feasibility import check_feasible, validate
from allocator.kernel.model import FairnessModel
from allocator.kernel.problem import AllocationProblem
from allocator.kernel.rule_certificate import RuleCertificate
from allocator.kernel.solve import solve
from allocator.settings.models import RULE_ALPHA_FAIR, Scenario
from allocator.settings.scenarios import SWEEPABLE, with_overrides
from allocator.vouchers.pipeline import DataSession, allocate

__all__ = [
    "CSV_METRICS",
    "MAX_SWEEP_POINTS",
    "PARAM_FORMS",
    "STATUS_INFEASIBLE",
    "STATUS_NOT_CERTIFIED",
    "STATUS_SOLVED",
    "STATUS_SOLVER_FAILED",
    "ModelReuse",
    "PointRun",
    "parse_param",
    "point_label",
    "run_point",
    "run_sweep",
    "sweep_frame",
    "sweep_grid",
]

#: Most points a sweep evaluates, over the whole grid (the product of the COUNTs).
MAX_SWEEP_POINTS = 1000

#: Point statuses of a sweep, by the error that stopped the point.
STATUS_SOLVED = "solved"
STATUS_INFEASIBLE = "infeasible"
STATUS_SOLVER_FAILED = "solver_failed"
STATUS_NOT_CERTIFIED = "not_certified"

#: Integer columns of ``sweep.csv`` (the other metrics are floats).
_INT_METRICS = frozenset(
    {"eligible", "paid_cents", "unspent_cents", "n_floor", "n_interior", "n_cap", "moved_vs_first"}
)
#: Metric columns of ``sweep.csv`` in order; ``median_coverage[<band>]`` flattens the band dict.
CSV_METRICS: tuple[str, ...] = (
    "eligible",
    "paid_cents",
    "paid_usd",
    "unspent_cents",
    "unspent_usd",
    "n_floor",
    "n_interior",
    "n_cap",
    "mean_voucher",
    "median_voucher",
    "p90_voucher",
    "max_voucher",
    "median_coverage",
    *(f"median_coverage[{label}]" for label, _, _ in LOSS_BANDS),
    "gini",
    "top_decile_share",
    "shadow_price",
    "moved_vs_first",
)


#: Parameters that shape alpha-fairness or its weight, idle under a claims rule.
WEIGHT_PARAMETER_PREFIXES = (
    "objective.alpha",
    "objective.loss_exponent",
    "objective.ratio_exponent",
    "objective.ratio_cap",
    "objective.features.",
)

#: The ``--param`` forms, for messages.
PARAM_FORMS = (
    "NAME=START:STOP:COUNT (evenly spaced), NAME=log:START:STOP:COUNT (evenly spaced in log, "
    "START and STOP > 0) or NAME=V1,V2,... (a list of values)"
)


def _sweepable(name: str) -> bool:
    return name in SWEEPABLE or any(
        name.startswith(k.split("<")[0]) and len(name) > len(k.split("<")[0])
        for k in SWEEPABLE
        if "<" in k
    )


def _number(spec: str, text: str, *, listed: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        why = (
            f"value {text.strip()!r} is not a number"
            if listed
            else "START and STOP must be numbers and COUNT a whole number"
        )
        raise ScenarioError(f"--param {spec!r}: {why}.") from None
    if not math.isfinite(value):
        what = "values" if listed else "START and STOP"
        raise ScenarioError(f"--param {spec!r}: {what} must be finite numbers, not {text!r}.")
    return value


def _count(spec: str, text: str) -> int:
    try:
        count = int(text)
    except ValueError:
        raise ScenarioError(
            f"--param {spec!r}: START and STOP must be numbers and COUNT a whole number."
        ) from None
    # Checked before numpy sees COUNT: a huge one would exhaust memory or overflow to inf.
    if not 1 <= count <= MAX_SWEEP_POINTS:
        raise ScenarioError(
            f"--param {spec!r}: COUNT must be from 1 to {MAX_SWEEP_POINTS} "
            f"(a sweep evaluates at most {MAX_SWEEP_POINTS} points in total)."
        )
    return count


def parse_param(spec: str) -> tuple[str, np.ndarray]:
    """Parse a ``--param`` text into the name and its values.

    Parameters
    ----------
    spec
        ``NAME=START:STOP:COUNT`` (``COUNT`` evenly spaced values from START to STOP inclusive,
        e.g. ``objective.alpha=0.5:5:10``), ``NAME=log:START:STOP:COUNT`` (evenly spaced in
        log, START and STOP > 0, e.g. ``objective.alpha=log:0.1:10:5``) or ``NAME=V1,V2,...``
        (the listed values in order, e.g. ``objective.alpha=0.5,1,2``).

    Returns
    -------
    (name, values)
        The dotted parameter and its float64 values (budgets rounded to the cent).

    Raises
    ------
    ScenarioError
        Not of a form above, a name that cannot be swept, a value that is not a finite number,
        a log grid through 0, or COUNT not a whole number from 1 to :data:`MAX_SWEEP_POINTS`
        (or a list longer than that).
    """
    name, sep, rng = spec.partition("=")
    name, rng = name.strip(), rng.strip()
    log = rng.startswith("log:")
    parts = rng.removeprefix("log:").split(":")
    listed = not log and len(parts) == 1 and rng != ""
    if not sep or not (listed or len(parts) == 3):
        raise ScenarioError(
            f"--param {spec!r} is not of the form {PARAM_FORMS} "
            f"(e.g. objective.alpha=0.5:5:10, objective.alpha=log:0.1:10:5 or "
            f"objective.alpha=0.5,1,2)."
        )
    if not _sweepable(name):
        allowed = ", ".join(sorted(SWEEPABLE))
        close = difflib.get_close_matches(name, list(SWEEPABLE), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ScenarioError(
            f"--param {spec!r}: {name!r} cannot be swept. Sweepable: {allowed}.{hint}"
        )
    if listed:
        items = rng.split(",")
        if len(items) > MAX_SWEEP_POINTS:
            raise ScenarioError(
                f"--param {spec!r} lists {len(items):,} values; a sweep evaluates at most "
                f"{MAX_SWEEP_POINTS} points in total."
            )
        values = np.array([_number(spec, v, listed=True) for v in items], dtype=np.float64)
    else:
        start = _number(spec, parts[0], listed=False)
        stop = _number(spec, parts[1], listed=False)
        count = _count(spec, parts[2])
        if log:
            if not (start > 0 and stop > 0):
                raise ScenarioError(
                    f"--param {spec!r}: a log grid needs START and STOP > 0 "
                    f"(e.g. {name}=log:0.1:10:5); use NAME=V1,V2,... to include 0."
                )
            values = np.geomspace(start, stop, count)
        else:
            values = np.linspace(start, stop, count)
    if name == "budget.total_usd":
        # A budget is paid to the cent; evenly spaced points land between cents otherwise.
        values = np.round(values, 2)
    return name, values


def sweep_grid(
    base: Scenario, params: Sequence[str]
) -> tuple[list[str], list[dict[str, float]], list[Scenario]]:
    """Parse every ``--param`` and build the scenario of every grid point, before any data is read.

    Parameters
    ----------
    base
        The scenario being swept.
    params
        The ``--param`` texts; several make a grid (their Cartesian product, first varying slowest).

    Returns
    -------
    (names, points, scenarios)
        The parameter names, each point's ``{name: value}`` and its validated scenario.

    Raises
    ------
    ScenarioError
        A bad ``--param``, a name given twice, more than :data:`MAX_SWEEP_POINTS` points, or a
        point whose scenario is out of range (e.g. a floor above the cap); the message names it.
    """
    grids = [parse_param(p) for p in params]
    names = [g[0] for g in grids]
    if len(set(names)) != len(names):
        raise ScenarioError("--param names the same parameter twice.")
    total = math.prod(len(g[1]) for g in grids)
    if total > MAX_SWEEP_POINTS:
        sizes = " x ".join(str(len(g[1])) for g in grids)
        raise ScenarioError(
            f"the --param grid has {sizes} = {total:,} points; a sweep evaluates at most "
            f"{MAX_SWEEP_POINTS} points in total."
        )
    if base.objective.rule != RULE_ALPHA_FAIR:
        # a claims rule divides by the losses: the weight's knobs would give identical points
        idle = [n for n in names if n.startswith(WEIGHT_PARAMETER_PREFIXES)]
        if idle:
            raise ScenarioError(
                f"--param {idle[0]}: scenario {base.name!r} uses the claims rule "
                f"{base.objective.rule!r}, whose claims are the losses; alpha and the weight do "
                "not change its vouchers.",
                hint="sweep budget.total_usd, bounds.floor_usd, bounds.cap_usd, an eligibility "
                "threshold or the rule's own parameter (objective.base_usd, "
                "objective.threshold_usd) instead",
            )
    points = [
        dict(zip(names, (float(v) for v in values)))
        for values in itertools.product(*(g[1] for g in grids))
    ]
    scenarios = []
    for point in points:
        try:
            scenarios.append(with_overrides(base, point))
        except ScenarioError as exc:
            raise ScenarioError(f"sweep point {point_label(point)}: {exc}") from None
    return names, points, scenarios


def point_label(point: dict[str, float]) -> str:
    return ", ".join(f"{n}={v:.6g}" for n, v in point.items())


class ModelReuse:
    """One compiled cvxpy model re-used across sweep points that differ only in its Parameters.

    :class:`~allocator.kernel.model.FairnessModel` holds the budget, the floor, the cap and segment
    shares as cvxpy Parameters; everything else (users, weights, ``alpha``, exhaust mode,
    segment members and which share sides exist, users whose bounds coincide and their amounts,
    whole-cent coverage caps) is compiled into the problem. :meth:`solve` updates the cached
    model when only Parameters differ and builds a fresh one otherwise, so the answer is the one
    ``solvers.solve(problem, method="cvxpy")`` gives, up to solver tolerance (the model keeps the
    scaling guessed for the point it was built for; the polish and the certificate accept the
    answer either way).

    Attributes
    ----------
    model : FairnessModel or None
        The model of the last point solved with cvxpy, ``None`` when that model's own scaling
        did not solve it (the next point then starts afresh, as a fresh solve would).
    compiled : int
        cvxpy problems built (a fresh model, or a rebuild inside ``set_bounds``).
    reused : int
        Points solved on an already compiled problem.
    """

    def __init__(self) -> None:
        self.model: Any = None
        self.compiled = 0
        self.reused = 0

    def solve(self, problem: AllocationProblem, *, cvxpy_solver: str) -> Allocation:
        """Solve ``problem`` with cvxpy and return the certified allocation.

        Raises the errors of :func:`allocator.kernel.solve.solve`.
        """
        started = time.perf_counter()
        # The same checks, in the same order, as solvers.solve: an infeasible point never
        # touches the cached model.
        validate(problem)
        check_feasible(problem)
        model = self.model
        before = None if model is None else model.cvx_problem
        if model is not None and self._updatable(model, problem, cvxpy_solver):
            self._update(model, problem)
            if not self._matches(model, problem):
                model = None
        else:
            model = None
        if model is None:
            model = FairnessModel(problem, solver=cvxpy_solver, check=False)
        if model.cvx_problem is before:
            self.reused += 1
        else:
            self.compiled += 1
        # A model whose own scaling did not solve this point (it fell back to a rebuilt one, or
        # failed) is not kept: re-using it would repeat a failing attempt at every later point.
        self.model = None
        allocation: Allocation = model.solve(tol=DEFAULT_TOL, started=started)
        if model.fallback is None:
            self.model = model
        return allocation

    @staticmethod
    def _updatable(model: Any, problem: AllocationProblem, cvxpy_solver: str) -> bool:
        old = model.problem
        sb, old_sb = problem.scalar_bounds, old.scalar_bounds
        if (
            model.solver != cvxpy_solver.upper()
            or old.n != problem.n
            or float(old.alpha) != float(problem.alpha)
            or bool(old.exhaust) != bool(problem.exhaust)
            or sb is None
            or old_sb is None
            or (sb.coverage_cap is None) != (old_sb.coverage_cap is None)
            or sb.whole_cents != old_sb.whole_cents
            or not np.array_equal(sb.loss, old_sb.loss)
            or not np.array_equal(problem.weights, old.weights)
            or len(problem.segments) != len(old.segments)
        ):
            return False
        for seg, old_seg in zip(problem.segments, old.segments):
            if (
                seg.name != old_seg.name
                or (seg.min_share is None) != (old_seg.min_share is None)
                or (seg.max_share is None) != (old_seg.max_share is None)
                or not np.array_equal(seg.members, old_seg.members)
            ):
                return False
        # Users whose bounds coincide are pinned by constants (FairnessModel.__init__), and
        # set_bounds rebuilds only when that set of users changes, not when their amount does.
        fixed = np.asarray(problem.lower) >= np.asarray(problem.upper)
        return bool(
            np.array_equal(fixed, model.fixed)
            and np.array_equal(np.asarray(problem.lower)[fixed], np.asarray(old.lower)[fixed])
        )

    @staticmethod
    def _update(model: Any, problem: AllocationProblem) -> None:
        sb = problem.scalar_bounds
        assert sb is not None  # _updatable requires scalar bounds
        model.set_budget(problem.budget)
        model.set_bounds(floor=sb.floor, cap=sb.cap, coverage_cap=sb.coverage_cap)
        for seg in problem.segments:
            model.set_segment_shares(seg.name, min_share=seg.min_share, max_share=seg.max_share)

    @staticmethod
    def _matches(model: Any, problem: AllocationProblem) -> bool:
        # The model must now pose exactly this point's problem; anything else means a rebuild.
        p = model.problem
        return (
            float(p.budget) == float(problem.budget)
            and np.array_equal(p.lower, problem.lower)
            and np.array_equal(p.upper, problem.upper)
            and np.array_equal(p.weights, problem.weights)
            and all(
                (a.min_share, a.max_share) == (b.min_share, b.max_share)
                for a, b in zip(p.segments, problem.segments)
            )
        )


@dataclass(frozen=True, eq=False)
class PointRun:
    """One solved sweep point: the solver's allocation and the paid cents as a frame.

    ``allocations`` has ``user_id``, ``voucher_cents``, ``loss_usd`` and ``bound`` (enough for
    :func:`allocator.analysis.metrics.summary` and :func:`allocator.analysis.metrics.moved`).
    """

    allocation: Allocation
    allocations: pl.DataFrame
    budget_cents: int
    final_certificate: Certificate | RuleCertificate


def run_point(
    session: DataSession, scenario: Scenario, *, solver: str | None, reuse: ModelReuse | None
) -> PointRun:
    """Allocate one sweep point with :func:`allocator.vouchers.pipeline.allocate`, re-using the cvxpy
    model of ``reuse`` when the point is solved with cvxpy.

    The point goes through every step of a single run (eligibility, the problem, the solve, the
    rounding to cents and the rounded-voucher certificate); only the cvxpy solve is handed to
    :meth:`ModelReuse.solve`.

    Raises
    ------
    InfeasibleError, SolverError
        The point has no allocation, or the solver or the rounded certificate failed.
    """

    def solve_problem(problem: AllocationProblem, *, method: str, cvxpy_solver: str) -> Allocation:
        if reuse is not None and (
            method == "cvxpy" or (method == "auto" and not fast_reach(problem))
        ):
            return reuse.solve(problem, cvxpy_solver=cvxpy_solver)
        return solve(problem, method=method, cvxpy_solver=cvxpy_solver)

    run = allocate(
        session, scenario, solver=solver, with_payouts=False, solve_problem=solve_problem
    )
    return PointRun(
        allocation=run.allocation,
        allocations=run.allocations.select(N.USER_ID, N.VOUCHER_CENTS, N.LOSS_USD, N.BOUND),
        budget_cents=run.budget_cents,
        final_certificate=run.final_certificate,
    )


def _failure_status(exc: AllocatorError) -> str:
    if isinstance(exc, InfeasibleError):
        return STATUS_INFEASIBLE
    if isinstance(exc, NotCertifiedError):
        return STATUS_NOT_CERTIFIED
    return STATUS_SOLVER_FAILED


def run_sweep(
    session: DataSession,
    points: Sequence[dict[str, float]],
    scenarios: Sequence[Scenario],
    *,
    solver: str | None,
    moved_threshold: float,
    reuse: bool = True,
    progress: Callable[[str], None] = lambda _: None,
) -> tuple[list[dict[str, Any]], ModelReuse | None]:
    """Solve every point and return one row per point, failed points included.

    Parameters
    ----------
    session
        The loaded data.
    points, scenarios
        Each point's ``{parameter: value}`` and its scenario (:func:`sweep_grid`).
    solver
        ``--solver`` (``None``: each scenario's own).
    moved_threshold
        USD for ``moved_vs_first``, counted against the first point that solved.
    reuse
        Re-use one compiled cvxpy model across points where only its Parameters change.
    progress
        Called with a line per point.

    Returns
    -------
    (rows, model_reuse)
        Per point: the parameter values, ``status`` (``solved``, ``infeasible``,
        ``solver_failed`` or ``not_certified``), ``reason`` (the error message, ``None`` when
        solved), ``solver`` and the metrics of :func:`allocator.analysis.metrics.summary` plus
        ``moved_vs_first`` (all ``None`` for a failed point); and the :class:`ModelReuse` used.
    """
    model_reuse = ModelReuse() if reuse else None
    metric_keys: list[str] | None = None
    first: pl.DataFrame | None = None
    rows: list[dict[str, Any]] = []
    for k, (point, scen) in enumerate(zip(points, scenarios), 1):
        progress(f"point {k}/{len(points)}: {point_label(point)}")
        try:
            run = run_point(session, scen, solver=solver, reuse=model_reuse)
        except (InfeasibleError, SolverError) as exc:
            rows.append(
                {**point, "status": _failure_status(exc), "reason": exc.message, "solver": None}
            )
            continue
        metrics = summary(
            run.allocations,
            budget_cents=run.budget_cents,
            shadow_price=budget_price(run.allocation),
        )
        metric_keys = metric_keys or list(metrics)
        cents = run.allocations.select(N.USER_ID, N.VOUCHER_CENTS)
        if first is None:
            first = cents
        rows.append(
            {
                **point,
                "status": STATUS_SOLVED,
                "reason": None,
                "solver": run.allocation.method,
                **metrics,
                "moved_vs_first": moved(first, cents, threshold_usd=moved_threshold),
            }
        )
    # Failed points carry every metric key, as null, so each row has the same fields (the keys
    # of a summary of nobody when no point solved).
    if metric_keys is None:
        nobody = pl.DataFrame(
            schema={N.VOUCHER_CENTS: pl.Int64, N.LOSS_USD: pl.Float64, N.BOUND: pl.String}
        )
        metric_keys = list(summary(nobody, budget_cents=0, shadow_price=None))
    keys = [*metric_keys, "moved_vs_first"]
    for row in rows:
        for key in keys:
            row.setdefault(key, None)
    return rows, model_reuse


def sweep_frame(names: Sequence[str], rows: Sequence[dict[str, Any]]) -> pl.DataFrame:
    """The rows of :func:`run_sweep` as the ``sweep.csv`` table, with explicit column types.

    The band medians become columns ``median_coverage[<band>]``; failed points have null metrics.
    """
    schema: dict[str, pl.DataType] = {n: pl.Float64() for n in names}
    schema.update({"status": pl.String(), "reason": pl.String(), "solver": pl.String()})
    schema.update({m: pl.Int64() if m in _INT_METRICS else pl.Float64() for m in CSV_METRICS})
    records = []
    for row in rows:
        bands = row.get("median_coverage_by_band") or {}
        flat = dict(row)
        flat.update({f"median_coverage[{label}]": bands.get(label) for label, _, _ in LOSS_BANDS})
        records.append({c: flat.get(c) for c in schema})
    return pl.DataFrame(records, schema=schema, orient="row")
