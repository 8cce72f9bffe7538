"""What a tester sees in the Testing-session page (Debian's Chromium via Playwright): the
network log as a DevTools-like waterfall, socket faults drawn as failures with the label
the tester chose, control-change markers, headers in the details pane and the HAR;
sessions that do not vanish (countdown, keep) and ids that are never reused.

Traffic comes from raw HTTP requests on the session port (a real client on 127.0.0.1),
so the rows are known exactly and nothing depends on this Chromium's codecs.  One daemon
for the module.  Screenshots land in build/screenshots/tester_*.png (not committed).
"""

from __future__ import annotations

import http.client
import re
import time
from collections.abc import Iterator
from typing import Any

import m3u8
import pytest

from streamlab.testing.daemon import Daemon
from tests.integration.dashboard_helpers import (
    ConsoleErrors,
    browser_marks,
    chromium,
    dashboard_page,
    screenshot,
    wait_for,
)
from tests.integration.sessions_helpers import create_session, get, open_get, serving, stable_seg

pytestmark = browser_marks()

PLAYLIST = "/go-live/testclip/playlist_360p.m3u8"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, test_item: str) -> Iterator[Daemon]:
    d = Daemon(str(tmp_path_factory.mktemp("tester")), session_ports=6, config={
        "sessions": {"socket_body_bytes": "4096", "session_idle_timeout": "6",
                     "session_expiry_grace": "40", "session_port_quarantine": "30"},
        "live": {"worker_idle_timeout": "600"}, "jobs": {"seed_duration": "4"}})
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


def traffic(port: int) -> None:
    """A little LL-HLS player: master, playlist, a blocking reload, a ranged segment."""
    assert get(port, "/go-live/testclip/master.m3u8").status == 200
    pl = m3u8.loads(get(port, PLAYLIST).text)
    msn = pl.media_sequence + len(pl.segments) - 1
    assert get(port, f"{PLAYLIST}?_HLS_msn={msn}&_HLS_part=0").status == 200
    seg = stable_seg()
    assert get(port, seg, headers={"Range": "bytes=0-999"}).status == 206


def rows(page: Any) -> list[dict[str, Any]]:
    return page.eval_on_selector_all("#netlog tr[data-seq]", """trs => trs.map(tr => ({
        seq: +tr.dataset.seq, cls: tr.className, time: tr.children[1].textContent,
        status: tr.querySelector('td.status').textContent, name: tr.querySelector('td.path').textContent,
        fault: tr.querySelector('td.fault').textContent,
        bar: tr.querySelector('.wf-recv').getBoundingClientRect().width
             + tr.querySelector('.wf-wait').getBoundingClientRect().width }))""")


