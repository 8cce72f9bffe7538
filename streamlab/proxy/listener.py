"""The per-session HTTP listener: a Site whose requests pass through the fault layer.

The Site, its channel and its root resource live here; the request itself — the fault
layer — is :class:`streamlab.proxy.request.SessionRequest`.  Everything a request asks
of its session goes through the :class:`~streamlab.proxy.exchange.ISessionExchange`
the Site was built with (see docs/architecture.md, "How a session request flows").
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IHandshakeListener, IReactorTime
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from twisted.web import server
from twisted.web.http import _GenericHTTPChannelProtocol
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource
from zope.interface import implementer

from streamlab.errors import NotFound
from streamlab.proxy.exchange import ISessionExchange, PortSettings
from streamlab.proxy.request import SessionRequest
from streamlab.proxy.request_state import Peer
from streamlab.shutdown import InFlight
from streamlab.web.channel import GuardedHTTPChannel
from streamlab.web.errors import write_error
from streamlab.web.site import method_not_allowed

__all__ = ["SessionChannel", "SessionRequest", "SessionRoot", "SessionSite"]


class _NotFoundLeaf(Resource):
    isLeaf = True

    def render(self, request: IRequest) -> bytes:
        request.setHeader(b"access-control-allow-origin", b"*")
        return write_error(request, NotFound("not found", detail="session ports serve /go-live/... only"))


class _MethodLeaf(Resource):
    isLeaf = True

    def render(self, request: IRequest) -> bytes:
        request.setHeader(b"access-control-allow-origin", b"*")
        return method_not_allowed(request, (b"GET", b"HEAD"))


class SessionRoot(Resource):
    """``/go-live`` -> the shared origin resource; anything else -> JSON 404."""

    def __init__(self, origin: IResource | None) -> None:
        super().__init__()
        self._origin = origin

    def getChild(self, path: bytes, request: IRequest) -> IResource:  # noqa: N802
        if request.method not in (b"GET", b"HEAD", b"OPTIONS"):  # media only: no control calls
            return _MethodLeaf()
        postpath = request.postpath
        if path == b"go-live" and self._origin is not None and (not postpath or postpath[0] != b"api"):
            return self._origin
        return _NotFoundLeaf()

    def render(self, request: IRequest) -> bytes:
        return _NotFoundLeaf().render(request)


@implementer(IHandshakeListener)
class SessionChannel(GuardedHTTPChannel):
    """HTTPChannel that remembers when it was accepted (and when its TLS handshake was
    done), tells the session about the connection, and tells its request when the
    transport stops/starts accepting data (the idle-timeout signal)."""

    accepted_at = 0.0
    #: when the TLS layer under the channel finished its handshake (None: plain HTTP)
    tls_done_at: float | None = None
    requests_started = 0
    #: the client as its first request showed it
    peer: Peer | None = None

    site: Any  # the SessionSite (set by the factory)

    def connectionMade(self) -> None:  # noqa: N802 - twisted API
        site = self.site
        self.accepted_at = site.clock.seconds()
        super().connectionMade()
        site.exchange.connection_made(self)

    def handshakeCompleted(self) -> None:  # noqa: N802 - twisted API (IHandshakeListener)
        """The TLS layer finished its handshake (called once, before any request)."""
        self.tls_done_at = self.site.clock.seconds()

    def connectionLost(self, reason: Failure = connectionDone) -> None:  # noqa: N802 - twisted API
        self.site.exchange.connection_lost(self)
        super().connectionLost(reason)

    def pauseProducing(self) -> None:  # noqa: N802 - twisted API
        super().pauseProducing()
        if self.requests:
            req = self.requests[0]
            if isinstance(req, SessionRequest):
                req.transport_paused()

    def resumeProducing(self) -> None:  # noqa: N802 - twisted API
        super().resumeProducing()
        if self.requests:
            req = self.requests[0]
            if isinstance(req, SessionRequest):
                req.transport_resumed()


@implementer(IHandshakeListener)
class _SessionChannelProtocol(_GenericHTTPChannelProtocol):
    """Twisted's HTTP/1.x-or-h2 switch, passing the TLS layer's handshake-done signal to
    the session channel (Twisted's own proxies ``IProtocol`` only)."""

    def handshakeCompleted(self) -> None:  # noqa: N802 - twisted API (IHandshakeListener)
        channel = self._channel
        if IHandshakeListener.providedBy(channel):
            channel.handshakeCompleted()


class SessionSite(server.Site):
    """The Site of one session port: its requests talk to *exchange*; *origin* serves
    ``/go-live``; *inflight* (``streamlab.shutdown.InFlight``, optional) counts open
    requests for the graceful stop."""

    def __init__(self, exchange: ISessionExchange, origin: IResource | None, clock: IReactorTime,
                 settings: PortSettings, *, inflight: InFlight | None = None,
                 head_timeout: float | None = None) -> None:
        super().__init__(SessionRoot(origin), requestFactory=SessionRequest, reactor=clock)
        self.exchange = exchange
        self.clock = clock
        self.settings = settings
        self.inflight = inflight
        #: read by GuardedHTTPChannel (None: its default)
        self.head_timeout = head_timeout
        self.displayTracebacks = False
        self.timeOut = 120

    def protocol(self) -> Any:  # the Factory calls self.protocol()
        return _SessionChannelProtocol(SessionChannel())

    def log(self, request: object) -> None:  # noqa: D102 - no access log (the network log covers it)
        pass

    def abort_all(self, channels: Any) -> None:
        """Abort every connection in *channels*."""
        for channel in list(channels):
            transport = getattr(channel, "transport", None)
            if transport is not None:
                try:
                    transport.abortConnection()
                except Exception:  # noqa: BLE001 - already closing
                    pass
