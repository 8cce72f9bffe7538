"""SIGTERM on a busy daemon: exit status 0, no ffmpeg child left behind during an encode,
and (in a network namespace, with the kernel shaping backend where usable) no htb class
and no ``inet streamlab`` nftables rule left during a shaped download; a held request on
the main listener or on a session port is answered before the exit, an open event stream
does not delay it."""

from __future__ import annotations

import signal
import socket
import subprocess
import threading
import time

import m3u8
import pytest

from streamlab.testing.daemon import Daemon
from streamlab.testing.fixtures import install_test_item
from streamlab.testing.netns import linked_namespaces, run
from tests.integration.sessions_helpers import create_session, network, open_get, stable_seg
from tests.integration.test_shaping_daemon_kernel import NsDaemon, _classes, _root_kinds, _rules


def _wait(pred, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _ffmpeg_children(pid: int) -> list[int]:
    """ffmpeg processes anywhere below *pid*."""
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid=,comm="], capture_output=True, text=True).stdout
    rows = [line.split(None, 2) for line in out.splitlines() if line.strip()]
    children: dict[int, list[tuple[int, str]]] = {}
    for p, pp, comm in rows:
        children.setdefault(int(pp), []).append((int(p), comm))
    found, todo = [], [pid]
    while todo:
        for child, comm in children.get(todo.pop(), []):
            todo.append(child)
            if comm.startswith("ffmpeg"):
                found.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except OSError:
        return False


def test_sigterm_during_an_encode_leaves_no_ffmpeg(tmp_path):
    d = Daemon(str(tmp_path), {"jobs": {"seed_on_first_start": "yes", "seed_duration": "40",
                                        "seed_codecs": "h264", "kill_grace_seconds": "3"},
                               "server": {"shutdown_grace_seconds": "2"}})
    d.start()
    try:
        _wait(lambda: any(j["status"] == "encoding" for j in d.get("/api/jobs").json()), 120, "an encode")
        pids = _wait(lambda: _ffmpeg_children(d.proc.pid), 30, "an ffmpeg child")
    except BaseException:
        d.stop()
        raise
    t0 = time.monotonic()
    rc = d.stop()
    assert rc == 0, d.log()[-3000:]
    assert time.monotonic() - t0 < 15
    assert [p for p in pids if _alive(p)] == []


def _in_flight(d: Daemon) -> int:
    """The daemon's own count of requests being answered (its /metrics gauge), less the
    /metrics request itself."""
    for line in d.get("/metrics").text.splitlines():
        if line.startswith("streamlab_requests_in_flight "):
            return int(float(line.split()[1])) - 1
    raise AssertionError("no streamlab_requests_in_flight in /metrics")


@pytest.mark.parametrize("listener", ["main", "session port"])
def test_sigterm_lets_a_held_playlist_request_finish(tmp_path, test_item, listener):
    """A blocking LL-HLS reload in flight gets its answer before the daemon exits (within
    shutdown_grace_seconds), on the main listener and through a player's session port."""
    d = Daemon(str(tmp_path), {"server": {"shutdown_grace_seconds": "15"}})
    install_test_item(d.media_dir)
    d.start()
    try:
        _wait(lambda: d.get("/go-live/testclip/master.m3u8").status == 200, 30, "the test item")
        port = d.port
        if listener == "session port":
            r = d.request("POST", "/api/sessions", {"player_id": "drain-me"})
            assert r.status in (200, 201), r.text
            port = int(r.json().get("session", r.json())["x_forwarded_port"])
        pl = m3u8.loads(d.get("/go-live/testclip/playlist_360p.m3u8").text)
        last_msn = pl.media_sequence + len(pl.segments) - 1
        path = f"/go-live/testclip/playlist_360p.m3u8?_HLS_msn={last_msn + 1}&_HLS_part=0"
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        _wait(lambda: _in_flight(d) >= 1, 10, "the request to be held")
    except BaseException:
        d.stop()
        raise
    d.proc.send_signal(signal.SIGTERM)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    sock.close()
    assert d.proc.wait(30) == 0, d.log()[-3000:]
    assert data.startswith(b"HTTP/1.1 200"), d.log()[-3000:]
    assert f"LAST-MSN={last_msn + 1}".encode() in data or b"seg_" in data


def test_a_deliberately_hung_request_does_not_delay_the_stop(tmp_path, test_item):
    """A socket-hang fault never answers: it is not counted in flight, so SIGTERM does not
    wait the grace time for it; its connection is cut."""
    d = Daemon(str(tmp_path), {"server": {"shutdown_grace_seconds": "20"},
                               "sessions": {"socket_hang_seconds": "60"}})
    install_test_item(d.media_dir)
    d.start()
    try:
        _wait(lambda: d.get("/go-live/testclip/master.m3u8").status == 200, 30, "the test item")
        s = create_session(d, "hang-me", {"segment_failure_type": "request_first_byte_hang"})
        sock = open_get(int(s["x_forwarded_port"]), stable_seg())
        _wait(lambda: any(e["faulted"] for e in network(d, s["session_id"])), 10, "the hang")
        assert _in_flight(d) == 0
    except BaseException:
        d.stop()
        raise
    t0 = time.monotonic()
    assert d.stop() == 0
    assert time.monotonic() - t0 < 10  # not the 20 s grace, nor the 60 s hang
    sock.settimeout(5)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass
    sock.close()


def test_open_event_stream_does_not_delay_the_stop(tmp_path):
    d = Daemon(str(tmp_path), {"server": {"shutdown_grace_seconds": "20"}})
    d.start()
    sock = socket.create_connection(("127.0.0.1", d.port), timeout=10)
    sock.sendall(b"GET /api/sessions/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n")
    assert sock.recv(65536).startswith(b"HTTP/1.1 200")
    t0 = time.monotonic()
    assert d.stop() == 0
    assert time.monotonic() - t0 < 10  # not the 20 s grace
    sock.close()


def test_sigterm_during_a_shaped_download_cleans_the_kernel(tmp_path):
    """A player behind a veth (so ``backend = auto`` shapes it with htb on that veth) is
    mid-download when the daemon gets SIGTERM: the daemon exits 0 in time, the player's
    connection ends, and no class, qdisc, nft rule or table of ours is left."""
    with linked_namespaces("slsd", ("ip", "nft", "curl", "tc")) as link:
        d = NsDaemon(link, str(tmp_path))
        try:
            d.wait(lambda: d.http("GET", "/api/health")[0] == 200)
            d.wait(lambda: d.http("GET", "/go-live/testclip/master.m3u8")[0] == 200, 30)
            caps = d.wait(lambda: (lambda c: c if c["status"] != "starting" else None)(
                d.http("GET", "/api/nftables/capabilities")[1]))
            kernel = caps.get("interfaces", {}).get(link.if_a, {}).get("rate") == "kernel"
            print(f"shaping on {link.if_a}: {'kernel' if kernel else 'userspace'} ({caps.get('reason')})")
            _sid, port = d.session("shutdown-shaped")
            assert d.http("POST", f"/api/nftables/bandwidth/{port}", {"rate_mbps": 0.5})[0] == 200
            n = int((time.time() - 1577836800) // 6.0)
            seg = f"/go-live/testclip/video/360p/seg_{(n + 3) % 4 + 1:05d}.m4s"
            result: dict = {}

            def download() -> None:
                out = run("ip", "netns", "exec", link.ns_b, "curl", "-s", "-o", "/dev/null", "--max-time",
                          "60", "-w", "%{size_download}", f"http://{link.addr_a}:{port}{seg}",
                          check=False, timeout=90)
                result["bytes"] = out.stdout

            t = threading.Thread(target=download)
            t.start()
            if kernel:  # the class is made when the player's first connection arrives
                d.wait(lambda: port in _classes(link.ns_a, link.if_a))
            d.wait(lambda: d.in_flight() >= 1)  # the download is under way
            assert t.is_alive()  # 0.5 Mbps: several seconds for a segment
        except BaseException:
            d.stop()
            raise
        t0 = time.monotonic()
        rc = d.stop()
        t.join(30)
        assert rc == 0, d.tail()
        print(f"stopped and the player saw it in {time.monotonic() - t0:.2f} s: {result}")
        assert time.monotonic() - t0 < 20
        assert not t.is_alive()
        assert port not in _classes(link.ns_a, link.if_a)
        assert (link.if_a, "htb", "5eb:") not in _root_kinds(link.ns_a)
        assert _rules(d) == []
        assert "streamlab" not in run("ip", "netns", "exec", link.ns_a, "nft", "list", "tables").stdout
        assert "bytes" in result  # the client saw its connection end (cut or finished)
