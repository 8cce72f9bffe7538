"""The contract between a session port's HTTP requests and the session they belong to.

A session-port request (:class:`streamlab.proxy.listener.SessionRequest`) is the
*adapter*: it speaks HTTP, owns the socket mechanics and measures timings.  Everything
the session decides or records goes through one :class:`ISessionExchange`, in this
order (docs/architecture.md, "How a session request flows"):

1. ``connection_made(channel)`` once per TCP connection, ``connection_lost(channel)``
   when it closes;
2. ``begin(info, now) -> Plan`` once per request: the session counts the request,
   decides the fault and says what the request must do (:class:`Plan`);
3. ``sent(nbytes)`` for every body write (the session's byte counter and rate meter),
   ``faulted(type)`` when the request hits a fault on its own (transfer timeout);
   ``rewrite(plan, path, body, now) -> (body, fault)`` only when ``plan.buffer_body``:
   the buffered master/playlist body with the content edits and manifest fault applied;
4. ``end(record)`` exactly once per begun request, with the :class:`ExchangeRecord`
   the request built itself (network log, counters, metrics observers).

The session side is :class:`streamlab.proxy.session_exchange.SessionExchange`; tests
drive the listener with a fake implementation of the interface.

:class:`RequestInfo`, :class:`Plan` and :class:`ExchangeRecord` are immutable
``NamedTuple`` values rather than frozen dataclasses: three are built for every request,
and a frozen dataclass costs about three times as much to build (``bench/proxy.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from zope.interface import Interface

from streamlab.proxy.faults import FaultDecision


class RequestInfo(NamedTuple):
    """What the session learns about a request when it arrives."""

    method: str
    #: the request target as received (path + query)
    url: str
    #: decoded path without the query
    path: str
    #: the client address (``X-Forwarded-For`` honoured from trusted proxies only)
    client_ip: str
    user_agent: str
    #: ``play_id`` / ``attempt_id`` query arguments ("" when absent)
    play_id: str
    attempt_id: str
    #: True for the first request of its connection
    new_connection: bool
    #: seconds the userspace shaper held the request before the server saw it
    shaper_hold: float = 0.0


class Plan(NamedTuple):
    """What one request must do, decided when it arrived."""

    #: ``segment|manifest|master_manifest|other``
    kind: str
    #: the injected fault to carry out, or None
    fault: FaultDecision | None = None
    #: server transfer timeouts in seconds (0 = off)
    active_timeout: float = 0.0
    idle_timeout: float = 0.0
    #: hold the whole body and pass it through ``rewrite`` before sending it
    buffer_body: bool = False


class ExchangeRecord(NamedTuple):
    """One finished (or cut) request as the request measured it; times are epoch
    seconds from the session port's clock."""

    kind: str
    method: str
    url: str
    path: str
    #: status line the client saw (0: none was sent)
    status: int
    #: request bytes (request line, headers, body) and response body bytes delivered
    bytes_in: int
    bytes_out: int
    #: body bytes counted as written that never reached the client (cut connection)
    undelivered: int
    content_type: str
    request_range: str
    #: connection accepted (first request of a connection only), request parsed
    #: (the shaper's hold included), first and last body byte written, end
    accepted: float | None
    arrived: float
    first_byte: float | None
    last_byte: float | None
    finished: float
    #: the fault that touched the request ("" when none)
    fault_type: str = ""
    fault_category: str = ""
    fault_action: str = ""
    shaper_delay_ms: float = 0.0
    #: upstream origins only (docs/upstream.md): the relay's failure and time to headers
    upstream_failure: str = ""
    upstream_ttfb_ms: float | None = None
    #: TLS handshake done on this request's connection (first request of a TLS
    #: connection only, like ``accepted``; None on plain HTTP and reused connections)
    tls_done: float | None = None
    #: raw header pairs as Twisted holds them (``(name, [values])``); the response's
    #: only when a status line was sent
    request_headers: tuple[tuple[bytes, Sequence[bytes]], ...] = ()
    response_headers: tuple[tuple[bytes, Sequence[bytes]], ...] = ()


class ISessionExchange(Interface):
    """The session a session port's requests talk to (see the module docstring)."""

    def connection_made(channel: Any) -> None:  # noqa: N805 - zope.interface
        """A client connected (its transport is the session's latest one)."""

    def connection_lost(channel: Any) -> None:  # noqa: N805 - zope.interface
        """A client's connection closed."""

    def begin(info: RequestInfo, now: float) -> Plan:  # noqa: N805 - zope.interface
        """Count the request, decide its fault and plan it."""

    def sent(nbytes: int) -> None:  # noqa: N805 - zope.interface
        """*nbytes* body bytes were written to the client (the transfer-rate meter)."""

    def faulted(fault_type: str) -> None:  # noqa: N805 - zope.interface
        """The request hit a fault on its own after ``begin`` (a transfer timeout, a
        manifest fault): count it now."""

    def rewrite(plan: Plan, path: str, body: bytes, now: float) -> tuple[bytes, str]:  # noqa: N805 - zope.interface
        """The buffered 200 body of a playlist/MPD with the session's content edits and
        manifest fault applied: ``(body, manifest fault applied or "")``."""

    def end(record: ExchangeRecord) -> None:  # noqa: N805 - zope.interface
        """The request is over: log and count it (called once per ``begin``)."""


@dataclass(frozen=True, slots=True)
class PortSettings:
    """Socket-fault timings and sizes (config ``[sessions]``)."""

    socket_hang_seconds: float = 90.0
    socket_delay_seconds: float = 12.0
    socket_body_bytes: int = 65536
    trusted_proxies: tuple[str, ...] = ()
