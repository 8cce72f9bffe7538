"""Session port allocation (pure) and the ONE function that opens a session listener.

:class:`PortPool` hands out the lowest free port of the configured range.  A released
port is *quarantined*: first until its release work (listener closed, shaping removed)
has finished, then for *quarantine* seconds more, so a late request of the old player
never lands in a new session.  Only when no other port is free is the port released
longest ago handed out early.  Ports the OS refused (EADDRINUSE by another program) are
skipped for a while.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IListeningPort, IProtocolFactory

if TYPE_CHECKING:
    from streamlab.web.tls import TLS


class PortPool:
    """Lowest-free-first allocation over ``[lo, hi]``."""

    def __init__(self, lo: int, hi: int, quarantine: float = 0.0) -> None:
        if lo > hi:
            raise ValueError("empty port range")
        self.lo = lo
        self.hi = hi
        self.quarantine = quarantine
        self._released_at: dict[int, float] = {}
        self._used: set[int] = set()
        self._releasing: set[int] = set()
        self._refused: dict[int, float] = {}

    def slot(self, port: int) -> int:
        """1-based slot number of *port* (no longer the session id: ids are a counter)."""
        return port - self.lo + 1

    def port_of_slot(self, slot: int) -> int:
        """Inverse of :meth:`slot`."""
        return self.lo + slot - 1

    def acquire(self, now: float = 0.0, refuse_ttl: float = 30.0) -> int | None:
        """Take the lowest free port out of quarantine; else the free port released longest
        ago; None when every port is busy."""
        early: int | None = None
        for port in range(self.lo, self.hi + 1):
            if port in self._used or port in self._releasing:
                continue
            refused_at = self._refused.get(port)
            if refused_at is not None and now - refused_at < refuse_ttl:
                continue
            released = self._released_at.get(port)
            if released is not None and now - released < self.quarantine:
                if early is None or released < self._released_at[early]:
                    early = port
                continue
            return self._take(port)
        return self._take(early) if early is not None else None

    def _take(self, port: int) -> int:
        self._refused.pop(port, None)
        self._released_at.pop(port, None)
        self._used.add(port)
        return port

    def refuse(self, port: int, now: float = 0.0) -> None:
        """The OS would not let us listen on *port*: give it back and skip it for a while."""
        self._used.discard(port)
        self._refused[port] = now

    def begin_release(self, port: int) -> None:
        """*port* is being released; not reusable until :meth:`end_release`."""
        self._used.discard(port)
        self._releasing.add(port)

    def end_release(self, port: int, now: float | None = None) -> None:
        """Release work for *port* finished at *now*; it is free again after the
        quarantine (at once when *now* is None)."""
        self._releasing.discard(port)
        if now is not None and self.quarantine > 0:
            self._released_at[port] = now

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
                        interface: str = "", tls: TLS | None = None) -> IListeningPort:
    """Open the listener of one session port (the single place to swap in TLS).

    *tls*: the daemon's :class:`streamlab.web.tls.TLS` (None = plain HTTP); session ports
    speak HTTP/1.1 only, since their socket faults act on one connection."""
    if tls is not None:
        factory = tls.wrap(factory, allow_h2=False)
    return reactor.listenTCP(port, factory, interface=interface)
