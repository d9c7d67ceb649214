"""Fresh-process measurements shared by the benchmarks: wall, CPU and peak memory of one child.

Each command runs in its own child process and is reaped with :func:`os.wait4`, which returns
that child's own resource usage (``ru_maxrss`` of the child alone, unlike ``RUSAGE_CHILDREN``,
which keeps the largest child ever reaped). Not a benchmark itself (``tasks.py bench`` runs the
``bench_*.py`` scripts only).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Measured:
    """One child process: wall and CPU seconds, peak resident memory, exit code and output."""

    wall_s: float
    cpu_s: float
    peak_mib: float
    returncode: int
    stdout: str
    stderr: str


def run_measured(
    cmd: Sequence[str | Path],
    *,
    cwd: str | Path | None = None,
    env: dict[str, str] | None = None,
    check: bool = True,
) -> Measured:
    """Run ``cmd`` in a fresh process and measure it (its output goes to temporary files, so a
    chatty child never blocks on a full pipe)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen([str(c) for c in cmd], cwd=cwd, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        out.seek(0)
        err.seek(0)
        result = Measured(
            wall_s=wall,
            cpu_s=usage.ru_utime + usage.ru_stime,
            peak_mib=usage.ru_maxrss / 1024,
            returncode=proc.returncode,
            stdout=out.read().decode(errors="replace"),
            stderr=err.read().decode(errors="replace"),
        )
    if check and result.returncode != 0:
        raise SystemExit(
            f"command failed (exit {result.returncode}): {' '.join(map(str, cmd))}\n"
            f"{result.stderr[-3000:]}"
        )
    return result


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, as ``uptime`` prints them."""
    try:
        return ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def machine() -> dict[str, Any]:
    """Where a figure was measured: processor, cores, memory, system, versions and how busy the
    machine was (the keys of ``benchmarks/results.py``'s ``machine``, plus the 1, 5 and 15
    minute load averages)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        memory_gib: int | None = round(
            os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30
        )
    except (ValueError, OSError, AttributeError):
        memory_gib = None
    versions = {"python": platform.python_version()}
    for name in ("numpy", "polars", "cvxpy"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    try:
        load_1min: float | None = round(os.getloadavg()[0], 2)
    except OSError:
        load_1min = None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": memory_gib,
        "system": f"{platform.system()} {platform.release()}",
        "versions": versions,
        "load_average_1min": load_1min,
        "load_average": load_average(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
    }


def write_json(
    path: Path,
    *,
    name: str,
    command: str,
    header: list[str],
    rows: list[list[str]],
    data: dict[str, Any],
    started: dict[str, Any],
    notes: list[str] | None = None,
) -> None:
    """A benchmark's result as JSON: its table (worded figures), the command, the machine as it
    was when the benchmark started, and the raw figures."""
    result = {
        "name": name,
        "command": command,
        "machine": started,
        "header": header,
        "rows": rows,
        "notes": notes or [],
        "data": data,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
