"""check-budget holds a run to the exact file contract: tamperings that once passed it, each with
and without the manifest's hashes rewritten to match."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import polars as pl
import pytest
from clihelp import invoke, rehash_outputs, strict_json

from allocator import names as N
from allocator.data.synthetic import generate
from allocator.runs.contract import EXCLUDED_COLUMNS
from allocator.vouchers.eligibility import excluded_columns

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("contract")
    generate(base / "data", users=1500, seed=12)
    run = base / "run"
    r = invoke(
        "allocate", "--scenario", ROOT / "scenarios" / "baseline.toml", "--data", base / "data",
        "--out", run, "-q", "--set", "budget.total_usd=1.5e6",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    return run


@pytest.fixture
def run(pristine: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(pristine, out)
    return out


def _failed(run: Path) -> set[str]:
    r = invoke("check-budget", run, "--json")
    assert r.exit_code in (0, 1), r.output
    return set(strict_json(r.stdout)["failed"])


def test_the_pristine_run_passes(pristine: Path) -> None:
    assert _failed(pristine) == set()


def test_the_contract_and_the_pipeline_agree_on_excluded_columns() -> None:
    assert tuple(excluded_columns()) == EXCLUDED_COLUMNS


@pytest.mark.parametrize("rehash", [False, True], ids=["plain", "rehashed"])
def test_an_extra_column_is_refused(run: Path, rehash: bool) -> None:
    path = run / N.ALLOCATIONS_FILE
    pl.read_parquet(path).with_columns(pl.lit(1).alias("note")).write_parquet(path)
    if rehash:
        rehash_outputs(run)
    assert "allocations file" in _failed(run)


@pytest.mark.parametrize("rehash", [False, True], ids=["plain", "rehashed"])
def test_an_extra_payouts_column_is_refused(run: Path, rehash: bool) -> None:
    path = run / N.PAYOUTS_FILE
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0] + ",note"] + [ln + ",x" for ln in lines[1:]]) + "\n")
    if rehash:
        rehash_outputs(run)
    failed = _failed(run)
    assert "payouts file" in failed and "payout rows" in failed


@pytest.mark.parametrize("spelling", ["0{}", "+{}", " {}"])
def test_a_user_id_spelt_otherwise_is_refused(run: Path, spelling: str) -> None:
    path = run / N.PAYOUTS_FILE
    lines = path.read_text().splitlines()
    first = lines[1].split(",")
    first[0] = spelling.format(first[0])
    lines[1] = ",".join(first)
    path.write_text("\n".join(lines) + "\n")
    rehash_outputs(run)
    assert "payouts file" in _failed(run)


@pytest.mark.parametrize("token", ["NaN", "Infinity"])
def test_a_non_finite_number_in_the_manifest_is_refused(run: Path, token: str) -> None:
    path = run / N.MANIFEST_FILE
    text = path.read_text()
    key = '"shadow_price": '
    start = text.index(key) + len(key)
    end = min(text.index(c, start) for c in ",\n" if c in text[start:])
    path.write_text(text[:start] + token + text[end:])
    assert "manifest" in _failed(run)


@pytest.mark.parametrize("name", [N.PAYOUTS_FILE, N.MANIFEST_FILE, N.ALLOCATIONS_FILE])
def test_a_file_replaced_by_a_link_is_refused(run: Path, tmp_path: Path, name: str) -> None:
    elsewhere = tmp_path / f"elsewhere-{name}"
    shutil.copy(run / name, elsewhere)
    (run / name).unlink()
    (run / name).symlink_to(elsewhere)
    failed = _failed(run)
    assert failed, "a run holding a link must not pass"
    r = invoke("check-budget", run)
    assert "symbolic link" in r.stdout


def test_the_shipped_scenarios_announce_on_the_programmes_date() -> None:
    from datetime import datetime

    from allocator.runs.contract import PROGRAMME_ANNOUNCEMENTS
    from allocator.settings.scenarios import load_scenario
    from allocator.vouchers.pipeline import PROGRAMME

    published = datetime.fromisoformat(PROGRAMME_ANNOUNCEMENTS[PROGRAMME])
    for path in sorted((ROOT / "scenarios").glob("*.toml")):
        if not path.stem.startswith("loans"):
            assert load_scenario(path).payouts.announced_at == published, path.name


@pytest.mark.parametrize("hours", [24, -48])
def test_a_schedule_shifted_with_its_announcement_is_refused(run: Path, hours: int) -> None:
    """Moving announced_at and every batch together kept every window intact: the schedule is
    now measured from the programme's own announcement."""
    from datetime import datetime, timedelta

    path = run / N.MANIFEST_FILE
    man = json.loads(path.read_text())

    def shift(text: str) -> str:
        moved = datetime.fromisoformat(text.replace("Z", "+00:00")) + timedelta(hours=hours)
        return moved.isoformat()

    payouts = man["scenario"]["payouts"]
    payouts["announced_at"] = shift(payouts["announced_at"])
    for batch in man["payout_batches"]:
        for key in ("scheduled_at", "due_at"):
            batch[key] = shift(batch[key])
    path.write_text(json.dumps(man, sort_keys=True, indent=2) + "\n")
    failed = _failed(run)
    assert "payout schedule" in failed
    r = invoke("check-budget", run)
    assert "not the announcement of programme" in r.stdout
