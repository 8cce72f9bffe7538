"""Workers: per-content bookkeeping while a content item is being watched (streams.md §6).

A :class:`Worker` is created by the first request for a content item and records request
counts per stream kind, the last request time, the cost of every playlist/MPD render and
the *ticks* of each stream (an advance of the live edge seen by a render: every part for
LL streams, every 2 s / 6 s segment for the others).  :class:`WorkerRegistry` drops a
worker after ``idle_timeout`` seconds without requests, using one timer per worker on the
injected clock (re-armed lazily: a request only updates a timestamp), or on
:meth:`WorkerRegistry.stop`.

Timestamps come from the injected reactor clock; render durations are measured by the
caller with :func:`time.perf_counter` and passed in as milliseconds.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from streamlab.formats import iso_ms_or_none as iso

STATS_WINDOW = 300.0  # the "5m" of avg_*_5m
MAX_SAMPLES = 20000  # bound on samples kept per stream (LL at 5 ticks/s for 5 min = 1500)

#: request counter names (streams.md §6 "requests per stream kind")
REQUEST_KINDS = ("ll_hls", "hls_2s", "hls_6s", "ll_dash", "dash_2s", "dash_6s", "media", "other")
#: stream names, in status order
STREAM_NAMES = ("ll_hls", "hls_2s", "hls_6s", "ll_dash", "dash_2s", "dash_6s")


class _Window:
    """(time, value) samples over the last STATS_WINDOW seconds."""

    __slots__ = ("samples",)

    def __init__(self) -> None:
        self.samples: deque[tuple[float, float]] = deque(maxlen=MAX_SAMPLES)

    def add(self, at: float, value: float) -> None:
        self.samples.append((at, value))

    def average(self, now: float) -> float | None:
        while self.samples and self.samples[0][0] < now - STATS_WINDOW:
            self.samples.popleft()
        if not self.samples:
            return None
        return sum(v for _, v in self.samples) / len(self.samples)


class StreamStats:
    """Ticks and render cost of one stream (e.g. ``ll_hls``) of one worker."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.edge: Hashable | None = None
        self.last_tick_at: float | None = None
        self.tick_interval_ms: float | None = None
        self.ticks = _Window()
        self.last_render_ms: float | None = None
        self.renders = _Window()
        self.render_count = 0

    def observe(self, now: float, edge: Hashable, render_ms: float | None) -> bool:
        """Record one render at *now* that saw live edge *edge*; returns True on a tick."""
        if render_ms is not None:
            self.last_render_ms = render_ms
            self.renders.add(now, render_ms)
            self.render_count += 1
        if edge == self.edge:
            return False
        first = self.edge is None
        self.edge = edge
        if not first and self.last_tick_at is not None:
            interval = (now - self.last_tick_at) * 1000.0
            self.tick_interval_ms = interval
            self.ticks.add(now, interval)
        self.last_tick_at = now
        return not first

    def tick_stats(self, now: float) -> dict[str, Any]:
        """The tick/render fields of the tick-stats answers."""
        avg_tick = self.ticks.average(now)
        avg_render = self.renders.average(now)
        return {
            "last_tick_at": iso(self.last_tick_at),
            "tick_interval_ms": _round(self.tick_interval_ms),
            "avg_tick_interval_ms_5m": _round(avg_tick),
            "last_render_ms": _round(self.last_render_ms, 4),
            "avg_render_ms_5m": _round(avg_render, 4),
        }


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


class Worker:
    """Bookkeeping of one watched content item."""

    def __init__(self, content: str, now: float, idle_timeout: float) -> None:
        self.id = content
        self.content = content
        self.started_at = now
        self.last_request_at = now
        self.idle_timeout = idle_timeout
        self.requests: dict[str, int] = {k: 0 for k in REQUEST_KINDS}
        self.streams: dict[str, StreamStats] = {}
        self.variants: tuple[str, ...] = ()
        self.audio: tuple[str, ...] = ()
        self.timer: IDelayedCall | None = None

    def stream(self, name: str) -> StreamStats:
        """The stats of stream *name*, created on first use."""
        stats = self.streams.get(name)
        if stats is None:
            stats = self.streams[name] = StreamStats(name)
        return stats

    def to_json(self, now: float) -> dict[str, Any]:
        """One element of ``/go-live/api/status`` ``workers``."""
        streams = []
        for name in STREAM_NAMES:
            s = self.streams.get(name)
            if s is None:
                continue
            streams.append({
                "name": name,
                "variants": list(self.variants),
                "audio": list(self.audio),
                "last_tick_at": iso(s.last_tick_at),
                "avg_render_ms_5m": _round(s.renders.average(now), 4),
            })
        return {
            "id": self.id,
            "content": self.content,
            "started_at": iso(self.started_at),
            "last_request_at": iso(self.last_request_at),
            "idle_timeout_s": self.idle_timeout,
            "requests": dict(self.requests),
            "streams": streams,
        }


class WorkerRegistry:
    """All workers of the origin; one idle timer per worker on *clock*."""

    def __init__(self, clock: IReactorTime, idle_timeout: float) -> None:
        self._clock = clock
        self.idle_timeout = idle_timeout
        self._workers: dict[str, Worker] = {}
        #: called (no arguments) after a worker is created or removed — never per request
        self.on_change: Callable[[], None] | None = None

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    def __len__(self) -> int:
        return len(self._workers)

    def get(self, key: str) -> Worker | None:
        """The worker with id (== content name) *key*, or None."""
        return self._workers.get(key)

    def all(self) -> list[Worker]:
        """Every worker, oldest first."""
        return sorted(self._workers.values(), key=lambda w: (w.started_at, w.id))

    def touch(self, content: str, kind: str) -> Worker:
        """Count one request of *kind* for *content*, creating the worker if needed."""
        now = self._clock.seconds()
        worker = self._workers.get(content)
        if worker is None:
            worker = self._workers[content] = Worker(content, now, self.idle_timeout)
            worker.timer = self._clock.callLater(self.idle_timeout, self._expire, worker)
            worker.last_request_at = now
            worker.requests[kind if kind in worker.requests else "other"] += 1
            self._changed()
            return worker
        worker.last_request_at = now
        worker.requests[kind if kind in worker.requests else "other"] += 1
        return worker

    def stop(self, worker_id: str) -> bool:
        """Drop a worker now; False when there is none."""
        worker = self._workers.pop(worker_id, None)
        if worker is None:
            return False
        if worker.timer is not None and worker.timer.active():
            worker.timer.cancel()
        worker.timer = None
        self._changed()
        return True

    def stop_all(self) -> None:
        """Drop every worker (daemon shutdown)."""
        for wid in list(self._workers):
            self.stop(wid)

    def status(self) -> dict[str, Any]:
        """The ``/go-live/api/status`` document."""
        now = self._clock.seconds()
        return {"workers": [w.to_json(now) for w in self.all()]}

    def _expire(self, worker: Worker) -> None:
        worker.timer = None
        if self._workers.get(worker.id) is not worker:
            return
        due = worker.last_request_at + worker.idle_timeout
        now = self._clock.seconds()
        if now >= due:
            del self._workers[worker.id]
            self._changed()
        else:
            worker.timer = self._clock.callLater(due - now, self._expire, worker)
