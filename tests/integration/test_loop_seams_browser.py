"""Loop seams in real players: hls.js, dash.js and shaka (the dashboard's vendored copies)
in Debian's Chromium play every stream kind of a SHORT item through a session port across
at least two loop boundaries, and must not notice the seams.

The item loops every 12 s (2 x 6 s segments, one tiny 180p rung; 12 s is NOT a whole
number of AAC frames: 562.5), so crossing two seams costs ~25 s of playback; all players
of one window length run at once, one page each, in one browser.  Per page we record
(injected before the engine loads):

* ``waiting`` events on the video element after the first ``playing`` (stalls) and
  ``seeking`` events after startup (a gap jump is a seek);
* what the engine reports about holes: hls.js non-fatal ``bufferStalledError`` /
  ``bufferSeekOverHole`` / ``bufferNudgeOnStall``, dash.js ``GapController`` "Jumping"
  warnings on the console, shaka ``gapjumped`` / ``stalldetected`` / ``buffering``;
* every 200 ms the buffered ranges of the audio and the video SourceBuffer (MSE's
  ``addSourceBuffer`` is wrapped), from which the largest A/V disagreement between the
  playhead and the common buffered end is computed (a hole in one track, or a seam where
  audio and video end at different times) -- must stay within one AAC frame;
* ``currentTime`` progress against wall time, and the engine's live latency.

Run on the code before issue #11 this fails (see the report of branch seam-media).
"""

from __future__ import annotations

import datetime
import json
import os
import time

import pytest

from streamlab.testing.daemon import Daemon
from streamlab.testing.fixtures import build_test_item, install_test_item
from tests.integration.dashboard_helpers import CHROMIUM, CHROMIUM_ARGS, browser_marks

pytestmark = browser_marks()

VENDOR = os.path.join(os.path.dirname(__file__), "..", "..", "streamlab", "dashboard", "vendor")
NAME = "seam12"
LOOP = 12.0
AAC_FRAME = 1024 / 48000
#: media seconds each player must play: two loop boundaries whatever the start position
PLAY = 2 * LOOP + 1.5
DEADLINE = 75.0

#: stream kind -> (protocol, manifest path)
KINDS = {
    "ll_hls": ("hls", "master.m3u8"),
    "hls_2s": ("hls", "master_2s.m3u8"),
    "hls_6s": ("hls", "master_6s.m3u8"),
    "hls_6s_ts": ("hls", "master_6s.m3u8?format=ts"),
    "ll_dash": ("dash", "manifest.mpd"),
    "dash_2s": ("dash", "manifest_2s.mpd"),
    "dash_6s": ("dash", "manifest_6s.mpd"),
}
#: (engine, kind): hls.js plays HLS (fMP4 and TS), dash.js DASH, shaka both (fMP4 only:
#: the dashboard ships shaka without mux.js, so it cannot transmux TS)
COMBOS = ([("hlsjs", k) for k in ("ll_hls", "hls_2s", "hls_6s", "hls_6s_ts")]
          + [("dashjs", k) for k in ("ll_dash", "dash_2s", "dash_6s")]
          + [("shaka", k) for k in ("ll_hls", "hls_2s", "hls_6s", "ll_dash", "dash_2s", "dash_6s")])
#: Combinations that still fail for a reason outside the media (issue #11 items 3-5,
#: branch live-urls); everything else must pass.
KNOWN: dict[tuple[str, str], str] = {}

RECORDER = """
(() => {
  const rec = window.rec = {errors: [], holes: [], stalls: [], seeks: [], samples: [],
                            playingAt: null, t0: null, latency: null, ended: false};
  const sbs = window.__sbs = [];
  const add = MediaSource.prototype.addSourceBuffer;
  MediaSource.prototype.addSourceBuffer = function (mime) {
    const sb = add.call(this, mime);
    sbs.push({kind: /audio/.test(mime) ? 'audio' : 'video', sb: sb, ms: this});
    return sb;
  };
  const ranges = (sb) => {
    try { const b = sb.buffered, out = [];
          for (let i = 0; i < b.length; i++) out.push([b.start(i), b.end(i)]); return out; }
    catch (e) { return null; }
  };
  window.addEventListener('DOMContentLoaded', () => {
    const v = document.getElementById('v');
    const now = () => performance.now();
    v.addEventListener('playing', () => {
      if (rec.playingAt === null) { rec.playingAt = now(); rec.t0 = v.currentTime; }
    });
    v.addEventListener('waiting', () => {
      if (rec.playingAt !== null) rec.stalls.push({t: v.currentTime, at: now()});
    });
    v.addEventListener('seeking', () => {
      if (rec.playingAt !== null) rec.seeks.push({t: v.currentTime, at: now()});
    });
    v.addEventListener('ended', () => { rec.ended = true; });
    setInterval(() => {
      if (rec.playingAt === null) return;
      const s = {t: v.currentTime, at: now()};
      for (const e of sbs) if (e.ms.readyState === 'open') s[e.kind] = ranges(e.sb);
      rec.samples.push(s);
      if (rec.samples.length > 400) rec.samples.shift();
    }, 200);
  });
  const log = console.warn;
  console.warn = function (...a) {
    const text = a.map(String).join(' ');
    if (/Jumping|GapController/.test(text)) rec.holes.push('dash.js: ' + text.slice(0, 200));
    return log.apply(this, a);
  };
})();
"""

