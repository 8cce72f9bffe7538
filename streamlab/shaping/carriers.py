"""Which backend carries each feature of each session port, and making it so.

:class:`Carriers` decides per session (:func:`streamlab.shaping.route.place`): the first
connection on the port names the player's address, the kernel backend looks the route up
on its netlink thread and proves the interface with a scratch rule when it has not yet;
only then does the kernel take the features it proved.  :meth:`Carriers.apply` makes a
port's effective shape real: userspace enforces everything until the kernel confirms its
part, and a kernel refusal (or a kernel cap that does not hold) moves the refused
features to userspace for that port, named in its carriers and logged once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger

from streamlab.shaping.kernel import KernelBackend
from streamlab.shaping.model import Effective, effective
from streamlab.shaping.nft import KernelError
from streamlab.shaping.reconcile import KernelPort, kernel_desired
from streamlab.shaping.route import RATE_FEATURES, Carrier, NftProof, Placement, Route, place
from streamlab.shaping.runtime import PortRuntime
from streamlab.shaping.userspace import UserspaceBackend

log = Logger()


class Carriers:
    """The backends of every port (*ports* is the service's table, read here).

    *caps_changed* is called when a proof or a refusal changed what the host can do,
    *notify* when a port's carriers changed (its session shows them)."""

    def __init__(self, mode: str, only_interface: str, ports: Mapping[int, PortRuntime],
                 userspace: UserspaceBackend, kernel: KernelBackend | None, *,
                 caps_changed: Callable[[], None], notify: Callable[[PortRuntime], None]) -> None:
        self.backend_mode = mode
        self.only_interface = only_interface
        self.ports = ports
        self.userspace = userspace
        self.kernel = kernel
        #: what the nftables scratch table proved (None until the kernel backend started)
        self.nft_proof: NftProof | None = None
        self._caps_changed = caps_changed
        self._notify = notify

    def peer_seen(self, port: int, addr: Any) -> defer.Deferred[Any]:
        """A connection from *addr* arrived on *port*: (re)decide the port's backends for
        that address (route lookup on the netlink thread, never here).  Fires when the
        port's placement was applied."""
        rt = self.ports.get(port)
        host = _host(addr)
        if rt is None or not host or host == rt.peer:
            return defer.succeed(None)
        rt.peer = host
        if self.kernel is None or self.backend_mode == "userspace":
            rt.route = Route(host, "unknown", "", "", "backend = userspace: no route lookup")
            return self.place(port)
        d = self.kernel.route(host)
        d.addErrback(lambda f: Route(host, "none", "", "", f"route lookup failed: {f.getErrorMessage()}"))
        d.addCallback(lambda route: self._route_found(port, host, route))
        d.addErrback(lambda f: log.failure("shaping port {port}: placing", f, port=port))
        return d

    def _route_found(self, port: int, host: str, route: Route) -> defer.Deferred[Any]:
        rt = self.ports.get(port)
        if rt is None or rt.peer != host:
            return defer.succeed(None)
        rt.route = route
        eligible = route.kind == "device" or (route.kind == "loopback" and self.backend_mode == "kernel")
        if self.kernel is not None and eligible and route.interface not in self.kernel.proofs and \
                (not self.only_interface or route.interface == self.only_interface):
            self.place(port)  # userspace (named "not proven yet") while the proof runs
            d = self.kernel.prove(route.interface)

            def proven(_: Any) -> defer.Deferred[Any]:
                self._caps_changed()
                return self.place(port)

            d.addCallback(proven)
            return d
        return self.place(port)

    def placement_for(self, rt: PortRuntime) -> Placement:
        proofs = self.kernel.proofs if self.kernel is not None else {}
        mode = self.backend_mode if self.kernel is not None else "userspace"
        placement = place(mode, rt.route, proofs.get(rt.route.interface), self.nft_proof,
                          only_interface=self.only_interface, refused=rt.refused)
        if ":" in rt.route.dest and any(placement.kernel(f) for f in RATE_FEATURES):
            why = "IPv6 player: the kernel's u32 filter classifies IPv4 only"
            carriers = dict(placement.carriers)
            for f in RATE_FEATURES:
                carriers[f] = Carrier("userspace", rt.route.interface, why)
            placement = Placement(carriers)
        return placement

    def place(self, port: int) -> defer.Deferred[Any]:
        """Recompute the port's placement; re-apply (and say so) when it changed."""
        rt = self.ports.get(port)
        if rt is None:
            return defer.succeed(None)
        new = self.placement_for(rt)
        if new == rt.placement:
            return defer.succeed(None)
        rt.placement = new
        log.info("shaping port {port} (player {peer}): {carriers}", port=port, peer=rt.peer or "?",
                 carriers=_describe(new))
        d = self.apply(port)
        self._notify(rt)
        return d

    def apply(self, port: int) -> defer.Deferred[Any]:
        rt = self.ports.get(port)
        if rt is None or rt.config is None:
            return defer.succeed(None)
        cfg = rt.config
        eff = effective(cfg, rt.position if cfg.pattern_active else None, rt.window)
        rt.effective = eff
        placement = rt.placement
        kernel = self.kernel
        if kernel is None or (not placement.uses_kernel and port not in kernel.applied):
            self._apply_userspace(port, eff, placement, relaxed=False)
            if not rt.refused:  # a standing refusal stays visible
                rt.error = ""
            rt.last_apply = None
            return defer.succeed(None)
        desired = kernel_desired(eff, placement)
        # Until the kernel confirms this state, userspace keeps enforcing everything (no gap
        # while nft/tc run, and an honest fallback when they fail).
        confirmed = kernel.applied.get(port, KernelPort()) == desired
        self._apply_userspace(port, eff, placement, relaxed=confirmed)
        if confirmed:
            rt.last_apply = None
            return defer.succeed(None)
        d = kernel.reconcile({port: desired}, ports={port})

        def ok(result: Any) -> Any:
            if not rt.refused:
                rt.error = ""
            if self.ports.get(port) is rt and rt.effective == eff and rt.placement == placement:
                self._apply_userspace(port, eff, placement, relaxed=True)
            return result

        def failed(f: Any) -> Any:
            f.trap(KernelError)
            op = getattr(f.value, "op", None)
            action = op.action if op is not None else ""
            if action.endswith("_rule"):
                features = ["transport_drop", "transport_reject"]
            elif action.endswith("_class"):
                features = list(RATE_FEATURES)
            else:
                features = [x for x, c in placement.carriers.items() if c.backend == "kernel"]
            iface = (op.state.interface or getattr(self.kernel, "interface", "")) \
                if op is not None and action == "add_class" else ""
            return self._kernel_refused(rt, str(f.value), features, iface)

        d.addCallbacks(ok, failed)

        def finished(result: Any) -> Any:
            if rt.last_apply is d:
                rt.last_apply = None
            return result

        d.addBoth(finished)
        rt.last_apply = d
        return d

    def cap_not_held(self, rt: PortRuntime, reason: str) -> None:
        """The meter saw a kernel-carried cap not holding: the rate moves to userspace."""
        self._kernel_refused(rt, reason, list(RATE_FEATURES))

    def _kernel_refused(self, rt: PortRuntime, reason: str, features: list[str],
                        interface: str = "") -> defer.Deferred[Any]:
        """The kernel refused (or did not hold) what it had been proven to take: *features*
        go to userspace for this port (named, logged); a refused new class also stops
        *interface* from being claimed as kernel-capable."""
        rt.error = reason
        new = [f for f in features if f not in rt.refused]
        log.warn("shaping port {port}: kernel refused ({reason}); userspace carries {features}",
                 port=rt.port, reason=reason, features=", ".join(features))
        if interface and self.kernel is not None:
            self.kernel.refuse(interface, reason)
            self._caps_changed()
        if not new:  # nothing left to move: keep what userspace enforces, do not loop
            return defer.succeed(None)
        for f in new:
            rt.refused[f] = reason
        if self.ports.get(rt.port) is not rt:
            return defer.succeed(None)
        rt.placement = self.placement_for(rt)
        self._notify(rt)
        d = self.apply(rt.port)
        d.addErrback(lambda f: log.warn("shaping port {port}: {err}", port=rt.port, err=f.getErrorMessage()))
        return d

    def _apply_userspace(self, port: int, eff: Effective, placement: Placement, relaxed: bool) -> None:
        """Userspace part of *eff*; *relaxed* leaves the kernel-carried features to the kernel."""
        sh = self.userspace.shaper(port)

        def kernel_does(feature: str) -> bool:
            return relaxed and placement.kernel(feature)

        if kernel_does("rate"):
            us_rate = 0.0 if eff.rate_mbps == 0 else None  # a stalled step also holds writes here
        else:
            us_rate = eff.rate_mbps
        sh.configure(us_rate, 0.0 if kernel_does("delay") else eff.delay_ms,
                     0.0 if kernel_does("loss") else eff.loss_pct)
        us_fault = eff.fault
        if eff.fault != "none" and kernel_does(f"transport_{eff.fault}"):
            us_fault = "none"
        sh.set_fault(us_fault)

def _host(addr: Any) -> str:
    """The peer address of a listener's ``buildProtocol`` argument (IPv4-mapped -> IPv4)."""
    host = str(getattr(addr, "host", "") or "")
    if host.startswith("::ffff:") and "." in host:
        host = host[len("::ffff:"):]
    return host


def _describe(placement: Placement) -> str:
    parts = []
    for f, c in placement.carriers.items():
        where = f"{c.backend}/{c.interface}" if c.interface else c.backend
        parts.append(f"{f}={where}" + (f" ({c.reason})" if c.reason else ""))
    return "; ".join(parts)
