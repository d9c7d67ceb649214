#!/usr/bin/env python3
"""The project's commands, needing nothing but Python 3.11+ and pip.

    python3 tasks.py run            # set up .venv if needed, run the baseline scenario on the built-in data
    python3 tasks.py test           # set up .venv if needed: lint, format, import contracts, types, all tests
    python3 tasks.py test --quick   # the inner loop: the same checks, tests not marked slow
    python3 tasks.py bench          # set up .venv if needed, run the benchmarks (minutes; not part of CI)
    python3 tasks.py lock           # re-resolve the newest allowed versions into requirements.lock

Installs are reproducible: ``setup`` installs exactly the versions in ``requirements.lock`` (the
ones the suite passed with), so a new release elsewhere cannot break a fresh clone. ``lock``
resolves the ranges in pyproject.toml afresh in a scratch environment and rewrites the lock; run
the tests after it and commit both. The virtual environment is rebuilt whenever pyproject.toml or
the lock changes.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / ("python.exe" if os.name == "nt" else "python")
STAMP = VENV / ".installed"
LOCK = ROOT / "requirements.lock"
EXTRAS = "test,bench,solvers"
#: pytest workers: the suite is CPU-bound, one worker per core.
WORKERS = str(max(1, min(os.cpu_count() or 1, 4)))


def sh(*args: str | Path, env: dict[str, str] | None = None) -> None:
    print("+", " ".join(str(a) for a in args), file=sys.stderr, flush=True)
    code = subprocess.call([str(a) for a in args], cwd=ROOT, env=env)
    if code:
        sys.exit(code)


def _install(python: Path, *, locked: bool) -> None:
    sh(python, "-m", "pip", "install", "--quiet", "--upgrade", "pip")
    constraints = ["-c", str(LOCK)] if locked and LOCK.exists() else []
    sh(python, "-m", "pip", "install", "--quiet", *constraints, "-e", f".[{EXTRAS}]")


def setup() -> None:
    if sys.version_info < (3, 11):  # noqa: UP036 -- the message is for people running an older Python
        sys.exit(f"Python 3.11+ is required, this is {sys.version.split()[0]}")
    lock = LOCK.read_bytes() if LOCK.exists() else b""
    want = hashlib.sha256(
        (ROOT / "pyproject.toml").read_bytes() + lock + EXTRAS.encode()
    ).hexdigest()
    if PY.exists() and STAMP.exists() and STAMP.read_text().strip() == want:
        return
    if not PY.exists():
        print(f"creating {VENV}", file=sys.stderr)
        venv.create(VENV, with_pip=True)
    _install(PY, locked=True)
    STAMP.write_text(want + "\n")


def run() -> None:
    setup()
    sh(
        BIN / "allocator",
        "allocate",
        "--scenario",
        "scenarios/baseline.toml",
        "--out",
        "runs/baseline",
        # the main job is meant to be run again: it replaces its own run, and only that one
        "--force",
    )
    sh(BIN / "allocator", "check-budget", "runs/baseline")


def lint() -> None:
    """Style, format, import contracts and types: what CI checks before the tests."""
    setup()
    sh(BIN / "ruff", "check", ".")
    sh(BIN / "ruff", "format", "--check", ".")
    sh(BIN / "lint-imports")
    sh(BIN / "mypy")


def test() -> None:
    args = sys.argv[2:]
    quick = "--quick" in args
    args = [a for a in args if a != "--quick"]
    lint()
    marks = ["-m", "not slow"] if quick else []
    sh(PY, "-m", "pytest", "-q", "-n", WORKERS, *marks, *args)


def bench() -> None:
    """Every benchmark, each writing its result to benchmarks/results/; then the README's tables
    are made from those results (scripts/readme_tables.py)."""
    setup()
    results = ROOT / "benchmarks" / "results"
    for script in sorted((ROOT / "benchmarks").glob("bench_*.py")):
        name = script.stem.removeprefix("bench_")
        sh(PY, script, "--json", results / f"{name}.json", *sys.argv[2:])
    sh(PY, ROOT / "scripts" / "readme_tables.py")


def lock() -> None:
    """Resolve the newest versions pyproject.toml allows, in a scratch venv, into the lock."""
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp) / "venv"
        venv.create(scratch, with_pip=True)
        py = scratch / ("Scripts" if os.name == "nt" else "bin") / "python"
        _install(py, locked=False)
        out = subprocess.run(
            [str(py), "-m", "pip", "freeze", "--exclude-editable"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    pins = sorted(
        (line for line in out.splitlines() if "==" in line and not line.startswith("allocator")),
        key=str.lower,
    )
    header = "# Exact versions the test suite passed with; refresh with: python3 tasks.py lock\n"
    LOCK.write_text(header + "\n".join(pins) + "\n")
    print(f"wrote {LOCK} ({len(pins)} packages); now run: python3 tasks.py test", file=sys.stderr)


COMMANDS = {"setup": setup, "run": run, "lint": lint, "test": test, "bench": bench, "lock": lock}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.exit(f"usage: python3 tasks.py {{{'|'.join(COMMANDS)}}} [args...]")
    COMMANDS[sys.argv[1]]()
