"""The origin end to end: a real daemon serving the real test item as looping live.

The live epoch is chosen so that a loop boundary (the 24 s test item loops) falls a few
seconds after the daemon starts, so refreshes across the boundary are observed for real.
"""

from __future__ import annotations

import datetime
import http.client
import json
import os
import subprocess
import threading
import time

import m3u8
import pytest
from mpegdash.parser import MPEGDASHParser

from streamlab.live.timeline import LiveTimeline
from streamlab.media.index import load_item
from streamlab.testing.daemon import Daemon
from streamlab.testing.fixtures import install_test_item

LOOP = 24.0
BOUNDARY_AFTER = 9.0  # seconds after the config is written


def _epoch_for_boundary_in(seconds: float) -> float:
    now = time.time()
    return float(int(now + seconds - 1000 * LOOP))


def _iso(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _start(workdir: str, epoch: float) -> Daemon:
    # this daemon checks the discontinuity timeline's structure end to end (a Period and an
    # EXT-X-DISCONTINUITY per loop); the long-window daemon below runs the default
    # (continuous) timeline
    d = Daemon(workdir, config={"live": {"live_epoch": _iso(epoch), "window_seconds": 18,
                                         "timeline": "discontinuity"}})
    install_test_item(d.media_dir)
    d.start()
    return d


@pytest.fixture(scope="module")
def live(tmp_path_factory, test_item):
    epoch = _epoch_for_boundary_in(BOUNDARY_AFTER)
    d = _start(str(tmp_path_factory.mktemp("origin")), epoch)
    d.epoch = epoch
    d.index = load_item(os.path.join(d.media_dir, "dynamic_content", "testclip"))
    d.timeline = LiveTimeline(d.index, epoch)
    # the library loads items asynchronously: wait (with a deadline) until it serves
    deadline = time.monotonic() + 30
    while d.get("/go-live/testclip/master.m3u8").status != 200:
        assert time.monotonic() < deadline, d.log()
        time.sleep(0.05)
    yield d
    d.stop()


def _get(d: Daemon, path: str, **kw):
    return d.get("/go-live/testclip/" + path, **kw)


def test_every_playlist_and_mpd_parses(live):
    variants = ("360p", "180p", "audio")
    for master_name, prefix in (("master.m3u8", "playlist_"), ("master_2s.m3u8", "playlist_2s_"),
                                ("master_6s.m3u8", "playlist_6s_")):
        r = _get(live, master_name)
        assert r.status == 200
        assert r.headers["content-type"] == "application/vnd.apple.mpegurl"
        assert r.headers["cache-control"] == "no-cache, no-store, must-revalidate"
        assert r.headers["access-control-allow-origin"] == "*"
        master = m3u8.loads(r.text)
        assert {p.uri for p in master.playlists} == {f"{prefix}360p.m3u8", f"{prefix}180p.m3u8"}
        for v in variants:
            r = _get(live, f"{prefix}{v}.m3u8")
            assert r.status == 200, (prefix, v)
            pl = m3u8.loads(r.text)
            assert pl.segments and pl.target_duration, (prefix, v)
            assert pl.is_endlist is False
    for name in ("manifest.mpd", "manifest_2s.mpd", "manifest_6s.mpd"):
        r = _get(live, name)
        assert r.status == 200
        assert r.headers["content-type"] == "application/dash+xml"
        mpd = MPEGDASHParser.parse(r.text)
        assert mpd.type == "dynamic" and mpd.periods
        assert mpd.utc_timings[0].value.endswith("/go-live/time")


def test_time_endpoint_is_iso_utc_now(live):
    r = live.get("/go-live/time")
    assert r.status == 200
    t = datetime.datetime.fromisoformat(r.text.replace("Z", "+00:00")).timestamp()
    assert abs(t - time.time()) < 2


def _ffprobe(url: str) -> dict:
    out = subprocess.run(["ffprobe", "-v", "error", "-rw_timeout", "15000000", "-show_entries",
                          "stream=codec_type,codec_name,width,height", "-of", "json", url],
                         capture_output=True, text=True, timeout=90)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_ffprobe_reads_live_hls_and_dash(live):
    base = f"http://127.0.0.1:{live.port}/go-live/testclip"
    hls = _ffprobe(base + "/master_6s.m3u8")
    types = {s["codec_type"] for s in hls["streams"]}
    assert types == {"video", "audio"}
    assert any(s.get("height") == 360 for s in hls["streams"])
    # (ffmpeg's DASH demuxer ignores Period@start for $Number$ templates, so the SegmentList
    # MPD is the one it can follow live)
    dash = _ffprobe(base + "/manifest_2s.mpd")
    assert {s["codec_type"] for s in dash["streams"]} == {"video", "audio"}


def _edge(live) -> tuple[int, int]:
    pl = m3u8.loads(_get(live, "playlist_360p.m3u8").text)
    last = pl.segments[-1]
    return pl.media_sequence + len(pl.segments) - 1, len(last.parts) - 1


def test_blocking_request_for_next_part_answers_at_publication(live):
    track = live.index.track("360p")
    nparts = len(track.segments[0].parts)
    lateness = []
    for _ in range(5):
        msn, part = _edge(live)
        msn, part = (msn, part + 1) if part + 1 < nparts else (msn + 1, 0)
        publish = live.timeline.part_publish_time(track, msn, part)
        r = _get(live, f"playlist_360p.m3u8?_HLS_msn={msn}&_HLS_part={part}")
        answered = time.time()
        assert r.status == 200
        pl = m3u8.loads(r.text)
        got_msn = pl.media_sequence + len(pl.segments) - 1
        assert (got_msn, len(pl.segments[-1].parts) - 1) >= (msn, part)
        assert answered >= publish - 0.01
        lateness.append(answered - publish)
    assert max(lateness) < live.index.part_duration, lateness


def test_preload_hint_byte_range_is_held_until_published(live):
    pl = m3u8.loads(_get(live, "playlist_360p.m3u8").text)
    hint = pl.preload_hint
    start = int(hint.byterange_start)
    track = live.index.track("360p")
    # the hint names its segment: video/360p/n<msn>.m4s
    msn = int(hint.uri.rsplit("/n", 1)[1].split(".")[0])
    number = live.timeline.file_number(msn)
    seg = track.segments[number - 1]
    p = max(i for i, part in enumerate(seg.parts) if part.offset <= start)
    publish = live.timeline.part_publish_time(track, msn, p)
    conn = http.client.HTTPConnection("127.0.0.1", live.port, timeout=30)
    try:
        conn.request("GET", "/go-live/testclip/" + hint.uri, headers={"Range": f"bytes={start}-"})
        resp = conn.getresponse()  # headers go out with the first part's bytes
        first = resp.read(seg.parts[p].size)
        answered = time.time()
        assert resp.status == 206
        assert resp.getheader("content-range") == f"bytes {start}-{seg.size - 1}/{seg.size}"
        assert len(first) == seg.parts[p].size
        assert publish - 0.01 <= answered < publish + live.index.part_duration, answered - publish
    finally:
        conn.close()


def test_refreshes_are_continuous_over_a_loop_boundary(live):
    """Block on every next segment until a loop boundary has been crossed; every refresh
    must extend the previous one: same URI and discontinuity number for the same media
    sequence number, discontinuities exactly at loop starts."""
    tl, count = live.timeline, live.index.segment_count
    # the boundary inside the current window, or the next one
    n_now = tl.segment_number(time.time())
    listed_from = n_now - int(18 / live.index.segment_duration)  # window_seconds = 18
    target_loop = tl.loop_of(n_now) if tl.loop_of(listed_from) < tl.loop_of(n_now) else tl.loop_of(n_now) + 1
    boundary = target_loop * count
    refreshes = 0
    uri_of: dict[int, str] = {}
    offsets = set()  # discontinuity number - loop, must be one constant
    prev_seq = None
    crossed = False
    deadline = time.monotonic() + 45
    while not crossed:
        assert time.monotonic() < deadline
        msn, _ = _edge(live)
        # the first refresh now, then each one held until the in-progress segment completes
        r = _get(live, "playlist_360p.m3u8" + (f"?_HLS_msn={msn + 1}" if refreshes else ""))
        assert r.status == 200
        pl = m3u8.loads(r.text)
        seq = pl.media_sequence
        assert prev_seq is None or seq >= prev_seq
        prev_seq = seq
        disc = pl.discontinuity_sequence
        for i, seg in enumerate(pl.segments):
            n = seq + i
            if seg.discontinuity:
                assert n % count == 0, n  # only before the first segment of a loop
                if i > 0:
                    disc += 1
            elif i > 0:
                assert n % count != 0, n  # every loop start is marked
            offsets.add(disc - tl.loop_of(n))
            if seg.uri is None:
                continue  # the in-progress segment (parts only)
            assert seg.uri == f"video/360p/n{n}.m4s"  # sequence-addressed: one URL per segment
            assert uri_of.setdefault(n, seg.uri) == seg.uri
        refreshes += 1
        # done once refreshes went on while the boundary was inside the window
        crossed = refreshes >= 2 and min(uri_of) < boundary <= max(uri_of)
        six = m3u8.loads(_get(live, "playlist_6s_360p.m3u8").text)
        assert six.segments and six.media_sequence <= seq + len(pl.segments)
        assert m3u8.loads(_get(live, "playlist_2s_audio.m3u8").text).segments
    assert len(offsets) == 1, offsets
    assert any(tl.loop_of(n) == target_loop - 1 for n in uri_of)


def test_two_daemons_same_epoch_serve_identical_playlists(live, tmp_path):
    other = _start(str(tmp_path), live.epoch)
    try:
        deadline = time.monotonic() + 30
        while other.get("/go-live/testclip/master.m3u8").status != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        for name in ("master.m3u8", "master_2s.m3u8", "master_6s.m3u8"):
            assert _get(live, name).body == _get(other, name).body
        # the same instant: both held until the same part is published
        msn, part = _edge(live)
        nparts = len(live.index.track("180p").segments[0].parts)
        msn, part = (msn, part + 2) if part + 2 < nparts else (msn + 1, 1)
        q = f"playlist_180p.m3u8?_HLS_msn={msn}&_HLS_part={part}"
        out: dict[str, bytes] = {}

        def fetch(name: str, d: Daemon) -> None:
            out[name] = _get(d, q).body

        threads = [threading.Thread(target=fetch, args=(n, d)) for n, d in (("a", live), ("b", other))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert out["a"] and out["a"] == out["b"]
    finally:
        other.stop()


def test_media_range_cors_and_cache_headers(live):
    track = live.index.track("180p")
    # a file that is complete now and stays so for a while (not the one in progress)
    number = live.timeline.file_number(live.timeline.segment_number(time.time()) + 2)
    size = track.segments[number - 1].size
    path = track.segment_path(number)
    r = _get(live, path)
    assert r.status == 200 and len(r.body) == size
    assert r.headers["content-type"] == "video/mp4"
    assert r.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert r.headers["accept-ranges"] == "bytes"
    assert r.headers["access-control-allow-origin"] == "*"
    assert "Content-Range" in r.headers["access-control-expose-headers"]
    assert r.headers["date"].endswith("GMT")
    r = _get(live, path, headers={"Range": "bytes=10-19"})
    assert r.status == 206 and r.headers["content-range"] == f"bytes 10-19/{size}" and len(r.body) == 10
    r = _get(live, path, headers={"Range": "bytes=-5"})
    assert r.status == 206 and len(r.body) == 5
    r = _get(live, path, headers={"Range": f"bytes={size}-"})
    assert r.status == 416
    a = _get(live, "audio/audio/init.mp4")
    assert a.status == 200 and a.headers["content-type"] == "audio/mp4"
    r = live.request("OPTIONS", "/go-live/testclip/" + path,
                     headers={"Origin": "http://player.example", "Access-Control-Request-Method": "GET",
                              "Access-Control-Request-Headers": "range"})
    assert r.status == 204 and r.headers["access-control-allow-origin"] == "*"
    assert "Range" in r.headers["access-control-allow-headers"]


def _raw_get(port: int, raw_path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.putrequest("GET", raw_path, skip_accept_encoding=True)
        conn.endheaders()
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


@pytest.mark.parametrize("path", [
    "/go-live/nope/master.m3u8",
    "/go-live/testclip/playlist_720p.m3u8",
    "/go-live/testclip/video/360p/seg_00099.m4s",
    "/go-live/testclip/video/%2e%2e/%2e%2e/content.json",
    "/go-live/testclip/video/..%2f..%2fcontent.json",
    "/go-live/testclip/content.json",
    "/go-live/testclip/video/360p/init.mp4%00",
])
def test_unknown_and_traversal_are_json_404(live, path):
    status, body = _raw_get(live.port, path)
    assert status == 404, path
    assert "error" in json.loads(body)


def test_status_and_tick_stats_over_http(live):
    for _ in range(3):
        msn, part = _edge(live)
    _get(live, "manifest.mpd")
    st = live.get("/go-live/api/status").json()
    (w,) = [w for w in st["workers"] if w["content"] == "testclip"]
    assert w["requests"]["ll_hls"] > 0 and w["requests"]["ll_dash"] >= 1
    assert {s["name"] for s in w["streams"]} >= {"ll_hls", "ll_dash"}
    ts = live.get("/go-live/api/tick-stats/testclip").json()
    assert ts["content"] == "testclip" and ts["variant_count"] == 2 and ts["audio_count"] == 1
    assert ts["avg_render_ms_5m"] is not None
    assert live.get("/go-live/api/dash-tick-stats/testclip?duration=ll").status == 200
    assert live.get("/go-live/api/dash-tick-stats/testclip?duration=1s").status == 400
    assert live.get("/go-live/healthz").json() == {"status": "ok"}
    r = live.request("DELETE", "/go-live/api/stop/testclip")
    assert r.status == 200 and r.json() == {"stopped": "testclip"}
    assert live.request("DELETE", "/go-live/api/stop/testclip").status == 404


def test_ll_dash_segment_in_progress_is_streamed_chunked_until_complete(live):
    track = live.index.track("audio")
    n = live.timeline.segment_number(time.time())
    if live.timeline.segment_start(n + 1) - time.time() < 1.0:
        n += 1  # too close to the end: wait (blocking reload) until the next one is under way
        assert _get(live, f"playlist_audio.m3u8?_HLS_msn={n}&_HLS_part=0").status == 200
    number = live.timeline.file_number(n)
    seg_end = live.timeline.segment_start(n + 1)
    with open(os.path.join(live.media_dir, "dynamic_content", "testclip", track.segment_path(number)),
              "rb") as fh:
        on_disk = fh.read()
    conn = http.client.HTTPConnection("127.0.0.1", live.port, timeout=30)
    try:
        conn.request("GET", "/go-live/testclip/" + track.segment_path(number))
        resp = conn.getresponse()
        assert resp.status == 200
        assert resp.getheader("transfer-encoding") == "chunked"
        assert resp.getheader("content-length") is None
        body = resp.read()
        done = time.time()
    finally:
        conn.close()
    assert body == on_disk
    assert seg_end - 0.01 <= done < seg_end + 0.5, done - seg_end


# ------------------------------------------------------------------ one URL, one segment (#11)


@pytest.fixture(scope="module")
def long_window(tmp_path_factory, test_item):
    """A daemon whose window (48 s) is twice the 24 s loop: every file is listed twice."""
    epoch = _epoch_for_boundary_in(BOUNDARY_AFTER)
    d = Daemon(str(tmp_path_factory.mktemp("origin-long")),
               config={"live": {"live_epoch": _iso(epoch), "window_seconds": 48}})
    install_test_item(d.media_dir)
    d.start()
    d.index = load_item(os.path.join(d.media_dir, "dynamic_content", "testclip"))
    d.timeline = LiveTimeline(d.index, epoch)
    deadline = time.monotonic() + 30
    while d.get("/go-live/testclip/master.m3u8").status != 200:
        assert time.monotonic() < deadline, d.log()
        time.sleep(0.05)
    yield d
    d.stop()
    log = d.log()
    assert "Unhandled error" not in log and "Traceback" not in log, log[-4000:]


def _timed_get(port: int, path: str) -> tuple[int, bytes, float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        t0 = time.monotonic()
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read()
        return resp.status, body, time.monotonic() - t0
    finally:
        conn.close()


def test_listed_previous_loop_segment_arrives_at_full_speed_while_the_live_one_is_paced(long_window):
    d = long_window
    pl = m3u8.loads(d.get("/go-live/testclip/playlist_360p.m3u8").text)
    live_uri = pl.preload_hint.uri
    n_live = int(live_uri.rsplit("/n", 1)[1].split(".")[0])
    if d.timeline.segment_start(n_live + 1) - time.time() < 2.0:  # keep the live one live
        assert d.get(f"/go-live/testclip/playlist_360p.m3u8?_HLS_msn={n_live + 1}&_HLS_part=0").status == 200
        n_live += 1
        live_uri = f"video/360p/n{n_live}.m4s"
    old_uri = f"video/360p/n{n_live - d.index.segment_count}.m4s"  # the same file, a loop ago
    listed = {s.uri for s in m3u8.loads(d.get("/go-live/testclip/playlist_360p.m3u8").text).segments}
    assert old_uri in listed
    number = d.timeline.file_number(n_live)
    with open(os.path.join(d.media_dir, "dynamic_content", "testclip", f"video/360p/seg_{number:05d}.m4s"),
              "rb") as fh:
        on_disk = fh.read()
    status, body, took = _timed_get(d.port, "/go-live/testclip/" + old_uri)
    assert status == 200 and body == on_disk
    assert took < 1.0, took  # complete: full speed (it used to be paced for seconds)
    status, body, took = _timed_get(d.port, "/go-live/testclip/" + live_uri)
    done = time.time()
    assert status == 200 and body == on_disk
    end = d.timeline.segment_start(n_live + 1)
    assert end - 0.05 <= done < end + 1.0, done - end  # paced until the segment is complete


def test_client_leaving_a_paced_segment_leaves_no_traceback_in_the_log(long_window):
    """#12 item 4: read 64 KiB of the segment in production, close the socket."""
    import socket

    d = long_window
    before = d.log()
    for _ in range(3):
        pl = m3u8.loads(d.get("/go-live/testclip/playlist_360p.m3u8").text)
        s = socket.create_connection(("127.0.0.1", d.port), timeout=10)
        s.sendall(f"GET /go-live/testclip/{pl.preload_hint.uri} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        got = b""
        while len(got) < 65536:
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
        s.close()
    # the daemon noticed the closes (a request after them is answered) and logged nothing bad
    assert d.get("/go-live/healthz").status == 200
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        new = d.log()[len(before):]
        assert "Unhandled error" not in new and "unregisterProducer" not in new, new
        time.sleep(0.2)


def test_ffprobe_reads_the_default_6s_mpd(long_window):
    """The default timeline is continuous: one Period, $Number$ = n from 0, and ffmpeg's DASH
    reader follows the MPD as given, without a query (it cannot follow the per-loop
    Periods of the discontinuity timeline)."""
    base = f"http://127.0.0.1:{long_window.port}/go-live/testclip"
    mpd = long_window.get("/go-live/testclip/manifest_6s.mpd").text
    assert mpd.count("<Period") == 1 and "?timeline=continuous" in mpd, mpd
    out = subprocess.run(["ffprobe", "-v", "error", "-rw_timeout", "15000000", "-show_entries",
                          "stream=codec_type,codec_name,height,start_time", "-of", "json",
                          base + "/manifest_6s.mpd"],
                         capture_output=True, text=True, timeout=90)
    assert out.returncode == 0, out.stderr
    streams = json.loads(out.stdout)["streams"]
    assert {s["codec_type"] for s in streams} == {"video", "audio"}
    # timestamps keep rising across loops: the start is seconds since the epoch (> 1000 loops)
    assert min(float(s["start_time"]) for s in streams) > 1000 * LOOP - 60


def _timed_range(port: int, path: str, start: int) -> tuple[int, dict[str, str], list[tuple[float, int]]]:
    """GET *path* with ``Range: bytes=start-`` on a raw socket: (status, headers, [(unix time,
    body bytes received so far)]) until the body announced by Content-Length is complete."""
    import socket

    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    try:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nRange: bytes={start}-\r\n\r\n".encode())
        raw = b""
        while b"\r\n\r\n" not in raw:
            chunk = s.recv(65536)
            assert chunk, raw
            raw += chunk
        head, _, body = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
        total = int(headers["content-length"])
        got = len(body)
        arrivals = [(time.time(), got)]
        while got < total:
            chunk = s.recv(65536)
            assert chunk, (got, total)
            got += len(chunk)
            arrivals.append((time.time(), got))
        return int(lines[0].split()[1]), headers, arrivals
    finally:
        s.close()


@pytest.mark.parametrize("style", ["file", "sequence"])
def test_preload_hint_from_a_published_part_delivers_each_part_at_its_publication(live, style):
    """bench/fleet.py's finding: ``bytes=N-`` on the segment in production where N's part is
    out already sent the rest of the file at once, parts up to 6 s before their publication.
    Measured on a real socket: no part's last byte arrives before the part is published."""
    track = live.index.track("360p")
    n = live.timeline.segment_number(time.time())
    if live.timeline.segment_start(n + 1) - time.time() < 3.0:  # keep 3 s of production ahead
        n += 1
    # a blocking reload returns once part 2 of n is out (at once if it is already)
    assert _get(live, f"playlist_360p.m3u8?_HLS_msn={n}&_HLS_part=2").status == 200
    number = live.timeline.file_number(n)
    seg = track.segments[number - 1]
    now = time.time()
    out = [p for p in range(len(seg.parts)) if live.timeline.part_publish_time(track, n, p) <= now]
    assert out, "no part out yet"
    start = seg.parts[out[-1]].offset  # a part already published: the hint was read late
    path = f"video/360p/n{n}.m4s" if style == "sequence" else track.segment_path(number)
    status, headers, arrivals = _timed_range(live.port, "/go-live/testclip/" + path, start)
    assert status == 206 and headers["content-range"] == f"bytes {start}-{seg.size - 1}/{seg.size}"
    early = []
    for p in range(out[-1] + 1, len(seg.parts)):
        end = (seg.parts[p + 1].offset if p + 1 < len(seg.parts) else seg.size) - start
        arrived = next(t for t, got in arrivals if got >= end)
        publish = live.timeline.part_publish_time(track, n, p)
        if arrived < publish - 0.02:
            early.append((p, round(publish - arrived, 3)))
    assert not early, f"parts (index, seconds early): {early}"
    seg_end = live.timeline.segment_start(n + 1)
    assert arrivals[-1][0] >= seg_end - 0.05  # the last part goes out when the segment is complete
