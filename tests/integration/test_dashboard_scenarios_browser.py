"""The Scenarios page and the manifest-fault / probability / seed controls of the Testing
session page, as a tester uses them (Debian's Chromium via Playwright).

One daemon for the module.  Traffic on the session port comes from raw HTTP requests (the
rows are known and nothing depends on this Chromium's codecs); the player metrics an
expectation reads are posted through the API like a player would.  Screenshots land in
build/screenshots/scenarios_*.png (not committed).
"""

from __future__ import annotations

import functools
import json
import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from streamlab.testing.daemon import Daemon
from tests.integration.dashboard_helpers import (
    browser_marks,
    chromium,
    dashboard_page,
    screenshot,
    wait_for,
)
from tests.integration.sessions_helpers import create_session, get, serving, stable_seg

pytestmark = browser_marks()

PLAYLIST = "/go-live/testclip/playlist_360p.m3u8"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, test_item: str) -> Iterator[Daemon]:
    d = Daemon(str(tmp_path_factory.mktemp("scenarios-ui")), session_ports=6,
               config={"live": {"worker_idle_timeout": "600"}})
    with serving(d, source=test_item):
        yield d


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as b:
        yield b


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    with dashboard_page(browser) as pg:
        yield pg


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


def _click_and_settle(page: Any, button: str) -> None:
    """Click a dashboard button that PATCHes the session and wait until the page has
    applied the answer (the button is disabled until then): the answer re-writes the
    controls it sent, so selecting another value before it lands would be undone."""
    page.click(button)
    page.wait_for_selector(f"{button}:enabled", timeout=10_000)


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
    _click_and_settle(page, "#apply-manifest-fault")
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
    _click_and_settle(page, "#rearm-manifest-fault")
    wait_for(lambda: get(port, PLAYLIST).body != frozen, 10, "a fresh frozen playlist after re-arming")
    assert sget(daemon, sid)["manifest_fault_type"] == "stale_playlist"

    # variant_removed: the variants field appears, a chip adds a rung
    page.select_option(fld("manifest_fault_type"), "variant_removed")
    assert page.is_disabled(fld("manifest_fault_value"))
    chip = page.locator("[data-panel='manifest_fault'] button.chip").first
    rung = chip.inner_text()
    chip.click()
    _click_and_settle(page, "#apply-manifest-fault")
    wait_for(lambda: sget(daemon, sid)["manifest_fault_type"] == "variant_removed", 5,
             "variant_removed armed")
    assert sget(daemon, sid)["manifest_fault_variants"] == [rung]
    master = get(port, "/go-live/testclip/master.m3u8").body.decode()
    assert rung not in master, master

    # a bad value: the reason under the control, nothing changes on the server
    page.select_option(fld("manifest_fault_type"), "sequence_jump")
    page.fill(fld("manifest_fault_value"), "999999")
    _click_and_settle(page, "#apply-manifest-fault")
    page.wait_for_selector("[data-error-for='manifest_fault_value']:not(:empty)")
    assert sget(daemon, sid)["manifest_fault_type"] == "variant_removed"
    page.errors.clear()  # the browser logs the 400 answer itself

    _click_and_settle(page, "#disarm-manifest-fault")
    wait_for(lambda: sget(daemon, sid)["manifest_fault_type"] == "none", 5, "disarmed")
    # the unsent bad value went with the fault: the control shows the server's value again
    value = str(sget(daemon, sid)["manifest_fault_value"])
    wait_for(lambda: page.input_value(fld("manifest_fault_value")) == value
             and not page.inner_text("[data-error-for='manifest_fault_value']"), 5, "the value reloaded")
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


# --------------------------------------------------------------------------- Scenarios page


def post_metrics(daemon: Daemon, sid: Any) -> None:
    """What a healthy player posts once a second."""
    r = daemon.request("POST", f"/api/session/{sid}/metrics", {"set": {
        "player_metrics_event_time": int(time.time() * 1000), "player_metrics_state": "playing",
        "player_metrics_stalls": 0, "player_metrics_stall_seconds_total": 0}})
    assert r.status in (200, 204), r.text


def playing_while(daemon: Daemon, sid: Any, check: Callable[[], Any]) -> Callable[[], Any]:
    """A wait_for predicate that posts the player's metrics, then checks."""

    def predicate() -> Any:
        post_metrics(daemon, sid)
        return check()

    return predicate


def run_named(daemon: Daemon, sid: Any, name: str) -> bool:
    """Whether the session's last run is the scenario called *name*."""
    r = daemon.get(f"/api/sessions/{sid}/scenario")
    return r.status == 200 and r.json().get("name") == name


def step_state(page: Any, index: int) -> str | None:
    """The state the page shows for step *index* of the run."""
    return page.get_attribute(f"#run-steps tr[data-step='{index}']", "data-state")


