"""The looping-live clock (spec/streams.md section 2): pure arithmetic, no I/O.

``L = now - epoch``; absolute segment ``n = floor(L / segment_duration)`` plays file
``(n mod segment_count) + 1`` in loop ``floor(n / segment_count)``.  Part ``p`` of segment
``n`` is published at ``epoch + n * segment_duration + end(p)`` where ``end(p)`` is the
cumulative *real* duration of parts ``0..p`` of that file, clamped to the segment
duration; the last part always ends exactly at the segment end, so a segment is complete
at the instant its last part is published.

All comparisons allow :data:`EPS` of float noise, so ``live_edge(track,
part_publish_time(track, n, p))`` reports part ``p`` as published.
"""

from __future__ import annotations

import math
import weakref
from bisect import bisect_right
from typing import Any

from streamlab.media.index import ContentIndex, Track

#: Float tolerance (seconds) for every "has this instant been reached" comparison.
EPS = 1e-6


_CACHES: dict[int, tuple[Any, dict[Any, Any]]] = {}


def index_cache(index: ContentIndex) -> dict[Any, Any]:
    """A dict private to *index* for precomputed, immutable render data.

    Keyed by ``id(index)`` with a weak reference check, and dropped when the index is
    garbage collected, so a reloaded ``content.json`` (a new object) never sees stale data.
    """
    entry = _CACHES.get(id(index))
    if entry is not None and entry[0]() is index:
        return entry[1]
    cache: dict[Any, Any] = {}
    _CACHES[id(index)] = (weakref.ref(index), cache)
    weakref.finalize(index, _CACHES.pop, id(index), None)
    return cache


def part_ends(index: ContentIndex, track: Track) -> tuple[tuple[float, ...], ...]:
    """Per file (0-based), the end of each part relative to the segment start (seconds).

    Cumulative real part durations, clamped to ``segment_duration`` and forced to end at
    exactly ``segment_duration`` on the last part.  A file without parts (TS) has one
    pseudo-part ending at the segment end.  Cached per (index, track).
    """
    cache = index_cache(index)
    key = ("part_ends", id(track))
    ends = cache.get(key)
    if ends is None:
        sd = index.segment_duration
        out = []
        for seg in track.segments:
            acc = 0.0
            e = []
            for part in seg.parts:
                acc += part.duration
                e.append(min(acc, sd))
            if e:
                e[-1] = sd
            else:
                e = [sd]
            out.append(tuple(e))
        ends = tuple(out)
        cache[key] = ends
    return ends


class LiveTimeline:
    """The live clock of one content item (pure; cheap to construct)."""

    __slots__ = ("index", "epoch", "sd", "count")

    def __init__(self, index: ContentIndex, epoch: float):
        self.index = index
        self.epoch = float(epoch)
        self.sd = index.segment_duration
        self.count = index.segment_count

    def segment_number(self, now: float) -> int:
        """Absolute ``n = floor(L / segment_duration)`` of the segment playing at *now*."""
        return math.floor((now - self.epoch + EPS) / self.sd)

    def in_progress(self, now: float) -> int:
        """``n`` of the segment being produced at *now* (same as :meth:`segment_number`)."""
        return math.floor((now - self.epoch + EPS) / self.sd)

    def file_number(self, n: int) -> int:
        """File number on disk (1-based) that absolute segment *n* plays."""
        return (n % self.count) + 1

    def loop_of(self, n: int) -> int:
        """Loop ``k = floor(n / segment_count)`` of absolute segment *n*."""
        return n // self.count

    def segment_start(self, n: int) -> float:
        """Unix time at which segment *n* starts."""
        return self.epoch + n * self.sd

    def part_publish_time(self, track: Track, n: int, p: int) -> float:
        """Unix time at which part *p* (0-based) of segment *n* of *track* is published."""
        ends = part_ends(self.index, track)[n % self.count]
        return self.epoch + n * self.sd + ends[p]

    def live_edge(self, track: Track, now: float) -> tuple[int, int]:
        """``(n, p)``: the in-progress segment and its last published part (-1 if none yet)."""
        rel = now - self.epoch + EPS
        n = math.floor(rel / self.sd)
        ends = part_ends(self.index, track)[n % self.count]
        into = rel - n * self.sd
        return n, bisect_right(ends, into) - 1

    def published_parts(self, track: Track, n: int, now: float) -> int:
        """How many parts of segment *n* are published at *now* (all of them once complete)."""
        ends = part_ends(self.index, track)[n % self.count]
        into = now - self.epoch + EPS - n * self.sd
        if into <= 0:
            return 0
        return bisect_right(ends, into)

    def is_complete(self, n: int, now: float) -> bool:
        """Whether segment *n* is complete at *now*."""
        return now - self.epoch + EPS >= (n + 1) * self.sd

