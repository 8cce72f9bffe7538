"""The explicit state of a session-port request (:mod:`streamlab.proxy.request`), what
it reads once per connection, and the small fixed answers it writes."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import NamedTuple

from twisted.web import server

from streamlab.proxy import sockets
from streamlab.proxy.bootstrap import client_ip


def idle_step(idle: float) -> float:
    """How often the idle timeout looks at the socket: 1/40 of it (so it fires within
    2.5 %), at most every 0.25 s, at least every 20 ms."""
    return min(0.25, max(0.02, idle / 40.0))


class Phase(enum.Enum):
    """Where a session request's response is."""

    #: not through the fault layer (yet): a plain Twisted request
    NEW = "new"
    #: the origin's bytes go to the client (through the :class:`BodyMode`)
    SERVING = "serving"
    #: finished writing; the transfer timeouts watch until the client took every byte
    DRAINING = "draining"
    #: finished and taken by the client (or nothing to watch)
    DONE = "done"
    #: a fault owns the connection: nothing more from the origin reaches the client
    CUT = "cut"


class BodyMode(enum.Enum):
    """What happens to body bytes on the way to the client."""

    PASS = "pass"
    #: ``socket_body_bytes`` go out, then the fault's socket action (body-stage faults)
    CUT_AFTER = "cut_after"
    #: every byte replaced by 0x00 (``corrupted``)
    ZERO = "zero"


class FaultMark(NamedTuple):
    """The fault that touched a request, as the network log names it."""

    type: str
    category: str
    action: str


CLIENT_GONE = FaultMark("", "client_disconnect", "client_disconnect")
NO_FAULT = FaultMark("", "", "")


class IdleWatch:
    """The idle transfer timeout of one response (pure: times and byte counts in).

    Progress is what the client's TCP acknowledged (TCP_INFO), not what was written:
    bytes moving from the userspace shaper's queue into the socket buffers are not
    progress, and neither is the origin filling that queue.  Nothing waiting (the origin
    is slow, not the client) is never idle."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        #: how often to look: 1/40 of the timeout (so it fires within 2.5 %)
        self.step = idle_step(timeout)
        self.since: float | None = None
        self.progress = -1

    def paused(self, now: float) -> None:
        """The client's socket is full."""
        if self.since is None:
            self.since = now

    def resumed(self) -> None:
        """The client drained its socket."""
        self.since = None

    def expired(self, now: float, pending: int, acked: int | None, written: int) -> bool:
        """Whether *pending* bytes have waited for the client, without progress, for the
        whole timeout (*acked*: bytes its TCP acknowledged, None when unknown)."""
        progress = acked if acked is not None else written - pending
        if pending <= 0 or progress > self.progress:
            # Either nothing is waiting for the client, or it took some bytes.
            self.progress = max(self.progress, progress)
            self.since = now
        elif self.since is None:
            self.since = now
        return pending > 0 and now - self.since >= self.timeout - 1e-6


#: request methods as interned text
METHODS = {b"GET": "GET", b"HEAD": "HEAD", b"OPTIONS": "OPTIONS"}


class Peer:
    """What a connection's first request tells about the client, kept on the channel:
    its address (``X-Forwarded-For`` from trusted proxies only), its user agent and the
    userspace shaper in its transport chain (None: not shaped in user space)."""

    __slots__ = ("ip", "shaper", "user_agent")

    def __init__(self, request: server.Request, trusted: Sequence[str]) -> None:
        self.ip = client_ip(request, trusted) or ""
        ua = request.getHeader(b"user-agent")
        self.user_agent = ua.decode("utf-8", "replace")[:512] if ua else ""
        self.shaper = sockets.shaper_of(getattr(request.channel, "transport", None))


def query_arg(args: dict[bytes, list[bytes]], name: bytes) -> str:
    """The first value of query argument *name* as text (at most 256 chars; "" if absent)."""
    values = args.get(name)
    return values[0].decode("utf-8", "replace")[:256] if values else ""