def test_network_log_is_a_waterfall_with_details_failures_and_markers(daemon: Daemon, page: Any) -> None:
    s = create_session(daemon, "qa-netlog")
    sid, port = s["session_id"], int(s["x_forwarded_port"])
    page.goto(url(daemon, "session/qa-netlog?play=0"))
    page.wait_for_selector("#net-ruler .tick")
    traffic(port)
    # the tester arms a socket fault by its label, then a 404
    daemon.request("PATCH", f"/api/session/{sid}", {"set": {"segment_failure_type": "request_body_reset",
                                                            "segment_consecutive_failures": 0}})
    reset = open_get(port, stable_seg())
    reset.settimeout(10)
    try:
        while reset.recv(65536):
            pass
    except ConnectionResetError:
        pass
    reset.close()
    daemon.request("PATCH", f"/api/session/{sid}", {"set": {"segment_failure_type": "404"}})
    assert get(port, stable_seg()).status == 404
    # a player giving up on a blocking reload: not a fault
    pl = m3u8.loads(get(port, PLAYLIST).text)
    held = open_get(port, f"{PLAYLIST}?_HLS_msn={pl.media_sequence + len(pl.segments) + 1}")
    time.sleep(0.3)
    held.close()

    page.uncheck("#net-hide-reloads")
    got = wait_for(lambda: (r := rows(page)) and any("client_disconnect" in x["cls"] for x in r)
                   and any("404" == x["status"] for x in r) and r, 20, "every row in the waterfall")
    # sorted by start, newest first; every bar visible
    times = [x["time"] for x in got]
    assert times == sorted(times, reverse=True), times
    assert all(x["bar"] >= 2 for x in got), got
    # the Name column tells LL-HLS requests apart
    names = " | ".join(x["name"] for x in got)
    assert "msn " in names and "part 0" in names and "bytes 0-999" in names, names
    # the socket reset is a failure, labelled as the tester chose it
    reset_row = next(x for x in got if "socket" in x["cls"])
    assert "failed" in reset_row["cls"].split() and reset_row["status"].startswith("(failed)")
    assert reset_row["fault"] == "socket: reset mid-body"
    assert page.eval_on_selector(f"#netlog tr[data-seq='{reset_row['seq']}'] td.status",
                                 "td => getComputedStyle(td).color") == "rgb(185, 28, 28)"
    # control changes are on the waterfall: rows and flags on the ruler
    page.wait_for_selector("#netlog tr.marker:has-text('segment: request_body_reset armed')")
    page.wait_for_selector("#netlog tr.marker:has-text('segment: 404 armed')")
    assert page.eval_on_selector_all("#net-ruler .mark", "m => m.length") >= 2
    assert page.eval_on_selector_all("#net-ruler .tick", "t => t.length") >= 3
    # the legend's icons render (SVG, not a missing glyph box)
    sizes = page.eval_on_selector_all(".legend svg.icon", "s => s.map(x => x.getBoundingClientRect().width)")
    assert len(sizes) >= 4 and all(w >= 10 for w in sizes)
    screenshot(page, "tester_netlog_1440")

    # charts: full card width, markers on every time axis, buffer from 0, clock labels
    charts = page.eval_on_selector(".charts", """box => {
        const c = box.charts, now = Date.now() / 1000;
        return { width: box.clientWidth, widths: Object.values(c).map(u => u.width),
                 markers: [...box.querySelectorAll('.uplot')].map(e => +(e.dataset.markers || 0)),
                 bufferMin: c.buffer.scales.y.min,
                 label: c.bitrate.axes[0].values(c.bitrate, [now])[0] } }""")
    assert all(w >= charts["width"] - 10 for w in charts["widths"]) and charts["width"] > 1000, charts
    assert all(n >= 2 for n in charts["markers"]), charts
    assert charts["bufferMin"] == 0 and re.fullmatch(r"\d\d:\d\d:\d\d", charts["label"]), charts
    top = page.evaluate("""async () => { const m = await import('/dashboard/js/charts.js');
        return m.bitrateTop([0.8, 0.9, 0.7, 0.8, 0.9, 0.8, 0.7, 0.9, 0.8, 0.8, 0.9, 0.7, 0.8, 0.9, 0.8, 0.7,
                             0.9, 0.8, 0.8, 0.9, 12.8], [[null], [2.65], [0.9]]) }""")
    assert 3 < top < 5, top  # one 12.8 Mbps spike does not rescale the chart
    page.locator(".charts").scroll_into_view_if_needed()
    page.screenshot(path=screenshot_path("tester_charts_1440"), full_page=False)

    # faults only: the injected 404 and the reset, not the player's cancellation
    page.check("#net-faults-only")
    only = wait_for(lambda: (r := rows(page)) and all("client_disconnect" not in x["cls"] for x in r) and r,
                    10, "faults-only rows")
    assert {x["fault"] for x in only} == {"socket: reset mid-body", "404 Not Found"}
    page.uncheck("#net-faults-only")
    # blocking reloads can be hidden
    page.check("#net-hide-reloads")
    wait_for(lambda: all("reload" not in x["cls"].split() for x in rows(page)), 10, "reloads hidden")
    assert "blocking playlist reloads hidden" in page.inner_text("#net-hidden")

    # zoom: a shorter window has finer ticks
    before = page.eval_on_selector_all("#net-ruler .tick", "t => t.map(x => x.textContent)")
    page.select_option("#net-zoom", "5")
    after = page.eval_on_selector_all("#net-ruler .tick", "t => t.map(x => x.textContent)")
    assert after != before and len(after) >= 2

    # details pane: timing breakdown and the real headers
    page.select_option("#net-zoom", "0")
    page.click(f"#netlog tr[data-seq='{reset_row['seq']}'] td.path")
    page.wait_for_selector("#net-details:has-text('Waiting for server response (TTFB)')")
    page.wait_for_selector("#net-details dl.hdrs dt:has-text('Content-Type')")
    page.wait_for_selector("#net-details dl.hdrs dt:has-text('Host')")
    assert "socket: reset mid-body" in page.inner_text("#net-details")
    ctype = page.inner_text("#net-details dl.hdrs dt:has-text('Content-Type') + dd")
    assert ctype == "video/mp4", ctype
    screenshot(page, "tester_netlog_details_1440")
    page.set_viewport_size({"width": 1280, "height": 720})
    page.locator("#network-log").scroll_into_view_if_needed()
    page.screenshot(path=screenshot_path("tester_netlog_details_1280"), full_page=False)
    page.click("#net-details button[title='Close']")
    page.wait_for_selector("#net-details", state="hidden")
    for w, hgt in ((1280, 720), (800, 900)):
        page.set_viewport_size({"width": w, "height": hgt})
        page.locator("#network-log").scroll_into_view_if_needed()
        page.screenshot(path=screenshot_path(f"tester_netlog_{w}"), full_page=False)
        # the waterfall is on screen without scrolling sideways, with a usable width
        box = page.eval_on_selector("th.wf-head", "th => { const r = th.getBoundingClientRect();"
                                    " return [r.left, r.width] }")
        assert box[0] < w - 100 and box[1] >= 130, (w, box)
        labels = page.eval_on_selector_all("#net-ruler .tick", "t => t.map(x => x.getBoundingClientRect())"
                                           ".map(r => [r.left, r.width])")
        assert all(a[0] + 40 <= b[0] for a, b in zip(labels, labels[1:], strict=False)), labels  # no overlap

    # the HAR carries the headers
    har = daemon.get(f"/api/session/{sid}/network.har").json()["log"]["entries"]
    assert all(e["request"]["headers"] for e in har)
    served = [h for e in har for h in e["response"]["headers"]]
    assert {"name": "Content-Type", "value": "video/mp4"} in served
    assert page.errors.items == []


