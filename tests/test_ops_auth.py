"""htpasswd parsing, password checks, which paths are protected, the gate, the warning."""

from __future__ import annotations

import base64
import hashlib

import bcrypt
import pytest
from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.logger import LogLevel, globalLogPublisher
from twisted.web.resource import Resource

from streamlab import config as configmod
from streamlab.web import auth


def _sha(pw: str) -> str:
    return "{SHA}" + base64.b64encode(hashlib.sha1(pw.encode()).digest()).decode()  # noqa: S324


def test_parse_and_check():
    bc = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(4)).decode()
    alice = bc.replace("$2b$", "$2y$", 1)
    text = f"# comment\n\nalice:{alice}\nbob:{_sha('pw')}\ncarol:$apr1$xx$yy\nbroken\n"
    users = auth.parse_htpasswd(text)
    assert set(users) == {"alice", "bob"}  # MD5 ($apr1$) is not supported
    assert auth.check_password(users["alice"], "s3cret")
    assert not auth.check_password(users["alice"], "s3cret ")
    assert auth.check_password(users["bob"], "pw")
    assert not auth.check_password(users["bob"], "PW")
    assert not auth.check_password("$2y$garbage", "x")


@pytest.mark.parametrize(("segment", "method", "needs"), [
    (b"api", b"GET", False), (b"api", b"HEAD", False), (b"api", b"OPTIONS", False),
    (b"api", b"POST", True), (b"api", b"PATCH", True), (b"api", b"DELETE", True), (b"api", b"PUT", True),
    (b"debug", b"GET", True), (b"dashboard", b"GET", True),
    (b"go-live", b"GET", False), (b"go-live", b"POST", True), (b"go-live", b"DELETE", True),
    (b"metrics", b"GET", False), (b"metrics", b"TRACE", True),
    (b"", b"GET", False),
])
def test_protected_paths(segment, method, needs):
    assert auth.protected(segment, method) is needs


class _Leaf(Resource):
    isLeaf = True

    def render(self, request):
        return b"ok:" + request.method + b":" + b"/".join(request.prepath)


def _tree():
    root = Resource()
    for name in (b"api", b"debug", b"dashboard", b"go-live"):
        root.putChild(name, _Leaf())
    return root


def test_gate_in_memory(tmp_path):
    path = tmp_path / "htpasswd"
    path.write_text(f"bob:{_sha('builder')}\n")
    clock = Clock()
    gate = auth.AuthGate(_tree(), auth.Htpasswd(str(path), clock))
    client = StubTreq(gate)

    def call(method, url, user=None, pw=None):
        headers = {}
        if user is not None:
            headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode()
        d = client.request(method, "http://x" + url, headers=headers)
        client.flush()
        resp = d.result if hasattr(d, "result") else None
        return resp.code

    assert call("POST", "/api/sessions") == 401
    assert call("POST", "/api/sessions", "bob", "wrong") == 401
    assert call("POST", "/api/sessions", "bob", "builder") == 200
    assert call("GET", "/api/sessions") == 200
    assert call("GET", "/go-live/x/master.m3u8") == 200
    assert call("GET", "/debug") == 401
    assert call("GET", "/dashboard/", "bob", "builder") == 200
    # the file changes: read again (at most once a second)
    path.write_text(f"bob:{_sha('new')}\n# longer\n")
    clock.advance(1.5)
    assert call("POST", "/api/sessions", "bob", "builder") == 401
    assert call("POST", "/api/sessions", "bob", "new") == 200


def test_warning_without_auth_beyond_loopback(tmp_path):
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        base = {"media-dir": str(tmp_path / "m"), "state-dir": str(tmp_path / "s")}
        open_cfg = configmod.load(None, {**base, "listen": "tcp:30000"})
        root = Resource()
        assert auth.protect(root, open_cfg, Clock()) is root
        warned = [e for e in events
                  if e.get("log_level") == LogLevel.warn and "without auth" in e["log_format"]]
        assert len(warned) == 1
        events.clear()
        local = configmod.load(None, {**base, "listen": "tcp:30000:interface=127.0.0.1",
                                      "bootstrap-listen": r"tcp:30081:interface=\:\:1"})
        auth.protect(root, local, Clock())
        assert not [e for e in events if e.get("log_level") == LogLevel.warn]
    finally:
        globalLogPublisher.removeObserver(events.append)


class _SyncPool:
    """A thread pool that runs the work at once (the bcrypt check stays real)."""

    def callInThreadWithCallback(self, on_result, fn, *a, **kw):  # noqa: N802
        try:
            result = fn(*a, **kw)
        except Exception as exc:  # noqa: BLE001
            on_result(False, exc)
        else:
            on_result(True, result)


class _Reactor(Clock):
    """Time and a thread pool: what Htpasswd asks of the daemon's reactor."""

    def __init__(self) -> None:
        super().__init__()
        self.pool = _SyncPool()
        self.pool_used = 0

    def getThreadPool(self):  # noqa: N802
        self.pool_used += 1
        return self.pool

    def callFromThread(self, fn, *a, **kw):  # noqa: N802
        fn(*a, **kw)


def test_bcrypt_check_runs_on_the_injected_reactors_pool(tmp_path):
    """A bcrypt login is checked on the thread pool of the reactor the gate was given
    (not the global reactor's), then remembered: the second request needs no check."""
    path = tmp_path / "htpasswd"
    path.write_text("ann:" + bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode() + "\n")
    reactor = _Reactor()
    client = StubTreq(auth.AuthGate(_tree(), auth.Htpasswd(str(path), reactor)))

    def post(pw):
        token = base64.b64encode(f"ann:{pw}".encode()).decode()
        d = client.request("POST", "http://x/api/sessions", headers={"Authorization": "Basic " + token})
        client.flush()
        return d.result.code

    assert post("pw") == 200
    assert reactor.pool_used == 1
    assert post("pw") == 200
    assert reactor.pool_used == 1  # remembered
    assert post("nope") == 401
    assert reactor.pool_used == 2
