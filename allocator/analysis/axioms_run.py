r"""The axiom audit of a written voucher run, at full size, with the manipulation test.

:func:`run_axioms` re-solves the run's scenario on the data it used (:mod:`allocator.analysis.rerun`)
and hands the problem to :func:`allocator.analysis.axioms.check_axioms`; perturbed problems are
rebuilt from the feature matrix with the scenario's own weights, bounds and segments
(:func:`allocator.vouchers.weights.build_problem`), so a raised loss raises the loss ratio, the
cap and the phase-in factor exactly as eligibility would.

``split_merge_gain``
    What an account gains by splitting in two, or two accounts by merging: the incentive that
    thresholds, floors and caps create (only the proportional rule without them is immune, Ju,
    Miyagawa and Sakai 2007). A sample of users each split into two accounts with half the loss
    and half the net assets (the loss ratio unchanged); a half below the minimum loss is not
    eligible and gets nothing. Separately, a sample of disjoint pairs each merges into one
    account (losses and net assets added). Everyone is solved again with those accounts in place
    of the originals, and the gain is what the new accounts get less what the old ones got.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from allocator import names as N
from allocator.analysis.axioms import (
    TOL_USD,
    WORST,
    AxiomCase,
    AxiomResult,
    check_axioms,
    segment_names,
)
from allocator.analysis.rerun import rerun
from allocator.kernel import phase
from allocator.kernel.problem import AllocationProblem
from allocator.kernel.solve import solve
from allocator.settings.models import EligibilityRules, Scenario
from allocator.vouchers.pipeline import RunResult
from allocator.vouchers.weights import build_problem

#: What theory says of the weighted alpha-fair rule with floors, caps and thresholds.
EXPECTED_ALPHA_FAIR = {
    "budget_balance": "holds in exhaust mode: the budget constraint is tight at the optimum",
    "award_at_most_claim": "holds when neither the floor nor any cap exceeds a loss (floor at "
    "most the smallest eligible loss, coverage cap at most 1)",
    "equal_treatment_of_equals": "holds: the objective is symmetric and, for alpha > 0, "
    "strictly concave",
    "order_preservation": "holds for the voucher when the weight and the cap do not fall as the "
    "loss rises (a loss ratio or feature in the weight, or a segment, can break it); the "
    "remaining loss can shrink as the loss grows when vouchers grow faster than losses",
    "claims_monotonicity": "holds when the weight and the cap rise with the loss",
    "resource_monotonicity": "holds: a separable concave objective over boxes and one budget",
    "consistency": "holds: separable concave objectives are consistent (segment shares "
    "restated on what remains)",
    "composition": "holds, because the rule is resource monotonic",
    "split_merge_gain": "fails: floors make splitting a small account pay, caps make splitting "
    "a large one pay, the minimum loss makes splitting near it cost; only the proportional "
    "rule without bounds or thresholds is immune",
}

_CLAIMS_RULE = {
    "budget_balance": "holds: a claims rule divides the whole budget",
    "award_at_most_claim": "holds: the claim (the loss) caps every award",
    "equal_treatment_of_equals": "holds: equal claims and bounds get equal awards",
    "order_preservation": "holds: a larger claim gets no smaller award and keeps no smaller "
    "remaining loss",
    "claims_monotonicity": "holds: a larger claim gets no smaller award",
    "resource_monotonicity": "holds: every award rises with the budget along the rule's path",
    "consistency": "holds: the rule is consistent (the same multiplier pays the rest)",
    "composition": "holds: the rule is resource monotonic, so raising the floors to the first "
    "half's awards binds nobody",
    "split_merge_gain": "fails: the floor, the cap and the minimum loss make splitting or "
    "merging pay; only the proportional rule without them is immune (Ju, Miyagawa and Sakai "
    "2007)",
}

#: What theory says of each rule of a voucher scenario (Thomson 2003; 2015), with the bounds.
EXPECTED_BY_RULE: dict[str, dict[str, str]] = {
    "alpha_fair": EXPECTED_ALPHA_FAIR,
    "proportional": _CLAIMS_RULE,
    "constrained_equal_awards": {
        **_CLAIMS_RULE,
        "split_merge_gain": "fails: splitting pays (two equal awards instead of one), and the "
        "floor and the minimum loss add to it",
    },
    "constrained_equal_losses": {
        **_CLAIMS_RULE,
        "split_merge_gain": "fails: merging pays (one equal loss instead of two), and the floor "
        "and the minimum loss add to it",
    },
    "talmud": {
        **_CLAIMS_RULE,
        "split_merge_gain": "fails: the rule is CEA on half-claims when the budget is small and "
        "CEL on the other halves when it is large, so splitting or merging pays",
    },
    "base_then_pro_rata": {
        **_CLAIMS_RULE,
        "split_merge_gain": "fails: splitting collects the base twice",
    },
    "convenience_class": {
        **_CLAIMS_RULE,
        "order_preservation": "fails at the threshold: a claim just above it is paid pro rata "
        "while one just below it is paid in full",
        "claims_monotonicity": "fails at the threshold: a claim raised past it is paid pro rata "
        "instead of in full",
        "split_merge_gain": "fails: splitting a claim above the threshold into two below it "
        "gets it paid in full",
    },
    "max_min": {
        **_CLAIMS_RULE,
        "budget_balance": "holds: water-filling divides the whole budget",
        "award_at_most_claim": "holds when the floor is at most the smallest eligible loss and "
        "the water level (or the coverage cap) keeps vouchers below the losses",
        "equal_treatment_of_equals": "holds: the lexicographic max-min is symmetric",
        "consistency": "holds: the rest keep the same water level",
        "split_merge_gain": "fails: in voucher form splitting pays (two levels instead of one); "
        "in coverage form only the floor, the cap and the minimum loss make it pay",
    },
}


def expected_for(scenario: Scenario) -> dict[str, str]:
    """What theory says of the scenario's rule, axiom by axiom."""
    return EXPECTED_BY_RULE[scenario.objective.rule]


