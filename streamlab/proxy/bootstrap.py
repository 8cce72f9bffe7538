"""The bootstrap listener: any stream URL carrying a player id answers 302 to the same
path and query on that player's session port.

Player id: query ``player_id``, else header ``Player-ID``, else ``X-Playback-Session-Id``.
No id -> 400, all ports busy -> 503, too many sessions from one public IP -> 429 (JSON).
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IReactorTime
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource
from twisted.web.server import Site

from streamlab.errors import Invalid, StreamlabError
from streamlab.web.errors import write_error
from streamlab.web.site import build_site

if TYPE_CHECKING:
    from streamlab.config import Config
    from streamlab.proxy.registry import SessionRegistry


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        addr = ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def forwarded_hop(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address of one ``X-Forwarded-For`` entry: ``1.2.3.4``, ``1.2.3.4:5678``,
    ``2001:db8::1``, ``[2001:db8::1]`` or ``[2001:db8::1]:5678``; None for anything else
    (``not-an-ip``, ``008.008.008.008``, ``unknown``, a bad port)."""
    hop = text.strip()
    if hop.startswith("["):
        host, sep, rest = hop[1:].partition("]")
        if not sep or (rest and not (rest.startswith(":") and rest[1:].isdecimal() and len(rest) <= 6)):
            return None
        addr = _ip(host)
        return addr if addr is not None and ":" in host else None
    if hop.count(":") == 1:
        host, _, port = hop.partition(":")
        if not port.isdecimal() or len(port) > 5:
            return None
        addr = _ip(host)
        return addr if isinstance(addr, ipaddress.IPv4Address) else None
    return _ip(hop) if "[" not in hop and "]" not in hop else None


def client_ip(request: IRequest, trusted: Sequence[str] = ()) -> str:
    """The client's address.  ``X-Forwarded-For`` is honoured only when the peer is in
    *trusted* (networks); then the right-most address that is not itself trusted wins.
    An entry that is not an address (see :func:`forwarded_hop`) ends the walk: the
    client is then the last trusted hop (the proxy's own address), never "nobody"."""
    peer = request.getClientAddress()
    host = getattr(peer, "host", "") or ""
    addr = _ip(host)
    if addr is None:
        return host
    if not trusted:
        return str(addr)
    nets = [ipaddress.ip_network(n, strict=False) for n in trusted]

    def is_trusted(a: Any) -> bool:
        return any(a.version == n.version and a in n for n in nets)

    if not is_trusted(addr):
        return str(addr)
    header = request.getHeader(b"x-forwarded-for")
    if not header:
        return str(addr)
    hops = [h.strip() for h in header.decode("latin-1").split(",") if h.strip()]
    for hop in reversed(hops):
        hop_addr = forwarded_hop(hop)
        if hop_addr is None:
            break
        if not is_trusted(hop_addr):
            return str(hop_addr)
        addr = hop_addr
    return str(addr)


def player_id_of(request: IRequest) -> str | None:
    """The player id a request carries (query, ``Player-ID``, ``X-Playback-Session-Id``)."""
    values = (request.args or {}).get(b"player_id")
    if values and values[0].strip():
        return values[0].decode("utf-8", "replace").strip()
    for header in (b"player-id", b"x-playback-session-id"):
        value = request.getHeader(header)
        if value and value.strip():
            return value.decode("utf-8", "replace").strip()
    return None


class BootstrapResource(Resource):
    """Leaf resource of the bootstrap listener."""

    isLeaf = True

    def __init__(self, registry: SessionRegistry, config: Config, scheme: str = "http") -> None:
        super().__init__()
        self.registry = registry
        self.config = config
        self.scheme = scheme

    def render(self, request: IRequest) -> bytes:
        request.setHeader(b"access-control-allow-origin", b"*")
        request.setHeader(b"cache-control", b"no-cache, no-store, must-revalidate")
        if request.method == b"OPTIONS":  # CORS pre-flight of a player sending Player-ID
            request.setResponseCode(204)
            request.setHeader(b"access-control-allow-methods", b"GET, HEAD, OPTIONS")
            request.setHeader(b"access-control-allow-headers",
                              b"Player-ID, X-Playback-Session-Id, Range, Content-Type")
            request.setHeader(b"access-control-max-age", b"600")
            return b""
        try:
            player_id = player_id_of(request)
            if player_id is None:
                raise Invalid("missing player_id",
                              detail="add ?player_id=<id> (or a Player-ID / X-Playback-Session-Id header)")
            ip = client_ip(request, self.config.server.trusted_proxies)
            ua = (request.getHeader(b"user-agent") or b"").decode("utf-8", "replace")[:512]
            session, _created = self.registry.get_or_create(player_id, client_ip=ip, user_agent=ua)
            self.registry.external_ips.seen(ip, self.registry.clock.seconds())
        except StreamlabError as exc:
            return write_error(request, exc)
        host = self.config.server.advertised_host or request.getRequestHostname().decode("latin-1")
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        location = f"{self.scheme}://{host}:{session.external_port}{request.uri.decode('latin-1')}"
        request.setResponseCode(302)
        request.setHeader(b"location", location.encode("latin-1"))
        request.setHeader(b"content-type", b"application/json")
        return json.dumps({"session_id": session.session_id, "port": str(session.external_port),
                           "location": location}).encode()


def bootstrap_site(registry: SessionRegistry, config: Config, reactor: IReactorTime,
                   scheme: str = "http") -> Site:
    """The Site of the bootstrap listener."""
    return build_site(BootstrapResource(registry, config, scheme), reactor,
                      head_timeout=getattr(config.server, "request_head_timeout", None))
