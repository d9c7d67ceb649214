"""Command-line interface: ``allocator --help`` lists the commands.

Each command module registers itself on the shared Typer app when imported; the app imports a
command's module only when that command runs or shows its help (:mod:`allocator.cli.lazy`), so
``allocator --help`` imports none of them. :func:`load_all` imports every one.
"""

import gc
import os

from allocator.cli.lazy import defer_import, load_all

# The kernel's solver dispatch imports cvxpy at module level; only the cvxpy solver uses it.
defer_import("cvxpy")

#: How the CLI asks Polars' jemalloc to give freed memory back. Polars allocates through its own
#: jemalloc, which keeps freed pages for seconds before returning them; between the stages of a
#: run they pile up (allocate at two million users peaked at 1.6 GiB, of which about 0.2 GiB
#: freed but kept). A background purger with a short decay returns them as the run goes, at no
#: measured cost in time. Read when Polars is first imported, which the CLI has not done yet; a
#: value set in the environment (``_RJEM_MALLOC_CONF``) wins.
POLARS_MALLOC_CONF = "background_thread:true,dirty_decay_ms:200,muzzy_decay_ms:0"
os.environ.setdefault("_RJEM_MALLOC_CONF", POLARS_MALLOC_CONF)

from allocator.cli.app import app  # noqa: E402  (after the deferred import, which it may reach)

__all__ = ["app", "load_all", "main"]


def main() -> None:
    """The ``allocator`` command: run the app, then end the process without the collector's
    final walk over every object Polars, numpy and pydantic made (about a tenth of a second at
    exit, measured on the default job). Objects are still freed as before; only cycles left at
    exit are left to the operating system."""
    try:
        app()
    finally:
        gc.freeze()
