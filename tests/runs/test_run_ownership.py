"""Runs are never silently replaced: an existing run at --out is refused unless --force, two
writers of one directory are kept apart, and the manifest says who made the run, when and from
which scenario file (while the data files stay byte-identical across reruns)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from clihelp import invoke

from allocator import names as N
from allocator.data.synthetic import generate
from allocator.errors import InputError
from allocator.runs.writer import writer_lock

ROOT = Path(__file__).resolve().parents[2]
SCENARIO = ROOT / "scenarios" / "baseline.toml"


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ownership") / "data"
    generate(out, users=1500, seed=9)
    return out


def _allocate(data: Path, out: Path, *extra: str, scenario: Path = SCENARIO):
    return invoke(
        "allocate", "--scenario", scenario, "--data", data, "--out", out, "-q",
        "--set", "budget.total_usd=1.5e6", *extra,
    )  # fmt: skip


def _digest(run: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(run.iterdir())}


def test_an_existing_run_is_refused_unless_forced(data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert _allocate(data, run).exit_code == 0
    before = _digest(run)
    other = tmp_path / "proportional.toml"
    other.write_text((ROOT / "scenarios" / "proportional.toml").read_text())
    refused = _allocate(data, run, scenario=other)
    assert refused.exit_code == 2, refused.output
    assert f"--out {run} already holds" in refused.stderr
    assert "a run of scenario 'baseline' made 20" in refused.stderr and "--force" in refused.stderr
    assert _digest(run) == before  # nothing touched
    forced = _allocate(data, run, "--force", scenario=other)
    assert forced.exit_code == 0, forced.output
    man = json.loads((run / N.MANIFEST_FILE).read_text())
    assert man["scenario"]["name"] == "proportional"
    assert invoke("check-budget", run).exit_code == 0
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_an_empty_directory_is_not_a_run(data: Path, tmp_path: Path) -> None:
    run = tmp_path / "empty"
    run.mkdir()
    assert _allocate(data, run).exit_code == 0


def test_the_manifest_records_who_when_and_which_file(data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert _allocate(data, run, "--operator", "j.doe").exit_code == 0
    man = json.loads((run / N.MANIFEST_FILE).read_text())
    assert man["operator"] == "j.doe"
    assert man["created_at"].endswith("Z") and man["created_at"][:2] == "20"
    assert man["scenario_file"] == {
        "path": str(SCENARIO.resolve()),
        "sha256": hashlib.sha256(SCENARIO.read_bytes()).hexdigest(),
    }
    assert man["versions"]["allocator"]
    # a rerun replaces the manifest's time, never the data files' bytes
    first = _digest(run)
    assert _allocate(data, run, "--force").exit_code == 0
    again = _digest(run)
    for name in (N.ALLOCATIONS_FILE, N.EXCLUDED_FILE, N.PAYOUTS_FILE):
        assert again[name] == first[name]
    bad = _allocate(data, tmp_path / "other", "--operator", " ")
    assert bad.exit_code == 2 and "--operator must name someone" in bad.stderr


def test_two_writers_of_one_directory_are_kept_apart(data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    with writer_lock(run):
        busy = _allocate(data, run)
        assert busy.exit_code == 2, busy.output
        assert "another process is writing" in busy.stderr
        with pytest.raises(InputError, match="another process is writing"):
            with writer_lock(run):
                pass
    assert not run.exists()  # the refused writer wrote nothing
    assert _allocate(data, run).exit_code == 0
    assert not (tmp_path / ".run.lock").exists()  # no leftover lock file


def test_a_writer_that_died_holds_no_lock(data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    code = (
        "import os, sys\n"
        "from allocator.runs.writer import writer_lock\n"
        f"with writer_lock({str(run)!r}):\n"
        "    os._exit(0)  # killed while holding the lock: no cleanup runs\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    assert (tmp_path / ".run.lock").exists()  # the dead writer's file is still there...
    assert _allocate(data, run).exit_code == 0  # ...but it locks nothing
    assert invoke("check-budget", run).exit_code == 0


@pytest.mark.parametrize("how", ["oserror", "polars"])
def test_a_full_disk_names_the_run_and_leaves_nothing(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """A full disk used to be reported in the OS's words with no path."""
    import errno

    import polars as pl

    from allocator.runs import writer

    def full(frame: pl.DataFrame, path: Path) -> None:
        if how == "oserror":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        raise pl.exceptions.ComputeError("No space left on device (os error 28)")

    run = tmp_path / "run"
    assert _allocate(data, run).exit_code == 0
    before = _digest(run)
    monkeypatch.setattr(writer, "write_parquet", full)
    r = _allocate(data, run, "--force")
    assert r.exit_code == 2, r.output
    assert f"cannot write the run directory {run}" in r.stderr
    assert "No space left on device" in r.stderr and "Traceback" not in r.output
    if how == "oserror":
        assert "allocations.parquet" in r.stderr  # the file that could not be written
    assert _digest(run) == before  # the earlier run is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no staging left behind
