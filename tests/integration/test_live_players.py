"""Real players on the real daemon: hls.js and dash.js (the dashboard's vendored copies) in
headless Chromium play all six live streams of the test item across a loop boundary.

The item loops every 24 s; each player is watched (polling, with a deadline) until it has
crossed a loop boundary (its playhead passed a multiple of the loop length: in the default,
continuous timeline media time is the time since the epoch, and in the discontinuity one
hls.js and the DASH Periods keep it rising the same way) and played for 8 s, and must have
kept up with real time. One browser, at most three
pages at a time; about 80 s in total, plus ~35 s for the three DASH streams on a second
daemon with the default 36 s window (longer than the loop).
"""

from __future__ import annotations

import datetime
import os
import time

import pytest

from streamlab.testing.daemon import Daemon
from streamlab.testing.fixtures import install_test_item
from tests.integration.dashboard_helpers import VENDOR, route_player_pages
from tests.integration.test_live_timelines_browser import HLSJS_LL_AUDIO_RACE

pytestmark = pytest.mark.browser

LOOP = 24.0
CHROMIUM = "/usr/bin/chromium"
DEADLINE = 45.0
BATCHES = (("hls_2s", "hls_6s", "ll_dash"), ("dash_2s", "dash_6s"))

STREAMS = {
    "ll_hls": ("hls", "master.m3u8"),
    "hls_2s": ("hls", "master_2s.m3u8"),
    "hls_6s": ("hls", "master_6s.m3u8"),
    "ll_dash": ("dash", "manifest.mpd"),
    "dash_2s": ("dash", "manifest_2s.mpd"),
    "dash_6s": ("dash", "manifest_6s.mpd"),
}

PAGE = """<!doctype html><html><body><video id="v" muted autoplay playsinline></video>
<script src="/__players/%LIB%"></script>
<script>
const v = document.getElementById('v');
const LOOP = %LOOP%;
const rec = window.rec = {errors: [], boundaries: [], playingAt: null, t0: null, stalls: 0};
v.addEventListener('playing', () => {
  if (rec.playingAt === null) { rec.playingAt = performance.now(); rec.t0 = v.currentTime; }
});
v.addEventListener('timeupdate', () => {  // the loops the playhead has been in
  if (rec.playingAt === null) return;
  const k = Math.floor(v.currentTime / LOOP + 1e-6), b = rec.boundaries;
  if (!b.length || b[b.length - 1] !== k) b.push(k);
});
v.addEventListener('waiting', () => { if (rec.playingAt !== null) rec.stalls++; });
%INIT%
window.snap = () => ({t: v.currentTime, now: performance.now(), err: v.error && v.error.message});
</script></body></html>"""

HLS_INIT = """
const hls = new Hls({lowLatencyMode: true});
hls.on(Hls.Events.ERROR, (e, d) => { if (d.fatal) window.rec.errors.push(d.type + ':' + d.details); });
hls.loadSource('/go-live/testclip/{src}'); hls.attachMedia(v);
"""

DASH_INIT = """
const p = dashjs.MediaPlayer().create();
p.updateSettings({streaming: {liveCatchup: {enabled: {ll}}}});
p.on(dashjs.MediaPlayer.events.ERROR,
     e => window.rec.errors.push(JSON.stringify(e.error || e).slice(0, 200)));
p.initialize(v, '/go-live/testclip/{src}', true);
"""


