"""Workers: creation on first request, counts, ticks, 5-minute averages, idle removal."""

from twisted.internet.task import Clock

from streamlab.live.workers import WorkerRegistry, iso


def test_created_on_first_request_and_counts_kinds():
    clock = Clock()
    clock.advance(1_700_000_000)
    reg = WorkerRegistry(clock, 60)
    w = reg.touch("clip", "ll_hls")
    reg.touch("clip", "media")
    reg.touch("clip", "media")
    assert reg.get("clip") is w and len(reg) == 1
    assert w.requests["ll_hls"] == 1 and w.requests["media"] == 2 and w.requests["dash_6s"] == 0
    doc = reg.status()
    (row,) = doc["workers"]
    assert row["id"] == "clip" and row["content"] == "clip"
    assert row["started_at"] == iso(1_700_000_000) and row["started_at"].endswith("Z")
    assert row["idle_timeout_s"] == 60
    assert row["streams"] == []


def test_idle_worker_is_dropped_by_the_clock_and_requests_keep_it():
    clock = Clock()
    reg = WorkerRegistry(clock, 60)
    reg.touch("clip", "media")
    clock.advance(50)
    reg.touch("clip", "media")  # keeps it alive until 110
    clock.advance(15)  # t = 65: the first timer fires and re-arms
    assert reg.get("clip") is not None
    assert len(clock.getDelayedCalls()) == 1
    clock.advance(44.9)
    assert reg.get("clip") is not None
    clock.advance(0.1)
    assert reg.get("clip") is None
    assert clock.getDelayedCalls() == []


def test_stop_cancels_timer():
    clock = Clock()
    reg = WorkerRegistry(clock, 60)
    reg.touch("clip", "media")
    assert reg.stop("clip") is True
    assert reg.stop("clip") is False
    assert clock.getDelayedCalls() == []


def test_ticks_and_render_averages():
    clock = Clock()
    reg = WorkerRegistry(clock, 600)
    w = reg.touch("clip", "ll_hls")
    s = w.stream("ll_hls")
    assert s.observe(0.0, (1, 0), 2.0) is False  # first observation is not a tick
    assert s.observe(0.1, (1, 0), 4.0) is False  # same edge
    assert s.observe(0.2, (1, 1), None) is True
    assert s.observe(0.4, (1, 2), 3.0) is True
    st = s.tick_stats(0.4)
    assert st["tick_interval_ms"] == 200.0
    assert st["avg_tick_interval_ms_5m"] == 200.0
    assert st["last_render_ms"] == 3.0
    assert st["avg_render_ms_5m"] == 3.0
    # samples older than 5 minutes leave the averages
    s.observe(400.0, (9, 9), 10.0)
    st = s.tick_stats(400.0)
    assert st["avg_render_ms_5m"] == 10.0
    assert st["avg_tick_interval_ms_5m"] == round((400.0 - 0.4) * 1000, 3)
