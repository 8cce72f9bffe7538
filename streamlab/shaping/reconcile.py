"""The kernel reconciler (pure): which kernel objects a port needs and how to get there.

* :class:`KernelPort` is what one port needs in the kernel (an htb class on an interface,
  netem under it, an nftables rule); :func:`kernel_desired` derives it from the
  :class:`~streamlab.shaping.model.Effective` shape and the session's placement.
* :func:`plan` diffs desired vs applied and returns the minimal list of :class:`Op`;
  applying the same state twice yields an empty plan and removing a port yields exactly
  the deletions of what was created for it.  :func:`after` folds one done op in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from streamlab.shaping.model import RATE_MAX_MBPS, STALL_RATE_BPS, Effective


@dataclass(frozen=True)
class KernelPort:
    """Kernel objects one port needs: an htb class at *rate_bps* (``None`` = no class) on
    *interface*, netem *delay_ms*/*loss_pct* under it (only when the kernel does them), and an nftables
    rule of *rule_kind* (``drop``/``reject``; ``None`` = no rule) with an optional packet
    budget; *rule_epoch* changes when a packet window restarts (fresh budget)."""

    rate_bps: int | None = None
    delay_ms: float = 0.0
    loss_pct: float = 0.0
    rule_kind: str | None = None
    rule_packets: int | None = None
    rule_epoch: float | None = None
    interface: str = ""

    @property
    def empty(self) -> bool:
        """True when nothing exists in the kernel for this port."""
        return self.rate_bps is None and self.rule_kind is None


def kernel_desired(eff: Effective, caps: Any) -> KernelPort:
    """The kernel part of *eff* under *caps* (a per-session
    :class:`~streamlab.shaping.route.Placement`: ``kernel(feature)`` and ``interface``)."""
    rate_bps: int | None = None
    delay = loss = 0.0
    if caps.kernel("rate") and eff.rate_mbps is not None:
        rate_bps = STALL_RATE_BPS if eff.rate_mbps == 0 else max(STALL_RATE_BPS, int(eff.rate_mbps * 1e6))
    netem = (caps.kernel("delay") and eff.delay_ms > 0) or (caps.kernel("loss") and eff.loss_pct > 0)
    if netem:
        delay = eff.delay_ms if caps.kernel("delay") else 0.0
        loss = eff.loss_pct if caps.kernel("loss") else 0.0
        if rate_bps is None:
            rate_bps = int(RATE_MAX_MBPS * 1e6)  # a class to hang netem on, effectively uncapped
    kind = None
    packets = None
    epoch = None
    if eff.fault != "none" and caps.kernel(f"transport_{eff.fault}"):
        kind = eff.fault
        packets = eff.fault_packets
        epoch = eff.fault_window_start if packets is not None else None
    iface = str(getattr(caps, "interface", "") or "") if rate_bps is not None else ""
    return KernelPort(rate_bps, delay, loss, kind, packets, epoch, iface)


@dataclass(frozen=True)
class Op:
    """One kernel change.  ``action`` is one of ``add_class``, ``change_class``,
    ``del_class``, ``add_rule``, ``del_rule``; ``state`` carries the values to apply."""

    action: str
    port: int
    state: KernelPort = field(default_factory=KernelPort)

    def describe(self) -> str:
        """Human text for logs and error messages."""
        on_iface = self.action.endswith("_class") and self.state.interface
        where = f" on {self.state.interface}" if on_iface else ""
        return f"{self.action} port {self.port}{where}"


def plan(desired: Mapping[int, KernelPort], applied: Mapping[int, KernelPort]) -> list[Op]:
    """The minimal ordered list of :class:`Op` turning *applied* into *desired*.

    Ports absent from *desired* are removed completely.  Rules are replaced (delete, then
    add) when their kind, budget or window changes; classes are changed in place.
    """
    ops: list[Op] = []
    for port in sorted(set(desired) | set(applied)):
        want = desired.get(port, KernelPort())
        have = applied.get(port, KernelPort())
        rule_want = (want.rule_kind, want.rule_packets, want.rule_epoch)
        rule_have = (have.rule_kind, have.rule_packets, have.rule_epoch)
        if have.rule_kind is not None and rule_want != rule_have:
            ops.append(Op("del_rule", port, have))
        cls_want = (want.rate_bps, want.delay_ms, want.loss_pct)
        cls_have = (have.rate_bps, have.delay_ms, have.loss_pct)
        moved = want.rate_bps is not None and have.rate_bps is not None and want.interface != have.interface
        if have.rate_bps is not None and (want.rate_bps is None or moved):
            ops.append(Op("del_class", port, have))
        if want.rate_bps is not None and (have.rate_bps is None or moved):
            ops.append(Op("add_class", port, want))
        elif want.rate_bps is not None and cls_want != cls_have:
            ops.append(Op("change_class", port, want))
        if want.rule_kind is not None and rule_want != rule_have:
            ops.append(Op("add_rule", port, want))
    return ops


def after(op: Op, applied: Mapping[int, KernelPort]) -> dict[int, KernelPort]:
    """*applied* with one successful *op* folded in (the reconciler's bookkeeping)."""
    out = dict(applied)
    cur = out.get(op.port, KernelPort())
    if op.action in ("add_class", "change_class"):
        cur = replace(cur, rate_bps=op.state.rate_bps, delay_ms=op.state.delay_ms, loss_pct=op.state.loss_pct,
                      interface=op.state.interface)
    elif op.action == "del_class":
        cur = replace(cur, rate_bps=None, delay_ms=0.0, loss_pct=0.0, interface="")
    elif op.action == "add_rule":
        cur = replace(cur, rule_kind=op.state.rule_kind, rule_packets=op.state.rule_packets,
                      rule_epoch=op.state.rule_epoch)
    elif op.action == "del_rule":
        cur = replace(cur, rule_kind=None, rule_packets=None, rule_epoch=None)
    if cur.empty and cur.delay_ms == 0 and cur.loss_pct == 0:
        out.pop(op.port, None)
    else:
        out[op.port] = cur
    return out
