"""Hostile and sloppy clients against a real daemon (issue #17): every answer is a JSON
4xx with the right status, nothing changes, and the daemon log stays free of tracebacks.

* 1,000 nested arrays (2 KB) on every JSON endpoint -> 400;
* ``%c0%ae`` / ``%ff%fe`` in any path parameter -> 400;
* TRACE /metrics and /debug -> JSON 405 with ``Allow``; every 405 has ``Allow``;
* request line / header over 16 KB -> 414 / 431; a 20-digit Content-Length -> 400;
* strict JSON types; a PATCH that changes nothing keeps ``control_revision``;
* X-Forwarded-For ``ip:port`` from a trusted proxy still counts against the per-client
  session limit;
* slow-header clients get 408 at the head deadline on the main, bootstrap and session
  ports; the main port caps connections per client address (429).
"""

from __future__ import annotations

import json
import socket
import time
from typing import Any
from urllib.parse import urlsplit

import pytest

from streamlab.testing.daemon import Daemon, request

NESTED = b"[" * 1000 + b"]" * 1000


@pytest.fixture(scope="module")
def d(tmp_path_factory):
    daemon = Daemon(str(tmp_path_factory.mktemp("ops-hostile")), session_ports=8, config={
        "server": {"trusted_proxies": "127.0.0.1/32", "max_sessions_per_client_ip": 2,
                   "request_head_timeout": 2}})
    daemon.start()
    yield daemon
    daemon.stop()


def _tracebacks(d: Daemon) -> list[str]:
    log = d.log()
    return [line for line in log.splitlines() if "Traceback" in line or "Unhandled" in line]


