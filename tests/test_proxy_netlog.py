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


# --------------------------------------------------------------------------- history at bounded memory

UA = b"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120 Safari/537.36"
REQ_HEADERS = [(b"Host", b"192.168.1.20:30181"), (b"User-Agent", UA),
               (b"Accept", b"*/*"), (b"Origin", b"http://192.168.1.20:30000"), (b"Connection", b"keep-alive")]
RESP_HEADERS = [(b"Content-Type", b"video/mp4"), (b"Content-Length", b"48213"),
                (b"Access-Control-Allow-Origin", b"*"), (b"Cache-Control", b"max-age=60"),
                (b"Date", b"Thu, 03 Dec 2026 18:00:00 GMT"), (b"Server", b"streamlab")]


def _llhls_minutes(log, minutes, rate=18):
    """*minutes* of LL-HLS traffic: parts, blocking reloads, audio (about *rate* requests/s)."""
    n = int(minutes * 60 * rate)
    for i in range(n):
        t = T0 + i / rate
        kind, url = [("segment", f"/go-live/demo/video/720p/part_{i:06d}.2.m4s"),
                     ("manifest", f"/go-live/demo/playlist_720p.m3u8?_HLS_msn={i // 10}&_HLS_part={i % 5}"),
                     ("segment", f"/go-live/demo/audio/part_{i:06d}.1.m4s")][i % 3]
        log.append(entry(t, url=url, path=url.split("?")[0], request_kind=kind, parsed=t,
                         first_byte=t + 0.004, last_byte=t + 0.05), REQ_HEADERS,
                   [(b"Content-Length", str(40000 + i).encode()), (b"Date", f"{int(t)}".encode())]
                   + RESP_HEADERS[2:])
    return n


def test_minutes_of_history_within_the_memory_bound():
    import tracemalloc

    budget = 8 * 1024 * 1024
    log = NetworkLog(1_000_000, budget)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    n = _llhls_minutes(log, 12)
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    stats = log.stats()
    assert stats["bytes"] <= budget and log.dropped == n - log.count
    # about 10 minutes of 18 requests/s kept, not 11 s as with 200 entries
    assert stats["span_s"] >= 8 * 60, stats
    # the estimate is honest: what Python really holds is within 30 % of it
    assert held == pytest.approx(stats["bytes"], rel=0.3), (held, stats["bytes"])
    print(f"\n{log.count} entries over {stats['span_s']:.0f} s in {stats['bytes'] / 2**20:.2f} MiB "
          f"(estimate), {held / 2**20:.2f} MiB measured, {stats['bytes'] / log.count:.0f} B/entry")


def test_count_bound_still_applies_and_memory_is_returned():
    log = NetworkLog(5, 1 << 20)
    for i in range(20):
        log.append(entry(T0 + i), REQ_HEADERS, RESP_HEADERS)
    assert log.count == 5 and log.dropped == 15
    per_entry = log.bytes_used / 5
    log.clear()
    assert log.bytes_used == 0 and per_entry > 200


def test_headers_are_kept_and_exported_in_the_har():
    log = NetworkLog(10)
    stored = log.append(entry(T0, request_range="bytes=0-99"), REQ_HEADERS + [(b"Range", b"bytes=0-99")],
                        RESP_HEADERS)
    assert "request_headers" not in stored and "request_headers" not in log.entries()[0]
    full = log.entries(headers=True)[0]
    assert {"name": "User-Agent", "value": REQ_HEADERS[1][1].decode()} in full["request_headers"]
    assert {"name": "Content-Length", "value": "48213"} in full["response_headers"]
    assert log.entry(stored["seq"]) == full and log.entry(99) is None
    har = to_har("1", log.entries(headers=True), "1", base_url="http://lab:30181")["log"]["entries"][0]
    assert {"name": "Range", "value": "bytes=0-99"} in har["request"]["headers"]
    assert {"name": "Access-Control-Allow-Origin", "value": "*"} in har["response"]["headers"]
    assert len(har["request"]["headers"]) == 6 and len(har["response"]["headers"]) == 6


def test_client_gave_up_is_not_an_injected_fault():
    e = make_entry(timestamp=T0, status=0, fault_action="client_disconnect",
                   fault_category="client_disconnect")
    assert e["faulted"] is False and e["fault_category"] == "client_disconnect"


def test_markers_are_kept_beside_the_entries():
    log = NetworkLog(3)
    m = log.mark(T0 + 1, "fault", "segment: 404 armed", ["segment_failure_type"])
    assert m == {"timestamp": iso_ms(T0 + 1), "kind": "fault", "text": "segment: 404 armed",
                 "fields": ["segment_failure_type"]}
    for i in range(10):
        log.append(entry(T0 + i))
    assert log.markers() == [m]


def test_twisted_style_header_lists_are_flattened():
    log = NetworkLog(3)
    log.append(entry(T0), [(b"Accept", [b"*/*"]), (b"X-Two", [b"a", b"b"])], [(b"Server", [b"TwistedWeb"])])
    full = log.entries(headers=True)[0]
    assert full["request_headers"] == [{"name": "Accept", "value": "*/*"}, {"name": "X-Two", "value": "a"},
                                       {"name": "X-Two", "value": "b"}]
    assert full["response_headers"] == [{"name": "Server", "value": "TwistedWeb"}]


