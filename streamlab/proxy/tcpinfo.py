"""TCP_INFO RTT sampling (Linux): read ``struct tcp_info`` of a socket and fold the
samples into 1 s windows.

:func:`read_tcp_info` does one ``getsockopt(IPPROTO_TCP, TCP_INFO)``; :class:`RttWindow`
is pure (samples in, window summary out) so it is unit-testable without sockets.
"""

from __future__ import annotations

import socket
import struct
import sys
from typing import TYPE_CHECKING, Any, NamedTuple

from twisted.internet.interfaces import IReadDescriptor
from zope.interface import implementer

if TYPE_CHECKING:
    from streamlab.interfaces import IDaemonReactor

# struct tcp_info (linux/tcp.h) up to tcpi_min_rtt: 8 u8, 24 u32, 4 u64, 4 u32.
_FMT = "=8B24I4Q4I"
_STRUCT = struct.Struct(_FMT)
_SIZE = _STRUCT.size
_TCP_INFO = getattr(socket, "TCP_INFO", 11)
_LINUX = sys.platform.startswith("linux")


class TcpInfo(NamedTuple):
    """The fields streamlab uses; times in microseconds.  (A tuple: the metering ticks
    build thousands a second.)"""

    rtt_us: int
    rttvar_us: int
    rto_us: int
    min_rtt_us: int
    bytes_acked: int
    notsent_bytes: int
    #: segments sent and not yet acknowledged (0: everything the kernel sent is acked)
    unacked: int = 0


def parse_tcp_info(raw: bytes) -> TcpInfo | None:
    """Unpack a ``struct tcp_info`` buffer (None when it is too short)."""
    if len(raw) < _SIZE:
        return None
    v = _STRUCT.unpack_from(raw)
    # v[8:32] the u32s (rto first, unacked 5th, rtt 16th), v[32:36] the u64s, v[36:40] the tail
    return TcpInfo(rtt_us=v[23], rttvar_us=v[24], rto_us=v[8], min_rtt_us=v[39],
                   bytes_acked=v[34], notsent_bytes=v[38], unacked=v[12])


def read_tcp_info(sock: socket.socket | Any) -> TcpInfo | None:
    """TCP_INFO of *sock*, or None (not Linux, closed socket, not TCP)."""
    if not _LINUX or sock is None:
        return None
    try:
        raw = sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, _SIZE)
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


def with_shaper_delay(fields: dict[str, Any], shaper_ms: float) -> dict[str, Any]:
    """The RTT fields a player's round trip shows: TCP_INFO's RTT plus the delay the
    userspace shaper adds (it holds requests in user space, where TCP cannot see it).

    ``client_rtt_ms`` / ``_max_ms`` / ``_min_ms`` include it; ``client_rtt_tcp_ms`` is the
    TCP figure alone and ``client_rtt_shaper_ms`` the added part, so a stall's cause shows.
    (Delay carried by the kernel — netem — is already in TCP_INFO.)"""
    out = dict(fields)
    added = round(max(0.0, float(shaper_ms or 0.0)), 3)
    out["client_rtt_tcp_ms"] = fields.get("client_rtt_ms", 0.0)
    out["client_rtt_shaper_ms"] = added
    if added:
        for key in ("client_rtt_ms", "client_rtt_max_ms", "client_rtt_min_ms"):
            out[key] = round(float(fields.get(key, 0.0)) + added, 3)
    return out


# --------------------------------------------------------------------------- ICMP echo

ICMP_ECHO_REQUEST = 8
ICMP_ECHO_REPLY = 0


def icmp_checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of *data*."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def echo_request(ident: int, seq: int, payload: bytes = b"streamlab-rtt") -> bytes:
    """An ICMP echo request packet (header + payload) with its checksum."""
    header = struct.pack("!BBHHH", ICMP_ECHO_REQUEST, 0, 0, ident & 0xFFFF, seq & 0xFFFF)
    csum = icmp_checksum(header + payload)
    return struct.pack("!BBHHH", ICMP_ECHO_REQUEST, 0, csum, ident & 0xFFFF, seq & 0xFFFF) + payload


