"""End to end: data directory + scenario -> eligibility -> model -> solve -> cents -> run.

The library entry point behind ``allocator allocate``, ``compare`` and ``sweep``. It reads files
only through :mod:`allocator.data.inputs` and writes only through :mod:`allocator.runs.writer`; the
optimisation core (:mod:`allocator.kernel.fast`, :mod:`allocator.kernel.rounding`) sees arrays.
"""

from __future__ import annotations

import dataclasses
import getpass
import time
import weakref
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl

from allocator import names as N
from allocator.data.inputs import Inputs, load_inputs
from allocator.errors import InfeasibleError, NotCertifiedError
from allocator.kernel.allocation import Allocation
from allocator.kernel.certificate import Certificate, certify
from allocator.kernel.money import CENTS_PER_USD, budget_to_cents
from allocator.kernel.problem import AllocationProblem
from allocator.kernel.rounding import round_to_cents_by_segment
from allocator.kernel.rule_certificate import RuleCertificate, certify_rule
from allocator.kernel.solve import solve
from allocator.runs.contract import LOWER_CENTS, UPPER_CENTS
from allocator.runs.hashing import sha256_file
from allocator.runs.manifest import versions
from allocator.runs.writer import write_run_dir
from allocator.settings.models import EligibilityRules, Scenario
from allocator.settings.scenarios import scenario_to_dict
from allocator.vouchers.eligibility import (
    EligibilityResult,
    UserTable,
    decide_users,
    event_rules,
    user_table,
)
from allocator.vouchers.payouts import Payouts, plan_payouts, write_payouts_csv
from allocator.vouchers.weights import build_problem, segment_labels

#: Identifies the programme in payout idempotency keys: one voucher per user per programme.
PROGRAMME = "together-initiative-vouchers-2025"

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


#: Eligibility results a :class:`DataSession` keeps (distinct rule sets, most recent first).
ELIGIBILITY_CACHE_SIZE = 4
#: Passes over the events a :class:`DataSession` keeps (distinct windows, products and fees).
USER_TABLE_CACHE_SIZE = 2


