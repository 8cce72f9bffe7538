"""OriginResource over real twisted.web Requests (StringTransport), driven by a Clock.

The content item is synthetic (files of known bytes plus a matching index) so that byte
ranges and publish times can be asserted exactly; the renderers are the real ones.
"""

from __future__ import annotations

import json
import os

import m3u8
import pytest
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import Site

from streamlab.live.origin import OriginResource
from streamlab.media.index import ContentIndex, parse_index
from streamlab.proxy.classify import classify

EPOCH = 1_700_000_000.0
SEG = 6.0
PART = 0.2
NPARTS = 30
COUNT = 4  # loop of 24 s
HEADER = 64  # bytes before the first part (styp)
PSIZE = 500


def _byte(track: str, number: int, offset: int) -> int:
    return (offset * 7 + number * 13 + len(track)) % 251


def _file_bytes(track: str, number: int, size: int) -> bytes:
    return bytes(_byte(track, number, i) for i in range(size))


def make_item(item_dir: str) -> ContentIndex:
    """A 24 s item: video 360p + audio, 4 files of 6 s, 30 parts of 0.2 s each."""
    tracks = []
    for tid, ttype in (("360p", "video"), ("audio", "audio")):
        top = "video" if ttype == "video" else "audio"
        os.makedirs(os.path.join(item_dir, top, tid), exist_ok=True)
        with open(os.path.join(item_dir, top, tid, "init.mp4"), "wb") as fh:
            fh.write(b"\0" * 300)
        segments = []
        for n in range(1, COUNT + 1):
            parts = [{"offset": HEADER + i * PSIZE, "size": PSIZE, "duration": PART,
                      "independent": i % 5 == 0} for i in range(NPARTS)]
            size = HEADER + NPARTS * PSIZE
            with open(os.path.join(item_dir, top, tid, f"seg_{n:05d}.m4s"), "wb") as fh:
                fh.write(_file_bytes(tid, n, size))
            segments.append({"duration": SEG, "size": size, "parts": parts})
        t = {"id": tid, "type": ttype, "codecs": "avc1.64001e" if ttype == "video" else "mp4a.40.2",
             "bandwidth": 800000 if ttype == "video" else 128000, "timescale": 15360,
             "init": f"{top}/{tid}/init.mp4", "segment_template": f"{top}/{tid}/seg_{{number:05d}}.m4s",
             "segments": segments}
        if ttype == "video":
            t.update(width=640, height=360, frame_rate=30)
        else:
            t.update(channels=2, sample_rate=48000)
        tracks.append(t)
    return parse_index({"format": 1, "name": "clip", "source": "x.mp4", "codec": "h264",
                        "segment_duration": SEG, "part_duration": PART, "gop_duration": 1.0,
                        "segment_count": COUNT, "duration": COUNT * SEG, "tracks": tracks})


class FakeLibrary:
    """The ContentLibrary surface the origin uses."""

    def __init__(self, root: str, items: dict[str, ContentIndex]) -> None:
        self.root = root
        self.items = items

    def get(self, name: str) -> ContentIndex | None:
        return self.items.get(name)

    def item_dir(self, name: str) -> str:
        return os.path.join(self.root, name)


class Response:
    def __init__(self, raw: bytes) -> None:
        head, _, rest = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headers: dict[str, str] = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            self.headers[k.strip().lower()] = v.strip()
        self.chunks: list[bytes] = []
        if self.headers.get("transfer-encoding") == "chunked":
            body = b""
            while rest:
                size_line, _, rest = rest.partition(b"\r\n")
                size = int(size_line, 16)
                if size == 0:
                    self.complete = True
                    break
                self.chunks.append(rest[:size])
                body += rest[:size]
                rest = rest[size + 2:]
            else:
                self.complete = False
            self.body = body
        else:
            n = int(self.headers.get("content-length", "0"))
            self.body = rest[:n]
            self.complete = len(rest) >= n

    def json(self):
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode()


