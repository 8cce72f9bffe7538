"""The HTTP fault engine: rule choice, scope, timing modes, one-shots (streamlab.proxy.faults)."""

import pytest

from streamlab.proxy import faults
from streamlab.proxy.faults import FaultEngine, counter_key
from streamlab.proxy.fields import control_defaults, validate

SEG = "/go-live/clip/video/720p/seg_{:05d}.m4s"
SEG360 = "/go-live/clip/video/360p/seg_{:05d}.m4s"
AUDIO = "/go-live/clip/audio/audio/seg_{:05d}.m4s"
PLAYLIST = "/go-live/clip/playlist_6s_720p.m3u8"
MASTER = "/go-live/clip/master_6s.m3u8"


def engine(now=0.0, **set_):
    controls = control_defaults()
    controls.update(validate(set_, None, controls))
    return FaultEngine(controls, now), controls


def pattern(eng, n, kind="segment", path=SEG, t0=0.0, dt=0.0):
    """'X' for each faulted request, '.' for each clean one."""
    out = []
    for i in range(n):
        d = eng.decide(kind, path.format(i + 1), t0 + i * dt)
        out.append("X" if d else ".")
    return "".join(out)


# --------------------------------------------------------------------------- requests mode


def test_spec_example_c1_f10_over_120_segments_gives_12_faults():
    eng, _ = engine(segment_failure_type="404", segment_consecutive_failures=1, segment_failure_frequency=10)
    assert pattern(eng, 120).count("X") == 12
    eng, _ = engine(segment_failure_type="404", segment_consecutive_failures=2, segment_failure_frequency=10)
    p = pattern(eng, 120)
    assert p.count("X") == 24
    assert p[:12] == "XX........XX"


@pytest.mark.parametrize("c,f,expect", [
    (1, 3, "X..X..X.."),
    (2, 3, "XX.XX.XX."),
    (3, 3, "XXX.XXX.X"),        # F <= C: max(F - C, 1) = 1 clean request
    (3, 1, "XXX.XXX.X"),
    (0, 5, "XXXXXXXXX"),        # C = 0: every matching request
    (0, 0, "XXXXXXXXX"),
    (2, 0, "XX......."),        # F = 0: one-shot
])
def test_requests_mode_cycles(c, f, expect):
    eng, _ = engine(segment_failure_type="500", segment_consecutive_failures=c, segment_failure_frequency=f)
    assert pattern(eng, 9) == expect


def test_one_shot_disarms_once_and_reports_prefix():
    eng, _ = engine(segment_failure_type="404", segment_consecutive_failures=2, segment_failure_frequency=0)
    assert eng.decide("segment", SEG.format(1), 0)
    assert eng.take_disarmed() == []
    assert eng.decide("segment", SEG.format(2), 0)
    assert eng.take_disarmed() == ["segment"]
    assert eng.take_disarmed() == []
    assert eng.decide("segment", SEG.format(3), 0) is None


def test_caller_sets_type_none_after_disarm_and_engine_stays_quiet():
    eng, controls = engine(manifest_failure_type="503", manifest_consecutive_failures=1,
                           manifest_failure_frequency=0)
    assert eng.decide("manifest", PLAYLIST, 0).status == 503
    assert eng.take_disarmed() == ["manifest"]
    controls["manifest_failure_type"] = "none"
    eng.configure(controls, ["manifest_failure_type"], 1)
    assert eng.decide("manifest", PLAYLIST, 2) is None
    assert eng.take_disarmed() == []


def test_rearming_restarts_the_phase():
    eng, controls = engine(segment_failure_type="404", segment_consecutive_failures=1,
                           segment_failure_frequency=4)
    assert pattern(eng, 3) == "X.."
    controls.update(validate({"segment_failure_type": "500"}, None, controls))
    eng.configure(controls, ["segment_failure_type"], 10)
    assert pattern(eng, 5) == "X...X"
    # An unrelated change does not restart it.
    eng2, controls2 = engine(segment_failure_type="404", segment_consecutive_failures=1,
                             segment_failure_frequency=4)
    assert pattern(eng2, 2) == "X."
    controls2["nftables_delay_ms"] = 50
    eng2.configure(controls2, ["nftables_delay_ms", "manifest_failure_type"], 5)
    assert pattern(eng2, 3) == "..X"


# --------------------------------------------------------------------------- rule choice / scope


