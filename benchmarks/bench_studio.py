#!/usr/bin/env python3
r"""The studio's server time per knob at a million eligible users: p50 and p95.

The data: the generator at 1,640,000 users (about 1M eligible), the baseline with the budget
scaled to the same USD per eligible user (as ``bench_axioms.py``). Two kinds of change, each
timed from the new setting to every view's data ready (the allocation in cents, certified, and
the headline, histogram, coverage by band, voucher against loss, Lorenz curve, moves against
the pinned baseline, the budget in words and the cliffs, each chart serialised to Vega-Lite):

- a knob that leaves eligibility alone (alpha, exponents, floor, cap, budget), each setting
  new, so nothing is served from the engine's cache;
- a threshold (minimum loss, minimum ratio), which re-applies the per-user rules to the kept
  per-user table (no pass over the events).

Usage::

    python benchmarks/bench_studio.py                     # 1.64M users in /tmp/bench_axioms_data
    python benchmarks/bench_studio.py --users 200000 --data /tmp/studio_200k --repeats 10

Goals: a knob <= 150 ms, a threshold <= 1 s (server time, p50 and p95).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

# the memory settings of ``allocator studio``, before anything imports Polars (the command
# package imports neither Polars nor NumPy)
_OWN = "_RJEM_MALLOC_CONF" in os.environ
from allocator.cli.heap import (  # noqa: E402
    STUDIO_MALLOC_CONF,
    STUDIO_TRIM_THRESHOLD,
    keep_freed_arrays,
)

if not _OWN:
    os.environ["_RJEM_MALLOC_CONF"] = STUDIO_MALLOC_CONF

from bench_axioms import USD_PER_ELIGIBLE, ensure_data  # noqa: E402
from results import machine, write_result  # noqa: E402

from allocator.settings.scenarios import load_scenario, with_overrides  # noqa: E402
from allocator.studio import views as V  # noqa: E402
from allocator.studio.engine import Studio  # noqa: E402
from allocator.vouchers.pipeline import DataSession  # noqa: E402


def _views(studio: Studio, result, pinned) -> None:
    V.draw(result.run, pinned.run)  # what the page computes for a setting, its JSON included


def main() -> None:
    keep_freed_arrays(STUDIO_TRIM_THRESHOLD)  # the memory settings of allocator studio
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=1_640_000)
    parser.add_argument("--data", type=Path, default=Path("/tmp/bench_axioms_data"))
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    started = machine()
    ensure_data(args.data, args.users)
    t0 = time.perf_counter()
    session = DataSession.open(args.data)
    scenario = load_scenario(ROOT / "scenarios" / "baseline.toml")
    eligible = session.eligibility(scenario.eligibility)[0].eligible.height
    budget = round(USD_PER_ELIGIBLE * eligible, 2)
    studio = Studio(session, with_overrides(scenario, {"budget.total_usd": budget}))
    pinned = studio.evaluate(studio.base)
    studio.pin(pinned)
    # as ``allocator studio`` does before it serves the page, drawing each setting it tries
    studio.warm_up(draw=lambda result: _views(studio, result, pinned))
    _views(studio, pinned, pinned)  # the page draws the starting setting before any move
    print(
        f"{eligible:,} eligible users, budget USD {budget:,.2f}; "
        f"opened in {time.perf_counter() - t0:.1f} s",
        flush=True,
    )
    start = studio.values()
    kinds = {
        "knob (alpha, exponents, bounds, budget)": [
            {"objective.alpha": 1.0 + 0.05 * (k + 1)} if k % 4 == 0
            else {"objective.ratio_exponent": 1.0 - 0.02 * (k + 1)} if k % 4 == 1
            else {"bounds.cap_usd": 6000.0 - 10.0 * (k + 1)} if k % 4 == 2
            else {"budget.total_usd": round(budget * (1 + 0.001 * (k + 1)), 2)}
            for k in range(args.repeats)
        ],
        "threshold (minimum loss or ratio)": [
            {"eligibility.min_loss_usd": 50.0 + (k + 1)} if k % 2 == 0
            else {"eligibility.min_loss_ratio": 0.30 + 0.002 * (k + 1)}
            for k in range(args.repeats)
        ],
    }  # fmt: skip
    rows = []
    for kind, changes in kinds.items():
        solve_ms, total_ms = [], []
        for change in changes:
            t = time.perf_counter()
            result = studio.evaluate(studio.scenario({**start, **change}))
            t_solved = time.perf_counter()
            _views(studio, result, pinned)
            total_ms.append((time.perf_counter() - t) * 1000)
            solve_ms.append((t_solved - t) * 1000)
        rows.append(
            {
                "change": kind,
                "p50_ms": float(np.percentile(total_ms, 50)),
                "p95_ms": float(np.percentile(total_ms, 95)),
                "allocation_p50_ms": float(np.percentile(solve_ms, 50)),
                "views_p50_ms": float(np.percentile(np.subtract(total_ms, solve_ms), 50)),
            }
        )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"studio server time at {eligible:,} eligible users ({args.repeats} settings each):")
    print(f"{'change':<42}{'p50':>9}{'p95':>9}{'allocation':>12}{'views':>9}")
    for r in rows:
        print(
            f"{r['change']:<42}{r['p50_ms']:>7.0f}ms{r['p95_ms']:>7.0f}ms"
            f"{r['allocation_p50_ms']:>10.0f}ms{r['views_p50_ms']:>7.0f}ms"
        )
    print(f"peak resident memory {peak:,.0f} MiB")
    if args.json:
        write_result(
            args.json,
            name="studio",
            command=f"python benchmarks/bench_studio.py --repeats {args.repeats}",
            header=["change", "p50", "p95", "of which the allocation (p50)", "the views (p50)"],
            rows=[
                [
                    r["change"],
                    f"{r['p50_ms']:,.0f} ms",
                    f"{r['p95_ms']:,.0f} ms",
                    f"{r['allocation_p50_ms']:,.0f} ms",
                    f"{r['views_p50_ms']:,.0f} ms",
                ]
                for r in rows
            ],
            notes=[
                f"{eligible:,} eligible users, {args.repeats} new settings of each kind; "
                f"peak resident memory {peak:,.0f} MiB. Goals: a knob <= 150 ms, "
                "a threshold <= 1 s."
            ],
            data={"eligible": eligible, "rows": rows, "peak_mib": peak},
            started=started,
        )
    studio.close()


if __name__ == "__main__":
    main()