class Call:
    """One request on its own connection."""

    def __init__(self, site: Site, path: str, method: str = "GET", headers: dict | None = None) -> None:
        self.channel = site.buildProtocol(None)
        self.transport = StringTransport()
        self.channel.makeConnection(self.transport)
        hdrs = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self.channel.dataReceived(f"{method} {path} HTTP/1.1\r\nHost: test\r\n{hdrs}\r\n".encode())

    @property
    def raw(self) -> bytes:
        return self.transport.value()

    @property
    def answered(self) -> bool:
        return b"\r\n\r\n" in self.raw

    def response(self) -> Response:
        assert self.answered, "no response yet"
        return Response(self.raw)

    def disconnect(self) -> None:
        self.channel.connectionLost(Failure(ConnectionDone()))


class Env:
    def __init__(self, tmp_path, clock: Clock, window: float = 36, idle: float = 60) -> None:
        root = str(tmp_path / "dynamic_content")
        self.index = make_item(os.path.join(root, "clip"))
        self.library = FakeLibrary(root, {"clip": self.index})
        self.clock = clock
        self.origin = OriginResource(self.library, clock, epoch=EPOCH, window=window, idle_timeout=idle)
        top = Resource()
        top.putChild(b"go-live", self.origin)
        self.site = Site(top, reactor=clock)
        self.site.timeOut = None

    def call(self, path: str, method: str = "GET", headers: dict | None = None) -> Call:
        return Call(self.site, path, method, headers)

    def get(self, path: str, method: str = "GET", headers: dict | None = None) -> Response:
        c = self.call(path, method, headers)
        return c.response()


@pytest.fixture
def clock():
    c = Clock()
    # loop 10, file 1 (absolute segment 40), 3.05 s in: parts 0..14 published
    c.advance(EPOCH + 10 * COUNT * SEG + 3.05)
    return c


@pytest.fixture
def env(tmp_path, clock):
    return Env(tmp_path, clock)


# ------------------------------------------------------------------ classification


def test_classify_maps_urls_to_request_kinds():
    assert classify("/go-live/clip/master.m3u8") == "master_manifest"
    assert classify("/go-live/clip/master_6s.m3u8?format=ts") == "master_manifest"
    assert classify("/go-live/clip/manifest_2s.mpd") == "master_manifest"
    assert classify("/go-live/clip/playlist_360p.m3u8?_HLS_msn=3") == "manifest"
    assert classify("/go-live/clip/video/360p/seg_00001.m4s") == "segment"
    assert classify("/go-live/clip/audio/audio/init.mp4") == "segment"
    assert classify("/go-live/healthz") == "other"
    assert classify("/go-live/api/status") == "other"


# ------------------------------------------------------------------ simple endpoints


def test_healthz_time_cors_and_preflight(env, clock):
    r = env.get("/go-live/healthz")
    assert r.status == 200 and r.json() == {"status": "ok"}
    assert r.headers["access-control-allow-origin"] == "*"
    assert "Content-Range" in r.headers["access-control-expose-headers"]
    r = env.get("/go-live/time")
    assert r.status == 200
    assert r.text.startswith("2023-11-14T") and r.text.endswith("Z")
    r = env.get("/go-live/clip/video/360p/seg_00001.m4s", method="OPTIONS")
    assert r.status == 204
    assert "GET" in r.headers["access-control-allow-methods"]
    assert "Range" in r.headers["access-control-allow-headers"]
    assert r.headers["access-control-allow-origin"] == "*"


