"""``/api/jobs/stream``: the job list as a throttled SSE snapshot feed.

Every ``jobs`` bus event (a job created/changed, or deleted — see
:mod:`streamlab.jobs.service`) marks the list dirty; connected clients get a full
``{"jobs": [...], "revision": n}`` snapshot at most every ``min_interval`` seconds, and a
``: keepalive`` comment after ``keepalive`` idle seconds.  Nothing is computed while no
client is connected.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import Service
from twisted.internet.interfaces import IReactorTime
from twisted.web.iweb import IRequest

from streamlab.interfaces import IEventBus, IJobQueue
from streamlab.push.sse import EventStream, SnapshotFeed


class JobsFeed(Service):
    """SSE fan-out of the job list of *jobs*."""

    name = "jobs-feed"

    def __init__(self, clock: IReactorTime, bus: IEventBus, jobs: IJobQueue, *, min_interval: float = 0.25,
                 keepalive: float = 15.0, max_buffer: int = 1 << 20) -> None:
        self.jobs = jobs
        self.stream = EventStream(clock, keepalive=keepalive, max_buffer=max_buffer)
        self.feed = SnapshotFeed(clock, self.stream, "jobs", "jobs", lambda: self.jobs.list(),
                                 lambda: False, min_interval=min_interval)
        self._unsubscribe = bus.subscribe("jobs", self._on_event)

    def _on_event(self, _event: Any) -> None:
        self.feed.changed()

    def attach(self, request: IRequest) -> Any:
        """Make *request* a client: the full list now, then updates (NOT_DONE_YET)."""
        return self.feed.attach(request)

    def stopService(self) -> Any:  # noqa: N802 - twisted API
        """Finish every client and cancel the timers."""
        self.feed.stop()
        self.stream.close()
        return super().stopService()
