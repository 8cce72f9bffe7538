"""Session port allocation (pure) and the ONE function that opens a session listener.

:class:`PortPool` hands out the lowest free port of the configured range.  A released
port is *quarantined* until its release work (listener closed, shaping removed) has
finished; only then can it be handed out again.  Ports the OS refused (EADDRINUSE by
another program) are skipped for a while.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IListeningPort, IProtocolFactory


class PortPool:
    """Lowest-free-first allocation over ``[lo, hi]``."""

    def __init__(self, lo: int, hi: int) -> None:
        if lo > hi:
            raise ValueError("empty port range")
        self.lo = lo
        self.hi = hi
        self._used: set[int] = set()
        self._releasing: set[int] = set()
        self._refused: dict[int, float] = {}

    def slot(self, port: int) -> int:
        """1-based slot number of *port* (the session id)."""
        return port - self.lo + 1

    def port_of_slot(self, slot: int) -> int:
        """Inverse of :meth:`slot`."""
        return self.lo + slot - 1

    def contains(self, port: int) -> bool:
        """Is *port* in the range?"""
        return self.lo <= port <= self.hi

    def acquire(self, now: float = 0.0, refuse_ttl: float = 30.0) -> int | None:
        """Take the lowest free port, or None when every port is busy."""
        for port in range(self.lo, self.hi + 1):
            if port in self._used or port in self._releasing:
                continue
            refused_at = self._refused.get(port)
            if refused_at is not None and now - refused_at < refuse_ttl:
                continue
            self._refused.pop(port, None)
            self._used.add(port)
            return port
        return None

    def refuse(self, port: int, now: float = 0.0) -> None:
        """The OS would not let us listen on *port*: give it back and skip it for a while."""
        self._used.discard(port)
        self._refused[port] = now

    def begin_release(self, port: int) -> None:
        """*port* is being released; not reusable until :meth:`end_release`."""
        self._used.discard(port)
        self._releasing.add(port)

    def end_release(self, port: int) -> None:
        """Release work for *port* finished; it is free again."""
        self._releasing.discard(port)

    @property
    def in_use(self) -> list[int]:
        """Ports held by sessions."""
        return sorted(self._used)

    @property
    def releasing(self) -> list[int]:
        """Ports still being released."""
        return sorted(self._releasing)

    @property
    def free_count(self) -> int:
        """How many ports could be handed out now (ignoring refusals)."""
        return (self.hi - self.lo + 1) - len(self._used) - len(self._releasing)


def listen_session_port(reactor: Any, port: int, factory: IProtocolFactory,
                        interface: str = "", tls: Any = None) -> IListeningPort:
    """Open the listener of one session port (the single place to swap in TLS).

    *tls*: the daemon's :class:`streamlab.web.tls.TLS` (None = plain HTTP); session ports
    speak HTTP/1.1 only, since their socket faults act on one connection."""
    if tls is not None:
        factory = tls.wrap(factory, allow_h2=False)
    return reactor.listenTCP(port, factory, interface=interface)
