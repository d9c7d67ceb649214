"""``allocator loans check``: finance's verification of a loan run from its files alone."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from allocator.errors import InputError
from allocator.kernel.money import cents_array_to_usd, format_cents, format_usd
from allocator.loans import applications as D
from allocator.loans.convex import KKT_TOLERANCE
from allocator.loans.problem import build_loan_problem, loan_objective
from allocator.loans.run import (
    APPLICATIONS_COPY,
    MANIFEST,
    MANIFEST_KIND,
    TERM_SHEET_CSV,
    TERM_SHEET_PARQUET,
    applications_sha256,
)
from allocator.loans.terms import (
    AMOUNT_CENTS,
    AMOUNT_USD,
    RATE,
    TERM_SHEET_COLUMNS,
    WEIGHT,
    cents_expected_loss,
)
from allocator.runs.hashing import sha256_file
from allocator.runs.manifest import read_manifest
from allocator.settings.loans import loan_scenario_from_dict


@dataclass(frozen=True)
class LoanCheckReport:
    """Outcome of :func:`check_loans`: every check with whether it held and a detail line."""

    run_dir: str
    checks: tuple[tuple[str, bool, str], ...]

    @property
    def ok(self) -> bool:
        return all(passed for _, passed, _ in self.checks)

    @property
    def failures(self) -> tuple[tuple[str, str], ...]:
        return tuple((name, detail) for name, passed, detail in self.checks if not passed)

    def lines(self) -> list[str]:
        out = [f"{'ok  ' if p else 'FAIL'} {name}: {detail}" for name, p, detail in self.checks]
        out.append(
            f"{self.run_dir}: "
            + ("all checks hold" if self.ok else f"{len(self.failures)} check(s) FAILED")
        )
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_dir": self.run_dir,
            "ok": self.ok,
            "checks": [{"name": n, "ok": p, "detail": d} for n, p, d in self.checks],
        }


def run_solver_status(manifest: dict[str, Any]) -> tuple[bool, str]:
    """Whether a loan run's manifest records a proven optimum, and a one-line detail.

    A minimum-ticket run (``solver.method`` ``"milp_pwl"``) must have HiGHS status
    ``"optimal"`` and an achieved relative gap (``solver.mip_rel_gap_achieved``) within the
    scenario's ``solver.mip_rel_gap``; a run stopped at a time or iteration limit fails. A
    convex run (``"convex"``) must record an optimality-certificate violation
    (``multipliers.kkt_violation``) within its limit: one cent for alpha > 0,
    :data:`KKT_TOLERANCE` (relative) for alpha = 0. :func:`allocate_loans` writes no other run;
    this verifies the claim for a directory written elsewhere or by an older version.

    Parameters
    ----------
    manifest : dict
        The parsed ``manifest.json`` of a loan run.

    Returns
    -------
    (bool, str)
        Whether the status holds, and what was found.
    """
    solver_found, scn_found = manifest.get("solver"), manifest.get("scenario")
    solver: dict[str, Any] = solver_found if isinstance(solver_found, dict) else {}
    scn: dict[str, Any] = scn_found if isinstance(scn_found, dict) else {}
    method, status = solver.get("method"), solver.get("status")
    if method == "milp_pwl":
        required = (scn.get("solver") or {}).get("mip_rel_gap")
        gap = solver.get("mip_rel_gap_achieved")
        numbers = all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in (gap, required)
        )
        ok = status == "optimal" and numbers and gap <= required * (1 + 1e-9)  # type: ignore[operator]
        return ok, (
            f"{solver.get('mip_solver', 'MILP')} status {status!r}, relative gap {gap} "
            f"(solver.mip_rel_gap {required})"
        )
    if method == "convex":
        kkt = (manifest.get("multipliers") or {}).get("kkt_violation")
        alpha = scn.get("alpha")
        limit = KKT_TOLERANCE if alpha == 0 else 0.01
        ok = isinstance(kkt, (int, float)) and not isinstance(kkt, bool) and kkt <= limit
        return ok, (
            f"convex model (conic status {status!r}), optimality certificate violation "
            f"{kkt} (limit {limit:g})"
        )
    return False, f"unknown solver method {method!r} (status {status!r})"


def _examples(ids: list[str], mask: np.ndarray) -> str:
    bad = [ids[i] for i in np.flatnonzero(mask)[:5]]
    return f"{int(mask.sum())} loan(s), e.g. {', '.join(bad)}"


def check_loans(run_dir: str | Path) -> LoanCheckReport:
    """Finance's check of a loan run directory from its files alone.

    Recomputes from the applications copy and the scenario in the manifest: every loan within
    [0, requested], its collateral limit and the concentration cap (limits in cents rounded
    down); 0 or at least the minimum ticket; the total within the fund and equal to the
    manifest's; the expected loss within its budget (to the cent); rates from the tier table;
    weights; the objective; the SHA-256 of each file against the manifest; and that the
    manifest records a proven optimum (:func:`run_solver_status`).

    Parameters
    ----------
    run_dir : str or Path
        A directory written by :func:`write_loan_run`.

    Returns
    -------
    LoanCheckReport
        Every check, passed or failed; a damaged run fails checks rather than raising.

    Raises
    ------
    InputError
        ``run_dir`` does not exist or is not a directory.
    """
    run = Path(run_dir)
    if run.exists() and not run.is_dir():
        raise InputError(
            f"loan run directory {run} is a file, not a directory; give the "
            "directory that `allocator loans allocate --out` wrote."
        )
    if not run.is_dir():
        raise InputError(f"loan run directory {run} does not exist.")
    checks: list[tuple[str, bool, str]] = []

    def add(name: str, passed: bool, detail: str) -> bool:
        checks.append((name, bool(passed), detail))
        return bool(passed)

    def done() -> LoanCheckReport:
        return LoanCheckReport(str(run), tuple(checks))

    missing = [
        f
        for f in (MANIFEST, TERM_SHEET_CSV, TERM_SHEET_PARQUET, APPLICATIONS_COPY)
        if not (run / f).is_file()
    ]
    if not add(
        "files present",
        not missing,
        "missing " + ", ".join(missing)
        if missing
        else "manifest, term sheet (csv, parquet), applications",
    ):
        return done()
    try:
        man = read_manifest(run / MANIFEST)
    except InputError as exc:
        add("manifest readable", False, str(exc))
        return done()
    kind = man.get("kind")
    if not add("manifest readable", kind == MANIFEST_KIND, f"kind {kind!r}"):
        return done()
    files = man.get("files", {})
    bad = [
        f
        for f in (TERM_SHEET_CSV, TERM_SHEET_PARQUET, APPLICATIONS_COPY)
        if files.get(f) != sha256_file(run / f)
    ]
    add("file hashes", not bad, "match the manifest" if not bad else f"differ for {', '.join(bad)}")
    try:
        scn = loan_scenario_from_dict(man["scenario"], file=f"{run / MANIFEST} [scenario]")
        apps = D.load_applications(run / APPLICATIONS_COPY)
        csv = pl.read_csv(run / TERM_SHEET_CSV, schema_overrides={AMOUNT_CENTS: pl.Int64})
        sheet = pl.read_parquet(run / TERM_SHEET_PARQUET)
    except (KeyError, TypeError) as exc:
        add("inputs readable", False, f"manifest lacks {exc}")
        return done()
    except Exception as exc:  # any reader or validation error is a failed check here
        add("inputs readable", False, str(exc))
        return done()
    add("inputs readable", True, f"scenario {scn.name!r}, {apps.height} applications")
    add("solver status", *run_solver_status(man))
    add(
        "applications hash",
        applications_sha256(apps) == man.get("applications", {}).get("table_sha256"),
        "applications copy matches the manifest's input hash",
    )
    cols_ok = (
        tuple(sheet.columns) == TERM_SHEET_COLUMNS and sheet.schema.get(AMOUNT_CENTS) == pl.Int64
    )
    if not add("term sheet columns", cols_ok, f"{list(sheet.columns)}"):
        return done()
    try:
        same = csv.select(TERM_SHEET_COLUMNS).equals(sheet)
    except Exception:  # a tampered CSV may not even have the columns
        same = False
    add("csv equals parquet", same, "term_sheet.csv and term_sheet.parquet hold the same rows")
    try:
        P = build_loan_problem(apps, scn, source=str(run / APPLICATIONS_COPY))
    except InputError as exc:
        add("problem rebuilt", False, str(exc))
        return done()
    ids = sheet[D.INSTITUTION_ID].to_list()
    if not add(
        "applicants",
        ids == list(P.ids),
        "one row per applicant, sorted by institution id"
        if ids == list(P.ids)
        else "term sheet ids differ from the applications",
    ):
        return done()
    cents = sheet[AMOUNT_CENTS].fill_null(-1).to_numpy().astype(np.int64)
    add(
        "amounts in cents",
        bool(np.all(sheet[AMOUNT_USD].to_numpy() == cents_array_to_usd(cents))),
        "amount_usd == amount_cents / 100",
    )
    add(
        "non-negative",
        bool((cents >= 0).all()),
        "every loan >= 0" if (cents >= 0).all() else _examples(ids, cents < 0),
    )
    for name, lim in P.limits_cents().items():
        over = cents > lim
        add(
            f"within {name} limit",
            not over.any(),
            "every loan within it" if not over.any() else _examples(ids, over),
        )
    T = P.min_ticket_cents
    below = (cents > 0) & (cents < T)
    add(
        "minimum ticket",
        not below.any(),
        (f"each loan 0 or >= {format_cents(T)} USD" if T else "no minimum ticket")
        if not below.any()
        else _examples(ids, below),
    )
    total = int(cents.sum())
    add(
        "total within fund",
        total <= P.fund_cents,
        f"lent {format_cents(total)} of {format_cents(P.fund_cents)} USD",
    )
    totals = man.get("totals", {})
    add(
        "total matches manifest",
        total == totals.get("lent_cents"),
        f"term sheet {total} cents, manifest {totals.get('lent_cents')} cents",
    )
    el = cents_expected_loss(P, cents)
    add(
        "expected-loss budget",
        el <= P.el_budget + 0.005,
        f"expected loss {format_usd(el)} of {format_usd(P.el_budget)} USD",
    )
    rate_ok = np.allclose(sheet[RATE].to_numpy(), P.rate, rtol=0, atol=1e-12)
    add("rates", bool(rate_ok), "rate = min(base + tier spread, ceiling) for every loan")
    w_ok = np.allclose(sheet[WEIGHT].to_numpy(), P.weight, rtol=1e-12, atol=0)
    add("weights", bool(w_ok), "weights recomputed from the applications and the scenario")
    obj = loan_objective(cents_array_to_usd(cents), P.weight, P.alpha, P.shift)
    m_obj = man.get("objective", {}).get("value")
    add(
        "objective",
        isinstance(m_obj, (int, float)) and math.isclose(obj, m_obj, rel_tol=1e-9, abs_tol=1e-9),
        f"recomputed {obj:.10g}, manifest {m_obj}",
    )
    return done()
