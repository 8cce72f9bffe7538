"""Verdict evaluation (pure): metric aggregates, the player-bitrate fallback for
renditions, the origin's window, and the JUnit rendering of failures and errors."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from streamlab.proxy.netlog import iso_ms
from streamlab.scenario import junit, model
from streamlab.scenario.verdict import Observations, evaluate


def _exp(scenario_expect):
    sc = model.parse({"steps": [{"id": "drop", "at": 1, "for": 2, "set": {"nftables_bandwidth_mbps": 1}}],
                      "expect": scenario_expect})
    return sc.expect


def test_aggregates_and_a_posted_stall_total():
    samples = [(1.0, {"player_metrics_buffer_s": 4, "player_metrics_stall_seconds_total": 0.5}),
               (2.0, {"player_metrics_buffer_s": 1, "player_metrics_stall_seconds_total": 1.5}),
               (3.0, {"player_metrics_buffer_s": 3, "player_metrics_stall_seconds_total": 1.5})]
    obs = Observations(started_at=0, ended_at=4, samples=samples)
    got = evaluate(_exp([{"metric": "buffer_s", "op": ">=", "value": 1, "agg": "min"},
                         {"metric": "player_metrics_buffer_s", "op": "<", "value": 3, "agg": "mean"},
                         {"metric": "buffer_s", "op": "==", "value": 4, "agg": "max"},
                         {"metric": "stall_seconds_total", "op": "<=", "value": 1}]), obs)
    assert [(e["observed"], e["passed"]) for e in got["expectations"]] == [
        (1, True), (2.666667, True), (4, True), (1.5, False)]
    assert got["passed"] is False


def test_renditions_from_the_player_bitrate_when_the_log_has_no_video():
    samples = [(0.5, {"player_metrics_bitrate_mbps": 3.0}), (1.5, {"player_metrics_bitrate_mbps": 3.0}),
               (2.5, {"player_metrics_bitrate_mbps": 0.8}), (3.8, {"player_metrics_bitrate_mbps": 3.0})]
    obs = Observations(started_at=0, ended_at=6, samples=samples, step_times={0: [(1.0, 3.0)]})
    got = evaluate(_exp([{"kind": "switch_down_within", "after_step": "drop", "seconds": 2},
                         {"kind": "recover_top_within", "after_step": "drop", "seconds": 0.5,
                          "from": "restored"}]), obs)
    down, up = got["expectations"]
    assert (down["observed"], down["passed"]) == (1.5, True)
    assert "player_metrics_bitrate_mbps" in down["detail"]
    assert (up["observed"], up["passed"]) == (0.8, False)


def test_outside_the_window_uses_the_origin_clock():
    entries = [{"timestamp": iso_ms(1_700_000_000 + i), "request_kind": "segment", "status": 200,
                "path": f"/go-live/c/video/360p/n{n}.m4s", "faulted": False}
               for i, n in enumerate((10, 11, 3, 40))]
    where = {10: "in", 11: "in", 3: "behind", 40: "ahead"}
    obs = Observations(started_at=1_700_000_000, ended_at=1_700_000_010, entries=entries,
                       window_check=lambda path, t: where[int(path.rsplit("/n", 1)[1].split(".")[0])])
    got = evaluate(_exp([{"kind": "no_request_outside_window"}]), obs)["expectations"][0]
    assert got["observed"] == 2 and not got["passed"]
    assert "n3.m4s (behind)" in got["detail"] and "n40.m4s (ahead)" in got["detail"]


def test_junit_marks_a_run_error():
    run = {"id": "r1", "name": "boom / test", "state": "error", "error": "step #1: refused", "elapsed_s": 2.5,
           "started_at": "2026-12-03T22:00:00.000Z", "log": [{"t_s": 0, "step": 0, "event": "applied",
                                                              "fields": {"nftables_delay_ms": 5}}],
           "verdict": None}
    suite = ET.fromstring(junit.report(run)).find("testsuite")
    assert suite.get("errors") == "1" and suite.get("tests") == "1"
    case = suite.find("testcase")
    assert case.get("classname") == "streamlab.scenario.boom_test"
    assert case.find("error").get("message") == "step #1: refused"
