"""Server-Sent Events: streams with bounded per-client buffers, keepalives, and a
throttled snapshot feed.

* :class:`EventStream` — a set of SSE clients.  ``attach(request, initial)`` turns a
  request into a client; ``publish(event, data)`` writes to every client.  Each client
  is a push producer on its request: while the transport says "full" its events are
  queued, and a client whose queue passes ``max_buffer`` bytes is dropped — a slow
  reader never slows the daemon.  A ``: keepalive`` comment goes to every client that
  got nothing for ``keepalive`` seconds.
* :class:`SnapshotFeed` — publishes a full snapshot ``{"<key>": [...], "revision": n}``
  on change (urgent changes at once, others at most every ``min_interval``), and at
  least every ``heartbeat`` seconds while ``active()`` is true.

The sessions stream (only what changed is serialised or sent) is
:class:`streamlab.push.sessions_feed.SessionsFeed`.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.logger import Logger
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer

log = Logger()


def encode_event(event: str | None, data: Any, event_id: str | int | None = None) -> bytes:
    """One SSE frame; *data* that is not a string is JSON-encoded."""
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    parts = []
    if event_id is not None:
        parts.append(f"id: {event_id}")
    if event:
        parts.append(f"event: {event}")
    parts.extend(f"data: {line}" for line in text.split("\n"))
    return ("\n".join(parts) + "\n\n").encode()


@implementer(IPushProducer)
class SSEClient:
    """One connected SSE client (a push producer registered on its request)."""

    def __init__(self, stream: EventStream, request: IRequest, max_buffer: int) -> None:
        self.stream = stream
        self.request = request
        self.max_buffer = max_buffer
        self.paused = False
        self.closed = False
        self._queue: deque[bytes] = deque()
        self._queued = 0
        self.last_write = stream.clock.seconds()
        self.sent_events = 0

    # IPushProducer
    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        while self._queue and not self.paused and not self.closed:
            chunk = self._queue.popleft()
            self._queued -= len(chunk)
            self._write(chunk)

    def stopProducing(self) -> None:
        self.close()

    def send(self, frame: bytes) -> bool:
        """Queue or write *frame*; False (and the client dropped) when it fell behind."""
        if self.closed:
            return False
        if self.paused or self._queue:
            self._queue.append(frame)
            self._queued += len(frame)
            if self._queued > self.max_buffer:
                log.info("dropping slow SSE client ({n} bytes queued)", n=self._queued)
                self.drop()
                return False
            return True
        self._write(frame)
        return True

    def _write(self, frame: bytes) -> None:
        self.last_write = self.stream.clock.seconds()
        self.sent_events += 1
        try:
            self.request.write(frame)
        except Exception:  # noqa: BLE001 - the connection went away under us
            self.close()

    def drop(self) -> None:
        """Cut a client that fell behind."""
        transport = getattr(self.request, "transport", None) or getattr(
            getattr(self.request, "channel", None), "transport", None)
        self.close()
        if transport is not None:
            abort = getattr(transport, "abortConnection", None) or transport.loseConnection
            abort()

    def close(self) -> None:
        """Forget the client (it disconnected or was dropped)."""
        if self.closed:
            return
        self.closed = True
        self._queue.clear()
        self._queued = 0
        self.stream._forget(self)

    def finish(self) -> None:
        """End the stream cleanly (server side)."""
        if self.closed:
            return
        request: Any = self.request
        self.close()
        try:
            request.unregisterProducer()
            request.finish()
        except Exception:  # noqa: BLE001 - already gone
            pass


class EventStream:
    """A fan-out of SSE frames to many clients, with bounded buffers and keepalives."""

    def __init__(self, clock: IReactorTime, keepalive: float = 15.0, max_buffer: int = 1 << 20) -> None:
        self.clock = clock
        self.keepalive = keepalive
        self.max_buffer = max_buffer
        self.clients: list[SSEClient] = []
        self._ka_timer: IDelayedCall | None = None
        self.dropped = 0

    def attach(self, req: IRequest, initial: Iterable[bytes] = ()) -> Any:
        """Make *req* an SSE client; write *initial* frames; return NOT_DONE_YET."""
        request: Any = req  # a twisted.web Request (IRequest lacks the producer methods)
        request.setResponseCode(200)
        request.setHeader(b"content-type", b"text/event-stream; charset=utf-8")
        request.setHeader(b"cache-control", b"no-cache, no-store, must-revalidate")
        request.setHeader(b"x-accel-buffering", b"no")
        request.setHeader(b"access-control-allow-origin", b"*")
        client = SSEClient(self, request, self.max_buffer)
        self.clients.append(client)
        request.registerProducer(client, True)
        request.notifyFinish().addBoth(lambda _: client.close())
        client._write(b": stream open\n\n")
        for frame in initial:
            client.send(frame)
        self._arm_keepalive()
        return NOT_DONE_YET

    def publish(self, event: str | None, data: Any, event_id: str | int | None = None) -> None:
        """Send one event to every client."""
        if not self.clients:
            return
        frame = encode_event(event, data, event_id)
        for client in list(self.clients):
            client.send(frame)

    def send_frame(self, frame: bytes) -> None:
        """Send a pre-encoded frame to every client."""
        for client in list(self.clients):
            client.send(frame)

    def close(self) -> None:
        """Finish every client (e.g. the session went away, daemon stop)."""
        for client in list(self.clients):
            client.finish()
        if self._ka_timer is not None and self._ka_timer.active():
            self._ka_timer.cancel()
        self._ka_timer = None

    def _forget(self, client: SSEClient) -> None:
        try:
            self.clients.remove(client)
        except ValueError:
            pass

    def _arm_keepalive(self) -> None:
        if self._ka_timer is None or not self._ka_timer.active():
            self._ka_timer = self.clock.callLater(self.keepalive, self._tick_keepalive)

    def _tick_keepalive(self) -> None:
        self._ka_timer = None
        try:
            now = self.clock.seconds()
            for client in list(self.clients):
                if now - client.last_write >= self.keepalive - 1e-6:
                    client.send(b": keepalive\n\n")
        except Exception:  # noqa: BLE001 - periodic tasks survive their errors
            log.failure("SSE keepalive failed")
        if self.clients:
            # Next check when the least recently written client is due.
            oldest = min(c.last_write for c in self.clients)
            delay = max(0.05, oldest + self.keepalive - self.clock.seconds())
            self._ka_timer = self.clock.callLater(delay, self._tick_keepalive)


class FlushSchedule:
    """When a snapshot feed sends next: at once for an urgent change, at most every
    *min_interval* for others, and a heartbeat *heartbeat* seconds after the last send
    while the feed is active.  One timer; *flush* is called when it fires (and must call
    :meth:`sent`)."""

    def __init__(self, clock: IReactorTime, flush: Callable[[], None], min_interval: float,
                 heartbeat: float) -> None:
        self.clock = clock
        self._flush = flush
        self.min_interval = min_interval
        self.heartbeat = heartbeat
        self.last_emit = float("-inf")
        self._timer: IDelayedCall | None = None
        self._timer_at = float("inf")

    def poke(self, urgent: bool) -> None:
        """Something changed: send now (*urgent*) or once the interval allows."""
        now = self.clock.seconds()
        self._at(now if urgent else max(now, self.last_emit + self.min_interval))

    def heartbeat_if(self, due: bool) -> None:
        """Schedule the next heartbeat when *due* (someone listens to an active feed)."""
        if due:
            now = self.clock.seconds()
            base = self.last_emit if self.last_emit > float("-inf") else now
            self._at(max(now, base + self.heartbeat))

    def sent(self, now: float) -> None:
        """The feed sent at *now*."""
        self.last_emit = now

    def stop(self) -> None:
        """Cancel the timer."""
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _at(self, at: float) -> None:
        if self._timer is not None and self._timer.active():
            if self._timer_at <= at:
                return
            self._timer.cancel()
        self._timer_at = at
        self._timer = self.clock.callLater(max(0.0, at - self.clock.seconds()), self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._timer_at = float("inf")
        self._flush()


class SnapshotFeed:
    """Full-snapshot SSE feed with throttling and heartbeat.

    *snapshot()* returns the list; *active()* says whether heartbeats are due (e.g. any
    session alive).  ``changed(urgent=True)`` flushes at once (same reactor turn);
    ``changed()`` at most every *min_interval*.
    """

    def __init__(self, clock: IReactorTime, stream: EventStream, key: str, event: str,
                 snapshot: Callable[[], list[Any]], active: Callable[[], bool],
                 min_interval: float = 0.25, heartbeat: float = 1.0) -> None:
        self.clock = clock
        self.stream = stream
        self.key = key
        self.event = event
        self._snapshot = snapshot
        self._active = active
        self.schedule = FlushSchedule(clock, self._flush, min_interval, heartbeat)
        self.revision = 0
        self._dirty = False

    def frame(self) -> bytes:
        """The current snapshot as one SSE frame (bumps the revision)."""
        self.revision += 1
        return encode_event(self.event, {self.key: self._snapshot(), "revision": self.revision})

    def attach(self, request: IRequest) -> Any:
        """A new client: one full snapshot now, then updates."""
        result = self.stream.attach(request, [self.frame()])
        self.schedule.heartbeat_if(bool(self.stream.clients) and self._active())
        return result

    def changed(self, urgent: bool = False) -> None:
        """Something in the snapshot changed."""
        self._dirty = True
        if self.stream.clients:
            self.schedule.poke(urgent)

    def _flush(self) -> None:
        try:
            if self.stream.clients:
                self._dirty = False
                self.schedule.sent(self.clock.seconds())
                self.stream.send_frame(self.frame())
        except Exception:  # noqa: BLE001 - periodic tasks survive their errors
            log.failure("SSE snapshot failed")
        self.schedule.heartbeat_if(bool(self.stream.clients) and self._active())

    def stop(self) -> None:
        """Cancel timers."""
        self.schedule.stop()


class SSEResource(Resource):
    """A leaf resource attaching every GET to a callback returning NOT_DONE_YET."""

    isLeaf = True

    def __init__(self, attach: Callable[[IRequest], Any]) -> None:
        super().__init__()
        self._attach = attach

    def render_GET(self, request: IRequest) -> Any:  # noqa: N802
        return self._attach(request)
