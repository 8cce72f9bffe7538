"""HLS renderers: masters, LL / 2 s / 6 s media playlists, delta updates, determinism."""

import datetime as dt
import re

import m3u8
import pytest

from streamlab.live import hls
from streamlab.live.timeline import LiveTimeline
from streamlab.media.index import index_to_json, parse_index
from tests.live_helpers import EPOCH, make_index

IDX = make_index(with_ts=True)
V = IDX.video[0]
A = IDX.audio[0]
TL = LiveTimeline(IDX, EPOCH)


def entries(text):
    """Parse a media playlist by hand: one dict per complete entry (EXTINF)."""
    msn = int(re.search(r"#EXT-X-MEDIA-SEQUENCE:(\d+)", text).group(1))
    dseq = int(re.search(r"#EXT-X-DISCONTINUITY-SEQUENCE:(\d+)", text).group(1))
    m = re.search(r"#EXT-X-SKIP:SKIPPED-SEGMENTS=(\d+)", text)
    if m:
        msn += int(m.group(1))
    out, cur = [], {"parts": [], "disc": False, "pdt": None}
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line == "#EXT-X-DISCONTINUITY":
            cur["disc"] = True
            dseq += 1
        elif line.startswith("#EXT-X-PROGRAM-DATE-TIME:"):
            cur["pdt"] = line.split(":", 1)[1]
        elif line.startswith("#EXT-X-PART:"):
            cur["parts"].append(line)
        elif line.startswith("#EXT-X-BYTERANGE:"):
            cur["byterange"] = line.split(":", 1)[1]
        elif line.startswith("#EXTINF:"):
            cur["duration"] = float(line[8:].rstrip(","))
            j = i + 1
            while lines[j].startswith("#"):
                if lines[j].startswith("#EXT-X-BYTERANGE:"):
                    cur["byterange"] = lines[j].split(":", 1)[1]
                j += 1
            cur.update(msn=msn, uri=lines[j], dseq=dseq)
            out.append(cur)
            msn += 1
            cur = {"parts": [], "disc": False, "pdt": None}
            i = j
        i += 1
    return out, cur


def pdt(ms):
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


# ------------------------------------------------------------------ masters


def test_ll_master():
    text = hls.render_master(IDX, "ll")
    m = m3u8.loads(text)
    assert m.is_variant and m.version == 9 and m.is_independent_segments
    assert [p.uri for p in m.playlists] == ["playlist_720p.m3u8", "playlist_360p.m3u8"]
    p = m.playlists[0].stream_info
    assert p.bandwidth == 2976000 + 132000 and p.average_bandwidth == 2400000 + 128000
    assert p.codecs == "avc1.64001f,mp4a.40.2" and p.resolution == (1280, 720) and p.frame_rate == 30
    assert p.audio == "audio"
    assert [(x.type, x.group_id, x.uri, x.default) for x in m.media] == [
        ("AUDIO", "audio", "playlist_audio.m3u8", "YES")]


@pytest.mark.parametrize("kind", ["2s", "6s"])
def test_non_ll_masters(kind):
    m = m3u8.loads(hls.render_master(IDX, kind))
    assert [p.uri for p in m.playlists] == [f"playlist_{kind}_720p.m3u8", f"playlist_{kind}_360p.m3u8"]
    assert m.media[0].uri == f"playlist_{kind}_audio.m3u8"


def test_ts_master_and_playlist():
    m = m3u8.loads(hls.render_master(IDX, "6s", container="ts"))
    assert [p.uri for p in m.playlists] == ["playlist_6s_720p.m3u8?format=ts",
                                            "playlist_6s_360p.m3u8?format=ts"]
    assert not m.media
    text = hls.render_media(IDX, "720p", "6s", EPOCH + 600.5, EPOCH, 36, container="ts")
    segs, _ = entries(text)
    # 600.5 s in: segment 100 in progress, 98 and 99 (files 3 and 4) are the newest
    assert [s["uri"] for s in segs][-2:] == ["ts/720p/n98.ts", "ts/720p/n99.ts"]
    assert "#EXT-X-MAP" not in text
    with pytest.raises(KeyError):
        hls.render_master(IDX, "ll", container="ts")
    with pytest.raises(KeyError):
        hls.render_master(make_index(), "6s", container="ts")
    with pytest.raises(KeyError):
        hls.render_media(IDX, "720p", "ll", EPOCH + 600, EPOCH, 36, container="ts")


