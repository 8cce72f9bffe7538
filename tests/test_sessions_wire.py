"""Small wire pieces: TCP_INFO parsing and RTT windows, port pool, client IP / player id
extraction, and the listener on an in-memory transport."""

from __future__ import annotations

import socket
import struct
import sys

import pytest
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.web.resource import Resource
from twisted.web.test.requesthelper import DummyRequest

from streamlab import config as configmod
from streamlab.events import EventBus
from streamlab.proxy.bootstrap import client_ip, player_id_of
from streamlab.proxy.ports import PortPool
from streamlab.proxy.registry import SessionRegistry
from streamlab.proxy.tcpinfo import RttWindow, parse_tcp_info, read_tcp_info


def _tcp_info(rtt=12000, rttvar=3000, rto=204000, min_rtt=9000) -> bytes:
    ints = [0] * 24
    ints[0], ints[15], ints[16] = rto, rtt, rttvar
    return struct.pack("=8B24I4Q4I", *([0] * 8), *ints, 0, 0, 123, 0, 0, 0, 0, min_rtt) + b"\0" * 80


def test_parse_tcp_info_fields():
    info = parse_tcp_info(_tcp_info())
    assert (info.rtt_us, info.rttvar_us, info.rto_us, info.min_rtt_us, info.bytes_acked) == \
        (12000, 3000, 204000, 9000, 123)
    assert parse_tcp_info(b"\0" * 10) is None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="TCP_INFO is Linux only")
def test_read_tcp_info_of_a_real_socket():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    cli = socket.create_connection(srv.getsockname())
    conn, _ = srv.accept()
    try:
        info = read_tcp_info(conn)
        assert info is not None and info.rto_us > 0
    finally:
        for s in (cli, conn, srv):
            s.close()
    assert read_tcp_info(None) is None


def test_rtt_window_aggregates_and_goes_stale():
    w = RttWindow()
    for rtt in (10000, 20000, 30000):
        w.add(parse_tcp_info(_tcp_info(rtt=rtt)))
    f = w.roll()
    assert (f["client_rtt_ms"], f["client_rtt_max_ms"], f["client_rtt_min_ms"]) == (20.0, 30.0, 10.0)
    assert (f["client_rtt_var_ms"], f["client_rto_ms"], f["client_rtt_min_lifetime_ms"]) == (3.0, 204.0, 9.0)
    assert f["client_rtt_stale"] is False
    f2 = w.roll()
    assert f2["client_rtt_stale"] is True and f2["client_rtt_ms"] == 20.0


def test_port_pool_lowest_free_quarantine_and_refusal():
    pool = PortPool(100, 103)
    assert [pool.acquire() for _ in range(3)] == [100, 101, 102]
    pool.begin_release(100)
    assert pool.acquire() == 103
    assert pool.acquire() is None
    pool.end_release(100)
    assert pool.acquire() == 100
    pool.begin_release(101)
    pool.end_release(101)
    pool.refuse(pool.acquire(now=5.0), now=5.0)  # 101 taken by another program
    assert pool.acquire(now=6.0) is None
    assert pool.acquire(now=40.0) == 101
    assert pool.slot(102) == 3 and pool.port_of_slot(3) == 102


def _request(peer: str, xff: str | None = None, **headers: str) -> DummyRequest:
    req = DummyRequest([b""])
    req.client = type("A", (), {"host": peer, "port": 1234})()
    req.getClientAddress = lambda: req.client
    if xff:
        req.requestHeaders.setRawHeaders(b"x-forwarded-for", [xff.encode()])
    for k, v in headers.items():
        req.requestHeaders.setRawHeaders(k.replace("_", "-").encode(), [v.encode()])
    return req


def test_x_forwarded_for_only_from_trusted_proxies():
    assert client_ip(_request("203.0.113.5", "1.2.3.4")) == "203.0.113.5"
    assert client_ip(_request("203.0.113.5", "1.2.3.4"), ("10.0.0.0/8",)) == "203.0.113.5"
    trusted = ("10.0.0.0/8", "127.0.0.1/32")
    assert client_ip(_request("10.1.1.1", "1.2.3.4"), trusted) == "1.2.3.4"
    # a spoofed left-most hop does not win over the real client the proxies saw
    assert client_ip(_request("10.1.1.1", "6.6.6.6, 1.2.3.4, 127.0.0.1"), trusted) == "1.2.3.4"
    assert client_ip(_request("10.1.1.1"), trusted) == "10.1.1.1"
    assert client_ip(_request("::ffff:203.0.113.9")) == "203.0.113.9"


def test_player_id_sources():
    req = _request("127.0.0.1")
    assert player_id_of(req) is None
    req.args = {b"player_id": [b"q1"]}
    assert player_id_of(req) == "q1"
    assert player_id_of(_request("127.0.0.1", Player_ID="h1")) == "h1"
    assert player_id_of(_request("127.0.0.1", X_Playback_Session_Id="x1")) == "x1"


class _Origin(Resource):
    isLeaf = True

    def render_GET(self, request):
        request.setHeader(b"content-type", b"video/mp4")
        return b"A" * 1000


def _site(set_=None):
    cfg = configmod.load(None, {"session-ports": "43000-43001"})
    reactor = MemoryReactorClock()
    reactor.advance(1_700_000_000)
    reg = SessionRegistry(cfg, reactor, EventBus(), origin=_Origin())
    s, _ = reg.get_or_create("p", set_=set_)
    factory = reactor.tcpServers[-1][1]
    proto = factory.buildProtocol(None)
    transport = StringTransport()
    proto.makeConnection(transport)
    return reg, s, proto, transport, reactor


