#!/usr/bin/env python3
r"""Fast exact solver against cvxpy + Clarabel, and a sweep of 100 settings on a million users.

The problem: lognormal liquidation losses above USD 50, weights ``loss**a``, floor USD 4,
cap ``min(6000, 0.5 * loss)``, a budget of 30% of the caps' total spent exactly, and a minimum
share for mid-sized losses (30th-60th percentile) that binds.

Each (size, method) case runs in its own subprocess so that its peak resident memory is its
own; the fast case also reports the tracemalloc peak of the solve alone. Fast times are
medians over repeats; cvxpy is run once per size (build + compile + solve + polish +
certificate, and Clarabel's own solve time).

Usage::

    python benchmarks/bench_solvers.py                  # 10k, 100k, 1M; cvxpy at 1M takes minutes
    python benchmarks/bench_solvers.py --skip-cvxpy-1m  # everything but cvxpy at 1M
    python benchmarks/bench_solvers.py --sizes 10000 --no-sweep --json out.json

The sweep solves (and, the second time, certifies) every pair of ten exponents ``a`` and ten
alphas with the segment; its total includes computing each exponent's weights once.

Goals: fast <= 0.1 s median at 1M users; >= 1000x faster than cvxpy + Clarabel at 1M with the
objective equal to 1e-6; 100 settings on 1M users in < 10 s; fast peak memory < 1 GiB at 1M.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from results import machine, write_result  # noqa: E402

from allocator.kernel.problem import AllocationProblem, ScalarBounds, Segment  # noqa: E402

SWEEP_ALPHAS = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0, 20.0)
SWEEP_EXPONENTS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5)


def losses(n: int, seed: int = 2025) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 50.0 + rng.lognormal(6.5, 1.7, n)


def make_problem(
    n: int, alpha: float = 1.0, exponent: float = 1.0, loss: np.ndarray | None = None
) -> AllocationProblem:
    """The benchmark problem at ``n`` users (deterministic)."""
    loss = losses(n) if loss is None else loss
    sb = ScalarBounds(floor=4.0, cap=6000.0, coverage_cap=0.5, loss=loss)
    lower, upper = sb.arrays()
    budget = 0.3 * float(upper.sum())
    q30, q60 = np.quantile(loss, [0.3, 0.6])
    mid = (loss >= q30) & (loss <= q60)
    weights = np.exp(exponent * np.log(loss)) if exponent != 1.0 else loss
    return AllocationProblem(
        weights=weights,
        lower=lower,
        upper=upper,
        budget=budget,
        alpha=alpha,
        exhaust=True,
        # without it mid-sized losses get about 7% of the budget: 10% binds
        segments=(Segment("mid_losses", mid, min_share=0.10),),
        scalar_bounds=sb,
    )


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # kB on Linux


# ----------------------------------------------------------------------------------------------
# workers (run in a subprocess each)
# ----------------------------------------------------------------------------------------------


def worker_fast(n: int, repeats: int, out: Path) -> dict[str, object]:
    from allocator.kernel.fast import fast_solution
    from allocator.kernel.solve import solve

    p = make_problem(n)
    raw_times, full_times = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        sol = fast_solution(p)
        raw_times.append(time.perf_counter() - t0)
    for _ in range(max(1, repeats // 2)):
        t0 = time.perf_counter()
        alloc = solve(p, method="fast")
        full_times.append(time.perf_counter() - t0)
    rss_after = _peak_rss_mib()
    tracemalloc.start()
    fast_solution(p)
    traced_peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    np.save(out, alloc.vouchers)
    return {
        "method": "fast",
        "n": n,
        "seconds_median": float(np.median(raw_times)),
        "seconds_min": float(np.min(raw_times)),
        "seconds_certified_median": float(np.median(full_times)),
        "objective": alloc.objective,
        "shadow_price": alloc.shadow_price,
        "certified": alloc.certificate.certified,
        "segment_binding": alloc.segment_prices["mid_losses"][0] > 0,
        "peak_rss_mib": rss_after,
        "solve_traced_peak_mib": traced_peak,
        "vouchers_sum_error_usd": float(sol.vouchers.sum() - p.budget),
    }


def worker_cvxpy(n: int, out: Path) -> dict[str, object]:
    from allocator.kernel.certificate import objective_value
    from allocator.kernel.model import FairnessModel

    p = make_problem(n)
    t0 = time.perf_counter()
    model = FairnessModel(p)
    build = time.perf_counter() - t0
    t1 = time.perf_counter()
    alloc = model.solve()
    total = time.perf_counter() - t0
    used = model.fallback or model
    np.save(out, alloc.vouchers)
    np.save(out.with_name(out.stem + "_raw.npy"), model.raw.vouchers)
    return {
        "method": alloc.method,
        "n": n,
        "seconds": total,
        "seconds_build": build,
        "seconds_solve_call": time.perf_counter() - t1,
        "seconds_clarabel": float(used.cvx_problem.solver_stats.solve_time or 0.0),
        "iterations": used.cvx_problem.solver_stats.num_iters,
        "status": alloc.status,
        "fallback": None
        if model.fallback is None
        else f"{model.fallback.scaling}/{model.fallback.normalise}",
        "polish_iterations": None if model.polished is None else model.polished.iterations,
        "objective": alloc.objective,
        "objective_raw": objective_value(p, model.raw.vouchers),
        "shadow_price": alloc.shadow_price,
        "shadow_price_raw": model.raw.shadow_price,
        "certified": alloc.certificate.certified,
        "peak_rss_mib": _peak_rss_mib(),
    }


def run_worker(kind: str, n: int, repeats: int, tmp: Path) -> dict[str, object]:
    out = tmp / f"{kind}_{n}.npy"
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        kind,
        "--n",
        str(n),
        "--repeats",
        str(repeats),
        "--out",
        str(out),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {kind} n={n} failed:\n{proc.stderr}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["_vouchers"] = str(out)
    return result


# ----------------------------------------------------------------------------------------------
# sweep
# ----------------------------------------------------------------------------------------------


def sweep(n: int, certify_each: bool) -> dict[str, object]:
    from allocator.kernel.certificate import certify
    from allocator.kernel.fast import fast_solution

    loss = losses(n)
    log_loss = np.log(loss)
    base = make_problem(n, loss=loss)
    per: list[float] = []
    failures = 0
    t_all = time.perf_counter()
    for a in SWEEP_EXPONENTS:
        # the weights depend on the exponent only: computed once for its ten alphas, as a data
        # session's memo keeps them (their time counts in the total, not in a setting's)
        w = np.exp(a * log_loss)
        for alpha in SWEEP_ALPHAS:
            t0 = time.perf_counter()
            p = AllocationProblem(
                w,
                base.lower,
                base.upper,
                base.budget,
                alpha,
                True,
                base.segments,
                base.scalar_bounds,
            )
            sol = fast_solution(p)
            if certify_each:
                cert = certify(p, sol.vouchers, sol.shadow_price, sol.segment_prices)
                failures += not cert.certified
            per.append(time.perf_counter() - t0)
    return {
        "n": n,
        "settings": len(per),
        "certified_each": certify_each,
        "not_certified": failures,
        "seconds_total": time.perf_counter() - t_all,
        "seconds_median": float(np.median(per)),
        "seconds_max": float(np.max(per)),
    }


# ----------------------------------------------------------------------------------------------
# main
# ----------------------------------------------------------------------------------------------


def _fmt(x: object, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument(
        "--skip-cvxpy-1m", action="store_true", help="do not run cvxpy at 1M users (minutes)"
    )
    ap.add_argument(
        "--repeats", type=int, default=0, help="fast repeats (default: 21 / 11 / 7 by size)"
    )
    ap.add_argument("--no-sweep", action="store_true", help="skip the 100-setting sweep")
    ap.add_argument("--sweep-n", type=int, default=1_000_000)
    ap.add_argument(
        "--json", type=Path, default=None, help="also write the results here (atomically)"
    )
    ap.add_argument(
        "--worker", choices=["fast", "cvxpy", "sweep", "sweep-certified"], help=argparse.SUPPRESS
    )
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args, unknown = ap.parse_known_args(argv)
    if unknown:
        print(f"bench_solvers: ignoring unknown arguments {unknown}", file=sys.stderr)

    if args.worker:
        from allocator.cli.heap import keep_freed_arrays

        keep_freed_arrays()  # the memory settings of the allocator commands
        if args.worker == "fast":
            res = worker_fast(args.n, max(args.repeats, 1), args.out)
        elif args.worker == "cvxpy":
            res = worker_cvxpy(args.n, args.out)
        else:
            res = sweep(args.n, args.worker == "sweep-certified")
        print(json.dumps(res))
        return 0

    started = machine()
    results: dict[str, list[Any]] = {"cases": [], "sweeps": []}
    print(
        f"{'users':>9} {'fast med s':>10} {'fast+cert s':>11} {'cvxpy s':>9} {'clarabel s':>10} "
        f"{'ratio':>8} {'obj rel gap':>11} {'max |dv| USD':>12} {'fast MiB':>9} {'(solve)':>8} "
        f"{'cvxpy MiB':>9}"
    )
    with tempfile.TemporaryDirectory(prefix="bench_solvers_") as tmp_name:
        tmp = Path(tmp_name)
        for n in args.sizes:
            repeats = args.repeats or (21 if n <= 10_000 else 11 if n <= 100_000 else 7)
            fast = run_worker("fast", n, repeats, tmp)
            cvx = None
            if not (args.skip_cvxpy_1m and n >= 1_000_000):
                cvx = run_worker("cvxpy", n, 1, tmp)
            row: dict[str, object] = {"n": n, "fast": fast, "cvxpy": cvx}
            gap = dv = ratio = None
            if cvx is not None:
                vf = np.load(fast["_vouchers"])
                vc = np.load(cvx["_vouchers"])
                vr = np.load(str(cvx["_vouchers"]).replace(".npy", "_raw.npy"))
                gap = abs(fast["objective"] - cvx["objective"]) / abs(fast["objective"])
                dv = float(np.max(np.abs(vf - vc)))
                ratio = cvx["seconds"] / fast["seconds_median"]
                row.update(
                    objective_rel_gap=gap,
                    max_voucher_diff_usd=dv,
                    ratio=ratio,
                    ratio_certified=cvx["seconds"] / fast["seconds_certified_median"],
                    raw_objective_rel_gap=abs(fast["objective"] - cvx["objective_raw"])
                    / abs(fast["objective"]),
                    raw_max_voucher_diff_usd=float(np.max(np.abs(vf - vr))),
                )
            for side in ("fast", "cvxpy"):
                if row[side] is not None:
                    row[side].pop("_vouchers", None)
            results["cases"].append(row)
            print(
                f"{n:>9,} {fast['seconds_median']:>10.4f} "
                f"{fast['seconds_certified_median']:>11.4f} "
                f"{_fmt(cvx and cvx['seconds'], '9.2f'):>9} "
                f"{_fmt(cvx and cvx['seconds_clarabel'], '10.2f'):>10} "
                f"{_fmt(ratio, '8.0f'):>8} {_fmt(gap, '11.2e'):>11} {_fmt(dv, '12.2e'):>12} "
                f"{fast['peak_rss_mib']:>9.0f} {fast['solve_traced_peak_mib']:>8.0f} "
                f"{_fmt(cvx and cvx['peak_rss_mib'], '9.0f'):>9}",
                flush=True,
            )
            if cvx is not None:
                print(
                    f"{'':>9}   cvxpy: status {cvx['status']}, {cvx['iterations']} iterations, "
                    f"fallback {cvx['fallback']}, polish {cvx['polish_iterations']} steps; "
                    f"before polish: objective gap {row['raw_objective_rel_gap']:.2e}, "
                    f"max |dv| {row['raw_max_voucher_diff_usd']:.3g} USD; certified ratio "
                    f"{row['ratio_certified']:.0f}",
                    flush=True,
                )
    if not args.no_sweep:
        for certify_each in (False, True):
            kind = "sweep-certified" if certify_each else "sweep"
            with tempfile.TemporaryDirectory(prefix="bench_solvers_") as tmp_name:
                sw = run_worker(kind, args.sweep_n, 1, Path(tmp_name))
            sw.pop("_vouchers", None)
            results["sweeps"].append(sw)
            label = "fast solve + certificate" if certify_each else "fast solve"
            print(
                f"sweep {sw['settings']} settings ({len(SWEEP_ALPHAS)} alphas x "
                f"{len(SWEEP_EXPONENTS)} loss exponents) on {sw['n']:,} users, {label}: "
                f"{sw['seconds_total']:.2f} s total, median "
                f"{sw['seconds_median']:.3f} s, max {sw['seconds_max']:.3f} s"
                + (f", {sw['not_certified']} not certified" if certify_each else ""),
                flush=True,
            )
    if args.json is not None:
        write_result(
            args.json,
            name="solvers",
            command="python benchmarks/bench_solvers.py"
            + (" --skip-cvxpy-1m" if args.skip_cvxpy_1m else "")
            + (" --no-sweep" if args.no_sweep else ""),
            header=[
                "users",
                "fast (median)",
                "fast + certificate",
                "cvxpy + Clarabel",
                "speed-up",
                "objective gap",
                "max voucher difference",
                "peak memory fast / cvxpy",
            ],
            rows=[_row(case) for case in results["cases"]],
            notes=[
                f"Sweep of {sw['settings']} settings ({len(SWEEP_ALPHAS)} alphas x "
                f"{len(SWEEP_EXPONENTS)} loss exponents, the binding segment) on {sw['n']:,} "
                f"users, {'with a certificate at every point' if sw.get('certified_each') else 'fast solve'}"
                f": {sw['seconds_total']:.1f} s."
                for sw in results["sweeps"]
            ],
            data=results,
            started=started,
        )
    return 0


def _row(case: dict) -> list[str]:
    fast, cvx = case["fast"], case["cvxpy"]

    def ms(x: float) -> str:
        return f"{x * 1000:.1f} ms" if x < 1 else f"{x:.2f} s"

    return [
        f"{case['n']:,}",
        ms(fast["seconds_median"]),
        ms(fast["seconds_certified_median"]),
        "-" if cvx is None else f"{cvx['seconds']:.1f} s",
        "-" if cvx is None else f"{case['ratio']:,.0f}x",
        "-" if cvx is None else f"{case['objective_rel_gap']:.0e}",
        "-" if cvx is None else f"{case['max_voucher_diff_usd']:.0e} USD",
        f"{fast['peak_rss_mib']:,.0f} / "
        + ("-" if cvx is None else f"{cvx['peak_rss_mib']:,.0f}")
        + " MiB",
    ]


if __name__ == "__main__":
    sys.exit(main())
