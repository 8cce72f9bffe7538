"""Scenarios against a real daemon: a 7 s timeline of shaping, segment 404s and a
repeated manifest fault on a session port, the metrics posted by the test (the player),
the run log, the restore, the sessions SSE stream, the JUnit report, and the CLI runner
as a subprocess for both exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET

import m3u8
import pytest
import yaml

from streamlab.testing.daemon import Daemon
from streamlab.testing.fixtures import install_test_item
from tests.integration.sessions_helpers import create_session, get, open_get, sse_events, wait_for, wait_item

MASTER = "/go-live/testclip/master_2s.m3u8"
PLAYLIST = "/go-live/testclip/playlist_2s_360p.m3u8"

SCENARIO = {
    "name": "shaping, 404s and a jumping playlist",
    "seed": 321,
    "steps": [
        {"id": "slow", "at": 0.5, "for": 3, "set": {"nftables_bandwidth_mbps": 2, "nftables_delay_ms": 40}},
        {"id": "404s", "at": 1.5, "for": 3,
         "set": {"segment_failure_type": "404", "segment_failure_mode": "requests",
                 "segment_consecutive_failures": 0, "segment_failure_frequency": 0}},
        {"id": "jump", "after": "404s", "delay": 0.5, "repeat": {"every": 1, "times": 2},
         "set": {"manifest_fault_type": "sequence_jump", "manifest_fault_value": 5}},
    ],
    "duration": 7,
    "expect": [
        {"metric": "stalls", "op": "<=", "value": 2},
        {"name": "404s seen", "kind": "requests", "match": {"request_kind": "segment", "status": 404},
         "op": ">=", "value": 1, "during_step": "404s"},
        {"name": "jumps seen", "kind": "requests", "match": {"fault_category": "manifest"}, "op": ">=",
         "value": 1},
        {"kind": "no_request_outside_window"},
    ],
}


@pytest.fixture(scope="module")
def d(tmp_path_factory, test_item):
    daemon = Daemon(str(tmp_path_factory.mktemp("scenarios")), session_ports=10,
                    config={"sessions": {"session_idle_timeout": 300}})
    install_test_item(daemon.media_dir)
    daemon.start()
    wait_item(daemon)
    yield daemon
    daemon.stop()


def _segment_path(port: int) -> str:
    """A segment the session's playlist lists (complete, inside the window)."""
    playlist = m3u8.loads(get(port, PLAYLIST).text)
    return "/go-live/testclip/" + playlist.segments[-2].uri


def _sse_until_ended(d, sid: str, out: list):
    sock = open_get(d.port, "/api/sessions/stream")

    def done(events):
        return any(s["session_id"] == sid and (s.get("scenario") or {}).get("state") in ("passed", "failed")
                   for _t, e in events for s in e.get("sessions", []))

    out.extend(sse_events(sock, done, timeout=30))


