"""``allocator studio`` refuses a bad setup before serving, in one paragraph, and --dry-run
checks a good one and exits."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from clihelp import invoke

from allocator.data.synthetic import generate

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("studio-cli") / "data"
    generate(out, users=1500, seed=3)
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_dry_run_loads_allocates_and_prints_the_address(data: Path, tmp_path: Path) -> None:
    scenario = tmp_path / "small.toml"
    scenario.write_text("[budget]\ntotal_usd = 1_500_000\n")
    port = _free_port()
    r = invoke("studio", "--data", data, "--scenario", scenario, "--dry-run", "--port", str(port))
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == f"http://127.0.0.1:{port}/"
    assert "ready:" in r.stderr and "eligible users" in r.stderr


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--port", "70000"], "--port must be between 1 and 65535"),
        (["--host", "example.org"], "--host must be an IP address"),
        (["--scenario", "nope.toml"], "nope.toml"),
        (["--data", "no-such-dir"], "no-such-dir"),
    ],
)
def test_a_bad_setup_is_refused_in_one_paragraph(
    tmp_path: Path, args: list[str], named: str
) -> None:
    r = invoke(
        "studio",
        "--dry-run",
        "--port",
        "2798",
        *[str(tmp_path / a) if a.startswith("no") else a for a in args],
    )
    assert r.exit_code == 2, r.output
    assert named in r.stderr and "Traceback" not in r.output


def test_a_busy_port_is_refused_with_another_to_try(data: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = invoke("studio", "--data", data, "--dry-run", "--port", str(port))
    assert r.exit_code == 2, r.output
    assert f"cannot listen on 127.0.0.1:{port}" in r.stderr and f"--port {port + 1}" in r.stderr
