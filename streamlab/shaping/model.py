"""Pure shaping model: per-port desired state, feature routing and the kernel reconciler.

Nothing here does I/O or reads a clock; time is passed in as ``now``.

* :class:`PortConfig` is what the session fields ask for on one session port.
* :func:`effective` turns a config plus the runtime pattern step and fault window into
  the :class:`Effective` shape right now (rate ``None`` = uncapped, ``0.0`` = stalled).
* :func:`host_capabilities` summarises what scratch rules proved on this host
  (:mod:`streamlab.shaping.route` decides the backend of each session).
* templates build pattern steps from a session's ladder.

The kernel reconciler (desired vs applied kernel objects) is :mod:`streamlab.shaping.reconcile`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from streamlab.errors import Conflict, Invalid

RATE_MAX_MBPS = 10000.0
DELAY_MAX_MS = 10000.0
LOSS_MAX_PCT = 100.0
#: Rate of the kernel class while a pattern step stalls the port (userspace holds writes too).
STALL_RATE_BPS = 8000
FAULT_TYPES = ("none", "drop", "reject")
TEMPLATE_MODES = ("sliders", "square_wave", "ramp_up", "ramp_down", "pyramid")
TEMPLATE_MARGINS = (0, 5, 10, 25, 50)
TEMPLATE_STEP_SECONDS = (6, 12, 18, 24)
FEATURES = ("rate", "delay", "loss", "transport_drop", "transport_reject")


# --------------------------------------------------------------------------- values


def _number(name: str, value: Any, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise Invalid("invalid", fields={name: "must be a number"}) from None
        else:
            raise Invalid("invalid", fields={name: "must be a number"})
    if math.isnan(value) or not lo <= value <= hi:
        raise Invalid("invalid", fields={name: f"must be between {lo:g} and {hi:g}"})
    return float(value)


def check_rate(value: Any, name: str = "rate_mbps") -> float:
    """A rate in Mbps, 0-10000 (0 = no cap); :class:`Invalid` otherwise."""
    return _number(name, value, 0, RATE_MAX_MBPS)


def check_delay(value: Any, name: str = "delay_ms") -> float:
    """A one-way delay in ms, 0-10000."""
    return _number(name, value, 0, DELAY_MAX_MS)


def check_loss(value: Any, name: str = "loss_pct") -> float:
    """A loss percentage, 0-100."""
    return _number(name, value, 0, LOSS_MAX_PCT)


@dataclass(frozen=True)
class Step:
    """One pattern step: hold *rate_mbps* (0 = stalled) for *duration_seconds*."""

    rate_mbps: float
    duration_seconds: float
    enabled: bool = True

    def as_dict(self) -> dict[str, Any]:
        """Wire shape of the step."""
        return {"rate_mbps": self.rate_mbps, "duration_seconds": self.duration_seconds,
                "enabled": self.enabled}


def parse_steps(raw: Any, name: str = "steps") -> tuple[Step, ...]:
    """Validate a list of step objects (:class:`Invalid` naming the bad entry)."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise Invalid("invalid", fields={name: "must be a list of steps"})
    steps = []
    for i, item in enumerate(raw):
        if not isinstance(item, Mapping):
            raise Invalid("invalid", fields={name: f"step {i + 1} must be an object"})
        rate = _number(f"{name}[{i}].rate_mbps", item.get("rate_mbps", item.get("rate", 0)), 0,
                       RATE_MAX_MBPS)
        dur = _number(f"{name}[{i}].duration_seconds", item.get("duration_seconds", 0), 0, 86400 * 7)
        enabled = item.get("enabled", True)
        if not isinstance(enabled, bool):
            raise Invalid("invalid", fields={f"{name}[{i}].enabled": "must be true or false"})
        steps.append(Step(rate, dur, enabled))
    return tuple(steps)


@dataclass(frozen=True)
class FaultSpec:
    """A transport fault: type, on-window C, cycle F, units of C (seconds or packets)."""

    type: str = "none"
    consecutive: float = 0.0
    frequency: float = 0.0
    units: str = "seconds"

    @property
    def armed(self) -> bool:
        """True when a fault type is set."""
        return self.type != "none"


