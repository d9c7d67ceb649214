#!/usr/bin/env python3
r"""``allocator axioms`` on the baseline at a million eligible users, stage by stage.

The data: the synthetic generator at 1,640,000 liquidated users (about 1M of them eligible under
the announced rules), the budget scaled from USD 300M for 122,401 eligible users to the same
USD per eligible user. The baseline is allocated and written once; then ``allocator axioms
RUN_DIR --sample N`` runs in its own subprocess (so that its peak resident memory is its own),
and, in this process, the same work timed stage by stage: the re-solve of the written run on
its data (:func:`allocator.analysis.rerun.rerun`, which also verifies every hash), each axiom of
:func:`allocator.analysis.axioms.check_axioms`, and the split-and-merge test.

Usage::

    python benchmarks/bench_axioms.py                          # 1.64M users in /tmp/bench_axioms_data
    python benchmarks/bench_axioms.py --users 200000 --data /tmp/axioms_200k --sample 200

The data directory is generated only when it is missing. Goal: ``axioms`` <= 30 s at 1M users.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from results import machine, write_result  # noqa: E402

from allocator import names as N  # noqa: E402
from allocator.analysis import axioms as A  # noqa: E402
from allocator.analysis.axioms_run import (  # noqa: E402
    _Variants,
    expected_for,
    split_merge_gain,
)
from allocator.analysis.rerun import rerun  # noqa: E402

#: USD per eligible user of the programme (USD 300M over the built-in data's 122,401).
USD_PER_ELIGIBLE = 300_000_000 / 122_401


def _allocator(*args: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("allocator")
    return subprocess.run([str(exe), *args], check=True, capture_output=True, text=True)


def ensure_data(data: Path, users: int) -> None:
    if all((data / f"{s}.parquet").is_file() for s in N.INPUT_TABLES):
        print(f"using existing data in {data}", flush=True)
        return
    print(f"generating {users:,} users into {data} ...", flush=True)
    t0 = time.perf_counter()
    _allocator("generate", "--users", str(users), "--out", str(data))
    print(f"  done in {time.perf_counter() - t0:.1f} s", flush=True)


def _timed(label: str, func, rows: list[dict]):
    t0 = time.perf_counter()
    out = func()
    rows.append({"stage": label, "seconds": time.perf_counter() - t0})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=1_640_000)
    parser.add_argument("--data", type=Path, default=Path("/tmp/bench_axioms_data"))
    parser.add_argument("--sample", type=int, default=1000)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    started = machine()
    ensure_data(args.data, args.users)
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "baseline"
        # the budget is set after eligibility is known: one allocation to count, one to write
        probe = json.loads(
            _allocator(
                "allocate",
                "--scenario",
                str(ROOT / "scenarios" / "baseline.toml"),
                "--data",
                str(args.data),
                "--out",
                str(Path(tmp) / "probe"),
                "--json",
                "-q",
            ).stdout
        )
        eligible = int(probe["eligible"])
        budget = round(USD_PER_ELIGIBLE * eligible, 2)
        _allocator(
            "allocate", "--scenario", str(ROOT / "scenarios" / "baseline.toml"),
            "--data", str(args.data), "--out", str(run_dir), "-q",
            "--set", f"budget.total_usd={budget}",
        )  # fmt: skip
        print(f"baseline: {eligible:,} eligible users, budget USD {budget:,.2f}", flush=True)

        t0 = time.perf_counter()
        whole = subprocess.run(
            [
                sys.executable, "-c",
                "import resource, subprocess, sys; "
                "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL); "
                "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)",
                str(Path(sys.executable).with_name("allocator")),
                "axioms", str(run_dir), "--sample", str(args.sample), "--json", "-q",
            ],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        command_s = time.perf_counter() - t0
        command_peak_mib = int(whole.stdout.strip()) / 1024

        stages: list[dict] = []
        again = _timed(
            "re-solve the written run (hashes, eligibility, solve)", lambda: rerun(run_dir), stages
        )
        run, scenario = again.result, again.written.scenario
        features = run.eligibility.eligible
        variants = _Variants(features, scenario, again.solver)
        case = A.AxiomCase(
            problem=run.problem,
            vouchers=run.allocation.vouchers,
            loss=features[N.LOSS_USD].to_numpy(),
            user_id=features[N.USER_ID].to_numpy(),
            segment=A.segment_names(run.problem),
            solve=variants.solve,
            with_loss=variants.with_loss,
            expected=expected_for(scenario),
        )
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            for name, check in (
                ("budget_balance", A.budget_balance),
                ("award_at_most_claim", A.award_at_most_claim),
                ("equal_treatment_of_equals", A.equal_treatment_of_equals),
                ("order_preservation", A.order_preservation),
                ("claims_monotonicity", lambda c: A.claims_monotonicity(c, sample=args.sample)),
                ("resource_monotonicity", A.resource_monotonicity),
                ("consistency", lambda c: A.consistency(c, seed=1)),
                ("composition", A.composition),
            ):
                _timed(name, lambda check=check: check(case), stages)
            _timed(
                "split_merge_gain",
                lambda: split_merge_gain(
                    variants, run.allocation.vouchers, sample=args.sample, seed=2,
                    expected=expected_for(scenario)["split_merge_gain"],
                ),
                stages,
            )  # fmt: skip

    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"allocator axioms at {eligible:,} eligible users, --sample {args.sample}:")
    print(f"  the command: {command_s:.1f} s, peak {command_peak_mib:,.0f} MiB (goal <= 30 s)")
    print("  by stage (in this process):")
    for row in stages:
        print(f"    {row['stage']:<56}{row['seconds']:>7.2f} s")
    print(f"    {'total':<56}{sum(r['seconds'] for r in stages):>7.2f} s")
    if args.json:
        write_result(
            args.json,
            name="axioms",
            command=f"python benchmarks/bench_axioms.py --sample {args.sample}",
            header=["step", "time"],
            rows=[
                [
                    f"`allocator axioms RUN_DIR --sample {args.sample}` (its own process; peak "
                    f"{command_peak_mib:,.0f} MiB)",
                    f"{command_s:.1f} s",
                ],
                *([f"in one process: {r['stage']}", f"{r['seconds']:.2f} s"] for r in stages),
            ],
            notes=[
                f"{eligible:,} eligible users (the generator at {args.users:,} users), the "
                "baseline with the budget scaled to the same USD per eligible user. Goal: the "
                "command <= 30 s."
            ],
            data={
                "eligible": eligible,
                "sample": args.sample,
                "command_seconds": command_s,
                "command_peak_mib": command_peak_mib,
                "stages": stages,
                "bench_peak_mib": peak_mib,
            },
            started=started,
        )


if __name__ == "__main__":
    main()
