"""The sessions Klein API in memory (StubTreq) over a registry on a MemoryReactorClock."""

from __future__ import annotations

import json

import pytest
from treq.testing import StubTreq
from twisted.internet.testing import MemoryReactorClock

from streamlab import config as configmod
from streamlab.api.root import ApiRoot
from streamlab.api.sessions import MOUNTS, SessionsApi
from streamlab.events import EventBus
from streamlab.proxy.registry import SessionRegistry
from streamlab.web.root import MainRoot


@pytest.fixture
def api():
    cfg = configmod.load(None, {"session-ports": "42000-42004"})
    reactor = MemoryReactorClock()
    reactor.advance(1_700_000_000)
    registry = SessionRegistry(cfg, reactor, EventBus())
    root, api_root = MainRoot(), ApiRoot()
    root.mount("api", api_root)
    resource = SessionsApi(registry).app.resource()
    for name in MOUNTS:
        api_root.mount(name, resource)
    return StubTreq(root), registry


def call(treq, method, path, body=None, raw=None):
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    resp = treq.request(method, "http://lab" + path, data=data,
                        headers={"Content-Type": "application/json"})
    out = {}

    def got(r):
        out["status"] = r.code
        return r.content()

    d = resp.addCallback(got)
    d.addCallback(lambda content: out.__setitem__("body", json.loads(content) if content else None))
    treq.flush()
    assert "body" in out, "no response"
    return out["status"], out["body"]


def test_create_get_list_delete(api):
    treq, registry = api
    st, body = call(treq, "POST", "/api/sessions", {"player_id": "p1", "set": {"nftables_delay_ms": 50}})
    assert st == 201 and body["session_id"] == "1" and body["nftables_delay_ms"] == 50
    st, again = call(treq, "POST", "/api/sessions", {"player_id": "p1"})
    assert st == 200 and again["session_id"] == "1"
    st, listing = call(treq, "GET", "/api/sessions")
    assert st == 200 and [s["session_id"] for s in listing] == ["1"]
    st, one = call(treq, "GET", "/api/session/1")
    assert st == 200 and one["x_forwarded_port"] == "42000"
    assert call(treq, "GET", "/api/session/9")[0] == 404
    assert call(treq, "DELETE", "/api/session/1") == (200, {"deleted": "1"})
    assert call(treq, "DELETE", "/api/session/1")[0] == 404
    st, body = call(treq, "POST", "/api/sessions", {"set": {}})
    assert st == 400


def test_patch_bodies(api):
    treq, registry = api
    call(treq, "POST", "/api/sessions", {"player_id": "p1"})
    st, body = call(treq, "PATCH", "/api/session/1", raw=b"{not json")
    assert (st, body["error"]) == (400, "invalid json")
    st, body = call(treq, "PATCH", "/api/session/1", {"set": {}})
    assert (st, body["error"]) == (400, "no fields provided")
    st, body = call(treq, "PATCH", "/api/session/1", {})
    assert (st, body["error"]) == (400, "no fields provided")
    before = registry.get("1").controls.revision
    st, body = call(treq, "PATCH", "/api/session/1",
                    {"set": {"segment_failure_type": "500", "nftables_packet_loss": 101}})
    assert st == 400 and body == {"error": "invalid", "fields": {"nftables_packet_loss": body["fields"][
        "nftables_packet_loss"]}}
    assert registry.get("1").controls.revision == before
    assert registry.get("1").controls.values["segment_failure_type"] == "none"  # no partial write
    st, body = call(treq, "PATCH", "/api/session/1", {"set": {"segment_failure_type": "500"}})
    assert st == 200 and body["session"]["segment_failure_type"] == "500"
    base = body["control_revision"]
    assert body["session"]["control_revision"] == base
    call(treq, "PATCH", "/api/session/1", {"set": {"segment_failure_type": "502"}})
    st, body = call(treq, "PATCH", "/api/session/1",
                    {"set": {"segment_failure_type": "503"}, "base_revision": base})
    assert st == 409 and body["conflicts"] == ["segment_failure_type"]
    assert body["session"]["segment_failure_type"] == "502"
    st, body = call(treq, "PATCH", "/api/session/1",
                    {"set": {"manifest_failure_type": "404"}, "base_revision": base})
    assert st == 200
    assert call(treq, "PATCH", "/api/session/7", {"set": {"nftables_delay_ms": 1}})[0] == 404


