"""Serving one ``/go-live/{upstream}/...`` request from the upstream (adapter).

Called by the origin resource, so the same code answers on the main port and behind every
session port's fault layer (which has already decided faults *before* this runs: a status
fault or a connect-stage socket fault never reaches the upstream).

* Manifests (the master/MPD and ``playlist_*.m3u8``) are collected (bounded), rewritten
  (:mod:`.rewrite`) and answered with a ``Content-Length``.  The request's query string is
  passed through, so LL-HLS blocking reloads (``_HLS_msn``/``_HLS_part``) are held by the
  upstream itself.
* Everything else streams: status and the useful headers are copied, and the body is
  relayed by :class:`BodyRelay`, a streaming producer registered on the client request.
  When the client's socket is full the relay pauses the upstream connection's transport,
  so TCP back-pressure reaches the upstream and memory stays flat; a client that goes away
  (or a fault that kills the response) stops it, which aborts the upstream connection.
* Upstream trouble is honest: an upstream status is passed on as is; no answer within
  ``upstream_timeout_seconds`` is a 504 and a refused/unreachable/TLS failure a 502, both
  with a JSON body saying which.  ``request.upstream_log`` carries the upstream
  time-to-first-byte and, for these failures, the ``upstream`` category the session's
  network log records (distinct from injected faults).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, cast

from twisted.internet import defer
from twisted.internet.error import ConnectError, ConnectionRefusedError, DNSLookupError, TimeoutError
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime, ITransport
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone, ResponseFailed, ResponseNeverReceived
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import IResponse
from twisted.web.server import NOT_DONE_YET, Request
from zope.interface import implementer

from streamlab import mediatypes
from streamlab.errors import NotFound, Unavailable
from streamlab.upstream import paths, rewrite
from streamlab.upstream.client import TooBig, collect, final_url

if TYPE_CHECKING:
    from streamlab.upstream.service import Upstream

log = Logger()

COPY_HEADERS = (b"content-type", b"content-length", b"content-range", b"accept-ranges", b"cache-control",
                b"etag", b"last-modified", b"expires", b"age")
FORWARD_HEADERS = (b"range", b"if-none-match", b"if-modified-since")
MANIFEST_CACHE = b"no-cache, no-store, must-revalidate"
BLOCKING_ALLOWANCE = 30.0
"""Seconds added to the timeout of an LL-HLS blocking reload (``_HLS_msn``), which the
upstream legitimately holds for up to three target durations."""
HLS_TYPE = mediatypes.HLS.encode()
DASH_TYPE = mediatypes.DASH.encode()


def manifest_kind(rest: str, dash: bool) -> str | None:
    """``hls``/``dash`` when the local path *rest* is a manifest to rewrite, else None."""
    if rest == paths.MASTER_DASH and dash:
        return "dash"
    if rest == paths.MASTER_HLS and not dash:
        return "hls"
    if "/" not in rest and rest.startswith("playlist_") and rest.endswith(".m3u8"):
        return "hls"
    if rest.lower().split("?", 1)[0].endswith((".m3u8", ".m3u")):
        return "hls"
    return None


def _gone(request: Request) -> bool:
    return bool(getattr(request, "_disconnected", False) or getattr(request, "finished", False))


@implementer(IPushProducer)
class BodyRelay(Protocol):
    """Relays an upstream response body to the client request with back-pressure."""

    def __init__(self, request: Request, done: defer.Deferred[bool]) -> None:
        self.request = request
        self.done = done
        self.stopped = False
        self.registered = False
        self.upstream: IPushProducer | None = None  # the response body's transport

    def makeConnection(self, transport: ITransport) -> None:  # noqa: N802
        super().makeConnection(transport)
        # An Agent response body's transport is a TransportProxyProducer (IPushProducer).
        self.upstream = cast(IPushProducer, transport)
        if not _gone(self.request):
            self.request.registerProducer(self, True)
            self.registered = True
        else:
            self.stopProducing()

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        if not self.stopped:
            self.request.write(data)

    def pauseProducing(self) -> None:  # noqa: N802 - the client's socket is full
        if not self.stopped and self.upstream is not None:
            self.upstream.pauseProducing()

    def resumeProducing(self) -> None:  # noqa: N802
        if not self.stopped and self.upstream is not None:
            self.upstream.resumeProducing()

    def stopProducing(self) -> None:  # noqa: N802 - the client left or a fault killed the answer
        if self.stopped:
            return
        self.stopped = True
        try:
            if self.upstream is not None:
                self.upstream.stopProducing()
        except Exception:  # noqa: BLE001 - the upstream connection is already gone
            pass

    def connectionLost(self, reason: Failure | None = None) -> None:  # noqa: N802
        request = self.request
        if self.registered and not getattr(request, "_disconnected", False):
            self.registered = False
            try:
                request.unregisterProducer()
            except Exception:  # noqa: BLE001 - channel already gone
                pass
        complete = reason is None or reason.check(ResponseDone, PotentialDataLoss) is not None
        if not self.stopped and not _gone(request):
            if complete:
                request.finish()
            else:
                # the upstream broke mid-body: do not pretend the body is complete
                channel = getattr(request, "channel", None)
                transport = getattr(channel, "transport", None)
                if transport is not None:
                    transport.abortConnection()
        if not self.done.called:
            self.done.callback(complete)


class UpstreamFetch:
    """One client request answered from an upstream (see the module docstring)."""

    def __init__(self, upstream: Upstream, request: Request, rest: str, clock: IReactorTime, timeout: float,
                 manifest_limit: int) -> None:
        self.upstream = upstream
        self.request = request
        self.rest = rest
        self.clock = clock
        self.timeout = timeout
        self.manifest_limit = manifest_limit
        self.started = clock.seconds()
        self.pending: defer.Deferred[Any] | None = None
        self.timer: IDelayedCall | None = None
        self.relay: BodyRelay | None = None
        self.info: dict[str, Any] = {"ttfb_ms": None, "status": 0, "failure": ""}
        request.upstream_log = self.info  # type: ignore[attr-defined]

    def start(self) -> int:
        """Send the upstream request; the answer follows."""
        up = self.upstream
        query = (self.request.uri or b"").split(b"?", 1)
        url = paths.upstream_url(up.origin, self.rest, query[1].decode("latin-1") if len(query) > 1 else "")
        if url is None:
            raise NotFound("not found", detail=f"no upstream path for {self.rest}")
        self.url = url
        self.kind = manifest_kind(self.rest, up.origin.dash)
        extra = {}
        for name in FORWARD_HEADERS:
            value = self.request.getHeader(name)
            if value is not None and not (self.kind and name != b"range"):
                extra[name] = value
        if up.client is None:  # set when the upstream is registered or loaded
            raise Unavailable("upstream not ready", detail=up.name)
        self.pending = up.client.request(self.request.method, url, extra)
        if self.kind == "hls" and b"_HLS_msn=" in (self.request.uri or b""):
            self.timeout += BLOCKING_ALLOWANCE
        self.timer = self.clock.callLater(self.timeout, self._timed_out)
        self.pending.addCallbacks(self._response, self._failed)
        self.pending.addErrback(self._bug)
        self.request.notifyFinish().addErrback(self._client_gone)
        return NOT_DONE_YET

    # -- outcomes ------------------------------------------------------------

    def _timed_out(self) -> None:
        self.timer = None
        self.info["timed_out"] = True
        if self.pending is not None:
            self.pending.cancel()
        if self.relay is not None:
            self.relay.stopProducing()

    def _client_gone(self, _reason: Failure) -> None:
        self._cancel_timer()
        if self.pending is not None and not self.pending.called:
            self.pending.cancel()
        if self.relay is not None:
            self.relay.stopProducing()

    def _cancel_timer(self) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None

    def _response(self, response: IResponse) -> defer.Deferred[Any] | None:
        self.pending = None
        now = self.clock.seconds()
        self.info["ttfb_ms"] = round((now - self.started) * 1000.0, 3)
        self.info["status"] = response.code
        if _gone(self.request):
            response.deliverBody(Protocol())  # the connection is dropped with it
            self._cancel_timer()
            return None
        if response.code >= 400:
            self.info["failure"] = f"upstream_{response.code}"
        if self.kind is not None and response.code == 200 and self.request.method == b"GET":
            d = collect(response, self.manifest_limit)
            self.pending = d
            d.addCallbacks(lambda body: self._manifest(response, body), self._failed)
            return d
        self._cancel_timer()
        self._copy_headers(response)
        if self.request.method == b"HEAD":
            self.request.finish()
            return None
        done: defer.Deferred[bool] = defer.Deferred()
        self.relay = BodyRelay(self.request, done)
        response.deliverBody(self.relay)
        return None

    def _copy_headers(self, response: IResponse) -> None:
        request = self.request
        request.setResponseCode(response.code)
        for name in COPY_HEADERS:
            values = response.headers.getRawHeaders(name)
            if values:
                request.responseHeaders.setRawHeaders(name, values)
        # the client parser keeps the length out of the headers
        length = getattr(response, "length", None)
        if isinstance(length, int) and response.code not in (204, 304):
            request.setHeader(b"content-length", str(length).encode())

    def _manifest(self, response: IResponse, body: bytes) -> None:
        self.pending = None
        self._cancel_timer()
        if _gone(self.request):
            return
        up = self.upstream
        base = final_url(response, self.url)
        text = body.decode("utf-8", "replace")
        if self.kind == "dash":
            out = rewrite.rewrite_mpd(text, base, up.origin, up.name)
            ctype = DASH_TYPE
        else:
            out = rewrite.rewrite_hls(text, base, up.origin, up.name)
            ctype = HLS_TYPE
        data = out.encode("utf-8")
        request = self.request
        request.setResponseCode(200)
        request.setHeader(b"content-type", ctype)
        request.setHeader(b"cache-control", MANIFEST_CACHE)
        request.setHeader(b"content-length", str(len(data)).encode())
        request.write(data)
        request.finish()

    def _failed(self, failure: Failure) -> None:
        self.pending = None
        self._cancel_timer()
        if _gone(self.request):
            return None
        status, error, detail = self._describe(failure)
        self.info["failure"] = f"upstream_{error.replace(' ', '_')}"
        if self.request.startedWriting:
            transport = getattr(getattr(self.request, "channel", None), "transport", None)
            if transport is not None:
                transport.abortConnection()
            return None
        body = json.dumps({"error": f"upstream {error}", "detail": detail, "upstream": self.upstream.name,
                           "status": status}).encode()
        request = self.request
        request.setResponseCode(status)
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", MANIFEST_CACHE)
        request.setHeader(b"content-length", str(len(body)).encode())
        request.write(body)
        request.finish()
        return None

    def _describe(self, failure: Failure) -> tuple[int, str, str]:
        if self.info.get("timed_out") or failure.check(defer.CancelledError, TimeoutError):
            return 504, "timeout", f"no answer from the upstream within {self.timeout:g} s"
        if failure.check(TooBig):
            return 502, "manifest too large", str(failure.value)
        if failure.check(ConnectionRefusedError):
            return 502, "refused", "the upstream refused the connection"
        if failure.check(DNSLookupError):
            return 502, "unreachable", "the upstream host name does not resolve"
        if failure.check(ConnectError):
            return 502, "unreachable", str(failure.value)
        if failure.check(ResponseNeverReceived, ResponseFailed):
            reasons = getattr(failure.value, "reasons", []) or []
            text = "; ".join(r.getErrorMessage() for r in reasons) or "connection closed"
            if "SSL" in text or "certificate" in text:
                return 502, "tls error", text
            return 502, "bad answer", text
        return 502, "error", failure.getErrorMessage()

    def _bug(self, failure: Failure) -> None:
        log.failure("upstream relay failed for {url}", failure, url=getattr(self, "url", self.rest))
        if not _gone(self.request) and not self.request.startedWriting:
            self.request.setResponseCode(500)
            self.request.finish()
