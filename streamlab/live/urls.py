"""Media URLs that say which live segment they belong to (pure).

A file number is ambiguous on a looping stream: ``video/360p/seg_00005.m4s`` is played by
segment ``n = 4``, ``4 + count``, ``4 + 2 x count``...  When the window is longer than the
loop a playlist can list the same file twice, once complete (previous loop) and once in
production, and the origin could only guess which one a request means.

Every manifest therefore lists *sequence-addressed* media URLs: the track's directory,
``n<N>`` and the track's extension, where ``N`` is the absolute segment number of the
live clock (``EXT-X-MEDIA-SEQUENCE`` numbering; DASH ``$Number$``)::

    video/360p/seg_00005.m4s      file 5 (old style, still served: "the current loop")
    video/360p/n4.m4s             segment 4, i.e. file 5 of loop 0
    video/360p/n36127.m4s         segment 36127 = file (36127 mod count) + 1

The origin maps ``n<N>`` to its file with :func:`parse_media` and knows exactly whether
that segment is complete (served at once) or in production (paced).  In the continuous
timeline the URLs also carry ``?timeline=continuous`` (:func:`timeline_query`): the bytes
of segment ``N`` then depend on its loop (rewritten decode times), so the mode is part of
the resource name.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass

from streamlab.live.timeline import index_cache
from streamlab.media.index import ContentIndex, Track

DISCONTINUITY = "discontinuity"
CONTINUOUS = "continuous"
TIMELINES = (DISCONTINUITY, CONTINUOUS)

_SEQ_NAME = re.compile(r"^n([0-9]{1,15})$")


def timeline_query(timeline: str) -> str:
    """The query string every URL of a *timeline* manifest carries (``""`` by default)."""
    return "?timeline=continuous" if timeline == CONTINUOUS else ""


def seq_prefix(track: Track) -> tuple[str, str]:
    """``("video/360p/n", ".m4s")``: what goes before and after ``N`` in *track*'s
    sequence-addressed URLs (its template's directory and extension)."""
    head, tail = posixpath.split(track.segment_template)
    ext = posixpath.splitext(tail)[1]
    return (f"{head}/n" if head else "n"), ext


def seq_path(track: Track, n: int, timeline: str = DISCONTINUITY) -> str:
    """The URL (relative to ``/go-live/<content>/``) of absolute segment *n* of *track*."""
    pre, ext = seq_prefix(track)
    return f"{pre}{n}{ext}{timeline_query(timeline)}"


@dataclass(frozen=True)
class MediaRef:
    """What a media path names: a segment file of a track, and (sequence-addressed URLs
    only) the absolute segment number ``seq``; ``seq`` is None for old-style file URLs."""

    track: Track
    file_number: int
    seq: int | None


def _seq_dirs(index: ContentIndex) -> dict[tuple[str, str], Track]:
    cache = index_cache(index)
    got = cache.get("seq-dirs")
    if got is None:
        got = {}
        for t in index.tracks:
            pre, ext = seq_prefix(t)
            got.setdefault((pre[:-1], ext), t)
        cache["seq-dirs"] = got
    return got


def parse_media(index: ContentIndex, rel: str) -> MediaRef | None:
    """The segment a media path names (None for init files, unknown names and anything
    that is not a segment of one of *index*'s tracks).

    Old-style names are matched first, against each track's ``segment_template`` (file
    numbers ``1..segment_count``), so a template that itself looks like ``n{number}``
    keeps meaning files; then ``n<N>`` names against a template's directory and extension.
    """
    for t in index.tracks:
        pre, brace, post = t.segment_template.partition("{")
        if not brace:
            continue
        post = post.partition("}")[2]
        if rel.startswith(pre) and rel.endswith(post):
            middle = rel[len(pre):len(rel) - len(post)]
            if middle.isdecimal():
                number = int(middle)
                if 1 <= number <= len(t.segments) and t.segment_path(number) == rel:
                    return MediaRef(t, number, None)
    head, name = posixpath.split(rel)
    stem, ext = posixpath.splitext(name)
    m = _SEQ_NAME.match(stem)
    if m is None:
        return None
    track = _seq_dirs(index).get((f"{head}/" if head else "", ext))
    if track is None:
        return None
    n = int(m.group(1))
    return MediaRef(track, n % index.segment_count + 1, n)
