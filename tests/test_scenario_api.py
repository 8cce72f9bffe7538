"""The scenario API in memory (StubTreq) over the real registry on a MemoryReactorClock:
validate, schema, start/get/stop on both spellings, 404/409/400, groups, the session
JSON's ``scenario`` and the JUnit report checked against the JUnit structure."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET

import pytest
from treq.testing import StubTreq
from twisted.internet.testing import MemoryReactorClock

from streamlab import config as configmod
from streamlab.api.root import ApiRoot
from streamlab.api.scenarios import mount
from streamlab.api.sessions import MOUNTS, SessionsApi
from streamlab.events import EventBus
from streamlab.proxy.registry import SessionRegistry
from streamlab.scenario.service import ScenarioService
from streamlab.web.root import MainRoot

LENIENT = {"name": "lenient", "steps": [{"id": "lag", "at": 1, "for": 2, "set": {"nftables_delay_ms": 80}}],
           "expect": [{"metric": "stalls", "op": "<=", "value": 5},
                      {"kind": "requests", "match": {"status": 404}, "op": "==", "value": 0}]}
STRICT = dict(LENIENT, name="strict", expect=[{"metric": "stalls", "op": "<", "value": 1},
                                              {"kind": "requests", "match": {"status": 404}, "op": "==",
                                               "value": 0}])


@pytest.fixture
def api():
    cfg = configmod.load(None, {"session-ports": "42000-42004"})
    clock = MemoryReactorClock()
    clock.advance(1_700_000_000)
    registry = SessionRegistry(cfg, clock, EventBus())
    root, api_root = MainRoot(), ApiRoot()
    root.mount("api", api_root)
    resource = SessionsApi(registry).app.resource()
    for name in MOUNTS:
        api_root.mount(name, resource)
    service = ScenarioService(registry, clock)
    mount(api_root, service, resource)
    return StubTreq(root), registry, clock


def call(treq, method, path, body=None, raw=None):
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    resp = treq.request(method, "http://lab" + path, data=data, headers={"Content-Type": "application/json"})
    out = {}

    def got(r):
        out["status"] = r.code
        out["type"] = r.headers.getRawHeaders(b"content-type", [b""])[0]
        return r.content()

    resp.addCallback(got).addCallback(lambda content: out.__setitem__("raw", content))
    treq.flush()
    assert "raw" in out, "no response"
    if out["type"].startswith(b"application/json"):
        return out["status"], json.loads(out["raw"]) if out["raw"] else None
    return out["status"], out["raw"]


def tick(clock, seconds):
    for _ in range(int(seconds * 10)):
        clock.advance(0.1)


def test_validate_answers_the_timeline_or_every_error(api):
    treq, _registry, _clock = api
    st, body = call(treq, "POST", "/api/scenarios/validate", LENIENT)
    assert st == 200 and body["valid"] is True and body["duration_s"] == 3
    assert body["steps"] == [{"index": 0, "id": "lag", "at_s": 1, "for_s": 2, "end_s": 3,
                              "applications_s": [1]}]
    st, body = call(treq, "POST", "/api/scenarios/validate",
                    {"scenario": {"steps": [{"at": -1, "set": {"nftables_delay_ms": "x", "nope": 1}}],
                                  "expect": [{"kind": "requests"}]}})
    assert st == 400 and body["error"] == "invalid scenario"
    assert [e["path"] for e in body["errors"]] == [
        "/steps/0/at", "/steps/0/set/nftables_delay_ms", "/steps/0/set/nope", "/expect/0/op",
        "/expect/0/value"]
    st, body = call(treq, "POST", "/api/scenarios/validate", raw=b"{nope")
    assert (st, body["error"]) == (400, "invalid json")
    st, schema = call(treq, "GET", "/api/scenarios/schema")
    assert st == 200 and schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_run_lifecycle_on_both_spellings(api):
    treq, registry, clock = api
    assert call(treq, "POST", "/api/sessions/9/scenario", LENIENT)[0] == 404
    call(treq, "POST", "/api/sessions", {"player_id": "p1"})
    assert call(treq, "GET", "/api/session/1/scenario")[0] == 404      # no run yet
    st, body = call(treq, "POST", "/api/sessions/1/scenario", {"steps": []})
    assert st == 400 and body["errors"] == [{"path": "/steps", "message": "needs at least one step"}]
    st, run = call(treq, "POST", "/api/sessions/1/scenario", LENIENT)
    assert st == 201 and run["state"] == "running" and run["session_id"] == "1" and run["name"] == "lenient"
    assert run["steps"][0]["state"] == "pending" and run["verdict"] is None
    st, body = call(treq, "POST", "/api/session/1/scenario", LENIENT)
    assert st == 409 and body["session_ids"] == ["1"]
    tick(clock, 1.5)
    st, run = call(treq, "GET", "/api/session/1/scenario")
    assert st == 200 and run["active"] == {"nftables_delay_ms": 80} and run["steps"][0]["state"] == "active"
    st, session = call(treq, "GET", "/api/session/1")
    assert session["nftables_delay_ms"] == 80 and session["scenario"]["state"] == "running"
    assert call(treq, "GET", "/api/session/1/scenario/report.xml")[0] == 409  # still running
    # the rest of the sessions API is untouched by the dispatch
    assert call(treq, "PATCH", "/api/session/1", {"set": {"nftables_packet_loss": 1}})[0] == 200
    assert call(treq, "GET", "/api/session/1/network")[0] == 200
    registry.post_metrics("1", {"player_metrics_stalls": 2})
    tick(clock, 2)
    st, run = call(treq, "GET", "/api/sessions/1/scenario")
    assert run["state"] == "passed" and run["verdict"]["passed"] is True
    assert [(e["step"], e["event"]) for e in run["log"]] == [(0, "applied"), (0, "restored"), (None, "ended")]
    assert call(treq, "GET", "/api/session/1")[1]["nftables_delay_ms"] == 0
    # strict run; stopped half-way: restored, verdict on what was seen
    st, run = call(treq, "POST", "/api/session/1/scenario", STRICT)
    assert st == 201
    tick(clock, 1.5)
    st, run = call(treq, "DELETE", "/api/session/1/scenario")
    assert st == 200 and run["state"] == "stopped" and run["verdict"]["passed"] is False
    assert call(treq, "GET", "/api/session/1")[1]["nftables_delay_ms"] == 0


def junit_cases(xml: bytes):
    """Check the JUnit structure (testsuites > testsuite > testcase [failure|error]) and
    the counts it states; return {case name: failure message or None}."""
    root = ET.fromstring(xml)
    assert root.tag == "testsuites"
    suites = root.findall("testsuite")
    assert len(suites) == 1
    suite = suites[0]
    for attr in ("name", "tests", "failures", "errors", "time", "timestamp"):
        assert suite.get(attr) is not None, attr
    cases = suite.findall("testcase")
    assert int(suite.get("tests")) == len(cases)
    failures = [c for c in cases if c.find("failure") is not None]
    assert int(suite.get("failures")) == len(failures)
    assert int(suite.get("errors")) == sum(1 for c in cases if c.find("error") is not None)
    float(suite.get("time"))
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", suite.get("timestamp"))  # the JUnit XSD pattern
    for case in cases:
        assert case.get("name") and case.get("classname")
    props = {p.get("name"): p.get("value") for p in suite.find("properties")}
    verdicts = {c.get("name"): (c.find("failure").get("message") if c.find("failure") is not None else None)
                for c in cases}
    return suite.get("name"), props, verdicts


def test_junit_report(api):
    treq, registry, clock = api
    call(treq, "POST", "/api/sessions", {"player_id": "p1"})
    call(treq, "POST", "/api/sessions/1/scenario", STRICT)
    registry.post_metrics("1", {"player_metrics_stalls": 2})
    tick(clock, 3.5)
    st, xml = call(treq, "GET", "/api/sessions/1/scenario/report.xml")
    assert st == 200 and xml.startswith(b"<?xml")
    name, props, cases = junit_cases(xml)
    assert name == "strict" and props["state"] == "failed" and props["session_id"] == "1"
    assert cases == {"stalls < 1": "observed 2, expected stalls < 1", "requests == 0": None}


def test_group_runs_one_run_per_member(api):
    treq, registry, clock = api
    call(treq, "POST", "/api/sessions", {"player_id": "a_G1"})
    call(treq, "POST", "/api/sessions", {"player_id": "b_G1"})
    assert call(treq, "POST", "/api/session-group/G9/scenario", LENIENT)[0] == 404
    st, body = call(treq, "POST", "/api/session-group/G1/scenario", LENIENT)
    assert st == 201 and body["group_id"] == "G1" and [r["session_id"] for r in body["runs"]] == ["1", "2"]
    assert call(treq, "POST", "/api/session-group/G1/scenario", LENIENT)[0] == 409
    tick(clock, 1.5)
    assert [registry.get(s).controls.values["nftables_delay_ms"] for s in ("1", "2")] == [80, 80]
    st, body = call(treq, "DELETE", "/api/session-group/G1/scenario")
    assert st == 200 and [r["state"] for r in body["runs"]] == ["stopped", "stopped"]
    assert [registry.get(s).controls.values["nftables_delay_ms"] for s in ("1", "2")] == [0, 0]
    st, body = call(treq, "GET", "/api/session-group/G1/scenario")
    assert st == 200 and len(body["runs"]) == 2


def test_a_yaml_body_is_accepted(api):
    treq, _registry, _clock = api
    call(treq, "POST", "/api/sessions", {"player_id": "p1"})
    text = b"name: yaml\nsteps:\n  - at: 1\n    for: 2\n    set: {nftables_delay_ms: 80}\n"
    resp = treq.request("POST", "http://lab/api/session/1/scenario", data=text,
                        headers={"Content-Type": "application/yaml"})
    out = {}
    resp.addCallback(lambda r: out.__setitem__("code", r.code))
    treq.flush()
    assert out["code"] == 201
    st, run = call(treq, "GET", "/api/session/1/scenario")
    assert run["name"] == "yaml" and run["scenario"]["steps"][0]["set"] == {"nftables_delay_ms": 80}
    resp = treq.request("POST", "http://lab/api/scenarios/validate", data=b"a: &x 1\nb: *x\n",
                        headers={"Content-Type": "text/yaml"})
    resp.addCallback(lambda r: out.__setitem__("bad", r.code))
    treq.flush()
    assert out["bad"] == 400
