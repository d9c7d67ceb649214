r"""The runner: every check of the package in its reporting order, run on one directory, each
reported on its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from allocator import names as N
from allocator.analysis.checks.amounts import (
    check_bound_labels,
    check_bounds,
    check_budget,
    check_paid,
    check_segment_shares,
    check_unspent,
    check_voucher_usd,
    check_within_bounds,
)
from allocator.analysis.checks.appealed import check_appeals_applied
from allocator.analysis.checks.chain import (
    check_chain_totals,
    check_no_claw_back,
    check_paid_before,
    check_previous_round,
)
from allocator.analysis.checks.contract import (
    check_allocations_file,
    check_counts,
    check_disjoint,
    check_excluded_file,
    check_input_hashes,
    check_liquidated,
    check_manifest,
    check_output_hashes,
    check_payouts_file,
    check_reasons,
    check_unique_allocations,
    check_unique_exclusions,
)
from allocator.analysis.checks.ledger import check_redemptions_file, check_voucher_ledger
from allocator.analysis.checks.optimality import check_objective, check_optimality
from allocator.analysis.checks.payouts import (
    check_idempotency_keys,
    check_payout_amounts,
    check_payout_batches,
    check_payout_keys,
    check_payout_rows,
    check_payout_schedule,
)
from allocator.analysis.checks.recompute import (
    check_eligibility_recomputed,
    check_weights_recomputed,
)
from allocator.analysis.checks.runfiles import Result, RunFiles, Unavailable
from allocator.errors import InputError
from allocator.runs.contract import OUTPUT_FILES
from allocator.runs.signing import load_public_key, verify_signature


@dataclass(frozen=True)
class Check:
    """One named check, whether it holds, and what was found."""

    name: str
    ok: bool
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail}


@dataclass(frozen=True)
class CheckReport:
    """Every check run on one run directory; ``ok`` only when all of them hold."""

    path: str
    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def failures(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if not c.ok)

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_dir": self.path,
            "ok": self.ok,
            "n_checks": len(self.checks),
            "n_failed": len(self.failures),
            "failed": [c.name for c in self.failures],
            "checks": [c.to_dict() for c in self.checks],
        }

    def lines(self) -> list[str]:
        """One line per check, then a verdict line."""
        width = max((len(c.name) for c in self.checks), default=0)
        out = [f"{'PASS' if c.ok else 'FAIL'}  {c.name:<{width}}  {c.detail}" for c in self.checks]
        if self.ok:
            out.append(f"OK: all {len(self.checks)} checks passed for {self.path}")
        else:
            names = ", ".join(c.name for c in self.failures)
            out.append(
                f"FAILED: {len(self.failures)} of {len(self.checks)} checks failed "
                f"for {self.path}: {names}"
            )
        return out


CHECKS: tuple[tuple[str, Callable[[RunFiles], Result]], ...] = (
    ("manifest", check_manifest),
    ("allocations file", check_allocations_file),
    ("excluded file", check_excluded_file),
    ("payouts file", check_payouts_file),
    ("budget", check_budget),
    ("paid", check_paid),
    ("unspent", check_unspent),
    ("within bounds", check_within_bounds),
    ("bounds", check_bounds),
    ("voucher_usd", check_voucher_usd),
    ("bound labels", check_bound_labels),
    ("segment shares", check_segment_shares),
    ("unique allocations", check_unique_allocations),
    ("unique exclusions", check_unique_exclusions),
    ("allocated or excluded", check_disjoint),
    ("exclusion reasons", check_reasons),
    ("liquidated users", check_liquidated),
    ("payout rows", check_payout_rows),
    ("payout amounts", check_payout_amounts),
    ("payout keys", check_payout_keys),
    ("idempotency keys", check_idempotency_keys),
    ("payout batches", check_payout_batches),
    ("payout schedule", check_payout_schedule),
    ("input hashes", check_input_hashes),
    ("output hashes", check_output_hashes),
    ("counts", check_counts),
    ("optimality", check_optimality),
    ("objective", check_objective),
    ("eligibility recomputed", check_eligibility_recomputed),
    ("weights recomputed", check_weights_recomputed),
)


#: Names of every check, in the order they are reported.
CHECK_NAMES = tuple(name for name, _ in CHECKS)

#: The checks of a distribution's chain, run after :data:`CHECKS` on a run of round 2 or later
#: (``allocate --previous``) only: a round-1 run has exactly the checks above.
ROUND_CHECKS: tuple[tuple[str, Callable[[RunFiles], Result]], ...] = (
    ("previous round", check_previous_round),
    ("redemptions file", check_redemptions_file),
    ("voucher ledger", check_voucher_ledger),
    ("paid before", check_paid_before),
    ("no claw-back", check_no_claw_back),
    ("appeals applied", check_appeals_applied),
    ("chain totals", check_chain_totals),
)
ROUND_CHECK_NAMES = tuple(name for name, _ in ROUND_CHECKS)


def check_run_dir(path: str | Path, *, verify_key: str | Path | None = None) -> CheckReport:
    """Run every finance check on a run directory and report each one; never raises for bad files.

    Parameters
    ----------
    path
        A run directory written by :func:`allocator.runs.writer.write_run_dir`.
    verify_key
        An Ed25519 public key (``allocator keys new``): one more check, ``signature``, that the
        manifest carries a valid signature by that key. The other checks then tie every file
        to the signed manifest, so nobody without the private key can edit a run unseen.

    Returns
    -------
    CheckReport
        One :class:`Check` per entry of :data:`CHECK_NAMES`, in that order, then, for a run of
        round 2 or later, one per entry of :data:`ROUND_CHECK_NAMES` (the previous round is
        checked the same way, so the whole chain is).

    Raises
    ------
    InputError
        ``path`` does not exist or is not a directory: nothing to check, so a report of every
        check failing would only hide the mistaken path.
    """
    path = Path(path)
    key = load_public_key(verify_key) if verify_key is not None else None  # a bad key: exit 2
    if not path.is_dir():
        what = "is a file, not a directory" if path.exists() else "does not exist"
        raise InputError(
            f"{path}: {what}; expected a run directory holding {', '.join(OUTPUT_FILES)} and "
            f"{N.MANIFEST_FILE} (as written by allocate --out).",
        )
    files = RunFiles(path)
    results = []
    try:
        later = files.later_round
    except Unavailable:
        later = False  # the manifest check reports a manifest that cannot be read
    except Exception:  # a manifest that is not an object: reported by the manifest check
        later = False
    for name, fn in CHECKS + (ROUND_CHECKS if later else ()):
        try:
            ok, detail = fn(files)
        except Unavailable as exc:
            ok, detail = False, f"not checked: {exc}"
        except Exception as exc:  # a malformed file must be reported, never a traceback
            ok, detail = False, f"could not check ({type(exc).__name__}: {exc})"
        results.append(Check(name=name, ok=bool(ok), detail=detail))
    if key is not None:
        ok, detail = verify_signature(path, key)
        results.append(Check(name="signature", ok=ok, detail=detail))
    return CheckReport(path=str(path), checks=tuple(results))