def screenshot_path(name: str) -> str:
    import os

    from tests.integration.dashboard_helpers import SCREENSHOT_DIR

    os.makedirs(SCREENSHOT_DIR, exist_ok=True)
    return os.path.join(SCREENSHOT_DIR, f"{name}.png")


# --------------------------------------------------------------------------- sessions that do not vanish


def life_of(page: Any, sid: str) -> str:
    return page.inner_text(f"tr[data-session='{sid}'] .life")


def test_idle_session_with_faults_counts_down_can_be_kept_and_ids_are_not_reused(
        daemon: Daemon, page: Any) -> None:
    s = create_session(daemon, "qa-armed", {"segment_failure_type": "404"})
    sid, port = s["session_id"], s["x_forwarded_port"]
    page.goto(url(daemon, "sessions"))
    page.wait_for_selector(f"tr[data-session='{sid}']")
    # idle past session_idle_timeout (6 s): the old code deleted it here; now a countdown shows
    text = wait_for(lambda: (t := life_of(page, sid)).startswith("Expires in") and t, 20, "the countdown")
    left = int(text.split()[2])
    assert 0 < left <= 40
    assert daemon.get(f"/api/session/{sid}").json()["session_state"] == "expiring"
    screenshot(page, "tester_sessions_countdown")
    page.click(f"tr[data-session='{sid}'] button.keep")
    wait_for(lambda: life_of(page, sid).startswith("Kept"), 10, "kept")
    assert page.inner_text(f"tr[data-session='{sid}'] button.keep") == "Release"
    body = daemon.get(f"/api/session/{sid}").json()
    assert body["session_keep"] is True and body["session_expires_at"] is None
    page.click(f"tr[data-session='{sid}'] button.keep")
    wait_for(lambda: life_of(page, sid).startswith("Expires in"), 10, "countdown again")
    # ids are never reused; the released port waits out its quarantine
    assert daemon.request("DELETE", f"/api/session/{sid}").status == 200
    page.wait_for_selector(f"tr[data-session='{sid}']", state="detached")
    again = create_session(daemon, "qa-armed")
    assert again["session_id"] != sid and int(again["session_id"]) > int(sid)
    assert again["x_forwarded_port"] != port
    daemon.request("DELETE", f"/api/session/{again['session_id']}")
    assert page.errors.items == []


