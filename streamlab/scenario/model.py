"""The scenario format: parsing, validation and the published JSON Schema (pure).

A scenario is a JSON object (docs/scenarios.md)::

    {"name": "rate drop", "seed": 42, "duration": 60,
     "steps": [{"id": "rate-drop", "at": 10, "for": 20, "set": {"nftables_bandwidth_mbps": 1.5}},
               {"after": "rate-drop", "delay": 5, "repeat": {"every": 6, "times": 3},
                "set": {"manifest_fault_type": "remove_segment"}}],
     "expect": [{"metric": "stalls", "op": "<=", "value": 1}]}

Each step's ``set`` is checked by the very validator ``PATCH /api/session/{id}`` uses
(:func:`streamlab.proxy.fields.validate`), so every control a PATCH accepts works in a
step and nothing else does.  :func:`validate` collects *every* error with its JSON-pointer
path instead of stopping at the first; :func:`parse` returns a :class:`Scenario` or raises
:class:`ScenarioInvalid` carrying that list.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from streamlab.errors import Invalid
from streamlab.proxy import fields as fields_mod

MAX_STEPS = 200
MAX_EXPECT = 100
MAX_SECONDS = 86400.0
MAX_REPEAT = 10000
MAX_OCCURRENCES = 10000
"""Applications of all steps together (``repeat.times`` summed): bounds a run's timers."""
MAX_NAME = 200
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_ID = re.compile(ID_PATTERN)
METRIC_PATTERN = r"^[A-Za-z0-9_]{1,115}$"
_METRIC = re.compile(METRIC_PATTERN)
OPS = ("<", "<=", ">", ">=", "==", "!=")
AGGREGATES = ("last", "max", "min", "mean", "delta")
KINDS = ("metric", "switch_down_within", "recover_top_within", "no_request_outside_window", "requests")
FROM = ("applied", "restored")
MATCH_STRINGS = ("request_kind", "method", "fault_type", "fault_category", "path_contains", "status_class")
MATCH_KEYS = (*MATCH_STRINGS, "status", "faulted")
TOP_KEYS = ("name", "description", "seed", "duration", "steps", "expect")
STEP_KEYS = ("id", "note", "at", "after", "delay", "for", "repeat", "set")


@dataclass(frozen=True)
class Repeat:
    """``{"every": s, "times": n}``: the step is applied *times* times, *every* s apart."""

    every: float
    times: int


@dataclass(frozen=True)
class Step:
    """One step (``after`` resolved to the index of an earlier step)."""

    index: int
    id: str | None
    at: float | None
    after: int | None
    delay: float
    for_s: float | None
    repeat: Repeat | None
    set: dict[str, Any]
    note: str = ""

    def label(self) -> str:
        """The step's id, or ``#<index>``."""
        return self.id if self.id else f"#{self.index}"


@dataclass(frozen=True)
class Expectation:
    """One ``expect`` entry, normalised (``kind`` always set, ``name`` generated when absent)."""

    kind: str
    name: str
    spec: dict[str, Any]
    after_step: int | None = None


@dataclass(frozen=True)
class Scenario:
    """A validated scenario."""

    name: str
    steps: tuple[Step, ...]
    expect: tuple[Expectation, ...] = ()
    seed: int | None = None
    duration: float | None = None
    description: str = ""
    raw: dict[str, Any] = field(default_factory=dict)


class ScenarioInvalid(Invalid):
    """A scenario with errors: ``errors`` is ``[{"path", "message"}]`` (every one of them)."""

    def __init__(self, errors: list[dict[str, str]]) -> None:
        first = errors[0] if errors else {"path": "", "message": "invalid scenario"}
        summary = f"{first['path'] or '/'}: {first['message']}"
        if len(errors) > 1:
            summary += f" (and {len(errors) - 1} more)"
        super().__init__("invalid scenario", detail=summary, errors=errors)
        self.errors = errors


