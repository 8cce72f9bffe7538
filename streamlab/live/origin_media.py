"""Media bytes below ``/go-live/<content>/`` (``video/``, ``audio/``, ``ts/``): which file,
which byte range, at once or paced by the live clock, as on disk or with the continuous
timeline's decode times (docs/origin.md, "Held requests" and "Continuous timeline").

Manifests list *sequence-addressed* URLs (``video/<rung>/n<N>.m4s``,
:mod:`streamlab.live.urls`): ``N`` is the absolute segment, so the answer is exact:

* segment ``N`` complete: the bytes at once (200/206/416), from a push producer, whatever
  the window;
* segment ``N`` in production (or the next one): paced, each part's bytes released at its
  publish time: a whole-file GET is 200 chunked (LL-DASH chunked CMAF), a range is 206
  with its full ``Content-Length`` (a blocking preload hint asks ``bytes=N-``); a range
  whose bytes are all published already (a listed part, a 2 s piece) goes out at once;
* ``N`` more than one segment ahead: 404.

Old-style file URLs (``seg_00005.m4s``) keep their old meaning, "this file in the current
loop": whole-file GET and open-ended ranges of the file in production are paced, closed
ranges and other files are served at once.

``?timeline=continuous`` on an ``n<N>`` URL serves the file with every ``tfdt`` raised by
``loop(N) x loop length`` (:mod:`streamlab.media.decode_times`, offsets indexed at load);
MPEG-TS answers 400 in that mode, an item without a decode-time index 409.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, BinaryIO

from twisted.web.iweb import IRequest
from twisted.web.server import NOT_DONE_YET

from streamlab.errors import Conflict, Invalid, NotFound, StreamlabError
from streamlab.live import blocking
from streamlab.live.answers import MEDIA_CACHE, as_held, query_arg
from streamlab.live.media import (
    CHUNK,
    FilePushProducer,
    FileRangeProducer,
    Unsatisfiable,
    content_type,
    parse_range,
    resolve,
)
from streamlab.live.urls import CONTINUOUS, MediaRef, parse_media
from streamlab.live.waiters import Waiter
from streamlab.media import decode_times
from streamlab.media.index import ContentIndex
from streamlab.web.errors import write_error

if TYPE_CHECKING:
    from streamlab.live.origin import OriginResource


class MediaServer:
    """Serves media files for *origin* (its library, clock, epoch, wait queue, workers and
    continuous-timeline checks)."""

    def __init__(self, origin: OriginResource) -> None:
        self.origin = origin

    def serve(self, request: IRequest, content: str, index: ContentIndex, segs: list[str]) -> bytes | int:
        """Answer ``/go-live/<content>/<segs>`` (``segs[0]`` is video, audio or ts)."""
        ref = parse_media(index, "/".join(segs))
        if ref is not None and ref.seq is not None:
            # n<N>: the file that segment N plays (then the same checks as any path)
            segs = ref.track.segment_path(ref.file_number).split("/")
        found = resolve(self.origin.library.item_dir(content), segs)
        if found is None:
            raise NotFound("not found", detail="/".join(segs))
        full, rel = found
        self.origin.workers.touch(content, "media")
        try:
            fh = open(full, "rb")  # noqa: SIM115 - handed to the producer, which closes it
        except OSError:
            raise NotFound("not found", detail=rel) from None
        try:
            size = os.fstat(fh.fileno()).st_size
            return self._media_open(request, content, index, ref, rel, fh, size)
        except BaseException:  # nothing raises once a producer owns the file
            fh.close()
            raise

    def _media_open(self, request: IRequest, content: str, index: ContentIndex, ref: MediaRef | None,
                    rel: str, fh: BinaryIO, size: int) -> bytes | int:
        rewrite = self._rewrite(request, content, index, ref)
        now = self.origin.clock.seconds()
        if ref is not None and ref.seq is not None:
            # a sequence-addressed URL: exactly one segment, complete or not
            n_live = self.origin.live_timeline(content, index).in_progress(now)
            if ref.seq > n_live + 1:
                fh.close()
                wait = (ref.seq - n_live) * index.segment_duration
                raise NotFound("segment not produced yet", detail=f"segment {ref.seq} starts in {wait:g} s")
        request.setHeader(b"accept-ranges", b"bytes")
        request.setHeader(b"content-type", content_type(rel).encode())
        request.setHeader(b"cache-control", MEDIA_CACHE)
        range_header = request.getHeader(b"range")
        try:
            rng = parse_range(range_header.decode("latin-1") if range_header else None, size)
        except Unsatisfiable:
            fh.close()
            request.setHeader(b"content-range", f"bytes */{size}".encode())
            return write_error(request, _RangeNotSatisfiable(detail=f"file is {size} bytes"))
        first, last = (rng.first, rng.last) if rng else (0, size - 1)
        schedule = None
        if ref is not None and request.method == b"GET":
            schedule = self._schedule(index, ref, rng, first, now)
        if rng is not None:
            request.setResponseCode(206)
            request.setHeader(b"content-range", rng.content_range().encode())
        if schedule:
            # paced: parts are released at their publish times (chunked when no Range)
            if rng is not None:
                request.setHeader(b"content-length", str(last - first + 1).encode())
            _Paced(self.origin, request, fh, first, last, schedule, rewrite).start()
            return NOT_DONE_YET
        request.setHeader(b"content-length", str(last - first + 1).encode())
        if request.method == b"HEAD" or last < first:
            fh.close()
            return b""
        FileRangeProducer(request, fh, first, last - first + 1, rewrite=rewrite).start()
        return NOT_DONE_YET

    def _schedule(self, index: ContentIndex, ref: MediaRef, rng: Any, first: int,
                  now: float) -> list[tuple[Any, float]] | None:
        """Publish times of the parts to pace, or None to serve the bytes at once."""
        track = ref.track
        if ref.seq is not None:
            # unambiguous: paced exactly when that segment is in production (any Range;
            # bytes already published go at once), complete segments at full speed
            sched = blocking.seq_schedule(index, track, ref.seq, now, self.origin.epoch)
            last = rng.last if rng is not None else track.segments[ref.file_number - 1].size - 1
            if sched is not None and blocking.released_at(sched, last) <= now:
                return None  # e.g. a 2 s piece or a listed part of the live segment
            return sched
        # an old-style file URL means "this file in the current loop"
        if rng is None:  # whole file: LL-DASH chunked delivery if it is in progress
            return blocking.chunk_schedule(index, track, ref.file_number, now, self.origin.epoch)
        if rng.open_ended:
            # a blocking preload hint (BYTERANGE-START without a length) asks ``bytes=N-``
            # of the file in production: every part from N on is released at its publish
            # time, also when N's own part is out already (the rest of the file is not);
            # closed ranges name parts a playlist listed, i.e. published (maybe in an
            # earlier loop of the same file), and are served at once
            sched = blocking.chunk_schedule(index, track, ref.file_number, now, self.origin.epoch)
            if sched is not None and blocking.released_at(sched, rng.last) > now:
                return sched
        return None

    def _rewrite(self, request: IRequest, content: str, index: ContentIndex,
                 ref: MediaRef | None) -> Callable[[int, bytes], bytes] | None:
        """The continuous timeline's tfdt patcher for this response (None: bytes as on disk).

        Only ``?timeline=continuous`` on a sequence-addressed fMP4 segment asks for it; the
        default timeline of the config does not apply to media (a media URL is complete
        as listed).  Init segments are the same in both timelines."""
        if ref is None or query_arg(request, "timeline") is None:
            return None
        if self.origin.timeline_of(request) != CONTINUOUS:
            return None
        container = ref.track.container
        if ref.seq is None:
            raise Invalid("continuous timeline needs a sequence-addressed URL",
                          detail="request the n<N> URL the continuous manifests list")
        loop = ref.seq // index.segment_count
        self.origin.check_continuous(content, index, container, loop, (ref.track,))
        tt = self.origin.decode_times(content).track(ref.track)
        if tt is None or ref.file_number > len(tt.files):
            raise Conflict("continuous timeline unavailable",
                           detail=f"no decode-time index for {ref.track.id}")
        fields = tt.files[ref.file_number - 1]
        delta = tt.delta(loop)
        if not delta or not fields.offsets:
            return None
        return lambda pos, data: decode_times.patch(data, pos, fields, delta)


class _RangeNotSatisfiable(StreamlabError):
    status = 416
    error = "range not satisfiable"


class _Paced(FilePushProducer):
    """Writes bytes ``first..last`` of a segment file as its parts are published: the bytes
    up to the end of a part are released at that part's publish time (bytes before the first
    part with it, bytes after the last part with the last).  Released bytes are written as a
    push producer in chunks of at most :data:`~streamlab.live.media.CHUNK`, so catching up
    on a big in-progress segment respects the transport's back-pressure; between releases
    the request waits in the shared :class:`WaitQueue`."""

    def __init__(self, origin: OriginResource, request: IRequest, fh: BinaryIO, first: int, last: int,
                 schedule: list[tuple[Any, float]],
                 rewrite: Callable[[int, bytes], bytes] | None = None) -> None:
        self.origin = origin
        self.rewrite = rewrite
        self.request = request
        self.fh = fh
        self.pos = first
        self.released = first
        self.last = last
        self.waiter: Waiter | None = None
        cuts: list[tuple[int, float]] = []
        for part, at in sorted(schedule, key=lambda pa: pa[1]):
            end = last + 1 if part is None else part.offset + part.size
            if end > first:
                cuts.append((min(end, last + 1), at))
        if cuts:
            cuts[-1] = (last + 1, cuts[-1][1])
        else:
            cuts = [(last + 1, origin.clock.seconds())]
        self.cuts = cuts

    def start(self) -> None:
        """Register with the request and write what is published already."""
        request = as_held(self.request)
        request.notifyFinish().addErrback(self.connection_lost)
        self.registered = True
        request.registerProducer(self, True)
        self._pump()

    def _wake(self) -> None:
        self.waiter = None
        self._pump()

    def _pump(self) -> None:
        if self._writing or self.done:
            return
        self._writing = True
        try:
            now = self.origin.waiters.now()
            while self.cuts and self.cuts[0][1] <= now:
                self.released = max(self.released, self.cuts.pop(0)[0])
            while not self.paused and not self.done and self.pos < self.released:
                self.fh.seek(self.pos)
                data = self.fh.read(min(CHUNK, self.released - self.pos))
                if not data:  # the file shrank under us: end the response
                    self.pos = self.last + 1
                    break
                if self.rewrite is not None:
                    data = self.rewrite(self.pos, data)
                self.pos += len(data)
                self.request.write(data)
            if self.done:
                return
            if self.pos > self.last:
                self._end(True)
            elif self.pos >= self.released and self.waiter is None and self.cuts:
                self.waiter = self.origin.waiters.add(self.cuts[0][1], self._wake)
        finally:
            self._writing = False

    def _on_end(self) -> None:
        if self.waiter is not None:
            self.waiter.cancel()
            self.waiter = None
