"""Scenario runs on a Clock, through the real session registry (the PATCH path):
timeline, repeat, overlapping steps, restore at the end and on stop, the tester wins,
seeded probability replayed, the session JSON's ``scenario`` summary, verdicts."""

from __future__ import annotations

import math

import pytest
from twisted.internet.testing import MemoryReactorClock

from streamlab import config as configmod
from streamlab.errors import Conflict, NotFound
from streamlab.events import EventBus
from streamlab.proxy.netlog import make_entry
from streamlab.proxy.registry import SessionRegistry
from streamlab.scenario.service import ScenarioService

T0 = 1_700_000_000.0
SEG = "/go-live/clip/video/{rung}/n{n}.m4s"


@pytest.fixture
def lab():
    cfg = configmod.load(None, {"session-ports": "42000-42004"})
    clock = MemoryReactorClock()
    clock.advance(T0)
    registry = SessionRegistry(cfg, clock, EventBus())
    service = ScenarioService(registry, clock)
    session, _ = registry.get_or_create("p1")
    return clock, registry, service, session


def values(session, *keys):
    return tuple(session.controls.values[k] for k in keys)


def advance_to(clock, t):
    """Advance the clock to T0 + t through a 50 ms grid (timers fire in order, on time)."""
    while clock.seconds() < T0 + t - 1e-6:
        k = math.floor((clock.seconds() - T0) / 0.05 + 0.01) + 1
        clock.advance(min(T0 + t, T0 + k * 0.05) - clock.seconds())


def test_steps_apply_and_restore_on_the_timeline(lab):
    clock, registry, service, session = lab
    run = service.start(session.session_id, {"name": "t", "steps": [
        {"id": "lag", "at": 2, "for": 3, "set": {"nftables_delay_ms": 100}},
        {"at": 4, "set": {"nftables_packet_loss": 5}},
        {"after": "lag", "delay": 1, "for": 1, "repeat": {"every": 2, "times": 3},
         "set": {"segment_failure_type": 404}},
    ]})
    assert run.duration == 6 + 2 * 2 + 1
    seen = []
    for t in (1, 2.5, 4.5, 5.5, 6.5, 7.5, 8.5, 10.5):
        advance_to(clock, t)
        seen.append(values(session, "nftables_delay_ms", "nftables_packet_loss", "segment_failure_type"))
    assert seen == [(0, 0, "none"), (100, 0, "none"), (100, 5, "none"), (0, 5, "none"),
                    (0, 5, "404"), (0, 5, "none"), (0, 5, "404"), (0, 5, "404")]
    advance_to(clock, 11.1)
    assert run.state == "passed" and run.verdict == {"passed": True, "expectations": []}
    # everything the run set is back to its value before the run
    assert values(session, "nftables_delay_ms", "nftables_packet_loss", "segment_failure_type") == (0,
                                                                                                    0, "none")
    log = [(e["t_s"], e["step"], e["event"]) for e in run.log]
    assert log == [(2, 0, "applied"), (4, 1, "applied"), (5, 0, "restored"), (6, 2, "applied"),
                   (7, 2, "restored"), (8, 2, "applied"), (9, 2, "restored"), (10, 2, "applied"),
                   (11, 2, "restored"), (11, None, "ended")]
    assert run.log[-1]["fields"] == {"nftables_packet_loss": 0}
    assert run.log[0]["fields"] == {"nftables_delay_ms": 100}


def test_overlapping_steps_restore_to_what_was_under_them(lab):
    clock, registry, service, session = lab
    registry.patch(session.session_id, {"nftables_delay_ms": 7})
    service.start(session.session_id, {"steps": [
        {"at": 0, "for": 10, "set": {"nftables_delay_ms": 100}},
        {"at": 2, "for": 3, "set": {"nftables_delay_ms": 500}},     # inside the first
        {"at": 8, "for": 4, "set": {"nftables_delay_ms": 900}},     # outlives the first
    ]})
    seen = []
    for t in (1, 3, 6, 9, 11, 12.5):
        advance_to(clock, t)
        seen.append(session.controls.values["nftables_delay_ms"])
    # 500 ends -> 100; the first ends under 900 -> stays 900; 900 ends -> the value before the run
    assert seen == [100, 500, 100, 900, 900, 7]


