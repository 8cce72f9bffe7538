"""The bootstrap listener and session lifecycle on a daemon with only three session ports."""

from __future__ import annotations

import pytest

from streamlab.testing.daemon import Daemon, request
from tests.integration.sessions_helpers import get, serving

PATH = "/go-live/testclip/master.m3u8"


@pytest.fixture(scope="module")
def d(tmp_path_factory, test_item):
    daemon = Daemon(str(tmp_path_factory.mktemp("bootstrap")), session_ports=3,
                    config={"server": {"advertised_port_offset": 0, "trusted_proxies": "127.0.0.1/32",
                                       "max_sessions_per_client_ip": 1}})
    with serving(daemon):
        yield daemon


def _boot(d, path: str, headers=None):
    return request(d.bootstrap_port, "GET", path, headers=headers)


def test_bootstrap_lifecycle(d):
    lo = d.session_range[0]
    r = _boot(d, PATH + "?player_id=tv1&x=1")
    assert r.status == 302
    assert r.headers["location"] == f"http://127.0.0.1:{lo}{PATH}?player_id=tv1&x=1"
    # the same player always gets the same session
    assert _boot(d, "/go-live/testclip/video/360p/init.mp4?player_id=tv1").headers["location"].startswith(
        f"http://127.0.0.1:{lo}/")
    # following the redirect plays through the session port; relative URLs carry no query
    assert get(lo, PATH + "?player_id=tv1&x=1").status == 200
    assert get(lo, "/go-live/testclip/playlist_360p.m3u8").status == 200
    sessions = d.get("/api/sessions").json()
    assert [s["player_id"] for s in sessions] == ["tv1"]
    assert sessions[0]["master_manifest_requests_count"] == 1
    assert sessions[0]["manifest_requests_count"] == 1

    # ids from headers, in the documented order
    r = _boot(d, PATH, headers={"Player-ID": "phone_G4"})
    assert r.status == 302 and f":{lo + 1}/" in r.headers["location"]
    r = _boot(d, PATH, headers={"X-Playback-Session-Id": "ipad_G4"})
    assert r.status == 302 and f":{lo + 2}/" in r.headers["location"]
    assert d.get("/api/session-group/G4").json()["session_ids"] == ["2", "3"]

    # CORS pre-flight of a browser player sending Player-ID
    r = request(d.bootstrap_port, "OPTIONS", PATH, headers={"Access-Control-Request-Headers": "player-id"})
    assert r.status == 204 and "Player-ID" in r.headers["access-control-allow-headers"]

    # no id -> 400; all ports busy -> 503 (JSON)
    r = _boot(d, PATH)
    assert r.status == 400 and r.json()["error"]
    r = _boot(d, PATH + "?player_id=one-too-many")
    assert r.status == 503 and r.json()["error"]

    # API creation of an existing player: 200 with the same session
    r = d.request("POST", "/api/sessions", {"player_id": "tv1"})
    assert r.status == 200 and r.json()["session_id"] == "1"

    # delete frees the lowest port, which the next player gets (the only free one, even in
    # its quarantine), clean and with a new id: ids are never reused
    assert d.request("DELETE", "/api/session/1").json() == {"deleted": "1"}
    assert d.request("DELETE", "/api/session/1").status == 404
    r = d.request("POST", "/api/sessions", {"player_id": "script", "set": {"segment_failure_type": 404}})
    assert r.status == 201
    body = r.json()
    assert body["session_id"] == "4" and body["x_forwarded_port"] == str(lo)
    assert body["segment_failure_type"] == "404" and body["all_requests_count"] == 0
    assert get(lo, "/go-live/testclip/video/360p/init.mp4").status == 404  # armed before the first request

    r = d.request("POST", "/api/clear-sessions")
    assert r.status == 200 and r.json() == {"cleared": 3}
    assert d.get("/api/sessions").json() == []
    with pytest.raises(OSError):
        get(lo, PATH, timeout=2)


def test_forwarded_public_client_is_limited_and_listed(d):
    d.request("POST", "/api/clear-sessions")
    fwd = {"X-Forwarded-For": "198.51.100.1, 8.8.8.8"}  # the proxy (127.0.0.1) is trusted
    r = _boot(d, PATH + "?player_id=pub1", headers=fwd)
    assert r.status == 302
    r = _boot(d, PATH + "?player_id=pub2", headers=fwd)
    assert r.status == 429 and r.json()["error"] and int(r.headers["retry-after"]) > 0
    assert _boot(d, PATH + "?player_id=pub1", headers=fwd).status == 302  # its own session: fine
    assert _boot(d, PATH + "?player_id=local").status == 302  # private addresses are not limited
    sessions = {s["player_id"]: s for s in d.get("/api/sessions").json()}
    assert sessions["pub1"]["player_ip"] == "8.8.8.8" and sessions["local"]["player_ip"] == "127.0.0.1"
    ips = d.get("/api/external-ips").json()
    assert [x["ip"] for x in ips["rolling"]] == ["8.8.8.8"] and ips["lifetime_count"] == 1
