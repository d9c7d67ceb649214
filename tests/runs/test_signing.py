"""Maker and checker: a run signed with the maker's key passes check-budget --verify-key; any
edit made without that key fails it, even with every hash in the manifest rewritten."""

from __future__ import annotations

import hashlib
import json
import stat
from pathlib import Path

import polars as pl
import pytest
from clihelp import invoke, rehash_outputs, strict_json

from allocator import names as N
from allocator.data.synthetic import generate
from allocator.runs.signing import PRIVATE_KEY_FILE, PUBLIC_KEY_FILE, SIGNATURE_FILE

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("signing") / "data"
    generate(out, users=1500, seed=4)
    return out


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("keys") / "keys"
    r = invoke("keys", "new", "--out", out)
    assert r.exit_code == 0, r.output
    return out


def _signed_run(data: Path, keys: Path, out: Path) -> Path:
    r = invoke(
        "allocate", "--scenario", ROOT / "scenarios" / "baseline.toml", "--data", data,
        "--out", out, "-q", "--set", "budget.total_usd=1.5e6",
        "--sign-key", keys / PRIVATE_KEY_FILE,
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    return out


def _verify(run: Path, key: Path) -> dict:
    r = invoke("check-budget", run, "--verify-key", key, "--json")
    assert r.exit_code in (0, 1), r.output
    return {c["name"]: c for c in strict_json(r.stdout)["checks"]}


def test_keys_are_made_once_and_the_private_one_is_private(keys: Path) -> None:
    mode = stat.S_IMODE((keys / PRIVATE_KEY_FILE).stat().st_mode)
    assert mode == 0o600
    assert b"PUBLIC KEY" in (keys / PUBLIC_KEY_FILE).read_bytes()
    again = invoke("keys", "new", "--out", keys)
    assert again.exit_code == 2 and "refusing to replace a signing key" in again.stderr


def test_a_signed_run_verifies(data: Path, keys: Path, tmp_path: Path) -> None:
    run = _signed_run(data, keys, tmp_path / "run")
    checks = _verify(run, keys / PUBLIC_KEY_FILE)
    assert all(c["ok"] for c in checks.values()) and "signature" in checks
    doc = json.loads((run / SIGNATURE_FILE).read_text())
    assert (
        doc["manifest_sha256"] == hashlib.sha256((run / N.MANIFEST_FILE).read_bytes()).hexdigest()
    )
    # without --verify-key, check-budget is what it was (the signature is not required)
    plain = invoke("check-budget", run, "--json")
    assert plain.exit_code == 0 and "signature" not in [
        c["name"] for c in strict_json(plain.stdout)["checks"]
    ]


@pytest.mark.parametrize("rehash", [False, True], ids=["plain", "rehashed"])
def test_an_edit_without_the_key_fails(
    data: Path, keys: Path, tmp_path: Path, rehash: bool
) -> None:
    run = _signed_run(data, keys, tmp_path / "run")
    path = run / N.PAYOUTS_FILE
    lines = path.read_text().splitlines()
    lines[1] = lines[1].replace(",", ",", 1)  # keep the structure: then change one amount
    head, first = lines[0].split(","), lines[1].split(",")
    amount = head.index("amount")
    first[amount] = f"{float(first[amount]) + 1:.2f}"
    lines[1] = ",".join(first)
    path.write_text("\n".join(lines) + "\n")
    if rehash:
        rehash_outputs(run)
    checks = _verify(run, keys / PUBLIC_KEY_FILE)
    failed = {name for name, c in checks.items() if not c["ok"]}
    assert ("signature" in failed) == rehash  # re-hashing the manifest breaks the signature...
    assert failed  # ...and not re-hashing breaks the hashes: either way the run is refused


def test_another_key_or_no_signature_fails(data: Path, keys: Path, tmp_path: Path) -> None:
    run = _signed_run(data, keys, tmp_path / "run")
    other = tmp_path / "other"
    assert invoke("keys", "new", "--out", other).exit_code == 0
    checks = _verify(run, other / PUBLIC_KEY_FILE)
    assert not checks["signature"]["ok"] and "another key" in checks["signature"]["detail"]
    (run / SIGNATURE_FILE).unlink()
    checks = _verify(run, keys / PUBLIC_KEY_FILE)
    assert not checks["signature"]["ok"] and "not signed" in checks["signature"]["detail"]
    # a signature re-made with a forged key for the edited manifest does not help either
    _signed_run(data, other, tmp_path / "forged")
    (tmp_path / "forged" / SIGNATURE_FILE).replace(run / SIGNATURE_FILE)
    assert not _verify(run, keys / PUBLIC_KEY_FILE)["signature"]["ok"]


def test_bad_key_files_are_input_errors(data: Path, keys: Path, tmp_path: Path) -> None:
    junk = tmp_path / "junk.pub"
    junk.write_text("not a key")
    run = _signed_run(data, keys, tmp_path / "run")
    r = invoke("check-budget", run, "--verify-key", junk)
    assert r.exit_code == 2 and "junk.pub is not an Ed25519 public key" in r.stderr
    r = invoke(
        "allocate", "--scenario", ROOT / "scenarios" / "baseline.toml", "--data", data,
        "--out", tmp_path / "x", "--sign-key", keys / PUBLIC_KEY_FILE,
    )  # fmt: skip
    assert r.exit_code == 2 and "private key" in r.stderr and not (tmp_path / "x").exists()
    assert pl.read_parquet(run / N.ALLOCATIONS_FILE).height > 0
