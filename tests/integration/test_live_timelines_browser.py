"""LL-HLS latency and seamless loops in both timelines, with real players (#11 items 4, 5).

A 12 s item (two 6 s files) loops on a daemon whose window (24 s) is longer than the
loop.  Through a session port, in headless Chromium, with the dashboard's vendored
players, at the same time:

* hls.js (``lowLatencyMode``) on ``master.m3u8`` in the default (continuous) timeline and
  on ``master.m3u8?timeline=discontinuity``,
* shaka (``streaming.lowLatencyMode``) on the same two LL-HLS masters (the discontinuity
  one a non-strict xfail: see docs/origin.md for what it does),
* dash.js on the default LL-DASH MPD (continuous: one Period).

Each page is watched (polling with a deadline) until its playhead has crossed two loop
boundaries; then every player must have played without a stall after startup, kept up
with the wall clock, and (LL-HLS) settled near the live edge: the latency measured from
``EXT-X-PROGRAM-DATE-TIME`` (``now - playhead date``) within PART-HOLD-BACK + one part
plus a margin for this loaded test machine.
"""

from __future__ import annotations

import datetime
import os
import time

import pytest

from streamlab.testing.daemon import Daemon
from streamlab.testing.fixtures import build_test_item, install_test_item
from tests.integration.dashboard_helpers import VENDOR, poll_players, route_player_pages

pytestmark = pytest.mark.browser

LOOP = 12.0
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--autoplay-policy=no-user-gesture-required"]
DEADLINE = 75.0
#: how long after the first ``playing`` event a player may still settle (seek to the edge,
#: adjust its rate) before stalls count; the two loop boundaries must be crossed after it
STARTUP = 8.0

PAGE = """<!doctype html><html><body><video id="v" muted autoplay playsinline></video>
<script src="/__players/%LIB%"></script>
<script>
const EPOCH = %EPOCH%, LOOP = %LOOP%, STARTUP = %STARTUP%;
const v = document.getElementById('v');
const rec = window.rec = {errors: [], loops: [], playingAt: null, t0: null, stalls: [], lat: [], holes: []};
v.addEventListener('playing', () => {
  if (rec.playingAt === null) { rec.playingAt = performance.now(); rec.t0 = v.currentTime; }
});
v.addEventListener('waiting', () => {
  if (rec.playingAt !== null) rec.stalls.push([(performance.now() - rec.playingAt) / 1000, v.currentTime]);
});
let dateOf = null;  // playhead -> Date (ms), per engine
function sample() {
  if (rec.playingAt === null || !dateOf) return;
  const d = dateOf();
  if (d === null || !isFinite(d)) return;
  const loop = Math.floor((d / 1000 - EPOCH) / LOOP);
  const t = (performance.now() - rec.playingAt) / 1000;
  if (t >= STARTUP && !rec.loops.includes(loop)) rec.loops.push(loop);
  rec.lat.push([t, Date.now() / 1000 - d / 1000]);
  const b = v.buffered;
  if (b.length > 1) rec.holes.push([(performance.now() - rec.playingAt) / 1000, b.length]);
}
setInterval(sample, 250);
%INIT%
window.snap = () => ({t: v.currentTime, now: performance.now(), err: v.error && v.error.message,
                      extra: window.extra ? window.extra() : null});
</script></body></html>"""

HLS_INIT = """
const hls = new Hls({lowLatencyMode: true});
hls.on(Hls.Events.ERROR, (e, d) => {
  if (d.fatal) rec.errors.push(d.type + ':' + d.details);
  else (rec.notes = rec.notes || []).push([Math.round(v.currentTime * 1000) / 1000, d.details,
    d.frag ? d.frag.relurl + '#' + (d.part ? d.part.index : '') : '', d.response ? d.response.code : '']);
});
dateOf = () => { const d = hls.playingDate; return d ? d.getTime() : null; };
window.extra = () => ({target: hls.targetLatency, latency: hls.latency, drift: hls.drift});
hls.loadSource('{src}'); hls.attachMedia(v);
"""

