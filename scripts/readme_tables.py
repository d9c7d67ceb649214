#!/usr/bin/env python3
"""Put every benchmark result of ``benchmarks/results/`` into the README, between its markers.

The README holds ``<!-- bench:NAME -->`` ... ``<!-- /bench:NAME -->`` for each result file
``benchmarks/results/NAME.json``; this script replaces what is between them by the result's
table and the machine and command it came from (``benchmarks/results.py``). ``--check``
changes nothing and exits 1 when the README differs (the test suite runs the same check).

Usage::

    python scripts/readme_tables.py            # after python3 tasks.py bench
    python scripts/readme_tables.py --check
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from results import RESULTS_DIR, markdown  # noqa: E402

README = ROOT / "README.md"
BLOCK = re.compile(
    r"(<!-- bench:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /bench:(?P=name) -->)", re.S
)


def render(text: str, results_dir: Path = RESULTS_DIR) -> str:
    """``text`` with every benchmark block filled from its result file.

    Raises
    ------
    SystemExit
        A block names a result that does not exist, or a result has no block.
    """
    names = {m.group("name") for m in BLOCK.finditer(text)}
    files = {p.stem for p in results_dir.glob("*.json")}
    if names - files:
        raise SystemExit(
            f"README blocks without a result in {results_dir}: {sorted(names - files)}"
        )
    if files - names:
        raise SystemExit(
            f"results without a README block (<!-- bench:NAME -->): {sorted(files - names)}"
        )

    def fill(m: re.Match[str]) -> str:
        result = json.loads((results_dir / f"{m.group('name')}.json").read_text())
        return f"{m.group(1)}{markdown(result)}\n{m.group(4)}"

    return BLOCK.sub(fill, text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only check; exit 1 on a difference")
    args = parser.parse_args()
    text = README.read_text()
    new = render(text)
    if args.check:
        if new != text:
            print(
                "README.md: the benchmark tables differ from benchmarks/results/", file=sys.stderr
            )
            sys.exit(1)
        return
    if new != text:
        README.write_text(new)
        print("README.md: benchmark tables updated", file=sys.stderr)


if __name__ == "__main__":
    main()
