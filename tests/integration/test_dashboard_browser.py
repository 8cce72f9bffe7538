"""The dashboard in a real browser (Debian's Chromium, headless, driven by Playwright).

One daemon for the module with the test item installed and a 4 s demo clip.  What a QA
analyst would do: open every page (no console errors), play LL-HLS with hls.js and LL-DASH
with dash.js, arm a fault in a testing session and see it in the network log, move the
throughput slider, upload a clip through the Upload page and see it in Content, seed the
demo from the Home page.  Screenshots land in build/screenshots/.
"""

from __future__ import annotations

import datetime
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from streamlab.testing.daemon import Daemon
from streamlab.testing.fixtures import install_test_item
from tests.integration.dashboard_helpers import (
    ConsoleErrors,
    browser_marks,
    chromium,
    dashboard_page,
    ffmpeg_path,
    screenshot,
    wait_for,
)

pytestmark = browser_marks()

PAGES = [
    ("", "home", "#seed-demo"),
    ("content", "content", ".item[data-content='testclip']"),
    ("sources", "sources", "#dropzone"),
    ("jobs", "jobs", "table.jobs"),
    ("playback?content=testclip&protocol=hls&duration=6s&engine=hls", "playback", "video#player"),
    ("mosaic?protocol=hls&duration=6s&engine=hls", "mosaic", ".tile video"),
    ("session", "session-picker", "#new-player-id"),
    ("session/page-check?content=testclip&protocol=hls&duration=6s&engine=hls", "session", "#netlog"),
    ("sessions", "sessions", "table.sessions"),
    ("monitor", "monitor", "h1"),
    ("server", "server", ".card dl.kv"),
]


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, test_item: str) -> Iterator[Daemon]:
    """A daemon with the test item and a short demo clip."""
    d = Daemon(str(tmp_path_factory.mktemp("dashboard")),
               config={"jobs": {"seed_duration": "4", "encode_workers": "2"}})
    install_test_item(d.media_dir, source=test_item)
    d.start()
    yield d
    d.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Debian Chromium (never a downloaded browser)."""
    with chromium() as b:
        yield b


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh browser context and page; .errors collects console errors."""
    with dashboard_page(browser, 1400, 1000) as pg:
        yield pg


def url(daemon: Daemon, route: str) -> str:
    return f"http://127.0.0.1:{daemon.port}/dashboard/#/{route}"


def sget(daemon: Daemon, sid: str) -> dict[str, Any]:
    """GET /api/session/{sid}."""
    return daemon.get(f"/api/session/{sid}").json()


def fld(name: str) -> str:
    """Selector of the control bound to a session field."""
    return f"[data-field='{name}']"


PLAYING_AT = ("() => { const v = document.querySelector('video#player');"
              " return v.currentTime > 0 && !v.paused ? v.currentTime : 0 }")
CURRENT_TIME = "document.querySelector('video#player').currentTime"


def session_of(daemon: Daemon, player_id: str) -> dict[str, Any]:
    sessions = daemon.get("/api/sessions").json()
    return next((s for s in sessions if s["player_id"] == player_id), {})


# --------------------------------------------------------------------------- static serving


def test_static_files_types_cache_and_deep_links(daemon: Daemon) -> None:
    index = daemon.get("/dashboard/")
    assert index.status == 200
    assert index.headers["content-type"].startswith("text/html")
    assert "no-cache" in index.headers["cache-control"]
    js = daemon.get("/dashboard/js/app.js")
    assert js.status == 200 and js.headers["content-type"].startswith("text/javascript")
    assert "no-cache" in js.headers["cache-control"]
    assert daemon.get("/dashboard/css/app.css").headers["content-type"].startswith("text/css")
    assert daemon.get("/dashboard/vendor/hls.min.js").status == 200
    # deep links answer the app; missing files and escapes do not
    deep = daemon.get("/dashboard/session/7")
    assert deep.status == 200 and deep.body == index.body
    assert daemon.get("/dashboard/nope.js").status == 404
    assert daemon.get("/dashboard/..%2f..%2ftap.py").status == 404
    assert daemon.get("/dashboard/.hidden").status == 404
    bare = daemon.get("/dashboard")
    assert bare.status in (301, 302) and bare.headers["location"].endswith("/dashboard/")
    assert daemon.request("POST", "/dashboard/").status == 405
    etag = index.headers["etag"]
    assert daemon.get("/dashboard/", headers={"If-None-Match": etag}).status == 304


