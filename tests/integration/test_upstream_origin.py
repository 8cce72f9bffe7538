"""Upstream origins end to end: a real daemon fronting real upstreams started by the test
(the project's own origin in a second daemon, and a static ffmpeg-made HLS VOD served by
``twisted.web.static``), observed on the main port and through session ports."""

from __future__ import annotations

import os
import re
import socket
import time

import pytest

from streamlab.testing.daemon import Daemon, free_port, request
from tests.integration.sessions_helpers import (
    create_session,
    get,
    network,
    open_get,
    patch,
    read_phases,
    serving,
    wait_for,
)
from tests.integration.upstream_helpers import StaticServer, make_vod

BODY = 65536


@pytest.fixture(scope="module")
def origin(tmp_path_factory, test_item):
    """The project's own origin as an upstream (LL-HLS, DASH)."""
    daemon = Daemon(str(tmp_path_factory.mktemp("up-origin")), session_ports=2)
    with serving(daemon):
        yield daemon


@pytest.fixture(scope="module")
def vod(tmp_path_factory):
    root = tmp_path_factory.mktemp("up-vod")
    media = root / "www"
    make_vod(str(media), big_mb=40)
    server = StaticServer(str(media), str(root)).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def d(tmp_path_factory, origin, vod):
    daemon = Daemon(str(tmp_path_factory.mktemp("up-front")), session_ports=30, config={
        "sessions": {"socket_body_bytes": BODY, "session_idle_timeout": 300},
        "live": {"upstream_timeout_seconds": 2}})
    daemon.start()
    for body in ({"name": "own", "url": f"http://127.0.0.1:{origin.port}/go-live/testclip/master.m3u8"},
                 {"name": "owndash", "url": f"http://127.0.0.1:{origin.port}/go-live/testclip/manifest.mpd"},
                 {"name": "vod", "url": f"{vod.url}/master.m3u8", "headers": {"X-Token": "s3cret"}}):
        r = daemon.request("POST", "/api/upstreams", body)
        assert r.status == 201, r.text
    yield daemon
    daemon.stop()


def _port(s: dict) -> int:
    return int(s["x_forwarded_port"])


def _uris(text: str) -> list[str]:
    out = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
    return out + re.findall(r'URI="([^"]+)"', text)


# --------------------------------------------------------------------------- registry

def test_registration_detects_and_refuses_with_reasons(d, origin, vod):
    own = d.get("/api/upstreams/own").json()
    assert (own["format"], own["low_latency"], own["live"], own["upstream"]) == ("hls", True, True, True)
    vod_item = d.get("/api/upstreams/vod").json()
    assert (vod_item["low_latency"], vod_item["live"], vod_item["headers"]) == (False, False, ["X-Token"])
    assert "s3cret" not in d.get("/api/upstreams").text
    dash = d.get("/api/upstreams/owndash").json()
    assert (dash["format"], dash["live"]) == ("dash", True)
    names = {c["name"]: c for c in d.get("/api/content").json()}
    assert names["own"]["upstream"] is True and names["owndash"]["urls"]
    cases = [
        ({"name": "bad name", "url": f"{vod.url}/master.m3u8"}, 400, "bad name"),
        ({"name": "vod", "url": f"{vod.url}/master.m3u8"}, 409, "duplicate name"),
        ({"name": "x1", "url": f"http://127.0.0.1:{free_port()}/m.m3u8"}, 422, "upstream unreachable"),
        ({"name": "x2", "url": f"{vod.url}/notes.txt"}, 422, "not a manifest"),
        ({"name": "x3", "url": f"{vod.url}/missing.m3u8"}, 422, "upstream error"),
    ]
    for body, status, error in cases:
        r = d.request("POST", "/api/upstreams", body)
        assert (r.status, r.json()["error"]) == (status, error), r.text
    r = d.request("POST", "/api/upstreams", {"name": "tmp", "url": f"{vod.url}/master.m3u8"})
    assert r.status == 201
    assert d.request("DELETE", "/api/upstreams/tmp").json() == {"deleted": "tmp"}
    assert d.get("/api/upstreams/tmp").status == 404
    assert d.get("/go-live/tmp/master.m3u8").status == 404


