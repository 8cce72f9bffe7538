"""The origin serving sequence-addressed URLs and the continuous timeline, over real
twisted.web requests (StringTransport) on a Clock, with the real packaged test item
(24 s loop: 4 files of 6 s) and a 48 s window, longer than the loop."""

from __future__ import annotations

import os

import m3u8
import pytest
from twisted.internet.task import Clock
from twisted.web.resource import Resource
from twisted.web.server import Site

from streamlab.live.origin import OriginResource
from streamlab.live.timeline import LiveTimeline
from streamlab.media import decode_times
from streamlab.media.index import load_item
from streamlab.media.mp4 import parse_fragments, read_init
from tests.test_origin_resource import Call, Response

EPOCH = 1_700_000_000.0


class Library:
    """The ContentLibrary surface the origin uses, over one real item directory."""

    def __init__(self, item_dir: str, times: bool = True) -> None:
        self.dir = item_dir
        self.index = load_item(item_dir)
        self.times = decode_times.build(item_dir, self.index) if times else "no index (test)"

    def get(self, name: str):
        return self.index if name == "clip" else None

    def item_dir(self, name: str) -> str:
        return self.dir

    def decode_times(self, name: str):
        return self.times if name == "clip" else None


class Env:
    def __init__(self, item_dir: str, window: float = 48, timeline: str = "discontinuity",
                 times: bool = True) -> None:
        self.library = Library(item_dir, times)
        self.index = self.library.index
        self.clock = Clock()
        self.tl = LiveTimeline(self.index, EPOCH)
        # loop 10, file 3 (segment 42), 3.05 s in
        self.n_live = 10 * self.index.segment_count + 2
        self.clock.advance(EPOCH + self.n_live * 6 + 3.05)
        self.origin = OriginResource(self.library, self.clock, epoch=EPOCH, window=window, idle_timeout=60,
                                     timeline=timeline)
        top = Resource()
        top.putChild(b"go-live", self.origin)
        self.site = Site(top, reactor=self.clock)
        self.site.timeOut = None

    def call(self, path: str, headers: dict | None = None) -> Call:
        return Call(self.site, "/go-live/clip/" + path, headers=headers)

    def get(self, path: str, headers: dict | None = None) -> Response:
        return self.call(path, headers).response()

    def file(self, rel: str) -> bytes:
        with open(os.path.join(self.library.dir, rel), "rb") as fh:
            return fh.read()


@pytest.fixture
def env(test_item):
    return Env(test_item)


def test_previous_loop_segment_is_served_at_once_and_the_live_one_paced(env):
    """Window 48 s > loop 24 s: file 3 is listed as n-4 (complete) and n (in production)."""
    pl = m3u8.loads(env.get("playlist_360p.m3u8").text)
    uris = [s.uri for s in pl.segments if s.uri]
    old = f"video/360p/n{env.n_live - 4}.m4s"
    assert old in uris and pl.preload_hint.uri == f"video/360p/n{env.n_live}.m4s"
    on_disk = env.file("video/360p/seg_00003.m4s")
    r = env.get(old)
    assert r.status == 200 and r.complete and r.body == on_disk
    assert r.headers["content-length"] == str(len(on_disk))
    live = env.call(f"video/360p/n{env.n_live}.m4s")
    r = live.response()
    assert r.status == 200 and r.headers.get("transfer-encoding") == "chunked" and not r.complete
    assert 0 < len(r.body) < len(on_disk)
    # the old-style name of the same file keeps its old meaning (this loop: paced)
    assert not env.get("video/360p/seg_00003.m4s").complete
    env.clock.advance(6.0)
    r = Response(live.raw)
    assert r.complete and r.body == on_disk


def test_a_range_of_the_live_segment_waits_for_unpublished_bytes_only(env):
    seg = env.index.track("360p").segments[2]
    path = f"video/360p/n{env.n_live}.m4s"
    published = seg.parts[5]
    r = env.get(path, {"Range": f"bytes={published.offset}-{published.offset + published.size - 1}"})
    assert r.status == 206 and r.complete and len(r.body) == published.size
    later = seg.parts[25]
    c = env.call(path, {"Range": f"bytes={later.offset}-{later.offset + later.size - 1}"})
    assert not c.answered
    env.clock.advance(env.tl.part_publish_time(env.index.track("360p"), env.n_live, 25) - env.clock.seconds())
    r = c.response()
    assert r.status == 206 and r.complete and len(r.body) == later.size


