"""Raw-socket helpers for the session integration tests (what a player's TCP stack sees)."""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from streamlab.testing.daemon import Daemon, request
from streamlab.testing.fixtures import install_test_item


class RawResponseView:
    """Head, body, status and headers of the raw HTTP/1.1 bytes in ``self.data``."""

    data: bytes

    @property
    def head(self) -> bytes:
        return self.data.split(b"\r\n\r\n", 1)[0] if b"\r\n\r\n" in self.data else b""

    @property
    def body(self) -> bytes:
        return self.data.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in self.data else b""

    @property
    def status(self) -> int:
        line = self.head.split(b"\r\n", 1)[0]
        return int(line.split()[1]) if line.startswith(b"HTTP/") else 0

    def header(self, name: str) -> str | None:
        for line in self.head.split(b"\r\n")[1:]:
            key, _, value = line.partition(b":")
            if key.strip().lower() == name.lower().encode():
                return value.strip().decode()
        return None


@dataclass
class Wire(RawResponseView):
    """What one raw HTTP/1.1 exchange produced on the wire."""

    data: bytes = b""
    outcome: str = ""            # "eof" | "reset" | "timeout" | "complete"
    elapsed: float = 0.0
    phases: list[tuple[str, float, int]] = field(default_factory=list)



def open_get(port: int, path: str, rcvbuf: int | None = None, extra: str = "") -> socket.socket:
    """Connect and send one GET."""
    s = socket.socket()
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.connect(("127.0.0.1", port))
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{extra}\r\n".encode())
    return s


def read_phases(s: socket.socket, windows: list[float], chunk: int = 65536, pause: float = 0.0) -> Wire:
    """Read until EOF/RST, giving up a phase after each window of silence (seconds)."""
    w = Wire()
    t0 = time.monotonic()
    for window in windows:
        s.settimeout(window)
        while True:
            try:
                data = s.recv(chunk)
            except ConnectionResetError:
                w.outcome = "reset"
                break
            except TimeoutError:
                w.outcome = "timeout"
                break
            if not data:
                w.outcome = "eof"
                break
            w.data += data
            if pause:
                time.sleep(pause)  # a deliberately slow reader
        w.phases.append((w.outcome, time.monotonic() - t0, len(w.data)))
        if w.outcome != "timeout":
            break
    w.elapsed = time.monotonic() - t0
    s.close()
    return w


def create_session(d: Daemon, player_id: str, set_: dict | None = None) -> dict:
    """POST /api/sessions; returns the session object."""
    r = d.request("POST", "/api/sessions", {"player_id": player_id, "set": set_ or {}})
    assert r.status in (200, 201), r.text
    return r.json()


def patch(d: Daemon, sid: str, set_: dict, **kw) -> dict:
    """PATCH /api/session/{sid}; returns the response JSON (asserts 200)."""
    r = d.request("PATCH", f"/api/session/{sid}", {"set": set_, **kw})
    assert r.status == 200, r.text
    return r.json()


def network(d: Daemon, sid: str) -> list[dict]:
    """The session's network log entries."""
    return d.get(f"/api/session/{sid}/network").json()["entries"]


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05):
    """Poll *predicate* until truthy (returns its value) or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(interval)


def wait_item(d: Daemon, name: str = "testclip") -> None:
    """Wait until the library serves the item."""
    wait_for(lambda: d.get(f"/go-live/{name}/master.m3u8").status == 200, timeout=30)


def sse_events(sock: socket.socket, until, timeout: float = 5.0) -> list[tuple[float, dict]]:
    """Read SSE frames (chunked) from *sock* until until(events) is true; (arrival, data) pairs."""
    sock.settimeout(timeout)
    buf = b""
    events: list[tuple[float, dict]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        data = sock.recv(65536)
        if not data:
            break
        buf += data
        now = time.monotonic()
        while b"\n\n" in buf:
            frame, buf = buf.split(b"\n\n", 1)
            lines = [ln for ln in frame.split(b"\n") if ln.startswith(b"data: ")]
            if lines:
                events.append((now, json.loads(b"\n".join(ln[6:] for ln in lines))))
        if until(events):
            return events
    return events


LIVE_EPOCH = 1577836800.0  # the default live_epoch, 2020-01-01T00:00:00Z


def stable_seg(rung: str = "360p", files: int = 4, duration: float = 6.0) -> str:
    """A segment file of the test item that is complete now and stays so for >= 12 s.

    The origin paces (chunked, part by part) a whole-file GET of the file that is being
    produced on the live clock; tests that need the plain file pick the one produced
    just before the current one.
    """
    n = int((time.time() - LIVE_EPOCH) // duration)
    number = (n + files - 1) % files + 1
    return f"/go-live/testclip/video/{rung}/seg_{number:05d}.m4s"


def get(port: int, path: str, **kw):
    """Blocking GET on any port."""
    return request(port, "GET", path, **kw)


@contextlib.contextmanager
def serving(daemon: Daemon, source: str | None = None) -> Iterator[Daemon]:
    """*daemon* (not started yet) with the test item installed (from *source*, the
    session's cached copy, when given), started, serving the item, and stopped afterwards:
    the body of every module-scoped daemon fixture."""
    install_test_item(daemon.media_dir, source=source)
    daemon.start()
    try:
        wait_item(daemon)
        yield daemon
    finally:
        daemon.stop()
