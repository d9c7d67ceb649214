"""The walkthrough notebooks under ``notebooks/`` run from top to bottom without an error.

Each notebook checks its own claims with ``assert`` cells, so running it is the test. The kernel
is this interpreter (a ``python3`` kernelspec written into a temporary folder and put first on
``JUPYTER_PATH``), so the notebooks see the package under test whatever kernels the machine has.
The built-in data is generated once, into a temporary cache shared by the three notebooks.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from nbclient import NotebookClient

NOTEBOOKS_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = ("policy_design.ipynb", "finance_reconciliation.ipynb", "sensitivity_study.ipynb")


@pytest.fixture(scope="module")
def kernel_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A python3 kernelspec running ``sys.executable`` and a fresh data cache, for this module
    only (the environment is restored afterwards); yields the kernels' working directory."""
    from ipykernel.kernelspec import install

    root = tmp_path_factory.mktemp("notebooks")
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


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_clean(name: str) -> None:
    """Stored without outputs or execution counts, on the python3 kernel, and valid."""
    nb = nbformat.read(NOTEBOOKS_DIR / name, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and any(c.cell_type == "markdown" for c in nb.cells)
    for cell in code:
        assert cell.outputs == [] and cell.execution_count is None, cell.source[:80]
    source = "\n".join(c.source for c in code)
    assert "assert " in source
    # library calls only: the notebooks never shell out to the command line
    assert "subprocess" not in source and "!allocator" not in source


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs(name: str, kernel_env: Path) -> None:
    nb = nbformat.read(NOTEBOOKS_DIR / name, as_version=4)
    client = NotebookClient(
        nb,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(kernel_env)}},
    )
    client.execute()  # raises CellExecutionError, with the cell and traceback, on any error
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        assert cell.execution_count is not None, cell.source[:80]
        errors = [o for o in cell.outputs if o.output_type == "error"]
        assert not errors, (cell.source[:80], errors)
    # the notebooks clean up the run directories they write in temporary folders
    assert sorted(os.listdir(kernel_env)) == []
