"""Building the twisted.web Site for a listener (one Site, one root resource each).

Every Site speaks through :class:`streamlab.web.channel.GuardedHTTPChannel` (request-head
deadline, 414/431/400 answers, optional per-client connection cap) and renders through
:class:`_JsonMethods` (a method a resource does not implement, TRACE included, is a JSON
405 with ``Allow``, never Twisted's HTML 405/501 page).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from twisted.web.error import UnsupportedMethod
from twisted.web.http import _GenericHTTPChannelProtocol
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource
from twisted.web.server import Site

from streamlab.web.channel import DEFAULT_HEAD_TIMEOUT, ClientSlots, GuardedHTTPChannel


def method_not_allowed(request: IRequest, allowed: Iterable[bytes | str] | None) -> bytes:
    """Set a JSON 405 with an ``Allow`` header naming *allowed* (bytes or str methods)."""
    names = sorted({(m.decode("ascii") if isinstance(m, bytes) else str(m)).upper() for m in allowed or ()}
                   | {"OPTIONS"})
    if "GET" in names:
        names = sorted(set(names) | {"HEAD"})
    allow = ", ".join(names)
    request.setResponseCode(405)
    request.setHeader(b"allow", allow.encode("ascii"))
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-cache, no-store, must-revalidate")
    body = json.dumps({"error": "method not allowed",
                       "detail": f"{request.method.decode('latin-1')} is not allowed here", "allow": allow})
    return body.encode()


class _JsonMethods:
    """Render *inner*; a method it does not implement becomes a JSON 405 (HEAD on a GET
    resource is left to Twisted, which answers it from GET)."""

    def __init__(self, inner: IResource) -> None:
        self.inner = inner

    def render(self, request: IRequest) -> bytes | int:
        try:
            body: bytes | int = self.inner.render(request)
            return body
        except UnsupportedMethod as exc:
            allowed = tuple(getattr(exc, "allowedMethods", ()) or ())
            if request.method == b"HEAD" and b"GET" in allowed:
                raise
            return method_not_allowed(request, allowed)


class QuietSite(Site):
    """A Site that does not write an access log line per request (the network log and
    /metrics cover that) and hands out no server banner."""

    head_timeout: float = DEFAULT_HEAD_TIMEOUT
    client_slots: ClientSlots | None = None

    def protocol(self) -> Any:  # the Factory calls self.protocol()
        return _GenericHTTPChannelProtocol(GuardedHTTPChannel())

    def log(self, request: object) -> None:  # noqa: D102 - twisted API
        pass

    def getResourceFor(self, request: Any) -> Any:  # noqa: N802 - twisted API
        """The resource for *request*, rendering unsupported methods as JSON 405."""
        return _JsonMethods(super().getResourceFor(request))


def build_site(root: IResource, reactor: object | None = None, *, head_timeout: float | None = None,
               max_connections_per_client: int = 0, uncapped: tuple[str, ...] = ()) -> Site:
    """A Site serving *root*: heads must arrive within *head_timeout* seconds, at most
    *max_connections_per_client* connections per client address (0 = no cap; peers in the
    *uncapped* networks, e.g. trusted proxies, are never refused)."""
    site = QuietSite(root, reactor=reactor) if reactor is not None else QuietSite(root)
    site.displayTracebacks = False
    if head_timeout is not None:
        site.head_timeout = float(head_timeout)
    if max_connections_per_client:
        site.client_slots = ClientSlots(max_connections_per_client, uncapped)
    return site
