"""TCP_INFO RTT sampling (Linux): read ``struct tcp_info`` of a socket and fold the
samples into 1 s windows.

:func:`read_tcp_info` does one ``getsockopt(IPPROTO_TCP, TCP_INFO)``; :class:`RttWindow`
is pure (samples in, window summary out) so it is unit-testable without sockets.
"""

from __future__ import annotations

import socket
import struct
import sys
from dataclasses import dataclass
from typing import Any

# struct tcp_info (linux/tcp.h) up to tcpi_min_rtt: 8 u8, 24 u32, 4 u64, 4 u32.
_FMT = "=8B24I4Q4I"
_SIZE = struct.calcsize(_FMT)
_TCP_INFO = getattr(socket, "TCP_INFO", 11)


@dataclass(frozen=True)
class TcpInfo:
    """The fields streamlab uses; times in microseconds."""

    rtt_us: int
    rttvar_us: int
    rto_us: int
    min_rtt_us: int
    bytes_acked: int
    notsent_bytes: int


def parse_tcp_info(raw: bytes) -> TcpInfo | None:
    """Unpack a ``struct tcp_info`` buffer (None when it is too short)."""
    if len(raw) < _SIZE:
        return None
    v = struct.unpack_from(_FMT, raw)
    ints = v[8:32]
    quads = v[32:36]
    tail = v[36:40]
    return TcpInfo(rtt_us=ints[15], rttvar_us=ints[16], rto_us=ints[0], min_rtt_us=tail[3],
                   bytes_acked=quads[2], notsent_bytes=tail[2])


def read_tcp_info(sock: socket.socket | Any) -> TcpInfo | None:
    """TCP_INFO of *sock*, or None (not Linux, closed socket, not TCP)."""
    if not sys.platform.startswith("linux") or sock is None:
        return None
    try:
        raw = sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, 256)
    except (OSError, ValueError):
        return None
    return parse_tcp_info(raw)


class RttWindow:
    """Samples of the session's latest connection folded into 1 s windows.

    ``add(info)`` every 100 ms; ``roll()`` once a second publishes the window:
    avg/max/min of ``tcpi_rtt``, last rttvar/rto, lifetime min.  A window without fresh
    samples keeps the previous values and sets ``stale``.
    """

    def __init__(self) -> None:
        self._samples: list[TcpInfo] = []
        self.fields: dict[str, Any] = {
            "client_rtt_ms": 0.0, "client_rtt_max_ms": 0.0, "client_rtt_min_ms": 0.0,
            "client_rtt_min_lifetime_ms": 0.0, "client_rtt_var_ms": 0.0, "client_rto_ms": 0.0,
            "client_rtt_stale": True,
        }

    def add(self, info: TcpInfo) -> None:
        """One sample."""
        self._samples.append(info)

    def roll(self) -> dict[str, Any]:
        """Close the current window; returns the fields for the session JSON."""
        samples, self._samples = self._samples, []
        if not samples:
            self.fields["client_rtt_stale"] = True
            return self.fields
        rtts = [s.rtt_us / 1000.0 for s in samples]
        last = samples[-1]
        self.fields = {
            "client_rtt_ms": round(sum(rtts) / len(rtts), 3),
            "client_rtt_max_ms": round(max(rtts), 3),
            "client_rtt_min_ms": round(min(rtts), 3),
            "client_rtt_min_lifetime_ms": round(last.min_rtt_us / 1000.0, 3),
            "client_rtt_var_ms": round(last.rttvar_us / 1000.0, 3),
            "client_rto_ms": round(last.rto_us / 1000.0, 3),
            "client_rtt_stale": False,
        }
        return self.fields
