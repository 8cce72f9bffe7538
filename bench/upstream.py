"""Upstream origins: session-port throughput of a segment fetched from an upstream vs the
same bytes served locally by the same daemon.

Two daemons on 127.0.0.1: the *upstream* (the project's own origin with the test item's
360p segments enlarged to ``--mb`` MiB) and the *front* (the same item installed locally,
plus that upstream registered as ``up``).  On one session port of the front, the same
segment file is downloaded as ``/go-live/testclip/...`` (local disk) and as
``/go-live/up/go-live/testclip/...`` (relayed from the upstream with back-pressure),
interleaved, best of ``--repeat`` runs each.

    .venv/bin/python bench/upstream.py [--mb 8] [--rounds 10] [--repeat 3]

Prints figures; never fails on speed.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import proxy as proxy_bench  # noqa: E402 - bench/proxy.py: Client, segment enlarging

from streamlab.testing.daemon import Daemon  # noqa: E402
from streamlab.testing.fixtures import install_test_item  # noqa: E402


def rate(port: int, path_of, rounds: int) -> float:
    """MB/s of *rounds* keep-alive downloads of ``path_of()`` on *port*."""
    c = proxy_bench.Client(port)
    c.get(path_of())  # warm-up: page cache, the upstream pool's connection
    t0 = time.perf_counter()
    total = sum(c.get(path_of()) for _ in range(rounds))
    dt = time.perf_counter() - t0
    c.close()
    return total / dt / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--mb", type=int, default=8, help="segment size in MiB")
    ap.add_argument("--rounds", type=int, default=10, help="downloads per run")
    ap.add_argument("--repeat", type=int, default=3, help="interleaved runs per path (best counts)")
    args = ap.parse_args()
    local = proxy_bench.complete_segment
    upstream = lambda: "/go-live/up" + local()  # noqa: E731 - same file, through the upstream
    with tempfile.TemporaryDirectory() as work:
        for sub in ("upstream", "front"):
            os.makedirs(os.path.join(work, sub))
        up = Daemon(os.path.join(work, "upstream"), session_ports=2)
        size = proxy_bench._enlarge_segments(install_test_item(up.media_dir), args.mb)
        front = Daemon(os.path.join(work, "front"), session_ports=4)
        proxy_bench._enlarge_segments(install_test_item(front.media_dir), args.mb)
        up.start()
        front.start()
        try:
            for d in (up, front):
                deadline = time.monotonic() + 30
                while d.get(local()).status != 200:
                    if time.monotonic() > deadline:
                        raise SystemExit("item not served:\n" + d.log())
                    time.sleep(0.1)
            url = f"http://127.0.0.1:{up.port}/go-live/testclip/master.m3u8"
            r = front.request("POST", "/api/upstreams", {"name": "up", "url": url})
            if r.status != 201:
                raise SystemExit(f"registration failed: {r.status} {r.text}")
            s = front.request("POST", "/api/sessions", {"player_id": "bench-upstream"}).json()
            sport = int(s["x_forwarded_port"])
            locals_, ups, mains = [], [], []
            for _ in range(args.repeat):
                locals_.append(rate(sport, local, args.rounds))
                ups.append(rate(sport, upstream, args.rounds))
                mains.append(rate(front.port, upstream, args.rounds))
            entries = front.get(f"/api/session/{s['session_id']}/network?limit=1").json()["entries"]
        finally:
            front.stop()
            up.stop()
    loc, rel, main_rel = max(locals_), max(ups), max(mains)
    print(f"segment size                   : {size / 1e6:.1f} MB, {args.rounds} downloads per run, "
          f"best of {args.repeat} interleaved runs")
    print(f"session port, local item       : {loc:8.1f} MB/s")
    print(f"session port, upstream relay   : {rel:8.1f} MB/s  ({rel / loc * 100:.1f} % of local)")
    print(f"main port, upstream relay      : {main_rel:8.1f} MB/s")
    if entries:
        e = entries[-1]
        print(f"last session log entry         : {e['request_kind']} {e['status']} "
              f"upstream_ttfb {e['upstream_ttfb_ms']} ms, client ttfb {e['ttfb_ms']} ms")


if __name__ == "__main__":
    main()