# --------------------------------------------------------------------------- HLS through ports

def test_vod_plays_through_main_and_session_port_with_urls_kept_local(d, vod):
    s = create_session(d, "up-hls")
    port = _port(s)
    for p in (d.port, port):
        master = get(p, "/go-live/vod/master.m3u8")
        assert master.status == 200 and master.headers.get("content-type", "").endswith("mpegurl")
        (variant,) = _uris(master.text)
        assert variant == "/go-live/vod/playlist_v0~index.m3u8"
        media = get(p, variant).text
        uris = _uris(media)
        assert all(u.startswith("/go-live/vod/v0/") for u in uris), uris
        assert "/go-live/vod/v0/init.mp4" in uris
        seg = get(p, "/go-live/vod/v0/seg_001.m4s")
        assert seg.status == 200 and seg.body == get(vod.port, "/v0/seg_001.m4s").body
    kinds = {e["path"]: e for e in network(d, s["session_id"])}
    assert kinds["/go-live/vod/master.m3u8"]["request_kind"] == "master_manifest"
    assert kinds["/go-live/vod/playlist_v0~index.m3u8"]["request_kind"] == "manifest"
    seg_entry = kinds["/go-live/vod/v0/seg_001.m4s"]
    assert seg_entry["request_kind"] == "segment" and seg_entry["upstream_ttfb_ms"] > 0
    assert not seg_entry["faulted"] and seg_entry["fault_category"] == ""


def test_bootstrap_redirect_reaches_the_upstream(d):
    r = request(d.bootstrap_port, "GET", "/go-live/vod/master.m3u8", headers={"Player-ID": "up-boot"})
    assert r.status == 302
    loc = r.headers["location"]
    port = int(re.match(r"https?://[^:/]+:(\d+)/", loc).group(1))
    assert get(port, "/go-live/vod/master.m3u8").text.count("/go-live/vod/playlist_v0~index.m3u8") == 1


def test_ll_hls_blocking_reload_is_held_by_the_upstream(d):
    s = create_session(d, "up-ll")
    port = _port(s)
    master = get(port, "/go-live/own/master.m3u8").text
    variant = next(u for u in _uris(master) if "360p" in u)
    # the upstream (this daemon's own origin) lists its default (continuous) timeline's
    # playlists with their query: it must survive the rewrite and reach the upstream
    assert variant.startswith("/go-live/own/playlist_") and variant.endswith(".m3u8?timeline=continuous")
    media = get(port, variant).text
    last = _last_msn(media)
    parts = [ln for ln in media.splitlines() if ln.startswith("#EXT-X-PART:")]
    assert parts and all('URI="/go-live/own/' in p and '?timeline=continuous"' in p for p in parts)
    assert "#EXT-X-DISCONTINUITY\n" not in media
    hint = next(ln for ln in media.splitlines() if ln.startswith("#EXT-X-PRELOAD-HINT"))
    assert 'URI="/go-live/own/' in hint
    t0 = time.monotonic()
    held = get(port, f"{variant}&_HLS_msn={last + 2}&_HLS_part=0", timeout=30)
    waited = time.monotonic() - t0
    # held by the upstream until part 0 of segment last+2 existed (at least one 0.2 s part)
    assert held.status == 200 and waited > 0.15, waited
    assert _last_msn(held.text) == last + 1  # segment last+1 complete, parts of last+2 listed
    entry = [e for e in network(d, s["session_id"]) if "_HLS_msn" in e["url"]][-1]
    assert entry["upstream_ttfb_ms"] > 150 and entry["request_kind"] == "manifest"
    assert entry["upstream_ttfb_ms"] <= entry["ttfb_ms"] + 1


