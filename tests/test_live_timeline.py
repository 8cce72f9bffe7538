"""The looping-live clock: segment numbering, loops and part publication times."""

import pytest

from streamlab.live.timeline import LiveTimeline, part_ends
from tests.live_helpers import EPOCH, make_index

IDX = make_index()
V = IDX.video[0]
A = IDX.audio[0]


def test_segment_numbers_at_and_across_boundaries():
    tl = LiveTimeline(IDX, EPOCH)
    assert tl.segment_number(EPOCH) == 0
    assert tl.segment_number(EPOCH + 5.999) == 0
    assert tl.segment_number(EPOCH + 6.0) == 1
    n = tl.segment_number(EPOCH + 1000 * 24 + 23.9)
    assert n == 4003 and tl.file_number(n) == 4 and tl.loop_of(n) == 1000
    assert tl.file_number(n + 1) == 1 and tl.loop_of(n + 1) == 1001
    assert tl.segment_start(n + 1) == EPOCH + 1001 * 24
    assert tl.in_progress(EPOCH + 1001 * 24) == n + 1


def test_part_publish_times_use_real_durations():
    tl = LiveTimeline(IDX, EPOCH)
    n = 4001  # file 2, an audio file that runs 6.016 s
    assert tl.part_publish_time(V, n, 0) == pytest.approx(EPOCH + n * 6 + 0.2)
    assert tl.part_publish_time(V, n, 14) == pytest.approx(EPOCH + n * 6 + 3.0)
    parts = A.segments[1].parts
    acc = 0.0
    for p in range(len(parts) - 1):
        acc += parts[p].duration
        assert tl.part_publish_time(A, n, p) == pytest.approx(EPOCH + n * 6 + min(acc, 6.0))
    # the last part is published exactly when the segment is complete, even if longer
    assert tl.part_publish_time(A, n, len(parts) - 1) == EPOCH + (n + 1) * 6
    assert all(e[-1] == 6.0 for e in part_ends(IDX, A))


def test_live_edge_follows_publication_instants():
    tl = LiveTimeline(IDX, EPOCH)
    n = 7777
    assert tl.live_edge(V, EPOCH + n * 6) == (n, -1)
    for p in (0, 1, 17, 28):
        t = tl.part_publish_time(V, n, p)
        assert tl.live_edge(V, t) == (n, p)
        assert tl.live_edge(V, t - 0.001) == (n, p - 1)
    # once the last part is published the next segment is in progress
    assert tl.live_edge(V, tl.part_publish_time(V, n, 29)) == (n + 1, -1)
    for p in range(len(A.segments[n % 4].parts) - 1):
        t = tl.part_publish_time(A, n, p)
        assert tl.live_edge(A, t) == (n, p)
    assert tl.published_parts(V, n, EPOCH + n * 6 + 1.0) == 5
    assert tl.published_parts(V, n - 1, EPOCH + n * 6 + 1.0) == 30
    assert tl.is_complete(n - 1, EPOCH + n * 6) and not tl.is_complete(n, EPOCH + n * 6 + 5.9)


def test_cache_is_per_index_object():
    other = make_index(seg_dur=4.0, part_dur=0.5)
    e1 = part_ends(IDX, V)
    e2 = part_ends(other, other.video[0])
    assert e1[0][0] == pytest.approx(0.2) and e2[0][0] == pytest.approx(0.5)
