"""HLS renderers (spec/streams.md section 3): masters and live media playlists.

Pure functions of ``(index, kind, now, epoch, window, request params)``; the output is
byte-identical for identical inputs.  Everything that does not depend on ``now`` (the
formatted per-file and per-part lines of a track) is computed once per (index, track,
kind) and cached with the index (:func:`streamlab.live.timeline.index_cache`), so a
render only slices and joins precomputed strings.

Kinds: ``"ll"`` (LL-HLS: parts, preload hint, rendition reports, delta updates),
``"2s"`` (each 6 s file split into byte-range pieces that start at independent parts),
``"6s"`` (whole files).  URIs are relative to ``/go-live/<content>/``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from streamlab.live.timeline import EPS, LiveTimeline, index_cache, part_ends
from streamlab.live.urls import CONTINUOUS, DISCONTINUITY, TIMELINES, seq_prefix, timeline_query
from streamlab.media.index import ContentIndex, Track, target_duration

KINDS = ("ll", "2s", "6s")

#: Floor of PART-HOLD-BACK (seconds).  Three 0.2 s parts (0.6 s) left shaka 5 starving
#: at the live edge on a loaded machine (a mid-segment stall once its latency fell to
#: ~1 s); 1 s gives players that hold exactly PART-HOLD-BACK back five parts of margin.
MIN_PART_HOLD_BACK = 1.0

#: EXT-X-VERSION of LL media playlists (EXT-X-SKIP needs 9) and of non-LL ones.
LL_VERSION = 9
VERSION = 6


def playlist_name(kind: str, track_id: str, container: str = "fmp4", timeline: str = DISCONTINUITY) -> str:
    """Relative URI of the media playlist of *track_id* for *kind* (and container, and
    timeline: the continuous mode is carried in the query so the player stays in it)."""
    if kind == "ll":
        name = f"playlist_{track_id}.m3u8"
    else:
        name = f"playlist_{kind}_{track_id}.m3u8"
    query = []
    if container == "ts":
        query.append("format=ts")
    if timeline == CONTINUOUS:
        query.append("timeline=continuous")
    return name + ("?" + "&".join(query) if query else "")


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


# --------------------------------------------------------------------------- pieces (2 s)


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
            firsts.append(min(cands, key=lambda i, t=target: (abs(starts[i] - t), i)))
        pieces = []
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
        largest = max([part_target] + [_part_target(index, t) for t in _ll_tracks(index)])
        hold_back = max(MIN_PART_HOLD_BACK, 3 * largest)
        skip_until = 6.0 * target
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


# --------------------------------------------------------------------------- masters


def _ll_tracks(index: ContentIndex) -> tuple[Track, ...]:
    """Every rendition listed in an fMP4 master (video rungs then audio tracks)."""
    return index.video + index.audio


def render_master(index: ContentIndex, kind: str, container: str = "fmp4",
                  timeline: str = DISCONTINUITY) -> str:
    """The multivariant playlist for *kind* (``ll``/``2s``/``6s``).

    ``container="ts"`` renders the MPEG-TS master (6 s only; KeyError when the item has no
    TS renditions or for another kind).  Unknown kind or timeline -> KeyError.  The
    media playlist URIs carry the timeline (``?timeline=continuous``).
    """
    if kind not in KINDS or timeline not in TIMELINES:
        raise KeyError(kind)
    cache = index_cache(index)
    key = ("master", kind, container, timeline)
    got = cache.get(key)
    if got is not None:
        return got
    version = LL_VERSION if kind == "ll" else VERSION
    out = [f"#EXTM3U\n#EXT-X-VERSION:{version}\n#EXT-X-INDEPENDENT-SEGMENTS\n"]
    if container == "ts":
        if kind != "6s" or not index.ts_tracks:
            raise KeyError(f"{kind}/ts")
        videos = sorted((t for t in index.ts_tracks if t.type == "video"), key=lambda t: -t.bandwidth)
        audios = [t for t in index.ts_tracks if t.type == "audio"]
    elif container == "fmp4":
        videos, audios = list(index.video), list(index.audio)
    else:
        raise KeyError(container)
    for i, a in enumerate(audios):
        attrs = [f'TYPE=AUDIO,GROUP-ID="audio",NAME="{a.id}",LANGUAGE="{a.language}"',
                 f'DEFAULT={"YES" if i == 0 else "NO"},AUTOSELECT=YES']
        if a.channels:
            attrs.append(f'CHANNELS="{a.channels}"')
        attrs.append(f'URI="{playlist_name(kind, a.id, container, timeline)}"')
        out.append("#EXT-X-MEDIA:" + ",".join(attrs) + "\n")
    audio = audios[0] if audios else None
    muxed_audio = index.audio[0] if (container == "ts" and not audios and index.audio) else None
    for v in videos:
        bw, avg, codecs = v.bandwidth, v.average_bandwidth, v.codecs
        if audio is not None:
            bw += max(a.bandwidth for a in audios)
            avg += max(a.average_bandwidth for a in audios)
            codecs = f"{codecs},{audio.codecs}"
        elif muxed_audio is not None and "," not in codecs:
            codecs = f"{codecs},{muxed_audio.codecs}"
        attrs = [f"BANDWIDTH={bw}", f"AVERAGE-BANDWIDTH={avg}", f'CODECS="{codecs}"']
        if v.width and v.height:
            attrs.append(f"RESOLUTION={v.resolution}")
        if v.frame_rate:
            attrs.append(f"FRAME-RATE={v.frame_rate:.3f}")
        if audio is not None:
            attrs.append('AUDIO="audio"')
        uri = playlist_name(kind, v.id, container, timeline)
        out.append("#EXT-X-STREAM-INF:" + ",".join(attrs) + "\n" + uri + "\n")
    got = "".join(out)
    cache[key] = got
    return got


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
        key = (m, m >= parts_from)
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
    for other in _ll_tracks(index):
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


def last_complete_piece(index: ContentIndex, track: Track, now: float, epoch: float) -> int:
    """Absolute number (``n * pieces_per_file + j``) of the newest complete 2 s piece."""
    tl = LiveTimeline(index, epoch)
    k = pieces_per_file(index)
    n = tl.in_progress(now)
    into = now - epoch + EPS - n * tl.sd
    done = sum(1 for pc in file_pieces(index, track)[n % tl.count] if pc.end <= into)
    return n * k + done - 1


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
