"""Per-session backend choice: which backend (and interface) carries each shaping feature.

Pure: nothing here does I/O.  The kernel backend looks the route up (netlink, on its
worker thread) and proves what an interface can take by applying a scratch rule; this
module only turns those facts into a decision.

* :class:`Route` is where the kernel sends packets for the player's address
  (:func:`route_from_lookup` builds it from the fields of a netlink ``RTM_GETROUTE``
  answer).
* :class:`TcProof` / :class:`NftProof` are what a scratch rule proved (never inferred from
  kernel features).
* :func:`place` decides, per feature, :class:`Carrier` ``kernel``/``userspace`` with the
  interface and the reason, given the backend mode, the route, the proofs and the
  refusals the kernel gave this port at run time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

FEATURES = ("rate", "delay", "loss", "transport_drop", "transport_reject")
RATE_FEATURES = ("rate", "delay", "loss")

#: rtm_type values of a route lookup answer (linux/rtnetlink.h)
RTN_UNICAST = 1
RTN_LOCAL = 2
_RTN_NAMES = {3: "broadcast", 4: "anycast", 5: "multicast", 6: "blackhole", 7: "unreachable",
              8: "prohibit", 9: "throw", 10: "nat"}


@dataclass(frozen=True)
class Route:
    """The route to one player address.

    ``kind``: ``device`` (leaves through ``interface``), ``loopback`` (a local address or
    the loopback interface: never reaches a NIC), ``none`` (no usable route; ``reason``
    says why) or ``unknown`` (not looked up yet: no connection so far)."""

    dest: str = ""
    kind: str = "unknown"
    interface: str = ""
    gateway: str = ""
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        """Wire shape (session JSON ``shaping_route``)."""
        return {"peer": self.dest, "kind": self.kind, "interface": self.interface, "gateway": self.gateway,
                "reason": self.reason}


def route_from_lookup(dest: str, rtype: int | None, interface: str = "", loopback_link: bool = False,
                      gateway: str = "", error: str = "") -> Route:
    """A :class:`Route` from the fields of a netlink route lookup (or its *error*)."""
    if error:
        return Route(dest, "none", "", "", f"no route to {dest}: {error}")
    if rtype == RTN_LOCAL or (interface and loopback_link):
        return Route(dest, "loopback", interface or "lo", "", f"{dest} is local (loopback)")
    if rtype != RTN_UNICAST:
        name = _RTN_NAMES.get(int(rtype or 0), f"type {rtype}")
        return Route(dest, "none", interface, gateway, f"route to {dest} is {name}")
    if not interface:
        return Route(dest, "none", "", gateway, f"route to {dest} has no output interface")
    return Route(dest, "device", interface, gateway, "")


@dataclass(frozen=True)
class TcProof:
    """What a scratch htb class (+ u32 filter, + netem, + a bfifo leaf) proved on one
    interface.  ``fifo``: a byte-bounded leaf queue (bfifo) can sit under each class, so
    the queue behind the shaper stays ~150 ms deep instead of the default pfifo's
    txqueuelen packets."""

    interface: str
    htb: bool = False
    netem: bool = False
    reason: str = ""
    fifo: bool = False

    def as_dict(self) -> dict[str, Any]:
        """Wire shape (capabilities ``interfaces``)."""
        return {"rate": "kernel" if self.htb else "userspace",
                "delay": "kernel" if self.htb and self.netem else "userspace",
                "loss": "kernel" if self.htb and self.netem else "userspace",
                "reason": self.reason}


@dataclass(frozen=True)
class NftProof:
    """What a scratch nftables table proved: DROP and REJECT rules, counters read back."""

    drop: bool = False
    reject: bool = False
    counters: bool = False
    reason: str = ""


@dataclass(frozen=True)
class Carrier:
    """Who carries one feature of one session: ``kernel``/``userspace``, on which interface."""

    backend: str = "userspace"
    interface: str = ""
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        """Wire shape."""
        return {"backend": self.backend, "interface": self.interface, "reason": self.reason}


def _all_userspace(interface: str, reason: str) -> dict[str, Carrier]:
    return {f: Carrier("userspace", interface, reason) for f in FEATURES}


@dataclass(frozen=True)
class Placement:
    """Per feature :class:`Carrier` of one session port (duck-types ``Capabilities.kernel``)."""

    carriers: Mapping[str, Carrier] = field(default_factory=lambda: _all_userspace("", "route unknown"))

    def kernel(self, feature: str) -> bool:
        """True when the kernel carries *feature*."""
        c = self.carriers.get(feature)
        return c is not None and c.backend == "kernel"

    def carrier(self, feature: str) -> Carrier:
        """The carrier of *feature* (userspace when unknown)."""
        return self.carriers.get(feature, Carrier())

    @property
    def uses_kernel(self) -> bool:
        """True when the kernel carries any feature."""
        return any(c.backend == "kernel" for c in self.carriers.values())

    @property
    def interface(self) -> str:
        """The interface the kernel shapes on (``""`` when the kernel shapes nothing)."""
        for f in RATE_FEATURES:
            c = self.carriers.get(f)
            if c is not None and c.backend == "kernel":
                return c.interface
        return ""

    def as_dict(self) -> dict[str, Any]:
        """Wire shape (session JSON ``shaping_carriers``)."""
        return {f: self.carrier(f).as_dict() for f in FEATURES}


def place(mode: str, route: Route, tc: TcProof | None, nft: NftProof | None, *,
          only_interface: str = "", refused: Mapping[str, str] | None = None) -> Placement:
    """Decide the carrier of every feature of one session.

    * ``userspace`` mode, an unknown route (no connection yet), no route, or (``auto``) a
      loopback route: everything in userspace, named with the reason.
    * ``only_interface`` (config ``[shaping] interface``) restricts the kernel to one
      interface; players routed elsewhere are shaped in userspace.
    * Otherwise rate needs a proven htb class, delay/loss a proven netem, transport faults a
      proven nftables rule of their kind; anything not proven, or *refused* by the kernel
      for this port at run time (feature -> reason), falls back to userspace, named.
    """
    refused = refused or {}
    iface = route.interface
    if mode == "userspace":
        return Placement(_all_userspace(iface, "backend = userspace"))
    if route.kind == "unknown":
        return Placement(_all_userspace("", "no connection yet: route unknown"))
    if route.kind == "none":
        return Placement(_all_userspace(iface, route.reason or "no route"))
    if route.kind == "loopback" and mode == "auto":
        return Placement(_all_userspace(iface, f"loopback ({iface}): the kernel does not shape it"))
    if only_interface and iface != only_interface:
        return Placement(_all_userspace(iface, f"route via {iface}; kernel shaping is limited to "
                                                f"{only_interface} ([shaping] interface)"))
    out: dict[str, Carrier] = {}

    def decide(feature: str, proven: bool, why_not: str, where: str) -> None:
        if feature in refused:
            out[feature] = Carrier("userspace", iface, f"kernel refused: {refused[feature]}")
        elif proven:
            out[feature] = Carrier("kernel", where, "")
        else:
            out[feature] = Carrier("userspace", iface, why_not)

    if tc is None:
        tc_why = f"kernel not proven on {iface} yet"
        htb = netem = False
    else:
        htb, netem = tc.htb, tc.htb and tc.netem
        tc_why = tc.reason or (f"{iface}: no htb" if not tc.htb else f"{iface}: kernel lacks netem")
    decide("rate", htb, tc_why, iface)
    netem_why = tc_why if not htb else (tc.reason if tc and tc.reason else "kernel lacks netem")
    decide("delay", netem, netem_why, iface)
    decide("loss", netem, netem_why, iface)
    nft_why = "nftables not proven" if nft is None else (nft.reason or "nftables refused the rule")
    decide("transport_drop", bool(nft and nft.drop), nft_why, iface)
    decide("transport_reject", bool(nft and nft.reject), nft_why if not (nft and nft.drop) else
           (nft.reason or "nft reject refused"), iface)
    return Placement(out)
