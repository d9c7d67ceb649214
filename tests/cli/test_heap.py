"""The process's memory settings: which jemalloc setting each command gets, and glibc's."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from allocator.cli import heap


@pytest.mark.parametrize(
    ("argv", "conf"),
    [
        (["studio", "--no-browser"], heap.STUDIO_MALLOC_CONF),
        (["--help"], heap.POLARS_MALLOC_CONF),
        (["allocate", "--scenario", "studio.toml"], heap.POLARS_MALLOC_CONF),
        ([], heap.POLARS_MALLOC_CONF),
    ],
)
def test_the_studio_keeps_freed_pages_and_other_commands_return_them(
    argv: list[str], conf: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("_RJEM_MALLOC_CONF", raising=False)
    heap.memory_for(argv)
    assert os.environ["_RJEM_MALLOC_CONF"] == conf


def test_a_setting_in_the_environment_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("_RJEM_MALLOC_CONF", "dirty_decay_ms:5")
    heap.memory_for(["studio"])
    assert os.environ["_RJEM_MALLOC_CONF"] == "dirty_decay_ms:5"


def test_the_command_sets_polars_memory_before_polars_is_imported() -> None:
    code = (
        "import os, sys; sys.argv = ['allocator', 'studio', '--help']; import allocator.cli; "
        "print('polars' in sys.modules, os.environ['_RJEM_MALLOC_CONF'])"
    )
    env = {k: v for k, v in os.environ.items() if k != "_RJEM_MALLOC_CONF"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    ).stdout.split()
    assert out == ["False", heap.STUDIO_MALLOC_CONF]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_glibc_takes_the_array_settings() -> None:
    assert heap.keep_freed_arrays() is True
    assert heap.keep_freed_arrays(heap.STUDIO_TRIM_THRESHOLD) is True
