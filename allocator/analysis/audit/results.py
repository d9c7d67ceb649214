r"""What the fairness audit reports: coverage by loss band, the violation counts split by
explaining factor with example pairs, and the text of the report.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, cast

import numpy as np

from allocator.jsonsafe import json_safe
from allocator.kernel.money import format_cents, format_usd

MONOTONICITY = "monotonicity"
ENVY = "envy"
UNEXPLAINED = "unexplained"
DEFINITIONS = {
    MONOTONICITY: "pairs (i, j) with loss_j > loss_i and voucher_j < voucher_i",
    ENVY: (
        "pairs (i, j) with loss_j >= loss_i and loss_ratio_j >= loss_ratio_i (not both equal) "
        "and voucher_j < voucher_i"
    ),
}
_FACTOR_TEXT = {
    "bounds": "different bounds (floor, cap or coverage cap), one of the two paid a bound",
    "segment": "different segments, hence different segment prices",
    "features": "different non-loss/ratio weight features",
    "ratio": "the larger loss came with a smaller loss ratio",
    "rounding_tie": "equal loss and weight; the cent went to the smaller user id",
    UNEXPLAINED: "no documented factor",
}


@dataclass(frozen=True)
class BandCoverage:
    """Coverage ``voucher / loss`` of the users whose loss is in ``[low_usd, high_usd)``."""

    label: str
    low_usd: float
    high_usd: float
    count: int
    median: float | None
    p10: float | None
    p90: float | None


@dataclass(frozen=True)
class ViolationPair:
    """User ``i`` receives more than user ``j`` although ``j`` lost at least as much."""

    user_i: int
    loss_i: float
    ratio_i: float
    voucher_cents_i: int
    user_j: int
    loss_j: float
    ratio_j: float
    voucher_cents_j: int
    explained_by: str


@dataclass(frozen=True)
class Violations:
    """Counts of one kind of violation: raw, split by explaining factor, and unexplained."""

    kind: str
    definition: str
    raw: int
    by_factor: tuple[tuple[str, int], ...]
    unexplained: int
    expected_zero: bool | None
    examples: tuple[ViolationPair, ...]
    unexplained_examples: tuple[ViolationPair, ...]

    @property
    def ok(self) -> bool:
        """False only when unexplained violations exist where the model forbids them."""
        return not (self.expected_zero and self.unexplained > 0)


@dataclass(frozen=True)
class Audit:
    """The fairness audit of one allocation (see the module docstring)."""

    users: int
    paid_cents: int
    gini: float | None
    top_decile_share: float | None
    lorenz_population: tuple[float, ...]
    lorenz_share: tuple[float, ...]
    coverage_by_band: tuple[BandCoverage, ...]
    monotonicity: Violations
    envy: Violations
    notes: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return self.monotonicity.ok and self.envy.ok

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (no NaN or infinity: an infinite ratio is the string ``"inf"``)."""
        out = asdict(self)
        for kind in (MONOTONICITY, ENVY):
            out[kind]["by_factor"] = dict(getattr(self, kind).by_factor)
        out["ok"] = self.ok
        return cast("dict[str, Any]", json_safe(out))

    def lines(self) -> list[str]:
        """Human-readable report."""
        out = [f"users {self.users:,}, paid {format_cents(self.paid_cents)} USD"]
        if self.gini is not None:
            out.append(
                f"Gini {self.gini:.4f}; top decile share {self.top_decile_share:.4f}; "
                f"Lorenz at 50% of users {_lorenz_at(self, 0.5):.4f}, at 90% {_lorenz_at(self, 0.9):.4f}"
            )
        out.append("coverage (voucher / loss) by loss band:")
        out.append(f"  {'band':<10} {'users':>8} {'p10':>10} {'median':>10} {'p90':>10}")
        for b in self.coverage_by_band:
            out.append(
                f"  {b.label:<10} {b.count:>8,} {_pct(b.p10):>10} {_pct(b.median):>10} {_pct(b.p90):>10}"
            )
        for v in (self.monotonicity, self.envy):
            out.append(f"{v.kind}: {v.definition}")
            out.append(f"  raw {v.raw:,}")
            for name, count in v.by_factor:
                out.append(f"  explained by {name} ({_FACTOR_TEXT[name]}): {count:,}")
            verdict = {
                True: "must be 0",
                False: "allowed: weights not monotone",
                None: "objective unknown",
            }
            out.append(f"  unexplained {v.unexplained:,} ({verdict[v.expected_zero]})")
            for ex in v.examples:
                out.append("    e.g. " + _pair_text(ex))
            for ex in v.unexplained_examples:
                out.append("    UNEXPLAINED " + _pair_text(ex))
        out.extend(f"note: {n}" for n in self.notes)
        out.append("audit: " + ("ok" if self.ok else "FAILED (unexplained violations)"))
        return out


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def _lorenz_at(a: Audit, share: float) -> float:
    return float(np.interp(share, a.lorenz_population, a.lorenz_share))


def _ratio_text(r: float) -> str:
    return "inf" if math.isinf(r) else f"{r:.4f}"


def _pair_text(p: ViolationPair) -> str:
    return (
        f"user {p.user_i} (loss {format_usd(p.loss_i)}, ratio {_ratio_text(p.ratio_i)}) gets "
        f"{format_cents(p.voucher_cents_i)} > user {p.user_j} (loss {format_usd(p.loss_j)}, ratio "
        f"{_ratio_text(p.ratio_j)}) gets {format_cents(p.voucher_cents_j)} [{p.explained_by}]"
    )
