"""The sessions SSE feed: with a dashboard listening, a busy session is serialised again
and a quiet one is not (every 100 ms metering tick used to re-serialise them all); the
``sessions`` event keeps its full-list shape, and ``?delta=1`` clients get only changes."""

from __future__ import annotations

from typing import Any

from twisted.internet.testing import MemoryReactorClock, StringTransport

from streamlab import config as configmod
from streamlab.events import EventBus
from streamlab.proxy.registry import SessionRegistry
from tests.test_sessions_sse import DummyRequest, _events

LO = 44100


class _Req(DummyRequest):
    def __init__(self, delta: bool = False) -> None:
        super().__init__()
        self.args = {b"delta": [b"1"]} if delta else {}


def _registry(n: int) -> tuple[SessionRegistry, MemoryReactorClock, list[str]]:
    from twisted.web.resource import Resource

    class Origin(Resource):
        isLeaf = True

        def render_GET(self, request: Any) -> bytes:  # noqa: N802
            return b"#EXTM3U\n"

    cfg = configmod.load(None, {"session-ports": f"{LO}-{LO + n - 1}", "session-idle-timeout": "600"})
    reactor = MemoryReactorClock()
    reactor.advance(1_700_000_000)
    reg = SessionRegistry(cfg, reactor, EventBus(), origin=Origin())
    rendered: list[str] = []
    reg.field_providers.append(lambda s: rendered.append(s.session_id) or {})
    for i in range(n):
        reg.get_or_create(f"p{i}")
    return reg, reactor, rendered


def _request(reg: SessionRegistry, reactor: MemoryReactorClock, index: int) -> None:
    proto = reactor.tcpServers[index][1].buildProtocol(None)
    proto.makeConnection(StringTransport())
    proto.dataReceived(b"GET /go-live/c/playlist_360p.m3u8 HTTP/1.1\r\nHost: x\r\n\r\n")


def test_a_busy_session_among_quiet_ones_is_the_one_serialised_again():
    reg, reactor, rendered = _registry(20)
    full = _Req()
    reg.feed.attach(full)
    rendered.clear()
    for _ in range(20):  # 2 s: one player requests every 100 ms, 19 are quiet
        _request(reg, reactor, 0)
        reactor.advance(0.1)
    busy = rendered.count("1")
    quiet = max(rendered.count(str(i)) for i in range(2, 21))
    assert busy >= 6, rendered  # every flush (at most every 250 ms) carries it fresh
    assert quiet <= 3, rendered  # refreshed once a second for its clock fields, no more
    # before: each flush rendered all 20 sessions (8 flushes in 2 s -> 160 renders)
    assert len(rendered) <= 80, len(rendered)
    reactor.advance(0.3)  # the throttled last change goes out
    # the wire is unchanged: full lists, revisions increasing
    events = [e for e in _events(full) if e["event"] == "sessions"]
    assert len(events) >= 6
    assert all(len(e["data"]["sessions"]) == 20 for e in events)
    assert [e["data"]["revision"] for e in events] == sorted({e["data"]["revision"] for e in events})
    assert events[-1]["data"]["sessions"][0]["all_requests_count"] == 20


def test_a_delta_client_gets_the_list_once_then_only_what_changed():
    reg, reactor, rendered = _registry(3)
    delta = _Req(delta=True)
    reg.feed.attach(delta)
    first = _events(delta)
    assert [e["event"] for e in first] == ["sessions"] and len(first[0]["data"]["sessions"]) == 3
    reactor.advance(1.5)  # quiet sessions: their clock fields refresh once a second
    reg.patch("2", {"segment_failure_type": "404"})
    reactor.advance(0)
    deltas = [e["data"] for e in _events(delta) if e["event"] == "sessions.delta"]
    last = deltas[-1]
    assert [s["session_id"] for s in last["changed"]] == ["2"] and last["removed"] == []
    assert last["changed"][0]["segment_failure_type"] == "404"
    reg.remove("3")
    reactor.advance(0)
    last = [e["data"] for e in _events(delta) if e["event"] == "sessions.delta"][-1]
    assert last["removed"] == ["3"] and last["revision"] > deltas[-1]["revision"]
    # and a full-list client connected at the same time still sees full lists
    full = _Req()
    reg.feed.attach(full)
    assert [s["session_id"] for s in _events(full)[0]["data"]["sessions"]] == ["1", "2"]


def test_nothing_is_tracked_or_rendered_while_nobody_listens():
    reg, reactor, rendered = _registry(5)
    rendered.clear()
    for _ in range(10):
        _request(reg, reactor, 1)
        reactor.advance(0.1)
    assert rendered == []