SHORT = {
    "name": "short-ui", "duration": 8,
    "steps": [
        {"id": "slow", "at": 1, "for": 3, "set": {"nftables_delay_ms": 50}},
        {"id": "blip", "at": 5, "repeat": {"every": 1, "times": 2},
         "set": {"segment_failure_type": "404", "segment_consecutive_failures": 1,
                 "segment_failure_frequency": 0}},
    ],
    "expect": [
        {"name": "no stalls", "metric": "stalls", "op": "<=", "value": 0},
        {"name": "never stalled", "metric": "stall_seconds_total", "op": "<", "value": 1},
    ],
}

YAML_SCENARIO = """name: yaml-one
duration: 4
steps:
  - id: slow
    at: 1
    for: 2
    set:
      nftables_delay_ms: 40
"""

BROKEN = {
    "name": "broken",
    "steps": [
        {"id": "a", "at": -1, "set": {"nftables_delay_ms": 50}},
        {"id": "b", "at": 2, "set": {"nftables_delay_ms": "slow"}},
    ],
}


def test_scenarios_page_validates_runs_and_shows_the_verdict(daemon: Daemon, page: Any) -> None:
    sid = create_session(daemon, "qa-scn-page")["session_id"]
    page.goto(url(daemon, f"scenarios?session={sid}"))
    page.wait_for_selector("#scenario-editor")
    wait_for(lambda: page.input_value("#scenario-target") == f"s:{sid}", 10, "the session picked")
    page.wait_for_selector("#run-none:not([hidden])")
    assert not page.errors.items, page.errors.items  # no run yet: nothing asked, nothing failed

    # every example validates on the server
    n = page.locator("#scenario-example option").count() - 1
    assert n >= 3
    for i in range(n):
        page.select_option("#scenario-example", str(i))
        assert json.loads(page.input_value("#scenario-editor"))["steps"]
        page.click("#scenario-validate")
        wait_for(lambda: page.inner_text("#scenario-validity") == "valid", 10, f"example {i} valid")

    # a scenario file is loaded into the editor
    page.set_input_files("#scenario-file", files=[{
        "name": "from-disk.json", "mimeType": "application/json",
        "buffer": json.dumps({**SHORT, "name": "from-disk"}).encode()}])
    wait_for(lambda: json.loads(page.input_value("#scenario-editor"))["name"] == "from-disk", 5,
             "the file loaded")

    # ... or a YAML one, sent as YAML: the server validates it
    page.set_input_files("#scenario-file", files=[{
        "name": "from-disk.yaml", "mimeType": "application/yaml", "buffer": YAML_SCENARIO.encode()}])
    wait_for(lambda: page.input_value("#scenario-editor").startswith("name: yaml-one"), 5, "the YAML loaded")
    page.click("#scenario-validate")
    wait_for(lambda: page.inner_text("#scenario-validity") == "valid", 10, "the YAML valid")
    page.fill("#scenario-editor", YAML_SCENARIO.replace("at: 1", "at: -1"))
    page.click("#scenario-validate")
    wait_for(lambda: "/steps/0/at" in page.inner_text("#scenario-errors"), 10, "the YAML error's path")
    page.errors.clear()  # the browser logs the 400 answer itself

    # every error with its path; Start refuses
    page.fill("#scenario-editor", json.dumps(BROKEN))
    page.click("#scenario-validate")
    page.wait_for_selector("#scenario-errors li")
    errors = page.inner_text("#scenario-errors")
    assert "/steps/0/at" in errors and "/steps/1/set/nftables_delay_ms" in errors, errors
    assert page.locator("#scenario-errors li").count() >= 2
    page.click("#scenario-start")
    wait_for(lambda: "Not started" in page.inner_text("main"), 10, "start refused")
    assert daemon.get(f"/api/sessions/{sid}/scenario").status == 404
    page.fill("#scenario-editor", '{"name": "x", "steps": [')
    page.click("#scenario-validate")
    wait_for(lambda: "Not valid JSON" in page.inner_text("#scenario-errors"), 5, "the JSON error")
    page.errors.clear()  # the browser logs the 400 answers itself

    # a valid run: the timeline advances live, then the verdict
    page.fill("#scenario-editor", json.dumps(SHORT, indent=2))
    page.click("#scenario-start")
    page.wait_for_selector("#run-card:not([hidden])")
    wait_for(playing_while(daemon, sid, lambda: step_state(page, 0) == "active"), 10, "step slow active")
    assert sget(daemon, sid)["nftables_delay_ms"] == 50
    assert "nftables_delay_ms" in page.inner_text("#run-active")
    assert "next step in" in page.inner_text("#run-now")
    assert page.inner_text("#run-state") == "running"
    wait_for(playing_while(daemon, sid, lambda: step_state(page, 0) == "done"), 10, "step slow done")
    wait_for(playing_while(daemon, sid, lambda: page.is_visible("#verdict-banner")), 20, "the verdict")
    assert page.inner_text("#verdict-banner").startswith("PASSED")
    assert page.inner_text("#run-state") == "passed"
    assert page.locator("#verdict-table tbody tr").count() == 2
    assert "stalls <= 0" in page.inner_text("#verdict-table")
    assert len(page.locator("#run-log tr").all()) >= 3  # each step's effect is in the run log
    screenshot(page, "scenarios_page_verdict")
    href = page.get_attribute("#report-xml", "href")
    report = daemon.get(href)
    assert report.status == 200
    cases = ET.fromstring(report.body).iter("testcase")
    assert [c.get("name") for c in cases] == ["no stalls", "never stalled"]
    assert sget(daemon, sid)["nftables_delay_ms"] == 0 and sget(daemon, sid)["segment_failure_type"] == "none"
    assert not page.errors.items, page.errors.items