@dataclass
class DataSession:
    """Inputs loaded and validated once, with eligibility cached per rule set.

    ``compare`` and ``sweep`` evaluate many scenarios on the same data; most share their
    eligibility rules, so the Polars pipeline runs once per distinct rule set. Only the
    :data:`ELIGIBILITY_CACHE_SIZE` most recently used rule sets are kept: a sweep over a
    threshold makes a new rule set at every point, and keeping every feature matrix of a
    1,000-point sweep would hold gigabytes for nothing.
    """

    data_dir: Path
    inputs: Inputs
    load_seconds: float = 0.0
    _eligibility: dict[EligibilityRules, tuple[EligibilityResult, float]] = field(
        default_factory=dict
    )
    _user_tables: dict[tuple[object, ...], UserTable] = field(default_factory=dict)
    _problem_memos: weakref.WeakKeyDictionary[EligibilityResult, dict[Hashable, Any]] = field(
        default_factory=weakref.WeakKeyDictionary
    )
    #: Write each excluded user's ``detail`` sentence (a run directory needs it; a page that
    #: only counts the excluded does not, and it is half the time of a threshold change).
    details: bool = True
    #: Keep the passes over the events for other rule sets (compare, sweep, the studio); a
    #: single allocation lets its pass go once decided (300 MiB at two million users).
    keep_passes: bool = True

    @classmethod
    def open(
        cls, data_dir: str | Path, *, fold_validation: bool = False, keep_passes: bool = True
    ) -> DataSession:
        """Load ``data_dir`` and validate it, at once or (``fold_validation``) in the first
        pass over the events (:class:`~allocator.data.validation.FoldedChecks`; for a caller
        whose first use of the data is :meth:`eligibility`)."""
        data_dir = Path(data_dir)
        t0 = time.perf_counter()
        inputs = load_inputs(data_dir, validate="folded" if fold_validation else True)
        return cls(
            data_dir=data_dir,
            inputs=inputs,
            load_seconds=time.perf_counter() - t0,
            keep_passes=keep_passes,
        )

    def eligibility(self, rules: EligibilityRules) -> tuple[EligibilityResult, float]:
        """The eligibility result for ``rules`` and the seconds it took when first computed."""
        if rules not in self._eligibility:
            t0 = time.perf_counter()
            result = decide_users(self.user_table(rules), rules, details=self.details)
            result.reconciliation.check()
            self._eligibility[rules] = (result, time.perf_counter() - t0)
            while len(self._eligibility) > ELIGIBILITY_CACHE_SIZE:
                del self._eligibility[next(iter(self._eligibility))]  # least recently used
        else:
            self._eligibility[rules] = self._eligibility.pop(rules)  # now the most recent
        return self._eligibility[rules]

    def problem_memo(self, eligibility: EligibilityResult) -> dict[Hashable, Any]:
        """The weights and bounds built for the users of ``eligibility``
        (:func:`~allocator.vouchers.weights.build_problem`'s ``memo``), kept as long as the
        eligibility result is."""
        return self._problem_memos.setdefault(eligibility, {})

    def user_table(self, rules: EligibilityRules) -> UserTable:
        """The pass over the events for the event rules of ``rules`` (window, products, fees),
        kept for the last :data:`USER_TABLE_CACHE_SIZE` of them: a threshold, region, KYC,
        depeg or phase-in change needs only the per-user rules (a fraction of the time)."""
        key = event_rules(rules)
        if key not in self._user_tables:
            inp = self.inputs
            table = user_table(
                inp.events,
                inp.prices,
                inp.snapshot,
                inp.users,
                rules,
                source={stem: str(path) for stem, path in inp.paths.items()},
                checks=inp.checks,
            )
            if inp.checks is not None:  # checked once: later passes need not
                self.inputs = dataclasses.replace(inp, checks=None)
            if not self.keep_passes:
                return table
            self._user_tables[key] = table
            while len(self._user_tables) > USER_TABLE_CACHE_SIZE:
                del self._user_tables[next(iter(self._user_tables))]
        else:
            self._user_tables[key] = self._user_tables.pop(key)
        return self._user_tables[key]

    def sibling(self, *, details: bool) -> DataSession:
        """The same loaded inputs and passes over the events, with or without the excluded
        users' details (its own eligibility cache)."""
        return DataSession(
            data_dir=self.data_dir,
            inputs=self.inputs,
            load_seconds=self.load_seconds,
            _user_tables=self._user_tables,
            details=details,
            keep_passes=self.keep_passes,
        )

    def input_manifest(self) -> dict[str, dict[str, object]]:
        out: dict[str, dict[str, object]] = {}
        for stem, path in sorted(self.inputs.paths.items()):
            out[stem] = {"path": str(Path(path).resolve()), "sha256": sha256_file(path)}
        return out


@dataclass(frozen=True, eq=False)
class RunResult:
    """Everything one scenario produced on one data set, before it is written."""

    scenario: Scenario
    eligibility: EligibilityResult
    problem: AllocationProblem
    allocation: Allocation
    cents: np.ndarray
    lower_cents: np.ndarray
    upper_cents: np.ndarray
    allocations: pl.DataFrame
    payouts: Payouts | None
    final_certificate: Certificate | RuleCertificate
    rounding: dict[str, object]
    timings: dict[str, float]
    #: What was certified (see :func:`allocate`): ``"run"`` can be written, ``"paid"`` not.
    certificates: Literal["run", "paid"] = "run"

    @property
    def budget_cents(self) -> int:
        return budget_to_cents(self.problem.budget)

    @property
    def paid_cents(self) -> int:
        return int(self.cents.sum())


def bound_labels(cents: np.ndarray, lo_c: np.ndarray, hi_c: np.ndarray) -> np.ndarray:
    """Which bound each final voucher sits on, judged on the paid cents (checkable from files)."""
    labels = np.full(cents.shape[0], N.BOUND_INTERIOR, dtype=object)
    labels[cents >= hi_c] = N.BOUND_CAP
    labels[cents <= lo_c] = N.BOUND_FLOOR
    return labels


