"""Kernel shaping backend: tc through pyroute2 (netlink) and nftables through ``nft -j``.

* tc: an htb root ``5eb:`` on the interface (``default 0``: unclassified traffic passes
  unshaped), one htb class ``5eb:<port>`` per session port, selected by a u32 filter on the
  TCP *source* port (filter priority = port, so deleting it is exact), netem under the
  class for delay/loss only when the kernel has netem.  All netlink calls run on one
  dedicated worker thread (a single-thread ``ThreadPool``), never on the reactor.
* nftables: table ``inet streamlab``, chain ``transport_faults`` (input hook), one
  counted DROP/REJECT rule per port, added with ``nft -j -e -f -`` (a child process via a
  ProcessProtocol) so the kernel's handle comes back and deletion is exact.

:meth:`KernelBackend.start` removes leftovers of a previous run (our root qdisc, our
table) and probes what the kernel supports; :meth:`KernelBackend.stop` removes all of it.
:meth:`KernelBackend.reconcile` applies :func:`streamlab.shaping.model.plan` op by op;
a failing op raises :class:`KernelError` and ``applied`` keeps what really exists.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from twisted.internet import defer, protocol
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from streamlab.shaping.model import KernelPort, KernelSupport, Op, after, plan

log = Logger()

MAJOR = 0x5EB
ROOT = MAJOR << 16
PROBE_MINOR = 1
ETH_P_IP = 0x0800
TABLE = "streamlab"
CHAIN = "transport_faults"
FAMILY = "inet"


class KernelError(Exception):
    """A tc or nft operation failed; the message is the reason shown to the user."""


def classid(port: int) -> int:
    """The htb class of *port* (``5eb:<port>``)."""
    return ROOT | (port & 0xFFFF)


def sport_key(port: int) -> str:
    """u32 key matching TCP/UDP source port *port* (IPv4 without options)."""
    return f"0x{port << 16:08x}/0xffff0000+20"


# --------------------------------------------------------------------------- nft child process


class _NftProtocol(protocol.ProcessProtocol):
    def __init__(self, stdin: bytes) -> None:
        self.stdin = stdin
        self.out: list[bytes] = []
        self.err: list[bytes] = []
        self.done: defer.Deferred[tuple[int, bytes, bytes]] = defer.Deferred()

    def connectionMade(self) -> None:
        if self.stdin:
            self.transport.write(self.stdin)
        self.transport.closeStdin()

    def outReceived(self, data: bytes) -> None:
        self.out.append(data)

    def errReceived(self, data: bytes) -> None:
        self.err.append(data)

    def processEnded(self, reason: Any) -> None:
        code = getattr(reason.value, "exitCode", None)
        self.done.callback((code if code is not None else -1, b"".join(self.out), b"".join(self.err)))


class Nft:
    """Runs ``nft -j`` as a child process (optionally inside a network namespace)."""

    def __init__(self, reactor: Any, netns: str | None = None, nft: str = "nft", ip: str = "ip") -> None:
        self.reactor = reactor
        self.prefix = [ip, "netns", "exec", netns, nft] if netns else [nft]

    def _exe(self) -> str:
        exe = self.prefix[0]
        if os.path.isabs(exe):
            return exe
        for d in os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin").split(os.pathsep) + ["/usr/sbin",
                                                                                              "/sbin"]:
            cand = os.path.join(d, exe)
            if os.access(cand, os.X_OK):
                return cand
        raise KernelError(f"{exe}: not found")

    @defer.inlineCallbacks
    def run(self, args: list[str], stdin: bytes = b"") -> Any:
        """Run ``nft <args>``; returns parsed JSON stdout (or None); KernelError on failure."""
        exe = self._exe()
        proto = _NftProtocol(stdin)
        argv = [exe] + self.prefix[1:] + args
        self.reactor.spawnProcess(proto, exe, argv, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
        code, out, err = yield proto.done
        if code != 0:
            msg = err.decode("utf-8", "replace").strip().splitlines()
            raise KernelError("nft: " + (msg[0] if msg else f"exit {code}"))
        text = out.decode("utf-8", "replace").strip()
        return json.loads(text) if text else None

    def batch(self, commands: list[dict[str, Any]], echo: bool = False) -> defer.Deferred[Any]:
        """Apply a JSON command batch atomically (``nft -j [-e] -f -``)."""
        doc = json.dumps({"nftables": commands}).encode()
        return self.run(["-j", "-e", "-f", "-"] if echo else ["-j", "-f", "-"], doc)


def _rule_expr(port: int, kind: str, packets: int | None) -> list[dict[str, Any]]:
    expr: list[dict[str, Any]] = [
        {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": port}}]
    if packets is not None:
        # A bucket that never refills: matches exactly the first *packets* packets.
        expr.append({"limit": {"rate": 1, "per": "week", "burst": packets, "burst_unit": "packets"}})
    expr.append({"counter": None})
    expr.append({"drop": None} if kind == "drop" else {"reject": {"type": "tcp reset"}})
    return expr


def _rule(port: int, kind: str, packets: int | None = None, handle: int | None = None) -> dict[str, Any]:
    rule: dict[str, Any] = {"family": FAMILY, "table": TABLE, "chain": CHAIN}
    if handle is not None:
        rule["handle"] = handle
    else:
        rule["comment"] = f"streamlab port={port} kind={kind}"
        rule["expr"] = _rule_expr(port, kind, packets)
    return {"rule": rule}


def _rule_counters(doc: Any) -> dict[int, int]:
    """handle -> packets of every counted rule in a ``nft -j list`` answer."""
    out: dict[int, int] = {}
    for item in (doc or {}).get("nftables", []):
        rule = item.get("rule")
        if not rule:
            continue
        for e in rule.get("expr", []):
            if isinstance(e, dict) and isinstance(e.get("counter"), dict):
                out[int(rule["handle"])] = int(e["counter"].get("packets", 0))
    return out


# --------------------------------------------------------------------------- the backend


class KernelBackend:
    """tc + nftables for session ports on one interface."""

    def __init__(self, reactor: Any, interface: str = "", netns: str | None = None,
                 nft: str = "nft", ip: str = "ip") -> None:
        self.reactor = reactor
        self.interface = interface
        self.netns = netns
        self.nft = Nft(reactor, netns, nft, ip)
        self.pool = ThreadPool(1, 1, name="streamlab-netlink")
        self._pool_started = False
        self._ipr: Any = None
        self._index: int | None = None
        self.support = KernelSupport(reason="not started")
        self.applied: dict[int, KernelPort] = {}
        self.handles: dict[int, int] = {}
        self.drop_base: dict[int, int] = {}
        self.reject_base: dict[int, int] = {}
        self._lock = defer.DeferredLock()
        self._tc_ready = False
        self._nft_ready = False

    # -- thread plumbing

    def _in_thread(self, fn: Any, *args: Any, **kw: Any) -> defer.Deferred[Any]:
        if not self._pool_started:
            self.pool.start()
            self._pool_started = True
        return deferToThreadPool(self.reactor, self.pool, fn, *args, **kw)

    def _ipr_get(self) -> Any:
        if self._ipr is None:
            from pyroute2 import IPRoute

            self._ipr = IPRoute(netns=self.netns) if self.netns else IPRoute()
        return self._ipr

    # -- netlink work (worker thread only)

    def _nl_interface(self) -> str:
        ipr = self._ipr_get()
        name = self.interface
        if not name:
            for route in ipr.get_default_routes(family=2):
                oif = route.get_attr("RTA_OIF")
                if oif:
                    name = ipr.get_links(oif)[0].get_attr("IFLA_IFNAME")
                    break
        if not name:
            raise KernelError("no interface configured and no default route")
        found = ipr.link_lookup(ifname=name)
        if not found:
            raise KernelError(f"interface {name!r} not found")
        self.interface = name
        self._index = found[0]
        return name

    def _nl_root(self) -> Any:
        ipr = self._ipr_get()
        for q in ipr.get_qdiscs(index=self._index):
            if q["parent"] == 0xFFFFFFFF:
                return q
        return None

    def _nl_setup(self) -> tuple[bool, bool, str]:
        """Remove our leftovers, install the htb root, probe netem: (htb, netem, reason)."""
        self._nl_interface()
        ipr = self._ipr_get()
        root = self._nl_root()
        if root is not None and root.get_attr("TCA_KIND") == "htb" and root["handle"] != ROOT:
            return False, False, f"{self.interface} already has a foreign htb root qdisc"
        if root is not None and root["handle"] == ROOT:
            ipr.tc("del", index=self._index, handle=ROOT, root=True)
        try:
            ipr.tc("replace", "htb", self._index, ROOT, default=0)
        except Exception as exc:  # noqa: BLE001 - any netlink refusal means no kernel rate
            return False, False, f"cannot install htb on {self.interface}: {exc}"
        netem = True
        probe = ROOT | PROBE_MINOR
        try:
            ipr.tc("add-class", "htb", self._index, probe, parent=ROOT, rate="1gbit")
            try:
                ipr.tc("add", "netem", self._index, (0x7FF << 16), parent=probe, delay=1000)
            except Exception:  # noqa: BLE001
                netem = False
            ipr.tc("del-class", index=self._index, handle=probe, parent=ROOT)
        except Exception as exc:  # noqa: BLE001
            return True, False, f"netem probe failed: {exc}"
        return True, netem, ""

    def _nl_teardown(self) -> None:
        if self._index is None:
            return
        root = self._nl_root()
        if root is not None and root["handle"] == ROOT:
            self._ipr_get().tc("del", index=self._index, handle=ROOT, root=True)

    def _class_args(self, state: KernelPort) -> dict[str, Any]:
        bps = int(state.rate_bps or 0)
        burst = max(int(bps / 8 * 0.004), 32 * 1024)
        return {"parent": ROOT, "rate": f"{bps}bit", "ceil": f"{bps}bit", "burst": burst,
                "cburst": burst, "mtu": 65536 + 1600}

    def _nl_class(self, op: Op) -> None:
        ipr = self._ipr_get()
        cid = classid(op.port)
        netem_handle = ((op.port if op.port not in (MAJOR, 0x7FF) else 0xFFFD) & 0xFFFF) << 16
        if op.action == "add_class":
            ipr.tc("add-class", "htb", self._index, cid, **self._class_args(op.state))
            try:
                ipr.tc("add-filter", "u32", self._index, parent=ROOT, prio=op.port & 0xFFFF,
                       protocol=ETH_P_IP, target=cid, keys=[sport_key(op.port)])
            except Exception:
                ipr.tc("del-class", index=self._index, handle=cid, parent=ROOT)
                raise
        elif op.action == "change_class":
            ipr.tc("change-class", "htb", self._index, cid, **self._class_args(op.state))
        elif op.action == "del_class":
            ipr.tc("del-filter", index=self._index, parent=ROOT, prio=op.port & 0xFFFF, protocol=ETH_P_IP)
            ipr.tc("del-class", index=self._index, handle=cid, parent=ROOT)
            return
        if self.support.netem and (op.state.delay_ms > 0 or op.state.loss_pct > 0):
            ipr.tc("replace", "netem", self._index, netem_handle, parent=cid,
                   delay=int(op.state.delay_ms * 1000), loss=op.state.loss_pct)

    def _nl_class_bytes(self) -> dict[int, int]:
        out: dict[int, int] = {}
        if self._index is None:
            return out
        for c in self._ipr_get().get_classes(index=self._index):
            handle = c["handle"]
            if handle >> 16 != MAJOR:
                continue
            stats = c.get_attr("TCA_STATS2")
            basic = stats.get_attr("TCA_STATS_BASIC") if stats is not None else None
            if basic is not None:
                out[handle & 0xFFFF] = int(basic["bytes"])
        return out

    def _nl_close(self) -> None:
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None

    # -- public API (reactor thread)

    @defer.inlineCallbacks
    def start(self) -> Any:
        """Clean leftovers, set up root qdisc and table/chain, probe; returns KernelSupport."""
        self.applied.clear()  # whatever existed is removed below
        self.handles.clear()
        reasons = []
        htb = netem = False
        try:
            htb, netem, why = yield self._in_thread(self._nl_setup)
            if why:
                reasons.append(why)
        except Exception as exc:  # noqa: BLE001
            reasons.append(f"tc: {exc}")
        self._tc_ready = htb
        nft = reject = False
        try:
            yield self.nft.batch([
                {"add": {"table": {"family": FAMILY, "name": TABLE}}},
                {"delete": {"table": {"family": FAMILY, "name": TABLE}}},
                {"add": {"table": {"family": FAMILY, "name": TABLE}}},
                {"add": {"chain": {"family": FAMILY, "table": TABLE, "name": CHAIN, "type": "filter",
                                   "hook": "input", "prio": 0, "policy": "accept"}}},
            ])
            nft = True
            try:
                doc = yield self.nft.batch([{"add": _rule(0, "reject")}], echo=True)
                handle = _echo_handle(doc)
                yield self.nft.batch([{"delete": _rule(0, "reject", handle=handle)}])
                reject = True
            except KernelError as exc:
                reasons.append(f"nft reject: {exc}")
        except KernelError as exc:
            reasons.append(str(exc))
        self._nft_ready = nft
        self.support = KernelSupport(htb, netem, nft, reject, "; ".join(reasons))
        return self.support

    def stop(self) -> defer.Deferred[Any]:
        """Remove everything this backend created (after pending reconciles); stop the thread."""
        return self._lock.run(self._stop)

    @defer.inlineCallbacks
    def _stop(self) -> Any:
        try:
            if self._tc_ready:
                yield self._in_thread(self._nl_teardown)
            if self._nft_ready:
                yield self.nft.batch([{"delete": {"table": {"family": FAMILY, "name": TABLE}}}])
        except Exception as exc:  # noqa: BLE001
            log.warn("kernel shaping cleanup failed: {exc}", exc=exc)
        finally:
            self.applied.clear()
            self.handles.clear()
            self._tc_ready = self._nft_ready = False
            if self._pool_started:
                yield self._in_thread(self._nl_close)
                self.pool.stop()
                self._pool_started = False

    def reconcile(self, desired: Mapping[int, KernelPort],
                  ports: set[int] | None = None) -> defer.Deferred[list[Op]]:
        """Make the kernel match *desired* (restricted to *ports* when given).

        Serialised; fires with the ops applied, or fails with :class:`KernelError`
        (``applied`` then holds what really exists)."""
        return self._lock.run(self._reconcile, dict(desired), ports)

    @defer.inlineCallbacks
    def _reconcile(self, desired: dict[int, KernelPort], ports: set[int] | None) -> Any:
        applied = self.applied if ports is None else {p: s for p, s in self.applied.items() if p in ports}
        if ports is not None:
            desired = {p: s for p, s in desired.items() if p in ports}
        ops = plan(desired, applied)
        done = []
        for op in ops:
            try:
                if op.action.endswith("_class"):
                    if not self._tc_ready:
                        raise KernelError("tc is not available")
                    yield self._in_thread(self._nl_class, op)
                else:
                    yield self._rule_op(op)
            except KernelError:
                raise
            except Exception as exc:  # noqa: BLE001 - netlink errors carry the kernel's reason
                raise KernelError(f"{op.describe()}: {exc}") from exc
            self.applied = after(op, self.applied)
            done.append(op)
        return done

    @defer.inlineCallbacks
    def _rule_op(self, op: Op) -> Any:
        if not self._nft_ready:
            raise KernelError("nftables is not available")
        if op.action == "add_rule":
            kind = op.state.rule_kind or "drop"
            doc = yield self.nft.batch([{"add": _rule(op.port, kind, op.state.rule_packets)}], echo=True)
            self.handles[op.port] = _echo_handle(doc)
        else:
            handle = self.handles.get(op.port)
            if handle is None:
                return
            counts = yield self._counters_by_handle()
            base = self.drop_base if op.state.rule_kind == "drop" else self.reject_base
            base[op.port] = base.get(op.port, 0) + counts.get(handle, 0)
            yield self.nft.batch([{"delete": _rule(op.port, "drop", handle=handle)}])
            del self.handles[op.port]

    @defer.inlineCallbacks
    def _counters_by_handle(self) -> Any:
        doc = yield self.nft.run(["-j", "list", "chain", FAMILY, TABLE, CHAIN])
        return _rule_counters(doc)

    @defer.inlineCallbacks
    def counters(self) -> Any:
        """``{port: {"drop": packets, "reject": packets}}`` (cumulative for the port)."""
        out: dict[int, dict[str, int]] = {}
        live: dict[int, int] = {}
        if self._nft_ready and self.handles:
            live = yield self._counters_by_handle()
        ports = set(self.drop_base) | set(self.reject_base) | set(self.handles)
        for port in ports:
            drop = self.drop_base.get(port, 0)
            reject = self.reject_base.get(port, 0)
            handle = self.handles.get(port)
            kind = self.applied.get(port, KernelPort()).rule_kind
            if handle is not None:
                if kind == "reject":
                    reject += live.get(handle, 0)
                else:
                    drop += live.get(handle, 0)
            out[port] = {"drop": drop, "reject": reject}
        return out

    def class_bytes(self) -> defer.Deferred[dict[int, int]]:
        """Bytes sent through each port's htb class (``{port: bytes}``)."""
        if not self._tc_ready:
            return defer.succeed({})
        return self._in_thread(self._nl_class_bytes)

    def forget(self, port: int) -> None:
        """Drop the counters of a released port (call after its state was reconciled away)."""
        self.drop_base.pop(port, None)
        self.reject_base.pop(port, None)


def _echo_handle(doc: Any) -> int:
    for item in (doc or {}).get("nftables", []):
        rule = (item.get("add") or {}).get("rule")
        if rule and "handle" in rule:
            return int(rule["handle"])
    raise KernelError("nft did not report the rule handle")