def test_segments_beyond_the_next_one_are_404(env):
    assert env.get(f"video/360p/n{env.n_live + 2}.m4s").status == 404
    # the next one (a preload hint at a boundary) is held until its first part is out
    c = env.call(f"video/360p/n{env.n_live + 1}.m4s", {"Range": "bytes=0-"})
    assert not c.answered
    env.clock.advance(6.0 - 3.05 + 0.25)
    assert c.response().status == 206


def _decode_times(env, track_id: str, body: bytes) -> list[int]:
    track = env.index.track(track_id)
    info = read_init(os.path.join(env.library.dir, track.init))
    return [f.decode_time for f in parse_fragments(body, info)]


def test_continuous_playlists_and_rewritten_media(env):
    text = env.get("playlist_360p.m3u8?timeline=continuous").text
    assert "#EXT-X-DISCONTINUITY\n" not in text and "#EXT-X-DISCONTINUITY-SEQUENCE:0" in text
    assert text.count("#EXT-X-PROGRAM-DATE-TIME") == 1 and text.count("#EXT-X-MAP") == 1
    pl = m3u8.loads(text)
    assert all(s.uri.endswith("?timeline=continuous") for s in pl.segments if s.uri)
    assert pl.preload_hint.uri.endswith("?timeline=continuous")
    assert all(r.uri.endswith("?timeline=continuous") for r in pl.rendition_reports)
    master = m3u8.loads(env.get("master.m3u8?timeline=continuous").text)
    assert all(p.uri.endswith("?timeline=continuous") for p in master.playlists)
    # the complete segment of the previous loop (k = 9) and of this loop (k = 10): decode
    # times rise by one loop; the bytes differ from the file only in tfdt values
    count = env.index.segment_count
    for track_id in ("360p", "audio"):
        times = env.library.times.track(env.index.track(track_id))
        top = "video" if track_id != "audio" else "audio"
        on_disk = env.file(f"{top}/{track_id}/seg_00002.m4s")
        base = _decode_times(env, track_id, on_disk)
        for n in (env.n_live - 1 - count, env.n_live - 1):
            r = env.get(f"{top}/{track_id}/n{n}.m4s?timeline=continuous")
            assert r.status == 200 and len(r.body) == len(on_disk)
            k = n // count
            assert _decode_times(env, track_id, r.body) == [b + k * times.loop_ticks for b in base]
        # the same URL without the query: the file as on disk
        assert env.get(f"{top}/{track_id}/n{env.n_live - 1}.m4s").body == on_disk


def test_continuous_live_segment_is_paced_and_rewritten(env):
    c = env.call(f"audio/audio/n{env.n_live}.m4s?timeline=continuous")
    assert not Response(c.raw).complete
    env.clock.advance(6.0)
    r = Response(c.raw)
    assert r.complete
    times = env.library.times.track(env.index.track("audio"))
    base = _decode_times(env, "audio", env.file("audio/audio/seg_00003.m4s"))
    assert _decode_times(env, "audio", r.body) == [b + 10 * times.loop_ticks for b in base]


def test_continuous_mpd_has_one_period(env):
    text = env.get("manifest_6s.mpd?timeline=continuous").text
    assert text.count("<Period ") == 1 and 'start="PT0S"' in text
    assert 'media="video/360p/n$Number$.m4s?timeline=continuous"' in text


@pytest.mark.parametrize("path", [
    "playlist_360p.m3u8?timeline=sideways",
    "master.m3u8?timeline=",
    "video/360p/seg_00001.m4s?timeline=continuous",  # which loop? the n<N> URL says
])
def test_bad_timeline_requests_are_400_json(env, path):
    r = env.get(path)
    assert r.status == 400 and "timeline" in r.json()["error"] and r.json()["detail"], r.body


def test_continuous_without_a_decode_index_is_409(test_item):
    env = Env(test_item, times=False)
    r = env.get("manifest.mpd?timeline=continuous")
    assert r.status == 409 and "continuous" in r.json()["error"]
    assert env.get("manifest.mpd").status == 200