def parse_echo_reply(packet: bytes, ident: int) -> int | None:
    """The sequence number of an echo reply to *ident* in a raw IPv4 *packet*, else None."""
    if len(packet) < 20:
        return None
    ihl = (packet[0] & 0x0F) * 4
    icmp = packet[ihl:ihl + 8]
    if len(icmp) < 8:
        return None
    kind, _code, _csum, rid, seq = struct.unpack("!BBHHH", icmp)
    if kind != ICMP_ECHO_REPLY or rid != (ident & 0xFFFF):
        return None
    return seq


@implementer(IReadDescriptor)
class IcmpPinger:
    """1 Hz ICMP echo to player addresses over a raw socket, where permitted.

    ``available`` is False without CAP_NET_RAW (then ``client_path_ping_rtt_ms`` stays
    absent).  ``ping(ip)`` sends one echo; replies are read by the reactor; ``rtt_ms(ip,
    now)`` is the latest round trip, or None when there was no reply in *max_age* s.
    IPv4 only.
    """

    def __init__(self, reactor: IDaemonReactor, max_age: float = 3.0) -> None:
        import os

        self._reactor = reactor
        self._ident = os.getpid() & 0xFFFF
        self._seq = 0
        self._sent: dict[int, tuple[str, float]] = {}
        self._rtt: dict[str, tuple[float, float]] = {}
        self.max_age = max_age
        self.available = False
        self._sock: Any = None

    def start(self) -> None:
        """Open the raw socket and read replies on the reactor (where permitted; no-op
        when already open).  Not in ``__init__``: building the daemon opens nothing."""
        import socket as _socket

        if self._sock is not None:
            return
        try:
            sock = _socket.socket(_socket.AF_INET, _socket.SOCK_RAW, _socket.IPPROTO_ICMP)
            sock.setblocking(False)
        except (OSError, AttributeError):
            return
        self._sock = sock
        self.available = True
        self._reactor.addReader(self)

    # IReadDescriptor
    def fileno(self) -> int:
        return self._sock.fileno() if self._sock is not None else -1

    def logPrefix(self) -> str:  # noqa: N802 - twisted API
        return "IcmpPinger"

    def connectionLost(self, reason: Any) -> None:  # noqa: N802 - twisted API
        self.close()

    def doRead(self) -> None:  # noqa: N802 - twisted API
        now = self._reactor.seconds()
        for _ in range(64):
            try:
                packet, _addr = self._sock.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            seq = parse_echo_reply(packet, self._ident)
            if seq is None or seq not in self._sent:
                continue
            ip, sent_at = self._sent.pop(seq)
            self._rtt[ip] = (round((now - sent_at) * 1000.0, 3), now)

    def ping(self, ip: str) -> None:
        """Send one echo request to *ip* (ignored when unavailable or not IPv4)."""
        if not self.available or not ip or ":" in ip:
            return
        self._seq = (self._seq + 1) & 0xFFFF
        now = self._reactor.seconds()
        self._sent[self._seq] = (ip, now)
        if len(self._sent) > 1024:  # forget unanswered pings
            for key in list(self._sent)[:512]:
                del self._sent[key]
        try:
            self._sock.sendto(echo_request(self._ident, self._seq), (ip, 0))
        except OSError:
            self._sent.pop(self._seq, None)

    def rtt_ms(self, ip: str, now: float) -> float | None:
        """The latest echo round trip to *ip* in ms, if fresh."""
        got = self._rtt.get(ip)
        if got is None or now - got[1] > self.max_age:
            return None
        return got[0]

    def close(self) -> None:
        """Stop reading and close the socket."""
        if self._sock is not None:
            try:
                self._reactor.removeReader(self)
            except Exception:  # noqa: BLE001 - reactor already stopped
                pass
            self._sock.close()
            self._sock = None
        self.available = False