def test_a_scenario_runs_on_a_session_port_and_restores(d):
    s = create_session(d, "sc-player")
    sid, port = s["session_id"], int(s["x_forwarded_port"])
    assert s["scenario"] is None
    assert get(port, MASTER).status == 200          # the session learns its ladder
    d.request("POST", f"/api/session/{sid}/metrics", {"set": {"player_metrics_stalls": 0,
                                                            "player_metrics_state": "playing"}})
    events: list = []
    watcher = threading.Thread(target=_sse_until_ended, args=(d, sid, events), daemon=True)
    watcher.start()
    r = d.request("POST", f"/api/sessions/{sid}/scenario", SCENARIO)
    assert r.status == 201, r.text
    run = r.json()
    t0 = time.monotonic()
    assert run["state"] == "running" and run["seed"] == 321 and run["duration_s"] == 7
    assert d.request("POST", f"/api/session/{sid}/scenario", SCENARIO).status == 409

    # during "404s" (1.5-4.5 s): a segment through the session port is a 404, the shaping is on
    wait_for(lambda: d.get(f"/api/session/{sid}").json()["segment_failure_type"] == "404", timeout=5)
    during = d.get(f"/api/session/{sid}").json()
    assert during["nftables_bandwidth_mbps"] == 2 and during["nftables_delay_ms"] == 40
    assert during["seed"] == 321
    assert during["scenario"]["state"] == "running" and during["scenario"]["current_step"] == 1
    assert during["scenario"]["active"]["segment_failure_type"] == "404"
    seg = _segment_path(port)
    assert get(port, seg).status == 404
    d.request("POST", f"/api/session/{sid}/metrics", {"set": {"player_metrics_stalls": 1,
                                                            "player_metrics_state": "buffering"}})
    # after "404s" ends the segment plays again; the playlist's sequence jumps
    wait_for(lambda: d.get(f"/api/session/{sid}").json()["manifest_fault_type"] == "sequence_jump", timeout=6)
    assert d.get(f"/api/session/{sid}").json()["segment_failure_type"] == "none"
    assert get(port, _segment_path(port)).status == 200
    d.request("POST", f"/api/session/{sid}/metrics", {"set": {"player_metrics_stalls": 1,
                                                            "player_metrics_state": "playing"}})
    run = wait_for(lambda: (lambda r: r if r["state"] != "running" else None)(
        d.get(f"/api/session/{sid}/scenario").json()), timeout=15, interval=0.2)
    elapsed = time.monotonic() - t0
    assert 5.5 < elapsed < 15, elapsed
    assert run["state"] == "passed", run["verdict"]
    observed = {e["name"]: e["observed"] for e in run["verdict"]["expectations"]}
    assert observed["stalls <= 2"] == 1
    assert observed["404s seen"] >= 1 and observed["no request outside the window"] == 0

    # the log: when each step took effect (generous bounds: the machine is loaded)
    log = [(e["step"], e["event"]) for e in run["log"]]
    assert log == [(None, "applied"), (0, "applied"), (1, "applied"), (0, "restored"), (1, "restored"),
                   (2, "applied"), (2, "applied"), (None, "ended")]
    times = [e["t_s"] for e in run["log"]]
    for got, want in zip(times, [0, 0.5, 1.5, 3.5, 4.5, 5, 6, 7], strict=True):
        assert want - 0.01 <= got <= want + 2.0, (times, want)
    assert run["log"][-1]["fields"]["manifest_fault_type"] == "none"
    assert [st["state"] for st in run["steps"]] == ["done", "done", "done"]

    # everything is restored
    after = d.get(f"/api/session/{sid}").json()
    for key, value in (("nftables_bandwidth_mbps", 0), ("nftables_delay_ms", 0),
                       ("segment_failure_type", "none"),
                       ("manifest_fault_type", "none"), ("manifest_fault_value", 0), ("seed", s["seed"])):
        assert after[key] == value, key
    assert after["scenario"]["state"] == "passed" and after["scenario"]["passed"] is True
    # what the player saw is in the network log, marked as faults
    entries = d.get(f"/api/session/{sid}/network").json()["entries"]
    assert any(e["status"] == 404 and e["fault_type"] == "404" for e in entries)
    assert any(e["fault_category"] == "manifest" and e["fault_type"] == "sequence_jump" for e in entries)
    assert observed["jumps seen"] >= 1

    # SSE clients saw the steps take effect and the end
    watcher.join(timeout=20)
    mine = [(s.get("scenario") or {}) for _t, e in events for s in e.get("sessions", [])
            if s["session_id"] == sid]
    steps_seen = {m.get("current_step") for m in mine if m.get("state") == "running"}
    assert {0, 1, 2} <= steps_seen, steps_seen
    assert mine[-1]["state"] == "passed"

    # the JUnit report
    r = d.get(f"/api/session/{sid}/scenario/report.xml")
    assert r.status == 200 and r.headers.get("content-type", "").startswith("application/xml")
    suite = ET.fromstring(r.body).find("testsuite")
    assert suite.get("name") == SCENARIO["name"]
    assert suite.get("tests") == "4" and suite.get("failures") == "0"
    assert len(suite.findall("testcase")) == 4