def test_a_watched_session_stays_and_says_so(daemon: Daemon, page: Any) -> None:
    s = create_session(daemon, "qa-watched")
    page.goto(url(daemon, "session/qa-watched?play=0"))
    page.wait_for_selector("#session-life")
    wait_for(lambda: "stays while this page is open" in page.inner_text("#session-life"), 25, "watched state")
    assert daemon.get(f"/api/session/{s['session_id']}").status == 200
    page.check("#session-keep")
    wait_for(lambda: page.inner_text("#session-life").startswith("Kept"), 10, "kept")
    assert daemon.get(f"/api/session/{s['session_id']}").json()["session_keep"] is True
    screenshot(page, "tester_session_kept")
    daemon.request("DELETE", f"/api/session/{s['session_id']}")
    assert page.errors.items == []


def test_test_in_a_session_opens_it_directly_and_reopening_plays_what_it_had(
        daemon: Daemon, page: Any) -> None:
    page.goto(url(daemon, "content"))
    page.click(".item[data-content='testclip'] a.test-session")
    page.wait_for_selector("#session-life")
    route = page.evaluate("location.hash")
    assert route.startswith("#/session/qa-") and "content=testclip" in route, route
    pid = route.split("/")[2].split("?")[0]
    opened = [x["session_id"] for x in daemon.get("/api/sessions").json() if x["player_id"] == pid]
    assert len(opened) == 1
    # a session that played DASH 2 s reopens on DASH 2 s
    s = create_session(daemon, "qa-reopen")
    assert get(int(s["x_forwarded_port"]), "/go-live/testclip/manifest_2s.mpd").status == 200
    page.goto(url(daemon, "session/qa-reopen?play=0"))
    page.wait_for_selector("#session-life")
    daemon.request("DELETE", f"/api/session/{opened[0]}")
    assert page.eval_on_selector("select[name=protocol]", "s => s.value") == "dash"
    assert page.eval_on_selector("select[name=duration]", "s => s.value") == "2s"
    assert page.eval_on_selector("select[name=content]", "s => s.value") == "testclip"
    daemon.request("DELETE", f"/api/session/{s['session_id']}")
    assert page.errors.items == []


def test_the_loop_timeline_choice_reaches_the_player_and_the_session_remembers_it(
        daemon: Daemon, page: Any) -> None:
    """Playback and Testing session offer the loop timeline: the choice goes into the
    manifest URL the player fetches, the shareable link and the session link, and a
    session that played the discontinuity timeline reopens on it."""
    disc = "/go-live/testclip/manifest_2s.mpd?timeline=discontinuity"
    with page.expect_request(lambda r: r.url.endswith(disc), timeout=20_000):
        page.goto(url(daemon, "playback?content=testclip&protocol=dash&duration=2s&engine=dash"
                              "&timeline=discontinuity"))
    assert page.eval_on_selector("select[name=timeline]", "s => s.value") == "discontinuity"
    assert page.inner_text(".url-line code").endswith(disc)
    assert "timeline=discontinuity" in page.get_attribute("a[href^='#/session/']", "href")
    with page.expect_request(lambda r: r.url.endswith("/go-live/testclip/manifest_2s.mpd"), timeout=20_000):
        page.select_option("select[name=timeline]", "")  # the server's default: no query
    assert page.inner_text(".url-line code").endswith("/go-live/testclip/manifest_2s.mpd")
    assert "timeline" not in page.evaluate("location.hash")
    # a session that played HLS 6 s in the discontinuity timeline reopens on it
    s = create_session(daemon, "qa-timeline")
    port = int(s["x_forwarded_port"])
    assert get(port, "/go-live/testclip/master_6s.m3u8?timeline=discontinuity").status == 200
    page.goto(url(daemon, "session/qa-timeline?play=0"))
    page.wait_for_selector("#session-life")
    assert page.eval_on_selector("select[name=timeline]", "s => s.value") == "discontinuity"
    assert page.eval_on_selector("select[name=duration]", "s => s.value") == "6s"
    daemon.request("DELETE", f"/api/session/{s['session_id']}")
    assert page.errors.items == []


# --------------------------------------------------------------------------- first run


def test_startup_log_prints_the_dashboard_url(daemon: Daemon) -> None:
    log = daemon.log()
    assert "dashboard: http://" in log and f":{daemon.port}/dashboard/" in log, log[-2000:]
    assert f"http://127.0.0.1:{daemon.port}/dashboard/" in log