def test_stop_restores_and_keeps_the_verdict(lab):
    clock, registry, service, session = lab
    old_seed = session.controls.values["seed"]
    run = service.start(session.session_id, {"seed": 99, "steps": [
        {"at": 0, "set": {"content_strip_codecs": True, "manifest_fault_type": "sequence_jump"}},
        {"at": 30, "set": {"nftables_bandwidth_mbps": 1}}],
        "expect": [{"metric": "stalls", "op": "<=", "value": 1}]})
    advance_to(clock, 3)
    assert session.controls.values["seed"] == 99
    assert registry.to_json(session)["scenario"]["active"] == {
        "content_strip_codecs": True, "manifest_fault_type": "sequence_jump", "seed": 99}
    with pytest.raises(Conflict):
        service.start(session.session_id, {"steps": [{"at": 0, "set": {"seed": 1}}]})
    stopped = service.stop(session.session_id)
    assert stopped is run and run.state == "stopped"
    assert values(session, "content_strip_codecs", "manifest_fault_type") == (False, "none")
    assert session.controls.values["seed"] == old_seed
    assert run.log[-1]["event"] == "stopped" and run.log[-1]["t_s"] == 3
    assert run.verdict["passed"] is False  # the player reported nothing
    assert "reported no player_metrics_stalls" in run.verdict["expectations"][0]["detail"]
    assert run.to_json()["steps"][1]["state"] == "pending"
    advance_to(clock, 40)  # no timer left behind
    assert session.controls.values["nftables_bandwidth_mbps"] == 0
    # a new run may start now
    assert service.start(session.session_id, {"duration": 5, "steps": [{"at": 0,
                                                                        "set": {"seed": 1}}]}).running


def test_the_testers_change_wins_over_the_restore(lab):
    clock, registry, service, session = lab
    run = service.start(session.session_id, {"steps": [
        {"at": 0, "for": 10, "set": {"nftables_delay_ms": 100, "segment_failure_type": "500",
                                     "segment_failure_mode": "seconds"}},
        {"at": 1, "set": {"nftables_packet_loss": 2}}]})
    advance_to(clock, 3)
    registry.patch(session.session_id, {"nftables_delay_ms": 300, "segment_consecutive_units": "requests",
                                        "segment_frequency_units": "requests"})
    advance_to(clock, 10.5)
    # the tester's delay and timing stay; the fault type the tester left alone is restored
    assert values(session, "nftables_delay_ms", "segment_failure_type", "segment_failure_mode") == \
        (300, "none", "requests")
    restored = next(e for e in run.log if e["event"] == "restored")
    assert restored["kept"] == {"nftables_delay_ms": 300, "segment_failure_mode": "requests",
                                "segment_consecutive_units": "requests",
                                    "segment_frequency_units": "requests"}
    assert restored["fields"] == {"segment_failure_type": "none"}
    assert run.state == "passed" and session.controls.values["nftables_packet_loss"] == 0


def test_the_session_json_carries_the_run_and_sse_is_pushed(lab):
    clock, registry, service, session = lab
    assert registry.to_json(session)["scenario"] is None
    pushes = []
    registry.feed.changed = lambda urgent=False: pushes.append(urgent)
    service.start(session.session_id, {"name": "sse", "steps": [
        {"at": 1, "for": 2, "set": {"nftables_delay_ms": 50}}, {"at": 5, "set": {"nftables_delay_ms": 10}}]})
    advance_to(clock, 1.5)
    summary = registry.snapshot()[0]["scenario"]
    assert summary["name"] == "sse" and summary["state"] == "running" and summary["current_step"] == 0
    assert summary["active"] == {"nftables_delay_ms": 50}
    assert summary["next_step_in_s"] == pytest.approx(3.5) and summary["elapsed_s"] == pytest.approx(1.5)
    assert True in pushes  # the step pushed an urgent SSE update
    advance_to(clock, 6)
    assert registry.to_json(session)["scenario"]["state"] == "passed"


def test_removing_the_session_ends_the_run_in_error(lab):
    clock, registry, service, session = lab
    run = service.start(session.session_id, {"steps": [{"at": 0, "for": 5, "set": {"nftables_delay_ms": 5}}]})
    advance_to(clock, 1)
    registry.remove(session.session_id)
    assert run.state == "error" and run.error == "the session was removed"
    advance_to(clock, 10)
    with pytest.raises(NotFound):
        service.last(session.session_id)


def test_a_step_the_session_refuses_ends_the_run_in_error_and_restores(lab):
    clock, registry, service, session = lab
    session.manifest_variants = [{"url": "playlist_360p.m3u8", "bandwidth": 800000}]
    run = service.start(session.session_id, {"steps": [
        {"at": 0, "set": {"nftables_delay_ms": 5}},
        {"at": 1, "set": {"content_allowed_variants": ["4k"]}}]})   # matches no variant
    advance_to(clock, 2)
    assert run.state == "error" and "content_allowed_variants" in run.error
    assert session.controls.values["nftables_delay_ms"] == 0


def _segment_decisions(session, n=200):
    return "".join("X" if session.engine.decide("segment", f"/go-live/c/video/720p/n{i}.m4s", T0 + i) else "."
                   for i in range(n))


def test_a_scenario_seed_replays_the_same_fault_sequence(lab):
    clock, registry, service, session = lab
    scenario = {"seed": 4242, "duration": 60, "steps": [{"at": 0, "set": {"segment_failure_type": "404",
                                                          "segment_failure_probability": 0.3}}]}
    runs = []
    for seed in (4242, 4242, 17):
        scenario["seed"] = seed
        service.start(session.session_id, scenario)
        runs.append(_segment_decisions(session))
        service.stop(session.session_id)
    assert runs[0] == runs[1] and runs[0] != runs[2]
    assert 0.2 < runs[0].count("X") / len(runs[0]) < 0.4


