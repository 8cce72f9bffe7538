"""/metrics parses as Prometheus text and moves with traffic; ``--logger streamlab.logs.json``
writes one JSON object per line; SIGTERM exits 0.  One real daemon (JSON logging on)."""

from __future__ import annotations

import json
import re
import signal
import socket

import pytest
from prometheus_client.parser import text_string_to_metric_families

from streamlab.testing.daemon import Daemon, request
from tests.integration.sessions_helpers import serving


@pytest.fixture(scope="module")
def d(tmp_path_factory, test_item):
    # JSON logging: the daemon runs with --logger streamlab.logs.json (stdout -> log file)
    daemon = Daemon(str(tmp_path_factory.mktemp("ops-obs")), session_ports=4,
                    config={"sessions": {"socket_body_bytes": 1000}},
                    twistd_args=["--logger", "streamlab.logs.json"])
    with serving(daemon):
        yield daemon


def _scrape(d) -> dict[tuple[str, tuple], float]:
    r = d.get("/metrics")
    assert r.status == 200
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    out = {}
    for family in text_string_to_metric_families(r.text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def _get(m, name, **labels) -> float:
    return m.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_move_with_traffic(d):
    before = _scrape(d)
    assert _get(before, "streamlab_up") == 1
    for state in ("queued", "encoding", "complete", "failed"):
        assert ("streamlab_jobs", (("state", state),)) in before

    # main listener: two manifests, a 404
    for _ in range(2):
        assert d.get("/go-live/testclip/master.m3u8").status == 200
    assert d.get("/api/nope").status == 404
    # a session with a status fault on every segment + a socket fault on the init segment
    s = d.request("POST", "/api/sessions", {"player_id": "metrics-1",
                                           "set": {"segment_failure_type": "404"}}).json()
    port = int(s["x_forwarded_port"])
    assert request(port, "GET", "/go-live/testclip/master.m3u8").status == 200
    assert request(port, "GET", "/go-live/testclip/video/360p/seg_00001.m4s").status == 404
    after = _scrape(d)

    assert _get(after, "streamlab_sessions") == _get(before, "streamlab_sessions") + 1
    assert _get(after, "streamlab_requests_total", listener="main", kind="master_manifest", status="200") \
        == _get(before, "streamlab_requests_total", listener="main", kind="master_manifest", status="200") + 2
    assert _get(after, "streamlab_requests_total", listener="main", kind="api", status="404") >= 1
    assert _get(after, "streamlab_requests_total", listener="session", kind="master_manifest",
                status="200") >= 1
    assert _get(after, "streamlab_requests_total", listener="session", kind="segment", status="404") >= 1
    assert _get(after, "streamlab_faults_total", type="404") >= 1
    assert _get(after, "streamlab_bytes_out_total", listener="main") > \
        _get(before, "streamlab_bytes_out_total", listener="main")
    assert _get(after, "streamlab_bytes_out_total", listener="session") > 0
    assert _get(after, "streamlab_render_latency_seconds_count") >= \
        _get(before, "streamlab_render_latency_seconds_count") + 3
    assert _get(after, "streamlab_render_latency_seconds_bucket", le="+Inf") == \
        _get(after, "streamlab_render_latency_seconds_count")

    # a removed session keeps counting in the totals
    assert d.request("DELETE", f"/api/session/{s['session_id']}").status == 200
    gone = _scrape(d)
    assert _get(gone, "streamlab_sessions") == _get(before, "streamlab_sessions")
    assert _get(gone, "streamlab_faults_total", type="404") == \
        _get(after, "streamlab_faults_total", type="404")
    assert _get(gone, "streamlab_bytes_out_total", listener="session") >= \
        _get(after, "streamlab_bytes_out_total", listener="session")


def test_json_logs_one_object_per_line(d):
    d.request("POST", "/api/sessions", {"player_id": "json-log"})
    lines = [line for line in d.log().splitlines() if line.strip()]
    assert lines
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    for rec in records:
        assert {"time", "level", "namespace", "message"} <= rec.keys()
        assert rec["time"].endswith("Z")
    assert any("starting up" in r["message"] for r in records)
    assert any(r["namespace"].startswith("streamlab.") for r in records)


def test_openapi_is_served_and_its_go_live_paths_answer(d):
    r = d.get("/api/openapi.json")
    assert r.status == 200 and r.headers["content-type"] == "application/json"
    doc = r.json()
    assert doc["openapi"] == "3.1.0"
    master = d.get("/go-live/testclip/master.m3u8").text
    variant = re.search(r"playlist_(?:ll_)?([^/\s]+)\.m3u8", master)
    values = {"content": "testclip", "variant": variant.group(1) if variant else "360p"}
    files = {"video": "360p/seg_00001.m4s", "audio": "audio/seg_00001.m4s"}
    checked = 0
    for path, ops in doc["paths"].items():
        if not path.startswith("/go-live/") or "get" not in ops or "/ts/" in path:
            continue  # ts/ needs an item with MPEG-TS renditions; DELETE api/stop stops a worker
        concrete = path
        for kind, rel in files.items():
            concrete = concrete.replace(f"/{kind}/{{path}}", f"/{kind}/{rel}")
        for key, value in values.items():
            concrete = concrete.replace(f"{{{key}}}", value)
        assert "{" not in concrete, concrete
        if "text/event-stream" in ops["get"]["responses"]["200"].get("content", {}):
            with socket.create_connection(("127.0.0.1", d.port), timeout=10) as sock:  # never ends: head only
                sock.sendall(f"GET {concrete} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
                head = b""
                while b"\r\n\r\n" not in head:
                    chunk = sock.recv(4096)
                    assert chunk, concrete
                    head += chunk
            assert head.startswith(b"HTTP/1.1 200") and b"text/event-stream" in head, (path, head)
            checked += 1
            continue
        status = d.get(concrete).status
        assert status == 200, (path, concrete, status)
        checked += 1
    assert checked >= 15


def test_sigterm_exits_zero_and_logs_the_stop(d):
    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(30) == 0
    records = [json.loads(line) for line in d.log().splitlines() if line.strip()]
    assert any("SIGTERM" in r["message"] for r in records)
