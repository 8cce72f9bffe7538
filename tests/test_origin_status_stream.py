"""``GET /go-live/api/status/stream``: the status body as SSE, through a Site on a
StringTransport with a Clock (initial event, worker creation/removal, 1 s heartbeat while
workers exist, keepalive when idle, no per-request work)."""

from __future__ import annotations

import json
import re

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.web.resource import Resource
from twisted.web.server import Site

from streamlab.live.origin import OriginResource

EVENT = re.compile(rb"event: (\w+)\ndata: (.*)\n\n")


class NoLibrary:
    def get(self, name):
        return None

    def item_dir(self, name):
        return "/nonexistent"


class Env:
    def __init__(self, idle: float = 60) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.origin = OriginResource(NoLibrary(), self.clock, epoch=0.0, window=36, idle_timeout=idle)
        top = Resource()
        top.putChild(b"go-live", self.origin)
        self.site = Site(top, reactor=self.clock)
        self.site.timeOut = None

    def open(self, path: str = "/go-live/api/status/stream", method: str = "GET") -> StringTransport:
        channel = self.site.buildProtocol(None)
        transport = StringTransport()
        channel.makeConnection(transport)
        channel.dataReceived(f"{method} {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
        return transport


def events(transport: StringTransport) -> list[dict]:
    out = []
    for name, data in EVENT.findall(transport.value()):
        assert name == b"status"
        out.append(json.loads(data))
    return out


def test_initial_event_same_body_as_status():
    env = Env()
    env.origin.workers.touch("clip", "ll_hls")
    t = env.open()
    head = t.value().split(b"\r\n\r\n")[0].lower()
    assert head.startswith(b"http/1.1 200") and b"content-type: text/event-stream" in head
    [first] = events(t)
    plain = env.open("/go-live/api/status").value().split(b"\r\n\r\n", 1)[1]
    body = json.loads(plain)
    assert first["workers"] == body["workers"] and first["workers"][0]["content"] == "clip"
    assert first["revision"] == 1


def test_worker_creation_heartbeat_removal_then_keepalive():
    env = Env(idle=5)
    t = env.open()
    assert events(t) == [{"workers": [], "revision": 1}]
    env.clock.advance(3)  # idle and no worker: nothing but (later) keepalives
    assert len(events(t)) == 1
    env.origin.workers.touch("clip", "ll_hls")  # what a request does
    env.clock.advance(0)
    got = events(t)
    assert len(got) == 2 and [w["id"] for w in got[1]["workers"]] == ["clip"]
    # requests on the hot path do not emit: only the 1 s heartbeat does
    for _ in range(100):
        env.origin.workers.touch("clip", "media")
    env.clock.advance(0.5)
    assert len(events(t)) == 2
    env.clock.advance(0.5)
    got = events(t)
    assert len(got) == 3 and got[2]["workers"][0]["requests"]["media"] == 100
    env.clock.pump([1.0, 1.0])
    assert len(events(t)) == 5  # one per second while the worker exists
    env.clock.pump([1.0, 1.0, 0.1])  # idle timeout (5 s) passes: the worker goes, one last empty list
    got = events(t)
    assert got[-1]["workers"] == []
    n = len(got)
    env.clock.advance(10)
    assert len(events(t)) == n  # no worker: no heartbeat
    assert b": keepalive" not in t.value()
    env.clock.advance(5.1)  # 15 s after the last event
    assert t.value().count(b": keepalive") == 1  # but the connection is kept alive
    env.clock.advance(15)
    assert t.value().count(b": keepalive") == 2


def test_stop_worker_pushes_and_shutdown_finishes():
    env = Env()
    env.origin.workers.touch("clip", "ll_hls")
    t = env.open()
    env.clock.advance(0.2)
    env.origin.workers.stop("clip")
    env.clock.advance(1)
    assert events(t)[-1]["workers"] == []
    post = env.open(method="POST")
    assert post.value().startswith(b"HTTP/1.1 405")
    env.origin.shutdown()
    assert env.origin.status_stream.clients == []
    assert env.clock.getDelayedCalls() == []