def test_first_run_demo_card_goes_live_from_preparing_to_play(daemon: Daemon, browser: Any) -> None:
    ctx = browser.new_context(viewport={"width": 1280, "height": 720})
    home, content = ctx.new_page(), ctx.new_page()
    for pg in (home, content):
        pg.set_default_timeout(20000)
        pg.errors = ConsoleErrors(pg)
    content.goto(url(daemon, "content"))
    content.wait_for_selector(".item[data-content='testclip']")
    home.goto(url(daemon, ""))
    home.click("#seed-demo")
    # the card says what is happening, and follows it without a reload
    home.wait_for_selector("#demo-preparing")
    assert "The demo is being prepared" in home.inner_text("#demo-card")
    home.wait_for_selector("#demo-preparing:has-text('Step 2 of 2')", timeout=90000)
    screenshot(home, "tester_home_preparing")
    content.wait_for_selector("p.empty, .item", state="attached")
    home.wait_for_selector("#play-demo", timeout=240000)
    screenshot(home, "tester_home_ready")
    assert home.query_selector("#seed-demo") is None
    # Content picked the new item up by itself
    content.wait_for_selector(".item[data-content^='streamlab_demo']", timeout=20000)
    assert home.inner_text("#start-testing").startswith("Start testing")
    href = home.get_attribute("#start-testing", "href")
    assert href.startswith("#/session/qa-") and "content=streamlab_demo" in href
    home.click("#play-demo")
    home.wait_for_selector("video#player")
    assert "content=streamlab_demo" in home.evaluate("location.hash")
    assert home.errors.items == [] and content.errors.items == []
    ctx.close()


# --------------------------------------------------------------------------- playback stats


def test_dash_playhead_is_a_position_in_the_live_window_and_start_up_is_not_a_stall(
        daemon: Daemon, page: Any) -> None:
    page.goto(url(daemon, ""))
    if not page.evaluate("() => window.MediaSource !== undefined && "
                         "MediaSource.isTypeSupported('video/mp4; codecs=\"avc1.42E01E\"')"):
        pytest.skip("this Chromium build has no H.264 in MediaSource (proprietary codecs missing)")
    page.goto(url(daemon, "playback?content=testclip&protocol=dash&duration=2s&engine=dash"))
    page.wait_for_selector("video#player[data-engine='dash']", state="attached")
    wait_for(lambda: page.evaluate("() => { const v = document.querySelector('video#player');"
                                   " return v.currentTime > 0 && !v.paused }"), 40, "DASH to play")
    # the media time of a DASH live stream is seconds since 2020 (~2e8): never shown as such
    playhead = wait_for(lambda: (t := page.inner_text("[data-stat='playhead']")) and "window" in t and t,
                        10, "the playhead as a position in the live window")
    pattern = r"\d\d:\d\d:\d\d · [\d.]+ s into the \d+ s window, [\d.]+ s behind the live edge"
    assert re.search(pattern, playhead), playhead
    assert "Live window" in page.inner_text(".live-controls .live-pos")
    assert page.evaluate("document.querySelector('video#player').currentTime") > 1e8
    # start-up buffering is not a stall
    assert page.inner_text("[data-stat='stalls']") == "0"
    page.screenshot(path=screenshot_path("tester_playback_dash_1440"), full_page=False)
    assert page.errors.items == []


def test_an_early_fault_is_still_found_after_many_requests(daemon: Daemon, page: Any) -> None:
    """The old ring kept 200 entries (~11 s of LL-HLS): a fault from before was gone."""
    s = create_session(daemon, "qa-history", {"master_manifest_failure_type": "503",
                                              "master_manifest_failure_frequency": 0})
    sid, port = s["session_id"], int(s["x_forwarded_port"])
    assert get(port, "/go-live/testclip/master.m3u8").status == 503  # one shot
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    for _ in range(700):
        conn.request("GET", PLAYLIST)
        assert conn.getresponse().read()
    conn.close()
    net = daemon.get(f"/api/session/{sid}/network").json()
    assert net["count"] == 701 and net["entries"][0]["status"] == 503
    har = daemon.get(f"/api/session/{sid}/network.har").json()["log"]["entries"]
    assert len(har) == 701 and har[0]["response"]["status"] == 503 and har[0]["request"]["headers"]
    page.goto(url(daemon, "session/qa-history?play=0"))
    page.wait_for_selector("#net-ruler .tick")
    page.select_option("#net-zoom", "0")
    page.check("#net-faults-only")
    page.wait_for_selector("#netlog tr.faulted td.status:has-text('503')")
    assert "701 entries" in page.inner_text("#net-info")
    daemon.request("DELETE", f"/api/session/{sid}")