PAGE = """<!doctype html><html><head><script>%RECORDER%</script>
<script src="/__players/%LIB%"></script></head>
<body><video id="v" muted autoplay playsinline></video>
<script>
const v = document.getElementById('v');
const rec = window.rec;
const url = '/go-live/%NAME%/%SRC%';
%INIT%
window.snap = () => ({t: v.currentTime, now: performance.now(), latency: latency(),
                      err: v.error && v.error.message});
</script></body></html>"""

HLSJS = """
const hls = new Hls({lowLatencyMode: %LL%});
hls.on(Hls.Events.ERROR, (e, d) => {
  if (d.fatal) rec.errors.push(d.type + ':' + d.details);
  else if (/bufferStalled|SeekOverHole|NudgeOnStall/.test(d.details))
    rec.holes.push('hls.js: ' + d.details + ' @' + v.currentTime.toFixed(3));
});
hls.loadSource(url); hls.attachMedia(v);
const latency = () => hls.latency;
"""

DASHJS = """
const p = dashjs.MediaPlayer().create();
p.updateSettings({streaming: {liveCatchup: {enabled: %LL%}}});
p.on(dashjs.MediaPlayer.events.ERROR, e => rec.errors.push(JSON.stringify(e.error || e).slice(0, 200)));
p.initialize(v, url, true);
const latency = () => p.getCurrentLiveLatency();
"""

SHAKA = """
shaka.polyfill.installAll();
const p = new shaka.Player();
p.configure({streaming: {lowLatencyMode: %LL%}});
p.addEventListener('error', e => rec.errors.push('shaka ' + (e.detail && e.detail.code)));
const at = () => ' @' + v.currentTime.toFixed(3);
p.addEventListener('gapjumped', () => rec.holes.push('shaka: gapjumped' + at()));
p.addEventListener('stalldetected', () => rec.holes.push('shaka: stalldetected' + at()));
p.addEventListener('buffering', e => {
  if (e.buffering && rec.playingAt !== null) rec.holes.push('shaka: buffering' + at());
});
p.attach(v).then(() => p.load(url)).then(() => v.play())
  .catch(e => rec.errors.push('shaka load ' + (e && e.code)));
const latency = () => p.getStats().liveLatency;
"""

LIBS = {"hlsjs": ("hls.min.js", HLSJS), "dashjs": ("dash.all.min.js", DASHJS),
        "shaka": ("shaka-player.compiled.js", SHAKA)}


def page_html(engine: str, kind: str) -> str:
    """The test page of one engine x stream kind."""
    lib, init = LIBS[engine]
    low_latency = "true" if kind.startswith("ll_") else "false"
    return (PAGE.replace("%RECORDER%", RECORDER).replace("%LIB%", lib).replace("%INIT%", init)
            .replace("%LL%", low_latency).replace("%NAME%", NAME).replace("%SRC%", KINDS[kind][1]))