_HALVED = (N.LOSS_USD, N.GROSS_LOSS_USD, N.FEE_USD, N.NET_ASSETS_USD, N.DEPEG_COMP_USD)


@dataclass(frozen=True)
class AxiomsReport:
    """Every axiom's result for one run."""

    run_dir: str
    scenario: str
    eligible: int
    axioms: list[AxiomResult] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_dir": self.run_dir,
            "scenario": self.scenario,
            "eligible": self.eligible,
            "axioms": [a.to_dict() for a in self.axioms],
        }

    def lines(self) -> list[str]:
        out = [f"run {self.run_dir} (scenario {self.scenario}, {self.eligible:,} eligible users)"]
        width = max(len(a.name) for a in self.axioms)
        for a in self.axioms:
            out.append(f"{a.name:<{width}}  {verdict(a)}  ({a.how})")
            if not a.holds and a.worst:
                out.append(f"{'':<{width}}  worst: {a.worst[0]}")
            if a.expected:
                out.append(f"{'':<{width}}  expected: {a.expected}")
        return out


def _amount_columns(features: pl.DataFrame) -> list[str]:
    per_product = [c for c in features.columns if c.startswith("loss_") and c.endswith("_usd")]
    return [c for c in dict.fromkeys([*_HALVED, *per_product]) if c in features.columns]


def _eligible(loss: np.ndarray, rules: EligibilityRules) -> np.ndarray:
    """The minimum-loss rule on new accounts (their loss ratios pass: they are the originals')."""
    return phase.passes(loss, phase.Band(rules.phase_in_loss_usd, rules.min_loss_usd))


def _with_phase(features: pl.DataFrame, rules: EligibilityRules) -> pl.DataFrame:
    if N.PHASE_FACTOR not in features.columns:
        return features
    factor = phase.phase_factor(
        features[N.LOSS_USD].to_numpy(),
        features[N.LOSS_RATIO].to_numpy(),
        phase.Band(rules.phase_in_loss_usd, rules.min_loss_usd),
        phase.Band(rules.phase_in_ratio, rules.min_loss_ratio),
    )
    return features.with_columns(pl.Series(N.PHASE_FACTOR, factor))