def test_unknown_track_or_kind():
    with pytest.raises(KeyError):
        hls.render_media(IDX, "1080p", "ll", EPOCH + 600, EPOCH, 36)
    with pytest.raises(KeyError):
        hls.render_media(IDX, "720p", "3s", EPOCH + 600, EPOCH, 36)
    with pytest.raises(KeyError):
        hls.render_master(IDX, "1s")


# ------------------------------------------------------------------ LL media playlists


def test_ll_playlist_shape():
    n = 40003  # file 4, last of loop 10000
    now = EPOCH + n * 6 + 2.5
    text = hls.render_media(IDX, "720p", "ll", now, EPOCH, 36)
    m = m3u8.loads(text)
    assert m.version == 9 and m.target_duration == 6
    assert m.server_control.can_block_reload == "YES"
    # 3 x the largest part target of the master's renditions (audio parts run 0.214 s),
    # but at least MIN_PART_HOLD_BACK (1 s)
    assert m.server_control.part_hold_back == pytest.approx(1.0)
    assert m3u8.loads(hls.render_media(make_index(), "audio", "ll", now, EPOCH, 36)) \
        .server_control.part_hold_back == pytest.approx(1.0)
    big = make_index(seg_dur=6.0, part_dur=0.5)  # 3 x 0.5 s parts is above the floor
    assert m3u8.loads(hls.render_media(big, "720p", "ll", now, EPOCH, 36)).server_control.part_hold_back \
        == pytest.approx(1.5)
    # one CAN-SKIP-UNTIL for the whole master: 6 x the largest target (audio's 7 s)
    assert m.server_control.can_skip_until == 42
    assert m.part_inf.part_target == pytest.approx(0.2)
    assert m.media_sequence == n - 6
    segs, tail = entries(text)
    assert [s["msn"] for s in segs] == list(range(n - 6, n))
    assert [s["uri"] for s in segs] == [f"video/720p/n{k}.m4s" for k in range(n - 6, n)]
    # parts for the 3 newest complete segments (3 target durations) and the one in progress
    assert [len(s["parts"]) for s in segs] == [0, 0, 0, 30, 30, 30]
    assert len(tail["parts"]) == 12  # 2.5 s / 0.2 s -> parts 0..11 published
    # discontinuity before the first segment of the loop, PDT on first and after it
    assert [s["disc"] for s in segs] == [False, False, False, True, False, False]
    assert segs[0]["pdt"] == pdt(round(EPOCH * 1000) + (n - 6) * 6000)
    assert segs[3]["pdt"] == pdt(round(EPOCH * 1000) + (n - 3) * 6000)
    assert m.discontinuity_sequence == (n - 6) // 4
    assert [s["dseq"] for s in segs] == [TL.loop_of(s["msn"]) for s in segs]
    assert text.count('#EXT-X-MAP:URI="video/720p/init.mp4"') == 2
    # byte ranges equal the index's part offsets, INDEPENDENT on GOP starts
    seg = V.segments[3]
    for p, line in enumerate(tail["parts"]):
        part = seg.parts[p]
        assert f'URI="video/720p/n{n}.m4s",BYTERANGE="{part.size}@{part.offset}"' in line
        assert line.endswith(",INDEPENDENT=YES") == (p % 5 == 0)
    assert m.preload_hint.hint_type == "PART" and m.preload_hint.uri == f"video/720p/n{n}.m4s"
    assert m.preload_hint.byterange_start == seg.parts[12].offset
    reports = {r.uri: (r.last_msn, r.last_part) for r in m.rendition_reports}
    assert reports == {"playlist_360p.m3u8": (n, 11),
                       "playlist_audio.m3u8": (n, TL.live_edge(A, now)[1])}


