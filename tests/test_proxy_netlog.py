"""Network log ring, entry timings and the HAR 1.2 export (streamlab.proxy.netlog)."""

import json

import pytest

from streamlab.errors import Invalid
from streamlab.proxy.faults import FaultEngine
from streamlab.proxy.fields import control_defaults
from streamlab.proxy.netlog import ENTRY_FIELDS, NetworkLog, iso_ms, make_entry, parse_time_ms, to_har

T0 = 1764131000.0  # 2025-11-26T04:23:20Z


def entry(t, **kw):
    base = dict(timestamp=t, method="GET", url=f"/go-live/c/video/720p/seg_{int(t) % 1000:05d}.m4s",
                path="/go-live/c/video/720p/seg_00001.m4s", request_kind="segment", status=200,
                bytes_in=120, bytes_out=5000, content_type="video/mp4")
    base.update(kw)
    return make_entry(**base)


def test_iso_timestamps():
    assert iso_ms(T0) == "2025-11-26T04:23:20.000Z"
    assert iso_ms(T0 + 0.1239) == "2025-11-26T04:23:20.123Z"
    assert parse_time_ms("2025-11-26T04:23:20.123Z") == int(T0 * 1000) + 123
    assert parse_time_ms("2025-11-26T04:23:20.123+00:00") == int(T0 * 1000) + 123
    assert parse_time_ms("2025-11-26T05:23:20.123+01:00") == int(T0 * 1000) + 123
    assert parse_time_ms(str(T0)) == int(T0 * 1000)


def test_entry_has_every_field_and_timings_from_stamps():
    e = make_entry(timestamp=T0, method="GET", url="/go-live/c/video/720p/seg_00001.m4s?x=1",
                   path="/go-live/c/video/720p/seg_00001.m4s", request_kind="segment", status=206,
                   bytes_in=300, bytes_out=65536, content_type="video/mp4", play_id="p1",
                   request_range="bytes=0-65535", accepted=T0 - 0.010, tls_done=T0 - 0.004, parsed=T0,
                   first_byte=T0 + 0.0125, last_byte=T0 + 0.5125)
    assert tuple(e) == ENTRY_FIELDS
    assert e["timestamp"] == "2025-11-26T04:23:20.000Z"
    assert (e["dns_ms"], e["connect_ms"], e["tls_ms"]) == (0.0, 10.0, 6.0)
    assert (e["ttfb_ms"], e["transfer_ms"], e["total_ms"]) == (12.5, 500.0, 512.5)
    assert e["faulted"] is False and e["fault_type"] == "" and e["fault_category"] == ""
    json.dumps(e)


def test_reused_connection_and_no_bytes_written():
    e = make_entry(timestamp=T0, status=0, parsed=T0, finished=T0 + 2.0, fault_type="request_connect_hang",
                   fault_action="connect_hang", fault_category="socket")
    assert e["connect_ms"] == 0 and e["ttfb_ms"] == 0 and e["transfer_ms"] == 0
    assert e["total_ms"] == 2000.0
    assert e["faulted"] is True and e["status"] == 0


def test_entry_from_a_fault_decision():
    controls = control_defaults()
    controls.update(segment_failure_type="request_body_reset", segment_consecutive_failures=0)
    d = FaultEngine(controls).decide("segment", "/go-live/c/video/720p/seg_00001.m4s", 0)
    e = make_entry(timestamp=T0, status=200, decision=d)
    assert (e["faulted"], e["fault_type"], e["fault_action"], e["fault_category"]) == (
        True, "request_body_reset", "body_reset", "socket")


def test_ring_keeps_the_newest_and_counts():
    log = NetworkLog(3)
    for i in range(5):
        log.append(entry(T0 + i))
    assert log.count == 3 and len(log) == 3 and log.total == 5
    got = log.entries()
    assert [e["seq"] for e in got] == [3, 4, 5]
    assert got[-1]["timestamp"] == iso_ms(T0 + 4)
    log.clear()
    assert log.count == 0 and log.entries() == []
    assert log.append(entry(T0 + 9))["seq"] == 6


