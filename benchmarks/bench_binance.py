#!/usr/bin/env python3
r"""Eligibility at an exchange's size, streaming: 300M snapshot rows, 50M events, 5M users.

The data comes from :mod:`binance_data` (a cheap chunked generator; the synthetic generator of
the package holds every table in memory): one snapshot row per account (``--accounts``),
``--events`` liquidation events of ``--liquidated`` users, generated once under ``--data``
(about 5.5 GB of parquet at full size; the script checks the free disk space first and says
how much it needs).

Each measurement is a fresh process (peak memory is its own ``ru_maxrss``) running
:func:`allocator.vouchers.eligibility.user_table` with ``engine="streaming"`` (the pass over
the events, then the users and snapshot filtered to the liquidated users and joined), then
:func:`~allocator.vouchers.eligibility.decide_users` (every per-user rule, the exclusion
details). ``--checks`` (the default) folds the input validation into the pass, as
``allocator allocate`` does; ``--no-checks`` measures the pass alone. The worker runs with the
``allocator`` command's jemalloc settings (``allocator.cli.POLARS_MALLOC_CONF``). A thread samples the
resident memory every 5 ms and every Polars ``collect`` is reported with its time, the peak
during it and the size of what it returned, which shows where the memory goes.

Usage::

    python benchmarks/bench_binance.py                       # full size (minutes; ~5.5 GB of disk)
    python benchmarks/bench_binance.py --accounts 30000000 --events 5000000 --liquidated 500000 \
        --data /tmp/allocator_binance_small

Goal (issue 14): the pass through eligibility within 8 GiB peak on a 2-core, 24 GiB machine.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from procs import load_average, machine, write_json  # noqa: E402

from allocator.cli import POLARS_MALLOC_CONF  # noqa: E402

GOAL_GIB = 8.0
#: Parquet bytes per row of the generated tables (measured), to check the disk before writing.
BYTES_PER_ACCOUNT, BYTES_PER_EVENT = 10.5, 47.0


def _rss_mib() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def worker(data: Path, checks: bool, out: Path) -> None:
    """One measured run in this process; the figures go to ``out`` as JSON."""
    import inspect

    import polars as pl

    from allocator.data.inputs import load_inputs
    from allocator.settings.models import EligibilityRules
    from allocator.vouchers.eligibility import decide_users, user_table

    peak = [0.0]

    def sample() -> None:
        while True:
            peak[0] = max(peak[0], _rss_mib())
            time.sleep(0.005)

    threading.Thread(target=sample, daemon=True).start()
    collects: list[dict] = []
    original = pl.LazyFrame.collect

    def collect(self, *args, **kwargs):
        caller = inspect.stack()[1]
        before, peak[0] = _rss_mib(), _rss_mib()
        t0 = time.perf_counter()
        result = original(self, *args, **kwargs)
        collects.append(
            {
                "where": f"{caller.function} ({Path(caller.filename).name}:{caller.lineno})",
                "engine": str(kwargs.get("engine", "auto")),
                "seconds": time.perf_counter() - t0,
                "rss_before_mib": before,
                "peak_mib": peak[0],
                "rss_after_mib": _rss_mib(),
                "result_mib": result.estimated_size() / 2**20
                if isinstance(result, pl.DataFrame)
                else 0.0,
            }
        )
        return result

    pl.LazyFrame.collect = collect  # type: ignore[method-assign]
    rules = EligibilityRules()
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    inputs = load_inputs(data, validate="folded" if checks else False)
    table = user_table(
        inputs.events, inputs.prices, inputs.snapshot, inputs.users, rules,
        source={k: str(v) for k, v in inputs.paths.items()},
        engine="streaming", checks=inputs.checks,
    )  # fmt: skip
    t1 = time.perf_counter()
    pass_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = decide_users(table, rules)
    t2 = time.perf_counter()
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    out.write_text(
        json.dumps(
            {
                "user_table_s": t1 - t0,
                "decide_s": t2 - t1,
                "cpu_s": cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime,
                "user_table_peak_mib": pass_peak,
                "peak_mib": cpu1.ru_maxrss / 1024,
                "collects": collects,
                "users": table.table.height,
                "user_table_mib": table.table.estimated_size() / 2**20,
                "eligible": result.eligible.height,
                "excluded": result.excluded.height,
                "events": table.rows,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--accounts", type=int, default=300_000_000)
    parser.add_argument("--events", type=int, default=50_000_000)
    parser.add_argument("--liquidated", type=int, default=5_000_000)
    parser.add_argument("--data", type=Path, default=Path("/tmp/allocator_binance"))
    parser.add_argument("--checks", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.data, args.checks, args.result)
        return

    started = machine()
    print(f"load average at start: {started['load_average']}", flush=True)
    need = args.accounts * BYTES_PER_ACCOUNT + args.events * BYTES_PER_EVENT
    sizes = args.data / "sizes.json"
    if not sizes.is_file():
        args.data.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(args.data).free
        print(
            f"disk: {free / 1e9:.1f} GB free in {args.data}, the data needs about {need / 1e9:.1f} GB"
        )
        if free < 1.2 * need:
            raise SystemExit(
                "not enough disk for these sizes: give smaller --accounts/--events, or a --data "
                "folder on a larger disk"
            )
    import binance_data

    t0 = time.perf_counter()
    binance_data.ensure(
        args.data, accounts=args.accounts, events=args.events, liquidated=args.liquidated
    )
    print(f"data ready in {time.perf_counter() - t0:.0f} s", flush=True)
    on_disk = {p.name: p.stat().st_size for p in sorted(args.data.glob("*.parquet"))}

    runs = []
    for r in range(args.repeats):
        result = args.data / f".bench_result_{os.getpid()}.json"
        cmd = [sys.executable, __file__, "--worker", "--data", str(args.data),
               "--result", str(result), "--checks" if args.checks else "--no-checks"]  # fmt: skip
        # the allocator command's allocator settings (allocator.cli), which the worker, importing
        # Polars directly, would otherwise not have
        env = {"_RJEM_MALLOC_CONF": POLARS_MALLOC_CONF, **os.environ}
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, env=env)
        run = json.loads(result.read_text())
        result.unlink()
        run["process_s"] = time.perf_counter() - t0
        runs.append(run)
        print(
            f"run {r + 1}: user_table {run['user_table_s']:.1f} s (peak {run['user_table_peak_mib'] / 1024:.2f} GiB), "
            f"decide {run['decide_s']:.1f} s, peak {run['peak_mib'] / 1024:.2f} GiB, "
            f"CPU {run['cpu_s']:.0f} s (load average {load_average()})",
            flush=True,
        )
    best = min(runs, key=lambda r: r["user_table_s"])
    peak = max(r["peak_mib"] for r in runs)
    print()
    print(
        f"eligibility at {args.accounts:,} snapshot rows, {best['events']:,} events, "
        f"{best['users']:,} liquidated users ({best['eligible']:,} eligible), "
        f"input checks {'folded in' if args.checks else 'off'}, streaming engine:"
    )
    print("  files: " + ", ".join(f"{k} {v / 1e9:.2f} GB" for k, v in on_disk.items()))
    print(
        f"  user_table {best['user_table_s']:.1f} s, decide {best['decide_s']:.1f} s, "
        f"CPU {best['cpu_s']:.0f} s; peak {peak / 1024:.2f} GiB (goal <= {GOAL_GIB:g} GiB); "
        f"the per-user table {best['user_table_mib']:,.0f} MiB "
        f"({best['user_table_mib'] * 2**20 / max(best['users'], 1):.0f} bytes per user)"
    )
    print(
        f"  {'collect':<44}{'engine':>10}{'s':>8}{'RSS before':>12}{'peak':>9}{'after':>9}{'result':>9}"
    )
    for c in best["collects"]:
        if c["seconds"] < 0.05:
            continue
        print(
            f"  {c['where'][:44]:<44}{c['engine']:>10}{c['seconds']:>8.1f}"
            f"{c['rss_before_mib']:>10.0f} M{c['peak_mib']:>7.0f} M{c['rss_after_mib']:>7.0f} M"
            f"{c['result_mib']:>7.0f} M"
        )
    print(f"load average at the end: {load_average()}")
    if args.json:
        write_json(
            args.json,
            name="binance",
            command="python benchmarks/bench_binance.py "
            f"--accounts {args.accounts} --events {args.events} --liquidated {args.liquidated}"
            + ("" if args.checks else " --no-checks"),
            header=["stage", "seconds", "peak"],
            rows=[
                [
                    "user_table (streaming)",
                    f"{best['user_table_s']:.1f} s",
                    f"{best['user_table_peak_mib'] / 1024:.2f} GiB",
                ],
                ["decide_users", f"{best['decide_s']:.1f} s", f"{peak / 1024:.2f} GiB"],
            ],
            data={"runs": runs, "files": on_disk},
            started=started,
        )


if __name__ == "__main__":
    main()
