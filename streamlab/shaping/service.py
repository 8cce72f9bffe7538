"""The shaping subsystem as one IService.

:class:`ShapingService` keeps, per session port, the desired :class:`PortConfig` (from the
session fields) and the runtime of its step pattern and transport-fault windows, starts
the kernel backend (leftover removal, proofs, capabilities) and answers the
``/api/nftables`` door: :meth:`ShapingService.change` validates a change like ``PATCH``,
refuses (400, nothing stored) what no backend can do, stores it through the registry and
fires once the backends applied it.

Its parts: :mod:`streamlab.shaping.carriers` (which backend carries each feature of a
session, and applying it), :mod:`streamlab.shaping.meter` (rates, goodput, counters),
:mod:`streamlab.shaping.status` (the views), :mod:`streamlab.shaping.bridge` (what the
session registry calls: :meth:`ShapingService.attach`).  The service changes sessions
only through :class:`streamlab.shaping.host.SessionHost`.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from streamlab.config import Config
from streamlab.errors import Invalid, NotFound
from streamlab.proxy import fields as fields_mod
from streamlab.shaping import status as views
from streamlab.shaping.bridge import SessionBridge
from streamlab.shaping.carriers import Carriers
from streamlab.shaping.host import SessionHost, SessionShaping, SessionView
from streamlab.shaping.kernel import KernelBackend
from streamlab.shaping.meter import ShapingMeter
from streamlab.shaping.model import (
    Capabilities,
    FaultWindow,
    PatternPosition,
    PortConfig,
    config_from_fields,
    host_capabilities,
    template_fields,
    template_steps,
)
from streamlab.shaping.pattern import FaultRunner, PatternRunner
from streamlab.shaping.reconcile import KernelPort
from streamlab.shaping.route import NftProof
from streamlab.shaping.runtime import PortRuntime
from streamlab.shaping.userspace import PortShaper, UserspaceBackend

if TYPE_CHECKING:
    from streamlab.interfaces import IDaemonReactor

log = Logger()


@dataclass(frozen=True)
class Written:
    """The outcome of one ``/api/nftables`` write, once the backends applied it."""

    #: the internal session port
    port: int
    #: the session object after the change
    session: Mapping[str, Any]
    #: ``carriers``, ``shaping_backend``, ``shaping_interface``, ``error``
    carriers: Mapping[str, Any]


class ShapingService(Service):
    """Per-port shaping, patterns and transport faults over the two backends."""

    name = "shaping"

    def __init__(self, config: Config, reactor: IDaemonReactor, *, clock: IReactorTime | None = None,
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
        self.caps: Capabilities = host_capabilities(self.backend_mode, {}, None, platform=_platform())
        if self.backend_mode != "userspace":
            self.caps = host_capabilities(self.backend_mode, {}, None, status="starting",
                                          reason="kernel backend not started yet", platform=_platform())
        self.ports: dict[int, PortRuntime] = {}
        self.host: SessionHost | None = None
        self.carriers = Carriers(self.backend_mode, self.only_interface, self.ports, self.userspace, kernel,
                                 caps_changed=self._refresh_caps, notify=self._notify)
        self.meter = ShapingMeter(self.clock, self.ports, self.userspace, kernel,
                                  cap_not_held=self.carriers.cap_not_held, notify=self._notify)

    @property
    def nft_proof(self) -> NftProof | None:
        """What the nftables scratch table proved (None until the kernel backend started)."""
        return self.carriers.nft_proof

    @property
    def warnings_total(self) -> int:
        """Cap-exceeded warnings raised since start (``streamlab_shaping_cap_exceeded_total``)."""
        return self.meter.warnings_total

    @property
    def warnings_active(self) -> int:
        """Session ports whose cap is not holding right now."""
        return self.meter.warnings_active

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
        self.carriers.nft_proof = nft
        self._refresh_caps()
        log.info("shaping backend {b}: proven {f} {r}", b=self.backend_mode, f=dict(self.caps.features),
                 r=self.caps.reason)
        for port in list(self.ports):
            self.carriers.place(port)

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
        self.meter.stop()
        for rt in self.ports.values():
            self._stop_runners(rt)
        if self.kernel is not None:
            return self.kernel.stop()
        return None

    # ------------------------------------------------------------------ sessions

    def attach(self, host: SessionHost) -> SessionShaping:
        """Change sessions through *host* from now on; returns what the registry calls
        (its ``shaping``)."""
        self.host = host
        return SessionBridge(self)

    def open_port(self, port: int) -> PortShaper:
        """A new session listener on *port*: a fresh, uncapped shaper (a reused port
        starts clean)."""
        stale = self.ports.pop(port, None)
        if stale is not None:
            self._stop_runners(stale)
        self.userspace.remove(port)
        self._runtime(port)
        return self.userspace.shaper(port)

    def release(self, port: int) -> defer.Deferred[None]:
        """The session on *port* is gone: stop timers, delete the port's kernel state."""
        rt = self.ports.pop(port, None)
        if rt is not None:
            self._stop_runners(rt)
        self.userspace.remove(port)
        self.meter.forget(port)
        if self.kernel is None:
            return defer.succeed(None)
        def done(result: Any) -> None:
            if self.kernel is not None:
                self.kernel.forget(port)

        d = self.kernel.reconcile({}, ports={port}).addCallback(done)
        d.addErrback(lambda f: log.warn("releasing port {port}: {err}", port=port, err=f.getErrorMessage()))
        return d

    def session_fields(self, port: int) -> Mapping[str, Any]:
        """The runtime shaping/transport fields of the session on *port* (``{}`` when
        the port is not shaped)."""
        rt = self.ports.get(port)
        if rt is None:
            return {}
        return views.session_fields(rt, *self.meter.fault_counts(port))

    # ------------------------------------------------------------------ per-session backend choice

    def peer_seen(self, port: int, addr: Any) -> defer.Deferred[Any]:
        """A connection from *addr* arrived on *port*: (re)decide the port's backends for
        that address; fires when the port's placement was applied."""
        return self.carriers.peer_seen(port, addr)

    # ------------------------------------------------------------------ desired state

    def _runtime(self, port: int) -> PortRuntime:
        rt = self.ports.get(port)
        if rt is None:
            rt = self.ports[port] = PortRuntime(port, config=PortConfig(port))
            rt.placement = self.carriers.placement_for(rt)
            self._ensure_meter()
        return rt

    def _ensure_meter(self) -> None:
        """The 100 ms meter runs only while the service runs and some port exists."""
        if self.running and self.ports:
            self.meter.start()

    def validate_controls(self, controls: Mapping[str, Any], port: int = 0) -> None:
        """Raise :class:`Invalid` for control values this host cannot honour (the registry may
        call it from PATCH validation with the merged controls; the /api/nftables door does)."""
        self.check(config_from_fields(port, controls))
        mode = controls.get("nftables_pattern_template_mode", "sliders")
        if mode != "sliders" and self.host is not None:
            try:
                variants = list(self.host.get_by_port(port).manifest_variants or [])
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
        return self.carriers.apply(port)

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
                self.carriers.apply(rt.port).addErrback(lambda f: log.warn(
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
                if self.host is not None and rt.session_id is not None:
                    try:
                        self.host.bump_fault_counter(rt.session_id, f"transport_{kind}")
                    except Exception:  # noqa: BLE001
                        log.failure("bump_fault_counter failed")
            if rt.faults is not None:
                self.carriers.apply(rt.port).addErrback(lambda f: log.warn(
                    "transport fault on port {port}: {err}", port=rt.port, err=f.getErrorMessage()))
            self._notify(rt)

        def on_expire(rt: PortRuntime = rt) -> None:
            # One-shot finished: disarm like the HTTP rules do (type back to none, new revision).
            if self.host is not None and rt.session_id is not None:
                try:
                    self.host.patch(rt.session_id, {"transport_failure_type": "none"})
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
        if self.host is not None and rt.session_id is not None:
            try:
                self.host.notify(rt.session_id)
            except Exception:  # noqa: BLE001
                log.failure("registry.notify failed")

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

    # ------------------------------------------------------------------ the /api/nftables door

    def session_on(self, port: int) -> SessionView:
        """The session on internal or external *port* (``NotFound`` otherwise)."""
        if self.host is None:
            raise NotFound("session not found", detail=f"port {port}")
        return self.host.get_by_port(port)

    async def change(self, port: int, set_: Mapping[str, Any]) -> Written:
        """Store a change of session fields made through ``/api/nftables``: validate it
        like ``PATCH``, refuse (400, nothing stored) what no backend can do, store it through
        the registry (revision bump, group propagation), and answer once the backends
        applied it (or fell back), with the carriers that took it."""
        session = self.session_on(port)
        current = session.controls.values
        changes = fields_mod.validate(set_, None, current, variants=session.manifest_variants or None)
        self.preflight(session.port, {**current, **changes})
        assert self.host is not None  # session_on found it there
        result = self.host.patch(session.session_id, set_)
        await self.settled(session.port)
        return Written(session.port, result, views.carriers_answer(self.port_status(session.port)))

    def pattern_template(self, port: int, mode: str, options: Mapping[str, Any]) -> dict[str, Any]:
        """The session fields of template *mode* from the session's ladder; *options*
        may carry ``margin_pct`` / ``step_seconds`` (else the session's values).  409 when
        the ladder is not known yet."""
        session = self.session_on(port)
        values = session.controls.values
        return template_fields(mode, session.manifest_variants,
                               options.get("margin_pct", values.get("nftables_pattern_margin_pct", 0)),
                               options.get("step_seconds", values.get("nftables_pattern_step_seconds", 12)))

    async def port_answer(self, port: int) -> dict[str, Any]:
        """``GET /api/nftables/port/{port}`` (internal or external port), kernel counters
        read now."""
        session = self.session_on(port)
        await self.meter.refresh(session.port)
        session = self.session_on(port)
        body = self.port_status(session.port)
        body["session_id"] = session.session_id
        body["external_port"] = session.external_port
        return body

    async def status_answer(self) -> dict[str, Any]:
        """``GET /api/nftables/status`` over every live session, kernel counters read now."""
        await self.meter.refresh_all()
        ports = [s.port for s in self.host.all()] if self.host is not None else None
        return self.status(ports)

    # ------------------------------------------------------------------ status

    def port_status(self, port: int) -> dict[str, Any]:
        """Desired and applied state of one port (``GET /api/nftables/port/{port}``)."""
        rt = self._runtime(port)
        applied = self.kernel.applied.get(port, KernelPort()) if self.kernel is not None else KernelPort()
        return views.port_status(rt, self.caps.backend, self.userspace.ports.get(port), applied,
                                 *self.meter.fault_counts(port))

    def status(self, ports: list[int] | None = None) -> dict[str, Any]:
        """``GET /api/nftables/status``: backend and every port's summary."""
        chosen = sorted(self.ports if ports is None else ports)
        return views.status_summary(self.caps, [self.port_status(p) for p in chosen])

    def debug_info(self) -> dict[str, Any]:
        """What ``/debug`` shows: capabilities, kernel objects, per-port summary."""
        return views.debug_info(self.caps, self.status(), self.kernel, self.nft_proof)


def _platform() -> str:
    return "linux" if sys.platform.startswith("linux") else sys.platform
