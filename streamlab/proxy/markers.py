"""Words for a control change, as shown on the waterfall and chart time axes (pure).

:func:`describe` turns the names of the changed control fields and the session's new
values into ``(kind, text)``: *kind* is ``fault|transport|timeout|shaping|content|other``,
*text* what a tester reads ("segment: 404 armed", "shaping: 2 Mbps, +100 ms").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

_PREFIXES = ("all", "segment", "manifest", "master_manifest")


def _rule_text(p: str, values: Mapping[str, Any]) -> str:
    ftype = values.get(f"{p}_failure_type", "none")
    label = "master" if p == "master_manifest" else p
    if not ftype or ftype == "none":
        return f"{label}: disarmed"
    chance = values.get(f"{p}_failure_probability") or 0
    return f"{label}: {ftype} armed" + (f" (p={chance:g}, seed {values.get('seed', 0)})" if chance else "")


def describe(names: Sequence[str], values: Mapping[str, Any]) -> tuple[str, str]:
    """``(kind, text)`` of a change of the control fields *names* (see module docstring)."""
    names = list(names)
    prefixes: list[str] = []
    for n in names:
        if "failure" not in n and "consecutive" not in n:
            continue
        p = next((p for p in ("master_manifest", "manifest", "segment", "all") if n.startswith(p + "_")),
                 None)
        if p and p not in prefixes:
            prefixes.append(p)
    if prefixes:
        return "fault", "; ".join(_rule_text(p, values) for p in prefixes)
    if any(n.startswith("transport_") for n in names):
        ttype = values.get("transport_failure_type", "none")
        return "transport", "transport: disarmed" if ttype in ("", "none") else f"transport: {ttype} armed"
    if any(n.startswith("transfer_") for n in names):
        act = values.get("transfer_active_timeout_seconds") or 0
        idle = values.get("transfer_idle_timeout_seconds") or 0
        return "timeout", f"timeouts: active {act or 'off'} s, idle {idle or 'off'} s"
    if any(n.startswith("nftables_") for n in names):
        if values.get("nftables_pattern_enabled") or "nftables_pattern_steps" in names:
            steps = values.get("nftables_pattern_steps") or []
            return "shaping", f"shaping pattern: {len(steps)} steps" if steps else "shaping pattern stopped"
        rate = values.get("nftables_bandwidth_mbps") or 0
        parts = [f"{rate:g} Mbps" if rate else "unlimited"]
        if values.get("nftables_delay_ms"):
            parts.append(f"+{values['nftables_delay_ms']:g} ms")
        if values.get("nftables_packet_loss"):
            parts.append(f"{values['nftables_packet_loss']:g}% loss")
        return "shaping", "shaping: " + ", ".join(parts)
    if any(n.startswith("manifest_fault_") for n in names):
        mtype = values.get("manifest_fault_type", "none")
        return "fault", "manifest fault: " + ("disarmed" if mtype in ("", "none") else f"{mtype} armed")
    if any(n.startswith("content_") for n in names):
        return "content", "content rewrite: " + ", ".join(n[8:] for n in names if n.startswith("content_"))
    return "other", "changed: " + ", ".join(names)
