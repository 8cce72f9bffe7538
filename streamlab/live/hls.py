"""HLS media playlists (spec/streams.md section 3): LL, 2 s and 6 s, rendered at ``now``.

Pure functions of ``(index, kind, now, epoch, window, request params)``; the output is
byte-identical for identical inputs.  Everything that does not depend on ``now`` (the
formatted per-file and per-part lines of a track) is computed once per (index, track,
kind) and cached with the index (:func:`streamlab.live.timeline.index_cache`), so a
render only slices and joins precomputed strings.

Kinds: ``"ll"`` (LL-HLS: parts, preload hint, rendition reports, delta updates),
``"2s"`` (each 6 s file split into byte-range pieces that start at independent parts),
``"6s"`` (whole files).  URIs are relative to ``/go-live/<content>/``.

Masters and playlist names live in :mod:`streamlab.live.hls_master`, the 2 s cut in
:mod:`streamlab.live.pieces`; both are re-exported here, the module callers know.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from streamlab.live.hls_master import KINDS, LL_VERSION, VERSION, ll_tracks, playlist_name, render_master
from streamlab.live.pieces import file_pieces, last_complete_piece, pieces_per_file
from streamlab.live.timeline import EPS, LiveTimeline, index_cache, part_ends
from streamlab.live.urls import CONTINUOUS, DISCONTINUITY, TIMELINES, seq_prefix, timeline_query
from streamlab.media.index import ContentIndex, Track, target_duration

#: Floor of PART-HOLD-BACK (seconds).  Three 0.2 s parts (0.6 s) left shaka 5 starving
#: at the live edge on a loaded machine (a mid-segment stall once its latency fell to
#: ~1 s); 1 s gives players that hold exactly PART-HOLD-BACK back five parts of margin.
MIN_PART_HOLD_BACK = 1.0

__all__ = ["KINDS", "LL_VERSION", "MIN_PART_HOLD_BACK", "VERSION", "compact_number", "file_pieces",
           "find_track", "format_pdt", "last_complete_piece", "pieces_per_file",
           "playlist_name", "render_master", "render_media", "target_of",
           "window_segments"]


def compact_number(x: float) -> str:
    """Compact decimal (at most 3 places) for attribute values: ``0.6``, ``36``, ``0.214``;
    the DASH MPD writes its durations with it too."""
    s = f"{x:.3f}".rstrip("0").rstrip(".")
    return s or "0"


def _dur(x: float) -> str:
    """Fixed-precision duration for EXTINF / EXT-X-PART."""
    return f"{x:.5f}"


def _ceil_ms(x: float) -> float:
    return math.ceil(x * 1000 - 1e-6) / 1000


_PDT_CACHE: dict[int, str] = {}


def format_pdt(ms: int) -> str:
    """ISO-8601 UTC with milliseconds and ``Z`` for a unix time in integer milliseconds."""
    s = _PDT_CACHE.get(ms)
    if s is None:
        secs, frac = divmod(ms, 1000)
        s = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{frac:03d}Z"
        if len(_PDT_CACHE) > 4096:
            _PDT_CACHE.clear()
        _PDT_CACHE[ms] = s
    return s


def find_track(index: ContentIndex, track_id: str, container: str = "fmp4") -> Track:
    """The track *track_id* in *container*; KeyError when there is none."""
    for t in index.tracks:
        if t.id == track_id and t.container == container:
            return t
    raise KeyError(track_id)


# --------------------------------------------------------------------------- precomputed lines


@dataclass(frozen=True)
class _Lines:
    """Invariant, formatted text of one (track, kind).

    Media URIs depend on the absolute segment number (:mod:`streamlab.live.urls`), so the
    per-file texts are stored *around* the URI: a render writes ``head + uri + tail`` or
    ``uri.join(pieces)``, never formats numbers it can precompute.
    """

    target: int
    header_tail: str          # lines after MEDIA-SEQUENCE/DISCONTINUITY-SEQUENCE (independent + map)
    top: str                  # lines before MEDIA-SEQUENCE
    map_line: str
    entries: tuple[tuple[str, ...], ...]   # per file: text before the URI, per piece (1 for ll/6s)
    part_glue: tuple[tuple[str, ...], ...]  # ll only: per file, uri.join(glue) = all its EXT-X-PART lines
    part_tails: tuple[tuple[str, ...], ...]  # ll only: per file, per part, the text after its URI
    hints: tuple[tuple[tuple[str, str], ...], ...]  # ll only: per file, per part, (head, tail) of the hint
    part_target: float
    skip_until: float
    uri_pre: str = ""                    # sequence-addressed URI before N ("video/720p/n")
    uri_post: tuple[str, str] = ("", "")  # after N: discontinuity, continuous timeline
    #: per timeline (discontinuity, continuous): the text of one listed entry, keyed by
    #: (segment n, piece or parts-listed flag); it only depends on that key, so every
    #: render while the entry stays in the window reuses it (bounded, cleared when full)
    blocks: tuple[dict[tuple[int, int], str], dict[tuple[int, int], str]] = field(
        default_factory=lambda: ({}, {}), compare=False)


def _lines(index: ContentIndex, track: Track, kind: str) -> _Lines:
    cache = index_cache(index)
    key = ("hls", id(track), kind)
    got = cache.get(key)
    if got is not None:
        return got
    map_line = f'#EXT-X-MAP:URI="{track.init}"\n' if track.init else ""
    entries: list[tuple[str, ...]] = []
    part_glue: list[tuple[str, ...]] = []
    part_tails: list[tuple[str, ...]] = []
    hints: list[tuple[tuple[str, str], ...]] = []
    part_target = 0.0
    if kind == "2s":
        pieces = file_pieces(index, track)
        target = target_duration([p.duration for f in pieces for p in f])
        for f in pieces:
            entries.append(tuple(f"#EXTINF:{_dur(p.duration)},\n#EXT-X-BYTERANGE:{p.length}@{p.offset}\n"
                                 for p in f))
    else:
        target = target_duration([s.duration for s in track.segments])
        for seg in track.segments:
            entries.append((f"#EXTINF:{_dur(seg.duration)},\n",))
            if kind == "ll":
                heads = [f'#EXT-X-PART:DURATION={_dur(p.duration)},URI="' for p in seg.parts]
                tails = [f'",BYTERANGE="{p.size}@{p.offset}"'
                         + (",INDEPENDENT=YES\n" if p.independent else "\n") for p in seg.parts]
                part_glue.append(tuple([heads[0]] + [tails[i] + heads[i + 1] for i in range(len(heads) - 1)]
                                       + [tails[-1]]))
                part_tails.append(tuple(tails))
                hints.append(tuple(('#EXT-X-PRELOAD-HINT:TYPE=PART,URI="', f'",BYTERANGE-START={p.offset}\n')
                                   for p in seg.parts))
    if kind == "ll":
        part_target = _part_target(index, track)
        # RFC 8216bis: with different part targets across renditions, PART-HOLD-BACK should
        # be at least three times the largest one; and at least MIN_PART_HOLD_BACK, so a
        # player holding exactly that far back has a few parts of margin (docs/origin.md)
        largest = max([part_target] + [_part_target(index, t) for t in ll_tracks(index)])
        hold_back = max(MIN_PART_HOLD_BACK, 3 * largest)
        # CAN-SKIP-UNTIL must be >= 6 target durations of this playlist; it is the same for
        # every rendition (6 x the largest target), so the video and audio playlists of one
        # master skip the same segments at the same instant.  With a per-playlist value
        # (36 s video, 42 s audio: AAC segments of 6.016 s have target 7) a 36 s window made
        # only the video delta updates skip, and hls.js (1.7) then counts the video
        # playlist's discontinuities without the segment in progress and the audio's with
        # it: at every loop boundary its audio controller waited ("endCC" ahead of main)
        # until the video finished the new loop's first segment -- a stall at each seam
        # (docs/streams.md, "Delta updates").
        skip_until = 6.0 * max(target_duration([s.duration for s in t.segments]) for t in ll_tracks(index))
        top = (f"#EXTM3U\n#EXT-X-VERSION:{LL_VERSION}\n#EXT-X-TARGETDURATION:{target}\n"
               f"#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK={compact_number(hold_back)},"
               f"CAN-SKIP-UNTIL={compact_number(skip_until)}\n#EXT-X-PART-INF:PART-TARGET={compact_number(part_target)}\n")
    else:
        skip_until = 0.0
        top = (f"#EXTM3U\n#EXT-X-VERSION:{VERSION}\n#EXT-X-TARGETDURATION:{target}\n"
               f"#EXT-X-SERVER-CONTROL:HOLD-BACK={compact_number(3.0 * target)}\n")
    pre, ext = seq_prefix(track)
    got = _Lines(target, "#EXT-X-INDEPENDENT-SEGMENTS\n" + map_line, top, map_line, tuple(entries),
                 tuple(part_glue), tuple(part_tails), tuple(hints), part_target, skip_until,
                 pre, (ext, ext + timeline_query(CONTINUOUS)))
    cache[key] = got
    return got


def _part_target(index: ContentIndex, track: Track) -> float:
    longest = max((p.duration for s in track.segments for p in s.parts), default=index.part_duration)
    return _ceil_ms(max(index.part_duration, longest))


def target_of(index: ContentIndex, track: Track, kind: str) -> int:
    """EXT-X-TARGETDURATION of *track*'s *kind* playlist (stable for the item's life)."""
    return _lines(index, track, kind).target




# --------------------------------------------------------------------------- media playlists


def window_segments(index: ContentIndex, window: float) -> int:
    """Number of complete segments a *window*-second playlist lists (at least 1)."""
    return max(1, int(window / index.segment_duration + EPS))


def _last_report(tl: LiveTimeline, track: Track, now: float) -> tuple[int, int]:
    """(LAST-MSN, LAST-PART) of *track*'s LL playlist at *now*."""
    n, p = tl.live_edge(track, now)
    if p < 0:
        n -= 1
        p = len(track.segments[n % tl.count].parts) - 1
    return n, p