@pytest.mark.parametrize("path", [
    "/go-live/nope/master.m3u8",
    "/go-live/clip/playlist_1080p.m3u8",
    "/go-live/clip/playlist_2s_nope.m3u8",
    "/go-live/clip/whatever.m3u8",
    "/go-live/clip/video/360p/seg_00099.m4s",
    "/go-live/clip/video/../../../etc/passwd",
    "/go-live/clip/video/%2e%2e/%2e%2e/clip/video/360p/init.mp4",
    "/go-live/clip/video/360p%2f..%2f..%2fcontent.json",
    "/go-live/clip/video/360p/init.mp4%00.m4s",
    "/go-live/clip/video//etc/passwd",
    "/go-live/clip/video/360p/%ff.m4s",
    "/go-live/clip/content.json",
    "/go-live/clip/video/evil/seg_00001.m4s",
    "/go-live/api/tick-stats/clip",
    "/go-live/",
])
def test_bad_paths_are_json_404(env, path):
    r = env.get(path)
    assert r.status == 404, path
    assert "error" in r.json()
    assert r.headers["access-control-allow-origin"] == "*"


def test_symlink_out_of_item_is_404(env, tmp_path):
    secret = tmp_path / "secret.m4s"
    secret.write_bytes(b"secret")
    os.symlink(secret, os.path.join(env.library.item_dir("clip"), "video", "360p", "evil.m4s"))
    r = env.get("/go-live/clip/video/360p/evil.m4s")
    assert r.status == 404


def test_wrong_method_and_bad_format_are_4xx(env):
    assert env.get("/go-live/clip/master.m3u8", method="POST").status == 405
    assert env.get("/go-live/api/stop/clip", method="GET").status == 405
    r = env.get("/go-live/clip/master_6s.m3u8?format=avi")
    assert r.status == 400 and r.json()["error"]
    assert env.get("/go-live/clip/master_6s.m3u8?format=ts").status == 404  # no TS renditions


# ------------------------------------------------------------------ manifests


def test_master_and_media_playlists(env):
    r = env.get("/go-live/clip/master.m3u8")
    assert r.status == 200
    assert r.headers["content-type"] == "application/vnd.apple.mpegurl"
    assert r.headers["cache-control"] == "no-cache, no-store, must-revalidate"
    master = m3u8.loads(r.text)
    assert [p.uri for p in master.playlists] == ["playlist_360p.m3u8"]
    for path in ("playlist_360p.m3u8", "playlist_audio.m3u8", "playlist_2s_360p.m3u8",
                 "playlist_6s_audio.m3u8"):
        r = env.get(f"/go-live/clip/{path}")
        assert r.status == 200, path
        pl = m3u8.loads(r.text)
        assert pl.segments, path
    ll = m3u8.loads(env.get("/go-live/clip/playlist_360p.m3u8").text)
    # segment 40 in progress with parts 0..14 published: preload hint for part 15
    assert ll.segments[-1].parts[-1].byterange.strip('"') == f"{PSIZE}@{HEADER + 14 * PSIZE}"
    assert ll.preload_hint.byterange_start == HEADER + 15 * PSIZE


def test_playlist_is_a_function_of_the_clock(env, clock, tmp_path):
    other = Env(tmp_path / "b", clock)
    for path in ("playlist_360p.m3u8", "playlist_6s_360p.m3u8", "master_2s.m3u8"):
        assert env.get(f"/go-live/clip/{path}").body == other.get(f"/go-live/clip/{path}").body


# ------------------------------------------------------------------ blocking reload


def _ll_edge(env) -> tuple[int, int]:
    pl = m3u8.loads(env.get("/go-live/clip/playlist_360p.m3u8").text)
    return pl.media_sequence + len(pl.segments) - 1, len(pl.segments[-1].parts) - 1


