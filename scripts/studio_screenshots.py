"""Screenshots of the policy studio for the documentation (docs/images/studio-*.png).

Starts ``allocator studio`` on the built-in data and the baseline scenario, opens the page in
Chromium (Playwright, Debian's ``chromium``: Playwright cannot download one here), pins the
baseline, moves the fairness alpha to 2 with the keyboard, and writes:

- ``docs/images/studio-overview.png``: the page as it opens (the baseline);
- ``docs/images/studio-compare.png``: alpha = 2 against the pinned baseline.

Each is the top of the page (at most ``--height`` pixels) at 1400 pixels wide. Run from the
repository root, after ``python3 tasks.py run`` (or let the studio generate the data first)::

    .venv/bin/python scripts/studio_screenshots.py
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
WIDTH = 1400
ALPHA = "Fairness (alpha)"
MEDIAN = "Median share of the loss repaid"


def _chromium() -> str:
    found = shutil.which("chromium") or (
        "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None
    )
    if found is None:
        sys.exit("no chromium executable (Debian: apt-get install chromium)")
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(port: int) -> tuple[subprocess.Popen[str], str]:
    """``allocator studio --no-browser`` on the built-in data; the process and its URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "allocator", "studio", "--no-browser", "--port", str(port), "-q"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()  # after loading the data (minutes if it is generated)
    if not url.startswith("http://"):
        _stop(proc)
        sys.exit(f"allocator studio did not start (printed {url!r})")
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5):
                return proc, url
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                _stop(proc)
                sys.exit(f"{url} does not answer")
            time.sleep(0.2)


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


def _median(page: Any) -> str:
    return str(page.locator(f"div.headline[data-label='{MEDIAN}'] .value").inner_text())


def _wait_until(page: Any, test: Any, what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not test():
        if time.monotonic() > deadline:
            sys.exit(f"timed out waiting for {what}")
        page.wait_for_timeout(100)


def _steady(page: Any, seconds: float = 3) -> None:
    """Wait until the headline has not changed for ``seconds`` (every step of the slider
    re-runs the page; the last step's allocation is the one to show)."""
    cards = page.locator("div.headline")
    last, since = cards.all_inner_texts(), time.monotonic()
    while time.monotonic() - since < seconds:
        page.wait_for_timeout(250)
        now = cards.all_inner_texts()
        if now != last:
            last, since = now, time.monotonic()


def _settle(page: Any) -> None:
    """Wait for the charts to be drawn (Vega renders after the cells' outputs arrive)."""
    page.wait_for_timeout(1500)


def _shoot(page: Any, path: Path, height: int) -> None:
    """The top ``height`` pixels of the page. marimo scrolls inside ``#App``, so the viewport
    is grown to the page's height first (a full-page shot of a 1000-pixel viewport would stop
    at 1000), then back."""
    full = int(page.evaluate("document.getElementById('App')?.scrollHeight ?? 1000"))
    page.set_viewport_size({"width": WIDTH, "height": max(1000, min(full, height))})
    # no focus ring, value bubble or hover menu in the picture
    page.evaluate("document.activeElement?.blur()")
    page.mouse.move(WIDTH - 1, 0)
    _settle(page)
    page.screenshot(
        path=str(path), clip={"x": 0, "y": 0, "width": WIDTH, "height": min(full, height)}
    )
    page.set_viewport_size({"width": WIDTH, "height": 1000})
    _shrink(path)
    print(f"{path.relative_to(ROOT)}: {path.stat().st_size / 1024:,.0f} KiB")


def _shrink(path: Path) -> None:
    """256 colours, no dithering: a third of the size, and a screenshot's flat colours keep."""
    try:
        from PIL import Image
    except ImportError:  # Pillow comes with the environment; without it, keep the full PNG
        return
    with Image.open(path) as image:
        small = image.convert("RGB").quantize(
            colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE
        )
    small.save(path, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    parser.add_argument("--height", type=int, default=1600, help="pixels kept from the top")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    from playwright.sync_api import sync_playwright

    proc, url = _start(_free_port())
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"])
            try:
                page = browser.new_page(viewport={"width": WIDTH, "height": 1000})
                page.set_default_timeout(90_000)
                page.goto(url)
                page.locator("div.headline").first.wait_for()
                page.locator(".vega-embed").first.wait_for()
                _shoot(page, args.out / "studio-overview.png", args.height)

                page.get_by_role("button", name="Pin this setting as the reference").click()
                _wait_until(
                    page,
                    lambda: "pinned:" in page.locator("div.headline").first.inner_text(),
                    "the pin",
                )
                before = _median(page)
                slider = page.get_by_role("slider", name=ALPHA)
                slider.focus()
                while float(slider.get_attribute("aria-valuenow")) < 2.0:
                    page.keyboard.press("ArrowRight")
                    page.wait_for_timeout(150)
                _wait_until(page, lambda: _median(page) != before, "the page to follow alpha = 2")
                _steady(page)
                _shoot(page, args.out / "studio-compare.png", args.height)
            finally:
                browser.close()
    finally:
        _stop(proc)


if __name__ == "__main__":
    main()
