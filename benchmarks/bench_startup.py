#!/usr/bin/env python3
r"""Start-up and the default job: ``allocator --help``, import times, and ``allocate`` of the
baseline against one Polars pass over the same inputs, side by side in one run.

Every figure is a fresh process (nothing warm but the operating system's file cache):

- ``python -m allocator --help`` and ``allocator --help`` (the installed script), ``--repeats``
  times each: median and minimum wall time; ``allocator --version`` when the option exists;
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
  and write the result as parquet. It is the floor of any job that reads these inputs once.

The job and the pass alternate round by round, so that load from other processes hits both
alike; the ratio is of their medians.

Usage::

    python benchmarks/bench_startup.py                    # the built-in data (200,000 users)
    python benchmarks/bench_startup.py --repeats 20 --rounds 7 --json /tmp/startup.json

Goals (issue 14): ``allocator --help`` <= 0.5 s; the default job <= 2x the Polars pass.
"""

from __future__ import annotations

import argparse
import json
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


def package_import_seconds() -> dict[str, float]:
    """Cumulative import time of each of :data:`PACKAGES` where the allocate path first imports
    it (``-X importtime``; a package another one imported first counts there)."""
    err = run_measured([PY, "-X", "importtime", "-c", f"import {ALLOCATE_PATH}"]).stderr
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
    parser.add_argument("--help-repeats", type=int, default=3, help="per command's --help")
    parser.add_argument("--rounds", type=int, default=5, help="default job / Polars pass pairs")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    started = machine()
    print(f"load average at start: {started['load_average']}", flush=True)

    data = builtin_data()
    rows: list[list[str]] = []
    figures: dict[str, object] = {"data": str(data)}

    def help_times(cmd: list[str], n: int) -> list[float]:
        return [run_measured(cmd).wall_s for _ in range(n)]

    for label, cmd in (
        ("python -m allocator --help", [PY, "-m", "allocator", "--help"]),
        ("allocator --help", [ALLOCATOR, "--help"]),
    ):
        times = help_times(cmd, args.repeats)
        figures[label] = times
        rows.append([label, f"{median(times):.3f} s", f"{min(times):.3f} s", "<= 0.5 s"])
        print(f"{label:<40} median {median(times):.3f} s  min {min(times):.3f} s", flush=True)
    version = run_measured([ALLOCATOR, "--version"], check=False)
    if version.returncode == 0:
        times = help_times([ALLOCATOR, "--version"], args.repeats)
        figures["allocator --version"] = times
        rows.append(["allocator --version", f"{median(times):.3f} s", f"{min(times):.3f} s", ""])
        print(f"{'allocator --version':<40} median {median(times):.3f} s", flush=True)
    else:
        print("allocator --version: no such option (not measured)", flush=True)

    per_command = {
        c: median(help_times([ALLOCATOR, c, "--help"], args.help_repeats)) for c in commands()
    }
    slowest = max(per_command, key=per_command.__getitem__)
    figures["command --help"] = per_command
    rows.append([f"slowest command --help ({slowest})", f"{per_command[slowest]:.3f} s", "", ""])
    print(
        f"{'each command --help':<40} median {median(list(per_command.values())):.3f} s, "
        f"slowest {slowest} {per_command[slowest]:.3f} s",
        flush=True,
    )

    imports = [float(run_measured([PY, "-c", IMPORT_TIMER]).stdout) for _ in range(args.repeats)]
    packages = package_import_seconds()
    figures["allocate path import"] = imports
    figures["allocate path packages"] = packages
    shares = ", ".join(f"{k} {v:.2f} s" for k, v in sorted(packages.items(), key=lambda kv: -kv[1]))
    rows.append(["import of the allocate path", f"{median(imports):.3f} s", f"{min(imports):.3f} s", ""])  # fmt: skip
    print(f"{'import of the allocate path':<40} median {median(imports):.3f} s ({shares})")

    jobs, passes, stages = [], [], []
    with tempfile.TemporaryDirectory(prefix="bench_startup_") as tmp:
        job = [ALLOCATOR, "allocate", "--scenario", "scenarios/baseline.toml", "--out",
               f"{tmp}/baseline", "--force", "-q"]  # fmt: skip
        polars_pass = [PY, "-c", POLARS_PASS, str(data), f"{tmp}/pass.parquet"]
        for r in range(args.rounds):
            order = ("job", "pass") if r % 2 == 0 else ("pass", "job")
            for what in order:
                if what == "job":
                    jobs.append(run_measured(job, cwd=ROOT))
                    manifest = (Path(tmp) / "baseline" / "manifest.json").read_text()
                    stages.append(json.loads(manifest)["timings_s"])
                else:
                    passes.append(run_measured(polars_pass))
            print(
                f"round {r + 1}: job {jobs[-1].wall_s:.3f} s (cpu {jobs[-1].cpu_s:.2f} s, "
                f"peak {jobs[-1].peak_mib:.0f} MiB), pass {passes[-1].wall_s:.3f} s "
                f"(cpu {passes[-1].cpu_s:.2f} s, peak {passes[-1].peak_mib:.0f} MiB)",
                flush=True,
            )
    job_s = median([j.wall_s for j in jobs])
    pass_s = median([p.wall_s for p in passes])
    by_stage = {k: median([s[k] for s in stages]) for k in stages[0]}
    rest = job_s - sum(by_stage.values())
    figures.update(
        job_wall=[j.wall_s for j in jobs],
        job_cpu=[j.cpu_s for j in jobs],
        job_peak_mib=max(j.peak_mib for j in jobs),
        pass_wall=[p.wall_s for p in passes],
        pass_cpu=[p.cpu_s for p in passes],
        pass_peak_mib=max(p.peak_mib for p in passes),
        job_stages=by_stage,
    )
    rows += [
        ["default job (allocate baseline)", f"{job_s:.3f} s", f"{min(j.wall_s for j in jobs):.3f} s", ""],
        ["one Polars pass", f"{pass_s:.3f} s", f"{min(p.wall_s for p in passes):.3f} s", ""],
        ["default job / Polars pass", f"{job_s / pass_s:.2f}", "", "<= 2"],
    ]  # fmt: skip
    print()
    print(f"data: {data}; load average now: {load_average()}")
    print(f"{'':<40} {'median':>9} {'min':>9}  goal")
    for row in rows:
        print(f"{row[0]:<40} {row[1]:>9} {row[2]:>9}  {row[3]}")
    print(
        f"default job: cpu {median([j.cpu_s for j in jobs]):.2f} s, peak "
        f"{figures['job_peak_mib']:.0f} MiB; Polars pass: cpu {median([p.cpu_s for p in passes]):.2f} s, "
        f"peak {figures['pass_peak_mib']:.0f} MiB"
    )
    print("default job by stage (manifest timings_s, medians):")
    for k, v in by_stage.items():
        print(f"    {k:<36}{v:>7.3f} s")
    print(f"    {'start-up, hashing, manifest, rest':<36}{rest:>7.3f} s")
    if args.json:
        write_json(
            args.json,
            name="startup",
            command="python benchmarks/bench_startup.py "
            + " ".join(sys.argv[1:]).replace(f"--json {args.json}", "").strip(),
            header=["what", "median", "min", "goal"],
            rows=rows,
            data=figures,
            started=started,
        )


if __name__ == "__main__":
    main()
