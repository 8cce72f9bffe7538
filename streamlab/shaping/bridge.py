"""Sessions -> shaping: the :class:`streamlab.shaping.host.SessionShaping` the registry calls.

The registry knows shaping only through this object (wired by ``streamlab/tap.py``):

* every new session listener is wrapped (:class:`RoutedShapingFactory`: userspace shaping,
  and each connection's peer address for the per-session route choice);
* merged controls are checked before the registry stores them;
* after every control change the registry calls :meth:`SessionBridge.controls_changed`
  once per session: the port follows the new controls, and the follow-up changes shaping
  derives (a plain rate stops the pattern; a template builds its steps from the ladder)
  are *returned*, already validated, for the registry to store as the next change;
* a removed session releases its port (once);
* the session object's shaping fields and fresh kernel counters come from here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.internet.interfaces import IAddress, IProtocolFactory
from twisted.logger import Logger

from streamlab.errors import Invalid
from streamlab.proxy import fields as fields_mod
from streamlab.shaping.host import ControlsChanged
from streamlab.shaping.model import template_steps
from streamlab.shaping.userspace import PortShaper, ShapedProtocol, ShapingFactory

if TYPE_CHECKING:
    from streamlab.shaping.service import ShapingService

log = Logger()

TEMPLATE_KEYS = frozenset({"nftables_pattern_template_mode", "nftables_pattern_margin_pct",
                           "nftables_pattern_step_seconds"})
#: a rate change together with any of these is a pattern change, not a plain rate
PATTERN_KEYS = frozenset({"nftables_pattern_enabled", "nftables_pattern_steps", *TEMPLATE_KEYS})


class RoutedShapingFactory(ShapingFactory):
    """The userspace wrapper that also reports each connection's peer address (the address
    the per-session route lookup uses)."""

    def __init__(self, wrapped: IProtocolFactory, shaper: PortShaper,
                 on_peer: Callable[[IAddress], object]) -> None:
        super().__init__(wrapped, shaper)
        self.on_peer = on_peer

    def buildProtocol(self, addr: IAddress) -> ShapedProtocol | None:  # noqa: N802 - twisted API
        try:
            self.on_peer(addr)
        except Exception:  # noqa: BLE001 - never refuse a connection over bookkeeping
            log.failure("shaping peer hook failed")
        return super().buildProtocol(addr)


def follow_ups(change: ControlsChanged) -> dict[str, Any]:
    """The control changes shaping derives from *change* (unvalidated; empty: none).

    * a plain rate (``nftables_bandwidth_mbps`` without pattern fields) stops a running
      pattern (``nftables_pattern_enabled: false``);
    * a template chosen through the session fields builds its steps from the ladder and
      enables the pattern (nothing when the ladder is unknown: logged, pattern unchanged).
    """
    controls, changed = change.controls, set(change.changed)
    if changed & TEMPLATE_KEYS and "nftables_pattern_steps" not in changed:
        mode = controls.get("nftables_pattern_template_mode", "sliders")
        if mode == "sliders":
            return {}
        try:
            steps = template_steps(mode, list(change.variants),
                                   controls.get("nftables_pattern_margin_pct", 0),
                                   controls.get("nftables_pattern_step_seconds", 12))
        except Exception as exc:  # noqa: BLE001 - no ladder yet: leave the pattern as it is
            log.warn("template {mode} for session {sid}: {err}", mode=mode, sid=change.session_id, err=exc)
            return {}
        wanted = [s.as_dict() for s in steps]
        if controls.get("nftables_pattern_steps") == wanted and controls.get("nftables_pattern_enabled"):
            return {}
        return {"nftables_pattern_steps": wanted, "nftables_pattern_enabled": True}
    if "nftables_bandwidth_mbps" in changed and controls.get("nftables_pattern_enabled") and \
            not changed & PATTERN_KEYS:
        return {"nftables_pattern_enabled": False}
    return {}


class SessionBridge:
    """What the session registry calls on shaping (:class:`streamlab.shaping.host.SessionShaping`)."""

    def __init__(self, service: ShapingService) -> None:
        self.service = service

    def wrap_listener(self, port: int, factory: IProtocolFactory) -> IProtocolFactory:
        """A fresh, uncapped shaper for a new listener (a reused port starts clean)."""
        shaper = self.service.open_port(port)

        def on_peer(addr: IAddress) -> None:
            self.service.peer_seen(port, addr)

        return RoutedShapingFactory(factory, shaper, on_peer)

    def check_controls(self, controls: Mapping[str, Any], port: int) -> None:
        """Raise for merged *controls* this host cannot honour (before anything is stored)."""
        self.service.validate_controls(controls, port)

    def controls_changed(self, change: ControlsChanged) -> Mapping[str, Any]:
        """The port follows the session's new controls; returns the validated follow-up
        changes for the registry to store next (errors are logged, never raised)."""
        try:
            extra = follow_ups(change)
            d = self.service.configure(change.port, {**change.controls, **extra},
                                       session_id=change.session_id, variants=list(change.variants))
            d.addErrback(lambda f: log.warn("shaping port {port}: {err}", port=change.port,
                                            err=f.getErrorMessage()))
            if not extra:
                return {}
            return fields_mod.validate(extra, None, change.controls)
        except Invalid as exc:
            log.warn("shaping follow-up change for session {sid}: {err}", sid=change.session_id, err=exc)
        except Exception:  # noqa: BLE001 - a shaping error must not fail the session change
            log.failure("shaping port {port}: following the controls failed", port=change.port)
        return {}

    def session_removed(self, port: int) -> defer.Deferred[None]:
        """Stop the port's timers and delete its kernel state."""
        return self.service.release(port)

    def runtime_fields(self, port: int) -> Mapping[str, Any]:
        """The shaping fields of the session object on *port*."""
        return self.service.session_fields(port)

    def refresh(self, port: int) -> defer.Deferred[None]:
        """Read *port*'s kernel counters now."""
        return self.service.meter.refresh(port)

    def refresh_all(self) -> defer.Deferred[None]:
        """Read every port's kernel counters now."""
        return self.service.meter.refresh_all()
