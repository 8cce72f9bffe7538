"""Client addresses seen on the session ports and the bootstrap listener that are not
loopback/private (``GET /api/external-ips``, spec/sessions.md section 9)."""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from typing import Any

from streamlab.proxy.session import iso


def is_public_ip(ip: str) -> bool:
    """True for addresses that are not loopback/private/link-local/unspecified."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return not (addr.is_private or addr.is_loopback or addr.is_link_local or addr.is_unspecified
                or addr.is_multicast or addr.is_reserved)


class ExternalIps:
    """Rolling (last *window* s) and lifetime sets of non-private client IPs."""

    def __init__(self, window: float = 3600.0, lifetime_limit: int = 10000) -> None:
        self.window = window
        self.limit = lifetime_limit
        self._rolling: OrderedDict[str, float] = OrderedDict()
        self._lifetime: OrderedDict[str, float] = OrderedDict()
        self.lifetime_count = 0

    def seen(self, ip: str, now: float) -> None:
        """Record a request from *ip* (ignored when private)."""
        if not ip or not is_public_ip(ip):
            return
        self._rolling[ip] = now
        self._rolling.move_to_end(ip)
        if ip not in self._lifetime:
            self.lifetime_count += 1
            self._lifetime[ip] = now
            if len(self._lifetime) > self.limit:
                self._lifetime.popitem(last=False)

    def to_json(self, now: float) -> dict[str, Any]:
        """The ``/api/external-ips`` body."""
        while self._rolling:
            ip, at = next(iter(self._rolling.items()))
            if now - at <= self.window:
                break
            self._rolling.popitem(last=False)
        return {"rolling": [{"ip": ip, "last_seen": iso(at)} for ip, at in self._rolling.items()],
                "rolling_window_s": self.window, "lifetime_count": self.lifetime_count,
                "lifetime": [{"ip": ip, "first_seen": iso(at)} for ip, at in self._lifetime.items()]}