# --------------------------------------------------------------------------- every page


def test_every_page_loads_without_console_errors(daemon: Daemon, page: Any) -> None:
    for route, name, selector in PAGES:
        page.errors.clear()
        page.goto(url(daemon, route))
        page.wait_for_selector(selector, state="attached")
        # players keep the network busy; give them time to start (errors would show then)
        page.wait_for_timeout(2500 if name in ("playback", "mosaic", "session") else 600)
        assert not page.query_selector("p.msg.error"), f"{name}: {page.inner_text('p.msg.error')}"
        screenshot(page, f"dashboard_{name}")
        assert page.errors.items == [], f"console errors on {name}: {page.errors.items}"
    # the nav marks the current page; a path deep link becomes the hash route
    page.goto(f"http://127.0.0.1:{daemon.port}/dashboard/sessions")
    page.wait_for_selector("table.sessions")
    assert page.evaluate("location.hash") == "#/sessions"
    assert page.inner_text("#nav a.active") == "Sessions"


# --------------------------------------------------------------------------- playback


def _h264_supported(page: Any) -> bool:
    return page.evaluate("""() => window.MediaSource !== undefined &&
        MediaSource.isTypeSupported('video/mp4; codecs="avc1.42E01E"')""")


LOOP_S = 24.0  # the test item's loop
EPOCH = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC).timestamp()  # default live_epoch


def _wait_for_loop_phase(lo: float, hi: float) -> None:
    """Wait (at most one loop) until the live clock is *lo*..*hi* s past a loop boundary.

    The players then have ~15 s of the loop ahead of them: this test is about the
    Playback page playing, not about crossing a loop boundary (test_live_players covers
    that)."""
    phase = (time.time() - EPOCH) % LOOP_S
    if not lo <= phase <= hi:
        time.sleep((lo - phase) % LOOP_S)


def test_playback_plays_ll_hls_with_hls_js_and_ll_dash_with_dash_js(daemon: Daemon, page: Any) -> None:
    page.goto(url(daemon, ""))
    if not _h264_supported(page):
        pytest.skip("this Chromium build has no H.264 in MediaSource (proprietary codecs missing)")
    dash_page = page.context.new_page()
    dash_page.errors = ConsoleErrors(dash_page)
    _wait_for_loop_phase(7.0, 13.0)
    players = {"hls": page, "dash": dash_page}
    for engine, pg in players.items():
        pg.goto(url(daemon, f"playback?content=testclip&protocol={engine}&duration=ll&engine={engine}"))
    starts = {}
    for engine, pg in players.items():
        pg.wait_for_selector(f"video#player[data-engine='{engine}']", state="attached")
        starts[engine] = wait_for(lambda pg=pg: pg.evaluate(PLAYING_AT), 20, f"{engine} to start playing")
    for engine, pg in players.items():
        wait_for(lambda pg=pg, engine=engine: pg.evaluate(CURRENT_TIME) - starts[engine] >= 4.0, 30,
                 f"{engine}: currentTime to advance 4 s")
        fatal = pg.query_selector_all("ul.player-errors li.fatal")
        assert not fatal, [f.inner_text() for f in fatal]
        assert pg.evaluate("document.querySelector('video#player').error") is None
        assert pg.inner_text("[data-stat='resolution']") != "–"
        screenshot(pg, f"dashboard_playback_{engine}")
        assert pg.errors.items == [], pg.errors.items
    dash_page.close()


# --------------------------------------------------------------------------- testing session


