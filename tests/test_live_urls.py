"""Sequence-addressed media URLs (#11 item 3): every URL a manifest lists names one
segment, so the pacing decision is exact whatever the window.

The synthetic item loops every 24 s (4 files of 6 s); windows of 12 s, 24 s and 48 s are
shorter than, equal to and longer than the loop.  With 48 s the same *file* is listed
twice (the previous loop's complete copy and the one in production): the URLs differ and
so do the decisions.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import m3u8
import pytest

from streamlab.live import blocking, dash, hls
from streamlab.live.timeline import LiveTimeline
from streamlab.live.urls import CONTINUOUS, MediaRef, parse_media, seq_path, timeline_query
from tests.live_helpers import EPOCH, make_index

IDX = make_index(with_ts=True)
V = IDX.track("720p")
A = IDX.track("audio")
TL = LiveTimeline(IDX, EPOCH)
COUNT = IDX.segment_count
NS = {"d": "urn:mpeg:dash:schema:mpd:2011"}


# ------------------------------------------------------------------ URL -> (sequence, file)


@pytest.mark.parametrize(("rel", "track", "file_number", "seq"), [
    ("video/720p/n0.m4s", "720p", 1, 0),
    ("video/720p/n7.m4s", "720p", 4, 7),
    ("video/360p/n36127.m4s", "360p", 36127 % 4 + 1, 36127),
    ("audio/audio/n40001.m4s", "audio", 2, 40001),
    ("video/720p/seg_00003.m4s", "720p", 3, None),  # old style: a file, no sequence
    ("audio/audio/seg_00001.m4s", "audio", 1, None),
])
def test_url_names_a_sequence_and_a_file(rel, track, file_number, seq):
    ref = parse_media(IDX, rel)
    assert ref is not None
    assert (ref.track.id, ref.track.container, ref.file_number, ref.seq) == \
        (track, "fmp4", file_number, seq)


def test_ts_urls_map_to_the_ts_track():
    ts = next(t for t in IDX.ts_tracks if t.id == "720p")
    ref = parse_media(IDX, "ts/720p/n9.ts")
    assert ref == MediaRef(ts, 2, 9)
    assert seq_path(ts, 9) == "ts/720p/n9.ts"


@pytest.mark.parametrize("rel", [
    "video/720p/init.mp4", "video/720p/n.m4s", "video/720p/n-3.m4s", "video/720p/nx1.m4s",
    "video/720p/n1.mp4", "video/1080p/n1.m4s", "video/720p/seg_00005.m4s", "video/720p/seg_0001.m4s",
    "video/720p/n1234567890123456.m4s", "audio/720p/n1.m4s",
])
def test_other_paths_are_not_segments(rel):
    assert parse_media(IDX, rel) is None


def test_seq_path_round_trips_and_carries_the_timeline():
    for n in (0, 3, 4, 123456789):
        for t in (V, A):
            assert parse_media(IDX, seq_path(t, n)) == MediaRef(t, n % COUNT + 1, n)
    assert seq_path(V, 5, CONTINUOUS) == "video/720p/n5.m4s?timeline=continuous"
    assert timeline_query("discontinuity") == ""


# ------------------------------------------------------------------ the pacing decision


def _listed(text: str) -> list[str]:
    """Every media URI of an LL playlist: segments, parts and the preload hint."""
    uris = re.findall(r'URI="([^"]+\.m4s[^"]*)"', text)
    uris += [line for line in text.splitlines() if line and not line.startswith("#")]
    return uris


def _decide(rel: str, now: float, last: int | None = None) -> str:
    """"paced" or "at once" for a GET of *rel* (up to byte *last*, default the whole file)."""
    ref = parse_media(IDX, rel.split("?", 1)[0])
    assert ref is not None and ref.seq is not None, rel
    sched = blocking.seq_schedule(IDX, ref.track, ref.seq, now, EPOCH)
    if last is None:
        last = ref.track.segments[ref.file_number - 1].size - 1
    return "paced" if sched and blocking.released_at(sched, last) > now else "at once"


@pytest.mark.parametrize("window", [12, 24, 48])
@pytest.mark.parametrize("into", [0.05, 3.05, 5.99])
def test_only_the_segment_in_production_is_paced(window, into):
    """At every window length: each complete listed segment is served at once, the one in
    production (its parts and preload hint) is paced, and no two listed URLs of different
    segments are the same."""
    n_live = 10 * COUNT + 2  # file 3 of loop 10
    now = EPOCH + n_live * 6 + into
    for track in (V, A):
        text = hls.render_media(IDX, track.id, "ll", now, EPOCH, window)
        decisions: dict[int, str] = {}
        for uri in _listed(text):
            ref = parse_media(IDX, uri)
            assert ref is not None and ref.seq is not None
            decisions.setdefault(ref.seq, _decide(uri, now))
        assert decisions.pop(n_live) == "paced"
        assert decisions and set(decisions.values()) == {"at once"}
        assert max(decisions) == n_live - 1
        # listed parts of the live segment are published: their byte ranges go at once
        pl = m3u8.loads(text)
        for part in pl.segments[-1].parts if pl.segments[-1].uri is None else ():
            size, off = map(int, part.byterange.strip('"').split("@"))
            assert _decide(part.uri, now, off + size - 1) == "at once"
        # 6 s playlists list complete segments, 2 s playlists complete pieces (maybe of the
        # live segment): all at once
        pl = m3u8.loads(hls.render_media(IDX, track.id, "6s", now, EPOCH, window))
        assert {_decide(s.uri, now) for s in pl.segments} == {"at once"}
        pl = m3u8.loads(hls.render_media(IDX, track.id, "2s", now, EPOCH, window))
        for s in pl.segments:
            size, off = map(int, s.byterange.split("@"))
            assert _decide(s.uri, now, off + size - 1) == "at once"


def test_window_longer_than_the_loop_lists_one_file_twice_under_two_names():
    n_live = 10 * COUNT + 2
    now = EPOCH + n_live * 6 + 3.05
    pl = m3u8.loads(hls.render_media(IDX, "720p", "ll", now, EPOCH, 36))  # 6 complete + live
    uris = [s.uri for s in pl.segments if s.uri] + [pl.preload_hint.uri]
    files = [parse_media(IDX, u).file_number for u in uris]
    # file 3 is the previous loop's complete segment n_live - 4 and the live n_live
    assert files.count(3) == 2
    old, live = (u for u, f in zip(uris, files, strict=True) if f == 3)
    assert (old, live) == (f"video/720p/n{n_live - 4}.m4s", f"video/720p/n{n_live}.m4s")
    assert (_decide(old, now), _decide(live, now)) == ("at once", "paced")


def test_paced_schedule_releases_each_part_at_its_publish_time():
    n = 10 * COUNT + 1
    now = EPOCH + n * 6 + 1.0
    sched = blocking.seq_schedule(IDX, V, n, now, EPOCH)
    seg = V.segments[n % COUNT]
    assert sched is not None and len(sched) == len(seg.parts)
    assert sched[0][0].offset == 0 and sum(p.size for p, _ in sched) == seg.size
    assert [t for _, t in sched] == [TL.part_publish_time(V, n, i) for i in range(len(seg.parts))]
    # the next segment (a preload hint at a boundary) is paced too; a complete one is not
    assert blocking.seq_schedule(IDX, V, n + 1, now, EPOCH) is not None
    assert blocking.seq_schedule(IDX, V, n - 1, now, EPOCH) is None
    assert blocking.seq_schedule(IDX, V, n, EPOCH + (n + 1) * 6, EPOCH) is None


def test_dash_numbers_are_sequence_numbers():
    """$Number$ = n in both timelines, so a DASH request is as unambiguous as an HLS one."""
    now = EPOCH + (10 * COUNT + 2) * 6 + 3.0
    for kind in ("6s", "ll"):
        root = ET.fromstring(dash.render_mpd(IDX, kind, now, EPOCH, 48))
        for period in root.findall("d:Period", NS):
            k = int(period.get("id").split("-")[1])
            st = period.find("d:AdaptationSet/d:Representation/d:SegmentTemplate", NS)
            assert st.get("media") == "video/720p/n$Number$.m4s"
            assert int(st.get("startNumber")) == k * COUNT
        root = ET.fromstring(dash.render_mpd(IDX, kind, now, EPOCH, 48, timeline=CONTINUOUS))
        (period,) = root.findall("d:Period", NS)
        assert period.get("start") == "PT0S" and period.get("duration") is None
        st = period.find("d:AdaptationSet/d:Representation/d:SegmentTemplate", NS)
        assert st.get("startNumber") == "0"
        assert st.get("media") == "video/720p/n$Number$.m4s?timeline=continuous"
    root = ET.fromstring(dash.render_mpd(IDX, "2s", now, EPOCH, 48))
    for url in root.iter("{urn:mpeg:dash:schema:mpd:2011}SegmentURL"):
        ref = parse_media(IDX, url.get("media"))
        assert ref is not None and ref.seq is not None


@pytest.mark.parametrize("timeline", ["discontinuity", CONTINUOUS])
def test_cached_entry_texts_equal_a_cold_render(timeline):
    """The renderers keep each listed entry's text by (n, piece): a warm index renders
    exactly what a fresh copy (cold caches) renders, at every step of a minute."""
    from streamlab.media.index import index_to_json, parse_index

    warm = make_index(with_ts=True)
    t0 = EPOCH + 10_000 * 6
    for i in range(150):
        now = t0 + i * 0.4
        cold = parse_index(index_to_json(warm))
        for kind in ("ll", "2s", "6s"):
            for track in ("720p", "audio"):
                assert hls.render_media(warm, track, kind, now, EPOCH, 30, timeline=timeline) == \
                    hls.render_media(cold, track, kind, now, EPOCH, 30, timeline=timeline), (kind, track, i)
        for kind in ("ll", "2s", "6s"):
            assert dash.render_mpd(warm, kind, now, EPOCH, 30, timeline=timeline) == \
                dash.render_mpd(cold, kind, now, EPOCH, 30, timeline=timeline), (kind, i)