def render_media(index: ContentIndex, track_id: str, kind: str, now: float, epoch: float,
                 window: float, *, skip: str | None = None, container: str = "fmp4",
                 timeline: str = DISCONTINUITY) -> str:
    """The live media playlist of *track_id* for *kind* at *now*.

    *skip* is ``None`` (full playlist) or ``"YES"``/``"v2"`` (LL only: Playlist Delta Update;
    segments whose start lies at least CAN-SKIP-UNTIL before the end of the playlist are
    replaced by ``EXT-X-SKIP``; the full playlist is returned when none qualifies).
    *timeline* ``"discontinuity"`` marks every loop start with ``EXT-X-DISCONTINUITY``;
    ``"continuous"`` lists one unbroken timeline (the origin rewrites the decode times of
    the media it serves) and puts ``?timeline=continuous`` on every URI.  An unknown track,
    kind, timeline or container (TS has 6 s playlists only) -> KeyError.
    """
    if kind not in KINDS or timeline not in TIMELINES:
        raise KeyError(kind)
    if container == "ts" and kind != "6s":
        raise KeyError(f"{kind}/ts")
    track = find_track(index, track_id, container)
    cont = timeline == CONTINUOUS
    if kind == "ll":
        return _render_ll(index, track, now, epoch, window, skip, cont)
    if kind == "6s":
        return _render_6s(index, track, now, epoch, window, cont)
    return _render_2s(index, track, now, epoch, window, cont)