def _ratio(loss: pl.Expr, assets: pl.Expr) -> pl.Expr:
    return pl.when(assets > 0).then(loss / assets).otherwise(math.inf)


class _Variants:
    """Feature matrices of the same users with some accounts changed, and their optimum."""

    def __init__(self, features: pl.DataFrame, scenario: Scenario, solver: str | None) -> None:
        self.features = features
        self.scenario = scenario
        self.method = solver or scenario.solver.name
        self.amounts = _amount_columns(features)

    def solve(self, problem: AllocationProblem) -> np.ndarray:
        return solve(problem, method=self.method).vouchers

    def vouchers(self, features: pl.DataFrame) -> dict[int, float]:
        features = _with_phase(features.sort(N.USER_ID), self.scenario.eligibility)
        v = self.solve(build_problem(features, self.scenario))
        return dict(zip(features[N.USER_ID].to_list(), v.tolist()))

    def with_loss(self, loss: np.ndarray) -> AllocationProblem:
        f = self.features
        old = f[N.LOSS_USD].to_numpy()
        scale = np.divide(loss, old, out=np.ones_like(loss), where=old > 0)
        f = f.with_columns(
            [pl.col(c) * pl.lit(pl.Series(scale)) for c in self.amounts if c != N.NET_ASSETS_USD]
        ).with_columns(_ratio(pl.col(N.LOSS_USD), pl.col(N.NET_ASSETS_USD)).alias(N.LOSS_RATIO))
        return build_problem(_with_phase(f, self.scenario.eligibility), self.scenario)


def _gains(
    variants: _Variants,
    changed: pl.DataFrame,
    rest: pl.DataFrame,
    new_ids: list[list[int]],
    old_ids: list[list[int]],
    before: dict[int, float],
) -> np.ndarray:
    eligible = _eligible(changed[N.LOSS_USD].to_numpy(), variants.scenario.eligibility)
    after = variants.vouchers(pl.concat([rest, changed.filter(pl.Series(eligible))]))
    return np.array(
        [
            sum(after.get(i, 0.0) for i in new) - sum(before[i] for i in old)
            for new, old in zip(new_ids, old_ids)
        ]
    )


