"""Blocking-request decisions (pure): LL-HLS blocking playlist reload, blocking preload
hints and LL-DASH chunk schedules.

These functions only *decide* (when will this be ready? is it a bad request?); the HTTP
adapter (``streamlab.live.origin``) turns an answer in the future into a reactor timer.
Every time returned is a unix time in seconds computed from the live clock
(:mod:`streamlab.live.timeline`): ``<= now`` means "ready now".
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from streamlab.live.hls import find_track, target_of
from streamlab.live.timeline import EPS, LiveTimeline
from streamlab.media.index import ContentIndex, Part, Segment, Track

_INT = re.compile(r"[0-9]{1,15}")

SKIP_VALUES = ("YES", "v2")


class BadReload(ValueError):
    """A malformed or unsatisfiable blocking-reload request (the origin answers 400)."""


@dataclass(frozen=True)
class ReloadRequest:
    """Parsed ``_HLS_msn`` / ``_HLS_part`` / ``_HLS_skip`` query parameters.

    ``msn`` is None for a plain (non-blocking) request that only asks for a delta update.
    """

    msn: int | None
    part: int | None
    skip: str | None


def _int(name: str, value: str) -> int:
    if not _INT.fullmatch(value):
        raise BadReload(f"{name} must be a non-negative integer, got {value[:40]!r}")
    return int(value)


def parse_reload_params(msn: str | None, part: str | None, skip: str | None) -> ReloadRequest | None:
    """Validate the raw query values; None when none of them is present.

    BadReload for a non-integer or negative ``_HLS_msn``/``_HLS_part``, ``_HLS_part``
    without ``_HLS_msn``, or ``_HLS_skip`` other than ``YES``/``v2``.
    """
    if msn is None and part is None and skip is None:
        return None
    if skip is not None and skip not in SKIP_VALUES:
        raise BadReload(f"_HLS_skip must be YES or v2, got {skip[:40]!r}")
    if part is not None and msn is None:
        raise BadReload("_HLS_part without _HLS_msn")
    return ReloadRequest(None if msn is None else _int("_HLS_msn", msn),
                         None if part is None else _int("_HLS_part", part), skip)


def last_msn(index: ContentIndex, track: Track, now: float, epoch: float) -> int:
    """Media Sequence Number of the last segment (complete, or in progress with at least
    one published part) in *track*'s LL playlist at *now*."""
    n, p = LiveTimeline(index, epoch).live_edge(track, now)
    return n if p >= 0 else n - 1


def reload_ready_at(index: ContentIndex, track_id: str, now: float, epoch: float,
                    req: ReloadRequest) -> float:
    """Unix time at which *track_id*'s LL playlist contains what *req* asks for.

    ``_HLS_msn=M`` alone waits for segment M to be complete; with ``_HLS_part=P`` it waits
    for part P of segment M to be published (a part index past the segment's last part
    means the whole segment).  ``<= now`` means ready now (also for ``msn`` None).
    Raises BadReload when M is more than two segments beyond the last segment of the
    current playlist; KeyError for an unknown track.
    """
    track = find_track(index, track_id)
    if req.msn is None:
        return now
    tl = LiveTimeline(index, epoch)
    if req.msn > last_msn(index, track, now, epoch) + 2:
        raise BadReload(f"_HLS_msn={req.msn} is more than two segments beyond the live edge")
    nparts = len(track.segments[req.msn % tl.count].parts)
    if req.part is None or req.part >= nparts:
        return tl.segment_start(req.msn + 1)
    return tl.part_publish_time(track, req.msn, req.part)


def reload_deadline(index: ContentIndex, kind: str = "ll") -> float:
    """Seconds a blocking reload may be held before the origin answers 503 (3 x target)."""
    return 3.0 * max(target_of(index, t, kind) for t in index.video + index.audio)


def _in_progress_file(index: ContentIndex, now: float, epoch: float) -> tuple[LiveTimeline, int]:
    tl = LiveTimeline(index, epoch)
    return tl, tl.in_progress(now)


def media_ready_at(index: ContentIndex, track: Track, file_number: int, range_start: int | None,
                   now: float, epoch: float) -> float | None:
    """Blocking preload hint: when may bytes from *range_start* of *file_number* be served?

    If *file_number* is the file of the segment in progress at *now* and the byte at
    *range_start* belongs to a part that is not yet published (the hinted next part or any
    later part of that segment), return the unix time that part is published; otherwise
    None (serve now).  A request without a range (whole file) is served now.
    """
    if range_start is None or not track.segments or not track.segments[0].parts:
        return None
    tl, n = _in_progress_file(index, now, epoch)
    if tl.file_number(n) != file_number:
        return None
    parts = track.segments[file_number - 1].parts
    p = 0
    for i, part in enumerate(parts):
        if part.offset <= range_start:
            p = i
        else:
            break
    when = tl.part_publish_time(track, n, p)
    return when if when > now + EPS else None


def chunk_schedule(index: ContentIndex, track: Track, file_number: int, now: float,
                   epoch: float) -> list[tuple[Part, float]] | None:
    """LL-DASH chunked delivery of the segment being produced.

    When *file_number* is the file of the segment in progress at *now*, return every part
    with its publish time (unix seconds), in order; the origin writes each part's bytes once
    its time has come (parts already published at once) and finishes the response after the
    last one.  The returned parts tile the file: the first starts at byte 0 (so leading boxes
    such as ``styp`` go out with it) and the last ends at the file size.  Otherwise None:
    serve the whole file.
    """
    if not track.segments or not track.segments[0].parts:
        return None
    tl, n = _in_progress_file(index, now, epoch)
    if tl.file_number(n) != file_number:
        return None
    return _tiling(tl, track, track.segments[file_number - 1], n)


def seq_schedule(index: ContentIndex, track: Track, n: int, now: float,
                 epoch: float) -> list[tuple[Part, float]] | None:
    """Pacing of absolute segment *n* of *track* (a sequence-addressed URL): None when it
    is complete at *now* (serve at full speed, whatever the window), else every part with
    its publish time, tiling the file (the same shape as :func:`chunk_schedule`): the
    origin releases each part's bytes at that time.  A segment that has not started yet
    (the next one) gets its future publish times.  Tracks without parts (MPEG-TS) are
    never paced."""
    if not track.segments or not track.segments[0].parts:
        return None
    tl = LiveTimeline(index, epoch)
    if tl.is_complete(n, now):
        return None
    return _tiling(tl, track, track.segments[n % tl.count], n)


def _tiling(tl: LiveTimeline, track: Track, seg: Segment, n: int) -> list[tuple[Part, float]]:
    """Every part of file *seg* (playing as absolute segment *n*) with its publish time,
    tiling the file: the first part starts at byte 0 (the segment's leading boxes go with
    it) and each part runs to the next part's offset (the last to the end of the file)."""
    parts = seg.parts
    out: list[tuple[Part, float]] = []
    for i, part in enumerate(parts):
        start = 0 if i == 0 else part.offset
        end = parts[i + 1].offset if i + 1 < len(parts) else seg.size
        out.append((Part(start, end - start, part.duration, part.independent),
                    tl.part_publish_time(track, n, i)))
    return out


def released_at(schedule: list[tuple[Part, float]], last: int) -> float:
    """When byte *last* of a paced file is published: the publish time of the part that
    holds it (the parts of *schedule* tile the file).  A range ending there is complete
    at that instant, so a range of published parts is served at once."""
    for part, at in schedule:
        if last < part.offset + part.size:
            return at
    return schedule[-1][1]