SHAKA_INIT = """
shaka.polyfill.installAll();
const player = new shaka.Player();
player.configure({streaming: {lowLatencyMode: true}});
player.addEventListener('error', e => rec.errors.push('shaka ' + (e.detail && e.detail.code)));
dateOf = () => { const d = player.getPlayheadTimeAsDate(); return d ? d.getTime() : null; };
window.extra = () => { const s = player.getStats(), r = player.seekRange();
  const tl = player.getManifest() && player.getManifest().presentationTimeline;
  const b = v.buffered;
  return {live: s.liveLatency, ll: player.getConfiguration().streaming.lowLatencyMode,
          edge: r.end - v.currentTime, ahead: b.length ? b.end(b.length - 1) - v.currentTime : null,
          delay: tl && tl.getDelay(), avail: tl && (tl.getSegmentAvailabilityEnd() - v.currentTime),
          start: window.startAt}; };
v.addEventListener('playing', () => {
  if (window.startAt === undefined) window.startAt = [v.currentTime, player.seekRange().end];
});
player.attach(v).then(() => player.load('{src}')).catch(e => rec.errors.push('load ' + e.code));
"""

DASH_INIT = """
const p = dashjs.MediaPlayer().create();
p.on(dashjs.MediaPlayer.events.ERROR, e => rec.errors.push(JSON.stringify(e.error || e).slice(0, 200)));
p.on(dashjs.MediaPlayer.events.PERIOD_SWITCH_COMPLETED, e => {
  if (rec.playingAt !== null) rec.errors.push('period switch');
});
// one Period starting at the epoch: the presentation time is seconds since the epoch
dateOf = () => (EPOCH + v.currentTime) * 1000;
p.initialize(v, '{src}', true);
"""

PLAYERS = {
    # the continuous timeline is the default: its pages load the manifests as given
    "hlsjs_disc": ("hls.min.js", HLS_INIT, "master.m3u8?timeline=discontinuity"),
    "hlsjs_cont": ("hls.min.js", HLS_INIT, "master.m3u8"),
    "shaka_disc": ("shaka-player.compiled.js", SHAKA_INIT, "master.m3u8?timeline=discontinuity"),
    "shaka_cont": ("shaka-player.compiled.js", SHAKA_INIT, "master.m3u8"),
    "dashjs_cont": ("dash.all.min.js", DASH_INIT, "manifest.mpd"),
}