def test_fault_rule_says_how_often_it_will_fire_on_this_stream(daemon: Daemon, page: Any) -> None:
    s = create_session(daemon, "qa-rate")
    port = int(s["x_forwarded_port"])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    seg = stable_seg()
    for _ in range(120):  # 120 segment requests just now
        conn.request("GET", seg, headers={"Range": "bytes=0-99"})
        conn.getresponse().read()
    conn.close()
    page.goto(url(daemon, "session/qa-rate?play=0&tab=segment"))
    page.wait_for_selector("[data-expect='segment']")
    page.select_option("[data-field='segment_failure_type']", "404")
    page.fill("[data-field='segment_consecutive_failures']", "1")
    page.fill("[data-field='segment_failure_frequency']", "10")
    text = wait_for(lambda: (t := page.inner_text("[data-expect='segment']")) and "fires about" in t and t,
                    10, "the expected rate")
    assert "Now ~120 segment requests/min" in text and "fires about 12 times a minute" in text, text
    page.select_option("[data-field='segment_failure_mode']", "seconds")
    page.fill("[data-field='segment_consecutive_failures']", "2")
    wait_for(lambda: "fires about 24 times" in page.inner_text("[data-expect='segment']"), 10, "seconds mode")
    page.locator("[data-expect='segment']").scroll_into_view_if_needed()
    page.screenshot(path=screenshot_path("tester_fault_rate_1440"), full_page=False)
    daemon.request("DELETE", f"/api/session/{s['session_id']}")
    assert page.errors.items == []


def test_session_page_layout_fault_controls_above_the_fold(daemon: Daemon, browser: Any) -> None:
    s = create_session(daemon, "qa-layout")
    for w, hgt in ((1440, 900), (1280, 720)):
        ctx = browser.new_context(viewport={"width": w, "height": hgt})
        pg = ctx.new_page()
        pg.set_default_timeout(20000)
        pg.errors = ConsoleErrors(pg)
        pg.goto(url(daemon, "session/qa-layout?play=0"))
        pg.wait_for_selector("#apply-segment")
        # the fault type and Apply are visible without scrolling
        for sel in ("[data-field='segment_failure_type']", "#apply-segment"):
            box = pg.eval_on_selector(sel, "e => e.getBoundingClientRect().bottom")
            assert box <= hgt, (w, sel, box)
        # the player-error box has a heading, the counters are not cut with "…"
        assert pg.is_visible("h3:has-text('Player errors')")
        clipped = pg.eval_on_selector_all("dl.counters dd",
                                          "dds => dds.filter(d => d.scrollWidth > d.clientWidth + 1).length")
        assert clipped == 0
        pg.screenshot(path=screenshot_path(f"tester_session_top_{w}"), full_page=False)
        assert pg.errors.items == []
        ctx.close()
    daemon.request("DELETE", f"/api/session/{s['session_id']}")


def test_usable_at_800_px(daemon: Daemon, browser: Any) -> None:
    s = create_session(daemon, "qa-narrow", {"segment_failure_type": "404"})
    ctx = browser.new_context(viewport={"width": 800, "height": 900})
    pg = ctx.new_page()
    pg.set_default_timeout(20000)
    pg.errors = ConsoleErrors(pg)
    pg.goto(url(daemon, "sessions"))
    pg.wait_for_selector(f"tr[data-session='{s['session_id']}']")
    # every page of the navigation and the connection state are on screen
    links = pg.eval_on_selector_all("#nav a", "as => as.map(a => { const r = a.getBoundingClientRect();"
                                    " return [a.textContent, r.left, r.right,"
                                    " a.scrollWidth <= a.clientWidth + 1] })")
    assert [x[0] for x in links][-3:] == ["Sessions", "Monitor", "Server"]
    assert all(0 <= x[1] and x[2] <= 800 and x[3] for x in links), links
    conn = pg.eval_on_selector("#conn", "c => c.getBoundingClientRect().right")
    assert conn <= 800
    # the sessions table fits: no sideways scrolling of the page or the table
    assert pg.evaluate("document.documentElement.scrollWidth") <= 800
    assert pg.eval_on_selector("table.sessions", "t => t.getBoundingClientRect().right") <= 800
    pg.screenshot(path=screenshot_path("tester_sessions_800"), full_page=False)
    assert pg.errors.items == []
    ctx.close()
    daemon.request("DELETE", f"/api/session/{s['session_id']}")