def pointer(*parts: str | int) -> str:
    """A JSON pointer (RFC 6901) of *parts*."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


class _Errors:
    def __init__(self) -> None:
        self.items: list[dict[str, str]] = []

    def add(self, path: str, message: str) -> None:
        self.items.append({"path": path, "message": message})


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _seconds(value: Any, path: str, errors: _Errors, *, positive: bool = False) -> float | None:
    if not _is_number(value):
        errors.add(path, "must be a number of seconds")
        return None
    if (positive and value <= 0) or value < 0:
        errors.add(path, "must be greater than 0" if positive else "must be 0 or more")
        return None
    if value > MAX_SECONDS:
        errors.add(path, f"must be at most {MAX_SECONDS:g} s")
        return None
    return float(value)


def _unknown(obj: Mapping[str, Any], allowed: tuple[str, ...], path: str, errors: _Errors) -> None:
    for key in obj:
        if key not in allowed:
            errors.add(pointer(*_split(path), key), f"unknown key (allowed: {', '.join(allowed)})")


def _split(path: str) -> list[str]:
    return [p.replace("~1", "/").replace("~0", "~") for p in path.split("/")[1:]] if path else []


def _step_ref(value: Any, ids: Mapping[str, int], before: int, path: str, errors: _Errors) -> int | None:
    """Index of the step *value* names (an index or an id) among the first *before* steps."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        errors.add(path, "must be a step index or a step id")
        return None
    if isinstance(value, int):
        if not 0 <= value < before:
            errors.add(path, f"step {value} is not an earlier step (0..{before - 1})" if before
                       else "the first step cannot come after another one")
            return None
        return value
    index = ids.get(value)
    if index is None:
        errors.add(path, f"no step has id {value!r}")
        return None
    if index >= before:
        errors.add(path, f"step {value!r} is not an earlier step")
        return None
    return index


def _check_set(set_: Any, path: str, errors: _Errors) -> dict[str, Any] | None:
    """The step's ``set``, checked with the PATCH validator against the defaults."""
    if not isinstance(set_, Mapping):
        errors.add(path, "must be an object of session controls")
        return None
    if not set_:
        errors.add(path, "must set at least one control")
        return None
    try:
        fields_mod.validate(set_, None, fields_mod.CONTROL_DEFAULTS)
    except Invalid as exc:
        bad = exc.extra.get("fields") or {}
        if not bad:
            errors.add(path, str(exc.detail or exc.error))
        for key, reason in bad.items():
            errors.add(pointer(*_split(path), key), str(reason))
        return None
    return dict(set_)


def _check_steps(raw: Any, errors: _Errors) -> list[Step]:
    if not isinstance(raw, list):
        errors.add("/steps", "must be a list of steps")
        return []
    if not raw:
        errors.add("/steps", "needs at least one step")
    if len(raw) > MAX_STEPS:
        errors.add("/steps", f"at most {MAX_STEPS} steps")
        return []
    ids: dict[str, int] = {}
    for i, item in enumerate(raw):
        if isinstance(item, Mapping) and isinstance(item.get("id"), str) and _ID.match(item["id"]):
            if item["id"] in ids:
                errors.add(pointer("steps", i, "id"), f"duplicate id (also step {ids[item['id']]})")
            else:
                ids[item["id"]] = i
    steps: list[Step] = []
    occurrences = 0
    for i, item in enumerate(raw):
        base = pointer("steps", i)
        if not isinstance(item, Mapping):
            errors.add(base, "must be an object")
            continue
        ok = True
        _unknown(item, STEP_KEYS, base, errors)
        sid = item.get("id")
        if sid is not None and (not isinstance(sid, str) or not _ID.match(sid)):
            errors.add(base + "/id", "must be a name: letters, digits, _ . - (not first; max 64)")
            ok = False
        note = item.get("note", "")
        if not isinstance(note, str) or len(note) > 1000:
            errors.add(base + "/note", "must be a string (max 1000 characters)")
            note = ""
        at = after = None
        if ("at" in item) == ("after" in item):
            errors.add(base, "needs exactly one of at (seconds from the start) or after (an earlier step)")
            ok = False
        elif "at" in item:
            at = _seconds(item["at"], base + "/at", errors)
            ok = ok and at is not None
        else:
            after = _step_ref(item["after"], ids, i, base + "/after", errors)
            ok = ok and after is not None
        delay = 0.0
        if "delay" in item:
            if "after" not in item:
                errors.add(base + "/delay", "only with after (use at for a time from the start)")
                ok = False
            else:
                got = _seconds(item["delay"], base + "/delay", errors)
                ok = ok and got is not None
                delay = got or 0.0
        for_s = None
        if "for" in item:
            for_s = _seconds(item["for"], base + "/for", errors, positive=True)
            ok = ok and for_s is not None
        repeat = None
        if "repeat" in item:
            repeat = _check_repeat(item["repeat"], base + "/repeat", errors)
            ok = ok and repeat is not None
            if repeat is not None and for_s is not None and for_s > repeat.every:
                errors.add(base + "/for", f"must not be longer than repeat.every ({repeat.every:g} s)")
                ok = False
        occurrences += repeat.times if repeat is not None else 1
        if "set" not in item:
            errors.add(base + "/set", "required: the session controls this step sets")
            ok = False
            set_ = None
        else:
            set_ = _check_set(item["set"], base + "/set", errors)
            ok = ok and set_ is not None
        if ok and set_ is not None:
            steps.append(Step(i, sid, at, after, delay, for_s, repeat, set_, note))
    if occurrences > MAX_OCCURRENCES:
        errors.add("/steps", f"at most {MAX_OCCURRENCES} applications in all (repeat.times summed)")
    return steps


