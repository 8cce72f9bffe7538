"""The fault layer: one request on a session port.

A :class:`SessionRequest` is a ``twisted.web.server.Request`` that asks its session
(an :class:`~streamlab.proxy.exchange.ISessionExchange`) for a
:class:`~streamlab.proxy.exchange.Plan` when it arrives, carries the plan out (status
answer, socket fault, body cut, zeroed body, buffered playlist rewrite, transfer
timeouts), measures its own timings and, once over, hands the session one
:class:`~streamlab.proxy.exchange.ExchangeRecord`.

Its state is explicit (:mod:`streamlab.proxy.request_state`): a ``Phase`` (where the
response is), a ``BodyMode`` (what happens to body bytes on the way out), the
``FaultMark`` that touched it, its ``IdleWatch`` and the record once it is over.  The
data path stays thin: on an unfaulted segment ``write`` adds a few identity checks and
one counter call to Twisted's own path.  (Near 490 lines: one request's life is one
state machine, easier to follow in one file than spread over several; its states and
small values live in request_state.py.)
"""

from __future__ import annotations

import sys
from typing import Any
from urllib.parse import unquote

from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import server

from streamlab.mediatypes import url_content_type
from streamlab.proxy import faults, sockets
from streamlab.proxy.exchange import ExchangeRecord, ISessionExchange, Plan, RequestInfo
from streamlab.proxy.faults import FaultDecision
from streamlab.proxy.request_state import (
    CLIENT_GONE,
    METHODS,
    NO_FAULT,
    BodyMode,
    FaultMark,
    IdleWatch,
    Peer,
    Phase,
    query_arg,
)
from streamlab.shutdown import InFlight

__all__ = ["BodyMode", "FaultMark", "Phase", "SessionRequest"]

log = Logger()


