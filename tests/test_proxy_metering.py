"""The per-session 100 ms tick: TCP_INFO only where a connection is open and at the rate a
consumer needs; one ICMP ping per player address per second."""

from __future__ import annotations

from typing import Any

from twisted.internet.testing import MemoryReactorClock

from streamlab import config as configmod
from streamlab.events import EventBus
from streamlab.proxy import metering as metering_mod
from streamlab.proxy.registry import SessionRegistry
from streamlab.proxy.tcpinfo import TcpInfo

LO = 41100


class _Pinger:
    available = True

    def __init__(self) -> None:
        self.sent: list[str] = []

    def ping(self, ip: str) -> None:
        self.sent.append(ip)

    def rtt_ms(self, ip: str, now: float) -> float | None:
        return 1.5

    def close(self) -> None:
        pass


def _setup(monkeypatch: Any, sessions: int = 3) -> tuple[SessionRegistry, MemoryReactorClock, list, _Pinger]:
    cfg = configmod.load(None, {"session-ports": f"{LO}-{LO + sessions - 1}"})
    reactor = MemoryReactorClock()
    reactor.advance(1_700_000_000)
    pinger = _Pinger()
    reg = SessionRegistry(cfg, reactor, EventBus(), pinger=pinger)
    reads: list = []

    def fake_read(sock: Any) -> TcpInfo:
        reads.append(sock)
        return TcpInfo(rtt_us=2000 + 100 * len(reads), rttvar_us=100, rto_us=201_000, min_rtt_us=1500,
                       bytes_acked=0, notsent_bytes=0)

    monkeypatch.setattr(metering_mod, "read_tcp_info", fake_read)
    monkeypatch.setattr(metering_mod, "socket_of", lambda transport: transport)
    return reg, reactor, reads, pinger


class _Channel:
    def __init__(self, transport: str) -> None:
        self.transport = transport


def _connect(reg: SessionRegistry, player: str) -> Any:
    session = reg.get_or_create(player)[0]
    channel = _Channel(f"sock-{player}")
    session.player_ip = "10.0.0.7"
    reg.exchange(session).connection_made(channel)
    return session


def test_unwatched_sessions_are_sampled_once_a_second_and_idle_ones_never(monkeypatch):
    reg, reactor, reads, pinger = _setup(monkeypatch)
    a = _connect(reg, "a")
    b = _connect(reg, "b")
    idle = reg.get_or_create("idle")[0]  # no connection: nothing to read
    idle.player_ip = "10.0.0.9"
    for _ in range(20):
        reactor.advance(0.1)
    assert sorted(reads) == ["sock-a", "sock-a", "sock-b", "sock-b"]  # 2 s: one read each per second
    for s in (a, b):
        body = reg.to_json(s)
        assert body["client_rtt_stale"] is False and body["client_rtt_ms"] > 2
    assert reg.to_json(idle)["client_rtt_stale"] is True
    # both sessions share one player address: one echo a second, none to the idle one
    assert pinger.sent == ["10.0.0.7", "10.0.0.7"]
    assert reg.to_json(a)["client_path_ping_rtt_ms"] == 1.5


def test_a_live_watcher_gets_ten_samples_a_second(monkeypatch):
    reg, reactor, reads, _ = _setup(monkeypatch, sessions=1)
    a = _connect(reg, "a")
    reg.feed.stream.clients.append(object())  # a dashboard on the sessions SSE stream
    try:
        for _ in range(10):
            reactor.advance(0.1)
    finally:
        reg.feed.stream.clients.clear()
    assert len(reads) == 10
    body = reg.to_json(a)
    assert body["client_rtt_max_ms"] > body["client_rtt_min_ms"]  # a real window, not one sample
