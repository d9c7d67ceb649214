"""The walkthrough notebooks under ``notebooks/``: stored with their outputs, and still true.

The notebooks are committed executed, so that a reader sees the tables and charts when opening
one. Their claims are checked in the notebook with ``check(condition, claim)`` (an
``AssertionError`` carrying the claim when it is false), so running a notebook is its test:
``test_notebook_runs`` executes a copy of each (the committed file is not touched) and fails on
any error. The other tests read the committed files: outputs present and free of errors, charts
embedded, a modest size, one clean run from top to bottom.

The kernel is this interpreter (a ``python3`` kernelspec written into a temporary folder and put
first on ``JUPYTER_PATH``), so the notebooks see the package under test whatever kernels the
machine has. The built-in data is generated once, into a temporary cache shared by the notebooks.

To store fresh outputs after editing a notebook (same kernel, fresh cache, no timings)::

    .venv/bin/python tests/test_notebooks.py              # all three
    .venv/bin/python tests/test_notebooks.py policy_design.ipynb
"""

from __future__ import annotations

import ast
import base64
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from nbclient import NotebookClient

NOTEBOOKS_DIR = Path(__file__).resolve().parent.parent / "notebooks"
#: each notebook, and the least number of charts (embedded PNG images) it stores
MIN_IMAGES = {
    "policy_design.ipynb": 6,
    "finance_reconciliation.ipynb": 3,
    "sensitivity_study.ipynb": 5,
}
#: each notebook, and the least number of ``check(...)`` calls in its code: the claims it checks
#: now (lower a number only when a claim is dropped on purpose)
MIN_CHECKS = {
    "policy_design.ipynb": 46,
    "finance_reconciliation.ipynb": 39,
    "sensitivity_study.ipynb": 56,
}
NOTEBOOKS = tuple(MIN_IMAGES)
MAX_BYTES = 1_500_000
#: what stored outputs must not contain: a traceback, or a machine's own folders
FORBIDDEN_IN_OUTPUTS = re.compile(
    r"Traceback \(most recent call last\)|Error:|/tmp/|/home/|/root/|/Users/"
)


@contextmanager
def notebook_kernel(root: Path) -> Iterator[Path]:
    """A python3 kernelspec running ``sys.executable`` and a fresh data cache under ``root``
    (the environment is restored afterwards); yields the kernels' working directory."""
    from ipykernel.kernelspec import install

    with pytest.MonkeyPatch.context() as mp:
        prefix = root / "jupyter-prefix"
        install(user=False, prefix=str(prefix), kernel_name="python3")
        mp.setenv("JUPYTER_PATH", str(prefix / "share" / "jupyter"))
        # keep the kernel away from the user's profile and runtime folders
        mp.setenv("IPYTHONDIR", str(root / "ipython"))
        mp.setenv("JUPYTER_RUNTIME_DIR", str(root / "runtime"))
        mp.setenv("ALLOCATOR_CACHE_DIR", str(root / "cache"))
        spec = KernelSpecManager().get_kernel_spec("python3")
        assert Path(spec.argv[0]) == Path(sys.executable), spec.argv

        from allocator.data.synthetic import default_data_dir

        data = default_data_dir()  # generated once here; the kernels inherit the cache folder
        assert data.is_relative_to(root / "cache")
        work = root / "work"
        work.mkdir()
        yield work


def execute(nb: Any, work: Path, *, record_timing: bool = True) -> None:
    """Run every cell of ``nb`` in place on the python3 kernel, in ``work``; raises
    ``CellExecutionError`` (with the cell and its traceback) on the first error."""
    NotebookClient(
        nb,
        timeout=300,
        kernel_name="python3",
        record_timing=record_timing,
        resources={"metadata": {"path": str(work)}},
    ).execute()


def code_cells(nb: Any) -> list[Any]:
    return [c for c in nb.cells if c.cell_type == "code"]


def output_shape(nb: Any) -> list[list[tuple[str, ...]]]:
    """Per code cell, the kind of each output (stream name or MIME types), not its content;
    stderr is left out (a warning or a font-cache notice depends on the machine, and the stored
    files may hold no stderr at all). Consecutive pieces of one stream count once: the kernel
    sends what a cell prints in as many pieces as it flushes, which depends on timing."""
    shape = []
    for cell in code_cells(nb):
        kinds: list[tuple[str, ...]] = []
        for o in cell.outputs:
            if o.output_type == "stream":
                if o.name != "stderr" and kinds[-1:] != [("stream", o.name)]:
                    kinds.append(("stream", o.name))
            else:
                kinds.append((o.output_type, *sorted(o.get("data", {}))))
        shape.append(kinds)
    return shape


def shows_something(source: str) -> bool:
    """Whether a cell displays anything: it ends with an expression (a table, ``plt.show()``,
    ``show_checks()``) or prints."""
    tree = ast.parse(source)
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        return True
    run_now = [  # the statements that run when the cell does, not function or class bodies
        stmt for stmt in tree.body if not isinstance(stmt, ast.FunctionDef | ast.ClassDef)
    ]
    return any(
        isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "print"
        for stmt in run_now
        for n in ast.walk(stmt)
    )


def output_text(output: Any) -> str:
    """The text of one output (stream, text MIME types, or an error's traceback)."""
    if output.output_type == "stream":
        return str(output.text)
    if output.output_type == "error":
        return "\n".join([output.ename, output.evalue, *output.traceback])
    data = output.get("data", {})
    return "\n".join(str(v) for k, v in data.items() if k.startswith("text/"))