def _check_repeat(raw: Any, path: str, errors: _Errors) -> Repeat | None:
    if not isinstance(raw, Mapping):
        errors.add(path, 'must be {"every": seconds, "times": count}')
        return None
    _unknown(raw, ("every", "times"), path, errors)
    every = None
    if "every" not in raw:
        errors.add(path + "/every", "required")
    else:
        every = _seconds(raw["every"], path + "/every", errors, positive=True)
    times = raw.get("times")
    if "times" not in raw:
        errors.add(path + "/times", "required")
        times = None
    elif isinstance(times, bool) or not isinstance(times, int) or not 1 <= times <= MAX_REPEAT:
        errors.add(path + "/times", f"must be a whole number from 1 to {MAX_REPEAT}")
        times = None
    if every is None or times is None:
        return None
    return Repeat(every, times)


def _op_value(raw: Mapping[str, Any], path: str, errors: _Errors) -> bool:
    ok = True
    if raw.get("op") not in OPS:
        errors.add(path + "/op", f"must be one of {' '.join(OPS)}")
        ok = False
    if not _is_number(raw.get("value")):
        errors.add(path + "/value", "must be a number")
        ok = False
    return ok


def _check_expect(raw: Any, ids: Mapping[str, int], nsteps: int, errors: _Errors) -> list[Expectation]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        errors.add("/expect", "must be a list of expectations")
        return []
    if len(raw) > MAX_EXPECT:
        errors.add("/expect", f"at most {MAX_EXPECT} expectations")
        return []
    out: list[Expectation] = []
    names: set[str] = set()
    for i, item in enumerate(raw):
        base = pointer("expect", i)
        if not isinstance(item, Mapping):
            errors.add(base, "must be an object")
            continue
        kind = "metric" if "metric" in item and "kind" not in item else item.get("kind")
        if kind not in KINDS:
            errors.add(base + "/kind", f"must be one of {', '.join(KINDS)} (or give metric)")
            continue
        name = item.get("name")
        if name is not None and (not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME):
            errors.add(base + "/name", f"must be a non-empty string (max {MAX_NAME})")
            name = None
        common = ("kind", "name")
        ok = True
        after_step = None
        if kind == "metric":
            _unknown(item, (*common, "metric", "op", "value", "agg"), base, errors)
            metric = item.get("metric")
            if not isinstance(metric, str) or not _METRIC.match(metric.removeprefix("player_metrics_")):
                errors.add(base + "/metric", "must be a metric name (letters, digits, _), e.g. stalls")
                ok = False
            ok = _op_value(item, base, errors) and ok
            if item.get("agg", "last") not in AGGREGATES:
                errors.add(base + "/agg", f"must be one of {', '.join(AGGREGATES)}")
                ok = False
            default = f"{metric} {item.get('op')} {item.get('value')}"
        elif kind in ("switch_down_within", "recover_top_within"):
            _unknown(item, (*common, "after_step", "seconds", "from"), base, errors)
            if "after_step" not in item:
                errors.add(base + "/after_step", "required: the step (index or id) the time counts from")
                ok = False
            else:
                after_step = _step_ref(item["after_step"], ids, nsteps, base + "/after_step", errors)
                ok = ok and after_step is not None
            if _seconds(item.get("seconds"), base + "/seconds", errors, positive=True) is None:
                ok = False
            if item.get("from", "applied") not in FROM:
                errors.add(base + "/from", f"must be one of {', '.join(FROM)}")
                ok = False
            default = f"{kind} {item.get('seconds')} s after {item.get('after_step')}"
        elif kind == "no_request_outside_window":
            _unknown(item, common, base, errors)
            default = "no request outside the window"
        else:  # requests
            _unknown(item, (*common, "match", "op", "value", "during_step"), base, errors)
            ok = _op_value(item, base, errors)
            ok = _check_match(item.get("match", {}), base + "/match", errors) and ok
            if "during_step" in item:
                after_step = _step_ref(item["during_step"], ids, nsteps, base + "/during_step", errors)
                ok = ok and after_step is not None
            default = f"requests {item.get('op')} {item.get('value')}"
        if not ok:
            continue
        label = (name or default).strip()
        while label in names:
            label += "'"
        names.add(label)
        out.append(Expectation(kind, label, dict(item), after_step))
    return out


