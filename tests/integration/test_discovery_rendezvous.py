"""Real daemon announcing to a small local rendezvous server started by the test."""

from __future__ import annotations

import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from streamlab.testing.daemon import Daemon


class _Rendezvous:
    def __init__(self) -> None:
        self.announces: list[dict] = []
        self.status = 200
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with outer.lock:
                    outer.announces.append({"path": self.path, "body": json.loads(body),
                                            "type": self.headers.get("Content-Type")})
                    status = outer.status
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def count(self) -> int:
        with self.lock:
            return len(self.announces)

    def wait_for(self, n: int, timeout: float = 15.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.count() >= n:
                with self.lock:
                    return list(self.announces)
            time.sleep(0.02)
        raise AssertionError(f"expected {n} announces, got {self.count()}")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def rendezvous():
    rv = _Rendezvous()
    yield rv
    rv.close()


@pytest.fixture(scope="module")
def rv_daemon(tmp_path_factory, rendezvous):
    d = Daemon(str(tmp_path_factory.mktemp("discovery")),
               config={"discovery": {"rendezvous_url": rendezvous.url,
                                     "announce_url": "http://lab.example:30000",
                                     "announce_label": "QA rack 3", "announce_interval": "3600"}})
    d.start()
    yield d
    d.stop()


def test_announces_at_start_and_on_demand(rv_daemon, rendezvous):
    first = rendezvous.wait_for(1)[0]
    assert first["path"] == "/announce"
    assert first["type"].startswith("application/json")
    body = first["body"]
    assert body["url"] == "http://lab.example:30000" and body["label"] == "QA rack 3"
    with open(os.path.join(rv_daemon.state_dir, "server_id")) as fh:
        assert body["server_id"] == fh.read().strip()
    info = rv_daemon.get("/api/rendezvous").json()
    assert info["url"] == rendezvous.url and info["label"] == "QA rack 3"
    before = rendezvous.count()
    r = rv_daemon.request("POST", "/api/announce-now")
    assert r.status == 200 and r.json()["ok"] is True
    again = rendezvous.wait_for(before + 1)[-1]
    assert again["body"] == body


def test_failing_rendezvous_is_not_fatal(rv_daemon, rendezvous):
    rendezvous.status = 500
    try:
        before = rendezvous.count()
        assert rv_daemon.request("POST", "/api/announce-now").json()["ok"] is True
        rendezvous.wait_for(before + 1)
        deadline = time.monotonic() + 10
        while rv_daemon.get("/api/rendezvous").json().get("failures", 0) < 1:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert rv_daemon.get("/api/health").status == 200
    finally:
        rendezvous.status = 200


def test_server_id_survives_restart(tmp_path, rendezvous):
    d = Daemon(str(tmp_path), config={"discovery": {"rendezvous_url": rendezvous.url,
                                                    "announce_url": "http://x.example"}})
    with d:
        first = d.get("/api/rendezvous").json()["server_id"]
    with d:
        assert d.get("/api/rendezvous").json()["server_id"] == first


def test_rendezvous_off_by_default(daemon):
    assert daemon.get("/api/rendezvous").json()["url"] == ""
    assert daemon.request("POST", "/api/announce-now").json()["ok"] is True
