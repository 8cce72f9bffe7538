"""DASH renderer (spec/streams.md section 4): dynamic MPDs for LL, 2 s and 6 s.

Pure and deterministic.  One ``Period`` per loop touched by the window (``id="loop-<k>"``,
``start=PT<k*T>S``), so loop boundaries are period boundaries.

* ``6s`` and ``ll``: per Representation a ``SegmentTemplate`` with ``$Number$``,
  ``startNumber="1"`` and ``@duration = segment_duration``: numbers are the file numbers on
  disk.  LL adds ``availabilityTimeOffset = segment_duration - part_duration`` and
  ``availabilityTimeComplete="false"`` (the origin streams the segment in progress part by
  part, see :func:`streamlab.live.blocking.chunk_schedule`) and a ``ServiceDescription``.
  Every Period carries ``duration = T`` (the loop length is known), so a player never asks
  for a file number past ``segment_count``; the next loop's Period appears once that loop
  has started, and ``minimumUpdatePeriod`` is short (1 s LL, 2 s otherwise).
* ``2s``: per Representation a ``SegmentList`` with a ``SegmentTimeline`` (real durations,
  in the track's timescale) and one ``SegmentURL media=<file> mediaRange=<first-last>`` per
  ~2 s piece (the same pieces as the 2 s HLS playlists); only complete pieces inside the
  window are listed, so ``minimumUpdatePeriod`` is one piece.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from streamlab.live.hls import compact_number, format_pdt
from streamlab.live.pieces import file_pieces, last_complete_piece, pieces_per_file
from streamlab.live.timeline import EPS, LiveTimeline, index_cache
from streamlab.live.urls import CONTINUOUS, DISCONTINUITY, TIMELINES, seq_prefix, timeline_query
from streamlab.media.index import ContentIndex, Track

KINDS = ("ll", "2s", "6s")

UTC_SCHEME = "urn:mpeg:dash:utc:http-iso:2014"
PROFILE_LIVE = "urn:mpeg:dash:profile:isoff-live:2011"
PROFILE_LL = "http://www.dashif.org/guidelines/low-latency-live-v5"

#: minimumUpdatePeriod of LL and of 6 s MPDs.  The next loop's Period only appears once the
#: loop has started (announcing it earlier makes dash.js switch SourceBuffer timestamp
#: offsets while the last, chunk-streamed segment of the loop is still arriving, which
#: misplaces it by a whole loop); a short update period keeps the switch seamless.
LL_UPDATE_PERIOD = 1.0
UPDATE_PERIOD = 2.0


def duration(x: float) -> str:
    """xs:duration in seconds: ``PT6S``, ``PT0.2S``."""
    return f"PT{compact_number(x)}S"


def _iso(t: float) -> str:
    ms = round(t * 1000)
    s = format_pdt(ms)
    return s.replace(".000Z", "Z")


def _attr(s: str) -> str:
    return s.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")


_NUM = re.compile(r"\{number(?::0?(\d+)d)?\}")


def dash_template(segment_template: str) -> str:
    """A track's ``seg_{number:05d}.m4s`` template as a DASH ``$Number%05d$`` template."""
    def sub(m: re.Match[str]) -> str:
        return f"$Number%0{m.group(1)}d$" if m.group(1) else "$Number$"
    return _NUM.sub(sub, segment_template.replace("$", "$$"))


def _frame_rate(fr: float) -> str:
    if abs(fr - round(fr)) < 1e-6:
        return str(round(fr))
    return f"{round(fr * 1000)}/1000"


def _timescale(index: ContentIndex, track: Track) -> int:
    ts = track.timescale or 1000
    if abs(index.segment_duration * ts - round(index.segment_duration * ts)) > 1e-6:
        return 1000
    return ts


@dataclass(frozen=True)
class _Timing:
    mup: float
    spd: float
    max_seg: float
    min_buf: float


def _timing(index: ContentIndex, kind: str) -> _Timing:
    cache = index_cache(index)
    got = cache.get(("dash-timing", kind))
    if got is None:
        got = cache[("dash-timing", kind)] = _compute_timing(index, kind)
    return got