def bound_column(cents: np.ndarray, lo_c: np.ndarray, hi_c: np.ndarray) -> pl.Series:
    """:func:`bound_labels` as the ``bound`` string column, built from small integer codes (a
    million Python strings would cost more than the rest of the rounding)."""
    # 0 at the floor (which wins when floor and cap meet), 2 at the cap, 1 between: counted,
    # not selected, since a select branches on every user (allocator.kernel.select)
    at_lo = cents <= lo_c
    at_hi = cents >= hi_c
    at_hi &= ~at_lo
    codes = at_hi.view(np.int8) - at_lo.view(np.int8)
    codes += 1
    names = pl.Series([N.BOUND_FLOOR, N.BOUND_INTERIOR, N.BOUND_CAP], dtype=pl.String)
    return names.gather(pl.Series(codes, dtype=pl.Int8).cast(pl.UInt32)).alias(N.BOUND)


def allocate(
    session: DataSession,
    scenario: Scenario,
    *,
    solver: str | None = None,
    with_payouts: bool = True,
    progress: Progress = _quiet,
    solve_problem: Callable[..., Allocation] = solve,
    certificates: Literal["run", "paid"] = "run",
) -> RunResult:
    """Run one scenario on a loaded data session; raises the typed errors of allocator.errors.

    ``with_payouts=False`` skips the payout plan (``compare`` and ``sweep`` only need amounts).
    ``certificates="run"`` certifies the continuous vouchers and the paid cents, each with its
    duality gap, as a written run records them; ``"paid"`` certifies the paid cents alone
    (within their bounds, the budget and the segment shares to the cent, each within a cent
    of its best response at the solver's prices) without the gap that is only reported: what
    the studio's page shows, at a third of the time. Such a result cannot be written
    (:func:`manifest` refuses it).
    ``solve_problem(problem, method=..., cvxpy_solver=...)`` solves the problem
    (:func:`allocator.kernel.solve.solve`; a sweep passes one that re-uses a compiled cvxpy model);
    everything after it, the rounding and the rounded-voucher certificate, is the same.
    """
    timings: dict[str, float] = {}
    progress("eligibility")
    elig, timings["eligibility"] = session.eligibility(scenario.eligibility)

    progress("model")
    t0 = time.perf_counter()
    problem = build_problem(elig.eligible, scenario, memo=session.problem_memo(elig))
    timings["model"] = time.perf_counter() - t0
    return solve_and_round(
        elig,
        problem,
        scenario,
        timings=timings,
        solver=solver,
        with_payouts=with_payouts,
        progress=progress,
        solve_problem=solve_problem,
        certificates=certificates,
    )


