"""What a player's TCP/TLS stack sees on one request, for the fault matrix.

A raw socket (optionally made inside a network namespace) carries the request; TLS, when
used, runs over memory BIOs so every layer stays visible: application bytes, the TLS
close_notify, the TCP FIN, a TCP reset.  The client's own ``TCP_INFO`` tells when a
connection was cut while the client was not reading (its state leaves ESTABLISHED) and
when data last arrived (``tcpi_last_data_recv``).
"""

from __future__ import annotations

import socket
import ssl
import struct
import time
from dataclasses import dataclass, field

from streamlab.testing.daemon import ns_connect
from tests.integration.sessions_helpers import RawResponseView

TCP_ESTABLISHED = 1


@dataclass
class Seen(RawResponseView):
    """One exchange as the client saw it; times in seconds from sending the request."""

    data: bytes = b""
    close_notify: float | None = None
    fin: float | None = None
    reset: float | None = None
    timeout: float | None = None
    first_byte: float | None = None
    events: list[tuple[str, float, int]] = field(default_factory=list)
    cut_at: float | None = None          # idle case: state left ESTABLISHED
    last_data_at: float | None = None    # idle case: last data segment arrived
    wire_bytes_received: int = 0         # tcpi_bytes_received (TLS: ciphertext)

    @property
    def end(self) -> tuple[str, float | None]:
        """How the connection ended (``reset`` / ``fin`` / ``close_notify`` / ``timeout``) and when."""
        for name in ("reset", "close_notify", "fin", "timeout"):
            value = getattr(self, name)
            if value is not None:
                return name, value
        return "open", None



def tcp_state(sock: socket.socket) -> tuple[int, int, int]:
    """(tcpi_state, tcpi_last_data_recv ms, tcpi_bytes_received) of *sock*."""
    raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    state = raw[0]
    ints = struct.unpack_from("=24I", raw, 8)
    quads = struct.unpack_from("=4Q", raw, 8 + 24 * 4)
    return state, ints[11], quads[3]


class Client:
    """One HTTP/1.1 connection (plain or TLS) to a session port."""

    def __init__(self, host: str, port: int, context: ssl.SSLContext | None = None,
                 netns: str | None = None, rcvbuf: int | None = None) -> None:
        self.sock = ns_connect(host, port, netns, timeout=10.0, rcvbuf=rcvbuf)
        self.tls = None
        if context is not None:
            self._in, self._out = ssl.MemoryBIO(), ssl.MemoryBIO()
            self.tls = context.wrap_bio(self._in, self._out, server_hostname=host)
            while True:
                try:
                    self.tls.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    self._flush()
                    chunk = self.sock.recv(65536)
                    if not chunk:
                        raise ConnectionError("closed during the TLS handshake") from None
                    self._in.write(chunk)
            self._flush()

    def _flush(self) -> None:
        if self.tls is not None and self._out.pending:
            self.sock.sendall(self._out.read())

    def send(self, data: bytes) -> None:
        if self.tls is None:
            self.sock.sendall(data)
        else:
            self.tls.write(data)
            self._flush()

    def get(self, path: str) -> float:
        """Send a GET; returns the monotonic time it was sent."""
        self.send(f"GET {path} HTTP/1.1\r\nHost: player\r\n\r\n".encode())
        return time.monotonic()

    def _feed(self, chunk: bytes, seen: Seen, t0: float) -> bytes:
        """Application bytes in *chunk* (TLS decrypted); notes a close_notify."""
        if self.tls is None:
            return chunk
        self._in.write(chunk)
        out = b""
        while True:
            try:
                part = self.tls.read(65536)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                part = b""
            if not part:
                if seen.close_notify is None:
                    seen.close_notify = time.monotonic() - t0
                break
            out += part
        return out

    def read(self, t0: float, seconds: float, seen: Seen | None = None, limit: int | None = None,
             chunk: int = 65536) -> Seen:
        """Read until the connection ends (reset / FIN), *limit* application bytes, or
        *seconds* after *t0* (then ``timeout``)."""
        seen = seen or Seen()
        while True:
            left = t0 + seconds - time.monotonic()
            if left <= 0:
                seen.timeout = time.monotonic() - t0
                return seen
            self.sock.settimeout(left)
            try:
                raw = self.sock.recv(chunk)
            except ConnectionResetError:
                seen.reset = time.monotonic() - t0
                return seen
            except TimeoutError:
                seen.timeout = time.monotonic() - t0
                return seen
            now = time.monotonic() - t0
            if not raw:
                seen.fin = now
                seen.events.append(("fin", now, 0))
                return seen
            data = self._feed(raw, seen, t0)
            if data and seen.first_byte is None:
                seen.first_byte = now
            seen.data += data
            seen.events.append(("data", now, len(data)))
            if limit is not None and len(seen.data) >= limit:
                return seen

    def wait_cut(self, t0: float, seconds: float, seen: Seen) -> Seen:
        """Without reading: poll TCP_INFO until the connection leaves ESTABLISHED (the
        server cut it); note when that happened and when data last arrived before."""
        deadline = t0 + seconds
        last_data = None
        while time.monotonic() < deadline:
            state, last_recv_ms, received = tcp_state(self.sock)
            now = time.monotonic()
            seen.wire_bytes_received = received
            if state != TCP_ESTABLISHED:
                seen.cut_at = now - t0
                seen.last_data_at = last_data
                return seen
            last_data = now - last_recv_ms / 1000.0 - t0
            time.sleep(0.005)
        seen.timeout = time.monotonic() - t0
        return seen

    def close(self) -> None:
        self.sock.close()