@dataclass(frozen=True)
class PortConfig:
    """Desired shaping of one session port, as the session fields say."""

    port: int
    rate_mbps: float = 0.0
    delay_ms: float = 0.0
    loss_pct: float = 0.0
    pattern_enabled: bool = False
    steps: tuple[Step, ...] = ()
    fault: FaultSpec = field(default_factory=FaultSpec)

    @property
    def pattern_active(self) -> bool:
        """A pattern runs only when enabled and at least one enabled step has a duration."""
        return self.pattern_enabled and any(s.enabled and s.duration_seconds > 0 for s in self.steps)


def _get(fields: Mapping[str, Any], name: str, default: Any) -> Any:
    value = fields.get(name, default)
    return default if value is None else value


def config_from_fields(port: int, fields: Mapping[str, Any]) -> PortConfig:
    """Build the desired :class:`PortConfig` from session fields (already validated)."""
    try:
        steps = parse_steps(_get(fields, "nftables_pattern_steps", []), "nftables_pattern_steps")
    except Invalid:
        steps = ()
    ftype = str(_get(fields, "transport_failure_type", _get(fields, "transport_fault_type", "none"))).lower()
    if ftype not in FAULT_TYPES:
        ftype = "none"
    mode = str(_get(fields, "transport_failure_mode", ""))
    units = str(_get(fields, "transport_consecutive_units", "seconds"))
    if mode == "failures_per_packets" or units == "packets":
        units = "packets"
    else:
        units = "seconds"
    fault = FaultSpec(ftype, float(_get(fields, "transport_consecutive_failures", 0) or 0),
                      float(_get(fields, "transport_failure_frequency", 0) or 0), units)
    return PortConfig(
        port=int(port),
        rate_mbps=float(_get(fields, "nftables_bandwidth_mbps", 0) or 0),
        delay_ms=float(_get(fields, "nftables_delay_ms", 0) or 0),
        loss_pct=float(_get(fields, "nftables_packet_loss", 0) or 0),
        pattern_enabled=bool(_get(fields, "nftables_pattern_enabled", False)),
        steps=steps,
        fault=fault,
    )


# --------------------------------------------------------------------------- time rules


@dataclass(frozen=True)
class PatternPosition:
    """Where a running pattern is: step index (0-based, into the full list), its rate and
    the absolute time of the next boundary."""

    index: int
    rate_mbps: float
    step_started_at: float
    next_boundary: float


def pattern_position(steps: Iterable[Step], enabled_at: float, now: float) -> PatternPosition | None:
    """The step in force at *now* for a pattern enabled at *enabled_at*.

    Boundaries lie on a fixed grid ``enabled_at + k * cycle + cumulative`` so no drift can
    build up however late timers fire.  Disabled and zero-length steps are skipped.
    ``None`` when no step can run.
    """
    live = [(i, s) for i, s in enumerate(steps) if s.enabled and s.duration_seconds > 0]
    if not live:
        return None
    cycle = sum(s.duration_seconds for _, s in live)
    elapsed = max(0.0, now - enabled_at)
    k = math.floor(elapsed / cycle + 1e-12)
    cycle_start = enabled_at + k * cycle
    offset = now - cycle_start
    acc = 0.0
    for i, s in live:
        end = acc + s.duration_seconds
        if offset < end - 1e-9:
            return PatternPosition(i, s.rate_mbps, cycle_start + acc, cycle_start + end)
        acc = end
    # Float rounding at the very end of a cycle: first step of the next one.
    i, s = live[0]
    start = cycle_start + cycle
    return PatternPosition(i, s.rate_mbps, start, start + s.duration_seconds)


@dataclass(frozen=True)
class FaultWindow:
    """Whether a transport fault is in force at a moment, and when that next changes.

    ``next_edge`` is ``None`` when nothing will change by itself; ``window_start`` is the
    start of the current on-window (``None`` when off); ``expired`` marks a finished one-shot.
    """

    active: bool
    next_edge: float | None
    window_start: float | None = None
    expired: bool = False


