#!/usr/bin/env python3
r"""``allocator allocate`` end to end at 2M liquidated users: wall, CPU, peak memory, by stage.

The data: the synthetic generator (``allocator generate``) at ``--users`` liquidated users
(2,000,000: about 10M events, 20M snapshot rows), generated once and kept under ``--data``.
Each run is the installed command in a fresh process, exactly as a user types it::

    allocator allocate --scenario scenarios/baseline.toml --data DATA --out TMP --force

Its stages are read from outside: the command prints one progress line on stderr as each stage
starts (``loading and validating``, ``eligibility``, ``model``, ``solve``, ``rounding``,
``writing``); this script notes the time each line arrives and the process's CPU time so far
(``/proc/PID/stat``, 10 ms ticks), so a stage's wall and CPU run from its line to the next.
``start-up`` runs from the process start to the first line (imports, reading the scenario);
``write`` from the last line to the exit (hashing the inputs, the output files, the manifest,
the summary). Peak memory is the process's own maximum resident set (``os.wait4``). One
untimed run of each version comes first (bytecode compiled, files in the page cache); the
report gives medians per stage, the wall-time minimum and the largest peak.

Usage::

    python benchmarks/bench_allocate_scale.py                    # 2M users in /tmp/allocator_bench_2m
    python benchmarks/bench_allocate_scale.py --users 200000 --data /tmp/alloc_200k --repeats 5
    git archive ebace57 | tar -x -C /tmp/before                  # an earlier commit, then
    python benchmarks/bench_allocate_scale.py --before /tmp/before   # before and after, alternating

With ``--before DIR`` the package in DIR (an earlier commit's source tree, run with the same
Python environment) runs alternately with this one, and the outputs of the two are compared
byte for byte.

Goal (issue 14): <= 10 s wall and <= 1.5 GiB peak at 2M liquidated users.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from procs import load_average, machine, write_json  # noqa: E402

ALLOCATOR = str(Path(sys.executable).with_name("allocator"))
TICKS = os.sysconf("SC_CLK_TCK")
#: The progress lines of ``allocate`` (their first word), in order, and the stage each starts.
STAGES = (
    ("loading", "load and validate"),
    ("eligibility", "eligibility"),
    ("model", "model"),
    ("solve", "solve"),
    ("rounding", "rounding, certificate, payouts"),
    ("writing", "write (hashes, files, manifest)"),
)
GOAL_S, GOAL_MIB = 10.0, 1.5 * 1024


def ensure_data(data: Path, users: int) -> None:
    if all(
        (data / f"{s}.parquet").is_file() for s in ("liquidations", "prices", "snapshot", "users")
    ):
        print(f"using existing data in {data}", flush=True)
        return
    print(f"generating {users:,} users into {data} ...", flush=True)
    t0 = time.perf_counter()
    subprocess.run([ALLOCATOR, "generate", "--users", str(users), "--out", str(data)], check=True)
    print(f"  done in {time.perf_counter() - t0:.1f} s", flush=True)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a running process so far (``/proc/PID/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime (fields 14, 15)


def one_run(data: Path, out: Path, tree: Path | None = None) -> dict:
    """One ``allocate`` in a fresh process: per-stage wall and CPU, total wall, CPU and peak.

    ``tree``: run the package in that source tree (an earlier commit) instead of this one.
    """
    cmd = [sys.executable, "-m", "allocator", "allocate",
           "--scenario", str(ROOT / "scenarios" / "baseline.toml"),
           "--data", str(data), "--out", str(out), "--force"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(tree)} if tree is not None else None
    marks: list[tuple[str, float, float]] = []
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=tree or ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    assert proc.stderr is not None
    for raw in proc.stderr:
        now = time.perf_counter() - t0
        words = raw.decode(errors="replace").lstrip("· \t").split()
        if words and words[0] in dict(STAGES):
            try:
                cpu = _cpu_seconds(proc.pid)
            except OSError:
                cpu = float("nan")
            marks.append((words[0], now, cpu))
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"allocate failed (exit {proc.returncode})")
    cpu = usage.ru_utime + usage.ru_stime
    names = dict(STAGES)
    stages = {"start-up (imports, scenario)": (marks[0][1], marks[0][2])}
    for (word, t, c), (_, t_next, c_next) in zip(marks, [*marks[1:], ("end", wall, cpu)]):
        stages[names[word]] = (t_next - t, c_next - c)
    return {"wall_s": wall, "cpu_s": cpu, "peak_mib": usage.ru_maxrss / 1024, "stages": stages}


def _summary(runs: list[dict]) -> dict:
    cpu = statistics.median(r["cpu_s"] for r in runs)
    stages = {
        stage: (
            statistics.median(r["stages"][stage][0] for r in runs),
            statistics.median(r["stages"][stage][1] for r in runs),
        )
        for stage in runs[0]["stages"]
    }
    return {
        "wall_s": statistics.median(r["wall_s"] for r in runs),
        "min_wall_s": min(r["wall_s"] for r in runs),
        "cpu_s": cpu,
        "peak_mib": max(r["peak_mib"] for r in runs),
        "stages": stages,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=2_000_000)
    parser.add_argument("--data", type=Path, default=Path("/tmp/allocator_bench_2m"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--before", type=Path, default=None,
        help="source tree of an earlier commit (git archive COMMIT | tar -x -C DIR), run "
        "alternately with this one",
    )  # fmt: skip
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    started = machine()
    print(f"load average at start: {started['load_average']}", flush=True)
    ensure_data(args.data, args.users)
    versions = {"after": None} if args.before is None else {"before": args.before, "after": None}
    runs: dict[str, list[dict]] = {v: [] for v in versions}
    with tempfile.TemporaryDirectory(prefix="bench_allocate_") as tmp:
        for version, tree in versions.items():  # untimed: bytecode compiled, files cached
            one_run(args.data, Path(tmp) / version, tree)
        for r in range(args.repeats):
            # alternate the order, so that load from other processes hits both alike
            order = list(versions) if r % 2 == 0 else list(reversed(versions))
            for version in order:
                run = one_run(args.data, Path(tmp) / version, versions[version])
                runs[version].append(run)
                print(
                    f"run {r + 1} {version:<6}: {run['wall_s']:6.2f} s wall, "
                    f"{run['cpu_s']:6.2f} s CPU, peak {run['peak_mib']:,.0f} MiB "
                    f"(load average {load_average()})",
                    flush=True,
                )
        manifest = json.loads((Path(tmp) / "after" / "manifest.json").read_text())
        if args.before is not None:
            same = all(
                (Path(tmp) / "before" / f).read_bytes() == (Path(tmp) / "after" / f).read_bytes()
                for f in ("allocations.parquet", "excluded.parquet", "payouts.csv")
            )
            print(f"before and after wrote byte-identical outputs: {'yes' if same else 'NO'}")
    summary = {v: _summary(runs[v]) for v in versions}
    print()
    print(
        f"allocator allocate, baseline, {manifest['counts']['liquidated']:,} liquidated users "
        f"({manifest['counts']['eligible']:,} eligible), {args.repeats} fresh processes each "
        f"(medians; peak: the largest):"
    )
    head = "".join(f"{v + ' wall':>14}{v + ' CPU':>13}" for v in versions)
    print(f"  {'stage':<34}{head}")
    rows = []
    for stage in summary["after"]["stages"]:
        cells = [f"{summary[v]['stages'][stage][k]:.2f} s" for v in versions for k in (0, 1)]
        rows.append([stage, *cells])
        print(
            f"  {stage:<34}"
            + "".join(f"{c:>14}" if i % 2 == 0 else f"{c:>13}" for i, c in enumerate(cells))
        )
    total = [f"{summary[v][k]:.2f} s" for v in versions for k in ("wall_s", "cpu_s")]
    rows.append(["total", *total])
    print(
        f"  {'total':<34}"
        + "".join(f"{c:>14}" if i % 2 == 0 else f"{c:>13}" for i, c in enumerate(total))
    )
    for v in versions:
        print(
            f"  {v}: wall {summary[v]['wall_s']:.2f} s (min {summary[v]['min_wall_s']:.2f} s; "
            f"goal <= {GOAL_S:g} s), CPU {summary[v]['cpu_s']:.2f} s, peak "
            f"{summary[v]['peak_mib']:,.0f} MiB = {summary[v]['peak_mib'] / 1024:.2f} GiB (goal <= 1.5 GiB)"
        )
    if args.before is not None:
        b, a = summary["before"], summary["after"]
        print(
            f"  after / before: wall {a['wall_s'] / b['wall_s']:.2f}, CPU {a['cpu_s'] / b['cpu_s']:.2f}, "
            f"peak {a['peak_mib'] / b['peak_mib']:.2f}"
        )
    print(f"load average at the end: {load_average()}")
    if args.json:
        write_json(
            args.json,
            name="allocate_scale",
            command=f"python benchmarks/bench_allocate_scale.py --users {args.users} "
            f"--repeats {args.repeats}" + (f" --before {args.before}" if args.before else ""),
            header=["stage", *(f"{v} {k}" for v in versions for k in ("wall", "CPU"))],
            rows=rows,
            data={"runs": runs, "summary": summary, "users": args.users},
            started=started,
        )


if __name__ == "__main__":
    main()
