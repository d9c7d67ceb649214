"""Command-line interface: ``allocator --help`` lists the commands.

Importing this package registers every command module on the shared Typer app.
"""

from allocator.cli import (  # noqa: F401  (imported for their @app.command registrations)
    cmd_allocate,
    cmd_axioms,
    cmd_check,
    cmd_claims,
    cmd_compare,
    cmd_depeg,
    cmd_diff,
    cmd_eligibility,
    cmd_explain,
    cmd_export,
    cmd_generate,
    cmd_keys,
    cmd_loans,
    cmd_programme,
    cmd_proofs,
    cmd_report,
    cmd_scenario,
    cmd_sensitivity,
    cmd_studio,
)
from allocator.cli.app import app

__all__ = ["app"]
