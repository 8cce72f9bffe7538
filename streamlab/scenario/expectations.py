"""The ``expect`` part of a scenario (pure): what a run is judged on, validated with
every error collected (docs/scenarios.md, "Expectations").  Evaluating them is
:mod:`streamlab.scenario.verdict`; what changes here is which expectations exist and
what they take."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from streamlab.scenario.checks import (
    Errors,
    is_number,
    pointer,
    seconds,
    split_pointer,
    step_ref,
    unknown_keys,
)

MAX_EXPECT = 100
MAX_NAME = 200
METRIC_PATTERN = r"^[A-Za-z0-9_]{1,115}$"
_METRIC = re.compile(METRIC_PATTERN)
OPS = ("<", "<=", ">", ">=", "==", "!=")
AGGREGATES = ("last", "max", "min", "mean", "delta")
KINDS = ("metric", "switch_down_within", "recover_top_within", "no_request_outside_window", "requests")
FROM = ("applied", "restored")
MATCH_STRINGS = ("request_kind", "method", "fault_type", "fault_category", "path_contains", "status_class")
MATCH_KEYS = (*MATCH_STRINGS, "status", "faulted")


@dataclass(frozen=True)
class Expectation:
    """One ``expect`` entry, normalised (``kind`` always set, ``name`` generated when absent)."""

    kind: str
    name: str
    spec: dict[str, Any]
    after_step: int | None = None


def _op_value(raw: Mapping[str, Any], path: str, errors: Errors) -> bool:
    ok = True
    if raw.get("op") not in OPS:
        errors.add(path + "/op", f"must be one of {' '.join(OPS)}")
        ok = False
    if not is_number(raw.get("value")):
        errors.add(path + "/value", "must be a number")
        ok = False
    return ok


def check_expect(raw: Any, ids: Mapping[str, int], nsteps: int, errors: Errors) -> list[Expectation]:
    """The expectations of ``expect`` *raw* (None: none) that are valid, each error
    added to *errors*; *ids* and *nsteps* are the steps they may refer to."""
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
            unknown_keys(item, (*common, "metric", "op", "value", "agg"), base, errors)
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
            unknown_keys(item, (*common, "after_step", "seconds", "from"), base, errors)
            if "after_step" not in item:
                errors.add(base + "/after_step", "required: the step (index or id) the time counts from")
                ok = False
            else:
                after_step = step_ref(item["after_step"], ids, nsteps, base + "/after_step", errors)
                ok = ok and after_step is not None
            if seconds(item.get("seconds"), base + "/seconds", errors, positive=True) is None:
                ok = False
            if item.get("from", "applied") not in FROM:
                errors.add(base + "/from", f"must be one of {', '.join(FROM)}")
                ok = False
            default = f"{kind} {item.get('seconds')} s after {item.get('after_step')}"
        elif kind == "no_request_outside_window":
            unknown_keys(item, common, base, errors)
            default = "no request outside the window"
        else:  # requests
            unknown_keys(item, (*common, "match", "op", "value", "during_step"), base, errors)
            ok = _op_value(item, base, errors)
            ok = _check_match(item.get("match", {}), base + "/match", errors) and ok
            if "during_step" in item:
                after_step = step_ref(item["during_step"], ids, nsteps, base + "/during_step", errors)
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


def _check_match(raw: Any, path: str, errors: Errors) -> bool:
    if not isinstance(raw, Mapping):
        errors.add(path, "must be an object of network-log fields to match")
        return False
    ok = True
    for key, value in raw.items():
        sub = pointer(*split_pointer(path), key)
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
