"""Command-line interface: ``allocator --help`` lists the commands.

Importing this package registers every command module on the shared Typer app.
"""

from allocator.cli.app import app

__all__ = ["app"]
