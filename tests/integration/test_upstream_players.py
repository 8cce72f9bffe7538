"""hls.js and dash.js (the dashboard's vendored copies) in headless Chromium play upstream
origins through a session port: the project's own origin in a second daemon (live HLS and
DASH) and a static ffmpeg-made HLS VOD, all fronted by the daemon under test."""

from __future__ import annotations

import os

import pytest

from streamlab.testing.daemon import Daemon
from streamlab.testing.fixtures import install_test_item
from tests.integration.dashboard_helpers import VENDOR, poll_players, route_player_pages
from tests.integration.sessions_helpers import create_session, network, wait_item
from tests.integration.upstream_helpers import StaticServer, make_vod

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
DEADLINE = 45.0
PLAY_FOR = 6.0

PAGE = """<!doctype html><html><body><video id="v" muted autoplay playsinline></video>
<script src="/__players/%LIB%"></script>
<script>
const v = document.getElementById('v');
const rec = window.rec = {errors: [], playingAt: null, t0: null};
v.addEventListener('playing', () => {
  if (rec.playingAt === null) { rec.playingAt = performance.now(); rec.t0 = v.currentTime; }
});
%INIT%
window.snap = () => ({t: v.currentTime, now: performance.now(), err: v.error && v.error.message});
</script></body></html>"""

HLS_INIT = """
const hls = new Hls();
hls.on(Hls.Events.ERROR, (e, d) => { if (d.fatal) window.rec.errors.push(d.type + ':' + d.details); });
hls.loadSource('{src}'); hls.attachMedia(v);
"""

DASH_INIT = """
const p = dashjs.MediaPlayer().create();
p.on(dashjs.MediaPlayer.events.ERROR,
     e => window.rec.errors.push(JSON.stringify(e.error || e).slice(0, 200)));
p.initialize(v, '{src}', true);
"""

PLAYERS = {
    "own_hls": ("hls", "/go-live/own/master.m3u8"),
    "own_dash": ("dash", "/go-live/owndash/manifest.mpd"),
    "vod_hls": ("hls", "/go-live/vod/master.m3u8"),
    "vod_dash": ("dash", "/go-live/voddash/manifest.mpd"),  # SegmentTimeline + $Time$
}


@pytest.fixture(scope="module")
def setup(tmp_path_factory, test_item):
    up = Daemon(str(tmp_path_factory.mktemp("upp-origin")), session_ports=2)
    install_test_item(up.media_dir)
    up.start()
    wait_item(up)
    root = tmp_path_factory.mktemp("upp-vod")
    make_vod(str(root / "www"))
    static = StaticServer(str(root / "www"), str(root)).start()
    d = Daemon(str(tmp_path_factory.mktemp("upp-front")), session_ports=4)
    d.start()
    for body in ({"name": "own", "url": f"http://127.0.0.1:{up.port}/go-live/testclip/master_2s.m3u8"},
                 {"name": "owndash", "url": f"http://127.0.0.1:{up.port}/go-live/testclip/manifest_6s.mpd"},
                 {"name": "vod", "url": f"{static.url}/master.m3u8"},
                 {"name": "voddash", "url": f"{static.url}/dash/manifest.mpd"}):
        r = d.request("POST", "/api/upstreams", body)
        assert r.status == 201, r.text
    yield d
    d.stop()
    static.stop()
    up.stop()


def _page(kind: str, src: str) -> str:
    if kind == "hls":
        return PAGE.replace("%LIB%", "hls.min.js").replace("%INIT%", HLS_INIT.replace("{src}", src))
    return PAGE.replace("%LIB%", "dash.all.min.js").replace("%INIT%", DASH_INIT.replace("{src}", src))


def _done(r: dict) -> bool:
    rec, snap = r["rec"], r["snap"]
    return bool(rec["errors"]) or (rec["playingAt"] is not None and snap["t"] - rec["t0"] >= PLAY_FOR)


def test_hls_js_and_dash_js_play_upstreams_through_a_session_port(setup):
    d = setup
    sync_api = pytest.importorskip("playwright.sync_api")
    if not os.path.isfile(os.path.join(VENDOR, "hls.min.js")) or not os.path.isfile(
            os.path.join(VENDOR, "dash.all.min.js")):
        pytest.skip("vendored hls.js / dash.js not present")
    session = create_session(d, "upstream-players")
    base = f"http://127.0.0.1:{session['x_forwarded_port']}"
    with sync_api.sync_playwright() as pw:
        try:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=[
                "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--autoplay-policy=no-user-gesture-required"])
        except Exception as exc:  # noqa: BLE001 - no browser on this machine
            pytest.skip(f"cannot launch chromium: {exc}")
        ctx = browser.new_context()
        route_player_pages(ctx, lambda name: _page(*PLAYERS[name]))
        pages = {}
        for name in PLAYERS:
            pg = ctx.new_page()
            pg.goto(f"{base}/__players/{name}.html")
            pages[name] = pg
        results = poll_players(pages, _done, DEADLINE)
        # the dashboard's Content page lists the upstreams, marked as such
        dash_page = ctx.new_page()
        dash_page.goto(f"http://127.0.0.1:{d.port}/dashboard/#/content")
        dash_page.wait_for_selector(".item[data-content='vod'][data-upstream='1']", timeout=15000)
        card = dash_page.inner_text(".item[data-content='owndash']")
        browser.close()
    assert "upstream" in card and "DASH" in card and "/go-live/owndash/manifest.mpd" in card
    problems = [f"{n}: {r}" for n, r in results.items()
                if r["rec"]["errors"] or r["snap"]["err"] or r["rec"]["playingAt"] is None
                or r["snap"]["t"] - r["rec"]["t0"] < PLAY_FOR]
    assert not problems, "\n".join(problems)
    entries = network(d, session["session_id"])
    for prefix in ("/go-live/own/", "/go-live/owndash/", "/go-live/vod/", "/go-live/voddash/"):
        segs = [e for e in entries if e["path"].startswith(prefix) and e["request_kind"] == "segment"]
        assert segs and all(e["status"] in (200, 206) for e in segs), prefix
        assert all(e["upstream_ttfb_ms"] is not None for e in segs)
