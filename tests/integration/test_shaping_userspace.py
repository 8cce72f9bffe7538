"""Userspace shaping on 127.0.0.1: a plain twisted.web Site wrapped by the shaping factory.

What a player would observe: bulk goodput within 90-102 % of the cap, a 0-Mbps step
stalls and the next step resumes, delay adds to time-to-first-byte, DROP leaves a
request unanswered until cleared, REJECT resets within 1 s.
"""

from __future__ import annotations

import os
import socket
import time

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, threads
from twisted.web.resource import Resource
from twisted.web.server import Site
from twisted.web.static import File

from streamlab.shaping.userspace import UserspaceBackend
from streamlab.testing.daemon import free_port


@pytest.fixture(scope="module")
def bigdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("shapefiles")
    (d / "big.bin").write_bytes(os.urandom(1 << 20) * 12)  # 12 MiB
    (d / "small.txt").write_bytes(b"hello\n")
    return d


@pytest.fixture
def served(bigdir):
    """(backend, shaper, port) with a Site listening on 127.0.0.1 through the wrapper."""
    backend = UserspaceBackend(reactor)
    root = Resource()
    root.putChild(b"f", File(str(bigdir)))
    site = Site(root)
    port = free_port()
    listening = reactor.listenTCP(port, backend.wrap(port, site), interface="127.0.0.1")
    yield backend, backend.shaper(port), port
    backend.remove(port)
    listening.stopListening()


def _get(port, path, nbytes=None, timeout=15.0, headers=""):
    """Blocking raw HTTP GET: returns (status line, body bytes, t_connect, t_first_body, t_end)."""
    t0 = time.monotonic()
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        req = f"GET {path} HTTP/1.1\r\nHost: x\r\n{headers}Connection: close\r\n\r\n"
        s.sendall(req.encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                raise ConnectionError("closed before headers")
            buf += chunk
        t_first = time.monotonic()
        head, body = buf.split(b"\r\n\r\n", 1)
        got = len(body)
        t_mark, n_mark = t_first, got
        while nbytes is None or got < nbytes:
            chunk = s.recv(262144)
            if not chunk:
                break
            got += len(chunk)
        return head.split(b"\r\n")[0].decode(), got, t0, t_mark, n_mark, time.monotonic()
    finally:
        s.close()


def _goodput(port, cap_mbps, seconds=3.0):
    nbytes = int(cap_mbps * 1e6 / 8 * seconds)
    status, got, t0, t_first, n_first, t_end = _get(port, "/f/big.bin", nbytes)
    assert status.endswith("200 OK")
    return (got - n_first) * 8 / (t_end - t_first) / 1e6


@pytest.mark.parametrize("cap", [2.0, 8.0, 20.0])
@pytest_twisted.inlineCallbacks
def test_bulk_goodput_tracks_cap(served, cap):
    backend, shaper, port = served
    shaper.configure(cap)
    mbps = yield threads.deferToThread(_goodput, port, cap)
    print(f"userspace cap {cap} Mbps -> {mbps:.2f} Mbps ({mbps / cap * 100:.1f} %)")
    assert 0.90 * cap <= mbps <= 1.02 * cap
    assert shaper.bytes_out > 0


@pytest_twisted.inlineCallbacks
def test_uncapped_is_fast(served):
    backend, shaper, port = served
    mbps = yield threads.deferToThread(_goodput, port, 200.0, 0.5)
    assert mbps > 100


@pytest_twisted.inlineCallbacks
def test_zero_rate_stalls_then_next_step_resumes(served):
    backend, shaper, port = served
    shaper.configure(4.0)
    seen = {"bytes": 0}

    def client():
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(b"GET /f/big.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        s.settimeout(10)
        t_end = time.monotonic() + 3.0
        marks = []
        while time.monotonic() < t_end:
            s.settimeout(max(0.01, t_end - time.monotonic()))
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            seen["bytes"] += len(chunk)
            marks.append((time.monotonic(), seen["bytes"]))
        s.close()
        return marks

    d = threads.deferToThread(client)
    yield _wait(lambda: seen["bytes"] > 100_000)
    shaper.configure(0.0)  # stalled step
    yield _sleep(0.3)
    stalled_at = seen["bytes"]
    yield _sleep(0.7)
    assert seen["bytes"] - stalled_at < 70_000, "data flowed during a 0-Mbps step"
    shaper.configure(8.0)  # next step
    yield _wait(lambda: seen["bytes"] > stalled_at + 300_000, timeout=2.0)
    yield d


@pytest_twisted.inlineCallbacks
def test_delay_adds_to_time_to_first_byte(served):
    backend, shaper, port = served
    ttfb0 = 10.0
    for _ in range(3):  # the quickest of three: a loaded machine adds its own delays
        base = yield threads.deferToThread(_get, port, "/f/small.txt")
        ttfb0 = min(ttfb0, base[3] - base[2])
    shaper.configure(None, delay_ms=300)
    delayed = yield threads.deferToThread(_get, port, "/f/small.txt")
    ttfb1 = delayed[3] - delayed[2]
    assert ttfb1 >= 0.3 - 0.005  # the delay is a floor, whatever the load
    assert ttfb1 - ttfb0 >= 0.25
    assert ttfb1 < 2.0


@pytest_twisted.inlineCallbacks
def test_drop_holds_request_until_cleared(served):
    backend, shaper, port = served
    shaper.set_fault("drop")
    d = threads.deferToThread(_get, port, "/f/small.txt", None, 10.0)
    done = []
    d.addBoth(lambda r: done.append(r) or r)
    yield _sleep(0.8)
    assert not done, "request answered while DROP was in force"
    assert shaper.refused_drop >= 1
    shaper.set_fault("none")
    result = yield d
    assert result[0].endswith("200 OK")


@pytest_twisted.inlineCallbacks
def test_reject_resets_new_and_existing_connections(served):
    backend, shaper, port = served
    shaper.configure(1.0)

    def long_get():
        try:
            _get(port, "/f/big.bin", None, 10.0)
        except (ConnectionResetError, ConnectionError) as exc:
            return ("reset", time.monotonic(), exc)
        return ("ok", time.monotonic(), None)

    d = threads.deferToThread(long_get)
    yield _wait(lambda: len(shaper.conns) == 1)
    t = time.monotonic()
    shaper.set_fault("reject")
    kind, when, _ = yield d
    assert kind == "reset" and when - t < 1.0

    def new_get():
        try:
            _get(port, "/f/small.txt", None, 5.0)
        except (ConnectionResetError, ConnectionError, BrokenPipeError):
            return "reset"
        return "ok"

    t = time.monotonic()
    assert (yield threads.deferToThread(new_get)) == "reset"
    assert time.monotonic() - t < 1.0
    assert shaper.refused_reject >= 2
    shaper.set_fault("none")
    ok = yield threads.deferToThread(_get, port, "/f/small.txt")
    assert ok[0].endswith("200 OK")


def _sleep(seconds):
    d = defer.Deferred()
    reactor.callLater(seconds, d.callback, None)
    return d


@defer.inlineCallbacks
def _wait(pred, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        yield _sleep(0.02)
