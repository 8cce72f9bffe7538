"""The goodput reader (acknowledged bytes from TCP_INFO) reads a port's sockets only
while something it wrote may still be unacknowledged."""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock

from streamlab import config as configmod
from streamlab.events import EventBus
from streamlab.proxy.registry import SessionRegistry
from streamlab.proxy.tcpinfo import TcpInfo
from streamlab.shaping import meter as meter_mod
from streamlab.shaping.service import ShapingService


class _Listener:
    def __init__(self, port: int, factory: Any) -> None:
        self.port, self.factory = port, factory

    def stopListening(self) -> None:  # noqa: N802 - twisted API
        pass


def test_settled_connections_are_not_read_until_bytes_are_written(tmp_path, monkeypatch):
    cfg = configmod.load(None, {"shaping-backend": "userspace", "session-ports": "31100-31101",
                                "media-dir": str(tmp_path / "m"), "state-dir": str(tmp_path / "s")})
    clock = Clock()
    clock.advance(1_700_000_000)
    bus = EventBus()
    registry = SessionRegistry(cfg, clock, bus, listen=lambda r, port, f, i: _Listener(port, f))
    svc = ShapingService(cfg, clock, clock=clock)
    registry.shaping = svc.attach(registry)
    svc.startService()
    try:
        session, _ = registry.get_or_create("p1")
        sh = svc.userspace.shaper(session.port)
        conn = object()
        sh.conns.add(conn)
        kernel = {"acked": 0, "unacked": 0}
        reads: list[Any] = []

        def fake_read(sock: Any) -> TcpInfo:
            reads.append(sock)
            return TcpInfo(rtt_us=1000, rttvar_us=10, rto_us=200_000, min_rtt_us=900,
                           bytes_acked=kernel["acked"], notsent_bytes=0, unacked=kernel["unacked"])

        monkeypatch.setattr(meter_mod, "read_tcp_info", fake_read)
        monkeypatch.setattr(meter_mod, "socket_of", lambda c: c)
        monkeypatch.setattr(meter_mod, "pending_user_bytes", lambda c: 0)

        # 1 s of a 1 Mbps transfer: segments in flight at every reading
        for _ in range(10):
            sh.bytes_out += 12_500
            kernel["acked"] += 12_500
            kernel["unacked"] = 3
            clock.advance(0.1)
        assert len(reads) == 10
        # the last bytes are acknowledged: one more reading sees it, then none while idle
        kernel["unacked"] = 0
        clock.advance(0.1)
        reads.clear()
        for _ in range(30):
            clock.advance(0.1)
        assert reads == []
        assert svc.meter.read_acked_bytes(session.port) == 125_000
        # goodput still falls while idle: the window slides over unchanged counters
        assert registry.to_json(session)["shaping_goodput_mbps"] < 0.5
        # a write: read again
        sh.bytes_out += 1000
        kernel["acked"] += 1000
        clock.advance(0.1)
        assert len(reads) == 1 and svc.meter.read_acked_bytes(session.port) == 126_000
    finally:
        svc.stopService()