def _iso(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture(scope="module")
def short_item(tmp_path_factory) -> str:
    media = str(tmp_path_factory.mktemp("short-item"))
    return build_test_item(media, name="short", extra_args=["--duration", str(int(LOOP))])


@pytest.fixture(scope="module")
def origin(tmp_path_factory, short_item):
    epoch = float(int(time.time() - 1000 * LOOP))
    d = Daemon(str(tmp_path_factory.mktemp("timelines")),
               config={"live": {"live_epoch": _iso(epoch), "window_seconds": 24}})
    install_test_item(d.media_dir, "short", source=short_item)
    d.start()
    deadline = time.monotonic() + 30
    while d.get("/go-live/short/master.m3u8").status != 200:
        assert time.monotonic() < deadline, d.log()
        time.sleep(0.05)
    d.epoch = epoch
    yield d
    d.stop()
    log = d.log()
    assert "Unhandled error" not in log and "Traceback" not in log, log[-4000:]


def _page(name: str, epoch: float) -> str:
    lib, init, src = PLAYERS[name]
    return (PAGE.replace("%LIB%", lib).replace("%EPOCH%", repr(epoch)).replace("%LOOP%", repr(LOOP))
            .replace("%STARTUP%", repr(STARTUP))
            .replace("%INIT%", init.replace("{src}", "/go-live/short/" + src)))


def _done(r: dict) -> bool:
    rec = r["rec"]
    return (rec["playingAt"] is not None and len(rec["loops"]) >= 3) or bool(rec["errors"])


def _play(origin, names) -> dict[str, dict]:
    sync_api = pytest.importorskip("playwright.sync_api")
    for lib in {PLAYERS[n][0] for n in names}:
        if not os.path.isfile(os.path.join(VENDOR, lib)):
            pytest.skip(f"vendored {lib} not present (make assets)")
    # one session port per page, as every real player has its own: pages sharing a port
    # would share Chromium's 6 connections per origin, and two LL pages hold most of
    # them in blocking reloads and chunk-streamed segments
    ports = {}
    for name in names:
        r = origin.request("POST", "/api/sessions", {"player_id": f"timelines-{name}", "set": {}})
        assert r.status in (200, 201), r.text
        ports[name] = int(r.json()["x_forwarded_port"])
    with sync_api.sync_playwright() as pw:
        try:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        except Exception as exc:  # noqa: BLE001 - no browser on this machine
            pytest.skip(f"cannot launch chromium: {exc}")
        ctx = browser.new_context()
        route_player_pages(ctx, lambda name: _page(name, origin.epoch))
        pages = {}
        for name in names:
            pg = ctx.new_page()
            pg.goto(f"http://127.0.0.1:{ports[name]}/__players/{name}.html")
            pages[name] = pg
        results = poll_players(pages, _done, DEADLINE)
        browser.close()
    return results


def _settled(lat: list[list[float]]) -> list[float]:
    """Latency samples once the player has settled (after the startup window)."""
    return [x for t, x in lat if t >= STARTUP]


HLSJS_LL_AUDIO_RACE = (
    "hls.js 1.7.4 limitation (issue #11, docs/origin.md 'hls.js LL-HLS: the audio part race'): "
    "when the last audio parts of a segment take longer to load and append than the last part "
    "lasts (0.17 s; seen under CPU load, 0.2-1 s per part), the playlist update that completes "
    "the segment lands while a part is being parsed, and hls.js's audio-stream-controller never "
    "asks for the remaining part(s): its log shows 'Buffered audio sn: 4009 part: 30', then "
    "'Audio track 0 ... loaded [4006,4009][part-4009-31]' and no 'Loading audio sn: 4009 part: "
    "31' again, '[audio-stream-controller]: Reduce max buffer length to 300s' at the seam, then "
    "'[gap-controller]: Playback stalling ... due to low buffer' while video keeps loading. The "
    "origin answered every request with 2xx at the part's publication; the continuous timeline "
    "and single-player runs hit it far less often (1 in 13 single-player runs under load)")


#: PART-HOLD-BACK of the test item's LL playlists (the 1 s floor > 3 x 0.2 s), its part
#: and target durations
PART_HOLD_BACK = 1.0
PART = 0.2
TARGET = 6.0


def _check(results: dict[str, dict], latency_bound: dict[str, float]) -> None:
    problems, table = [], []
    for name, r in results.items():
        rec, snap = r["rec"], r["snap"]
        settled = _settled(rec["lat"])
        table.append(f"{name}: loops {rec['loops']} stalls {rec['stalls']} errors {rec['errors']} "
                     f"notes {(rec.get('notes') or [])[:12]} "
                     f"latency {min(settled, default=-1):.2f}..{max(settled, default=-1):.2f} s "
                     f"{snap.get('extra')}")
        if rec["errors"] or snap["err"]:
            problems.append(f"{name}: errors {rec['errors']} {snap['err']}")
            continue
        if rec["playingAt"] is None:
            problems.append(f"{name}: never started playing")
            continue
        if len(rec["loops"]) < 3:
            crossed = max(0, len(rec["loops"]) - 1)
            problems.append(f"{name}: crossed {crossed} loop boundaries after startup, not 2")
        late = [s for s in rec["stalls"] if s[0] > STARTUP]
        if late:
            problems.append(f"{name}: stalled after startup at (s after start, position) {late}")
        played = snap["t"] - rec["t0"]
        wall = (snap["now"] - rec["playingAt"]) / 1000
        if played < 0.9 * wall - 1.0:
            problems.append(f"{name}: played {played:.1f} s of media in {wall:.1f} s")
        bound = latency_bound.get(name)
        if bound is not None and settled:
            if max(settled) > bound:
                problems.append(f"{name}: live latency up to {max(settled):.2f} s, bound {bound:.2f} s")
            if max(settled) - min(settled) > 1.5:  # no climb at the boundaries (a loaded box drifts a little)
                problems.append(f"{name}: latency did not settle ({min(settled):.2f}..{max(settled):.2f} s)")
    print("\n".join(table))
    assert not problems, "\n".join(problems) + "\n" + "\n".join(table)


def _names(default: tuple[str, ...]) -> tuple[str, ...]:
    only = os.environ.get("TIMELINE_PLAYERS")
    return tuple(n for n in only.split(",") if n in default) if only else default


@pytest.fixture(scope="module")
def hlsjs_runs(origin) -> dict:
    """hls.js (lowLatencyMode, defaults otherwise) in both timelines, played together once.

    Where its latency settles depends on its start: hls.js begins at the independent part
    (GOP start) before ``edge - PART-HOLD-BACK`` and, with its default
    maxLiveSyncPlaybackRate of 1, never speeds up to win back that and the start-up
    fetches: 1.5-1.9 s on an idle machine, more on a loaded one (docs/origin.md)."""
    return _play(origin, _names(("hlsjs_disc", "hlsjs_cont")))


def _check_player(runs: dict, name: str, latency_bound: float | None = None) -> None:
    """Check one page of a fixture's run (skipped when TIMELINE_PLAYERS left it out)."""
    if name not in runs:
        pytest.skip(f"{name} not selected (TIMELINE_PLAYERS)")
    _check({name: runs[name]}, {} if latency_bound is None else {name: latency_bound})


def test_hls_js_ll_hls_is_live_and_seamless_in_the_continuous_timeline(hlsjs_runs):
    """No stall across two loop boundaries; latency settles (does not climb by more than
    1.5 s across the boundaries) inside one segment of the edge."""
    _check_player(hlsjs_runs, "hlsjs_cont", TARGET + PART_HOLD_BACK)


@pytest.mark.xfail(strict=False, reason=HLSJS_LL_AUDIO_RACE)
def test_hls_js_ll_hls_is_live_and_seamless_in_the_discontinuity_timeline(hlsjs_runs):
    """The same with EXT-X-DISCONTINUITY at every loop boundary."""
    _check_player(hlsjs_runs, "hlsjs_disc", TARGET + PART_HOLD_BACK)


def test_dash_js_plays_the_continuous_ll_dash_mpd_without_a_period_switch(origin):
    """dash.js on the continuous LL-DASH MPD (one Period: no Period switch at the loop
    boundaries, timestamps rising): no stall, real time, across two loop boundaries."""
    _check(_play(origin, _names(("dashjs_cont",))), {})


@pytest.fixture(scope="module")
def shaka_runs(origin) -> dict:
    """shaka (lowLatencyMode) on LL-HLS in both timelines, played together."""
    return _play(origin, _names(("shaka_cont", "shaka_disc")))


def test_shaka_ll_hls_is_seamless_in_the_default_continuous_timeline(shaka_runs):
    """No stall across two loop boundaries, real time (the manifest as given)."""
    _check_player(shaka_runs, "shaka_cont")


@pytest.mark.xfail(strict=False, reason="shaka 5.2 LL-HLS in the discontinuity timeline: its LL "
                   "byte-range optimization recomputes the timestampOffset from every chunk of the "
                   "segment in production, so it stalls at (nearly) every segment boundary; see "
                   "docs/origin.md 'What shaka LL-HLS does in the discontinuity timeline'")
def test_shaka_ll_hls_in_the_discontinuity_timeline(shaka_runs):
    """The same with ``?timeline=discontinuity``."""
    _check_player(shaka_runs, "shaka_disc")