def test_cross_kind_isolation():
    eng, _ = engine(segment_failure_type="404", segment_consecutive_failures=0)
    assert eng.decide("manifest", PLAYLIST, 0) is None
    assert eng.decide("master_manifest", MASTER, 0) is None
    assert eng.decide("other", "/go-live/clip/x.json", 0) is None
    assert eng.decide("segment", SEG.format(1), 0).status == 404
    eng, _ = engine(manifest_failure_type="500", manifest_consecutive_failures=0)
    assert eng.decide("segment", SEG.format(1), 0) is None
    assert eng.decide("master_manifest", MASTER, 0) is None
    assert eng.decide("manifest", PLAYLIST, 0).status == 500


def test_all_rule_overrides_per_kind_rules_and_covers_other():
    eng, _ = engine(all_failure_type="502", all_consecutive_failures=0,
                    segment_failure_type="404", segment_consecutive_failures=0)
    for kind, path in (("segment", SEG.format(1)), ("manifest", PLAYLIST), ("master_manifest", MASTER),
                       ("other", "/go-live/clip/thing.json")):
        d = eng.decide(kind, path, 0)
        assert d.status == 502 and d.prefix == "all"


def test_all_rule_one_shot_then_per_kind_rule_resumes():
    eng, _ = engine(all_failure_type="502", all_consecutive_failures=1, all_failure_frequency=0,
                    segment_failure_type="404", segment_consecutive_failures=0)
    assert eng.decide("segment", SEG.format(1), 0).prefix == "all"
    assert eng.take_disarmed() == ["all"]
    assert eng.decide("segment", SEG.format(2), 0).prefix == "segment"


def test_out_of_scope_requests_never_fault_and_do_not_advance_the_cycle():
    eng, _ = engine(segment_failure_type="404", segment_consecutive_failures=1, segment_failure_frequency=2,
                    segment_failure_urls=["720p"])
    seq = []
    for i in range(1, 7):
        seq.append("X" if eng.decide("segment", SEG360.format(i), 0) else ".")
        seq.append("X" if eng.decide("segment", SEG.format(i), 0) else ".")
    # 360p never faulted; 720p alternates fault / clean.
    assert "".join(seq) == ".X.." * 3


def test_scope_by_playlist_entry_covers_its_segments():
    eng, _ = engine(segment_failure_type="404", segment_consecutive_failures=0,
                    segment_failure_urls=["playlist_6s_720p.m3u8"])
    assert eng.decide("segment", SEG.format(1), 0)
    assert eng.decide("segment", SEG360.format(1), 0) is None


# --------------------------------------------------------------------------- seconds mode


def test_seconds_mode_fixed_grid_without_drift():
    eng, _ = engine(segment_failure_type="404", segment_failure_mode="seconds",
                    segment_consecutive_failures=2, segment_failure_frequency=10)
    t0 = 1000.123
    # First matching request at t0 starts the grid; requests every 0.5 s for 100 s.
    faulted = [round(i * 0.5, 1) for i in range(200) if eng.decide("segment", SEG.format(i), t0 + i * 0.5)]
    expected = [round(i * 0.5, 1) for i in range(200) if (i * 0.5) % 10 < 2]
    assert faulted == expected
    # Late in the run the grid still sits at t0 + 10k.
    assert eng.decide("segment", SEG.format(1), t0 + 990.0)
    assert eng.decide("segment", SEG.format(1), t0 + 991.99)
    assert eng.decide("segment", SEG.format(1), t0 + 992.01) is None


def test_seconds_mode_grid_starts_at_first_matching_request_not_arming():
    eng, _ = engine(now=0.0, segment_failure_type="404", segment_failure_mode="seconds",
                    segment_consecutive_failures=1, segment_failure_frequency=5)
    assert eng.decide("manifest", PLAYLIST, 3.0) is None          # other kind: no effect
    assert eng.decide("segment", SEG.format(1), 7.0)               # grid starts at 7
    assert eng.decide("segment", SEG.format(2), 7.9)
    assert eng.decide("segment", SEG.format(3), 8.1) is None
    assert eng.decide("segment", SEG.format(4), 12.2)
    assert eng.decide("segment", SEG.format(5), 13.0) is None


def test_seconds_mode_one_shot_disarms_on_the_clock():
    eng, _ = engine(segment_failure_type="request_connect_reset", segment_failure_mode="seconds",
                    segment_consecutive_failures=3, segment_failure_frequency=0)
    assert eng.next_deadline() is None
    assert eng.decide("segment", SEG.format(1), 10.0).action == "reset"
    assert eng.next_deadline() == 13.0
    assert eng.decide("segment", SEG.format(2), 12.9)
    eng.poll(12.99)
    assert eng.take_disarmed() == []
    eng.poll(13.0)
    assert eng.take_disarmed() == ["segment"]
    assert eng.next_deadline() is None
    assert eng.decide("segment", SEG.format(3), 13.1) is None


