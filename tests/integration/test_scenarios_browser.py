"""Issue #16, end to end: a 40 s scenario against a real daemon while hls.js (the
dashboard's vendored copy) plays in Debian's Chromium through the session port and posts
its metrics (state, stalls, stall seconds, rendition switches, bitrate) to
``POST /api/session/{id}/metrics`` once a second, like a player under test in CI.

Two sessions, two player pages, one browser, both runs at the same time: the same
timeline (a rate drop, the top rung removed from the master, 404s on segments) with a
*lenient* expectation set -- started from the dashboard's Scenarios page, which must show
the timeline advancing and then the verdict -- and a *strict* one started through the API
as a CI script would.  The lenient run must pass, the strict one fail on exactly its
strict expectations; both restore every control they set; each ``report.xml`` parses as
JUnit XML (junitparser) with one test case per expectation.  About 60 s of wall time.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from typing import Any

import pytest

from streamlab.testing.daemon import Daemon
from tests.integration.dashboard_helpers import (
    CHROMIUM,
    CHROMIUM_ARGS,
    ConsoleErrors,
    browser_marks,
    poll_players,
    route_player_pages,
    screenshot,
    wait_for,
)
from tests.integration.sessions_helpers import create_session, serving

pytestmark = browser_marks()

RUN_SECONDS = 40
#: The player page is fulfilled by Playwright (route_player_pages), so it has no server
#: address: Chromium's Local Network Access checks class it as public and refuse its
#: requests to 127.0.0.1 (the session port's stream, the main port's metrics API).  A page a
#: lab serves from its own box has a loopback/private address and is not refused.
NO_LNA = "--disable-features=LocalNetworkAccessChecks"

STEPS = [
    {"id": "rate-drop", "at": 4, "for": 10, "set": {"nftables_bandwidth_mbps": 0.5}},
    {"id": "no-top", "at": 16, "for": 10, "set": {"manifest_fault_type": "variant_removed"}},
    {"id": "seg-404", "at": 28, "for": 8,
     "set": {"segment_failure_type": "404", "segment_consecutive_failures": 1,
             "segment_failure_frequency": 3}},
]

LENIENT: dict[str, Any] = {
    "name": "lenient", "seed": 1601, "duration": RUN_SECONDS, "steps": STEPS,
    "expect": [
        {"name": "few stalls", "metric": "stalls", "op": "<=", "value": 1000},
        {"name": "not stalled all along", "metric": "stall_seconds_total", "op": "<", "value": RUN_SECONDS},
        {"name": "switches reported", "metric": "switches", "op": ">=", "value": 0},
        {"name": "404s were injected", "kind": "requests", "match": {"faulted": True},
         "op": ">=", "value": 1},
    ],
}

STRICT: dict[str, Any] = {
    "name": "strict", "seed": 1601, "duration": RUN_SECONDS, "steps": STEPS,
    "expect": [
        {"name": "few stalls", "metric": "stalls", "op": "<=", "value": 1000},
        {"name": "no faulted request", "kind": "requests", "match": {"faulted": True},
         "op": "==", "value": 0},
        {"name": "a thousand switches", "metric": "switches", "op": ">=", "value": 1000},
    ],
}
STRICT_FAILURES = {"no faulted request", "a thousand switches"}

#: the player page: hls.js on the session port, metrics to the main listener once a second
PAGE = """<!doctype html><html><body><video id="v" muted autoplay playsinline></video>
<script src="/__players/hls.min.js"></script>
<script>
const SID = %SID%, SRC = %SRC%;
const v = document.getElementById('v');
const rec = window.rec = {errors: [], playingAt: null, stalls: 0, stallSeconds: 0, stalledAt: null,
                          switches: 0, level: null, posts: 0, postErrors: 0, supported: true};
rec.supported = !!(window.MediaSource
  && MediaSource.isTypeSupported('video/mp4; codecs="avc1.42c01e,mp4a.40.2"'));