def test_blocking_reload_answers_exactly_at_publish_time(env, clock):
    msn, part = _ll_edge(env)
    assert (msn, part) == (40, 14)
    start = clock.seconds()
    publish = EPOCH + 40 * SEG + 16 * PART  # end of part 15
    calls = [env.call("/go-live/clip/playlist_360p.m3u8?_HLS_msn=40&_HLS_part=15") for _ in range(50)]
    assert not any(c.answered for c in calls)
    assert len(env.origin.waiters) == 50
    stream = env.origin.workers.get("clip").stream("ll_hls")
    renders = stream.render_count
    clock.advance(publish - start - 0.001)
    assert not any(c.answered for c in calls)
    clock.advance(0.001)
    assert all(c.answered for c in calls)
    bodies = {c.response().body for c in calls}
    assert len(bodies) == 1
    assert stream.render_count == renders + 1  # rendered once for the 50 woken together
    r = calls[0].response()
    assert r.status == 200
    pl = m3u8.loads(r.text)
    assert len(pl.segments[-1].parts) == 16
    assert len(env.origin.waiters) == 0
    assert not env.origin.waiters.timer_pending


def test_blocking_reload_for_whole_segment_and_next_segment_part(env, clock):
    c1 = env.call("/go-live/clip/playlist_360p.m3u8?_HLS_msn=40")
    c2 = env.call("/go-live/clip/playlist_audio.m3u8?_HLS_msn=41&_HLS_part=0")
    clock.advance(EPOCH + 41 * SEG - clock.seconds())
    assert c1.answered
    pl = m3u8.loads(c1.response().text)
    assert pl.media_sequence + len(pl.segments) - 1 >= 40
    assert not c2.answered
    clock.advance(PART)
    assert c2.answered and c2.response().status == 200
    pl = m3u8.loads(c2.response().text)
    assert pl.segments[-1].parts and pl.segments[-1].parts[0].byterange.strip('"').endswith(f"@{HEADER}")


def test_already_available_answers_at_once(env):
    r = env.get("/go-live/clip/playlist_360p.m3u8?_HLS_msn=39&_HLS_part=3")
    assert r.status == 200


@pytest.mark.parametrize("query", [
    "_HLS_msn=abc", "_HLS_msn=-1", "_HLS_part=2", "_HLS_msn=40&_HLS_part=x",
    "_HLS_msn=99", "_HLS_skip=NO", "_HLS_msn=1e3",
])
def test_bad_blocking_reload_is_400(env, query):
    r = env.get(f"/go-live/clip/playlist_360p.m3u8?{query}")
    assert r.status == 400, query
    assert r.json()["error"]
    assert len(env.origin.waiters) == 0


def test_blocking_reload_503_after_deadline(env, clock, monkeypatch):
    # With the real geometry every allowed request (<= 2 segments ahead) is satisfiable
    # within 3 x target duration, so the deadline is shortened to reach the 503 path.
    from streamlab.live import blocking

    monkeypatch.setattr(blocking, "reload_deadline", lambda index, kind="ll": 1.0)
    c = env.call("/go-live/clip/playlist_360p.m3u8?_HLS_msn=41&_HLS_part=2")
    ok = env.call("/go-live/clip/playlist_360p.m3u8?_HLS_msn=40&_HLS_part=16")  # +0.4 s
    clock.advance(0.4)
    assert ok.response().status == 200
    clock.advance(0.599)
    assert not c.answered
    clock.advance(0.001)
    r = c.response()
    assert r.status == 503 and r.json()["error"]
    assert r.headers["access-control-allow-origin"] == "*"
    assert len(env.origin.waiters) == 0


def test_disconnect_while_held_removes_waiter(env, clock):
    calls = [env.call("/go-live/clip/playlist_360p.m3u8?_HLS_msn=40&_HLS_part=20") for _ in range(10)]
    assert len(env.origin.waiters) == 10
    for c in calls[:9]:
        c.disconnect()
    assert len(env.origin.waiters) == 1
    calls[-1].disconnect()
    assert len(env.origin.waiters) == 0
    assert not env.origin.waiters.timer_pending
    clock.advance(10)
    assert all(c.raw == b"" for c in calls)