def _raw(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    """Send *data*, read until the server closes (or *timeout*)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            out += chunk
        return out


def _status(raw: bytes) -> int:
    first = raw.split(b"\r\n", 1)[0].split()
    return int(first[1]) if len(first) > 1 else 0


def _json_ops(d: Daemon) -> list[tuple[str, str]]:
    """Every operation of the OpenAPI document that takes a JSON body, with its path
    parameters filled in."""
    doc = d.get("/api/openapi.json").json()
    out = []
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            body = op.get("requestBody", {}).get("content", {}) if method != "parameters" else {}
            if "application/json" not in body:
                continue
            if path == "/api/setup/seed":  # takes no body; synthesises and encodes the demo clip
                continue
            filled = path.replace("{port}", str(d.session_range[0]))
            for name in ("sid", "job_id", "source_id", "name", "gid", "content", "worker_id"):
                filled = filled.replace("{" + name + "}", "x")
            out.append((method.upper(), filled))
    return out


def test_deeply_nested_json_is_400_on_every_json_endpoint(d):
    ops = _json_ops(d)
    assert len(ops) >= 20
    statuses = {}
    for method, path in ops:
        r = d.request(method, path, NESTED, headers={"Content-Type": "application/json"})
        statuses[(method, path)] = r.status
        assert r.status < 500, (method, path, r.status, r.body)
        assert r.headers["content-type"] == "application/json"
    # the ones that read the body before looking anything up say exactly why
    for key in (("POST", "/api/sessions"), ("POST", "/api/upload/init"), ("POST", "/api/session-group/link")):
        assert statuses[key] == 400
    r = d.request("POST", "/api/sessions", NESTED, headers={"Content-Type": "application/json"})
    assert r.json()["error"] == "invalid json"
    sid = d.request("POST", "/api/sessions", {"player_id": "nested"}).json()["session_id"]
    r = d.request("PATCH", f"/api/session/{sid}", NESTED, headers={"Content-Type": "application/json"})
    assert r.status == 400 and "nested deeper" in r.json()["detail"]
    assert _tracebacks(d) == []


@pytest.mark.parametrize("bad", ["%c0%ae", "%ff%fe"])
def test_badly_encoded_path_parameters_are_400_without_a_traceback(d, bad):
    doc = d.get("/api/openapi.json").json()
    tried = 0
    for path, ops in doc["paths"].items():
        if not path.startswith("/api/") or "{" not in path:
            continue
        for method in ops:
            if method == "parameters":
                continue
            url = path
            for name in ("sid", "job_id", "source_id", "name", "gid", "port"):
                url = url.replace("{" + name + "}", bad)
            r = d.request(method.upper(), url, {} if method in ("post", "patch", "put") else None)
            assert r.status == 400, (method, url, r.status, r.body)
            tried += 1
    assert tried >= 20
    assert _tracebacks(d) == []


@pytest.mark.parametrize("path", ["/metrics", "/debug", "/api/health", "/go-live/healthz"])
def test_trace_is_a_json_405_with_allow(d, path):
    r = d.request("TRACE", path)
    assert r.status == 405
    assert r.headers["content-type"] == "application/json"
    assert "GET" in r.headers["allow"]


@pytest.mark.parametrize(("method", "path", "allowed"), [
    ("PUT", "/api/health", "GET"), ("DELETE", "/api/sessions", "POST"), ("POST", "/metrics", "GET"),
    ("GET", "/go-live/api/stop/x", "DELETE"), ("POST", "/go-live/healthz", "GET"),
])
def test_every_405_names_the_allowed_methods(d, method, path, allowed):
    r = d.request(method, path, {} if method in ("POST", "PUT") else None)
    assert r.status == 405
    assert allowed in [m.strip() for m in r.headers["allow"].split(",")]


def test_oversized_heads_and_lengths_get_a_status_not_a_silent_close(d):
    assert _status(_raw(d.port, b"GET /" + b"a" * 17000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")) == 414
    assert _status(_raw(d.port, b"GET / HTTP/1.1\r\nHost: x\r\nX-A: " + b"a" * 17000 + b"\r\n\r\n")) == 431
    raw = _raw(d.port, b"POST /api/sessions HTTP/1.1\r\nHost: x\r\n"
                       b"Content-Length: 12345678901234567890\r\n\r\n")
    assert _status(raw) == 400
    assert json.loads(raw.split(b"\r\n\r\n", 1)[1])["error"] == "bad request"


def test_strict_json_types(d):
    sid = d.request("POST", "/api/sessions", {"player_id": "types"}).json()["session_id"]
    r = d.request("PATCH", f"/api/session/{sid}", {"set": {"content_allowed_variants": "720p"}})
    assert r.status == 400 and "content_allowed_variants" in r.json()["fields"]
    assert d.get(f"/api/session/{sid}").json()["content_allowed_variants"] == []
    r = d.request("POST", "/api/upload/init", {"filename": ["a"], "file_size": "10"})
    assert r.status == 400
    assert set(r.json()["fields"]) == {"filename", "file_size"}
    assert d.get("/api/upload/active").json()["uploads"] == []


def test_a_patch_that_changes_nothing_keeps_the_revision(d):
    sid = d.request("POST", "/api/sessions", {"player_id": "revs"}).json()["session_id"]
    r = d.request("PATCH", f"/api/session/{sid}", {"set": {"segment_failure_type": "404"}})
    assert r.status == 200
    rev = r.json()["control_revision"]
    for _ in range(3):
        r = d.request("PATCH", f"/api/session/{sid}", {"set": {"segment_failure_type": "404"}})
        assert r.status == 200
        assert r.json()["control_revision"] == rev
    for path in (f"/api/session/{sid}/update", f"/api/failure-settings/{sid}"):  # the legacy doors
        assert d.request("POST", path, {"segment_failure_type": "404"}).json()["control_revision"] == rev
    port = d.get(f"/api/session/{sid}").json()["x_forwarded_port"]
    assert d.request("POST", f"/api/nftables/bandwidth/{port}", {"rate_mbps": 5}).status == 200
    rev = d.get(f"/api/session/{sid}").json()["control_revision"]
    for _ in range(2):
        assert d.request("POST", f"/api/nftables/bandwidth/{port}", {"rate_mbps": 5}).status == 200
        assert d.get(f"/api/session/{sid}").json()["control_revision"] == rev
    r = d.request("PATCH", f"/api/session/{sid}", {"set": {"segment_failure_type": "none"}})
    assert r.json()["control_revision"] != rev


def _bootstrap(d: Daemon, player: str, xff: str) -> Any:
    return request(d.bootstrap_port, "GET", f"/go-live/x/master.m3u8?player_id={player}",
                   headers={"X-Forwarded-For": xff})


def test_forwarded_ip_with_port_still_counts_against_the_session_limit(d):
    assert [_bootstrap(d, f"xff-{i}", "8.8.8.8:1234").status for i in range(2)] == [302, 302]
    r = _bootstrap(d, "xff-2", "8.8.8.8:4321")
    assert r.status == 429
    assert _bootstrap(d, "xff-v6", "[2001:4860::8888]:443").status == 302
    sessions = d.get("/api/sessions").json()
    rows = sessions if isinstance(sessions, list) else sessions["sessions"]
    ips = {s["player_id"]: s["player_ip"] for s in rows}
    assert ips["xff-0"] == "8.8.8.8" and ips["xff-v6"] == "2001:4860::8888"


def _slow_client(port: int, head_timeout: float) -> tuple[int, float]:
    """Send a head one line at a time, every 0.4 s, forever; -> (status, seconds to it)."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /go-live/healthz HTTP/1.1\r\n")
        s.settimeout(0.4)
        out = b""
        while time.monotonic() - started < head_timeout + 20:
            try:
                s.sendall(b"X-Slow: 1\r\n")
            except OSError:
                break
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            if not chunk:
                break
            out += chunk
        return _status(out), time.monotonic() - started


