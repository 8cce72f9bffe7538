"""Bench: 200 concurrent LL-HLS blocking playlist reloads held on one real daemon.

Starts the real daemon with the test item, opens N connections on loopback, asks all of
them for the next-but-one part (``_HLS_msn``/``_HLS_part``) and reports

* wake-up latency: from the part's publish time (computed from the live clock) to the
  complete response, p50 / p95 / max;
* the daemon's CPU time (utime + stime from /proc) while the N requests are held, and
  for the wake-up burst;
* playlist render cost as seen over HTTP (sequential GETs, p50 / p95), and the daemon's
  own ``avg_render_ms_5m`` from ``/go-live/api/tick-stats``.

``.venv/bin/python bench/blocking.py [--clients 200] [--rounds 3]``.  Prints figures,
never fails on speed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from streamlab.live.timeline import LiveTimeline  # noqa: E402
from streamlab.media.index import load_item  # noqa: E402
from streamlab.testing.daemon import Daemon  # noqa: E402
from streamlab.testing.fixtures import install_test_item  # noqa: E402

EPOCH = 1577836800.0  # 2020-01-01T00:00:00Z, the default live_epoch
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of *pid* (and its waited-for children) in seconds."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


async def fetch(port: int, path: str, ready: asyncio.Event | None = None) -> tuple[float, int, bytes]:
    """One GET on its own connection; returns (time the response was complete, status, body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    if ready is not None:
        ready.set()
    data = await reader.read(-1)
    done = time.time()
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head else 0
    return done, status, body


def edge(body: bytes) -> tuple[int, int]:
    import m3u8

    pl = m3u8.loads(body.decode())
    return pl.media_sequence + len(pl.segments) - 1, len(pl.segments[-1].parts) - 1


async def blocking_round(d: Daemon, tl: LiveTimeline, clients: int) -> dict[str, float]:
    track = tl.index.track("360p")
    nparts = len(track.segments[0].parts)
    _, _, body = await fetch(d.port, "/go-live/testclip/playlist_360p.m3u8")
    msn, part = edge(body)
    # aim ~3 s ahead so every request is connected and held well before the publication
    for _ in range(15):
        msn, part = (msn, part + 1) if part + 1 < nparts else (msn + 1, 0)
    publish = tl.part_publish_time(track, msn, part)
    path = f"/go-live/testclip/playlist_360p.m3u8?_HLS_msn={msn}&_HLS_part={part}"
    pid = d.proc.pid
    events = [asyncio.Event() for _ in range(clients)]
    tasks = [asyncio.create_task(fetch(d.port, path, ev)) for ev in events]
    await asyncio.gather(*(ev.wait() for ev in events))
    await asyncio.sleep(0.1)  # let the daemon read every request
    t0, c0 = time.time(), cpu_seconds(pid)
    hold_until = publish - 0.05
    if hold_until > time.time():
        await asyncio.sleep(hold_until - time.time())
    t1, c1 = time.time(), cpu_seconds(pid)
    results = await asyncio.gather(*tasks)
    c2 = cpu_seconds(pid)
    lat = [(done - publish) * 1000 for done, status, _ in results if status == 200]
    bad = sum(1 for _, status, _ in results if status != 200)
    return {"held_s": t1 - t0, "cpu_hold_ms": (c1 - c0) * 1000, "cpu_wake_ms": (c2 - c1) * 1000,
            "p50": pct(lat, 0.5), "p95": pct(lat, 0.95), "max": max(lat), "min": min(lat),
            "errors": bad, "answered": len(lat)}


async def render_costs(d: Daemon, n: int) -> dict[str, tuple[float, float]]:
    out = {}
    for name in ("playlist_360p.m3u8", "playlist_360p.m3u8?_HLS_skip=YES", "playlist_2s_360p.m3u8",
                 "playlist_6s_360p.m3u8", "master.m3u8", "manifest.mpd", "manifest_2s.mpd",
                 "manifest_6s.mpd"):
        times = []
        for _ in range(n):
            t = time.perf_counter()
            _, status, _ = await fetch(d.port, "/go-live/testclip/" + name)
            times.append((time.perf_counter() - t) * 1000)
            assert status == 200, (name, status)
        out[name] = (statistics.median(times), pct(times, 0.95))
    return out


async def main_async(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        d = Daemon(tmp, config={"live": {"window_seconds": 36}})
        install_test_item(d.media_dir)
        d.start()
        try:
            deadline = time.monotonic() + 30
            while d.get("/go-live/testclip/master.m3u8").status != 200:
                if time.monotonic() > deadline:
                    raise SystemExit("content never became available:\n" + d.log())
                await asyncio.sleep(0.05)
            index = load_item(os.path.join(d.media_dir, "dynamic_content", "testclip"))
            tl = LiveTimeline(index, EPOCH)
            print(f"daemon pid {d.proc.pid}, {args.clients} concurrent blocking LL reloads per round")
            for r in range(args.rounds):
                res = await blocking_round(d, tl, args.clients)
                print(f"round {r + 1}: answered {res['answered']}/{args.clients} (errors {res['errors']}); "
                      f"wake latency from publish: min {res['min']:.1f} p50 {res['p50']:.1f} "
                      f"p95 {res['p95']:.1f} max {res['max']:.1f} ms; daemon CPU while holding "
                      f"{res['cpu_hold_ms']:.0f} ms over {res['held_s']:.2f} s; "
                      f"wake burst CPU {res['cpu_wake_ms']:.0f} ms")
            costs = await render_costs(d, args.renders)
            print(f"render cost over HTTP (new connection per GET, {args.renders} GETs each):")
            for name, (p50, p95) in costs.items():
                print(f"  {name:40s} p50 {p50:6.2f} ms  p95 {p95:6.2f} ms")
            ts = d.get("/go-live/api/tick-stats/testclip").json()
            print(f"daemon tick-stats (LL-HLS): last_render_ms {ts['last_render_ms']} "
                  f"avg_render_ms_5m {ts['avg_render_ms_5m']} "
                  f"avg_tick_interval_ms_5m {ts['avg_tick_interval_ms_5m']}")
        finally:
            d.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--renders", type=int, default=100)
    asyncio.run(main_async(ap.parse_args()))


if __name__ == "__main__":
    main()
