"""``/dashboard/``: the static dashboard (package data in ``streamlab/dashboard``).

* ``/dashboard`` redirects to ``/dashboard/``.
* A path naming a file under the dashboard directory is served with its content type,
  Content-Length and an ETag (a matching ``If-None-Match`` answers 304); the file is read
  in a thread, never on the reactor.  HTML, JavaScript and CSS of the app
  itself are ``no-cache`` (the browser revalidates, so an upgrade is picked up at once);
  third-party files under ``vendor/`` may be cached for an hour.
* Any other path without a file extension (a deep link such as ``/dashboard/session/7``
  or ``/dashboard/jobs``) answers ``index.html``; the app turns the path into its hash
  route (``#/session/7``).  A missing file *with* an extension is a JSON 404.
* Nothing outside the directory is ever served (``..``, absolute parts, hidden files).
"""

from __future__ import annotations

import json
import os
import posixpath
import socket
from typing import cast

from twisted.application.service import IService, Service
from twisted.internet import threads
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IListeningPort, IReactorThreads
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request
from twisted.web.util import redirectTo

from streamlab.config import Config
from streamlab.errors import NotFound
from streamlab.web.errors import write_error

log = Logger()

DASHBOARD_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "dashboard")

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".map": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".txt": "text/plain; charset=utf-8",
}

NO_CACHE = b"no-cache, no-store, must-revalidate"
VENDOR_CACHE = b"public, max-age=3600"


def resolve(root: str, segments: list[str]) -> str | None:
    """The file under *root* named by URL *segments*, or None when it must not be served.

    Empty segments are ignored; ``..``, ``.``-prefixed (hidden) names and backslashes are
    refused.  The result may not exist."""
    parts = [s for s in segments if s != ""]
    for part in parts:
        if part.startswith(".") or "\\" in part or "/" in part or "\x00" in part:
            return None
    rel = posixpath.join(*parts) if parts else "index.html"
    path = os.path.realpath(os.path.join(root, rel))
    base = os.path.realpath(root)
    if path != base and not path.startswith(base + os.sep):
        return None
    return path


class DashboardResource(Resource):
    """Serves the dashboard directory *root* (default: the package data)."""

    isLeaf = True

    def __init__(self, root: str = DASHBOARD_DIR, *, reactor: IReactorThreads) -> None:
        super().__init__()
        self.root = root
        self.reactor = reactor

    def render(self, request: IRequest) -> bytes | int:
        if request.method not in (b"GET", b"HEAD"):
            request.setResponseCode(405)
            request.setHeader(b"allow", b"GET, HEAD")
            request.setHeader(b"content-type", b"application/json")
            return json.dumps({"error": "method not allowed", "detail": "GET or HEAD"}).encode()
        if not request.postpath:
            # "/dashboard" without the slash: relative URLs need the directory form
            return redirectTo(b"/dashboard/", request)
        segments = [s.decode("utf-8", "replace") for s in request.postpath]
        path = resolve(self.root, segments)
        missing = NotFound("not found", detail=request.path.decode("utf-8", "replace"))
        if path is None:
            return write_error(request, missing)
        if os.path.isdir(path):
            path = os.path.join(path, "index.html")
        if not os.path.isfile(path):
            last = next((s for s in reversed(segments) if s), "")
            if "." in last:
                return write_error(request, missing)
            path = os.path.join(self.root, "index.html")  # deep link: the app routes it
        return self._file(request, path, segments)

    def _file(self, request: IRequest, path: str, segments: list[str]) -> bytes | int:
        ext = os.path.splitext(path)[1].lower()
        ctype = CONTENT_TYPES.get(ext, "application/octet-stream")
        vendor = bool(segments) and segments[0] == "vendor"
        request.setHeader(b"content-type", ctype.encode())
        request.setHeader(b"cache-control", VENDOR_CACHE if vendor else NO_CACHE)
        request.setHeader(b"x-content-type-options", b"nosniff")
        try:
            st = os.stat(path)
        except OSError:
            return write_error(request, NotFound("not found"))
        etag = f'"{st.st_size:x}-{st.st_mtime_ns:x}"'.encode()
        request.setHeader(b"etag", etag)
        if request.getHeader(b"if-none-match") == etag:
            request.setResponseCode(304)
            return b""
        if request.method == b"HEAD":
            request.setHeader(b"content-length", str(st.st_size).encode())
            return b""
        finished: list[object] = []
        # The Site hands resources a server.Request; IRequest does not declare notifyFinish.
        cast(Request, request).notifyFinish().addBoth(finished.append)

        def read() -> bytes:
            with open(path, "rb") as fh:
                return fh.read()

        def write(body: bytes) -> None:
            if finished:
                return
            request.setHeader(b"content-length", str(len(body)).encode())
            request.write(body)
            request.finish()

        def fail(failure: Failure) -> None:
            log.failure("dashboard file {path} unreadable", failure, path=path)
            if not finished:
                request.write(write_error(request, NotFound("not readable")))
                request.finish()

        pool = self.reactor.getThreadPool()
        threads.deferToThreadPool(self.reactor, pool, read).addCallbacks(write, fail)
        return NOT_DONE_YET


def dashboard_resource(reactor: IReactorThreads) -> DashboardResource:
    """The resource to mount at ``/dashboard`` (files read on *reactor*'s thread pool)."""
    return DashboardResource(reactor=reactor)


def dashboard_urls(port: int, interface: str, advertised_host: str, secure: bool,
                   hostname: str) -> list[str]:
    """The URLs a person can open the dashboard at (pure): the advertised host, or this
    machine's name, and the loopback address when the listener takes every interface."""
    scheme = "https" if secure else "http"
    wildcard = interface in ("", "0.0.0.0", "::")
    hosts: list[str] = []
    if advertised_host:
        hosts.append(advertised_host)
    if wildcard:
        if hostname and hostname not in hosts:
            hosts.append(hostname)
        hosts.append("127.0.0.1")
    elif interface not in hosts:
        hosts.append(f"[{interface}]" if ":" in interface else interface)
    return [f"{scheme}://{host}:{port}/dashboard/" for host in hosts]


class DashboardAnnouncer(Service):
    """Logs the dashboard's URL once the main listener listens (item: the startup log
    tells a new user where to go)."""

    def __init__(self, listener: IService, config: Config, secure: bool) -> None:
        self.listener = listener
        self.config = config
        self.secure = secure

    def startService(self) -> None:  # noqa: N802 - twisted API
        """Wait for the main listener's port, then log the URLs."""
        super().startService()
        waiting = getattr(self.listener, "_waitingForPort", None)
        if waiting is None:
            return
        waiting.addCallback(self._announce)

    def _announce(self, port: IListeningPort) -> IListeningPort:
        try:
            address = port.getHost()
            if not isinstance(address, IPv4Address | IPv6Address):  # a unix socket has no URL
                return port
            urls = dashboard_urls(address.port, address.host,
                                  self.config.server.advertised_host, self.secure, socket.gethostname())
            log.info("dashboard: {urls}", urls=" or ".join(urls))
        except Exception:  # noqa: BLE001 - a log line must never stop the daemon
            log.failure("could not work out the dashboard URL")
        return port
