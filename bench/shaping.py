"""Shaping accuracy and cost: achieved/cap for the userspace and kernel backends at
1, 5, 20, 50 and 100 Mbps, and the userspace shaper's CPU per 100 Mbps.

    .venv/bin/python bench/shaping.py [--seconds 3] [--rates 1,5,20,50,100] [--no-kernel]

Userspace: a twisted.web Site serving a big file through the shaping factory on
127.0.0.1, downloaded by curl; CPU is this process's user+sys time (the reactor does all
the shaping work) per second of transfer, scaled to 100 Mbps.  Kernel: inside a network
namespace created here, an htb class on the port of a plain http.server (needs root;
skipped with the reason otherwise).  Prints figures, never fails on speed.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


CLIENT = r"""
import socket, sys, time
host, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
nbytes, limit = int(sys.argv[4]), float(sys.argv[5])
skip = 128 * 1024
s = socket.create_connection((host, port), timeout=limit)
s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nRange: bytes=0-{nbytes - 1}\r\n"
          "Connection: close\r\n\r\n".encode())
buf = b""
while b"\r\n\r\n" not in buf:
    buf += s.recv(65536)
got = len(buf.split(b"\r\n\r\n", 1)[1])
t_first = time.monotonic()
t_mark = n_mark = None
deadline = t_first + limit
while got < nbytes and time.monotonic() < deadline:
    s.settimeout(max(0.01, deadline - time.monotonic()))
    try:
        chunk = s.recv(262144)
    except (TimeoutError, socket.timeout):
        break
    if not chunk:
        break
    got += len(chunk)
    if t_mark is None and got >= skip:
        t_mark, n_mark = time.monotonic(), got
