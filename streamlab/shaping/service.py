"""The shaping subsystem as one IService.

:class:`ShapingService` keeps, per session port, the desired :class:`PortConfig` (from the
session fields), the runtime of its step pattern and transport-fault windows, and makes
the effective shape real through the userspace backend (always) and the kernel backend.

Which backend carries each feature is decided **per session**
(:func:`streamlab.shaping.route.place`): the first connection on the port names the
player's address, the kernel backend looks the route up on its netlink thread, proves the
interface with a scratch rule when it has not yet, and only then does the kernel take
the features it proved; everything else (loopback, no route, not proven, refused at run
time, IPv6 rate) stays in userspace, and the session says so.  The bytes the player
acknowledged (TCP_INFO) are measured next to the cap, and a cap that does not hold raises
a warning (:class:`streamlab.shaping.goodput.CapWatch`).

It plugs into the session registry through four extension points (see :meth:`attach`):
a factory wrapper (userspace shaping on every session listener), a release hook (removes
the port's kernel state and runtime), a field provider (runtime fields on the session
object) and ``session.changed`` / ``session.removed`` subscriptions on the event bus.
"""

from __future__ import annotations

import sys
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.interfaces import IProtocolFactory, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from streamlab.errors import Invalid, NotFound
from streamlab.formats import iso_ms_or_none as _iso
from streamlab.formats import json_number as _num
from streamlab.proxy.sockets import pending_user_bytes, socket_of
from streamlab.proxy.tcpinfo import read_tcp_info
from streamlab.shaping.goodput import CapWatch
from streamlab.shaping.kernel import KernelBackend, KernelError
from streamlab.shaping.model import (
    Capabilities,
    Effective,
    FaultWindow,
    KernelPort,
    PatternPosition,
    PortConfig,
    config_from_fields,
    effective,
    host_capabilities,
    kernel_desired,
    template_steps,
)
from streamlab.shaping.pattern import FaultRunner, PatternRunner
from streamlab.shaping.route import RATE_FEATURES, Carrier, NftProof, Placement, Route, place
from streamlab.shaping.userspace import ShapingFactory, UserspaceBackend

log = Logger()

METER_TICK = 0.1
METER_WINDOW = 6.0
COUNTER_POLL = 1.0
TEMPLATE_KEYS = ("nftables_pattern_template_mode", "nftables_pattern_margin_pct",
                 "nftables_pattern_step_seconds")


class RateMeter:
    """Mbps over the last tick (100 ms) and over the last 6 s from a byte counter."""

    def __init__(self, window: float = METER_WINDOW) -> None:
        self.window = window
        self.samples: deque[tuple[float, int]] = deque()
        self.rate = 0.0
        self.avg = 0.0

    def sample(self, now: float, total_bytes: int) -> None:
        """Record the counter at *now* and update both rates."""
        if self.samples and total_bytes < self.samples[-1][1]:
            self.samples.clear()  # counter reset (e.g. class recreated)
        prev = self.samples[-1] if self.samples else None
        self.samples.append((now, total_bytes))
        while len(self.samples) > 2 and now - self.samples[0][0] > self.window + 1e-9:
            self.samples.popleft()
        if prev is not None and now > prev[0]:
            self.rate = round((total_bytes - prev[1]) * 8 / (now - prev[0]) / 1e6, 3)
        first = self.samples[0]
        if now > first[0]:
            self.avg = round((total_bytes - first[1]) * 8 / (now - first[0]) / 1e6, 3)


class RoutedShapingFactory(ShapingFactory):
    """The userspace wrapper that also reports each connection's peer address (the address
    the per-session route lookup uses)."""

    def __init__(self, wrapped: IProtocolFactory, shaper: Any, on_peer: Any) -> None:
        super().__init__(wrapped, shaper)
        self.on_peer = on_peer

    def buildProtocol(self, addr: Any) -> Any:  # noqa: N802 - twisted API
        try:
            self.on_peer(addr)
        except Exception:  # noqa: BLE001 - never refuse a connection over bookkeeping
            log.failure("shaping peer hook failed")
        return super().buildProtocol(addr)


