"""The composition root: build() wires named children and opens nothing."""

from __future__ import annotations

import os

import pytest
from twisted.internet.testing import MemoryReactorClock

from streamlab import config as configmod
from streamlab.proxy.tcpinfo import IcmpPinger
from streamlab.tap import build

NAMES = {"db", "library", "origin", "upstreams", "sources", "uploads", "discovery", "jobs", "jobs-feed",
         "setup", "shaping", "sessions", "main-listener", "graceful-stop"}


@pytest.fixture
def built(tmp_path):
    cfg = configmod.load(None, {"media-dir": str(tmp_path / "m"), "state-dir": str(tmp_path / "s"),
                                "session-ports": "44100-44109"})
    configmod.check_paths(cfg)
    reactor = MemoryReactorClock()
    svc = build(cfg, reactor)
    yield svc, reactor
    svc.sessions.registry.stop()


def test_build_opens_no_socket_and_reads_nothing(built, tmp_path):
    svc, reactor = built
    assert reactor.readers == set() and reactor.writers == set()  # the ICMP pinger opened no raw socket
    assert reactor.tcpServers == [] and reactor.sslServers == [] and reactor.tcpClients == []
    assert reactor.getDelayedCalls() == []  # no timer either: they start with their services
    assert [list((tmp_path / d).iterdir()) for d in ("m", "s")] == [[], []]  # no database, no files yet
    assert not svc.running


def test_subsystems_are_named_children_and_attributes(built):
    svc, _ = built
    assert NAMES <= set(svc.namedServices)
    assert not hasattr(svc, "components")
    for name in ("origin", "jobs", "shaping", "sessions", "graceful_stop", "main_listener"):
        assert getattr(svc, name) is svc.getServiceNamed(name.replace("_", "-"))


def test_sessions_get_the_origin_resource_and_inflight_directly(built):
    svc, _ = built
    registry = svc.sessions.registry
    assert registry.origin is svc.origin.resource  # not a lambda evaluated per request
    assert registry.inflight is svc.graceful_stop.inflight


def test_the_pinger_opens_its_raw_socket_only_when_started():
    reactor = MemoryReactorClock()
    pinger = IcmpPinger(reactor)
    assert reactor.readers == set() and not pinger.available
    pinger.start()
    if not pinger.available:
        pytest.skip(f"no raw ICMP socket for uid {os.getuid()} (needs CAP_NET_RAW): start() is a no-op")
    assert reactor.readers == {pinger}
    pinger.start()  # idempotent
    assert reactor.readers == {pinger}
    pinger.close()
    assert reactor.readers == set() and not pinger.available