def test_legacy_doors_and_metrics(api):
    treq, registry = api
    call(treq, "POST", "/api/sessions", {"player_id": "p1"})
    st, body = call(treq, "POST", "/api/session/1/update", {"segment_failure_type": "hung",
                                                             "segment_failure_units": "seconds"})
    assert st == 200
    s = body["session"]
    assert s["segment_failure_type"] == "request_connect_hang" and s["segment_failure_mode"] == "seconds"
    st, body = call(treq, "POST", "/api/failure-settings/1", {"transport_fault_type": "drop"})
    assert st == 200 and body["session"]["transport_failure_type"] == "drop"
    rev = registry.get("1").controls.revision
    st, body = call(treq, "POST", "/api/session/1/metrics", {"set": {"player_metrics_stalls": 2}})
    assert (st, body) == (200, {"status": "ok"})
    assert registry.get("1").controls.revision == rev
    st, body = call(treq, "POST", "/api/session/1/metrics", {"set": {"nftables_delay_ms": 2}})
    assert st == 400 and "nftables_delay_ms" in body["fields"]
    assert call(treq, "POST", "/api/session/5/metrics", {"set": {"player_metrics_x": 1}})[0] == 404


def test_groups_network_external_ips_clear(api):
    treq, registry = api
    for p in ("a", "b", "c"):
        call(treq, "POST", "/api/sessions", {"player_id": p})
    st, body = call(treq, "POST", "/api/session-group/link", {"session_ids": ["1", "2"]})
    assert st == 200 and body["session_ids"] == ["1", "2"]
    gid = body["group_id"]
    st, body = call(treq, "GET", f"/api/session-group/{gid}")
    assert st == 200 and body["session_ids"] == ["1", "2"]
    assert call(treq, "POST", "/api/session-group/link", {"session_ids": ["1", "42"]})[0] == 404
    assert call(treq, "POST", "/api/session-group/link", {"session_ids": "1"})[0] == 400
    st, body = call(treq, "PATCH", "/api/session/2", {"set": {"all_failure_type": "404"}})
    assert registry.get("1").controls.values["all_failure_type"] == "404"
    assert call(treq, "POST", "/api/session-group/unlink", {"session_id": "1"})[0] == 200
    assert call(treq, "GET", f"/api/session-group/{gid}")[0] == 404
    st, body = call(treq, "GET", "/api/session/3/network?limit=5")
    assert st == 200 and (body["session_id"], body["count"], body["entries"]) == ("3", 0, [])
    assert body["markers"] == []
    assert body["log"]["max_bytes"] > 0 and body["log"]["bytes"] == 0
    assert call(treq, "GET", "/api/session/3/network?limit=x")[0] == 400
    assert call(treq, "GET", "/api/session/3/network?since=garbage")[0] == 400
    st, har = call(treq, "GET", "/api/session/3/network.har")
    assert st == 200 and har["log"]["version"] == "1.2"
    st, body = call(treq, "GET", "/api/external-ips")
    assert st == 200 and body["lifetime_count"] == 0
    assert call(treq, "POST", "/api/clear-sessions") == (200, {"cleared": 3})


def test_network_entry_sequence_must_be_ascii_digits(api):
    """``³`` is a Unicode digit that ``int()`` refuses: 404 like any unknown entry, not 500
    (found by the API fuzzer)."""
    treq, _registry = api
    assert call(treq, "POST", "/api/sessions", {"player_id": "p1"})[0] == 201
    assert call(treq, "GET", "/api/session/1/network/entry/%C2%B3")[0] == 404
    assert call(treq, "GET", "/api/session/1/network/entry/12345")[0] == 404


def test_keep_takes_only_keep(api):
    treq, _registry = api
    assert call(treq, "POST", "/api/sessions", {"player_id": "p1"})[0] == 201
    st, body = call(treq, "POST", "/api/session/1/keep", {"keep": True, "extra": 1})
    assert st == 400 and body["fields"] == {"extra": "unknown field"}
    st, body = call(treq, "POST", "/api/session/1/keep", {"keep": True})
    assert st == 200 and body["session"]["session_keep"] is True


def test_metrics_set_form_takes_no_other_field(api):
    """``{"set": {...}}`` or the flat legacy form; a field beside ``set`` is refused, not
    silently dropped (found by the API fuzzer)."""
    treq, _registry = api
    assert call(treq, "POST", "/api/sessions", {"player_id": "p1"})[0] == 201
    st, body = call(treq, "POST", "/api/session/1/metrics",
                    {"set": {"player_metrics_stalls": 1}, "other": 2})
    assert st == 400 and body["fields"] == {"other": "unknown field"}
    assert call(treq, "POST", "/api/session/1/metrics", {"set": {"player_metrics_stalls": 1}})[0] == 200
    assert call(treq, "POST", "/api/session/1/metrics", {"player_metrics_stalls": 2})[0] == 200
