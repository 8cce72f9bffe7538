"""/api/nftables on the real daemon (userspace backend): the endpoints and PATCH are one
model, transport faults act on the session port, runtime fields show up on the session."""

from __future__ import annotations

import socket
import time

import pytest

from streamlab.testing.daemon import request


@pytest.fixture(scope="module")
def session(daemon):
    r = daemon.request("POST", "/api/sessions", {"player_id": "shaping-api"})
    assert r.status in (200, 201)
    body = r.json()
    return body.get("session", body)


def _session(daemon, sid):
    return daemon.get(f"/api/session/{sid}").json()


def _wait(pred, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def test_capabilities_and_status(daemon, session):
    caps = daemon.get("/api/nftables/capabilities").json()
    assert caps["backend"] == "userspace" and caps["status"] == "enabled"
    assert caps["features"]["rate"] == "userspace" and caps["features"]["packet_counters"] is False
    st = daemon.get("/api/nftables/status").json()
    assert st["backend"] == "userspace" and session["x_forwarded_port"] in st["ports"]


def test_endpoints_and_patch_are_one_model(daemon, session):
    sid, port = session["session_id"], int(session["x_forwarded_port"])
    rev = _session(daemon, sid)["control_revision"]
    r = daemon.request("POST", f"/api/nftables/bandwidth/{port}", {"rate_mbps": 12})
    assert r.status == 200 and {k: r.json()[k] for k in ("success", "port", "rate_mbps")} == \
        {"success": True, "port": port, "rate_mbps": 12}
    assert r.json()["carriers"]["rate"]["backend"] == "userspace"
    s = _session(daemon, sid)
    assert s["nftables_bandwidth_mbps"] == 12 and s["control_revision"] != rev
    daemon.request("PATCH", f"/api/session/{sid}", {"set": {"nftables_delay_ms": 25}})
    p = daemon.get(f"/api/nftables/port/{port}").json()
    assert p["rate_mbps"] == 12 and p["delay_ms"] == 25
    assert p["applied"]["userspace"]["rate_mbps"] == 12 and p["applied"]["userspace"]["delay_ms"] == 25
    assert daemon.request("POST", f"/api/nftables/bandwidth/{port}", {"rate_mbps": "fast"}).status == 400
    assert daemon.request("POST", "/api/nftables/loss/1", {"percent": 1}).status == 404
    r = daemon.request("POST", f"/api/nftables/pattern/{port}", {"template_mode": "ramp_up"})
    assert r.status == 409 and "ladder" in r.json()["error"]
    # the PATCH door refuses a template without a ladder the same way, and changes nothing
    before = _session(daemon, sid)
    r = daemon.request("PATCH", f"/api/session/{sid}", {"set": {"nftables_pattern_template_mode": "pyramid"}})
    assert r.status == 409 and "ladder" in r.json()["error"], r.json()
    after = _session(daemon, sid)
    assert after["nftables_pattern_template_mode"] == "sliders"
    assert after["control_revision"] == before["control_revision"]
    r = daemon.request("POST", f"/api/nftables/pattern/{port}",
                       {"steps": [{"rate_mbps": 2, "duration_seconds": 1},
                                  {"rate_mbps": 0, "duration_seconds": 1}]})
    assert r.status == 200 and r.json()["pattern_enabled"] is True
    s = _session(daemon, sid)
    rev = s["control_revision"]
    assert s["nftables_pattern_step"] in (1, 2)
    _wait(lambda: _session(daemon, sid)["nftables_pattern_step"] != s["nftables_pattern_step"], 3)
    s2 = _session(daemon, sid)
    assert s2["control_revision"] == rev  # a step change is not a control change
    assert s2["nftables_pattern_rate_runtime_mbps"] in (2, 0)
    r = daemon.request("POST", f"/api/nftables/shape/{port}", {"rate_mbps": 0, "delay_ms": 0, "loss_pct": 0})
    assert r.status == 200
    assert _session(daemon, sid)["nftables_pattern_enabled"] is False


def _raw_get(port, timeout):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return data
            data += chunk
    finally:
        s.close()


def test_transport_drop_and_reject_on_the_session_port(daemon, session):
    sid, port = session["session_id"], int(session["x_forwarded_port"])
    assert _raw_get(port, 5).startswith(b"HTTP/1.1 404")
    daemon.request("PATCH", f"/api/session/{sid}", {"set": {"transport_failure_type": "drop",
                                                            "transport_consecutive_failures": 0}})
    s = _session(daemon, sid)
    assert s["transport_fault_active"] is True and s["fault_count_transport_drop"] >= 1
    with pytest.raises(TimeoutError):
        _raw_get(port, 0.8)  # unanswered while DROP is in force
    assert _session(daemon, sid)["transport_fault_drop_packets"] >= 1
    daemon.request("PATCH", f"/api/session/{sid}", {"set": {"transport_failure_type": "reject"}})
    t = time.monotonic()
    with pytest.raises(ConnectionError):
        _raw_get(port, 5)
    assert time.monotonic() - t < 1.0
    assert _session(daemon, sid)["transport_fault_reject_packets"] >= 1
    daemon.request("PATCH", f"/api/session/{sid}", {"set": {"transport_failure_type": "none"}})
    assert _session(daemon, sid)["transport_fault_active"] is False
    assert request(port, "GET", "/nope", timeout=5).status == 404


def test_conflicting_pattern_input_is_refused_and_changes_nothing(daemon, session):
    sid, port = session["session_id"], int(session["x_forwarded_port"])
    before = _session(daemon, sid)
    for body in ({"steps": [{"rate_mbps": 2, "duration_seconds": 6}], "template_mode": "pyramid"},
                 {"steps": None, "template_mode": "pyramid"}, {"steps": None}):
        r = daemon.request("POST", f"/api/nftables/pattern/{port}", body)
        assert r.status == 400 and "steps" in r.json()["fields"], (body, r.json())
    after = _session(daemon, sid)
    assert after["control_revision"] == before["control_revision"]
    assert after["nftables_pattern_enabled"] is False