def _head(lines: _Lines, msn: int, dseq: int) -> list[str]:
    return [lines.top, f"#EXT-X-MEDIA-SEQUENCE:{msn}\n#EXT-X-DISCONTINUITY-SEQUENCE:{dseq}\n",
            lines.header_tail]


def _render_ll(index: ContentIndex, track: Track, now: float, epoch: float, window: float,
               skip: str | None, cont: bool) -> str:
    tl = LiveTimeline(index, epoch)
    lines = _lines(index, track, "ll")
    count = tl.count
    sd = tl.sd
    n, p = tl.live_edge(track, now)
    first = max(0, n - window_segments(index, window))
    epoch_ms = round(epoch * 1000)
    sd_ms = round(sd * 1000)
    pre, post = lines.uri_pre, lines.uri_post[cont]
    # parts are listed for the in-progress segment and the complete segments in the last
    # 3 target durations
    parts_from = n - max(1, math.ceil(3 * lines.target / sd - EPS))
    skipped = 0
    if skip is not None:
        ends = part_ends(index, track)[n % count]
        end_rel = n * sd + (ends[p] if p >= 0 else 0.0)
        # segment m is skipped when it starts at least CAN-SKIP-UNTIL before the playlist end
        last_skippable = math.floor((end_rel - lines.skip_until + EPS) / sd)
        skipped = max(0, min(last_skippable, n - 1) - first + 1)
    out = _head(lines, first, 0 if cont else first // count)
    start = first
    if skipped:
        out.append(f"#EXT-X-SKIP:SKIPPED-SEGMENTS={skipped}\n")
        start = first + skipped
    entries, glue = lines.entries, lines.part_glue
    blocks = lines.blocks[cont]
    for m in range(start, n):
        f = m % count
        if m == first or f == 0:
            out.append(_boundary(lines, m, first, count, epoch_ms, sd_ms, cont))
        key = (m, int(m >= parts_from))
        text = blocks.get(key)
        if text is None:
            uri = f"{pre}{m}{post}"
            text = (uri.join(glue[f]) if key[1] else "") + f"{entries[f][0]}{uri}\n"
            _remember(blocks, key, text)
        out.append(text)
    # the in-progress segment: its published parts, then the hint for the next part (the
    # same text for every render until the next part is out: kept under key (n, -2 - p))
    f = n % count
    out.append(_boundary(lines, n, first, count, epoch_ms, sd_ms, cont))
    key = (n, -2 - p)
    text = blocks.get(key)
    if text is None:
        uri = f"{pre}{n}{post}"
        head, tail = lines.hints[f][p + 1]
        text = (f"{uri.join(glue[f][:p + 1])}{uri}{lines.part_tails[f][p]}" if p >= 0 else "") + \
            f"{head}{uri}{tail}"
        _remember(blocks, key, text)
    out.append(text)
    report_timeline = CONTINUOUS if cont else DISCONTINUITY
    for other in ll_tracks(index):
        if other is track:
            continue
        msn, part = _last_report(tl, other, now)
        out.append(f'#EXT-X-RENDITION-REPORT:URI="{playlist_name("ll", other.id, timeline=report_timeline)}",'
                   f"LAST-MSN={msn},LAST-PART={part}\n")
    return "".join(out)


def _render_6s(index: ContentIndex, track: Track, now: float, epoch: float, window: float,
               cont: bool) -> str:
    tl = LiveTimeline(index, epoch)
    lines = _lines(index, track, "6s")
    count = tl.count
    n = tl.in_progress(now)
    first = max(0, n - window_segments(index, window))
    epoch_ms, sd_ms = round(epoch * 1000), round(tl.sd * 1000)
    pre, post = lines.uri_pre, lines.uri_post[cont]
    out = _head(lines, first, 0 if cont else first // count)
    entries = lines.entries
    blocks = lines.blocks[cont]
    for m in range(first, n):
        f = m % count
        if m == first or f == 0:
            out.append(_boundary(lines, m, first, count, epoch_ms, sd_ms, cont))
        text = blocks.get((m, 0))
        if text is None:
            text = f"{entries[f][0]}{pre}{m}{post}\n"
            _remember(blocks, (m, 0), text)
        out.append(text)
    return "".join(out)


def _remember(blocks: dict[tuple[int, int], str], key: tuple[int, int], text: str) -> None:
    """Keep *text* for *key*; the window moves forward, so a full dict is simply emptied."""
    if len(blocks) >= 256:
        blocks.clear()
    blocks[key] = text


def _boundary(lines: _Lines, m: int, first: int, count: int, epoch_ms: int, sd_ms: int,
              cont: bool = False) -> str:
    """The tags before segment *m*: PROGRAM-DATE-TIME on the first listed segment, and
    (discontinuity timeline) DISCONTINUITY + MAP + PROGRAM-DATE-TIME at the start of every
    loop."""
    if m == first:
        return f"#EXT-X-PROGRAM-DATE-TIME:{format_pdt(epoch_ms + m * sd_ms)}\n"
    if m % count == 0 and not cont:
        return (f"#EXT-X-DISCONTINUITY\n{lines.map_line}"
                f"#EXT-X-PROGRAM-DATE-TIME:{format_pdt(epoch_ms + m * sd_ms)}\n")
    return ""


def _render_2s(index: ContentIndex, track: Track, now: float, epoch: float, window: float,
               cont: bool = False) -> str:
    tl = LiveTimeline(index, epoch)
    lines = _lines(index, track, "2s")
    pieces = file_pieces(index, track)
    count = tl.count
    k = pieces_per_file(index)
    last = last_complete_piece(index, track, now, epoch)
    first = max(0, last - max(1, round(window * k / tl.sd)) + 1)
    epoch_ms, sd_ms = round(epoch * 1000), round(tl.sd * 1000)
    pre, post = lines.uri_pre, lines.uri_post[cont]
    out = _head(lines, first, 0 if cont else (first // k) // count)
    entries = lines.entries
    blocks = lines.blocks[cont]
    a = first
    while a <= last:
        m, j = divmod(a, k)
        f = m % count
        if a == first:
            ms = epoch_ms + m * sd_ms + round(pieces[f][j].start * 1000)
            out.append(f"#EXT-X-PROGRAM-DATE-TIME:{format_pdt(ms)}\n")
        elif f == 0 and j == 0 and not cont:
            out.append(f"#EXT-X-DISCONTINUITY\n{lines.map_line}"
                       f"#EXT-X-PROGRAM-DATE-TIME:{format_pdt(epoch_ms + m * sd_ms)}\n")
        # the pieces of segment m inside [a, last], as one cached block (key j = its first
        # piece, -1 - j when it stops before the segment's end)
        stop = min(last, (m + 1) * k - 1) - m * k
        key = (m, j if stop == k - 1 else -1 - (j * 64 + stop))
        text = blocks.get(key)
        if text is None:
            uri = f"{pre}{m}{post}\n"
            text = "".join(f"{entries[f][i]}{uri}" for i in range(j, stop + 1))
            _remember(blocks, key, text)
        out.append(text)
        a = m * k + stop + 1
    return "".join(out)
