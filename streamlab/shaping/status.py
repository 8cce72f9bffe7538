"""Read-only views of the shaping state (pure: no I/O, no clock).

* :func:`session_fields`: the shaping keys of the session object, in the order
  :data:`streamlab.proxy.wire.SHAPING_FIELDS` defines;
* :func:`port_status`: ``GET /api/nftables/port/{port}`` (desired, effective, applied per
  backend, meters, carriers);
* :func:`status_summary`: ``GET /api/nftables/status``;
* :func:`debug_info`: what ``/debug`` shows.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from streamlab.formats import json_number as num
from streamlab.proxy.session import iso
from streamlab.proxy.wire import SHAPING_FIELDS
from streamlab.shaping.model import Capabilities, PortConfig
from streamlab.shaping.reconcile import KernelPort
from streamlab.shaping.userspace import PortShaper

if TYPE_CHECKING:
    from streamlab.shaping.kernel import KernelBackend
    from streamlab.shaping.route import NftProof
    from streamlab.shaping.runtime import PortRuntime

#: the per-port keys of ``GET /api/nftables/status`` (taken from :func:`port_status`)
SUMMARY_KEYS = ("rate_mbps", "delay_ms", "loss_pct", "pattern_enabled", "pattern_step", "transport_fault",
                "transport_fault_active", "transport_fault_drop_packets", "transport_fault_reject_packets",
                "shaping_backend", "shaping_interface", "goodput_mbps", "warning")


def session_fields(rt: PortRuntime, drop: int, reject: int) -> dict[str, Any]:
    """The runtime shaping and transport-fault fields of the session on *rt*'s port."""
    cfg = rt.config or PortConfig(rt.port)
    running = cfg.pattern_active and rt.position is not None
    rate = rt.placement.carrier("rate")
    values: dict[str, Any] = {
        "transport_fault_active": bool(rt.window.active),
        "transport_fault_started_at": iso(rt.fault_started_at) if rt.window.active else None,
        "transport_fault_drop_packets": drop,
        "transport_fault_reject_packets": reject,
        "nftables_pattern_step": (rt.position.index + 1) if running and rt.position else 0,
        "nftables_pattern_rate_runtime_mbps": num(rt.position.rate_mbps) if running and rt.position
        else num(cfg.rate_mbps),
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
    return {key: values[key] for key in SHAPING_FIELDS}


def port_status(rt: PortRuntime, backend: str, shaper: PortShaper | None, applied: KernelPort,
                drop: int, reject: int) -> dict[str, Any]:
    """Desired and applied state of one port (``GET /api/nftables/port/{port}``); *backend*
    is the host's backend, *shaper* the port's userspace shaper, *applied* what the kernel
    holds for it."""
    cfg = rt.config or PortConfig(rt.port)
    eff = rt.effective
    sh = shaper
    rate = rt.placement.carrier("rate")
    out: dict[str, Any] = {
        "port": rt.port,
        "session_id": rt.session_id,
        "backend": backend,
        "features": {f: c.backend for f, c in rt.placement.carriers.items()},
        "carriers": rt.placement.as_dict(),
        "shaping_backend": rate.backend,
        "shaping_interface": rate.interface,
        "route": rt.route.as_dict(),
        "rate_mbps": num(cfg.rate_mbps),
        "delay_ms": num(cfg.delay_ms),
        "loss_pct": num(cfg.loss_pct),
        "pattern_enabled": cfg.pattern_active,
        "pattern_steps": [s.as_dict() for s in cfg.steps],
        "pattern_step": (rt.position.index + 1) if cfg.pattern_active and rt.position else 0,
        "pattern_rate_runtime_mbps": num(rt.position.rate_mbps) if cfg.pattern_active and rt.position
        else num(cfg.rate_mbps),
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


def carriers_answer(full: Mapping[str, Any]) -> dict[str, Any]:
    """What every ``/api/nftables/*`` write answers next to its values, from a
    :func:`port_status`."""
    return {"carriers": full["carriers"], "shaping_backend": full["shaping_backend"],
            "shaping_interface": full["shaping_interface"], "error": full["error"]}


def status_summary(caps: Capabilities, ports: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """``GET /api/nftables/status`` from the :func:`port_status` of each port (in order)."""
    out: dict[str, Any] = {}
    for full in ports:
        entry = {k: full[k] for k in SUMMARY_KEYS}
        if "kernel_rate_mbps" in full:
            entry["kernel_rate_mbps"] = full["kernel_rate_mbps"]
        out[str(full["port"])] = entry
    return {"backend": caps.backend, "features": caps.as_dict()["features"], "ports": out}


def debug_info(caps: Capabilities, summary: Mapping[str, Any], kernel: KernelBackend | None,
               nft: NftProof | None) -> dict[str, Any]:
    """What ``/debug`` shows: capabilities, per-port summary, kernel objects."""
    out: dict[str, Any] = {"capabilities": caps.as_dict(), "ports": summary["ports"]}
    if kernel is not None:
        out["kernel"] = {"nft": repr(nft),
                         "proofs": {k: repr(v) for k, v in kernel.proofs.items()},
                         "applied": {str(p): repr(s) for p, s in kernel.applied.items()},
                         "rule_handles": {str(p): h for p, h in kernel.handles.items()}}
    return out