def test_delta_update_skips_old_segments(env):
    full = env.get("/go-live/clip/playlist_360p.m3u8").text
    r = env.get("/go-live/clip/playlist_360p.m3u8?_HLS_skip=YES")
    assert r.status == 200
    assert "#EXT-X-SKIP:SKIPPED-SEGMENTS=" in r.text
    skipped = int(r.text.split("#EXT-X-SKIP:SKIPPED-SEGMENTS=")[1].split()[0].split(",")[0])
    assert skipped > 0
    assert r.text.count("#EXTINF") == full.count("#EXTINF") - skipped
    assert r.text.count("#EXT-X-PART:") == full.count("#EXT-X-PART:")


# ------------------------------------------------------------------ media


SEG_SIZE = HEADER + NPARTS * PSIZE


def test_whole_file_and_headers(env):
    r = env.get("/go-live/clip/video/360p/seg_00002.m4s")
    assert r.status == 200
    assert r.body == _file_bytes("360p", 2, SEG_SIZE)
    assert r.headers["content-length"] == str(SEG_SIZE)
    assert r.headers["content-type"] == "video/mp4"
    assert r.headers["accept-ranges"] == "bytes"
    assert r.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert r.headers["access-control-allow-origin"] == "*"
    a = env.get("/go-live/clip/audio/audio/init.mp4")
    assert a.status == 200 and a.headers["content-type"] == "audio/mp4" and len(a.body) == 300


def test_head_has_headers_no_body(env):
    c = env.call("/go-live/clip/video/360p/seg_00002.m4s", method="HEAD")
    head, _, body = c.raw.partition(b"\r\n\r\n")
    assert b" 200 " in head.split(b"\r\n")[0]
    assert f"Content-Length: {SEG_SIZE}".encode() in head
    assert body == b""


@pytest.mark.parametrize("header,first,last", [
    ("bytes=0-99", 0, 99),
    ("bytes=100-", 100, SEG_SIZE - 1),
    ("bytes=-50", SEG_SIZE - 50, SEG_SIZE - 1),
    ("bytes=-999999", 0, SEG_SIZE - 1),
    ("bytes=10-999999", 10, SEG_SIZE - 1),
    (f"bytes={SEG_SIZE - 1}-{SEG_SIZE - 1}", SEG_SIZE - 1, SEG_SIZE - 1),
])
def test_range_206(env, header, first, last):
    r = env.get("/go-live/clip/video/360p/seg_00002.m4s", headers={"Range": header})
    assert r.status == 206, header
    assert r.headers["content-range"] == f"bytes {first}-{last}/{SEG_SIZE}"
    assert r.body == _file_bytes("360p", 2, SEG_SIZE)[first:last + 1]
    assert r.headers["content-length"] == str(last - first + 1)


@pytest.mark.parametrize("header", [f"bytes={SEG_SIZE}-", "bytes=999999-1000000", "bytes=-0"])
def test_range_416(env, header):
    r = env.get("/go-live/clip/video/360p/seg_00002.m4s", headers={"Range": header})
    assert r.status == 416
    assert r.headers["content-range"] == f"bytes */{SEG_SIZE}"


@pytest.mark.parametrize("header", ["bytes=0-1,5-9", "items=0-5", "bytes=9-2", "bytes=abc"])
def test_multi_or_invalid_ranges_get_whole_file(env, header):
    r = env.get("/go-live/clip/video/360p/seg_00002.m4s", headers={"Range": header})
    assert r.status == 200
    assert len(r.body) == SEG_SIZE


class PausingTransport(StringTransport):
    """A transport whose buffer is 'full' after every write until resumed."""

    def write(self, data):
        super().write(data)
        if self.producer is not None:
            self.producer.pauseProducing()

    def writeSequence(self, seq):  # chunked responses are written as sequences
        self.write(b"".join(seq))


