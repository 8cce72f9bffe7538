"""The scenario format: validation lists every error with its JSON pointer; the published
JSON Schema is valid draft 2020-12 and agrees with the validator; timeline maths."""

from __future__ import annotations

import copy

import pytest
from jsonschema import Draft202012Validator

from streamlab.proxy import fields
from streamlab.scenario import model
from streamlab.scenario import timeline as tl

GOOD = {
    "name": "rate drop then 404s",
    "seed": 42,
    "steps": [
        {"id": "rate-drop", "at": 10, "for": 20, "set": {"nftables_bandwidth_mbps": 1.5}},
        {"id": "fourohfour", "after": "rate-drop", "delay": 5, "for": 2,
         "repeat": {"every": 6, "times": 3},
         "set": {"segment_failure_type": 404, "segment_failure_mode": "requests",
                 "segment_consecutive_failures": 1, "segment_failure_frequency": 5}},
        {"at": 0, "set": {"manifest_fault_type": "stale_playlist", "manifest_fault_value": 4}},
        {"after": 1, "set": {"transport_failure_type": "drop", "transport_consecutive_failures": 1,
                             "transport_failure_frequency": 5, "content_strip_codecs": True,
                             "nftables_pattern_enabled": True,
                                 "nftables_pattern_template_mode": "square_wave"}},
    ],
    "expect": [
        {"metric": "stalls", "op": "<=", "value": 1},
        {"metric": "stall_seconds_total", "op": "<", "value": 3},
        {"kind": "switch_down_within", "after_step": "rate-drop", "seconds": 10},
        {"kind": "recover_top_within", "after_step": 0, "seconds": 30, "from": "restored"},
        {"kind": "no_request_outside_window"},
        {"kind": "requests", "match": {"request_kind": "segment", "status": 404}, "op": ">=", "value": 1},
    ],
}


def test_a_good_scenario_parses_and_its_timeline_is_worked_out():
    sc = model.parse(GOOD)
    assert sc.name == "rate drop then 404s" and sc.seed == 42 and len(sc.steps) == 4
    starts = tl.step_starts(sc)
    # rate-drop 10..30; 404s start 5 s after its end, three times 6 s apart, each for 2 s
    assert starts == {0: 10, 1: 35, 2: 0, 3: 35 + 12 + 2}
    assert tl.applications(sc, 1) == [35, 41, 47]
    assert tl.step_end(sc, 1) == 49
    assert tl.timeline_end(sc) == 49
    # the recover window (30 s after rate-drop is restored at 30) reaches further: 60
    assert tl.run_duration(sc) == 60
    evs = [(e.t, e.action, e.step, e.occurrence) for e in tl.events(sc)]
    assert evs[:3] == [(0, "apply", 2, 0), (10, "apply", 0, 0), (30, "restore", 0, 0)]
    assert (37, "restore", 1, 0) in evs and (43, "restore", 1, 1) in evs and (49, "apply", 3, 0) in evs
    assert [e.name for e in sc.expect][:2] == ["stalls <= 1", "stall_seconds_total < 3"]


def test_restores_run_before_applications_at_the_same_second():
    sc = model.parse({"steps": [{"at": 0, "for": 5, "repeat": {"every": 5, "times": 2},
                                 "set": {"nftables_delay_ms": 100}},
                                {"at": 5, "set": {"nftables_packet_loss": 1}}]})
    at5 = [(e.action, e.step) for e in tl.events(sc) if e.t == 5]
    assert at5 == [("restore", 0), ("apply", 0), ("apply", 1)]


def test_every_error_is_listed_with_its_json_pointer():
    bad = copy.deepcopy(GOOD)
    bad["seed"] = -1
    bad["colour"] = "red"
    bad["steps"][0]["set"]["nftables_delay_ms"] = 20000            # out of range
    bad["steps"][0]["set"]["nftables_packet_loss"] = "lots"        # wrong type
    bad["steps"][0]["set"]["player_metrics_x"] = 1                 # not a control
    bad["steps"][1]["after"] = "nope"                              # unknown id
    bad["steps"][1]["repeat"] = {"every": 1, "times": 0}           # for > every, times < 1
    bad["steps"][2]["at"] = -3
    bad["steps"][3] = {"at": 1, "after": 0, "set": {}}             # both; empty set
    bad["steps"].append({"at": 1})                                 # no set
    bad["expect"][0]["op"] = "=~"
    bad["expect"][2]["after_step"] = 99
    bad["expect"][5]["match"] = {"colour": "red"}
    errors = model.validate(bad)
    paths = [e["path"] for e in errors]
    assert paths == [
        "/colour", "/seed",
        "/steps/0/set/nftables_delay_ms", "/steps/0/set/nftables_packet_loss",
            "/steps/0/set/player_metrics_x",
        "/steps/1/after", "/steps/1/repeat/times",
        "/steps/2/at",
        "/steps/3", "/steps/3/set",
        "/steps/4/set",
        "/expect/0/op", "/expect/2/after_step", "/expect/5/match/colour",
    ], errors
    by_path = {e["path"]: e["message"] for e in errors}
    assert "between 0 and 10000" in by_path["/steps/0/set/nftables_delay_ms"]
    assert "metrics" in by_path["/steps/0/set/player_metrics_x"]
    assert "no step has id 'nope'" in by_path["/steps/1/after"]
    with pytest.raises(model.ScenarioInvalid) as exc:
        model.parse(bad)
    body = exc.value.body()
    assert exc.value.status == 400 and body["error"] == "invalid scenario" and body["errors"] == errors