def test_session_fault_shows_in_waterfall_and_slider_shapes(daemon: Daemon, page: Any) -> None:
    pid = "browser-qa"
    page.goto(url(daemon, f"session/{pid}?content=testclip&protocol=hls&duration=ll&engine=hls"))
    page.wait_for_selector("#netlog")
    sess = wait_for(lambda: session_of(daemon, pid), 10, "the session to exist")
    sid = sess["session_id"]
    # the player runs through the session port and posts its metrics
    wait_for(lambda: session_of(daemon, pid).get("segments_count", 0) > 2, 20, "segments on the session port")
    wait_for(lambda: session_of(daemon, pid).get("player_metrics_state"), 10, "player metrics posted")
    wait_for(lambda: page.query_selector("#netlog tr"), 10, "network log rows")

    # a second window on the same session follows changes made elsewhere (SSE)
    other = page.context.new_page()
    other.goto(url(daemon, f"session/{pid}?play=0"))
    other.wait_for_selector(fld("segment_failure_frequency"))
    other.click("button.tab[data-tab='segment']")

    # arm 404 on segments from the Segment tab
    page.click("button.tab[data-tab='segment']")
    page.select_option(fld("segment_failure_type"), "404")
    page.fill(fld("segment_consecutive_failures"), "1")
    page.fill(fld("segment_failure_frequency"), "2")
    page.click("#apply-segment")
    wait_for(lambda: sget(daemon, sid)["segment_failure_type"] == "404", 5, "404 armed")
    # (a player that aborts a request also gets a flagged row: "!↩", category client_disconnect)
    row = wait_for(lambda: page.query_selector("#netlog tr.faulted.http"), 20, "a flagged 404 row")
    assert row.query_selector("td.glyph").inner_text().strip() == "!"
    assert "404" in row.inner_text()
    wait_for(lambda: int(page.inner_text("#fault-count-total") or 0) > 0, 10, "the fault counter to rise")
    assert sget(daemon, sid)["fault_count_404"] > 0
    # the other window shows the armed rule without a reload
    wait_for(lambda: other.input_value(fld("segment_failure_type")) == "404", 5, "second window in sync")
    screenshot(page, "dashboard_session_fault")

    # a bad value is refused and the reason appears next to the control that caused it
    page.fill(fld("segment_failure_frequency"), "-3")
    page.click("#apply-segment")
    err = wait_for(lambda: page.inner_text("[data-error-for='segment_failure_frequency']").strip(), 5,
                   "the field error")
    assert err
    assert sget(daemon, sid)["segment_failure_frequency"] == 2

    # a change made elsewhere while this control is being edited: 409, reloaded, said so
    page.fill(fld("segment_failure_frequency"), "9")
    rev = sget(daemon, sid)["control_revision"]
    r = daemon.request("PATCH", f"/api/session/{sid}", {"set": {"segment_failure_frequency": 5},
                                                       "base_revision": rev})
    assert r.status == 200
    page.click("#apply-segment")
    freq_error = "[data-error-for='segment_failure_frequency']"
    note = wait_for(lambda: "someone else" in page.inner_text(freq_error), 5, "the conflict note")
    assert note
    assert page.input_value(fld("segment_failure_frequency")) == "5"
    assert sget(daemon, sid)["segment_failure_frequency"] == 5

    # disarm, then move the throughput slider: the session's shaping follows
    page.click("[data-panel='segment'] button:has-text('Disarm')")
    wait_for(lambda: sget(daemon, sid)["segment_failure_type"] == "none", 5, "disarmed")
    page.evaluate("""() => { const r = document.querySelector('#slider-nftables_bandwidth_mbps');
        r.value = '5'; r.dispatchEvent(new Event('input')); r.dispatchEvent(new Event('change')); }""")
    wait_for(lambda: sget(daemon, sid)["nftables_bandwidth_mbps"] == 5, 5,
             "nftables_bandwidth_mbps = 5")
    wait_for(lambda: other.input_value(fld("nftables_bandwidth_mbps")) == "5", 5, "slider synced")
    # a pattern template runs server-side, and stops again
    page.select_option("select[name='template']", "square_wave")
    page.click("button:has-text('Start pattern')")
    wait_for(lambda: sget(daemon, sid)["nftables_pattern_enabled"], 5, "the square wave to run")
    assert sget(daemon, sid)["nftables_pattern_template_mode"] == "square_wave"
    wait_for(lambda: "Running: step" in page.inner_text("#pattern-runtime"), 5, "the pattern runtime line")
    screenshot(page, "dashboard_session_shaped")
    page.click("button:has-text('Stop pattern')")
    wait_for(lambda: not sget(daemon, sid)["nftables_pattern_enabled"], 5, "the pattern to stop")
    other.close()
    # HAR download link points at the export
    har = page.get_attribute("a[download]", "href")
    assert daemon.get("/" + har.lstrip("/")).json()["log"]["version"] == "1.2"


