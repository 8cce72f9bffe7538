"""TLS (tls = auto) on every listener and HTTP Basic auth, on a real daemon.

* the certificate is generated on first start with the configured SANs and reused on
  the next start;
* a client that trusts only that certificate gets /api/health from the main listener,
  a 302 from the bootstrap listener to an https:// session port, and a playlist through
  that session port; plain HTTP is refused;
* a socket reset fault on a session port still ends the TLS stream with a TCP RST;
* protected paths (/api mutations, /debug, /dashboard/) need credentials (bcrypt and
  {SHA} entries both work); player paths (/go-live, bootstrap, session ports) do not.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import os
import socket
import ssl
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import bcrypt
import m3u8
import pytest

from streamlab.testing.daemon import Daemon, Response, request
from tests.integration.sessions_helpers import serving
from tests.mp4_walk import walk_tfdt

USERS = {"alice": "wonder land", "bob": "builder"}
BODY = 65536


def _https(ctx: ssl.SSLContext, port: int, method: str, path: str, body: Any = None,
           headers: dict[str, str] | None = None, timeout: float = 30.0) -> Response:
    return request(port, method, path, body, headers, timeout, context=ctx)


def _tls_exchange(ctx: ssl.SSLContext, port: int, request: bytes, timeout: float = 10.0) -> tuple[bytes, str]:
    """One TLS exchange over a raw socket (MemoryBIO), so the test sees what the TCP stack
    saw at the end: ``reset`` (RST), ``eof`` (FIN) or ``close_notify`` (orderly TLS end).
    (ssl.SSLSocket reports a RST under TLS as an EOF error, hiding the difference.)"""
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname="127.0.0.1")

    def flush() -> None:
        pending = out.read()
        if pending:
            raw.sendall(pending)

    try:
        while True:
            try:
                obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                flush()
                inc.write(raw.recv(65536))
        flush()
        obj.write(request)
        flush()
        data = b""
        while True:
            try:
                chunk = raw.recv(65536)
            except ConnectionResetError:
                return data, "reset"
            if not chunk:
                return data, "eof"
            inc.write(chunk)
            while True:
                try:
                    data += obj.read(65536)
                except ssl.SSLWantReadError:
                    break
                except ssl.SSLZeroReturnError:
                    return data, "close_notify"
    finally:
        raw.close()


class TlsDaemon(Daemon):
    """The test daemon, spoken to over HTTPS with only the generated certificate trusted."""

    ctx: ssl.SSLContext | None = None

    @property
    def cert_path(self) -> str:
        return os.path.join(self.state_dir, "tls", "cert.pem")

    def request(self, method: str, path: str, body: Any = None, **kw: Any) -> Response:
        if self.ctx is None:
            if not os.path.exists(self.cert_path):
                raise ConnectionRefusedError("no certificate yet")
            self.ctx = ssl.create_default_context(cafile=self.cert_path)
        return _https(self.ctx, self.port, method, path, body, **kw)


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.fixture(scope="module")
def d(tmp_path_factory, test_item):
    work = tmp_path_factory.mktemp("ops-security")
    htpasswd = work / "htpasswd"
    sha = base64.b64encode(hashlib.sha1(USERS["bob"].encode()).digest()).decode()  # noqa: S324
    bc = bcrypt.hashpw(USERS["alice"].encode(), bcrypt.gensalt(4)).decode().replace("$2b$", "$2y$", 1)
    htpasswd.write_text(f"# users\nalice:{bc}\nbob:{{SHA}}{sha}\n")
    daemon = TlsDaemon(str(work), session_ports=8, config={
        "server": {"tls": "auto", "tls_san": "localhost,127.0.0.1", "auth_htpasswd": str(htpasswd)},
        "sessions": {"socket_body_bytes": BODY}})
    with serving(daemon):
        yield daemon


def test_generated_certificate_has_the_configured_sans(d):
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(Path(d.cert_path).read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {"localhost"}
    assert {str(a) for a in san.get_values_for_type(x509.IPAddress)} == {"127.0.0.1"}
    assert oct(os.stat(os.path.join(d.state_dir, "tls", "key.pem")).st_mode & 0o777) == "0o600"


def test_main_listener_is_https_only(d):
    r = d.get("/api/health")
    assert r.status == 200 and r.json()["status"] == "ok"
    # an untrusting client refuses the self-signed certificate
    with pytest.raises(ssl.SSLCertVerificationError):
        _https(ssl.create_default_context(), d.port, "GET", "/api/health")
    # plain HTTP gets no HTTP answer
    conn = http.client.HTTPConnection("127.0.0.1", d.port, timeout=5)
    with pytest.raises((http.client.HTTPException, OSError)):
        conn.request("GET", "/api/health")
        conn.getresponse()
    conn.close()


def test_bootstrap_and_session_port_stream_over_https(d):
    r = _https(d.ctx, d.bootstrap_port, "GET", "/go-live/testclip/master.m3u8?player_id=tls-player")
    assert r.status == 302, r.text
    loc = urlsplit(r.headers["location"])
    assert loc.scheme == "https"
    master = _https(d.ctx, loc.port, "GET", f"{loc.path}?{loc.query}")
    assert master.status == 200
    playlist = m3u8.loads(master.text)
    assert playlist.is_variant and playlist.playlists
    media_uri = playlist.playlists[0].uri
    media_path = media_uri if media_uri.startswith("/") else "/go-live/testclip/" + media_uri
    media = _https(d.ctx, loc.port, "GET", media_path)
    assert media.status == 200
    assert m3u8.loads(media.text).segments
    # the session saw those requests
    sid = r.json()["session_id"]
    assert d.get(f"/api/session/{sid}").json()["all_requests_count"] >= 2


def test_the_continuous_timeline_is_rewritten_over_tls(d):
    """The default (continuous) 6 s MPD through a TLS session port: one Period, and the
    segment the template names for number n starts at decode time n x 6 s (its tfdt raised
    by whole loops), read by an independent box walk of the bytes the TLS client got."""
    r = d.request("POST", "/api/sessions", {"player_id": "tls-continuous"},
                  headers=_basic("bob", USERS["bob"]))
    port = int(r.json()["x_forwarded_port"])
    mpd = _https(d.ctx, port, "GET", "/go-live/testclip/manifest_6s.mpd")
    assert mpd.status == 200 and mpd.text.count("<Period") == 1, mpd.text
    ns = {"d": "urn:mpeg:dash:schema:mpd:2011"}
    video = next(a for a in ET.fromstring(mpd.text).iterfind(".//d:AdaptationSet", ns)
                 if a.get("contentType") == "video" or "video" in (a.get("mimeType") or ""))
    template = video.find(".//d:SegmentTemplate", ns)
    assert template is not None and template.get("media", "").endswith("?timeline=continuous")
    timescale, duration = int(template.get("timescale", "0")), int(template.get("duration", "0"))
    assert duration == 6 * timescale
    n = int((time.time() - 1577836800) // 6) - 2  # complete and listed (36 s window)
    media = template.get("media", "").replace("$Number$", str(n))
    seg = _https(d.ctx, port, "GET", "/go-live/testclip/" + media)
    assert seg.status == 200
    times = walk_tfdt(seg.body)
    assert times, "no tfdt in the segment"
    print(f"TLS, continuous segment n={n}: first tfdt {times[0]} = {times[0] / timescale:.3f} s")
    assert times[0] == n * duration
    assert times == sorted(times)


def _alpn(d, port: int) -> str | None:
    ctx = ssl.create_default_context(cafile=d.cert_path)
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
        return s.selected_alpn_protocol()


def test_http2_by_alpn_on_main_and_bootstrap_not_on_session_ports(d):
    from streamlab.web.tls import h2_available

    expected = "h2" if h2_available() else "http/1.1"
    assert _alpn(d, d.port) == expected
    assert _alpn(d, d.bootstrap_port) == expected
    r = _https(d.ctx, d.bootstrap_port, "GET", "/go-live/testclip/master.m3u8?player_id=alpn")
    assert _alpn(d, urlsplit(r.headers["location"]).port) == "http/1.1"


def test_socket_reset_fault_still_resets_under_tls(d):
    headers = _basic("bob", USERS["bob"])
    r = d.request("POST", "/api/sessions", {"player_id": "tls-reset",
                                           "set": {"segment_failure_type": "request_body_reset"}},
                  headers=headers)
    assert r.status in (200, 201), r.text
    port = int(r.json()["x_forwarded_port"])
    # a segment that is complete now (not paced by the live clock)
    n = int((time.time() - 1577836800) // 6.0)
    seg = f"/go-live/testclip/video/360p/seg_{(n + 3) % 4 + 1:05d}.m4s"
    req = f"GET {seg} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    data, outcome = _tls_exchange(d.ctx, port, req)
    assert outcome == "reset", (outcome, len(data), data[:300])
    assert data.startswith(b"HTTP/1.1 200")
    body = data.split(b"\r\n\r\n", 1)[1]
    assert 0 < len(body) <= BODY + 64  # at most the configured bytes (+ chunk framing)


def test_network_log_times_the_tls_handshake_of_a_connections_first_request(d):
    r = d.request("POST", "/api/sessions", {"player_id": "tls-timing"}, headers=_basic("bob", USERS["bob"]))
    assert r.status in (200, 201), r.text
    sid, port = r.json()["session_id"], int(r.json()["x_forwarded_port"])
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=d.ctx, timeout=30)
    try:
        for play_id in ("first", "second"):  # one keep-alive TLS connection
            conn.request("GET", f"/go-live/testclip/master.m3u8?play_id={play_id}")
            resp = conn.getresponse()
            assert resp.status == 200 and resp.read()
    finally:
        conn.close()
    deadline = time.monotonic() + 10
    while True:
        entries = d.get(f"/api/session/{sid}/network").json()["entries"]
        if len(entries) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    first, second = ({e["play_id"]: e for e in entries}[p] for p in ("first", "second"))
    # the connection's first request carries the handshake, inside its connect time
    assert 0 < first["tls_ms"] <= first["connect_ms"], first
    # the reused connection had no handshake (and no connect)
    assert second["tls_ms"] == 0 and second["connect_ms"] == 0, second
    har = d.get(f"/api/session/{sid}/network.har").json()["log"]["entries"]
    assert [e["timings"]["ssl"] > 0 for e in har] == [True, False]


def test_mutations_debug_and_dashboard_need_auth(d):
    anon = d.request("POST", "/api/sessions", {"player_id": "auth-anon"})
    assert anon.status == 401
    assert anon.headers["www-authenticate"].startswith('Basic realm="streamlab"')
    wrong = d.request("POST", "/api/sessions", {"player_id": "auth-wrong"}, headers=_basic("alice", "nope"))
    assert wrong.status == 401
    unknown = d.request("POST", "/api/sessions", {"player_id": "auth-x"}, headers=_basic("eve", "x"))
    assert unknown.status == 401
    for user in USERS:  # bcrypt ($2y$) and {SHA}
        ok = d.request("POST", "/api/sessions", {"player_id": f"auth-{user}"},
                       headers=_basic(user, USERS[user]))
        assert ok.status in (200, 201), (user, ok.text)
        sid = ok.json()["session_id"]
        again = d.request("DELETE", f"/api/session/{sid}", headers=_basic(user, USERS[user]))
        assert again.status in (200, 204), again.text
    # nothing changed for the refused ones
    ids = [s["player_id"] for s in d.get("/api/sessions").json()]
    assert not {"auth-anon", "auth-wrong", "auth-x"} & set(ids)
    for path in ("/debug", "/dashboard/"):
        assert d.get(path).status == 401, path
        assert d.get(path, headers=_basic("alice", USERS["alice"])).status == 200, path


def test_player_paths_and_reads_stay_open(d):
    assert d.get("/go-live/testclip/master.m3u8").status == 200
    assert d.get("/api/health").status == 200
    assert d.get("/api/sessions").status == 200
    assert d.request("OPTIONS", "/api/sessions").status == 204  # CORS pre-flight
    r = _https(d.ctx, d.bootstrap_port, "GET", "/go-live/testclip/master.m3u8?player_id=open-player")
    assert r.status == 302
    loc = urlsplit(r.headers["location"])
    assert _https(d.ctx, loc.port, "GET", f"{loc.path}?{loc.query}").status == 200


def test_stopping_an_origin_worker_needs_auth_and_session_ports_refuse_control_calls(d):
    """Issue #17: ``DELETE /go-live/api/stop/{id}`` worked without credentials, on the
    main port and on every session port."""
    assert d.get("/go-live/testclip/master.m3u8").status == 200  # a worker exists
    anon = d.request("DELETE", "/go-live/api/stop/testclip")
    assert anon.status == 401
    workers = d.get("/go-live/api/status").json()["workers"]
    assert "testclip" in [w.get("content", w.get("id")) for w in workers]
    r = _https(d.ctx, d.bootstrap_port, "GET", "/go-live/testclip/master.m3u8?player_id=control-player")
    port = urlsplit(r.headers["location"]).port
    for method, path, status in (("DELETE", "/go-live/api/stop/testclip", 405),
                                 ("POST", "/go-live/testclip/master.m3u8", 405),
                                 ("PATCH", "/api/session/1", 405),
                                 ("GET", "/go-live/api/status", 404),
                                 ("GET", "/api/sessions", 404)):
        answer = _https(d.ctx, port, method, path)
        assert answer.status == status, (method, path, answer.status)
        assert answer.headers["content-type"] == "application/json"
        if status == 405:
            assert answer.headers["allow"] == "GET, HEAD, OPTIONS"
    assert _https(d.ctx, port, "GET", "/go-live/testclip/master.m3u8").status == 200  # media still flows
    ok = d.request("DELETE", "/go-live/api/stop/testclip", headers=_basic("bob", USERS["bob"]))
    assert ok.status == 200 and ok.json() == {"stopped": "testclip"}


def test_certificate_is_reused_after_a_restart(d):
    before = Path(d.cert_path).read_bytes()
    assert d.stop() == 0
    d.ctx = None
    d.start()
    assert Path(d.cert_path).read_bytes() == before
    assert d.get("/api/health").status == 200
