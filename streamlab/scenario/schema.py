"""The published JSON Schema of a scenario (``GET /api/scenarios/schema``, pure) and the
complete example of docs/scenarios.md.  What changes here is how the format is
described to editors and other tools; what is accepted is :mod:`streamlab.scenario.model`
(the tests check the two agree on every example)."""

from __future__ import annotations

from typing import Any

from streamlab.proxy import fields as fields_mod
from streamlab.scenario.checks import MAX_SECONDS
from streamlab.scenario.expectations import AGGREGATES, FROM, MATCH_STRINGS, MAX_EXPECT, MAX_NAME, OPS
from streamlab.scenario.model import ID_PATTERN, MAX_REPEAT, MAX_STEPS

EXAMPLE: dict[str, Any] = {
    "name": "rate drop and segment 404s",
    "seed": 1234,
    "steps": [
        {"id": "top-gone", "at": 5, "for": 20, "set": {"manifest_fault_type": "variant_removed"}},
        {"id": "rate-drop", "after": "top-gone", "for": 30,
         "set": {"nftables_bandwidth_mbps": 1.5, "nftables_delay_ms": 40}},
        {"id": "404s", "after": "rate-drop", "delay": 5, "for": 20,
         "set": {"segment_failure_type": "404", "segment_failure_mode": "requests",
                 "segment_consecutive_failures": 1, "segment_failure_frequency": 5}},
        {"id": "stale", "at": 10, "repeat": {"every": 15, "times": 3},
         "set": {"manifest_fault_type": "stale_playlist", "manifest_fault_value": 4}},
    ],
    "expect": [
        {"metric": "stalls", "op": "<=", "value": 1, "agg": "delta"},
        {"metric": "stall_seconds_total", "op": "<", "value": 3},
        {"kind": "switch_down_within", "after_step": "rate-drop", "seconds": 10},
        {"kind": "recover_top_within", "after_step": "rate-drop", "from": "restored", "seconds": 30},
        {"kind": "no_request_outside_window"},
        {"kind": "requests", "match": {"request_kind": "segment", "status": 404}, "op": ">=", "value": 1},
    ],
}
"""The complete example of docs/scenarios.md (also the schema's ``examples``)."""


def json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a scenario; ``set`` is the PATCH ``set`` schema
    built from the control-field table of :mod:`streamlab.proxy.fields`."""
    seconds = {"type": "number", "minimum": 0, "maximum": MAX_SECONDS}
    positive = {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_SECONDS}
    ref = {"anyOf": [{"type": "integer", "minimum": 0}, {"type": "string", "pattern": ID_PATTERN}]}
    op = {"type": "string", "enum": list(OPS)}
    step = {
        "type": "object", "additionalProperties": False, "required": ["set"],
        "oneOf": [{"required": ["at"], "not": {"anyOf": [{"required": ["after"]}, {"required": ["delay"]}]}},
                  {"required": ["after"], "not": {"required": ["at"]}}],
        "properties": {
            "id": {"type": "string", "pattern": ID_PATTERN, "description": "a name other steps and "
                   "expectations refer to"},
            "note": {"type": "string", "maxLength": 1000},
            "at": dict(seconds, description="seconds from the start of the run"),
            "after": dict(ref, description="an earlier step (index or id): this step starts when "
                          "that one ends (its last application, plus its for)"),
            "delay": dict(seconds, description="seconds after the end of the after step"),
            "for": dict(positive, description="the step's controls are restored after this many seconds"),
            "repeat": {"type": "object", "additionalProperties": False, "required": ["every", "times"],
                       "properties": {"every": positive,
                                      "times": {"type": "integer", "minimum": 1, "maximum": MAX_REPEAT}}},
            "set": dict(fields_mod.control_set_schema(), minProperties=1,
                        description="session controls, exactly as PATCH /api/session/{id} takes them"),
        },
    }
    match = {"type": "object", "additionalProperties": False, "properties": {
        **{k: {"type": "string"} for k in MATCH_STRINGS},
        "status": {"type": "integer", "minimum": 0, "maximum": 599}, "faulted": {"type": "boolean"}}}
    name = {"type": "string", "minLength": 1, "maxLength": MAX_NAME}
    expect = {"oneOf": [
        {"type": "object", "additionalProperties": False, "required": ["metric", "op", "value"],
         "properties": {"kind": {"const": "metric"}, "name": name,
                        "metric": {"type": "string", "pattern": "^(player_metrics_)?[A-Za-z0-9_]{1,115}$"},
                        "op": op, "value": {"type": "number"},
                        "agg": {"type": "string", "enum": list(AGGREGATES)}}},
        {"type": "object", "additionalProperties": False, "required": ["kind", "after_step", "seconds"],
         "properties": {"kind": {"enum": ["switch_down_within", "recover_top_within"]}, "name": name,
                        "after_step": ref, "seconds": positive,
                        "from": {"type": "string", "enum": list(FROM)}}},
        {"type": "object", "additionalProperties": False, "required": ["kind"],
         "properties": {"kind": {"const": "no_request_outside_window"}, "name": name}},
        {"type": "object", "additionalProperties": False, "required": ["kind", "op", "value"],
         "properties": {"kind": {"const": "requests"}, "name": name, "match": match, "op": op,
                        "value": {"type": "number"}, "during_step": ref}},
    ]}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://streamlab.local/api/scenarios/schema",
        "title": "streamlab scenario",
        "description": "A timeline of session-control changes with expectations (docs/scenarios.md).",
        "examples": [EXAMPLE],
        "type": "object", "additionalProperties": False, "required": ["steps"],
        "properties": {
            "name": name,
            "description": {"type": "string", "maxLength": 10000},
            "seed": {"type": "integer", "minimum": 0, "maximum": fields_mod.MAX_SEED,
                     "description": "applied to the session when the run starts (replays seeded faults)"},
            "duration": dict(positive, description="seconds; default: the end of the last step (and of "
                             "the last *_within window)"),
            "steps": {"type": "array", "minItems": 1, "maxItems": MAX_STEPS, "items": step},
            "expect": {"type": "array", "maxItems": MAX_EXPECT, "items": expect},
        },
    }