def _compute_timing(index: ContentIndex, kind: str) -> _Timing:
    sd = index.segment_duration
    tracks = index.video + index.audio
    if kind == "2s":
        piece = sd / pieces_per_file(index)
        longest = max(p.duration for t in tracks for f in file_pieces(index, t) for p in f)
        return _Timing(piece, 3 * piece, _ceil_ms(longest), piece)
    longest = max(s.duration for t in tracks for s in t.segments)
    if kind == "ll":
        return _Timing(LL_UPDATE_PERIOD, max(1.0, 3 * index.gop_duration), _ceil_ms(longest), 1.0)
    return _Timing(min(sd, UPDATE_PERIOD), 3 * sd, _ceil_ms(longest), sd)


def _ceil_ms(x: float) -> float:
    return math.ceil(x * 1000 - 1e-6) / 1000


def _rep_open(track: Track) -> str:
    a = [f'id="{_attr(track.id)}"', f'bandwidth="{track.bandwidth}"', f'codecs="{_attr(track.codecs)}"']
    if track.type == "video":
        if track.width and track.height:
            a += [f'width="{track.width}"', f'height="{track.height}"', 'sar="1:1"']
        if track.frame_rate:
            a.append(f'frameRate="{_frame_rate(track.frame_rate)}"')
        return f"      <Representation {' '.join(a)}>\n"
    if track.sample_rate:
        a.append(f'audioSamplingRate="{track.sample_rate}"')
    out = f"      <Representation {' '.join(a)}>\n"
    if track.channels:
        out += ('        <AudioChannelConfiguration schemeIdUri="urn:mpeg:dash:23003:3:'
                f'audio_channel_configuration:2011" value="{track.channels}"/>\n')
    return out


def _aset_open(i: int, ctype: str, tracks: tuple[Track, ...]) -> str:
    a = [f'id="{i}"', f'contentType="{ctype}"', f'mimeType="{ctype}/mp4"', 'segmentAlignment="true"',
         'startWithSAP="1"']
    if ctype == "video":
        a += [f'maxWidth="{max(t.width for t in tracks)}"', f'maxHeight="{max(t.height for t in tracks)}"']
    else:
        a.append(f'lang="{_attr(tracks[0].language)}"')
    return f"    <AdaptationSet {' '.join(a)}>\n"


def _groups(index: ContentIndex) -> list[tuple[str, tuple[Track, ...]]]:
    out: list[tuple[str, tuple[Track, ...]]] = [("video", index.video)]
    if index.audio:
        out.append(("audio", index.audio))
    return out


#: placeholder for a Period's startNumber in the cached SegmentTemplate bodies
_START = "\x02"


def _template_body(index: ContentIndex, kind: str, timeline: str = DISCONTINUITY) -> str:
    """The AdaptationSets of a 6s/LL Period with ``startNumber`` left as :data:`_START`.

    ``$Number$`` is the absolute segment number ``n`` (sequence-addressed URLs,
    :mod:`streamlab.live.urls`): a loop's Period starts at ``k x count`` in the
    discontinuity timeline, the single continuous Period at 0.
    """
    cache = index_cache(index)
    key = ("dash-body", kind, timeline)
    got = cache.get(key)
    if got is not None:
        return got
    out = []
    ato = ""
    if kind == "ll":
        ato = (f' availabilityTimeOffset="{compact_number(index.segment_duration - index.part_duration)}"'
               ' availabilityTimeComplete="false"')
    query = timeline_query(timeline)
    for i, (ctype, tracks) in enumerate(_groups(index)):
        out.append(_aset_open(i, ctype, tracks))
        for t in tracks:
            ts = _timescale(index, t)
            out.append(_rep_open(t))
            dur = round(index.segment_duration * ts)
            pre, ext = seq_prefix(t)
            media = f"{pre.replace('$', '$$')}$Number${ext}{query}"
            out.append(f'        <SegmentTemplate timescale="{ts}" duration="{dur}"'
                       f' startNumber="{_START}" initialization="{_attr(t.init)}"'
                       f' media="{_attr(media)}"{ato}/>\n')
            out.append("      </Representation>\n")
        out.append("    </AdaptationSet>\n")
    got = "".join(out)
    cache[key] = got
    return got


