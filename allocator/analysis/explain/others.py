"""The user under the other shipped scenarios: each run on the same data at this run's budget
(step 5 of :mod:`allocator.analysis.explain`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from allocator import names as N
from allocator.analysis.explain.facts import row_of
from allocator.analysis.explain.results import OtherScenario
from allocator.errors import AllocatorError
from allocator.settings.scenarios import load_scenario, with_overrides
from allocator.vouchers.pipeline import DataSession, allocate

__all__ = ["SCENARIOS_DIR", "OtherScenarios", "shipped_scenarios"]

#: The shipped scenario files (``scenarios/`` beside the package in a source checkout).
SCENARIOS_DIR = Path(__file__).resolve().parents[3] / "scenarios"
#: Scenario files whose name starts with this are the loan fund's, not voucher scenarios.
_LOAN_PREFIX = "loans"


def shipped_scenarios(directory: str | Path | None = None) -> list[Path]:
    """The shipped voucher scenario files (``scenarios/*.toml`` except ``loans*``), sorted."""
    d = Path(directory) if directory is not None else SCENARIOS_DIR
    if not d.is_dir():
        return []
    return sorted(p for p in d.glob("*.toml") if not p.stem.startswith(_LOAN_PREFIX))


class OtherScenarios:
    """Shipped scenarios run on one data directory at one budget, each once (the data loaded
    once, on first use), and a user's outcome in each."""

    def __init__(
        self, data_dir: Path, budget_usd: float, skip: str, directory: Path | None
    ) -> None:
        self.data_dir = data_dir
        self.budget_usd = budget_usd
        self.skip = skip
        self.directory = directory
        self._runs: list[tuple[str, float | None, Any]] | None = None

    def _compute(self) -> list[tuple[str, float | None, Any]]:
        runs: list[tuple[str, float | None, Any]] = []
        session = None
        for path in shipped_scenarios(self.directory):
            name, shipped = path.stem, None
            try:
                scen = load_scenario(path)
                name, shipped = scen.name, scen.budget.total_usd
                if name == self.skip:
                    continue
                if session is None:
                    session = DataSession.open(self.data_dir)
                # what this run pays, all of it in this one allocation: no reserve held back
                scen = with_overrides(
                    scen, {"budget.total_usd": self.budget_usd, "budget.reserve_usd": 0.0}
                )
                result: Any = allocate(session, scen, with_payouts=False)
            except AllocatorError as exc:
                result = exc
            runs.append((name, shipped, result))
        return runs

    def outcome(self, user_id: int) -> tuple[OtherScenario, ...]:
        """The user's outcome under every other shipped scenario."""
        if self._runs is None:
            self._runs = self._compute()
        out = []
        for name, shipped, result in self._runs:
            common: dict[str, Any] = {
                "scenario": name,
                "budget_usd": self.budget_usd,
                "shipped_budget_usd": shipped,
            }
            if isinstance(result, AllocatorError):
                out.append(OtherScenario(status="failed", detail=str(result), **common))
                continue
            paid = row_of(result.allocations, user_id)
            if paid is not None:
                out.append(
                    OtherScenario(
                        status="paid",
                        voucher_cents=int(paid[N.VOUCHER_CENTS]),
                        bound=paid[N.BOUND],
                        **common,
                    )
                )
                continue
            ex = row_of(result.eligibility.excluded, user_id)
            out.append(
                OtherScenario(
                    status="excluded",
                    reason=None if ex is None else ex[N.REASON],
                    detail=None if ex is None else ex[N.DETAIL],
                    **common,
                )
            )
        return tuple(out)
