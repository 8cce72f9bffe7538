"""The scenario format: parsing and validation (pure).

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
:class:`ScenarioInvalid` carrying that list.  The ``expect`` entries are
:mod:`streamlab.scenario.expectations`, the shared checks :mod:`streamlab.scenario.checks`,
the published JSON Schema :mod:`streamlab.scenario.schema`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from streamlab.errors import Invalid
from streamlab.proxy import fields as fields_mod
from streamlab.scenario.checks import (
    Errors,
    pointer,
    seconds,
    split_pointer,
    step_ref,
    unknown_keys,
)
from streamlab.scenario.expectations import MAX_NAME, Expectation, check_expect

MAX_STEPS = 200
MAX_REPEAT = 10000
MAX_OCCURRENCES = 10000
"""Applications of all steps together (``repeat.times`` summed): bounds a run's timers."""
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_ID = re.compile(ID_PATTERN)
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


def _check_set(set_: Any, path: str, errors: Errors) -> dict[str, Any] | None:
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
            errors.add(pointer(*split_pointer(path), key), str(reason))
        return None
    return dict(set_)


def _check_steps(raw: Any, errors: Errors) -> list[Step]:
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
        unknown_keys(item, STEP_KEYS, base, errors)
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
            at = seconds(item["at"], base + "/at", errors)
            ok = ok and at is not None
        else:
            after = step_ref(item["after"], ids, i, base + "/after", errors)
            ok = ok and after is not None
        delay = 0.0
        if "delay" in item:
            if "after" not in item:
                errors.add(base + "/delay", "only with after (use at for a time from the start)")
                ok = False
            else:
                got = seconds(item["delay"], base + "/delay", errors)
                ok = ok and got is not None
                delay = got or 0.0
        for_s = None
        if "for" in item:
            for_s = seconds(item["for"], base + "/for", errors, positive=True)
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


def _check_repeat(raw: Any, path: str, errors: Errors) -> Repeat | None:
    if not isinstance(raw, Mapping):
        errors.add(path, 'must be {"every": seconds, "times": count}')
        return None
    unknown_keys(raw, ("every", "times"), path, errors)
    every = None
    if "every" not in raw:
        errors.add(path + "/every", "required")
    else:
        every = seconds(raw["every"], path + "/every", errors, positive=True)
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

    errors = Errors()
    if not isinstance(raw, Mapping):
        raise ScenarioInvalid([{"path": "", "message": "a scenario must be a JSON object"}])
    unknown_keys(raw, TOP_KEYS, "", errors)
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
        duration = seconds(raw["duration"], "/duration", errors, positive=True)
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
    expect = check_expect(raw.get("expect"), all_ids, nsteps, errors)
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
