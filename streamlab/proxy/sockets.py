"""Socket-level mechanics of the fault layer: real TCP resets, hangs, delayed FINs,
and how much of what we wrote is still waiting to leave the host.

Everything here acts on a Twisted transport (``ITCPTransport``-like, possibly wrapped by
a ProtocolWrapper or TLS); time comes from the reactor passed in.
"""

from __future__ import annotations

import fcntl
import socket
import struct
import termios
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

log = Logger()

_LINGER_ZERO = struct.pack("ii", 1, 0)
_SIOCOUTQ = getattr(termios, "TIOCOUTQ", 0x5411)


def _lowest(transport: Any) -> Any:
    """The TCP transport under TLS (TLSMemoryBIOProtocol) and other protocol wrappers."""
    for _ in range(4):
        if getattr(transport, "wrappedProtocol", None) is None:
            break
        below = getattr(transport, "transport", None)
        if below is None:
            break
        transport = below
    return transport


def _handle(transport: Any) -> socket.socket | None:
    transport = _lowest(transport)
    try:
        handle = transport.getHandle()
    except Exception:  # noqa: BLE001 - wrapped or memory transports have none
        return None
    # TLS transports hand back the TLS connection; the socket is below it.
    for _ in range(3):
        if isinstance(handle, socket.socket):
            return handle
        inner = getattr(handle, "getHandle", None)
        if inner is None:
            return None
        try:
            handle = inner()
        except Exception:  # noqa: BLE001
            return None
    return handle if isinstance(handle, socket.socket) else None


def socket_of(transport: Any) -> socket.socket | None:
    """The OS socket under *transport*, or None (memory transports, closed sockets)."""
    sock = _handle(transport)
    if sock is None:
        return None
    try:
        if sock.fileno() < 0:
            return None
    except OSError:
        return None
    return sock


def reset(transport: Any) -> None:
    """Close with a real TCP RST: SO_LINGER {on, 0} then abort (buffered data is dropped)."""
    sock = socket_of(transport)
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)
        except OSError:
            pass
    # under TLS, abort the TCP connection itself: the TLS layer's abort would send a
    # close_notify first, and the player would see an orderly end instead of a reset
    abort = getattr(_lowest(transport), "abortConnection", None)
    if abort is not None:
        abort()
    else:
        transport.loseConnection()


def pending_user_bytes(transport: Any) -> int:
    """Bytes written but still held in user space on their way to the kernel socket.

    Every layer of the wrapper chain counts: the userspace shaper's queue (a layer with a
    ``buffered`` property), TLS's aggregated writes and pre-handshake buffer, and
    Twisted's own write buffer.  None of it has left for the client yet.
    """
    total = 0
    t = transport
    for _ in range(6):
        attrs = getattr(t, "__dict__", None)
        if attrs is None:
            break
        if isinstance(getattr(type(t), "buffered", None), property):
            total += int(t.buffered)
        aggregator = attrs.get("_aggregator")
        if aggregator is not None:
            total += sum(len(b) for b in getattr(aggregator, "_buffer", ()))
        app = attrs.get("_appSendBuffer")
        if app:
            total += sum(len(b) for b in app)
        if "dataBuffer" in attrs:
            offset = getattr(t, "offset", 0)
            temp = getattr(t, "_tempDataLen", 0)
            return total + max(0, len(attrs["dataBuffer"]) - offset) + temp
        inner = attrs.get("transport")
        if inner is None or inner is t:
            break
        t = inner
    return total


def shaper_of(transport: Any) -> Any:
    """The userspace shaper's protocol in *transport*'s chain (it carries ``held_for``),
    or None when there is none; fixed for the life of a connection."""
    t = transport
    for _ in range(6):
        attrs = getattr(t, "__dict__", None)
        if attrs is None:
            break
        if "held_for" in attrs:
            return t
        t = attrs.get("transport")
        if t is None:
            break
    return None



def kernel_unsent_bytes(transport: Any) -> int:
    """Bytes in the kernel send queue not yet acknowledged by the peer (SIOCOUTQ), 0 if unknown."""
    sock = socket_of(transport)
    if sock is None:
        return 0
    try:
        raw = fcntl.ioctl(sock.fileno(), _SIOCOUTQ, b"\0\0\0\0")
    except OSError:
        return 0
    return struct.unpack("i", raw)[0]