def test_since_is_exclusive_and_limit_keeps_newest():
    log = NetworkLog(200)
    for i in range(10):
        log.append(entry(T0 + i * 0.25))
    all_ = log.entries()
    since = all_[3]["timestamp"]
    after = log.entries(since=since)
    assert [e["seq"] for e in after] == [5, 6, 7, 8, 9, 10]
    assert [e["seq"] for e in log.entries(since=since, limit=2)] == [9, 10]
    assert [e["seq"] for e in log.entries(limit=3)] == [8, 9, 10]
    assert log.entries(since=all_[-1]["timestamp"]) == []
    assert [e["seq"] for e in log.entries(after_seq=8)] == [9, 10]
    assert log.entries(limit=0) == []
    with pytest.raises(Invalid):
        log.entries(since="yesterday")
    with pytest.raises(Invalid):
        log.entries(limit=-1)


def test_har_structure():
    log = NetworkLog(10)
    log.append(entry(T0, url="/go-live/c/playlist_6s_720p.m3u8?_HLS_msn=4&_HLS_part=1",
                     request_kind="manifest", accepted=T0 - 0.003, parsed=T0, first_byte=T0 + 0.02,
                     last_byte=T0 + 0.03, content_type="application/vnd.apple.mpegurl", bytes_out=800))
    log.append(entry(T0 + 1, status=404, fault_type="404", fault_action="status", fault_category="http",
                     first_byte=T0 + 1.001, last_byte=T0 + 1.001, content_type="application/json",
                     request_range="bytes=0-99"))
    log.append(entry(T0 + 2, status=0, bytes_out=0, content_type="", fault_type="request_connect_reset",
                     fault_action="connect_reset", fault_category="socket", finished=T0 + 2.004))
    har = to_har("7", log.entries(), "1.2.3", base_url="http://lab:30181")
    json.dumps(har)
    root = har["log"]
    assert root["version"] == "1.2"
    assert root["creator"] == {"name": "streamlab", "version": "1.2.3"}
    assert len(root["entries"]) == 3
    first, second, third = root["entries"]
    for e in root["entries"]:
        assert set(e) >= {"startedDateTime", "time", "request", "response", "cache", "timings"}
        assert set(e["request"]) >= {"method", "url", "httpVersion", "headers", "queryString", "cookies",
                                     "headersSize", "bodySize"}
        assert set(e["response"]) >= {"status", "statusText", "httpVersion", "headers", "cookies", "content",
                                      "redirectURL", "headersSize", "bodySize"}
        assert set(e["response"]["content"]) >= {"size", "mimeType"}
        t = e["timings"]
        assert all(t[k] >= 0 for k in ("send", "wait", "receive"))
        assert e["time"] == pytest.approx(sum(v for k, v in t.items() if k != "ssl" and v > 0))
        assert e["request"]["url"].startswith("http://lab:30181/go-live/")
    assert first["request"]["queryString"] == [{"name": "_HLS_msn", "value": "4"},
                                               {"name": "_HLS_part", "value": "1"}]
    assert first["timings"]["connect"] == 3.0 and first["timings"]["wait"] == 20.0
    assert first["timings"]["receive"] == 10.0
    assert first["time"] == 33.0
    assert first["_streamlab"]["faulted"] is False
    assert second["response"]["status"] == 404 and second["response"]["statusText"] == "Not Found"
    assert second["request"]["headers"] == [{"name": "Range", "value": "bytes=0-99"}]
    assert second["_streamlab"]["fault_type"] == "404"
    assert third["response"]["status"] == 0 and third["response"]["content"]["mimeType"] == "x-unknown"
    assert third["_streamlab"]["fault_category"] == "socket"
    assert third["time"] == 4.0


def test_har_alternate_call_form():
    har = to_har([entry(T0)], session_id="3", host="session port 30181")
    assert har["log"]["entries"][0]["request"]["url"].startswith("http://localhost/")
    assert "3" in har["log"]["comment"]