def _last_msn(playlist: str) -> int:
    msn = int(re.search(r"#EXT-X-MEDIA-SEQUENCE:(\d+)", playlist).group(1))
    return msn + sum(1 for ln in playlist.splitlines() if ln.startswith("#EXTINF")) - 1


# --------------------------------------------------------------------------- DASH

def test_dash_mpd_through_the_session_port_plays_number_templates(d):
    s = create_session(d, "up-dash")
    port = _port(s)
    mpd = get(port, "/go-live/owndash/manifest.mpd")
    assert mpd.status == 200 and "dash+xml" in mpd.headers.get("content-type", "")
    assert "<BaseURL>/go-live/owndash/go-live/testclip/</BaseURL>" in mpd.text
    m = re.search(r'<Representation id="([^"]+)".*?startNumber="(\d+)" initialization="([^"]+)"'
                  r' media="([^"]+)"', mpd.text, re.S)
    rep, start, init, media = m.groups()
    assert "$Number$" in media
    base = "/go-live/owndash/go-live/testclip/"
    init_r = get(port, base + init.replace("$RepresentationID$", rep).replace("&amp;", "&"))
    assert init_r.status == 200 and init_r.body[4:8] == b"ftyp"
    seg = get(port, base + media.replace("$RepresentationID$", rep).replace("$Number$", start)
              .replace("&amp;", "&"))
    assert seg.status == 200 and len(seg.body) > 1000
    kinds = [e["request_kind"] for e in network(d, s["session_id"])]
    assert kinds[0] == "master_manifest" and kinds.count("segment") == 2


def test_dash_time_template_from_a_static_vod(d, vod):
    r = d.request("POST", "/api/upstreams", {"name": "vodtime", "url": f"{vod.url}/dash/manifest.mpd"})
    assert r.status == 201 and (r.json()["format"], r.json()["live"]) == ("dash", False), r.text
    s = create_session(d, "up-dash-time")
    port = _port(s)
    mpd = get(port, "/go-live/vodtime/manifest.mpd").text
    assert "<BaseURL>/go-live/vodtime/dash/</BaseURL>" in mpd
    assert 'media="chunk-$RepresentationID$-$Time$.m4s"' in mpd
    t = re.search(r'<S t="(\d+)" d="(\d+)"', mpd)
    second = int(t.group(1)) + int(t.group(2))
    seg = get(port, f"/go-live/vodtime/dash/chunk-0-{second}.m4s")
    assert seg.status == 200 and seg.body == get(vod.port, f"/dash/chunk-0-{second}.m4s").body
    e = network(d, s["session_id"])[-1]
    assert e["request_kind"] == "segment" and e["upstream_ttfb_ms"] is not None


# --------------------------------------------------------------------------- session controls

def test_segment_404_fault_never_contacts_the_upstream(d, vod):
    s = create_session(d, "up-404", {"segment_failure_type": "404", "segment_consecutive_failures": 0})
    port = _port(s)
    before = vod.fetched("/v0/seg_002.m4s")
    r = get(port, "/go-live/vod/v0/seg_002.m4s")
    assert r.status == 404 and r.json()["injected"] is True
    assert get(port, "/go-live/vod/playlist_v0~index.m3u8").status == 200  # manifests unaffected
    time.sleep(0.3)  # the access log is written by another process; nothing may appear
    assert vod.fetched("/v0/seg_002.m4s") == before
    e = [e for e in network(d, s["session_id"]) if e["path"].endswith("seg_002.m4s")][-1]
    assert e["faulted"] and e["fault_category"] == "http" and e["upstream_ttfb_ms"] is None


def test_socket_reset_mid_body_on_an_upstream_segment(d, vod):
    s = create_session(d, "up-reset", {"segment_failure_type": "request_body_reset"})
    big = "/go-live/vod/v0/big.m4s"
    w = read_phases(open_get(_port(s), big), [6.0, 6.0])
    assert w.status == 200 and w.outcome == "reset" and len(w.body) == BODY


