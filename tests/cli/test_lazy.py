"""The CLI starts fast: commands are imported on demand, cvxpy on first use.

``allocator --help`` lists every command from :data:`allocator.cli.lazy.COMMANDS` without
importing any command module; these tests keep that list equal to what the modules register
and check, in fresh processes, what ``--help`` imports.
"""

from __future__ import annotations

import inspect
import json
import os
import pkgutil
import subprocess
import sys

import typer.main
from clihelp import invoke, runner

import allocator.cli
from allocator.cli import app, load_all
from allocator.cli.lazy import COMMANDS

#: Packages a help screen has no use for (each takes from a tenth to half a second to import).
HEAVY = ("polars", "numpy", "scipy", "cvxpy", "matplotlib", "altair", "marimo", "xlsxwriter")

_PROBE = """
import json, sys
from allocator.cli import app
try:
    app(sys.argv[1:], prog_name="allocator", standalone_mode=False)
except SystemExit:
    pass
loaded = [m for m, mod in sys.modules.items()
          if "." not in m and type(mod).__name__ not in ("Deferred", "_LazyModule")]
print("@@" + json.dumps(sorted(loaded)), file=sys.stderr)
"""


def _fresh(*args: str) -> tuple[str, set[str]]:
    """Run the CLI with ``args`` in a new interpreter: its stdout and the top-level modules it
    imported (a deferred module counts only once it has been used)."""
    env = {**os.environ, "COLUMNS": "80", "TERM": "dumb"}
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, *args], capture_output=True, text=True, env=env, check=True
    )
    line = next(ln for ln in proc.stderr.splitlines() if ln.startswith("@@"))
    return proc.stdout, set(json.loads(line[2:]))


def test_every_command_is_listed_with_its_own_help_line() -> None:
    load_all()
    group = typer.main.get_command(app)
    registered = set(group.commands)  # type: ignore[attr-defined]
    assert {c.name for c in COMMANDS} == registered
    for command in COMMANDS:
        real = group.commands[command.name]  # type: ignore[attr-defined]
        shown = inspect.cleandoc(real.help or "").split("\n\n")[0].replace("\n", " ").strip()
        assert command.summary == shown, f"update COMMANDS[{command.name!r}] in cli/lazy.py"
        # the module named registers it
        info = [i for i in app.registered_commands if (i.name or "") == command.name]
        groups = [g for g in app.registered_groups if g.name == command.name]
        module = (
            info[0].callback.__module__
            if info
            else groups[0].typer_instance.registered_commands[0].callback.__module__
        )
        assert module == command.module


def test_every_command_module_is_in_the_list() -> None:
    modules = {
        f"allocator.cli.{m.name}"
        for m in pkgutil.iter_modules(allocator.cli.__path__)
        if m.name.startswith("cmd_")
    }
    assert modules == {c.module for c in COMMANDS}


def test_help_imports_no_command_and_reads_as_before() -> None:
    text, loaded = _fresh("--help")
    assert not loaded & set(HEAVY), loaded & set(HEAVY)
    # the listing without the modules equals the listing with every module imported
    load_all()
    full = runner.invoke(app, ["--help"], env={"COLUMNS": "80", "TERM": "dumb"})
    assert full.exit_code == 0
    assert text == full.stdout


def test_a_command_help_imports_only_its_module() -> None:
    text, loaded = _fresh("allocate", "--help")
    assert "Example: allocator allocate" in text
    assert not loaded & {"polars", "numpy", "scipy", "cvxpy"}


def test_unknown_command_suggests_the_nearest() -> None:
    result = invoke("alocate")
    assert result.exit_code == 2
    assert "Did you mean 'allocate'?" in result.output


def test_deferred_cvxpy_loads_on_first_use() -> None:
    code = (
        "import sys\n"
        "import allocator.cli\n"
        "import allocator.kernel.solve\n"
        "assert type(sys.modules['cvxpy']).__name__ == 'Deferred'\n"
        "import cvxpy as cp\n"
        "x = cp.Variable()\n"
        "cp.Problem(cp.Minimize((x - 2) ** 2)).solve()\n"
        "assert type(sys.modules['cvxpy']).__name__ == 'module'\n"
        "assert abs(x.value - 2) < 1e-6\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_deferred_modules_can_be_loaded_before_threads_start() -> None:
    code = (
        "import sys\n"
        "from allocator.cli.lazy import load_deferred\n"
        "assert type(sys.modules['cvxpy']).__name__ == 'Deferred'\n"
        "load_deferred()\n"
        "assert type(sys.modules['cvxpy']).__name__ == 'module'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