def fault_window(spec: FaultSpec, armed_at: float, now: float) -> FaultWindow:
    """Timing of section 4: fault for C, clear until F, repeat; C = 0 holds; F = 0 one-shot.

    In ``packets`` units every F-second window opens a fresh budget of C packets, so the
    rule is in force for the whole window (the kernel rule counts the packets).
    """
    if not spec.armed:
        return FaultWindow(False, None)
    c, f = spec.consecutive, spec.frequency
    elapsed = max(0.0, now - armed_at)
    if spec.units == "packets":
        if c <= 0 or f <= 0:
            return FaultWindow(True, None, armed_at)
        k = math.floor(elapsed / f + 1e-12)
        start = armed_at + k * f
        return FaultWindow(True, start + f, start)
    if c <= 0:
        return FaultWindow(True, None, armed_at)
    if f <= 0:
        if elapsed < c:
            return FaultWindow(True, armed_at + c, armed_at)
        return FaultWindow(False, None, None, expired=True)
    if c >= f:
        return FaultWindow(True, None, armed_at)
    k = math.floor(elapsed / f + 1e-12)
    start = armed_at + k * f
    if now - start < c - 1e-9:
        return FaultWindow(True, start + c, start)
    return FaultWindow(False, start + f)


# --------------------------------------------------------------------------- effective shape


@dataclass(frozen=True)
class Effective:
    """What must be in force on a port right now.

    ``rate_mbps``: ``None`` = uncapped, ``0.0`` = stalled, else the cap.
    ``fault``: ``none|drop|reject`` in force now; ``fault_packets`` the per-window packet
    budget (packets units) or ``None`` (every packet).
    """

    rate_mbps: float | None = None
    delay_ms: float = 0.0
    loss_pct: float = 0.0
    fault: str = "none"
    fault_packets: int | None = None
    fault_window_start: float | None = None


def effective(cfg: PortConfig, pattern: PatternPosition | None, window: FaultWindow) -> Effective:
    """The shape in force given the pattern position and the fault window."""
    if cfg.pattern_active and pattern is not None:
        rate: float | None = pattern.rate_mbps  # 0 = stalled, never uncapped
    else:
        rate = cfg.rate_mbps if cfg.rate_mbps > 0 else None
    fault = cfg.fault.type if window.active else "none"
    packets = None
    if fault != "none" and cfg.fault.units == "packets" and cfg.fault.consecutive > 0:
        packets = int(cfg.fault.consecutive)
    return Effective(rate, cfg.delay_ms, cfg.loss_pct, fault, packets,
                     window.window_start if window.active else None)


# --------------------------------------------------------------------------- capabilities


@dataclass(frozen=True)
class Capabilities:
    """What this host proved it can do, feature by feature (``GET /api/nftables/capabilities``).

    A feature is ``kernel`` only when a scratch rule proved it on at least one interface
    (``interfaces`` lists each proven or refused interface); which backend carries a given
    session is decided per session from the route to its player (see
    :mod:`streamlab.shaping.route`)."""

    backend: str = "userspace"
    features: Mapping[str, str] = field(default_factory=lambda: {f: "userspace" for f in FEATURES})
    packet_counters: bool = False
    status: str = "enabled"
    reason: str = ""
    platform: str = "linux"
    interfaces: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def kernel(self, feature: str) -> bool:
        """True when the kernel was proven to do *feature* somewhere on this host."""
        return self.features.get(feature) == "kernel"

    @property
    def uses_kernel(self) -> bool:
        """True when any feature was proven in the kernel."""
        return any(v == "kernel" for v in self.features.values())

    def as_dict(self) -> dict[str, Any]:
        """The ``GET /api/nftables/capabilities`` body."""
        feats: dict[str, Any] = {f: self.features.get(f, "userspace") for f in FEATURES}
        feats["packet_counters"] = self.packet_counters
        return {"status": self.status, "platform": self.platform, "backend": self.backend,
                "features": feats, "reason": self.reason,
                "interfaces": {k: dict(v) for k, v in self.interfaces.items()},
                "per_session": self.backend != "userspace"}


