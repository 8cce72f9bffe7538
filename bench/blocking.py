"""Bench: 500 concurrent LL-HLS blocking playlist reloads held on one real daemon.

Starts the real daemon with the test item, opens N connections on loopback, asks all of
them for the next-but-one part (``_HLS_msn``/``_HLS_part``) and reports

* wake-up latency: from the part's publish time (computed from the live clock) to the
  complete response, p50 / p95 / p99 / max;
* the daemon's CPU time (utime + stime from /proc) while the N requests are held, and
  for the wake-up burst;
* playlist render cost as seen over HTTP (sequential GETs, p50 / p95), and the daemon's
  own ``avg_render_ms_5m`` from ``/go-live/api/tick-stats``.

``.venv/bin/python bench/blocking.py [--clients 500] [--rounds 3] [--close]``;
``--in-process`` measures only the server-side wake-up (no daemon, no sockets).  Prints figures,
never fails on speed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import selectors
import socket
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


def _complete(buf: bytearray) -> bool:
    """Whether *buf* holds a whole response (headers + Content-Length bytes)."""
    head, sep, body = bytes(buf).partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return False


def blocking_round(d: Daemon, tl: LiveTimeline, clients: int, close: bool = False) -> dict[str, float]:
    """Hold *clients* blocking reloads for a part ~4 s ahead, then time each response's
    completion from the part's publish instant.

    Connections are persistent, as a player's are (the response is complete at its
    Content-Length); with *close* every request says ``Connection: close`` and the daemon
    also tears the 500 connections down in the same burst.

    The client is a bare ``selectors`` loop over non-blocking sockets (about 5 µs of its
    own work per response), so what it measures is the daemon's wake-up and not the
    client's: an asyncio client spent ~30 µs per read, which alone put ~15 ms on the p99
    of 500 responses arriving together."""
    track = tl.index.track("360p")
    nparts = len(track.segments[0].parts)
    body = _get(d.port, "/go-live/testclip/playlist_360p.m3u8")
    msn, part = edge(body)
    # aim ahead so every request is connected and held well before the publication
    for _ in range(20):  # ~4 s
        msn, part = (msn, part + 1) if part + 1 < nparts else (msn + 1, 0)
    publish = tl.part_publish_time(track, msn, part)
    connection = "close" if close else "keep-alive"
    request = (f"GET /go-live/testclip/playlist_360p.m3u8?_HLS_msn={msn}&_HLS_part={part} HTTP/1.1\r\n"
               f"Host: bench\r\nConnection: {connection}\r\n\r\n").encode()
    sel = selectors.DefaultSelector()
    bufs: dict[socket.socket, bytearray] = {}
    for i in range(clients):
        # blocking connects in batches: the daemon's listen backlog is Twisted's default
        # (50), and a SYN beyond a full accept queue is retried a second later
        if i % 25 == 24:
            time.sleep(0.02)
        s = socket.create_connection(("127.0.0.1", d.port))
        s.setblocking(False)
        sel.register(s, selectors.EVENT_WRITE)
        bufs[s] = bytearray()
    unsent = clients
    while unsent and time.time() < publish - 0.2:
        for key, _ in sel.select(timeout=0.5):
            s = key.fileobj
            s.sendall(request)
            sel.modify(s, selectors.EVENT_READ)
            unsent -= 1
    if unsent:
        raise SystemExit(f"{unsent} of {clients} requests not sent before the publication: "
                         "the machine is too busy for this round")
    assert d.proc is not None
    pid = d.proc.pid
    time.sleep(0.1)  # let the daemon read every request
    t0, c0 = time.time(), cpu_seconds(pid)
    hold_until = publish - 0.05
    if hold_until > time.time():
        time.sleep(hold_until - time.time())
    t1, c1 = time.time(), cpu_seconds(pid)
    done: dict[socket.socket, float] = {}
    deadline = time.time() + 30
    while len(done) < clients and time.time() < deadline:
        for key, _ in sel.select(timeout=1.0):
            s = key.fileobj
            try:
                data = s.recv(65536)
            except ConnectionError:
                data = b""
            if data:
                bufs[s] += data
                if close or not _complete(bufs[s]):
                    continue
            done[s] = time.time()  # complete (keep-alive) or EOF (Connection: close)
            sel.unregister(s)  # closed after the burst: a player keeps its connection
    c2 = cpu_seconds(pid)
    lat, bad = [], 0
    for s, at in done.items():
        raw = bytes(bufs[s])
        if raw.startswith(b"HTTP/1.1 200"):
            lat.append((at - publish) * 1000)
        else:
            bad += 1
    for s in list(bufs):
        if s not in done:
            bad += 1
        s.close()
    sel.close()
    return {"held_s": t1 - t0, "cpu_hold_ms": (c1 - c0) * 1000, "cpu_wake_ms": (c2 - c1) * 1000,
            "p50": pct(lat, 0.5), "p95": pct(lat, 0.95), "p99": pct(lat, 0.99), "max": max(lat),
            "min": min(lat), "errors": bad, "answered": len(lat)}


def _get(port: int, path: str) -> bytes:
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n".encode())
        chunks = []
        while data := s.recv(65536):
            chunks.append(data)
    return b"".join(chunks).partition(b"\r\n\r\n")[2]


def in_process_wake(clients: int, repeats: int = 5) -> tuple[float, float]:
    """Server-side cost of waking *clients* held reloads, without sockets or a client:
    the origin on real ``twisted.web`` Requests over StringTransport, driven by a Clock.
    Returns (best, median) milliseconds for the whole wake-up of the batch."""
    from twisted.internet.task import Clock
    from twisted.internet.testing import StringTransport
    from twisted.web.resource import Resource
    from twisted.web.server import Site

    from streamlab.live.origin import OriginResource

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import render  # the synthetic 5-rung item of bench/render.py

    index = render.build()

    class Library:
        def get(self, name: str) -> object:
            return index if name == "bench" else None

        def item_dir(self, name: str) -> str:
            return "/nonexistent"

    times = []
    for _ in range(repeats):
        clock = Clock()
        clock.advance(EPOCH + 1000 * index.duration + 3.05)
        origin = OriginResource(Library(), clock, epoch=EPOCH, window=36, idle_timeout=60)
        root = Resource()
        root.putChild(b"go-live", origin)
        site = Site(root, reactor=clock)
        site.timeOut = None
        tl = LiveTimeline(index, EPOCH)
        track = index.track("720p")
        n, p = tl.live_edge(track, clock.seconds())
        path = f"/go-live/bench/playlist_720p.m3u8?_HLS_msn={n}&_HLS_part={p + 3}"
        transports = []
        for _ in range(clients):
            channel = site.buildProtocol(None)
            transport = StringTransport()
            channel.makeConnection(transport)
            channel.dataReceived(f"GET {path} HTTP/1.1\r\nHost: b\r\n\r\n".encode())
            transports.append(transport)
        clock.advance(tl.part_publish_time(track, n, p + 3) - clock.seconds() - 1e-6)
        t0 = time.perf_counter()
        clock.advance(2e-6)
        times.append((time.perf_counter() - t0) * 1000)
        assert all(t.value().startswith(b"HTTP/1.1 200") for t in transports)
    return min(times), statistics.median(times)


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
        # one client address holds every connection: lift the per-address cap (256 by default)
        d = Daemon(tmp, config={"live": {"window_seconds": 36},
                                "server": {"max_connections_per_client_ip": 0}},
                   twistd_args=os.environ.get("BENCH_TWISTD_ARGS", "").split())
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
            print(f"daemon pid {d.proc.pid}, {args.clients} concurrent blocking LL reloads per round "
                  f"({'Connection: close' if args.close else 'persistent connections'})")
            for r in range(args.rounds):
                res = blocking_round(d, tl, args.clients, args.close)
                print(f"round {r + 1}: answered {res['answered']}/{args.clients} (errors {res['errors']}); "
                      f"wake latency from publish: min {res['min']:.1f} p50 {res['p50']:.1f} "
                      f"p95 {res['p95']:.1f} p99 {res['p99']:.1f} max {res['max']:.1f} ms; "
                      f"daemon CPU while holding "
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
    ap.add_argument("--in-process", action="store_true",
                    help="only the server-side wake-up cost, in process (no daemon, no sockets)")
    ap.add_argument("--clients", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--close", action="store_true",
                    help="Connection: close on every held request (the daemon also tears them down)")
    ap.add_argument("--renders", type=int, default=100)
    args = ap.parse_args()
    if args.in_process:
        best, median = in_process_wake(args.clients)
        print(f"in process: waking {args.clients} held reloads takes {best:.2f} ms best, "
              f"{median:.2f} ms median ({best / args.clients * 1000:.1f} us per request at best)")
        return
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
