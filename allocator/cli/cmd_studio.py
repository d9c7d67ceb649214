"""``allocator studio``: the policy studio, a local web page (see :mod:`allocator.studio`)."""

from __future__ import annotations

import ipaddress
import socket
import webbrowser
from pathlib import Path
from typing import Annotated

import typer

from allocator.analysis.explain import SCENARIOS_DIR
from allocator.cli.app import app, err_console, guarded
from allocator.cli.common import progress_printer, resolve_data_dir
from allocator.errors import AllocatorError

#: The default port (marimo's own default, 2718).
DEFAULT_PORT = 2718


def _check_address(host: str, port: int) -> None:
    if not 1 <= port <= 65535:
        raise AllocatorError(
            f"--port must be between 1 and 65535 (e.g. {DEFAULT_PORT}), not {port}."
        )
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if host != "localhost":
            raise AllocatorError(
                f"--host must be an IP address such as 127.0.0.1 (or localhost), not {host!r}."
            ) from None
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError as exc:
            raise AllocatorError(
                f"cannot listen on {host}:{port}: {exc.strerror or exc}.",
                hint=f"choose another port, e.g. --port {port + 1}",
            ) from None


@app.command("studio")
@guarded
def studio_cmd(
    data: Annotated[
        Path | None, typer.Option("--data", help="Data directory (default: built-in data).")
    ] = None,
    scenario: Annotated[
        Path, typer.Option("--scenario", help="Scenario the page starts from.")
    ] = SCENARIOS_DIR / "baseline.toml",
    host: Annotated[
        str, typer.Option("--host", help="Address to listen on (this machine only by default).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = DEFAULT_PORT,
    no_browser: Annotated[
        bool, typer.Option("--no-browser", help="Do not open a browser; just print the address.")
    ] = False,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Load and check everything, make the first allocation, print the address and "
            "exit without serving (to check a setup).",
        ),
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress on stderr.")] = False,
) -> None:
    """Serve the policy studio: move the knobs, see the allocation, pin, compare and save.

    The data and the scenario are loaded and checked first; the page then answers each knob
    with the allocation ``allocator allocate`` would pay, to the cent. Ctrl-C stops it.

    Example: allocator studio

    Example: allocator studio --scenario scenarios/retail_first.toml --port 2720 --no-browser

    Example: allocator studio --dry-run
    """
    import uvicorn

    from allocator.studio.engine import Evaluation, shared_studio
    from allocator.studio.server import studio_asgi_app

    _check_address(host, port)
    progress = progress_printer(quiet)
    data_dir = resolve_data_dir(data)
    progress(f"loading and checking {data_dir} and {scenario}")
    studio = shared_studio(str(data_dir), str(scenario), default=True)
    progress("eligibility and the first allocation")
    studio.evaluate(studio.base)
    url = f"http://{host}:{port}/"
    if dry_run:
        first = studio.evaluate(studio.base)
        err_console.print(
            f"ready: {first.run.allocations.height:,} eligible users, the first allocation in "
            f"{first.seconds:.2f} s; would serve {url}"
        )
        print(url, flush=True)
        studio.close()
        return
    progress("warming up")
    from allocator.studio import views

    def draw(result: Evaluation) -> None:
        views.draw(result.run, None if studio.pinned is None else studio.pinned.run)

    studio.warm_up(draw=draw)
    from allocator.cli.lazy import load_deferred

    load_deferred()  # before the server's threads: a deferred module is loaded by one thread
    err_console.print(f"allocator studio at {url} (Ctrl-C stops it)")
    print(url, flush=True)
    if not no_browser:
        webbrowser.open(url)
    try:
        uvicorn.run(studio_asgi_app(), host=host, port=port, log_level="warning")
    finally:
        studio.close()
