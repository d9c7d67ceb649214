"""``allocator studio`` end to end: the served page in a real browser (Chromium via Playwright).

The server runs as the command a user types; the page is driven with the keyboard and the
mouse; every number it shows is checked against the library's allocation of the same setting,
and the scenario it saves is allocated by ``allocator allocate`` and compared user by user.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from allocator import names as N
from allocator.data.synthetic import generate
from allocator.settings.models import Scenario
from allocator.settings.scenarios import load_scenario, with_overrides
from allocator.studio import views as V
from allocator.vouchers.pipeline import DataSession, RunResult, allocate

ROOT = Path(__file__).resolve().parents[2]


def _chromium() -> str | None:
    found = shutil.which("chromium")
    if found:
        return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None


CHROMIUM = _chromium()
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no chromium executable (neither `chromium` on PATH nor /usr/bin/chromium); "
    "the studio page test needs a browser (Debian: apt-get install chromium)",
)

#: Generous: the first page load compiles the page's cells (seconds on a loaded CI machine).
LOAD_MS = 90_000
STEP_MS = 60_000
ALPHA = "Fairness (alpha)"
MEDIAN = "Median share of the loss repaid"
LARGEST = "Paid their largest voucher"


# ---------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("studio-data") / "data"
    generate(out, users=3000, seed=7)
    return out


@pytest.fixture(scope="module")
def scenario_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The baseline, its budget scaled to the 3,000-user data set (USD 3M, as the axioms test)."""
    text = (ROOT / "scenarios" / "baseline.toml").read_text(encoding="utf-8")
    scaled, n = re.subn(r"(?m)^total_usd = .*$", "total_usd = 3_000_000.00", text)
    assert n == 1, "scenarios/baseline.toml has no `total_usd = ...` line to scale"
    out = tmp_path_factory.mktemp("studio-scenario") / "baseline.toml"
    out.write_text(scaled, encoding="utf-8")
    return out


class Library:
    """The allocations the page must show, computed in the test process."""

    def __init__(self, data: Path, scenario_file: Path) -> None:
        self.session = DataSession.open(data)
        self.base = load_scenario(scenario_file)
        assert self.base.budget.total_usd == 3_000_000

    def scenario(self, alpha: float) -> Scenario:
        return with_overrides(self.base, {"objective.alpha": alpha})

    def run(self, alpha: float) -> RunResult:
        return allocate(self.session, self.scenario(alpha), with_payouts=False)


@pytest.fixture(scope="module")
def library(data: Path, scenario_file: Path) -> Library:
    return Library(data, scenario_file)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _read_line(stream: Any, timeout: float) -> str:
    """The first line of ``stream`` within ``timeout`` seconds ('' at end of file)."""
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: lines.put(stream.readline()), daemon=True).start()
    try:
        return lines.get(timeout=timeout)
    except queue.Empty:
        return ""


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