def test_config_default_timeline_applies_to_the_entry_points(test_item):
    """``[live] timeline = continuous``: masters and MPDs without a query are continuous and
    list URLs that say so; a media playlist URL is complete as listed (no query:
    discontinuity), so a discontinuity master's playlists stay discontinuous."""
    env = Env(test_item, timeline="continuous")
    master = m3u8.loads(env.get("master_6s.m3u8").text)
    assert master.playlists and all(p.uri.endswith("?timeline=continuous") for p in master.playlists)
    text = env.get(master.playlists[0].uri).text
    assert "?timeline=continuous" in text and "#EXT-X-DISCONTINUITY\n" not in text
    mpd = env.get("manifest_6s.mpd").text
    assert mpd.count("<Period") == 1 and "?timeline=continuous" in mpd
    disc = m3u8.loads(env.get("master_6s.m3u8?timeline=discontinuity").text)
    assert not any("timeline" in p.uri for p in disc.playlists)
    text = env.get(disc.playlists[0].uri).text
    assert "?timeline" not in text and "#EXT-X-DISCONTINUITY\n" in text
    assert "?timeline" not in env.get("playlist_6s_360p.m3u8").text
    assert env.get("manifest_6s.mpd?timeline=discontinuity").text.count("<Period") > 1


def test_continuous_default_falls_back_where_it_cannot_be_served(test_item, test_item_ts):
    """The configured default is a preference: MPEG-TS masters and an item without a
    decode-time index are served in the discontinuity timeline (an explicit query is a
    demand: 400 / 409)."""
    env = Env(test_item_ts, timeline="continuous")
    r = env.get("master_6s.m3u8?format=ts")
    assert r.status == 200 and "timeline" not in r.text, r.body
    assert env.get("master_6s.m3u8?format=ts&timeline=continuous").status == 400
    env = Env(test_item, timeline="continuous", times=False)
    r = env.get("manifest.mpd")
    assert r.status == 200 and "timeline" not in r.text and r.text.count("<Period") > 1
    assert env.get("manifest.mpd?timeline=continuous").status == 409


def test_continuous_ts_is_400(test_item_ts):
    env = Env(test_item_ts)
    r = env.get("master_6s.m3u8?format=ts&timeline=continuous")
    assert r.status == 400 and "MPEG-TS" in r.json()["error"]
    r = env.get(f"ts/360p/n{env.n_live - 1}.ts?timeline=continuous")
    assert r.status == 400
    assert env.get(f"ts/360p/n{env.n_live - 1}.ts").status == 200


def test_loop_of_path_names_the_loop_of_sequence_urls(env):
    count = env.index.segment_count
    assert env.origin.loop_of_path(f"/go-live/clip/video/360p/n{10 * count + 1}.m4s") == 10
    assert env.origin.loop_of_path(f"/go-live/clip/video/360p/n{11 * count}.m4s?timeline=continuous") == 11
    for path in ("/go-live/clip/video/360p/seg_00001.m4s", "/go-live/clip/video/360p/init.mp4",
                 "/go-live/other/video/360p/n5.m4s", "/go-live/clip/master.m3u8", "/api/x"):
        assert env.origin.loop_of_path(path) is None


def test_session_counts_loops_from_sequence_urls():
    """The session's loop_count_server used to come from decreasing seg_NNNNN numbers;
    sequence-addressed URLs never decrease, so the loop the origin names is used."""
    from streamlab.proxy.session import Session

    s = Session("1", 30181, 30181, "p", controls=None, engine=None, netlog=None, now=0.0)
    for loop in (10, 10, 11, 11, 12):
        s.on_video_segment("360p", "/go-live/clip/video/360p/nX.m4s", loop)
    assert s.loop_count_server == 2
    s2 = Session("2", 30182, 30182, "p", controls=None, engine=None, netlog=None, now=0.0)
    for n in (3, 4, 1, 2, 3, 4, 1):
        s2.on_video_segment("360p", f"/go-live/clip/video/360p/seg_{n:05d}.m4s")
    assert s2.loop_count_server == 2
