"""SSE streams: framing, bounded buffers, keepalive and the throttled snapshot feed,
driven with a Clock and twisted.web's DummyRequest."""

from __future__ import annotations

import json

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.web.http_headers import Headers

from streamlab.push.sse import EventStream, SnapshotFeed, encode_event


class DummyRequest:
    """Just what an SSE client uses of a request (twisted's DummyRequest pulls producers in a loop)."""

    def __init__(self, _postpath=None) -> None:
        self.written: list[bytes] = []
        self.responseHeaders = Headers()
        self.code = 200
        self.producer = None
        self._finish: list[Deferred] = []
        self.finished = False
        self.aborted = False
        self.transport = self

    def setResponseCode(self, code):
        self.code = code

    def setHeader(self, name, value):
        self.responseHeaders.setRawHeaders(name, [value])

    def registerProducer(self, producer, streaming):
        self.producer = producer

    def unregisterProducer(self):
        self.producer = None

    def write(self, data):
        self.written.append(data)

    def notifyFinish(self):
        d = Deferred()
        self._finish.append(d)
        return d

    def finish(self):
        self.finished = True
        for d in self._finish:
            d.callback(None)

    def abortConnection(self):
        self.aborted = True
        self.connectionLost(Exception("aborted"))

    def connectionLost(self, reason):
        for d in self._finish:
            d.errback(reason)
        self._finish = []


def _events(request: DummyRequest) -> list[dict]:
    out = []
    text = b"".join(request.written).decode()
    for frame in text.split("\n\n"):
        lines = frame.split("\n")
        event = next((ln[7:] for ln in lines if ln.startswith("event: ")), None)
        data = "\n".join(ln[6:] for ln in lines if ln.startswith("data: "))
        if event:
            out.append({"event": event, "data": json.loads(data)})
    return out


def test_encode_event_multiline_and_json():
    assert encode_event("x", {"a": 1}) == b'event: x\ndata: {"a":1}\n\n'
    assert encode_event(None, "l1\nl2", 7) == b"id: 7\ndata: l1\ndata: l2\n\n"


def test_attach_headers_initial_and_publish():
    clock = Clock()
    stream = EventStream(clock)
    req = DummyRequest([b""])
    stream.attach(req, [encode_event("hello", {"n": 1})])
    assert req.responseHeaders.getRawHeaders(b"content-type")[0].startswith(b"text/event-stream")
    assert req.responseHeaders.getRawHeaders(b"x-accel-buffering") == [b"no"]
    stream.publish("tick", {"n": 2})
    assert [e["data"]["n"] for e in _events(req)] == [1, 2]


def test_keepalive_only_when_idle():
    clock = Clock()
    stream = EventStream(clock, keepalive=15)
    req = DummyRequest([b""])
    stream.attach(req)
    clock.advance(10)
    stream.publish("tick", {})
    clock.advance(6)  # 16 s after attach but only 6 s after the last write
    assert b": keepalive" not in b"".join(req.written)
    clock.advance(10)
    assert b"".join(req.written).count(b": keepalive") == 1
    clock.advance(15)
    assert b"".join(req.written).count(b": keepalive") == 2


def test_slow_client_is_dropped_not_buffered_forever():
    clock = Clock()
    stream = EventStream(clock, max_buffer=10_000)
    slow, fast = DummyRequest([b""]), DummyRequest([b""])
    stream.attach(slow)
    stream.attach(fast)
    slow_client = stream.clients[0]
    slow_client.pauseProducing()  # the transport says "full"
    for i in range(100):
        stream.publish("tick", {"i": i, "pad": "x" * 200})
    assert slow_client not in stream.clients
    assert slow.aborted
    assert len(stream.clients) == 1
    assert len(_events(fast)) == 100


def test_paused_client_gets_queue_on_resume():
    clock = Clock()
    stream = EventStream(clock)
    req = DummyRequest([b""])
    stream.attach(req)
    client = stream.clients[0]
    client.pauseProducing()
    stream.publish("a", {"i": 1})
    stream.publish("a", {"i": 2})
    assert _events(req) == []
    client.resumeProducing()
    assert [e["data"]["i"] for e in _events(req)] == [1, 2]


def test_disconnect_removes_client():
    clock = Clock()
    stream = EventStream(clock)
    req = DummyRequest([b""])
    stream.attach(req)
    req.connectionLost(Exception("gone"))
    assert stream.clients == []


def _feed(clock, items, active=lambda: True):
    stream = EventStream(clock)
    feed = SnapshotFeed(clock, stream, "sessions", "sessions", lambda: list(items), active)
    return stream, feed


def test_feed_full_list_on_connect_then_urgent_change_same_turn():
    clock = Clock()
    items = [{"session_id": "1"}]
    stream, feed = _feed(clock, items)
    req = DummyRequest([b""])
    feed.attach(req)
    first = _events(req)
    assert first[0]["event"] == "sessions" and first[0]["data"]["sessions"] == items
    items.append({"session_id": "2"})
    feed.changed(urgent=True)
    clock.advance(0)
    ev = _events(req)
    assert len(ev) == 2 and len(ev[1]["data"]["sessions"]) == 2
    assert ev[1]["data"]["revision"] > ev[0]["data"]["revision"]


def test_feed_throttles_metric_changes_to_250ms():
    clock = Clock()
    stream, feed = _feed(clock, [{"x": 1}])
    req = DummyRequest([b""])
    feed.attach(req)
    feed.changed(urgent=True)
    clock.advance(0)
    n = len(_events(req))
    for _ in range(10):
        feed.changed()
        clock.advance(0.02)
    assert len(_events(req)) == n  # 200 ms later: still coalesced
    clock.advance(0.06)
    assert len(_events(req)) == n + 1


def test_feed_heartbeat_every_second_while_active_only():
    clock = Clock()
    active = [True]
    stream, feed = _feed(clock, [{"x": 1}], lambda: active[0])
    req = DummyRequest([b""])
    feed.attach(req)
    for _ in range(5):
        clock.advance(1.0)
    assert len(_events(req)) == 6
    active[0] = False
    for _ in range(5):
        clock.advance(1.0)
    assert len(_events(req)) <= 7