def split_merge_gain(
    variants: _Variants, before: np.ndarray, *, sample: int, seed: int, expected: str
) -> AxiomResult:
    f = variants.features
    n = f.height
    ids = f[N.USER_ID].to_numpy()
    by_id = dict(zip(ids.tolist(), before.tolist()))
    rng = np.random.default_rng(seed)
    next_id = int(ids.max()) + 1
    amounts = variants.amounts
    # split: each sampled account becomes two with half of every amount
    pick = np.sort(rng.choice(n, size=min(sample, n), replace=False))
    chosen = f[pick]
    halves = chosen.with_columns([pl.col(c) / 2 for c in amounts])
    first_ids = chosen[N.USER_ID].to_list()
    second_ids = list(range(next_id, next_id + chosen.height))
    split = pl.concat([halves, halves.with_columns(pl.Series(N.USER_ID, second_ids))])
    keep = np.ones(n, dtype=bool)
    keep[pick] = False
    split_gain = _gains(
        variants,
        split,
        f.filter(pl.Series(keep)),
        [[a, b] for a, b in zip(first_ids, second_ids)],
        [[a] for a in first_ids],
        by_id,
    )
    # merge: disjoint pairs become one account with the amounts added
    order = rng.permutation(n)[: 2 * (min(sample, n // 2))]
    a_idx, b_idx = order[0::2], order[1::2]
    fa, fb = f[a_idx], f[b_idx]
    merged = fa.with_columns(
        [pl.Series(c, fa[c].to_numpy() + fb[c].to_numpy()) for c in amounts]
        + [pl.Series(N.N_EVENTS, fa[N.N_EVENTS].to_numpy() + fb[N.N_EVENTS].to_numpy())]
    ).with_columns(_ratio(pl.col(N.LOSS_USD), pl.col(N.NET_ASSETS_USD)).alias(N.LOSS_RATIO))
    keep = np.ones(n, dtype=bool)
    keep[order] = False
    a_ids, b_ids = fa[N.USER_ID].to_list(), fb[N.USER_ID].to_list()
    merge_gain = _gains(
        variants,
        merged,
        f.filter(pl.Series(keep)),
        [[a] for a in a_ids],
        [[a, b] for a, b in zip(a_ids, b_ids)],
        by_id,
    )
    worst: list[dict[str, Any]] = []
    for kind, gain, who in (
        ("split", split_gain, [[a] for a in first_ids]),
        ("merge", merge_gain, [[a, b] for a, b in zip(a_ids, b_ids)]),
    ):
        for k in np.argsort(-gain)[:WORST]:
            if gain[k] > TOL_USD:
                worst.append(
                    {"kind": kind, "user_ids": who[int(k)], "gain_usd": round(float(gain[k]), 2)}
                )
    worst.sort(key=lambda w: -w["gain_usd"])
    gaining = int((split_gain > TOL_USD).sum() + (merge_gain > TOL_USD).sum())
    return AxiomResult(
        name="split_merge_gain",
        holds=gaining == 0,
        checked=int(split_gain.size + merge_gain.size),
        violations=gaining,
        expected=expected,
        how=(
            f"{split_gain.size:,} accounts split in two and {merge_gain.size:,} pairs merged, "
            "everyone solved again"
        ),
        worst=worst[:WORST],
        distribution={"split": _describe(split_gain), "merge": _describe(merge_gain)},
    )


def _describe(gain: np.ndarray) -> dict[str, float]:
    if gain.size == 0:
        return {}
    return {
        "mean_usd": round(float(gain.mean()), 2),
        "median_usd": round(float(np.median(gain)), 2),
        "p90_usd": round(float(np.quantile(gain, 0.9)), 2),
        "max_usd": round(float(gain.max()), 2),
        "min_usd": round(float(gain.min()), 2),
        "share_gaining": round(float((gain > TOL_USD).mean()), 4),
    }


def run_axioms(
    run_dir: str | Path,
    *,
    sample: int = 1000,
    seed: int = 0,
    progress: Callable[[str], None] = lambda _: None,
) -> AxiomsReport:
    """Every axiom on a run directory's own problem (see the module docstrings); ``progress`` is
    called with each stage (the re-solve, then each axiom).

    Raises
    ------
    InputError
        The run directory or its inputs are damaged or changed since the run.
    """
    progress(f"re-solving {run_dir} on its input data")
    again = rerun(run_dir)
    run, scenario = again.result, again.written.scenario
    results = axioms_of(run, solver=again.solver, sample=sample, seed=seed, progress=progress)
    return AxiomsReport(
        run_dir=str(run_dir),
        scenario=scenario.name,
        eligible=run.eligibility.eligible.height,
        axioms=results,
    )


def axioms_of(
    run: RunResult,
    *,
    solver: str | None = None,
    sample: int = 1000,
    seed: int = 0,
    progress: Callable[[str], None] = lambda _: None,
) -> list[AxiomResult]:
    """Every axiom on an allocated (not necessarily written) run: what ``compare --axioms`` and
    ``report --axioms`` show for each scenario."""
    scenario = run.scenario
    features = run.eligibility.eligible
    variants = _Variants(features, scenario, solver)
    case = AxiomCase(
        problem=run.problem,
        vouchers=run.allocation.vouchers,
        loss=features[N.LOSS_USD].to_numpy(),
        user_id=features[N.USER_ID].to_numpy(),
        segment=segment_names(run.problem),
        solve=variants.solve,
        with_loss=variants.with_loss,
        expected=expected_for(scenario),
    )
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        results = check_axioms(case, sample=sample, seed=seed, progress=progress)
        progress("axiom split_merge_gain")
        results.append(
            split_merge_gain(
                variants,
                run.allocation.vouchers,
                sample=sample,
                seed=seed + 2,
                expected=expected_for(scenario)["split_merge_gain"],
            )
        )
    return results


def verdict(result: AxiomResult) -> str:
    """One table cell: "holds" or "fails for 12 of 1,000"."""
    if result.holds:
        return "holds"
    return f"fails for {result.violations:,} of {result.checked:,}"
