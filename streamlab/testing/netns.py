"""Network namespaces for the kernel tests: created by the test, torn down after it.

Kernel shaping (htb, nftables) is only ever tested inside a namespace the test makes, so
the machine's own interfaces and rule sets are never touched.  Where the namespace cannot
be made (not root, a tool missing, no namespace support) the test is skipped with the
reason printed."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass


def run(*argv: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run a command, capturing its text output."""
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=check)


def _skip(reason: str) -> None:
    import pytest

    print(f"SKIP: {reason}")
    pytest.skip(reason)


@contextmanager
def network_namespace(prefix: str, tools: Sequence[str] = ("ip", "nft"),
                      lo_mtu: int | None = None) -> Iterator[str]:
    """A fresh namespace named ``<prefix><random>`` with ``lo`` up; deleted on exit.

    *lo_mtu* lowers lo's MTU and GSO size (closer to a NIC's packets than lo's 64 KiB
    lumps, which make a goodput reading at a few Mbps jump by a whole packet)."""
    missing = [t for t in tools if shutil.which(t) is None]
    if os.geteuid() != 0 or missing:
        _skip(f"kernel tests need root and {', '.join(tools)}"
              + (f" (missing: {', '.join(missing)})" if missing else " (not root)"))
    name = f"{prefix}{uuid.uuid4().hex[:6]}"
    out = run("ip", "netns", "add", name, check=False)
    if out.returncode != 0:
        _skip(f"cannot create a network namespace: {out.stderr.strip()}")
    try:
        if lo_mtu is not None:
            run("ip", "netns", "exec", name, "ip", "link", "set", "lo", "mtu", str(lo_mtu),
                "gso_max_size", str(lo_mtu), check=False)
        run("ip", "netns", "exec", name, "ip", "link", "set", "lo", "up")
        yield name
    finally:
        run("ip", "netns", "del", name, check=False)


@dataclass(frozen=True)
class Link:
    """Two namespaces joined by a veth pair: the daemon side ``a`` and the player side ``b``.

    ``a`` has a default route via ``b`` (as a box whose default route leaves by its NIC),
    ``b`` reaches ``a`` directly."""

    ns_a: str
    ns_b: str
    if_a: str
    if_b: str
    addr_a: str
    addr_b: str


@contextmanager
def linked_namespaces(prefix: str, tools: Sequence[str] = ("ip", "nft")) -> Iterator[Link]:
    """Fresh namespaces ``<prefix><rand>a`` / ``...b`` joined by veth ``sl<rand>a`` /
    ``sl<rand>b`` (10.<x>.<y>.1/24 and .2/24); both deleted on exit.  Skips like
    :func:`network_namespace` where they cannot be made."""
    tag = uuid.uuid4().hex[:6]
    net = f"10.{200 + int(tag[:2], 16) % 50}.{int(tag[2:4], 16)}"
    if_a, if_b = f"sl{tag}a", f"sl{tag}b"
    with network_namespace(f"{prefix}a", tools) as ns_a, network_namespace(f"{prefix}b", tools) as ns_b:
        out = run("ip", "link", "add", if_a, "netns", ns_a, "type", "veth", "peer", "name", if_b,
                  "netns", ns_b, check=False)
        if out.returncode != 0:
            _skip(f"cannot create a veth pair: {out.stderr.strip()}")
        for ns, ifname, addr in ((ns_a, if_a, f"{net}.1"), (ns_b, if_b, f"{net}.2")):
            run("ip", "netns", "exec", ns, "ip", "addr", "add", f"{addr}/24", "dev", ifname)
            run("ip", "netns", "exec", ns, "ip", "link", "set", ifname, "up")
        run("ip", "netns", "exec", ns_a, "ip", "route", "add", "default", "via", f"{net}.2")
        yield Link(ns_a, ns_b, if_a, if_b, f"{net}.1", f"{net}.2")