def _check_match(raw: Any, path: str, errors: _Errors) -> bool:
    if not isinstance(raw, Mapping):
        errors.add(path, "must be an object of network-log fields to match")
        return False
    ok = True
    for key, value in raw.items():
        sub = pointer(*_split(path), key)
        if key not in MATCH_KEYS:
            errors.add(sub, f"unknown key (allowed: {', '.join(MATCH_KEYS)})")
            ok = False
        elif key == "status" and (isinstance(value, bool) or not isinstance(value, int)
                                  or not 0 <= value <= 599):
            errors.add(sub, "must be an HTTP status (0-599)")
            ok = False
        elif key == "faulted" and not isinstance(value, bool):
            errors.add(sub, "must be true or false")
            ok = False
        elif key in MATCH_STRINGS and (not isinstance(value, str) or len(value) > 1024):
            errors.add(sub, "must be a string")
            ok = False
    return ok


def validate(raw: Any) -> list[dict[str, str]]:
    """Every error of scenario *raw* as ``[{"path", "message"}]`` (empty when valid)."""
    try:
        parse(raw)
    except ScenarioInvalid as exc:
        return exc.errors
    return []


def parse(raw: Any) -> Scenario:
    """The :class:`Scenario` of JSON value *raw*; :class:`ScenarioInvalid` listing every error."""
    from streamlab.scenario import timeline

    errors = _Errors()
    if not isinstance(raw, Mapping):
        raise ScenarioInvalid([{"path": "", "message": "a scenario must be a JSON object"}])
    _unknown(raw, TOP_KEYS, "", errors)
    name = raw.get("name", "scenario")
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME:
        errors.add("/name", f"must be a non-empty string (max {MAX_NAME} characters)")
        name = "scenario"
    description = raw.get("description", "")
    if not isinstance(description, str) or len(description) > 10000:
        errors.add("/description", "must be a string (max 10000 characters)")
        description = ""
    seed = raw.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)
                             or not 0 <= seed <= fields_mod.MAX_SEED):
        errors.add("/seed", f"must be a whole number from 0 to {fields_mod.MAX_SEED}")
        seed = None
    duration = None
    if raw.get("duration") is not None:
        duration = _seconds(raw["duration"], "/duration", errors, positive=True)
    if "steps" not in raw:
        errors.add("/steps", "required: a list of steps")
        steps: list[Step] = []
    else:
        steps = _check_steps(raw["steps"], errors)
    ids = {s.id: s.index for s in steps if s.id}
    nsteps = len(raw["steps"]) if isinstance(raw.get("steps"), list) else 0
    # expectations may name any step (by index or id), also ones with errors of their own
    all_ids = dict(ids)
    if isinstance(raw.get("steps"), list):
        for i, item in enumerate(raw["steps"]):
            if isinstance(item, Mapping) and isinstance(item.get("id"), str):
                all_ids.setdefault(item["id"], i)
    expect = _check_expect(raw.get("expect"), all_ids, nsteps, errors)
    by_index = {s.index: s for s in steps}
    for i, item in enumerate(raw.get("expect") or []):
        if isinstance(item, Mapping) and item.get("from") == "restored":
            ref = item.get("after_step")
            index = all_ids.get(ref) if isinstance(ref, str) else ref
            step = by_index.get(index) if isinstance(index, int) and not isinstance(index, bool) else None
            if step is not None and step.for_s is None:
                errors.add(pointer("expect", i, "from"), f"step {ref} has no for: it is never restored")
    if errors.items:
        raise ScenarioInvalid(errors.items)
    scenario = Scenario(name.strip(), tuple(steps), tuple(expect), seed, duration, description, dict(raw))
    end = timeline.timeline_end(scenario)
    if duration is not None and duration + 1e-9 < end:
        raise ScenarioInvalid([{"path": "/duration",
                                "message": f"shorter than the timeline, which ends at {end:g} s"}])
    return scenario


# --------------------------------------------------------------------------- schema

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