def pending_bytes(transport: Any) -> int:
    """Everything written but not yet acknowledged by the client (user space + kernel)."""
    return pending_user_bytes(transport) + kernel_unsent_bytes(transport)


def kernel_not_sent_bytes(transport: Any) -> int:
    """Bytes in the kernel's send queue that TCP has not transmitted yet (TCP_INFO
    ``tcpi_notsent_bytes``; SIOCOUTQ where that is unknown).  A reset discards them;
    bytes already transmitted (in flight, or queued in a qdisc such as the kernel
    shaper's htb class) still reach the client ahead of the reset."""
    from streamlab.proxy.tcpinfo import read_tcp_info

    sock = socket_of(transport)
    if sock is None:
        return 0
    info = read_tcp_info(sock)
    if info is None:
        return kernel_unsent_bytes(transport)
    return info.notsent_bytes


def acked_bytes(transport: Any) -> int | None:
    """Bytes of this connection the client's TCP has acknowledged (TCP_INFO
    ``tcpi_bytes_acked``), or None where that is unknown (memory transports, not Linux).

    It only grows while the client takes data: a client that stops reading closes its
    receive window and the count stands still, whatever is queued in front of it."""
    from streamlab.proxy.tcpinfo import read_tcp_info

    sock = socket_of(transport)
    if sock is None:
        return None
    info = read_tcp_info(sock)
    return None if info is None else info.bytes_acked


class SocketAction:
    """Carries out ``reset`` / ``hang`` / ``delayed`` on a connection.

    ``reset`` with *drain* waits (polling every 10 ms, at most *drain_limit* seconds) until
    what was already written has been acknowledged, then *grace* more seconds, so the
    client really reads the headers / the first body bytes before the RST (a RST makes the
    peer's kernel discard data the application has not read yet).  ``hang`` holds the
    connection open *hang_seconds* and then sends a FIN; ``delayed`` sends the FIN after
    *delay_seconds*.
    """

    def __init__(self, clock: IReactorTime, transport: Any, action: str, *, hang_seconds: float,
                 delay_seconds: float, drain: bool, drain_limit: float = 5.0, grace: float = 0.15,
                 on_done: Callable[[], None] | None = None) -> None:
        self._clock = clock
        self._transport = transport
        self.action = action
        self._hang = hang_seconds
        self._delay = delay_seconds
        self._drain = drain
        self._drain_deadline = clock.seconds() + drain_limit
        self._grace = grace
        self._timer: IDelayedCall | None = None
        self._on_done = on_done
        self.done = False

    def start(self) -> None:
        """Begin the action now."""
        if self.action == "reset":
            if self._drain:
                self._hold_reading()
                self._timer = self._clock.callLater(0.01, self._poll_drain)
            else:
                self._reset()
        elif self.action == "hang":
            self._hold_reading()
            self._timer = self._clock.callLater(self._hang, self._fin)
        elif self.action == "delayed":
            self._hold_reading()
            self._timer = self._clock.callLater(self._delay, self._fin)
        else:
            raise ValueError(f"unknown socket action {self.action!r}")

    def cancel(self) -> None:
        """Stop any pending timer (the connection went away on its own)."""
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self.done = True

    def _hold_reading(self) -> None:
        stop = getattr(self._transport, "stopReading", None)
        if stop is not None:
            try:
                stop()
            except Exception:  # noqa: BLE001 - best effort
                pass

    def _poll_drain(self) -> None:
        self._timer = None
        if self.done:
            return
        if pending_bytes(self._transport) > 0 and self._clock.seconds() < self._drain_deadline:
            self._timer = self._clock.callLater(0.01, self._poll_drain)
            return
        # Acknowledged is not yet read: a RST makes the peer's kernel drop unread data, so
        # give the client's application a moment to take what it was sent.
        self._timer = self._clock.callLater(self._grace, self._reset)

    def _reset(self) -> None:
        self._timer = None
        if self.done:
            return
        self.done = True
        reset(self._transport)
        if self._on_done:
            self._on_done()

    def _fin(self) -> None:
        self._timer = None
        self.done = True
        self._transport.loseConnection()
        if self._on_done:
            self._on_done()
