#!/usr/bin/env python3
r"""The kernel at a million users: every alpha and every claims rule, with and without segments.

One problem family (the one of ``bench_solvers.py``: lognormal losses above USD 50, weights
``loss``, floor USD 4, cap ``min(6000, 0.5 * loss)``, 30% of the caps' total spent exactly),
solved by the fast solver for each alpha in {0, 0.5, 1, 2, 5} and the exact max-min
(alpha = infinity), each

- without segments,
- with a segment that does not bind (mid-sized losses, at least half of what they get
  without it),
- with one that binds (halfway from that share to all of their caps),

and each claims rule without segments. For every case: the median solve (``fast_solution``,
or the rule's awards), the median certificate of that solution (``certify``; the rule's own
certificate for a rule), and both as multiples of the one-pass NumPy limit measured in the same
run: one ``clip(c * y, lo, hi).sum()`` over the same users, the least any solver must do once.

Usage::

    python benchmarks/bench_kernel.py                 # 1M users, 7 repeats
    python benchmarks/bench_kernel.py --users 200000 --repeats 5 --json out.json

Goals: every solve <= 50 ms (median) and <= 25x the one-pass limit; a non-binding segment
costs nothing extra; the certificate <= 1x the solve.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_solvers import make_problem  # noqa: E402
from results import machine, write_result  # noqa: E402

from allocator.cli.heap import keep_freed_arrays  # noqa: E402
from allocator.kernel.certificate import certify  # noqa: E402
from allocator.kernel.claims import RULES  # noqa: E402
from allocator.kernel.fast import fast_solution  # noqa: E402
from allocator.kernel.problem import AllocationProblem, Segment  # noqa: E402
from allocator.kernel.rule_certificate import certify_rule  # noqa: E402
from allocator.kernel.solve import MAX_MIN, rule_awards, user_caps  # noqa: E402

ALPHAS = (0.0, 0.5, 1.0, 2.0, 5.0)


def median_ms(f: Callable[[], object], repeats: int) -> tuple[float, object]:
    out, times = None, []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = f()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1000.0, out


def one_pass_ms(p: AllocationProblem, repeats: int) -> float:
    c = p.weights / p.weights.max()
    y = float(np.median(p.upper))
    return median_ms(lambda: float(np.clip(c * y, p.lower, p.upper).sum()), repeats)[0]


def with_segment(p: AllocationProblem, share: float | None) -> AllocationProblem:
    if share is None:
        return replace(p, segments=())
    seg = p.segments[0]
    return replace(p, segments=(Segment(seg.name, seg.members, min_share=share),))


def main() -> None:
    keep_freed_arrays()  # the memory settings of the allocator commands
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    started = machine()
    base = make_problem(args.users)
    limit = one_pass_ms(base, args.repeats * 3)
    rows = []
    cases: list[tuple[str, str, AllocationProblem]] = []
    members = base.segments[0].members
    for alpha in ALPHAS:
        with_alpha = replace(base, alpha=alpha)
        # the mid-sized losses' share without a segment: half of it does not bind
        free = fast_solution(with_segment(with_alpha, None)).vouchers
        share = float(free[members].sum()) / base.budget
        # halfway to what their caps allow: binding, and feasible
        binding = (share + float(base.upper[members].sum()) / base.budget) / 2
        for label, need in (("none", None), ("not binding", share / 2), ("binding", binding)):
            cases.append((f"alpha {alpha:g}", label, with_segment(with_alpha, need)))
    plain = with_segment(base, None)
    cases.append(("max-min (alpha = inf)", "none", replace(plain, rule=MAX_MIN)))
    for rule, (_, parameter) in RULES.items():
        value = {"base": 100.0, "threshold": 2_000.0, "minimum": 10.0}.get(str(parameter))
        cases.append((rule, "none", replace(plain, rule=rule, rule_parameter=value)))
    for name, segment, p in cases:
        if p.rule is None:
            solve_ms, sol = median_ms(lambda p=p: fast_solution(p), args.repeats)
            cert_ms, cert = median_ms(
                lambda p=p, s=sol: certify(p, s.vouchers, s.shadow_price, s.segment_prices),
                args.repeats,
            )
            certified = cert.certified  # type: ignore[attr-defined]
        else:
            solve_ms, awards = median_ms(lambda p=p: rule_awards(p), args.repeats)
            cert_ms, cert = median_ms(
                lambda a=awards, p=p: certify_rule(
                    a, a.awards, p.budget, bounds=(p.lower, user_caps(p))
                ),
                args.repeats,
            )
            certified = cert.certified  # type: ignore[attr-defined]
        rows.append(
            {
                "case": name,
                "segment": segment,
                "solve_ms": solve_ms,
                "certificate_ms": cert_ms,
                "solve_x_one_pass": solve_ms / limit,
                "certificate_x_solve": cert_ms / solve_ms,
                "certified": bool(certified),
            }
        )
        print(
            f"{name:<24}{segment:<13}{solve_ms:>8.1f} ms{solve_ms / limit:>7.1f}x"
            f"{cert_ms:>9.1f} ms{cert_ms / solve_ms:>6.2f}x  {'ok' if certified else 'FAILED'}",
            flush=True,
        )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"{args.users:,} users; one-pass NumPy limit {limit:.2f} ms; columns: solve, solve / "
        f"limit, certificate, certificate / solve; peak resident memory {peak:,.0f} MiB"
    )
    if args.json:
        write_result(
            args.json,
            name="kernel",
            command=f"python benchmarks/bench_kernel.py --repeats {args.repeats}",
            header=[
                "solver",
                "segment",
                "solve (median)",
                "solve / one pass",
                "certificate",
                "certificate / solve",
            ],
            rows=[
                [
                    r["case"],
                    r["segment"],
                    f"{r['solve_ms']:.1f} ms",
                    f"{r['solve_x_one_pass']:.1f}x",
                    f"{r['certificate_ms']:.1f} ms",
                    f"{r['certificate_x_solve']:.2f}x",
                ]
                for r in rows
            ],
            notes=[
                f"{args.users:,} users; the one-pass NumPy limit (one clip and sum) took "
                f"{limit:.2f} ms in the same run; peak resident memory {peak:,.0f} MiB. Goals: "
                "every solve <= 50 ms and <= 25x the one pass, the certificate <= 1x the solve."
            ],
            data={"users": args.users, "limit_ms": limit, "rows": rows},
            started=started,
        )


if __name__ == "__main__":
    main()
