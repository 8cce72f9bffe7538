"""The 2 s pieces of a segment file (spec/streams.md section 3, "2 s playlists"; section 4).

The 2 s HLS playlists and the 2 s DASH MPD list the same pieces: each segment file is
split into ``round(segment_duration / 2)`` byte ranges of whole parts, each starting at
an independent part (a GOP start for video) near ``j x segment_duration / k``.  This is
the one place that decides where a piece starts and ends; the renderers only list them.
"""

from __future__ import annotations

from dataclasses import dataclass

from streamlab.live.timeline import EPS, LiveTimeline, index_cache, part_ends
from streamlab.media.index import ContentIndex, Track


@dataclass(frozen=True)
class Piece:
    """One entry of a 2 s playlist: a byte range of a segment file made of whole parts.

    ``start``/``end`` are relative to the segment start (``end`` = publish instant of the
    last part, see :func:`part_ends`); ``duration`` is the sum of the real part durations.
    Pieces of one file tile it: the first starts at byte 0, the last ends at its size.
    """

    first_part: int
    last_part: int
    offset: int
    length: int
    start: float
    end: float
    duration: float


def pieces_per_file(index: ContentIndex) -> int:
    """How many ~2 s pieces each segment file is split into (3 for 6 s segments)."""
    return max(1, round(index.segment_duration / 2.0))


def file_pieces(index: ContentIndex, track: Track) -> tuple[tuple[Piece, ...], ...]:
    """Per file (0-based), its 2 s pieces.  KeyError when a file has too few parts."""
    cache = index_cache(index)
    key = ("pieces", id(track))
    got = cache.get(key)
    if got is not None:
        return got
    k = pieces_per_file(index)
    sd = index.segment_duration
    all_ends = part_ends(index, track)
    out = []
    for seg, ends in zip(track.segments, all_ends, strict=True):
        parts = seg.parts
        if len(parts) < k:
            raise KeyError(f"{track.id}: a file has fewer than {k} parts")
        starts = [0.0] + list(ends[:-1])
        firsts = [0]
        for j in range(1, k):
            target = j * sd / k
            lo, hi = firsts[-1] + 1, len(parts) - (k - j)
            cands = [i for i in range(lo, hi + 1) if parts[i].independent] or list(range(lo, hi + 1))
            firsts.append(min((abs(starts[i] - target), i) for i in cands)[1])
        pieces: list[Piece] = []
        for j, first in enumerate(firsts):
            last = (firsts[j + 1] - 1) if j + 1 < k else len(parts) - 1
            off = 0 if j == 0 else parts[first].offset
            end_byte = parts[firsts[j + 1]].offset if j + 1 < k else seg.size
            pieces.append(Piece(first, last, off, end_byte - off, starts[first], ends[last],
                                sum(p.duration for p in parts[first:last + 1])))
        out.append(tuple(pieces))
    got = tuple(out)
    cache[key] = got
    return got


def last_complete_piece(index: ContentIndex, track: Track, now: float, epoch: float) -> int:
    """Absolute number (``n * pieces_per_file + j``) of the newest complete 2 s piece."""
    tl = LiveTimeline(index, epoch)
    k = pieces_per_file(index)
    n = tl.in_progress(now)
    into = now - epoch + EPS - n * tl.sd
    done = sum(1 for pc in file_pieces(index, track)[n % tl.count] if pc.end <= into)
    return n * k + done - 1