def _segment(session, t, rung, n, status=200, faulted=False):
    entry = make_entry(timestamp=T0 + t, url=SEG.format(rung=rung, n=n), path=SEG.format(rung=rung, n=n),
                       request_kind="segment", status=status, fault_type="404" if faulted else "",
                       fault_category="http" if faulted else "")
    if faulted:
        entry["faulted"] = True
    session.netlog.append(entry, (), ())


def test_verdict_on_metrics_and_the_network_log(lab):
    clock, registry, service, session = lab
    session.manifest_variants = [{"url": "playlist_720p.m3u8", "bandwidth": 3000000},
                                 {"url": "playlist_360p.m3u8", "bandwidth": 800000}]
    sid = session.session_id
    registry.post_metrics(sid, {"player_metrics_stalls": 2, "player_metrics_state": "playing"})
    scenario = {"name": "verdict", "steps": [{"id": "drop", "at": 2, "for": 4,
                                              "set": {"nftables_bandwidth_mbps": 1}}],
                "expect": [{"metric": "stalls", "op": "<=", "value": 0, "agg": "delta"},
                           {"metric": "stall_seconds_total", "op": "<", "value": 1},
                           {"metric": "buffer_s", "op": ">=", "value": 3, "agg": "min"},
                           {"kind": "switch_down_within", "after_step": "drop", "seconds": 3},
                           {"kind": "recover_top_within", "after_step": "drop", "seconds": 3,
                            "from": "restored"},
                           {"kind": "requests", "match": {"status": 404}, "op": "==", "value": 0},
                           {"kind": "requests", "match": {"request_kind": "segment"}, "op": ">=", "value": 3,
                            "during_step": "drop"},
                           {"kind": "no_request_outside_window"}]}
    run = service.start(sid, scenario)
    timeline = [(0.5, "720p", 1), (1.5, "720p", 2), (3.0, "720p", 3), (4.0, "360p", 4), (5.0, "360p", 5),
                (6.5, "360p", 6), (7.5, "720p", 7), (8.0, "360p", 99)]
    metrics = {1: ("playing", 5, 2), 3: ("buffering", 1, 3), 5: ("playing", 2, 3), 7: ("playing", 6, 3)}
    for t in [x / 10 for x in range(1, 101)]:
        advance_to(clock, t)
        for tt, rung, n in timeline:
            if abs(tt - t) < 1e-9:
                _segment(session, t, rung, n, status=404 if n == 99 else 200)
        if t in metrics:
            state, buffer_s, stalls = metrics[t]
            registry.post_metrics(sid, {"player_metrics_state": state, "player_metrics_buffer_s": buffer_s,
                                        "player_metrics_stalls": stalls})
    advance_to(clock, 9.5)
    assert run.state == "failed"
    got = {e["name"]: (e["observed"], e["passed"]) for e in run.verdict["expectations"]}
    assert got == {
        "stalls <= 0": (1, False),                           # 3 at the end - 2 at the start
        "stall_seconds_total < 1": (2.0, False),             # buffering from 3 s to 5 s
        "buffer_s >= 3": (1, False),
        "switch_down_within 3 s after drop": (2.0, True),    # 720p before 2 s, 360p at 4 s
        "recover_top_within 3 s after drop": (1.5, True),    # restored at 6 s, 720p at 7.5 s
        "requests == 0": (1, False),
        "requests >= 3": (3, True),                          # segments at 3, 4 and 5 s
        "no request outside the window": (1, False),         # the unfaulted 404
    }, run.verdict


def test_the_origins_window_tells_behind_in_and_ahead(lab):
    """``no_request_outside_window`` asks the origin's live clock about n<N> segments."""
    from types import SimpleNamespace

    from tests.live_helpers import EPOCH, make_index

    clock, registry, service, session = lab
    index = make_index()  # 6 s segments
    origin = SimpleNamespace(library=SimpleNamespace(get=lambda name: index if name == "clip" else None),
                             epoch=EPOCH, window=36.0)
    service.origin = lambda: origin
    now = EPOCH + 600 * 6 + 1.0  # segment 600 in production
    check = service.window_check
    assert check("/go-live/clip/video/720p/n600.m4s", now) == "in"
    assert check("/go-live/clip/video/720p/n601.m4s", now) == "in"       # the next one (preload)
    assert check("/go-live/clip/video/720p/n602.m4s", now) == "ahead"
    assert check("/go-live/clip/video/720p/n593.m4s", now) == "in"       # 6 segments of window + 1
    assert check("/go-live/clip/video/720p/n592.m4s", now) == "behind"
    assert check("/go-live/clip/video/720p/seg_00001.m4s", now) is None  # old-style: the origin cannot tell
    assert check("/go-live/other/video/720p/n600.m4s", now) is None
