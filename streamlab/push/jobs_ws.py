"""``WS /api/jobs/{id}/stream``: a job's log so far, then live log/progress/end frames.

Text frames, each one JSON object::

    {"type": "log", "line": "..."}
    {"type": "progress", "progress": 42.5, "stage": "encode 720p h264 (3/6)", "status": "encoding"}
    {"type": "end", "status": "complete", "error": null}

After ``end`` the server closes normally (1000).  An unknown job is closed with code
4404.  Live frames come from the event bus topic ``job.<id>``; log lines carry their line
number there, so lines already sent from the log file are not repeated.  Each client has
a bounded queue: while its transport is full, log frames queue up to ``max_queued``
(older ones are dropped and the client is told how many), progress frames coalesce.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable
from typing import Any

from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from zope.interface import implementer

from streamlab.errors import NotFound
from streamlab.interfaces import IEventBus, IJobQueue

log = Logger()

CLOSE_UNKNOWN_JOB = 4404
MAX_QUEUED = 2000


@implementer(IPushProducer)
class _Flow:
    """Push producer registered on the socket: tells the protocol when to hold frames."""

    def __init__(self, proto: JobStreamProtocol) -> None:
        self.proto = proto

    def pauseProducing(self) -> None:
        self.proto.paused = True

    def resumeProducing(self) -> None:
        self.proto.paused = False
        self.proto.flush()

    def stopProducing(self) -> None:
        self.proto.paused = True


class JobStreamProtocol(WebSocketServerProtocol):
    """One client of one job's stream."""

    factory: JobStreamFactory

    def __init__(self) -> None:
        super().__init__()
        self.paused = False
        self._queue: deque[dict[str, Any]] = deque()
        self._dropped = 0
        self._loading = True
        self._pending: deque[dict[str, Any]] = deque(maxlen=MAX_QUEUED)
        self._history = 0
        self._unsub: Callable[[], None] | None = None
        self._ended = False

    def onOpen(self) -> None:
        jobs, job_id = self.factory.jobs, self.factory.job_id
        try:
            jobs.get(job_id)
        except NotFound:
            self.sendClose(code=CLOSE_UNKNOWN_JOB, reason="job not found")
            return
        try:
            self.transport.unregisterProducer()
        except Exception:  # noqa: BLE001, S110 - no producer registered
            pass
        try:
            self.transport.registerProducer(_Flow(self), True)
        except Exception:  # noqa: BLE001 - backpressure is best effort
            log.debug("job stream: cannot register producer")
        self._unsub = self.factory.bus.subscribe(f"job.{job_id}", self._event)
        d = jobs.log_lines(job_id)
        d.addCallbacks(self._replay, self._replay_failed)

    def _replay_failed(self, failure: Any) -> None:
        log.failure("job stream: reading the log failed", failure)
        self._replay([])

    def _replay(self, lines: list[str]) -> None:
        self._history = len(lines)
        for line in lines:
            self._send({"type": "log", "line": line})
        self._loading = False
        try:
            job = self.factory.jobs.get(self.factory.job_id)
        except NotFound:
            self._send({"type": "end", "status": "deleted", "error": "job deleted"})
            return
        pending, self._pending = list(self._pending), deque(maxlen=MAX_QUEUED)
        ended = [e for e in pending if e.get("type") == "end"]
        for event in pending:
            if event.get("type") != "end":
                self._event(event)
        self._send({"type": "progress", "progress": job["progress"], "stage": job["stage"],
                    "status": job["status"]})
        if job["status"] in ("complete", "failed", "cancelled") or ended:
            self._event({"type": "end", "status": job["status"], "error": job["error"]})

    def _event(self, event: dict[str, Any]) -> None:
        if self._ended:
            return
        if self._loading:
            self._pending.append(event)
            return
        if event.get("type") == "log":
            if event.get("seq", 0) and event["seq"] <= self._history:
                return
            self._send({"type": "log", "line": event["line"]})
        elif event.get("type") == "progress":
            self._send({k: event[k] for k in ("type", "progress", "stage", "status") if k in event})
        elif event.get("type") == "end":
            self._send({"type": "end", "status": event.get("status"), "error": event.get("error")})
            self._ended = True
            self._finish()

    def _send(self, frame: dict[str, Any]) -> None:
        if not self.paused and not self._queue:
            self.sendMessage(json.dumps(frame, separators=(",", ":")).encode(), isBinary=False)
            return
        if frame["type"] == "progress" and self._queue and self._queue[-1]["type"] == "progress":
            self._queue[-1] = frame
            return
        if len(self._queue) >= MAX_QUEUED:
            self._queue.popleft()
            self._dropped += 1
        self._queue.append(frame)

    def flush(self) -> None:
        """Send queued frames while the transport accepts them."""
        if self._dropped:
            dropped, self._dropped = self._dropped, 0
            note = {"type": "log", "line": f"[{dropped} frames dropped: client too slow]"}
            self.sendMessage(json.dumps(note).encode(), isBinary=False)
        while self._queue and not self.paused:
            frame = self._queue.popleft()
            self.sendMessage(json.dumps(frame, separators=(",", ":")).encode(), isBinary=False)
        if not self._queue and self._ended:
            self.sendClose(code=1000)

    def _finish(self) -> None:
        if self._unsub is not None:
            self._unsub()
            self._unsub = None
        if not self._queue:
            self.sendClose(code=1000)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:  # noqa: N803
        if self._unsub is not None:
            self._unsub()
            self._unsub = None
        self._queue.clear()


class JobStreamFactory(WebSocketServerFactory):
    """Factory for one job's stream (one per upgrade request)."""

    protocol = JobStreamProtocol

    def __init__(self, jobs: IJobQueue, bus: IEventBus, job_id: str) -> None:
        super().__init__()
        self.jobs = jobs
        self.bus = bus
        self.job_id = job_id
        self.setProtocolOptions(autoPingInterval=30, autoPingTimeout=30)


def job_stream_resource(jobs: IJobQueue, bus: IEventBus, job_id: str) -> WebSocketResource:
    """The resource that upgrades a request to the stream of *job_id*."""
    return WebSocketResource(JobStreamFactory(jobs, bus, job_id))
