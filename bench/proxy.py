"""Session-port overhead: MB/s of a multi-MB segment on the main port vs a session port
(same daemon, same run), and small-playlist requests/s through a session port.

    .venv/bin/python bench/proxy.py [--mb 8] [--rounds 15] [--seconds 3]
    .venv/bin/python bench/proxy.py --cpu-only     # just the in-process CPU per small request

Prints figures; never fails on speed.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from streamlab.testing.daemon import Daemon  # noqa: E402
from streamlab.testing.fixtures import install_test_item  # noqa: E402

LIVE_EPOCH = 1577836800.0  # default live_epoch (2020-01-01T00:00:00Z)


def complete_segment() -> str:
    """A 360p segment file that is complete now (the origin paces the one in production)."""
    n = int((time.time() - LIVE_EPOCH) // 6.0)
    return f"/go-live/testclip/video/360p/seg_{(n + 3) % 4 + 1:05d}.m4s"
PLAYLIST = "/go-live/testclip/playlist_6s_360p.m3u8"


def _enlarge_segments(item_dir: str, megabytes: int) -> int:
    """Replace every 360p segment file by *megabytes* of bytes (index sizes updated)."""
    size = megabytes * 1024 * 1024
    block = os.urandom(1024 * 1024) * megabytes
    index_path = os.path.join(item_dir, "content.json")
    with open(index_path, encoding="utf-8") as fh:
        doc = json.load(fh)
    for track in doc["tracks"]:
        if track["id"] == "360p":
            for n, seg in enumerate(track["segments"], start=1):
                with open(os.path.join(item_dir, "video", "360p", f"seg_{n:05d}.m4s"), "wb") as fh:
                    fh.write(block)
                seg["size"] = size
    with open(index_path, "w", encoding="utf-8") as fh:
        json.dump(doc, fh)
    return size


class Client:
    """A keep-alive HTTP/1.1 client reading Content-Length bodies into one buffer."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray(16 * 1024 * 1024)
        self.view = memoryview(self.buf)
        self.port = port

    def get(self, path: str) -> int:
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            head += chunk
        header, _, rest = head.partition(b"\r\n\r\n")
        length = 0
        for line in header.split(b"\r\n")[1:]:
            k, _, v = line.partition(b":")
            if k.strip().lower() == b"content-length":
                length = int(v)
        got = len(rest)
        while got < length:
            n = self.sock.recv_into(self.view[: min(len(self.buf), length - got)])
            if not n:
                raise ConnectionError("closed mid-body")
            got += n
        return length

    def close(self) -> None:
        self.sock.close()


def mb_per_s(port: int, rounds: int) -> float:
    c = Client(port)
    c.get(complete_segment())  # warm-up (page cache, connection)
    t0 = time.perf_counter()
    total = sum(c.get(complete_segment()) for _ in range(rounds))
    dt = time.perf_counter() - t0
    c.close()
    return total / dt / 1e6


def req_per_s(port: int, seconds: float) -> float:
    c = Client(port)
    c.get(PLAYLIST)
    n = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        c.get(PLAYLIST)
        n += 1
    dt = time.perf_counter() - t0
    c.close()
    return n / dt