def _period_body(index: ContentIndex, kind: str, timeline: str, start_number: int) -> str:
    """:func:`_template_body` with its startNumber, kept for the few Periods in use."""
    recent = index_cache(index).setdefault("dash-periods", {})
    key = (kind, timeline, start_number)
    got = recent.get(key)
    if got is None:
        if len(recent) >= 16:
            recent.clear()
        got = recent[key] = _template_body(index, kind, timeline).replace(_START, str(start_number))
    return got


@dataclass(frozen=True)
class _ListData:
    ts: int
    loop_ticks: int                                  # loop length in the track's timescale
    ticks: tuple[tuple[tuple[int, int], ...], ...]   # per file, per piece: (t, d) in the loop
    urls: tuple[tuple[tuple[str, str], ...], ...]    # per file, per piece: SegmentURL around the URI


def _list_data(index: ContentIndex, track: Track) -> _ListData:
    cache = index_cache(index)
    key = ("dash-list", id(track))
    got = cache.get(key)
    if got is not None:
        return got
    ts = track.timescale or 1000
    pieces = file_pieces(index, track)
    starts: list[float] = []
    acc = 0.0
    for seg, f in zip(track.segments, pieces, strict=True):
        starts.extend(acc + p.start for p in f)
        acc += seg.duration
    bounds = [round(s * ts) for s in starts] + [round(acc * ts)]
    ticks, urls = [], []
    i = 0
    for f in pieces:
        ft, fu = [], []
        for p in f:
            ft.append((bounds[i], bounds[i + 1] - bounds[i]))
            rng = f"{p.offset}-{p.offset + p.length - 1}"
            fu.append(('          <SegmentURL media="', f'" mediaRange="{rng}"/>\n'))
            i += 1
        ticks.append(tuple(ft))
        urls.append(tuple(fu))
    got = _ListData(ts, round(index.loop_duration * ts), tuple(ticks), tuple(urls))
    cache[key] = got
    return got


