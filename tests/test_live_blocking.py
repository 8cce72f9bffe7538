"""Blocking playlist reload, blocking preload hints and LL-DASH chunk schedules."""

import m3u8
import pytest

from streamlab.live import blocking, hls
from streamlab.live.blocking import BadReload, ReloadRequest
from streamlab.live.timeline import LiveTimeline
from tests.live_helpers import EPOCH, make_index

IDX = make_index()
V = IDX.video[0]
A = IDX.audio[0]
TL = LiveTimeline(IDX, EPOCH)
N = 90001  # file 2


def test_parse_reload_params():
    assert blocking.parse_reload_params(None, None, None) is None
    assert blocking.parse_reload_params("12", None, None) == ReloadRequest(12, None, None)
    assert blocking.parse_reload_params("12", "0", "YES") == ReloadRequest(12, 0, "YES")
    assert blocking.parse_reload_params(None, None, "v2") == ReloadRequest(None, None, "v2")


@pytest.mark.parametrize("msn,part,skip", [
    ("-1", None, None), ("abc", None, None), ("1.5", None, None), ("", None, None), (" 3", None, None),
    ("3", "x", None), ("3", "-2", None), (None, "2", None), ("3", None, "NO"), (None, None, "yes"),
    ("9" * 40, None, None),
])
def test_malformed_params_are_bad_requests(msn, part, skip):
    with pytest.raises(BadReload):
        blocking.parse_reload_params(msn, part, skip)


def test_ready_now_for_published_parts_and_old_segments():
    now = EPOCH + N * 6 + 3.05  # parts 0..14 published
    for req in (ReloadRequest(N, 14, None), ReloadRequest(N, 0, None), ReloadRequest(N - 1, None, None),
                ReloadRequest(N - 50, 3, None), ReloadRequest(None, None, "YES")):
        assert blocking.reload_ready_at(IDX, "720p", now, EPOCH, req) <= now


def test_ready_later_at_the_exact_publish_time():
    now = EPOCH + N * 6 + 3.05
    at = blocking.reload_ready_at(IDX, "720p", now, EPOCH, ReloadRequest(N, 15, None))
    assert at == TL.part_publish_time(V, N, 15) == pytest.approx(EPOCH + N * 6 + 3.2)
    # the playlist rendered at that instant contains the part, a moment before it does not
    m = m3u8.loads(hls.render_media(IDX, "720p", "ll", at, EPOCH, 36))
    assert len(m.segments[-1].parts) == 16
    m = m3u8.loads(hls.render_media(IDX, "720p", "ll", at - 0.01, EPOCH, 36))
    assert len(m.segments[-1].parts) == 15
    # msn alone waits for the whole segment; a part index past the last one too
    end = TL.segment_start(N + 1)
    assert blocking.reload_ready_at(IDX, "720p", now, EPOCH, ReloadRequest(N, None, None)) == end
    assert blocking.reload_ready_at(IDX, "720p", now, EPOCH, ReloadRequest(N, 30, None)) == end
    # next segments
    assert blocking.reload_ready_at(IDX, "720p", now, EPOCH, ReloadRequest(N + 1, 0, None)) == \
        pytest.approx(EPOCH + (N + 1) * 6 + 0.2)
    at = blocking.reload_ready_at(IDX, "audio", now, EPOCH, ReloadRequest(N + 2, 3, None))
    assert at == TL.part_publish_time(A, N + 2, 3)


def test_more_than_two_segments_ahead_is_a_bad_request():
    now = EPOCH + N * 6 + 3.05
    blocking.reload_ready_at(IDX, "720p", now, EPOCH, ReloadRequest(N + 2, 29, None))
    with pytest.raises(BadReload):
        blocking.reload_ready_at(IDX, "720p", now, EPOCH, ReloadRequest(N + 3, None, None))
    with pytest.raises(BadReload):
        blocking.reload_ready_at(IDX, "720p", now, EPOCH, ReloadRequest(N + 3, 0, None))
    # at a segment start nothing of N is published yet: the last segment is N-1
    now = EPOCH + N * 6
    blocking.reload_ready_at(IDX, "720p", now, EPOCH, ReloadRequest(N + 1, 0, None))
    with pytest.raises(BadReload):
        blocking.reload_ready_at(IDX, "720p", now, EPOCH, ReloadRequest(N + 2, 0, None))


def test_unknown_track():
    with pytest.raises(KeyError):
        blocking.reload_ready_at(IDX, "nope", EPOCH + 99, EPOCH, ReloadRequest(1, None, None))


def test_reload_deadline_is_three_target_durations():
    assert blocking.reload_deadline(make_index(count=2, seg_dur=4.0, part_dur=0.5), "ll") == 3 * 5
    assert blocking.reload_deadline(IDX, "ll") == 3 * 7  # audio files run 6.016 s -> target 7


def test_blocking_preload_hint():
    now = EPOCH + N * 6 + 3.05
    m = m3u8.loads(hls.render_media(IDX, "720p", "ll", now, EPOCH, 36))
    hint = m.preload_hint
    fnum = N % 4 + 1
    assert hint.uri == f"video/720p/n{N}.m4s"  # sequence-addressed; media_ready_at is the old-style rule
    at = blocking.media_ready_at(IDX, V, fnum, hint.byterange_start, now, EPOCH)
    assert at == TL.part_publish_time(V, N, 15)
    # a later part of the same segment waits for its own publication
    assert blocking.media_ready_at(IDX, V, fnum, V.segments[fnum - 1].parts[20].offset, now, EPOCH) == \
        TL.part_publish_time(V, N, 20)
    # published parts, the whole file, other files: serve now
    assert blocking.media_ready_at(IDX, V, fnum, V.segments[fnum - 1].parts[14].offset, now, EPOCH) is None
    assert blocking.media_ready_at(IDX, V, fnum, 0, now, EPOCH) is None
    assert blocking.media_ready_at(IDX, V, fnum, None, now, EPOCH) is None
    assert blocking.media_ready_at(IDX, V, fnum - 1, 5000, now, EPOCH) is None
    # once published, serve now
    assert blocking.media_ready_at(IDX, V, fnum, hint.byterange_start, at, EPOCH) is None


def test_chunk_schedule_for_the_segment_in_progress():
    now = EPOCH + N * 6 + 1.0
    fnum = N % 4 + 1
    for track in (V, A):
        sched = blocking.chunk_schedule(IDX, track, fnum, now, EPOCH)
        seg = track.segments[fnum - 1]
        assert len(sched) == len(seg.parts)
        assert sched[0][0].offset == 0
        assert all(a.offset + a.size == b.offset for (a, _), (b, _) in zip(sched, sched[1:], strict=False))
        assert sched[-1][0].offset + sched[-1][0].size == seg.size
        assert [t for _, t in sched] == [TL.part_publish_time(track, N, p) for p in range(len(seg.parts))]
        assert sched[-1][1] == TL.segment_start(N + 1)
        assert blocking.chunk_schedule(IDX, track, fnum + 1, now, EPOCH) is None
