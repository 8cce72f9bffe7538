"""Protocol hygiene of every listener, over StringTransport with a Clock (issue #17):
request-head deadline -> 408, over-long line/head -> 414/431, a 20-digit Content-Length
-> 400, the per-client connection cap -> 429, JSON 405 with ``Allow`` (TRACE included),
bounded JSON depth, undecodable path segments -> 400 without a logged traceback, and
X-Forwarded-For parsing."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher
from twisted.web.resource import Resource
from twisted.web.test.requesthelper import DummyRequest

from streamlab.api import jsonio
from streamlab.api.root import ApiRoot
from streamlab.api.server import ServerApi
from streamlab.errors import Invalid
from streamlab.proxy.bootstrap import client_ip, forwarded_hop
from streamlab.web.site import build_site


class _Get(Resource):
    isLeaf = True

    def render_GET(self, request: Any) -> bytes:  # noqa: N802
        return b"ok"


def _connect(site: Any, host: str = "10.0.0.7") -> tuple[Any, StringTransport]:
    proto = site.buildProtocol(IPv4Address("TCP", host, 40000))
    transport = StringTransport(peerAddress=IPv4Address("TCP", host, 40000))
    proto.makeConnection(transport)
    return proto, transport


def _status(transport: StringTransport) -> int:
    line = transport.value().split(b"\r\n", 1)[0]
    return int(line.split()[1]) if line else 0


def _json_body(transport: StringTransport) -> dict[str, Any]:
    return json.loads(transport.value().split(b"\r\n\r\n", 1)[1])


# --------------------------------------------------------------------------- head deadline


def test_slow_header_client_gets_408_when_the_head_deadline_passes():
    clock = Clock()
    site = build_site(_Get(), clock, head_timeout=10)
    proto, transport = _connect(site)
    proto.dataReceived(b"GET / HTTP/1.1\r\n")
    for _ in range(3):  # one header line every 3 s: each byte resets the idle timeout
        clock.advance(3)
        proto.dataReceived(b"X-Slow: 1\r\n")
    assert transport.value() == b""
    clock.advance(1.01)
    assert _status(transport) == 408
    assert _json_body(transport)["error"] == "request timeout"
    assert transport.disconnecting


def test_a_head_that_arrives_in_time_is_served_and_the_deadline_restarts_per_request():
    clock = Clock()
    site = build_site(_Get(), clock, head_timeout=10)
    proto, transport = _connect(site)
    clock.advance(9)
    proto.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert _status(transport) == 200
    transport.clear()
    clock.advance(30)  # idle keep-alive (under the 60 s idle timeout): no head in progress, no 408
    assert transport.value() == b""
    proto.dataReceived(b"GET / HTTP/1.1\r\n")
    clock.advance(9.9)
    assert transport.value() == b""
    clock.advance(0.2)
    assert _status(transport) == 408


def test_a_connection_that_sends_nothing_gets_408():
    clock = Clock()
    site = build_site(_Get(), clock, head_timeout=5)
    _proto, transport = _connect(site)
    clock.advance(5.01)
    assert _status(transport) == 408


# --------------------------------------------------------------------------- limits


def test_over_long_request_line_is_414_and_over_long_header_is_431():
    site = build_site(_Get(), Clock())
    proto, transport = _connect(site)
    proto.dataReceived(b"GET /" + b"a" * 17000 + b" HTTP/1.1\r\n\r\n")
    assert _status(transport) == 414
    proto, transport = _connect(site)
    proto.dataReceived(b"GET / HTTP/1.1\r\nX-A: " + b"a" * 17000 + b"\r\n\r\n")
    assert _status(transport) == 431
    proto, transport = _connect(site)
    proto.dataReceived(b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: %s\r\n" % (i, b"b" * 900) for i in range(20)))
    assert _status(transport) == 431


@pytest.mark.parametrize("value", [b"12345678901234567890", b"-1", b"1e3", b"0x10"])
def test_bad_content_length_is_400_with_a_json_body(value):
    site = build_site(_Get(), Clock())
    proto, transport = _connect(site)
    proto.dataReceived(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: " + value + b"\r\n\r\n")
    assert _status(transport) == 400
    assert _json_body(transport)["error"] == "bad request"
    assert transport.disconnecting


def test_connections_per_client_address_are_capped():
    site = build_site(_Get(), Clock(), max_connections_per_client=2)
    first = [_connect(site, "10.0.0.7") for _ in range(2)]
    proto, transport = _connect(site, "10.0.0.7")
    assert _status(transport) == 429 and transport.disconnecting
    _other, other_transport = _connect(site, "10.0.0.8")  # another address is not affected
    assert other_transport.value() == b""
    first[0][0].connectionLost(None)
    _again, again_transport = _connect(site, "10.0.0.7")  # a slot freed up
    assert again_transport.value() == b""
    assert site.client_slots.open == {"10.0.0.7": 2, "10.0.0.8": 1}


def test_trusted_proxies_are_not_capped():
    site = build_site(_Get(), Clock(), max_connections_per_client=1, uncapped=("10.9.0.0/16",))
    _connect(site, "10.9.0.1")
    _proto, transport = _connect(site, "10.9.0.1")  # every client behind the proxy shares it
    assert transport.value() == b""
    _connect(site, "10.0.0.7")
    _proto, transport = _connect(site, "10.0.0.7")
    assert _status(transport) == 429


# --------------------------------------------------------------------------- 405


@pytest.mark.parametrize("method", [b"TRACE", b"POST", b"DELETE"])
def test_unsupported_method_is_json_405_with_allow(method):
    site = build_site(_Get(), Clock())
    proto, transport = _connect(site)
    proto.dataReceived(method + b" /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
    assert _status(transport) == 405
    head = transport.value().split(b"\r\n\r\n", 1)[0].lower()
    assert b"\r\nallow: get, head, options" in head
    assert b"content-type: application/json" in head
    assert _json_body(transport)["error"] == "method not allowed"


def test_klein_405_carries_allow():
    api = ApiRoot()
    api.mount("health", ServerApi(Clock()).app.resource())
    site = build_site(api, Clock())
    proto, transport = _connect(site)
    proto.dataReceived(b"PUT /health HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
    assert _status(transport) == 405
    assert b"\r\nallow: get, head, options\r\n" in transport.value().split(b"\r\n\r\n")[0].lower()


# --------------------------------------------------------------------------- JSON depth


def _json_request(body: bytes) -> DummyRequest:
    req = DummyRequest([b""])
    req.content = io.BytesIO(body)
    return req


@pytest.mark.parametrize("body", [b"[" * 1000 + b"]" * 1000, b"[" * 100000, b'{"a":' * 40 + b"1" + b"}" * 40])
def test_deeply_nested_json_is_a_400(body):
    with pytest.raises(Invalid) as err:
        jsonio.read_json(_json_request(body))
    assert err.value.status == 400 and "nested deeper" in str(err.value.detail)


def test_ordinary_nesting_is_fine():
    body = json.dumps({"set": {"nftables_pattern_steps": [{"rate_mbps": 1, "duration_seconds": 2}]}})
    parsed = jsonio.read_json(_json_request(body.encode()))
    assert parsed["set"]["nftables_pattern_steps"][0]["rate_mbps"] == 1


# --------------------------------------------------------------------------- bad path encoding


@pytest.mark.parametrize("path", [b"/health/%c0%ae", b"/%ff%fe", b"/health/%ff%fe/x"])
def test_undecodable_path_segments_are_400_and_log_no_traceback(path):
    api = ApiRoot()
    api.mount("health", ServerApi(Clock()).app.resource())
    site = build_site(api, Clock())
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        proto, transport = _connect(site)
        proto.dataReceived(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert _status(transport) == 400
    assert _json_body(transport)["error"] == "invalid path"
    assert not [e for e in events if e.get("log_failure") is not None or e.get("isError")]


# --------------------------------------------------------------------------- X-Forwarded-For


class _Req:
    def __init__(self, peer: str, xff: str | None) -> None:
        self.peer, self.xff = peer, xff

    def getClientAddress(self) -> Any:  # noqa: N802
        return IPv4Address("TCP", self.peer, 1234)

    def getHeader(self, name: bytes) -> bytes | None:  # noqa: N802
        return self.xff.encode() if self.xff is not None and name == b"x-forwarded-for" else None


@pytest.mark.parametrize(("xff", "want"), [
    ("8.8.8.8", "8.8.8.8"), ("8.8.8.8:1234", "8.8.8.8"), ("[2001:db8::1]:443", "2001:db8::1"),
    ("[2001:db8::1]", "2001:db8::1"), ("2001:db8::1", "2001:db8::1"), ("1.1.1.1, 8.8.8.8:80", "8.8.8.8"),
    ("not-an-ip", "10.1.1.1"), ("008.008.008.008", "10.1.1.1"), ("8.8.8.8:99999999", "10.1.1.1"),
    ("8.8.8.8, not-an-ip", "10.1.1.1"), ("", "10.1.1.1"),
])
def test_forwarded_for_from_a_trusted_proxy(xff, want):
    assert client_ip(_Req("10.1.1.1", xff), ["10.0.0.0/8"]) == want


def test_forwarded_for_from_an_untrusted_peer_is_ignored():
    assert client_ip(_Req("203.0.113.9", "8.8.8.8"), ["10.0.0.0/8"]) == "203.0.113.9"


def test_forwarded_hop_forms():
    assert str(forwarded_hop(" 8.8.4.4:53 ")) == "8.8.4.4"
    assert forwarded_hop("[8.8.8.8]:1") is None
    assert forwarded_hop("unknown") is None