def test_two_mbps_cap_paces_an_upstream_segment(d, vod):
    s = create_session(d, "up-cap")
    patch(d, s["session_id"], {"nftables_bandwidth_mbps": 2})
    path = "/go-live/vod/v0/seg_000.m4s"
    size = len(get(vod.port, "/v0/seg_000.m4s").body)
    assert size > 150_000
    t0 = time.monotonic()
    r = get(_port(s), path, timeout=60)
    elapsed = time.monotonic() - t0
    mbps = size * 8 / elapsed / 1e6
    assert r.status == 200 and len(r.body) == size
    assert 1.0 < mbps < 2.6, (mbps, size, elapsed)


def test_corruption_and_master_rewriting_act_on_relayed_bytes(d, vod):
    s = create_session(d, "up-corrupt", {"segment_failure_type": "corrupted"})
    sid, port = s["session_id"], _port(s)
    original = get(vod.port, "/v0/seg_003.m4s").body
    r = get(port, "/go-live/vod/v0/seg_003.m4s")
    assert r.status == 200 and len(r.body) == len(original) and r.body == bytes(len(original))
    before = get(port, "/go-live/own/master.m3u8")
    assert "CODECS=" in before.text and before.text.count("#EXT-X-STREAM-INF") == 2
    # a rung is named by its local playlist name (or the token inside it)
    patch(d, sid, {"content_strip_codecs": True,
                   "content_allowed_variants": ["playlist_go-live~testclip~playlist_180p.m3u8"]})
    after = get(port, "/go-live/own/master.m3u8")
    assert after.status == 200 and int(after.headers["content-length"]) == len(after.body)
    assert "CODECS=" not in after.text and after.text.count("#EXT-X-STREAM-INF") == 1
    assert "/go-live/own/playlist_go-live~testclip~playlist_180p.m3u8" in after.text


def test_reject_window_resets_connections_to_the_upstream_item(d):
    s = create_session(d, "up-reject")
    sid, port = s["session_id"], _port(s)
    assert get(port, "/go-live/vod/master.m3u8").status == 200
    patch(d, sid, {"transport_failure_type": "reject", "transport_consecutive_failures": 0})
    with pytest.raises(ConnectionError):
        get(port, "/go-live/vod/master.m3u8", timeout=5)
    patch(d, sid, {"transport_failure_type": "none"})
    assert wait_for(lambda: _try(port, "/go-live/vod/master.m3u8") == 200, timeout=10)


def _try(port: int, path: str) -> int:
    try:
        return get(port, path, timeout=5).status
    except OSError:
        return 0


# --------------------------------------------------------------------------- honest failures

def test_upstream_failures_are_passed_on_and_logged_as_upstream(d, tmp_path):
    s = create_session(d, "up-fail")
    port = _port(s)
    r = get(port, "/go-live/vod/v0/seg_999.m4s")
    assert r.status == 404 and "injected" not in r.text
    # a second static server that goes away (refused), and a port that never answers (timeout)
    www = tmp_path / "www"
    www.mkdir()
    (www / "master.m3u8").write_text("#EXTM3U\n#EXTINF:2,\na.m4s\n#EXT-X-ENDLIST\n")
    gone = StaticServer(str(www), str(tmp_path)).start()
    r = d.request("POST", "/api/upstreams", {"name": "gone", "url": f"{gone.url}/master.m3u8"})
    assert r.status == 201, r.text
    gone.stop()
    r = get(port, "/go-live/gone/a.m4s")
    assert r.status == 502 and r.json()["error"] == "upstream refused", r.text
    mute = socket.socket()
    mute.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    mute.bind(("127.0.0.1", gone.port))
    mute.listen(8)  # the kernel accepts; nobody ever answers
    try:
        t0 = time.monotonic()
        r = get(port, "/go-live/gone/a.m4s", timeout=30)
        assert r.status == 504 and r.json()["error"] == "upstream timeout", r.text
        assert 1.5 < time.monotonic() - t0 < 10
    finally:
        mute.close()
    entries = {e["path"]: e for e in network(d, s["session_id"])}
    e404 = entries["/go-live/vod/v0/seg_999.m4s"]
    assert (e404["status"], e404["fault_category"], e404["faulted"]) == (404, "upstream", False)
    e504 = entries["/go-live/gone/a.m4s"]
    assert (e504["status"], e504["fault_category"]) == (504, "upstream")
    assert e504["fault_type"] == "upstream_timeout" and not e504["faulted"]
    d.request("DELETE", "/api/upstreams/gone")


