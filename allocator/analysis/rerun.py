"""Re-solving a written run on the very data it used, for the analyses that need its optimum.

A run directory holds the paid cents, not the continuous optimum or its prices; sensitivity,
the axiom audit and the report's sweeps solve the run's scenario again. They must do it on the
files the run read: :func:`open_run_session` refuses a data directory that now resolves a table
to another file, and :func:`rerun` verifies the run directory and its inputs first
(:func:`allocator.runs.reader.load_run`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from allocator import names as N
from allocator.errors import InputError
from allocator.runs.contract import RunDir
from allocator.runs.manifest import read_manifest
from allocator.runs.reader import load_run
from allocator.vouchers.pipeline import DataSession, RunResult, allocate


@dataclass(frozen=True, eq=False)
class Rerun:
    """A verified run directory, its data session and the re-solved scenario."""

    written: RunDir
    session: DataSession
    result: RunResult
    solver: str | None


def open_run_session(run: RunDir) -> DataSession:
    """The run's data directory, loaded; refused unless it reads the very files the run used.

    Raises
    ------
    InputError
        A table now resolves to another file than the one the run read.
    """
    if run.data_dir is None:
        raise InputError(
            f"{run.path}: the run's input data were not verified (load it with inputs)."
        )
    session = DataSession.open(run.data_dir)
    for stem, path in session.inputs.paths.items():
        used = Path(run.manifest["inputs"][stem]["path"])
        if Path(path).resolve() != used.resolve():
            raise InputError(
                f"the data directory {run.data_dir} now reads the {stem} table from {path}, not "
                f"from the run's {used}; the inputs changed since the run.",
                hint="restore the data the run used, or re-run the scenario on the current data.",
            )
    return session


def solver_used(run: RunDir) -> str | None:
    """The solver to re-solve with: the run's ``"fast"`` when the manifest records it, else
    ``None`` (the scenario's choice, which picks the fast solver whenever it applies)."""
    solver = run.manifest.get("solver")
    used = solver.get("used") if isinstance(solver, Mapping) else None
    return used if used in ("fast", "cvxpy") else None


def rerun(run_dir: str | Path) -> Rerun:
    """Verify ``run_dir`` and its inputs, then solve its scenario again (no payouts).

    Raises
    ------
    InputError
        The run directory is damaged or changed, or its inputs are gone or changed.
    """
    written = load_run(run_dir, inputs=True)
    if written.round > 1:
        # a later round is the optimum under what users already hold and the appeals of its
        # chain: solving its scenario from scratch answers another question
        raise InputError(
            f"{run_dir} is round {written.round} of a distribution (allocate --previous); "
            "sensitivity and the axiom audit solve a run's scenario again from scratch, which "
            "a later round is not: it keeps every user at what they already hold.",
            hint=f"run it on the chain's round-1 run ({_round_one(written)})",
        )
    session = open_run_session(written)
    solver = solver_used(written)
    result = allocate(session, written.scenario, solver=solver, with_payouts=False)
    return Rerun(written=written, session=session, result=result, solver=solver)


def _round_one(run: RunDir) -> str:
    """Where the round-1 run of a chain is, as far as the manifests tell (its directory)."""
    path, manifest = run.path, run.manifest
    for _ in range(run.round):
        previous = manifest.get("round", {}).get("previous", {}) if manifest else {}
        if not isinstance(previous, Mapping) or not isinstance(previous.get("path"), str):
            break
        path = Path(previous["path"])
        try:
            manifest = read_manifest(path / N.MANIFEST_FILE)
        except InputError:
            break
        if not isinstance(manifest.get("round"), Mapping):
            return str(path)
    return str(path)