def test_stop_restores_at_once(d):
    s = create_session(d, "sc-stop")
    sid = s["session_id"]
    r = d.request("POST", f"/api/session/{sid}/scenario",
                  {"steps": [{"at": 0, "for": 60,
                              "set": {"all_failure_type": "503", "content_strip_codecs": True}}]})
    assert r.status == 201
    wait_for(lambda: d.get(f"/api/session/{sid}").json()["all_failure_type"] == "503", timeout=5)
    r = d.request("DELETE", f"/api/session/{sid}/scenario")
    assert r.status == 200 and r.json()["state"] == "stopped"
    after = d.get(f"/api/session/{sid}").json()
    assert after["all_failure_type"] == "none" and after["content_strip_codecs"] is False


def _cli(d, path, player_id, *extra):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    return subprocess.run([sys.executable, "-m", "streamlab.scenario", "run", path, "--server",
                           f"http://127.0.0.1:{d.port}", "--player-id", player_id, "--wait",
                           "--timeout", "60", *extra],
                          capture_output=True, text=True, timeout=90, env=env)


def test_cli_exit_codes(d, tmp_path):
    create_session(d, "sc-cli")
    sid = d.request("POST", "/api/sessions", {"player_id": "sc-cli"}).json()["session_id"]
    d.request("POST", f"/api/session/{sid}/metrics", {"set": {"player_metrics_stalls": 1}})
    base = {"steps": [{"at": 0.2, "for": 1.5, "set": {"nftables_delay_ms": 30}}], "duration": 2.5}
    lenient = dict(base, name="lenient", expect=[{"metric": "stalls", "op": "<=", "value": 3}])
    strict = dict(base, name="strict", expect=[{"metric": "stalls", "op": "==", "value": 0}])
    paths = {"lenient": tmp_path / "lenient.yaml", "strict": tmp_path / "strict.json"}
    paths["lenient"].write_text(yaml.safe_dump(lenient))   # the server reads YAML; the CLI needs no library
    paths["strict"].write_text(json.dumps(strict))
    report = tmp_path / "junit.xml"
    ok = _cli(d, str(paths["lenient"]), "sc-cli", "--junit", str(report))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "PASS" in ok.stdout and "PASSED" in ok.stdout and "applied" in ok.stdout
    suite = ET.parse(report).getroot().find("testsuite")
    assert suite.get("name") == "lenient" and suite.get("failures") == "0" and suite.get("tests") == "1"
    bad = _cli(d, str(paths["strict"]), "sc-cli")
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "FAIL" in bad.stdout and "observed" in bad.stdout
    # an invalid scenario: every error printed, exit 2
    paths["broken"] = tmp_path / "broken.json"
    paths["broken"].write_text(json.dumps({"steps": [{"at": -1, "set": {"nftables_delay_ms": "x"}}]}))
    broken = _cli(d, str(paths["broken"]), "sc-cli")
    assert broken.returncode == 2
    assert "/steps/0/at" in broken.stderr and "/steps/0/set/nftables_delay_ms" in broken.stderr
    assert d.get(f"/api/session/{sid}").json()["nftables_delay_ms"] == 0


def test_a_run_still_going_when_the_daemon_stops(d):
    """The module's daemon stops with this run going: the run is stopped (timers
    cancelled, controls restored) and the log stays clean (checked by the conftest)."""
    s = create_session(d, "sc-left-running")
    r = d.request("POST", f"/api/session/{s['session_id']}/scenario",
                  {"steps": [{"at": 0, "for": 120, "set": {"nftables_delay_ms": 20}}]})
    assert r.status == 201
    wait_for(lambda: d.get(f"/api/session/{s['session_id']}").json()["nftables_delay_ms"] == 20, timeout=5)
