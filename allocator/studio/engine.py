"""The studio's engine: a setting of the knobs in, the allocation and every view's data out.

It holds one :class:`~allocator.vouchers.pipeline.DataSession`: the inputs are loaded and
validated once, the pass over the events is kept per window, products and fees, and
eligibility per rule set (:meth:`DataSession.eligibility`), so moving a knob that leaves
eligibility alone only solves and rounds again, and moving a threshold re-applies the per-user
rules to the kept per-user table. Every allocation is the one ``allocator allocate`` makes
(:func:`~allocator.vouchers.pipeline.allocate`, certified in cents): a saved setting reproduces
the cents the page showed.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from allocator.analysis.axioms import AxiomResult
from allocator.analysis.axioms_run import axioms_of
from allocator.analysis.explain import SCENARIOS_DIR, explain_user
from allocator.analysis.explain.render import render_lines
from allocator.data.synthetic import default_data_dir
from allocator.errors import AllocatorError, InputError, ScenarioError
from allocator.settings.files import to_toml
from allocator.settings.models import RULE_PARAMETERS, Scenario, rule_full_name
from allocator.settings.scenarios import load_scenario, scenario_to_dict, with_overrides
from allocator.studio.knobs import knob_values
from allocator.vouchers.pipeline import (
    ELIGIBILITY_CACHE_SIZE,
    DataSession,
    RunResult,
    allocate,
    write_run,
)
from allocator.vouchers.weights import MEMO_SIZE

__all__ = ["Evaluation", "Studio", "StudioError", "shared_studio"]

#: Settings whose allocations the engine keeps (going back to a setting is instant).
RESULT_CACHE_SIZE = 8


class StudioError(AllocatorError):
    """A setting the studio cannot evaluate, worded for the page (the settings' own message)."""


@dataclass(eq=False)
class Evaluation:
    """One setting evaluated: its scenario, the run (cents certified) and the server time."""

    scenario: Scenario
    run: RunResult
    seconds: float
    _run_dir: Path | None = field(default=None, repr=False)
    _axioms: list[AxiomResult] | None = field(default=None, repr=False)


class Studio:
    """The data, the starting scenario, the pinned reference and the evaluated settings.

    Parameters
    ----------
    session
        The loaded data.
    base
        The scenario the page starts from; every setting is this scenario with some knobs moved.
    """

    def __init__(self, session: DataSession, base: Scenario) -> None:
        # the page counts the excluded users but writes no run: no detail sentences, except
        # in the run written to explain one user (a sibling session with them)
        self.session = session.sibling(details=False)
        self._writing = session.sibling(details=True)
        self.base = base
        self._results: OrderedDict[Scenario, Evaluation] = OrderedDict()
        self.pinned: Evaluation | None = None
        self._tmp = tempfile.TemporaryDirectory(prefix="allocator-studio-")

    @classmethod
    def open(cls, data_dir: str | Path, scenario_path: str | Path) -> Studio:
        """Load and validate the data and the scenario (errors name the file)."""
        return cls(DataSession.open(data_dir), load_scenario(scenario_path))

    # ------------------------------------------------------------------ settings

    def values(self) -> dict[str, Any]:
        """The base scenario's knob values."""
        return knob_values(self.base)

    def scenario(self, values: Mapping[str, Any]) -> Scenario:
        """The base scenario with the knobs that differ from it set to ``values``.

        Raises
        ------
        StudioError
            A value the settings refuse; the message is the scenario file's, naming the key.
        """
        start = self.values()
        values = dict(values)
        # a rule's parameter only counts under that rule: the page keeps the box filled in
        rule = rule_full_name(str(values.get("objective.rule", self.base.objective.rule)))
        for name in set(RULE_PARAMETERS.values()) - {RULE_PARAMETERS.get(rule)}:
            values[f"objective.{name}"] = None
        overrides = {}
        for key, value in values.items():
            if key not in start:
                raise StudioError(f"unknown setting {key!r}")
            if key == "eligibility.restricted_regions" and isinstance(value, str):
                value = [code.strip().upper() for code in value.split(",") if code.strip()]
                if value == list(self.base.eligibility.restricted_regions):
                    continue
            elif value == start[key]:
                continue
            overrides[key] = value
        if not overrides:
            return self.base
        try:
            return with_overrides(self.base, overrides, label="this setting")
        except ScenarioError as exc:
            raise StudioError(exc.message, hint=exc.hint) from None

    # ------------------------------------------------------------------ evaluation

    def evaluate(self, scenario: Scenario) -> Evaluation:
        """Allocate ``scenario`` (kept for the last :data:`RESULT_CACHE_SIZE` settings).

        Raises
        ------
        AllocatorError
            The setting is infeasible (e.g. floors above the budget), or nobody is eligible;
            the message says why in words.
        """
        if scenario in self._results:
            self._results.move_to_end(scenario)
            return self._results[scenario]
        t0 = time.perf_counter()
        # The page shows the cents, certified on their own (within their bounds, the budget to
        # the cent, each within a cent of its best response at the solver's prices); the
        # continuous vouchers' certificate is left to the run a save leads to, which has both.
        run = allocate(self.session, scenario, with_payouts=False, certificates="paid")
        result = Evaluation(scenario=scenario, run=run, seconds=time.perf_counter() - t0)
        self._results[scenario] = result
        while len(self._results) > RESULT_CACHE_SIZE:
            self._results.popitem(last=False)
        return result

    def warm_up(
        self,
        settings: int = RESULT_CACHE_SIZE + MEMO_SIZE,
        *,
        draw: Callable[[Evaluation], object] | None = None,
    ) -> int:
        """Evaluate settings near the base before the page is served: the minimum loss and
        the minimum loss ratio until the eligibility cache is full, then ``settings`` moving in
        turn the knobs a designer moves most (the budget, alpha, how much the loss ratio counts,
        the largest voucher) by a little each time; returns how many could be paid. ``draw``
        is called with each evaluated setting: what the page computes to show it (its views,
        kept with the setting, take memory of their own).

        The first settings after start are the slow ones: each keeps its allocation in the
        cache (and new weights or bounds in the data session's memo), and until both are full
        every setting takes memory the process has never touched. On the virtual machine the
        benchmarks ran on (its pages are backed on first use) such memory cost about 15 us a
        page the first time, which put the studio's first ten knob moves at 250-400 ms against
        130 ms afterwards. Warmed up, the first move costs what the hundredth does; the settings stay
        in the cache like any other.
        """
        start, base = self.values(), self.base
        # first each threshold in turn, a little lower each time, until the eligibility cache
        # is full but for the base's own rule set; then the knobs, which end the warm-up with
        # the base's rule set the most recent and the cache holding what knob moves replace
        rules = base.eligibility
        thresholds = (
            lambda k: {"eligibility.min_loss_usd": rules.min_loss_usd - k},
            lambda k: {"eligibility.min_loss_ratio": rules.min_loss_ratio * (1 - 0.01 * k)},
        )
        tries = [thresholds[k % 2](k // 2 + 1) for k in range(ELIGIBILITY_CACHE_SIZE - 1)]
        moves = (
            lambda k: {"budget.total_usd": round(base.budget.total_usd * (1 - 0.001 * k), 2)},
            lambda k: {"objective.alpha": base.objective.alpha + 0.01 * k},
            lambda k: {"objective.ratio_exponent": base.objective.ratio_exponent * (1 - 0.01 * k)},
            lambda k: {"bounds.cap_usd": base.bounds.cap_usd - k},
        )
        tries += [moves[k % len(moves)](k // len(moves) + 1) for k in range(settings)]
        done = 0
        for values in tries:
            try:
                result = self.evaluate(self.scenario({**start, **values}))
            except AllocatorError:
                continue  # a setting that cannot be paid warms nothing: the next one may
            if draw is not None:
                draw(result)
            done += 1
        return done

    def pin(self, result: Evaluation) -> None:
        """Make ``result`` the reference the views compare against."""
        self.pinned = result

    def axioms(self, result: Evaluation, *, sample: int = 200) -> list[AxiomResult]:
        """The fairness axioms of ``result`` (each solved again with perturbations: seconds)."""
        if result._axioms is None:
            result._axioms = axioms_of(result.run, sample=sample)
        return result._axioms

    def explain(self, result: Evaluation, user_id: int) -> list[str]:
        """``allocator explain`` of one user under ``result``, as text lines.

        The run is written once to a private run directory (with its payout plan), so that
        the explanation is the command's, checked step by step against the files.
        """
        if result._run_dir is None:
            full = allocate(self._writing, result.scenario, with_payouts=True)
            out = Path(self._tmp.name) / f"run-{len(os.listdir(self._tmp.name))}"
            result._run_dir = write_run(out, self._writing, full, solver_requested="auto")
        try:
            return render_lines(explain_user(result._run_dir, int(user_id), other_scenarios=False))
        except InputError as exc:
            raise StudioError(exc.message, hint=exc.hint) from None

    # ------------------------------------------------------------------ saving

    def save(self, scenario: Scenario, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write ``scenario`` as a scenario TOML at ``path`` (named after the file), atomically.

        The file is read back with the scenario loader and must give the same scenario, so
        ``allocator allocate --scenario PATH`` makes the allocation the page showed.

        Raises
        ------
        StudioError
            ``path`` exists and ``overwrite`` is false, is not a ``.toml`` file name, or its
            folder does not exist.
        """
        path = Path(path)
        if path.suffix != ".toml":
            raise StudioError(f"{path}: a scenario file name ends in .toml, e.g. my_policy.toml")
        if not path.parent.is_dir():
            raise StudioError(f"{path.parent}: no such folder")
        if path.exists() and not overwrite:
            raise StudioError(
                f"{path} exists; choose another name, or tick 'replace' to overwrite it"
            )
        start = self.values()
        changed = [
            f"{key} = {value}"
            for key, value in knob_values(scenario).items()
            if start.get(key) != value
        ]
        named = replace(
            scenario,
            name=path.stem,
            description=f"{self.base.name}"
            + (f" with {'; '.join(changed)}" if changed else "")
            + " (saved from allocator studio).",
        )
        text = f"# {path.name}: saved from allocator studio; every key written out.\n" + to_toml(
            scenario_to_dict(named)
        )
        tmp = path.with_name(f".{path.stem}.saving.toml")
        tmp.write_text(text, encoding="utf-8")
        try:
            if load_scenario(tmp) != named:
                raise StudioError(f"{path}: the saved file does not read back as this setting")
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return path

    def close(self) -> None:
        """Remove the private run directories."""
        self._tmp.cleanup()


_SHARED: dict[tuple[str | None, str | None], Studio] = {}


def shared_studio(
    data_dir: str | None = None, scenario_path: str | None = None, *, default: bool = False
) -> Studio:
    """The :class:`Studio` of a server process: every browser tab shares the loaded data.

    ``allocator studio`` opens it first with ``default=True``; the page then asks for it without
    arguments. Without a studio opened, the built-in data and ``scenarios/baseline.toml``.
    """
    key = (data_dir, scenario_path)
    if key not in _SHARED:
        data = Path(data_dir) if data_dir else default_data_dir()
        scenario = Path(scenario_path) if scenario_path else SCENARIOS_DIR / "baseline.toml"
        _SHARED[key] = Studio.open(data, scenario)
    if default:
        _SHARED[(None, None)] = _SHARED[key]
    return _SHARED[key]
