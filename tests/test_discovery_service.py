"""Discovery announce loop: payload, coalescing, backoff, persistent server id (Clock + StubTreq)."""

from __future__ import annotations

import json
import os

import pytest
from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from streamlab import config as configmod
from streamlab.discovery import core
from streamlab.discovery.service import DiscoveryService, load_or_create_server_id


class Rendezvous(Resource):
    """A fake rendezvous: records announces, answers with ``status`` or holds them."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.bodies: list[dict] = []
        self.paths: list[bytes] = []
        self.status = 200
        self.hold = False
        self.held: list = []

    def render_POST(self, request):
        self.paths.append(request.path)
        self.bodies.append(json.loads(request.content.read()))
        if self.hold:
            self.held.append(request)
            return NOT_DONE_YET
        request.setResponseCode(self.status)
        return b"{}"


def make(tmp_path, **disc):
    values = {"rendezvous-url": "http://rv.example", "announce-url": "http://lab.example:30000",
              "announce-label": "lab box", "announce-interval": "3600",
              "state-dir": str(tmp_path / "state"), "media-dir": str(tmp_path / "media")}
    values.update(disc)
    cfg = configmod.load(None, values)
    clock = Clock()
    rv = Rendezvous()
    stub = StubTreq(rv)
    svc = DiscoveryService(cfg, clock, http=stub)
    return svc, clock, rv, stub


def step(clock, stub, seconds=0.0):
    clock.advance(seconds)
    stub.flush()


def test_announces_at_start_then_every_interval(tmp_path):
    svc, clock, rv, stub = make(tmp_path)
    svc.startService()
    step(clock, stub)
    assert rv.paths == [b"/announce"]
    assert rv.bodies == [{"server_id": svc.server_id, "url": "http://lab.example:30000", "label": "lab box"}]
    step(clock, stub, 3599)
    assert len(rv.bodies) == 1
    step(clock, stub, 1)
    assert len(rv.bodies) == 2
    svc.stopService()
    step(clock, stub, 10000)
    assert len(rv.bodies) == 2
    assert clock.getDelayedCalls() == []


def test_failures_back_off_exponentially_then_recover(tmp_path):
    svc, clock, rv, stub = make(tmp_path)
    rv.status = 503
    svc.startService()
    step(clock, stub)
    assert len(rv.bodies) == 1 and svc.failures == 1 and svc.last_error == "HTTP 503"
    gaps = []
    for _ in range(4):
        (call,) = clock.getDelayedCalls()
        gaps.append(call.getTime() - clock.seconds())
        step(clock, stub, gaps[-1])
    assert gaps == [5, 10, 20, 40]
    assert len(rv.bodies) == 5
    rv.status = 204
    (call,) = clock.getDelayedCalls()
    step(clock, stub, call.getTime() - clock.seconds())
    assert svc.failures == 0 and svc.last_error is None
    (call,) = clock.getDelayedCalls()
    assert call.getTime() - clock.seconds() == 3600
    svc.stopService()


def test_announce_now_is_coalesced_with_the_pending_one(tmp_path):
    svc, clock, rv, stub = make(tmp_path)
    rv.hold = True
    svc.startService()
    step(clock, stub)
    assert len(rv.bodies) == 1
    results = [svc.announce_now(), svc.announce_now()]
    stub.flush()
    assert len(rv.bodies) == 1  # joined the request in flight
    outcomes = []
    for d in results:
        d.addCallback(outcomes.append)
    request = rv.held.pop()
    request.setResponseCode(200)
    request.write(b"{}")
    request.finish()
    stub.flush()
    assert outcomes == [True, True]
    # with nothing in flight, announce-now replaces the scheduled one instead of adding one
    rv.hold = False
    done = []
    svc.announce_now().addCallback(done.append)
    stub.flush()
    assert done == [True] and len(rv.bodies) == 2
    assert len(clock.getDelayedCalls()) == 1
    svc.stopService()


def test_unreachable_rendezvous_is_never_fatal(tmp_path):
    svc, clock, rv, stub = make(tmp_path)

    class Boom:
        def post(self, *a, **kw):
            raise ConnectionRefusedError("nope")

    svc.http = Boom()
    svc.startService()
    step(clock, stub)
    assert svc.failures == 1 and "nope" in svc.last_error
    assert len(clock.getDelayedCalls()) == 1
    svc.stopService()


def test_disabled_without_urls(tmp_path):
    svc, clock, rv, stub = make(tmp_path, **{"rendezvous-url": "", "announce-url": ""})
    svc.startService()
    step(clock, stub, 100000)
    assert rv.bodies == [] and svc.enabled is False
    done = []
    svc.announce_now().addCallback(done.append)
    assert done == [False]
    assert svc.info()["url"] == ""


def test_server_id_generated_once_and_kept(tmp_path):
    state = str(tmp_path / "s")
    first = load_or_create_server_id(state)
    assert core.valid_server_id(first)
    assert load_or_create_server_id(state) == first
    assert open(os.path.join(state, "server_id")).read().strip() == first
    assert load_or_create_server_id(state, "fixed-id") == "fixed-id"


def test_backoff_is_capped():
    assert core.backoff_delay(1, 3600) == 5
    assert core.backoff_delay(30, 3600) == core.BACKOFF_CAP
    assert core.backoff_delay(3, 12) == 12


def test_request_timeout_counts_as_failure(tmp_path):
    svc, clock, rv, stub = make(tmp_path)
    rv.hold = True  # the rendezvous never answers
    svc.startService()
    step(clock, stub)
    assert len(rv.bodies) == 1 and svc.failures == 0
    step(clock, stub, 9.9)
    assert svc.failures == 0
    step(clock, stub, 0.2)  # 10 s request timeout
    assert svc.failures == 1 and svc.last_error
    (call,) = clock.getDelayedCalls()
    assert call.getTime() - clock.seconds() == pytest.approx(5, abs=0.2)
    svc.stopService()


def test_default_client_connects_through_the_injected_reactor(tmp_path):
    """Without a test client the announce is a real HTTP request made on the reactor the
    service was given (no global reactor, no process-wide connection pool)."""
    from twisted.internet.testing import MemoryReactorClock

    cfg = configmod.load(None, {"rendezvous-url": "http://127.0.0.1:39999", "announce-url": "http://lab:1",
                                "state-dir": str(tmp_path / "state"), "media-dir": str(tmp_path / "media")})
    reactor = MemoryReactorClock()
    svc = DiscoveryService(cfg, reactor)
    svc.startService()
    try:
        reactor.advance(0)
        assert [(host, port) for host, port, *_ in reactor.tcpClients] == [("127.0.0.1", 39999)]
    finally:
        svc.stopService()