# --------------------------------------------------------------------------- failures_per_seconds


def test_failures_per_seconds_first_c_in_each_window():
    eng, _ = engine(segment_failure_type="429", segment_failure_mode="failures_per_seconds",
                    segment_consecutive_failures=2, segment_failure_frequency=4)
    # 1 request per second starting at t=100: windows [100,104), [104,108), ...
    assert pattern(eng, 12, t0=100.0, dt=1.0) == "XX..XX..XX.."
    eng, _ = engine(segment_failure_type="429", segment_failure_mode="failures_per_seconds",
                    segment_consecutive_failures=1, segment_failure_frequency=4)
    # Bursty: 3 requests at the start of each window, a gap window with none.
    times = [0, 0.1, 0.2, 4.0, 4.5, 12.5, 12.6]
    got = "".join("X" if eng.decide("segment", SEG.format(1), t) else "." for t in times)
    assert got == "X..X.X."


def test_failures_per_seconds_one_shot():
    eng, _ = engine(segment_failure_type="404", segment_failure_mode="failures_per_seconds",
                    segment_consecutive_failures=2, segment_failure_frequency=0)
    assert pattern(eng, 4, dt=1.0) == "XX.."
    assert eng.take_disarmed() == ["segment"]


# --------------------------------------------------------------------------- decisions


@pytest.mark.parametrize("ftype,category,status,action,stage", [
    ("404", "http", 404, "status", None),
    ("451", "http", 451, "status", None),
    ("timeout", "http", 504, "status", None),
    ("connection_refused", "http", 503, "status", None),
    ("dns_failure", "http", 502, "status", None),
    ("rate_limiting", "http", 429, "status", None),
    ("request_connect_reset", "socket", None, "reset", "connect"),
    ("request_connect_hang", "socket", None, "hang", "connect"),
    ("request_first_byte_delayed", "socket", None, "delayed", "first_byte"),
    ("request_body_reset", "socket", None, "reset", "body"),
    ("request_body_hang", "socket", None, "hang", "body"),
    ("socket_reject_mid_body", "socket", None, "reset", "body"),
    ("corrupted", "corruption", None, "corrupt", None),
])
def test_decision_fields(ftype, category, status, action, stage):
    eng, controls = engine(segment_failure_type=ftype, segment_consecutive_failures=0)
    d = eng.decide("segment", SEG.format(1), 0)
    assert (d.category, d.status, d.action, d.stage, d.prefix) == (category, status, action, stage, "segment")
    assert d.fault_type == controls["segment_failure_type"]
    assert d.counter_key == counter_key(d.fault_type)
    assert (d.retry_after is not None) == (ftype == "rate_limiting")


def test_counter_keys_and_status_body():
    assert counter_key("404") == "fault_count_404"
    assert counter_key("request_body_reset") == "fault_count_request_body_reset"
    assert counter_key("transport_drop") == "fault_count_transport_drop"
    assert counter_key("Transfer-Active-Timeout") == "fault_count_transfer_active_timeout"
    eng, _ = engine(segment_failure_type="404", segment_consecutive_failures=0)
    body = faults.status_body(eng.decide("segment", SEG.format(1), 0))
    assert b'"status":404' in body and len(body) < 200


def test_transfer_timeouts_follow_applies_flags():
    controls = control_defaults()
    controls.update(transfer_active_timeout_seconds=5, transfer_idle_timeout_seconds=2)
    assert faults.transfer_timeouts(controls, "segment") == (5.0, 2.0)
    assert faults.transfer_timeouts(controls, "manifest") == (0.0, 0.0)
    assert faults.transfer_timeouts(controls, "other") == (0.0, 0.0)
    controls["transfer_timeout_applies_master"] = True
    assert faults.transfer_timeouts(controls, "master_manifest") == (5.0, 2.0)


def test_default_engine_never_faults():
    eng = FaultEngine()
    for kind, path in (("segment", SEG.format(1)), ("manifest", PLAYLIST), ("master_manifest", MASTER)):
        assert eng.decide(kind, path, 0) is None


def test_one_json_body_for_every_injected_error():
    """A transfer timeout (504 "timeout") answers the same body as the status fault of
    the same name; the reason is the HTTP reason phrase."""
    import json

    body = json.loads(faults.fault_body(504, "timeout"))
    assert body == {"error": "gateway timeout", "fault_type": "timeout", "status": 504, "injected": True}
    assert json.loads(faults.fault_body(503, "connection_refused"))["error"] == "service unavailable"
    assert json.loads(faults.fault_body(429, "rate_limiting"))["error"] == "too many requests"