# --------------------------------------------------------------------------- upload


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A 2 s 160x90 H.264/AAC clip."""
    ffmpeg = ffmpeg_path()
    if ffmpeg is None:
        pytest.skip("ffmpeg not installed")
    path = str(tmp_path_factory.mktemp("clip") / "tiny clip.mp4")
    subprocess.run([ffmpeg, "-hide_banner", "-loglevel", "error", "-y",
                    "-f", "lavfi", "-i", "testsrc2=size=160x90:rate=30:duration=2",
                    "-f", "lavfi", "-i", "sine=frequency=440:duration=2",
                    "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
                    "-c:a", "aac", "-shortest", path], check=True, timeout=60)
    return path


def test_upload_through_the_page_appears_in_content(daemon: Daemon, page: Any, tiny_clip: str) -> None:
    # 16 KiB chunks: the ~100 KB clip goes up in several resumable chunks
    # one chunk fails on the wire: the page asks the server what it has and resumes
    failed: list[str] = []

    def flaky(route: Any) -> None:
        if "offset=32768" in route.request.url and not failed:
            failed.append(route.request.url)
            route.abort("connectionreset")
        else:
            route.continue_()

    page.route("**/api/upload/chunk/**", flaky)
    page.goto(url(daemon, "sources?chunk_kb=16"))
    page.wait_for_selector("#dropzone")
    page.fill("[name='output_name']", "uploaded_tiny")
    page.select_option("[name='codec_selection']", "h264")
    page.set_input_files("#upload-file", tiny_clip)
    # nothing starts before the tester confirms; the loop length is said first
    page.wait_for_selector("#upload-ready .loop-note:has-text('2.0 s clip')")
    note = page.inner_text("#upload-ready .loop-note")
    assert "shorter than one 6 s segment: it becomes a 6 s loop" in note, note
    page.fill("[name='segment_duration']", "1")
    page.wait_for_selector("#upload-ready .loop-note:has-text('loops as it is')")
    page.fill("[name='segment_duration']", "6")
    page.click("#upload-start")
    box = page.wait_for_selector(".upload-job", timeout=20000)
    wait_for(lambda: box.get_attribute("data-status"), 90, "the encode job to end")
    assert box.get_attribute("data-status") == "complete", box.inner_text()
    screenshot(page, "dashboard_upload_done")
    assert failed, "the flaky chunk was never sent"
    assert "resuming" in page.inner_text("main")
    # the source the server stored has the same bytes (sha256 checked at complete)
    sources = daemon.get("/api/sources").json()
    with open(tiny_clip, "rb") as fh:
        size = len(fh.read())
    assert any(s["file_size"] == size for s in sources)
    page.goto(url(daemon, "content"))
    jobs = daemon.get("/api/jobs").json()
    outputs = [p for j in jobs if j["name"] == "uploaded_tiny" for p in j["output_paths"]]
    assert outputs
    for name in outputs:  # e.g. uploaded_tiny_h264
        page.wait_for_selector(f".item[data-content='{name}']")
    assert "hls_ll" in daemon.get("/api/content").text
    # the deliberately reset chunk is the only console error allowed
    others = [e for e in page.errors.items if "ERR_CONNECTION_RESET" not in e]
    assert others == [], others


# --------------------------------------------------------------------------- setup / seed


def test_seed_button_runs_the_demo_job_to_completion(daemon: Daemon, page: Any) -> None:
    page.goto(url(daemon, ""))
    page.wait_for_selector("#seed-demo")
    page.click("#seed-demo")
    box = page.wait_for_selector(".seed[data-status]", state="attached", timeout=120000)
    assert box.get_attribute("data-status") == "complete", box.inner_text()
    assert "ready" in page.inner_text("main").lower()
    jobs = daemon.get("/api/jobs").json()
    assert any(j["status"] == "complete" and j["name"].startswith("streamlab_demo") for j in jobs)
    screenshot(page, "dashboard_home_seeded")
    # the job view replays the encoder log over the WebSocket
    page.click(".seed a[href^='#/jobs/']")
    page.wait_for_selector("#job-log")
    wait_for(lambda: "[end: complete]" in page.inner_text("#job-log"), 10, "the job log with its end")
    assert len(page.inner_text("#job-log").splitlines()) > 3
    # the job says what it encoded in words: the source's name, the options (no raw JSON)
    page.wait_for_selector("dd a:has-text('streamlab_demo.mp4')")
    opts = page.inner_text("dl.options")
    assert "Codecs" in opts and "{" not in opts, opts
    screenshot(page, "dashboard_job_view")
    assert page.errors.items == [], page.errors.items