@pytest.fixture(scope="module")
def kernel_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with notebook_kernel(tmp_path_factory.mktemp("notebooks")) as work:
        yield work


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_stored_with_outputs(name: str) -> None:
    """Committed after one clean run from top to bottom: every code cell that shows a table, a
    chart or text has its outputs, every chart is an embedded PNG, no output holds an error, a
    traceback or a local path."""
    path = NOTEBOOKS_DIR / name
    assert path.stat().st_size < MAX_BYTES, f"{name}: {path.stat().st_size:,} bytes"
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    code = code_cells(nb)
    assert code and any(c.cell_type == "markdown" for c in nb.cells)
    # executed once, in order, by a fresh kernel: 1, 2, 3, ...
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1))
    images = 0
    for cell in code:
        if shows_something(cell.source):
            assert cell.outputs, f"no stored output: {cell.source[:80]!r}"
        assert "execution" not in cell.metadata, "timings stored: refresh with this module"
        pngs = [o for o in cell.outputs if "image/png" in o.get("data", {})]
        if "plt.show()" in cell.source:
            assert pngs, f"a chart without its image: {cell.source[:80]!r}"
        for o in pngs:
            assert base64.b64decode(o.data["image/png"])[:8] == b"\x89PNG\r\n\x1a\n"
        images += len(pngs)
        for o in cell.outputs:
            assert o.output_type != "error", (cell.source[:80], output_text(o))
            assert not (o.output_type == "stream" and o.name == "stderr"), output_text(o)
            found = FORBIDDEN_IN_OUTPUTS.search(output_text(o))
            assert found is None, (cell.source[:80], found and found.group())
    assert images >= MIN_IMAGES[name], f"{name}: {images} charts"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_checks_its_claims(name: str) -> None:
    """Claims are checked with ``check(condition, claim)``, which fails with the claim; no bare
    ``assert`` (skipped under ``python -O``) and no command line from the notebook."""
    nb = nbformat.read(NOTEBOOKS_DIR / name, as_version=4)
    code = code_cells(nb)
    source = "\n".join(c.source for c in code)
    trees = [ast.parse(c.source) for c in code]
    nodes = [n for tree in trees for n in ast.walk(tree)]
    assert not [n for n in nodes if isinstance(n, ast.Assert)], "use check(condition, claim)"
    calls = [
        n
        for n in nodes
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "check"
    ]
    assert len(calls) >= MIN_CHECKS[name], f"{name}: {len(calls)} checks"
    # every check names its claim in words
    assert all(
        len(c.args) == 2 and isinstance(c.args[1], ast.Constant | ast.JoinedStr) for c in calls
    )
    # the helper really fails: run the cell that defines it on its own
    (helper,) = [
        c
        for c, tree in zip(code, trees)
        if any(isinstance(n, ast.FunctionDef) and n.name == "check" for n in tree.body)
    ]
    namespace: dict[str, Any] = {}
    exec(compile(helper.source, f"{name}:helpers", "exec"), namespace)
    namespace["check"](1 + 1 == 2, "arithmetic holds")
    with pytest.raises(AssertionError, match="a false claim"):
        namespace["check"](1 + 1 == 3, "a false claim")
    # library calls only: the notebooks never shell out to the command line
    assert "subprocess" not in source and "!allocator" not in source


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs(name: str, kernel_env: Path) -> None:
    """Every cell runs without an error (so every check holds), and the outputs it makes have
    the kinds the committed file stores (the stored outputs are not stale in shape)."""
    stored = nbformat.read(NOTEBOOKS_DIR / name, as_version=4)
    nb = nbformat.read(NOTEBOOKS_DIR / name, as_version=4)
    for cell in code_cells(nb):
        cell.outputs, cell.execution_count = [], None
    # each notebook in a folder of its own: what one leaves behind is charged to that one
    work = kernel_env / Path(name).stem
    work.mkdir()
    execute(nb, work)
    for cell in code_cells(nb):
        assert cell.execution_count is not None, cell.source[:80]
        errors = [o for o in cell.outputs if o.output_type == "error"]
        assert not errors, (cell.source[:80], errors)
    got, want = output_shape(nb), output_shape(stored)
    stale = [(cell.source[:60], g, w) for cell, g, w in zip(code_cells(nb), got, want) if g != w]
    assert not stale and len(got) == len(want), f"stored outputs are stale: refresh them {stale}"
    # the notebooks clean up the run directories they write in temporary folders
    assert sorted(os.listdir(work)) == []


def refresh(names: list[str]) -> None:
    """Execute the notebooks and store their outputs in place (no timings, no stale outputs)."""
    with (
        tempfile.TemporaryDirectory(prefix="allocator-notebooks-") as root,
        notebook_kernel(Path(root)) as work,
    ):
        for name in names:
            path = NOTEBOOKS_DIR / name
            nb = nbformat.read(path, as_version=4)
            for cell in code_cells(nb):
                cell.outputs, cell.execution_count = [], None
                cell.metadata.pop("execution", None)
            execute(nb, work, record_timing=False)
            nbformat.write(nb, path)
            print(f"{name}: {path.stat().st_size:,} bytes")
            assert sorted(os.listdir(work)) == [], f"{name} left files behind"


if __name__ == "__main__":
    refresh(sys.argv[1:] or list(NOTEBOOKS))
