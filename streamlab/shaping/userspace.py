"""Userspace shaping backend: a protocol/factory wrapper for session listeners.

One :class:`PortShaper` per session port holds a token bucket shared by every connection
on that port, the read delay, the loss stalls and the transport fault in force.
:class:`ShapedProtocol` sits between the real TCP transport and the wrapped protocol
(usually an ``HTTPChannel``):

* writes are queued and released by the port's bucket (round-robin between connections,
  ~10 ms chunks); while more than :data:`HIGH_WATER` bytes (or 100 ms of the cap, whichever
  is larger) wait, the wrapped producer is
  paused, so memory stays bounded whatever the rate;
* each read of the request is delivered ``delay`` later (so every response's first byte
  is ``delay`` later too);
* loss: at the start of each 64 KiB block, with probability ``loss`` the connection holds
  for an RTO-like pause (200 ms + 2 x delay); the generator is seeded per port;
* DROP: reading and writing stop on every connection, new connections are accepted but
  hang; clearing resumes them where they were;
* REJECT: every connection is reset (SO_LINGER 0 + abort), new ones are reset at accept.

Why this module is longer than ~450 lines: it has one reason to change, how userspace
shaping acts on a port's connections.  :class:`PortShaper` and :class:`ShapedProtocol`
are one mechanism (the port's bucket schedules its connections' queued writes through
``want``/``send_some``, and its fault holds or resets each connection), and their
invariants (water marks and producer pauses, held input, reset before queued data) would
otherwise cross a module boundary.  The bucket itself is :mod:`streamlab.shaping.bucket`.
"""

from __future__ import annotations

import random
import socket
import struct
from collections import deque
from collections.abc import Callable
from typing import Any, cast

