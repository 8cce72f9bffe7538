"""Body limits and streaming-form paths on a real twisted.web Site over loopback."""

from __future__ import annotations

import os
import socket

import pytest_twisted
from twisted.internet import reactor, threads
from twisted.web.resource import Resource
from twisted.web.server import Site

from streamlab.uploads.request import BodyRule, install_body_rules


class Echo(Resource):
    isLeaf = True

    def __init__(self):
        super().__init__()
        self.seen = []

    def render_POST(self, request):
        request.content.seek(0, 2)
        self.seen.append((request.path, request.content.tell(), dict(request.args)))
        try:
            self.where = os.readlink(f"/proc/self/fd/{request.content.fileno()}")
        except (OSError, ValueError, AttributeError):  # BytesIO: kept in memory
            self.where = "memory"
        return b"ok"


def raw_request(port: int, head: bytes, body_chunks=()) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(head)
        for chunk in body_chunks:
            try:
                s.sendall(chunk)
            except OSError:
                break
        s.shutdown(socket.SHUT_WR)
        out = b""
        while True:
            data = s.recv(65536)
            if not data:
                return out
            out += data


@pytest_twisted.inlineCallbacks
def test_big_upload_bodies_are_buffered_in_the_spool_dir(tmp_path):
    echo = Echo()
    site = Site(echo)
    spool = str(tmp_path / "spool")
    install_body_rules(site, [BodyRule(b"/api/upload", 10_000_000, parse_forms=False, spool_dir=spool)])
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    try:
        big = b"z" * 300_000
        head = (b"POST /api/upload/chunk/x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                b"Content-Length: %d\r\n\r\n" % len(big))
        out = yield threads.deferToThread(raw_request, port.getHost().port, head, [big])
        assert out.startswith(b"HTTP/1.1 200") and echo.seen[-1][1] == len(big)
        assert echo.where.startswith(spool + "/")
        other = head.replace(b"/api/upload", b"/x")
        yield threads.deferToThread(raw_request, port.getHost().port, other, [big])
        assert not echo.where.startswith(spool)
    finally:
        yield port.stopListening()


@pytest_twisted.inlineCallbacks
def test_limits_and_form_parsing():
    echo = Echo()
    site = Site(echo)
    install_body_rules(site, [BodyRule(b"/api/upload", 1000, parse_forms=False)])
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    p = port.getHost().port
    try:
        # within the limit: served, and the form is NOT parsed into args
        body = b"a=1&b=2"
        head = (b"POST /api/upload/init HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                b"Content-Type: application/x-www-form-urlencoded\r\n"
                b"Content-Length: %d\r\n\r\n" % len(body))
        out = yield threads.deferToThread(raw_request, p, head, [body])
        assert out.startswith(b"HTTP/1.1 200") and echo.seen[-1][2] == {}
        # elsewhere forms are parsed as usual
        head2 = head.replace(b"/api/upload/init", b"/api/other")
        yield threads.deferToThread(raw_request, p, head2, [body])
        assert echo.seen[-1][2] == {b"a": [b"1"], b"b": [b"2"]}
        # Content-Length over the limit: 413 JSON, the handler never runs
        calls = len(echo.seen)
        big = b"x" * 5000
        head3 = (b"POST /api/upload/chunk/x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                 b"Content-Length: %d\r\n\r\n" % len(big))
        out = yield threads.deferToThread(raw_request, p, head3, [big])
        assert out.startswith(b"HTTP/1.1 413") and b'"body too large"' in out
        assert len(echo.seen) == calls
        # chunked transfer without a length: counted, 413 as well
        chunked = b"".join(b"%x\r\n%s\r\n" % (400, b"y" * 400) for _ in range(5)) + b"0\r\n\r\n"
        head4 = (b"POST /api/upload HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n")
        out = yield threads.deferToThread(raw_request, p, head4, [chunked])
        assert out.startswith(b"HTTP/1.1 413")
        assert len(echo.seen) == calls
        # other paths have no limit here
        out = yield threads.deferToThread(raw_request, p, head3.replace(b"/api/upload/chunk/x", b"/x"), [big])
        assert out.startswith(b"HTTP/1.1 200") and echo.seen[-1][1] == 5000
    finally:
        yield port.stopListening()


@pytest_twisted.inlineCallbacks
def test_expect_continue_gets_413_before_the_body():
    echo = Echo()
    site = Site(echo)
    install_body_rules(site, [BodyRule(b"/api/upload", 1000, parse_forms=False)])
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    try:
        head = (b"POST /api/upload HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                b"Content-Length: 50000000000\r\n\r\n")
        out = yield threads.deferToThread(raw_request, port.getHost().port, head)  # sends no body at all
        assert out.startswith(b"HTTP/1.1 413") and b"100 Continue" not in out
        assert b'"body too large"' in out and echo.seen == []
        # within the limit the usual 100 Continue + 200 happen
        head = (b"POST /api/upload HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nConnection: close\r\n"
                b"Content-Length: 3\r\n\r\n")
        out = yield threads.deferToThread(raw_request, port.getHost().port, head, [b"abc"])
        assert out.startswith(b"HTTP/1.1 100") and b"200 OK" in out
    finally:
        yield port.stopListening()


@pytest_twisted.inlineCallbacks
def test_api_rules_limit_json_bodies_but_not_uploads(tmp_path):
    from streamlab.uploads.request import api_body_rules

    echo = Echo()
    site = Site(echo)
    install_body_rules(site, api_body_rules(10_000_000, spool_dir=str(tmp_path)))
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    try:
        big = b"{" + b" " * 2_000_000 + b"}"
        cases = ((b"/api/sessions", b"413"), (b"/api/upload/chunk/x", b"200"), (b"/go-live/x", b"200"))
        for path, status in cases:
            head = (b"POST %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n" % (path, len(big)))
            out = yield threads.deferToThread(raw_request, port.getHost().port, head, [big])
            assert out.startswith(b"HTTP/1.1 " + status), path
    finally:
        yield port.stopListening()