def _iso(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture(scope="module")
def short_item(tmp_path_factory) -> str:
    """A 12 s item (2 x 6 s segments), one 180p rung, with TS renditions; built once."""
    base = str(tmp_path_factory.mktemp("seam-item"))
    return build_test_item(base, name=NAME, ts=True,
                           extra_args=["--duration", str(LOOP), "--rungs", "180p:320x180:200"])


def _daemon(tmp_path_factory, item: str, window: float) -> Daemon:
    epoch = float(int(time.time() - 1000 * LOOP))
    d = Daemon(str(tmp_path_factory.mktemp("seams")),
               config={"live": {"live_epoch": _iso(epoch), "window_seconds": window}})
    install_test_item(d.media_dir, NAME, source=item)
    d.start()
    deadline = time.monotonic() + 30
    while d.get(f"/go-live/{NAME}/master.m3u8").status != 200:
        assert time.monotonic() < deadline, d.log()
        time.sleep(0.05)
    return d


def _mismatch(sample: dict) -> float:
    """Seconds of media between the playhead and the common buffered end that are buffered
    in one SourceBuffer but not in the other."""
    audio, video = sample.get("audio"), sample.get("video")
    if not audio or not video:
        return 0.0
    lo = max(sample["t"], audio[0][0], video[0][0])
    hi = min(audio[-1][1], video[-1][1])
    if hi <= lo:
        return 0.0

    def covered(ranges: list[list[float]]) -> float:
        return sum(max(0.0, min(e, hi) - max(s, lo)) for s, e in ranges)

    def both() -> float:
        total = 0.0
        for s1, e1 in audio:
            for s2, e2 in video:
                total += max(0.0, min(e1, e2, hi) - max(s1, s2, lo))
        return total

    common = both()
    return (covered(audio) - common) + (covered(video) - common)


def _play(pw, d: Daemon, combos: list[tuple[str, str]]) -> dict[tuple[str, str], dict]:
    """One page per combo, each on its own session port; poll (with a deadline) until every
    player played PLAY seconds (or failed); {combo: {"rec", "snap", "net"}}."""
    browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    try:
        ctx = browser.new_context()

        def serve(route):
            name = route.request.url.split("/__players/", 1)[1].split("?", 1)[0]
            if name.endswith(".js"):
                with open(os.path.join(VENDOR, name), "rb") as fh:
                    route.fulfill(body=fh.read(), content_type="application/javascript")
            else:
                engine, kind = name[:-len(".html")].split("-", 1)
                route.fulfill(body=page_html(engine, kind), content_type="text/html")

        ctx.route("**/__players/**", serve)
        pages, sessions = {}, {}
        for engine, kind in combos:
            sid, port = _session(d, f"{engine}-{kind}")
            pg = ctx.new_page()
            pg.goto(f"http://127.0.0.1:{port}/__players/{engine}-{kind}.html")
            pages[(engine, kind)] = pg
            sessions[(engine, kind)] = sid
        net: dict[tuple[str, str], dict] = {c: {} for c in combos}
        deadline = time.monotonic() + DEADLINE
        results: dict[tuple[str, str], dict] = {}
        rounds = 0
        while True:
            next(iter(pages.values())).wait_for_timeout(1000)
            rounds += 1
            results = {c: pg.evaluate("() => ({rec: window.rec, snap: window.snap()})")
                       for c, pg in pages.items()}
            done = all(_finished(r) for r in results.values()) or time.monotonic() > deadline
            if done or rounds % 4 == 0:  # the ring holds 200 entries: read it often
                for c, sid in sessions.items():
                    for e in d.get(f"/api/session/{sid}/network").json().get("entries", []):
                        net[c][(e.get("timestamp"), e.get("url"))] = e
            if done:
                break
        for c in combos:
            results[c]["net"] = list(net[c].values())
        return results
    finally:
        browser.close()


def _session(d: Daemon, player: str) -> tuple[str, int]:
    r = d.request("POST", "/api/sessions", {"player_id": f"{player}-{time.monotonic_ns()}"})
    assert r.status in (200, 201), r.text
    body = r.json()
    session = body.get("session", body)
    return str(session["session_id"]), int(session["x_forwarded_port"])


def _net_summary(entries: list[dict]) -> dict:
    """Media requests, failed ones (status not 2xx) and slow ones (> 1 s: paced by the origin)."""
    media = [e for e in entries if e.get("request_kind") == "segment"]
    failed = [int(e.get("status") or 0) for e in media if not 200 <= int(e.get("status") or 0) < 300]
    slow = [e for e in media if (e.get("total_ms") or 0) > 1000]
    return {"media": len(media), "failed": len(failed), "statuses": sorted(set(failed)), "slow": len(slow),
            "slowest": sorted(((round(e.get("total_ms") or 0), (e.get("url") or "")[-40:]) for e in slow),
                              reverse=True)[:3]}


def _finished(r: dict) -> bool:
    rec, snap = r["rec"], r["snap"]
    if rec["errors"] or snap["err"] or rec["ended"]:
        return True
    return rec["playingAt"] is not None and snap["t"] - rec["t0"] >= PLAY


def _verdict(r: dict) -> tuple[list[str], dict]:
    """(problems, figures) of one player's record."""
    rec, snap = r["rec"], r["snap"]
    problems: list[str] = []
    figures = {"stalls": len(rec["stalls"]), "holes": len(rec["holes"]), "latency": snap["latency"],
               "played": None, "wall": None, "av_mismatch": None}
    if rec["errors"] or snap["err"]:
        problems.append(f"errors {rec['errors']} {snap['err']}")
    if rec["playingAt"] is None:
        problems.append("never started playing")
        return problems, figures
    played = snap["t"] - rec["t0"]
    wall = (snap["now"] - rec["playingAt"]) / 1000
    figures.update(played=round(played, 2), wall=round(wall, 2))
    if rec["ended"]:
        problems.append(f"reached 'ended' at {snap['t']:.3f}")
    if played < PLAY:
        problems.append(f"played only {played:.1f} s of media in {wall:.1f} s (two seams need {PLAY:g} s)")
    if played < wall - max(1.5, 0.08 * wall):
        problems.append(f"fell behind real time: {played:.1f} s of media in {wall:.1f} s")
    if rec["stalls"]:
        problems.append(f"{len(rec['stalls'])} 'waiting' after startup at "
                        f"{[round(s['t'], 3) for s in rec['stalls']][:6]}")
    if rec["holes"]:
        problems.append(f"engine reported holes/stalls: {rec['holes'][:4]}")
    worst = max((_mismatch(s) for s in rec["samples"]), default=0.0)
    figures["av_mismatch"] = round(worst, 4)
    if worst > AAC_FRAME + 1e-3:
        bad = max(rec["samples"], key=_mismatch)
        problems.append(f"audio/video buffered ranges disagree by {worst * 1000:.1f} ms "
                        f"(> one AAC frame) at t={bad['t']:.3f}: audio {bad.get('audio')} "
                        f"video {bad.get('video')}")
    return problems, figures


def _run_all(tmp_path_factory, item: str, window: float, combos: list[tuple[str, str]]) -> dict:
    """Play every combo at once (one page each) on a fresh daemon; {combo: record}."""
    sync_api = pytest.importorskip("playwright.sync_api")
    d = _daemon(tmp_path_factory, item, window)
    try:
        with sync_api.sync_playwright() as pw:
            results = _play(pw, d, combos)
    finally:
        d.stop()
    results["log"] = d.log()
    lines = []
    for combo in combos:
        _problems, figures = _verdict(results[combo])
        lines.append(f"window {window:g}s {combo[0]:7s} {combo[1]:10s} {json.dumps(figures)} "
                     f"net {json.dumps(_net_summary(results[combo]['net']))}")
    print("\n" + "\n".join(lines))
    return results


def _params(combos: list[tuple[str, str]]) -> list:
    return [pytest.param(c, id=f"{c[0]}-{c[1]}",
                         marks=[pytest.mark.xfail(strict=False, reason=KNOWN[c])] if c in KNOWN else [])
            for c in combos]


#: window shorter than the loop: only the kinds whose segments fit it (not the 6 s ones)
SHORT_WINDOW = 10.0
SHORT_COMBOS = [c for c in COMBOS if "6s" not in c[1]]


@pytest.fixture(scope="module")
def long_window(tmp_path_factory, short_item) -> dict:
    """Window (36 s) longer than the 12 s loop: playlists and MPDs list three loops."""
    return _run_all(tmp_path_factory, short_item, 36.0, COMBOS)


@pytest.fixture(scope="module")
def short_window(tmp_path_factory, short_item) -> dict:
    """Window (10 s) shorter than the loop."""
    return _run_all(tmp_path_factory, short_item, SHORT_WINDOW, SHORT_COMBOS)


def _log_problem(log: str) -> str | None:
    if "Unhandled error" in log or "Traceback" in log:
        at = log.find("Traceback")
        return log[max(0, at - 300):at + 2500]
    return None


def _check(results: dict, combo: tuple[str, str]) -> None:
    problems, figures = _verdict(results[combo])
    assert not problems, f"{combo[0]} / {combo[1]}: " + "; ".join(problems) + f"\n{figures}"


@pytest.mark.parametrize("combo", _params(COMBOS))
def test_crosses_two_loop_seams_with_a_window_longer_than_the_loop(long_window, combo):
    _check(long_window, combo)


@pytest.mark.parametrize("combo", _params(SHORT_COMBOS))
def test_crosses_two_loop_seams_with_a_window_shorter_than_the_loop(short_window, combo):
    _check(short_window, combo)


@pytest.mark.xfail(strict=False, reason=(
    "live/media.py (not the media packaging): a paced media response whose client went away "
    "calls request.unregisterProducer() after the channel is gone -> 'Unhandled error in "
    "Deferred' AttributeError; seen when a player page closes mid-request"))
def test_daemon_log_stays_clean_while_players_come_and_go(long_window):
    problem = _log_problem(long_window["log"])
    assert problem is None, problem
