"""The shaping subsystem as one IService.

:class:`ShapingService` keeps, per session port, the desired :class:`PortConfig` (from the
session fields), the runtime of its step pattern and transport-fault windows, and makes
the effective shape real through the userspace backend (always) and the kernel backend
(for the features the host supports, see :class:`Capabilities`).

It plugs into the session registry through four extension points (see :meth:`attach`):
a factory wrapper (userspace shaping on every session listener), a release hook (removes
the port's kernel state and runtime), a field provider (runtime fields on the session
object) and ``session.changed`` / ``session.removed`` subscriptions on the event bus.
"""

from __future__ import annotations

import datetime
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

from streamlab.errors import Invalid, NotFound, Unavailable
from streamlab.shaping.kernel import KernelBackend, KernelError
from streamlab.shaping.model import (
    Capabilities,
    Effective,
    FaultWindow,
    KernelPort,
    KernelSupport,
    PatternPosition,
    PortConfig,
    config_from_fields,
    effective,
    kernel_desired,
    resolve_capabilities,
    template_steps,
)
from streamlab.shaping.pattern import FaultRunner, PatternRunner
from streamlab.shaping.userspace import UserspaceBackend

log = Logger()

METER_TICK = 0.1
METER_WINDOW = 6.0
COUNTER_POLL = 1.0
TEMPLATE_KEYS = ("nftables_pattern_template_mode", "nftables_pattern_margin_pct",
                 "nftables_pattern_step_seconds")


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    dt = datetime.datetime.fromtimestamp(ts, tz=datetime.UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


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


class ShapingService(Service):
    """Per-port shaping, patterns and transport faults over the two backends."""

    name = "shaping"

    def __init__(self, config: Any, reactor: Any, *, clock: IReactorTime | None = None,
                 kernel: KernelBackend | None = None) -> None:
        self.config = config
        self.reactor = reactor
        self.clock: IReactorTime = clock if clock is not None else reactor
        self.backend_mode: str = config.shaping.backend
        self.userspace = UserspaceBackend(self.clock)
        if kernel is None and self.backend_mode != "userspace" and sys.platform.startswith("linux"):
            kernel = KernelBackend(reactor, config.shaping.interface)
        self.kernel = kernel
        self.support: KernelSupport | None = None
        self.caps: Capabilities = resolve_capabilities(self.backend_mode, None, _platform())
        if self.backend_mode != "userspace":
            self.caps = Capabilities(self.backend_mode, self.caps.features, False, "starting",
                                     "kernel backend not started yet", _platform())
        self.ports: dict[int, PortRuntime] = {}
        self.registry: Any = None
        self._unsubscribe: list[Any] = []
        self._meter_loop = LoopingCall(self._tick)
        self._meter_loop.clock = self.clock
        self._ticks = 0
        self._kernel_counts: dict[int, dict[str, int]] = {}
        self._class_bytes: dict[int, int] = {}
        self._polling = False

    # ------------------------------------------------------------------ lifecycle

    def startService(self) -> Any:  # noqa: N802 - twisted API
        super().startService()
        self._ensure_meter()
        if self.kernel is None:
            if self.backend_mode != "userspace":
                self.caps = resolve_capabilities(self.backend_mode, KernelSupport(
                    reason=f"kernel backend needs Linux (platform {_platform()})"), _platform())
            return None
        d = self.kernel.start()
        d.addCallback(self._kernel_started)
        d.addErrback(lambda f: log.failure("kernel shaping start failed", f))
        return d

    def _kernel_started(self, support: KernelSupport) -> None:
        self.support = support
        self.caps = resolve_capabilities(self.backend_mode, support, _platform(), self.kernel.interface
                                         if self.kernel else "")
        log.info("shaping backend {b} on {i}: {f} {r}", b=self.backend_mode,
                 i=self.kernel.interface if self.kernel else "", f=dict(self.caps.features),
                 r=self.caps.reason)
        for port in list(self.ports):
            self._apply(port).addErrback(lambda f: None)

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
        """Register with the session registry (wrapper, release hook, field provider) and the bus."""
        self.registry = registry
        registry.factory_wrappers.append(self.wrap_factory)
        registry.release_hooks.append(self.release)
        registry.field_providers.append(self.runtime_fields)
        validators = getattr(registry, "validators", None)
        if isinstance(validators, list):
            validators.append(self.validate_controls)
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
        return self.userspace.wrap(port, factory)

    def release(self, port: int) -> defer.Deferred[Any]:
        """The registry's release hook: stop timers, delete the port's kernel state."""
        rt = self.ports.pop(port, None)
        if rt is not None:
            self._stop_runners(rt)
        self.userspace.remove(port)
        self._class_bytes.pop(port, None)
        self._kernel_counts.pop(port, None)
        if self.kernel is None or not self.caps.uses_kernel:
            return defer.succeed(None)
        d = self.kernel.reconcile({}, ports={port})

        def done(result: Any) -> None:
            if self.kernel is not None:
                self.kernel.forget(port)

        d.addCallback(done)
        d.addErrback(lambda f: log.warn("releasing port {port}: {err}", port=port, err=f.getErrorMessage()))
        return d

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
        }

    def fault_counts(self, port: int) -> tuple[int, int]:
        """(drop, reject) counters of *port*: kernel packets or userspace refusals."""
        us = self.userspace.ports.get(port)
        drop = us.refused_drop if us else 0
        reject = us.refused_reject if us else 0
        kc = self._kernel_counts.get(port, {})
        if self.caps.kernel("transport_drop"):
            drop = kc.get("drop", 0)
        if self.caps.kernel("transport_reject"):
            reject = kc.get("reject", 0)
        return drop, reject

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
        the fault changes; fires when the backends applied it, fails with
        :class:`~streamlab.errors.Unavailable` when the kernel refused (what exists is kept).
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

    @defer.inlineCallbacks
    def preflight(self, port: int, fields: Mapping[str, Any]) -> Any:
        """Apply *fields* to the backends before they are stored (the /api/nftables door):
        :class:`Invalid` when the host cannot do it, :class:`Unavailable` (503) when the
        kernel fails — then the previous state is restored and nothing is stored."""
        cfg = config_from_fields(port, fields)
        rt = self._runtime(port)
        previous = rt.config or PortConfig(port)
        if cfg.fault != previous.fault:
            self.check(cfg)
        if not self.caps.uses_kernel:
            return None
        window = rt.window if cfg.fault == previous.fault else FaultWindow(False, None)
        eff = effective(cfg, rt.position if cfg.pattern_active else None, window)
        desired = kernel_desired(eff, self.caps)
        assert self.kernel is not None
        try:
            yield self.kernel.reconcile({port: desired}, ports={port})
        except KernelError as exc:
            rt.error = str(exc)
            try:
                yield self._apply(port)
            except Exception:  # noqa: BLE001 - best effort restore
                pass
            raise Unavailable("shaping backend failed", detail=str(exc)) from None
        return None

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
        caps = self.caps
        if self.kernel is None or not caps.uses_kernel:
            self._apply_userspace(port, eff, relaxed=False)
            rt.error = ""
            return defer.succeed(None)
        desired = kernel_desired(eff, caps)
        # Until the kernel confirms this state, userspace keeps enforcing everything (no gap
        # while nft/tc run, and an honest fallback when they fail).
        confirmed = self.kernel.applied.get(port, KernelPort()) == desired
        self._apply_userspace(port, eff, relaxed=confirmed)
        if confirmed:
            rt.error = ""
            return defer.succeed(None)
        d = self.kernel.reconcile({port: desired}, ports={port})

        def ok(result: Any) -> Any:
            rt.error = ""
            if self.ports.get(port) is rt and rt.effective == eff:
                self._apply_userspace(port, eff, relaxed=True)
            return result

        def failed(f: Any) -> Any:
            f.trap(KernelError)
            rt.error = f.getErrorMessage()
            raise Unavailable("shaping backend failed", detail=rt.error)

        d.addCallbacks(ok, failed)
        return d

    def _apply_userspace(self, port: int, eff: Effective, relaxed: bool) -> None:
        """Userspace part of *eff*; *relaxed* leaves the kernel-routed features to the kernel."""
        caps = self.caps
        sh = self.userspace.shaper(port)

        def kernel_does(feature: str) -> bool:
            return relaxed and caps.kernel(feature)

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

    def _tick(self) -> None:
        try:
            self._ticks += 1
            now = self.clock.seconds()
            kernel_rate = self.kernel is not None and self.caps.kernel("rate")
            for port, rt in list(self.ports.items()):
                applied = self.kernel.applied.get(port) if self.kernel is not None else None
                if kernel_rate and applied is not None and applied.rate_bps is not None \
                        and port in self._class_bytes:
                    total = self._class_bytes[port]
                else:
                    sh = self.userspace.ports.get(port)
                    total = sh.bytes_out if sh else 0
                rt.meter.sample(now, total)
            if self.kernel is not None and self.caps.uses_kernel and self.ports and not self._polling:
                self._poll_kernel()
            if not self.ports and self._meter_loop.running:
                self._meter_loop.stop()  # idle daemon: no wake-ups
        except Exception:  # noqa: BLE001 - periodic tasks survive their errors
            log.failure("shaping meter tick failed")

    def _poll_kernel(self) -> None:
        assert self.kernel is not None
        self._polling = True
        ds = []
        if self.caps.kernel("rate") and any(s.rate_bps is not None for s in self.kernel.applied.values()):
            ds.append(self.kernel.class_bytes().addCallback(self._class_bytes.update))
        if self._ticks % int(COUNTER_POLL / METER_TICK) == 0 and self.caps.packet_counters:
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
        out: dict[str, Any] = {
            "port": port,
            "session_id": rt.session_id,
            "backend": self.caps.backend,
            "features": dict(self.caps.features),
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
                           "delay_ms": applied.delay_ms, "loss_pct": applied.loss_pct,
                           "rule": applied.rule_kind, "rule_packets": applied.rule_packets},
            },
            "mbps_shaper_rate": rt.meter.rate,
            "mbps_shaper_avg": rt.meter.avg,
            "error": rt.error,
        }
        if applied.rate_bps is not None:
            out["kernel_rate_mbps"] = applied.rate_bps / 1e6
        return out

    def debug_info(self) -> dict[str, Any]:
        """What ``/debug`` shows: capabilities, kernel objects, per-port summary."""
        out: dict[str, Any] = {"capabilities": self.caps.as_dict(), "interface": self.caps.interface,
                               "ports": self.status()["ports"]}
        if self.kernel is not None:
            out["kernel"] = {"support": repr(self.support),
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
            if "kernel_rate_mbps" in full:
                entry["kernel_rate_mbps"] = full["kernel_rate_mbps"]
            out[str(port)] = entry
        return {"backend": self.caps.backend, "features": self.caps.as_dict()["features"], "ports": out}


def _num(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


def _platform() -> str:
    return "linux" if sys.platform.startswith("linux") else sys.platform