def _record(t, url, kind, i=0):
    from streamlab.proxy.exchange import ExchangeRecord
    req = tuple((k, [v]) for k, v in REQ_HEADERS)
    resp = ((b"Content-Length", [str(40000 + i).encode()]), (b"Date", [f"{int(t)}".encode()])) \
        + tuple((k, [v]) for k, v in RESP_HEADERS[2:])
    return ExchangeRecord(kind, "GET", url, url.split("?")[0], 200, 310, 40000 + i, 0, "video/mp4", "",
                          None, t, t + 0.004, t + 0.05, t + 0.05, request_headers=req, response_headers=resp)


def test_a_record_reads_back_as_the_entry_make_entry_builds():
    from streamlab.proxy.exchange import ExchangeRecord
    log = NetworkLog(10)
    rec = ExchangeRecord("segment", "GET", "/go-live/c/v/seg_1.m4s?play_id=x", "/go-live/c/v/seg_1.m4s", 206,
                         300, 65536, 12, "video/mp4", "bytes=0-65535", T0 - 0.010, T0, T0 + 0.020, T0 + 0.120,
                         T0 + 0.121, "request_body_reset", "socket", "body_reset", shaper_delay_ms=1.5,
                         request_headers=((b"Range", [b"bytes=0-65535"]),),
                         response_headers=((b"Content-Type", [b"video/mp4"]),))
    seq = log.add(rec, "p1")
    want = make_entry(timestamp=T0, url=rec.url, path=rec.path, request_kind="segment", status=206,
                      bytes_in=300, bytes_out=65536, content_type="video/mp4", play_id="p1",
                      request_range="bytes=0-65535",
                      accepted=T0 - 0.010, parsed=T0, first_byte=T0 + 0.020, last_byte=T0 + 0.120,
                      finished=T0 + 0.121, fault_type="request_body_reset", fault_category="socket",
                      fault_action="body_reset", shaper_delay_ms=1.5)
    want["seq"] = seq
    got = log.entry(seq)
    assert got is not None
    assert got.pop("request_headers") == [{"name": "Range", "value": "bytes=0-65535"}]
    assert got.pop("response_headers") == [{"name": "Content-Type", "value": "video/mp4"}]
    assert got == want
    assert log.entries() == [want]


def test_tls_ms_is_the_handshake_of_a_connections_first_request_inside_connect_ms():
    from streamlab.proxy.exchange import ExchangeRecord

    def rec(accepted, tls_done, arrived=T0):
        return ExchangeRecord("segment", "GET", "/s.m4s", "/s.m4s", 200, 100, 10, 0, "video/mp4", "",
                              accepted, arrived, arrived + 0.01, arrived + 0.02, arrived + 0.02,
                              tls_done=tls_done)

    log = NetworkLog(10)
    first = log.entry(log.add(rec(T0 - 0.030, T0 - 0.012)), headers=False)
    assert first is not None and (first["connect_ms"], first["tls_ms"]) == (30.0, 18.0)
    # the same through make_entry (the entry a record must read back as)
    assert make_entry(timestamp=T0, accepted=T0 - 0.030, tls_done=T0 - 0.012)["tls_ms"] == 18.0
    # plain HTTP (no handshake) and a reused connection (no accept): 0
    plain = log.entry(log.add(rec(T0 - 0.030, None)), headers=False)
    reused = log.entry(log.add(rec(None, None)), headers=False)
    assert plain is not None and reused is not None
    assert (plain["connect_ms"], plain["tls_ms"]) == (30.0, 0.0)
    assert (reused["connect_ms"], reused["tls_ms"]) == (0.0, 0.0)
    # never more than the connect time that contains it
    odd = log.entry(log.add(rec(T0 - 0.030, T0 + 0.005)), headers=False)
    assert odd is not None and odd["tls_ms"] == odd["connect_ms"] == 30.0
    har = to_har("s", log.entries(), "1")["log"]["entries"]
    assert [e["timings"]["ssl"] for e in har] == [18.0, -1, -1, 30.0]
    assert har[0]["timings"]["connect"] == 30.0 and har[0]["time"] == pytest.approx(30.0 + 10 + 10)


def test_records_stay_within_the_memory_bound_and_the_estimate_is_honest():
    import tracemalloc

    budget = 4 * 1024 * 1024
    log = NetworkLog(1_000_000, budget)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    n = 12 * 60 * 18
    for i in range(n):
        t = T0 + i / 18
        url = [f"/go-live/demo/video/720p/part_{i:06d}.2.m4s",
               f"/go-live/demo/playlist_720p.m3u8?_HLS_msn={i // 10}&_HLS_part={i % 5}"][i % 2]
        log.add(_record(t, url, "segment", i), "play")
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    stats = log.stats()
    assert stats["bytes"] <= budget and log.dropped == n - log.count
    print(f"\n{log.count} records in {stats['bytes'] / 2**20:.2f} MiB (estimate), "
          f"{held / 2**20:.2f} MiB held")
    assert held == pytest.approx(stats["bytes"], rel=0.3), (held, stats["bytes"])