def test_ll_playlist_at_segment_start_has_hint_and_previous_reports():
    n = 40004  # first segment of loop 10001, nothing published yet
    text = hls.render_media(IDX, "360p", "ll", EPOCH + n * 6, EPOCH, 36)
    segs, tail = entries(text)
    assert segs[-1]["msn"] == n - 1 and tail["parts"] == []
    assert tail["disc"] and tail["pdt"] == pdt(round(EPOCH * 1000) + n * 6000)
    m = m3u8.loads(text)
    assert m.preload_hint.uri == f"video/360p/n{n}.m4s"
    assert m.preload_hint.byterange_start == IDX.video[1].segments[0].parts[0].offset
    reports = {r.uri: (r.last_msn, r.last_part) for r in m.rendition_reports}
    assert reports["playlist_720p.m3u8"] == (n - 1, 29)
    assert reports["playlist_audio.m3u8"] == (n - 1, len(A.segments[3].parts) - 1)


def test_audio_playlist_uses_real_durations():
    text = hls.render_media(IDX, "audio", "ll", EPOCH + 50001 * 6 + 1, EPOCH, 36)
    m = m3u8.loads(text)
    assert m.target_duration == 7  # ceil(6.016)
    assert m.part_inf.part_target == pytest.approx(0.214)
    assert m.server_control.part_hold_back >= 3 * m.part_inf.part_target
    assert m.server_control.can_skip_until == 42
    assert {round(s.duration, 3) for s in m.segments if s.uri} == {5.995, 6.016}


@pytest.mark.parametrize("kind", hls.KINDS)
@pytest.mark.parametrize("track", ["720p", "audio"])
def test_continuity_between_refreshes(kind, track):
    """The same segment keeps its sequence number, URI, PDT and discontinuity sequence."""
    seen = {}
    t0 = EPOCH + 12345 * 24 + 3.3
    for step in range(0, 60):
        now = t0 + step * 0.7
        text = hls.render_media(IDX, track, kind, now, EPOCH, 36)
        m3u8.loads(text)
        segs, _ = entries(text)
        assert segs[0]["pdt"] is not None
        for s in segs:
            key = s["msn"]
            val = (s["uri"], s.get("byterange"), s["dseq"], s["duration"])
            assert seen.setdefault(key, val) == val
            if s["pdt"] is not None:
                assert seen.setdefault(("pdt", key), s["pdt"]) == s["pdt"]
    assert len([k for k in seen if isinstance(k, int)]) > 10


def test_window_is_complete_segments_only():
    for now in (EPOCH + 600.0, EPOCH + 603.1, EPOCH + 605.999):
        text = hls.render_media(IDX, "720p", "6s", now, EPOCH, 36)
        segs, _ = entries(text)
        n = TL.in_progress(now)
        assert [s["msn"] for s in segs] == list(range(n - 6, n))
    segs, _ = entries(hls.render_media(IDX, "720p", "6s", EPOCH + 600, EPOCH, 13))
    assert len(segs) == 2


# ------------------------------------------------------------------ delta updates


@pytest.mark.parametrize("skip", ["YES", "v2"])
def test_delta_update(skip):
    now = EPOCH + 77777 * 6 + 4.1
    full = hls.render_media(IDX, "720p", "ll", now, EPOCH, 60)
    delta = hls.render_media(IDX, "720p", "ll", now, EPOCH, 60, skip=skip)
    # playlist ends 4.1 s into segment n; segments starting >= CAN-SKIP-UNTIL (42 s: 6 x the
    # audio rendition's target of 7) before the end are skipped: first listed n-10 starts
    # 64.1 s before the end, n-7 starts 46.1 s before, n-6 40.1 s: 4 skipped
    md = m3u8.loads(delta)
    assert md.skip.skipped_segments == 4
    assert md.media_sequence == m3u8.loads(full).media_sequence
    assert m3u8.loads(full).discontinuity_sequence == md.discontinuity_sequence
    fs, _ = entries(full)
    ds, _ = entries(delta)
    assert [s["msn"] for s in ds] == [s["msn"] for s in fs][4:]
    # everything after EXT-X-SKIP is byte-identical to the tail of the full playlist
    head, _, rest = delta.partition("#EXT-X-SKIP:SKIPPED-SEGMENTS=4\n")
    assert full.startswith(head) and "#EXT-X-MAP" in head
    lines = full.splitlines(keepends=True)
    extinf = [i for i, line in enumerate(lines) if line.startswith("#EXTINF")]
    assert "".join(lines[extinf[3] + 2:]) == rest
    assert delta.count("#EXTINF") == full.count("#EXTINF") - 4


