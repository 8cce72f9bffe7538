"""Kernel shaping backend: tc through pyroute2 (netlink) and nftables through ``nft -j``.

* route lookups (``RTM_GETROUTE``) tell which interface a player's traffic leaves by;
  :meth:`KernelBackend.prove` applies a scratch class there (and removes it) before the
  interface is used, and :meth:`KernelBackend.start` does the same for nftables in a
  scratch table: capabilities are proven, never inferred.
* tc: an htb root ``5eb:`` on each interface in use (``default 0``: unclassified traffic passes
  unshaped), one htb class ``5eb:<port>`` per session port, selected by a u32 filter on the
  TCP *source* port (filter priority = port, so deleting it is exact), netem under the
  class for delay/loss only when the kernel has netem, else a byte-bounded bfifo leaf
  (:func:`leaf_limit`: ~100 ms of the rate) so the queue behind the shaper stays short
  and a reset is not stuck behind seconds of queued data.  All netlink calls run on one
  dedicated worker thread (a single-thread ``ThreadPool``), never on the reactor.
* nftables: table ``inet streamlab``, chain ``transport_faults`` (input hook), one
  counted DROP/REJECT rule per port, added with ``nft -j -e -f -`` (a child process via a
  ProcessProtocol, :mod:`streamlab.shaping.nft`) so the kernel's handle comes back and
  deletion is exact.

:meth:`KernelBackend.start` removes leftovers of a previous run (our root qdiscs, our
table) and proves what the kernel takes; :meth:`KernelBackend.stop` removes all of it.
:meth:`KernelBackend.reconcile` applies :func:`streamlab.shaping.reconcile.plan` op by op;
a failing op raises :class:`KernelError` and ``applied`` keeps what really exists.

Why this module is longer than ~450 lines: it has one reason to change, what streamlab
does in the kernel.  tc and nftables ops share one state (``applied``, rule handles,
counter bases, proofs) that :meth:`KernelBackend.reconcile` must keep exact op by op, and
every netlink call must run on the one netlink thread; splitting the class would spread
that state over modules.  The nft runner and rule JSON are already apart
(:mod:`streamlab.shaping.nft`), as is the pure reconciler (:mod:`streamlab.shaping.reconcile`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pyroute2.netlink.rtnl import tcmsg
from pyroute2.netlink.rtnl.tcmsg import sched_pfifo
from twisted.internet import defer
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from streamlab.shaping.nft import CHAIN, FAMILY, TABLE, KernelError, Nft, echo_handle, rule, rule_counters
from streamlab.shaping.reconcile import KernelPort, Op, after, plan
from streamlab.shaping.route import NftProof, Route, TcProof, route_from_lookup

if TYPE_CHECKING:
    from streamlab.interfaces import IDaemonReactor

log = Logger()

# bfifo's options are pfifo's (``struct tc_fifo_qopt``: one u32 limit, in bytes for bfifo);
# pyroute2 only lacks the name
tcmsg.plugins.setdefault("bfifo", sched_pfifo)

#: how much of the rate the leaf queue under a class may hold
LEAF_SECONDS = 0.1

MAJOR = 0x5EB
ROOT = MAJOR << 16
PROBE_MINOR = 1
ETH_P_IP = 0x0800


def leaf_limit(rate_bps: float, mtu: int, gso_max_size: int) -> int:
    """Bytes the bfifo leaf under a class may hold: :data:`LEAF_SECONDS` of the rate, at
    least four frames, and on an interface that queues GSO lumps at least three of them
    (counted as the qdisc counts them: every segment's headers included) plus two frames.
    A bfifo drops every packet that does not fit, and TCP retries a locally dropped lump
    only on its next ACK or probe timer: room for one lump starved a 1 Mbps class on a
    64 KiB-GSO veth to 87.6 % of its cap, two gave 92 % at 2 Mbps, three 95-97 % (the
    default leaf's figure; the rest is header overhead)."""
    mtu = max(int(mtu), 576)
    frame = mtu + 64
    gso = max(int(gso_max_size), 0)
    lump = gso + -(-gso // (mtu - 40)) * (frame - mtu + 64) if gso > mtu else frame
    floor = max(4 * frame, (3 * lump if gso > mtu else lump) + 2 * frame)
    return max(int(rate_bps / 8 * LEAF_SECONDS), floor)


def classid(port: int) -> int:
    """The htb class of *port* (``5eb:<port>``)."""
    return ROOT | (port & 0xFFFF)


def sport_key(port: int) -> str:
    """u32 key matching TCP/UDP source port *port* (IPv4 without options)."""
    return f"0x{port << 16:08x}/0xffff0000+20"


# --------------------------------------------------------------------------- nft child process


# --------------------------------------------------------------------------- the backend

#: The scratch class/filter of a proof (a minor and a u32 priority no session port uses).
PROBE_PRIO = 1
PROBE_SPORT = 9
PROBE_TABLE = "streamlab_probe"
IFF_LOOPBACK = 0x8


class KernelBackend:
    """tc + nftables for session ports, on whichever interface each session's route uses.

    *interface*: the interface used for ops that name none (and proven at start when
    set); ``""`` = the default route's.  Proofs (:meth:`prove`) are cached per interface;
    our htb root is installed on an interface when its first class is added and removed
    on :meth:`stop`."""

    def __init__(self, reactor: IDaemonReactor, interface: str = "", netns: str | None = None,
                 nft: str = "nft", ip: str = "ip") -> None:
        self.reactor = reactor
        self.interface = interface
        self.netns = netns
        self.nft = Nft(reactor, netns, nft, ip)
        self.pool = ThreadPool(1, 1, name="streamlab-netlink")
        self._pool_started = False
        self._ipr: Any = None
        self._links: dict[str, int] = {}
        self._roots: set[str] = set()
        self.proofs: dict[str, TcProof] = {}
        self._proving: dict[str, defer.Deferred[TcProof]] = {}
        self.nft_proof: NftProof | None = None
        self.applied: dict[int, KernelPort] = {}
        self.handles: dict[int, int] = {}
        self.drop_base: dict[int, int] = {}
        self.reject_base: dict[int, int] = {}
        self._lock = defer.DeferredLock()
        self._nft_ready = False
        self._started = False

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

    def _nl_default_interface(self) -> str:
        ipr = self._ipr_get()
        for route in ipr.get_default_routes(family=2):
            oif = route.get_attr("RTA_OIF")
            if oif:
                return str(ipr.get_links(oif)[0].get_attr("IFLA_IFNAME"))
        return ""

    def _nl_index(self, name: str) -> int:
        idx = self._links.get(name)
        if idx is None:
            found = self._ipr_get().link_lookup(ifname=name)
            if not found:
                raise KernelError(f"interface {name!r} not found")
            idx = self._links[name] = found[0]
        return idx

    def _nl_root(self, idx: int) -> Any:
        for q in self._ipr_get().get_qdiscs(index=idx):
            if q["parent"] == 0xFFFFFFFF:
                return q
        return None

    def _nl_clean_leftovers(self) -> list[str]:
        """Remove our root qdisc from every interface (a previous run's leftovers)."""
        ipr = self._ipr_get()
        cleaned = []
        for link in ipr.get_links():
            idx = link["index"]
            root = self._nl_root(idx)
            if root is not None and root["handle"] == ROOT and root.get_attr("TCA_KIND") == "htb":
                ipr.tc("del", index=idx, handle=ROOT, root=True)
                cleaned.append(str(link.get_attr("IFLA_IFNAME")))
        return cleaned

    def _nl_install_root(self, name: str) -> int:
        """Our htb root on *name* (``default 0``: unclassified traffic passes unshaped)."""
        idx = self._nl_index(name)
        root = self._nl_root(idx)
        if root is not None and root["handle"] == ROOT:
            self._roots.add(name)
            return idx
        if root is not None and root.get_attr("TCA_KIND") == "htb":
            raise KernelError(f"{name} already has a foreign htb root qdisc")
        self._ipr_get().tc("replace", "htb", idx, ROOT, default=0)
        self._roots.add(name)
        return idx

    def _nl_remove_root(self, name: str) -> None:
        idx = self._nl_index(name)
        root = self._nl_root(idx)
        if root is not None and root["handle"] == ROOT:
            self._ipr_get().tc("del", index=idx, handle=ROOT, root=True)
        self._roots.discard(name)

    def _nl_prove(self, name: str) -> TcProof:
        """Apply a scratch htb class + u32 filter (+ netem) on *name* and remove it again."""
        ipr = self._ipr_get()
        try:
            idx = self._nl_index(name)
            root = self._nl_root(idx)
            had_root = name in self._roots or (root is not None and root["handle"] == ROOT)
            self._nl_install_root(name)
        except Exception as exc:  # noqa: BLE001 - any refusal means no kernel rate here
            return TcProof(name, False, False, f"cannot install htb on {name}: {exc}")
        probe = ROOT | PROBE_MINOR
        htb = netem = fifo = False
        reason = ""
        try:
            ipr.tc("add-class", "htb", idx, probe, parent=ROOT, rate="1gbit")
            try:
                ipr.tc("add-filter", "u32", idx, parent=ROOT, prio=PROBE_PRIO, protocol=ETH_P_IP,
                       target=probe, keys=[sport_key(PROBE_SPORT)])
                try:
                    ipr.tc("add", "netem", idx, (0x7FF << 16), parent=probe, delay=1000)
                    netem = True
                except Exception as exc:  # noqa: BLE001
                    reason = f"kernel lacks netem ({_short(exc)}): delay and loss in userspace"
                try:
                    ipr.tc("replace", "bfifo", idx, 0, parent=probe, limit=65536)
                    fifo = True
                except Exception as exc:  # noqa: BLE001 - the class keeps its default pfifo
                    log.info("{name}: no bfifo leaf queue ({exc}): htb classes keep the default",
                             name=name, exc=_short(exc))
                ipr.tc("del-filter", index=idx, parent=ROOT, prio=PROBE_PRIO, protocol=ETH_P_IP)
                htb = True
            except Exception as exc:  # noqa: BLE001
                reason = f"scratch u32 filter refused: {_short(exc)}"
            ipr.tc("del-class", index=idx, handle=probe, parent=ROOT)
        except Exception as exc:  # noqa: BLE001
            htb = netem = False
            reason = f"scratch htb class refused: {_short(exc)}"
        finally:
            if not had_root:
                try:
                    self._nl_remove_root(name)  # leave the interface as we found it
                except Exception:  # noqa: BLE001
                    pass
        return TcProof(name, htb, netem and htb, reason, fifo=fifo and htb)

    def _nl_route(self, dest: str) -> Route:
        ipr = self._ipr_get()
        try:
            family = 10 if ipaddress.ip_address(dest).version == 6 else 2
        except ValueError:
            return route_from_lookup(dest, None, error="not an IP address")
        try:
            msgs = ipr.route("get", dst=dest, family=family)
        except Exception as exc:  # noqa: BLE001 - ENETUNREACH and friends
            return route_from_lookup(dest, None, error=_short(exc))
        if not msgs:
            return route_from_lookup(dest, None, error="empty answer")
        msg = msgs[0]
        oif = msg.get_attr("RTA_OIF")
        name, loop = "", False
        if oif:
            links = ipr.get_links(oif)
            if links:
                name = str(links[0].get_attr("IFLA_IFNAME") or "")
                loop = bool(links[0]["flags"] & IFF_LOOPBACK)
        return route_from_lookup(dest, int(msg["type"]), name, loop, str(msg.get_attr("RTA_GATEWAY") or ""))

    def _teardown_all(self) -> None:
        for name in list(self._roots):
            try:
                self._nl_remove_root(name)
            except Exception as exc:  # noqa: BLE001
                log.warn("removing htb root from {name}: {exc}", name=name, exc=exc)

    def _class_args(self, state: KernelPort) -> dict[str, Any]:
        bps = int(state.rate_bps or 0)
        burst = max(int(bps / 8 * 0.004), 32 * 1024)
        return {"parent": ROOT, "rate": f"{bps}bit", "ceil": f"{bps}bit", "burst": burst,
                "cburst": burst, "mtu": 65536 + 1600}

    def _op_interface(self, state: KernelPort) -> str:
        name = state.interface or self.interface
        if not name:
            raise KernelError("no interface for the class")
        return name

    def _nl_class(self, op: Op) -> None:
        ipr = self._ipr_get()
        name = self._op_interface(op.state)
        cid = classid(op.port)
        netem_handle = ((op.port if op.port not in (MAJOR, 0x7FF) else 0xFFFD) & 0xFFFF) << 16
        if op.action == "add_class":
            idx = self._nl_install_root(name)
            ipr.tc("add-class", "htb", idx, cid, **self._class_args(op.state))
            try:
                ipr.tc("add-filter", "u32", idx, parent=ROOT, prio=op.port & 0xFFFF,
                       protocol=ETH_P_IP, target=cid, keys=[sport_key(op.port)])
            except Exception:
                ipr.tc("del-class", index=idx, handle=cid, parent=ROOT)
                raise
        elif op.action == "change_class":
            idx = self._nl_index(name)
            ipr.tc("change-class", "htb", idx, cid, **self._class_args(op.state))
        else:  # del_class
            idx = self._nl_index(name)
            if name not in self._roots:
                return  # the root (and every class under it) is already gone
            ipr.tc("del-filter", index=idx, parent=ROOT, prio=op.port & 0xFFFF, protocol=ETH_P_IP)
            ipr.tc("del-class", index=idx, handle=cid, parent=ROOT)
            return
        proof = self.proofs.get(name)
        if proof is not None and proof.netem and (op.state.delay_ms > 0 or op.state.loss_pct > 0):
            ipr.tc("replace", "netem", idx, netem_handle, parent=cid,
                   delay=int(op.state.delay_ms * 1000), loss=op.state.loss_pct)
        elif proof is not None and proof.fifo:
            # handle 0: the kernel names it, and a later netem (own handle) grafts over it
            link = ipr.get_links(idx)[0]
            limit = leaf_limit(op.state.rate_bps or 0, link.get_attr("IFLA_MTU") or 1500,
                               link.get_attr("IFLA_GSO_MAX_SIZE") or 0)
            ipr.tc("replace", "bfifo", idx, 0, parent=cid, limit=limit)

    def _nl_class_bytes(self) -> dict[int, int]:
        out: dict[int, int] = {}
        ipr = self._ipr_get()
        for name in list(self._roots):
            try:
                idx = self._nl_index(name)
                classes = ipr.get_classes(index=idx)
            except Exception:  # noqa: BLE001 - interface gone
                continue
            for c in classes:
                handle = c["handle"]
                port = handle & 0xFFFF
                if handle >> 16 != MAJOR:
                    continue
                state = self.applied.get(port)
                if state is None or (state.interface or self.interface) != name:
                    continue
                stats = c.get_attr("TCA_STATS2")
                basic = stats.get_attr("TCA_STATS_BASIC") if stats is not None else None
                if basic is not None:
                    out[port] = int(basic["bytes"])
        return out

    def _nl_close(self) -> None:
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None

    # -- public API (reactor thread)

    @defer.inlineCallbacks
    def start(self) -> Any:
        """Remove leftovers, prove nftables in a scratch table, create our table and prove tc
        on the configured (else the default route's) interface; fires with the
        :class:`NftProof`."""
        self.applied.clear()  # whatever existed is removed below
        self.handles.clear()
        self.proofs.clear()
        try:
            cleaned = yield self._in_thread(self._nl_clean_leftovers)
            if cleaned:
                log.info("removed leftover htb roots from {names}", names=", ".join(cleaned))
        except Exception as exc:  # noqa: BLE001
            log.warn("tc leftover cleanup failed: {exc}", exc=exc)
        self.nft_proof = yield self._prove_nft()
        self._nft_ready = False
        if self.nft_proof.drop or self.nft_proof.reject:
            try:
                yield self.nft.batch([
                    {"add": {"table": {"family": FAMILY, "name": TABLE}}},
                    {"add": {"chain": {"family": FAMILY, "table": TABLE, "name": CHAIN, "type": "filter",
                                       "hook": "input", "prio": 0, "policy": "accept"}}},
                ])
                self._nft_ready = True
            except KernelError as exc:
                self.nft_proof = NftProof(reason=f"creating table {TABLE}: {exc}")
        self._started = True
        name = self.interface
        if not name:
            try:
                name = yield self._in_thread(self._nl_default_interface)
            except Exception:  # noqa: BLE001
                name = ""
        if name:
            yield self.prove(name)
        return self.nft_proof

    @defer.inlineCallbacks
    def _prove_nft(self) -> Any:
        """A scratch table with a counted DROP and REJECT rule, read back, then deleted
        (our own table from a previous run is deleted first)."""
        scratch = {"family": FAMILY, "name": PROBE_TABLE}
        try:
            yield self.nft.batch([
                {"add": {"table": {"family": FAMILY, "name": TABLE}}},
                {"delete": {"table": {"family": FAMILY, "name": TABLE}}},
                {"add": {"table": scratch}},
                {"delete": {"table": scratch}},
                {"add": {"table": scratch}},
                {"add": {"chain": {"family": FAMILY, "table": PROBE_TABLE, "name": CHAIN, "type": "filter",
                                   "hook": "input", "prio": 0, "policy": "accept"}}},
            ])
        except KernelError as exc:
            return NftProof(reason=str(exc))
        drop = reject = counters = False
        reasons = []
        try:
            for kind in ("drop", "reject"):
                scratch_rule = rule(0, kind)
                scratch_rule["rule"]["table"] = PROBE_TABLE
                try:
                    yield self.nft.batch([{"add": scratch_rule}], echo=True)
                    if kind == "drop":
                        drop = True
                    else:
                        reject = True
                except KernelError as exc:
                    reasons.append(f"{kind} rule refused: {exc}")
            if drop or reject:
                try:
                    doc = yield self.nft.run(["-j", "list", "chain", FAMILY, PROBE_TABLE, CHAIN])
                    counters = len(rule_counters(doc)) == int(drop) + int(reject)
                except (KernelError, ValueError) as exc:
                    reasons.append(f"counters not readable: {exc}")
        finally:
            try:
                yield self.nft.batch([{"delete": {"table": scratch}}])
            except KernelError as exc:
                log.warn("removing the nft scratch table: {exc}", exc=exc)
        return NftProof(drop, reject, counters, "; ".join(reasons))

    def prove(self, interface: str) -> defer.Deferred[TcProof]:
        """The cached proof of *interface*, proving it (scratch class) on first ask."""
        if interface in self.proofs:
            return defer.succeed(self.proofs[interface])
        pending = self._proving.get(interface)
        if pending is None:
            pending = self._lock.run(self._in_thread, self._nl_prove, interface)

            def done(proof: TcProof) -> TcProof:
                self.proofs[interface] = proof
                self._proving.pop(interface, None)
                log.info("kernel shaping on {name}: {proof}", name=interface, proof=proof)
                return proof

            def failed(f: Any) -> TcProof:
                return done(TcProof(interface, False, False, f"proof failed: {f.getErrorMessage()}"))

            pending.addCallbacks(done, failed)
            self._proving[interface] = pending
        result: defer.Deferred[TcProof] = defer.Deferred()

        def relay(outcome: TcProof | Failure) -> TcProof | Failure:
            if isinstance(outcome, Failure):
                result.errback(outcome)
            else:
                result.callback(outcome)
            return outcome

        pending.addBoth(relay)
        return result

    def refuse(self, interface: str, reason: str) -> None:
        """The kernel refused a change on *interface* after its proof: stop claiming it."""
        self.proofs[interface] = TcProof(interface, False, False, f"refused after proof: {reason}")

    def route(self, dest: str) -> defer.Deferred[Route]:
        """The route to *dest* (netlink ``RTM_GETROUTE`` on the worker thread)."""
        return self._in_thread(self._nl_route, dest)

    def stop(self) -> defer.Deferred[Any]:
        """Remove everything this backend created (after pending reconciles); stop the thread."""
        return self._lock.run(self._stop)

    @defer.inlineCallbacks
    def _stop(self) -> Any:
        try:
            if self._roots:
                yield self._in_thread(self._teardown_all)
            if self._nft_ready:
                yield self.nft.batch([{"delete": {"table": {"family": FAMILY, "name": TABLE}}}])
        except Exception as exc:  # noqa: BLE001
            log.warn("kernel shaping cleanup failed: {exc}", exc=exc)
        finally:
            self.applied.clear()
            self.handles.clear()
            self._nft_ready = False
            self._started = False
            if self._pool_started:
                yield self._in_thread(self._nl_close)
                self.pool.stop()
                self._pool_started = False
                # a stopped ThreadPool cannot start again: a later start() gets a new one
                self.pool = ThreadPool(1, 1, name="streamlab-netlink")
            self._links.clear()
            self._roots.clear()
            self.proofs.clear()

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
                    yield self._in_thread(self._nl_class, op)
                else:
                    yield self._rule_op(op)
            except KernelError as exc:
                if op.action.startswith("del_"):
                    # what we meant to delete is gone anyway: forget it rather than claim it
                    self.applied = after(op, self.applied)
                raise KernelError(f"{op.describe()}: {exc}", op) from None
            except Exception as exc:  # noqa: BLE001 - netlink errors carry the kernel's reason
                if op.action.startswith("del_"):
                    self.applied = after(op, self.applied)
                raise KernelError(f"{op.describe()}: {_short(exc)}", op) from exc
            self.applied = after(op, self.applied)
            done.append(op)
        return done

    @defer.inlineCallbacks
    def _rule_op(self, op: Op) -> Any:
        if not self._nft_ready:
            raise KernelError("nftables is not available")
        if op.action == "add_rule":
            kind = op.state.rule_kind or "drop"
            doc = yield self.nft.batch([{"add": rule(op.port, kind, op.state.rule_packets)}], echo=True)
            self.handles[op.port] = echo_handle(doc)
        else:
            handle = self.handles.get(op.port)
            if handle is None:
                return
            counts = yield self._counters_by_handle()
            base = self.drop_base if op.state.rule_kind == "drop" else self.reject_base
            base[op.port] = base.get(op.port, 0) + counts.get(handle, 0)
            yield self.nft.batch([{"delete": rule(op.port, "drop", handle=handle)}])
            del self.handles[op.port]

    @defer.inlineCallbacks
    def _counters_by_handle(self) -> Any:
        doc = yield self.nft.run(["-j", "list", "chain", FAMILY, TABLE, CHAIN])
        return rule_counters(doc)

    @defer.inlineCallbacks
    def counters(self) -> Any:
        """``{port: {"drop": packets, "reject": packets}}`` (cumulative for the port), read
        from nftables now (``nft -j list chain``)."""
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
        """Bytes sent through each port's htb class (``{port: bytes}``), read now."""
        if not self._roots:
            return defer.succeed({})
        return self._in_thread(self._nl_class_bytes)

    def forget(self, port: int) -> None:
        """Drop the counters of a released port (call after its state was reconciled away)."""
        self.drop_base.pop(port, None)
        self.reject_base.pop(port, None)


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."