@dataclass
class PortRuntime:
    """Everything the service keeps for one session port."""

    port: int
    session_id: str | None = None
    config: PortConfig | None = None
    variants: list[Any] = field(default_factory=list)
    pattern: PatternRunner | None = None
    position: PatternPosition | None = None
    faults: FaultRunner | None = None
    window: FaultWindow = field(default_factory=lambda: FaultWindow(False, None))
    fault_started_at: float | None = None
    meter: RateMeter = field(default_factory=RateMeter)
    effective: Effective = field(default_factory=Effective)
    error: str = ""
    peer: str = ""
    route: Route = field(default_factory=Route)
    placement: Placement = field(default_factory=Placement)
    refused: dict[str, str] = field(default_factory=dict)
    watch: CapWatch = field(default_factory=CapWatch)
    acked: dict[Any, int] = field(default_factory=dict)
    acked_total: int = 0
    #: the port's written-bytes counter when every byte written had been acknowledged
    acked_settled: int | None = None
    last_apply: defer.Deferred[Any] | None = None


class ShapingService(Service):
    """Per-port shaping, patterns and transport faults over the two backends."""

    name = "shaping"

    def __init__(self, config: Any, reactor: Any, *, clock: IReactorTime | None = None,
                 kernel: KernelBackend | None = None) -> None:
        self.config = config
        self.reactor = reactor
        self.clock: IReactorTime = clock if clock is not None else reactor
        self.backend_mode: str = config.shaping.backend
        self.only_interface: str = config.shaping.interface
        self.userspace = UserspaceBackend(self.clock)
        if kernel is None and self.backend_mode != "userspace" and sys.platform.startswith("linux"):
            kernel = KernelBackend(reactor, config.shaping.interface)
        self.kernel = kernel
        self.nft_proof: NftProof | None = None
        self.caps: Capabilities = host_capabilities(self.backend_mode, {}, None, platform=_platform())
        if self.backend_mode != "userspace":
            self.caps = host_capabilities(self.backend_mode, {}, None, status="starting",
                                          reason="kernel backend not started yet", platform=_platform())
        self.ports: dict[int, PortRuntime] = {}
        self.registry: Any = None
        self._unsubscribe: list[Any] = []
        self._meter_loop = LoopingCall(self._tick)
        self._meter_loop.clock = self.clock
        self._ticks = 0
        self._kernel_counts: dict[int, dict[str, int]] = {}
        self._class_bytes: dict[int, int] = {}
        self._polling = False
        #: cap-exceeded warnings raised since start (``streamlab_shaping_cap_exceeded_total``)
        self.warnings_total = 0
        #: ``(port) -> cumulative bytes the player acknowledged``; replaceable in tests
        self.acked_bytes = self._acked_bytes

    @property
    def warnings_active(self) -> int:
        """Session ports whose cap is not holding right now."""
        return sum(1 for rt in self.ports.values() if rt.watch.warning)

    # ------------------------------------------------------------------ lifecycle

    def startService(self) -> Any:  # noqa: N802 - twisted API
        super().startService()
        self._ensure_meter()
        if self.kernel is None:
            if self.backend_mode != "userspace":
                self.caps = host_capabilities(self.backend_mode, {}, None, status="degraded",
                                              reason=f"kernel backend needs Linux (platform {_platform()})",
                                              platform=_platform())
            return None
        d = self.kernel.start()
        d.addCallback(self._kernel_started)
        d.addErrback(self._kernel_start_failed)
        return d

    def _kernel_started(self, nft: NftProof) -> None:
        self.nft_proof = nft
        self._refresh_caps()
        log.info("shaping backend {b}: proven {f} {r}", b=self.backend_mode, f=dict(self.caps.features),
                 r=self.caps.reason)
        for port in list(self.ports):
            self._place(port)

    def _kernel_start_failed(self, f: Any) -> None:
        log.failure("kernel shaping start failed", f)
        self.caps = host_capabilities(self.backend_mode, {}, None, status="degraded",
                                      reason=f"kernel backend failed to start: {f.getErrorMessage()}",
                                      platform=_platform())

    def _refresh_caps(self) -> None:
        proofs = dict(self.kernel.proofs) if self.kernel is not None else {}
        self.caps = host_capabilities(self.backend_mode, proofs, self.nft_proof, platform=_platform())

    def stopService(self) -> Any:  # noqa: N802 - twisted API
        super().stopService()
        if self._meter_loop.running:
            self._meter_loop.stop()
        for rt in self.ports.values():
            self._stop_runners(rt)
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe.clear()
        if self.kernel is not None:
            return self.kernel.stop()
        return None

    # ------------------------------------------------------------------ registry wiring

    def attach(self, registry: Any, bus: Any = None) -> None:
        """Register with the session registry (wrapper, release hook, field provider,
        refresher) and the bus."""
        self.registry = registry
        registry.factory_wrappers.append(self.wrap_factory)
        registry.release_hooks.append(self.release)
        registry.field_providers.append(self.runtime_fields)
        validators = getattr(registry, "validators", None)
        if isinstance(validators, list):
            validators.append(self.validate_controls)
        refreshers = getattr(registry, "refreshers", None)
        if isinstance(refreshers, list):
            refreshers.append(lambda session: self.refresh(int(session.port)))
        bulk = getattr(registry, "bulk_refreshers", None)
        if isinstance(bulk, list):
            bulk.append(self.refresh_all)
        if bus is not None:
            self._unsubscribe.append(bus.subscribe("session.changed", self._on_session_changed))
            self._unsubscribe.append(bus.subscribe("session.removed", self._on_session_removed))

    def wrap_factory(self, port: int, factory: IProtocolFactory) -> IProtocolFactory:
        """The registry's factory wrapper: a fresh, uncapped shaper for a new listener."""
        stale = self.ports.pop(port, None)
        if stale is not None:  # a new session on a reused port starts clean
            self._stop_runners(stale)
        self.userspace.remove(port)
        self._runtime(port)
        return RoutedShapingFactory(factory, self.userspace.shaper(port),
                                    lambda addr, port=port: self.peer_seen(port, addr))

    def release(self, port: int) -> defer.Deferred[Any]:
        """The registry's release hook: stop timers, delete the port's kernel state."""
        rt = self.ports.pop(port, None)
        if rt is not None:
            self._stop_runners(rt)
        self.userspace.remove(port)
        self._class_bytes.pop(port, None)
        self._kernel_counts.pop(port, None)
        if self.kernel is None:
            return defer.succeed(None)
        d = self.kernel.reconcile({}, ports={port})

        def done(result: Any) -> None:
            if self.kernel is not None:
                self.kernel.forget(port)

        d.addCallback(done)
        d.addErrback(lambda f: log.warn("releasing port {port}: {err}", port=port, err=f.getErrorMessage()))
        return d

    # ------------------------------------------------------------------ per-session backend choice

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
            return self._place(port)
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
            self._place(port)  # userspace (named "not proven yet") while the proof runs
            d = self.kernel.prove(route.interface)

            def proven(_: Any) -> defer.Deferred[Any]:
                self._refresh_caps()
                return self._place(port)

            d.addCallback(proven)
            return d
        return self._place(port)

    def _placement_for(self, rt: PortRuntime) -> Placement:
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

    def _place(self, port: int) -> defer.Deferred[Any]:
        """Recompute the port's placement; re-apply (and say so) when it changed."""
        rt = self.ports.get(port)
        if rt is None:
            return defer.succeed(None)
        new = self._placement_for(rt)
        if new == rt.placement:
            return defer.succeed(None)
        rt.placement = new
        log.info("shaping port {port} (player {peer}): {carriers}", port=port, peer=rt.peer or "?",
                 carriers=_describe(new))
        d = self._apply(port)
        self._notify(rt)
        return d

    # ------------------------------------------------------------------ session fields

    def runtime_fields(self, session: Any) -> Mapping[str, Any]:
        """The registry's field provider: runtime shaping/transport fields of *session*."""
        rt = self.ports.get(int(session.port))
        if rt is None:
            return {}
        return self._runtime_fields(rt)

    def _runtime_fields(self, rt: PortRuntime) -> dict[str, Any]:
        cfg = rt.config or PortConfig(rt.port)
        running = cfg.pattern_active and rt.position is not None
        drop, reject = self.fault_counts(rt.port)
        rate = rt.placement.carrier("rate")
        return {
            "transport_fault_active": bool(rt.window.active),
            "transport_fault_started_at": _iso(rt.fault_started_at) if rt.window.active else None,
            "transport_fault_drop_packets": drop,
            "transport_fault_reject_packets": reject,
            "nftables_pattern_step": (rt.position.index + 1) if running and rt.position else 0,
            "nftables_pattern_rate_runtime_mbps": _num(rt.position.rate_mbps) if running and rt.position
            else _num(cfg.rate_mbps),
            "mbps_shaper_rate": rt.meter.rate,
            "mbps_shaper_avg": rt.meter.avg,
            "shaping_backend": rate.backend,
            "shaping_interface": rate.interface,
            "shaping_carriers": rt.placement.as_dict(),
            "shaping_route": rt.route.as_dict(),
            "shaping_cap_mbps": rt.effective.rate_mbps,
            "shaping_goodput_mbps": rt.watch.goodput_mbps,
            "shaping_warning": rt.watch.warning,
            "shaping_error": rt.error,
        }

    def fault_counts(self, port: int) -> tuple[int, int]:
        """(drop, reject) counters of *port*: kernel packets plus userspace refusals (only
        one backend carries the fault at a time; the sum never loses a count)."""
        us = self.userspace.ports.get(port)
        kc = self._kernel_counts.get(port, {})
        drop = (us.refused_drop if us else 0) + kc.get("drop", 0)
        reject = (us.refused_reject if us else 0) + kc.get("reject", 0)
        return drop, reject

    def refresh(self, port: int) -> defer.Deferred[Any]:
        """Read the port's kernel counters (nft rule counters, htb class bytes) *now*, so an
        answer built right after reflects every packet counted so far."""
        if self.kernel is None or port not in self.ports:
            return defer.succeed(None)
        kernel = self.kernel
        state = kernel.applied.get(port)
        return self._read_kernel(
            rules=port in kernel.handles or port in kernel.drop_base or port in kernel.reject_base,
            classes=state is not None and state.rate_bps is not None)

    def refresh_all(self) -> defer.Deferred[Any]:
        """Every port's kernel counters read now in one batch (one ``nft list chain``, one
        class dump: both cover all ports), for the list answers (``GET /api/sessions``,
        ``GET /api/nftables/status``)."""
        if self.kernel is None or not self.ports:
            return defer.succeed(None)
        kernel = self.kernel
        return self._read_kernel(
            rules=bool(kernel.handles or kernel.drop_base or kernel.reject_base),
            classes=any(s.rate_bps is not None for s in kernel.applied.values()))

    def _read_kernel(self, rules: bool, classes: bool) -> defer.Deferred[Any]:
        assert self.kernel is not None
        ds = []
        if rules:
            ds.append(self.kernel.counters().addCallback(self._got_counters))
        if classes:
            ds.append(self.kernel.class_bytes().addCallback(self._class_bytes.update))
        d = defer.DeferredList(ds, consumeErrors=True)
        d.addCallback(lambda _: None)
        return d

    def settled(self, port: int) -> defer.Deferred[Any]:
        """Fires when the last change of *port* reached its backends (or fell back)."""
        rt = self.ports.get(port)
        if rt is None or rt.last_apply is None:  # (``called`` is True while a chain is paused)
            return defer.succeed(None)
        out: defer.Deferred[Any] = defer.Deferred()

        def fire(result: Any) -> Any:
            if not out.called:
                out.callback(None)
            return result

        rt.last_apply.addBoth(fire)
        return out

    def _on_session_changed(self, event: Mapping[str, Any]) -> None:
        port = int(event["port"])
        sid = str(event["session_id"])
        controls = event.get("controls") or {}
        changed = set(event.get("changed") or ())
        variants = self._variants(sid)
        if changed & set(TEMPLATE_KEYS) and "nftables_pattern_steps" not in changed:
            self.clock.callLater(0, self._expand_template, sid, controls, variants)
        if "nftables_bandwidth_mbps" in changed and controls.get("nftables_pattern_enabled") and \
                not changed & {"nftables_pattern_enabled", "nftables_pattern_steps", *TEMPLATE_KEYS}:
            # A plain rate stops the pattern (and the session says so).
            controls = {**controls, "nftables_pattern_enabled": False}
            self.clock.callLater(0, self._patch_quietly, sid, {"nftables_pattern_enabled": False})
        d = self.configure(port, controls, session_id=sid, variants=variants)
        d.addErrback(lambda f: log.warn("shaping port {port}: {err}", port=port, err=f.getErrorMessage()))

    def _patch_quietly(self, sid: str, set_: Mapping[str, Any]) -> None:
        if self.registry is None:
            return
        try:
            self.registry.patch(sid, set_)
        except Exception as exc:  # noqa: BLE001 - session gone or changed meanwhile
            log.warn("shaping follow-up change for session {sid}: {err}", sid=sid, err=exc)

    def _on_session_removed(self, event: Mapping[str, Any]) -> None:
        port = int(event["port"])
        if port in self.ports:
            self.release(port)

    def _variants(self, sid: str) -> list[Any]:
        if self.registry is None:
            return []
        try:
            return list(self.registry.get(sid).manifest_variants or [])
        except Exception:  # noqa: BLE001 - session gone
            return []

    def _expand_template(self, sid: str, controls: Mapping[str, Any], variants: list[Any]) -> None:
        """A template chosen through PATCH: build its steps from the ladder and store them."""
        mode = controls.get("nftables_pattern_template_mode", "sliders")
        if mode == "sliders" or self.registry is None:
            return
        try:
            steps = template_steps(mode, variants, controls.get("nftables_pattern_margin_pct", 0),
                                   controls.get("nftables_pattern_step_seconds", 12))
        except Exception as exc:  # noqa: BLE001 - no ladder yet: leave the pattern as it is
            log.warn("template {mode} for session {sid}: {err}", mode=mode, sid=sid, err=exc)
            return
        wanted = [s.as_dict() for s in steps]
        if controls.get("nftables_pattern_steps") == wanted and controls.get("nftables_pattern_enabled"):
            return
        try:
            self.registry.patch(sid, {"nftables_pattern_steps": wanted, "nftables_pattern_enabled": True})
        except Exception as exc:  # noqa: BLE001
            log.warn("template {mode} for session {sid}: {err}", mode=mode, sid=sid, err=exc)

    # ------------------------------------------------------------------ desired state

    def _runtime(self, port: int) -> PortRuntime:
        rt = self.ports.get(port)
        if rt is None:
            rt = self.ports[port] = PortRuntime(port, config=PortConfig(port))
            rt.placement = self._placement_for(rt)
            self._ensure_meter()
        return rt

    def _ensure_meter(self) -> None:
        """The 100 ms meter runs only while the service runs and some port exists."""
        if self.running and self.ports and not self._meter_loop.running:
            self._meter_loop.start(METER_TICK, now=False)

    def validate_controls(self, controls: Mapping[str, Any], port: int = 0) -> None:
        """Raise :class:`Invalid` for control values this host cannot honour (the registry may
        call it from PATCH validation with the merged controls; the /api/nftables door does)."""
        self.check(config_from_fields(port, controls))
        mode = controls.get("nftables_pattern_template_mode", "sliders")
        if mode != "sliders" and self.registry is not None:
            try:
                variants = list(self.registry.get_by_port(port).manifest_variants or [])
            except NotFound:
                return
            # Conflict (409) when the session's ladder is not known yet
            template_steps(mode, variants, controls.get("nftables_pattern_margin_pct", 0),
                           controls.get("nftables_pattern_step_seconds", 12))

    def check(self, cfg: PortConfig) -> None:
        """Refuse what this host cannot do (packets units need kernel transport faults)."""
        kernel_fault = self.caps.kernel(f"transport_{cfg.fault.type}")
        if cfg.fault.armed and cfg.fault.units == "packets" and not kernel_fault:
            raise Invalid("invalid", detail="packet-counted transport faults need the kernel backend",
                          fields={"transport_consecutive_units":
                                  "packets needs the kernel backend (this host shapes in userspace)"})

    def configure(self, port: int, fields: Mapping[str, Any] | PortConfig, *, session_id: str | None = None,
                  variants: list[Any] | None = None) -> defer.Deferred[Any]:
        """Make *port* follow the session *fields* (or a ready :class:`PortConfig`).

        Restarts the pattern when its steps/enable flag change and the fault windows when
        the fault changes; fires when the backends applied it (a kernel refusal moves the
        refused features to userspace and still fires, see :meth:`_kernel_refused`).
        """
        cfg = fields if isinstance(fields, PortConfig) else config_from_fields(port, fields)
        rt = self._runtime(port)
        if session_id is not None:
            rt.session_id = session_id
        if variants is not None:
            rt.variants = variants
        old = rt.config or PortConfig(port)
        rt.config = cfg
        if (cfg.pattern_active, cfg.steps) != (old.pattern_active, old.steps) or \
                (cfg.pattern_active and rt.pattern is None):
            self._restart_pattern(rt)
        if cfg.fault != old.fault or (cfg.fault.armed and rt.faults is None and not rt.window.expired):
            self._restart_faults(rt)
        return self._apply(port)

    def preflight(self, port: int, fields: Mapping[str, Any]) -> None:
        """Refuse (:class:`Invalid`) what no backend can do, before anything is stored (the
        /api/nftables door).  A kernel refusal is not an error any more: the refused
        features fall back to userspace and the session names the backend that took them."""
        cfg = config_from_fields(port, fields)
        rt = self._runtime(port)
        previous = rt.config or PortConfig(port)
        if cfg.fault != previous.fault:
            self.check(cfg)

    def _restart_pattern(self, rt: PortRuntime) -> None:
        if rt.pattern is not None:
            rt.pattern.stop()
            rt.pattern = None
        rt.position = None
        cfg = rt.config
        if cfg is None or not cfg.pattern_active:
            return

        def on_step(pos: PatternPosition, rt: PortRuntime = rt) -> None:
            rt.position = pos
            if rt.pattern is not None:  # not during start(): configure() applies right after
                self._apply(rt.port).addErrback(lambda f: log.warn(
                    "pattern step on port {port}: {err}", port=rt.port, err=f.getErrorMessage()))
                self._notify(rt)

        runner = PatternRunner(self.clock, cfg.steps, on_step)
        rt.position = runner.start()
        rt.pattern = runner

    def _restart_faults(self, rt: PortRuntime) -> None:
        if rt.faults is not None:
            rt.faults.stop()
            rt.faults = None
        rt.window = FaultWindow(False, None)
        rt.fault_started_at = None
        cfg = rt.config
        if cfg is None or not cfg.fault.armed:
            return
        kind = cfg.fault.type

        def on_change(win: FaultWindow, on_edge: bool, rt: PortRuntime = rt) -> None:
            rt.window = win
            if on_edge:
                rt.fault_started_at = self.clock.seconds()
                if self.registry is not None and rt.session_id is not None:
                    try:
                        self.registry.bump_fault_counter(rt.session_id, f"transport_{kind}")
                    except Exception:  # noqa: BLE001
                        log.failure("bump_fault_counter failed")
            if rt.faults is not None:
                self._apply(rt.port).addErrback(lambda f: log.warn(
                    "transport fault on port {port}: {err}", port=rt.port, err=f.getErrorMessage()))
            self._notify(rt)

        def on_expire(rt: PortRuntime = rt) -> None:
            # One-shot finished: disarm like the HTTP rules do (type back to none, new revision).
            if self.registry is not None and rt.session_id is not None:
                try:
                    self.registry.patch(rt.session_id, {"transport_failure_type": "none"})
                except Exception:  # noqa: BLE001
                    log.failure("one-shot transport fault disarm failed")

        runner = FaultRunner(self.clock, cfg.fault, on_change, on_expire)
        runner.start()  # reports the first window; configure() applies it
        rt.faults = runner if runner.running else None

    def _stop_runners(self, rt: PortRuntime) -> None:
        if rt.pattern is not None:
            rt.pattern.stop()
            rt.pattern = None
        if rt.faults is not None:
            rt.faults.stop()
            rt.faults = None

    def _notify(self, rt: PortRuntime) -> None:
        if self.registry is not None and rt.session_id is not None:
            try:
                self.registry.notify(rt.session_id)
            except Exception:  # noqa: BLE001
                log.failure("registry.notify failed")

    # ------------------------------------------------------------------ applying

    def _apply(self, port: int) -> defer.Deferred[Any]:
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
            self._refresh_caps()
        if not new:  # nothing left to move: keep what userspace enforces, do not loop
            return defer.succeed(None)
        for f in new:
            rt.refused[f] = reason
        if self.ports.get(rt.port) is not rt:
            return defer.succeed(None)
        rt.placement = self._placement_for(rt)
        self._notify(rt)
        d = self._apply(rt.port)
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

    # ------------------------------------------------------------------ metrics

    def _acked_bytes(self, port: int) -> int:
        """Cumulative bytes the player acknowledged on *port* (TCP_INFO of every open
        connection; a closed connection keeps what it had at its last reading)."""
        rt = self.ports.get(port)
        sh = self.userspace.ports.get(port)
        if rt is None or sh is None:
            return 0
        if rt.acked_settled == sh.bytes_out and sh.conns.issubset(rt.acked):
            return rt.acked_total  # nothing written since all was acknowledged: no read
        seen: dict[Any, int] = {}
        settled = True
        for conn in list(sh.conns):
            info = read_tcp_info(socket_of(conn))
            if info is None:
                settled = False
                continue
            if info.notsent_bytes or info.unacked or pending_user_bytes(conn):
                settled = False
            last = rt.acked.get(conn, 0)
            if info.bytes_acked > last:
                rt.acked_total += info.bytes_acked - last
            seen[conn] = max(last, info.bytes_acked)
        rt.acked = seen
        rt.acked_settled = sh.bytes_out if settled else None
        return rt.acked_total

    def _tick(self) -> None:
        try:
            self._ticks += 1
            now = self.clock.seconds()
            for port, rt in list(self.ports.items()):
                applied = self.kernel.applied.get(port) if self.kernel is not None else None
                if applied is not None and applied.rate_bps is not None and port in self._class_bytes:
                    total = self._class_bytes[port]
                else:
                    sh = self.userspace.ports.get(port)
                    total = sh.bytes_out if sh else 0
                rt.meter.sample(now, total)
                self._watch(rt, now)
            if self.kernel is not None and self.ports and not self._polling and \
                    (self.kernel.applied or self.kernel.handles):
                self._poll_kernel()
            if not self.ports and self._meter_loop.running:
                self._meter_loop.stop()  # idle daemon: no wake-ups
        except Exception:  # noqa: BLE001 - periodic tasks survive their errors
            log.failure("shaping meter tick failed")

    def _watch(self, rt: PortRuntime, now: float) -> None:
        """Goodput next to the cap; a cap that does not hold raises the warning."""
        rate = rt.placement.carrier("rate")
        where = f"{rate.backend}/{rate.interface}" if rate.interface else rate.backend
        edge = rt.watch.sample(now, self.acked_bytes(rt.port), rt.effective.rate_mbps, where)
        if edge == "raised":
            self.warnings_total += 1
            log.warn("shaping port {port} (session {sid}): {warning}", port=rt.port, sid=rt.session_id,
                     warning=rt.watch.warning)
            if rate.backend == "kernel" and "rate" not in rt.refused:
                # the kernel class does not see this player's traffic (NAT, another path):
                # let userspace hold the cap instead
                self._kernel_refused(rt, f"kernel cap not effective: {rt.watch.warning}", list(RATE_FEATURES))
            self._notify(rt)
        elif edge == "cleared":
            log.info("shaping port {port}: cap holds again ({mbps} Mbps measured)", port=rt.port,
                     mbps=rt.watch.goodput_mbps)
            self._notify(rt)

    def _poll_kernel(self) -> None:
        assert self.kernel is not None
        self._polling = True
        ds = []
        if any(s.rate_bps is not None for s in self.kernel.applied.values()):
            ds.append(self.kernel.class_bytes().addCallback(self._class_bytes.update))
        if self._ticks % int(COUNTER_POLL / METER_TICK) == 0 and (self.kernel.handles or self.kernel.drop_base
                                                                 or self.kernel.reject_base):
            ds.append(self.kernel.counters().addCallback(self._got_counters))

        def done(_: Any) -> None:
            self._polling = False

        d = defer.DeferredList(ds, consumeErrors=True)
        d.addCallback(done)

    def _got_counters(self, counts: dict[int, dict[str, int]]) -> None:
        changed = [p for p, c in counts.items() if self._kernel_counts.get(p) != c]
        self._kernel_counts.update(counts)
        for port in changed:
            rt = self.ports.get(port)
            if rt is not None:
                self._notify(rt)

    # ------------------------------------------------------------------ status

    def port_status(self, port: int) -> dict[str, Any]:
        """Desired and applied state of one port (``GET /api/nftables/port/{port}``)."""
        rt = self._runtime(port)
        cfg = rt.config or PortConfig(port)
        eff = rt.effective
        sh = self.userspace.ports.get(port)
        applied = self.kernel.applied.get(port, KernelPort()) if self.kernel is not None else KernelPort()
        drop, reject = self.fault_counts(port)
        rate = rt.placement.carrier("rate")
        out: dict[str, Any] = {
            "port": port,
            "session_id": rt.session_id,
            "backend": self.caps.backend,
            "features": {f: c.backend for f, c in rt.placement.carriers.items()},
            "carriers": rt.placement.as_dict(),
            "shaping_backend": rate.backend,
            "shaping_interface": rate.interface,
            "route": rt.route.as_dict(),
            "rate_mbps": _num(cfg.rate_mbps),
            "delay_ms": _num(cfg.delay_ms),
            "loss_pct": _num(cfg.loss_pct),
            "pattern_enabled": cfg.pattern_active,
            "pattern_steps": [s.as_dict() for s in cfg.steps],
            "pattern_step": (rt.position.index + 1) if cfg.pattern_active and rt.position else 0,
            "pattern_rate_runtime_mbps": _num(rt.position.rate_mbps) if cfg.pattern_active and rt.position
            else _num(cfg.rate_mbps),
            "transport_fault": cfg.fault.type,
            "transport_fault_active": rt.window.active,
            "transport_fault_drop_packets": drop,
            "transport_fault_reject_packets": reject,
            "effective": {"rate_mbps": eff.rate_mbps, "delay_ms": eff.delay_ms, "loss_pct": eff.loss_pct,
                          "fault": eff.fault},
            "applied": {
                "userspace": {"rate_mbps": sh.rate_mbps if sh else None,
                              "delay_ms": round(sh.delay * 1000, 3) if sh else 0,
                              "loss_pct": round(sh.loss * 100, 3) if sh else 0,
                              "fault": sh.fault if sh else "none",
                              "connections": len(sh.conns) if sh else 0},
                "kernel": {"rate_mbps": (applied.rate_bps / 1e6) if applied.rate_bps is not None else None,
                           "interface": applied.interface or None,
                           "delay_ms": applied.delay_ms, "loss_pct": applied.loss_pct,
                           "rule": applied.rule_kind, "rule_packets": applied.rule_packets},
            },
            "mbps_shaper_rate": rt.meter.rate,
            "mbps_shaper_avg": rt.meter.avg,
            "cap_mbps": eff.rate_mbps,
            "goodput_mbps": rt.watch.goodput_mbps,
            "warning": rt.watch.warning,
            "error": rt.error,
        }
        if applied.rate_bps is not None:
            out["kernel_rate_mbps"] = applied.rate_bps / 1e6
        return out

    def debug_info(self) -> dict[str, Any]:
        """What ``/debug`` shows: capabilities, kernel objects, per-port summary."""
        out: dict[str, Any] = {"capabilities": self.caps.as_dict(), "ports": self.status()["ports"]}
        if self.kernel is not None:
            out["kernel"] = {"nft": repr(self.nft_proof),
                             "proofs": {k: repr(v) for k, v in self.kernel.proofs.items()},
                             "applied": {str(p): repr(s) for p, s in self.kernel.applied.items()},
                             "rule_handles": {str(p): h for p, h in self.kernel.handles.items()}}
        return out

    def status(self, ports: list[int] | None = None) -> dict[str, Any]:
        """``GET /api/nftables/status``: backend and every port's summary."""
        out: dict[str, Any] = {}
        for port in sorted(self.ports if ports is None else ports):
            full = self.port_status(port)
            entry = {k: full[k] for k in ("rate_mbps", "delay_ms", "loss_pct", "pattern_enabled",
                                          "pattern_step", "transport_fault")}
            entry["transport_fault_active"] = full["transport_fault_active"]
            entry["transport_fault_drop_packets"] = full["transport_fault_drop_packets"]
            entry["transport_fault_reject_packets"] = full["transport_fault_reject_packets"]
            entry.update({"shaping_backend": full["shaping_backend"],
                          "shaping_interface": full["shaping_interface"],
                          "goodput_mbps": full["goodput_mbps"], "warning": full["warning"]})
            if "kernel_rate_mbps" in full:
                entry["kernel_rate_mbps"] = full["kernel_rate_mbps"]
            out[str(port)] = entry
        return {"backend": self.caps.backend, "features": self.caps.as_dict()["features"], "ports": out}


def _platform() -> str:
    return "linux" if sys.platform.startswith("linux") else sys.platform


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
