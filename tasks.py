#!/usr/bin/env python3
"""The project's two commands, needing nothing but Python 3.11+ and pip.

    python3 tasks.py run     # set up .venv if needed, run the baseline scenario on the built-in data
    python3 tasks.py test    # set up .venv if needed, run the full test suite
    python3 tasks.py bench   # set up .venv if needed, run the benchmarks (minutes; not part of CI)

The virtual environment is rebuilt whenever pyproject.toml changes.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / ("python.exe" if os.name == "nt" else "python")
STAMP = VENV / ".installed"
EXTRAS = "test,bench,solvers"


def sh(*args: str | Path) -> None:
    print("+", " ".join(str(a) for a in args), file=sys.stderr, flush=True)
    code = subprocess.call([str(a) for a in args], cwd=ROOT)
    if code:
        sys.exit(code)


def setup() -> None:
    if sys.version_info < (3, 11):  # noqa: UP036 -- the message is for people running an older Python
        sys.exit(f"Python 3.11+ is required, this is {sys.version.split()[0]}")
    want = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + EXTRAS.encode()).hexdigest()
    if PY.exists() and STAMP.exists() and STAMP.read_text().strip() == want:
        return
    if not PY.exists():
        print(f"creating {VENV}", file=sys.stderr)
        venv.create(VENV, with_pip=True)
    sh(PY, "-m", "pip", "install", "--quiet", "--upgrade", "pip")
    sh(PY, "-m", "pip", "install", "--quiet", "-e", f".[{EXTRAS}]")
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
    )
    sh(BIN / "allocator", "check-budget", "runs/baseline")


def test() -> None:
    setup()
    sh(PY, "-m", "pytest", "-q", *sys.argv[2:])


def bench() -> None:
    setup()
    for script in sorted((ROOT / "benchmarks").glob("bench_*.py")):
        sh(PY, script, *sys.argv[2:])


COMMANDS = {"setup": setup, "run": run, "test": test, "bench": bench}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.exit(f"usage: python3 tasks.py {{{'|'.join(COMMANDS)}}} [args...]")
    COMMANDS[sys.argv[1]]()
