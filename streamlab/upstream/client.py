"""The HTTP client side of an upstream (adapter): treq over a persistent connection pool.

One :class:`UpstreamClient` per registered upstream: its own
:class:`~twisted.web.client.HTTPConnectionPool` (HTTP/1.1 keep-alive, at most
``per_host`` idle connections kept per host), its extra request headers, and TLS
verification on or off.  Bodies are never buffered by the client (``unbuffered``); the
caller either streams them (:class:`~streamlab.upstream.resource`) or collects a bounded
manifest with :func:`collect`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from OpenSSL import SSL
from treq.client import HTTPClient
from twisted.internet import defer, ssl
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator, IPushProducer, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool, ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import IPolicyForHTTPS, IResponse
from zope.interface import implementer

USER_AGENT = b"streamlab-upstream/1"


class TooBig(Exception):
    """A manifest larger than the limit."""


@implementer(IOpenSSLClientConnectionCreator)
class _NoVerifyCreator:
    """TLS without certificate or host name checks (lab certificates), still sending SNI."""

    def __init__(self, hostname: bytes) -> None:
        self.hostname = hostname
        self.ctx = ssl.CertificateOptions(verify=False).getContext()

    def clientConnectionForTLS(self, tls_protocol: Any) -> SSL.Connection:  # noqa: N802
        conn = SSL.Connection(self.ctx, None)
        conn.set_app_data(tls_protocol)
        try:
            conn.set_tlsext_host_name(self.hostname)
        except (ValueError, SSL.Error):
            pass
        conn.set_connect_state()
        return conn


@implementer(IPolicyForHTTPS)
class NoVerifyPolicy:
    """An HTTPS policy that accepts any certificate (``verify_tls: false``)."""

    def creatorForNetloc(self, hostname: bytes, port: int) -> _NoVerifyCreator:  # noqa: N802
        return _NoVerifyCreator(hostname)


class UpstreamClient:
    """Requests to one upstream: pooled keep-alive connections and its extra headers."""

    def __init__(self, reactor: IReactorTime, headers: Mapping[str, str], verify_tls: bool, *,
                 per_host: int = 8, connect_timeout: float = 10.0) -> None:
        self.reactor = reactor
        self.headers = dict(headers)
        self.pool = HTTPConnectionPool(reactor, persistent=True)
        self.pool.maxPersistentPerHost = per_host
        self.pool.retryAutomatically = False
        policy = BrowserLikePolicyForHTTPS() if verify_tls else NoVerifyPolicy()
        agent = Agent(reactor, contextFactory=policy, pool=self.pool, connectTimeout=connect_timeout)
        self.http = HTTPClient(agent)

    def request(self, method: bytes, url: str,
                extra: Mapping[bytes, bytes] | None = None) -> defer.Deferred[Any]:
        """Start a request; fires with the response (treq's wrapper of an IResponse) once its
        headers arrived (redirects are followed, the body is not read)."""
        hdrs = Headers({b"user-agent": [USER_AGENT], b"accept-encoding": [b"identity"]})
        for k, v in (extra or {}).items():
            hdrs.setRawHeaders(k.lower(), [v])
        for name, value in self.headers.items():
            hdrs.setRawHeaders(name.lower().encode("latin-1"), [value.encode("latin-1")])
        return self.http.request(method.decode("ascii"), url, headers=hdrs, unbuffered=True,
                                 allow_redirects=True)

    def close(self) -> defer.Deferred[None]:
        """Drop the idle connections."""
        closed: defer.Deferred[None] = self.pool.closeCachedConnections()
        return closed


class _Collector(Protocol):
    def __init__(self, limit: int, done: defer.Deferred[bytes]) -> None:
        self.limit = limit
        self.done = done
        self.parts: list[bytes] = []
        self.size = 0

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        if self.done.called:
            return
        self.size += len(data)
        if self.size > self.limit:
            # An Agent response body's transport is a TransportProxyProducer (IPushProducer).
            cast(IPushProducer, self.transport).stopProducing()
            self.done.errback(Failure(TooBig(f"more than {self.limit} bytes")))
            return
        self.parts.append(data)

    def connectionLost(self, reason: Failure | None = None) -> None:  # noqa: N802
        if self.done.called:
            return
        if reason is None or reason.check(ResponseDone, PotentialDataLoss):
            self.done.callback(b"".join(self.parts))
        else:
            self.done.errback(reason)


def collect(response: IResponse, limit: int) -> defer.Deferred[bytes]:
    """The whole body of *response* (a manifest), failing with :class:`TooBig` past *limit*."""
    done: defer.Deferred[bytes] = defer.Deferred()
    response.deliverBody(_Collector(limit, done))
    return done


def final_url(response: IResponse, fallback: str) -> str:
    """The URL a response came from after redirects (the base for relative URLs)."""
    req = getattr(response, "request", None)
    uri = getattr(req, "absoluteURI", None)
    if isinstance(uri, bytes):
        return uri.decode("utf-8", "replace")
    return fallback


__all__ = ["UpstreamClient", "collect", "final_url", "TooBig"]