def test_for_longer_than_repeat_every_and_short_duration_are_refused():
    errors = model.validate({"steps": [{"at": 0, "for": 10, "repeat": {"every": 5, "times": 2},
                                        "set": {"nftables_delay_ms": 1}}]})
    assert [e["path"] for e in errors] == ["/steps/0/for"]
    errors = model.validate({"duration": 5, "steps": [{"at": 3, "for": 4, "set": {"nftables_delay_ms": 1}}]})
    assert errors == [{"path": "/duration", "message": "shorter than the timeline, which ends at 7 s"}]
    errors = model.validate({"steps": [{"after": 0, "set": {"nftables_delay_ms": 1}}]})
    assert [e["path"] for e in errors] == ["/steps/0/after"]
    assert model.validate([]) == [{"path": "", "message": "a scenario must be a JSON object"}]
    assert [e["path"] for e in model.validate({})] == ["/steps"]


def test_every_control_patch_accepts_is_accepted_in_a_step():
    """The step validator is the PATCH validator: each control's default (a value PATCH
    takes) is a valid step, and a step with every control at once is too."""
    every = {k: v for k, v in fields.CONTROL_DEFAULTS.items()}
    every["seed"] = 7
    assert model.validate({"steps": [{"at": 0, "set": every}]}) == []
    for key, value in fields.CONTROL_DEFAULTS.items():
        assert model.validate({"steps": [{"at": 0, "set": {key: value}}]}) == [], key
    # an alias and a legacy spelling are normalised exactly as PATCH does
    assert model.validate({"steps": [{"at": 0, "set": {"transport_fault_type": "reject",
                                                       "segment_failure_type": "socket_drop"}}]}) == []


def test_schema_is_valid_draft_2020_12_and_agrees_with_the_validator():
    schema = model.json_schema()
    Draft202012Validator.check_schema(schema)
    validator = Draft202012Validator(schema)
    assert list(validator.iter_errors(GOOD)) == []
    assert set(schema["properties"]["steps"]["items"]["properties"]["set"]["properties"]) == \
        set(fields.CONTROL_DEFAULTS) | set(fields.FIELD_ALIASES)
    for bad in ({"steps": []}, {"steps": [{"at": 1}]}, {"steps": [{"at": 1, "after": 0, "set": {"seed": 1}}]},
                {"steps": [{"at": 1, "set": {"nftables_delay_ms": -1}}]},
                {"steps": [{"at": 1, "set": {"nope": 1}}]}, {"steps": [{"at": 0, "set": {"seed": 1}}],
                                                             "x": 1},
                {"steps": [{"at": 0, "set": {"seed": 1}}], "expect": [{"kind": "requests"}]}):
        assert list(validator.iter_errors(bad)), bad
        assert model.validate(bad), bad


def test_from_restored_needs_a_step_with_for():
    errors = model.validate({"steps": [{"id": "a", "at": 0, "set": {"nftables_delay_ms": 1}}],
                             "expect": [{"kind": "recover_top_within", "after_step": "a", "seconds": 5,
                                         "from": "restored"}]})
    assert errors == [{"path": "/expect/0/from", "message": "step a has no for: it is never restored"}]


def test_the_documented_example_is_valid_and_is_the_schemas_example():
    import json
    import pathlib
    import re

    doc = (pathlib.Path(__file__).parent.parent / "docs" / "scenarios.md").read_text()
    first = json.loads(re.search(r"```json\n(.*?)```", doc, re.S).group(1))
    assert first == model.EXAMPLE
    assert model.validate(first) == []
    schema = model.json_schema()
    assert schema["examples"] == [first]
    assert list(Draft202012Validator(schema).iter_errors(first)) == []
