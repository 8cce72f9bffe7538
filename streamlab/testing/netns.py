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
