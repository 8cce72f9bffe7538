"""The Scenarios page and the manifest-fault / probability / seed controls of the Testing
session page, as a tester uses them (Debian's Chromium via Playwright).

One daemon for the module.  Traffic on the session port comes from raw HTTP requests (the
rows are known and nothing depends on this Chromium's codecs); the player metrics an
expectation reads are posted through the API like a player would.  Screenshots land in
build/screenshots/scenarios_*.png (not committed).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from streamlab.testing.daemon import Daemon
from streamlab.testing.fixtures import install_test_item
from tests.integration.dashboard_helpers import (
    CHROMIUM,
    CHROMIUM_ARGS,
    ConsoleErrors,
    browser_marks,
    screenshot,
    wait_for,
)
from tests.integration.sessions_helpers import create_session, get, stable_seg, wait_item

pytestmark = browser_marks()

PLAYLIST = "/go-live/testclip/playlist_360p.m3u8"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, test_item: str) -> Iterator[Daemon]:
    d = Daemon(str(tmp_path_factory.mktemp("scenarios-ui")), session_ports=6,
               config={"live": {"worker_idle_timeout": "600"}})
    install_test_item(d.media_dir, source=test_item)
    d.start()
    wait_item(d)
    yield d
    d.stop()
    log = d.log()
    assert "Unhandled error" not in log and "Traceback" not in log, log[-4000:]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    ctx = browser.new_context(viewport={"width": 1440, "height": 900})
    pg = ctx.new_page()
    pg.set_default_timeout(20000)
    pg.errors = ConsoleErrors(pg)
    yield pg
    ctx.close()


def url(daemon: Daemon, route: str) -> str:
    return f"http://127.0.0.1:{daemon.port}/dashboard/#/{route}"


def sget(daemon: Daemon, sid: Any) -> dict:
    r = daemon.get(f"/api/session/{sid}")
    assert r.status == 200, r.text
    return r.json()


def fld(name: str) -> str:
    return f"[data-field='{name}']"


def _rewritten(page: Any) -> int:
    m = re.search(r"rewritten so far: (\d+)", page.inner_text("#manifest-fault-status"))
    return int(m.group(1)) if m else -1


# --------------------------------------------------------------------------- session controls


def test_manifest_fault_controls_patch_the_session(daemon: Daemon, page: Any) -> None:
    s = create_session(daemon, "qa-mfault")
    sid, port = s["session_id"], s["x_forwarded_port_external"]
    assert get(port, "/go-live/testclip/master.m3u8").status == 200  # the ladder becomes known
    page.goto(url(daemon, "session/qa-mfault?play=0&tab=manifest_fault"))
    page.wait_for_selector("#apply-manifest-fault")
    assert page.is_visible("#apply-manifest-fault")

    # a stale playlist for 60 s: type + value, Apply -> one PATCH of the session
    page.select_option(fld("manifest_fault_type"), "stale_playlist")
    assert "0 = 10" in page.inner_text("[data-panel='manifest_fault']")  # the value's meaning
    page.fill(fld("manifest_fault_value"), "60")
    page.click("#apply-manifest-fault")
    wait_for(lambda: sget(daemon, sid)["manifest_fault_type"] == "stale_playlist", 5, "the fault armed")
    assert sget(daemon, sid)["manifest_fault_value"] == 60
    assert page.eval_on_selector("button.tab[data-tab='manifest_fault']",
                                 "b => b.classList.contains('armed')")

    # the player's reloads are answered with the frozen text, flagged: the tab counts them
    frozen = get(port, PLAYLIST).body
    wait_for(lambda: daemon.get(PLAYLIST).body != frozen, 15, "the live playlist to move on")
    assert get(port, PLAYLIST).body == frozen
    wait_for(lambda: _rewritten(page) >= 2, 10, "the rewritten answers counted in the tab")
    assert sget(daemon, sid)["fault_count_stale_playlist"] == _rewritten(page)

    # Re-arm sends the same values again: the fault's memory starts over, so the next
    # answer is a new (later) frozen playlist
    page.click("#rearm-manifest-fault")
    wait_for(lambda: get(port, PLAYLIST).body != frozen, 10, "a fresh frozen playlist after re-arming")
    assert sget(daemon, sid)["manifest_fault_type"] == "stale_playlist"

    # variant_removed: the variants field appears, a chip adds a rung
    page.select_option(fld("manifest_fault_type"), "variant_removed")
    assert page.is_disabled(fld("manifest_fault_value"))
    chip = page.locator("[data-panel='manifest_fault'] button.chip").first
    rung = chip.inner_text()
    chip.click()
    page.click("#apply-manifest-fault")
    wait_for(lambda: sget(daemon, sid)["manifest_fault_type"] == "variant_removed", 5,
             "variant_removed armed")
    assert sget(daemon, sid)["manifest_fault_variants"] == [rung]
    master = get(port, "/go-live/testclip/master.m3u8").body.decode()
    assert rung not in master, master

    # a bad value: the reason under the control, nothing changes on the server
    page.select_option(fld("manifest_fault_type"), "sequence_jump")
    page.fill(fld("manifest_fault_value"), "999999")
    page.click("#apply-manifest-fault")
    page.wait_for_selector("[data-error-for='manifest_fault_value']:not(:empty)")
    assert sget(daemon, sid)["manifest_fault_type"] == "variant_removed"
    page.errors.clear()  # the browser logs the 400 answer itself

    page.click("#disarm-manifest-fault")
    wait_for(lambda: sget(daemon, sid)["manifest_fault_type"] == "none", 5, "disarmed")
    screenshot(page, "scenarios_manifest_fault_tab")
    assert not page.errors.items, page.errors.items


def test_probability_and_seed_controls_patch_the_session(daemon: Daemon, page: Any) -> None:
    s = create_session(daemon, "qa-prob")
    sid, port = s["session_id"], s["x_forwarded_port_external"]
    for _ in range(4):  # a few segment requests: the tab says how often the rule will fire
        assert get(port, stable_seg()).status == 200
    page.goto(url(daemon, "session/qa-prob?play=0&tab=segment"))
    page.wait_for_selector("#apply-segment")
    page.select_option(fld("segment_failure_type"), "404")
    page.fill(fld("segment_failure_probability"), "0.5")
    wait_for(lambda: "with probability 0.5 this rule fires about 2 times a minute"
             in page.inner_text("[data-expect='segment']"), 5, "the expected rate in words")
    page.click("#apply-segment")
    wait_for(lambda: sget(daemon, sid)["segment_failure_probability"] == 0.5, 5, "probability set")
    assert sget(daemon, sid)["segment_failure_type"] == "404"

    # the seed the session drew is shown; a new one is sent as is
    wait_for(lambda: page.input_value("#session-seed") == str(sget(daemon, sid)["seed"]), 5, "seed shown")
    page.fill("#session-seed", "1234")
    with page.expect_response(lambda r: r.request.method == "PATCH"):
        page.click("#apply-seed")
    assert sget(daemon, sid)["seed"] == 1234
    first = [get(port, stable_seg()).status for _ in range(12)]
    assert set(first) == {200, 404}, first
    # "Set seed" again with the same value replays the same faults from the start
    with page.expect_response(lambda r: r.request.method == "PATCH"):
        page.click("#apply-seed")
    again = [get(port, stable_seg()).status for _ in range(12)]
    assert again == first
    assert not page.errors.items, page.errors.items
