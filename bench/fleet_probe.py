"""What the fleet reads about the daemon from outside: /proc (CPU, RSS, fds), the
daemon's ``/metrics`` and ``/debug`` pages, and (kernel backend) tc classes and nftables
rules of the current network namespace.  Blocking; runs in the orchestrator process."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from typing import Any

from streamlab.testing.daemon import request

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of *pid* (all its threads) in seconds."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def runqueue_wait(pid: int) -> float:
    """Seconds the main thread of *pid* spent runnable but waiting for a CPU
    (/proc/<pid>/schedstat, second field)."""
    try:
        with open(f"/proc/{pid}/schedstat") as fh:
            return int(fh.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


def rss_bytes(pid: int) -> int:
    """Resident set size of *pid*."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def open_fds(pid: int) -> int:
    """Number of open file descriptors of *pid*."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def host_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat") as fh:
        values = [int(v) for v in fh.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    total = sum(values[:8])
    return total - idle, total


def find_listener_pid(port: int) -> int | None:
    """The pid of the process listening on TCP *port* (IPv4 or IPv6), or None."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as fh:
                next(fh)
                for line in fh:
                    cols = line.split()
                    if cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                        inodes.add(cols[9])
        except OSError:
            continue
    if not inodes:
        return None
    wanted = {f"socket:[{i}]" for i in inodes}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}") in wanted:
                    return int(pid)
        except OSError:
            continue
    return None


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$")


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text -> ``{"name{labels}": value}``."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m:
            try:
                out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
            except ValueError:
                continue
    return out


def daemon_gauges(host: str, port: int) -> dict[str, Any]:
    """Sessions, requests in flight, reactor timers and network-log entries as the daemon
    reports them on ``/metrics`` (None for a family this daemon does not expose), plus
    session-port pool figures and SSE clients from ``/debug``."""
    out: dict[str, Any] = {}
    try:
        m = parse_metrics(request(port, "GET", "/metrics", host=host, timeout=10).text)
    except OSError:
        m = {}
    for key, name in (
        ("sessions", "streamlab_sessions"),
        ("requests_in_flight", "streamlab_requests_in_flight"),
        ("timers", "streamlab_reactor_delayed_calls"),
        ("network_log_entries", "streamlab_network_log_entries"),
    ):
        value = m.get(name)
        out[key] = int(value) if value is not None else None
    try:
        page = request(port, "GET", "/debug", host=host, timeout=10).text
        block = re.search(r"<h2>Session ports</h2><pre>(.*?)</pre>", page, re.S)
        if block:
            info = json.loads(html.unescape(block.group(1)))
            out["ports_in_use"] = len(info.get("in_use", []) or [])
            out["ports_releasing"] = len(info.get("releasing", []) or [])
            out["sse_clients"] = info.get("sse_clients")
    except (OSError, ValueError):
        pass
    return out


def process_sample(pid: int) -> dict[str, Any]:
    """RSS (MB), open fds and threads of *pid*."""
    threads = len(os.listdir(f"/proc/{pid}/task"))
    return {"rss_mb": round(rss_bytes(pid) / 1e6, 1), "fds": open_fds(pid), "threads": threads}


def kernel_state(ports: set[int] | None = None, device: str = "lo") -> dict[str, Any]:
    """htb classes under streamlab's root ``5eb:`` and rules of table ``inet streamlab``
    in the current network namespace (only those of *ports* when given)."""
    out: dict[str, Any] = {"tc_classes": None, "nft_rules": None}
    if shutil.which("tc"):
        # text output: this iproute2 ignores -j for classes
        proc = subprocess.run(
            ["tc", "class", "show", "dev", device], capture_output=True, text=True, timeout=30, check=False
        )
        if proc.returncode == 0:
            minors = [int(m, 16) for m in re.findall(r"^class \S+ 5eb:([0-9a-f]+)", proc.stdout, re.M)]
            out["tc_classes"] = len([p for p in minors if ports is None or p in ports])
    if shutil.which("nft"):
        proc = subprocess.run(
            ["nft", "-j", "list", "ruleset"], capture_output=True, text=True, timeout=30, check=False
        )
        if proc.returncode == 0:
            rules = [
                i["rule"]
                for i in json.loads(proc.stdout or "{}").get("nftables", [])
                if "rule" in i and i["rule"].get("table") == "streamlab"
            ]
            if ports is not None:
                rules = [r for r in rules if any(f"port={p} " in r.get("comment", "") + " " for p in ports)]
            out["nft_rules"] = len(rules)
    return out