def _iso(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _origin(tmp_path_factory, window: int):
    # a boundary ~5 s before the players start: the 6 s streams cross it ~13 s later
    epoch = float(int(time.time() - 1000 * LOOP))
    d = Daemon(str(tmp_path_factory.mktemp("players")),
               config={"live": {"live_epoch": _iso(epoch), "window_seconds": window}})
    install_test_item(d.media_dir)
    d.start()
    deadline = time.monotonic() + 30
    while d.get("/go-live/testclip/master.m3u8").status != 200:
        assert time.monotonic() < deadline, d.log()
        time.sleep(0.05)
    d.boundary = epoch + 1000 * LOOP
    return d


@pytest.fixture(scope="module")
def origin(tmp_path_factory, test_item):
    d = _origin(tmp_path_factory, 24)
    yield d
    d.stop()


@pytest.fixture(scope="module")
def origin_long_window(tmp_path_factory, test_item):
    # the default window (36 s) is longer than the 24 s loop: the MPD lists two loops (one
    # Period in the default continuous timeline; 2-3 Periods with ?timeline=discontinuity,
    # which test_loop_seams_browser.py plays with dash.js, hls.js and shaka)
    d = _origin(tmp_path_factory, 36)
    yield d
    d.stop()


def _page(kind: str, src: str) -> str:
    if kind == "hls":
        return PAGE.replace("%LIB%", "hls.min.js").replace("%INIT%", HLS_INIT.replace("{src}", src)) \
            .replace("%LOOP%", str(LOOP))
    init = DASH_INIT.replace("{src}", src).replace("{ll}", "true" if src == "manifest.mpd" else "false")
    return PAGE.replace("%LIB%", "dash.all.min.js").replace("%INIT%", init).replace("%LOOP%", str(LOOP))


def _done(r: dict) -> bool:
    rec, snap = r["rec"], r["snap"]
    return (rec["playingAt"] is not None and len(set(rec["boundaries"])) >= 2
            and snap["now"] - rec["playingAt"] >= 8000) or bool(rec["errors"])


def _play(ctx, base: str, names: tuple[str, ...]) -> dict[str, dict]:
    """Open one page per stream, poll (with a deadline) until each crossed a loop boundary
    and played for 8 s, and return what each recorded."""
    pages = {}
    for name in names:
        pg = ctx.new_page()
        pg.goto(f"{base}/__players/{name}.html")
        pages[name] = pg
    deadline = time.monotonic() + DEADLINE
    while True:
        first = next(iter(pages.values()))
        first.wait_for_timeout(500)  # lets Playwright dispatch the pages' events meanwhile
        results = {name: pg.evaluate("() => ({rec: window.rec, snap: window.snap()})")
                   for name, pg in pages.items()}
        if all(_done(r) for r in results.values()) or time.monotonic() > deadline:
            break
    for pg in pages.values():
        pg.close()
    return results


def _run(origin, batches) -> dict[str, dict]:
    sync_api = pytest.importorskip("playwright.sync_api")
    if not os.path.isfile(os.path.join(VENDOR, "hls.min.js")) or not os.path.isfile(
            os.path.join(VENDOR, "dash.all.min.js")):
        pytest.skip("vendored hls.js / dash.js not present")
    base = f"http://127.0.0.1:{origin.port}"
    with sync_api.sync_playwright() as pw:
        kw = {"executable_path": CHROMIUM} if os.path.exists(CHROMIUM) else {}
        try:
            browser = pw.chromium.launch(args=["--autoplay-policy=no-user-gesture-required"], **kw)
        except Exception as exc:  # noqa: BLE001 - no browser on this machine
            pytest.skip(f"cannot launch chromium: {exc}")
        ctx = browser.new_context()
        route_player_pages(ctx, lambda name: _page(*STREAMS[name]))
        results = {}
        for batch in batches:  # a few players at a time: the test box may have 2 cores
            results.update(_play(ctx, base, batch))
        browser.close()
    return results


def _check(results: dict[str, dict]) -> None:
    problems = []
    for name, r in results.items():
        rec, snap = r["rec"], r["snap"]
        if rec["errors"] or snap["err"]:
            problems.append(f"{name}: errors {rec['errors']} {snap['err']}")
            continue
        if rec["playingAt"] is None:
            problems.append(f"{name}: never started playing")
            continue
        played = snap["t"] - rec["t0"]
        wall = (snap["now"] - rec["playingAt"]) / 1000
        if played < 0.75 * wall - 1.5:
            problems.append(f"{name}: played {played:.1f} s of media in {wall:.1f} s "
                            f"({rec['stalls']} stalls)")
        if len(set(rec["boundaries"])) < 2:
            problems.append(f"{name}: no loop boundary crossed (seen {rec['boundaries']})")
    assert not problems, "\n".join(problems) + "\n" + repr(results)


def test_hls_js_and_dash_js_play_live_streams_across_a_loop(origin):
    _check(_run(origin, BATCHES))


@pytest.mark.xfail(strict=False, reason=HLSJS_LL_AUDIO_RACE)
def test_hls_js_plays_ll_hls_across_a_loop(origin):
    # hls.js 1.7 used to stall ~20 s at segment ends whose last AAC part was a 2-3 frame
    # tail; the packager now cuts audio into even 8-9 frame parts (packager.group_parts).
    _check(_run(origin, (("ll_hls",),)))


def test_dash_js_plays_across_loops_with_a_window_longer_than_the_loop(origin_long_window):
    # reported: dash.js stops at a loop boundary ("Jumping to end of stream because of gap")
    # with window_seconds = 36 in the then-default discontinuity timeline; not reproduced
    # since (each Period has start k*T and duration T, only loops touching the window are
    # listed), kept as a guard of the default MPDs
    _check(_run(origin_long_window, (("ll_dash", "dash_2s", "dash_6s"),)))