def test_every_rendition_of_a_master_skips_the_same_segments():
    """One CAN-SKIP-UNTIL for the master: the video (target 6) and audio (target 7) delta
    updates skip the same segments at every instant.  With 36 s for video and 42 s for
    audio a 36 s window made only the video skip, and hls.js then stalled its audio at
    every loop boundary (issue #11; fails on the per-playlist value)."""
    for window in (36, 48, 60):
        for step in range(0, 40):
            now = EPOCH + 77770 * 6 + step * 0.37
            skipped = set()
            for track in ("720p", "360p", "audio"):
                text = hls.render_media(IDX, track, "ll", now, EPOCH, window, skip="YES")
                m = m3u8.loads(text)
                assert m.server_control.can_skip_until == 42
                skipped.add(m.skip.skipped_segments if m.skip else 0)
            assert len(skipped) == 1, (window, step, skipped)


def test_delta_update_without_skippable_segments_is_the_full_playlist():
    now = EPOCH + 77777 * 6 + 4.1
    assert hls.render_media(IDX, "720p", "ll", now, EPOCH, 30, skip="YES") == \
        hls.render_media(IDX, "720p", "ll", now, EPOCH, 30)


# ------------------------------------------------------------------ 2 s and 6 s


def test_2s_pieces_start_at_independent_parts_and_tile_files():
    pieces = hls.file_pieces(IDX, V)
    for seg, f in zip(V.segments, pieces, strict=True):
        assert len(f) == 3
        assert [p.first_part for p in f] == [0, 10, 20]
        assert all(seg.parts[p.first_part].independent for p in f)
        assert f[0].offset == 0 and sum(p.length for p in f) == seg.size
        assert all(a.offset + a.length == b.offset for a, b in zip(f, f[1:], strict=False))
        assert [p.duration for p in f] == pytest.approx([2.0, 2.0, 2.0])
    for seg, f in zip(A.segments, hls.file_pieces(IDX, A), strict=True):
        assert [p.start for p in f] == pytest.approx([0, 2.0, 4.0], abs=0.11)
        assert sum(p.duration for p in f) == pytest.approx(seg.duration)


def test_2s_playlist():
    n = 1000
    now = EPOCH + n * 6 + 4.5  # two pieces of segment n complete
    text = hls.render_media(IDX, "720p", "2s", now, EPOCH, 36)
    m = m3u8.loads(text)
    assert m.version >= 6 and m.target_duration == 2
    assert m.server_control.hold_back == 6
    segs, _ = entries(text)
    assert len(segs) == 18
    assert segs[-1]["msn"] == n * 3 + 1 and segs[0]["msn"] == n * 3 + 1 - 17
    assert m.media_sequence == segs[0]["msn"]
    pieces = hls.file_pieces(IDX, V)
    for s in segs:
        m_, j = divmod(s["msn"], 3)
        p = pieces[m_ % 4][j]
        assert s["uri"] == f"video/720p/n{m_}.m4s"
        assert s["byterange"] == f"{p.length}@{p.offset}"
    # PDT of a first piece that is not at a segment start
    first_m, first_j = divmod(segs[0]["msn"], 3)
    assert segs[0]["pdt"] == pdt(round(EPOCH * 1000) + first_m * 6000 + first_j * 2000)


def test_6s_playlist():
    now = EPOCH + 2000 * 6 + 0.1
    text = hls.render_media(IDX, "audio", "6s", now, EPOCH, 36)
    m = m3u8.loads(text)
    assert m.server_control.hold_back == 21  # 3 x 7
    assert "#EXT-X-PART" not in text and "#EXT-X-BYTERANGE" not in text
    assert [s.uri for s in m.segments] == [f"audio/audio/n{k}.m4s" for k in range(1994, 2000)]


# ------------------------------------------------------------------ determinism


def test_byte_identical_for_same_inputs_and_fresh_index():
    again = parse_index(index_to_json(IDX))
    assert again is not IDX
    for now in (EPOCH + 123456.789, EPOCH + 24 * 99 + 0.0):
        for kind in hls.KINDS:
            for tid in ("720p", "360p", "audio"):
                a = hls.render_media(IDX, tid, kind, now, EPOCH, 36)
                assert a == hls.render_media(IDX, tid, kind, now, EPOCH, 36)
                assert a == hls.render_media(again, tid, kind, now, EPOCH, 36)
            assert hls.render_master(IDX, kind) == hls.render_master(again, kind)
