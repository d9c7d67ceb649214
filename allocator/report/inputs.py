"""The runs a report reads: each run directory verified, checked and audited once.

Every run directory is read with :func:`allocator.runs.reader.load_run` (``inputs=True``): a
damaged run directory, one changed since its run, or input files that changed or are gone are
refused with an :class:`~allocator.errors.InputError` before anything is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from allocator import names as N
from allocator.analysis.audit import Audit, audit
from allocator.analysis.checks import CheckReport, check_run_dir
from allocator.analysis.rerun import open_run_session
from allocator.errors import AllocatorError, InputError
from allocator.kernel.money import CENTS_PER_USD
from allocator.runs.contract import RunDir
from allocator.runs.reader import load_run
from allocator.settings.models import Scenario
from allocator.vouchers.pipeline import DataSession


@dataclass(frozen=True, eq=False)
class ReportRun:
    """One run directory as the report shows it: a unique label, its files, checks and audit."""

    label: str
    run: RunDir
    scenario: Scenario
    checks: CheckReport
    audit: Audit

    def vouchers_usd(self) -> np.ndarray:
        """Every user's voucher in USD (float64), in the order of ``allocations.parquet``."""
        cents = self.run.allocations[N.VOUCHER_CENTS].cast(pl.Int64).to_numpy()
        return cents / CENTS_PER_USD


def load_report_run(path: Path, labels_taken: set[str]) -> ReportRun:
    """Load, check and audit the run directory ``path``.

    Parameters
    ----------
    path
        A run directory written by ``allocator allocate``.
    labels_taken
        Labels of the runs loaded so far; the new label is added. A run whose scenario name is
        taken is labelled ``name [directory]``.

    Raises
    ------
    InputError
        The run directory is missing, damaged or changed since its run, its input data changed,
        or its allocations cannot be audited.
    """
    # A damaged or changed run directory, or input data changed since the run, is refused
    # (exit 2) rather than reported: the finance checks read the liquidations input and the
    # sweeps re-solve on all four tables.
    run = load_run(path, inputs=True)
    scenario = run.scenario
    label = scenario.name
    if label in labels_taken:
        label = f"{scenario.name} [{path.name}]"
    labels_taken.add(label)
    checks = check_run_dir(path)
    try:
        result = audit(run.allocations, objective=scenario.objective)
    except ValueError as exc:
        raise InputError(f"{path / N.ALLOCATIONS_FILE}: cannot be audited ({exc}).") from None
    return ReportRun(label=label, run=run, scenario=scenario, checks=checks, audit=result)


def open_session(main: ReportRun) -> tuple[DataSession | None, str | None]:
    """The run's own input data, or ``(None, why not)`` when the data directory no longer
    loads as the run's (its files moved to other paths since :func:`load_report_run`)."""
    try:
        return open_run_session(main.run), None
    except AllocatorError as exc:
        return None, f"the run's input data cannot be loaded: {exc}"