def test_scenarios_page_stops_a_run_and_starts_one_on_a_group(daemon: Daemon, page: Any) -> None:
    sid = create_session(daemon, "qa-scn-stop")["session_id"]
    long = {"name": "long", "duration": 120, "steps": [
        {"id": "all-503", "at": 0, "for": 120, "set": {"segment_failure_type": "503"}}]}
    page.goto(url(daemon, f"scenarios?session={sid}"))
    page.wait_for_selector("#scenario-editor")
    wait_for(lambda: page.input_value("#scenario-target") == f"s:{sid}", 10, "the session picked")
    page.fill("#scenario-editor", json.dumps(long))
    page.click("#scenario-start")
    wait_for(lambda: sget(daemon, sid)["segment_failure_type"] == "503", 10, "the step applied")
    # the Testing session page says a run drives this session
    other_page = page.context.new_page()
    other_page.goto(url(daemon, "session/qa-scn-stop?play=0"))
    other_page.wait_for_selector("#scenario-banner:not([hidden])")
    assert "“long” is running" in other_page.inner_text("#scenario-banner")
    other_page.goto(url(daemon, "sessions"))  # and the Sessions list
    other_page.wait_for_selector(f"tr[data-session='{sid}'] a .badge:text('scenario long: running')")
    other_page.close()
    assert not page.errors.items, page.errors.items
    # one run at a time: a second start is refused with the reason
    page.click("#scenario-start")
    wait_for(lambda: "already running" in page.inner_text("main"), 10, "the 409 explained")
    page.errors.clear()
    page.wait_for_selector("#scenario-stop:not([disabled])")
    page.click("#scenario-stop")
    wait_for(lambda: page.inner_text("#run-state") == "stopped", 10, "stopped")
    assert sget(daemon, sid)["segment_failure_type"] == "none"
    assert "restored" in page.inner_text("#run-now")

    # a group: one run per member, the page lists each member's run
    other = create_session(daemon, "qa-scn-peer")["session_id"]
    r = daemon.request("POST", "/api/session-group/link", {"session_ids": [sid, other]})
    assert r.status == 200, r.text
    gid = r.json()["group_id"]
    short = {"name": "group-short", "duration": 2, "steps": [
        {"id": "d", "at": 0, "for": 1, "set": {"nftables_delay_ms": 20}}]}
    wait_for(lambda: page.locator(f"#scenario-target option[value='g:{gid}']").count() == 1, 10,
             "group offered")
    page.select_option("#scenario-target", f"g:{gid}")
    page.fill("#scenario-editor", json.dumps(short))
    page.click("#scenario-start")
    for member in (sid, other):
        wait_for(functools.partial(run_named, daemon, member, "group-short"), 10, f"member {member}'s run")
    wait_for(lambda: page.inner_text("#run-members").count("qa-scn-") == 2, 10, "both members listed")
    assert not page.errors.items, page.errors.items


def test_session_page_player_posts_what_scenario_expectations_read(daemon: Daemon, page: Any) -> None:
    page.goto(url(daemon, ""))
    if not page.evaluate("() => window.MediaSource !== undefined && "
                         "MediaSource.isTypeSupported('video/mp4; codecs=\"avc1.42E01E\"')"):
        pytest.skip("this Chromium build has no H.264 in MediaSource (proprietary codecs missing)")
    page.goto(url(daemon, "session/qa-scn-metrics?content=testclip&protocol=hls&duration=2s&engine=hls"))
    page.wait_for_selector("#apply-segment")
    sid = wait_for(lambda: next((s["session_id"] for s in daemon.get("/api/sessions").json()
                                 if s["player_id"] == "qa-scn-metrics"), None), 10, "the session")
    posted = wait_for(lambda: (s := sget(daemon, sid)).get("player_metrics_state") == "playing" and s, 40,
                      "the page's player to play and post")
    for key in ("player_metrics_stalls", "player_metrics_stall_seconds_total", "player_metrics_switches",
                "player_metrics_switches_up", "player_metrics_switches_down"):
        assert isinstance(posted.get(key), (int, float)), (key, posted.get(key))
    assert page.inner_text("[data-stat='stall_seconds_total']") != "–"
    assert not page.errors.items, page.errors.items