def host_capabilities(backend: str, proofs: Mapping[str, Any], nft: Any, *, status: str = "enabled",
                      reason: str = "", platform: str = "linux") -> Capabilities:
    """Host capabilities from what scratch rules proved: *proofs* maps interface ->
    :class:`~streamlab.shaping.route.TcProof`, *nft* is a
    :class:`~streamlab.shaping.route.NftProof` (or None when not probed)."""
    if backend == "userspace":
        return Capabilities(backend, {f: "userspace" for f in FEATURES}, False, status, reason, platform)
    htb = any(p.htb for p in proofs.values())
    netem = any(p.htb and p.netem for p in proofs.values())
    feats = {
        "rate": "kernel" if htb else "userspace",
        "delay": "kernel" if netem else "userspace",
        "loss": "kernel" if netem else "userspace",
        "transport_drop": "kernel" if nft is not None and nft.drop else "userspace",
        "transport_reject": "kernel" if nft is not None and nft.reject else "userspace",
    }
    reasons = [reason] if reason else []
    for name, p in sorted(proofs.items()):
        if p.reason:
            reasons.append(f"{name}: {p.reason}")
    if nft is not None and nft.reason:
        reasons.append(f"nftables: {nft.reason}")
    if not any(v == "kernel" for v in feats.values()) and status == "enabled":
        status = "degraded"
    return Capabilities(backend, feats, bool(nft is not None and nft.counters), status, "; ".join(reasons),
                        platform, {name: p.as_dict() for name, p in proofs.items()})


# --------------------------------------------------------------------------- templates


def ladder_rates_mbps(variants: Any) -> list[float]:
    """Distinct ladder rungs in Mbps (AVERAGE-BANDWIDTH else BANDWIDTH), ascending."""
    rates = set()
    for v in variants or []:
        if not isinstance(v, Mapping):
            continue
        bw: Any = v.get("average_bandwidth") or v.get("bandwidth")
        try:
            value = float(bw)
        except (TypeError, ValueError):
            continue
        if value > 0:
            rates.add(value / 1e6)
    return sorted(rates)


def template_steps(mode: str, variants: Any, margin_pct: float, step_seconds: float) -> tuple[Step, ...]:
    """Steps of template *mode* built from the session's ladder (section 3).

    ``sliders`` returns no steps.  :class:`Invalid` for an unknown mode, margin or step
    length; :class:`Conflict` (409) when the ladder is unknown.
    """
    if mode not in TEMPLATE_MODES:
        raise Invalid("invalid", fields={"nftables_pattern_template_mode":
                                         f"must be one of {', '.join(TEMPLATE_MODES)}"})
    if margin_pct not in TEMPLATE_MARGINS:
        raise Invalid("invalid", fields={"nftables_pattern_margin_pct":
                                         f"must be one of {', '.join(map(str, TEMPLATE_MARGINS))}"})
    if step_seconds not in TEMPLATE_STEP_SECONDS:
        raise Invalid("invalid", fields={"nftables_pattern_step_seconds":
                                         f"must be one of {', '.join(map(str, TEMPLATE_STEP_SECONDS))}"})
    if mode == "sliders":
        return ()
    rates = ladder_rates_mbps(variants)
    if not rates:
        raise Conflict("ladder unknown",
                       detail=f"template {mode!r} needs the session's ladder (manifest_variants); "
                              "let the player fetch the master playlist first")
    scaled = [round(r * (1 + margin_pct / 100.0), 3) for r in rates]
    if mode == "square_wave":
        seq = [scaled[0], scaled[-1]] if len(scaled) > 1 else [scaled[0]]
    elif mode == "ramp_up":
        seq = scaled
    elif mode == "ramp_down":
        seq = list(reversed(scaled))
    else:  # pyramid: up then down, the top once
        seq = scaled + list(reversed(scaled[:-1]))
    return tuple(Step(r, float(step_seconds), True) for r in seq)


def template_fields(mode: str, variants: Any, margin_pct: Any = 0, step_seconds: Any = 12) -> dict[str, Any]:
    """Session fields a template sets: the mode, margin, step length, steps and enabled flag."""
    margin = _number("nftables_pattern_margin_pct", margin_pct, 0, 1000)
    secs = _number("nftables_pattern_step_seconds", step_seconds, 0, 1000)
    margin_v: float | int = int(margin) if margin.is_integer() else margin
    secs_v: float | int = int(secs) if secs.is_integer() else secs
    steps = template_steps(mode, variants, margin_v, secs_v)
    return {"nftables_pattern_template_mode": mode, "nftables_pattern_margin_pct": margin_v,
            "nftables_pattern_step_seconds": secs_v,
            "nftables_pattern_steps": [s.as_dict() for s in steps],
            "nftables_pattern_enabled": bool(steps)}