def solve_and_round(
    elig: EligibilityResult,
    problem: AllocationProblem,
    scenario: Scenario,
    *,
    timings: dict[str, float],
    solver: str | None = None,
    with_payouts: bool = True,
    progress: Progress = _quiet,
    solve_problem: Callable[..., Allocation] = solve,
    certificates: Literal["run", "paid"] = "run",
) -> RunResult:
    """What :func:`allocate` does once eligibility and the problem are made: solve, round to
    cents, certify the cents, and make the allocations frame and the payout plan
    (``certificates`` as in :func:`allocate`).

    A later round (:mod:`allocator.vouchers.rounds`) comes in here with its own eligibility
    (appeals applied) and its problem (lower bounds raised to what users hold).
    """
    features = elig.eligible
    if problem.n == 0:
        # reached only when the budget need not be spent (exhaust mode refuses it earlier)
        raise InfeasibleError(
            f"scenario {scenario.name!r}: no liquidated user passes the eligibility rules, so "
            f"there is nobody to pay ({elig.reconciliation.liquidated_users:,} liquidated users, "
            "all excluded).",
            hint="relax the [eligibility] thresholds, window, products or regions",
        )

    progress("solve")
    t0 = time.perf_counter()
    method = solver or scenario.solver.name
    paid_only = {"certify_solution": False} if certificates == "paid" else {}
    allocation = solve_problem(
        problem, method=method, cvxpy_solver=scenario.solver.cvxpy_solver, **paid_only
    )
    timings["solve"] = time.perf_counter() - t0

    progress("rounding")
    t0 = time.perf_counter()
    user_id = features[N.USER_ID].to_numpy()
    loss = features[N.LOSS_USD].to_numpy()
    cents, rounding_report = round_to_cents_by_segment(
        allocation.vouchers,
        problem.lower,
        problem.upper,
        problem.budget,
        exhaust=problem.exhaust,
        loss=loss,
        user_id=user_id,
        segments=problem.segments,
        in_cents=problem.bounds_in_cents(),
    )
    lo_c, hi_c = problem.bounds_in_cents()
    paid_usd = cents / CENTS_PER_USD

    def certify_paid() -> Certificate | RuleCertificate:
        if allocation.rule_awards is not None:
            return certify_rule(
                allocation.rule_awards,
                paid_usd,
                problem.budget,
                rounded=True,
                bounds=(lo_c / CENTS_PER_USD, hi_c / CENTS_PER_USD),
            )
        return certify(
            problem,
            paid_usd,
            allocation.shadow_price,
            allocation.segment_prices,
            rounded=True,
            report_gap=certificates == "run",
        )

    final_certificate = certify_paid()
    if not final_certificate.certified:
        # The amounts actually paid must stand on their own: within their bounds, the budget and
        # the segment shares, each within a cent of what the optimal prices call for.
        raise NotCertifiedError(
            "the vouchers rounded to cents do not pass the optimality certificate: "
            + "; ".join(final_certificate.failures),
            status="rounding",
        )
    allocations = pl.DataFrame(
        {
            N.USER_ID: pl.Series(user_id, dtype=pl.Int64),
            N.VOUCHER_CENTS: pl.Series(cents, dtype=pl.Int64),
            N.VOUCHER_USD: pl.Series(paid_usd, dtype=pl.Float64),
            LOWER_CENTS: pl.Series(lo_c, dtype=pl.Int64),
            UPPER_CENTS: pl.Series(hi_c, dtype=pl.Int64),
            N.LOSS_USD: features[N.LOSS_USD],
            N.LOSS_RATIO: features[N.LOSS_RATIO],
            N.WEIGHT: pl.Series(problem.weights, dtype=pl.Float64),
            N.BOUND: bound_column(cents, lo_c, hi_c),
            N.SEGMENT: segment_labels(features, scenario.segments, masks=problem.segments),
        }
    )
    if N.PHASE_FACTOR in features.columns:
        allocations = allocations.with_columns(features[N.PHASE_FACTOR])
    payouts = plan_payouts(user_id, cents, scenario.payouts, PROGRAMME) if with_payouts else None
    timings["rounding"] = time.perf_counter() - t0

    return RunResult(
        scenario=scenario,
        eligibility=elig,
        problem=problem,
        allocation=allocation,
        cents=cents,
        lower_cents=lo_c,
        upper_cents=hi_c,
        allocations=allocations,
        payouts=payouts,
        final_certificate=final_certificate,
        rounding=rounding_report,
        timings=timings,
        certificates=certificates,
    )