def test_slow_header_clients_get_408_on_main_bootstrap_and_session_ports(d):
    r = _bootstrap(d, "slow", "127.0.0.1")
    assert r.status == 302
    session_port = urlsplit(r.headers["location"]).port
    for port in (d.port, d.bootstrap_port, session_port):
        status, took = _slow_client(port, 2)
        assert status == 408, port
        assert 1.5 <= took < 15, (port, took)


def test_connections_per_client_address_are_capped_on_the_main_port(tmp_path):
    capped = Daemon(str(tmp_path), session_ports=2, config={"server": {"max_connections_per_client_ip": 6}})
    capped.start()
    try:
        held = [socket.create_connection(("127.0.0.1", capped.port), timeout=5) for _ in range(6)]
        try:
            raw = _raw(capped.port, b"GET /api/health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert _status(raw) == 429
            # the bootstrap listener is not capped (players behind one NAT share an address)
            probe = b"GET /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            assert _status(_raw(capped.bootstrap_port, probe)) == 400
        finally:
            for s in held:
                s.close()
        deadline = time.monotonic() + 10
        while capped.get("/api/health").status != 200:  # the slots free up as the held ones close
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert "Traceback" not in capped.log()
    finally:
        capped.stop()


def test_a_vanishingly_short_pattern_step_is_refused(d):
    """Found by the API fuzzer: a step of 1e-300 s overflowed the pattern arithmetic (a
    traceback per change, the pattern timer spinning)."""
    sid = d.request("POST", "/api/sessions", {"player_id": "tiny-steps"}).json()["session_id"]
    steps = [{"rate_mbps": 1, "duration_seconds": 1e-300}]
    r = d.request("PATCH", f"/api/session/{sid}", {"set": {"nftables_pattern_enabled": True,
                                                          "nftables_pattern_steps": steps}})
    assert r.status == 400 and "nftables_pattern_steps" in r.json()["fields"]
    port = d.get(f"/api/session/{sid}").json()["x_forwarded_port"]
    assert d.request("POST", f"/api/nftables/pattern/{port}", {"steps": steps}).status == 400
    assert _tracebacks(d) == []