def cpu_per_request(n: int = 3000) -> tuple[float, float, float]:
    """In-process CPU microseconds per small request: a plain Site, the main port's Site
    (``build_site``: the guarded channel with its head deadline) and a session Site (fault
    layer + network log, no sockets, no shaping) serving the same resource."""
    from twisted.internet.testing import MemoryReactorClock, StringTransport
    from twisted.web.resource import Resource
    from twisted.web.server import Site

    from streamlab import config as configmod
    from streamlab.events import EventBus
    from streamlab.proxy.registry import SessionRegistry
    from streamlab.web.site import build_site

    class Playlist(Resource):
        isLeaf = True

        def render_GET(self, request):  # noqa: N802
            request.setHeader(b"content-type", b"application/vnd.apple.mpegurl")
            return b"#EXTM3U\n" * 100

    class Root(Resource):
        def getChild(self, path, request):  # noqa: N802
            return Playlist()

    def run(factory) -> float:
        proto = factory.buildProtocol(None)
        transport = StringTransport()
        proto.makeConnection(transport)
        req = b"GET /go-live/c/playlist_6s_360p.m3u8 HTTP/1.1\r\nHost: x\r\nUser-Agent: bench\r\n\r\n"
        t0 = time.process_time()
        for _ in range(n):
            proto.dataReceived(req)
            transport.clear()
        return (time.process_time() - t0) / n * 1e6

    reactor = MemoryReactorClock()
    cfg = configmod.load(None, {"session-ports": "40000-40001"})
    registry = SessionRegistry(cfg, reactor, EventBus(), origin=Playlist())
    registry.get_or_create("bench")
    session_site = reactor.tcpServers[-1][1]
    plain = Site(Root())
    main_site = build_site(Root(), reactor, head_timeout=cfg.server.request_head_timeout)
    plain_us = min(run(plain) for _ in range(3))
    main_us = min(run(main_site) for _ in range(3))
    session_us = min(run(session_site) for _ in range(3))
    return plain_us, main_us, session_us


def _cpu_line(plain_us: float, main_us: float, session_us: float) -> str:
    return (f"CPU per small request     : plain Site {plain_us:.1f} us, main-port Site {main_us:.1f} us, "
            f"session Site {session_us:.1f} us (x{session_us / plain_us:.2f} plain, "
            f"x{session_us / main_us:.2f} main)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--mb", type=int, default=8, help="segment size in MiB")
    ap.add_argument("--rounds", type=int, default=15, help="segment downloads per port")
    ap.add_argument("--seconds", type=float, default=4.0, help="playlist loop length (total)")
    ap.add_argument("--repeat", type=int, default=4, help="interleaved runs per port (best counts)")
    ap.add_argument("--cpu-only", action="store_true",
                    help="only the in-process CPU per small request (no daemon, a few seconds)")
    args = ap.parse_args()
    if args.cpu_only:
        print(_cpu_line(*cpu_per_request()))
        return
    with tempfile.TemporaryDirectory() as work:
        d = Daemon(work, session_ports=4)
        item = install_test_item(d.media_dir)
        size = _enlarge_segments(item, args.mb)
        d.start()
        try:
            deadline = time.monotonic() + 30
            while d.get(complete_segment()).status != 200:
                if time.monotonic() > deadline:
                    raise SystemExit("item not served:\n" + d.log())
                time.sleep(0.1)
            s = d.request("POST", "/api/sessions", {"player_id": "bench"}).json()
            sport = int(s["x_forwarded_port"])
            # interleave to share whatever noise the box has; best of --repeat each
            mains, sesss, pl_mains, pl_sesss = [], [], [], []
            for _ in range(args.repeat):
                mains.append(mb_per_s(d.port, args.rounds))
                sesss.append(mb_per_s(sport, args.rounds))
            for _ in range(args.repeat):
                pl_mains.append(req_per_s(d.port, args.seconds / args.repeat))
                pl_sesss.append(req_per_s(sport, args.seconds / args.repeat))
            main_rate, sess_rate = max(mains), max(sesss)
            pl_main, pl_sess = max(pl_mains), max(pl_sesss)
            entries = d.get(f"/api/session/{s['session_id']}/network?limit=1").json()["entries"]
        finally:
            d.stop()
    print(f"segment size              : {size / 1e6:.1f} MB, {args.rounds} downloads per run, "
          f"best of {args.repeat} interleaved runs")
    print(f"main port                 : {main_rate:8.1f} MB/s")
    print(f"session port              : {sess_rate:8.1f} MB/s")
    ratio = sess_rate / main_rate * 100
    print(f"session / main            : {ratio:8.1f} %  (cost {100 - ratio:.1f} %)")
    print(f"playlist req/s main       : {pl_main:8.0f}")
    print(f"playlist req/s session    : {pl_sess:8.0f}")
    print(_cpu_line(*cpu_per_request()))
    if entries:
        print(f"last session log entry    : {entries[-1]['request_kind']} {entries[-1]['status']}"
              f" total {entries[-1]['total_ms']} ms")


if __name__ == "__main__":
    main()