class SessionRequest(server.Request):
    """A request through the fault layer (see the module docstring)."""

    # state (class defaults keep __init__ cheap)
    phase = Phase.NEW
    body_mode = BodyMode.PASS
    _plan: Plan | None = None
    _mark: FaultMark | None = None
    #: set once the request is over (``end`` was called)
    _record: ExchangeRecord | None = None
    #: the playlist body held for ``rewrite`` (None: not buffering)
    _buffer: list[bytes] | None = None
    _action: sockets.SocketAction | None = None
    # measurements
    _method = "GET"
    _url = ""
    _rel = ""
    _accepted_at: float | None = None
    _tls_done: float | None = None
    _t_arrived = 0.0
    _t_first: float | None = None
    _t_last: float | None = None
    _body_bytes = 0
    _status_seen = 0
    _undelivered: int | None = None
    _shaper_ms = 0.0
    # timers and the idle watch
    _active_timer: IDelayedCall | None = None
    _idle_timer: IDelayedCall | None = None
    _drain_timer: IDelayedCall | None = None
    _idle: IdleWatch | None = None
    _transport_ref: Any = None
    _inflight: InFlight | None = None
    #: set by the upstream relay (docs/upstream.md): ``{"failure", "ttfb_ms"}``
    upstream_log: dict[str, Any] | None = None

    # ------------------------------------------------------------------ entry

    def process(self) -> None:
        channel: Any = self.channel
        site = channel.site
        self._site = site
        self._exchange: ISessionExchange = site.exchange
        inflight = site.inflight
        if inflight is not None:
            # the graceful stop waits for it (finished, aborted or cut at the grace time):
            # it leaves in finish() or connectionLost()
            inflight.begin()
            self._inflight = inflight
        try:
            handled = self._begin(site)
        except Exception:  # noqa: BLE001 - a bug in the layer must not take the stream down
            log.failure("session fault layer failed on {uri}", uri=self.uri)
            handled = self.phase is Phase.CUT or bool(self.finished or self.startedWriting)
        if not handled:
            server.Request.process(self)

    def _begin(self, site: Any) -> bool:
        """Ask the session for a plan and start carrying it out; True when the request
        is already answered (the origin must not be asked)."""
        channel: Any = self.channel
        now = site.clock.seconds()
        transport = getattr(channel, "transport", None)
        self._transport_ref = transport
        started = getattr(channel, "requests_started", None)  # None: not a SessionChannel (h2)
        if started is not None:
            if started == 0:
                self._accepted_at = channel.accepted_at
                self._tls_done = channel.tls_done_at
            channel.requests_started = started + 1
        url = self.uri.decode("latin-1")
        path = url.split("?", 1)[0]
        if "%" in path:
            path = unquote(path)
        self._url, self._rel = url, path
        peer: Peer | None = getattr(channel, "peer", None)
        new_client = peer is None
        if peer is None:  # once per connection: X-Forwarded-For parsing is not free
            peer = Peer(self, site.settings.trusted_proxies)
            try:
                channel.peer = peer
            except AttributeError:
                pass
        # The userspace shaper may have held the request (its one-way delay): the
        # request reached the socket that much earlier, and the log's timings count it.
        shaper = peer.shaper
        held = float(shaper.held_for) if shaper is not None else 0.0
        if held:
            self._shaper_ms = round(held * 1000.0, 3)
        args = self.args
        # interned: every network-log entry of every session shares one string per value
        self._method = method = METHODS.get(self.method) or sys.intern(self.method.decode("latin-1"))
        info = RequestInfo(
            method, url, path, peer.ip, peer.user_agent,
            query_arg(args, b"play_id") if args else "", query_arg(args, b"attempt_id") if args else "",
            new_client, held)
        plan = self._exchange.begin(info, now)
        self._plan = plan
        self._t_arrived = now - held
        self.phase = Phase.SERVING
        if plan.active_timeout or plan.idle_timeout:
            self._arm_timeouts(plan)
        fault = plan.fault
        if fault is not None:
            self._mark = FaultMark(fault.fault_type, fault.category,
                                   f"{fault.stage}_{fault.action}" if fault.stage else fault.action)
            if self._apply_fault(fault):
                return True
        if plan.buffer_body:
            self._buffer = []
        return False

    def _apply_fault(self, d: FaultDecision) -> bool:
        """Carry out *d*; True when the origin must not be asked."""
        if d.status:
            self._respond_status(int(d.status), d.fault_type, faults.status_body(d), d.retry_after)
            return True
        if d.stage == "connect":
            self._cut()
            self._start_action(d.action, drain=False)
            return True
        if d.stage == "first_byte":
            self.setResponseCode(200)
            self.setHeader(b"content-type", url_content_type(self._rel))
            self.setHeader(b"access-control-allow-origin", b"*")
            self.responseHeaders.removeHeader(b"content-length")
            self.write(b"")  # status line + headers, chunked (no length)
            self._cut()
            self._start_action(d.action, drain=True)
            return True
        if d.stage == "body":
            self.body_mode = BodyMode.CUT_AFTER
        elif d.fault_type == "corrupted":
            self.body_mode = BodyMode.ZERO
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

    def _cut(self) -> None:
        """From now on nothing the origin does reaches the client."""
        self.phase = Phase.CUT
        producer = self.producer
        if producer is not None:  # its bytes will not be sent
            try:
                producer.stopProducing()
            except Exception:  # noqa: BLE001 - a producer failing to stop must not break the fault
                pass

    def _leave_inflight(self) -> None:
        inflight = self._inflight
        if inflight is not None:
            self._inflight = None
            inflight.end()

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
            # Record now: the connection may stay open for a long time.  No answer is
            # coming, so a graceful stop has nothing to wait for either.
            self._end(disconnected=False)
            self._leave_inflight()

    def _arm_timeouts(self, plan: Plan) -> None:
        clock = self._site.clock
        if plan.active_timeout > 0:
            self._active_timer = clock.callLater(plan.active_timeout, self._active_timeout)
        if plan.idle_timeout > 0:
            self._idle = IdleWatch(float(plan.idle_timeout))
            self._idle_timer = clock.callLater(self._idle.step, self._idle_check)

    def _watching(self) -> bool:
        """Whether the transfer timeouts still have something to watch."""
        return self.phase is not Phase.CUT and not self._disconnected \
            and (not self.finished or self.phase is Phase.DRAINING)

    def _active_timeout(self) -> None:
        self._active_timer = None
        if self._watching():
            self._timeout_fault("transfer_active_timeout")

    def _timeout_fault(self, name: str) -> None:
        self._mark = FaultMark(name, "transfer_timeout", name[len("transfer_"):])
        self._exchange.faulted(name)
        self._cancel_timers()
        if not self.startedWriting:
            self._buffer = None
            self.body_mode = BodyMode.PASS
            self._cut()
            self.phase = Phase.SERVING  # the 504 itself goes out
            self._respond_status(504, "timeout")
            self.phase = Phase.CUT
            return
        was_finished = self.finished
        self._note_undelivered()
        self._cut()
        transport = self._transport_ref
        if transport is not None:
            transport.abortConnection()
        if was_finished:
            self._end(disconnected=False)

    def transport_paused(self) -> None:
        """The client's socket is full (it is not reading)."""
        if self._idle is not None:
            self._idle.paused(self._site.clock.seconds())

    def transport_resumed(self) -> None:
        """The client drained its socket."""
        if self._idle is not None:
            self._idle.resumed()

    def _idle_check(self) -> None:
        """Cut when bytes wait for the client and it has taken none for the idle timeout
        (see :class:`~streamlab.proxy.request_state.IdleWatch`)."""
        self._idle_timer = None
        idle = self._idle
        if idle is None or not self._watching():
            return
        transport = self._transport_ref
        pending = sockets.pending_bytes(transport) if transport is not None else 0
        acked = sockets.acked_bytes(transport) if transport is not None else None
        now = self._site.clock.seconds()
        if idle.expired(now, pending, acked, self._body_bytes) and self.startedWriting:
            self._timeout_fault("transfer_idle_timeout")
            return
        self._idle_timer = self._site.clock.callLater(idle.step, self._idle_check)

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
        for timer in (self._active_timer, self._idle_timer, self._drain_timer):
            if timer is not None and timer.active():
                timer.cancel()
        self._active_timer = self._idle_timer = self._drain_timer = None

    # ------------------------------------------------------------------ write path

    def write(self, data: bytes) -> None:
        phase = self.phase
        if phase is Phase.CUT:
            return
        if self._buffer is not None:
            self._buffer.append(data)
            return
        if phase is Phase.NEW:
            self._body_bytes += len(data)
            server.Request.write(self, data)
            return
        if self._t_first is None:
            self._t_first = self._site.clock.seconds()
            self._status_seen = self.code
        mode = self.body_mode
        if mode is BodyMode.CUT_AFTER:
            remaining = self._site.settings.socket_body_bytes - self._body_bytes
            if len(data) >= remaining:
                data = data[:remaining]
                self._body_bytes += len(data)
                self._exchange.sent(len(data))
                server.Request.write(self, data)
                self._cut_now()
                return
        elif mode is BodyMode.ZERO and data:
            data = bytes(len(data))
        n = len(data)
        self._body_bytes += n
        self._exchange.sent(n)
        server.Request.write(self, data)

    def _cut_now(self) -> None:
        self._t_last = self._site.clock.seconds()
        self._cut()
        fault = self._plan.fault if self._plan is not None else None
        self._start_action(fault.action if fault is not None else "reset", drain=True)

    def finish(self) -> None:
        if self._buffer is not None and self.phase is Phase.SERVING:
            self._flush_buffer()
        phase = self.phase
        cutting = self.body_mode is BodyMode.CUT_AFTER and not self._disconnected
        if phase is Phase.CUT:
            if cutting and self._action is None:
                self._cut_now()
            return
        if cutting:
            # Shorter body than socket_body_bytes: send it all, then the socket action.
            self._cut_now()
            return
        if phase is Phase.NEW:
            server.Request.finish(self)
            self._leave_inflight()
            return
        now = self._site.clock.seconds()
        self._t_last = now
        if self._t_first is None:
            self._t_first = now
        server.Request.finish(self)
        self._leave_inflight()
        transport = self._transport_ref
        if (self._active_timer is not None or self._idle_timer is not None) and transport is not None \
                and sockets.pending_bytes(transport) > 0:
            # Written, but still in the socket buffers: the timeouts keep watching until the
            # client has taken it all.
            self.phase = Phase.DRAINING
            self._drain_timer = self._site.clock.callLater(0.05, self._drain_poll)
            return
        self.phase = Phase.DONE
        if self._active_timer is not None or self._idle_timer is not None:
            self._cancel_timers()
        self._end(disconnected=False)

    def _drain_poll(self) -> None:
        self._drain_timer = None
        if self.phase is not Phase.DRAINING or self._record is not None:
            return
        if self._transport_ref is None or sockets.pending_bytes(self._transport_ref) <= 0:
            self.phase = Phase.DONE
            self._cancel_timers()
            self._end(disconnected=False)
            return
        self._drain_timer = self._site.clock.callLater(0.05, self._drain_poll)

    def _flush_buffer(self) -> None:
        """Send the held playlist body, rewritten by the session (content edits and
        manifest fault; the log names a manifest fault unless another one touched the
        request)."""
        chunks, self._buffer = self._buffer, None
        body = b"".join(chunks or [])
        if self.code == 200 and body and self._plan is not None:
            applied = ""
            try:
                now = self._site.clock.seconds()
                body, applied = self._exchange.rewrite(self._plan, self._rel, body, now)
            except Exception:  # noqa: BLE001 - never break a playlist over a rewrite bug
                log.failure("playlist rewrite failed")
            if applied and self._mark is None:
                self._mark = FaultMark(applied, "manifest", "rewrite")
                self._exchange.faulted(applied)
            self.setHeader(b"content-length", str(len(body)).encode())
        if body:
            self.write(body)

    def connectionLost(self, reason: Failure) -> None:  # noqa: N802 - twisted API
        phase = self.phase
        if phase is not Phase.NEW and self._record is None and (not self.finished or phase is Phase.DRAINING):
            self._note_undelivered()  # the client left mid-body: what it never got
        super().connectionLost(reason)
        self._leave_inflight()
        if phase is Phase.NEW:
            return
        self._cancel_timers()
        if self._action is not None and self._action.action != "reset" and not self._action.done:
            self._action.cancel()
        self._end(disconnected=True)

    # ------------------------------------------------------------------ the record

    def _end(self, disconnected: bool) -> None:
        """Build the record and hand it to the session, once."""
        if self._record is not None or self._plan is None:
            return
        now = self._site.clock.seconds()
        mark = self._mark
        if mark is None and disconnected and not self.finished:
            mark = CLIENT_GONE
        first = self._t_first
        status = self._status_seen if first is not None else (self.code if self.startedWriting else 0)
        undelivered = self._undelivered or 0
        # one pass over the request headers (Twisted keeps canonical names): the request's
        # size, its Range, and whether it had a body
        req_headers = tuple(self.requestHeaders.getAllRawHeaders())
        bytes_in = len(self.uri) + 16
        rng = b""
        body = False
        for name, values in req_headers:
            for value in values:
                bytes_in += len(name) + len(value) + 4
            if name == b"Range":
                rng = values[-1]
            elif name == b"Content-Length" or name == b"Transfer-Encoding":
                body = True
        content = self.content
        if body and content is not None:
            try:
                bytes_in += len(content.getbuffer())
            except (ValueError, AttributeError):
                pass
        resp_headers = tuple(self.responseHeaders.getAllRawHeaders())
        ctype = ""
        for name, values in resp_headers:
            if name == b"Content-Type":
                ctype = sys.intern(values[0].decode("latin-1"))
                break
        up = self.upstream_log
        if mark is None:
            mark = NO_FAULT
        record = ExchangeRecord(
            self._plan.kind, self._method, self._url, self._rel, status, bytes_in,
            self._body_bytes - undelivered, undelivered, ctype, rng.decode("latin-1") if rng else "",
            self._accepted_at, self._t_arrived, first,
            self._t_last or (now if first is not None else None), now,
            mark.type, mark.category, mark.action, self._shaper_ms,
            (up.get("failure") or "") if up else "", up.get("ttfb_ms") if up else None, self._tls_done,
            req_headers, resp_headers if status else ())
        self._record = record
        try:
            self._exchange.end(record)
        except Exception:  # noqa: BLE001 - logging must never break the response path
            log.failure("network log entry failed")