v.addEventListener('playing', () => {
  if (rec.playingAt === null) rec.playingAt = performance.now();
  if (rec.stalledAt !== null) {
    rec.stallSeconds += (performance.now() - rec.stalledAt) / 1000; rec.stalledAt = null;
  }
});
v.addEventListener('waiting', () => {
  if (rec.playingAt !== null && rec.stalledAt === null) { rec.stalls++; rec.stalledAt = performance.now(); }
});
const hls = new Hls({lowLatencyMode: false});
hls.on(Hls.Events.ERROR, (e, d) => {
  if (d.fatal) rec.errors.push(d.type + ':' + d.details + ' ' + (d.response ? d.response.code : '') + ' '
                              + (d.url || ''));
});
hls.on(Hls.Events.LEVEL_SWITCHED, (e, d) => {
  if (rec.level !== null && d.level !== rec.level) rec.switches++;
  rec.level = d.level;
});
hls.loadSource(SRC); hls.attachMedia(v);
const state = () => v.error ? 'error' : v.paused ? 'paused' : v.readyState < 3 ? 'buffering' : 'playing';
setInterval(() => {
  const lvl = hls.levels && hls.levels[hls.currentLevel];
  const stall = rec.stallSeconds + (rec.stalledAt !== null ? (performance.now() - rec.stalledAt) / 1000 : 0);
  const set = {player_metrics_event_time: Date.now(), player_metrics_engine: 'hls',
               player_metrics_state: state(),
               player_metrics_stalls: rec.stalls, player_metrics_stall_seconds_total: +stall.toFixed(3),
               player_metrics_switches: rec.switches, player_metrics_playhead_s: v.currentTime};
  if (lvl) set.player_metrics_bitrate_mbps = lvl.bitrate / 1e6;
  fetch('/api/session/' + SID + '/metrics', {method: 'POST', headers: {'Content-Type': 'application/json'},
                                             body: JSON.stringify({set})})
    .then(r => { if (r.ok) rec.posts++; else rec.postErrors++; }, () => rec.postErrors++);
}, 1000);
window.snap = () => ({t: v.currentTime, now: performance.now(), err: v.error && v.error.message});
</script></body></html>"""


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, test_item: str) -> Iterator[Daemon]:
    d = Daemon(str(tmp_path_factory.mktemp("scenarios")), session_ports=4,
               config={"live": {"worker_idle_timeout": "600"}})
    with serving(d, source=test_item):
        yield d


def run_of(daemon: Daemon, sid: Any) -> dict:
    r = daemon.get(f"/api/sessions/{sid}/scenario")
    assert r.status == 200, r.text
    return r.json()


def ended_run(daemon: Daemon, sid: Any) -> dict | None:
    """The session's run once it is no longer running."""
    run = run_of(daemon, sid)
    return run if run["state"] != "running" else None


def sget(daemon: Daemon, sid: Any) -> dict:
    return daemon.get(f"/api/session/{sid}").json()


