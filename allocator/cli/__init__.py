"""Command-line interface: ``allocator --help`` lists the commands.

Each command module registers itself on the shared Typer app when imported; the app imports a
command's module only when that command runs or shows its help (:mod:`allocator.cli.lazy`), so
``allocator --help`` imports none of them. :func:`load_all` imports every one.
"""

from allocator.cli.lazy import defer_import, load_all

# The kernel's solver dispatch imports cvxpy at module level; only the cvxpy solver uses it.
defer_import("cvxpy")

from allocator.cli.app import app  # noqa: E402  (after the deferred import, which it may reach)

__all__ = ["app", "load_all"]