def _connections_to(port: int) -> dict[str, int]:
    """TCP sockets on this host with *port* at either end, by state (/proc/net/tcp)."""
    states = {"01": "established", "06": "time_wait"}
    out = {"established": 0, "time_wait": 0}
    with open("/proc/net/tcp", encoding="ascii") as fh:
        for line in fh.readlines()[1:]:
            cols = line.split()
            ends = (int(cols[1].split(":")[1], 16), int(cols[2].split(":")[1], 16))
            if port in ends and cols[3] in states:
                out[states[cols[3]]] += 1
    return out


def test_upstream_connections_are_kept_alive_and_reused(d, vod):
    s = create_session(d, "up-keepalive")
    get(_port(s), "/go-live/vod/v0/seg_000.m4s")
    before = _connections_to(vod.port)
    for _ in range(10):  # sequential requests, each on a new player connection
        assert get(_port(s), "/go-live/vod/v0/seg_001.m4s").status == 200
    after = _connections_to(vod.port)
    assert after["established"] >= 1  # idle in the pool, not closed
    assert after["time_wait"] - before["time_wait"] <= 1, (before, after)  # no connection per request


# --------------------------------------------------------------------------- back-pressure

def _rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        return int(next(ln for ln in fh if ln.startswith("VmRSS")).split()[1])


def test_a_40_mb_segment_to_a_slow_client_keeps_rss_flat(d, vod):
    s = create_session(d, "up-slow")
    before = _rss_kb(d.proc.pid)
    sock = open_get(_port(s), "/go-live/vod/v0/big.m4s", rcvbuf=32768)
    sock.settimeout(10)
    got = 0
    t0 = time.monotonic()
    while time.monotonic() - t0 < 3.0:  # a slow player: ~1 MB/s for 3 s
        data = sock.recv(16384)
        if not data:
            break
        got += len(data)
        time.sleep(0.015)
    peak = _rss_kb(d.proc.pid)
    sock.close()
    assert 500_000 < got < 20_000_000, got
    assert peak - before < 12_000, (before, peak)  # 40 MB would show; the relay holds ~nothing
    assert wait_for(lambda: any(e["path"].endswith("big.m4s") and e["fault_category"] == "client_disconnect"
                                for e in network(d, s["session_id"])), timeout=10)


# --------------------------------------------------------------------------- persistence

def test_upstreams_survive_a_restart_without_their_secrets_leaking(tmp_path, vod):
    daemon = Daemon(str(tmp_path), session_ports=2)
    daemon.start()
    try:
        body = {"name": "kept", "url": f"{vod.url}/master.m3u8", "headers": {"X-Token": "t0p"}}
        assert daemon.request("POST", "/api/upstreams", body).status == 201
        daemon.stop()
        stored = os.path.join(daemon.state_dir, "upstreams.json")
        assert os.stat(stored).st_mode & 0o777 == 0o600
        daemon.start()
        kept = daemon.get("/api/upstreams/kept").json()
        assert (kept["format"], kept["live"], kept["headers"]) == ("hls", False, ["X-Token"])
        assert daemon.get("/go-live/kept/playlist_v0~index.m3u8").status == 200
    finally:
        daemon.stop()