def test_large_file_is_produced_in_chunks_and_respects_pause(env):
    big = os.path.join(env.library.item_dir("clip"), "video", "360p", "big.mp4")
    data = os.urandom(1024 * 1024 + 17)
    with open(big, "wb") as fh:
        fh.write(data)
    channel = env.site.buildProtocol(None)
    transport = PausingTransport()
    channel.makeConnection(transport)
    channel.dataReceived(b"GET /go-live/clip/video/360p/big.mp4 HTTP/1.1\r\nHost: t\r\n\r\n")
    resumes = 0
    while True:
        before = len(transport.value())
        if b"\r\n\r\n" in transport.value() and len(transport.value().partition(b"\r\n\r\n")[2]) == len(data):
            break
        transport.producer.resumeProducing()  # drained: the HTTP channel resumes our producer
        resumes += 1
        assert len(transport.value()) - before <= 128 * 1024 + 64
        assert resumes < 100
    assert resumes >= 8  # one 128 KiB chunk per resume, not the whole file at once
    r = Response(transport.value())
    assert r.status == 200 and r.body == data


def test_preload_hint_range_is_held_until_published(env, clock):
    # part 15 of file 1 (segment 40) is published at +3.2 s; the hint asks bytes=start-
    start = HEADER + 15 * PSIZE
    c = env.call("/go-live/clip/video/360p/seg_00001.m4s", headers={"Range": f"bytes={start}-"})
    assert not c.answered
    publish15 = EPOCH + 40 * SEG + 16 * PART
    clock.advance(publish15 - clock.seconds() - 0.001)
    assert not c.answered
    clock.advance(0.001)
    assert c.answered
    r = c.response()
    assert r.status == 206
    assert r.headers["content-range"] == f"bytes {start}-{SEG_SIZE - 1}/{SEG_SIZE}"
    whole = _file_bytes("360p", 1, SEG_SIZE)
    assert r.body == whole[start:start + PSIZE]  # only the published part so far
    clock.advance(PART)
    assert Response(c.raw).body == whole[start:start + 2 * PSIZE]
    clock.advance(SEG)
    r = Response(c.raw)
    assert r.complete and r.body == whole[start:]


def test_closed_range_of_unpublished_part_is_served_at_once(env):
    # a closed range names a part some playlist listed: published in an earlier loop
    start = HEADER + 20 * PSIZE
    r = env.get("/go-live/clip/video/360p/seg_00001.m4s",
                headers={"Range": f"bytes={start}-{start + PSIZE - 1}"})
    assert r.status == 206 and r.body == _file_bytes("360p", 1, SEG_SIZE)[start:start + PSIZE]


def test_published_part_range_is_served_at_once(env):
    start = HEADER + 3 * PSIZE
    r = env.get("/go-live/clip/video/360p/seg_00001.m4s",
                headers={"Range": f"bytes={start}-{start + PSIZE - 1}"})
    assert r.status == 206 and len(r.body) == PSIZE


def test_ll_dash_in_progress_segment_is_chunked_per_part(env, clock):
    c = env.call("/go-live/clip/video/360p/seg_00001.m4s")
    r = c.response()
    assert r.status == 200
    assert r.headers.get("transfer-encoding") == "chunked"
    assert "content-length" not in r.headers
    whole = _file_bytes("360p", 1, SEG_SIZE)
    # parts 0..14 were published: written at once
    assert r.body == whole[:HEADER + 15 * PSIZE]
    assert not r.complete
    seg_start = EPOCH + 40 * SEG
    for p in range(15, NPARTS):
        publish = seg_start + (p + 1) * PART
        clock.advance(publish - clock.seconds() - 0.0005)
        n_before = len(Response(c.raw).chunks)
        clock.advance(0.0005)
        r = Response(c.raw)
        assert len(r.chunks) == n_before + 1, p  # exactly one chunk per part, at its time
        assert r.chunks[-1] == whole[HEADER + p * PSIZE:HEADER + (p + 1) * PSIZE]
    assert r.complete and r.body == whole
    assert len(env.origin.waiters) == 0


