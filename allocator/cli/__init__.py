"""Command-line interface: ``allocator --help`` lists the commands.

Each command module registers itself on the shared Typer app when imported; the app imports a
command's module only when that command runs or shows its help (:mod:`allocator.cli.lazy`), so
``allocator --help`` imports none of them. :func:`load_all` imports every one.
"""

import gc
import sys

from allocator.cli.heap import POLARS_MALLOC_CONF, memory_for
from allocator.cli.lazy import defer_import, load_all

# The kernel's solver dispatch imports cvxpy at module level; only the cvxpy solver uses it.
defer_import("cvxpy")

# Process memory (allocator.cli.heap): a command returns what it frees soon, the studio keeps it.
memory_for(sys.argv[1:])

from allocator.cli.app import app  # noqa: E402  (after the deferred import, which it may reach)

__all__ = ["POLARS_MALLOC_CONF", "app", "load_all", "main"]


def main() -> None:
    """The ``allocator`` command: run the app, then end the process without the collector's
    final walk over every object Polars, numpy and pydantic made (about a tenth of a second at
    exit, measured on the default job). Objects are still freed as before; only cycles left at
    exit are left to the operating system."""
    try:
        app()
    finally:
        gc.freeze()
