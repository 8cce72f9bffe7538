"""Helpers for the dashboard browser tests: Debian's Chromium through Playwright (never a
downloaded browser), console-error collection, polling with a deadline."""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-quic",
    "--no-first-run", "--disable-component-update", "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCREENSHOT_DIR = os.path.join(REPO, "build", "screenshots")
VENDOR = os.path.join(REPO, "streamlab", "dashboard", "vendor")


def chromium_missing_reason() -> str | None:
    """Why the browser tests cannot run here (None when they can)."""
    if not os.path.exists(CHROMIUM):
        return f"{CHROMIUM} is not installed (Debian package chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright (Python) is not installed"
    return None


def vendor_missing_reason() -> str | None:
    """Why the player libraries are missing (run `make assets`), or None."""
    from streamlab.web.dashboard import DASHBOARD_DIR

    vendor = os.path.join(DASHBOARD_DIR, "vendor")
    need = ["hls.min.js", "dash.all.min.js", "shaka-player.compiled.js", "uPlot.iife.min.js", "uPlot.min.css"]
    missing = [n for n in need if not os.path.exists(os.path.join(vendor, n))]
    if missing:
        return f"dashboard vendor files missing ({', '.join(missing)}): run `make assets`"
    return None


def browser_marks() -> list[Any]:
    """The ``pytestmark`` of a browser test module: ``browser``, plus a skip with the
    printed reason when Chromium or the vendored players are missing."""
    reason = chromium_missing_reason() or vendor_missing_reason()
    marks: list[Any] = [pytest.mark.browser]
    if reason:
        marks.append(pytest.mark.skip(reason=reason))
    return marks


def ffmpeg_path() -> str | None:
    """ffmpeg on PATH."""
    return shutil.which("ffmpeg")


class ConsoleErrors:
    """Collects console errors and uncaught page errors of a Playwright page."""

    def __init__(self, page: Any) -> None:
        self.items: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.items.append(f"pageerror: {exc}"))

    def _console(self, msg: Any) -> None:
        if msg.type == "error":
            self.items.append(f"console.error: {msg.text} @ {msg.location.get('url', '')}")

    def clear(self) -> None:
        """Forget what was collected so far."""
        self.items.clear()


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    """Poll *predicate* until it returns something truthy; AssertionError after *timeout*."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def screenshot(page: Any, name: str) -> str:
    """Full-page screenshot under build/screenshots/ (gitignored)."""
    os.makedirs(SCREENSHOT_DIR, exist_ok=True)
    path = os.path.join(SCREENSHOT_DIR, f"{name}.png")
    page.screenshot(path=path, full_page=True)
    return path


def route_player_pages(ctx: Any, page_for: Callable[[str], str]) -> None:
    """Serve ``/__players/<name>`` on whatever origin a page loads from: the vendored
    player script for ``*.js``, else the HTML *page_for* returns for the name without
    ``.html`` -- so a test page runs on the very port it plays from (no CORS in the way)."""

    def serve(route: Any) -> None:
        name = route.request.url.split("/__players/", 1)[1].split("?", 1)[0]
        if name.endswith(".js"):
            with open(os.path.join(VENDOR, name), "rb") as fh:
                route.fulfill(body=fh.read(), content_type="application/javascript")
        else:
            route.fulfill(body=page_for(name.removesuffix(".html")), content_type="text/html")

    ctx.route("**/__players/**", serve)


def poll_players(pages: dict[Any, Any], done: Callable[[dict], bool], seconds: float) -> dict[Any, dict]:
    """Every 0.5 s read ``{rec: window.rec, snap: window.snap()}`` from each page until
    *done* holds for all of them or *seconds* pass; the last readings."""
    deadline = time.monotonic() + seconds
    while True:
        next(iter(pages.values())).wait_for_timeout(500)
        results = {n: pg.evaluate("() => ({rec: window.rec, snap: window.snap()})")
                   for n, pg in pages.items()}
        if all(done(r) for r in results.values()) or time.monotonic() > deadline:
            return results


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """Headless Debian Chromium through Playwright (never a downloaded browser), closed
    afterwards: the body of every module-scoped ``browser`` fixture."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@contextlib.contextmanager
def dashboard_page(browser: Any, width: int = 1440, height: int = 900) -> Iterator[Any]:
    """A fresh context and page of *browser* (20 s default timeout); ``.errors`` collects
    console errors.  The body of every ``page`` fixture."""
    ctx = browser.new_context(viewport={"width": width, "height": height})
    try:
        pg = ctx.new_page()
        pg.set_default_timeout(20000)
        pg.errors = ConsoleErrors(pg)
        yield pg
    finally:
        ctx.close()
