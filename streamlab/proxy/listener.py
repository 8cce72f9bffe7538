"""The per-session HTTP listener: a Site whose requests pass through the fault layer.

Every request on a session port is a :class:`SessionRequest`.  In ``process`` it is
classified, counted, offered to the session's fault engine and then either answered by
the fault (status faults, socket faults before the first byte) or handed to the shared
origin resource with write/finish intercepted (body cuts, corruption, master rewriting,
transfer timeouts).  Every request ends as one network-log entry.

The data path is kept thin: on an unfaulted segment ``write`` adds two attribute checks
and a counter update to Twisted's own path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import server
from twisted.web.http import _GenericHTTPChannelProtocol
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource

from streamlab.errors import NotFound
from streamlab.mediatypes import url_content_type as _guess_type
from streamlab.proxy import faults, sockets
from streamlab.web.channel import GuardedHTTPChannel
from streamlab.web.errors import write_error
from streamlab.web.site import method_not_allowed

log = Logger()


def _idle_step(idle: float) -> float:
    """How often the idle timeout looks at the socket: 1/40 of it (so it fires within
    2.5 %), at most every 0.25 s, at least every 20 ms."""
    return min(0.25, max(0.02, idle / 40.0))


class _NotFoundLeaf(Resource):
    isLeaf = True

    def render(self, request: IRequest) -> bytes:
        request.setHeader(b"access-control-allow-origin", b"*")
        return write_error(request, NotFound("not found", detail="session ports serve /go-live/... only"))


class _MethodLeaf(Resource):
    isLeaf = True

    def render(self, request: IRequest) -> bytes:
        request.setHeader(b"access-control-allow-origin", b"*")
        return method_not_allowed(request, (b"GET", b"HEAD"))


class SessionRoot(Resource):
    """``/go-live`` -> the shared origin resource; anything else -> JSON 404."""

    def __init__(self, origin: IResource | Callable[[], IResource | None] | None) -> None:
        super().__init__()
        self._origin = origin

    def getChild(self, path: bytes, request: IRequest) -> IResource:  # noqa: N802
        if request.method not in (b"GET", b"HEAD", b"OPTIONS"):  # media only: no control calls
            return _MethodLeaf()
        if path == b"go-live" and request.postpath[:1] != [b"api"]:
            origin = self._origin
            if origin is not None and not IResource.providedBy(origin):
                origin = origin()
            if origin is not None:
                return origin
        return _NotFoundLeaf()

    def render(self, request: IRequest) -> bytes:
        return _NotFoundLeaf().render(request)


class SessionChannel(GuardedHTTPChannel):
    """HTTPChannel that remembers when it was accepted and tells its request when the
    transport stops/starts accepting data (the idle-timeout signal)."""

    accepted_at = 0.0
    requests_started = 0
    client_ip: str | None = None

    def connectionMade(self) -> None:
        site = self.site
        self.accepted_at = site.clock.seconds()
        super().connectionMade()
        session = site.session
        session.channels.add(self)
        session.latest_transport = self.transport
        site.hooks.connection_opened(session, self)

    def connectionLost(self, reason: Failure) -> None:
        self.site.session.channels.discard(self)
        super().connectionLost(reason)

    def pauseProducing(self) -> None:
        super().pauseProducing()
        if self.requests:
            req = self.requests[0]
            if isinstance(req, SessionRequest):
                req.transport_paused()

    def resumeProducing(self) -> None:
        super().resumeProducing()
        if self.requests:
            req = self.requests[0]
            if isinstance(req, SessionRequest):
                req.transport_resumed()


class SessionSite(server.Site):
    """The Site of one session port."""

    def __init__(self, session: Any, origin: IResource | None, clock: Any, hooks: Any, settings: Any) -> None:
        super().__init__(SessionRoot(origin), requestFactory=SessionRequest, reactor=clock)
        self.session = session
        self.clock = clock
        self.hooks = hooks
        self.settings = settings
        self.displayTracebacks = False
        self.timeOut = 120

    def protocol(self) -> Any:  # the Factory calls self.protocol()
        return _GenericHTTPChannelProtocol(SessionChannel())

    def log(self, request: object) -> None:  # noqa: D102 - no access log (the network log covers it)
        pass

    def abort_all(self) -> None:
        """Abort every open connection of this port."""
        for channel in list(self.session.channels):
            transport = getattr(channel, "transport", None)
            if transport is not None:
                try:
                    transport.abortConnection()
                except Exception:  # noqa: BLE001 - already closing
                    pass


class SessionRequest(server.Request):
    """A request through the fault layer (see the module docstring)."""

    # fault-layer state (class defaults keep __init__ cheap)
    _t_arrived: float | None = None
    _t_first: float | None = None
    _t_last: float | None = None
    _kind = "other"
    _rel = ""
    _fault: Any = None
    _fault_category = ""
    _fault_type = ""
    _fault_action = ""
    _dead = False
    _cut_at: int | None = None
    _corrupt = False
    _buffer: list[bytes] | None = None
    _logged = False
    _body_bytes = 0
    _status_seen = 0
    _action: Any = None
    _active_timer: IDelayedCall | None = None
    _idle_timer: IDelayedCall | None = None
    _idle_timeout = 0.0
    _idle_since: float | None = None
    _idle_progress = -1
    _undelivered: int | None = None
    _shaper_delay = 0.0
    _counted_active = False
    _draining = False
    _drain_timer: IDelayedCall | None = None
    _transport_ref: Any = None
    _inflight: Any = None

    # ------------------------------------------------------------------ entry

    def process(self) -> None:
        inflight = getattr(self.channel.site.hooks, "inflight", None)
        if inflight is not None:
            # the graceful stop waits for it (finished, aborted or cut at the grace time)
            inflight.begin()
            self._inflight = inflight
            self.notifyFinish().addBoth(lambda _: self._leave_inflight())
        try:
            handled = self._fault_layer()
        except Exception:  # noqa: BLE001 - a bug in the layer must not take the stream down
            log.failure("session fault layer failed on {uri}", uri=self.uri)
            handled = self._dead or self.finished or self.startedWriting
        if not handled:
            server.Request.process(self)

    def _fault_layer(self) -> bool:
        """Count, classify, decide and apply; True when the request is already handled."""
        site: SessionSite = self.channel.site
        session = site.session
        clock = site.clock
        now = clock.seconds()
        # The userspace shaper may have held the request (its one-way delay): the
        # request reached the socket that much earlier, and the log's timings count it.
        held = sockets.shaper_hold(getattr(self.channel, "transport", None))
        self._shaper_delay = held
        session.shaper_delay_ms = round(held * 1000.0, 3)
        self._t_arrived = now - held
        self._session = session
        self._site = site
        channel = self.channel
        self._transport_ref = getattr(channel, "transport", None)
        if getattr(channel, "requests_started", 1) == 0:
            self._accepted_at = channel.accepted_at
        if hasattr(channel, "requests_started"):
            channel.requests_started += 1
        session.in_flight += 1
        self._counted_active = True
        path = unquote(self.path.decode("latin-1").split("?", 1)[0])
        self._rel = path
        kind = site.hooks.classify(path)
        self._kind = kind
        url = self.uri.decode("latin-1")
        site.hooks.request_arrived(session, self, kind, url, path, now)
        decision = None
        if path.startswith("/go-live/"):
            try:
                decision = session.engine.decide(kind, path, now)
            except Exception:  # noqa: BLE001 - a broken rule must not break serving
                log.failure("fault engine failed")
        site.hooks.after_decide(session, decision is not None)
        self._arm_timeouts(session, kind)
        if decision is not None:
            self._fault = decision
            self._fault_type = decision.fault_type
            self._fault_category = decision.category
            stage = getattr(decision, "stage", None)
            action = getattr(decision, "action", "") or ""
            self._fault_action = f"{stage}_{action}" if stage else action
            site.hooks.fault(session, decision.fault_type)
            if self._apply_fault(decision):
                return True
        if kind == "master_manifest" and self.method == b"GET":
            self._buffer = []
        elif kind == "manifest" and self.method == b"GET" \
                and session.controls.values.get("manifest_fault_type", "none") != "none":
            self._buffer = []                # only while a manifest fault is set
        return False

    def _apply_fault(self, d: Any) -> bool:
        """Carry out *d*; True when the origin must not be asked."""
        status = getattr(d, "status", None)
        if status:
            self._respond_status(int(status), d.fault_type, faults.status_body(d), d.retry_after)
            return True
        stage = getattr(d, "stage", "") or ""
        if stage == "connect":
            self._go_dead()
            self._start_action(d.action, drain=False)
            return True
        if stage == "first_byte":
            self.setResponseCode(200)
            self.setHeader(b"content-type", _guess_type(self._rel))
            self.setHeader(b"access-control-allow-origin", b"*")
            self.responseHeaders.removeHeader(b"content-length")
            self.write(b"")  # status line + headers, chunked (no length)
            self._go_dead()
            self._start_action(d.action, drain=True)
            return True
        if stage == "body":
            self._cut_at = self._site.settings.socket_body_bytes
            return False
        if d.fault_type == "corrupted":
            self._corrupt = True
            return False
        return False

    def _respond_status(self, status: int, fault_type: str, body: bytes | None = None,
                        retry_after: int | None = None) -> None:
        if body is None:
            body = faults.fault_body(status, fault_type)
        self.setResponseCode(status)
        self.setHeader(b"content-type", b"application/json")
        self.setHeader(b"access-control-allow-origin", b"*")
        self.setHeader(b"cache-control", b"no-cache, no-store, must-revalidate")
        if status == 429:
            self.setHeader(b"retry-after", str(retry_after or 1).encode())
        self.setHeader(b"content-length", str(len(body)).encode())
        self.write(body)
        self.finish()

    # ------------------------------------------------------------------ fault mechanics

    def _go_dead(self) -> None:
        """From now on nothing the origin does reaches the client."""
        self._dead = True
        self._stop_origin()

    def _leave_inflight(self) -> None:
        inflight, self._inflight = self._inflight, None
        if inflight is not None:
            inflight.end()

    def _stop_origin(self) -> None:
        """Tell the origin's producer (if any) to stop: its bytes will not be sent."""
        producer = self.producer
        if producer is not None:
            try:
                producer.stopProducing()
            except Exception:  # noqa: BLE001 - a producer failing to stop must not break the fault
                pass

    def _start_action(self, action: str, drain: bool) -> None:
        transport = self._transport_ref
        if transport is None:
            return
        settings = self._site.settings
        self._action = sockets.SocketAction(
            self._site.clock, transport, action or "reset", hang_seconds=settings.socket_hang_seconds,
            delay_seconds=settings.socket_delay_seconds, drain=drain)
        self._action.start()
        if self._action.action in ("hang", "delayed"):
            # Log now: the connection may stay open for a long time.  No answer is coming,
            # so a graceful stop has nothing to wait for either.
            self._done(disconnected=False)
            self._leave_inflight()

    def _arm_timeouts(self, session: Any, kind: str) -> None:
        active, idle = faults.transfer_timeouts(session.controls.values, kind)
        clock = self._site.clock
        if active > 0:
            self._active_timer = clock.callLater(active, self._active_timeout)
        if idle > 0:
            self._idle_timeout = float(idle)
            self._idle_timer = clock.callLater(_idle_step(self._idle_timeout), self._idle_check)

    def _active_timeout(self) -> None:
        self._active_timer = None
        if self._dead or self._disconnected or (self.finished and not self._draining):
            return
        self._timeout_fault("transfer_active_timeout")

    def _timeout_fault(self, name: str) -> None:
        self._fault_type = name
        self._fault_category = "transfer_timeout"
        kind = name[len("transfer_"):]
        self._site.hooks.fault(self._session, name)
        self._cancel_timers()
        if not self.startedWriting:
            self._fault_action = kind
            self._buffer = None
            self._cut_at = None
            self._corrupt = False
            self._stop_origin()
            self._respond_status(504, "timeout")
            self._dead = True
        else:
            self._fault_action = kind
            was_finished = self.finished
            self._draining = False
            self._note_undelivered()
            self._go_dead()
            transport = self._transport_ref
            if transport is not None:
                transport.abortConnection()
            if was_finished:
                self._done(disconnected=False)

    def transport_paused(self) -> None:
        """The client's socket is full (it is not reading)."""
        if self._idle_since is None:
            self._idle_since = self._site.clock.seconds()

    def transport_resumed(self) -> None:
        """The client drained its socket."""
        self._idle_since = None

    def _idle_check(self) -> None:
        """Cut when bytes wait for the client and it has taken none for the idle timeout.

        Progress is what the client's TCP acknowledged (TCP_INFO), not what was written:
        bytes moving from the userspace shaper's queue into the socket buffers are not
        progress, and neither is the origin filling that queue.  Nothing waiting (the
        origin is slow, not the client) is never idle."""
        self._idle_timer = None
        if self._dead or self._disconnected or (self.finished and not self._draining):
            return
        clock = self._site.clock
        now = clock.seconds()
        transport = self._transport_ref
        pending = sockets.pending_bytes(transport) if transport is not None else 0
        acked = sockets.acked_bytes(transport) if transport is not None else None
        progress = acked if acked is not None else self._body_bytes - pending
        if pending <= 0 or progress > self._idle_progress:
            # Either nothing is waiting for the client, or it took some bytes.
            self._idle_progress = max(self._idle_progress, progress)
            self._idle_since = now
        elif self._idle_since is None:
            self._idle_since = now
        if self.startedWriting and pending > 0 and now - self._idle_since >= self._idle_timeout - 1e-6:
            self._timeout_fault("transfer_idle_timeout")
            return
        self._idle_timer = clock.callLater(_idle_step(self._idle_timeout), self._idle_check)

    def _note_undelivered(self) -> None:
        """Before the connection is cut: how many body bytes will never reach the client
        (still queued in user space — shaper, TLS, Twisted — or not yet transmitted by
        the kernel, which a reset discards; transmitted bytes still arrive)."""
        if self._undelivered is not None:
            return
        transport = self._transport_ref
        if transport is None:
            self._undelivered = 0
            return
        waiting = sockets.pending_user_bytes(transport) + sockets.kernel_not_sent_bytes(transport)
        self._undelivered = max(0, min(self._body_bytes, waiting))

    def _cancel_timers(self) -> None:
        for name in ("_active_timer", "_idle_timer", "_drain_timer"):
            timer = getattr(self, name)
            if timer is not None and timer.active():
                timer.cancel()
            setattr(self, name, None)

    # ------------------------------------------------------------------ write path

    def write(self, data: bytes) -> None:
        if self._dead:
            return
        if self._buffer is not None:
            self._buffer.append(data)
            return
        if self._t_first is None:
            self._t_first = self._site.clock.seconds() if self._t_arrived is not None else None
            self._status_seen = self.code
        cut = self._cut_at
        if cut is not None:
            remaining = cut - self._body_bytes
            if len(data) >= remaining:
                data = data[:remaining]
                self._body_bytes += len(data)
                if self._t_arrived is not None:
                    self._session.on_bytes(len(data))
                server.Request.write(self, data)
                self._cut_now()
                return
        if self._corrupt and data:
            data = bytes(len(data))
        n = len(data)
        self._body_bytes += n
        if self._t_arrived is not None:
            self._session.bytes_out_total += n
        server.Request.write(self, data)

    def _cut_now(self) -> None:
        self._t_last = self._site.clock.seconds()
        self._go_dead()
        self._start_action(getattr(self._fault, "action", "reset"), drain=True)

    def finish(self) -> None:
        if self._dead:
            if self._cut_at is not None and self._action is None and not self._disconnected:
                self._cut_now()
            return
        if self._cut_at is not None and not self._disconnected:
            # Shorter body than socket_body_bytes: send it all, then the socket action.
            self._cut_now()
            return
        if self._buffer is not None:
            self._flush_master()
        if self._t_arrived is not None:
            now = self._site.clock.seconds()
            self._t_last = now
            if self._t_first is None:
                self._t_first = now
        server.Request.finish(self)
        if self._t_arrived is None:
            return
        transport = self._transport_ref
        if (self._active_timer is not None or self._idle_timer is not None) and transport is not None \
                and sockets.pending_bytes(transport) > 0:
            # Written, but still in the socket buffers: the timeouts keep watching until the
            # client has taken it all.
            self._draining = True
            self._drain_timer = self._site.clock.callLater(0.05, self._drain_poll)
            return
        self._cancel_timers()
        self._done(disconnected=False)

    def _drain_poll(self) -> None:
        self._drain_timer = None
        if self._dead or self._logged:
            return
        if self._transport_ref is None or sockets.pending_bytes(self._transport_ref) <= 0:
            self._draining = False
            self._cancel_timers()
            self._done(disconnected=False)
            return
        self._drain_timer = self._site.clock.callLater(0.05, self._drain_poll)

    def _flush_master(self) -> None:
        chunks, self._buffer = self._buffer, None
        body = b"".join(chunks or [])
        if self.code == 200 and body:
            if self._kind == "master_manifest":
                try:
                    body = self._site.hooks.rewrite_master(self._session, self._rel, body)
                except Exception:  # noqa: BLE001 - never break a master over a rewrite bug
                    log.failure("master rewrite failed")
            if self._session.controls.values.get("manifest_fault_type", "none") != "none":
                body = self._manifest_fault(body)
            self.setHeader(b"content-length", str(len(body)).encode())
        if body:
            self.write(body)

    def _manifest_fault(self, body: bytes) -> bytes:
        """Apply the session's manifest fault (docs/manifest-faults.md); the log entry
        names it (category ``manifest``) unless another fault already touched the request."""
        try:
            body, applied = self._site.hooks.manifest_fault(self._session, self._kind, self._rel, body)
        except Exception:  # noqa: BLE001 - never break a playlist over a fault bug
            log.failure("manifest fault failed")
            return body
        if applied and not self._fault_type:
            self._fault_type, self._fault_category, self._fault_action = applied, "manifest", "rewrite"
            self._site.hooks.fault(self._session, applied)
        return body

    def connectionLost(self, reason: Failure) -> None:
        if self._t_arrived is not None and not self._logged and (not self.finished or self._draining):
            self._note_undelivered()  # the client left mid-body: what it never got
        super().connectionLost(reason)
        if self._t_arrived is None:
            return
        self._cancel_timers()
        if self._action is not None and self._action.action != "reset" and not self._action.done:
            self._action.cancel()
        self._done(disconnected=True)

    def _done(self, disconnected: bool) -> None:
        if self._logged:
            return
        self._logged = True
        session = self._session
        if self._counted_active:
            self._counted_active = False
            session.in_flight -= 1
        now = self._site.clock.seconds()
        if disconnected and not self._fault_category and not self.finished:
            self._fault_category = "client_disconnect"
            self._fault_action = "client_disconnect"
        if self._undelivered:
            # counted when written; these bytes never left for the client
            session.bytes_out_total = max(0, session.bytes_out_total - self._undelivered)
        try:
            self._site.hooks.request_done(session, self, now)
        except Exception:  # noqa: BLE001 - logging must never break the response path
            log.failure("network log entry failed")

    # ------------------------------------------------------------------ log data

    def log_fields(self, now: float) -> dict[str, Any]:
        """The raw measurements of this request for the network log."""
        channel_accept = getattr(self, "_accepted_at", None)
        arrived = self._t_arrived or now
        first = self._t_first
        last = self._t_last or (now if first is not None else None)
        status = self._status_seen if first is not None else 0
        if first is None and self.startedWriting:
            status = self.code
        content_type = (self.responseHeaders.getRawHeaders(b"content-type") or [b""])[0].decode("latin-1")
        length = 0
        if self.content is not None:
            try:
                length = len(self.content.getbuffer()) if hasattr(self.content, "getbuffer") else 0
            except (ValueError, AttributeError):
                length = 0
        return {
            "arrived": arrived,
            "accepted": channel_accept,
            "first": first,
            "last": last,
            "method": self.method.decode("latin-1"),
            "url": self.uri.decode("latin-1"),
            "path": self._rel,
            "kind": self._kind,
            "status": status,
            "bytes_in": length + len(self.uri) + 16 + sum(
                len(k) + len(v) + 4 for k, vs in self.requestHeaders.getAllRawHeaders() for v in vs),
            "bytes_out": self._body_bytes - (self._undelivered or 0),
            "content_type": content_type,
            "range": (self.getHeader(b"range") or b"").decode("latin-1"),
            "fault_type": self._fault_type,
            "fault_action": self._fault_action,
            "fault_category": self._fault_category,
            "shaper_delay_ms": round(self._shaper_delay * 1000.0, 3),
        }