def _list_body(index: ContentIndex, pieces: list[tuple[int, int]], count: int, timeline: str) -> str:
    """AdaptationSets of a 2 s Period listing the pieces ``(absolute segment, piece index)``.

    Discontinuity timeline: times restart at 0 with every loop (one Period per loop);
    continuous: the loop's times are shifted by ``k x loop`` like the media's decode times.
    """
    cont = timeline == CONTINUOUS
    query = timeline_query(timeline)
    out = []
    for i, (ctype, tracks) in enumerate(_groups(index)):
        out.append(_aset_open(i, ctype, tracks))
        for t in tracks:
            data = _list_data(index, t)
            pre, ext = seq_prefix(t)
            out.append(_rep_open(t))
            out.append(f'        <SegmentList timescale="{data.ts}">\n'
                       f'          <Initialization sourceURL="{_attr(t.init)}"/>\n'
                       "          <SegmentTimeline>\n")
            # one S per piece (no @r): dash.js maps SegmentURLs to S elements, not to the
            # segments an S with @r expands to
            expect = None
            for m, j in pieces:
                tt, d = data.ticks[m % count][j]
                if cont:
                    tt += (m // count) * data.loop_ticks
                out.append(_s(None if expect == tt else tt, d))
                expect = tt + d
            out.append("          </SegmentTimeline>\n")
            for m, j in pieces:
                head, tail = data.urls[m % count][j]
                out.append(f"{head}{_attr(pre)}{m}{ext}{_attr(query)}{tail}")
            out.append("        </SegmentList>\n      </Representation>\n")
        out.append("    </AdaptationSet>\n")
    return "".join(out)


def _s(t: int | None, d: int) -> str:
    return "            <S" + (f' t="{t}"' if t is not None else "") + f' d="{d}"/>\n'


def render_mpd(index: ContentIndex, kind: str, now: float, epoch: float, window: float,
               *, utc_timing_url: str = "/go-live/time", timeline: str = DISCONTINUITY) -> str:
    """The dynamic MPD for *kind* (``ll``/``2s``/``6s``) at *now*; unknown kind or
    timeline -> KeyError.

    *utc_timing_url* is the ``UTCTiming`` value (pass an absolute URL when the player page
    is served from another origin: dash.js resolves it against the page).  *timeline*
    ``"discontinuity"``: one Period per loop; ``"continuous"``: one Period from the
    epoch, media times rising across loops (the origin rewrites the decode times).
    """
    if kind not in KINDS or timeline not in TIMELINES:
        raise KeyError(kind)
    cont = timeline == CONTINUOUS
    tl = LiveTimeline(index, epoch)
    loop_t = index.loop_duration
    tim = _timing(index, kind)
    rel = now - epoch
    head = ['<?xml version="1.0" encoding="UTF-8"?>\n'
            '<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" '
            f'profiles="{PROFILE_LIVE + ("," + PROFILE_LL if kind == "ll" else "")}" type="dynamic" '
            f'availabilityStartTime="{_iso(epoch)}" publishTime="{format_pdt(round(now * 1000))}" '
            f'minimumUpdatePeriod="{duration(tim.mup)}" timeShiftBufferDepth="{duration(window)}" '
            f'suggestedPresentationDelay="{duration(tim.spd)}" maxSegmentDuration="{duration(tim.max_seg)}" '
            f'minBufferTime="{duration(tim.min_buf)}">\n']
    if kind == "ll":
        target = round(tim.spd * 1000)
        head.append('  <ServiceDescription id="0">\n'
                    f'    <Latency referenceId="0" target="{target}" min="{round(target * 2 / 3)}"'
                    f' max="{target * 2}"/>\n'
                    '    <PlaybackRate min="0.96" max="1.04"/>\n  </ServiceDescription>\n')
    periods: list[tuple[int, str]] = []
    if kind == "2s":
        k_per = pieces_per_file(index)
        last = last_complete_piece(index, index.video[0], now, epoch)
        first = max(0, last - max(1, round(window * k_per / index.segment_duration)) + 1)
        recent = index_cache(index).setdefault("dash-2s-recent", {})
        periods = recent.get((first, last, timeline))
        if periods is None:
            by_loop: dict[int, list[tuple[int, int]]] = {}
            for a in range(first, last + 1):
                m, j = divmod(a, k_per)
                by_loop.setdefault(0 if cont else m // tl.count, []).append((m, j))
            periods = [(k, _list_body(index, by_loop[k], tl.count, timeline)) for k in sorted(by_loop)]
            if len(recent) >= 8:  # the window moves forward: only the newest few are reused
                recent.clear()
            recent[(first, last, timeline)] = periods
    elif cont:
        periods = [(0, _period_body(index, kind, timeline, 0))]
    else:
        n = tl.in_progress(now)
        k_first = math.floor(max(0.0, rel - window) / loop_t + EPS)
        k_last = tl.loop_of(n)
        periods = [(k, _period_body(index, kind, timeline, k * tl.count)) for k in range(k_first, k_last + 1)]
    if cont:
        # one Period for ever: no duration, times since the epoch
        for _k, body in periods:
            head.append('  <Period id="live" start="PT0S">\n')
            head.append(body)
            head.append("  </Period>\n")
    else:
        loop_dur = duration(loop_t)
        for k, body in periods:
            head.append(f'  <Period id="loop-{k}" start="{duration(k * loop_t)}" duration="{loop_dur}">\n')
            head.append(body)
            head.append("  </Period>\n")
    head.append(f'  <UTCTiming schemeIdUri="{UTC_SCHEME}" value="{_attr(utc_timing_url)}"/>\n</MPD>\n')
    return "".join(head)
