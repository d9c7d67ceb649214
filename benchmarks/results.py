"""A benchmark's result as the README shows it: a table, the machine, the command.

Every benchmark script takes ``--json PATH`` and writes there, through :func:`write_result`,
its table (a header and rows of figures already worded), the command that produced it and the
machine it ran on (processor, cores, memory, versions, the load average when it started).
``python3 tasks.py bench`` writes them to ``benchmarks/results/`` and then
``scripts/readme_tables.py`` puts each table into the README between its markers; a test
checks that the README shows exactly what the result files hold, so no figure is copied by
hand.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

#: Where ``python3 tasks.py bench`` keeps the results the README shows.
RESULTS_DIR = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    """The machine and software a benchmark runs on, and how busy the machine was."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        memory_gib = round(pages / 2**30)
    except (ValueError, OSError, AttributeError):
        memory_gib = None
    versions = {"python": platform.python_version()}
    for name in ("numpy", "polars", "cvxpy"):
        module = sys.modules.get(name)
        if module is not None:
            versions[name] = getattr(module, "__version__", "?")
    try:
        load = round(os.getloadavg()[0], 2)
    except OSError:
        load = None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": memory_gib,
        "system": f"{platform.system()} {platform.release()}",
        "versions": versions,
        "load_average_1min": load,
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
    }


def write_result(
    path: Path,
    *,
    name: str,
    command: str,
    header: list[str],
    rows: list[list[str]],
    notes: list[str] | None = None,
    data: dict[str, Any] | None = None,
    started: dict[str, Any] | None = None,
) -> None:
    """Write one benchmark's result (atomically). ``started`` is :func:`machine` as taken
    when the benchmark began (its load average is the one that counts)."""
    result = {
        "name": name,
        "command": command,
        "machine": started or machine(),
        "header": header,
        "rows": rows,
        "notes": notes or [],
        "data": data or {},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def markdown(result: dict[str, Any]) -> str:
    """The README block of one result: the table, then where and how it was measured."""
    m = result["machine"]
    lines = [
        "| " + " | ".join(result["header"]) + " |",
        "| " + " | ".join("---" for _ in result["header"]) + " |",
        *(
            "| " + " | ".join([*row, *[""] * (len(result["header"]) - len(row))]) + " |"
            for row in result["rows"]
        ),
        "",
        *(f"{note}" for note in result["notes"]),
    ]
    if result["notes"]:
        lines.append("")
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items())
    lines.append(
        f"Measured on {m['date']}: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, "
        f"{m['system']}; {versions}; load average {m['load_average_1min']} at the start. "
        f"Command: `{result['command']}`."
    )
    return "\n".join(lines)
