#!/usr/bin/env python3
r"""Start-up and the default job: ``allocator --help``, import times, and ``allocate`` of the
baseline against one Polars pass over the same inputs, side by side in one run.

Every figure is a fresh process (nothing warm but the operating system's file cache):

- ``python -m allocator --help`` and ``allocator --help`` (the installed script), ``--repeats``
  times each: median and minimum wall time (``allocator --version``: the command has no such
  option, which the script notes);
- every command's ``--help`` (``--help-repeats`` each): the slowest command's median;
- the import of the allocate command's path (``allocator.cli.cmd_allocate`` and everything
  ``allocate`` imports to run: ``allocator.vouchers.pipeline``), with the share of the largest
  third-party packages (``python -X importtime``);
- the default job, as ``python3 tasks.py run`` runs it: ``allocator allocate --scenario
  scenarios/baseline.toml --force`` on the built-in data, into a temporary directory; wall, CPU,
  peak memory, and its stages as the manifest's ``timings_s`` records them, the rest of the wall
  time being start-up, hashing and the manifest;
- one Polars pass over the same inputs in a fresh process: read the events, group them by user
  (count, loss and fee sums, first and last time), join the snapshot and the users, sort by user
  and write the result as parquet. It is the floor of any job that reads these inputs once;
- the same pass with what a job that trusts no input cannot leave out (:data:`CHECKED_PASS`):
  the allocate command's modules imported and every row of the three tables checked by the
  job's own row checks. What the default job does beyond it (eligibility rules, prices, exact
  sums, the solve, rounding, certificates, payout keys, five files and a manifest) is the
  difference between the two.

The job and the pass alternate round by round, so that load from other processes hits both
alike; the ratio is of their medians.

Usage::

    python benchmarks/bench_startup.py                    # the built-in data (200,000 users)
    python benchmarks/bench_startup.py --repeats 20 --rounds 7 --json /tmp/startup.json
    git archive ebace57 | tar -x -C /tmp/before           # an earlier commit, then
    python benchmarks/bench_startup.py --before /tmp/before   # before and after in one run

With ``--before DIR`` every figure is measured for the package in DIR too (an earlier commit's
source tree, run as ``python -m allocator`` with the same Python environment), the jobs of the
two versions and the Polars pass taking turns. Each command is run once untimed first (bytecode
compiled, files in the page cache).

Goals (issue 14): ``allocator --help`` <= 0.5 s; the default job <= 2x the Polars pass.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from procs import load_average, machine, median, run_measured, write_json  # noqa: E402

PY = sys.executable
ALLOCATOR = str(Path(PY).with_name("allocator"))

#: One pass over the inputs: the floor of any job reading them once (see the module docstring).
POLARS_PASS = """
import sys
import polars as pl
data, out = sys.argv[1], sys.argv[2]
per_user = pl.scan_parquet(f"{data}/liquidations.parquet").group_by("user_id").agg(
    pl.len().alias("n_events"),
    pl.col("realised_loss").sum(),
    pl.col("liq_fee").sum(),
    pl.col("ts").min().alias("first_ts"),
    pl.col("ts").max().alias("last_ts"),
)
(
    per_user.join(pl.scan_parquet(f"{data}/snapshot.parquet"), on="user_id", how="left")
    .join(pl.scan_parquet(f"{data}/users.parquet"), on="user_id", how="left")
    .sort("user_id")
    .collect()
    .write_parquet(out)
)
"""

#: The modules the allocate command imports to run (the command module and the pipeline).
ALLOCATE_PATH = "allocator.cli.cmd_allocate, allocator.vouchers.pipeline"

#: The same pass with what any job that trusts no input must add to it, and nothing else: the
#: allocate command's modules imported, and every row of the events, users and snapshot checked
#: by the job's own row checks (their flags summed in the same collect). No rule, price, exact
#: sum, solve, rounding, payout key or file but the one parquet.
CHECKED_PASS = f"""
import sys
import {ALLOCATE_PATH}
import polars as pl
from allocator import names as N
from allocator.data.inputs import load_inputs
data, out = sys.argv[1], sys.argv[2]
checks = load_inputs(data, validate="folded").checks
flag = checks.flag
events = pl.scan_parquet(f"{{data}}/liquidations.parquet").with_columns(flag(N.EVENTS_FILE))
per_user = events.group_by("user_id").agg(
    pl.len().alias("n_events"),
    pl.col("realised_loss").sum(),
    pl.col("liq_fee").sum(),
    pl.col("ts").min().alias("first_ts"),
    pl.col("ts").max().alias("last_ts"),
    pl.col("__input_problems").sum().alias("events_flagged"),
)
snapshot = pl.scan_parquet(f"{{data}}/snapshot.parquet").with_columns(flag(N.SNAPSHOT_FILE))
users = pl.scan_parquet(f"{{data}}/users.parquet").with_columns(flag(N.USERS_FILE))
joined, flagged = pl.collect_all([
    per_user.join(snapshot.drop("__input_problems"), on="user_id", how="left")
    .join(users.drop("__input_problems"), on="user_id", how="left")
    .sort("user_id"),
    pl.concat([snapshot.select(pl.col("__input_problems").sum()),
               users.select(pl.col("__input_problems").sum())]),
])
assert int(joined["events_flagged"].sum()) + int(flagged.sum().item()) == 0
joined.write_parquet(out)
"""
IMPORT_TIMER = f"""
import time
t0 = time.perf_counter()
import {ALLOCATE_PATH}
print(time.perf_counter() - t0)
"""
#: Third-party packages whose import cost is reported on the allocate path.
PACKAGES = ("typer", "rich", "numpy", "polars", "pydantic", "scipy", "cvxpy", "cryptography")


def builtin_data() -> Path:
    out = run_measured(
        [
            PY,
            "-c",
            "from allocator.data.synthetic import default_data_dir; print(default_data_dir())",
        ]
    )
    return Path(out.stdout.strip().splitlines()[-1])


def commands() -> list[str]:
    """The top-level commands, as ``allocator --help`` lists them."""
    out = run_measured([PY, "-c", "import typer.main; from allocator.cli import app; "
                        "print(' '.join(typer.main.get_command(app).list_commands(None)))"])  # fmt: skip
    return out.stdout.split()


def package_import_seconds(env: dict[str, str] | None, cwd: Path) -> dict[str, float]:
    """Cumulative import time of each of :data:`PACKAGES` where the allocate path first imports
    it (``-X importtime``; a package another one imported first counts there)."""
    cmd = [PY, "-X", "importtime", "-c", f"import {ALLOCATE_PATH}"]
    err = run_measured(cmd, env=env, cwd=cwd).stderr
    out: dict[str, float] = {}
    for line in err.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \|(\s*)(\S+)", line)
        if m and m.group(3) in PACKAGES and m.group(3) not in out:
            out[m.group(3)] = int(m.group(1)) / 1e6
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=10, help="fresh processes per --help")
    parser.add_argument("--help-repeats", type=int, default=2, help="per command's --help")
    parser.add_argument("--rounds", type=int, default=5, help="default job / Polars pass rounds")
    parser.add_argument(
        "--before", type=Path, default=None,
        help="source tree of an earlier commit (git archive COMMIT | tar -x -C DIR), measured "
        "the same way, alternately with this one",
    )  # fmt: skip
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    started = machine()
    print(f"load average at start: {started['load_average']}", flush=True)
    data = builtin_data()
    # Every command runs once untimed so that the timed runs load compiled bytecode, as they
    # would on any machine after the first run; an environment that forbids writing it
    # (PYTHONDONTWRITEBYTECODE, set on some build machines) would have every run compile the
    # package's own modules again (about 0.07 s of the default job).
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    # each version: the environment that runs it, python -m allocator from that tree (the
    # current directory comes first on sys.path, so it is the tree too)
    versions: dict[str, dict[str, str] | None] = {"after": None}
    if args.before is not None:
        versions = {"before": {**os.environ, "PYTHONPATH": str(args.before)}, "after": None}

    def cwd(env: dict[str, str] | None) -> Path:
        return Path(env["PYTHONPATH"]) if env is not None else ROOT

    figures: dict[str, dict[str, object]] = {v: {} for v in versions}
    rows: list[list[str]] = []

    def timed(cmd: list[str], n: int, env: dict[str, str] | None) -> list[float]:
        run_measured(cmd, env=env, cwd=cwd(env))  # untimed: bytecode compiled
        return [run_measured(cmd, env=env, cwd=cwd(env)).wall_s for _ in range(n)]

    def row(label: str, key: str, goal: str = "") -> None:
        cells = []
        for v in versions:
            times = figures[v][key]
            assert isinstance(times, list)
            cells.append(f"{median(times):.3f} s (min {min(times):.3f})")
        rows.append([label, *cells, goal])
        print(f"{label:<40}" + "".join(f"{c:>26}" for c in cells) + f"  {goal}", flush=True)

    print(f"{'':<40}" + "".join(f"{v:>26}" for v in versions), flush=True)
    for v, env in versions.items():
        figures[v]["python -m allocator --help"] = timed(
            [PY, "-m", "allocator", "--help"], args.repeats, env
        )
        figures[v]["import of the allocate path"] = [
            float(run_measured([PY, "-c", IMPORT_TIMER], env=env, cwd=cwd(env)).stdout)
            for _ in range(args.repeats)
        ]
        figures[v]["packages"] = package_import_seconds(env, cwd(env))
        per_command = {
            c: median(timed([PY, "-m", "allocator", c, "--help"], args.help_repeats, env))
            for c in commands()
        }
        figures[v]["command --help"] = per_command
    row("python -m allocator --help (median)", "python -m allocator --help", "<= 0.5 s")
    figures["after"]["allocator --help"] = timed([ALLOCATOR, "--help"], args.repeats, None)
    times = figures["after"]["allocator --help"]
    assert isinstance(times, list)
    print(
        f"{'allocator --help (installed script)':<40}{median(times):>12.3f} s (min {min(times):.3f}), after only"
    )
    rows.append(["allocator --help (installed script)", *([""] * (len(versions) - 1)),
                 f"{median(times):.3f} s (min {min(times):.3f})", "<= 0.5 s"])  # fmt: skip
    version_check = run_measured([ALLOCATOR, "--version"], check=False)
    if version_check.returncode != 0:
        print("allocator --version: no such option (not measured)")
    slowest_cells = []
    for v in versions:
        per = figures[v]["command --help"]
        assert isinstance(per, dict)
        slowest = max(per, key=per.__getitem__)
        print(
            f"each command's --help, {v}: median {median(list(per.values())):.3f} s, slowest {slowest} {per[slowest]:.3f} s"
        )
        slowest_cells.append(f"{per[slowest]:.3f} s ({slowest})")
    rows.append(["slowest command's --help (median)", *slowest_cells, ""])
    row("import of the allocate path", "import of the allocate path")
    for v in versions:
        packages = figures[v]["packages"]
        assert isinstance(packages, dict)
        shares = ", ".join(
            f"{k} {x:.2f} s" for k, x in sorted(packages.items(), key=lambda kv: -kv[1])
        )
        print(f"  {v}: {shares}")

    jobs: dict[str, list] = {v: [] for v in versions}
    passes, checked = [], []
    stages: dict[str, list[dict]] = {v: [] for v in versions}
    with tempfile.TemporaryDirectory(prefix="bench_startup_") as tmp:

        def job(v: str) -> list[str]:
            return [PY, "-m", "allocator", "allocate", "--scenario",
                    str(ROOT / "scenarios" / "baseline.toml"), "--out", f"{tmp}/{v}", "--force",
                    "-q"]  # fmt: skip

        polars_pass = [PY, "-c", POLARS_PASS, str(data), f"{tmp}/pass.parquet"]
        checked_pass = [PY, "-c", CHECKED_PASS, str(data), f"{tmp}/checked.parquet"]
        for v, env in versions.items():  # untimed: bytecode compiled, files cached
            run_measured(job(v), cwd=cwd(env), env=env)
        run_measured(polars_pass)
        run_measured(checked_pass, cwd=ROOT)
        for r in range(args.rounds):
            order = [*versions, "pass", "checked"]
            order = order[r % len(order) :] + order[: r % len(order)]  # rotate the order
            for what in order:
                if what == "pass":
                    passes.append(run_measured(polars_pass))
                    continue
                if what == "checked":
                    checked.append(run_measured(checked_pass, cwd=ROOT))
                    continue
                env = versions[what]
                jobs[what].append(run_measured(job(what), cwd=cwd(env), env=env))
                manifest = json.loads((Path(tmp) / what / "manifest.json").read_text())
                stages[what].append(manifest["timings_s"])
            print(
                f"round {r + 1}: "
                + ", ".join(
                    f"job {v} {jobs[v][-1].wall_s:.3f} s (peak {jobs[v][-1].peak_mib:.0f} MiB)"
                    for v in versions
                )
                + f", pass {passes[-1].wall_s:.3f} s, checked pass {checked[-1].wall_s:.3f} s"
                + f" (load average {load_average()})",
                flush=True,
            )
        if args.before is not None:
            same = all(
                (Path(tmp) / "before" / f).read_bytes() == (Path(tmp) / "after" / f).read_bytes()
                for f in ("allocations.parquet", "excluded.parquet", "payouts.csv")
            )
            print(f"before and after wrote byte-identical outputs: {'yes' if same else 'NO'}")
    pass_s = median([p.wall_s for p in passes])
    print()
    print(f"data: {data}; load average now: {load_average()}")
    print(f"one Polars pass: median {pass_s:.3f} s (min {min(p.wall_s for p in passes):.3f} s), "
          f"CPU {median([p.cpu_s for p in passes]):.2f} s, peak {max(p.peak_mib for p in passes):.0f} MiB")  # fmt: skip
    checked_s = median([c.wall_s for c in checked])
    print(f"the same pass with the job's imports and row checks: median {checked_s:.3f} s "
          f"(min {min(c.wall_s for c in checked):.3f} s) = {checked_s / pass_s:.2f} Polars passes")  # fmt: skip
    job_cells, ratio_cells = [], []
    for v in versions:
        job_s = median([j.wall_s for j in jobs[v]])
        by_stage = {k: median([s[k] for s in stages[v] if k in s]) for k in stages[v][0]}
        rest = job_s - sum(by_stage.values())
        print(
            f"default job, {v}: median {job_s:.3f} s (min {min(j.wall_s for j in jobs[v]):.3f} s), "
            f"CPU {median([j.cpu_s for j in jobs[v]]):.2f} s, peak {max(j.peak_mib for j in jobs[v]):.0f} MiB; "
            f"job / Polars pass = {job_s / pass_s:.2f} (goal <= 2)"
        )
        print("  by stage (manifest timings_s, medians): "
              + ", ".join(f"{k} {x:.3f}" for k, x in by_stage.items())
              + f"; start-up, hashing, manifest and the rest {rest:.3f} s")  # fmt: skip
        job_cells.append(f"{job_s:.3f} s (min {min(j.wall_s for j in jobs[v]):.3f})")
        ratio_cells.append(f"{job_s / pass_s:.2f}")
        figures[v].update(job_wall=[j.wall_s for j in jobs[v]], job_cpu=[j.cpu_s for j in jobs[v]],
                          job_peak_mib=max(j.peak_mib for j in jobs[v]), job_stages=by_stage)  # fmt: skip
    rows += [
        ["default job (allocate baseline, median)", *job_cells, ""],
        ["one Polars pass (median)", *([f"{pass_s:.3f} s"] * len(versions)), ""],
        ["default job / Polars pass", *ratio_cells, "<= 2"],
        [
            "the pass with the job's imports and row checks / the pass",
            *([f"{checked_s / pass_s:.2f}"] * len(versions)),
            "",
        ],
    ]
    if args.json:
        write_json(
            args.json,
            name="startup",
            command="python benchmarks/bench_startup.py"
            + (f" --before {args.before}" if args.before else ""),
            header=["what", *versions, "goal"],
            rows=rows,
            data={
                "versions": figures,
                "pass_wall": [p.wall_s for p in passes],
                "checked_pass_wall": [c.wall_s for c in checked],
                "data": str(data),
            },
            started=started,
        )


if __name__ == "__main__":
    main()
