"""The looping-live origin: the plain twisted.web resource serving ``/go-live/...``.

This is the hot path, so it is one leaf :class:`~twisted.web.resource.Resource` that
dispatches on ``request.postpath`` (no Klein).  It only uses the public ``IRequest`` API
(``setResponseCode``, ``setHeader``, ``write``, ``finish``, ``registerProducer``,
``notifyFinish``), so the same instance can be mounted on the main Site and on every
session port's Site behind the fault layer.

URL map (below the mount point, normally ``/go-live``) and the request kind each one is
(:func:`classify` returns the kind for the session fault layer / network log):

==============================================  ==========================  =================
path                                            answer                      kind
==============================================  ==========================  =================
``healthz``                                     ``{"status":"ok"}``         other
``time``                                        ISO-8601 UTC now (text)     other
``api/status``                                  workers (streams.md §6)     other
``api/status/stream``                           SSE ``status`` events      other
``api/tick-stats/{content}``                    LL-HLS tick stats           other
``api/dash-tick-stats/{content}?duration=..``   DASH tick stats             other
``api/stop/{id}`` (DELETE)                      ``{"stopped": id}``         other
``{content}/master.m3u8``, ``master_2s.m3u8``,  HLS master (``?format=ts``  master_manifest
``master_6s.m3u8``                              for MPEG-TS renditions)
``{content}/manifest.mpd``, ``manifest_2s.mpd``, DASH MPD                   master_manifest
``manifest_6s.mpd``
``{content}/playlist_{variant}.m3u8``,          HLS media playlist          manifest
``playlist_2s_{variant}.m3u8``,                 (LL: ``_HLS_msn``,
``playlist_6s_{variant}.m3u8``                  ``_HLS_part``, ``_HLS_skip``)
``{content}/video/...``, ``audio/...``,         media / init segments       segment
``ts/...``                                      from disk (Range)
==============================================  ==========================  =================

Worker stream kinds (``requests`` keys in ``/go-live/api/status``): ``master.m3u8`` and LL
playlists count as ``ll_hls``; ``*_2s``/``*_6s`` HLS as ``hls_2s``/``hls_6s``; the MPDs as
``ll_dash``/``dash_2s``/``dash_6s``; everything under ``video/ audio/ ts/`` as ``media``.

Holding requests (blocking playlist reload, blocking preload-hint byte ranges, LL-DASH
chunked delivery of the segment being produced) uses one shared
:class:`~streamlab.live.waiters.WaitQueue`: a held request is one heap entry and there is
a single reactor timer for all of them; a client that disconnects is removed through
``notifyFinish``'s errback.

Media bytes (which file, which range, paced or at once, rewritten or not) are
:mod:`streamlab.live.origin_media`; the status API is :mod:`streamlab.live.status_api`.

Why this module is ~460 lines: its one reason to change is the URL contract above (what
each ``/go-live`` path answers, and when); over half of it is this table and the
dispatch that mirrors it, and splitting the dispatch would split the table.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from streamlab.config import Config
from streamlab.errors import Conflict, Invalid, NotFound, StreamlabError, Unavailable
from streamlab.interfaces import IContentLibrary
from streamlab.live import blocking, dash, hls
from streamlab.live.answers import (
    CORS,
    DASH_TYPE,
    HLS_TYPE,
    MANIFEST_CACHE,
    PREFLIGHT,
    MethodNotAllowed,
    as_held,
    json_answer,
    query_arg,
)
from streamlab.live.origin_media import MediaServer
from streamlab.live.status_api import STREAM_OF, StatusApi
from streamlab.live.timeline import LiveTimeline
from streamlab.live.urls import CONTINUOUS, DISCONTINUITY, TIMELINES, parse_media
from streamlab.live.waiters import Waiter, WaitQueue
from streamlab.live.workers import WorkerRegistry, iso
from streamlab.media import decode_times
from streamlab.media.index import ContentIndex, Track
from streamlab.push.sse import EventStream, SnapshotFeed
from streamlab.web.errors import write_error

log = Logger()

MEDIA_DIRS = ("video", "audio", "ts")
RESERVED = ("api", "healthz", "time")

_MASTER_RE = re.compile(r"^master(?:_(2s|6s))?\.m3u8$")
_MPD_RE = re.compile(r"^manifest(?:_(2s|6s))?\.mpd$")
_PLAYLIST_RE = re.compile(r"^playlist_(.+)\.m3u8$")


def _decode(segs: list[bytes]) -> list[str] | None:
    try:
        return [s.decode("utf-8") for s in segs]
    except UnicodeDecodeError:
        return None


class _Held:
    """One held request: its waiter and whether the client is still there."""

    __slots__ = ("waiter", "gone")

    def __init__(self) -> None:
        self.waiter: Waiter | None = None
        self.gone = False


class OriginResource(Resource):
    """``/go-live``: live manifests rendered on demand, media from disk, workers and the
    status API.  *library* is the content library (``get`` and ``item_dir`` are
    used); *clock* is the reactor (all times and timers);
    *epoch* is ``live_epoch`` in unix seconds."""

    isLeaf = True

    def __init__(self, library: IContentLibrary, clock: IReactorTime, *, epoch: float, window: float,
                 idle_timeout: float, timeline: str = DISCONTINUITY) -> None:
        super().__init__()
        if timeline not in TIMELINES:
            raise ValueError(f"timeline must be one of {TIMELINES}, got {timeline!r}")
        self.library = library
        self.clock = clock
        self.epoch = epoch
        self.window = window
        self.timeline = timeline
        self.waiters = WaitQueue(clock)
        self.workers = WorkerRegistry(clock, idle_timeout)
        # api/status/stream: the status body pushed at most every second while a worker
        # exists, on worker creation/removal, keepalive comments when idle
        self.status_stream = EventStream(clock)
        self.status_feed = SnapshotFeed(clock, self.status_stream, "workers", "status",
                                        lambda: self.workers.status()["workers"],
                                        lambda: len(self.workers) > 0, min_interval=1.0, heartbeat=1.0)
        self.workers.on_change = self.status_feed.changed
        self._timelines: dict[str, tuple[ContentIndex, LiveTimeline]] = {}
        self._cache_now: float | None = None
        self._cache: dict[tuple[Any, ...], bytes] = {}
        self.upstreams: Any = None  # UpstreamService: /go-live/{upstream}/... (docs/upstream.md)
        self.media = MediaServer(self)
        self.api = StatusApi(self.workers, self.status_feed, clock)

    @classmethod
    def from_config(cls, library: IContentLibrary, config: Config, clock: IReactorTime) -> OriginResource:
        """Build from the daemon config (``[live]`` section)."""
        live = config.live
        return cls(library, clock, epoch=live.live_epoch.timestamp(), window=live.window_seconds,
                   idle_timeout=live.worker_idle_timeout,
                   timeline=getattr(live, "timeline", DISCONTINUITY))

    def shutdown(self) -> None:
        """Cancel every timer (held requests, idle workers)."""
        self.waiters.cancel_all()
        self.workers.on_change = None
        self.workers.stop_all()
        self.status_feed.stop()
        self.status_stream.close()

    def loop_of_path(self, path: str) -> int | None:
        """The loop a sequence-addressed media path (``/go-live/<c>/video/<r>/n<N>.m4s``,
        query allowed) belongs to; None for anything else (the session proxy counts loops
        with it)."""
        parts = path.split("?", 1)[0].split("/")
        if len(parts) < 5 or parts[1] != "go-live":
            return None
        index = self.library.get(parts[2])
        if index is None:
            return None
        ref = parse_media(index, "/".join(parts[3:]))
        return None if ref is None or ref.seq is None else ref.seq // index.segment_count

    # -- entry -------------------------------------------------------------

    def render(self, request: IRequest) -> bytes | int:
        for name, value in CORS.items():
            request.setHeader(name, value)
        try:
            return self._dispatch(request)
        except StreamlabError as exc:
            return write_error(request, exc)
        except Exception as exc:  # a bug, never bad input: log it and answer 500
            log.failure("origin error serving {uri}", Failure(), uri=request.uri)
            return write_error(request, exc)

    def _dispatch(self, request: IRequest) -> bytes | int:
        segs = _decode(list(request.postpath or []))
        if segs is None:
            raise NotFound("not found")
        if segs and segs[-1] == "" and len(segs) > 1:
            segs = segs[:-1]
        method = request.method
        if method == b"OPTIONS":
            for name, value in PREFLIGHT.items():
                request.setHeader(name, value)
            request.setResponseCode(204)
            return b""
        if not segs or segs == [""]:
            raise NotFound("not found", detail="no content named")
        head = segs[0]
        if head == "api":
            return self.api.serve(request, segs[1:])
        if method not in (b"GET", b"HEAD"):
            raise MethodNotAllowed(detail=method.decode("latin-1"))
        if segs == ["healthz"]:
            return json_answer(request, {"status": "ok"})
        if segs == ["time"]:
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            request.setHeader(b"cache-control", MANIFEST_CACHE)
            return (iso(self.clock.seconds()) or "").encode()
        if len(segs) < 2 or head in RESERVED:
            raise NotFound("not found", detail="/".join(segs))
        upstream = self.upstreams.get(head) if self.upstreams is not None else None
        if upstream is not None:
            return self.upstreams.serve(request, upstream, segs[1:])
        index = self.library.get(head)
        if index is None:
            raise NotFound("unknown content", detail=head)
        if segs[1] in MEDIA_DIRS:
            return self.media.serve(request, head, index, segs[1:])
        if len(segs) == 2:
            return self._manifest(request, head, index, segs[1])
        raise NotFound("not found", detail="/".join(segs))

    # -- manifests -----------------------------------------------------------

    def live_timeline(self, content: str, index: ContentIndex) -> LiveTimeline:
        cached = self._timelines.get(content)
        if cached is None or cached[0] is not index:
            cached = (index, LiveTimeline(index, self.epoch))
            self._timelines[content] = cached
        return cached[1]

    def timeline_of(self, request: IRequest) -> str:
        """The request's ``timeline`` query (400 when unknown); without one, discontinuity:
        a media playlist or media URL is complete as listed (the entry points apply the
        configured default, :meth:`_entry_timeline`)."""
        value = query_arg(request, "timeline")
        if value is None:
            return DISCONTINUITY
        if value not in TIMELINES:
            raise Invalid("bad timeline", detail="timeline must be discontinuity or continuous",
                          fields={"timeline": "|".join(TIMELINES)})
        return value

    def _entry_timeline(self, request: IRequest, content: str, index: ContentIndex, container: str) -> str:
        """The timeline of a master or MPD: an explicit ``?timeline=`` is a demand (400/409
        when it cannot be met); the configured default is a preference, so continuous falls
        back to discontinuity for MPEG-TS and for an item that cannot be rewritten."""
        if query_arg(request, "timeline") is not None:
            return self._timeline_demanded(request, content, index, container)
        if self.timeline != CONTINUOUS:
            return self.timeline
        try:
            self._check_continuous_now(content, index, container)
        except StreamlabError:
            return DISCONTINUITY
        return CONTINUOUS

    def _timeline_demanded(self, request: IRequest, content: str, index: ContentIndex, container: str) -> str:
        """The request's timeline (:meth:`timeline_of`), checked servable when continuous."""
        timeline = self.timeline_of(request)
        if timeline == CONTINUOUS:
            self._check_continuous_now(content, index, container)
        return timeline

    def _check_continuous_now(self, content: str, index: ContentIndex, container: str) -> None:
        """:meth:`check_continuous` for the loop playing now and the next one."""
        tl = self.live_timeline(content, index)
        loop = tl.loop_of(tl.segment_number(self.clock.seconds()))
        self.check_continuous(content, index, container, loop + 1)

    def decode_times(self, content: str) -> decode_times.DecodeTimes:
        """The item's decode-time index, needed by the continuous timeline (409 without)."""
        getter = getattr(self.library, "decode_times", None)
        times = getter(content) if getter is not None else None
        if not isinstance(times, decode_times.DecodeTimes):
            raise Conflict("continuous timeline unavailable",
                           detail=times if isinstance(times, str) else "the item has no decode-time index")
        return times

    def check_continuous(self, content: str, index: ContentIndex, container: str, loop: int,
                          tracks: tuple[Track, ...] | None = None) -> None:
        """400 for MPEG-TS (no PES timestamp rewriting), 409 when the item (or *tracks*)
        cannot be rewritten for *loop* (no index, or a 32-bit tfdt that would overflow)."""
        if container == "ts":
            raise Invalid("continuous timeline not available for MPEG-TS",
                          detail="timeline=continuous rewrites fMP4 decode times only; "
                                 "use the fMP4 streams or timeline=discontinuity with format=ts",
                          fields={"timeline": "discontinuity with format=ts"})
        times = self.decode_times(content)
        for t in tracks if tracks is not None else index.video + index.audio:
            tt = times.track(t)
            if tt is None or not tt.fits(loop):
                raise Conflict("continuous timeline unavailable",
                               detail=f"track {t.id}: a 32-bit tfdt would overflow in loop {loop}")

    def _manifest(self, request: IRequest, content: str, index: ContentIndex, name: str) -> bytes | int:
        container = query_arg(request, "format") or "fmp4"
        if container not in ("fmp4", "ts"):
            raise Invalid("bad format", detail="format must be ts or fmp4", fields={"format": "ts|fmp4"})
        if container == "ts" and not index.ts_tracks:
            raise NotFound("no MPEG-TS renditions", detail=content)
        if _MASTER_RE.match(name) or _MPD_RE.match(name):
            timeline = self._entry_timeline(request, content, index, container)
        else:
            timeline = self._timeline_demanded(request, content, index, container)
        m = _MASTER_RE.match(name)
        if m:
            kind = m.group(1) or "ll"
            return self._answer(request, content, index, ("hls", kind), HLS_TYPE,
                                ("master", kind, container, timeline), self.clock.seconds())
        m = _MPD_RE.match(name)
        if m:
            kind = m.group(1) or "ll"
            return self._answer(request, content, index, ("dash", kind), DASH_TYPE, ("mpd", kind, timeline),
                                self.clock.seconds())
        m = _PLAYLIST_RE.match(name)
        if not m:
            raise NotFound("not found", detail=name)
        rest = m.group(1)
        kind, variant = "ll", rest
        if rest[:3] in ("2s_", "6s_") and self._has_track(index, rest[3:], container):
            kind, variant = rest[:2], rest[3:]
        if not self._has_track(index, variant, container):
            raise NotFound("unknown variant", detail=variant)
        now = self.clock.seconds()
        if kind != "ll":
            return self._answer(request, content, index, ("hls", kind), HLS_TYPE,
                                ("media", kind, variant, None, container, timeline), now)
        try:
            reload_req = blocking.parse_reload_params(query_arg(request, "_HLS_msn"),
                                                      query_arg(request, "_HLS_part"),
                                                      query_arg(request, "_HLS_skip"))
            skip = getattr(reload_req, "skip", None) if reload_req is not None else None
            ready_at = now
            if reload_req is not None and getattr(reload_req, "msn", None) is not None:
                ready_at = blocking.reload_ready_at(index, variant, now, self.epoch, reload_req)
        except blocking.BadReload as exc:
            raise Invalid("bad blocking reload", detail=str(exc)) from None
        except KeyError:
            raise NotFound("unknown variant", detail=variant) from None
        what = ("media", kind, variant, skip, container, timeline)
        if ready_at <= now:
            return self._answer(request, content, index, ("hls", kind), HLS_TYPE, what, now)
        # hold: count the request now, answer when the playlist contains the part
        self.workers.touch(content, "ll_hls")
        deadline = now + blocking.reload_deadline(index, "ll")
        if ready_at > deadline:
            self._hold(request, _Held(), deadline, lambda: self._finish_bytes(request, write_error(
                request, Unavailable("blocking reload timed out",
                                     detail="the requested part was not published in time"))))
            return NOT_DONE_YET
        # everything but the body is known now: the wake-up only renders (once for all the
        # requests woken at that instant) and writes (docs/origin.md, "Held requests")
        self._manifest_headers(request, HLS_TYPE)
        held = _Held()

        def wake() -> None:
            if held.gone:
                return
            t = max(self.waiters.now(), ready_at)
            try:
                body = self._body(content, index, ("hls", kind), what, t)
            except Exception as exc:
                if not isinstance(exc, StreamlabError):
                    log.failure("origin error serving held {uri}", Failure(), uri=request.uri)
                body = write_error(request, exc)
            self._finish_bytes(request, body)

        self._hold(request, held, ready_at, wake)
        return NOT_DONE_YET

    def _has_track(self, index: ContentIndex, track_id: str, container: str) -> bool:
        return any(t.id == track_id and t.container == container for t in index.tracks)

    def _answer(self, request: IRequest, content: str, index: ContentIndex, stream: tuple[str, str],
                ctype: bytes, what: tuple[Any, ...], now: float) -> bytes:
        self.workers.touch(content, STREAM_OF[stream])
        return self._render(request, content, index, stream, ctype, what, now)

    def _render(self, request: IRequest, content: str, index: ContentIndex, stream: tuple[str, str],
                ctype: bytes, what: tuple[Any, ...], now: float) -> bytes:
        """Render (or reuse the render made for the same instant) and set the headers."""
        body = self._body(content, index, stream, what, now)
        self._manifest_headers(request, ctype)
        return body

    def _manifest_headers(self, request: IRequest, ctype: bytes) -> None:
        request.setResponseCode(200)
        request.setHeader(b"content-type", ctype)
        request.setHeader(b"cache-control", MANIFEST_CACHE)

    def _body(self, content: str, index: ContentIndex, stream: tuple[str, str], what: tuple[Any, ...],
              now: float) -> bytes:
        """The manifest *what* at *now*: rendered once per instant, then reused (requests
        woken together share one render and the tick bookkeeping of that one render)."""
        if self._cache_now != now:
            self._cache_now = now
            self._cache.clear()
        key = (content, id(index), *what)
        body = self._cache.get(key)
        if body is None:
            t0 = time.perf_counter()
            try:
                text = self._render_text(index, what, now)
            except KeyError as exc:
                raise NotFound("not found", detail=f"no such rendition: {exc}") from None
            body = text.encode("utf-8")
            self._cache[key] = body
            self._observe(content, index, stream, now, (time.perf_counter() - t0) * 1000.0)
        return body

    def _render_text(self, index: ContentIndex, what: tuple[Any, ...], now: float) -> str:
        if what[0] == "master":
            return hls.render_master(index, what[1], container=what[2], timeline=what[3])
        if what[0] == "mpd":
            return dash.render_mpd(index, what[1], now, self.epoch, self.window,
                                   utc_timing_url="/go-live/time", timeline=what[2])
        _, kind, variant, skip, container, timeline = what
        return hls.render_media(index, variant, kind, now, self.epoch, self.window, skip=skip,
                                container=container, timeline=timeline)

    def _observe(self, content: str, index: ContentIndex, stream: tuple[str, str], now: float,
                 render_ms: float | None) -> None:
        worker = self.workers.get(content)
        if worker is None:
            return
        if not worker.variants and not worker.audio:
            worker.variants = tuple(t.id for t in index.video)
            worker.audio = tuple(t.id for t in index.audio)
        try:
            edge = self._edge(content, index, stream[1], now)
        except Exception:  # stats must never break serving
            log.failure("tick bookkeeping failed")
            return
        worker.stream(STREAM_OF[stream]).observe(now, edge, render_ms)

    def _edge(self, content: str, index: ContentIndex, kind: str, now: float) -> Any:
        """The live edge a render at *now* shows: (msn, part) for LL, the 2 s / 6 s segment."""
        tl = self.live_timeline(content, index)
        if kind == "ll":
            return tuple(tl.live_edge(index.video[0], now))
        if kind == "6s":
            return tl.segment_number(now)
        per_file = max(1, round(index.segment_duration / 2.0))
        return math.floor((now - self.epoch) / (index.segment_duration / per_file))

    # -- holding ---------------------------------------------------------------

    def _hold(self, request: IRequest, held: _Held, wake_at: float, wake: Callable[[], None]) -> None:
        """Run *wake* at *wake_at* unless the client goes away first."""

        def gone(_failure: Failure) -> None:
            held.gone = True
            if held.waiter is not None:
                held.waiter.cancel()
                held.waiter = None

        def fire() -> None:
            held.waiter = None
            wake()

        held.waiter = self.waiters.add(wake_at, fire)
        as_held(request).notifyFinish().addErrback(gone)

    def _finish_bytes(self, request: IRequest, body: bytes) -> None:
        request.setHeader(b"content-length", str(len(body)).encode())
        request.write(body)
        request.finish()

class OriginService(Service):
    """Owns the origin's timers: cancels held requests and worker timers on stop."""

    name = "origin"

    def __init__(self, resource: OriginResource) -> None:
        self.resource = resource

    def stopService(self) -> Any:  # noqa: N802 - twisted API
        self.resource.shutdown()
        return super().stopService()