def test_listener_passes_through_and_logs():
    reg, s, proto, transport, reactor = _site()
    proto.dataReceived(b"GET /go-live/c/video/360p/seg_00001.m4s HTTP/1.1\r\nHost: x\r\n\r\n")
    out = transport.value()
    assert out.startswith(b"HTTP/1.1 200") and out.endswith(b"A" * 1000)
    body = reg.to_json(s)
    assert body["segments_count"] == 1 and body["bytes_out_total"] == 1000
    e = s.netlog.entries()[-1]
    assert (e["status"], e["bytes_out"], e["request_kind"], e["faulted"]) == (200, 1000, "segment", False)


def test_listener_status_fault_and_corruption():
    reg, s, proto, transport, reactor = _site({"segment_failure_type": "503"})
    proto.dataReceived(b"GET /go-live/c/video/360p/seg_00001.m4s HTTP/1.1\r\nHost: x\r\n\r\n")
    assert transport.value().startswith(b"HTTP/1.1 503")
    assert s.netlog.entries()[-1]["fault_category"] == "http"
    reg.patch(s.session_id, {"segment_failure_type": "corrupted"})
    transport.clear()
    proto.dataReceived(b"GET /go-live/c/video/360p/seg_00002.m4s HTTP/1.1\r\nHost: x\r\n\r\n")
    out = transport.value()
    assert b"content-length: 1000" in out.lower() and out.endswith(b"\0" * 1000)


def test_listener_connect_reset_aborts_without_bytes():
    reg, s, proto, transport, reactor = _site({"segment_failure_type": "request_connect_reset"})
    proto.dataReceived(b"GET /go-live/c/video/360p/seg_00001.m4s HTTP/1.1\r\nHost: x\r\n\r\n")
    assert transport.value() == b""
    assert transport.disconnecting or getattr(transport, "disconnected", False)
    assert reg.to_json(s)["fault_count_request_connect_reset"] == 1


def test_listener_other_paths_are_404_and_never_faulted():
    reg, s, proto, transport, reactor = _site({"all_failure_type": "500", "all_consecutive_failures": 0})
    proto.dataReceived(b"GET /api/sessions HTTP/1.1\r\nHost: x\r\n\r\n")
    assert transport.value().startswith(b"HTTP/1.1 404")
    assert reg.to_json(s)["fault_count_total"] == 0


class _SlowOrigin(Resource):
    """Writes *first* bytes (if any) and then never finishes."""

    isLeaf = True

    def __init__(self, first: bytes = b"") -> None:
        super().__init__()
        self.first = first
        self.requests = []

    def render_GET(self, request):
        from twisted.web.server import NOT_DONE_YET

        self.requests.append(request)
        request.setHeader(b"content-type", b"video/mp4")
        request.setHeader(b"content-length", b"100000")
        if self.first:
            request.write(self.first)
        return NOT_DONE_YET


def _slow_site(origin, set_):
    cfg = configmod.load(None, {"session-ports": "43100-43101"})
    reactor = MemoryReactorClock()
    reactor.advance(1_700_000_000)
    reg = SessionRegistry(cfg, reactor, EventBus(), origin=origin)
    s, _ = reg.get_or_create("p", set_=set_)
    proto = reactor.tcpServers[-1][1].buildProtocol(None)
    transport = StringTransport()
    proto.makeConnection(transport)
    proto.dataReceived(b"GET /go-live/c/video/360p/seg_00001.m4s HTTP/1.1\r\nHost: x\r\n\r\n")
    return reg, s, transport, reactor


def test_active_timeout_before_headers_answers_504_and_drops_late_output():
    origin = _SlowOrigin()
    reg, s, transport, reactor = _slow_site(origin, {"transfer_active_timeout_seconds": 2})
    reactor.advance(1.9)
    assert transport.value() == b""
    reactor.advance(0.2)
    assert transport.value().startswith(b"HTTP/1.1 504")
    n = len(transport.value())
    origin.requests[0].write(b"late")  # the origin wakes up later: nothing reaches the client
    origin.requests[0].finish()
    assert len(transport.value()) == n
    e = s.netlog.entries()[-1]
    assert (e["status"], e["fault_category"], e["fault_type"]) == (504, "transfer_timeout",
                                                                  "transfer_active_timeout")
    assert reg.to_json(s)["fault_count_transfer_active_timeout"] == 1


def test_active_timeout_mid_body_cuts_the_connection():
    origin = _SlowOrigin(b"x" * 5000)
    reg, s, transport, reactor = _slow_site(origin, {"transfer_active_timeout_seconds": 1})
    assert transport.value().endswith(b"x" * 5000)
    reactor.advance(1.01)
    assert transport.disconnecting
    assert reg.to_json(s)["fault_count_transfer_active_timeout"] == 1


def test_timeouts_only_for_kinds_whose_flag_is_on():
    origin = _SlowOrigin()
    reg, s, transport, reactor = _slow_site(origin, {"transfer_active_timeout_seconds": 1,
                                                     "transfer_timeout_applies_segments": False})
    reactor.advance(5)
    assert transport.value() == b""
    assert reg.to_json(s).get("fault_count_transfer_active_timeout", 0) == 0


def test_icmp_echo_packet_and_reply_parsing():
    from streamlab.proxy.tcpinfo import echo_request, icmp_checksum, parse_echo_reply

    pkt = echo_request(0x1234, 7)
    assert pkt[0] == 8 and icmp_checksum(pkt) == 0  # a valid checksum sums to zero
    reply = bytes([0x45]) + b"\0" * 19 + bytes([0]) + pkt[1:]
    assert parse_echo_reply(reply, 0x1234) == 7
    assert parse_echo_reply(reply, 0x4321) is None
    assert parse_echo_reply(bytes([0x45]) + b"\0" * 19 + pkt, 0x1234) is None  # a request, not a reply
    assert parse_echo_reply(b"\x45", 1) is None