def test_scenario_verdicts_with_hls_js_playing_through_the_session(daemon: Daemon) -> None:
    from junitparser import JUnitXml, TestSuite
    from playwright.sync_api import sync_playwright

    sessions = {name: create_session(daemon, f"qa-scenario-{name}") for name in ("lenient", "strict")}
    sids = {name: s["session_id"] for name, s in sessions.items()}
    before = {name: sget(daemon, sid) for name, sid in sids.items()}

    def page_for(name: str) -> str:
        s = sessions[name]
        src = f"http://127.0.0.1:{s['x_forwarded_port_external']}/go-live/testclip/master_2s.m3u8"
        return PAGE.replace("%SID%", json.dumps(s["session_id"])).replace("%SRC%", json.dumps(src))

    base = f"http://127.0.0.1:{daemon.port}"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=[*CHROMIUM_ARGS, NO_LNA], headless=True)
        ctx = browser.new_context(viewport={"width": 1440, "height": 1000})
        route_player_pages(ctx, page_for)
        players = {}
        for name in sids:
            pg = ctx.new_page()
            pg.goto(f"{base}/__players/{name}.html")
            players[name] = pg
        if not players["lenient"].evaluate("() => window.rec.supported"):
            browser.close()
            pytest.skip("this Chromium has no H.264/AAC in MediaSource")
        started = poll_players(players, lambda r: r["rec"]["playingAt"] is not None and r["rec"]["posts"] >= 2
                               or bool(r["rec"]["errors"]), 30)
        for name, r in started.items():
            assert r["rec"]["playingAt"] is not None and not r["rec"]["errors"], (name, r)

        # the lenient run is started from the Scenarios page, the strict one through the API
        ui = ctx.new_page()
        ui.set_default_timeout(20000)
        ui_errors = ConsoleErrors(ui)
        ui.goto(f"{base}/dashboard/#/scenarios?session={sids['lenient']}")
        ui.wait_for_selector("#scenario-editor")
        wait_for(lambda: ui.input_value("#scenario-target") == f"s:{sids['lenient']}", 10,
                 "the session picked")
        ui.fill("#scenario-editor", json.dumps(LENIENT, indent=2))
        ui.click("#scenario-start")
        resp = daemon.request("POST", f"/api/sessions/{sids['strict']}/scenario", STRICT)
        assert resp.status == 201, resp.text
        wait_for(lambda: "Started lenient" in ui.inner_text("main"), 15, "the page to start the lenient run")
        assert run_of(daemon, sids["lenient"])["state"] == "running"

        # while it runs: the session JSON carries the run, the page shows the timeline advancing
        ui.wait_for_selector("#run-steps tr[data-step='0'][data-state='active']", timeout=15000)
        live = sget(daemon, sids["lenient"])["scenario"]
        assert live["state"] == "running" and live["name"] == "lenient", live
        assert sget(daemon, sids["lenient"])["nftables_bandwidth_mbps"] == 0.5
        assert "next step in" in ui.inner_text("#run-now")
        ui.wait_for_selector("#run-steps tr[data-step='1'][data-state='active']", timeout=20000)
        assert ui.get_attribute("#run-steps tr[data-step='0']", "data-state") == "done"
        assert "manifest_fault_type" in ui.inner_text("#run-active")
        screenshot(ui, "scenarios_run_live")

        # both end with a verdict (the players keep playing and posting meanwhile)
        runs = {name: wait_for(functools.partial(ended_run, daemon, sid), RUN_SECONDS + 30,
                               f"the {name} run to end")
                for name, sid in sids.items()}
        ui.wait_for_selector("#verdict-banner", timeout=15000)
        banner = ui.inner_text("#verdict-banner")
        rows = ui.locator("#verdict-table tbody tr").count()
        screenshot(ui, "scenarios_run_verdict")
        players_end = poll_players(players, lambda r: True, 1)
        reports = {name: daemon.get(f"/api/sessions/{sid}/scenario/report.xml") for name, sid in sids.items()}
        assert not ui_errors.items, ui_errors.items
        browser.close()

    lenient, strict = runs["lenient"], runs["strict"]
    assert lenient["state"] == "passed", json.dumps(lenient["verdict"], indent=1)
    assert lenient["verdict"]["passed"] is True
    assert banner.startswith("PASSED") and rows == len(LENIENT["expect"]), banner
    assert strict["state"] == "failed" and strict["verdict"]["passed"] is False
    failed = {e["name"] for e in strict["verdict"]["expectations"] if not e["passed"]}
    assert failed == STRICT_FAILURES, json.dumps(strict["verdict"], indent=1)
    by_name = {e["name"]: e for e in strict["verdict"]["expectations"]}
    assert by_name["no faulted request"]["observed"] >= 1  # the 404 step did fire
    # the player's metrics reached the verdict
    for name, run in runs.items():
        assert all(e["observed"] is not None for e in run["verdict"]["expectations"]), (name, run["verdict"])
        assert players_end[name]["rec"]["posts"] >= RUN_SECONDS - 5, players_end[name]["rec"]
        assert [s["state"] for s in run["steps"]] == ["done", "done", "done"], run["steps"]
        assert {e["step"] for e in run["log"] if e["step"] is not None} >= {0, 1, 2}, run["log"]

    # every control the runs set is back to what it was
    for name, sid in sids.items():
        after = sget(daemon, sid)
        for key in ("nftables_bandwidth_mbps", "manifest_fault_type", "segment_failure_type",
                    "segment_consecutive_failures", "segment_failure_frequency"):
            assert after[key] == before[name][key], (name, key, after[key], before[name][key])
        assert after["scenario"]["state"] == runs[name]["state"]

    # report.xml is JUnit XML: one test case per expectation, failures where the verdict failed
    for name, resp in reports.items():
        assert resp.status == 200, resp.text
        assert "xml" in resp.headers.get("content-type", ""), resp.headers
        xml = JUnitXml.fromstring(resp.body)
        suites = [xml] if isinstance(xml, TestSuite) else list(xml)
        cases = [case for suite in suites for case in suite]
        expected = LENIENT if name == "lenient" else STRICT
        assert len(cases) == len(expected["expect"]), resp.text
        failing = {c.name for c in cases if not c.is_passed}
        assert failing == (set() if name == "lenient" else STRICT_FAILURES), resp.text
        assert sum(s.failures for s in suites) == len(failing), resp.text