t_end = time.monotonic()
print(got, got * 8 / (t_end - t_first) / 1e6, (got - n_mark) * 8 / (t_end - t_mark) / 1e6 if t_mark else 0.0)
"""


def fetch(port: int, path: str, nbytes: int, prefix: list[str] | None = None,
          seconds: float = 3.0) -> tuple[float, float]:
    """Download *nbytes* (the range is ignored by http.server: a time limit bounds it too).

    Returns (Mbps from the first body byte, sustained Mbps after the first 128 KiB)."""
    out = subprocess.run([*(prefix or []), sys.executable, "-c", CLIENT, "127.0.0.1", str(port), path,
                          str(nbytes), f"{seconds * 1.3 + 0.5:.2f}"],
                         capture_output=True, text=True, timeout=120, check=True)
    _, first, sustained = (float(x) for x in out.stdout.split())
    return first, sustained


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def userspace(reactor, rates: list[float], seconds: float, path: str) -> list[tuple[float, ...]]:
    """Runs in a worker thread; the reactor (main thread) serves and shapes."""
    from twisted.internet.threads import blockingCallFromThread
    from twisted.web.resource import Resource
    from twisted.web.server import Site
    from twisted.web.static import File

    from streamlab.shaping.userspace import UserspaceBackend
    from streamlab.testing.daemon import free_port

    backend = UserspaceBackend(reactor)
    root = Resource()
    root.putChild(b"f", File(os.path.dirname(path)))
    port = free_port()
    listening = blockingCallFromThread(reactor, reactor.listenTCP, port, backend.wrap(port, Site(root)),
                                       interface="127.0.0.1")
    url = f"/f/{os.path.basename(path)}"
    results: list[tuple[float, ...]] = []
    try:
        for rate in rates:
            blockingCallFromThread(reactor, backend.shaper(port).configure, rate)
            c0, t0 = cpu(), time.monotonic()
            first, sustained = fetch(port, url, int(rate * 1e6 / 8 * seconds), seconds=seconds)
            c1, t1 = cpu(), time.monotonic()
            cpu_per_100 = (c1 - c0) / (t1 - t0) * 100 / rate * 100  # % of a core per 100 Mbps
            results.append((rate, first, sustained, cpu_per_100))
    finally:
        blockingCallFromThread(reactor, listening.stopListening)
    return results


def kernel(reactor, rates: list[float], seconds: float, path: str) -> tuple[list[tuple[float, ...]], str]:
    """Runs in a worker thread; the KernelBackend is driven on the reactor."""
    from twisted.internet.threads import blockingCallFromThread

    from streamlab.shaping.kernel import KernelBackend
    from streamlab.shaping.reconcile import KernelPort

    if os.geteuid() != 0 or not shutil.which("ip"):
        return [], "needs root and iproute2"
    name = f"slbench{uuid.uuid4().hex[:6]}"
    if subprocess.run(["ip", "netns", "add", name], capture_output=True).returncode != 0:
        return [], "cannot create a network namespace"
    ns = ["ip", "netns", "exec", name]
    server = None
    kb = None
    try:
        # NIC-like packet sizes instead of lo's 64 KiB GSO lumps (see the test module).
        subprocess.run([*ns, "ip", "link", "set", "lo", "mtu", "16384", "gso_max_size", "16384"])
        subprocess.run([*ns, "ip", "link", "set", "lo", "up"], check=True)
        port = 31899
        server = subprocess.Popen([*ns, sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port),
                                   "--directory", os.path.dirname(path)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}/{os.path.basename(path)}"
        deadline = time.monotonic() + 10
        while subprocess.run([*ns, "curl", "-s", "-o", "/dev/null", "--max-time", "1", url, "-r", "0-0"]
                             ).returncode not in (0, 23, 28):
            if time.monotonic() > deadline:
                return [], "http.server did not start"
            time.sleep(0.05)
        kb = KernelBackend(reactor, "lo", netns=name)
        blockingCallFromThread(reactor, kb.start)
        proof = kb.proofs.get("lo")
        if proof is None or not proof.htb:
            return [], f"no htb: {proof}"
        results = []
        for rate in rates:
            blockingCallFromThread(reactor, kb.reconcile, {port: KernelPort(rate_bps=int(rate * 1e6))})
            # At low caps a few seconds are only a handful of 16 KiB packets: run at least ~40.
            secs = max(seconds, 40 * 16384 * 8 / (rate * 1e6))
            first, sustained = fetch(port, "/" + os.path.basename(path), int(rate * 1e6 / 8 * secs), ns, secs)
            results.append((rate, first, sustained))
        return results, ""
    finally:
        if kb is not None:
            blockingCallFromThread(reactor, kb.stop)
        if server is not None:
            server.terminate()
            server.wait(10)
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--rates", default="1,5,20,50,100")
    ap.add_argument("--no-kernel", action="store_true")
    args = ap.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    tmp = tempfile.mkdtemp(prefix="slbench")
    path = os.path.join(tmp, "big.bin")
    need = int(max(rates) * 1e6 / 8 * args.seconds) + (1 << 20)
    with open(path, "wb") as fh:
        block = os.urandom(1 << 20)
        for _ in range(need // len(block) + 1):
            fh.write(block)
    from twisted.internet import reactor, threads

    def work() -> None:
        print(f"shaping bench: ~{args.seconds:g} s bulk download per cap; "
              "sustained = after the first 128 KiB")
        print()
        print("userspace backend (127.0.0.1)")
        print(f"{'cap Mbps':>9} {'from 1st byte':>14} {'sustained':>10} {'ratio':>7} "
              f"{'CPU %core/100 Mbps':>19}")
        for rate, first, sustained, cpu100 in userspace(reactor, rates, args.seconds, path):
            print(f"{rate:9.1f} {first:14.2f} {sustained:10.2f} {sustained / rate * 100:6.1f}% "
                  f"{cpu100:18.1f}%")
        print()
        if args.no_kernel:
            return
        print("kernel backend (htb class on lo inside a fresh network namespace)")
        kres, why = kernel(reactor, rates, args.seconds, path)
        if why and not kres:
            print(f"  skipped: {why}")
            return
        print(f"{'cap Mbps':>9} {'from 1st byte':>14} {'sustained':>10} {'ratio':>7}")
        for rate, first, sustained in kres:
            print(f"{rate:9.1f} {first:14.2f} {sustained:10.2f} {sustained / rate * 100:6.1f}%")

    d = threads.deferToThread(work)
    d.addErrback(lambda f: print("bench failed:", f.getTraceback()))
    d.addBoth(lambda _: reactor.stop())
    try:
        reactor.run()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
