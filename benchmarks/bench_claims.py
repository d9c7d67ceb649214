#!/usr/bin/env python3
r"""Every claims rule at a million claims, beside the one-pass numpy limit measured in the same run.

The problem: a million lognormal losses above USD 50 (the solver benchmark's), an estate of USD
300 per claim (USD 300M), each award within USD 4 and USD 6,000 and never above its loss, and
the exact max-min of coverage of a voucher scenario (water-filling). For each rule: the median
time of the exact awards (the rule's one multiplier), of the cents that sum to the estate, and
the ratio to one pass of numpy over the same arrays (``clip`` then ``sum``), which no exact
method can beat.

Usage::

    python benchmarks/bench_claims.py                 # 1M claims, 7 repeats
    python benchmarks/bench_claims.py --n 100000 --repeats 5 --json out.json

Goal: each rule <= 0.1 s (median) at 1M claims.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from results import machine, write_result  # noqa: E402

from allocator.cli.heap import keep_freed_arrays  # noqa: E402
from allocator.kernel import claims as K  # noqa: E402

PARAMETERS = {"base_then_pro_rata": 500.0, "convenience_class": 5000.0, "minimum_payment": 20.0}


def _median_seconds(func, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main() -> None:
    keep_freed_arrays()  # the memory settings of the allocator commands
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    started = machine()
    loss = 50.0 + np.random.default_rng(2025).lognormal(6.5, 1.7, args.n)
    estate = 300.0 * args.n  # USD 300M at a million claims, the same per claim at any size
    limit = _median_seconds(lambda: float(np.clip(loss, 4.0, 6000.0).sum()), args.repeats)
    rows = []
    for rule in K.RULES:
        param = PARAMETERS.get(rule)

        def solve(rule: str = rule, param: float | None = param) -> K.ClaimsAwards:
            return K.divide(rule, loss, estate, lower=4.0, upper=6000.0, parameter=param)

        seconds = _median_seconds(solve, args.repeats)
        awards = solve()
        cents_s = _median_seconds(
            lambda a=awards: K.awards_to_cents(a, loss, estate, lower=4.0, upper=6000.0), 3
        )
        cents = K.awards_to_cents(awards, loss, estate, lower=4.0, upper=6000.0)
        assert int(cents.sum()) == round(estate * 100)
        rows.append(
            {
                "rule": rule,
                "seconds": seconds,
                "cents_seconds": cents_s,
                "x_numpy_pass": seconds / limit,
            }
        )
    # the exact max-min of a voucher scenario: water-filling of coverage (v / loss) within the bounds
    upper = np.minimum(6000.0, np.floor(loss * 100.0) / 100.0)

    def level() -> K.ClaimsAwards:
        return K.water_filling(loss, estate, lower=4.0, upper=upper)

    seconds = _median_seconds(level, args.repeats)
    awards = level()
    cents_s = _median_seconds(
        lambda a=awards: K.awards_to_cents(a, loss, estate, lower=4.0, upper=upper), 3
    )
    cents = K.awards_to_cents(awards, loss, estate, lower=4.0, upper=upper)
    assert int(cents.sum()) == round(estate * 100)
    rows.append(
        {
            "rule": "max_min (coverage)",
            "seconds": seconds,
            "cents_seconds": cents_s,
            "x_numpy_pass": seconds / limit,
        }
    )
    print(f"claims rules at {args.n:,} claims ({platform.processor() or platform.machine()}):")
    print(f"one numpy pass (clip + sum): {limit * 1000:.1f} ms")
    print(f"{'rule':<28}{'awards':>10}{'cents':>10}{'x numpy':>10}")
    for r in rows:
        print(
            f"{r['rule']:<28}{r['seconds'] * 1000:>8.1f}ms{r['cents_seconds'] * 1000:>8.1f}ms"
            f"{r['x_numpy_pass']:>10.1f}"
        )
    if args.json:
        write_result(
            args.json,
            name="claims",
            command=f"python benchmarks/bench_claims.py --repeats {args.repeats}",
            header=["rule", "awards", "cents", "awards / one NumPy pass"],
            rows=[
                [
                    r["rule"],
                    f"{r['seconds'] * 1000:.0f} ms",
                    f"{r['cents_seconds'] * 1000:.0f} ms",
                    f"{r['x_numpy_pass']:.0f}x",
                ]
                for r in rows
            ],
            notes=[
                f"{args.n:,} claims, an estate of USD {estate:,.0f}, each award within USD 4 and "
                f"6,000 and never above its loss; medians of {args.repeats}; one NumPy pass (clip "
                f"and sum) took {limit * 1000:.1f} ms in the same run."
            ],
            data={"n": args.n, "numpy_pass_s": limit, "rules": rows},
            started=started,
        )


if __name__ == "__main__":
    main()
