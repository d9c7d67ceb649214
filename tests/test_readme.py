"""Every example in the README runs as written, in order, on the built-in default data."""

from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from allocator.cli import app, load_all

ROOT = Path(__file__).resolve().parents[1]


def readme_examples() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = text.split("<!-- examples:start -->", 1)[1].split("<!-- examples:end -->", 1)[0]
    return [line.strip() for line in block.splitlines() if line.strip().startswith("allocator ")]


def test_readme_has_examples_for_every_command() -> None:
    load_all()
    registered = set(typer.main.get_command(app).commands)
    shown = {shlex.split(line)[1] for line in readme_examples()}
    assert registered - shown == set()


@pytest.mark.slow
def test_readme_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALLOCATOR_CACHE_DIR", str(tmp_path / "cache"))
    work = tmp_path / "work"
    work.mkdir()
    shutil.copytree(ROOT / "scenarios", work / "scenarios")
    shutil.copytree(ROOT / "examples", work / "examples")  # the rounds' appeals and redemptions
    monkeypatch.chdir(work)
    runner = CliRunner()
    for line in readme_examples():
        args = shlex.split(line)[1:]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, f"{line}\n{result.output}"
        if "--json" in args:
            json.loads(result.stdout)
    assert (work / "runs" / "baseline" / "manifest.json").exists()
    assert (work / "runs" / "sweep-alpha" / "sweep.png").exists()


def test_the_benchmark_tables_are_the_benchmarks_results() -> None:
    # every figure in the README's benchmark tables comes from a result file that a benchmark
    # script wrote (python3 tasks.py bench), never from a hand edit
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "readme_tables", ROOT / "scripts" / "readme_tables.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    text = (ROOT / "README.md").read_text()
    assert module.render(text) == text
    assert "<!-- bench:studio -->" in text
