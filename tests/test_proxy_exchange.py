"""The session-port listener against a fake ISessionExchange: what a request asks of its
session (one begin, one end, the bytes it sent, the faults it hit) and how it carries a
Plan out on the wire, without a registry."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer
from zope.interface.verify import verifyObject

from streamlab.proxy.exchange import ExchangeRecord, ISessionExchange, Plan, PortSettings, RequestInfo
from streamlab.proxy.faults import FaultDecision
from streamlab.proxy.listener import SessionSite
from streamlab.proxy.request import BodyMode, Phase, SessionRequest
from streamlab.proxy.session_exchange import SessionExchange

BODY = b"#EXTM3U\n" + b"#EXTINF:2.0,\nseg.m4s\n" * 50
SEGMENT = (b"GET /go-live/c/video/360p/seg_00001.m4s?play_id=p9 HTTP/1.1\r\n"
           b"Host: x\r\nUser-Agent: ua/1\r\n\r\n")


@implementer(ISessionExchange)
class FakeExchange:
    """Records every call; answers ``begin`` with the plan it was given."""

    def __init__(self, plan: Plan, rewritten: tuple[bytes, str] | None = None) -> None:
        self.plan = plan
        self.rewritten = rewritten
        self.calls: list[tuple[str, Any]] = []
        self.infos: list[RequestInfo] = []
        self.records: list[ExchangeRecord] = []
        self.bytes = 0

    def connection_made(self, channel: Any) -> None:
        self.calls.append(("connection_made", None))

    def connection_lost(self, channel: Any) -> None:
        self.calls.append(("connection_lost", None))

    def begin(self, info: RequestInfo, now: float) -> Plan:
        self.calls.append(("begin", now))
        self.infos.append(info)
        return self.plan

    def sent(self, nbytes: int) -> None:
        self.bytes += nbytes

    def faulted(self, fault_type: str) -> None:
        self.calls.append(("faulted", fault_type))

    def rewrite(self, plan: Plan, path: str, body: bytes, now: float) -> tuple[bytes, str]:
        self.calls.append(("rewrite", body))
        return self.rewritten if self.rewritten is not None else (body, "")

    def end(self, record: ExchangeRecord) -> None:
        self.calls.append(("end", record))
        self.records.append(record)


class _Origin(Resource):
    isLeaf = True

    def __init__(self, body: bytes = BODY, finish: bool = True) -> None:
        super().__init__()
        self.body = body
        self.finish = finish
        self.rendered = 0
        self.requests_seen: list[Any] = []

    def render_GET(self, request: Any) -> Any:  # noqa: N802
        self.rendered += 1
        self.requests_seen.append(request)
        request.setHeader(b"content-type", b"video/mp4")
        if not self.finish:
            request.setHeader(b"content-length", b"100000")
            if self.body:
                request.write(self.body)
            return NOT_DONE_YET
        return self.body


def _connect(exchange: FakeExchange, origin: Resource | None = None,
             settings: PortSettings | None = None) -> tuple[Any, StringTransport, MemoryReactorClock]:
    clock = MemoryReactorClock()
    clock.advance(1_700_000_000)
    site = SessionSite(exchange, origin or _Origin(), clock, settings or PortSettings())
    proto = site.buildProtocol(None)
    transport = StringTransport()
    proto.makeConnection(transport)
    return proto, transport, clock


def test_the_session_exchange_provides_the_interface():
    from tests.test_sessions_registry import _registry
    reg, _, _ = _registry()
    session, _ = reg.get_or_create("iface")
    assert verifyObject(ISessionExchange, reg.exchange(session))
    assert isinstance(reg.exchange(session), SessionExchange)
    assert verifyObject(ISessionExchange, FakeExchange(Plan("other")))


def test_an_unfaulted_request_is_one_begin_and_one_end_with_what_the_client_saw():
    ex = FakeExchange(Plan("segment"))
    proto, transport, clock = _connect(ex)
    proto.dataReceived(SEGMENT)
    out = transport.value()
    assert out.startswith(b"HTTP/1.1 200") and out.endswith(BODY)
    assert [c[0] for c in ex.calls] == ["connection_made", "begin", "end"]
    info = ex.infos[0]
    assert (info.method, info.path, info.url) == ("GET", "/go-live/c/video/360p/seg_00001.m4s",
                                                  "/go-live/c/video/360p/seg_00001.m4s?play_id=p9")
    assert (info.user_agent, info.play_id, info.new_connection) == ("ua/1", "p9", True)
    rec = ex.records[0]
    assert (rec.kind, rec.status, rec.bytes_out, rec.content_type) == ("segment", 200, len(BODY), "video/mp4")
    assert rec.fault_category == "" and ex.bytes == len(BODY)
    assert rec.first_byte is not None and rec.accepted is not None and rec.bytes_in > len(SEGMENT) // 2
    # the next request on the same connection is not a new one
    proto.dataReceived(SEGMENT)
    assert ex.infos[1].new_connection is False and ex.records[1].accepted is None


def test_a_status_fault_answers_without_the_origin():
    origin = _Origin()
    fault = FaultDecision(fault_type="404", category="http", status=404, action="status", prefix="segment")
    ex = FakeExchange(Plan("segment", fault=fault))
    proto, transport, clock = _connect(ex, origin)
    proto.dataReceived(SEGMENT)
    assert transport.value().startswith(b"HTTP/1.1 404") and origin.rendered == 0
    rec = ex.records[0]
    assert (rec.status, rec.fault_type, rec.fault_category, rec.fault_action) == \
        (404, "404", "http", "status")


def test_a_buffered_playlist_goes_through_rewrite_and_a_manifest_fault_is_counted():
    ex = FakeExchange(Plan("manifest", buffer_body=True), rewritten=(b"#EXTM3U\nshort\n", "stale_playlist"))
    proto, transport, clock = _connect(ex)
    proto.dataReceived(b"GET /go-live/c/playlist_360p.m3u8 HTTP/1.1\r\nHost: x\r\n\r\n")
    out = transport.value()
    assert out.endswith(b"#EXTM3U\nshort\n") and b"content-length: 14" in out.lower()
    assert ("rewrite", BODY) in ex.calls and ("faulted", "stale_playlist") in ex.calls
    rec = ex.records[0]
    assert (rec.fault_type, rec.fault_category, rec.fault_action, rec.bytes_out) == \
        ("stale_playlist", "manifest", "rewrite", 14)


def test_an_active_timeout_before_headers_is_a_504_the_request_reports_itself():
    origin = _Origin(b"", finish=False)
    ex = FakeExchange(Plan("segment", active_timeout=2.0))
    proto, transport, clock = _connect(ex, origin)
    proto.dataReceived(SEGMENT)
    clock.advance(1.9)
    assert ("faulted", "transfer_active_timeout") not in ex.calls
    clock.advance(0.2)
    assert transport.value().startswith(b"HTTP/1.1 504")
    assert ("faulted", "transfer_active_timeout") in ex.calls
    assert ex.records[0].fault_category == "transfer_timeout"
    n = len(transport.value())
    origin.requests_seen[0].write(b"late")  # the origin wakes up later: nothing reaches the client
    assert len(transport.value()) == n


def test_a_client_that_leaves_mid_body_is_recorded_once_as_client_disconnect():
    origin = _Origin(b"x" * 3000, finish=False)
    ex = FakeExchange(Plan("segment"))
    proto, transport, clock = _connect(ex, origin)
    proto.dataReceived(SEGMENT)
    request = proto._channel.requests[0]
    assert isinstance(request, SessionRequest) and request.phase is Phase.SERVING
    proto.connectionLost(Exception("gone"))
    ends = [c for c in ex.calls if c[0] == "end"]
    assert len(ends) == 1 and ex.records[0].fault_category == "client_disconnect"
    assert ex.records[0].fault_type == "" and ("connection_lost", None) in ex.calls


@pytest.mark.parametrize(("fault_type", "mode"), [("corrupted", BodyMode.ZERO)])
def test_a_corrupting_plan_zeroes_the_body(fault_type: str, mode: BodyMode):
    fault = FaultDecision(fault_type=fault_type, category="corruption", status=None, action="corrupt",
                          prefix="segment")
    ex = FakeExchange(Plan("segment", fault=fault))
    proto, transport, clock = _connect(ex)
    proto.dataReceived(SEGMENT)
    assert transport.value().endswith(b"\0" * len(BODY))
    assert ex.records[0].fault_action == "corrupt" and ex.bytes == len(BODY)


def test_the_graceful_stop_counts_a_request_until_it_finishes_or_its_client_leaves():
    from streamlab.shutdown import InFlight

    inflight = InFlight()
    origin = _Origin(b"x" * 100, finish=False)
    clock = MemoryReactorClock()
    site = SessionSite(FakeExchange(Plan("segment")), origin, clock, PortSettings(), inflight=inflight)
    proto = site.buildProtocol(None)
    proto.makeConnection(StringTransport())
    proto.dataReceived(SEGMENT)
    assert inflight.count == 1
    origin.requests_seen[0].finish()
    assert inflight.count == 0
    proto.dataReceived(SEGMENT)
    assert inflight.count == 1
    proto.connectionLost(Exception("gone"))
    assert inflight.count == 0


class _TCPStringTransport(StringTransport):
    def setTcpNoDelay(self, enabled: bool) -> None:  # noqa: N802 - ITCPTransport
        pass


@pytest.mark.parametrize("shaped", [True, False])
def test_a_tls_connections_first_request_carries_its_handshake_time(tmp_path, shaped: bool):
    """A real TLS handshake (the daemon's TLS wrapper, over the userspace shaper or not)
    with a Python client on memory BIOs: the first request's record has the handshake's
    end, the second request on the same connection has none (like ``accepted``)."""
    import ssl

    from streamlab import config as configmod
    from streamlab.shaping.userspace import UserspaceBackend
    from streamlab.web import tls

    cfg = configmod.load(None, {"media-dir": str(tmp_path / "m"), "state-dir": str(tmp_path / "s"),
                                "tls": "auto"})
    ex = FakeExchange(Plan("segment"))
    clock = MemoryReactorClock()
    clock.advance(1_700_000_000)
    factory: Any = SessionSite(ex, _Origin(), clock, PortSettings())
    if shaped:
        factory = UserspaceBackend(clock).wrap(30181, factory)
    server = tls.load(cfg).wrap(factory, allow_h2=False).buildProtocol(None)
    wire = _TCPStringTransport()
    server.makeConnection(wire)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = ctx.wrap_bio(incoming, outgoing)

    def pump() -> None:
        for _ in range(20):
            moved = False
            if outgoing.pending:
                server.dataReceived(outgoing.read())
                moved = True
            if wire.value():
                incoming.write(wire.value())
                wire.clear()
                moved = True
            if not moved:
                return

    with pytest.raises(ssl.SSLWantReadError):
        client.do_handshake()  # the ClientHello
    clock.advance(0.025)  # the round trips of the handshake
    pump()
    client.do_handshake()
    pump()
    clock.advance(0.010)
    for _ in range(2):
        client.write(SEGMENT)
        pump()
        for _ in range(20):  # drain the response
            try:
                client.read(65536)
            except ssl.SSLWantReadError:
                break
    first, second = ex.records
    assert first.accepted == 1_700_000_000 and first.tls_done == pytest.approx(1_700_000_000.025)
    assert second.accepted is None and second.tls_done is None
