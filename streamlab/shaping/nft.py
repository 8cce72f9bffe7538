"""nftables through ``nft -j`` child processes (never on the reactor's thread of work):
the command runner and the JSON of streamlab's transport-fault rules.

Table ``inet streamlab``, chain ``transport_faults``; one counted DROP/REJECT rule per
session port (comment ``streamlab port=<p> kind=<k>``), added with ``nft -j -e -f -`` so
the kernel's handle comes back (:func:`echo_handle`) and deletion is exact.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

from twisted.internet import defer, protocol

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorProcess

    from streamlab.shaping.reconcile import Op

TABLE = "streamlab"
CHAIN = "transport_faults"
FAMILY = "inet"


class KernelError(Exception):
    """A tc or nft operation failed; the message is the reason shown to the user and
    ``op`` the reconciler op that failed (None outside a reconcile)."""

    def __init__(self, message: str, op: Op | None = None) -> None:
        super().__init__(message)
        self.op = op


class _NftProtocol(protocol.ProcessProtocol):
    def __init__(self, stdin: bytes) -> None:
        self.stdin = stdin
        self.out: list[bytes] = []
        self.err: list[bytes] = []
        self.done: defer.Deferred[tuple[int, bytes, bytes]] = defer.Deferred()

    def connectionMade(self) -> None:
        assert self.transport is not None
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

    def __init__(self, reactor: IReactorProcess, netns: str | None = None, nft: str = "nft",
                 ip: str = "ip") -> None:
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


def rule_expr(port: int, kind: str, packets: int | None) -> list[dict[str, Any]]:
    """The match/limit/counter/verdict of *port*'s *kind* rule (*packets*: budget or None)."""
    expr: list[dict[str, Any]] = [
        {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": port}}]
    if packets is not None:
        # A bucket that never refills: matches exactly the first *packets* packets.
        expr.append({"limit": {"rate": 1, "per": "week", "burst": packets, "burst_unit": "packets"}})
    expr.append({"counter": None})
    expr.append({"drop": None} if kind == "drop" else {"reject": {"type": "tcp reset"}})
    return expr


def rule(port: int, kind: str, packets: int | None = None, handle: int | None = None) -> dict[str, Any]:
    """A rule object of a JSON batch: the rule to add, or with *handle* the one to delete."""
    rule: dict[str, Any] = {"family": FAMILY, "table": TABLE, "chain": CHAIN}
    if handle is not None:
        rule["handle"] = handle
    else:
        rule["comment"] = f"streamlab port={port} kind={kind}"
        rule["expr"] = rule_expr(port, kind, packets)
    return {"rule": rule}


def rule_counters(doc: Any) -> dict[int, int]:
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


def echo_handle(doc: Any) -> int:
    """The handle of the rule an ``nft -j -e`` answer added (KernelError when missing)."""
    for item in (doc or {}).get("nftables", []):
        rule = (item.get("add") or {}).get("rule")
        if rule and "handle" in rule:
            return int(rule["handle"])
    raise KernelError("nft did not report the rule handle")