def test_ll_dash_disconnect_stops_the_stream(env, clock):
    c = env.call("/go-live/clip/audio/audio/seg_00001.m4s")
    assert len(env.origin.waiters) == 1
    c.disconnect()
    assert len(env.origin.waiters) == 0
    clock.advance(SEG)


def test_complete_segment_is_not_chunked(env):
    r = env.get("/go-live/clip/video/360p/seg_00004.m4s")
    assert r.status == 200 and r.headers["content-length"] == str(SEG_SIZE)


# ------------------------------------------------------------------ workers and status


def test_workers_status_tick_stats_and_stop(env, clock):
    assert env.get("/go-live/api/status").json() == {"workers": []}
    env.get("/go-live/clip/master.m3u8")
    env.get("/go-live/clip/playlist_360p.m3u8")
    env.get("/go-live/clip/video/360p/init.mp4")
    for _ in range(5):
        clock.advance(PART)
        env.get("/go-live/clip/playlist_360p.m3u8")
    env.get("/go-live/clip/playlist_6s_360p.m3u8")
    status = env.get("/go-live/api/status").json()
    (w,) = status["workers"]
    assert w["id"] == "clip" and w["content"] == "clip"
    assert w["requests"]["ll_hls"] == 7 and w["requests"]["media"] == 1 and w["requests"]["hls_6s"] == 1
    assert w["idle_timeout_s"] == 60
    names = [s["name"] for s in w["streams"]]
    assert names == ["ll_hls", "hls_6s"]
    ll = w["streams"][0]
    assert ll["variants"] == ["360p"] and ll["audio"] == ["audio"]
    assert ll["last_tick_at"].endswith("Z") and ll["avg_render_ms_5m"] > 0
    ts = env.get("/go-live/api/tick-stats/clip").json()
    assert set(ts) == {"content", "last_tick_at", "tick_interval_ms", "avg_tick_interval_ms_5m",
                       "last_render_ms", "avg_render_ms_5m", "variant_count", "audio_count"}
    assert ts["content"] == "clip"
    assert ts["tick_interval_ms"] == pytest.approx(200, abs=1)
    assert ts["avg_tick_interval_ms_5m"] == pytest.approx(200, abs=1)
    assert ts["variant_count"] == 1 and ts["audio_count"] == 1
    d = env.get("/go-live/api/dash-tick-stats/clip?duration=6s")
    assert d.status == 200 and d.json()["last_tick_at"] is None
    assert env.get("/go-live/api/dash-tick-stats/clip?duration=9s").status == 400
    assert env.get("/go-live/api/dash-tick-stats/nope?duration=ll").status == 404
    r = env.get("/go-live/api/stop/clip", method="DELETE")
    assert r.status == 200 and r.json() == {"stopped": "clip"}
    assert env.get("/go-live/api/stop/clip", method="DELETE").status == 404
    assert env.get("/go-live/api/status").json() == {"workers": []}


def test_idle_worker_dropped_after_timeout(tmp_path, clock):
    env = Env(tmp_path, clock, idle=5)
    env.get("/go-live/clip/video/360p/init.mp4")
    clock.advance(4.9)
    assert len(env.get("/go-live/api/status").json()["workers"]) == 1
    clock.advance(0.1)
    assert env.get("/go-live/api/status").json() == {"workers": []}


def test_unknown_content_creates_no_worker(env):
    env.get("/go-live/nope/master.m3u8")
    assert env.get("/go-live/api/status").json() == {"workers": []}