def manifest(session: DataSession, run: RunResult, *, solver_requested: str) -> dict[str, object]:
    """The run's manifest (the writer adds the ``outputs`` hashes)."""
    if run.certificates != "run" or run.allocation.certificate is None:
        # a run on disk carries both certificates in full; only the studio's page skips some
        raise ValueError("a run is written only with both of its certificates in full")
    rec = run.eligibility.reconciliation
    bounds = run.allocations[N.BOUND]
    budget_cents = run.budget_cents
    paid = run.paid_cents
    inputs = session.input_manifest()
    rows = {
        N.EVENTS_FILE: rec.events_total,
    }
    for stem, meta in inputs.items():
        if stem in rows:
            meta["rows"] = rows[stem]
    return {
        "format": "allocator-run/1",
        "programme": PROGRAMME,
        "scenario": scenario_to_dict(run.scenario),
        "inputs": inputs,
        "versions": versions(),
        "solver": {
            "requested": solver_requested,
            "used": run.allocation.method,
            "status": run.allocation.status,
        },
        "objective": _finite_or_none(run.allocation.objective),
        "objective_rounded": _finite_or_none(run.final_certificate.objective),
        "rule": _rule_section(run),
        "shadow_price": run.allocation.shadow_price,
        "segment_prices": {k: list(v) for k, v in run.allocation.segment_prices.items()},
        "certificate": run.allocation.certificate.to_dict(),
        "certificate_rounded": run.final_certificate.to_dict(),
        "rounding": run.rounding,
        "money": {
            "budget_cents": budget_cents,
            "paid_cents": paid,
            "unspent_cents": budget_cents - paid,
            "exhaust": run.problem.exhaust,
        },
        "counts": {
            "liquidated": rec.liquidated_users,
            "eligible": rec.eligible_users,
            "excluded": rec.excluded_users,
            "floor": int((bounds == N.BOUND_FLOOR).sum()),
            "interior": int((bounds == N.BOUND_INTERIOR).sum()),
            "cap": int((bounds == N.BOUND_CAP).sum()),
            "excluded_by_reason": dict(rec.excluded_by_reason),
        },
        "reconciliation": rec.to_dict(),
        "timings_s": {
            "load_and_validate": round(session.load_seconds, 6),
            **{k: round(v, 6) for k, v in run.timings.items()},
        },
        "payout_batches": _payouts_of(run).schedule_dicts(),
    }


def _finite_or_none(x: float) -> float | None:
    """A claims rule has no objective: the manifest says null rather than NaN (strict JSON)."""
    return float(x) if np.isfinite(x) else None


def _rule_section(run: RunResult) -> dict[str, object]:
    """The rule that made the vouchers: its name, the multiplier on its path and its stage
    (for alpha-fairness the multiplier is the shadow price)."""
    awards = run.allocation.rule_awards
    if awards is None:
        return {"name": "alpha_fair", "multiplier": run.allocation.shadow_price, "stage": 0}
    return {
        "name": awards.rule,
        "multiplier": float(awards.root),
        "parameter": float(awards.parameter),
        "stage": int(awards.stage),
    }


def _payouts_of(run: RunResult) -> Payouts:
    """The run's payout plan; a run directory always has one."""
    if run.payouts is None:
        raise ValueError("a run without a payout plan (with_payouts=False) cannot be written")
    return run.payouts


def provenance(
    *, scenario_file: str | Path | None = None, operator: str | None = None
) -> dict[str, object]:
    """Who made a run, when, and from which scenario file: the manifest's ``created_at`` (UTC,
    to the second), ``operator`` (the given name, else the login name) and ``scenario_file``
    (its path and sha256). The allocations, exclusions and payouts stay byte-identical across
    reruns; the manifest records each one."""
    if operator is None:
        try:
            operator = getpass.getuser()
        except (KeyError, OSError):  # no login name (a container without a passwd entry)
            operator = "unknown"
    out: dict[str, object] = {
        "created_at": datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z"),
        "operator": operator,
    }
    if scenario_file is not None:
        path = Path(scenario_file)
        out["scenario_file"] = {"path": str(path.resolve()), "sha256": sha256_file(path)}
    return out


def write_run(
    out_dir: Path,
    session: DataSession,
    run: RunResult,
    *,
    solver_requested: str,
    replace: bool = True,
    made_by: Mapping[str, object] | None = None,
    sign: Callable[[bytes], bytes] | None = None,
) -> Path:
    """Write ``run`` as a run directory at ``out_dir`` (atomically; see :mod:`allocator.runs.writer`).

    ``replace=False`` refuses a directory that already holds a run; ``made_by`` is the
    :func:`provenance` recorded in the manifest (default: now, by the login name); ``sign``
    makes ``manifest.sig`` from the manifest's bytes (:mod:`allocator.runs.signing`).
    """
    payouts = _payouts_of(run)
    return write_run_dir(
        out_dir,
        allocations=run.allocations,
        excluded=run.eligibility.excluded,
        payouts=lambda path: write_payouts_csv(payouts, path),
        manifest={
            **manifest(session, run, solver_requested=solver_requested),
            **(provenance() if made_by is None else made_by),
        },
        replace=replace,
        sign=sign,
    )