from twisted.internet.interfaces import (
    IDelayedCall,
    IHandshakeListener,
    IProtocol,
    IProtocolFactory,
    IPushProducer,
    IReactorTime,
    ITransport,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure
from zope.interface import directlyProvides, implementer, providedBy

from streamlab.shaping.bucket import TokenBucket, chunk_for

log = Logger()

HIGH_WATER = 256 * 1024
LOW_WATER = 64 * 1024
#: At high caps the queue may hold this much time of data (so a late timer can catch up).
QUEUE_SECONDS = 0.1
BLOCK = 65536
MIN_RTO = 0.2
#: While the bucket throttles a backlogged port, a late timer may catch up this much time.
CATCH_UP_SECONDS = 0.5


class PortShaper:
    """Shaping state of one session port, shared by all its connections."""

    def __init__(self, port: int, clock: IReactorTime, seed: int | None = None) -> None:
        self.port = port
        self.clock = clock
        self.rate_mbps: float | None = None
        self.delay = 0.0
        self.loss = 0.0
        self.fault = "none"
        self.rng = random.Random(port if seed is None else seed)
        self.bucket = TokenBucket(0, clock.seconds())
        self.chunk = 65536
        self.conns: set[ShapedProtocol] = set()
        self._ready: deque[ShapedProtocol] = deque()
        self._queued: set[ShapedProtocol] = set()
        self._timer: IDelayedCall | None = None
        self._pumping = False
        self._again = False
        self._throttled = False
        self.bytes_out = 0
        self.refused_drop = 0
        self.refused_reject = 0
        self.connections_total = 0
        self.on_refused: Callable[[str], None] | None = None
        self.high_water = HIGH_WATER
        self.low_water = LOW_WATER

    # -- configuration

    @property
    def passthrough(self) -> bool:
        """True when writes may go straight to the socket (nothing to shape)."""
        return self.rate_mbps is None and self.loss <= 0 and self.fault == "none"

    @property
    def rto(self) -> float:
        """The pause of a lost block."""
        return MIN_RTO + 2 * self.delay

    def configure(self, rate_mbps: float | None, delay_ms: float = 0.0, loss_pct: float = 0.0) -> None:
        """Set the cap (``None`` uncapped, 0 stalled), read delay and block loss."""
        now = self.clock.seconds()
        if rate_mbps != self.rate_mbps:
            if rate_mbps:
                bps = rate_mbps * 1e6 / 8
                self.chunk = chunk_for(bps)
                self.bucket.set_rate(bps, now)
                self.high_water = max(HIGH_WATER, int(bps * QUEUE_SECONDS))
                self.low_water = max(LOW_WATER, self.high_water // 4)
            else:
                self.chunk = 65536
                self.bucket.set_rate(0, now)
                self.bucket.tokens = 0.0
                self.high_water, self.low_water = HIGH_WATER, LOW_WATER
            self.rate_mbps = rate_mbps
        self.delay = max(0.0, delay_ms / 1000.0)
        self.loss = min(1.0, max(0.0, loss_pct / 100.0))
        self.pump()

    def set_fault(self, kind: str) -> None:
        """Put ``none|drop|reject`` in force on every connection of the port."""
        prev, self.fault = self.fault, kind
        if kind == prev:
            return
        if kind == "reject":
            for conn in list(self.conns):
                self._refuse("reject")
                conn.reset()
        elif kind == "drop":
            for conn in list(self.conns):
                self._refuse("drop")
                conn.hold()
        if prev == "drop" and kind != "drop":
            for conn in list(self.conns):
                conn.release()
        self.pump()

    def _refuse(self, kind: str) -> None:
        if kind == "drop":
            self.refused_drop += 1
        else:
            self.refused_reject += 1
        if self.on_refused is not None:
            self.on_refused(kind)

    def close(self) -> None:
        """Forget the port: stop timers, clear the fault (connections are the listener's)."""
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self.fault = "none"
        self.rate_mbps = None
        for conn in list(self.conns):
            conn.release()
        self._ready.clear()
        self._queued.clear()

    # -- scheduling

    def want(self, conn: ShapedProtocol) -> None:
        """*conn* has data to send: queue it and pump."""
        if conn not in self._queued:
            self._queued.add(conn)
            self._ready.append(conn)
        self.pump()

    def pump(self) -> None:
        """Send what the bucket allows now; schedule the next round."""
        if self._pumping:
            self._again = True
            return
        self._pumping = True
        try:
            while True:
                self._again = False
                self._pump_once()
                if not self._again:
                    break
        finally:
            self._pumping = False

    def _pump_once(self) -> None:
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None
        if self.fault != "none" or self.rate_mbps == 0 or not self._ready:
            self._throttled = False
            return
        now = self.clock.seconds()
        capped = self.rate_mbps is not None
        # Backlogged and throttled since the last round: time lost to a late timer is owed.
        cap = self.bucket.rate * CATCH_UP_SECONDS if self._throttled else None
        self._throttled = False
        while self._ready:
            if capped and not self.bucket.ready(now, cap):
                break
            conn = self._ready.popleft()
            self._queued.discard(conn)
            n = conn.send_some(self.chunk if capped else 1 << 30, now)
            if capped:
                self.bucket.take(n)
            self.bytes_out += n
            if conn.sendable(now) and conn not in self._queued:
                self._queued.add(conn)
                self._ready.append(conn)
            if self.fault != "none" or self.rate_mbps == 0:
                return
        if self._ready and capped:
            self._throttled = True
            self._timer = self.clock.callLater(self.bucket.wait(now), self.pump)


@implementer(IPushProducer)
class _NetProducer:
    """Registered with the real transport: its buffer full/empty signals."""

    def __init__(self, proto: ShapedProtocol) -> None:
        self.proto = proto

    def pauseProducing(self) -> None:
        self.proto._net_pause()

    def resumeProducing(self) -> None:
        self.proto._net_resume()

    def stopProducing(self) -> None:
        pass


@implementer(IHandshakeListener)
class ShapedProtocol(ProtocolWrapper):
    """The per-connection shaper between the socket and the wrapped protocol (a TLS
    layer under it reports its handshake through it: the network log's ``tls_ms``)."""

    def __init__(self, factory: WrappingFactory, wrapped: IProtocol, shaper: PortShaper) -> None:
        super().__init__(factory, wrapped)
        self._wrapping = factory
        self.shaper = shaper
        self.clock = shaper.clock
        self._out: deque[bytes] = deque()
        self._out_bytes = 0
        self._in: deque[tuple[float, float, bytes]] = deque()
        #: How long the shaper held the bytes being delivered now (delay, DROP): what a
        #: request parsed from them waited here before the server saw it.
        self.held_for = 0.0
        self._in_timer: IDelayedCall | None = None
        self._stall_until = 0.0
        self._stall_timer: IDelayedCall | None = None
        self._block_pos = 0
        self._block_rolled = False
        self._net_paused = False
        self._inner_producer: Any = None
        self._inner_streaming = True
        self._inner_pause: set[str] = set()
        self._read_pause: set[str] = set()
        self._closing = False
        self._lost = False
        self._was_reset = False
        self._inner_connected = False
        self._net_producer: _NetProducer | None = None

    @property
    def _net(self) -> Any:
        """The real (TCP or TLS) transport under this wrapper."""
        return self.transport

    # -- connection lifecycle

    def makeConnection(self, transport: Any) -> None:
        directlyProvides(self, providedBy(transport))
        Protocol.makeConnection(self, transport)
        self._wrapping.registerProtocol(self)
        sh = self.shaper
        sh.connections_total += 1
        if sh.fault == "reject":
            sh._refuse("reject")
            self.reset()
            return
        self._net_producer = _NetProducer(self)
        transport.registerProducer(self._net_producer, True)
        sh.conns.add(self)
        if sh.fault == "drop":
            sh._refuse("drop")
            self.hold()
        self._inner_connected = True
        self.wrappedProtocol.makeConnection(cast(ITransport, self))  # provides it (directlyProvides)

    def handshakeCompleted(self) -> None:  # noqa: N802 - twisted API (IHandshakeListener)
        wrapped = self.wrappedProtocol
        if IHandshakeListener.providedBy(wrapped):
            wrapped.handshakeCompleted()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._lost = True
        self.shaper.conns.discard(self)
        for call in (self._in_timer, self._stall_timer):
            if call is not None and call.active():
                call.cancel()
        self._wrapping.unregisterProtocol(self)
        try:
            if self._inner_connected:
                # the wrapped protocol still sees the queue it lost (``buffered``): the
                # network log counts only the bytes that left for the client
                self._inner_connected = False
                self.wrappedProtocol.connectionLost(reason)
        finally:
            self._out.clear()
            self._out_bytes = 0

    def reset(self) -> None:
        """Reset the connection now (RST: SO_LINGER 0, then abort)."""
        if self._was_reset or self._lost:
            return
        self._was_reset = True
        self._out.clear()
        self._out_bytes = 0
        try:
            handle = self._net.getHandle()
            handle.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except (AttributeError, OSError):
            pass
        self._net.abortConnection()

    def hold(self) -> None:
        """DROP: stop reading (and the port stops writing)."""
        self._pause_reading("drop")

    def release(self) -> None:
        """DROP cleared: read and write again, held input first."""
        self._resume_reading("drop")
        self._deliver()
        if self._out:
            self.shaper.want(self)

    # -- input

    def dataReceived(self, data: bytes) -> None:
        if self._was_reset or not self._inner_connected:
            return
        if self.shaper.delay > 0 or self._in or "drop" in self._read_pause:
            now = self.clock.seconds()
            self._in.append((now + self.shaper.delay, now, data))
            self._deliver()
        else:
            self.held_for = 0.0
            self.wrappedProtocol.dataReceived(data)

    def _deliver(self) -> None:
        if self._in_timer is not None and self._in_timer.active():
            self._in_timer.cancel()
        self._in_timer = None
        now = self.clock.seconds()
        while self._in and not self._lost and "drop" not in self._read_pause and self._inner_connected:
            release_at, arrived_at, data = self._in[0]
            if release_at > now + 1e-9:
                self._in_timer = self.clock.callLater(release_at - now, self._deliver)
                return
            self._in.popleft()
            self.held_for = max(0.0, now - arrived_at)
            self.wrappedProtocol.dataReceived(data)

    def _pause_reading(self, reason: str) -> None:
        empty = not self._read_pause
        self._read_pause.add(reason)
        if empty and not self._lost:
            self._net.pauseProducing()

    def _resume_reading(self, reason: str) -> None:
        if reason not in self._read_pause:
            return
        self._read_pause.discard(reason)
        if not self._read_pause and not self._lost:
            self._net.resumeProducing()

    # ITransport-as-producer, as seen by the wrapped protocol: pause/resume *reading*.
    def pauseProducing(self) -> None:
        self._pause_reading("inner")

    def resumeProducing(self) -> None:
        self._resume_reading("inner")

    def stopProducing(self) -> None:
        self._net.stopProducing()

    # -- output

    def write(self, data: bytes) -> None:
        if not data or self._lost or self._was_reset:
            return
        sh = self.shaper
        if sh.passthrough and not self._out and not self._net_paused:
            sh.bytes_out += len(data)
            self._net.write(data)
            return
        self._out.append(bytes(data))
        self._out_bytes += len(data)
        if self._out_bytes >= self.shaper.high_water:
            self._pause_inner("buffer")
        sh.want(self)

    def writeSequence(self, data: Any) -> None:
        self.write(b"".join(data))

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self._inner_producer = producer
        self._inner_streaming = streaming
        if self._inner_pause and streaming:
            producer.pauseProducing()

    def unregisterProducer(self) -> None:
        self._inner_producer = None

    def loseConnection(self) -> None:
        if self._out and not self._was_reset:
            self._closing = True
        elif not self._lost:
            self._close_transport()

    def _close_transport(self) -> None:
        """Close the real transport once everything queued has been handed to it.

        Our buffer-signal producer is unregistered first: a transport with a registered
        producer takes it to mean "more data is coming", and TLS (``TLSMemoryBIOProtocol``)
        then defers its close_notify, and so the close, until the producer goes away.
        """
        if self._net_producer is not None:
            self._net_producer = None
            self._net.unregisterProducer()
        self._net.loseConnection()

    def abortConnection(self) -> None:
        self._out.clear()
        self._out_bytes = 0
        self._net.abortConnection()

    def sendable(self, now: float) -> bool:
        """True when this connection has bytes the port may send now."""
        return bool(self._out) and not self._net_paused and not self._lost and now >= self._stall_until

    def send_some(self, limit: int, now: float) -> int:
        """Write up to *limit* bytes to the socket; returns how many were written."""
        if not self.sendable(now):
            return 0
        sh = self.shaper
        if sh.loss > 0:
            if self._block_pos == 0 and not self._block_rolled:
                self._block_rolled = True
                if sh.rng.random() < sh.loss:
                    self._stall(now + sh.rto)
                    return 0
            limit = min(limit, BLOCK - self._block_pos)
        parts: list[bytes] = []
        n = 0
        while self._out and n < limit:
            head = self._out[0]
            room = limit - n
            if len(head) <= room:
                parts.append(self._out.popleft())
                n += len(head)
            else:
                parts.append(head[:room])
                self._out[0] = head[room:]
                n += room
        self._out_bytes -= n
        self._block_pos += n
        if self._block_pos >= BLOCK:
            self._block_pos = 0
            self._block_rolled = False
        self._net.write(b"".join(parts))
        if self._out_bytes < self.shaper.low_water:
            self._resume_inner("buffer")
        if not self._out and self._closing and not self._lost:
            self._close_transport()
        return n

    def _stall(self, until: float) -> None:
        self._stall_until = until
        if self._stall_timer is not None and self._stall_timer.active():
            self._stall_timer.cancel()
        self._stall_timer = self.clock.callLater(max(0.0, until - self.clock.seconds()), self._unstall)

    def _unstall(self) -> None:
        self._stall_timer = None
        if self._out and not self._lost:
            self.shaper.want(self)

    def _pause_inner(self, reason: str) -> None:
        empty = not self._inner_pause
        self._inner_pause.add(reason)
        if empty and self._inner_producer is not None and self._inner_streaming:
            self._inner_producer.pauseProducing()

    def _resume_inner(self, reason: str) -> None:
        if reason in self._inner_pause:
            self._inner_pause.discard(reason)
            if not self._inner_pause and self._inner_producer is not None:
                self._inner_producer.resumeProducing()
        elif not self._inner_pause and self._inner_producer is not None and not self._inner_streaming:
            self._inner_producer.resumeProducing()

    def _net_pause(self) -> None:
        self._net_paused = True
        self._pause_inner("net")

    def _net_resume(self) -> None:
        self._net_paused = False
        if self._out:
            self.shaper.want(self)
        if self._out_bytes < self.shaper.high_water:
            self._resume_inner("net")
        else:
            self._inner_pause.discard("net")

    @property
    def buffered(self) -> int:
        """Bytes waiting in the shaper."""
        return self._out_bytes


class ShapingFactory(WrappingFactory):
    """Wraps a session listener's factory so every connection goes through the port's shaper."""

    protocol = ShapedProtocol

    def __init__(self, wrapped: IProtocolFactory, shaper: PortShaper) -> None:
        super().__init__(wrapped)
        self.shaper = shaper

    def buildProtocol(self, addr: Any) -> ShapedProtocol | None:
        inner = self.wrappedFactory.buildProtocol(addr)
        if inner is None:
            return None
        return ShapedProtocol(self, inner, self.shaper)


class UserspaceBackend:
    """All port shapers of the daemon."""

    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock
        self.ports: dict[int, PortShaper] = {}

    def shaper(self, port: int) -> PortShaper:
        """The port's shaper (created uncapped on first use)."""
        sh = self.ports.get(port)
        if sh is None:
            sh = self.ports[port] = PortShaper(port, self.clock)
        return sh

    def wrap(self, port: int, factory: IProtocolFactory) -> ShapingFactory:
        """Wrap a listener factory for *port*."""
        return ShapingFactory(factory, self.shaper(port))

    def remove(self, port: int) -> None:
        """Forget a port's state; a later session on it starts uncapped."""
        sh = self.ports.pop(port, None)
        if sh is not None:
            sh.close()