def test_ll_dash_catch_up_respects_back_pressure(env, clock, monkeypatch):
    import streamlab.live.origin_media as origin_mod

    monkeypatch.setattr(origin_mod, "CHUNK", 1000)
    channel = env.site.buildProtocol(None)
    transport = PausingTransport()
    channel.makeConnection(transport)
    channel.dataReceived(b"GET /go-live/clip/video/360p/seg_00001.m4s HTTP/1.1\r\nHost: t\r\n\r\n")
    published = HEADER + 15 * PSIZE  # parts 0..14 are out already
    sizes = [len(Response(transport.value()).body)]
    while sizes[-1] < published:
        transport.producer.resumeProducing()
        sizes.append(len(Response(transport.value()).body))
        assert sizes[-1] - sizes[-2] <= 1000
        assert len(sizes) < 50
    assert len(sizes) >= published // 1000
    # nothing more until the next part is published, then that part
    transport.producer.resumeProducing()
    assert len(Response(transport.value()).body) == published
    clock.advance(EPOCH + 40 * SEG + 16 * PART - clock.seconds())
    transport.producer.resumeProducing()
    assert len(Response(transport.value()).body) == published + PSIZE


def test_client_leaving_a_paced_segment_logs_no_unhandled_error(env, clock):
    """#12 item 4: read part of the in-production segment, close: no 'NoneType' object has
    no attribute 'unregisterProducer' from the paced writer's end path."""
    import gc

    from twisted.logger import globalLogPublisher

    failures: list = []

    def observe(event):
        if "log_failure" in event:
            failures.append(event["log_failure"])

    globalLogPublisher.addObserver(observe)
    try:
        for path in ("/go-live/clip/video/360p/seg_00001.m4s", "/go-live/clip/audio/audio/seg_00001.m4s"):
            c = env.call(path)
            assert c.answered and not c.response().complete  # paced: some bytes, not all
            c.disconnect()
            clock.advance(PART)
        gc.collect()  # an unhandled Deferred failure is logged when collected
    finally:
        globalLogPublisher.removeObserver(observe)
    assert failures == []
    assert len(env.origin.waiters) == 0


def test_preload_hint_from_a_published_part_paces_the_unpublished_rest(env, clock):
    """The fleet's finding: ``bytes=N-`` where N lies in a part already out (parts 0..14
    are) used to send the rest of the file at once, 15 parts up to 2.95 s before their
    publication.  Each part must arrive at its publish time, as on the hint's first part."""
    start = HEADER + 3 * PSIZE
    c = env.call("/go-live/clip/video/360p/seg_00001.m4s", headers={"Range": f"bytes={start}-"})
    r = c.response()
    whole = _file_bytes("360p", 1, SEG_SIZE)
    assert r.status == 206
    assert r.headers["content-range"] == f"bytes {start}-{SEG_SIZE - 1}/{SEG_SIZE}"
    assert r.headers["content-length"] == str(SEG_SIZE - start)
    assert r.body == whole[start:HEADER + 15 * PSIZE]  # the published parts only
    seg_start = EPOCH + 40 * SEG
    for p in range(15, NPARTS):
        clock.advance(seg_start + (p + 1) * PART - clock.seconds() - 0.0005)
        assert Response(c.raw).body == whole[start:HEADER + p * PSIZE], p  # not yet
        clock.advance(0.0005)
        assert Response(c.raw).body == whole[start:HEADER + (p + 1) * PSIZE], p
    r = Response(c.raw)
    assert r.complete and r.body == whole[start:]
    assert len(env.origin.waiters) == 0


def test_preload_hint_from_a_published_part_of_a_sequence_url_is_paced(env, clock):
    start = HEADER + 3 * PSIZE
    c = env.call("/go-live/clip/video/360p/n40.m4s", headers={"Range": f"bytes={start}-"})
    whole = _file_bytes("360p", 1, SEG_SIZE)
    assert Response(c.raw).body == whole[start:HEADER + 15 * PSIZE]
    clock.advance(EPOCH + 40 * SEG + 16 * PART - clock.seconds())
    assert Response(c.raw).body == whole[start:HEADER + 16 * PSIZE]
    clock.advance(SEG)
    r = Response(c.raw)
    assert r.complete and r.body == whole[start:]
