"""The studio page as an ASGI application (marimo's run mode, in this process)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import marimo

#: The marimo app file of the page.
APP_FILE = Path(__file__).with_name("app.py")


def studio_asgi_app() -> Any:
    """The page at ``/``; its sessions run in this process and share the loaded studio."""
    return marimo.create_asgi_app(quiet=True).with_app(path="", root=str(APP_FILE)).build()