@pytest.fixture(scope="module")
def server(
    data: Path, scenario_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """``allocator studio --no-browser`` on a free port; yields the URL it prints."""
    log = tmp_path_factory.mktemp("studio-server") / "stderr.txt"
    port = _free_port()
    cmd = [
        sys.executable, "-m", "allocator", "studio", "--no-browser", "--port", str(port),
        "--data", str(data), "--scenario", str(scenario_file), "-q",
    ]  # fmt: skip
    with log.open("w", encoding="utf-8") as err:
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            url = _read_line(proc.stdout, timeout=120).strip()
            assert url == f"http://127.0.0.1:{port}/", (
                f"`allocator studio` printed {url!r} (exit code {proc.poll()}); stderr:\n"
                + log.read_text(encoding="utf-8")
            )
            deadline = time.monotonic() + 60
            while True:
                try:
                    with urllib.request.urlopen(url, timeout=5) as response:
                        assert response.status == 200
                    break
                except OSError:
                    assert proc.poll() is None, "the studio stopped:\n" + log.read_text("utf-8")
                    assert time.monotonic() < deadline, f"{url} does not answer within 60 s"
                    time.sleep(0.2)
            yield url
        finally:
            _stop(proc)


# ---------------------------------------------------------------------------- page helpers


def _cards(page: Any) -> dict[str, dict[str, str | None]]:
    """Every headline card as ``{label: {"value": ..., "pinned": ... or None}}``."""
    out: dict[str, dict[str, str | None]] = {}
    for card in page.locator("div.headline").all():
        label = card.get_attribute("data-label")
        assert label is not None
        pinned = re.search(r"(?m)^pinned: (.*)$", card.inner_text())
        out[label] = {
            "value": card.locator(".value").inner_text().strip(),
            "pinned": pinned.group(1).strip() if pinned else None,
        }
    return out


def _expected(run: RunResult, ref: RunResult | None = None) -> dict[str, dict[str, str | None]]:
    return {i.label: {"value": i.value, "pinned": i.pinned} for i in V.headline(run, ref)}


def _label(cards: dict[str, Any], prefix: str) -> str:
    found = [label for label in cards if label.startswith(prefix)]
    assert len(found) == 1, f"no single card labelled {prefix!r}…: {list(cards)}"
    return found[0]


def _wait_for_cards(page: Any, want: dict[str, dict[str, str | None]]) -> None:
    """Wait until the headline cards are ``want`` (the page re-runs its cells asynchronously)."""
    deadline = time.monotonic() + STEP_MS / 1000
    while True:
        got = _cards(page)
        if got == want or time.monotonic() > deadline:
            break
        page.wait_for_timeout(100)
    assert got == want


def _press_alpha_right(page: Any) -> None:
    slider = page.get_by_role("slider", name=ALPHA)
    slider.focus()
    page.keyboard.press("ArrowRight")


def _alpha_shown(page: Any) -> float:
    return float(page.get_by_role("slider", name=ALPHA).get_attribute("aria-valuenow"))


def _screenshot(page: Any, path: Path) -> None:
    """The whole page for debugging (marimo scrolls inside ``#App``: the viewport grows to its
    height); never raises, so that it cannot hide the failure it documents."""
    with contextlib.suppress(Exception):
        height = page.evaluate("document.getElementById('App')?.scrollHeight ?? 1000")
        page.set_viewport_size({"width": 1400, "height": min(int(height), 6000)})
    with contextlib.suppress(Exception):
        page.screenshot(path=str(path), full_page=True)


def _type(page: Any, label: str, text: str) -> None:
    """Type into a marimo text box and leave it (its value is sent on blur, not per key)."""
    box = page.get_by_role("textbox", name=label)
    box.fill(text)
    box.press("Tab")


# ---------------------------------------------------------------------------- the test


def test_page_matches_the_library_and_saves_what_it_shows(
    server: str, library: Library, data: Path, tmp_path: Path
) -> None:
    from playwright.sync_api import sync_playwright

    base, at_125, at_150 = library.run(1.0), library.run(1.25), library.run(1.5)
    problems: list[str] = []
    shot = tmp_path / "studio.png"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(STEP_MS)

            def console(message: Any) -> None:
                if message.type == "error":
                    problems.append(f"console error: {message.text}")

            page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
            page.on("console", console)
            try:
                page.goto(server, timeout=LOAD_MS)
                page.locator("div.headline").first.wait_for(timeout=LOAD_MS)

                # 1. the headline is the baseline's, as the library computes and words it
                expected = _expected(base)
                _wait_for_cards(page, expected)
                cards = _cards(page)
                assert cards["Eligible users"]["value"] == f"{base.allocations.height:,}"
                assert cards["Paid"]["value"] == V.usd(base.paid_cents / 100, cents=True)
                assert V.as_dict(V.headline(base))["Paid"] == "USD 3,000,000.00"
                assert _alpha_shown(page) == 1.0
                # every chart is drawn: the five the page sends as Vega-Lite JSON
                charts = page.locator(".vega-embed")  # the locator sees into shadow roots
                charts.nth(4).locator("canvas, svg").first.wait_for(timeout=LOAD_MS)
                assert charts.count() == 5

                # 2. one step right on the alpha slider, with the keyboard: alpha 1.25
                median, largest = MEDIAN, _label(cards, LARGEST)
                assert (expected[median], expected[largest]) != (
                    _expected(at_125)[median],
                    _expected(at_125)[largest],
                ), "alpha 1.25 must change a card for this test to see the page follow"
                _press_alpha_right(page)
                _wait_for_cards(page, _expected(at_125))
                assert _alpha_shown(page) == 1.25

                # 3. pin it, move on to 1.5: every card shows both, the pinned line 1.25's
                page.get_by_role("button", name="Pin this setting as the reference").click()
                _wait_for_cards(page, _expected(at_125, at_125))
                _press_alpha_right(page)
                _wait_for_cards(page, _expected(at_150, at_125))
                assert _alpha_shown(page) == 1.5
                pinned_median = page.locator(f"div.headline[data-label='{median}']")
                assert f"pinned: {_expected(at_125)[median]['value']}" in pinned_median.inner_text()

                # 4. one user explained under the setting shown
                paid = at_150.allocations.sort(N.USER_ID)
                user = int(paid[N.USER_ID][paid.height // 2])
                _type(page, "User id", str(user))
                page.get_by_role("button", name="Explain this user").click()
                explanation = page.locator("pre.explanation")
                explanation.wait_for()
                text = explanation.inner_text()
                assert f"user {user}" in text and "status: paid" in text, text
                cents = int(paid.filter(pl.col(N.USER_ID) == user)[N.VOUCHER_CENTS][0])
                assert f"status: paid {cents / 100:,.2f} USD" in text, text

                # 5. save the setting shown; `allocator allocate` on the file pays the same cents
                saved = tmp_path / "my_policy.toml"
                _type(page, "Save as", str(saved))
                page.get_by_role("button", name="Save the scenario").click()
                page.get_by_text(re.compile(r"^Saved ")).first.wait_for()
                assert saved.is_file()
            except BaseException as exc:
                exc.add_note(f"screenshot of the page: {shot}")
                raise
            finally:
                _screenshot(page, shot)
        finally:
            browser.close()
    assert not problems, f"the page reported errors (screenshot {shot}):\n" + "\n".join(problems)

    assert load_scenario(saved).objective.alpha == 1.5
    out = tmp_path / "run"
    r = subprocess.run(
        [sys.executable, "-m", "allocator", "allocate", "--scenario", str(saved),
         "--data", str(data), "--out", str(out), "-q"],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    written = pl.read_parquet(out / "allocations.parquet").select(N.USER_ID, N.VOUCHER_CENTS)
    want = at_150.allocations.select(N.USER_ID, pl.col(N.VOUCHER_CENTS).alias("library"))
    both = written.join(want, on=N.USER_ID, how="full", coalesce=True)
    assert both.height == want.height == written.height == base.allocations.height
    differ = both.filter(pl.col(N.VOUCHER_CENTS).ne_missing(pl.col("library")))
    assert differ.is_empty(), differ
    assert int(written[N.VOUCHER_CENTS].sum()) == at_150.paid_cents
    # the saved setting is not the baseline's: the check above would catch a file saved at 1.0
    assert not (
        want.join(base.allocations.select(N.USER_ID, N.VOUCHER_CENTS), on=N.USER_ID)
        .filter(pl.col(N.VOUCHER_CENTS) != pl.col("library"))
        .is_empty()
    )
