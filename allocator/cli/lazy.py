"""Commands imported on demand, so that the CLI starts fast.

Each command lives in its own module (``cmd_*.py``) and registers itself on the shared Typer app
when imported. Importing all of them, and with them Polars, numpy, cvxpy, pydantic, Altair and
the rest, took over a second before ``allocator --help`` could print a line. Instead the app's
group is a :class:`LazyGroup`: it lists the commands from :data:`COMMANDS` (each command's name,
its module and the first paragraph of its help, the line ``allocator --help`` shows) and imports
a command's module only when that command is run or its own help is asked for. A test keeps
:data:`COMMANDS` equal to what the modules register; a new command module is added there.

cvxpy is imported by the kernel's solver dispatch at module level but used only when the cvxpy
solver runs; :func:`defer_import` makes that import free until cvxpy is first used (about half
a second, mostly ``scipy.stats``, that the fast solver never needs).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import Any, NamedTuple

from typer.core import TyperCommand, TyperGroup


class Command(NamedTuple):
    """A top-level command: its name, the module that registers it and its one-line help."""

    name: str
    module: str
    summary: str


_CLI = "allocator.cli."
#: Every top-level command, in the order ``allocator --help`` lists them.
COMMANDS: tuple[Command, ...] = (
    Command(
        "allocate",
        _CLI + "cmd_allocate",
        "Run eligibility, allocation and cent rounding for one scenario; write a run directory.",
    ),
    Command(
        "axioms",
        _CLI + "cmd_axioms",
        "Check the fairness axioms on the run's own problem at full size.",
    ),
    Command(
        "check-budget",
        _CLI + "cmd_check",
        "Check a run directory: exact total, bounds, nobody paid twice or lost, keys, optimality.",
    ),
    Command(
        "claims",
        _CLI + "cmd_claims",
        "Divide an estate among claims by a classical rule; awards in cents sum exactly to it.",
    ),
    Command("compare", _CLI + "cmd_compare", "Compare scenarios side by side on the same data."),
    Command(
        "sweep",
        _CLI + "cmd_compare",
        "Sweep scenario parameters and report the comparison metrics at every point.",
    ),
    Command(
        "diff",
        _CLI + "cmd_diff",
        "Compare two runs user by user: the old and new voucher, the change and why it changed.",
    ),
    Command(
        "eligibility",
        _CLI + "cmd_eligibility",
        "Apply the eligibility rules and write the feature matrix and the exclusions.",
    ),
    Command(
        "explain",
        _CLI + "cmd_explain",
        "Explain one user's voucher or exclusion: why did I get this amount?",
    ),
    Command(
        "audit",
        _CLI + "cmd_explain",
        "Fairness audit of a run: inequality, coverage by loss band, ordering violations.",
    ),
    Command(
        "export",
        _CLI + "cmd_export",
        "Write finance's sign-off of a run: summary, payouts, batches, exclusions, regions.",
    ),
    Command(
        "generate",
        _CLI + "cmd_generate",
        "Write synthetic liquidations, prices, snapshot and users tables.",
    ),
    Command(
        "report",
        _CLI + "cmd_report",
        "Write a report of a run: summary, finance checks, charts, sweeps, cliff and fairness "
        "audit.",
    ),
    Command(
        "sensitivity",
        _CLI + "cmd_sensitivity",
        "Sensitivity of a run: budget derivatives and B +/- delta, who moves, weights and alpha, "
        "cliffs.",
    ),
    Command(
        "studio",
        _CLI + "cmd_studio",
        "Serve the policy studio: move the knobs, see the allocation, pin, compare and save.",
    ),
    Command(
        "depeg",
        _CLI + "cmd_depeg",
        "Depeg compensation: positions liquidated on 2025-10-10 21:36-22:16 UTC whose collateral "
        "included USDe, BNSOL or WBETH are paid the gap to the 2025-10-11 00:00 price plus the "
        "liquidation fee.",
    ),
    Command(
        "keys",
        _CLI + "cmd_keys",
        "Signing keys: the maker signs runs, the checker verifies them.",
    ),
    Command(
        "loans",
        _CLI + "cmd_loans",
        "The USD 100M low-interest loan fund for institutions hit by the crash: allocate loans "
        "under fund, collateral, concentration and expected-loss limits, check a run, or "
        "generate a synthetic applications file.",
    ),
    Command(
        "programme",
        _CLI + "cmd_programme",
        "The three programmes after the crash side by side: USD 300M vouchers, USD 283M depeg "
        "compensation and the USD 100M loan fund.",
    ),
    Command(
        "proofs",
        _CLI + "cmd_proofs",
        "Proofs of allocation, as exchanges publish proofs of reserves: a Merkle sum tree over a "
        "run's paid users whose root (a hash and the total paid) is published, and one proof per "
        "user that their amount is a non-negative part of that total, revealing no other user's "
        "id.",
    ),
    Command(
        "scenario",
        _CLI + "cmd_scenario",
        "Settings files: print the JSON Schema editors use to complete and check keys, show a "
        "file fully resolved, or validate files.",
    ),
)
_BY_NAME = {c.name: c for c in COMMANDS}


def load_all() -> None:
    """Import every command module (each registers its commands on the app)."""
    for module in dict.fromkeys(c.module for c in COMMANDS):
        importlib.import_module(module)


class LazyGroup(TyperGroup):
    """The top-level group: lists every command of :data:`COMMANDS`, imports one when it runs.

    Until its module is imported, a command is listed through a stand-in carrying its name and
    help line (what the command list shows); running it, or asking for its own help, imports
    the module and uses the command it registered.
    """

    def list_commands(self, ctx: Any) -> list[str]:
        return [*_BY_NAME, *(name for name in self.commands if name not in _BY_NAME)]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        command = self.commands.get(cmd_name)
        if command is None and cmd_name in _BY_NAME:
            return TyperCommand(cmd_name, help=_BY_NAME[cmd_name].summary)
        return command

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        name = args[0] if args else None
        if name in _BY_NAME:
            self._load(name)
        else:
            # An unknown name fails; Typer's "did you mean ...?" looks among self.commands.
            for other in _BY_NAME:
                self.commands.setdefault(other, self.get_command(ctx, other))
        return super().resolve_command(ctx, args)

    def _load(self, name: str) -> None:
        if name in self.commands:
            return
        importlib.import_module(_BY_NAME[name].module)
        import typer.main

        from allocator.cli.app import app

        for loaded, command in typer.main.get_command(app).commands.items():  # type: ignore[attr-defined]
            self.commands.setdefault(loaded, command)


#: Modules :func:`defer_import` made lazy, loaded or not.
_DEFERRED: list[str] = []


def load_deferred() -> None:
    """Load every deferred module now: before threads start (a server), since on Python 3.11 two
    threads touching a lazy module for the first time at once can see it half loaded."""
    for name in _DEFERRED:
        module = sys.modules.get(name)
        if module is not None:
            getattr(module, "__name__", None)  # any attribute loads it


def defer_import(name: str) -> None:
    """Make ``import name`` free until the module is first used (:class:`importlib.util.LazyLoader`).

    Nothing happens when the module is already imported or is not installed (an import of a
    missing module then fails where it is used, as before).
    """
    if name in sys.modules:
        return
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        return
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    module.__class__ = _spec_readable(type(module))
    _DEFERRED.append(name)


def _spec_readable(lazy: type) -> type:
    """The lazy module type, but reading ``__spec__`` does not load the module: an ``import``
    statement reads a module's ``__spec__`` (is it still initialising?) when it finds the module
    in ``sys.modules``, which would otherwise load it at once (Python 3.11)."""

    class Deferred(lazy):  # type: ignore[misc]
        def __getattribute__(self, attr: str) -> Any:
            if attr == "__spec__":
                return types.ModuleType.__getattribute__(self, "__dict__")["__spec__"]
            return lazy.__getattribute__(self, attr)  # type: ignore[call-arg]

    return Deferred
