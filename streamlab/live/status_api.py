"""``/go-live/api/...``: the workers' status, its SSE stream, tick stats and stop
(spec/streams.md section 6).  Only reads and stops workers; never touches media."""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.web.iweb import IRequest

from streamlab.errors import Invalid, NotFound
from streamlab.live.answers import MethodNotAllowed, json_answer, query_arg
from streamlab.live.workers import WorkerRegistry
from streamlab.push.sse import SnapshotFeed

STREAM_OF = {("hls", "ll"): "ll_hls", ("hls", "2s"): "hls_2s", ("hls", "6s"): "hls_6s",
             ("dash", "ll"): "ll_dash", ("dash", "2s"): "dash_2s", ("dash", "6s"): "dash_6s"}


class StatusApi:
    """The status API over *workers*; *status_feed* serves ``api/status/stream``."""

    def __init__(self, workers: WorkerRegistry, status_feed: SnapshotFeed, clock: IReactorTime) -> None:
        self.workers = workers
        self.status_feed = status_feed
        self.clock = clock

    def serve(self, request: IRequest, segs: list[str]) -> bytes | int:
        """Answer ``/go-live/api/<segs>``."""
        method = request.method
        if len(segs) == 2 and segs[0] == "stop":
            if method != b"DELETE":
                raise MethodNotAllowed(detail="use DELETE", allow="DELETE, OPTIONS")
            if not self.workers.stop(segs[1]):
                raise NotFound("no such worker", detail=segs[1])
            return json_answer(request, {"stopped": segs[1]})
        if method not in (b"GET", b"HEAD"):
            raise MethodNotAllowed(detail=method.decode("latin-1"))
        if segs == ["status"]:
            return json_answer(request, self.workers.status())
        if segs == ["status", "stream"]:
            if method != b"GET":
                raise MethodNotAllowed(detail="use GET")
            return self.status_feed.attach(request)
        if len(segs) == 2 and segs[0] in ("tick-stats", "dash-tick-stats"):
            content = segs[1]
            if segs[0] == "tick-stats":
                stream = "ll_hls"
            else:
                duration = query_arg(request, "duration") or "ll"
                if duration not in ("ll", "2s", "6s"):
                    raise Invalid("bad duration", detail="duration must be ll, 2s or 6s",
                                  fields={"duration": "ll|2s|6s"})
                stream = STREAM_OF[("dash", duration)]
            worker = self.workers.get(content)
            if worker is None:
                raise NotFound("no worker for content", detail=content)
            now = self.clock.seconds()
            stats = worker.stream(stream).tick_stats(now) if stream in worker.streams else {
                "last_tick_at": None, "tick_interval_ms": None, "avg_tick_interval_ms_5m": None,
                "last_render_ms": None, "avg_render_ms_5m": None}
            body: dict[str, Any] = {"content": content}
            if segs[0] == "dash-tick-stats":
                body["duration"] = stream.replace("dash_", "").replace("ll_dash", "ll")
            body.update(stats)
            body["variant_count"] = len(worker.variants)
            body["audio_count"] = len(worker.audio)
            return json_answer(request, body)
        raise NotFound("not found", detail="/api/" + "/".join(segs))

